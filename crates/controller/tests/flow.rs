//! The whole flow on a real kube-apiserver, with fake CI, Argo CD and GitHub.

mod support;

use promotion_api::{Phase, TestState};
use promotion_core::fakes::Script;
use promotion_core::ports::{PullRequestRef, RunState};
use serde_json::json;
use support::*;

fn pr() -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn dev_to_staging_to_prod_all_passing() {
    let mut h = Harness::new("flow-happy").await;
    two_hops(&h).await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let t = h.wait_phase("pr-42", Phase::Completed).await;
    let st = t.status.expect("status");
    assert_eq!(st.current_environment.as_deref(), Some("prod"));
    assert_eq!(st.promotions.len(), 2, "{:#?}", st.promotions);
    let hops: Vec<(&str, &str, &str)> = st
        .promotions
        .iter()
        .map(|p| (p.source.as_str(), p.target.as_str(), p.policy.as_str()))
        .collect();
    assert_eq!(
        hops,
        [
            ("dev", "staging", "dev-to-staging"),
            ("staging", "prod", "staging-to-prod")
        ]
    );
    for record in &st.promotions {
        assert_eq!(record.revision, SHA);
        assert_eq!(record.promoted_by, "promotion-controller");
        let gate: Vec<(&str, TestState)> = record
            .test_runs
            .iter()
            .map(|r| (r.name.as_str(), r.state))
            .collect();
        assert_eq!(
            gate,
            [("smoke", TestState::Passed), ("e2e", TestState::Passed)]
        );
        assert!(
            record
                .test_runs
                .iter()
                .all(|r| r.run_id.is_some() && r.url.is_some())
        );
    }
    for job in ["dev-smoke", "dev-e2e", "staging-smoke", "staging-e2e"] {
        assert_eq!(h.ci.triggered(job), 1, "{job}");
    }
    assert_eq!(
        h.argo.promotions(),
        [
            ("shop-staging".to_string(), SHA.to_string()),
            ("shop-prod".to_string(), SHA.to_string())
        ]
    );
    assert_eq!(
        h.github.labels(&pr()),
        ["promoted-to-staging", "promoted-to-prod"]
    );
    let ready = st
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("True", "Completed")
    );
    assert!(
        st.conditions
            .iter()
            .all(|c| c.observed_generation == Some(1))
    );
    h.wait_event("pr-42", "Completed").await;
    let reasons: Vec<String> = h.events("pr-42").await.into_iter().map(|e| e.1).collect();
    for r in ["TestsTriggered", "Promoted"] {
        assert!(
            reasons.contains(&r.to_string()),
            "missing {r} in {reasons:?}"
        );
    }
    // Synced is in status (condition Synced); an Event would only repeat it.
    assert!(!reasons.contains(&"Synced".to_string()), "{reasons:?}");
    // The parameters reached the CI system with the variables substituted.
    assert!(
        h.github
            .statuses()
            .iter()
            .any(|(sha, s)| sha == SHA && s.context == "promotion/dev/smoke")
    );
    // Each policy reports itself valid and ready.
    for name in ["dev-to-staging", "staging-to-prod"] {
        let p = h.policies().get(name).await.expect("policy");
        let st = p.status.expect("policy status");
        assert_eq!(st.observed_generation, Some(1));
        assert_eq!(st.tests.as_deref(), Some("smoke, e2e"), "the Tests column");
        let valid = st
            .conditions
            .iter()
            .find(|c| c.type_ == "Valid")
            .expect("Valid");
        assert_eq!(valid.status, "True");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_required_failure_fails_the_gate_and_retry_starts_it_again() {
    let mut h = Harness::new("flow-fail-retry").await;
    h.ci.script("dev-smoke", Script::After(1, RunState::Failed));
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let t = h.wait_phase("pr-42", Phase::Failed).await;
    let st = t.status.expect("status");
    let msg = st.message.clone().unwrap_or_default();
    assert!(msg.contains("smoke failed"), "{msg}");
    let tests_passed = st
        .conditions
        .iter()
        .find(|c| c.type_ == "TestsPassed")
        .expect("TestsPassed");
    assert_eq!(
        (tests_passed.status.as_str(), tests_passed.reason.as_str()),
        ("False", "TestsFailed")
    );
    let smoke = st
        .test_runs
        .iter()
        .find(|r| r.name == "smoke")
        .expect("smoke");
    assert_eq!(smoke.state, TestState::Failed);
    assert!(h.argo.promotions().is_empty(), "nothing promoted");
    let (type_, _, note) = h.wait_event("pr-42", "TestsFailed").await;
    assert_eq!(type_, "Warning");
    assert!(note.contains("smoke failed"), "{note}");

    h.ci.script("dev-smoke", Script::After(1, RunState::Passed));
    h.patch_tracker(
        "pr-42",
        json!({"metadata": {"annotations": {"promotion.io/retry": "1"}}}),
    )
    .await;
    let t = h.wait_phase("pr-42", Phase::Completed).await;
    assert_eq!(
        h.ci.triggered("dev-smoke"),
        2,
        "the retry ran the gate once more"
    );
    let ids = h.ci.correlation_ids("dev-smoke");
    assert_ne!(
        ids[0], ids[1],
        "a retry is a new attempt with its own correlation id"
    );
    assert_eq!(t.status.expect("status").promotions.len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_optional_failure_is_recorded_and_does_not_block() {
    let mut h = Harness::new("flow-optional").await;
    h.ci.script("load", Script::After(0, RunState::Failed));
    h.create_policy(policy(
        "dev-to-staging",
        "dev",
        "staging",
        json!([
            {"name": "smoke", "provider": "jenkins", "job": "smoke"},
            {"name": "load", "provider": "jenkins", "job": "load", "required": false}
        ]),
    ))
    .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let st = h
        .wait_phase("pr-42", Phase::Completed)
        .await
        .status
        .expect("status");
    assert_eq!(st.promotions.len(), 1);
    let load = st.promotions[0]
        .test_runs
        .iter()
        .find(|r| r.name == "load")
        .expect("load recorded");
    assert_eq!((load.state, load.required), (TestState::Failed, false));
    h.wait_event("pr-42", "OptionalTestsFailed").await;
    let policy = h.policies().get("dev-to-staging").await.expect("policy");
    assert_eq!(
        policy.status.and_then(|s| s.tests).as_deref(),
        Some("smoke, load (optional)")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_that_never_finishes_times_out() {
    let mut h = Harness::new("flow-timeout").await;
    h.ci.script("stuck", Script::Hang);
    h.create_policy(policy(
        "dev-to-staging",
        "dev",
        "staging",
        json!([
            {"name": "stuck", "provider": "gitlab", "job": "stuck", "timeout": "2s"}
        ]),
    ))
    .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let st = h
        .wait_phase("pr-42", Phase::Failed)
        .await
        .status
        .expect("status");
    assert_eq!(st.test_runs[0].state, TestState::TimedOut);
    assert!(st.message.unwrap_or_default().contains("timeout of 2s"));
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == "TestsPassed")
        .expect("TestsPassed");
    assert_eq!(c.reason, "TestsTimedOut");
    assert!(h.argo.promotions().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_head_sha_cancels_running_tests_and_starts_over() {
    let mut h = Harness::new("flow-new-sha").await;
    h.ci.script("dev-smoke", Script::Hang);
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.wait_for("pr-42", "tests started", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Testing) && s.test_runs.iter().all(|r| r.run_id.is_some())
        })
    })
    .await;
    h.ci.script("dev-smoke", Script::After(1, RunState::Passed));
    h.argo.deploy("shop-dev", SHA2);
    h.patch_tracker("pr-42", json!({"spec": {"headSha": SHA2}}))
        .await;
    let st = h
        .wait_phase("pr-42", Phase::Completed)
        .await
        .status
        .expect("status");
    assert!(
        h.ci.cancelled().contains(&"dev-smoke".to_string()),
        "the running test was cancelled"
    );
    assert_eq!(h.ci.triggered("dev-smoke"), 2);
    assert_eq!(st.head_sha.as_deref(), Some(SHA2));
    assert_eq!(st.promotions.len(), 1);
    assert_eq!(
        st.promotions[0].revision, SHA2,
        "the new commit is what was promoted"
    );
    h.wait_event("pr-42", "NewHeadSha").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_pr_cancels_and_ends_closed() {
    let mut h = Harness::new("flow-closed").await;
    h.ci.script("dev-smoke", Script::Hang);
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.wait_for("pr-42", "tests started", |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.test_runs.iter().any(|r| r.run_id.is_some()))
    })
    .await;
    h.patch_tracker("pr-42", json!({"spec": {"closed": true}}))
        .await;
    let st = h
        .wait_phase("pr-42", Phase::Closed)
        .await
        .status
        .expect("status");
    assert!(
        st.test_runs
            .iter()
            .all(|r| r.state == TestState::Cancelled || r.state == TestState::Passed)
    );
    assert!(h.ci.cancelled().contains(&"dev-smoke".to_string()));
    assert!(h.argo.promotions().is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn without_auto_promote_it_waits_for_approval() {
    let mut h = Harness::new("flow-approval").await;
    let mut p = policy("dev-to-staging", "dev", "staging", two_tests("dev"));
    p["spec"]["autoPromote"] = json!(false);
    h.create_policy(p).await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let st = h
        .wait_phase("pr-42", Phase::AwaitingApproval)
        .await
        .status
        .expect("status");
    assert!(
        st.message
            .unwrap_or_default()
            .contains(&format!("promotion.io/approve=staging@{SHA}"))
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        h.argo.promotions().is_empty(),
        "nothing moves without approval"
    );
    // An approval for another environment is not an approval for this one.
    h.patch_tracker(
        "pr-42",
        json!({"metadata": {"annotations": {"promotion.io/approve": format!("prod@{SHA}"), "promotion.io/approved-by": "alice@example.com"}}}),
    )
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(h.argo.promotions().is_empty());
    h.patch_tracker(
        "pr-42",
        json!({"metadata": {"annotations": {"promotion.io/approve": format!("staging@{}", &SHA[..7]), "promotion.io/approved-by": "alice@example.com"}}}),
    )
    .await;
    let st = h
        .wait_phase("pr-42", Phase::Completed)
        .await
        .status
        .expect("status");
    assert_eq!(st.promotions[0].promoted_by, "alice@example.com");
    h.wait_event("pr-42", "Approved").await;
    let waited = format!(
        "promotion_approval_wait_seconds_count{{namespace=\"{}\",environment=\"staging\"}} 1",
        h.ctx.namespace
    );
    let text = h.metrics.render();
    assert!(text.contains(&waited), "missing {waited:?} in:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_policy_in_the_middle_completes_where_the_chain_ends() {
    let mut h = Harness::new("flow-missing").await;
    // dev -> staging exists, nothing leaves staging: the PR completes in staging, and says why.
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let st = h
        .wait_phase("pr-42", Phase::Completed)
        .await
        .status
        .expect("status");
    assert_eq!(st.current_environment.as_deref(), Some("staging"));
    assert!(
        st.message
            .unwrap_or_default()
            .contains("no policy promotes from staging")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_policy_is_a_condition_on_tracker_and_policy() {
    let mut h = Harness::new("flow-invalid").await;
    let mut p = policy("dev-to-staging", "dev", "staging", two_tests("dev"));
    p["spec"]["externalTests"][0]["parameters"]["PR"] = json!("${PULL_NUMBER}");
    h.create_policy(p).await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let t = h
        .wait_for("pr-42", "PolicyInvalid", |t| {
            t.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.reason == "PolicyInvalid")
            })
        })
        .await;
    let msg = t.status.and_then(|s| s.message).unwrap_or_default();
    assert!(
        msg.contains("PULL_NUMBER") && msg.contains("spec.externalTests[0].parameters.PR"),
        "{msg}"
    );
    let p = h.policies().get("dev-to-staging").await.expect("policy");
    let valid = p
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Valid")
        .expect("Valid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "Invalid")
    );
    assert_eq!(
        h.ci.all_triggers().len(),
        0,
        "nothing runs under an invalid policy"
    );

    // Fixing the policy wakes the tracker and the gate runs.
    h.policies()
        .patch(
            "dev-to-staging",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"externalTests": two_tests("dev")}})),
        )
        .await
        .expect("fixed");
    h.wait_phase("pr-42", Phase::Completed).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_policies_for_the_same_source_are_a_conflict() {
    let mut h = Harness::new("flow-conflict").await;
    h.create_policy(policy("a", "dev", "staging", two_tests("a")))
        .await;
    h.create_policy(policy("b", "dev", "qa", two_tests("b")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let t = h
        .wait_for("pr-42", "PolicyConflict", |t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "PolicyConflict"))
        })
        .await;
    assert!(
        t.status
            .and_then(|s| s.message)
            .unwrap_or_default()
            .contains("a, b")
    );
    for name in ["a", "b"] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let p = h.policies().get(name).await.expect("policy");
            let ready = p
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
            if ready
                .as_ref()
                .is_some_and(|c| c.reason == "Conflict" && c.status == "False")
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "policy {name} never showed the conflict: {ready:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    assert!(
        h.ci.all_triggers().is_empty(),
        "a coin toss never runs a gate"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_tracker_cancels_its_runs_and_releases_before_it_goes() {
    let mut h = Harness::new("flow-finalizer").await;
    h.ci.script("dev-smoke", Script::Hang);
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    let t = h
        .wait_for("pr-42", "tests started", |t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.test_runs.iter().any(|r| r.run_id.is_some()))
        })
        .await;
    assert!(
        t.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&promotion_controller::controller::FINALIZER.to_string()),
        "the controller guards its trackers with a finalizer"
    );
    h.trackers()
        .delete("pr-42", &Default::default())
        .await
        .expect("deleted");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while h.trackers().get_opt("pr-42").await.expect("read").is_some() {
        assert!(
            std::time::Instant::now() < deadline,
            "the tracker never went away"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        h.ci.cancelled().contains(&"dev-smoke".to_string()),
        "its running test was cancelled before it went"
    );
}

fn tracker_for(name: &str, number: i64, sha: &str) -> serde_json::Value {
    let mut t = tracker(name);
    t["spec"]["number"] = json!(number);
    t["spec"]["headSha"] = json!(sha);
    t["spec"]["application"]["name"] = json!(format!("shop-dev-{number}"));
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn two_trackers_take_staging_one_at_a_time() {
    let mut h = Harness::new("flow-occupancy").await;
    h.ci.script("staging-e2e", Script::Hang);
    h.argo.deploy("shop-dev-42", SHA);
    h.argo.deploy("shop-dev-43", SHA2);
    two_hops(&h).await;
    h.start();
    h.create_tracker(tracker_for("pr-42", 42, SHA)).await;
    h.wait_for("pr-42", "testing in staging", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.current_environment.as_deref() == Some("staging") && s.phase == Some(Phase::Testing)
        })
    })
    .await;
    h.create_tracker(tracker_for("pr-43", 43, SHA2)).await;
    let queued = h.wait_phase("pr-43", Phase::Queued).await;
    let q = queued.status.and_then(|s| s.queue).expect("queue");
    assert_eq!(q.position, 1);
    assert_eq!(
        q.holder.as_deref(),
        Some(format!("{}/pr-42", h.ctx.namespace).as_str())
    );
    assert_eq!(
        h.argo.promotions(),
        [("shop-staging".to_string(), SHA.to_string())],
        "staging runs one PR"
    );
    h.ci.finish("staging-e2e", RunState::Passed);
    h.wait_phase("pr-42", Phase::Completed).await;
    h.wait_for("pr-43", "testing in staging", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.current_environment.as_deref() == Some("staging") && s.phase == Some(Phase::Testing)
        })
    })
    .await;
    assert_eq!(
        h.argo.promotions(),
        [
            ("shop-staging".to_string(), SHA.to_string()),
            ("shop-prod".to_string(), SHA.to_string()),
            ("shop-staging".to_string(), SHA2.to_string()),
        ]
    );
    let waited = format!(
        "promotion_queue_wait_seconds_count{{namespace=\"{}\",environment=\"staging\"}} 1",
        h.ctx.namespace
    );
    let text = h.metrics.render();
    assert!(text.contains(&waited), "missing {waited:?} in:\n{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_whose_runs_find_cannot_see_is_shown_on_the_policy() {
    // Issue #11: a workflow whose run-name lacks the correlation id cannot be adopted after
    // a crash; the policy says so in FindPossible instead of a duplicate run saying it later.
    let mut h = Harness::new("flow-find-possible").await;
    h.ci.faults.lock().expect("lock").unfindable.insert(
        "dev-smoke".into(),
        "workflow dev-smoke has no run-name".into(),
    );
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    // Ready and FindPossible are written in one patch.
    h.wait_for_policy_ready("dev-to-staging").await;
    let p = h.policies().get("dev-to-staging").await.expect("policy");
    let find = p
        .status
        .expect("status")
        .conditions
        .into_iter()
        .find(|c| c.type_ == "FindPossible")
        .expect("FindPossible");
    assert_eq!(
        (find.status.as_str(), find.reason.as_str()),
        ("False", "CorrelationNotVisible")
    );
    assert!(
        find.message
            .contains("test smoke: workflow dev-smoke has no run-name"),
        "{}",
        find.message
    );
    assert_eq!(find.observed_generation, Some(1));
    assert_eq!(h.ci.calls().check, 2, "each test's job checked once");
}

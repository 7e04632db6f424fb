//! The rules that make a gate trustworthy (issue #10), on the in-memory fakes:
//! each test names one guarantee and fails on an engine that breaks it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use promotion_api::{Phase, PullRequestTracker, PullRequestTrackerStatus, TestState};
use promotion_core::engine::{Engine, EngineConfig, Ports};
use promotion_core::fakes::*;
use promotion_core::policy_cache::{CachedPolicy, LookupError, PolicyCache};
use promotion_core::ports::RunState;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

fn tracker_named(name: &str, number: i64, sha: &str) -> PullRequestTracker {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": name, "namespace": "team", "uid": format!("uid-{name}"), "generation": 1},
        "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": number, "headSha": sha,
                 "environment": "dev", "application": {"name": format!("shop-dev-{number}")}}
    }))
    .expect("tracker")
}

fn tracker() -> PullRequestTracker {
    tracker_named("shop-42", 42, SHA)
}

fn policy_spec(source: &str, target: &str, tests: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "sourceEnvironment": source, "targetEnvironment": target, "externalTests": tests,
        "promotion": {"application": {"name": format!("shop-{target}")}, "githubLabel": format!("in-{target}")}
    })
}

fn policy_from(name: &str, generation: i64, spec: serde_json::Value) -> CachedPolicy {
    CachedPolicy::new(
        "team",
        name,
        Some(generation),
        serde_json::from_value(spec).expect("policy"),
    )
}

fn policy(name: &str, source: &str, target: &str, tests: serde_json::Value) -> CachedPolicy {
    policy_from(name, 1, policy_spec(source, target, tests))
}

fn one_test(job: &str) -> serde_json::Value {
    serde_json::json!([{"name": job, "provider": "jenkins", "job": job}])
}

struct World {
    ci: Arc<FakeCi>,
    argo: Arc<FakeArgo>,
    engine: Engine,
    directory: Arc<FakeDirectory>,
    policies: PolicyCache,
    store: MemoryStore,
    events: EventLog,
}

fn world() -> World {
    world_with(EngineConfig::default())
}

fn world_with(config: EngineConfig) -> World {
    let crashes = Arc::new(Crashes::default());
    let ci = Arc::new(FakeCi::new(crashes.clone()));
    let argo = Arc::new(FakeArgo::new(crashes.clone()));
    let github = Arc::new(FakeGitHub::new(crashes));
    argo.deploy("shop-dev-42", SHA);
    let directory = Arc::new(FakeDirectory::default());
    let engine = Engine::new(
        Ports {
            runner: ci.clone(),
            argo: argo.clone(),
            github,
        },
        EngineConfig {
            poll_interval: Duration::from_millis(1),
            adoption_grace: Duration::ZERO,
            ..config
        },
    )
    .with_directory(directory.clone());
    World {
        ci,
        argo,
        engine,
        directory,
        policies: PolicyCache::new(),
        store: MemoryStore::default(),
        events: EventLog::default(),
    }
}

/// Reconciles like the controller does: each time with the last saved status.
async fn run(w: &World, t: PullRequestTracker, rounds: usize) -> PullRequestTracker {
    run_with(w, t, &w.store, rounds).await
}

/// Reconciles `t` with its own store, keeping the directory (the controller's cache) current.
async fn run_with(
    w: &World,
    mut t: PullRequestTracker,
    store: &MemoryStore,
    rounds: usize,
) -> PullRequestTracker {
    for _ in 0..rounds {
        let after = w
            .engine
            .reconcile(&t, &w.policies, store, &w.events)
            .await
            .expect("reconcile");
        t.status = store.status.lock().expect("lock").clone();
        w.directory.put(&t);
        if after.is_none() {
            break;
        }
    }
    t
}

/// Reconciles until `done` holds (at most `rounds` times).
async fn run_until(
    w: &World,
    mut t: PullRequestTracker,
    store: &MemoryStore,
    rounds: usize,
    done: impl Fn(&PullRequestTrackerStatus) -> bool,
) -> PullRequestTracker {
    for _ in 0..rounds {
        t = run_with(w, t, store, 1).await;
        if t.status.as_ref().is_some_and(&done) {
            break;
        }
    }
    t
}

fn in_phase(env: &'static str, phase: Phase) -> impl Fn(&PullRequestTrackerStatus) -> bool {
    move |st| st.current_environment.as_deref() == Some(env) && st.phase == Some(phase)
}

fn annotate(t: &PullRequestTracker, pairs: &[(&str, &str)]) -> PullRequestTracker {
    let mut t = t.clone();
    let a = t.metadata.annotations.get_or_insert_with(BTreeMap::new);
    for (k, v) in pairs {
        a.insert(k.to_string(), v.to_string());
    }
    t
}

fn status(t: &PullRequestTracker) -> &PullRequestTrackerStatus {
    t.status.as_ref().expect("status")
}

fn condition<'a>(st: &'a PullRequestTrackerStatus, type_: &str) -> &'a Condition {
    st.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {:?}", st.conditions))
}

// ---- 2. The end of the chain is explicit ----

#[tokio::test]
async fn an_environment_no_policy_mentions_waits_and_resumes_when_one_appears() {
    let w = world();
    let t = run(&w, tracker(), 10).await;
    let st = status(&t);
    assert_ne!(st.phase, Some(Phase::Completed), "{:?}", st.message);
    let ready = condition(st, "Ready");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "PolicyNotFound")
    );
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    let t = run(&w, t, 20).await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(status(&t).phase, Some(Phase::Completed));
}

#[tokio::test]
async fn a_missing_middle_link_waits_instead_of_completing() {
    let w = world();
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    // staging -> qa is missing: qa -> prod starts from nowhere.
    w.policies
        .upsert(policy("qa-to-prod", "qa", "prod", one_test("perf")));
    let t = run(&w, tracker(), 30).await;
    let st = status(&t);
    assert_eq!(st.current_environment.as_deref(), Some("staging"));
    assert_ne!(st.phase, Some(Phase::Completed), "{:?}", st.message);
    assert_eq!(condition(st, "Ready").reason, "PolicyNotFound");
}

#[tokio::test]
async fn a_tracker_no_policy_selects_waits_and_resumes_when_labelled() {
    let w = world();
    let mut spec = policy_spec("dev", "staging", one_test("smoke"));
    spec["selector"] = serde_json::json!({"matchLabels": {"tier": "web"}});
    w.policies.upsert(policy_from("web", 1, spec));
    let t = run(&w, tracker(), 10).await;
    assert_ne!(status(&t).phase, Some(Phase::Completed));
    assert_eq!(condition(status(&t), "Ready").reason, "PolicyNotFound");
    let mut labelled = t.clone();
    labelled.metadata.labels = Some(BTreeMap::from([("tier".into(), "web".into())]));
    let t = run(&w, labelled, 20).await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
}

#[tokio::test]
async fn a_tracker_entering_mid_chain_completes_at_its_end() {
    let w = world();
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    w.policies.upsert(policy(
        "staging-to-prod",
        "staging",
        "prod",
        one_test("e2e"),
    ));
    let mut t = tracker();
    t.spec.environment = "staging".into();
    t.spec.application.name = "shop-staging".into();
    w.argo.deploy("shop-staging", SHA);
    let t = run(&w, t, 30).await;
    let st = status(&t);
    assert_eq!(st.current_environment.as_deref(), Some("prod"));
    assert_eq!(st.phase, Some(Phase::Completed), "{:?}", st.message);
}

#[tokio::test]
async fn a_policy_deleted_during_testing_does_not_fail_the_gate() {
    let w = world();
    w.ci.script("smoke", Script::Hang);
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    let t = run(&w, tracker(), 5).await;
    assert_eq!(status(&t).phase, Some(Phase::Testing));
    w.policies.remove("team", "dev-to-staging");
    let t = run(&w, t, 5).await;
    let st = status(&t);
    assert_eq!(st.phase, Some(Phase::Testing), "{:?}", st.message);
    assert!(w.ci.cancelled().is_empty(), "runs were cancelled");
    assert_eq!(condition(st, "Ready").reason, "PolicyNotFound");
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    let t = run(&w, t, 1).await;
    assert_eq!(condition(status(&t), "Ready").reason, "Progressing");
    w.ci.finish("smoke", RunState::Passed);
    let t = run(&w, t, 20).await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(w.ci.triggered("smoke"), 1);
}

#[test]
fn a_relist_never_shows_an_empty_cache() {
    let cache = PolicyCache::new();
    let all: Vec<CachedPolicy> = (0..200)
        .map(|i| policy(&format!("p{i}"), &format!("env{i}"), "next", one_test("t")))
        .collect();
    cache.replace_all(all.clone());
    let done = std::sync::atomic::AtomicBool::new(false);
    let misses = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut misses = 0;
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                if let Err(LookupError::PolicyNotFound { .. }) =
                    cache.lookup("team", "env199", &BTreeMap::new())
                {
                    misses += 1;
                }
            }
            misses
        });
        for _ in 0..300 {
            cache.replace_all(all.clone());
        }
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        reader.join().expect("reader")
    });
    assert_eq!(misses, 0, "a reconcile during a re-list saw no policy");
}

// ---- 1. One PR per environment ----

fn chain(w: &World) {
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    w.policies.upsert(policy(
        "staging-to-prod",
        "staging",
        "prod",
        one_test("e2e"),
    ));
}

#[tokio::test]
async fn two_prs_one_environment_the_second_queues_until_the_first_moves_on() {
    let w = world();
    chain(&w);
    w.ci.script("e2e", Script::Hang);
    w.argo.deploy("shop-dev-43", SHA2);
    w.argo.deploy("shop-dev-44", SHA2);
    let (sa, sb, sc) = (
        MemoryStore::default(),
        MemoryStore::default(),
        MemoryStore::default(),
    );
    let a = run_until(&w, tracker(), &sa, 30, in_phase("staging", Phase::Testing)).await;
    assert_eq!(
        w.argo.held_by("shop-staging").as_deref(),
        Some("team/shop-42/uid-shop-42")
    );

    let b = tracker_named("shop-43", 43, SHA2);
    let b = run_until(&w, b, &sb, 30, |st| st.phase == Some(Phase::Queued)).await;
    let q = status(&b).queue.clone().expect("queue");
    assert_eq!((q.environment.as_str(), q.position), ("staging", 1));
    assert_eq!(q.holder.as_deref(), Some("team/shop-42"));
    assert!(
        status(&b)
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("position 1")
    );
    let c = tracker_named("shop-44", 44, SHA2);
    let c = run_until(&w, c, &sc, 30, |st| st.phase == Some(Phase::Queued)).await;
    assert_eq!(status(&c).queue.as_ref().map(|q| q.position), Some(2));
    // Staging still runs A's commit only: B was not promoted over it.
    assert_eq!(
        w.argo.promotions(),
        vec![("shop-staging".to_string(), SHA.to_string())]
    );
    let b = run_with(&w, b, &sb, 3).await;
    assert_eq!(status(&b).phase, Some(Phase::Queued));

    // A's staging gate passes: A moves on to prod, staging goes to B, then C waits for B.
    w.ci.finish("e2e", RunState::Passed);
    let a = run_until(&w, a, &sa, 30, in_phase("prod", Phase::Completed)).await;
    assert_eq!(status(&a).phase, Some(Phase::Completed));
    let b = run_until(&w, b, &sb, 30, in_phase("staging", Phase::Testing)).await;
    assert_eq!(status(&b).queue, None);
    assert_eq!(
        w.argo.held_by("shop-staging").as_deref(),
        Some("team/shop-43/uid-shop-43")
    );
    let c = run_with(&w, c, &sc, 2).await;
    let q = status(&c).queue.clone().expect("queue");
    assert_eq!((q.position, q.holder.as_deref()), (1, Some("team/shop-43")));
    assert_eq!(
        w.argo.promotions(),
        vec![
            ("shop-staging".to_string(), SHA.to_string()),
            ("shop-prod".to_string(), SHA.to_string()),
            ("shop-staging".to_string(), SHA2.to_string()),
        ]
    );
    assert!(w.events.reasons().contains(&"Queued".to_string()));
}

#[tokio::test]
async fn a_gate_whose_app_moved_mid_test_is_not_promoted() {
    let w = world();
    chain(&w);
    w.ci.script("smoke", Script::Hang);
    let t = run_until(&w, tracker(), &w.store, 10, in_phase("dev", Phase::Testing)).await;
    // Someone deploys another commit in dev while the gate runs.
    w.argo.deploy("shop-dev-42", SHA2);
    w.ci.finish("smoke", RunState::Passed);
    let t = run_with(&w, t, &w.store, 3).await;
    let st = status(&t);
    assert!(
        w.argo.promotions().is_empty(),
        "promoted on a stale verdict"
    );
    assert_eq!(st.current_environment.as_deref(), Some("dev"));
    assert_eq!(condition(st, "TestsPassed").reason, "GateInvalidated");
    assert!(w.events.reasons().contains(&"GateInvalidated".to_string()));
    // Back at the tracker's commit: the gate runs again, then the PR moves on.
    w.argo.deploy("shop-dev-42", SHA);
    w.ci.script("smoke", Script::After(0, RunState::Passed));
    let t = run_until(&w, t, &w.store, 20, in_phase("staging", Phase::Testing)).await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(w.ci.triggered("smoke"), 2);
}

#[tokio::test]
async fn a_hold_whose_tracker_is_gone_is_broken_by_the_next_in_line() {
    let w = world();
    chain(&w);
    w.argo
        .set_holder("shop-staging", Some("team/deleted-pr/uid-old"));
    let t = run_until(
        &w,
        tracker(),
        &w.store,
        20,
        in_phase("staging", Phase::Testing),
    )
    .await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(
        w.argo.held_by("shop-staging").as_deref(),
        Some("team/shop-42/uid-shop-42")
    );
    assert!(w.events.reasons().contains(&"HoldBroken".to_string()));
}

#[tokio::test]
async fn a_hold_of_a_live_tracker_is_kept() {
    let w = world();
    chain(&w);
    let other = tracker_named("shop-7", 7, SHA2);
    let mut other = other;
    other.status = Some(PullRequestTrackerStatus {
        phase: Some(Phase::Testing),
        current_environment: Some("staging".into()),
        application: Some(
            serde_json::from_value(serde_json::json!({"name": "shop-staging"})).expect("app"),
        ),
        ..Default::default()
    });
    w.directory.put(&other);
    w.argo
        .set_holder("shop-staging", Some("team/shop-7/uid-shop-7"));
    let t = run_until(&w, tracker(), &w.store, 20, |st| {
        st.phase == Some(Phase::Queued)
    })
    .await;
    assert_eq!(status(&t).phase, Some(Phase::Queued));
    assert!(w.argo.promotions().is_empty());
}

#[tokio::test]
async fn a_tracker_that_already_holds_the_target_is_not_queued_behind_those_waiting_for_it() {
    // Found by `cargo xtask bench`: a promotion cut short after the hold was taken (a
    // refused write, a crash) left its tracker holding staging while others queued for
    // it. Back at its verdict it saw them ahead in line and queued behind them, and they
    // waited for it: 20 of 1,000 trackers never finished.
    let w = world();
    chain(&w);
    let mut other = tracker_named("shop-7", 7, SHA2);
    other.status = Some(PullRequestTrackerStatus {
        phase: Some(Phase::Queued),
        queue: Some(
            serde_json::from_value(serde_json::json!({
                "environment": "staging", "application": {"name": "shop-staging"},
                "position": 1, "holder": "team/shop-42", "since": "2020-01-01T00:00:00Z"
            }))
            .expect("queue"),
        ),
        ..Default::default()
    });
    w.directory.put(&other);
    w.argo
        .set_holder("shop-staging", Some("team/shop-42/uid-shop-42"));
    let t = run_until(
        &w,
        tracker(),
        &w.store,
        20,
        in_phase("staging", Phase::Testing),
    )
    .await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(
        w.argo.promotions(),
        vec![("shop-staging".to_string(), SHA.to_string())]
    );
}

#[tokio::test]
async fn a_failed_pr_releases_its_environment() {
    let w = world();
    chain(&w);
    w.ci.script("e2e", Script::After(0, RunState::Failed));
    let t = run_until(
        &w,
        tracker(),
        &w.store,
        30,
        in_phase("staging", Phase::Failed),
    )
    .await;
    assert_eq!(status(&t).phase, Some(Phase::Failed));
    assert_eq!(w.argo.held_by("shop-staging"), None);
}

// ---- 3. A gate runs on one snapshot of its policy ----

#[tokio::test]
async fn a_policy_edit_during_the_gate_restarts_it_on_the_new_spec() {
    let w = world();
    w.ci.script("smoke", Script::Hang);
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    let t = run_until(&w, tracker(), &w.store, 10, in_phase("dev", Phase::Testing)).await;
    let gate = status(&t).gate.clone().expect("snapshot");
    assert_eq!(
        (gate.generation, gate.tests[0].job.as_str()),
        (Some(1), "smoke")
    );
    // The edit: another test, another target.
    w.policies.upsert(policy_from(
        "dev-to-staging",
        2,
        policy_spec("dev", "qa", one_test("e2e")),
    ));
    let t = run_until(&w, t, &w.store, 20, in_phase("qa", Phase::Completed)).await;
    let st = status(&t);
    assert_eq!(
        st.current_environment.as_deref(),
        Some("qa"),
        "{:?}",
        st.message
    );
    assert_eq!(w.ci.cancelled(), vec!["smoke".to_string()]);
    assert_eq!((w.ci.triggered("smoke"), w.ci.triggered("e2e")), (1, 1));
    assert_eq!(
        w.argo.promotions(),
        vec![("shop-qa".to_string(), SHA.to_string())]
    );
    assert!(w.events.reasons().contains(&"PolicyChanged".to_string()));
    assert_eq!(st.promotions[0].test_runs[0].name, "e2e");
}

#[tokio::test]
async fn the_snapshot_holds_the_substituted_tests_and_target() {
    let w = world();
    w.ci.script("smoke", Script::Hang);
    let mut spec = policy_spec(
        "dev",
        "staging",
        serde_json::json!([{"name": "smoke", "provider": "jenkins", "job": "smoke",
            "parameters": {"PR": "${PR_NUMBER}"}, "timeout": "10m", "connection": "main"}]),
    );
    spec["promotion"]["application"]["name"] = "shop-${TARGET_ENVIRONMENT}-${PR_NUMBER}".into();
    w.policies.upsert(policy_from("p", 3, spec));
    let t = run_until(&w, tracker(), &w.store, 10, in_phase("dev", Phase::Testing)).await;
    let gate = status(&t).gate.clone().expect("snapshot");
    assert_eq!(gate.policy, "p");
    assert_eq!(gate.generation, Some(3));
    assert_eq!(
        gate.tests[0].parameters.get("PR").map(String::as_str),
        Some("42")
    );
    assert_eq!(gate.tests[0].timeout.as_deref(), Some("10m"));
    assert_eq!(gate.tests[0].connection.as_deref(), Some("main"));
    assert_eq!(gate.application.name, "shop-staging-42");
}

// ---- 4. Cancel what times out ----

#[tokio::test]
async fn timed_out_runs_are_cancelled_in_ci_required_or_optional() {
    let w = world();
    w.ci.script("slow", Script::Hang);
    w.ci.script("lazy", Script::Hang);
    w.policies.upsert(policy(
        "p",
        "dev",
        "staging",
        serde_json::json!([
            {"name": "fast", "provider": "jenkins", "job": "fast"},
            {"name": "lazy", "provider": "jenkins", "job": "lazy", "required": false, "timeout": "1ms"}
        ]),
    ));
    let t = run_until(
        &w,
        tracker(),
        &w.store,
        20,
        in_phase("staging", Phase::Completed),
    )
    .await;
    assert_eq!(status(&t).current_environment.as_deref(), Some("staging"));
    assert_eq!(w.ci.cancelled(), vec!["lazy".to_string()]);
    let record = &status(&t).promotions[0];
    let lazy = record
        .test_runs
        .iter()
        .find(|r| r.name == "lazy")
        .expect("lazy");
    assert_eq!(lazy.state, TestState::TimedOut);
    assert!(
        lazy.message
            .as_deref()
            .unwrap_or_default()
            .contains("cancelled in the CI system"),
        "{:?}",
        lazy.message
    );

    let w = world();
    w.ci.script("slow", Script::Hang);
    w.policies.upsert(policy(
        "p",
        "dev",
        "staging",
        serde_json::json!([{"name": "slow", "provider": "jenkins", "job": "slow", "timeout": "1ms"}]),
    ));
    let t = run_until(&w, tracker(), &w.store, 20, |st| {
        st.phase == Some(Phase::Failed)
    })
    .await;
    assert_eq!(status(&t).phase, Some(Phase::Failed));
    assert_eq!(w.ci.cancelled(), vec!["slow".to_string()]);
}

// ---- 5. Approvals bound to what was tested ----

fn manual(w: &World) {
    let mut spec = policy_spec("dev", "staging", one_test("smoke"));
    spec["autoPromote"] = false.into();
    w.policies.upsert(policy_from("p", 1, spec));
}

const APPROVE: &str = "promotion.io/approve";
const BY: &str = "promotion.io/approved-by";

#[tokio::test]
async fn an_approval_names_the_target_and_the_head_sha() {
    let w = world();
    manual(&w);
    let t = run_until(&w, tracker(), &w.store, 10, |st| {
        st.phase == Some(Phase::AwaitingApproval)
    })
    .await;
    // The old form names no commit: it does not count.
    let t = run_with(
        &w,
        annotate(&t, &[(APPROVE, "staging"), (BY, "alice")]),
        &w.store,
        3,
    )
    .await;
    assert_eq!(status(&t).phase, Some(Phase::AwaitingApproval));
    assert!(
        status(&t)
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("names no commit")
    );
    // Another commit: void.
    let t = run_with(
        &w,
        annotate(&t, &[(APPROVE, &format!("staging@{}", &SHA2[..7]))]),
        &w.store,
        3,
    )
    .await;
    assert_eq!(status(&t).phase, Some(Phase::AwaitingApproval));
    assert!(
        status(&t)
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("void")
    );
    assert!(w.argo.promotions().is_empty());
    // The tested commit, by its short SHA: promoted, by the approver.
    let t = run_until(
        &w,
        annotate(&t, &[(APPROVE, &format!("staging@{}", &SHA[..7]))]),
        &w.store,
        10,
        in_phase("staging", Phase::Completed),
    )
    .await;
    assert_eq!(status(&t).promotions[0].promoted_by, "alice");
}

#[tokio::test]
async fn an_approval_given_before_the_gate_passed_waits_for_the_pass() {
    let w = world();
    manual(&w);
    w.ci.script("smoke", Script::Hang);
    let t = annotate(
        &tracker(),
        &[(APPROVE, &format!("staging@{SHA}")), (BY, "bob")],
    );
    let t = run_until(&w, t, &w.store, 10, in_phase("dev", Phase::Testing)).await;
    let t = run_with(&w, t, &w.store, 3).await;
    assert_eq!(status(&t).phase, Some(Phase::Testing));
    assert!(w.argo.promotions().is_empty());
    w.ci.finish("smoke", RunState::Passed);
    let t = run_until(&w, t, &w.store, 10, in_phase("staging", Phase::Completed)).await;
    assert_eq!(status(&t).promotions[0].promoted_by, "bob");
}

#[tokio::test]
async fn an_approval_is_void_after_a_new_push() {
    let w = world();
    manual(&w);
    let t = annotate(
        &tracker(),
        &[(APPROVE, &format!("staging@{SHA}")), (BY, "bob")],
    );
    let t = run_until(&w, t, &w.store, 10, |st| st.phase == Some(Phase::Testing)).await;
    // The push lands (and deploys) before the gate passes.
    w.argo.deploy("shop-dev-42", SHA2);
    let mut pushed = t.clone();
    pushed.spec.head_sha = SHA2.into();
    let t = run_until(&w, pushed, &w.store, 20, |st| {
        st.phase == Some(Phase::AwaitingApproval)
    })
    .await;
    let t = run_with(&w, t, &w.store, 3).await;
    assert_eq!(status(&t).phase, Some(Phase::AwaitingApproval));
    assert!(
        w.argo.promotions().is_empty(),
        "the old approval promoted the new push"
    );
    assert!(
        status(&t)
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("new push")
    );
}

// ---- 6. Every started promotion ends in a record ----

/// A tracker caught between moving the target Application and finishing the promotion.
async fn mid_promotion(w: &World) -> PullRequestTracker {
    chain(w);
    w.ci.script("smoke", Script::Hang);
    let mut t = run_until(w, tracker(), &w.store, 10, in_phase("dev", Phase::Testing)).await;
    let mut st = t.status.clone().expect("status");
    st.phase = Some(Phase::Promoting);
    st.pending_promotion = Some(
        serde_json::from_value(serde_json::json!({
            "source": "dev", "target": "staging", "policy": "dev-to-staging", "revision": SHA,
            "application": {"name": "shop-staging"}, "promotedBy": "promotion-controller",
            "applicationUpdated": true
        }))
        .expect("pending"),
    );
    t.status = Some(st);
    w.argo
        .set_holder("shop-staging", Some("team/shop-42/uid-shop-42"));
    t
}

fn assert_interrupted(w: &World, st: &PullRequestTrackerStatus) {
    assert_eq!(st.promotions.len(), 1, "{:?}", st.promotions);
    assert!(st.promotions[0].interrupted);
    assert_eq!(st.promotions[0].target, "staging");
    assert!(
        w.events
            .reasons()
            .contains(&"PromotionInterrupted".to_string())
    );
    assert_eq!(w.argo.held_by("shop-staging"), None);
}

#[tokio::test]
async fn a_push_during_promoting_is_recorded_as_interrupted() {
    let w = world();
    let mut t = mid_promotion(&w).await;
    t.spec.head_sha = SHA2.into();
    let t = run_with(&w, t, &w.store, 1).await;
    assert_interrupted(&w, status(&t));
}

#[tokio::test]
async fn a_close_during_promoting_is_recorded_as_interrupted() {
    let w = world();
    let mut t = mid_promotion(&w).await;
    t.spec.closed = true;
    let t = run_with(&w, t, &w.store, 1).await;
    assert_eq!(status(&t).phase, Some(Phase::Closed));
    assert_interrupted(&w, status(&t));
}

#[tokio::test]
async fn a_deletion_cancels_runs_records_and_releases() {
    let w = world();
    let t = mid_promotion(&w).await;
    w.engine
        .finish(&t, &w.store, &w.events)
        .await
        .expect("finish");
    let st = w.store.status.lock().expect("lock").clone().expect("saved");
    assert_interrupted(&w, &st);
    assert_eq!(w.ci.cancelled(), vec!["smoke".to_string()]);
}

// ---- 7. Deploying times out ----

#[tokio::test]
async fn deploying_times_out_with_the_apps_state() {
    let w = world_with(EngineConfig {
        deploy_timeout: Duration::ZERO,
        ..EngineConfig::default()
    });
    w.argo.deploy("shop-dev-42", SHA2);
    let t = run_until(&w, tracker(), &w.store, 5, |st| {
        st.phase == Some(Phase::Failed)
    })
    .await;
    let st = status(&t);
    assert_eq!(st.phase, Some(Phase::Failed));
    let msg = st.message.as_deref().unwrap_or_default();
    assert!(
        msg.contains("deploy timed out") && msg.contains("Synced/Healthy"),
        "{msg}"
    );
    assert_eq!(condition(st, "Ready").reason, "DeployTimedOut");
}

#[tokio::test]
async fn a_policys_deploy_timeout_bounds_the_next_environment() {
    let w = world();
    let mut spec = policy_spec("dev", "staging", one_test("smoke"));
    spec["deployTimeout"] = "1ms".into();
    w.policies.upsert(policy_from("p", 1, spec));
    *w.argo.manual_sync.lock().expect("lock") = true;
    let t = run_until(
        &w,
        tracker(),
        &w.store,
        10,
        in_phase("staging", Phase::Promoted),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let t = run_until(&w, t, &w.store, 5, |st| st.phase == Some(Phase::Failed)).await;
    let msg = status(&t).message.clone().unwrap_or_default();
    assert!(msg.contains("OutOfSync/Progressing"), "{msg}");
}

// ---- 9. A reopened PR resumes ----

#[tokio::test]
async fn a_reopened_pr_resumes_its_journey() {
    let w = world();
    w.policies.upsert(policy(
        "dev-to-staging",
        "dev",
        "staging",
        one_test("smoke"),
    ));
    w.ci.script("smoke", Script::Hang);
    let t = run_until(&w, tracker(), &w.store, 10, in_phase("dev", Phase::Testing)).await;
    let mut closed = t.clone();
    closed.spec.closed = true;
    let t = run_with(&w, closed, &w.store, 2).await;
    assert_eq!(status(&t).phase, Some(Phase::Closed));
    let mut reopened = t.clone();
    reopened.spec.closed = false;
    w.ci.script("smoke", Script::After(0, RunState::Passed));
    let t = run_until(
        &w,
        reopened,
        &w.store,
        20,
        in_phase("staging", Phase::Completed),
    )
    .await;
    assert_eq!(status(&t).phase, Some(Phase::Completed));
    assert!(w.events.reasons().contains(&"Reopened".to_string()));
}

// ---- 10. The audit trail is bounded ----

#[test]
fn status_promotions_keep_the_newest_and_count_them_all() {
    use promotion_core::records::{MAX_PROMOTION_RECORDS, append_promotion};
    let mut st = PullRequestTrackerStatus::default();
    for i in 0..(MAX_PROMOTION_RECORDS + 10) {
        let record = serde_json::from_value(serde_json::json!({
            "source": "a", "target": "b", "policy": "p", "revision": format!("{i}"),
            "promotedAt": "2026-01-01T00:00:00Z", "promotedBy": "x"
        }))
        .expect("record");
        append_promotion(&mut st, record);
    }
    assert_eq!(st.promotions.len(), MAX_PROMOTION_RECORDS);
    assert_eq!(
        st.promotion_count,
        Some((MAX_PROMOTION_RECORDS + 10) as i64)
    );
    assert_eq!(st.promotions[0].revision, "10");
}

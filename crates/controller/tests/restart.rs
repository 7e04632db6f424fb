//! The controller is stopped (as if it crashed) and started again at each phase:
//! every test is triggered exactly once and the PR is promoted exactly once.

mod support;

use promotion_api::Phase;
use promotion_core::fakes::{CrashPoint, Script};
use promotion_core::ports::{PullRequestRef, RunState};
use support::*;

fn pr() -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    }
}

/// After the restart the journey completes with one trigger per test and hop and one promotion per hop.
async fn assert_exactly_once(h: &Harness) {
    let st = h
        .wait_phase("pr-42", Phase::Completed)
        .await
        .status
        .expect("status");
    for job in ["dev-smoke", "dev-e2e", "staging-smoke", "staging-e2e"] {
        assert_eq!(
            h.ci.triggered(job),
            1,
            "{job} was triggered {} times",
            h.ci.triggered(job)
        );
    }
    assert_eq!(
        h.argo.promotions(),
        [
            ("shop-staging".to_string(), SHA.to_string()),
            ("shop-prod".to_string(), SHA.to_string())
        ],
        "each application was moved once"
    );
    assert_eq!(
        st.promotions.len(),
        2,
        "one record per hop: {:#?}",
        st.promotions
    );
    assert_eq!(
        h.github.labels(&pr()),
        ["promoted-to-staging", "promoted-to-prod"]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_trigger_before_the_run_id_is_saved() {
    let mut h = Harness::new("restart-trigger").await;
    two_hops(&h).await;
    h.crashes.arm(CrashPoint::AfterTrigger("dev-smoke".into()));
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.crash_when_hit().await;
    // The trigger reached the CI system but its run id never reached the status.
    let t = h.trackers().get("pr-42").await.expect("tracker");
    let smoke = t
        .status
        .as_ref()
        .and_then(|s| s.test_runs.iter().find(|r| r.name == "smoke").cloned());
    assert!(
        smoke
            .as_ref()
            .is_some_and(|r| r.run_id.is_none() && r.correlation_id.is_some()),
        "{smoke:?}"
    );
    assert_eq!(h.ci.triggered("dev-smoke"), 1);
    h.start();
    assert_exactly_once(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_during_tests() {
    let mut h = Harness::new("restart-testing").await;
    two_hops(&h).await;
    h.ci.script("dev-smoke", Script::After(15, RunState::Passed));
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.wait_for("pr-42", "tests running", |t| {
        t.status.as_ref().is_some_and(|s| {
            s.phase == Some(Phase::Testing) && s.test_runs.iter().all(|r| r.run_id.is_some())
        })
    })
    .await;
    h.crash().await;
    h.start();
    assert_exactly_once(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_between_the_argo_cd_update_and_the_label() {
    let mut h = Harness::new("restart-promote").await;
    two_hops(&h).await;
    h.crashes.arm(CrashPoint::AfterPromote);
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.crash_when_hit().await;
    let st = h
        .trackers()
        .get("pr-42")
        .await
        .expect("tracker")
        .status
        .expect("status");
    // The pending promotion is not written: the Application's own marker, written with
    // the revision, is what the restart finds.
    assert_eq!(st.phase, Some(Phase::Testing));
    assert!(
        h.github.labels(&pr()).is_empty(),
        "crashed before the label"
    );
    h.start();
    assert_exactly_once(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn crash_after_the_label_before_the_record() {
    let mut h = Harness::new("restart-label").await;
    two_hops(&h).await;
    h.crashes.arm(CrashPoint::AfterLabel);
    h.start();
    h.create_tracker(tracker("pr-42")).await;
    h.crash_when_hit().await;
    let st = h
        .trackers()
        .get("pr-42")
        .await
        .expect("tracker")
        .status
        .expect("status");
    assert_eq!(st.phase, Some(Phase::Testing));
    assert!(st.promotions.is_empty());
    h.start();
    assert_exactly_once(&h).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn two_restarts_in_a_row_at_every_point() {
    let mut h = Harness::new("restart-all").await;
    two_hops(&h).await;
    h.start();
    h.crashes.arm(CrashPoint::AfterTrigger("dev-e2e".into()));
    h.create_tracker(tracker("pr-42")).await;
    h.crash_when_hit().await;
    h.crashes.arm(CrashPoint::AfterPromote);
    h.start();
    h.crash_when_hit().await;
    h.crashes
        .arm(CrashPoint::AfterTrigger("staging-smoke".into()));
    h.start();
    h.crash_when_hit().await;
    h.crashes.arm(CrashPoint::AfterLabel);
    h.start();
    h.crash_when_hit().await;
    h.start();
    assert_exactly_once(&h).await;
}

fn tracker_for(name: &str, number: i64, sha: &str) -> serde_json::Value {
    let mut t = tracker(name);
    t["spec"]["number"] = serde_json::json!(number);
    t["spec"]["headSha"] = serde_json::json!(sha);
    t["spec"]["application"]["name"] = serde_json::json!(format!("shop-dev-{number}"));
    t
}

#[tokio::test(flavor = "multi_thread")]
async fn the_environment_hold_survives_a_restart() {
    let mut h = Harness::new("restart-hold").await;
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
    h.wait_phase("pr-43", Phase::Queued).await;
    // A new process knows nothing in memory: the hold is on the Application, the queue in status.
    h.crash().await;
    h.start();
    h.wait_for("pr-43", "still queued after the restart", |t| {
        t.status
            .as_ref()
            .and_then(|s| s.queue.as_ref())
            .is_some_and(|q| q.position == 1)
    })
    .await;
    assert_eq!(
        h.argo.promotions(),
        [("shop-staging".to_string(), SHA.to_string())],
        "the restarted controller did not promote over the holder"
    );
    h.ci.finish("staging-e2e", RunState::Passed);
    h.wait_phase("pr-42", Phase::Completed).await;
    h.wait_for("pr-43", "in staging", |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.current_environment.as_deref() == Some("staging"))
    })
    .await;
}

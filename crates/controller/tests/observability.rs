//! Metrics, readiness and CI callbacks, on the real API server with fake outside systems.

mod support;

use promotion_api::{Phase, Provider};
use promotion_controller::controller::Wake;
use promotion_core::fakes::Script;
use promotion_core::ports::RunState;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_what_the_trackers_show() {
    let mut h = Harness::new("metrics").await;
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.ci.script("dev-e2e", Script::After(0, RunState::Failed));
    h.start();
    h.create_tracker(tracker("pr-1")).await;
    h.wait_phase("pr-1", Phase::Failed).await;
    h.ci.script("dev-e2e", Script::After(0, RunState::Passed));
    h.patch_tracker(
        "pr-1",
        serde_json::json!({"metadata": {"annotations": {"promotion.io/retry": "a"}}}),
    )
    .await;
    h.wait_phase("pr-1", Phase::Completed).await;
    assert!(
        h.ready.load(Ordering::SeqCst),
        "ready once the caches are synced"
    );
    let text = h.metrics.render();
    for line in [
        "promotion_promotions_total{source=\"dev\",target=\"staging\"} 1",
        "promotion_trackers{phase=\"Completed\"} 1",
        "promotion_test_runs_total{provider=\"gitlab\",outcome=\"failed\"} 1",
        "promotion_test_runs_total{provider=\"gitlab\",outcome=\"passed\"} 1",
        // The failing gate cancelled its other test at once.
        "promotion_test_runs_total{provider=\"jenkins\",outcome=\"cancelled\"} 1",
        "promotion_test_runs_total{provider=\"jenkins\",outcome=\"passed\"} 1",
        "promotion_pass_to_promotion_seconds_count 1",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let ns = &h.ctx.namespace;
    for line in [
        format!(
            "promotion_environment_promotions_total{{namespace=\"{ns}\",environment=\"staging\"}} 1"
        ),
        format!(
            "promotion_lead_time_seconds_count{{namespace=\"{ns}\",environment=\"staging\"}} 1"
        ),
        format!(
            "promotion_gate_runs_total{{namespace=\"{ns}\",environment=\"dev\",test=\"e2e\",outcome=\"failed\"}} 1"
        ),
        format!(
            "promotion_gate_runs_total{{namespace=\"{ns}\",environment=\"dev\",test=\"e2e\",outcome=\"passed\"}} 1"
        ),
    ] {
        assert!(text.contains(&line), "missing {line:?} in:\n{text}");
    }
    assert!(
        text.contains("promotion_reconciles_total{result=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("promotion_test_duration_seconds_bucket{"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_ci_callback_wakes_the_tracker_before_the_next_poll() {
    let mut h = Harness::new("wake").await;
    // A poll so slow that only a callback can explain a quick promotion.
    h.poll = Duration::from_secs(600);
    h.create_policy(policy(
        "dev-to-staging",
        "dev",
        "staging",
        serde_json::json!([
            {"name": "smoke", "provider": "gitlab", "job": "smoke"}
        ]),
    ))
    .await;
    // Running until the test says otherwise: no reconcile of any kind can finish it early.
    h.ci.script("smoke", Script::Hang);
    h.start();
    h.create_tracker(tracker("pr-1")).await;
    h.wait_for("pr-1", "testing", |t| {
        t.status
            .as_ref()
            .is_some_and(|s| s.phase == Some(Phase::Testing))
    })
    .await;
    // The run's id is known to the controller's memory only (written with the verdict).
    let mut run_id = None;
    for _ in 0..500 {
        run_id = h.ci.run_ids("smoke").first().cloned();
        if run_id.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let run_id = run_id.expect("the armed test was triggered");
    // An unrelated callback wakes nothing and breaks nothing.
    let wake = h.wake.clone().expect("controller started");
    wake.unbounded_send(Wake {
        provider: Provider::Jenkins,
        job: None,
        id: run_id.clone(),
    })
    .expect("send");
    // The run finishes in the CI system; the callback says so.
    h.ci.finish("smoke", RunState::Passed);
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        wake.unbounded_send(Wake {
            provider: Provider::Gitlab,
            job: None,
            id: run_id.clone(),
        })
        .expect("send");
        let t = h.trackers().get("pr-1").await.expect("tracker");
        if t.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the callback never woke the tracker: {:#?}",
            t.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    println!("promoted {:?} after the first callback", started.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_is_served_while_every_poll_slot_is_busy() {
    let mut h = Harness::new("wake-lane").await;
    h.concurrency = 2;
    h.create_policy(policy(
        "dev-to-staging",
        "dev",
        "staging",
        serde_json::json!([
            {"name": "smoke", "provider": "gitlab", "job": "smoke-${PR_NUMBER}"}
        ]),
    ))
    .await;
    h.ci.script("smoke-3", Script::Hang);
    h.start();
    let numbered = |name: &str, n: i64| {
        let mut t = tracker(name);
        t["spec"]["number"] = serde_json::json!(n);
        t
    };
    h.create_tracker(numbered("pr-3", 3)).await;
    let t = h
        .wait_for("pr-3", "testing with a run id", |t| {
            t.status
                .as_ref()
                .is_some_and(|s| s.test_runs.iter().any(|r| r.run_id.is_some()))
        })
        .await;
    let run_id = t
        .status
        .and_then(|s| s.test_runs[0].run_id.clone())
        .expect("run id");
    // Two trackers whose CI never answers a status call take both poll slots for good.
    {
        let mut f = h.ci.faults.lock().expect("faults");
        f.status_hang.insert("smoke-1".into());
        f.status_hang.insert("smoke-2".into());
    }
    h.create_tracker(numbered("pr-1", 1)).await;
    h.create_tracker(numbered("pr-2", 2)).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while h.ci.calls().hung < 2 {
        assert!(Instant::now() < deadline, "the polls never hung");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // pr-3's run passes; only its callback can get it a slot now.
    h.ci.finish("smoke-3", RunState::Passed);
    let wake = h.wake.clone().expect("controller started");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !h
        .argo
        .promotions()
        .contains(&("shop-staging".to_string(), SHA.to_string()))
    {
        wake.unbounded_send(Wake {
            provider: Provider::Gitlab,
            job: None,
            id: run_id.clone(),
        })
        .expect("send");
        assert!(
            Instant::now() < deadline,
            "the callback waited behind hung polls: {:?}",
            h.ci.calls()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        h.ci.calls().hung,
        2,
        "the hung polls still hold their slots"
    );
}

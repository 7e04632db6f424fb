//! Delivery figures derived from one saved status transition.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use promotion_api::PullRequestTrackerStatus;
use promotion_core::delivery::{Observation, observe};
use serde_json::json;
use std::time::Duration;

fn status(v: serde_json::Value) -> PullRequestTrackerStatus {
    serde_json::from_value(v).expect("status")
}

fn time(s: &str) -> Time {
    serde_json::from_value(json!(s)).expect("time")
}

fn gate(source: &str, target: &str) -> serde_json::Value {
    json!({"policy": "p", "source": source, "target": target, "tests": [],
           "autoPromote": false, "application": {"name": "app"}})
}

fn record(target: &str, at: &str) -> serde_json::Value {
    json!({"source": "dev", "target": target, "policy": "p", "revision": "abc",
           "promotedAt": at, "promotedBy": "controller", "testRuns": []})
}

fn run(name: &str, id: &str, state: &str, finished: Option<&str>) -> serde_json::Value {
    json!({"name": name, "provider": "jenkins", "job": "j", "correlationId": id,
           "state": state, "required": true, "finishedAt": finished})
}

#[test]
fn a_new_record_counts_a_promotion_with_its_lead_time_from_the_tracker() {
    let old = status(json!({}));
    let new = status(json!({"promotions": [record("staging", "2026-01-01T10:10:00Z")]}));
    let got = observe(
        Some(&time("2026-01-01T10:00:00Z")),
        &old,
        &new,
        &time("2026-01-01T10:10:01Z"),
    );
    assert_eq!(
        got,
        vec![Observation::Promoted {
            environment: "staging".into(),
            lead: Some(Duration::from_secs(600)),
        }]
    );
    // Saving the same record again adds nothing.
    assert!(observe(None, &new, &new, &time("2026-01-01T10:11:00Z")).is_empty());
}

#[test]
fn a_run_counts_once_when_it_ends_and_again_only_for_a_new_attempt() {
    let running = status(json!({"currentEnvironment": "dev",
        "testRuns": [run("e2e", "prc-1", "Running", None)]}));
    let failed = status(json!({"currentEnvironment": "dev",
        "testRuns": [run("e2e", "prc-1", "Failed", Some("2026-01-01T10:00:00Z"))]}));
    let now = time("2026-01-01T10:00:00Z");
    assert_eq!(
        observe(None, &running, &failed, &now),
        vec![Observation::GateRun {
            environment: "dev".into(),
            test: "e2e".into(),
            outcome: "failed"
        }]
    );
    assert!(observe(None, &failed, &failed, &now).is_empty());
    let retried = status(json!({"currentEnvironment": "dev",
        "testRuns": [run("e2e", "prc-2", "Passed", Some("2026-01-01T10:05:00Z"))]}));
    assert_eq!(observe(None, &failed, &retried, &now).len(), 1);
}

#[test]
fn approval_wait_runs_from_the_last_required_pass_to_leaving_awaiting_approval() {
    let waiting = status(
        json!({"phase": "AwaitingApproval", "currentEnvironment": "dev",
        "gate": gate("dev", "prod"),
        "testRuns": [run("smoke", "prc-1", "Passed", Some("2026-01-01T10:00:00Z")),
                     run("e2e", "prc-2", "Passed", Some("2026-01-01T10:02:00Z"))]}),
    );
    let mut approved = waiting.clone();
    approved.phase = Some(promotion_api::Phase::Promoting);
    let got = observe(None, &waiting, &approved, &time("2026-01-01T11:02:00Z"));
    assert_eq!(
        got,
        vec![Observation::ApprovalWait {
            environment: "prod".into(),
            waited: Duration::from_secs(3600)
        }]
    );
    assert!(observe(None, &waiting, &waiting, &time("2026-01-01T11:02:00Z")).is_empty());
}

#[test]
fn queue_wait_runs_from_joining_to_leaving_the_queue() {
    let queued = status(
        json!({"phase": "Queued", "queue": {"environment": "staging",
        "application": {"name": "app"}, "position": 1, "since": "2026-01-01T10:00:00Z"}}),
    );
    let mut moved = queued.clone();
    moved.queue = None;
    moved.phase = Some(promotion_api::Phase::Promoting);
    assert_eq!(
        observe(None, &queued, &moved, &time("2026-01-01T10:00:30Z")),
        vec![Observation::QueueWait {
            environment: "staging".into(),
            waited: Duration::from_secs(30)
        }]
    );
    // Moving up the line is still waiting.
    assert!(observe(None, &queued, &queued, &time("2026-01-01T10:00:30Z")).is_empty());
}

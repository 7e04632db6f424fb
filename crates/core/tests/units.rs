//! TriggerManager, TestMonitor and PromotionExecutor on their own, against the fakes.

use promotion_api::{
    ApplicationRef, PendingPromotion, PromotionPolicySpec, PullRequestTracker, TestState,
};
use promotion_core::fakes::*;
use promotion_core::monitor::{TestMonitor, Verdict, aggregate};
use promotion_core::ports::{PullRequestRef, RunState};
use promotion_core::promotion::PromotionExecutor;
use promotion_core::trigger::{TriggerManager, arm, plan};
use promotion_core::variables::Variables;
use std::sync::Arc;
use std::time::Duration;

fn spec(tests: serde_json::Value) -> PromotionPolicySpec {
    serde_json::from_value(serde_json::json!({
        "sourceEnvironment": "dev", "targetEnvironment": "staging", "externalTests": tests,
        "promotion": {"application": {"name": "shop-staging"}}
    }))
    .expect("spec")
}

fn vars() -> Variables {
    let t: PullRequestTracker = serde_json::from_value(serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": "t", "namespace": "ns"},
        "spec": {"repository": {"owner": "o", "name": "r"}, "number": 7, "headSha": "abcdef1",
                 "environment": "dev", "application": {"name": "a"}}
    }))
    .expect("tracker");
    Variables::for_hop(&t, "dev", "staging")
}

fn names(runs: &[promotion_api::TestRun]) -> Vec<String> {
    runs.iter().map(|r| r.name.clone()).collect()
}

#[tokio::test]
async fn partial_trigger_failure_keeps_what_started_and_starts_nothing_twice() {
    let ci = FakeCi::new(Arc::new(Crashes::default()));
    ci.script("refused", Script::Refuse);
    ci.script("lost", Script::LostAnswer);
    let policy = spec(serde_json::json!([
        {"name": "ok", "provider": "jenkins", "job": "ok", "parameters": {"PR": "${PR_NUMBER}"}},
        {"name": "refused", "provider": "jenkins", "job": "refused"},
        {"name": "lost", "provider": "gitlab", "job": "lost"}
    ]));
    let mut runs = plan(&policy, |t| format!("cid-{t}"));
    arm(&mut runs);
    let mgr = TriggerManager::new(&ci, Duration::ZERO);
    let all = names(&runs);
    mgr.trigger(&mut runs, &all, &policy, &vars()).await;
    assert!(runs[0].run_id.is_some(), "the started run keeps its id");
    assert_eq!(runs[1].state, TestState::Failed);
    assert!(
        runs[1]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("could not start")
    );
    assert_eq!(
        (runs[2].run_id.as_deref(), runs[2].state),
        (None, TestState::Pending)
    );
    assert!(
        runs[2]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("outcome unknown")
    );

    // The next reconcile finds the run the lost answer started instead of starting another.
    let adoption = mgr.adopt_or_rearm(&mut runs, &policy, &vars()).await;
    assert!(adoption.changed && adoption.armed.is_empty());
    assert!(runs[2].run_id.is_some());
    assert_eq!(
        (
            ci.triggered("ok"),
            ci.triggered("lost"),
            ci.triggered("refused")
        ),
        (1, 1, 0)
    );
}

#[tokio::test]
async fn an_unknown_run_is_rearmed_only_after_the_grace_period() {
    let ci = FakeCi::new(Arc::new(Crashes::default()));
    let policy = spec(serde_json::json!([{"name": "a", "provider": "jenkins", "job": "a"}]));
    // An intent saved by a reconcile that died before sending the trigger.
    let mut runs = plan(&policy, |t| format!("cid-{t}"));
    arm(&mut runs);
    let patient = TriggerManager::new(&ci, Duration::from_secs(3600));
    let adoption = patient.adopt_or_rearm(&mut runs, &policy, &vars()).await;
    assert!(
        adoption.armed.is_empty() && adoption.wait.is_some(),
        "{adoption:?}"
    );
    let eager = TriggerManager::new(&ci, Duration::ZERO);
    let adoption = eager.adopt_or_rearm(&mut runs, &policy, &vars()).await;
    assert_eq!(adoption.armed, vec!["a".to_string()]);
    eager
        .trigger(&mut runs, &adoption.armed, &policy, &vars())
        .await;
    assert_eq!(ci.triggered("a"), 1);
    assert_eq!(
        ci.correlation_ids("a"),
        vec!["cid-a".to_string()],
        "the correlation id travels with the trigger"
    );
}

#[tokio::test]
async fn the_monitor_follows_runs_to_a_verdict_and_cancels() {
    let ci = FakeCi::new(Arc::new(Crashes::default()));
    ci.script("slow", Script::After(2, RunState::Passed));
    ci.script("hang", Script::Hang);
    let policy = spec(serde_json::json!([
        {"name": "slow", "provider": "jenkins", "job": "slow"},
        {"name": "hang", "provider": "jenkins", "job": "hang", "required": false}
    ]));
    let mut runs = plan(&policy, |t| format!("cid-{t}"));
    arm(&mut runs);
    let all = names(&runs);
    TriggerManager::new(&ci, Duration::ZERO)
        .trigger(&mut runs, &all, &policy, &vars())
        .await;
    let monitor = TestMonitor::new(&ci);
    assert!(monitor.poll(&mut runs).await);
    assert_eq!(aggregate(&runs), Verdict::AnyRunning);
    monitor.poll(&mut runs).await;
    monitor.poll(&mut runs).await;
    assert_eq!(runs[0].state, TestState::Passed);
    let errors = monitor.cancel_active(&mut runs, "cancelled: test").await;
    assert!(errors.is_empty());
    assert_eq!(runs[1].state, TestState::Cancelled);
    assert_eq!(ci.cancelled(), vec!["hang".to_string()]);
    assert!(matches!(aggregate(&runs), Verdict::OptionalTestsFailed(_)));
}

#[tokio::test]
async fn promotion_steps_are_idempotent() {
    let crashes = Arc::new(Crashes::default());
    let argo = FakeArgo::new(crashes.clone());
    let github = FakeGitHub::new(crashes);
    let exec = PromotionExecutor::new(&argo, &github);
    let pending = PendingPromotion {
        source: "dev".into(),
        target: "staging".into(),
        policy: "p".into(),
        revision: "abcdef1".into(),
        application: ApplicationRef {
            cluster: "in-cluster".into(),
            namespace: "argocd".into(),
            name: "shop-staging".into(),
        },
        label: Some("in-staging".into()),
        promoted_by: "promotion-controller".into(),
        application_updated: false,
    };
    let pr = PullRequestRef {
        owner: "o".into(),
        repo: "r".into(),
        number: 7,
    };
    for _ in 0..2 {
        exec.update_application(&pending, "ns", "ns/pr-1/u-1")
            .await
            .expect("promote");
        exec.label(&pending, &pr).await.expect("label");
    }
    assert_eq!(
        argo.promotions().len(),
        1,
        "the second update changed nothing"
    );
    assert_eq!(github.labels(&pr), vec!["in-staging".to_string()]);
    let unlabelled = PendingPromotion {
        label: None,
        ..pending
    };
    exec.label(&unlabelled, &pr).await.expect("nothing to do");
    assert_eq!(github.label_calls(), 2);
}

//! The engine against in-memory fakes: the whole journey without Kubernetes.

use promotion_api::{Phase, PullRequestTracker, TestState};
use promotion_core::engine::{Engine, EngineConfig, Ports};
use promotion_core::fakes::*;
use promotion_core::policy_cache::{CachedPolicy, PolicyCache};
use promotion_core::ports::{PullRequestRef, RunState};
use std::sync::Arc;
use std::time::Duration;

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";

fn tracker() -> PullRequestTracker {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": "shop-42", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": 42, "headSha": SHA,
                 "environment": "dev", "application": {"name": "shop-dev"}}
    }))
    .expect("tracker")
}

fn policy(name: &str, source: &str, target: &str, tests: serde_json::Value) -> CachedPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "sourceEnvironment": source, "targetEnvironment": target, "externalTests": tests,
        "promotion": {"application": {"name": format!("shop-{target}")}, "githubLabel": format!("in-{target}")}
    }))
    .expect("policy");
    CachedPolicy::new("team", name, Some(1), spec)
}

struct World {
    ci: Arc<FakeCi>,
    argo: Arc<FakeArgo>,
    github: Arc<FakeGitHub>,
    engine: Engine,
    policies: PolicyCache,
    store: MemoryStore,
    events: EventLog,
}

fn world() -> World {
    let crashes = Arc::new(Crashes::default());
    let ci = Arc::new(FakeCi::new(crashes.clone()));
    let argo = Arc::new(FakeArgo::new(crashes.clone()));
    let github = Arc::new(FakeGitHub::new(crashes));
    argo.deploy("shop-dev", SHA);
    let engine = Engine::new(
        Ports {
            runner: ci.clone(),
            argo: argo.clone(),
            github: github.clone(),
        },
        EngineConfig {
            poll_interval: Duration::from_millis(1),
            adoption_grace: Duration::ZERO,
            ..EngineConfig::default()
        },
    );
    World {
        ci,
        argo,
        github,
        engine,
        policies: PolicyCache::new(),
        store: MemoryStore::default(),
        events: EventLog::default(),
    }
}

/// Reconciles like the controller does: each time with the last saved status.
async fn run(w: &World, mut t: PullRequestTracker, rounds: usize) -> PullRequestTracker {
    for _ in 0..rounds {
        let after = w
            .engine
            .reconcile(&t, &w.policies, &w.store, &w.events)
            .await
            .expect("reconcile");
        t.status = w.store.status.lock().expect("lock").clone();
        if after.is_none() {
            break;
        }
    }
    t
}

#[tokio::test]
async fn dev_to_staging_to_prod() {
    let w = world();
    let two = serde_json::json!([
        {"name": "smoke", "provider": "jenkins", "job": "smoke", "parameters": {"PR": "${PR_NUMBER}"}},
        {"name": "e2e", "provider": "gitlab", "job": "e2e"}
    ]);
    w.policies
        .upsert(policy("dev-to-staging", "dev", "staging", two.clone()));
    w.policies
        .upsert(policy("staging-to-prod", "staging", "prod", two));
    let t = run(&w, tracker(), 50).await;
    let st = t.status.expect("status");
    assert_eq!(st.phase, Some(Phase::Completed), "{:?}", st.message);
    assert_eq!(st.current_environment.as_deref(), Some("prod"));
    assert_eq!(st.promotions.len(), 2);
    assert_eq!(st.promotions[0].target, "staging");
    assert_eq!(st.promotions[1].target, "prod");
    assert!(
        st.promotions
            .iter()
            .all(|p| p.test_runs.iter().all(|r| r.state == TestState::Passed))
    );
    assert_eq!(w.ci.triggered("smoke"), 2);
    assert_eq!(w.ci.triggered("e2e"), 2);
    assert_eq!(
        w.argo.promotions(),
        vec![
            ("shop-staging".into(), SHA.into()),
            ("shop-prod".into(), SHA.into())
        ]
    );
    let pr = PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    };
    assert_eq!(
        w.github.labels(&pr),
        vec!["in-staging".to_string(), "in-prod".to_string()]
    );
    let reasons = w.events.reasons();
    assert_eq!(reasons.iter().filter(|r| *r == "Promoted").count(), 2);
    assert!(reasons.contains(&"Completed".to_string()));
    assert!(
        !w.github.statuses().is_empty(),
        "gate tests are shown on the PR"
    );
    println!(
        "status saves for two hops: {}",
        w.store.saves.lock().expect("lock")
    );
}

#[tokio::test]
async fn a_required_failure_fails_the_gate_and_cancels_the_rest() {
    let w = world();
    w.ci.script("smoke", Script::After(0, RunState::Failed));
    w.ci.script("slow", Script::Hang);
    w.policies.upsert(policy(
        "p",
        "dev",
        "staging",
        serde_json::json!([
            {"name": "smoke", "provider": "jenkins", "job": "smoke"},
            {"name": "slow", "provider": "jenkins", "job": "slow"}
        ]),
    ));
    let t = run(&w, tracker(), 20).await;
    let st = t.status.expect("status");
    assert_eq!(st.phase, Some(Phase::Failed));
    assert!(
        st.message
            .as_deref()
            .unwrap_or_default()
            .contains("smoke failed"),
        "{:?}",
        st.message
    );
    assert_eq!(w.ci.cancelled(), vec!["slow".to_string()]);
    assert!(w.argo.promotions().is_empty());
}

#[tokio::test]
async fn a_refused_trigger_is_a_clear_failure() {
    let w = world();
    w.ci.script("missing", Script::Refuse);
    w.policies.upsert(policy(
        "p",
        "dev",
        "staging",
        serde_json::json!([{"name": "t", "provider": "jenkins", "job": "missing"}]),
    ));
    let st = run(&w, tracker(), 20).await.status.expect("status");
    assert_eq!(st.phase, Some(Phase::Failed));
    assert!(
        st.test_runs[0]
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("could not start"),
        "{:?}",
        st.test_runs
    );
}

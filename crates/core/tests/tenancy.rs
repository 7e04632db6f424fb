//! The engine refuses to act for a namespace beyond its grants, against in-memory fakes.

use promotion_api::{Phase, PullRequestTracker, TestState};
use promotion_core::access::{AccessRules, ConnectionGrant, NoLabels};
use promotion_core::engine::{Engine, EngineConfig, Ports};
use promotion_core::fakes::*;
use promotion_core::policy_cache::{CachedPolicy, PolicyCache};
use promotion_core::policy_verdict::PolicyVerdict;
use promotion_core::ports::{PullRequestRef, RunRef, TestRunner};
use std::sync::Arc;
use std::time::Duration;

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";

fn tracker(namespace: &str, owner: &str) -> PullRequestTracker {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": "shop-42", "namespace": namespace, "uid": format!("uid-{namespace}"), "generation": 1},
        "spec": {"repository": {"owner": owner, "name": "shop"}, "number": 42, "headSha": SHA,
                 "environment": "dev", "application": {"name": "shop-dev"}}
    }))
    .expect("tracker")
}

fn policy(namespace: &str, connection: &str, job: &str) -> CachedPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "sourceEnvironment": "dev", "targetEnvironment": "staging",
        "externalTests": [{"name": "smoke", "provider": "jenkins", "connection": connection, "job": job}],
        "promotion": {"application": {"name": "shop-staging"}, "githubLabel": "in-staging"}
    }))
    .expect("policy");
    CachedPolicy::new(namespace, "dev-to-staging", Some(1), spec)
}

fn rules() -> AccessRules {
    AccessRules::new()
        .with_connection(
            "jenkins-a",
            None,
            ConnectionGrant {
                namespaces: vec!["team-a".into()],
                jobs: vec!["team-a/*".into()],
                ..ConnectionGrant::default()
            },
        )
        .with_connection(
            "jenkins-b",
            None,
            ConnectionGrant {
                namespaces: vec!["team-b".into()],
                jobs: vec!["team-b/*".into()],
                ..ConnectionGrant::default()
            },
        )
        .with_repository("acme", "shop", vec!["team-a".into()])
        .with_repository("bee", "shop", vec!["team-b".into()])
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
        policies: PolicyCache::new().with_access(Arc::new(rules()), Arc::new(NoLabels)),
        store: MemoryStore::default(),
        events: EventLog::default(),
    }
}

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

fn ready(t: &PullRequestTracker) -> (String, String) {
    let c = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("Ready");
    (c.status.clone(), c.reason.clone())
}

#[test]
fn a_policy_naming_a_connection_of_another_namespace_is_not_valid() {
    let w = world();
    let p = policy("team-b", "jenkins-a", "team-a/smoke");
    w.policies.upsert(p.clone());
    let verdict = PolicyVerdict::of(&w.policies, &p);
    let conds = verdict.conditions(&p, &[], Some(1));
    let valid = conds.iter().find(|c| c.type_ == "Valid").expect("Valid");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", "ConnectionNotAllowed")
    );
    let p = policy("team-b", "jenkins-b", "team-a/smoke");
    let valid = PolicyVerdict::of(&w.policies, &p)
        .conditions(&p, &[], Some(1))
        .into_iter()
        .find(|c| c.type_ == "Valid")
        .expect("Valid");
    assert_eq!(valid.reason, "JobNotAllowed");
    let p = policy("team-b", "jenkins-b", "team-b/smoke");
    assert_eq!(PolicyVerdict::of(&w.policies, &p).valid, Ok(()));
}

#[tokio::test]
async fn a_tracker_gated_by_a_connection_not_granted_triggers_nothing() {
    let w = world();
    w.policies
        .upsert(policy("team-b", "jenkins-a", "team-a/smoke"));
    let t = run(&w, tracker("team-b", "bee"), 20).await;
    assert_eq!(ready(&t), ("False".into(), "ConnectionNotAllowed".into()));
    assert_eq!(w.ci.triggered("team-a/smoke"), 0);
    assert!(w.argo.promotions().is_empty());
}

#[tokio::test]
async fn a_tracker_of_a_repository_not_mapped_to_its_namespace_does_nothing() {
    let w = world();
    w.policies
        .upsert(policy("team-b", "jenkins-b", "team-b/smoke"));
    let t = run(&w, tracker("team-b", "acme"), 20).await;
    assert_eq!(ready(&t), ("False".into(), "RepositoryNotAllowed".into()));
    assert_eq!(w.ci.triggered("team-b/smoke"), 0, "no trigger");
    assert!(w.github.statuses().is_empty(), "no commit status");
    let pr = PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    };
    assert!(w.github.labels(&pr).is_empty(), "no label");
    assert!(w.argo.promotions().is_empty(), "no Application patched");
    // Its own repository goes through.
    let t = run(&w, tracker("team-b", "bee"), 50).await;
    assert_eq!(t.status.and_then(|s| s.phase), Some(Phase::Completed));
}

#[tokio::test]
async fn an_application_not_opted_in_to_the_namespace_is_never_read() {
    let w = world();
    w.argo.set_opt_in("shop-dev", "team-a/dev");
    w.policies
        .upsert(policy("team-b", "jenkins-b", "team-b/smoke"));
    let t = run(&w, tracker("team-b", "bee"), 20).await;
    assert_eq!(ready(&t), ("False".into(), "ApplicationNotOptedIn".into()));
    assert_eq!(t.status.and_then(|s| s.phase), Some(Phase::Deploying));
    assert_eq!(w.ci.triggered("team-b/smoke"), 0);
    w.argo.set_opt_in("shop-dev", "team-a/dev, team-b/dev");
    let t = run(&w, tracker("team-b", "bee"), 50).await;
    assert_eq!(t.status.and_then(|s| s.phase), Some(Phase::Completed));
}

#[tokio::test]
async fn a_status_naming_another_trackers_run_neither_follows_nor_cancels_it() {
    let w = world();
    w.ci.script("team-a/smoke", Script::Hang);
    w.ci.script("team-b/smoke", Script::Hang);
    w.policies
        .upsert(policy("team-a", "jenkins-a", "team-a/smoke"));
    w.policies
        .upsert(policy("team-b", "jenkins-b", "team-b/smoke"));
    let a = run(&w, tracker("team-a", "acme"), 3).await;
    // A gate older than three polls (3 ms here) writes its runs' progress, ids included.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let a = run(&w, a, 1).await;
    let a_run = a.status.expect("status").test_runs[0].clone();
    assert!(a_run.run_id.is_some());
    let mut b = run(&w, tracker("team-b", "bee"), 3).await;
    // The forged status: team-b's smoke names team-a's run.
    if let Some(st) = b.status.as_mut() {
        st.test_runs[0].run_id = a_run.run_id.clone();
        st.test_runs[0].job = a_run.job.clone();
        st.test_runs[0].connection = a_run.connection.clone();
        st.test_runs[0].correlation_id = a_run.correlation_id.clone();
        *w.store.status.lock().expect("lock") = Some(st.clone());
    }
    let b = run(&w, b, 5).await;
    let st = b.status.expect("status");
    assert_eq!(st.test_runs[0].state, TestState::Failed);
    let msg = st.test_runs[0].message.clone().unwrap_or_default();
    assert!(msg.contains("does not carry correlation id"), "{msg}");
    // team-a's run is still running: nobody cancelled it.
    let rr = RunRef {
        provider: a_run.provider,
        connection: a_run.connection.clone(),
        job: a_run.job.clone(),
        run_id: a_run.run_id.clone().expect("id"),
        correlation_id: None,
    };
    let status = w.ci.status(&rr).await.expect("status");
    assert!(!status.state.is_final(), "{status:?}");
}

#[tokio::test]
async fn a_fork_under_gate_waits_for_approval_at_every_hop() {
    let w = world();
    w.policies
        .upsert(policy("team-b", "jenkins-b", "team-b/smoke"));
    let mut t = tracker("team-b", "bee");
    t.metadata.labels = Some([("promotion.io/fork".to_string(), "gate".to_string())].into());
    let t = run(&w, t, 30).await;
    assert_eq!(
        t.status.as_ref().and_then(|s| s.phase),
        Some(Phase::AwaitingApproval)
    );
    assert!(w.argo.promotions().is_empty(), "nothing deployed");
    let mut approved = t.clone();
    approved.metadata.annotations = Some(
        [
            ("promotion.io/approve".to_string(), format!("staging@{SHA}")),
            ("promotion.io/approved-by".to_string(), "alice".to_string()),
        ]
        .into(),
    );
    let t = run(&w, approved, 30).await;
    assert_eq!(t.status.and_then(|s| s.phase), Some(Phase::Completed));
    assert_eq!(
        w.argo.promotions(),
        vec![("shop-staging".into(), SHA.into())]
    );
}

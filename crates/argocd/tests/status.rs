//! Reading Application status from a real kube-apiserver.

mod support;

use promotion_argocd::{IN_CLUSTER, PromoteOptions};
use promotion_core::ports::{AppStatus, ArgoCdClient, ErrorKind, HealthStatus, SyncStatus};
use serde_json::json;
use support::*;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

#[tokio::test(flavor = "multi_thread")]
async fn synced_and_healthy() {
    let ctx = context("status-synced").await;
    create_app(
        &ctx,
        "web",
        json!({
            "spec": {"source": {"repoURL": "https://git.example/web", "targetRevision": SHA}},
            "status": {
                "sync": {"status": "Synced", "revision": SHA},
                "health": {"status": "Healthy"},
                "operationState": {
                    "operation": {"sync": {"revision": SHA}, "initiatedBy": {"automated": true}},
                    "phase": "Succeeded",
                    "message": "successfully synced (all tasks run)",
                    "startedAt": "2026-01-02T03:04:05Z",
                    "finishedAt": "2026-01-02T03:04:06Z",
                    "syncResult": {"revision": SHA, "source": {"repoURL": "https://git.example/web", "targetRevision": SHA}},
                },
            },
        }),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(
        status,
        AppStatus {
            sync: SyncStatus::Synced,
            health: HealthStatus::Healthy,
            revisions: vec![SHA.into()],
            operation_phase: Some("Succeeded".into()),
            opt_in: None,
        }
    );
    assert!(status.deployed_at(&SHA[..7]));
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_sync() {
    let ctx = context("status-out-of-sync").await;
    create_app(&ctx, "web", json!({
        "spec": {"source": {"repoURL": "https://git.example/web", "targetRevision": "main"}},
        "status": {"sync": {"status": "OutOfSync", "revision": "aaaa"}, "health": {"status": "Healthy"}},
    }))
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(status.sync, SyncStatus::OutOfSync);
    assert_eq!(status.health, HealthStatus::Healthy);
    assert!(!status.deployed_at("aaaa"));
}

#[tokio::test(flavor = "multi_thread")]
async fn progressing_with_a_running_operation() {
    let ctx = context("status-progressing").await;
    create_app(
        &ctx,
        "web",
        json!({
            "spec": {"source": {"repoURL": "https://git.example/web", "targetRevision": SHA}},
            "status": {
                "sync": {"status": "Synced", "revision": SHA},
                "health": {"status": "Progressing"},
                "operationState": {
                    "operation": {"sync": {"revision": SHA}},
                    "phase": "Running",
                    "startedAt": "2026-01-02T03:04:05Z",
                },
            },
        }),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(status.health, HealthStatus::Progressing);
    assert_eq!(status.operation_phase.as_deref(), Some("Running"));
    assert!(!status.deployed_at(SHA));
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_status_is_unknown() {
    let ctx = context("status-missing").await;
    create_app(
        &ctx,
        "new-app",
        json!({"spec": {"source": {"repoURL": "https://git.example/web", "targetRevision": "main"}}}),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "new-app"))
        .await
        .expect("a missing status is not an error");
    assert_eq!(
        status,
        AppStatus {
            sync: SyncStatus::Unknown,
            health: HealthStatus::Unknown,
            revisions: vec![],
            operation_phase: None,
            opt_in: None,
        }
    );
}

/// The status of a multi-source app exactly as Argo CD writes it: one revision
/// per source in `sync.revisions`, no `sync.revision`, and a `syncResult` whose
/// `revision` is present but empty.
fn multi_source_status(chart: &str, git: &str) -> serde_json::Value {
    let sources = json!([
        {"repoURL": "https://charts.example", "chart": "web", "targetRevision": chart},
        {"repoURL": "https://git.example/web", "targetRevision": git, "ref": "values"},
    ]);
    json!({
        "sync": {
            "status": "Synced",
            "comparedTo": {"sources": sources, "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"}},
            "revisions": [chart, git],
        },
        "health": {"status": "Healthy", "lastTransitionTime": "2026-01-02T03:04:06Z"},
        "operationState": {
            "operation": {"sync": {"revisions": [chart, git]}, "initiatedBy": {"automated": true}},
            "phase": "Succeeded",
            "startedAt": "2026-01-02T03:04:05Z",
            "finishedAt": "2026-01-02T03:04:06Z",
            "syncResult": {"revision": "", "revisions": [chart, git], "source": sources[0], "sources": sources},
        },
        "history": [{"id": 0, "revisions": [chart, git], "sources": sources,
                     "deployedAt": "2026-01-02T03:04:06Z", "deployStartedAt": "2026-01-02T03:04:05Z"}],
        "reconciledAt": "2026-01-02T03:04:06Z",
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_source_revisions() {
    let ctx = context("status-multi-source").await;
    let status = multi_source_status("1.4.2", SHA);
    create_app(
        &ctx,
        "web",
        json!({
            "spec": {"sources": status["sync"]["comparedTo"]["sources"].clone()},
            "status": status,
        }),
    )
    .await;
    let stored = json(&get_app(&ctx, "web").await);
    // The real schema kept every field Argo CD writes.
    assert_eq!(
        stored["status"]["operationState"]["syncResult"]["revision"],
        ""
    );
    assert_eq!(stored["status"]["sync"]["revisions"], json!(["1.4.2", SHA]));
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(status.revisions, vec!["1.4.2".to_string(), SHA.to_string()]);
    assert_eq!(status.operation_phase.as_deref(), Some("Succeeded"));
    assert!(status.deployed_at(SHA));
    assert!(status.deployed_at(&SHA[..7]));
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_source_app_still_at_another_commit_is_not_deployed_at_ours() {
    let ctx = context("status-multi-source-old").await;
    let old = "fedcba9876543210fedcba9876543210fedcba98";
    let status = multi_source_status("1.4.2", old);
    let mut sources = status["sync"]["comparedTo"]["sources"].clone();
    // The spec already asks for our commit; Argo CD has not synced it yet.
    sources[1]["targetRevision"] = json!(SHA);
    create_app(
        &ctx,
        "web",
        json!({"spec": {"sources": sources}, "status": status}),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(status.revisions, vec!["1.4.2".to_string(), old.to_string()]);
    assert!(!status.deployed_at(SHA));
}

#[tokio::test(flavor = "multi_thread")]
async fn not_found_is_permanent_and_names_the_app() {
    let ctx = context("status-not-found").await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let err = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "ghost"))
        .await
        .expect_err("no such app");
    assert_eq!(err.kind, ErrorKind::Permanent);
    let want = format!("{}/ghost not found on cluster in-cluster", ctx.namespace);
    assert!(err.message.contains(&want), "{}", err.message);
}

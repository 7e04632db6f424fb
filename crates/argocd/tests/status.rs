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
                "operationState": {"phase": "Succeeded", "message": "done"},
                "somethingNew": {"x": 1},
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
        }
    );
    assert!(status.deployed_at(&SHA[..7]));
}

#[tokio::test(flavor = "multi_thread")]
async fn out_of_sync() {
    let ctx = context("status-out-of-sync").await;
    create_app(&ctx, "web", json!({
        "spec": {"source": {"targetRevision": "main"}},
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
            "spec": {"source": {"targetRevision": SHA}},
            "status": {
                "sync": {"status": "Synced", "revision": SHA},
                "health": {"status": "Progressing"},
                "operationState": {"phase": "Running"},
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
        json!({"spec": {"source": {"targetRevision": "main"}}}),
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
        }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_source_revisions() {
    let ctx = context("status-multi-source").await;
    create_app(
        &ctx,
        "web",
        json!({
            "spec": {"sources": [
                {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.4.2"},
                {"repoURL": "https://git.example/web", "targetRevision": SHA, "ref": "values"},
            ]},
            "status": {
                "sync": {"status": "Synced", "revisions": ["1.4.2", SHA]},
                "health": {"status": "Healthy"},
            },
        }),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let status = argo
        .application_status(&app_ref(&ctx, IN_CLUSTER, "web"))
        .await
        .expect("status");
    assert_eq!(status.revisions, vec!["1.4.2".to_string(), SHA.to_string()]);
    assert!(status.deployed_at(SHA));
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

//! Promoting Applications on a real kube-apiserver.

mod support;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Patch, PatchParams, WatchEvent, WatchParams};
use promotion_argocd::{FIELD_MANAGER, IN_CLUSTER, PROMOTE_SOURCE, PromoteOptions};
use promotion_core::ports::{ArgoCdClient, ErrorKind};
use serde_json::{Value, json};
use support::*;

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";

fn with_sync_and_refresh() -> PromoteOptions {
    PromoteOptions {
        sync: true,
        refresh: true,
        ..PromoteOptions::default()
    }
}

fn single_source_app() -> Value {
    json!({
        "metadata": {"annotations": opted_in()},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/web", "path": "deploy", "targetRevision": OLD},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
        },
        "status": {"sync": {"status": "Synced", "revision": OLD}, "health": {"status": "Healthy"}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn sets_the_target_revision_only() {
    let ctx = context("promote-plain").await;
    let before = create_app(&ctx, "web", single_source_app()).await;
    let argo = adapter(&ctx, PromoteOptions::default());
    argo.promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect("promote");

    let after = json(&get_app(&ctx, "web").await);
    assert_eq!(after["spec"]["source"]["targetRevision"], NEW);
    assert_eq!(after["spec"]["source"]["path"], "deploy");
    assert_eq!(after["spec"]["destination"]["namespace"], "web");
    assert!(after.get("operation").is_none(), "{after}");
    assert!(
        after["metadata"]["annotations"]
            .get("argocd.argoproj.io/refresh")
            .is_none()
    );
    // Status is Argo CD's: left as it was.
    assert_eq!(after["status"], json(&before)["status"]);
    let managers: Vec<&str> = after["metadata"]["managedFields"]
        .as_array()
        .map(|m| m.iter().filter_map(|f| f["manager"].as_str()).collect())
        .unwrap_or_default();
    assert!(managers.contains(&FIELD_MANAGER), "{managers:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_operation_and_refresh_come_in_one_write() {
    let ctx = context("promote-one-write").await;
    let before = create_app(&ctx, "web", single_source_app()).await;
    let from = before
        .metadata
        .resource_version
        .clone()
        .expect("a resourceVersion");
    let argo = adapter(&ctx, with_sync_and_refresh());
    argo.promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect("promote");
    // A sentinel write, so the watch below knows where the promotion's writes end.
    apps(&ctx)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"sentinel": "yes"}}})),
        )
        .await
        .expect("sentinel write");

    let params = WatchParams::default().fields("metadata.name=web");
    let mut events = apps(&ctx)
        .watch(&params, &from)
        .await
        .expect("watch")
        .boxed();
    let mut writes = Vec::new();
    while let Some(event) = events.try_next().await.expect("watch event") {
        match event {
            WatchEvent::Modified(obj) => {
                if obj
                    .metadata
                    .labels
                    .as_ref()
                    .is_some_and(|l| l.contains_key("sentinel"))
                {
                    break;
                }
                writes.push(json(&obj));
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected watch event {other:?}"),
        }
    }
    assert_eq!(
        writes.len(),
        1,
        "the promotion must be one write: {writes:#?}"
    );
    let written = &writes[0];
    assert_eq!(written["spec"]["source"]["targetRevision"], NEW);
    assert_eq!(
        written["metadata"]["annotations"]["argocd.argoproj.io/refresh"],
        "normal"
    );
    let op = &written["operation"];
    assert_eq!(
        op["initiatedBy"],
        json!({"username": "promotion-controller", "automated": false})
    );
    assert_eq!(op["sync"]["revision"], NEW);
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_to_the_current_revision_writes_nothing() {
    let ctx = context("promote-idempotent").await;
    create_app(&ctx, "web", single_source_app()).await;
    let argo = adapter(&ctx, with_sync_and_refresh());
    let app = app_ref(&ctx, IN_CLUSTER, "web");
    argo.promote(&app, &request(NEW))
        .await
        .expect("first promote");
    let once = get_app(&ctx, "web").await;
    // Argo CD would have picked up and finished the operation by now.
    apps(&ctx)
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(json!({"operation": null})),
        )
        .await
        .expect("finishing the operation");
    let settled = get_app(&ctx, "web").await;
    assert_ne!(
        once.metadata.resource_version,
        settled.metadata.resource_version
    );

    argo.promote(&app, &request(NEW))
        .await
        .expect("second promote");
    argo.promote(&app, &request(NEW))
        .await
        .expect("third promote");
    let after = get_app(&ctx, "web").await;
    assert_eq!(
        after.metadata.resource_version,
        settled.metadata.resource_version
    );
    assert!(json(&after).get("operation").is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_running_operation_is_not_replaced() {
    let ctx = context("promote-op-running").await;
    let mut body = single_source_app();
    body["operation"] = json!({"sync": {"revision": OLD}});
    let before = create_app(&ctx, "web", body).await;
    let argo = adapter(&ctx, with_sync_and_refresh());
    let err = argo
        .promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect_err("an operation is in progress");
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    let after = get_app(&ctx, "web").await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_source_moves_the_named_source() {
    let ctx = context("promote-multi-source").await;
    create_app(&ctx, "web", json!({
        "metadata": {"annotations": {
            promotion_argocd::ALLOW_PROMOTION_FROM: "team-a/prod",
            PROMOTE_SOURCE: "app",
        }},
        "spec": {"sources": [
            {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.4.2",
             "helm": {"valueFiles": ["$values/prod.yaml"]}},
            {"repoURL": "https://git.example/web", "name": "app", "ref": "values", "targetRevision": OLD},
        ]},
    }))
    .await;
    let argo = adapter(&ctx, with_sync_and_refresh());
    argo.promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect("promote");
    let after = json(&get_app(&ctx, "web").await);
    assert_eq!(
        after["spec"]["sources"],
        json!([
            {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.4.2",
             "helm": {"valueFiles": ["$values/prod.yaml"]}},
            {"repoURL": "https://git.example/web", "name": "app", "ref": "values", "targetRevision": NEW},
        ])
    );
    assert_eq!(
        after["operation"]["sync"]["revisions"],
        json!(["1.4.2", NEW])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn multi_source_without_a_choice_is_refused() {
    let ctx = context("promote-multi-ambiguous").await;
    create_app(
        &ctx,
        "web",
        json!({
            "metadata": {"annotations": opted_in()},
            "spec": {"sources": [
                {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.0.0"},
                {"repoURL": "https://git.example/web", "targetRevision": OLD},
            ]},
        }),
    )
    .await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let err = argo
        .promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect_err("no source chosen");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains(PROMOTE_SOURCE), "{}", err.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_an_app_that_did_not_opt_in() {
    let ctx = context("promote-no-opt-in").await;
    let mut body = single_source_app();
    body["metadata"] = json!({});
    let before = create_app(&ctx, "web", body).await;
    let argo = adapter(&ctx, with_sync_and_refresh());
    let err = argo
        .promote(&app_ref(&ctx, IN_CLUSTER, "web"), &request(NEW))
        .await
        .expect_err("not opted in");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains(promotion_argocd::ALLOW_PROMOTION_FROM),
        "{}",
        err.message
    );
    assert!(
        err.message.contains(&format!("{}/web", ctx.namespace)),
        "{}",
        err.message
    );
    let after = get_app(&ctx, "web").await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn refuses_a_policy_of_another_namespace_or_environment() {
    let ctx = context("promote-other-team").await;
    let mut body = single_source_app();
    body["metadata"]["annotations"] =
        json!({ promotion_argocd::ALLOW_PROMOTION_FROM: "team-b/prod, team-a/staging" });
    let before = create_app(&ctx, "web", body).await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let app = app_ref(&ctx, IN_CLUSTER, "web");

    let err = argo
        .promote(&app, &request(NEW))
        .await
        .expect_err("team-a/prod not listed");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("\"team-a/prod\""), "{}", err.message);

    let mut other = request(NEW);
    other.policy_namespace = "team-c".into();
    let err = argo
        .promote(&app, &other)
        .await
        .expect_err("team-c not listed");
    assert_eq!(err.kind, ErrorKind::Permanent);

    let after = get_app(&ctx, "web").await;
    assert_eq!(
        after.metadata.resource_version,
        before.metadata.resource_version
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn promoting_a_missing_app_is_permanent() {
    let ctx = context("promote-not-found").await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let err = argo
        .promote(&app_ref(&ctx, IN_CLUSTER, "ghost"), &request(NEW))
        .await
        .expect_err("no such app");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains(&format!("{}/ghost", ctx.namespace)),
        "{}",
        err.message
    );
    assert!(err.message.contains("in-cluster"), "{}", err.message);
}

//! The Argo CD stand-in on a real kube-apiserver with Argo CD's own
//! Application CRD, read and moved by the real adapter.

use kube::api::{Api, DynamicObject, PostParams};
use promotion_api::ApplicationRef;
use promotion_argocd::{
    ClusterClients, IN_CLUSTER, KubeArgoCd, PROMOTE_SOURCE, PromoteOptions, application_resource,
};
use promotion_core::ports::{AppStatus, ArgoCdClient, PromotionRequest};
use promotion_standins::argo;
use promotion_testenv::TestContext;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const OLD: &str = "1111111111111111111111111111111111111111";
const NEW: &str = "2222222222222222222222222222222222222222";

async fn context(name: &str) -> TestContext {
    let ctx = promotion_testenv::context(name).await;
    let crd = promotion_argocd::testing::application_crd().expect("Argo CD's CRD parses");
    promotion_testenv::install_crd_objects(&ctx.client, vec![crd])
        .await
        .expect("installing Argo CD's Application CRD");
    ctx
}

fn apps(ctx: &TestContext) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &application_resource())
}

async fn create(ctx: &TestContext, body: Value) -> Value {
    let obj: DynamicObject = serde_json::from_value(body).expect("an Application");
    let created = apps(ctx)
        .create(&PostParams::default(), &obj)
        .await
        .expect("Argo CD's schema accepts the stand-in's Application");
    serde_json::to_value(created).expect("serializes")
}

async fn stored(ctx: &TestContext, name: &str) -> Value {
    serde_json::to_value(apps(ctx).get(name).await.expect("reading the Application"))
        .expect("serializes")
}

fn adapter(ctx: &TestContext) -> KubeArgoCd {
    let clusters = ClusterClients::new(ctx.client.clone(), ctx.namespace.clone());
    let options = PromoteOptions {
        sync: true,
        refresh: true,
        ..PromoteOptions::default()
    };
    KubeArgoCd::new(Arc::new(clusters), options)
}

fn app_ref(ctx: &TestContext, name: &str) -> ApplicationRef {
    ApplicationRef {
        cluster: IN_CLUSTER.into(),
        namespace: ctx.namespace.clone(),
        name: name.into(),
    }
}

fn request() -> PromotionRequest {
    PromotionRequest {
        policy_namespace: "team-a".into(),
        policy: "to-prod".into(),
        target_environment: "prod".into(),
        tracker: String::new(),
        revision: NEW.into(),
    }
}

/// Waits until the adapter reads the app as deployed at NEW.
async fn deployed(argo: &KubeArgoCd, app: &ApplicationRef) -> AppStatus {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = argo.application_status(app).await.expect("status");
        if status.deployed_at(NEW) {
            return status;
        }
        assert!(Instant::now() < deadline, "never synced: {status:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_application_keeps_every_status_field_under_the_real_schema() {
    let ctx = context("argo-standin-new").await;
    let body = argo::application(&ctx.namespace, "web", OLD, "team-a", "prod");
    let created = create(&ctx, body.clone()).await;
    // Pruning would have dropped what the schema does not know: nothing was.
    assert_eq!(created["status"], body["status"]);
    assert_eq!(created["status"]["sync"]["revision"], OLD);
    assert_eq!(
        created["status"]["operationState"]["syncResult"]["revision"],
        OLD
    );
    let status = adapter(&ctx)
        .application_status(&app_ref(&ctx, "web"))
        .await
        .expect("status");
    assert!(status.deployed_at(OLD), "{status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_single_source_app_is_synced_as_argo_cd_does() {
    let ctx = context("argo-standin-single").await;
    create(
        &ctx,
        argo::application(&ctx.namespace, "web", OLD, "team-a", "prod"),
    )
    .await;
    let argo = adapter(&ctx);
    let app = app_ref(&ctx, "web");
    argo.promote(&app, &request()).await.expect("promote");
    // Started after the promotion, so its write cannot race the promotion's.
    let syncer = argo::spawn_namespaced_syncer(ctx.client.clone(), &ctx.namespace, Duration::ZERO);
    let status = deployed(&argo, &app).await;
    syncer.abort();
    assert_eq!(status.revisions, vec![NEW.to_string()]);

    let after = stored(&ctx, "web").await;
    assert!(
        after.get("operation").is_none(),
        "the finished operation stays: {after}"
    );
    assert!(
        after["metadata"]["annotations"]
            .get("argocd.argoproj.io/refresh")
            .is_none(),
        "{after}"
    );
    let st = &after["status"];
    assert_eq!(st["sync"]["revision"], NEW);
    assert_eq!(st["sync"]["comparedTo"]["source"]["targetRevision"], NEW);
    let op = &st["operationState"];
    assert_eq!(op["phase"], "Succeeded");
    assert_eq!(op["syncResult"]["revision"], NEW);
    // The operation that ran is the promotion's.
    assert_eq!(
        op["operation"]["initiatedBy"]["username"],
        "promotion-controller"
    );
    assert_eq!(op["operation"]["sync"]["revision"], NEW);
    let history = st["history"].as_array().cloned().unwrap_or_default();
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[1]["revision"], NEW);
    assert!(st["reconciledAt"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_promoted_multi_source_app_is_synced_as_argo_cd_does() {
    let ctx = context("argo-standin-multi").await;
    let mut body = argo::application(&ctx.namespace, "web", OLD, "team-a", "prod");
    body["metadata"]["annotations"][PROMOTE_SOURCE] = json!("app");
    body["spec"]["sources"] = json!([
        {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.4.2",
         "helm": {"valueFiles": ["$values/prod.yaml"]}},
        {"repoURL": "https://git.example/web", "name": "app", "ref": "values", "targetRevision": OLD},
    ]);
    body["spec"]
        .as_object_mut()
        .map(|spec| spec.remove("source"));
    // Its status still shows its single-source past: the sync must leave none of it.
    create(&ctx, body).await;
    let argo = adapter(&ctx);
    let app = app_ref(&ctx, "web");
    argo.promote(&app, &request()).await.expect("promote");
    // Started after the promotion, so its write cannot race the promotion's.
    let syncer = argo::spawn_namespaced_syncer(ctx.client.clone(), &ctx.namespace, Duration::ZERO);
    let status = deployed(&argo, &app).await;
    syncer.abort();
    assert_eq!(status.revisions, vec!["1.4.2".to_string(), NEW.to_string()]);

    let st = stored(&ctx, "web").await["status"].clone();
    assert_eq!(st["sync"]["revisions"], json!(["1.4.2", NEW]));
    assert!(st["sync"].get("revision").is_none(), "{st}");
    assert!(st["sync"]["comparedTo"].get("source").is_none(), "{st}");
    assert_eq!(
        st["sync"]["comparedTo"]["sources"][1]["targetRevision"],
        NEW
    );
    let result = &st["operationState"]["syncResult"];
    assert_eq!(result["revision"], "");
    assert_eq!(result["revisions"], json!(["1.4.2", NEW]));
    assert_eq!(result["source"]["chart"], "web");
    assert_eq!(
        st["operationState"]["operation"]["sync"]["revisions"],
        json!(["1.4.2", NEW])
    );
    let last = st["history"].as_array().and_then(|h| h.last()).cloned();
    assert_eq!(
        last.map(|l| l["revisions"].clone()),
        Some(json!(["1.4.2", NEW]))
    );
}

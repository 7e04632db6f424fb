//! Shared set-up of the tests on a real kube-apiserver.
#![allow(dead_code)]

use kube::api::{Api, DynamicObject, PostParams};
use promotion_api::ApplicationRef;
use promotion_argocd::{ClusterClients, KubeArgoCd, PromoteOptions, application_resource};
use promotion_core::ports::PromotionRequest;
use promotion_testenv::TestContext;
use serde_json::Value;
use std::sync::Arc;

/// A test's control-plane context, with Argo CD's own Application CRD installed.
pub async fn context(name: &str) -> TestContext {
    let ctx = promotion_testenv::context(name).await;
    let crd = promotion_argocd::testing::application_crd().expect("Argo CD's CRD parses");
    promotion_testenv::install_crd_objects(&ctx.client, vec![crd])
        .await
        .expect("installing the Application CRD");
    ctx
}

/// An adapter on the test cluster, reading cluster Secrets in the test's namespace.
pub fn adapter(ctx: &TestContext, options: PromoteOptions) -> KubeArgoCd {
    let clusters = ClusterClients::new(ctx.client.clone(), ctx.namespace.clone());
    KubeArgoCd::new(Arc::new(clusters), options)
}

/// The Applications of the test's namespace.
pub fn apps(ctx: &TestContext) -> Api<DynamicObject> {
    Api::namespaced_with(ctx.client.clone(), &ctx.namespace, &application_resource())
}

/// Creates an Application from `body` (spec, status, operation, metadata.annotations).
///
/// `spec.project` and `spec.destination`, which Argo CD's schema requires and no
/// test here is about, default to what most apps have.
pub async fn create_app(ctx: &TestContext, name: &str, mut body: Value) -> DynamicObject {
    if body["spec"].get("project").is_none() {
        body["spec"]["project"] = "default".into();
    }
    if body["spec"].get("destination").is_none() {
        body["spec"]["destination"] =
            serde_json::json!({"server": "https://kubernetes.default.svc", "namespace": name});
    }
    body["apiVersion"] = "argoproj.io/v1alpha1".into();
    body["kind"] = "Application".into();
    body["metadata"]["name"] = name.into();
    let obj: DynamicObject = serde_json::from_value(body).expect("an Application body");
    apps(ctx)
        .create(&PostParams::default(), &obj)
        .await
        .expect("creating the Application")
}

/// The Application as stored now.
pub async fn get_app(ctx: &TestContext, name: &str) -> DynamicObject {
    apps(ctx).get(name).await.expect("reading the Application")
}

/// A reference to an Application of the test's namespace on `cluster`.
pub fn app_ref(ctx: &TestContext, cluster: &str, name: &str) -> ApplicationRef {
    ApplicationRef {
        cluster: cluster.into(),
        namespace: ctx.namespace.clone(),
        name: name.into(),
    }
}

/// A promotion by policy `team-a/to-prod` to environment `prod`.
pub fn request(revision: &str) -> PromotionRequest {
    PromotionRequest {
        policy_namespace: "team-a".into(),
        policy: "to-prod".into(),
        target_environment: "prod".into(),
        tracker: String::new(),
        revision: revision.into(),
    }
}

/// The annotation that lets `team-a`'s policies promote to `prod`.
pub fn opted_in() -> Value {
    serde_json::json!({ promotion_argocd::ALLOW_PROMOTION_FROM: "team-b/prod, team-a/prod" })
}

/// A JSON value of the stored object.
pub fn json(obj: &DynamicObject) -> Value {
    serde_json::to_value(obj).expect("an object serializes")
}

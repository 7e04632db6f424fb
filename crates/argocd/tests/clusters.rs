//! Reaching Argo CD on another cluster through a kubeconfig Secret, on a real
//! kube-apiserver (the "other" cluster is the same test apiserver).

mod support;

use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, PostParams};
use promotion_argocd::{ClusterClients, KUBECONFIG_KEY, PromoteOptions};
use promotion_core::ports::{ArgoCdClient, ErrorKind, SyncStatus};
use promotion_testenv::TestContext;
use serde_json::json;
use std::collections::BTreeMap;
use support::*;

async fn store_kubeconfig_secret(
    ctx: &TestContext,
    cluster: &str,
    data: BTreeMap<String, ByteString>,
) {
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(ClusterClients::secret_name(cluster)),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    };
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the kubeconfig Secret");
}

async fn store_kubeconfig(ctx: &TestContext, cluster: &str, kubeconfig: &str) {
    let data = BTreeMap::from([(
        KUBECONFIG_KEY.to_string(),
        ByteString(kubeconfig.as_bytes().to_vec()),
    )]);
    store_kubeconfig_secret(ctx, cluster, data).await;
}

fn test_kubeconfig(ctx: &TestContext) -> String {
    std::fs::read_to_string(&ctx.kubeconfig).expect("reading the test kubeconfig")
}

/// The test kubeconfig with its user's credentials replaced by a bearer token.
fn with_token(ctx: &TestContext, token: &str) -> String {
    let mut kc: serde_json::Value =
        serde_yaml::from_str(&test_kubeconfig(ctx)).expect("the test kubeconfig parses");
    kc["users"][0]["user"] = json!({ "token": token });
    serde_json::to_string(&kc).expect("serializes")
}

fn app_body() -> serde_json::Value {
    json!({
        "metadata": {"annotations": opted_in()},
        "spec": {"source": {"repoURL": "https://git.example/web", "targetRevision": "old"}},
        "status": {"sync": {"status": "Synced", "revision": "old"}, "health": {"status": "Healthy"}},
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_cluster_through_a_kubeconfig_secret() {
    let ctx = context("clusters-remote").await;
    store_kubeconfig(&ctx, "prod-eu", &test_kubeconfig(&ctx)).await;
    create_app(&ctx, "web", app_body()).await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let app = app_ref(&ctx, "prod-eu", "web");

    let status = argo
        .application_status(&app)
        .await
        .expect("status through the Secret");
    assert_eq!(status.sync, SyncStatus::Synced);
    argo.promote(&app, &request("new"))
        .await
        .expect("promote through the Secret");
    let after = json(&get_app(&ctx, "web").await);
    assert_eq!(after["spec"]["source"]["targetRevision"], "new");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_cluster_is_a_clear_permanent_error() {
    let ctx = context("clusters-unknown").await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let err = argo
        .application_status(&app_ref(&ctx, "nowhere", "web"))
        .await
        .expect_err("no Secret for the cluster");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("unknown cluster \"nowhere\""),
        "{}",
        err.message
    );
    let secret = format!("{}/promotion-cluster-nowhere", ctx.namespace);
    assert!(err.message.contains(&secret), "{}", err.message);

    let err = argo
        .application_status(&app_ref(&ctx, "Not/A Name", "web"))
        .await
        .expect_err("not a cluster name");
    assert_eq!(err.kind, ErrorKind::Permanent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_without_a_usable_kubeconfig_is_a_permanent_error() {
    let ctx = context("clusters-bad-secret").await;
    store_kubeconfig_secret(
        &ctx,
        "no-key",
        BTreeMap::from([("other".to_string(), ByteString(b"x".to_vec()))]),
    )
    .await;
    store_kubeconfig(&ctx, "garbage", "this: [is not a kubeconfig").await;
    let argo = adapter(&ctx, PromoteOptions::default());

    for cluster in ["no-key", "garbage"] {
        let err = argo
            .application_status(&app_ref(&ctx, cluster, "web"))
            .await
            .expect_err("an unusable Secret");
        assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        assert!(
            err.message.contains(&format!("cluster \"{cluster}\"")),
            "{}",
            err.message
        );
        assert!(err.message.contains("unusable"), "{}", err.message);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_credentials_are_permanent_and_name_the_cluster() {
    let ctx = context("clusters-refused").await;
    create_app(&ctx, "web", app_body()).await;
    // 401: a token nobody issued.
    store_kubeconfig(&ctx, "bad-token", &with_token(&ctx, "not-a-real-token")).await;
    // 403: a real identity without any role.
    let accounts: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let account: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "nobody"}})).expect("a ServiceAccount");
    accounts
        .create(&PostParams::default(), &account)
        .await
        .expect("creating the ServiceAccount");
    let token = accounts
        .create_token_request("nobody", &PostParams::default(), &TokenRequest::default())
        .await
        .expect("a token")
        .status
        .expect("a token status")
        .token
        .expect("a token");
    store_kubeconfig(&ctx, "no-rights", &with_token(&ctx, &token)).await;
    let argo = adapter(&ctx, PromoteOptions::default());

    for (cluster, code) in [("bad-token", "401"), ("no-rights", "403")] {
        let err = argo
            .application_status(&app_ref(&ctx, cluster, "web"))
            .await
            .expect_err("credentials refused");
        assert_eq!(err.kind, ErrorKind::Permanent, "{}", err.message);
        assert!(
            err.message.contains(&format!("cluster {cluster}")),
            "{}",
            err.message
        );
        assert!(err.message.contains(code), "{}", err.message);
    }
}

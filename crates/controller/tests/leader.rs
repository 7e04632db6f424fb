//! Two replicas compete for the Lease on the real API server: one leads, the
//! other waits, and a release hands over at once.

use promotion_controller::leader::Leadership;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread")]
async fn one_leader_at_a_time_and_a_release_hands_over() {
    let ctx = promotion_testenv::context("leader").await;
    let mut a = Leadership::start(
        ctx.client.clone(),
        &ctx.namespace,
        "promotion-controller",
        "replica-a",
    )
    .await
    .expect("a competes");
    tokio::time::timeout(Duration::from_secs(30), a.acquired())
        .await
        .expect("a leads in time")
        .expect("a leads");
    let mut b = Leadership::start(
        ctx.client.clone(),
        &ctx.namespace,
        "promotion-controller",
        "replica-b",
    )
    .await
    .expect("b competes");
    let b_leads_early = tokio::time::timeout(Duration::from_secs(3), b.acquired()).await;
    assert!(
        b_leads_early.is_err(),
        "b must not lead while a holds the lease"
    );
    let a_lost = a.lost();
    a.release().await.expect("a releases");
    tokio::time::timeout(Duration::from_secs(30), b.acquired())
        .await
        .expect("b leads after the release")
        .expect("b leads");
    tokio::time::timeout(Duration::from_secs(5), a_lost)
        .await
        .expect("a knows it lost the lease");
    let lease: k8s_openapi::api::coordination::v1::Lease =
        kube::Api::namespaced(ctx.client.clone(), &ctx.namespace)
            .get("promotion-controller")
            .await
            .expect("lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("replica-b")
    );
}

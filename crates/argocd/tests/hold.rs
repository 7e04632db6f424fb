//! The environment hold on a real kube-apiserver: one holder at a time, taken
//! and released with optimistic concurrency.

mod support;

use promotion_argocd::{IN_CLUSTER, PromoteOptions};
use promotion_core::ports::{ArgoCdClient, HELD_BY_ANNOTATION, Hold};
use serde_json::json;
use support::*;

fn app_body() -> serde_json::Value {
    json!({
        "metadata": {"annotations": opted_in()},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/web", "path": "deploy", "targetRevision": "main"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": "web"},
        },
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_release_frees_it() {
    let ctx = context("hold-one").await;
    create_app(&ctx, "web", app_body()).await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let app = app_ref(&ctx, IN_CLUSTER, "web");
    assert_eq!(argo.holder(&app).await.expect("holder"), None);
    assert_eq!(
        argo.acquire(&app, "team/a/1", None).await.expect("a"),
        Hold::Acquired
    );
    assert_eq!(
        argo.acquire(&app, "team/b/2", None).await.expect("b"),
        Hold::HeldBy("team/a/1".into())
    );
    // Taking it again is idempotent; releasing someone else's hold changes nothing.
    assert_eq!(
        argo.acquire(&app, "team/a/1", None).await.expect("a again"),
        Hold::Acquired
    );
    argo.release(&app, "team/b/2").await.expect("b releases");
    assert_eq!(
        argo.holder(&app).await.expect("holder"),
        Some("team/a/1".into())
    );
    argo.release(&app, "team/a/1").await.expect("a releases");
    let stored = json(&get_app(&ctx, "web").await);
    assert!(
        stored["metadata"]["annotations"]
            .get(HELD_BY_ANNOTATION)
            .is_none(),
        "{stored}"
    );
    assert_eq!(
        argo.acquire(&app, "team/b/2", None).await.expect("b"),
        Hold::Acquired
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_hold_is_broken_only_by_naming_it() {
    let ctx = context("hold-stale").await;
    create_app(&ctx, "web", app_body()).await;
    let argo = adapter(&ctx, PromoteOptions::default());
    let app = app_ref(&ctx, IN_CLUSTER, "web");
    argo.acquire(&app, "team/gone/0", None).await.expect("a");
    assert_eq!(
        argo.acquire(&app, "team/b/2", Some("team/other/9"))
            .await
            .expect("b"),
        Hold::HeldBy("team/gone/0".into())
    );
    assert_eq!(
        argo.acquire(&app, "team/b/2", Some("team/gone/0"))
            .await
            .expect("b"),
        Hold::Acquired
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn racing_takers_have_exactly_one_winner() {
    let ctx = context("hold-race").await;
    create_app(&ctx, "web", app_body()).await;
    let argo = std::sync::Arc::new(adapter(&ctx, PromoteOptions::default()));
    let app = app_ref(&ctx, IN_CLUSTER, "web");
    let takers = (0..8).map(|i| {
        let argo = argo.clone();
        let app = app.clone();
        tokio::spawn(async move { argo.acquire(&app, &format!("team/t{i}/{i}"), None).await })
    });
    let mut winners = 0;
    for t in futures::future::join_all(takers).await {
        match t.expect("task") {
            Ok(Hold::Acquired) => winners += 1,
            Ok(Hold::HeldBy(_)) => {}
            // Losing the race three times in a row is a retryable answer, never a second winner.
            Err(e) => assert_eq!(e.kind, promotion_core::ports::ErrorKind::Transient, "{e}"),
        }
    }
    assert_eq!(winners, 1);
    assert!(argo.holder(&app).await.expect("holder").is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn releasing_a_deleted_application_is_not_an_error() {
    let ctx = context("hold-gone").await;
    let argo = adapter(&ctx, PromoteOptions::default());
    argo.release(&app_ref(&ctx, IN_CLUSTER, "nothing"), "team/a/1")
        .await
        .expect("release");
}

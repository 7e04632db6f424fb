//! The webhook receiver against the real API server: PR events create, move and
//! close trackers exactly once; bad input is refused and changes nothing.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use kube::api::Api;
use promotion_api::{ApplicationRef, Provider, PullRequestTracker};
use promotion_controller::controller::Wake;
use promotion_controller::webhook::{MAX_BODY, RepositoryConfig, WebhookSecrets, Webhooks};
use serde_json::{Value, json};
use sha2::Sha256;
use tower::ServiceExt;

const SECRET: &[u8] = b"webhook-s3cret";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Setup {
    router: axum::Router,
    api: Api<PullRequestTracker>,
    wakes: futures::channel::mpsc::UnboundedReceiver<Wake>,
}

async fn setup(test: &str) -> Setup {
    let ctx = promotion_testenv::context(test).await;
    let repos = vec![RepositoryConfig {
        owner: "acme".into(),
        name: "shop".into(),
        namespace: ctx.namespace.clone(),
        environment: "dev".into(),
        application: ApplicationRef {
            cluster: "in-cluster".into(),
            namespace: "argocd".into(),
            name: "shop-pr-${PR_NUMBER}".into(),
        },
    }];
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let secrets = || WebhookSecrets {
        github: Some(SECRET.to_vec()),
        gitlab: Some(b"gl-token".to_vec()),
        jenkins: Some(b"jk-token".to_vec()),
    };
    let router = Webhooks::new(ctx.client.clone(), repos, secrets, tx).router();
    Setup {
        router,
        api: Api::namespaced(ctx.client.clone(), &ctx.namespace),
        wakes: rx,
    }
}

fn pr_event(action: &str, sha: &str, updated_at: &str) -> Value {
    json!({
        "action": action, "number": 42,
        "pull_request": {"number": 42, "state": "open", "head": {"sha": sha, "ref": "feature"}, "updated_at": updated_at},
        "repository": {"name": "shop", "full_name": "acme/shop", "owner": {"login": "acme"}}
    })
}

async fn send(
    router: &axum::Router,
    path: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> (StatusCode, String) {
    let mut req = Request::post(path);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let resp = router
        .clone()
        .oneshot(req.body(Body::from(body)).expect("request"))
        .await
        .expect("answer");
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

async fn github(router: &axum::Router, event: &str, body: &Value) -> (StatusCode, String) {
    let bytes = serde_json::to_vec(body).expect("json");
    send(
        router,
        "/webhooks/github",
        &[
            ("x-github-event", event.into()),
            ("x-hub-signature-256", sign(&bytes)),
        ],
        bytes,
    )
    .await
}

const SHA1: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

#[tokio::test(flavor = "multi_thread")]
async fn pull_request_events_drive_the_tracker_once_each() {
    let s = setup("webhook-pr").await;
    let (code, _) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let t = s.api.get("shop-pr-42").await.expect("tracker created");
    assert_eq!(t.spec.head_sha, SHA1);
    assert_eq!(t.spec.environment, "dev");
    assert_eq!(t.spec.application.name, "shop-pr-42");
    assert!(!t.spec.closed);

    // A replay changes nothing.
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(text.contains("ignored"), "{text}");
    let again = s.api.get("shop-pr-42").await.expect("tracker");
    assert_eq!(again.metadata.resource_version, t.metadata.resource_version);

    // A push moves the head; an older delivery arriving late does not move it back.
    github(
        &s.router,
        "pull_request",
        &pr_event("synchronize", SHA2, "2026-11-25T11:00:00Z"),
    )
    .await;
    let (_, text) = github(
        &s.router,
        "pull_request",
        &pr_event("synchronize", SHA1, "2026-11-25T10:30:00Z"),
    )
    .await;
    assert!(text.contains("ignored"), "{text}");
    let t = s.api.get("shop-pr-42").await.expect("tracker");
    assert_eq!(t.spec.head_sha, SHA2);
    assert_eq!(t.metadata.generation, Some(2));

    github(
        &s.router,
        "pull_request",
        &pr_event("closed", SHA2, "2026-11-25T12:00:00Z"),
    )
    .await;
    assert!(s.api.get("shop-pr-42").await.expect("tracker").spec.closed);
    github(
        &s.router,
        "pull_request",
        &pr_event("reopened", SHA2, "2026-11-25T13:00:00Z"),
    )
    .await;
    assert!(!s.api.get("shop-pr-42").await.expect("tracker").spec.closed);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = setup("webhook-bad").await;
    let body = serde_json::to_vec(&pr_event("opened", SHA1, "2026-11-25T10:00:00Z")).expect("json");
    let wrong = {
        let mut mac = Hmac::<Sha256>::new_from_slice(b"not-the-secret").expect("key");
        mac.update(&body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    };
    let (code, _) = send(
        &s.router,
        "/webhooks/github",
        &[
            ("x-github-event", "pull_request".into()),
            ("x-hub-signature-256", wrong),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = send(
        &s.router,
        "/webhooks/github",
        &[("x-github-event", "pull_request".into())],
        body.clone(),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED, "no signature at all");

    let mut other = pr_event("opened", SHA1, "2026-11-25T10:00:00Z");
    other["repository"] = json!({"name": "secret-project", "owner": {"login": "evil"}});
    let (code, text) = github(&s.router, "pull_request", &other).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "{text}");

    let junk = b"{not json".to_vec();
    let (code, _) = send(
        &s.router,
        "/webhooks/github",
        &[
            ("x-github-event", "pull_request".into()),
            ("x-hub-signature-256", sign(&junk)),
        ],
        junk,
    )
    .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let mut bad_sha = pr_event("opened", "not-a-sha", "2026-11-25T10:00:00Z");
    bad_sha["number"] = json!(42);
    let (code, _) = github(&s.router, "pull_request", &bad_sha).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let huge = vec![b' '; MAX_BODY + 1];
    let (code, _) = send(
        &s.router,
        "/webhooks/github",
        &[
            ("x-github-event", "pull_request".into()),
            ("x-hub-signature-256", sign(&huge)),
        ],
        huge,
    )
    .await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);

    let (code, _) = send(
        &s.router,
        "/webhooks/gitlab",
        &[
            ("x-gitlab-event", "Pipeline Hook".into()),
            ("x-gitlab-token", "guess".into()),
        ],
        b"{}".to_vec(),
    )
    .await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = send(&s.router, "/webhooks/jenkins", &[], b"{}".to_vec()).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);

    let list = s.api.list(&Default::default()).await.expect("list");
    assert!(
        list.items.is_empty(),
        "nothing was created: {:?}",
        list.items
            .iter()
            .map(|t| &t.metadata.name)
            .collect::<Vec<_>>()
    );
    let (code, _) = github(&s.router, "ping", &json!({"zen": "hi"})).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn ci_callbacks_wake_the_controller() {
    let mut s = setup("webhook-ci").await;
    let (code, _) = github(
        &s.router,
        "workflow_run",
        &json!({"action": "completed", "workflow_run": {"id": 987654, "status": "completed"}}),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let (code, _) = send(
        &s.router,
        "/webhooks/gitlab",
        &[("x-gitlab-event", "Pipeline Hook".into()), ("x-gitlab-token", "gl-token".into())],
        serde_json::to_vec(&json!({"object_kind": "pipeline", "object_attributes": {"id": 31, "status": "success"}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let (code, _) = send(
        &s.router,
        "/webhooks/jenkins",
        &[("x-promotion-token", "jk-token".into())],
        serde_json::to_vec(&json!({"name": "smoke", "build": {"number": 12, "phase": "COMPLETED", "status": "SUCCESS"}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let wakes: Vec<Wake> = (&mut s.wakes).take(3).collect().await;
    assert_eq!(
        wakes,
        [
            Wake {
                provider: Provider::GithubActions,
                job: None,
                id: "987654".into()
            },
            Wake {
                provider: Provider::Gitlab,
                job: None,
                id: "31".into()
            },
            Wake {
                provider: Provider::Jenkins,
                job: None,
                id: "12".into()
            },
        ]
    );
}

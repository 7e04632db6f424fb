//! The webhook receiver against the real API server and the GitHub stand-in: a
//! pull_request delivery makes the tracker say what the GitHub API says of the PR
//! (head, closed, copied labels), exactly once; the resync catches lost deliveries;
//! CI callbacks shaped as each service sends them wake the controller; bad input is
//! refused and changes nothing.
//!
//! Delivery payloads follow GitHub's "Webhook events and payloads" reference
//! (docs.github.com/webhooks/webhook-events-and-payloads, pull_request), and the
//! Jenkins notifications the Notification plugin's documented message
//! (plugins.jenkins.io/notification).

use axum::body::Body;
use axum::http::{Request, StatusCode};
use futures::StreamExt;
use hmac::{Hmac, Mac};
use http_body_util::BodyExt;
use kube::api::{Api, Patch, PatchParams};
use promotion_api::{Provider, PullRequestTracker};
use promotion_controller::controller::Wake;
use promotion_controller::pr_sync::{Applied, PullRequestSync};
use promotion_controller::webhook::{MAX_BODY, RepositoryConfig, WebhookSecrets, Webhooks};
use promotion_core::fakes::FakePullRequests;
use promotion_core::ports::{PortError, PullRequestReader, PullRequestState};
use promotion_standins::{CiScript, GITHUB_SECRET, StandInConfig, StandIns};
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

const SECRET: &[u8] = b"webhook-s3cret-of-24-bytes";
const GITLAB_TOKEN: &str = "gitlab-token-of-24-bytes";
const JENKINS_TOKEN: &str = "jenkins-token-24-bytes!!";
const REPO: &str = "acme/shop";
const SHA1: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
const SHA3: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f901234567";

fn sign(body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET).expect("key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

struct Setup {
    router: axum::Router,
    api: Api<PullRequestTracker>,
    wakes: futures::channel::mpsc::UnboundedReceiver<Wake>,
    sync: Arc<PullRequestSync>,
    /// Kept alive for the test: its drop stops the servers.
    github: Option<StandIns>,
}

impl Setup {
    fn prs(&self) -> &promotion_standins::PullRequests {
        &self
            .github
            .as_ref()
            .expect("the GitHub stand-in")
            .pull_requests
    }
}

fn repository(namespace: &str) -> RepositoryConfig {
    serde_json::from_value(json!({
        "owner": "acme", "name": "shop", "namespace": namespace, "environment": "dev",
        "application": {"cluster": "in-cluster", "namespace": "argocd", "name": "shop-pr-${PR_NUMBER}"},
        "copyLabels": ["team:*", "area/*"],
    }))
    .expect("repository settings")
}

/// A GitHub reader over the stand-in, as the binary builds it from the `github` connection.
fn stand_in_reader(standins: &StandIns) -> Arc<dyn PullRequestReader> {
    let data: BTreeMap<String, Vec<u8>> = standins
        .secrets()
        .into_iter()
        .find(|(name, _)| name == GITHUB_SECRET)
        .map(|(_, data)| data.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        .expect("the github Secret");
    let entry: promotion_adapters::ConnectionEntry = serde_json::from_value(json!({
        "name": "github", "kind": "github", "url": standins.github_url,
        "secretRef": {"name": GITHUB_SECRET},
    }))
    .expect("connection entry");
    match entry.build("promotion-system", &data).expect("connection") {
        promotion_adapters::Adapter::GitHub { pull_requests, .. } => pull_requests,
        other => panic!("a github connection builds GitHub's ports, not {other:?}"),
    }
}

async fn setup_with(test: &str, reader: Option<Arc<dyn PullRequestReader>>) -> Setup {
    let ctx = promotion_testenv::context(test).await;
    let (github, reader) = match reader {
        Some(r) => (None, r),
        None => {
            let standins = StandIns::start(StandInConfig {
                script: CiScript::new(Duration::from_secs(1)),
                callbacks: None,
            })
            .await
            .expect("stand-ins");
            let reader = stand_in_reader(&standins);
            (Some(standins), reader)
        }
    };
    let sync = Arc::new(PullRequestSync::new(
        ctx.client.clone(),
        reader,
        vec![repository(&ctx.namespace)],
    ));
    let (tx, rx) = futures::channel::mpsc::unbounded();
    let secrets = || WebhookSecrets {
        github: Some(SECRET.to_vec()),
        gitlab: Some(GITLAB_TOKEN.as_bytes().to_vec()),
        jenkins: Some(JENKINS_TOKEN.as_bytes().to_vec()),
    };
    let router = Webhooks::new(secrets, tx)
        .with_pull_requests(sync.clone())
        .router();
    Setup {
        router,
        api: Api::namespaced(ctx.client.clone(), &ctx.namespace),
        wakes: rx,
        sync,
        github,
    }
}

async fn setup(test: &str) -> Setup {
    setup_with(test, None).await
}

/// A pull_request delivery; `sha` and `updated_at` are what the event carried, which
/// the receiver must not trust over the API.
fn pr_event(action: &str, sha: &str, updated_at: &str) -> Value {
    json!({
        "action": action, "number": 42,
        "pull_request": {
            "url": "https://api.github.com/repos/acme/shop/pulls/42", "id": 1042, "number": 42,
            "state": if action == "closed" { "closed" } else { "open" }, "locked": false,
            "title": "Checkout in one step", "user": {"login": "octocat", "id": 1, "type": "User"},
            "labels": [], "draft": false, "updated_at": updated_at, "created_at": "2026-11-25T09:00:00Z",
            "head": {"label": "acme:feature", "ref": "feature", "sha": sha,
                     "repo": {"id": 7, "name": "shop", "full_name": "acme/shop", "owner": {"login": "acme"}}},
            "base": {"label": "acme:main", "ref": "main", "sha": SHA3,
                     "repo": {"id": 7, "name": "shop", "full_name": "acme/shop", "owner": {"login": "acme"}}}
        },
        "repository": {"id": 7, "name": "shop", "full_name": "acme/shop", "private": true, "owner": {"login": "acme", "id": 9, "type": "Organization"}},
        "sender": {"login": "octocat", "id": 1, "type": "User"}
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

/// A GitHub delivery id as GitHub makes them: a new GUID per delivery.
fn new_delivery_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("72d3162e-cc78-11e3-81ab-{n:012x}")
}

/// A new delivery of `body` (a fresh delivery id).
async fn github(router: &axum::Router, event: &str, body: &Value) -> (StatusCode, String) {
    github_delivery(router, event, &new_delivery_id(), body).await
}

/// The delivery `id` of `body`, signed with the webhook secret.
async fn github_delivery(
    router: &axum::Router,
    event: &str,
    id: &str,
    body: &Value,
) -> (StatusCode, String) {
    let bytes = serde_json::to_vec(body).expect("json");
    send(
        router,
        "/webhooks/github",
        &[
            ("content-type", "application/json".into()),
            ("x-github-event", event.into()),
            ("x-github-delivery", id.into()),
            ("x-hub-signature-256", sign(&bytes)),
        ],
        bytes,
    )
    .await
}

async fn tracker(s: &Setup) -> PullRequestTracker {
    s.api.get("acme-shop-pr-42").await.expect("tracker")
}

#[tokio::test(flavor = "multi_thread")]
async fn pull_request_events_drive_the_tracker_once_each() {
    let s = setup("webhook-pr").await;
    s.prs().open(REPO, 42, SHA1);
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let t = tracker(&s).await;
    assert_eq!(t.spec.head_sha, SHA1);
    assert_eq!(t.spec.environment, "dev");
    assert_eq!(t.spec.application.name, "shop-pr-42");
    assert!(!t.spec.closed);

    // The same event again, delivered anew, changes nothing.
    let mut again_event = pr_event("opened", SHA1, "2026-11-25T10:00:00Z");
    again_event["sender"]["id"] = json!(2);
    let (code, text) = github(&s.router, "pull_request", &again_event).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(text.contains("unchanged"), "{text}");
    let again = tracker(&s).await;
    assert_eq!(again.metadata.resource_version, t.metadata.resource_version);

    // A push moves the head; an older delivery arriving late does not move it back,
    // since the API, not the delivery, says where the head is.
    s.prs().push(REPO, 42, SHA2);
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
    assert!(text.contains("unchanged"), "{text}");
    let t = tracker(&s).await;
    assert_eq!(t.spec.head_sha, SHA2);
    assert_eq!(t.metadata.generation, Some(2));

    s.prs().close(REPO, 42);
    github(
        &s.router,
        "pull_request",
        &pr_event("closed", SHA2, "2026-11-25T12:00:00Z"),
    )
    .await;
    assert!(tracker(&s).await.spec.closed);
}

/// Case 8: a push in the same second as the previous event (GitHub's `updated_at`
/// has one-second resolution) must move the tracker to the new head.
#[tokio::test(flavor = "multi_thread")]
async fn a_push_in_the_same_second_moves_the_head() {
    let s = setup("webhook-same-second").await;
    s.prs().open(REPO, 42, SHA1);
    let (code, _) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    s.prs().push(REPO, 42, SHA2);
    github(
        &s.router,
        "pull_request",
        &pr_event("synchronize", SHA2, "2026-11-25T10:00:00Z"),
    )
    .await;
    let t = tracker(&s).await;
    assert_eq!(t.spec.head_sha, SHA2, "the new push was dropped as stale");
}

/// Case 9, the webhook's half: a reopened PR's tracker is open again.
#[tokio::test(flavor = "multi_thread")]
async fn a_reopened_pull_request_reopens_its_tracker() {
    let s = setup("webhook-reopen").await;
    s.prs().open(REPO, 42, SHA1);
    github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    s.prs().close(REPO, 42);
    github(
        &s.router,
        "pull_request",
        &pr_event("closed", SHA1, "2026-11-25T11:00:00Z"),
    )
    .await;
    assert!(tracker(&s).await.spec.closed);
    s.prs().reopen(REPO, 42);
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("reopened", SHA1, "2026-11-25T12:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    assert!(!tracker(&s).await.spec.closed);
}

/// Case 12, first half: the PR labels the repository copies become tracker labels
/// (so policy selectors apply to webhook trackers) and follow the PR.
#[tokio::test(flavor = "multi_thread")]
async fn copied_pr_labels_become_tracker_labels_and_follow_the_pr() {
    let s = setup("webhook-labels").await;
    s.prs().open(REPO, 42, SHA1);
    s.prs().label(REPO, 42, "team:Payments");
    s.prs().label(REPO, 42, "area/checkout");
    s.prs().label(REPO, 42, "bug");
    github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    let labels = tracker(&s).await.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels,
        BTreeMap::from([
            ("area".to_string(), "checkout".to_string()),
            ("team".to_string(), "payments".to_string()),
        ]),
        "bug matches no copyLabels pattern"
    );

    // Someone labels the tracker by hand: that label is theirs and stays.
    s.api
        .patch(
            "acme-shop-pr-42",
            &PatchParams::apply("kubectl"),
            &Patch::Apply(json!({
                "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
                "metadata": {"name": "acme-shop-pr-42", "labels": {"owner": "ops"}},
            })),
        )
        .await
        .expect("a hand-made label");
    s.prs().unlabel(REPO, 42, "team:Payments");
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("unlabeled", SHA1, "2026-11-25T10:05:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let labels = tracker(&s).await.metadata.labels.unwrap_or_default();
    assert_eq!(
        labels,
        BTreeMap::from([
            ("area".to_string(), "checkout".to_string()),
            ("owner".to_string(), "ops".to_string()),
        ])
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_from_a_fork_gets_no_tracker() {
    let s = setup("webhook-fork").await;
    s.prs().open_from(REPO, 42, SHA1, Some("mallory/shop"));
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(text.contains("fork"), "{text}");
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn github_unreachable_refuses_the_delivery_and_writes_nothing() {
    let fake = Arc::new(FakePullRequests::new());
    let s = setup_with("webhook-github-down", Some(fake.clone())).await;
    fake.fail(PortError::transient(
        "connection github: GET /repos/acme/shop/pulls/42: 502 server error",
    ));
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_GATEWAY, "{text}");
    assert!(text.contains("502 server error"), "{text}");
    assert_eq!(fake.gets(), 1);
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );

    // A PR GitHub does not show (404) is refused as well, naming the credentials.
    fake.recover();
    let (code, text) = github(
        &s.router,
        "pull_request",
        &pr_event("opened", SHA1, "2026-11-25T10:00:00Z"),
    )
    .await;
    assert_eq!(code, StatusCode::BAD_GATEWAY, "{text}");
    assert!(text.contains("credentials"), "{text}");
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );
}

/// GitHub's `application/x-www-form-urlencoded` content type: the JSON is the
/// `payload` field, and the signature covers the form body as sent.
#[tokio::test(flavor = "multi_thread")]
async fn form_encoded_deliveries_are_accepted() {
    let s = setup("webhook-form").await;
    s.prs().open(REPO, 42, SHA1);
    let json =
        serde_json::to_string(&pr_event("opened", SHA1, "2026-11-25T10:00:00Z")).expect("json");
    let body: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("payload", &json)
        .finish();
    let form = |signature: String| {
        vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_string(),
            ),
            ("x-github-event", "pull_request".to_string()),
            ("x-github-delivery", new_delivery_id()),
            ("x-hub-signature-256", signature),
        ]
    };
    let (code, _) = send(
        &s.router,
        "/webhooks/github",
        &form(sign(json.as_bytes())),
        body.clone().into_bytes(),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::UNAUTHORIZED,
        "a signature over the JSON alone is not GitHub's"
    );
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );
    let (code, text) = send(
        &s.router,
        "/webhooks/github",
        &form(sign(body.as_bytes())),
        body.into_bytes(),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    assert_eq!(tracker(&s).await.spec.head_sha, SHA1);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_refused_and_changes_nothing() {
    let s = setup("webhook-bad").await;
    s.prs().open(REPO, 42, SHA1);
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

    let (code, text) = send(
        &s.router,
        "/webhooks/github",
        &[
            ("x-github-event", "pull_request".into()),
            ("x-hub-signature-256", sign(&body)),
        ],
        body.clone(),
    )
    .await;
    assert_eq!(
        code,
        StatusCode::BAD_REQUEST,
        "no X-GitHub-Delivery: {text}"
    );

    let mut zero = pr_event("opened", SHA1, "2026-11-25T10:00:00Z");
    zero["number"] = json!(0);
    let (code, _) = github(&s.router, "pull_request", &zero).await;
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
    let (code, _) = send(&s.router, "/webhooks/jenkins/guess", &[], b"{}".to_vec()).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    let (code, _) = send(
        &s.router,
        "/webhooks/jenkins",
        &[("authorization", format!("Basic {}", b64("jenkins:guess")))],
        b"{}".to_vec(),
    )
    .await;
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

fn b64(text: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(text)
}

/// A Jenkins Notification plugin message (JSON format, HTTP protocol), as its
/// documentation shows one; `url` is the job's URL-encoded path.
fn jenkins_notification(job_url: &str, number: u64) -> Vec<u8> {
    serde_json::to_vec(&json!({
        "name": "smoke tests",
        "display_name": "smoke tests",
        "url": job_url,
        "build": {
            "full_url": format!("https://jenkins.example.com/{job_url}{number}/"),
            "number": number,
            "queue_id": 311,
            "timestamp": 1764410000000u64,
            "duration": 61000,
            "phase": "COMPLETED",
            "status": "SUCCESS",
            "url": format!("{job_url}{number}/"),
            "scm": {"url": "https://github.com/acme/shop.git", "branch": "origin/main", "commit": SHA1},
            "log": "",
            "notes": "",
            "artifacts": {}
        }
    }))
    .expect("json")
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
        &[("x-gitlab-event", "Pipeline Hook".into()), ("x-gitlab-token", GITLAB_TOKEN.into())],
        serde_json::to_vec(&json!({"object_kind": "pipeline", "object_attributes": {"id": 31, "status": "success"}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED);
    let (code, _) = send(
        &s.router,
        "/webhooks/jenkins",
        &[("x-promotion-token", JENKINS_TOKEN.into())],
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

/// What the Notification plugin can send: Basic auth from the endpoint URL's userinfo
/// (`https://jenkins:<token>@host/webhooks/jenkins`), or the token in the URL's path;
/// a job whose name needs URL encoding wakes the trackers of the decoded name.
#[tokio::test(flavor = "multi_thread")]
async fn jenkins_notifications_as_the_plugin_sends_them_wake_the_decoded_job() {
    let mut s = setup("webhook-jenkins").await;
    let json_only = ("content-type", "application/json".to_string());
    let (code, text) = send(
        &s.router,
        "/webhooks/jenkins",
        &[
            json_only.clone(),
            (
                "authorization",
                format!("Basic {}", b64(&format!("jenkins:{JENKINS_TOKEN}"))),
            ),
        ],
        jenkins_notification("job/team-a/job/smoke%20tests/", 12),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let (code, text) = send(
        &s.router,
        &format!("/webhooks/jenkins/{JENKINS_TOKEN}"),
        &[json_only],
        jenkins_notification("job/smoke/", 13),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    let wakes: Vec<Wake> = (&mut s.wakes).take(2).collect().await;
    assert_eq!(
        wakes,
        [
            Wake {
                provider: Provider::Jenkins,
                job: Some("team-a/smoke tests".into()),
                id: "12".into()
            },
            Wake {
                provider: Provider::Jenkins,
                job: Some("smoke".into()),
                id: "13".into()
            },
        ]
    );
}

/// Deliveries lost while the controller was down: the resync reads the open PRs and
/// settles every difference, then costs nothing more while all agree.
#[tokio::test(flavor = "multi_thread")]
async fn the_resync_catches_lost_deliveries() {
    let s = setup("webhook-resync").await;
    let prs = s.prs();
    // Tracked while the controller ran: #42 (pushed since), #43 (closed since), #44 (unchanged).
    for n in [42, 43, 44] {
        prs.open(REPO, n, SHA1);
        let mut ev = pr_event("opened", SHA1, "2026-11-25T10:00:00Z");
        ev["number"] = json!(n);
        github(&s.router, "pull_request", &ev).await;
    }
    prs.push(REPO, 42, SHA2);
    prs.close(REPO, 43);
    // Opened while it was down, never delivered: #45.
    prs.open(REPO, 45, SHA3);
    let untouched = s.api.get("acme-shop-pr-44").await.expect("tracker 44");

    let report = s.sync.resync().await;
    assert!(report.failures.is_empty(), "{:?}", report.failures);
    let ns = untouched.metadata.namespace.clone().unwrap_or_default();
    let mut applied = report.applied.clone();
    applied.sort_by_key(|a| format!("{a:?}"));
    assert_eq!(
        applied,
        [
            Applied::Created(format!("{ns}/acme-shop-pr-45")),
            Applied::Updated(format!("{ns}/acme-shop-pr-42")),
            Applied::Updated(format!("{ns}/acme-shop-pr-43")),
        ],
        "#44 agreed and was not looked at again"
    );
    assert_eq!(
        s.api
            .get("acme-shop-pr-42")
            .await
            .expect("42")
            .spec
            .head_sha,
        SHA2
    );
    assert!(s.api.get("acme-shop-pr-43").await.expect("43").spec.closed);
    assert_eq!(
        s.api
            .get("acme-shop-pr-45")
            .await
            .expect("45")
            .spec
            .head_sha,
        SHA3
    );
    assert_eq!(
        s.api
            .get("acme-shop-pr-44")
            .await
            .expect("44")
            .metadata
            .resource_version,
        untouched.metadata.resource_version
    );

    let again = s.sync.resync().await;
    assert_eq!(again, Default::default(), "nothing left to settle");
}

/// What a resync costs when every tracker agrees with GitHub: one list per repository.
#[tokio::test(flavor = "multi_thread")]
async fn a_resync_where_all_agree_reads_only_the_list() {
    let fake = Arc::new(FakePullRequests::new());
    let s = setup_with("webhook-resync-cost", Some(fake.clone())).await;
    for n in [1, 2, 3] {
        fake.set(
            "acme",
            "shop",
            PullRequestState {
                number: n,
                head_sha: SHA1.into(),
                open: true,
                merged: false,
                labels: vec!["team:a".into()],
                head_repository: Some(REPO.into()),
            },
        );
    }
    let first = s.sync.resync().await;
    assert_eq!(first.applied.len(), 3, "{first:?}");
    let (gets, lists) = (fake.gets(), fake.lists());
    assert_eq!((gets, lists), (3, 1));
    let second = s.sync.resync().await;
    assert_eq!(second, Default::default());
    assert_eq!((fake.gets(), fake.lists()), (gets, lists + 1));

    // GitHub down: the resync says so and changes nothing.
    fake.fail(PortError::transient("connection github: could not connect"));
    let failed = s.sync.resync().await;
    assert_eq!(failed.failures.len(), 1, "{failed:?}");
    assert!(failed.failures[0].contains("could not connect"));
    assert!(failed.applied.is_empty());
}

/// Issue #12, item 4: an empty value is an empty HMAC key or token, which anyone can
/// match. With empty or short secrets every endpoint refuses (503), whatever is sent.
#[tokio::test(flavor = "multi_thread")]
async fn endpoints_with_an_empty_or_short_secret_refuse_everything() {
    let ctx = promotion_testenv::context("webhook-empty-secret").await;
    let fake = Arc::new(FakePullRequests::new());
    fake.set(
        "acme",
        "shop",
        PullRequestState {
            number: 42,
            head_sha: SHA1.into(),
            open: true,
            merged: false,
            labels: vec![],
            head_repository: Some(REPO.into()),
        },
    );
    let sync = Arc::new(PullRequestSync::new(
        ctx.client.clone(),
        fake.clone(),
        vec![repository(&ctx.namespace)],
    ));
    let (tx, mut wakes) = futures::channel::mpsc::unbounded();
    let router = Webhooks::new(
        || WebhookSecrets {
            github: Some(Vec::new()),
            gitlab: Some(Vec::new()),
            jenkins: Some(b"short-token".to_vec()),
        },
        tx,
    )
    .with_pull_requests(sync)
    .router();
    // Signed with the empty key, as an attacker can.
    let body = serde_json::to_vec(&pr_event("opened", SHA1, "2026-11-25T10:00:00Z")).expect("json");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"").expect("key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let (code, text) = send(
        &router,
        "/webhooks/github",
        &[
            ("x-github-event", "pull_request".into()),
            ("x-github-delivery", new_delivery_id()),
            ("x-hub-signature-256", signature),
        ],
        body,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        text.contains("webhook endpoint github is disabled"),
        "{text}"
    );
    let (code, text) = send(
        &router,
        "/webhooks/gitlab",
        &[
            ("x-gitlab-event", "Pipeline Hook".into()),
            ("x-gitlab-token", String::new()),
        ],
        serde_json::to_vec(&json!({"object_attributes": {"id": 31}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    let (code, text) = send(
        &router,
        "/webhooks/jenkins/short-token",
        &[],
        serde_json::to_vec(&json!({"build": {"number": 12}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    assert!(
        !text.contains("short-token"),
        "the answer names no secret: {text}"
    );

    assert_eq!(fake.gets(), 0, "GitHub was not asked");
    let trackers: Api<PullRequestTracker> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    assert!(
        trackers
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );
    drop(router);
    assert!(
        wakes.next().await.is_none(),
        "no callback woke the controller"
    );
}

/// Item 4, from the Secret: an empty or short key disables its endpoint only, says
/// so in the metric and in /readyz's text, and keeps the replica ready.
#[tokio::test(flavor = "multi_thread")]
async fn a_bad_key_in_the_webhook_secret_disables_that_endpoint_only() {
    use k8s_openapi::api::core::v1::Secret;
    use promotion_controller::config::FileConfig;
    use promotion_controller::metrics::Metrics;
    use promotion_controller::wiring::Wiring;
    let ctx = promotion_testenv::context("webhook-secret-keys").await;
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "hooks"},
        "stringData": {"github": "  \n", "gitlab": "too-short", "jenkins": JENKINS_TOKEN}
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(ctx.client.clone(), &ctx.namespace)
        .create(&Default::default(), &secret)
        .await
        .expect("creating the webhook Secret");
    let file = FileConfig::parse("webhookSecretRef: {name: hooks}\n").expect("config");
    let wiring = Wiring::start(ctx.client.clone(), &file, &ctx.namespace)
        .await
        .expect("wiring");
    let handle = wiring.webhook_secrets();
    let metrics = Arc::new(Metrics::new());
    {
        let handle = handle.clone();
        metrics.set_webhook_source(move || handle.get().enabled());
    }
    let (tx, mut wakes) = futures::channel::mpsc::unbounded();
    let router = Webhooks::new(move || handle.get(), tx).router();

    let body = serde_json::to_vec(&json!({"workflow_run": {"id": 5}})).expect("json");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"").expect("key");
    mac.update(&body);
    let (code, text) = send(
        &router,
        "/webhooks/github",
        &[
            ("x-github-event", "workflow_run".into()),
            ("x-github-delivery", new_delivery_id()),
            (
                "x-hub-signature-256",
                format!("sha256={}", hex::encode(mac.finalize().into_bytes())),
            ),
        ],
        body,
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    let (code, text) = send(
        &router,
        "/webhooks/gitlab",
        &[
            ("x-gitlab-event", "Pipeline Hook".into()),
            ("x-gitlab-token", "too-short".into()),
        ],
        serde_json::to_vec(&json!({"object_attributes": {"id": 31}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{text}");
    let (code, text) = send(
        &router,
        "/webhooks/jenkins",
        &[("x-promotion-token", JENKINS_TOKEN.into())],
        serde_json::to_vec(&json!({"build": {"number": 12}})).expect("json"),
    )
    .await;
    assert_eq!(code, StatusCode::ACCEPTED, "jenkins keeps working: {text}");
    assert_eq!(wakes.next().await.map(|w| w.id), Some("12".to_string()));

    let rendered = metrics.render();
    for (endpoint, value) in [("github", 0), ("gitlab", 0), ("jenkins", 1)] {
        let line = format!("promotion_webhook_endpoint_enabled{{endpoint=\"{endpoint}\"}} {value}");
        assert!(rendered.contains(&line), "{line} in:\n{rendered}");
    }
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let probes = promotion_controller::probes::router(metrics, ready);
    let resp = probes
        .oneshot(
            Request::get("/readyz")
                .body(Body::empty())
                .expect("request"),
        )
        .await
        .expect("answer");
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "one endpoint off is no reason to restart"
    );
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("webhook endpoint github disabled")
            && text.contains("webhook endpoint gitlab disabled")
            && !text.contains("jenkins"),
        "{text}"
    );
}

/// Issue #12, item 9: an old signed delivery replayed after its tracker was deleted
/// does not recreate it, neither under its own id nor under a made-up one (the id is
/// not signed; the body is).
#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_delivery_is_ignored_even_after_its_tracker_is_deleted() {
    let s = setup("webhook-replay").await;
    s.prs().open(REPO, 42, SHA1);
    let event = pr_event("opened", SHA1, "2026-11-25T10:00:00Z");
    let id = new_delivery_id();
    let (code, text) = github_delivery(&s.router, "pull_request", &id, &event).await;
    assert_eq!(code, StatusCode::ACCEPTED, "{text}");
    assert!(text.contains("created"), "{text}");
    s.api
        .delete("acme-shop-pr-42", &Default::default())
        .await
        .expect("deleting the tracker");
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none()
    );

    let (code, text) = github_delivery(&s.router, "pull_request", &id, &event).await;
    assert_eq!(code, StatusCode::OK, "{text}");
    assert_eq!(text, "duplicate delivery, ignored");
    let (code, text) = github(&s.router, "pull_request", &event).await;
    assert_eq!(code, StatusCode::OK, "the same body under a new id: {text}");
    assert_eq!(text, "duplicate delivery, ignored");
    assert!(
        s.api
            .get_opt("acme-shop-pr-42")
            .await
            .expect("read")
            .is_none(),
        "the replay recreated the tracker"
    );
}

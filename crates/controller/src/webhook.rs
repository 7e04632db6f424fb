//! The webhook receiver: GitHub pull_request events create, move and close
//! trackers; CI completion callbacks wake the trackers that follow the run.
//!
//! Every request is authenticated (GitHub: HMAC-SHA256 of the body, compared in
//! constant time; GitLab and Jenkins: a shared token), bounded in size, and
//! idempotent: a replayed or out-of-order delivery changes nothing twice.

use crate::controller::Wake;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::channel::mpsc::UnboundedSender;
use hmac::{Hmac, Mac};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use promotion_api::{
    ApplicationRef, Provider, PullRequestTracker, PullRequestTrackerSpec, Repository,
};
use serde::Deserialize;
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Bodies above this are refused (413): GitHub caps payloads at 25 MB, ours are far smaller.
pub const MAX_BODY: usize = 1024 * 1024;
/// The annotation holding the `updated_at` of the last pull_request event applied.
pub const UPDATED_AT_ANNOTATION: &str = "promotion.io/pr-updated-at";
const FIELD_MANAGER: &str = "promotion-webhook";

/// Where a repository's PRs enter: namespace, entry environment and its application.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryConfig {
    /// The repository owner.
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// The namespace trackers are created in.
    pub namespace: String,
    /// The environment PRs enter at.
    pub environment: String,
    /// The entry environment's Argo CD application (`${PR_NUMBER}` is substituted in its name).
    pub application: ApplicationRef,
}

/// The shared secrets the webhook checks; never logged.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// GitHub's webhook secret (HMAC key).
    pub github: Option<Vec<u8>>,
    /// GitLab's `X-Gitlab-Token`.
    pub gitlab: Option<Vec<u8>>,
    /// The token Jenkins sends in `X-Promotion-Token`.
    pub jenkins: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |s: &Option<Vec<u8>>| if s.is_some() { "<redacted>" } else { "<unset>" };
        f.debug_struct("WebhookSecrets")
            .field("github", &set(&self.github))
            .field("gitlab", &set(&self.gitlab))
            .field("jenkins", &set(&self.jenkins))
            .finish()
    }
}

/// What the handlers share.
pub struct Webhooks {
    client: Client,
    repositories: Vec<RepositoryConfig>,
    secrets: Box<dyn Fn() -> WebhookSecrets + Send + Sync>,
    wake: UnboundedSender<Wake>,
}

impl Webhooks {
    /// A receiver that creates trackers through `client` and wakes the controller through `wake`.
    /// `secrets` is asked at each request, so a rotated Secret applies at once.
    pub fn new(
        client: Client,
        repositories: Vec<RepositoryConfig>,
        secrets: impl Fn() -> WebhookSecrets + Send + Sync + 'static,
        wake: UnboundedSender<Wake>,
    ) -> Self {
        Self {
            client,
            repositories,
            secrets: Box::new(secrets),
            wake,
        }
    }

    /// The routes: `/webhooks/github`, `/webhooks/gitlab`, `/webhooks/jenkins`.
    pub fn router(self) -> Router {
        Router::new()
            .route("/webhooks/github", post(github))
            .route("/webhooks/gitlab", post(gitlab))
            .route("/webhooks/jenkins", post(jenkins))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(Arc::new(self))
    }
}

/// A refusal: the status code and a reason, logged and returned.
fn refuse(code: StatusCode, why: impl Into<String>) -> Response {
    let why = why.into();
    tracing::warn!(status = code.as_u16(), reason = %why, "webhook refused");
    (code, why).into_response()
}

fn accepted(what: impl Into<String>) -> Response {
    let what = what.into();
    tracing::info!(%what, "webhook accepted");
    (StatusCode::ACCEPTED, what).into_response()
}

/// Verifies `X-Hub-Signature-256: sha256=<hex>` over the raw body, in constant time.
pub fn verify_github_signature(secret: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header.and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

fn token_matches(expected: &[u8], given: Option<&str>) -> bool {
    let Some(given) = given else {
        return false;
    };
    // HMACs keyed by each token over one message: equal exactly when the tokens are,
    // and verify_slice compares them in constant time whatever their lengths.
    let tag = |key: &[u8]| {
        Hmac::<Sha256>::new_from_slice(key).map(|mut m| {
            m.update(b"promotion-webhook-token");
            m
        })
    };
    match (tag(expected), tag(given.as_bytes())) {
        (Ok(want), Ok(got)) => got.verify_slice(&want.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: i64,
    pull_request: PullRequestPayload,
    repository: RepositoryPayload,
}

#[derive(Deserialize)]
struct PullRequestPayload {
    head: HeadPayload,
    updated_at: String,
}

#[derive(Deserialize)]
struct HeadPayload {
    sha: String,
}

#[derive(Deserialize)]
struct RepositoryPayload {
    name: String,
    owner: OwnerPayload,
}

#[derive(Deserialize)]
struct OwnerPayload {
    login: String,
}

#[derive(Deserialize)]
struct WorkflowRunEvent {
    workflow_run: IdPayload,
}

#[derive(Deserialize)]
struct IdPayload {
    id: u64,
}

async fn github(State(hooks): State<Arc<Webhooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = (hooks.secrets)().github else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no GitHub webhook secret is configured",
        );
    };
    if !verify_github_signature(&secret, &body, header(&headers, "x-hub-signature-256")) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the body",
        );
    }
    match header(&headers, "x-github-event") {
        Some("ping") => (StatusCode::OK, "pong").into_response(),
        Some("pull_request") => match serde_json::from_slice::<PullRequestEvent>(&body) {
            Ok(ev) => pull_request(&hooks, ev).await,
            Err(e) => refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed pull_request event: {e}"),
            ),
        },
        Some("workflow_run") => match serde_json::from_slice::<WorkflowRunEvent>(&body) {
            Ok(ev) => wake(
                &hooks,
                Provider::GithubActions,
                None,
                ev.workflow_run.id.to_string(),
            ),
            Err(e) => refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed workflow_run event: {e}"),
            ),
        },
        Some(other) => accepted(format!("event {other} ignored")),
        None => refuse(StatusCode::BAD_REQUEST, "no X-GitHub-Event header"),
    }
}

fn wake(hooks: &Webhooks, provider: Provider, job: Option<String>, id: String) -> Response {
    let what = format!("{provider:?} run {id} woke its trackers");
    let _ = hooks.wake.unbounded_send(Wake { provider, job, id });
    accepted(what)
}

/// The tracker name of a PR: `<repo>-pr-<number>`, as a DNS-1123 name.
pub fn tracker_name(repo: &str, number: i64) -> String {
    let mut base: String = repo
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "pr" } else { base };
    format!("{base}-pr-{number}")
}

async fn pull_request(hooks: &Webhooks, ev: PullRequestEvent) -> Response {
    let owner = ev.repository.owner.login;
    let repo_name = ev.repository.name;
    let Some(repo) = hooks
        .repositories
        .iter()
        .find(|r| r.owner.eq_ignore_ascii_case(&owner) && r.name.eq_ignore_ascii_case(&repo_name))
    else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("repository {owner}/{repo_name} is not configured"),
        );
    };
    let closed = match ev.action.as_str() {
        "opened" | "reopened" | "synchronize" => false,
        "closed" => true,
        other => return accepted(format!("pull_request action {other} ignored")),
    };
    let Ok(updated_at) = ev.pull_request.updated_at.parse::<Timestamp>() else {
        return refuse(
            StatusCode::BAD_REQUEST,
            "pull_request.updated_at is not a timestamp",
        );
    };
    let sha = ev.pull_request.head.sha;
    if !(7..=40).contains(&sha.len())
        || !sha.chars().all(|c| c.is_ascii_hexdigit())
        || ev.number <= 0
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "pull_request.head.sha or number is malformed",
        );
    }
    let name = tracker_name(&repo.name, ev.number);
    let api: Api<PullRequestTracker> = Api::namespaced(hooks.client.clone(), &repo.namespace);
    // Two tries: a concurrent delivery may move the tracker between our read and our write.
    for _ in 0..2 {
        let existing = match api.get_opt(&name).await {
            Ok(t) => t,
            Err(e) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("reading tracker {name}: {e}"),
                );
            }
        };
        if let Some(t) = &existing {
            let seen = t
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(UPDATED_AT_ANNOTATION))
                .and_then(|s| s.parse::<Timestamp>().ok());
            if seen.is_some_and(|seen| seen >= updated_at) {
                return accepted(format!("stale or replayed delivery for {name} ignored"));
            }
        }
        let number = ev.number.to_string();
        let application = ApplicationRef {
            name: repo.application.name.replace("${PR_NUMBER}", &number),
            ..repo.application.clone()
        };
        let mut tracker = PullRequestTracker::new(
            &name,
            PullRequestTrackerSpec {
                repository: Repository {
                    owner: repo.owner.clone(),
                    name: repo.name.clone(),
                },
                number: ev.number,
                head_sha: sha.clone(),
                environment: repo.environment.clone(),
                application,
                closed,
            },
        );
        tracker.metadata.annotations = Some(BTreeMap::from([(
            UPDATED_AT_ANNOTATION.to_string(),
            updated_at.to_string(),
        )]));
        // The resourceVersion makes the apply a compare-and-swap against what we just judged.
        tracker.metadata.resource_version = existing
            .as_ref()
            .and_then(|t| t.metadata.resource_version.clone());
        let mut body = match serde_json::to_value(&tracker) {
            Ok(v) => v,
            Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        };
        body["apiVersion"] = "promotion.io/v1alpha1".into();
        body["kind"] = "PullRequestTracker".into();
        if let Some(status) = body.as_object_mut() {
            status.remove("status");
        }
        match api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            )
            .await
        {
            Ok(_) => {
                let what = if closed { "closed" } else { "at" };
                return accepted(format!(
                    "tracker {}/{name} {what} {}",
                    repo.namespace,
                    &sha[..7]
                ));
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => {
                return refuse(
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("writing tracker {name}: {e}"),
                );
            }
        }
    }
    refuse(
        StatusCode::CONFLICT,
        format!("tracker {name} kept changing; GitHub will redeliver"),
    )
}

#[derive(Deserialize)]
struct GitLabPipelineEvent {
    object_attributes: IdPayload,
}

async fn gitlab(State(hooks): State<Arc<Webhooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = (hooks.secrets)().gitlab else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no GitLab webhook token is configured",
        );
    };
    if !token_matches(&secret, header(&headers, "x-gitlab-token")) {
        return refuse(StatusCode::UNAUTHORIZED, "X-Gitlab-Token does not match");
    }
    match header(&headers, "x-gitlab-event") {
        Some("Pipeline Hook") => match serde_json::from_slice::<GitLabPipelineEvent>(&body) {
            Ok(ev) => wake(
                &hooks,
                Provider::Gitlab,
                None,
                ev.object_attributes.id.to_string(),
            ),
            Err(e) => refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed Pipeline Hook: {e}"),
            ),
        },
        Some(other) => accepted(format!("event {other} ignored")),
        None => refuse(StatusCode::BAD_REQUEST, "no X-Gitlab-Event header"),
    }
}

#[derive(Deserialize)]
struct JenkinsNotification {
    /// The job's path, `job/a/job/b/` (the Notification plugin's `url`).
    #[serde(default)]
    url: Option<String>,
    build: JenkinsBuild,
}

/// `job/a/job/b/` -> `a/b`, the job path a policy names.
fn jenkins_job_path(url: &str) -> Option<String> {
    let parts: Vec<&str> = url.trim_matches('/').split('/').collect();
    let names: Vec<&str> = parts
        .chunks(2)
        .map(|c| match c {
            ["job", name] => Some(*name),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!names.is_empty()).then(|| names.join("/"))
}

#[derive(Deserialize)]
struct JenkinsBuild {
    number: u64,
}

async fn jenkins(State(hooks): State<Arc<Webhooks>>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(secret) = (hooks.secrets)().jenkins else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no Jenkins callback token is configured",
        );
    };
    if !token_matches(&secret, header(&headers, "x-promotion-token")) {
        return refuse(StatusCode::UNAUTHORIZED, "X-Promotion-Token does not match");
    }
    match serde_json::from_slice::<JenkinsNotification>(&body) {
        Ok(ev) => wake(
            &hooks,
            Provider::Jenkins,
            ev.url.as_deref().and_then(jenkins_job_path),
            ev.build.number.to_string(),
        ),
        Err(e) => refuse(
            StatusCode::BAD_REQUEST,
            format!("malformed Jenkins notification: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("any key length");
        mac.update(body);
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn github_signatures() {
        let body = br#"{"zen":"x"}"#;
        let good = sign(b"s3cret", body);
        assert!(verify_github_signature(b"s3cret", body, Some(&good)));
        assert!(!verify_github_signature(b"other", body, Some(&good)));
        assert!(!verify_github_signature(
            b"s3cret",
            b"tampered",
            Some(&good)
        ));
        assert!(!verify_github_signature(b"s3cret", body, Some("sha1=abc")));
        assert!(!verify_github_signature(b"s3cret", body, Some("sha256=zz")));
        assert!(!verify_github_signature(b"s3cret", body, None));
    }

    #[test]
    fn tokens() {
        assert!(token_matches(b"tok", Some("tok")));
        assert!(!token_matches(b"tok", Some("tok2")));
        assert!(!token_matches(b"tok", Some("")));
        assert!(!token_matches(b"tok", None));
    }

    #[test]
    fn jenkins_job_paths() {
        assert_eq!(
            jenkins_job_path("job/team-a/job/smoke/").as_deref(),
            Some("team-a/smoke")
        );
        assert_eq!(jenkins_job_path("job/smoke").as_deref(), Some("smoke"));
        assert_eq!(jenkins_job_path("view/all/job/smoke/"), None);
        assert_eq!(jenkins_job_path(""), None);
    }

    #[test]
    fn tracker_names_are_dns_labels() {
        assert_eq!(tracker_name("Shop_API", 42), "shop-api-pr-42");
        assert_eq!(tracker_name("--", 1), "pr-pr-1");
    }

    #[test]
    fn secrets_are_redacted() {
        let s = WebhookSecrets {
            github: Some(b"hunter2".to_vec()),
            gitlab: None,
            jenkins: Some(b"tok".to_vec()),
        };
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("tok\""),
            "{debug}"
        );
    }
}

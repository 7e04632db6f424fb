//! The webhook receiver: GitHub pull_request deliveries say which pull request to
//! read from the GitHub API (its state is applied by [`PullRequestSync`]); CI
//! completion callbacks wake the trackers that follow the run.
//!
//! Every request is authenticated (GitHub: HMAC-SHA256 of the raw body; GitLab and
//! Jenkins: a shared token; all compared in constant time), bounded in size, and
//! idempotent: a replayed or out-of-order delivery changes nothing twice.
//!
//! Fail closed: an endpoint whose secret is missing, empty or shorter than
//! [`MIN_SECRET_LEN`] answers 503 to everything; it never accepts an empty key.

pub mod deliveries;
mod github;
mod gitlab;
mod jenkins;
pub mod tls;

pub use deliveries::Deliveries;

pub use crate::pr_sync::PullRequestSync;
pub use github::verify_github_signature;
/// A repository's settings in the configuration file (the domain's type).
pub use promotion_core::pull_requests::RepositorySettings as RepositoryConfig;

use crate::controller::Wake;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use futures::channel::mpsc::UnboundedSender;
use hmac::{Hmac, Mac};
use promotion_api::Provider;
use sha2::Sha256;
use std::sync::Arc;

/// Bodies above this are refused (413): GitHub caps payloads at 25 MB, ours are far smaller.
pub const MAX_BODY: usize = 1024 * 1024;

/// The shortest webhook secret an endpoint accepts, in bytes (after trimming): 128 bits,
/// so it cannot be guessed; GitHub's own advice is a long random string.
pub const MIN_SECRET_LEN: usize = 16;

/// One webhook endpoint, with its own secret (a key of the webhook Secret).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Endpoint {
    /// `/webhooks/github`, key `github`.
    Github,
    /// `/webhooks/gitlab`, key `gitlab`.
    Gitlab,
    /// `/webhooks/jenkins`, key `jenkins`.
    Jenkins,
}

impl Endpoint {
    /// Every endpoint.
    pub const ALL: [Endpoint; 3] = [Endpoint::Github, Endpoint::Gitlab, Endpoint::Jenkins];

    /// The endpoint's name, which is also its key in the webhook Secret.
    pub fn name(self) -> &'static str {
        match self {
            Endpoint::Github => "github",
            Endpoint::Gitlab => "gitlab",
            Endpoint::Jenkins => "jenkins",
        }
    }
}

/// Why a secret cannot protect an endpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretProblem {
    /// No value at all.
    #[error("no secret is set")]
    Missing,
    /// A value too short to resist guessing (an empty one included).
    #[error("the secret is {0} bytes long; at least {MIN_SECRET_LEN} are required")]
    TooShort(usize),
}

/// Whether `secret` may protect an endpoint.
pub fn check_secret(secret: Option<&[u8]>) -> Result<&[u8], SecretProblem> {
    match secret {
        None => Err(SecretProblem::Missing),
        Some(s) if s.len() < MIN_SECRET_LEN => Err(SecretProblem::TooShort(s.len())),
        Some(s) => Ok(s),
    }
}

/// The shared secrets the webhook checks; never logged.
#[derive(Clone, Default)]
pub struct WebhookSecrets {
    /// GitHub's webhook secret (HMAC key).
    pub github: Option<Vec<u8>>,
    /// GitLab's `X-Gitlab-Token`.
    pub gitlab: Option<Vec<u8>>,
    /// The Jenkins callback token (Basic auth password, hook URL path, or `X-Promotion-Token`).
    pub jenkins: Option<Vec<u8>>,
}

impl WebhookSecrets {
    /// The secret of `endpoint`, as configured (perhaps unusable: see [`check_secret`]).
    pub fn get(&self, endpoint: Endpoint) -> Option<&[u8]> {
        match endpoint {
            Endpoint::Github => self.github.as_deref(),
            Endpoint::Gitlab => self.gitlab.as_deref(),
            Endpoint::Jenkins => self.jenkins.as_deref(),
        }
    }

    /// Whether each endpoint has a usable secret, i.e. is enabled.
    pub fn enabled(&self) -> Vec<(Endpoint, bool)> {
        Endpoint::ALL
            .iter()
            .map(|e| (*e, check_secret(self.get(*e)).is_ok()))
            .collect()
    }
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
    pull_requests: Option<Arc<PullRequestSync>>,
    secrets: Box<dyn Fn() -> WebhookSecrets + Send + Sync>,
    wake: UnboundedSender<Wake>,
    deliveries: Deliveries,
}

impl Webhooks {
    /// A receiver that wakes the controller through `wake`. `secrets` is asked at each
    /// request, so a rotated Secret applies at once. Pull request deliveries are
    /// refused until [`Webhooks::with_pull_requests`] says where to read them.
    pub fn new(
        secrets: impl Fn() -> WebhookSecrets + Send + Sync + 'static,
        wake: UnboundedSender<Wake>,
    ) -> Self {
        Self {
            pull_requests: None,
            secrets: Box::new(secrets),
            wake,
            deliveries: Deliveries::default(),
        }
    }

    /// Remembers GitHub deliveries in `deliveries` (the default: [`Deliveries::default`]).
    pub fn with_deliveries(mut self, deliveries: Deliveries) -> Self {
        self.deliveries = deliveries;
        self
    }

    /// The secret of `endpoint`, or [`Disabled`] when it has no usable one.
    fn secret(&self, endpoint: Endpoint) -> Result<Vec<u8>, Disabled> {
        let secrets = (self.secrets)();
        check_secret(secrets.get(endpoint))
            .map(<[u8]>::to_vec)
            .map_err(|_| Disabled(endpoint))
    }

    /// Pull request deliveries are applied through `sync` (GitHub's truth to trackers).
    pub fn with_pull_requests(mut self, sync: Arc<PullRequestSync>) -> Self {
        self.pull_requests = Some(sync);
        self
    }

    /// The routes: `/webhooks/github`, `/webhooks/gitlab`, `/webhooks/jenkins` and
    /// `/webhooks/jenkins/{token}` (for Jenkins setups that cannot send credentials).
    pub fn router(self) -> Router {
        Router::new()
            .route("/webhooks/github", post(github::receive))
            .route("/webhooks/gitlab", post(gitlab::receive))
            .route("/webhooks/jenkins", post(jenkins::receive))
            .route(
                "/webhooks/jenkins/{token}",
                post(jenkins::receive_with_token),
            )
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .with_state(Arc::new(self))
    }
}

/// An endpoint without a usable secret: it answers 503 to everything.
struct Disabled(Endpoint);

impl IntoResponse for Disabled {
    fn into_response(self) -> Response {
        let name = self.0.name();
        // The caller learns the endpoint is off, not how long its secret is.
        refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "webhook endpoint {name} is disabled: its secret (key {name:?} of the webhook Secret) \
                 is missing or shorter than {MIN_SECRET_LEN} bytes; the controller's log says which"
            ),
        )
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

/// Whether `given` is the `expected` token, in time independent of where they differ.
fn token_matches(expected: &[u8], given: Option<&[u8]>) -> bool {
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
    match (tag(expected), tag(given)) {
        (Ok(want), Ok(got)) => got.verify_slice(&want.finalize().into_bytes()).is_ok(),
        _ => false,
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn wake(hooks: &Webhooks, provider: Provider, job: Option<String>, id: String) -> Response {
    let what = format!("{provider:?} run {id} woke its trackers");
    let _ = hooks.wake.unbounded_send(Wake { provider, job, id });
    accepted(what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_shorter_than_the_minimum_are_refused() {
        assert_eq!(check_secret(None), Err(SecretProblem::Missing));
        assert_eq!(check_secret(Some(b"")), Err(SecretProblem::TooShort(0)));
        assert_eq!(
            check_secret(Some(&[b'x'; MIN_SECRET_LEN - 1])),
            Err(SecretProblem::TooShort(MIN_SECRET_LEN - 1))
        );
        assert!(check_secret(Some(&[b'x'; MIN_SECRET_LEN])).is_ok());
    }

    #[test]
    fn tokens() {
        assert!(token_matches(b"tok", Some(b"tok")));
        assert!(!token_matches(b"tok", Some(b"tok2")));
        assert!(!token_matches(b"tok", Some(b"")));
        assert!(!token_matches(b"tok", None));
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

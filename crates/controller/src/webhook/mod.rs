//! The webhook receiver: GitHub pull_request deliveries say which pull request to
//! read from the GitHub API (its state is applied by [`PullRequestSync`]); CI
//! completion callbacks wake the trackers that follow the run.
//!
//! Every request is authenticated (GitHub: HMAC-SHA256 of the raw body; GitLab and
//! Jenkins: a shared token; all compared in constant time), bounded in size, and
//! idempotent: a replayed or out-of-order delivery changes nothing twice.

mod github;
mod gitlab;
mod jenkins;

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
        }
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

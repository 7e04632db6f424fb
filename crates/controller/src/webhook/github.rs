//! `/webhooks/github`: signed deliveries, as JSON or as the form GitHub sends with
//! content type `application/x-www-form-urlencoded` (the JSON in its `payload` field).
//! A pull_request delivery only names the PR: its state is read from the API.

use super::{Endpoint, Webhooks, accepted, header, refuse, wake};
use crate::pr_sync::{Applied, SyncError};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hmac::{Hmac, Mac};
use promotion_api::Provider;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::sync::Arc;

/// The pull_request actions that can change what a tracker follows (head, state, labels).
const ACTIONS_TO_LOOK_AT: &[&str] = &[
    "opened",
    "reopened",
    "synchronize",
    "closed",
    "edited",
    "labeled",
    "unlabeled",
];

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

/// The event's JSON: the body itself, or the `payload` field of a form body.
fn event_json<'a>(headers: &HeaderMap, body: &'a [u8]) -> Result<Cow<'a, [u8]>, String> {
    let form = header(headers, "content-type").is_some_and(|t| {
        t.trim()
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
    });
    if !form {
        return Ok(Cow::Borrowed(body));
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "payload")
        .map(|(_, v)| Cow::Owned(v.into_owned().into_bytes()))
        .ok_or_else(|| "a form-encoded delivery without a payload field".to_string())
}

#[derive(Deserialize)]
struct PullRequestEvent {
    action: String,
    number: u64,
    repository: RepositoryPayload,
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

/// The longest `X-GitHub-Delivery` kept (GitHub's are 36-character GUIDs).
const MAX_DELIVERY_ID: usize = 128;

pub(super) async fn receive(
    State(hooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = match hooks.secret(Endpoint::Github) {
        Ok(s) => s,
        Err(disabled) => return disabled.into_response(),
    };
    // The signature covers the body as sent, form encoding included.
    if !verify_github_signature(&secret, &body, header(&headers, "x-hub-signature-256")) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "X-Hub-Signature-256 does not match the body",
        );
    }
    let delivery = match header(&headers, "x-github-delivery").map(str::trim) {
        Some(d) if !d.is_empty() && d.len() <= MAX_DELIVERY_ID => d,
        _ => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "no X-GitHub-Delivery header (or one longer than 128 characters)",
            );
        }
    };
    // The id is not signed; the body is, so a replay under a new id is caught by its digest.
    let keys = [
        format!("id:{delivery}"),
        format!("body:{}", hex::encode(Sha256::digest(&body))),
    ];
    if !hooks.deliveries.claim(&keys) {
        tracing::info!(%delivery, "duplicate GitHub delivery ignored");
        return (StatusCode::OK, "duplicate delivery, ignored").into_response();
    }
    let answer = handle(&hooks, &headers, &body).await;
    if !answer.status().is_success() {
        // Not handled: GitHub's redelivery of it must be.
        hooks.deliveries.forget(&keys);
    }
    answer
}

/// One authenticated, first-seen delivery.
async fn handle(hooks: &Webhooks, headers: &HeaderMap, body: &[u8]) -> Response {
    let json = match event_json(headers, body) {
        Ok(j) => j,
        Err(why) => return refuse(StatusCode::BAD_REQUEST, why),
    };
    match header(headers, "x-github-event") {
        Some("ping") => (StatusCode::OK, "pong").into_response(),
        Some("pull_request") => match serde_json::from_slice::<PullRequestEvent>(&json) {
            Ok(ev) => pull_request(hooks, ev).await,
            Err(e) => refuse(
                StatusCode::BAD_REQUEST,
                format!("malformed pull_request event: {e}"),
            ),
        },
        Some("workflow_run") => match serde_json::from_slice::<WorkflowRunEvent>(&json) {
            Ok(ev) => wake(
                hooks,
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

async fn pull_request(hooks: &Webhooks, ev: PullRequestEvent) -> Response {
    let owner = ev.repository.owner.login;
    let name = ev.repository.name;
    let Some(sync) = &hooks.pull_requests else {
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "no github connection is configured to read pull requests from",
        );
    };
    let Some(repo) = sync.repository(&owner, &name) else {
        return refuse(
            StatusCode::NOT_FOUND,
            format!("repository {owner}/{name} is not configured"),
        );
    };
    if ev.number == 0 {
        return refuse(StatusCode::BAD_REQUEST, "pull_request number is 0");
    }
    if !ACTIONS_TO_LOOK_AT.contains(&ev.action.as_str()) {
        return accepted(format!("pull_request action {} ignored", ev.action));
    }
    match sync.sync(repo, ev.number).await {
        Ok(Applied::Created(t)) => accepted(format!("tracker {t} created from GitHub's state")),
        Ok(Applied::Updated(t)) => accepted(format!("tracker {t} updated to GitHub's state")),
        Ok(Applied::Unchanged(t)) => accepted(format!("tracker {t} unchanged")),
        Ok(Applied::NotTracked(why)) => accepted(format!("not tracked: {why}")),
        Err(e @ (SyncError::GitHub { .. } | SyncError::NotFound(_) | SyncError::Invalid(_))) => {
            refuse(StatusCode::BAD_GATEWAY, e.to_string())
        }
        Err(e @ SyncError::Kubernetes { .. }) => {
            refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ SyncError::Conflict(_)) => refuse(StatusCode::CONFLICT, e.to_string()),
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
    fn form_deliveries_carry_the_json_in_payload() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            "application/x-www-form-urlencoded".parse().expect("header"),
        );
        let body = b"payload=%7B%22zen%22%3A%22a+b%22%7D";
        assert_eq!(
            event_json(&headers, body).expect("payload").as_ref(),
            br#"{"zen":"a b"}"#
        );
        assert!(event_json(&headers, b"other=1").is_err());
        let json = HeaderMap::new();
        assert_eq!(event_json(&json, b"{}").expect("json").as_ref(), b"{}");
    }
}

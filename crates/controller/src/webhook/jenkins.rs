//! `/webhooks/jenkins`: build notifications of the Jenkins Notification plugin wake
//! the trackers that follow the build.
//!
//! The plugin sends only `Content-Type` and, when the endpoint URL has userinfo, HTTP
//! Basic auth from it; so the token is accepted as the Basic auth password
//! (`https://jenkins:<token>@controller/webhooks/jenkins`, preferred), as the last path
//! segment (`/webhooks/jenkins/<token>`), or in `X-Promotion-Token` (scripts, curl).

use super::{Endpoint, Webhooks, header, refuse, token_matches, wake};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use promotion_api::Provider;
use serde::Deserialize;
use std::sync::Arc;

/// A notification as the plugin documents it (`name`, `url`, `build.number`, `build.phase`, ...).
#[derive(Deserialize)]
struct Notification {
    /// The job's path, `job/a/job/b%20c/` (URL-encoded, as Jenkins writes URLs).
    #[serde(default)]
    url: Option<String>,
    build: Build,
}

#[derive(Deserialize)]
struct Build {
    number: u64,
}

/// `job/a/job/b%20c/` -> `a/b c`, the job path a policy names (each name URL-decoded).
fn job_path(url: &str) -> Option<String> {
    let parts: Vec<&str> = url.trim_matches('/').split('/').collect();
    let names: Vec<String> = parts
        .chunks(2)
        .map(|c| match c {
            ["job", name] => percent_encoding::percent_decode_str(name)
                .decode_utf8()
                .ok()
                .map(|n| n.into_owned()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    (!names.is_empty()).then(|| names.join("/"))
}

/// The password of `Authorization: Basic base64(user:password)`.
fn basic_password(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = header(headers, "authorization")?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let colon = decoded.iter().position(|b| *b == b':')?;
    Some(decoded[colon + 1..].to_vec())
}

pub(super) async fn receive(
    State(hooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let given = basic_password(&headers)
        .or_else(|| header(&headers, "x-promotion-token").map(|t| t.as_bytes().to_vec()));
    notification(&hooks, given.as_deref(), &body)
}

pub(super) async fn receive_with_token(
    State(hooks): State<Arc<Webhooks>>,
    Path(token): Path<String>,
    body: Bytes,
) -> Response {
    notification(&hooks, Some(token.as_bytes()), &body)
}

fn notification(hooks: &Webhooks, given: Option<&[u8]>, body: &[u8]) -> Response {
    let secret = match hooks.secret(Endpoint::Jenkins) {
        Ok(s) => s,
        Err(disabled) => return disabled.into_response(),
    };
    if !token_matches(&secret, given) {
        return refuse(
            StatusCode::UNAUTHORIZED,
            "the Jenkins callback token does not match (Basic auth password, /webhooks/jenkins/<token>, or X-Promotion-Token)",
        );
    }
    match serde_json::from_slice::<Notification>(body) {
        Ok(ev) => wake(
            hooks,
            Provider::Jenkins,
            ev.url.as_deref().and_then(job_path),
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

    #[test]
    fn job_paths_are_decoded() {
        assert_eq!(
            job_path("job/team-a/job/smoke/").as_deref(),
            Some("team-a/smoke")
        );
        assert_eq!(job_path("job/smoke").as_deref(), Some("smoke"));
        assert_eq!(
            job_path("job/team%20a/job/smoke%20tests/").as_deref(),
            Some("team a/smoke tests")
        );
        assert_eq!(job_path("view/all/job/smoke/"), None);
        assert_eq!(job_path("job/%FF/"), None, "not UTF-8");
        assert_eq!(job_path(""), None);
    }

    #[test]
    fn basic_auth_gives_the_password() {
        let mut h = HeaderMap::new();
        // base64("jenkins:s3:cret"): the password may hold colons.
        h.insert(
            "authorization",
            "Basic amVua2luczpzMzpjcmV0".parse().expect("header"),
        );
        assert_eq!(basic_password(&h).as_deref(), Some(&b"s3:cret"[..]));
        h.insert("authorization", "Bearer abc".parse().expect("header"));
        assert_eq!(basic_password(&h), None);
        h.insert("authorization", "Basic !!!".parse().expect("header"));
        assert_eq!(basic_password(&h), None);
    }
}

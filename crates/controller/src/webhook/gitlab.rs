//! `/webhooks/gitlab`: Pipeline Hooks with `X-Gitlab-Token` wake the pipeline's trackers.

use super::{Endpoint, Webhooks, accepted, header, refuse, token_matches, wake};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use promotion_api::Provider;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
struct PipelineEvent {
    object_attributes: IdPayload,
}

#[derive(Deserialize)]
struct IdPayload {
    id: u64,
}

pub(super) async fn receive(
    State(hooks): State<Arc<Webhooks>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secret = match hooks.secret(Endpoint::Gitlab) {
        Ok(s) => s,
        Err(disabled) => return disabled.into_response(),
    };
    if !token_matches(
        &secret,
        header(&headers, "x-gitlab-token").map(str::as_bytes),
    ) {
        return refuse(StatusCode::UNAUTHORIZED, "X-Gitlab-Token does not match");
    }
    match header(&headers, "x-gitlab-event") {
        Some("Pipeline Hook") => match serde_json::from_slice::<PipelineEvent>(&body) {
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

//! `/metrics`, `/healthz` and `/readyz` on their own port.

use crate::metrics::Metrics;
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Clone)]
struct Probes {
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
}

/// The probe and metrics routes. Ready once this replica leads and its caches are
/// synced; a standby is healthy but not ready (hence the Recreate strategy in deploy/).
pub fn router(metrics: Arc<Metrics>, ready: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/metrics", get(render))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .with_state(Probes { metrics, ready })
}

async fn render(State(p): State<Probes>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        p.metrics.render(),
    )
}

/// Ready while leading with synced caches. A webhook endpoint without a usable secret
/// does not make the replica unready (reconciles, polls and the resync still work, and
/// restarting would not bring the secret); the answer names it, as the metric does.
async fn readyz(State(p): State<Probes>) -> impl IntoResponse {
    let ready = p.ready.load(Ordering::SeqCst);
    let mut text = if ready {
        "ok".to_string()
    } else {
        "caches not synced yet".to_string()
    };
    for (endpoint, enabled) in p.metrics.webhook_endpoints() {
        if !enabled {
            text.push_str(&format!(
                "\nwebhook endpoint {} disabled: no usable secret",
                endpoint.name()
            ));
        }
    }
    let code = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, text)
}

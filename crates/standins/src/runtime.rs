//! What every stand-in server shares: the script, the journal, the callback
//! notifier, the stop signal, and small HTTP helpers.

use crate::callbacks::Notifier;
use crate::journal::Journal;
use crate::script::CiScript;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;

/// The context of every server.
#[derive(Clone)]
pub(crate) struct Shared {
    pub script: CiScript,
    pub journal: Journal,
    pub notifier: Option<Arc<Notifier>>,
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    /// Runs `f` once `after` has passed, unless the stand-ins stop first.
    ///
    /// One timer task per run keeps every request O(1): nothing scans for runs due.
    pub fn after<F>(&self, after: Duration, f: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = tokio::time::sleep(after) => f.await,
                _ = stopped(&mut stop) => {}
            }
        });
    }
}

/// Resolves once the stand-ins stop (the flag is set or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `router` on `listener` until the stand-ins stop.
pub(crate) fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let shutdown = async move { stopped(&mut stop).await };
        if let Err(e) = axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(error = %e, "a stand-in server stopped");
        }
    })
}

/// A listener on 127.0.0.1 at a free port, and its base URL.
pub(crate) async fn bind() -> anyhow::Result<(tokio::net::TcpListener, String)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    Ok((listener, format!("http://{addr}")))
}

/// RFC 3339 in UTC to the second, as GitHub writes times.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// A small plain-text page for a run's web link, so the demo's links lead somewhere.
pub(crate) fn page(text: String) -> Response {
    let mut resp = (StatusCode::OK, text).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// The header's value, when it is text.
pub(crate) fn header_str<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Compares a presented credential with the expected one without an early exit,
/// as a real server would, even though these are test credentials.
pub(crate) fn same(expected: &str, given: &str) -> bool {
    let (a, b) = (expected.as_bytes(), given.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

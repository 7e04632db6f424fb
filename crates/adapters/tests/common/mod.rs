//! Local HTTP servers for the adapters' tests: bound to 127.0.0.1 only.

#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use promotion_adapters::HttpSettings;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Timeouts and backoff short enough for tests.
pub fn fast_http() -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(5),
        // Generous, so a loaded machine does not fail a test; the timeout tests set their own.
        request_timeout: Duration::from_secs(5),
        read_retries: 3,
        retry_min_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
        max_rate_limit_wait: Duration::from_millis(100),
    }
}

/// A canned answer that replaces the next request's real one.
#[derive(Clone, Debug)]
pub struct Canned {
    pub status: StatusCode,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
}

impl Canned {
    pub fn status(status: u16) -> Self {
        Self {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Vec::new(),
            body: String::new(),
        }
    }

    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    fn into_response(self) -> Response {
        let mut resp = (self.status, self.body).into_response();
        for (name, value) in self.headers {
            resp.headers_mut().append(
                HeaderName::from_static(name),
                HeaderValue::from_str(&value).unwrap(),
            );
        }
        resp
    }
}

/// What every fake shares: a log of the requests it saw and canned answers to inject.
#[derive(Default)]
pub struct Recorder {
    log: Mutex<Vec<String>>,
    canned: Mutex<VecDeque<Canned>>,
}

impl Recorder {
    /// Answers the next requests (any path) with these, in order.
    pub fn inject(&self, answers: impl IntoIterator<Item = Canned>) {
        self.canned.lock().unwrap().extend(answers);
    }

    /// `METHOD /path` of every request seen, in order.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many requests were `METHOD /path` (query ignored).
    pub fn count(&self, call: &str) -> usize {
        self.log().iter().filter(|c| c.as_str() == call).count()
    }

    pub fn clear(&self) {
        self.log.lock().unwrap().clear();
    }
}

async fn record(State(rec): State<Arc<Recorder>>, req: Request, next: Next) -> Response {
    rec.log
        .lock()
        .unwrap()
        .push(format!("{} {}", req.method(), req.uri().path()));
    let canned = rec.canned.lock().unwrap().pop_front();
    match canned {
        Some(c) => c.into_response(),
        None => next.run(req).await,
    }
}

/// Serves `router` on 127.0.0.1 at a free port, logging through `rec`; returns the base URL.
pub async fn serve(router: Router, rec: Arc<Recorder>) -> String {
    let router = router.layer(middleware::from_fn_with_state(rec, record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

/// A server on 127.0.0.1 that accepts connections and never answers; returns the base URL.
pub async fn never_answers() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    format!("http://{addr}")
}

/// Guards a call that must end by itself (a test's safety net, not an assertion on time).
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the call did not end by itself")
}

pub fn empty() -> Body {
    Body::empty()
}

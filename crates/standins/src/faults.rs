//! The fault layer every stand-in server sits behind: it counts and records
//! every request (repeated ones included), and answers some of them as a test,
//! the demo or a chaos run scripts: a reply of its own (a 429 with
//! `Retry-After`, a 5xx, a malformed body), a hang, a delay, or the stand-in's
//! own handling followed by another answer (a trigger that starts a run but
//! answers 504). It also holds how late a new run shows in `find`'s listings.

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The largest request body the layer records; stand-ins never receive more.
const MAX_RECORDED_BODY: usize = 1 << 20;

/// An answer of the fault layer's own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// Headers, in order.
    pub headers: Vec<(String, String)>,
    /// The body, sent as is.
    pub body: String,
}

impl Reply {
    /// A reply with `status`, no headers and an empty body.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: String::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets a JSON body and its content type.
    pub fn json(self, body: &serde_json::Value) -> Self {
        self.header("content-type", "application/json; charset=utf-8")
            .body(body.to_string())
    }

    fn into_response(self) -> Response {
        let mut resp = Response::new(Body::from(self.body));
        *resp.status_mut() =
            StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        for (name, value) in self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(&value),
            ) {
                resp.headers_mut().append(n, v);
            }
        }
        resp
    }
}

/// What happens to one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer this; the stand-in never sees the request (nothing happens).
    Reply(Reply),
    /// Never answer (until the stand-ins stop); nothing happens.
    Hang,
    /// Wait this long, then let the stand-in handle the request.
    Delay(Duration),
    /// Let the stand-in handle the request (it takes effect), then answer this
    /// instead of its own answer: a trigger that started a run but answers 504.
    AfterEffect(Reply),
}

impl Fault {
    /// A reply of `status` with no body.
    pub fn status(status: u16) -> Self {
        Self::Reply(Reply::status(status))
    }
}

impl From<Reply> for Fault {
    fn from(reply: Reply) -> Self {
        Self::Reply(reply)
    }
}

/// One request a stand-in received.
#[derive(Clone, Debug)]
pub struct Call {
    /// The method.
    pub method: Method,
    /// The path, without the query.
    pub path: String,
    /// The query, if any.
    pub query: Option<String>,
    /// The headers (credentials included: these are the stand-ins' own).
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
}

impl Call {
    /// The body as JSON (`Null` when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// The body as form fields.
    pub fn form(&self) -> Vec<(String, String)> {
        url::form_urlencoded::parse(&self.body)
            .into_owned()
            .collect()
    }

    /// A header's value, when it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Which requests a rule or a count is about: a method and a path, where a
/// path ending in `*` matches every path that starts with what comes before.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    method: Method,
    path: String,
}

impl Route {
    fn new(method: &str, path: &str) -> Self {
        Self {
            method: Method::from_bytes(method.as_bytes()).unwrap_or(Method::GET),
            path: path.to_owned(),
        }
    }

    fn matches(&self, method: &Method, path: &str) -> bool {
        if self.method != *method {
            return false;
        }
        match self.path.strip_suffix('*') {
            Some(prefix) => path.starts_with(prefix),
            None => self.path == path,
        }
    }
}

/// When a new run shows in the listings `find` reads.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FindLag {
    /// At once.
    #[default]
    None,
    /// Only after this many listings have left it out.
    Listings(usize),
    /// Only once it is this old.
    After(Duration),
}

#[derive(Default)]
struct Rules {
    /// Faults used up one per matching request, in order.
    once: Vec<(Route, VecDeque<Fault>)>,
    /// Faults applied to every matching request.
    always: Vec<(Route, Fault)>,
    calls: Vec<Call>,
    find_lag: FindLag,
}

/// One stand-in's fault layer: scripted faults, and every call it received.
/// Cloneable; clones share everything.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<Mutex<Rules>>,
}

impl std::fmt::Debug for Faults {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Faults")
            .field("calls", &self.lock().calls.len())
            .finish_non_exhaustive()
    }
}

impl Faults {
    fn lock(&self) -> MutexGuard<'_, Rules> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next requests to `method path` meet these faults, one each, in order;
    /// later ones are handled as usual. Adds to what is already scripted there.
    pub fn script(&self, method: &str, path: &str, faults: impl IntoIterator<Item = Fault>) {
        let route = Route::new(method, path);
        let mut rules = self.lock();
        let faults: Vec<Fault> = faults.into_iter().collect();
        match rules.once.iter_mut().find(|(r, _)| *r == route) {
            Some((_, queue)) => queue.extend(faults),
            None => rules.once.push((route, faults.into())),
        }
    }

    /// Every request to `method path` meets `fault` until [`Faults::clear`].
    pub fn always(&self, method: &str, path: &str, fault: Fault) {
        self.lock().always.push((Route::new(method, path), fault));
    }

    /// Removes every scripted fault (the calls seen are kept).
    pub fn clear(&self) {
        let mut rules = self.lock();
        rules.once.clear();
        rules.always.clear();
    }

    /// Sets when new runs show in `find`'s listings.
    pub fn set_find_lag(&self, lag: FindLag) {
        self.lock().find_lag = lag;
    }

    /// When new runs show in `find`'s listings.
    pub fn find_lag(&self) -> FindLag {
        self.lock().find_lag
    }

    /// Every request received, in order, faulted ones included.
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// How many requests matched `method path` (a path ending in `*` is a prefix).
    pub fn count(&self, method: &str, path: &str) -> usize {
        let route = Route::new(method, path);
        self.lock()
            .calls
            .iter()
            .filter(|c| route.matches(&c.method, &c.path))
            .count()
    }

    /// The requests that matched `method path`, in order.
    pub fn calls_to(&self, method: &str, path: &str) -> Vec<Call> {
        let route = Route::new(method, path);
        self.lock()
            .calls
            .iter()
            .filter(|c| route.matches(&c.method, &c.path))
            .cloned()
            .collect()
    }

    /// Forgets the calls seen so far.
    pub fn forget_calls(&self) {
        self.lock().calls.clear();
    }

    /// Records the call and picks its fault.
    fn enter(&self, call: Call) -> Option<Fault> {
        let mut rules = self.lock();
        let fault = rules
            .once
            .iter_mut()
            .find(|(r, q)| r.matches(&call.method, &call.path) && !q.is_empty())
            .and_then(|(_, q)| q.pop_front())
            .or_else(|| {
                rules
                    .always
                    .iter()
                    .find(|(r, _)| r.matches(&call.method, &call.path))
                    .map(|(_, f)| f.clone())
            });
        rules.calls.push(call);
        fault
    }
}

/// Whether a run created at `created`, left out of `listings_skipped` listings so
/// far, shows in this listing; counts the listing when it does not.
pub(crate) fn visible(lag: FindLag, created: Instant, listings_skipped: &mut usize) -> bool {
    match lag {
        FindLag::None => true,
        FindLag::After(d) => created.elapsed() >= d,
        FindLag::Listings(n) if *listings_skipped >= n => true,
        FindLag::Listings(_) => {
            *listings_skipped += 1;
            false
        }
    }
}

/// The middleware: records the request, then applies its fault, if any.
pub(crate) async fn layer(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_RECORDED_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let fault = faults.enter(Call {
        method: parts.method.clone(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers.clone(),
        body: bytes.clone(),
    });
    let request = Request::from_parts(parts, Body::from(bytes));
    match fault {
        None => next.run(request).await,
        Some(Fault::Reply(reply)) => reply.into_response(),
        Some(Fault::Hang) => std::future::pending().await,
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            next.run(request).await
        }
        Some(Fault::AfterEffect(reply)) => {
            let _ = next.run(request).await;
            reply.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: Method, path: &str) -> Call {
        Call {
            method,
            path: path.to_owned(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        }
    }

    #[test]
    fn scripted_faults_are_used_once_in_order_and_every_call_counts() {
        let f = Faults::default();
        f.script("GET", "/a", [Fault::status(500), Fault::status(502)]);
        f.always("POST", "/b/*", Fault::Hang);
        assert_eq!(f.enter(call(Method::GET, "/a")), Some(Fault::status(500)));
        assert_eq!(f.enter(call(Method::GET, "/x")), None);
        assert_eq!(f.enter(call(Method::GET, "/a")), Some(Fault::status(502)));
        assert_eq!(f.enter(call(Method::GET, "/a")), None);
        assert_eq!(f.enter(call(Method::POST, "/b/1")), Some(Fault::Hang));
        assert_eq!(f.enter(call(Method::POST, "/b/2")), Some(Fault::Hang));
        assert_eq!(f.count("GET", "/a"), 3);
        assert_eq!(f.count("POST", "/b/*"), 2);
        assert_eq!(f.calls().len(), 6);
        f.clear();
        assert_eq!(f.enter(call(Method::POST, "/b/3")), None);
    }

    #[test]
    fn a_lagging_run_shows_after_the_listings_it_was_left_out_of() {
        let mut skipped = 0;
        let now = Instant::now();
        let lag = FindLag::Listings(2);
        assert!(!visible(lag, now, &mut skipped));
        assert!(!visible(lag, now, &mut skipped));
        assert!(visible(lag, now, &mut skipped));
        assert!(visible(FindLag::None, now, &mut 0));
        assert!(!visible(
            FindLag::After(Duration::from_secs(3600)),
            now,
            &mut 0
        ));
    }
}

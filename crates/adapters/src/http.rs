//! The HTTP glue every CI adapter shares: one client per connection, timeouts,
//! no redirects, retries for reads only, and errors that name the connection.

use crate::connections::{HttpSettings, SecretString};
use backon::{ExponentialBuilder, Retryable};
use promotion_core::ports::{ErrorKind, PortError};
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime};
use url::Url;

/// How many characters of an error body go into a message.
const BODY_EXCERPT: usize = 200;

/// How a request authenticates.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// HTTP basic authentication (Jenkins user and API token).
    Basic {
        user: String,
        password: SecretString,
    },
    /// A token in a header of its own (GitLab's `PRIVATE-TOKEN`).
    Header {
        name: HeaderName,
        value: SecretString,
    },
    /// The credentials travel in the body (GitLab's trigger token).
    None,
}

/// What goes in a request body.
#[derive(Clone)]
pub(crate) enum Body {
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// `application/json`.
    Json(serde_json::Value),
}

/// A body can hold a secret (GitLab's trigger token), so Debug shows no values.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Form(fields) => f
                .debug_tuple("Form")
                .field(&fields.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
            Self::Json(_) => f.write_str("Json(<redacted>)"),
        }
    }
}

/// One request, described so that it can be sent again (reads) and named in errors.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: Method,
    /// Path and query relative to the connection's base URL, starting with `/`.
    pub path: String,
    pub auth: Auth,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Body>,
}

impl Request {
    /// A request without headers or body.
    pub fn new(method: Method, path: impl Into<String>, auth: Auth) -> Self {
        Self {
            method,
            path: path.into(),
            auth,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }

    /// `POST /job/x/buildWithParameters`: the query is left out, it can be long.
    pub fn describe(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {}", self.method, path)
    }
}

/// A response whose status was checked, with its body read.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Answer {
    /// The body as JSON, or a clear error naming the call.
    pub fn json<T: DeserializeOwned>(
        &self,
        http: &HttpClient,
        req: &Request,
    ) -> Result<T, PortError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            PortError::permanent(format!(
                "connection {}: malformed answer from {}: {e}",
                http.connection,
                req.describe()
            ))
        })
    }
}

/// A reqwest client bound to one connection's base URL and settings.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    connection: String,
    base: Url,
    client: reqwest::Client,
    settings: HttpSettings,
    /// What to check when the server answers 401, e.g. "check the user and API token".
    auth_hint: &'static str,
}

impl HttpClient {
    /// A client for `connection` at `base`.
    pub fn new(
        connection: &str,
        base: &Url,
        settings: &HttpSettings,
        auth_hint: &'static str,
    ) -> Result<Self, PortError> {
        let client = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // Jenkins answers 303 to a merged queue item: we must see it, not follow it.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("promotion-controller/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| {
                PortError::permanent(format!(
                    "connection {connection}: cannot build the HTTP client: {e}"
                ))
            })?;
        Ok(Self {
            connection: connection.to_owned(),
            base: base.clone(),
            client,
            settings: settings.clone(),
            auth_hint,
        })
    }

    /// The connection's name, for messages.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// `path` (with query) under the base URL, keeping the base's own path prefix.
    pub fn url(&self, path: &str) -> Result<Url, PortError> {
        let joined = format!(
            "{}/{}",
            self.base.as_str().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        Url::parse(&joined).map_err(|e| {
            PortError::permanent(format!(
                "connection {}: invalid URL for {path}: {e}",
                self.connection
            ))
        })
    }

    /// Sends a read, retrying transient failures with jittered exponential backoff
    /// and waiting out short rate limits; the answer has a 2xx status.
    pub async fn read(&self, req: &Request) -> Result<Answer, PortError> {
        self.read_accepting(req, false).await
    }

    /// Like `read_json`, but a 404 is `None`: the thing is gone, or never was.
    pub async fn read_json_if_found<T: DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<Option<T>, PortError> {
        let answer = self.read_accepting(req, true).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        answer.json(self, req).map(Some)
    }

    /// A retried read whose answer is a success, or a 404 when `not_found_ok`.
    async fn read_accepting(&self, req: &Request, not_found_ok: bool) -> Result<Answer, PortError> {
        let backoff = ExponentialBuilder::default()
            .with_jitter()
            .with_min_delay(self.settings.retry_min_delay)
            .with_max_delay(self.settings.retry_max_delay)
            .with_max_times(self.settings.read_retries);
        let max_wait = self.settings.max_rate_limit_wait;
        let attempt = || async {
            let resp = self.send(req).await.map_err(SendError::for_read)?;
            let answer = self.receive(resp, req).await?;
            if answer.status.is_success()
                || (not_found_ok && answer.status == StatusCode::NOT_FOUND)
            {
                Ok(answer)
            } else {
                Err(self.status_error(&answer, req))
            }
        };
        attempt
            .retry(backoff)
            .when(|e: &PortError| e.kind == ErrorKind::Transient)
            .adjust(move |e, next| match (e.retry_after, next) {
                // A longer wait is left to the engine's requeue, with retry_after set.
                (Some(wait), Some(_)) if wait <= max_wait => Some(wait),
                (Some(_), _) => None,
                (None, next) => next,
            })
            .notify(|e, wait| {
                tracing::debug!(connection = %self.connection, call = %req.describe(), error = %e, ?wait, "retrying read");
            })
            .await
    }

    /// Sends a read and decodes its JSON body.
    pub async fn read_json<T: DeserializeOwned>(&self, req: &Request) -> Result<T, PortError> {
        self.read(req).await?.json(self, req)
    }

    /// Sends a request once and returns the raw response, whatever its status.
    pub async fn send(&self, req: &Request) -> Result<Response, SendError> {
        let url = self.url(&req.path).map_err(SendError::Invalid)?;
        let mut builder = self.client.request(req.method.clone(), url);
        builder = match &req.auth {
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password.expose())),
            Auth::Header { name, value } => {
                let mut value = HeaderValue::from_str(value.expose()).map_err(|_| {
                    SendError::Invalid(PortError::permanent(format!(
                        "connection {}: the token holds characters a header cannot carry",
                        self.connection
                    )))
                })?;
                value.set_sensitive(true);
                builder.header(name.clone(), value)
            }
            Auth::None => builder,
        };
        for (name, value) in &req.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        builder = match &req.body {
            Some(Body::Form(fields)) => builder.form(fields),
            Some(Body::Json(value)) => builder.json(value),
            None => builder,
        };
        builder.send().await.map_err(|e| {
            let what = match (e.is_connect(), e.is_timeout()) {
                (true, true) => format!(
                    "could not connect within {:?}",
                    self.settings.connect_timeout
                ),
                (true, false) => "could not connect".to_owned(),
                (false, true) => format!("timed out after {:?}", self.settings.request_timeout),
                (false, false) => "failed".to_owned(),
            };
            let not_sent = e.is_connect();
            let message = format!(
                "connection {}: {} {what}: {}",
                self.connection,
                req.describe(),
                causes(&e.without_url())
            );
            if not_sent {
                SendError::NotSent(message)
            } else {
                SendError::MaybeSent(message)
            }
        })
    }

    /// Reads the body, whatever the status.
    pub async fn receive(&self, resp: Response, req: &Request) -> Result<Answer, PortError> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.map_err(|e| {
            PortError::transient(format!(
                "connection {}: reading the answer to {}: {}",
                self.connection,
                req.describe(),
                e.without_url()
            ))
        })?;
        Ok(Answer {
            status,
            headers,
            body: body.to_vec(),
        })
    }

    /// The error for an answer whose status is not a success.
    pub fn status_error(&self, answer: &Answer, req: &Request) -> PortError {
        let status = answer.status;
        let hint = match status {
            StatusCode::UNAUTHORIZED => self.auth_hint.to_owned(),
            StatusCode::FORBIDDEN => "the credentials lack the permission for this call".to_owned(),
            StatusCode::NOT_FOUND => {
                "no such job, project or run, or the credentials cannot see it".to_owned()
            }
            StatusCode::TOO_MANY_REQUESTS => "rate limited".to_owned(),
            s if s.is_redirection() => match answer.headers.get(reqwest::header::LOCATION) {
                Some(loc) => format!(
                    "unexpected redirect to {} (is the base URL right?)",
                    loc.to_str().unwrap_or("?")
                ),
                None => "unexpected redirect".to_owned(),
            },
            _ => excerpt(&answer.body),
        };
        let message = format!(
            "connection {}: {status} from {}: {hint}",
            self.connection,
            req.describe()
        );
        let retry_after = retry_after(&answer.headers, SystemTime::now());
        let mut err = if status == StatusCode::TOO_MANY_REQUESTS
            || status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
        {
            PortError::transient(message)
        } else {
            PortError::permanent(message)
        };
        if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
            err.retry_after = retry_after;
        }
        err
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SendError {
    /// The request could not be built; nothing was sent.
    #[error("{}", .0.message)]
    Invalid(PortError),
    /// The connection failed before the request went out.
    #[error("{0}")]
    NotSent(String),
    /// The request may have reached the server (timeout, reset).
    #[error("{0}")]
    MaybeSent(String),
}

impl SendError {
    /// As a read's error: everything but an invalid request is worth retrying.
    pub fn for_read(self) -> PortError {
        match self {
            Self::Invalid(e) => e,
            Self::NotSent(m) | Self::MaybeSent(m) => PortError::transient(m),
        }
    }

    /// As a trigger's error: once the request may have reached the server, the
    /// outcome is unknown and the engine must ask `find` before sending again.
    pub fn for_trigger(self) -> PortError {
        match self {
            Self::Invalid(e) => e,
            Self::NotSent(m) => PortError::transient(m),
            Self::MaybeSent(m) => PortError::ambiguous(m),
        }
    }
}

/// A trigger's non-2xx answer as an error: a 5xx may come after the run was
/// created, so it is ambiguous; 4xx (rate limits aside) mean nothing started.
pub(crate) fn trigger_status_error(http: &HttpClient, answer: &Answer, req: &Request) -> PortError {
    let mut err = http.status_error(answer, req);
    if answer.status.is_server_error() {
        err.kind = ErrorKind::Ambiguous;
    }
    err
}

/// How long the server asks us to wait: `Retry-After` (seconds or an HTTP date),
/// else GitLab's `RateLimit-Reset` (a Unix time; small values read as seconds).
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = header("retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(when) = httpdate::parse_http_date(value) {
            return Some(when.duration_since(now).unwrap_or_default());
        }
    }
    let reset = header("ratelimit-reset")?.parse::<u64>().ok()?;
    // A reset far beyond any sane delta is a timestamp.
    if reset > 1_000_000_000 {
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
        Some(when.duration_since(now).unwrap_or_default())
    } else {
        Some(Duration::from_secs(reset))
    }
}

/// An error and its causes, on one line.
fn causes(e: &reqwest::Error) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// The start of a body, on one line, for a message.
pub(crate) fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.is_empty() {
        return "empty answer".to_owned();
    }
    match text.char_indices().nth(BODY_EXCERPT) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_dates_and_gitlab_reset() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));

        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(30)));

        let mut h = HeaderMap::new();
        h.insert("ratelimit-reset", HeaderValue::from_static("1700000012"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(12)));
        h.insert("ratelimit-reset", HeaderValue::from_static("5"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(5)));

        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_request_debug_output_holds_no_secret() {
        let req = Request::new(
            Method::POST,
            "/api/v4/projects/1/trigger/pipeline",
            Auth::Header {
                name: HeaderName::from_static("private-token"),
                value: SecretString::new("glpat-s3cr3t"),
            },
        )
        .body(Body::Json(serde_json::json!({"token": "glptt-s3cr3t"})));
        let basic = Request::new(
            Method::POST,
            "/job/x/buildWithParameters",
            Auth::Basic {
                user: "bot".into(),
                password: SecretString::new("api-s3cr3t"),
            },
        )
        .body(Body::Form(vec![("token".into(), "form-s3cr3t".into())]));
        let out = format!("{req:?} {basic:?}");
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    #[test]
    fn paths_keep_the_base_path_prefix() {
        let base = Url::parse("https://ci.example.com/jenkins/").unwrap();
        let http = HttpClient::new("j", &base, &HttpSettings::default(), "").unwrap();
        assert_eq!(
            http.url("/queue/item/3/api/json").unwrap().as_str(),
            "https://ci.example.com/jenkins/queue/item/3/api/json"
        );
        let base = Url::parse("https://git.example.com/gitlab").unwrap();
        let http = HttpClient::new("g", &base, &HttpSettings::default(), "").unwrap();
        assert_eq!(
            http.url("/api/v4/projects/a%2Fb/pipelines?ref=main")
                .unwrap()
                .as_str(),
            "https://git.example.com/gitlab/api/v4/projects/a%2Fb/pipelines?ref=main"
        );
    }

    #[test]
    fn excerpt_is_short_and_on_one_line() {
        assert_eq!(excerpt(b""), "empty answer");
        assert_eq!(excerpt(b"a\n  b"), "a b");
        assert_eq!(excerpt(&[b'x'; 500]).len(), BODY_EXCERPT + 3);
    }
}

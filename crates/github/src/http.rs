//! HTTP glue: one reqwest client per connection, GitHub's headers, the mapping
//! of answers to `PortError`, and backoff retries for reads only.

use crate::config::{ConfigError, GitHubConfig, HttpSettings, SecretString};
use backon::{ExponentialBuilder, Retryable};
use promotion_core::ports::{ErrorKind, PortError};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use url::Url;

/// The REST API version this crate speaks (`return_run_details` needs it).
pub const API_VERSION: &str = "2022-11-28";

/// GitHub's advice when a secondary rate limit gives no wait: at least a minute.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// What a request does to the server, which decides how failures are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing: retried on transient failures.
    Read,
    /// Idempotent change: never retried here, failures are transient for the engine.
    Write,
    /// Starts a run: once it may have reached the server, a failure is ambiguous.
    Trigger,
}

/// One call: method, path segments under the base URL, query and JSON body.
#[derive(Clone, Debug)]
pub(crate) struct Call {
    pub method: Method,
    pub segments: Vec<String>,
    pub query: Vec<(&'static str, String)>,
    pub body: Option<serde_json::Value>,
    pub effect: Effect,
}

impl Call {
    /// A call to the path made of `segments`, each percent-encoded on its own.
    pub fn new(method: Method, effect: Effect, segments: &[&str]) -> Self {
        Self {
            method,
            segments: segments.iter().map(|s| (*s).to_owned()).collect(),
            query: Vec::new(),
            body: None,
            effect,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, key: &'static str, value: impl Into<String>) -> Self {
        self.query.push((key, value.into()));
        self
    }

    /// Sets the JSON body.
    pub fn json(mut self, body: serde_json::Value) -> Self {
        self.body = Some(body);
        self
    }
}

/// A response of any status, with enough context to name it in errors.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `connection NAME: METHOD /path`, the prefix of every error about it.
    pub what: String,
    pub effect: Effect,
}

impl Answer {
    /// GitHub's own `message`, or the start of the body.
    pub fn message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct Body {
            message: String,
        }
        match serde_json::from_slice::<Body>(&self.body) {
            Ok(b) => b.message,
            Err(_) => String::from_utf8_lossy(&self.body)
                .chars()
                .take(200)
                .collect::<String>()
                .trim()
                .to_owned(),
        }
    }

    /// The answer itself when it is a success, else the error it means.
    pub fn success(self) -> Result<Self, PortError> {
        if self.status.is_success() {
            Ok(self)
        } else {
            Err(self.error())
        }
    }

    /// The body as `T`; a body that does not parse is a permanent error, or an
    /// ambiguous one for a trigger (the run may have started all the same).
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, PortError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let message = format!(
                "{}: {} answered with a body that is not the JSON GitHub documents: {e}",
                self.what, self.status
            );
            match self.effect {
                Effect::Trigger => PortError::ambiguous(message),
                _ => PortError::permanent(message),
            }
        })
    }

    /// The error a non-success answer means.
    pub fn error(&self) -> PortError {
        let status = self.status;
        let detail = self.message();
        let text = |why: &str| format!("{}: {status} {why}: {detail}", self.what);
        if let Some(wait) = rate_limit_wait(status, &self.headers, &detail) {
            // Rejected before it was processed: nothing started, waiting helps.
            let mut err = PortError::transient(format!(
                "{}: rate limited ({status}), retry after {}s: {detail}",
                self.what,
                wait.as_secs()
            ));
            err.retry_after = Some(wait);
            return err;
        }
        match status {
            StatusCode::UNAUTHORIZED => PortError::permanent(text(
                "authentication failed; check the credentials in the connection's secret",
            )),
            StatusCode::FORBIDDEN => {
                PortError::permanent(text("forbidden; the token or App lacks a permission"))
            }
            StatusCode::NOT_FOUND => {
                PortError::permanent(text("not found (or not visible to these credentials)"))
            }
            s if s.is_redirection() => {
                let to = self
                    .headers
                    .get(header::LOCATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("?");
                PortError::permanent(format!(
                    "{}: {s} redirect to {to}; check the base URL and the repository name",
                    self.what
                ))
            }
            s if s.is_server_error() => match self.effect {
                Effect::Trigger => PortError::ambiguous(text(
                    "after the trigger reached the server; the run may have started",
                )),
                _ => PortError::transient(text("server error")),
            },
            s if s == StatusCode::REQUEST_TIMEOUT => PortError::transient(text("timeout")),
            _ => PortError::permanent(text("rejected")),
        }
    }
}

/// How long GitHub asks us to wait, when `status` is a (primary or secondary) rate limit.
fn rate_limit_wait(status: StatusCode, headers: &HeaderMap, message: &str) -> Option<Duration> {
    if status != StatusCode::FORBIDDEN && status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(value) = get("retry-after") {
        if let Ok(secs) = value.parse::<u64>() {
            return Some(Duration::from_secs(secs));
        }
        if let Ok(at) = httpdate::parse_http_date(value) {
            return Some(at.duration_since(SystemTime::now()).unwrap_or_default());
        }
    }
    if get("x-ratelimit-remaining") == Some("0")
        && let Some(reset) = get("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
    {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // The reset is a whole second; waiting one more avoids arriving just before it.
        return Some(Duration::from_secs(reset.saturating_sub(now) + 1));
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || message.to_ascii_lowercase().contains("rate limit")
    {
        return Some(DEFAULT_RATE_LIMIT_WAIT);
    }
    None
}

/// One connection's HTTP client.
#[derive(Debug)]
pub(crate) struct Http {
    client: reqwest::Client,
    base: Url,
    connection: String,
    settings: HttpSettings,
}

impl Http {
    /// Builds the client: timeouts, no redirects, GitHub's headers.
    pub fn new(config: &GitHubConfig) -> Result<Self, ConfigError> {
        let invalid = |problem: String| ConfigError::Invalid {
            connection: config.name.clone(),
            problem,
        };
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/vnd.github+json"),
        );
        headers.insert(
            "x-github-api-version",
            HeaderValue::from_static(API_VERSION),
        );
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.http.connect_timeout)
            .timeout(config.http.request_timeout)
            // A redirect would resend the credentials somewhere we did not choose.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| invalid(format!("cannot build an HTTP client: {e}")))?;
        let mut base = config.base_url.clone();
        // `https://ghe.example/api/v3/` and `.../api/v3` mean the same.
        if let Ok(mut segments) = base.path_segments_mut() {
            segments.pop_if_empty();
        }
        Ok(Self {
            client,
            base,
            connection: config.name.clone(),
            settings: config.http.clone(),
        })
    }

    /// The connection's name.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// The connection's settings.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    fn url(&self, call: &Call) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            segments.extend(&call.segments);
        }
        if !call.query.is_empty() {
            url.query_pairs_mut().extend_pairs(call.query.iter());
        }
        url
    }

    /// Sends `call` once; any HTTP status is an `Answer`, only transport failures are errors.
    pub async fn send(
        &self,
        call: &Call,
        bearer: Option<&SecretString>,
    ) -> Result<Answer, PortError> {
        let url = self.url(call);
        let what = format!(
            "connection {}: {} {}",
            self.connection,
            call.method,
            url.path()
        );
        let mut request = self.client.request(call.method.clone(), url);
        if let Some(token) = bearer {
            let mut value =
                HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    PortError::permanent(format!("{what}: the token is not a valid header value"))
                })?;
            value.set_sensitive(true);
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(body) = &call.body {
            request = request.json(body);
        }
        tracing::debug!(connection = %self.connection, method = %call.method, path = %what, "github request");
        let response = request
            .send()
            .await
            .map_err(|e| self.transport_error(&what, call.effect, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(&what, call.effect, &e))?;
        Ok(Answer {
            status,
            headers,
            body: body.to_vec(),
            what,
            effect: call.effect,
        })
    }

    fn transport_error(&self, what: &str, effect: Effect, e: &reqwest::Error) -> PortError {
        let why = if e.is_timeout() {
            format!("no answer within {:?}", self.settings.request_timeout)
        } else if e.is_connect() {
            "could not connect".to_owned()
        } else {
            "the connection failed".to_owned()
        };
        let cause = std::error::Error::source(e)
            .map(|s| format!(" ({s})"))
            .unwrap_or_default();
        // A refused connection sent nothing; anything later may have reached GitHub.
        if effect == Effect::Trigger && !e.is_connect() {
            PortError::ambiguous(format!(
                "{what}: {why}{cause} after the trigger was sent; the run may have started"
            ))
        } else {
            PortError::transient(format!("{what}: {why}{cause}"))
        }
    }
}

/// Runs a read, retrying transient failures with jittered exponential backoff;
/// a rate-limit wait no longer than `max_rate_limit_wait` is slept through.
pub(crate) async fn retry_read<T, F, Fut>(
    settings: &HttpSettings,
    attempt: F,
) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(settings.backoff_min)
        .with_max_delay(settings.backoff_max)
        .with_max_times(settings.read_retries)
        .with_jitter();
    let max_wait = settings.max_rate_limit_wait;
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &PortError| e.kind == ErrorKind::Transient)
        .adjust(
            move |e: &PortError, next: Option<Duration>| match e.retry_after {
                Some(wait) if wait > max_wait => None,
                Some(wait) => next.map(|_| wait),
                None => next,
            },
        )
        .notify(|e: &PortError, after: Duration| {
            tracing::warn!(error = %e, retry_in = ?after, "github read failed, retrying");
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, headers: &[(&'static str, &str)], body: &str, effect: Effect) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.as_bytes().to_vec(),
            what: "connection gh: GET /x".into(),
            effect,
        }
    }

    #[test]
    fn errors_are_classified_as_github_documents_them() {
        let e = answer(401, &[], r#"{"message":"Bad credentials"}"#, Effect::Read).error();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message.starts_with("connection gh: GET /x: 401"),
            "{}",
            e.message
        );
        assert!(e.message.contains("Bad credentials"));

        let e = answer(403, &[("retry-after", "30")], "{}", Effect::Read).error();
        assert_eq!(
            (e.kind, e.retry_after),
            (ErrorKind::Transient, Some(Duration::from_secs(30)))
        );

        let reset = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 100;
        let e = answer(
            403,
            &[
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-reset", &reset.to_string()),
            ],
            r#"{"message":"API rate limit exceeded"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!(e.kind, ErrorKind::Transient);
        let wait = e.retry_after.unwrap();
        assert!(wait > Duration::from_secs(90) && wait <= Duration::from_secs(101));

        let e = answer(
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!(e.retry_after, Some(DEFAULT_RATE_LIMIT_WAIT));

        let e = answer(
            403,
            &[],
            r#"{"message":"Resource not accessible by integration"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!((e.kind, e.retry_after), (ErrorKind::Permanent, None));

        assert_eq!(
            answer(502, &[], "", Effect::Read).error().kind,
            ErrorKind::Transient
        );
        assert_eq!(
            answer(502, &[], "", Effect::Trigger).error().kind,
            ErrorKind::Ambiguous
        );
        assert_eq!(
            answer(429, &[], "", Effect::Trigger).error().kind,
            ErrorKind::Transient
        );
        assert_eq!(
            answer(422, &[], "{}", Effect::Write).error().kind,
            ErrorKind::Permanent
        );
        let e = answer(
            301,
            &[("location", "https://elsewhere/x")],
            "",
            Effect::Read,
        )
        .error();
        assert!(e.message.contains("https://elsewhere/x"));
    }

    #[test]
    fn retry_after_may_be_an_http_date() {
        let at = SystemTime::now() + Duration::from_secs(90);
        let e = answer(
            429,
            &[("retry-after", &httpdate::fmt_http_date(at))],
            "",
            Effect::Read,
        )
        .error();
        let wait = e.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
    }

    #[test]
    fn malformed_bodies_are_errors() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Run {
            id: u64,
        }
        let e = answer(200, &[], "<html>", Effect::Read)
            .json::<Run>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        let e = answer(200, &[], "{\"id\":", Effect::Trigger)
            .json::<Run>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Ambiguous);
    }
}

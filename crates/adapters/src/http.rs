//! The one HTTP kernel every adapter uses: one client per connection, timeouts,
//! no redirects, bounded bodies, retries for reads only, each service's
//! rate-limit headers, and answers mapped to `PortError` by what a call does
//! (read, write or trigger).

use crate::connections::{HttpSettings, SecretString};
use backon::{ExponentialBuilder, Retryable};
use promotion_core::ports::{ErrorKind, PortError};
use reqwest::header::{self, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, Response, StatusCode};
use serde::de::DeserializeOwned;
use std::future::Future;
use std::time::{Duration, SystemTime};
use url::Url;

/// How many characters of an error body go into a message.
const BODY_EXCERPT: usize = 200;

/// GitHub's advice when a secondary rate limit gives no wait: at least a minute.
const GITHUB_DEFAULT_WAIT: Duration = Duration::from_secs(60);

/// What a request does to the server, which decides how its failures are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing: retried on transient failures.
    Read,
    /// A change that may be repeated: sent once here, its failures are transient for the engine.
    Write,
    /// Starts a run: once it may have reached the server, a failure is ambiguous
    /// and the request is never sent again here.
    Trigger,
}

/// Which rate-limit headers a service sends, beyond the standard `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RateLimits {
    /// Only `Retry-After` (Jenkins).
    Standard,
    /// `RateLimit-Reset` (a Unix time) on 429 and 503 (GitLab).
    GitLab,
    /// `x-ratelimit-remaining`/`x-ratelimit-reset` and secondary limits, which
    /// GitHub also answers with 403.
    GitHub,
}

/// How a service speaks: its rate limits, what to check on a 401, and whether
/// its error bodies carry a JSON `message` worth quoting.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Service {
    /// The rate-limit headers it sends.
    pub rate_limits: RateLimits,
    /// What to check when the server answers 401, e.g. "check the user and API token".
    pub auth_hint: &'static str,
    /// Error bodies are JSON with a `message` (GitHub).
    pub json_message: bool,
}

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
    /// `Authorization: Bearer` (GitHub).
    Bearer(SecretString),
    /// No credentials, or they travel in the body (GitLab's trigger token).
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
    pub effect: Effect,
    /// Path and query relative to the connection's base URL, starting with `/`, encoded.
    pub path: String,
    pub auth: Auth,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Body>,
}

impl Request {
    /// A request to the path made of `segments`, each percent-encoded on its own.
    pub fn new(method: Method, effect: Effect, segments: &[&str]) -> Self {
        let mut url = Url::parse("http://x/").unwrap_or_else(|_| unreachable!("a fixed URL"));
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        Self::raw(method, effect, url.path())
    }

    /// A request to `path` (with any query), already encoded.
    pub fn raw(method: Method, effect: Effect, path: impl Into<String>) -> Self {
        Self {
            method,
            effect,
            path: path.into(),
            auth: Auth::None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a query parameter, encoded.
    pub fn query(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let pair: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(key, value.as_ref())
            .finish();
        self.path
            .push(if self.path.contains('?') { '&' } else { '?' });
        self.path.push_str(&pair);
        self
    }

    /// Sets how the request authenticates.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
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

    /// Sets a JSON body.
    pub fn json(self, body: serde_json::Value) -> Self {
        self.body(Body::Json(body))
    }

    /// `POST /job/x/buildWithParameters`: the query is left out, it can be long.
    pub fn describe(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {}", self.method, path)
    }
}

/// A response of any status with its body read, and what is needed to name it in errors.
#[derive(Debug)]
pub(crate) struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// `connection NAME`, the start of every message about it.
    pub connection: String,
    /// `METHOD /path`.
    pub call: String,
    pub effect: Effect,
    pub service: Service,
}

impl Answer {
    /// The service's own `message` (GitHub), or the start of the body.
    pub fn message(&self) -> String {
        #[derive(serde::Deserialize)]
        struct Message {
            message: String,
        }
        match serde_json::from_slice::<Message>(&self.body) {
            Ok(m) => m.message,
            Err(_) => excerpt(&self.body),
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
            let message = format!("{}: malformed answer from {}: {e}", self.connection, self.call);
            match self.effect {
                Effect::Trigger => PortError::ambiguous(message),
                _ => PortError::permanent(message),
            }
        })
    }

    /// The error a non-success answer means.
    pub fn error(&self) -> PortError {
        let status = self.status;
        let wait = rate_limit_wait(self.service.rate_limits, status, &self.headers, &self.body);
        let hint = match status {
            _ if wait.is_some() => "rate limited".to_owned(),
            StatusCode::UNAUTHORIZED => self.service.auth_hint.to_owned(),
            StatusCode::FORBIDDEN => "the credentials lack the permission for this call".to_owned(),
            StatusCode::NOT_FOUND => {
                "no such job, project, repository or run, or the credentials cannot see it"
                    .to_owned()
            }
            s if s.is_redirection() => match self.headers.get(header::LOCATION) {
                Some(loc) => format!(
                    "unexpected redirect to {} (is the base URL right?)",
                    loc.to_str().unwrap_or("?")
                ),
                None => "unexpected redirect".to_owned(),
            },
            _ if self.service.json_message => self.message(),
            _ => excerpt(&self.body),
        };
        let detail = if self.service.json_message && !status.is_redirection() {
            match self.message() {
                m if m == hint || m == "empty answer" => String::new(),
                m => format!(": {m}"),
            }
        } else {
            String::new()
        };
        let message = format!(
            "{}: {status} from {}: {hint}{detail}",
            self.connection, self.call
        );
        if let Some(wait) = wait {
            // Refused before it was processed: nothing started, waiting helps.
            let mut err = PortError::transient(message);
            err.retry_after = Some(wait);
            return err;
        }
        if status.is_server_error() {
            return match self.effect {
                // A 5xx may come after the run was created.
                Effect::Trigger => PortError::ambiguous(message),
                _ => PortError::transient(message),
            };
        }
        if status == StatusCode::REQUEST_TIMEOUT || status == StatusCode::TOO_MANY_REQUESTS {
            return PortError::transient(message);
        }
        PortError::permanent(message)
    }
}

/// How long the server asks us to wait, when `status` is a rate limit (or a 503 saying when to come back).
pub(crate) fn rate_limit_wait(
    policy: RateLimits,
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
) -> Option<Duration> {
    let limited = match policy {
        RateLimits::GitHub => {
            status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS
        }
        _ => status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE,
    };
    if !limited {
        return None;
    }
    let now = SystemTime::now();
    if let Some(wait) = retry_after(headers, now) {
        return Some(wait);
    }
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    match policy {
        RateLimits::Standard => None,
        RateLimits::GitLab => {
            let reset = get("ratelimit-reset")?.parse::<u64>().ok()?;
            // A reset far beyond any sane delta is a timestamp.
            if reset > 1_000_000_000 {
                let when = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
                Some(when.duration_since(now).unwrap_or_default())
            } else {
                Some(Duration::from_secs(reset))
            }
        }
        RateLimits::GitHub => {
            if get("x-ratelimit-remaining") == Some("0")
                && let Some(reset) = get("x-ratelimit-reset").and_then(|v| v.parse::<u64>().ok())
            {
                let when = SystemTime::UNIX_EPOCH + Duration::from_secs(reset);
                // The reset is a whole second; one more avoids arriving just before it.
                return Some(when.duration_since(now).unwrap_or_default() + Duration::from_secs(1));
            }
            let text = String::from_utf8_lossy(body).to_ascii_lowercase();
            (status == StatusCode::TOO_MANY_REQUESTS || text.contains("rate limit"))
                .then_some(GITHUB_DEFAULT_WAIT)
        }
    }
}

/// `Retry-After`, in seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let value = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or_default())
}

/// A reqwest client bound to one connection's base URL, settings and service.
#[derive(Clone, Debug)]
pub(crate) struct HttpClient {
    connection: String,
    base: Url,
    client: reqwest::Client,
    settings: HttpSettings,
    service: Service,
}

impl HttpClient {
    /// A client for `connection` at `base`, sending `headers` with every request.
    pub fn new(
        connection: &str,
        base: &Url,
        settings: &HttpSettings,
        service: Service,
        headers: HeaderMap,
    ) -> Result<Self, PortError> {
        let client = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.request_timeout)
            // A redirect would resend the credentials somewhere we did not choose,
            // and Jenkins answers 303 to a merged queue item: we must see it.
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
            service,
        })
    }

    /// The connection's name, for messages.
    pub fn connection(&self) -> &str {
        &self.connection
    }

    /// The connection's settings.
    pub fn settings(&self) -> &HttpSettings {
        &self.settings
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

    /// Sends a read, retrying transient failures, and decodes its 2xx JSON body.
    pub async fn read_json<T: DeserializeOwned>(&self, req: &Request) -> Result<T, PortError> {
        self.read(req).await?.json()
    }

    /// Like `read_json`, but a 404 is `None`: the thing is gone, or never was.
    pub async fn read_json_if_found<T: DeserializeOwned>(
        &self,
        req: &Request,
    ) -> Result<Option<T>, PortError> {
        let answer = retry_read(&self.settings, || async {
            let answer = self.exchange(req).await?;
            if answer.status == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            answer.success().map(Some)
        })
        .await?;
        answer.map(|a| a.json()).transpose()
    }

    /// Sends a read, retrying transient failures; the answer has a 2xx status.
    pub async fn read(&self, req: &Request) -> Result<Answer, PortError> {
        retry_read(&self.settings, || async { self.exchange(req).await?.success() }).await
    }

    /// Sends a request once and reads its answer, whatever its status. Only a
    /// failure to get an answer is an error: transient when nothing was sent,
    /// ambiguous for a trigger that may have reached the server.
    pub async fn exchange(&self, req: &Request) -> Result<Answer, PortError> {
        let resp = self.send(req).await?;
        self.receive(resp, req).await
    }

    async fn send(&self, req: &Request) -> Result<Response, PortError> {
        let url = self.url(&req.path)?;
        let mut builder = self.client.request(req.method.clone(), url);
        let sensitive = |text: &str| {
            HeaderValue::from_str(text)
                .map(|mut v| {
                    v.set_sensitive(true);
                    v
                })
                .map_err(|_| {
                    PortError::permanent(format!(
                        "connection {}: the token holds characters a header cannot carry",
                        self.connection
                    ))
                })
        };
        builder = match &req.auth {
            Auth::Basic { user, password } => builder.basic_auth(user, Some(password.expose())),
            Auth::Header { name, value } => builder.header(name.clone(), sensitive(value.expose())?),
            Auth::Bearer(token) => builder.header(
                header::AUTHORIZATION,
                sensitive(&format!("Bearer {}", token.expose()))?,
            ),
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
        tracing::debug!(connection = %self.connection, call = %req.describe(), "request");
        builder
            .send()
            .await
            .map_err(|e| self.transport_error(req, e))
    }

    /// The error for a request that got no answer.
    fn transport_error(&self, req: &Request, e: reqwest::Error) -> PortError {
        let not_sent = e.is_connect();
        let what = match (not_sent, e.is_timeout()) {
            (true, true) => format!(
                "could not connect within {:?}",
                self.settings.connect_timeout
            ),
            (true, false) => "could not connect".to_owned(),
            (false, true) => format!("timed out after {:?}", self.settings.request_timeout),
            (false, false) => "failed".to_owned(),
        };
        let message = format!(
            "connection {}: {} {what}: {}",
            self.connection,
            req.describe(),
            causes(&e.without_url())
        );
        // A refused connection sent nothing; anything later may have reached the server.
        if req.effect == Effect::Trigger && !not_sent {
            PortError::ambiguous(format!("{message}; the run may have started"))
        } else {
            PortError::transient(message)
        }
    }

    /// Reads the body, whatever the status, up to the connection's size limit.
    async fn receive(&self, mut resp: Response, req: &Request) -> Result<Answer, PortError> {
        let status = resp.status();
        let headers = resp.headers().clone();
        let limit = self.settings.max_body_bytes;
        let too_large = || {
            let message = format!(
                "connection {}: the answer ({status}) to {} is larger than {limit} bytes \
                 (setting maxBodySize)",
                self.connection,
                req.describe()
            );
            match req.effect {
                Effect::Trigger => PortError::ambiguous(message),
                _ => PortError::permanent(message),
            }
        };
        // An error page only feeds a message, so it is cut at the limit; an
        // answer we act on must be whole.
        if status.is_success() && resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        loop {
            match resp.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        if status.is_success() {
                            return Err(too_large());
                        }
                        body.extend_from_slice(&chunk[..limit - body.len()]);
                        break;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    let message = format!(
                        "connection {}: reading the answer to {}: {}",
                        self.connection,
                        req.describe(),
                        causes(&e.without_url())
                    );
                    // The server answered: a trigger may have acted.
                    return Err(match req.effect {
                        Effect::Trigger => PortError::ambiguous(message),
                        _ => PortError::transient(message),
                    });
                }
            }
        }
        Ok(Answer {
            status,
            headers,
            body,
            connection: format!("connection {}", self.connection),
            call: req.describe(),
            effect: req.effect,
            service: self.service,
        })
    }
}

/// Runs a read, retrying transient failures with jittered exponential backoff;
/// a rate-limit wait no longer than `max_rate_limit_wait` is slept through, a
/// longer one is left to the engine in `retry_after`.
pub(crate) async fn retry_read<T, F, Fut>(settings: &HttpSettings, attempt: F) -> Result<T, PortError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, PortError>>,
{
    let backoff = ExponentialBuilder::default()
        .with_jitter()
        .with_min_delay(settings.retry_min_delay)
        .with_max_delay(settings.retry_max_delay)
        .with_max_times(settings.read_retries);
    let max_wait = settings.max_rate_limit_wait;
    attempt
        .retry(backoff)
        .sleep(tokio::time::sleep)
        .when(|e: &PortError| e.kind == ErrorKind::Transient)
        .adjust(move |e: &PortError, next| match (e.retry_after, next) {
            (Some(wait), Some(_)) if wait <= max_wait => Some(wait),
            (Some(_), _) => None,
            (None, next) => next,
        })
        .notify(|e: &PortError, wait| {
            tracing::debug!(error = %e, ?wait, "retrying read");
        })
        .await
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

    const PLAIN: Service = Service {
        rate_limits: RateLimits::Standard,
        auth_hint: "check the token",
        json_message: false,
    };
    const GITHUB: Service = Service {
        rate_limits: RateLimits::GitHub,
        auth_hint: "check the credentials in the connection's secret",
        json_message: true,
    };

    fn answer(
        service: Service,
        status: u16,
        headers: &[(&'static str, &str)],
        body: &str,
        effect: Effect,
    ) -> Answer {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        Answer {
            status: StatusCode::from_u16(status).unwrap(),
            headers: map,
            body: body.as_bytes().to_vec(),
            connection: "connection gh".into(),
            call: "GET /x".into(),
            effect,
            service,
        }
    }

    #[test]
    fn retry_after_reads_seconds_dates_and_gitlab_reset() {
        let now = SystemTime::now();
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(retry_after(&h, now), Some(Duration::from_secs(7)));

        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        h.insert("retry-after", HeaderValue::from_str(&date).unwrap());
        let wait = retry_after(&h, now).unwrap();
        assert!(wait > Duration::from_secs(28) && wait <= Duration::from_secs(30));

        let too_many = StatusCode::TOO_MANY_REQUESTS;
        let unix = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut h = HeaderMap::new();
        h.insert(
            "ratelimit-reset",
            HeaderValue::from_str(&(unix + 12).to_string()).unwrap(),
        );
        let wait = rate_limit_wait(RateLimits::GitLab, too_many, &h, b"").unwrap();
        assert!(wait > Duration::from_secs(9) && wait <= Duration::from_secs(12));
        h.insert("ratelimit-reset", HeaderValue::from_static("5"));
        assert_eq!(
            rate_limit_wait(RateLimits::GitLab, too_many, &h, b""),
            Some(Duration::from_secs(5))
        );
        // Jenkins sends no such header: only Retry-After counts.
        assert_eq!(rate_limit_wait(RateLimits::Standard, too_many, &h, b""), None);
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn a_request_debug_output_holds_no_secret() {
        let req = Request::raw(Method::POST, Effect::Trigger, "/api/v4/projects/1/trigger/pipeline")
            .auth(Auth::Header {
                name: HeaderName::from_static("private-token"),
                value: SecretString::new("glpat-s3cr3t"),
            })
            .json(serde_json::json!({"token": "glptt-s3cr3t"}));
        let basic = Request::raw(Method::POST, Effect::Trigger, "/job/x/buildWithParameters")
            .auth(Auth::Basic {
                user: "bot".into(),
                password: SecretString::new("api-s3cr3t"),
            })
            .body(Body::Form(vec![("token".into(), "form-s3cr3t".into())]));
        let bearer = Request::new(Method::GET, Effect::Read, &["repos"])
            .auth(Auth::Bearer(SecretString::new("ghp-s3cr3t")));
        let out = format!("{req:?} {basic:?} {bearer:?}");
        assert!(!out.contains("s3cr3t"), "{out}");
    }

    #[test]
    fn paths_keep_the_base_path_prefix_and_segments_are_encoded() {
        let base = Url::parse("https://ci.example.com/jenkins/").unwrap();
        let http =
            HttpClient::new("j", &base, &HttpSettings::default(), PLAIN, HeaderMap::new()).unwrap();
        assert_eq!(
            http.url("/queue/item/3/api/json").unwrap().as_str(),
            "https://ci.example.com/jenkins/queue/item/3/api/json"
        );
        let base = Url::parse("https://git.example.com/gitlab").unwrap();
        let http =
            HttpClient::new("g", &base, &HttpSettings::default(), PLAIN, HeaderMap::new()).unwrap();
        assert_eq!(
            http.url("/api/v4/projects/a%2Fb/pipelines?ref=main")
                .unwrap()
                .as_str(),
            "https://git.example.com/gitlab/api/v4/projects/a%2Fb/pipelines?ref=main"
        );
        let req = Request::new(Method::DELETE, Effect::Write, &["labels", "needs review/x"])
            .query("created", ">=2026-01-01");
        assert_eq!(req.path, "/labels/needs%20review%2Fx?created=%3E%3D2026-01-01");
        assert_eq!(req.describe(), "DELETE /labels/needs%20review%2Fx");
    }

    #[test]
    fn excerpt_is_short_and_on_one_line() {
        assert_eq!(excerpt(b""), "empty answer");
        assert_eq!(excerpt(b"a\n  b"), "a b");
        assert_eq!(excerpt(&[b'x'; 500]).len(), BODY_EXCERPT + 3);
    }

    #[test]
    fn errors_are_classified_by_status_service_and_effect() {
        let e = answer(GITHUB, 401, &[], r#"{"message":"Bad credentials"}"#, Effect::Read).error();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(
            e.message.starts_with("connection gh: 401 Unauthorized from GET /x"),
            "{}",
            e.message
        );
        assert!(e.message.contains("Bad credentials"));

        let e = answer(GITHUB, 403, &[("retry-after", "30")], "{}", Effect::Read).error();
        assert_eq!(
            (e.kind, e.retry_after),
            (ErrorKind::Transient, Some(Duration::from_secs(30)))
        );
        // Jenkins' 403 is a permission, whatever its headers.
        let e = answer(PLAIN, 403, &[("retry-after", "30")], "", Effect::Read).error();
        assert_eq!((e.kind, e.retry_after), (ErrorKind::Permanent, None));

        let reset = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 100;
        let e = answer(
            GITHUB,
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
            GITHUB,
            403,
            &[],
            r#"{"message":"You have exceeded a secondary rate limit"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!(e.retry_after, Some(GITHUB_DEFAULT_WAIT));

        let e = answer(
            GITHUB,
            403,
            &[],
            r#"{"message":"Resource not accessible by integration"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!((e.kind, e.retry_after), (ErrorKind::Permanent, None));

        for service in [PLAIN, GITHUB] {
            let kind = |status, effect| answer(service, status, &[], "", effect).error().kind;
            assert_eq!(kind(502, Effect::Read), ErrorKind::Transient);
            assert_eq!(kind(502, Effect::Write), ErrorKind::Transient);
            assert_eq!(kind(502, Effect::Trigger), ErrorKind::Ambiguous);
            assert_eq!(kind(429, Effect::Trigger), ErrorKind::Transient);
            assert_eq!(kind(422, Effect::Write), ErrorKind::Permanent);
        }
        let e = answer(GITHUB, 301, &[("location", "https://elsewhere/x")], "", Effect::Read).error();
        assert!(e.message.contains("https://elsewhere/x"), "{}", e.message);
    }

    #[test]
    fn malformed_bodies_are_permanent_or_ambiguous_after_a_trigger() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Run {
            id: u64,
        }
        let e = answer(GITHUB, 200, &[], "<html>", Effect::Read)
            .json::<Run>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Permanent);
        assert!(e.message.starts_with("connection gh: malformed answer"), "{}", e.message);
        let e = answer(GITHUB, 200, &[], "{\"id\":", Effect::Trigger)
            .json::<Run>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Ambiguous);
    }
}

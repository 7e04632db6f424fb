//! An answer of any status, and the `PortError` it means: by status, by what
//! the request did (read, write or trigger), and by each service's rate-limit
//! headers.

use super::request::Effect;
use promotion_core::ports::PortError;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap};
use serde::de::DeserializeOwned;
use std::time::{Duration, SystemTime};

/// How many characters of an error body go into a message.
const BODY_EXCERPT: usize = 200;

/// GitHub's advice when a secondary rate limit gives no wait: at least a minute.
const GITHUB_DEFAULT_WAIT: Duration = Duration::from_secs(60);

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
            let message = format!(
                "{}: malformed answer from {}: {e}",
                self.connection, self.call
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
pub(super) mod tests {
    use super::*;
    use promotion_core::ports::ErrorKind;
    use reqwest::header::HeaderValue;

    /// A service with only the standard `Retry-After`, for the kernel's tests.
    pub(in crate::http) const PLAIN: Service = Service {
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
        assert_eq!(
            rate_limit_wait(RateLimits::Standard, too_many, &h, b""),
            None
        );
        assert_eq!(retry_after(&HeaderMap::new(), now), None);
    }

    #[test]
    fn retry_after_may_be_an_http_date() {
        let at = SystemTime::now() + Duration::from_secs(90);
        let date = httpdate::fmt_http_date(at);
        let e = answer(GITHUB, 429, &[("retry-after", &date)], "", Effect::Read).error();
        let wait = e.retry_after.unwrap();
        assert!(
            wait > Duration::from_secs(80) && wait <= Duration::from_secs(90),
            "{wait:?}"
        );
    }

    #[test]
    fn excerpt_is_short_and_on_one_line() {
        assert_eq!(excerpt(b""), "empty answer");
        assert_eq!(excerpt(b"a\n  b"), "a b");
        assert_eq!(excerpt(&[b'x'; 500]).len(), BODY_EXCERPT + 3);
    }

    #[test]
    fn errors_are_classified_by_status_service_and_effect() {
        let e = answer(
            GITHUB,
            401,
            &[],
            r#"{"message":"Bad credentials"}"#,
            Effect::Read,
        )
        .error();
        assert_eq!(
            (e.kind, e.message.as_str()),
            (
                ErrorKind::Permanent,
                "connection gh: 401 Unauthorized from GET /x: check the credentials in the \
                 connection's secret: Bad credentials"
            )
        );

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
        let e = answer(
            GITHUB,
            301,
            &[("location", "https://elsewhere/x")],
            "",
            Effect::Read,
        )
        .error();
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
        let (what, why) = e.message.split_once(": expected").unwrap();
        assert_eq!(
            (e.kind, what),
            (
                ErrorKind::Permanent,
                "connection gh: malformed answer from GET /x"
            )
        );
        assert!(why.contains("line 1"), "the parser's reason follows: {why}");
        let e = answer(GITHUB, 200, &[], "{\"id\":", Effect::Trigger)
            .json::<Run>()
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::Ambiguous);
    }
}

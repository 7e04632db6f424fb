//! The one HTTP kernel every adapter uses: one client per connection, timeouts,
//! no redirects, bounded bodies, retries for reads only, each service's
//! rate-limit headers, and answers mapped to `PortError` by what a call does
//! (read, write or trigger).

mod answer;
mod request;

pub(crate) use answer::{Answer, RateLimits, Service};
pub(crate) use request::{Auth, Body, Effect, Request};

use crate::connections::{ConfigError, ConnectionConfig, HttpSettings};
use backon::{ExponentialBuilder, Retryable};
use promotion_core::ports::{ErrorKind, PortError};
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Response, StatusCode};
use serde::de::DeserializeOwned;
use std::future::Future;
use url::Url;

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

    /// The client of the connection `config`, speaking to `service`.
    pub fn for_config(
        config: &ConnectionConfig,
        service: Service,
        headers: HeaderMap,
    ) -> Result<Self, ConfigError> {
        Self::new(
            &config.name,
            &config.base_url,
            &config.http,
            service,
            headers,
        )
        .map_err(|e| ConfigError::Invalid {
            connection: config.name.clone(),
            problem: e.message,
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
        retry_read(&self.settings, || async {
            self.exchange(req).await?.success()
        })
        .await
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
            Auth::Header { name, value } => {
                builder.header(name.clone(), sensitive(value.expose())?)
            }
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
pub(crate) async fn retry_read<T, F, Fut>(
    settings: &HttpSettings,
    attempt: F,
) -> Result<T, PortError>
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

#[cfg(test)]
mod tests {
    use super::*;
    use answer::tests::PLAIN;
    use reqwest::Method;

    #[test]
    fn paths_keep_the_base_path_prefix_and_segments_are_encoded() {
        let client = |base: &str| {
            let base = Url::parse(base).unwrap();
            HttpClient::new(
                "c",
                &base,
                &HttpSettings::default(),
                PLAIN,
                HeaderMap::new(),
            )
            .unwrap()
        };
        assert_eq!(
            client("https://ci.example.com/jenkins/")
                .url("/queue/item/3/api/json")
                .unwrap()
                .as_str(),
            "https://ci.example.com/jenkins/queue/item/3/api/json"
        );
        assert_eq!(
            client("https://git.example.com/gitlab")
                .url("/api/v4/projects/a%2Fb/pipelines?ref=main")
                .unwrap()
                .as_str(),
            "https://git.example.com/gitlab/api/v4/projects/a%2Fb/pipelines?ref=main"
        );
        let req = Request::new(Method::DELETE, Effect::Write, &["labels", "needs review/x"])
            .query("created", ">=2026-01-01");
        assert_eq!(
            req.path,
            "/labels/needs%20review%2Fx?created=%3E%3D2026-01-01"
        );
        assert_eq!(req.describe(), "DELETE /labels/needs%20review%2Fx");
    }
}

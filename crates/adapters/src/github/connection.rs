//! An authenticated connection: the HTTP client plus the bearer token of each
//! call. Cheap to clone; clones share the installation-token cache.

use super::API_VERSION;
use super::auth::Auth;
use super::config::Repository;
use crate::connections::{ConfigError, Connection, ConnectionKind, Credentials, HttpSettings};
use crate::http::{self, Answer, Effect, HttpClient, RateLimits, Service};
use promotion_core::ports::PortError;
use reqwest::StatusCode;
use reqwest::header::{self, HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use std::time::Duration;

pub(crate) use crate::http::Request as Call;

/// How GitHub speaks: its own rate-limit headers, JSON error messages.
const GITHUB: Service = Service {
    rate_limits: RateLimits::GitHub,
    auth_hint: "authentication failed; check the credentials in the connection's secret",
    json_message: true,
};

/// One configured GitHub connection, ready to make calls.
#[derive(Clone, Debug)]
pub struct GitHubConnection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: HttpClient,
    auth: Auth,
    repository: Option<Repository>,
    find_attempts: usize,
    find_interval: Duration,
    find_pages: usize,
}

impl GitHubConnection {
    /// Builds the connection's HTTP client and authentication.
    pub fn new(connection: &Connection) -> Result<Self, ConfigError> {
        let config = &connection.config;
        let (
            ConnectionKind::Github | ConnectionKind::GithubActions,
            Credentials::Github(credentials),
        ) = (config.kind, &connection.credentials)
        else {
            return Err(connection.wrong_credentials());
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
        let http = HttpClient::for_config(config, GITHUB, headers)?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                auth: Auth::new(credentials),
                repository: config.github.repository.clone(),
                find_attempts: config.github.find_attempts,
                find_interval: config.github.find_interval,
                find_pages: config.github.find_pages,
            }),
        })
    }

    /// The connection's name.
    pub fn name(&self) -> &str {
        self.inner.http.connection()
    }

    /// The repository bare workflow names refer to, if configured.
    pub(crate) fn repository(&self) -> Option<&Repository> {
        self.inner.repository.as_ref()
    }

    pub(crate) fn settings(&self) -> &HttpSettings {
        self.inner.http.settings()
    }

    /// How many look-ups find a dispatched run without an id, and the pause between them.
    pub(crate) fn find_attempts(&self) -> (usize, Duration) {
        (self.inner.find_attempts, self.inner.find_interval)
    }

    /// How many pages of runs `find` reads back towards the intent's time.
    pub(crate) fn find_pages(&self) -> usize {
        self.inner.find_pages.max(1)
    }

    /// Sends `call` once with credentials; the answer may have any status.
    pub(crate) async fn send(&self, call: &Call) -> Result<Answer, PortError> {
        let token = self.inner.auth.bearer(&self.inner.http).await?;
        let call = call.clone().auth(http::Auth::Bearer(token));
        let answer = self.inner.http.exchange(&call).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            self.inner.auth.invalidate().await;
        }
        Ok(answer)
    }

    /// A read, retried on transient failures, its body parsed as `T`.
    pub(crate) async fn read<T: DeserializeOwned>(&self, call: &Call) -> Result<T, PortError> {
        debug_assert_eq!(call.effect, Effect::Read);
        http::retry_read(self.settings(), || async {
            self.send(call).await?.success()?.json()
        })
        .await
    }
}

//! An authenticated connection: the HTTP client plus the bearer token of each
//! call. Cheap to clone; clones share the installation-token cache.

use crate::auth::Auth;
use crate::config::{ConfigError, GitHubConfig, Repository};
use crate::http::{Answer, Call, Effect, Http, retry_read};
use promotion_core::ports::PortError;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// One configured GitHub connection, ready to make calls.
#[derive(Clone, Debug)]
pub struct GitHubConnection {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: Http,
    auth: Auth,
    repository: Option<Repository>,
}

impl GitHubConnection {
    /// Builds the connection's HTTP client and authentication.
    pub fn new(config: &GitHubConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            inner: Arc::new(Inner {
                http: Http::new(config)?,
                auth: Auth::new(&config.credentials),
                repository: config.repository.clone(),
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

    pub(crate) fn settings(&self) -> &crate::config::HttpSettings {
        self.inner.http.settings()
    }

    /// Sends `call` once with credentials; the answer may have any status.
    pub(crate) async fn send(&self, call: &Call) -> Result<Answer, PortError> {
        let token = self.inner.auth.bearer(&self.inner.http).await?;
        let answer = self.inner.http.send(call, Some(&token)).await?;
        if answer.status == StatusCode::UNAUTHORIZED {
            self.inner.auth.invalidate().await;
        }
        Ok(answer)
    }

    /// A read, retried on transient failures, its body parsed as `T`.
    pub(crate) async fn read<T: DeserializeOwned>(&self, call: &Call) -> Result<T, PortError> {
        debug_assert_eq!(call.effect, Effect::Read);
        retry_read(self.settings(), || async {
            self.send(call).await?.success()?.json()
        })
        .await
    }
}

//! One `TestRunner` over many: each call goes to the runner registered for its
//! provider and connection name, or to the provider's default connection.

use async_trait::async_trait;
use promotion_api::Provider;
use promotion_core::ports::{
    Found, PortError, RunHandle, RunRef, RunStatus, TestRunner, TriggerRequest,
};
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::SystemTime;

/// Runners by (provider, connection name), with a default connection per provider.
#[derive(Clone, Default)]
pub struct RunnerSet {
    runners: BTreeMap<(Provider, String), Arc<dyn TestRunner>>,
    defaults: BTreeMap<Provider, String>,
}

impl fmt::Debug for RunnerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunnerSet")
            .field("connections", &self.runners.keys().collect::<Vec<_>>())
            .field("defaults", &self.defaults)
            .finish()
    }
}

impl RunnerSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `runner` as connection `name` of `provider`; the first connection
    /// of a provider is its default until `set_default` says otherwise.
    pub fn register(&mut self, provider: Provider, name: &str, runner: Arc<dyn TestRunner>) {
        self.defaults
            .entry(provider)
            .or_insert_with(|| name.to_owned());
        self.runners.insert((provider, name.to_owned()), runner);
    }

    /// Makes connection `name` the default of `provider`; it must be registered.
    pub fn set_default(&mut self, provider: Provider, name: &str) -> Result<(), PortError> {
        if !self.runners.contains_key(&(provider, name.to_owned())) {
            return Err(unknown(provider, name));
        }
        self.defaults.insert(provider, name.to_owned());
        Ok(())
    }

    /// The runner for a call.
    fn runner(
        &self,
        provider: Provider,
        connection: Option<&str>,
    ) -> Result<&Arc<dyn TestRunner>, PortError> {
        let name = match connection {
            Some(name) => name,
            None => self.defaults.get(&provider).ok_or_else(|| {
                PortError::permanent(format!(
                    "no {} connection is configured",
                    provider_name(provider)
                ))
            })?,
        };
        self.runners
            .get(&(provider, name.to_owned()))
            .ok_or_else(|| unknown(provider, name))
    }
}

fn provider_name(provider: Provider) -> &'static str {
    match provider {
        Provider::Jenkins => "jenkins",
        Provider::GithubActions => "github-actions",
        Provider::Gitlab => "gitlab",
    }
}

fn unknown(provider: Provider, name: &str) -> PortError {
    PortError::permanent(format!(
        "unknown {} connection '{name}'",
        provider_name(provider)
    ))
}

#[async_trait]
impl TestRunner for RunnerSet {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        self.runner(req.provider, req.connection.as_deref())?
            .trigger(req)
            .await
    }

    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        self.runner(run.provider, run.connection.as_deref())?
            .status(run)
            .await
    }

    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        self.runner(req.provider, req.connection.as_deref())?
            .find(req, since)
            .await
    }

    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        self.runner(run.provider, run.connection.as_deref())?
            .cancel(run)
            .await
    }

    async fn check_findable(&self, req: &TriggerRequest) -> Result<(), PortError> {
        self.runner(req.provider, req.connection.as_deref())?
            .check_findable(req)
            .await
    }
}

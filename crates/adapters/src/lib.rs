//! HTTP adapters of the ports: the CI systems that run gate tests.
//!
//! Each runner is built from a [`connections::Connection`] (configuration plus
//! credentials read from a Secret's data) and implements
//! [`promotion_core::ports::TestRunner`]; a [`runner_set::RunnerSet`] dispatches
//! to them by provider and connection name.

#![warn(missing_docs)]

pub mod connections;
pub mod gitlab;
mod http;
pub mod jenkins;
pub mod runner_set;
mod settings;

pub use connections::{
    ConfigError, Connection, ConnectionConfig, ConnectionKind, Credentials, GitLabCredentials,
    GitLabParameters, GitLabSettings, HttpSettings, JenkinsCredentials, JenkinsSettings, SecretRef,
    SecretString,
};
pub use gitlab::GitLabRunner;
pub use jenkins::JenkinsRunner;
pub use runner_set::RunnerSet;

use promotion_core::ports::TestRunner;
use std::sync::Arc;

/// The runner for a Jenkins or GitLab connection; `None` for the GitHub kinds,
/// whose runners live in their own crate.
pub fn ci_runner(connection: &Connection) -> Result<Option<Arc<dyn TestRunner>>, ConfigError> {
    Ok(match connection.config.kind {
        ConnectionKind::Jenkins => Some(Arc::new(JenkinsRunner::new(connection)?)),
        ConnectionKind::Gitlab => Some(Arc::new(GitLabRunner::new(connection)?)),
        ConnectionKind::GithubActions | ConnectionKind::Github => None,
    })
}

//! The adapters of the ports to the outside services: Jenkins, GitLab CI and
//! GitHub Actions as [`promotion_core::ports::TestRunner`]s, and GitHub itself
//! (labels, commit statuses) as the [`promotion_core::ports::GitHubClient`]
//! and its pull requests as the [`promotion_core::ports::PullRequestReader`],
//! all over one HTTP kernel.
//!
//! A connection is an entry of the connections file ([`ConnectionEntry`]) plus
//! the credentials read from its Secret's data; [`ConnectionEntry::build`]
//! makes its [`Adapter`]. A [`runner_set::RunnerSet`] dispatches to the runners
//! by provider and connection name.

#![warn(missing_docs)]

mod build;
pub mod connections;
pub mod github;
pub mod gitlab;
mod http;
pub mod jenkins;
pub mod runner_set;
mod secrets;
mod settings;

pub use build::{Adapter, ConnectionEntry, SecretName};
pub use connections::{
    ConfigError, Connection, ConnectionConfig, ConnectionKind, Credentials, DEFAULT_MAX_BODY_BYTES,
    GitHubSettings, GitLabCredentials, GitLabParameters, GitLabSettings, HttpSettings,
    JenkinsCredentials, JenkinsSettings, SecretRef, SecretString,
};
pub use github::{
    AppCredentials, GITHUB_API, GitHubActionsRunner, GitHubApi, GitHubConnection,
    GitHubCredentials, GitHubPullRequests, Repository,
};
pub use gitlab::GitLabRunner;
pub use jenkins::JenkinsRunner;
pub use runner_set::RunnerSet;

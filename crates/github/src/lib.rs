//! The GitHub side of promotion-controller: GitHub Actions as a `TestRunner`
//! and GitHub (labels, commit statuses) as a `GitHubClient`, over the REST API
//! of GitHub.com or GitHub Enterprise Server, with token or GitHub App auth.

#![warn(missing_docs)]

mod auth;
pub mod config;
mod connection;
pub mod github;
pub mod github_actions;
mod http;
pub mod pulls;

pub use config::{
    AppCredentials, ConfigError, Credentials, GITHUB_API, GitHubConfig, HttpSettings, Repository,
    SecretString,
};
pub use connection::GitHubConnection;
pub use github::GitHubApi;
pub use github_actions::GitHubActionsRunner;
pub use http::API_VERSION;
pub use pulls::GitHubPullRequests;

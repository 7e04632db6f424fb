//! GitHub over its REST API (GitHub.com or GitHub Enterprise Server), with a
//! token or GitHub App auth: GitHub Actions as a `TestRunner` and GitHub
//! (labels, commit statuses) as a `GitHubClient`, and its pull requests as a
//! `PullRequestReader`.

pub mod actions;
pub mod api;
mod auth;
pub mod config;
mod connection;
pub mod pulls;

pub use actions::GitHubActionsRunner;
pub use api::GitHubApi;
pub use config::{AppCredentials, GITHUB_API, GitHubCredentials, Repository};
pub use connection::GitHubConnection;
pub use pulls::GitHubPullRequests;

/// The REST API version this crate speaks (`return_run_details` needs it).
pub const API_VERSION: &str = "2022-11-28";

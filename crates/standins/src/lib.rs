//! In-process stand-ins for the outside world of promotion-controller: Jenkins,
//! GitHub Actions and GitLab CI servers that answer the REST calls the real
//! adapters make and pass or fail as a [`CiScript`] says; a GitHub API that keeps
//! labels and commit statuses; and an Argo CD stand-in ([`argo`]) that syncs
//! Applications on a real kube-apiserver.
//!
//! Used by the end-to-end tests, `cargo xtask demo` (the real binary against these
//! servers) and `cargo xtask bench` (thousands of trackers), so every request is
//! O(1) on in-memory maps and nothing is logged per request above debug level.
//! Everything binds 127.0.0.1 on a free port and stops when [`StandIns`] is dropped.

#![warn(missing_docs)]

pub mod argo;
mod callbacks;
mod github;
mod gitlab;
mod jenkins;
mod journal;
mod pulls;
mod runtime;
mod script;

pub use journal::{
    CallbackDelivery, CommitStatus, Finished, Journal, JournalEntry, LabelChange, PostedStatus,
    Triggered,
};
pub use pulls::PullRequests;
pub use script::{CiScript, Outcome};

use std::collections::BTreeMap;
use std::sync::Arc;

/// The Secret of the Jenkins connection (`username`, `token`).
pub const JENKINS_SECRET: &str = "jenkins-credentials";
/// The Secret of the GitHub Actions connection (`token`).
pub const GITHUB_ACTIONS_SECRET: &str = "github-actions-credentials";
/// The Secret of the GitLab connection (`token`).
pub const GITLAB_SECRET: &str = "gitlab-credentials";
/// The Secret of the GitHub connection (`token`).
pub const GITHUB_SECRET: &str = "github-credentials";
/// The repository bare workflow file names (`contract.yml`) refer to in [`StandIns::connections_yaml`].
pub const DEFAULT_REPOSITORY: &str = "acme/shop";

/// The Jenkins user the stand-in accepts.
const JENKINS_USER: &str = "promotion-bot";
/// Credentials the stand-ins accept; fixed, since the servers only listen on 127.0.0.1.
const JENKINS_TOKEN: &str = "11standin0jenkins0api0token";
const GITLAB_TOKEN: &str = "glpat-standin-access-token";
const GITHUB_TOKEN: &str = "ghp_standinGitHubToken0000000000000000";

/// Where completed runs are announced (the controller's webhook receiver); None = polling only.
#[derive(Clone)]
pub struct Callbacks {
    /// The receiver's base URL, e.g. `http://127.0.0.1:9443`; paths `/webhooks/{github,gitlab,jenkins}` are appended.
    pub webhook_base: String,
    /// The GitHub webhook secret that signs `workflow_run` events (`X-Hub-Signature-256`).
    pub github_secret: String,
    /// The token GitLab sends in `X-Gitlab-Token`.
    pub gitlab_token: String,
    /// The token the Jenkins notification sends in `X-Promotion-Token`.
    pub jenkins_token: String,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("webhook_base", &self.webhook_base)
            .finish_non_exhaustive()
    }
}

/// How the stand-ins behave.
pub struct StandInConfig {
    /// How each CI run ends, and when.
    pub script: CiScript,
    /// Announce finished runs to this webhook receiver; `None`: the controller must poll.
    pub callbacks: Option<Callbacks>,
}

/// The running stand-ins; the servers stop when this is dropped.
pub struct StandIns {
    /// The Jenkins base URL, as the connections file wants it.
    pub jenkins_url: String,
    /// The GitLab base URL (the adapter appends `/api/v4`).
    pub gitlab_url: String,
    /// The GitHub API base URL (as `https://api.github.com`).
    pub github_url: String,
    /// Everything the stand-ins were asked.
    pub journal: Journal,
    /// The GitHub stand-in's pull requests, opened, pushed to and closed by the test.
    pub pull_requests: PullRequests,
    stop: tokio::sync::watch::Sender<bool>,
    servers: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for StandIns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StandIns")
            .field("jenkins_url", &self.jenkins_url)
            .field("gitlab_url", &self.gitlab_url)
            .field("github_url", &self.github_url)
            .finish_non_exhaustive()
    }
}

impl Drop for StandIns {
    fn drop(&mut self) {
        // Stops the timers (no callback after this) and the servers at once.
        let _ = self.stop.send(true);
        for s in &self.servers {
            s.abort();
        }
    }
}

impl StandIns {
    /// Starts the Jenkins, GitLab and GitHub stand-ins on 127.0.0.1 at free ports.
    pub async fn start(config: StandInConfig) -> anyhow::Result<Self> {
        let journal = Journal::new();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let notifier = match config.callbacks {
            Some(c) => Some(Arc::new(callbacks::Notifier::new(c, journal.clone())?)),
            None => None,
        };
        let shared = runtime::Shared {
            script: config.script,
            journal: journal.clone(),
            notifier,
            stop: stop_rx.clone(),
        };
        let (jenkins_listener, jenkins_url) = runtime::bind().await?;
        let (gitlab_listener, gitlab_url) = runtime::bind().await?;
        let (github_listener, github_url) = runtime::bind().await?;
        let jenkins = jenkins::Jenkins::new(
            jenkins_url.clone(),
            JENKINS_USER,
            JENKINS_TOKEN,
            shared.clone(),
        );
        let gitlab = gitlab::GitLab::new(gitlab_url.clone(), GITLAB_TOKEN, shared.clone());
        let pull_requests = PullRequests::new(journal.clone());
        let github = github::GitHub::new(
            github_url.clone(),
            GITHUB_TOKEN,
            shared,
            pull_requests.clone(),
        );
        let servers = vec![
            runtime::serve(jenkins_listener, jenkins.router(), stop_rx.clone()),
            runtime::serve(gitlab_listener, gitlab.router(), stop_rx.clone()),
            runtime::serve(github_listener, github.router(), stop_rx),
        ];
        tracing::debug!(%jenkins_url, %gitlab_url, %github_url, "stand-ins started");
        Ok(Self {
            jenkins_url,
            gitlab_url,
            github_url,
            journal,
            pull_requests,
            stop,
            servers,
        })
    }

    /// The controller's connections file (YAML for `FileConfig`): connections
    /// `jenkins`, `github-actions`, `gitlab` and `github`, each the default of its
    /// kind, with the Secrets of [`StandIns::secrets`]. Bare workflow names refer to
    /// [`DEFAULT_REPOSITORY`].
    pub fn connections_yaml(&self) -> String {
        self.connections_yaml_for(DEFAULT_REPOSITORY)
    }

    /// [`StandIns::connections_yaml`] with bare workflow names referring to `repository` (`owner/name`).
    pub fn connections_yaml_for(&self, repository: &str) -> String {
        let entry = |name: &str, url: &str, secret: &str| {
            serde_json::json!({
                "name": name, "kind": name, "url": url, "default": true,
                "secretRef": {"name": secret},
            })
        };
        let mut actions = entry("github-actions", &self.github_url, GITHUB_ACTIONS_SECRET);
        actions["settings"] = serde_json::json!({ "repository": repository });
        let file = serde_json::json!({
            "connections": [
                entry("jenkins", &self.jenkins_url, JENKINS_SECRET),
                actions,
                entry("gitlab", &self.gitlab_url, GITLAB_SECRET),
                entry("github", &self.github_url, GITHUB_SECRET),
            ]
        });
        // A JSON value of strings and maps always renders as YAML.
        serde_yaml::to_string(&file).unwrap_or_default()
    }

    /// The Secrets (name -> string data) the connections refer to, with the
    /// credentials these stand-ins accept.
    pub fn secrets(&self) -> Vec<(String, BTreeMap<String, String>)> {
        let data = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>()
        };
        vec![
            (
                JENKINS_SECRET.to_owned(),
                data(&[("username", JENKINS_USER), ("token", JENKINS_TOKEN)]),
            ),
            (
                GITHUB_ACTIONS_SECRET.to_owned(),
                data(&[("token", GITHUB_TOKEN)]),
            ),
            (GITLAB_SECRET.to_owned(), data(&[("token", GITLAB_TOKEN)])),
            (GITHUB_SECRET.to_owned(), data(&[("token", GITHUB_TOKEN)])),
        ]
    }
}

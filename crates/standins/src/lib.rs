//! In-process stand-ins for the outside world of promotion-controller: Jenkins,
//! GitHub Actions and GitLab CI servers that answer the REST calls the real
//! adapters make and pass or fail as a [`CiScript`] says; a GitHub API that keeps
//! labels, commit statuses and pull requests; and an Argo CD stand-in ([`argo`])
//! that syncs Applications on a real kube-apiserver.
//!
//! Used by the end-to-end tests, `cargo xtask demo` (the real binary against these
//! servers) and `cargo xtask bench` (thousands of trackers), so every request is
//! O(1) on in-memory maps and nothing is logged per request above debug level.
//! Everything binds 127.0.0.1 on a free port and stops when [`StandIns`] is dropped.

#![warn(missing_docs)]

pub mod argo;
mod callbacks;
mod faults;
mod github;
mod gitlab;
mod jenkins;
mod journal;
mod pulls;
mod runtime;
mod script;

pub use faults::{Call, Fault, Faults, FindLag, Reply};
pub use github::DispatchMode;
pub use journal::{
    CallbackDelivery, CommitStatus, Finished, Journal, JournalEntry, LabelChange, PostedStatus,
    Triggered,
};
pub use pulls::PullRequests;
pub use script::{CiScript, Outcome};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// The Secret of the Jenkins connection (`username`, `token`).
pub const JENKINS_SECRET: &str = "jenkins-credentials";
/// The Secret of the GitHub Actions connection (`token`).
pub const GITHUB_ACTIONS_SECRET: &str = "github-actions-credentials";
/// The Secret of the GitLab connection (`token`).
pub const GITLAB_SECRET: &str = "gitlab-credentials";
/// A Secret for a GitLab connection with a pipeline trigger token and a read
/// token (`trigger-token`, `read-token`), which the GitLab stand-in accepts as well.
pub const GITLAB_TRIGGER_SECRET: &str = "gitlab-trigger-credentials";
/// A Secret with only a `read_api` token (`token`): it reads but cannot start or cancel.
pub const GITLAB_READ_SECRET: &str = "gitlab-read-credentials";
/// The Secret of the GitHub connection (`token`).
pub const GITHUB_SECRET: &str = "github-credentials";
/// A Secret for a GitHub connection as a GitHub App (`app-id`, `installation-id`,
/// `private-key`), which the GitHub stand-in accepts as well.
pub const GITHUB_APP_SECRET: &str = "github-app-credentials";
/// The GitHub App the stand-in knows.
pub const GITHUB_APP_ID: &str = "4242";
/// The installation of that App.
pub const GITHUB_APP_INSTALLATION: u64 = 77;
/// The App's private key: a throw-away test key (see `data/README.md`).
pub const GITHUB_APP_PRIVATE_KEY: &str = include_str!("../data/app-key.pem");
/// The App's public key, with which the stand-in checks the App's JWTs.
pub const GITHUB_APP_PUBLIC_KEY: &[u8] = include_bytes!("../data/app-key.pub.pem");
/// The repository bare workflow file names (`contract.yml`) refer to in [`StandIns::connections_yaml`].
pub const DEFAULT_REPOSITORY: &str = "acme/shop";

/// The Jenkins user the stand-in accepts.
const JENKINS_USER: &str = "promotion-bot";
/// Credentials the stand-ins accept; fixed, since the servers only listen on 127.0.0.1.
const JENKINS_TOKEN: &str = "11standin0jenkins0api0token";
const GITLAB_TOKEN: &str = "glpat-standin-access-token";
const GITLAB_READ_TOKEN: &str = "glpat-standin-read-token";
const GITLAB_TRIGGER_TOKEN: &str = "glptt-standin-trigger-token";
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
    /// The Jenkins stand-in's fault layer and calls.
    pub jenkins: Faults,
    /// The GitLab stand-in's fault layer and calls.
    pub gitlab: Faults,
    /// The GitHub stand-in's fault layer and calls.
    pub github: Faults,
    jenkins_server: Arc<jenkins::Jenkins>,
    gitlab_server: Arc<gitlab::GitLab>,
    github_server: Arc<github::GitHub>,
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
        let (jenkins_faults, gitlab_faults, github_faults) =
            (Faults::default(), Faults::default(), Faults::default());
        let jenkins = jenkins::Jenkins::new(
            jenkins_url.clone(),
            JENKINS_USER,
            JENKINS_TOKEN,
            shared.clone(),
            jenkins_faults.clone(),
        );
        let gitlab = gitlab::GitLab::new(
            gitlab_url.clone(),
            gitlab::Tokens {
                api: GITLAB_TOKEN,
                read: GITLAB_READ_TOKEN,
                trigger: GITLAB_TRIGGER_TOKEN,
            },
            shared.clone(),
            gitlab_faults.clone(),
        );
        let pull_requests = PullRequests::new(journal.clone());
        let github = github::GitHub::new(
            github_url.clone(),
            GITHUB_TOKEN,
            github::App {
                id: GITHUB_APP_ID.to_owned(),
                installation_id: GITHUB_APP_INSTALLATION,
                public_key: GITHUB_APP_PUBLIC_KEY,
            },
            shared,
            github_faults.clone(),
            pull_requests.clone(),
        );
        let behind = |router: axum::Router, faults: &Faults| {
            router.layer(axum::middleware::from_fn_with_state(
                faults.clone(),
                faults::layer,
            ))
        };
        let servers = vec![
            runtime::serve(
                jenkins_listener,
                behind(jenkins.clone().router(), &jenkins_faults),
                stop_rx.clone(),
            ),
            runtime::serve(
                gitlab_listener,
                behind(gitlab.clone().router(), &gitlab_faults),
                stop_rx.clone(),
            ),
            runtime::serve(
                github_listener,
                behind(github.clone().router(), &github_faults),
                stop_rx,
            ),
        ];
        tracing::debug!(%jenkins_url, %gitlab_url, %github_url, "stand-ins started");
        Ok(Self {
            jenkins_url,
            gitlab_url,
            github_url,
            journal,
            pull_requests,
            jenkins: jenkins_faults,
            gitlab: gitlab_faults,
            github: github_faults,
            jenkins_server: jenkins,
            gitlab_server: gitlab,
            github_server: github,
            stop,
            servers,
        })
    }

    /// Ends `run` now with `outcome` (announcing it like any run), whatever the
    /// script said; a run already final stays as it is.
    pub async fn finish(&self, run: &Triggered, outcome: Outcome) {
        match run.provider {
            "jenkins" => {
                if let Some(number) = run
                    .run_id
                    .strip_prefix("build:")
                    .and_then(|n| n.parse().ok())
                {
                    self.jenkins_server.finish(&run.job, number, outcome).await;
                }
            }
            "gitlab" => {
                if let Ok(id) = run.run_id.parse() {
                    self.gitlab_server.clone().finish(id, outcome).await;
                }
            }
            _ => {
                if let Ok(id) = run.run_id.parse() {
                    self.github_server.clone().finish(id, outcome).await;
                }
            }
        }
    }

    /// Makes the Jenkins stand-in refuse a POST without a CSRF crumb (and the
    /// session cookie it is bound to), as Jenkins does for a password login;
    /// off by default, as for API tokens.
    pub fn require_jenkins_crumb(&self, required: bool) {
        self.jenkins_server.require_crumb(required);
    }

    /// Sets how the GitHub stand-in answers a workflow dispatch.
    pub fn set_github_dispatch(&self, mode: DispatchMode) {
        self.github_server.set_dispatch_mode(mode);
    }

    /// How long the installation tokens the GitHub stand-in issues from now on live.
    pub fn set_github_token_lifetimes(&self, next: &[Duration], then: Duration) {
        self.github_server.set_token_lifetimes(next, then);
    }

    /// The installation tokens the GitHub stand-in issued, in order.
    pub fn github_installation_tokens(&self) -> Vec<String> {
        self.github_server.issued_tokens()
    }

    /// Makes the GitHub stand-in refuse an installation token it issued, as when
    /// the App is uninstalled or the token revoked.
    pub fn revoke_github_token(&self, token: &str) {
        self.github_server.revoke(token);
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
            let mut e = serde_json::json!({
                "name": name, "kind": name, "url": url, "default": true,
                "secretRef": {"name": secret},
            });
            if name != "github" {
                // The stand-ins belong to no team: every namespace may use them.
                e["allowedNamespaces"] = serde_json::json!(["*"]);
            }
            e
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
            (
                GITLAB_TRIGGER_SECRET.to_owned(),
                data(&[
                    ("trigger-token", GITLAB_TRIGGER_TOKEN),
                    ("read-token", GITLAB_READ_TOKEN),
                ]),
            ),
            (
                GITLAB_READ_SECRET.to_owned(),
                data(&[("token", GITLAB_READ_TOKEN)]),
            ),
            (GITHUB_SECRET.to_owned(), data(&[("token", GITHUB_TOKEN)])),
            (
                GITHUB_APP_SECRET.to_owned(),
                data(&[
                    ("app-id", GITHUB_APP_ID),
                    ("installation-id", &GITHUB_APP_INSTALLATION.to_string()),
                    ("private-key", GITHUB_APP_PRIVATE_KEY),
                ]),
            ),
        ]
    }
}

//! From one entry of the connections file and its Secret's data to a ready
//! adapter: a CI runner, or the GitHub client and pull request reader.

use crate::connections::{
    ConfigError, Connection, ConnectionConfig, ConnectionKind, Credentials, SecretRef,
};
use crate::github::{GitHubActionsRunner, GitHubApi, GitHubConnection, GitHubPullRequests};
use crate::{GitLabRunner, JenkinsRunner};
use promotion_core::ports::{GitHubClient, PullRequestReader, TestRunner};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A Secret the configuration refers to (in the controller's own namespace).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretName {
    /// The Secret's name.
    pub name: String,
}

/// One named connection to a CI system or GitHub, as the connections file has it.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionEntry {
    /// Referred to by a policy test's `connection`.
    pub name: String,
    /// `jenkins`, `github-actions`, `gitlab` or `github`.
    pub kind: ConnectionKind,
    /// The API base URL (GitHub Enterprise: `https://host/api/v3`; self-hosted GitLab: its root).
    pub url: String,
    /// The provider's default connection, used by tests that name none.
    #[serde(default)]
    pub default: bool,
    /// The Secret with the credentials.
    pub secret_ref: SecretName,
    /// Kind-specific settings (see the README's connections table).
    #[serde(default)]
    pub settings: BTreeMap<String, serde_json::Value>,
    /// The namespaces whose policies may use it (`"*"`: all). Absent, with no
    /// `namespaceSelector`: nobody may (a warning at start-up says so).
    #[serde(default)]
    pub allowed_namespaces: Option<Vec<String>>,
    /// The namespaces whose policies may use it, by the labels of the Namespace object.
    #[serde(default)]
    pub namespace_selector: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// Patterns (`*` any run of characters, `/` included; `?` one) of the Jenkins job
    /// paths, GitLab project paths or workflow files it may run; absent: any.
    #[serde(default)]
    pub jobs: Vec<String>,
}

impl ConnectionEntry {
    /// Who may use this connection, for the domain's access rules.
    pub fn grant(&self) -> promotion_core::access::ConnectionGrant {
        promotion_core::access::ConnectionGrant {
            namespaces: self.allowed_namespaces.clone().unwrap_or_default(),
            namespace_selector: self.namespace_selector.clone(),
            jobs: self.jobs.clone(),
        }
    }

    /// Whether no namespace at all may use this connection.
    pub fn grants_nobody(&self) -> bool {
        self.allowed_namespaces.as_ref().is_none_or(Vec::is_empty)
            && self.namespace_selector.is_none()
    }

    /// The configuration without credentials; every mistake no Secret can fix
    /// (URL, unknown or malformed setting) is an error here.
    pub fn config(&self) -> Result<ConnectionConfig, ConfigError> {
        let mut config = ConnectionConfig::new(&self.name, self.kind, &self.url)?;
        config.apply_settings(&self.settings)?;
        Ok(config)
    }

    /// The adapter of this connection, with the credentials of `data`, the
    /// Secret's data (`namespace` names the Secret in errors).
    pub fn build(
        &self,
        namespace: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Adapter, ConfigError> {
        let secret = SecretRef {
            namespace: namespace.to_owned(),
            name: self.secret_ref.name.clone(),
        };
        let connection = Connection {
            config: self.config()?,
            credentials: Credentials::from_secret(&self.name, self.kind, &secret, data)?,
        };
        Adapter::new(&connection)
    }
}

/// A built adapter: a CI runner, or GitHub itself.
#[derive(Clone)]
pub enum Adapter {
    /// Jenkins, GitLab or GitHub Actions.
    Runner(Arc<dyn TestRunner>),
    /// GitHub itself: both ports over one connection.
    GitHub {
        /// Labels and commit statuses.
        client: Arc<dyn GitHubClient>,
        /// Pull request reads.
        pull_requests: Arc<dyn PullRequestReader>,
    },
}

impl std::fmt::Debug for Adapter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Runner(_) => "Adapter::Runner",
            Self::GitHub { .. } => "Adapter::GitHub",
        })
    }
}

impl Adapter {
    /// The adapter a connection of its kind calls for.
    pub fn new(connection: &Connection) -> Result<Self, ConfigError> {
        Ok(match connection.config.kind {
            ConnectionKind::Jenkins => Self::Runner(Arc::new(JenkinsRunner::new(connection)?)),
            ConnectionKind::Gitlab => Self::Runner(Arc::new(GitLabRunner::new(connection)?)),
            ConnectionKind::GithubActions => Self::Runner(Arc::new(GitHubActionsRunner::new(
                GitHubConnection::new(connection)?,
            ))),
            ConnectionKind::Github => {
                // One connection (client, token cache) serves both ports.
                let github = GitHubConnection::new(connection)?;
                Self::GitHub {
                    client: Arc::new(GitHubApi::new(github.clone())),
                    pull_requests: Arc::new(GitHubPullRequests::new(github)),
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(yaml: serde_json::Value) -> Result<ConnectionEntry, serde_json::Error> {
        serde_json::from_value(yaml)
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn every_kind_builds_its_adapter_from_its_secret() {
        let cases = [
            ("jenkins", vec![("username", "bot"), ("token", "t")], false),
            ("gitlab", vec![("token", "glpat-x")], false),
            ("github-actions", vec![("token", "ghp_x")], false),
            ("github", vec![("token", "ghp_x")], true),
        ];
        for (kind, secret, is_github) in cases {
            let e = entry(serde_json::json!({
                "name": kind, "kind": kind, "url": "https://ci.example.com",
                "secretRef": {"name": "s"},
            }))
            .unwrap();
            let built = e.build("ns", &data(&secret)).unwrap();
            assert_eq!(matches!(built, Adapter::GitHub { .. }), is_github, "{kind}");
        }
    }

    #[test]
    fn unknown_kinds_and_settings_are_refused_before_any_secret() {
        let err = entry(serde_json::json!({
            "name": "a", "kind": "travis", "url": "http://x", "secretRef": {"name": "s"},
        }))
        .unwrap_err();
        assert!(err.to_string().contains("unknown kind 'travis'"), "{err}");

        let e = entry(serde_json::json!({
            "name": "j", "kind": "jenkins", "url": "http://x", "secretRef": {"name": "s"},
            "settings": {"repository": "acme/shop"},
        }))
        .unwrap();
        let err = e.config().unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection j: setting 'repository' is not a setting of a jenkins connection"
        );
    }

    #[test]
    fn a_secret_of_the_wrong_shape_names_the_connection_secret_and_key() {
        let e = entry(serde_json::json!({
            "name": "gh", "kind": "github", "url": "https://api.github.com", "secretRef": {"name": "gh-creds"},
        }))
        .unwrap();
        let err = e.build("ops", &data(&[("username", "x")])).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("connection gh: secret ops/gh-creds has no key 'token'"),
            "{err}"
        );
    }
}

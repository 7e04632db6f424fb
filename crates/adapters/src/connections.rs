//! Named CI connections: where a CI system is, how to talk to it, and the
//! credentials read from a Kubernetes Secret's data. Credentials never show in
//! Debug output, logs or errors.

pub use crate::github::{AppCredentials, GitHubCredentials, Repository};
use crate::secrets::SecretReader;
use promotion_api::Provider;
use promotion_core::ports::RunState;
pub use promotion_core::secret::SecretString;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use url::Url;

/// Which kind of system a connection reaches, as the connections file spells it
/// (`jenkins`, `gitlab`, `github-actions`, `github`).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "&'static str")]
pub enum ConnectionKind {
    /// Jenkins, through its remote access API.
    Jenkins,
    /// GitLab CI.
    Gitlab,
    /// GitHub Actions.
    GithubActions,
    /// GitHub itself (labels, commit statuses).
    Github,
}

impl ConnectionKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [
        Self::Jenkins,
        Self::Gitlab,
        Self::GithubActions,
        Self::Github,
    ];

    /// The name the connections file uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Jenkins => "jenkins",
            Self::Gitlab => "gitlab",
            Self::GithubActions => "github-actions",
            Self::Github => "github",
        }
    }

    /// The CI provider a policy names for this kind; `None` for GitHub itself.
    pub fn provider(self) -> Option<Provider> {
        match self {
            Self::Jenkins => Some(Provider::Jenkins),
            Self::Gitlab => Some(Provider::Gitlab),
            Self::GithubActions => Some(Provider::GithubActions),
            Self::Github => None,
        }
    }
}

impl fmt::Display for ConnectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<ConnectionKind> for &'static str {
    fn from(kind: ConnectionKind) -> Self {
        kind.as_str()
    }
}

impl TryFrom<String> for ConnectionKind {
    type Error = ConfigError;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl std::str::FromStr for ConnectionKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| ConfigError::UnknownKind(s.to_owned()))
    }
}

/// Timeouts, retries and limits of a connection's HTTP calls (the same for every kind).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest wait for a TCP + TLS connection (`connectTimeout`).
    pub connect_timeout: Duration,
    /// Longest wait for a whole request, body included (`requestTimeout`).
    pub request_timeout: Duration,
    /// How many times a read is retried after a transient failure (`readRetries`).
    pub read_retries: usize,
    /// The first backoff delay, jittered and doubled each time (`retryMinDelay`).
    pub retry_min_delay: Duration,
    /// The longest backoff delay (`retryMaxDelay`).
    pub retry_max_delay: Duration,
    /// A read waits out a rate limit this short; a longer one is returned as
    /// `retry_after` (`maxRateLimitWait`).
    pub max_rate_limit_wait: Duration,
    /// The largest answer body read, in bytes (`maxBodySize`).
    pub max_body_bytes: usize,
}

/// The default of `maxBodySize`: far above any answer the adapters read.
pub const DEFAULT_MAX_BODY_BYTES: usize = 4 * 1024 * 1024;

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_retries: 3,
            retry_min_delay: Duration::from_millis(200),
            retry_max_delay: Duration::from_secs(5),
            max_rate_limit_wait: Duration::from_secs(10),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
        }
    }
}

/// Settings only Jenkins connections use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JenkinsSettings {
    /// What an UNSTABLE build (tests failed, build succeeded) means for a gate.
    pub unstable: RunState,
    /// How many builds one `find` page (a `{M,N}` range of the build history) holds.
    pub find_depth: usize,
    /// How many pages `find` reads back towards the intent's time before it says "not sure".
    pub find_pages: usize,
}

/// The default of `maxFindPages`: how far back `find` reads before it says "not sure".
pub const DEFAULT_FIND_PAGES: usize = 20;

impl Default for JenkinsSettings {
    fn default() -> Self {
        Self {
            unstable: RunState::Failed,
            find_depth: 100,
            find_pages: DEFAULT_FIND_PAGES,
        }
    }
}

/// How a GitLab pipeline receives its parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum GitLabParameters {
    /// As CI/CD variables (`variables`).
    #[default]
    Variables,
    /// As pipeline inputs (`inputs`), for projects that forbid pipeline variables.
    Inputs,
}

/// Settings only GitLab connections use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitLabSettings {
    /// Variables or inputs.
    pub parameters: GitLabParameters,
    /// How many pipelines one `find` page holds (`per_page`, at most 100).
    pub find_depth: usize,
    /// How many pages `find` reads back towards the intent's time before it says "not sure".
    pub find_pages: usize,
}

impl Default for GitLabSettings {
    fn default() -> Self {
        Self {
            parameters: GitLabParameters::Variables,
            find_depth: 100,
            find_pages: DEFAULT_FIND_PAGES,
        }
    }
}

/// Settings only GitHub Actions and GitHub connections use.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GitHubSettings {
    /// The repository a bare workflow file name refers to (`repository`).
    pub repository: Option<Repository>,
    /// How many times a dispatched run without an id is looked up (`findAttempts`).
    pub find_attempts: usize,
    /// The pause between those look-ups (`findInterval`).
    pub find_interval: Duration,
    /// How many pages of 100 runs `find` reads back towards the intent's time (`maxFindPages`).
    pub find_pages: usize,
}

impl Default for GitHubSettings {
    fn default() -> Self {
        Self {
            repository: None,
            find_attempts: 5,
            find_interval: Duration::from_secs(2),
            find_pages: DEFAULT_FIND_PAGES,
        }
    }
}

/// Where a connection's credentials live, for messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretRef {
    /// The Secret's namespace.
    pub namespace: String,
    /// The Secret's name.
    pub name: String,
}

impl fmt::Display for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A named connection to one CI system, without its credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionConfig {
    /// The name policies use in `connection`.
    pub name: String,
    /// What it reaches.
    pub kind: ConnectionKind,
    /// The server's base URL, with any path prefix (`https://git.example.com/gitlab`).
    pub base_url: Url,
    /// Timeouts and retries.
    pub http: HttpSettings,
    /// Jenkins-only settings.
    pub jenkins: JenkinsSettings,
    /// GitLab-only settings.
    pub gitlab: GitLabSettings,
    /// GitHub-only settings.
    pub github: GitHubSettings,
}

impl ConnectionConfig {
    /// A connection with default settings; the base URL must be http(s).
    pub fn new(name: &str, kind: ConnectionKind, base_url: &str) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::InvalidUrl {
            connection: name.to_owned(),
            reason,
        };
        let base_url = Url::parse(base_url).map_err(|e| invalid(e.to_string()))?;
        if !matches!(base_url.scheme(), "http" | "https") {
            return Err(invalid(format!(
                "scheme {} is not http(s)",
                base_url.scheme()
            )));
        }
        if !base_url.username().is_empty() || base_url.password().is_some() {
            // Credentials belong in the Secret; in the URL they would show up in logs.
            return Err(invalid("it must not hold credentials".to_owned()));
        }
        Ok(Self {
            name: name.to_owned(),
            kind,
            base_url,
            http: HttpSettings::default(),
            jenkins: JenkinsSettings::default(),
            gitlab: GitLabSettings::default(),
            github: GitHubSettings::default(),
        })
    }
}

/// Jenkins: a user and one of their API tokens (API tokens need no CSRF crumb).
#[derive(Clone, PartialEq, Eq)]
pub struct JenkinsCredentials {
    /// The Jenkins user.
    pub user: String,
    /// The user's API token.
    pub token: SecretString,
}

impl fmt::Debug for JenkinsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JenkinsCredentials")
            .field("user", &self.user)
            .field("token", &self.token)
            .finish()
    }
}

/// GitLab: either an access token that creates and reads pipelines, or a
/// pipeline trigger token plus a token that can read them.
#[derive(Clone, PartialEq, Eq)]
pub enum GitLabCredentials {
    /// A personal, project or group access token (scope `api`), sent as `PRIVATE-TOKEN`.
    AccessToken(SecretString),
    /// A trigger token starts pipelines; it cannot read them, so `read_token`
    /// (scope `read_api`, or `api` to also cancel) does the polling.
    TriggerToken {
        /// The pipeline trigger token.
        trigger_token: SecretString,
        /// The token for reads (and cancels, when its scope allows).
        read_token: SecretString,
    },
}

impl fmt::Debug for GitLabCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AccessToken(t) => f.debug_tuple("AccessToken").field(t).finish(),
            Self::TriggerToken {
                trigger_token,
                read_token,
            } => f
                .debug_struct("TriggerToken")
                .field("trigger_token", trigger_token)
                .field("read_token", read_token)
                .finish(),
        }
    }
}

impl GitLabCredentials {
    /// The token that reads pipelines and cancels them.
    pub fn api_token(&self) -> &SecretString {
        match self {
            Self::AccessToken(t) => t,
            Self::TriggerToken { read_token, .. } => read_token,
        }
    }
}

/// A connection's credentials, by kind.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// Jenkins user and API token.
    Jenkins(JenkinsCredentials),
    /// GitLab tokens.
    Gitlab(GitLabCredentials),
    /// A GitHub token or GitHub App (for GitHub Actions and GitHub).
    Github(GitHubCredentials),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Jenkins(c) => f.debug_tuple("Jenkins").field(c).finish(),
            Self::Gitlab(c) => f.debug_tuple("Gitlab").field(c).finish(),
            Self::Github(c) => f.debug_tuple("Github").field(c).finish(),
        }
    }
}

/// The Secret keys each kind reads.
pub mod keys {
    /// Jenkins user name.
    pub const USERNAME: &str = "username";
    /// Jenkins API token, GitLab access token or GitHub token.
    pub const TOKEN: &str = "token";
    /// GitLab pipeline trigger token.
    pub const TRIGGER_TOKEN: &str = "trigger-token";
    /// GitLab token that reads pipelines when `trigger-token` starts them.
    pub const READ_TOKEN: &str = "read-token";
    /// GitHub App id.
    pub const APP_ID: &str = "app-id";
    /// GitHub App installation id.
    pub const INSTALLATION_ID: &str = "installation-id";
    /// GitHub App private key (PEM).
    pub const PRIVATE_KEY: &str = "private-key";
}

impl Credentials {
    /// Reads the credentials of `connection` (of `kind`) from the data of the Secret `secret`.
    ///
    /// Jenkins: `username` and `token`. GitLab: `token`, or `trigger-token` with
    /// `read-token` (`token` serves as the read token when `read-token` is absent).
    /// GitHub: `token`, or `app-id`, `installation-id` and `private-key` for a
    /// GitHub App. Values are trimmed, since `echo` adds a newline.
    pub fn from_secret(
        connection: &str,
        kind: ConnectionKind,
        secret: &SecretRef,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let reader = SecretReader::new(connection, secret, data);
        Ok(match kind {
            ConnectionKind::Jenkins => Self::Jenkins(JenkinsCredentials {
                user: reader.required(keys::USERNAME)?.expose().to_owned(),
                token: reader.required(keys::TOKEN)?,
            }),
            ConnectionKind::Gitlab => match reader.optional(keys::TRIGGER_TOKEN)? {
                Some(trigger_token) => {
                    let read_token = match reader.optional(keys::READ_TOKEN)? {
                        Some(t) => t,
                        None => reader.optional(keys::TOKEN)?.ok_or_else(|| {
                            reader.error(format!(
                                "has '{}' but no '{}' (a trigger token cannot read pipelines)",
                                keys::TRIGGER_TOKEN,
                                keys::READ_TOKEN
                            ))
                        })?,
                    };
                    Self::Gitlab(GitLabCredentials::TriggerToken {
                        trigger_token,
                        read_token,
                    })
                }
                None => Self::Gitlab(GitLabCredentials::AccessToken(
                    reader.required(keys::TOKEN)?,
                )),
            },
            ConnectionKind::GithubActions | ConnectionKind::Github => {
                Self::Github(GitHubCredentials::from_secret(&reader)?)
            }
        })
    }
}

/// A connection and its credentials, ready to build a runner from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    /// Where and how.
    pub config: ConnectionConfig,
    /// Who we are there.
    pub credentials: Credentials,
}

impl Connection {
    /// The error for credentials of another kind than the connection.
    pub(crate) fn wrong_credentials(&self) -> ConfigError {
        ConfigError::WrongCredentials {
            connection: self.config.name.clone(),
            kind: self.config.kind,
        }
    }
}

/// A connection that cannot be configured.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key of the Secret is missing or malformed.
    #[error("connection {connection}: secret {secret} {problem}")]
    Secret {
        /// The connection.
        connection: String,
        /// `namespace/name` of the Secret.
        secret: String,
        /// What is wrong, naming the key.
        problem: String,
    },
    /// The base URL is not usable.
    #[error("connection {connection}: invalid base URL: {reason}")]
    InvalidUrl {
        /// The connection.
        connection: String,
        /// Why.
        reason: String,
    },
    /// A setting is unknown for the kind, or its value is malformed.
    #[error("connection {connection}: setting '{key}' {problem}")]
    Setting {
        /// The connection.
        connection: String,
        /// The setting.
        key: String,
        /// What is wrong.
        problem: String,
    },
    /// A setting other than a credential is wrong.
    #[error("connection {connection}: {problem}")]
    Invalid {
        /// The connection.
        connection: String,
        /// What is wrong.
        problem: String,
    },
    /// The kind is none of jenkins, gitlab, github-actions, github.
    #[error(
        "unknown kind '{0}' of a connection (expected jenkins, gitlab, github-actions or github)"
    )]
    UnknownKind(String),
    /// The credentials are of another kind than the connection.
    #[error("connection {connection}: credentials do not fit a {kind} connection")]
    WrongCredentials {
        /// The connection.
        connection: String,
        /// The connection's kind.
        kind: ConnectionKind,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret() -> SecretRef {
        SecretRef {
            namespace: "ci".into(),
            name: "jenkins".into(),
        }
    }

    fn data(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn missing_key_names_connection_secret_and_key() {
        let err = Credentials::from_secret(
            "jenkins-main",
            ConnectionKind::Jenkins,
            &secret(),
            &data(&[("username", "bot")]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection jenkins-main: secret ci/jenkins has no key 'token'"
        );
    }

    #[test]
    fn malformed_values_are_clear_errors() {
        let mut d = data(&[("username", "bot")]);
        d.insert("token".into(), vec![0xff, 0xfe]);
        let err = Credentials::from_secret("j", ConnectionKind::Jenkins, &secret(), &d)
            .unwrap_err()
            .to_string();
        assert!(err.contains("key 'token' is not valid UTF-8"), "{err}");

        let err = Credentials::from_secret(
            "j",
            ConnectionKind::Jenkins,
            &secret(),
            &data(&[("username", "bot"), ("token", "  \n")]),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("key 'token' is empty"), "{err}");

        let err = Credentials::from_secret(
            "j",
            ConnectionKind::Jenkins,
            &secret(),
            &data(&[("username", "bot"), ("token", "s3cr3t\u{1}tail")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("key 'token' holds control characters"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t"), "{err}");
    }

    #[test]
    fn values_are_trimmed() {
        let c = Credentials::from_secret(
            "j",
            ConnectionKind::Jenkins,
            &secret(),
            &data(&[("username", "bot\n"), ("token", "t0k\n")]),
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials::Jenkins(JenkinsCredentials {
                user: "bot".into(),
                token: SecretString::new("t0k"),
            })
        );
    }

    #[test]
    fn gitlab_trigger_token_needs_a_read_token() {
        let err = Credentials::from_secret(
            "gl",
            ConnectionKind::Gitlab,
            &secret(),
            &data(&[("trigger-token", "glptt-x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("has 'trigger-token' but no 'read-token'"),
            "{err}"
        );

        let c = Credentials::from_secret(
            "gl",
            ConnectionKind::Gitlab,
            &secret(),
            &data(&[("trigger-token", "glptt-x"), ("read-token", "glpat-r")]),
        )
        .unwrap();
        assert!(matches!(
            c,
            Credentials::Gitlab(GitLabCredentials::TriggerToken { .. })
        ));
        let c = Credentials::from_secret(
            "gl",
            ConnectionKind::Gitlab,
            &secret(),
            &data(&[("token", "glpat-a")]),
        )
        .unwrap();
        assert_eq!(
            c,
            Credentials::Gitlab(GitLabCredentials::AccessToken(SecretString::new("glpat-a")))
        );
    }

    #[test]
    fn base_url_must_be_http_without_credentials() {
        assert!(ConnectionConfig::new("j", ConnectionKind::Jenkins, "ftp://x").is_err());
        let err = ConnectionConfig::new("j", ConnectionKind::Jenkins, "https://u:pw@x/")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("pw"), "{err}");
        assert!(
            ConnectionConfig::new(
                "j",
                ConnectionKind::Jenkins,
                "https://ci.example.com/jenkins"
            )
            .is_ok()
        );
    }

    #[test]
    fn debug_output_of_every_config_and_credential_type_holds_no_secret() {
        const SECRETS: [&str; 5] = [
            "jenkins-token-s3cr3t",
            "glpat-access-s3cr3t",
            "glptt-trigger-s3cr3t",
            "glpat-read-s3cr3t",
            "ghp-s3cr3t",
        ];
        let jenkins = JenkinsCredentials {
            user: "bot".into(),
            token: SecretString::new(SECRETS[0]),
        };
        let access = GitLabCredentials::AccessToken(SecretString::new(SECRETS[1]));
        let trigger = GitLabCredentials::TriggerToken {
            trigger_token: SecretString::new(SECRETS[2]),
            read_token: SecretString::new(SECRETS[3]),
        };
        let config = ConnectionConfig::new(
            "jenkins-main",
            ConnectionKind::Jenkins,
            "https://ci.example.com",
        )
        .unwrap();
        let outputs = [
            format!("{:?}", SecretString::new(SECRETS[0])),
            format!("{:#?}", jenkins),
            format!("{:?}", access),
            format!("{:?}", trigger),
            format!("{:?}", Credentials::Jenkins(jenkins.clone())),
            format!("{:?}", Credentials::Gitlab(trigger.clone())),
            format!(
                "{:?}",
                Credentials::Github(GitHubCredentials::Token(SecretString::new(SECRETS[4])))
            ),
            format!(
                "{:?}",
                Connection {
                    config: config.clone(),
                    credentials: Credentials::Gitlab(trigger.clone()),
                }
            ),
            format!("{:?}", config),
            format!("{:?}", secret()),
            format!("{:?}", HttpSettings::default()),
        ];
        for out in &outputs {
            for secret in SECRETS {
                assert!(!out.contains(secret), "{out} shows {secret}");
            }
        }
        assert!(outputs[1].contains("<redacted>") && outputs[1].contains("bot"));
    }
}

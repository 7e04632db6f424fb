//! A GitHub connection's settings and credentials. Credentials come from a
//! Kubernetes Secret's data (read by the controller; this crate has no
//! Kubernetes dependency) and never show in Debug output, logs or errors.
//!
//! Secret keys: `token` (a personal access or fine-grained token), or, for a
//! GitHub App, `app-id`, `installation-id` and `private-key` (PEM).

use jsonwebtoken::EncodingKey;
pub use promotion_core::secret::SecretString;
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;
use url::Url;

/// The GitHub.com API; GitHub Enterprise Server is `https://HOST/api/v3`.
pub const GITHUB_API: &str = "https://api.github.com";

/// Why a connection could not be configured. Never carries a secret value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A key the credentials need is missing from the Secret.
    #[error("connection {connection}: secret {secret} has no key '{key}'{hint}")]
    MissingKey {
        /// The connection's name.
        connection: String,
        /// `namespace/name` of the Secret.
        secret: String,
        /// The missing key.
        key: String,
        /// What else would have done.
        hint: String,
    },
    /// A key is present but its value is unusable (the value itself is not shown).
    #[error("connection {connection}: secret {secret} key '{key}' {problem}")]
    InvalidValue {
        /// The connection's name.
        connection: String,
        /// `namespace/name` of the Secret.
        secret: String,
        /// The key.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A setting other than a credential is wrong.
    #[error("connection {connection}: {problem}")]
    Invalid {
        /// The connection's name.
        connection: String,
        /// What is wrong.
        problem: String,
    },
}

/// How to prove who we are to GitHub.
#[derive(Clone)]
pub enum Credentials {
    /// A personal access token or fine-grained token, sent as a bearer token.
    Token(SecretString),
    /// A GitHub App installation.
    App(AppCredentials),
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Token(<redacted>)"),
            Self::App(app) => f.debug_tuple("App").field(app).finish(),
        }
    }
}

/// A GitHub App's identity: its id, the installation, and its private key.
#[derive(Clone)]
pub struct AppCredentials {
    /// The App's id (the JWT's `iss`).
    pub app_id: String,
    /// The installation whose token we act with.
    pub installation_id: u64,
    pub(crate) key: EncodingKey,
}

impl AppCredentials {
    /// Parses the App's RSA private key (PEM, PKCS#1 or PKCS#8).
    pub fn new(
        app_id: impl Into<String>,
        installation_id: u64,
        private_key_pem: &[u8],
    ) -> Result<Self, jsonwebtoken::errors::Error> {
        Ok(Self {
            app_id: app_id.into(),
            installation_id,
            key: EncodingKey::from_rsa_pem(private_key_pem)?,
        })
    }
}

impl fmt::Debug for AppCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AppCredentials")
            .field("app_id", &self.app_id)
            .field("installation_id", &self.installation_id)
            .field("private_key", &"<redacted>")
            .finish()
    }
}

const APP_KEYS_HINT: &str = " (nor 'app-id', 'installation-id' and 'private-key' for a GitHub App)";

impl Credentials {
    /// Builds credentials from a Secret's data; `secret` (`namespace/name`) and
    /// `connection` only name things in errors.
    pub fn from_secret_data(
        connection: &str,
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<Self, ConfigError> {
        let reader = SecretReader {
            connection,
            secret,
            data,
        };
        match (data.contains_key("token"), data.contains_key("private-key")) {
            (true, true) => Err(reader.invalid(
                "token",
                "is set together with 'private-key'; keep one kind of credentials",
            )),
            (true, false) => Ok(Self::Token(SecretString::new(reader.text("token", "")?))),
            (false, true) => {
                let app_id = reader.text("app-id", "")?;
                let installation_id = reader
                    .text("installation-id", "")?
                    .parse::<u64>()
                    .map_err(|_| reader.invalid("installation-id", "is not a number"))?;
                let pem = reader.text("private-key", "")?;
                let app =
                    AppCredentials::new(app_id, installation_id, pem.as_bytes()).map_err(|_| {
                        reader.invalid("private-key", "is not an RSA private key in PEM form")
                    })?;
                Ok(Self::App(app))
            }
            (false, false) => Err(reader.missing("token", APP_KEYS_HINT)),
        }
    }
}

struct SecretReader<'a> {
    connection: &'a str,
    secret: &'a str,
    data: &'a BTreeMap<String, Vec<u8>>,
}

impl SecretReader<'_> {
    /// The key's value as trimmed UTF-8 (Secrets written by hand often end in a newline).
    fn text(&self, key: &str, hint: &str) -> Result<String, ConfigError> {
        let raw = self.data.get(key).ok_or_else(|| self.missing(key, hint))?;
        let text = std::str::from_utf8(raw).map_err(|_| self.invalid(key, "is not UTF-8"))?;
        let text = text.trim();
        if text.is_empty() {
            return Err(self.invalid(key, "is empty"));
        }
        Ok(text.to_owned())
    }

    fn missing(&self, key: &str, hint: &str) -> ConfigError {
        ConfigError::MissingKey {
            connection: self.connection.to_owned(),
            secret: self.secret.to_owned(),
            key: key.to_owned(),
            hint: hint.to_owned(),
        }
    }

    fn invalid(&self, key: &str, problem: &str) -> ConfigError {
        ConfigError::InvalidValue {
            connection: self.connection.to_owned(),
            secret: self.secret.to_owned(),
            key: key.to_owned(),
            problem: problem.to_owned(),
        }
    }
}

/// Timeouts, retries and waits of a connection's HTTP calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpSettings {
    /// Longest wait for a TCP + TLS connection.
    pub connect_timeout: Duration,
    /// Longest wait for a whole request, body included.
    pub request_timeout: Duration,
    /// How many times a read is retried after a transient failure.
    pub read_retries: usize,
    /// The first backoff delay (jittered, doubled each time).
    pub backoff_min: Duration,
    /// The longest backoff delay.
    pub backoff_max: Duration,
    /// A read sleeps through a rate limit up to this long; longer waits go back
    /// to the engine in `PortError::retry_after`.
    pub max_rate_limit_wait: Duration,
    /// How many times a dispatched run is looked up before giving up.
    pub find_attempts: usize,
    /// The pause between those look-ups.
    pub find_interval: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            read_retries: 3,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(8),
            max_rate_limit_wait: Duration::from_secs(10),
            find_attempts: 5,
            find_interval: Duration::from_secs(2),
        }
    }
}

/// A repository, `owner/name`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Repository {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub name: String,
}

impl std::str::FromStr for Repository {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split('/').collect::<Vec<_>>().as_slice() {
            [owner, name] if !owner.is_empty() && !name.is_empty() => Ok(Self {
                owner: (*owner).to_owned(),
                name: (*name).to_owned(),
            }),
            _ => Err(format!("'{s}' is not an owner/name repository")),
        }
    }
}

/// One named GitHub connection.
#[derive(Clone, Debug)]
pub struct GitHubConfig {
    /// The connection's name, used in every error and log line.
    pub name: String,
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub base_url: Url,
    /// The repository whose workflows a bare workflow file name refers to.
    pub repository: Option<Repository>,
    /// Sent as `User-Agent`, which GitHub requires.
    pub user_agent: String,
    /// Timeouts and retries.
    pub http: HttpSettings,
    /// Token or GitHub App.
    pub credentials: Credentials,
}

impl GitHubConfig {
    /// A connection to `base_url` with default settings.
    pub fn new(
        name: impl Into<String>,
        base_url: &str,
        credentials: Credentials,
    ) -> Result<Self, ConfigError> {
        let name = name.into();
        let base_url = Url::parse(base_url).map_err(|e| ConfigError::Invalid {
            connection: name.clone(),
            problem: format!("base URL '{base_url}' is not a URL: {e}"),
        })?;
        if base_url.cannot_be_a_base() || !matches!(base_url.scheme(), "http" | "https") {
            return Err(ConfigError::Invalid {
                connection: name,
                problem: format!("base URL '{base_url}' is not an http(s) URL"),
            });
        }
        Ok(Self {
            name,
            base_url,
            repository: None,
            user_agent: concat!("promotion-controller/", env!("CARGO_PKG_VERSION")).to_owned(),
            http: HttpSettings::default(),
            credentials,
        })
    }

    /// Names the repository that bare workflow file names refer to.
    pub fn with_repository(mut self, repository: Repository) -> Self {
        self.repository = Some(repository);
        self
    }

    /// Replaces the HTTP settings.
    pub fn with_http(mut self, http: HttpSettings) -> Self {
        self.http = http;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = include_bytes!("../tests/data/app-key.pem");

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    #[test]
    fn token_from_secret_is_trimmed_and_redacted() {
        let creds = Credentials::from_secret_data(
            "github-main",
            "ci/github",
            &data(&[("token", b"ghp_s3cret\n")]),
        )
        .unwrap();
        match &creds {
            Credentials::Token(t) => assert_eq!(t.expose(), "ghp_s3cret"),
            other => panic!("not a token: {other:?}"),
        }
        let config = GitHubConfig::new("github-main", GITHUB_API, creds).unwrap();
        let shown = format!("{config:?} {:?}", config.credentials);
        assert!(!shown.contains("ghp_s3cret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn app_from_secret_is_redacted() {
        let creds = Credentials::from_secret_data(
            "github-main",
            "ci/github",
            &data(&[
                ("app-id", b"123"),
                ("installation-id", b"456"),
                ("private-key", KEY),
            ]),
        )
        .unwrap();
        let Credentials::App(app) = &creds else {
            panic!("not an app")
        };
        assert_eq!((app.app_id.as_str(), app.installation_id), ("123", 456));
        let key_body = std::str::from_utf8(KEY).unwrap().lines().nth(1).unwrap();
        for shown in [
            format!("{creds:?}"),
            format!("{app:?}"),
            format!("{:#?}", creds),
        ] {
            assert!(!shown.contains(key_body), "{shown}");
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        }
        let config = GitHubConfig::new("github-main", GITHUB_API, creds).unwrap();
        assert!(!format!("{config:?}").contains(key_body));
        assert!(!format!("{:?}", SecretString::new("abc")).contains("abc"));
    }

    #[test]
    fn missing_token_names_connection_secret_and_key() {
        let err = Credentials::from_secret_data("github-main", "ci/github", &BTreeMap::new())
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("connection github-main: secret ci/github has no key 'token'"),
            "{err}"
        );
    }

    #[test]
    fn incomplete_or_bad_app_secrets_are_clear_errors_without_values() {
        let err = Credentials::from_secret_data(
            "gh",
            "ci/app",
            &data(&[("installation-id", b"1"), ("private-key", KEY)]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection gh: secret ci/app has no key 'app-id'"
        );

        let err = Credentials::from_secret_data(
            "gh",
            "ci/app",
            &data(&[
                ("app-id", b"1"),
                ("installation-id", b"x9"),
                ("private-key", KEY),
            ]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection gh: secret ci/app key 'installation-id' is not a number"
        );

        let err = Credentials::from_secret_data(
            "gh",
            "ci/app",
            &data(&[
                ("app-id", b"1"),
                ("installation-id", b"2"),
                ("private-key", b"hunter2"),
            ]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        assert!(
            err.to_string()
                .contains("'private-key' is not an RSA private key")
        );

        let err = Credentials::from_secret_data(
            "gh",
            "ci/app",
            &data(&[("token", b"t0ken"), ("private-key", KEY)]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("t0ken"));
    }

    #[test]
    fn repositories_and_base_urls_are_checked() {
        assert_eq!(
            "acme/shop".parse::<Repository>().unwrap(),
            Repository {
                owner: "acme".into(),
                name: "shop".into()
            }
        );
        assert!("acme".parse::<Repository>().is_err());
        assert!("a/b/c".parse::<Repository>().is_err());
        let creds = Credentials::Token(SecretString::new("x"));
        assert!(GitHubConfig::new("gh", "not a url", creds.clone()).is_err());
        assert!(GitHubConfig::new("gh", "https://ghe.example/api/v3", creds).is_ok());
    }
}

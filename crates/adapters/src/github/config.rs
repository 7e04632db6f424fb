//! GitHub credentials (a token or a GitHub App) and repositories. Credentials
//! come from a Kubernetes Secret's data (read by the controller; this crate has
//! no Kubernetes dependency) and never show in Debug output, logs or errors.
//!
//! Secret keys: `token` (a personal access or fine-grained token), or, for a
//! GitHub App, `app-id`, `installation-id` and `private-key` (PEM).

use crate::connections::{ConfigError, SecretString, keys};
use crate::secrets::SecretReader;
use jsonwebtoken::EncodingKey;
use std::fmt;

/// The GitHub.com API; GitHub Enterprise Server is `https://HOST/api/v3`.
pub const GITHUB_API: &str = "https://api.github.com";

/// How to prove who we are to GitHub.
#[derive(Clone, PartialEq, Eq)]
pub enum GitHubCredentials {
    /// A personal access token or fine-grained token, sent as a bearer token.
    Token(SecretString),
    /// A GitHub App installation.
    App(AppCredentials),
}

impl fmt::Debug for GitHubCredentials {
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
    /// The PEM the key came from, so that two credentials can be compared.
    pem: SecretString,
}

impl PartialEq for AppCredentials {
    fn eq(&self, other: &Self) -> bool {
        self.app_id == other.app_id
            && self.installation_id == other.installation_id
            && self.pem == other.pem
    }
}

impl Eq for AppCredentials {}

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
            pem: SecretString::new(String::from_utf8_lossy(private_key_pem)),
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

impl GitHubCredentials {
    /// A token, or a GitHub App's three keys; never both.
    pub(crate) fn from_secret(reader: &SecretReader<'_>) -> Result<Self, ConfigError> {
        match (reader.has(keys::TOKEN), reader.has(keys::PRIVATE_KEY)) {
            (true, true) => Err(reader.error(format!(
                "key '{}' is set together with '{}'; keep one kind of credentials",
                keys::TOKEN,
                keys::PRIVATE_KEY
            ))),
            (true, false) => Ok(Self::Token(reader.required(keys::TOKEN)?)),
            (false, true) => {
                let app_id = reader.required(keys::APP_ID)?;
                let installation_id = reader
                    .required(keys::INSTALLATION_ID)?
                    .expose()
                    .parse::<u64>()
                    .map_err(|_| {
                        reader.error(format!("key '{}' is not a number", keys::INSTALLATION_ID))
                    })?;
                let pem = reader.multiline(keys::PRIVATE_KEY)?;
                let app =
                    AppCredentials::new(app_id.expose(), installation_id, pem.expose().as_bytes())
                        .map_err(|_| {
                            reader.error(format!(
                                "key '{}' is not an RSA private key in PEM form",
                                keys::PRIVATE_KEY
                            ))
                        })?;
                Ok(Self::App(app))
            }
            (false, false) => Err(reader.error(format!(
                "has no key '{}' (nor '{}', '{}' and '{}' for a GitHub App)",
                keys::TOKEN,
                keys::APP_ID,
                keys::INSTALLATION_ID,
                keys::PRIVATE_KEY
            ))),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connections::{ConnectionConfig, ConnectionKind, Credentials, SecretRef};
    use std::collections::BTreeMap;

    const KEY: &[u8] = promotion_standins::GITHUB_APP_PRIVATE_KEY.as_bytes();

    fn data(pairs: &[(&str, &[u8])]) -> BTreeMap<String, Vec<u8>> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
            .collect()
    }

    /// The GitHub credentials of connection `connection` from the Secret `secret` (`ns/name`).
    fn read(
        connection: &str,
        secret: &str,
        data: &BTreeMap<String, Vec<u8>>,
    ) -> Result<GitHubCredentials, ConfigError> {
        let (namespace, name) = secret.split_once('/').unwrap();
        let secret = SecretRef {
            namespace: namespace.into(),
            name: name.into(),
        };
        match Credentials::from_secret(connection, ConnectionKind::Github, &secret, data)? {
            Credentials::Github(c) => Ok(c),
            other => panic!("not GitHub credentials: {other:?}"),
        }
    }

    #[test]
    fn token_from_secret_is_trimmed_and_redacted() {
        let creds = read(
            "github-main",
            "ci/github",
            &data(&[("token", b"ghp_s3cret\n")]),
        )
        .unwrap();
        match &creds {
            GitHubCredentials::Token(t) => assert_eq!(t.expose(), "ghp_s3cret"),
            other => panic!("not a token: {other:?}"),
        }
        let shown = format!("{:?} {:?}", creds, Credentials::Github(creds.clone()));
        assert!(!shown.contains("ghp_s3cret"), "{shown}");
        assert!(shown.contains("redacted"));
    }

    #[test]
    fn app_from_secret_is_redacted() {
        let creds = read(
            "github-main",
            "ci/github",
            &data(&[
                ("app-id", b"123"),
                ("installation-id", b"456"),
                ("private-key", KEY),
            ]),
        )
        .unwrap();
        let GitHubCredentials::App(app) = &creds else {
            panic!("not an app")
        };
        assert_eq!((app.app_id.as_str(), app.installation_id), ("123", 456));
        let key_body = std::str::from_utf8(KEY).unwrap().lines().nth(1).unwrap();
        for shown in [
            format!("{creds:?}"),
            format!("{app:?}"),
            format!("{:#?}", creds),
            format!("{:?}", Credentials::Github(creds.clone())),
        ] {
            assert!(!shown.contains(key_body), "{shown}");
            assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        }
        assert!(!format!("{:?}", SecretString::new("abc")).contains("abc"));
    }

    #[test]
    fn missing_token_names_connection_secret_and_key() {
        let err = read("github-main", "ci/github", &BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("connection github-main: secret ci/github has no key 'token'"),
            "{err}"
        );
    }

    #[test]
    fn incomplete_or_bad_app_secrets_are_clear_errors_without_values() {
        let err = read(
            "gh",
            "ci/app",
            &data(&[("installation-id", b"1"), ("private-key", KEY)]),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection gh: secret ci/app has no key 'app-id'"
        );

        let err = read(
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

        let err = read(
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

        let err = read(
            "gh",
            "ci/app",
            &data(&[("token", b"t0ken"), ("private-key", KEY)]),
        )
        .unwrap_err();
        assert!(!err.to_string().contains("t0ken"));

        // The one secret reader refuses control characters for GitHub as for the others.
        let err = read("gh", "ci/app", &data(&[("token", b"ghp_a\x01b")])).unwrap_err();
        assert!(
            err.to_string().contains("holds control characters"),
            "{err}"
        );
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
        assert!(ConnectionConfig::new("gh", ConnectionKind::Github, "not a url").is_err());
        assert!(
            ConnectionConfig::new("gh", ConnectionKind::Github, "https://ghe.example/api/v3")
                .is_ok()
        );
        assert!(ConnectionConfig::new("gh", ConnectionKind::Github, GITHUB_API).is_ok());
    }
}

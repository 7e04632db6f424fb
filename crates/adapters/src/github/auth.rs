//! Who we are to GitHub: a token as it is, or a GitHub App whose RS256 JWT is
//! exchanged for an installation token, cached until shortly before it expires.

use super::config::{AppCredentials, GitHubCredentials};
use crate::connections::SecretString;
use crate::http::{self, Effect, HttpClient, Request as Call};
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, Header};
use promotion_core::ports::PortError;
use reqwest::Method;
use std::fmt;
use tokio::sync::Mutex;

/// GitHub accepts an App JWT for at most ten minutes.
const JWT_LIFETIME_SECS: i64 = 9 * 60;
/// `iat` in the past absorbs clock drift between us and GitHub.
const JWT_BACKDATE_SECS: i64 = 60;
/// An installation token this close to expiry is replaced, so no call carries
/// a token that expires in flight.
const REFRESH_MARGIN: chrono::Duration = chrono::Duration::minutes(5);

/// Supplies the bearer token of each request.
pub(crate) enum Auth {
    Token(SecretString),
    App {
        app: AppCredentials,
        cached: Mutex<Option<InstallationToken>>,
    },
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Token(_) => f.write_str("Auth::Token(<redacted>)"),
            Self::App { app, .. } => f.debug_struct("Auth::App").field("app", app).finish(),
        }
    }
}

/// An installation token and when GitHub says it expires.
#[derive(Clone, serde::Deserialize)]
pub(crate) struct InstallationToken {
    token: SecretString,
    expires_at: DateTime<Utc>,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iat: i64,
    exp: i64,
    iss: &'a str,
}

impl Auth {
    /// The authentication of `credentials`.
    pub fn new(credentials: &GitHubCredentials) -> Self {
        match credentials {
            GitHubCredentials::Token(t) => Self::Token(t.clone()),
            GitHubCredentials::App(app) => Self::App {
                app: app.clone(),
                cached: Mutex::new(None),
            },
        }
    }

    /// The token to send now; for an App, the cached installation token or a fresh one.
    pub async fn bearer(&self, http: &HttpClient) -> Result<SecretString, PortError> {
        let (app, cached) = match self {
            Self::Token(t) => return Ok(t.clone()),
            Self::App { app, cached } => (app, cached),
        };
        // Held across the exchange so that concurrent calls share one new token.
        let mut cached = cached.lock().await;
        if let Some(current) = cached.as_ref()
            && current.expires_at - Utc::now() > REFRESH_MARGIN
        {
            return Ok(current.token.clone());
        }
        let fresh = exchange(app, http).await?;
        tracing::debug!(
            connection = http.connection(),
            installation = app.installation_id,
            expires_at = %fresh.expires_at,
            "new GitHub App installation token"
        );
        let token = fresh.token.clone();
        *cached = Some(fresh);
        Ok(token)
    }

    /// Forgets a cached installation token GitHub refused (revoked, App reinstalled).
    pub async fn invalidate(&self) {
        if let Self::App { cached, .. } = self {
            *cached.lock().await = None;
        }
    }
}

/// The App's JWT: `iss` = app id, `iat` a minute ago, `exp` under ten minutes ahead.
fn app_jwt(app: &AppCredentials, connection: &str) -> Result<SecretString, PortError> {
    let now = Utc::now().timestamp();
    let claims = Claims {
        iat: now - JWT_BACKDATE_SECS,
        exp: now + JWT_LIFETIME_SECS,
        iss: &app.app_id,
    };
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &app.key)
        .map(SecretString::new)
        .map_err(|e| {
            PortError::permanent(format!(
                "connection {connection}: cannot sign the GitHub App JWT: {e}"
            ))
        })
}

/// `POST /app/installations/{id}/access_tokens`; safe to repeat, so retried as a read.
async fn exchange(app: &AppCredentials, http: &HttpClient) -> Result<InstallationToken, PortError> {
    let installation = app.installation_id.to_string();
    let call = Call::new(
        Method::POST,
        Effect::Read,
        &["app", "installations", &installation, "access_tokens"],
    );
    http::retry_read(http.settings(), || async {
        let jwt = app_jwt(app, http.connection())?;
        let answer = http
            .exchange(&call.clone().auth(http::Auth::Bearer(jwt)))
            .await?
            .success()
            .map_err(|mut e| {
                e.message = format!(
                    "{} (exchanging the GitHub App JWT for an installation token)",
                    e.message
                );
                e
            })?;
        answer.json::<InstallationToken>()
    })
    .await
}

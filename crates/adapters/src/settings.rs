//! A connection's optional `settings` from the configuration file, as loose
//! key/value pairs, applied to its [`ConnectionConfig`] with errors that name
//! the connection and the key.
//!
//! Every kind: `connectTimeout`, `requestTimeout`, `retryMinDelay`,
//! `retryMaxDelay`, `maxRateLimitWait` (durations such as `5s`), `readRetries`
//! (a count), `maxBodySize` (bytes). Jenkins, GitLab and GitHub Actions:
//! `maxFindPages` (how many pages `find` reads back to the intent's time).
//! Jenkins: `unstable` (`failed` or `passed`), `findDepth` (builds a page).
//! GitLab: `parameters` (`variables` or `inputs`), `findDepth` (pipelines a
//! page). GitHub Actions and GitHub: `repository` (`owner/name`);
//! GitHub Actions: `findAttempts`, `findInterval`.

use crate::connections::{ConfigError, ConnectionConfig, ConnectionKind, GitLabParameters};
use promotion_core::ports::RunState;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

impl ConnectionConfig {
    /// Applies `settings`; an unknown key or a malformed value is an error.
    pub fn apply_settings(
        &mut self,
        settings: &BTreeMap<String, Value>,
    ) -> Result<(), ConfigError> {
        for (key, value) in settings {
            let bad = |expected: &str| ConfigError::Setting {
                connection: self.name.clone(),
                key: key.clone(),
                problem: format!("expected {expected}, got {value}"),
            };
            let duration = || {
                value
                    .as_str()
                    .and_then(|s| humantime::parse_duration(s).ok())
                    .filter(|d| *d > Duration::ZERO)
                    .ok_or_else(|| bad("a positive duration such as \"10s\""))
            };
            let count = || {
                value
                    .as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .ok_or_else(|| bad("a whole number"))
            };
            match (self.kind, key.as_str()) {
                (_, "connectTimeout") => self.http.connect_timeout = duration()?,
                (_, "requestTimeout") => self.http.request_timeout = duration()?,
                (_, "maxRateLimitWait") => self.http.max_rate_limit_wait = duration()?,
                (_, "readRetries") => self.http.read_retries = count()?,
                (_, "retryMinDelay") => self.http.retry_min_delay = duration()?,
                (_, "retryMaxDelay") => self.http.retry_max_delay = duration()?,
                (_, "maxBodySize") => self.http.max_body_bytes = count()?.max(1),
                (ConnectionKind::GithubActions | ConnectionKind::Github, "repository") => {
                    self.github.repository = Some(
                        value
                            .as_str()
                            .and_then(|s| s.parse().ok())
                            .ok_or_else(|| bad("an owner/name repository"))?,
                    )
                }
                (ConnectionKind::GithubActions, "findAttempts") => {
                    self.github.find_attempts = count()?.max(1)
                }
                (ConnectionKind::GithubActions, "maxFindPages") => {
                    self.github.find_pages = count()?.max(1)
                }
                (ConnectionKind::Jenkins, "maxFindPages") => {
                    self.jenkins.find_pages = count()?.max(1)
                }
                (ConnectionKind::Gitlab, "maxFindPages") => {
                    self.gitlab.find_pages = count()?.max(1)
                }
                (ConnectionKind::GithubActions, "findInterval") => {
                    self.github.find_interval = duration()?
                }
                (ConnectionKind::Jenkins, "unstable") => {
                    self.jenkins.unstable = match value.as_str() {
                        Some("failed") => RunState::Failed,
                        Some("passed") => RunState::Passed,
                        _ => return Err(bad("\"failed\" or \"passed\"")),
                    }
                }
                (ConnectionKind::Jenkins, "findDepth") => self.jenkins.find_depth = count()?.max(1),
                (ConnectionKind::Gitlab, "parameters") => {
                    self.gitlab.parameters = match value.as_str() {
                        Some("variables") => GitLabParameters::Variables,
                        Some("inputs") => GitLabParameters::Inputs,
                        _ => return Err(bad("\"variables\" or \"inputs\"")),
                    }
                }
                (ConnectionKind::Gitlab, "findDepth") => {
                    // GitLab pages hold at most 100 items.
                    self.gitlab.find_depth = count()?.clamp(1, 100)
                }
                (kind, _) => {
                    return Err(ConfigError::Setting {
                        connection: self.name.clone(),
                        key: key.clone(),
                        problem: format!("is not a setting of a {kind} connection"),
                    });
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> BTreeMap<String, Value> {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn known_settings_apply() {
        let mut c = ConnectionConfig::new("j", ConnectionKind::Jenkins, "https://ci").unwrap();
        c.apply_settings(&settings(json!({
            "unstable": "passed", "requestTimeout": "2s", "readRetries": 1, "findDepth": 10,
            "maxFindPages": 3
        })))
        .unwrap();
        assert_eq!(c.jenkins.find_pages, 3);
        assert_eq!(c.jenkins.unstable, RunState::Passed);
        assert_eq!(c.http.request_timeout, Duration::from_secs(2));
        assert_eq!(c.http.read_retries, 1);
        assert_eq!(c.jenkins.find_depth, 10);

        let mut h =
            ConnectionConfig::new("gh", ConnectionKind::GithubActions, "https://api").unwrap();
        h.apply_settings(&settings(json!({
            "repository": "acme/shop", "maxBodySize": 1024, "findAttempts": 2, "findInterval": "1s"
        })))
        .unwrap();
        assert_eq!(h.github.repository, Some("acme/shop".parse().unwrap()));
        assert_eq!(h.http.max_body_bytes, 1024);
        assert_eq!(h.github.find_attempts, 2);
        let err = h
            .apply_settings(&settings(json!({"repository": "acme"})))
            .unwrap_err();
        assert!(
            err.to_string().contains("an owner/name repository"),
            "{err}"
        );

        let mut g = ConnectionConfig::new("g", ConnectionKind::Gitlab, "https://git").unwrap();
        g.apply_settings(&settings(json!({"parameters": "inputs", "findDepth": 500})))
            .unwrap();
        assert_eq!(g.gitlab.parameters, GitLabParameters::Inputs);
        assert_eq!(g.gitlab.find_depth, 100);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_connection_and_key() {
        let mut c =
            ConnectionConfig::new("jenkins-main", ConnectionKind::Jenkins, "https://ci").unwrap();
        let err = c
            .apply_settings(&settings(json!({"parameters": "inputs"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection jenkins-main: setting 'parameters' is not a setting of a jenkins connection"
        );
        let err = c
            .apply_settings(&settings(json!({"unstable": "maybe"})))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection jenkins-main: setting 'unstable' expected \"failed\" or \"passed\", got \"maybe\""
        );
        let err = c
            .apply_settings(&settings(json!({"requestTimeout": "soon"})))
            .unwrap_err();
        assert!(err.to_string().contains("a positive duration"), "{err}");
    }
}

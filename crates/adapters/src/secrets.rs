//! Reading credentials from a Secret's data: trimmed UTF-8, never empty, never
//! a value a header cannot carry, and errors that name the connection, the
//! Secret and the key but never the value.

use crate::connections::{ConfigError, SecretRef, SecretString};
use std::collections::BTreeMap;

/// Reads keys of one Secret, with errors that name the connection, Secret and key.
pub(crate) struct SecretReader<'a> {
    connection: &'a str,
    secret: &'a SecretRef,
    data: &'a BTreeMap<String, Vec<u8>>,
}

impl<'a> SecretReader<'a> {
    /// A reader of `data`, the Secret `secret` of `connection`.
    pub fn new(
        connection: &'a str,
        secret: &'a SecretRef,
        data: &'a BTreeMap<String, Vec<u8>>,
    ) -> Self {
        Self {
            connection,
            secret,
            data,
        }
    }

    /// Whether the Secret has `key` at all.
    pub fn has(&self, key: &str) -> bool {
        self.data.contains_key(key)
    }

    /// The error `problem` (which names the key) about this Secret.
    pub fn error(&self, problem: String) -> ConfigError {
        ConfigError::Secret {
            connection: self.connection.to_owned(),
            secret: self.secret.to_string(),
            problem,
        }
    }

    /// A one-line value that must be there.
    pub fn required(&self, key: &str) -> Result<SecretString, ConfigError> {
        self.optional(key)?
            .ok_or_else(|| self.error(format!("has no key '{key}'")))
    }

    /// A one-line value, if the key is there. Control characters are refused:
    /// they would be cut or rejected in an HTTP header.
    pub fn optional(&self, key: &str) -> Result<Option<SecretString>, ConfigError> {
        let Some(text) = self.text(key)? else {
            return Ok(None);
        };
        if text.chars().any(char::is_control) {
            return Err(self.error(format!("key '{key}' holds control characters")));
        }
        Ok(Some(SecretString::new(text)))
    }

    /// A multi-line value (a PEM key) that must be there: line breaks and tabs
    /// are kept, other control characters refused.
    pub fn multiline(&self, key: &str) -> Result<SecretString, ConfigError> {
        let text = self
            .text(key)?
            .ok_or_else(|| self.error(format!("has no key '{key}'")))?;
        if text
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            return Err(self.error(format!("key '{key}' holds control characters")));
        }
        Ok(SecretString::new(text))
    }

    /// The key's value as trimmed UTF-8 (Secrets written by hand often end in a newline).
    fn text(&self, key: &str) -> Result<Option<&'a str>, ConfigError> {
        let Some(raw) = self.data.get(key) else {
            return Ok(None);
        };
        let text = std::str::from_utf8(raw)
            .map_err(|_| self.error(format!("key '{key}' is not valid UTF-8")))?
            .trim();
        if text.is_empty() {
            return Err(self.error(format!("key '{key}' is empty")));
        }
        Ok(Some(text))
    }
}

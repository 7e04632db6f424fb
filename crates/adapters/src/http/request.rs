//! A request, described so that it can be sent again (reads) and named in
//! errors, and what it does to the server.

use crate::connections::SecretString;
use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use url::Url;

/// What a request does to the server, which decides how its failures are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Changes nothing: retried on transient failures.
    Read,
    /// A change that may be repeated: sent once here, its failures are transient for the engine.
    Write,
    /// Starts a run: once it may have reached the server, a failure is ambiguous
    /// and the request is never sent again here.
    Trigger,
}

/// How a request authenticates.
#[derive(Clone, Debug)]
pub(crate) enum Auth {
    /// HTTP basic authentication (Jenkins user and API token).
    Basic {
        user: String,
        password: SecretString,
    },
    /// A token in a header of its own (GitLab's `PRIVATE-TOKEN`).
    Header {
        name: HeaderName,
        value: SecretString,
    },
    /// `Authorization: Bearer` (GitHub).
    Bearer(SecretString),
    /// No credentials, or they travel in the body (GitLab's trigger token).
    None,
}

/// What goes in a request body.
#[derive(Clone)]
pub(crate) enum Body {
    /// `application/x-www-form-urlencoded`.
    Form(Vec<(String, String)>),
    /// `application/json`.
    Json(serde_json::Value),
}

/// A body can hold a secret (GitLab's trigger token), so Debug shows no values.
impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Form(fields) => f
                .debug_tuple("Form")
                .field(&fields.iter().map(|(k, _)| k).collect::<Vec<_>>())
                .finish(),
            Self::Json(_) => f.write_str("Json(<redacted>)"),
        }
    }
}

/// One request, described so that it can be sent again (reads) and named in errors.
#[derive(Clone, Debug)]
pub(crate) struct Request {
    pub method: Method,
    pub effect: Effect,
    /// Path and query relative to the connection's base URL, starting with `/`, encoded.
    pub path: String,
    pub auth: Auth,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Option<Body>,
}

impl Request {
    /// A request to the path made of `segments`, each percent-encoded on its own.
    pub fn new(method: Method, effect: Effect, segments: &[&str]) -> Self {
        let mut url = Url::parse("http://x/").unwrap_or_else(|_| unreachable!("a fixed URL"));
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        Self::raw(method, effect, url.path())
    }

    /// A request to `path` (with any query), already encoded.
    pub fn raw(method: Method, effect: Effect, path: impl Into<String>) -> Self {
        Self {
            method,
            effect,
            path: path.into(),
            auth: Auth::None,
            headers: Vec::new(),
            body: None,
        }
    }

    /// Adds a query parameter, encoded.
    pub fn query(mut self, key: &str, value: impl AsRef<str>) -> Self {
        let pair: String = url::form_urlencoded::Serializer::new(String::new())
            .append_pair(key, value.as_ref())
            .finish();
        self.path
            .push(if self.path.contains('?') { '&' } else { '?' });
        self.path.push_str(&pair);
        self
    }

    /// Sets how the request authenticates.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: Body) -> Self {
        self.body = Some(body);
        self
    }

    /// Sets a JSON body.
    pub fn json(self, body: serde_json::Value) -> Self {
        self.body(Body::Json(body))
    }

    /// `POST /job/x/buildWithParameters`: the query is left out, it can be long.
    pub fn describe(&self) -> String {
        let path = self.path.split('?').next().unwrap_or_default();
        format!("{} {}", self.method, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_debug_output_holds_no_secret() {
        let req = Request::raw(
            Method::POST,
            Effect::Trigger,
            "/api/v4/projects/1/trigger/pipeline",
        )
        .auth(Auth::Header {
            name: HeaderName::from_static("private-token"),
            value: SecretString::new("glpat-s3cr3t"),
        })
        .json(serde_json::json!({"token": "glptt-s3cr3t"}));
        let basic = Request::raw(Method::POST, Effect::Trigger, "/job/x/buildWithParameters")
            .auth(Auth::Basic {
                user: "bot".into(),
                password: SecretString::new("api-s3cr3t"),
            })
            .body(Body::Form(vec![("token".into(), "form-s3cr3t".into())]));
        let bearer = Request::new(Method::GET, Effect::Read, &["repos"])
            .auth(Auth::Bearer(SecretString::new("ghp-s3cr3t")));
        let out = format!("{req:?} {basic:?} {bearer:?}");
        assert!(!out.contains("s3cr3t"), "{out}");
    }
}

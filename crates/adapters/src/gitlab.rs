//! GitLab CI pipelines through the REST API v4.
//!
//! Pipelines start with an access token (`POST /projects/:id/pipeline`) or with
//! a trigger token (`POST /projects/:id/trigger/pipeline`); a trigger token
//! cannot read pipelines, so reads then use the connection's read token. The
//! correlation id travels as variable `PROMOTION_CORRELATION_ID`, or as an input
//! of that name on projects that forbid pipeline variables.
//!
//! `find` reads each recent pipeline's variables; it also adopts a pipeline
//! whose `name` holds the correlation id, which is how inputs can be found (the
//! API does not list a pipeline's inputs): such projects set
//! `workflow: name: "... $[[ inputs.PROMOTION_CORRELATION_ID ]]"`.
//!
//! Statuses: `skipped` is Failed, because no job ran and a gate that tested
//! nothing must not look like a person's cancel; `manual` and `scheduled` are
//! Pending (they can wait forever; the engine's timeout decides); unknown
//! statuses stay Running.

use crate::connections::{
    ConfigError, Connection, ConnectionKind, Credentials, GitLabCredentials, GitLabParameters,
    GitLabSettings,
};
use crate::http::{Auth, Body, Effect, HttpClient, RateLimits, Request, Service};
use async_trait::async_trait;
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use promotion_core::ports::{
    PortError, RunHandle, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use reqwest::header::HeaderName;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};

/// The variable or input that carries the correlation id, so `find` can adopt a run.
pub const CORRELATION_VARIABLE: &str = "PROMOTION_CORRELATION_ID";

/// GitLab's header for access tokens.
const PRIVATE_TOKEN: HeaderName = HeaderName::from_static("private-token");

/// How GitLab speaks: `RateLimit-*` headers besides `Retry-After`.
const GITLAB: Service = Service {
    rate_limits: RateLimits::GitLab,
    auth_hint: "check the access token (PRIVATE-TOKEN) and that it has not expired",
    json_message: false,
};

/// Runs gate tests as GitLab pipelines.
#[derive(Debug)]
pub struct GitLabRunner {
    http: HttpClient,
    credentials: GitLabCredentials,
    settings: GitLabSettings,
    // Pipelines (project, id, correlation id) seen carrying their correlation id: the
    // variables are read once per run, not at every poll.
    verified: std::sync::Mutex<std::collections::HashSet<(String, u64, String)>>,
}

#[derive(Debug, Deserialize)]
struct Pipeline {
    id: u64,
    status: Option<String>,
    web_url: Option<String>,
    name: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Variable {
    key: String,
    value: Option<String>,
}

/// A project's path (`group/sub/project`) or numeric id, as one path segment.
fn project_segment(project: &str) -> Result<String, PortError> {
    let project = project.trim_matches('/');
    if project.is_empty() {
        return Err(PortError::permanent("empty GitLab project path"));
    }
    Ok(utf8_percent_encode(project, NON_ALPHANUMERIC).to_string())
}

/// The domain's state for a pipeline `status`.
fn state_of(status: &str) -> RunState {
    match status {
        "created" | "waiting_for_resource" | "preparing" | "pending" => RunState::Pending,
        "manual" | "scheduled" => RunState::Pending,
        "running" | "canceling" => RunState::Running,
        "success" => RunState::Passed,
        "failed" | "skipped" => RunState::Failed,
        "canceled" => RunState::Cancelled,
        other => {
            tracing::warn!(
                status = other,
                "unknown GitLab pipeline status; still Running"
            );
            RunState::Running
        }
    }
}

fn parse_pipeline_id(run: &RunRef) -> Result<u64, PortError> {
    run.run_id
        .parse()
        .map_err(|_| PortError::permanent(format!("'{}' is not a GitLab pipeline id", run.run_id)))
}

impl GitLabRunner {
    /// A runner for a GitLab connection.
    pub fn new(connection: &Connection) -> Result<Self, ConfigError> {
        let config = &connection.config;
        let (ConnectionKind::Gitlab, Credentials::Gitlab(credentials)) =
            (config.kind, &connection.credentials)
        else {
            return Err(connection.wrong_credentials());
        };
        let http = HttpClient::for_config(config, GITLAB, reqwest::header::HeaderMap::new())?;
        Ok(Self {
            http,
            credentials: credentials.clone(),
            settings: config.gitlab.clone(),
            verified: std::sync::Mutex::default(),
        })
    }

    fn api(&self, method: Method, effect: Effect, path: String) -> Request {
        Request::raw(method, effect, path).auth(Auth::Header {
            name: PRIVATE_TOKEN,
            value: self.credentials.api_token().clone(),
        })
    }

    /// The body's parameters: `variables` in the shape the endpoint wants, or `inputs`.
    fn parameters(&self, req: &TriggerRequest, trigger_endpoint: bool) -> (&'static str, Value) {
        let mut params: Vec<(&str, &str)> = req
            .parameters
            .iter()
            .filter(|(k, _)| k.as_str() != CORRELATION_VARIABLE)
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        params.push((CORRELATION_VARIABLE, &req.correlation_id));
        let as_map = || {
            Value::Object(
                params
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), Value::String((*v).to_owned())))
                    .collect::<Map<_, _>>(),
            )
        };
        match self.settings.parameters {
            GitLabParameters::Inputs => ("inputs", as_map()),
            // The trigger endpoint takes a hash, the pipeline endpoint a list.
            GitLabParameters::Variables if trigger_endpoint => ("variables", as_map()),
            GitLabParameters::Variables => (
                "variables",
                Value::Array(
                    params
                        .iter()
                        .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
                        .collect(),
                ),
            ),
        }
    }

    /// Refuses a pipeline that does not carry the correlation id `run` asks for.
    async fn check_ours(
        &self,
        run: &RunRef,
        project: &str,
        pipeline: &Pipeline,
    ) -> Result<(), PortError> {
        let Some(wanted) = run.correlation_id.as_deref() else {
            return Ok(());
        };
        let key = (project.to_owned(), pipeline.id, wanted.to_owned());
        let known = |v: &Self| {
            v.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&key)
        };
        if known(self) {
            return Ok(());
        }
        if self
            .carries_correlation_id(project, pipeline, wanted)
            .await?
        {
            self.verified
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(key);
            return Ok(());
        }
        Err(promotion_core::ports::not_ours(run, None))
    }

    async fn carries_correlation_id(
        &self,
        project: &str,
        pipeline: &Pipeline,
        id: &str,
    ) -> Result<bool, PortError> {
        let named = |name: &str| {
            name.split(|c: char| !(c.is_ascii_alphanumeric() || "-_.".contains(c)))
                .any(|token| token == id)
        };
        if pipeline.name.as_deref().is_some_and(named) {
            return Ok(true);
        }
        if self.settings.parameters == GitLabParameters::Inputs {
            return Ok(false);
        }
        let req = self.api(
            Method::GET,
            Effect::Read,
            format!(
                "/api/v4/projects/{project}/pipelines/{}/variables",
                pipeline.id
            ),
        );
        // A pipeline deleted since the listing has no variables.
        let variables: Vec<Variable> = self
            .http
            .read_json_if_found(&req)
            .await?
            .unwrap_or_default();
        Ok(variables
            .iter()
            .any(|v| v.key == CORRELATION_VARIABLE && v.value.as_deref() == Some(id)))
    }
}

#[async_trait]
impl TestRunner for GitLabRunner {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        let project = project_segment(&req.job)?;
        let Some(git_ref) = req.git_ref.as_deref() else {
            return Err(PortError::permanent(format!(
                "connection {}: a GitLab pipeline needs a ref (branch or tag) for project {}",
                self.http.connection(),
                req.job
            )));
        };
        let call = match &self.credentials {
            GitLabCredentials::AccessToken(_) => {
                let (field, params) = self.parameters(req, false);
                self.api(
                    Method::POST,
                    Effect::Trigger,
                    format!("/api/v4/projects/{project}/pipeline"),
                )
                .body(Body::Json(json!({"ref": git_ref, field: params})))
            }
            GitLabCredentials::TriggerToken { trigger_token, .. } => {
                let (field, params) = self.parameters(req, true);
                // The token goes in the body, never in the URL, so it stays out of logs.
                Request::raw(
                    Method::POST,
                    Effect::Trigger,
                    format!("/api/v4/projects/{project}/trigger/pipeline"),
                )
                .body(Body::Json(json!({
                    "token": trigger_token.expose(),
                    "ref": git_ref,
                    field: params,
                })))
            }
        };
        let answer = self.http.exchange(&call).await?.success()?;
        // The pipeline exists now; an answer we cannot read leaves only `find`.
        let pipeline: Pipeline = answer.json()?;
        tracing::info!(connection = %self.http.connection(), project = %req.job, pipeline = pipeline.id, correlation_id = %req.correlation_id, "created a GitLab pipeline");
        Ok(RunHandle {
            run_id: pipeline.id.to_string(),
            url: pipeline.web_url,
        })
    }

    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        let project = project_segment(&run.job)?;
        let id = parse_pipeline_id(run)?;
        let req = self.api(
            Method::GET,
            Effect::Read,
            format!("/api/v4/projects/{project}/pipelines/{id}"),
        );
        let pipeline: Pipeline = self.http.read_json(&req).await?;
        self.check_ours(run, &project, &pipeline).await?;
        let status = pipeline.status.unwrap_or_default();
        Ok(RunStatus {
            state: state_of(&status),
            url: pipeline.web_url,
            message: Some(status),
            run_id: None,
        })
    }

    async fn find(&self, req: &TriggerRequest) -> Result<Option<RunHandle>, PortError> {
        let project = project_segment(&req.job)?;
        let mut path = format!(
            "/api/v4/projects/{project}/pipelines?order_by=id&sort=desc&per_page={}",
            self.settings.find_depth
        );
        if let Some(git_ref) = &req.git_ref {
            path.push_str("&ref=");
            path.extend(url::form_urlencoded::byte_serialize(git_ref.as_bytes()));
        }
        let pipelines: Vec<Pipeline> = self
            .http
            .read_json(&self.api(Method::GET, Effect::Read, path))
            .await?;
        for pipeline in pipelines {
            if self
                .carries_correlation_id(&project, &pipeline, &req.correlation_id)
                .await?
            {
                return Ok(Some(RunHandle {
                    run_id: pipeline.id.to_string(),
                    url: pipeline.web_url,
                }));
            }
        }
        Ok(None)
    }

    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        let project = project_segment(&run.job)?;
        let id = parse_pipeline_id(run)?;
        if run.correlation_id.is_some() {
            // Only a pipeline that carries this tracker's correlation id is cancelled.
            let read = self.api(
                Method::GET,
                Effect::Read,
                format!("/api/v4/projects/{project}/pipelines/{id}"),
            );
            if let Some(pipeline) = self.http.read_json_if_found::<Pipeline>(&read).await? {
                self.check_ours(run, &project, &pipeline).await?;
            }
        }
        let req = self.api(
            Method::POST,
            Effect::Write,
            format!("/api/v4/projects/{project}/pipelines/{id}/cancel"),
        );
        let answer = self.http.exchange(&req).await?;
        match answer.status {
            s if s.is_success() => Ok(()),
            StatusCode::NOT_FOUND => {
                tracing::info!(connection = %self.http.connection(), call = %req.describe(), "nothing to cancel");
                Ok(())
            }
            _ => Err(answer.error()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_one_escaped_segment() {
        assert_eq!(
            project_segment("group/sub/app").unwrap(),
            "group%2Fsub%2Fapp"
        );
        assert_eq!(project_segment("42").unwrap(), "42");
        assert!(project_segment("/").is_err());
    }

    #[test]
    fn every_documented_status_is_mapped() {
        use RunState::*;
        for (status, state) in [
            ("created", Pending),
            ("waiting_for_resource", Pending),
            ("preparing", Pending),
            ("pending", Pending),
            ("manual", Pending),
            ("scheduled", Pending),
            ("running", Running),
            ("canceling", Running),
            ("success", Passed),
            ("failed", Failed),
            ("skipped", Failed),
            ("canceled", Cancelled),
            ("something_new", Running),
        ] {
            assert_eq!(state_of(status), state, "{status}");
        }
    }
}

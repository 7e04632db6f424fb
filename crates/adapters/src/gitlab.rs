//! GitLab CI pipelines through the REST API v4.
//!
//! Pipelines start with an access token (`POST /projects/:id/pipeline`) or with
//! a trigger token (`POST /projects/:id/trigger/pipeline`); a trigger token
//! cannot read pipelines, so reads then use the connection's read token. The
//! correlation id travels as variable `PROMOTION_CORRELATION_ID`, or as an input
//! of that name on projects that forbid pipeline variables.
//!
//! `find` lists the project's pipelines updated since the intent's time
//! (`updated_after`, `source` of the endpoint the trigger used, newest first), page
//! after page until one created before that time or the last page (`x-next-page`),
//! at most `maxFindPages`; then it says "not sure". It reads each listed
//! pipeline's variables; it also adopts a pipeline
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
    ErrorKind, Found, PortError, RunHandle, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use reqwest::header::HeaderName;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Map, Value, json};
use std::time::SystemTime;

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
    created_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Project {
    #[serde(default)]
    ci_config_path: Option<String>,
}

/// Why a CI file's `workflow: name:` cannot show the correlation input, if it cannot.
/// The file may start with a `spec:` header document, so every document is read.
fn workflow_name_problem(path: &str, yaml: &str) -> Result<Option<String>, String> {
    use serde::Deserialize as _;
    let wanted = format!("inputs.{CORRELATION_VARIABLE}");
    let mut name = None;
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("{path} is not YAML: {e}"))?;
        if let Some(n) = value
            .get("workflow")
            .and_then(|w| w.get("name"))
            .and_then(serde_yaml::Value::as_str)
        {
            name = Some(n.to_owned());
        }
    }
    Ok(match name {
        Some(n) if n.contains(&wanted) => None,
        Some(n) => Some(format!(
            "{path}: workflow:name {n:?} does not mention {wanted}, and GitLab does not list a \
             pipeline's inputs; use name: \"gate $[[ {wanted} ]]\""
        )),
        None => Some(format!(
            "{path} has no workflow:name, and GitLab does not list a pipeline's inputs, so its \
             pipelines do not show {CORRELATION_VARIABLE}; add workflow: name: \"gate $[[ {wanted} ]]\""
        )),
    })
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

    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        let project = project_segment(&req.job)?;
        // Whole seconds, as some servers date pipelines: a pipeline of the same second
        // as `since` must not read as older than it.
        let since =
            chrono::SubsecRound::trunc_subsecs(chrono::DateTime::<chrono::Utc>::from(since), 0);
        let since_text = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        // Pipelines started with a trigger token have source `trigger`, others `api`.
        let source = match &self.credentials {
            GitLabCredentials::AccessToken(_) => "api",
            GitLabCredentials::TriggerToken { .. } => "trigger",
        };
        let per_page = self.settings.find_depth.clamp(1, 100);
        let pages = self.settings.find_pages.max(1);
        let mut seen = 0;
        for page in 1..=pages {
            let mut path = format!(
                "/api/v4/projects/{project}/pipelines?order_by=id&sort=desc&per_page={per_page}\
                 &page={page}&source={source}&updated_after={since_text}"
            );
            if let Some(git_ref) = &req.git_ref {
                path.push_str("&ref=");
                path.extend(url::form_urlencoded::byte_serialize(git_ref.as_bytes()));
            }
            let answer = self
                .http
                .read(&self.api(Method::GET, Effect::Read, path))
                .await?;
            let pipelines: Vec<Pipeline> = answer.json()?;
            seen += pipelines.len();
            let mut reached = false;
            for pipeline in &pipelines {
                if self
                    .carries_correlation_id(&project, pipeline, &req.correlation_id)
                    .await?
                {
                    return Ok(Found::Run(RunHandle {
                        run_id: pipeline.id.to_string(),
                        url: pipeline.web_url.clone(),
                    }));
                }
                reached |= pipeline
                    .created_at
                    .as_deref()
                    .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                    .is_some_and(|t| t < since);
            }
            // An empty `x-next-page` marks the last page; without the header, a short page does.
            let last = match answer.headers.get("x-next-page") {
                Some(v) => v.to_str().map_or(true, |v| v.trim().is_empty()),
                None => pipelines.len() < per_page,
            };
            if last || reached {
                return Ok(Found::Absent);
            }
        }
        Ok(Found::NotSure(format!(
            "connection {}: read the {seen} newest pipelines of {} updated since {since_text} \
             ({pages} pages, maxFindPages) without reaching the last one",
            self.http.connection(),
            req.job
        )))
    }

    /// With inputs, `find` sees a pipeline only by its name: the project's CI file must
    /// put the correlation input in `workflow: name:`. Variables are always listed.
    async fn check_findable(&self, req: &TriggerRequest) -> Result<(), PortError> {
        if self.settings.parameters != GitLabParameters::Inputs {
            return Ok(());
        }
        let unknown = |why: String| PortError::transient(why);
        let project = project_segment(&req.job).map_err(|e| unknown(e.message))?;
        let could_not = |what: &str, e: PortError| PortError {
            kind: ErrorKind::Transient,
            message: format!(
                "could not read {what} of project {}: {}",
                req.job, e.message
            ),
            retry_after: e.retry_after,
        };
        let info: Project = self
            .http
            .read_json(&self.api(
                Method::GET,
                Effect::Read,
                format!("/api/v4/projects/{project}"),
            ))
            .await
            .map_err(|e| could_not("the settings", e))?;
        let path = info
            .ci_config_path
            .filter(|p| !p.trim().is_empty())
            .unwrap_or_else(|| ".gitlab-ci.yml".to_owned());
        if path.contains('@') || path.contains("://") {
            return Err(unknown(format!(
                "project {} takes its CI configuration from {path}, which is not checked",
                req.job
            )));
        }
        let mut file = format!(
            "/api/v4/projects/{project}/repository/files/{}/raw",
            utf8_percent_encode(&path, NON_ALPHANUMERIC)
        );
        if let Some(git_ref) = &req.git_ref {
            file.push_str("?ref=");
            file.extend(url::form_urlencoded::byte_serialize(git_ref.as_bytes()));
        }
        let answer = self
            .http
            .read(&self.api(Method::GET, Effect::Read, file))
            .await
            .map_err(|e| could_not(&path, e))?;
        let text = String::from_utf8_lossy(&answer.body);
        match workflow_name_problem(&path, &text) {
            Ok(None) => Ok(()),
            Ok(Some(problem)) => Err(PortError::permanent(format!(
                "connection {} passes parameters as inputs; project {}: {problem}",
                self.http.connection(),
                req.job
            ))),
            Err(why) => Err(unknown(why)),
        }
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
    fn inputs_need_the_correlation_input_in_the_workflow_name() {
        let good = "spec:\n  inputs:\n    PROMOTION_CORRELATION_ID: {}\n---\nworkflow:\n  name: \"gate $[[ inputs.PROMOTION_CORRELATION_ID ]]\"\n";
        assert_eq!(workflow_name_problem(".gitlab-ci.yml", good), Ok(None));
        let other = "workflow:\n  name: nightly\n";
        assert!(
            workflow_name_problem("ci.yml", other)
                .unwrap()
                .unwrap()
                .contains("does not mention")
        );
        let none = "test:\n  script: [true]\n";
        assert!(
            workflow_name_problem("ci.yml", none)
                .unwrap()
                .unwrap()
                .contains("no workflow:name")
        );
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

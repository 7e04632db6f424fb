//! A GitLab stand-in speaking the REST API v4 calls the GitLab adapter makes,
//! authenticated with `PRIVATE-TOKEN`:
//!
//! - `POST /api/v4/projects/:id/pipeline` (`ref`, `variables` list or `inputs`) -> 201;
//!   projects exist on demand. A pipeline is `running` until the script's time has
//!   passed, then `success` or `failed`.
//! - `GET .../pipelines/:pid`, `GET .../pipelines` (`ref`, `source`, `updated_after`,
//!   `per_page`, `page`, newest first, with the `x-next-page`, `x-page`, `x-per-page`,
//!   `x-total` pagination headers), `GET .../pipelines/:pid/variables`,
//!   `POST .../pipelines/:pid/cancel`. A pipeline's `source` is `api` or `trigger`
//!   by the endpoint that created it.
//! - The pipeline's `name` is `gate <correlation id>`, as a project whose
//!   `workflow: name:` shows `PROMOTION_CORRELATION_ID` would have it.
//! - `POST /api/v4/projects/:id/trigger/pipeline` with a pipeline trigger token
//!   in the body (`token`, `ref`, `variables` as a hash) -> 201. A trigger
//!   token cannot read; the read token (`read_api`) reads but cannot create or
//!   cancel (403).
//! - `GET /api/v4/projects/:id` (`ci_config_path` null) and
//!   `GET .../repository/files/.gitlab-ci.yml/raw`: a CI file that declares the
//!   `PROMOTION_CORRELATION_ID` input and puts it in `workflow: name:`.
//! - Pipeline pages (`GET /<project>/-/pipelines/:pid`) answer without a token.
//! - The API is also served under `/gitlab`, as a self-hosted GitLab under a path prefix.

use crate::callbacks::About;
use crate::faults::{Faults, visible};
use crate::journal::{Finished, Triggered};
use crate::runtime::{Shared, header_str, json, page, rfc3339, same};
use crate::script::Outcome;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

const PROVIDER: &str = "gitlab";
const CORRELATION: &str = "PROMOTION_CORRELATION_ID";
/// GitLab's default and largest page sizes.
const DEFAULT_PER_PAGE: usize = 20;
const MAX_PER_PAGE: usize = 100;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scope {
    /// `api`: everything.
    Api,
    /// `read_api`: reads only.
    ReadApi,
}

/// The tokens the stand-in accepts.
pub(crate) struct Tokens {
    /// Scope `api`.
    pub api: &'static str,
    /// Scope `read_api`.
    pub read: &'static str,
    /// A pipeline trigger token.
    pub trigger: &'static str,
}

pub(crate) struct GitLab {
    base: String,
    tokens: Tokens,
    shared: Shared,
    faults: Faults,
    state: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    next_id: u64,
    pipelines: HashMap<u64, Pipeline>,
    projects: HashMap<String, Project>,
}

struct Project {
    id: u64,
    /// Pipeline ids, oldest first.
    pipelines: Vec<u64>,
}

struct Pipeline {
    id: u64,
    iid: u64,
    project: String,
    project_id: u64,
    git_ref: String,
    variables: Vec<(String, String)>,
    name: Option<String>,
    /// `api` (pipeline endpoint) or `trigger` (trigger token).
    source: &'static str,
    status: &'static str,
    created: SystemTime,
    finished: Option<SystemTime>,
    /// For the find lag of the fault layer.
    born: Instant,
    listings_skipped: usize,
}

fn message(status: StatusCode, text: &str) -> Response {
    json(status, json!({"message": text}))
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "404 Not found")
}

impl GitLab {
    pub fn new(base: String, tokens: Tokens, shared: Shared, faults: Faults) -> Arc<Self> {
        Arc::new(Self {
            base,
            tokens,
            shared,
            faults,
            state: Mutex::new(Store {
                next_id: 1000,
                ..Store::default()
            }),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        let api = Self::api();
        Router::new()
            .merge(api.clone())
            .nest("/gitlab", api)
            .fallback(web)
            .with_state(self)
    }

    fn api() -> Router<Arc<Self>> {
        Router::new()
            .route("/api/v4/projects/{project}/pipeline", post(create))
            .route("/api/v4/projects/{project}/trigger/pipeline", post(trigger))
            .route("/api/v4/projects/{project}", get(project_info))
            .route(
                "/api/v4/projects/{project}/repository/files/{file}/raw",
                get(raw_file),
            )
            .route("/api/v4/projects/{project}/pipelines", get(list))
            .route("/api/v4/projects/{project}/pipelines/{id}", get(show))
            .route(
                "/api/v4/projects/{project}/pipelines/{id}/variables",
                get(variables),
            )
            .route(
                "/api/v4/projects/{project}/pipelines/{id}/cancel",
                post(cancel),
            )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The token's scope; `None` for an unknown token.
    fn scope(&self, headers: &HeaderMap) -> Option<Scope> {
        match header_str(headers, "private-token") {
            Some(t) if same(self.tokens.api, t) => Some(Scope::Api),
            Some(t) if same(self.tokens.read, t) => Some(Scope::ReadApi),
            _ => None,
        }
    }

    /// The 401 answer, unless the request carries a token that may read.
    fn denied(&self, headers: &HeaderMap) -> Option<Response> {
        match self.scope(headers) {
            Some(_) => None,
            None => Some(message(StatusCode::UNAUTHORIZED, "401 Unauthorized")),
        }
    }

    /// The 401 or 403 answer, unless the request carries a token that may write.
    fn denied_write(&self, headers: &HeaderMap) -> Option<Response> {
        match self.scope(headers) {
            Some(Scope::Api) => None,
            Some(Scope::ReadApi) => Some(message(StatusCode::FORBIDDEN, "403 Forbidden")),
            None => Some(message(StatusCode::UNAUTHORIZED, "401 Unauthorized")),
        }
    }

    fn web_url(&self, project: &str, id: u64) -> String {
        format!("{}/{project}/-/pipelines/{id}", self.base)
    }

    fn pipeline_json(&self, p: &Pipeline) -> Value {
        json!({
            "id": p.id,
            "iid": p.iid,
            "project_id": p.project_id,
            "status": p.status,
            "source": p.source,
            "ref": p.git_ref,
            "name": p.name,
            "web_url": self.web_url(&p.project, p.id),
            "created_at": rfc3339(p.created),
            "updated_at": rfc3339(p.finished.unwrap_or(p.created)),
            "started_at": rfc3339(p.created),
            "finished_at": p.finished.map(rfc3339),
        })
    }

    /// The pipeline `id` of `project`, as JSON.
    fn find(&self, project: &str, id: &str) -> Option<Value> {
        let id: u64 = id.parse().ok()?;
        let s = self.lock();
        let p = s.pipelines.get(&id).filter(|p| p.project == project)?;
        Some(self.pipeline_json(p))
    }

    pub(crate) async fn finish(self: Arc<Self>, id: u64, outcome: Outcome) {
        let payload = {
            let mut s = self.lock();
            let Some(p) = s.pipelines.get_mut(&id) else {
                return;
            };
            if p.finished.is_some() {
                return;
            }
            p.status = match outcome {
                Outcome::Pass => "success",
                Outcome::Fail => "failed",
            };
            p.finished = Some(SystemTime::now());
            let p = &*p;
            (
                p.project.clone(),
                json!({
                    "object_kind": "pipeline",
                    "object_attributes": {
                        "id": p.id, "iid": p.iid, "name": p.name, "ref": p.git_ref,
                        "status": p.status, "detailed_status": p.status, "source": p.source,
                        "created_at": rfc3339(p.created), "finished_at": p.finished.map(rfc3339),
                        "variables": p.variables.iter().map(|(k, v)| json!({"key": k, "value": v})).collect::<Vec<_>>(),
                        "url": self.web_url(&p.project, p.id),
                    },
                    "project": {
                        "id": p.project_id,
                        "path_with_namespace": p.project,
                        "web_url": format!("{}/{}", self.base, p.project),
                    },
                }),
            )
        };
        let (project, payload) = payload;
        self.shared.journal.record_finished(Finished {
            provider: PROVIDER,
            job: project.clone(),
            run_id: id.to_string(),
            passed: outcome == Outcome::Pass,
            cancelled: false,
            at: SystemTime::now(),
        });
        if let Some(n) = &self.shared.notifier {
            n.gitlab(
                About {
                    provider: PROVIDER,
                    job: project,
                    run_id: id.to_string(),
                },
                &payload,
            )
            .await;
        }
    }
}

async fn create(
    State(gl): State<Arc<GitLab>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = gl.denied_write(&headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json(
            StatusCode::BAD_REQUEST,
            json!({"error": "body is not JSON"}),
        );
    };
    // The pipeline endpoint takes variables as a list of {key, value}.
    let variables: Vec<(String, String)> = body
        .get("variables")
        .and_then(Value::as_array)
        .map(|vs| {
            vs.iter()
                .filter_map(|v| {
                    Some((
                        v.get("key")?.as_str()?.to_owned(),
                        v.get("value")?.as_str()?.to_owned(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();
    start_pipeline(&gl, project, &body, variables, "api")
}

/// `POST .../trigger/pipeline`: the trigger token in the body, variables as a hash.
async fn trigger(
    State(gl): State<Arc<GitLab>>,
    Path(project): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return json(
            StatusCode::BAD_REQUEST,
            json!({"error": "body is not JSON"}),
        );
    };
    if !body
        .get("token")
        .and_then(Value::as_str)
        .is_some_and(|t| same(gl.tokens.trigger, t))
    {
        return not_found();
    }
    let variables: Vec<(String, String)> = body
        .get("variables")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    start_pipeline(&gl, project, &body, variables, "trigger")
}

fn start_pipeline(
    gl: &Arc<GitLab>,
    project: String,
    body: &Value,
    variables: Vec<(String, String)>,
    source: &'static str,
) -> Response {
    let Some(git_ref) = body.get("ref").and_then(Value::as_str) else {
        return json(StatusCode::BAD_REQUEST, json!({"error": "ref is missing"}));
    };
    let inputs: Vec<(String, String)> = body
        .get("inputs")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        v.as_str().map_or_else(|| v.to_string(), str::to_owned),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    let correlation_id = variables
        .iter()
        .chain(&inputs)
        .find(|(k, _)| k == CORRELATION)
        .map(|(_, v)| v.clone());
    let (outcome, after) = gl.shared.script.outcome(&project);
    let created = SystemTime::now();
    let answer = {
        let mut s = gl.lock();
        let id = s.next_id;
        s.next_id += 1;
        let next_project_id = s.projects.len() as u64 + 1;
        let entry = s
            .projects
            .entry(project.clone())
            .or_insert_with(|| Project {
                id: next_project_id,
                pipelines: Vec::new(),
            });
        entry.pipelines.push(id);
        let (project_id, iid) = (entry.id, entry.pipelines.len() as u64);
        let p = Pipeline {
            id,
            iid,
            project: project.clone(),
            project_id,
            git_ref: git_ref.to_owned(),
            variables,
            name: correlation_id.as_ref().map(|c| format!("gate {c}")),
            source,
            status: "running",
            created,
            finished: None,
            born: Instant::now(),
            listings_skipped: 0,
        };
        let answer = gl.pipeline_json(&p);
        s.pipelines.insert(id, p);
        (id, answer)
    };
    let (id, answer) = answer;
    gl.shared.journal.record_trigger(Triggered {
        provider: PROVIDER,
        job: project.clone(),
        run_id: id.to_string(),
        url: gl.web_url(&project, id),
        correlation_id,
        at: created,
    });
    let me = gl.clone();
    gl.shared.after(after, me.finish(id, outcome));
    json(StatusCode::CREATED, answer)
}

async fn list(
    State(gl): State<Arc<GitLab>>,
    Path(project): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied(&headers) {
        return denied;
    }
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page_no: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let ascending = q.get("sort").map(String::as_str) == Some("asc");
    let git_ref = q.get("ref");
    let source = q.get("source");
    let updated_after = match q
        .get("updated_after")
        .map(|t| chrono::DateTime::parse_from_rfc3339(t))
    {
        None => None,
        Some(Ok(t)) => Some(SystemTime::from(t)),
        Some(Err(_)) => {
            return json(
                StatusCode::BAD_REQUEST,
                json!({"error": "updated_after is invalid"}),
            );
        }
    };
    let lag = gl.faults.find_lag();
    let mut s = gl.lock();
    let Some(p) = s.projects.get(&project) else {
        return paged(json!([]), page_no, per_page, 0);
    };
    let mut ids = p.pipelines.clone();
    if !ascending {
        ids.reverse();
    }
    // Pipelines GitLab has not listed yet are left out.
    ids.retain(|id| {
        s.pipelines
            .get_mut(id)
            .is_some_and(|p| visible(lag, p.born, &mut p.listings_skipped))
    });
    let s = &*s;
    let matching: Vec<&Pipeline> = ids
        .iter()
        .filter_map(|id| s.pipelines.get(id))
        .filter(|p| git_ref.is_none_or(|r| *r == p.git_ref))
        .filter(|p| source.is_none_or(|src| src == p.source))
        .filter(|p| updated_after.is_none_or(|t| p.finished.unwrap_or(p.created) > t))
        .collect();
    let total = matching.len();
    let out: Vec<Value> = matching
        .iter()
        .skip((page_no - 1) * per_page)
        .take(per_page)
        .map(|p| gl.pipeline_json(p))
        .collect();
    paged(Value::Array(out), page_no, per_page, total)
}

/// A page of a listing with GitLab's offset-pagination headers; `x-next-page` is
/// empty on the last page.
fn paged(body: Value, page: usize, per_page: usize, total: usize) -> Response {
    let pages = total.div_ceil(per_page).max(1);
    let mut resp = json(StatusCode::OK, body);
    let next = if page < pages {
        (page + 1).to_string()
    } else {
        String::new()
    };
    let prev = if page > 1 {
        (page - 1).to_string()
    } else {
        String::new()
    };
    for (name, value) in [
        ("x-page", page.to_string()),
        ("x-per-page", per_page.to_string()),
        ("x-next-page", next),
        ("x-prev-page", prev),
        ("x-total", total.to_string()),
        ("x-total-pages", pages.to_string()),
    ] {
        if let Ok(v) = axum::http::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// The CI file of every project: it declares the correlation input and puts it in the
/// pipeline's name, as the stand-in names its pipelines.
const CI_FILE: &str = "spec:
  inputs:
    PROMOTION_CORRELATION_ID:
      default: ''
---
workflow:
  name: \"gate $[[ inputs.PROMOTION_CORRELATION_ID ]]\"
gate:
  script: [echo gate]
";

/// `GET /api/v4/projects/:id`: projects exist on demand, with the default CI file path.
async fn project_info(
    State(gl): State<Arc<GitLab>>,
    Path(project): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied(&headers) {
        return denied;
    }
    let id = gl.lock().projects.get(&project).map_or(0, |p| p.id);
    json(
        StatusCode::OK,
        json!({
            "id": id, "path_with_namespace": project, "default_branch": "main",
            "ci_config_path": null, "web_url": format!("{}/{project}", gl.base),
        }),
    )
}

/// `GET /api/v4/projects/:id/repository/files/:path/raw` (`ref` optional): `.gitlab-ci.yml`.
async fn raw_file(
    State(gl): State<Arc<GitLab>>,
    Path((_project, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied(&headers) {
        return denied;
    }
    if file != ".gitlab-ci.yml" {
        return message(StatusCode::NOT_FOUND, "404 File Not Found");
    }
    let mut resp = (StatusCode::OK, CI_FILE).into_response();
    resp.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/plain"),
    );
    resp
}

async fn show(
    State(gl): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied(&headers) {
        return denied;
    }
    match gl.find(&project, &id) {
        Some(p) => json(StatusCode::OK, p),
        None => not_found(),
    }
}

async fn variables(
    State(gl): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied(&headers) {
        return denied;
    }
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let s = gl.lock();
    match s.pipelines.get(&id).filter(|p| p.project == project) {
        Some(p) => json(
            StatusCode::OK,
            Value::Array(
                p.variables
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
                    .collect(),
            ),
        ),
        None => not_found(),
    }
}

async fn cancel(
    State(gl): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gl.denied_write(&headers) {
        return denied;
    }
    let Ok(id) = id.parse::<u64>() else {
        return not_found();
    };
    let (answer, cancelled) = {
        let mut s = gl.lock();
        let Some(p) = s.pipelines.get_mut(&id).filter(|p| p.project == project) else {
            return not_found();
        };
        let cancelled = p.finished.is_none();
        if cancelled {
            p.status = "canceled";
            p.finished = Some(SystemTime::now());
        }
        (gl.pipeline_json(p), cancelled)
    };
    if cancelled {
        gl.shared.journal.record_finished(Finished {
            provider: PROVIDER,
            job: project,
            run_id: id.to_string(),
            passed: false,
            cancelled: true,
            at: SystemTime::now(),
        });
    }
    json(StatusCode::OK, answer)
}

/// Pipeline pages for people; anything else is GitLab's 404.
async fn web(State(gl): State<Arc<GitLab>>, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let Some((project, id)) = path.split_once("/-/pipelines/") else {
        return not_found();
    };
    let id = id.trim_end_matches('/');
    match gl.find(project, id) {
        Some(p) => page(format!(
            "GitLab stand-in\n\npipeline {id} of {project} on {}: {}\n",
            p["ref"].as_str().unwrap_or_default(),
            p["status"].as_str().unwrap_or_default()
        )),
        None => not_found(),
    }
}

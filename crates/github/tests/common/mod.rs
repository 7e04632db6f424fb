//! A local fake of the GitHub REST API, answering as GitHub documents: paths,
//! status codes, bodies and headers. Binds 127.0.0.1:0 only.

#![allow(dead_code)]

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use promotion_github::{
    AppCredentials, Credentials, GitHubConfig, GitHubConnection, HttpSettings, Repository,
    SecretString,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const TOKEN: &str = "ghp_fake_s3cret_token";
pub const APP_ID: &str = "4242";
pub const INSTALLATION_ID: u64 = 77;
pub const PRIVATE_KEY: &[u8] = include_bytes!("../data/app-key.pem");
pub const PUBLIC_KEY: &[u8] = include_bytes!("../data/app-key.pub.pem");

/// How the fake answers a dispatch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DispatchMode {
    /// Current GitHub.com: 200 with the run's details when asked, else 204.
    RunDetails,
    /// An older server that ignores the field: always 204.
    NoContent,
    /// An older server that refuses the unknown field with 400.
    RejectsField,
}

/// A canned answer that replaces the normal one.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Status, headers and body.
    Answer(u16, Vec<(&'static str, String)>, String),
    /// Never answers.
    Hang,
    /// Runs the normal handler, then replaces its answer with this status (the
    /// request had its effect; the client is told something else).
    AfterEffect(u16),
}

impl Reply {
    pub fn status(code: u16, body: &str) -> Self {
        Self::Answer(code, vec![], body.to_owned())
    }
    pub fn with_headers(code: u16, headers: &[(&'static str, &str)], body: &str) -> Self {
        Self::Answer(
            code,
            headers.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            body.to_owned(),
        )
    }
}

#[derive(Clone, Debug)]
pub struct FakeRun {
    pub id: u64,
    pub workflow: String,
    pub display_title: String,
    pub status: String,
    pub conclusion: Option<String>,
    pub event: String,
}

#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub authorization: Option<String>,
    pub headers: HeaderMap,
    pub body: Value,
}

pub struct FakeState {
    pub dispatch_mode: DispatchMode,
    pub runs: Vec<FakeRun>,
    next_run_id: u64,
    /// A new run shows in listings only after this many listings (GitHub creates runs asynchronously).
    pub listing_lag: usize,
    pub seen: Vec<Seen>,
    scripts: Vec<(Method, String, VecDeque<Reply>)>,
    pub labels: BTreeMap<u64, BTreeSet<String>>,
    pub statuses: Vec<Value>,
    /// Installation tokens issued.
    pub issued: Vec<String>,
    /// When each issued token expires; an expired one is refused with 401, as GitHub does.
    pub expiry: HashMap<String, chrono::DateTime<chrono::Utc>>,
    /// How long the next tokens live (one entry per token, then `token_ttl`).
    pub next_ttls: VecDeque<chrono::Duration>,
    pub token_ttl: chrono::Duration,
    pub jwt_claims: Vec<Value>,
}

#[derive(Clone)]
pub struct Fake {
    pub state: Arc<Mutex<FakeState>>,
    pub base: String,
}

type Shared = Arc<Mutex<FakeState>>;

fn error(code: StatusCode, message: &str) -> Response {
    (
        code,
        axum::Json(json!({
            "message": message,
            "documentation_url": "https://docs.github.com/rest",
            "status": code.as_u16().to_string(),
        })),
    )
        .into_response()
}

fn authorized(state: &FakeState, headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let Some(token) = value.strip_prefix("Bearer ") else {
        return false;
    };
    token == TOKEN
        || state
            .expiry
            .get(token)
            .is_some_and(|at| *at > chrono::Utc::now())
}

fn run_json(base: &str, run: &FakeRun) -> Value {
    json!({
        "id": run.id,
        "name": "gate",
        "display_title": run.display_title,
        "event": run.event,
        "status": run.status,
        "conclusion": run.conclusion,
        "html_url": format!("https://github.example/acme/shop/actions/runs/{}", run.id),
        "url": format!("{base}/repos/acme/shop/actions/runs/{}", run.id),
        "path": format!(".github/workflows/{}", run.workflow),
        "created_at": "2026-01-01T00:00:00Z",
        "run_attempt": 1,
    })
}

async fn dispatch(
    State(state): State<Shared>,
    Path((_owner, _repo, workflow)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(_git_ref) = body.get("ref").and_then(Value::as_str) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        );
    };
    let wants_details = body.get("return_run_details").is_some();
    if wants_details && s.dispatch_mode == DispatchMode::RejectsField {
        return error(
            StatusCode::BAD_REQUEST,
            "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
        );
    }
    let inputs = body
        .get("inputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if inputs.len() > 25 {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "you may only define up to 25 `inputs`",
        );
    }
    let correlation = inputs
        .get("PROMOTION_CORRELATION_ID")
        .and_then(Value::as_str)
        .unwrap_or("");
    s.next_run_id += 1;
    let id = s.next_run_id;
    s.runs.push(FakeRun {
        id,
        workflow: workflow.clone(),
        // What `run-name: gate ${{ inputs.PROMOTION_CORRELATION_ID }}` renders.
        display_title: format!("gate {correlation}"),
        status: "queued".into(),
        conclusion: None,
        event: "workflow_dispatch".into(),
    });
    if wants_details && s.dispatch_mode == DispatchMode::RunDetails {
        let run_url = format!(
            "{}/repos/acme/shop/actions/runs/{id}",
            "https://api.github.example"
        );
        return (
            StatusCode::OK,
            axum::Json(json!({
                "workflow_run_id": id,
                "run_url": run_url,
                "html_url": format!("https://github.example/acme/shop/actions/runs/{id}"),
            })),
        )
            .into_response();
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn list_runs(
    State(state): State<Shared>,
    Path((_owner, _repo, workflow)): Path<(String, String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    if let Some(created) = query.get("created")
        && !created.starts_with(">=")
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid created filter");
    }
    if s.listing_lag > 0 {
        s.listing_lag -= 1;
        return axum::Json(json!({"total_count": 0, "workflow_runs": []})).into_response();
    }
    let event = query.get("event").cloned();
    let per_page: usize = query
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30);
    let page: usize = query.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
    let mut runs: Vec<&FakeRun> = s
        .runs
        .iter()
        .filter(|r| r.workflow == workflow)
        .filter(|r| event.as_deref().is_none_or(|e| e == r.event))
        .collect();
    runs.sort_by_key(|r| std::cmp::Reverse(r.id));
    let total = runs.len();
    let base = "https://api.github.example";
    let page_runs: Vec<Value> = runs
        .into_iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|r| run_json(base, r))
        .collect();
    axum::Json(json!({"total_count": total, "workflow_runs": page_runs})).into_response()
}

async fn get_run(
    State(state): State<Shared>,
    Path((_owner, _repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    match s.runs.iter().find(|r| r.id == id) {
        Some(run) => axum::Json(run_json("https://api.github.example", run)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn cancel_run(
    State(state): State<Shared>,
    Path((_owner, _repo, id)): Path<(String, String, u64)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Some(run) = s.runs.iter_mut().find(|r| r.id == id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if run.status == "completed" {
        return error(
            StatusCode::CONFLICT,
            "Cannot cancel a workflow run that is completed.",
        );
    }
    run.status = "completed".into();
    run.conclusion = Some("cancelled".into());
    (StatusCode::ACCEPTED, axum::Json(json!({}))).into_response()
}

async fn add_labels(
    State(state): State<Shared>,
    Path((_owner, _repo, number)): Path<(String, String, u64)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Some(labels) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|b| b.get("labels").and_then(Value::as_array).cloned())
    else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
    };
    let set = s.labels.entry(number).or_default();
    for l in labels {
        if let Some(l) = l.as_str() {
            set.insert(l.to_owned());
        }
    }
    let all: Vec<Value> = set
        .iter()
        .map(|l| json!({"name": l, "color": "ededed"}))
        .collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn remove_label(
    State(state): State<Shared>,
    Path((_owner, _repo, number, name)): Path<(String, String, u64, String)>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let set = s.labels.entry(number).or_default();
    if !set.remove(&name) {
        return error(StatusCode::NOT_FOUND, "Label does not exist");
    }
    let all: Vec<Value> = set.iter().map(|l| json!({"name": l})).collect();
    axum::Json(Value::Array(all)).into_response()
}

async fn create_status(
    State(state): State<Shared>,
    Path((_owner, _repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut s = state.lock().unwrap();
    if !authorized(&s, &headers) {
        return error(StatusCode::UNAUTHORIZED, "Bad credentials");
    }
    let Ok(mut body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let state_ok = matches!(
        body.get("state").and_then(Value::as_str),
        Some("pending" | "success" | "failure" | "error")
    );
    let description_len = body
        .get("description")
        .and_then(Value::as_str)
        .map_or(0, |d| d.chars().count());
    if !state_ok || description_len > 140 {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    body["sha"] = Value::String(sha);
    s.statuses.push(body.clone());
    (StatusCode::CREATED, axum::Json(body)).into_response()
}

async fn access_tokens(
    State(state): State<Shared>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let mut s = state.lock().unwrap();
    let Some(jwt) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        );
    };
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(PUBLIC_KEY).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[APP_ID]);
    let claims = match jsonwebtoken::decode::<Value>(jwt, &key, &validation) {
        Ok(data) => data.claims,
        Err(_) => {
            return error(
                StatusCode::UNAUTHORIZED,
                "A JSON web token could not be decoded",
            );
        }
    };
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    let now = chrono::Utc::now().timestamp();
    // GitHub's rules: not issued in the future, expiring at most ten minutes out.
    if iat > now || exp - now > 600 || exp - iat > 600 {
        return error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        );
    }
    if installation != INSTALLATION_ID {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    s.jwt_claims.push(claims);
    let token = format!("ghs_installation_{}", s.issued.len() + 1);
    s.issued.push(token.clone());
    let ttl = s.next_ttls.pop_front().unwrap_or(s.token_ttl);
    let expires = chrono::Utc::now() + ttl;
    s.expiry.insert(token.clone(), expires);
    let expires_at = expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (
        StatusCode::CREATED,
        axum::Json(json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"actions": "write", "issues": "write", "statuses": "write"},
            "repository_selection": "all",
        })),
    )
        .into_response()
}

/// Records every request, and answers with a scripted reply when one matches.
async fn recorder(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20)
        .await
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let reply = {
        let mut s = state.lock().unwrap();
        s.seen.push(Seen {
            method: parts.method.clone(),
            path: path.clone(),
            query: parts.uri.query().unwrap_or("").to_owned(),
            authorization: parts
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            headers: parts.headers.clone(),
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        });
        s.scripts
            .iter_mut()
            .find(|(m, suffix, replies)| {
                *m == parts.method && path.ends_with(suffix.as_str()) && !replies.is_empty()
            })
            .and_then(|(_, _, replies)| replies.pop_front())
    };
    let request = Request::from_parts(parts, Body::from(bytes));
    match reply {
        None => next.run(request).await,
        Some(Reply::Hang) => std::future::pending().await,
        Some(Reply::AfterEffect(code)) => {
            let _ = next.run(request).await;
            StatusCode::from_u16(code).unwrap().into_response()
        }
        Some(Reply::Answer(code, headers, body)) => {
            let mut response = Response::builder().status(code);
            for (k, v) in headers {
                response = response.header(k, v);
            }
            response
                .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
                .body(Body::from(body))
                .unwrap()
        }
    }
}

fn routes(state: Shared) -> Router {
    Router::new()
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
            post(dispatch),
        )
        .route(
            "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
            get(list_runs),
        )
        .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
        .route(
            "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
            post(cancel_run),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels",
            post(add_labels),
        )
        .route(
            "/repos/{owner}/{repo}/issues/{number}/labels/{name}",
            delete(remove_label),
        )
        .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
        .route(
            "/app/installations/{installation}/access_tokens",
            post(access_tokens),
        )
        .with_state(state)
}

impl Fake {
    /// Starts the fake on 127.0.0.1 at a free port; `prefix` is `""` for GitHub.com
    /// or `"/api/v3"` for GitHub Enterprise Server.
    pub async fn start(prefix: &str) -> Self {
        let state = Arc::new(Mutex::new(FakeState {
            dispatch_mode: DispatchMode::RunDetails,
            runs: Vec::new(),
            next_run_id: 1000,
            listing_lag: 0,
            seen: Vec::new(),
            scripts: Vec::new(),
            labels: BTreeMap::new(),
            statuses: Vec::new(),
            issued: Vec::new(),
            expiry: HashMap::new(),
            next_ttls: VecDeque::new(),
            token_ttl: chrono::Duration::hours(1),
            jwt_claims: Vec::new(),
        }));
        let api = routes(state.clone());
        let app = if prefix.is_empty() {
            api
        } else {
            Router::new().nest(prefix, api)
        }
        .layer(middleware::from_fn_with_state(state.clone(), recorder));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            state,
            base: format!("http://{addr}{prefix}"),
        }
    }

    /// Queues `replies` for requests with `method` whose path ends with `suffix`.
    pub fn script(&self, method: Method, suffix: &str, replies: Vec<Reply>) {
        self.state
            .lock()
            .unwrap()
            .scripts
            .push((method, suffix.to_owned(), replies.into()));
    }

    /// How many requests with `method` had a path ending with `suffix`.
    pub fn count(&self, method: Method, suffix: &str) -> usize {
        self.state
            .lock()
            .unwrap()
            .seen
            .iter()
            .filter(|s| s.method == method && s.path.ends_with(suffix))
            .count()
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    pub fn set_mode(&self, mode: DispatchMode) {
        self.state.lock().unwrap().dispatch_mode = mode;
    }

    /// Adds a run as if someone had dispatched it earlier.
    pub fn add_run(
        &self,
        workflow: &str,
        title: &str,
        status: &str,
        conclusion: Option<&str>,
    ) -> u64 {
        let mut s = self.state.lock().unwrap();
        s.next_run_id += 1;
        let id = s.next_run_id;
        s.runs.push(FakeRun {
            id,
            workflow: workflow.into(),
            display_title: title.into(),
            status: status.into(),
            conclusion: conclusion.map(str::to_owned),
            event: "workflow_dispatch".into(),
        });
        id
    }

    pub fn set_run(&self, id: u64, status: &str, conclusion: Option<&str>) {
        let mut s = self.state.lock().unwrap();
        let run = s.runs.iter_mut().find(|r| r.id == id).unwrap();
        run.status = status.into();
        run.conclusion = conclusion.map(str::to_owned);
    }

    pub fn runs(&self) -> Vec<FakeRun> {
        self.state.lock().unwrap().runs.clone()
    }

    /// Settings short enough for tests.
    pub fn settings() -> HttpSettings {
        HttpSettings {
            connect_timeout: Duration::from_millis(500),
            request_timeout: Duration::from_millis(500),
            read_retries: 3,
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(20),
            max_rate_limit_wait: Duration::from_secs(1),
            find_attempts: 4,
            find_interval: Duration::from_millis(10),
        }
    }

    pub fn token_config(&self) -> GitHubConfig {
        GitHubConfig::new(
            "github-main",
            &self.base,
            Credentials::Token(SecretString::new(TOKEN)),
        )
        .unwrap()
        .with_repository(Repository {
            owner: "acme".into(),
            name: "shop".into(),
        })
        .with_http(Self::settings())
    }

    pub fn app_config(&self) -> GitHubConfig {
        let app = AppCredentials::new(APP_ID, INSTALLATION_ID, PRIVATE_KEY).unwrap();
        GitHubConfig::new("github-app", &self.base, Credentials::App(app))
            .unwrap()
            .with_repository(Repository {
                owner: "acme".into(),
                name: "shop".into(),
            })
            .with_http(Self::settings())
    }

    pub fn connection(&self) -> GitHubConnection {
        GitHubConnection::new(&self.token_config()).unwrap()
    }
}

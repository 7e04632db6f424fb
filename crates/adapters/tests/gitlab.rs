//! GitLabRunner against a local server that answers as GitLab's REST API v4 documents,
//! mounted under a path prefix as a self-hosted GitLab can be.

mod common;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Canned, Recorder, bounded, fast_http, never_answers, serve};
use promotion_adapters::{
    Connection, ConnectionConfig, ConnectionKind, Credentials, GitLabCredentials, GitLabParameters,
    GitLabRunner, SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, RunRef, RunState, TestRunner, TriggerRequest};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PROJECT: &str = "group/sub/app";
const ENCODED: &str = "group%2Fsub%2Fapp";
const API_TOKEN: &str = "glpat-api-s3cr3t";
const READ_TOKEN: &str = "glpat-read-s3cr3t";
const TRIGGER_TOKEN: &str = "glptt-trigger-s3cr3t";

#[derive(Clone, Debug)]
struct Pipeline {
    status: String,
    git_ref: String,
    variables: Vec<(String, String)>,
    name: Option<String>,
}

struct GitLab {
    base: Mutex<String>,
    next_id: AtomicU64,
    forbid_variables: AtomicBool,
    pipelines: Mutex<BTreeMap<u64, Pipeline>>,
    bodies: Mutex<Vec<Value>>,
}

impl GitLab {
    fn json(&self, id: u64, p: &Pipeline) -> Value {
        json!({
            "id": id, "iid": id - 99, "project_id": 7, "status": p.status, "source": "api",
            "ref": p.git_ref, "sha": "a91957a858320c0e17f3a0eca7cfacbff50ea29a",
            "name": p.name,
            "web_url": format!("{}/{PROJECT}/-/pipelines/{id}", self.base.lock().unwrap()),
            "created_at": "2026-11-25T06:00:00.000Z", "updated_at": "2026-11-25T06:00:00.000Z",
        })
    }

    fn set_status(&self, id: u64, status: &str) {
        self.pipelines.lock().unwrap().get_mut(&id).unwrap().status = status.into();
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({"message": text}))).into_response()
}

/// The token's scope: `api`, `read_api`, or none.
fn scope(headers: &HeaderMap) -> Option<&'static str> {
    match headers.get("private-token").and_then(|v| v.to_str().ok()) {
        Some(API_TOKEN) => Some("api"),
        Some(READ_TOKEN) => Some("read_api"),
        _ => None,
    }
}

fn project_or_404(project: &str) -> Option<Response> {
    (project != PROJECT).then(|| message(StatusCode::NOT_FOUND, "404 Project Not Found"))
}

fn create(s: &GitLab, body: &Value, variables: Vec<(String, String)>) -> Response {
    if s.forbid_variables.load(Ordering::SeqCst) && !variables.is_empty() {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"message": {"base": ["Insufficient permissions to set pipeline variables"]}})),
        )
            .into_response();
    }
    let Some(git_ref) = body["ref"].as_str() else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "ref is missing"})),
        )
            .into_response();
    };
    // The project's `workflow:name` shows an input in the pipeline's name.
    let name = body["inputs"]["PROMOTION_CORRELATION_ID"]
        .as_str()
        .map(|id| format!("gate {id}"));
    let id = s.next_id.fetch_add(1, Ordering::SeqCst);
    let p = Pipeline {
        status: "created".into(),
        git_ref: git_ref.into(),
        variables,
        name,
    };
    let out = s.json(id, &p);
    s.pipelines.lock().unwrap().insert(id, p);
    (StatusCode::CREATED, Json(out)).into_response()
}

async fn create_pipeline(
    State(s): State<Arc<GitLab>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    match scope(&headers) {
        None => return message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
        Some("read_api") => return message(StatusCode::FORBIDDEN, "403 Forbidden"),
        _ => {}
    }
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    s.bodies.lock().unwrap().push(body.clone());
    let variables = body["variables"]
        .as_array()
        .map(|vs| {
            vs.iter()
                .map(|v| {
                    (
                        v["key"].as_str().unwrap_or_default().to_owned(),
                        v["value"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    create(&s, &body, variables)
}

async fn trigger_pipeline(
    State(s): State<Arc<GitLab>>,
    Path(project): Path<String>,
    Json(body): Json<Value>,
) -> Response {
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    if body["token"].as_str() != Some(TRIGGER_TOKEN) {
        return message(StatusCode::NOT_FOUND, "404 Not Found");
    }
    s.bodies.lock().unwrap().push(body.clone());
    let variables = body["variables"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect()
        })
        .unwrap_or_default();
    create(&s, &body, variables)
}

async fn list(
    State(s): State<Arc<GitLab>>,
    Path(project): Path<String>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    if scope(&headers).is_none() {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    assert_eq!(q.get("order_by").map(String::as_str), Some("id"));
    assert_eq!(q.get("sort").map(String::as_str), Some("desc"));
    let per_page: usize = q.get("per_page").and_then(|p| p.parse().ok()).unwrap_or(20);
    let pipelines = s.pipelines.lock().unwrap();
    let out: Vec<Value> = pipelines
        .iter()
        .rev()
        .filter(|(_, p)| q.get("ref").is_none_or(|r| *r == p.git_ref))
        .take(per_page)
        .map(|(id, p)| {
            let mut v = s.json(*id, p);
            v.as_object_mut().unwrap().remove("web_url");
            v["web_url"] = json!(format!(
                "{}/{PROJECT}/-/pipelines/{id}",
                s.base.lock().unwrap()
            ));
            v
        })
        .collect();
    Json(out).into_response()
}

async fn show(
    State(s): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if scope(&headers).is_none() {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    match s.pipelines.lock().unwrap().get(&id) {
        Some(p) => Json(s.json(id, p)).into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn variables(
    State(s): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    if scope(&headers).is_none() {
        return message(StatusCode::UNAUTHORIZED, "401 Unauthorized");
    }
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    match s.pipelines.lock().unwrap().get(&id) {
        Some(p) => Json(
            p.variables
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v, "variable_type": "env_var"}))
                .collect::<Vec<_>>(),
        )
        .into_response(),
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn cancel(
    State(s): State<Arc<GitLab>>,
    Path((project, id)): Path<(String, u64)>,
    headers: HeaderMap,
) -> Response {
    match scope(&headers) {
        None => return message(StatusCode::UNAUTHORIZED, "401 Unauthorized"),
        Some("read_api") => return message(StatusCode::FORBIDDEN, "403 Forbidden"),
        _ => {}
    }
    if let Some(r) = project_or_404(&project) {
        return r;
    }
    let mut pipelines = s.pipelines.lock().unwrap();
    match pipelines.get_mut(&id) {
        Some(p) => {
            if !matches!(
                p.status.as_str(),
                "success" | "failed" | "canceled" | "skipped"
            ) {
                p.status = "canceled".into();
            }
            Json(s.json(id, p)).into_response()
        }
        None => message(StatusCode::NOT_FOUND, "404 Not found"),
    }
}

async fn unrouted(req: Request) -> Response {
    message(
        StatusCode::NOT_FOUND,
        &format!("404 no route {}", req.uri().path()),
    )
}

struct Fixture {
    gitlab: Arc<GitLab>,
    rec: Arc<Recorder>,
    base: String,
}

async fn fixture() -> Fixture {
    let gitlab = Arc::new(GitLab {
        base: Mutex::default(),
        next_id: AtomicU64::new(100),
        forbid_variables: AtomicBool::new(false),
        pipelines: Mutex::default(),
        bodies: Mutex::default(),
    });
    let rec = Arc::new(Recorder::default());
    let api = Router::new()
        .route("/api/v4/projects/{project}/pipeline", post(create_pipeline))
        .route(
            "/api/v4/projects/{project}/trigger/pipeline",
            post(trigger_pipeline),
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
        .with_state(gitlab.clone());
    let router = Router::new().nest("/gitlab", api).fallback(unrouted);
    let base = format!("{}/gitlab", serve(router, rec.clone()).await);
    *gitlab.base.lock().unwrap() = base.clone();
    Fixture { gitlab, rec, base }
}

fn connection(base: &str, credentials: GitLabCredentials) -> Connection {
    let mut config = ConnectionConfig::new("gitlab-main", ConnectionKind::Gitlab, base).unwrap();
    config.http = fast_http();
    Connection {
        config,
        credentials: Credentials::Gitlab(credentials),
    }
}

fn api_token(token: &str) -> GitLabCredentials {
    GitLabCredentials::AccessToken(SecretString::new(token))
}

fn trigger_token() -> GitLabCredentials {
    GitLabCredentials::TriggerToken {
        trigger_token: SecretString::new(TRIGGER_TOKEN),
        read_token: SecretString::new(READ_TOKEN),
    }
}

fn runner(base: &str) -> GitLabRunner {
    GitLabRunner::new(&connection(base, api_token(API_TOKEN))).unwrap()
}

fn request(correlation_id: &str) -> TriggerRequest {
    TriggerRequest {
        provider: Provider::Gitlab,
        connection: Some("gitlab-main".into()),
        job: PROJECT.into(),
        git_ref: Some("main".into()),
        parameters: BTreeMap::from([("PR".to_string(), "42".to_string())]),
        correlation_id: correlation_id.into(),
    }
}

fn run(id: &str) -> RunRef {
    RunRef {
        provider: Provider::Gitlab,
        connection: Some("gitlab-main".into()),
        job: PROJECT.into(),
        run_id: id.into(),
    }
}

fn pipeline_calls(rec: &Recorder) -> usize {
    rec.count(&format!("POST /gitlab/api/v4/projects/{ENCODED}/pipeline"))
        + rec.count(&format!(
            "POST /gitlab/api/v4/projects/{ENCODED}/trigger/pipeline"
        ))
}

#[tokio::test]
async fn trigger_then_poll_until_passed() {
    let f = fixture().await;
    let r = runner(&f.base);
    let h = r.trigger(&request("cid-1")).await.unwrap();
    assert_eq!(h.run_id, "100");
    assert_eq!(h.url, Some(format!("{}/{PROJECT}/-/pipelines/100", f.base)));
    assert_eq!(
        f.gitlab.bodies.lock().unwrap()[0],
        json!({"ref": "main", "variables": [
            {"key": "PR", "value": "42", "variable_type": "env_var"},
            {"key": "PROMOTION_CORRELATION_ID", "value": "cid-1", "variable_type": "env_var"},
        ]})
    );
    assert_eq!(
        r.status(&run("100")).await.unwrap().state,
        RunState::Pending
    );
    f.gitlab.set_status(100, "running");
    assert_eq!(
        r.status(&run("100")).await.unwrap().state,
        RunState::Running
    );
    f.gitlab.set_status(100, "success");
    let s = r.status(&run("100")).await.unwrap();
    assert_eq!(s.state, RunState::Passed);
    assert_eq!(s.message.as_deref(), Some("success"));
    assert_eq!(s.url, Some(format!("{}/{PROJECT}/-/pipelines/100", f.base)));
    assert_eq!(pipeline_calls(&f.rec), 1);
}

#[tokio::test]
async fn every_pipeline_status_is_mapped() {
    let f = fixture().await;
    let r = runner(&f.base);
    r.trigger(&request("cid-s")).await.unwrap();
    use RunState::*;
    for (status, want) in [
        ("created", Pending),
        ("waiting_for_resource", Pending),
        ("preparing", Pending),
        ("pending", Pending),
        ("running", Running),
        ("canceling", Running),
        ("success", Passed),
        ("failed", Failed),
        ("canceled", Cancelled),
        ("skipped", Failed),
        ("manual", Pending),
        ("scheduled", Pending),
        ("brand_new", Running),
    ] {
        f.gitlab.set_status(100, status);
        assert_eq!(r.status(&run("100")).await.unwrap().state, want, "{status}");
    }
}

#[tokio::test]
async fn find_adopts_the_pipeline_with_the_correlation_id_or_none() {
    let f = fixture().await;
    let r = runner(&f.base);
    assert_eq!(r.find(&request("cid-a")).await.unwrap(), None);
    r.trigger(&request("cid-a")).await.unwrap();
    r.trigger(&request("cid-b")).await.unwrap();
    let mut other_ref = request("cid-c");
    other_ref.git_ref = Some("release/1.0".into());
    r.trigger(&other_ref).await.unwrap();

    let h = r.find(&request("cid-a")).await.unwrap().unwrap();
    assert_eq!(h.run_id, "100");
    assert_eq!(h.url, Some(format!("{}/{PROJECT}/-/pipelines/100", f.base)));
    assert_eq!(r.find(&other_ref).await.unwrap().unwrap().run_id, "102");
    assert_eq!(r.find(&request("cid-none")).await.unwrap(), None);
    assert_eq!(pipeline_calls(&f.rec), 3);
}

#[tokio::test]
async fn a_trigger_token_starts_and_a_read_token_polls() {
    let f = fixture().await;
    let r = GitLabRunner::new(&connection(&f.base, trigger_token())).unwrap();
    let h = r.trigger(&request("cid-t")).await.unwrap();
    assert_eq!(h.run_id, "100");
    assert_eq!(
        f.gitlab.bodies.lock().unwrap()[0],
        json!({"token": TRIGGER_TOKEN, "ref": "main",
               "variables": {"PR": "42", "PROMOTION_CORRELATION_ID": "cid-t"}})
    );
    f.gitlab.set_status(100, "failed");
    assert_eq!(r.status(&run("100")).await.unwrap().state, RunState::Failed);
    assert_eq!(
        r.find(&request("cid-t")).await.unwrap().unwrap().run_id,
        "100"
    );
    assert_eq!(
        f.rec.count(&format!(
            "POST /gitlab/api/v4/projects/{ENCODED}/trigger/pipeline"
        )),
        1
    );

    // A read_api token cannot cancel: a clear, permanent error.
    let err = r.cancel(&run("100")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("403 Forbidden"), "{}", err.message);

    // A wrong trigger token is a 404 in GitLab.
    let bad = GitLabRunner::new(&connection(
        &f.base,
        GitLabCredentials::TriggerToken {
            trigger_token: SecretString::new("glptt-wrong"),
            read_token: SecretString::new(READ_TOKEN),
        },
    ))
    .unwrap();
    let err = bad.trigger(&request("cid-u")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(!err.message.contains("glptt-wrong"), "{}", err.message);
}

#[tokio::test]
async fn inputs_replace_variables_where_variables_are_forbidden() {
    let f = fixture().await;
    f.gitlab.forbid_variables.store(true, Ordering::SeqCst);
    let err = runner(&f.base)
        .trigger(&request("cid-v"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains("Insufficient permissions to set pipeline variables"),
        "{}",
        err.message
    );

    let mut conn = connection(&f.base, api_token(API_TOKEN));
    conn.config.gitlab.parameters = GitLabParameters::Inputs;
    let r = GitLabRunner::new(&conn).unwrap();
    let h = r.trigger(&request("cid-i")).await.unwrap();
    assert_eq!(
        f.gitlab.bodies.lock().unwrap()[1],
        json!({"ref": "main", "inputs": {"PR": "42", "PROMOTION_CORRELATION_ID": "cid-i"}})
    );
    // Found by the pipeline's name, which the project's workflow:name builds from the input.
    assert_eq!(r.find(&request("cid-i")).await.unwrap(), Some(h));
    assert_eq!(r.find(&request("cid-none")).await.unwrap(), None);
}

#[tokio::test]
async fn cancel_cancels_and_a_finished_pipeline_is_no_error() {
    let f = fixture().await;
    let r = runner(&f.base);
    r.trigger(&request("cid-x")).await.unwrap();
    f.gitlab.set_status(100, "running");
    r.cancel(&run("100")).await.unwrap();
    assert_eq!(
        r.status(&run("100")).await.unwrap().state,
        RunState::Cancelled
    );
    f.gitlab.set_status(100, "success");
    r.cancel(&run("100")).await.unwrap();
    assert_eq!(
        f.rec.count(&format!(
            "POST /gitlab/api/v4/projects/{ENCODED}/pipelines/100/cancel"
        )),
        2
    );
}

#[tokio::test]
async fn unauthorized_is_permanent_and_says_what_to_check() {
    let f = fixture().await;
    let r = GitLabRunner::new(&connection(&f.base, api_token("glpat-expired"))).unwrap();
    let err = r.trigger(&request("cid-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        err.message,
        format!(
            "connection gitlab-main: 401 Unauthorized from POST /api/v4/projects/{ENCODED}/pipeline: check the access token (PRIVATE-TOKEN) and that it has not expired"
        )
    );
    let err = r.status(&run("100")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        f.rec.count(&format!(
            "GET /gitlab/api/v4/projects/{ENCODED}/pipelines/100"
        )),
        1
    );
}

#[tokio::test]
async fn not_found_is_permanent() {
    let f = fixture().await;
    let r = runner(&f.base);
    let err = r.status(&run("999")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("404 Not Found"), "{}", err.message);
    let mut req = request("cid-1");
    req.job = "group/missing".into();
    let err = r.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        f.rec
            .count("POST /gitlab/api/v4/projects/group%2Fmissing/pipeline"),
        1
    );
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_ratelimit_reset() {
    let f = fixture().await;
    let r = runner(&f.base);
    r.trigger(&request("cid-r")).await.unwrap();

    f.rec
        .inject([Canned::status(429).header("retry-after", "0")]);
    assert_eq!(
        r.status(&run("100")).await.unwrap().state,
        RunState::Pending
    );

    // GitLab's reset is a Unix time.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    f.rec.inject([Canned::status(429)
        .header("ratelimit-limit", "600")
        .header("ratelimit-remaining", "0")
        .header("ratelimit-reset", reset.to_string())
        .body(r#"{"message":"Retry later"}"#)]);
    let err = r.status(&run("100")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.retry_after
            .is_some_and(|d| d > Duration::from_secs(300)),
        "{err:?}"
    );

    f.rec.clear();
    f.rec
        .inject([Canned::status(429).header("retry-after", "60")]);
    let err = r.trigger(&request("cid-r2")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(pipeline_calls(&f.rec), 1);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let f = fixture().await;
    let r = runner(&f.base);
    r.trigger(&request("cid-5")).await.unwrap();
    f.rec.clear();
    f.rec.inject([Canned::status(500), Canned::status(503)]);
    assert_eq!(
        r.status(&run("100")).await.unwrap().state,
        RunState::Pending
    );
    assert_eq!(
        f.rec.count(&format!(
            "GET /gitlab/api/v4/projects/{ENCODED}/pipelines/100"
        )),
        3
    );
}

#[tokio::test]
async fn a_malformed_body_is_a_clear_error() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.rec
        .inject([Canned::status(200).body(r#"{"id": "not a number""#)]);
    let err = r.status(&run("100")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("malformed answer from GET"),
        "{}",
        err.message
    );

    // After a 201 the pipeline exists: an unreadable answer leaves only `find`.
    f.rec.inject([Canned::status(201).body("<html>")]);
    let err = r.trigger(&request("cid-m")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let base = never_answers().await;
    let mut conn = connection(&base, api_token(API_TOKEN));
    conn.config.http.request_timeout = Duration::from_millis(100);
    conn.config.http.read_retries = 1;
    let r = GitLabRunner::new(&conn).unwrap();
    let err = bounded(r.status(&run("100"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);
    let err = bounded(r.trigger(&request("cid-n"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
}

#[tokio::test]
async fn an_ambiguous_trigger_is_never_sent_twice() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.rec
        .inject([Canned::status(502).body("<html>502 Bad Gateway</html>")]);
    let err = r.trigger(&request("cid-z")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("502 Bad Gateway"), "{}", err.message);
    assert_eq!(pipeline_calls(&f.rec), 1);
}

#[tokio::test]
async fn a_trigger_without_a_ref_is_refused_before_sending() {
    let f = fixture().await;
    let mut req = request("cid-1");
    req.git_ref = None;
    let err = runner(&f.base).trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(f.rec.log().is_empty());
}

#[tokio::test]
async fn the_runner_debug_output_holds_no_token() {
    for creds in [api_token(API_TOKEN), trigger_token()] {
        let r = GitLabRunner::new(&connection("http://127.0.0.1:1/gitlab", creds)).unwrap();
        let out = format!("{r:?}");
        for secret in [API_TOKEN, READ_TOKEN, TRIGGER_TOKEN] {
            assert!(!out.contains(secret), "{out}");
        }
    }
}

//! JenkinsRunner against a local server that answers as Jenkins' remote access API documents.

mod common;

use axum::Router;
use axum::extract::{Form, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use common::{Canned, Recorder, bounded, fast_http, never_answers, serve};
use promotion_adapters::{
    Connection, ConnectionConfig, ConnectionKind, Credentials, JenkinsCredentials, JenkinsRunner,
    SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, RunRef, RunState, RunStatus, TestRunner, TriggerRequest};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const JOB: &str = "team/gate";
const TRIGGER: &str = "POST /job/team/job/gate/buildWithParameters";
/// `bot:tok` in basic auth.
const BASIC: &str = "Basic Ym90OnRvaw==";
const CRUMB: &str = "abc123";
const SESSION: &str = "JSESSIONID.deadbeef=node0xyz";

#[derive(Clone, Copy, Debug)]
enum TriggerReply {
    Created(u64),
    Merged(u64),
    NoLocation,
    Hang,
}

struct Jenkins {
    require_crumb: AtomicBool,
    trigger: Mutex<TriggerReply>,
    forms: Mutex<Vec<Vec<(String, String)>>>,
    queue_items: Mutex<BTreeMap<u64, Value>>,
    queue: Mutex<Value>,
    builds: Mutex<BTreeMap<u64, Value>>,
    job: Mutex<Value>,
}

impl Jenkins {
    fn new() -> Self {
        Self {
            require_crumb: AtomicBool::new(false),
            trigger: Mutex::new(TriggerReply::Created(5)),
            forms: Mutex::default(),
            queue_items: Mutex::default(),
            queue: Mutex::new(json!({"_class": "hudson.model.Queue", "items": []})),
            builds: Mutex::default(),
            job: Mutex::new(
                json!({"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "builds": []}),
            ),
        }
    }

    fn set_build(&self, n: u64, building: bool, result: Option<&str>) {
        self.builds.lock().unwrap().insert(
            n,
            json!({
                "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
                "building": building,
                "duration": 0,
                "number": n,
                "result": result,
                "url": format!("http://jenkins.internal:8080/job/team/job/gate/{n}/"),
            }),
        );
    }
}

fn html(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=utf-8")],
        format!(
            "<html><body><h2>HTTP ERROR {}</h2><p>{text}</p></body></html>",
            status.as_u16()
        ),
    )
        .into_response()
}

async fn basic_auth(req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v == BASIC);
    if ok {
        next.run(req).await
    } else {
        let mut resp = html(StatusCode::UNAUTHORIZED, "Unauthorized");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            "Basic realm=\"Jenkins\"".parse().unwrap(),
        );
        resp
    }
}

fn crumb_missing(s: &Jenkins, headers: &HeaderMap) -> Option<Response> {
    if !s.require_crumb.load(Ordering::SeqCst) {
        return None;
    }
    let crumb_ok = headers.get("jenkins-crumb").is_some_and(|v| v == CRUMB);
    let session_ok = headers
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|c| c.split("; ").any(|kv| kv == SESSION));
    if crumb_ok && session_ok {
        None
    } else {
        Some(html(
            StatusCode::FORBIDDEN,
            "No valid crumb was included in the request",
        ))
    }
}

async fn trigger(
    State(s): State<Arc<Jenkins>>,
    headers: HeaderMap,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if let Some(denied) = crumb_missing(&s, &headers) {
        return denied;
    }
    s.forms.lock().unwrap().push(form);
    let reply = *s.trigger.lock().unwrap();
    // Jenkins names its own idea of its host, which can be wrong behind a proxy.
    let location = |n: u64| format!("http://jenkins.internal:8080/queue/item/{n}/");
    match reply {
        TriggerReply::Created(n) => {
            (StatusCode::CREATED, [(header::LOCATION, location(n))]).into_response()
        }
        TriggerReply::Merged(n) => {
            (StatusCode::SEE_OTHER, [(header::LOCATION, location(n))]).into_response()
        }
        TriggerReply::NoLocation => StatusCode::CREATED.into_response(),
        TriggerReply::Hang => std::future::pending().await,
    }
}

async fn crumb_issuer() -> Response {
    (
        [(header::SET_COOKIE, format!("{SESSION}; Path=/; HttpOnly"))],
        axum::Json(json!({
            "_class": "hudson.security.csrf.DefaultCrumbIssuer",
            "crumb": CRUMB,
            "crumbRequestField": "Jenkins-Crumb",
        })),
    )
        .into_response()
}

async fn queue_item(State(s): State<Arc<Jenkins>>, Path(n): Path<u64>) -> Response {
    match s.queue_items.lock().unwrap().get(&n) {
        Some(item) => axum::Json(item.clone()).into_response(),
        None => html(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn queue(State(s): State<Arc<Jenkins>>) -> Response {
    axum::Json(s.queue.lock().unwrap().clone()).into_response()
}

async fn build(State(s): State<Arc<Jenkins>>, Path(n): Path<u64>) -> Response {
    match s.builds.lock().unwrap().get(&n) {
        Some(b) => axum::Json(b.clone()).into_response(),
        None => html(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn job(State(s): State<Arc<Jenkins>>) -> Response {
    axum::Json(s.job.lock().unwrap().clone()).into_response()
}

async fn redirect_after_post(State(s): State<Arc<Jenkins>>, headers: HeaderMap) -> Response {
    if let Some(denied) = crumb_missing(&s, &headers) {
        return denied;
    }
    (
        StatusCode::FOUND,
        [(header::LOCATION, "http://jenkins.internal:8080/")],
    )
        .into_response()
}

struct Fixture {
    jenkins: Arc<Jenkins>,
    rec: Arc<Recorder>,
    base: String,
}

async fn fixture() -> Fixture {
    let jenkins = Arc::new(Jenkins::new());
    let rec = Arc::new(Recorder::default());
    let router = Router::new()
        .route("/job/team/job/gate/buildWithParameters", post(trigger))
        .route("/job/team/job/gate/api/json", get(job))
        .route("/job/team/job/gate/{n}/api/json", get(build))
        .route("/job/team/job/gate/{n}/stop", post(redirect_after_post))
        .route("/queue/api/json", get(queue))
        .route("/queue/item/{n}/api/json", get(queue_item))
        .route("/queue/cancelItem", post(redirect_after_post))
        .route("/crumbIssuer/api/json", get(crumb_issuer))
        .route_layer(middleware::from_fn(basic_auth))
        .with_state(jenkins.clone());
    let base = serve(router, rec.clone()).await;
    Fixture { jenkins, rec, base }
}

fn connection(base: &str, token: &str) -> Connection {
    let mut config = ConnectionConfig::new("jenkins-main", ConnectionKind::Jenkins, base).unwrap();
    config.http = fast_http();
    Connection {
        config,
        credentials: Credentials::Jenkins(JenkinsCredentials {
            user: "bot".into(),
            token: SecretString::new(token),
        }),
    }
}

fn runner(base: &str) -> JenkinsRunner {
    JenkinsRunner::new(&connection(base, "tok")).unwrap()
}

fn request(correlation_id: &str) -> TriggerRequest {
    TriggerRequest {
        provider: Provider::Jenkins,
        connection: Some("jenkins-main".into()),
        job: JOB.into(),
        git_ref: None,
        parameters: BTreeMap::from([("PR".to_string(), "42".to_string())]),
        correlation_id: correlation_id.into(),
    }
}

fn run(id: &str) -> RunRef {
    RunRef {
        provider: Provider::Jenkins,
        connection: Some("jenkins-main".into()),
        job: JOB.into(),
        run_id: id.into(),
    }
}

fn with_params(id: &str) -> Value {
    json!([
        {"_class": "hudson.model.ParametersAction", "parameters": [
            {"_class": "hudson.model.StringParameterValue", "name": "PR", "value": "42"},
            {"_class": "hudson.model.StringParameterValue", "name": "PROMOTION_CORRELATION_ID", "value": id},
        ]},
        {"_class": "hudson.model.CauseAction"},
        {},
    ])
}

#[tokio::test]
async fn trigger_then_queue_then_build_then_passed() {
    let f = fixture().await;
    let r = runner(&f.base);

    let handle = r.trigger(&request("cid-1")).await.unwrap();
    assert_eq!(handle.run_id, "queue:5");
    // Rebuilt from the configured base, not from the host in Location.
    assert_eq!(handle.url, Some(format!("{}/queue/item/5/", f.base)));
    let form = f.jenkins.forms.lock().unwrap()[0].clone();
    assert!(form.contains(&("PR".into(), "42".into())));
    assert!(form.contains(&("PROMOTION_CORRELATION_ID".into(), "cid-1".into())));

    f.jenkins.queue_items.lock().unwrap().insert(
        5,
        json!({"_class": "hudson.model.Queue$WaitingItem", "id": 5, "blocked": false,
               "buildable": false, "why": "In the quiet period. Expires in 4.9 sec"}),
    );
    let s = r.status(&run("queue:5")).await.unwrap();
    assert_eq!(s.state, RunState::Pending);
    assert_eq!(s.run_id, None);
    assert_eq!(
        s.message.as_deref(),
        Some("In the quiet period. Expires in 4.9 sec")
    );

    f.jenkins.queue_items.lock().unwrap().insert(
        5,
        json!({"_class": "hudson.model.Queue$LeftItem", "id": 5, "cancelled": false,
               "executable": {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
                              "number": 12, "url": "http://jenkins.internal:8080/job/team/job/gate/12/"}}),
    );
    f.jenkins.set_build(12, true, None);
    let s = r.status(&run("queue:5")).await.unwrap();
    assert_eq!(s.state, RunState::Running);
    assert_eq!(s.run_id.as_deref(), Some("build:12"));
    assert_eq!(s.url, Some(format!("{}/job/team/job/gate/12/", f.base)));

    f.jenkins.set_build(12, false, Some("SUCCESS"));
    let s = r.status(&run("build:12")).await.unwrap();
    assert_eq!(
        s,
        RunStatus {
            state: RunState::Passed,
            url: Some(format!("{}/job/team/job/gate/12/", f.base)),
            message: Some("SUCCESS".into()),
            run_id: None,
        }
    );
    assert_eq!(f.rec.count(TRIGGER), 1);
}

#[tokio::test]
async fn every_build_result_is_mapped() {
    let f = fixture().await;
    let r = runner(&f.base);
    let cases = [
        (false, Some("SUCCESS"), RunState::Passed),
        (false, Some("UNSTABLE"), RunState::Failed),
        (false, Some("FAILURE"), RunState::Failed),
        (false, Some("ABORTED"), RunState::Cancelled),
        (false, Some("NOT_BUILT"), RunState::Failed),
        (false, Some("SOMETHING_NEW"), RunState::Running),
        (false, None, RunState::Running),
        // A Pipeline can set its result before it ends.
        (true, Some("FAILURE"), RunState::Running),
    ];
    for (building, result, want) in cases {
        f.jenkins.set_build(7, building, result);
        let s = r.status(&run("build:7")).await.unwrap();
        assert_eq!(s.state, want, "building={building} result={result:?}");
    }
}

#[tokio::test]
async fn unstable_follows_the_connection_setting() {
    let f = fixture().await;
    let mut conn = connection(&f.base, "tok");
    conn.config.jenkins.unstable = RunState::Passed;
    let r = JenkinsRunner::new(&conn).unwrap();
    f.jenkins.set_build(3, false, Some("UNSTABLE"));
    assert_eq!(
        r.status(&run("build:3")).await.unwrap().state,
        RunState::Passed
    );
}

#[tokio::test]
async fn a_cancelled_queue_item_is_cancelled() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.jenkins.queue_items.lock().unwrap().insert(
        9,
        json!({"_class": "hudson.model.Queue$LeftItem", "id": 9, "cancelled": true, "executable": null}),
    );
    assert_eq!(
        r.status(&run("queue:9")).await.unwrap().state,
        RunState::Cancelled
    );
}

#[tokio::test]
async fn a_forgotten_queue_item_is_found_by_the_build_that_names_it() {
    let f = fixture().await;
    let r = runner(&f.base);
    *f.jenkins.job.lock().unwrap() = json!({"builds": [
        {"number": 31, "url": "http://x/job/team/job/gate/31/", "queueId": 11, "actions": []},
        {"number": 30, "url": "http://x/job/team/job/gate/30/", "queueId": 10, "actions": []},
    ]});
    f.jenkins.set_build(30, false, Some("FAILURE"));
    let s = r.status(&run("queue:10")).await.unwrap();
    assert_eq!(s.state, RunState::Failed);
    assert_eq!(s.run_id.as_deref(), Some("build:30"));

    let err = r.status(&run("queue:99")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("queue item 99 is gone"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn find_adopts_a_queued_item_a_build_or_nothing() {
    let f = fixture().await;
    let r = runner(&f.base);
    assert_eq!(r.find(&request("cid-none")).await.unwrap(), None);

    *f.jenkins.queue.lock().unwrap() = json!({"items": [
        {"_class": "hudson.model.Queue$WaitingItem", "id": 21, "actions": with_params("cid-q"),
         "params": "\nPR=42\nPROMOTION_CORRELATION_ID=cid-q"},
        {"_class": "hudson.model.Queue$BlockedItem", "id": 22, "params": "\nPROMOTION_CORRELATION_ID=cid-old"},
    ]});
    *f.jenkins.job.lock().unwrap() = json!({"builds": [
        {"number": 41, "url": "http://x/job/team/job/gate/41/", "queueId": 2, "actions": with_params("cid-other")},
        {"number": 40, "url": "http://x/job/team/job/gate/40/", "queueId": 1, "actions": with_params("cid-b")},
    ]});

    let h = r.find(&request("cid-q")).await.unwrap().unwrap();
    assert_eq!(h.run_id, "queue:21");
    let h = r.find(&request("cid-old")).await.unwrap().unwrap();
    assert_eq!(h.run_id, "queue:22");
    let h = r.find(&request("cid-b")).await.unwrap().unwrap();
    assert_eq!(h.run_id, "build:40");
    assert_eq!(h.url, Some(format!("{}/job/team/job/gate/40/", f.base)));
    assert_eq!(r.find(&request("cid-none")).await.unwrap(), None);
    assert_eq!(f.rec.count(TRIGGER), 0);
}

#[tokio::test]
async fn a_merged_queue_item_is_adopted_from_the_303() {
    let f = fixture().await;
    *f.jenkins.trigger.lock().unwrap() = TriggerReply::Merged(8);
    let h = runner(&f.base).trigger(&request("cid-m")).await.unwrap();
    assert_eq!(h.run_id, "queue:8");
    assert_eq!(h.url, Some(format!("{}/queue/item/8/", f.base)));
}

#[tokio::test]
async fn a_crumb_is_fetched_only_when_asked_for_and_sent_with_its_session() {
    let f = fixture().await;
    f.jenkins.require_crumb.store(true, Ordering::SeqCst);
    let r = runner(&f.base);

    let h = r.trigger(&request("cid-c")).await.unwrap();
    assert_eq!(h.run_id, "queue:5");
    // Rejected without a crumb (nothing queued), then accepted with it.
    assert_eq!(f.rec.count(TRIGGER), 2);
    assert_eq!(f.rec.count("GET /crumbIssuer/api/json"), 1);
    assert_eq!(f.jenkins.forms.lock().unwrap().len(), 1);

    // The crumb is kept for the next POSTs.
    r.trigger(&request("cid-d")).await.unwrap();
    r.cancel(&run("build:12")).await.unwrap();
    assert_eq!(f.rec.count(TRIGGER), 3);
    assert_eq!(f.rec.count("GET /crumbIssuer/api/json"), 1);
}

#[tokio::test]
async fn no_crumb_is_fetched_when_none_is_needed() {
    let f = fixture().await;
    runner(&f.base).trigger(&request("cid-e")).await.unwrap();
    assert_eq!(f.rec.log(), vec![TRIGGER.to_string()]);
}

#[tokio::test]
async fn cancel_stops_a_build_or_cancels_a_queue_item() {
    let f = fixture().await;
    let r = runner(&f.base);
    r.cancel(&run("build:12")).await.unwrap();
    assert_eq!(f.rec.count("POST /job/team/job/gate/12/stop"), 1);

    f.jenkins.queue_items.lock().unwrap().insert(
        5,
        json!({"_class": "hudson.model.Queue$WaitingItem", "id": 5, "why": "Waiting"}),
    );
    r.cancel(&run("queue:5")).await.unwrap();
    assert_eq!(f.rec.count("POST /queue/cancelItem"), 1);

    // An item that became a build is stopped as a build.
    f.jenkins.queue_items.lock().unwrap().insert(
        6,
        json!({"_class": "hudson.model.Queue$LeftItem", "id": 6, "cancelled": false,
               "executable": {"number": 13, "url": "http://x/job/team/job/gate/13/"}}),
    );
    r.cancel(&run("queue:6")).await.unwrap();
    assert_eq!(f.rec.count("POST /job/team/job/gate/13/stop"), 1);
    assert_eq!(f.rec.count("POST /queue/cancelItem"), 1);
}

#[tokio::test]
async fn unauthorized_is_permanent_and_says_what_to_check() {
    let f = fixture().await;
    let r = JenkinsRunner::new(&connection(&f.base, "wrong")).unwrap();
    let err = r.trigger(&request("cid-a")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        err.message,
        "connection jenkins-main: 401 Unauthorized from POST /job/team/job/gate/buildWithParameters: check the user and API token"
    );
    assert!(!err.message.contains("wrong"));

    let err = r.status(&run("build:1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    // Not retried.
    assert_eq!(f.rec.count("GET /job/team/job/gate/1/api/json"), 1);
}

#[tokio::test]
async fn not_found_is_permanent() {
    let f = fixture().await;
    let r = runner(&f.base);
    let err = r.status(&run("build:404")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection jenkins-main: 404 Not Found from GET /job/team/job/gate/404/api/json"
        ),
        "{}",
        err.message
    );
    assert_eq!(f.rec.count("GET /job/team/job/gate/404/api/json"), 1);

    let mut req = request("cid-x");
    req.job = "nope".into();
    let err = r.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("404 Not Found"), "{}", err.message);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.jenkins.set_build(2, false, Some("SUCCESS"));

    // A short wait is waited out by a read.
    f.rec
        .inject([Canned::status(429).header("retry-after", "0")]);
    assert_eq!(
        r.status(&run("build:2")).await.unwrap().state,
        RunState::Passed
    );

    // A long one is handed to the engine.
    f.rec
        .inject([Canned::status(429).header("retry-after", "120")]);
    let err = r.status(&run("build:2")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));

    // A trigger is never resent, and says how long to wait.
    f.rec.clear();
    f.rec
        .inject([Canned::status(429).header("retry-after", "Wed, 21 Oct 2099 07:28:00 GMT")]);
    let err = r.trigger(&request("cid-r")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.retry_after
            .is_some_and(|d| d > Duration::from_secs(3600))
    );
    assert_eq!(f.rec.count(TRIGGER), 1);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.jenkins.set_build(4, false, Some("SUCCESS"));
    f.rec.inject([
        Canned::status(503),
        Canned::status(502).body("<html>Bad Gateway</html>"),
    ]);
    assert_eq!(
        r.status(&run("build:4")).await.unwrap().state,
        RunState::Passed
    );
    assert_eq!(f.rec.count("GET /job/team/job/gate/4/api/json"), 3);

    // Retries end.
    // One answer per attempt: the first and the three retries of fast_http.
    f.rec.inject((0..4).map(|_| Canned::status(500)));
    let err = r.status(&run("build:4")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("500 Internal Server Error"),
        "{}",
        err.message
    );
    assert_eq!(f.rec.count("GET /job/team/job/gate/4/api/json"), 3 + 4);
}

#[tokio::test]
async fn a_malformed_body_is_a_clear_error() {
    let f = fixture().await;
    let r = runner(&f.base);
    f.rec.inject([Canned::status(200)
        .header("content-type", "application/json")
        .body("<html>login page</html>")]);
    let err = r.status(&run("build:4")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection jenkins-main: malformed answer from GET /job/team/job/gate/4/api/json"
        ),
        "{}",
        err.message
    );

    f.rec
        .inject([Canned::status(200).body(r#"{"building": "yes"}"#)]);
    let err = r.status(&run("build:4")).await.unwrap_err();
    assert!(err.message.contains("malformed answer"), "{}", err.message);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let base = never_answers().await;
    let mut conn = connection(&base, "tok");
    conn.config.http.request_timeout = Duration::from_millis(100);
    conn.config.http.read_retries = 1;
    let r = JenkinsRunner::new(&conn).unwrap();

    let err = bounded(r.status(&run("build:1"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);

    let err = bounded(r.trigger(&request("cid-t"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
}

#[tokio::test]
async fn an_ambiguous_trigger_is_never_sent_twice() {
    let f = fixture().await;
    let mut conn = connection(&f.base, "tok");
    conn.config.http.request_timeout = Duration::from_millis(100);
    let r = JenkinsRunner::new(&conn).unwrap();

    *f.jenkins.trigger.lock().unwrap() = TriggerReply::Hang;
    let err = bounded(r.trigger(&request("cid-h"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(f.rec.count(TRIGGER), 1);

    *f.jenkins.trigger.lock().unwrap() = TriggerReply::Created(5);
    f.rec.inject([Canned::status(502)]);
    let err = r.trigger(&request("cid-h")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(f.rec.count(TRIGGER), 2);

    *f.jenkins.trigger.lock().unwrap() = TriggerReply::NoLocation;
    let err = r.trigger(&request("cid-h")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(f.rec.count(TRIGGER), 3);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let mut conn = connection(&base, "tok");
    conn.config.http.read_retries = 0;
    let err = runner_from(&conn)
        .trigger(&request("cid-n"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

fn runner_from(conn: &Connection) -> JenkinsRunner {
    JenkinsRunner::new(conn).unwrap()
}

#[tokio::test]
async fn the_runner_debug_output_holds_no_token() {
    let r = JenkinsRunner::new(&connection("http://127.0.0.1:1", "s3cr3t-token")).unwrap();
    let out = format!("{r:?}");
    assert!(!out.contains("s3cr3t-token"), "{out}");
}

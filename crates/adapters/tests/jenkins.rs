//! JenkinsRunner against the Jenkins stand-in, which answers as Jenkins' remote
//! access API documents; its fault layer plays what a healthy stand-in does not
//! (rate limits, outages, states the stand-in never reaches by itself).

mod support;

use promotion_adapters::{
    Connection, ConnectionKind, Credentials, JenkinsCredentials, JenkinsRunner, SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{
    ErrorKind, Found, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use promotion_standins::{Fault, JENKINS_SECRET, Outcome, Reply, StandIns};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use support::{bounded, refused, standins, triggered};

const JOB: &str = "team/gate";
const TRIGGER: &str = "/job/team/job/gate/buildWithParameters";

fn connection(s: &StandIns) -> Connection {
    support::connection(
        s,
        "jenkins-main",
        ConnectionKind::Jenkins,
        &s.jenkins_url,
        JENKINS_SECRET,
    )
}

fn runner(s: &StandIns) -> JenkinsRunner {
    JenkinsRunner::new(&connection(s)).unwrap()
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
        correlation_id: None,
        provider: Provider::Jenkins,
        connection: Some("jenkins-main".into()),
        job: JOB.into(),
        run_id: id.into(),
    }
}

/// A build as `GET /job/.../N/api/json` shows it.
fn build_json(n: u64, building: bool, result: Option<&str>) -> Value {
    json!({
        "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
        "building": building,
        "duration": 0,
        "number": n,
        "result": result,
        "url": format!("http://jenkins.internal:8080/job/team/job/gate/{n}/"),
    })
}

fn html(status: u16, text: &str) -> Reply {
    Reply::status(status)
        .header("content-type", "text/html;charset=utf-8")
        .body(format!(
            "<html><body><h2>HTTP ERROR {status}</h2><p>{text}</p></body></html>"
        ))
}

/// The next look at queue item `n` finds it still waiting for an executor
/// (the stand-in hands an item to an executor the first time it is looked at).
fn still_waiting(s: &StandIns, n: u64) {
    s.jenkins.script(
        "GET",
        &format!("/queue/item/{n}/api/json"),
        [Reply::status(200)
            .json(&json!({"_class": "hudson.model.Queue$WaitingItem", "id": n, "why": "Waiting for next available executor"}))
            .into()],
    );
}

/// Triggers a run and lets it leave the queue: its build is then listed.
async fn started_build(r: &JenkinsRunner, correlation_id: &str) -> String {
    let handle = r.trigger(&request(correlation_id)).await.unwrap();
    let status = r.status(&run(&handle.run_id)).await.unwrap();
    status.run_id.expect("the queue item names its build")
}

#[tokio::test]
async fn trigger_then_queue_then_build_then_passed() {
    let s = standins().await;
    let r = runner(&s);

    let handle = r.trigger(&request("cid-1")).await.unwrap();
    assert_eq!(handle.run_id, "queue:1");
    // Rebuilt from the configured base, not from the host in Location.
    assert_eq!(handle.url, Some(format!("{}/queue/item/1/", s.jenkins_url)));
    let form = s.jenkins.calls_to("POST", TRIGGER)[0].form();
    assert!(form.contains(&("PR".into(), "42".into())));
    assert!(form.contains(&("PROMOTION_CORRELATION_ID".into(), "cid-1".into())));

    // Still waiting for an executor, as Jenkins words it.
    s.jenkins.script(
        "GET",
        "/queue/item/1/api/json",
        [Reply::status(200)
            .json(
                &json!({"_class": "hudson.model.Queue$WaitingItem", "id": 1, "blocked": false,
                          "buildable": false, "why": "In the quiet period. Expires in 4.9 sec"}),
            )
            .into()],
    );
    let st = r.status(&run("queue:1")).await.unwrap();
    assert_eq!(st.state, RunState::Pending);
    assert_eq!(st.run_id, None);
    assert_eq!(
        st.message.as_deref(),
        Some("In the quiet period. Expires in 4.9 sec")
    );

    let st = r.status(&run("queue:1")).await.unwrap();
    assert_eq!(st.state, RunState::Running);
    assert_eq!(st.run_id.as_deref(), Some("build:1"));
    assert_eq!(
        st.url,
        Some(format!("{}/job/team/job/gate/1/", s.jenkins_url))
    );

    s.finish(&triggered(&s, "cid-1"), Outcome::Pass).await;
    let st = r.status(&run("build:1")).await.unwrap();
    assert_eq!(
        st,
        RunStatus {
            state: RunState::Passed,
            url: Some(format!("{}/job/team/job/gate/1/", s.jenkins_url)),
            message: Some("SUCCESS".into()),
            run_id: None,
        }
    );
    assert_eq!(s.jenkins.count("POST", TRIGGER), 1);
}

#[tokio::test]
async fn every_build_result_is_mapped() {
    let s = standins().await;
    let r = runner(&s);
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
        s.jenkins.script(
            "GET",
            "/job/team/job/gate/7/api/json",
            [Reply::status(200)
                .json(&build_json(7, building, result))
                .into()],
        );
        let st = r.status(&run("build:7")).await.unwrap();
        assert_eq!(st.state, want, "building={building} result={result:?}");
    }
}

#[tokio::test]
async fn unstable_follows_the_connection_setting() {
    let s = standins().await;
    let mut conn = connection(&s);
    conn.config.jenkins.unstable = RunState::Passed;
    let r = JenkinsRunner::new(&conn).unwrap();
    s.jenkins.script(
        "GET",
        "/job/team/job/gate/3/api/json",
        [Reply::status(200)
            .json(&build_json(3, false, Some("UNSTABLE")))
            .into()],
    );
    assert_eq!(
        r.status(&run("build:3")).await.unwrap().state,
        RunState::Passed
    );
}

#[tokio::test]
async fn a_cancelled_queue_item_is_cancelled() {
    let s = standins().await;
    let r = runner(&s);
    let handle = r.trigger(&request("cid-c")).await.unwrap();
    still_waiting(&s, 1);
    r.cancel(&run(&handle.run_id)).await.unwrap();
    assert_eq!(s.jenkins.count("POST", "/queue/cancelItem"), 1);
    assert_eq!(
        r.status(&run(&handle.run_id)).await.unwrap().state,
        RunState::Cancelled
    );
}

#[tokio::test]
async fn a_forgotten_queue_item_is_found_by_the_build_that_names_it() {
    let s = standins().await;
    let r = runner(&s);
    let build = started_build(&r, "cid-f").await;
    assert_eq!(build, "build:1");
    s.finish(&triggered(&s, "cid-f"), Outcome::Fail).await;
    // Jenkins forgets a queue item minutes after it left the queue.
    s.jenkins.script(
        "GET",
        "/queue/item/1/api/json",
        [html(404, "Not Found").into()],
    );
    let st = r.status(&run("queue:1")).await.unwrap();
    assert_eq!(st.state, RunState::Failed);
    assert_eq!(st.run_id.as_deref(), Some("build:1"));

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
    let s = standins().await;
    let r = runner(&s);
    assert_eq!(support::found(&r, &request("cid-none")).await, None);

    let build = started_build(&r, "cid-b").await;
    let queued = r.trigger(&request("cid-q")).await.unwrap();
    let triggers = s.jenkins.count("POST", TRIGGER);

    let h = support::found(&r, &request("cid-q")).await.unwrap();
    assert_eq!(h.run_id, queued.run_id);
    let h = support::found(&r, &request("cid-b")).await.unwrap();
    assert_eq!(h.run_id, build);
    assert_eq!(
        h.url,
        Some(format!("{}/job/team/job/gate/1/", s.jenkins_url))
    );
    assert_eq!(support::found(&r, &request("cid-none")).await, None);

    // Older Jenkins versions list a queue item's parameters only in `params`.
    s.jenkins.script(
        "GET",
        "/queue/api/json",
        [Reply::status(200)
            .json(&json!({"_class": "hudson.model.Queue", "items": [
                {"_class": "hudson.model.Queue$BlockedItem", "id": 22,
                 "params": "\nPR=42\nPROMOTION_CORRELATION_ID=cid-old"},
            ]}))
            .into()],
    );
    let h = support::found(&r, &request("cid-old")).await.unwrap();
    assert_eq!(h.run_id, "queue:22");
    // Looking never starts anything.
    assert_eq!(s.jenkins.count("POST", TRIGGER), triggers);
}

#[tokio::test]
async fn a_merged_queue_item_is_adopted_from_the_303() {
    let s = standins().await;
    s.jenkins.script(
        "POST",
        TRIGGER,
        [Reply::status(303)
            .header("location", "http://jenkins.internal:8080/queue/item/8/")
            .into()],
    );
    let h = runner(&s).trigger(&request("cid-m")).await.unwrap();
    assert_eq!(h.run_id, "queue:8");
    assert_eq!(h.url, Some(format!("{}/queue/item/8/", s.jenkins_url)));
}

#[tokio::test]
async fn a_crumb_is_fetched_only_when_asked_for_and_sent_with_its_session() {
    let s = standins().await;
    s.require_jenkins_crumb(true);
    let r = runner(&s);

    let h = r.trigger(&request("cid-c")).await.unwrap();
    assert_eq!(h.run_id, "queue:1");
    // Refused without a crumb (nothing queued), then accepted with it.
    assert_eq!(s.jenkins.count("POST", TRIGGER), 2);
    assert_eq!(s.jenkins.count("GET", "/crumbIssuer/api/json"), 1);
    assert_eq!(s.journal.trigger_count(), 1);

    // The crumb is kept for the next POSTs.
    let build = started_build(&r, "cid-d").await;
    r.cancel(&run(&build)).await.unwrap();
    assert_eq!(s.jenkins.count("POST", TRIGGER), 3);
    assert_eq!(s.jenkins.count("GET", "/crumbIssuer/api/json"), 1);
    assert_eq!(s.journal.finished().len(), 1, "the build was stopped");
}

#[tokio::test]
async fn no_crumb_is_fetched_when_none_is_needed() {
    let s = standins().await;
    runner(&s).trigger(&request("cid-e")).await.unwrap();
    let calls: Vec<String> = s
        .jenkins
        .calls()
        .iter()
        .map(|c| format!("{} {}", c.method, c.path))
        .collect();
    assert_eq!(calls, vec![format!("POST {TRIGGER}")]);
}

#[tokio::test]
async fn cancel_stops_a_build_or_cancels_a_queue_item() {
    let s = standins().await;
    let r = runner(&s);
    let build = started_build(&r, "cid-1").await;
    r.cancel(&run(&build)).await.unwrap();
    assert_eq!(s.jenkins.count("POST", "/job/team/job/gate/1/stop"), 1);

    let queued = r.trigger(&request("cid-2")).await.unwrap();
    still_waiting(&s, 2);
    r.cancel(&run(&queued.run_id)).await.unwrap();
    assert_eq!(s.jenkins.count("POST", "/queue/cancelItem"), 1);

    // An item that became a build is stopped as a build.
    let item = r.trigger(&request("cid-3")).await.unwrap();
    r.status(&run(&item.run_id)).await.unwrap();
    r.cancel(&run(&item.run_id)).await.unwrap();
    assert_eq!(s.jenkins.count("POST", "/job/team/job/gate/3/stop"), 1);
    assert_eq!(s.jenkins.count("POST", "/queue/cancelItem"), 1);
    let cancelled: Vec<String> = s
        .journal
        .finished()
        .into_iter()
        .filter(|f| f.cancelled)
        .map(|f| f.run_id)
        .collect();
    assert_eq!(cancelled, ["build:1", "build:2", "build:3"]);
}

#[tokio::test]
async fn unauthorized_is_permanent_and_says_what_to_check() {
    let s = standins().await;
    let mut conn = connection(&s);
    conn.credentials = Credentials::Jenkins(JenkinsCredentials {
        user: "promotion-bot".into(),
        token: SecretString::new("wrong"),
    });
    let r = JenkinsRunner::new(&conn).unwrap();
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
    assert_eq!(s.jenkins.count("GET", "/job/team/job/gate/1/api/json"), 1);
    assert_eq!(s.journal.trigger_count(), 0);
}

#[tokio::test]
async fn not_found_is_permanent() {
    let s = standins().await;
    let r = runner(&s);
    let err = r.status(&run("build:404")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection jenkins-main: 404 Not Found from GET /job/team/job/gate/404/api/json"
        ),
        "{}",
        err.message
    );
    assert_eq!(s.jenkins.count("GET", "/job/team/job/gate/404/api/json"), 1);

    // The stand-in has every job; this one is gone.
    s.jenkins.script(
        "POST",
        "/job/nope/buildWithParameters",
        [html(404, "Not Found").into()],
    );
    let mut req = request("cid-x");
    req.job = "nope".into();
    let err = r.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("404 Not Found"), "{}", err.message);
}

#[tokio::test]
async fn rate_limits_honour_retry_after() {
    let s = standins().await;
    let r = runner(&s);
    let build = started_build(&r, "cid-2").await;
    s.finish(&triggered(&s, "cid-2"), Outcome::Pass).await;
    let path = "/job/team/job/gate/1/api/json";

    // A short wait is waited out by a read.
    s.jenkins.script(
        "GET",
        path,
        [Reply::status(429).header("retry-after", "0").into()],
    );
    assert_eq!(
        r.status(&run(&build)).await.unwrap().state,
        RunState::Passed
    );

    // A long one is handed to the engine.
    s.jenkins.script(
        "GET",
        path,
        [Reply::status(429).header("retry-after", "120").into()],
    );
    let err = r.status(&run(&build)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(120)));

    // A trigger is never resent, and says how long to wait.
    let before = s.jenkins.count("POST", TRIGGER);
    s.jenkins.script(
        "POST",
        TRIGGER,
        [Reply::status(429)
            .header("retry-after", "Wed, 21 Oct 2099 07:28:00 GMT")
            .into()],
    );
    let err = r.trigger(&request("cid-r")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.retry_after
            .is_some_and(|d| d > Duration::from_secs(3600))
    );
    assert_eq!(s.jenkins.count("POST", TRIGGER), before + 1);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let s = standins().await;
    let r = runner(&s);
    let build = started_build(&r, "cid-4").await;
    s.finish(&triggered(&s, "cid-4"), Outcome::Pass).await;
    s.jenkins.forget_calls();
    let path = "/job/team/job/gate/1/api/json";
    s.jenkins.script(
        "GET",
        path,
        [
            Fault::status(503),
            Reply::status(502).body("<html>Bad Gateway</html>").into(),
        ],
    );
    assert_eq!(
        r.status(&run(&build)).await.unwrap().state,
        RunState::Passed
    );
    assert_eq!(s.jenkins.count("GET", path), 3);

    // Retries end: one answer per attempt, the first and the three retries of fast_http.
    s.jenkins
        .script("GET", path, (0..4).map(|_| Fault::status(500)));
    let err = r.status(&run(&build)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("500 Internal Server Error"),
        "{}",
        err.message
    );
    assert_eq!(s.jenkins.count("GET", path), 3 + 4);
}

#[tokio::test]
async fn a_malformed_body_is_a_clear_error() {
    let s = standins().await;
    let r = runner(&s);
    let path = "/job/team/job/gate/4/api/json";
    s.jenkins.script(
        "GET",
        path,
        [Reply::status(200)
            .header("content-type", "application/json")
            .body("<html>login page</html>")
            .into()],
    );
    let err = r.status(&run("build:4")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection jenkins-main: malformed answer from GET /job/team/job/gate/4/api/json"
        ),
        "{}",
        err.message
    );

    s.jenkins.script(
        "GET",
        path,
        [Reply::status(200).body(r#"{"building": "yes"}"#).into()],
    );
    let err = r.status(&run("build:4")).await.unwrap_err();
    assert!(err.message.contains("malformed answer"), "{}", err.message);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let s = standins().await;
    s.jenkins.always("GET", "/*", Fault::Hang);
    s.jenkins.always("POST", "/*", Fault::Hang);
    let mut conn = connection(&s);
    conn.config.http.request_timeout = Duration::from_millis(100);
    conn.config.http.read_retries = 1;
    let r = JenkinsRunner::new(&conn).unwrap();

    let err = bounded(r.status(&run("build:1"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(s.jenkins.count("GET", "/job/team/job/gate/1/api/json"), 2);

    let err = bounded(r.trigger(&request("cid-t"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(s.jenkins.count("POST", TRIGGER), 1);
}

#[tokio::test]
async fn an_ambiguous_trigger_is_never_sent_twice() {
    let s = standins().await;
    let mut conn = connection(&s);
    conn.config.http.request_timeout = Duration::from_millis(100);
    let r = JenkinsRunner::new(&conn).unwrap();

    s.jenkins.script("POST", TRIGGER, [Fault::Hang]);
    let err = bounded(r.trigger(&request("cid-h"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(s.jenkins.count("POST", TRIGGER), 1);

    s.jenkins.script("POST", TRIGGER, [Fault::status(502)]);
    let err = r.trigger(&request("cid-h")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(s.jenkins.count("POST", TRIGGER), 2);

    s.jenkins.script("POST", TRIGGER, [Fault::status(201)]);
    let err = r.trigger(&request("cid-h")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(
        err.message.contains("named no queue item"),
        "{}",
        err.message
    );
    assert_eq!(s.jenkins.count("POST", TRIGGER), 3);
}

#[tokio::test]
async fn a_trigger_that_queued_but_answered_504_is_ambiguous_and_found() {
    let s = standins().await;
    let r = runner(&s);
    s.jenkins.script(
        "POST",
        TRIGGER,
        [Fault::AfterEffect(
            Reply::status(504).body("Gateway Timeout"),
        )],
    );
    let err = r.trigger(&request("cid-504")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(s.jenkins.count("POST", TRIGGER), 1);
    // The build was queued all the same: `find` adopts it instead of a second trigger.
    let found = support::found(&r, &request("cid-504")).await.unwrap();
    assert_eq!(found.run_id, "queue:1");
    assert_eq!(s.journal.trigger_count(), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let s = standins().await;
    let mut conn = connection(&s);
    conn.config.base_url = refused().parse().unwrap();
    conn.config.http.read_retries = 0;
    let err = JenkinsRunner::new(&conn)
        .unwrap()
        .trigger(&request("cid-n"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

#[tokio::test]
async fn the_runner_debug_output_holds_no_token() {
    let s = standins().await;
    let mut conn = connection(&s);
    conn.credentials = Credentials::Jenkins(JenkinsCredentials {
        user: "bot".into(),
        token: SecretString::new("s3cr3t-token"),
    });
    let r = JenkinsRunner::new(&conn).unwrap();
    let out = format!("{r:?}");
    assert!(!out.contains("s3cr3t-token"), "{out}");
}

const HISTORY: &str = "/job/team/job/gate/api/json";

fn runner_with_pages(s: &StandIns, pages: usize) -> JenkinsRunner {
    let mut c = connection(s);
    c.config.jenkins.find_pages = pages;
    JenkinsRunner::new(&c).unwrap()
}

/// The `tree` ranges `find` asked for, in order.
fn history_ranges(s: &StandIns) -> Vec<String> {
    s.jenkins
        .calls_to("GET", HISTORY)
        .iter()
        .filter_map(|c| c.query.clone())
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "tree")
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        })
        .filter(|t| t.starts_with("allBuilds"))
        .map(|t| {
            t.rsplit_once('{')
                .map(|(_, r)| r.to_owned())
                .unwrap_or_default()
        })
        .collect()
}

#[tokio::test]
async fn find_reaches_an_orphan_behind_300_newer_builds() {
    // Issue #11 case 1: a busy job pushed the orphan out of the 50 newest builds `find`
    // read, and it was triggered again. Now `find` pages back through `allBuilds`.
    let s = standins().await;
    let r = runner(&s);
    let since = SystemTime::now() - Duration::from_secs(120);
    let orphan = started_build(&r, "cid-orphan").await;
    for i in 0..300 {
        started_build(&r, &format!("cid-newer-{i}")).await;
    }
    let found = r.find(&request("cid-orphan"), since).await.unwrap();
    let Found::Run(h) = found else {
        panic!("not found: {found:?}")
    };
    assert_eq!(h.run_id, orphan);
    // 100 builds a range: the orphan is the 301st newest.
    assert_eq!(
        history_ranges(&s),
        ["0,100}", "100,200}", "200,300}", "300,400}"]
    );
}

#[tokio::test]
async fn find_says_absent_once_it_read_back_to_the_intents_time() {
    let s = standins().await;
    let r = runner(&s);
    for i in 0..150 {
        started_build(&r, &format!("cid-before-{i}")).await;
    }
    // Jenkins stamps builds in milliseconds: the intent comes strictly after the old ones.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let since = SystemTime::now();
    for i in 0..150 {
        started_build(&r, &format!("cid-after-{i}")).await;
    }
    let found = r.find(&request("cid-none"), since).await.unwrap();
    assert_eq!(found, Found::Absent);
    // The second range holds builds from before `since`: no need to read further.
    assert_eq!(history_ranges(&s), ["0,100}", "100,200}"]);
}

#[tokio::test]
async fn find_is_not_sure_when_the_page_cap_comes_before_the_intents_time() {
    let s = standins().await;
    let r = runner_with_pages(&s, 2);
    let since = SystemTime::now() - Duration::from_secs(120);
    started_build(&r, "cid-orphan").await;
    for i in 0..300 {
        started_build(&r, &format!("cid-newer-{i}")).await;
    }
    let found = r.find(&request("cid-orphan"), since).await.unwrap();
    let Found::NotSure(why) = found else {
        panic!("expected not sure: {found:?}")
    };
    assert!(why.contains("200 newest builds of team/gate"), "{why}");
    assert!(why.contains("maxFindPages"), "{why}");
    assert_eq!(history_ranges(&s), ["0,100}", "100,200}"]);
}

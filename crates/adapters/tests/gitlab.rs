//! GitLabRunner against the GitLab stand-in, which answers as GitLab's REST API
//! v4 documents, here under a path prefix as a self-hosted GitLab can be; its
//! fault layer plays rate limits, outages and states the stand-in never reaches by itself.

mod support;

use promotion_adapters::{
    Connection, ConnectionKind, Credentials, GitLabCredentials, GitLabParameters, GitLabRunner,
    SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, Found, RunRef, RunState, TestRunner, TriggerRequest};
use promotion_standins::{Fault, GITLAB_SECRET, GITLAB_TRIGGER_SECRET, Outcome, Reply, StandIns};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{bounded, standins, triggered};

const PROJECT: &str = "group/sub/app";
const API: &str = "/gitlab/api/v4/projects/group%2Fsub%2Fapp";

fn base(s: &StandIns) -> String {
    format!("{}/gitlab", s.gitlab_url)
}

fn connection(s: &StandIns, secret: &str) -> Connection {
    support::connection(s, "gitlab-main", ConnectionKind::Gitlab, &base(s), secret)
}

fn runner(s: &StandIns) -> GitLabRunner {
    GitLabRunner::new(&connection(s, GITLAB_SECRET)).unwrap()
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
        correlation_id: None,
        provider: Provider::Gitlab,
        connection: Some("gitlab-main".into()),
        job: PROJECT.into(),
        run_id: id.into(),
    }
}

fn pipeline_calls(s: &StandIns) -> usize {
    s.gitlab.count("POST", &format!("{API}/pipeline"))
        + s.gitlab.count("POST", &format!("{API}/trigger/pipeline"))
}

/// The next read of pipeline `id` finds it in `status`, as GitLab shows it.
fn shows(s: &StandIns, id: &str, status: &str) {
    s.gitlab.script(
        "GET",
        &format!("{API}/pipelines/{id}"),
        [Reply::status(200)
            .json(&json!({
                "id": id.parse::<u64>().unwrap(), "iid": 1, "project_id": 7, "status": status,
                "source": "api", "ref": "main", "sha": "a91957a858320c0e17f3a0eca7cfacbff50ea29a",
                "web_url": format!("{}/{PROJECT}/-/pipelines/{id}", s.gitlab_url),
                "created_at": "2026-11-25T06:00:00.000Z", "updated_at": "2026-11-25T06:00:00.000Z",
            }))
            .into()],
    );
}

#[tokio::test]
async fn trigger_then_poll_until_passed() {
    let s = standins().await;
    let r = runner(&s);
    let h = r.trigger(&request("cid-1")).await.unwrap();
    assert_eq!(h.run_id, "1000");
    assert_eq!(
        h.url,
        Some(format!("{}/{PROJECT}/-/pipelines/1000", s.gitlab_url))
    );
    assert_eq!(
        s.gitlab.calls_to("POST", &format!("{API}/pipeline"))[0].json(),
        json!({"ref": "main", "variables": [
            {"key": "PR", "value": "42", "variable_type": "env_var"},
            {"key": "PROMOTION_CORRELATION_ID", "value": "cid-1", "variable_type": "env_var"},
        ]})
    );
    shows(&s, "1000", "created");
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Pending
    );
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Running
    );
    s.finish(&triggered(&s, "cid-1"), Outcome::Pass).await;
    let st = r.status(&run("1000")).await.unwrap();
    assert_eq!(st.state, RunState::Passed);
    assert_eq!(st.message.as_deref(), Some("success"));
    assert_eq!(
        st.url,
        Some(format!("{}/{PROJECT}/-/pipelines/1000", s.gitlab_url))
    );
    assert_eq!(pipeline_calls(&s), 1);
}

#[tokio::test]
async fn every_pipeline_status_is_mapped() {
    let s = standins().await;
    let r = runner(&s);
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
        shows(&s, "1000", status);
        assert_eq!(
            r.status(&run("1000")).await.unwrap().state,
            want,
            "{status}"
        );
    }
}

#[tokio::test]
async fn find_adopts_the_pipeline_with_the_correlation_id_or_none() {
    let s = standins().await;
    let r = runner(&s);
    assert_eq!(support::found(&r, &request("cid-a")).await, None);
    r.trigger(&request("cid-a")).await.unwrap();
    r.trigger(&request("cid-b")).await.unwrap();
    let mut other_ref = request("cid-c");
    other_ref.git_ref = Some("release/1.0".into());
    r.trigger(&other_ref).await.unwrap();

    let h = support::found(&r, &request("cid-a")).await.unwrap();
    assert_eq!(h.run_id, "1000");
    assert_eq!(
        h.url,
        Some(format!("{}/{PROJECT}/-/pipelines/1000", s.gitlab_url))
    );
    assert_eq!(support::found(&r, &other_ref).await.unwrap().run_id, "1002");
    assert_eq!(support::found(&r, &request("cid-none")).await, None);
    assert_eq!(pipeline_calls(&s), 3);
}

#[tokio::test]
async fn a_trigger_token_starts_and_a_read_token_polls() {
    let s = standins().await;
    let r = GitLabRunner::new(&connection(&s, GITLAB_TRIGGER_SECRET)).unwrap();
    let h = r.trigger(&request("cid-t")).await.unwrap();
    assert_eq!(h.run_id, "1000");
    let body = s
        .gitlab
        .calls_to("POST", &format!("{API}/trigger/pipeline"))[0]
        .json();
    assert_eq!(body["ref"], "main");
    assert_eq!(
        body["variables"],
        json!({"PR": "42", "PROMOTION_CORRELATION_ID": "cid-t"})
    );
    assert!(
        body["token"]
            .as_str()
            .is_some_and(|t| t.starts_with("glptt-"))
    );
    // The token travels in the body, never in a header or the URL.
    let call = &s
        .gitlab
        .calls_to("POST", &format!("{API}/trigger/pipeline"))[0];
    assert!(call.header("private-token").is_none() && call.query.is_none());

    s.finish(&triggered(&s, "cid-t"), Outcome::Fail).await;
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Failed
    );
    assert_eq!(
        support::found(&r, &request("cid-t")).await.unwrap().run_id,
        "1000"
    );
    assert_eq!(
        s.gitlab.count("POST", &format!("{API}/trigger/pipeline")),
        1
    );

    // A read_api token cannot cancel: a clear, permanent error.
    let err = r.cancel(&run("1000")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("403 Forbidden"), "{}", err.message);

    // A wrong trigger token is a 404 in GitLab.
    let mut conn = connection(&s, GITLAB_TRIGGER_SECRET);
    let Credentials::Gitlab(GitLabCredentials::TriggerToken { read_token, .. }) =
        conn.credentials.clone()
    else {
        panic!("trigger-token credentials")
    };
    conn.credentials = Credentials::Gitlab(GitLabCredentials::TriggerToken {
        trigger_token: SecretString::new("glptt-wrong"),
        read_token,
    });
    let err = GitLabRunner::new(&conn)
        .unwrap()
        .trigger(&request("cid-u"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(!err.message.contains("glptt-wrong"), "{}", err.message);
    assert_eq!(s.journal.trigger_count(), 1);
}

#[tokio::test]
async fn inputs_replace_variables_where_variables_are_forbidden() {
    let s = standins().await;
    // What GitLab answers a project that restricts pipeline variables.
    s.gitlab.script(
        "POST",
        &format!("{API}/pipeline"),
        [Reply::status(400)
            .json(&json!({"message": {"base": ["Insufficient permissions to set pipeline variables"]}}))
            .into()],
    );
    let err = runner(&s).trigger(&request("cid-v")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains("Insufficient permissions to set pipeline variables"),
        "{}",
        err.message
    );

    let mut conn = connection(&s, GITLAB_SECRET);
    conn.config.gitlab.parameters = GitLabParameters::Inputs;
    let r = GitLabRunner::new(&conn).unwrap();
    let h = r.trigger(&request("cid-i")).await.unwrap();
    assert_eq!(
        s.gitlab.calls_to("POST", &format!("{API}/pipeline"))[1].json(),
        json!({"ref": "main", "inputs": {"PR": "42", "PROMOTION_CORRELATION_ID": "cid-i"}})
    );
    // Found by the pipeline's name, which the project's workflow:name builds from the input.
    assert_eq!(support::found(&r, &request("cid-i")).await, Some(h));
    assert_eq!(support::found(&r, &request("cid-none")).await, None);
}

#[tokio::test]
async fn cancel_cancels_and_a_finished_pipeline_is_no_error() {
    let s = standins().await;
    let r = runner(&s);
    r.trigger(&request("cid-x")).await.unwrap();
    r.cancel(&run("1000")).await.unwrap();
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Cancelled
    );
    r.cancel(&run("1000")).await.unwrap();
    assert_eq!(
        s.gitlab
            .count("POST", &format!("{API}/pipelines/1000/cancel")),
        2
    );
    assert_eq!(s.journal.finished().len(), 1);
}

#[tokio::test]
async fn unauthorized_is_permanent_and_says_what_to_check() {
    let s = standins().await;
    let mut conn = connection(&s, GITLAB_SECRET);
    conn.credentials = Credentials::Gitlab(GitLabCredentials::AccessToken(SecretString::new(
        "glpat-expired",
    )));
    let r = GitLabRunner::new(&conn).unwrap();
    let err = r.trigger(&request("cid-1")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        err.message,
        "connection gitlab-main: 401 Unauthorized from POST /api/v4/projects/group%2Fsub%2Fapp/pipeline: check the access token (PRIVATE-TOKEN) and that it has not expired"
    );
    let err = r.status(&run("1000")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(s.gitlab.count("GET", &format!("{API}/pipelines/1000")), 1);
}

#[tokio::test]
async fn not_found_is_permanent() {
    let s = standins().await;
    let r = runner(&s);
    let err = r.status(&run("999")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("404 Not Found"), "{}", err.message);
    // The stand-in has every project; this one is gone.
    let missing = "/gitlab/api/v4/projects/group%2Fmissing/pipeline";
    s.gitlab.script(
        "POST",
        missing,
        [Reply::status(404)
            .json(&json!({"message": "404 Project Not Found"}))
            .into()],
    );
    let mut req = request("cid-1");
    req.job = "group/missing".into();
    let err = r.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(s.gitlab.count("POST", missing), 1);
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_ratelimit_reset() {
    let s = standins().await;
    let r = runner(&s);
    r.trigger(&request("cid-r")).await.unwrap();
    let show = format!("{API}/pipelines/1000");

    s.gitlab.script(
        "GET",
        &show,
        [Reply::status(429).header("retry-after", "0").into()],
    );
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Running
    );

    // GitLab's reset is a Unix time.
    let reset = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    s.gitlab.script(
        "GET",
        &show,
        [Reply::status(429)
            .header("ratelimit-limit", "600")
            .header("ratelimit-remaining", "0")
            .header("ratelimit-reset", reset.to_string())
            .body(r#"{"message":"Retry later"}"#)
            .into()],
    );
    let err = r.status(&run("1000")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.retry_after
            .is_some_and(|d| d > Duration::from_secs(300)),
        "{err:?}"
    );

    let before = pipeline_calls(&s);
    s.gitlab.script(
        "POST",
        &format!("{API}/pipeline"),
        [Reply::status(429).header("retry-after", "60").into()],
    );
    let err = r.trigger(&request("cid-r2")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    assert_eq!(pipeline_calls(&s), before + 1);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried() {
    let s = standins().await;
    let r = runner(&s);
    r.trigger(&request("cid-5")).await.unwrap();
    let show = format!("{API}/pipelines/1000");
    s.gitlab
        .script("GET", &show, [Fault::status(500), Fault::status(503)]);
    assert_eq!(
        r.status(&run("1000")).await.unwrap().state,
        RunState::Running
    );
    assert_eq!(s.gitlab.count("GET", &show), 3);
}

#[tokio::test]
async fn a_malformed_body_is_a_clear_error() {
    let s = standins().await;
    let r = runner(&s);
    s.gitlab.script(
        "GET",
        &format!("{API}/pipelines/1000"),
        [Reply::status(200).body(r#"{"id": "not a number""#).into()],
    );
    let err = r.status(&run("1000")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("malformed answer from GET"),
        "{}",
        err.message
    );

    // After a 201 the pipeline exists: an unreadable answer leaves only `find`.
    s.gitlab.script(
        "POST",
        &format!("{API}/pipeline"),
        [Fault::AfterEffect(Reply::status(201).body("<html>"))],
    );
    let err = r.trigger(&request("cid-m")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(
        support::found(&r, &request("cid-m")).await.unwrap().run_id,
        "1000"
    );
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let s = standins().await;
    s.gitlab.always("GET", "/*", Fault::Hang);
    s.gitlab.always("POST", "/*", Fault::Hang);
    let mut conn = connection(&s, GITLAB_SECRET);
    conn.config.http.request_timeout = Duration::from_millis(100);
    conn.config.http.read_retries = 1;
    let r = GitLabRunner::new(&conn).unwrap();
    let err = bounded(r.status(&run("1000"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);
    let err = bounded(r.trigger(&request("cid-n"))).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(pipeline_calls(&s), 1);
}

#[tokio::test]
async fn an_ambiguous_trigger_is_never_sent_twice() {
    let s = standins().await;
    let r = runner(&s);
    s.gitlab.script(
        "POST",
        &format!("{API}/pipeline"),
        [Reply::status(502)
            .body("<html>502 Bad Gateway</html>")
            .into()],
    );
    let err = r.trigger(&request("cid-z")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("502 Bad Gateway"), "{}", err.message);
    assert_eq!(pipeline_calls(&s), 1);
}

#[tokio::test]
async fn a_trigger_without_a_ref_is_refused_before_sending() {
    let s = standins().await;
    let mut req = request("cid-1");
    req.git_ref = None;
    let err = runner(&s).trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(s.gitlab.calls().is_empty());
}

#[tokio::test]
async fn the_runner_debug_output_holds_no_token() {
    let s = standins().await;
    for secret in [GITLAB_SECRET, GITLAB_TRIGGER_SECRET] {
        let conn = connection(&s, secret);
        let r = GitLabRunner::new(&conn).unwrap();
        let out = format!("{r:?}");
        for value in support::secret_data(&s, secret).values() {
            let value = std::str::from_utf8(value).unwrap();
            assert!(!out.contains(value), "{out}");
        }
    }
}

const LISTING: &str = "/gitlab/api/v4/projects/group%2Fsub%2Fapp/pipelines";

fn runner_with_pages(s: &StandIns, pages: usize) -> GitLabRunner {
    let mut c = connection(s, GITLAB_SECRET);
    c.config.gitlab.find_pages = pages;
    GitLabRunner::new(&c).unwrap()
}

/// The query of every pipeline listing `find` read, in order.
fn listings(s: &StandIns) -> Vec<BTreeMap<String, String>> {
    s.gitlab
        .calls_to("GET", LISTING)
        .iter()
        .map(|c| {
            url::form_urlencoded::parse(c.query.as_deref().unwrap_or("").as_bytes())
                .into_owned()
                .collect()
        })
        .collect()
}

#[tokio::test]
async fn find_reaches_an_orphan_behind_300_newer_pipelines() {
    // Issue #11 case 1: a busy project pushed the orphan out of the 20 newest pipelines
    // `find` read, and it was triggered again. Now `find` pages back to the intent's time.
    let s = standins().await;
    let r = runner(&s);
    let since = SystemTime::now() - Duration::from_secs(120);
    let orphan = r.trigger(&request("cid-orphan")).await.unwrap();
    for i in 0..300 {
        r.trigger(&request(&format!("cid-newer-{i}")))
            .await
            .unwrap();
    }
    let found = r.find(&request("cid-orphan"), since).await.unwrap();
    assert_eq!(found, Found::Run(orphan));
    let pages = listings(&s);
    assert_eq!(
        pages.len(),
        4,
        "100 a page, the orphan is the 301st: {pages:?}"
    );
    for (n, q) in pages.iter().enumerate() {
        assert_eq!(q["page"], (n + 1).to_string());
        assert_eq!(q["per_page"], "100");
        assert_eq!(q["source"], "api");
        assert_eq!(q["ref"], "main");
        assert!(q["updated_after"].ends_with('Z'), "{q:?}");
    }
}

#[tokio::test]
async fn find_says_absent_once_it_saw_every_pipeline_updated_since_the_intent() {
    let s = standins().await;
    let r = runner(&s);
    for i in 0..120 {
        r.trigger(&request(&format!("cid-before-{i}")))
            .await
            .unwrap();
    }
    // GitLab filters on whole seconds here: the intent comes a second after the old ones.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = SystemTime::now();
    for i in 0..150 {
        r.trigger(&request(&format!("cid-after-{i}")))
            .await
            .unwrap();
    }
    let found = r.find(&request("cid-none"), since).await.unwrap();
    assert_eq!(found, Found::Absent);
    // `updated_after` leaves out the 120 older pipelines: two pages, the second the last.
    assert_eq!(listings(&s).len(), 2);
}

#[tokio::test]
async fn find_is_not_sure_when_the_page_cap_comes_before_the_last_page() {
    let s = standins().await;
    let r = runner_with_pages(&s, 2);
    let since = SystemTime::now() - Duration::from_secs(120);
    r.trigger(&request("cid-orphan")).await.unwrap();
    for i in 0..300 {
        r.trigger(&request(&format!("cid-newer-{i}")))
            .await
            .unwrap();
    }
    let found = r.find(&request("cid-orphan"), since).await.unwrap();
    let Found::NotSure(why) = found else {
        panic!("expected not sure: {found:?}")
    };
    assert!(why.contains("200 newest pipelines"), "{why}");
    assert_eq!(listings(&s).len(), 2);
}

#[tokio::test]
async fn inputs_need_the_correlation_input_in_the_pipeline_name_to_be_found() {
    let s = standins().await;
    let mut c = connection(&s, GITLAB_SECRET);
    c.config.gitlab.parameters = GitLabParameters::Inputs;
    let r = GitLabRunner::new(&c).unwrap();
    let files = format!("{API}/repository/files/*");
    // The stand-in's CI file puts the input in `workflow: name:`.
    r.check_findable(&request("")).await.unwrap();
    assert_eq!(s.gitlab.count("GET", API), 1, "the project's CI file path");
    let read = &s.gitlab.calls_to("GET", &files)[0];
    assert!(read.path.ends_with("/raw"), "{}", read.path);
    assert_eq!(read.query.as_deref(), Some("ref=main"));

    s.gitlab.script(
        "GET",
        &files,
        [Reply::status(200)
            .header("content-type", "text/plain")
            .body("spec:\n  inputs:\n    PROMOTION_CORRELATION_ID: {}\n---\nworkflow:\n  name: nightly\n")
            .into()],
    );
    let err = r.check_findable(&request("")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("passes parameters as inputs")
            && err
                .message
                .contains("does not mention inputs.PROMOTION_CORRELATION_ID"),
        "{}",
        err.message
    );

    // With variables `find` reads each pipeline's variables: nothing to check.
    let reads = s.gitlab.count("GET", &files);
    runner(&s).check_findable(&request("")).await.unwrap();
    assert_eq!(s.gitlab.count("GET", &files), reads);
}

//! GitHubActionsRunner against the GitHub stand-in, which answers as the GitHub
//! REST API documents; its fault layer plays rate limits, outages, older
//! servers and run states the stand-in never reaches by itself.

mod support;

use promotion_adapters::{
    Connection, ConnectionKind, Credentials, GitHubActionsRunner, GitHubConnection,
    GitHubCredentials, SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, Found, RunRef, RunState, TestRunner, TriggerRequest};
use promotion_standins::{
    DispatchMode, Fault, FindLag, GITHUB_ACTIONS_SECRET, Outcome, Reply, StandIns,
};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};
use support::{refused, standins, triggered};

const DISPATCHES: &str = "/repos/acme/shop/actions/workflows/gate.yml/dispatches";
const LISTING: &str = "/repos/acme/shop/actions/workflows/gate.yml/runs";

fn request(correlation_id: &str) -> TriggerRequest {
    TriggerRequest {
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        git_ref: Some("main".into()),
        parameters: BTreeMap::from([
            ("HEAD_SHA".to_owned(), "a".repeat(40)),
            ("PR".to_owned(), "42".to_owned()),
        ]),
        correlation_id: correlation_id.into(),
    }
}

fn run_ref(run_id: &str) -> RunRef {
    RunRef {
        correlation_id: None,
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        run_id: run_id.into(),
    }
}

/// A connection named `name` to `base`, for `acme/shop`, with look-ups short enough for tests.
fn connection_to(s: &StandIns, name: &str, base: &str) -> Connection {
    let mut c = support::connection(
        s,
        name,
        ConnectionKind::GithubActions,
        base,
        GITHUB_ACTIONS_SECRET,
    );
    c.config.github.repository = Some("acme/shop".parse().unwrap());
    c.config.github.find_attempts = 4;
    c.config.github.find_interval = Duration::from_millis(10);
    c.config.http.max_rate_limit_wait = Duration::from_secs(1);
    c
}

fn connection(s: &StandIns) -> Connection {
    connection_to(s, "github-main", &s.github_url)
}

fn runner_with(c: &Connection) -> GitHubActionsRunner {
    GitHubActionsRunner::new(GitHubConnection::new(c).unwrap())
}

fn runner(s: &StandIns) -> GitHubActionsRunner {
    runner_with(&connection(s))
}

fn run_path(id: &str) -> String {
    format!("/repos/acme/shop/actions/runs/{id}")
}

/// The next read of run `id` finds it as GitHub shows a run in `status`/`conclusion`.
fn shows(s: &StandIns, id: &str, status: &str, conclusion: Option<&str>) {
    s.github.script(
        "GET",
        &run_path(id),
        [Reply::status(200)
            .json(&json!({
                "id": id.parse::<u64>().unwrap(), "name": "gate.yml", "display_title": "gate x",
                "event": "workflow_dispatch", "status": status, "conclusion": conclusion,
                "html_url": format!("{}/acme/shop/actions/runs/{id}", s.github_url),
            }))
            .into()],
    );
}

fn dispatch_count(s: &StandIns) -> usize {
    s.github.count("POST", DISPATCHES)
}

#[tokio::test]
async fn trigger_with_run_details_then_follow_the_run_to_success() {
    let s = standins().await;
    let runner = runner(&s);

    let handle = runner.trigger(&request("prc-happy")).await.unwrap();
    let started = triggered(&s, "prc-happy");
    assert_eq!(s.journal.trigger_count(), 1);
    assert_eq!(handle.run_id, started.run_id);
    assert_eq!(handle.url.as_deref(), Some(started.url.as_str()));

    let dispatch = &s.github.calls()[0];
    assert_eq!(dispatch.path, DISPATCHES);
    let body = dispatch.json();
    assert_eq!(body["ref"], "main");
    assert_eq!(body["return_run_details"], true);
    assert_eq!(body["inputs"]["PROMOTION_CORRELATION_ID"], "prc-happy");
    assert_eq!(body["inputs"]["HEAD_SHA"], "a".repeat(40));
    assert!(
        dispatch
            .header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ghp_"))
    );
    assert_eq!(
        dispatch.header("accept"),
        Some("application/vnd.github+json")
    );
    assert_eq!(dispatch.header("x-github-api-version"), Some("2022-11-28"));
    assert!(
        dispatch
            .header("user-agent")
            .unwrap()
            .starts_with("promotion-controller/")
    );

    let run = run_ref(&handle.run_id);
    shows(&s, &handle.run_id, "queued", None);
    assert_eq!(runner.status(&run).await.unwrap().state, RunState::Pending);
    assert_eq!(runner.status(&run).await.unwrap().state, RunState::Running);
    s.finish(&started, Outcome::Pass).await;
    let status = runner.status(&run).await.unwrap();
    assert_eq!(status.state, RunState::Passed);
    assert_eq!(status.url, handle.url);
    assert_eq!(status.message.as_deref(), Some("completed: success"));
    assert_eq!(dispatch_count(&s), 1);
}

#[tokio::test]
async fn every_status_and_conclusion_maps_to_a_state() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-states")).await.unwrap().run_id;
    let cases = [
        ("queued", None, RunState::Pending),
        ("waiting", None, RunState::Pending),
        ("requested", None, RunState::Pending),
        ("pending", None, RunState::Pending),
        ("in_progress", None, RunState::Running),
        ("completed", Some("success"), RunState::Passed),
        ("completed", Some("failure"), RunState::Failed),
        ("completed", Some("startup_failure"), RunState::Failed),
        ("completed", Some("cancelled"), RunState::Cancelled),
        ("completed", Some("timed_out"), RunState::TimedOut),
        ("completed", Some("action_required"), RunState::Pending),
        ("completed", Some("neutral"), RunState::Failed),
        ("completed", Some("skipped"), RunState::Failed),
        ("completed", Some("stale"), RunState::Failed),
        ("completed", Some("brand_new_conclusion"), RunState::Running),
        ("brand_new_status", None, RunState::Running),
    ];
    for (status, conclusion, want) in cases {
        shows(&s, &id, status, conclusion);
        let got = runner.status(&run_ref(&id)).await.unwrap();
        assert_eq!(got.state, want, "{status} / {conclusion:?}");
        assert!(got.message.unwrap().contains(status));
    }
}

#[tokio::test]
async fn find_adopts_an_existing_run_by_correlation_id_after_a_restart() {
    let s = standins().await;
    let runner = runner(&s);
    runner.trigger(&request("prc-12")).await.unwrap();
    let id = runner.trigger(&request("prc-1")).await.unwrap().run_id;
    let other = TriggerRequest {
        job: "other.yml".into(),
        ..request("prc-1")
    };
    runner.trigger(&other).await.unwrap();
    let dispatched = s.github.count("POST", "/*");

    let found = support::found(&runner, &request("prc-1")).await.unwrap();
    assert_eq!(found.run_id, id);
    assert!(found.url.unwrap().ends_with(&format!("/runs/{id}")));
    assert_eq!(support::found(&runner, &request("prc-absent")).await, None);

    let listing = &s.github.calls_to("GET", LISTING)[0];
    assert!(
        listing
            .query
            .as_deref()
            .is_some_and(|q| q.contains("event=workflow_dispatch")),
        "{:?}",
        listing.query
    );
    assert_eq!(s.github.count("POST", "/*"), dispatched);
}

#[tokio::test]
async fn a_204_dispatch_is_found_by_display_title() {
    let s = standins().await;
    let runner = runner(&s);
    runner.trigger(&request("prc-older")).await.unwrap();
    s.set_github_dispatch(DispatchMode::NoContent);
    // GitHub creates the run a moment after answering 204.
    s.github.set_find_lag(FindLag::Listings(2));

    let handle = runner.trigger(&request("prc-204")).await.unwrap();
    assert_eq!(handle.run_id, triggered(&s, "prc-204").run_id);
    assert_eq!(dispatch_count(&s), 2);
    assert_eq!(s.github.count("GET", LISTING), 3);
    let listing = &s.github.calls_to("GET", LISTING)[0];
    assert!(
        listing
            .query
            .as_deref()
            .is_some_and(|q| q.contains("created=%3E%3D20")),
        "{:?}",
        listing.query
    );
}

#[tokio::test]
async fn a_204_whose_run_never_shows_is_ambiguous_not_resent() {
    let s = standins().await;
    s.set_github_dispatch(DispatchMode::NoContent);
    s.github.set_find_lag(FindLag::Listings(100));
    let err = runner(&s).trigger(&request("prc-late")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("prc-late"), "{}", err.message);
    assert_eq!(dispatch_count(&s), 1);
    assert_eq!(
        s.github.count("GET", LISTING),
        connection(&s).config.github.find_attempts
    );
}

#[tokio::test]
async fn an_unknown_run_details_field_is_resent_without_it_once() {
    let s = standins().await;
    s.set_github_dispatch(DispatchMode::RejectsField);
    let runner = runner(&s);

    let handle = runner.trigger(&request("prc-ghes")).await.unwrap();
    assert_eq!(s.journal.trigger_count(), 1, "exactly one run started");
    assert_eq!(handle.run_id, triggered(&s, "prc-ghes").run_id);
    let dispatches = s.github.calls_to("POST", DISPATCHES);
    assert_eq!(dispatches.len(), 2);
    assert_eq!(dispatches[0].json()["return_run_details"], true);
    assert!(dispatches[1].json().get("return_run_details").is_none());

    // The runner remembers: the next trigger goes out once, without the field.
    runner.trigger(&request("prc-ghes-2")).await.unwrap();
    assert_eq!(dispatch_count(&s), 3);
    assert_eq!(s.journal.trigger_count(), 2);
}

#[tokio::test]
async fn other_400s_are_permanent_and_not_resent() {
    let s = standins().await;
    s.github.script(
        "POST",
        DISPATCHES,
        [Reply::status(422)
            .json(
                &json!({"message": "Workflow does not have 'workflow_dispatch' trigger",
                          "documentation_url": "https://docs.github.com/rest"}),
            )
            .into()],
    );
    let err = runner(&s).trigger(&request("prc-422")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("workflow_dispatch' trigger"),
        "{}",
        err.message
    );
    assert_eq!(dispatch_count(&s), 1);
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_name_the_connection_and_call() {
    let s = standins().await;
    let mut c = connection(&s);
    c.credentials = Credentials::Github(GitHubCredentials::Token(SecretString::new("ghp_wrong")));
    let runner = runner_with(&c);

    let err = runner.trigger(&request("prc-401")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(&format!(
            "connection github-main: 401 Unauthorized from POST {DISPATCHES}"
        )),
        "{}",
        err.message
    );
    assert!(err.message.contains("Bad credentials"), "{}", err.message);
    assert!(!err.message.contains("ghp_wrong"));

    let err = runner.status(&run_ref("5")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        s.github.count("GET", &run_path("5")),
        1,
        "401 is never retried"
    );
}

#[tokio::test]
async fn an_unknown_run_is_a_permanent_404() {
    let s = standins().await;
    let err = runner(&s).status(&run_ref("999")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection github-main: 404 Not Found from GET /repos/acme/shop/actions/runs/999"
        ),
        "{}",
        err.message
    );
    assert_eq!(s.github.count("GET", &run_path("999")), 1);
}

#[tokio::test]
async fn a_429_on_the_trigger_returns_the_wait_and_starts_nothing() {
    let s = standins().await;
    s.github.script(
        "POST",
        DISPATCHES,
        [Reply::status(429)
            .header("retry-after", "30")
            .json(&json!({"message": "API rate limit exceeded"}))
            .into()],
    );
    let err = runner(&s).trigger(&request("prc-429")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(dispatch_count(&s), 1);
    assert_eq!(s.journal.trigger_count(), 0);
}

#[tokio::test]
async fn a_read_sleeps_through_a_short_retry_after() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-x")).await.unwrap().run_id;
    s.github.script(
        "GET",
        &run_path(&id),
        [Reply::status(429)
            .header("retry-after", "1")
            .json(&json!({"message": "API rate limit exceeded"}))
            .into()],
    );
    let status = runner.status(&run_ref(&id)).await.unwrap();
    assert_eq!(status.state, RunState::Running);
    assert_eq!(s.github.count("GET", &run_path(&id)), 2);
}

#[tokio::test]
async fn a_secondary_rate_limit_is_returned_with_its_wait() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-x")).await.unwrap().run_id;
    s.github.script(
        "GET",
        &run_path(&id),
        [Reply::status(403)
            .header("retry-after", "60")
            .json(&json!({"message": "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                          "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}))
            .into()],
    );
    let err = runner.status(&run_ref(&id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    // Longer than the connection sleeps through: handed back to the engine at once.
    assert_eq!(s.github.count("GET", &run_path(&id)), 1);
}

#[tokio::test]
async fn an_exhausted_primary_rate_limit_waits_until_the_reset() {
    let s = standins().await;
    let reset = (chrono::Utc::now().timestamp() + 120).to_string();
    s.github.script(
        "POST",
        DISPATCHES,
        [Reply::status(403)
            .header("x-ratelimit-limit", "5000")
            .header("x-ratelimit-remaining", "0")
            .header("x-ratelimit-used", "5000")
            .header("x-ratelimit-reset", reset)
            .json(&json!({"message": "API rate limit exceeded for installation ID 77."}))
            .into()],
    );
    let err = runner(&s).trigger(&request("prc-rl")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    let wait = err.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(121),
        "{wait:?}"
    );
    assert_eq!(s.journal.trigger_count(), 0);
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_until_success() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-x")).await.unwrap().run_id;
    s.finish(&triggered(&s, "prc-x"), Outcome::Fail).await;
    let path = run_path(&id);
    s.github.script(
        "GET",
        &path,
        [
            Reply::status(502).body("<html>Bad Gateway</html>").into(),
            Reply::status(503)
                .json(&json!({"message": "Service Unavailable"}))
                .into(),
        ],
    );
    let status = runner.status(&run_ref(&id)).await.unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(s.github.count("GET", &path), 3);
}

#[tokio::test]
async fn server_errors_on_reads_give_up_after_the_retries() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-x")).await.unwrap().run_id;
    let path = run_path(&id);
    s.github
        .always("GET", &path, Reply::status(500).body("{}").into());
    let err = runner.status(&run_ref(&id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(
        s.github.count("GET", &path),
        1 + connection(&s).config.http.read_retries
    );
}

#[tokio::test]
async fn a_server_error_after_the_dispatch_is_ambiguous_and_never_resent() {
    let s = standins().await;
    // The run starts, but a proxy answers 502.
    s.github
        .script("POST", DISPATCHES, [Fault::AfterEffect(Reply::status(502))]);
    let runner = runner(&s);
    let req = request("prc-amb");

    let err = runner.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(dispatch_count(&s), 1);

    // What the engine does next: ask `find`, which adopts the run.
    let found = support::found(&runner, &req).await.unwrap();
    assert_eq!(found.run_id, triggered(&s, "prc-amb").run_id);
    assert_eq!(dispatch_count(&s), 1);
}

#[tokio::test]
async fn a_dispatch_that_never_answers_is_ambiguous_and_sent_once() {
    let s = standins().await;
    s.github.script("POST", DISPATCHES, [Fault::Hang]);
    let mut c = connection(&s);
    c.config.http.request_timeout = Duration::from_millis(200);
    let err = runner_with(&c)
        .trigger(&request("prc-hang"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(dispatch_count(&s), 1);
}

#[tokio::test]
async fn a_read_that_never_answers_times_out_after_bounded_retries() {
    let s = standins().await;
    let id = runner(&s).trigger(&request("prc-x")).await.unwrap().run_id;
    let path = run_path(&id);
    s.github.always("GET", &path, Fault::Hang);
    let mut c = connection(&s);
    c.config.http.request_timeout = Duration::from_millis(100);
    c.config.http.read_retries = 1;
    let err = runner_with(&c).status(&run_ref(&id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(s.github.count("GET", &path), 2);
}

#[tokio::test]
async fn malformed_bodies_are_clear_errors() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-x")).await.unwrap().run_id;
    s.github.script(
        "GET",
        &run_path(&id),
        [Reply::status(200).body(r#"{"id": "not a number""#).into()],
    );
    let err = runner.status(&run_ref(&id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("malformed answer"), "{}", err.message);

    // A 200 dispatch whose details cannot be read: the run is looked up instead.
    s.github
        .script("POST", DISPATCHES, [Fault::AfterEffect(Reply::status(200))]);
    let handle = runner.trigger(&request("prc-garbled")).await.unwrap();
    assert_eq!(handle.run_id, triggered(&s, "prc-garbled").run_id);
    assert_eq!(dispatch_count(&s), 2);
}

#[tokio::test]
async fn cancel_stops_a_run_and_accepts_a_finished_one() {
    let s = standins().await;
    let runner = runner(&s);
    let id = runner.trigger(&request("prc-c")).await.unwrap().run_id;
    let run = run_ref(&id);
    runner.cancel(&run).await.unwrap();
    assert_eq!(
        runner.status(&run).await.unwrap().state,
        RunState::Cancelled
    );
    // Now finished: GitHub answers 409, which is not an error.
    runner.cancel(&run).await.unwrap();
    assert_eq!(
        s.github.count("POST", &format!("{}/cancel", run_path(&id))),
        2
    );

    let err = runner.cancel(&run_ref("31337")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let s = standins().await;
    let runner = runner(&s);

    let mut many = request("prc-many");
    for i in 0..25 {
        many.parameters.insert(format!("P{i}"), "x".into());
    }
    let err = runner.trigger(&many).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("at most 25 inputs"), "{}", err.message);

    let sha_ref = TriggerRequest {
        git_ref: Some("0123456789abcdef0123456789abcdef01234567".into()),
        ..request("prc-sha")
    };
    let err = runner.trigger(&sha_ref).await.unwrap_err();
    assert!(err.message.contains("is a commit SHA"), "{}", err.message);

    let no_ref = TriggerRequest {
        git_ref: None,
        ..request("prc-noref")
    };
    assert!(
        runner
            .trigger(&no_ref)
            .await
            .unwrap_err()
            .message
            .contains("needs a ref")
    );

    let bad_job = TriggerRequest {
        job: "acme/gate.yml".into(),
        ..request("prc-job")
    };
    assert_eq!(
        runner.trigger(&bad_job).await.unwrap_err().kind,
        ErrorKind::Permanent
    );

    let other = TriggerRequest {
        connection: Some("nope".into()),
        ..request("prc-conn")
    };
    let err = runner.trigger(&other).await.unwrap_err();
    assert!(
        err.message
            .contains("no github-actions connection named 'nope'"),
        "{}",
        err.message
    );

    let err = runner.status(&run_ref("12abc")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(s.github.calls().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn jobs_may_name_their_repository() {
    let s = standins().await;
    let mut c = connection(&s);
    c.config.github.repository = None;
    let runner = runner_with(&c);

    let err = runner.trigger(&request("prc-bare")).await.unwrap_err();
    assert!(
        err.message.contains("names no repository"),
        "{}",
        err.message
    );

    let full = TriggerRequest {
        job: "acme/shop/.github/workflows/gate.yml".into(),
        ..request("prc-full")
    };
    runner.trigger(&full).await.unwrap();
    let short = TriggerRequest {
        job: "other-org/other-repo/gate.yml".into(),
        ..request("prc-short")
    };
    runner.trigger(&short).await.unwrap();
    let paths: Vec<String> = s.github.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            DISPATCHES,
            "/repos/other-org/other-repo/actions/workflows/gate.yml/dispatches",
        ]
    );
}

#[tokio::test]
async fn github_enterprise_base_urls_work() {
    let s = standins().await;
    let c = connection_to(&s, "github-main", &format!("{}/api/v3", s.github_url));
    let runner = runner_with(&c);
    let handle = runner.trigger(&request("prc-ghe")).await.unwrap();
    runner.status(&run_ref(&handle.run_id)).await.unwrap();
    let paths: Vec<String> = s.github.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            format!("/api/v3{DISPATCHES}"),
            format!("/api/v3{}", run_path(&handle.run_id)),
        ]
    );
}

#[tokio::test]
async fn tests_can_pick_a_named_connection() {
    let main = standins().await;
    let other = standins().await;
    let named = connection_to(&other, "ghe", &format!("{}/api/v3", other.github_url));
    let runner = runner(&main).with_connection(GitHubConnection::new(&named).unwrap());
    let req = TriggerRequest {
        connection: Some("ghe".into()),
        ..request("prc-named")
    };
    runner.trigger(&req).await.unwrap();
    assert_eq!(
        other.github.count("POST", &format!("/api/v3{DISPATCHES}")),
        1
    );
    assert_eq!(main.github.count("POST", "/*"), 0);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let s = standins().await;
    let c = connection_to(&s, "github-main", &refused());
    let err = runner_with(&c)
        .trigger(&request("prc-refused"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

/// The query of every run listing read, in order.
fn listings(s: &StandIns) -> Vec<BTreeMap<String, String>> {
    s.github
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
async fn find_reaches_an_orphan_behind_300_newer_runs() {
    // Issue #11 case 1: a busy workflow pushed the orphan out of the 3 pages `find` read,
    // and it was dispatched again. Now `find` pages back to the intent's time.
    let s = standins().await;
    let runner = runner(&s);
    let since = SystemTime::now() - Duration::from_secs(120);
    let orphan = runner.trigger(&request("prc-orphan")).await.unwrap();
    for i in 0..300 {
        runner
            .trigger(&request(&format!("prc-newer-{i}")))
            .await
            .unwrap();
    }
    let found = runner.find(&request("prc-orphan"), since).await.unwrap();
    let Found::Run(h) = found else {
        panic!("not found: {found:?}")
    };
    assert_eq!(h.run_id, orphan.run_id);
    let pages = listings(&s);
    assert_eq!(
        pages.len(),
        4,
        "100 a page, the orphan is the 301st: {pages:?}"
    );
    let created = format!(
        ">={}",
        chrono::DateTime::<chrono::Utc>::from(since).format("%Y-%m-%dT%H:%M:%SZ")
    );
    for (n, q) in pages.iter().enumerate() {
        assert_eq!(q["page"], (n + 1).to_string());
        assert_eq!(q["per_page"], "100");
        assert_eq!(q["event"], "workflow_dispatch");
        assert_eq!(q["created"], created);
    }
}

#[tokio::test]
async fn find_says_absent_once_the_runs_created_since_the_intent_are_listed() {
    let s = standins().await;
    let runner = runner(&s);
    for i in 0..150 {
        runner
            .trigger(&request(&format!("prc-before-{i}")))
            .await
            .unwrap();
    }
    // `created` filters on whole seconds: the intent comes a second after the old runs.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let since = SystemTime::now();
    for i in 0..120 {
        runner
            .trigger(&request(&format!("prc-after-{i}")))
            .await
            .unwrap();
    }
    let found = runner.find(&request("prc-none"), since).await.unwrap();
    assert_eq!(found, Found::Absent);
    assert_eq!(
        listings(&s).len(),
        2,
        "120 runs since the intent: two pages"
    );
}

#[tokio::test]
async fn find_is_not_sure_when_the_page_cap_or_githubs_1000_limit_comes_first() {
    let s = standins().await;
    let mut c = connection(&s);
    c.config.github.find_pages = 2;
    let capped = runner_with(&c);
    let since = SystemTime::now() - Duration::from_secs(120);
    capped.trigger(&request("prc-orphan")).await.unwrap();
    for i in 0..300 {
        capped
            .trigger(&request(&format!("prc-newer-{i}")))
            .await
            .unwrap();
    }
    let found = capped.find(&request("prc-orphan"), since).await.unwrap();
    let Found::NotSure(why) = found else {
        panic!("expected not sure: {found:?}")
    };
    assert!(why.contains("200 newest runs"), "{why}");
    assert_eq!(listings(&s).len(), 2);

    // GitHub lists 1,000 runs at most for a filtered search: a busier workflow cannot be
    // read back to the intent, whatever the page cap.
    for i in 0..800 {
        capped
            .trigger(&request(&format!("prc-more-{i}")))
            .await
            .unwrap();
    }
    let mut c = connection(&s);
    c.config.github.find_pages = 50;
    let found = runner_with(&c)
        .find(&request("prc-orphan"), since)
        .await
        .unwrap();
    let Found::NotSure(why) = found else {
        panic!("expected not sure: {found:?}")
    };
    assert!(why.contains("at most 1000 runs"), "{why}");
    assert_eq!(listings(&s).len(), 2 + 10);
}

#[tokio::test]
async fn a_workflow_whose_run_name_lacks_the_correlation_id_is_reported_unfindable() {
    let s = standins().await;
    let runner = runner(&s);
    let contents = "/repos/acme/shop/contents/.github/workflows/gate.yml";
    // The stand-in's workflows show the correlation id in their run-name.
    runner.check_findable(&request("")).await.unwrap();
    let read = &s.github.calls_to("GET", contents)[0];
    assert_eq!(read.query.as_deref(), Some("ref=main"));

    // A workflow that names its runs by SHA only: `find` can never tell them apart.
    use base64::Engine as _;
    let file = "on:\n  workflow_dispatch:\n    inputs:\n      PROMOTION_CORRELATION_ID: {}\n\
                run-name: gate ${{ inputs.HEAD_SHA }}\njobs: {}\n";
    let encoded = base64::engine::general_purpose::STANDARD.encode(file);
    s.github.script(
        "GET",
        contents,
        [Reply::status(200)
            .json(
                &json!({"type": "file", "encoding": "base64", "name": "gate.yml",
                          "path": ".github/workflows/gate.yml", "content": encoded}),
            )
            .into()],
    );
    let err = runner.check_findable(&request("")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .contains("does not mention inputs.PROMOTION_CORRELATION_ID"),
        "{}",
        err.message
    );
    assert!(err.message.contains("github-main"), "{}", err.message);

    // A 404 (or a token without Contents: read) is no verdict on the workflow.
    s.github.script(
        "GET",
        contents,
        [Reply::status(404)
            .json(&json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest"}))
            .into()],
    );
    let err = runner.check_findable(&request("")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient, "{}", err.message);
    assert_eq!(s.github.count("GET", contents), 3);
}

//! GitHubActionsRunner against a local fake of the GitHub REST API.

mod common;

use axum::http::Method;
use common::{DispatchMode, Fake, Reply};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, RunRef, RunState, TestRunner, TriggerRequest};
use promotion_github::{
    Credentials, GitHubActionsRunner, GitHubConfig, GitHubConnection, SecretString,
};
use std::collections::BTreeMap;
use std::time::Duration;

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
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        run_id: run_id.into(),
    }
}

fn runner(fake: &Fake) -> GitHubActionsRunner {
    GitHubActionsRunner::new(fake.connection())
}

#[tokio::test]
async fn trigger_with_run_details_then_follow_the_run_to_success() {
    let fake = Fake::start("").await;
    let runner = runner(&fake);

    let handle = runner.trigger(&request("prc-happy")).await.unwrap();
    let runs = fake.runs();
    assert_eq!(runs.len(), 1);
    assert_eq!(handle.run_id, runs[0].id.to_string());
    assert_eq!(
        handle.url.as_deref(),
        Some(
            format!(
                "https://github.example/acme/shop/actions/runs/{}",
                runs[0].id
            )
            .as_str()
        )
    );

    let seen = fake.seen();
    let dispatch = &seen[0];
    assert_eq!(dispatch.method, Method::POST);
    assert_eq!(
        dispatch.path,
        "/repos/acme/shop/actions/workflows/gate.yml/dispatches"
    );
    assert_eq!(dispatch.body["ref"], "main");
    assert_eq!(dispatch.body["return_run_details"], true);
    assert_eq!(
        dispatch.body["inputs"]["PROMOTION_CORRELATION_ID"],
        "prc-happy"
    );
    assert_eq!(dispatch.body["inputs"]["HEAD_SHA"], "a".repeat(40));
    assert_eq!(
        dispatch.authorization.as_deref(),
        Some("Bearer ghp_fake_s3cret_token")
    );
    assert_eq!(dispatch.headers["accept"], "application/vnd.github+json");
    assert_eq!(dispatch.headers["x-github-api-version"], "2022-11-28");
    assert!(
        dispatch.headers["user-agent"]
            .to_str()
            .unwrap()
            .starts_with("promotion-controller/")
    );

    let run = run_ref(&handle.run_id);
    let status = runner.status(&run).await.unwrap();
    assert_eq!(status.state, RunState::Pending);
    fake.set_run(runs[0].id, "in_progress", None);
    assert_eq!(runner.status(&run).await.unwrap().state, RunState::Running);
    fake.set_run(runs[0].id, "completed", Some("success"));
    let status = runner.status(&run).await.unwrap();
    assert_eq!(status.state, RunState::Passed);
    assert_eq!(status.url, handle.url);
    assert_eq!(status.message.as_deref(), Some("completed: success"));
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
}

#[tokio::test]
async fn every_status_and_conclusion_maps_to_a_state() {
    let fake = Fake::start("").await;
    let runner = runner(&fake);
    let id = fake.add_run("gate.yml", "gate prc-states", "queued", None);
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
        fake.set_run(id, status, conclusion);
        let got = runner.status(&run_ref(&id.to_string())).await.unwrap();
        assert_eq!(got.state, want, "{status} / {conclusion:?}");
        assert!(got.message.unwrap().contains(status));
    }
}

#[tokio::test]
async fn find_adopts_an_existing_run_by_correlation_id_after_a_restart() {
    let fake = Fake::start("").await;
    fake.add_run("gate.yml", "gate prc-12", "in_progress", None);
    let id = fake.add_run("gate.yml", "gate prc-1", "in_progress", None);
    fake.add_run("other.yml", "gate prc-1", "in_progress", None);
    let runner = runner(&fake);

    let found = runner.find(&request("prc-1")).await.unwrap().unwrap();
    assert_eq!(found.run_id, id.to_string());
    assert!(found.url.unwrap().ends_with(&format!("/runs/{id}")));
    assert_eq!(runner.find(&request("prc-absent")).await.unwrap(), None);

    let listing = fake
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/runs"))
        .unwrap();
    assert_eq!(
        listing.path,
        "/repos/acme/shop/actions/workflows/gate.yml/runs"
    );
    assert!(
        listing.query.contains("event=workflow_dispatch"),
        "{}",
        listing.query
    );
    assert_eq!(fake.count(Method::POST, "/dispatches"), 0);
}

#[tokio::test]
async fn a_204_dispatch_is_found_by_display_title() {
    let fake = Fake::start("").await;
    fake.set_mode(DispatchMode::NoContent);
    fake.add_run("gate.yml", "gate prc-older", "completed", Some("success"));
    // GitHub creates the run a moment after answering 204.
    fake.state.lock().unwrap().listing_lag = 2;
    let runner = runner(&fake);

    let handle = runner.trigger(&request("prc-204")).await.unwrap();
    let started = fake
        .runs()
        .into_iter()
        .find(|r| r.display_title == "gate prc-204")
        .unwrap();
    assert_eq!(handle.run_id, started.id.to_string());
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
    assert_eq!(fake.count(Method::GET, "/gate.yml/runs"), 3);
    let listing = fake
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/runs"))
        .unwrap();
    assert!(
        listing.query.contains("created=%3E%3D20"),
        "{}",
        listing.query
    );
}

#[tokio::test]
async fn a_204_whose_run_never_shows_is_ambiguous_not_resent() {
    let fake = Fake::start("").await;
    fake.set_mode(DispatchMode::NoContent);
    fake.state.lock().unwrap().listing_lag = 100;
    let err = runner(&fake)
        .trigger(&request("prc-late"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("prc-late"), "{}", err.message);
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
    assert_eq!(
        fake.count(Method::GET, "/runs"),
        Fake::settings().find_attempts
    );
}

#[tokio::test]
async fn an_unknown_run_details_field_is_resent_without_it_once() {
    let fake = Fake::start("").await;
    fake.set_mode(DispatchMode::RejectsField);
    let runner = runner(&fake);

    let handle = runner.trigger(&request("prc-ghes")).await.unwrap();
    let runs = fake.runs();
    assert_eq!(runs.len(), 1, "exactly one run started");
    assert_eq!(handle.run_id, runs[0].id.to_string());
    let dispatches: Vec<_> = fake
        .seen()
        .into_iter()
        .filter(|s| s.path.ends_with("/dispatches"))
        .collect();
    assert_eq!(dispatches.len(), 2);
    assert_eq!(dispatches[0].body["return_run_details"], true);
    assert!(dispatches[1].body.get("return_run_details").is_none());

    // The runner remembers: the next trigger goes out once, without the field.
    runner.trigger(&request("prc-ghes-2")).await.unwrap();
    assert_eq!(fake.count(Method::POST, "/dispatches"), 3);
    assert_eq!(fake.runs().len(), 2);
}

#[tokio::test]
async fn other_400s_are_permanent_and_not_resent() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        "/dispatches",
        vec![Reply::status(
            422,
            r#"{"message":"Workflow does not have 'workflow_dispatch' trigger","documentation_url":"https://docs.github.com/rest"}"#,
        )],
    );
    let err = runner(&fake)
        .trigger(&request("prc-422"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("workflow_dispatch' trigger"),
        "{}",
        err.message
    );
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_name_the_connection_and_call() {
    let fake = Fake::start("").await;
    let config = GitHubConfig {
        credentials: Credentials::Token(SecretString::new("ghp_wrong")),
        ..fake.token_config()
    };
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&config).unwrap());

    let err = runner.trigger(&request("prc-401")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(
            "connection github-main: POST /repos/acme/shop/actions/workflows/gate.yml/dispatches: 401"
        ),
        "{}",
        err.message
    );
    assert!(!err.message.contains("ghp_wrong"));

    let err = runner.status(&run_ref("5")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        fake.count(Method::GET, "/runs/5"),
        1,
        "401 is never retried"
    );
}

#[tokio::test]
async fn an_unknown_run_is_a_permanent_404() {
    let fake = Fake::start("").await;
    let err = runner(&fake).status(&run_ref("999")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .starts_with("connection github-main: GET /repos/acme/shop/actions/runs/999: 404"),
        "{}",
        err.message
    );
    assert_eq!(fake.count(Method::GET, "/runs/999"), 1);
}

#[tokio::test]
async fn a_429_on_the_trigger_returns_the_wait_and_starts_nothing() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        "/dispatches",
        vec![Reply::with_headers(
            429,
            &[("retry-after", "30")],
            r#"{"message":"API rate limit exceeded"}"#,
        )],
    );
    let err = runner(&fake)
        .trigger(&request("prc-429"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
    assert!(fake.runs().is_empty());
}

#[tokio::test]
async fn a_read_sleeps_through_a_short_retry_after() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "in_progress", None);
    fake.script(
        Method::GET,
        &format!("/runs/{id}"),
        vec![Reply::with_headers(
            429,
            &[("retry-after", "1")],
            r#"{"message":"API rate limit exceeded"}"#,
        )],
    );
    let status = runner(&fake)
        .status(&run_ref(&id.to_string()))
        .await
        .unwrap();
    assert_eq!(status.state, RunState::Running);
    assert_eq!(fake.count(Method::GET, &format!("/runs/{id}")), 2);
}

#[tokio::test]
async fn a_secondary_rate_limit_is_returned_with_its_wait() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "in_progress", None);
    fake.script(
        Method::GET,
        &format!("/runs/{id}"),
        vec![Reply::with_headers(
            403,
            &[("retry-after", "60")],
            r#"{"message":"You have exceeded a secondary rate limit. Please wait a few minutes before you try again.","documentation_url":"https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"}"#,
        )],
    );
    let err = runner(&fake)
        .status(&run_ref(&id.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(err.retry_after, Some(Duration::from_secs(60)));
    // Longer than the connection sleeps through: handed back to the engine at once.
    assert_eq!(fake.count(Method::GET, &format!("/runs/{id}")), 1);
}

#[tokio::test]
async fn an_exhausted_primary_rate_limit_waits_until_the_reset() {
    let fake = Fake::start("").await;
    let reset = (chrono::Utc::now().timestamp() + 120).to_string();
    fake.script(
        Method::POST,
        "/dispatches",
        vec![Reply::with_headers(
            403,
            &[
                ("x-ratelimit-limit", "5000"),
                ("x-ratelimit-remaining", "0"),
                ("x-ratelimit-used", "5000"),
                ("x-ratelimit-reset", &reset),
            ],
            r#"{"message":"API rate limit exceeded for installation ID 77."}"#,
        )],
    );
    let err = runner(&fake).trigger(&request("prc-rl")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    let wait = err.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(100) && wait <= Duration::from_secs(121),
        "{wait:?}"
    );
    assert!(fake.runs().is_empty());
}

#[tokio::test]
async fn server_errors_on_reads_are_retried_until_success() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "completed", Some("failure"));
    let path = format!("/runs/{id}");
    fake.script(
        Method::GET,
        &path,
        vec![
            Reply::status(502, "<html>Bad Gateway</html>"),
            Reply::status(503, r#"{"message":"Service Unavailable"}"#),
        ],
    );
    let status = runner(&fake)
        .status(&run_ref(&id.to_string()))
        .await
        .unwrap();
    assert_eq!(status.state, RunState::Failed);
    assert_eq!(fake.count(Method::GET, &path), 3);
}

#[tokio::test]
async fn server_errors_on_reads_give_up_after_the_retries() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "queued", None);
    let path = format!("/runs/{id}");
    fake.script(Method::GET, &path, vec![Reply::status(500, "{}"); 10]);
    let err = runner(&fake)
        .status(&run_ref(&id.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert_eq!(
        fake.count(Method::GET, &path),
        1 + Fake::settings().read_retries
    );
}

#[tokio::test]
async fn a_server_error_after_the_dispatch_is_ambiguous_and_never_resent() {
    let fake = Fake::start("").await;
    // The run starts, but a proxy answers 502.
    fake.script(Method::POST, "/dispatches", vec![Reply::AfterEffect(502)]);
    let runner = runner(&fake);
    let req = request("prc-amb");

    let err = runner.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);

    // What the engine does next: ask `find`, which adopts the run.
    let found = runner.find(&req).await.unwrap().unwrap();
    assert_eq!(found.run_id, fake.runs()[0].id.to_string());
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
}

#[tokio::test]
async fn a_dispatch_that_never_answers_is_ambiguous_and_sent_once() {
    let fake = Fake::start("").await;
    fake.script(Method::POST, "/dispatches", vec![Reply::Hang]);
    let err = runner(&fake)
        .trigger(&request("prc-hang"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("no answer within"), "{}", err.message);
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
}

#[tokio::test]
async fn a_read_that_never_answers_times_out_after_bounded_retries() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "queued", None);
    let path = format!("/runs/{id}");
    fake.script(Method::GET, &path, vec![Reply::Hang; 10]);
    let mut config = fake.token_config();
    config.http.request_timeout = Duration::from_millis(100);
    config.http.read_retries = 1;
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&config).unwrap());
    let err = runner.status(&run_ref(&id.to_string())).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("no answer within"), "{}", err.message);
    assert_eq!(fake.count(Method::GET, &path), 2);
}

#[tokio::test]
async fn malformed_bodies_are_clear_errors() {
    let fake = Fake::start("").await;
    let id = fake.add_run("gate.yml", "gate prc-x", "queued", None);
    let path = format!("/runs/{id}");
    fake.script(
        Method::GET,
        &path,
        vec![Reply::status(200, r#"{"id": "not a number""#)],
    );
    let err = runner(&fake)
        .status(&run_ref(&id.to_string()))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("not the JSON GitHub documents"),
        "{}",
        err.message
    );

    // A 200 dispatch whose details cannot be read: the run is looked up instead.
    fake.script(Method::POST, "/dispatches", vec![Reply::AfterEffect(200)]);
    let handle = runner(&fake)
        .trigger(&request("prc-garbled"))
        .await
        .unwrap();
    let started = fake
        .runs()
        .into_iter()
        .find(|r| r.display_title == "gate prc-garbled")
        .unwrap();
    assert_eq!(handle.run_id, started.id.to_string());
    assert_eq!(fake.count(Method::POST, "/dispatches"), 1);
}

#[tokio::test]
async fn cancel_stops_a_run_and_accepts_a_finished_one() {
    let fake = Fake::start("").await;
    let runner = runner(&fake);
    let id = fake.add_run("gate.yml", "gate prc-c", "in_progress", None);
    let run = run_ref(&id.to_string());
    runner.cancel(&run).await.unwrap();
    assert_eq!(
        runner.status(&run).await.unwrap().state,
        RunState::Cancelled
    );
    // Now finished: GitHub answers 409, which is not an error.
    runner.cancel(&run).await.unwrap();
    assert_eq!(fake.count(Method::POST, &format!("/runs/{id}/cancel")), 2);

    let err = runner.cancel(&run_ref("31337")).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let fake = Fake::start("").await;
    let runner = runner(&fake);

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
    assert!(fake.seen().is_empty(), "nothing was sent");
}

#[tokio::test]
async fn jobs_may_name_their_repository() {
    let fake = Fake::start("").await;
    let mut config = fake.token_config();
    config.repository = None;
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&config).unwrap());

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
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/repos/acme/shop/actions/workflows/gate.yml/dispatches",
            "/repos/other-org/other-repo/actions/workflows/gate.yml/dispatches",
        ]
    );
}

#[tokio::test]
async fn github_enterprise_base_urls_work() {
    let fake = Fake::start("/api/v3").await;
    assert!(fake.base.ends_with("/api/v3"));
    let runner = runner(&fake);
    let handle = runner.trigger(&request("prc-ghe")).await.unwrap();
    runner.status(&run_ref(&handle.run_id)).await.unwrap();
    assert_eq!(
        fake.seen()[0].path,
        "/api/v3/repos/acme/shop/actions/workflows/gate.yml/dispatches"
    );
}

#[tokio::test]
async fn tests_can_pick_a_named_connection() {
    let main = Fake::start("").await;
    let other = Fake::start("/api/v3").await;
    let mut config = other.token_config();
    config.name = "ghe".into();
    let runner = GitHubActionsRunner::new(main.connection())
        .with_connection(GitHubConnection::new(&config).unwrap());
    let req = TriggerRequest {
        connection: Some("ghe".into()),
        ..request("prc-named")
    };
    runner.trigger(&req).await.unwrap();
    assert_eq!(other.count(Method::POST, "/dispatches"), 1);
    assert_eq!(main.count(Method::POST, "/dispatches"), 0);
}

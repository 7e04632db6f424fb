//! GitHubApi (labels, commit statuses) against a local fake of the GitHub REST API.

mod common;

use axum::http::Method;
use common::{Fake, Reply};
use promotion_core::ports::{CommitState, CommitStatus, ErrorKind, GitHubClient, PullRequestRef};
use promotion_github::{Credentials, GitHubApi, GitHubConfig, GitHubConnection, SecretString};
use std::time::Duration;

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

fn pr() -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    }
}

fn status(state: CommitState, description: &str) -> CommitStatus {
    CommitStatus {
        context: "promotion/staging/smoke".into(),
        state,
        target_url: Some("https://github.example/acme/shop/actions/runs/7".into()),
        description: description.into(),
    }
}

fn labels(fake: &Fake) -> Vec<String> {
    fake.state
        .lock()
        .unwrap()
        .labels
        .get(&42)
        .map(|s| s.iter().cloned().collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn labels_are_added_and_removed() {
    let fake = Fake::start("").await;
    let api = GitHubApi::new(fake.connection());
    let label = "promoted: staging/eu";

    api.add_label(&pr(), label).await.unwrap();
    api.add_label(&pr(), label).await.unwrap();
    assert_eq!(labels(&fake), [label]);
    let add = &fake.seen()[0];
    assert_eq!(add.path, "/repos/acme/shop/issues/42/labels");
    assert_eq!(add.body, serde_json::json!({"labels": [label]}));
    assert_eq!(
        add.authorization.as_deref(),
        Some("Bearer ghp_fake_s3cret_token")
    );
    assert_eq!(add.headers["x-github-api-version"], "2022-11-28");

    api.remove_label(&pr(), label).await.unwrap();
    assert!(labels(&fake).is_empty());
    let removal = fake.seen().pop().unwrap();
    assert_eq!(removal.method, Method::DELETE);
    assert_eq!(
        removal.path,
        "/repos/acme/shop/issues/42/labels/promoted:%20staging%2Feu"
    );

    // Already gone: GitHub answers 404, which is what removing wanted.
    api.remove_label(&pr(), label).await.unwrap();
    assert_eq!(fake.count(Method::DELETE, "%2Feu"), 2);
}

#[tokio::test]
async fn commit_statuses_carry_state_context_link_and_a_short_description() {
    let fake = Fake::start("").await;
    let api = GitHubApi::new(fake.connection());
    let cases = [
        (CommitState::Pending, "pending"),
        (CommitState::Success, "success"),
        (CommitState::Failure, "failure"),
        (CommitState::Error, "error"),
    ];
    for (state, _) in cases {
        api.set_commit_status(&pr(), SHA, &status(state, "smoke tests"))
            .await
            .unwrap();
    }
    let long = "x".repeat(300);
    api.set_commit_status(&pr(), SHA, &status(CommitState::Failure, &long))
        .await
        .unwrap();
    let without_link = CommitStatus {
        target_url: None,
        ..status(CommitState::Pending, "queued")
    };
    api.set_commit_status(&pr(), SHA, &without_link)
        .await
        .unwrap();

    let statuses = fake.state.lock().unwrap().statuses.clone();
    for ((_, name), sent) in cases.iter().zip(&statuses) {
        assert_eq!(sent["state"], *name);
        assert_eq!(sent["context"], "promotion/staging/smoke");
        assert_eq!(
            sent["target_url"],
            "https://github.example/acme/shop/actions/runs/7"
        );
        assert_eq!(sent["sha"], SHA);
    }
    assert_eq!(
        statuses[4]["description"].as_str().unwrap().chars().count(),
        140
    );
    assert!(statuses[5].get("target_url").is_none());
    assert_eq!(
        fake.seen()[0].path,
        format!("/repos/acme/shop/statuses/{SHA}")
    );
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_name_the_connection_and_call() {
    let fake = Fake::start("").await;
    let config = GitHubConfig {
        credentials: Credentials::Token(SecretString::new("ghp_wrong")),
        ..fake.token_config()
    };
    let api = GitHubApi::new(GitHubConnection::new(&config).unwrap());
    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message
            .starts_with("connection github-main: POST /repos/acme/shop/issues/42/labels: 401"),
        "{}",
        err.message
    );
    assert!(err.message.contains("Bad credentials"));
    assert!(!err.message.contains("ghp_wrong"));
    let err = api.remove_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::Permanent,
        "a 401 on removal is not 'already gone'"
    );
}

#[tokio::test]
async fn a_missing_repository_is_a_permanent_404() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        &format!("/statuses/{SHA}"),
        vec![Reply::status(
            404,
            r#"{"message":"Not Found","documentation_url":"https://docs.github.com/rest/commits/statuses#create-a-commit-status","status":"404"}"#,
        )],
    );
    let api = GitHubApi::new(fake.connection());
    let err = api
        .set_commit_status(&pr(), SHA, &status(CommitState::Success, "ok"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains(": 404"), "{}", err.message);
}

#[tokio::test]
async fn rate_limits_return_their_wait_and_writes_are_not_resent() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        "/labels",
        vec![
            Reply::with_headers(
                429,
                &[("retry-after", "17")],
                r#"{"message":"API rate limit exceeded"}"#,
            ),
            Reply::with_headers(
                403,
                &[("retry-after", "60")],
                r#"{"message":"You have exceeded a secondary rate limit."}"#,
            ),
        ],
    );
    let api = GitHubApi::new(fake.connection());
    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(
        (err.kind, err.retry_after),
        (ErrorKind::Transient, Some(Duration::from_secs(17)))
    );
    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(
        (err.kind, err.retry_after),
        (ErrorKind::Transient, Some(Duration::from_secs(60)))
    );
    assert_eq!(fake.count(Method::POST, "/labels"), 2);
    assert!(labels(&fake).is_empty());
    api.add_label(&pr(), "promoted").await.unwrap();
}

#[tokio::test]
async fn server_errors_on_writes_are_transient_for_the_engine() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        &format!("/statuses/{SHA}"),
        vec![Reply::status(503, "<html>unavailable</html>")],
    );
    let api = GitHubApi::new(fake.connection());
    let err = api
        .set_commit_status(&pr(), SHA, &status(CommitState::Pending, "running"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("<html>unavailable</html>"),
        "{}",
        err.message
    );
    assert_eq!(fake.count(Method::POST, &format!("/statuses/{SHA}")), 1);
}

#[tokio::test]
async fn malformed_error_bodies_still_give_clear_errors() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        "/labels",
        vec![Reply::status(422, "{\"message\": \"Validation Fa")],
    );
    let err = GitHubApi::new(fake.connection())
        .add_label(&pr(), "promoted")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("422"), "{}", err.message);
    assert!(err.message.contains("Validation Fa"), "{}", err.message);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let fake = Fake::start("").await;
    fake.script(Method::DELETE, "/labels/promoted", vec![Reply::Hang]);
    let mut config = fake.token_config();
    config.http.request_timeout = Duration::from_millis(100);
    let api = GitHubApi::new(GitHubConnection::new(&config).unwrap());
    let err = api.remove_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("no answer within"), "{}", err.message);
    assert_eq!(fake.count(Method::DELETE, "/labels/promoted"), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = GitHubConfig::new(
        "github-main",
        &format!("http://{addr}"),
        Credentials::Token(SecretString::new("t")),
    )
    .unwrap()
    .with_http(Fake::settings());
    let err = GitHubApi::new(GitHubConnection::new(&config).unwrap())
        .add_label(&pr(), "promoted")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let fake = Fake::start("").await;
    fake.script(
        Method::POST,
        "/labels",
        vec![Reply::with_headers(
            301,
            &[(
                "location",
                "https://elsewhere.example/repos/acme/shop2/issues/42/labels",
            )],
            r#"{"message":"Moved Permanently"}"#,
        )],
    );
    let err = GitHubApi::new(fake.connection())
        .add_label(&pr(), "promoted")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("elsewhere.example"), "{}", err.message);
    assert_eq!(fake.seen().len(), 1);
}

#[tokio::test]
async fn github_enterprise_base_urls_work() {
    let fake = Fake::start("/api/v3").await;
    let api = GitHubApi::new(fake.connection());
    api.add_label(&pr(), "promoted").await.unwrap();
    api.set_commit_status(&pr(), SHA, &status(CommitState::Success, "ok"))
        .await
        .unwrap();
    api.remove_label(&pr(), "promoted").await.unwrap();
    let paths: Vec<String> = fake.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(
        paths,
        [
            "/api/v3/repos/acme/shop/issues/42/labels".to_owned(),
            format!("/api/v3/repos/acme/shop/statuses/{SHA}"),
            "/api/v3/repos/acme/shop/issues/42/labels/promoted".to_owned(),
        ]
    );
}

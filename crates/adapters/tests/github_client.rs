//! GitHubApi (labels, commit statuses) against the GitHub stand-in, which answers
//! as the GitHub REST API documents; its fault layer plays what a healthy GitHub does not.

mod support;

use promotion_adapters::{
    Connection, ConnectionKind, Credentials, GitHubApi, GitHubConnection, GitHubCredentials,
    SecretString,
};
use promotion_core::ports::{CommitState, CommitStatus, ErrorKind, GitHubClient, PullRequestRef};
use promotion_standins::{Fault, GITHUB_SECRET, Reply, StandIns};
use serde_json::json;
use std::time::Duration;
use support::{refused, standins};

const SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const LABELS: &str = "/repos/acme/shop/issues/42/labels";

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

fn connection_to(s: &StandIns, base: &str) -> Connection {
    support::connection(
        s,
        "github-main",
        ConnectionKind::Github,
        base,
        GITHUB_SECRET,
    )
}

fn api_with(c: &Connection) -> GitHubApi {
    GitHubApi::new(GitHubConnection::new(c).unwrap())
}

fn api(s: &StandIns) -> GitHubApi {
    api_with(&connection_to(s, &s.github_url))
}

fn labels(s: &StandIns) -> Vec<String> {
    s.journal.labels("acme", "shop", 42)
}

#[tokio::test]
async fn labels_are_added_and_removed() {
    let s = standins().await;
    let api = api(&s);
    let label = "promoted: staging/eu";

    api.add_label(&pr(), label).await.unwrap();
    api.add_label(&pr(), label).await.unwrap();
    assert_eq!(labels(&s), [label]);
    // Both requests reached GitHub: a repeated label is not dropped on the way.
    assert_eq!(s.github.count("POST", LABELS), 2);
    assert_eq!(s.journal.label_requests("acme", "shop", 42).len(), 2);
    let add = &s.github.calls()[0];
    assert_eq!(add.path, LABELS);
    assert_eq!(add.json(), json!({"labels": [label]}));
    assert!(
        add.header("authorization")
            .is_some_and(|a| a.starts_with("Bearer ghp_"))
    );
    assert_eq!(add.header("x-github-api-version"), Some("2022-11-28"));

    api.remove_label(&pr(), label).await.unwrap();
    assert!(labels(&s).is_empty());
    let removal = s.github.calls().pop().unwrap();
    assert_eq!(removal.method, "DELETE");
    assert_eq!(
        removal.path,
        "/repos/acme/shop/issues/42/labels/promoted:%20staging%2Feu"
    );

    // Already gone: GitHub answers 404, which is what removing wanted.
    api.remove_label(&pr(), label).await.unwrap();
    assert_eq!(s.github.count("DELETE", &format!("{LABELS}/*")), 2);
}

#[tokio::test]
async fn commit_statuses_carry_state_context_link_and_a_short_description() {
    let s = standins().await;
    let api = api(&s);
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

    let statuses = s.journal.statuses(SHA);
    for ((_, name), sent) in cases.iter().zip(&statuses) {
        assert_eq!(sent.state, *name);
        assert_eq!(sent.context, "promotion/staging/smoke");
        assert_eq!(
            sent.target_url.as_deref(),
            Some("https://github.example/acme/shop/actions/runs/7")
        );
    }
    assert_eq!(
        statuses[4].description.as_deref().unwrap().chars().count(),
        140
    );
    assert!(statuses[5].target_url.is_none());
    assert!(
        s.github.calls()[5].json().get("target_url").is_none(),
        "no empty link is sent"
    );
    assert_eq!(
        s.github.calls()[0].path,
        format!("/repos/acme/shop/statuses/{SHA}")
    );
}

#[tokio::test]
async fn bad_credentials_are_permanent_and_name_the_connection_and_call() {
    let s = standins().await;
    let mut c = connection_to(&s, &s.github_url);
    c.credentials = Credentials::Github(GitHubCredentials::Token(SecretString::new("ghp_wrong")));
    let api = api_with(&c);
    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(&format!(
            "connection github-main: 401 Unauthorized from POST {LABELS}"
        )),
        "{}",
        err.message
    );
    assert!(err.message.contains("Bad credentials"), "{}", err.message);
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
    let s = standins().await;
    s.github.script(
        "POST",
        &format!("/repos/acme/shop/statuses/{SHA}"),
        [Reply::status(404)
            .json(&json!({"message": "Not Found", "documentation_url": "https://docs.github.com/rest/commits/statuses#create-a-commit-status", "status": "404"}))
            .into()],
    );
    let err = api(&s)
        .set_commit_status(&pr(), SHA, &status(CommitState::Success, "ok"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("404 Not Found"), "{}", err.message);
}

#[tokio::test]
async fn rate_limits_return_their_wait_and_writes_are_not_resent() {
    let s = standins().await;
    s.github.script(
        "POST",
        LABELS,
        [
            Reply::status(429)
                .header("retry-after", "17")
                .json(&json!({"message": "API rate limit exceeded"}))
                .into(),
            Reply::status(403)
                .header("retry-after", "60")
                .json(&json!({"message": "You have exceeded a secondary rate limit."}))
                .into(),
        ],
    );
    let api = api(&s);
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
    assert_eq!(s.github.count("POST", LABELS), 2);
    assert!(labels(&s).is_empty());
    api.add_label(&pr(), "promoted").await.unwrap();
    assert_eq!(labels(&s), ["promoted"]);
}

#[tokio::test]
async fn server_errors_on_writes_are_transient_for_the_engine() {
    let s = standins().await;
    let path = format!("/repos/acme/shop/statuses/{SHA}");
    s.github.script(
        "POST",
        &path,
        [Reply::status(503).body("<html>unavailable</html>").into()],
    );
    let err = api(&s)
        .set_commit_status(&pr(), SHA, &status(CommitState::Pending, "running"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("<html>unavailable</html>"),
        "{}",
        err.message
    );
    assert_eq!(s.github.count("POST", &path), 1);
}

#[tokio::test]
async fn malformed_error_bodies_still_give_clear_errors() {
    let s = standins().await;
    s.github.script(
        "POST",
        LABELS,
        [Reply::status(422)
            .body("{\"message\": \"Validation Fa")
            .into()],
    );
    let err = api(&s).add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("422"), "{}", err.message);
    assert!(err.message.contains("Validation Fa"), "{}", err.message);
}

#[tokio::test]
async fn a_server_that_never_answers_times_out() {
    let s = standins().await;
    s.github
        .script("DELETE", &format!("{LABELS}/promoted"), [Fault::Hang]);
    let mut c = connection_to(&s, &s.github_url);
    c.config.http.request_timeout = Duration::from_millis(100);
    let err = api_with(&c)
        .remove_label(&pr(), "promoted")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("timed out"), "{}", err.message);
    assert_eq!(s.github.count("DELETE", &format!("{LABELS}/promoted")), 1);
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let s = standins().await;
    let err = api_with(&connection_to(&s, &refused()))
        .add_label(&pr(), "promoted")
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(err.message.contains("could not connect"), "{}", err.message);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let s = standins().await;
    s.github.script(
        "POST",
        LABELS,
        [Reply::status(301)
            .header(
                "location",
                "https://elsewhere.example/repos/acme/shop2/issues/42/labels",
            )
            .json(&json!({"message": "Moved Permanently"}))
            .into()],
    );
    let err = api(&s).add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("elsewhere.example"), "{}", err.message);
    assert_eq!(s.github.calls().len(), 1);
}

#[tokio::test]
async fn github_enterprise_base_urls_work() {
    let s = standins().await;
    let api = api_with(&connection_to(&s, &format!("{}/api/v3", s.github_url)));
    api.add_label(&pr(), "promoted").await.unwrap();
    api.set_commit_status(&pr(), SHA, &status(CommitState::Success, "ok"))
        .await
        .unwrap();
    api.remove_label(&pr(), "promoted").await.unwrap();
    let paths: Vec<String> = s.github.calls().into_iter().map(|c| c.path).collect();
    assert_eq!(
        paths,
        [
            format!("/api/v3{LABELS}"),
            format!("/api/v3/repos/acme/shop/statuses/{SHA}"),
            format!("/api/v3{LABELS}/promoted"),
        ]
    );
    assert!(labels(&s).is_empty());
}

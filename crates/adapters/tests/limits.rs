//! Bounded reads: every answer body is read up to the connection's `maxBodySize`,
//! and a larger one is a clear error, whichever service sent it.

mod support;

use promotion_adapters::{
    ConnectionKind, GitHubActionsRunner, GitHubApi, GitHubConnection, GitLabRunner, JenkinsRunner,
};
use promotion_api::Provider;
use promotion_core::ports::{
    ErrorKind, GitHubClient, PullRequestRef, RunRef, TestRunner, TriggerRequest,
};
use promotion_standins::{
    Fault, GITHUB_ACTIONS_SECRET, GITHUB_SECRET, GITLAB_SECRET, JENKINS_SECRET, Reply,
};
use std::collections::BTreeMap;
use support::standins;

const LIMIT: usize = 1024;

fn run(provider: Provider, job: &str, id: &str) -> RunRef {
    RunRef {
        correlation_id: None,
        provider,
        connection: None,
        job: job.into(),
        run_id: id.into(),
    }
}

/// A JSON body of `len` bytes, well-formed, so only its size is wrong.
fn big_json(len: usize) -> String {
    format!(r#"{{"padding": "{}"}}"#, "x".repeat(len))
}

#[tokio::test]
async fn an_answer_larger_than_the_limit_is_a_clear_permanent_error() {
    let s = standins().await;

    let mut c = support::connection(
        &s,
        "jenkins",
        ConnectionKind::Jenkins,
        &s.jenkins_url,
        JENKINS_SECRET,
    );
    c.config.http.max_body_bytes = LIMIT;
    let jenkins = JenkinsRunner::new(&c).unwrap();
    let path = "/job/gate/1/api/json";
    s.jenkins.script(
        "GET",
        path,
        [Reply::status(200).body(big_json(LIMIT)).into()],
    );
    let err = jenkins
        .status(&run(Provider::Jenkins, "gate", "build:1"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert_eq!(
        err.message,
        format!(
            "connection jenkins: the answer (200 OK) to GET {path} is larger than {LIMIT} bytes (setting maxBodySize)"
        )
    );
    // Not retried: the same answer would come again.
    assert_eq!(s.jenkins.count("GET", path), 1);

    let mut c = support::connection(
        &s,
        "gitlab",
        ConnectionKind::Gitlab,
        &s.gitlab_url,
        GITLAB_SECRET,
    );
    c.config.http.max_body_bytes = LIMIT;
    let gitlab = GitLabRunner::new(&c).unwrap();
    let path = "/api/v4/projects/app/pipelines/5";
    s.gitlab.script(
        "GET",
        path,
        [Reply::status(200).body(big_json(LIMIT)).into()],
    );
    let err = gitlab
        .status(&run(Provider::Gitlab, "app", "5"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("larger than 1024 bytes"),
        "{}",
        err.message
    );

    let mut c = support::connection(
        &s,
        "github",
        ConnectionKind::Github,
        &s.github_url,
        GITHUB_SECRET,
    );
    c.config.http.max_body_bytes = LIMIT;
    let api = GitHubApi::new(GitHubConnection::new(&c).unwrap());
    let path = "/repos/acme/shop/issues/1/labels";
    s.github.script(
        "POST",
        path,
        [Reply::status(200).body(big_json(LIMIT)).into()],
    );
    let pr = PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 1,
    };
    let err = api.add_label(&pr, "big").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.contains("larger than 1024 bytes"),
        "{}",
        err.message
    );
}

#[tokio::test]
async fn a_huge_error_page_is_cut_at_the_limit_and_its_status_still_decides() {
    let s = standins().await;
    let mut c = support::connection(
        &s,
        "github",
        ConnectionKind::Github,
        &s.github_url,
        GITHUB_SECRET,
    );
    c.config.http.max_body_bytes = LIMIT;
    let api = GitHubApi::new(GitHubConnection::new(&c).unwrap());
    let path = "/repos/acme/shop/issues/1/labels";
    s.github.script(
        "POST",
        path,
        [Reply::status(503)
            .body(format!("<html>{}</html>", "x".repeat(10 * LIMIT)))
            .into()],
    );
    let pr = PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 1,
    };
    let err = api.add_label(&pr, "big").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Transient);
    assert!(
        err.message.contains("503 Service Unavailable"),
        "{}",
        err.message
    );
    assert!(err.message.len() < 2 * LIMIT, "{}", err.message);
}

#[tokio::test]
async fn an_answer_just_within_the_limit_is_read() {
    let s = standins().await;
    let mut c = support::connection(
        &s,
        "jenkins",
        ConnectionKind::Jenkins,
        &s.jenkins_url,
        JENKINS_SECRET,
    );
    let body = r#"{"building": false, "result": "SUCCESS", "number": 1}"#;
    c.config.http.max_body_bytes = body.len();
    let jenkins = JenkinsRunner::new(&c).unwrap();
    s.jenkins.script(
        "GET",
        "/job/gate/1/api/json",
        [Reply::status(200).body(body).into()],
    );
    let status = jenkins
        .status(&run(Provider::Jenkins, "gate", "build:1"))
        .await
        .unwrap();
    assert_eq!(status.message.as_deref(), Some("SUCCESS"));
}

#[tokio::test]
async fn a_trigger_whose_answer_is_too_large_is_ambiguous() {
    let s = standins().await;
    let mut c = support::connection(
        &s,
        "github-actions",
        ConnectionKind::GithubActions,
        &s.github_url,
        GITHUB_ACTIONS_SECRET,
    );
    c.config.http.max_body_bytes = LIMIT;
    c.config.github.repository = Some("acme/shop".parse().unwrap());
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&c).unwrap());
    let dispatches = "/repos/acme/shop/actions/workflows/gate.yml/dispatches";
    // The run starts; the answer that says so is too large to read.
    s.github.script(
        "POST",
        dispatches,
        [Fault::AfterEffect(Reply::status(200).body(big_json(LIMIT)))],
    );
    let req = TriggerRequest {
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        git_ref: Some("main".into()),
        parameters: BTreeMap::new(),
        correlation_id: "prc-big".into(),
    };
    let err = runner.trigger(&req).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Ambiguous);
    assert!(err.message.contains("maxBodySize"), "{}", err.message);
    assert_eq!(s.github.count("POST", dispatches), 1);
    assert_eq!(s.journal.trigger_count(), 1);
}

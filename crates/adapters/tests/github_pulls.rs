//! GitHubPullRequests against the GitHub stand-in (crates/standins), which answers
//! `GET /repos/{owner}/{repo}/pulls/{number}` and `GET /repos/{owner}/{repo}/pulls`
//! with pull request objects shaped as GitHub's REST reference documents them
//! (docs.github.com/rest/pulls/pulls#get-a-pull-request and #list-pull-requests),
//! paged with a `Link` header as GitHub's pagination guide describes
//! (docs.github.com/rest/using-the-rest-api/using-pagination-in-the-rest-api).

mod support;

use promotion_adapters::{
    Connection, ConnectionKind, Credentials, GitHubConnection, GitHubCredentials,
    GitHubPullRequests, SecretString,
};
use promotion_core::ports::{ErrorKind, PullRequestReader, PullRequestRef};
use promotion_standins::{GITHUB_SECRET, StandIns};
use support::standins;

const REPO: &str = "acme/shop";
const SHA1: &str = "6dcb09b5b57875f334f61aebed695e2e4193db5e";
const SHA2: &str = "e5bd3914e2e596debea16f433f57875b5b90bcd6";

fn connection(standins: &StandIns) -> Connection {
    let mut c = support::connection(
        standins,
        "github",
        ConnectionKind::Github,
        &standins.github_url,
        GITHUB_SECRET,
    );
    // Keep failing reads quick: retries are the HTTP kernel's own tests.
    c.config.http.read_retries = 0;
    c
}

fn reader_of(c: &Connection) -> GitHubPullRequests {
    GitHubPullRequests::new(GitHubConnection::new(c).expect("connection"))
}

fn reader(standins: &StandIns) -> GitHubPullRequests {
    reader_of(&connection(standins))
}

fn reader_with(standins: &StandIns, token: &str) -> GitHubPullRequests {
    let mut c = connection(standins);
    c.credentials = Credentials::Github(GitHubCredentials::Token(SecretString::new(token)));
    reader_of(&c)
}

fn pr(number: u64) -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number,
    }
}

#[tokio::test]
async fn one_pull_request_is_read_with_head_state_and_labels() {
    let s = standins().await;
    s.pull_requests.open(REPO, 1347, SHA1);
    s.pull_requests.label(REPO, 1347, "team:payments");
    let got = reader(&s)
        .pull_request(&pr(1347))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(got.number, 1347);
    assert_eq!(got.head_sha, SHA1);
    assert!(got.open && !got.merged);
    assert_eq!(got.labels, ["team:payments"]);
    assert_eq!(got.head_repository.as_deref(), Some(REPO));

    s.pull_requests.push(REPO, 1347, SHA2);
    s.pull_requests.merge(REPO, 1347);
    let merged = reader(&s)
        .pull_request(&pr(1347))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(merged.head_sha, SHA2);
    assert!(!merged.open && merged.merged);
}

#[tokio::test]
async fn a_fork_names_its_head_repository_and_a_deleted_fork_none() {
    let s = standins().await;
    s.pull_requests
        .open_from(REPO, 7, SHA1, Some("mallory/shop"));
    s.pull_requests.open_from(REPO, 8, SHA1, None);
    let r = reader(&s);
    let fork = r
        .pull_request(&pr(7))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(fork.head_repository.as_deref(), Some("mallory/shop"));
    let gone = r
        .pull_request(&pr(8))
        .await
        .expect("read")
        .expect("present");
    assert_eq!(gone.head_repository, None);
}

#[tokio::test]
async fn a_missing_pull_request_is_none_and_bad_credentials_an_error() {
    let s = standins().await;
    assert_eq!(reader(&s).pull_request(&pr(404)).await.expect("read"), None);
    let err = reader_with(&s, "ghp_wrong")
        .pull_request(&pr(1))
        .await
        .expect_err("401");
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(err.message.contains("401"), "{}", err.message);
    assert!(
        !err.message.contains("ghp_wrong"),
        "no credentials in errors"
    );
    let err = reader_with(&s, "ghp_wrong")
        .open_pull_requests("acme", "shop")
        .await
        .expect_err("401");
    assert_eq!(err.kind, ErrorKind::Permanent);
}

#[tokio::test]
async fn every_page_of_open_pull_requests_is_read() {
    let s = standins().await;
    for n in 1..=250 {
        s.pull_requests.open(REPO, n, SHA1);
    }
    s.pull_requests.close(REPO, 17);
    s.pull_requests.open("acme/other", 1, SHA2);
    let open = reader(&s)
        .open_pull_requests("acme", "shop")
        .await
        .expect("list");
    let mut numbers: Vec<u64> = open.iter().map(|p| p.number).collect();
    numbers.sort_unstable();
    let want: Vec<u64> = (1..=250).filter(|n| *n != 17).collect();
    assert_eq!(
        numbers, want,
        "three pages of 100, closed and other repositories left out"
    );
    assert!(open.iter().all(|p| p.open && p.head_sha == SHA1));
}

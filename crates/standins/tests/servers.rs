//! Each stand-in driven by the real adapter that talks to the real service.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use promotion_adapters::{
    Connection, ConnectionConfig, ConnectionKind, Credentials, GitHubActionsRunner, GitHubApi,
    GitHubConnection, GitHubCredentials, GitLabRunner, JenkinsRunner, SecretRef, SecretString,
};
use promotion_api::Provider;
use promotion_core::ports::{
    CommitState, CommitStatus, ErrorKind, GitHubClient, PullRequestRef, RunHandle, RunRef,
    RunState, TestRunner, TriggerRequest,
};
use promotion_standins::{
    Callbacks, CiScript, JournalEntry, Outcome, StandInConfig, StandIns, Triggered,
};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const QUICK: Duration = Duration::from_millis(50);
const NEVER: Duration = Duration::from_secs(3600);

async fn start(script: &CiScript, callbacks: Option<Callbacks>) -> StandIns {
    StandIns::start(StandInConfig {
        script: script.clone(),
        callbacks,
    })
    .await
    .expect("stand-ins start")
}

fn secret_data(s: &StandIns, name: &str) -> BTreeMap<String, Vec<u8>> {
    s.secrets()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        .expect("the secret exists")
}

fn ci_connection(s: &StandIns, kind: ConnectionKind, secret: &str) -> Connection {
    let url = match kind {
        ConnectionKind::Jenkins => &s.jenkins_url,
        _ => &s.gitlab_url,
    };
    let name = kind.to_string();
    let secret_ref = SecretRef {
        namespace: "test".into(),
        name: secret.into(),
    };
    Connection {
        config: ConnectionConfig::new(&name, kind, url).expect("config"),
        credentials: Credentials::from_secret(&name, kind, &secret_ref, &secret_data(s, secret))
            .expect("the stand-ins' own secret is valid"),
    }
}

fn github_connection(s: &StandIns, secret: &str) -> GitHubConnection {
    let secret_ref = SecretRef {
        namespace: "test".into(),
        name: secret.into(),
    };
    let kind = ConnectionKind::GithubActions;
    let credentials =
        Credentials::from_secret("github", kind, &secret_ref, &secret_data(s, secret))
            .expect("credentials");
    let mut config = ConnectionConfig::new("github", kind, &s.github_url).expect("config");
    config.github.repository = Some("acme/shop".parse().expect("repository"));
    GitHubConnection::new(&Connection {
        config,
        credentials,
    })
    .expect("connection")
}

fn request(provider: Provider, job: &str, git_ref: Option<&str>, id: &str) -> TriggerRequest {
    TriggerRequest {
        provider,
        connection: None,
        job: job.into(),
        git_ref: git_ref.map(str::to_owned),
        parameters: BTreeMap::from([
            ("SHA".to_string(), "abc123".to_string()),
            ("PROMOTION_CORRELATION_ID".to_string(), id.to_string()),
        ]),
        correlation_id: id.into(),
    }
}

fn run_ref(req: &TriggerRequest, handle: &RunHandle) -> RunRef {
    RunRef {
        // The real adapters check the run carries it before reading or cancelling.
        correlation_id: Some(req.correlation_id.clone()),
        provider: req.provider,
        connection: None,
        job: req.job.clone(),
        run_id: handle.run_id.clone(),
    }
}

/// Polls like the engine does (following a new run id) until the run is final.
async fn until_final(runner: &dyn TestRunner, mut run: RunRef) -> (RunState, RunRef) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let status = runner.status(&run).await.expect("status");
        if let Some(id) = status.run_id {
            run.run_id = id;
        }
        if status.state.is_final() {
            return (status.state, run);
        }
        assert!(Instant::now() < deadline, "{run:?} never became final");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn trigger_of(s: &StandIns, id: &str) -> Triggered {
    s.journal
        .triggers()
        .into_iter()
        .find(|t| t.correlation_id.as_deref() == Some(id))
        .expect("the trigger is in the journal")
}

#[tokio::test]
async fn jenkins_answers_the_jenkins_adapter() {
    let script = CiScript::new(QUICK);
    script.set("team-a/fails", Outcome::Fail, QUICK);
    script.set("team-a/slow", Outcome::Pass, NEVER);
    let s = start(&script, None).await;
    let runner = JenkinsRunner::new(&ci_connection(
        &s,
        ConnectionKind::Jenkins,
        "jenkins-credentials",
    ))
    .expect("runner");

    let req = request(Provider::Jenkins, "team-a/smoke", None, "prc-pass");
    let handle = runner.trigger(&req).await.expect("trigger");
    assert_eq!(handle.run_id, "queue:1");
    let (state, run) = until_final(&runner, run_ref(&req, &handle)).await;
    assert_eq!((state, run.run_id.as_str()), (RunState::Passed, "build:1"));
    let t = trigger_of(&s, "prc-pass");
    assert_eq!(
        (t.provider, t.job.as_str(), t.run_id.as_str()),
        ("jenkins", "team-a/smoke", "build:1")
    );
    let status = runner.status(&run).await.expect("status");
    assert_eq!(status.url.as_deref(), Some(t.url.as_str()));
    let found = find_all(&runner, &req).await.expect("found");
    assert_eq!(found.run_id, "build:1");

    let req = request(Provider::Jenkins, "team-a/fails", None, "prc-fail");
    let handle = runner.trigger(&req).await.expect("trigger");
    assert_eq!(
        until_final(&runner, run_ref(&req, &handle)).await.0,
        RunState::Failed
    );

    // Cancelled while still in the queue, and after it started.
    let req = request(Provider::Jenkins, "team-a/slow", None, "prc-queued");
    let handle = runner.trigger(&req).await.expect("trigger");
    assert_eq!(find_all(&runner, &req).await, Some(handle.clone()));
    let queued = run_ref(&req, &handle);
    let status = runner.status(&queued).await.expect("status");
    let started = RunRef {
        run_id: status.run_id.expect("the item left the queue"),
        ..queued
    };
    runner.cancel(&started).await.expect("cancel");
    assert_eq!(
        runner.status(&started).await.expect("status").state,
        RunState::Cancelled
    );
    let req = request(Provider::Jenkins, "team-a/slow", None, "prc-queued-2");
    let handle = runner.trigger(&req).await.expect("trigger");
    runner
        .cancel(&run_ref(&req, &handle))
        .await
        .expect("cancel in queue");
    assert_eq!(
        runner
            .status(&run_ref(&req, &handle))
            .await
            .expect("status")
            .state,
        RunState::Cancelled
    );

    let finished = s.journal.finished();
    let outcomes: Vec<(&str, bool, bool)> = finished
        .iter()
        .map(|f| (f.job.as_str(), f.passed, f.cancelled))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("team-a/smoke", true, false),
            ("team-a/fails", false, false),
            ("team-a/slow", false, true),
            ("team-a/slow", false, true),
        ]
    );

    let mut wrong = secret_data(&s, "jenkins-credentials");
    wrong.insert("token".into(), b"not-the-token".to_vec());
    let bad = JenkinsRunner::new(&Connection {
        config: ConnectionConfig::new("jenkins", ConnectionKind::Jenkins, &s.jenkins_url)
            .expect("config"),
        credentials: Credentials::from_secret(
            "jenkins",
            ConnectionKind::Jenkins,
            &SecretRef {
                namespace: "t".into(),
                name: "x".into(),
            },
            &wrong,
        )
        .expect("credentials"),
    })
    .expect("runner");
    let err = bad
        .trigger(&request(Provider::Jenkins, "team-a/smoke", None, "x"))
        .await
        .expect_err("401");
    assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
    assert!(err.message.contains("401"), "{err}");
}

#[tokio::test]
async fn gitlab_answers_the_gitlab_adapter() {
    let script = CiScript::new(QUICK);
    script.set("team-a/slow", Outcome::Pass, NEVER);
    let s = start(&script, None).await;
    let runner = GitLabRunner::new(&ci_connection(
        &s,
        ConnectionKind::Gitlab,
        "gitlab-credentials",
    ))
    .expect("runner");

    let req = request(Provider::Gitlab, "team-a/e2e", Some("main"), "prc-gl");
    let handle = runner.trigger(&req).await.expect("trigger");
    let t = trigger_of(&s, "prc-gl");
    assert_eq!(handle.url.as_deref(), Some(t.url.as_str()));
    assert_eq!(handle.run_id, t.run_id);
    assert!(t.url.starts_with(&s.gitlab_url), "{}", t.url);
    assert_eq!(
        until_final(&runner, run_ref(&req, &handle)).await.0,
        RunState::Passed
    );
    assert_eq!(find_all(&runner, &req).await, Some(handle));
    let other = request(Provider::Gitlab, "team-a/e2e", Some("main"), "prc-none");
    assert_eq!(find_all(&runner, &other).await, None);

    let req = request(Provider::Gitlab, "team-a/slow", Some("main"), "prc-slow");
    let handle = runner.trigger(&req).await.expect("trigger");
    assert_eq!(
        runner
            .status(&run_ref(&req, &handle))
            .await
            .expect("status")
            .state,
        RunState::Running
    );
    runner
        .cancel(&run_ref(&req, &handle))
        .await
        .expect("cancel");
    assert_eq!(
        runner
            .status(&run_ref(&req, &handle))
            .await
            .expect("status")
            .state,
        RunState::Cancelled
    );
    // The web link leads to a page.
    let page = reqwest::get(&t.url).await.expect("page");
    assert_eq!(page.status(), StatusCode::OK);
}

#[tokio::test]
async fn github_answers_the_actions_runner_and_the_github_client() {
    let script = CiScript::new(QUICK);
    script.set("contract.yml", Outcome::Fail, QUICK);
    let s = start(&script, None).await;
    let runner = GitHubActionsRunner::new(github_connection(&s, "github-actions-credentials"));

    let req = request(
        Provider::GithubActions,
        "contract.yml",
        Some("main"),
        "prc-gh",
    );
    let handle = runner.trigger(&req).await.expect("trigger");
    let t = trigger_of(&s, "prc-gh");
    assert_eq!(
        (handle.run_id.as_str(), handle.url.as_deref()),
        (t.run_id.as_str(), Some(t.url.as_str()))
    );
    assert_eq!(
        until_final(&runner, run_ref(&req, &handle)).await.0,
        RunState::Failed
    );
    assert_eq!(find_all(&runner, &req).await, Some(handle.clone()));
    // Cancelling a completed run is not an error (GitHub answers 409).
    runner
        .cancel(&run_ref(&req, &handle))
        .await
        .expect("cancel");

    let github = GitHubApi::new(github_connection(&s, "github-credentials"));
    let pr = PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 42,
    };
    let mut feed = s.journal.subscribe();
    github
        .add_label(&pr, "promoted-to-staging")
        .await
        .expect("label");
    github
        .add_label(&pr, "promoted-to-staging")
        .await
        .expect("label again");
    github
        .add_label(&pr, "promoted-to-prod")
        .await
        .expect("label");
    github
        .remove_label(&pr, "promoted-to-prod")
        .await
        .expect("unlabel");
    github
        .remove_label(&pr, "never-there")
        .await
        .expect("404 is fine");
    assert_eq!(
        s.journal.labels("acme", "shop", 42),
        ["promoted-to-staging"]
    );
    let status = CommitStatus {
        context: "promotion/dev/contract".into(),
        state: CommitState::Success,
        target_url: Some(t.url.clone()),
        description: "passed".into(),
    };
    github
        .set_commit_status(&pr, "abc123", &status)
        .await
        .expect("status");
    let posted = s.journal.statuses("abc123");
    assert_eq!(posted.len(), 1);
    assert_eq!(
        (
            posted[0].context.as_str(),
            posted[0].state.as_str(),
            posted[0].target_url.as_deref()
        ),
        ("promotion/dev/contract", "success", Some(t.url.as_str()))
    );
    let mut kinds = Vec::new();
    while let Ok(e) = feed.try_recv() {
        kinds.push(match e {
            JournalEntry::Label(l) => format!("label {} {}", l.label, l.added),
            JournalEntry::CommitStatus(c) => format!("status {}", c.status.context),
            other => format!("{other:?}"),
        });
    }
    assert_eq!(
        kinds,
        [
            "label promoted-to-staging true",
            "label promoted-to-prod true",
            "label promoted-to-prod false",
            "status promotion/dev/contract"
        ]
    );

    let wrong = GitHubConnection::new(&Connection {
        config: ConnectionConfig::new("github", ConnectionKind::Github, &s.github_url)
            .expect("config"),
        credentials: Credentials::Github(GitHubCredentials::Token(SecretString::new("ghp_wrong"))),
    })
    .expect("connection");
    let err = GitHubApi::new(wrong)
        .add_label(&pr, "x")
        .await
        .expect_err("401");
    assert!(err.message.contains("401"), "{err}");
}

type Seen = Arc<Mutex<Vec<(String, HeaderMap, Bytes)>>>;

async fn record(
    State(seen): State<Seen>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    seen.lock()
        .expect("lock")
        .push((uri.path().to_owned(), headers, body));
    StatusCode::ACCEPTED
}

#[tokio::test]
async fn finished_runs_are_announced_as_each_ci_system_does() {
    let seen: Seen = Arc::default();
    let app = axum::Router::new()
        .fallback(record)
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    let script = CiScript::new(QUICK);
    let s = start(
        &script,
        Some(Callbacks {
            webhook_base: format!("http://{addr}"),
            github_secret: "gh-secret".into(),
            gitlab_token: "gl-token".into(),
            jenkins_token: "jk-token".into(),
        }),
    )
    .await;
    let jenkins = JenkinsRunner::new(&ci_connection(
        &s,
        ConnectionKind::Jenkins,
        "jenkins-credentials",
    ))
    .expect("runner");
    let gitlab = GitLabRunner::new(&ci_connection(
        &s,
        ConnectionKind::Gitlab,
        "gitlab-credentials",
    ))
    .expect("runner");
    let actions = GitHubActionsRunner::new(github_connection(&s, "github-actions-credentials"));
    jenkins
        .trigger(&request(Provider::Jenkins, "a/b", None, "c1"))
        .await
        .expect("jenkins");
    gitlab
        .trigger(&request(Provider::Gitlab, "a/b", Some("main"), "c2"))
        .await
        .expect("gitlab");
    actions
        .trigger(&request(
            Provider::GithubActions,
            "w.yml",
            Some("main"),
            "c3",
        ))
        .await
        .expect("actions");

    let deadline = Instant::now() + Duration::from_secs(20);
    while s.journal.callbacks().len() < 3 {
        assert!(
            Instant::now() < deadline,
            "callbacks: {:?}",
            s.journal.callbacks()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(s.journal.callbacks().iter().all(|c| c.status == Some(202)));
    let seen = seen.lock().expect("lock").clone();
    let by_path = |p: &str| {
        seen.iter()
            .find(|(path, _, _)| path == p)
            .cloned()
            .expect(p)
    };
    let header = |h: &HeaderMap, k: &str| {
        h.get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };

    let (_, h, body) = by_path("/webhooks/github");
    assert_eq!(header(&h, "x-github-event"), "workflow_run");
    let mut mac = Hmac::<Sha256>::new_from_slice(b"gh-secret").expect("key");
    mac.update(&body);
    assert_eq!(
        header(&h, "x-hub-signature-256"),
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(v["workflow_run"]["conclusion"], "success");
    assert_eq!(
        v["workflow_run"]["id"].to_string(),
        trigger_of(&s, "c3").run_id
    );

    let (_, h, body) = by_path("/webhooks/gitlab");
    assert_eq!(
        (header(&h, "x-gitlab-event"), header(&h, "x-gitlab-token")),
        ("Pipeline Hook".into(), "gl-token".into())
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        v["object_attributes"]["id"].to_string(),
        trigger_of(&s, "c2").run_id
    );

    let (_, h, body) = by_path("/webhooks/jenkins");
    assert_eq!(header(&h, "x-promotion-token"), "jk-token");
    let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(
        format!("build:{}", v["build"]["number"]),
        trigger_of(&s, "c1").run_id
    );
}

#[tokio::test]
async fn the_connections_file_names_every_server_and_secret() {
    let s = start(&CiScript::new(QUICK), None).await;
    let file: serde_yaml::Value = serde_yaml::from_str(&s.connections_yaml()).expect("yaml");
    let connections = file["connections"].as_sequence().expect("a list");
    let kinds: Vec<(&str, &str, &str)> = connections
        .iter()
        .map(|c| {
            (
                c["kind"].as_str().unwrap_or_default(),
                c["url"].as_str().unwrap_or_default(),
                c["secretRef"]["name"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("jenkins", s.jenkins_url.as_str(), "jenkins-credentials"),
            (
                "github-actions",
                s.github_url.as_str(),
                "github-actions-credentials"
            ),
            ("gitlab", s.gitlab_url.as_str(), "gitlab-credentials"),
            ("github", s.github_url.as_str(), "github-credentials"),
        ]
    );
    let secrets: Vec<String> = s.secrets().into_iter().map(|(n, _)| n).collect();
    assert!(
        kinds
            .iter()
            .all(|(_, _, name)| secrets.iter().any(|n| n == name))
    );
    // Nothing answers once the stand-ins are dropped.
    let url = format!("{}/queue/api/json", s.jenkins_url);
    drop(s);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(reqwest::get(&url).await.is_err());
}

/// `find` over the whole listing: the run, or `None` when the stand-in has none.
async fn find_all(
    runner: &impl TestRunner,
    req: &TriggerRequest,
) -> Option<promotion_core::ports::RunHandle> {
    let since = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    match runner.find(req, since).await.expect("find") {
        promotion_core::ports::Found::Run(h) => Some(h),
        promotion_core::ports::Found::Absent => None,
        promotion_core::ports::Found::NotSure(why) => panic!("find is not sure: {why}"),
    }
}

/// A run id of another tracker's run (another correlation id) is neither read nor
/// cancelled by any of the three CI adapters; the run goes on.
#[tokio::test]
async fn no_adapter_reads_or_cancels_a_run_that_carries_another_correlation_id() {
    let script = CiScript::new(QUICK);
    for job in ["team-a/slow", "team-a/slow-e2e", "slow.yml"] {
        script.set(job, Outcome::Pass, NEVER);
    }
    let s = start(&script, None).await;
    let jenkins = JenkinsRunner::new(&ci_connection(
        &s,
        ConnectionKind::Jenkins,
        "jenkins-credentials",
    ))
    .expect("jenkins");
    let gitlab = GitLabRunner::new(&ci_connection(
        &s,
        ConnectionKind::Gitlab,
        "gitlab-credentials",
    ))
    .expect("gitlab");
    let actions = GitHubActionsRunner::new(github_connection(&s, "github-actions-credentials"));
    let cases: [(&dyn TestRunner, TriggerRequest); 3] = [
        (
            &jenkins,
            request(Provider::Jenkins, "team-a/slow", None, "prc-team-a-1"),
        ),
        (
            &gitlab,
            request(
                Provider::Gitlab,
                "team-a/slow-e2e",
                Some("main"),
                "prc-team-a-2",
            ),
        ),
        (
            &actions,
            request(
                Provider::GithubActions,
                "slow.yml",
                Some("main"),
                "prc-team-a-3",
            ),
        ),
    ];
    for (runner, req) in cases {
        let handle = runner.trigger(&req).await.expect("trigger");
        let theirs = run_ref(&req, &handle);
        // Let a Jenkins item become its build, so both kinds of id are tried.
        let theirs = match runner.status(&theirs).await.expect("status").run_id {
            Some(id) => RunRef {
                run_id: id,
                ..theirs
            },
            None => theirs,
        };
        let forged = RunRef {
            correlation_id: Some("prc-team-b".into()),
            ..theirs.clone()
        };
        let err = runner.status(&forged).await.expect_err("not ours to read");
        assert_eq!(err.kind, ErrorKind::Permanent, "{err}");
        assert!(
            err.message
                .contains("does not carry correlation id prc-team-b"),
            "{err}"
        );
        let err = runner
            .cancel(&forged)
            .await
            .expect_err("not ours to cancel");
        assert!(
            err.message.contains("does not carry correlation id"),
            "{err}"
        );
        let still = runner
            .status(&theirs)
            .await
            .expect("the owner still reads it");
        assert!(
            !still.state.is_final(),
            "{}: the run goes on: {still:?}",
            req.job
        );
    }
    assert!(
        s.journal.finished().is_empty(),
        "{:#?}",
        s.journal.finished()
    );
}

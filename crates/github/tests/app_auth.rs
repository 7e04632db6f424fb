//! GitHub App auth against a local fake: the fake verifies the JWT with the
//! App's public key; installation tokens are cached and refreshed.

mod common;

use axum::http::Method;
use common::{APP_ID, Fake, INSTALLATION_ID, PRIVATE_KEY, Reply, TOKEN};
use promotion_api::Provider;
use promotion_core::ports::{ErrorKind, GitHubClient, PullRequestRef, RunRef, TestRunner};
use promotion_github::{
    AppCredentials, Credentials, GitHubActionsRunner, GitHubApi, GitHubConnection, HttpSettings,
};
use std::collections::BTreeMap;

fn pr() -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 7,
    }
}

fn run_ref(id: u64) -> RunRef {
    RunRef {
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        run_id: id.to_string(),
    }
}

fn issued(fake: &Fake) -> Vec<String> {
    fake.state.lock().unwrap().issued.clone()
}

fn api_authorizations(fake: &Fake) -> Vec<String> {
    fake.seen()
        .into_iter()
        .filter(|s| !s.path.contains("/access_tokens"))
        .filter_map(|s| s.authorization)
        .collect()
}

#[tokio::test]
async fn the_jwt_is_verified_and_the_installation_token_cached() {
    let fake = Fake::start("").await;
    let connection = GitHubConnection::new(&fake.app_config()).unwrap();
    let runner = GitHubActionsRunner::new(connection.clone());
    let api = GitHubApi::new(connection);
    let id = fake.add_run("gate.yml", "gate prc-app", "in_progress", None);

    runner.status(&run_ref(id)).await.unwrap();
    api.add_label(&pr(), "promoted").await.unwrap();
    runner.status(&run_ref(id)).await.unwrap();

    assert_eq!(issued(&fake), ["ghs_installation_1"]);
    assert_eq!(
        api_authorizations(&fake),
        ["Bearer ghs_installation_1"; 3],
        "every API call carries the one cached installation token"
    );
    let exchange = fake
        .seen()
        .into_iter()
        .find(|s| s.path.ends_with("/access_tokens"))
        .unwrap();
    assert_eq!(
        exchange.path,
        format!("/app/installations/{INSTALLATION_ID}/access_tokens")
    );
    assert_eq!(exchange.method, Method::POST);
    let claims = fake.state.lock().unwrap().jwt_claims[0].clone();
    assert_eq!(claims["iss"], APP_ID);
    let (iat, exp) = (
        claims["iat"].as_i64().unwrap(),
        claims["exp"].as_i64().unwrap(),
    );
    let now = chrono::Utc::now().timestamp();
    assert!(iat <= now - 59, "iat is backdated a minute");
    assert!(exp - iat <= 600, "GitHub takes at most ten minutes");
}

#[tokio::test]
async fn an_expired_installation_token_is_refreshed() {
    let fake = Fake::start("").await;
    // The first token lives one second; the fake refuses it with 401 afterwards.
    fake.state
        .lock()
        .unwrap()
        .next_ttls
        .push_back(chrono::Duration::seconds(1));
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&fake.app_config()).unwrap());
    let id = fake.add_run("gate.yml", "gate prc-app", "queued", None);

    runner.status(&run_ref(id)).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    runner.status(&run_ref(id)).await.unwrap();
    runner.status(&run_ref(id)).await.unwrap();
    assert_eq!(issued(&fake), ["ghs_installation_1", "ghs_installation_2"]);
    assert_eq!(
        api_authorizations(&fake),
        [
            "Bearer ghs_installation_1",
            "Bearer ghs_installation_2",
            "Bearer ghs_installation_2"
        ],
        "refreshed once after expiry, then cached"
    );
}

#[tokio::test]
async fn a_token_about_to_expire_is_replaced_before_use() {
    let fake = Fake::start("").await;
    // Inside the refresh margin: usable now, but not for long.
    fake.state.lock().unwrap().token_ttl = chrono::Duration::minutes(2);
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&fake.app_config()).unwrap());
    let id = fake.add_run("gate.yml", "gate prc-app", "queued", None);

    runner.status(&run_ref(id)).await.unwrap();
    runner.status(&run_ref(id)).await.unwrap();
    assert_eq!(issued(&fake), ["ghs_installation_1", "ghs_installation_2"]);
    assert_eq!(
        api_authorizations(&fake),
        ["Bearer ghs_installation_1", "Bearer ghs_installation_2"]
    );
}

#[tokio::test]
async fn a_revoked_installation_token_is_dropped_after_a_401() {
    let fake = Fake::start("").await;
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&fake.app_config()).unwrap());
    let id = fake.add_run("gate.yml", "gate prc-app", "queued", None);
    fake.script(
        Method::GET,
        &format!("/runs/{id}"),
        vec![Reply::status(401, r#"{"message":"Bad credentials"}"#)],
    );

    let err = runner.status(&run_ref(id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    runner.status(&run_ref(id)).await.unwrap();
    assert_eq!(issued(&fake).len(), 2);
}

#[tokio::test]
async fn a_jwt_github_refuses_is_a_permanent_error_naming_the_exchange() {
    let fake = Fake::start("").await;
    let mut config = fake.app_config();
    // Signed with the right key but claiming another App.
    config.credentials =
        Credentials::App(AppCredentials::new("9999", INSTALLATION_ID, PRIVATE_KEY).unwrap());
    let api = GitHubApi::new(GitHubConnection::new(&config).unwrap());

    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(&format!(
            "connection github-app: POST /app/installations/{INSTALLATION_ID}/access_tokens: 401"
        )),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("installation token"),
        "{}",
        err.message
    );
    assert_eq!(
        fake.count(Method::POST, "/access_tokens"),
        1,
        "401 is not retried"
    );
    assert_eq!(fake.count(Method::POST, "/labels"), 0);
}

#[tokio::test]
async fn app_credentials_come_from_the_secret_data() {
    let fake = Fake::start("").await;
    let data = BTreeMap::from([
        ("app-id".to_owned(), format!("{APP_ID}\n").into_bytes()),
        (
            "installation-id".to_owned(),
            INSTALLATION_ID.to_string().into_bytes(),
        ),
        ("private-key".to_owned(), PRIVATE_KEY.to_vec()),
    ]);
    let mut config = fake.app_config();
    config.credentials =
        Credentials::from_secret_data("github-app", "ci/github-app", &data).unwrap();
    let api = GitHubApi::new(GitHubConnection::new(&config).unwrap());
    api.add_label(&pr(), "promoted").await.unwrap();
    assert_eq!(issued(&fake).len(), 1);
}

#[tokio::test]
async fn no_debug_output_shows_a_credential() {
    let fake = Fake::start("").await;
    let key_lines: Vec<&str> = std::str::from_utf8(PRIVATE_KEY)
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let app_config = fake.app_config();
    let app_connection = GitHubConnection::new(&app_config).unwrap();
    let runner = GitHubActionsRunner::new(app_connection.clone());
    let api = GitHubApi::new(app_connection.clone());
    // With an installation token in the cache.
    runner
        .status(&run_ref(fake.add_run("gate.yml", "t", "queued", None)))
        .await
        .unwrap();
    let token_config = fake.token_config();
    let token_connection = GitHubConnection::new(&token_config).unwrap();

    let shown = [
        format!("{app_config:?}"),
        format!("{app_config:#?}"),
        format!("{:?}", app_config.credentials),
        format!("{app_connection:?}"),
        format!("{runner:?}"),
        format!("{api:?}"),
        format!("{token_config:?}"),
        format!("{:?}", token_config.credentials),
        format!("{token_connection:?}"),
        format!("{:?}", GitHubApi::new(token_connection.clone())),
        format!("{:?}", HttpSettings::default()),
    ];
    for text in &shown {
        assert!(!text.contains(TOKEN), "{text}");
        assert!(!text.contains("ghs_installation"), "{text}");
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for line in &key_lines {
            assert!(!text.contains(line), "{text}");
        }
    }
    assert!(shown[0].contains("redacted"));
}

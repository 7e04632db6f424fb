//! GitHub App auth against the GitHub stand-in, which checks the App's JWT with
//! its public key as GitHub does; installation tokens are cached and refreshed.

mod support;

use promotion_adapters::{
    AppCredentials, Connection, ConnectionKind, Credentials, GitHubActionsRunner, GitHubApi,
    GitHubConnection, GitHubCredentials, HttpSettings,
};
use promotion_api::Provider;
use promotion_core::ports::{
    ErrorKind, GitHubClient, PullRequestRef, RunRef, TestRunner, TriggerRequest,
};
use promotion_standins::{
    GITHUB_APP_ID, GITHUB_APP_INSTALLATION, GITHUB_APP_PRIVATE_KEY, GITHUB_APP_PUBLIC_KEY,
    GITHUB_APP_SECRET, GITHUB_SECRET, Reply, StandIns,
};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use support::standins;

const EXCHANGE: &str = "/app/installations/77/access_tokens";

fn pr() -> PullRequestRef {
    PullRequestRef {
        owner: "acme".into(),
        repo: "shop".into(),
        number: 7,
    }
}

fn run_ref(id: &str) -> RunRef {
    RunRef {
        correlation_id: None,
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        run_id: id.to_owned(),
    }
}

/// A connection that authenticates as the stand-in's GitHub App.
fn app_connection(s: &StandIns) -> Connection {
    let mut c = support::connection(
        s,
        "github-app",
        ConnectionKind::GithubActions,
        &s.github_url,
        GITHUB_APP_SECRET,
    );
    c.config.github.repository = Some("acme/shop".parse().unwrap());
    c
}

/// A run on the stand-in, started with its plain token, so that the App's calls are all reads.
async fn a_run(s: &StandIns) -> String {
    let mut c = support::connection(
        s,
        "github-token",
        ConnectionKind::GithubActions,
        &s.github_url,
        GITHUB_SECRET,
    );
    c.config.github.repository = Some("acme/shop".parse().unwrap());
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&c).unwrap());
    let req = TriggerRequest {
        provider: Provider::GithubActions,
        connection: None,
        job: "gate.yml".into(),
        git_ref: Some("main".into()),
        parameters: BTreeMap::new(),
        correlation_id: "prc-app".into(),
    };
    let id = runner.trigger(&req).await.unwrap().run_id;
    s.github.forget_calls();
    id
}

/// The `Authorization` of every call but the token exchange, in order.
fn api_authorizations(s: &StandIns) -> Vec<String> {
    s.github
        .calls()
        .into_iter()
        .filter(|c| !c.path.ends_with("/access_tokens"))
        .filter_map(|c| c.header("authorization").map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_jwt_is_verified_and_the_installation_token_cached() {
    let s = standins().await;
    let id = a_run(&s).await;
    let connection = GitHubConnection::new(&app_connection(&s)).unwrap();
    let runner = GitHubActionsRunner::new(connection.clone());
    let api = GitHubApi::new(connection);

    runner.status(&run_ref(&id)).await.unwrap();
    api.add_label(&pr(), "promoted").await.unwrap();
    runner.status(&run_ref(&id)).await.unwrap();

    let issued = s.github_installation_tokens();
    assert_eq!(issued.len(), 1);
    assert_eq!(
        api_authorizations(&s),
        vec![format!("Bearer {}", issued[0]); 3],
        "every API call carries the one cached installation token"
    );
    let exchange = &s.github.calls_to("POST", EXCHANGE)[0];
    let jwt = exchange
        .header("authorization")
        .and_then(|a| a.strip_prefix("Bearer "))
        .unwrap();
    let key = jsonwebtoken::DecodingKey::from_rsa_pem(GITHUB_APP_PUBLIC_KEY).unwrap();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_issuer(&[GITHUB_APP_ID]);
    let claims = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .unwrap()
        .claims;
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
    let s = standins().await;
    let id = a_run(&s).await;
    // The first token lives one second; the stand-in refuses it with 401 afterwards.
    s.set_github_token_lifetimes(&[Duration::from_secs(1)], Duration::from_secs(3600));
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&app_connection(&s)).unwrap());

    runner.status(&run_ref(&id)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    runner.status(&run_ref(&id)).await.unwrap();
    runner.status(&run_ref(&id)).await.unwrap();
    let issued = s.github_installation_tokens();
    assert_eq!(issued.len(), 2);
    assert_eq!(
        api_authorizations(&s),
        [
            format!("Bearer {}", issued[0]),
            format!("Bearer {}", issued[1]),
            format!("Bearer {}", issued[1]),
        ],
        "refreshed once after expiry, then cached"
    );
}

#[tokio::test]
async fn a_token_about_to_expire_is_replaced_before_use() {
    let s = standins().await;
    let id = a_run(&s).await;
    // Inside the refresh margin: usable now, but not for long.
    s.set_github_token_lifetimes(&[], Duration::from_secs(120));
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&app_connection(&s)).unwrap());

    runner.status(&run_ref(&id)).await.unwrap();
    runner.status(&run_ref(&id)).await.unwrap();
    let issued = s.github_installation_tokens();
    assert_eq!(issued.len(), 2);
    assert_eq!(
        api_authorizations(&s),
        [
            format!("Bearer {}", issued[0]),
            format!("Bearer {}", issued[1])
        ]
    );
}

#[tokio::test]
async fn a_revoked_installation_token_is_dropped_after_a_401() {
    let s = standins().await;
    let id = a_run(&s).await;
    let runner = GitHubActionsRunner::new(GitHubConnection::new(&app_connection(&s)).unwrap());
    runner.status(&run_ref(&id)).await.unwrap();
    s.revoke_github_token(&s.github_installation_tokens()[0]);

    let err = runner.status(&run_ref(&id)).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    runner.status(&run_ref(&id)).await.unwrap();
    assert_eq!(s.github_installation_tokens().len(), 2);
}

#[tokio::test]
async fn a_jwt_github_refuses_is_a_permanent_error_naming_the_exchange() {
    let s = standins().await;
    let mut c = app_connection(&s);
    // Signed with the right key but claiming another App.
    c.credentials = Credentials::Github(GitHubCredentials::App(
        AppCredentials::new(
            "9999",
            GITHUB_APP_INSTALLATION,
            GITHUB_APP_PRIVATE_KEY.as_bytes(),
        )
        .unwrap(),
    ));
    let api = GitHubApi::new(GitHubConnection::new(&c).unwrap());

    let err = api.add_label(&pr(), "promoted").await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::Permanent);
    assert!(
        err.message.starts_with(&format!(
            "connection github-app: 401 Unauthorized from POST {EXCHANGE}"
        )),
        "{}",
        err.message
    );
    assert!(
        err.message.contains("installation token"),
        "{}",
        err.message
    );
    assert_eq!(s.github.count("POST", EXCHANGE), 1, "401 is not retried");
    assert_eq!(s.github.count("POST", "/repos/*"), 0);
}

#[tokio::test]
async fn app_credentials_come_from_the_secret_data() {
    let s = standins().await;
    // The stand-ins' App Secret, with a newline after the id as `echo` leaves it.
    let mut data = support::secret_data(&s, GITHUB_APP_SECRET);
    data.insert("app-id".into(), format!("{GITHUB_APP_ID}\n").into_bytes());
    let secret = promotion_adapters::SecretRef {
        namespace: "ci".into(),
        name: GITHUB_APP_SECRET.into(),
    };
    let mut c = app_connection(&s);
    c.credentials =
        Credentials::from_secret("github-app", ConnectionKind::Github, &secret, &data).unwrap();
    c.config.kind = ConnectionKind::Github;
    let api = GitHubApi::new(GitHubConnection::new(&c).unwrap());
    api.add_label(&pr(), "promoted").await.unwrap();
    assert_eq!(s.github_installation_tokens().len(), 1);
    assert_eq!(s.journal.labels("acme", "shop", 7), ["promoted"]);
}

#[tokio::test]
async fn no_debug_output_shows_a_credential() {
    let s = standins().await;
    let id = a_run(&s).await;
    let key_lines: Vec<&str> = GITHUB_APP_PRIVATE_KEY
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect();

    let app = app_connection(&s);
    let app_connection = GitHubConnection::new(&app).unwrap();
    let runner = GitHubActionsRunner::new(app_connection.clone());
    let api = GitHubApi::new(app_connection.clone());
    // With an installation token in the cache.
    runner.status(&run_ref(&id)).await.unwrap();
    let token = support::connection(
        &s,
        "github-token",
        ConnectionKind::Github,
        &s.github_url,
        GITHUB_SECRET,
    );
    let token_connection = GitHubConnection::new(&token).unwrap();
    let mut secrets: Vec<String> = s.github_installation_tokens();
    secrets.extend(
        support::secret_data(&s, GITHUB_SECRET)
            .values()
            .map(|v| String::from_utf8(v.clone()).unwrap()),
    );

    let shown = [
        format!("{app:?}"),
        format!("{app:#?}"),
        format!("{:?}", app.credentials),
        format!("{app_connection:?}"),
        format!("{runner:?}"),
        format!("{api:?}"),
        format!("{token:?}"),
        format!("{:?}", token.credentials),
        format!("{token_connection:?}"),
        format!("{:?}", GitHubApi::new(token_connection.clone())),
        format!("{:?}", HttpSettings::default()),
    ];
    for text in &shown {
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{text}");
        }
        assert!(!text.contains("PRIVATE KEY"), "{text}");
        for line in &key_lines {
            assert!(!text.contains(line), "{text}");
        }
    }
    assert!(shown[0].contains("redacted"));
    // A scripted 401 shows only GitHub's words, never a token.
    s.github.script(
        "POST",
        "/repos/*",
        [Reply::status(401)
            .body(r#"{"message":"Bad credentials"}"#)
            .into()],
    );
    let err = api.add_label(&pr(), "x").await.unwrap_err();
    for secret in &secrets {
        assert!(!err.message.contains(secret.as_str()), "{}", err.message);
    }
}

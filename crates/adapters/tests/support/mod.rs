//! What the adapter tests share: the stand-ins (the one fake of each service,
//! with its fault layer), connections to them, and settings short enough for tests.

#![allow(dead_code)]

use promotion_adapters::{
    Connection, ConnectionConfig, ConnectionKind, Credentials, HttpSettings, SecretRef,
};
use promotion_standins::{CiScript, StandInConfig, StandIns, Triggered};
use std::collections::BTreeMap;
use std::time::Duration;

/// Longer than any test: a run ends when the test says so.
pub const NEVER: Duration = Duration::from_secs(3600);

/// Timeouts and backoff short enough for tests.
pub fn fast_http() -> HttpSettings {
    HttpSettings {
        connect_timeout: Duration::from_secs(5),
        // Generous, so a loaded machine does not fail a test; the timeout tests set their own.
        request_timeout: Duration::from_secs(5),
        read_retries: 3,
        retry_min_delay: Duration::from_millis(5),
        retry_max_delay: Duration::from_millis(20),
        max_rate_limit_wait: Duration::from_millis(100),
        ..HttpSettings::default()
    }
}

/// The stand-ins, whose runs end only when a test finishes them.
pub async fn standins() -> StandIns {
    let script = CiScript::new(NEVER);
    StandIns::start(StandInConfig {
        script,
        callbacks: None,
    })
    .await
    .expect("the stand-ins start")
}

/// The data of one of the stand-ins' Secrets.
pub fn secret_data(s: &StandIns, name: &str) -> BTreeMap<String, Vec<u8>> {
    s.secrets()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, d)| d.into_iter().map(|(k, v)| (k, v.into_bytes())).collect())
        .expect("the stand-ins have this Secret")
}

/// A connection named `name` of `kind` to `url`, with the credentials of the
/// stand-ins' Secret `secret` and fast settings.
pub fn connection(
    s: &StandIns,
    name: &str,
    kind: ConnectionKind,
    url: &str,
    secret: &str,
) -> Connection {
    let secret_ref = SecretRef {
        namespace: "ci".into(),
        name: secret.into(),
    };
    let mut config = ConnectionConfig::new(name, kind, url).expect("a valid config");
    config.http = fast_http();
    Connection {
        config,
        credentials: Credentials::from_secret(name, kind, &secret_ref, &secret_data(s, secret))
            .expect("the stand-ins' own Secret is valid"),
    }
}

/// The run the stand-ins started for `correlation_id`.
pub fn triggered(s: &StandIns, correlation_id: &str) -> Triggered {
    s.journal
        .triggers()
        .into_iter()
        .find(|t| t.correlation_id.as_deref() == Some(correlation_id))
        .expect("the stand-ins started this run")
}

/// A base URL where nothing listens.
pub fn refused() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    base
}

/// Guards a call that must end by itself (a test's safety net, not an assertion on time).
pub async fn bounded<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("the call did not end by itself")
}

/// Long before any run of a test: `find` searches the whole listing.
pub fn long_ago() -> std::time::SystemTime {
    std::time::SystemTime::now() - Duration::from_secs(3600)
}

/// `find` back to [`long_ago`], as an option: `None` for Absent; "not sure" fails the test.
pub async fn found(
    runner: &impl promotion_core::ports::TestRunner,
    req: &promotion_core::ports::TriggerRequest,
) -> Option<promotion_core::ports::RunHandle> {
    match runner.find(req, long_ago()).await.expect("find") {
        promotion_core::ports::Found::Run(h) => Some(h),
        promotion_core::ports::Found::Absent => None,
        promotion_core::ports::Found::NotSure(why) => panic!("find is not sure: {why}"),
    }
}

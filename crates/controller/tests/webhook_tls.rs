//! TLS on the webhook port: a request over TLS is served, a plain one gets no HTTP
//! answer, and a certificate changed on disk (as a Secret volume changes) is used
//! for the next connections; a changed pair that does not load keeps the old one.
//! Certificates come from a CA of the test's own (promotion_testenv::certs).

use hmac::{Hmac, Mac};
use promotion_controller::webhook::tls::{TlsFiles, TlsListener};
use promotion_controller::webhook::{WebhookSecrets, Webhooks};
use promotion_testenv::certs::TestCa;
use sha2::Sha256;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

const SECRET: &str = "tls-test-webhook-secret-32-bytes";

/// A signed GitHub `ping` delivery, as raw HTTP/1.1.
fn ping_request() -> Vec<u8> {
    let body = br#"{"zen":"Keep it logically awesome."}"#;
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).expect("key");
    mac.update(body);
    let signature = hex::encode(mac.finalize().into_bytes());
    let mut req = format!(
        "POST /webhooks/github HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Content-Type: application/json\r\nX-GitHub-Event: ping\r\n\
         X-GitHub-Delivery: {}\r\nX-Hub-Signature-256: sha256={signature}\r\n\
         Content-Length: {}\r\n\r\n",
        rand_id(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

fn rand_id() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "0b7c-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// One request over TLS trusting only `ca`: the certificate the server showed and its answer.
async fn over_tls(addr: SocketAddr, ca: &str) -> (CertificateDer<'static>, String) {
    let mut roots = RootCertStore::empty();
    roots.add(der(ca)).expect("the CA");
    let config = ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("protocols")
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut tls = connector
        .connect(ServerName::try_from("localhost").expect("name"), tcp)
        .await
        .expect("a TLS handshake with a certificate the CA signed");
    let shown = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first().cloned())
        .expect("the server's certificate");
    tls.write_all(&ping_request()).await.expect("request");
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    (shown, String::from_utf8_lossy(&answer).into_owned())
}

fn write_pair(dir: &Path, (cert, key): &(String, String)) {
    // As the kubelet updates a Secret volume: new files swapped in whole.
    for (name, text) in [("tls.crt", cert), ("tls.key", key)] {
        let tmp = dir.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, text).expect("writing");
        std::fs::rename(&tmp, dir.join(name)).expect("renaming");
    }
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_webhook_port_speaks_tls_and_picks_up_a_new_certificate() {
    let dir = tempfile::tempdir().expect("a directory");
    let ca = TestCa::new("webhook-test-ca").expect("a CA");
    let first = ca.serving("webhook-first").expect("a certificate");
    write_pair(dir.path(), &first);
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = tcp.local_addr().expect("address");
    let listener = TlsListener::bind(tcp, files.clone(), Duration::from_millis(50))
        .await
        .expect("TLS with a valid pair");
    let counts = listener.counts();
    let (tx, _wakes) = futures::channel::mpsc::unbounded();
    let app = Webhooks::new(
        || WebhookSecrets {
            github: Some(SECRET.as_bytes().to_vec()),
            ..Default::default()
        },
        tx,
    )
    .router();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let (shown, answer) = over_tls(addr, &ca.cert_pem).await;
    assert_eq!(shown, der(&first.0));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("pong"), "{answer}");

    // Plain HTTP on the TLS port gets no HTTP answer.
    let mut plain = tokio::net::TcpStream::connect(addr).await.expect("connect");
    plain.write_all(&ping_request()).await.expect("request");
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer).await;
    assert!(
        !String::from_utf8_lossy(&answer).contains("HTTP/1.1"),
        "a plain request was answered: {:?}",
        String::from_utf8_lossy(&answer)
    );

    // A renewed certificate is used for new connections, without a restart.
    let second = ca.serving("webhook-second").expect("a certificate");
    write_pair(dir.path(), &second);
    wait_for("the second certificate to load", || counts.loaded() == 2).await;
    let (shown, answer) = over_tls(addr, &ca.cert_pem).await;
    assert_eq!(shown, der(&second.0));
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // A broken pair (a key that is not the certificate's) is refused; the second stays.
    let third = ca.serving("webhook-third").expect("a certificate");
    write_pair(dir.path(), &(third.0.clone(), first.1.clone()));
    wait_for("the broken pair to be refused", || counts.failed() == 1).await;
    let (shown, _) = over_tls(addr, &ca.cert_pem).await;
    assert_eq!(shown, der(&second.0), "the last good certificate is kept");
    assert_eq!(counts.loaded(), 2);
    server.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tls_port_does_not_start_without_a_usable_certificate() {
    let dir = tempfile::tempdir().expect("a directory");
    let files = TlsFiles {
        cert: dir.path().join("tls.crt"),
        key: dir.path().join("tls.key"),
    };
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = TlsListener::bind(tcp, files.clone(), Duration::from_secs(10))
        .await
        .err()
        .expect("no certificate, no listener");
    assert!(err.to_string().contains("tls.crt"), "{err}");
    std::fs::write(&files.cert, "not a certificate").expect("write");
    std::fs::write(&files.key, "not a key").expect("write");
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let err = TlsListener::bind(tcp, files, Duration::from_secs(10))
        .await
        .err()
        .expect("garbage, no listener");
    assert!(err.to_string().contains("tls."), "{err}");
}

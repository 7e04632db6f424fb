//! The real binary rides through an API server outage instead of exiting in a
//! loop: the outage is a TCP proxy in front of the real kube-apiserver that the
//! test cuts (every connection closed, new ones refused) and restores.

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A TCP proxy to the API server that can be cut.
struct Proxy {
    up: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accepted: Arc<Mutex<usize>>,
}

impl Proxy {
    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for t in self.conns.lock().expect("lock").drain(..) {
            t.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    fn accepted(&self) -> usize {
        *self.accepted.lock().expect("lock")
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The test kubeconfig with its server pointed at the proxy; returns it and the real address.
fn through_proxy(kubeconfig: &Path, out: &Path, port: u16) -> String {
    let text = std::fs::read_to_string(kubeconfig).expect("kubeconfig");
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server:"))
        .map(|s| s.trim().trim_matches('"').to_string())
        .expect("a server line");
    let upstream = server
        .trim_start_matches("https://")
        .trim_end_matches('/')
        .to_string();
    std::fs::write(
        out,
        text.replace(&server, &format!("https://127.0.0.1:{port}")),
    )
    .expect("writing kubeconfig");
    upstream
}

struct Binary {
    child: Child,
    probe: u16,
    log: PathBuf,
}

impl Binary {
    fn start(dir: &Path, kubeconfig: &Path, namespace: &str) -> Self {
        let config = dir.join("config.yaml");
        std::fs::write(&config, "connections: []\n").expect("config");
        let log = dir.join("controller.log");
        let probe = free_port();
        let child = Command::new(env!("CARGO_BIN_EXE_promotion-controller"))
            .env_clear()
            .env("RUST_LOG", "info")
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--config")
            .arg(&config)
            .arg("--namespace")
            .arg(namespace)
            .arg("--lease-namespace")
            .arg(namespace)
            .arg("--identity")
            .arg("replica-a")
            .arg("--probe-address")
            .arg(format!("127.0.0.1:{probe}"))
            .arg("--webhook-address")
            .arg(format!("127.0.0.1:{}", free_port()))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).expect("log"))
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the controller binary");
        Self { child, probe, log }
    }

    fn exited(&mut self) -> Option<String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Some(format!("{status}; log:\n{}", self.log())),
            _ => None,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn ready(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.probe)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let _ = s.write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer);
        answer.starts_with("HTTP/1.1 200")
    }

    /// Waits (bounded) for readiness to become `want`, failing if the process exits.
    async fn wait_ready(&mut self, want: bool, within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            if let Some(exit) = self.exited() {
                panic!("the controller exited: {exit}");
            }
            if self.ready() == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "readiness never became {want}; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn workdir(ns: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("outage-{ns}"));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn an_outage_longer_than_the_lease_is_ridden_through_without_exiting() {
    // Issue #11 case 5: after losing the Lease in a long outage the binary exited.
    let ctx = promotion_testenv::context("outage-long").await;
    let dir = workdir(&ctx.namespace);
    let kubeconfig = dir.join("kubeconfig");
    let proxy_port = free_port();
    let upstream = through_proxy(&ctx.kubeconfig, &kubeconfig, proxy_port);
    let proxy = Proxy::start_on(proxy_port, upstream).await;
    let mut bin = Binary::start(&dir, &kubeconfig, &ctx.namespace);
    bin.wait_ready(true, Duration::from_secs(60)).await;

    proxy.cut();
    // Longer than the Lease (15 s): leadership cannot be proven, so it stops leading...
    bin.wait_ready(false, Duration::from_secs(40)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Some(exit) = bin.exited() {
            panic!("exited during the outage: {exit}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let tries = proxy.accepted();
    proxy.restore();
    // ...and leads again once the API server answers, in the same process.
    bin.wait_ready(true, Duration::from_secs(90)).await;
    assert!(tries > 1, "it kept trying during the outage");
    let log = bin.log();
    assert!(
        log.contains("leading again once the lease is ours"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_started_during_an_outage_waits_for_the_api_server() {
    // Issue #11 case 5: a restart while the API server is unreachable exited within
    // 200 ms, again and again.
    let ctx = promotion_testenv::context("outage-start").await;
    let dir = workdir(&ctx.namespace);
    let kubeconfig = dir.join("kubeconfig");
    let proxy_port = free_port();
    let upstream = through_proxy(&ctx.kubeconfig, &kubeconfig, proxy_port);
    let proxy = Proxy::start_on(proxy_port, upstream).await;
    proxy.cut();
    let mut bin = Binary::start(&dir, &kubeconfig, &ctx.namespace);
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        if let Some(exit) = bin.exited() {
            panic!("exited while the API server was unreachable: {exit}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(!bin.ready());
    let tries = proxy.accepted();
    assert!(tries >= 2, "it retried ({tries} connections)");
    proxy.restore();
    bin.wait_ready(true, Duration::from_secs(90)).await;
}

impl Proxy {
    async fn start_on(port: u16, upstream: String) -> Self {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the proxy port");
        Self::serve(listener, upstream)
    }

    fn serve(listener: TcpListener, upstream: String) -> Self {
        let up = Arc::new(AtomicBool::new(true));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accepted: Arc<Mutex<usize>> = Arc::default();
        {
            let (up, conns, accepted) = (up.clone(), conns.clone(), accepted.clone());
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    *accepted.lock().expect("lock") += 1;
                    if !up.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    conns.lock().expect("lock").push(task);
                }
            });
        }
        Self {
            up,
            conns,
            accepted,
        }
    }
}

//! Optional TLS on the webhook port, from a certificate and key file (mounted from
//! a Secret). The files are read again every reload interval and a changed pair is
//! used for the next handshakes; a pair that does not load is logged and the
//! previous one kept. A client that does not speak TLS gets no HTTP answer.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::crypto::{CryptoProvider, ring};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::server::TlsStream;

/// How long a client may take over its TLS handshake before it is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the HTTP server.
const BACKLOG: usize = 64;

/// The certificate chain and key files (PEM).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// Why a certificate and key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file's content is not what it should be.
    #[error("{path}: {why}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The TLS configuration could not be built.
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(ring::default_provider())
}

fn invalid(path: &Path, why: impl std::fmt::Display) -> TlsError {
    TlsError::Invalid {
        path: path.to_path_buf(),
        why: why.to_string(),
    }
}

/// Both files' bytes, as read.
type Pair = (Vec<u8>, Vec<u8>);

async fn read_pair(files: &TlsFiles) -> Result<Pair, TlsError> {
    let files = files.clone();
    let read = move |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })
    };
    tokio::task::spawn_blocking(move || Ok((read(&files.cert)?, read(&files.key)?)))
        .await
        .map_err(|e| TlsError::Config(format!("reading the certificate files: {e}")))?
}

/// The certificate chain and signing key of a pair of PEM files.
fn certified_key(files: &TlsFiles, (cert, key): &Pair) -> Result<CertifiedKey, TlsError> {
    let chain = CertificateDer::pem_slice_iter(cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if chain.is_empty() {
        return Err(invalid(&files.cert, "holds no certificate"));
    }
    let key = PrivateKeyDer::from_pem_slice(key)
        .map_err(|e| invalid(&files.key, format!("not a PEM private key: {e}")))?;
    let signer = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| invalid(&files.key, e))?;
    let certified = CertifiedKey::new(chain, signer);
    certified
        .keys_match()
        .map_err(|e| invalid(&files.key, format!("does not match the certificate: {e}")))?;
    Ok(certified)
}

/// Hands every handshake the certificate loaded last.
#[derive(Debug)]
struct Current(RwLock<Arc<CertifiedKey>>);

impl ResolvesServerCert for Current {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.0.read().ok().map(|c| c.clone())
    }
}

/// How the reloads went, for logs and tests.
#[derive(Debug, Default)]
pub struct ReloadCounts {
    loaded: AtomicU64,
    failed: AtomicU64,
}

impl ReloadCounts {
    /// Certificate pairs loaded, the first included.
    pub fn loaded(&self) -> u64 {
        self.loaded.load(Ordering::SeqCst)
    }

    /// Changed pairs that could not be used (the previous one was kept).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::SeqCst)
    }
}

/// A TCP listener that speaks TLS, for `axum::serve`.
pub struct TlsListener {
    connections: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
    counts: Arc<ReloadCounts>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl TlsListener {
    /// Serves TLS on `tcp` with the pair in `files`, read again every `reload`.
    /// Fails when the pair cannot be used now: a TLS port never starts as plain HTTP.
    pub async fn bind(
        tcp: TcpListener,
        files: TlsFiles,
        reload: Duration,
    ) -> Result<Self, TlsError> {
        let pair = read_pair(&files).await?;
        let current = Arc::new(Current(RwLock::new(Arc::new(certified_key(
            &files, &pair,
        )?))));
        let mut config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(current.clone());
        // The router speaks HTTP/1.1 (what GitHub, GitLab and Jenkins send).
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(config));
        let counts = Arc::new(ReloadCounts::default());
        counts.loaded.fetch_add(1, Ordering::SeqCst);
        let local = tcp
            .local_addr()
            .map_err(|e| TlsError::Config(format!("the listener's address: {e}")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
        let reloader = tokio::spawn(reload_loop(files, pair, current, counts.clone(), reload));
        let acceptor = tokio::spawn(accept_loop(tcp, acceptor, tx));
        Ok(Self {
            connections: rx,
            local,
            counts,
            tasks: vec![reloader, acceptor],
        })
    }

    /// How the reloads went.
    pub fn counts(&self) -> Arc<ReloadCounts> {
        self.counts.clone()
    }
}

async fn reload_loop(
    files: TlsFiles,
    mut last: Pair,
    current: Arc<Current>,
    counts: Arc<ReloadCounts>,
    every: Duration,
) {
    let mut ticks = tokio::time::interval(every.max(Duration::from_millis(10)));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        // Compared by content: a Secret volume changes by swapping a symlink.
        let pair = match read_pair(&files).await {
            Ok(p) if p == last => continue,
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "webhook TLS files unreadable; keeping the current certificate");
                continue;
            }
        };
        match certified_key(&files, &pair) {
            Ok(key) => {
                if let Ok(mut c) = current.0.write() {
                    *c = Arc::new(key);
                }
                counts.loaded.fetch_add(1, Ordering::SeqCst);
                tracing::info!(cert = %files.cert.display(), "webhook TLS certificate reloaded");
            }
            Err(e) => {
                counts.failed.fetch_add(1, Ordering::SeqCst);
                tracing::error!(error = %e, "the changed webhook TLS certificate cannot be used; keeping the current one");
            }
        }
        last = pair;
    }
}

async fn accept_loop(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    tx: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: pause rather than spin.
                tracing::warn!(error = %e, "webhook accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        // Each handshake on its own task, so a slow client holds up no other.
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "webhook TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "webhook TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.connections.recv().await {
            Some(c) => c,
            // The accept task is gone only when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.local)
    }
}

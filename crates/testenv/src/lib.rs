//! Test support: a real etcd + kube-apiserver, built from upstream source and
//! started like controller-runtime's envtest, shared by the tests of a run.
//!
//! `cargo xtask test` starts one control plane for the whole run and passes its
//! kubeconfig in [`KUBECONFIG_ENV`]; a test binary run on its own starts one for
//! itself on first use and stops it when the process exits (or dies).

pub mod binaries;
pub mod certs;
mod control_plane;
pub mod table;

pub use control_plane::{AuditLog, ControlPlane, Options};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, ResourceExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// Set by `cargo xtask test`: the kubeconfig of a control plane shared by every test binary.
pub const KUBECONFIG_ENV: &str = "PROMOTION_TESTENV_KUBECONFIG";

/// What can go wrong while bringing up a control plane.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or process operation failed.
    #[error("{path}: {source}")]
    Io {
        /// What was being accessed.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Generating the certificates failed.
    #[error("generating certificates: {0}")]
    Pki(String),
    /// Building etcd or kube-apiserver failed.
    #[error("building the control plane: {0}")]
    Build(String),
    /// A process exited during start-up.
    #[error("{name} exited during start-up ({status}); last log lines:\n{log_tail}")]
    Exited {
        /// Which process.
        name: &'static str,
        /// Its exit status.
        status: String,
        /// The end of its log.
        log_tail: String,
    },
    /// kube-apiserver did not become ready in time.
    #[error(
        "kube-apiserver not ready after {waited:?} (last answer: {last}); last log lines:\n{log_tail}"
    )]
    NotReady {
        /// How long we waited.
        waited: Duration,
        /// The last /readyz answer or error.
        last: String,
        /// The end of its log.
        log_tail: String,
    },
    /// A Kubernetes API call failed.
    #[error("kubernetes API: {0}")]
    Kube(String),
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// A kube client for a kubeconfig file, bound to the calling tokio runtime.
pub async fn client_for(kubeconfig: &Path) -> Result<Client, Error> {
    let kc = Kubeconfig::read_from(kubeconfig).map_err(|e| Error::Kube(e.to_string()))?;
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Kube(e.to_string()))?;
    Client::try_from(config).map_err(|e| Error::Kube(e.to_string()))
}

/// Applies our CRDs (server-side, idempotent) and waits until they are established.
pub async fn install_crds(client: &Client) -> Result<(), Error> {
    install_crd_objects(client, promotion_api::crds()).await
}

/// Applies the given CRDs (server-side, idempotent) and waits until they are established.
pub async fn install_crd_objects(
    client: &Client,
    crds: Vec<CustomResourceDefinition>,
) -> Result<(), Error> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply("promotion-testenv").force();
    for crd in crds {
        let name = crd.name_any();
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .map_err(|e| Error::Kube(format!("applying CRD {name}: {e}")))?;
        let established = await_condition(api.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(60), established)
            .await
            .map_err(|_| Error::Kube(format!("CRD {name} not established after 60s")))?
            .map_err(|e| Error::Kube(e.to_string()))?;
    }
    Ok(())
}

/// The kubeconfig of the control plane shared by this process's tests, starting it on first use.
///
/// Blocks the calling thread during start-up (tens of seconds).
pub fn shared_kubeconfig() -> Result<PathBuf, Error> {
    static SHARED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    SHARED
        .get_or_init(|| {
            if let Some(path) = std::env::var_os(KUBECONFIG_ENV) {
                return Ok(PathBuf::from(path));
            }
            start_for_process().map_err(|e| e.to_string())
        })
        .clone()
        .map_err(Error::Kube)
}

/// The control plane this process started, stopped by the exit handler.
static OWNED: Mutex<Option<ControlPlane>> = Mutex::new(None);

extern "C" fn stop_owned() {
    if let Ok(mut owned) = OWNED.lock()
        && let Some(plane) = owned.take()
    {
        plane.stop();
    }
}

/// The pids of the control plane this process started itself, if any.
pub fn owned_pids() -> Vec<u32> {
    OWNED
        .lock()
        .map(|owned| owned.as_ref().map(ControlPlane::pids).unwrap_or_default())
        .unwrap_or_default()
}

fn start_for_process() -> Result<PathBuf, Error> {
    let bins = binaries::ensure_built()?;
    let (tx, rx) = std::sync::mpsc::channel();
    // The children die with the thread that spawned them, so spawn them from one
    // that lives as long as the process.
    std::thread::Builder::new()
        .name("control-plane".into())
        .spawn(move || {
            let started = ControlPlane::start(&bins);
            let result = match started {
                Ok(plane) => {
                    let kubeconfig = plane.kubeconfig.clone();
                    if let Ok(mut owned) = OWNED.lock() {
                        *owned = Some(plane);
                    }
                    // SAFETY: registering a plain extern "C" function with no captured state.
                    unsafe { libc::atexit(stop_owned) };
                    Ok(kubeconfig)
                }
                Err(e) => Err(e),
            };
            let _ = tx.send(result);
            loop {
                std::thread::park();
            }
        })
        .map_err(|e| Error::io(Path::new("control-plane thread"), e))?;
    rx.recv()
        .map_err(|_| Error::Kube("control-plane thread ended without an answer".into()))?
}

/// A control plane of one test's own (for options the shared one does not have, such
/// as an audit log), stopped when dropped.
pub struct Dedicated {
    /// Its admin kubeconfig.
    pub kubeconfig: PathBuf,
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Dedicated {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts a control plane of its own with `options`. Blocks for its start-up.
pub fn dedicated(options: Options) -> Result<Dedicated, Error> {
    let bins = binaries::ensure_built()?;
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    // The children die with the thread that spawned them: it lives until the stop.
    let thread = std::thread::Builder::new()
        .name("dedicated-control-plane".into())
        .spawn(move || match ControlPlane::start_with(&bins, &options) {
            Ok(plane) => {
                let _ = ready_tx.send(Ok(plane.kubeconfig.clone()));
                let _ = stop_rx.recv();
                plane.stop();
            }
            Err(e) => {
                let _ = ready_tx.send(Err(e));
            }
        })
        .map_err(|e| Error::io(Path::new("control-plane thread"), e))?;
    let kubeconfig = ready_rx
        .recv()
        .map_err(|_| Error::Kube("control-plane thread ended without an answer".into()))??;
    Ok(Dedicated {
        kubeconfig,
        stop: Some(stop_tx),
        thread: Some(thread),
    })
}

/// A client of the shared control plane and a namespace of its own, for one test.
pub struct TestContext {
    /// Admin client, bound to the test's runtime.
    pub client: Client,
    /// A fresh namespace (deleted namespaces never finish terminating here).
    pub namespace: String,
    /// The control plane's kubeconfig, for starting further clients or processes.
    pub kubeconfig: PathBuf,
}

/// Starts (or reuses) the control plane and creates a fresh namespace named after `test`.
///
/// Panics with the start-up error, which is what a test wants.
pub async fn context(test: &str) -> TestContext {
    let kubeconfig = tokio::task::block_in_place(shared_kubeconfig)
        .unwrap_or_else(|e| panic!("control plane unavailable: {e}"));
    let client = client_for(&kubeconfig)
        .await
        .unwrap_or_else(|e| panic!("client for {}: {e}", kubeconfig.display()));
    let namespace = fresh_namespace(&client, test)
        .await
        .unwrap_or_else(|e| panic!("creating a namespace: {e}"));
    TestContext {
        client,
        namespace,
        kubeconfig,
    }
}

/// Creates a namespace with a unique name derived from `prefix`.
pub async fn fresh_namespace(client: &Client, prefix: &str) -> Result<String, Error> {
    let clean: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let name = format!("{}-{:08x}", clean.trim_matches('-'), rand::random::<u32>());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .map_err(|e| Error::Kube(e.to_string()))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .map_err(|e| Error::Kube(format!("creating namespace {name}: {e}")))?;
    Ok(name)
}

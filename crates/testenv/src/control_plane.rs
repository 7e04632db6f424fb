//! One etcd + kube-apiserver pair on free loopback ports, started the way
//! controller-runtime's envtest does, and stopped when dropped.

use crate::Error;
use crate::binaries::Binaries;
use crate::certs::Pki;
use base64::Engine;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long kube-apiserver may take to become ready; on 2 busy cores it can
/// take well over 20 s.
const READY_TIMEOUT: Duration = Duration::from_secs(180);

/// How to start a control plane beyond the defaults.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Write an audit log (kube-apiserver `--audit-policy-file`, `--audit-log-path`).
    pub audit: Option<AuditLog>,
}

/// An audit policy file and where the API server writes its log (JSON lines).
#[derive(Clone, Debug)]
pub struct AuditLog {
    /// The audit.k8s.io/v1 Policy.
    pub policy: PathBuf,
    /// The log file, one JSON event per line.
    pub log: PathBuf,
}

/// A running control plane. Dropping it stops both processes and removes its files.
pub struct ControlPlane {
    dir: tempfile::TempDir,
    etcd: Option<Child>,
    apiserver: Option<Child>,
    /// The API server's URL, `https://127.0.0.1:<port>`.
    pub server: String,
    /// A kubeconfig for the admin (`system:masters`) user.
    pub kubeconfig: PathBuf,
    /// How long start-up took, from spawning etcd to a ready API server with CRDs.
    pub startup: Duration,
    /// How kube-apiserver is started, kept so it can be started again on the same etcd and port.
    apiserver_command: (PathBuf, Vec<String>),
}

impl ControlPlane {
    /// Starts etcd and kube-apiserver, waits for `/readyz` and installs the CRDs.
    ///
    /// Blocking; must be called from a thread that lives as long as the control
    /// plane, because the children are told to die with the thread that spawned them.
    pub fn start(bins: &Binaries) -> Result<Self, Error> {
        Self::start_with(bins, &Options::default())
    }

    /// [`ControlPlane::start`] with `options`.
    pub fn start_with(bins: &Binaries, options: &Options) -> Result<Self, Error> {
        let started = Instant::now();
        sweep_abandoned();
        let dir = tempfile::Builder::new()
            .prefix(DIR_PREFIX)
            .tempdir()
            .map_err(|e| Error::io(Path::new("tmp"), e))?;
        let root = dir.path().to_path_buf();
        let owner = root.join(OWNER_FILE);
        std::fs::write(&owner, std::process::id().to_string()).map_err(|e| Error::io(&owner, e))?;
        let pki = Pki::generate()?;
        let write = |name: &str, body: &str| -> Result<PathBuf, Error> {
            let path = root.join(name);
            std::fs::write(&path, body).map_err(|e| Error::io(&path, e))?;
            Ok(path)
        };
        let ca = write("ca.crt", &pki.ca_cert)?;
        let serving_cert = write("apiserver.crt", &pki.serving_cert)?;
        let serving_key = write("apiserver.key", &pki.serving_key)?;
        let sa_key = write("sa.key", &pki.service_account_key)?;
        let sa_pub = write("sa.pub", &pki.service_account_pub)?;

        let etcd_client = free_port()?;
        let etcd_peer = free_port()?;
        let secure_port = free_port()?;
        let log = |name: &str| -> Result<std::fs::File, Error> {
            let path = root.join(name);
            std::fs::File::create(&path).map_err(|e| Error::io(&path, e))
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_client}");
        let peer_url = format!("http://127.0.0.1:{etcd_peer}");
        let etcd = spawn(
            Command::new(&bins.etcd)
                .arg(format!("--data-dir={}", root.join("etcd").display()))
                .arg(format!("--listen-client-urls={etcd_url}"))
                .arg(format!("--advertise-client-urls={etcd_url}"))
                .arg(format!("--listen-peer-urls={peer_url}"))
                .arg(format!("--initial-advertise-peer-urls={peer_url}"))
                .arg(format!("--initial-cluster=default={peer_url}"))
                // Throw-away data: durability costs seconds per test run.
                .arg("--unsafe-no-fsync")
                .stdout(Stdio::null())
                .stderr(log("etcd.log")?),
        )?;
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--secure-port={secure_port}"),
            "--bind-address=127.0.0.1".into(),
            // With a loopback bind it otherwise exits looking for a default route.
            "--advertise-address=127.0.0.1".into(),
            format!("--cert-dir={}", root.join("certs").display()),
            format!("--tls-cert-file={}", serving_cert.display()),
            format!("--tls-private-key-file={}", serving_key.display()),
            format!("--client-ca-file={}", ca.display()),
            format!("--service-account-key-file={}", sa_pub.display()),
            format!("--service-account-signing-key-file={}", sa_key.display()),
            "--service-account-issuer=https://127.0.0.1".into(),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--authorization-mode=RBAC".into(),
            "--allow-privileged=true".into(),
            // No controller-manager runs, so nothing keeps the `kubernetes` Service's endpoints.
            "--endpoint-reconciler-type=none".into(),
            "--disable-admission-plugins=ServiceAccount".into(),
        ];
        if let Some(audit) = &options.audit {
            apiserver_args.extend([
                format!("--audit-policy-file={}", audit.policy.display()),
                format!("--audit-log-path={}", audit.log.display()),
                // Written as each request ends, so a test reads every one it made.
                "--audit-log-mode=blocking".into(),
                "--audit-log-format=json".into(),
            ]);
        }
        let mut plane = Self {
            server: format!("https://127.0.0.1:{secure_port}"),
            kubeconfig: root.join("kubeconfig"),
            etcd: Some(etcd),
            apiserver: None,
            dir,
            startup: Duration::ZERO,
            apiserver_command: (bins.kube_apiserver.clone(), apiserver_args),
        };
        let apiserver = plane.spawn_apiserver()?;
        plane.apiserver = Some(apiserver);
        plane.write_kubeconfig(&pki)?;
        plane.wait_ready()?;
        plane.startup = started.elapsed();
        Ok(plane)
    }

    fn spawn_apiserver(&self) -> Result<Child, Error> {
        let path = self.dir.path().join("kube-apiserver.log");
        // Appended to, so the log of a restarted server follows the one before.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        let (binary, args) = &self.apiserver_command;
        spawn(
            Command::new(binary)
                .args(args)
                .stdout(Stdio::null())
                .stderr(log),
        )
    }

    /// Stops kube-apiserver (SIGTERM, then SIGKILL after 10 s); etcd keeps running
    /// with every object, so [`ControlPlane::start_apiserver`] brings the same cluster back.
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            terminate(child);
        }
    }

    /// Starts kube-apiserver again on the same etcd, port and certificates, without
    /// waiting for it (see [`ControlPlane::wait_apiserver_ready`]). Like
    /// [`ControlPlane::start`], it must be called from the thread that started the
    /// control plane, since the server dies with the thread that spawned it.
    pub fn start_apiserver(&mut self) -> Result<(), Error> {
        if self.apiserver.is_some() {
            return Ok(());
        }
        self.apiserver = Some(self.spawn_apiserver()?);
        Ok(())
    }

    /// Waits (asynchronously) until kube-apiserver answers `/readyz` with `ok`.
    pub async fn wait_apiserver_ready(&self, timeout: Duration) -> Result<Duration, Error> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < timeout {
            let ready = async {
                let client = crate::client_for(&self.kubeconfig).await?;
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| Error::Kube(e.to_string()))?;
                client
                    .request_text(req)
                    .await
                    .map_err(|e| Error::Kube(e.to_string()))
            }
            .await;
            match ready {
                Ok(body) if body == "ok" => return Ok(started.elapsed()),
                other => last = format!("{other:?}"),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::NotReady {
            waited: timeout,
            last,
            log_tail: log_tail(&self.dir.path().join("kube-apiserver.log")),
        })
    }

    /// The process ids of etcd and kube-apiserver, while they run.
    pub fn pids(&self) -> Vec<u32> {
        [&self.etcd, &self.apiserver]
            .into_iter()
            .flatten()
            .map(Child::id)
            .collect()
    }

    /// The directory holding certificates, data and the two processes' logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn write_kubeconfig(&self, pki: &Pki) -> Result<(), Error> {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "testenv", "cluster": {
                "server": self.server,
                "certificate-authority-data": b64(&pki.ca_cert),
            }}],
            "users": [{"name": "admin", "user": {
                "client-certificate-data": b64(&pki.admin_cert),
                "client-key-data": b64(&pki.admin_key),
            }}],
            "contexts": [{"name": "testenv", "context": {"cluster": "testenv", "user": "admin"}}],
            "current-context": "testenv",
        });
        let yaml = serde_yaml::to_string(&config).map_err(|e| Error::Pki(e.to_string()))?;
        std::fs::write(&self.kubeconfig, yaml).map_err(|e| Error::io(&self.kubeconfig, e))
    }

    fn wait_ready(&mut self) -> Result<(), Error> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| Error::io(Path::new("tokio runtime"), e))?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let kubeconfig = self.kubeconfig.clone();
        loop {
            for (name, child) in [
                ("etcd", &mut self.etcd),
                ("kube-apiserver", &mut self.apiserver),
            ] {
                if let Some(c) = child
                    && let Ok(Some(status)) = c.try_wait()
                {
                    return Err(Error::Exited {
                        name,
                        status: status.to_string(),
                        log_tail: log_tail(&self.dir.path().join(format!("{name}.log"))),
                    });
                }
            }
            let ready = runtime.block_on(async {
                let client = crate::client_for(&kubeconfig).await?;
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| Error::Kube(e.to_string()))?;
                client
                    .request_text(req)
                    .await
                    .map_err(|e| Error::Kube(e.to_string()))
            });
            if matches!(ready.as_deref(), Ok("ok")) {
                break;
            }
            if Instant::now() > deadline {
                return Err(Error::NotReady {
                    waited: READY_TIMEOUT,
                    last: format!("{ready:?}"),
                    log_tail: log_tail(&self.dir.path().join("kube-apiserver.log")),
                });
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        runtime.block_on(async {
            let client = crate::client_for(&kubeconfig).await?;
            crate::install_crds(&client).await
        })
    }

    /// Stops both processes (apiserver first) and removes the directory.
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            terminate(child);
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.kill();
    }
}

const DIR_PREFIX: &str = "promotion-testenv-";
const OWNER_FILE: &str = "owner.pid";

/// Removes the directories of control planes whose owning process died without
/// cleaning up (killed by a signal: its children died with it, its files did not).
fn sweep_abandoned() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let is_ours = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(DIR_PREFIX));
        if !is_ours {
            continue;
        }
        let owner = std::fs::read_to_string(path.join(OWNER_FILE))
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        if let Some(pid) = owner
            && !Path::new(&format!("/proc/{pid}")).exists()
        {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

fn terminate(mut child: Child) {
    // SAFETY: sending a signal to a child we spawned and have not reaped.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn spawn(cmd: &mut Command) -> Result<Child, Error> {
    // SAFETY: prctl is async-signal-safe; it makes the child die with the thread
    // that spawned it, so a test binary killed by a signal never leaks a control plane.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn()
        .map_err(|e| Error::io(Path::new(cmd.get_program()), e))
}

fn free_port() -> Result<u16, Error> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| Error::io(Path::new("127.0.0.1:0"), e))
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

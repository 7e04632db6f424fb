//! Finding, and when missing building, the upstream etcd and kube-apiserver.
//!
//! No prebuilt Kubernetes binary can be downloaded here, so both are compiled
//! from their Go modules (see `tools/control-plane/go.mod`) and cached outside
//! the work tree, keyed by version: the second run costs nothing.

use crate::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes release the control plane is built from (matches k8s-openapi's `v1_37`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The etcd release, the one Kubernetes 1.37 itself requires.
pub const ETCD_VERSION: &str = "v3.7.0";

/// Where the two binaries of one version pair live.
#[derive(Clone, Debug)]
pub struct Binaries {
    /// The etcd server.
    pub etcd: PathBuf,
    /// The Kubernetes API server.
    pub kube_apiserver: PathBuf,
}

/// The cache root: `$PROMOTION_CACHE_DIR`, else `$XDG_CACHE_HOME/promotion-controller`,
/// else `~/.cache/promotion-controller`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("PROMOTION_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("promotion-controller")
}

/// The directory of the pinned version pair.
pub fn version_dir() -> PathBuf {
    cache_root()
        .join("control-plane")
        .join(format!("{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}"))
}

/// The binaries, if both are already built.
pub fn cached() -> Option<Binaries> {
    let dir = version_dir();
    let bins = Binaries {
        etcd: dir.join("etcd"),
        kube_apiserver: dir.join("kube-apiserver"),
    };
    (bins.etcd.is_file() && bins.kube_apiserver.is_file()).then_some(bins)
}

/// The Go tool module that pins both builds.
pub fn tool_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/control-plane")
}

/// Returns the cached binaries, building the missing ones first (minutes, once).
pub fn ensure_built() -> Result<Binaries, Error> {
    if let Some(bins) = cached() {
        return Ok(bins);
    }
    let dir = version_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // Two test binaries may ask at once; only one builds, the other waits.
    let _lock = FileLock::acquire(&dir.join(".build.lock"))?;
    build_one(
        "etcd",
        &format!("go.etcd.io/etcd/server/v3 {ETCD_VERSION}"),
        "go.etcd.io/etcd/server/v3",
        &dir.join("etcd"),
    )?;
    build_one(
        "kube-apiserver",
        &format!("k8s.io/kubernetes {KUBERNETES_VERSION}"),
        "k8s.io/kubernetes/cmd/kube-apiserver",
        &dir.join("kube-apiserver"),
    )?;
    cached().ok_or_else(|| Error::Build("binaries missing after a successful build".into()))
}

fn build_one(name: &str, module: &str, package: &str, out: &Path) -> Result<(), Error> {
    if out.is_file() {
        return Ok(());
    }
    let minor = KUBERNETES_VERSION
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0");
    let ldflags = format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} \
         -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean"
    );
    let tmp = out.with_extension("partial");
    eprintln!(
        "[control-plane] building {name} from {module} (first time only; a cold build takes minutes)"
    );
    let started = Instant::now();
    let mut child = Command::new("go")
        .current_dir(tool_module())
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-v", "-trimpath", "-ldflags", &ldflags, "-o"])
        .arg(&tmp)
        .arg(package)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Build(format!("cannot run `go` (is Go installed?): {e}")))?;
    let mut compiled = 0usize;
    let mut last_report = Instant::now();
    let mut tail: Vec<String> = Vec::new();
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            compiled += 1;
            if last_report.elapsed() > Duration::from_secs(15) {
                eprintln!(
                    "[control-plane]   {name}: {compiled} packages, {:.0?} elapsed",
                    started.elapsed()
                );
                last_report = Instant::now();
            }
            tail.push(line);
            if tail.len() > 40 {
                tail.remove(0);
            }
        }
    }
    let status = child.wait().map_err(|e| Error::Build(e.to_string()))?;
    if !status.success() {
        return Err(Error::Build(format!(
            "go build {package} failed ({status}):\n{}",
            tail.join("\n")
        )));
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    eprintln!("[control-plane] built {name} in {:.0?}", started.elapsed());
    Ok(())
}

/// An exclusive `flock` held until dropped.
struct FileLock {
    _file: std::fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<Self, Error> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // SAFETY: flock on a file descriptor we own; it is released when the file closes.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc != 0 {
            return Err(Error::io(path, std::io::Error::last_os_error()));
        }
        Ok(Self { _file: file })
    }
}

//! Finding, and when missing building, the upstream etcd, kube-apiserver and helm.
//!
//! No prebuilt binary can be downloaded here, so each is compiled from its Go
//! module (pinned in `tools/control-plane/go.mod` and `tools/helm/go.mod`) and
//! cached outside the work tree, keyed by version: the second run costs nothing.

use crate::Error;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Kubernetes release the control plane is built from (matches k8s-openapi's `v1_37`).
pub const KUBERNETES_VERSION: &str = "v1.37.2";
/// The etcd release, the one Kubernetes 1.37 itself requires.
pub const ETCD_VERSION: &str = "v3.7.0";
/// The Helm release the deploy tests install the chart with (pinned in `tools/helm/go.mod`).
pub const HELM_VERSION: &str = "v4.3.1";

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

/// The Go tool module that pins both control-plane builds.
pub fn tool_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/control-plane")
}

/// The Go tool module that pins the helm build.
pub fn helm_tool_module() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/helm")
}

/// The directory of the pinned helm version.
pub fn helm_dir() -> PathBuf {
    cache_root().join("helm").join(HELM_VERSION)
}

/// The helm binary, if already built.
pub fn cached_helm() -> Option<PathBuf> {
    let helm = helm_dir().join("helm");
    helm.is_file().then_some(helm)
}

/// Returns the cached helm binary, building it first when missing (a minute or
/// more, once), behind the same lock as the control plane's builds.
pub fn ensure_helm() -> Result<PathBuf, Error> {
    if let Some(helm) = cached_helm() {
        return Ok(helm);
    }
    let dir = helm_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let _lock = FileLock::acquire(&build_lock()?)?;
    let ldflags = format!("-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}");
    build_one(&GoBuild {
        name: "helm",
        module: &format!("helm.sh/helm/v4 {HELM_VERSION}"),
        package: "helm.sh/helm/v4/cmd/helm",
        tool_module: helm_tool_module(),
        ldflags,
        out: dir.join("helm"),
    })?;
    cached_helm().ok_or_else(|| Error::Build("helm missing after a successful build".into()))
}

/// One lock for every build into the cache: two Go builds at once on a small
/// machine take longer than one after the other.
fn build_lock() -> Result<PathBuf, Error> {
    let root = cache_root();
    std::fs::create_dir_all(&root).map_err(|e| Error::io(&root, e))?;
    Ok(root.join(".build.lock"))
}

/// Returns the cached binaries, building the missing ones first (minutes, once).
pub fn ensure_built() -> Result<Binaries, Error> {
    if let Some(bins) = cached() {
        return Ok(bins);
    }
    let dir = version_dir();
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    // Two test binaries may ask at once; only one builds, the other waits.
    let _lock = FileLock::acquire(&build_lock()?)?;
    let ldflags = kubernetes_ldflags();
    build_one(&GoBuild {
        name: "etcd",
        module: &format!("go.etcd.io/etcd/server/v3 {ETCD_VERSION}"),
        package: "go.etcd.io/etcd/server/v3",
        tool_module: tool_module(),
        ldflags: ldflags.clone(),
        out: dir.join("etcd"),
    })?;
    build_one(&GoBuild {
        name: "kube-apiserver",
        module: &format!("k8s.io/kubernetes {KUBERNETES_VERSION}"),
        package: "k8s.io/kubernetes/cmd/kube-apiserver",
        tool_module: tool_module(),
        ldflags,
        out: dir.join("kube-apiserver"),
    })?;
    cached().ok_or_else(|| Error::Build("binaries missing after a successful build".into()))
}

/// What one `go build` of a pinned command makes.
struct GoBuild<'a> {
    /// The binary's name, for progress lines.
    name: &'a str,
    /// The module and version, for progress lines.
    module: &'a str,
    /// The package of the command.
    package: &'a str,
    /// The tool module whose go.mod pins it.
    tool_module: PathBuf,
    ldflags: String,
    out: PathBuf,
}

/// The version stamp Kubernetes' own build puts in its binaries.
fn kubernetes_ldflags() -> String {
    let minor = KUBERNETES_VERSION
        .trim_start_matches('v')
        .split('.')
        .nth(1)
        .unwrap_or("0");
    format!(
        "-s -w -X k8s.io/component-base/version.gitVersion={KUBERNETES_VERSION} \
         -X k8s.io/component-base/version.gitMajor=1 \
         -X k8s.io/component-base/version.gitMinor={minor} \
         -X k8s.io/component-base/version.gitTreeState=clean"
    )
}

fn build_one(build: &GoBuild<'_>) -> Result<(), Error> {
    let GoBuild {
        name,
        module,
        package,
        ..
    } = *build;
    let out = build.out.as_path();
    if out.is_file() {
        return Ok(());
    }
    let tmp = out.with_extension("partial");
    eprintln!(
        "[build] building {name} from {module} (first time only; a cold build takes minutes)"
    );
    let started = Instant::now();
    let mut child = Command::new("go")
        .current_dir(&build.tool_module)
        .env("CGO_ENABLED", "0")
        .env("GOTOOLCHAIN", "local")
        .args(["build", "-v", "-trimpath", "-ldflags", &build.ldflags, "-o"])
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
                    "[build]   {name}: {compiled} packages, {:.0?} elapsed",
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
    eprintln!("[build] built {name} in {:.0?}", started.elapsed());
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

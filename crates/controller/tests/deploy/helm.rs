//! The real `helm` (built once from its Go module by promotion-testenv, see
//! tools/helm), run as a user would: `lint --strict`, `template`, `install`,
//! `upgrade` and `get`, each in a Helm home of its own so nothing outside the
//! test is read or written.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A helm binary with private config, cache and data directories.
pub struct Helm {
    bin: PathBuf,
    home: PathBuf,
}

/// Where a release goes.
pub struct Release<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
}

impl Helm {
    /// The pinned helm, built first if the cache has none (`cargo xtask test` builds it beforehand).
    pub fn new(tag: &str) -> Self {
        let bin = tokio::task::block_in_place(promotion_testenv::binaries::ensure_helm)
            .unwrap_or_else(|e| panic!("helm is unavailable: {e}"));
        let home = std::env::temp_dir().join(format!(
            "promotion-helm-{tag}-{}-{:08x}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&home).unwrap_or_else(|e| panic!("{}: {e}", home.display()));
        Self { bin, home }
    }

    /// Runs helm with `args`; its stdout, or an error with everything it said.
    pub fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.bin)
            .args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("HELM_CONFIG_HOME", self.home.join("config"))
            .env("HELM_CACHE_HOME", self.home.join("cache"))
            .env("HELM_DATA_HOME", self.home.join("data"))
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .output()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err(format!(
                "helm {} failed ({}):\n{}{}",
                args.join(" "),
                out.status,
                stdout,
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    }

    /// Writes `values` to a file in the Helm home, for `-f`.
    pub fn values_file(&self, name: &str, values: &serde_yaml::Value) -> PathBuf {
        let path = self.home.join(format!("{name}.yaml"));
        let text = serde_yaml::to_string(values).expect("values serialize");
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path
    }

    /// `helm lint --strict` of the chart with `values`: the whole output on success.
    pub fn lint(&self, chart: &Path, values: &serde_yaml::Value) -> Result<String, String> {
        let file = self.values_file("lint-values", values);
        self.run(&[
            "lint",
            "--strict",
            &chart.display().to_string(),
            "-f",
            &file.display().to_string(),
        ])
    }

    /// `helm template --include-crds`: what an install would send, as YAML text.
    pub fn template(
        &self,
        chart: &Path,
        release: &Release<'_>,
        values: &serde_yaml::Value,
    ) -> Result<String, String> {
        let file = self.values_file(&format!("template-{}", release.name), values);
        self.run(&[
            "template",
            release.name,
            &chart.display().to_string(),
            "--namespace",
            release.namespace,
            "--include-crds",
            "-f",
            &file.display().to_string(),
        ])
    }

    /// `helm install` (or, when `upgrade`, `helm upgrade`) into the control plane of `kubeconfig`.
    pub fn install(
        &self,
        kubeconfig: &Path,
        chart: &Path,
        release: &Release<'_>,
        values: &serde_yaml::Value,
        upgrade: bool,
    ) -> Result<String, String> {
        let verb = if upgrade { "upgrade" } else { "install" };
        let file = self.values_file(&format!("{verb}-{}", release.name), values);
        self.run(&[
            verb,
            release.name,
            &chart.display().to_string(),
            "--namespace",
            release.namespace,
            "--kubeconfig",
            &kubeconfig.display().to_string(),
            "-f",
            &file.display().to_string(),
        ])
    }

    /// `helm get <what> <release>` (manifest, notes, values) from the control plane.
    pub fn get(
        &self,
        kubeconfig: &Path,
        what: &str,
        release: &Release<'_>,
    ) -> Result<String, String> {
        self.run(&[
            "get",
            what,
            release.name,
            "--namespace",
            release.namespace,
            "--kubeconfig",
            &kubeconfig.display().to_string(),
        ])
    }
}

impl Drop for Helm {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    h.finish() as u32
}

//! Developer tasks: `cargo xtask <command>`.

mod bench;
mod chaos;
mod demo;
mod process;
mod world;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::discovery::{ApiResource, Discovery, Scope};
use promotion_testenv::{ControlPlane, binaries};
use serde::Deserialize as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

#[derive(Parser)]
#[command(about = "promotion-controller developer tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the CRDs and their field reference generated from crates/api (or check them with --check).
    Crdgen {
        /// Fail when the committed YAML differs from what the types generate.
        #[arg(long)]
        check: bool,
    },
    /// Build (once, cached) the upstream etcd and kube-apiserver; with --up, start them and wait.
    ControlPlane {
        /// Start the control plane, write its kubeconfig and keep it running until Ctrl-C.
        #[arg(long)]
        up: bool,
    },
    /// The whole test suite on one real control plane: builds what it needs, then `cargo test --workspace`.
    Test {
        /// Extra arguments passed to `cargo test`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// The main job: the real controller carries a PR from dev to prod on a local control plane (stand-ins for CI, GitHub, Argo CD).
    Demo,
    /// Measure hops per second, latency, memory and API cost with N trackers (see BENCHMARKS.md).
    Bench(bench::BenchArgs),
    /// N PRs through two hops while the real controller is SIGKILLed and the apiserver restarted; fails on any duplicate trigger or promotion.
    Chaos(chaos::ChaosArgs),
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Crdgen { check } => crdgen(check),
        Cmd::ControlPlane { up } => control_plane(up),
        Cmd::Test { args } => test(&args),
        Cmd::Demo => demo(),
        Cmd::Bench(args) => {
            let plane = start_control_plane()?;
            let result = bench::run(&workspace_root(), &plane.kubeconfig, &args);
            plane.stop();
            result
        }
        Cmd::Chaos(args) => chaos_command(&args),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn crdgen(check: bool) -> Result<()> {
    // Helm installs CRDs only from the chart's own crds/ folder, so it gets a copy.
    let dirs = [
        workspace_root().join("deploy/crds"),
        workspace_root().join("deploy/helm/promotion-controller/crds"),
    ];
    let mut stale = Vec::new();
    for (dir, crd) in dirs
        .iter()
        .flat_map(|d| promotion_api::crds().into_iter().map(move |c| (d, c)))
    {
        std::fs::create_dir_all(dir)?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        let path = dir.join(format!("{name}.yaml"));
        let yaml = promotion_api::crd_yaml(&crd)?;
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == yaml {
            continue;
        }
        if check {
            stale.push(path.display().to_string());
        } else {
            std::fs::write(&path, yaml)?;
            println!("wrote {}", path.display());
        }
    }
    let reference = workspace_root().join("docs/crd-reference.md");
    let markdown = promotion_api::reference::markdown(&promotion_api::crds());
    if std::fs::read_to_string(&reference).unwrap_or_default() != markdown {
        if check {
            stale.push(reference.display().to_string());
        } else {
            std::fs::create_dir_all(workspace_root().join("docs"))?;
            std::fs::write(&reference, markdown)?;
            println!("wrote {}", reference.display());
        }
    }
    if !stale.is_empty() {
        bail!(
            "generated files out of date (run `cargo xtask crdgen`): {}",
            stale.join(", ")
        );
    }
    Ok(())
}

/// Starts a control plane for a task, printing how long it took.
fn start_control_plane() -> Result<ControlPlane> {
    let built = Instant::now();
    let bins = binaries::ensure_built()?;
    println!(
        "[control-plane] kube-apiserver {} + etcd {} ready to run ({:.1?}; cache: {})",
        binaries::KUBERNETES_VERSION,
        binaries::ETCD_VERSION,
        built.elapsed(),
        binaries::version_dir().display()
    );
    let plane = ControlPlane::start(&bins)?;
    println!(
        "[control-plane] up at {} in {:.1?} (CRDs installed)",
        plane.server, plane.startup
    );
    Ok(plane)
}

/// A stable copy of the kubeconfig, so `kubectl --kubeconfig target/testenv/kubeconfig` works.
fn publish_kubeconfig(plane: &ControlPlane) -> Result<PathBuf> {
    let dir = workspace_root().join("target/testenv");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("kubeconfig");
    std::fs::copy(&plane.kubeconfig, &path)?;
    Ok(path)
}

fn control_plane(up: bool) -> Result<()> {
    if !up {
        let started = Instant::now();
        let bins = binaries::ensure_built()?;
        println!(
            "etcd:           {}\nkube-apiserver: {}\n({:.1?})",
            bins.etcd.display(),
            bins.kube_apiserver.display(),
            started.elapsed()
        );
        return Ok(());
    }
    let plane = start_control_plane()?;
    let kubeconfig = publish_kubeconfig(&plane)?;
    println!("export KUBECONFIG={}", kubeconfig.display());
    println!("logs: {}\nPress Ctrl-C to stop.", plane.dir().display());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(tokio::signal::ctrl_c())?;
    plane.stop();
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let started = Instant::now();
    crdgen(true)?;
    // The deploy tests install the chart with the real helm: built here, once, so
    // no test waits on the build.
    let helm = binaries::ensure_helm()?;
    println!(
        "[helm] {} ready to run ({:.1?}; cache: {})",
        binaries::HELM_VERSION,
        started.elapsed(),
        helm.display()
    );
    let plane = start_control_plane()?;
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace_root())
        .args(["test", "--workspace", "--all-targets"])
        .args(args)
        .env(promotion_testenv::KUBECONFIG_ENV, &plane.kubeconfig)
        .status()
        .context("running cargo test")?;
    plane.stop();
    println!("[xtask test] finished in {:.1?}", started.elapsed());
    if !status.success() {
        bail!("cargo test failed ({status})");
    }
    Ok(())
}

fn chaos_command(args: &chaos::ChaosArgs) -> Result<()> {
    let root = workspace_root();
    println!("[chaos] building the controller binary (cargo build -p promotion-controller)");
    let binary = process::build(&root, false)?;
    // On this thread, which also drives the run: the apiserver it restarts dies with it.
    let mut plane = start_control_plane()?;
    let runtime = tokio::runtime::Runtime::new()?;
    let dir = root.join(format!("target/chaos/seed-{}", args.seed));
    let verdict = runtime.block_on(chaos::run(&mut plane, &binary, &dir, args));
    plane.stop();
    let verdict = verdict?;
    if !verdict.passed() {
        bail!("the chaos run found duplicates or unfinished trackers (see above)");
    }
    Ok(())
}

fn demo() -> Result<()> {
    let plane = start_control_plane()?;
    let kubeconfig = publish_kubeconfig(&plane)?;
    let result = demo::run(&workspace_root(), &plane.kubeconfig);
    if result.is_ok() {
        println!(
            "\nWhile a control plane runs (`cargo xtask control-plane --up`), the same is seen with\n  kubectl --kubeconfig {} get promotion -n demo",
            kubeconfig.display()
        );
    }
    plane.stop();
    result
}

/// Server-side applies every document of a YAML file into `namespace`.
async fn apply_file(client: &Client, namespace: &str, path: &Path) -> Result<usize> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let text = std::fs::read_to_string(path)?;
    let mut count = 0;
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let value = serde_json::to_value(serde_yaml::Value::deserialize(doc)?)?;
        if value.is_null() {
            continue;
        }
        let obj: DynamicObject = serde_json::from_value(value)?;
        let types = obj
            .types
            .clone()
            .context("document without apiVersion/kind")?;
        let gvk = kube::core::GroupVersionKind::try_from(&types)?;
        let (ar, caps): (ApiResource, _) = discovery
            .resolve_gvk(&gvk)
            .with_context(|| format!("unknown kind {gvk:?}"))?;
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let name = obj
            .metadata
            .name
            .clone()
            .context("document without a name")?;
        api.patch(
            &name,
            &PatchParams::apply("xtask").force(),
            &Patch::Apply(&obj),
        )
        .await
        .with_context(|| format!("applying {} {name}", gvk.kind))?;
        count += 1;
    }
    Ok(count)
}

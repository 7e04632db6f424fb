//! `cargo xtask demo`: the real controller binary carries a PR from dev to prod
//! on a local control plane, with stand-ins for CI, GitHub and Argo CD.

use crate::process::{self, ControllerProcess};
use crate::world::{self, CONTROLLER_NAMESPACE, World, WorldOptions};
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use promotion_api::PullRequestTracker;
use promotion_standins::{CiScript, Outcome};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "demo";
const SHA_42: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA_43: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const JOURNEY_TIMEOUT: Duration = Duration::from_secs(180);

/// Runs both scenarios against an already started control plane.
pub fn run(root: &Path, client_kubeconfig: &Path) -> Result<()> {
    println!(
        "\nWhat is real here: etcd + kube-apiserver v{} (the CRDs, RBAC, watches), and the\n\
         promotion-controller binary itself, built now. What is a stand-in (in this process):\n\
         Jenkins, GitHub Actions and GitLab CI servers that answer their real REST APIs and\n\
         pass or fail as this demo scripts them; a GitHub API that keeps labels and commit\n\
         statuses; and an Argo CD stand-in that marks an Application Synced + Healthy a\n\
         second after its targetRevision is patched.\n",
        promotion_testenv::binaries::KUBERNETES_VERSION.trim_start_matches('v')
    );
    println!("[demo] building the controller binary (cargo build -p promotion-controller)");
    let binary = process::build(root, false)?;
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = promotion_testenv::client_for(client_kubeconfig).await?;
        // Every CI run takes two seconds, so the journey can be followed.
        let script = CiScript::new(Duration::from_secs(2));
        let webhook = process::free_address()?;
        let world = World::start(
            client.clone(),
            WorldOptions {
                script: script.clone(),
                callbacks: true,
                webhook,
                sync_delay: Duration::from_secs(1),
                namespace: NAMESPACE.into(),
                dir: dir.clone(),
            },
        )
        .await?;
        println!(
            "[demo] stand-ins: Jenkins {}  GitLab {}  GitHub {}",
            world.standins.jenkins_url, world.standins.gitlab_url, world.standins.github_url
        );
        world
            .application("shop-dev", SHA_42, NAMESPACE, "dev")
            .await?;
        world
            .application("shop-staging", OLD, NAMESPACE, "staging")
            .await?;
        world
            .application("shop-prod", OLD, NAMESPACE, "prod")
            .await?;
        let policies = root.join("examples/10-policies.yaml");
        let applied = crate::apply_file(&client, NAMESPACE, &policies).await?;
        println!("[demo] applied {} ({applied} policies)", policies.display());

        let log = dir.join("controller.log");
        let mut controller = ControllerProcess::spawn(
            &binary,
            client_kubeconfig,
            &world.config,
            CONTROLLER_NAMESPACE,
            &log,
            webhook,
            // Only the demo's namespace: on a shared control plane (the test suite) other
            // namespaces' trackers would otherwise queue for the same Applications.
            &[
                "--poll-interval".into(),
                "5s".into(),
                "--namespace".into(),
                NAMESPACE.into(),
            ],
        )?;
        let ready = controller.wait_ready(Duration::from_secs(60)).await?;
        println!(
            "[demo] promotion-controller running (pid {}), ready in {ready:.1?}; log: {}",
            controller.pid().unwrap_or_default(),
            log.display()
        );

        let outcome = scenarios(&client, &world, &script).await;
        let metrics = controller.metrics().await.unwrap_or_default();
        let status = controller.stop()?;
        println!("\n[demo] controller stopped on SIGTERM ({status}), Lease released");
        outcome?;
        print_metrics(&metrics);
        anyhow::Ok(())
    })
}

async fn scenarios(client: &Client, world: &World, script: &CiScript) -> Result<()> {
    println!("\n=== Scenario 1: PR acme/shop#42 goes dev -> staging -> prod ===");
    world.open_pull_request("acme", "shop", 42, SHA_42).await?;
    println!("[demo] GitHub sent pull_request 'opened' for #42 to the controller's webhook");
    let done = follow(client, world, "acme-shop-pr-42", 42, SHA_42, |t| {
        phase(t) == "Completed" && env(t) == "prod"
    })
    .await?;
    summary(client, world, &done, 42).await?;

    println!("\n=== Scenario 2: PR acme/shop#43, whose required smoke test fails ===");
    script.set("team-a/smoke-tests", Outcome::Fail, Duration::from_secs(2));
    world.deploy("shop-dev", SHA_43).await?;
    println!("[demo] shop-dev now deploys {}", short(SHA_43));
    world.open_pull_request("acme", "shop", 43, SHA_43).await?;
    let failed = follow(client, world, "acme-shop-pr-43", 43, SHA_43, |t| {
        phase(t) == "Failed"
    })
    .await?;
    println!("\nWhy it failed, as `kubectl describe prt acme-shop-pr-43` shows it:");
    let status = failed.status.clone().unwrap_or_default();
    println!("  message: {}", status.message.unwrap_or_default());
    for c in &status.conditions {
        println!(
            "  condition {}={} reason={} : {}",
            c.type_, c.status, c.reason, c.message
        );
    }
    for run in &status.test_runs {
        println!(
            "  test {} ({}) {} {}",
            run.name,
            value(&run.state),
            run.message.clone().unwrap_or_default(),
            run.url.clone().unwrap_or_default()
        );
    }
    print_events(client, "acme-shop-pr-43").await?;
    print_table(client, "pullrequesttrackers").await?;
    println!(
        "\nA new push (headSha) or `kubectl annotate prt acme-shop-pr-43 promotion.io/retry=1` starts the gate again."
    );
    plugin_views(client).await
}

/// Where the dashboard's screenshot goes: README's picture, except from the test.
fn screenshot_path() -> std::path::PathBuf {
    let root = crate::workspace_root();
    if cfg!(test) {
        root.join("target/demo/dashboard.png")
    } else {
        root.join("docs/dashboard.png")
    }
}

/// The end of the demo: what `kubectl promotion status` and `explain` say about
/// both PRs, and a screenshot of `kubectl promotion dashboard`.
async fn plugin_views(client: &Client) -> Result<()> {
    use kubectl_promotion::cli::{Command, run_with};
    use kubectl_promotion::cluster::Cluster;
    use kubectl_promotion::text::Paint;
    let cluster = Cluster::from_client(client.clone(), NAMESPACE);
    println!("\n$ kubectl promotion status -n {NAMESPACE}");
    let mut out = Vec::new();
    let status = Command::Status {
        all_namespaces: false,
        output: None,
    };
    run_with(
        &cluster,
        Some(NAMESPACE.into()),
        status,
        &mut out,
        Paint(false),
    )
    .await?;
    print!("{}", String::from_utf8_lossy(&out));
    println!("\n$ kubectl promotion explain 43 -n {NAMESPACE}");
    let mut out = Vec::new();
    let explain = Command::Explain {
        pr: "43".into(),
        output: None,
    };
    let code = run_with(
        &cluster,
        Some(NAMESPACE.into()),
        explain,
        &mut out,
        Paint(false),
    )
    .await?;
    print!("{}", String::from_utf8_lossy(&out));
    println!("(exit code {code}: 0 moving, 1 waits on a person, 2 failed)");

    let server = kubectl_promotion::dashboard::Server::bind(cluster, NAMESPACE.into(), 0).await?;
    let url = format!("http://{}/ns/{NAMESPACE}", server.address());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let path = screenshot_path();
    let shot = path.clone();
    let taken = tokio::task::spawn_blocking(move || {
        kubectl_promotion::browser::screenshot(&url, &shot, 1400, 760)
    })
    .await?;
    let _ = stop.send(());
    let _ = serving.await;
    // The picture is a bonus: a machine without Chromium still runs the demo.
    match taken {
        Ok(()) => println!(
            "\n[demo] `kubectl promotion dashboard` (a live page per namespace) saved as {}",
            path.display()
        ),
        Err(e) => println!("\n[demo] no dashboard screenshot: {e}"),
    }
    Ok(())
}

/// Prints the tracker's journey and what the stand-ins were asked, until `done` holds.
async fn follow(
    client: &Client,
    world: &World,
    name: &str,
    number: u64,
    sha: &str,
    done: impl Fn(&PullRequestTracker) -> bool,
) -> Result<PullRequestTracker> {
    let started = Instant::now();
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), NAMESPACE);
    let mut stream = watcher::watcher(
        api.clone(),
        watcher::Config::default().fields(&format!("metadata.name={name}")),
    )
    .applied_objects()
    .boxed();
    // Only what happens from now on: the stand-ins remember earlier scenarios too.
    let mut seen = Seen {
        triggers: world.standins.journal.triggers().len(),
        finished: world.standins.journal.finished().len(),
        ..Seen::default()
    };
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let mut approved = false;
    loop {
        tokio::select! {
            next = stream.next() => {
                let tracker = match next {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => { tracing_free_warn(&e); continue; }
                    None => bail!("the tracker watch ended"),
                };
                seen.tracker(started, &tracker);
                if phase(&tracker) == "AwaitingApproval" && !approved {
                    approved = true;
                    let target = tracker.status.as_ref()
                        .and_then(|s| s.policy.as_ref())
                        .map(|p| p.name.clone())
                        .unwrap_or_default();
                    let short_sha: String = sha.chars().take(7).collect();
                    println!(
                        "{}  a human approves: kubectl annotate prt {name} promotion.io/approve=prod@{short_sha} promotion.io/approved-by=alice   (policy {target} has autoPromote: false)",
                        stamp(started)
                    );
                    // An approval names the commit it approves: a later push needs a new one.
                    let patch = serde_json::json!({"metadata": {"annotations": {
                        "promotion.io/approve": format!("prod@{short_sha}"), "promotion.io/approved-by": "alice"}}});
                    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
                }
                if done(&tracker) {
                    seen.journal(started, world, number, sha);
                    return Ok(tracker);
                }
            }
            _ = tick.tick() => {
                seen.journal(started, world, number, sha);
                if started.elapsed() > JOURNEY_TIMEOUT {
                    bail!("{name} did not get there within {JOURNEY_TIMEOUT:?}; see target/demo/controller.log");
                }
            }
        }
    }
}

fn tracing_free_warn(e: &watcher::Error) {
    eprintln!("[demo] watch error (retrying): {e}");
}

/// What has been printed already, so only changes are.
#[derive(Default)]
struct Seen {
    phase: String,
    runs: BTreeMap<String, String>,
    promotions: usize,
    triggers: usize,
    finished: usize,
    labels: BTreeSet<String>,
    statuses: usize,
}

impl Seen {
    fn tracker(&mut self, started: Instant, t: &PullRequestTracker) {
        let status = t.status.clone().unwrap_or_default();
        let line = format!(
            "{:<9} {:<17} {}",
            status.current_environment.clone().unwrap_or_default(),
            phase(t),
            status.message.clone().unwrap_or_default()
        );
        if line != self.phase && t.status.is_some() {
            println!(
                "{}  {}  {line}",
                stamp(started),
                t.metadata.name.clone().unwrap_or_default()
            );
            self.phase = line;
        }
        for run in &status.test_runs {
            let key = format!(
                "{}/{}",
                status.current_environment.clone().unwrap_or_default(),
                run.name
            );
            let state = format!(
                "{} {}",
                value(&run.state),
                run.url.clone().unwrap_or_default()
            );
            if self.runs.get(&key) != Some(&state) {
                println!(
                    "{}      test {:<13} {:<15} {:<8} {state}",
                    stamp(started),
                    run.name,
                    value(&run.provider),
                    if run.required { "required" } else { "optional" },
                );
                self.runs.insert(key, state);
            }
        }
        for p in status.promotions.iter().skip(self.promotions) {
            println!(
                "{}  PROMOTED {} -> {} at {} by {} (policy {}; gated by {})",
                stamp(started),
                p.source,
                p.target,
                short(&p.revision),
                p.promoted_by,
                p.policy,
                p.test_runs
                    .iter()
                    .map(|r| format!("{}={}", r.name, value(&r.state)))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        self.promotions = self.promotions.max(status.promotions.len());
    }

    fn journal(&mut self, started: Instant, world: &World, number: u64, sha: &str) {
        let journal = &world.standins.journal;
        let triggers = journal.triggers();
        for t in triggers.iter().skip(self.triggers) {
            println!(
                "{}      [{} stand-in] started {} run {}  {}",
                stamp(started),
                t.provider,
                t.job,
                t.run_id,
                t.url
            );
        }
        self.triggers = self.triggers.max(triggers.len());
        let finished = journal.finished();
        for f in finished.iter().skip(self.finished) {
            println!(
                "{}      [{} stand-in] {} run {} {}",
                stamp(started),
                f.provider,
                f.job,
                f.run_id,
                if f.passed { "passed" } else { "FAILED" }
            );
        }
        self.finished = self.finished.max(finished.len());
        let labels: BTreeSet<String> = journal.labels("acme", "shop", number).into_iter().collect();
        for l in labels.difference(&self.labels) {
            println!(
                "{}      [GitHub stand-in] label '{l}' added to acme/shop#{number}",
                stamp(started)
            );
        }
        self.labels = labels;
        let statuses = journal.statuses(sha);
        for s in statuses.iter().skip(self.statuses) {
            println!(
                "{}      [GitHub stand-in] commit status {} = {} on {}",
                stamp(started),
                s.context,
                s.state,
                short(sha)
            );
        }
        self.statuses = self.statuses.max(statuses.len());
    }
}

async fn summary(
    client: &Client,
    world: &World,
    t: &PullRequestTracker,
    number: u64,
) -> Result<()> {
    let status = t.status.clone().unwrap_or_default();
    println!("\nThe audit trail in status.promotions:");
    for p in &status.promotions {
        println!(
            "  {} -> {}  revision {}  at {}  by {}  policy {}",
            p.source,
            p.target,
            short(&p.revision),
            p.promoted_at.0,
            p.promoted_by,
            p.policy
        );
        for r in &p.test_runs {
            println!(
                "      {} ({}) {} run {} {}",
                r.name,
                value(&r.provider),
                value(&r.state),
                r.run_id.clone().unwrap_or_default(),
                r.url.clone().unwrap_or_default()
            );
        }
    }
    println!(
        "Labels on acme/shop#{number}: {:?}",
        world.standins.journal.labels("acme", "shop", number)
    );
    let apps = world::applications(client);
    for name in ["shop-dev", "shop-staging", "shop-prod"] {
        let app = apps.get(name).await?;
        let revision = app.data["spec"]["source"]["targetRevision"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let synced = app.data["status"]["sync"]["status"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        println!(
            "Application {name}: targetRevision {} ({synced})",
            short(&revision)
        );
    }
    print_table(client, "promotionpolicies").await?;
    print_table(client, "pullrequesttrackers").await?;
    Ok(())
}

async fn print_table(client: &Client, plural: &str) -> Result<()> {
    println!("\n$ kubectl get {plural} -n {NAMESPACE}");
    let table = promotion_testenv::table::get(client, plural, NAMESPACE).await?;
    print!("{}", promotion_testenv::table::render(&table));
    Ok(())
}

async fn print_events(client: &Client, name: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NAMESPACE);
    let list = api
        .list(&kube::api::ListParams::default())
        .await
        .context("listing Events")?;
    println!("\nEvents of {name}:");
    for e in list
        .items
        .iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
    {
        println!(
            "  {:<8} {:<18} {}",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.note.clone().unwrap_or_default()
        );
    }
    Ok(())
}

fn print_metrics(text: &str) {
    println!("\nA few of the controller's /metrics:");
    for line in text.lines().filter(|l| {
        !l.starts_with('#')
            && (l.starts_with("promotion_promotions_total")
                || l.starts_with("promotion_trackers{")
                || l.starts_with("promotion_test_runs_total"))
    }) {
        println!("  {line}");
    }
}

fn stamp(started: Instant) -> String {
    format!("{:>6.1}s", started.elapsed().as_secs_f64())
}

fn phase(t: &PullRequestTracker) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.phase.as_ref())
        .map(value)
        .unwrap_or_else(|| "-".into())
}

fn env(t: &PullRequestTracker) -> String {
    t.status
        .as_ref()
        .and_then(|s| s.current_environment.clone())
        .unwrap_or_default()
}

/// The serialized name of an enum value ("Testing", "github-actions").
fn value<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    /// README's first command, on the test run's control plane: PR #42 must end Completed
    /// in prod and PR #43 Failed, or `run` returns the error.
    #[test]
    fn the_demo_ends_with_the_pr_completed_in_prod() {
        let kubeconfig = promotion_testenv::shared_kubeconfig().expect("a control plane");
        super::run(&crate::workspace_root(), &kubeconfig).expect("the demo");
    }
}

//! `cargo xtask bench`: N trackers through two hops each, on the local control
//! plane, with the real controller binary and CI stand-ins that answer at once.
//!
//! Nothing here asserts a time: it prints one table (and writes it to
//! `target/bench/`), to be read as ratios and medians on a shared machine.

use crate::process::{self, ControllerProcess};
use crate::world::{CONTROLLER_NAMESPACE, World, WorldOptions};
use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use promotion_api::{PromotionPolicy, PullRequestTracker};
use promotion_standins::CiScript;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

const SHA: &str = "b3e1c0ffee0ddba11deadbeefcafef00d1234567";
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

/// `cargo xtask bench` options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Trackers in the run with CI callbacks (each goes dev -> staging -> prod).
    #[arg(long, default_value_t = 1000)]
    pub trackers: usize,
    /// Trackers in the polling-only run (no callbacks; the controller's default 10 s poll).
    #[arg(long, default_value_t = 200)]
    pub polling_trackers: usize,
    /// How long each CI run takes in the stand-ins (the API itself answers at once).
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub run_time: Duration,
    /// Seconds of the bare status-patch loop used as the yardstick.
    #[arg(long, default_value_t = 10)]
    pub patch_seconds: u64,
    /// Extra flags for the controller (e.g. `--max-concurrent-reconciles=64`).
    #[arg(long, allow_hyphen_values = true)]
    pub controller_flag: Vec<String>,
}

/// What one run measured.
struct Measured {
    trackers: usize,
    hops: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    peak_rss_kb: u64,
    cpu_seconds: f64,
    requests: BTreeMap<String, f64>,
}

impl Measured {
    fn hops_per_second(&self) -> f64 {
        self.hops as f64 / self.wall.as_secs_f64()
    }

    fn requests_total(&self) -> f64 {
        self.requests.values().sum()
    }
}

/// Runs the baseline, the callback run and the polling-only run, and prints the table.
pub fn run(root: &Path, kubeconfig: &Path, args: &BenchArgs) -> Result<()> {
    println!("[bench] building the controller (release)");
    let binary = process::build(root, true)?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = promotion_testenv::client_for(kubeconfig).await?;
        let baseline = bare_patch_rate(&client, Duration::from_secs(args.patch_seconds)).await?;
        println!("[bench] bare status-patch loop, one client: {baseline:.0} patches/s");
        let with_callbacks = one_run(
            &client,
            &binary,
            kubeconfig,
            &dir,
            args,
            "bench-callbacks",
            args.trackers,
            true,
        )
        .await?;
        let polling = if args.polling_trackers > 0 {
            Some(
                one_run(
                    &client,
                    &binary,
                    kubeconfig,
                    &dir,
                    args,
                    "bench-polling",
                    args.polling_trackers,
                    false,
                )
                .await?,
            )
        } else {
            None
        };
        let table = render(args, baseline, &with_callbacks, polling.as_ref());
        println!("\n{table}");
        let path = dir.join(format!("results-{}.md", args.trackers));
        std::fs::write(&path, &table)?;
        println!("[bench] written to {}", path.display());
        anyhow::Ok(())
    })
}

/// One client, one object, patches in a loop: what this apiserver accepts at best from one writer.
async fn bare_patch_rate(client: &Client, length: Duration) -> Result<f64> {
    let ns = "bench-baseline";
    crate::world::ensure_namespace(client, ns).await?;
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), ns);
    let tracker = tracker("baseline", 1);
    if api.get_opt("baseline").await?.is_none() {
        api.create(&PostParams::default(), &tracker).await?;
    }
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < length {
        let patch = serde_json::json!({"status": {"message": format!("patch {n}")}});
        api.patch_status("baseline", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        n += 1;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

#[allow(clippy::too_many_arguments)]
async fn one_run(
    client: &Client,
    binary: &Path,
    kubeconfig: &Path,
    dir: &Path,
    args: &BenchArgs,
    ns: &str,
    n: usize,
    callbacks: bool,
) -> Result<Measured> {
    println!(
        "\n[bench] {ns}: {n} trackers, {}",
        if callbacks {
            "CI callbacks on"
        } else {
            "polling only"
        }
    );
    let webhook = process::free_address()?;
    let world = World::start(
        client.clone(),
        WorldOptions {
            script: CiScript::new(args.run_time),
            callbacks,
            webhook,
            sync_delay: Duration::from_millis(200),
            namespace: ns.into(),
            dir: dir.join(ns),
        },
    )
    .await?;
    let (dev, staging, prod) = (
        format!("{ns}-dev"),
        format!("{ns}-staging"),
        format!("{ns}-prod"),
    );
    world.application(&dev, SHA, ns, "dev").await?;
    world.application(&staging, OLD, ns, "staging").await?;
    world.application(&prod, OLD, ns, "prod").await?;
    let policies: Api<PromotionPolicy> = Api::namespaced(client.clone(), ns);
    for policy in [
        policy("dev-to-staging", "dev", "staging", &staging, true)?,
        policy("staging-to-prod", "staging", "prod", &prod, false)?,
    ] {
        let name = policy.metadata.name.clone().unwrap_or_default();
        policies
            .patch(
                &name,
                &PatchParams::apply("xtask").force(),
                &Patch::Apply(&policy),
            )
            .await?;
    }

    // Keyed by N too, so a 1,000 run does not overwrite the 10,000 run it follows.
    let log = dir.join(format!("{ns}-{n}-controller.log"));
    let mut extra = vec!["--namespace".to_string(), ns.to_string()];
    extra.extend(args.controller_flag.iter().cloned());
    let mut controller = ControllerProcess::spawn(
        binary,
        kubeconfig,
        &world.config,
        CONTROLLER_NAMESPACE,
        &log,
        webhook,
        &extra,
    )?;
    controller.wait_ready(Duration::from_secs(60)).await?;
    let pid = controller.pid().context("no controller pid")?;
    let before = apiserver_requests(client).await?;
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), ns);

    // Watch before creating, so no promotion is missed.
    let watch = tokio::spawn(observe(api.clone(), n, world.standins.journal.clone()));
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let dev = dev.clone();
            async move {
                let mut t = tracker(&format!("pr-{i}"), i as i64 + 1);
                t.spec.application.name = dev;
                api.create(&PostParams::default(), &t).await
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    println!("[bench] {n} trackers created in {:.1?}", started.elapsed());
    let timeout = Duration::from_secs(600 + n as u64 / 5);
    let latencies = match tokio::time::timeout(timeout, watch).await {
        Ok(joined) => joined??,
        Err(_) => bail!(
            "not every tracker reached prod within {timeout:?}; see {}",
            log.display()
        ),
    };
    let wall = started.elapsed();
    let (peak_rss_kb, cpu_seconds) = process::usage(pid)?;
    // Kept for reading the controller's own view (reconciles by result, its pass-to-promotion histogram).
    let metrics = controller.metrics().await.unwrap_or_default();
    std::fs::write(dir.join(format!("{ns}-{n}-metrics.txt")), metrics)?;
    {
        let mut sorted = latencies.clone();
        sorted.sort();
        println!(
            "[bench] pass -> record: p10 {:?} p50 {:?} p90 {:?} p99 {:?} max {:?} ({} samples)",
            percentile(&sorted, 0.1),
            percentile(&sorted, 0.5),
            percentile(&sorted, 0.9),
            percentile(&sorted, 0.99),
            sorted.last().copied().unwrap_or_default(),
            sorted.len()
        );
    }
    let after = apiserver_requests(client).await?;
    let status = controller.stop()?;
    println!("[bench] controller stopped ({status})");
    let requests = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    Ok(Measured {
        trackers: n,
        hops: 2 * n,
        wall,
        latencies,
        peak_rss_kb,
        cpu_seconds,
        requests,
    })
}

/// A PR tracker entering at dev; all share one head SHA so they can share one Application per environment.
fn tracker(name: &str, number: i64) -> PullRequestTracker {
    PullRequestTracker::new(
        name,
        promotion_api::PullRequestTrackerSpec {
            repository: promotion_api::Repository {
                owner: "acme".into(),
                name: "shop".into(),
            },
            number,
            head_sha: SHA.into(),
            environment: "dev".into(),
            application: promotion_api::ApplicationRef {
                cluster: "in-cluster".into(),
                namespace: crate::world::ARGOCD_NAMESPACE.into(),
                name: "shop-dev".into(),
            },
            closed: false,
        },
    )
}

/// dev -> staging gates on Jenkins + GitHub Actions; staging -> prod on GitLab.
fn policy(
    name: &str,
    source: &str,
    target: &str,
    app: &str,
    first: bool,
) -> Result<PromotionPolicy> {
    let tests = if first {
        serde_json::json!([
            {"name": "smoke", "provider": "jenkins", "job": "bench/smoke", "parameters": {"PR": "${PR_NUMBER}"}},
            {"name": "contract", "provider": "github-actions", "job": "contract.yml", "ref": "main", "parameters": {"sha": "${HEAD_SHA}"}},
        ])
    } else {
        serde_json::json!([
            {"name": "e2e", "provider": "gitlab", "job": "bench/e2e", "ref": "main"},
        ])
    };
    let value = serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1",
        "kind": "PromotionPolicy",
        "metadata": {"name": name},
        "spec": {
            "sourceEnvironment": source,
            "targetEnvironment": target,
            "externalTests": tests,
            "promotion": {
                "application": {"name": app},
                "githubLabel": format!("promoted-to-{target}"),
            },
        },
    });
    Ok(serde_json::from_value(value)?)
}

/// Follows the trackers until all are Completed in prod; returns, per promotion, the time from
/// the last required run finishing (in the stand-in) to the record being seen on the API.
async fn observe(
    api: Api<PullRequestTracker>,
    n: usize,
    journal: promotion_standins::Journal,
) -> Result<Vec<Duration>> {
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut promotions: HashMap<String, usize> = HashMap::new();
    let mut completed = std::collections::HashSet::new();
    // (correlation ids of the required runs, when the record was seen)
    let mut pending: Vec<(Vec<String>, SystemTime)> = Vec::new();
    let mut latencies = Vec::new();
    let mut index = FinishIndex::default();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            next = stream.next() => {
                let t = match next {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => { eprintln!("[bench] watch error (retrying): {e}"); continue; }
                    None => bail!("the tracker watch ended"),
                };
                let seen_at = SystemTime::now();
                let name = t.metadata.name.clone().unwrap_or_default();
                let status = t.status.clone().unwrap_or_default();
                let known = promotions.entry(name.clone()).or_insert(0);
                for record in status.promotions.iter().skip(*known) {
                    let ids = record
                        .test_runs
                        .iter()
                        .filter(|r| r.required)
                        .filter_map(|r| r.correlation_id.clone())
                        .collect();
                    pending.push((ids, seen_at));
                }
                *known = (*known).max(status.promotions.len());
                let done = status.current_environment.as_deref() == Some("prod")
                    && matches!(status.phase, Some(promotion_api::Phase::Completed));
                if done && completed.insert(name) && completed.len() % 1000 == 0 {
                    println!("[bench] {} trackers completed", completed.len());
                }
                if completed.len() == n {
                    index.refresh(&journal);
                    latencies.extend(index.resolve(&mut pending));
                    if !pending.is_empty() {
                        eprintln!("[bench] {} promotions had no matching finished run in the stand-ins", pending.len());
                    }
                    return Ok(latencies);
                }
            }
            _ = tick.tick() => {
                if !pending.is_empty() {
                    index.refresh(&journal);
                    latencies.extend(index.resolve(&mut pending));
                }
            }
        }
    }
}

/// When each run (by correlation id) finished in the stand-ins.
#[derive(Default)]
struct FinishIndex {
    run_to_correlation: HashMap<(String, String), String>,
    finished: HashMap<String, SystemTime>,
    triggers_seen: usize,
    finished_seen: usize,
}

impl FinishIndex {
    fn refresh(&mut self, journal: &promotion_standins::Journal) {
        let triggers = journal.triggers();
        for t in triggers.iter().skip(self.triggers_seen) {
            if let Some(c) = &t.correlation_id {
                self.run_to_correlation
                    .insert((t.provider.to_string(), t.run_id.clone()), c.clone());
            }
        }
        self.triggers_seen = triggers.len();
        let finished = journal.finished();
        for f in finished.iter().skip(self.finished_seen) {
            if let Some(c) = self
                .run_to_correlation
                .get(&(f.provider.to_string(), f.run_id.clone()))
            {
                self.finished.insert(c.clone(), f.at);
            }
        }
        self.finished_seen = finished.len();
    }

    /// Latencies of the records whose runs are all known; the rest stay pending.
    fn resolve(&self, pending: &mut Vec<(Vec<String>, SystemTime)>) -> Vec<Duration> {
        let mut out = Vec::new();
        pending.retain(|(ids, seen)| {
            let times: Option<Vec<SystemTime>> = ids
                .iter()
                .map(|id| self.finished.get(id).copied())
                .collect();
            match times.and_then(|t| t.into_iter().max()) {
                Some(last) => {
                    out.push(seen.duration_since(last).unwrap_or_default());
                    false
                }
                None => true,
            }
        });
        out
    }
}

/// `apiserver_request_total`, summed by verb and resource.
pub(crate) async fn apiserver_requests(client: &Client) -> Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let label = |name: &str| -> String {
            labels
                .split(',')
                .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                .map(|v| v.trim_end_matches('"').to_string())
                .unwrap_or_default()
        };
        let mut resource = label("resource");
        let sub = label("subresource");
        if !sub.is_empty() {
            resource = format!("{resource}/{sub}");
        }
        let key = format!("{} {resource}", label("verb"));
        *out.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
    }
    Ok(out)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn render(args: &BenchArgs, baseline: f64, a: &Measured, b: Option<&Measured>) -> String {
    let runs: Vec<(&str, &Measured)> = std::iter::once(("CI callbacks", a))
        .chain(b.map(|b| ("polling only (10 s)", b)))
        .collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Machine: {} cores, {}; CI run time in the stand-ins {:?}; controller flags: {:?}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH,
        args.run_time,
        args.controller_flag
    );
    let _ = writeln!(t);
    let _ = write!(t, "| |");
    for (name, _) in &runs {
        let _ = write!(t, " {name} |");
    }
    let _ = writeln!(t);
    let _ = writeln!(t, "|---|{}", "---|".repeat(runs.len()));
    let row = |t: &mut String, label: &str, f: &dyn Fn(&Measured) -> String| {
        let _ = write!(t, "| {label} |");
        for (_, m) in &runs {
            let _ = write!(t, " {} |", f(m));
        }
        let _ = writeln!(t);
    };
    row(&mut t, "trackers (2 hops each)", &|m| {
        m.trackers.to_string()
    });
    row(&mut t, "wall time, first create to last Completed", &|m| {
        format!("{:.1} s", m.wall.as_secs_f64())
    });
    row(&mut t, "hops per second", &|m| {
        format!("{:.1}", m.hops_per_second())
    });
    row(&mut t, "last required pass -> PromotionRecord, p50", &|m| {
        let mut l = m.latencies.clone();
        l.sort();
        format!("{:.0} ms", percentile(&l, 0.5).as_secs_f64() * 1000.0)
    });
    row(&mut t, "last required pass -> PromotionRecord, p99", &|m| {
        let mut l = m.latencies.clone();
        l.sort();
        format!("{:.0} ms", percentile(&l, 0.99).as_secs_f64() * 1000.0)
    });
    row(&mut t, "controller peak RSS", &|m| {
        format!("{:.1} MiB", m.peak_rss_kb as f64 / 1024.0)
    });
    row(&mut t, "controller CPU seconds per hop", &|m| {
        format!("{:.4}", m.cpu_seconds / m.hops as f64)
    });
    row(&mut t, "API requests per hop (all clients)", &|m| {
        format!("{:.1}", m.requests_total() / m.hops as f64)
    });
    for key in [
        "PUT pullrequesttrackers/status",
        "POST pullrequesttrackers",
        "POST events",
        "PATCH events",
        "GET applications",
        "PATCH applications",
    ] {
        row(&mut t, &format!("  of which {key}"), &|m| {
            format!(
                "{:.2}",
                m.requests.get(key).copied().unwrap_or(0.0) / m.hops as f64
            )
        });
    }
    let _ = writeln!(
        t,
        "| bare status-patch loop, one client (patches/s) | {baseline:.0} |{}",
        " |".repeat(runs.len() - 1)
    );
    row(&mut t, "hops/s as a ratio of that loop", &|m| {
        format!("{:.3}", m.hops_per_second() / baseline)
    });
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "All API requests by verb and resource, per hop (callbacks run):"
    );
    for (k, v) in &a.requests {
        let _ = writeln!(t, "- {k}: {:.2}", v / a.hops as f64);
    }
    t
}

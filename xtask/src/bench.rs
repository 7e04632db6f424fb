//! `cargo xtask bench`: N trackers through two hops each, on the local control
//! plane, with the real controller binary and CI stand-ins whose runs take a
//! seeded random time.
//!
//! The world is shaped so that every write a hop needs is made: each tracker has
//! its own head SHA and its own dev Application (a preview environment) already at
//! it, and trackers come in groups that share one staging and one prod
//! Application each, so promotions patch Applications and the one-PR-per-
//! environment rule serialises a group, not the whole run.
//!
//! Nothing here asserts a time: it prints one table (and writes it to
//! `target/bench/`), to be read as ratios and medians on a shared machine.

use crate::process::{self, ControllerProcess};
use crate::world::{CONTROLLER_NAMESPACE, World, WorldOptions};
use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, Object};
use kube::runtime::{WatchStreamExt, watcher};
use promotion_api::{PromotionPolicy, PullRequestTracker};
use promotion_standins::CiScript;
use promotion_standins::argo::Syncs;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

/// Where the staging and prod Applications start: a revision no tracker has.
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// Labels a run's Applications, so they go in one request when the run ends.
const RUN_LABEL: &str = "promotion.io/bench-run";
/// The controller's default `--max-concurrent-reconciles`.
const DEFAULT_RECONCILES: usize = 32;
/// Requests in flight at once when the bench sets up apps and trackers.
const SETUP_CONCURRENCY: usize = 32;

/// `cargo xtask bench` options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Trackers in the run with CI callbacks (each goes dev -> staging -> prod).
    #[arg(long, default_value_t = 1000)]
    pub trackers: usize,
    /// Trackers in the polling-only run (no callbacks; the controller's default 10 s poll).
    #[arg(long, default_value_t = 200)]
    pub polling_trackers: usize,
    /// Trackers sharing one staging and one prod Application (each has its own dev one).
    #[arg(long, default_value_t = 10, value_parser = parse_group_size)]
    pub trackers_per_group: usize,
    /// How long each CI run takes in the stand-ins: `MIN..MAX` (drawn per run with
    /// `--seed`) or one duration (the APIs themselves answer at once).
    #[arg(long, default_value = "1s..5s", value_parser = parse_run_time)]
    pub run_time: RunTime,
    /// Seed of the run lengths, so a run can be repeated.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Seconds of the bare status-patch loop used as the yardstick.
    #[arg(long, default_value_t = 10)]
    pub patch_seconds: u64,
    /// Extra flags for the controller (e.g. `--max-concurrent-reconciles=64`).
    #[arg(long, allow_hyphen_values = true)]
    pub controller_flag: Vec<String>,
}

/// How long CI runs take: drawn uniformly from `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunTime {
    /// The shortest run.
    pub min: Duration,
    /// The longest run.
    pub max: Duration,
}

impl std::fmt::Display for RunTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let min = humantime::format_duration(self.min);
        if self.min == self.max {
            write!(f, "{min}")
        } else {
            write!(f, "{min}..{}", humantime::format_duration(self.max))
        }
    }
}

/// `1s..10s` or `500ms`.
fn parse_run_time(s: &str) -> Result<RunTime, String> {
    let parse =
        |part: &str| humantime::parse_duration(part.trim()).map_err(|e| format!("{part:?}: {e}"));
    let (min, max) = match s.split_once("..") {
        Some((min, max)) => (parse(min)?, parse(max)?),
        None => {
            let one = parse(s)?;
            (one, one)
        }
    };
    if min > max {
        return Err(format!("{s:?}: the range ends before it starts"));
    }
    Ok(RunTime { min, max })
}

fn parse_group_size(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("a group has at least one tracker".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

/// The controller's reconcile slots as `flags` set them (`--max-concurrent-reconciles N`
/// or `=N`), else its default; 0 (no limit) counts as the default too.
fn reconcile_slots(flags: &[String]) -> usize {
    const FLAG: &str = "--max-concurrent-reconciles";
    let mut found = None;
    let mut it = flags.iter();
    while let Some(flag) = it.next() {
        let value = match flag.strip_prefix(FLAG) {
            Some("") => it.next().map(String::as_str),
            Some(rest) => rest.strip_prefix('='),
            None => None,
        };
        if let Some(n) = value.and_then(|v| v.trim().parse::<usize>().ok()) {
            found = Some(n);
        }
    }
    match found {
        Some(n) if n > 0 => n,
        _ => DEFAULT_RECONCILES,
    }
}

/// Which group tracker `index` is in.
fn group_of(index: usize, per_group: usize) -> usize {
    index / per_group.max(1)
}

/// Tracker `index`'s own head SHA, 40 hex digits. The first seven (what policies
/// see as `${HEAD_SHA_SHORT}`) are its group, which names the group's Applications;
/// the rest is the index mixed by an odd multiplier (a bijection), so no two
/// trackers share one.
fn head_sha(index: usize, per_group: usize) -> String {
    let mixed = (index as u128 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
    format!("{:07x}{mixed:033x}", group_of(index, per_group))
}

/// The Application of `environment` for the tracker at `sha` in run `ns` (staging and
/// prod: the group's; the policy names it with the same template).
fn group_app(ns: &str, environment: &str, sha: &str) -> String {
    format!("{ns}-{environment}-{}", sha.get(..7).unwrap_or(sha))
}

/// Tracker `index`'s own dev Application.
fn dev_app(ns: &str, index: usize) -> String {
    format!("{ns}-dev-{index}")
}

/// Whether a tracker in this phase, in the environment it was promoted to, has
/// acted on that environment's sync: anything but still waiting for it (or failing).
fn acted_on_sync(phase: &str) -> bool {
    matches!(
        phase,
        "Synced" | "Testing" | "AwaitingApproval" | "Queued" | "Completed"
    )
}

/// Nearest-rank percentile of a sorted list.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// What one run measured.
struct Measured {
    trackers: usize,
    groups: usize,
    hops: usize,
    wall: Duration,
    /// Last required pass -> PromotionRecord seen.
    latencies: Vec<Duration>,
    /// The same, for hops whose tracker never waited Queued for the target.
    unqueued_latencies: Vec<Duration>,
    /// Argo CD stand-in synced -> tracker status acted on it.
    sync_latencies: Vec<Duration>,
    peak_rss_kb: u64,
    cpu_seconds: f64,
    requests: BTreeMap<String, f64>,
    /// GET and PUT applications sent by the Argo CD stand-in's syncs.
    standin_requests: (u64, u64),
}

impl Measured {
    fn hops_per_second(&self) -> f64 {
        self.hops as f64 / self.wall.as_secs_f64()
    }

    fn requests_total(&self) -> f64 {
        self.requests.values().sum()
    }

    /// The sum of the counters named `verb resource`.
    fn count(&self, keys: &[&str]) -> f64 {
        keys.iter()
            .map(|k| self.requests.get(*k).copied().unwrap_or(0.0))
            .sum()
    }

    fn per_hop(&self, value: f64) -> f64 {
        value / self.hops as f64
    }

    /// Every write of tracker status, whatever the verb.
    fn status_writes(&self) -> f64 {
        self.count(&[
            "PUT pullrequesttrackers/status",
            "PATCH pullrequesttrackers/status",
            "APPLY pullrequesttrackers/status",
        ])
    }

    /// Writes the controller sent: every mutating verb on trackers, policies, Events
    /// and Applications, less the bench's own tracker creates and the Argo CD
    /// stand-in's PUTs (the only PUTs of Applications).
    fn controller_writes(&self) -> f64 {
        let written = self
            .requests
            .iter()
            .filter(|(key, _)| {
                let (verb, resource) = key.split_once(' ').unwrap_or_default();
                let base = resource.split('/').next().unwrap_or_default();
                matches!(
                    verb,
                    "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
                ) && matches!(
                    base,
                    "pullrequesttrackers" | "promotionpolicies" | "events" | "applications"
                )
            })
            .map(|(_, v)| v)
            .sum::<f64>();
        (written - self.trackers as f64 - self.standin_requests.1 as f64).max(0.0)
    }
}

/// Runs the yardstick, the callback run and the polling-only run, and prints the table.
pub fn run(root: &Path, kubeconfig: &Path, args: &BenchArgs) -> Result<()> {
    println!("[bench] building the controller (release)");
    let binary = process::build(root, true)?;
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let client = promotion_testenv::client_for(kubeconfig).await?;
        let writers = reconcile_slots(&args.controller_flag);
        let baseline =
            bare_patch_rate(&client, writers, Duration::from_secs(args.patch_seconds)).await?;
        println!("[bench] bare status-patch loop, {writers} writers: {baseline:.0} patches/s");
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
        let table = render(args, writers, baseline, &with_callbacks, polling.as_ref());
        println!("\n{table}");
        let path = dir.join(format!("results-{}.md", args.trackers));
        std::fs::write(&path, &table)?;
        println!("[bench] written to {}", path.display());
        anyhow::Ok(())
    })
}

/// `writers` clients at once (as many as the controller's reconcile slots), each
/// patching the status of its own tracker in a loop: what this apiserver accepts
/// from the controller's concurrency when a write is all there is to do.
async fn bare_patch_rate(client: &Client, writers: usize, length: Duration) -> Result<f64> {
    let ns = "bench-baseline";
    crate::world::ensure_namespace(client, ns).await?;
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), ns);
    futures::stream::iter(0..writers)
        .map(|k| {
            let api = api.clone();
            async move {
                let name = format!("yardstick-{k}");
                if api.get_opt(&name).await?.is_none() {
                    let mut t = tracker(&name, k as i64 + 1, &head_sha(k, 1));
                    t.spec.application.name = "unused".into();
                    api.create(&PostParams::default(), &t).await?;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    let started = Instant::now();
    let counts = futures::future::try_join_all((0..writers).map(|k| {
        let api = api.clone();
        async move {
            let name = format!("yardstick-{k}");
            let mut n = 0u64;
            while started.elapsed() < length {
                let patch = serde_json::json!({"status": {"message": format!("patch {n}")}});
                api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                n += 1;
            }
            anyhow::Ok(n)
        }
    }))
    .await?;
    Ok(counts.iter().sum::<u64>() as f64 / started.elapsed().as_secs_f64())
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
    let per_group = args.trackers_per_group;
    let groups = n.div_ceil(per_group);
    if groups > 0x0fff_ffff {
        bail!("{groups} groups do not fit in seven hex digits of a head SHA");
    }
    println!(
        "\n[bench] {ns}: {n} trackers in {groups} groups of up to {per_group}, {}",
        if callbacks {
            "CI callbacks on"
        } else {
            "polling only"
        }
    );
    let script = CiScript::new(args.run_time.min);
    script.set_random_lengths(args.run_time.min, args.run_time.max, args.seed);
    let webhook = process::free_address()?;
    let world = World::start(
        client.clone(),
        WorldOptions {
            script,
            callbacks,
            webhook,
            sync_delay: Duration::from_millis(200),
            namespace: ns.into(),
            dir: dir.join(ns),
        },
    )
    .await?;
    let apps = crate::world::applications(client);
    let by_run = ListParams::default().labels(&format!("{RUN_LABEL}={ns}"));
    apps.delete_collection(&DeleteParams::default(), &by_run)
        .await
        .context("deleting a previous run's Applications")?;

    // Every tracker's dev app at its SHA; each group's staging and prod apps at OLD.
    let setup = Instant::now();
    let wanted = (0..n)
        .map(|i| (dev_app(ns, i), head_sha(i, per_group), "dev"))
        .chain((0..groups).flat_map(|g| {
            let sha = head_sha(g * per_group, per_group);
            ["staging", "prod"].map(|env| (group_app(ns, env, &sha), OLD.to_string(), env))
        }));
    futures::stream::iter(wanted)
        .map(|(name, revision, env)| {
            let world = &world;
            async move {
                world
                    .application_labelled(&name, &revision, ns, env, &[(RUN_LABEL, ns)])
                    .await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    println!(
        "[bench] {} Applications created in {:.1?}",
        n + 2 * groups,
        setup.elapsed()
    );
    let policies: Api<PromotionPolicy> = Api::namespaced(client.clone(), ns);
    for policy in [
        policy(ns, "dev-to-staging", "dev", "staging", true)?,
        policy(ns, "staging-to-prod", "staging", "prod", false)?,
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
    let standin_before = world.argo_syncs.requests();
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), ns);

    // Watch before creating, so no promotion is missed.
    let watch = tokio::spawn(observe(
        client.clone(),
        ns.to_string(),
        n,
        world.standins.journal.clone(),
        world.argo_syncs.clone(),
    ));
    let started = Instant::now();
    futures::stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            async move {
                let mut t = tracker(&format!("pr-{i}"), i as i64 + 1, &head_sha(i, per_group));
                t.spec.application.name = dev_app(ns, i);
                api.create(&PostParams::default(), &t).await
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    println!("[bench] {n} trackers created in {:.1?}", started.elapsed());
    let timeout = Duration::from_secs(600 + n as u64 / 5);
    let seen = match tokio::time::timeout(timeout, watch).await {
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
    print_spread("pass -> record", &seen.latencies);
    print_spread("pass -> record, never queued", &seen.unqueued_latencies);
    print_spread("Argo CD synced -> tracker saw it", &seen.sync_latencies);
    let after = apiserver_requests(client).await?;
    let standin_after = world.argo_syncs.requests();
    let status = controller.stop()?;
    println!("[bench] controller stopped ({status})");
    drop(world);
    // The next run's controller and stand-in would otherwise list these too.
    apps.delete_collection(&DeleteParams::default(), &by_run)
        .await
        .context("deleting the run's Applications")?;
    let requests = after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v > 0.0)
        .collect();
    Ok(Measured {
        trackers: n,
        groups,
        hops: 2 * n,
        wall,
        latencies: seen.latencies,
        unqueued_latencies: seen.unqueued_latencies,
        sync_latencies: seen.sync_latencies,
        peak_rss_kb,
        cpu_seconds,
        requests,
        standin_requests: (
            standin_after.0 - standin_before.0,
            standin_after.1 - standin_before.1,
        ),
    })
}

fn print_spread(what: &str, samples: &[Duration]) {
    let mut sorted = samples.to_vec();
    sorted.sort();
    println!(
        "[bench] {what}: p10 {:?} p50 {:?} p90 {:?} p99 {:?} max {:?} ({} samples)",
        percentile(&sorted, 0.1),
        percentile(&sorted, 0.5),
        percentile(&sorted, 0.9),
        percentile(&sorted, 0.99),
        sorted.last().copied().unwrap_or_default(),
        sorted.len()
    );
}

/// A PR tracker at `sha`, entering at dev (the caller names its own dev Application).
fn tracker(name: &str, number: i64, sha: &str) -> PullRequestTracker {
    PullRequestTracker::new(
        name,
        promotion_api::PullRequestTrackerSpec {
            repository: promotion_api::Repository {
                owner: "acme".into(),
                name: "shop".into(),
            },
            number,
            head_sha: sha.into(),
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

/// dev -> staging gates on Jenkins + GitHub Actions; staging -> prod on GitLab. The
/// target Application is the tracker's group's, named from its head SHA's first
/// seven digits (see [`head_sha`]).
fn policy(
    ns: &str,
    name: &str,
    source: &str,
    target: &str,
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
                "application": {"name": format!("{ns}-{target}-${{HEAD_SHA_SHORT}}")},
                "githubLabel": format!("promoted-to-{target}"),
            },
        },
    });
    Ok(serde_json::from_value(value)?)
}

/// The part of a tracker's status the bench reads; the rest is skipped unparsed,
/// so following 10,000 trackers stays cheap.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeenStatus {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    current_environment: Option<String>,
    #[serde(default)]
    promotions: Vec<SeenRecord>,
    #[serde(default)]
    promotion_count: Option<i64>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeenRecord {
    #[serde(default)]
    test_runs: Vec<SeenRun>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeenRun {
    #[serde(default)]
    required: bool,
    #[serde(default)]
    correlation_id: Option<String>,
}

/// The part of a tracker's spec the bench reads.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SeenSpec {
    #[serde(default)]
    head_sha: String,
}

/// A tracker as the bench's watch reads it.
type SeenTracker = Object<SeenSpec, SeenStatus>;

/// What the watch measured.
struct Seen {
    latencies: Vec<Duration>,
    unqueued_latencies: Vec<Duration>,
    sync_latencies: Vec<Duration>,
}

/// What the watch knows of one tracker.
#[derive(Default)]
struct Followed {
    /// PromotionRecords already taken.
    records: usize,
    /// Environments in which the tracker was seen acting on its sync.
    acted_in: Vec<String>,
    /// Seen Queued since its last record: the next record's latency includes a wait
    /// for another PR, not the controller's.
    queued: bool,
}

/// Follows the trackers until all are Completed in prod. Returns, per promotion, the
/// time from the last required run finishing (in the stand-in) to the record being
/// seen on the API; and, per promotion, the time from the Argo CD stand-in marking
/// the target Application synced at the tracker's SHA to the tracker's status first
/// showing it acted on that (see [`acted_on_sync`]) in that environment.
async fn observe(
    client: Client,
    ns: String,
    n: usize,
    journal: promotion_standins::Journal,
    syncs: Syncs,
) -> Result<Seen> {
    let resource = ApiResource::erase::<PullRequestTracker>(&());
    let api: Api<SeenTracker> = Api::namespaced_with(client, &ns, &resource);
    let mut stream = watcher::watcher(api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let mut followed: HashMap<String, Followed> = HashMap::new();
    let mut completed = HashSet::new();
    // (correlation ids of the required runs, when the record was seen)
    let mut pending: Vec<(Vec<String>, SystemTime)> = Vec::new();
    let mut latencies = Vec::new();
    let mut pending_unqueued: Vec<(Vec<String>, SystemTime)> = Vec::new();
    let mut unqueued_latencies = Vec::new();
    let mut index = FinishIndex::default();
    let mut pending_syncs: Vec<((String, String), SystemTime)> = Vec::new();
    let mut sync_latencies = Vec::new();
    let mut sync_index = SyncIndex::default();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            next = stream.next() => {
                let t = match next {
                    Some(Ok(t)) => t,
                    Some(Err(e)) => { eprintln!("[bench] watch error (retrying): {e}"); continue; }
                    None => bail!("the tracker watch ended"),
                };
                let seen_at = SystemTime::now();
                let Some(name) = t.metadata.name else { continue };
                let Some(status) = t.status else { continue };
                let known = followed.entry(name.clone()).or_default();
                // Only the newest records are kept: the count says how many are new.
                let total = status
                    .promotion_count
                    .and_then(|c| usize::try_from(c).ok())
                    .unwrap_or(status.promotions.len())
                    .max(status.promotions.len());
                let new = total.saturating_sub(known.records).min(status.promotions.len());
                let phase = status.phase.as_deref().unwrap_or_default();
                for record in &status.promotions[status.promotions.len() - new..] {
                    let ids: Vec<String> = record
                        .test_runs
                        .iter()
                        .filter(|r| r.required)
                        .filter_map(|r| r.correlation_id.clone())
                        .collect();
                    if !known.queued {
                        pending_unqueued.push((ids.clone(), seen_at));
                    }
                    pending.push((ids, seen_at));
                }
                if new > 0 {
                    known.queued = false;
                }
                if phase == "Queued" {
                    known.queued = true;
                }
                known.records = known.records.max(total);
                if let Some(env) = &status.current_environment
                    && env != "dev"
                    && acted_on_sync(phase)
                    && !known.acted_in.contains(env)
                {
                    known.acted_in.push(env.clone());
                    let sha = t.spec.head_sha.clone();
                    pending_syncs.push(((group_app(&ns, env, &sha), sha), seen_at));
                }
                let done = status.current_environment.as_deref() == Some("prod") && phase == "Completed";
                if done && completed.insert(name) && completed.len() % 1000 == 0 {
                    println!("[bench] {} trackers completed", completed.len());
                }
                if completed.len() == n {
                    index.refresh(&journal);
                    latencies.extend(index.resolve(&mut pending));
                    unqueued_latencies.extend(index.resolve(&mut pending_unqueued));
                    sync_index.refresh(&syncs);
                    sync_latencies.extend(sync_index.resolve(&mut pending_syncs));
                    if !pending.is_empty() {
                        eprintln!("[bench] {} promotions had no matching finished run in the stand-ins", pending.len());
                    }
                    if !pending_syncs.is_empty() {
                        eprintln!("[bench] {} trackers acted on a sync the Argo CD stand-in did not record", pending_syncs.len());
                    }
                    return Ok(Seen { latencies, unqueued_latencies, sync_latencies });
                }
            }
            _ = tick.tick() => {
                if !pending.is_empty() {
                    index.refresh(&journal);
                    latencies.extend(index.resolve(&mut pending));
                    unqueued_latencies.extend(index.resolve(&mut pending_unqueued));
                }
                if !pending_syncs.is_empty() {
                    sync_index.refresh(&syncs);
                    sync_latencies.extend(sync_index.resolve(&mut pending_syncs));
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

/// When the Argo CD stand-in marked each (Application, revision) synced; the first time counts.
#[derive(Default)]
struct SyncIndex {
    synced: HashMap<(String, String), SystemTime>,
    seen: usize,
}

impl SyncIndex {
    fn refresh(&mut self, syncs: &Syncs) {
        let new = syncs.since(self.seen);
        self.seen += new.len();
        for s in new {
            for revision in s.revisions {
                self.synced
                    .entry((s.name.clone(), revision))
                    .or_insert(s.at);
            }
        }
    }

    /// Latencies of the sightings whose sync is known; the rest stay pending.
    fn resolve(&self, pending: &mut Vec<((String, String), SystemTime)>) -> Vec<Duration> {
        let mut out = Vec::new();
        pending.retain(|(key, seen)| match self.synced.get(key) {
            Some(at) => {
                out.push(seen.duration_since(*at).unwrap_or_default());
                false
            }
            None => true,
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

fn render(
    args: &BenchArgs,
    writers: usize,
    baseline: f64,
    a: &Measured,
    b: Option<&Measured>,
) -> String {
    let runs: Vec<(&str, &Measured)> = std::iter::once(("CI callbacks", a))
        .chain(b.map(|b| ("polling only (10 s)", b)))
        .collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "Machine: {} cores, {}; CI run time in the stand-ins {} (seed {}); {} trackers per group; controller flags: {:?}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::env::consts::ARCH,
        args.run_time,
        args.seed,
        args.trackers_per_group,
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
    let ms = |samples: &[Duration], p: f64| {
        let mut l = samples.to_vec();
        l.sort();
        format!("{:.0} ms", percentile(&l, p).as_secs_f64() * 1000.0)
    };
    row(&mut t, "trackers (2 hops each)", &|m| {
        m.trackers.to_string()
    });
    row(
        &mut t,
        "groups (one staging + one prod Application each)",
        &|m| m.groups.to_string(),
    );
    row(&mut t, "wall time, first create to last Completed", &|m| {
        format!("{:.1} s", m.wall.as_secs_f64())
    });
    row(&mut t, "hops per second", &|m| {
        format!("{:.1}", m.hops_per_second())
    });
    row(&mut t, "last required pass -> PromotionRecord, p50", &|m| {
        ms(&m.latencies, 0.5)
    });
    row(&mut t, "last required pass -> PromotionRecord, p99", &|m| {
        ms(&m.latencies, 0.99)
    });
    row(
        &mut t,
        "last required pass -> PromotionRecord, hops never queued, p50",
        &|m| ms(&m.unqueued_latencies, 0.5),
    );
    row(
        &mut t,
        "last required pass -> PromotionRecord, hops never queued, p99",
        &|m| ms(&m.unqueued_latencies, 0.99),
    );
    row(&mut t, "hops never queued", &|m| {
        format!("{} of {}", m.unqueued_latencies.len(), m.latencies.len())
    });
    row(&mut t, "Argo CD synced -> tracker saw it, p50", &|m| {
        ms(&m.sync_latencies, 0.5)
    });
    row(&mut t, "Argo CD synced -> tracker saw it, p99", &|m| {
        ms(&m.sync_latencies, 0.99)
    });
    row(&mut t, "controller peak RSS", &|m| {
        format!("{:.1} MiB", m.peak_rss_kb as f64 / 1024.0)
    });
    row(&mut t, "controller CPU seconds per hop", &|m| {
        format!("{:.4}", m.cpu_seconds / m.hops as f64)
    });
    row(&mut t, "tracker status writes per hop", &|m| {
        format!("{:.2}", m.per_hop(m.status_writes()))
    });
    row(&mut t, "mutating API requests per hop, controller", &|m| {
        format!("{:.2}", m.per_hop(m.controller_writes()))
    });
    row(&mut t, "Events per hop (POST events)", &|m| {
        format!("{:.2}", m.per_hop(m.count(&["POST events"])))
    });
    row(&mut t, "Application PATCHes per hop", &|m| {
        format!(
            "{:.2}",
            m.per_hop(m.count(&["PATCH applications", "APPLY applications"]))
        )
    });
    row(&mut t, "GET applications per hop, controller", &|m| {
        let gets = m.count(&["GET applications"]) - m.standin_requests.0 as f64;
        format!("{:.2}", m.per_hop(gets.max(0.0)))
    });
    row(&mut t, "LIST / WATCH applications in the run", &|m| {
        format!(
            "{:.0} / {:.0}",
            m.count(&["LIST applications"]),
            m.count(&["WATCH applications"])
        )
    });
    row(&mut t, "API requests per hop (all clients)", &|m| {
        format!("{:.1}", m.requests_total() / m.hops as f64)
    });
    for key in [
        "PUT pullrequesttrackers/status",
        "PATCH pullrequesttrackers/status",
        "POST pullrequesttrackers",
        "POST events",
        "PATCH events",
        "GET applications",
        "PATCH applications",
        "PUT applications",
    ] {
        row(&mut t, &format!("  of which {key}"), &|m| {
            format!("{:.2}", m.per_hop(m.count(&[key])))
        });
    }
    let _ = writeln!(
        t,
        "| bare status-patch loop, {writers} writers (patches/s) | {baseline:.0} |{}",
        " |".repeat(runs.len() - 1)
    );
    row(
        &mut t,
        "controller status writes/s as a share of that loop",
        &|m| format!("{:.2}", m.status_writes() / m.wall.as_secs_f64() / baseline),
    );
    row(&mut t, "hops/s as a ratio of that loop", &|m| {
        format!("{:.3}", m.hops_per_second() / baseline)
    });
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "Counted from the apiserver's `apiserver_request_total` between the controller being ready and the last tracker Completed, per hop (2 per tracker). \
Tracker status writes: PUT + PATCH + APPLY pullrequesttrackers/status. \
Mutating requests from the controller: POST/PUT/PATCH/APPLY/DELETE on pullrequesttrackers (and status), promotionpolicies (and status), events and applications, \
less the bench's own tracker creates and the Argo CD stand-in's writes (its PUT applications: the Application CRD has no status subresource, so the stand-in's status writes are told apart by verb; the controller only PATCHes); leader-election Leases are not counted. \
GET applications, controller: all GETs less those the stand-in's syncs sent (it counts them). LIST / WATCH: totals of every client (controller, stand-in); the apiserver counts a WATCH when it ends, so watches open through the run show only if they were re-opened. \
Last required pass -> PromotionRecord includes the time a tracker waited Queued for its group's target Application, held by another PR; the \"hops never queued\" rows leave out every hop whose tracker was seen Queued before its record. \
Argo CD synced -> tracker saw it: from the stand-in writing an Application Synced + Healthy at a tracker's SHA (staging and prod, each group's app) to the bench's watch first seeing that tracker in that environment in phase Synced, Testing, AwaitingApproval, Queued or Completed. \
The yardstick: {writers} clients (the controller's --max-concurrent-reconciles) each merge-patching the status of its own tracker in a loop for {} s, before the runs.",
        args.patch_seconds
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "All API requests by verb and resource, per hop (callbacks run; the stand-in's syncs sent {} GET and {} PUT applications):",
        a.standin_requests.0, a.standin_requests.1
    );
    for (k, v) in &a.requests {
        let _ = writeln!(t, "- {k}: {:.2}", v / a.hops as f64);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_time_is_a_range_or_one_duration() {
        assert_eq!(
            parse_run_time("1s..10s"),
            Ok(RunTime {
                min: Duration::from_secs(1),
                max: Duration::from_secs(10)
            })
        );
        assert_eq!(
            parse_run_time("500ms"),
            Ok(RunTime {
                min: Duration::from_millis(500),
                max: Duration::from_millis(500)
            })
        );
        assert_eq!(
            parse_run_time("1s..5s").map(|r| r.to_string()),
            Ok("1s..5s".to_string())
        );
    }

    #[test]
    fn a_backwards_or_malformed_run_time_is_refused() {
        assert!(parse_run_time("5s..1s").is_err_and(|e| e.contains("ends before")));
        assert!(parse_run_time("1s..").is_err());
        assert!(parse_run_time("fast").is_err());
    }

    #[test]
    fn a_group_has_at_least_one_tracker() {
        assert_eq!(parse_group_size("10"), Ok(10));
        assert!(parse_group_size("0").is_err());
        assert!(parse_group_size("-1").is_err());
    }

    #[test]
    fn the_yardstick_follows_the_controllers_reconcile_slots() {
        let flags = |f: &[&str]| f.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(reconcile_slots(&[]), 32);
        assert_eq!(
            reconcile_slots(&flags(&["--max-concurrent-reconciles=64"])),
            64
        );
        assert_eq!(
            reconcile_slots(&flags(&[
                "--poll-interval",
                "5s",
                "--max-concurrent-reconciles",
                "8"
            ])),
            8
        );
        // No limit: the yardstick keeps the default.
        assert_eq!(
            reconcile_slots(&flags(&["--max-concurrent-reconciles=0"])),
            32
        );
        assert_eq!(reconcile_slots(&flags(&["--max-concurrent-wakes=4"])), 32);
    }

    #[test]
    fn every_tracker_has_its_own_sha_whose_short_form_names_its_group() {
        let per_group = 10;
        let shas: Vec<String> = (0..2_000).map(|i| head_sha(i, per_group)).collect();
        for sha in &shas {
            assert_eq!(sha.len(), 40, "{sha}");
            assert!(sha.chars().all(|c| c.is_ascii_hexdigit()), "{sha}");
        }
        assert_eq!(shas.iter().collect::<HashSet<_>>().len(), shas.len());
        assert_eq!(head_sha(7, 10), head_sha(7, 10));
        // Trackers 0..9 share group 0's Applications, 10 starts group 1.
        assert_eq!(
            group_app("b", "staging", &head_sha(0, 10)),
            group_app("b", "staging", &head_sha(9, 10))
        );
        assert_eq!(
            group_app("b", "staging", &head_sha(10, 10)),
            "b-staging-0000001"
        );
        assert_eq!(group_of(1_999, per_group), 199);
        assert_eq!(
            group_app("b", "prod", &head_sha(1_999, 10)),
            "b-prod-00000c7"
        );
    }

    #[test]
    fn the_policy_template_names_the_groups_application() {
        let p = policy("b", "dev-to-staging", "dev", "staging", true).expect("a policy");
        let template = &p.spec.promotion.application.name;
        let sha = head_sha(42, 10);
        let expanded = template.replace("${HEAD_SHA_SHORT}", &sha[..7]);
        assert_eq!(expanded, group_app("b", "staging", &sha));
    }

    #[test]
    fn only_a_phase_past_the_sync_counts_as_acting_on_it() {
        for phase in [
            "Synced",
            "Testing",
            "AwaitingApproval",
            "Queued",
            "Completed",
        ] {
            assert!(acted_on_sync(phase), "{phase}");
        }
        for phase in [
            "Pending",
            "Deploying",
            "Promoting",
            "Promoted",
            "Failed",
            "",
        ] {
            assert!(!acted_on_sync(phase), "{phase}");
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let sorted: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&sorted, 0.5), Duration::from_millis(51));
        assert_eq!(percentile(&sorted, 0.99), Duration::from_millis(99));
        assert_eq!(percentile(&sorted, 1.0), Duration::from_millis(100));
        assert_eq!(percentile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn a_sighting_resolves_against_the_first_sync_at_its_revision() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut index = SyncIndex::default();
        index
            .synced
            .insert(("b-staging-0000000".into(), "abc".into()), t0);
        let mut pending = vec![
            (
                ("b-staging-0000000".to_string(), "abc".to_string()),
                t0 + Duration::from_millis(250),
            ),
            (
                ("b-staging-0000000".to_string(), "def".to_string()),
                t0 + Duration::from_millis(300),
            ),
        ];
        let out = index.resolve(&mut pending);
        assert_eq!(out, vec![Duration::from_millis(250)]);
        assert_eq!(pending.len(), 1, "the unknown revision stays pending");
    }
}

//! `cargo xtask chaos`: N pull requests go dev -> staging -> prod through the
//! real controller binary while it is SIGKILLed at seeded random moments, the
//! kube-apiserver is stopped and started again once (same etcd, same port), and
//! the CI stand-ins delay triggers, answer 504 after starting a run, and show
//! new runs to `find` late. Every PR has its own Applications (Argo CD
//! stand-in) and all PRs share the three CI jobs.
//!
//! The policy watch is made to re-list by the apiserver restart: the new
//! server's watch cache starts after the controller's last resourceVersion, so
//! the watch is answered 410 Gone and lists again. The run checks it on the new
//! server's own request counter (a LIST of policies while the same controller
//! process runs) and says so.
//!
//! The verdict is read from the stand-ins: triggers per correlation id (CI
//! journal), promotions per hop (the Argo CD stand-in's count of writes that
//! moved each Application), labels per PR (GitHub journal), and each tracker's
//! phase. Any duplicate trigger or promotion, or a tracker not Completed, fails.

use crate::process::{self, ControllerProcess};
use crate::world::{ARGOCD_NAMESPACE, CONTROLLER_NAMESPACE, World, WorldOptions};
use anyhow::{Context, Result};
use futures::{StreamExt, TryStreamExt};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use promotion_api::{Phase, PromotionPolicy, PullRequestTracker};
use promotion_standins::{CiScript, Fault, Faults, FindLag, Reply, Triggered};
use promotion_testenv::ControlPlane;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

const NAMESPACE: &str = "chaos";
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const OWNER: &str = "acme";
const REPO: &str = "shop";
/// How late a new run shows in `find`'s listings.
const FIND_LAG: Duration = Duration::from_secs(3);

/// `cargo xtask chaos` options.
#[derive(clap::Args, Clone, Debug)]
pub struct ChaosArgs {
    /// Pull requests, each carried dev -> staging -> prod.
    #[arg(long, default_value_t = 300)]
    pub prs: usize,
    /// Seed of every random choice: kill moments, the apiserver restart, CI run lengths, trigger faults.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// SIGKILLs of the controller; after the last one it runs undisturbed to the end.
    #[arg(long, default_value_t = 20)]
    pub kills: usize,
    /// The longest time between two kills (each wait is drawn from 0.5 s up to this).
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    pub kill_max: Duration,
    /// The shortest CI run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    pub run_min: Duration,
    /// The longest CI run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub run_max: Duration,
    /// The controller's `--max-rearms`: each SIGKILL that lands during a trigger uses
    /// one (nothing proves that request never left), so a storm needs more than the default 1.
    #[arg(long, default_value_t = 3)]
    pub max_rearms: usize,
    /// Percent of triggers that start their run but answer 504.
    #[arg(long, default_value_t = 6)]
    pub late_percent: u32,
    /// Percent of triggers delayed by 0.2-3 s before they reach the CI stand-in.
    #[arg(long, default_value_t = 14)]
    pub delay_percent: u32,
    /// Give up when not every tracker is Completed this long after the first was created.
    #[arg(long, default_value = "30m", value_parser = humantime::parse_duration)]
    pub deadline: Duration,
}

/// What a chaos run found.
#[derive(Debug, Default)]
pub struct Verdict {
    /// The summary, one line each, as printed.
    pub lines: Vec<String>,
    /// Correlation ids the CI stand-ins started more than one run for.
    pub duplicate_triggers: usize,
    /// (tracker, hop) pairs promoted more than once.
    pub duplicate_promotions: usize,
    /// Trackers not Completed in prod at the end.
    pub not_completed: usize,
}

impl Verdict {
    /// No duplicate, and every tracker Completed.
    pub fn passed(&self) -> bool {
        self.duplicate_triggers == 0 && self.duplicate_promotions == 0 && self.not_completed == 0
    }

    fn say(&mut self, line: String) {
        println!("[chaos] {line}");
        self.lines.push(line);
    }
}

/// The apps of PR `number` in `env`.
fn app(number: usize, env: &str) -> String {
    format!("chaos-pr-{number}-{env}")
}

/// A head SHA per PR, from the seed.
fn head_sha(seed: u64, number: usize) -> String {
    let digest = Sha256::digest(format!("{seed}/{number}").as_bytes());
    hex::encode(&digest[..20])
}

/// Runs the chaos on `plane` (whose apiserver it restarts once) with the controller `binary`.
pub async fn run(
    plane: &mut ControlPlane,
    binary: &Path,
    dir: &Path,
    args: &ChaosArgs,
) -> Result<Verdict> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(args.seed);
    let kubeconfig = plane.kubeconfig.clone();
    let client = promotion_testenv::client_for(&kubeconfig).await?;
    let script = CiScript::new(args.run_min);
    script.set_random_lengths(args.run_min, args.run_max, rng.random());
    let webhook = process::free_address()?;
    let world = World::start(
        client.clone(),
        WorldOptions {
            script,
            callbacks: true,
            webhook,
            sync_delay: Duration::from_millis(300),
            namespace: NAMESPACE.into(),
            dir: dir.to_path_buf(),
        },
    )
    .await?;
    let n = args.prs;
    let numbers: Vec<usize> = (1..=n).collect();
    futures::stream::iter(numbers.iter().copied())
        .map(|number| {
            let world = &world;
            let sha = head_sha(args.seed, number);
            async move {
                world
                    .application(&app(number, "dev"), &sha, NAMESPACE, "dev")
                    .await?;
                world
                    .application(&app(number, "staging"), OLD, NAMESPACE, "staging")
                    .await?;
                world
                    .application(&app(number, "prod"), OLD, NAMESPACE, "prod")
                    .await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await?;
    apply_policies(&client).await?;
    let injected = inject_faults(&world, n, args, &mut rng);
    println!(
        "[chaos] seed {}: {n} PRs, {} Applications; trigger faults scripted: {} answered 504 after starting the run, {} delayed; find lag {FIND_LAG:?}",
        args.seed,
        3 * n,
        injected.0,
        injected.1
    );

    let mut flags: Vec<String> = [
        "--namespace",
        NAMESPACE,
        "--poll-interval",
        "2s",
        "--pr-resync-interval",
        "0s",
    ]
    .map(String::from)
    .to_vec();
    flags.extend(["--max-rearms".to_string(), args.max_rearms.to_string()]);
    let spawn = |k: usize| {
        ControllerProcess::spawn(
            binary,
            &kubeconfig,
            &world.config,
            CONTROLLER_NAMESPACE,
            &dir.join(format!("controller-{k}.log")),
            webhook,
            &flags,
        )
    };
    let mut controller = spawn(0)?;
    controller.wait_ready(Duration::from_secs(180)).await?;

    let trackers: Api<PullRequestTracker> = Api::namespaced(client.clone(), NAMESPACE);
    let started = Instant::now();
    futures::stream::iter(numbers.iter().copied())
        .map(|number| {
            let trackers = trackers.clone();
            let body = tracker(number, head_sha(args.seed, number));
            async move { trackers.create(&PostParams::default(), &body).await }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    println!("[chaos] {n} trackers created in {:.1?}", started.elapsed());
    let deadline = started + args.deadline;

    // The apiserver restart takes the place of one of the kills, while the controller runs.
    let restart_at = rng.random_range(1..=args.kills.max(1));
    let kill_max = args.kill_max.max(Duration::from_millis(600));
    let mut kills = 0;
    let mut relisted = None;
    let mut done = false;
    for step in 1..=args.kills {
        let wait = rng.random_range(Duration::from_millis(500)..=kill_max);
        if wait_until_done(&trackers, n, Instant::now() + wait).await {
            done = true;
            break;
        }
        if step == restart_at {
            relisted = Some(restart_apiserver(plane, &client, &mut rng).await?);
            continue;
        }
        // Drop sends SIGKILL and reaps the process.
        drop(controller);
        kills += 1;
        println!(
            "[chaos] SIGKILL {kills} at {:.1?}; restarting the controller",
            started.elapsed()
        );
        controller = spawn(kills)?;
    }
    if !done {
        done = wait_until_done(&trackers, n, deadline).await;
    }
    let wall = started.elapsed();
    if let Err(e) = controller.stop() {
        println!("[chaos] the last controller did not stop cleanly: {e}");
    }

    let mut verdict = Verdict::default();
    verdict.say(format!(
        "seed {}: {n} PRs x 2 hops in {:.1?}{}; {kills} SIGKILLs of the controller (--max-rearms {}); apiserver restarted once{}",
        args.seed,
        wall,
        if done { "" } else { " (deadline reached before every tracker settled)" },
        args.max_rearms,
        match relisted {
            Some(Some(lists)) => format!(
                ", after which the running controller re-listed policies ({lists} LIST on the new server)"
            ),
            Some(None) => ", but the policy watch was NOT seen re-listing".to_string(),
            None => " (not reached: everything completed before)".to_string(),
        }
    ));
    triggers_verdict(&mut verdict, &world.standins.journal.triggers(), &world);
    let list = trackers.list(&ListParams::default()).await?.items;
    promotions_verdict(&mut verdict, &world, &list, n);
    labels_verdict(&mut verdict, &world, n);
    phases_verdict(&mut verdict, &list, &world.standins.journal.triggers(), n);
    verdict.say(format!(
        "verdict: {} ({} duplicate triggers, {} duplicate promotions, {} trackers not Completed); logs in {}",
        if verdict.passed() { "PASS" } else { "FAIL" },
        verdict.duplicate_triggers,
        verdict.duplicate_promotions,
        verdict.not_completed,
        dir.display()
    ));
    Ok(verdict)
}

/// A tracker for PR `number` at `head_sha`, entering at its dev Application.
fn tracker(number: usize, head_sha: String) -> PullRequestTracker {
    PullRequestTracker::new(
        &format!("pr-{number}"),
        promotion_api::PullRequestTrackerSpec {
            repository: promotion_api::Repository {
                owner: OWNER.into(),
                name: REPO.into(),
            },
            number: number as i64,
            head_sha,
            environment: "dev".into(),
            application: promotion_api::ApplicationRef {
                cluster: "in-cluster".into(),
                namespace: ARGOCD_NAMESPACE.into(),
                name: app(number, "dev"),
            },
            closed: false,
        },
    )
}

/// dev -> staging on Jenkins + GitHub Actions, staging -> prod on GitLab; every PR
/// shares these three jobs and promotes into its own Applications.
async fn apply_policies(client: &Client) -> Result<()> {
    let policies: Api<PromotionPolicy> = Api::namespaced(client.clone(), NAMESPACE);
    let hops = [
        (
            "dev-to-staging",
            "dev",
            "staging",
            serde_json::json!([
                {"name": "smoke", "provider": "jenkins", "job": "chaos/smoke", "parameters": {"PR": "${PR_NUMBER}"}},
                {"name": "contract", "provider": "github-actions", "job": "contract.yml", "ref": "main", "parameters": {"sha": "${HEAD_SHA}"}},
            ]),
        ),
        (
            "staging-to-prod",
            "staging",
            "prod",
            serde_json::json!([{"name": "e2e", "provider": "gitlab", "job": "chaos/e2e", "ref": "main"}]),
        ),
    ];
    for (name, source, target, tests) in hops {
        let policy: PromotionPolicy = serde_json::from_value(serde_json::json!({
            "apiVersion": "promotion.io/v1alpha1",
            "kind": "PromotionPolicy",
            "metadata": {"name": name},
            "spec": {
                "sourceEnvironment": source,
                "targetEnvironment": target,
                "externalTests": tests,
                "promotion": {
                    "application": {"name": format!("chaos-pr-${{PR_NUMBER}}-{target}")},
                    "githubLabel": format!("promoted-to-{target}"),
                },
            },
        }))?;
        policies
            .patch(
                name,
                &PatchParams::apply("xtask").force(),
                &Patch::Apply(&policy),
            )
            .await
            .with_context(|| format!("applying policy {name}"))?;
    }
    Ok(())
}

/// Scripts each CI stand-in's trigger endpoint with seeded faults (a 504 after the
/// run started, a delay, or nothing) and sets `find`'s lag; returns (504s, delays).
fn inject_faults(world: &World, n: usize, args: &ChaosArgs, rng: &mut StdRng) -> (usize, usize) {
    let s = &world.standins;
    let routes: [(&Faults, &str); 3] = [
        (&s.jenkins, "/job/chaos/job/smoke/buildWithParameters"),
        (
            &s.github,
            "/repos/acme/shop/actions/workflows/contract.yml/dispatches",
        ),
        (&s.gitlab, "/api/v4/projects/chaos%2Fe2e/pipeline"),
    ];
    let (mut late, mut delayed) = (0, 0);
    for (faults, path) in routes {
        faults.set_find_lag(FindLag::After(FIND_LAG));
        let plan: Vec<Fault> = (0..n)
            .map(|_| match rng.random_range(0..100) {
                x if x < args.late_percent => {
                    late += 1;
                    Fault::AfterEffect(Reply::status(504).body("Gateway Time-out"))
                }
                x if x < args.late_percent + args.delay_percent => {
                    delayed += 1;
                    Fault::Delay(
                        rng.random_range(Duration::from_millis(200)..=Duration::from_secs(3)),
                    )
                }
                _ => Fault::Delay(Duration::ZERO),
            })
            .collect();
        faults.script("POST", path, plan);
    }
    (late, delayed)
}

/// Whether every tracker has settled (Completed, Failed or Closed: nothing moves it
/// without a person), polled until `until`.
async fn wait_until_done(trackers: &Api<PullRequestTracker>, n: usize, until: Instant) -> bool {
    loop {
        // A failed list (the apiserver is restarting) is only a later look.
        if let Ok(list) = trackers.list(&ListParams::default()).await
            && list.items.len() == n
            && list.items.iter().all(settled)
        {
            return true;
        }
        let now = Instant::now();
        if now >= until {
            return false;
        }
        tokio::time::sleep((until - now).min(Duration::from_secs(2))).await;
    }
}

fn settled(t: &PullRequestTracker) -> bool {
    t.status.as_ref().is_some_and(|s| {
        matches!(
            s.phase,
            Some(Phase::Completed | Phase::Failed | Phase::Closed)
        )
    })
}

fn completed(t: &PullRequestTracker) -> bool {
    t.status.as_ref().is_some_and(|s| {
        s.phase == Some(Phase::Completed) && s.current_environment.as_deref() == Some("prod")
    })
}

/// Stops the apiserver for a few seconds and starts it again on the same etcd and port;
/// returns how many LISTs of policies the new server answered in its first 30 s
/// (None: none, the policy watch did not re-list).
async fn restart_apiserver(
    plane: &mut ControlPlane,
    client: &Client,
    rng: &mut StdRng,
) -> Result<Option<f64>> {
    let down = rng.random_range(Duration::from_secs(2)..=Duration::from_secs(6));
    println!("[chaos] stopping kube-apiserver for {down:?}");
    plane.stop_apiserver();
    tokio::time::sleep(down).await;
    plane.start_apiserver()?;
    let took = plane.wait_apiserver_ready(Duration::from_secs(180)).await?;
    println!("[chaos] kube-apiserver is back ({took:.1?} to ready)");
    // The new server counts from zero and nothing else lists policies: a LIST is the
    // running controller's policy watch starting over.
    let since = Instant::now();
    while since.elapsed() < Duration::from_secs(30) {
        let lists = crate::bench::apiserver_requests(client)
            .await
            .ok()
            .and_then(|r| r.get("LIST promotionpolicies").copied())
            .unwrap_or(0.0);
        if lists > 0.0 {
            return Ok(Some(lists));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(None)
}

fn triggers_verdict(verdict: &mut Verdict, triggers: &[Triggered], world: &World) {
    let mut by_id: BTreeMap<&str, Vec<&Triggered>> = BTreeMap::new();
    let mut without = 0;
    for t in triggers {
        match t.correlation_id.as_deref() {
            Some(id) => by_id.entry(id).or_default().push(t),
            None => without += 1,
        }
    }
    let max = by_id.values().map(Vec::len).max().unwrap_or(0);
    let dups: Vec<(&&str, &Vec<&Triggered>)> = by_id.iter().filter(|(_, v)| v.len() > 1).collect();
    verdict.duplicate_triggers = dups.len() + without;
    let s = &world.standins;
    let requests = |f: &Faults, path: &str| f.count("POST", path);
    verdict.say(format!(
        "triggers: {} runs started for {} correlation ids (max {max} per id, {} ids with more than one, {without} without an id); trigger requests: jenkins {}, github-actions {}, gitlab {}",
        triggers.len(),
        by_id.len(),
        dups.len(),
        requests(&s.jenkins, "/job/chaos/job/smoke/buildWithParameters"),
        requests(&s.github, "/repos/acme/shop/actions/workflows/contract.yml/dispatches"),
        requests(&s.gitlab, "/api/v4/projects/chaos%2Fe2e/pipeline"),
    ));
    for (id, runs) in dups {
        let seq: Vec<String> = runs
            .iter()
            .map(|t| {
                let at =
                    t.at.duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or_default();
                format!("{} {} run {} at {at:.3}", t.provider, t.job, t.run_id)
            })
            .collect();
        verdict.say(format!("  duplicate trigger {id}: {}", seq.join(" -> ")));
    }
}

fn promotions_verdict(verdict: &mut Verdict, world: &World, list: &[PullRequestTracker], n: usize) {
    for (hop, target) in [("dev -> staging", "staging"), ("staging -> prod", "prod")] {
        let mut histogram: BTreeMap<usize, usize> = BTreeMap::new();
        let mut twice = Vec::new();
        for number in 1..=n {
            let writes = world
                .argo_writes
                .count(ARGOCD_NAMESPACE, &app(number, target));
            // Records in the tracker's audit trail for this hop, in case a write was merged away.
            let records = list
                .iter()
                .find(|t| t.spec.number == number as i64)
                .and_then(|t| t.status.as_ref())
                .map_or(0, |s| {
                    s.promotions.iter().filter(|p| p.target == target).count()
                });
            let count = writes.max(records);
            *histogram.entry(count).or_default() += 1;
            if count > 1 {
                twice.push(format!("pr-{number} ({writes} writes, {records} records)"));
            }
        }
        verdict.duplicate_promotions += twice.len();
        verdict.say(format!(
            "promotions {hop} (Application writes per PR: count -> PRs): {}",
            render(&histogram)
        ));
        for t in twice {
            verdict.say(format!("  promoted more than once: {t}"));
        }
    }
}

fn labels_verdict(verdict: &mut Verdict, world: &World, n: usize) {
    let journal = &world.standins.journal;
    let mut requests: BTreeMap<usize, usize> = BTreeMap::new();
    let mut both = 0;
    for number in 1..=n {
        let asked = journal.label_requests(OWNER, REPO, number as u64);
        let mut per_label: BTreeMap<&str, usize> = BTreeMap::new();
        for l in asked.iter().filter(|l| l.added) {
            *per_label.entry(l.label.as_str()).or_default() += 1;
        }
        let most = per_label.values().copied().max().unwrap_or(0);
        *requests.entry(most).or_default() += 1;
        let labels = journal.labels(OWNER, REPO, number as u64);
        if ["promoted-to-staging", "promoted-to-prod"]
            .iter()
            .all(|want| labels.iter().any(|l| l == want))
        {
            both += 1;
        }
    }
    verdict.say(format!(
        "labels: {both}/{n} PRs carry promoted-to-staging and promoted-to-prod; add requests per label per PR (count -> PRs): {}",
        render(&requests)
    ));
}

fn phases_verdict(
    verdict: &mut Verdict,
    list: &[PullRequestTracker],
    triggers: &[Triggered],
    n: usize,
) {
    let mut phases: BTreeMap<String, usize> = BTreeMap::new();
    for t in list {
        let s = t.status.clone().unwrap_or_default();
        let key = format!(
            "{} in {}",
            s.phase.map_or("(none)".to_string(), |p| format!("{p:?}")),
            s.current_environment.as_deref().unwrap_or("?")
        );
        *phases.entry(key).or_default() += 1;
    }
    let finished = list.iter().filter(|t| completed(t)).count();
    verdict.not_completed = n - finished.min(n);
    let shown: Vec<String> = phases.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    verdict.say(format!("trackers by phase: {}", shown.join(", ")));
    for t in list.iter().filter(|t| !completed(t)).take(20) {
        let s = t.status.clone().unwrap_or_default();
        verdict.say(format!(
            "  not Completed: {} {:?} in {}: {}",
            t.metadata.name.as_deref().unwrap_or_default(),
            s.phase,
            s.current_environment.as_deref().unwrap_or("?"),
            s.message.unwrap_or_default()
        ));
        for run in s.test_runs.iter().filter(|r| r.run_id.is_none()) {
            let id = run.correlation_id.as_deref().unwrap_or_default();
            let started = triggers
                .iter()
                .filter(|t| t.correlation_id.as_deref() == Some(id))
                .count();
            let attempts: Vec<String> = run
                .attempts
                .iter()
                .map(|a| {
                    format!(
                        "armed {} answered {} ({:?})",
                        a.armed_at.0,
                        a.answered_at
                            .as_ref()
                            .map_or("never".into(), |t| t.0.to_string()),
                        a.outcome
                    )
                })
                .collect();
            verdict.say(format!(
                "    {} {} {id}: {started} runs started in the CI stand-in; attempts: {}",
                run.name,
                run.job,
                attempts.join("; ")
            ));
        }
    }
}

fn render(histogram: &BTreeMap<usize, usize>) -> String {
    histogram
        .iter()
        .map(|(k, v)| format!("{k} -> {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The short version of `cargo xtask chaos`: 20 PRs, a few SIGKILLs and one
    /// apiserver restart, with its own control plane (the restart must not disturb
    /// the other tests' shared one).
    #[test]
    fn twenty_prs_through_kills_and_an_apiserver_restart_trigger_and_promote_once() {
        let bins = promotion_testenv::binaries::ensure_built().expect("binaries");
        // Started on this thread, which drives the run: a restarted apiserver dies with it.
        let mut plane = ControlPlane::start(&bins).expect("a control plane");
        let root = crate::workspace_root();
        let binary = process::build(&root, false).expect("the controller binary");
        let args = ChaosArgs {
            prs: 20,
            seed: 11,
            kills: 4,
            kill_max: Duration::from_secs(4),
            run_min: Duration::from_millis(500),
            run_max: Duration::from_secs(3),
            max_rearms: 3,
            // More of each fault than the default, so that 20 PRs meet them all.
            late_percent: 15,
            delay_percent: 25,
            deadline: Duration::from_secs(600),
        };
        let runtime = tokio::runtime::Runtime::new().expect("runtime");
        let verdict = runtime
            .block_on(run(
                &mut plane,
                &binary,
                &root.join("target/chaos-test"),
                &args,
            ))
            .expect("the chaos run");
        plane.stop();
        let summary = verdict.lines.join("\n");
        assert_eq!(verdict.duplicate_triggers, 0, "{summary}");
        assert_eq!(verdict.duplicate_promotions, 0, "{summary}");
        assert_eq!(verdict.not_completed, 0, "{summary}");
    }
}

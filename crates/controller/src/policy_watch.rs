//! Folds the PromotionPolicy watch into the PolicyCache, and shows each policy's
//! verdict in its status (Valid, Ready) so a bad policy is visible in `kubectl get pp`,
//! with FindPossible: whether the CI configuration lets `find` adopt its runs after a
//! crash (checked through the runners once per generation; a failed check again
//! after [`RECHECK_AFTER`]).

use crate::store::FIELD_MANAGER;
use futures::StreamExt;
use futures::channel::mpsc::UnboundedSender;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use promotion_api::PromotionPolicy;
use promotion_core::policy_cache::{CachedPolicy, PolicyCache};
use promotion_core::policy_verdict::{FindCheck, PolicyVerdict, tests_summary};
use promotion_core::ports::TestRunner;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// The longest a policy's find check may hold up the watch.
const CHECK_TIMEOUT: Duration = Duration::from_secs(10);
/// A check that could not reach a CI system is tried again this long after, at the next event.
pub const RECHECK_AFTER: Duration = Duration::from_secs(60);

/// The last find check of each policy: the generation it judged, when, and what it found.
type Checks = HashMap<(String, String), (Option<i64>, Instant, FindCheck)>;

/// The find check of `policy`, from `checks` when it judged this generation (and did
/// not fail recently), else asked of the CI systems now.
async fn find_check(
    checks: &mut Checks,
    runner: &dyn TestRunner,
    policy: &CachedPolicy,
) -> FindCheck {
    let key = (policy.namespace.clone(), policy.name.clone());
    if let Some((generation, at, check)) = checks.get(&key) {
        let fresh = !matches!(check, FindCheck::Unknown(_)) || at.elapsed() < RECHECK_AFTER;
        if *generation == policy.generation && fresh {
            return check.clone();
        }
    }
    let check = tokio::time::timeout(CHECK_TIMEOUT, FindCheck::of(runner, policy))
        .await
        .unwrap_or_else(|_| {
            FindCheck::Unknown(vec![format!(
                "the CI systems did not answer within {}s",
                CHECK_TIMEOUT.as_secs()
            )])
        });
    checks.insert(key, (policy.generation, Instant::now(), check.clone()));
    check
}

/// A policy as the cache wants it.
pub fn to_cached(p: &PromotionPolicy) -> CachedPolicy {
    CachedPolicy::new(
        &p.namespace().unwrap_or_default(),
        &p.name_any(),
        p.metadata.generation,
        p.spec.clone(),
    )
}

/// Watches policies until the stream ends. Signals `ready` after the first full list,
/// and sends the namespace of every change to `changed` so its trackers are looked at.
pub async fn run(
    client: Client,
    api: Api<PromotionPolicy>,
    config: watcher::Config,
    cache: PolicyCache,
    ready: watch::Sender<bool>,
    changed: UnboundedSender<String>,
    runner: Arc<dyn TestRunner>,
) {
    let mut checks = Checks::new();
    let mut known: HashMap<(String, String), PromotionPolicy> = HashMap::new();
    let mut listing: Vec<PromotionPolicy> = Vec::new();
    let mut stream = watcher(api.clone(), config).boxed();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "policy watch failed; retrying");
                continue;
            }
        };
        let mut touched: Vec<(String, String)> = Vec::new();
        match event {
            Event::Init => listing.clear(),
            Event::InitApply(p) => listing.push(p),
            Event::InitDone => {
                known = listing.drain(..).map(|p| (key(&p), p)).collect();
                cache.replace_all(known.values().map(to_cached));
                touched = known
                    .values()
                    .map(|p| {
                        (
                            p.namespace().unwrap_or_default(),
                            p.spec.source_environment.clone(),
                        )
                    })
                    .collect();
                let _ = ready.send(true);
            }
            Event::Apply(p) => {
                let ns = p.namespace().unwrap_or_default();
                if let Some(old) = known.get(&key(&p)) {
                    touched.push((ns.clone(), old.spec.source_environment.clone()));
                }
                touched.push((ns, p.spec.source_environment.clone()));
                cache.upsert(to_cached(&p));
                known.insert(key(&p), p);
            }
            Event::Delete(p) => {
                cache.remove(&p.namespace().unwrap_or_default(), &p.name_any());
                known.remove(&key(&p));
                checks.remove(&key(&p));
                touched.push((
                    p.namespace().unwrap_or_default(),
                    p.spec.source_environment.clone(),
                ));
            }
        }
        // A verdict depends on the other policies of the namespace (rivals, cycles): judge them all again.
        let mut namespaces: Vec<String> = touched.into_iter().map(|(ns, _)| ns).collect();
        namespaces.sort();
        namespaces.dedup();
        for ns in namespaces {
            for policy in cache.in_namespace(&ns) {
                if let Some(obj) = known.get(&(ns.clone(), policy.name.clone())) {
                    let find = find_check(&mut checks, runner.as_ref(), &policy).await;
                    update_status(&client, obj, &policy, &cache, &find).await;
                }
            }
            let _ = changed.unbounded_send(ns);
        }
    }
}

fn watcher(
    api: Api<PromotionPolicy>,
    config: watcher::Config,
) -> impl futures::Stream<Item = Result<Event<PromotionPolicy>, watcher::Error>> {
    watcher::watcher(api, config).default_backoff()
}

fn key(p: &PromotionPolicy) -> (String, String) {
    (p.namespace().unwrap_or_default(), p.name_any())
}

/// Writes the core's verdict (Valid, Ready, FindPossible, the tests line) when it differs
/// from what the policy shows.
async fn update_status(
    client: &Client,
    obj: &PromotionPolicy,
    policy: &CachedPolicy,
    cache: &PolicyCache,
    find: &FindCheck,
) {
    let current = obj.status.clone().unwrap_or_default();
    let g = obj.metadata.generation;
    let mut conds = PolicyVerdict::of(cache, policy).conditions(policy, &current.conditions, g);
    find.apply(&mut conds, g);
    let tests = tests_summary(policy);
    let same = current.observed_generation == g
        && current.tests.as_deref() == Some(tests.as_str())
        && conds.len() == current.conditions.len()
        && conds.iter().zip(&current.conditions).all(|(a, b)| {
            a.type_ == b.type_
                && a.status == b.status
                && a.reason == b.reason
                && a.message == b.message
                && a.observed_generation == b.observed_generation
        });
    if same {
        return;
    }
    let api: Api<PromotionPolicy> = Api::namespaced(client.clone(), &policy.namespace);
    let patch = serde_json::json!({"status": {"observedGeneration": g, "conditions": conds, "tests": tests}});
    let params = PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..PatchParams::default()
    };
    if let Err(e) = api
        .patch_status(&policy.name, &params, &Patch::Merge(&patch))
        .await
    {
        tracing::warn!(policy = %policy.name, error = %e, "could not update the policy's status");
    }
}

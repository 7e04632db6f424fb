//! An Argo CD stand-in for Applications (`argoproj.io/v1alpha1`): it syncs an
//! Application whose target revision moved, as Argo CD's automated sync would,
//! and builds opted-in Applications for tests and the demo.

use futures::StreamExt;
use kube::api::{Api, DynamicObject, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher;
use promotion_argocd::{ALLOW_PROMOTION_FROM, application_resource};
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

/// The field manager of the stand-in's writes, as Argo CD's application controller.
const FIELD_MANAGER: &str = "argocd-application-controller";
/// Argo CD re-reads the app when it sees this annotation, then removes it.
const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";
/// How often a sync is attempted when the app keeps changing under it.
const ATTEMPTS: usize = 5;

/// Acts as Argo CD would for Applications in all namespaces: when
/// `spec.source.targetRevision` (or `spec.sources[*].targetRevision`) differs from
/// `status.sync.revision(s)`, after `delay` writes the status Argo CD writes after a
/// successful sync (see `synced_status`), and removes the finished `operation` and
/// the refresh annotation. The CRD has no status subresource, so the main resource
/// is written. Runs until the handle is aborted.
pub fn spawn_syncer(client: kube::Client, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(
        Api::all_with(client.clone(), &application_resource()),
        client,
        delay,
        Writes::default(),
        Syncs::default(),
    ))
}

/// [`spawn_syncer`] for the Applications of one namespace only, so that tests
/// sharing a control plane do not sync each other's apps.
pub fn spawn_namespaced_syncer(
    client: kube::Client,
    namespace: &str,
    delay: Duration,
) -> tokio::task::JoinHandle<()> {
    spawn_counting_syncer(client, namespace, delay, Writes::default())
}

/// [`spawn_namespaced_syncer`] that also records in `writes` every write that
/// left an Application out of sync, before a burst of them is synced once.
pub fn spawn_counting_syncer(
    client: kube::Client,
    namespace: &str,
    delay: Duration,
    writes: Writes,
) -> tokio::task::JoinHandle<()> {
    spawn_journaled_syncer(client, namespace, delay, writes, Syncs::default())
}

/// [`spawn_counting_syncer`] that also records in `syncs` when it marked each
/// Application synced, and counts the requests its syncs made (the benchmark
/// tells them apart from the controller's this way).
pub fn spawn_journaled_syncer(
    client: kube::Client,
    namespace: &str,
    delay: Duration,
    writes: Writes,
    syncs: Syncs,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(
        Api::namespaced_with(client.clone(), namespace, &application_resource()),
        client,
        delay,
        writes,
        syncs,
    ))
}

/// An opted-in Application object (JSON) for `name` in `namespace`, at `revision`,
/// already Synced + Healthy at it, that policies in `policy_namespace` may promote
/// into `environment`.
pub fn application(
    namespace: &str,
    name: &str,
    revision: &str,
    policy_namespace: &str,
    environment: &str,
) -> Value {
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Application",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "annotations": {ALLOW_PROMOTION_FROM: format!("{policy_namespace}/{environment}")},
            "labels": {"app.kubernetes.io/part-of": "promotion-standins"},
        },
        "spec": {
            "project": "default",
            "source": {
                "repoURL": "https://git.example.com/platform/deploy.git",
                "path": format!("apps/{name}"),
                "targetRevision": revision,
            },
            "destination": {"server": "https://kubernetes.default.svc", "namespace": environment},
            "syncPolicy": {"automated": {"prune": true, "selfHeal": true}},
        },
    });
    with_synced_status(app)
}

/// What the spec asks to be deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Targets {
    Single(String),
    Multi(Vec<String>),
}

/// A source's target revision; Argo CD reads a missing or empty one as HEAD.
fn target_revision(source: &Value) -> String {
    source
        .get("targetRevision")
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty())
        .unwrap_or("HEAD")
        .to_owned()
}

/// `spec.sources` when the app is multi-source (Argo CD then ignores `spec.source`).
fn sources(data: &Value) -> Option<&Vec<Value>> {
    data.pointer("/spec/sources")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
}

fn targets(data: &Value) -> Option<Targets> {
    if let Some(sources) = sources(data) {
        return Some(Targets::Multi(
            sources.iter().map(target_revision).collect(),
        ));
    }
    data.pointer("/spec/source")
        .map(|single| Targets::Single(target_revision(single)))
}

/// The targets, when the status does not show them deployed yet.
fn out_of_sync(data: &Value) -> Option<Targets> {
    let want = targets(data)?;
    let sync = data.pointer("/status/sync");
    let have = match &want {
        Targets::Single(_) => sync
            .and_then(|s| s.get("revision"))
            .and_then(Value::as_str)
            .map(|r| Targets::Single(r.to_owned())),
        Targets::Multi(_) => sync
            .and_then(|s| s.get("revisions"))
            .and_then(Value::as_array)
            .map(|rs| {
                Targets::Multi(
                    rs.iter()
                        .map(|r| r.as_str().unwrap_or_default().to_owned())
                        .collect(),
                )
            }),
    };
    (have.as_ref() != Some(&want)).then_some(want)
}

/// Argo CD's default `spec.revisionHistoryLimit`.
const HISTORY_LIMIT: usize = 10;

/// The status Argo CD leaves on an app after a successful sync to `want`, as
/// its application controller writes it (v3.6, `controller/state.go` and
/// `controller/sync.go`): `sync` with what was compared, `revision` for a
/// single-source app and `revisions` (one per source) for a multi-source one;
/// `health`; `operationState` with the operation that ran and its `syncResult`
/// (whose `revision` is always present, empty for a multi-source app); one more
/// `history` entry; `reconciledAt`. Fields of `status` it does not own are kept.
fn synced_status(data: &Value, want: &Targets, now: &str) -> Value {
    let previous = data.get("status").cloned().unwrap_or_else(|| json!({}));
    let mut status = match previous {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    let destination = data
        .pointer("/spec/destination")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let source = data.pointer("/spec/source").cloned();
    let all_sources = sources(data).cloned();
    // An operation someone asked for (a promotion's sync) is the one that ran;
    // otherwise automated sync started one of its own.
    let operation = data
        .get("operation")
        .filter(|o| o.is_object())
        .cloned()
        .unwrap_or_else(|| {
            let sync = match want {
                Targets::Single(r) => json!({"revision": r, "prune": true}),
                Targets::Multi(rs) => json!({"revisions": rs, "prune": true}),
            };
            json!({"sync": sync, "initiatedBy": {"automated": true}, "retry": {}})
        });
    let initiated_by = operation
        .get("initiatedBy")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let next_id = status
        .get("history")
        .and_then(Value::as_array)
        .and_then(|h| h.last())
        .and_then(|last| last.get("id"))
        .and_then(Value::as_i64)
        .map_or(0, |id| id + 1);
    let (sync, result, entry) = match want {
        Targets::Multi(rs) => {
            let list = Value::Array(all_sources.unwrap_or_default());
            let first = list.get(0).cloned().unwrap_or_else(|| json!({}));
            (
                json!({
                    "status": "Synced",
                    "comparedTo": {"sources": list, "destination": destination},
                    "revisions": rs,
                }),
                json!({"revision": "", "revisions": rs, "source": first, "sources": list}),
                json!({"revisions": rs, "sources": list}),
            )
        }
        Targets::Single(r) => {
            let source = source.unwrap_or_else(|| json!({}));
            (
                json!({
                    "status": "Synced",
                    "comparedTo": {"source": source, "destination": destination},
                    "revision": r,
                }),
                json!({"revision": r, "source": source}),
                json!({"revision": r, "source": source}),
            )
        }
    };
    let mut history: Vec<Value> = status
        .get("history")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut entry = entry;
    entry["id"] = json!(next_id);
    entry["deployStartedAt"] = json!(now);
    entry["deployedAt"] = json!(now);
    entry["initiatedBy"] = initiated_by;
    history.push(entry);
    let excess = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..excess);

    let was_healthy = status
        .get("health")
        .and_then(|h| h.get("status"))
        .and_then(Value::as_str)
        == Some("Healthy");
    let health = if was_healthy {
        status.get("health").cloned().unwrap_or_default()
    } else {
        json!({"status": "Healthy", "lastTransitionTime": now})
    };
    status.insert("sync".into(), sync);
    status.insert("health".into(), health);
    status.insert(
        "operationState".into(),
        json!({
            "operation": operation,
            "phase": "Succeeded",
            "message": "successfully synced (all tasks run)",
            "syncResult": result,
            "startedAt": now,
            "finishedAt": now,
        }),
    );
    status.insert("history".into(), Value::Array(history));
    status.insert("reconciledAt".into(), json!(now));
    Value::Object(status)
}

/// An app body with its status set as Argo CD's would be after syncing its spec.
fn with_synced_status(mut app: Value) -> Value {
    if let Some(want) = targets(&app) {
        let now = crate::runtime::rfc3339(SystemTime::now());
        app["status"] = synced_status(&app, &want, &now);
    }
    app
}

async fn run(
    api: Api<DynamicObject>,
    client: kube::Client,
    delay: Duration,
    writes: Writes,
    syncs: Syncs,
) {
    // Apps with a sync scheduled, so a burst of events schedules one.
    let pending: Arc<Mutex<HashSet<(String, String)>>> = Arc::default();
    // Aborting this task drops the set, which aborts the scheduled syncs with it.
    let mut scheduled = tokio::task::JoinSet::new();
    let mut events = watcher::watcher(api, watcher::Config::default())
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(event) = events.next().await {
        while scheduled.try_join_next().is_some() {}
        let app = match event {
            Ok(app) => app,
            Err(e) => {
                tracing::debug!(error = %e, "Application watch failed; retrying");
                continue;
            }
        };
        if out_of_sync(&app.data).is_none() {
            continue;
        }
        let (Some(ns), Some(name)) = (app.metadata.namespace.clone(), app.metadata.name.clone())
        else {
            continue;
        };
        let key = (ns.clone(), name.clone());
        writes.record(&key, app.metadata.resource_version.as_deref());
        if !pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.clone())
        {
            continue;
        }
        let pending = pending.clone();
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &ns, &application_resource());
        let syncs = syncs.clone();
        scheduled.spawn(async move {
            tokio::time::sleep(delay).await;
            // Removed before reading, so a change made from here on schedules another sync.
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            if let Err(e) = sync(&api, &name, &syncs).await {
                tracing::warn!(namespace = %ns, app = %name, error = %e, "stand-in sync failed");
            }
        });
    }
}

/// Marks the app synced at what its spec targets now. The CRD has no status
/// subresource, so the whole object is written back (a merge patch would leave
/// stale keys inside `status.sync.comparedTo`); the read resourceVersion guards
/// it, so a spec that moves meanwhile is never reported synced at the old revision.
async fn sync(api: &Api<DynamicObject>, name: &str, syncs: &Syncs) -> Result<(), kube::Error> {
    for _ in 0..ATTEMPTS {
        syncs.count(Request::Get);
        let mut app = match api.get_opt(name).await? {
            Some(app) => app,
            None => return Ok(()),
        };
        let Some(want) = out_of_sync(&app.data) else {
            return Ok(());
        };
        let at = SystemTime::now();
        let now = crate::runtime::rfc3339(at);
        let status = synced_status(&app.data, &want, &now);
        if let Some(data) = app.data.as_object_mut() {
            data.insert("status".into(), status);
            // The operation ran: Argo CD removes it.
            data.remove("operation");
        }
        if let Some(annotations) = app.metadata.annotations.as_mut() {
            annotations.remove(REFRESH_ANNOTATION);
        }
        app.metadata.managed_fields = None;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        syncs.count(Request::Put);
        match api.replace(name, &params, &app).await {
            Ok(_) => {
                syncs.record(Synced {
                    namespace: app.metadata.namespace.clone().unwrap_or_default(),
                    name: name.to_owned(),
                    revisions: match want {
                        Targets::Single(r) => vec![r],
                        Targets::Multi(rs) => rs,
                    },
                    at,
                });
                tracing::debug!(app = %name, "stand-in synced the application");
                return Ok(());
            }
            Err(kube::Error::Api(s)) if s.code == 409 => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Every write the syncer saw that left an Application out of sync (a promotion,
/// repeated ones included), counted once per resourceVersion. Cloneable, shared.
#[derive(Clone, Debug, Default)]
pub struct Writes(Arc<Mutex<WritesByApp>>);

/// The resourceVersions of the writes seen, per (namespace, name).
type WritesByApp = std::collections::HashMap<(String, String), Vec<String>>;

impl Writes {
    fn record(&self, (ns, name): &(String, String), version: Option<&str>) {
        let mut seen = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let versions = seen.entry((ns.clone(), name.clone())).or_default();
        let version = version.unwrap_or_default().to_owned();
        if !versions.contains(&version) {
            versions.push(version);
        }
    }

    /// How many such writes the Application `namespace/name` had.
    pub fn count(&self, namespace: &str, name: &str) -> usize {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_owned(), name.to_owned()))
            .map_or(0, Vec::len)
    }
}

/// One sync the stand-in wrote: the Application and the revision(s) it now reports
/// Synced + Healthy at, from `at` (the time written into its status).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Synced {
    /// The Application's namespace.
    pub namespace: String,
    /// The Application's name.
    pub name: String,
    /// Its revision, or one per source for a multi-source app.
    pub revisions: Vec<String>,
    /// When the stand-in marked it synced.
    pub at: SystemTime,
}

/// The requests a sync makes.
#[derive(Clone, Copy, Debug)]
enum Request {
    Get,
    Put,
}

/// Every sync the stand-in wrote, oldest first, and the GETs and PUTs its syncs
/// sent (conflicts and retries included). Cloneable, shared.
#[derive(Clone, Debug, Default)]
pub struct Syncs(Arc<Mutex<SyncLog>>);

#[derive(Debug, Default)]
struct SyncLog {
    done: Vec<Synced>,
    gets: u64,
    puts: u64,
}

impl Syncs {
    fn record(&self, synced: Synced) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .done
            .push(synced);
    }

    fn count(&self, request: Request) {
        let mut log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match request {
            Request::Get => log.gets += 1,
            Request::Put => log.puts += 1,
        }
    }

    /// The syncs from the `from`-th on (0: all), so a reader can follow the log cheaply.
    pub fn since(&self, from: usize) -> Vec<Synced> {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        log.done
            .get(from..)
            .map(<[Synced]>::to_vec)
            .unwrap_or_default()
    }

    /// How many GET and PUT requests on Applications the syncs sent so far.
    pub fn requests(&self) -> (u64, u64) {
        let log = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        (log.gets, log.puts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-02T03:04:05Z";

    #[test]
    fn a_new_application_is_in_sync_and_a_moved_one_is_not() {
        let mut app = application("argocd", "shop-dev", "abc", "team-a", "dev");
        assert_eq!(out_of_sync(&app), None);
        assert_eq!(
            app["metadata"]["annotations"][ALLOW_PROMOTION_FROM],
            "team-a/dev"
        );
        app["spec"]["source"]["targetRevision"] = json!("def");
        assert_eq!(out_of_sync(&app), Some(Targets::Single("def".into())));
        app["spec"]["sources"] = json!([
            {"repoURL": "https://charts.example", "targetRevision": "x"},
            {"repoURL": "https://git.example", "targetRevision": "y"},
        ]);
        let want = Targets::Multi(vec!["x".into(), "y".into()]);
        assert_eq!(out_of_sync(&app), Some(want.clone()));
        app["status"] = synced_status(&app, &want, NOW);
        assert_eq!(out_of_sync(&app), None);
    }

    #[test]
    fn single_source_status_is_argo_cds() {
        let app = application("argocd", "web", "abc", "team-a", "dev");
        let status = synced_status(&app, &Targets::Single("abc".into()), NOW);
        assert_eq!(status["sync"]["status"], "Synced");
        assert_eq!(status["sync"]["revision"], "abc");
        assert!(status["sync"].get("revisions").is_none());
        assert_eq!(
            status["sync"]["comparedTo"]["source"],
            app["spec"]["source"]
        );
        assert_eq!(
            status["sync"]["comparedTo"]["destination"],
            app["spec"]["destination"]
        );
        assert_eq!(status["health"]["status"], "Healthy");
        let op = &status["operationState"];
        assert_eq!(op["phase"], "Succeeded");
        assert_eq!(op["startedAt"], NOW);
        assert_eq!(op["finishedAt"], NOW);
        assert_eq!(op["operation"]["initiatedBy"]["automated"], true);
        assert_eq!(op["operation"]["sync"]["revision"], "abc");
        assert_eq!(op["syncResult"]["revision"], "abc");
        assert!(op["syncResult"].get("revisions").is_none());
        assert_eq!(op["syncResult"]["source"], app["spec"]["source"]);
        assert_eq!(status["reconciledAt"], NOW);
        // `application` already recorded one sync; this is the second.
        assert_eq!(status["history"][1]["id"], 1);
        assert_eq!(status["history"][1]["revision"], "abc");
    }

    #[test]
    fn multi_source_status_lists_one_revision_per_source() {
        let mut app = application("argocd", "web", "abc", "team-a", "dev");
        let sources = json!([
            {"repoURL": "https://charts.example", "chart": "web", "targetRevision": "1.4.2"},
            {"repoURL": "https://git.example/web", "ref": "values", "targetRevision": "def"},
        ]);
        app["spec"]["sources"] = sources.clone();
        let want = out_of_sync(&app).unwrap_or_else(|| panic!("the sources moved"));
        let status = synced_status(&app, &want, NOW);
        assert_eq!(status["sync"]["revisions"], json!(["1.4.2", "def"]));
        // Argo CD omits `revision` for a multi-source app (the old one is gone)...
        assert!(status["sync"].get("revision").is_none(), "{status}");
        assert_eq!(status["sync"]["comparedTo"]["sources"], sources);
        // ...but its syncResult always carries one, empty.
        let result = &status["operationState"]["syncResult"];
        assert_eq!(result["revision"], "");
        assert_eq!(result["revisions"], json!(["1.4.2", "def"]));
        assert_eq!(result["source"], sources[0]);
        assert_eq!(result["sources"], sources);
        let last = status["history"].as_array().and_then(|h| h.last()).cloned();
        assert_eq!(
            last.map(|l| l["revisions"].clone()),
            Some(json!(["1.4.2", "def"]))
        );
    }

    #[test]
    fn a_requested_operation_is_the_one_recorded() {
        let mut app = application("argocd", "web", "abc", "team-a", "dev");
        app["spec"]["source"]["targetRevision"] = json!("def");
        app["operation"] = json!({
            "initiatedBy": {"username": "promotion-controller", "automated": false},
            "sync": {"revision": "def"},
        });
        let status = synced_status(&app, &Targets::Single("def".into()), NOW);
        assert_eq!(status["operationState"]["operation"], app["operation"]);
        let last = status["history"].as_array().and_then(|h| h.last()).cloned();
        assert_eq!(
            last.map(|l| l["initiatedBy"]["username"].clone()),
            Some(json!("promotion-controller"))
        );
    }

    #[test]
    fn the_sync_log_is_read_from_where_the_reader_left_off() {
        let syncs = Syncs::default();
        let at = SystemTime::UNIX_EPOCH;
        for name in ["a", "b", "c"] {
            syncs.record(Synced {
                namespace: "argocd".into(),
                name: name.into(),
                revisions: vec!["abc".into()],
                at,
            });
        }
        syncs.count(Request::Get);
        syncs.count(Request::Get);
        syncs.count(Request::Put);
        let names = |from| {
            syncs
                .since(from)
                .into_iter()
                .map(|s| s.name)
                .collect::<Vec<_>>()
        };
        assert_eq!(names(0), ["a", "b", "c"]);
        assert_eq!(names(2), ["c"]);
        assert!(names(3).is_empty());
        assert!(names(9).is_empty(), "past the end is empty, not a panic");
        assert_eq!(syncs.requests(), (2, 1));
    }

    #[test]
    fn history_keeps_the_last_ten() {
        let mut app = application("argocd", "web", "r0", "team-a", "dev");
        for i in 1..15 {
            app["spec"]["source"]["targetRevision"] = json!(format!("r{i}"));
            let want = out_of_sync(&app).unwrap_or_else(|| panic!("moved"));
            app["status"] = synced_status(&app, &want, NOW);
        }
        let history = app["status"]["history"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(history.len(), HISTORY_LIMIT);
        assert_eq!(history[0]["id"], 5);
        assert_eq!(history[9]["id"], 14);
        assert_eq!(history[9]["revision"], "r14");
    }
}

//! An Argo CD stand-in for Applications (`argoproj.io/v1alpha1`): it syncs an
//! Application whose target revision moved, as Argo CD's automated sync would,
//! and builds opted-in Applications for tests and the demo.

use futures::StreamExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
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
/// `status.sync.revision(s)`, after `delay` sets `status.sync` {Synced, revision(s)},
/// `status.health.status` Healthy and `status.operationState.phase` Succeeded, and
/// removes a finished `operation` and the refresh annotation. The CRD has no status
/// subresource, so the main resource is patched. Runs until the handle is aborted.
pub fn spawn_syncer(client: kube::Client, delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(
        Api::all_with(client.clone(), &application_resource()),
        client,
        delay,
        Writes::default(),
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
    tokio::spawn(run(
        Api::namespaced_with(client.clone(), namespace, &application_resource()),
        client,
        delay,
        writes,
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
    json!({
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
        "status": synced_status(&Targets::Single(revision.to_owned())),
    })
}

/// What the spec asks to be deployed.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Targets {
    Single(String),
    Multi(Vec<String>),
}

fn targets(data: &Value) -> Option<Targets> {
    let spec = data.get("spec")?;
    if let Some(sources) = spec
        .get("sources")
        .and_then(Value::as_array)
        .filter(|s| !s.is_empty())
    {
        return Some(Targets::Multi(
            sources
                .iter()
                .map(|s| {
                    s.get("targetRevision")
                        .and_then(Value::as_str)
                        .unwrap_or("HEAD")
                        .to_owned()
                })
                .collect(),
        ));
    }
    let single = spec.get("source")?;
    Some(Targets::Single(
        single
            .get("targetRevision")
            .and_then(Value::as_str)
            .unwrap_or("HEAD")
            .to_owned(),
    ))
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

fn synced_status(targets: &Targets) -> Value {
    let now = crate::runtime::rfc3339(SystemTime::now());
    let (sync, result) = match targets {
        Targets::Single(r) => (
            json!({"status": "Synced", "revision": r}),
            json!({"revision": r}),
        ),
        Targets::Multi(rs) => (
            json!({"status": "Synced", "revisions": rs, "revision": null}),
            json!({"revisions": rs}),
        ),
    };
    json!({
        "sync": sync,
        "health": {"status": "Healthy"},
        "operationState": {
            "phase": "Succeeded",
            "message": "successfully synced (all tasks run)",
            "startedAt": now,
            "finishedAt": now,
            "syncResult": result,
        },
        "reconciledAt": now,
    })
}

async fn run(api: Api<DynamicObject>, client: kube::Client, delay: Duration, writes: Writes) {
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
        scheduled.spawn(async move {
            tokio::time::sleep(delay).await;
            // Removed before reading, so a change made from here on schedules another sync.
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&key);
            if let Err(e) = sync(&api, &name).await {
                tracing::warn!(namespace = %ns, app = %name, error = %e, "stand-in sync failed");
            }
        });
    }
}

/// Marks the app synced at what its spec targets now; guarded by resourceVersion,
/// so a spec that moves meanwhile is never reported synced at the old revision.
async fn sync(api: &Api<DynamicObject>, name: &str) -> Result<(), kube::Error> {
    for _ in 0..ATTEMPTS {
        let app = match api.get_opt(name).await? {
            Some(app) => app,
            None => return Ok(()),
        };
        let Some(want) = out_of_sync(&app.data) else {
            return Ok(());
        };
        let mut metadata = Map::new();
        if let Some(rv) = &app.metadata.resource_version {
            metadata.insert("resourceVersion".into(), json!(rv));
        }
        if app
            .metadata
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(REFRESH_ANNOTATION))
        {
            metadata.insert(
                "annotations".into(),
                json!({ REFRESH_ANNOTATION: Value::Null }),
            );
        }
        let mut patch = json!({"metadata": metadata, "status": synced_status(&want)});
        if app.data.get("operation").is_some() {
            // The operation ran: Argo CD removes it.
            patch["operation"] = Value::Null;
        }
        let params = PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        match api.patch(name, &params, &Patch::Merge(&patch)).await {
            Ok(_) => {
                tracing::debug!(app = %name, ?want, "stand-in synced the application");
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

#[cfg(test)]
mod tests {
    use super::*;

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
        app["spec"]["sources"] = json!([{"targetRevision": "x"}, {"targetRevision": "y"}]);
        assert_eq!(
            out_of_sync(&app),
            Some(Targets::Multi(vec!["x".into(), "y".into()]))
        );
        app["status"] = synced_status(&Targets::Multi(vec!["x".into(), "y".into()]));
        assert_eq!(out_of_sync(&app), None);
    }
}

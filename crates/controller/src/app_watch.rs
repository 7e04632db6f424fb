//! Watches the Argo CD Applications that opted in (label `promotion.io/watch:
//! "true"`) in the controller's own cluster. A change of sync, health, revision
//! or operation wakes the trackers waiting on that app at once, so polling
//! Applications is only a slow safety net. Only a hash per app is kept: the
//! objects themselves never enter a cache.

use futures::{Stream, StreamExt};
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use promotion_core::ports::HELD_BY_ANNOTATION;
use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

/// The label an Application carries to be watched (value `"true"`).
pub const WATCH_LABEL: &str = "promotion.io/watch";

/// An Application whose progress changed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AppChanged {
    /// The Application's namespace.
    pub namespace: String,
    /// The Application's name.
    pub name: String,
}

/// A digest of what the engine reads of an Application (its progress, and who holds
/// it, so a release wakes the PRs queued for it); `None` before Argo CD wrote a status.
pub fn progress(app: &DynamicObject) -> Option<u64> {
    let status = app.data.get("status")?;
    let mut h = DefaultHasher::new();
    app.annotations().get(HELD_BY_ANNOTATION).hash(&mut h);
    for field in [
        "/sync/status",
        "/sync/revision",
        "/sync/revisions",
        "/health/status",
        "/operationState/phase",
    ] {
        status.pointer(field).map(|v| v.to_string()).hash(&mut h);
    }
    Some(h.finish())
}

/// The labelled Applications' changes in `namespaces` (all when empty); each app is
/// reported when its progress differs from what was last seen (also after a re-list).
pub fn changes(
    client: Client,
    namespaces: &[String],
) -> futures::stream::BoxStream<'static, AppChanged> {
    let resource = promotion_argocd::application_resource();
    if namespaces.is_empty() {
        return watch(Api::all_with(client, &resource)).boxed();
    }
    let each = namespaces
        .iter()
        .map(|ns| watch(Api::namespaced_with(client.clone(), ns, &resource)).boxed());
    futures::stream::select_all(each).boxed()
}

fn watch(api: Api<DynamicObject>) -> impl Stream<Item = AppChanged> + Send {
    let config = watcher::Config::default().labels(&format!("{WATCH_LABEL}=true"));
    let mut seen: HashMap<AppChanged, u64> = HashMap::new();
    watcher::watcher(api, config)
        .default_backoff()
        .applied_objects()
        .filter_map(move |event| {
            let changed = match event {
                Ok(app) => {
                    let key = AppChanged {
                        namespace: app.namespace().unwrap_or_default(),
                        name: app.name_any(),
                    };
                    match progress(&app) {
                        Some(p) if seen.get(&key) != Some(&p) => {
                            seen.insert(key.clone(), p);
                            Some(key)
                        }
                        _ => None,
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "watching Argo CD Applications; polling covers the gap");
                    None
                }
            };
            futures::future::ready(changed)
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn app(sync: &str, rev: &str, note: &str, held_by: Option<&str>) -> DynamicObject {
        let mut v = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "namespace": "argocd"},
            "status": {"sync": {"status": sync, "revision": rev},
                "health": {"status": "Healthy"}, "reconciledAt": note}});
        if let Some(h) = held_by {
            v["metadata"]["annotations"] = json!({ HELD_BY_ANNOTATION: h });
        }
        serde_json::from_value(v).expect("an Application")
    }

    #[test]
    fn progress_changes_with_what_the_engine_reads_and_only_that() {
        let a = progress(&app("Synced", "abc", "t1", None));
        assert!(a.is_some());
        let noise = progress(&app("Synced", "abc", "t2", None));
        assert_eq!(a, noise, "reconciledAt is noise");
        assert_ne!(a, progress(&app("OutOfSync", "abc", "t1", None)));
        assert_ne!(a, progress(&app("Synced", "def", "t1", None)));
        let held = progress(&app("Synced", "abc", "t1", Some("ns/pr-1/uid")));
        assert_ne!(a, held, "a hold taken or released is a change");
        let bare: DynamicObject = serde_json::from_value(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a"}, "spec": {}}))
        .expect("an Application");
        assert_eq!(progress(&bare), None);
    }
}

//! `watch`: the status table, redrawn whenever a tracker changes.

use crate::board;
use crate::cluster::{Cluster, Error, api_error, to_tracker, trackers_resource};
use crate::text::{self, Paint};
use futures::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use std::io::Write;

/// Redraws the status on every change until the watch ends or fails.
pub async fn watch(
    cluster: &Cluster,
    namespace: Option<String>,
    wide: bool,
    out: &mut (dyn Write + Send),
    paint: Paint,
) -> Result<(), Error> {
    let ar = trackers_resource();
    let api: Api<DynamicObject> = match &namespace {
        Some(ns) => Api::namespaced_with(cluster.client.clone(), ns, &ar),
        None => Api::all_with(cluster.client.clone(), &ar),
    };
    let writer = reflector::store::Writer::<DynamicObject>::new(ar.clone());
    let reader = writer.as_reader();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let mut last = String::new();
    let mut ready = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => ready = true,
            Ok(_) => {}
            Err(e) => {
                // A refusal will not go away by retrying; anything else the backoff retries.
                if let Some(err) = refusal(e, namespace.as_deref()) {
                    return Err(err);
                }
                continue;
            }
        }
        if !ready {
            continue;
        }
        let trackers: Vec<_> = {
            let mut list: Vec<_> = reader
                .state()
                .iter()
                .map(|o| to_tracker((**o).clone()))
                .collect();
            list.sort_by(|a, b| (a.namespace(), a.name()).cmp(&(b.namespace(), b.name())));
            list
        };
        // Policies change rarely; read them per redraw so new columns appear, and tolerate a refusal.
        let policies = cluster
            .policies(namespace.as_deref())
            .await
            .unwrap_or_default();
        let table = text::status(
            &board::board(&trackers, &policies),
            wide,
            namespace.is_none(),
            paint,
        );
        if table == last {
            continue;
        }
        let frame = if paint.0 {
            format!("\x1b[2J\x1b[H{table}")
        } else {
            format!("--- {}\n{table}", chrono::Utc::now().format("%H:%M:%S"))
        };
        out.write_all(frame.as_bytes())
            .and_then(|_| out.flush())
            .map_err(|e| Error::Usage(format!("writing output: {e}")))?;
        last = table;
    }
    Ok(())
}

fn refusal(e: watcher::Error, namespace: Option<&str>) -> Option<Error> {
    let err = match e {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        _ => return None,
    };
    match api_error(err, "watch", "pullrequesttrackers", namespace) {
        e @ Error::Forbidden { .. } => Some(e),
        _ => None,
    }
}

//! The slow periodic resync of pull requests: at start and then every interval, the
//! open PRs of each configured repository and its trackers are compared, and any
//! difference is settled by GitHub's truth. It catches deliveries lost while the
//! controller was down or GitHub could not reach it.

use crate::pr_sync::{Applied, PullRequestSync};
use std::sync::Arc;
use std::time::Duration;

/// Resyncs now and then every `every` until the future is dropped; a zero interval disables it.
pub async fn run(sync: Arc<PullRequestSync>, every: Duration) {
    if every.is_zero() || sync.repositories().is_empty() {
        tracing::info!("pull request resync disabled");
        return;
    }
    let mut ticks = tokio::time::interval(every);
    // A resync that overran its interval is followed by a pause, not by a burst.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        once(&sync).await;
    }
}

/// One resync of every repository, logged.
pub async fn once(sync: &PullRequestSync) {
    let report = sync.resync().await;
    let changed: Vec<&Applied> = report
        .applied
        .iter()
        .filter(|a| matches!(a, Applied::Created(_) | Applied::Updated(_)))
        .collect();
    for a in &changed {
        tracing::info!(outcome = ?a, "resync applied GitHub's state of a pull request");
    }
    for failure in &report.failures {
        tracing::warn!(%failure, "pull request resync");
    }
    tracing::debug!(
        looked_at = report.applied.len(),
        changed = changed.len(),
        failures = report.failures.len(),
        "pull request resync done"
    );
}

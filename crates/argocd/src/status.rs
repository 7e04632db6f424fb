//! Argo CD's words for an application's state, in the domain's terms.

use crate::model::AppData;
use promotion_core::ports::{AppStatus, HealthStatus, SyncStatus};
use serde_json::Value;

/// What the application's status says; a missing status is Unknown, not an error.
pub(crate) fn app_status(data: &AppData) -> AppStatus {
    let status = data.status.clone().unwrap_or_default();
    let sync = status.sync.unwrap_or_default();
    AppStatus {
        sync: sync_status(sync.status.as_deref()),
        health: health_status(status.health.and_then(|h| h.status).as_deref()),
        revisions: revisions(sync.revision, sync.revisions.unwrap_or_default()),
        operation_phase: status
            .operation_state
            .and_then(|o| o.phase)
            .filter(|p| !p.is_empty()),
        opt_in: None,
    }
}

fn sync_status(s: Option<&str>) -> SyncStatus {
    match s {
        Some("Synced") => SyncStatus::Synced,
        Some("OutOfSync") => SyncStatus::OutOfSync,
        _ => SyncStatus::Unknown,
    }
}

fn health_status(s: Option<&str>) -> HealthStatus {
    match s {
        Some("Healthy") => HealthStatus::Healthy,
        Some("Progressing") => HealthStatus::Progressing,
        Some("Degraded") => HealthStatus::Degraded,
        Some("Suspended") => HealthStatus::Suspended,
        Some("Missing") => HealthStatus::Missing,
        _ => HealthStatus::Unknown,
    }
}

/// `revision` for a single-source app, `revisions` (one per source) for a
/// multi-source one; Argo CD leaves the other empty, but either may carry data.
fn revisions(single: Option<String>, multi: Vec<Value>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let candidates = single.into_iter().chain(
        multi
            .into_iter()
            .filter_map(|v| v.as_str().map(str::to_owned)),
    );
    for r in candidates {
        if !r.is_empty() && !out.contains(&r) {
            out.push(r);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> AppStatus {
        app_status(&AppData::from_value(&v))
    }

    #[test]
    fn unknown_words_are_unknown() {
        let s = read(json!({"status": {"sync": {"status": "Weird"}, "health": {"status": "Odd"}}}));
        assert_eq!(s.sync, SyncStatus::Unknown);
        assert_eq!(s.health, HealthStatus::Unknown);
        assert!(s.revisions.is_empty());
        assert_eq!(s.operation_phase, None);
    }

    #[test]
    fn merges_single_and_multi_revisions_without_blanks() {
        let s = read(json!({"status": {"sync": {
            "revision": "", "revisions": ["abc", "", 3, "1.2.0", "abc"]
        }}}));
        assert_eq!(s.revisions, vec!["abc".to_string(), "1.2.0".to_string()]);
    }
}

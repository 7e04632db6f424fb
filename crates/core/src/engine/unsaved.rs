//! Gate progress kept between reconciles without a status write.
//!
//! Every write costs the API server more than anything else a hop does, and most
//! of a gate's progress (a run's id, Pending -> Running, one test of two passed)
//! decides nothing: the verdict is recomputed from the CI system on every look.
//! So after the intents are saved and the triggers sent, the runs as they move are
//! kept here, in memory, and written with the next transition that must be saved
//! (the verdict, a failure, a promotion record). A crash loses only what `find`
//! and the next poll recover: the armed intents, saved before any trigger, carry
//! the correlation ids that find the runs again.
//!
//! What is kept applies only to the exact status it was built on: if anything
//! wrote the tracker's gate since (this process or another), it is dropped.

use promotion_api::{PullRequestTrackerStatus, TestRun};
use std::collections::hash_map::DefaultHasher;
use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

/// Runs kept per tracker uid, with the fingerprint of the saved status they extend.
#[derive(Default)]
pub struct Unsaved {
    kept: Mutex<HashMap<String, Kept>>,
}

struct Kept {
    base: u64,
    runs: Vec<TestRun>,
}

impl Unsaved {
    /// Replaces the runs of `status` (as saved) by the ones kept for `uid`, if they
    /// were built on exactly this status; forgets them otherwise.
    pub(super) fn overlay(&self, uid: &str, status: &mut PullRequestTrackerStatus) {
        let Ok(mut kept) = self.kept.lock() else {
            return;
        };
        let Some(entry) = kept.remove(uid) else {
            return;
        };
        if entry.base == fingerprint(status) {
            status.test_runs = entry.runs;
        }
    }

    /// Keeps `runs` for `uid` on top of the saved status whose fingerprint is `base`.
    pub(super) fn keep(&self, uid: &str, base: u64, runs: Vec<TestRun>) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(uid.to_string(), Kept { base, runs });
        }
    }

    /// Forgets what was kept for `uid` (its tracker is gone).
    pub(super) fn forget(&self, uid: &str) {
        if let Ok(mut kept) = self.kept.lock() {
            kept.remove(uid);
        }
    }

    /// How many trackers have progress kept here.
    pub fn len(&self) -> usize {
        self.kept.lock().map(|k| k.len()).unwrap_or_default()
    }

    /// Whether nothing is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The uids of the trackers whose kept runs satisfy `pred`: a CI callback names a
    /// run by the id its trigger answered, which may be known only here.
    pub fn uids_where(&self, pred: impl Fn(&[TestRun]) -> bool) -> HashSet<String> {
        let Ok(kept) = self.kept.lock() else {
            return HashSet::new();
        };
        kept.iter()
            .filter(|(_, k)| pred(&k.runs))
            .map(|(uid, _)| uid.clone())
            .collect()
    }
}

/// What identifies a saved gate: the journey's position and its runs as saved.
pub(super) fn fingerprint(status: &PullRequestTrackerStatus) -> u64 {
    let mut h = DefaultHasher::new();
    status.head_sha.hash(&mut h);
    status.current_environment.hash(&mut h);
    status.attempt.hash(&mut h);
    status.phase.map(|p| format!("{p:?}")).hash(&mut h);
    // TestRun holds timestamps and enums without Hash; its JSON is stable and small.
    serde_json::to_vec(&status.test_runs)
        .unwrap_or_default()
        .hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_api::{Phase, Provider, TestState};

    fn run(name: &str, id: Option<&str>) -> TestRun {
        serde_json::from_value(serde_json::json!({
            "name": name, "provider": "jenkins", "job": name, "state": "Pending",
            "required": true, "runId": id
        }))
        .expect("run")
    }

    fn saved() -> PullRequestTrackerStatus {
        PullRequestTrackerStatus {
            phase: Some(Phase::Testing),
            head_sha: Some("abc".into()),
            test_runs: vec![run("smoke", None)],
            ..Default::default()
        }
    }

    #[test]
    fn kept_runs_apply_to_the_status_they_were_built_on() {
        let u = Unsaved::default();
        let base = saved();
        let mut moved = base.test_runs.clone();
        moved[0].run_id = Some("7".into());
        moved[0].state = TestState::Running;
        u.keep("uid", fingerprint(&base), moved.clone());
        let mut read = saved();
        u.overlay("uid", &mut read);
        assert_eq!(read.test_runs, moved);
        assert_eq!(moved[0].provider, Provider::Jenkins);
    }

    #[test]
    fn kept_runs_are_dropped_when_the_gate_was_written_since() {
        let u = Unsaved::default();
        let base = saved();
        let mut moved = base.test_runs.clone();
        moved[0].run_id = Some("7".into());
        u.keep("uid", fingerprint(&base), moved);
        let mut read = saved();
        read.attempt = Some(2);
        u.overlay("uid", &mut read);
        assert_eq!(
            read.test_runs[0].run_id, None,
            "a restarted gate is not overlaid"
        );
        assert_eq!(u.len(), 0, "and the stale runs are forgotten");
    }
}

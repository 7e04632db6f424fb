//! How each CI run ends, and after how long: set per job, shared by every server.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

/// How a run ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The run succeeds (Jenkins SUCCESS, GitHub `success`, GitLab `success`).
    Pass,
    /// The run fails (Jenkins FAILURE, GitHub `failure`, GitLab `failed`).
    Fail,
}

/// Per-job script: how each run of a job ends and after how long. Cloneable, shared.
///
/// A job is named as the policy names it: a Jenkins job path (`team-a/smoke`), a
/// GitHub Actions workflow file (`contract.yml`, also when the policy says
/// `owner/repo/contract.yml`), or a GitLab project path (`team-a/e2e`). The
/// script is read when a run is triggered, so a change applies to later runs.
#[derive(Clone, Debug)]
pub struct CiScript {
    inner: Arc<RwLock<Inner>>,
    /// Lengths drawn at random for runs of jobs without a script of their own.
    random: Arc<Mutex<Option<RandomLengths>>>,
}

/// Run lengths drawn uniformly from `min..=max` by a seeded generator.
#[derive(Debug)]
struct RandomLengths {
    min: Duration,
    max: Duration,
    rng: StdRng,
}

#[derive(Debug)]
struct Inner {
    default: (Outcome, Duration),
    jobs: HashMap<String, (Outcome, Duration)>,
}

impl CiScript {
    /// Every run passes after `default_after` unless set otherwise.
    pub fn new(default_after: Duration) -> Self {
        Self {
            inner: Arc::new(RwLock::new(Inner {
                default: (Outcome::Pass, default_after),
                jobs: HashMap::new(),
            })),
            random: Arc::default(),
        }
    }

    /// Runs of jobs without a script of their own take a random time between `min`
    /// and `max`, drawn in trigger order from a generator seeded with `seed`.
    pub fn set_random_lengths(&self, min: Duration, max: Duration, seed: u64) {
        *self.random.lock().unwrap_or_else(PoisonError::into_inner) = Some(RandomLengths {
            min,
            max: max.max(min),
            rng: StdRng::seed_from_u64(seed),
        });
    }

    /// Runs of `job` triggered from now on end with `outcome` after `after`.
    pub fn set(&self, job: &str, outcome: Outcome, after: Duration) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .jobs
            .insert(job.to_owned(), (outcome, after));
    }

    /// Runs of `job` go back to the default.
    pub fn unset(&self, job: &str) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .jobs
            .remove(job);
    }

    /// Runs of jobs without a script of their own end with `outcome` after `after`.
    pub fn set_default(&self, outcome: Outcome, after: Duration) {
        self.inner
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .default = (outcome, after);
    }

    /// How a run of `job` triggered now ends, and after how long.
    pub fn outcome(&self, job: &str) -> (Outcome, Duration) {
        let inner = self.inner.read().unwrap_or_else(PoisonError::into_inner);
        if let Some(own) = inner.jobs.get(job) {
            return *own;
        }
        let mut random = self.random.lock().unwrap_or_else(PoisonError::into_inner);
        match random.as_mut() {
            Some(r) => (inner.default.0, r.rng.random_range(r.min..=r.max)),
            None => inner.default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jobs_override_the_default() {
        let s = CiScript::new(Duration::from_secs(2));
        s.set("team-a/smoke", Outcome::Fail, Duration::from_millis(5));
        let shared = s.clone();
        assert_eq!(
            shared.outcome("team-a/smoke"),
            (Outcome::Fail, Duration::from_millis(5))
        );
        assert_eq!(
            shared.outcome("other"),
            (Outcome::Pass, Duration::from_secs(2))
        );
        s.unset("team-a/smoke");
        assert_eq!(shared.outcome("team-a/smoke").0, Outcome::Pass);
    }

    #[test]
    fn random_lengths_stay_in_range_and_follow_the_seed() {
        let draw = |seed| {
            let s = CiScript::new(Duration::from_secs(1));
            s.set_random_lengths(Duration::from_millis(100), Duration::from_millis(900), seed);
            s.set("own", Outcome::Fail, Duration::from_secs(7));
            assert_eq!(s.outcome("own"), (Outcome::Fail, Duration::from_secs(7)));
            (0..20).map(|_| s.outcome("any").1).collect::<Vec<_>>()
        };
        let a = draw(7);
        assert!(
            a.iter()
                .all(|d| (Duration::from_millis(100)..=Duration::from_millis(900)).contains(d))
        );
        assert_eq!(a, draw(7), "the same seed draws the same lengths");
        assert_ne!(a, draw(8));
    }
}

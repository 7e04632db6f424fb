//! Which test runs a CI system's completion callback is about. A callback only
//! wakes a tracker; the run's state is then read from the CI API.

use crate::records::is_final;
use promotion_api::{Provider, TestRun};

/// The prefix of a Jenkins run id while the run is a queue item (`queue:<item id>`):
/// its build number is not known yet.
pub const JENKINS_QUEUE_PREFIX: &str = "queue:";

/// What a callback names: the CI system, the job when the id alone is not unique
/// (a Jenkins build number), and the run's id as the CI system names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackRun<'a> {
    /// The CI system.
    pub provider: Provider,
    /// The job (decoded: `team-a/smoke tests`, not `smoke%20tests`).
    pub job: Option<&'a str>,
    /// Workflow run id, pipeline id or build number.
    pub id: &'a str,
}

impl CallbackRun<'_> {
    /// Whether `run` may be the run this callback is about: an unfinished run of the
    /// provider whose id is the id, or ends in `:id` or `/id` (`build:12`,
    /// `group/project/31`). A Jenkins run still known only by its queue item matches
    /// any build of its job, since the build number is not known yet.
    pub fn is(&self, run: &TestRun) -> bool {
        let Some(run_id) = run.run_id.as_deref() else {
            return false;
        };
        let same_run = run_id == self.id
            || run_id
                .strip_suffix(self.id)
                .is_some_and(|head| head.ends_with(':') || head.ends_with('/'));
        let queued = self.provider == Provider::Jenkins && run_id.starts_with(JENKINS_QUEUE_PREFIX);
        run.provider == self.provider
            && !is_final(run.state)
            && self.job.is_none_or(|j| j == run.job)
            && (same_run || queued)
    }

    /// Whether any of `runs` may be the run this callback is about.
    pub fn wakes(&self, runs: &[TestRun]) -> bool {
        runs.iter().any(|r| self.is(r))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_api::TestState;

    fn run(provider: Provider, job: &str, id: &str, state: TestState) -> TestRun {
        serde_json::from_value(serde_json::json!({
            "name": "t", "provider": provider, "job": job, "runId": id,
            "state": state, "required": true,
        }))
        .expect("a test run")
    }

    #[test]
    fn a_callback_names_the_unfinished_run_of_its_provider_and_job() {
        let cb = CallbackRun {
            provider: Provider::Jenkins,
            job: Some("team-a/smoke tests"),
            id: "12",
        };
        assert!(cb.is(&run(
            Provider::Jenkins,
            "team-a/smoke tests",
            "build:12",
            TestState::Running
        )));
        assert!(cb.is(&run(
            Provider::Jenkins,
            "team-a/smoke tests",
            "queue:7",
            TestState::Pending
        )));
        assert!(
            !cb.is(&run(
                Provider::Jenkins,
                "team-a/smoke tests",
                "build:112",
                TestState::Running
            )),
            "a suffix of the number is another build"
        );
        assert!(!cb.is(&run(
            Provider::Jenkins,
            "team-a/other",
            "build:12",
            TestState::Running
        )));
        assert!(!cb.is(&run(
            Provider::Jenkins,
            "team-a/smoke tests",
            "build:12",
            TestState::Passed
        )));
        assert!(!cb.is(&run(
            Provider::Gitlab,
            "team-a/smoke tests",
            "12",
            TestState::Running
        )));
    }

    #[test]
    fn ids_match_whole_or_after_a_separator() {
        let cb = CallbackRun {
            provider: Provider::Gitlab,
            job: None,
            id: "31",
        };
        assert!(cb.wakes(&[run(Provider::Gitlab, "g/p", "g/p/31", TestState::Running)]));
        assert!(cb.wakes(&[run(Provider::Gitlab, "g/p", "31", TestState::Running)]));
        assert!(!cb.wakes(&[run(Provider::Gitlab, "g/p", "g/p/131", TestState::Running)]));
        assert!(
            !cb.wakes(&[run(Provider::Gitlab, "g/p", "queue:1", TestState::Pending)]),
            "only Jenkins has queue items"
        );
    }
}

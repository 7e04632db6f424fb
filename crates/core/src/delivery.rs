//! Delivery figures teams report on, as the controller sees them happen: what
//! one saved status transition adds to lead time, promotions, gate failures and
//! the time PRs wait for approval or in a queue. Pure, so metrics and tests
//! derive the same numbers from the same fields the trackers show.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use promotion_api::{Phase, PullRequestTrackerStatus, TestRun, TestState};
use std::time::Duration;

/// One thing a status transition adds to the delivery figures.
#[derive(Clone, Debug, PartialEq)]
pub enum Observation {
    /// A PR was promoted into `environment`, `lead` after its tracker was created
    /// (the PR was opened, or first seen by the controller).
    Promoted {
        /// The target environment.
        environment: String,
        /// Time from the tracker's creation to the promotion.
        lead: Option<Duration>,
    },
    /// A gate test in `environment` reached a final state.
    GateRun {
        /// The environment whose gate ran the test.
        environment: String,
        /// The test's name in its policy.
        test: String,
        /// passed, failed, timed_out or cancelled.
        outcome: &'static str,
    },
    /// A PR stopped awaiting approval for `environment` (approved, or gone).
    ApprovalWait {
        /// The environment the approval is for.
        environment: String,
        /// From the last required pass to leaving AwaitingApproval.
        waited: Duration,
    },
    /// A PR left the queue for `environment`.
    QueueWait {
        /// The environment it queued for.
        environment: String,
        /// From joining the queue to leaving it.
        waited: Duration,
    },
}

/// The outcome label of a finished run; `None` while it runs.
pub fn outcome(state: TestState) -> Option<&'static str> {
    match state {
        TestState::Passed => Some("passed"),
        TestState::Failed => Some("failed"),
        TestState::TimedOut => Some("timed_out"),
        TestState::Cancelled => Some("cancelled"),
        TestState::Pending | TestState::Running => None,
    }
}

fn between(from: &Time, to: &Time) -> Option<Duration> {
    Duration::try_from(to.0.duration_since(from.0)).ok()
}

fn last_required_pass(runs: &[TestRun]) -> Option<&Time> {
    runs.iter()
        .filter(|r| r.required && r.state == TestState::Passed)
        .filter_map(|r| r.finished_at.as_ref())
        .max_by_key(|t| t.0)
}

/// What saving `new` over `old` adds to the figures, at `now`, for a tracker created at `created`.
pub fn observe(
    created: Option<&Time>,
    old: &PullRequestTrackerStatus,
    new: &PullRequestTrackerStatus,
    now: &Time,
) -> Vec<Observation> {
    let mut out = Vec::new();
    for record in new.promotions.iter().skip(old.promotions.len()) {
        if record.interrupted {
            continue;
        }
        out.push(Observation::Promoted {
            environment: record.target.clone(),
            lead: created.and_then(|c| between(c, &record.promoted_at)),
        });
    }
    let environment = new
        .current_environment
        .clone()
        .or_else(|| new.gate.as_ref().map(|g| g.source.clone()))
        .unwrap_or_default();
    let was_final = |run: &TestRun| {
        old.test_runs.iter().any(|o| {
            o.name == run.name
                && o.correlation_id == run.correlation_id
                && outcome(o.state).is_some()
        })
    };
    // A gate's runs may first be written final inside the promotion's record (their
    // progress is kept in memory until then), so the new records' runs count too.
    let recorded = new
        .promotions
        .iter()
        .skip(old.promotions.len())
        .flat_map(|r| r.test_runs.iter().map(move |run| (r.source.clone(), run)));
    let current = new.test_runs.iter().map(|run| (environment.clone(), run));
    for (environment, run) in current.chain(recorded) {
        if let Some(outcome) = outcome(run.state)
            && !was_final(run)
        {
            out.push(Observation::GateRun {
                environment,
                test: run.name.clone(),
                outcome,
            });
        }
    }
    if old.phase == Some(Phase::AwaitingApproval)
        && new.phase != Some(Phase::AwaitingApproval)
        && let Some(gate) = &old.gate
        && let Some(waited) = last_required_pass(&old.test_runs).and_then(|p| between(p, now))
    {
        out.push(Observation::ApprovalWait {
            environment: gate.target.clone(),
            waited,
        });
    }
    if let Some(q) = &old.queue
        && new.queue.as_ref().map(|n| &n.environment) != Some(&q.environment)
        && let Some(waited) = between(&q.since, now)
    {
        out.push(Observation::QueueWait {
            environment: q.environment.clone(),
            waited,
        });
    }
    out
}

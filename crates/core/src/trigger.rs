//! TriggerManager: starts a gate's tests in parallel, exactly once.
//!
//! The protocol: a test's intent (correlation id, an armed attempt) is saved in
//! status before its trigger is sent, and the trigger's answer (with its time) is
//! saved after. A run found in status without a run id was maybe-triggered by an
//! earlier reconcile (a crash, an ambiguous error): it is looked up with `find`
//! and adopted. Only when the CI system still does not know it a grace period
//! after the trigger was answered (or, when no answer was saved, after it was
//! armed) is it armed again, at most `max_rearms` times; then the run fails with
//! the reason instead of being started forever. A trigger the CI system refused
//! before starting anything (a rate limit) is sent again when it asks, without a
//! search and without counting as a re-arm.

use crate::ports::{ErrorKind, Found, PortError, RunHandle, TestRunner, TriggerRequest};
use crate::records::is_final;
use crate::variables::{VariableError, Variables};
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{
    ExternalTest, PromotionPolicySpec, TestRun, TestState, TriggerAttempt, TriggerOutcome,
};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

/// The parameter, input or variable that carries the correlation id to the CI system.
pub const CORRELATION_PARAMETER: &str = "PROMOTION_CORRELATION_ID";

/// How far before the first attempt was armed `find` searches: the CI system's clock
/// may be behind ours by this much and still date the run after the search's start.
pub const FIND_CLOCK_SKEW: Duration = Duration::from_secs(120);

/// The earliest time a run of `run` can carry in the CI system: its first armed
/// attempt (or its first trigger time, or its start), minus [`FIND_CLOCK_SKEW`].
pub fn find_since(run: &TestRun) -> SystemTime {
    let first = run
        .attempts
        .iter()
        .map(|a| &a.armed_at)
        .chain(run.first_triggered_at.iter())
        .chain(run.started_at.iter())
        .map(|t| t.0)
        .min()
        .unwrap_or_else(Timestamp::now);
    SystemTime::from(first)
        .checked_sub(FIND_CLOCK_SKEW)
        .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// The least time between two searches that ended "not sure".
const NOT_SURE_MIN_WAIT: Duration = Duration::from_millis(200);

/// How long to wait before sending again a trigger refused without a Retry-After.
const NOT_SENT_BACKOFF: Duration = Duration::from_secs(5);

/// A stable, short id for one test of one gate attempt of one tracker at one SHA.
pub fn correlation_id(
    tracker_uid: &str,
    environment: &str,
    head_sha: &str,
    attempt: i64,
    test: &str,
) -> String {
    let mut h = Sha256::new();
    for part in [
        tracker_uid,
        environment,
        head_sha,
        &attempt.to_string(),
        test,
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    let digest = h.finalize();
    let hex: String = digest.iter().take(10).map(|b| format!("{b:02x}")).collect();
    format!("prc-{hex}")
}

/// The message a planned run carries until it is armed.
pub const PLANNED_MESSAGE: &str = "planned; not sent yet";

/// The intents of a new gate: one Pending run per test, planned but not armed.
///
/// A planned run has no attempt: it is saved with the write that records Synced,
/// and armed (see [`arm`]) by the write just before its trigger. So a run that is
/// still planned after a restart provably never left, and is sent at once,
/// without a search or a grace period.
pub fn plan(policy: &PromotionPolicySpec, ids: impl Fn(&str) -> String) -> Vec<TestRun> {
    policy
        .external_tests
        .iter()
        .map(|t| TestRun {
            name: t.name.clone(),
            provider: t.provider,
            job: t.job.clone(),
            connection: t.connection.clone(),
            correlation_id: Some(ids(&t.name)),
            run_id: None,
            url: None,
            state: TestState::Pending,
            required: t.required,
            started_at: None,
            first_triggered_at: None,
            attempts: Vec::new(),
            not_before: None,
            finished_at: None,
            message: Some(PLANNED_MESSAGE.into()),
        })
        .collect()
}

/// Whether `run` is planned and was never armed: nothing of it can have been sent.
pub fn is_planned(run: &TestRun) -> bool {
    run.attempts.is_empty()
        && run.started_at.is_none()
        && run.run_id.is_none()
        && run.state == TestState::Pending
}

/// Arms every planned run now: the status saved next is the intent of its trigger.
pub fn arm(runs: &mut [TestRun]) {
    let now = Time(Timestamp::now());
    for run in runs.iter_mut().filter(|r| is_planned(r)) {
        run.started_at = Some(now.clone());
        run.first_triggered_at = Some(now.clone());
        run.attempts = vec![armed(now.clone())];
        run.message = None;
    }
}

fn armed(at: Time) -> TriggerAttempt {
    TriggerAttempt {
        armed_at: at,
        answered_at: None,
        outcome: None,
    }
}

/// The trigger request of `test`, variables substituted, correlation id added.
pub fn request_for(
    test: &ExternalTest,
    run: &TestRun,
    vars: &Variables,
) -> Result<TriggerRequest, VariableError> {
    let correlation_id = run.correlation_id.clone().unwrap_or_default();
    let mut parameters = BTreeMap::new();
    for (k, v) in &test.parameters {
        parameters.insert(k.clone(), vars.substitute(v)?);
    }
    parameters.insert(CORRELATION_PARAMETER.into(), correlation_id.clone());
    Ok(TriggerRequest {
        provider: test.provider,
        connection: test.connection.clone(),
        job: vars.substitute(&test.job)?,
        git_ref: test
            .git_ref
            .as_deref()
            .map(|r| vars.substitute(r))
            .transpose()?,
        parameters,
        correlation_id,
    })
}

/// What `adopt_or_rearm` decided.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Adoption {
    /// Runs that were adopted or changed (status must be saved).
    pub changed: bool,
    /// Names of runs armed again: save, then trigger them.
    pub armed: Vec<String>,
    /// The soonest a waiting run should be looked for again.
    pub wait: Option<Duration>,
}

impl Adoption {
    fn wait_at_most(&mut self, d: Duration) {
        self.wait = Some(self.wait.map_or(d, |w| w.min(d)));
    }
}

/// The last attempt of a run; a run saved before attempts were kept counts as one armed at startedAt.
fn last_attempt(run: &TestRun) -> Option<TriggerAttempt> {
    run.attempts
        .last()
        .cloned()
        .or_else(|| run.started_at.clone().map(armed))
}

/// How many times the run was sent again after an unanswered or ambiguous trigger.
pub fn rearms(run: &TestRun) -> usize {
    run.attempts.len().saturating_sub(1)
}

/// How long until `t`; zero when it is past or unknown.
pub fn until(t: Option<&Time>) -> Duration {
    t.map(|t| t.0.duration_since(Timestamp::now()))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO)
}

/// `now + d` as a status time.
pub fn after(d: Duration) -> Time {
    let now = Timestamp::now();
    Time(now.saturating_add(d).unwrap_or(now))
}

/// Starts, adopts and re-arms gate tests through a [`TestRunner`].
pub struct TriggerManager<'a> {
    runner: &'a dyn TestRunner,
    grace: Duration,
    max_rearms: usize,
}

impl<'a> TriggerManager<'a> {
    /// A manager that waits `grace` after a trigger's answer for a maybe-started run to
    /// show up before arming it again, once.
    pub fn new(runner: &'a dyn TestRunner, grace: Duration) -> Self {
        Self {
            runner,
            grace,
            max_rearms: 1,
        }
    }

    /// How many times a run the CI system does not know may be sent again (0: never).
    pub fn with_max_rearms(mut self, max_rearms: usize) -> Self {
        self.max_rearms = max_rearms;
        self
    }

    /// For runs left without a run id by an earlier reconcile: adopt what the CI system
    /// knows, re-arm what it still does not know after the grace period, send again
    /// what was never sent, and fail what stayed unknown after every re-arm.
    pub async fn adopt_or_rearm(
        &self,
        runs: &mut [TestRun],
        policy: &PromotionPolicySpec,
        vars: &Variables,
    ) -> Adoption {
        let mut out = Adoption::default();
        let mut orphans = Vec::new();
        for (i, run) in runs.iter_mut().enumerate() {
            if run.run_id.is_some() || is_final(run.state) {
                continue;
            }
            let wait = until(run.not_before.as_ref());
            if !wait.is_zero() {
                out.wait_at_most(wait);
                continue;
            }
            let last = last_attempt(run);
            if last.as_ref().and_then(|a| a.outcome) == Some(TriggerOutcome::NotSent) {
                // Nothing started: send again, in place of the refused attempt.
                let now = Time(Timestamp::now());
                if let Some(a) = run.attempts.last_mut() {
                    *a = armed(now.clone());
                }
                run.started_at = Some(now);
                run.not_before = None;
                out.armed.push(run.name.clone());
                out.changed = true;
                continue;
            }
            orphans.push(i);
        }
        let lookups = orphans.iter().map(|&i| {
            let run = &runs[i];
            let test = policy.external_tests.iter().find(|t| t.name == run.name);
            async move {
                let Some(test) = test else {
                    return (
                        i,
                        Err(PortError::permanent("the test is no longer in the policy")),
                    );
                };
                match request_for(test, run, vars) {
                    Ok(req) => (i, self.runner.find(&req, find_since(run)).await),
                    Err(e) => (i, Err(PortError::permanent(e.to_string()))),
                }
            }
        });
        for (i, found) in join_all(lookups).await {
            let run = &mut runs[i];
            match found {
                Ok(Found::Run(handle)) => {
                    adopt(run, handle);
                    out.changed = true;
                }
                Ok(Found::Absent) => self.absent(run, &mut out),
                Ok(Found::NotSure(why)) => self.not_sure(run, &why, &mut out),
                Err(e) => {
                    let msg = format!("looking for the run: {e}");
                    if let Some(d) = e.retry_after {
                        run.not_before = Some(after(d));
                        out.wait_at_most(d);
                        out.changed = true;
                    }
                    if run.message.as_deref() != Some(msg.as_str()) {
                        run.message = Some(msg);
                        out.changed = true;
                    }
                }
            }
        }
        out
    }

    /// Finds the runs of sent intents that have no run id, arming nothing: what a
    /// cancellation needs after a restart lost the ids kept in memory. A run not found
    /// stays as it is.
    pub async fn locate(
        &self,
        runs: &mut [TestRun],
        policy: &PromotionPolicySpec,
        vars: &Variables,
    ) {
        let lookups = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| r.run_id.is_none() && !is_final(r.state) && !is_planned(r))
            .filter(|(_, r)| {
                last_attempt(r).and_then(|a| a.outcome) != Some(TriggerOutcome::NotSent)
            })
            .filter_map(|(i, run)| {
                let test = policy.external_tests.iter().find(|t| t.name == run.name)?;
                let req = request_for(test, run, vars).ok()?;
                let since = find_since(run);
                Some(async move { (i, self.runner.find(&req, since).await) })
            });
        for (i, found) in join_all(lookups).await {
            if let Ok(Found::Run(handle)) = found {
                adopt(&mut runs[i], handle);
            }
        }
    }

    /// `find` could not see back to the intent's time: the run may exist, so it is never
    /// sent again on this answer. It is looked for again a grace period later (a search
    /// that reached its page cap is costly); the per-test timeout, counted from the first
    /// trigger, ends the wait.
    fn not_sure(&self, run: &mut TestRun, why: &str, out: &mut Adoption) {
        let again = self.grace.max(NOT_SURE_MIN_WAIT);
        run.not_before = Some(after(again));
        out.wait_at_most(again);
        run.message = Some(format!(
            "not sure whether the CI system started the run, not triggering again: {why}"
        ));
        out.changed = true;
    }

    /// The CI system does not know the run: wait out the grace from the trigger's
    /// answer, then send it again while re-arms are left, else fail it.
    fn absent(&self, run: &mut TestRun, out: &mut Adoption) {
        let Some(last) = last_attempt(run) else {
            // Never armed (cannot happen with `plan`): arm it now.
            run.attempts.push(armed(Time(Timestamp::now())));
            out.armed.push(run.name.clone());
            out.changed = true;
            return;
        };
        let since = last.answered_at.as_ref().unwrap_or(&last.armed_at);
        let age = age(Some(since));
        if age < self.grace {
            out.wait_at_most(self.grace - age);
            return;
        }
        let used = rearms(run);
        if used >= self.max_rearms {
            let sent = used + 1;
            run.state = TestState::Failed;
            run.finished_at = Some(Time(Timestamp::now()));
            run.message = Some(format!(
                "triggered {sent} time{} but the CI system never showed a run with correlation id {}; \
                 check that the job passes {CORRELATION_PARAMETER} through (a workflow shows it in its run-name)",
                if sent == 1 { "" } else { "s" },
                run.correlation_id.as_deref().unwrap_or("(none)")
            ));
            out.changed = true;
            return;
        }
        let now = Time(Timestamp::now());
        if run.attempts.is_empty() {
            run.attempts.push(last);
        }
        run.attempts.push(armed(now.clone()));
        run.started_at = Some(now);
        run.message = Some(format!(
            "not found in the CI system {}s after the trigger; triggering again (re-arm {} of {})",
            age.as_secs(),
            used + 1,
            self.max_rearms
        ));
        out.armed.push(run.name.clone());
        out.changed = true;
    }

    /// Triggers the named runs in parallel. A run that started keeps its id; a
    /// refused trigger fails the run; one that was not sent is sent again when the
    /// CI system asks; an ambiguous one is left for `adopt_or_rearm`. Each answer is
    /// stamped on the run's last attempt, so the grace runs from the answer.
    pub async fn trigger(
        &self,
        runs: &mut [TestRun],
        names: &[String],
        policy: &PromotionPolicySpec,
        vars: &Variables,
    ) {
        let calls = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| names.contains(&r.name))
            .map(|(i, run)| {
                let test = policy.external_tests.iter().find(|t| t.name == run.name);
                async move {
                    let Some(test) = test else {
                        return (
                            i,
                            Err(PortError::permanent("the test is no longer in the policy")),
                        );
                    };
                    let req = match request_for(test, run, vars) {
                        Ok(r) => r,
                        Err(e) => return (i, Err(PortError::permanent(e.to_string()))),
                    };
                    (i, self.runner.trigger(&req).await)
                }
            });
        for (i, result) in join_all(calls).await {
            let run = &mut runs[i];
            let outcome = match result {
                Ok(handle) => {
                    adopt(run, handle);
                    TriggerOutcome::Started
                }
                Err(e) => match e.kind {
                    ErrorKind::Permanent => {
                        run.state = TestState::Failed;
                        run.message = Some(format!("could not start: {}", e.message));
                        run.finished_at = Some(Time(Timestamp::now()));
                        TriggerOutcome::Refused
                    }
                    ErrorKind::Transient => {
                        let wait = e.retry_after.unwrap_or(NOT_SENT_BACKOFF);
                        run.not_before = Some(after(wait));
                        run.message = Some(format!(
                            "not started, sending again in {}s: {}",
                            wait.as_secs(),
                            e.message
                        ));
                        TriggerOutcome::NotSent
                    }
                    ErrorKind::Ambiguous => {
                        run.message = Some(format!(
                            "trigger outcome unknown, will look for the run before retrying: {}",
                            e.message
                        ));
                        TriggerOutcome::Ambiguous
                    }
                },
            };
            let now = Time(Timestamp::now());
            if run.attempts.is_empty() {
                run.attempts.push(armed(now.clone()));
            }
            if let Some(a) = run.attempts.last_mut() {
                a.answered_at = Some(now);
                a.outcome = Some(outcome);
            }
        }
    }
}

fn adopt(run: &mut TestRun, handle: RunHandle) {
    run.run_id = Some(handle.run_id);
    if handle.url.is_some() {
        run.url = handle.url;
    }
    run.message = None;
    run.not_before = None;
}

/// How long ago `t` was; zero for the future or unknown.
pub fn age(t: Option<&Time>) -> Duration {
    t.map(|t| Timestamp::now().duration_since(t.0))
        .and_then(|d| Duration::try_from(d).ok())
        .unwrap_or(Duration::ZERO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correlation_ids_are_stable_and_distinct() {
        let a = correlation_id("uid", "dev", "abc", 1, "smoke");
        assert_eq!(a, correlation_id("uid", "dev", "abc", 1, "smoke"));
        assert!(a.starts_with("prc-") && a.len() == 24);
        assert_ne!(a, correlation_id("uid", "dev", "abc", 2, "smoke"));
        assert_ne!(a, correlation_id("uid", "dev", "abd", 1, "smoke"));
        assert_ne!(a, correlation_id("uid", "dev", "abc", 1, "e2e"));
    }
}

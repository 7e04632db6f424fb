//! TriggerManager: starts a gate's tests in parallel, exactly once.
//!
//! The protocol: a test's intent (correlation id, startedAt) is saved in status
//! before its trigger is sent. A run found in status without a run id was
//! maybe-triggered by an earlier reconcile (a crash, an ambiguous error): it is
//! looked up with `find` and adopted; only when the CI system still does not know
//! it after a grace period is it armed again (a new startedAt, saved first).

use crate::ports::{ErrorKind, RunHandle, TestRunner, TriggerRequest};
use crate::records::is_final;
use crate::variables::{VariableError, Variables};
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{ExternalTest, PromotionPolicySpec, TestRun, TestState};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::time::Duration;

/// The parameter, input or variable that carries the correlation id to the CI system.
pub const CORRELATION_PARAMETER: &str = "PROMOTION_CORRELATION_ID";

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

/// The intents of a new gate: one Pending run per test, armed now.
pub fn plan(policy: &PromotionPolicySpec, ids: impl Fn(&str) -> String) -> Vec<TestRun> {
    let now = Time(Timestamp::now());
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
            started_at: Some(now.clone()),
            finished_at: None,
            message: None,
        })
        .collect()
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

/// Starts, adopts and re-arms gate tests through a [`TestRunner`].
pub struct TriggerManager<'a> {
    runner: &'a dyn TestRunner,
    grace: Duration,
}

impl<'a> TriggerManager<'a> {
    /// A manager that waits `grace` for a maybe-triggered run to show up before arming it again.
    pub fn new(runner: &'a dyn TestRunner, grace: Duration) -> Self {
        Self { runner, grace }
    }

    /// For runs left without a run id by an earlier reconcile: adopt what the CI system
    /// knows, re-arm what it still does not know after the grace period.
    pub async fn adopt_or_rearm(
        &self,
        runs: &mut [TestRun],
        policy: &PromotionPolicySpec,
        vars: &Variables,
    ) -> Adoption {
        let mut out = Adoption::default();
        let orphans: Vec<usize> = (0..runs.len())
            .filter(|&i| runs[i].run_id.is_none() && !is_final(runs[i].state))
            .collect();
        let lookups = orphans.iter().map(|&i| {
            let run = &runs[i];
            let test = policy.external_tests.iter().find(|t| t.name == run.name);
            async move {
                let Some(test) = test else {
                    return (i, Err("the test is no longer in the policy".to_string()));
                };
                match request_for(test, run, vars) {
                    Ok(req) => (i, self.runner.find(&req).await.map_err(|e| e.to_string())),
                    Err(e) => (i, Err(e.to_string())),
                }
            }
        });
        for (i, found) in join_all(lookups).await {
            let run = &mut runs[i];
            match found {
                Ok(Some(handle)) => {
                    adopt(run, handle);
                    out.changed = true;
                }
                Ok(None) => {
                    let age = age(run.started_at.as_ref());
                    if age >= self.grace {
                        run.started_at = Some(Time(Timestamp::now()));
                        run.message = Some("not found in the CI system; triggering again".into());
                        out.armed.push(run.name.clone());
                        out.changed = true;
                    } else {
                        let left = self.grace - age;
                        out.wait = Some(out.wait.map_or(left, |w| w.min(left)));
                    }
                }
                Err(e) => {
                    let msg = format!("looking for the run: {e}");
                    if run.message.as_deref() != Some(msg.as_str()) {
                        run.message = Some(msg);
                        out.changed = true;
                    }
                }
            }
        }
        out
    }

    /// Triggers the named runs in parallel. A run that started keeps its id; a
    /// refused trigger fails the run; an ambiguous one is left for `adopt_or_rearm`.
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
                            Err((
                                ErrorKind::Permanent,
                                "the test is no longer in the policy".to_string(),
                            )),
                        );
                    };
                    let req = match request_for(test, run, vars) {
                        Ok(r) => r,
                        Err(e) => return (i, Err((ErrorKind::Permanent, e.to_string()))),
                    };
                    (
                        i,
                        self.runner
                            .trigger(&req)
                            .await
                            .map_err(|e| (e.kind, e.message)),
                    )
                }
            });
        for (i, result) in join_all(calls).await {
            let run = &mut runs[i];
            match result {
                Ok(handle) => adopt(run, handle),
                Err((ErrorKind::Permanent, msg)) => {
                    run.state = TestState::Failed;
                    run.message = Some(format!("could not start: {msg}"));
                    run.finished_at = Some(Time(Timestamp::now()));
                }
                Err((_, msg)) => {
                    run.message = Some(format!(
                        "trigger outcome unknown, will look for the run before retrying: {msg}"
                    ));
                }
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

//! TestMonitor: follows each run, applies timeouts, and aggregates the gate.

use crate::policy::parse_duration;
use crate::ports::{ErrorKind, RunRef, TestRunner};
use crate::records::{is_final, test_runs_to_status};
use crate::trigger::{after, age, until};
use futures::future::join_all;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{PromotionPolicySpec, TestRun, TestState};
use std::time::Duration;

/// How a run's message starts while its CI system cannot be asked about it.
pub const STATUS_UNAVAILABLE: &str = "status unavailable, retrying";

/// The gate's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Every test passed.
    AllPassed,
    /// Every required test passed; these optional ones did not.
    OptionalTestsFailed(Vec<String>),
    /// A required test failed or was cancelled; the reasons, one per test.
    AnyFailed(Vec<String>),
    /// A required test timed out; the reasons, one per test.
    AnyTimeout(Vec<String>),
    /// Some test is still pending or running.
    AnyRunning,
}

impl Verdict {
    /// Whether the gate lets the PR through.
    pub fn passed(&self) -> bool {
        matches!(self, Self::AllPassed | Self::OptionalTestsFailed(_))
    }
}

/// The address of a run in status.
pub fn run_ref(run: &TestRun) -> Option<RunRef> {
    Some(RunRef {
        provider: run.provider,
        connection: run.connection.clone(),
        job: run.job.clone(),
        run_id: run.run_id.clone()?,
        correlation_id: run.correlation_id.clone(),
    })
}

/// Polls and times out gate runs through a [`TestRunner`].
pub struct TestMonitor<'a> {
    runner: &'a dyn TestRunner,
}

impl<'a> TestMonitor<'a> {
    /// A monitor polling through `runner`.
    pub fn new(runner: &'a dyn TestRunner) -> Self {
        Self { runner }
    }

    /// Asks the CI system about every started, unfinished run (in parallel). Returns whether status changed.
    pub async fn poll(&self, runs: &mut [TestRun]) -> bool {
        let calls = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !is_final(r.state) && until(r.not_before.as_ref()).is_zero())
            .filter_map(|(i, r)| {
                let rr = run_ref(r)?;
                Some(async move { (i, self.runner.status(&rr).await) })
            });
        let mut changed = false;
        for (i, result) in join_all(calls).await {
            let run = &mut runs[i];
            match result {
                Ok(status) => {
                    changed |= run.not_before.take().is_some();
                    changed |= test_runs_to_status(run, &status);
                }
                Err(e) if e.kind == ErrorKind::Permanent => {
                    run.state = TestState::Failed;
                    run.message = Some(format!("cannot follow the run: {e}"));
                    run.finished_at = Some(Time(Timestamp::now()));
                    changed = true;
                }
                Err(e) => {
                    // Transient: keep the state, say why it is stale, retry at the next poll
                    // or when the CI system asked us to.
                    if let Some(d) = e.retry_after {
                        run.not_before = Some(after(d));
                        changed = true;
                    }
                    let msg = format!("{STATUS_UNAVAILABLE}: {e}");
                    if run.message.as_deref() != Some(msg.as_str()) {
                        run.message = Some(msg);
                        changed = true;
                    }
                }
            }
        }
        changed
    }

    /// Cancels every started, unfinished run; best effort. Returns the errors.
    pub async fn cancel_active(&self, runs: &mut [TestRun], why: &str) -> Vec<String> {
        let calls = runs
            .iter()
            .enumerate()
            .filter(|(_, r)| !is_final(r.state))
            .map(|(i, r)| {
                let rr = run_ref(r);
                async move {
                    match rr {
                        Some(rr) => (i, self.runner.cancel(&rr).await.map_err(|e| e.to_string())),
                        None => (i, Ok(())),
                    }
                }
            });
        let mut errors = Vec::new();
        for (i, result) in join_all(calls).await {
            let run = &mut runs[i];
            run.state = TestState::Cancelled;
            run.finished_at = Some(Time(Timestamp::now()));
            run.message = Some(why.to_string());
            if let Err(e) = result {
                errors.push(format!("{}: {e}", run.name));
            }
        }
        errors
    }
}

/// When to look at the gate's runs again: after `poll`, or later for runs the CI
/// system asked to leave alone longer (Retry-After), but never later than the
/// first run that may be polled.
pub fn next_check(runs: &[TestRun], poll: Duration) -> Duration {
    runs.iter()
        .filter(|r| !is_final(r.state))
        .map(|r| match until(r.not_before.as_ref()) {
            d if d.is_zero() => poll,
            d => d,
        })
        .min()
        .unwrap_or(poll)
}

/// Marks runs past their own timeout, or all unfinished runs past the gate's, TimedOut.
/// Returns whether anything changed.
pub fn apply_timeouts(
    runs: &mut [TestRun],
    policy: &PromotionPolicySpec,
    gate_started_at: Option<&Time>,
) -> bool {
    let gate = policy
        .timeout
        .as_deref()
        .and_then(|t| parse_duration(t).ok());
    let gate_expired = gate.is_some_and(|limit| age(gate_started_at) >= limit);
    let mut changed = false;
    for run in runs.iter_mut().filter(|r| !is_final(r.state)) {
        let limit = policy
            .external_tests
            .iter()
            .find(|t| t.name == run.name)
            .and_then(|t| t.timeout.as_deref())
            .and_then(|t| parse_duration(t).ok());
        let why = match limit {
            // From the first trigger: a re-arm must not buy a run more time.
            Some(l) if age(run.first_triggered_at.as_ref().or(run.started_at.as_ref())) >= l => {
                Some(format!(
                    "did not finish within its timeout of {}",
                    humantime::format_duration(l)
                ))
            }
            _ if gate_expired => gate.map(|g| {
                format!(
                    "the gate did not finish within {}",
                    humantime::format_duration(g)
                )
            }),
            _ => None,
        };
        if let Some(why) = why {
            run.state = TestState::TimedOut;
            run.message = Some(why);
            run.finished_at = Some(Time(Timestamp::now()));
            changed = true;
        }
    }
    changed
}

/// The verdict over all runs. A failed required test decides at once; optional
/// failures and timeouts are reported but never block.
pub fn aggregate(runs: &[TestRun]) -> Verdict {
    let reason = |r: &TestRun| {
        let mut s = format!("{} {}", r.name, format!("{:?}", r.state).to_lowercase());
        if let Some(m) = &r.message {
            s.push_str(&format!(": {m}"));
        }
        if let Some(u) = &r.url {
            s.push_str(&format!(" ({u})"));
        }
        s
    };
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| r.required && matches!(r.state, TestState::Failed | TestState::Cancelled))
        .map(reason)
        .collect();
    if !failed.is_empty() {
        return Verdict::AnyFailed(failed);
    }
    let timed_out: Vec<String> = runs
        .iter()
        .filter(|r| r.required && r.state == TestState::TimedOut)
        .map(reason)
        .collect();
    if !timed_out.is_empty() {
        return Verdict::AnyTimeout(timed_out);
    }
    if runs.iter().any(|r| !is_final(r.state)) {
        return Verdict::AnyRunning;
    }
    let optional: Vec<String> = runs
        .iter()
        .filter(|r| !r.required && r.state != TestState::Passed)
        .map(reason)
        .collect();
    if optional.is_empty() {
        Verdict::AllPassed
    } else {
        Verdict::OptionalTestsFailed(optional)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_api::Provider;

    fn run(name: &str, state: TestState, required: bool) -> TestRun {
        TestRun {
            name: name.into(),
            provider: Provider::Gitlab,
            job: "j".into(),
            connection: None,
            correlation_id: None,
            run_id: Some("1".into()),
            url: None,
            state,
            required,
            started_at: Some(Time(Timestamp::now())),
            first_triggered_at: None,
            attempts: vec![],
            not_before: None,
            finished_at: None,
            message: None,
        }
    }

    #[test]
    fn verdicts() {
        use TestState::*;
        assert_eq!(aggregate(&[]), Verdict::AllPassed);
        assert_eq!(
            aggregate(&[run("a", Passed, true), run("b", Passed, false)]),
            Verdict::AllPassed
        );
        assert!(
            matches!(aggregate(&[run("a", Passed, true), run("b", Failed, false)]), Verdict::OptionalTestsFailed(v) if v.len() == 1)
        );
        assert!(matches!(
            aggregate(&[run("a", Passed, true), run("b", TimedOut, false)]),
            Verdict::OptionalTestsFailed(_)
        ));
        assert_eq!(
            aggregate(&[run("a", Running, true), run("b", Passed, true)]),
            Verdict::AnyRunning
        );
        assert_eq!(
            aggregate(&[run("a", Pending, false), run("b", Passed, true)]),
            Verdict::AnyRunning
        );
        // A required failure decides even while others still run.
        assert!(
            matches!(aggregate(&[run("a", Failed, true), run("b", Running, true)]), Verdict::AnyFailed(v) if v[0].starts_with("a failed"))
        );
        assert!(matches!(
            aggregate(&[run("a", Cancelled, true)]),
            Verdict::AnyFailed(_)
        ));
        assert!(matches!(
            aggregate(&[run("a", TimedOut, true), run("b", Running, true)]),
            Verdict::AnyTimeout(_)
        ));
        assert!(Verdict::OptionalTestsFailed(vec![]).passed() && !Verdict::AnyRunning.passed());
    }

    fn policy(test_timeout: Option<&str>, gate: Option<&str>) -> PromotionPolicySpec {
        let mut v = serde_json::json!({
            "sourceEnvironment": "dev", "targetEnvironment": "prod",
            "externalTests": [{"name": "a", "provider": "gitlab", "job": "j"}],
            "promotion": {"application": {"name": "x"}}
        });
        if let Some(t) = test_timeout {
            v["externalTests"][0]["timeout"] = t.into();
        }
        if let Some(g) = gate {
            v["timeout"] = g.into();
        }
        serde_json::from_value(v).expect("policy")
    }

    #[test]
    fn timeouts_per_test_and_per_gate() {
        let long_ago = Time(Timestamp::now() - std::time::Duration::from_secs(120));
        let mut runs = vec![run("a", TestState::Running, true)];
        runs[0].started_at = Some(long_ago.clone());
        assert!(!apply_timeouts(&mut runs, &policy(Some("5m"), None), None));
        assert!(apply_timeouts(&mut runs, &policy(Some("1m"), None), None));
        assert_eq!(runs[0].state, TestState::TimedOut);
        assert!(
            runs[0]
                .message
                .as_deref()
                .unwrap_or_default()
                .contains("1m")
        );

        let mut runs = vec![
            run("a", TestState::Running, true),
            run("b", TestState::Passed, true),
        ];
        assert!(apply_timeouts(
            &mut runs,
            &policy(None, Some("1m")),
            Some(&long_ago)
        ));
        assert_eq!(runs[0].state, TestState::TimedOut);
        assert_eq!(
            runs[1].state,
            TestState::Passed,
            "finished runs keep their result"
        );
    }
}

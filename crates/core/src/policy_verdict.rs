//! The verdict on a policy itself, shown in its status so that a bad policy is
//! seen on the policy (`kubectl get pp`), not discovered by a tracker: Valid
//! (the policy can be used: its own rules, its connections, no cycle) and Ready
//! (Valid, and no other policy can claim the same tracker from the same source).

use crate::conditions::{self, types};
use crate::policy::PolicyError;
use crate::policy_cache::{CachedPolicy, PolicyCache};
use crate::ports::{ErrorKind, TestRunner, TriggerRequest};
use crate::trigger::CORRELATION_PARAMETER;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// What the controller concludes about one policy.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyVerdict {
    /// Whether the policy can be used, and why not.
    pub valid: Result<(), PolicyError>,
    /// Other policies that can claim one tracker together with it (sorted).
    pub rivals: Vec<String>,
}

impl PolicyVerdict {
    /// Judges `policy` against the other policies in `cache`.
    pub fn of(cache: &PolicyCache, policy: &CachedPolicy) -> Self {
        let mut rivals = cache.rivals(policy);
        rivals.sort();
        Self {
            valid: cache.judge(policy),
            rivals,
        }
    }

    /// `current` with Valid and Ready set to this verdict for `generation`.
    pub fn conditions(
        &self,
        policy: &CachedPolicy,
        current: &[Condition],
        generation: Option<i64>,
    ) -> Vec<Condition> {
        let mut conds = current.to_vec();
        let g = generation;
        match &self.valid {
            Ok(()) => conditions::set(
                &mut conds,
                types::VALID,
                true,
                "Valid",
                "the policy is valid",
                g,
            ),
            Err(e) => conditions::set(&mut conds, types::VALID, false, e.code, e.to_string(), g),
        }
        match (&self.valid, self.rivals.is_empty()) {
            (Err(_), _) => conditions::set(
                &mut conds,
                types::READY,
                false,
                "Invalid",
                "fix the policy: see the Valid condition",
                g,
            ),
            (Ok(()), false) => conditions::set(
                &mut conds,
                types::READY,
                false,
                "Conflict",
                format!(
                    "policies {} also promote from {:?} and can claim the same trackers; give them disjoint spec.selector",
                    self.rivals.join(", "),
                    policy.spec.source_environment
                ),
                g,
            ),
            (Ok(()), true) => conditions::set(
                &mut conds,
                types::READY,
                true,
                "Ready",
                "the policy gates its trackers",
                g,
            ),
        }
        conds
    }
}

/// "smoke, e2e, perf (optional)": every gate test of the policy on one line.
pub fn tests_summary(policy: &CachedPolicy) -> String {
    let names: Vec<String> = policy
        .spec
        .external_tests
        .iter()
        .map(|t| {
            if t.required {
                t.name.clone()
            } else {
                format!("{} (optional)", t.name)
            }
        })
        .collect();
    names.join(", ")
}

/// Whether the CI configuration lets `find` see the runs of a policy's tests: a run
/// whose correlation id does not show (a workflow's `run-name` without it, GitLab
/// inputs without it in the pipeline name) cannot be adopted after a crash.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FindCheck {
    /// Every test that could be checked shows the correlation id.
    Possible,
    /// Some tests cannot be found; one line each.
    Impossible(Vec<String>),
    /// Nothing proved impossible, but some tests could not be checked now; one line each.
    Unknown(Vec<String>),
}

impl FindCheck {
    /// Asks each test's CI system through `runner`. A test whose job or ref holds a
    /// variable is checked only once a tracker gives it values, so it is skipped here.
    pub async fn of(runner: &dyn TestRunner, policy: &CachedPolicy) -> Self {
        let mut impossible = Vec::new();
        let mut unknown = Vec::new();
        for test in &policy.spec.external_tests {
            let variable = |s: &str| s.contains("${");
            if variable(&test.job) || test.git_ref.as_deref().is_some_and(variable) {
                continue;
            }
            let req = TriggerRequest {
                provider: test.provider,
                connection: test.connection.clone(),
                job: test.job.clone(),
                git_ref: test.git_ref.clone(),
                parameters: test.parameters.clone(),
                correlation_id: String::new(),
            };
            match runner.check_findable(&req).await {
                Ok(()) => {}
                Err(e) if e.kind == ErrorKind::Permanent => {
                    impossible.push(format!("test {}: {}", test.name, e.message))
                }
                Err(e) => unknown.push(format!("test {}: {}", test.name, e.message)),
            }
        }
        match (impossible.is_empty(), unknown.is_empty()) {
            (false, _) => Self::Impossible(impossible),
            (true, false) => Self::Unknown(unknown),
            (true, true) => Self::Possible,
        }
    }

    /// `conds` with the FindPossible condition set to this check for `generation`.
    pub fn apply(&self, conds: &mut Vec<Condition>, generation: Option<i64>) {
        match self {
            Self::Possible => conditions::set(
                conds,
                types::FIND_POSSIBLE,
                true,
                "CorrelationVisible",
                format!("every checked test's runs show {CORRELATION_PARAMETER}"),
                generation,
            ),
            Self::Impossible(lines) => conditions::set(
                conds,
                types::FIND_POSSIBLE,
                false,
                "CorrelationNotVisible",
                format!(
                    "a run these tests start cannot be found again after a restart, so a crash \
                     between trigger and save fails the test instead of adopting it: {}",
                    lines.join("; ")
                ),
                generation,
            ),
            Self::Unknown(lines) => conditions::set_unknown(
                conds,
                types::FIND_POSSIBLE,
                "CheckFailed",
                format!("could not check the CI configuration: {}", lines.join("; ")),
                generation,
            ),
        }
    }
}

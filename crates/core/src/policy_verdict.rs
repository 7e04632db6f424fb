//! The verdict on a policy itself, shown in its status so that a bad policy is
//! seen on the policy (`kubectl get pp`), not discovered by a tracker: Valid
//! (the policy can be used: its own rules, its connections, no cycle) and Ready
//! (Valid, and no other policy can claim the same tracker from the same source).

use crate::conditions::{self, types};
use crate::policy::PolicyError;
use crate::policy_cache::{CachedPolicy, PolicyCache};
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

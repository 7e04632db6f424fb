//! The policy of a running gate, fixed at its start: everything the gate does
//! (triggers, `find`, polling, timeouts, the promotion) reads this snapshot, so an
//! edit of the policy can restart a gate but never change one half-way.

use crate::policy_cache::CachedPolicy;
use crate::variables::{VariableError, Variables};
use promotion_api::{
    ApplicationRef, ExternalTest, GateSnapshot, PromotionPolicySpec, PromotionTarget,
    PullRequestTracker,
};

/// The snapshot of `policy` for `tracker`'s hop, every variable substituted.
pub fn take(
    tracker: &PullRequestTracker,
    policy: &CachedPolicy,
) -> Result<GateSnapshot, VariableError> {
    let spec = &policy.spec;
    let vars = Variables::for_hop(tracker, &spec.source_environment, &spec.target_environment);
    let tests = spec
        .external_tests
        .iter()
        .map(|t| {
            Ok(ExternalTest {
                job: vars.substitute(&t.job)?,
                git_ref: t
                    .git_ref
                    .as_deref()
                    .map(|r| vars.substitute(r))
                    .transpose()?,
                parameters: t
                    .parameters
                    .iter()
                    .map(|(k, v)| Ok((k.clone(), vars.substitute(v)?)))
                    .collect::<Result<_, VariableError>>()?,
                ..t.clone()
            })
        })
        .collect::<Result<Vec<_>, VariableError>>()?;
    let app = &spec.promotion.application;
    Ok(GateSnapshot {
        policy: policy.name.clone(),
        generation: policy.generation,
        source: spec.source_environment.clone(),
        target: spec.target_environment.clone(),
        tests,
        timeout: spec.timeout.clone(),
        auto_promote: spec.auto_promote,
        application: ApplicationRef {
            cluster: vars.substitute(&app.cluster)?,
            namespace: vars.substitute(&app.namespace)?,
            name: vars.substitute(&app.name)?,
        },
        github_label: spec
            .promotion
            .github_label
            .as_deref()
            .map(|l| vars.substitute(l))
            .transpose()?,
        deploy_timeout: spec.deploy_timeout.clone(),
    })
}

/// Whether `snapshot` was taken from `policy` as it is now.
pub fn is_current(snapshot: &GateSnapshot, policy: &CachedPolicy) -> bool {
    snapshot.policy == policy.name && snapshot.generation == policy.generation
}

/// The snapshot as a policy spec, for the trigger and monitor, whose values are
/// already substituted: they are escaped so that substituting again changes nothing.
pub fn as_spec(snapshot: &GateSnapshot) -> PromotionPolicySpec {
    let tests = snapshot
        .tests
        .iter()
        .map(|t| ExternalTest {
            job: escape(&t.job),
            git_ref: t.git_ref.as_deref().map(escape),
            parameters: t
                .parameters
                .iter()
                .map(|(k, v)| (k.clone(), escape(v)))
                .collect(),
            ..t.clone()
        })
        .collect();
    PromotionPolicySpec {
        source_environment: snapshot.source.clone(),
        target_environment: snapshot.target.clone(),
        external_tests: tests,
        timeout: snapshot.timeout.clone(),
        auto_promote: snapshot.auto_promote,
        allow_ungated: true,
        deploy_timeout: snapshot.deploy_timeout.clone(),
        promotion: PromotionTarget {
            application: snapshot.application.clone(),
            github_label: snapshot.github_label.clone(),
        },
        selector: None,
    }
}

fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('$', "\\$")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substituted_values_survive_a_second_substitution() {
        let vars = Variables::placeholders();
        for s in ["plain", "a$b", "c\\d", "${HEAD_SHA}"] {
            assert_eq!(vars.substitute(&escape(s)).expect(s), s);
        }
    }
}

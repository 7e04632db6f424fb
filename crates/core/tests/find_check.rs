//! The FindPossible condition of a policy: a CI configuration that hides the
//! correlation id (issue #11) is shown on the policy, not discovered after a crash.

use promotion_core::fakes::{Crashes, FakeCi};
use promotion_core::policy_cache::CachedPolicy;
use promotion_core::policy_verdict::FindCheck;
use std::sync::Arc;

fn policy() -> CachedPolicy {
    let spec = serde_json::from_value(serde_json::json!({
        "sourceEnvironment": "dev", "targetEnvironment": "staging",
        "externalTests": [
            {"name": "contract", "provider": "github-actions", "job": "contract.yml", "ref": "main"},
            {"name": "smoke", "provider": "jenkins", "job": "smoke"},
            {"name": "per-repo", "provider": "jenkins", "job": "${REPO_NAME}-gate"}
        ],
        "promotion": {"application": {"name": "shop-staging"}}
    }))
    .expect("policy");
    CachedPolicy::new("team", "dev-to-staging", Some(3), spec)
}

#[tokio::test]
async fn a_workflow_that_hides_the_correlation_id_sets_find_possible_false() {
    let ci = FakeCi::new(Arc::new(Crashes::default()));
    ci.faults.lock().expect("lock").unfindable.insert(
        "contract.yml".into(),
        "workflow contract.yml has no run-name".into(),
    );
    let p = policy();
    let check = FindCheck::of(&ci, &p).await;
    assert_eq!(
        check,
        FindCheck::Impossible(vec![
            "test contract: workflow contract.yml has no run-name".into()
        ])
    );
    // A job that depends on a tracker's variables is checked only with its values.
    assert_eq!(ci.calls().check, 2);
    let mut conds = Vec::new();
    check.apply(&mut conds, Some(3));
    let c = &conds[0];
    assert_eq!(
        (c.type_.as_str(), c.status.as_str(), c.reason.as_str()),
        ("FindPossible", "False", "CorrelationNotVisible")
    );
    assert!(c.message.contains("test contract"), "{}", c.message);
    assert_eq!(c.observed_generation, Some(3));

    // Fixed in the workflow: the next check says so.
    ci.faults.lock().expect("lock").unfindable.clear();
    let check = FindCheck::of(&ci, &p).await;
    assert_eq!(check, FindCheck::Possible);
    check.apply(&mut conds, Some(3));
    assert_eq!(conds.len(), 1);
    assert_eq!(
        (conds[0].status.as_str(), conds[0].reason.as_str()),
        ("True", "CorrelationVisible")
    );
}

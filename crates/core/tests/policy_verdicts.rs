//! Verdicts on the policies themselves (issue #10, cases 10-12): a policy that
//! cannot form a sane chain is reported on the policy, and never used.

use promotion_core::policy_cache::{CachedPolicy, LookupError, PolicyCache};
use promotion_core::policy_verdict::PolicyVerdict;
use std::collections::BTreeMap;

fn policy(name: &str, spec: serde_json::Value) -> CachedPolicy {
    CachedPolicy::new(
        "team",
        name,
        Some(1),
        serde_json::from_value(spec).expect("policy"),
    )
}

fn hop(source: &str, target: &str) -> serde_json::Value {
    serde_json::json!({
        "sourceEnvironment": source, "targetEnvironment": target,
        "externalTests": [{"name": "smoke", "provider": "jenkins", "job": "smoke"}],
        "promotion": {"application": {"name": format!("shop-{target}")}}
    })
}

fn ready(cache: &PolicyCache, p: &CachedPolicy) -> (String, String) {
    let conds = PolicyVerdict::of(cache, p).conditions(p, &[], Some(1));
    let c = conds
        .iter()
        .find(|c| c.type_ == "Ready")
        .expect("Ready condition");
    (c.status.clone(), c.reason.clone())
}

#[test]
fn a_cycle_is_invalid_on_both_policies_and_never_used() {
    let cache = PolicyCache::new();
    let forth = policy("dev-to-staging", hop("dev", "staging"));
    let back = policy("staging-to-dev", hop("staging", "dev"));
    cache.upsert(forth.clone());
    cache.upsert(back.clone());
    for p in [&forth, &back] {
        let err = cache.judge(p).expect_err("a cycle");
        assert!(err.reason.contains("loops"), "{err}");
    }
    assert!(matches!(
        cache.lookup("team", "dev", &BTreeMap::new()),
        Err(LookupError::Invalid { .. })
    ));
    assert_eq!(
        ready(&cache, &forth),
        ("False".to_string(), "Invalid".to_string())
    );
}

#[test]
fn a_chain_without_a_cycle_is_valid() {
    let cache = PolicyCache::new();
    let a = policy("a", hop("dev", "staging"));
    cache.upsert(a.clone());
    cache.upsert(policy("b", hop("staging", "prod")));
    assert_eq!(cache.judge(&a), Ok(()));
}

#[test]
fn a_policy_without_a_required_test_is_invalid_unless_it_says_so() {
    let cache = PolicyCache::new();
    let mut spec = hop("dev", "staging");
    spec["externalTests"][0]["required"] = false.into();
    let optional_only = policy("p", spec.clone());
    let err = cache.judge(&optional_only).expect_err("ungated");
    assert_eq!(err.field, "spec.externalTests");
    spec["allowUngated"] = true.into();
    assert_eq!(cache.judge(&policy("p", spec)), Ok(()));
    let mut none = hop("dev", "staging");
    none["externalTests"] = serde_json::json!([]);
    assert!(cache.judge(&policy("q", none)).is_err());
}

#[test]
fn a_test_naming_an_unknown_connection_is_invalid() {
    let cache = PolicyCache::with_connections(["jenkins-main".to_string()]);
    let mut spec = hop("dev", "staging");
    spec["externalTests"][0]["connection"] = "jenkins-old".into();
    let p = policy("p", spec.clone());
    cache.upsert(p.clone());
    let err = cache.judge(&p).expect_err("unknown connection");
    assert_eq!(err.field, "spec.externalTests[0].connection");
    assert!(err.reason.contains("jenkins-main"), "{err}");
    spec["externalTests"][0]["connection"] = "jenkins-main".into();
    assert_eq!(cache.judge(&policy("p", spec)), Ok(()));
}

#[test]
fn overlapping_unequal_selectors_conflict_on_both_policies() {
    let cache = PolicyCache::new();
    let mut web = hop("dev", "staging");
    web["selector"] = serde_json::json!({"matchLabels": {"tier": "web"}});
    let mut team = hop("dev", "qa");
    team["selector"] = serde_json::json!({"matchLabels": {"team": "a"}});
    let (web, team) = (policy("web", web), policy("team-a", team));
    cache.upsert(web.clone());
    cache.upsert(team.clone());
    for p in [&web, &team] {
        assert_eq!(
            ready(&cache, p),
            ("False".to_string(), "Conflict".to_string()),
            "{}",
            p.name
        );
    }
}

#[test]
fn disjoint_selectors_do_not_conflict() {
    let cache = PolicyCache::new();
    let mut web = hop("dev", "staging");
    web["selector"] = serde_json::json!({"matchLabels": {"tier": "web"}});
    let mut api = hop("dev", "qa");
    api["selector"] = serde_json::json!({"matchLabels": {"tier": "api"}});
    let web = policy("web", web);
    cache.upsert(web.clone());
    cache.upsert(policy("api", api));
    assert_eq!(
        ready(&cache, &web),
        ("True".to_string(), "Ready".to_string())
    );
}

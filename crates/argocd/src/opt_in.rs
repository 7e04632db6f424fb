//! The Application's consent to be moved: a policy may promote only an app whose
//! owners named that policy's namespace and target environment on it, so a
//! policy in one namespace cannot move another team's application.

use std::collections::BTreeMap;

/// The annotation an Application carries to opt in: a comma-separated list of
/// `<policy-namespace>/<target-environment>` entries, e.g.
/// `promotion.io/allow-promotion-from: "team-a/staging, team-a-ci/staging"`.
pub const ALLOW_PROMOTION_FROM: &str = "promotion.io/allow-promotion-from";

/// Whether `annotations` allow a policy in `policy_namespace` promoting to `environment`.
pub fn allows(
    annotations: Option<&BTreeMap<String, String>>,
    policy_namespace: &str,
    environment: &str,
) -> bool {
    let Some(list) = annotations.and_then(|a| a.get(ALLOW_PROMOTION_FROM)) else {
        return false;
    };
    list.split(',').map(str::trim).any(|entry| {
        entry
            .split_once('/')
            .map(|(ns, env)| (ns.trim(), env.trim()))
            .is_some_and(|(ns, env)| {
                !ns.is_empty() && !env.is_empty() && ns == policy_namespace && env == environment
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> BTreeMap<String, String> {
        BTreeMap::from([(ALLOW_PROMOTION_FROM.to_string(), value.to_string())])
    }

    #[test]
    fn matches_an_entry_of_the_list() {
        let a = with("team-b/prod, team-a/staging");
        assert!(allows(Some(&a), "team-a", "staging"));
        assert!(allows(Some(&a), "team-b", "prod"));
    }

    #[test]
    fn refuses_other_namespaces_environments_and_garbage() {
        let a = with("team-a/staging,,nonsense, /staging, team-a/");
        assert!(!allows(Some(&a), "team-b", "staging"));
        assert!(!allows(Some(&a), "team-a", "prod"));
        assert!(!allows(Some(&a), "", "staging"));
        assert!(!allows(None, "team-a", "staging"));
        assert!(!allows(Some(&BTreeMap::new()), "team-a", "staging"));
    }
}

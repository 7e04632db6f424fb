//! Kubernetes label selector matching (matchLabels and matchExpressions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::{BTreeMap, BTreeSet};

/// Whether `labels` satisfy `selector`; an absent selector matches everything.
///
/// An unknown operator matches nothing, so a typo never widens a policy's reach.
pub fn matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else {
        return true;
    };
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// Whether some set of labels satisfies both selectors, so that two policies with
/// them can claim one tracker. Exact for the operators `matches` knows.
pub fn overlap(a: Option<&LabelSelector>, b: Option<&LabelSelector>) -> bool {
    #[derive(Default)]
    struct Key {
        present: bool,
        absent: bool,
        allowed: Option<BTreeSet<String>>,
        excluded: BTreeSet<String>,
    }
    let mut keys: BTreeMap<&str, Key> = BTreeMap::new();
    for selector in [a, b].into_iter().flatten() {
        for (k, v) in selector.match_labels.iter().flatten() {
            let key = keys.entry(k).or_default();
            key.present = true;
            key.allowed = Some(restrict(key.allowed.take(), std::slice::from_ref(v)));
        }
        for e in selector.match_expressions.iter().flatten() {
            let values = e.values.as_deref().unwrap_or_default();
            let key = keys.entry(&e.key).or_default();
            match e.operator.as_str() {
                "In" => {
                    key.present = true;
                    key.allowed = Some(restrict(key.allowed.take(), values));
                }
                "NotIn" => key.excluded.extend(values.iter().cloned()),
                "Exists" => key.present = true,
                "DoesNotExist" => key.absent = true,
                // Matches nothing, so it claims nothing either.
                _ => return false,
            }
        }
    }
    keys.values().all(|k| {
        if k.present && k.absent {
            return false;
        }
        match &k.allowed {
            Some(allowed) => allowed.iter().any(|v| !k.excluded.contains(v)),
            None => true,
        }
    })
}

fn restrict(allowed: Option<BTreeSet<String>>, values: &[String]) -> BTreeSet<String> {
    let values: BTreeSet<String> = values.iter().cloned().collect();
    match allowed {
        Some(a) => a.intersection(&values).cloned().collect(),
        None => values,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sel(v: serde_json::Value) -> LabelSelector {
        serde_json::from_value(v).expect("selector")
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn absent_and_empty_selectors_match_everything() {
        assert!(matches(None, &labels(&[])));
        assert!(matches(Some(&sel(json!({}))), &labels(&[("a", "b")])));
    }

    #[test]
    fn match_labels_and_expressions() {
        let s = sel(json!({
            "matchLabels": {"team": "a"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["web", "api"]},
                {"key": "skip", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["eu"]},
                {"key": "team", "operator": "Exists"}
            ]
        }));
        assert!(matches(
            Some(&s),
            &labels(&[("team", "a"), ("tier", "web")])
        ));
        assert!(!matches(
            Some(&s),
            &labels(&[("team", "b"), ("tier", "web")])
        ));
        assert!(!matches(
            Some(&s),
            &labels(&[("team", "a"), ("tier", "db")])
        ));
        assert!(!matches(
            Some(&s),
            &labels(&[("team", "a"), ("tier", "web"), ("skip", "1")])
        ));
        assert!(!matches(
            Some(&s),
            &labels(&[("team", "a"), ("tier", "web"), ("zone", "eu")])
        ));
    }

    #[test]
    fn an_unknown_operator_matches_nothing() {
        let s =
            sel(json!({"matchExpressions": [{"key": "a", "operator": "Like", "values": ["x"]}]}));
        assert!(!matches(Some(&s), &labels(&[("a", "x")])));
    }

    #[test]
    fn overlapping_and_disjoint_selectors() {
        let web = sel(json!({"matchLabels": {"tier": "web"}}));
        let api = sel(json!({"matchLabels": {"tier": "api"}}));
        let team = sel(json!({"matchLabels": {"team": "a"}}));
        let not_web = sel(
            json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["web"]}]}),
        );
        let no_tier =
            sel(json!({"matchExpressions": [{"key": "tier", "operator": "DoesNotExist"}]}));
        let web_or_api = sel(
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["web", "api"]}]}),
        );
        assert!(!overlap(Some(&web), Some(&api)));
        assert!(
            overlap(Some(&web), Some(&team)),
            "tier=web,team=a matches both"
        );
        assert!(overlap(None, Some(&web)));
        assert!(!overlap(Some(&web), Some(&not_web)));
        assert!(!overlap(Some(&web), Some(&no_tier)));
        assert!(overlap(Some(&api), Some(&not_web)));
        assert!(overlap(Some(&web_or_api), Some(&api)));
        assert!(!overlap(Some(&web_or_api), Some(&no_tier)));
    }
}

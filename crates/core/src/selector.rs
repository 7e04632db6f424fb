//! Kubernetes label selector matching (matchLabels and matchExpressions).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use std::collections::BTreeMap;

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
}

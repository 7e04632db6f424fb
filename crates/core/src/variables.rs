//! The variables a policy may use in job parameters, application names and labels.

use promotion_api::PullRequestTracker;
use std::collections::BTreeMap;

/// Every variable a policy may use, e.g. `${PR_NUMBER}`.
pub const KNOWN: &[&str] = &[
    "PR_NUMBER",
    "HEAD_SHA",
    "HEAD_SHA_SHORT",
    "REPO_OWNER",
    "REPO_NAME",
    "REPOSITORY",
    "SOURCE_ENVIRONMENT",
    "TARGET_ENVIRONMENT",
    "TRACKER_NAME",
    "TRACKER_NAMESPACE",
];

/// A template that uses a variable nobody defines, or is malformed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct VariableError(pub String);

/// The values of [`KNOWN`] for one hop of one tracker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Variables(BTreeMap<String, String>);

impl Variables {
    /// The variables of `tracker` for the hop `source` -> `target`.
    pub fn for_hop(tracker: &PullRequestTracker, source: &str, target: &str) -> Self {
        let spec = &tracker.spec;
        let sha = &spec.head_sha;
        let short: String = sha.chars().take(7).collect();
        let pairs = [
            ("PR_NUMBER", spec.number.to_string()),
            ("HEAD_SHA", sha.clone()),
            ("HEAD_SHA_SHORT", short),
            ("REPO_OWNER", spec.repository.owner.clone()),
            ("REPO_NAME", spec.repository.name.clone()),
            (
                "REPOSITORY",
                format!("{}/{}", spec.repository.owner, spec.repository.name),
            ),
            ("SOURCE_ENVIRONMENT", source.to_string()),
            ("TARGET_ENVIRONMENT", target.to_string()),
            (
                "TRACKER_NAME",
                tracker.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "TRACKER_NAMESPACE",
                tracker.metadata.namespace.clone().unwrap_or_default(),
            ),
        ];
        Self(pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    /// Placeholder values for every known variable, to check templates without a tracker.
    pub fn placeholders() -> Self {
        Self(
            KNOWN
                .iter()
                .map(|k| (k.to_string(), format!("<{k}>")))
                .collect(),
        )
    }

    /// Expands `${NAME}` (and `$NAME`) in `template`; an unknown variable is an error, never "".
    pub fn substitute(&self, template: &str) -> Result<String, VariableError> {
        subst::substitute(template, &self.0).map_err(|e| {
            VariableError(format!(
                "{e} in {template:?} (known variables: {})",
                KNOWN.join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> PullRequestTracker {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
            "metadata": {"name": "shop-42", "namespace": "team-a"},
            "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": 42,
                     "headSha": "3f2c9a1b7e4d5c6f8a9b", "environment": "dev",
                     "application": {"name": "shop-dev"}}
        }))
        .expect("valid tracker")
    }

    #[test]
    fn substitutes_every_known_variable() {
        let vars = Variables::for_hop(&tracker(), "dev", "staging");
        let out = vars
            .substitute("${REPOSITORY}#${PR_NUMBER}@${HEAD_SHA_SHORT} ${SOURCE_ENVIRONMENT}->${TARGET_ENVIRONMENT} ${TRACKER_NAMESPACE}/${TRACKER_NAME} $REPO_OWNER ${REPO_NAME} ${HEAD_SHA}")
            .expect("all known");
        assert_eq!(
            out,
            "acme/shop#42@3f2c9a1 dev->staging team-a/shop-42 acme shop 3f2c9a1b7e4d5c6f8a9b"
        );
        for name in KNOWN {
            assert!(vars.substitute(&format!("${{{name}}}")).is_ok(), "{name}");
        }
    }

    #[test]
    fn an_unknown_variable_is_an_error_not_an_empty_string() {
        let vars = Variables::for_hop(&tracker(), "dev", "staging");
        let err = vars.substitute("pr-${PR_NUMBR}").expect_err("unknown");
        assert!(err.0.contains("PR_NUMBR"), "{err}");
        assert!(err.0.contains("known variables"), "{err}");
    }

    #[test]
    fn plain_text_is_left_alone() {
        let vars = Variables::placeholders();
        assert_eq!(vars.substitute("main").expect("plain"), "main");
    }
}

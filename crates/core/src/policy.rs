//! What makes a policy usable: `validate_policy` and the duration grammar.

use crate::variables::Variables;
use promotion_api::{DURATION_PATTERN, PromotionPolicySpec};
use std::collections::BTreeSet;
use std::time::Duration;

/// Why a policy cannot be used: which field and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct PolicyError {
    /// The path of the offending field, e.g. `spec.externalTests[1].parameters.SHA`.
    pub field: String,
    /// Why it is wrong.
    pub reason: String,
    /// The condition reason: `Invalid`, or why the namespace may not use it
    /// (`ConnectionNotAllowed`, `JobNotAllowed`).
    pub code: &'static str,
}

impl PolicyError {
    /// An error at `field`.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
            code: "Invalid",
        }
    }

    /// A use the policy's namespace is not granted, at `field`.
    pub fn denied(field: impl Into<String>, denied: crate::access::Denied) -> Self {
        Self {
            field: field.into(),
            reason: denied.message,
            code: denied.reason,
        }
    }
}

/// Parses a Go-style duration as the CRD accepts it ("90s", "1h30m", "500ms").
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let grammar_ok = {
        // Mirrors DURATION_PATTERN without a regex engine: digits followed by a unit, repeated.
        let mut rest = s;
        let mut ok = !rest.is_empty();
        while ok && !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            rest = &rest[digits..];
            let unit = ["ms", "s", "m", "h"]
                .into_iter()
                .find(|u| rest.starts_with(u));
            match (digits, unit) {
                (1.., Some(u)) => rest = &rest[u.len()..],
                _ => ok = false,
            }
        }
        ok
    };
    if !grammar_ok {
        return Err(format!("{s:?} is not a duration ({DURATION_PATTERN})"));
    }
    let d = humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e}"))?;
    if d.is_zero() {
        return Err(format!("{s:?} must be positive"));
    }
    Ok(d)
}

/// Checks everything the API server's schema cannot: variables, and the rules
/// again, so a policy applied before a CRD upgrade is still judged.
pub fn validate_policy(spec: &PromotionPolicySpec) -> Result<(), PolicyError> {
    let source = spec.source_environment.trim();
    let target = spec.target_environment.trim();
    if source.is_empty() {
        return Err(PolicyError::new(
            "spec.sourceEnvironment",
            "must not be empty",
        ));
    }
    if target.is_empty() {
        return Err(PolicyError::new(
            "spec.targetEnvironment",
            "must not be empty",
        ));
    }
    if source == target {
        return Err(PolicyError::new(
            "spec.targetEnvironment",
            format!("must differ from sourceEnvironment ({source:?})"),
        ));
    }
    if let Some(t) = &spec.timeout {
        parse_duration(t).map_err(|e| PolicyError::new("spec.timeout", e))?;
    }
    if let Some(t) = &spec.deploy_timeout {
        parse_duration(t).map_err(|e| PolicyError::new("spec.deployTimeout", e))?;
    }
    if !spec.allow_ungated && !spec.external_tests.iter().any(|t| t.required) {
        return Err(PolicyError::new(
            "spec.externalTests",
            "no required test: every PR would be promoted with no gate; add a required test, or set allowUngated: true to mean it",
        ));
    }
    let vars = Variables::placeholders();
    let check = |field: String, template: &str| -> Result<(), PolicyError> {
        vars.substitute(template)
            .map(drop)
            .map_err(|e| PolicyError::new(field, e.0))
    };
    let mut names = BTreeSet::new();
    for (i, test) in spec.external_tests.iter().enumerate() {
        let at = format!("spec.externalTests[{i}]");
        if test.name.trim().is_empty() {
            return Err(PolicyError::new(format!("{at}.name"), "must not be empty"));
        }
        if !names.insert(test.name.as_str()) {
            return Err(PolicyError::new(
                format!("{at}.name"),
                format!("duplicate test name {:?}", test.name),
            ));
        }
        if test.job.trim().is_empty() {
            return Err(PolicyError::new(format!("{at}.job"), "must not be empty"));
        }
        check(format!("{at}.job"), &test.job)?;
        if let Some(r) = &test.git_ref {
            check(format!("{at}.ref"), r)?;
        }
        if let Some(t) = &test.timeout {
            parse_duration(t).map_err(|e| PolicyError::new(format!("{at}.timeout"), e))?;
        }
        for (key, value) in &test.parameters {
            check(format!("{at}.parameters.{key}"), value)?;
        }
    }
    let app = &spec.promotion.application;
    check("spec.promotion.application.name".into(), &app.name)?;
    check(
        "spec.promotion.application.namespace".into(),
        &app.namespace,
    )?;
    check("spec.promotion.application.cluster".into(), &app.cluster)?;
    if let Some(label) = &spec.promotion.github_label {
        check("spec.promotion.githubLabel".into(), label)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> PromotionPolicySpec {
        serde_json::from_value(serde_json::json!({
            "sourceEnvironment": "dev", "targetEnvironment": "staging", "timeout": "30m",
            "externalTests": [
                {"name": "smoke", "provider": "jenkins", "job": "team/smoke",
                 "parameters": {"PR": "${PR_NUMBER}", "SHA": "${HEAD_SHA}"}},
                {"name": "e2e", "provider": "gitlab", "job": "team/e2e", "ref": "main", "timeout": "10m"}
            ],
            "promotion": {"application": {"name": "shop-${TARGET_ENVIRONMENT}"}, "githubLabel": "in-${TARGET_ENVIRONMENT}"}
        }))
        .expect("valid spec")
    }

    #[test]
    fn a_good_policy_is_valid() {
        assert_eq!(validate_policy(&spec()), Ok(()));
    }

    #[test]
    fn same_source_and_target() {
        let mut s = spec();
        s.target_environment = "dev".into();
        let e = validate_policy(&s).expect_err("invalid");
        assert_eq!(e.field, "spec.targetEnvironment");
    }

    #[test]
    fn empty_environment() {
        let mut s = spec();
        s.source_environment = " ".into();
        assert_eq!(
            validate_policy(&s).expect_err("invalid").field,
            "spec.sourceEnvironment"
        );
    }

    #[test]
    fn duplicate_test_names() {
        let mut s = spec();
        s.external_tests[1].name = "smoke".into();
        let e = validate_policy(&s).expect_err("invalid");
        assert_eq!(e.field, "spec.externalTests[1].name");
        assert!(e.reason.contains("duplicate"));
    }

    #[test]
    fn empty_job() {
        let mut s = spec();
        s.external_tests[0].job = "".into();
        assert_eq!(
            validate_policy(&s).expect_err("invalid").field,
            "spec.externalTests[0].job"
        );
    }

    #[test]
    fn bad_and_zero_timeouts() {
        for bad in ["0s", "ten", "1.5h", "", "5"] {
            let mut s = spec();
            s.external_tests[1].timeout = Some(bad.into());
            let e = validate_policy(&s).expect_err(bad);
            assert_eq!(e.field, "spec.externalTests[1].timeout", "{bad}");
            let mut s = spec();
            s.timeout = Some(bad.into());
            assert_eq!(validate_policy(&s).expect_err(bad).field, "spec.timeout");
        }
    }

    #[test]
    fn unknown_variable_names_the_field() {
        let mut s = spec();
        s.external_tests[0]
            .parameters
            .insert("X".into(), "${PULL_NUMBER}".into());
        let e = validate_policy(&s).expect_err("invalid");
        assert_eq!(e.field, "spec.externalTests[0].parameters.X");
        assert!(e.reason.contains("PULL_NUMBER"), "{e}");
        let mut s = spec();
        s.promotion.github_label = Some("${NOPE}".into());
        assert_eq!(
            validate_policy(&s).expect_err("invalid").field,
            "spec.promotion.githubLabel"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("1h 30m").is_err());
        assert!(parse_duration("m").is_err());
    }
}

//! From a pull request as GitHub has it to the tracker that follows it: the
//! repository's settings, the tracker's name and spec, and the PR labels it copies.
//!
//! The PR read from the API is the truth; nothing here orders events by time.

use crate::ports::PullRequestState;
use crate::variables::Variables;
use promotion_api::{ApplicationRef, PullRequestTracker, PullRequestTrackerSpec, Repository};
use serde::Deserialize;
use std::collections::BTreeMap;
use wildmatch::WildMatch;

/// Kubernetes keeps label names and values to 63 characters.
const MAX_LABEL: usize = 63;

/// Where a repository's pull requests enter, and what of them the tracker keeps.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RepositorySettings {
    /// The repository owner.
    pub owner: String,
    /// The repository name.
    pub name: String,
    /// The namespace trackers are created in.
    pub namespace: String,
    /// The environment PRs enter at.
    pub environment: String,
    /// The entry environment's Argo CD application; its name may hold variables (`${PR_NUMBER}`).
    pub application: ApplicationRef,
    /// Patterns (`*` matches any run of characters, `?` one; case-insensitive) of the PR labels
    /// copied to the tracker's labels, so policy selectors can choose by them.
    #[serde(default)]
    pub copy_labels: Vec<String>,
    /// Track PRs whose head branch lives in another repository (a fork). Off by default:
    /// a fork's code would be deployed and tested with this repository's environments.
    #[serde(default)]
    pub allow_forks: bool,
}

/// Why a pull request gets no tracker, or the settings are unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PullRequestError {
    /// GitHub's answer is not a usable pull request.
    #[error("pull request {0}")]
    Malformed(String),
    /// The head branch is in another repository and the settings do not allow forks.
    #[error("pull request #{number} comes from {head} (a fork) and allowForks is off")]
    FromFork {
        /// The PR number.
        number: u64,
        /// The head repository, `owner/name` or `a deleted repository`.
        head: String,
    },
    /// The repository settings are wrong.
    #[error("repository {repository}: {problem}")]
    Settings {
        /// `owner/name`.
        repository: String,
        /// What is wrong.
        problem: String,
    },
}

impl RepositorySettings {
    /// `owner/name`.
    pub fn full_name(&self) -> String {
        format!("{}/{}", self.owner, self.name)
    }

    /// Whether these settings are the repository `owner/name` (GitHub names ignore case).
    pub fn is(&self, owner: &str, name: &str) -> bool {
        self.owner.eq_ignore_ascii_case(owner) && self.name.eq_ignore_ascii_case(name)
    }

    /// Mistakes no pull request can fix: an unknown variable, an empty field or pattern.
    pub fn check(&self) -> Result<(), PullRequestError> {
        let problem = |problem: String| PullRequestError::Settings {
            repository: self.full_name(),
            problem,
        };
        for (field, value) in [
            ("owner", &self.owner),
            ("name", &self.name),
            ("namespace", &self.namespace),
            ("environment", &self.environment),
        ] {
            if value.trim().is_empty() {
                return Err(problem(format!("{field} is empty")));
            }
        }
        Variables::placeholders()
            .substitute(&self.application.name)
            .map_err(|e| problem(format!("application.name: {e}")))?;
        if self.copy_labels.iter().any(|p| p.trim().is_empty()) {
            return Err(problem("copyLabels holds an empty pattern".into()));
        }
        Ok(())
    }
}

/// The tracker a pull request should have.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredTracker {
    /// Its name ([`tracker_name`]).
    pub name: String,
    /// Its namespace (the repository's).
    pub namespace: String,
    /// Its spec.
    pub spec: PullRequestTrackerSpec,
    /// The PR labels it copies, as Kubernetes labels ([`copied_labels`]).
    pub labels: BTreeMap<String, String>,
}

/// The tracker name of a PR: `<repo>-pr-<number>`, as a DNS-1123 name.
pub fn tracker_name(repo: &str, number: u64) -> String {
    let mut base: String = repo
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "pr" } else { base };
    format!("{base}-pr-{number}")
}

/// The tracker `pr` of the repository `settings` describe should have.
pub fn desired_tracker(
    settings: &RepositorySettings,
    pr: &PullRequestState,
) -> Result<DesiredTracker, PullRequestError> {
    let sha = &pr.head_sha;
    if !(7..=40).contains(&sha.len()) || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(PullRequestError::Malformed(format!(
            "#{}: head sha {sha:?} is not a commit SHA",
            pr.number
        )));
    }
    let number = i64::try_from(pr.number)
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| PullRequestError::Malformed(format!("number {} is invalid", pr.number)))?;
    let own = settings.full_name();
    let from_fork = pr
        .head_repository
        .as_ref()
        .is_none_or(|head| !head.eq_ignore_ascii_case(&own));
    if from_fork && !settings.allow_forks {
        return Err(PullRequestError::FromFork {
            number: pr.number,
            head: pr
                .head_repository
                .clone()
                .unwrap_or_else(|| "a deleted repository".into()),
        });
    }
    let name = tracker_name(&settings.name, pr.number);
    let mut spec = PullRequestTrackerSpec {
        repository: Repository {
            owner: settings.owner.clone(),
            name: settings.name.clone(),
        },
        number,
        head_sha: sha.clone(),
        environment: settings.environment.clone(),
        application: settings.application.clone(),
        closed: !pr.open,
    };
    // At entry the hop is the entry environment itself: its app name is the template's subject.
    let mut provisional = PullRequestTracker::new(&name, spec.clone());
    provisional.metadata.namespace = Some(settings.namespace.clone());
    let vars = Variables::for_hop(&provisional, &settings.environment, &settings.environment);
    spec.application.name =
        vars.substitute(&settings.application.name)
            .map_err(|e| PullRequestError::Settings {
                repository: own.clone(),
                problem: format!("application.name: {e}"),
            })?;
    Ok(DesiredTracker {
        name,
        namespace: settings.namespace.clone(),
        spec,
        labels: copied_labels(&settings.copy_labels, &pr.labels),
    })
}

/// The PR labels matching `patterns`, as Kubernetes labels.
///
/// The mapping: a PR label splits at its first `:`, `=` or `/` into key and value
/// (`team:payments`, `team=payments` and `team/payments` become `team=payments`); a
/// label without one becomes a key with an empty value (`hotfix` -> `hotfix=""`).
/// Both sides are lowercased (GitHub label names ignore case), trimmed, every
/// character Kubernetes does not allow becomes `-`, and each is cut to 63 characters
/// with alphanumeric ends. A label whose key sanitises to nothing is skipped; a key
/// that two labels give different values is left out, so no policy claims the PR on
/// a guess.
pub fn copied_labels(patterns: &[String], pr_labels: &[String]) -> BTreeMap<String, String> {
    let matchers: Vec<WildMatch> = patterns
        .iter()
        .map(|p| WildMatch::new_case_insensitive(p.trim()))
        .collect();
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for label in pr_labels {
        if !matchers.iter().any(|m| m.matches(label.trim())) {
            continue;
        }
        let (key, value) = match label.find([':', '=', '/']) {
            Some(at) => (&label[..at], &label[at + 1..]),
            None => (label.as_str(), ""),
        };
        let key = sanitise(key);
        if key.is_empty() {
            tracing::debug!(label = %label, "PR label has no usable key; not copied");
            continue;
        }
        let value = sanitise(value);
        match out.get(&key) {
            Some(Some(seen)) if *seen != value => {
                tracing::warn!(key = %key, "two PR labels give one tracker label different values; left out");
                out.insert(key, None);
            }
            Some(_) => {}
            None => {
                out.insert(key, Some(value));
            }
        }
    }
    out.into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Lowercase, `[a-z0-9._-]` only, at most 63 characters, alphanumeric at both ends.
fn sanitise(text: &str) -> String {
    let mapped: String = text
        .trim()
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    let cut: String = trimmed.chars().take(MAX_LABEL).collect();
    cut.trim_end_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";

    fn settings() -> RepositorySettings {
        RepositorySettings {
            owner: "acme".into(),
            name: "Shop".into(),
            namespace: "team-a".into(),
            environment: "dev".into(),
            application: ApplicationRef {
                cluster: "in-cluster".into(),
                namespace: "argocd".into(),
                name: "shop-pr-${PR_NUMBER}-${HEAD_SHA_SHORT}".into(),
            },
            copy_labels: vec!["team:*".into(), "area/*".into(), "hotfix".into()],
            allow_forks: false,
        }
    }

    fn pr(open: bool, labels: &[&str]) -> PullRequestState {
        PullRequestState {
            number: 42,
            head_sha: SHA.into(),
            open,
            merged: false,
            labels: labels.iter().map(|l| l.to_string()).collect(),
            head_repository: Some("ACME/shop".into()),
        }
    }

    #[test]
    fn tracker_names_are_dns_labels() {
        assert_eq!(tracker_name("Shop_API", 42), "shop-api-pr-42");
        assert_eq!(tracker_name("--", 1), "pr-pr-1");
    }

    #[test]
    fn a_pull_request_becomes_its_tracker_with_variables_substituted() {
        let t = desired_tracker(&settings(), &pr(true, &[])).expect("tracked");
        assert_eq!(t.name, "shop-pr-42");
        assert_eq!(t.namespace, "team-a");
        assert_eq!(t.spec.application.name, "shop-pr-42-3f2c9a1");
        assert_eq!(t.spec.head_sha, SHA);
        assert!(!t.spec.closed);
        let closed = desired_tracker(&settings(), &pr(false, &[])).expect("tracked");
        assert!(closed.spec.closed, "a closed PR is a closed tracker");
    }

    #[test]
    fn forks_are_refused_unless_allowed() {
        let mut fork = pr(true, &[]);
        fork.head_repository = Some("mallory/shop".into());
        assert!(matches!(
            desired_tracker(&settings(), &fork),
            Err(PullRequestError::FromFork { number: 42, .. })
        ));
        fork.head_repository = None;
        assert!(
            desired_tracker(&settings(), &fork).is_err(),
            "deleted head repo"
        );
        let allowed = RepositorySettings {
            allow_forks: true,
            ..settings()
        };
        assert!(desired_tracker(&allowed, &fork).is_ok());
    }

    #[test]
    fn malformed_pull_requests_are_refused() {
        let mut bad = pr(true, &[]);
        bad.head_sha = "not-a-sha".into();
        assert!(matches!(
            desired_tracker(&settings(), &bad),
            Err(PullRequestError::Malformed(_))
        ));
        let mut zero = pr(true, &[]);
        zero.number = 0;
        assert!(desired_tracker(&settings(), &zero).is_err());
    }

    #[test]
    fn settings_with_an_unknown_variable_are_refused() {
        let mut s = settings();
        assert!(s.check().is_ok());
        s.application.name = "shop-${PR_NUMBR}".into();
        let err = s.check().expect_err("unknown variable");
        assert!(err.to_string().contains("PR_NUMBR"), "{err}");
    }

    #[test]
    fn matching_labels_are_copied_as_kubernetes_labels() {
        let patterns = settings().copy_labels;
        let labels = copied_labels(
            &patterns,
            &[
                "Team: Payments".into(),
                "area/checkout flow".into(),
                "hotfix".into(),
                "bug".into(),
            ],
        );
        assert_eq!(
            labels,
            BTreeMap::from([
                ("area".to_string(), "checkout-flow".to_string()),
                ("hotfix".to_string(), "".to_string()),
                ("team".to_string(), "payments".to_string()),
            ]),
            "bug matches no pattern"
        );
    }

    #[test]
    fn a_key_given_two_values_is_left_out() {
        let labels = copied_labels(
            &["team:*".into(), "area/*".into()],
            &["team:a".into(), "team:b".into(), "area/x".into()],
        );
        assert_eq!(
            labels,
            BTreeMap::from([("area".to_string(), "x".to_string())])
        );
    }

    #[test]
    fn values_are_sanitised_to_label_syntax() {
        let long = format!("team:{}", "x".repeat(80));
        let labels = copied_labels(
            &["*".into()],
            &[long, "-Ops Team-:--Blue/Green--".into(), ":nokey".into()],
        );
        assert_eq!(labels["team"].len(), 63);
        assert_eq!(labels["ops-team"], "blue-green");
        assert_eq!(
            labels.len(),
            2,
            "a label without a key is skipped: {labels:?}"
        );
    }
}

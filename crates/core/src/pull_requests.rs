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
    /// The namespaces whose trackers may follow this repository (`"*"`: any), besides
    /// `namespace`; a tracker anywhere else is refused (`RepositoryNotAllowed`).
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// The environment PRs enter at.
    pub environment: String,
    /// The entry environment's Argo CD application; its name may hold variables (`${PR_NUMBER}`).
    pub application: ApplicationRef,
    /// Patterns (`*` matches any run of characters, `?` one; case-insensitive) of the PR labels
    /// copied to the tracker's labels, so policy selectors can choose by them.
    #[serde(default)]
    pub copy_labels: Vec<String>,
    /// What to do with PRs whose head branch lives in another repository (a fork):
    /// `ignore` (the default), `track`, or `gate` (tracked, but every promotion waits
    /// for a person's approval). A fork's code would be deployed and tested with this
    /// repository's environments.
    #[serde(default)]
    pub forks: Option<Forks>,
    /// Deprecated (one release): `true` is `forks: track`, `false` is `forks: ignore`.
    #[serde(default)]
    pub allow_forks: Option<bool>,
}

/// What a repository does with pull requests from forks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Forks {
    /// No tracker.
    #[default]
    Ignore,
    /// Tracked like any other PR.
    Track,
    /// Tracked, but nothing is promoted until a person approves each hop
    /// (`promotion.io/approve: <env>@<sha>`).
    Gate,
}

/// The label on a tracker of a fork's PR under `forks: gate`: every hop waits for approval.
pub const FORK_LABEL: &str = "promotion.io/fork";
/// The value of [`FORK_LABEL`] that gates.
pub const FORK_GATED: &str = "gate";

/// Why a pull request gets no tracker, or the settings are unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PullRequestError {
    /// GitHub's answer is not a usable pull request.
    #[error("pull request {0}")]
    Malformed(String),
    /// The head branch is in another repository and the settings do not allow forks.
    #[error("pull request #{number} comes from {head} (a fork) and forks is ignore")]
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

    /// What to do with forks' PRs (`forks`, or the deprecated `allowForks`).
    pub fn fork_policy(&self) -> Forks {
        match (self.forks, self.allow_forks) {
            (Some(f), _) => f,
            (None, Some(true)) => Forks::Track,
            (None, _) => Forks::Ignore,
        }
    }

    /// The namespaces that may track this repository: `namespace` and `namespaces`.
    pub fn tracking_namespaces(&self) -> Vec<String> {
        let mut all = vec![self.namespace.clone()];
        all.extend(self.namespaces.iter().cloned());
        all
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
        if self.namespaces.iter().any(|n| n.trim().is_empty()) {
            return Err(problem("namespaces holds an empty name".into()));
        }
        if self.forks.is_some() && self.allow_forks.is_some() {
            return Err(problem(
                "both forks and the deprecated allowForks are set; keep only forks".into(),
            ));
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

/// The longest Kubernetes object name that is also a DNS label.
const MAX_NAME: usize = 63;

/// The tracker name of a PR: `<owner>-<repo>-pr-<number>`, a DNS-1123 label. When that is
/// longer than 63 characters, or could be read as another repository's (an owner with a
/// `-`, a character mapped to `-`), the start is cut and a hash of `owner/repo` keeps
/// names of different repositories apart.
pub fn tracker_name(owner: &str, repo: &str, number: u64) -> String {
    let base = dns_part(&format!("{owner}-{repo}"));
    let suffix = format!("-pr-{number}");
    // Read back unambiguously: the owner ends at the first `-`, the repository maps 1:1.
    let exact = !owner.is_empty()
        && owner.chars().all(|c| c.is_ascii_alphanumeric())
        && !repo.is_empty()
        && repo.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && !repo.starts_with('-')
        && !repo.ends_with('-');
    if exact && base.len() + suffix.len() <= MAX_NAME {
        return format!("{base}{suffix}");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{owner}/{repo}").to_ascii_lowercase());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let room = MAX_NAME.saturating_sub(suffix.len() + hash.len() + 1);
    let mut cut: String = base.chars().take(room).collect();
    while cut.ends_with('-') {
        cut.pop();
    }
    if cut.is_empty() {
        format!("{hash}{suffix}")
    } else {
        format!("{cut}-{hash}{suffix}")
    }
}

/// The name trackers had before names held the owner (`<repo>-pr-<number>`): a tracker
/// of that name is still used, when its spec is this very repository and PR.
pub fn legacy_tracker_name(repo: &str, number: u64) -> String {
    let mut base = dns_part(repo);
    base.truncate(40);
    let base = base.trim_matches('-');
    let base = if base.is_empty() { "pr" } else { base };
    format!("{base}-pr-{number}")
}

/// Lowercase, every character but `[a-z0-9]` a `-`, without `-` at the ends.
fn dns_part(text: &str) -> String {
    let mapped: String = text
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    mapped.trim_matches('-').to_string()
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
    let forks = settings.fork_policy();
    if from_fork && forks == Forks::Ignore {
        return Err(PullRequestError::FromFork {
            number: pr.number,
            head: pr
                .head_repository
                .clone()
                .unwrap_or_else(|| "a deleted repository".into()),
        });
    }
    let name = tracker_name(&settings.owner, &settings.name, pr.number);
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
    let mut labels = copied_labels(&settings.copy_labels, &pr.labels);
    if from_fork && forks == Forks::Gate {
        labels.insert(FORK_LABEL.to_owned(), FORK_GATED.to_owned());
    }
    Ok(DesiredTracker {
        name,
        namespace: settings.namespace.clone(),
        spec,
        labels,
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
            forks: None,
            allow_forks: None,
            namespaces: vec![],
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
        assert_eq!(legacy_tracker_name("Shop_API", 42), "shop-api-pr-42");
        assert_eq!(legacy_tracker_name("--", 1), "pr-pr-1");
    }

    #[test]
    fn same_named_repositories_of_two_owners_get_distinct_tracker_names() {
        let a = tracker_name("acme", "shop", 7);
        let b = tracker_name("other", "shop", 7);
        assert_eq!(a, "acme-shop-pr-7");
        assert_ne!(a, b);
        // An owner with a `-` could be read as another split of the same words.
        assert_ne!(tracker_name("a-b", "c", 1), tracker_name("a", "b-c", 1));
        assert_ne!(tracker_name("a_b", "c", 1), tracker_name("a-b", "c", 1));
        let long = "x".repeat(80);
        for (o, r) in [(long.as_str(), "shop"), ("acme", long.as_str())] {
            let n = tracker_name(o, r, 123_456);
            assert!(n.len() <= 63, "{n}");
            assert!(n.ends_with("-pr-123456"), "{n}");
            assert!(
                n.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            );
        }
        assert_ne!(
            tracker_name(&long, "shop", 1),
            tracker_name(&format!("{long}y"), "shop", 1),
            "cut names keep their hash"
        );
    }

    #[test]
    fn forks_gate_tracks_with_the_gate_label() {
        let mut fork = pr(true, &[]);
        fork.head_repository = Some("mallory/shop".into());
        let gated = RepositorySettings {
            forks: Some(Forks::Gate),
            ..settings()
        };
        let t = desired_tracker(&gated, &fork).expect("tracked");
        assert_eq!(
            t.labels.get(FORK_LABEL).map(String::as_str),
            Some(FORK_GATED)
        );
        let own = desired_tracker(&gated, &pr(true, &[])).expect("tracked");
        assert!(
            !own.labels.contains_key(FORK_LABEL),
            "own branches are not gated"
        );
        let track = RepositorySettings {
            forks: Some(Forks::Track),
            ..settings()
        };
        let t = desired_tracker(&track, &fork).expect("tracked");
        assert!(!t.labels.contains_key(FORK_LABEL));
        let both = RepositorySettings {
            forks: Some(Forks::Track),
            allow_forks: Some(true),
            ..settings()
        };
        assert!(
            both.check().is_err(),
            "forks and allowForks together are a mistake"
        );
    }

    #[test]
    fn a_pull_request_becomes_its_tracker_with_variables_substituted() {
        let t = desired_tracker(&settings(), &pr(true, &[])).expect("tracked");
        assert_eq!(t.name, "acme-shop-pr-42");
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
            forks: None,
            allow_forks: Some(true),
            namespaces: vec![],
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

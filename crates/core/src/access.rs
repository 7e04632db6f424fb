//! Who may make the controller act for them: which namespaces may use each CI
//! connection (and which jobs through it), and which namespaces may track each
//! repository. The controller's credentials reach every team's CI and
//! repositories; these grants keep a team to its own.
//!
//! The rules come from the configuration file; the labels of a namespace are
//! passed in (no Kubernetes client here).

use crate::selector;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use promotion_api::{PromotionPolicySpec, Provider};
use std::collections::BTreeMap;
use wildmatch::WildMatch;

/// The condition reason of a policy or tracker that names a connection its namespace may not use.
pub const CONNECTION_NOT_ALLOWED: &str = "ConnectionNotAllowed";
/// The condition reason of a policy or tracker that names a job its namespace may not run.
pub const JOB_NOT_ALLOWED: &str = "JobNotAllowed";
/// The condition reason of a tracker whose repository is not mapped to its namespace.
pub const REPOSITORY_NOT_ALLOWED: &str = "RepositoryNotAllowed";

/// Which namespaces may use one connection, and which jobs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConnectionGrant {
    /// Namespaces by name; `*` is every namespace. Empty with no selector: nobody.
    pub namespaces: Vec<String>,
    /// Namespaces by their labels (in addition to `namespaces`).
    pub namespace_selector: Option<LabelSelector>,
    /// Patterns of the jobs (Jenkins job paths, GitLab project paths, workflow files)
    /// that may be run through it; `*` matches any run of characters, `/` included.
    /// Empty: any job.
    pub jobs: Vec<String>,
}

impl ConnectionGrant {
    fn admits(&self, namespace: &str, labels: Option<&BTreeMap<String, String>>) -> bool {
        self.namespaces.iter().any(|n| n == "*" || n == namespace)
            || self
                .namespace_selector
                .as_ref()
                .is_some_and(|s| labels.is_some_and(|l| selector::matches(Some(s), l)))
    }

    fn runs(&self, job: &str) -> bool {
        self.jobs.is_empty() || self.jobs.iter().any(|p| WildMatch::new(p).matches(job))
    }
}

/// Why the controller refuses to act for a namespace.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Denied {
    /// The condition reason ([`CONNECTION_NOT_ALLOWED`], [`JOB_NOT_ALLOWED`], [`REPOSITORY_NOT_ALLOWED`]).
    pub reason: &'static str,
    /// One sentence saying what is refused and how an administrator allows it.
    pub message: String,
}

/// The grants of the configuration file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccessRules {
    connections: BTreeMap<String, ConnectionGrant>,
    defaults: BTreeMap<Provider, String>,
    repositories: BTreeMap<String, Vec<String>>,
}

impl AccessRules {
    /// No grants: every connection and repository is refused to everyone.
    pub fn new() -> Self {
        Self::default()
    }

    /// Grants the connection `name`; `default_for` is the provider it is the default of.
    pub fn with_connection(
        mut self,
        name: &str,
        default_for: Option<Provider>,
        grant: ConnectionGrant,
    ) -> Self {
        if let Some(p) = default_for {
            self.defaults.insert(p, name.to_owned());
        }
        self.connections.insert(name.to_owned(), grant);
        self
    }

    /// Lets `namespaces` (`*`: every one) track `owner/name`.
    pub fn with_repository(mut self, owner: &str, name: &str, namespaces: Vec<String>) -> Self {
        self.repositories
            .entry(repo_key(owner, name))
            .or_default()
            .extend(namespaces);
        self
    }

    /// Whether a grant chooses namespaces by label, so their labels must be known.
    pub fn uses_namespace_labels(&self) -> bool {
        self.connections
            .values()
            .any(|g| g.namespace_selector.is_some())
    }

    /// Whether `namespace` (with `labels`, when known) may run `job` of `provider` through
    /// `connection` (the provider's default when `None`).
    pub fn check_test(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
        provider: Provider,
        connection: Option<&str>,
        job: &str,
    ) -> Result<(), Denied> {
        let name = match connection {
            Some(c) => c.to_owned(),
            None => self
                .defaults
                .get(&provider)
                .cloned()
                .ok_or_else(|| Denied {
                    reason: CONNECTION_NOT_ALLOWED,
                    message: format!(
                        "no default {} connection is configured for namespace {namespace}",
                        provider_key(provider)
                    ),
                })?,
        };
        let Some(grant) = self.connections.get(&name) else {
            return Err(Denied {
                reason: CONNECTION_NOT_ALLOWED,
                message: format!("no CI connection named {name:?} is configured"),
            });
        };
        if !grant.admits(namespace, labels) {
            return Err(Denied {
                reason: CONNECTION_NOT_ALLOWED,
                message: format!(
                    "namespace {namespace} may not use connection {name:?}: its allowedNamespaces / namespaceSelector in the configuration file do not include it"
                ),
            });
        }
        if !grant.runs(job) {
            return Err(Denied {
                reason: JOB_NOT_ALLOWED,
                message: format!(
                    "connection {name:?} may not run job {job:?}: it matches none of its jobs patterns ({})",
                    grant.jobs.join(", ")
                ),
            });
        }
        Ok(())
    }

    /// The first test of `spec` that `namespace` may not run, with the field that names it.
    pub fn check_policy(
        &self,
        namespace: &str,
        labels: Option<&BTreeMap<String, String>>,
        spec: &PromotionPolicySpec,
    ) -> Result<(), (String, Denied)> {
        for (i, t) in spec.external_tests.iter().enumerate() {
            self.check_test(
                namespace,
                labels,
                t.provider,
                t.connection.as_deref(),
                &t.job,
            )
            .map_err(|d| (format!("spec.externalTests[{i}]"), d))?;
        }
        Ok(())
    }

    /// Whether trackers in `namespace` may follow pull requests of `owner/name`.
    pub fn check_repository(&self, namespace: &str, owner: &str, name: &str) -> Result<(), Denied> {
        let allowed = self
            .repositories
            .get(&repo_key(owner, name))
            .is_some_and(|list| list.iter().any(|n| n == "*" || n == namespace));
        if allowed {
            Ok(())
        } else {
            Err(Denied {
                reason: REPOSITORY_NOT_ALLOWED,
                message: format!(
                    "repository {owner}/{name} is not mapped to namespace {namespace} in the configuration file (repositories[].namespaces): nothing is triggered, reported or promoted for it"
                ),
            })
        }
    }
}

/// Whether an Application whose opt-in annotation is `opt_in` lets trackers in
/// `namespace` read its sync, health and revision: an entry (`<namespace>/<environment>`,
/// or a bare `<namespace>`) names the namespace, or is `*` (`*/<environment>`).
pub fn app_readable_by(opt_in: Option<&str>, namespace: &str) -> bool {
    opt_in.is_some_and(|list| {
        list.split(',').map(str::trim).any(|entry| {
            let ns = entry.split_once('/').map_or(entry, |(ns, _)| ns).trim();
            !namespace.is_empty() && (ns == "*" || ns == namespace)
        })
    })
}

/// The annotation by which an Application opts in to namespaces (Argo CD adapter's `ALLOW_PROMOTION_FROM`).
pub const OPT_IN_ANNOTATION: &str = "promotion.io/allow-promotion-from";

/// The condition reason of a tracker whose Application has not opted in to its namespace.
pub const APPLICATION_NOT_OPTED_IN: &str = "ApplicationNotOptedIn";

/// Labels of namespaces, for grants that choose namespaces by label.
pub trait NamespaceLabels: Send + Sync {
    /// The labels of `namespace`; `None` when not known (a selector then admits nothing).
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>>;
}

/// No namespace labels known: only grants by name admit anyone.
pub struct NoLabels;

impl NamespaceLabels for NoLabels {
    fn labels(&self, _namespace: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

/// Labels from a fixed map (tests, and a controller that read them once).
impl NamespaceLabels for BTreeMap<String, BTreeMap<String, String>> {
    fn labels(&self, namespace: &str) -> Option<BTreeMap<String, String>> {
        self.get(namespace).cloned()
    }
}

fn provider_key(p: Provider) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| format!("{p:?}"))
}

fn repo_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> AccessRules {
        AccessRules::new()
            .with_connection(
                "jenkins-a",
                Some(Provider::Jenkins),
                ConnectionGrant {
                    namespaces: vec!["team-a".into()],
                    jobs: vec!["team-a/*".into()],
                    ..ConnectionGrant::default()
                },
            )
            .with_connection(
                "gitlab-shared",
                None,
                ConnectionGrant {
                    namespace_selector: Some(LabelSelector {
                        match_labels: Some(BTreeMap::from([("ci".into(), "shared".into())])),
                        ..LabelSelector::default()
                    }),
                    ..ConnectionGrant::default()
                },
            )
            .with_connection("nobody", None, ConnectionGrant::default())
            .with_repository("acme", "shop", vec!["team-a".into()])
    }

    #[test]
    fn a_connection_serves_only_the_namespaces_it_names() {
        let r = rules();
        assert!(
            r.check_test("team-a", None, Provider::Jenkins, None, "team-a/smoke")
                .is_ok()
        );
        let d = r
            .check_test(
                "team-b",
                None,
                Provider::Jenkins,
                Some("jenkins-a"),
                "team-a/smoke",
            )
            .unwrap_err();
        assert_eq!(d.reason, CONNECTION_NOT_ALLOWED);
        let d = r
            .check_test("team-a", None, Provider::Jenkins, Some("nobody"), "x")
            .unwrap_err();
        assert_eq!(d.reason, CONNECTION_NOT_ALLOWED, "absent = nobody");
        let d = r
            .check_test("team-a", None, Provider::Gitlab, None, "x")
            .unwrap_err();
        assert_eq!(d.reason, CONNECTION_NOT_ALLOWED, "no default gitlab");
    }

    #[test]
    fn a_selector_admits_by_namespace_labels() {
        let r = rules();
        let shared = BTreeMap::from([("ci".to_string(), "shared".to_string())]);
        let g = Some("gitlab-shared");
        assert!(
            r.check_test("team-b", Some(&shared), Provider::Gitlab, g, "p")
                .is_ok()
        );
        assert!(
            r.check_test("team-b", Some(&BTreeMap::new()), Provider::Gitlab, g, "p")
                .is_err()
        );
        assert!(
            r.check_test("team-b", None, Provider::Gitlab, g, "p")
                .is_err()
        );
    }

    #[test]
    fn jobs_outside_the_patterns_are_refused() {
        let d = rules()
            .check_test("team-a", None, Provider::Jenkins, None, "team-b/deploy")
            .unwrap_err();
        assert_eq!(d.reason, JOB_NOT_ALLOWED);
    }

    #[test]
    fn an_application_is_read_only_for_the_namespaces_it_names() {
        assert!(app_readable_by(Some("team-b/prod, team-a/dev"), "team-a"));
        assert!(app_readable_by(Some("team-a"), "team-a"));
        assert!(app_readable_by(Some("*"), "team-b"));
        assert!(app_readable_by(Some("*/dev"), "team-b"));
        assert!(!app_readable_by(Some("team-a/dev"), "team-b"));
        assert!(!app_readable_by(Some(",, /dev"), "team-b"));
        assert!(!app_readable_by(None, "team-a"));
    }

    #[test]
    fn repositories_belong_to_their_namespaces() {
        let r = rules().with_repository("other", "lib", vec!["*".into()]);
        assert!(r.check_repository("team-a", "ACME", "shop").is_ok());
        assert_eq!(
            r.check_repository("team-b", "acme", "shop")
                .unwrap_err()
                .reason,
            REPOSITORY_NOT_ALLOWED
        );
        assert!(r.check_repository("team-b", "other", "lib").is_ok());
        assert!(r.check_repository("team-a", "acme", "unknown").is_err());
    }
}

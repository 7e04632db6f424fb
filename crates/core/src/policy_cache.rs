//! PolicyCache: every policy, indexed by (namespace, source environment), fed by a watch.

use crate::access::{AccessRules, Denied, NamespaceLabels};
use crate::policy::{PolicyError, validate_policy};
use crate::selector;
use promotion_api::PromotionPolicySpec;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, RwLock};

/// A policy as the cache holds it, with its validation verdict.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedPolicy {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub name: String,
    /// metadata.generation.
    pub generation: Option<i64>,
    /// The spec.
    pub spec: PromotionPolicySpec,
    /// `validate_policy`'s verdict, computed once per generation.
    pub validity: Result<(), PolicyError>,
}

impl CachedPolicy {
    /// Wraps and validates a policy.
    pub fn new(
        namespace: &str,
        name: &str,
        generation: Option<i64>,
        spec: PromotionPolicySpec,
    ) -> Self {
        let validity = validate_policy(&spec);
        Self {
            namespace: namespace.into(),
            name: name.into(),
            generation,
            spec,
            validity,
        }
    }
}

/// Why no single usable policy governs a tracker's environment.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum LookupError {
    /// No policy has this source environment (for this tracker): the last environment.
    #[error("no PromotionPolicy in namespace {namespace} has sourceEnvironment {environment:?}")]
    PolicyNotFound {
        /// The tracker's namespace.
        namespace: String,
        /// The environment looked up.
        environment: String,
    },
    /// Two or more policies claim the same source for this tracker.
    #[error("policies {} all claim sourceEnvironment {environment:?} for this tracker; narrow them with spec.selector", names.join(", "))]
    Conflict {
        /// The environment looked up.
        environment: String,
        /// The conflicting policies' names, sorted.
        names: Vec<String>,
    },
    /// The one matching policy is invalid.
    #[error("policy {name} is invalid: {error}")]
    Invalid {
        /// The policy's name.
        name: String,
        /// Why.
        error: PolicyError,
    },
}

type Key = (String, String);

/// Thread-safe index of policies by (namespace, source environment).
#[derive(Clone, Default)]
pub struct PolicyCache {
    inner: Arc<RwLock<Index>>,
    // The configured CI connections; None: not known, so not checked.
    connections: Option<Arc<BTreeSet<String>>>,
    // Who may use which connection and repository; None: not checked.
    access: Option<Access>,
}

/// The grants and the namespace labels they are judged with.
#[derive(Clone)]
struct Access {
    rules: Arc<AccessRules>,
    labels: Arc<dyn NamespaceLabels>,
}

#[derive(Default)]
struct Index {
    by_source: HashMap<Key, BTreeMap<String, Arc<CachedPolicy>>>,
    // Where each policy is filed, so an update that changes its source moves it.
    filed_under: HashMap<(String, String), Key>,
}

impl PolicyCache {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache that judges a test naming a connection outside `names` invalid.
    pub fn with_connections(names: impl IntoIterator<Item = String>) -> Self {
        Self {
            connections: Some(Arc::new(names.into_iter().collect())),
            ..Self::default()
        }
    }

    /// The same cache, judging every policy and tracker against `rules`, with the
    /// namespace labels `labels` knows.
    pub fn with_access(
        mut self,
        rules: Arc<AccessRules>,
        labels: Arc<dyn NamespaceLabels>,
    ) -> Self {
        self.access = Some(Access { rules, labels });
        self
    }

    /// Whether `namespace` may run `job` of `provider` through `connection` (always, with no rules).
    pub fn check_test(
        &self,
        namespace: &str,
        provider: promotion_api::Provider,
        connection: Option<&str>,
        job: &str,
    ) -> Result<(), Denied> {
        match &self.access {
            Some(a) => a.rules.check_test(
                namespace,
                a.labels.labels(namespace).as_ref(),
                provider,
                connection,
                job,
            ),
            None => Ok(()),
        }
    }

    /// Whether trackers in `namespace` may follow `owner/name` (always, with no rules).
    pub fn check_repository(&self, namespace: &str, owner: &str, name: &str) -> Result<(), Denied> {
        match &self.access {
            Some(a) => a.rules.check_repository(namespace, owner, name),
            None => Ok(()),
        }
    }

    /// The full verdict on `policy` against the others: its own validity, the
    /// connections its tests name, and whether its hop closes a cycle.
    pub fn judge(&self, policy: &CachedPolicy) -> Result<(), PolicyError> {
        match self.inner.read() {
            Ok(index) => self.judge_in(&index, policy),
            Err(_) => policy.validity.clone(),
        }
    }

    fn judge_in(&self, index: &Index, policy: &CachedPolicy) -> Result<(), PolicyError> {
        policy.validity.clone()?;
        if let Some(known) = &self.connections {
            for (i, test) in policy.spec.external_tests.iter().enumerate() {
                if let Some(c) = &test.connection
                    && !known.contains(c)
                {
                    let list: Vec<&str> = known.iter().map(String::as_str).collect();
                    return Err(PolicyError::new(
                        format!("spec.externalTests[{i}].connection"),
                        format!(
                            "no CI connection named {c:?} is configured (configured: {})",
                            list.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some(a) = &self.access {
            let labels = a.labels.labels(&policy.namespace);
            a.rules
                .check_policy(&policy.namespace, labels.as_ref(), &policy.spec)
                .map_err(|(field, denied)| PolicyError::denied(field, denied))?;
        }
        if let Some(path) = index.cycle_through(policy) {
            return Err(PolicyError::new(
                "spec.targetEnvironment",
                format!(
                    "the chain loops: {}; a PR would be promoted around it forever",
                    path.join(" -> ")
                ),
            ));
        }
        Ok(())
    }

    /// Adds or replaces a policy.
    pub fn upsert(&self, policy: CachedPolicy) {
        if let Ok(mut index) = self.inner.write() {
            index.upsert(policy);
        }
    }

    /// Forgets a deleted policy.
    pub fn remove(&self, namespace: &str, name: &str) {
        let Ok(mut index) = self.inner.write() else {
            return;
        };
        if let Some(key) = index
            .filed_under
            .remove(&(namespace.to_string(), name.to_string()))
        {
            remove_from(&mut index.by_source, &key, name);
        }
    }

    /// Replaces the whole content (a watch re-list) in one swap: a reader sees the
    /// old index or the new one, never a half-filled one.
    pub fn replace_all(&self, policies: impl IntoIterator<Item = CachedPolicy>) {
        let mut fresh = Index::default();
        for p in policies {
            fresh.upsert(p);
        }
        if let Ok(mut index) = self.inner.write() {
            *index = fresh;
        }
    }

    /// The one policy governing `environment` for a tracker in `namespace` with `labels`.
    pub fn lookup(
        &self,
        namespace: &str,
        environment: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Arc<CachedPolicy>, LookupError> {
        let not_found = || LookupError::PolicyNotFound {
            namespace: namespace.into(),
            environment: environment.into(),
        };
        let index = self.inner.read().map_err(|_| not_found())?;
        let candidates: Vec<&Arc<CachedPolicy>> = index
            .by_source
            .get(&(namespace.to_string(), environment.to_string()))
            .map(|m| {
                m.values()
                    .filter(|p| selector::matches(p.spec.selector.as_ref(), labels))
                    .collect()
            })
            .unwrap_or_default();
        match candidates.as_slice() {
            [] => Err(not_found()),
            [one] => match self.judge_in(&index, one) {
                Ok(()) => Ok(Arc::clone(one)),
                Err(error) => Err(LookupError::Invalid {
                    name: one.name.clone(),
                    error,
                }),
            },
            many => Err(LookupError::Conflict {
                environment: environment.into(),
                names: many.iter().map(|p| p.name.clone()).collect(),
            }),
        }
    }

    /// Whether `environment`, out of which no policy promotes a tracker in `namespace` with
    /// `labels` that entered at `entry`, is the end of its chain: policies lead into it, none
    /// leads out of it, and no link of the chain is missing. Otherwise, why the tracker waits.
    pub fn chain_end(
        &self,
        namespace: &str,
        environment: &str,
        entry: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(), String> {
        let Ok(index) = self.inner.read() else {
            return Err("the policy cache is unavailable".into());
        };
        let all: Vec<&Arc<CachedPolicy>> = index
            .by_source
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .flat_map(|(_, m)| m.values())
            .collect();
        let mut leaving: Vec<&str> = all
            .iter()
            .filter(|p| p.spec.source_environment == environment)
            .map(|p| p.name.as_str())
            .collect();
        if !leaving.is_empty() {
            leaving.sort();
            return Err(format!(
                "policies {} promote from {environment:?} but none selects this tracker (labels {labels:?}); label the tracker or widen a spec.selector",
                leaving.join(", ")
            ));
        }
        let chain: Vec<&&Arc<CachedPolicy>> = all
            .iter()
            .filter(|p| selector::matches(p.spec.selector.as_ref(), labels))
            .collect();
        if !chain
            .iter()
            .any(|p| p.spec.target_environment == environment)
        {
            return Err(format!(
                "no PromotionPolicy in namespace {namespace} promotes from or into {environment:?}: add the policy that promotes from it"
            ));
        }
        // A chain that starts somewhere the tracker never entered, and never reaches the
        // tracker's environment, is the far side of a missing link.
        let reaches = |from: &str| {
            let mut seen = BTreeSet::from([from.to_string()]);
            let mut todo = vec![from.to_string()];
            while let Some(here) = todo.pop() {
                for p in chain.iter().filter(|p| p.spec.source_environment == here) {
                    if seen.insert(p.spec.target_environment.clone()) {
                        todo.push(p.spec.target_environment.clone());
                    }
                }
            }
            seen.contains(environment)
        };
        let mut gaps: Vec<String> = chain
            .iter()
            .filter(|p| {
                let source = &p.spec.source_environment;
                source != entry
                    && !chain.iter().any(|q| &q.spec.target_environment == source)
                    && !reaches(source)
            })
            .map(|p| format!("{} (from {:?})", p.name, p.spec.source_environment))
            .collect();
        if !gaps.is_empty() {
            gaps.sort();
            return Err(format!(
                "the chain has a missing link: no policy leads into the source of {}; add the policy that promotes from {environment:?}",
                gaps.join(", ")
            ));
        }
        Ok(())
    }

    /// Other policies in the namespace with the same source that could govern one
    /// tracker together with `policy` (their selectors overlap).
    pub fn rivals(&self, policy: &CachedPolicy) -> Vec<String> {
        let Ok(index) = self.inner.read() else {
            return Vec::new();
        };
        index
            .by_source
            .get(&(
                policy.namespace.clone(),
                policy.spec.source_environment.clone(),
            ))
            .map(|m| {
                m.values()
                    .filter(|p| p.name != policy.name)
                    .filter(|p| {
                        selector::overlap(p.spec.selector.as_ref(), policy.spec.selector.as_ref())
                    })
                    .map(|p| p.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Every policy of `namespace` with `source` as its source environment.
    pub fn in_source(&self, namespace: &str, source: &str) -> Vec<Arc<CachedPolicy>> {
        let Ok(index) = self.inner.read() else {
            return Vec::new();
        };
        index
            .by_source
            .get(&(namespace.to_string(), source.to_string()))
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every policy of `namespace`, by name.
    pub fn in_namespace(&self, namespace: &str) -> Vec<Arc<CachedPolicy>> {
        let Ok(index) = self.inner.read() else {
            return Vec::new();
        };
        let mut all: Vec<Arc<CachedPolicy>> = index
            .by_source
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .flat_map(|(_, m)| m.values().cloned())
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// How many policies are cached.
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.filed_under.len()).unwrap_or(0)
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Index {
    /// The environments of a loop that `policy`'s hop closes, following the hops of
    /// its namespace whose selectors can claim the same tracker.
    fn cycle_through(&self, policy: &CachedPolicy) -> Option<Vec<String>> {
        let start = policy.spec.source_environment.clone();
        let first = policy.spec.target_environment.clone();
        // Breadth-first from the target back to the source; `came_from` rebuilds the path.
        let mut came_from: HashMap<String, String> = HashMap::new();
        let mut queue = std::collections::VecDeque::from([first.clone()]);
        came_from.insert(first.clone(), start.clone());
        while let Some(here) = queue.pop_front() {
            if here == start {
                let mut path = vec![start.clone()];
                let mut at = came_from.get(&start)?.clone();
                while at != start {
                    path.push(at.clone());
                    at = came_from.get(&at)?.clone();
                }
                path.push(start.clone());
                path.reverse();
                return Some(path);
            }
            let hops = self
                .by_source
                .get(&(policy.namespace.clone(), here.clone()))
                .into_iter()
                .flat_map(|m| m.values())
                .filter(|p| {
                    selector::overlap(p.spec.selector.as_ref(), policy.spec.selector.as_ref())
                });
            for p in hops {
                let next = p.spec.target_environment.clone();
                if !came_from.contains_key(&next) {
                    came_from.insert(next.clone(), here.clone());
                    queue.push_back(next);
                }
            }
        }
        None
    }

    fn upsert(&mut self, policy: CachedPolicy) {
        let id = (policy.namespace.clone(), policy.name.clone());
        let key = (
            policy.namespace.clone(),
            policy.spec.source_environment.clone(),
        );
        if let Some(old) = self.filed_under.insert(id.clone(), key.clone())
            && old != key
        {
            remove_from(&mut self.by_source, &old, &id.1);
        }
        self.by_source
            .entry(key)
            .or_default()
            .insert(policy.name.clone(), Arc::new(policy));
    }
}

fn remove_from(
    by_source: &mut HashMap<Key, BTreeMap<String, Arc<CachedPolicy>>>,
    key: &Key,
    name: &str,
) {
    if let Some(m) = by_source.get_mut(key) {
        m.remove(name);
        if m.is_empty() {
            by_source.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, source: &str, selector: Option<serde_json::Value>) -> CachedPolicy {
        let mut spec = json!({
            "sourceEnvironment": source, "targetEnvironment": "next",
            "externalTests": [], "allowUngated": true, "promotion": {"application": {"name": "app"}}
        });
        if let Some(s) = selector {
            spec["selector"] = s;
        }
        CachedPolicy::new(
            "ns",
            name,
            Some(1),
            serde_json::from_value(spec).expect("spec"),
        )
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn finds_by_namespace_and_source() {
        let cache = PolicyCache::new();
        cache.upsert(policy("a", "dev", None));
        cache.upsert(policy("b", "staging", None));
        assert_eq!(
            cache.lookup("ns", "dev", &labels(&[])).expect("found").name,
            "a"
        );
        assert_eq!(
            cache
                .lookup("ns", "staging", &labels(&[]))
                .expect("found")
                .name,
            "b"
        );
        assert!(matches!(
            cache.lookup("other", "dev", &labels(&[])),
            Err(LookupError::PolicyNotFound { .. })
        ));
        assert!(matches!(
            cache.lookup("ns", "prod", &labels(&[])),
            Err(LookupError::PolicyNotFound { .. })
        ));
    }

    #[test]
    fn an_update_that_changes_the_source_moves_the_policy() {
        let cache = PolicyCache::new();
        cache.upsert(policy("a", "dev", None));
        cache.upsert(policy("a", "qa", None));
        assert!(cache.lookup("ns", "dev", &labels(&[])).is_err());
        assert!(cache.lookup("ns", "qa", &labels(&[])).is_ok());
        cache.remove("ns", "a");
        assert!(cache.is_empty());
        assert!(cache.lookup("ns", "qa", &labels(&[])).is_err());
    }

    #[test]
    fn two_policies_for_the_same_tracker_conflict() {
        let cache = PolicyCache::new();
        cache.upsert(policy("a", "dev", None));
        cache.upsert(policy("b", "dev", None));
        let err = cache
            .lookup("ns", "dev", &labels(&[]))
            .expect_err("conflict");
        assert_eq!(
            err,
            LookupError::Conflict {
                environment: "dev".into(),
                names: vec!["a".into(), "b".into()]
            }
        );
        assert!(err.to_string().contains("a, b"));
        assert_eq!(
            cache.rivals(&policy("a", "dev", None)),
            vec!["b".to_string()]
        );
    }

    #[test]
    fn selectors_split_trackers_between_policies() {
        let cache = PolicyCache::new();
        cache.upsert(policy(
            "web",
            "dev",
            Some(json!({"matchLabels": {"tier": "web"}})),
        ));
        cache.upsert(policy(
            "api",
            "dev",
            Some(json!({"matchLabels": {"tier": "api"}})),
        ));
        assert_eq!(
            cache
                .lookup("ns", "dev", &labels(&[("tier", "web")]))
                .expect("web")
                .name,
            "web"
        );
        assert_eq!(
            cache
                .lookup("ns", "dev", &labels(&[("tier", "api")]))
                .expect("api")
                .name,
            "api"
        );
        assert!(cache.lookup("ns", "dev", &labels(&[])).is_err());
        assert!(
            cache
                .rivals(&policy(
                    "web",
                    "dev",
                    Some(json!({"matchLabels": {"tier": "web"}}))
                ))
                .is_empty()
        );
    }

    #[test]
    fn an_invalid_policy_is_reported_not_used() {
        let cache = PolicyCache::new();
        let mut p = policy("a", "dev", None);
        p.spec.target_environment = "dev".into();
        let p = CachedPolicy::new("ns", "a", Some(2), p.spec);
        cache.upsert(p);
        assert!(matches!(
            cache.lookup("ns", "dev", &labels(&[])),
            Err(LookupError::Invalid { .. })
        ));
    }

    #[test]
    fn concurrent_readers_and_writers() {
        let cache = PolicyCache::new();
        std::thread::scope(|s| {
            for i in 0..4 {
                let cache = cache.clone();
                s.spawn(move || {
                    for j in 0..200 {
                        cache.upsert(policy(&format!("p{i}-{j}"), &format!("env{j}"), None));
                        let _ = cache.lookup("ns", &format!("env{j}"), &BTreeMap::new());
                    }
                });
            }
        });
        assert_eq!(cache.len(), 800);
    }
}

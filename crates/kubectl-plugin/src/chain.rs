//! The environment chain that the policies of a namespace describe, and what is
//! wrong with it (gaps, cycles, conflicts).

use crate::view::Policy;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The environments in chain order: entry environments first, each followed by
/// the ones its policies lead to. Environments on a cycle come last, in name order.
pub fn order(policies: &[Policy], extra: &[&str]) -> Vec<String> {
    let edges: Vec<(&str, &str)> = policies
        .iter()
        .filter(|p| !p.source().is_empty() && !p.target().is_empty())
        .map(|p| (p.source(), p.target()))
        .collect();
    let mut nodes: BTreeSet<&str> = edges.iter().flat_map(|(s, t)| [*s, *t]).collect();
    let mut incoming: BTreeMap<&str, usize> = nodes.iter().map(|n| (*n, 0)).collect();
    for (_, t) in &edges {
        *incoming.entry(*t).or_default() += 1;
    }
    // Kahn's algorithm, taking the smallest name first so the order is stable.
    let mut ready: BTreeSet<&str> = incoming
        .iter()
        .filter(|(_, n)| **n == 0)
        .map(|(k, _)| *k)
        .collect();
    let mut out: Vec<String> = Vec::new();
    while let Some(next) = ready.pop_first() {
        out.push(next.to_string());
        nodes.remove(next);
        for (s, t) in &edges {
            if *s == next
                && let Some(n) = incoming.get_mut(t)
            {
                *n = n.saturating_sub(1);
                if *n == 0 && nodes.contains(t) {
                    ready.insert(*t);
                }
            }
        }
    }
    out.extend(nodes.iter().map(|n| n.to_string()));
    for e in extra {
        if !e.is_empty() && !out.iter().any(|o| o == e) {
            out.push(e.to_string());
        }
    }
    out
}

/// What kind of problem a chain has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Problem {
    /// Two policies lead out of one environment for the same trackers.
    Conflict,
    /// The policies lead back to an environment already passed.
    Cycle,
    /// The chain breaks: an environment no policy leads into although it leads on, or a policy the controller refused.
    Gap,
}

/// One finding about a chain, for humans.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Its kind.
    pub problem: Problem,
    /// What is wrong, in plain words.
    pub message: String,
}

/// The policies of one namespace that govern the same trackers (one selector).
#[derive(Clone, Debug, Serialize)]
pub struct Chain {
    /// The namespace.
    pub namespace: String,
    /// The selector, as text.
    pub selector: String,
    /// The environments in order.
    pub environments: Vec<String>,
    /// The hops, as (policy, source, target, needs approval, tests).
    pub hops: Vec<Hop>,
    /// What is wrong with it.
    pub findings: Vec<Finding>,
}

/// One hop of a chain.
#[derive(Clone, Debug, Serialize)]
pub struct Hop {
    /// The policy's name.
    pub policy: String,
    /// From.
    pub source: String,
    /// To.
    pub target: String,
    /// Whether a person approves it.
    pub approval: bool,
    /// Its gate tests.
    pub tests: Vec<String>,
    /// Why the controller refused it, when it did.
    pub invalid: Option<String>,
}

/// Groups the policies by namespace and selector and checks each group.
pub fn chains(policies: &[Policy]) -> Vec<Chain> {
    let mut groups: BTreeMap<(String, String), Vec<&Policy>> = BTreeMap::new();
    for p in policies {
        groups
            .entry((p.namespace().to_string(), p.selector_text()))
            .or_default()
            .push(p);
    }
    let mut out = Vec::new();
    for ((namespace, selector), group) in &groups {
        let owned: Vec<Policy> = group.iter().map(|p| (*p).clone()).collect();
        let mut findings = Vec::new();
        let mut by_source: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for p in group {
            by_source.entry(p.source()).or_default().push(p.name());
        }
        for (source, names) in &by_source {
            if names.len() > 1 {
                findings.push(Finding {
                    problem: Problem::Conflict,
                    message: format!(
                        "conflict: {} all lead out of {source} for the same trackers; the controller uses none of them",
                        names.join(", ")
                    ),
                });
            }
        }
        // A policy without a selector also governs trackers a selector picks.
        if selector != "all trackers"
            && let Some(all) = groups.get(&(namespace.clone(), "all trackers".into()))
        {
            for p in group {
                for q in all.iter().filter(|q| q.source() == p.source()) {
                    findings.push(Finding {
                        problem: Problem::Conflict,
                        message: format!(
                            "conflict: {} ({selector}) and {} (all trackers) both lead out of {} for trackers labelled {selector}",
                            p.name(),
                            q.name(),
                            p.source()
                        ),
                    });
                }
            }
        }
        if let Some(cycle) = find_cycle(&owned) {
            findings.push(Finding {
                problem: Problem::Cycle,
                message: format!(
                    "cycle: {} leads back to {}",
                    cycle.join(" -> "),
                    cycle.first().cloned().unwrap_or_default()
                ),
            });
        }
        let sources: BTreeSet<&str> = group.iter().map(|p| p.source()).collect();
        let targets: BTreeSet<&str> = group.iter().map(|p| p.target()).collect();
        let entries: Vec<&str> = sources.difference(&targets).copied().collect();
        if entries.len() > 1 {
            let ends: Vec<&str> = targets.difference(&sources).copied().collect();
            findings.push(Finding {
                problem: Problem::Gap,
                message: format!(
                    "gap: the chain is in {} pieces (entries {}; ends {}): no policy connects them",
                    entries.len(),
                    entries.join(", "),
                    ends.join(", ")
                ),
            });
        }
        let mut hops = Vec::new();
        for p in group {
            let invalid = p
                .condition("Valid")
                .filter(|c| c.status.as_deref() == Some("False"))
                .map(|c| c.message.or(c.reason).unwrap_or_default());
            if let Some(why) = &invalid {
                findings.push(Finding {
                    problem: Problem::Gap,
                    message: format!(
                        "gap: {} ({} -> {}) is invalid, so PRs stop in {}: {why}",
                        p.name(),
                        p.source(),
                        p.target(),
                        p.source()
                    ),
                });
            }
            hops.push(Hop {
                policy: p.name().to_string(),
                source: p.source().to_string(),
                target: p.target().to_string(),
                approval: p.needs_approval(),
                tests: p
                    .spec
                    .as_ref()
                    .map(|s| {
                        s.external_tests
                            .iter()
                            .map(|t| {
                                let name = t.name.clone().unwrap_or_default();
                                if t.required == Some(false) {
                                    format!("{name} (optional)")
                                } else {
                                    name
                                }
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                invalid,
            });
        }
        let environments = order(&owned, &[]);
        hops.sort_by_key(|h| {
            environments
                .iter()
                .position(|e| *e == h.source)
                .unwrap_or(usize::MAX)
        });
        out.push(Chain {
            namespace: namespace.clone(),
            selector: selector.clone(),
            environments,
            hops,
            findings,
        });
    }
    out
}

fn find_cycle(policies: &[Policy]) -> Option<Vec<String>> {
    let mut next: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for p in policies {
        next.entry(p.source()).or_default().push(p.target());
    }
    fn visit<'a>(
        node: &'a str,
        next: &BTreeMap<&'a str, Vec<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|n| *n == node) {
            return Some(path[at..].iter().map(|s| s.to_string()).collect());
        }
        if done.contains(node) {
            return None;
        }
        path.push(node);
        for n in next.get(node).into_iter().flatten() {
            if let Some(c) = visit(n, next, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node);
        None
    }
    let mut done = BTreeSet::new();
    for start in next.keys() {
        if let Some(c) = visit(start, &next, &mut Vec::new(), &mut done) {
            return Some(c);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn policy(name: &str, from: &str, to: &str) -> Policy {
        Policy::from_value(json!({
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {"sourceEnvironment": from, "targetEnvironment": to}
        }))
    }

    #[test]
    fn environments_follow_the_chain_not_the_alphabet() {
        let p = [
            policy("b", "staging", "prod"),
            policy("a", "dev", "staging"),
        ];
        assert_eq!(order(&p, &["qa"]), ["dev", "staging", "prod", "qa"]);
    }

    #[test]
    fn a_cycle_a_gap_and_a_conflict_are_each_named() {
        let cyc = chains(&[policy("a", "dev", "qa"), policy("b", "qa", "dev")]);
        assert_eq!(cyc[0].findings[0].problem, Problem::Cycle);
        let gap = chains(&[policy("a", "dev", "staging"), policy("b", "qa", "prod")]);
        assert_eq!(gap[0].findings[0].problem, Problem::Gap);
        let conflict = chains(&[policy("a", "dev", "staging"), policy("b", "dev", "qa")]);
        assert_eq!(conflict[0].findings[0].problem, Problem::Conflict);
    }
}

//! Finding the tracker a user means: a PR number, `owner/repo#N`, or a tracker name.

use crate::cluster::{Cluster, Error};
use crate::view::Tracker;

/// What the user typed, understood.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PrRef {
    /// `43` or `#43`.
    Number(i64),
    /// `acme/shop#43`.
    Qualified {
        /// Owner.
        owner: String,
        /// Repository.
        repo: String,
        /// Number.
        number: i64,
    },
    /// Anything else: a tracker's name.
    Name(String),
}

impl PrRef {
    /// Parses a reference.
    pub fn parse(text: &str) -> Self {
        let text = text.trim();
        if let Ok(n) = text.trim_start_matches('#').parse::<i64>() {
            return Self::Number(n);
        }
        if let Some((repo, number)) = text.rsplit_once('#')
            && let Some((owner, name)) = repo.split_once('/')
            && let Ok(number) = number.parse::<i64>()
        {
            return Self::Qualified {
                owner: owner.to_string(),
                repo: name.to_string(),
                number,
            };
        }
        Self::Name(text.to_string())
    }

    fn matches(&self, t: &Tracker) -> bool {
        let spec = t.spec.clone().unwrap_or_default();
        let repo = spec.repository.unwrap_or_default();
        match self {
            Self::Number(n) => spec.number == Some(*n),
            Self::Qualified {
                owner,
                repo: name,
                number,
            } => {
                spec.number == Some(*number)
                    && repo.owner.as_deref() == Some(owner.as_str())
                    && repo.name.as_deref() == Some(name.as_str())
            }
            Self::Name(n) => t.name() == n,
        }
    }
}

/// The one tracker in `namespace` that `reference` names.
pub async fn resolve(
    cluster: &Cluster,
    namespace: &str,
    reference: &str,
) -> Result<Tracker, Error> {
    let parsed = PrRef::parse(reference);
    if let PrRef::Name(name) = &parsed {
        return cluster.tracker(namespace, name).await;
    }
    let all = cluster.trackers(Some(namespace)).await?;
    pick(all, &parsed, reference, namespace)
}

/// Picks the tracker among `all`; a PR number shared by two repositories is ambiguous.
pub fn pick(
    all: Vec<Tracker>,
    parsed: &PrRef,
    reference: &str,
    namespace: &str,
) -> Result<Tracker, Error> {
    let mut found: Vec<Tracker> = all.into_iter().filter(|t| parsed.matches(t)).collect();
    match found.len() {
        0 => Err(Error::NotFound {
            what: format!("no tracker for PR {reference}"),
            scope: format!("in namespace {namespace}"),
        }),
        1 => Ok(found.remove(0)),
        _ => Err(Error::Usage(format!(
            "PR {reference} is ambiguous in namespace {namespace}: {}; name it as owner/repo#N or by tracker name",
            found
                .iter()
                .map(|t| format!("{} (tracker {})", t.pr(), t.name()))
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_numbers_qualified_prs_or_names() {
        assert_eq!(PrRef::parse("43"), PrRef::Number(43));
        assert_eq!(PrRef::parse("#43"), PrRef::Number(43));
        assert_eq!(
            PrRef::parse("acme/shop#43"),
            PrRef::Qualified {
                owner: "acme".into(),
                repo: "shop".into(),
                number: 43
            }
        );
        assert_eq!(PrRef::parse("shop-pr-43"), PrRef::Name("shop-pr-43".into()));
    }
}

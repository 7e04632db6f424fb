//! How the adapter promotes: which source of a multi-source application moves,
//! and whether to ask Argo CD for a sync and a refresh in the same write.

use std::convert::Infallible;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The annotation with which an Application names the source of a multi-source
/// app that promotions move (a source `name`, or a 0-based index); it takes
/// precedence over [`PromoteOptions::source`]. Single-source apps ignore both.
pub const PROMOTE_SOURCE: &str = "promotion.io/promote-source";

/// Which element of `spec.sources` a promotion moves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSelector {
    /// The source whose `name` is this.
    Name(String),
    /// The source at this 0-based position.
    Index(usize),
}

impl FromStr for SourceSelector {
    type Err = Infallible;

    /// All digits is an index, anything else a name.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Ok(match s.parse::<usize>() {
            Ok(i) => Self::Index(i),
            Err(_) => Self::Name(s.to_string()),
        })
    }
}

impl fmt::Display for SourceSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(n) => write!(f, "source named {n:?}"),
            Self::Index(i) => write!(f, "source at index {i}"),
        }
    }
}

/// Settings of [`crate::KubeArgoCd`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromoteOptions {
    /// Also start a sync `operation` at the new revision, for apps without auto-sync.
    pub sync: bool,
    /// Also set `argocd.argoproj.io/refresh: normal`, so Argo CD notices at once.
    pub refresh: bool,
    /// The source of a multi-source app to move, unless the app names one itself.
    pub source: Option<SourceSelector>,
    /// How long one API call may take before it counts as a transient failure.
    pub timeout: Duration,
}

impl Default for PromoteOptions {
    fn default() -> Self {
        Self {
            sync: false,
            refresh: false,
            source: None,
            timeout: Duration::from_secs(30),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_an_index_the_rest_a_name() {
        assert_eq!("1".parse(), Ok(SourceSelector::Index(1)));
        assert_eq!(" app ".parse(), Ok(SourceSelector::Name("app".into())));
    }
}

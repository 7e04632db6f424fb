//! Everything the stand-ins were asked and did, for assertions and for narration.
//! The GitHub stand-in keeps its labels and commit statuses here, so the journal
//! is the one place that says what GitHub would show.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;
use tokio::sync::broadcast;

/// How many entries the live feed buffers for a slow subscriber before it lags.
const FEED_CAPACITY: usize = 4096;

/// A run a CI stand-in started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Triggered {
    /// `jenkins`, `github-actions` or `gitlab`.
    pub provider: &'static str,
    /// The job as the script names it (Jenkins job path, workflow file, GitLab project path).
    pub job: String,
    /// The run's id as the controller ends up recording it: Jenkins `build:N`,
    /// the workflow run id, the GitLab pipeline id.
    pub run_id: String,
    /// The run's web page, on the stand-in's own base.
    pub url: String,
    /// The `PROMOTION_CORRELATION_ID` the trigger carried, if any.
    pub correlation_id: Option<String>,
    /// When the trigger arrived.
    pub at: SystemTime,
}

/// A run that became final in a CI stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finished {
    /// `jenkins`, `github-actions` or `gitlab`.
    pub provider: &'static str,
    /// The job, as in [`Triggered::job`].
    pub job: String,
    /// The run's id, as in [`Triggered::run_id`].
    pub run_id: String,
    /// Whether it passed.
    pub passed: bool,
    /// Whether it ended because it was cancelled (then `passed` is false).
    pub cancelled: bool,
    /// The moment it became final.
    pub at: SystemTime,
}

/// One commit status as posted to the GitHub stand-in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// `promotion/<environment>/<test>`.
    pub context: String,
    /// `pending`, `success`, `failure` or `error`.
    pub state: String,
    /// The link shown on the PR page.
    pub target_url: Option<String>,
    /// The short description.
    pub description: Option<String>,
}

/// A label added to or removed from a pull request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelChange {
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Pull request number.
    pub number: u64,
    /// The label.
    pub label: String,
    /// Added (true) or removed (false).
    pub added: bool,
    /// When.
    pub at: SystemTime,
}

/// A commit status posted on a commit.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PostedStatus {
    /// Repository owner.
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// The commit.
    pub sha: String,
    /// The status.
    pub status: CommitStatus,
    /// When.
    pub at: SystemTime,
}

/// A completion callback sent to the controller's webhook receiver.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallbackDelivery {
    /// `jenkins`, `github-actions` or `gitlab`.
    pub provider: &'static str,
    /// The job of the run.
    pub job: String,
    /// The run, as in [`Triggered::run_id`].
    pub run_id: String,
    /// The receiver's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Why the delivery failed, when it did not get an answer.
    pub error: Option<String>,
    /// When it was sent.
    pub at: SystemTime,
}

/// One entry of the live feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JournalEntry {
    /// A run started.
    Triggered(Triggered),
    /// A run became final.
    Finished(Finished),
    /// A label was added or removed.
    Label(LabelChange),
    /// A commit status was posted.
    CommitStatus(PostedStatus),
}

/// Everything the stand-ins were asked, for assertions and for the demo's narration.
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    feed: broadcast::Sender<JournalEntry>,
}

type PrKey = (String, String, u64);

#[derive(Default)]
struct State {
    triggers: Vec<Triggered>,
    finished: Vec<Finished>,
    labels: HashMap<PrKey, Vec<String>>,
    /// Every label request, repeated ones included.
    label_requests: Vec<LabelChange>,
    statuses: HashMap<String, Vec<CommitStatus>>,
    callbacks: Vec<CallbackDelivery>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("Journal")
            .field("triggers", &s.triggers.len())
            .field("finished", &s.finished.len())
            .field("callbacks", &s.callbacks.len())
            .finish_non_exhaustive()
    }
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        let (feed, _) = broadcast::channel(FEED_CAPACITY);
        Self {
            inner: Arc::new(Inner {
                state: Mutex::new(State::default()),
                feed,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, entry: JournalEntry) {
        // No subscriber is the normal case outside the demo.
        let _ = self.inner.feed.send(entry);
    }

    /// Every run started, in order.
    pub fn triggers(&self) -> Vec<Triggered> {
        self.lock().triggers.clone()
    }

    /// Every run that became final, in order.
    pub fn finished(&self) -> Vec<Finished> {
        self.lock().finished.clone()
    }

    /// How many runs were started, without copying them.
    pub fn trigger_count(&self) -> usize {
        self.lock().triggers.len()
    }

    /// How many runs became final, without copying them.
    pub fn finished_count(&self) -> usize {
        self.lock().finished.len()
    }

    /// The current labels of the pull request, in the order they were added.
    pub fn labels(&self, owner: &str, repo: &str, number: u64) -> Vec<String> {
        self.lock()
            .labels
            .get(&(owner.to_owned(), repo.to_owned(), number))
            .cloned()
            .unwrap_or_default()
    }

    /// Every request to add or remove a label of the pull request, in order,
    /// repeated ones included (a second add of a label it has counts too).
    pub fn label_requests(&self, owner: &str, repo: &str, number: u64) -> Vec<LabelChange> {
        self.lock()
            .label_requests
            .iter()
            .filter(|l| l.owner == owner && l.repo == repo && l.number == number)
            .cloned()
            .collect()
    }

    /// The commit statuses posted on `sha`, in the order posted.
    pub fn statuses(&self, sha: &str) -> Vec<CommitStatus> {
        self.lock().statuses.get(sha).cloned().unwrap_or_default()
    }

    /// The completion callbacks sent to the controller, in order.
    pub fn callbacks(&self) -> Vec<CallbackDelivery> {
        self.lock().callbacks.clone()
    }

    /// A live feed of new entries (the journal keeps every entry as well).
    pub fn subscribe(&self) -> broadcast::Receiver<JournalEntry> {
        self.inner.feed.subscribe()
    }

    pub(crate) fn record_trigger(&self, t: Triggered) {
        self.lock().triggers.push(t.clone());
        self.publish(JournalEntry::Triggered(t));
    }

    pub(crate) fn record_finished(&self, f: Finished) {
        self.lock().finished.push(f.clone());
        self.publish(JournalEntry::Finished(f));
    }

    pub(crate) fn record_callback(&self, c: CallbackDelivery) {
        self.lock().callbacks.push(c);
    }

    /// Adds labels the PR does not have yet; returns its labels afterwards.
    pub(crate) fn add_labels(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        labels: &[String],
    ) -> Vec<String> {
        let mut added = Vec::new();
        let at = SystemTime::now();
        let now = {
            let mut s = self.lock();
            for label in labels {
                s.label_requests.push(LabelChange {
                    owner: owner.to_owned(),
                    repo: repo.to_owned(),
                    number,
                    label: label.clone(),
                    added: true,
                    at,
                });
            }
            let set = s
                .labels
                .entry((owner.to_owned(), repo.to_owned(), number))
                .or_default();
            for l in labels {
                // GitHub matches label names without regard to case.
                if !set.iter().any(|x| x.eq_ignore_ascii_case(l)) {
                    set.push(l.clone());
                    added.push(l.clone());
                }
            }
            set.clone()
        };
        for label in added {
            self.publish(JournalEntry::Label(LabelChange {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
                number,
                label,
                added: true,
                at,
            }));
        }
        now
    }

    /// Removes a label; `None` when the PR does not have it.
    pub(crate) fn remove_label(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        label: &str,
    ) -> Option<Vec<String>> {
        let now = {
            let mut s = self.lock();
            s.label_requests.push(LabelChange {
                owner: owner.to_owned(),
                repo: repo.to_owned(),
                number,
                label: label.to_owned(),
                added: false,
                at: SystemTime::now(),
            });
            let set = s
                .labels
                .get_mut(&(owner.to_owned(), repo.to_owned(), number))?;
            let at = set.iter().position(|x| x.eq_ignore_ascii_case(label))?;
            set.remove(at);
            set.clone()
        };
        self.publish(JournalEntry::Label(LabelChange {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            number,
            label: label.to_owned(),
            added: false,
            at: SystemTime::now(),
        }));
        Some(now)
    }

    pub(crate) fn post_status(&self, owner: &str, repo: &str, sha: &str, status: CommitStatus) {
        self.lock()
            .statuses
            .entry(sha.to_owned())
            .or_default()
            .push(status.clone());
        self.publish(JournalEntry::CommitStatus(PostedStatus {
            owner: owner.to_owned(),
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            status,
            at: SystemTime::now(),
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_a_set_in_insertion_order_and_feed_the_subscribers() {
        let j = Journal::new();
        let mut feed = j.subscribe();
        let got = j.add_labels("acme", "shop", 1, &["b".into(), "a".into(), "B".into()]);
        assert_eq!(got, ["b", "a"]);
        assert_eq!(j.remove_label("acme", "shop", 1, "x"), None);
        assert_eq!(
            j.remove_label("acme", "shop", 1, "b"),
            Some(vec!["a".to_string()])
        );
        assert_eq!(j.labels("acme", "shop", 1), ["a"]);
        // Repeats and misses are requests all the same.
        let requests: Vec<(String, bool)> = j
            .label_requests("acme", "shop", 1)
            .into_iter()
            .map(|l| (l.label, l.added))
            .collect();
        assert_eq!(
            requests,
            [
                ("b".into(), true),
                ("a".into(), true),
                ("B".into(), true),
                ("x".into(), false),
                ("b".into(), false)
            ]
        );
        assert!(j.labels("acme", "shop", 2).is_empty());
        let mut seen = Vec::new();
        while let Ok(JournalEntry::Label(l)) = feed.try_recv() {
            seen.push((l.label, l.added));
        }
        assert_eq!(
            seen,
            [("b".into(), true), ("a".into(), true), ("b".into(), false)]
        );
    }
}

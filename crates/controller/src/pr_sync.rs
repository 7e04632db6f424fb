//! Makes a tracker's spec what GitHub says of its pull request: head SHA,
//! closed, copied labels. A webhook delivery and the periodic resync both only
//! say which PR to look at; what is applied is read from the GitHub API.
//!
//! Ordering without timestamps: the tracker is read first, the PR second, and the
//! write carries the tracker's resourceVersion, so a write based on a read of
//! GitHub older than another writer's is refused (409) and decided again with a
//! fresh read. Deliveries for one PR are serialised within the process.

use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use promotion_api::PullRequestTracker;
use promotion_core::ports::{PortError, PullRequestReader, PullRequestRef};
use promotion_core::pull_requests::{
    DesiredTracker, PullRequestError, RepositorySettings, desired_tracker, legacy_tracker_name,
    tracker_name,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, Weak};

/// The field manager of the tracker specs and labels written from GitHub's truth.
pub const FIELD_MANAGER: &str = "promotion-webhook";
/// Tries of read-GitHub-then-write when another writer keeps moving the tracker.
const TRIES: usize = 3;

/// What applying a PR's truth did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// A tracker was created.
    Created(String),
    /// The tracker's spec or labels changed.
    Updated(String),
    /// The tracker already said what GitHub says.
    Unchanged(String),
    /// The PR gets no tracker (closed before it was tracked, or from a fork); why.
    NotTracked(String),
}

/// Why the truth could not be applied; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// GitHub could not be read.
    #[error("reading {pr} from GitHub: {error}")]
    GitHub {
        /// `owner/repo#number`.
        pr: String,
        /// The port's error.
        error: PortError,
    },
    /// GitHub answers 404 for a PR it announced: the connection cannot see it.
    #[error(
        "GitHub answers 404 for {0}; check that the github connection's credentials can read the repository's pull requests"
    )]
    NotFound(String),
    /// The PR (or the repository settings) cannot make a tracker.
    #[error(transparent)]
    Invalid(#[from] PullRequestError),
    /// The Kubernetes API failed.
    #[error("tracker {name}: {error}")]
    Kubernetes {
        /// `namespace/name`.
        name: String,
        /// What the API server said.
        error: String,
    },
    /// Another writer kept changing the tracker.
    #[error("tracker {0} kept changing; try again")]
    Conflict(String),
}

/// Applies GitHub's truth about pull requests to their trackers.
pub struct PullRequestSync {
    client: Client,
    reader: Arc<dyn PullRequestReader>,
    repositories: Vec<RepositorySettings>,
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
}

impl PullRequestSync {
    /// Reads PRs with `reader` and writes trackers through `client` for `repositories`.
    pub fn new(
        client: Client,
        reader: Arc<dyn PullRequestReader>,
        repositories: Vec<RepositorySettings>,
    ) -> Self {
        Self {
            client,
            reader,
            repositories,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// The settings of `owner/name`, when it is configured.
    pub fn repository(&self, owner: &str, name: &str) -> Option<&RepositorySettings> {
        self.repositories.iter().find(|r| r.is(owner, name))
    }

    /// The configured repositories.
    pub fn repositories(&self) -> &[RepositorySettings] {
        &self.repositories
    }

    pub(crate) fn trackers(&self, namespace: &str) -> Api<PullRequestTracker> {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// One lock per tracker, dropped once nobody holds it.
    fn lock_for(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.retain(|_, w| w.strong_count() > 0);
        if let Some(lock) = locks.get(key).and_then(Weak::upgrade) {
            return lock;
        }
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        locks.insert(key.to_string(), Arc::downgrade(&lock));
        lock
    }

    /// Reads PR `number` of `repo` from GitHub and makes its tracker say the same.
    pub async fn sync(&self, repo: &RepositorySettings, number: u64) -> Result<Applied, SyncError> {
        let mut name = tracker_name(&repo.owner, &repo.name, number);
        // A tracker made before names held the owner goes on under its old name, if it is
        // this very PR's: another owner's same-named repository never takes it over.
        let legacy = legacy_tracker_name(&repo.name, number);
        if let Ok(None) = self.trackers(&repo.namespace).get_opt(&name).await
            && let Ok(Some(old)) = self.trackers(&repo.namespace).get_opt(&legacy).await
            && is_trackers_pr(&old, repo, number)
        {
            name = legacy;
        }
        let full = format!("{}/{name}", repo.namespace);
        let lock = self.lock_for(&full);
        let _held = lock.lock().await;
        let api = self.trackers(&repo.namespace);
        let pr_ref = PullRequestRef {
            owner: repo.owner.clone(),
            repo: repo.name.clone(),
            number,
        };
        let pr_name = format!("{}#{number}", repo.full_name());
        for _ in 0..TRIES {
            let existing = api.get_opt(&name).await.map_err(|e| kube_error(&full, e))?;
            // Read GitHub only after the tracker: the write below is then based on news at
            // least as fresh as anything already written.
            let pr = self
                .reader
                .pull_request(&pr_ref)
                .await
                .map_err(|error| SyncError::GitHub {
                    pr: pr_name.clone(),
                    error,
                })?
                .ok_or_else(|| SyncError::NotFound(pr_name.clone()))?;
            let desired = match desired_tracker(repo, &pr) {
                Ok(d) => DesiredTracker {
                    name: name.clone(),
                    ..d
                },
                Err(e @ PullRequestError::FromFork { .. }) => {
                    return Ok(Applied::NotTracked(e.to_string()));
                }
                Err(e) => return Err(e.into()),
            };
            let Some(existing) = existing else {
                if desired.spec.closed {
                    return Ok(Applied::NotTracked(format!(
                        "{pr_name} is closed and has no tracker"
                    )));
                }
                match apply(&api, &desired, None).await {
                    Ok(()) => return Ok(Applied::Created(full)),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(kube_error(&full, e)),
                }
            };
            if says_the_same(&existing, &desired) {
                return Ok(Applied::Unchanged(full));
            }
            match apply(&api, &desired, existing.resource_version()).await {
                Ok(()) => return Ok(Applied::Updated(full)),
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => return Err(kube_error(&full, e)),
            }
        }
        Err(SyncError::Conflict(full))
    }
}

/// Whether `tracker` follows PR `number` of `repo`.
fn is_trackers_pr(tracker: &PullRequestTracker, repo: &RepositorySettings, number: u64) -> bool {
    repo.is(
        &tracker.spec.repository.owner,
        &tracker.spec.repository.name,
    ) && u64::try_from(tracker.spec.number).ok() == Some(number)
}

fn kube_error(name: &str, e: kube::Error) -> SyncError {
    SyncError::Kubernetes {
        name: name.to_string(),
        error: e.to_string(),
    }
}

/// The label keys this field manager set on the tracker (from its managedFields).
fn owned_labels(tracker: &PullRequestTracker) -> BTreeSet<String> {
    tracker
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| m.manager.as_deref() == Some(FIELD_MANAGER))
        .filter_map(|m| m.fields_v1.as_ref())
        .filter_map(|f| f.0.pointer("/f:metadata/f:labels")?.as_object())
        .flat_map(|labels| labels.keys())
        .filter_map(|k| k.strip_prefix("f:"))
        .map(str::to_string)
        .collect()
}

/// Whether the tracker already has the desired spec and exactly the desired copied labels.
fn says_the_same(existing: &PullRequestTracker, desired: &DesiredTracker) -> bool {
    let labels = existing.metadata.labels.clone().unwrap_or_default();
    existing.spec == desired.spec
        && desired.labels.iter().all(|(k, v)| labels.get(k) == Some(v))
        && owned_labels(existing)
            .iter()
            .all(|k| desired.labels.contains_key(k))
}

/// Server-side apply of the spec and copied labels; with `resource_version`, only
/// onto that version of the tracker (a compare-and-swap).
async fn apply(
    api: &Api<PullRequestTracker>,
    desired: &DesiredTracker,
    resource_version: Option<String>,
) -> Result<(), kube::Error> {
    let mut tracker = PullRequestTracker::new(&desired.name, desired.spec.clone());
    tracker.metadata.labels = Some(desired.labels.clone()).filter(|l| !l.is_empty());
    tracker.metadata.resource_version = resource_version;
    let mut body = serde_json::to_value(&tracker).map_err(kube::Error::SerdeError)?;
    body["apiVersion"] = "promotion.io/v1alpha1".into();
    body["kind"] = "PullRequestTracker".into();
    if let Some(object) = body.as_object_mut() {
        object.remove("status");
    }
    api.patch(
        &desired.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map(|_| ())
}

/// How one resync of every repository went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResyncReport {
    /// Trackers created, updated, left unchanged, or PRs not tracked, by outcome.
    pub applied: Vec<Applied>,
    /// What failed, one line each.
    pub failures: Vec<String>,
}

impl PullRequestSync {
    /// Lists the open PRs of every repository and its trackers, and syncs each PR whose
    /// tracker is missing, differs, or is open while its PR is not in the list. Lost
    /// deliveries are caught here; PRs that agree cost no read beyond the list.
    pub async fn resync(&self) -> ResyncReport {
        let mut report = ResyncReport::default();
        for repo in &self.repositories {
            if let Err(e) = self.resync_repository(repo, &mut report).await {
                report.failures.push(e);
            }
        }
        report
    }

    async fn resync_repository(
        &self,
        repo: &RepositorySettings,
        report: &mut ResyncReport,
    ) -> Result<(), String> {
        let open = self
            .reader
            .open_pull_requests(&repo.owner, &repo.name)
            .await
            .map_err(|e| {
                format!(
                    "listing the open pull requests of {}: {e}",
                    repo.full_name()
                )
            })?;
        let trackers = self
            .trackers(&repo.namespace)
            .list(&Default::default())
            .await
            .map_err(|e| format!("listing the trackers in {}: {e}", repo.namespace))?;
        // Only the trackers sync itself writes (by name): a hand-made one is left alone.
        let ours: BTreeMap<u64, PullRequestTracker> = trackers
            .items
            .into_iter()
            .filter(|t| repo.is(&t.spec.repository.owner, &t.spec.repository.name))
            .filter_map(|t| Some((u64::try_from(t.spec.number).ok()?, t)))
            .filter(|(n, t)| {
                t.name_any() == tracker_name(&repo.owner, &repo.name, *n)
                    || t.name_any() == legacy_tracker_name(&repo.name, *n)
            })
            .collect();
        let mut look: BTreeSet<u64> = BTreeSet::new();
        for pr in &open {
            let agrees = match (ours.get(&pr.number), desired_tracker(repo, pr)) {
                (Some(t), Ok(d)) => says_the_same(
                    t,
                    &DesiredTracker {
                        name: t.name_any(),
                        ..d
                    },
                ),
                // A fork's PR is skipped by sync; no need to read it again.
                (None, Err(PullRequestError::FromFork { .. })) => true,
                _ => false,
            };
            if !agrees {
                look.insert(pr.number);
            }
        }
        let listed: BTreeSet<u64> = open.iter().map(|p| p.number).collect();
        look.extend(
            ours.iter()
                .filter(|(n, t)| !t.spec.closed && !listed.contains(n))
                .map(|(n, _)| *n),
        );
        for number in look {
            match self.sync(repo, number).await {
                Ok(applied) => report.applied.push(applied),
                Err(e) => report.failures.push(e.to_string()),
            }
        }
        Ok(())
    }
}

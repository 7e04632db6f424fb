//! The ports: how the domain reaches CI systems, Argo CD, GitHub, events and
//! its own persisted state. Adapters implement these; no HTTP or SDK type here.

use async_trait::async_trait;
use promotion_api::{ApplicationRef, Provider, PullRequestTracker, PullRequestTrackerStatus};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Everything a CI system needs to start one gate test.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TriggerRequest {
    /// Which CI system.
    pub provider: Provider,
    /// The configured connection to use; the provider's default when `None`.
    pub connection: Option<String>,
    /// Jenkins job path, workflow file, or GitLab project path.
    pub job: String,
    /// Branch or tag, where the provider needs one.
    pub git_ref: Option<String>,
    /// Parameters with every variable already substituted.
    pub parameters: BTreeMap<String, String>,
    /// Sent along with the trigger so that `find` can adopt the run after a restart.
    pub correlation_id: String,
}

/// A started run, as the CI system names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunHandle {
    /// The CI system's id of the run (Jenkins queue item or build, workflow run id, pipeline id).
    pub run_id: String,
    /// A link for humans, when known.
    pub url: Option<String>,
}

/// Enough to address an existing run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunRef {
    /// Which CI system.
    pub provider: Provider,
    /// The configured connection; the provider's default when `None`.
    pub connection: Option<String>,
    /// The job the run belongs to.
    pub job: String,
    /// The CI system's id of the run.
    pub run_id: String,
    /// The correlation id the run must carry to be acted on (read, cancelled): the
    /// controller's own, recomputed from the tracker. `None`: not checked.
    pub correlation_id: Option<String>,
}

/// The error of a run that does not carry the correlation id it must: another tracker's
/// run (or no tracker's), which is neither followed nor cancelled.
pub fn not_ours(run: &RunRef, carried: Option<&str>) -> PortError {
    PortError::permanent(format!(
        "run {} of {} does not carry correlation id {} (it carries {}): it is not this tracker's run, so it is neither followed nor cancelled",
        run.run_id,
        run.job,
        run.correlation_id.as_deref().unwrap_or_default(),
        carried.unwrap_or("none")
    ))
}

/// What `find` concluded about the run a trigger request may have started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    /// The CI system has the run: adopt it.
    Run(RunHandle),
    /// Every run of the job created at or after `since` was seen, and none carries
    /// the correlation id: the trigger started nothing (yet).
    Absent,
    /// The search stopped before it reached `since` (a page cap, a listing limit);
    /// the reason says how far it got. Never a ground for triggering again.
    NotSure(String),
}

/// Where a run is, in the domain's words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RunState {
    /// Accepted, not started.
    Pending,
    /// Executing.
    Running,
    /// Finished successfully.
    Passed,
    /// Finished unsuccessfully.
    Failed,
    /// Cancelled.
    Cancelled,
    /// The CI system gave up on it for taking too long.
    TimedOut,
}

impl RunState {
    /// Whether the run will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Passed | Self::Failed | Self::Cancelled | Self::TimedOut
        )
    }
}

/// What the CI system says about a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunStatus {
    /// The state.
    pub state: RunState,
    /// A link for humans, when known (it can appear only once the run started).
    pub url: Option<String>,
    /// The CI system's own words (result, conclusion), for humans.
    pub message: Option<String>,
    /// The id of the run when the CI system moved it to a new one (Jenkins: queue item -> build).
    pub run_id: Option<String>,
}

/// How an outside call failed; decides whether and how to retry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// Worth retrying with backoff (5xx, connection refused, rate limits).
    Transient,
    /// Retrying will not help (401, 403, 404, invalid request, malformed answer).
    Permanent,
    /// A trigger whose outcome is unknown: it may have started a run. Never resend
    /// blindly; ask `find` first.
    Ambiguous,
}

/// An error from an outside system, without credentials in it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct PortError {
    /// How to react.
    pub kind: ErrorKind,
    /// What went wrong, naming the connection and the call.
    pub message: String,
    /// The server asked us to wait this long (Retry-After, rate-limit reset).
    pub retry_after: Option<Duration>,
}

impl PortError {
    /// A transient failure.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Transient,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Permanent,
            message: message.into(),
            retry_after: None,
        }
    }
    /// A trigger whose outcome is unknown.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Ambiguous,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Starts, follows, finds and cancels gate tests in a CI system.
#[async_trait]
pub trait TestRunner: Send + Sync {
    /// Starts one run. Must not retry on its own after the request may have reached the server.
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError>;
    /// The current state of a run.
    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError>;
    /// The run started with `req.correlation_id`, searching back to `since` (the
    /// earliest time the run can have been created, clock skew included). Answers
    /// [`Found::Absent`] only after seeing every run of the job created since then.
    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError>;
    /// Cancels a run; cancelling a finished run is not an error.
    async fn cancel(&self, run: &RunRef) -> Result<(), PortError>;
    /// Whether `find` can ever see the runs `req` starts (the CI configuration shows the
    /// correlation id). `Err` with [`ErrorKind::Permanent`]: it cannot, the message says
    /// why; any other error: it could not be checked now. Runners that need no check say Ok.
    async fn check_findable(&self, _req: &TriggerRequest) -> Result<(), PortError> {
        Ok(())
    }
}

/// Argo CD's sync status of an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// Live state matches the target revision.
    Synced,
    /// Live state differs.
    OutOfSync,
    /// Not known (yet).
    Unknown,
}

/// Argo CD's health of an application.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthStatus {
    /// Healthy.
    Healthy,
    /// Still rolling out.
    Progressing,
    /// Failing.
    Degraded,
    /// Paused.
    Suspended,
    /// Resources missing.
    Missing,
    /// Not known (yet).
    Unknown,
}

/// What Argo CD reports about an application.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStatus {
    /// Sync status.
    pub sync: SyncStatus,
    /// Health status.
    pub health: HealthStatus,
    /// The revision(s) the application is synced to.
    pub revisions: Vec<String>,
    /// The phase of the last sync operation (Running, Succeeded, Failed, Error), if any.
    pub operation_phase: Option<String>,
    /// The application's opt-in annotation (`promotion.io/allow-promotion-from`), if any:
    /// the engine uses the rest only for a namespace it names ([`crate::access::app_readable_by`]).
    pub opt_in: Option<String>,
}

impl AppStatus {
    /// Synced and Healthy at `revision` (a full or abbreviated commit SHA).
    pub fn deployed_at(&self, revision: &str) -> bool {
        self.sync == SyncStatus::Synced
            && self.health == HealthStatus::Healthy
            && self.revisions.iter().any(|r| same_revision(r, revision))
    }
}

/// Two commit SHAs name the same commit when one is a prefix of the other
/// (a 7-character short SHA against a full one), ignoring case.
pub fn same_revision(a: &str, b: &str) -> bool {
    let (a, b) = (a.to_ascii_lowercase(), b.to_ascii_lowercase());
    !a.is_empty() && !b.is_empty() && (a.starts_with(&b) || b.starts_with(&a))
}

/// On whose behalf an application is moved, so the adapter can check the app opted in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PromotionRequest {
    /// The namespace of the policy that asks.
    pub policy_namespace: String,
    /// The policy's name.
    pub policy: String,
    /// The environment the application belongs to.
    pub target_environment: String,
    /// The revision to deploy.
    pub revision: String,
    /// The holder id of the tracker that promotes (empty: none), written on the app with
    /// the revision in [`PROMOTED_ANNOTATION`] so a promotion whose record a crash lost is
    /// found again.
    pub tracker: String,
}

/// Reads and moves Argo CD applications.
#[async_trait]
pub trait ArgoCdClient: Send + Sync {
    /// The application's sync, health and revision.
    async fn application_status(&self, app: &ApplicationRef) -> Result<AppStatus, PortError>;
    /// Points the application at `req.revision`. Idempotent: pointing it at the
    /// revision it already has changes nothing.
    async fn promote(&self, app: &ApplicationRef, req: &PromotionRequest) -> Result<(), PortError>;
    /// The last promotion written on `app` (its [`PROMOTED_ANNOTATION`]: `<holder id>@<revision>`).
    async fn promotion_marker(&self, app: &ApplicationRef) -> Result<Option<String>, PortError>;
    /// Who holds `app` (the [`HELD_BY_ANNOTATION`] on it), if anyone.
    async fn holder(&self, app: &ApplicationRef) -> Result<Option<String>, PortError>;
    /// Takes the hold of `app` for `holder` when nobody holds it, `holder` already does, or
    /// the current holder is `breaking` (a hold whose tracker left). The write carries the
    /// version that was read, so of two racing callers only one wins.
    async fn acquire(
        &self,
        app: &ApplicationRef,
        holder: &str,
        breaking: Option<&str>,
    ) -> Result<Hold, PortError>;
    /// Gives up the hold of `app` if `holder` has it; anything else is left alone.
    async fn release(&self, app: &ApplicationRef, holder: &str) -> Result<(), PortError>;
}

/// The annotation on an Argo CD Application naming the tracker that holds its
/// environment: `<namespace>/<name>/<uid>`.
pub const HELD_BY_ANNOTATION: &str = "promotion.io/held-by";

/// The annotation the promotion's own patch writes on an Argo CD Application:
/// `<holder id>@<revision>`, atomically with the revision it names.
pub const PROMOTED_ANNOTATION: &str = "promotion.io/promoted";

/// What an attempt to hold an application found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// The caller holds it now.
    Acquired,
    /// Someone else does (their holder id).
    HeldBy(String),
}

/// Read access to the trackers the controller knows, for decisions that involve
/// more than one tracker (who is ahead in a queue, whether a hold's tracker still exists).
pub trait TrackerDirectory: Send + Sync {
    /// Every known tracker, in any namespace.
    fn trackers(&self) -> Vec<Arc<PullRequestTracker>>;
    /// Whether trackers of `namespace` are known here at all: a hold by a tracker this
    /// directory cannot see is never judged stale.
    fn sees_namespace(&self, _namespace: &str) -> bool {
        true
    }
}

/// A GitHub repository and pull request.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PullRequestRef {
    /// Owner (user or organisation).
    pub owner: String,
    /// Repository name.
    pub repo: String,
    /// Pull request number.
    pub number: u64,
}

/// The state of a commit status on GitHub.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommitState {
    /// Running.
    Pending,
    /// Passed.
    Success,
    /// Failed.
    Failure,
    /// Could not run.
    Error,
}

/// One commit status: a gate test shown on the PR page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitStatus {
    /// `promotion/<environment>/<test>`.
    pub context: String,
    /// The state.
    pub state: CommitState,
    /// A link to the run.
    pub target_url: Option<String>,
    /// A short description (GitHub keeps 140 characters).
    pub description: String,
}

/// Labels pull requests and shows gate results on them.
#[async_trait]
pub trait GitHubClient: Send + Sync {
    /// Adds a label; adding one the PR already has is not an error.
    async fn add_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError>;
    /// Removes a label; removing one the PR does not have is not an error.
    async fn remove_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError>;
    /// Sets a commit status on `sha`.
    async fn set_commit_status(
        &self,
        pr: &PullRequestRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), PortError>;
}

/// Normal or Warning, as Kubernetes Events are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Something a person would want to see.
    Normal,
    /// Something that went wrong.
    Warning,
}

/// A transition worth telling a person about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DomainEvent {
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason, e.g. `Promoted`.
    pub reason: String,
    /// One human sentence.
    pub note: String,
}

/// Publishes events about the tracker being reconciled.
#[async_trait]
pub trait EventRecorder: Send + Sync {
    /// Best effort: an event that cannot be published is logged, never fatal.
    async fn publish(&self, event: DomainEvent);
}

/// Why persisting the tracker's status failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// Someone else wrote the tracker since we read it: re-read and decide again.
    #[error("the tracker changed since it was read")]
    Conflict,
    /// The tracker is gone.
    #[error("the tracker no longer exists")]
    Gone,
    /// Anything else (network, API server).
    #[error("writing the tracker's status: {0}")]
    Other(String),
}

/// Persists the tracker's status, refusing to overwrite a newer version.
///
/// Every side effect that must happen once (a trigger, a promotion) is preceded by
/// a save of the intent, so the store is what makes the engine exactly-once.
#[async_trait]
pub trait TrackerStore: Send + Sync {
    /// Replaces the status if the tracker is still at the version last read or saved.
    async fn save(&self, status: &PullRequestTrackerStatus) -> Result<(), StoreError>;
}

/// A pull request as GitHub has it now: the truth a tracker's spec follows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PullRequestState {
    /// The pull request number.
    pub number: u64,
    /// The commit the PR's head branch points at.
    pub head_sha: String,
    /// Open (false once closed or merged).
    pub open: bool,
    /// Merged (a merged PR is also closed).
    pub merged: bool,
    /// The names of its labels.
    pub labels: Vec<String>,
    /// `owner/name` of the repository the head branch lives in; `None` when that
    /// repository was deleted. Differs from the base repository for a fork.
    pub head_repository: Option<String>,
}

/// Reads pull requests from GitHub: webhooks only say when to look.
#[async_trait]
pub trait PullRequestReader: Send + Sync {
    /// One pull request, or `None` when GitHub answers 404 (absent or not visible).
    async fn pull_request(
        &self,
        pr: &PullRequestRef,
    ) -> Result<Option<PullRequestState>, PortError>;
    /// Every open pull request of `owner/repo`, all pages read.
    async fn open_pull_requests(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Vec<PullRequestState>, PortError>;
}

//! Ports whose adapter can be replaced while the controller runs: a rotated
//! Secret rebuilds the adapter, and calls in flight finish on the old one.

use async_trait::async_trait;
use promotion_core::ports::{
    CommitStatus, Found, GitHubClient, PortError, PullRequestReader, PullRequestRef,
    PullRequestState, RunHandle, RunRef, RunStatus, TestRunner, TriggerRequest,
};
use std::sync::{Arc, RwLock};
use std::time::SystemTime;

/// An adapter behind a lock, swapped as a whole.
pub struct Swappable<T: ?Sized>(RwLock<Arc<T>>);

impl<T: ?Sized> Swappable<T> {
    /// Starts with `inner`.
    pub fn new(inner: Arc<T>) -> Self {
        Self(RwLock::new(inner))
    }

    /// Replaces the adapter; calls already running keep the old one.
    pub fn swap(&self, inner: Arc<T>) {
        if let Ok(mut guard) = self.0.write() {
            *guard = inner;
        }
    }

    fn current(&self) -> Arc<T> {
        match self.0.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}

#[async_trait]
impl TestRunner for Swappable<dyn TestRunner> {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        self.current().trigger(req).await
    }
    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        self.current().status(run).await
    }
    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        self.current().find(req, since).await
    }
    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        self.current().cancel(run).await
    }
    async fn check_findable(&self, req: &TriggerRequest) -> Result<(), PortError> {
        self.current().check_findable(req).await
    }
}

#[async_trait]
impl GitHubClient for Swappable<dyn GitHubClient> {
    async fn add_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        self.current().add_label(pr, label).await
    }
    async fn remove_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        self.current().remove_label(pr, label).await
    }
    async fn set_commit_status(
        &self,
        pr: &PullRequestRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), PortError> {
        self.current().set_commit_status(pr, sha, status).await
    }
}

#[async_trait]
impl PullRequestReader for Swappable<dyn PullRequestReader> {
    async fn pull_request(
        &self,
        pr: &PullRequestRef,
    ) -> Result<Option<PullRequestState>, PortError> {
        self.current().pull_request(pr).await
    }
    async fn open_pull_requests(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Vec<PullRequestState>, PortError> {
        self.current().open_pull_requests(owner, repo).await
    }
}

/// A connection that cannot be used yet (missing or malformed Secret): every call
/// says why, as a transient error, so fixing the Secret heals it without a restart.
#[derive(Clone, Debug)]
pub struct Unavailable(pub String);

impl Unavailable {
    fn err<T>(&self) -> Result<T, PortError> {
        Err(PortError::transient(self.0.clone()))
    }
}

#[async_trait]
impl TestRunner for Unavailable {
    async fn trigger(&self, _: &TriggerRequest) -> Result<RunHandle, PortError> {
        // Nothing was sent, so this is a clean refusal, not an ambiguous trigger.
        self.err()
    }
    async fn status(&self, _: &RunRef) -> Result<RunStatus, PortError> {
        self.err()
    }
    async fn find(&self, _: &TriggerRequest, _: SystemTime) -> Result<Found, PortError> {
        self.err()
    }
    async fn check_findable(&self, _: &TriggerRequest) -> Result<(), PortError> {
        self.err()
    }
    async fn cancel(&self, _: &RunRef) -> Result<(), PortError> {
        self.err()
    }
}

#[async_trait]
impl GitHubClient for Unavailable {
    async fn add_label(&self, _: &PullRequestRef, _: &str) -> Result<(), PortError> {
        self.err()
    }
    async fn remove_label(&self, _: &PullRequestRef, _: &str) -> Result<(), PortError> {
        self.err()
    }
    async fn set_commit_status(
        &self,
        _: &PullRequestRef,
        _: &str,
        _: &CommitStatus,
    ) -> Result<(), PortError> {
        self.err()
    }
}

#[async_trait]
impl PullRequestReader for Unavailable {
    async fn pull_request(
        &self,
        _: &PullRequestRef,
    ) -> Result<Option<PullRequestState>, PortError> {
        self.err()
    }
    async fn open_pull_requests(
        &self,
        _: &str,
        _: &str,
    ) -> Result<Vec<PullRequestState>, PortError> {
        self.err()
    }
}

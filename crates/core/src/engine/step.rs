//! What one reconcile works with: the tracker, the status being built, and the
//! helpers every phase uses to save it and tell people about it.

use crate::conditions;
use crate::policy::parse_duration;
use crate::policy_cache::{CachedPolicy, LookupError, PolicyCache};
use crate::ports::{DomainEvent, EventRecorder, EventType, StoreError, TrackerStore};
use crate::variables::Variables;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{GateSnapshot, PullRequestTracker, PullRequestTrackerStatus, TestRun};
use std::sync::Arc;
use std::time::Duration;

/// What one reconcile works with.
pub(super) struct Step<'a> {
    pub(super) tracker: &'a PullRequestTracker,
    pub(super) status: PullRequestTrackerStatus,
    pub(super) policies: &'a PolicyCache,
    pub(super) store: &'a dyn TrackerStore,
    pub(super) events: &'a dyn EventRecorder,
    /// The fingerprint of the status as saved (read, or last written by this reconcile).
    pub(super) saved_base: u64,
    /// The runs as saved, to tell kept progress from what is in the store.
    pub(super) saved_runs: Vec<TestRun>,
    /// This reconcile already saw the gate's application run the SHA, just now.
    pub(super) deployed_checked: bool,
}

impl Step<'_> {
    pub(super) fn generation(&self) -> Option<i64> {
        self.tracker.metadata.generation
    }

    pub(super) fn annotation(&self, key: &str) -> Option<&String> {
        self.tracker
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(key))
    }

    pub(super) fn environment(&self) -> String {
        self.status
            .current_environment
            .clone()
            .unwrap_or_else(|| self.tracker.spec.environment.clone())
    }

    pub(super) fn lookup(&self) -> Result<Arc<CachedPolicy>, LookupError> {
        let labels = self.tracker.metadata.labels.clone().unwrap_or_default();
        let ns = self.tracker.metadata.namespace.clone().unwrap_or_default();
        self.policies.lookup(&ns, &self.environment(), &labels)
    }

    /// Whether the current environment ends the tracker's chain (see [`PolicyCache::chain_end`]).
    pub(super) fn chain_end(&self) -> Result<(), String> {
        let labels = self.tracker.metadata.labels.clone().unwrap_or_default();
        let ns = self.tracker.metadata.namespace.clone().unwrap_or_default();
        self.policies.chain_end(
            &ns,
            &self.environment(),
            &self.tracker.spec.environment,
            &labels,
        )
    }

    /// The variables of the hop a gate snapshot describes.
    pub(super) fn vars_for(&self, gate: &GateSnapshot) -> Variables {
        Variables::for_hop(self.tracker, &gate.source, &gate.target)
    }

    /// How this tracker names itself on an Application it holds: `namespace/name/uid`.
    pub(super) fn holder_id(&self) -> String {
        let m = &self.tracker.metadata;
        format!(
            "{}/{}/{}",
            m.namespace.as_deref().unwrap_or_default(),
            m.name.as_deref().unwrap_or_default(),
            m.uid.as_deref().unwrap_or_default()
        )
    }

    /// When Deploying gives up: `timeout` (a policy's deployTimeout) or `default` from now.
    pub(super) fn deadline(&self, timeout: Option<&str>, default: Duration) -> Time {
        let limit = timeout
            .and_then(|t| parse_duration(t).ok())
            .unwrap_or(default);
        Time(Timestamp::now() + limit)
    }

    pub(super) async fn save(&mut self) -> Result<(), StoreError> {
        self.status.observed_generation = self.generation();
        self.store.save(&self.status).await?;
        self.saved_base = super::unsaved::fingerprint(&self.status);
        self.saved_runs.clone_from(&self.status.test_runs);
        Ok(())
    }

    /// Whether the runs moved since they were saved (progress kept in memory only).
    pub(super) fn runs_unsaved(&self) -> bool {
        self.status.test_runs != self.saved_runs
    }

    pub(super) async fn event(&self, type_: EventType, reason: &str, note: impl Into<String>) {
        self.events
            .publish(DomainEvent {
                type_,
                reason: reason.into(),
                note: note.into(),
            })
            .await;
    }

    pub(super) fn condition(
        &mut self,
        type_: &str,
        ok: bool,
        reason: &str,
        message: impl Into<String>,
    ) {
        let g = self.generation();
        conditions::set(&mut self.status.conditions, type_, ok, reason, message, g);
    }

    pub(super) fn pr_label(&self) -> String {
        let s = &self.tracker.spec;
        format!("{}/{}#{}", s.repository.owner, s.repository.name, s.number)
    }

    pub(super) fn short_sha(&self) -> String {
        self.tracker.spec.head_sha.chars().take(7).collect()
    }
}

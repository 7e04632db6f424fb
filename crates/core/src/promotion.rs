//! PromotionExecutor: moves the PR to the target environment, one recorded step at a time.

use crate::policy_cache::CachedPolicy;
use crate::ports::{ArgoCdClient, GitHubClient, PortError, PromotionRequest, PullRequestRef};
use crate::variables::{VariableError, Variables};
use promotion_api::{ApplicationRef, PendingPromotion, PullRequestTracker};

/// The promotion that a passed gate starts, with every name substituted.
pub fn begin(
    tracker: &PullRequestTracker,
    policy: &CachedPolicy,
    vars: &Variables,
    promoted_by: &str,
) -> Result<PendingPromotion, VariableError> {
    let app = &policy.spec.promotion.application;
    Ok(PendingPromotion {
        source: policy.spec.source_environment.clone(),
        target: policy.spec.target_environment.clone(),
        policy: policy.name.clone(),
        revision: tracker.spec.head_sha.clone(),
        application: ApplicationRef {
            cluster: vars.substitute(&app.cluster)?,
            namespace: vars.substitute(&app.namespace)?,
            name: vars.substitute(&app.name)?,
        },
        label: policy
            .spec
            .promotion
            .github_label
            .as_deref()
            .map(|l| vars.substitute(l))
            .transpose()?,
        promoted_by: promoted_by.to_string(),
        application_updated: false,
    })
}

/// The PR a tracker follows.
pub fn pull_request(tracker: &PullRequestTracker) -> PullRequestRef {
    PullRequestRef {
        owner: tracker.spec.repository.owner.clone(),
        repo: tracker.spec.repository.name.clone(),
        number: u64::try_from(tracker.spec.number).unwrap_or_default(),
    }
}

/// Runs the outside steps of a promotion; each is idempotent, so redoing one after
/// a crash changes nothing.
pub struct PromotionExecutor<'a> {
    argo: &'a dyn ArgoCdClient,
    github: &'a dyn GitHubClient,
}

impl<'a> PromotionExecutor<'a> {
    /// An executor over the two ports it moves.
    pub fn new(argo: &'a dyn ArgoCdClient, github: &'a dyn GitHubClient) -> Self {
        Self { argo, github }
    }

    /// Step 1: point the target environment's application at the revision.
    pub async fn update_application(
        &self,
        pending: &PendingPromotion,
        policy_namespace: &str,
        tracker: &str,
    ) -> Result<(), PortError> {
        let req = PromotionRequest {
            tracker: tracker.to_string(),
            policy_namespace: policy_namespace.to_string(),
            policy: pending.policy.clone(),
            target_environment: pending.target.clone(),
            revision: pending.revision.clone(),
        };
        self.argo.promote(&pending.application, &req).await
    }

    /// Step 2: label the PR (nothing to do without a label).
    pub async fn label(
        &self,
        pending: &PendingPromotion,
        pr: &PullRequestRef,
    ) -> Result<(), PortError> {
        match &pending.label {
            Some(label) => self.github.add_label(pr, label).await,
            None => Ok(()),
        }
    }
}

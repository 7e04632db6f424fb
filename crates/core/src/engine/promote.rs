//! Promoting: move the PR to the target environment, one recorded step at a time.

use super::{Engine, EngineError, Next, Step};
use super::backoff;
use crate::conditions::{self, types};
use crate::policy_cache::CachedPolicy;
use crate::ports::EventType;
use crate::promotion::{self, PromotionExecutor};
use crate::records::{build_promotion_record, summarize};
use crate::variables::Variables;
use promotion_api::Phase;

impl Engine {
    pub(super) async fn begin_promotion(
        &self,
        s: &mut Step<'_>,
        policy: &CachedPolicy,
        vars: &Variables,
        promoted_by: &str,
    ) -> Result<Next, EngineError> {
        match promotion::begin(s.tracker, policy, vars, promoted_by) {
            Ok(pending) => {
                s.status.message =
                    Some(format!("promoting {} to {}", s.short_sha(), pending.target));
                s.status.pending_promotion = Some(pending);
                s.status.phase = Some(Phase::Promoting);
                s.save().await?;
                Ok(Next::Continue)
            }
            Err(e) => self.fail(s, "PolicyInvalid", vec![e.to_string()]).await,
        }
    }


    pub(super) async fn promoting(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let Some(mut pending) = s.status.pending_promotion.clone() else {
            // Promoting without a recorded promotion cannot be resumed: judge the gate again.
            s.status.phase = Some(Phase::Testing);
            s.save().await?;
            return Ok(Next::Continue);
        };
        let exec = PromotionExecutor::new(self.ports.argo.as_ref(), self.ports.github.as_ref());
        let ns = s.tracker.metadata.namespace.clone().unwrap_or_default();
        if !pending.application_updated {
            if let Err(e) = exec.update_application(&pending, &ns).await {
                let msg = format!(
                    "cannot point {}/{} at {}: {e}",
                    pending.application.namespace, pending.application.name, pending.revision
                );
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg.clone());
                    s.condition(types::READY, false, "PromotionBlocked", msg.clone());
                    s.save().await?;
                    s.event(EventType::Warning, "PromotionBlocked", msg).await;
                }
                return Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))));
            }
            pending.application_updated = true;
            s.status.pending_promotion = Some(pending.clone());
            s.save().await?;
        }
        let pr = promotion::pull_request(s.tracker);
        if let Err(e) = exec.label(&pending, &pr).await {
            if e.kind == crate::ports::ErrorKind::Transient {
                let msg = format!("labelling {}: {e}; retrying", s.pr_label());
                if s.status.message.as_deref() != Some(msg.as_str()) {
                    s.status.message = Some(msg);
                    s.save().await?;
                }
                return Ok(Next::Wait(Some(backoff(
                    self.config.poll_interval,
                    e.retry_after,
                ))));
            }
            // The application already moved; a label GitHub refuses must not undo that.
            s.event(
                EventType::Warning,
                "LabelFailed",
                format!("{}: {e}", s.pr_label()),
            )
            .await;
        }
        let record = build_promotion_record(&pending, &s.status.test_runs);
        let gate = summarize(&s.status.test_runs);
        s.status.promotions.push(record);
        s.status.current_environment = Some(pending.target.clone());
        s.status.application = Some(pending.application.clone());
        s.status.test_runs.clear();
        s.status.policy = None;
        s.status.attempt = None;
        s.status.gate_started_at = None;
        s.status.pending_promotion = None;
        s.status.phase = Some(Phase::Promoted);
        let msg = format!(
            "promoted {} from {} to {} by {}; waiting for Argo CD to sync {}",
            s.short_sha(),
            pending.source,
            pending.target,
            pending.promoted_by,
            pending.application.name
        );
        s.status.message = Some(msg);
        let note = format!(
            "Promoted {} ({}) from {} to {} (policy {}, by {}); gate: {gate}",
            s.pr_label(),
            s.short_sha(),
            pending.source,
            pending.target,
            pending.policy,
            pending.promoted_by
        );
        s.condition(types::PROMOTED, true, "Promoted", note.clone());
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::SYNCED,
            "Deploying",
            format!("waiting for {}", pending.application.name),
            g,
        );
        conditions::set_unknown(
            &mut s.status.conditions,
            types::TESTS_PASSED,
            "NotStarted",
            format!("the gate of {} has not started", pending.target),
            g,
        );
        s.condition(
            types::READY,
            true,
            "Progressing",
            "promoted; deploying in the next environment",
        );
        s.save().await?;
        s.event(EventType::Normal, "Promoted", note).await;
        Ok(Next::Continue)
    }

}

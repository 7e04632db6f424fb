//! Promoting: move the PR to the target environment, one recorded step at a time,
//! and keep the audit trail (bounded: the newest records and a count of all).

use super::occupancy::Deployed;
use super::{Engine, EngineError, Next, Step, backoff};
use crate::conditions::{self, types};
use crate::ports::EventType;
use crate::promotion::{self, PromotionExecutor};
use crate::records::{append_promotion, build_promotion_record, summarize};
use promotion_api::Phase;

impl Engine {
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
            // The last look before anything moves: the verdict holds only at the tested SHA
            // (done already when this reconcile just claimed the target).
            if let Some(gate) = s.status.gate.clone().filter(|_| !s.deployed_checked) {
                match self.still_deployed(s).await {
                    Deployed::Yes => {}
                    Deployed::No(why) => {
                        s.status.pending_promotion = None;
                        return self.invalidate(s, &gate, &why).await;
                    }
                    Deployed::Unknown(e) => {
                        let msg =
                            format!("cannot check the gate's application before promoting: {e}");
                        if s.status.message.as_deref() != Some(msg.as_str()) {
                            s.status.message = Some(msg.clone());
                            s.condition(types::READY, false, "ArgoCdUnavailable", msg);
                            s.save().await?;
                        }
                        return Ok(Next::Wait(Some(backoff(
                            self.config.poll_interval,
                            e.retry_after,
                        ))));
                    }
                }
            }
            let me = s.holder_id();
            if let Err(e) = exec.update_application(&pending, &ns, &me).await {
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
        append_promotion(&mut s.status, record);
        let deploy_timeout = s
            .status
            .gate
            .as_ref()
            .and_then(|g| g.deploy_timeout.clone());
        let left = s.status.application.clone();
        s.status.deploy_deadline =
            Some(s.deadline(deploy_timeout.as_deref(), self.config.deploy_timeout));
        s.status.current_environment = Some(pending.target.clone());
        s.status.application = Some(pending.application.clone());
        s.status.test_runs.clear();
        s.status.gate = None;
        s.status.queue = None;
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
        // The next gate's plan rides on the record, so that a restart between its arming
        // write and its trigger can tell a run that never left.
        self.plan_if_unplanned(s);
        s.save().await?;
        s.event(EventType::Normal, "Promoted", note).await;
        // The PR moved on: the environment it left is free for the next in line.
        let left: Vec<_> = left
            .into_iter()
            .filter(|a| *a != pending.application)
            .collect();
        self.release(s, &left).await;
        Ok(Next::Continue)
    }
}

//! Leaving or restarting a journey: a closed or reopened PR, a new push, a failed
//! gate and what restarts it, a deleted tracker. Whatever ends a journey releases
//! the environment it holds, and a promotion it cuts short after the Application
//! moved is still recorded (marked interrupted).

use super::{Engine, EngineError, Next, Step};
use super::{RETRY_ANNOTATION, cancel_message};
use crate::conditions::{self, types};
use crate::monitor::TestMonitor;
use crate::ports::EventType;
use crate::records::{append_promotion, build_promotion_record};
use promotion_api::{ApplicationRef, Phase};

impl Engine {
    pub(super) async fn close(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        if s.status.phase == Some(Phase::Closed) {
            return Ok(Next::Wait(None));
        }
        self.locate_runs(s).await;
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(
                &mut s.status.test_runs,
                "cancelled: the pull request was closed",
            )
            .await;
        let interrupted = self
            .record_interrupted(s, "the pull request was closed")
            .await;
        let held = held(s);
        s.status.phase = Some(Phase::Closed);
        s.status.pending_promotion = None;
        s.status.queue = None;
        s.status.message = Some(cancel_message("pull request closed", &errors));
        s.condition(types::READY, true, "Closed", "the pull request was closed");
        s.save().await?;
        self.announce_interrupted(s, interrupted).await;
        s.event(
            EventType::Normal,
            "Closed",
            format!("{} closed; running tests cancelled", s.pr_label()),
        )
        .await;
        self.release(s, &held).await;
        Ok(Next::Wait(None))
    }

    /// A reopened PR resumes its journey where it was: its gate starts again there.
    pub(super) async fn reopen(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let env = s.environment();
        let why = format!("the pull request was reopened; resuming in {env}");
        self.restart_gate(s, &why);
        s.save().await?;
        s.event(
            EventType::Normal,
            "Reopened",
            format!("{} reopened: resuming in {env}", s.pr_label()),
        )
        .await;
        Ok(Next::Continue)
    }

    /// Deletion: runs cancelled, an interrupted promotion recorded, environments released.
    pub(super) async fn delete(&self, s: &mut Step<'_>) -> Result<(), EngineError> {
        self.locate_runs(s).await;
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(
                &mut s.status.test_runs,
                "cancelled: the tracker was deleted",
            )
            .await;
        let interrupted = self.record_interrupted(s, "the tracker was deleted").await;
        let held = held(s);
        let cancelled = s
            .status
            .test_runs
            .iter()
            .filter(|r| r.message.as_deref() == Some("cancelled: the tracker was deleted"))
            .count();
        if cancelled > 0 || interrupted.is_some() || !errors.is_empty() {
            s.status.pending_promotion = None;
            s.status.message = Some(cancel_message("the tracker is being deleted", &errors));
            s.save().await?;
            self.announce_interrupted(s, interrupted).await;
            s.event(
                EventType::Normal,
                "Deleted",
                format!(
                    "{} deleted: {cancelled} running test(s) cancelled, environments released",
                    s.pr_label()
                ),
            )
            .await;
        }
        self.release(s, &held).await;
        Ok(())
    }

    /// Looks up the runs whose ids only a process that died knew (see `unsaved`), so
    /// that cancelling them reaches the CI system.
    pub(super) async fn locate_runs(&self, s: &mut Step<'_>) {
        let Some(gate) = s.status.gate.clone() else {
            return;
        };
        let lost = s.status.test_runs.iter().any(|r| {
            r.run_id.is_none()
                && !crate::records::is_final(r.state)
                && !crate::trigger::is_planned(r)
        });
        if !lost {
            return;
        }
        let spec = crate::snapshot::as_spec(&gate);
        let vars = s.vars_for(&gate);
        crate::trigger::TriggerManager::new(self.ports.runner.as_ref(), self.config.adoption_grace)
            .locate(&mut s.status.test_runs, &spec, &vars)
            .await;
    }

    /// A promotion under way whose Application already moved is written to the audit
    /// trail, marked interrupted, before whatever cut it short clears it. Returns the note.
    async fn record_interrupted(&self, s: &mut Step<'_>, why: &str) -> Option<String> {
        if s.status.pending_promotion.is_none()
            && matches!(
                s.status.phase,
                Some(Phase::Testing | Phase::Queued | Phase::AwaitingApproval | Phase::Promoting)
            )
            && let Some(gate) = s.status.gate.clone()
        {
            s.status.pending_promotion = self.sent_promotion(s, &gate).await;
        }
        let pending = s.status.pending_promotion.clone()?;
        if !pending.application_updated {
            return None;
        }
        let mut record = build_promotion_record(&pending, &s.status.test_runs);
        record.interrupted = true;
        append_promotion(&mut s.status, record);
        s.status.pending_promotion = None;
        Some(format!(
            "Promotion of {} from {} to {} was interrupted ({why}) after {} was pointed at it; recorded as interrupted",
            s.short_sha(),
            pending.source,
            pending.target,
            pending.application.name
        ))
    }

    async fn announce_interrupted(&self, s: &Step<'_>, note: Option<String>) {
        if let Some(note) = note {
            s.event(EventType::Warning, "PromotionInterrupted", note)
                .await;
        }
    }

    /// First sight, or a new push: everything starts again at the entry environment.
    pub(super) async fn restart_for_head(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let previous = s.status.head_sha.clone();
        let mut errors = Vec::new();
        if previous.is_some() {
            self.locate_runs(s).await;
            errors = TestMonitor::new(self.ports.runner.as_ref())
                .cancel_active(
                    &mut s.status.test_runs,
                    "cancelled: a new commit was pushed",
                )
                .await;
        }
        let interrupted = self.record_interrupted(s, "a new commit was pushed").await;
        let held = if previous.is_some() {
            held(s)
        } else {
            Vec::new()
        };
        let spec = &s.tracker.spec;
        s.status.head_sha = Some(spec.head_sha.clone());
        s.status.current_environment = Some(spec.environment.clone());
        s.status.application = Some(spec.application.clone());
        s.status.test_runs.clear();
        s.status.pending_promotion = None;
        s.status.policy = None;
        s.status.gate = None;
        s.status.queue = None;
        s.status.attempt = None;
        s.status.gate_started_at = None;
        s.status.deploy_deadline = Some(s.deadline(None, self.config.deploy_timeout));
        // An annotation present before this head was seen is not a request to retry it.
        s.status.observed_retry = s.annotation(RETRY_ANNOTATION).cloned();
        s.status.phase = Some(Phase::Deploying);
        let waiting = format!(
            "waiting for Argo CD to deploy {} in {}",
            s.short_sha(),
            spec.environment
        );
        s.status.message = Some(cancel_message(&waiting, &errors));
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::SYNCED,
            "Deploying",
            waiting,
            g,
        );
        s.condition(types::READY, true, "Progressing", "the PR is on its way");
        if previous.is_some() {
            s.save().await?;
        }
        // First sight is written with whatever the next step finds (armed, or waiting).
        self.announce_interrupted(s, interrupted).await;
        self.release(s, &held).await;
        if let Some(old) = previous {
            let old: String = old.chars().take(7).collect();
            s.event(
                EventType::Normal,
                "NewHeadSha",
                format!(
                    "New commit {} replaces {old}: tests cancelled, restarting in {}",
                    s.short_sha(),
                    spec.environment
                ),
            )
            .await;
        }
        Ok(Next::Continue)
    }

    pub(super) fn restart_gate(&self, s: &mut Step<'_>, why: &str) {
        s.status.attempt = Some(s.status.attempt.unwrap_or(1) + 1);
        s.status.test_runs.clear();
        s.status.gate = None;
        s.status.queue = None;
        s.status.pending_promotion = None;
        s.status.deploy_deadline = Some(s.deadline(None, self.config.deploy_timeout));
        s.status.gate_started_at = None;
        s.status.policy = None;
        s.status.phase = Some(Phase::Deploying);
        s.status.message = Some(why.to_string());
        let g = s.generation();
        conditions::set_unknown(
            &mut s.status.conditions,
            types::TESTS_PASSED,
            "Restarted",
            why,
            g,
        );
        s.condition(types::READY, true, "Progressing", why);
    }

    pub(super) async fn fail(
        &self,
        s: &mut Step<'_>,
        reason: &str,
        reasons: Vec<String>,
    ) -> Result<Next, EngineError> {
        self.locate_runs(s).await;
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(&mut s.status.test_runs, "cancelled: the gate failed")
            .await;
        let env = s.environment();
        let msg = cancel_message(
            &format!("gate in {env} failed: {}", reasons.join("; ")),
            &errors,
        );
        s.status.phase = Some(Phase::Failed);
        s.status.message = Some(msg.clone());
        s.condition(types::TESTS_PASSED, false, reason, msg.clone());
        s.condition(
            types::READY,
            false,
            reason,
            format!("{msg}; set {RETRY_ANNOTATION} to a new value, push a new commit or change the policy to start again"),
        );
        let held = held(s);
        s.status.queue = None;
        s.save().await?;
        s.event(EventType::Warning, reason, msg).await;
        // A failed PR leaves its environment to the next in line.
        self.release(s, &held).await;
        Ok(Next::Wait(None))
    }

    /// A failed gate starts over when its policy changed.
    pub(super) async fn failed(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let Some(used) = s.status.policy.clone() else {
            return Ok(Next::Wait(None));
        };
        match s.lookup() {
            Ok(p) if p.name != used.name || p.generation != used.generation => {
                self.restart_gate(
                    s,
                    &format!("policy {} changed; starting the gate again", p.name),
                );
                s.save().await?;
                s.event(
                    EventType::Normal,
                    "Retry",
                    format!("Policy {} changed: gate restarted", p.name),
                )
                .await;
                Ok(Next::Continue)
            }
            _ => Ok(Next::Wait(None)),
        }
    }
}

/// The Applications this tracker may hold: its current environment's, and the
/// target of a promotion under way or a passed gate.
fn held(s: &Step<'_>) -> Vec<ApplicationRef> {
    let mut apps: Vec<ApplicationRef> = [
        s.status.application.clone(),
        s.status
            .pending_promotion
            .as_ref()
            .map(|p| p.application.clone()),
        s.status.gate.as_ref().map(|g| g.application.clone()),
    ]
    .into_iter()
    .flatten()
    .collect();
    apps.dedup();
    apps
}

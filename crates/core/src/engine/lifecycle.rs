//! Leaving or restarting a journey: a closed PR, a new push, a failed gate and what restarts it.

use super::{Engine, EngineError, Next, Step};
use super::{RETRY_ANNOTATION, cancel_message};
use crate::conditions::{self, types};
use crate::monitor::TestMonitor;
use crate::ports::EventType;
use promotion_api::Phase;

impl Engine {
    pub(super) async fn close(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        if s.status.phase == Some(Phase::Closed) {
            return Ok(Next::Wait(None));
        }
        let errors = TestMonitor::new(self.ports.runner.as_ref())
            .cancel_active(
                &mut s.status.test_runs,
                "cancelled: the pull request was closed",
            )
            .await;
        s.status.phase = Some(Phase::Closed);
        s.status.pending_promotion = None;
        s.status.message = Some(cancel_message("pull request closed", &errors));
        s.condition(types::READY, true, "Closed", "the pull request was closed");
        s.save().await?;
        s.event(
            EventType::Normal,
            "Closed",
            format!("{} closed; running tests cancelled", s.pr_label()),
        )
        .await;
        Ok(Next::Wait(None))
    }

    /// First sight, or a new push: everything starts again at the entry environment.
    pub(super) async fn restart_for_head(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let previous = s.status.head_sha.clone();
        let mut errors = Vec::new();
        if previous.is_some() {
            errors = TestMonitor::new(self.ports.runner.as_ref())
                .cancel_active(
                    &mut s.status.test_runs,
                    "cancelled: a new commit was pushed",
                )
                .await;
        }
        let spec = &s.tracker.spec;
        s.status.head_sha = Some(spec.head_sha.clone());
        s.status.current_environment = Some(spec.environment.clone());
        s.status.application = Some(spec.application.clone());
        s.status.test_runs.clear();
        s.status.pending_promotion = None;
        s.status.policy = None;
        s.status.attempt = None;
        s.status.gate_started_at = None;
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
        s.save().await?;
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
        s.save().await?;
        s.event(EventType::Warning, reason, msg).await;
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

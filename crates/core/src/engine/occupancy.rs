//! Occupancy: an environment's Application runs one PR at a time. A tracker
//! holds the target Application (an annotation written with optimistic
//! concurrency, see [`crate::ports::ArgoCdClient::acquire`]) from its promotion
//! in until it leaves; others that passed their gate wait in phase Queued, first
//! come first served. A verdict counts only while the gate's Application still
//! runs the tracker's SHA: it is checked when the gate passes and again just
//! before the Application is moved.

use super::approval::{Approval, approval};
use super::gate::PolicyCheck;
use super::{Engine, EngineError, Next, Step, backoff};
use crate::conditions::types;
use crate::ports::{EventType, Hold, PortError};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{
    ApplicationRef, GateSnapshot, PendingPromotion, Phase, PullRequestTracker, QueueStatus,
};

/// Whether the gate's Application still runs the tracker's SHA.
pub(super) enum Deployed {
    /// Synced and Healthy at the SHA.
    Yes,
    /// Not any more: why.
    No(String),
    /// Argo CD cannot be asked now.
    Unknown(PortError),
}

impl Engine {
    /// The gate passed (and was approved where needed): hold the target environment and
    /// promote, or wait in line for it.
    pub(super) async fn claim_target(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
        promoted_by: &str,
    ) -> Result<Next, EngineError> {
        match self.still_deployed(s).await {
            Deployed::Yes => s.deployed_checked = true,
            Deployed::No(why) => return self.invalidate(s, gate, &why).await,
            Deployed::Unknown(e) => return self.hold_problem(s, &e).await,
        }
        let app = gate.application.clone();
        let me = s.holder_id();
        let since = s
            .status
            .queue
            .as_ref()
            .filter(|q| q.application == app)
            .map(|q| q.since.clone())
            .unwrap_or_else(|| Time(Timestamp::now()));
        let ahead = self.ahead_in_line(s, &app, &since);
        let holder;
        if ahead.is_empty() {
            // Asked first without breaking anything: the answer names the holder, so the
            // usual case (nobody holds it) costs one read, not two.
            let mut breaking = None;
            let mut hold = self.ports.argo.acquire(&app, &me, None).await;
            if let Ok(Hold::HeldBy(h)) = &hold
                && self.is_stale(h, &app)
            {
                breaking = Some(h.clone());
                hold = self.ports.argo.acquire(&app, &me, Some(h)).await;
            }
            match hold {
                Ok(Hold::Acquired) => {
                    if let Some(old) = breaking {
                        s.event(
                            EventType::Normal,
                            "HoldBroken",
                            format!(
                                "{} was held by {}, which left it; taken over",
                                app.name,
                                display(&old)
                            ),
                        )
                        .await;
                    }
                    s.status.queue = None;
                    return self.begin_promotion(s, gate, promoted_by).await;
                }
                Ok(Hold::HeldBy(h)) => holder = Some(h),
                Err(e) => return self.hold_problem(s, &e).await,
            }
        } else {
            match self.ports.argo.holder(&app).await {
                // Already ours (a promotion cut short after the hold was taken): those
                // in line wait for this tracker, so it must go, not queue behind them.
                Ok(Some(h)) if h == me => {
                    s.status.queue = None;
                    return self.begin_promotion(s, gate, promoted_by).await;
                }
                Ok(h) => holder = h,
                Err(e) => return self.hold_problem(s, &e).await,
            }
        }
        let position = i64::try_from(ahead.len()).unwrap_or(i64::MAX - 1) + 1;
        self.queue_up(s, gate, since, position, holder).await
    }

    /// Queued: try again for the environment, with the approval still valid.
    pub(super) async fn queued(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let gate = match self.gate_or_restart(s).await? {
            Ok(g) => g,
            Err(next) => return Ok(next),
        };
        match self.check_policy(s, &gate).await? {
            PolicyCheck::Same => {}
            PolicyCheck::Changed(next) => return Ok(next),
            PolicyCheck::Unusable => return Ok(Next::Wait(Some(self.config.poll_interval * 6))),
        }
        let by = if gate.auto_promote && !super::gate::fork_gated(s) {
            self.config.controller_name.clone()
        } else {
            match approval(s, &gate) {
                Approval::Given(by) => by,
                // The approval was taken back: wait for a new one, out of the queue.
                Approval::Missing | Approval::Void(_) => {
                    if let Some(pending) = self.sent_promotion(s, &gate).await {
                        return Ok(self.resume_promotion(s, pending));
                    }
                    s.status.queue = None;
                    s.status.phase = Some(Phase::AwaitingApproval);
                    s.status.message = Some(format!(
                        "waiting for approval of {} to {}",
                        s.short_sha(),
                        gate.target
                    ));
                    s.save().await?;
                    return Ok(Next::Continue);
                }
            }
        };
        self.claim_target(s, &gate, &by).await
    }

    async fn queue_up(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
        since: Time,
        position: i64,
        holder: Option<String>,
    ) -> Result<Next, EngineError> {
        let first = s.status.phase != Some(Phase::Queued);
        let queue = QueueStatus {
            environment: gate.target.clone(),
            application: gate.application.clone(),
            position,
            holder: holder.as_deref().map(display),
            since,
        };
        let msg = format!(
            "passed its gate; queued for {} at position {position}: {} is held by {}",
            gate.target,
            gate.application.name,
            queue.holder.as_deref().unwrap_or("another PR")
        );
        // Written when the PR joins the line and when it becomes next, not at every step:
        // each departure would otherwise rewrite every tracker behind it (quadratic in
        // the line's length). Between those, position and holder are as of the last write.
        let next_now = position == 1 && s.status.queue.as_ref().map(|q| q.position) != Some(1);
        let moved_line = s
            .status
            .queue
            .as_ref()
            .is_some_and(|q| q.application != queue.application);
        if first || next_now || moved_line {
            s.status.phase = Some(Phase::Queued);
            s.status.queue = Some(queue);
            s.status.message = Some(msg.clone());
            s.condition(types::READY, true, "Queued", msg.clone());
            s.save().await?;
            if first {
                s.event(EventType::Normal, "Queued", msg).await;
            }
        }
        let poll = self.config.poll_interval;
        Ok(Next::Wait(Some(
            self.config.queue_poll_interval.unwrap_or(poll),
        )))
    }

    /// Trackers queued for `app` before this one (first come, first served), as "namespace/name".
    fn ahead_in_line(&self, s: &Step<'_>, app: &ApplicationRef, since: &Time) -> Vec<String> {
        let Some(directory) = &self.directory else {
            return Vec::new();
        };
        let me = key(s.tracker);
        let mut ahead: Vec<(Time, String)> = directory
            .trackers()
            .iter()
            .filter(|t| t.metadata.uid != s.tracker.metadata.uid)
            .filter(|t| t.metadata.deletion_timestamp.is_none())
            .filter_map(|t| {
                let st = t.status.as_ref()?;
                let q = st.queue.as_ref()?;
                (st.phase == Some(Phase::Queued) && &q.application == app)
                    .then(|| (q.since.clone(), key(t)))
            })
            .filter(|(their_since, their_key)| (&their_since.0, their_key) < (&since.0, &me))
            .collect();
        ahead.sort_by(|a, b| (&a.0.0, &a.1).cmp(&(&b.0.0, &b.1)));
        ahead.into_iter().map(|(_, k)| k).collect()
    }

    /// Whether `holder` holds `app` without being there any more: its tracker is gone,
    /// replaced (another uid), finished, or somewhere else. Unknown is never stale.
    fn is_stale(&self, holder: &str, app: &ApplicationRef) -> bool {
        let Some(directory) = &self.directory else {
            return false;
        };
        let mut parts = holder.rsplitn(3, '/');
        let (Some(uid), Some(name), Some(ns)) = (parts.next(), parts.next(), parts.next()) else {
            // Not a holder this controller writes: leave it to a person.
            return false;
        };
        if !directory.sees_namespace(ns) {
            return false;
        }
        let trackers = directory.trackers();
        let Some(t) = trackers.iter().find(|t| {
            t.metadata.namespace.as_deref() == Some(ns) && t.metadata.name.as_deref() == Some(name)
        }) else {
            return true;
        };
        if t.metadata.uid.as_deref() != Some(uid) {
            return true;
        }
        let Some(st) = &t.status else {
            return true;
        };
        if matches!(
            st.phase,
            Some(Phase::Failed | Phase::Closed | Phase::Completed)
        ) {
            return true;
        }
        let here = [
            st.application.as_ref(),
            st.pending_promotion.as_ref().map(|p| &p.application),
            st.gate.as_ref().map(|g| &g.application),
            st.queue.as_ref().map(|q| &q.application),
        ];
        !here.into_iter().flatten().any(|a| a == app)
    }

    /// Whether the Application of the current environment still runs the tracker's SHA.
    pub(super) async fn still_deployed(&self, s: &Step<'_>) -> Deployed {
        let app = s
            .status
            .application
            .clone()
            .unwrap_or_else(|| s.tracker.spec.application.clone());
        let ns = s.tracker.metadata.namespace.clone().unwrap_or_default();
        match self.ports.argo.application_status(&app).await {
            Ok(st) if !crate::access::app_readable_by(st.opt_in.as_deref(), &ns) => {
                Deployed::Unknown(crate::ports::PortError::permanent(
                    super::deploy::not_opted_in(&app, &ns),
                ))
            }
            Ok(st) if st.deployed_at(&s.tracker.spec.head_sha) => Deployed::Yes,
            Ok(st) => Deployed::No(format!(
                "{} is {:?}/{:?} at {}, not at {}",
                app.name,
                st.sync,
                st.health,
                if st.revisions.is_empty() {
                    "no revision".to_string()
                } else {
                    st.revisions.join(",")
                },
                s.short_sha()
            )),
            Err(e) => Deployed::Unknown(e),
        }
    }

    /// The gate's verdict does not count: the app it tested moved. The gate starts
    /// again once the app runs the SHA again.
    pub(super) async fn invalidate(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
        why: &str,
    ) -> Result<Next, EngineError> {
        if let Some(pending) = self.sent_promotion(s, gate).await {
            return Ok(self.resume_promotion(s, pending));
        }
        let msg = format!(
            "the gate's verdict does not count: {why}; the gate starts again once it runs {} again",
            s.short_sha()
        );
        self.release(s, std::slice::from_ref(&gate.application))
            .await;
        self.restart_gate(s, &msg);
        s.condition(types::TESTS_PASSED, false, "GateInvalidated", msg.clone());
        s.save().await?;
        s.event(EventType::Warning, "GateInvalidated", msg).await;
        Ok(Next::Continue)
    }

    async fn hold_problem(&self, s: &mut Step<'_>, e: &PortError) -> Result<Next, EngineError> {
        let msg = format!("cannot take the target environment: {e}");
        if s.status.message.as_deref() != Some(msg.as_str()) {
            s.status.message = Some(msg.clone());
            s.condition(types::READY, false, "ArgoCdUnavailable", msg);
            s.save().await?;
        }
        Ok(Next::Wait(Some(backoff(
            self.config.poll_interval,
            e.retry_after,
        ))))
    }

    /// Gives up this tracker's hold on each of `apps`; best effort: a hold left
    /// behind is broken by the next in line once this tracker has left.
    pub(super) async fn release(&self, s: &Step<'_>, apps: &[ApplicationRef]) {
        let me = s.holder_id();
        for app in apps {
            if let Err(e) = self.ports.argo.release(app, &me).await {
                tracing::warn!(app = %app.name, error = %e, "could not release the environment");
            }
        }
    }

    /// The promotion of `gate` this tracker already sent, if a crash (or a refused write)
    /// lost its record: the patch that moved the target Application wrote
    /// `<holder id>@<sha>` on it in the same write. Asked only before a gate is given up,
    /// so a promotion that went out is recorded, never forgotten.
    pub(super) async fn sent_promotion(
        &self,
        s: &Step<'_>,
        gate: &GateSnapshot,
    ) -> Option<PendingPromotion> {
        if s.status.pending_promotion.is_some() {
            return None;
        }
        let want = format!("{}@{}", s.holder_id(), s.tracker.spec.head_sha);
        match self.ports.argo.promotion_marker(&gate.application).await {
            Ok(Some(m)) if m == want => {}
            Ok(_) => return None,
            Err(e) => {
                // Unknown is not proof: the gate is given up as before, and the app, if it
                // moved, keeps the marker for a person to see.
                tracing::warn!(app = %gate.application.name, error = %e, "could not check for a promotion already sent");
                return None;
            }
        }
        let by = if gate.auto_promote && !super::gate::fork_gated(s) {
            self.config.controller_name.clone()
        } else {
            match approval(s, gate) {
                Approval::Given(by) => by,
                _ => "unknown (approval withdrawn after the promotion was sent)".to_string(),
            }
        };
        Some(promotion_of(s, gate, &by, true))
    }

    /// Goes on with a promotion that was sent but not recorded: label, record, move on.
    pub(super) fn resume_promotion(&self, s: &mut Step<'_>, pending: PendingPromotion) -> Next {
        tracing::info!(target = %pending.target, "a promotion sent before its record was saved is recorded now");
        s.status.pending_promotion = Some(pending);
        s.status.queue = None;
        s.status.phase = Some(Phase::Promoting);
        Next::Continue
    }

    /// The promotion a passed gate starts, from the snapshot.
    pub(super) async fn begin_promotion(
        &self,
        s: &mut Step<'_>,
        gate: &GateSnapshot,
        promoted_by: &str,
    ) -> Result<Next, EngineError> {
        let pending = promotion_of(s, gate, promoted_by, false);
        s.status.message = Some(format!("promoting {} to {}", s.short_sha(), pending.target));
        s.status.pending_promotion = Some(pending);
        s.status.queue = None;
        s.status.phase = Some(Phase::Promoting);
        // Not written: the Application patch carries its own proof (see `sent_promotion`)
        // and the label is idempotent, so the record is the promotion's one write.
        Ok(Next::Continue)
    }
}

/// The promotion `gate` makes of the tracker's SHA, by `promoted_by`.
fn promotion_of(
    s: &Step<'_>,
    gate: &GateSnapshot,
    promoted_by: &str,
    application_updated: bool,
) -> PendingPromotion {
    PendingPromotion {
        source: gate.source.clone(),
        target: gate.target.clone(),
        policy: gate.policy.clone(),
        revision: s.tracker.spec.head_sha.clone(),
        application: gate.application.clone(),
        label: gate.github_label.clone(),
        promoted_by: promoted_by.to_string(),
        application_updated,
    }
}

fn key(t: &PullRequestTracker) -> String {
    format!(
        "{}/{}",
        t.metadata.namespace.as_deref().unwrap_or_default(),
        t.metadata.name.as_deref().unwrap_or_default()
    )
}

/// "namespace/name" of a holder id "namespace/name/uid".
fn display(holder: &str) -> String {
    match holder.rsplit_once('/') {
        Some((who, _uid)) if who.contains('/') => who.to_string(),
        _ => holder.to_string(),
    }
}

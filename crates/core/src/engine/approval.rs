//! AwaitingApproval: a passed gate of a policy with `autoPromote: false` waits
//! for a person. An approval names the target environment and the head SHA it
//! approves, so it never carries over to a later push; one given before the gate
//! passed simply waits for the pass.

use super::gate::PolicyCheck;
use super::{APPROVE_ANNOTATION, APPROVED_BY_ANNOTATION};
use super::{Engine, EngineError, Next, Step};
use crate::ports::EventType;
use promotion_api::GateSnapshot;

/// What the approval annotations say about this gate.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Approval {
    /// Nobody approved.
    Missing,
    /// An approval that does not count, and why.
    Void(String),
    /// Approved by this user.
    Given(String),
}

/// Reads the approval of `gate`'s target for `head_sha` from the tracker's annotations.
pub(super) fn approval(s: &Step<'_>, gate: &GateSnapshot) -> Approval {
    let Some(value) = s
        .annotation(APPROVE_ANNOTATION)
        .map(|v| v.trim().to_string())
    else {
        return Approval::Missing;
    };
    let head = &s.tracker.spec.head_sha;
    let wanted = format!("{}@{head}", gate.target);
    let Some((target, sha)) = value.split_once('@') else {
        return Approval::Void(format!(
            "approval {APPROVE_ANNOTATION}={value:?} names no commit; approvals are bound to a head SHA: set {wanted}"
        ));
    };
    if target.trim() != gate.target {
        return Approval::Void(format!(
            "approval {value:?} is for {target:?}, not {:?}",
            gate.target
        ));
    }
    let sha = sha.trim().to_ascii_lowercase();
    let hex = sha.chars().all(|c| c.is_ascii_hexdigit());
    if sha.len() < 7 || !hex || !head.to_ascii_lowercase().starts_with(&sha) {
        return Approval::Void(format!(
            "approval {value:?} is void: it approves commit {sha}, and the head is now {} (a new push needs a new approval): set {wanted}",
            s.short_sha()
        ));
    }
    match s.annotation(APPROVED_BY_ANNOTATION).map(|v| v.trim()) {
        Some(by) if !by.is_empty() => Approval::Given(by.to_string()),
        _ => Approval::Void(format!(
            "approval {value:?} does not say who approved: set {APPROVED_BY_ANNOTATION} to your user name along with it"
        )),
    }
}

impl Engine {
    pub(super) async fn awaiting_approval(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let gate = match self.gate_or_restart(s).await? {
            Ok(g) => g,
            Err(next) => return Ok(next),
        };
        match self.check_policy(s, &gate).await? {
            PolicyCheck::Same => {}
            PolicyCheck::Changed(next) => return Ok(next),
            PolicyCheck::Unusable => return Ok(Next::Wait(Some(self.config.poll_interval * 6))),
        }
        match approval(s, &gate) {
            Approval::Missing => Ok(Next::Wait(None)),
            Approval::Void(why) => {
                if s.status.message.as_deref() != Some(why.as_str()) {
                    s.status.message = Some(why.clone());
                    s.save().await?;
                    s.event(EventType::Warning, "ApprovalVoid", why).await;
                }
                Ok(Next::Wait(None))
            }
            Approval::Given(by) => {
                s.event(
                    EventType::Normal,
                    "Approved",
                    format!(
                        "Promotion of {} to {} approved by {by}",
                        s.short_sha(),
                        gate.target
                    ),
                )
                .await;
                self.claim_target(s, &gate, &by).await
            }
        }
    }
}

//! AwaitingApproval: a passed gate of a policy with `autoPromote: false` waits for a person.

use super::{Engine, EngineError, Next, Step};
use super::{APPROVE_ANNOTATION, APPROVED_BY_ANNOTATION};
use crate::ports::EventType;

impl Engine {
    pub(super) async fn awaiting_approval(&self, s: &mut Step<'_>) -> Result<Next, EngineError> {
        let policy = match s.lookup() {
            Ok(p) => p,
            Err(e) => return self.policy_problem(s, e).await,
        };
        let target = &policy.spec.target_environment;
        if s.annotation(APPROVE_ANNOTATION).map(|v| v.trim()) != Some(target.as_str()) {
            return Ok(Next::Wait(None));
        }
        let by = s
            .annotation(APPROVED_BY_ANNOTATION)
            .cloned()
            .unwrap_or_else(|| format!("approved with the {APPROVE_ANNOTATION} annotation"));
        s.event(
            EventType::Normal,
            "Approved",
            format!("Promotion to {target} approved by {by}"),
        )
        .await;
        let vars = s.vars(&policy);
        self.begin_promotion(s, &policy, &vars, &by).await
    }

}

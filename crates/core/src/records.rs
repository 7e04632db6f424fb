//! The audit trail: promotion records and the mapping of CI states into status.

use crate::ports::{RunState, RunStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use promotion_api::{
    PendingPromotion, PromotionRecord, PullRequestTrackerStatus, TestRun, TestState,
};

/// The status state of a CI run state.
pub fn test_state(state: RunState) -> TestState {
    match state {
        RunState::Pending => TestState::Pending,
        RunState::Running => TestState::Running,
        RunState::Passed => TestState::Passed,
        RunState::Failed => TestState::Failed,
        RunState::Cancelled => TestState::Cancelled,
        RunState::TimedOut => TestState::TimedOut,
    }
}

/// Whether a status state is final.
pub fn is_final(state: TestState) -> bool {
    matches!(
        state,
        TestState::Passed | TestState::Failed | TestState::Cancelled | TestState::TimedOut
    )
}

/// Folds what the CI system said into a test run in status (the seed's
/// ConvertToV1Alpha1TestRuns, one run at a time). Returns whether anything changed.
pub fn test_runs_to_status(run: &mut TestRun, status: &RunStatus) -> bool {
    let before = run.clone();
    run.state = test_state(status.state);
    if let Some(id) = &status.run_id {
        run.run_id = Some(id.clone());
    }
    if status.url.is_some() {
        run.url = status.url.clone();
    }
    run.message = status.message.clone();
    if is_final(run.state) && run.finished_at.is_none() {
        run.finished_at = Some(Time(Timestamp::now()));
    }
    *run != before
}

/// The audit record of a finished promotion (the seed's BuildPromotionRecord).
pub fn build_promotion_record(pending: &PendingPromotion, runs: &[TestRun]) -> PromotionRecord {
    PromotionRecord {
        source: pending.source.clone(),
        target: pending.target.clone(),
        policy: pending.policy.clone(),
        revision: pending.revision.clone(),
        promoted_at: Time(Timestamp::now()),
        promoted_by: pending.promoted_by.clone(),
        test_runs: runs.to_vec(),
        interrupted: false,
    }
}

/// How many promotion records status keeps (the newest); `promotionCount` counts them all.
pub const MAX_PROMOTION_RECORDS: usize = 50;

/// Appends `record` to the audit trail, keeping the newest [`MAX_PROMOTION_RECORDS`]
/// and counting every record in `promotionCount`, so a long journey stays bounded.
pub fn append_promotion(status: &mut PullRequestTrackerStatus, record: PromotionRecord) {
    let before = status
        .promotion_count
        .unwrap_or(i64::try_from(status.promotions.len()).unwrap_or(i64::MAX - 1));
    status.promotion_count = Some(before + 1);
    status.promotions.push(record);
    let extra = status
        .promotions
        .len()
        .saturating_sub(MAX_PROMOTION_RECORDS);
    status.promotions.drain(..extra);
}

/// "smoke passed, e2e failed (optional)" for events and messages.
pub fn summarize(runs: &[TestRun]) -> String {
    if runs.is_empty() {
        return "no gate tests".into();
    }
    runs.iter()
        .map(|r| {
            let state = format!("{:?}", r.state).to_lowercase();
            let optional = if r.required { "" } else { " (optional)" };
            format!("{} {state}{optional}", r.name)
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_api::{ApplicationRef, Provider};

    fn run(name: &str, state: TestState, required: bool) -> TestRun {
        TestRun {
            name: name.into(),
            provider: Provider::Jenkins,
            job: "j".into(),
            connection: None,
            correlation_id: Some("c".into()),
            run_id: None,
            url: None,
            state,
            required,
            started_at: None,
            first_triggered_at: None,
            attempts: vec![],
            not_before: None,
            finished_at: None,
            message: None,
        }
    }

    #[test]
    fn folding_a_final_status_stamps_finished_at_once() {
        let mut r = run("smoke", TestState::Running, true);
        let st = RunStatus {
            state: RunState::Passed,
            url: Some("http://ci/1".into()),
            message: Some("SUCCESS".into()),
            run_id: Some("build:1".into()),
        };
        assert!(test_runs_to_status(&mut r, &st));
        assert_eq!(r.state, TestState::Passed);
        assert_eq!(r.run_id.as_deref(), Some("build:1"));
        let finished = r.finished_at.clone();
        assert!(finished.is_some());
        assert!(
            !test_runs_to_status(&mut r, &st),
            "no change the second time"
        );
        assert_eq!(r.finished_at, finished);
    }

    #[test]
    fn a_record_carries_who_what_and_the_gate() {
        let pending = PendingPromotion {
            source: "dev".into(),
            target: "staging".into(),
            policy: "dev-to-staging".into(),
            revision: "abc1234".into(),
            application: ApplicationRef {
                cluster: "in-cluster".into(),
                namespace: "argocd".into(),
                name: "shop-staging".into(),
            },
            label: None,
            promoted_by: "promotion-controller".into(),
            application_updated: true,
        };
        let runs = vec![
            run("smoke", TestState::Passed, true),
            run("load", TestState::Failed, false),
        ];
        let rec = build_promotion_record(&pending, &runs);
        assert_eq!(
            (rec.source.as_str(), rec.target.as_str()),
            ("dev", "staging")
        );
        assert_eq!(rec.test_runs.len(), 2);
        assert_eq!(summarize(&runs), "smoke passed, load failed (optional)");
    }
}

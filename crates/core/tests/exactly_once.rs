//! Exactly-once triggering when the CI system is slow, lags or rate-limits:
//! the engine against in-memory fakes that fail the way real CI APIs do.

use promotion_api::{Phase, PullRequestTracker, TestState, TriggerOutcome};
use promotion_core::engine::{Engine, EngineConfig, Ports};
use promotion_core::fakes::*;
use promotion_core::policy_cache::{CachedPolicy, PolicyCache};
use promotion_core::ports::PortError;
use std::sync::Arc;
use std::time::Duration;

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";

fn tracker() -> PullRequestTracker {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": "shop-42", "namespace": "team", "uid": "u-1", "generation": 1},
        "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": 42, "headSha": SHA,
                 "environment": "dev", "application": {"name": "shop-dev"}}
    }))
    .expect("tracker")
}

fn one_test_policy(job: &str, timeout: Option<&str>) -> CachedPolicy {
    let mut test = serde_json::json!({"name": "smoke", "provider": "jenkins", "job": job});
    if let Some(t) = timeout {
        test["timeout"] = t.into();
    }
    let spec = serde_json::from_value(serde_json::json!({
        "sourceEnvironment": "dev", "targetEnvironment": "staging", "externalTests": [test],
        "promotion": {"application": {"name": "shop-staging"}}
    }))
    .expect("policy");
    CachedPolicy::new("team", "dev-to-staging", Some(1), spec)
}

struct World {
    ci: Arc<FakeCi>,
    argo: Arc<FakeArgo>,
    engine: Engine,
    policies: PolicyCache,
    store: MemoryStore,
    events: EventLog,
}

fn world(grace: Duration, max_rearms: usize) -> World {
    let crashes = Arc::new(Crashes::default());
    let ci = Arc::new(FakeCi::new(crashes.clone()));
    let argo = Arc::new(FakeArgo::new(crashes.clone()));
    let github = Arc::new(FakeGitHub::new(crashes));
    argo.deploy("shop-dev", SHA);
    let engine = Engine::new(
        Ports {
            runner: ci.clone(),
            argo: argo.clone(),
            github,
        },
        EngineConfig {
            poll_interval: Duration::from_millis(5),
            adoption_grace: grace,
            max_rearms,
            ..EngineConfig::default()
        },
    );
    World {
        ci,
        argo,
        engine,
        policies: PolicyCache::new(),
        store: MemoryStore::default(),
        events: EventLog::default(),
    }
}

/// One reconcile with the last saved status, as the controller does; returns when to look again.
async fn step(w: &World, t: &mut PullRequestTracker) -> Option<Duration> {
    let after = w
        .engine
        .reconcile(t, &w.policies, &w.store, &w.events)
        .await
        .expect("reconcile");
    t.status = w.store.status.lock().expect("lock").clone();
    after
}

/// Reconciles, sleeping as the engine asks (bounded), until the gate left Testing.
async fn until_gate_done(w: &World, t: &mut PullRequestTracker) {
    for _ in 0..200 {
        let after = step(w, t).await;
        let phase = t.status.as_ref().and_then(|s| s.phase);
        if !matches!(phase, Some(Phase::Testing) | Some(Phase::Synced) | None) {
            return;
        }
        tokio::time::sleep(after.unwrap_or(Duration::from_millis(5))).await;
    }
}

#[tokio::test]
async fn a_slow_ambiguous_trigger_is_not_sent_again_before_the_grace_after_its_answer() {
    // Issue #11 case 2: the trigger takes longer than the grace and its answer is lost;
    // the CI system shows the run a little after the answer. Counting the grace from the
    // saved plan re-armed it at once (two builds); counted from the answer, it is adopted.
    let w = world(Duration::from_millis(400), 1);
    w.ci.script("smoke", Script::LostAnswer);
    {
        let mut f = w.ci.faults.lock().expect("lock");
        f.trigger_delay = Duration::from_millis(600);
        f.find_lag = Some(Duration::from_millis(700));
    }
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    let st = t.status.expect("status");
    assert_eq!(
        w.ci.triggered("smoke"),
        1,
        "triggered twice: {:?}",
        st.test_runs
    );
    assert_eq!(st.promotions.len(), 1, "promoted: {:?}", st.message);
    let run = &st.promotions[0].test_runs[0];
    assert_eq!(run.attempts.len(), 1);
    assert_eq!(run.attempts[0].outcome, Some(TriggerOutcome::Ambiguous));
    assert!(run.attempts[0].answered_at.is_some());
}

#[tokio::test]
async fn a_run_find_never_sees_is_re_armed_once_then_fails_with_the_reason() {
    // Issue #11 case 3: a workflow whose run-name lacks the correlation id can never be
    // found; each re-arm used to start it again, forever. Now: one re-arm, then Failed.
    let w = world(Duration::ZERO, 1);
    w.ci.script("smoke", Script::LostAnswer);
    w.ci.faults.lock().expect("lock").find_lag = None;
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    let st = t.status.clone().expect("status");
    assert_eq!(st.phase, Some(Phase::Failed), "{:?}", st.message);
    assert_eq!(w.ci.triggered("smoke"), 2, "one trigger and one re-arm");
    let run = &st.test_runs[0];
    assert_eq!(run.state, TestState::Failed);
    assert_eq!(run.attempts.len(), 2, "each attempt is recorded");
    let msg = run.message.as_deref().unwrap_or_default();
    assert!(msg.contains("triggered 2 times"), "{msg}");
    assert!(msg.contains("PROMOTION_CORRELATION_ID"), "{msg}");
    // More reconciles change nothing: the failure is final.
    step(&w, &mut t).await;
    assert_eq!(w.ci.triggered("smoke"), 2);
}

#[tokio::test]
async fn re_arms_are_a_setting_and_zero_means_never() {
    let w = world(Duration::ZERO, 0);
    w.ci.script("smoke", Script::LostAnswer);
    w.ci.faults.lock().expect("lock").find_lag = None;
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    assert_eq!(w.ci.triggered("smoke"), 1);
    assert_eq!(t.status.expect("status").phase, Some(Phase::Failed));
}

#[tokio::test]
async fn a_re_arm_does_not_reset_the_tests_timeout() {
    // Issue #11 case 3: the per-test timeout runs from the first trigger. The first
    // trigger is lost and never found; the run is re-armed; it must still time out one
    // timeout after the FIRST trigger.
    let w = world(Duration::from_millis(300), 5);
    w.ci.script("smoke", Script::LostAnswer);
    w.ci.faults.lock().expect("lock").find_lag = None;
    w.policies.upsert(one_test_policy("smoke", Some("1s")));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    let st = t.status.expect("status");
    let run = &st.test_runs[0];
    assert_eq!(run.state, TestState::TimedOut, "{:?}", run.message);
    assert!(
        run.attempts.len() >= 2,
        "re-armed at least once: {:?}",
        run.attempts
    );
    let first = run.first_triggered_at.as_ref().expect("first trigger").0;
    let last = run.attempts.last().expect("attempt").armed_at.0;
    assert_eq!(
        first, run.attempts[0].armed_at.0,
        "the first trigger is kept"
    );
    assert!(last > first);
    // Measured from the last re-arm, the 1s would not have run out yet.
    let finished = run.finished_at.as_ref().expect("finished").0;
    let from_last = finished.duration_since(last);
    assert!(
        from_last < k8s_openapi::jiff::SignedDuration::from_secs(1),
        "timed out only {from_last:?} after the last re-arm, so not from it"
    );
}

#[tokio::test]
async fn retry_after_on_a_status_poll_sets_when_that_run_is_polled_next() {
    // Issue #11 case 4: a 429 with Retry-After: 30 on a status poll used to be answered
    // with another poll after poll-interval.
    let w = world(Duration::ZERO, 1);
    w.ci.script("smoke", Script::Hang);
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    // Deploying -> Synced -> Testing: triggered, then polled once.
    let mut after = None;
    for _ in 0..5 {
        after = step(&w, &mut t).await;
        if w.ci.calls().status > 0 {
            break;
        }
    }
    assert_eq!(w.ci.calls().status, 1);
    let mut limited = PortError::transient("429 Too Many Requests");
    limited.retry_after = Some(Duration::from_secs(30));
    w.ci.faults
        .lock()
        .expect("lock")
        .status_errors
        .push_back(limited);
    tokio::time::sleep(after.unwrap_or_default()).await;
    let after = step(&w, &mut t).await.expect("a requeue");
    assert_eq!(w.ci.calls().status, 2);
    assert!(
        after >= Duration::from_secs(29),
        "looks again after {after:?}, not after the Retry-After"
    );
    let run = &t.status.as_ref().expect("status").test_runs[0];
    assert!(run.not_before.is_some());
    // A wake before then (a callback, a watch event) does not poll that run.
    step(&w, &mut t).await;
    assert_eq!(w.ci.calls().status, 2, "polled before the Retry-After");
}

#[tokio::test]
async fn a_rate_limited_trigger_is_sent_again_when_asked_without_a_search_or_a_re_arm() {
    // A 429 on the trigger started nothing: it is sent again after Retry-After, not
    // looked for and not counted against the re-arm bound.
    let w = world(Duration::from_secs(3600), 0);
    let mut limited = PortError::transient("429 Too Many Requests");
    limited.retry_after = Some(Duration::from_millis(200));
    w.ci.faults
        .lock()
        .expect("lock")
        .trigger_errors
        .push_back(limited);
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    let st = t.status.expect("status");
    assert_eq!(st.promotions.len(), 1, "promoted: {:?}", st.message);
    assert_eq!(w.ci.calls().trigger, 2, "refused once, then started");
    assert_eq!(w.ci.triggered("smoke"), 1, "one run started");
    assert_eq!(w.ci.calls().find, 0, "nothing to look for");
    let run = &st.promotions[0].test_runs[0];
    assert_eq!(run.attempts.len(), 1, "a refused send is not a re-arm");
    assert_eq!(run.attempts[0].outcome, Some(TriggerOutcome::Started));
}

#[tokio::test]
async fn a_conflict_on_the_answer_save_never_triggers_twice() {
    // The store refuses the first save after the trigger (someone else wrote the tracker):
    // the run's id, kept in memory, goes with the refused write, so the next reconcile
    // sees the armed intent without a run id and must adopt, not resend.
    let w = world(Duration::from_secs(3600), 1);
    w.policies.upsert(one_test_policy("smoke", None));
    // Saves: the armed intent (the app runs the SHA at first sight) goes through; the
    // next one, the promotion's record, is refused.
    w.store
        .conflicts
        .lock()
        .expect("lock")
        .extend([false, true]);
    let mut t = tracker();
    for _ in 0..10 {
        let _ = w
            .engine
            .reconcile(&t, &w.policies, &w.store, &w.events)
            .await;
        t.status = w.store.status.lock().expect("lock").clone();
        if t.status.as_ref().is_some_and(|s| !s.promotions.is_empty()) {
            break;
        }
    }
    assert_eq!(
        *w.store.refused.lock().expect("lock"),
        1,
        "the conflict happened"
    );
    assert_eq!(w.ci.triggered("smoke"), 1);
    assert_eq!(
        t.status.expect("status").promotions.len(),
        1,
        "adopted and promoted"
    );
}

#[tokio::test]
async fn a_find_that_is_not_sure_never_re_arms_and_the_tests_timeout_ends_the_wait() {
    // Issue #11 case 1: the orphan is beyond the page `find` could read (a busy job) and the
    // page does not reach back to the intent's time. "Not sure" must never trigger again.
    let grace = Duration::from_millis(300);
    let w = world(grace, 1);
    w.ci.script("smoke", Script::LostAnswer);
    // Not listed yet when the trigger's answer is lost: the first look waits out the grace.
    w.ci.faults.lock().expect("lock").find_lag = None;
    w.policies.upsert(one_test_policy("smoke", Some("1s")));
    let mut t = tracker();
    for _ in 0..10 {
        step(&w, &mut t).await;
        if w.ci.calls().trigger > 0 {
            break;
        }
    }
    assert_eq!(w.ci.calls().trigger, 1, "the gate triggered");
    // Other PRs start runs of the same job; `find` reads two runs a page.
    w.ci.busy("smoke", 5);
    {
        let mut f = w.ci.faults.lock().expect("lock");
        f.find_lag = Some(Duration::ZERO);
        f.find_page = Some(2);
    }
    let mut shown = None;
    for _ in 0..200 {
        let after = step(&w, &mut t).await;
        let run = &t.status.as_ref().expect("status").test_runs[0];
        let answered = run.attempts[0].answered_at.as_ref().map(|a| a.0);
        let past_grace = answered.is_some_and(|a| {
            k8s_openapi::jiff::Timestamp::now().duration_since(a)
                > k8s_openapi::jiff::SignedDuration::try_from(grace).expect("grace")
        });
        if past_grace && w.ci.calls().find >= 2 {
            shown = run.message.clone();
            break;
        }
        tokio::time::sleep(after.unwrap_or(Duration::from_millis(5))).await;
    }
    let shown = shown.expect("looked for the run again after the grace");
    assert!(shown.contains("not sure"), "{shown}");
    assert!(
        shown.contains("without reaching the intent's time"),
        "{shown}"
    );
    assert_eq!(w.ci.triggered("smoke"), 1, "re-armed on a 'not sure'");
    for _ in 0..1000 {
        let after = step(&w, &mut t).await;
        if t.status.as_ref().and_then(|s| s.phase) != Some(Phase::Testing) {
            break;
        }
        tokio::time::sleep(after.unwrap_or(Duration::from_millis(5))).await;
    }
    let st = t.status.expect("status");
    let run = &st.test_runs[0];
    assert_eq!(run.state, TestState::TimedOut, "{:?}", run.message);
    assert_eq!(w.ci.triggered("smoke"), 1, "re-armed on a 'not sure'");
    assert_eq!(w.ci.calls().trigger, 1);
    assert_eq!(run.attempts.len(), 1, "{:?}", run.attempts);
}

#[tokio::test]
async fn an_absent_run_is_re_armed_once_after_the_grace_on_a_busy_job() {
    // The trigger timed out before starting anything; `find` saw every run of the busy job
    // (the listing ended within its page) and none is ours: after the grace, one re-arm.
    let grace = Duration::from_millis(150);
    let w = world(grace, 1);
    w.ci.busy("smoke", 3);
    {
        let mut f = w.ci.faults.lock().expect("lock");
        f.find_page = Some(10);
        f.trigger_errors
            .push_back(PortError::ambiguous("timed out waiting for the answer"));
    }
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    until_gate_done(&w, &mut t).await;
    let st = t.status.expect("status");
    assert_eq!(st.promotions.len(), 1, "promoted: {:?}", st.message);
    assert_eq!(w.ci.calls().trigger, 2, "the lost trigger and one re-arm");
    assert_eq!(w.ci.triggered("smoke"), 1, "one run started");
    assert!(w.ci.calls().find >= 1);
    let run = &st.promotions[0].test_runs[0];
    assert_eq!(run.attempts.len(), 2, "{:?}", run.attempts);
    assert_eq!(run.attempts[0].outcome, Some(TriggerOutcome::Ambiguous));
    let answered = run.attempts[0].answered_at.as_ref().expect("answered").0;
    let rearmed = run.attempts[1].armed_at.0;
    assert!(
        rearmed.duration_since(answered)
            >= k8s_openapi::jiff::SignedDuration::try_from(grace).expect("grace"),
        "re-armed before the grace: {answered} -> {rearmed}"
    );
}

#[tokio::test]
async fn an_intent_that_provably_never_left_is_sent_at_once_after_a_restart() {
    // Issue #11 case 6: the process dies right after the first write that holds the
    // gate's intents, before any trigger left. Those intents were saved armed, so the
    // restart could not tell them from a sent trigger and waited the whole grace (an
    // hour here) after a `find`. Saved planned (with the write that shows the PR waiting
    // for Argo CD) and armed only by the write just before the trigger, they are sent
    // at once, without a search.
    let w = world(Duration::from_secs(3600), 1);
    w.argo
        .deploy("shop-dev", "0000000000000000000000000000000000000000");
    w.policies.upsert(one_test_policy("smoke", None));
    w.store.crashes.arm(CrashPoint::AfterIntentSave);
    let mut t = tracker();
    tokio::select! {
        r = w.engine.reconcile(&t, &w.policies, &w.store, &w.events) => {
            panic!("the reconcile never saved an intent: {r:?}")
        }
        _ = w.store.crashes.wait_hit() => {}
    }
    t.status = w.store.status.lock().expect("lock").clone();
    assert_eq!(w.ci.calls().trigger, 0, "nothing was sent before the crash");
    let saved = t.status.clone().expect("status");
    assert_eq!(saved.test_runs.len(), 1, "the intent was saved");

    // Argo CD deploys the PR while the controller is down; the restart: one reconcile.
    w.argo.deploy("shop-dev", SHA);
    step(&w, &mut t).await;
    let st = t.status.clone().expect("status");
    assert_eq!(
        w.ci.calls().trigger,
        1,
        "sent at once, not after the grace: {:?}",
        st.test_runs
    );
    assert_eq!(w.ci.calls().find, 0, "nothing to look for");
    assert_eq!(
        st.test_runs[0].attempts.len(),
        1,
        "armed once, not re-armed"
    );

    until_gate_done(&w, &mut t).await;
    let st = t.status.expect("status");
    assert_eq!(st.promotions.len(), 1, "promoted: {:?}", st.message);
    assert_eq!(w.ci.triggered("smoke"), 1);
    // The trigger's answer was kept in memory and written with the record.
    let run = &st.promotions[0].test_runs[0];
    assert!(run.run_id.is_some(), "{run:?}");
    assert_eq!(run.attempts.len(), 1, "one attempt, not a re-arm");
    assert_eq!(run.attempts[0].outcome, Some(TriggerOutcome::Started));
}

#[tokio::test]
async fn a_hop_is_written_twice_and_the_journey_end_once() {
    // Issue #13: the armed intents (before the trigger) and the promotion's record are
    // the writes a hop needs; Synced, the run ids, the pending promotion and the
    // Application step used to be written on their own (10 writes for this journey).
    let w = world(Duration::from_secs(3600), 1);
    w.policies.upsert(one_test_policy("smoke", None));
    let mut t = tracker();
    for _ in 0..50 {
        let after = step(&w, &mut t).await;
        if t.status.as_ref().and_then(|s| s.phase) == Some(Phase::Completed) {
            break;
        }
        tokio::time::sleep(after.unwrap_or(Duration::from_millis(5))).await;
    }
    let st = t.status.expect("status");
    assert_eq!(st.phase, Some(Phase::Completed), "{:?}", st.message);
    assert_eq!(st.promotions.len(), 1);
    assert_eq!(
        *w.store.saves.lock().expect("lock"),
        3,
        "armed intents, record, Completed"
    );
    assert_eq!(w.ci.triggered("smoke"), 1);
}

#[tokio::test]
async fn a_promotion_sent_before_a_crash_is_recorded_even_if_the_policy_changed_meanwhile() {
    // The pending promotion is no longer written before the Application is moved; the
    // patch itself marks the app `<tracker>@<sha>`. The process dies after the patch,
    // before the record; the policy is edited while it is down. The restart must record
    // the promotion that went out, not restart the gate and forget it.
    let w = world(Duration::from_millis(50), 1);
    w.policies.upsert(one_test_policy("smoke", None));
    w.argo.crashes.arm(CrashPoint::AfterPromote);
    let mut t = tracker();
    let crashed = async {
        loop {
            let after = step(&w, &mut t).await;
            tokio::time::sleep(after.unwrap_or(Duration::from_millis(5))).await;
        }
    };
    tokio::select! {
        _ = crashed => unreachable!(),
        _ = w.argo.crashes.wait_hit() => {}
    }
    t.status = w.store.status.lock().expect("lock").clone();
    assert_eq!(
        w.argo.promotions().len(),
        1,
        "the app moved before the crash"
    );
    assert!(
        t.status.as_ref().is_some_and(|s| s.promotions.is_empty()),
        "and no record was saved"
    );

    let mut edited = one_test_policy("smoke", None);
    edited.generation = Some(2);
    w.policies.upsert(edited);
    for _ in 0..10 {
        step(&w, &mut t).await;
        if t.status.as_ref().is_some_and(|s| !s.promotions.is_empty()) {
            break;
        }
    }
    let st = t.status.expect("status");
    assert_eq!(st.promotions.len(), 1, "recorded: {:?}", st.message);
    assert_eq!(st.promotions[0].target, "staging");
    assert_eq!(st.current_environment.as_deref(), Some("staging"));
    assert_eq!(w.argo.promotions().len(), 1, "moved once");
    assert_eq!(w.ci.triggered("smoke"), 1, "the gate was not run again");
}

//! Status conditions with observedGeneration, changed only when they change.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// The condition types a tracker carries.
pub mod types {
    /// The PR is deployed and healthy in its current environment.
    pub const SYNCED: &str = "Synced";
    /// The current gate passed.
    pub const TESTS_PASSED: &str = "TestsPassed";
    /// The last hop was promoted.
    pub const PROMOTED: &str = "Promoted";
    /// Nothing is wrong: the PR is moving or done.
    pub const READY: &str = "Ready";
    /// A policy can be used.
    pub const VALID: &str = "Valid";
    /// The CI configuration lets `find` see a policy's runs (the correlation id shows).
    pub const FIND_POSSIBLE: &str = "FindPossible";
}

/// Sets (or adds) a condition; lastTransitionTime moves only when the status flips.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    let status = if status { "True" } else { "False" }.to_string();
    set_raw(
        conditions,
        type_,
        status,
        reason,
        message.into(),
        generation,
    )
}

/// Sets a condition to Unknown (in progress).
pub fn set_unknown(
    conditions: &mut Vec<Condition>,
    type_: &str,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
) {
    set_raw(
        conditions,
        type_,
        "Unknown".into(),
        reason,
        message.into(),
        generation,
    )
}

fn set_raw(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: String,
    reason: &str,
    message: String,
    generation: Option<i64>,
) {
    // The API server limits messages to 32 KiB; keep ours readable and far below.
    let message: String = message.chars().take(1024).collect();
    if let Some(c) = conditions.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Time(Timestamp::now());
        }
        c.status = status;
        c.reason = reason.into();
        c.message = message;
        c.observed_generation = generation;
        return;
    }
    conditions.push(Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time: Time(Timestamp::now()),
    });
}

/// The condition of `type_`, if set.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_on_flips() {
        let mut cs = Vec::new();
        set(&mut cs, "Ready", true, "A", "one", Some(1));
        let first = cs[0].last_transition_time.clone();
        set(&mut cs, "Ready", true, "B", "two", Some(2));
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].last_transition_time, first);
        assert_eq!(
            (cs[0].reason.as_str(), cs[0].observed_generation),
            ("B", Some(2))
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
        set(&mut cs, "Ready", false, "C", "three", Some(2));
        assert_ne!(cs[0].last_transition_time, first);
        set_unknown(&mut cs, "Synced", "Deploying", "x", None);
        assert_eq!(
            get(&cs, "Synced").map(|c| c.status.as_str()),
            Some("Unknown")
        );
    }
}

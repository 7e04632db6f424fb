//! Delivery figures from what trackers record: lead time, promotions per day,
//! gate failure rate, time awaiting approval and in queue. Pure functions, so
//! the dashboard and (later) the controller's metrics compute them the same way.

use crate::view::{Policy, TestRun, Tracker};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;

/// Count, mean, median and maximum of a set of durations, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Spread {
    /// How many.
    pub count: usize,
    /// Mean.
    pub mean_seconds: f64,
    /// Median.
    pub p50_seconds: f64,
    /// Maximum.
    pub max_seconds: f64,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Self {
        if values.is_empty() {
            return Self::default();
        }
        values.sort_by(f64::total_cmp);
        let n = values.len();
        Self {
            count: n,
            mean_seconds: values.iter().sum::<f64>() / n as f64,
            p50_seconds: values[(n - 1) / 2],
            max_seconds: values[n - 1],
        }
    }
}

/// Lead time from the PR opened (the tracker created) to its arrival in an environment.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LeadTime {
    /// The environment reached.
    pub environment: String,
    /// The durations.
    pub spread: Spread,
}

/// Promotions into an environment on one day (UTC).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct DailyPromotions {
    /// The target environment.
    pub environment: String,
    /// YYYY-MM-DD.
    pub day: String,
    /// How many.
    pub count: usize,
}

/// How often a gate test fails.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateFailures {
    /// The environment whose gate runs it.
    pub environment: String,
    /// The test.
    pub test: String,
    /// Finished runs seen.
    pub runs: usize,
    /// Of which failed or timed out.
    pub failed: usize,
    /// failed / runs.
    pub rate: f64,
}

/// Time spent waiting, per environment waited for.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Wait {
    /// The environment.
    pub environment: String,
    /// Finished waits (promotions made).
    pub done: Spread,
    /// Waits still going on now.
    pub ongoing: Spread,
}

/// Every figure for a set of trackers.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Lead time per environment.
    pub lead_time: Vec<LeadTime>,
    /// Promotions per environment per day.
    pub promotions_per_day: Vec<DailyPromotions>,
    /// Failure rate per gate test.
    pub gate_failures: Vec<GateFailures>,
    /// Time awaiting approval, per target environment.
    pub awaiting_approval: Vec<Wait>,
    /// Time in queue, per target environment.
    pub queued: Vec<Wait>,
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> Option<f64> {
    let d = (to - from).num_milliseconds();
    (d >= 0).then(|| d as f64 / 1000.0)
}

fn last_required_pass(runs: &[TestRun]) -> Option<DateTime<Utc>> {
    runs.iter()
        .filter(|r| r.required != Some(false) && r.state.as_deref() == Some("Passed"))
        .filter_map(|r| r.finished_at)
        .max()
}

fn finished(state: Option<&str>) -> Option<bool> {
    match state {
        Some("Passed") => Some(false),
        Some("Failed" | "TimedOut") => Some(true),
        _ => None,
    }
}

/// Computes the figures at `now` from the trackers and the policies that gate them.
pub fn compute(trackers: &[Tracker], policies: &[Policy], now: DateTime<Utc>) -> Figures {
    let mut lead: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut daily: BTreeMap<(String, String), usize> = BTreeMap::new();
    let mut gates: BTreeMap<(String, String), (usize, usize)> = BTreeMap::new();
    let mut approval_done: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut approval_now: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut queue_now: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let needs_approval = |ns: &str, name: &str| {
        policies
            .iter()
            .any(|p| p.namespace() == ns && p.name() == name && p.needs_approval())
    };
    let mut count_runs = |env: &str, runs: &[TestRun]| {
        for r in runs {
            if let Some(failed) = finished(r.state.as_deref()) {
                let e = gates
                    .entry((env.to_string(), r.name.clone().unwrap_or_default()))
                    .or_default();
                e.0 += 1;
                e.1 += usize::from(failed);
            }
        }
    };
    for t in trackers {
        let status = t.status();
        for p in &status.promotions {
            let (Some(target), Some(at)) = (p.target.clone(), p.promoted_at) else {
                continue;
            };
            if let Some(opened) = t.created()
                && let Some(s) = seconds(opened, at)
            {
                lead.entry(target.clone()).or_default().push(s);
            }
            *daily
                .entry((target.clone(), at.format("%Y-%m-%d").to_string()))
                .or_default() += 1;
            count_runs(p.source.as_deref().unwrap_or(""), &p.test_runs);
            if needs_approval(t.namespace(), p.policy.as_deref().unwrap_or(""))
                && let Some(passed) = last_required_pass(&p.test_runs)
                && let Some(s) = seconds(passed, at)
            {
                approval_done.entry(target).or_default().push(s);
            }
        }
        // The current gate's finished runs count too: a failed gate leaves no record.
        count_runs(t.environment(), &status.test_runs);
        match t.phase() {
            "AwaitingApproval" => {
                if let Some(passed) = last_required_pass(&status.test_runs)
                    && let Some(s) = seconds(passed, now)
                {
                    let target = crate::board::gating_policy(t, policies)
                        .map(|p| p.target().to_string())
                        .unwrap_or_default();
                    approval_now.entry(target).or_default().push(s);
                }
            }
            "Queued" => {
                if let Some(q) = &status.queue
                    && let Some(since) = q.since
                    && let Some(s) = seconds(since, now)
                {
                    queue_now
                        .entry(q.environment.clone().unwrap_or_default())
                        .or_default()
                        .push(s);
                }
            }
            _ => {}
        }
    }
    let waits = |done: BTreeMap<String, Vec<f64>>, mut ongoing: BTreeMap<String, Vec<f64>>| {
        let mut envs: Vec<String> = done.keys().chain(ongoing.keys()).cloned().collect();
        envs.sort();
        envs.dedup();
        envs.into_iter()
            .map(|env| Wait {
                done: Spread::of(done.get(&env).cloned().unwrap_or_default()),
                ongoing: Spread::of(ongoing.remove(&env).unwrap_or_default()),
                environment: env,
            })
            .collect()
    };
    Figures {
        lead_time: lead
            .into_iter()
            .map(|(environment, v)| LeadTime {
                environment,
                spread: Spread::of(v),
            })
            .collect(),
        promotions_per_day: daily
            .into_iter()
            .map(|((environment, day), count)| DailyPromotions {
                environment,
                day,
                count,
            })
            .collect(),
        gate_failures: gates
            .into_iter()
            .map(|((environment, test), (runs, failed))| GateFailures {
                environment,
                test,
                runs,
                failed,
                rate: if runs == 0 {
                    0.0
                } else {
                    failed as f64 / runs as f64
                },
            })
            .collect(),
        awaiting_approval: waits(approval_done, approval_now),
        // Records do not say how long a PR queued, so only ongoing waits are known.
        queued: waits(BTreeMap::new(), queue_now),
    }
}

/// A duration in seconds for humans: "45s", "3m 20s", "2h 5m", "3d 4h".
pub fn human(seconds: f64) -> String {
    let s = seconds.round() as i64;
    match s {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m {}s", s / 60, s % 60),
        s if s < 86400 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tracker() -> Tracker {
        Tracker::from_value(json!({
            "metadata": {"name": "a", "namespace": "ns", "creationTimestamp": "2026-01-01T10:00:00Z"},
            "spec": {"number": 1, "environment": "dev"},
            "status": {"phase": "Failed", "currentEnvironment": "staging",
              "testRuns": [{"name": "e2e", "state": "Failed", "required": true}],
              "promotions": [{"source": "dev", "target": "staging", "policy": "d2s",
                "promotedAt": "2026-01-01T10:10:00Z",
                "testRuns": [{"name": "smoke", "state": "Passed", "required": true,
                              "finishedAt": "2026-01-01T10:04:00Z"}]}]}
        }))
    }

    #[test]
    fn lead_time_runs_from_the_tracker_to_the_record() {
        let f = compute(&[tracker()], &[], Utc::now());
        assert_eq!(f.lead_time[0].environment, "staging");
        assert_eq!(f.lead_time[0].spread.p50_seconds, 600.0);
        assert_eq!(f.promotions_per_day[0].day, "2026-01-01");
    }

    #[test]
    fn a_failed_gate_counts_against_its_test_and_approval_waits_from_the_last_pass() {
        let policy = Policy::from_value(json!({"metadata": {"name": "d2s", "namespace": "ns"},
            "spec": {"sourceEnvironment": "dev", "targetEnvironment": "staging", "autoPromote": false}}));
        let f = compute(&[tracker()], &[policy], Utc::now());
        let e2e = f
            .gate_failures
            .iter()
            .find(|g| g.test == "e2e")
            .expect("e2e");
        assert_eq!(
            (e2e.runs, e2e.failed, e2e.environment.as_str()),
            (1, 1, "staging")
        );
        assert_eq!(f.awaiting_approval[0].done.max_seconds, 360.0);
    }
}

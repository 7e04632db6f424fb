//! Where every PR stands, environment by environment: the model behind both
//! `kubectl promotion status` and the dashboard.

use crate::chain;
use crate::view::{Approval, Policy, TestRun, Tracker, short};
use serde::Serialize;

/// How a cell (one PR in one environment) reads at a glance.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    /// Done here (promoted on, or completed).
    Done,
    /// The controller is working on it.
    Moving,
    /// Waits: for a person, or for its turn.
    Waiting,
    /// Failed.
    Failed,
    /// Nothing here.
    Empty,
}

/// One gate test, as shown.
#[derive(Clone, Debug, Serialize)]
pub struct Gate {
    /// The test's name.
    pub name: String,
    /// Its state ("Passed", "Running", ...; whatever the controller wrote).
    pub state: String,
    /// Its CI link.
    pub url: Option<String>,
    /// Whether it blocks the promotion.
    pub required: bool,
    /// How many times it was re-armed, when recorded.
    pub attempts: usize,
}

/// One PR in one environment.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// The environment.
    pub environment: String,
    /// The phase there ("Promoted" for an environment left behind; "" when not reached).
    pub phase: String,
    /// At a glance.
    pub tone: Tone,
    /// The gate tests there.
    pub gates: Vec<Gate>,
    /// One short line: the phase and what it waits for.
    pub summary: String,
}

/// Where a Queued PR stands in line.
#[derive(Clone, Debug, Serialize)]
pub struct QueueSpot {
    /// The environment it waits for.
    pub environment: String,
    /// 1 = next.
    pub position: Option<i64>,
    /// The tracker holding the environment.
    pub holder: Option<String>,
}

/// One PR across the environments.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The tracker's namespace.
    pub namespace: String,
    /// The tracker's name.
    pub name: String,
    /// `owner/repo#N`.
    pub pr: String,
    /// The PR number.
    pub number: Option<i64>,
    /// The head SHA.
    pub head_sha: String,
    /// The phase.
    pub phase: String,
    /// The current environment.
    pub environment: String,
    /// The controller's one line.
    pub message: String,
    /// Its place in a queue, when Queued.
    pub queue: Option<QueueSpot>,
    /// The environment a person must approve, when awaiting approval.
    pub approval_needed: Option<String>,
    /// An approval that does not count (another SHA or environment), for humans.
    pub approval_void: Option<String>,
    /// One cell per environment, in chain order.
    pub cells: Vec<Cell>,
}

/// Every PR of a scope, with the environments in chain order.
#[derive(Clone, Debug, Serialize)]
pub struct Board {
    /// The environments, in chain order.
    pub environments: Vec<String>,
    /// One row per tracker.
    pub rows: Vec<Row>,
}

/// Builds the board from what the cluster holds.
pub fn board(trackers: &[Tracker], policies: &[Policy]) -> Board {
    let seen: Vec<&str> = trackers
        .iter()
        .flat_map(|t| {
            [
                t.spec
                    .as_ref()
                    .and_then(|s| s.environment.as_deref())
                    .unwrap_or(""),
                t.environment(),
            ]
        })
        .collect();
    let environments = chain::order(policies, &seen);
    let rows = trackers
        .iter()
        .map(|t| row(t, policies, &environments))
        .collect();
    Board { environments, rows }
}

/// The policy that gates the tracker's current environment, if the cluster has one.
pub fn gating_policy<'a>(t: &Tracker, policies: &'a [Policy]) -> Option<&'a Policy> {
    let named = t
        .status
        .as_ref()
        .and_then(|s| s.policy.as_ref()?.name.clone());
    if let Some(name) = named
        && let Some(p) = policies
            .iter()
            .find(|p| p.name() == name && p.namespace() == t.namespace())
    {
        return Some(p);
    }
    let labels = t.labels();
    policies.iter().find(|p| {
        p.namespace() == t.namespace() && p.source() == t.environment() && p.selects(&labels)
    })
}

fn gates(runs: &[TestRun]) -> Vec<Gate> {
    runs.iter()
        .map(|r| Gate {
            name: r.name.clone().unwrap_or_default(),
            state: r.state.clone().unwrap_or_else(|| "Unknown".into()),
            url: r.url.clone(),
            required: r.required.unwrap_or(true),
            attempts: r.attempts.len(),
        })
        .collect()
}

/// The tone of a phase; unknown phases are shown as moving.
pub fn tone(phase: &str) -> Tone {
    match phase {
        "Completed" | "Promoted" => Tone::Done,
        "Failed" => Tone::Failed,
        "AwaitingApproval" | "Queued" | "Closed" => Tone::Waiting,
        "" => Tone::Empty,
        _ => Tone::Moving,
    }
}

fn gate_summary(gates: &[Gate]) -> String {
    if gates.is_empty() {
        return String::new();
    }
    let mut counts: Vec<(String, usize)> = Vec::new();
    for g in gates {
        let state = g.state.to_ascii_lowercase();
        match counts.iter_mut().find(|(s, _)| *s == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    counts
        .iter()
        .map(|(s, n)| format!("{n} {s}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn row(t: &Tracker, policies: &[Policy], environments: &[String]) -> Row {
    let status = t.status();
    let phase = t.phase().to_string();
    let current = t.environment().to_string();
    let policy = gating_policy(t, policies);
    let queue = status.queue.as_ref().map(|q| QueueSpot {
        environment: q
            .environment
            .clone()
            .or_else(|| policy.map(|p| p.target().to_string()))
            .unwrap_or_default(),
        position: q.position,
        holder: q.holder.clone(),
    });
    let target = policy.map(|p| p.target().to_string());
    let approval = Approval::of(t);
    let approval_needed = (phase == "AwaitingApproval").then(|| target.clone().unwrap_or_default());
    let approval_void = approval.as_ref().and_then(|a| {
        let env = approval_needed.as_deref()?;
        (!a.covers(env, t.head_sha())).then(|| {
            format!(
                "approval {}@{} does not count: the PR is at {} and waits for {env}",
                a.environment,
                a.sha.as_deref().unwrap_or("(no sha)"),
                short(t.head_sha())
            )
        })
    });
    let cells = environments
        .iter()
        .map(|env| {
            if *env == current {
                let gates = gates(&status.test_runs);
                let mut summary = phase.clone();
                if summary.is_empty() {
                    summary = "Pending".into();
                }
                match phase.as_str() {
                    "Queued" => {
                        if let Some(q) = &queue {
                            summary = format!(
                                "Queued #{} for {}{}",
                                q.position.map(|p| p.to_string()).unwrap_or("?".into()),
                                q.environment,
                                q.holder
                                    .as_ref()
                                    .map(|h| format!(" behind {h}"))
                                    .unwrap_or_default()
                            );
                        }
                    }
                    "AwaitingApproval" => {
                        summary = format!(
                            "AwaitingApproval for {}@{}",
                            approval_needed.clone().unwrap_or_default(),
                            short(t.head_sha())
                        );
                    }
                    _ => {
                        let g = gate_summary(&gates);
                        if !g.is_empty() {
                            summary = format!("{summary} ({g})");
                        }
                    }
                }
                Cell {
                    environment: env.clone(),
                    phase: phase.clone(),
                    tone: if phase.is_empty() {
                        Tone::Moving
                    } else {
                        tone(&phase)
                    },
                    gates,
                    summary,
                }
            } else if let Some(record) = status
                .promotions
                .iter()
                .rev()
                .find(|r| r.source.as_deref() == Some(env.as_str()))
            {
                let gates = gates(&record.test_runs);
                let g = gate_summary(&gates);
                Cell {
                    environment: env.clone(),
                    phase: "Promoted".into(),
                    tone: Tone::Done,
                    summary: if g.is_empty() {
                        "Promoted".into()
                    } else {
                        format!("Promoted ({g})")
                    },
                    gates,
                }
            } else {
                Cell {
                    environment: env.clone(),
                    phase: String::new(),
                    tone: Tone::Empty,
                    gates: Vec::new(),
                    summary: String::new(),
                }
            }
        })
        .collect();
    Row {
        namespace: t.namespace().to_string(),
        name: t.name().to_string(),
        pr: t.pr(),
        number: t.number(),
        head_sha: t.head_sha().to_string(),
        phase,
        environment: current,
        message: status.message.unwrap_or_default(),
        queue,
        approval_needed,
        approval_void,
        cells,
    }
}

//! `explain`: the one thing that holds a PR now, the evidence, and the command
//! that moves it on.

use crate::board::gating_policy;
use crate::view::{Approval, Policy, Tracker, short};
use serde::Serialize;
use serde_json::Value;

/// Who the PR waits on, which is also the exit code of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    /// The controller (or CI, or Argo CD) is moving it: exit 0.
    Moving,
    /// A person must act: exit 1.
    WaitsOnPerson,
    /// It failed: exit 2.
    Failed,
}

impl Verdict {
    /// The process exit code for this verdict.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::Moving => 0,
            Self::WaitsOnPerson => 1,
            Self::Failed => 2,
        }
    }
}

/// What `explain` says.
#[derive(Clone, Debug, Serialize)]
pub struct Diagnosis {
    /// `owner/repo#N`.
    pub pr: String,
    /// namespace/name of the tracker.
    pub tracker: String,
    /// Who it waits on.
    pub verdict: Verdict,
    /// The one thing, in plain words.
    pub reason: String,
    /// What shows it.
    pub evidence: Vec<String>,
    /// The exact command that moves it on, when a person can.
    pub command: Option<String>,
}

/// What else the diagnosis may look at, each read with the user's rights (absent when unreadable).
#[derive(Default)]
pub struct Context {
    /// The namespace's policies.
    pub policies: Vec<Policy>,
    /// The current environment's Argo CD Application.
    pub application: Option<Value>,
    /// The tracker holding the environment this one queues for.
    pub holder: Option<Tracker>,
    /// Why a piece of context could not be read (e.g. a 403), shown as evidence.
    pub unreadable: Vec<String>,
}

/// Explains a tracker. `reference` is how the user named it, reused in the suggested commands.
pub fn diagnose(t: &Tracker, ctx: &Context, reference: &str) -> Diagnosis {
    let ns = t.namespace();
    let status = t.status();
    let env = t.environment().to_string();
    let phase = t.phase();
    let mut evidence = Vec::new();
    if let Some(m) = status.message.as_deref().filter(|m| !m.is_empty()) {
        evidence.push(format!("the controller says: {m}"));
    }
    for c in &status.conditions {
        // The controller often repeats its message in Ready's; say it once.
        let repeats = match (c.message.as_deref(), status.message.as_deref()) {
            (Some(cm), Some(m)) => !m.is_empty() && cm.starts_with(m),
            _ => false,
        };
        if c.status.as_deref() == Some("False") && c.type_.as_deref() == Some("Ready") && !repeats {
            evidence.push(format!(
                "condition Ready=False ({}): {}",
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            ));
        }
    }
    let policy = gating_policy(t, &ctx.policies);
    let target = policy.map(|p| p.target().to_string());
    let sha = t.head_sha();
    let cmd =
        |verb: &str, extra: &str| format!("kubectl promotion {verb} {reference}{extra} -n {ns}");
    let (verdict, reason, command) = match phase {
        "" | "Pending" => {
            if t.status.is_none() {
                evidence.push("the tracker has no status yet: is promotion-controller running and watching this namespace?".into());
            }
            (
                Verdict::Moving,
                format!("waiting for the controller to pick it up in {env}"),
                None,
            )
        }
        "Deploying" => {
            app_evidence(&mut evidence, ctx, sha);
            (
                Verdict::Moving,
                format!(
                    "waiting for Argo CD to deploy {} in {env} (Synced and Healthy at that revision)",
                    short(sha)
                ),
                None,
            )
        }
        "Synced" | "Testing" => {
            let runs = &status.test_runs;
            let unfinished: Vec<_> = runs
                .iter()
                .filter(|r| matches!(r.state.as_deref(), Some("Pending" | "Running") | None))
                .collect();
            for r in runs {
                evidence.push(run_line(r));
            }
            let names: Vec<String> = unfinished
                .iter()
                .map(|r| r.name.clone().unwrap_or_default())
                .collect();
            (
                Verdict::Moving,
                if names.is_empty() {
                    format!("gate tests in {env} are about to be judged")
                } else {
                    format!(
                        "waiting for gate tests in {env} to finish: {}",
                        names.join(", ")
                    )
                },
                None,
            )
        }
        "AwaitingApproval" => {
            let to = target.clone().unwrap_or_else(|| "<environment>".into());
            for r in &status.test_runs {
                evidence.push(run_line(r));
            }
            if let Some(p) = policy {
                evidence.push(format!(
                    "policy {} ({} -> {}) has autoPromote: false: a person approves each promotion",
                    p.name(),
                    p.source(),
                    p.target()
                ));
            }
            match Approval::of(t) {
                Some(a) if !a.covers(&to, sha) => evidence.push(format!(
                    "the approval on the tracker is void: it approves {}@{} (by {}), the PR is at {} and waits for {to}",
                    a.environment,
                    a.sha.as_deref().unwrap_or("(no sha)"),
                    a.by.as_deref().unwrap_or("nobody named"),
                    short(sha)
                )),
                Some(a) => evidence.push(format!(
                    "an approval for {}@{} by {} is on the tracker; the controller has not acted on it yet",
                    a.environment,
                    a.sha.as_deref().unwrap_or(""),
                    a.by.as_deref().unwrap_or("nobody named")
                )),
                None => evidence.push(format!(
                    "no approval annotation ({}) is on the tracker",
                    crate::view::APPROVE_ANNOTATION
                )),
            }
            (
                Verdict::WaitsOnPerson,
                format!(
                    "every required test passed in {env}; it waits for a person to approve the promotion to {to} at {}",
                    short(sha)
                ),
                Some(cmd("approve", &format!(" --to {to}"))),
            )
        }
        "Queued" => queued(t, ctx, &env, &mut evidence, target.as_deref()),
        "Promoting" | "Promoted" => (
            Verdict::Moving,
            format!(
                "being promoted from {env}{}",
                target
                    .as_ref()
                    .map(|t| format!(" to {t}"))
                    .unwrap_or_default()
            ),
            None,
        ),
        "Failed" => {
            let failed: Vec<_> = status
                .test_runs
                .iter()
                .filter(|r| {
                    r.required != Some(false)
                        && matches!(
                            r.state.as_deref(),
                            Some("Failed" | "TimedOut" | "Cancelled")
                        )
                })
                .collect();
            for r in &status.test_runs {
                evidence.push(run_line(r));
            }
            let reason = if failed.is_empty() {
                format!("the gate in {env} failed")
            } else {
                format!(
                    "required test {} in {env}",
                    failed
                        .iter()
                        .map(|r| format!(
                            "{} {}",
                            r.name.clone().unwrap_or_default(),
                            r.state.clone().unwrap_or_default().to_ascii_lowercase()
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            (
                Verdict::Failed,
                reason,
                Some(format!("{}   (or push a new commit)", cmd("retry", ""))),
            )
        }
        "Completed" => (
            Verdict::Moving,
            format!("done: it went through every environment and is in {env}"),
            None,
        ),
        "Closed" => (
            Verdict::Moving,
            "the pull request is closed; nothing more happens".into(),
            None,
        ),
        other => (
            Verdict::Moving,
            format!(
                "phase {other} in {env} (this version of kubectl-promotion does not know that phase; the controller's message says more)"
            ),
            None,
        ),
    };
    evidence.extend(ctx.unreadable.iter().cloned());
    Diagnosis {
        pr: t.pr(),
        tracker: format!("{ns}/{}", t.name()),
        verdict,
        reason,
        evidence,
        command,
    }
}

fn queued(
    t: &Tracker,
    ctx: &Context,
    env: &str,
    evidence: &mut Vec<String>,
    target: Option<&str>,
) -> (Verdict, String, Option<String>) {
    let q = t.status().queue.unwrap_or_default();
    let to = q
        .environment
        .clone()
        .or(target.map(str::to_string))
        .unwrap_or_else(|| "the next environment".into());
    let position = q
        .position
        .map(|p| format!("#{p} in line"))
        .unwrap_or_else(|| "in line".into());
    if let Some(app) = &q.application {
        evidence.push(format!(
            "the queue is for Application {}/{}",
            app.namespace.as_deref().unwrap_or("argocd"),
            app.name.as_deref().unwrap_or("?")
        ));
    }
    if let Some(since) = q.since {
        evidence.push(format!(
            "queued since {}",
            since.format("%Y-%m-%d %H:%M:%SZ")
        ));
    }
    let Some(holder_name) = q.holder.clone() else {
        return (
            Verdict::Moving,
            format!("passed its gate in {env}; {position} for {to}"),
            None,
        );
    };
    let mut verdict = Verdict::Moving;
    let mut command = None;
    if let Some(h) = &ctx.holder {
        let hphase = h.phase();
        evidence.push(format!(
            "{holder_name} ({}) holds {to}: {hphase} in {}{}",
            h.pr(),
            h.environment(),
            h.status()
                .message
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
        // The line moves only when the holder does; a holder waiting on a person holds everyone.
        match hphase {
            "AwaitingApproval" => {
                verdict = Verdict::WaitsOnPerson;
                let htarget = gating_policy(h, &ctx.policies)
                    .map(|p| p.target().to_string())
                    .unwrap_or_else(|| "<environment>".into());
                command = Some(format!(
                    "kubectl promotion approve {} --to {htarget} -n {}   (the holder's approval)",
                    h.name(),
                    h.namespace()
                ));
            }
            "Failed" => {
                verdict = Verdict::WaitsOnPerson;
                command = Some(format!(
                    "kubectl promotion retry {} -n {}   (the holder failed; or close it)",
                    h.name(),
                    h.namespace()
                ));
            }
            _ => {}
        }
    }
    (
        verdict,
        format!("passed its gate in {env}; {position} for {to}, which {holder_name} holds"),
        command,
    )
}

fn app_evidence(evidence: &mut Vec<String>, ctx: &Context, sha: &str) {
    let Some(app) = &ctx.application else {
        return;
    };
    let name = format!(
        "{}/{}",
        app["metadata"]["namespace"].as_str().unwrap_or(""),
        app["metadata"]["name"].as_str().unwrap_or("")
    );
    let revision = app["spec"]["source"]["targetRevision"]
        .as_str()
        .unwrap_or("?");
    let sync = app["status"]["sync"]["status"]
        .as_str()
        .unwrap_or("unknown");
    let synced_rev = app["status"]["sync"]["revision"].as_str().unwrap_or("?");
    let health = app["status"]["health"]["status"]
        .as_str()
        .unwrap_or("unknown");
    evidence.push(format!(
        "Application {name}: targetRevision {}, sync {sync} at {}, health {health}",
        short(revision),
        short(synced_rev)
    ));
    if !revision.starts_with(sha) && !sha.starts_with(revision) {
        evidence.push(format!(
            "the Application does not deploy the PR's commit {} yet",
            short(sha)
        ));
    }
}

fn run_line(r: &crate::view::TestRun) -> String {
    let mut line = format!(
        "test {} ({}{}{}): {}",
        r.name.as_deref().unwrap_or("?"),
        r.provider.as_deref().unwrap_or("?"),
        r.job
            .as_deref()
            .map(|j| format!(" {j}"))
            .unwrap_or_default(),
        if r.required == Some(false) {
            ", optional"
        } else {
            ""
        },
        r.state.as_deref().unwrap_or("Unknown")
    );
    if let Some(m) = r.message.as_deref().filter(|m| !m.is_empty()) {
        line.push_str(&format!(": {m}"));
    }
    if let Some(u) = &r.url {
        line.push_str(&format!("  {u}"));
    }
    if r.attempts.len() > 1 {
        line.push_str(&format!("  ({} attempts)", r.attempts.len()));
    }
    line
}

/// The diagnosis as text for a terminal.
pub fn render(d: &Diagnosis) -> String {
    let mut out = format!(
        "PR {} (tracker {})\n{}: {}\n",
        d.pr,
        d.tracker,
        match d.verdict {
            Verdict::Moving => "Moving",
            Verdict::WaitsOnPerson => "Waits on a person",
            Verdict::Failed => "Failed",
        },
        d.reason
    );
    if !d.evidence.is_empty() {
        out.push_str("Evidence:\n");
        for e in &d.evidence {
            out.push_str(&format!("  - {e}\n"));
        }
    }
    match &d.command {
        Some(c) => out.push_str(&format!("Next:\n  {c}\n")),
        None => out.push_str(&format!(
            "Next: nothing to do; follow it with kubectl promotion watch -n {}\n",
            d.tracker.split('/').next().unwrap_or("")
        )),
    }
    out
}

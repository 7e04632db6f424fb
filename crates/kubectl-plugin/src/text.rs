//! Plain-text rendering for the terminal: tables, colours (only on a terminal),
//! the policy graph and the history timeline.

use crate::board::{Board, Tone};
use crate::chain::Chain;
use crate::cluster::EventView;
use crate::view::{Tracker, short};
use anstyle::{AnsiColor, Style};
use chrono::{DateTime, Utc};

/// Whether to colour output.
#[derive(Clone, Copy, Debug)]
pub struct Paint(pub bool);

impl Paint {
    /// Colours when stdout is a terminal and NO_COLOR is unset.
    pub fn for_stdout() -> Self {
        use std::io::IsTerminal;
        Self(std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none())
    }

    fn tone(self, text: &str, tone: Tone) -> String {
        if !self.0 {
            return text.to_string();
        }
        let style: Style = match tone {
            Tone::Done => AnsiColor::Green.on_default(),
            Tone::Moving => AnsiColor::Cyan.on_default(),
            Tone::Waiting => AnsiColor::Yellow.on_default(),
            Tone::Failed => AnsiColor::Red.on_default().bold(),
            Tone::Empty => return text.to_string(),
        };
        format!("{}{text}{}", style.render(), style.render_reset())
    }
}

/// Renders rows of (text, tone) cells under headers, columns padded to fit (colour after padding).
pub fn table(headers: &[String], rows: &[Vec<(String, Tone)>], paint: Paint) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, (text, _)) in row.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(text.chars().count());
            }
        }
    }
    let mut out = String::new();
    let line = |cells: Vec<(String, Tone)>, out: &mut String| {
        let last = cells.len().saturating_sub(1);
        for (i, (text, tone)) in cells.into_iter().enumerate() {
            let pad = widths
                .get(i)
                .copied()
                .unwrap_or(0)
                .saturating_sub(text.chars().count());
            out.push_str(&paint.tone(&text, tone));
            if i < last {
                out.push_str(&" ".repeat(pad + 3));
            }
        }
        out.push('\n');
    };
    line(
        headers
            .iter()
            .map(|h| (h.to_ascii_uppercase(), Tone::Empty))
            .collect(),
        &mut out,
    );
    for row in rows {
        line(row.clone(), &mut out);
    }
    out
}

/// The status table: one row per PR, one column per environment.
pub fn status(board: &Board, wide: bool, all_namespaces: bool, paint: Paint) -> String {
    if board.rows.is_empty() {
        return "No pull request trackers found.\n".into();
    }
    let mut headers: Vec<String> = Vec::new();
    if all_namespaces {
        headers.push("namespace".into());
    }
    headers.push("pr".into());
    if wide {
        headers.extend(["tracker".into(), "sha".into()]);
    }
    headers.extend(board.environments.iter().cloned());
    if wide {
        headers.push("message".into());
    }
    let rows: Vec<Vec<(String, Tone)>> = board
        .rows
        .iter()
        .map(|r| {
            let mut cells = Vec::new();
            if all_namespaces {
                cells.push((r.namespace.clone(), Tone::Empty));
            }
            cells.push((r.pr.clone(), Tone::Empty));
            if wide {
                cells.push((r.name.clone(), Tone::Empty));
                cells.push((short(&r.head_sha).to_string(), Tone::Empty));
            }
            for c in &r.cells {
                let text = if c.summary.is_empty() {
                    "-".to_string()
                } else if wide && !c.gates.is_empty() {
                    format!(
                        "{} [{}]",
                        c.summary.split(" (").next().unwrap_or(""),
                        c.gates
                            .iter()
                            .map(|g| format!("{}={}", g.name, g.state))
                            .collect::<Vec<_>>()
                            .join(" ")
                    )
                } else {
                    c.summary.clone()
                };
                cells.push((text, c.tone));
            }
            if wide {
                cells.push((r.message.clone(), Tone::Empty));
            }
            cells
        })
        .collect();
    table(&headers, &rows, paint)
}

/// The policies as a graph in text, per namespace and selector, with what is wrong.
pub fn policies(chains: &[Chain], paint: Paint) -> String {
    if chains.is_empty() {
        return "No promotion policies found.\n".into();
    }
    let mut out = String::new();
    for c in chains {
        out.push_str(&format!(
            "namespace {} ({}):  {}\n",
            c.namespace,
            c.selector,
            c.environments.join(" ──▶ ")
        ));
        let width = c
            .hops
            .iter()
            .map(|h| h.source.len() + h.target.len())
            .max()
            .unwrap_or(0);
        for h in &c.hops {
            let arrow = format!("{} ──▶ {}", h.source, h.target);
            let pad = width.saturating_sub(h.source.len() + h.target.len());
            let mut line = format!(
                "  {arrow}{}   {}   tests: {}",
                " ".repeat(pad),
                h.policy,
                if h.tests.is_empty() {
                    "none".into()
                } else {
                    h.tests.join(", ")
                }
            );
            if h.approval {
                line.push_str("   approval required");
            }
            if h.invalid.is_some() {
                line.push_str("   INVALID");
            }
            out.push_str(&line);
            out.push('\n');
        }
        if c.findings.is_empty() {
            out.push_str(&paint.tone("  ok: one chain, no gaps, cycles or conflicts", Tone::Done));
            out.push('\n');
        }
        for f in &c.findings {
            out.push_str(&format!(
                "  {}\n",
                paint.tone(&format!("✗ {}", f.message), Tone::Failed)
            ));
        }
        out.push('\n');
    }
    out
}

fn stamp(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%SZ").to_string())
        .unwrap_or_else(|| "????-??-?? ??:??:??Z".into())
}

/// One line of a timeline.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Moment {
    /// When.
    pub time: Option<DateTime<Utc>>,
    /// What, first line.
    pub what: String,
    /// Details (gate runs), one per line.
    pub details: Vec<String>,
}

/// The tracker's timeline: created, each PromotionRecord with its gating runs,
/// the current gate, and the Events, in time order.
pub fn timeline(t: &Tracker, events: &[EventView]) -> Vec<Moment> {
    let mut out = Vec::new();
    let entry = t
        .spec
        .as_ref()
        .and_then(|s| s.environment.clone())
        .unwrap_or_default();
    out.push(Moment {
        time: t.created(),
        what: format!("tracker created at {} ({entry})", short(t.head_sha())),
        details: Vec::new(),
    });
    let run_line = |r: &crate::view::TestRun| {
        format!(
            "{} ({}{}) {}{}{}",
            r.name.as_deref().unwrap_or("?"),
            r.provider.as_deref().unwrap_or("?"),
            if r.required == Some(false) {
                ", optional"
            } else {
                ""
            },
            r.state.as_deref().unwrap_or("?"),
            match (r.started_at, r.finished_at) {
                (Some(s), Some(f)) => format!(" in {}s", (f - s).num_seconds()),
                _ => String::new(),
            },
            r.url
                .as_deref()
                .map(|u| format!("  {u}"))
                .unwrap_or_default()
        )
    };
    let status = t.status();
    for p in &status.promotions {
        out.push(Moment {
            time: p.promoted_at,
            what: format!(
                "promoted {} -> {} at {} by {} (policy {})",
                p.source.as_deref().unwrap_or("?"),
                p.target.as_deref().unwrap_or("?"),
                short(p.revision.as_deref().unwrap_or("")),
                p.promoted_by.as_deref().unwrap_or("?"),
                p.policy.as_deref().unwrap_or("?")
            ),
            details: p.test_runs.iter().map(run_line).collect(),
        });
    }
    for e in events {
        out.push(Moment {
            time: e.time,
            what: format!("event {} {}: {}", e.type_, e.reason, e.note),
            details: Vec::new(),
        });
    }
    out.sort_by_key(|m| m.time);
    if !status.test_runs.is_empty() || status.phase.is_some() {
        out.push(Moment {
            time: None,
            what: format!(
                "now: {} in {}{}",
                t.phase(),
                t.environment(),
                status
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            details: status.test_runs.iter().map(run_line).collect(),
        });
    }
    out
}

/// The timeline as text.
pub fn history(t: &Tracker, moments: &[Moment], note: Option<&str>) -> String {
    let mut out = format!(
        "{} (tracker {}/{}), head {}\n",
        t.pr(),
        t.namespace(),
        t.name(),
        short(t.head_sha())
    );
    for m in moments {
        let when = if m.what.starts_with("now:") {
            format!("{:<20}", "now")
        } else {
            stamp(m.time)
        };
        out.push_str(&format!("{when}  {}\n", m.what));
        for d in &m.details {
            out.push_str(&format!("{:<20}      {d}\n", ""));
        }
    }
    if let Some(n) = note {
        out.push_str(&format!("({n})\n"));
    }
    out
}

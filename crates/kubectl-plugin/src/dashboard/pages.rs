//! The dashboard's HTML, rendered on the server from templates (auto-escaped).

use crate::board::{self, Board, Row};
use crate::cluster::{Error, EventView};
use crate::explain::{self, Context, Verdict};
use crate::figures;
use crate::view::{Policy, Tracker, short};
use minijinja::{Environment, Value, context};
use serde::Serialize;

/// The templates, loaded once.
pub struct Pages {
    env: Environment<'static>,
}

#[derive(Serialize)]
struct Column<'a> {
    environment: &'a str,
    cards: Vec<Card<'a>>,
}

#[derive(Serialize)]
struct Card<'a> {
    #[serde(flatten)]
    row: &'a Row,
    tone: board::Tone,
    sha: &'a str,
    gates: &'a [board::Gate],
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Escapes text and turns the http(s) URLs in it into links.
fn linkify(text: String) -> Value {
    let html: Vec<String> = text
        .split(' ')
        .map(|word| {
            if word.starts_with("http://") || word.starts_with("https://") {
                let w = escape(word);
                format!("<a href=\"{w}\">{w}</a>")
            } else {
                escape(word)
            }
        })
        .collect();
    Value::from_safe_string(html.join(" "))
}

impl Pages {
    /// Loads the templates compiled into the binary.
    pub fn new() -> Result<Self, Error> {
        let mut env = Environment::new();
        for (name, source) in [
            ("layout.html", include_str!("../../templates/layout.html")),
            (
                "namespace.html",
                include_str!("../../templates/namespace.html"),
            ),
            ("board.html", include_str!("../../templates/board.html")),
            ("pr.html", include_str!("../../templates/pr.html")),
            ("problem.html", include_str!("../../templates/problem.html")),
        ] {
            env.add_template(name, source)
                .map_err(|e| Error::Usage(format!("template {name}: {e}")))?;
        }
        env.add_filter("human", |s: f64| figures::human(s));
        env.add_filter("linkify", linkify);
        Ok(Self { env })
    }

    fn render(&self, name: &str, ctx: Value) -> String {
        match self.env.get_template(name).and_then(|t| t.render(ctx)) {
            Ok(html) => html,
            // A template bug must not take the server down; show it instead.
            Err(e) => format!(
                "<p class=\"problem\">rendering {name}: {}</p>",
                escape(&e.to_string())
            ),
        }
    }

    fn board_context(ns: &str, trackers: &[Tracker], policies: &[Policy]) -> Value {
        let b: Board = board::board(trackers, policies);
        let columns: Vec<Column> = b
            .environments
            .iter()
            .map(|env| Column {
                environment: env,
                cards: b
                    .rows
                    .iter()
                    .filter(|r| r.environment == *env)
                    .map(|r| {
                        let cell = r.cells.iter().find(|c| c.environment == *env);
                        Card {
                            row: r,
                            tone: cell.map(|c| c.tone).unwrap_or(board::Tone::Moving),
                            sha: short(&r.head_sha),
                            gates: cell.map(|c| c.gates.as_slice()).unwrap_or(&[]),
                        }
                    })
                    .collect(),
            })
            .collect();
        let figures = figures::compute(trackers, policies, chrono::Utc::now());
        context! { namespace => ns, columns => Value::from_serialize(&columns), figures => Value::from_serialize(&figures) }
    }

    /// The board fragment (`<div id="board">`), also sent over server-sent events.
    pub fn board(
        &self,
        ns: &str,
        trackers: &[Tracker],
        policies: &[Policy],
        problem: Option<&str>,
    ) -> String {
        let ctx = Self::board_context(ns, trackers, policies);
        self.render("board.html", context! { problem => problem, ..ctx })
    }

    /// The namespace page: the board, and the script that keeps it live.
    pub fn namespace(&self, ns: &str, trackers: &[Tracker], policies: &[Policy]) -> String {
        let ctx = Self::board_context(ns, trackers, policies);
        self.render(
            "namespace.html",
            context! { problem => None::<String>, ..ctx },
        )
    }

    /// A PR's page: the diagnosis and the timeline.
    pub fn pr(
        &self,
        ns: &str,
        t: &Tracker,
        ctx: &Context,
        events: &[EventView],
        note: Option<&str>,
    ) -> String {
        let d = explain::diagnose(t, ctx, t.name());
        let verdict = match d.verdict {
            Verdict::Moving => "Moving",
            Verdict::WaitsOnPerson => "Waits on a person",
            Verdict::Failed => "Failed",
        };
        let timeline = crate::text::timeline(t, events);
        self.render(
            "pr.html",
            context! {
                namespace => ns,
                sha => short(t.head_sha()),
                diagnosis => Value::from_serialize(&d),
                verdict => verdict,
                timeline => Value::from_serialize(&timeline),
                note => note,
            },
        )
    }

    /// A page that says what went wrong (e.g. "you may not list ...").
    pub fn problem(&self, message: &str) -> String {
        self.render("problem.html", context! { problem => message })
    }
}

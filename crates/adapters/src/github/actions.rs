//! GitHub Actions as a [`TestRunner`]: a gate test is a `workflow_dispatch` run.
//!
//! Addressing: `job` is `owner/repo/workflow.yml` (`owner/repo/.github/workflows/workflow.yml`
//! also works), or a bare `workflow.yml` (or numeric workflow id) in the repository the
//! connection names. The repository never comes from the parameters: they are the
//! workflow's inputs. `git_ref` is the branch or tag the workflow runs on; a commit
//! SHA is refused there and goes in as a parameter instead.
//!
//! Correlation: the correlation id is sent as the input `PROMOTION_CORRELATION_ID`
//! (the core's `CORRELATION_PARAMETER`). The workflow declares it and puts it in its
//! `run-name`, so that runs show it in `display_title`:
//!
//! ```yaml
//! on:
//!   workflow_dispatch:
//!     inputs:
//!       PROMOTION_CORRELATION_ID: { required: false, type: string }
//! run-name: gate ${{ inputs.PROMOTION_CORRELATION_ID }}
//! ```
//!
//! States: `queued`, `waiting`, `requested`, `pending` are Pending; `in_progress`
//! is Running; a `completed` run maps its `conclusion`: `success` Passed; `failure`,
//! `startup_failure` Failed; `cancelled` Cancelled; `timed_out` TimedOut;
//! `action_required` stays Pending (a person must approve the run on GitHub; the
//! gate's timeout bounds the wait); `neutral`, `skipped`, `stale` are Failed, since
//! a gate whose tests did not pass must never promote. Any status or conclusion
//! this crate does not know stays Running until the engine's timeout.

use super::config::Repository;
use super::connection::{Call, GitHubConnection};
use crate::http::{Answer, Effect};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use promotion_core::ports::{
    ErrorKind, Found, PortError, RunHandle, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use promotion_core::trigger::CORRELATION_PARAMETER;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Mutex, PoisonError};
use std::time::SystemTime;

/// `workflow_dispatch` takes at most this many inputs.
pub const MAX_INPUTS: usize = 25;
/// The listing's largest page.
const PER_PAGE: usize = 100;
/// GitHub lists at most this many runs for a search with filters such as `created`.
const SEARCH_LIMIT: usize = 1000;
/// The `created` filter starts this much before our clock's trigger time, so a
/// GitHub clock behind ours does not hide the run.
const CLOCK_SKEW: chrono::Duration = chrono::Duration::minutes(5);

/// Starts, follows, finds and cancels GitHub Actions workflow runs.
#[derive(Debug)]
pub struct GitHubActionsRunner {
    default: GitHubConnection,
    others: BTreeMap<String, GitHubConnection>,
    /// Connections whose server refused `return_run_details` (older GitHub Enterprise Server).
    without_run_details: Mutex<BTreeSet<String>>,
}

impl GitHubActionsRunner {
    /// A runner whose tests use `default` unless they name another connection.
    pub fn new(default: GitHubConnection) -> Self {
        Self {
            default,
            others: BTreeMap::new(),
            without_run_details: Mutex::new(BTreeSet::new()),
        }
    }

    /// Adds a connection tests can name.
    pub fn with_connection(mut self, connection: GitHubConnection) -> Self {
        self.others.insert(connection.name().to_owned(), connection);
        self
    }

    fn connection(&self, name: Option<&str>) -> Result<&GitHubConnection, PortError> {
        match name {
            None => Ok(&self.default),
            Some(n) if n == self.default.name() => Ok(&self.default),
            Some(n) => self.others.get(n).ok_or_else(|| {
                let mut known: Vec<&str> = self.others.keys().map(String::as_str).collect();
                known.insert(0, self.default.name());
                PortError::permanent(format!(
                    "no github-actions connection named '{n}' (configured: {})",
                    known.join(", ")
                ))
            }),
        }
    }

    fn sends_run_details(&self, connection: &str) -> bool {
        !self
            .without_run_details
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(connection)
    }

    fn stop_sending_run_details(&self, connection: &str) {
        self.without_run_details
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(connection.to_owned());
    }
}

/// A workflow in a repository.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Workflow {
    repository: Repository,
    file: String,
}

impl Workflow {
    /// Resolves `job` against the connection's repository.
    fn parse(connection: &GitHubConnection, job: &str) -> Result<Self, PortError> {
        let parts: Vec<&str> = job.trim().split('/').collect();
        let (repository, rest) = match parts.as_slice() {
            [file] => match connection.repository() {
                Some(repository) => (repository.clone(), vec![*file]),
                None => {
                    return Err(PortError::permanent(format!(
                        "connection {}: job '{job}' names no repository and the connection has \
                         none; use owner/repo/workflow.yml or configure the connection's repository",
                        connection.name()
                    )));
                }
            },
            [owner, repo, rest @ ..] if !rest.is_empty() => (
                Repository {
                    owner: (*owner).to_owned(),
                    name: (*repo).to_owned(),
                },
                rest.to_vec(),
            ),
            _ => {
                return Err(PortError::permanent(format!(
                    "connection {}: job '{job}' is neither owner/repo/workflow.yml nor workflow.yml",
                    connection.name()
                )));
            }
        };
        let rest = match rest.as_slice() {
            [".github", "workflows", file] => vec![*file],
            _ => rest,
        };
        match rest.as_slice() {
            [file]
                if !file.is_empty()
                    && !repository.owner.is_empty()
                    && !repository.name.is_empty() =>
            {
                Ok(Self {
                    repository,
                    file: (*file).to_owned(),
                })
            }
            _ => Err(PortError::permanent(format!(
                "connection {}: job '{job}' does not name one workflow file",
                connection.name()
            ))),
        }
    }

    fn repo_segments<'a>(&'a self, tail: &[&'a str]) -> Vec<&'a str> {
        let mut segments = vec!["repos", &self.repository.owner, &self.repository.name];
        segments.extend_from_slice(tail);
        segments
    }

    fn workflow_segments<'a>(&'a self, tail: &[&'a str]) -> Vec<&'a str> {
        let mut segments = self.repo_segments(&["actions", "workflows", &self.file]);
        segments.extend_from_slice(tail);
        segments
    }
}

/// What GitHub says about a workflow run.
#[derive(Debug, Deserialize)]
struct Run {
    id: u64,
    #[serde(default)]
    display_title: Option<String>,
    #[serde(default)]
    html_url: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    conclusion: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RunList {
    workflow_runs: Vec<Run>,
}

/// A file as the contents API returns it.
#[derive(Debug, Deserialize)]
struct Contents {
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    content: Option<String>,
}

/// Why a workflow file's `run-name` cannot show the correlation id, if it cannot.
fn run_name_problem(file: &str, yaml: &str) -> Result<Option<String>, String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(yaml).map_err(|e| format!("workflow {file} is not YAML: {e}"))?;
    let wanted = format!("inputs.{CORRELATION_PARAMETER}");
    Ok(
        match doc.get("run-name").and_then(serde_yaml::Value::as_str) {
            Some(name) if name.contains(&wanted) => None,
            Some(name) => Some(format!(
                "workflow {file}: its run-name {name:?} does not mention {wanted}, so its runs \
             cannot be told apart; use run-name: gate ${{{{ {wanted} }}}}"
            )),
            None => Some(format!(
                "workflow {file} has no run-name, so its runs do not show {CORRELATION_PARAMETER}; \
             add run-name: gate ${{{{ {wanted} }}}}"
            )),
        },
    )
}

/// The 200 answer of a dispatch sent with `return_run_details`.
#[derive(Debug, Deserialize)]
struct DispatchDetails {
    workflow_run_id: u64,
    #[serde(default)]
    html_url: Option<String>,
}

/// The domain's state of a run, and GitHub's words for it.
fn run_state(status: Option<&str>, conclusion: Option<&str>) -> (RunState, String) {
    let status_text = status.unwrap_or("unknown");
    let state = match status {
        Some("queued" | "waiting" | "requested" | "pending") => RunState::Pending,
        Some("in_progress") => RunState::Running,
        Some("completed") => match conclusion {
            Some("success") => RunState::Passed,
            Some("failure" | "startup_failure" | "neutral" | "skipped" | "stale") => {
                RunState::Failed
            }
            Some("cancelled") => RunState::Cancelled,
            Some("timed_out") => RunState::TimedOut,
            Some("action_required") => RunState::Pending,
            _ => RunState::Running,
        },
        _ => RunState::Running,
    };
    let message = match conclusion {
        Some(c) => format!("{status_text}: {c}"),
        None => status_text.to_owned(),
    };
    (state, message)
}

/// Whether `title` holds `id` as a whole word (so `prc-1` does not match `prc-12`).
/// Refuses a run whose title does not carry the correlation id `run` asks for.
fn check_ours(run: &RunRef, found: &Run) -> Result<(), PortError> {
    let Some(wanted) = run.correlation_id.as_deref() else {
        return Ok(());
    };
    let title = found.display_title.as_deref().unwrap_or("");
    if mentions(title, wanted) {
        Ok(())
    } else {
        Err(promotion_core::ports::not_ours(run, None))
    }
}

fn mentions(title: &str, id: &str) -> bool {
    if id.is_empty() {
        return false;
    }
    let is_word = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    title.match_indices(id).any(|(at, _)| {
        let before = title[..at].chars().next_back();
        let after = title[at + id.len()..].chars().next();
        !before.is_some_and(is_word) && !after.is_some_and(is_word)
    })
}

/// A commit SHA (SHA-1 or SHA-256), which `workflow_dispatch` does not take as `ref`.
fn is_commit_sha(git_ref: &str) -> bool {
    matches!(git_ref.len(), 40 | 64) && git_ref.chars().all(|c| c.is_ascii_hexdigit())
}

/// Whether GitHub refused the dispatch because it does not know `return_run_details`;
/// such a 400/422 means nothing started.
fn refuses_run_details(answer: &Answer) -> bool {
    if !matches!(
        answer.status,
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY
    ) {
        return false;
    }
    let message = answer.message().to_ascii_lowercase();
    message.contains("return_run_details")
        && [
            "not a permitted key",
            "not permitted",
            "unknown",
            "unexpected",
            "not allowed",
            "invalid",
        ]
        .iter()
        .any(|w| message.contains(w))
}

impl GitHubActionsRunner {
    /// The dispatch's inputs: the parameters plus the correlation id.
    fn inputs(
        connection: &GitHubConnection,
        req: &TriggerRequest,
        workflow: &Workflow,
    ) -> Result<BTreeMap<String, String>, PortError> {
        let mut inputs = req.parameters.clone();
        inputs.insert(CORRELATION_PARAMETER.to_owned(), req.correlation_id.clone());
        if inputs.len() > MAX_INPUTS {
            return Err(PortError::permanent(format!(
                "connection {}: workflow {} takes at most {MAX_INPUTS} inputs, this test sends {} \
                 ({CORRELATION_PARAMETER} included); fewer parameters, or one JSON parameter",
                connection.name(),
                workflow.file,
                inputs.len()
            )));
        }
        Ok(inputs)
    }

    fn git_ref<'a>(
        connection: &GitHubConnection,
        req: &'a TriggerRequest,
    ) -> Result<&'a str, PortError> {
        match req.git_ref.as_deref().map(str::trim) {
            None | Some("") => Err(PortError::permanent(format!(
                "connection {}: workflow {} needs a ref (the branch or tag to run on)",
                connection.name(),
                req.job
            ))),
            Some(r) if is_commit_sha(r) => Err(PortError::permanent(format!(
                "connection {}: ref '{r}' is a commit SHA; workflow_dispatch runs on a branch or \
                 tag, so pass the SHA as a parameter",
                connection.name()
            ))),
            Some(r) => Ok(r),
        }
    }

    /// Sends the dispatch once, asking for the run's details when the server knows how.
    async fn dispatch(
        connection: &GitHubConnection,
        workflow: &Workflow,
        git_ref: &str,
        inputs: &BTreeMap<String, String>,
        run_details: bool,
    ) -> Result<Answer, PortError> {
        let mut body = serde_json::json!({ "ref": git_ref, "inputs": inputs });
        if run_details {
            body["return_run_details"] = serde_json::Value::Bool(true);
        }
        let call = Call::new(
            Method::POST,
            Effect::Trigger,
            &workflow.workflow_segments(&["dispatches"]),
        )
        .json(body);
        connection.send(&call).await
    }

    /// The newest run of `workflow` created since `since` whose `display_title` holds
    /// `correlation_id`, reading at most `pages` pages: Absent once the listing ended,
    /// "not sure" when the page cap or GitHub's 1,000-result limit stopped it first.
    async fn search(
        connection: &GitHubConnection,
        workflow: &Workflow,
        correlation_id: &str,
        since: DateTime<Utc>,
        pages: usize,
    ) -> Result<Found, PortError> {
        if correlation_id.is_empty() {
            return Ok(Found::Absent);
        }
        let since_text = since.format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let mut seen = 0;
        for page in 1..=pages {
            let call = Call::new(
                Method::GET,
                Effect::Read,
                &workflow.workflow_segments(&["runs"]),
            )
            .query("event", "workflow_dispatch")
            .query("created", format!(">={since_text}"))
            .query("per_page", PER_PAGE.to_string())
            .query("page", page.to_string());
            let list: RunList = connection.read(&call).await?;
            seen += list.workflow_runs.len();
            let found = list
                .workflow_runs
                .iter()
                .filter(|r| mentions(r.display_title.as_deref().unwrap_or(""), correlation_id))
                .max_by_key(|r| r.id);
            if let Some(run) = found {
                return Ok(Found::Run(RunHandle {
                    run_id: run.id.to_string(),
                    url: run.html_url.clone(),
                }));
            }
            if list.workflow_runs.len() < PER_PAGE {
                return Ok(Found::Absent);
            }
            if page * PER_PAGE >= SEARCH_LIMIT {
                return Ok(Found::NotSure(format!(
                    "connection {}: GitHub lists at most {SEARCH_LIMIT} runs of {} created since \
                     {since_text}, and that many were newer",
                    connection.name(),
                    workflow.file
                )));
            }
        }
        Ok(Found::NotSure(format!(
            "connection {}: read the {seen} newest runs of {} created since {since_text} \
             ({pages} pages, maxFindPages) without reaching the last one",
            connection.name(),
            workflow.file
        )))
    }

    /// Finds the run a dispatch that returned no id started, retrying for a few seconds
    /// while GitHub creates it.
    async fn locate(
        connection: &GitHubConnection,
        workflow: &Workflow,
        correlation_id: &str,
        since: DateTime<Utc>,
    ) -> Result<RunHandle, PortError> {
        let (attempts, interval) = connection.find_attempts();
        let mut last_error = None;
        for attempt in 0..attempts.max(1) {
            if attempt > 0 {
                tokio::time::sleep(interval).await;
            }
            match Self::search(connection, workflow, correlation_id, since, 1).await {
                Ok(Found::Run(handle)) => return Ok(handle),
                Ok(Found::Absent) => {}
                Ok(Found::NotSure(why)) => last_error = Some(why),
                Err(e) => last_error = Some(e.message),
            }
        }
        // The dispatch was accepted, so a run exists or will: the engine must `find`, not resend.
        Err(PortError::ambiguous(format!(
            "connection {}: workflow {} was dispatched but no run with correlation id {} showed \
             up after {} look-ups{}",
            connection.name(),
            workflow.file,
            correlation_id,
            attempts.max(1),
            last_error
                .map(|e| format!(" (last error: {e})"))
                .unwrap_or_default()
        )))
    }

    fn run_id(run: &RunRef) -> Result<u64, PortError> {
        run.run_id.trim().parse().map_err(|_| {
            PortError::permanent(format!(
                "'{}' is not a GitHub Actions workflow run id",
                run.run_id
            ))
        })
    }
}

#[async_trait]
impl TestRunner for GitHubActionsRunner {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        let connection = self.connection(req.connection.as_deref())?;
        let workflow = Workflow::parse(connection, &req.job)?;
        let git_ref = Self::git_ref(connection, req)?;
        let inputs = Self::inputs(connection, req, &workflow)?;
        let since = Utc::now() - CLOCK_SKEW;
        let mut run_details = self.sends_run_details(connection.name());
        let answer = loop {
            let answer =
                Self::dispatch(connection, &workflow, git_ref, &inputs, run_details).await?;
            if run_details && refuses_run_details(&answer) {
                tracing::info!(
                    connection = connection.name(),
                    "GitHub refused return_run_details; dispatching without it"
                );
                self.stop_sending_run_details(connection.name());
                run_details = false;
                continue;
            }
            break answer.success()?;
        };
        tracing::info!(
            connection = connection.name(),
            workflow = %workflow.file,
            git_ref,
            correlation_id = %req.correlation_id,
            status = %answer.status,
            "dispatched workflow"
        );
        if answer.status == StatusCode::OK {
            match answer.json::<DispatchDetails>() {
                Ok(details) => {
                    return Ok(RunHandle {
                        run_id: details.workflow_run_id.to_string(),
                        url: details.html_url,
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dispatch details unreadable; looking the run up")
                }
            }
        }
        Self::locate(connection, &workflow, &req.correlation_id, since).await
    }

    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        let connection = self.connection(run.connection.as_deref())?;
        let workflow = Workflow::parse(connection, &run.job)?;
        let id = Self::run_id(run)?.to_string();
        let call = Call::new(
            Method::GET,
            Effect::Read,
            &workflow.repo_segments(&["actions", "runs", &id]),
        );
        let found: Run = connection.read(&call).await?;
        check_ours(run, &found)?;
        let (state, message) = run_state(found.status.as_deref(), found.conclusion.as_deref());
        Ok(RunStatus {
            state,
            url: found.html_url,
            message: Some(message),
            run_id: None,
        })
    }

    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        let connection = self.connection(req.connection.as_deref())?;
        let workflow = Workflow::parse(connection, &req.job)?;
        let pages = connection.find_pages();
        Self::search(
            connection,
            &workflow,
            &req.correlation_id,
            DateTime::<Utc>::from(since),
            pages,
        )
        .await
    }

    /// Reads the workflow file (contents API, at the test's ref) and checks that its
    /// `run-name` shows `inputs.PROMOTION_CORRELATION_ID`, which is how `find` sees a run.
    async fn check_findable(&self, req: &TriggerRequest) -> Result<(), PortError> {
        let unknown = |why: String| PortError::transient(why);
        let connection = self
            .connection(req.connection.as_deref())
            .map_err(|e| unknown(e.message))?;
        let workflow = Workflow::parse(connection, &req.job).map_err(|e| unknown(e.message))?;
        if workflow.file.chars().all(|c| c.is_ascii_digit()) {
            return Err(unknown(format!(
                "workflow {} is named by its id, so its file cannot be read",
                workflow.file
            )));
        }
        let mut call = Call::new(
            Method::GET,
            Effect::Read,
            &workflow.repo_segments(&["contents", ".github", "workflows", &workflow.file]),
        );
        if let Some(r) = req.git_ref.as_deref().filter(|r| !r.trim().is_empty()) {
            call = call.query("ref", r.trim());
        }
        let file: Contents = connection.read(&call).await.map_err(|e| {
            // A 404 can also be a token without Contents: read: not a verdict on the workflow.
            PortError {
                kind: ErrorKind::Transient,
                message: format!("could not read workflow {}: {}", workflow.file, e.message),
                retry_after: e.retry_after,
            }
        })?;
        let text = match (file.encoding.as_deref(), file.content) {
            (Some("base64"), Some(content)) => {
                let compact: String = content.split_whitespace().collect();
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(compact)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
            }
            _ => None,
        };
        let Some(text) = text else {
            return Err(unknown(format!(
                "workflow {}: the contents API returned no readable file",
                workflow.file
            )));
        };
        match run_name_problem(&workflow.file, &text) {
            Ok(None) => Ok(()),
            Ok(Some(problem)) => Err(PortError::permanent(format!(
                "connection {}: {problem}",
                connection.name()
            ))),
            Err(why) => Err(unknown(why)),
        }
    }

    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        let connection = self.connection(run.connection.as_deref())?;
        let workflow = Workflow::parse(connection, &run.job)?;
        let id = Self::run_id(run)?.to_string();
        if run.correlation_id.is_some() {
            // Only a run that carries this tracker's correlation id is cancelled.
            let read = Call::new(
                Method::GET,
                Effect::Read,
                &workflow.repo_segments(&["actions", "runs", &id]),
            );
            let found: Run = connection.read(&read).await?;
            check_ours(run, &found)?;
        }
        let call = Call::new(
            Method::POST,
            Effect::Write,
            &workflow.repo_segments(&["actions", "runs", &id, "cancel"]),
        );
        let answer = connection.send(&call).await?;
        // 409: the run already finished, which is what cancelling wanted.
        if answer.status == StatusCode::CONFLICT {
            tracing::debug!(connection = connection.name(), run = %id, "run already finished");
            return Ok(());
        }
        answer.success().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_status_and_conclusion_is_mapped() {
        use RunState::*;
        let cases = [
            ("queued", None, Pending),
            ("waiting", None, Pending),
            ("requested", None, Pending),
            ("pending", None, Pending),
            ("in_progress", None, Running),
            ("completed", Some("success"), Passed),
            ("completed", Some("failure"), Failed),
            ("completed", Some("startup_failure"), Failed),
            ("completed", Some("cancelled"), Cancelled),
            ("completed", Some("timed_out"), TimedOut),
            ("completed", Some("action_required"), Pending),
            ("completed", Some("neutral"), Failed),
            ("completed", Some("skipped"), Failed),
            ("completed", Some("stale"), Failed),
            ("completed", Some("something_new"), Running),
            ("completed", None, Running),
            ("brand_new_status", None, Running),
        ];
        for (status, conclusion, want) in cases {
            assert_eq!(
                run_state(Some(status), conclusion).0,
                want,
                "{status} {conclusion:?}"
            );
        }
        assert_eq!(run_state(None, None).0, Running);
        assert_eq!(
            run_state(Some("completed"), Some("failure")).1,
            "completed: failure"
        );
    }

    #[test]
    fn correlation_ids_match_whole_words_only() {
        assert!(mentions("gate prc-1", "prc-1"));
        assert!(mentions("gate (prc-1) for PR 4", "prc-1"));
        assert!(!mentions("gate prc-12", "prc-1"));
        assert!(!mentions("gate xprc-1", "prc-1"));
        assert!(!mentions("anything", ""));
    }

    #[test]
    fn a_run_name_must_mention_the_correlation_input() {
        let good = "on: workflow_dispatch\nrun-name: gate ${{ inputs.PROMOTION_CORRELATION_ID }}\n";
        assert_eq!(run_name_problem("g.yml", good), Ok(None));
        let old = "run-name: gate ${{ github.event.inputs.PROMOTION_CORRELATION_ID }}\n";
        assert_eq!(run_name_problem("g.yml", old), Ok(None));
        let other = "run-name: gate ${{ inputs.sha }}\n";
        assert!(
            run_name_problem("g.yml", other)
                .unwrap()
                .unwrap()
                .contains("does not mention")
        );
        let none = "on: workflow_dispatch\njobs: {}\n";
        assert!(
            run_name_problem("g.yml", none)
                .unwrap()
                .unwrap()
                .contains("no run-name")
        );
        assert!(run_name_problem("g.yml", "a: [").is_err());
    }

    #[test]
    fn shas_are_not_refs() {
        assert!(is_commit_sha(&"a".repeat(40)));
        assert!(!is_commit_sha("main"));
        assert!(!is_commit_sha("release/1.2"));
    }
}

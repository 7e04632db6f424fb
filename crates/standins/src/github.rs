//! A GitHub stand-in: the REST API calls of the GitHub Actions runner and of the
//! label/commit-status client, with a bearer token (`Authorization: Bearer` or `token`).
//!
//! - `POST /repos/:o/:r/actions/workflows/:wf/dispatches` -> 200 with
//!   `workflow_run_id`, `run_url`, `html_url` when `return_run_details` is set, else
//!   204. The run's `display_title` is `gate <PROMOTION_CORRELATION_ID>`, as the
//!   workflow's `run-name` renders it. A run is `in_progress` until the script's
//!   time has passed, then `completed` with `success` or `failure`.
//! - `GET .../workflows/:wf/runs` (`per_page`, `page`, `event`, `created=>=...`, newest
//!   first; at most 1,000 results when a filter such as `created` or `event` is given),
//!   `GET /repos/:o/:r/actions/runs/:id`, `POST .../runs/:id/cancel` (409 once completed).
//! - `GET /repos/:o/:r/contents/.github/workflows/:wf` (`ref` optional): every
//!   workflow file declares `PROMOTION_CORRELATION_ID` and shows it in its
//!   `run-name`, base64-encoded as the contents API returns files.
//! - Labels: `POST`/`GET /repos/:o/:r/issues/:n/labels`, `DELETE .../labels/:name`.
//! - `POST /repos/:o/:r/statuses/:sha` (state checked, description <= 140 characters).
//! - Pull requests: `GET /repos/:o/:r/pulls/:n` and `GET /repos/:o/:r/pulls`, set by
//!   the test through [`crate::PullRequests`].
//! - `POST /app/installations/:id/access_tokens` with the RS256 JWT of the
//!   App it knows (checked as GitHub checks it: signature, `iss`, `iat` not in
//!   the future, `exp` at most ten minutes out) issues installation tokens,
//!   accepted until they expire or are revoked.
//! - Every answer carries GitHub's rate-limit headers; run pages
//!   (`GET /:o/:r/actions/runs/:id`) answer without a token. Everything is
//!   also served under `/api/v3`, as GitHub Enterprise Server does.

use crate::callbacks::About;
use crate::faults::{Faults, visible};
use crate::journal::{CommitStatus, Finished, Triggered};
use crate::pulls::{self, PullRequests};
use crate::runtime::{Shared, header_str, json, page, rfc3339, same};
use crate::script::Outcome;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// The most results GitHub lists for a filtered search of workflow runs.
const SEARCH_LIMIT: usize = 1000;
const PROVIDER: &str = "github-actions";
const CORRELATION: &str = "PROMOTION_CORRELATION_ID";
/// `workflow_dispatch` takes at most this many inputs.
const MAX_INPUTS: usize = 25;
/// GitHub keeps at most this many characters of a status description.
const MAX_DESCRIPTION: usize = 140;
const DEFAULT_PER_PAGE: usize = 30;
const MAX_PER_PAGE: usize = 100;

/// How the stand-in answers a workflow dispatch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DispatchMode {
    /// GitHub.com today: 200 with the run's details when asked, else 204.
    #[default]
    RunDetails,
    /// An older server that ignores `return_run_details`: always 204.
    NoContent,
    /// An older server that refuses the unknown field with 422 (nothing starts).
    RejectsField,
}

/// The GitHub App the stand-in knows.
pub(crate) struct App {
    pub id: String,
    pub installation_id: u64,
    /// PEM of the App's public key.
    pub public_key: &'static [u8],
}

/// How long an installation token lives unless told otherwise (GitHub: one hour).
const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::hours(1);

pub(crate) struct GitHub {
    base: String,
    token: String,
    app: App,
    shared: Shared,
    faults: Faults,
    state: Mutex<Store>,
    pulls: PullRequests,
}

#[derive(Default)]
struct Store {
    dispatch_mode: DispatchMode,
    /// Installation tokens issued, in order, with when each expires.
    issued: Vec<(String, chrono::DateTime<chrono::Utc>)>,
    revoked: HashSet<String>,
    /// Lifetimes of the next tokens, then `token_lifetime`.
    next_lifetimes: VecDeque<chrono::Duration>,
    token_lifetime: Option<chrono::Duration>,
    next_run_id: u64,
    next_status_id: u64,
    runs: HashMap<u64, Run>,
    /// (owner, repo, workflow) -> run ids, oldest first.
    by_workflow: HashMap<(String, String, String), Vec<u64>>,
}

struct Run {
    id: u64,
    owner: String,
    repo: String,
    workflow: String,
    display_title: String,
    head_branch: String,
    status: &'static str,
    conclusion: Option<&'static str>,
    created: SystemTime,
    updated: SystemTime,
    /// For the find lag of the fault layer.
    born: Instant,
    listings_skipped: usize,
}

type Repo = (String, String);

pub(crate) fn error(status: StatusCode, text: &str) -> Response {
    json(
        status,
        json!({"message": text, "documentation_url": "https://docs.github.com/rest", "status": status.as_u16().to_string()}),
    )
}

pub(crate) fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "Not Found")
}

impl GitHub {
    pub fn new(
        base: String,
        token: &str,
        app: App,
        shared: Shared,
        faults: Faults,
        pulls: PullRequests,
    ) -> Arc<Self> {
        Arc::new(Self {
            base,
            token: token.to_owned(),
            app,
            shared,
            faults,
            pulls,
            state: Mutex::new(Store {
                next_run_id: 7_000_000,
                next_status_id: 1,
                ..Store::default()
            }),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        let api = Self::routes();
        Router::new()
            .merge(api.clone())
            .nest("/api/v3", api)
            .route("/{owner}/{repo}/actions/runs/{id}", get(run_page))
            .fallback(|| async { not_found() })
            .layer(axum::middleware::map_response(rate_limit_headers))
            .with_state(self)
    }

    pub fn set_dispatch_mode(&self, mode: DispatchMode) {
        self.lock().dispatch_mode = mode;
    }

    pub fn set_token_lifetimes(&self, next: &[Duration], then: Duration) {
        let to = |d: &Duration| chrono::Duration::from_std(*d).unwrap_or(TOKEN_LIFETIME);
        let mut s = self.lock();
        s.next_lifetimes = next.iter().map(to).collect();
        s.token_lifetime = Some(to(&then));
    }

    pub fn issued_tokens(&self) -> Vec<String> {
        self.lock().issued.iter().map(|(t, _)| t.clone()).collect()
    }

    pub fn revoke(&self, token: &str) {
        self.lock().revoked.insert(token.to_owned());
    }

    fn routes() -> Router<Arc<Self>> {
        Router::new()
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches",
                post(dispatch),
            )
            .route(
                "/repos/{owner}/{repo}/actions/workflows/{workflow}/runs",
                get(list_runs),
            )
            .route("/repos/{owner}/{repo}/actions/runs/{id}", get(get_run))
            .route("/repos/{owner}/{repo}/contents/{*path}", get(contents))
            .route(
                "/repos/{owner}/{repo}/actions/runs/{id}/cancel",
                post(cancel_run),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/labels",
                post(add_labels).get(get_labels),
            )
            .route(
                "/repos/{owner}/{repo}/issues/{number}/labels/{name}",
                axum::routing::delete(remove_label),
            )
            .route("/repos/{owner}/{repo}/statuses/{sha}", post(create_status))
            .route("/repos/{owner}/{repo}/pulls", get(list_pulls))
            .route("/repos/{owner}/{repo}/pulls/{number}", get(get_pull))
            .route(
                "/app/installations/{installation}/access_tokens",
                post(access_tokens),
            )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The 401 answer, unless the request carries the token.
    fn denied(&self, headers: &HeaderMap) -> Option<Response> {
        let given = header_str(headers, "authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("token "))
        });
        let Some(given) = given.map(str::trim) else {
            return Some(error(StatusCode::UNAUTHORIZED, "Requires authentication"));
        };
        if same(&self.token, given) {
            return None;
        }
        let s = self.lock();
        let now = chrono::Utc::now();
        let issued = s
            .issued
            .iter()
            .any(|(t, expires)| same(t, given) && *expires > now);
        if issued && !s.revoked.contains(given) {
            None
        } else {
            Some(error(StatusCode::UNAUTHORIZED, "Bad credentials"))
        }
    }

    fn html_url(&self, owner: &str, repo: &str, id: u64) -> String {
        format!("{}/{owner}/{repo}/actions/runs/{id}", self.base)
    }

    fn run_json(&self, r: &Run) -> Value {
        json!({
            "id": r.id,
            "name": r.workflow,
            "display_title": r.display_title,
            "head_branch": r.head_branch,
            "event": "workflow_dispatch",
            "status": r.status,
            "conclusion": r.conclusion,
            "path": format!(".github/workflows/{}", r.workflow),
            "run_attempt": 1,
            "html_url": self.html_url(&r.owner, &r.repo, r.id),
            "url": format!("{}/repos/{}/{}/actions/runs/{}", self.base, r.owner, r.repo, r.id),
            "created_at": rfc3339(r.created),
            "updated_at": rfc3339(r.updated),
            "repository": {"name": r.repo, "full_name": format!("{}/{}", r.owner, r.repo), "owner": {"login": r.owner}},
        })
    }

    pub(crate) async fn finish(self: Arc<Self>, id: u64, outcome: Outcome) {
        let conclusion = match outcome {
            Outcome::Pass => "success",
            Outcome::Fail => "failure",
        };
        let (workflow, payload) = {
            let mut s = self.lock();
            let Some(r) = s.runs.get_mut(&id) else {
                return;
            };
            if r.status == "completed" {
                return;
            }
            r.status = "completed";
            r.conclusion = Some(conclusion);
            r.updated = SystemTime::now();
            let r = &*r;
            (
                r.workflow.clone(),
                json!({
                    "action": "completed",
                    "workflow_run": self.run_json(r),
                    "workflow": {"name": r.workflow, "path": format!(".github/workflows/{}", r.workflow)},
                    "repository": {"name": r.repo, "full_name": format!("{}/{}", r.owner, r.repo), "owner": {"login": r.owner}},
                }),
            )
        };
        self.shared.journal.record_finished(Finished {
            provider: PROVIDER,
            job: workflow.clone(),
            run_id: id.to_string(),
            passed: outcome == Outcome::Pass,
            cancelled: false,
            at: SystemTime::now(),
        });
        if let Some(n) = &self.shared.notifier {
            n.github(
                About {
                    provider: PROVIDER,
                    job: workflow,
                    run_id: id.to_string(),
                },
                &payload,
            )
            .await;
        }
    }
}

/// GitHub's rate-limit headers, with plenty left: the adapters read them on every answer.
async fn rate_limit_headers(mut resp: Response) -> Response {
    let reset = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(3600);
    let h = resp.headers_mut();
    h.insert("x-ratelimit-limit", HeaderValue::from_static("5000"));
    h.insert("x-ratelimit-remaining", HeaderValue::from_static("4999"));
    h.insert("x-ratelimit-used", HeaderValue::from_static("1"));
    h.insert("x-ratelimit-resource", HeaderValue::from_static("core"));
    if let Ok(v) = HeaderValue::from_str(&reset.as_secs().to_string()) {
        h.insert("x-ratelimit-reset", v);
    }
    resp
}

async fn dispatch(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let Some(git_ref) = body.get("ref").and_then(Value::as_str) else {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"ref\" wasn't supplied.",
        );
    };
    let inputs = body
        .get("inputs")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    if inputs.len() > MAX_INPUTS {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "you may only define up to 25 `inputs` for a workflow_dispatch event",
        );
    }
    let correlation_id = inputs
        .get(CORRELATION)
        .and_then(Value::as_str)
        .map(str::to_owned);
    // What `run-name: gate ${{ inputs.PROMOTION_CORRELATION_ID }}` renders.
    let display_title = match &correlation_id {
        Some(c) => format!("gate {c}"),
        None => workflow.clone(),
    };
    let asked = body.get("return_run_details").is_some();
    let details = body.get("return_run_details").and_then(Value::as_bool) == Some(true);
    let mode = gh.lock().dispatch_mode;
    if asked && mode == DispatchMode::RejectsField {
        return error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid request.\n\n\"return_run_details\" is not a permitted key.",
        );
    }
    let details = details && mode == DispatchMode::RunDetails;
    let (outcome, after) = gh.shared.script.outcome(&workflow);
    let now = SystemTime::now();
    let id = {
        let mut s = gh.lock();
        let id = s.next_run_id;
        s.next_run_id += 1;
        s.runs.insert(
            id,
            Run {
                id,
                owner: owner.clone(),
                repo: repo.clone(),
                workflow: workflow.clone(),
                display_title,
                head_branch: git_ref.to_owned(),
                status: "in_progress",
                conclusion: None,
                created: now,
                updated: now,
                born: Instant::now(),
                listings_skipped: 0,
            },
        );
        s.by_workflow
            .entry((owner.clone(), repo.clone(), workflow.clone()))
            .or_default()
            .push(id);
        id
    };
    let html_url = gh.html_url(&owner, &repo, id);
    gh.shared.journal.record_trigger(Triggered {
        provider: PROVIDER,
        job: workflow,
        run_id: id.to_string(),
        url: html_url.clone(),
        correlation_id,
        at: now,
    });
    let me = gh.clone();
    gh.shared.after(after, me.finish(id, outcome));
    if details {
        json(
            StatusCode::OK,
            json!({
                "workflow_run_id": id,
                "run_url": format!("{}/repos/{owner}/{repo}/actions/runs/{id}", gh.base),
                "html_url": html_url,
            }),
        )
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

async fn list_runs(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, workflow)): Path<(String, String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let since = match q.get("created") {
        None => None,
        Some(c) => {
            let parsed = c
                .strip_prefix(">=")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
            match parsed {
                Some(t) => Some(SystemTime::from(t)),
                None => return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid created filter"),
            }
        }
    };
    if q.get("event").is_some_and(|e| e != "workflow_dispatch") {
        return json(
            StatusCode::OK,
            json!({"total_count": 0, "workflow_runs": []}),
        );
    }
    let per_page = q
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_PER_PAGE)
        .clamp(1, MAX_PER_PAGE);
    let page_no: usize = q
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let lag = gh.faults.find_lag();
    let mut s = gh.lock();
    let ids: Vec<u64> = s
        .by_workflow
        .get(&(owner, repo, workflow))
        .cloned()
        .unwrap_or_default();
    // Runs GitHub has not indexed yet are left out.
    let shown: Vec<u64> = ids
        .into_iter()
        .rev()
        .filter(|id| {
            s.runs
                .get_mut(id)
                .is_some_and(|r| visible(lag, r.born, &mut r.listings_skipped))
        })
        .collect();
    let s = &*s;
    let matching = shown
        .iter()
        .filter_map(|id| s.runs.get(id))
        .filter(|r| since.is_none_or(|t| r.created >= t));
    let total = matching.clone().count();
    // GitHub answers at most 1,000 results for a search with these filters.
    let filtered = [
        "actor",
        "branch",
        "check_suite_id",
        "created",
        "event",
        "head_sha",
        "status",
    ]
    .iter()
    .any(|f| q.contains_key(*f));
    let limit = if filtered { SEARCH_LIMIT } else { usize::MAX };
    let runs: Vec<Value> = matching
        .take(limit)
        .skip((page_no - 1) * per_page)
        .take(per_page)
        .map(|r| gh.run_json(r))
        .collect();
    json(
        StatusCode::OK,
        json!({"total_count": total, "workflow_runs": runs}),
    )
}

fn run_of<'a>(s: &'a Store, (owner, repo): &Repo, id: &str) -> Option<&'a Run> {
    let id: u64 = id.parse().ok()?;
    s.runs
        .get(&id)
        .filter(|r| &r.owner == owner && &r.repo == repo)
}

/// The workflow file every workflow of the stand-in has: it declares the correlation
/// input and shows it in its run-name, as the runs' `display_title` does.
const WORKFLOW_FILE: &str = "name: gate
on:
  workflow_dispatch:
    inputs:
      PROMOTION_CORRELATION_ID: {required: false, type: string}
run-name: gate ${{ inputs.PROMOTION_CORRELATION_ID }}
jobs:
  gate:
    runs-on: ubuntu-latest
    steps:
      - run: echo gate
";

/// `GET /repos/:o/:r/contents/:path` (`ref` optional): a workflow file under
/// `.github/workflows/` as the contents API returns a file (base64 in lines of 60).
async fn contents(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, path)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    use base64::Engine as _;
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let name = path.rsplit('/').next().unwrap_or_default().to_owned();
    let workflow = path.starts_with(".github/workflows/")
        && !name.is_empty()
        && (name.ends_with(".yml") || name.ends_with(".yaml"));
    if !workflow {
        return not_found();
    }
    let encoded = base64::engine::general_purpose::STANDARD.encode(WORKFLOW_FILE);
    let lines: Vec<String> = encoded
        .as_bytes()
        .chunks(60)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect();
    json(
        StatusCode::OK,
        json!({
            "type": "file", "encoding": "base64", "size": WORKFLOW_FILE.len(),
            "name": name, "path": path, "content": lines.join("\n") + "\n",
            "sha": "3d21ec53a331a6f037a91c368710b99387d012c1",
            "url": format!("{}/repos/{owner}/{repo}/contents/{path}", gh.base),
            "html_url": format!("{}/{owner}/{repo}/blob/main/{path}", gh.base),
        }),
    )
}

async fn get_run(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let s = gh.lock();
    match run_of(&s, &(owner, repo), &id) {
        Some(r) => json(StatusCode::OK, gh.run_json(r)),
        None => not_found(),
    }
}

async fn cancel_run(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let cancelled = {
        let mut s = gh.lock();
        let Some(id) = run_of(&s, &(owner, repo), &id).map(|r| r.id) else {
            return not_found();
        };
        let Some(r) = s.runs.get_mut(&id) else {
            return not_found();
        };
        if r.status == "completed" {
            return error(
                StatusCode::CONFLICT,
                "Cannot cancel a workflow run that is completed.",
            );
        }
        r.status = "completed";
        r.conclusion = Some("cancelled");
        r.updated = SystemTime::now();
        (r.workflow.clone(), id)
    };
    gh.shared.journal.record_finished(Finished {
        provider: PROVIDER,
        job: cancelled.0,
        run_id: cancelled.1.to_string(),
        passed: false,
        cancelled: true,
        at: SystemTime::now(),
    });
    json(StatusCode::ACCEPTED, json!({}))
}

/// `POST /app/installations/:id/access_tokens`: an installation token for a valid App JWT.
async fn access_tokens(
    State(gh): State<Arc<GitHub>>,
    Path(installation): Path<u64>,
    headers: HeaderMap,
) -> Response {
    let undecodable = || {
        error(
            StatusCode::UNAUTHORIZED,
            "A JSON web token could not be decoded",
        )
    };
    let Some(jwt) = header_str(&headers, "authorization").and_then(|v| v.strip_prefix("Bearer "))
    else {
        return undecodable();
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(gh.app.public_key) else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the stand-in's App key is unreadable",
        );
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_required_spec_claims(&["exp", "iat", "iss"]);
    validation.set_issuer(&[gh.app.id.as_str()]);
    let Ok(data) = jsonwebtoken::decode::<Value>(jwt, &key, &validation) else {
        return undecodable();
    };
    let claim = |name: &str| data.claims.get(name).and_then(Value::as_i64).unwrap_or(0);
    let (iat, exp, now) = (claim("iat"), claim("exp"), chrono::Utc::now().timestamp());
    // GitHub's rules: not issued in the future, expiring at most ten minutes out.
    if iat > now || exp - now > 600 || exp - iat > 600 {
        return error(
            StatusCode::UNAUTHORIZED,
            "'Expiration time' claim ('exp') is too far in the future",
        );
    }
    if installation != gh.app.installation_id {
        return not_found();
    }
    let (token, expires) = {
        let mut s = gh.lock();
        let token = format!("ghs_standin_installation_{}", s.issued.len() + 1);
        let lifetime = s
            .next_lifetimes
            .pop_front()
            .or(s.token_lifetime)
            .unwrap_or(TOKEN_LIFETIME);
        let expires = chrono::Utc::now() + lifetime;
        s.issued.push((token.clone(), expires));
        (token, expires)
    };
    json(
        StatusCode::CREATED,
        json!({
            "token": token,
            "expires_at": expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "permissions": {"actions": "write", "issues": "write", "statuses": "write"},
            "repository_selection": "all",
        }),
    )
}

fn labels_json(labels: &[String]) -> Value {
    Value::Array(
        labels
            .iter()
            .map(|l| json!({"name": l, "color": "ededed", "default": false}))
            .collect(),
    )
}

async fn add_labels(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let Ok(number) = number.parse::<u64>() else {
        return not_found();
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(_) => return error(StatusCode::BAD_REQUEST, "Problems parsing JSON"),
    };
    // GitHub takes `{"labels": [...]}` or a bare array.
    let list = body.get("labels").unwrap_or(&body);
    let Some(labels) = list.as_array().map(|ls| {
        ls.iter()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect::<Vec<_>>()
    }) else {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Invalid request.");
    };
    let now = gh.shared.journal.add_labels(&owner, &repo, number, &labels);
    json(StatusCode::OK, labels_json(&now))
}

async fn get_labels(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let Ok(number) = number.parse::<u64>() else {
        return not_found();
    };
    json(
        StatusCode::OK,
        labels_json(&gh.shared.journal.labels(&owner, &repo, number)),
    )
}

async fn remove_label(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, number, name)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let Ok(number) = number.parse::<u64>() else {
        return not_found();
    };
    match gh.shared.journal.remove_label(&owner, &repo, number, &name) {
        Some(now) => json(StatusCode::OK, labels_json(&now)),
        None => error(StatusCode::NOT_FOUND, "Label does not exist"),
    }
}

async fn create_status(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, sha)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "Problems parsing JSON");
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
    let state = text("state").unwrap_or_default();
    let description = text("description");
    if !matches!(state.as_str(), "pending" | "success" | "failure" | "error")
        || description
            .as_deref()
            .is_some_and(|d| d.chars().count() > MAX_DESCRIPTION)
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "Validation Failed");
    }
    let status = CommitStatus {
        context: text("context").unwrap_or_else(|| "default".to_owned()),
        state,
        target_url: text("target_url"),
        description,
    };
    let id = {
        let mut s = gh.lock();
        s.next_status_id += 1;
        s.next_status_id
    };
    let now = rfc3339(SystemTime::now());
    let answer = json!({
        "id": id,
        "url": format!("{}/repos/{owner}/{repo}/statuses/{sha}", gh.base),
        "state": status.state,
        "description": status.description,
        "target_url": status.target_url,
        "context": status.context,
        "created_at": now,
        "updated_at": now,
    });
    gh.shared.journal.post_status(&owner, &repo, &sha, status);
    json(StatusCode::CREATED, answer)
}

async fn list_pulls(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    pulls::list(&gh.pulls, &gh.base, owner, repo, &q)
}

async fn get_pull(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, number)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(denied) = gh.denied(&headers) {
        return denied;
    }
    pulls::get(&gh.pulls, &gh.base, owner, repo, &number)
}

async fn run_page(
    State(gh): State<Arc<GitHub>>,
    Path((owner, repo, id)): Path<(String, String, String)>,
) -> Response {
    let s = gh.lock();
    match run_of(&s, &(owner, repo), &id) {
        Some(r) => page(format!(
            "GitHub Actions stand-in\n\n{}/{} workflow {} run {} on {}: {} {}\n",
            r.owner,
            r.repo,
            r.workflow,
            r.id,
            r.head_branch,
            r.status,
            r.conclusion.unwrap_or_default()
        )),
        None => not_found(),
    }
}

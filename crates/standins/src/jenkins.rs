//! A Jenkins stand-in speaking the remote access API the Jenkins adapter uses.
//!
//! - Basic auth with the user and API token; no CSRF crumb needed (the crumb
//!   issuer answers 404, as on a server where API tokens bypass CSRF).
//! - `POST /job/a/job/b/buildWithParameters` (any job path: jobs exist on demand)
//!   answers 201 with the Location of a queue item.
//! - `GET /queue/item/N/api/json`: the item leaves the queue when first polled, as
//!   with a free executor, and from then on names its build in `executable`.
//!   Until then it is listed by `GET /queue/api/json` and `POST /queue/cancelItem?id=N` cancels it.
//! - `GET /job/.../N/api/json`: `building` until the script's time has passed, then
//!   `result` SUCCESS or FAILURE; `POST /job/.../N/stop` aborts (ABORTED).
//! - `GET /job/.../api/json?tree=builds[...]{M,N}`: the newest 100 builds with their
//!   `queueId`, `timestamp` and parameters; `tree=allBuilds[...]{M,N}` the whole
//!   history, newest first, so `find` can page back by ranges (`{M,N}` from M up to
//!   N excluded, `{M,}`, `{,N}`, `{N}`).
//! - Build pages (`GET /job/.../N/`) answer without credentials, for the demo's links.
//! - When told to ([`crate::StandIns::require_jenkins_crumb`]), a POST without a
//!   crumb and its session cookie is refused with 403, and
//!   `GET /crumbIssuer/api/json` issues one, as for a password login.

use crate::callbacks::About;
use crate::faults::{Faults, visible};
use crate::journal::{Finished, Triggered};
use crate::runtime::{Shared, header_str, page, same};
use crate::script::Outcome;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

const PROVIDER: &str = "jenkins";
/// The parameter that carries the correlation id (the adapter's `CORRELATION_PARAMETER`).
const CORRELATION: &str = "PROMOTION_CORRELATION_ID";
/// Characters of a job name escaped in a URL path segment, as the adapter escapes them.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');
/// How many builds a job listing shows when the `tree` names no range.
const DEFAULT_LISTING: usize = 100;
/// The crumb the issuer hands out, and the session it is bound to.
const CRUMB: &str = "standin0crumb";
const SESSION: &str = "JSESSIONID.standin=node0session";

pub(crate) struct Jenkins {
    base: String,
    /// The whole `Authorization` header value expected.
    authorization: String,
    shared: Shared,
    faults: Faults,
    require_crumb: AtomicBool,
    state: Mutex<Store>,
}

#[derive(Default)]
struct Store {
    next_queue_id: u64,
    /// Queue item -> (job, build number).
    items: HashMap<u64, (String, u64)>,
    /// Queue items not yet picked up.
    waiting: BTreeSet<u64>,
    jobs: HashMap<String, Job>,
}

impl Store {
    /// Build `number` of `job` (build N is at index N-1).
    fn build(&self, job: &str, number: u64) -> Option<&Build> {
        let at = usize::try_from(number.checked_sub(1)?).ok()?;
        self.jobs.get(job)?.builds.get(at)
    }

    fn build_mut(&mut self, job: &str, number: u64) -> Option<&mut Build> {
        let at = usize::try_from(number.checked_sub(1)?).ok()?;
        self.jobs.get_mut(job)?.builds.get_mut(at)
    }
}

#[derive(Default)]
struct Job {
    /// Build N is at index N-1.
    builds: Vec<Build>,
}

struct Build {
    number: u64,
    queue_id: u64,
    parameters: Vec<(String, String)>,
    /// Left the queue: the build is visible.
    started: bool,
    cancelled_in_queue: bool,
    result: Option<&'static str>,
    timestamp: SystemTime,
    /// For the find lag of the fault layer.
    born: Instant,
    listings_skipped: usize,
}

impl Build {
    fn building(&self) -> bool {
        self.result.is_none()
    }
}

/// What a request addresses.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    QueueList,
    Crumb,
    QueueItem(u64),
    QueueItemPage(u64),
    CancelItem,
    Trigger(String),
    JobInfo(String),
    Build(String, u64),
    Stop(String, u64),
    BuildPage(String, u64),
}

fn parse(path: &str) -> Option<Route> {
    let segments: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    match segments.as_slice() {
        ["queue", "api", "json"] => return Some(Route::QueueList),
        ["crumbIssuer", "api", "json"] => return Some(Route::Crumb),
        ["queue", "item", n, "api", "json"] => return n.parse().ok().map(Route::QueueItem),
        ["queue", "item", n] => return n.parse().ok().map(Route::QueueItemPage),
        ["queue", "cancelItem"] => return Some(Route::CancelItem),
        _ => {}
    }
    let mut names = Vec::new();
    let mut rest = segments.as_slice();
    while let ["job", name, tail @ ..] = rest {
        names.push(percent_decode_str(name).decode_utf8().ok()?.into_owned());
        rest = tail;
    }
    if names.is_empty() {
        return None;
    }
    let job = names.join("/");
    match rest {
        ["buildWithParameters"] | ["build"] => Some(Route::Trigger(job)),
        ["api", "json"] => Some(Route::JobInfo(job)),
        [n, "api", "json"] => n.parse().ok().map(|n| Route::Build(job, n)),
        [n, "stop"] => n.parse().ok().map(|n| Route::Stop(job, n)),
        [n] => n.parse().ok().map(|n| Route::BuildPage(job, n)),
        _ => None,
    }
}

fn job_path(job: &str) -> String {
    job.split('/')
        .map(|s| format!("job/{}/", utf8_percent_encode(s, SEGMENT)))
        .collect()
}

fn html(status: StatusCode, text: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html;charset=utf-8")],
        format!(
            "<html><body><h2>HTTP ERROR {}</h2><p>{text}</p></body></html>",
            status.as_u16()
        ),
    )
        .into_response()
}

fn not_found() -> Response {
    html(StatusCode::NOT_FOUND, "Not Found")
}

fn redirect(status: StatusCode, to: &str) -> Response {
    let mut resp = status.into_response();
    if let Ok(v) = HeaderValue::from_str(to) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn parameters_action(parameters: &[(String, String)]) -> Value {
    json!({
        "_class": "hudson.model.ParametersAction",
        "parameters": parameters
            .iter()
            .map(|(k, v)| json!({"_class": "hudson.model.StringParameterValue", "name": k, "value": v}))
            .collect::<Vec<_>>(),
    })
}

/// A `tree` range as Jenkins reads it: `{M,N}` from M up to N (excluded), `{M,}` from
/// M on, `{,N}` the first N, `{N}` just the Nth (counting from 0).
fn parse_range(range: &str) -> Option<(usize, Option<usize>)> {
    let num = |t: &str| t.trim().parse::<usize>().ok();
    match range.split_once(',') {
        Some((from, to)) => {
            let from = if from.trim().is_empty() {
                0
            } else {
                num(from)?
            };
            let to = if to.trim().is_empty() {
                None
            } else {
                Some(num(to)?)
            };
            Some((from, to))
        }
        None => {
            let n = num(range)?;
            Some((n, Some(n + 1)))
        }
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Jenkins {
    pub fn new(base: String, user: &str, token: &str, shared: Shared, faults: Faults) -> Arc<Self> {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{token}"));
        Arc::new(Self {
            base,
            authorization: format!("Basic {basic}"),
            shared,
            faults,
            require_crumb: AtomicBool::new(false),
            state: Mutex::new(Store {
                next_queue_id: 1,
                ..Store::default()
            }),
        })
    }

    pub fn router(self: Arc<Self>) -> Router {
        Router::new().fallback(handle).with_state(self)
    }

    pub fn require_crumb(&self, required: bool) {
        self.require_crumb.store(required, Ordering::SeqCst);
    }

    /// The 403 Jenkins answers a POST without a valid crumb and its session, when crumbs are required.
    fn crumb_missing(&self, headers: &HeaderMap) -> Option<Response> {
        if !self.require_crumb.load(Ordering::SeqCst) {
            return None;
        }
        let crumb_ok = header_str(headers, "jenkins-crumb").is_some_and(|v| same(CRUMB, v));
        let session_ok = header_str(headers, "cookie")
            .is_some_and(|c| c.split(';').any(|kv| kv.trim() == SESSION));
        if crumb_ok && session_ok {
            None
        } else {
            Some(html(
                StatusCode::FORBIDDEN,
                "No valid crumb was included in the request",
            ))
        }
    }

    fn crumb(&self) -> Response {
        if !self.require_crumb.load(Ordering::SeqCst) {
            return not_found();
        }
        let mut resp = axum::Json(json!({
            "_class": "hudson.security.csrf.DefaultCrumbIssuer",
            "crumb": CRUMB,
            "crumbRequestField": "Jenkins-Crumb",
        }))
        .into_response();
        if let Ok(v) = HeaderValue::from_str(&format!("{SESSION}; Path=/; HttpOnly")) {
            resp.headers_mut().insert(header::SET_COOKIE, v);
        }
        resp
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn job_url(&self, job: &str) -> String {
        format!("{}/{}", self.base, job_path(job))
    }

    fn build_url(&self, job: &str, number: u64) -> String {
        format!("{}{number}/", self.job_url(job))
    }

    fn build_json(&self, job: &str, b: &Build) -> Value {
        json!({
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun",
            "actions": [parameters_action(&b.parameters)],
            "building": b.building(),
            "displayName": format!("#{}", b.number),
            "duration": 0,
            "fullDisplayName": format!("{} #{}", job.replace('/', " » "), b.number),
            "id": b.number.to_string(),
            "number": b.number,
            "queueId": b.queue_id,
            "result": b.result,
            "timestamp": millis(b.timestamp),
            "url": self.build_url(job, b.number),
        })
    }

    fn trigger(self: &Arc<Self>, job: String, uri: &Uri, body: &[u8]) -> Response {
        let mut parameters: Vec<(String, String)> =
            url::form_urlencoded::parse(body).into_owned().collect();
        // Jenkins also takes parameters in the query string.
        if let Some(q) = uri.query() {
            parameters.extend(url::form_urlencoded::parse(q.as_bytes()).into_owned());
        }
        let correlation_id = parameters
            .iter()
            .rev()
            .find(|(k, _)| k == CORRELATION)
            .map(|(_, v)| v.clone());
        let (outcome, after) = self.shared.script.outcome(&job);
        let at = SystemTime::now();
        let (queue_id, number) = {
            let mut s = self.lock();
            let queue_id = s.next_queue_id;
            s.next_queue_id += 1;
            let builds = &mut s.jobs.entry(job.clone()).or_default().builds;
            // Jenkins numbers builds when they leave the queue; nobody can tell it
            // apart from numbering them now, and the journal can name the build at once.
            let number = builds.len() as u64 + 1;
            builds.push(Build {
                number,
                queue_id,
                parameters,
                started: false,
                cancelled_in_queue: false,
                result: None,
                timestamp: at,
                born: Instant::now(),
                listings_skipped: 0,
            });
            s.items.insert(queue_id, (job.clone(), number));
            s.waiting.insert(queue_id);
            (queue_id, number)
        };
        self.shared.journal.record_trigger(Triggered {
            provider: PROVIDER,
            job: job.clone(),
            run_id: format!("build:{number}"),
            url: self.build_url(&job, number),
            correlation_id,
            at,
        });
        let me = Arc::clone(self);
        self.shared.after(after, async move {
            me.finish(&job, number, outcome).await;
        });
        redirect(
            StatusCode::CREATED,
            &format!("{}/queue/item/{queue_id}/", self.base),
        )
    }

    pub(crate) async fn finish(self: &Arc<Self>, job: &str, number: u64, outcome: Outcome) {
        let result = match outcome {
            Outcome::Pass => "SUCCESS",
            Outcome::Fail => "FAILURE",
        };
        let queue_id = {
            let mut s = self.lock();
            let Some(b) = s.build_mut(job, number) else {
                return;
            };
            if b.result.is_some() {
                // Aborted or cancelled before its time.
                return;
            }
            b.result = Some(result);
            b.started = true;
            let queue_id = b.queue_id;
            s.waiting.remove(&queue_id);
            queue_id
        };
        self.finished(job, number, outcome == Outcome::Pass, false);
        if let Some(n) = &self.shared.notifier {
            let url = self.build_url(job, number);
            let relative = format!("{}{number}/", job_path(job));
            let payload = json!({
                "name": job.rsplit('/').next().unwrap_or(job),
                "display_name": job,
                "url": job_path(job),
                "build": {
                    "full_url": url,
                    "number": number,
                    "queue_id": queue_id,
                    "phase": "FINALIZED",
                    "status": result,
                    "url": relative,
                },
            });
            n.jenkins(
                About {
                    provider: PROVIDER,
                    job: job.to_owned(),
                    run_id: format!("build:{number}"),
                },
                &payload,
            )
            .await;
        }
    }

    fn finished(&self, job: &str, number: u64, passed: bool, cancelled: bool) {
        self.shared.journal.record_finished(Finished {
            provider: PROVIDER,
            job: job.to_owned(),
            run_id: format!("build:{number}"),
            passed,
            cancelled,
            at: SystemTime::now(),
        });
    }

    fn queue_item(&self, id: u64) -> Response {
        let mut s = self.lock();
        let Some((job, number)) = s.items.get(&id).cloned() else {
            return not_found();
        };
        // Picked up by a free executor on first sight.
        let left = s.waiting.remove(&id);
        let Some(b) = s.build_mut(&job, number) else {
            return not_found();
        };
        if left && !b.cancelled_in_queue {
            b.started = true;
        }
        let task = json!({"_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob", "name": job, "url": self.job_url(&job)});
        let body = if b.cancelled_in_queue {
            json!({
                "_class": "hudson.model.Queue$LeftItem", "id": id, "cancelled": true,
                "executable": null, "actions": [parameters_action(&b.parameters)], "task": task,
            })
        } else {
            json!({
                "_class": "hudson.model.Queue$LeftItem", "id": id, "cancelled": false,
                "executable": {"_class": "org.jenkinsci.plugins.workflow.job.WorkflowRun", "number": number, "url": self.build_url(&job, number)},
                "actions": [parameters_action(&b.parameters)], "task": task,
            })
        };
        axum::Json(body).into_response()
    }

    /// Whether the build behind queue item or build `number` of `job` shows in
    /// a listing yet (the fault layer's find lag).
    fn listed(&self, s: &mut Store, job: &str, number: u64) -> bool {
        let lag = self.faults.find_lag();
        s.build_mut(job, number)
            .is_some_and(|b| visible(lag, b.born, &mut b.listings_skipped))
    }

    fn queue_list(&self) -> Response {
        let mut s = self.lock();
        let shown: Vec<u64> = s
            .waiting
            .clone()
            .into_iter()
            .filter(|id| match s.items.get(id).cloned() {
                Some((job, number)) => self.listed(&mut s, &job, number),
                None => false,
            })
            .collect();
        let s = &*s;
        let items: Vec<Value> = shown
            .iter()
            .filter_map(|id| {
                let (job, number) = s.items.get(id)?;
                let b = s.build(job, *number)?;
                let params: String = b
                    .parameters
                    .iter()
                    .map(|(k, v)| format!("\n{k}={v}"))
                    .collect();
                Some(json!({
                    "_class": "hudson.model.Queue$WaitingItem", "id": id, "blocked": false,
                    "buildable": false, "stuck": false, "why": "In the quiet period",
                    "params": params, "actions": [parameters_action(&b.parameters)],
                    "task": {"name": job, "url": self.job_url(job)},
                }))
            })
            .collect();
        axum::Json(json!({"_class": "hudson.model.Queue", "discoverableItems": [], "items": items}))
            .into_response()
    }

    fn cancel_item(&self, uri: &Uri) -> Response {
        let id: Option<u64> = uri.query().and_then(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "id")
                .and_then(|(_, v)| v.parse().ok())
        });
        let found = {
            let mut s = self.lock();
            match id {
                Some(id) if s.waiting.remove(&id) => {
                    s.items.get(&id).cloned().and_then(|(job, number)| {
                        let b = s.build_mut(&job, number)?;
                        b.cancelled_in_queue = true;
                        b.result = Some("NOT_BUILT");
                        Some((job, number))
                    })
                }
                _ => None,
            }
        };
        match found {
            Some((job, number)) => {
                self.finished(&job, number, false, true);
                redirect(StatusCode::FOUND, &format!("{}/queue/", self.base))
            }
            None => not_found(),
        }
    }

    fn job_info(&self, job: &str, uri: &Uri) -> Response {
        let tree = uri
            .query()
            .and_then(|q| {
                url::form_urlencoded::parse(q.as_bytes())
                    .find(|(k, _)| k == "tree")
                    .map(|(_, v)| v.into_owned())
            })
            .unwrap_or_default();
        // `builds` holds the newest 100 builds only; `allBuilds` the whole history.
        let all = tree.trim_start().starts_with("allBuilds");
        let range = tree
            .rsplit_once('{')
            .and_then(|(_, r)| r.strip_suffix('}'))
            .map_or(Some((0, None)), parse_range);
        let Some((from, to)) = range else {
            return html(StatusCode::BAD_REQUEST, "Invalid range in tree");
        };
        let mut s = self.lock();
        let numbers: Vec<u64> = s
            .jobs
            .get(job)
            .map(|j| {
                j.builds
                    .iter()
                    .rev()
                    .filter(|b| b.started)
                    .map(|b| b.number)
                    .collect()
            })
            .unwrap_or_default();
        let listed: Vec<u64> = numbers
            .into_iter()
            .filter(|n| self.listed(&mut s, job, *n))
            .take(if all { usize::MAX } else { DEFAULT_LISTING })
            .collect();
        let shown = listed
            .iter()
            .skip(from)
            .take(to.map_or(usize::MAX, |to| to.saturating_sub(from)));
        let builds: Vec<Value> = shown
            .filter_map(|n| s.build(job, *n))
            .map(|b| self.build_json(job, b))
            .collect();
        let key = if all { "allBuilds" } else { "builds" };
        axum::Json(json!({
            "_class": "org.jenkinsci.plugins.workflow.job.WorkflowJob",
            "name": job.rsplit('/').next().unwrap_or(job),
            "fullName": job,
            "url": self.job_url(job),
            key: builds,
        }))
        .into_response()
    }

    fn build(&self, job: &str, number: u64) -> Response {
        let s = self.lock();
        match s.build(job, number) {
            Some(b) if b.started => axum::Json(self.build_json(job, b)).into_response(),
            _ => not_found(),
        }
    }

    fn stop(&self, job: &str, number: u64) -> Response {
        let aborted = {
            let mut s = self.lock();
            let Some(b) = s.build_mut(job, number).filter(|b| b.started) else {
                return not_found();
            };
            let running = b.building();
            if running {
                b.result = Some("ABORTED");
            }
            running
        };
        if aborted {
            self.finished(job, number, false, true);
        }
        redirect(StatusCode::FOUND, &self.build_url(job, number))
    }

    fn build_page(&self, job: &str, number: u64) -> Response {
        let s = self.lock();
        match s.build(job, number) {
            Some(b) => {
                let params: String = b
                    .parameters
                    .iter()
                    .map(|(k, v)| format!("  {k} = {v}\n"))
                    .collect();
                page(format!(
                    "Jenkins stand-in\n\nbuild {job} #{number}: {}\n\nparameters:\n{params}",
                    b.result.unwrap_or("running")
                ))
            }
            None => not_found(),
        }
    }
}

async fn handle(
    State(jenkins): State<Arc<Jenkins>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(route) = parse(uri.path()) else {
        return not_found();
    };
    match (&method, &route) {
        (&Method::GET, Route::BuildPage(job, n)) => return jenkins.build_page(job, *n),
        (&Method::GET, Route::QueueItemPage(n)) => {
            return page(format!("Jenkins stand-in\n\nqueue item {n}\n"));
        }
        _ => {}
    }
    let authorized = header_str(&headers, "authorization")
        .is_some_and(|given| same(&jenkins.authorization, given));
    if !authorized {
        let mut resp = html(StatusCode::UNAUTHORIZED, "Unauthorized");
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"Jenkins\""),
        );
        return resp;
    }
    if method == Method::POST
        && let Some(denied) = jenkins.crumb_missing(&headers)
    {
        return denied;
    }
    match (method, route) {
        (Method::GET, Route::Crumb) => jenkins.crumb(),
        (Method::POST, Route::Trigger(job)) => jenkins.trigger(job, &uri, &body),
        (Method::GET, Route::QueueItem(n)) => jenkins.queue_item(n),
        (Method::GET, Route::QueueList) => jenkins.queue_list(),
        (Method::POST, Route::CancelItem) => jenkins.cancel_item(&uri),
        (Method::GET, Route::JobInfo(job)) => jenkins.job_info(&job, &uri),
        (Method::GET, Route::Build(job, n)) => jenkins.build(&job, n),
        (Method::POST, Route::Stop(job, n)) => jenkins.stop(&job, n),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_nested_jobs_builds_and_the_queue() {
        assert_eq!(
            parse("/job/team-a/job/smoke/buildWithParameters"),
            Some(Route::Trigger("team-a/smoke".into()))
        );
        assert_eq!(
            parse("/job/gate%20tests/7/api/json"),
            Some(Route::Build("gate tests".into(), 7))
        );
        assert_eq!(
            parse("/job/a/job/b/3/stop"),
            Some(Route::Stop("a/b".into(), 3))
        );
        assert_eq!(
            parse("/job/a/job/b/3/"),
            Some(Route::BuildPage("a/b".into(), 3))
        );
        assert_eq!(parse("/queue/item/12/api/json"), Some(Route::QueueItem(12)));
        assert_eq!(parse("/crumbIssuer/api/json"), Some(Route::Crumb));
        assert_eq!(parse("/job/a/nonsense/x"), None);
        assert_eq!(job_path("gate tests/x"), "job/gate%20tests/job/x/");
    }

    #[test]
    fn tree_ranges_read_as_jenkins_reads_them() {
        assert_eq!(parse_range("0,100"), Some((0, Some(100))));
        assert_eq!(parse_range("100,"), Some((100, None)));
        assert_eq!(parse_range(",5"), Some((0, Some(5))));
        assert_eq!(parse_range("3"), Some((3, Some(4))));
        assert_eq!(parse_range("a,b"), None);
    }
}

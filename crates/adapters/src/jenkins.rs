//! Jenkins, through its remote access API: `buildWithParameters`, the queue,
//! builds, and a CSRF crumb only when the server asks for one.
//!
//! Run ids: `queue:N` while the run waits in the queue, `build:N` once it has a
//! build number (the job comes from `RunRef::job`). `status` returns the new id as
//! soon as the queue item names its build, because Jenkins forgets a queue item
//! about five minutes after it leaves the queue.
//!
//! Results: SUCCESS passes; UNSTABLE is the connection's choice (Failed by
//! default); FAILURE fails; ABORTED is Cancelled; NOT_BUILT is Failed, because a
//! gate whose build did not run tested nothing and nobody aborted it; unknown
//! results stay Running. A Pipeline can set `result` while still building, so
//! `building: true` always reads as Running.

use crate::connections::{
    ConfigError, Connection, ConnectionKind, Credentials, JenkinsCredentials, JenkinsSettings,
};
use crate::http::{Answer, Auth, Body, Effect, HttpClient, RateLimits, Request, Service};
use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use promotion_core::ports::{
    Found, PortError, RunHandle, RunRef, RunState, RunStatus, TestRunner, TriggerRequest,
};
use reqwest::header::{COOKIE, HeaderName, HeaderValue, LOCATION, SET_COOKIE};
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::sync::Mutex;
use std::time::SystemTime;

/// The build parameter that carries the correlation id, so `find` can adopt a run
/// and two gates are never merged into one queue item.
pub const CORRELATION_PARAMETER: &str = "PROMOTION_CORRELATION_ID";

/// Characters of a job name that must be escaped in a URL path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// How Jenkins speaks: only the standard `Retry-After`, HTML error pages.
const JENKINS: Service = Service {
    rate_limits: RateLimits::Standard,
    auth_hint: "check the user and API token",
    json_message: false,
};

/// Runs gate tests as Jenkins builds.
#[derive(Debug)]
pub struct JenkinsRunner {
    http: HttpClient,
    credentials: JenkinsCredentials,
    settings: JenkinsSettings,
    /// The crumb the server asked for, with the session cookie it is bound to.
    crumb: Mutex<Option<Crumb>>,
}

/// A CSRF crumb and its session.
#[derive(Clone, Debug)]
struct Crumb {
    field: HeaderName,
    value: HeaderValue,
    cookie: Option<HeaderValue>,
}

/// A Jenkins run id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RunId {
    Queue(u64),
    Build(u64),
}

impl RunId {
    fn parse(id: &str) -> Option<Self> {
        let (kind, n) = id.split_once(':')?;
        let n = n.parse().ok()?;
        match kind {
            "queue" => Some(Self::Queue(n)),
            "build" => Some(Self::Build(n)),
            _ => None,
        }
    }

    fn render(self) -> String {
        match self {
            Self::Queue(n) => format!("queue:{n}"),
            Self::Build(n) => format!("build:{n}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct QueueItem {
    #[serde(default)]
    cancelled: bool,
    executable: Option<Executable>,
    why: Option<String>,
    /// `"\nNAME=value"`, on older versions only.
    params: Option<String>,
    #[serde(default)]
    actions: Vec<Option<Action>>,
}

#[derive(Debug, Deserialize)]
struct Executable {
    number: u64,
}

#[derive(Debug, Deserialize)]
struct Build {
    #[serde(default)]
    building: bool,
    result: Option<String>,
    #[serde(default)]
    actions: Vec<Option<Action>>,
}

#[derive(Debug, Deserialize)]
struct Queue {
    #[serde(default)]
    items: Vec<QueuedItem>,
}

#[derive(Debug, Deserialize)]
struct QueuedItem {
    id: u64,
    /// `"\nNAME=value\nNAME2=value2"`, on older versions only.
    params: Option<String>,
    #[serde(default)]
    actions: Vec<Option<Action>>,
}

#[derive(Debug, Default, Deserialize)]
struct Action {
    #[serde(default)]
    parameters: Vec<Option<Parameter>>,
}

#[derive(Debug, Deserialize)]
struct Parameter {
    name: String,
    #[serde(default)]
    value: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct Job {
    #[serde(default)]
    builds: Vec<BuildSummary>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BuildSummary {
    number: u64,
    queue_id: Option<u64>,
}

/// One range of a job's whole build history (`allBuilds`, newest first).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct History {
    #[serde(default)]
    all_builds: Vec<DatedBuild>,
}

#[derive(Debug, Deserialize)]
struct DatedBuild {
    number: u64,
    /// When the build was scheduled, in milliseconds since the epoch.
    timestamp: Option<u64>,
    #[serde(default)]
    actions: Vec<Option<Action>>,
}

fn epoch_millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrumbAnswer {
    crumb: String,
    crumb_request_field: String,
}

/// Whether any parameters action holds `PROMOTION_CORRELATION_ID = id`.
fn carries(actions: &[Option<Action>], id: &str) -> bool {
    actions
        .iter()
        .flatten()
        .flat_map(|a| a.parameters.iter().flatten())
        .any(|p| p.name == CORRELATION_PARAMETER && p.value.as_str() == Some(id))
}

/// The value of the correlation parameter among `actions` (or old-style `params`).
fn carried(actions: &[Option<Action>], params: Option<&str>) -> Option<String> {
    let prefix = format!("{CORRELATION_PARAMETER}=");
    actions
        .iter()
        .flatten()
        .flat_map(|a| a.parameters.iter().flatten())
        .find(|p| p.name == CORRELATION_PARAMETER)
        .and_then(|p| p.value.as_str().map(str::to_owned))
        .or_else(|| {
            params?
                .lines()
                .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
        })
}

/// Refuses a run that does not carry the correlation id `run` asks for.
fn check_ours(
    run: &RunRef,
    actions: &[Option<Action>],
    params: Option<&str>,
) -> Result<(), PortError> {
    let Some(wanted) = run.correlation_id.as_deref() else {
        return Ok(());
    };
    let found = carried(actions, params);
    if found.as_deref() == Some(wanted) {
        Ok(())
    } else {
        Err(promotion_core::ports::not_ours(run, found.as_deref()))
    }
}

/// `a/b` -> `/job/a/job/b`, each name escaped.
fn job_path(job: &str) -> Result<String, PortError> {
    let segments: Vec<&str> = job.trim_matches('/').split('/').collect();
    if segments.iter().any(|s| s.is_empty()) {
        return Err(PortError::permanent(format!(
            "invalid Jenkins job path '{job}': expected names separated by '/'"
        )));
    }
    Ok(segments
        .iter()
        .map(|s| format!("/job/{}", utf8_percent_encode(s, SEGMENT)))
        .collect())
}

/// The queue item number of a `Location` such as `https://ci/queue/item/17/`.
fn queue_item_of(location: &str) -> Option<u64> {
    let path = location.split(['?', '#']).next()?;
    let mut segments = path.split('/').filter(|s| !s.is_empty());
    segments.find(|s| *s == "queue")?;
    if segments.next()? != "item" {
        return None;
    }
    segments.next()?.parse().ok()
}

/// A 403 that asks for a crumb, as opposed to one that lacks a permission.
fn is_crumb_error(answer: &Answer) -> bool {
    answer.status == StatusCode::FORBIDDEN
        && String::from_utf8_lossy(&answer.body)
            .to_ascii_lowercase()
            .contains("crumb")
}

impl JenkinsRunner {
    /// A runner for a Jenkins connection.
    pub fn new(connection: &Connection) -> Result<Self, ConfigError> {
        let config = &connection.config;
        let (ConnectionKind::Jenkins, Credentials::Jenkins(credentials)) =
            (config.kind, &connection.credentials)
        else {
            return Err(connection.wrong_credentials());
        };
        let http = HttpClient::for_config(config, JENKINS, reqwest::header::HeaderMap::new())?;
        Ok(Self {
            http,
            credentials: credentials.clone(),
            settings: config.jenkins.clone(),
            crumb: Mutex::new(None),
        })
    }

    fn auth(&self) -> Auth {
        Auth::Basic {
            user: self.credentials.user.clone(),
            password: self.credentials.token.clone(),
        }
    }

    fn get(&self, path: String) -> Request {
        Request::raw(Method::GET, Effect::Read, path).auth(self.auth())
    }

    /// Rebuilds a link from the configured base: the host Jenkins puts in URLs
    /// can be wrong behind a proxy.
    fn link(&self, path: &str) -> Option<String> {
        self.http.url(path).ok().map(String::from)
    }

    fn build_link(&self, job: &str, number: u64) -> Option<String> {
        let path = job_path(job).ok()?;
        self.link(&format!("{path}/{number}/"))
    }

    fn cached_crumb(&self) -> Option<Crumb> {
        self.crumb
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Asks the crumb issuer for a crumb and keeps the session cookie it is bound to.
    async fn fetch_crumb(&self) -> Result<Crumb, PortError> {
        let req = self.get("/crumbIssuer/api/json".to_owned());
        let answer = self.http.read(&req).await?;
        let body: CrumbAnswer = answer.json()?;
        let malformed = || {
            PortError::permanent(format!(
                "connection {}: malformed crumb from {}",
                self.http.connection(),
                req.describe()
            ))
        };
        let field =
            HeaderName::from_bytes(body.crumb_request_field.as_bytes()).map_err(|_| malformed())?;
        let mut value = HeaderValue::from_str(&body.crumb).map_err(|_| malformed())?;
        value.set_sensitive(true);
        let cookies: Vec<&str> = answer
            .headers
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(|v| v.split(';').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .collect();
        let cookie = if cookies.is_empty() {
            None
        } else {
            let mut v = HeaderValue::from_str(&cookies.join("; ")).map_err(|_| malformed())?;
            v.set_sensitive(true);
            Some(v)
        };
        let crumb = Crumb {
            field,
            value,
            cookie,
        };
        *self
            .crumb
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(crumb.clone());
        Ok(crumb)
    }

    /// Sends a POST once; when the server rejects it for want of a crumb (nothing
    /// was done then), fetches one and sends it a second time.
    async fn post(
        &self,
        effect: Effect,
        path: &str,
        form: Vec<(String, String)>,
    ) -> Result<(Request, Answer), PortError> {
        let mut crumb = self.cached_crumb();
        let mut fetched = false;
        loop {
            let mut req = Request::raw(Method::POST, effect, path)
                .auth(self.auth())
                .body(Body::Form(form.clone()));
            if let Some(c) = &crumb {
                req = req.header(c.field.clone(), c.value.clone());
                if let Some(cookie) = &c.cookie {
                    req = req.header(COOKIE, cookie.clone());
                }
            }
            let answer = self.http.exchange(&req).await?;
            if is_crumb_error(&answer) && !fetched {
                tracing::debug!(connection = %self.http.connection(), "Jenkins asks for a CSRF crumb");
                crumb = Some(self.fetch_crumb().await?);
                fetched = true;
                continue;
            }
            return Ok((req, answer));
        }
    }

    async fn build_status(&self, run: &RunRef, number: u64) -> Result<RunStatus, PortError> {
        let job = run.job.as_str();
        let path = format!(
            "{}/{number}/api/json?tree=building,result,duration,url,number,actions[parameters[name,value]]",
            job_path(job)?
        );
        let build: Build = self.http.read_json(&self.get(path)).await?;
        check_ours(run, &build.actions, None)?;
        let state = match (build.building, build.result.as_deref()) {
            (true, _) | (false, None) => RunState::Running,
            (false, Some("SUCCESS")) => RunState::Passed,
            (false, Some("UNSTABLE")) => self.settings.unstable,
            (false, Some("FAILURE")) | (false, Some("NOT_BUILT")) => RunState::Failed,
            (false, Some("ABORTED")) => RunState::Cancelled,
            (false, Some(other)) => {
                tracing::warn!(connection = %self.http.connection(), job, number, result = other, "unknown Jenkins build result; still Running");
                RunState::Running
            }
        };
        Ok(RunStatus {
            state,
            url: self.build_link(job, number),
            message: build.result,
            run_id: None,
        })
    }

    async fn queue_status(&self, run: &RunRef, item: u64) -> Result<RunStatus, PortError> {
        let job = run.job.as_str();
        let req = self.get(format!("/queue/item/{item}/api/json"));
        let Some(queued) = self.http.read_json_if_found::<QueueItem>(&req).await? else {
            return self.status_of_forgotten_item(run, item).await;
        };
        check_ours(run, &queued.actions, queued.params.as_deref())?;
        if let Some(exe) = queued.executable {
            let new_id = RunId::Build(exe.number).render();
            let status = match self.build_status(run, exe.number).await {
                Ok(status) => status,
                Err(e) => {
                    // The build number is what must not be lost; its state can wait.
                    tracing::warn!(connection = %self.http.connection(), job, error = %e, "reading a new build failed");
                    RunStatus {
                        state: RunState::Running,
                        url: self.build_link(job, exe.number),
                        message: None,
                        run_id: None,
                    }
                }
            };
            return Ok(RunStatus {
                run_id: Some(new_id),
                ..status
            });
        }
        if queued.cancelled {
            return Ok(RunStatus {
                state: RunState::Cancelled,
                url: None,
                message: Some("cancelled in the Jenkins queue".to_owned()),
                run_id: None,
            });
        }
        Ok(RunStatus {
            state: RunState::Pending,
            url: None,
            message: queued.why,
            run_id: None,
        })
    }

    /// A queue item Jenkins forgot: its build, if any, still names it in `queueId`.
    async fn status_of_forgotten_item(
        &self,
        run: &RunRef,
        item: u64,
    ) -> Result<RunStatus, PortError> {
        let job = run.job.as_str();
        let Some(number) = self.build_of_forgotten_item(job, item).await? else {
            return Err(PortError::permanent(format!(
                "connection {}: queue item {item} is gone and no recent build of {job} came from it",
                self.http.connection()
            )));
        };
        let status = self.build_status(run, number).await?;
        Ok(RunStatus {
            run_id: Some(RunId::Build(number).render()),
            ..status
        })
    }

    async fn build_of_forgotten_item(
        &self,
        job: &str,
        item: u64,
    ) -> Result<Option<u64>, PortError> {
        let builds = self.recent_builds(job).await?;
        Ok(builds
            .into_iter()
            .find(|b| b.queue_id == Some(item))
            .map(|b| b.number))
    }

    async fn recent_builds(&self, job: &str) -> Result<Vec<BuildSummary>, PortError> {
        let path = format!(
            "{}/api/json?tree=builds[number,queueId]{{0,{}}}",
            job_path(job)?,
            self.settings.find_depth
        );
        let job: Job = self.http.read_json(&self.get(path)).await?;
        Ok(job.builds)
    }

    /// Pages back through the job's whole history (`allBuilds`, `{M,N}` ranges, newest
    /// first) until a build scheduled before `since` or the first build; "not sure"
    /// when `maxFindPages` ranges did not get that far.
    async fn find_in_history(
        &self,
        req: &TriggerRequest,
        since: SystemTime,
    ) -> Result<Found, PortError> {
        let path = job_path(&req.job)?;
        let per_page = self.settings.find_depth.max(1);
        let pages = self.settings.find_pages.max(1);
        let since_ms = epoch_millis(since);
        let mut seen = 0;
        for page in 0..pages {
            let (from, to) = (page * per_page, (page + 1) * per_page);
            let history: History = self
                .http
                .read_json(&self.get(format!(
                    "{path}/api/json?tree=allBuilds[number,timestamp,actions[parameters[name,value]]]{{{from},{to}}}"
                )))
                .await?;
            seen += history.all_builds.len();
            if let Some(b) = history
                .all_builds
                .iter()
                .find(|b| carries(&b.actions, &req.correlation_id))
            {
                return Ok(Found::Run(RunHandle {
                    run_id: RunId::Build(b.number).render(),
                    url: self.build_link(&req.job, b.number),
                }));
            }
            let ended = history.all_builds.len() < per_page;
            let reached = history
                .all_builds
                .iter()
                .any(|b| b.timestamp.is_some_and(|t| t < since_ms));
            if ended || reached {
                return Ok(Found::Absent);
            }
        }
        Ok(Found::NotSure(format!(
            "connection {}: read the {seen} newest builds of {} ({pages} pages, maxFindPages) \
             without reaching {}",
            self.http.connection(),
            req.job,
            chrono::DateTime::<chrono::Utc>::from(since).format("%Y-%m-%dT%H:%M:%SZ")
        )))
    }

    fn parse_run_id(&self, run: &RunRef) -> Result<RunId, PortError> {
        RunId::parse(&run.run_id).ok_or_else(|| {
            PortError::permanent(format!(
                "connection {}: '{}' is not a Jenkins run id (queue:N or build:N)",
                self.http.connection(),
                run.run_id
            ))
        })
    }

    /// A POST whose 2xx or 3xx answer means done, and whose 404 means there is
    /// nothing left to cancel.
    async fn cancel_post(&self, path: &str) -> Result<(), PortError> {
        // Cancelling again is harmless: a write, not a trigger.
        let (req, answer) = self.post(Effect::Write, path, Vec::new()).await?;
        match answer.status {
            s if s.is_success() || s.is_redirection() => Ok(()),
            StatusCode::NOT_FOUND => {
                tracing::info!(connection = %self.http.connection(), call = %req.describe(), "nothing to cancel");
                Ok(())
            }
            _ => Err(answer.error()),
        }
    }
}

#[async_trait]
impl TestRunner for JenkinsRunner {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        let path = format!("{}/buildWithParameters", job_path(&req.job)?);
        let mut form: Vec<(String, String)> = req
            .parameters
            .iter()
            .filter(|(k, _)| k.as_str() != CORRELATION_PARAMETER)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        form.push((CORRELATION_PARAMETER.to_owned(), req.correlation_id.clone()));
        let (call, answer) = self.post(Effect::Trigger, &path, form).await?;
        if !(answer.status == StatusCode::CREATED
            || answer.status == StatusCode::SEE_OTHER
            || answer.status == StatusCode::FOUND)
        {
            return Err(answer.error());
        }
        let location = answer.headers.get(LOCATION).and_then(|v| v.to_str().ok());
        let Some(item) = location.and_then(queue_item_of) else {
            // Jenkins took it but did not say where: only `find` can tell.
            return Err(PortError::ambiguous(format!(
                "connection {}: {} from {} named no queue item (Location: {})",
                self.http.connection(),
                answer.status,
                call.describe(),
                location.unwrap_or("none")
            )));
        };
        tracing::info!(connection = %self.http.connection(), job = %req.job, item, correlation_id = %req.correlation_id, "queued a Jenkins build");
        if answer.status == StatusCode::SEE_OTHER {
            tracing::info!(connection = %self.http.connection(), job = %req.job, item, "Jenkins merged the trigger into an existing queue item");
        }
        Ok(RunHandle {
            run_id: RunId::Queue(item).render(),
            url: self.link(&format!("/queue/item/{item}/")),
        })
    }

    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        match self.parse_run_id(run)? {
            RunId::Queue(item) => self.queue_status(run, item).await,
            RunId::Build(number) => self.build_status(run, number).await,
        }
    }

    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        // The queue first: an item leaves it only once its build is listed, so
        // looking in this order cannot miss a run moving between the two.
        let queue: Queue = self
            .http
            .read_json(&self.get(
                "/queue/api/json?tree=items[id,params,actions[parameters[name,value]]]".to_owned(),
            ))
            .await?;
        let wanted_line = format!("{CORRELATION_PARAMETER}={}", req.correlation_id);
        if let Some(item) = queue.items.iter().find(|i| {
            carries(&i.actions, &req.correlation_id)
                || i.params
                    .as_deref()
                    .is_some_and(|p| p.lines().any(|l| l.trim() == wanted_line))
        }) {
            return Ok(Found::Run(RunHandle {
                run_id: RunId::Queue(item.id).render(),
                url: self.link(&format!("/queue/item/{}/", item.id)),
            }));
        }
        self.find_in_history(req, since).await
    }

    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        let number = match self.parse_run_id(run)? {
            RunId::Build(number) => number,
            RunId::Queue(item) => {
                let req = self.get(format!("/queue/item/{item}/api/json"));
                let item_read = self.http.read_json_if_found::<QueueItem>(&req).await?;
                if let Some(q) = &item_read {
                    check_ours(run, &q.actions, q.params.as_deref())?;
                }
                match item_read {
                    // Cancelling the item would not stop the build it became.
                    Some(QueueItem {
                        executable: Some(exe),
                        ..
                    }) => exe.number,
                    Some(q) if q.cancelled => return Ok(()),
                    Some(_) => {
                        return self
                            .cancel_post(&format!("/queue/cancelItem?id={item}"))
                            .await;
                    }
                    None => match self.build_of_forgotten_item(&run.job, item).await? {
                        Some(number) => number,
                        // No build came of it, so there is nothing to stop.
                        None => return Ok(()),
                    },
                }
            }
        };
        if run.correlation_id.is_some() {
            // Only a build that carries this tracker's correlation id is stopped.
            self.build_status(run, number).await?;
        }
        self.cancel_post(&format!("{}/{number}/stop", job_path(&run.job)?))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_paths_nest_folders_and_escape_names() {
        assert_eq!(job_path("a/b").unwrap(), "/job/a/job/b");
        assert_eq!(job_path("/gate tests/").unwrap(), "/job/gate%20tests");
        assert!(job_path("a//b").is_err());
        assert!(job_path("").is_err());
    }

    #[test]
    fn queue_items_come_from_any_host() {
        assert_eq!(
            queue_item_of("http://wrong-host:8080/queue/item/17/"),
            Some(17)
        );
        assert_eq!(queue_item_of("https://ci/jenkins/queue/item/3"), Some(3));
        assert_eq!(queue_item_of("https://ci/job/x/"), None);
    }

    #[test]
    fn run_ids_round_trip() {
        for id in [RunId::Queue(4), RunId::Build(12)] {
            assert_eq!(RunId::parse(&id.render()), Some(id));
        }
        assert_eq!(RunId::parse("12"), None);
    }
}

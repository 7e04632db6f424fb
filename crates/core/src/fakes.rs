//! In-process fakes of the ports, scripted by tests, that can also "crash" the
//! caller at a chosen point (perform the effect, then never return).

use crate::ports::*;
use async_trait::async_trait;
use promotion_api::{ApplicationRef, PullRequestTracker, PullRequestTrackerStatus};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::Notify;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Where a fake stops answering after doing its work, as if the process died there.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum CrashPoint {
    /// After the CI system started this test's run, before the trigger returns.
    AfterTrigger(String),
    /// After the application was pointed at the revision.
    AfterPromote,
    /// After the label was added.
    AfterLabel,
    /// After the first status holding a test run without a run id (an intent whose
    /// trigger has not answered) was saved: the process died right after that write.
    AfterIntentSave,
}

/// Crash points shared by the fakes; a test arms one and waits for it to be hit.
#[derive(Default)]
pub struct Crashes {
    armed: Mutex<HashSet<CrashPoint>>,
    hit: Notify,
}

impl Crashes {
    /// Arms a crash point (it fires once).
    pub fn arm(&self, point: CrashPoint) {
        lock(&self.armed).insert(point);
    }

    /// Waits until an armed crash point was hit.
    pub async fn wait_hit(&self) {
        self.hit.notified().await;
    }

    async fn maybe_crash(&self, point: CrashPoint) {
        if lock(&self.armed).remove(&point) {
            self.hit.notify_one();
            std::future::pending::<()>().await;
        }
    }
}

/// How a scripted CI job behaves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Script {
    /// Running for this many status polls, then this final state.
    After(u32, RunState),
    /// Never finishes.
    Hang,
    /// The trigger is refused.
    Refuse,
    /// The run starts but the trigger's answer is lost (a timeout after sending), then it passes.
    LostAnswer,
}

#[derive(Clone, Debug)]
struct FakeRun {
    job: String,
    correlation_id: String,
    polls: u32,
    script: Script,
    cancelled: bool,
    created: Instant,
    created_at: SystemTime,
}

/// How the CI system's API misbehaves, beyond what each job's script says.
#[derive(Clone, Debug, Default)]
pub struct CiFaults {
    /// Every trigger takes this long to answer (the run is created at once).
    pub trigger_delay: Duration,
    /// A run shows up in `find` only this long after it was created (`None`: never).
    pub find_lag: Option<Duration>,
    /// Answers to the next status calls, in order, before the real answer.
    pub status_errors: VecDeque<PortError>,
    /// Answers to the next trigger calls, in order, before anything is started.
    pub trigger_errors: VecDeque<PortError>,
    /// Jobs whose status calls never answer (a hung CI API without a timeout).
    pub status_hang: std::collections::HashSet<String>,
    /// `find` lists at most this many of a job's newest runs, as one page of a CI API:
    /// a run beyond it, with the page not reaching back to `since`, is "not sure".
    pub find_page: Option<usize>,
    /// Jobs whose CI configuration hides the correlation id, with why (`check_findable`).
    pub unfindable: HashMap<String, String>,
}

/// Every call the fake CI system received, repeated ones included.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CiCalls {
    /// Trigger calls (refused ones included).
    pub trigger: usize,
    /// Status calls.
    pub status: usize,
    /// Find calls.
    pub find: usize,
    /// Cancel calls.
    pub cancel: usize,
    /// Status calls that hung (counted in `status` too).
    pub hung: usize,
    /// Findability checks.
    pub check: usize,
}

/// A CI system: every job follows its script.
pub struct FakeCi {
    scripts: Mutex<HashMap<String, Script>>,
    runs: Mutex<BTreeMap<u64, FakeRun>>,
    triggers: Mutex<Vec<String>>,
    calls: Mutex<CiCalls>,
    /// How the API misbehaves; tests change it at any time.
    pub faults: Mutex<CiFaults>,
    /// Crash points, shared with the other fakes of a test.
    pub crashes: Arc<Crashes>,
}

impl Default for FakeCi {
    fn default() -> Self {
        Self {
            scripts: Mutex::default(),
            runs: Mutex::default(),
            triggers: Mutex::default(),
            calls: Mutex::default(),
            faults: Mutex::new(CiFaults {
                find_lag: Some(Duration::ZERO),
                ..CiFaults::default()
            }),
            crashes: Arc::default(),
        }
    }
}

impl FakeCi {
    /// A CI system whose unscripted jobs pass on the second poll.
    pub fn new(crashes: Arc<Crashes>) -> Self {
        Self {
            crashes,
            ..Self::default()
        }
    }

    /// Scripts a job.
    pub fn script(&self, job: &str, script: Script) {
        lock(&self.scripts).insert(job.to_string(), script);
    }

    /// Ends the runs of `job` already started with `state`, as a CI system does
    /// when its build finishes: a test decides when, not the number of polls.
    pub fn finish(&self, job: &str, state: RunState) {
        for run in lock(&self.runs).values_mut().filter(|r| r.job == job) {
            run.script = Script::After(0, state);
        }
    }

    /// Starts `n` runs of `job` that other trackers triggered (not counted by
    /// [`FakeCi::triggered`]): a busy job whose newest runs are not ours.
    pub fn busy(&self, job: &str, n: usize) {
        let mut runs = lock(&self.runs);
        for k in 0..n {
            let id = runs.len() as u64 + 1;
            runs.insert(
                id,
                FakeRun {
                    job: job.to_string(),
                    correlation_id: format!("elsewhere-{id}-{k}"),
                    polls: 0,
                    script: Script::Hang,
                    cancelled: false,
                    created: Instant::now(),
                    created_at: SystemTime::now(),
                },
            );
        }
    }

    /// Every call received so far.
    pub fn calls(&self) -> CiCalls {
        lock(&self.calls).clone()
    }

    /// How many times `job` was triggered.
    pub fn triggered(&self, job: &str) -> usize {
        lock(&self.triggers).iter().filter(|j| *j == job).count()
    }

    /// Every trigger, in order (job names).
    pub fn all_triggers(&self) -> Vec<String> {
        lock(&self.triggers).clone()
    }

    /// The jobs whose runs were cancelled.
    pub fn cancelled(&self) -> Vec<String> {
        lock(&self.runs)
            .values()
            .filter(|r| r.cancelled)
            .map(|r| r.job.clone())
            .collect()
    }

    /// The ids of the runs `job`'s triggers started, in order.
    pub fn run_ids(&self, job: &str) -> Vec<String> {
        let runs = lock(&self.runs);
        let mut ids: Vec<(u64, String)> = runs
            .iter()
            .filter(|(_, r)| r.job == job)
            .map(|(id, _)| (*id, id.to_string()))
            .collect();
        ids.sort();
        ids.into_iter().map(|(_, id)| id).collect()
    }

    /// The correlation ids the trigger of `job` carried, in order.
    pub fn correlation_ids(&self, job: &str) -> Vec<String> {
        lock(&self.runs)
            .values()
            .filter(|r| r.job == job)
            .map(|r| r.correlation_id.clone())
            .collect()
    }
}

#[async_trait]
impl TestRunner for FakeCi {
    async fn trigger(&self, req: &TriggerRequest) -> Result<RunHandle, PortError> {
        lock(&self.calls).trigger += 1;
        let (delay, refused) = {
            let mut f = lock(&self.faults);
            (f.trigger_delay, f.trigger_errors.pop_front())
        };
        if let Some(e) = refused {
            return Err(e);
        }
        let script = lock(&self.scripts)
            .get(&req.job)
            .cloned()
            .unwrap_or(Script::After(1, RunState::Passed));
        if script == Script::Refuse {
            return Err(PortError::permanent(format!(
                "job {} not found (404)",
                req.job
            )));
        }
        let lost = script == Script::LostAnswer;
        let id = {
            let mut runs = lock(&self.runs);
            let id = runs.len() as u64 + 1;
            runs.insert(
                id,
                FakeRun {
                    job: req.job.clone(),
                    correlation_id: req.correlation_id.clone(),
                    polls: 0,
                    script,
                    cancelled: false,
                    created: Instant::now(),
                    created_at: SystemTime::now(),
                },
            );
            id
        };
        lock(&self.triggers).push(req.job.clone());
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if lost {
            return Err(PortError::ambiguous("timed out waiting for the answer"));
        }
        self.crashes
            .maybe_crash(CrashPoint::AfterTrigger(req.job.clone()))
            .await;
        Ok(RunHandle {
            run_id: id.to_string(),
            url: Some(format!("https://ci.example/{}/{id}", req.job)),
        })
    }

    async fn status(&self, run: &RunRef) -> Result<RunStatus, PortError> {
        lock(&self.calls).status += 1;
        if let Some(e) = lock(&self.faults).status_errors.pop_front() {
            return Err(e);
        }
        let id: u64 = run
            .run_id
            .parse()
            .map_err(|_| PortError::permanent("bad run id"))?;
        let hang = lock(&self.runs)
            .get(&id)
            .is_some_and(|r| lock(&self.faults).status_hang.contains(&r.job));
        if hang {
            lock(&self.calls).hung += 1;
            std::future::pending::<()>().await;
        }
        let mut runs = lock(&self.runs);
        let r = runs
            .get_mut(&id)
            .ok_or_else(|| PortError::permanent("run not found (404)"))?;
        if run
            .correlation_id
            .as_deref()
            .is_some_and(|c| c != r.correlation_id)
        {
            return Err(crate::ports::not_ours(run, Some(&r.correlation_id)));
        }
        r.polls += 1;
        let state = if r.cancelled {
            RunState::Cancelled
        } else {
            match r.script {
                Script::After(n, fin) if r.polls > n => fin,
                Script::After(..) | Script::Hang => RunState::Running,
                Script::Refuse => RunState::Failed,
                Script::LostAnswer => RunState::Passed,
            }
        };
        Ok(RunStatus {
            state,
            url: None,
            message: Some(format!("{state:?}")),
            run_id: None,
        })
    }

    async fn find(&self, req: &TriggerRequest, since: SystemTime) -> Result<Found, PortError> {
        lock(&self.calls).find += 1;
        let (lag, page) = {
            let f = lock(&self.faults);
            (f.find_lag, f.find_page)
        };
        let runs = lock(&self.runs);
        // Newest first, as CI listings are; a lagging run is not listed yet.
        let listed: Vec<(&u64, &FakeRun)> = runs
            .iter()
            .rev()
            .filter(|(_, r)| r.job == req.job)
            .filter(|(_, r)| lag.is_some_and(|l| r.created.elapsed() >= l))
            .collect();
        let shown = page.map_or(listed.len(), |p| p.max(1).min(listed.len()));
        if let Some((id, r)) = listed[..shown]
            .iter()
            .find(|(_, r)| r.correlation_id == req.correlation_id)
        {
            return Ok(Found::Run(RunHandle {
                run_id: id.to_string(),
                url: Some(format!("https://ci.example/{}/{id}", r.job)),
            }));
        }
        let reached = shown == listed.len() || listed[shown - 1].1.created_at < since;
        Ok(if reached {
            Found::Absent
        } else {
            Found::NotSure(format!(
                "searched the {shown} newest runs of {} without reaching the intent's time",
                req.job
            ))
        })
    }

    async fn check_findable(&self, req: &TriggerRequest) -> Result<(), PortError> {
        lock(&self.calls).check += 1;
        match lock(&self.faults).unfindable.get(&req.job) {
            Some(why) => Err(PortError::permanent(why.clone())),
            None => Ok(()),
        }
    }

    async fn cancel(&self, run: &RunRef) -> Result<(), PortError> {
        lock(&self.calls).cancel += 1;
        if let Ok(id) = run.run_id.parse::<u64>()
            && let Some(r) = lock(&self.runs).get_mut(&id)
        {
            if run
                .correlation_id
                .as_deref()
                .is_some_and(|c| c != r.correlation_id)
            {
                return Err(crate::ports::not_ours(run, Some(&r.correlation_id)));
            }
            r.cancelled = true;
        }
        Ok(())
    }
}

/// Argo CD: applications that sync (instantly, by default) to whatever they are pointed at.
#[derive(Default)]
pub struct FakeArgo {
    apps: Mutex<HashMap<String, (String, bool)>>,
    promotions: Mutex<Vec<(String, String)>>,
    promote_calls: Mutex<usize>,
    holds: Mutex<HashMap<String, String>>,
    hold_writes: Mutex<usize>,
    /// When set, promoted applications stay OutOfSync until `sync` is called.
    pub manual_sync: Mutex<bool>,
    /// Crash points, shared with the other fakes of a test.
    pub crashes: Arc<Crashes>,
    opt_ins: Mutex<HashMap<String, String>>,
    markers: Mutex<HashMap<String, String>>,
    reads: Mutex<usize>,
}

impl FakeArgo {
    /// How many reads of an application were made (status, holder, marker).
    pub fn reads(&self) -> usize {
        *lock(&self.reads)
    }

    /// Sets the opt-in annotation of `app`; an app without one set here opts in to every
    /// namespace (`*`), so tests that are not about tenancy need not say it.
    pub fn set_opt_in(&self, app: &str, value: &str) {
        lock(&self.opt_ins).insert(app.to_string(), value.to_string());
    }

    fn opt_in(&self, app: &str) -> Option<String> {
        Some(
            lock(&self.opt_ins)
                .get(app)
                .cloned()
                .unwrap_or_else(|| "*".into()),
        )
    }

    /// A fake with no applications.
    pub fn new(crashes: Arc<Crashes>) -> Self {
        Self {
            crashes,
            ..Self::default()
        }
    }

    /// Deploys `revision` in `app`, synced and healthy.
    pub fn deploy(&self, app: &str, revision: &str) {
        lock(&self.apps).insert(app.to_string(), (revision.to_string(), true));
    }

    /// Marks `app` synced at its target revision.
    pub fn sync(&self, app: &str) {
        if let Some(a) = lock(&self.apps).get_mut(app) {
            a.1 = true;
        }
    }

    /// How many promote calls were made, repeated and no-op ones included.
    pub fn promote_calls(&self) -> usize {
        *lock(&self.promote_calls)
    }

    /// Every promotion that changed an application: (application, revision).
    pub fn promotions(&self) -> Vec<(String, String)> {
        lock(&self.promotions).clone()
    }

    /// Who holds `app`, as its annotation says.
    pub fn held_by(&self, app: &str) -> Option<String> {
        lock(&self.holds).get(app).cloned()
    }

    /// Sets or clears the hold annotation by hand (a tracker that died holding it).
    pub fn set_holder(&self, app: &str, holder: Option<&str>) {
        match holder {
            Some(h) => lock(&self.holds).insert(app.to_string(), h.to_string()),
            None => lock(&self.holds).remove(app),
        };
    }

    /// How many times a hold annotation was written (taken or released).
    pub fn hold_writes(&self) -> usize {
        *lock(&self.hold_writes)
    }
}

#[async_trait]
impl ArgoCdClient for FakeArgo {
    async fn application_status(&self, app: &ApplicationRef) -> Result<AppStatus, PortError> {
        *lock(&self.reads) += 1;
        let apps = lock(&self.apps);
        let Some((rev, synced)) = apps.get(&app.name) else {
            return Ok(AppStatus {
                sync: SyncStatus::Unknown,
                health: HealthStatus::Missing,
                revisions: vec![],
                operation_phase: None,
                opt_in: self.opt_in(&app.name),
            });
        };
        Ok(AppStatus {
            sync: if *synced {
                SyncStatus::Synced
            } else {
                SyncStatus::OutOfSync
            },
            health: if *synced {
                HealthStatus::Healthy
            } else {
                HealthStatus::Progressing
            },
            revisions: vec![rev.clone()],
            operation_phase: None,
            opt_in: self.opt_in(&app.name),
        })
    }

    async fn promote(&self, app: &ApplicationRef, req: &PromotionRequest) -> Result<(), PortError> {
        *lock(&self.promote_calls) += 1;
        let manual = *lock(&self.manual_sync);
        {
            let mut apps = lock(&self.apps);
            let current = apps.get(&app.name).map(|a| a.0.clone());
            if current.as_deref() != Some(req.revision.as_str()) {
                apps.insert(app.name.clone(), (req.revision.clone(), !manual));
                if !req.tracker.is_empty() {
                    lock(&self.markers).insert(
                        app.name.clone(),
                        format!("{}@{}", req.tracker, req.revision),
                    );
                }
                lock(&self.promotions).push((app.name.clone(), req.revision.clone()));
            }
        }
        self.crashes.maybe_crash(CrashPoint::AfterPromote).await;
        Ok(())
    }

    async fn promotion_marker(&self, app: &ApplicationRef) -> Result<Option<String>, PortError> {
        *lock(&self.reads) += 1;
        Ok(lock(&self.markers).get(&app.name).cloned())
    }

    async fn holder(&self, app: &ApplicationRef) -> Result<Option<String>, PortError> {
        *lock(&self.reads) += 1;
        Ok(lock(&self.holds).get(&app.name).cloned())
    }

    async fn acquire(
        &self,
        app: &ApplicationRef,
        holder: &str,
        breaking: Option<&str>,
    ) -> Result<Hold, PortError> {
        let mut holds = lock(&self.holds);
        match holds.get(&app.name) {
            Some(h) if h == holder => Ok(Hold::Acquired),
            Some(h) if Some(h.as_str()) != breaking => Ok(Hold::HeldBy(h.clone())),
            _ => {
                holds.insert(app.name.clone(), holder.to_string());
                *lock(&self.hold_writes) += 1;
                Ok(Hold::Acquired)
            }
        }
    }

    async fn release(&self, app: &ApplicationRef, holder: &str) -> Result<(), PortError> {
        let mut holds = lock(&self.holds);
        if holds.get(&app.name).map(String::as_str) == Some(holder) {
            holds.remove(&app.name);
            *lock(&self.hold_writes) += 1;
        }
        Ok(())
    }
}

/// The controller's view of every tracker, set by the test.
#[derive(Default)]
pub struct FakeDirectory {
    trackers: Mutex<BTreeMap<String, Arc<PullRequestTracker>>>,
}

impl FakeDirectory {
    /// Adds or replaces a tracker (keyed by namespace/name).
    pub fn put(&self, tracker: &PullRequestTracker) {
        let key = format!(
            "{}/{}",
            tracker.metadata.namespace.as_deref().unwrap_or_default(),
            tracker.metadata.name.as_deref().unwrap_or_default()
        );
        lock(&self.trackers).insert(key, Arc::new(tracker.clone()));
    }

    /// Forgets a tracker.
    pub fn remove(&self, namespace: &str, name: &str) {
        lock(&self.trackers).remove(&format!("{namespace}/{name}"));
    }
}

impl TrackerDirectory for FakeDirectory {
    fn trackers(&self) -> Vec<Arc<PullRequestTracker>> {
        lock(&self.trackers).values().cloned().collect()
    }
}

/// GitHub: labels and commit statuses, remembered.
#[derive(Default)]
pub struct FakeGitHub {
    labels: Mutex<HashMap<PullRequestRef, Vec<String>>>,
    label_calls: Mutex<usize>,
    statuses: Mutex<Vec<(String, CommitStatus)>>,
    /// Crash points, shared with the other fakes of a test.
    pub crashes: Arc<Crashes>,
}

impl FakeGitHub {
    /// A fake with no labels.
    pub fn new(crashes: Arc<Crashes>) -> Self {
        Self {
            crashes,
            ..Self::default()
        }
    }

    /// The labels of a PR.
    pub fn labels(&self, pr: &PullRequestRef) -> Vec<String> {
        lock(&self.labels).get(pr).cloned().unwrap_or_default()
    }

    /// How many add-label calls were made.
    pub fn label_calls(&self) -> usize {
        *lock(&self.label_calls)
    }

    /// Every commit status set: (sha, status).
    pub fn statuses(&self) -> Vec<(String, CommitStatus)> {
        lock(&self.statuses).clone()
    }
}

#[async_trait]
impl GitHubClient for FakeGitHub {
    async fn add_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        *lock(&self.label_calls) += 1;
        {
            let mut labels = lock(&self.labels);
            let l = labels.entry(pr.clone()).or_default();
            if !l.iter().any(|x| x == label) {
                l.push(label.to_string());
            }
        }
        self.crashes.maybe_crash(CrashPoint::AfterLabel).await;
        Ok(())
    }

    async fn remove_label(&self, pr: &PullRequestRef, label: &str) -> Result<(), PortError> {
        if let Some(l) = lock(&self.labels).get_mut(pr) {
            l.retain(|x| x != label);
        }
        Ok(())
    }

    async fn set_commit_status(
        &self,
        _: &PullRequestRef,
        sha: &str,
        status: &CommitStatus,
    ) -> Result<(), PortError> {
        lock(&self.statuses).push((sha.to_string(), status.clone()));
        Ok(())
    }
}

/// A tracker status kept in memory, counting saves.
#[derive(Default)]
pub struct MemoryStore {
    /// The last saved status.
    pub status: Mutex<Option<PullRequestTrackerStatus>>,
    /// How many saves were made (refused ones not included).
    pub saves: Mutex<usize>,
    /// Answers to the next saves, in order: `true` refuses that save with a 409 Conflict,
    /// as the API server does when someone else wrote the tracker first.
    pub conflicts: Mutex<VecDeque<bool>>,
    /// How many saves were refused with a conflict.
    pub refused: Mutex<usize>,
    /// Crash points; only [`CrashPoint::AfterIntentSave`] concerns the store.
    pub crashes: Arc<Crashes>,
}

#[async_trait]
impl TrackerStore for MemoryStore {
    async fn save(&self, status: &PullRequestTrackerStatus) -> Result<(), StoreError> {
        if lock(&self.conflicts).pop_front() == Some(true) {
            *lock(&self.refused) += 1;
            return Err(StoreError::Conflict);
        }
        *lock(&self.status) = Some(status.clone());
        *lock(&self.saves) += 1;
        if status
            .test_runs
            .iter()
            .any(|r| r.run_id.is_none() && !crate::records::is_final(r.state))
        {
            self.crashes.maybe_crash(CrashPoint::AfterIntentSave).await;
        }
        Ok(())
    }
}

/// Events, remembered.
#[derive(Default)]
pub struct EventLog {
    /// Every published event.
    pub events: Mutex<Vec<DomainEvent>>,
}

impl EventLog {
    /// The reasons of every event, in order.
    pub fn reasons(&self) -> Vec<String> {
        lock(&self.events)
            .iter()
            .map(|e| e.reason.clone())
            .collect()
    }
}

#[async_trait]
impl EventRecorder for EventLog {
    async fn publish(&self, event: DomainEvent) {
        lock(&self.events).push(event);
    }
}

/// GitHub's pull requests, set by the test; counts every read and can fail like the API.
#[derive(Default)]
pub struct FakePullRequests {
    prs: Mutex<BTreeMap<(String, String, u64), PullRequestState>>,
    failure: Mutex<Option<PortError>>,
    gets: Mutex<usize>,
    lists: Mutex<usize>,
}

impl FakePullRequests {
    /// An empty GitHub.
    pub fn new() -> Self {
        Self::default()
    }

    /// Creates or replaces a pull request of `owner/repo`.
    pub fn set(&self, owner: &str, repo: &str, pr: PullRequestState) {
        lock(&self.prs).insert((owner.to_string(), repo.to_string(), pr.number), pr);
    }

    /// Every call fails with `error` until [`FakePullRequests::recover`].
    pub fn fail(&self, error: PortError) {
        *lock(&self.failure) = Some(error);
    }

    /// Calls succeed again.
    pub fn recover(&self) {
        *lock(&self.failure) = None;
    }

    /// How many single pull requests were read.
    pub fn gets(&self) -> usize {
        *lock(&self.gets)
    }

    /// How many lists of open pull requests were read.
    pub fn lists(&self) -> usize {
        *lock(&self.lists)
    }

    fn failing(&self) -> Result<(), PortError> {
        match &*lock(&self.failure) {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl PullRequestReader for FakePullRequests {
    async fn pull_request(
        &self,
        pr: &PullRequestRef,
    ) -> Result<Option<PullRequestState>, PortError> {
        *lock(&self.gets) += 1;
        self.failing()?;
        Ok(lock(&self.prs)
            .get(&(pr.owner.clone(), pr.repo.clone(), pr.number))
            .cloned())
    }

    async fn open_pull_requests(
        &self,
        owner: &str,
        repo: &str,
    ) -> Result<Vec<PullRequestState>, PortError> {
        *lock(&self.lists) += 1;
        self.failing()?;
        Ok(lock(&self.prs)
            .iter()
            .filter(|((o, r, _), pr)| o == owner && r == repo && pr.open)
            .map(|(_, pr)| pr.clone())
            .collect())
    }
}

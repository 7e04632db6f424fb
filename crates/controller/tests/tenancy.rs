//! Two tenants, one controller, on the real control plane: team-a and team-b each
//! own a namespace; the controller is wired from a configuration file that grants
//! connections, jobs and repositories, with the real adapters talking to the
//! stand-ins and real Argo CD Applications. Each test tries one attack from team-b,
//! sees it refused with a condition, and sees team-a's PR promoted in the same run.

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use promotion_api::{Phase, PromotionPolicy, PullRequestTracker, TestState};
use promotion_argocd::application_resource;
use promotion_controller::config::FileConfig;
use promotion_controller::controller::{self, ControllerConfig, Hooks};
use promotion_controller::pr_sync::PullRequestSync;
use promotion_controller::wiring::Wiring;
use promotion_core::engine::EngineConfig;
use promotion_standins::{CiScript, Outcome, StandInConfig, StandIns, Triggered};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA_B: &str = "b0b0b0b1b2b3b4b5b6b7b8b9babbbcbdbebfc0c1";
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
/// Team-a's tracker.
const A_TRACKER: &str = "acme-shop-pr-42";
/// A safety net for waits, never an assertion on speed.
const PATIENCE: Duration = Duration::from_secs(120);
/// What makes a CI run last until the test ends it.
const FOREVER: Duration = Duration::from_secs(3600);

struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// team-a, team-b, the controller's namespace, the stand-ins and one controller.
struct World {
    client: Client,
    a: String,
    b: String,
    /// The label every object of this test carries, so the controller sees only them.
    run: String,
    standins: StandIns,
    script: CiScript,
    file: FileConfig,
    _tasks: Vec<Task>,
    _wiring: Wiring,
}

/// The connection `name` of the stand-ins' own connections file: (url, secret).
fn standin(base: &FileConfig, kind: &str) -> (String, String) {
    let c = base
        .connections
        .iter()
        .find(|c| c.kind.as_str() == kind)
        .expect("a stand-in connection");
    (c.url.clone(), c.secret_ref.name.clone())
}

impl World {
    /// Everything up, team-a's policy in place, and the controller started. `b_forks` is
    /// team-b's repository's `forks` setting.
    async fn start(test: &str, script: CiScript, b_forks: &str) -> Self {
        let ctx = promotion_testenv::context(&format!("{test}-ctl")).await;
        let client = ctx.client.clone();
        let crd = promotion_argocd::testing::application_crd().expect("the Application CRD");
        promotion_testenv::install_crd_objects(&client, vec![crd])
            .await
            .expect("installing the Application CRD");
        let a = promotion_testenv::fresh_namespace(&client, "tenancy-team-a")
            .await
            .expect("team-a");
        let b = promotion_testenv::fresh_namespace(&client, "tenancy-team-b")
            .await
            .expect("team-b");
        let run = ctx.namespace.clone();
        // team-a gets the shared GitLab by a label on its Namespace; team-b has none.
        Api::<Namespace>::all(client.clone())
            .patch(
                &a,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"tenancy.promotion.io/ci": run}}})),
            )
            .await
            .expect("labelling team-a");

        let standins = StandIns::start(StandInConfig {
            script: script.clone(),
            callbacks: None,
        })
        .await
        .expect("stand-ins");
        for (name, data) in standins.secrets() {
            let secret: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name}, "stringData": data,
            }))
            .expect("a Secret");
            Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
                .create(&PostParams::default(), &secret)
                .await
                .expect("creating a Secret");
        }
        let base = FileConfig::parse(&standins.connections_yaml()).expect("stand-in connections");
        let (jenkins, jenkins_secret) = standin(&base, "jenkins");
        let (gitlab, gitlab_secret) = standin(&base, "gitlab");
        let (actions, actions_secret) = standin(&base, "github-actions");
        let (github, github_secret) = standin(&base, "github");
        let yaml = format!(
            r#"
connections:
  - {{name: jenkins-a, kind: jenkins, url: "{jenkins}", default: true, secretRef: {{name: {jenkins_secret}}},
     allowedNamespaces: [{a}], jobs: ["team-a/*"]}}
  - {{name: jenkins-b, kind: jenkins, url: "{jenkins}", secretRef: {{name: {jenkins_secret}}},
     allowedNamespaces: [{b}], jobs: ["team-b/*"]}}
  - {{name: gitlab, kind: gitlab, url: "{gitlab}", default: true, secretRef: {{name: {gitlab_secret}}},
     namespaceSelector: {{matchLabels: {{tenancy.promotion.io/ci: {run}}}}}}}
  - {{name: github-actions, kind: github-actions, url: "{actions}", default: true,
     secretRef: {{name: {actions_secret}}}, settings: {{repository: acme/shop}},
     allowedNamespaces: ["*"], jobs: ["gate-*.yml"]}}
  - {{name: github, kind: github, url: "{github}", default: true, secretRef: {{name: {github_secret}}}}}
repositories:
  - {{owner: acme, name: shop, namespace: {a}, environment: dev, application: {{namespace: {a}, name: shop-dev}}}}
  - {{owner: other, name: tools, namespace: {b}, environment: dev, application: {{namespace: {b}, name: tools-dev}},
     forks: {b_forks}}}
"#
        );
        let file = FileConfig::parse(&yaml).expect("the tenancy configuration");
        let wiring = Wiring::start(client.clone(), &file, &ctx.namespace)
            .await
            .expect("wiring");

        let mut tasks = Vec::new();
        for (ns, name, revision, env) in [
            (&a, "shop-dev", SHA, "dev"),
            (&a, "shop-staging", OLD, "staging"),
            (&b, "tools-dev", SHA, "dev"),
            (&b, "tools-staging", OLD, "staging"),
        ] {
            let app: DynamicObject = serde_json::from_value(promotion_standins::argo::application(
                ns, name, revision, ns, env,
            ))
            .expect("an Application");
            apps(&client, ns)
                .create(&PostParams::default(), &app)
                .await
                .expect("creating an Application");
        }
        for ns in [&a, &b] {
            tasks.push(Task(promotion_standins::argo::spawn_namespaced_syncer(
                client.clone(),
                ns,
                Duration::from_millis(200),
            )));
        }
        let world = Self {
            client: client.clone(),
            a: a.clone(),
            b: b.clone(),
            run: run.clone(),
            standins,
            script,
            file: file.clone(),
            _tasks: tasks,
            _wiring: wiring,
        };
        world
            .create_policy(
                &a,
                "a-dev-to-staging",
                json!([
                    {"name": "smoke", "provider": "jenkins", "job": "team-a/smoke"},
                    {"name": "e2e", "provider": "gitlab", "job": "team-a/e2e", "ref": "main"}
                ]),
                "shop-staging",
            )
            .await;
        let config = ControllerConfig {
            engine: EngineConfig {
                poll_interval: Duration::from_millis(200),
                adoption_grace: Duration::from_millis(500),
                connections: Some(
                    file.connections
                        .iter()
                        .filter(|c| c.kind.provider().is_some())
                        .map(|c| c.name.clone())
                        .collect(),
                ),
                access: Some(Arc::new(file.access_rules())),
                ..EngineConfig::default()
            },
            namespace: None,
            label_selector: Some(format!("tenancy.promotion.io/run={run}")),
            ..ControllerConfig::default()
        };
        let mut world = world;
        world._tasks.push(Task(tokio::spawn(controller::run(
            client,
            world._wiring.ports(),
            config,
            Hooks::default(),
            std::future::pending(),
        ))));
        world
    }

    fn trackers(&self, ns: &str) -> Api<PullRequestTracker> {
        Api::namespaced(self.client.clone(), ns)
    }

    fn policies(&self, ns: &str) -> Api<PromotionPolicy> {
        Api::namespaced(self.client.clone(), ns)
    }

    async fn create_policy(&self, ns: &str, name: &str, tests: Value, target_app: &str) {
        let p: PromotionPolicy = serde_json::from_value(json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
            "metadata": {"name": name, "labels": {"tenancy.promotion.io/run": self.run}},
            "spec": {"sourceEnvironment": "dev", "targetEnvironment": "staging", "externalTests": tests,
                     "promotion": {"application": {"namespace": ns, "name": target_app},
                                   "githubLabel": "promoted-to-staging"}}
        }))
        .expect("a policy");
        self.policies(ns)
            .create(&PostParams::default(), &p)
            .await
            .expect("creating a policy");
    }

    /// A tracker in `ns` for `owner/repo#number` at `sha`, entering at the app `app_ns/app`.
    #[allow(clippy::too_many_arguments)]
    async fn create_tracker(
        &self,
        ns: &str,
        name: &str,
        (owner, repo, number): (&str, &str, i64),
        sha: &str,
        (app_ns, app): (&str, &str),
        labels: Value,
    ) {
        let mut all = json!({"tenancy.promotion.io/run": self.run});
        if let (Some(all), Some(more)) = (all.as_object_mut(), labels.as_object()) {
            all.extend(more.clone());
        }
        let t: PullRequestTracker = serde_json::from_value(json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
            "metadata": {"name": name, "labels": all},
            "spec": {"repository": {"owner": owner, "name": repo}, "number": number, "headSha": sha,
                     "environment": "dev", "application": {"namespace": app_ns, "name": app}}
        }))
        .expect("a tracker");
        self.trackers(ns)
            .create(&PostParams::default(), &t)
            .await
            .expect("creating a tracker");
    }

    /// team-a's PR, as the webhook would make it.
    async fn create_team_a_tracker(&self) {
        self.create_tracker(
            &self.a,
            A_TRACKER,
            ("acme", "shop", 42),
            SHA,
            (&self.a, "shop-dev"),
            json!({}),
        )
        .await;
    }

    async fn wait_for(
        &self,
        ns: &str,
        name: &str,
        what: &str,
        done: impl Fn(&PullRequestTracker) -> bool,
    ) -> PullRequestTracker {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = self.trackers(ns).get(name).await.expect("the tracker");
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "{ns}/{name} never got to {what}; status: {:#?}\ntriggers: {:#?}",
                t.status,
                self.standins.journal.triggers()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until the tracker's Ready condition has `reason`, and returns its message.
    async fn wait_refused(&self, ns: &str, name: &str, reason: &str) -> String {
        let t = self
            .wait_for(ns, name, reason, |t| {
                ready(t).is_some_and(|c| c.1 == reason)
            })
            .await;
        let (status, _, message) = ready(&t).expect("Ready");
        assert_eq!(status, "False", "{message}");
        message
    }

    /// Waits until team-a's PR is promoted to staging and done, and checks it was.
    async fn team_a_promoted(&self) {
        let t = self
            .wait_for(&self.a, A_TRACKER, "Completed", |t| {
                phase(t) == Some(Phase::Completed)
            })
            .await;
        let st = t.status.expect("status");
        assert_eq!(st.promotions.len(), 1, "{:#?}", st.promotions);
        assert_eq!(st.promotions[0].target, "staging");
        assert_eq!(self.target_revision(&self.a, "shop-staging").await, SHA);
    }

    async fn wait_policy_valid(&self, ns: &str, name: &str) -> (String, String, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let p = self.policies(ns).get(name).await.expect("the policy");
            let valid = p
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .find(|c| c.type_ == "Valid")
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()));
            if let Some(v) = valid {
                return v;
            }
            assert!(Instant::now() < deadline, "policy {name} never judged");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn target_revision(&self, ns: &str, app: &str) -> String {
        let app = apps(&self.client, ns)
            .get(app)
            .await
            .expect("the Application");
        app.data["spec"]["source"]["targetRevision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    fn triggers_of(&self, job: &str) -> Vec<Triggered> {
        self.standins
            .journal
            .triggers()
            .into_iter()
            .filter(|t| t.job == job)
            .collect()
    }
}

fn apps(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &application_resource())
}

fn phase(t: &PullRequestTracker) -> Option<Phase> {
    t.status.as_ref().and_then(|s| s.phase)
}

/// (status, reason, message) of the Ready condition.
fn ready(t: &PullRequestTracker) -> Option<(String, String, String)> {
    t.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// team-b's own repository and Application: only the named attack is wrong.
const B_TRACKER: &str = "other-tools-pr-7";

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_trigger_a_job_of_a_connection_not_granted_to_it() {
    let w = World::start(
        "tenancy-connection",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-a", "job": "team-a/smoke"}]),
        "tools-staging",
    )
    .await;
    let (status, reason, message) = w.wait_policy_valid(&w.b, "b-dev-to-staging").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ConnectionNotAllowed"),
        "{message}"
    );
    assert!(message.contains("jenkins-a"), "{message}");
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.b, "tools-dev"),
        json!({}),
    )
    .await;
    w.create_team_a_tracker().await;
    w.wait_refused(&w.b, B_TRACKER, "ConnectionNotAllowed")
        .await;
    w.team_a_promoted().await;
    assert_eq!(
        w.triggers_of("team-a/smoke").len(),
        1,
        "only team-a's own run"
    );
    assert_eq!(w.target_revision(&w.b, "tools-staging").await, OLD);
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_run_a_job_outside_its_connections_job_patterns() {
    let w = World::start(
        "tenancy-job",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-b", "job": "team-a/smoke"}]),
        "tools-staging",
    )
    .await;
    let (status, reason, message) = w.wait_policy_valid(&w.b, "b-dev-to-staging").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "JobNotAllowed"),
        "{message}"
    );
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.b, "tools-dev"),
        json!({}),
    )
    .await;
    w.create_team_a_tracker().await;
    w.wait_refused(&w.b, B_TRACKER, "JobNotAllowed").await;
    w.team_a_promoted().await;
    assert_eq!(
        w.triggers_of("team-a/smoke").len(),
        1,
        "only team-a's own run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_use_a_connection_granted_by_namespace_labels_it_lacks() {
    let w = World::start(
        "tenancy-selector",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    // The default GitLab connection admits namespaces by label: team-a has it, team-b not.
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "e2e", "provider": "gitlab", "job": "team-b/e2e", "ref": "main"}]),
        "tools-staging",
    )
    .await;
    let (status, reason, message) = w.wait_policy_valid(&w.b, "b-dev-to-staging").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "ConnectionNotAllowed"),
        "{message}"
    );
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.b, "tools-dev"),
        json!({}),
    )
    .await;
    w.create_team_a_tracker().await;
    w.wait_refused(&w.b, B_TRACKER, "ConnectionNotAllowed")
        .await;
    w.team_a_promoted().await;
    assert!(w.triggers_of("team-b/e2e").is_empty());
    assert_eq!(
        w.triggers_of("team-a/e2e").len(),
        1,
        "team-a's label admits it"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_post_statuses_or_labels_on_a_repository_not_mapped_to_it() {
    let w = World::start(
        "tenancy-repository",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    // A valid gate of team-b's own, on a tracker that claims team-a's repository.
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-b", "job": "team-b/smoke"}]),
        "tools-staging",
    )
    .await;
    let (status, _, message) = w.wait_policy_valid(&w.b, "b-dev-to-staging").await;
    assert_eq!(status, "True", "{message}");
    w.create_tracker(
        &w.b,
        "acme-shop-pr-43",
        ("acme", "shop", 43),
        SHA_B,
        (&w.b, "tools-dev"),
        json!({}),
    )
    .await;
    w.create_team_a_tracker().await;
    let message = w
        .wait_refused(&w.b, "acme-shop-pr-43", "RepositoryNotAllowed")
        .await;
    assert!(message.contains("acme/shop"), "{message}");
    w.team_a_promoted().await;
    assert!(
        w.triggers_of("team-b/smoke").is_empty(),
        "nothing triggered"
    );
    assert!(
        w.standins.journal.statuses(SHA_B).is_empty(),
        "no commit status"
    );
    assert!(
        w.standins
            .journal
            .label_requests("acme", "shop", 43)
            .is_empty(),
        "no label"
    );
    assert_eq!(
        w.target_revision(&w.b, "tools-staging").await,
        OLD,
        "no Application patched"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_read_an_application_that_has_not_opted_in_to_it() {
    let w = World::start(
        "tenancy-app-read",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-b", "job": "team-b/smoke"}]),
        "tools-staging",
    )
    .await;
    // team-b's own repository, entering at team-a's Application (opted in to team-a only).
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.a, "shop-dev"),
        json!({}),
    )
    .await;
    w.create_team_a_tracker().await;
    let message = w
        .wait_refused(&w.b, B_TRACKER, "ApplicationNotOptedIn")
        .await;
    assert!(message.contains("shop-dev"), "{message}");
    w.team_a_promoted().await;
    let t = w.trackers(&w.b).get(B_TRACKER).await.expect("tracker");
    assert_eq!(
        phase(&t),
        Some(Phase::Deploying),
        "it never learnt the app is synced"
    );
    let synced = t
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == "Synced")
        .expect("Synced");
    assert_eq!(
        (synced.status.as_str(), synced.reason.as_str()),
        ("Unknown", "ApplicationNotOptedIn")
    );
    assert!(w.triggers_of("team-b/smoke").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_make_the_controller_poll_or_cancel_another_teams_run() {
    let script = CiScript::new(Duration::from_millis(300));
    // team-a's smoke runs until the test ends it, so it is running during the attack.
    script.set("team-a/smoke", Outcome::Pass, FOREVER);
    script.set("team-b/smoke", Outcome::Pass, FOREVER);
    let w = World::start("tenancy-run-id", script, "ignore").await;
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-b", "job": "team-b/smoke"}]),
        "tools-staging",
    )
    .await;
    w.create_team_a_tracker().await;
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.b, "tools-dev"),
        json!({}),
    )
    .await;
    let started = |t: &PullRequestTracker| {
        t.status.as_ref().is_some_and(|s| {
            s.test_runs
                .iter()
                .any(|r| r.name == "smoke" && r.run_id.is_some())
        })
    };
    let a = w.wait_for(&w.a, A_TRACKER, "smoke started", started).await;
    let a_smoke = a
        .status
        .expect("status")
        .test_runs
        .into_iter()
        .find(|r| r.name == "smoke")
        .expect("smoke");
    let b = w.wait_for(&w.b, B_TRACKER, "smoke started", started).await;

    // Anyone who may write team-b's tracker status names team-a's run in it.
    let mut status = b.status.expect("status");
    for r in &mut status.test_runs {
        if r.name == "smoke" {
            r.run_id = a_smoke.run_id.clone();
            r.job = a_smoke.job.clone();
            r.connection = a_smoke.connection.clone();
        }
    }
    w.trackers(&w.b)
        .patch_status(
            B_TRACKER,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"testRuns": status.test_runs}})),
        )
        .await
        .expect("the forged status");
    let t = w
        .wait_for(&w.b, B_TRACKER, "the forged run refused", |t| {
            t.status.as_ref().is_some_and(|s| {
                s.test_runs.iter().any(|r| {
                    r.name == "smoke"
                        && r.state == TestState::Failed
                        && r.message
                            .as_deref()
                            .is_some_and(|m| m.contains("does not carry correlation id"))
                })
            })
        })
        .await;
    let phase_b = phase(&t);
    assert_eq!(phase_b, Some(Phase::Failed), "{:#?}", t.status);

    // team-a's run was neither cancelled nor finished by team-b's tracker.
    let a_run = w
        .triggers_of("team-a/smoke")
        .into_iter()
        .next()
        .expect("team-a's run");
    assert!(
        !w.standins
            .journal
            .finished()
            .iter()
            .any(|f| f.job == "team-a/smoke"),
        "team-a's run is still running: {:#?}",
        w.standins.journal.finished()
    );
    w.standins.finish(&a_run, Outcome::Pass).await;
    w.team_a_promoted().await;
    let finished: Vec<_> = w
        .standins
        .journal
        .finished()
        .into_iter()
        .filter(|f| f.job == "team-a/smoke")
        .collect();
    assert_eq!(finished.len(), 1);
    assert!(
        finished[0].passed && !finished[0].cancelled,
        "{finished:#?}"
    );
    assert_eq!(w.target_revision(&w.b, "tools-staging").await, OLD);
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_fork_pull_request_is_not_promoted_until_a_person_approves() {
    let w = World::start(
        "tenancy-fork-gate",
        CiScript::new(Duration::from_millis(300)),
        "gate",
    )
    .await;
    w.create_policy(
        &w.b,
        "b-dev-to-staging",
        json!([{"name": "smoke", "provider": "jenkins", "connection": "jenkins-b", "job": "team-b/smoke"}]),
        "tools-staging",
    )
    .await;
    // A fork's PR of a repository with `forks: gate`, labelled as the webhook labels it.
    w.create_tracker(
        &w.b,
        B_TRACKER,
        ("other", "tools", 7),
        SHA,
        (&w.b, "tools-dev"),
        json!({"promotion.io/fork": "gate"}),
    )
    .await;
    w.create_team_a_tracker().await;
    let t = w
        .wait_for(&w.b, B_TRACKER, "AwaitingApproval", |t| {
            phase(t) == Some(Phase::AwaitingApproval)
        })
        .await;
    let msg = t.status.and_then(|s| s.message).unwrap_or_default();
    assert!(msg.contains("fork"), "{msg}");
    w.team_a_promoted().await;
    assert_eq!(
        w.target_revision(&w.b, "tools-staging").await,
        OLD,
        "nothing deployed"
    );

    w.trackers(&w.b)
        .patch(
            B_TRACKER,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {
                "promotion.io/approve": format!("staging@{SHA}"),
                "promotion.io/approved-by": "alice"
            }}})),
        )
        .await
        .expect("approving");
    w.wait_for(&w.b, B_TRACKER, "Completed", |t| {
        phase(t) == Some(Phase::Completed)
    })
    .await;
    assert_eq!(
        w.target_revision(&w.b, "tools-staging").await,
        SHA,
        "approved, then promoted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_repository_of_the_same_name_never_takes_over_team_a_tracker() {
    let w = World::start(
        "tenancy-names",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    // Both `acme/shop` and `other/shop` enter one namespace: the names must still differ.
    let mut repos = w.file.repositories.clone();
    let mut other = repos[0].clone();
    other.owner = "other".into();
    repos.push(other.clone());
    let sync = PullRequestSync::new(
        w.client.clone(),
        w._wiring.pull_request_reader(),
        repos.clone(),
    );
    // A tracker of the old name (`<repo>-pr-<n>`) for acme/shop#7, made before names held the owner.
    w.create_tracker(
        &w.a,
        "shop-pr-7",
        ("acme", "shop", 7),
        OLD,
        (&w.a, "shop-dev"),
        json!({}),
    )
    .await;
    w.standins.pull_requests.open("acme/shop", 7, SHA);
    w.standins.pull_requests.open("other/shop", 7, SHA_B);
    sync.sync(&other, 7).await.expect("other/shop#7");
    sync.sync(&repos[0], 7).await.expect("acme/shop#7");
    let old = w
        .trackers(&w.a)
        .get("shop-pr-7")
        .await
        .expect("the old tracker");
    assert_eq!(
        (
            old.spec.repository.owner.as_str(),
            old.spec.head_sha.as_str()
        ),
        ("acme", SHA),
        "the old name goes on for its own PR, and only for it"
    );
    let theirs = w
        .trackers(&w.a)
        .get("other-shop-pr-7")
        .await
        .expect("other's tracker");
    assert_eq!(
        (
            theirs.spec.repository.owner.as_str(),
            theirs.spec.head_sha.as_str()
        ),
        ("other", SHA_B)
    );
    assert!(
        w.trackers(&w.a)
            .get_opt("acme-shop-pr-7")
            .await
            .expect("read")
            .is_none(),
        "no second tracker for acme/shop#7"
    );
    w.create_team_a_tracker().await;
    w.team_a_promoted().await;
    let _ = &w.b;
    let _ = &w.script;
}

/// A team-b `pull_request` delivery for `other/tools#7`, signed with `key`, through `router`.
async fn deliver_b_pr(
    router: &axum::Router,
    key: &[u8],
    id: &str,
) -> (axum::http::StatusCode, String) {
    use axum::body::Body;
    use hmac::{Hmac, Mac};
    use http_body_util::BodyExt;
    use tower::ServiceExt;
    let repo =
        json!({"id": 70, "name": "tools", "full_name": "other/tools", "owner": {"login": "other"}});
    let body = serde_json::to_vec(&json!({
        "action": "opened", "number": 7,
        "pull_request": {"number": 7, "state": "open", "updated_at": "2026-11-25T10:00:00Z",
            "head": {"ref": "feature", "sha": SHA, "repo": repo},
            "base": {"ref": "main", "sha": OLD, "repo": repo}},
        "repository": repo,
        "sender": {"login": "team-b-member", "id": 2, "type": "User"}
    }))
    .expect("json");
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).expect("key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let req = axum::http::Request::post("/webhooks/github")
        .header("content-type", "application/json")
        .header("x-github-event", "pull_request")
        .header("x-github-delivery", id)
        .header("x-hub-signature-256", signature)
        .body(Body::from(body))
        .expect("request");
    let resp = router.clone().oneshot(req).await.expect("answer");
    let status = resp.status();
    let bytes = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn team_b_cannot_get_in_through_a_short_webhook_secret_or_a_replayed_delivery() {
    use promotion_controller::webhook::{WebhookSecrets, Webhooks};
    let w = World::start(
        "tenancy-webhooks",
        CiScript::new(Duration::from_millis(300)),
        "ignore",
    )
    .await;
    w.standins.pull_requests.open("other/tools", 7, SHA);
    let sync = Arc::new(PullRequestSync::new(
        w.client.clone(),
        w._wiring.pull_request_reader(),
        w.file.repositories.clone(),
    ));
    let router_with = |key: &'static [u8]| {
        let (wake, _) = futures::channel::mpsc::unbounded();
        Webhooks::new(
            move || WebhookSecrets {
                github: Some(key.to_vec()),
                gitlab: None,
                jenkins: None,
            },
            wake,
        )
        .with_pull_requests(sync.clone())
        .router()
    };
    w.create_team_a_tracker().await;

    // 4: a secret anyone could guess opens no door, even with a valid signature.
    const SHORT: &[u8] = b"tools";
    let (code, text) = deliver_b_pr(&router_with(SHORT), SHORT, "b-delivery-1").await;
    assert_eq!(code, 503, "{text}");
    assert!(
        w.trackers(&w.b)
            .get_opt(B_TRACKER)
            .await
            .expect("read")
            .is_none(),
        "a tracker was created through a short secret"
    );

    // 9: a signed delivery, replayed after its tracker was deleted, recreates nothing.
    const GOOD: &[u8] = b"a-long-random-webhook-secret-of-32b";
    let router = router_with(GOOD);
    let (code, text) = deliver_b_pr(&router, GOOD, "b-delivery-2").await;
    assert_eq!(code, 202, "{text}");
    w.trackers(&w.b)
        .delete(B_TRACKER, &Default::default())
        .await
        .expect("deleting team-b's tracker");
    let deadline = Instant::now() + PATIENCE;
    while w
        .trackers(&w.b)
        .get_opt(B_TRACKER)
        .await
        .expect("read")
        .is_some()
    {
        assert!(Instant::now() < deadline, "the tracker was never deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in ["b-delivery-2", "b-delivery-made-up"] {
        let (code, text) = deliver_b_pr(&router, GOOD, id).await;
        assert_eq!(code, 200, "{text}");
        assert_eq!(text, "duplicate delivery, ignored");
    }
    assert!(
        w.trackers(&w.b)
            .get_opt(B_TRACKER)
            .await
            .expect("read")
            .is_none(),
        "the replay recreated team-b's tracker"
    );
    w.team_a_promoted().await;
}

//! End to end on the real control plane: the wiring builds the real Jenkins,
//! GitHub Actions, GitLab and GitHub adapters from a connections file and
//! Secrets, and they talk HTTP to the in-process stand-ins; an Argo CD stand-in
//! syncs real Application objects; CI completion reaches the controller through
//! its real webhook receiver (or, where said, by polling alone).

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use promotion_api::{Phase, PromotionPolicy, PullRequestTracker, TestState};
use promotion_argocd::application_resource;
use promotion_controller::config::{FileConfig, SecretName};
use promotion_controller::controller::{self, ControllerConfig, Hooks};
use promotion_controller::webhook::Webhooks;
use promotion_controller::wiring::Wiring;
use promotion_core::engine::EngineConfig;
use promotion_standins::{Callbacks, CiScript, Outcome, StandInConfig, StandIns, Triggered};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const OLD: &str = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const TRACKER: &str = "shop-pr-42";
const WEBHOOK_SECRET: &str = "promotion-webhooks";
/// How long each scripted CI run takes, unless a test says otherwise.
const RUN_TIME: Duration = Duration::from_millis(300);
/// A safety net for waits, never an assertion on speed: the machine may be loaded.
const PATIENCE: Duration = Duration::from_secs(120);

/// How CI completion reaches the controller.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Delivery {
    /// The stand-ins call the webhook receiver; the poll is a slow safety net.
    Callbacks,
    /// No callbacks: the controller polls often.
    Polling,
    /// Callbacks, and the Applications are watched; a poll would come only after the test.
    Watched,
}

/// Aborts a background task when the test ends.
struct Task(tokio::task::JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A control-plane namespace with Applications, the stand-ins, and a controller
/// wired from the stand-ins' connections file and Secrets.
struct World {
    client: Client,
    /// Policies, trackers and Applications.
    ns: String,
    /// The controller's own namespace: its Secrets.
    controller_ns: String,
    standins: StandIns,
    script: CiScript,
    _tasks: Vec<Task>,
    _wiring: Wiring,
}

impl World {
    /// Sets everything up and starts the controller once the policies (given the
    /// namespace) exist, so its first reconcile already knows them. `secrets` may
    /// spoil the Secrets first.
    async fn start(
        test: &str,
        delivery: Delivery,
        script: CiScript,
        policies: impl FnOnce(&str) -> Vec<Value>,
        secrets: impl FnOnce(&mut Vec<(String, BTreeMap<String, String>)>),
    ) -> Self {
        let ctx = promotion_testenv::context(test).await;
        let client = ctx.client.clone();
        let crd = promotion_argocd::testing::application_crd().expect("the Application CRD");
        promotion_testenv::install_crd_objects(&client, vec![crd])
            .await
            .expect("installing the Application CRD");
        let controller_ns = promotion_testenv::fresh_namespace(&client, &format!("{test}-ctl"))
            .await
            .expect("the controller's namespace");

        // The receiver's address must be known before the stand-ins start.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("binding the webhook receiver");
        let webhook_base = format!("http://{}", listener.local_addr().expect("address"));
        let hooks = Callbacks {
            webhook_base,
            github_secret: "e2e-github-webhook-secret".into(),
            gitlab_token: "e2e-gitlab-webhook-token".into(),
            jenkins_token: "e2e-jenkins-webhook-token".into(),
        };
        let standins = StandIns::start(StandInConfig {
            script: script.clone(),
            callbacks: (delivery != Delivery::Polling).then(|| hooks.clone()),
        })
        .await
        .expect("stand-ins");

        let mut all = standins.secrets();
        secrets(&mut all);
        all.push((
            WEBHOOK_SECRET.into(),
            BTreeMap::from([
                ("github".to_string(), hooks.github_secret.clone()),
                ("gitlab".to_string(), hooks.gitlab_token.clone()),
                ("jenkins".to_string(), hooks.jenkins_token.clone()),
            ]),
        ));
        for (name, data) in all {
            let secret: Secret = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name}, "stringData": data,
            }))
            .expect("a Secret");
            Api::<Secret>::namespaced(client.clone(), &controller_ns)
                .create(&PostParams::default(), &secret)
                .await
                .expect("creating a Secret");
        }

        let mut file = FileConfig::parse(&standins.connections_yaml()).expect("connections file");
        file.webhook_secret_ref = Some(SecretName {
            name: WEBHOOK_SECRET.into(),
        });
        let wiring = Wiring::start(client.clone(), &file, &controller_ns)
            .await
            .expect("wiring");

        let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
        let webhook_secrets = wiring.webhook_secrets();
        let receiver = Webhooks::new(move || webhook_secrets.get(), wake_tx).router();
        let mut tasks = vec![Task(tokio::spawn(async move {
            let _ = axum::serve(listener, receiver).await;
        }))];

        let ns = ctx.namespace.clone();
        for (name, revision, env) in [
            ("shop-dev", SHA, "dev"),
            ("shop-staging", OLD, "staging"),
            ("shop-prod", OLD, "prod"),
        ] {
            let mut app = promotion_standins::argo::application(&ns, name, revision, &ns, env);
            app["metadata"]["labels"]["promotion.io/watch"] = json!("true");
            let app: DynamicObject = serde_json::from_value(app).expect("an Application");
            apps(&client, &ns)
                .create(&PostParams::default(), &app)
                .await
                .expect("creating an Application");
        }
        tasks.push(Task(promotion_standins::argo::spawn_namespaced_syncer(
            client.clone(),
            &ns,
            Duration::from_millis(200),
        )));

        let policy_api: Api<PromotionPolicy> = Api::namespaced(client.clone(), &ns);
        let mut names = Vec::new();
        for p in policies(&ns) {
            let p: PromotionPolicy = serde_json::from_value(p).expect("a policy");
            names.push(p.metadata.name.clone().unwrap_or_default());
            policy_api
                .create(&PostParams::default(), &p)
                .await
                .expect("creating a policy");
        }

        let poll_interval = match delivery {
            // Longer than a CI run, so a run is usually seen finished through its callback.
            Delivery::Callbacks => Duration::from_secs(1),
            Delivery::Polling => Duration::from_millis(200),
            Delivery::Watched => Duration::from_secs(600),
        };
        let config = ControllerConfig {
            engine: EngineConfig {
                poll_interval,
                adoption_grace: Duration::from_millis(500),
                ..EngineConfig::default()
            },
            namespace: Some(ns.clone()),
            watch_applications: delivery == Delivery::Watched,
            applications_namespaces: vec![ns.clone()],
            ..ControllerConfig::default()
        };
        let hooks = Hooks {
            wake: Some(wake_rx),
            ..Hooks::default()
        };
        tasks.push(Task(tokio::spawn(controller::run(
            client.clone(),
            wiring.ports(),
            config,
            hooks,
            std::future::pending(),
        ))));
        let world = Self {
            client,
            ns,
            controller_ns,
            standins,
            script,
            _tasks: tasks,
            _wiring: wiring,
        };
        for name in names {
            world.wait_for_policy_ready(&name).await;
        }
        world
    }

    fn trackers(&self) -> Api<PullRequestTracker> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    async fn create_tracker(&self) {
        self.create_tracker_for(TRACKER, 42, SHA, "shop-dev").await;
    }

    async fn create_tracker_for(&self, name: &str, number: i64, sha: &str, app: &str) {
        let t: PullRequestTracker = serde_json::from_value(json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
            "metadata": {"name": name},
            "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": number, "headSha": sha,
                     "environment": "dev", "application": {"namespace": self.ns, "name": app}}
        }))
        .expect("a tracker");
        self.trackers()
            .create(&PostParams::default(), &t)
            .await
            .expect("creating the tracker");
    }

    /// A watched, opted-in Application synced at `revision`.
    async fn create_app(&self, name: &str, revision: &str, env: &str) {
        let mut app =
            promotion_standins::argo::application(&self.ns, name, revision, &self.ns, env);
        app["metadata"]["labels"]["promotion.io/watch"] = json!("true");
        let app: DynamicObject = serde_json::from_value(app).expect("an Application");
        apps(&self.client, &self.ns)
            .create(&PostParams::default(), &app)
            .await
            .expect("creating an Application");
    }

    async fn wait_for(
        &self,
        what: &str,
        done: impl Fn(&PullRequestTracker) -> bool,
    ) -> PullRequestTracker {
        self.wait_for_named(TRACKER, what, done).await
    }

    async fn wait_for_named(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&PullRequestTracker) -> bool,
    ) -> PullRequestTracker {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let t = self.trackers().get(name).await.expect("the tracker");
            if done(&t) {
                return t;
            }
            assert!(
                Instant::now() < deadline,
                "the tracker never got to {what}; status: {:#?}\njournal: {:#?}",
                t.status,
                self.standins.journal.triggers()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn wait_for_policy_ready(&self, name: &str) {
        let api: Api<PromotionPolicy> = Api::namespaced(self.client.clone(), &self.ns);
        let deadline = Instant::now() + PATIENCE;
        loop {
            let p = api.get(name).await.expect("the policy");
            let ready = p
                .status
                .iter()
                .flat_map(|s| &s.conditions)
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "policy {name} never Ready: {:#?}",
                p.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn target_revision(&self, app: &str) -> String {
        let app = apps(&self.client, &self.ns)
            .get(app)
            .await
            .expect("the Application");
        app.data["spec"]["source"]["targetRevision"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// The only run the stand-ins started for `job`.
    fn only_trigger(&self, job: &str) -> Triggered {
        let runs: Vec<Triggered> = self
            .standins
            .journal
            .triggers()
            .into_iter()
            .filter(|t| t.job == job)
            .collect();
        assert_eq!(
            runs.len(),
            1,
            "{job} was triggered {} times: {runs:#?}",
            runs.len()
        );
        runs.into_iter().next().expect("one run")
    }
}

fn apps(client: &Client, ns: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &application_resource())
}

fn policy(name: &str, source: &str, target: &str, ns: &str, tests: Value) -> Value {
    json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
        "metadata": {"name": name},
        "spec": {"sourceEnvironment": source, "targetEnvironment": target, "externalTests": tests,
                 "promotion": {"application": {"namespace": ns, "name": format!("shop-{target}")},
                               "githubLabel": format!("promoted-to-{target}")}}
    })
}

fn smoke() -> Value {
    json!({"name": "smoke", "provider": "jenkins", "job": "team-a/smoke",
           "parameters": {"PR": "${PR_NUMBER}", "SHA": "${HEAD_SHA}"}})
}

fn contract() -> Value {
    json!({"name": "api-contract", "provider": "github-actions", "job": "contract.yml",
           "ref": "main", "parameters": {"sha": "${HEAD_SHA}"}})
}

fn e2e() -> Value {
    json!({"name": "e2e", "provider": "gitlab", "job": "team-a/e2e", "ref": "main",
           "parameters": {"TARGET": "${SOURCE_ENVIRONMENT}"}})
}

fn phase(t: &PullRequestTracker) -> Option<Phase> {
    t.status.as_ref().and_then(|s| s.phase)
}

fn environment(t: &PullRequestTracker) -> Option<&str> {
    t.status
        .as_ref()
        .and_then(|s| s.current_environment.as_deref())
}

/// Where the tracker's status says `text`: its message, a condition, or a test run.
fn places_saying(t: &PullRequestTracker, text: &str) -> Vec<String> {
    let Some(s) = &t.status else {
        return Vec::new();
    };
    let mut places = Vec::new();
    if s.message.as_deref().is_some_and(|m| m.contains(text)) {
        places.push("status.message".to_string());
    }
    for c in &s.conditions {
        if c.message.contains(text) {
            places.push(format!("condition {}", c.type_));
        }
    }
    for r in &s.test_runs {
        if r.message.as_deref().is_some_and(|m| m.contains(text)) {
            places.push(format!("testRuns[{}].message", r.name));
        }
    }
    places
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pull_request_goes_from_dev_to_prod_through_real_adapters() {
    let world = World::start(
        "e2e-journey",
        Delivery::Callbacks,
        CiScript::new(RUN_TIME),
        |ns| {
            vec![
                policy(
                    "dev-to-staging",
                    "dev",
                    "staging",
                    ns,
                    json!([smoke(), contract()]),
                ),
                policy("staging-to-prod", "staging", "prod", ns, json!([e2e()])),
            ]
        },
        |_| {},
    )
    .await;
    world.create_tracker().await;

    let t = world
        .wait_for("Completed in prod", |t| {
            phase(t) == Some(Phase::Completed) && environment(t) == Some("prod")
        })
        .await;
    let status = t.status.expect("status");
    let journal = &world.standins.journal;

    // Each job ran exactly once, carrying the correlation id the tracker recorded.
    let smoke = world.only_trigger("team-a/smoke");
    let contract = world.only_trigger("contract.yml");
    let e2e = world.only_trigger("team-a/e2e");
    assert_eq!(journal.triggers().len(), 3, "{:#?}", journal.triggers());
    assert_eq!(
        [smoke.provider, contract.provider, e2e.provider],
        ["jenkins", "github-actions", "gitlab"]
    );

    // The audit trail names the runs, as the CI systems name them.
    let hops: Vec<(&str, &str, &str)> = status
        .promotions
        .iter()
        .map(|p| (p.source.as_str(), p.target.as_str(), p.policy.as_str()))
        .collect();
    assert_eq!(
        hops,
        [
            ("dev", "staging", "dev-to-staging"),
            ("staging", "prod", "staging-to-prod")
        ]
    );
    let gates = [
        ("dev", vec![("smoke", &smoke), ("api-contract", &contract)]),
        ("staging", vec![("e2e", &e2e)]),
    ];
    for (record, (env, runs)) in status.promotions.iter().zip(&gates) {
        assert_eq!(record.revision, SHA);
        assert_eq!(
            record.test_runs.len(),
            runs.len(),
            "{:#?}",
            record.test_runs
        );
        for (name, triggered) in runs {
            let run = record
                .test_runs
                .iter()
                .find(|r| r.name == *name)
                .unwrap_or_else(|| panic!("{name} is in the record of {env}"));
            assert_eq!(run.state, TestState::Passed, "{run:#?}");
            assert!(triggered.correlation_id.is_some(), "{triggered:#?}");
            assert_eq!(run.correlation_id, triggered.correlation_id, "{name}");
            assert_eq!(
                run.run_id.as_deref(),
                Some(triggered.run_id.as_str()),
                "{name}"
            );
            assert_eq!(run.url.as_deref(), Some(triggered.url.as_str()), "{name}");

            // The PR page shows the gate test, linked to the run, ending in success.
            let context = format!("promotion/{env}/{name}");
            let posted: Vec<_> = journal
                .statuses(SHA)
                .into_iter()
                .filter(|s| s.context == context)
                .collect();
            let last = posted
                .last()
                .unwrap_or_else(|| panic!("no commit status {context}"));
            assert_eq!(last.state, "success", "{posted:#?}");
            assert_eq!(last.target_url.as_deref(), Some(triggered.url.as_str()));
        }
    }

    let labels = journal.labels("acme", "shop", 42);
    for label in ["promoted-to-staging", "promoted-to-prod"] {
        assert!(labels.iter().any(|l| l == label), "{labels:?}");
    }
    assert_eq!(world.target_revision("shop-staging").await, SHA);
    assert_eq!(world.target_revision("shop-prod").await, SHA);

    // Every run was announced to the webhook receiver, which accepted it.
    let finished = journal.finished();
    assert_eq!(finished.len(), 3, "{finished:#?}");
    assert!(finished.iter().all(|f| f.passed));
    let callbacks = journal.callbacks();
    assert_eq!(callbacks.len(), 3, "{callbacks:#?}");
    assert!(
        callbacks.iter().all(|c| c.status == Some(202)),
        "{callbacks:#?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_application_sync_wakes_the_tracker_without_a_poll() {
    // The poll interval (10 minutes) is far beyond the test's patience: only the
    // callbacks and the Applications' watch can carry the PR to prod.
    let world = World::start(
        "e2e-app-watch",
        Delivery::Watched,
        CiScript::new(RUN_TIME),
        |ns| {
            vec![
                policy("dev-to-staging", "dev", "staging", ns, json!([smoke()])),
                policy("staging-to-prod", "staging", "prod", ns, json!([e2e()])),
            ]
        },
        |_| {},
    )
    .await;
    world.create_tracker().await;
    world
        .wait_for("Completed in prod", |t| {
            phase(t) == Some(Phase::Completed) && environment(t) == Some("prod")
        })
        .await;
    assert_eq!(world.target_revision("shop-prod").await, SHA);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_released_environment_wakes_the_pr_queued_for_it() {
    const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
    let script = CiScript::new(RUN_TIME);
    // The first PR's staging gate runs long enough for the second to queue behind it.
    script.set("team-a/e2e", Outcome::Pass, Duration::from_secs(5));
    let world = World::start(
        "e2e-queue-wake",
        Delivery::Watched,
        script,
        |ns| {
            vec![
                policy("dev-to-staging", "dev", "staging", ns, json!([smoke()])),
                policy("staging-to-prod", "staging", "prod", ns, json!([e2e()])),
            ]
        },
        |_| {},
    )
    .await;
    world.create_app("shop-dev-43", SHA2, "dev").await;
    world.create_tracker().await;
    world
        .wait_for("testing in staging", |t| environment(t) == Some("staging"))
        .await;
    world
        .create_tracker_for("shop-pr-43", 43, SHA2, "shop-dev-43")
        .await;
    world
        .wait_for_named("shop-pr-43", "Queued behind the first PR", |t| {
            phase(t) == Some(Phase::Queued)
        })
        .await;
    // With polls 10 minutes apart, only the release seen on the watched
    // Application can hand staging to the PR waiting for it.
    world
        .wait_for_named("shop-pr-43", "Completed in prod", |t| {
            phase(t) == Some(Phase::Completed) && environment(t) == Some("prod")
        })
        .await;
    assert_eq!(world.target_revision("shop-prod").await, SHA2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_without_its_key_is_named_and_fixing_it_needs_no_restart() {
    let world = World::start(
        "e2e-secret",
        Delivery::Polling,
        CiScript::new(RUN_TIME),
        |ns| {
            vec![policy(
                "dev-to-staging",
                "dev",
                "staging",
                ns,
                json!([smoke()]),
            )]
        },
        |secrets| {
            for (name, data) in secrets.iter_mut() {
                if name == promotion_standins::JENKINS_SECRET {
                    data.remove("token");
                }
            }
        },
    )
    .await;
    world.create_tracker().await;

    let problem = format!(
        "connection jenkins: secret {}/{} has no key 'token'",
        world.controller_ns,
        promotion_standins::JENKINS_SECRET
    );
    let t = world
        .wait_for("the Ready condition naming the missing key", |t| {
            places_saying(t, &problem).contains(&"condition Ready".to_string())
        })
        .await;
    assert_eq!(phase(&t), Some(Phase::Testing), "{:#?}", t.status);
    let ready = t
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .expect("a Ready condition");
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_str()),
        ("False", "CIUnavailable")
    );
    // A few more polls: the controller keeps trying, and nothing reaches Jenkins.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        world.standins.journal.triggers().is_empty(),
        "{:#?}",
        world.standins.journal.triggers()
    );
    let t = world.trackers().get(TRACKER).await.expect("the tracker");
    assert_eq!(phase(&t), Some(Phase::Testing), "{:#?}", t.status);

    // The Secret is fixed in place; the running controller picks it up.
    let token = world
        .standins
        .secrets()
        .into_iter()
        .find(|(n, _)| n == promotion_standins::JENKINS_SECRET)
        .and_then(|(_, d)| d.get("token").cloned())
        .expect("the stand-in's token");
    Api::<Secret>::namespaced(world.client.clone(), &world.controller_ns)
        .patch(
            promotion_standins::JENKINS_SECRET,
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"token": token}})),
        )
        .await
        .expect("fixing the Secret");

    let t = world
        .wait_for("Completed in staging", |t| {
            phase(t) == Some(Phase::Completed) && environment(t) == Some("staging")
        })
        .await;
    let smoke = world.only_trigger("team-a/smoke");
    let record = &t.status.expect("status").promotions[0];
    assert_eq!(
        record.test_runs[0].run_id.as_deref(),
        Some(smoke.run_id.as_str())
    );
    assert_eq!(world.target_revision("shop-staging").await, SHA);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_required_test_fails_the_tracker_and_names_the_test() {
    let script = CiScript::new(RUN_TIME);
    script.set("team-a/smoke", Outcome::Fail, RUN_TIME);
    let world = World::start(
        "e2e-failing",
        Delivery::Callbacks,
        script,
        |ns| {
            vec![policy(
                "dev-to-staging",
                "dev",
                "staging",
                ns,
                json!([smoke(), contract()]),
            )]
        },
        |_| {},
    )
    .await;
    world.create_tracker().await;

    let t = world
        .wait_for("Failed", |t| phase(t) == Some(Phase::Failed))
        .await;
    let status = t.status.expect("status");
    let message = status.message.clone().unwrap_or_default();
    assert!(message.contains("smoke failed"), "{message}");
    assert!(!message.contains("api-contract failed"), "{message}");
    let tests_passed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TestsPassed")
        .expect("a TestsPassed condition");
    assert_eq!(
        (tests_passed.status.as_str(), tests_passed.reason.as_str()),
        ("False", "TestsFailed")
    );
    assert!(tests_passed.message.contains("smoke"), "{tests_passed:#?}");

    let smoke = world.only_trigger("team-a/smoke");
    let posted: Vec<_> = world
        .standins
        .journal
        .statuses(SHA)
        .into_iter()
        .filter(|s| s.context == "promotion/dev/smoke")
        .collect();
    let last = posted.last().expect("a commit status for smoke");
    assert_eq!(
        (last.state.as_str(), last.target_url.as_deref()),
        ("failure", Some(smoke.url.as_str()))
    );
    assert!(status.promotions.is_empty(), "{:#?}", status.promotions);
    assert!(world.standins.journal.labels("acme", "shop", 42).is_empty());
    assert_eq!(world.target_revision("shop-staging").await, OLD);
    // The script is shared: the test could flip it and retry with the annotation.
    assert_eq!(world.script.outcome("team-a/smoke").0, Outcome::Fail);
}

//! A controller on the real control plane with fake outside systems, that a test
//! can stop (as if it crashed) and start again.

#![allow(dead_code)]

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use promotion_api::{Phase, PromotionPolicy, PullRequestTracker};
use promotion_controller::controller::{self, ControllerConfig};
use promotion_core::engine::{EngineConfig, Ports};
use promotion_core::fakes::{Crashes, FakeArgo, FakeCi, FakeGitHub};
use promotion_testenv::TestContext;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
pub const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";

pub struct Harness {
    pub ctx: TestContext,
    pub crashes: Arc<Crashes>,
    pub ci: Arc<FakeCi>,
    pub argo: Arc<FakeArgo>,
    pub github: Arc<FakeGitHub>,
    pub metrics: Arc<promotion_controller::metrics::Metrics>,
    /// How often the controller polls CI and Argo CD.
    pub poll: Duration,
    /// Routine reconciles at once.
    pub concurrency: u16,
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    pub wake: Option<futures::channel::mpsc::UnboundedSender<controller::Wake>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Harness {
    pub async fn new(test: &str) -> Self {
        let ctx = promotion_testenv::context(test).await;
        let crashes = Arc::new(Crashes::default());
        let argo = Arc::new(FakeArgo::new(crashes.clone()));
        argo.deploy("shop-dev", SHA);
        Self {
            ci: Arc::new(FakeCi::new(crashes.clone())),
            github: Arc::new(FakeGitHub::new(crashes.clone())),
            argo,
            crashes,
            ctx,
            metrics: Arc::new(promotion_controller::metrics::Metrics::new()),
            ready: Arc::default(),
            poll: Duration::from_millis(100),
            concurrency: ControllerConfig::default().concurrency,
            wake: None,
            task: None,
        }
    }

    /// Starts a controller process (a task here) watching the test's namespace.
    pub fn start(&mut self) {
        let ports = Ports {
            runner: self.ci.clone(),
            argo: self.argo.clone(),
            github: self.github.clone(),
        };
        let config = ControllerConfig {
            engine: EngineConfig {
                poll_interval: self.poll,
                adoption_grace: Duration::from_millis(500),
                ..EngineConfig::default()
            },
            namespace: Some(self.ctx.namespace.clone()),
            concurrency: self.concurrency,
            ..ControllerConfig::default()
        };
        let client = self.ctx.client.clone();
        let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded();
        self.wake = Some(wake_tx);
        let hooks = controller::Hooks {
            metrics: Some(self.metrics.clone()),
            ready: Some(self.ready.clone()),
            wake: Some(wake_rx),
        };
        self.task = Some(tokio::spawn(controller::run(
            client,
            ports,
            config,
            hooks,
            std::future::pending(),
        )));
    }

    /// Stops the controller at whatever await point it is: a crash, as far as the API is concerned.
    pub async fn crash(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
    }

    pub fn trackers(&self) -> Api<PullRequestTracker> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace)
    }

    pub fn policies(&self) -> Api<PromotionPolicy> {
        Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace)
    }

    pub async fn create_policy(&self, body: Value) {
        let p: PromotionPolicy = serde_json::from_value(body).expect("policy");
        self.policies()
            .create(&PostParams::default(), &p)
            .await
            .expect("policy created");
    }

    pub async fn create_tracker(&self, body: Value) {
        let t: PullRequestTracker = serde_json::from_value(body).expect("tracker");
        self.trackers()
            .create(&PostParams::default(), &t)
            .await
            .expect("tracker created");
    }

    pub async fn patch_tracker(&self, name: &str, patch: Value) {
        self.trackers()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("tracker patched");
    }

    /// Waits until the tracker satisfies `done`; fails with its last status after a minute.
    pub async fn wait_for(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(&PullRequestTracker) -> bool,
    ) -> PullRequestTracker {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = self.trackers().get(name).await.expect("tracker readable");
            if done(&t) {
                return t;
            }
            if Instant::now() > deadline {
                panic!(
                    "tracker {name} never reached {what}; last status: {:#?}",
                    t.status
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_phase(&self, name: &str, phase: Phase) -> PullRequestTracker {
        self.wait_for(name, &format!("{phase:?}"), |t| {
            t.status.as_ref().and_then(|s| s.phase) == Some(phase)
        })
        .await
    }

    /// Waits for an armed crash point of the fakes, then crashes the controller.
    pub async fn crash_when_hit(&mut self) {
        tokio::time::timeout(Duration::from_secs(60), self.crashes.wait_hit())
            .await
            .expect("the crash point was reached");
        self.crash().await;
    }

    /// Waits until a policy reports Ready=True.
    pub async fn wait_for_policy_ready(&self, name: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self.policies().get(name).await.expect("policy");
            let ready = p
                .status
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Ready"));
            if ready.is_some_and(|c| c.status == "True") {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "policy {name} never became ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The Events about `name`: (type, reason, note).
    pub async fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let api: Api<Event> = Api::namespaced(self.ctx.client.clone(), &self.ctx.namespace);
        let mut list: Vec<Event> = api
            .list(&ListParams::default())
            .await
            .expect("events")
            .items;
        list.retain(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name));
        list.iter()
            .map(|e| {
                (
                    e.type_.clone().unwrap_or_default(),
                    e.reason.clone().unwrap_or_default(),
                    e.note.clone().unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Waits until an Event with `reason` about `name` exists.
    pub async fn wait_event(&self, name: &str, reason: &str) -> (String, String, String) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(e) = self.events(name).await.into_iter().find(|e| e.1 == reason) {
                return e;
            }
            if Instant::now() > deadline {
                panic!(
                    "no {reason} event about {name}; events: {:#?}",
                    self.events(name).await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

pub fn tracker(name: &str) -> Value {
    json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": name},
        "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": 42, "headSha": SHA,
                 "environment": "dev", "application": {"name": "shop-dev"}}
    })
}

pub fn policy(name: &str, source: &str, target: &str, tests: Value) -> Value {
    json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
        "metadata": {"name": name},
        "spec": {"sourceEnvironment": source, "targetEnvironment": target, "externalTests": tests,
                 "promotion": {"application": {"name": format!("shop-{target}")},
                               "githubLabel": format!("promoted-to-{target}")}}
    })
}

/// Two tests, the common case.
pub fn two_tests(prefix: &str) -> Value {
    json!([
        {"name": "smoke", "provider": "jenkins", "job": format!("{prefix}-smoke"),
         "parameters": {"PR": "${PR_NUMBER}", "SHA": "${HEAD_SHA}"}},
        {"name": "e2e", "provider": "gitlab", "job": format!("{prefix}-e2e"), "ref": "main"}
    ])
}

/// dev -> staging -> prod, two tests each.
pub async fn two_hops(h: &Harness) {
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.create_policy(policy(
        "staging-to-prod",
        "staging",
        "prod",
        two_tests("staging"),
    ))
    .await;
}

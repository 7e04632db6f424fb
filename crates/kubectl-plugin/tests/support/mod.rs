//! Trackers and policies on the real control plane, with statuses the tests
//! write themselves through the status subresource, and users with and without rights.

#![allow(dead_code)]

use kube::ResourceExt;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kubectl_promotion::cluster::trackers_resource;
use promotion_testenv::TestContext;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const SHA_42: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
pub const SHA_43: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
pub const SHA_44: &str = "44444444aaaabbbbccccddddeeeeffff00001111";

pub struct Env {
    pub ctx: TestContext,
    /// Kubeconfigs of impersonated users live here.
    dir: tempfile::TempDir,
}

impl Env {
    pub async fn new(test: &str) -> Self {
        let ctx = promotion_testenv::context(test).await;
        Self {
            ctx,
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn ns(&self) -> &str {
        &self.ctx.namespace
    }

    fn api(&self, ar: &kube::core::ApiResource) -> Api<DynamicObject> {
        Api::namespaced_with(self.ctx.client.clone(), &self.ctx.namespace, ar)
    }

    pub fn trackers(&self) -> Api<DynamicObject> {
        self.api(&trackers_resource())
    }

    /// The demo's chain: dev -> staging (automatic) -> prod (approval).
    pub async fn chain(&self) {
        self.policy(
            "dev-to-staging",
            "dev",
            "staging",
            true,
            &["smoke", "api-contract"],
        )
        .await;
        self.policy("staging-to-prod", "staging", "prod", false, &["e2e"])
            .await;
    }

    pub async fn policy(&self, name: &str, from: &str, to: &str, auto: bool, tests: &[&str]) {
        let tests: Vec<Value> = tests
            .iter()
            .map(|t| json!({"name": t, "provider": "jenkins", "job": format!("team/{t}")}))
            .collect();
        let body = json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
            "metadata": {"name": name},
            "spec": {"sourceEnvironment": from, "targetEnvironment": to, "autoPromote": auto,
                     "externalTests": tests,
                     "promotion": {"application": {"name": format!("shop-{to}")}}}
        });
        let p: promotion_api::PromotionPolicy = serde_json::from_value(body).expect("policy");
        Api::<promotion_api::PromotionPolicy>::namespaced(self.ctx.client.clone(), self.ns())
            .create(&PostParams::default(), &p)
            .await
            .expect("policy created");
    }

    pub async fn tracker(&self, name: &str, number: i64, sha: &str) {
        let body = json!({
            "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
            "metadata": {"name": name},
            "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": number,
                     "headSha": sha, "environment": "dev",
                     "application": {"name": format!("shop-pr-{number}")}}
        });
        let t: promotion_api::PullRequestTracker = serde_json::from_value(body).expect("tracker");
        Api::<promotion_api::PullRequestTracker>::namespaced(self.ctx.client.clone(), self.ns())
            .create(&PostParams::default(), &t)
            .await
            .expect("tracker created");
    }

    /// Writes the tracker's status through the status subresource, as the controller does.
    pub async fn set_status(&self, name: &str, status: Value) {
        // Right after the schema is widened the API server may still validate with the old one.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let patch = json!({"status": status});
            match self
                .trackers()
                .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => return,
                Err(kube::Error::Api(s)) if s.code == 422 && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("status of {name} not written: {e}"),
            }
        }
    }

    pub async fn annotations(&self, name: &str) -> std::collections::BTreeMap<String, String> {
        self.trackers()
            .get(name)
            .await
            .expect("tracker")
            .annotations()
            .clone()
    }

    /// A kubeconfig that acts as `user` (the admin impersonates it).
    pub fn kubeconfig_as(&self, user: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.ctx.kubeconfig).expect("kubeconfig");
        let mut config: serde_yaml::Value = serde_yaml::from_str(&text).expect("yaml");
        config["users"][0]["user"]["as"] = serde_yaml::Value::from(user);
        let path = self.dir.path().join(format!("{user}.kubeconfig"));
        std::fs::write(&path, serde_yaml::to_string(&config).expect("yaml")).expect("write");
        path
    }

    /// A Role with `verbs` on trackers, policies and events, bound to `user` in the test's namespace.
    pub async fn grant(&self, user: &str, verbs: &[&str]) {
        let role = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": format!("{user}-role")},
            "rules": [
                {"apiGroups": ["promotion.io"], "resources": ["pullrequesttrackers", "promotionpolicies"], "verbs": verbs},
                {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["list"]}
            ]
        });
        let binding = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": format!("{user}-binding")},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{user}-role")},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]
        });
        let role: k8s_openapi::api::rbac::v1::Role = serde_json::from_value(role).expect("role");
        let binding: k8s_openapi::api::rbac::v1::RoleBinding =
            serde_json::from_value(binding).expect("binding");
        Api::<k8s_openapi::api::rbac::v1::Role>::namespaced(self.ctx.client.clone(), self.ns())
            .create(&PostParams::default(), &role)
            .await
            .expect("role");
        Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(
            self.ctx.client.clone(),
            self.ns(),
        )
        .create(&PostParams::default(), &binding)
        .await
        .expect("binding");
    }

    /// Runs the plugin binary as the admin with `args` (namespace added).
    pub async fn run(&self, args: &[&str]) -> Run {
        run_as(&self.ctx.kubeconfig, self.ns(), args).await
    }

    /// Runs the plugin binary with a kubeconfig.
    pub async fn run_with(&self, kubeconfig: &Path, args: &[&str]) -> Run {
        run_as(kubeconfig, self.ns(), args).await
    }
}

/// The plugin's exit code and output.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_kubectl-promotion")
}

async fn run_as(kubeconfig: &Path, ns: &str, args: &[&str]) -> Run {
    let out = tokio::process::Command::new(binary())
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns])
        .args(args)
        .output()
        .await
        .expect("the plugin runs");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into(),
        stderr: String::from_utf8_lossy(&out.stderr).into(),
    }
}

/// A status in `env` with `phase`, optional runs, records and queue.
pub fn status(env: &str, phase: &str, sha: &str, message: &str) -> Value {
    json!({"phase": phase, "currentEnvironment": env, "headSha": sha, "message": message,
           "application": {"cluster": "in-cluster", "namespace": "argocd", "name": format!("shop-{env}")}})
}

pub fn run(name: &str, state: &str, url: &str) -> Value {
    json!({"name": name, "provider": "jenkins", "job": format!("team/{name}"), "state": state,
           "required": true, "url": url, "runId": "1",
           "startedAt": "2026-11-29T10:00:00Z", "finishedAt": "2026-11-29T10:02:00Z",
           "message": if state == "Failed" { "job finished FAILURE" } else { "" }})
}

pub fn record(
    source: &str,
    target: &str,
    policy: &str,
    sha: &str,
    at: &str,
    by: &str,
    runs: Vec<Value>,
) -> Value {
    json!({"source": source, "target": target, "policy": policy, "revision": sha,
           "promotedAt": at, "promotedBy": by, "testRuns": runs})
}

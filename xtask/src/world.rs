//! The outside world for the demo and the benchmark: namespaces, the Argo CD
//! Application CRD and apps, the CI/GitHub stand-ins, their Secrets, and the
//! controller's configuration file.

use anyhow::{Context, Result};
use hmac::{Hmac, Mac};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use promotion_standins::{CiScript, StandInConfig, StandIns};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the controller keeps its Lease and reads its Secrets.
pub const CONTROLLER_NAMESPACE: &str = "promotion-system";
/// Where the Applications live, as in an Argo CD install.
pub const ARGOCD_NAMESPACE: &str = "argocd";
/// The Secret with the webhook secrets.
pub const WEBHOOK_SECRET: &str = "promotion-webhooks";
const GITHUB_HOOK_SECRET: &str = "local-github-webhook-secret";
const FIELD_MANAGER: &str = "xtask";

/// What `World::start` sets up.
pub struct WorldOptions {
    /// How each CI job ends.
    pub script: CiScript,
    /// Announce finished runs to the controller's webhook (otherwise it polls).
    pub callbacks: bool,
    /// The controller's webhook address (chosen before it starts, so the stand-ins can call it).
    pub webhook: SocketAddr,
    /// How long the Argo CD stand-in takes to sync a patched Application.
    pub sync_delay: Duration,
    /// Namespace of the policies and trackers.
    pub namespace: String,
    /// Directory for the configuration file.
    pub dir: PathBuf,
}

/// The running stand-ins and the files the controller needs.
pub struct World {
    /// An admin client.
    pub client: Client,
    /// CI systems and GitHub.
    pub standins: StandIns,
    /// The controller's configuration file.
    pub config: PathBuf,
    /// Every write the Argo CD stand-in saw that left an Application out of sync (a promotion).
    pub argo_writes: promotion_standins::argo::Writes,
    /// When the Argo CD stand-in marked each Application synced, and the requests it sent to do so.
    pub argo_syncs: promotion_standins::argo::Syncs,
    syncer: tokio::task::JoinHandle<()>,
    webhook: SocketAddr,
}

impl Drop for World {
    fn drop(&mut self) {
        self.syncer.abort();
    }
}

impl World {
    /// Sets everything up; the controller is started afterwards by the caller.
    pub async fn start(client: Client, opts: WorldOptions) -> Result<Self> {
        for ns in [
            CONTROLLER_NAMESPACE,
            ARGOCD_NAMESPACE,
            opts.namespace.as_str(),
        ] {
            ensure_namespace(&client, ns).await?;
        }
        install_application_crd(&client).await?;
        let callbacks = opts.callbacks.then(|| promotion_standins::Callbacks {
            webhook_base: format!("http://{}", opts.webhook),
            github_secret: GITHUB_HOOK_SECRET.into(),
            gitlab_token: "local-gitlab-webhook-token".into(),
            jenkins_token: "local-jenkins-webhook-token".into(),
        });
        let mut webhook_secret =
            BTreeMap::from([("github".to_string(), GITHUB_HOOK_SECRET.to_string())]);
        if let Some(c) = &callbacks {
            webhook_secret.insert("gitlab".into(), c.gitlab_token.clone());
            webhook_secret.insert("jenkins".into(), c.jenkins_token.clone());
        }
        let standins = StandIns::start(StandInConfig {
            script: opts.script,
            callbacks,
        })
        .await?;
        let mut secrets = standins.secrets();
        secrets.push((WEBHOOK_SECRET.to_string(), webhook_secret));
        for (name, data) in secrets {
            apply_secret(&client, CONTROLLER_NAMESPACE, &name, data).await?;
        }
        let config = write_config(&standins, &opts.namespace, &opts.dir)?;
        // Only our namespace: tests sharing the control plane keep their Applications as they set them.
        let argo_writes = promotion_standins::argo::Writes::default();
        let argo_syncs = promotion_standins::argo::Syncs::default();
        let syncer = promotion_standins::argo::spawn_journaled_syncer(
            client.clone(),
            ARGOCD_NAMESPACE,
            opts.sync_delay,
            argo_writes.clone(),
            argo_syncs.clone(),
        );
        Ok(Self {
            client,
            standins,
            config,
            argo_writes,
            argo_syncs,
            syncer,
            webhook: opts.webhook,
        })
    }

    /// Creates (or resets) an opted-in, watched Application, synced at `revision`.
    pub async fn application(
        &self,
        name: &str,
        revision: &str,
        policy_namespace: &str,
        environment: &str,
    ) -> Result<()> {
        self.application_labelled(name, revision, policy_namespace, environment, &[])
            .await
    }

    /// [`World::application`] with extra labels (e.g. to delete a run's apps in one request).
    pub async fn application_labelled(
        &self,
        name: &str,
        revision: &str,
        policy_namespace: &str,
        environment: &str,
        labels: &[(&str, &str)],
    ) -> Result<()> {
        let mut value = promotion_standins::argo::application(
            ARGOCD_NAMESPACE,
            name,
            revision,
            policy_namespace,
            environment,
        );
        value["metadata"]["labels"]["promotion.io/watch"] = serde_json::json!("true");
        for (key, label) in labels {
            value["metadata"]["labels"][*key] = serde_json::json!(label);
        }
        let obj: DynamicObject = serde_json::from_value(value)?;
        applications(&self.client)
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&obj),
            )
            .await
            .with_context(|| format!("applying Application {name}"))?;
        Ok(())
    }

    /// Points an Application at a new revision, as a CD pipeline deploying a PR would.
    pub async fn deploy(&self, name: &str, revision: &str) -> Result<()> {
        let patch = serde_json::json!({"spec": {"source": {"targetRevision": revision}}});
        applications(&self.client)
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("deploying {revision} to {name}"))?;
        Ok(())
    }

    /// Opens the PR on the GitHub stand-in and sends GitHub's signed `pull_request`
    /// event, as GitHub would; the controller reads the PR back from the API.
    pub async fn open_pull_request(
        &self,
        owner: &str,
        repo: &str,
        number: u64,
        sha: &str,
    ) -> Result<String> {
        self.standins
            .pull_requests
            .open(&format!("{owner}/{repo}"), number, sha);
        let body = serde_json::to_vec(&serde_json::json!({
            "action": "opened",
            "number": number,
            "pull_request": {
                "number": number,
                "head": {"sha": sha},
                "updated_at": k8s_openapi::jiff::Timestamp::now().to_string(),
            },
            "repository": {"name": repo, "owner": {"login": owner}},
        }))?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(GITHUB_HOOK_SECRET.as_bytes()).context("HMAC key")?;
        mac.update(&body);
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let resp = reqwest::Client::new()
            .post(format!("http://{}/webhooks/github", self.webhook))
            .header("X-GitHub-Event", "pull_request")
            .header("X-GitHub-Delivery", format!("local-{number}-{sha}"))
            .header("X-Hub-Signature-256", signature)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            anyhow::bail!("the webhook refused the pull_request event: {status} {text}");
        }
        Ok(text)
    }
}

/// The Applications API (argoproj.io/v1alpha1).
pub fn applications(client: &Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "applications");
    Api::namespaced_with(client.clone(), ARGOCD_NAMESPACE, &ar)
}

/// Creates a namespace unless it exists.
pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))?;
    api.patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&ns))
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    Ok(())
}

/// Argo CD's own Application CRD, applied server-side (it is too large for a client-side apply).
async fn install_application_crd(client: &Client) -> Result<()> {
    let crd = promotion_argocd::testing::application_crd()?;
    promotion_testenv::install_crd_objects(client, vec![crd]).await?;
    Ok(())
}

async fn apply_secret(
    client: &Client,
    namespace: &str,
    name: &str,
    data: BTreeMap<String, String>,
) -> Result<()> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "stringData": data,
    }))?;
    api.patch(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&secret),
    )
    .await
    .with_context(|| format!("applying Secret {namespace}/{name}"))?;
    Ok(())
}

/// The stand-ins' connections plus the repository and webhook settings, as a ConfigMap would mount it.
fn write_config(standins: &StandIns, namespace: &str, dir: &Path) -> Result<PathBuf> {
    let mut config: serde_yaml::Mapping = serde_yaml::from_str(&standins.connections_yaml())
        .context("the stand-ins' connections are not a YAML mapping")?;
    config.insert(
        "repositories".into(),
        serde_yaml::to_value(serde_json::json!([{
            "owner": "acme", "name": "shop", "namespace": namespace,
            "environment": "dev", "application": {"name": "shop-dev"},
        }]))?,
    );
    config.insert(
        "webhookSecretRef".into(),
        serde_yaml::to_value(serde_json::json!({"name": WEBHOOK_SECRET}))?,
    );
    std::fs::create_dir_all(dir)?;
    let path = dir.join("config.yaml");
    std::fs::write(&path, serde_yaml::to_string(&config)?)?;
    Ok(path)
}

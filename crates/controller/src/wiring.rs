//! From the configuration file and the Secrets it names to the engine's ports.
//!
//! Each connection is a hot-swappable adapter: it starts "unavailable" with the
//! reason, and is rebuilt whenever its Secret appears or changes (a watch on the
//! Secrets of the controller's namespace), so rotating a token needs no restart
//! and a missing key is a clear message on the trackers that use it.

use crate::config::{ConnectionEntry, FileConfig};
use crate::hot_swap::{Swappable, Unavailable};
use crate::webhook::{Endpoint, SecretProblem, WebhookSecrets, check_secret};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use promotion_adapters::{Adapter, RunnerSet};
use promotion_argocd::{ClusterClients, KubeArgoCd, PromoteOptions};
use promotion_core::engine::Ports;
use promotion_core::ports::{GitHubClient, PullRequestReader, TestRunner};
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

type SecretData = BTreeMap<String, Vec<u8>>;

/// The current webhook secrets, shared with the webhook receiver.
#[derive(Clone, Default)]
pub struct WebhookSecretsHandle(Arc<RwLock<WebhookSecrets>>);

impl WebhookSecretsHandle {
    /// The secrets as they are now.
    pub fn get(&self) -> WebhookSecrets {
        self.0.read().map(|s| s.clone()).unwrap_or_default()
    }
}

/// A GitHub connection feeds two ports: labels/statuses, and pull request reads.
type GitHubSlot = (
    Arc<Swappable<dyn GitHubClient>>,
    Arc<Swappable<dyn PullRequestReader>>,
);

enum Slot {
    Runner(Arc<Swappable<dyn TestRunner>>),
    GitHub(GitHubSlot),
}

/// The wired ports, kept current by a Secret watch.
pub struct Wiring {
    ports: Ports,
    pull_requests: Arc<dyn PullRequestReader>,
    webhook: WebhookSecretsHandle,
    _watch: tokio::task::JoinHandle<()>,
}

impl Wiring {
    /// Checks the configuration, builds every adapter, and starts following the Secrets in `namespace`.
    pub async fn start(client: Client, file: &FileConfig, namespace: &str) -> anyhow::Result<Self> {
        let mut runners = RunnerSet::new();
        let mut slots: Vec<(ConnectionEntry, Slot)> = Vec::new();
        let mut github: Option<GitHubSlot> = None;
        for entry in &file.connections {
            // Mistakes that no Secret can fix stop the controller at start-up.
            entry.config()?;
            let waiting = format!(
                "connection {}: secret {namespace}/{} not read yet",
                entry.name, entry.secret_ref.name
            );
            let Some(provider) = entry.kind.provider() else {
                let swap = github_slot(&waiting);
                if entry.default || github.is_none() {
                    github = Some(swap.clone());
                }
                slots.push((entry.clone(), Slot::GitHub(swap)));
                continue;
            };
            let swap: Arc<Swappable<dyn TestRunner>> = Arc::new(Swappable::new(Arc::new(
                Unavailable(waiting),
            )
                as Arc<dyn TestRunner>));
            runners.register(provider, &entry.name, swap.clone());
            if entry.default {
                runners
                    .set_default(provider, &entry.name)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            slots.push((entry.clone(), Slot::Runner(swap)));
        }
        let (github, pull_requests) =
            github.unwrap_or_else(|| github_slot("no connection of kind github is configured"));
        let github: Arc<dyn GitHubClient> = github;
        let pull_requests: Arc<dyn PullRequestReader> = pull_requests;
        let argo = KubeArgoCd::new(
            Arc::new(ClusterClients::new(client.clone(), namespace)),
            PromoteOptions {
                sync: file.argocd.sync,
                refresh: file.argocd.refresh,
                ..PromoteOptions::default()
            },
        );
        let ports = Ports {
            runner: Arc::new(runners),
            argo: Arc::new(argo),
            github,
        };
        let webhook = WebhookSecretsHandle::default();
        if file.webhook_secret_ref.is_none() {
            tracing::error!(
                "no webhookSecretRef in the configuration: every webhook endpoint is disabled (503)"
            );
        }
        let follower = SecretFollower {
            namespace: namespace.to_string(),
            slots: Arc::new(slots),
            webhook_secret: file.webhook_secret_ref.as_ref().map(|s| s.name.clone()),
            webhook: webhook.clone(),
        };
        // Read every Secret once before the controller starts, so the first reconcile is not blind.
        let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
        for name in follower.secret_names() {
            match api.get_opt(&name).await {
                Ok(Some(secret)) => follower.apply(&name, Some(&secret_data(&secret))),
                Ok(None) => follower.apply(&name, None),
                Err(e) => {
                    tracing::warn!(secret = %name, error = %e, "cannot read a connection's Secret yet")
                }
            }
        }
        let watch = tokio::spawn(follower.run(api));
        Ok(Self {
            ports,
            pull_requests,
            webhook,
            _watch: watch,
        })
    }

    /// The ports for the engine.
    pub fn ports(&self) -> Ports {
        self.ports.clone()
    }

    /// Reads pull requests through the default github connection, current as its Secret changes.
    pub fn pull_request_reader(&self) -> Arc<dyn PullRequestReader> {
        self.pull_requests.clone()
    }

    /// The webhook secrets, current as their Secret changes.
    pub fn webhook_secrets(&self) -> WebhookSecretsHandle {
        self.webhook.clone()
    }
}

/// Both GitHub ports of one connection, unavailable (saying `why`) until its Secret is read.
fn github_slot(why: &str) -> GitHubSlot {
    (
        Arc::new(Swappable::new(
            Arc::new(Unavailable(why.to_string())) as Arc<dyn GitHubClient>
        )),
        Arc::new(Swappable::new(
            Arc::new(Unavailable(why.to_string())) as Arc<dyn PullRequestReader>
        )),
    )
}

fn secret_data(secret: &Secret) -> SecretData {
    let mut data: SecretData = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k.clone(), v.0.clone()))
        .collect();
    for (k, v) in secret.string_data.iter().flatten() {
        data.insert(k.clone(), v.clone().into_bytes());
    }
    data
}

/// Rebuilds adapters when their Secrets change.
struct SecretFollower {
    namespace: String,
    slots: Arc<Vec<(ConnectionEntry, Slot)>>,
    webhook_secret: Option<String>,
    webhook: WebhookSecretsHandle,
}

impl SecretFollower {
    fn secret_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .slots
            .iter()
            .map(|(e, _)| e.secret_ref.name.clone())
            .collect();
        names.extend(self.webhook_secret.clone());
        names.sort();
        names.dedup();
        names
    }

    async fn run(self, api: Api<Secret>) {
        let names = self.secret_names();
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(event) = stream.next().await {
            let (secret, present) = match event {
                Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) => (s, true),
                Ok(Event::Delete(s)) => (s, false),
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "Secret watch failed; retrying");
                    continue;
                }
            };
            let name = secret.name_any();
            if names.contains(&name) {
                let data = present.then(|| secret_data(&secret));
                self.apply(&name, data.as_ref());
            }
        }
    }

    /// Rebuilds every adapter whose Secret is `name` (None: the Secret is gone).
    fn apply(&self, name: &str, data: Option<&SecretData>) {
        for (entry, slot) in self.slots.iter().filter(|(e, _)| e.secret_ref.name == name) {
            let built = match data {
                None => Err(format!(
                    "connection {}: secret {}/{name} does not exist",
                    entry.name, self.namespace
                )),
                Some(data) => self.build(entry, data),
            };
            match (slot, built) {
                (Slot::Runner(swap), Ok(Adapter::Runner(r))) => swap.swap(r),
                (
                    Slot::GitHub((swap, reader)),
                    Ok(Adapter::GitHub {
                        client,
                        pull_requests,
                    }),
                ) => {
                    swap.swap(client);
                    reader.swap(pull_requests);
                }
                (Slot::Runner(swap), Err(why)) => {
                    tracing::warn!(connection = %entry.name, reason = %why, "connection unavailable");
                    swap.swap(Arc::new(Unavailable(why)));
                }
                (Slot::GitHub((swap, reader)), Err(why)) => {
                    tracing::warn!(connection = %entry.name, reason = %why, "connection unavailable");
                    swap.swap(Arc::new(Unavailable(why.clone())));
                    reader.swap(Arc::new(Unavailable(why)));
                }
                _ => {}
            }
            tracing::info!(connection = %entry.name, "connection credentials (re)loaded");
        }
        if self.webhook_secret.as_deref() == Some(name)
            && let Ok(mut w) = self.webhook.0.write()
        {
            *w = self.webhook_secrets(name, data);
        }
    }

    /// The usable webhook secrets of Secret `name`; every endpoint without one is
    /// disabled (it answers 503), and the log says why, never what the value is.
    fn webhook_secrets(&self, name: &str, data: Option<&SecretData>) -> WebhookSecrets {
        let mut secrets = WebhookSecrets::default();
        for endpoint in Endpoint::ALL {
            let key = endpoint.name();
            let value = data.and_then(|d| d.get(key)).map(|v| v.trim_ascii());
            let usable = match (data, check_secret(value)) {
                (_, Ok(v)) => Some(v.to_vec()),
                (None, Err(_)) => {
                    tracing::error!(endpoint = key, secret = %format!("{}/{name}", self.namespace),
                        "webhook endpoint disabled: the webhook Secret does not exist");
                    None
                }
                (Some(_), Err(SecretProblem::Missing)) => {
                    tracing::warn!(endpoint = key, secret = %format!("{}/{name}", self.namespace),
                        "webhook endpoint disabled: the webhook Secret has no key {key:?}");
                    None
                }
                (Some(_), Err(problem)) => {
                    tracing::error!(endpoint = key, secret = %format!("{}/{name}", self.namespace),
                        "webhook endpoint disabled: key {key:?}: {problem}");
                    None
                }
            };
            match endpoint {
                Endpoint::Github => secrets.github = usable,
                Endpoint::Gitlab => secrets.gitlab = usable,
                Endpoint::Jenkins => secrets.jenkins = usable,
            }
        }
        secrets
    }

    fn build(&self, entry: &ConnectionEntry, data: &SecretData) -> Result<Adapter, String> {
        entry
            .build(&self.namespace, data)
            .map_err(|e| e.to_string())
    }
}

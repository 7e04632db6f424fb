//! Which kube client reaches the Argo CD of a named cluster.
//!
//! `in-cluster` is the controller's own client. Any other cluster `NAME` is
//! reached with the kubeconfig in the Secret `promotion-cluster-NAME`, key
//! `kubeconfig`, in the namespace given to [`ClusterClients::new`] (the
//! controller's own, so only those who may manage the controller can add a
//! cluster). The Secret is read on first use and its client cached; a cluster
//! whose credentials are refused is forgotten, so a rotated Secret is picked up.

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use promotion_core::ports::PortError;
use std::collections::HashMap;
use std::sync::Mutex;

/// The cluster name that means the controller's own cluster.
pub const IN_CLUSTER: &str = "in-cluster";
/// Prefix of the name of the Secret holding a cluster's kubeconfig.
pub const SECRET_PREFIX: &str = "promotion-cluster-";
/// The key of the kubeconfig in that Secret.
pub const KUBECONFIG_KEY: &str = "kubeconfig";

/// Why no client could be made for a cluster.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The name cannot be part of a Secret name.
    #[error("unknown cluster {cluster:?}: not a valid cluster name")]
    InvalidName {
        /// The cluster asked for.
        cluster: String,
    },
    /// No Secret for the cluster.
    #[error("unknown cluster {cluster:?}: no Secret {namespace}/{secret} holds its kubeconfig")]
    UnknownCluster {
        /// The cluster asked for.
        cluster: String,
        /// Where its Secret was looked for.
        namespace: String,
        /// The Secret looked for.
        secret: String,
    },
    /// The Secret exists but its kubeconfig is missing or unusable.
    #[error(
        "cluster {cluster:?}: the kubeconfig in Secret {namespace}/{secret} is unusable: {reason}"
    )]
    BadKubeconfig {
        /// The cluster asked for.
        cluster: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret.
        secret: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Reading the Secret failed.
    #[error("cluster {cluster:?}: reading Secret {namespace}/{secret}: {source}")]
    ReadSecret {
        /// The cluster asked for.
        cluster: String,
        /// The Secret's namespace.
        namespace: String,
        /// The Secret.
        secret: String,
        /// The API error.
        source: kube::Error,
    },
}

impl From<ClusterError> for PortError {
    fn from(err: ClusterError) -> Self {
        match &err {
            // The Secret lives on our own cluster: a 5xx there is as transient as anywhere.
            ClusterError::ReadSecret {
                cluster,
                namespace,
                secret,
                source,
            } => crate::errors::from_kube(
                source,
                &format!("reading Secret {namespace}/{secret} for cluster {cluster:?}"),
                IN_CLUSTER,
            ),
            _ => PortError::permanent(err.to_string()),
        }
    }
}

/// Kube clients by cluster name, built lazily from kubeconfig Secrets.
pub struct ClusterClients {
    local: Client,
    secret_namespace: String,
    cache: Mutex<HashMap<String, Client>>,
}

impl ClusterClients {
    /// `local` serves `in-cluster` and reads the Secrets in `secret_namespace`.
    pub fn new(local: Client, secret_namespace: impl Into<String>) -> Self {
        Self {
            local,
            secret_namespace: secret_namespace.into(),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The name of the Secret that holds `cluster`'s kubeconfig.
    pub fn secret_name(cluster: &str) -> String {
        format!("{SECRET_PREFIX}{cluster}")
    }

    /// The client of `cluster`, reading its Secret on first use.
    pub async fn client(&self, cluster: &str) -> Result<Client, ClusterError> {
        if cluster == IN_CLUSTER {
            return Ok(self.local.clone());
        }
        if let Some(client) = self.cached(cluster) {
            return Ok(client);
        }
        let client = self.build(cluster).await?;
        tracing::info!(cluster, "connected to cluster from its kubeconfig Secret");
        // Two callers may race to build the same client; either result is fine.
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(cluster.to_string(), client.clone());
        }
        Ok(client)
    }

    /// Drops the cached client of `cluster`, so its Secret is read again next time.
    pub fn forget(&self, cluster: &str) {
        if let Ok(mut cache) = self.cache.lock()
            && cache.remove(cluster).is_some()
        {
            tracing::info!(cluster, "forgot cached client of cluster");
        }
    }

    fn cached(&self, cluster: &str) -> Option<Client> {
        self.cache.lock().ok()?.get(cluster).cloned()
    }

    async fn build(&self, cluster: &str) -> Result<Client, ClusterError> {
        if !valid_name(cluster) {
            return Err(ClusterError::InvalidName {
                cluster: cluster.to_string(),
            });
        }
        let secret = Self::secret_name(cluster);
        let namespace = self.secret_namespace.clone();
        let bad = |reason: String| ClusterError::BadKubeconfig {
            cluster: cluster.to_string(),
            namespace: namespace.clone(),
            secret: secret.clone(),
            reason,
        };
        let api: Api<Secret> = Api::namespaced(self.local.clone(), &namespace);
        let found = match api.get_opt(&secret).await {
            Ok(found) => found,
            Err(source) => {
                return Err(ClusterError::ReadSecret {
                    cluster: cluster.to_string(),
                    namespace: namespace.clone(),
                    secret: secret.clone(),
                    source,
                });
            }
        };
        let Some(found) = found else {
            return Err(ClusterError::UnknownCluster {
                cluster: cluster.to_string(),
                namespace,
                secret,
            });
        };
        let bytes = found
            .data
            .as_ref()
            .and_then(|d| d.get(KUBECONFIG_KEY))
            .ok_or_else(|| bad(format!("it has no key {KUBECONFIG_KEY:?}")))?;
        let text =
            std::str::from_utf8(&bytes.0).map_err(|_| bad("the kubeconfig is not UTF-8".into()))?;
        let kubeconfig = Kubeconfig::from_yaml(text).map_err(|e| bad(e.to_string()))?;
        refuse_exec(&kubeconfig).map_err(bad)?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
        Client::try_from(config).map_err(|e| bad(e.to_string()))
    }
}

/// A Secret must not make the controller run programs: an `exec` credential
/// plugin would run a command from the Secret inside the controller's pod.
fn refuse_exec(kubeconfig: &Kubeconfig) -> Result<(), String> {
    let uses_exec = kubeconfig
        .auth_infos
        .iter()
        .any(|a| a.auth_info.as_ref().is_some_and(|i| i.exec.is_some()));
    if uses_exec {
        return Err(
            "exec credential plugins are not allowed; use a token or a client certificate".into(),
        );
    }
    Ok(())
}

/// A name that fits a Secret name (a DNS subdomain) after the prefix.
fn valid_name(cluster: &str) -> bool {
    !cluster.is_empty()
        && cluster.len() + SECRET_PREFIX.len() <= 253
        && cluster
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && !cluster.ends_with(['-', '.'])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_must_fit_a_secret_name() {
        assert!(valid_name("prod-eu.1"));
        assert!(!valid_name(""));
        assert!(!valid_name("Prod"));
        assert!(!valid_name("a/b"));
        assert!(!valid_name("a-"));
    }

    #[test]
    fn exec_plugins_are_refused() {
        let yaml = r#"
apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://x"}}]
users: [{name: u, user: {exec: {apiVersion: client.authentication.k8s.io/v1, command: sh}}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
"#;
        let kc = Kubeconfig::from_yaml(yaml).unwrap_or_else(|e| panic!("{e}"));
        assert!(refuse_exec(&kc).is_err());
    }
}

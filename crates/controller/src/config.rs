//! The binary's configuration: flags (and their environment variables) and the
//! configuration file (connections, repositories, webhooks), mounted from a ConfigMap.

use crate::telemetry::LogFormat;
use crate::webhook::RepositoryConfig;
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Command-line flags; each can also come from the environment.
#[derive(Clone, Debug, clap::Parser)]
#[command(
    name = "promotion-controller",
    version,
    about = "Promotes pull requests through environments once their gate tests pass"
)]
pub struct Args {
    /// Kubeconfig to use; in-cluster configuration when absent.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Watch only this namespace (all namespaces when absent).
    #[arg(long, env = "WATCH_NAMESPACE")]
    pub namespace: Option<String>,
    /// The configuration file (connections, repositories, webhooks).
    #[arg(
        long,
        env = "PROMOTION_CONFIG",
        default_value = "/etc/promotion-controller/config.yaml"
    )]
    pub config: PathBuf,
    /// How often running tests and syncing applications are looked at.
    #[arg(long, env = "PROMOTION_POLL_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub poll_interval: Duration,
    /// How long a PR may take to be Synced and Healthy at its revision in an environment
    /// before Deploying fails, when the policy that promoted it sets no deployTimeout.
    #[arg(long, env = "PROMOTION_DEPLOY_TIMEOUT", default_value = "30m", value_parser = humantime::parse_duration)]
    pub deploy_timeout: Duration,
    /// At most this many routine reconciles (polls, watch events) at once (0: no limit).
    #[arg(
        long,
        env = "PROMOTION_MAX_CONCURRENT_RECONCILES",
        default_value_t = 32
    )]
    pub max_concurrent_reconciles: u16,
    /// Reconciles woken by a CI callback or a user's approval or retry run in slots of
    /// their own, at most this many at once, ahead of waiting polls (0: no limit).
    #[arg(long, env = "PROMOTION_MAX_CONCURRENT_WAKES", default_value_t = 16)]
    pub max_concurrent_wakes: u16,
    /// Watch the Argo CD Applications labelled `promotion.io/watch: "true"` so a sync
    /// wakes the trackers waiting on it at once (needs list and watch on applications).
    #[arg(long, env = "PROMOTION_WATCH_APPLICATIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch_applications: bool,
    /// Routine polls stretch (with jitter) up to this when many trackers wait for a poll slot.
    #[arg(long, env = "PROMOTION_MAX_POLL_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub max_poll_interval: Duration,
    /// The namespaces of the watched Applications, comma-separated (all namespaces when absent).
    #[arg(long, env = "PROMOTION_APPLICATIONS_NAMESPACES", value_delimiter = ',')]
    pub applications_namespaces: Vec<String>,
    /// How many times a gate test the CI system never showed is triggered again before it fails.
    #[arg(long, env = "PROMOTION_MAX_REARMS", default_value_t = 1)]
    pub max_rearms: usize,
    /// Where /metrics, /healthz and /readyz listen.
    #[arg(long, env = "PROMOTION_PROBE_ADDRESS", default_value = "0.0.0.0:8080")]
    pub probe_address: SocketAddr,
    /// Where the webhook receiver listens.
    #[arg(
        long,
        env = "PROMOTION_WEBHOOK_ADDRESS",
        default_value = "0.0.0.0:9443"
    )]
    pub webhook_address: SocketAddr,
    /// Log format.
    #[arg(long, env = "PROMOTION_LOG_FORMAT", value_enum, default_value = "text")]
    pub log_format: LogFormat,
    /// Compete for a Lease so only one replica reconciles.
    #[arg(long, env = "PROMOTION_LEADER_ELECTION", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// The namespace of the Lease, and of the Secrets the configuration refers to.
    #[arg(long, env = "POD_NAMESPACE", default_value = "promotion-system")]
    pub lease_namespace: String,
    /// The Lease's name.
    #[arg(
        long,
        env = "PROMOTION_LEASE_NAME",
        default_value = "promotion-controller"
    )]
    pub lease_name: String,
    /// This replica's identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// How often the open pull requests of each repository are read from GitHub and
    /// applied to their trackers (catches lost webhook deliveries); 0s disables it.
    #[arg(long, env = "PROMOTION_PR_RESYNC_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub pr_resync_interval: Duration,
    /// Serve the webhooks over TLS with this certificate chain (PEM; with --webhook-tls-key-file).
    #[arg(
        long,
        env = "PROMOTION_WEBHOOK_TLS_CERT_FILE",
        requires = "webhook_tls_key_file"
    )]
    pub webhook_tls_cert_file: Option<PathBuf>,
    /// The private key of --webhook-tls-cert-file (PEM).
    #[arg(
        long,
        env = "PROMOTION_WEBHOOK_TLS_KEY_FILE",
        requires = "webhook_tls_cert_file"
    )]
    pub webhook_tls_key_file: Option<PathBuf>,
    /// How often the TLS files are read again; a changed pair applies to new connections.
    #[arg(long, env = "PROMOTION_WEBHOOK_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub webhook_tls_reload_interval: Duration,
    /// How many GitHub deliveries are remembered to ignore replays (per replica, in memory).
    #[arg(long, env = "PROMOTION_WEBHOOK_DELIVERY_CACHE", default_value_t = crate::webhook::deliveries::DEFAULT_CAPACITY)]
    pub webhook_delivery_cache: usize,
    /// How long a GitHub delivery is remembered to ignore its replays.
    #[arg(long, env = "PROMOTION_WEBHOOK_DELIVERY_TTL", default_value = "72h", value_parser = humantime::parse_duration)]
    pub webhook_delivery_ttl: Duration,
}

impl Args {
    /// The webhook TLS files, when TLS is asked for.
    pub fn webhook_tls(&self) -> Option<crate::webhook::tls::TlsFiles> {
        match (&self.webhook_tls_cert_file, &self.webhook_tls_key_file) {
            (Some(cert), Some(key)) => Some(crate::webhook::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ => None,
        }
    }
}

pub use promotion_adapters::{ConnectionEntry, SecretName};

/// How applications are promoted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArgoCdSettings {
    /// Start a sync operation with the promotion (for apps without automated sync).
    #[serde(default)]
    pub sync: bool,
    /// Ask Argo CD to refresh the app at once.
    #[serde(default = "yes")]
    pub refresh: bool,
}

fn yes() -> bool {
    true
}

/// The configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FileConfig {
    /// CI systems and GitHub.
    #[serde(default)]
    pub connections: Vec<ConnectionEntry>,
    /// Repositories whose pull requests the webhook tracks.
    #[serde(default)]
    pub repositories: Vec<RepositoryConfig>,
    /// The Secret with the webhook secrets (keys `github`, `gitlab`, `jenkins`).
    #[serde(default)]
    pub webhook_secret_ref: Option<SecretName>,
    /// Argo CD promotion settings.
    #[serde(default)]
    pub argocd: ArgoCdSettings,
}

impl FileConfig {
    /// Reads and checks the file; every problem names its place.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("reading the configuration {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// Parses and checks configuration text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let cfg: Self = serde_yaml::from_str(text)?;
        let mut names = std::collections::BTreeSet::new();
        for c in &cfg.connections {
            if !names.insert(c.name.as_str()) {
                anyhow::bail!("connection {:?} is defined twice", c.name);
            }
        }
        for kind in promotion_adapters::ConnectionKind::ALL {
            let defaults: Vec<&str> = cfg
                .connections
                .iter()
                .filter(|c| c.kind == kind && c.default)
                .map(|c| c.name.as_str())
                .collect();
            if defaults.len() > 1 {
                anyhow::bail!(
                    "connections {} are all the default {kind} connection",
                    defaults.join(", ")
                );
            }
        }
        for c in &cfg.connections {
            let names = c.allowed_namespaces.iter().flatten();
            if let Some(bad) = names.clone().find(|n| n.trim().is_empty()) {
                anyhow::bail!("connection {:?}: allowedNamespaces holds {bad:?}", c.name);
            }
            if let Some(bad) = c.jobs.iter().find(|j| j.trim().is_empty()) {
                anyhow::bail!(
                    "connection {:?}: jobs holds the empty pattern {bad:?}",
                    c.name
                );
            }
            if c.kind.provider().is_none() && !c.jobs.is_empty() {
                anyhow::bail!(
                    "connection {:?}: jobs is for CI connections; a github connection runs none",
                    c.name
                );
            }
        }
        let mut repositories = std::collections::BTreeSet::new();
        for r in &cfg.repositories {
            r.check()?;
            let key = r.full_name().to_ascii_lowercase();
            if !repositories.insert(key) {
                anyhow::bail!("repository {} is configured twice", r.full_name());
            }
        }
        Ok(cfg)
    }
}

impl FileConfig {
    /// Who may use which CI connection (and job) and track which repository.
    pub fn access_rules(&self) -> promotion_core::access::AccessRules {
        let mut rules = promotion_core::access::AccessRules::new();
        for c in &self.connections {
            let Some(provider) = c.kind.provider() else {
                continue;
            };
            rules = rules.with_connection(&c.name, c.default.then_some(provider), c.grant());
        }
        for r in &self.repositories {
            rules = rules.with_repository(&r.owner, &r.name, r.tracking_namespaces());
        }
        rules
    }

    /// What is allowed but probably not meant: logged at start-up.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in &self.connections {
            if c.kind.provider().is_some() && c.grants_nobody() {
                out.push(format!(
                    "connection {:?} has neither allowedNamespaces nor namespaceSelector: no namespace may use it (write allowedNamespaces: [\"*\"] to allow all)",
                    c.name
                ));
            }
        }
        for r in &self.repositories {
            if r.allow_forks.is_some() {
                out.push(format!(
                    "repository {}: allowForks is deprecated and will be removed in the next release; write forks: {}",
                    r.full_name(),
                    if r.allow_forks == Some(true) { "track" } else { "ignore" }
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_complete_file_parses() {
        let cfg = FileConfig::parse(
            r#"
connections:
  - name: jenkins-main
    kind: jenkins
    url: https://jenkins.example.com
    default: true
    secretRef: {name: jenkins-main}
    settings: {unstable: passed}
  - name: github
    kind: github
    url: https://api.github.com
    default: true
    secretRef: {name: github}
repositories:
  - owner: acme
    name: shop
    namespace: team-a
    environment: dev
    application: {name: shop-dev}
    copyLabels: ["team:*", "area/*"]
webhookSecretRef: {name: promotion-webhooks}
argocd: {sync: true}
"#,
        )
        .expect("valid");
        assert_eq!(cfg.connections.len(), 2);
        assert!(cfg.argocd.sync && cfg.argocd.refresh);
        assert_eq!(cfg.repositories[0].application.cluster, "in-cluster");
        assert_eq!(cfg.repositories[0].copy_labels, ["team:*", "area/*"]);
        assert_eq!(
            cfg.repositories[0].fork_policy(),
            promotion_core::pull_requests::Forks::Ignore,
            "forks are ignored unless asked"
        );
    }

    #[test]
    fn grants_forks_and_their_warnings() {
        let cfg = FileConfig::parse(
            r#"
connections:
  - {name: j-a, kind: jenkins, url: 'http://j', default: true, secretRef: {name: s},
     allowedNamespaces: [team-a], jobs: ["team-a/*"]}
  - {name: gl, kind: gitlab, url: 'http://g', secretRef: {name: s},
     namespaceSelector: {matchLabels: {ci: shared}}}
  - {name: unused, kind: gitlab, url: 'http://g', secretRef: {name: s}}
repositories:
  - {owner: acme, name: shop, namespace: team-a, namespaces: [team-a-canary], environment: dev,
     application: {name: x}, forks: gate}
  - {owner: acme, name: old, namespace: team-a, environment: dev, application: {name: y},
     allowForks: true}
"#,
        )
        .expect("valid");
        use promotion_api::Provider;
        use promotion_core::pull_requests::Forks;
        let rules = cfg.access_rules();
        assert!(
            rules
                .check_test("team-a", None, Provider::Jenkins, None, "team-a/smoke")
                .is_ok()
        );
        let no = rules
            .check_test("team-b", None, Provider::Jenkins, None, "team-a/smoke")
            .expect_err("team-b");
        assert_eq!(no.reason, "ConnectionNotAllowed");
        assert!(
            rules
                .check_repository("team-a-canary", "acme", "shop")
                .is_ok()
        );
        assert!(rules.check_repository("team-b", "acme", "shop").is_err());
        assert!(rules.uses_namespace_labels());
        assert_eq!(cfg.repositories[0].fork_policy(), Forks::Gate);
        assert_eq!(cfg.repositories[1].fork_policy(), Forks::Track);
        let warnings = cfg.warnings().join("\n");
        assert!(
            warnings.contains("\"unused\"") && warnings.contains("no namespace may use it"),
            "{warnings}"
        );
        assert!(
            !warnings.contains("\"j-a\"") && !warnings.contains("\"gl\""),
            "{warnings}"
        );
        assert!(warnings.contains("allowForks is deprecated"), "{warnings}");
        let bad = "repositories:\n- {owner: a, name: b, namespace: n, environment: dev, application: {name: x}, forks: maybe}\n";
        assert!(
            FileConfig::parse(bad).is_err(),
            "an unknown forks value is refused"
        );
    }

    #[test]
    fn mistakes_are_named() {
        let dup = "connections:\n- {name: a, kind: jenkins, url: 'http://x', secretRef: {name: s}}\n- {name: a, kind: gitlab, url: 'http://y', secretRef: {name: s}}\n";
        assert!(
            FileConfig::parse(dup)
                .expect_err("dup")
                .to_string()
                .contains("defined twice")
        );
        let kind =
            "connections:\n- {name: a, kind: travis, url: 'http://x', secretRef: {name: s}}\n";
        assert!(
            FileConfig::parse(kind)
                .expect_err("kind")
                .to_string()
                .contains("unknown kind")
        );
        let two = "connections:\n- {name: a, kind: gitlab, default: true, url: 'http://x', secretRef: {name: s}}\n- {name: b, kind: gitlab, default: true, url: 'http://y', secretRef: {name: s}}\n";
        assert!(
            FileConfig::parse(two)
                .expect_err("two")
                .to_string()
                .contains("default gitlab")
        );
        let repo = "repositories:\n- {owner: acme, name: shop, namespace: a, environment: dev, application: {name: 'shop-${PR_NUMBR}'}}\n";
        assert!(
            FileConfig::parse(repo)
                .expect_err("unknown variable")
                .to_string()
                .contains("PR_NUMBR")
        );
        let twice = "repositories:\n- {owner: acme, name: shop, namespace: a, environment: dev, application: {name: x}}\n- {owner: ACME, name: shop, namespace: b, environment: dev, application: {name: y}}\n";
        assert!(
            FileConfig::parse(twice)
                .expect_err("twice")
                .to_string()
                .contains("configured twice")
        );
        assert!(
            FileConfig::parse("colour: blue\n").is_err(),
            "unknown fields are mistakes, not ignored"
        );
    }
}

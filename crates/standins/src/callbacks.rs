//! Completion callbacks to the controller's webhook receiver, as each CI system
//! sends them: GitHub's signed `workflow_run` event, GitLab's `Pipeline Hook`
//! with `X-Gitlab-Token`, and a Jenkins notification with `X-Promotion-Token`.

use crate::Callbacks;
use crate::journal::{CallbackDelivery, Journal};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

/// Sends callbacks and records each delivery in the journal.
pub(crate) struct Notifier {
    client: reqwest::Client,
    config: Callbacks,
    journal: Journal,
    deliveries: AtomicU64,
}

/// Which run a callback is about, for the journal.
pub(crate) struct About {
    pub provider: &'static str,
    pub job: String,
    pub run_id: String,
}

impl Notifier {
    pub fn new(config: Callbacks, journal: Journal) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            client,
            config,
            journal,
            deliveries: AtomicU64::new(0),
        })
    }

    /// A `workflow_run` event, signed with the GitHub webhook secret.
    pub async fn github(&self, about: About, payload: &serde_json::Value) {
        let body = payload.to_string().into_bytes();
        let signature = match Hmac::<Sha256>::new_from_slice(self.config.github_secret.as_bytes()) {
            Ok(mut mac) => {
                mac.update(&body);
                format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
            }
            // HMAC takes keys of any length; this cannot happen, but never panic here.
            Err(_) => String::new(),
        };
        let delivery = self.deliveries.fetch_add(1, Ordering::Relaxed);
        let headers = vec![
            ("X-GitHub-Event", "workflow_run".to_owned()),
            (
                "X-GitHub-Delivery",
                format!("00000000-0000-4000-8000-{delivery:012x}"),
            ),
            ("X-Hub-Signature-256", signature),
            ("User-Agent", "GitHub-Hookshot/standin".to_owned()),
        ];
        self.deliver(about, "/webhooks/github", headers, body).await;
    }

    /// A `Pipeline Hook`, with the GitLab webhook token.
    pub async fn gitlab(&self, about: About, payload: &serde_json::Value) {
        let headers = vec![
            ("X-Gitlab-Event", "Pipeline Hook".to_owned()),
            ("X-Gitlab-Token", self.config.gitlab_token.clone()),
        ];
        self.deliver(
            about,
            "/webhooks/gitlab",
            headers,
            payload.to_string().into_bytes(),
        )
        .await;
    }

    /// A Jenkins build notification, with the shared token.
    pub async fn jenkins(&self, about: About, payload: &serde_json::Value) {
        let headers = vec![("X-Promotion-Token", self.config.jenkins_token.clone())];
        self.deliver(
            about,
            "/webhooks/jenkins",
            headers,
            payload.to_string().into_bytes(),
        )
        .await;
    }

    /// One attempt, as CI systems mostly make; the controller's poll is the safety net.
    async fn deliver(
        &self,
        about: About,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    ) {
        let url = format!("{}{path}", self.config.webhook_base.trim_end_matches('/'));
        let mut req = self
            .client
            .post(&url)
            .header("Content-Type", "application/json")
            .body(body);
        for (k, v) in headers {
            req = req.header(k, v);
        }
        let at = SystemTime::now();
        let (status, error) = match req.send().await {
            Ok(resp) => (Some(resp.status().as_u16()), None),
            Err(e) => {
                tracing::debug!(%url, error = %e, "callback not delivered");
                (None, Some(e.to_string()))
            }
        };
        self.journal.record_callback(CallbackDelivery {
            provider: about.provider,
            job: about.job,
            run_id: about.run_id,
            status,
            error,
            at,
        });
    }
}

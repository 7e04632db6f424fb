//! Leader election on a coordination.k8s.io Lease, so two replicas never reconcile at once.

use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Holds (or waits for) the Lease; renews it in the background while held.
pub struct Leadership {
    manager: Arc<LeaseManager>,
    state: watch::Receiver<bool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    probe: tokio::task::JoinHandle<()>,
}

/// How long the Lease is held without renewal, in seconds.
const LEASE_SECONDS: u64 = 15;
/// The longest wait between two attempts to reach the API server.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// How often the Lease is read while the manager's own view is in doubt.
const PROBE_INTERVAL: Duration = Duration::from_secs(2);

impl Leadership {
    /// Starts competing for `namespace/name` as `identity`. While the API server
    /// cannot be reached this keeps trying, with backoff, instead of failing: a
    /// replica that exits on an outage only comes back to exit again.
    pub async fn start(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> anyhow::Result<Self> {
        let mut delay = Duration::from_millis(200);
        let manager = loop {
            let built = LeaseManagerBuilder::new(client.clone(), name)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(LEASE_SECONDS)
                .with_grace(5)
                .with_field_manager("promotion-controller")
                .build()
                .await;
            match built {
                Ok(m) => break Arc::new(m),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "cannot reach the API server to compete for the lease");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                }
            }
        };
        let (tx, state) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        let tx = Arc::new(tx);
        // After a failed renewal the manager may still believe it leads, and then never
        // reports leading again once the API server is back: the Lease itself says.
        let suspect = Arc::new(AtomicBool::new(false));
        let task = {
            let (manager, stop) = (manager.clone(), stop.clone());
            let (tx, suspect) = (tx.clone(), suspect.clone());
            tokio::spawn(async move {
                let mut delay = Duration::from_millis(500);
                loop {
                    tokio::select! {
                        changed = manager.changed() => match changed {
                            Ok(leading) => {
                                delay = Duration::from_millis(500);
                                suspect.store(false, Ordering::SeqCst);
                                let _ = tx.send(leading);
                            }
                            Err(e) => {
                                // Unreachable API: we cannot prove we still hold it, so we
                                // stop acting as leader, and keep trying with backoff.
                                tracing::warn!(error = %e, retry_in = ?delay, "lease renewal failed");
                                suspect.store(true, Ordering::SeqCst);
                                let _ = tx.send(false);
                                tokio::time::sleep(delay).await;
                                delay = (delay * 2).min(MAX_BACKOFF);
                                continue;
                            }
                        },
                        _ = stop.notified() => break,
                    }
                }
            })
        };
        let probe = {
            let (client, namespace, name, identity) = (
                client.clone(),
                namespace.to_string(),
                name.to_string(),
                identity.to_string(),
            );
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(PROBE_INTERVAL).await;
                    if suspect.load(Ordering::SeqCst)
                        && holder(client.clone(), &namespace, &name, &identity).await == Holder::Me
                    {
                        tracing::info!("the API server answers again and the lease is still ours");
                        suspect.store(false, Ordering::SeqCst);
                        let _ = tx.send(true);
                    }
                }
            })
        };
        Ok(Self {
            manager,
            state,
            stop,
            task,
            probe,
        })
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquired(&mut self) -> anyhow::Result<()> {
        while !*self.state.borrow_and_update() {
            self.state.changed().await?;
        }
        Ok(())
    }

    /// Resolves when the Lease is lost (another replica took it, or it could not be renewed).
    pub fn lost(&self) -> impl Future<Output = ()> + Send + Sync + 'static {
        let mut state = self.state.clone();
        async move {
            while *state.borrow_and_update() {
                if state.changed().await.is_err() {
                    return;
                }
            }
        }
    }

    /// Whether this replica leads now.
    pub fn leading(&self) -> bool {
        *self.state.borrow()
    }

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(self) -> anyhow::Result<()> {
        self.probe.abort();
        self.stop.notify_one();
        let _ = self.task.await;
        self.manager.release().await?;
        Ok(())
    }
}

/// Who holds the Lease, as far as the API server can prove it now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// This replica holds it and renewed it within its duration.
    Me,
    /// Another replica holds it and renewed it within its duration.
    Other(String),
    /// Nobody, or an expired holder.
    Nobody,
    /// The API server could not be asked.
    Unknown,
}

/// Reads the Lease to tell a lost Lease (another replica leads: step down for good)
/// from an unreachable API server (keep trying).
pub async fn holder(client: Client, namespace: &str, name: &str, identity: &str) -> Holder {
    let api: kube::Api<Lease> = kube::Api::namespaced(client, namespace);
    let lease = match api.get_opt(name).await {
        Ok(Some(l)) => l,
        Ok(None) => return Holder::Nobody,
        Err(_) => return Holder::Unknown,
    };
    let Some(spec) = lease.spec else {
        return Holder::Nobody;
    };
    let Some(who) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Holder::Nobody;
    };
    let seconds = spec
        .lease_duration_seconds
        .map_or(LEASE_SECONDS, |d| u64::try_from(d).unwrap_or(0));
    let fresh = spec.renew_time.is_some_and(|t| {
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(t.0);
        age < k8s_openapi::jiff::SignedDuration::from_secs(
            i64::try_from(seconds).unwrap_or(i64::MAX),
        )
    });
    match (fresh, who == identity) {
        (false, _) => Holder::Nobody,
        (true, true) => Holder::Me,
        (true, false) => Holder::Other(who),
    }
}

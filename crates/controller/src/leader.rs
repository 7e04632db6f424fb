//! Leader election on a coordination.k8s.io Lease, so two replicas never reconcile at once.

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// Holds (or waits for) the Lease; renews it in the background while held.
pub struct Leadership {
    manager: Arc<LeaseManager>,
    state: watch::Receiver<bool>,
    stop: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Leadership {
    /// Starts competing for `namespace/name` as `identity`.
    pub async fn start(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
    ) -> anyhow::Result<Self> {
        let manager = Arc::new(
            LeaseManagerBuilder::new(client, name)
                .with_namespace(namespace)
                .with_identity(identity)
                .with_duration(15)
                .with_grace(5)
                .with_field_manager("promotion-controller")
                .build()
                .await?,
        );
        let (tx, state) = watch::channel(false);
        let stop = Arc::new(Notify::new());
        let task = {
            let (manager, stop) = (manager.clone(), stop.clone());
            tokio::spawn(async move {
                loop {
                    tokio::select! {
                        changed = manager.changed() => match changed {
                            Ok(leading) => { let _ = tx.send(leading); }
                            Err(e) => {
                                // Unreachable API: we cannot prove we still hold it.
                                tracing::warn!(error = %e, "lease renewal failed");
                                let _ = tx.send(false);
                                tokio::time::sleep(Duration::from_secs(1)).await;
                            }
                        },
                        _ = stop.notified() => break,
                    }
                }
            })
        };
        Ok(Self {
            manager,
            state,
            stop,
            task,
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

    /// Gives the Lease up so a standby takes over at once instead of after it expires.
    pub async fn release(self) -> anyhow::Result<()> {
        self.stop.notify_one();
        let _ = self.task.await;
        self.manager.release().await?;
        Ok(())
    }
}

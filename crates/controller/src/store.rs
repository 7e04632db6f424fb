//! TrackerStore on the Kubernetes API: a PUT of the status subresource that
//! carries the resourceVersion last seen, so a stale decision is refused (409)
//! before any side effect that follows it.

use crate::metrics::Metrics;
use async_trait::async_trait;
use kube::api::{Api, PostParams};
use promotion_api::{PullRequestTracker, PullRequestTrackerStatus};
use promotion_core::ports::{StoreError, TrackerStore};
use std::sync::{Arc, Mutex};

/// The field manager of every write the controller makes.
pub const FIELD_MANAGER: &str = "promotion-controller";

/// Saves one tracker's status with optimistic concurrency.
pub struct KubeTrackerStore {
    api: Api<PullRequestTracker>,
    object: Mutex<PullRequestTracker>,
    /// When the tracker was created: the start of its lead time.
    created: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>,
    metrics: Option<Arc<Metrics>>,
}

impl KubeTrackerStore {
    /// A store for `tracker` as it was read.
    pub fn new(
        api: Api<PullRequestTracker>,
        tracker: &PullRequestTracker,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let name = tracker.metadata.name.clone().unwrap_or_default();
        let mut object = PullRequestTracker::new(&name, tracker.spec.clone());
        object.metadata.namespace = tracker.metadata.namespace.clone();
        object.metadata.resource_version = tracker.metadata.resource_version.clone();
        object.status = tracker.status.clone();
        Self {
            api,
            object: Mutex::new(object),
            created: tracker.metadata.creation_timestamp.clone(),
            metrics,
        }
    }
}

#[async_trait]
impl TrackerStore for KubeTrackerStore {
    async fn save(&self, status: &PullRequestTrackerStatus) -> Result<(), StoreError> {
        let (body, previous) = {
            let obj = self
                .object
                .lock()
                .map_err(|_| StoreError::Other("store lock poisoned".into()))?;
            let mut body = obj.clone();
            body.status = Some(status.clone());
            (body, obj.status.clone().unwrap_or_default())
        };
        let name = body.metadata.name.clone().unwrap_or_default();
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self.api.replace_status(&name, &params, &body).await {
            Ok(saved) => {
                if let Ok(mut obj) = self.object.lock() {
                    obj.metadata.resource_version = saved.metadata.resource_version;
                    obj.status = Some(status.clone());
                }
                if let Some(m) = &self.metrics {
                    let namespace = body.metadata.namespace.as_deref().unwrap_or_default();
                    m.status_saved(namespace, self.created.as_ref(), &previous, status);
                }
                Ok(())
            }
            Err(kube::Error::Api(s)) if s.code == 409 => Err(StoreError::Conflict),
            Err(kube::Error::Api(s)) if s.code == 404 => Err(StoreError::Gone),
            Err(e) => Err(StoreError::Other(e.to_string())),
        }
    }
}

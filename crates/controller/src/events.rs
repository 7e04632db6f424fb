//! EventRecorder on Kubernetes Events (events.k8s.io), about one tracker.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder};
use promotion_core::ports::{DomainEvent, EventRecorder, EventType};

/// Publishes domain events as Events on the tracker.
pub struct KubeEventRecorder {
    recorder: Recorder,
    object: ObjectReference,
}

impl KubeEventRecorder {
    /// Events about `object`.
    pub fn new(recorder: Recorder, object: ObjectReference) -> Self {
        Self { recorder, object }
    }
}

#[async_trait]
impl EventRecorder for KubeEventRecorder {
    async fn publish(&self, event: DomainEvent) {
        let ev = Event {
            type_: match event.type_ {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            action: event.reason.clone(),
            reason: event.reason,
            // The API server refuses notes above 1 KiB.
            note: Some(event.note.chars().take(1000).collect()),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &self.object).await {
            tracing::warn!(error = %e, reason = %ev.reason, "could not publish an event");
        }
    }
}

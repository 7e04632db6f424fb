//! EventRecorder on Kubernetes Events (events.k8s.io), about one tracker.
//!
//! Every domain event is created as an Event of its own. kube's Recorder would fold
//! a repeat into a series by patching the first Event, which keeps the first note
//! (the second "Synced" would still say the first environment) and needs `patch`
//! on events; a fresh Recorder per event has nothing to fold into.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Client;
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use promotion_core::ports::{DomainEvent, EventRecorder, EventType};

/// Who publishes Events, and through which client.
#[derive(Clone)]
pub struct EventPublisher {
    client: Client,
    reporter: Reporter,
}

impl EventPublisher {
    /// Events reported as `reporter`.
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// A recorder of Events about `object`.
    pub fn about(&self, object: ObjectReference) -> KubeEventRecorder {
        KubeEventRecorder {
            publisher: self.clone(),
            object,
        }
    }
}

/// Publishes domain events as Events on the tracker.
pub struct KubeEventRecorder {
    publisher: EventPublisher,
    object: ObjectReference,
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
        let recorder = Recorder::new(
            self.publisher.client.clone(),
            self.publisher.reporter.clone(),
        );
        if let Err(e) = recorder.publish(&ev, &self.object).await {
            tracing::warn!(error = %e, reason = %ev.reason, "could not publish an event");
        }
    }
}

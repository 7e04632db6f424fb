//! The reconcilers that run the promotion engine on Kubernetes: the tracker
//! controller, the policy watch, and the Kubernetes side of the engine's ports
//! (status store, events).

pub mod app_watch;
pub mod config;
pub mod controller;
pub mod events;
pub mod hot_swap;
pub mod lanes;
pub mod leader;
pub mod metrics;
pub mod policy_watch;
pub mod pr_sync;
pub mod probes;
pub mod resync;
pub mod store;
pub mod telemetry;
pub mod webhook;
pub mod wiring;

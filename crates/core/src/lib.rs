//! The promotion domain: what a gate is, when a PR may move, and the exactly-once
//! protocol that moves it. It reaches CI systems, Argo CD, GitHub, Kubernetes
//! events and its own persisted state only through the traits in [`ports`].

pub mod access;
pub mod callbacks;
pub mod conditions;
pub mod delivery;
pub mod engine;
#[cfg(any(test, feature = "fakes"))]
pub mod fakes;
pub mod monitor;
pub mod policy;
pub mod policy_cache;
pub mod policy_verdict;
pub mod ports;
pub mod promotion;
pub mod pull_requests;
pub mod records;
pub mod secret;
pub mod selector;
pub mod snapshot;
pub mod trigger;
pub mod variables;

//! The promotion domain: what a gate is, when a PR may move, and the exactly-once
//! protocol that moves it. It reaches CI systems, Argo CD, GitHub, Kubernetes
//! events and its own persisted state only through the traits in [`ports`].

pub mod ports;

//! `kubectl promotion`: where each pull request is, why it waits, and what moves
//! it on; with the user's own kubeconfig and permissions. Also a live pipeline
//! view in the browser (`dashboard`) and the delivery figures teams report on.

pub mod access;
pub mod board;
pub mod browser;
pub mod chain;
pub mod cli;
pub mod cluster;
pub mod dashboard;
pub mod explain;
pub mod figures;
pub mod resolve;
pub mod text;
pub mod view;
pub mod watch;

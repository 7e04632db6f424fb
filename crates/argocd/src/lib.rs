//! The Argo CD adapter.

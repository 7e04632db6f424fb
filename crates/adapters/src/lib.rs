//! HTTP adapters of the ports.

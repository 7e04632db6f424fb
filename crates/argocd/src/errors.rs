//! How a failed Kubernetes API call becomes a [`PortError`]: whether retrying
//! can help, and a message that names the cluster and the object.

use promotion_core::ports::PortError;

/// Maps a kube error for `what` (e.g. `reading Application argocd/web`) on `cluster`.
pub(crate) fn from_kube(err: &kube::Error, what: &str, cluster: &str) -> PortError {
    match err {
        kube::Error::Api(status) => from_status(status.code, &status.message, what, cluster),
        // Connection refused, reset, TLS handshake cut short, timeouts in the
        // client's own stack: the network may well be back on the next try.
        kube::Error::HyperError(_) | kube::Error::Service(_) | kube::Error::ReadEvents(_) => {
            PortError::transient(format!("{what} on cluster {cluster}: {err}"))
        }
        kube::Error::SerdeError(_) => PortError::permanent(format!(
            "{what} on cluster {cluster}: malformed answer: {err}"
        )),
        kube::Error::Auth(_) => PortError::permanent(format!(
            "{what} on cluster {cluster}: authenticating failed: {err}"
        )),
        _ => PortError::permanent(format!("{what} on cluster {cluster}: {err}")),
    }
}

/// Maps an HTTP status answered by the API server.
fn from_status(code: u16, message: &str, what: &str, cluster: &str) -> PortError {
    match code {
        404 => PortError::permanent(format!("{what} on cluster {cluster}: not found")),
        401 => PortError::permanent(format!(
            "{what}: cluster {cluster} refused our credentials (401 Unauthorized): {message}"
        )),
        403 => PortError::permanent(format!(
            "{what}: cluster {cluster} forbids it (403 Forbidden): {message}"
        )),
        // 409: someone wrote the object since we read it; re-reading decides again.
        408 | 409 | 429 => {
            PortError::transient(format!("{what} on cluster {cluster}: {code}: {message}"))
        }
        500.. => PortError::transient(format!(
            "{what} on cluster {cluster}: server error {code}: {message}"
        )),
        _ => PortError::permanent(format!("{what} on cluster {cluster}: {code}: {message}")),
    }
}

/// The call did not answer within `after`.
pub(crate) fn timed_out(what: &str, cluster: &str, after: std::time::Duration) -> PortError {
    PortError::transient(format!(
        "{what} on cluster {cluster}: no answer after {after:?}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use promotion_core::ports::ErrorKind;

    fn kind(code: u16) -> ErrorKind {
        from_status(code, "m", "reading x", "c").kind
    }

    #[test]
    fn classifies_status_codes() {
        assert_eq!(kind(404), ErrorKind::Permanent);
        assert_eq!(kind(401), ErrorKind::Permanent);
        assert_eq!(kind(403), ErrorKind::Permanent);
        assert_eq!(kind(422), ErrorKind::Permanent);
        assert_eq!(kind(409), ErrorKind::Transient);
        assert_eq!(kind(429), ErrorKind::Transient);
        assert_eq!(kind(500), ErrorKind::Transient);
        assert_eq!(kind(503), ErrorKind::Transient);
        assert_eq!(kind(504), ErrorKind::Transient);
    }

    #[test]
    fn names_the_cluster_when_refused() {
        let e = from_status(403, "no", "patching Application a/b", "prod-eu");
        assert!(e.message.contains("prod-eu"), "{}", e.message);
        assert!(e.message.contains("a/b"), "{}", e.message);
    }
}

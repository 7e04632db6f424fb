//! The Argo CD adapter: reads and promotes Argo CD Applications through the
//! Kubernetes API of the cluster where Argo CD runs.
//!
//! - Status: `status.sync`, `status.health` and `status.operationState` become an
//!   [`promotion_core::ports::AppStatus`]; a missing status reads as Unknown.
//! - Promotion: one JSON merge patch (field manager `promotion-controller`) sets
//!   the target revision and, as [`PromoteOptions`] ask, a sync `operation` and
//!   the `argocd.argoproj.io/refresh` annotation. An app already at the revision
//!   is not written. Status is never written (Argo CD's CRD has no status
//!   subresource, so writing it would race Argo CD itself).
//! - Opt-in: only an app annotated [`ALLOW_PROMOTION_FROM`] with
//!   `<policy-namespace>/<target-environment>` (a comma-separated list) is moved.
//! - Hold: the annotation `promotion.io/held-by` names the one tracker whose PR
//!   the Application's environment runs; written with the resourceVersion read.
//! - Clusters: see [`ClusterClients`] for how a cluster name finds its kubeconfig.

mod adapter;
pub mod clusters;
mod errors;
mod hold;
mod model;
pub mod opt_in;
pub mod options;
mod patch;
mod status;
#[cfg(feature = "testing")]
pub mod testing;

pub use adapter::{FIELD_MANAGER, KubeArgoCd, application_resource};
pub use clusters::{ClusterClients, ClusterError, IN_CLUSTER, KUBECONFIG_KEY, SECRET_PREFIX};
pub use opt_in::ALLOW_PROMOTION_FROM;
pub use options::{PROMOTE_SOURCE, PromoteOptions, SourceSelector};

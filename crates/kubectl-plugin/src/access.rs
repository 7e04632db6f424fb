//! Asking the API server what the user may do (SelfSubjectAccessReview).

use crate::cluster::{Cluster, Error, api_error};
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use kube::api::{Api, PostParams};

/// Whether the user may `verb` pullrequesttrackers.promotion.io in `namespace`.
///
/// `approve` is a custom verb no request uses, so only a review can tell
/// beforehand that the admission policy will refuse the annotation.
pub async fn allowed(cluster: &Cluster, verb: &str, namespace: &str) -> Result<bool, Error> {
    let review: SelfSubjectAccessReview = serde_json::from_value(serde_json::json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "metadata": {},
        "spec": {"resourceAttributes": {
            "group": "promotion.io",
            "resource": "pullrequesttrackers",
            "verb": verb,
            "namespace": namespace,
        }}
    }))
    .map_err(|e| Error::Usage(e.to_string()))?;
    let api: Api<SelfSubjectAccessReview> = Api::all(cluster.client.clone());
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| api_error(e, "create", "selfsubjectaccessreviews", None))?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

//! Test support: Argo CD's own Application CRD (v3.6.0, unchanged, from the
//! repository's `../shared/fixtures/argocd`), for tests of this and other
//! crates and for the demo and the benchmark.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Argo CD's Application CRD as YAML: a full schema for spec, status and
/// operation, and no status subresource. 416 KB: apply it server-side only.
pub const APPLICATION_CRD_YAML: &str =
    include_str!("../../../../shared/fixtures/argocd/application-crd.yaml");

/// Argo CD's Application CRD, ready for `promotion_testenv::install_crd_objects`.
pub fn application_crd() -> Result<CustomResourceDefinition, serde_yaml::Error> {
    serde_yaml::from_str(APPLICATION_CRD_YAML)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crd_is_argo_cds_own_with_no_status_subresource() {
        let crd = super::application_crd().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crd.spec.group, "argoproj.io");
        assert_eq!(
            crd.metadata
                .labels
                .unwrap_or_default()
                .get("app.kubernetes.io/part-of"),
            Some(&"argocd".to_string())
        );
        for version in &crd.spec.versions {
            let status = version
                .subresources
                .as_ref()
                .and_then(|s| s.status.as_ref());
            assert!(
                status.is_none(),
                "{} has a status subresource",
                version.name
            );
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref());
            let props = schema.and_then(|s| s.properties.as_ref());
            assert!(
                props.is_some_and(|p| p.contains_key("status") && p.contains_key("operation")),
                "{} has no full schema",
                version.name
            );
        }
    }
}

//! Test support: a stand-in for Argo CD's Application CRD, for tests of this
//! and other crates and for the demo.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// The stand-in Application CRD as YAML (no status subresource, like Argo CD's).
pub const APPLICATION_CRD_YAML: &str = include_str!("../tests/data/application-crd.yaml");

/// The stand-in Application CRD, ready for `promotion_testenv::install_crd_objects`.
pub fn application_crd() -> Result<CustomResourceDefinition, serde_yaml::Error> {
    serde_yaml::from_str(APPLICATION_CRD_YAML)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_crd_parses_and_has_no_status_subresource() {
        let crd = super::application_crd().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(crd.spec.group, "argoproj.io");
        assert!(crd.spec.versions.iter().all(|v| v.subresources.is_none()));
    }
}

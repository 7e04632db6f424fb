//! The committed CRD YAML is exactly what the types generate, and the schemas are fully structural.

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    for crd in promotion_api::crds() {
        let name = crd.metadata.name.clone().expect("generated CRDs are named");
        let path = dir.join(format!("{name}.yaml"));
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask crdgen`)", path.display()));
        let generated = promotion_api::crd_yaml(&crd).expect("CRDs serialize");
        assert!(
            committed == generated,
            "{} is stale: run `cargo xtask crdgen` and commit the result",
            path.display()
        );
    }
}

#[test]
fn schemas_do_not_preserve_unknown_fields() {
    for crd in promotion_api::crds() {
        let json = serde_json::to_string(&crd).expect("CRDs serialize");
        assert!(
            !json.contains("x-kubernetes-preserve-unknown-fields"),
            "{:?} has a field with no schema",
            crd.metadata.name
        );
    }
}

#[test]
fn the_field_reference_matches_the_types() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/crd-reference.md");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = promotion_api::reference::markdown(&promotion_api::crds());
    assert!(
        committed == generated,
        "{} is stale: run `cargo xtask crdgen`",
        path.display()
    );
}

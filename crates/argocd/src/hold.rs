//! The hold on an Application: which tracker's PR its environment runs, kept in
//! the annotation [`HELD_BY_ANNOTATION`] and written only with the resourceVersion
//! that was read, so two controllers (or two replicas) never both win it.

use kube::api::DynamicObject;
use promotion_core::ports::{HELD_BY_ANNOTATION, Hold};
use serde_json::{Value, json};

/// The holder the object's annotation names.
pub(crate) fn holder_of(obj: &DynamicObject) -> Option<String> {
    obj.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(HELD_BY_ANNOTATION))
        .filter(|h| !h.trim().is_empty())
        .cloned()
}

/// What taking the hold needs: nothing (already ours), a write, or nothing because someone else has it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Take {
    /// `holder` has it already.
    Ours,
    /// Write this merge patch.
    Write(Value),
    /// Someone else has it.
    Taken(String),
}

/// Decides how `holder` takes the hold of `obj`, breaking it only from `breaking`.
pub(crate) fn take(obj: &DynamicObject, holder: &str, breaking: Option<&str>) -> Take {
    match holder_of(obj) {
        Some(h) if h == holder => Take::Ours,
        Some(h) if Some(h.as_str()) != breaking => Take::Taken(h),
        _ => Take::Write(annotate(obj, Value::String(holder.to_string()))),
    }
}

/// The patch that removes `holder`'s hold, when it has it.
pub(crate) fn give_up(obj: &DynamicObject, holder: &str) -> Option<Value> {
    (holder_of(obj).as_deref() == Some(holder)).then(|| annotate(obj, Value::Null))
}

/// What the result of a successful take means to the caller.
pub(crate) fn outcome(take: &Take) -> Option<Hold> {
    match take {
        Take::Ours => Some(Hold::Acquired),
        Take::Taken(h) => Some(Hold::HeldBy(h.clone())),
        Take::Write(_) => None,
    }
}

fn annotate(obj: &DynamicObject, value: Value) -> Value {
    let mut metadata = json!({"annotations": {HELD_BY_ANNOTATION: value}});
    if let Some(rv) = &obj.metadata.resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({"metadata": metadata})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(holder: Option<&str>) -> DynamicObject {
        let mut v = json!({"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
            "metadata": {"name": "a", "resourceVersion": "7"}});
        if let Some(h) = holder {
            v["metadata"]["annotations"] = json!({HELD_BY_ANNOTATION: h});
        }
        serde_json::from_value(v).expect("object")
    }

    #[test]
    fn takes_a_free_hold_with_the_version_read() {
        let Take::Write(patch) = take(&app(None), "ns/a/1", None) else {
            panic!("expected a write");
        };
        assert_eq!(patch["metadata"]["resourceVersion"], "7");
        assert_eq!(
            patch["metadata"]["annotations"][HELD_BY_ANNOTATION],
            "ns/a/1"
        );
    }

    #[test]
    fn keeps_anothers_hold_unless_breaking_exactly_it() {
        assert_eq!(
            take(&app(Some("ns/b/2")), "ns/a/1", None),
            Take::Taken("ns/b/2".into())
        );
        assert_eq!(
            take(&app(Some("ns/b/2")), "ns/a/1", Some("ns/c/3")),
            Take::Taken("ns/b/2".into())
        );
        assert!(matches!(
            take(&app(Some("ns/b/2")), "ns/a/1", Some("ns/b/2")),
            Take::Write(_)
        ));
        assert_eq!(take(&app(Some("ns/a/1")), "ns/a/1", None), Take::Ours);
    }

    #[test]
    fn releases_only_its_own_hold() {
        assert!(give_up(&app(Some("ns/b/2")), "ns/a/1").is_none());
        let patch = give_up(&app(Some("ns/a/1")), "ns/a/1").expect("patch");
        assert!(patch["metadata"]["annotations"][HELD_BY_ANNOTATION].is_null());
    }
}

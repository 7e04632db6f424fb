//! Decides the one write that promotes an Application: a JSON merge patch of
//! the target revision, plus, when asked, a sync operation and a refresh.
//!
//! The patch carries the resourceVersion that was read, so it applies only to
//! the object whose opt-in and sources were checked (409 otherwise).

use crate::model::{AppData, SourceView};
use crate::options::{PROMOTE_SOURCE, PromoteOptions, SourceSelector};
use kube::api::DynamicObject;
use promotion_core::ports::{PROMOTED_ANNOTATION, PromotionRequest};
use serde_json::{Map, Value, json};

/// Who Argo CD shows as having started the sync operation.
pub(crate) const INITIATED_BY: &str = "promotion-controller";
/// Argo CD re-reads the app's sources when it sees this annotation, then removes it.
pub(crate) const REFRESH_ANNOTATION: &str = "argocd.argoproj.io/refresh";

/// What a promotion has to do.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Plan {
    /// The app already targets the revision: no write.
    AlreadyThere,
    /// Send this merge patch.
    Patch(Value),
}

/// Why the app cannot be promoted as it is.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum PlanError {
    /// An empty revision would mean HEAD to Argo CD: never what a promotion means.
    #[error("the revision to promote to is empty")]
    EmptyRevision,
    /// Neither `spec.source` nor `spec.sources`.
    #[error("it has neither spec.source nor spec.sources")]
    NoSource,
    /// `spec.sources` (or one of its elements) is not what Argo CD writes.
    #[error("its spec.sources is malformed: {0}")]
    Malformed(String),
    /// Several sources and nothing says which one moves.
    #[error(
        "it has {0} sources and none is chosen: set the annotation {PROMOTE_SOURCE} on it to a source name or 0-based index"
    )]
    AmbiguousSource(usize),
    /// The chosen source does not exist.
    #[error("it has no {0}")]
    NoSuchSource(SourceSelector),
    /// Argo CD has not finished the last operation; writing another would replace it.
    #[error("a sync operation is still in progress")]
    OperationInProgress,
}

/// The write that points the app at `req.revision`, if one is needed.
pub(crate) fn plan(
    obj: &DynamicObject,
    req: &PromotionRequest,
    opts: &PromoteOptions,
) -> Result<Plan, PlanError> {
    if req.revision.trim().is_empty() {
        return Err(PlanError::EmptyRevision);
    }
    let data = AppData::from_value(&obj.data);
    let (current, spec_patch, sync) = match raw_sources(obj)? {
        Some(sources) => multi_source(obj, sources, &req.revision, opts)?,
        None => single_source(&data, &req.revision)?,
    };
    if current.as_deref() == Some(req.revision.as_str()) {
        return Ok(Plan::AlreadyThere);
    }
    if opts.sync && data.operation.is_some() {
        return Err(PlanError::OperationInProgress);
    }

    let mut metadata = Map::new();
    if let Some(rv) = &obj.metadata.resource_version {
        metadata.insert("resourceVersion".into(), json!(rv));
    }
    let mut annotations = Map::new();
    if opts.refresh {
        annotations.insert(REFRESH_ANNOTATION.into(), json!("normal"));
    }
    if !req.tracker.is_empty() {
        // In the same write as the revision, so a crash before the record was saved
        // leaves proof that this tracker moved the app.
        annotations.insert(
            PROMOTED_ANNOTATION.into(),
            json!(format!("{}@{}", req.tracker, req.revision)),
        );
    }
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    let mut patch = json!({ "metadata": metadata, "spec": spec_patch });
    if opts.sync {
        patch["operation"] = json!({
            "initiatedBy": { "username": INITIATED_BY, "automated": false },
            "info": [{
                "name": "Reason",
                "value": format!(
                    "promoted by policy {}/{} to {}",
                    req.policy_namespace, req.policy, req.target_environment
                ),
            }],
            "sync": sync,
        });
    }
    Ok(Plan::Patch(patch))
}

/// `spec.sources` when the app is multi-source (Argo CD ignores `spec.source` then).
fn raw_sources(obj: &DynamicObject) -> Result<Option<&Vec<Value>>, PlanError> {
    match obj.data.pointer("/spec/sources") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(list)) if list.is_empty() => Ok(None),
        Some(Value::Array(list)) => Ok(Some(list)),
        Some(_) => Err(PlanError::Malformed("not a list".into())),
    }
}

type Parts = (Option<String>, Value, Value);

fn single_source(data: &AppData, revision: &str) -> Result<Parts, PlanError> {
    let source = data
        .spec
        .as_ref()
        .and_then(|s| s.source.as_ref())
        .ok_or(PlanError::NoSource)?;
    Ok((
        source.target_revision.clone(),
        json!({ "source": { "targetRevision": revision } }),
        json!({ "revision": revision }),
    ))
}

fn multi_source(
    obj: &DynamicObject,
    sources: &[Value],
    revision: &str,
    opts: &PromoteOptions,
) -> Result<Parts, PlanError> {
    let index = chosen_source(obj, sources, opts)?;
    let current = SourceView::from_value(&sources[index]).target_revision;
    // A merge patch replaces a list whole: send every source back as read,
    // with only the chosen one's revision changed.
    let mut updated = sources.to_vec();
    let Some(chosen) = updated[index].as_object_mut() else {
        return Err(PlanError::Malformed(format!(
            "source at index {index} is not an object"
        )));
    };
    chosen.insert("targetRevision".into(), json!(revision));
    // Sync revisions are positional, one per source; naming them all keeps the
    // others where they are on every Argo CD version.
    let revisions: Vec<String> = updated
        .iter()
        .map(|s| {
            SourceView::from_value(s)
                .target_revision
                .filter(|r| !r.is_empty())
                .unwrap_or_else(|| "HEAD".into())
        })
        .collect();
    Ok((
        current,
        json!({ "sources": updated }),
        json!({ "revisions": revisions }),
    ))
}

/// The index of the source to move: the app's annotation, else the option,
/// else the only source.
fn chosen_source(
    obj: &DynamicObject,
    sources: &[Value],
    opts: &PromoteOptions,
) -> Result<usize, PlanError> {
    let from_app = obj
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PROMOTE_SOURCE))
        .filter(|v| !v.trim().is_empty())
        .map(|v| v.parse::<SourceSelector>().unwrap_or_else(|e| match e {}));
    match from_app.or_else(|| opts.source.clone()) {
        Some(SourceSelector::Index(i)) if i < sources.len() => Ok(i),
        Some(SourceSelector::Name(name)) => sources
            .iter()
            .position(|s| SourceView::from_value(s).name.as_deref() == Some(name.as_str()))
            .ok_or(PlanError::NoSuchSource(SourceSelector::Name(name))),
        Some(selector) => Err(PlanError::NoSuchSource(selector)),
        None if sources.len() == 1 => Ok(0),
        None => Err(PlanError::AmbiguousSource(sources.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(v: Value) -> DynamicObject {
        let mut obj: DynamicObject = serde_json::from_value(v).unwrap_or_else(|e| panic!("{e}"));
        obj.metadata.resource_version = Some("7".into());
        obj
    }

    fn req(rev: &str) -> PromotionRequest {
        PromotionRequest {
            policy_namespace: "team-a".into(),
            policy: "to-prod".into(),
            target_environment: "prod".into(),
            tracker: String::new(),
            revision: rev.into(),
        }
    }

    fn patch_of(p: Result<Plan, PlanError>) -> Value {
        match p {
            Ok(Plan::Patch(v)) => v,
            other => panic!("expected a patch, got {other:?}"),
        }
    }

    #[test]
    fn single_source_patch_is_minimal() {
        let obj = app(json!({"spec": {"source": {"repoURL": "r", "targetRevision": "old"}}}));
        let p = patch_of(plan(&obj, &req("new"), &PromoteOptions::default()));
        assert_eq!(
            p,
            json!({"metadata": {"resourceVersion": "7"}, "spec": {"source": {"targetRevision": "new"}}})
        );
    }

    #[test]
    fn sync_and_refresh_go_in_the_same_patch() {
        let obj = app(json!({"spec": {"source": {"targetRevision": "old"}}}));
        let opts = PromoteOptions {
            sync: true,
            refresh: true,
            ..PromoteOptions::default()
        };
        let p = patch_of(plan(&obj, &req("new"), &opts));
        assert_eq!(p["operation"]["sync"], json!({"revision": "new"}));
        assert_eq!(p["operation"]["initiatedBy"]["automated"], json!(false));
        assert_eq!(p["metadata"]["annotations"][REFRESH_ANNOTATION], "normal");
    }

    #[test]
    fn already_there_needs_no_write_even_with_an_operation_running() {
        let obj = app(json!({"spec": {"source": {"targetRevision": "new"}}, "operation": {}}));
        let opts = PromoteOptions {
            sync: true,
            ..PromoteOptions::default()
        };
        assert_eq!(plan(&obj, &req("new"), &opts), Ok(Plan::AlreadyThere));
        assert_eq!(
            plan(&obj, &req("newer"), &opts),
            Err(PlanError::OperationInProgress)
        );
    }

    #[test]
    fn multi_source_moves_the_chosen_source_only() {
        let obj = app(json!({
            "metadata": {"annotations": {PROMOTE_SOURCE: "app"}},
            "spec": {"sources": [
                {"repoURL": "charts", "chart": "c", "targetRevision": "1.2.0", "helm": {"x": 1}},
                {"repoURL": "git", "name": "app", "targetRevision": "old"},
            ]}
        }));
        let opts = PromoteOptions {
            sync: true,
            ..PromoteOptions::default()
        };
        let p = patch_of(plan(&obj, &req("new"), &opts));
        assert_eq!(
            p["spec"]["sources"],
            json!([
                {"repoURL": "charts", "chart": "c", "targetRevision": "1.2.0", "helm": {"x": 1}},
                {"repoURL": "git", "name": "app", "targetRevision": "new"},
            ])
        );
        assert_eq!(p["operation"]["sync"]["revisions"], json!(["1.2.0", "new"]));
    }

    #[test]
    fn multi_source_needs_a_choice() {
        let obj =
            app(json!({"spec": {"sources": [{"targetRevision": "a"}, {"targetRevision": "b"}]}}));
        let opts = PromoteOptions::default();
        assert_eq!(
            plan(&obj, &req("new"), &opts),
            Err(PlanError::AmbiguousSource(2))
        );
        let by_index = PromoteOptions {
            source: Some(SourceSelector::Index(1)),
            ..opts.clone()
        };
        let p = patch_of(plan(&obj, &req("new"), &by_index));
        assert_eq!(p["spec"]["sources"][1]["targetRevision"], "new");
        let missing = PromoteOptions {
            source: Some(SourceSelector::Index(5)),
            ..opts
        };
        assert_eq!(
            plan(&obj, &req("new"), &missing),
            Err(PlanError::NoSuchSource(SourceSelector::Index(5)))
        );
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let opts = PromoteOptions::default();
        let fine = app(json!({"spec": {"source": {"targetRevision": "a"}}}));
        assert_eq!(plan(&fine, &req(" "), &opts), Err(PlanError::EmptyRevision));
        let none = app(json!({"spec": {}}));
        assert_eq!(plan(&none, &req("x"), &opts), Err(PlanError::NoSource));
        let odd = app(json!({"spec": {"sources": "x"}}));
        assert!(matches!(
            plan(&odd, &req("x"), &opts),
            Err(PlanError::Malformed(_))
        ));
    }
}

//! A lenient read model of the few Application fields the adapter uses.
//!
//! Every field is optional and a field of an unexpected shape reads as absent:
//! Argo CD omits most of them at one time or another (a new app has no status,
//! a multi-source app no `spec.source`), and a surprise in a third-party object
//! must never fail a read. Writes never go through this model, so nothing it
//! leaves out can be lost.

use serde::Deserialize;
use serde::de::{DeserializeOwned, Deserializer};
use serde_json::Value;

/// The parts of an Application other than its metadata.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AppData {
    #[serde(deserialize_with = "lenient")]
    pub spec: Option<AppSpec>,
    #[serde(deserialize_with = "lenient")]
    pub status: Option<AppStatusView>,
    /// The pending or running operation, kept raw: only its presence matters.
    #[serde(deserialize_with = "lenient")]
    pub operation: Option<Value>,
}

impl AppData {
    /// Reads the data of a DynamicObject; anything unreadable is left empty.
    pub fn from_value(data: &Value) -> Self {
        serde_json::from_value(data.clone()).unwrap_or_default()
    }
}

/// `spec`: where the application's manifests come from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AppSpec {
    #[serde(deserialize_with = "lenient")]
    pub source: Option<SourceView>,
    /// Kept raw: a merge patch replaces a list whole, so every element is
    /// written back exactly as read.
    #[serde(deserialize_with = "lenient")]
    pub sources: Option<Vec<Value>>,
}

/// One source of an application.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SourceView {
    #[serde(deserialize_with = "lenient")]
    pub target_revision: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
}

impl SourceView {
    /// Reads one raw element of `spec.sources`.
    pub fn from_value(source: &Value) -> Self {
        serde_json::from_value(source.clone()).unwrap_or_default()
    }
}

/// `status`: what Argo CD last observed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct AppStatusView {
    #[serde(deserialize_with = "lenient")]
    pub sync: Option<SyncView>,
    #[serde(deserialize_with = "lenient")]
    pub health: Option<HealthView>,
    #[serde(deserialize_with = "lenient")]
    pub operation_state: Option<OperationStateView>,
}

/// `status.sync`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct SyncView {
    #[serde(deserialize_with = "lenient")]
    pub status: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub revision: Option<String>,
    #[serde(deserialize_with = "lenient")]
    pub revisions: Option<Vec<Value>>,
}

/// `status.health`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct HealthView {
    #[serde(deserialize_with = "lenient")]
    pub status: Option<String>,
}

/// `status.operationState`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub(crate) struct OperationStateView {
    #[serde(deserialize_with = "lenient")]
    pub phase: Option<String>,
}

/// A value that does not have the expected shape (or is null) reads as `None`.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    match Value::deserialize(deserializer)? {
        Value::Null => Ok(None),
        value => Ok(serde_json::from_value(value).ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn odd_shapes_read_as_absent() {
        let data = AppData::from_value(&json!({
            "spec": {"source": "not an object", "sources": {"a": 1}},
            "status": {"sync": {"status": 7, "revision": ["x"]}, "health": null},
            "extra": true,
        }));
        let spec = data.spec.unwrap_or_default();
        assert!(spec.source.is_none());
        assert!(spec.sources.is_none());
        let sync = data.status.and_then(|s| s.sync).unwrap_or_default();
        assert!(sync.status.is_none());
        assert!(sync.revision.is_none());
    }

    #[test]
    fn null_reads_as_absent() {
        let data = AppData::from_value(&json!({"operation": null, "status": null}));
        assert!(data.operation.is_none() && data.status.is_none());
    }

    #[test]
    fn not_an_object_reads_as_empty() {
        let data = AppData::from_value(&json!("nonsense"));
        assert!(data.spec.is_none() && data.status.is_none() && data.operation.is_none());
    }
}

//! What the plugin reads of trackers and policies, parsed leniently.
//!
//! The plugin may be older or newer than the controller that writes the status,
//! so every field is optional, phases and states are plain strings, and a field
//! whose shape is unexpected is dropped instead of failing the whole object.

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

/// The annotation that approves a hop: `<target environment>@<head sha>`.
pub const APPROVE_ANNOTATION: &str = "promotion.io/approve";
/// The annotation naming the approver, checked by the admission policy.
pub const APPROVED_BY_ANNOTATION: &str = "promotion.io/approved-by";
/// The annotation that restarts a failed gate whenever its value changes.
pub const RETRY_ANNOTATION: &str = "promotion.io/retry";

/// Deserializes a field if it has the expected shape, else `None`.
fn lenient<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    Ok(serde_json::from_value(value).ok())
}

/// Deserializes a list keeping only the items that have the expected shape.
fn lenient_list<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned,
{
    let value = Value::deserialize(d)?;
    Ok(match value {
        Value::Array(items) => items
            .into_iter()
            .filter_map(|v| serde_json::from_value(v).ok())
            .collect(),
        _ => Vec::new(),
    })
}

/// Object metadata, the parts the plugin shows.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Meta {
    /// The object's name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    /// The object's namespace.
    #[serde(deserialize_with = "lenient")]
    pub namespace: Option<String>,
    /// The object's uid.
    #[serde(deserialize_with = "lenient")]
    pub uid: Option<String>,
    /// metadata.generation.
    #[serde(deserialize_with = "lenient")]
    pub generation: Option<i64>,
    /// When the object was created.
    #[serde(deserialize_with = "lenient")]
    pub creation_timestamp: Option<DateTime<Utc>>,
    /// Labels.
    #[serde(deserialize_with = "lenient")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations.
    #[serde(deserialize_with = "lenient")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// A PullRequestTracker as the plugin sees it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Tracker {
    /// Metadata.
    #[serde(deserialize_with = "lenient")]
    pub metadata: Option<Meta>,
    /// Spec.
    #[serde(deserialize_with = "lenient")]
    pub spec: Option<TrackerSpec>,
    /// Status, as the controller wrote it.
    #[serde(deserialize_with = "lenient")]
    pub status: Option<TrackerStatus>,
}

/// The tracker's spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TrackerSpec {
    /// owner/name.
    #[serde(deserialize_with = "lenient")]
    pub repository: Option<Repository>,
    /// The PR number.
    #[serde(deserialize_with = "lenient")]
    pub number: Option<i64>,
    /// The commit the PR is at.
    #[serde(deserialize_with = "lenient")]
    pub head_sha: Option<String>,
    /// The entry environment.
    #[serde(deserialize_with = "lenient")]
    pub environment: Option<String>,
    /// The entry environment's application.
    #[serde(deserialize_with = "lenient")]
    pub application: Option<AppRef>,
    /// Whether the PR is closed.
    #[serde(deserialize_with = "lenient")]
    pub closed: Option<bool>,
}

/// A GitHub repository.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Repository {
    /// Owner.
    #[serde(deserialize_with = "lenient")]
    pub owner: Option<String>,
    /// Name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
}

/// Where an Argo CD Application lives.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct AppRef {
    /// The cluster.
    #[serde(deserialize_with = "lenient")]
    pub cluster: Option<String>,
    /// The Application's namespace.
    #[serde(deserialize_with = "lenient")]
    pub namespace: Option<String>,
    /// The Application's name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
}

/// The tracker's status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TrackerStatus {
    /// The generation the status describes.
    #[serde(deserialize_with = "lenient")]
    pub observed_generation: Option<i64>,
    /// The phase, as written (phases unknown to this plugin are kept).
    #[serde(deserialize_with = "lenient")]
    pub phase: Option<String>,
    /// The environment the PR is in now.
    #[serde(deserialize_with = "lenient")]
    pub current_environment: Option<String>,
    /// The head SHA the status is about.
    #[serde(deserialize_with = "lenient")]
    pub head_sha: Option<String>,
    /// The controller's one line for humans.
    #[serde(deserialize_with = "lenient")]
    pub message: Option<String>,
    /// The current environment's application.
    #[serde(deserialize_with = "lenient")]
    pub application: Option<AppRef>,
    /// The policy gating the current environment.
    #[serde(deserialize_with = "lenient")]
    pub policy: Option<PolicyRef>,
    /// When the current gate started.
    #[serde(deserialize_with = "lenient")]
    pub gate_started_at: Option<DateTime<Utc>>,
    /// The current gate's runs.
    #[serde(deserialize_with = "lenient_list")]
    pub test_runs: Vec<TestRun>,
    /// The audit trail.
    #[serde(deserialize_with = "lenient_list")]
    pub promotions: Vec<Record>,
    /// Conditions.
    #[serde(deserialize_with = "lenient_list")]
    pub conditions: Vec<Condition>,
    /// The queue for the target environment, when Queued.
    #[serde(deserialize_with = "lenient")]
    pub queue: Option<Queue>,
}

/// The policy gating the current environment.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct PolicyRef {
    /// Its name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
}

/// One gate test run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct TestRun {
    /// The test's name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    /// The CI system.
    #[serde(deserialize_with = "lenient")]
    pub provider: Option<String>,
    /// The job.
    #[serde(deserialize_with = "lenient")]
    pub job: Option<String>,
    /// The run's link.
    #[serde(deserialize_with = "lenient")]
    pub url: Option<String>,
    /// Pending, Running, Passed, Failed, Cancelled, TimedOut, or newer.
    #[serde(deserialize_with = "lenient")]
    pub state: Option<String>,
    /// Whether it blocks.
    #[serde(deserialize_with = "lenient")]
    pub required: Option<bool>,
    /// When it was triggered.
    #[serde(deserialize_with = "lenient")]
    pub started_at: Option<DateTime<Utc>>,
    /// When it finished.
    #[serde(deserialize_with = "lenient")]
    pub finished_at: Option<DateTime<Utc>>,
    /// Why it is in its state.
    #[serde(deserialize_with = "lenient")]
    pub message: Option<String>,
    /// Re-arms, when the controller records them.
    #[serde(deserialize_with = "lenient_list")]
    pub attempts: Vec<Attempt>,
}

/// One re-arm of a test run.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Attempt {
    /// When it was triggered.
    #[serde(deserialize_with = "lenient")]
    pub triggered_at: Option<DateTime<Utc>>,
    /// How it ended.
    #[serde(deserialize_with = "lenient")]
    pub outcome: Option<String>,
}

/// One PromotionRecord.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Record {
    /// From.
    #[serde(deserialize_with = "lenient")]
    pub source: Option<String>,
    /// To.
    #[serde(deserialize_with = "lenient")]
    pub target: Option<String>,
    /// The gating policy.
    #[serde(deserialize_with = "lenient")]
    pub policy: Option<String>,
    /// The promoted revision.
    #[serde(deserialize_with = "lenient")]
    pub revision: Option<String>,
    /// When.
    #[serde(deserialize_with = "lenient")]
    pub promoted_at: Option<DateTime<Utc>>,
    /// Who.
    #[serde(deserialize_with = "lenient")]
    pub promoted_by: Option<String>,
    /// The runs that gated it.
    #[serde(deserialize_with = "lenient_list")]
    pub test_runs: Vec<TestRun>,
}

/// A status condition.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct Condition {
    /// Its type.
    #[serde(rename = "type", deserialize_with = "lenient")]
    pub type_: Option<String>,
    /// True, False, Unknown.
    #[serde(deserialize_with = "lenient")]
    pub status: Option<String>,
    /// Machine-readable reason.
    #[serde(deserialize_with = "lenient")]
    pub reason: Option<String>,
    /// For humans.
    #[serde(deserialize_with = "lenient")]
    pub message: Option<String>,
    /// When it last changed.
    #[serde(deserialize_with = "lenient")]
    pub last_transition_time: Option<DateTime<Utc>>,
}

/// `status.queue`: where a Queued tracker stands in line.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Queue {
    /// The target environment.
    #[serde(deserialize_with = "lenient")]
    pub environment: Option<String>,
    /// The target environment's application.
    #[serde(deserialize_with = "lenient")]
    pub application: Option<AppRef>,
    /// 1 = next in line.
    #[serde(deserialize_with = "lenient")]
    pub position: Option<i64>,
    /// "namespace/name" of the tracker holding the environment.
    #[serde(deserialize_with = "lenient")]
    pub holder: Option<String>,
    /// When it joined the queue.
    #[serde(deserialize_with = "lenient")]
    pub since: Option<DateTime<Utc>>,
}

/// A PromotionPolicy as the plugin sees it.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct Policy {
    /// Metadata.
    #[serde(deserialize_with = "lenient")]
    pub metadata: Option<Meta>,
    /// Spec.
    #[serde(deserialize_with = "lenient")]
    pub spec: Option<PolicySpec>,
    /// Status.
    #[serde(deserialize_with = "lenient")]
    pub status: Option<PolicyStatus>,
}

/// The policy's spec.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase", default)]
pub struct PolicySpec {
    /// Where the gate runs.
    #[serde(deserialize_with = "lenient")]
    pub source_environment: Option<String>,
    /// Where the PR goes.
    #[serde(deserialize_with = "lenient")]
    pub target_environment: Option<String>,
    /// False: a person approves each promotion.
    #[serde(deserialize_with = "lenient")]
    pub auto_promote: Option<bool>,
    /// The gate tests.
    #[serde(deserialize_with = "lenient_list")]
    pub external_tests: Vec<ExternalTest>,
    /// The label selector, kept as written.
    #[serde(deserialize_with = "lenient")]
    pub selector: Option<Value>,
    /// The promotion target.
    #[serde(deserialize_with = "lenient")]
    pub promotion: Option<Value>,
}

/// One gate test of a policy.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct ExternalTest {
    /// Its name.
    #[serde(deserialize_with = "lenient")]
    pub name: Option<String>,
    /// The CI system.
    #[serde(deserialize_with = "lenient")]
    pub provider: Option<String>,
    /// Required (default true).
    #[serde(deserialize_with = "lenient")]
    pub required: Option<bool>,
}

/// The policy's status.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(default)]
pub struct PolicyStatus {
    /// Valid, Ready.
    #[serde(deserialize_with = "lenient_list")]
    pub conditions: Vec<Condition>,
}

impl Tracker {
    /// Parses any JSON object; never fails, unknown shapes become `None`.
    pub fn from_value(value: Value) -> Self {
        serde_json::from_value(value).unwrap_or_default()
    }

    /// The tracker's name.
    pub fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or("")
    }

    /// The tracker's namespace.
    pub fn namespace(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .unwrap_or("")
    }

    /// An annotation's value.
    pub fn annotation(&self, key: &str) -> Option<&str> {
        self.metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get(key))
            .map(String::as_str)
    }

    /// The tracker's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.metadata
            .as_ref()
            .and_then(|m| m.labels.clone())
            .unwrap_or_default()
    }

    /// `owner/repo#N`, or the tracker's name when the spec is unreadable.
    pub fn pr(&self) -> String {
        let spec = self.spec.clone().unwrap_or_default();
        let repo = spec.repository.unwrap_or_default();
        match (repo.owner, repo.name, spec.number) {
            (Some(o), Some(n), Some(num)) => format!("{o}/{n}#{num}"),
            (_, _, Some(num)) => format!("#{num}"),
            _ => self.name().to_string(),
        }
    }

    /// The PR number.
    pub fn number(&self) -> Option<i64> {
        self.spec.as_ref().and_then(|s| s.number)
    }

    /// The phase, "" before the controller wrote one.
    pub fn phase(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .unwrap_or("")
    }

    /// The environment the PR is in now (the entry environment before any status).
    pub fn environment(&self) -> &str {
        self.status
            .as_ref()
            .and_then(|s| s.current_environment.as_deref())
            .or_else(|| self.spec.as_ref().and_then(|s| s.environment.as_deref()))
            .unwrap_or("")
    }

    /// The spec's head SHA.
    pub fn head_sha(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.head_sha.as_deref())
            .unwrap_or("")
    }

    /// The status, or an empty one.
    pub fn status(&self) -> TrackerStatus {
        self.status.clone().unwrap_or_default()
    }

    /// When the tracker was created (the PR opened, as far as the cluster knows).
    pub fn created(&self) -> Option<DateTime<Utc>> {
        self.metadata.as_ref().and_then(|m| m.creation_timestamp)
    }
}

impl Policy {
    /// Parses any JSON object; never fails.
    pub fn from_value(value: Value) -> Self {
        serde_json::from_value(value).unwrap_or_default()
    }

    /// The policy's name.
    pub fn name(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.name.as_deref())
            .unwrap_or("")
    }

    /// The policy's namespace.
    pub fn namespace(&self) -> &str {
        self.metadata
            .as_ref()
            .and_then(|m| m.namespace.as_deref())
            .unwrap_or("")
    }

    /// The source environment.
    pub fn source(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.source_environment.as_deref())
            .unwrap_or("")
    }

    /// The target environment.
    pub fn target(&self) -> &str {
        self.spec
            .as_ref()
            .and_then(|s| s.target_environment.as_deref())
            .unwrap_or("")
    }

    /// Whether promotions need a person's approval.
    pub fn needs_approval(&self) -> bool {
        self.spec.as_ref().and_then(|s| s.auto_promote) == Some(false)
    }

    /// The selector as one stable line ("all trackers" when absent).
    pub fn selector_text(&self) -> String {
        match self.spec.as_ref().and_then(|s| s.selector.as_ref()) {
            None | Some(Value::Null) => "all trackers".into(),
            Some(Value::Object(o)) if o.is_empty() => "all trackers".into(),
            Some(sel) => selector_line(sel),
        }
    }

    /// Whether the selector matches these labels (no selector matches all).
    pub fn selects(&self, labels: &BTreeMap<String, String>) -> bool {
        let Some(sel) = self.spec.as_ref().and_then(|s| s.selector.as_ref()) else {
            return true;
        };
        let labels_ok = sel["matchLabels"]
            .as_object()
            .map(|m| {
                m.iter()
                    .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
            })
            .unwrap_or(true);
        let exprs_ok = sel["matchExpressions"]
            .as_array()
            .map(|exprs| {
                exprs.iter().all(|e| {
                    let key = e["key"].as_str().unwrap_or("");
                    let values: Vec<&str> = e["values"]
                        .as_array()
                        .map(|v| v.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    let have = labels.get(key).map(String::as_str);
                    match e["operator"].as_str().unwrap_or("") {
                        "In" => have.is_some_and(|h| values.contains(&h)),
                        "NotIn" => !have.is_some_and(|h| values.contains(&h)),
                        "Exists" => have.is_some(),
                        "DoesNotExist" => have.is_none(),
                        _ => false,
                    }
                })
            })
            .unwrap_or(true);
        labels_ok && exprs_ok
    }

    /// A condition of the policy by type.
    pub fn condition(&self, type_: &str) -> Option<Condition> {
        self.status
            .as_ref()?
            .conditions
            .iter()
            .find(|c| c.type_.as_deref() == Some(type_))
            .cloned()
    }
}

fn selector_line(sel: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(m) = sel["matchLabels"].as_object() {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or("")));
        }
    }
    if let Some(exprs) = sel["matchExpressions"].as_array() {
        for e in exprs {
            let values: Vec<&str> = e["values"]
                .as_array()
                .map(|v| v.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            parts.push(format!(
                "{} {} ({})",
                e["key"].as_str().unwrap_or(""),
                e["operator"].as_str().unwrap_or(""),
                values.join(",")
            ));
        }
    }
    if parts.is_empty() {
        "all trackers".into()
    } else {
        parts.join(",")
    }
}

/// A parsed approval annotation: which environment, at which SHA.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Approval {
    /// The environment approved.
    pub environment: String,
    /// The SHA (or prefix) approved; absent in the older format.
    pub sha: Option<String>,
    /// Who approved, from approved-by.
    pub by: Option<String>,
}

impl Approval {
    /// Reads the approval annotations of a tracker, if any.
    pub fn of(tracker: &Tracker) -> Option<Self> {
        let raw = tracker.annotation(APPROVE_ANNOTATION)?;
        let (environment, sha) = match raw.split_once('@') {
            Some((env, sha)) => (env.to_string(), Some(sha.to_string())),
            None => (raw.to_string(), None),
        };
        Some(Self {
            environment,
            sha,
            by: tracker
                .annotation(APPROVED_BY_ANNOTATION)
                .map(str::to_string),
        })
    }

    /// Whether it approves `environment` at `head_sha` (a prefix of >= 7 characters counts).
    pub fn covers(&self, environment: &str, head_sha: &str) -> bool {
        self.environment == environment
            && match &self.sha {
                None => true,
                Some(sha) => {
                    sha.len() >= 7
                        && head_sha
                            .to_ascii_lowercase()
                            .starts_with(&sha.to_ascii_lowercase())
                }
            }
    }
}

/// The first 7 characters of a SHA.
pub fn short(sha: &str) -> &str {
    sha.get(..7).unwrap_or(sha)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_field_of_an_unexpected_shape_is_dropped_not_fatal() {
        let t = Tracker::from_value(json!({
            "metadata": {"name": "t", "namespace": "n"},
            "spec": {"number": "not a number", "headSha": "abcdef0"},
            "status": {"phase": "Teleporting", "testRuns": [{"name": "a", "state": 3}, "junk"],
                       "queue": {"position": 2, "holder": "n/other", "mystery": true}}
        }));
        assert_eq!(t.number(), None);
        assert_eq!(t.head_sha(), "abcdef0");
        assert_eq!(t.phase(), "Teleporting");
        let s = t.status();
        assert_eq!(s.test_runs.len(), 1);
        assert_eq!(s.test_runs[0].state, None);
        assert_eq!(s.queue.and_then(|q| q.position), Some(2));
    }

    #[test]
    fn an_approval_binds_an_environment_and_a_sha_prefix() {
        let t = Tracker::from_value(json!({"metadata": {"annotations": {
            "promotion.io/approve": "prod@3f2c9a1", "promotion.io/approved-by": "alice"}}}));
        let a = Approval::of(&t).expect("approval");
        assert!(a.covers("prod", "3f2c9a1b7e4d"));
        assert!(!a.covers("prod", "9e8d7c6b5a4f"));
        assert!(!a.covers("staging", "3f2c9a1b7e4d"));
        assert_eq!(a.by.as_deref(), Some("alice"));
    }
}

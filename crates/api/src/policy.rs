//! PromotionPolicy: one hop from a source environment to a target environment.

use crate::schema;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One hop, source -> target: the gate tests that must pass in the source
/// environment and the Argo CD application that is moved when they do.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promotion.io",
    version = "v1alpha1",
    kind = "PromotionPolicy",
    namespaced,
    status = "PromotionPolicyStatus",
    shortname = "pp",
    category = "promotion",
    doc = "One promotion hop: the gate tests run in sourceEnvironment and the Argo CD application of targetEnvironment that is promoted when they pass.",
    printcolumn(
        name = "Source",
        type_ = "string",
        json_path = ".spec.sourceEnvironment"
    ),
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".spec.targetEnvironment"
    ),
    printcolumn(name = "Tests", type_ = "string", json_path = ".status.tests"),
    printcolumn(
        name = "Auto-Promote",
        type_ = "boolean",
        json_path = ".spec.autoPromote"
    ),
    printcolumn(
        name = "Valid",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Valid\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new("self.sourceEnvironment != self.targetEnvironment").message("targetEnvironment must differ from sourceEnvironment"))]
#[serde(rename_all = "camelCase")]
pub struct PromotionPolicySpec {
    /// The environment whose gate tests this policy runs (where the PR is now).
    #[schemars(length(min = 1, max = 63))]
    pub source_environment: String,
    /// The environment the PR is promoted to when every required test passed.
    #[schemars(length(min = 1, max = 63))]
    pub target_environment: String,
    /// The gate: tests run in the team's CI, all in parallel.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    pub external_tests: Vec<ExternalTest>,
    /// Upper bound for the whole gate, from the first trigger (Go-style, e.g. "30m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Duration>")]
    pub timeout: Option<String>,
    /// When false the PR waits in AwaitingApproval until the annotation
    /// `promotion.io/approve: <targetEnvironment>@<headSha>` is set on its tracker.
    #[serde(default = "default_true")]
    pub auto_promote: bool,
    /// A policy without a required test promotes with no gate at all: it is invalid
    /// unless this says so explicitly.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_ungated: bool,
    /// How long a PR may take to be Synced and Healthy at its revision in the target
    /// environment after this policy promoted it (Go-style, e.g. "15m"); the
    /// controller's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Duration>")]
    pub deploy_timeout: Option<String>,
    /// What promotion changes: the target environment's Argo CD application and the PR label.
    pub promotion: PromotionTarget,
    /// Which trackers this policy governs; all trackers in the namespace when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// One gate test, run in an external CI system.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalTest {
    /// Unique within the policy; used in status, commit statuses and events.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Which CI system runs the test.
    pub provider: Provider,
    /// Jenkins job path, GitHub Actions workflow file, or GitLab project path.
    #[schemars(length(max = 512))]
    #[x_kube(validation = Rule::new("self.trim().size() > 0").message("job must not be empty"))]
    pub job: String,
    /// Branch or tag to run on, where the provider needs one (GitHub Actions, GitLab).
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub git_ref: Option<String>,
    /// Job parameters; values may use variables such as `${PR_NUMBER}` or `${HEAD_SHA}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 64))]
    pub parameters: BTreeMap<String, String>,
    /// A failing optional test is reported but never blocks the promotion.
    #[serde(default = "default_true")]
    pub required: bool,
    /// Upper bound for this test from its trigger (Go-style, e.g. "10m").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Duration>")]
    pub timeout: Option<String>,
    /// Name of the configured CI connection; the provider's default connection when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub connection: Option<String>,
}

/// The CI systems a gate test can run in.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, JsonSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Provider {
    /// Jenkins, through its remote access API.
    Jenkins,
    /// GitHub Actions workflow_dispatch.
    GithubActions,
    /// GitLab CI pipelines.
    Gitlab,
}

/// What a promotion changes in the target environment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionTarget {
    /// The target environment's Argo CD application; names may use variables.
    pub application: ApplicationRef,
    /// The label added to the pull request on GitHub once promoted; may use variables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 100))]
    pub github_label: Option<String>,
}

/// Where an Argo CD Application lives.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApplicationRef {
    /// The cluster that runs Argo CD; `in-cluster` is the controller's own cluster.
    #[serde(default = "default_cluster")]
    #[schemars(length(min = 1, max = 253))]
    pub cluster: String,
    /// The namespace of the Application resource.
    #[serde(default = "default_argocd_namespace")]
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The Application's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// What the controller observed about a policy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionPolicyStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Valid (the policy can be used) and Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// The gate tests by name, optional ones marked, for `kubectl get pp` (a
    /// printer column shows only the first match of a list path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tests: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_cluster() -> String {
    "in-cluster".into()
}

fn default_argocd_namespace() -> String {
    "argocd".into()
}

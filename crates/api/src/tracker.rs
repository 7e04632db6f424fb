//! PullRequestTracker: one pull request on its way through the environments.

use crate::{ApplicationRef, ExternalTest, Provider, schema};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A pull request, the environment it enters at, and that environment's Argo CD application.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "promotion.io",
    version = "v1alpha1",
    kind = "PullRequestTracker",
    namespaced,
    status = "PullRequestTrackerStatus",
    shortname = "prt",
    category = "promotion",
    doc = "A pull request carried through the environments: deployed, gate-tested, promoted, hop after hop.",
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.repository.name"
    ),
    printcolumn(name = "PR", type_ = "integer", json_path = ".spec.number"),
    printcolumn(
        name = "Environment",
        type_ = "string",
        json_path = ".status.currentEnvironment"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Queue",
        type_ = "integer",
        description = "Position in the queue for the target environment (1: next in line)",
        json_path = ".status.queue.position"
    ),
    printcolumn(
        name = "Held-By",
        type_ = "string",
        priority = 1,
        description = "The tracker holding the environment this one waits for",
        json_path = ".status.queue.holder"
    ),
    printcolumn(
        name = "Message",
        type_ = "string",
        priority = 1,
        json_path = ".status.message"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestTrackerSpec {
    /// The GitHub repository of the pull request.
    pub repository: Repository,
    /// The pull request number.
    #[x_kube(validation = Rule::new("self > 0").message("number must be a positive pull request number"))]
    pub number: i64,
    /// The commit the PR is at; a new value restarts the flow at the entry environment.
    #[schemars(length(max = 40))]
    #[x_kube(validation = Rule::new("self.matches('^[0-9a-fA-F]{7,40}$')").message("headSha must be a 7 to 40 character hexadecimal commit SHA"))]
    pub head_sha: String,
    /// The environment the PR enters at (the first hop's source).
    #[schemars(length(min = 1, max = 63))]
    pub environment: String,
    /// The entry environment's Argo CD application, which deploys the PR.
    pub application: ApplicationRef,
    /// Set when the pull request is closed: running tests are cancelled and the tracker ends in Closed.
    #[serde(default)]
    pub closed: bool,
}

/// A GitHub repository.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repository {
    /// The owner (user or organisation).
    #[schemars(length(min = 1, max = 100))]
    pub owner: String,
    /// The repository name.
    #[schemars(length(min = 1, max = 100))]
    pub name: String,
}

/// Where a PR is and why.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PullRequestTrackerStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The phase of the PR in its current environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// The environment the PR is deployed in now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_environment: Option<String>,
    /// The head SHA this status is about; differs from spec.headSha until a new push is picked up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
    /// One line for humans: why the PR is in this phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The Argo CD application of the current environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<ApplicationRef>,
    /// The policy gating the current environment, once one was found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRef>,
    /// Counts gate runs in this environment (a retry starts a new attempt); part of each test's correlation id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// Deploying fails when the PR is not Synced and Healthy at its revision by then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_deadline: Option<Time>,
    /// When the current gate started, for the policy's whole-gate timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_started_at: Option<Time>,
    /// The value of the `promotion.io/retry` annotation last acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_retry: Option<String>,
    /// A promotion that could not finish in one reconcile (the Application or the label step failed), so a restart resumes it instead of repeating it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_promotion: Option<PendingPromotion>,
    /// The policy as the current gate runs it, fixed at gate start: tests, timeouts and
    /// promotion target. An edit of the policy restarts the gate instead of changing it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateSnapshot>,
    /// Where the PR waits for its target environment, held by another PR; absent when not queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueStatus>,
    /// The gate tests of the current environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_runs: Vec<TestRun>,
    /// The audit trail: one record per promotion, oldest first; only the newest
    /// ones are kept (see promotionCount).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub promotions: Vec<PromotionRecord>,
    /// How many promotions were recorded in all, including those no longer kept in promotions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promotion_count: Option<i64>,
    /// Synced, TestsPassed, Promoted, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// The phases of a PR, per environment.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum Phase {
    /// Seen, not yet looked at.
    Pending,
    /// Waiting for Argo CD to sync the PR's revision in the current environment.
    Deploying,
    /// Deployed and healthy at the PR's revision.
    Synced,
    /// Gate tests running.
    Testing,
    /// Every required test passed; waiting for the approval annotation.
    AwaitingApproval,
    /// Passed its gate; waiting for the target environment, held by another PR (see status.queue).
    Queued,
    /// Moving the PR to the target environment.
    Promoting,
    /// Promoted to the target environment, which now deploys it.
    Promoted,
    /// A required test failed or timed out; see message and testRuns.
    Failed,
    /// The PR went through every environment that has a policy.
    Completed,
    /// The PR was closed; nothing more happens.
    Closed,
}

/// One gate test run in an external CI system.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TestRun {
    /// The test's name in the policy.
    pub name: String,
    /// The CI system that runs it.
    pub provider: Provider,
    /// The job, workflow or project that runs it.
    pub job: String,
    /// The configured CI connection; the provider's default when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// The id the controller sent with the trigger, so a restart finds the run instead of starting another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<String>,
    /// The CI system's id of the run, once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// Link to the run in the CI system.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Where the run is.
    pub state: TestState,
    /// A failing optional test never blocks the promotion.
    pub required: bool,
    /// When the run was (last) triggered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the test was first triggered in this gate; its timeout runs from here and a re-arm never resets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_triggered_at: Option<Time>,
    /// Every trigger sent for this test in this gate, oldest first; more than one means it was re-armed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub attempts: Vec<TriggerAttempt>,
    /// The CI system asked to be left alone until then (Retry-After, rate-limit reset): no poll or trigger before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Time>,
    /// When the run reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// Why the run is in its state, for humans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One trigger of a gate test, kept so that a restart knows what was sent and when it was answered.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerAttempt {
    /// When the intent to trigger was saved (before the request left).
    pub armed_at: Time,
    /// When the CI system answered (or the request failed); absent if the process stopped before that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answered_at: Option<Time>,
    /// What the answer said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<TriggerOutcome>,
}

/// How a trigger request ended.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TriggerOutcome {
    /// The CI system started the run and named it.
    Started,
    /// The request may have started a run (timeout, reset, 5xx after sending): look before sending again.
    Ambiguous,
    /// The CI system refused it before starting anything (rate limit, unreachable): safe to send again.
    NotSent,
    /// The CI system refused it for good (unknown job, bad credentials).
    Refused,
}

/// The states of a gate test run.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, JsonSchema)]
pub enum TestState {
    /// Not triggered yet, or triggered and queued.
    Pending,
    /// Running in the CI system.
    Running,
    /// Finished successfully.
    Passed,
    /// Finished unsuccessfully.
    Failed,
    /// Cancelled in the CI system or by the controller.
    Cancelled,
    /// Did not finish within its timeout.
    TimedOut,
}

/// The audit record of one promotion: who, what and why.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PromotionRecord {
    /// The environment the PR was promoted from.
    pub source: String,
    /// The environment the PR was promoted to.
    pub target: String,
    /// The policy that gated the promotion.
    pub policy: String,
    /// The revision (head SHA) that was promoted.
    pub revision: String,
    /// When the promotion was made.
    pub promoted_at: Time,
    /// Who promoted: the controller, or the approver when approval was required.
    pub promoted_by: String,
    /// The test runs that gated the promotion.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub test_runs: Vec<TestRun>,
    /// The promotion started (the target application moved) but did not finish: a new
    /// push, a close or a deletion interrupted it. The record says what was moved.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub interrupted: bool,
}

/// Where a PR waits for an environment held by another PR.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// The target environment.
    pub environment: String,
    /// The target environment's Argo CD application, which one PR holds at a time.
    pub application: ApplicationRef,
    /// Position in line: 1 is next.
    pub position: i64,
    /// The tracker holding the environment now ("namespace/name"), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// When the PR joined the queue; first come, first served.
    pub since: Time,
}

/// The policy of the current gate as it was when the gate started, variables substituted.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GateSnapshot {
    /// The policy's name.
    pub policy: String,
    /// The policy's metadata.generation at gate start; another generation restarts the gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
    /// The environment the gate runs in.
    pub source: String,
    /// The environment the PR is promoted to.
    pub target: String,
    /// The tests, with job, ref and parameters substituted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tests: Vec<ExternalTest>,
    /// The whole gate's timeout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Duration>")]
    pub timeout: Option<String>,
    /// Whether the PR is promoted without approval.
    pub auto_promote: bool,
    /// The target application, variables substituted.
    pub application: ApplicationRef,
    /// The label added on promotion, variables substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_label: Option<String>,
    /// How long the PR may take to deploy in the target environment once promoted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<schema::Duration>")]
    pub deploy_timeout: Option<String>,
}

/// The policy that gates an environment, at the generation that was used.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRef {
    /// The policy's name (same namespace as the tracker).
    pub name: String,
    /// The policy's metadata.generation when the gate started; a newer one restarts a failed gate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<i64>,
}

/// A promotion in progress. Each step is recorded when done, so a crash between
/// two steps resumes at the next one and never promotes twice.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingPromotion {
    /// The environment the PR leaves.
    pub source: String,
    /// The environment the PR moves to.
    pub target: String,
    /// The policy that gated it.
    pub policy: String,
    /// The revision (head SHA) being promoted.
    pub revision: String,
    /// The target environment's Argo CD application, variables substituted.
    pub application: ApplicationRef,
    /// The GitHub label to add, variables substituted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The controller, or the approver.
    pub promoted_by: String,
    /// Step 1 done: the application points at the revision.
    #[serde(default)]
    pub application_updated: bool,
}

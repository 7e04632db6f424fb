//! The CRDs on a real kube-apiserver: accepted, round-tripped, validated by the
//! server itself, status through the subresource, printer columns in Table output.

use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::core::Status as ErrorResponse;
use promotion_api::{PromotionPolicy, PullRequestTracker};
use serde_json::{Value, json};

fn policy(name: &str) -> Value {
    json!({
        "apiVersion": "promotion.io/v1alpha1",
        "kind": "PromotionPolicy",
        "metadata": {"name": name},
        "spec": {
            "sourceEnvironment": "dev",
            "targetEnvironment": "staging",
            "timeout": "30m",
            "externalTests": [
                {"name": "smoke", "provider": "jenkins", "job": "team/smoke",
                 "parameters": {"PR": "${PR_NUMBER}"}, "timeout": "10m"},
                {"name": "contract", "provider": "github-actions", "job": "contract.yml", "ref": "main"},
                {"name": "e2e", "provider": "gitlab", "job": "team/e2e", "required": false}
            ],
            "promotion": {"application": {"name": "shop-staging"}, "githubLabel": "promoted-to-staging"}
        }
    })
}

fn tracker(name: &str) -> Value {
    json!({
        "apiVersion": "promotion.io/v1alpha1",
        "kind": "PullRequestTracker",
        "metadata": {"name": name},
        "spec": {
            "repository": {"owner": "acme", "name": "shop"},
            "number": 42,
            "headSha": "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f",
            "environment": "dev",
            "application": {"name": "shop-dev"}
        }
    })
}

/// Creates the raw object and returns the API server's refusal, failing the test if it was accepted.
async fn rejected<K>(api: &Api<K>, body: Value) -> ErrorResponse
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let obj: K = serde_json::from_value(body).expect("test object deserializes");
    match api.create(&PostParams::default(), &obj).await {
        Ok(created) => panic!("the API server accepted an invalid object: {created:?}"),
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

fn assert_invalid(err: &ErrorResponse, needle: &str) {
    assert_eq!(err.code, 422, "expected 422 Invalid, got {err:?}");
    assert!(
        err.message.contains(needle),
        "expected the message to contain {needle:?}, got: {}",
        err.message
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn both_crds_are_established_and_structural() {
    let ctx = promotion_testenv::context("crds-established").await;
    let api: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(ctx.client.clone());
    for name in [
        "pullrequesttrackers.promotion.io",
        "promotionpolicies.promotion.io",
    ] {
        let crd = api.get(name).await.expect("CRD installed");
        let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
        let status = |t: &str| {
            conditions
                .iter()
                .find(|c| c.type_ == t)
                .map(|c| c.status.clone())
        };
        assert_eq!(status("Established").as_deref(), Some("True"), "{name}");
        assert_eq!(
            status("NonStructuralSchema"),
            None,
            "{name} must be structural"
        );
        let names = crd.spec.names;
        assert_eq!(names.categories, Some(vec!["promotion".to_string()]));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_policy_round_trips_with_defaults() {
    let ctx = promotion_testenv::context("policy-roundtrip").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let obj: PromotionPolicy = serde_json::from_value(policy("p")).expect("valid");
    let mut raw = serde_json::to_value(&obj).expect("serializes");
    // Leave the defaulted fields out, so the server's defaults are what we read back.
    raw["spec"]
        .as_object_mut()
        .expect("object")
        .remove("autoPromote");
    for t in raw["spec"]["externalTests"].as_array_mut().expect("array") {
        if t["name"] != "e2e" {
            t.as_object_mut().expect("object").remove("required");
        }
    }
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(raw).expect("valid"),
        )
        .await
        .expect("a valid policy is accepted");
    let read = api.get("p").await.expect("readable");
    assert_eq!(read.spec, created.spec);
    assert_eq!(read.spec, obj.spec);
    assert!(read.spec.auto_promote, "autoPromote defaults to true");
    let required: Vec<bool> = read
        .spec
        .external_tests
        .iter()
        .map(|t| t.required)
        .collect();
    assert_eq!(
        required,
        vec![true, true, false],
        "required defaults to true"
    );
    assert_eq!(read.spec.promotion.application.cluster, "in-cluster");
    assert_eq!(read.spec.promotion.application.namespace, "argocd");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_valid_tracker_round_trips() {
    let ctx = promotion_testenv::context("tracker-roundtrip").await;
    let api: Api<PullRequestTracker> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let obj: PullRequestTracker = serde_json::from_value(tracker("t")).expect("valid");
    api.create(&PostParams::default(), &obj)
        .await
        .expect("accepted");
    let read = api.get("t").await.expect("readable");
    assert_eq!(read.spec, obj.spec);
    assert_eq!(
        read.spec.head_sha,
        "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_source_and_target_must_differ() {
    let ctx = promotion_testenv::context("rule-source-target").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client, &ctx.namespace);
    let mut body = policy("same");
    body["spec"]["targetEnvironment"] = json!("dev");
    let err = rejected(&api, body).await;
    assert_invalid(&err, "targetEnvironment must differ from sourceEnvironment");
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_environments_must_not_be_empty() {
    let ctx = promotion_testenv::context("rule-env-empty").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client, &ctx.namespace);
    let mut body = policy("empty-source");
    body["spec"]["sourceEnvironment"] = json!("");
    let err = rejected(&api, body).await;
    assert_invalid(&err, "spec.sourceEnvironment");
    assert_invalid(&err, "at least 1 chars long");
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_test_names_are_unique() {
    let ctx = promotion_testenv::context("rule-unique-names").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client, &ctx.namespace);
    let mut body = policy("dup");
    body["spec"]["externalTests"][1]["name"] = json!("smoke");
    let err = rejected(&api, body).await;
    assert_invalid(&err, "Duplicate value");
    assert_invalid(&err, "smoke");
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_job_must_not_be_empty() {
    let ctx = promotion_testenv::context("rule-job").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client, &ctx.namespace);
    let mut body = policy("nojob");
    body["spec"]["externalTests"][0]["job"] = json!("  ");
    let err = rejected(&api, body).await;
    assert_invalid(&err, "job must not be empty");
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_provider_is_an_enum() {
    let ctx = promotion_testenv::context("rule-provider").await;
    let mut body = policy("travis");
    body["spec"]["externalTests"][0]["provider"] = json!("travis");
    // The typed client cannot even express this value, so post it raw.
    let err = rejected_raw(&ctx.kubeconfig, &ctx.namespace, "promotionpolicies", body).await;
    assert!(err.contains("Unsupported value: \"travis\""), "{err}");
    assert!(
        err.contains("\"jenkins\", \"github-actions\", \"gitlab\""),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_durations_must_parse_and_be_positive() {
    let ctx = promotion_testenv::context("rule-duration").await;
    let api: Api<PromotionPolicy> = Api::namespaced(ctx.client, &ctx.namespace);
    for (i, bad) in ["ten minutes", "10", "0s", "-5m", "1.5h"]
        .iter()
        .enumerate()
    {
        let mut body = policy(&format!("gate-{i}"));
        body["spec"]["timeout"] = json!(bad);
        let err = rejected(&api, body).await;
        assert_invalid(&err, "spec.timeout");
        assert_invalid(&err, "must be a positive duration");

        let mut body = policy(&format!("test-{i}"));
        body["spec"]["externalTests"][0]["timeout"] = json!(bad);
        let err = rejected(&api, body).await;
        assert_invalid(&err, "spec.externalTests[0].timeout");
    }
    let mut body = policy("ok");
    body["spec"]["timeout"] = json!("1h30m");
    let ok: PromotionPolicy = serde_json::from_value(body).expect("valid");
    api.create(&PostParams::default(), &ok)
        .await
        .expect("1h30m is a duration");
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_pr_number_is_positive() {
    let ctx = promotion_testenv::context("rule-number").await;
    let api: Api<PullRequestTracker> = Api::namespaced(ctx.client, &ctx.namespace);
    for n in [0i64, -3] {
        let mut body = tracker(&format!("n{}", n.abs()));
        body["spec"]["number"] = json!(n);
        let err = rejected(&api, body).await;
        assert_invalid(&err, "number must be a positive pull request number");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rule_head_sha_is_7_to_40_hex() {
    let ctx = promotion_testenv::context("rule-sha").await;
    let api: Api<PullRequestTracker> = Api::namespaced(ctx.client, &ctx.namespace);
    let too_long = "a".repeat(41);
    for (i, bad) in ["abc12", "not-a-sha", "zzzzzzzz", too_long.as_str()]
        .iter()
        .enumerate()
    {
        let mut body = tracker(&format!("sha{i}"));
        body["spec"]["headSha"] = json!(bad);
        let err = rejected(&api, body).await;
        assert_invalid(&err, "spec.headSha");
    }
    let mut body = tracker("short-sha");
    body["spec"]["headSha"] = json!("abc1234");
    let ok: PullRequestTracker = serde_json::from_value(body).expect("valid");
    api.create(&PostParams::default(), &ok)
        .await
        .expect("7 hex digits are a SHA");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_goes_through_the_subresource_only() {
    let ctx = promotion_testenv::context("status-subresource").await;
    let api: Api<PullRequestTracker> = Api::namespaced(ctx.client, &ctx.namespace);
    let obj: PullRequestTracker = serde_json::from_value(tracker("t")).expect("valid");
    let created = api
        .create(&PostParams::default(), &obj)
        .await
        .expect("accepted");

    // A status patch that also tries to change the spec: the spec must be untouched.
    let patch = json!({
        "spec": {"number": 7},
        "status": {"phase": "Testing", "currentEnvironment": "dev", "observedGeneration": 1}
    });
    let patched = api
        .patch_status("t", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("status patch accepted");
    let status = patched.status.expect("status written");
    assert_eq!(status.phase, Some(promotion_api::Phase::Testing));
    assert_eq!(status.current_environment.as_deref(), Some("dev"));
    assert_eq!(
        patched.spec, created.spec,
        "a status write never changes the spec"
    );
    assert_eq!(patched.metadata.generation, created.metadata.generation);

    // And a write to the main resource never changes the status.
    let spec_patch = json!({"status": {"phase": "Completed"}, "spec": {"number": 43}});
    let after = api
        .patch("t", &PatchParams::default(), &Patch::Merge(&spec_patch))
        .await
        .expect("spec patch accepted");
    assert_eq!(after.spec.number, 43);
    assert_eq!(
        after.status.and_then(|s| s.phase),
        Some(promotion_api::Phase::Testing)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn printer_columns_come_back_in_table_output() {
    let ctx = promotion_testenv::context("printer-columns").await;
    let trackers: Api<PullRequestTracker> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let policies: Api<PromotionPolicy> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let t: PullRequestTracker = serde_json::from_value(tracker("shop-42")).expect("valid");
    trackers
        .create(&PostParams::default(), &t)
        .await
        .expect("accepted");
    trackers
        .patch_status(
            "shop-42",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Testing", "currentEnvironment": "dev"}})),
        )
        .await
        .expect("status");
    let p: PromotionPolicy = serde_json::from_value(policy("dev-to-staging")).expect("valid");
    policies
        .create(&PostParams::default(), &p)
        .await
        .expect("accepted");

    use promotion_testenv::table;
    let prt = table::get(&ctx.client, "pullrequesttrackers", &ctx.namespace)
        .await
        .expect("table");
    assert_eq!(
        table::columns(&prt),
        [
            "Name",
            "Repository",
            "PR",
            "Environment",
            "Phase",
            "Queue",
            "Age"
        ]
    );
    let row = &table::rows(&prt)[0];
    assert_eq!(&row[..5], ["shop-42", "shop", "42", "dev", "Testing"]);
    // A queued tracker shows its place in line and who holds the environment.
    trackers
        .patch_status(
            "shop-42",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Queued", "queue": {
                "environment": "staging", "application": {"name": "shop-staging"},
                "position": 2, "holder": "team/shop-41", "since": "2026-01-01T00:00:00Z"}}})),
        )
        .await
        .expect("queued status");
    let prt = table::get(&ctx.client, "pullrequesttrackers", &ctx.namespace)
        .await
        .expect("table");
    let row = &table::rows(&prt)[0];
    assert_eq!(&row[4..6], ["Queued", "2"]);

    let pp = table::get(&ctx.client, "promotionpolicies", &ctx.namespace)
        .await
        .expect("table");
    assert_eq!(
        table::columns(&pp),
        [
            "Name",
            "Source",
            "Target",
            "Tests",
            "Auto-Promote",
            "Valid",
            "Age"
        ]
    );
    let row = &table::rows(&pp)[0];
    assert_eq!(&row[..3], ["dev-to-staging", "dev", "staging"]);
    assert_eq!(row[4], "true");
}

/// Posts a raw JSON body (one the typed client cannot express) and returns the refusal's message.
async fn rejected_raw(
    kubeconfig: &std::path::Path,
    ns: &str,
    plural: &str,
    mut body: Value,
) -> String {
    body["metadata"]["namespace"] = json!(ns);
    let client = promotion_testenv::client_for(kubeconfig)
        .await
        .expect("client");
    let req = http::Request::post(format!(
        "/apis/promotion.io/v1alpha1/namespaces/{ns}/{plural}"
    ))
    .header("Content-Type", "application/json")
    .body(serde_json::to_vec(&body).expect("json"))
    .expect("request");
    match client.request_text(req).await {
        Ok(text) => panic!("the API server accepted an invalid object: {text}"),
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 422, "{status:?}");
            status.message
        }
        Err(other) => panic!("unexpected client error: {other}"),
    }
}

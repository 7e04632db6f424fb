//! The approval admission policy (deploy/README.md, "Approvals") on the real
//! API server, installed from the chart by helm and from the plain manifests:
//! two users with the same rights on trackers, only one of them holding the
//! verb `approve` (through the shipped `promotion-approver` ClusterRole).

use super::*;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::config::{KubeConfigOptions, Kubeconfig};

const HEAD: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const APPROVE: &str = "promotion.io/approve";
const APPROVED_BY: &str = "promotion.io/approved-by";

/// A client of the test control plane acting as `user` (the admin may impersonate).
async fn as_user(kubeconfig: &Path, user: &str) -> Client {
    let kc = Kubeconfig::read_from(kubeconfig).expect("the testenv kubeconfig");
    let mut config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a client config");
    config.auth_info.impersonate = Some(user.to_string());
    Client::try_from(config).expect("a client")
}

fn tracker(name: &str, annotations: Value) -> PullRequestTracker {
    serde_json::from_value(json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"repository": {"owner": "acme", "name": "shop"}, "number": 42, "headSha": HEAD,
                 "environment": "dev", "application": {"name": "shop-dev"}}
    }))
    .expect("a tracker")
}

async fn annotate(
    client: &Client,
    namespace: &str,
    name: &str,
    annotations: Value,
    dry_run: bool,
) -> Result<PullRequestTracker, kube::Error> {
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        dry_run,
        ..PatchParams::default()
    };
    api.patch(
        name,
        &params,
        &Patch::Merge(json!({"metadata": {"annotations": annotations}})),
    )
    .await
}

/// The refusal's message, failing the test on anything but a 403 from admission.
fn refusal(result: Result<PullRequestTracker, kube::Error>, what: &str) -> String {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => status.message,
        other => panic!("{what}: expected a 403 from the approval policy, got {other:?}"),
    }
}

/// Gives `approver` and `editor` the same rights on trackers in `namespace`,
/// and `approver` also `approver_role` (the shipped ClusterRole with `approve`).
async fn grant(
    client: &Client,
    namespace: &str,
    approver: &str,
    editor: &str,
    approver_role: &str,
) {
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "tracker-editor"},
        "rules": [{"apiGroups": ["promotion.io"], "resources": ["pullrequesttrackers"],
                   "verbs": ["get", "list", "watch", "create", "update", "patch"]}]
    }))
    .expect("a Role");
    Api::<Role>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &role)
        .await
        .expect("creating the Role");
    let bindings: Api<RoleBinding> = Api::namespaced(client.clone(), namespace);
    let user =
        |name: &str| json!({"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name});
    for (name, role_ref, subjects) in [
        (
            "tracker-editors",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "tracker-editor"}),
            json!([user(approver), user(editor)]),
        ),
        (
            "approvers",
            json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": approver_role}),
            json!([user(approver)]),
        ),
    ] {
        let binding: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": name}, "roleRef": role_ref, "subjects": subjects
        }))
        .expect("a RoleBinding");
        bindings
            .create(&PostParams::default(), &binding)
            .await
            .unwrap_or_else(|e| panic!("creating RoleBinding {name}: {e}"));
    }
}

/// The scenario, once the policy guarding `ctx.namespace` is installed.
async fn approvals_are_bound_to_the_approving_user(
    ctx: &promotion_testenv::TestContext,
    approver_role: &str,
) {
    let ns = ctx.namespace.as_str();
    let approver = unique(ns, "alice");
    let editor = unique(ns, "bob");
    grant(&ctx.client, ns, &approver, &editor, approver_role).await;
    Api::<PullRequestTracker>::namespaced(ctx.client.clone(), ns)
        .create(&PostParams::default(), &tracker("shop-pr-42", json!({})))
        .await
        .expect("creating the tracker");
    let alice = as_user(&ctx.kubeconfig, &approver).await;
    let bob = as_user(&ctx.kubeconfig, &editor).await;
    let approval = format!("staging@{}", &HEAD[..7]);

    // A new policy takes effect within seconds: wait (with dry runs, which
    // change nothing) until it refuses the user without `approve`.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let attempt = annotate(
            &bob,
            ns,
            "shop-pr-42",
            json!({APPROVE: approval, APPROVED_BY: editor}),
            true,
        )
        .await;
        match attempt {
            Err(kube::Error::Api(s)) if s.code == 403 => break,
            Ok(_) => {}
            Err(e) => panic!("an unexpected refusal: {e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the approval policy never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The user holding `approve` approves in their own name: accepted.
    let approved = annotate(
        &alice,
        ns,
        "shop-pr-42",
        json!({APPROVE: approval, APPROVED_BY: approver}),
        false,
    )
    .await
    .expect("the approver may approve in their own name");
    let annotations = approved.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(APPROVED_BY), Some(&approver));

    // The same user in someone else's name: refused, and nothing changes.
    let message = refusal(
        annotate(
            &alice,
            ns,
            "shop-pr-42",
            json!({APPROVED_BY: "carol"}),
            false,
        )
        .await,
        "approving in another's name",
    );
    assert!(
        message.contains("must be your own user name") && message.contains(&approver),
        "{message}"
    );

    // The user without `approve`, even in their own name: refused, saying why.
    let message = refusal(
        annotate(
            &bob,
            ns,
            "shop-pr-42",
            json!({APPROVE: format!("prod@{HEAD}"), APPROVED_BY: editor}),
            false,
        )
        .await,
        "approving without the verb",
    );
    assert!(
        message.contains(&format!("user \"{editor}\" may not approve"))
            && message.contains("verb approve on pullrequesttrackers.promotion.io"),
        "{message}"
    );
    // Nor by creating a tracker that carries an approval.
    let created = Api::<PullRequestTracker>::namespaced(bob.clone(), ns)
        .create(
            &PostParams::default(),
            &tracker(
                "shop-pr-43",
                json!({APPROVE: approval, APPROVED_BY: editor}),
            ),
        )
        .await;
    let message = match created {
        Err(kube::Error::Api(s)) if s.code == 403 => s.message,
        other => panic!("creating an approved tracker without the verb: {other:?}"),
    };
    assert!(message.contains("may not approve"), "{message}");

    let stored = Api::<PullRequestTracker>::namespaced(ctx.client.clone(), ns)
        .get("shop-pr-42")
        .await
        .expect("the tracker");
    let annotations = stored.metadata.annotations.unwrap_or_default();
    assert_eq!(annotations.get(APPROVE), Some(&approval));
    assert_eq!(annotations.get(APPROVED_BY), Some(&approver));

    // A change that leaves the approval as it is: accepted for both.
    for (who, client) in [(&approver, &alice), (&editor, &bob)] {
        annotate(
            client,
            ns,
            "shop-pr-42",
            json!({"promotion.io/retry": format!("by-{who}")}),
            false,
        )
        .await
        .unwrap_or_else(|e| panic!("{who} may change what is not an approval: {e}"));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_are_bound_to_the_user_with_the_chart_installed_by_helm() {
    let ctx = promotion_testenv::context("deploy-approval-chart").await;
    let release = unique(&ctx.namespace, "pc");
    let approver_role = format!("{release}-approver");
    helm::Helm::new("install-approval")
        .install(
            &ctx.kubeconfig,
            &chart_dir(),
            &helm::Release {
                name: &release,
                namespace: &ctx.namespace,
            },
            &test_scoped(&ctx.namespace, &approver_role),
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    approvals_are_bound_to_the_approving_user(&ctx, &approver_role).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn approvals_are_bound_to_the_user_with_the_manifests() {
    let ctx = promotion_testenv::context("deploy-approval-manifests").await;
    let suffix = unique(&ctx.namespace, "a");
    let mut objects = kustomize(&root().join("deploy/manifests"), Some(&ctx.namespace));
    own_approval_objects(&mut objects, &ctx.namespace, &suffix);
    let approval: Vec<Value> = objects
        .into_iter()
        .filter(|o| {
            kind_of(o).starts_with("ValidatingAdmissionPolicy")
                || name_of(o) == format!("promotion-approver-{suffix}")
        })
        .collect();
    assert_eq!(approval.len(), 3, "{:?}", kinds(&approval));
    apply(&ctx.client, &approval, &[]).await;
    approvals_are_bound_to_the_approving_user(&ctx, &format!("promotion-approver-{suffix}")).await;
}

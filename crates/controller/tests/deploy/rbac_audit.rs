//! Least privilege, proven from the API server's side: a control plane of its own
//! writes an audit log; the chart's RBAC for a namespaced install (Roles only) is
//! applied, the real binary runs as the chart's ServiceAccount through a pull
//! request's journey, and the log must show every granted verb used and no request
//! refused.
//!
//! The same run checks that the credentials it used (the GitHub token, the webhook
//! secret) show in neither the controller's log, the tracker's status nor its Events.
//!
//! One verb is used only when a reconcile fails (a merge patch of the tracker's
//! conditions): the journey makes one fail on purpose, with an admission policy
//! that refuses the tracker's phase changes for a while (422, not 403).

use super::*;
use std::collections::BTreeSet;

/// (namespace, apiGroup, resource[/subresource], verb).
type Right = (String, String, String, String);

/// The rights the Roles among `objects` grant, per namespace.
fn granted(objects: &[Value]) -> BTreeSet<Right> {
    let mut rights = BTreeSet::new();
    for role in objects.iter().filter(|o| kind_of(o) == "Role") {
        let ns = role["metadata"]["namespace"].as_str().unwrap_or_default();
        for rule in role["rules"].as_array().into_iter().flatten() {
            let list = |k: &str| -> Vec<String> {
                rule[k]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            for group in list("apiGroups") {
                for resource in list("resources") {
                    for verb in list("verbs") {
                        rights.insert((ns.into(), group.clone(), resource.clone(), verb));
                    }
                }
            }
        }
    }
    rights
}

/// One request of `user` in the audit log.
struct Request {
    right: Right,
    code: u64,
}

/// The requests `user` made (as itself or impersonated), from the audit log's JSON lines.
fn requests_of(log: &str, user: &str) -> Vec<Request> {
    log.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["impersonatedUser"]["username"] == user || e["user"]["username"] == user)
        .filter(|e| e["stage"] == "ResponseComplete" || e["stage"] == "ResponseStarted")
        .filter_map(|e| {
            let o = &e["objectRef"];
            let resource = o["resource"].as_str()?;
            let resource = match o["subresource"].as_str() {
                Some(sub) => format!("{resource}/{sub}"),
                None => resource.to_string(),
            };
            Some(Request {
                right: (
                    o["namespace"].as_str().unwrap_or_default().to_string(),
                    o["apiGroup"].as_str().unwrap_or_default().to_string(),
                    resource,
                    e["verb"].as_str()?.to_string(),
                ),
                code: e["responseStatus"]["code"].as_u64().unwrap_or(0),
            })
        })
        .collect()
}

/// The rights the requests used; a server-side apply that created its object (201)
/// was also authorized as a create.
fn used(requests: &[Request]) -> BTreeSet<Right> {
    let mut rights = BTreeSet::new();
    for r in requests.iter().filter(|r| r.code < 400) {
        rights.insert(r.right.clone());
        if r.right.3 == "patch" && r.code == 201 {
            let (ns, group, resource, _) = r.right.clone();
            rights.insert((ns, group, resource, "create".into()));
        }
    }
    rights
}

const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: Metadata
";

/// Refuses (422) every status write that changes a tracker's phase in `namespace`,
/// so that reconciles fail until it is removed.
fn refuse_phase_changes(namespace: &str, name: &str) -> Vec<Value> {
    vec![
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["promotion.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["pullrequesttrackers/status"]
                }]},
                "validations": [{
                    "expression": "!has(object.status) || !has(object.status.phase) || (has(oldObject.status) && has(oldObject.status.phase) && oldObject.status.phase == object.status.phase)",
                    "message": "the RBAC audit test refuses phase changes for now",
                    "reason": "Invalid"
                }]
            }
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
            "metadata": {"name": name},
            "spec": {
                "policyName": name, "validationActions": ["Deny"],
                "matchResources": {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}}}
            }
        }),
    ]
}

/// Waits until the admission policy refuses a phase change (policies apply a moment
/// after they are created), trying it on a tracker of its own.
async fn refusal_in_force(client: &Client, namespace: &str) {
    let api: Api<PullRequestTracker> = Api::namespaced(client.clone(), namespace);
    let probe: PullRequestTracker = serde_json::from_value(json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
        "metadata": {"name": "admission-probe"},
        "spec": {"repository": {"owner": "acme", "name": "probe"}, "number": 1, "headSha": SHA,
                 "environment": "dev", "application": {"name": "probe"}}
    }))
    .expect("a tracker");
    api.create(&PostParams::default(), &probe)
        .await
        .expect("creating the probe tracker");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let result = api
            .patch_status(
                "admission-probe",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Deploying"}})),
            )
            .await;
        match result {
            Err(kube::Error::Api(e)) if e.code == 422 => break,
            other => assert!(
                Instant::now() < deadline,
                "the admission policy never refused a phase change: {other:?}"
            ),
        }
        // Accepted: put the probe back for the next try.
        let _ = api
            .patch_status(
                "admission-probe",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": null})),
            )
            .await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    api.delete("admission-probe", &Default::default())
        .await
        .expect("deleting the probe tracker");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_namespaced_install_uses_every_right_it_is_granted_and_is_refused_none() {
    let dir = tempfile::tempdir().expect("a directory");
    let policy = dir.path().join("audit-policy.yaml");
    let log = dir.path().join("audit.log");
    std::fs::write(&policy, AUDIT_POLICY).expect("writing the audit policy");
    let plane = tokio::task::block_in_place(|| {
        promotion_testenv::dedicated(promotion_testenv::Options {
            audit: Some(promotion_testenv::AuditLog {
                policy: policy.clone(),
                log: log.clone(),
            }),
        })
    })
    .unwrap_or_else(|e| panic!("a control plane with an audit log: {e}"));
    let client = promotion_testenv::client_for(&plane.kubeconfig)
        .await
        .expect("client");
    let release_ns = promotion_testenv::fresh_namespace(&client, "audit-release")
        .await
        .expect("namespace");
    let team = promotion_testenv::fresh_namespace(&client, "audit-team")
        .await
        .expect("namespace");
    let argocd = promotion_testenv::fresh_namespace(&client, "audit-argocd")
        .await
        .expect("namespace");
    let crd = promotion_argocd::testing::application_crd().expect("the Application CRD parses");
    promotion_testenv::install_crd_objects(&client, vec![crd])
        .await
        .expect("installing the Application CRD");

    let github = promotion_standins::StandIns::start(promotion_standins::StandInConfig {
        script: promotion_standins::CiScript::new(Duration::from_secs(1)),
        callbacks: None,
    })
    .await
    .expect("the GitHub stand-in");
    github.pull_requests.open("acme/shop", 42, SHA);
    let token = github
        .secrets()
        .into_iter()
        .find(|(name, _)| name == promotion_standins::GITHUB_SECRET)
        .and_then(|(_, data)| data.get("token").cloned())
        .expect("the stand-in's GitHub token");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &release_ns);
    for (name, data) in [
        ("github-bot", json!({"token": token})),
        ("promotion-webhooks", json!({"github": WEBHOOK_SECRET})),
    ] {
        let s: Secret =
            serde_json::from_value(json!({"metadata": {"name": name}, "stringData": data}))
                .expect("a Secret");
        secrets
            .create(&PostParams::default(), &s)
            .await
            .expect("creating a Secret");
    }

    // The chart, rendered by the real helm, as a team installs it for its namespace.
    let values = yaml(&format!(
        r#"
serviceAccount: {{name: audited-controller}}
watchNamespace: {team}
rbac: {{applicationNamespaces: [{argocd}]}}
pollInterval: 300ms
logFormat: text
approval: {{policy: {{create: false}}, approverRole: {{create: false}}}}
config:
  connections:
    - {{name: github, kind: github, url: "{github_url}", default: true, secretRef: {{name: github-bot}}}}
  repositories:
    - {{owner: acme, name: shop, namespace: {team}, environment: dev,
       application: {{namespace: {argocd}, name: "shop-pr-${{PR_NUMBER}}"}}}}
"#,
        github_url = github.github_url
    ));
    let objects = render_chart("audited", &release_ns, &values);
    let cluster_wide: Vec<String> = objects
        .iter()
        .filter(|o| kind_of(o).starts_with("Cluster"))
        .map(|o| format!("{} {}", kind_of(o), name_of(o)))
        .collect();
    assert!(
        cluster_wide.is_empty(),
        "a namespaced install holds no cluster-wide right: {cluster_wide:?}"
    );
    let rbac: Vec<Value> = objects
        .iter()
        .filter(|o| ["ServiceAccount", "Role", "RoleBinding"].contains(&kind_of(o)))
        .cloned()
        .collect();
    apply(&client, &rbac, &[]).await;
    let grants = granted(&objects);
    // The cluster-wide install's ClusterRole grants the same rules, everywhere.
    let everywhere = render_chart("audited", &release_ns, &yaml("{}"));
    let mut cluster_rules = rules(&everywhere, "ClusterRole", "audited");
    let mut role_rules = rules(&objects, "Role", "audited-trackers");
    role_rules.extend(rules(&objects, "Role", "audited-applications"));
    cluster_rules.sort();
    role_rules.sort();
    assert_eq!(cluster_rules, role_rules);

    let refusal = refuse_phase_changes(&team, "audit-refuse-phase-changes");
    apply(&client, &refusal, &[]).await;
    refusal_in_force(&client, &team).await;
    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &argocd, &application_resource());
    create_app(&apps, "shop-pr-42", SHA, &team).await;
    create_app(&apps, "shop-staging", OLD_SHA, &team).await;
    let policy: promotion_api::PromotionPolicy = serde_json::from_value(json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
        "metadata": {"name": "dev-to-staging"},
        "spec": {"sourceEnvironment": "dev", "targetEnvironment": "staging", "allowUngated": true,
                 "promotion": {"application": {"namespace": argocd, "name": "shop-staging"}}}
    }))
    .expect("a policy");
    Api::<promotion_api::PromotionPolicy>::namespaced(client.clone(), &team)
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");

    let mut c = start_controller(&objects, &release_ns, &plane.kubeconfig).await;
    let (code, body) = deliver_pr(&c, 42, SHA, "2026-11-25T10:00:00Z").await;
    assert_eq!(code, 202, "the webhook accepts the PR: {body}\n{}", c.log());
    let trackers: Api<PullRequestTracker> = Api::namespaced(client.clone(), &team);
    // A refused status write is shown on the tracker (the merge patch of its conditions) ...
    wait_until("the refused write to show", &mut c, async || {
        let t = trackers.get("acme-shop-pr-42").await.ok()?;
        status_text(&t).contains("ReconcileError").then_some(())
    })
    .await;
    // ... and once the refusal is gone, the PR goes on to staging.
    let admission = [
        "ValidatingAdmissionPolicyBinding",
        "ValidatingAdmissionPolicy",
    ];
    for kind in admission {
        let ar = kube::discovery::ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "admissionregistration.k8s.io",
            "v1",
            kind,
        ));
        Api::<DynamicObject>::all_with(client.clone(), &ar)
            .delete("audit-refuse-phase-changes", &Default::default())
            .await
            .unwrap_or_else(|e| panic!("deleting the {kind}: {e}"));
    }
    wait_until(
        "the staging Application to be promoted",
        &mut c,
        async || {
            let app = apps.get("shop-staging").await.ok()?;
            (app.data["spec"]["source"]["targetRevision"] == SHA).then_some(())
        },
    )
    .await;
    apps.patch(
        "shop-staging",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Healthy"}
        }})),
    )
    .await
    .expect("syncing the staging Application");
    wait_until("the tracker to complete in staging", &mut c, async || {
        let t = trackers.get("acme-shop-pr-42").await.ok()?;
        let s = t.status.as_ref()?;
        (s.phase == Some(Phase::Completed) && s.current_environment.as_deref() == Some("staging"))
            .then_some(())
    })
    .await;
    let controller_log = c.log();
    drop(c);

    // The credentials it used are nowhere a tenant (or a log reader) looks.
    let status = status_text(&trackers.get("acme-shop-pr-42").await.expect("the tracker"));
    let notes: Vec<String> = Api::<Event>::namespaced(client.clone(), &team)
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter_map(|e| e.note)
        .collect();
    assert!(!notes.is_empty(), "the journey published Events");
    for secret in [token.as_str(), WEBHOOK_SECRET] {
        for (place, text) in [
            ("the controller's log", controller_log.as_str()),
            ("the tracker's status", status.as_str()),
            ("the Events", &notes.join("\n")),
        ] {
            assert!(!text.contains(secret), "a credential shows in {place}");
        }
    }

    let text = std::fs::read_to_string(&log).expect("the audit log");
    let user = format!("system:serviceaccount:{release_ns}:audited-controller");
    let requests = requests_of(&text, &user);
    assert!(
        !requests.is_empty(),
        "the audit log shows the controller's requests"
    );
    let refused: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.code == 403)
        .map(|r| format!("{:?}", r.right))
        .collect();
    assert!(
        refused.is_empty(),
        "requests refused to the chart's rights (namespace, group, resource, verb): {refused:#?}\n{controller_log}"
    );
    let used = used(&requests);
    let unused: Vec<&Right> = grants.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "granted but never used (namespace, group, resource, verb): {unused:#?}\nused: {used:#?}"
    );
    println!(
        "{} requests of the controller audited; all {} granted rights used",
        requests.len(),
        grants.len()
    );
}

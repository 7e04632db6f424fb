//! The installation artefacts in deploy/ against the real API server: the Helm
//! chart (with the real `helm`: lint, template, install, upgrade; see
//! deploy/helm.rs) and the plain manifests (`kubectl apply -k`) apply cleanly,
//! describe the same objects and grant the same RBAC rules; and those rules are
//! exactly what the controller needs: the real binary, authenticated as the
//! chart's ServiceAccount, carries a pull request from its webhook to Completed,
//! and fails clearly without one rule. deploy/approval.rs: the approval
//! admission policy, from both.

#[path = "deploy/approval.rs"]
mod approval;
#[path = "deploy/helm.rs"]
mod helm;
#[path = "deploy/rbac_audit.rs"]
mod rbac_audit;

use hmac::{Hmac, Mac};
use k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::Client;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
use promotion_api::{Phase, PullRequestTracker};
use promotion_argocd::application_resource;
use promotion_controller::config::FileConfig;
use serde_json::{Value, json};
use sha2::Sha256;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SHA: &str = "3f2c9a1b7e4d5c6f8a9b0c1d2e3f4a5b6c7d8e9f";
const SHA2: &str = "9e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d";
const OLD_SHA: &str = "0123456789abcdef0123456789abcdef01234567";
const WEBHOOK_SECRET: &str = "deploy-test-s3cret";
const FIELD_MANAGER: &str = "promotion-deploy-test";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn chart_dir() -> PathBuf {
    root().join("deploy/helm/promotion-controller")
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("test values are YAML")
}

/// Every non-empty document of a multi-document YAML text, as JSON.
fn documents(text: &str, origin: &str) -> Vec<Value> {
    use serde::Deserialize as _;
    serde_yaml::Deserializer::from_str(text)
        .map(|doc| {
            let v = serde_yaml::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin} is not valid YAML: {e}"));
            serde_json::to_value(v).unwrap_or_else(|e| panic!("{origin}: {e}"))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// What the chart installs (`helm template --include-crds`): CRDs first, then every template.
fn render_chart(release: &str, namespace: &str, overrides: &serde_yaml::Value) -> Vec<Value> {
    let text = helm::Helm::new("template")
        .template(
            &chart_dir(),
            &helm::Release {
                name: release,
                namespace,
            },
            overrides,
        )
        .unwrap_or_else(|e| panic!("the chart does not render: {e}"));
    documents(&text, "helm template")
}

/// Values that keep the chart's cluster-wide objects to this test: the approval
/// policy guards the test's namespace only (a cluster-wide one would judge every
/// other test's trackers), and the approver ClusterRole gets a name of its own.
fn test_scoped(namespace: &str, approver_role: &str) -> serde_yaml::Value {
    yaml(&format!(
        r#"
approval:
  policy: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}}}
  approverRole: {{name: {approver_role}}}
"#
    ))
}

/// `base` with `over` merged in, as a second `-f` would.
fn merged(mut base: serde_yaml::Value, over: &serde_yaml::Value) -> serde_yaml::Value {
    fn merge(base: &mut serde_yaml::Value, over: &serde_yaml::Value) {
        match (base, over) {
            (serde_yaml::Value::Mapping(b), serde_yaml::Value::Mapping(o)) => {
                for (k, v) in o {
                    match b.get_mut(k) {
                        Some(slot) => merge(slot, v),
                        None => {
                            b.insert(k.clone(), v.clone());
                        }
                    }
                }
            }
            (slot, v) => *slot = v.clone(),
        }
    }
    merge(&mut base, over);
    base
}

/// Cluster-scoped kinds among ours; kustomize keeps its own list.
fn cluster_scoped(kind: &str) -> bool {
    matches!(
        kind,
        "Namespace"
            | "CustomResourceDefinition"
            | "ClusterRole"
            | "ClusterRoleBinding"
            | "ValidatingAdmissionPolicy"
            | "ValidatingAdmissionPolicyBinding"
    )
}

/// `kustomize build dir` for the fields our kustomizations use (`namespace`,
/// `resources`: files and other kustomization directories); `namespace` as
/// `kustomize edit set namespace` would set it, when given.
fn kustomize(dir: &Path, namespace: Option<&str>) -> Vec<Value> {
    let path = dir.join("kustomization.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let k: Value = serde_json::to_value(yaml(&text)).expect("JSON");
    let fields = k.as_object().expect("a kustomization is a map");
    for key in fields.keys() {
        assert!(
            ["apiVersion", "kind", "namespace", "resources"].contains(&key.as_str()),
            "{}: this test emulates only namespace and resources, not {key}: teach it first",
            path.display()
        );
    }
    let mut objects = Vec::new();
    for r in k["resources"].as_array().expect("resources is a list") {
        let r = dir.join(r.as_str().expect("a resource is a path"));
        if r.is_dir() {
            objects.extend(kustomize(&r, None));
        } else {
            let text =
                std::fs::read_to_string(&r).unwrap_or_else(|e| panic!("{}: {e}", r.display()));
            objects.extend(documents(&text, &r.display().to_string()));
        }
    }
    let target = namespace.or(k["namespace"].as_str());
    if let Some(ns) = target {
        for obj in &mut objects {
            let kind = obj["kind"].as_str().unwrap_or_default().to_string();
            if kind == "Namespace" {
                obj["metadata"]["name"] = json!(ns);
            } else if !cluster_scoped(&kind) {
                obj["metadata"]["namespace"] = json!(ns);
            }
            if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
                for s in subjects
                    .iter_mut()
                    .filter(|s| s["kind"] == "ServiceAccount")
                {
                    s["namespace"] = json!(ns);
                }
            }
        }
    }
    objects
}

fn kind_of(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

fn name_of(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(objects: &'a [Value], kind: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_of(o) == kind)
        .unwrap_or_else(|| panic!("no {kind} among {:?}", kinds(objects)))
}

fn find_named<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind_of(o) == kind && name_of(o) == name)
        .unwrap_or_else(|| panic!("no {kind} {name} among {:?}", kinds(objects)))
}

fn kinds(objects: &[Value]) -> Vec<String> {
    let mut k: Vec<String> = objects.iter().map(|o| kind_of(o).to_string()).collect();
    k.sort();
    k
}

/// The order `kubectl apply` and Helm install in: what others refer to first.
fn install_order(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => 1,
        "ServiceAccount" => 2,
        "ClusterRole" | "Role" => 3,
        "ClusterRoleBinding" | "RoleBinding" => 4,
        "ConfigMap" | "Secret" => 5,
        "ValidatingAdmissionPolicy" => 6,
        _ => 7,
    }
}

/// Server-side applies `objects`; those of `dry_run_kinds` with dryRun=All (no
/// controllers run here, but the API server validates them in full).
async fn apply(client: &Client, objects: &[Value], dry_run_kinds: &[&str]) {
    let discovery = Discovery::new(client.clone())
        .filter(&[
            "",
            "apps",
            "rbac.authorization.k8s.io",
            "apiextensions.k8s.io",
            "admissionregistration.k8s.io",
        ])
        .run()
        .await
        .expect("API discovery");
    let mut sorted: Vec<&Value> = objects.iter().collect();
    sorted.sort_by_key(|o| install_order(kind_of(o)));
    for obj in sorted {
        let dynamic: DynamicObject =
            serde_json::from_value(obj.clone()).expect("every document is an object");
        let types = dynamic.types.clone().expect("apiVersion and kind");
        let gvk = kube::core::GroupVersionKind::try_from(&types).expect("a valid apiVersion");
        let (ar, caps) = discovery
            .resolve_gvk(&gvk)
            .unwrap_or_else(|| panic!("the API server does not serve {gvk:?}"));
        let name = name_of(obj);
        let api: Api<DynamicObject> = match caps.scope {
            Scope::Namespaced => {
                let ns = obj["metadata"]["namespace"].as_str().unwrap_or_else(|| {
                    panic!(
                        "{} {name} is namespaced but names no namespace",
                        kind_of(obj)
                    )
                });
                Api::namespaced_with(client.clone(), ns, &ar)
            }
            Scope::Cluster => Api::all_with(client.clone(), &ar),
        };
        let mut params = PatchParams::apply(FIELD_MANAGER).force();
        params.dry_run = dry_run_kinds.contains(&kind_of(obj));
        api.patch(name, &params, &Patch::Apply(obj))
            .await
            .unwrap_or_else(|e| panic!("applying {} {name}: {e}", kind_of(obj)));
    }
}

/// The `config.yaml` of the ConfigMap among `objects`, checked as the binary checks it.
fn config_of(objects: &[Value]) -> (String, FileConfig) {
    let text = find(objects, "ConfigMap")["data"]["config.yaml"]
        .as_str()
        .expect("the ConfigMap holds config.yaml")
        .to_string();
    let parsed = FileConfig::parse(&text)
        .unwrap_or_else(|e| panic!("config.yaml is refused by the controller: {e}\n{text}"));
    (text, parsed)
}

fn container(objects: &[Value]) -> &Value {
    &find(objects, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn env_of(objects: &[Value]) -> BTreeMap<String, Value> {
    container(objects)["env"]
        .as_array()
        .expect("env")
        .iter()
        .map(|e| {
            let v = e
                .get("value")
                .cloned()
                .unwrap_or_else(|| e["valueFrom"].clone());
            (e["name"].as_str().expect("env name").to_string(), v)
        })
        .collect()
}

/// The RBAC rules of the `kind` named `name` among `objects`, each as (apiGroups, resources, verbs), sorted.
fn rules(
    objects: &[Value],
    kind: &str,
    name: &str,
) -> Vec<(Vec<String>, Vec<String>, Vec<String>)> {
    let strings = |v: &Value| -> Vec<String> {
        let mut s: Vec<String> = v
            .as_array()
            .expect("a list")
            .iter()
            .map(|x| x.as_str().expect("a string").to_string())
            .collect();
        s.sort();
        s
    };
    let mut out: Vec<_> = find_named(objects, kind, name)["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .map(|r| {
            (
                strings(&r["apiGroups"]),
                strings(&r["resources"]),
                strings(&r["verbs"]),
            )
        })
        .collect();
    out.sort();
    out
}

/// A name unique to this run, from the test namespace's random suffix.
fn unique(ns: &str, prefix: &str) -> String {
    let suffix = ns.rsplit('-').next().unwrap_or(ns);
    format!("{prefix}-{suffix}")
}

#[test]
fn the_chart_crds_are_the_generated_ones() {
    let generated_dir = root().join("deploy/crds");
    let crd_files = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".yaml") && n != "kustomization.yaml")
            .collect();
        names.sort();
        names
    };
    let generated = crd_files(&generated_dir);
    let chart = crd_files(&chart_dir().join("crds"));
    assert!(
        !generated.is_empty(),
        "cargo xtask crdgen writes deploy/crds"
    );
    assert_eq!(
        chart, generated,
        "deploy/helm/promotion-controller/crds must hold exactly the files of deploy/crds"
    );
    for name in &generated {
        let a = std::fs::read(generated_dir.join(name)).expect("generated CRD");
        let b = std::fs::read(chart_dir().join("crds").join(name)).expect("chart CRD");
        assert!(
            a == b,
            "deploy/helm/promotion-controller/crds/{name} differs from deploy/crds/{name}: \
             copy it again after `cargo xtask crdgen`"
        );
    }
    // The manifests reach the CRDs through deploy/crds/kustomization.yaml.
    let listed = kustomize(&generated_dir, None);
    let mut names: Vec<String> = listed
        .iter()
        .map(|o| format!("{}.yaml", name_of(o)))
        .collect();
    names.sort();
    assert_eq!(
        names, generated,
        "deploy/crds/kustomization.yaml must list every generated CRD"
    );
}

#[test]
fn the_chart_and_the_manifests_describe_the_same_controller() {
    let chart = render_chart("promotion-controller", "promotion-system", &yaml("{}"));
    let manifests = kustomize(&root().join("deploy/manifests"), None);
    // The chart names the approvers' role after the release (two releases coexist).
    for (kind, in_chart, in_manifests) in [
        (
            "ClusterRole",
            "promotion-controller",
            "promotion-controller",
        ),
        ("Role", "promotion-controller", "promotion-controller"),
        (
            "ClusterRole",
            "promotion-controller-approver",
            "promotion-approver",
        ),
    ] {
        assert_eq!(
            rules(&chart, kind, in_chart),
            rules(&manifests, kind, in_manifests),
            "the chart's {kind} {in_chart} and the manifests' {in_manifests} rules differ"
        );
    }
    // The same approval policy, bound the same way.
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        let name = "promotion-controller-approval";
        assert_eq!(
            find_named(&chart, kind, name)["spec"],
            find_named(&manifests, kind, name)["spec"],
            "the chart's and the manifests' {kind} differ"
        );
    }
    // The same container (image, env, probes, ports, resources, security).
    assert_eq!(container(&chart), container(&manifests));
    let pod = |o: &[Value]| find(o, "Deployment")["spec"]["template"]["spec"].clone();
    for field in ["securityContext", "serviceAccountName", "volumes"] {
        assert_eq!(pod(&chart)[field], pod(&manifests)[field], "{field}");
    }
    let spec = |o: &[Value], kind: &str, field: &str| find(o, kind)["spec"][field].clone();
    assert_eq!(
        spec(&chart, "Deployment", "strategy"),
        spec(&manifests, "Deployment", "strategy")
    );
    assert_eq!(
        spec(&chart, "Service", "ports"),
        spec(&manifests, "Service", "ports")
    );
    assert_eq!(config_of(&chart).1, config_of(&manifests).1);
    // Everything but the Namespace (Helm's --create-namespace) is in both.
    let mut without_ns = kinds(&manifests);
    without_ns.retain(|k| k != "Namespace");
    assert_eq!(kinds(&chart), without_ns);
    // Unchanged, every namespaced file already names promotion-system (so `kubectl apply -f` works too).
    let plain = root().join("deploy/manifests");
    for entry in std::fs::read_dir(&plain).expect("deploy/manifests") {
        let path = entry.expect("entry").path();
        let file = path.display().to_string();
        if file.ends_with("kustomization.yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("manifest");
        for obj in documents(&text, &file) {
            if !cluster_scoped(kind_of(&obj)) {
                assert_eq!(obj["metadata"]["namespace"], "promotion-system", "{file}");
            }
        }
    }
}

/// Two releases with default values (two teams' controllers, or a second one
/// being tried out): no cluster-scoped object of one has the name of the other's,
/// so Helm installs both.
#[test]
fn two_releases_share_no_cluster_scoped_name() {
    let names = |release: &str, namespace: &str| -> Vec<String> {
        render_chart(release, namespace, &yaml("{}"))
            .iter()
            .filter(|o| cluster_scoped(kind_of(o)) && kind_of(o) != "CustomResourceDefinition")
            .map(|o| format!("{} {}", kind_of(o), name_of(o)))
            .collect()
    };
    let first = names("promotion-a", "team-a-system");
    let second = names("promotion-b", "team-b-system");
    assert!(!first.is_empty());
    let shared: Vec<&String> = first.iter().filter(|n| second.contains(n)).collect();
    assert!(shared.is_empty(), "both releases would create {shared:?}");
}

#[test]
fn helm_lint_strict_passes_with_the_default_and_the_documented_values() {
    let helm = helm::Helm::new("lint");
    let out = helm
        .lint(&chart_dir(), &yaml("{}"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
    // Every value of deploy/README.md's table set, as in the test below.
    let out = helm
        .lint(&chart_dir(), &every_value_changed("promotion", "team-a"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(out.contains("0 chart(s) failed"), "{out}");
}

#[test]
fn helm_lint_strict_fails_on_a_broken_chart() {
    // The lint above can fail: a chart whose template calls an undefined value
    // function is refused (the same chart, one template broken, in a copy).
    let copy = std::env::temp_dir().join(format!("promotion-chart-broken-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&copy);
    copy_dir(&chart_dir(), &copy);
    std::fs::write(
        copy.join("templates/broken.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Values.nothing.here }}\n",
    )
    .expect("writing a broken template");
    let result = helm::Helm::new("lint-broken").lint(&copy, &yaml("{}"));
    let _ = std::fs::remove_dir_all(&copy);
    let err = result.expect_err("helm lint --strict refuses the broken chart");
    assert!(err.contains("broken.yaml"), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap_or_else(|e| panic!("{}: {e}", to.display()));
    for entry in std::fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let path = entry.expect("entry").path();
        let target = to.join(path.file_name().expect("a file name"));
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_then_upgrades_the_chart_with_its_default_values() {
    let ctx = promotion_testenv::context("deploy-helm-defaults").await;
    let release = unique(&ctx.namespace, "pc");
    let values = test_scoped(&ctx.namespace, &format!("{release}-approver"));
    let objects = render_chart(&release, &ctx.namespace, &values);
    assert_eq!(
        kinds(&objects),
        [
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ConfigMap",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    );
    let (_, config) = config_of(&objects);
    assert_eq!(
        config.webhook_secret_ref.map(|s| s.name).as_deref(),
        Some("promotion-webhooks")
    );
    let env = env_of(&objects);
    assert_eq!(env["PROMOTION_LEADER_ELECTION"], "true");
    assert_eq!(env["PROMOTION_LOG_FORMAT"], "json");
    assert!(!env.contains_key("WATCH_NAMESPACE"));
    assert_eq!(
        container(&objects)["image"],
        "ghcr.io/promotion-controller/promotion-controller:0.1.0"
    );

    // Installed for real: every object accepted by the API server (the pods
    // never run: there are no nodes).
    let helm = helm::Helm::new("install");
    let rel = helm::Release {
        name: &release,
        namespace: &ctx.namespace,
    };
    helm.install(&ctx.kubeconfig, &chart_dir(), &rel, &values, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let notes = helm
        .get(&ctx.kubeconfig, "notes", &rel)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(notes.contains(&ctx.namespace), "NOTES.txt renders: {notes}");
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    sa.get(&release).await.expect("the ServiceAccount exists");
    let roles: Api<k8s_openapi::api::rbac::v1::Role> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    roles.get(&release).await.expect("the Role exists");
    Api::<ClusterRole>::all(ctx.client.clone())
        .get(&release)
        .await
        .expect("the ClusterRole exists");
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let before = deployments
        .get(&release)
        .await
        .expect("the Deployment exists");
    Api::<ValidatingAdmissionPolicy>::all(ctx.client.clone())
        .get(&format!("{release}-approval"))
        .await
        .expect("the approval policy exists");

    // An upgrade with a changed configuration and log format rolls the pod template.
    let changed = merged(
        values.clone(),
        &yaml("{logFormat: text, config: {argocd: {sync: true}}}"),
    );
    helm.install(&ctx.kubeconfig, &chart_dir(), &rel, &changed, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let after = deployments
        .get(&release)
        .await
        .expect("the Deployment exists");
    let template = |d: &Deployment| serde_json::to_value(&d.spec.template).expect("JSON");
    let checksum =
        |d: &Deployment| template(d)["metadata"]["annotations"]["checksum/config"].clone();
    assert_ne!(
        checksum(&after),
        checksum(&before),
        "a new config rolls the pod"
    );
    let env = template(&after)["spec"]["containers"][0]["env"].clone();
    assert!(
        env.as_array()
            .is_some_and(|e| e.contains(&json!({"name": "PROMOTION_LOG_FORMAT", "value": "text"}))),
        "{env}"
    );
    let config: k8s_openapi::api::core::v1::ConfigMap =
        Api::namespaced(ctx.client.clone(), &ctx.namespace)
            .get(&format!("{release}-config"))
            .await
            .expect("the ConfigMap exists");
    let text = config
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .unwrap_or_default();
    let parsed = FileConfig::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert!(parsed.argocd.sync, "the upgrade changed the config: {text}");
    let history = helm
        .run(&[
            "history",
            &release,
            "--namespace",
            &ctx.namespace,
            "--kubeconfig",
            &ctx.kubeconfig.display().to_string(),
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        history.contains("deployed") && history.contains("superseded"),
        "{history}"
    );
}

/// Every value of deploy/README.md's table changed from its default; `namespace` is
/// watched, holds the Applications and is guarded by the approval policy.
fn every_value_changed(name: &str, namespace: &str) -> serde_yaml::Value {
    yaml(&format!(
        r#"
image: {{repository: registry.example.com/tools/promotion, tag: "1.2.3", pullPolicy: Always}}
imagePullSecrets: [{{name: regcred}}]
fullnameOverride: {name}
replicas: 2
resources: {{requests: {{cpu: 100m, memory: 128Mi}}, limits: {{cpu: "1", memory: 512Mi}}}}
watchNamespace: {namespace}
leaderElection: false
logFormat: text
pollInterval: 30s
maxConcurrentReconciles: 8
config:
  connections:
    - {{name: gitlab, kind: gitlab, url: "https://gitlab.example.com", default: true, secretRef: {{name: gitlab-ci}}}}
  repositories:
    - {{owner: acme, name: shop, namespace: team-a, environment: dev, application: {{name: "shop-pr-${{PR_NUMBER}}"}}}}
  webhookSecretRef: {{name: hooks}}
  argocd: {{sync: true, refresh: false}}
serviceAccount: {{create: false, name: existing-sa}}
rbac: {{create: true, applicationNamespaces: [{namespace}, {namespace}]}}
webhookTLS: {{secretName: webhook-tls, reloadInterval: 1m}}
service: {{type: NodePort, metricsPort: 18080, webhookPort: 443}}
podAnnotations: {{prometheus.io/scrape: "true"}}
nodeSelector: {{kubernetes.io/os: linux}}
tolerations: [{{key: dedicated, operator: Equal, value: ci, effect: NoSchedule}}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions: [{{key: kubernetes.io/arch, operator: In, values: [amd64, arm64]}}]
approval:
  policy: {{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {namespace}}}}}}}
  approverRole: {{name: {name}-approver, aggregateToAdmin: true}}
"#
    ))
}

#[tokio::test(flavor = "multi_thread")]
async fn helm_installs_the_chart_with_every_value_changed() {
    let ctx = promotion_testenv::context("deploy-helm-values").await;
    let name = unique(&ctx.namespace, "promotion");
    let overrides = every_value_changed(&name, &ctx.namespace);
    let objects = render_chart("ignored-release-name", &ctx.namespace, &overrides);
    assert!(
        objects
            .iter()
            .all(|o| kind_of(o) == "CustomResourceDefinition" || name_of(o).starts_with(&name)),
        "fullnameOverride names every object"
    );
    assert!(
        !kinds(&objects).contains(&"ServiceAccount".to_string()),
        "serviceAccount.create=false creates none"
    );
    // watchNamespace: Roles only; the one ClusterRole is the approvers' example.
    assert_eq!(
        objects
            .iter()
            .filter(|o| kind_of(o).starts_with("Cluster"))
            .map(|o| format!("{} {}", kind_of(o), name_of(o)))
            .collect::<Vec<_>>(),
        [format!("ClusterRole {name}-approver")]
    );
    let bindings: Vec<&Value> = objects
        .iter()
        .filter(|o| kind_of(o) == "RoleBinding")
        .collect();
    assert_eq!(
        bindings.len(),
        3,
        "trackers, Applications (the namespace listed twice counts once), own namespace"
    );
    for binding in bindings {
        assert_eq!(binding["subjects"][0]["name"], "existing-sa");
    }
    let deployment = find(&objects, "Deployment");
    let pod = &deployment["spec"]["template"];
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(pod["spec"]["serviceAccountName"], "existing-sa");
    assert_eq!(pod["spec"]["imagePullSecrets"][0]["name"], "regcred");
    assert_eq!(pod["spec"]["nodeSelector"]["kubernetes.io/os"], "linux");
    assert_eq!(pod["spec"]["tolerations"][0]["key"], "dedicated");
    assert!(pod["spec"]["affinity"]["nodeAffinity"].is_object());
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/scrape"],
        "true"
    );
    let c = container(&objects);
    assert_eq!(c["image"], "registry.example.com/tools/promotion:1.2.3");
    assert_eq!(c["imagePullPolicy"], "Always");
    assert_eq!(c["resources"]["limits"]["cpu"], "1");
    let env = env_of(&objects);
    assert_eq!(env["WATCH_NAMESPACE"], ctx.namespace.as_str());
    assert_eq!(
        env["PROMOTION_WEBHOOK_TLS_CERT_FILE"],
        "/etc/promotion-controller-tls/tls.crt"
    );
    assert_eq!(env["PROMOTION_WEBHOOK_TLS_RELOAD_INTERVAL"], "1m");
    assert_eq!(
        pod["spec"]["volumes"][1]["secret"]["secretName"],
        "webhook-tls"
    );
    assert_eq!(env["PROMOTION_LEADER_ELECTION"], "false");
    assert_eq!(env["PROMOTION_LOG_FORMAT"], "text");
    assert_eq!(env["PROMOTION_POLL_INTERVAL"], "30s");
    assert_eq!(env["PROMOTION_MAX_CONCURRENT_RECONCILES"], "8");
    let service = find(&objects, "Service");
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["port"], 18080);
    assert_eq!(service["spec"]["ports"][1]["port"], 443);
    let (_, config) = config_of(&objects);
    assert_eq!(config.connections[0].name, "gitlab");
    assert_eq!(
        config.repositories[0].application.name,
        "shop-pr-${PR_NUMBER}"
    );
    assert!(config.argocd.sync && !config.argocd.refresh);
    // A changed configuration changes the pod template, so the pod restarts to read it.
    let default_checksum = find(
        &render_chart("x", &ctx.namespace, &yaml("{}")),
        "Deployment",
    )["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
        .clone();
    assert_ne!(
        pod["metadata"]["annotations"]["checksum/config"],
        default_checksum
    );
    let approver = find_named(&objects, "ClusterRole", &format!("{name}-approver"));
    assert_eq!(
        approver["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"],
        "true"
    );
    helm::Helm::new("install-values")
        .install(
            &ctx.kubeconfig,
            &chart_dir(),
            &helm::Release {
                name: "ignored-release-name",
                namespace: &ctx.namespace,
            },
            &overrides,
            false,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ctx.namespace);
    let installed = deployments.get(&name).await.expect("the Deployment exists");
    assert_eq!(installed.spec.replicas, Some(2));

    // rbac.create=false: no RBAC at all, for clusters where it is managed elsewhere.
    let no_rbac = render_chart("x", &ctx.namespace, &yaml("rbac: {create: false}"));
    assert!(
        no_rbac.iter().all(|o| !kind_of(o).contains("Role")),
        "{:?}",
        kinds(&no_rbac)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manifests_apply_as_kubectl_apply_k_would() {
    let ctx = promotion_testenv::context("deploy-manifests").await;
    // As installed, everything lands in promotion-system ...
    let as_is = kustomize(&root().join("deploy/manifests"), None);
    for obj in as_is.iter().filter(|o| !cluster_scoped(kind_of(o))) {
        assert_eq!(obj["metadata"]["namespace"], "promotion-system");
    }
    // ... and here in the test's own namespace, as `kustomize edit set namespace` would.
    let objects = kustomize(&root().join("deploy/manifests"), Some(&ctx.namespace));
    assert_eq!(name_of(find(&objects, "Namespace")), ctx.namespace);
    for binding in ["ClusterRoleBinding", "RoleBinding"] {
        assert_eq!(
            find(&objects, binding)["subjects"][0]["namespace"],
            ctx.namespace.as_str()
        );
    }
    config_of(&objects);
    let mut objects = objects;
    own_approval_objects(&mut objects, &ctx.namespace, &unique(&ctx.namespace, "m"));
    apply(
        &ctx.client,
        &objects,
        &["Deployment", "Service", "ConfigMap"],
    )
    .await;
    let sa: Api<k8s_openapi::api::core::v1::ServiceAccount> =
        Api::namespaced(ctx.client.clone(), &ctx.namespace);
    sa.get("promotion-controller")
        .await
        .expect("the ServiceAccount exists");
}

/// The manifests' approval objects made this test's own, as a kustomize
/// `nameSuffix` and a patch of the binding would: unique names, and a binding
/// that guards `namespace` only (a cluster-wide one would judge every other
/// test's trackers).
fn own_approval_objects(objects: &mut [Value], namespace: &str, suffix: &str) {
    for obj in objects.iter_mut() {
        let kind = kind_of(obj).to_string();
        let owned = matches!(
            kind.as_str(),
            "ValidatingAdmissionPolicy" | "ValidatingAdmissionPolicyBinding"
        ) || (kind == "ClusterRole" && name_of(obj) == "promotion-approver");
        if !owned {
            continue;
        }
        let name = format!("{}-{suffix}", name_of(obj));
        obj["metadata"]["name"] = json!(name);
        if kind == "ValidatingAdmissionPolicyBinding" {
            let policy = obj["spec"]["policyName"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            obj["spec"]["policyName"] = json!(format!("{policy}-{suffix}"));
            obj["spec"]["matchResources"] = json!({"namespaceSelector": {
                "matchLabels": {"kubernetes.io/metadata.name": namespace}
            }});
        }
    }
}

// ---------------------------------------------------------------------------
// The real binary, with exactly the chart's rights.

/// The controller binary as a child process; killed when dropped.
struct Controller {
    child: Child,
    log: Arc<Mutex<String>>,
    probe: u16,
    webhook: u16,
    files: Vec<PathBuf>,
}

impl Controller {
    fn log(&self) -> String {
        self.log.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Fails the test with the log if the process has exited.
    fn check_alive(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!("the controller exited ({status}); its log:\n{}", self.log());
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One HTTP/1.1 request to the child; returns (status code, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(_) => return (0, String::new()),
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    if stream.write_all(req.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, String::new());
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    let code = answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = answer
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// The admin kubeconfig, impersonating `user` (the admin is system:masters, so it may).
fn impersonating(kubeconfig: &Path, user: &str, out: &Path) {
    let text = std::fs::read_to_string(kubeconfig).expect("the testenv kubeconfig");
    let mut kc = yaml(&text);
    let users = kc
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .expect("kubeconfig users");
    for u in users {
        let auth = u
            .get_mut("user")
            .and_then(|a| a.as_mapping_mut())
            .expect("a user entry");
        auth.insert("as".into(), user.into());
    }
    std::fs::write(out, serde_yaml::to_string(&kc).expect("YAML")).expect("writing a kubeconfig");
}

/// Starts the binary as the Deployment would: the container's env (downward API
/// resolved), the ConfigMap's config.yaml, and a kubeconfig that impersonates
/// the chart's ServiceAccount instead of its in-cluster token.
async fn start_controller(objects: &[Value], namespace: &str, kubeconfig: &Path) -> Controller {
    let dir = std::env::temp_dir();
    let config_path = dir.join(format!("{namespace}-config.yaml"));
    let kubeconfig_path = dir.join(format!("{namespace}-kubeconfig.yaml"));
    std::fs::write(&config_path, config_of(objects).0).expect("writing config.yaml");
    let sa = find(objects, "RoleBinding")["subjects"][0]["name"]
        .as_str()
        .expect("the bound ServiceAccount")
        .to_string();
    impersonating(
        kubeconfig,
        &format!("system:serviceaccount:{namespace}:{sa}"),
        &kubeconfig_path,
    );
    let (probe, webhook) = (free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_promotion-controller"));
    // Nothing from the test's environment (KUBECONFIG, RUST_LOG, ...) leaks in.
    cmd.env_clear();
    for (name, value) in env_of(objects) {
        let value = match value {
            Value::String(s) => s,
            from => match from["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => namespace.to_string(),
                Some("metadata.name") => "promotion-controller-6d4b9c7f5-x2k8p".to_string(),
                other => panic!("the test cannot resolve env {name} from {other:?}"),
            },
        };
        cmd.env(name, value);
    }
    cmd.env("PROMOTION_CONFIG", &config_path)
        .arg("--kubeconfig")
        .arg(&kubeconfig_path)
        .arg("--probe-address")
        .arg(format!("127.0.0.1:{probe}"))
        .arg("--webhook-address")
        .arg(format!("127.0.0.1:{webhook}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("starting the controller binary");
    let log = Arc::new(Mutex::new(String::new()));
    let pipes: [Box<dyn Read + Send>; 2] = [
        Box::new(child.stdout.take().expect("stdout")),
        Box::new(child.stderr.take().expect("stderr")),
    ];
    for pipe in pipes {
        let log = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Ok(mut l) = log.lock() {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
    }
    let mut c = Controller {
        child,
        log,
        probe,
        webhook,
        files: vec![config_path, kubeconfig_path],
    };
    // Ready: it holds the Lease and its caches are filled.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        c.check_alive();
        let port = c.probe;
        let (code, _) = tokio::task::spawn_blocking(move || http(port, "GET", "/readyz", &[], b""))
            .await
            .expect("probe");
        if code == 200 {
            return c;
        }
        assert!(
            Instant::now() < deadline,
            "the controller never became ready; its log:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A signed GitHub pull_request delivery to the binary's webhook port.
async fn deliver_pr(c: &Controller, number: i64, sha: &str, updated_at: &str) -> (u16, String) {
    let body = serde_json::to_vec(&json!({
        "action": "opened", "number": number,
        "pull_request": {"number": number, "state": "open", "head": {"sha": sha, "ref": "feature"}, "updated_at": updated_at},
        "repository": {"name": "shop", "full_name": "acme/shop", "owner": {"login": "acme"}}
    }))
    .expect("JSON");
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).expect("any key");
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let port = c.webhook;
    tokio::task::spawn_blocking(move || {
        http(
            port,
            "POST",
            "/webhooks/github",
            &[
                ("Content-Type", "application/json".into()),
                ("X-GitHub-Event", "pull_request".into()),
                (
                    "X-GitHub-Delivery",
                    format!("d3b07384-d113-4ec6-a1b2-{number:012x}"),
                ),
                ("X-Hub-Signature-256", signature),
            ],
            &body,
        )
    })
    .await
    .expect("webhook delivery")
}

/// An Argo CD Application that opted in to promotion by `policy_ns`'s policies to
/// staging, Synced and Healthy at `revision` (status written directly: the CRD has
/// no status subresource, as Argo CD's has none).
async fn create_app(apps: &Api<DynamicObject>, name: &str, revision: &str, policy_ns: &str) {
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": name, "annotations": {
            promotion_argocd::ALLOW_PROMOTION_FROM: format!("{policy_ns}/staging")
        }},
        "spec": {"project": "default",
                 "source": {"repoURL": "https://git.example.com/acme/shop.git", "path": "deploy", "targetRevision": revision},
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": name}},
        "status": {"sync": {"status": "Synced", "revision": revision}, "health": {"status": "Healthy"}}
    }))
    .expect("an Application");
    apps.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating Application {name}: {e}"));
}

async fn wait_until<T>(
    what: &str,
    c: &mut Controller,
    mut probe: impl AsyncFnMut() -> Option<T>,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        c.check_alive();
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; the controller's log:\n{}",
            c.log()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn status_text(t: &PullRequestTracker) -> String {
    serde_json::to_string(&t.status).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_binary_promotes_with_exactly_the_charts_rights() {
    let ctx = promotion_testenv::context("deploy-rbac").await;
    let client = ctx.client.clone();
    let team = promotion_testenv::fresh_namespace(&client, "deploy-rbac-team")
        .await
        .expect("team namespace");
    let argocd = promotion_testenv::fresh_namespace(&client, "deploy-rbac-argocd")
        .await
        .expect("Argo CD namespace");
    let crd = promotion_argocd::testing::application_crd().expect("the Application CRD parses");
    promotion_testenv::install_crd_objects(&client, vec![crd])
        .await
        .expect("installing the Application CRD");

    // The PR's truth is read from GitHub (a stand-in here), through a github
    // connection whose token the controller reads from a Secret with the chart's rights.
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
    let github_secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "github-bot"},
        "stringData": {"token": token}
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &github_secret)
        .await
        .expect("creating the GitHub Secret");

    // The chart as a team would install it: watching its namespace, with a repository.
    let release = unique(&ctx.namespace, "pc");
    let overrides = yaml(&format!(
        r#"
serviceAccount: {{name: promotion-controller}}
watchNamespace: {team}
rbac: {{applicationNamespaces: [{argocd}]}}
pollInterval: 300ms
logFormat: text
config:
  connections:
    - {{name: github, kind: github, url: "{github_url}", default: true, secretRef: {{name: github-bot}}}}
  repositories:
    - {{owner: acme, name: shop, namespace: {team}, environment: dev,
       application: {{namespace: {argocd}, name: "shop-pr-${{PR_NUMBER}}"}}}}
"#,
        github_url = github.github_url
    ));
    // Installed by helm, every object for real; the pod is this test's child process.
    let values = merged(
        test_scoped(&ctx.namespace, &format!("{release}-approver")),
        &overrides,
    );
    let helm = helm::Helm::new("install-binary");
    let rel = helm::Release {
        name: &release,
        namespace: &ctx.namespace,
    };
    helm.install(&ctx.kubeconfig, &chart_dir(), &rel, &values, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let manifest = helm
        .get(&ctx.kubeconfig, "manifest", &rel)
        .unwrap_or_else(|e| panic!("{e}"));
    let objects = documents(&manifest, "helm get manifest");
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "promotion-webhooks"},
        "stringData": {"github": WEBHOOK_SECRET}
    }))
    .expect("a Secret");
    Api::<Secret>::namespaced(client.clone(), &ctx.namespace)
        .create(&PostParams::default(), &secret)
        .await
        .expect("creating the webhook Secret");

    let apps: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &argocd, &application_resource());
    create_app(&apps, "shop-pr-42", SHA, &team).await;
    create_app(&apps, "shop-staging", OLD_SHA, &team).await;
    let policy: promotion_api::PromotionPolicy = serde_json::from_value(json!({
        "apiVersion": "promotion.io/v1alpha1", "kind": "PromotionPolicy",
        "metadata": {"name": "dev-to-staging"},
        // No CI connection here: the hop is ungated, which a policy must say outright.
        "spec": {"sourceEnvironment": "dev", "targetEnvironment": "staging", "allowUngated": true,
                 "promotion": {"application": {"namespace": argocd, "name": "shop-staging"}}}
    }))
    .expect("a policy");
    let policies: Api<promotion_api::PromotionPolicy> = Api::namespaced(client.clone(), &team);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("creating the policy");

    let started = Instant::now();
    let mut c = start_controller(&objects, &ctx.namespace, &ctx.kubeconfig).await;
    let lease: Lease = Api::namespaced(client.clone(), &ctx.namespace)
        .get("promotion-controller")
        .await
        .expect("the controller created its Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("promotion-controller-6d4b9c7f5-x2k8p"),
        "the Lease is held by the pod's name"
    );
    // The policy's verdict shows in its status (promotionpolicies/status: patch).
    wait_until("the policy to be Ready", &mut c, async || {
        let p = policies.get("dev-to-staging").await.ok()?;
        p.status?
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True")
            .then_some(())
    })
    .await;

    // The webhook creates the tracker (get, create/patch through server-side apply).
    let (code, body) = deliver_pr(&c, 42, SHA, "2026-11-25T10:00:00Z").await;
    assert_eq!(code, 202, "the webhook accepts the PR: {body}\n{}", c.log());
    let trackers: Api<PullRequestTracker> = Api::namespaced(client.clone(), &team);

    // The controller promotes: it points the staging Application at the PR's SHA ...
    wait_until(
        "the staging Application to be promoted",
        &mut c,
        async || {
            let app = apps.get("shop-staging").await.ok()?;
            (app.data["spec"]["source"]["targetRevision"] == SHA).then_some(())
        },
    )
    .await;
    // ... and Argo CD (this test) syncs it.
    apps.patch(
        "shop-staging",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "sync": {"status": "Synced", "revision": SHA}, "health": {"status": "Healthy"}
        }})),
    )
    .await
    .expect("syncing the staging Application");
    let done = wait_until("the tracker to complete in staging", &mut c, async || {
        let t = trackers.get("acme-shop-pr-42").await.ok()?;
        let s = t.status.as_ref()?;
        (s.phase == Some(Phase::Completed) && s.current_environment.as_deref() == Some("staging"))
            .then_some(t)
    })
    .await;
    println!(
        "PR 42 went dev -> staging -> Completed in {:.1?} after the controller started",
        started.elapsed()
    );
    assert_eq!(done.status.as_ref().map(|s| s.promotions.len()), Some(1));
    let events: Api<Event> = Api::namespaced(client.clone(), &team);
    let about: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("acme-shop-pr-42"))
        .filter_map(|e| e.reason)
        .collect();
    assert!(!about.is_empty(), "Events about the tracker were published");
    let log = c.log();
    let lower = log.to_lowercase();
    assert!(
        !lower.contains("forbidden") && !lower.contains("code: 403"),
        "the controller was refused something with the chart's rules:\n{log}"
    );

    // Without one rule (patching Applications) the same hop stops, and says why.
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), &argocd);
    let role_name = format!("{release}-applications");
    let mut role = roles.get(&role_name).await.expect("the Applications' Role");
    for rule in role.rules.iter_mut().flatten() {
        if rule.api_groups.as_deref() == Some(&["argoproj.io".to_string()][..]) {
            rule.verbs.retain(|v| v != "patch");
        }
    }
    roles
        .replace(&role_name, &PostParams::default(), &role)
        .await
        .expect("narrowing the Role");
    create_app(&apps, "shop-pr-43", SHA2, &team).await;
    github.pull_requests.open("acme/shop", 43, SHA2);
    let (code, body) = deliver_pr(&c, 43, SHA2, "2026-11-25T11:00:00Z").await;
    assert_eq!(code, 202, "the webhook accepts the PR: {body}");
    let blocked = wait_until("the forbidden promotion to show", &mut c, async || {
        let t = trackers.get("acme-shop-pr-43").await.ok()?;
        let text = status_text(&t);
        text.contains("403 Forbidden").then_some(text)
    })
    .await;
    // Taking the environment's hold (an annotation patch) is the first write to the
    // Application, so that is where the missing right shows.
    assert!(
        blocked.contains("cannot take the target environment") && blocked.contains("shop-staging"),
        "the tracker names the refused promotion: {blocked}"
    );
    let staging = apps.get("shop-staging").await.expect("staging");
    assert_eq!(
        staging.data["spec"]["source"]["targetRevision"], SHA,
        "nothing moved without the right"
    );
    drop(c);
}

//! Each `kubectl promotion` command, run as the real binary against the real API
//! server, with tracker statuses written through the status subresource; and each
//! as a user without the right to do it.

mod support;

use serde_json::{Value, json};
use support::*;

const JOB_URL: &str = "http://jenkins.local/job/team/job/smoke/7/";

/// Three PRs: #42 done in prod, #43 awaiting approval for prod in staging (so it
/// holds staging), #44 queued in dev behind #43.
async fn three_prs(env: &Env) {
    env.chain().await;
    env.tracker("shop-pr-42", 42, SHA_42).await;
    env.tracker("shop-pr-43", 43, SHA_43).await;
    env.tracker("shop-pr-44", 44, SHA_44).await;
    let mut done = status("prod", "Completed", SHA_42, "no policy leads out of prod");
    done["promotions"] = json!([
        record(
            "dev",
            "staging",
            "dev-to-staging",
            SHA_42,
            "2026-11-29T10:05:00Z",
            "promotion-controller",
            vec![
                run("smoke", "Passed", JOB_URL),
                run("api-contract", "Passed", "http://gha.local/runs/1")
            ]
        ),
        record(
            "staging",
            "prod",
            "staging-to-prod",
            SHA_42,
            "2026-11-29T10:20:00Z",
            "alice",
            vec![run("e2e", "Passed", "http://gitlab.local/pipelines/3")]
        ),
    ]);
    env.set_status("shop-pr-42", done).await;
    let mut waiting = status(
        "staging",
        "AwaitingApproval",
        SHA_43,
        "waiting for approval to prod",
    );
    waiting["policy"] = json!({"name": "staging-to-prod"});
    waiting["testRuns"] = json!([run("e2e", "Passed", "http://gitlab.local/pipelines/4")]);
    waiting["promotions"] = json!([record(
        "dev",
        "staging",
        "dev-to-staging",
        SHA_43,
        "2026-11-29T11:00:00Z",
        "promotion-controller",
        vec![run("smoke", "Passed", JOB_URL)]
    )]);
    env.set_status("shop-pr-43", waiting).await;
    let ns = env.ns().to_string();
    let mut queued = status("dev", "Queued", SHA_44, "staging is held by another PR");
    queued["policy"] = json!({"name": "dev-to-staging"});
    queued["testRuns"] = json!([run("smoke", "Passed", JOB_URL)]);
    queued["queue"] = json!({"environment": "staging", "position": 1,
        "application": {"cluster": "in-cluster", "namespace": ns, "name": "shop-staging"},
        "holder": format!("{ns}/shop-pr-43"), "since": "2026-11-29T11:05:00Z"});
    env.set_status("shop-pr-44", queued).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn status_shows_each_pr_in_the_environments_of_the_chain_in_order() {
    let env = Env::new("status-chain").await;
    three_prs(&env).await;
    let out = env.run(&["status"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let header = out.stdout.lines().next().expect("a header");
    let cols: Vec<&str> = header.split_whitespace().collect();
    assert_eq!(cols, ["PR", "DEV", "STAGING", "PROD"], "{}", out.stdout);
    let row = |n: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("no row {n} in\n{}", out.stdout))
            .to_string()
    };
    assert!(row("acme/shop#42").contains("Completed"), "{}", out.stdout);
    assert!(row("acme/shop#43").contains(&format!("AwaitingApproval for prod@{}", &SHA_43[..7])));
    assert!(
        row("acme/shop#44").contains(&format!(
            "Queued #1 for staging behind {}/shop-pr-43",
            env.ns()
        )),
        "{}",
        out.stdout
    );
    assert!(
        !out.stdout.contains('\x1b'),
        "no colours when not on a terminal"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn status_as_json_and_wide_carries_the_gates_queue_and_approval() {
    let env = Env::new("status-json").await;
    three_prs(&env).await;
    let out = env.run(&["status", "-o", "json"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let v: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(v["environments"], json!(["dev", "staging", "prod"]));
    let rows = v["rows"].as_array().expect("rows");
    let by = |n: i64| rows.iter().find(|r| r["number"] == n).expect("row").clone();
    assert_eq!(by(44)["queue"]["position"], 1);
    assert_eq!(by(43)["approval_needed"], "prod");
    assert_eq!(by(42)["cells"][0]["gates"][0]["url"], JOB_URL);
    let wide = env.run(&["status", "-o", "wide"]).await;
    assert!(
        wide.stdout.contains("smoke=Passed api-contract=Passed"),
        "{}",
        wide.stdout
    );
    assert!(wide.stdout.contains("shop-pr-44"), "{}", wide.stdout);
    let yaml = env.run(&["status", "-A", "-o", "yaml"]).await;
    assert!(yaml.stdout.contains("namespace: "), "{}", yaml.stdout);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_permission_is_told_what_they_may_not_do() {
    let env = Env::new("forbidden").await;
    three_prs(&env).await;
    let mallory = env.kubeconfig_as("mallory");
    let ns = env.ns();
    for (args, sentence) in [
        (
            vec!["status"],
            format!("you may not list pullrequesttrackers in namespace {ns}"),
        ),
        (
            vec!["explain", "shop-pr-43"],
            format!("you may not get pullrequesttrackers in namespace {ns}"),
        ),
        (
            vec!["history", "43"],
            format!("you may not list pullrequesttrackers in namespace {ns}"),
        ),
        (
            vec!["policies"],
            format!("you may not list promotionpolicies in namespace {ns}"),
        ),
        (
            vec!["watch"],
            format!("you may not watch pullrequesttrackers in namespace {ns}"),
        ),
        (
            vec!["retry", "shop-pr-43"],
            format!("you may not get pullrequesttrackers in namespace {ns}"),
        ),
    ] {
        let out = env.run_with(&mallory, &args).await;
        assert_eq!(out.code, 3, "{args:?}: {out:?}");
        assert_eq!(out.stderr.trim(), format!("error: {sentence}"), "{args:?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_a_failed_pr_names_the_failed_test_its_link_and_retry_and_exits_2() {
    let env = Env::new("explain-failed").await;
    env.chain().await;
    env.tracker("shop-pr-43", 43, SHA_43).await;
    let mut failed = status("dev", "Failed", SHA_43, "required test smoke failed");
    failed["policy"] = json!({"name": "dev-to-staging"});
    failed["testRuns"] = json!([
        run("smoke", "Failed", JOB_URL),
        run("api-contract", "Passed", "http://gha.local/runs/2")
    ]);
    env.set_status("shop-pr-43", failed).await;
    let out = env.run(&["explain", "43"]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(
        out.stdout
            .contains("Failed: required test smoke failed in dev"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "test smoke (jenkins team/smoke): Failed: job finished FAILURE  {JOB_URL}"
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(&format!("kubectl promotion retry 43 -n {}", env.ns())),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_a_pr_awaiting_approval_says_a_void_approval_is_void_and_exits_1() {
    let env = Env::new("explain-approval").await;
    three_prs(&env).await;
    // An approval for an older commit must not count.
    kube::api::Api::<kube::api::DynamicObject>::namespaced_with(
        env.ctx.client.clone(),
        env.ns(),
        &kubectl_promotion::cluster::trackers_resource(),
    )
    .patch(
        "shop-pr-43",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"metadata": {"annotations": {
            "promotion.io/approve": "prod@0000000", "promotion.io/approved-by": "bob"}}})),
    )
    .await
    .expect("annotated");
    let out = env.run(&["explain", "acme/shop#43"]).await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "waits for a person to approve the promotion to prod at {}",
            &SHA_43[..7]
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("the approval on the tracker is void: it approves prod@0000000 (by bob)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(&format!(
            "kubectl promotion approve acme/shop#43 --to prod -n {}",
            env.ns()
        )),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_a_queued_pr_names_its_place_and_a_holder_that_waits_on_a_person() {
    let env = Env::new("explain-queued").await;
    three_prs(&env).await;
    let out = env.run(&["explain", "44", "-o", "json"]).await;
    assert_eq!(
        out.code, 1,
        "the holder waits for approval, so the queue does: {out:?}"
    );
    let d: Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(d["verdict"], "waits-on-person");
    assert!(
        d["reason"]
            .as_str()
            .unwrap_or("")
            .contains("#1 in line for staging"),
        "{d}"
    );
    assert_eq!(
        d["command"],
        format!(
            "kubectl promotion approve shop-pr-43 --to prod -n {}   (the holder's approval)",
            env.ns()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_a_testing_pr_lists_the_running_tests_and_exits_0() {
    let env = Env::new("explain-testing").await;
    env.chain().await;
    env.tracker("shop-pr-45", 45, SHA_42).await;
    let mut testing = status("dev", "Testing", SHA_42, "2 gate tests running");
    testing["testRuns"] = json!([
        run("smoke", "Running", JOB_URL),
        run("api-contract", "Passed", "http://gha.local/runs/9")
    ]);
    env.set_status("shop-pr-45", testing).await;
    let out = env.run(&["explain", "45"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout
            .contains("waiting for gate tests in dev to finish: smoke"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_names_the_head_sha_and_the_user_the_api_server_knows() {
    let env = Env::new("approve").await;
    three_prs(&env).await;
    env.grant("alice", &["get", "list", "watch", "patch", "approve"])
        .await;
    let alice = env.kubeconfig_as("alice");
    let out = env
        .run_with(&alice, &["approve", "43", "--to", "prod"])
        .await;
    assert_eq!(out.code, 0, "{out:?}");
    let a = env.annotations("shop-pr-43").await;
    assert_eq!(
        a.get("promotion.io/approve"),
        Some(&format!("prod@{SHA_43}"))
    );
    assert_eq!(
        a.get("promotion.io/approved-by").map(String::as_str),
        Some("alice")
    );
    assert!(
        out.stdout.contains(&format!(
            "approved acme/shop#43 for prod at {} as alice",
            &SHA_43[..7]
        )),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn approve_without_the_approve_verb_is_refused_and_writes_nothing() {
    let env = Env::new("approve-denied").await;
    three_prs(&env).await;
    env.grant("carol", &["get", "list", "watch", "patch"]).await;
    let carol = env.kubeconfig_as("carol");
    let out = env
        .run_with(&carol, &["approve", "43", "--to", "prod"])
        .await;
    assert_eq!(out.code, 3, "{out:?}");
    assert_eq!(
        out.stderr.trim(),
        format!(
            "error: you may not approve pullrequesttrackers in namespace {}",
            env.ns()
        )
    );
    assert_eq!(
        env.annotations("shop-pr-43")
            .await
            .get("promotion.io/approve"),
        None
    );
    let typo = env.run(&["approve", "43", "--to", "prdo"]).await;
    assert_eq!(typo.code, 3);
    assert!(
        typo.stderr.contains("no policy in namespace") && typo.stderr.contains("prod, staging"),
        "{typo:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retry_writes_a_new_retry_value_each_time() {
    let env = Env::new("retry").await;
    three_prs(&env).await;
    env.grant("alice", &["get", "list", "patch"]).await;
    let alice = env.kubeconfig_as("alice");
    let first = env.run_with(&alice, &["retry", "42"]).await;
    assert_eq!(first.code, 0, "{first:?}");
    let one = env
        .annotations("shop-pr-42")
        .await
        .get("promotion.io/retry")
        .cloned();
    assert!(one.is_some());
    assert!(
        first
            .stdout
            .contains("note: it is Completed in prod, not Failed"),
        "{}",
        first.stdout
    );
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let second = env.run_with(&alice, &["retry", "42"]).await;
    assert_eq!(second.code, 0);
    let two = env
        .annotations("shop-pr-42")
        .await
        .get("promotion.io/retry")
        .cloned();
    assert_ne!(
        one, two,
        "a retry the controller already acted on would be ignored"
    );
    env.grant("dave", &["get", "list"]).await;
    let dave = env.kubeconfig_as("dave");
    let denied = env.run_with(&dave, &["retry", "42"]).await;
    assert_eq!(
        denied.stderr.trim(),
        format!(
            "error: you may not patch pullrequesttrackers in namespace {}",
            env.ns()
        )
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn history_lists_the_promotions_in_order_with_their_gating_runs() {
    let env = Env::new("history").await;
    three_prs(&env).await;
    let out = env.run(&["history", "42"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle:?} in\n{}", out.stdout))
    };
    let first =
        at("promoted dev -> staging at 3f2c9a1 by promotion-controller (policy dev-to-staging)");
    let second = at("promoted staging -> prod at 3f2c9a1 by alice (policy staging-to-prod)");
    assert!(first < second);
    assert!(
        lines[first + 1].contains(&format!("smoke (jenkins) Passed in 120s  {JOB_URL}")),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("now: Completed in prod"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policies_draws_the_chain_and_flags_a_cycle_and_a_conflict() {
    let env = Env::new("policies").await;
    env.chain().await;
    let ok = env.run(&["policies"]).await;
    assert_eq!(ok.code, 0, "{ok:?}");
    assert!(
        ok.stdout.contains("dev ──▶ staging ──▶ prod"),
        "{}",
        ok.stdout
    );
    assert!(
        ok.stdout
            .contains("staging-to-prod   tests: e2e   approval required"),
        "{}",
        ok.stdout
    );
    assert!(ok.stdout.contains("ok: one chain"), "{}", ok.stdout);
    env.policy("prod-to-dev", "prod", "dev", true, &[]).await;
    env.policy("dev-to-qa", "dev", "qa", true, &[]).await;
    let bad = env.run(&["policies"]).await;
    assert!(
        bad.stdout
            .contains("✗ conflict: dev-to-qa, dev-to-staging all lead out of dev"),
        "{}",
        bad.stdout
    );
    assert!(
        bad.stdout
            .contains("✗ cycle: dev -> staging -> prod leads back to dev"),
        "{}",
        bad.stdout
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_redraws_when_a_tracker_moves() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let env = Env::new("watch").await;
    env.chain().await;
    env.tracker("shop-pr-46", 46, SHA_42).await;
    env.set_status("shop-pr-46", status("dev", "Testing", SHA_42, ""))
        .await;
    let mut child = tokio::process::Command::new(binary())
        .arg("--kubeconfig")
        .arg(&env.ctx.kubeconfig)
        .args(["-n", env.ns(), "watch"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("watch runs");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut until = async |needle: &str| -> String {
        let wait = async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("watch ended before showing {needle:?}");
        };
        tokio::time::timeout(std::time::Duration::from_secs(60), wait)
            .await
            .unwrap_or_else(|_| panic!("watch never showed {needle:?}"))
    };
    until("Testing").await;
    let mut queued = status("dev", "Queued", SHA_42, "");
    // The test's own namespace: a real controller on the shared control plane must not
    // see these made-up waiters in the line for a real Application.
    queued["queue"] = json!({"environment": "staging", "position": 2,
        "application": {"cluster": "in-cluster", "namespace": env.ns(), "name": "shop-staging"},
        "since": "2026-11-29T11:05:00Z"});
    env.set_status("shop-pr-46", queued).await;
    let line = until("Queued").await;
    assert!(line.contains("Queued #2 for staging"), "{line}");
    child.kill().await.expect("stopped");
}

#[tokio::test(flavor = "multi_thread")]
async fn explain_a_deploying_pr_shows_what_argo_cd_reports_for_its_application() {
    let env = Env::new("explain-deploying").await;
    let crd = promotion_argocd::testing::application_crd().expect("Application CRD");
    promotion_testenv::install_crd_objects(&env.ctx.client, vec![crd])
        .await
        .expect("Application CRD installed");
    let old = "0000000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let app = json!({
        "apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
        "metadata": {"name": "shop-pr-47", "namespace": env.ns()},
        "spec": {"project": "default",
                 "destination": {"server": "https://kubernetes.default.svc", "namespace": "shop"},
                 "source": {"repoURL": "https://git.local/acme/shop", "path": "deploy", "targetRevision": old}},
        "status": {"sync": {"status": "OutOfSync", "revision": old}, "health": {"status": "Progressing"}}
    });
    let app: kube::api::DynamicObject = serde_json::from_value(app).expect("app");
    kube::api::Api::<kube::api::DynamicObject>::namespaced_with(
        env.ctx.client.clone(),
        env.ns(),
        &kubectl_promotion::cluster::applications_resource(),
    )
    .create(&Default::default(), &app)
    .await
    .expect("Application created");
    env.chain().await;
    env.tracker("shop-pr-47", 47, SHA_42).await;
    let mut deploying = status("dev", "Deploying", SHA_42, "waiting for Argo CD");
    deploying["application"] =
        json!({"cluster": "in-cluster", "namespace": env.ns(), "name": "shop-pr-47"});
    env.set_status("shop-pr-47", deploying).await;
    let out = env.run(&["explain", "47"]).await;
    assert_eq!(out.code, 0, "{out:?}");
    assert!(
        out.stdout.contains(&format!(
            "Application {}/shop-pr-47: targetRevision 0000000, sync OutOfSync at 0000000, health Progressing",
            env.ns()
        )),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("the Application does not deploy the PR's commit 3f2c9a1 yet"),
        "{}",
        out.stdout
    );
}

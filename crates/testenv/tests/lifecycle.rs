//! The control plane never outlives its owner: stopped explicitly, at the end of
//! a test binary that panicked, or with a test process killed by a signal.

use promotion_testenv::{ControlPlane, binaries};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "PROMOTION_TESTENV_LIFECYCLE_CHILD";

fn alive(pid: u32) -> bool {
    // A reaped pid has no /proc entry; an unreaped zombie (state Z) is gone too.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.contains(") Z "),
        Err(_) => false,
    }
}

fn wait_gone(pids: &[u32]) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn stop_ends_both_processes_and_removes_the_files() {
    let bins = binaries::ensure_built().expect("binaries");
    let plane = ControlPlane::start(&bins).expect("control plane starts");
    let pids = plane.pids();
    let dir = plane.dir().to_path_buf();
    assert_eq!(pids.len(), 2);
    assert!(pids.iter().all(|p| alive(*p)));
    assert!(plane.kubeconfig.is_file());
    plane.stop();
    assert!(wait_gone(&pids), "etcd or kube-apiserver outlived stop()");
    assert!(!dir.exists(), "{} left behind", dir.display());
}

#[test]
fn the_apiserver_restarts_on_the_same_etcd_and_port() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let bins = binaries::ensure_built().expect("binaries");
    let mut plane = ControlPlane::start(&bins).expect("control plane starts");
    let server = plane.server.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let kubeconfig = plane.kubeconfig.clone();
    let namespaces = || async {
        let client = promotion_testenv::client_for(&kubeconfig)
            .await
            .expect("client");
        kube::Api::<k8s_openapi::api::core::v1::Namespace>::all(client)
    };
    runtime.block_on(async {
        let ns = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "kept-in-etcd"}
        }))
        .expect("namespace");
        namespaces()
            .await
            .create(&kube::api::PostParams::default(), &ns)
            .await
            .expect("created");
    });
    let before = plane.pids();
    plane.stop_apiserver();
    assert_eq!(plane.pids().len(), 1, "only etcd runs");
    assert!(wait_gone(&before[1..]), "kube-apiserver outlived its stop");
    let down = runtime.block_on(async { namespaces().await.get("kept-in-etcd").await });
    assert!(down.is_err(), "answered while stopped: {down:?}");
    plane.start_apiserver().expect("starts again");
    runtime
        .block_on(plane.wait_apiserver_ready(Duration::from_secs(180)))
        .expect("ready again");
    assert_eq!(plane.server, server, "same address");
    let kept = runtime.block_on(async { namespaces().await.get("kept-in-etcd").await });
    assert!(kept.is_ok(), "the object survived the restart: {kept:?}");
    plane.stop();
}

/// Runs this test binary again with one test selected, in "child" mode.
fn run_child(test: &str, mode: &str) -> (Vec<u32>, std::process::ExitStatus) {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .env_remove(promotion_testenv::KUBECONFIG_ENV)
        .stdin(Stdio::null())
        .output()
        .expect("child runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let pids: Vec<u32> = stdout
        .lines()
        .filter_map(|l| l.split_once("PIDS ").map(|(_, pids)| pids))
        .flat_map(|l| l.split(',').filter_map(|p| p.trim().parse().ok()))
        .collect();
    assert_eq!(
        pids.len(),
        2,
        "child did not report its control plane: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (pids, out.status)
}

/// In child mode: start the process-wide control plane, report it, then die as told.
#[test]
fn child_starts_a_control_plane_then_dies() {
    let Ok(mode) = std::env::var(CHILD_ENV) else {
        return; // Only meaningful when run by the two tests below.
    };
    promotion_testenv::shared_kubeconfig().expect("starts");
    let pids = promotion_testenv::owned_pids();
    println!(
        "PIDS {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",")
    );
    match mode.as_str() {
        "abort" => std::process::abort(),
        _ => panic!("a failing test"),
    }
}

#[test]
fn a_panicking_test_binary_stops_its_control_plane() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (pids, status) = run_child("child_starts_a_control_plane_then_dies", "panic");
    assert!(!status.success(), "the child's test should have failed");
    assert!(
        wait_gone(&pids),
        "control plane leaked after a panicking test: {pids:?}"
    );
}

#[test]
fn a_killed_test_process_takes_its_control_plane_with_it() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let (pids, status) = run_child("child_starts_a_control_plane_then_dies", "abort");
    assert!(!status.success(), "the child should have aborted");
    assert!(
        wait_gone(&pids),
        "control plane leaked after SIGABRT: {pids:?}"
    );
}

#[test]
fn an_audit_policy_makes_the_api_server_log_each_request() {
    let dir = tempfile::tempdir().expect("a directory");
    let policy = dir.path().join("policy.yaml");
    let log = dir.path().join("audit.log");
    std::fs::write(
        &policy,
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n  - level: Metadata\n",
    )
    .expect("writing the policy");
    let plane = promotion_testenv::dedicated(promotion_testenv::Options {
        audit: Some(promotion_testenv::AuditLog {
            policy,
            log: log.clone(),
        }),
    })
    .expect("a control plane with an audit log");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let name = runtime.block_on(async {
        let client = promotion_testenv::client_for(&plane.kubeconfig)
            .await
            .expect("client");
        promotion_testenv::fresh_namespace(&client, "audited")
            .await
            .expect("a namespace")
    });
    let text = std::fs::read_to_string(&log).expect("the audit log");
    let created = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|e| {
            e["verb"] == "create"
                && e["objectRef"]["resource"] == "namespaces"
                && e["responseStatus"]["code"] == 201
                && e["user"]["username"] == "promotion-testenv-admin"
        });
    assert!(
        created,
        "no audit event for creating namespace {name}:\n{text}"
    );
    drop(plane);
}

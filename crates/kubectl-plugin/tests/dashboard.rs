//! The dashboard against the real API server, in a real (headless) Chromium.

mod support;

use kubectl_promotion::browser::Browser;
use kubectl_promotion::cluster::Cluster;
use kubectl_promotion::dashboard::Server;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;

const JOB_URL: &str = "http://jenkins.local/job/team/job/smoke/7/";

async fn serve(cluster: Cluster, ns: &str) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let server = Server::bind(cluster, ns.to_string(), 0)
        .await
        .expect("bound");
    let addr = server.address();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

fn card_env(name: &str) -> String {
    format!(
        "(() => {{ const c = document.querySelector('[data-tracker=\"{name}\"]'); \
         return c ? c.closest('[data-env]').dataset.env : null; }})()"
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn the_card_moves_to_the_next_column_live_when_the_tracker_moves() {
    let env = Env::new("dashboard-live").await;
    env.chain().await;
    env.tracker("shop-pr-50", 50, SHA_42).await;
    let mut testing = status("dev", "Testing", SHA_42, "1 gate test running");
    testing["testRuns"] = json!([run("smoke", "Running", JOB_URL)]);
    env.set_status("shop-pr-50", testing).await;
    let (addr, _stop) = serve(
        Cluster::from_client(env.ctx.client.clone(), env.ns()),
        env.ns(),
    )
    .await;
    let url = format!("http://{addr}/ns/{}", env.ns());

    let mut browser = tokio::task::block_in_place(|| {
        let mut b = Browser::launch().expect("chromium starts");
        b.open(&url).expect("page opens");
        b
    });
    tokio::task::block_in_place(|| {
        let live = browser
            .wait_for(
                "document.body.dataset.live",
                &json!("1"),
                Duration::from_secs(60),
            )
            .expect("eval");
        assert_eq!(
            live,
            json!("1"),
            "the page never connected its event stream"
        );
        assert_eq!(
            browser.eval(&card_env("shop-pr-50")).expect("eval"),
            json!("dev")
        );
        let link = browser
            .eval("document.querySelector('[data-tracker=\"shop-pr-50\"] .gate a').href")
            .expect("eval");
        assert_eq!(link, json!(JOB_URL), "the gate links to its CI run");
        // A marker that a reload would lose: the move must happen in this very page.
        browser.eval("window.__marker = 7").expect("eval");
    });

    let mut queued = status("staging", "Queued", SHA_42, "prod is held by another PR");
    queued["queue"] = json!({"environment": "prod", "position": 1,
        "application": {"cluster": "in-cluster", "namespace": env.ns(), "name": "shop-prod"},
        "holder": format!("{}/shop-pr-49", env.ns()), "since": "2026-11-29T11:05:00Z"});
    queued["promotions"] = json!([record(
        "dev",
        "staging",
        "dev-to-staging",
        SHA_42,
        "2026-11-29T10:05:00Z",
        "promotion-controller",
        vec![run("smoke", "Passed", JOB_URL)]
    )]);
    env.set_status("shop-pr-50", queued).await;

    tokio::task::block_in_place(|| {
        let moved = browser
            .wait_for(
                &card_env("shop-pr-50"),
                &json!("staging"),
                Duration::from_secs(60),
            )
            .expect("eval");
        assert_eq!(moved, json!("staging"), "the card did not move to staging");
        assert_eq!(
            browser.eval("window.__marker").expect("eval"),
            json!(7),
            "the page reloaded"
        );
        let text: Value = browser
            .eval("document.querySelector('[data-tracker=\"shop-pr-50\"]').innerText")
            .expect("eval");
        let text = text.as_str().unwrap_or_default().to_string();
        assert!(
            text.contains(&format!(
                "#1 in line for prod, held by {}/shop-pr-49",
                env.ns()
            )),
            "{text}"
        );
        let updates = browser.eval("document.body.dataset.updates").expect("eval");
        assert_ne!(updates, Value::Null, "no server-sent update arrived");
        // The delivery figures follow the board: the promotion into staging is counted.
        let figures: Value = browser
            .eval("document.querySelector('.figures').innerText")
            .expect("eval");
        let figures = figures.as_str().unwrap_or_default().to_string();
        assert!(figures.contains("2026-11-29\tstaging\t1"), "{figures}");
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn a_user_without_permission_gets_the_plain_sentence_not_a_board() {
    let env = Env::new("dashboard-forbidden").await;
    env.chain().await;
    let cluster = Cluster::connect(Some(&env.kubeconfig_as("mallory")), None)
        .await
        .expect("connects");
    let (addr, _stop) = serve(cluster, env.ns()).await;
    let answer = reqwest::get(format!("http://{addr}/ns/{}", env.ns()))
        .await
        .expect("answer");
    assert_eq!(answer.status().as_u16(), 403);
    let body = answer.text().await.expect("body");
    assert!(
        body.contains(&format!(
            "you may not list pullrequesttrackers in namespace {}",
            env.ns()
        )),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pr_page_shows_the_reason_the_records_and_the_events_in_time_order() {
    let env = Env::new("dashboard-pr").await;
    env.chain().await;
    env.tracker("shop-pr-51", 51, SHA_43).await;
    let mut failed = status("staging", "Failed", SHA_43, "required test e2e failed");
    failed["policy"] = json!({"name": "staging-to-prod"});
    failed["testRuns"] = json!([run("e2e", "Failed", "http://gitlab.local/pipelines/8")]);
    failed["promotions"] = json!([record(
        "dev",
        "staging",
        "dev-to-staging",
        SHA_43,
        "2026-11-29T10:05:00Z",
        "promotion-controller",
        vec![run("smoke", "Passed", JOB_URL)]
    )]);
    env.set_status("shop-pr-51", failed).await;
    let event: k8s_openapi::api::events::v1::Event = serde_json::from_value(json!({
        "metadata": {"name": "shop-pr-51.1"},
        "eventTime": "2026-11-29T10:06:00.000000Z",
        "reportingController": "promotion.io/controller", "reportingInstance": "test",
        "action": "Test", "reason": "TestFailed", "type": "Warning",
        "note": "required test e2e failed",
        "regarding": {"apiVersion": "promotion.io/v1alpha1", "kind": "PullRequestTracker",
                      "name": "shop-pr-51", "namespace": env.ns()}
    }))
    .expect("event");
    kube::Api::<k8s_openapi::api::events::v1::Event>::namespaced(env.ctx.client.clone(), env.ns())
        .create(&Default::default(), &event)
        .await
        .expect("event created");
    let (addr, _stop) = serve(
        Cluster::from_client(env.ctx.client.clone(), env.ns()),
        env.ns(),
    )
    .await;
    let body = reqwest::get(format!("http://{addr}/ns/{}/pr/shop-pr-51", env.ns()))
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(
        body.contains("Failed: required test e2e failed in staging"),
        "{body}"
    );
    let record = body
        .find("promoted dev -&gt; staging at 9e8d7c6")
        .expect("the record");
    let event = body
        .find("event Warning TestFailed: required test e2e failed")
        .expect("the event");
    assert!(record < event, "timeline out of order");
    assert!(
        body.contains(&format!("<a href=\"{JOB_URL}\">")),
        "the gating run links to CI"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_screenshot_of_the_live_board_is_a_png_of_the_asked_size() {
    let env = Env::new("dashboard-shot").await;
    env.chain().await;
    env.tracker("shop-pr-52", 52, SHA_42).await;
    env.set_status("shop-pr-52", status("dev", "Testing", SHA_42, ""))
        .await;
    let (addr, _stop) = serve(
        Cluster::from_client(env.ctx.client.clone(), env.ns()),
        env.ns(),
    )
    .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("board.png");
    let url = format!("http://{addr}/ns/{}", env.ns());
    tokio::task::block_in_place(|| {
        kubectl_promotion::browser::screenshot(&url, &path, 800, 600).expect("screenshot")
    });
    let png = std::fs::read(&path).expect("written");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    // IHDR: width and height, big-endian, at bytes 16..24.
    let width = u32::from_be_bytes([png[16], png[17], png[18], png[19]]);
    let height = u32::from_be_bytes([png[20], png[21], png[22], png[23]]);
    assert_eq!((width, height), (800, 600));
}

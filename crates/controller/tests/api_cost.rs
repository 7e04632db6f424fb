//! How many API writes one hop costs, counted on the real API server through the
//! controller's own `status_writes` metric.

mod support;

use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use promotion_api::Phase;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn writes_per_hop() {
    let mut h = Harness::new("api-cost").await;
    h.create_policy(policy("dev-to-staging", "dev", "staging", two_tests("dev")))
        .await;
    h.start();
    // Let the policy status settle so it is not counted.
    h.wait_for_policy_ready("dev-to-staging").await;
    let before = status_writes(&h);
    h.create_tracker(tracker("pr-42")).await;
    h.wait_phase("pr-42", Phase::Completed).await;
    let writes = status_writes(&h) - before;
    let events: Api<Event> = Api::namespaced(h.ctx.client.clone(), &h.ctx.namespace);
    let event_writes = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .len();
    println!(
        "one hop (dev -> staging, 2 tests) then Completed in staging: {writes} tracker status writes, {event_writes} events"
    );
    // The protocol's floor: the armed intents before the trigger and the promotion's record;
    // then Completed in staging. First sight, Synced, the run ids, the pending promotion and
    // the Application step are not written on their own (they were: 10 writes).
    assert_eq!(
        writes, 3,
        "one hop and the journey's end cost 3 status writes, not {writes}"
    );
    // TestsTriggered, Promoted, Completed: no Event repeats a status change (Synced).
    assert_eq!(event_writes, 3, "events: {event_writes}");
}

/// The `promotion_status_writes_total` counter as the metrics endpoint shows it.
fn status_writes(h: &Harness) -> u64 {
    h.metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("promotion_status_writes_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("status_writes_total is exposed")
}

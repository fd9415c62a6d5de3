//! Overload and observability: past its bound of syncs in flight a sync waits its turn in a
//! bounded line; past the line the server answers `503 overloaded` with `Retry-After` at once; phones back off with jitter and give up after
//! a bounded number of retries; `/metrics` counts it all; admins see each device's last sync.

use posync_proto::{Limits, SyncRequest};
use posync_replica::{HttpSync, ReplicaError, RetryPolicy};
use posync_testkit::{DAY, Generator, access_token, district_server, enrolled};

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics")).await.expect("metrics").text().await.expect("text")
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test]
async fn an_overloaded_server_says_so_and_phones_back_off_a_bounded_number_of_times() {
    let (server, admin) =
        district_server(Limits { syncs_in_flight_max: 0, syncs_waiting_max: 0, ..Limits::default() }).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let before = metrics(&server.url()).await;

    // The raw answer: 503, a stable code, and when to come back.
    let token = access_token(&kader);
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sync", server.url()))
        .bearer_auth(&token)
        .header("content-type", "application/cbor")
        .body(posync_proto::encode(&SyncRequest::new(kader.device(), 0)))
        .send()
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers().get("retry-after").and_then(|v| v.to_str().ok()), Some("5"));
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["error"]["code"], "overloaded");

    // A phone retries twice with jittered backoff, then reports the overload.
    let retry = RetryPolicy { retries: 2, base_ms: 5, max_ms: 20 };
    let err = HttpSync::enrolled(&server.url()).with_retry(retry).sync(&mut kader).await.expect_err("overloaded");
    assert!(matches!(err, ReplicaError::Server { status: 503, .. }), "{err}");
    let after = metrics(&server.url()).await;
    assert_eq!(
        counter(&after, "posync_overloaded_total") - counter(&before, "posync_overloaded_total"),
        4,
        "1 raw + 3 tries"
    );
    assert!(after.contains("posync_errors_total{code=\"overloaded\"}"));
    // Nothing captured is lost: the visit waits in the outbox.
    let session = kader.start_session(&"pos-hegarsari-melati-1".parse().expect("id"), DAY).expect("session");
    kader.record_visit(session, Generator::new(1).child_visit(), 1).expect("record");
    assert!(HttpSync::enrolled(&server.url()).with_retry(RetryPolicy::NONE).sync(&mut kader).await.is_err());
    assert_eq!(kader.outbox().expect("outbox").len(), 1);
    server.stop().await;
}

#[tokio::test]
async fn metrics_count_syncs_and_admins_see_each_devices_last_sync() {
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let session = kader.start_session(&"pos-hegarsari-melati-1".parse().expect("id"), DAY).expect("session");
    kader.record_visit(session, Generator::new(2).child_visit(), 1).expect("record");
    let before = metrics(&server.url()).await;
    let report = kader.sync_enrolled(&server.url()).await.expect("sync");
    let after = metrics(&server.url()).await;
    assert!(counter(&after, "posync_syncs_total") > counter(&before, "posync_syncs_total"));
    assert!(
        counter(&after, "posync_sync_bytes_received_total") - counter(&before, "posync_sync_bytes_received_total")
            >= report.bytes.up
    );
    assert!(counter(&after, "posync_docs_pushed_total") > counter(&before, "posync_docs_pushed_total"));
    assert!(after.contains("posync_store_seconds_bucket{le=\"+Inf\"}"));

    let district_admin = enrolled(&server, &admin, "dinkes-admin-01", &dir).await;
    let token = access_token(&district_admin);
    let telemetry: serde_json::Value = reqwest::Client::new()
        .get(format!("{}/v1/admin/telemetry", server.url()))
        .bearer_auth(token)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    let mine = &telemetry[kader.device().to_string()];
    assert!(mine["last_success_at"].is_number(), "{telemetry}");
    assert_eq!(mine["bytes_up"].as_u64(), Some(report.bytes.up));
    assert!(mine["last_error"].is_null());
    server.stop().await;
}

/// A burst of phones past the syncs in flight waits its turn instead of being sent away:
/// with one sync worked on at a time, sixteen at once all get their answer, none a 503.
#[tokio::test]
async fn a_burst_past_the_syncs_in_flight_waits_its_turn_instead_of_being_refused() {
    let limits =
        Limits { syncs_in_flight_max: 1, syncs_waiting_max: 64, sync_wait_ms_max: 20_000, ..Limits::default() };
    let (server, admin) = district_server(limits).await;
    let dir = tempfile::tempdir().expect("dir");
    let kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let token = access_token(&kader);
    let body = posync_proto::encode(&SyncRequest::new(kader.device(), 0));
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (url, token, body) = (server.url(), token.clone(), body.clone());
        burst.spawn(async move {
            reqwest::Client::new()
                .post(format!("{url}/v1/sync"))
                .bearer_auth(&token)
                .header("content-type", "application/cbor")
                .body(body)
                .send()
                .await
                .expect("send")
                .status()
                .as_u16()
        });
    }
    let statuses: Vec<u16> = burst.join_all().await;
    assert_eq!(statuses, vec![200; 16], "every sync of the burst answered, none refused");
    server.stop().await;
}

//! The real `posync serve` under pushes whose Automerge bytes inflate far beyond their size:
//! each is refused whole with a stable code, the server's peak memory stays bounded, and it
//! keeps serving. (Before the intake guard, one such push of a few KB made the server inflate
//! a gibibyte.)

mod common;

use posync_model::{DocKind, Heads, Role};
use posync_proto::{CONTENT_TYPE, DocPush, Limits, SyncRequest, encode, gzip};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_testkit::{DAY, Generator, grant, hostile, posyandu, user_for};
use std::ffi::OsStr;

const PEAK_RSS_MAX_BYTES: u64 = 200 * 1024 * 1024;
const BOMB_INFLATED_BYTES: u64 = 1 << 30;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inflation_bombs_inside_automerge_changes_keep_server_memory_bounded() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("server.sqlite");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let p = posyandu("melati-01");
    let mut replica = Replica::open(dir.path().join("phone.sqlite")).expect("replica");
    let device = replica.device();
    grant(&SqliteStore::open(&db).expect("store"), device, Role::Kader, std::slice::from_ref(&p), now());
    let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
    let server = common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys_path.as_os_str()]);

    let session = replica.start_session(&p, DAY).expect("session");
    replica.record_visit(session, Generator::new(5).child_visit(), 1).expect("record");
    let valid = replica.prepare_sync(&Limits::default()).expect("prepare");
    let client = reqwest::Client::new();
    let bombs = [
        ("compressed change", hostile::compressed_change_bomb(BOMB_INFLATED_BYTES)),
        ("compressed document column", hostile::document_column_bomb(BOMB_INFLATED_BYTES)),
    ];
    for (name, changes) in bombs {
        let wire_changes = changes.len();
        let req = SyncRequest {
            push: vec![DocPush {
                doc: session,
                kind: DocKind::Session,
                posyandu: p.clone(),
                base: Vec::new(),
                heads: Heads::empty().to_bytes(),
                changes,
            }],
            ..valid.clone()
        };
        let body = gzip(&encode(&req));
        let resp = client
            .post(format!("{}/v1/sync", server.url))
            .bearer_auth(&token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(body.clone())
            .send()
            .await
            .expect("the server answers the bomb");
        let status = resp.status().as_u16();
        let answer: serde_json::Value = resp.json().await.expect("a JSON error body");
        println!(
            "{{\"bomb\": \"{name}\", \"body_bytes\": {}, \"changes_bytes\": {wire_changes}, \"inflates_to\": {BOMB_INFLATED_BYTES}, \"status\": {status}, \"peak_rss_bytes\": {}}}",
            body.len(),
            server.peak_rss_bytes()
        );
        assert_eq!((status, answer["error"]["code"].as_str()), (413, Some("changes_too_large")), "{name}: {answer}");
    }
    let peak = server.peak_rss_bytes();
    assert!(peak < PEAK_RSS_MAX_BYTES, "peak server RSS {} MiB, bound {} MiB", peak >> 20, PEAK_RSS_MAX_BYTES >> 20);

    // Still serving: the phone's real visit goes through.
    let report = replica.sync(&server.url, &token).await.expect("sync after the bombs");
    assert!(replica.outbox().expect("outbox").is_empty(), "{report:?}");
    assert_eq!(posync_testkit::visit_ids(&replica).len(), 1, "the real visit is on the phone and acknowledged");
}

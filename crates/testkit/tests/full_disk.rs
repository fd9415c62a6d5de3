//! Full disks (issue #13), on a real small file system (a tmpfs mounted for the test): the
//! server answers `503 storage_full` with `Retry-After` and keeps serving what needs no
//! write; the phone says its storage is full and still lists its visits.

use posync_proto::{CONTENT_TYPE, ErrorCode, Limits, encode};
use posync_replica::{HttpSync, Replica, ReplicaError, RetryPolicy};
use posync_store::prelude::*;
use posync_testkit::small_disk::SmallDisk;
use posync_testkit::{DAY, Generator, TestServer, enrolled, posyandu};

#[tokio::test]
async fn a_full_server_disk_refuses_writes_with_storage_full_and_keeps_serving_reads() {
    let disk = SmallDisk::mount(16 * 1024 * 1024).expect("a small disk");
    let db = disk.path().join("server.sqlite");
    let server = TestServer::start_at(tempfile::tempdir().expect("dir"), &db, Limits::default()).await;
    let admin = posync_server::AdminService::new(server.store_arc());
    let fixture = std::fs::read_to_string(posync_testkit::DISTRICT_FIXTURE).expect("fixture");
    let file = posync_server::parse_hierarchy(&fixture).expect("parses");
    admin.import(&posync_testkit::console(), file, server.clock.now()).await.expect("import");
    let dir = tempfile::tempdir().expect("dir");
    let mut writer = enrolled(&server, &admin, "kader-0001", &dir).await;
    let mut reader = enrolled(&server, &admin, "kader-0002", &dir).await;
    let mut officer = enrolled(&server, &admin, "bidan-0001", &dir).await;
    let p = posyandu("pos-hegarsari-melati-1");
    let session = writer.start_session(&p, DAY).expect("session");
    writer.record_visit(session, Generator::new(1).child_visit(), 1).expect("record");
    for phone in [&mut writer, &mut reader, &mut officer] {
        phone.sync_enrolled(&server.url()).await.expect("sync");
    }

    disk.fill();

    // A push: refused whole, with a stable code and a minute's Retry-After.
    writer.record_visit(session, Generator::new(2).child_visit(), 2).expect("the phone still captures");
    let token = writer.credential().expect("read").and_then(|c| c.access).expect("token").token;
    let req = writer.prepare_sync(&Limits::default()).expect("prepare");
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/sync", server.url()))
        .bearer_auth(&token)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .body(encode(&req))
        .send()
        .await
        .expect("send");
    let retry_after = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let status = resp.status().as_u16();
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("storage_full")), "{body}");
    assert_eq!(retry_after.as_deref(), Some("60"));
    // The phone takes it as a wait, not a refusal of its data: nothing is quarantined.
    let result = HttpSync::enrolled(&server.url()).with_retry(RetryPolicy::NONE).sync(&mut writer).await;
    assert!(matches!(&result, Err(ReplicaError::Server { code: ErrorCode::StorageFull, .. })), "{result:?}");
    assert!(result.as_ref().is_err_and(ReplicaError::is_transient));
    assert!(writer.rejected().expect("rejected").is_empty());

    // What needs no write keeps working: a kader's pull, and a token refresh (its expiry
    // just does not slide), so no device loses read access.
    let mut cred = reader.credential().expect("read").expect("enrolled");
    cred.access = None;
    reader.save_credential(&cred).expect("save");
    reader.sync_enrolled(&server.url()).await.expect("a refresh and a pull on a full disk");

    // A staff read must be audited: when the audit cannot be written, the read is refused
    // the same way, never served unaudited.
    let officer_token = officer.credential().expect("read").and_then(|c| c.access).expect("token").token;
    let read = reqwest::Client::new()
        .get(format!("{}/v1/docs/{session}", server.url()))
        .bearer_auth(&officer_token)
        .send()
        .await
        .expect("send");
    assert_eq!(read.status().as_u16(), 503);

    // Room again: everything arrives.
    disk.free();
    writer.sync_enrolled(&server.url()).await.expect("sync");
    assert_eq!(server.store.stats().await.expect("stats").visits, 2);
    server.stop().await;
}

#[tokio::test]
async fn a_full_phone_lists_its_visits_and_says_its_storage_is_full() {
    let disk = SmallDisk::mount(1024 * 1024).expect("a small disk");
    let path = disk.path().join("phone.sqlite");
    let p = posyandu("melati-01");
    let session = {
        let mut phone = Replica::open(&path).expect("open");
        let session = phone.start_session(&p, DAY).expect("session");
        let mut g = Generator::new(4);
        for i in 0..5 {
            phone.record_visit(session, g.child_visit(), i).expect("record");
        }
        session
    };
    disk.fill();
    let mut phone = Replica::open(&path).expect("a full phone still opens its replica");
    assert_eq!(phone.all_visits().expect("list").len(), 5, "the kader sees her visits");
    let refused = phone.record_visit(session, Generator::new(5).child_visit(), 9);
    assert!(matches!(refused, Err(ReplicaError::StorageFull)), "{refused:?}");
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("storage is full") && !message.contains("I/O"), "{message}");
    disk.free();
    drop(phone);
    let mut phone = Replica::open(&path).expect("open");
    phone.record_visit(session, Generator::new(5).child_visit(), 9).expect("with room again, capture works");
    assert_eq!(phone.all_visits().expect("list").len(), 6);
}

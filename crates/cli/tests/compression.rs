//! JSON and CSV answers are gzip'd for a client that accepts it (real binary), and are the
//! same document once inflated; a client that does not ask gets them plain.

mod common;

use posync_model::{DeviceId, Role};
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_testkit::{grant, posyandu, user_for};
use std::ffi::OsStr;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_reports_are_gzipped_when_accepted() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, keys_path) = (dir.path().join("server.sqlite"), dir.path().join("keys.json"));
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let device = DeviceId::new_random();
    let setup = SqliteStore::open(&db).expect("store");
    let sites = [posyandu("gz-melati"), posyandu("gz-mawar")];
    grant(&setup, device, Role::PuskesmasOfficer, &sites, now());
    drop(setup);
    let token = keys.issue(&user_for(device), device, Role::PuskesmasOfficer, now(), 3600).token;
    let server = common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys_path.as_os_str()]);
    let http = reqwest::Client::new();
    for path in ["/v1/reports/monthly?month=2026-01", "/v1/reports/overdue?month=2026-01&format=csv"] {
        let url = format!("{}{path}", server.url);
        let plain = http.get(&url).bearer_auth(&token).send().await.expect("send");
        assert_eq!(plain.status().as_u16(), 200, "{path}");
        assert!(plain.headers().get("content-encoding").is_none(), "{path}: plain when not asked");
        let plain = plain.bytes().await.expect("body");
        let zipped = http.get(&url).bearer_auth(&token).header("accept-encoding", "gzip").send().await.expect("send");
        assert_eq!(zipped.headers().get("content-encoding").and_then(|v| v.to_str().ok()), Some("gzip"), "{path}");
        let zipped = zipped.bytes().await.expect("body");
        let inflated = posync_proto::gunzip_bounded(&zipped, 1 << 20).expect("gzip body");
        assert_eq!(inflated, plain.to_vec(), "{path}: the same document");
        assert!(plain.len() > 32, "{path}: large enough to be worth compressing");
    }
}

//! JSON and CSV answers are gzip'd for a client that accepts it (real binary), and are the
//! same document once inflated; a client that does not ask gets them plain.

mod common;

use posync_model::{DeviceId, Role};
use posync_testkit::posyandu;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_and_csv_reports_are_gzipped_when_accepted() {
    let dir = tempfile::tempdir().expect("dir");
    let site = common::Site::new(dir.path());
    let token =
        site.grant(DeviceId::new_random(), Role::PuskesmasOfficer, &[posyandu("gz-melati"), posyandu("gz-mawar")]);
    let server = site.serve(&[]);
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

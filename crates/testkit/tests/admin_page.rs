//! The conflict admin page in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core from npm; `.ci/run` installs both). Two kader phones disagree on a
//! child's weight; an officer signs in on the page with an enrolment code, resolves the
//! conflict, sees it gone; the kader's phone then syncs and holds the decided value.

use posync_model::{Field, FieldValue, PosyanduId};
use posync_testkit::{DAY, Generator, console, district_server, enrolled};
use std::path::PathBuf;
use std::process::Command;

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_resolves_a_conflict_in_the_browser_and_the_phone_gets_it() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        std::path::Path::new(&chromium).exists() && e2e_dir().join("node_modules/playwright-core").exists(),
        "this test needs Debian's chromium and `npm ci --prefix crates/testkit/e2e` (.ci/run installs both)"
    );
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let p: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
    let mut a = enrolled(&server, &admin, "kader-0001", &dir).await;
    let mut b = enrolled(&server, &admin, "kader-0002", &dir).await;
    let session = a.start_session(&p, DAY).expect("session");
    let visit = a.record_visit(session, Generator::new(4).child_visit(), 1).expect("record");
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    a.edit_visit(session, visit, Field::WeightG, FieldValue::Int(9_800), 2).expect("edit");
    b.edit_visit(session, visit, Field::WeightG, FieldValue::Int(8_900), 3).expect("edit");
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    a.sync_enrolled(&server.url()).await.expect("sync");
    assert_eq!(a.under_review(session).expect("review").len(), 1);

    let code =
        admin.issue_enrolment(&console(), "bidan-0001".parse().expect("id"), server.clock.now()).await.expect("code");
    let shot = std::env::temp_dir().join(format!("posync-admin-page-{}.png", std::process::id()));
    let url = server.url();
    let script = e2e_dir().join("admin-page.mjs");
    let shot_arg = shot.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([url.as_str(), code.code.as_str(), "9800"])
            .arg(&shot_arg)
            .env("CHROMIUM", chromium)
            .output()
    })
    .await
    .expect("join")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("ok"), "browser test failed:\n{stdout}\n{stderr}");
    assert!(shot.exists(), "a screenshot of the page was taken");

    // The decision reaches the kader's phone at its next sync.
    b.sync_enrolled(&server.url()).await.expect("sync");
    let weight = b.visits(session).expect("visits")[0].weight_g;
    assert_eq!(weight, Some(9_800));
    assert!(b.under_review(session).expect("review").is_empty());
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    assert!(log.iter().any(|e| e.action == "conflict_resolved" && e.actor.starts_with("user:bidan-0001@")));
    server.stop().await;
}

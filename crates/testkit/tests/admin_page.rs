//! The puskesmas web app in a real headless Chromium (Debian's `chromium`, driven by
//! playwright-core and checked with axe-core from npm; `.ci/run` installs them). Two kader
//! phones disagree on two children's weights; a bidan opens the app by a LAN name over plain
//! HTTP, signs in with an enrolment code, reads the queue by names, types a corrected weight
//! in kg with a decimal comma, and signs out; the kader's phone then syncs and holds the
//! decided value, and the browser's device is revoked. Screenshots of each page at tablet
//! and phone width are written to `target/screenshots/web/`.

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
    let close = a.record_visit(session, Generator::new(5).child_visit(), 1).expect("record");
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    a.edit_visit(session, visit, Field::WeightG, FieldValue::Int(12_800), 2).expect("edit");
    b.edit_visit(session, visit, Field::WeightG, FieldValue::Int(11_900), 3).expect("edit");
    // Two weights that both read "7,2 kg" when rounded to 100 g.
    a.edit_visit(session, close, Field::WeightG, FieldValue::Int(7_167), 2).expect("edit");
    b.edit_visit(session, close, Field::WeightG, FieldValue::Int(7_181), 3).expect("edit");
    // The same girl registered on both phones (one NIK), and a registered child with an
    // address who is behind on her doses: the duplicates queue and the home-visit list.
    let twin = |name: &str| posync_replica::NewPerson {
        name: name.into(),
        sex: posync_model::Sex::Female,
        birth_date: DAY - time::Duration::days(300),
        mother_name: "Euis".into(),
        nik: Some("3279015002250001".into()),
        mother_nik: None,
        address: String::new(),
        rt: None,
        rw: None,
        pregnant: false,
        kia_book: true,
    };
    let now = server.clock.now();
    a.register_person(&p, twin("Siti Aisyah"), now).expect("register");
    b.register_person(&p, twin("SITI AISYAH"), now).expect("register");
    let rina = posync_replica::NewPerson {
        name: "Rina Marlina".into(),
        nik: None,
        mother_nik: Some("3279014106900001".into()),
        mother_name: "Yati Rostika".into(),
        address: "Jl. Melati 3".into(),
        rt: Some(2),
        rw: Some(5),
        ..twin("Rina Marlina")
    };
    let rina = a.register_person(&p, rina, now).expect("register");
    let mut visit_of_rina = Generator::new(6).child_visit();
    visit_of_rina.person_id = rina;
    visit_of_rina.name = "Rina Marlina".into();
    visit_of_rina.sex = posync_model::Sex::Female;
    visit_of_rina.birth_date = DAY - time::Duration::days(300);
    (visit_of_rina.weight_g, visit_of_rina.length_mm) = (Some(8_200), Some(700));
    (visit_of_rina.head_circ_mm, visit_of_rina.muac_mm) = (None, None);
    visit_of_rina.immunisations.clear();
    visit_of_rina.vitamin_a = None;
    a.record_visit(session, visit_of_rina, now).expect("record");
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    a.sync_enrolled(&server.url()).await.expect("sync");
    assert_eq!(a.under_review(session).expect("review").len(), 2);

    let code =
        admin.issue_enrolment(&console(), "bidan-0001".parse().expect("id"), server.clock.now()).await.expect("code");
    let shots = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/screenshots/web");
    let url = server.url();
    let script = e2e_dir().join("admin-page.mjs");
    let shots_arg = shots.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(script)
            .args([url.as_str(), code.code.as_str()])
            .arg(&shots_arg)
            .env("CHROMIUM", chromium)
            .output()
    })
    .await
    .expect("join")
    .expect("run node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stdout.contains("ok"), "browser test failed:\n{stdout}\n{stderr}");
    for page in [
        "signin-1280",
        "month-1280",
        "month-390",
        "conflicts-1280",
        "conflict-1280",
        "child-1280",
        "child-390",
        "people-1280",
        "conflicts-390",
        "conflicts-390-en",
    ] {
        assert!(shots.join(format!("{page}.png")).exists(), "a screenshot of {page}");
    }

    // Signing out revoked the browser's device on the server.
    let device = stdout.lines().find_map(|l| l.strip_prefix("device ")).expect("the browser's device id");
    let devices = posync_store::AccessStore::devices(&server.store).await.expect("devices");
    let browser = devices.iter().find(|d| d.device.to_string() == device).expect("the browser was enrolled");
    assert!(browser.revoked_at.is_some(), "signing out revokes the device: {browser:?}");
    let again = stdout.lines().find_map(|l| l.strip_prefix("pin-device ")).expect("the PIN sign-in's device");
    let by_pin = devices.iter().find(|d| d.device.to_string() == again).expect("the PIN sign-in enrolled a device");
    assert!(again != device && by_pin.revoked_at.is_none(), "a new, working device: {by_pin:?}");
    assert_eq!(by_pin.user.as_ref().map(ToString::to_string).as_deref(), Some("bidan-0001"));

    // The decision reaches the kader's phone at its next sync.
    b.sync_enrolled(&server.url()).await.expect("sync");
    let visits = b.visits(session).expect("visits");
    let decided = visits.iter().find(|v| v.visit_id == visit.to_string()).expect("the visit");
    assert_eq!(decided.weight_g, Some(12_350), "12,35 kg typed in the browser");
    assert_eq!(b.under_review(session).expect("review").len(), 1, "the 7,167/7,181 kg conflict is still open");
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    assert!(log.iter().any(|e| e.action == "conflict_resolved" && e.actor.starts_with("user:bidan-0001@")));
    assert!(log.iter().any(|e| e.action == "device_revoked" && e.actor.starts_with("user:bidan-0001@")));
    assert!(log.iter().any(|e| e.action == "people_merged" && e.actor.starts_with("user:bidan-0001@")));
    assert!(log.iter().any(|e| e.action == "pin_set") && log.iter().any(|e| e.action == "signed_in"));
    assert!(!serde_json::to_string(&log).expect("json").contains("246810"), "never the PIN in the audit log");
    server.stop().await;
}

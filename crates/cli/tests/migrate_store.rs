//! `posync migrate-store` with the real binary: a district's SQLite store, grown by real
//! syncs (hierarchy import, enrolment-free test devices, a concurrent edit), moves into
//! PostgreSQL; everything reads back the same, every document's heads match, and phones
//! carry on against `posync serve` on PostgreSQL with the tokens and cursors they had. A
//! second district then moves into the same, no longer empty, database.

mod common;

use posync_model::{DocId, Field, FieldValue, PosyanduId, Role, Scope, UnitKind};
use posync_store::prelude::*;
use posync_store::{ConflictFilter, PgStore, SqliteStore, Store};
use posync_testkit::{DAY, Generator, KEY_SEED, Phone, TestServer, district_server, posyandu, snapshot};
use std::path::Path;
use std::process::Command;

fn migrate(sqlite: &Path, url: &str) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_posync"))
        .arg("migrate-store")
        .arg("--from")
        .arg(format!("sqlite:{}", sqlite.display()))
        .args(["--to", url])
        .output()
        .expect("run posync migrate-store");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "migrate-store failed: {log}");
    assert!(!log.contains("Memindahkan"), "progress drawn into a pipe: {log}");
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

/// [`migrate`] at a terminal (a pseudo-terminal from `script`): it shows its progress.
fn migrate_at_a_terminal(sqlite: &Path, url: &str) -> serde_json::Value {
    let line =
        format!("'{}' migrate-store --from 'sqlite:{}' --to '{url}'", env!("CARGO_BIN_EXE_posync"), sqlite.display());
    let out = Command::new("script").env("TERM", "xterm").args(["-qec", &line, "/dev/null"]).output().expect("script");
    let seen = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "migrate-store failed: {seen}");
    assert!(seen.contains("Memindahkan") && seen.contains("documents verified"), "no progress at a terminal: {seen:?}");
    let json = seen.lines().find_map(|l| l.find("{\"").map(|at| &l[at..])).expect("the report line");
    serde_json::from_str(json).expect("a JSON report")
}

async fn everything(store: &dyn Store) -> Scope {
    let tree = store.unit_tree().await.expect("units");
    Scope::new(tree.units.iter().filter(|u| u.kind == UnitKind::Posyandu).map(|u| u.id.as_posyandu()))
}

/// Two phones of one posyandu capture, sync, and edit one weight concurrently.
async fn grow(server: &TestServer, place: &PosyanduId, seed: u64) -> (Phone, Phone) {
    let mut g = Generator::new(seed);
    let (mut a, mut b) = (Phone::kader(server, place), Phone::kader(server, place));
    for phone in [&mut a, &mut b] {
        let s = phone.replica.start_session(place, DAY).expect("session");
        for k in 0..4 {
            phone.replica.record_visit(s, g.child_visit(), k).expect("record");
        }
        phone.sync(server).await;
    }
    a.sync(server).await;
    let session = DocId::for_session(place, DAY);
    let visit = a.replica.visits(session).expect("visits")[0].visit_id.parse().expect("id");
    for (phone, grams) in [(&mut a, 9_100), (&mut b, 9_300)] {
        phone.replica.edit_visit(session, visit, Field::WeightG, FieldValue::Int(grams), 50).expect("edit");
    }
    a.sync(server).await;
    b.sync(server).await;
    a.sync(server).await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_district_moves_from_sqlite_to_postgres_with_nothing_lost() {
    let Some(url) = posync_store::postgres::testing::fresh_schema("migrate_store").await else { return };
    let (server, _admin) = district_server(posync_proto::Limits::default()).await;
    let place: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
    let (mut a, mut b) = grow(&server, &place, 3).await;
    let sqlite_path = server.dir.path().join("server.sqlite");
    let src = server.store.clone();
    let scope = everything(&src).await;
    let report = migrate(&sqlite_path, &url);

    let pg = PgStore::connect(&url).await.expect("connect");
    let src_stats = src.stats().await.expect("stats");
    assert!(src_stats.docs > 0 && src_stats.visits == 8);
    assert_eq!(pg.stats().await.expect("stats"), src_stats);
    assert_eq!(report["docs_verified"], src_stats.docs, "every document's heads checked");
    assert_eq!(report["feed_offset"], 0, "into an empty database positions stay as they were");
    // Documents: same ids, feed positions and heads, in the same feed order.
    assert_eq!(pg.list(scope.clone()).await.expect("list"), src.list(scope.clone()).await.expect("list"));
    for meta in src.list(scope.clone()).await.expect("list") {
        let moved = pg.get(meta.doc).await.expect("get").expect("moved");
        assert_eq!(moved.meta, meta);
    }
    // Access, audit, conflicts and the projection read back the same.
    let units = |t: posync_store::UnitTree| {
        let mut u = t.units;
        u.sort_by(|x, y| x.id.cmp(&y.id));
        u
    };
    assert_eq!(units(pg.unit_tree().await.expect("units")), units(src.unit_tree().await.expect("units")));
    assert_eq!(pg.users().await.expect("users"), src.users().await.expect("users"));
    assert_eq!(pg.devices().await.expect("devices"), src.devices().await.expect("devices"));
    assert_eq!(pg.audit_log(0, 100_000).await.expect("audit"), src.audit_log(0, 100_000).await.expect("audit"));
    let conflicts = src.conflicts(scope.clone(), ConflictFilter::default()).await.expect("conflicts");
    assert!(!conflicts.is_empty(), "the concurrent weights are under review");
    assert_eq!(pg.conflicts(scope.clone(), ConflictFilter::default()).await.expect("conflicts"), conflicts);
    let facts = |mut f: Vec<posync_model::report::VisitFact>| {
        f.sort_by_key(|x| (x.person_id, x.session_date));
        f
    };
    let (from, to) = (DAY - time::Duration::days(1), DAY + time::Duration::days(1));
    assert_eq!(
        facts(pg.report_facts(scope.clone(), from, to).await.expect("facts")),
        facts(src.report_facts(scope.clone(), from, to).await.expect("facts"))
    );
    // The phones carry on against PostgreSQL with their cursors, their users and devices,
    // and the keyset (the test server's tokens live on its clock: issue them on the real one).
    for phone in [&mut a, &mut b] {
        let device = phone.replica.device();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        phone.token = server.keys.issue(&posync_testkit::user_for(device), device, Role::Kader, now, 600).token;
    }
    server.stop().await;
    let dir = tempfile::tempdir().expect("dir");
    let keys = dir.path().join("keys.json");
    posync_server::TokenKeys::from_seed(KEY_SEED).save(&keys).expect("keys");
    let keys = keys.to_string_lossy().into_owned();
    let instance = common::serve(["--database-url", url.as_str(), "--keys", keys.as_str()]);
    let s = a.replica.start_session(&place, DAY).expect("session");
    a.replica.record_visit(s, Generator::new(9).child_visit(), 99).expect("record after the move");
    for phone in [&mut a, &mut b] {
        phone.replica.sync(&instance.url, &phone.token).await.expect("sync after the move");
    }
    a.replica.sync(&instance.url, &a.token).await.expect("sync after the move");
    assert_eq!(snapshot(&a.replica), snapshot(&b.replica), "the phones converge through PostgreSQL");
    assert_eq!(pg.stats().await.expect("stats").visits, 9);

    // A second district moves into the same database: positions shift past the first's.
    let other = TestServer::start().await;
    let kenanga = posyandu("kenanga-02");
    grow(&other, &kenanga, 4).await;
    let other_stats = other.store.stats().await.expect("stats");
    let before = pg.stats().await.expect("stats");
    let other_path = other.dir.path().join("server.sqlite");
    let report = migrate_at_a_terminal(&other_path, &url);
    assert_eq!(report["feed_offset"], before.feed_entries, "the second district's feed follows the first's");
    assert_eq!(report["docs_verified"], other_stats.docs);
    let after = pg.stats().await.expect("stats");
    assert_eq!(after.docs, before.docs + other_stats.docs);
    assert_eq!(after.feed_entries, before.feed_entries + other_stats.feed_entries);
    let moved = SqliteStore::open(&other_path).expect("reopen");
    let k = Scope::new([kenanga]);
    let pg_list = pg.list(k.clone()).await.expect("list");
    let src_list = moved.list(k).await.expect("list");
    assert_eq!(pg_list.len(), src_list.len());
    for (m, s) in pg_list.iter().zip(&src_list) {
        assert_eq!((m.doc, &m.heads, m.seq), (s.doc, &s.heads, s.seq + before.feed_entries));
    }
    // Moving a district twice is refused, and changes nothing.
    let again = Command::new(env!("CARGO_BIN_EXE_posync"))
        .arg("migrate-store")
        .arg("--from")
        .arg(format!("sqlite:{}", other_path.display()))
        .args(["--to", &url])
        .output()
        .expect("run");
    assert!(!again.status.success(), "the documents are already there");
    assert_eq!(pg.stats().await.expect("stats"), after);
    other.stop().await;
}

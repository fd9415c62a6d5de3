//! The store's contract, on a real SQLite file.

use automerge::Automerge;
use posync_model::doc::{self, DocMeta};
use posync_model::{DeviceId, DocId, Heads, PersonId, PosyanduId, Scope, Sex, Visit, VisitId};
use posync_proto::DocPush;
use posync_store::prelude::*;
use posync_store::{PageLimits, SqliteStore, StoreError};

const LIMITS: PageLimits = PageLimits { bytes_max: 1 << 20, docs_max: 500, pieces: false };

fn p(name: &str) -> PosyanduId {
    name.parse().expect("id")
}

fn day(n: i64) -> time::Date {
    time::macros::date!(2026 - 01 - 01) + time::Duration::days(n)
}

fn new_session(posyandu: &PosyanduId, date: time::Date, device: DeviceId) -> Automerge {
    let mut am = doc::genesis(&DocMeta::session(posyandu.clone(), date), device.actor()).expect("genesis");
    let v = Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: "Sri Hidayat".into(),
        sex: Sex::Female,
        birth_date: day(-400),
        weight_g: Some(9000),
        length_mm: Some(750),
        lying: Some(true),
        head_circ_mm: None,
        muac_mm: None,
        immunisations: Default::default(),
        vitamin_a: None,
        notes: String::new(),
        group: posync_model::LifeGroup::Balita,
        services: Default::default(),
        recorded_by: device,
        recorded_at: 5,
    };
    doc::record_visit(&mut am, &v, 5).expect("record");
    am
}

fn push_of(am: &Automerge, base: &Heads) -> DocPush {
    let meta = doc::read_meta(am).expect("meta");
    DocPush {
        doc: meta.doc_id(),
        kind: meta.kind,
        posyandu: meta.posyandu,
        base: base.to_bytes(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: if base.is_empty() { am.save() } else { am.save_after(base.as_slice()) },
    }
}

#[tokio::test]
async fn committed_pushes_survive_reopening_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.sqlite");
    let device = DeviceId::new_random();
    let scope = Scope::new([p("a")]);
    let am = new_session(&p("a"), day(0), device);
    {
        let store = SqliteStore::open(&path).expect("open");
        let acks = store.push(device, scope.clone(), vec![push_of(&am, &Heads::empty())], 1).await.expect("push");
        assert_eq!(acks.len(), 1);
    }
    let store = SqliteStore::open(&path).expect("reopen");
    store.integrity_check().await.expect("integrity");
    let id = doc::read_meta(&am).expect("meta").doc_id();
    let got = store.get(id).await.expect("get").expect("present after reopen");
    assert_eq!(got.meta.heads, Heads::new(am.get_heads()));
    assert_eq!(store.stats().await.expect("stats").visits, 1);
}

#[tokio::test]
async fn the_feed_returns_only_documents_changed_after_the_cursor_in_scope() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.sqlite")).expect("open");
    let writer = DeviceId::new_random();
    let all = Scope::new([p("a"), p("b")]);
    for n in 0..10 {
        let posyandu = if n % 2 == 0 { p("a") } else { p("b") };
        let am = new_session(&posyandu, day(n), writer);
        store.push(writer, all.clone(), vec![push_of(&am, &Heads::empty())], n).await.expect("push");
    }
    let reader = DeviceId::new_random();
    let only_a = Scope::new([p("a")]);
    let first = store.pull(reader, only_a.clone(), 0, LIMITS).await.expect("pull");
    assert_eq!(first.docs.len(), 5, "only posyandu a");
    assert!(first.docs.iter().all(|d| d.posyandu == p("a")));
    let again = store.pull(reader, only_a.clone(), first.cursor, LIMITS).await.expect("pull");
    assert!(again.docs.is_empty(), "nothing changed since the cursor");
    assert_eq!(again.cursor, first.cursor);

    // One more change to one document: exactly that document, and only its new change.
    let target = new_session(&p("a"), day(100), writer);
    store.push(writer, all.clone(), vec![push_of(&target, &Heads::empty())], 50).await.expect("push");
    let mut edited = target.clone();
    let visit = doc::visits(&edited).expect("visits")[0].visit_id;
    let before = Heads::new(edited.get_heads());
    doc::set_visit_field(&mut edited, visit, posync_model::Field::WeightG, &posync_model::FieldValue::Int(9100), 60)
        .expect("edit");
    let page = store.pull(reader, only_a.clone(), again.cursor, LIMITS).await.expect("pull");
    assert_eq!(page.docs.len(), 1);
    let cursor = page.cursor;
    store.push(writer, all.clone(), vec![push_of(&edited, &before)], 61).await.expect("push edit");
    let delta = store.pull(reader, only_a, cursor, LIMITS).await.expect("pull");
    assert_eq!(delta.docs.len(), 1);
    assert_eq!(delta.docs[0].changes, edited.save_after(before.as_slice()), "just the new change, not the document");
}

#[tokio::test]
async fn a_replayed_push_adds_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.sqlite")).expect("open");
    let device = DeviceId::new_random();
    let scope = Scope::new([p("a")]);
    let push = push_of(&new_session(&p("a"), day(0), device), &Heads::empty());
    store.push(device, scope.clone(), vec![push.clone()], 1).await.expect("push");
    let stats = store.stats().await.expect("stats");
    let acks = store.push(device, scope, vec![push.clone()], 2).await.expect("replay");
    assert_eq!(acks[0].heads, push.heads);
    assert_eq!(store.stats().await.expect("stats"), stats);
}

#[tokio::test]
async fn a_device_is_not_sent_back_what_it_pushed() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.sqlite")).expect("open");
    let device = DeviceId::new_random();
    let scope = Scope::new([p("a")]);
    let am = new_session(&p("a"), day(0), device);
    store.push(device, scope.clone(), vec![push_of(&am, &Heads::empty())], 1).await.expect("push");
    let page = store.pull(device, scope, 0, LIMITS).await.expect("pull");
    assert!(page.docs.is_empty(), "the device already has every change of its own document");
    assert_eq!(page.cursor, 1, "but its cursor moves past it");
    let _: DocId = doc::read_meta(&am).expect("meta").doc_id();
}

#[tokio::test]
async fn the_audit_log_refuses_insert_or_replace_over_an_existing_entry() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("s.sqlite");
    let store = SqliteStore::open(&path).expect("open");
    let actor = posync_store::Actor::Console { name: "test".into() };
    for n in 0..2 {
        let e =
            posync_store::AuditEntry::new(n, &actor, posync_store::AuditAction::UnitMoved, "u", serde_json::json!({}));
        store.append_audit(e).await.expect("append");
    }
    let before = store.audit_log(0, 10).await.expect("log");
    // Any connection to the file, with no special settings: `REPLACE` deletes the old row
    // without firing the delete trigger, so the schema itself must refuse it.
    let conn = rusqlite::Connection::open(&path).expect("open raw");
    for sql in [
        "INSERT OR REPLACE INTO audit (seq, at, actor, action, target, detail) VALUES (1, 9, 'x', 'forged', 't', '{}')",
        "REPLACE INTO audit (seq, at, actor, action, target, detail) VALUES (2, 9, 'x', 'forged', 't', '{}')",
        "INSERT INTO audit (seq, at, actor, action, target, detail) VALUES (1, 9, 'x', 'forged', 't', '{}')
         ON CONFLICT(seq) DO UPDATE SET action = 'forged'",
        "UPDATE audit SET action = 'forged'",
        "DELETE FROM audit",
    ] {
        assert!(conn.execute(sql, []).is_err(), "the audit log accepted: {sql}");
    }
    assert_eq!(store.audit_log(0, 10).await.expect("log"), before, "every entry as it was");
    // Appending still works, with the next position.
    conn.execute("INSERT INTO audit (at, actor, action, target, detail) VALUES (9, 'x', 'unit_moved', 't', '{}')", [])
        .expect("append");
    assert_eq!(store.audit_log(0, 10).await.expect("log").len(), 3);
}

/// Pushes that arrive while the writer is busy wait, then commit together (one transaction,
/// one fsync); each is answered after that commit. A push that fails in the group (out of
/// its device's scope) is refused alone; the others commit. The pushes here are held back
/// behind one long write so that they all queue, as under a reconnect storm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_waiting_for_the_writer_commit_together_and_a_failing_one_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.sqlite")).expect("open");
    let n = 24;
    let sessions: Vec<(DeviceId, Automerge)> = (0..n)
        .map(|i| {
            let device = DeviceId::new_random();
            (device, new_session(&p(&format!("pos-{}", i % 4)), day(i as i64), device))
        })
        .collect();
    let before = store.push_commits().expect("SQLite counts its commits");

    // Hold the writer until every push is waiting.
    let (release, held) = std::sync::mpsc::channel::<()>();
    let holder = {
        let store = store.clone();
        std::thread::spawn(move || {
            store.write_blocking(|_| held.recv().map_err(|_| StoreError::Backend("released".into())))
        })
    };
    let mut pushes = tokio::task::JoinSet::new();
    for (i, (device, am)) in sessions.iter().enumerate() {
        let (store, device, push) = (store.clone(), *device, push_of(am, &Heads::empty()));
        // The last push claims a posyandu outside its scope: refused, alone.
        let scope = if i == n - 1 { Scope::new([p("elsewhere")]) } else { Scope::new([p(&format!("pos-{}", i % 4))]) };
        pushes.spawn(async move { (i, store.push(device, scope, vec![push], 10).await) });
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    release.send(()).expect("release");
    holder.join().expect("holder").expect("held write");

    let mut answers: Vec<_> = pushes.join_all().await;
    answers.sort_by_key(|(i, _)| *i);
    for (i, answer) in &answers {
        if *i == n - 1 {
            assert!(matches!(answer, Err(StoreError::Forbidden { .. })), "push {i}: {answer:?}");
        } else {
            assert_eq!(answer.as_ref().expect("acknowledged").len(), 1, "push {i}");
        }
    }
    assert_eq!(store.stats().await.expect("stats").visits, n as u64 - 1, "every acknowledged push is stored");
    let after = store.push_commits().expect("SQLite counts its commits");
    let (commits, pushed) = (after.commits - before.commits, after.pushes - before.pushes);
    assert_eq!(pushed, n as u64, "every push went through a group, the refused one too");
    assert!(commits < pushed / 2, "{pushed} pushes shared {commits} commits");

    // Reopened, the file holds what was acknowledged.
    let path = store.path().to_path_buf();
    drop(store);
    let reopened = SqliteStore::open(&path).expect("reopen");
    reopened.integrity_check().await.expect("integrity");
    assert_eq!(reopened.stats().await.expect("stats").visits, n as u64 - 1);
}

/// A reconnect storm puts hundreds of syncs in flight. Reads wait for one of the pooled
/// connections instead of each opening its own (cold page cache, nothing compiled, one
/// blocking thread more), so however many read at once, the pool's connections are all
/// that is ever opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_reads_share_the_pooled_connections() {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("s.sqlite")).expect("open");
    let posyandu = p("pos-readers");
    let scope = Scope::new([posyandu.clone()]);
    let device = DeviceId::new_random();
    let pushes: Vec<DocPush> =
        (0..60).map(|i| push_of(&new_session(&posyandu, day(i), device), &Heads::empty())).collect();
    store.push(device, scope.clone(), pushes, 10).await.expect("stored");

    let mut pulls = tokio::task::JoinSet::new();
    for _ in 0..96 {
        let (store, scope) = (store.clone(), scope.clone());
        pulls.spawn(async move { store.pull(DeviceId::new_random(), scope, 0, LIMITS).await });
    }
    for page in pulls.join_all().await {
        assert_eq!(page.expect("pulled").docs.len(), 60, "every read sees every document");
    }
    let opened = store.reader_connections_opened();
    assert!(
        opened as usize <= SqliteStore::READERS_MAX,
        "96 concurrent pulls opened {opened} reader connections; the pool holds {}",
        SqliteStore::READERS_MAX
    );
}

//! The store's contract, run unchanged against every backend.
//!
//! Every test body is written once, as an async fn over a [`Backend`]; [`conformance!`]
//! instantiates each twice, as `sqlite::<name>` and `postgres::<name>`. The PostgreSQL tests
//! run on a fresh schema each (`t_conf_<name>`, hashed when long), and skip (saying so on stderr) when no
//! PostgreSQL is reachable, unless `POSYNC_REQUIRE_POSTGRES=1`.
//!
//! `cargo test -p posync-store --test conformance sqlite::` runs one backend.

use automerge::{Automerge, ReadDoc};
use posync_model::doc::{self, DocMeta};
use posync_model::report::{RegisteredPerson, VisitFact};
use posync_model::{
    DeviceId, DocId, DocKind, Field, FieldValue, Heads, HierarchyFile, LifeGroup, Person, PersonId, PosyanduId, Role,
    Scope, Sex, UnitId, UnitKind, UserId, Visit, VisitId,
};
use posync_proto::{DocAck, DocPull, DocPush};
use posync_store::{
    Actor, ApiKeyRecord, AuditAction, AuditEntry, ConflictFilter, NewApiKey, NewCredential, NewEnrolment, PageLimits,
    PgStore, PinAttempt, PinLockout, PinRecord, PullPage, SqliteStore, Store, StoreError, StoreStats, StoredMeta,
    UnitTree, UserRecord,
};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use time::macros::date;

// ------------------------------------------------------------------------------------------
// Backends
// ------------------------------------------------------------------------------------------

#[derive(Clone)]
enum Db {
    /// One file in a directory that lives as long as any handle.
    Sqlite(Arc<tempfile::TempDir>),
    /// A URL whose connections use the test's own schema.
    Postgres(String),
}

/// Opens store instances over ONE database: a second `open()` is a second server instance
/// (SQLite: same file; PostgreSQL: same schema, separate pool).
#[derive(Clone)]
struct Backend {
    db: Db,
}

impl Backend {
    fn sqlite() -> Self {
        Self { db: Db::Sqlite(Arc::new(tempfile::tempdir().expect("temp dir"))) }
    }

    /// A fresh schema for `test`, or `None` (said on stderr) when PostgreSQL is unreachable.
    async fn postgres(test: &str) -> Option<Self> {
        let url = posync_store::postgres::testing::fresh_schema(&schema_label(test)).await?;
        Some(Self { db: Db::Postgres(url) })
    }

    async fn open(&self) -> Arc<dyn Store> {
        match &self.db {
            Db::Sqlite(dir) => {
                Arc::new(SqliteStore::open(dir.path().join("posync.sqlite")).expect("open SQLite store"))
            }
            Db::Postgres(url) => Arc::new(PgStore::connect(url).await.expect("connect PostgreSQL store")),
        }
    }
}

/// PostgreSQL truncates identifiers to 63 bytes, so `t_<label>` must fit: a long test name is
/// cut and suffixed with a hash of the whole name, keeping labels unique and stable.
fn schema_label(test: &str) -> String {
    const LABEL_MAX: usize = 61;
    if test.len() <= LABEL_MAX {
        return test.to_owned();
    }
    let hash = test.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{}_{hash:016x}", &test[..LABEL_MAX - 17])
}

/// A hung store (a lock never released) fails its test instead of stalling the run.
async fn within_time_limit(test: impl std::future::Future<Output = ()>) {
    const LIMIT: std::time::Duration = std::time::Duration::from_secs(120);
    if tokio::time::timeout(LIMIT, test).await.is_err() {
        panic!("test did not finish within {LIMIT:?}");
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    super::within_time_limit(super::$name(super::Backend::sqlite())).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let Some(backend) = super::Backend::postgres(concat!("conf_", stringify!($name))).await else {
                        return; // skipped, said on stderr
                    };
                    super::within_time_limit(super::$name(backend)).await
                }
            )*
        }
    };
}

conformance!(
    // documents
    a_pushed_document_reads_back_with_its_heads_and_content,
    replaying_a_push_adds_no_feed_entry,
    a_batch_with_one_out_of_scope_document_stores_nothing,
    malformed_changes_are_refused_and_nothing_of_the_batch_is_stored,
    a_document_pushed_as_another_posyandus_is_a_mismatch,
    a_document_twice_in_one_push_is_refused,
    an_empty_push_of_a_document_nobody_has_is_acknowledged_and_records_nothing,
    a_new_document_pushed_saved_whole_is_stored_as_it_came,
    // change feed
    the_feed_is_gap_free_from_one_and_lists_documents_in_feed_order,
    pulling_in_small_pages_sends_every_document_whole_in_first_entry_order,
    a_cursor_from_the_future_starts_the_device_over,
    a_pull_shows_only_documents_of_posyandu_in_scope,
    a_device_paging_through_the_feed_is_sent_whole_documents_it_never_had,
    a_document_larger_than_the_page_comes_in_pieces_to_a_device_that_takes_them,
    documents_asked_for_first_come_ahead_of_the_feed_and_are_not_sent_twice,
    // per-device heads
    a_device_is_sent_only_the_changes_it_lacks,
    a_document_a_device_dropped_is_sent_whole_when_it_changes,
    // incremental storage (issue #14)
    a_document_merged_past_its_chunk_limit_keeps_every_change_on_every_instance,
    // projection
    reports_and_registry_follow_each_documents_latest_version,
    // conflicts
    concurrent_edits_of_one_field_open_one_conflict_until_resolved,
    // audit
    the_audit_log_is_gap_free_in_order_and_pages_with_after,
    // access
    an_imported_hierarchy_reads_back_as_its_units_and_users,
    an_enrolled_device_gets_its_users_scope_until_revoked,
    a_device_id_belongs_to_its_first_user_and_a_revoked_device_stays_revoked,
    a_device_whose_enrolment_answer_was_lost_redeems_its_code_again,
    a_district_admin_reads_her_districts_audit_entries_only,
    // sign-in PINs (issue #16)
    a_pin_counts_attempts_locks_after_the_maximum_and_a_success_starts_over,
    a_pin_sign_in_binds_a_device_like_an_enrolment,
    parallel_pin_attempts_on_two_instances_never_pass_the_lockout,
    // read-only API keys (issue #18)
    an_api_key_is_stored_by_hash_listed_with_its_last_use_and_revoked,
    an_api_key_reads_the_posyandu_under_its_unit_as_of_each_use,
    // what devices may push (issue #12)
    hostile_changes_are_refused_before_anything_is_stored,
    record_ids_are_unique_across_documents,
    records_with_impossible_values_are_kept_marked_and_left_out_of_reports,
    // duplicates
    people_registered_twice_are_listed_until_merged,
    // concurrency
    concurrent_pushes_to_one_document_from_two_instances_lose_no_edit,
    a_device_pulling_during_a_write_storm_misses_no_change,
);

// ------------------------------------------------------------------------------------------
// Builders
// ------------------------------------------------------------------------------------------

/// 2026-01-01T00:00:00Z: registrations check birth dates against the push time.
const NOW: i64 = 1_767_225_600;
const ALL: PageLimits = PageLimits { bytes_max: 1 << 24, docs_max: 1000, pieces: false };
const INSTANCE: &str = "conformance";

fn p(id: &str) -> PosyanduId {
    id.parse().expect("posyandu id")
}

fn scope(ids: &[&str]) -> Scope {
    Scope::new(ids.iter().map(|id| p(id)))
}

fn unit(id: &str) -> UnitId {
    id.parse().expect("unit id")
}

fn user_id(id: &str) -> UserId {
    id.parse().expect("user id")
}

/// Session days, from a Monday in January 2026.
fn day(n: i64) -> time::Date {
    date!(2026 - 01 - 05) + time::Duration::days(n)
}

fn heads(am: &Automerge) -> Heads {
    Heads::new(am.get_heads())
}

fn doc_id(am: &Automerge) -> DocId {
    doc::read_meta(am).expect("meta").doc_id()
}

fn visit(device: DeviceId, name: &str, weight_g: i64) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: name.into(),
        sex: Sex::Female,
        birth_date: date!(2024 - 06 - 15),
        weight_g: Some(weight_g),
        length_mm: Some(800),
        lying: Some(true),
        head_circ_mm: None,
        muac_mm: None,
        immunisations: BTreeMap::new(),
        vitamin_a: None,
        notes: String::new(),
        group: LifeGroup::Balita,
        services: BTreeMap::new(),
        recorded_by: device,
        recorded_at: NOW,
    }
}

/// A session document as `device` creates it: genesis, then one change per visit.
fn session(posyandu: &str, date: time::Date, device: DeviceId, visits: &[Visit]) -> Automerge {
    let mut am = doc::genesis(&DocMeta::session(p(posyandu), date), device.actor()).expect("genesis");
    for v in visits {
        doc::record_visit(&mut am, v, NOW).expect("record visit");
    }
    am
}

fn person(name: &str, nik: &str, device: DeviceId) -> Person {
    Person {
        person_id: PersonId::new_random(),
        name: name.into(),
        sex: Sex::Male,
        birth_date: date!(2024 - 03 - 10),
        mother_name: "Siti Aminah".into(),
        nik: Some(nik.into()),
        mother_nik: None,
        address: "Dusun Cibodas".into(),
        rt: Some(2),
        rw: Some(5),
        pregnant: false,
        kia_book: true,
        merged_into: None,
        registered_by: device,
        registered_at: NOW,
    }
}

fn registry(posyandu: &str, device: DeviceId, people: &[Person]) -> Automerge {
    let mut am = doc::genesis(&DocMeta::registry(p(posyandu)), device.actor()).expect("genesis");
    for person in people {
        doc::register_person(&mut am, person, NOW).expect("register person");
    }
    am
}

/// Another replica of `am`, writing as `device`.
fn replica(am: &Automerge, device: DeviceId) -> Automerge {
    let mut r = am.fork();
    r.set_actor(device.actor());
    r
}

/// What a device sends for `am` when the server has acknowledged `base`.
fn push_of(am: &Automerge, base: &Heads) -> DocPush {
    let meta = doc::read_meta(am).expect("meta");
    DocPush {
        doc: meta.doc_id(),
        kind: meta.kind,
        posyandu: meta.posyandu,
        base: base.to_bytes(),
        heads: heads(am).to_bytes(),
        changes: if base.is_empty() { am.save() } else { am.save_after(base.as_slice()) },
    }
}

fn ack_of(am: &Automerge) -> DocAck {
    DocAck { doc: doc_id(am), heads: heads(am).to_bytes() }
}

fn load(bytes: &[u8]) -> Automerge {
    Automerge::load(bytes).expect("bytes load as an Automerge document")
}

fn pulled_heads(d: &DocPull) -> Heads {
    Heads::from_bytes(&d.heads).expect("pulled heads")
}

/// Apply pulled changes to a device's replica, as a phone would, checking it can use them.
fn apply_pulled(am: &mut Automerge, d: &DocPull, context: &str) {
    am.load_incremental(&d.changes).expect("pulled changes decode");
    assert!(
        am.get_missing_deps(&[]).is_empty(),
        "{context}: doc {} came as changes that depend on changes the device was never sent",
        d.doc
    );
    assert_eq!(heads(am), pulled_heads(d), "{context}: doc {}: once applied, the device has the page's heads", d.doc);
}

fn set_weight(am: &mut Automerge, visit: VisitId, grams: i64, now: i64) {
    doc::set_visit_field(am, visit, Field::WeightG, &FieldValue::Int(grams), now).expect("set weight");
}

fn audit(at: i64, action: AuditAction, target: impl ToString) -> AuditEntry {
    let actor = Actor::Console { name: "conformance".into() };
    AuditEntry::new(at, &actor, action, target, serde_json::json!({ "by": "conformance" }))
}

const FIXTURE: &str = include_str!("../../../fixtures/district-kota-banjar.json");

/// The sample district: 58 units (40 posyandu) and 308 users.
fn fixture() -> HierarchyFile {
    HierarchyFile::parse(FIXTURE).expect("fixture hierarchy parses and validates")
}

/// Every posyandu under `unit` in `file`: the scope of a user assigned to it.
fn posyandu_under(file: &HierarchyFile, unit_id: &str) -> Scope {
    let tree = UnitTree { units: file.units.clone() };
    let top = unit(unit_id);
    Scope::new(
        file.units
            .iter()
            .filter(|u| u.kind == UnitKind::Posyandu && tree.ancestors(&u.id).iter().any(|a| a.id == top))
            .map(|u| u.id.as_posyandu()),
    )
}

fn credential(device: DeviceId, refresh: u8) -> NewCredential {
    NewCredential {
        device,
        label: format!("HP {device}"),
        refresh_hash: [refresh; 32],
        refresh_expires_at: NOW + 30 * 86_400,
    }
}

/// Issue a code for `user` and redeem it on a new device, through the trait alone.
async fn enrol(store: &dyn Store, user: &str, code: u8, refresh: u8) -> DeviceId {
    let device = DeviceId::new_random();
    let enrolment = NewEnrolment { code_hash: [code; 32], user: user_id(user), expires_at: NOW + 3600 };
    store.issue_enrolment(enrolment, audit(NOW, AuditAction::EnrolmentIssued, user)).await.expect("issue enrolment");
    let got = store.redeem_enrolment([code; 32], credential(device, refresh), NOW + 1).await.expect("redeem");
    assert_eq!(got.id, user_id(user));
    device
}

async fn stats(store: &dyn Store) -> StoreStats {
    store.stats().await.expect("stats")
}

/// Pull pages from `cursor` until the server says there is no more.
async fn pull_to_end(
    store: &dyn Store,
    device: DeviceId,
    scope: &Scope,
    mut cursor: u64,
    limits: PageLimits,
) -> (Vec<DocPull>, u64) {
    let mut docs = Vec::new();
    for _ in 0..10_000 {
        let page = store.pull(device, scope.clone(), cursor, limits).await.expect("pull");
        docs.extend(page.docs);
        cursor = page.cursor;
        if !page.more {
            return (docs, cursor);
        }
    }
    panic!("pull kept saying there is more");
}

macro_rules! assert_err {
    ($result:expr, $pat:pat $(if $guard:expr)?) => {
        match $result {
            Err($pat) $(if $guard)? => {}
            other => panic!("expected Err({}), got {other:?}", stringify!($pat $(if $guard)?)),
        }
    };
}

/// Twelve documents over two posyandu, pushed in batches, then four edited: 16 feed entries.
/// Returns the edited documents in edit order.
async fn seed_feed(store: &dyn Store) -> Vec<DocId> {
    let writer = DeviceId::new_random();
    let both = scope(&["melati", "mawar"]);
    let mut docs = Vec::new();
    for n in 0..6 {
        let a = session("melati", day(n), writer, &[visit(writer, "Sri Wahyuni", 9000 + n)]);
        let b = session("mawar", day(n), writer, &[visit(writer, "Ani Rahayu", 8000 + n)]);
        let batch = vec![push_of(&a, &Heads::empty()), push_of(&b, &Heads::empty())];
        store.push(writer, both.clone(), batch, NOW + n).await.expect("push batch");
        docs.push(a);
        docs.push(b);
    }
    let mut edited = Vec::new();
    for i in [3, 0, 7, 10] {
        let am = &mut docs[i];
        let before = heads(am);
        let v = doc::visits(am).expect("visits")[0].visit_id;
        set_weight(am, v, 12_000 + i as i64, NOW + 100);
        store.push(writer, both.clone(), vec![push_of(am, &before)], NOW + 100).await.expect("push edit");
        edited.push(doc_id(am));
    }
    edited
}

// ------------------------------------------------------------------------------------------
// 1. Documents
// ------------------------------------------------------------------------------------------

async fn a_pushed_document_reads_back_with_its_heads_and_content(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let s = scope(&["melati"]);
    let sess = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000), visit(dev, "Budi Santoso", 11_000)]);
    let reg = registry("melati", dev, &[person("Ahmad Fauzi", "3279010101240001", dev)]);
    assert!(store.get(doc_id(&sess)).await.expect("get").is_none(), "nothing before the push");

    let acks = store
        .push(dev, s.clone(), vec![push_of(&sess, &Heads::empty()), push_of(&reg, &Heads::empty())], NOW)
        .await
        .expect("push");
    assert_eq!(acks, vec![ack_of(&sess), ack_of(&reg)], "one ack per document, in push order, with its heads");

    for (am, kind) in [(&sess, DocKind::Session), (&reg, DocKind::Registry)] {
        let got = store.get(doc_id(am)).await.expect("get").expect("stored");
        assert_eq!(got.meta.doc, doc_id(am));
        assert_eq!(got.meta.kind, kind);
        assert_eq!(got.meta.posyandu, p("melati"));
        assert_eq!(got.meta.heads, heads(am));
        assert!((1..=2).contains(&got.meta.seq), "seq {} of a two-document first push", got.meta.seq);
        let back = load(&got.bytes);
        assert_eq!(heads(&back), heads(am), "stored bytes hold exactly the pushed changes");
        assert_eq!(doc::to_json(&back), doc::to_json(am), "stored bytes load to the same content");
    }
    assert_eq!(stats(&*store).await, StoreStats { docs: 2, visits: 2, people: 1, feed_entries: 2, device_heads: 2 });
    let listed = store.list(s).await.expect("list");
    assert_eq!(listed.iter().map(|m| m.seq).collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(listed.iter().map(|m| m.doc).collect::<BTreeSet<_>>(), BTreeSet::from([doc_id(&sess), doc_id(&reg)]));
}

async fn replaying_a_push_adds_no_feed_entry(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let s = scope(&["melati"]);
    let am = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    let push = push_of(&am, &Heads::empty());
    store.push(dev, s.clone(), vec![push.clone()], NOW).await.expect("push");
    let before = stats(&*store).await;
    let meta = store.get(doc_id(&am)).await.expect("get").expect("stored").meta;

    // The same push again (a lost ack), and the same changes from another device that got
    // them elsewhere: neither is a change.
    let acks = store.push(dev, s.clone(), vec![push.clone()], NOW + 1).await.expect("replay");
    assert_eq!(acks, vec![ack_of(&am)]);
    let other = DeviceId::new_random();
    let acks = store.push(other, s.clone(), vec![push], NOW + 2).await.expect("same changes from another device");
    assert_eq!(acks, vec![ack_of(&am)]);

    let after = stats(&*store).await;
    assert_eq!(
        StoreStats { device_heads: before.device_heads, ..after },
        before,
        "no new feed entry, document or projected row"
    );
    assert_eq!(after.device_heads, before.device_heads + 1, "only the other device's acknowledged heads");
    assert_eq!(store.get(doc_id(&am)).await.expect("get").expect("stored").meta, meta, "the document keeps its seq");
}

async fn a_batch_with_one_out_of_scope_document_stores_nothing(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let melati = scope(&["melati"]);
    let mut x = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    store.push(dev, melati.clone(), vec![push_of(&x, &Heads::empty())], NOW).await.expect("push x");
    let stored_x = heads(&x);
    let other = DeviceId::new_random();
    let w = session("mawar", day(0), other, &[visit(other, "Ani Rahayu", 8000)]);
    store.push(other, scope(&["mawar"]), vec![push_of(&w, &Heads::empty())], NOW).await.expect("push w");
    let before = stats(&*store).await;

    // An edit of a stored document, a new document, and a new one outside the scope.
    let v = doc::visits(&x).expect("visits")[0].visit_id;
    set_weight(&mut x, v, 9100, NOW + 1);
    let y = session("melati", day(1), dev, &[visit(dev, "Dewi Lestari", 7000)]);
    let z = session("mawar", day(1), dev, &[visit(dev, "Rina Marlina", 7500)]);
    let batch = vec![push_of(&x, &stored_x), push_of(&y, &Heads::empty()), push_of(&z, &Heads::empty())];
    assert_err!(
        store.push(dev, melati.clone(), batch, NOW + 1).await,
        StoreError::Forbidden { doc } if doc == doc_id(&z)
    );

    // A stored document of another posyandu, even pushed as one of ours.
    let mut w2 = replica(&w, dev);
    let wv = doc::visits(&w2).expect("visits")[0].visit_id;
    set_weight(&mut w2, wv, 8100, NOW + 2);
    let batch = vec![push_of(&y, &Heads::empty()), push_of(&w2, &heads(&w))];
    assert_err!(
        store.push(dev, melati.clone(), batch, NOW + 2).await,
        StoreError::Forbidden { doc } if doc == doc_id(&w)
    );

    assert_eq!(stats(&*store).await, before, "nothing of either batch landed");
    assert!(store.get(doc_id(&y)).await.expect("get").is_none());
    assert!(store.get(doc_id(&z)).await.expect("get").is_none());
    assert_eq!(store.get(doc_id(&x)).await.expect("get").expect("x").meta.heads, stored_x, "the edit of x rolled back");
    assert_eq!(store.get(doc_id(&w)).await.expect("get").expect("w").meta.heads, heads(&w));
    let facts = store.report_facts(melati, day(0), day(1)).await.expect("facts");
    assert_eq!(facts.iter().map(|f| f.weight_g).collect::<Vec<_>>(), vec![Some(9000)], "projection untouched");
}

async fn malformed_changes_are_refused_and_nothing_of_the_batch_is_stored(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let s = scope(&["melati"]);
    let good = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    let bad_doc = session("melati", day(1), dev, &[visit(dev, "Dewi Lestari", 7000)]);
    let mut bad = push_of(&bad_doc, &Heads::empty());
    bad.changes = b"not automerge at all".to_vec();
    let batch = vec![push_of(&good, &Heads::empty()), bad];
    assert_err!(
        store.push(dev, s.clone(), batch, NOW).await,
        StoreError::MalformedChanges { doc, .. } if doc == doc_id(&bad_doc)
    );
    assert_eq!(stats(&*store).await, StoreStats::default(), "nothing stored");
    assert!(store.get(doc_id(&good)).await.expect("get").is_none(), "not even the good document");
    assert!(store.list(s.clone()).await.expect("list").is_empty());

    // Against a stored document too: the stored bytes stay as they were. (Automerge skips
    // undecodable input when loading into a non-empty document, so what the server sees is
    // heads the changes did not produce.)
    store.push(dev, s.clone(), vec![push_of(&good, &Heads::empty())], NOW).await.expect("push good");
    let before = stats(&*store).await;
    let mut edited = good.clone();
    let v = doc::visits(&edited).expect("visits")[0].visit_id;
    set_weight(&mut edited, v, 9100, NOW + 1);
    let mut bad_edit = push_of(&edited, &heads(&good));
    bad_edit.changes = b"\x85\x6f\x4a\x83garbage".to_vec();
    assert_err!(
        store.push(dev, s.clone(), vec![bad_edit], NOW + 1).await,
        StoreError::MalformedChanges { .. } | StoreError::HeadsMismatch { .. }
    );
    assert_eq!(stats(&*store).await, before);
    let got = store.get(doc_id(&good)).await.expect("get").expect("stored");
    assert_eq!(heads(&load(&got.bytes)), heads(&good));

    // Changes that build on changes the server never got are refused the same way.
    let mut ahead = session("melati", day(2), dev, &[visit(dev, "Ani Rahayu", 8000)]);
    let sent = heads(&ahead);
    let v = doc::visits(&ahead).expect("visits")[0].visit_id;
    set_weight(&mut ahead, v, 8100, NOW + 2);
    let batch = vec![push_of(&good, &heads(&good)), push_of(&ahead, &sent)];
    assert_err!(
        store.push(dev, s, batch, NOW + 2).await,
        StoreError::MissingDependencies { doc } if doc == doc_id(&ahead)
    );
    assert_eq!(stats(&*store).await, before);
    assert!(store.get(doc_id(&ahead)).await.expect("get").is_none());
}

async fn a_document_pushed_as_another_posyandus_is_a_mismatch(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let both = scope(&["melati", "mawar"]);
    let mut x = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    store.push(dev, both.clone(), vec![push_of(&x, &Heads::empty())], NOW).await.expect("push");
    let before = stats(&*store).await;
    let base = heads(&x);
    let v = doc::visits(&x).expect("visits")[0].visit_id;
    set_weight(&mut x, v, 9100, NOW + 1);

    // A stored document re-pushed under another posyandu, or as another kind.
    let mut moved = push_of(&x, &base);
    moved.posyandu = p("mawar");
    assert_err!(
        store.push(dev, both.clone(), vec![moved], NOW + 1).await,
        StoreError::DocMismatch { doc, .. } if doc == doc_id(&x)
    );
    let mut rekinded = push_of(&x, &base);
    rekinded.kind = DocKind::Registry;
    assert_err!(store.push(dev, both.clone(), vec![rekinded], NOW + 1).await, StoreError::DocMismatch { .. });

    // A new document whose content names another posyandu than the push claims: a way
    // around the scope check if it were accepted.
    let foreign = session("mawar", day(3), dev, &[visit(dev, "Ani Rahayu", 8000)]);
    let mut disguised = push_of(&foreign, &Heads::empty());
    disguised.posyandu = p("melati");
    assert_err!(store.push(dev, scope(&["melati"]), vec![disguised], NOW + 1).await, StoreError::DocMismatch { .. });

    assert_eq!(stats(&*store).await, before, "nothing stored");
    assert_eq!(store.get(doc_id(&x)).await.expect("get").expect("x").meta.heads, base);
    assert!(store.get(doc_id(&foreign)).await.expect("get").is_none());
}

async fn a_document_twice_in_one_push_is_refused(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let s = scope(&["melati"]);
    let am = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    let other = session("melati", day(1), dev, &[visit(dev, "Dewi Lestari", 7000)]);
    let push = push_of(&am, &Heads::empty());
    let batch = vec![push.clone(), push_of(&other, &Heads::empty()), push];
    assert_err!(store.push(dev, s, batch, NOW).await, StoreError::DuplicateDoc { doc } if doc == doc_id(&am));
    assert_eq!(stats(&*store).await, StoreStats::default(), "not even the first copy is stored");
    assert!(store.get(doc_id(&am)).await.expect("get").is_none());
}

async fn an_empty_push_of_a_document_nobody_has_is_acknowledged_and_records_nothing(backend: Backend) {
    let store = backend.open().await;
    let (writer, prober) = (DeviceId::new_random(), DeviceId::new_random());
    let s = scope(&["melati"]);
    let am = session("melati", day(0), writer, &[visit(writer, "Sri Wahyuni", 9000)]);
    let probe = DocPush { changes: Vec::new(), ..push_of(&am, &Heads::empty()) };
    let acks = store.push(prober, s.clone(), vec![probe.clone()], NOW).await.expect("probe");
    assert_eq!(acks.iter().map(|a| a.doc).collect::<Vec<_>>(), vec![doc_id(&am)], "acknowledged");
    assert_eq!(stats(&*store).await, StoreStats::default(), "no document, feed entry or device heads");

    // Once the document exists, the same probe records what the prober holds.
    store.push(writer, s.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("push");
    store.push(prober, s, vec![probe], NOW + 1).await.expect("probe again");
    let after = stats(&*store).await;
    assert_eq!((after.docs, after.feed_entries, after.device_heads), (1, 1, 2), "{after:?}");
}

/// A phone's first push of a document is the document saved whole: the server keeps those
/// bytes (they load to exactly what it merged) instead of saving its copy again. A document
/// followed by more changes is saved by the server, whole.
async fn a_new_document_pushed_saved_whole_is_stored_as_it_came(backend: Backend) {
    let store = backend.open().await;
    let device = DeviceId::new_random();
    let s = scope(&["melati"]);
    let am = session("melati", day(0), device, &[visit(device, "Sri Wahyuni", 9000)]);
    let push = push_of(&am, &Heads::empty());
    store.push(device, s.clone(), vec![push.clone()], NOW).await.expect("push");
    let stored = store.get(doc_id(&am)).await.expect("get").expect("stored");
    assert_eq!(stored.bytes, push.changes, "stored as pushed");
    assert_eq!(stored.meta.heads, heads(&am));

    let mut more = session("melati", day(1), device, &[visit(device, "Ani", 8000)]);
    let first = heads(&more);
    let saved = more.save();
    doc::record_visit(&mut more, &visit(device, "Budi", 7000), NOW).expect("record");
    let pushed =
        DocPush { changes: [saved, more.save_after(first.as_slice())].concat(), ..push_of(&more, &Heads::empty()) };
    store.push(device, s, vec![pushed.clone()], NOW).await.expect("push");
    let stored = store.get(doc_id(&more)).await.expect("get").expect("stored");
    assert_ne!(stored.bytes, pushed.changes, "a document and a change: saved again");
    let loaded = Automerge::load(&stored.bytes).expect("loads");
    assert_eq!(heads(&loaded), heads(&more));
    assert_eq!(doc::visits(&loaded).expect("visits").len(), 2);
}

// ------------------------------------------------------------------------------------------
// 2. The change feed
// ------------------------------------------------------------------------------------------

async fn the_feed_is_gap_free_from_one_and_lists_documents_in_feed_order(backend: Backend) {
    let store = backend.open().await;
    let edited = seed_feed(&*store).await;
    let both = scope(&["melati", "mawar"]);
    let listed = store.list(both.clone()).await.expect("list");
    assert_eq!(listed.len(), 12);
    assert!(listed.windows(2).all(|w| w[0].seq < w[1].seq), "strictly increasing seq: {listed:?}");
    assert_eq!(stats(&*store).await.feed_entries, 16, "12 creations and 4 edits");
    assert_eq!(listed.last().map(|m| m.seq), Some(16), "the highest seq is the number of entries: no gap");
    assert!(listed.first().is_some_and(|m| m.seq >= 1));
    // Each document sits at its latest change: the edited ones last, in edit order.
    assert_eq!(listed[8..].iter().map(|m| m.doc).collect::<Vec<_>>(), edited);
    assert_eq!(listed[8..].iter().map(|m| m.seq).collect::<Vec<_>>(), vec![13, 14, 15, 16]);
    assert!(listed[..8].iter().all(|m| (1..=12).contains(&m.seq)));
    // Each document's seq and heads are those `get` reports.
    for m in &listed {
        assert_eq!(&store.get(m.doc).await.expect("get").expect("stored").meta, m);
    }
    // A narrower scope lists the same entries, filtered.
    let melati = store.list(scope(&["melati"])).await.expect("list");
    let expected: Vec<StoredMeta> = listed.iter().filter(|m| m.posyandu == p("melati")).cloned().collect();
    assert_eq!(melati, expected);
    assert_eq!(melati.len(), 6);
}

async fn pulling_in_small_pages_sends_every_document_whole_in_first_entry_order(backend: Backend) {
    let store = backend.open().await;
    seed_feed(&*store).await;
    let both = scope(&["melati", "mawar"]);
    let listed = store.list(both.clone()).await.expect("list");
    let n = listed.len();
    // Pages walk the feed: documents come in the order of their first entry (creation here).
    let created: Vec<DocId> = (0..6)
        .flat_map(|d| [DocId::for_session(&p("melati"), day(d)), DocId::for_session(&p("mawar"), day(d))])
        .collect();
    for docs_max in 1..=3 {
        let reader = DeviceId::new_random();
        let limits = PageLimits { bytes_max: 1 << 24, docs_max, pieces: false };
        let mut cursor = 0;
        let mut pages = 0;
        let mut first_seen: Vec<DocId> = Vec::new();
        let mut held: HashMap<DocId, Automerge> = HashMap::new();
        loop {
            assert!(pages <= 2 * n, "docs_max {docs_max}: paging does not end");
            let page = store.pull(reader, both.clone(), cursor, limits).await.expect("pull");
            pages += 1;
            assert!(page.docs.len() <= docs_max, "docs_max {docs_max}: a page of {}", page.docs.len());
            assert!(page.cursor > cursor || !page.more, "a page with more to come moves the cursor");
            for d in &page.docs {
                if !first_seen.contains(&d.doc) {
                    first_seen.push(d.doc);
                }
                let am = held.entry(d.doc).or_default();
                apply_pulled(am, d, &format!("docs_max {docs_max}, a reader that had nothing"));
            }
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        assert!(pages >= n.div_ceil(docs_max), "docs_max {docs_max}: {pages} pages for {n} documents");
        assert_eq!(first_seen, created, "docs_max {docs_max}: documents in the order of their first entry");
        assert_eq!(cursor, 16, "the last page ends at the end of the feed");
        for m in &listed {
            assert_eq!(
                held.get(&m.doc).map(heads),
                Some(m.heads.clone()),
                "docs_max {docs_max}: doc {} current",
                m.doc
            );
        }
        let after = store.pull(reader, both.clone(), cursor, limits).await.expect("pull at the end");
        assert!(after.docs.is_empty() && !after.more);
        assert_eq!(after.cursor, cursor);
    }
}

async fn a_cursor_from_the_future_starts_the_device_over(backend: Backend) {
    let store = backend.open().await;
    seed_feed(&*store).await;
    let both = scope(&["melati", "mawar"]);
    let reader = DeviceId::new_random();
    let (from_zero, end) = pull_to_end(&*store, reader, &both, 0, ALL).await;
    assert_eq!(from_zero.len(), 12);
    assert_eq!(end, 16);
    // A server restored from an older backup sees cursors it never handed out.
    for future in [end + 1, end + 1_000_000, u64::MAX] {
        let (docs, cursor) = pull_to_end(&*store, reader, &both, future, ALL).await;
        assert_eq!(docs, from_zero, "cursor {future}: everything again, as from 0");
        assert_eq!(cursor, end, "cursor {future}: back on the server's clock");
    }
}

async fn a_pull_shows_only_documents_of_posyandu_in_scope(backend: Backend) {
    let store = backend.open().await;
    let writer = DeviceId::new_random();
    let all = scope(&["melati", "mawar", "anggrek"]);
    for n in 0..3 {
        for pos in ["melati", "mawar", "anggrek"] {
            let am = session(pos, day(n), writer, &[visit(writer, "Sri Wahyuni", 9000)]);
            store.push(writer, all.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("push");
        }
    }
    let reader = DeviceId::new_random();
    let some = scope(&["melati", "anggrek"]);
    let (docs, cursor) =
        pull_to_end(&*store, reader, &some, 0, PageLimits { bytes_max: 1 << 24, docs_max: 2, pieces: false }).await;
    assert_eq!(docs.len(), 6);
    assert!(docs.iter().all(|d| some.allows(&d.posyandu)), "no document of mawar");
    let listed: Vec<DocId> = store.list(some.clone()).await.expect("list").iter().map(|m| m.doc).collect();
    assert_eq!(docs.iter().map(|d| d.doc).collect::<Vec<_>>(), listed);
    assert_eq!(cursor, 9, "the cursor still moves past the other posyandu's entries");
    let mawar = store.list(scope(&["mawar"])).await.expect("list");
    assert_eq!(mawar.len(), 3);
    assert!(mawar.iter().all(|m| m.posyandu == p("mawar")));
    let empty = store.pull(reader, Scope::default(), 0, ALL).await.expect("pull with an empty scope");
    assert!(empty.docs.is_empty() && !empty.more);
    assert!(store.list(Scope::default()).await.expect("list").is_empty());
    assert!(store.list(scope(&["kenanga"])).await.expect("list").is_empty());
}

async fn a_device_paging_through_the_feed_is_sent_whole_documents_it_never_had(backend: Backend) {
    let store = backend.open().await;
    let writer = DeviceId::new_random();
    let s = scope(&["melati"]);
    let mut x = session("melati", day(0), writer, &[visit(writer, "Sri Wahyuni", 9000)]);
    let y = session("melati", day(1), writer, &[visit(writer, "Dewi Lestari", 7000)]);
    store.push(writer, s.clone(), vec![push_of(&x, &Heads::empty())], NOW).await.expect("push x"); // seq 1
    store.push(writer, s.clone(), vec![push_of(&y, &Heads::empty())], NOW).await.expect("push y"); // seq 2
    let before = heads(&x);
    let v = doc::visits(&x).expect("visits")[0].visit_id;
    set_weight(&mut x, v, 9100, NOW + 1);
    store.push(writer, s.clone(), vec![push_of(&x, &before)], NOW + 1).await.expect("edit x"); // seq 3

    // One document per page. Whatever the order, every page must apply on top of what the
    // earlier pages gave: no delta against a version the device was never sent.
    let reader = DeviceId::new_random();
    let one = PageLimits { bytes_max: 1 << 24, docs_max: 1, pieces: false };
    let mut held: HashMap<DocId, Automerge> = HashMap::new();
    let mut cursor = 0;
    for page_no in 1..=10 {
        let page = store.pull(reader, s.clone(), cursor, one).await.expect("page");
        for d in &page.docs {
            let am = held.entry(d.doc).or_default();
            apply_pulled(am, d, &format!("page {page_no} of a reader that had nothing"));
        }
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert_eq!(cursor, 3, "the pass ended at the end of the feed");
    assert_eq!(held.get(&doc_id(&x)).map(heads), Some(heads(&x)), "x as edited");
    assert_eq!(held.get(&doc_id(&y)).map(heads), Some(heads(&y)), "y");
}

/// A registry or a busy session can be larger than what a 2G link carries in one answer. A
/// device that takes pieces gets its first changes, reports them with an empty push, gets the
/// next ones, and the cursor passes the document only with its last piece. A device that
/// does not take pieces still gets it whole.
async fn a_document_larger_than_the_page_comes_in_pieces_to_a_device_that_takes_them(backend: Backend) {
    let store = backend.open().await;
    let writer = DeviceId::new_random();
    let s = scope(&["melati"]);
    let visits: Vec<Visit> = (0..40).map(|i| visit(writer, &format!("Anak {i}"), 9000 + i)).collect();
    let mut x = session("melati", day(0), writer, &visits);
    store.push(writer, s.clone(), vec![push_of(&x, &Heads::empty())], NOW).await.expect("push x"); // seq 1
    let before = heads(&x);
    for (i, v) in visits.iter().enumerate() {
        set_weight(&mut x, v.visit_id, 9500 + i as i64, NOW + 1);
    }
    store.push(writer, s.clone(), vec![push_of(&x, &before)], NOW + 1).await.expect("edits"); // seq 2
    let y = session("melati", day(1), writer, &[visit(writer, "Dewi Lestari", 7000)]);
    store.push(writer, s.clone(), vec![push_of(&y, &Heads::empty())], NOW + 2).await.expect("push y"); // seq 3

    let page_bytes = 1024;
    let old = PageLimits { bytes_max: page_bytes, docs_max: 10, pieces: false };
    let first = store.pull(DeviceId::new_random(), s.clone(), 0, old).await.expect("pull whole");
    assert!(
        !first.docs[0].piece && first.docs[0].changes.len() > 2 * page_bytes,
        "precondition: x ({} bytes) is larger than two pages",
        first.docs[0].changes.len()
    );

    let reader = DeviceId::new_random();
    let limits = PageLimits { pieces: true, ..old };
    let mut held: HashMap<DocId, Automerge> = HashMap::new();
    let (mut cursor, mut pieces) = (0, 0);
    for page_no in 1..=200 {
        let page = store.pull(reader, s.clone(), cursor, limits).await.expect("page");
        let mut probes = Vec::new();
        for d in &page.docs {
            let am = held.entry(d.doc).or_default();
            apply_pulled(am, d, &format!("page {page_no}"));
            if d.piece {
                pieces += 1;
                assert!(d.changes.len() <= page_bytes, "page {page_no}: a piece of {} bytes", d.changes.len());
                assert_eq!(page.docs.len(), 1, "a piece travels alone");
                assert_eq!(page.cursor, cursor, "page {page_no}: the cursor stays before a document sent in part");
                assert!(page.more);
                let meta = doc::read_meta(am).expect("a piece carries the document's identity");
                probes.push(DocPush {
                    doc: d.doc,
                    kind: meta.kind,
                    posyandu: meta.posyandu,
                    base: d.heads.clone(),
                    heads: d.heads.clone(),
                    changes: Vec::new(),
                });
            }
        }
        if !probes.is_empty() {
            let acks = store.push(reader, s.clone(), probes.clone(), NOW + 3).await.expect("report the piece");
            assert_eq!(acks[0].heads, probes[0].heads, "the server acknowledges the piece the device holds");
        }
        cursor = page.cursor;
        if !page.more {
            break;
        }
    }
    assert!(pieces >= 3, "x came in {pieces} pieces");
    assert_eq!(cursor, 3, "the pass ended at the end of the feed");
    assert_eq!(held.get(&doc_id(&x)).map(heads), Some(heads(&x)), "x whole, as edited");
    assert_eq!(held.get(&doc_id(&y)).map(heads), Some(heads(&y)), "y");
}

/// Today's session is the newest entry of the feed, so the last document of a pull in feed
/// order. Asked for first, it comes ahead of the walk (marked as held ahead of the cursor);
/// once the device reports it, the walk does not send it again. Only documents in scope.
async fn documents_asked_for_first_come_ahead_of_the_feed_and_are_not_sent_twice(backend: Backend) {
    let store = backend.open().await;
    let writer = DeviceId::new_random();
    let both = scope(&["melati", "mawar"]);
    for d in 1..=4 {
        let am = session("melati", day(d), writer, &[visit(writer, "Sri Wahyuni", 9000)]);
        store.push(writer, both.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("older sessions");
    }
    let mawar_today = session("mawar", day(0), writer, &[visit(writer, "Dewi Lestari", 7000)]);
    let today = session("melati", day(0), writer, &[visit(writer, "Ani", 8000)]);
    store.push(writer, both.clone(), vec![push_of(&mawar_today, &Heads::empty())], NOW).await.expect("mawar");
    store.push(writer, both.clone(), vec![push_of(&today, &Heads::empty())], NOW).await.expect("today"); // seq 6

    let reader = DeviceId::new_random();
    let melati = scope(&["melati"]);
    let limits = PageLimits { bytes_max: 1 << 20, docs_max: 10, pieces: true };
    let asked = vec![doc_id(&mawar_today), doc_id(&today)];
    let ahead = store.pull_ahead(reader, melati.clone(), 0, asked.clone(), limits).await.expect("ahead");
    assert_eq!(ahead.docs.iter().map(|d| d.doc).collect::<Vec<_>>(), vec![doc_id(&today)], "in scope only");
    assert!(ahead.docs[0].piece && ahead.more && ahead.cursor == 0, "held ahead of a cursor that does not move");
    let first = store.pull_first(reader, melati.clone(), 0, asked.clone(), limits).await.expect("first");
    assert_eq!(
        first.docs.iter().map(|d| d.doc).collect::<Vec<_>>(),
        vec![doc_id(&today)],
        "pull_first: the ahead page"
    );
    let mut held: HashMap<DocId, Automerge> = HashMap::new();
    apply_pulled(held.entry(doc_id(&today)).or_default(), &ahead.docs[0], "ahead");

    // The device reports it (a probe), as the reference client does in its next request.
    let report = DocPush {
        doc: doc_id(&today),
        kind: DocKind::Session,
        posyandu: p("melati"),
        base: ahead.docs[0].heads.clone(),
        heads: ahead.docs[0].heads.clone(),
        changes: Vec::new(),
    };
    store.push(reader, melati.clone(), vec![report], NOW).await.expect("report");
    let again = store.pull_ahead(reader, melati.clone(), 0, asked.clone(), limits).await.expect("ahead again");
    assert!(again.docs.is_empty() && !again.more, "held: nothing ahead any more");
    let first = store.pull_first(reader, melati.clone(), 0, asked.clone(), limits).await.expect("first again");
    let feed = store.pull(reader, melati.clone(), 0, limits).await.expect("feed page");
    let ids = |page: &PullPage| page.docs.iter().map(|d| d.doc).collect::<Vec<_>>();
    assert!(!feed.docs.is_empty(), "the feed has older sessions");
    assert_eq!((ids(&first), first.cursor, first.more), (ids(&feed), feed.cursor, feed.more), "then the feed page");
    let (walked, cursor) = pull_to_end(&*store, reader, &melati, 0, limits).await;
    assert_eq!(walked.len(), 4, "the walk sends the older sessions, not today's again");
    assert!(walked.iter().all(|d| d.doc != doc_id(&today)));
    assert_eq!(cursor, 6);
    let after = store.pull_ahead(reader, melati, cursor, asked, limits).await.expect("past it");
    assert!(after.docs.is_empty(), "a cursor past the document holds it");
}

// ------------------------------------------------------------------------------------------
// 3. Per-device heads
// ------------------------------------------------------------------------------------------

/// A phone keeping a window dropped an old session (its cursor is past it, and it was
/// acknowledged to it): once it says so, a later change comes as the whole document, which
/// loads on an empty one, never as changes after what it no longer holds.
async fn a_document_a_device_dropped_is_sent_whole_when_it_changes(backend: Backend) {
    let store = backend.open().await;
    let s = scope(&["melati"]);
    let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
    let am_a = session("melati", day(0), a, &[visit(a, "Sri Wahyuni", 9000)]);
    let id = doc_id(&am_a);
    store.push(a, s.clone(), vec![push_of(&am_a, &Heads::empty())], NOW).await.expect("push by a");
    let cursor_a = store.pull(a, s.clone(), 0, ALL).await.expect("pull a").cursor;
    store.forget_dropped(a, vec![id, DocId::new_random()], NOW + 5).await.expect("a dropped it (and one never stored)");

    let page_b = store.pull(b, s.clone(), 0, ALL).await.expect("pull b");
    let mut am_b = load(&page_b.docs[0].changes);
    am_b.set_actor(b.actor());
    let before = heads(&am_b);
    let v = doc::visits(&am_b).expect("visits")[0].visit_id;
    set_weight(&mut am_b, v, 9100, NOW + 10);
    store.push(b, s.clone(), vec![push_of(&am_b, &before)], NOW + 10).await.expect("push by b");

    let page = store.pull(a, s.clone(), cursor_a, ALL).await.expect("pull a");
    assert_eq!(page.docs.len(), 1);
    let whole = load(&page.docs[0].changes);
    assert_eq!(heads(&whole), heads(&am_b), "the whole document, loaded on nothing");
    assert_eq!(doc::visits(&whole).expect("visits")[0].weight_g, Some(9100));
}

async fn a_device_is_sent_only_the_changes_it_lacks(backend: Backend) {
    let store = backend.open().await;
    let s = scope(&["melati"]);
    let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
    let mut am_a = session("melati", day(0), a, &[visit(a, "Sri Wahyuni", 9000)]);
    store.push(a, s.clone(), vec![push_of(&am_a, &Heads::empty())], NOW).await.expect("push by a");

    // The device that pushed it already has it; its cursor still moves past it.
    let page_a = store.pull(a, s.clone(), 0, ALL).await.expect("pull a");
    assert!(page_a.docs.is_empty(), "a is not sent back its own document");
    assert_eq!(page_a.cursor, 1);

    // Another device gets all of it.
    let page_b = store.pull(b, s.clone(), 0, ALL).await.expect("pull b");
    assert_eq!(page_b.docs.len(), 1);
    let mut am_b = load(&page_b.docs[0].changes);
    am_b.set_actor(b.actor());
    assert_eq!(heads(&am_b), heads(&am_a));
    assert_eq!(pulled_heads(&page_b.docs[0]), heads(&am_a));

    // b edits and pushes; b is not sent its own edit back.
    let before = heads(&am_b);
    let v = doc::visits(&am_b).expect("visits")[0].visit_id;
    set_weight(&mut am_b, v, 9100, NOW + 10);
    store.push(b, s.clone(), vec![push_of(&am_b, &before)], NOW + 10).await.expect("push by b");
    let again_b = store.pull(b, s.clone(), page_b.cursor, ALL).await.expect("pull b again");
    assert!(again_b.docs.is_empty(), "b already has its edit");
    assert_eq!(again_b.cursor, 2);

    // a gets only b's change, whether it asks from its cursor or (what it pushed being known
    // per device) from 0.
    let delta = am_b.save_after(before.as_slice());
    for cursor in [page_a.cursor, 0] {
        let page = store.pull(a, s.clone(), cursor, ALL).await.expect("pull a");
        assert_eq!(page.docs.len(), 1, "from cursor {cursor}");
        assert_eq!(page.docs[0].changes, delta, "from cursor {cursor}: just the new change, not the document");
        assert_eq!(pulled_heads(&page.docs[0]), heads(&am_b));
        assert_eq!(page.cursor, 2);
    }
    am_a.load_incremental(&delta).expect("apply delta");
    assert_eq!(heads(&am_a), heads(&am_b), "the delta loads on top of a's document to the merged heads");
    assert_eq!(doc::visits(&am_a).expect("visits")[0].weight_g, Some(9100));
    assert_eq!(store.get(doc_id(&am_a)).await.expect("get").expect("stored").meta.heads, heads(&am_a));

    // a starts over (it dropped the document, say on a move away and back): once its
    // acknowledged heads are forgotten, it is sent the whole document again.
    store.forget_device_heads(a, Vec::new()).await.expect("forget");
    let page = store.pull(a, s.clone(), 0, ALL).await.expect("pull a from scratch");
    assert_eq!(page.docs.len(), 1);
    let whole = load(&page.docs[0].changes);
    assert_eq!(heads(&whole), heads(&am_b), "the whole document, not a delta on what a no longer has");
    assert_eq!(stats(&*store).await.device_heads, 1, "only b's acknowledged heads remain");
}

/// A document stored as a snapshot and appended chunks (compacted every `CHUNKS_MAX` merges)
/// loses nothing: two instances take turns merging edits of one document (each other's
/// writes are cache misses, so every other merge loads the snapshot and chunks), every stored
/// form loads to the merged heads, and a device catching up is sent only what it lacks.
async fn a_document_merged_past_its_chunk_limit_keeps_every_change_on_every_instance(backend: Backend) {
    let instances = [backend.open().await, backend.open().await];
    let s = scope(&["melati"]);
    let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
    let mut am = session("melati", day(0), a, &[visit(a, "Sri Wahyuni", 9000)]);
    let v = doc::visits(&am).expect("visits")[0].visit_id;
    instances[0].push(a, s.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("first push");
    let mut b_doc: Option<Automerge> = None;
    let mut b_cursor = 0;
    let merges = 2 * posync_store::core::CHUNKS_MAX as i64 + 20;
    for i in 1..=merges {
        let before = heads(&am);
        set_weight(&mut am, v, 9000 + i, NOW + i);
        let store = &instances[(i % 2) as usize];
        store.push(a, s.clone(), vec![push_of(&am, &before)], NOW + i).await.expect("push an edit");
        let other = &instances[((i + 1) % 2) as usize];
        let stored = other.get(doc_id(&am)).await.expect("get").expect("stored");
        assert_eq!(stored.meta.heads, heads(&am), "merge {i}: stored heads");
        assert_eq!(heads(&load(&stored.bytes)), heads(&am), "merge {i}: the stored form loads whole");
        if i % 7 == 0 {
            // b catches up: the whole document first, then only what it lacks.
            let page = other.pull(b, s.clone(), b_cursor, ALL).await.expect("pull b");
            assert_eq!(page.docs.len(), 1, "merge {i}");
            let changes = &page.docs[0].changes;
            match &mut b_doc {
                None => b_doc = Some(load(changes)),
                Some(held) => {
                    let lacking = am.save_after(&held.get_heads());
                    assert!(
                        changes.len() <= lacking.len() + 64,
                        "merge {i}: sent {} bytes for {} bytes of changes it lacks",
                        changes.len(),
                        lacking.len()
                    );
                    held.load_incremental(changes).expect("apply the delta");
                }
            }
            let held = b_doc.as_ref().expect("b holds it");
            assert_eq!(heads(held), heads(&am), "merge {i}: b holds every change");
            assert_eq!(doc::visits(held).expect("visits")[0].weight_g, Some(9000 + i));
            b_cursor = page.cursor;
        }
    }
    let fresh = instances[0].pull(DeviceId::new_random(), s.clone(), 0, ALL).await.expect("pull fresh");
    assert_eq!(heads(&load(&fresh.docs[0].changes)), heads(&am), "a new device gets the whole document");
    assert_eq!(stats(&*instances[1]).await.feed_entries, merges as u64 + 1, "one feed entry per merge");
}

// ------------------------------------------------------------------------------------------
// 4. The relational projection
// ------------------------------------------------------------------------------------------

fn facts_by_person(facts: Vec<VisitFact>) -> BTreeMap<PersonId, VisitFact> {
    let n = facts.len();
    let map: BTreeMap<_, _> = facts.into_iter().map(|f| (f.person_id, f)).collect();
    assert_eq!(map.len(), n, "one fact per visit, no duplicates");
    map
}

fn registered_ids(people: &[RegisteredPerson]) -> BTreeSet<PersonId> {
    let ids: BTreeSet<_> = people.iter().map(|r| r.person_id).collect();
    assert_eq!(ids.len(), people.len(), "each person once");
    ids
}

async fn reports_and_registry_follow_each_documents_latest_version(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let both = scope(&["melati", "mawar"]);
    let melati = scope(&["melati"]);
    let v1 = visit(dev, "Sri Wahyuni", 9000);
    let mut sess = session("melati", day(3), dev, std::slice::from_ref(&v1));
    let (p1, p2) = (person("Ahmad Fauzi", "3279010101240001", dev), person("Budi Santoso", "3279010101240002", dev));
    let mut reg = registry("melati", dev, &[p1.clone(), p2.clone()]);
    let batch = vec![push_of(&sess, &Heads::empty()), push_of(&reg, &Heads::empty())];
    store.push(dev, both.clone(), batch, NOW).await.expect("push");

    let facts = facts_by_person(store.report_facts(both.clone(), day(0), day(30)).await.expect("facts"));
    assert_eq!(facts.len(), 1);
    let f = &facts[&v1.person_id];
    assert_eq!((&f.posyandu, f.session_date, f.name.as_str()), (&p("melati"), day(3), "Sri Wahyuni"));
    assert_eq!((f.sex, f.birth_date, f.group), (Sex::Female, v1.birth_date, LifeGroup::Balita));
    assert_eq!((f.weight_g, f.length_mm, f.lying), (Some(9000), Some(800), Some(true)));
    assert!(f.immunisations.is_empty());
    let people = store.registered_people(both.clone()).await.expect("people");
    assert_eq!(registered_ids(&people), BTreeSet::from([p1.person_id, p2.person_id]));
    let r1 = people.iter().find(|r| r.person_id == p1.person_id).expect("p1");
    assert_eq!((&r1.posyandu, r1.birth_date, r1.kia_book), (&p("melati"), p1.birth_date, true));

    // Edits replace the projected rows; they never add a second copy.
    let before = heads(&sess);
    set_weight(&mut sess, v1.visit_id, 9100, NOW + 1);
    doc::give_immunisation(&mut sess, v1.visit_id, "campak", day(3), NOW + 1).expect("immunise");
    let v2 = visit(dev, "Dewi Lestari", 7000);
    doc::record_visit(&mut sess, &v2, NOW + 1).expect("second visit");
    let p3 = person("Rina Marlina", "3279010101240003", dev);
    let reg_before = heads(&reg);
    doc::register_person(&mut reg, &p3, NOW + 1).expect("register");
    let batch = vec![push_of(&sess, &before), push_of(&reg, &reg_before)];
    store.push(dev, both.clone(), batch, NOW + 1).await.expect("push edits");

    let facts = facts_by_person(store.report_facts(both.clone(), day(0), day(30)).await.expect("facts"));
    assert_eq!(facts.keys().copied().collect::<BTreeSet<_>>(), BTreeSet::from([v1.person_id, v2.person_id]));
    assert_eq!(facts[&v1.person_id].weight_g, Some(9100));
    assert_eq!(facts[&v1.person_id].immunisations, vec!["campak".to_owned()]);
    assert_eq!(facts[&v2.person_id].weight_g, Some(7000));
    let people = store.registered_people(both.clone()).await.expect("people");
    assert_eq!(registered_ids(&people), BTreeSet::from([p1.person_id, p2.person_id, p3.person_id]));
    assert_eq!(stats(&*store).await.visits, 2);
    assert_eq!(stats(&*store).await.people, 3);

    // Date range and scope bound what a report sees.
    let v3 = visit(dev, "Ani Rahayu", 8000);
    let other = session("mawar", day(40), dev, std::slice::from_ref(&v3));
    store.push(dev, both.clone(), vec![push_of(&other, &Heads::empty())], NOW + 2).await.expect("push mawar");
    assert_eq!(store.report_facts(both.clone(), day(0), day(30)).await.expect("facts").len(), 2);
    assert_eq!(store.report_facts(both.clone(), day(3), day(3)).await.expect("facts").len(), 2, "inclusive range");
    assert!(store.report_facts(both.clone(), day(4), day(39)).await.expect("facts").is_empty());
    assert_eq!(store.report_facts(melati.clone(), day(0), day(100)).await.expect("facts").len(), 2);
    let mawar_facts = store.report_facts(scope(&["mawar"]), day(0), day(100)).await.expect("facts");
    assert_eq!(mawar_facts.iter().map(|f| f.person_id).collect::<Vec<_>>(), vec![v3.person_id]);
    assert!(store.registered_people(scope(&["mawar"])).await.expect("people").is_empty());

    // One person's visits and the name search read the same projection, within the scope.
    let own = store.person_facts(both.clone(), v1.person_id).await.expect("person facts");
    let own: Vec<_> = own.iter().map(|v| (v.fact.person_id, v.fact.weight_g, v.invalid)).collect();
    assert_eq!(own, vec![(v1.person_id, Some(9100), false)]);
    assert!(store.person_facts(scope(&["mawar"]), v1.person_id).await.expect("facts").is_empty(), "out of scope");
    let seen = store.people_seen(both.clone(), Some("LESTARI".into()), 50).await.expect("search");
    assert_eq!(seen.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), vec!["Dewi Lestari"]);
    assert_eq!(seen[0].last_visit, posync_model::record::format_date(day(3)));
    assert_eq!(store.people_seen(both.clone(), None, 50).await.expect("all").len(), 3);
    assert_eq!(store.people_seen(both.clone(), None, 2).await.expect("bounded").len(), 2);
    assert_eq!(
        store
            .people_seen(melati.clone(), Some("%".into()), 50)
            .await
            .expect("a typed % is dropped, like an empty search")
            .len(),
        2
    );
    assert!(store.people_seen(scope(&["mawar"]), Some("lestari".into()), 50).await.expect("scope").is_empty());
}

// ------------------------------------------------------------------------------------------
// 5. The conflict index
// ------------------------------------------------------------------------------------------

async fn concurrent_edits_of_one_field_open_one_conflict_until_resolved(backend: Backend) {
    let store = backend.open().await;
    let s = scope(&["melati"]);
    let (a, b, c) = (DeviceId::new_random(), DeviceId::new_random(), DeviceId::new_random());
    let v = visit(a, "Sri Wahyuni", 9000);
    let base = session("melati", day(0), a, std::slice::from_ref(&v));
    let id = doc_id(&base);
    store.push(a, s.clone(), vec![push_of(&base, &Heads::empty())], NOW).await.expect("push base");
    let base_heads = heads(&base);

    // Two kader weigh the same child offline: 9.1 kg and 9.2 kg.
    let (mut am_a, mut am_b) = (replica(&base, a), replica(&base, b));
    set_weight(&mut am_a, v.visit_id, 9100, NOW + 1);
    set_weight(&mut am_b, v.visit_id, 9200, NOW + 2);
    store.push(a, s.clone(), vec![push_of(&am_a, &base_heads)], NOW + 1).await.expect("push a");
    assert!(store.conflicts(s.clone(), ConflictFilter::default()).await.expect("conflicts").is_empty());
    store.push(b, s.clone(), vec![push_of(&am_b, &base_heads)], NOW + 2).await.expect("push b");

    let open = store.conflicts(s.clone(), ConflictFilter::default()).await.expect("conflicts");
    assert_eq!(open.len(), 1, "{open:?}");
    let conflict = open[0].clone();
    assert_eq!((conflict.doc, &conflict.posyandu), (id, &p("melati")));
    assert_eq!((conflict.collection.as_str(), conflict.field.as_str()), ("visits", "weight_g"));
    assert_eq!(conflict.record_id, v.visit_id.to_string());
    assert_eq!(conflict.policy, posync_model::Policy::Review);
    assert_eq!(conflict.opened_at, NOW + 2);
    let values: BTreeSet<(String, Option<DeviceId>)> =
        conflict.values.iter().map(|cv| (format!("{:?}", cv.value), cv.device)).collect();
    let expected = BTreeSet::from([
        (format!("{:?}", FieldValue::Int(9100)), Some(a)),
        (format!("{:?}", FieldValue::Int(9200)), Some(b)),
    ]);
    assert_eq!(values, expected, "both values, each with its device");
    assert_eq!(conflict.values.iter().filter(|cv| cv.winner).count(), 1, "one winner shown");
    assert_eq!(store.conflict(conflict.id.clone()).await.expect("conflict"), Some(conflict.clone()));

    // Filters.
    let by = |f: ConflictFilter| {
        let store = store.clone();
        let s = s.clone();
        async move { store.conflicts(s, f).await.expect("conflicts").len() }
    };
    assert_eq!(by(ConflictFilter { field: Some("weight_g".into()), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { field: Some("length_mm".into()), ..Default::default() }).await, 0);
    assert_eq!(by(ConflictFilter { posyandu: Some(p("melati")), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { posyandu: Some(p("mawar")), ..Default::default() }).await, 0);
    assert_eq!(by(ConflictFilter { policy: Some(posync_model::Policy::Auto), ..Default::default() }).await, 0);
    // The child's name and birth date come with the conflict; paging and the web app's filters.
    assert_eq!(conflict.subject_name.as_deref(), Some(v.name.as_str()));
    assert_eq!(conflict.subject_birth_date, Some(posync_model::record::format_date(v.birth_date)));
    let born = v.birth_date;
    assert_eq!(by(ConflictFilter { born_from: Some(born), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { born_from: Some(born + time::Duration::days(1)), ..Default::default() }).await, 0);
    assert_eq!(by(ConflictFilter { born_before: Some(born), ..Default::default() }).await, 0);
    assert_eq!(by(ConflictFilter { born_before: Some(born + time::Duration::days(1)), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { opened_before: Some(NOW + 1), ..Default::default() }).await, 0);
    assert_eq!(by(ConflictFilter { opened_before: Some(NOW + 2), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { limit: Some(1), ..Default::default() }).await, 1);
    assert_eq!(by(ConflictFilter { offset: 1, ..Default::default() }).await, 0);
    assert!(store.conflicts(scope(&["mawar"]), ConflictFilter::default()).await.expect("conflicts").is_empty());

    // The resolution is a server change: a new feed entry, the conflict gone.
    let resolved = store
        .resolve_conflict(
            conflict.id.clone(),
            FieldValue::Int(9150),
            INSTANCE.into(),
            audit(NOW + 3, AuditAction::ConflictResolved, &conflict.id),
        )
        .await
        .expect("resolve");
    assert_eq!(resolved.doc, id);
    assert_eq!(resolved.seq, 4, "base, a, b, resolution");
    assert_eq!(stats(&*store).await.feed_entries, 4);
    let stored = store.get(id).await.expect("get").expect("stored");
    assert_eq!(stored.meta.seq, 4);
    assert!(store.conflicts(s.clone(), ConflictFilter::default()).await.expect("conflicts").is_empty());
    assert_eq!(store.conflict(conflict.id.clone()).await.expect("conflict"), None);
    let facts = store.report_facts(s.clone(), day(0), day(0)).await.expect("facts");
    assert_eq!(facts.iter().map(|f| f.weight_g).collect::<Vec<_>>(), vec![Some(9150)]);

    // A third device sees the decision and no conflict.
    let (docs, _) = pull_to_end(&*store, c, &s, 0, ALL).await;
    assert_eq!(docs.len(), 1);
    let am_c = load(&docs[0].changes);
    assert_eq!(heads(&am_c), stored.meta.heads);
    assert_eq!(doc::visits(&am_c).expect("visits")[0].weight_g, Some(9150));
    assert!(posync_model::conflicts(&am_c).expect("conflicts").is_empty());
    // So does a, from its cursor: b's value and the decision arrive as a delta.
    let page = store.pull(a, s.clone(), 2, ALL).await.expect("pull a");
    assert_eq!(page.docs.len(), 1);
    am_a.load_incremental(&page.docs[0].changes).expect("apply");
    assert_eq!(heads(&am_a), stored.meta.heads);
    assert_eq!(doc::visits(&am_a).expect("visits")[0].weight_g, Some(9150));

    assert_err!(
        store
            .resolve_conflict(
                conflict.id.clone(),
                FieldValue::Int(9300),
                INSTANCE.into(),
                audit(NOW + 4, AuditAction::ConflictResolved, &conflict.id)
            )
            .await,
        StoreError::NotFound(_)
    );
    assert_eq!(stats(&*store).await.feed_entries, 4, "a refused resolution writes nothing");
    let log = store.audit_log(0, 100).await.expect("audit");
    assert_eq!(log.iter().filter(|e| e.action == "conflict_resolved").count(), 1, "audited once, with the change");
}

// ------------------------------------------------------------------------------------------
// 6. The audit log
// ------------------------------------------------------------------------------------------

async fn the_audit_log_is_gap_free_in_order_and_pages_with_after(backend: Backend) {
    let store = backend.open().await;
    let mut ours = Vec::new();
    for n in 0..3 {
        let e = AuditEntry::new(
            NOW + n,
            &Actor::User { user: user_id("bidan-0001"), device: DeviceId::new_random() },
            AuditAction::RecordRead,
            format!("visit-{n}"),
            serde_json::json!({ "n": n, "ids": ["a", "b"] }),
        );
        store.append_audit(e.clone()).await.expect("append");
        ours.push(e);
    }
    store
        .import_hierarchy(fixture(), audit(NOW + 10, AuditAction::HierarchyImported, "fixture"))
        .await
        .expect("import");
    let device = enrol(&*store, "kader-0001", 1, 2).await;
    store.revoke_device(device, audit(NOW + 20, AuditAction::DeviceRevoked, device)).await.expect("revoke");
    let last = audit(NOW + 30, AuditAction::ReportRead, "skdn/2026-01");
    store.append_audit(last.clone()).await.expect("append");

    let log = store.audit_log(0, 100).await.expect("audit log");
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), (1..=8).collect::<Vec<u64>>(), "gap-free from 1");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions,
        vec![
            "record_read",
            "record_read",
            "record_read",
            "hierarchy_imported",
            "enrolment_issued",
            "device_enrolled",
            "device_revoked",
            "report_read"
        ]
    );
    for (record, entry) in log.iter().zip(&ours).chain([(&log[7], &last)]) {
        assert_eq!(
            (record.at, &record.actor, &record.target, &record.detail),
            (entry.at, &entry.actor, &entry.target, &entry.detail),
            "seq {} reads back as appended",
            record.seq
        );
    }
    assert_eq!(log[5].target, device.to_string(), "the enrolment names its device");
    assert_eq!(log[6].target, device.to_string());

    // Paging with `after`.
    for limit in [1, 3, 5] {
        let mut after = 0;
        let mut paged = Vec::new();
        loop {
            let page = store.audit_log(after, limit).await.expect("audit page");
            assert!(page.len() <= limit);
            let Some(last) = page.last() else { break };
            after = last.seq;
            paged.extend(page);
        }
        assert_eq!(paged, log, "limit {limit}: pages add up to the whole log");
    }
    assert_eq!(store.audit_log(5, 2).await.expect("audit").iter().map(|e| e.seq).collect::<Vec<_>>(), vec![6, 7]);
    assert!(store.audit_log(8, 10).await.expect("audit").is_empty());

    // An audited write that fails leaves no entry.
    let stranger = DeviceId::new_random();
    assert_err!(
        store.revoke_device(stranger, audit(NOW + 40, AuditAction::DeviceRevoked, stranger)).await,
        StoreError::NotFound(_)
    );
    assert!(store.audit_log(8, 10).await.expect("audit").is_empty(), "no entry for a refused revocation");
}

// ------------------------------------------------------------------------------------------
// 7. Access
// ------------------------------------------------------------------------------------------

fn sorted_units(mut units: Vec<posync_model::Unit>) -> Vec<posync_model::Unit> {
    units.sort_by(|a, b| a.id.cmp(&b.id));
    units
}

async fn an_imported_hierarchy_reads_back_as_its_units_and_users(backend: Backend) {
    let store = backend.open().await;
    let file = fixture();
    assert!(store.unit_tree().await.expect("tree").units.is_empty());
    assert!(store.users().await.expect("users").is_empty());
    let report = store.import_hierarchy(file.clone(), audit(NOW, AuditAction::HierarchyImported, "f")).await;
    assert_eq!(report.expect("import"), posync_store::ImportReport { units: 58, users: 308 });

    let tree = store.unit_tree().await.expect("tree");
    assert_eq!(sorted_units(tree.units.clone()), sorted_units(file.units.clone()));
    let chain: Vec<&str> =
        tree.ancestors(&unit("pos-hegarsari-melati-1")).iter().map(|u| u.id.as_str()).collect::<Vec<_>>();
    assert_eq!(
        chain,
        vec!["pos-hegarsari-melati-1", "kel-hegarsari", "pkm-banjar-1", "kec-banjar", "kota-banjar", "jawa-barat"]
    );
    assert_eq!(tree.district_of(&unit("pkm-purwaharja-1")), Some(&unit("kota-banjar")));

    let expected: Vec<UserRecord> = {
        let mut v: Vec<UserRecord> = file
            .users
            .iter()
            .map(|u| {
                let mut units = u.units.clone();
                units.sort();
                UserRecord { id: u.id.clone(), name: u.name.clone(), role: u.role, units, disabled: false }
            })
            .collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    };
    let mut users = store.users().await.expect("users");
    users.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(users, expected);
    let bidan = store.user(user_id("bidan-0001")).await.expect("user").expect("bidan-0001");
    assert_eq!(bidan.role, Role::PuskesmasOfficer);
    assert_eq!(bidan.units, vec![unit("pkm-banjar-1")]);
    assert_eq!(bidan.name, "Bd. Siti Rahmawati, A.Md.Keb");
    assert!(store.user(user_id("nobody")).await.expect("user").is_none());

    // Importing again updates in place.
    let mut again = file.clone();
    again.units.iter_mut().filter(|u| u.id == unit("kel-hegarsari")).for_each(|u| u.name = "Kel. Hegarsari".into());
    store.import_hierarchy(again, audit(NOW + 1, AuditAction::HierarchyImported, "f")).await.expect("re-import");
    let tree = store.unit_tree().await.expect("tree");
    assert_eq!(tree.units.len(), 58);
    assert_eq!(tree.get(&unit("kel-hegarsari")).map(|u| u.name.as_str()), Some("Kel. Hegarsari"));
    assert_eq!(store.users().await.expect("users").len(), 308);
}

async fn an_enrolled_device_gets_its_users_scope_until_revoked(backend: Backend) {
    let store = backend.open().await;
    let file = fixture();
    store.import_hierarchy(file.clone(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");

    let code = [7u8; 32];
    let enrolment = NewEnrolment { code_hash: code, user: user_id("bidan-0001"), expires_at: NOW + 3600 };
    store.issue_enrolment(enrolment, audit(NOW, AuditAction::EnrolmentIssued, "bidan-0001")).await.expect("issue");
    let device = DeviceId::new_random();
    let user = store.redeem_enrolment(code, credential(device, 1), NOW + 10).await.expect("redeem");
    assert_eq!(user.id, user_id("bidan-0001"));
    assert_eq!(user.role, Role::PuskesmasOfficer);

    let access = store.device_access(device).await.expect("access").expect("enrolled");
    assert_eq!(access.device, device);
    assert_eq!(access.user, user);
    assert!(!access.revoked);
    let expected = posyandu_under(&file, "pkm-banjar-1");
    assert_eq!(expected.posyandu().count(), 27, "the fixture's Puskesmas Banjar 1");
    assert_eq!(access.scope, expected, "every posyandu under the user's puskesmas");

    // A code works once, only before it expires, and only if it exists.
    let second = DeviceId::new_random();
    assert_err!(store.redeem_enrolment(code, credential(second, 3), NOW + 11).await, StoreError::InvalidCredential);
    assert!(store.device_access(second).await.expect("access").is_none(), "the refused device is not enrolled");
    assert_err!(store.redeem_enrolment([9; 32], credential(second, 3), NOW + 11).await, StoreError::InvalidCredential);
    let short = NewEnrolment { code_hash: [8; 32], user: user_id("kader-0001"), expires_at: NOW + 5 };
    store.issue_enrolment(short, audit(NOW, AuditAction::EnrolmentIssued, "kader-0001")).await.expect("issue");
    assert_err!(store.redeem_enrolment([8; 32], credential(second, 3), NOW + 11).await, StoreError::InvalidCredential);

    // Refresh: the right hash slides the expiry; a wrong one or an unknown device is refused.
    let refreshed = store.refresh_device(device, [1; 32], NOW + 60 * 86_400, NOW + 20).await.expect("refresh");
    assert_eq!(refreshed, user);
    assert_err!(
        store.refresh_device(device, [2; 32], NOW + 60 * 86_400, NOW + 21).await,
        StoreError::InvalidCredential
    );
    assert_err!(
        store.refresh_device(second, [3; 32], NOW + 60 * 86_400, NOW + 21).await,
        StoreError::InvalidCredential
    );
    // Past the slid expiry, not before.
    assert_err!(
        store.refresh_device(device, [1; 32], NOW + 90 * 86_400, NOW + 61 * 86_400).await,
        StoreError::InvalidCredential
    );

    // Revocation.
    store.revoke_device(device, audit(NOW + 30, AuditAction::DeviceRevoked, device)).await.expect("revoke");
    assert_err!(store.refresh_device(device, [1; 32], NOW + 60 * 86_400, NOW + 31).await, StoreError::DeviceRevoked);
    let access = store.device_access(device).await.expect("access").expect("still known");
    assert!(access.revoked);
    assert_eq!(access.user.id, user_id("bidan-0001"));
    let record = store.devices().await.expect("devices").into_iter().find(|d| d.device == device).expect("listed");
    assert_eq!(record.user, Some(user_id("bidan-0001")));
    assert_eq!(record.label, format!("HP {device}"));
    assert_eq!(record.enrolled_at, Some(NOW + 10));
    assert_eq!(record.revoked_at, Some(NOW + 30));

    // Other roles' scopes.
    let kader = enrol(&*store, "kader-0001", 11, 12).await;
    let kader_scope = store.device_access(kader).await.expect("access").expect("enrolled").scope;
    assert_eq!(kader_scope, scope(&["pos-hegarsari-melati-1"]));
    let admin = enrol(&*store, "dinkes-admin-01", 13, 14).await;
    let admin_scope = store.device_access(admin).await.expect("access").expect("enrolled").scope;
    assert_eq!(admin_scope.posyandu().count(), 40, "the whole district");
    assert_eq!(admin_scope, posyandu_under(&file, "kota-banjar"));
    assert!(store.device_access(DeviceId::new_random()).await.expect("access").is_none());
}

async fn a_device_id_belongs_to_its_first_user_and_a_revoked_device_stays_revoked(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    let issue = |code: u8, user: &'static str| {
        let store = store.clone();
        async move {
            let e = NewEnrolment { code_hash: [code; 32], user: user_id(user), expires_at: NOW + 3600 };
            store.issue_enrolment(e, audit(NOW, AuditAction::EnrolmentIssued, user)).await.expect("issue");
        }
    };
    // The owner enrols; a colleague who saw the device id in a conflict list tries it with a
    // fresh code of her own.
    issue(31, "kader-0001").await;
    issue(32, "kader-0002").await;
    let device = DeviceId::new_random();
    store.redeem_enrolment([31; 32], credential(device, 1), NOW + 1).await.expect("the owner enrols");
    assert_err!(store.redeem_enrolment([32; 32], credential(device, 2), NOW + 2).await, StoreError::DeviceTaken);
    let access = store.device_access(device).await.expect("access").expect("enrolled");
    assert_eq!(access.user.id, user_id("kader-0001"), "still the owner's");
    store.refresh_device(device, [1; 32], NOW + 86_400, NOW + 3).await.expect("the owner's credential still works");
    // The refused code was not spent: on a device of her own it works.
    let own = DeviceId::new_random();
    store.redeem_enrolment([32; 32], credential(own, 3), NOW + 4).await.expect("her own device enrols");

    // The owner re-enrolling her own device gets a new credential; the old one stops working.
    issue(33, "kader-0001").await;
    store.redeem_enrolment([33; 32], credential(device, 4), NOW + 5).await.expect("re-enrol");
    assert_err!(store.refresh_device(device, [1; 32], NOW + 86_400, NOW + 6).await, StoreError::InvalidCredential);
    store.refresh_device(device, [4; 32], NOW + 86_400, NOW + 6).await.expect("the new credential works");

    // A revoked device stays revoked: a new code (even the owner's) does not bring it back.
    store.revoke_device(device, audit(NOW + 7, AuditAction::DeviceRevoked, device)).await.expect("revoke");
    issue(34, "kader-0001").await;
    assert_err!(store.redeem_enrolment([34; 32], credential(device, 5), NOW + 8).await, StoreError::DeviceRevoked);
    assert!(store.device_access(device).await.expect("access").expect("known").revoked);
    assert_err!(store.refresh_device(device, [5; 32], NOW + 86_400, NOW + 9).await, StoreError::InvalidCredential);
}

// ------------------------------------------------------------------------------------------
// 8. Duplicate people
// ------------------------------------------------------------------------------------------

async fn people_registered_twice_are_listed_until_merged(backend: Backend) {
    let store = backend.open().await;
    let dev = DeviceId::new_random();
    let all = scope(&["melati", "mawar", "anggrek"]);
    let both = scope(&["melati", "mawar"]);
    let nik = "3279010101240001";
    let p1 = person("Ahmad Fauzi", nik, dev);
    let p2 = person("Ahmad Fauzy", nik, dev);
    let p3 = person("Rina Marlina", "3279010101240003", dev);
    let p4 = person("Achmad Fauzi", nik, dev);
    let reg_melati = registry("melati", dev, &[p1.clone(), p3.clone()]);
    let reg_mawar = registry("mawar", dev, std::slice::from_ref(&p2));
    let reg_anggrek = registry("anggrek", dev, std::slice::from_ref(&p4));
    // p2 came to a posyandu day in mawar.
    let mut v2 = visit(dev, "Ahmad Fauzy", 10_000);
    v2.person_id = p2.person_id;
    let sess = session("mawar", day(0), dev, &[v2]);
    let batch = [&reg_melati, &reg_mawar, &reg_anggrek, &sess].map(|am| push_of(am, &Heads::empty())).to_vec();
    store.push(dev, all.clone(), batch, NOW).await.expect("push");

    let pairs = store.duplicate_people(both.clone()).await.expect("duplicates");
    assert_eq!(pairs.len(), 1, "only the pair inside the scope: {pairs:?}");
    let pair = &pairs[0];
    assert_eq!(pair.reason, "nik");
    let ids = BTreeSet::from([pair.a.person_id, pair.b.person_id]);
    assert_eq!(ids, BTreeSet::from([p1.person_id, p2.person_id]));
    let side = if pair.a.person_id == p2.person_id { &pair.a } else { &pair.b };
    assert_eq!(
        (&side.posyandu, side.name.as_str(), side.birth_date.as_str()),
        (&p("mawar"), "Ahmad Fauzy", "2024-03-10")
    );
    assert_eq!(store.duplicate_people(all.clone()).await.expect("duplicates").len(), 3, "p1, p2, p4 pairwise");

    let before = stats(&*store).await;
    let merged = store
        .merge_people(
            both.clone(),
            p2.person_id,
            p1.person_id,
            INSTANCE.into(),
            audit(NOW + 1, AuditAction::PeopleMerged, p2.person_id),
        )
        .await
        .expect("merge");
    assert_eq!(merged.doc, doc_id(&reg_mawar), "the duplicate's registry changes");
    assert_eq!(merged.seq, before.feed_entries + 1, "as one new feed entry");
    assert_eq!(stats(&*store).await.feed_entries, merged.seq);

    assert!(store.duplicate_people(both.clone()).await.expect("duplicates").is_empty(), "no longer listed");
    let remaining = store.duplicate_people(all.clone()).await.expect("duplicates");
    assert_eq!(remaining.len(), 1);
    assert_eq!(
        BTreeSet::from([remaining[0].a.person_id, remaining[0].b.person_id]),
        BTreeSet::from([p1.person_id, p4.person_id])
    );
    let registered = store.registered_people(both.clone()).await.expect("people");
    assert_eq!(
        registered_ids(&registered),
        BTreeSet::from([p1.person_id, p3.person_id]),
        "the merged one is not counted"
    );
    let stored = store.get(doc_id(&reg_mawar)).await.expect("get").expect("stored");
    let people = doc::people(&load(&stored.bytes)).expect("people");
    assert_eq!(people.iter().find(|x| x.person_id == p2.person_id).and_then(|x| x.merged_into), Some(p1.person_id));
    let facts = store.report_facts(both.clone(), day(0), day(0)).await.expect("facts");
    assert_eq!(facts.iter().map(|f| f.person_id).collect::<Vec<_>>(), vec![p1.person_id], "p2's visit counts as p1's");

    // Merging again, or with someone outside the scope, is refused and writes nothing.
    let again = store
        .merge_people(
            both.clone(),
            p2.person_id,
            p1.person_id,
            INSTANCE.into(),
            audit(NOW + 2, AuditAction::PeopleMerged, "x"),
        )
        .await;
    assert!(again.is_err(), "already merged: {again:?}");
    let outside = store
        .merge_people(
            both.clone(),
            p4.person_id,
            p1.person_id,
            INSTANCE.into(),
            audit(NOW + 2, AuditAction::PeopleMerged, "x"),
        )
        .await;
    assert!(outside.is_err(), "p4 is outside the scope: {outside:?}");
    assert_eq!(stats(&*store).await.feed_entries, merged.seq);
    let log = store.audit_log(0, 100).await.expect("audit");
    assert_eq!(log.iter().filter(|e| e.action == "people_merged").count(), 1);
}

// ------------------------------------------------------------------------------------------
// 9. Concurrent writers
// ------------------------------------------------------------------------------------------

async fn concurrent_pushes_to_one_document_from_two_instances_lose_no_edit(backend: Backend) {
    const WRITERS: usize = 8;
    const ROUNDS: usize = 3;
    let instances = [backend.open().await, backend.open().await];
    let s = scope(&["melati"]);
    let first = DeviceId::new_random();
    let base = session("melati", day(0), first, &[visit(first, "Sri Wahyuni", 9000)]);
    let id = doc_id(&base);
    instances[0].push(first, s.clone(), vec![push_of(&base, &Heads::empty())], NOW).await.expect("push base");

    // Every writer forks the base, then at once (and again, ROUNDS times) adds its own visit
    // and pushes it, half of them through each instance.
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = instances[w % 2].clone();
        let (s, barrier) = (s.clone(), barrier.clone());
        let device = DeviceId::new_random();
        let mut am = replica(&base, device);
        tasks.push(tokio::spawn(async move {
            let mut acked = heads(&am);
            let mut pushed = Vec::new();
            let mut visits = Vec::new();
            let mut failure = None;
            for r in 0..ROUNDS {
                // Every writer reaches every barrier, failed push or not: no one waits forever.
                barrier.wait().await;
                if failure.is_some() {
                    continue;
                }
                let v = visit(device, &format!("Anak {w}-{r}"), 8000 + (w * 10 + r) as i64);
                doc::record_visit(&mut am, &v, NOW + 1).expect("record");
                visits.push(v.visit_id);
                match store.push(device, s.clone(), vec![push_of(&am, &acked)], NOW + 1).await {
                    Ok(acks) if acks == vec![ack_of(&am)] => {
                        acked = heads(&am);
                        pushed.push(acked.clone());
                    }
                    other => failure = Some(format!("writer {w} round {r}: {other:?}")),
                }
            }
            match failure {
                None => Ok((pushed, visits)),
                Some(e) => Err(e),
            }
        }));
    }
    let mut all_pushed = Vec::new();
    let mut all_visits = BTreeSet::from([doc::visits(&base).expect("visits")[0].visit_id]);
    let mut last_heads = Heads::empty();
    let mut failures = Vec::new();
    for task in tasks {
        match task.await.expect("writer task") {
            Ok((pushed, visits)) => {
                last_heads = last_heads.union(pushed.last().expect("pushed"));
                all_pushed.extend(pushed);
                all_visits.extend(visits);
            }
            Err(e) => failures.push(e),
        }
    }
    assert!(failures.is_empty(), "concurrent pushes failed: {failures:#?}");

    let stored = instances[1].get(id).await.expect("get").expect("stored");
    let merged = load(&stored.bytes);
    assert_eq!(heads(&merged), stored.meta.heads);
    for h in &all_pushed {
        assert!(h.as_slice().iter().all(|c| merged.get_change_by_hash(c).is_some()), "a pushed head was lost");
    }
    assert_eq!(stored.meta.heads, last_heads, "the writers' concurrent branches, all of them");
    let got: BTreeSet<VisitId> = doc::visits(&merged).expect("visits").iter().map(|v| v.visit_id).collect();
    assert_eq!(got, all_visits, "every visit of every writer");
    let n = 1 + (WRITERS * ROUNDS) as u64;
    for store in &instances {
        let st = stats(&**store).await;
        assert_eq!((st.docs, st.visits, st.feed_entries), (1, n, n), "one feed entry per push, projection complete");
    }
    assert_eq!(stored.meta.seq, n, "the document sits at the last of seqs 1..={n}");
    let facts = instances[0].report_facts(s.clone(), day(0), day(0)).await.expect("facts");
    assert_eq!(facts.len() as u64, n, "the projection reflects the final merge");

    // A fresh device gets the same document.
    let (docs, cursor) = pull_to_end(&*instances[1], DeviceId::new_random(), &s, 0, ALL).await;
    assert_eq!(cursor, n);
    assert_eq!(docs.len(), 1);
    let fresh = load(&docs[0].changes);
    assert_eq!(heads(&fresh), stored.meta.heads);
    assert_eq!(doc::to_json(&fresh), doc::to_json(&merged));
}

async fn a_device_pulling_during_a_write_storm_misses_no_change(backend: Backend) {
    const WRITERS: usize = 4;
    const ROUNDS: usize = 10;
    const DAYS: i64 = 4;
    let instances = [backend.open().await, backend.open().await];
    let s = scope(&["melati", "mawar"]);
    let docs: Vec<(&str, time::Date)> =
        ["melati", "mawar"].into_iter().flat_map(|pos| (0..DAYS).map(move |d| (pos, day(d)))).collect();
    let n_docs = docs.len();

    // Writers create the documents concurrently (genesis is the same everywhere) and keep
    // adding visits, two documents per push, each through one instance.
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let store = instances[w % 2].clone();
        let (s, docs, barrier) = (s.clone(), docs.clone(), barrier.clone());
        writers.push(tokio::spawn(async move {
            let device = DeviceId::new_random();
            let mut replicas: HashMap<usize, (Automerge, Heads)> = HashMap::new();
            let mut written: BTreeMap<DocId, usize> = BTreeMap::new();
            barrier.wait().await;
            for r in 0..ROUNDS {
                let k1 = (w * 3 + r) % n_docs;
                let mut batch = Vec::new();
                for k in [k1, (k1 + 1) % n_docs] {
                    let (pos, date) = docs[k];
                    let (am, acked) =
                        replicas.entry(k).or_insert_with(|| (session(pos, date, device, &[]), Heads::empty()));
                    doc::record_visit(am, &visit(device, &format!("Anak {w}-{r}"), 8000), NOW).expect("record");
                    batch.push(push_of(am, acked));
                    *written.entry(doc_id(am)).or_default() += 1;
                }
                store.push(device, s.clone(), batch, NOW + r as i64).await.expect("push");
                for k in [k1, (k1 + 1) % n_docs] {
                    let (am, acked) = replicas.get_mut(&k).expect("replica");
                    *acked = heads(am);
                }
            }
            written
        }));
    }

    // Meanwhile two devices pull, alternating instances, applying what they get: one takes
    // whole pages, one pages three documents at a time.
    let done = Arc::new(AtomicBool::new(false));
    let readers = [ALL, PageLimits { bytes_max: 1 << 20, docs_max: 3, pieces: false }]
        .map(|limits| tokio::spawn(read_through_storm(instances.clone(), s.clone(), limits, done.clone())));

    let mut written: BTreeMap<DocId, usize> = BTreeMap::new();
    for w in writers {
        for (doc, n) in w.await.expect("writer task") {
            *written.entry(doc).or_default() += n;
        }
    }
    done.store(true, Ordering::SeqCst);

    let pushes = (WRITERS * ROUNDS * 2) as u64;
    assert_eq!(stats(&*instances[0]).await.feed_entries, pushes, "every push of a new visit is one feed entry");
    let listed = instances[1].list(s.clone()).await.expect("list");
    assert_eq!(listed.len(), n_docs);
    assert_eq!(listed.last().map(|m| m.seq), Some(pushes), "gap-free: the last seq is the number of entries");
    for m in &listed {
        let stored = instances[0].get(m.doc).await.expect("get").expect("stored");
        let n_visits = doc::visits(&load(&stored.bytes)).expect("visits").len();
        assert_eq!(n_visits, written[&m.doc], "doc {}: every visit written is stored", m.doc);
    }
    assert_eq!(stats(&*instances[0]).await.visits, written.values().sum::<usize>() as u64);

    for reader in readers {
        let (replicas, cursor, pulls) = reader.await.expect("reader task");
        assert!(pulls > 1, "the reader pulled during the storm");
        assert_eq!(cursor, pushes, "the reader's cursor reached the end of the feed");
        assert_eq!(replicas.len(), n_docs, "the reader has every document");
        for m in &listed {
            let got = replicas.get(&m.doc).expect("pulled");
            assert_eq!(heads(got), m.heads, "doc {}: the reader ends at the stored heads", m.doc);
        }
    }
}

/// A device pulling over and over while others write: every page must apply on top of what
/// it got before. Once `done` is set, it pulls on until one pass ends with nothing more.
async fn read_through_storm(
    instances: [Arc<dyn Store>; 2],
    s: Scope,
    limits: PageLimits,
    done: Arc<AtomicBool>,
) -> (HashMap<DocId, Automerge>, u64, usize) {
    let device = DeviceId::new_random();
    let mut replicas: HashMap<DocId, Automerge> = HashMap::new();
    let mut cursor = 0;
    let mut pulls = 0usize;
    let mut drained = false;
    while !drained {
        let finished = done.load(Ordering::SeqCst);
        loop {
            let page = instances[pulls % 2].pull(device, s.clone(), cursor, limits).await.expect("pull");
            pulls += 1;
            assert!(page.cursor >= cursor, "the cursor never goes back: {cursor} -> {}", page.cursor);
            for d in &page.docs {
                let am = replicas.entry(d.doc).or_default();
                apply_pulled(am, d, &format!("reader with docs_max {}, from cursor {cursor}", limits.docs_max));
            }
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        drained = finished;
        tokio::task::yield_now().await;
    }
    (replicas, cursor, pulls)
}

// ------------------------------------------------------------------------------------------
// 10. What devices may push
// ------------------------------------------------------------------------------------------

/// A compressed change chunk whose DEFLATE stream inflates to `n` zero bytes.
fn inflation_bomb(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    let block = vec![0u8; 1 << 20];
    for _ in 0..n / block.len() {
        enc.write_all(&block).expect("deflate");
    }
    let deflated = enc.finish().expect("deflate");
    let mut out = vec![0x85, 0x6f, 0x4a, 0x83, 0, 0, 0, 0, 2];
    let mut len = deflated.len();
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        out.push(if len == 0 { b } else { b | 0x80 });
        if len == 0 {
            break;
        }
    }
    out.extend_from_slice(&deflated);
    out
}

async fn hostile_changes_are_refused_before_anything_is_stored(backend: Backend) {
    let store = backend.open().await;
    let s = scope(&["melati"]);
    let (dev, colleague) = (DeviceId::new_random(), DeviceId::new_random());
    let am = session("melati", day(0), dev, &[visit(dev, "Sri Wahyuni", 9000)]);
    store.push(dev, s.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("push");
    let before = stats(&*store).await;

    let mut bomb = push_of(&am, &heads(&am));
    bomb.changes = inflation_bomb(64 << 20);
    assert_err!(store.push(dev, s.clone(), vec![bomb], NOW + 1).await, StoreError::ChangesTooLarge { .. });

    let mut garbage = push_of(&am, &heads(&am));
    garbage.changes = [&[0x85, 0x6f, 0x4a, 0x83][..], b"garbage after the magic"].concat();
    assert_err!(store.push(dev, s.clone(), vec![garbage], NOW + 2).await, StoreError::MalformedChanges { .. });

    // A value "by" a colleague's device, pushed by this one.
    let mut forged = replica(&am, colleague);
    let v = doc::visits(&forged).expect("visits")[0].visit_id;
    set_weight(&mut forged, v, 9900, NOW + 3);
    assert_err!(
        store.push(dev, s.clone(), vec![push_of(&forged, &heads(&am))], NOW + 3).await,
        StoreError::ForeignAuthor { .. }
    );
    // The same edit by the device itself, under a later incarnation of its replica, is its own.
    let mut own = am.fork();
    own.set_actor(dev.actor_for(3));
    set_weight(&mut own, v, 9900, NOW + 4);
    store.push(dev, s.clone(), vec![push_of(&own, &heads(&am))], NOW + 4).await.expect("own incarnation");
    let after = stats(&*store).await;
    assert_eq!((after.docs, after.visits, after.feed_entries), (before.docs, before.visits, before.feed_entries + 1));
}

async fn record_ids_are_unique_across_documents(backend: Backend) {
    let store = backend.open().await;
    let s = scope(&["melati", "mawar"]);
    let dev = DeviceId::new_random();
    let first = visit(dev, "Sri Wahyuni", 9000);
    let a = session("melati", day(0), dev, std::slice::from_ref(&first));
    store.push(dev, s.clone(), vec![push_of(&a, &Heads::empty())], NOW).await.expect("push a");
    let before = stats(&*store).await;
    // Another session reusing the visit id, alone and beside an innocent document.
    let reused = Visit { name: "Ani".into(), ..first.clone() };
    let b = session("mawar", day(1), dev, std::slice::from_ref(&reused));
    let innocent = session("melati", day(2), dev, &[visit(dev, "Dewi", 8000)]);
    for batch in
        [vec![push_of(&b, &Heads::empty())], vec![push_of(&innocent, &Heads::empty()), push_of(&b, &Heads::empty())]]
    {
        assert_err!(store.push(dev, s.clone(), batch, NOW + 1).await, StoreError::IdCollision { doc, .. } if doc == doc_id(&b));
        assert_eq!(stats(&*store).await, before, "nothing of the batch is stored");
    }
    // Person ids likewise, across registries.
    let p1 = person("Siti", "3279010101900001", dev);
    let reg = registry("melati", dev, std::slice::from_ref(&p1));
    store.push(dev, s.clone(), vec![push_of(&reg, &Heads::empty())], NOW + 2).await.expect("registry");
    let other = registry("mawar", dev, &[Person { name: "Impostor".into(), ..p1 }]);
    assert_err!(
        store.push(dev, s.clone(), vec![push_of(&other, &Heads::empty())], NOW + 3).await,
        StoreError::IdCollision { .. }
    );
    // The documents themselves keep working.
    let mut a2 = replica(&a, dev);
    set_weight(&mut a2, first.visit_id, 9100, NOW + 4);
    store.push(dev, s.clone(), vec![push_of(&a2, &heads(&a))], NOW + 4).await.expect("edit a");
}

async fn records_with_impossible_values_are_kept_marked_and_left_out_of_reports(backend: Backend) {
    use automerge::transaction::Transactable;
    let store = backend.open().await;
    let s = scope(&["melati"]);
    let dev = DeviceId::new_random();
    let good = visit(dev, "Sri Wahyuni", 9000);
    let odd = visit(dev, "Dewi", 8000);
    let mut am = session("melati", day(0), dev, &[good.clone(), odd.clone()]);
    // A modified client writes a negative weight (the app's capture checks would refuse it).
    let visits = match am.get(automerge::ROOT, "visits").expect("get") {
        Some((automerge::Value::Object(automerge::ObjType::Map), id)) => id,
        other => panic!("{other:?}"),
    };
    let v = match am.get(&visits, odd.visit_id.to_string()).expect("get") {
        Some((automerge::Value::Object(automerge::ObjType::Map), id)) => id,
        other => panic!("{other:?}"),
    };
    let mut tx = am.transaction();
    tx.put(&v, "weight_g", -5).expect("put");
    tx.commit();
    store.push(dev, s.clone(), vec![push_of(&am, &Heads::empty())], NOW).await.expect("kept, not refused");
    assert_eq!(stats(&*store).await.visits, 2, "both visits are stored");
    let facts = store.report_facts(s.clone(), day(0), day(0)).await.expect("facts");
    assert_eq!(
        facts.iter().map(|f| f.person_id).collect::<Vec<_>>(),
        vec![good.person_id],
        "only the valid one counts"
    );
    let invalid = store.invalid_records(s.clone()).await.expect("invalid");
    assert_eq!(invalid.len(), 1);
    assert_eq!(
        (invalid[0].record_id.as_str(), invalid[0].collection.as_str()),
        (odd.visit_id.to_string().as_str(), "visits")
    );
    assert_eq!(invalid[0].issues[0]["field"], "weight_g");
    assert_eq!(invalid[0].session_date.as_deref(), Some("2026-01-05"));
    assert!(store.invalid_records(scope(&["mawar"])).await.expect("invalid").is_empty(), "scoped");
    // Corrected: counted again, no longer listed.
    let before = heads(&am);
    set_weight(&mut am, odd.visit_id, 8100, NOW + 1);
    store.push(dev, s.clone(), vec![push_of(&am, &before)], NOW + 1).await.expect("correction");
    assert!(store.invalid_records(s.clone()).await.expect("invalid").is_empty());
    assert_eq!(store.report_facts(s, day(0), day(0)).await.expect("facts").len(), 2);
}

async fn a_district_admin_reads_her_districts_audit_entries_only(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    let ciamis = HierarchyFile::parse(
        r#"{"format": "posync-hierarchy/1", "units": [
            {"id": "jawa-barat", "kind": "province", "name": "Jawa Barat"},
            {"id": "kab-ciamis", "kind": "district", "parent": "jawa-barat", "name": "Kabupaten Ciamis"},
            {"id": "kec-ciamis", "kind": "subdistrict", "parent": "kab-ciamis", "name": "Kecamatan Ciamis"},
            {"id": "pkm-ciamis", "kind": "puskesmas", "parent": "kec-ciamis", "name": "Puskesmas Ciamis"},
            {"id": "desa-ciamis", "kind": "village", "parent": "pkm-ciamis", "name": "Desa Ciamis"},
            {"id": "pos-ciamis-dahlia-1", "kind": "posyandu", "parent": "desa-ciamis", "name": "Posyandu Dahlia 1"}
        ], "users": []}"#,
    )
    .expect("parses");
    store.import_hierarchy(ciamis, audit(NOW, AuditAction::HierarchyImported, "c")).await.expect("import");
    for (i, unit) in ["pos-hegarsari-melati-1", "pkm-banjar-1", "pos-ciamis-dahlia-1", "kota-banjar"].iter().enumerate()
    {
        let e = audit(NOW + i as i64, AuditAction::RecordRead, unit).concerning(Some(unit));
        store.append_audit(e).await.expect("append");
    }
    let read = |districts: &[&str]| {
        let store = store.clone();
        let districts: Vec<UnitId> = districts.iter().map(|d| unit(d)).collect();
        async move { store.district_audit_log(districts, 0, 100).await.expect("audit") }
    };
    let banjar = read(&["kota-banjar"]).await;
    assert_eq!(
        banjar.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(),
        vec!["pos-hegarsari-melati-1", "pkm-banjar-1", "kota-banjar"]
    );
    assert!(banjar.iter().all(|e| e.district.as_deref() == Some("kota-banjar")));
    let ciamis = read(&["kab-ciamis"]).await;
    assert_eq!(ciamis.iter().map(|e| e.target.as_str()).collect::<Vec<_>>(), vec!["pos-ciamis-dahlia-1"]);
    assert_eq!(read(&["kota-banjar", "kab-ciamis"]).await.len(), 4);
    assert_eq!(store.audit_log(0, 100).await.expect("audit").len(), 6, "the console reads every entry");
}

async fn a_device_whose_enrolment_answer_was_lost_redeems_its_code_again(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    let e = NewEnrolment { code_hash: [41; 32], user: user_id("kader-0001"), expires_at: NOW + 3600 };
    store.issue_enrolment(e, audit(NOW, AuditAction::EnrolmentIssued, "kader-0001")).await.expect("issue");
    let phone = DeviceId::new_random();
    store.redeem_enrolment([41; 32], credential(phone, 1), NOW + 1).await.expect("enrol");
    // The answer never reached the phone: it retries with the same code and gets a fresh
    // credential under the same binding; the lost one no longer works.
    let again = store.redeem_enrolment([41; 32], credential(phone, 2), NOW + 2).await.expect("the same device again");
    assert_eq!(again.id, user_id("kader-0001"));
    store.refresh_device(phone, [2; 32], NOW + 86_400, NOW + 3).await.expect("the new credential works");
    assert_err!(store.refresh_device(phone, [1; 32], NOW + 86_400, NOW + 3).await, StoreError::InvalidCredential);
    // Another device cannot use the code, nor can anyone once it expired.
    assert_err!(
        store.redeem_enrolment([41; 32], credential(DeviceId::new_random(), 3), NOW + 4).await,
        StoreError::InvalidCredential
    );
    assert_err!(
        store.redeem_enrolment([41; 32], credential(phone, 4), NOW + 3601).await,
        StoreError::InvalidCredential
    );
    // Revoked meanwhile: the code does not bring it back.
    store.revoke_device(phone, audit(NOW + 5, AuditAction::DeviceRevoked, phone)).await.expect("revoke");
    assert_err!(store.redeem_enrolment([41; 32], credential(phone, 5), NOW + 6).await, StoreError::DeviceRevoked);
}

// ------------------------------------------------------------------------------------------
// Sign-in PINs (issue #16)
// ------------------------------------------------------------------------------------------

/// The server's policy: 5 attempts without a success, then 15 minutes.
const LOCKOUT: PinLockout = PinLockout { failures_max: 5, lock_seconds: 900 };

/// A stand-in for a PHC string: the store keeps whatever hash the server hands it.
const PIN_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaA";

async fn set_pin(store: &dyn Store, user: &str, hash: &str, at: i64) {
    store.set_pin(user_id(user), hash.into(), audit(at, AuditAction::PinSet, user)).await.expect("set PIN");
}

async fn pin(store: &dyn Store, user: &str) -> PinRecord {
    store.pin_of(user_id(user)).await.expect("read PIN").expect("a PIN is set")
}

async fn attempt(store: &dyn Store, user: &str, at: i64) -> PinAttempt {
    store.pin_attempt(user_id(user), at, LOCKOUT).await.expect("attempt")
}

async fn a_pin_counts_attempts_locks_after_the_maximum_and_a_success_starts_over(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    assert_eq!(store.pin_of(user_id("bidan-0001")).await.expect("read"), None);
    assert_eq!(attempt(&*store, "bidan-0001", NOW).await, PinAttempt::NoPin);
    assert_eq!(attempt(&*store, "nobody-at-all", NOW).await, PinAttempt::NoPin);
    assert_err!(
        store.set_pin(user_id("nobody-at-all"), PIN_HASH.into(), audit(NOW, AuditAction::PinSet, "x")).await,
        StoreError::NotFound(_)
    );

    set_pin(&*store, "bidan-0001", PIN_HASH, NOW).await;
    let expected = PinRecord {
        user: user_id("bidan-0001"),
        pin_hash: PIN_HASH.into(),
        failures: 0,
        locked_until: None,
        set_at: NOW,
    };
    assert_eq!(pin(&*store, "bidan-0001").await, expected);

    // Each attempt is counted before the PIN is checked; the fifth sets the lock.
    for n in 1..=4u32 {
        let got = attempt(&*store, "bidan-0001", NOW + i64::from(n)).await;
        assert_eq!(got, PinAttempt::Verify { pin_hash: PIN_HASH.into(), failures: n });
        assert_eq!(pin(&*store, "bidan-0001").await.locked_until, None);
    }
    let fifth = attempt(&*store, "bidan-0001", NOW + 5).await;
    assert_eq!(fifth, PinAttempt::Verify { pin_hash: PIN_HASH.into(), failures: 5 });
    let until = NOW + 5 + 900;
    assert_eq!(pin(&*store, "bidan-0001").await.locked_until, Some(until));
    // Locked: refused without counting, on this instance and another.
    assert_eq!(attempt(&*store, "bidan-0001", NOW + 6).await, PinAttempt::Locked { until });
    let other = backend.open().await;
    assert_eq!(attempt(&*other, "bidan-0001", until - 1).await, PinAttempt::Locked { until });
    assert_eq!(pin(&*store, "bidan-0001").await.failures, 5);
    // Another user is not affected.
    set_pin(&*store, "kader-0001", PIN_HASH, NOW).await;
    assert_eq!(
        attempt(&*store, "kader-0001", NOW + 7).await,
        PinAttempt::Verify { pin_hash: PIN_HASH.into(), failures: 1 }
    );

    // Once the lock ends the count starts over.
    let after = attempt(&*other, "bidan-0001", until).await;
    assert_eq!(after, PinAttempt::Verify { pin_hash: PIN_HASH.into(), failures: 1 });
    assert_eq!(pin(&*store, "bidan-0001").await.locked_until, None);

    // A success resets the count; a success against a replaced PIN changes nothing.
    let device = DeviceId::new_random();
    assert_err!(
        store.pin_succeeded(user_id("bidan-0001"), "another hash".into(), credential(device, 1), until + 1).await,
        StoreError::InvalidCredential
    );
    assert_eq!(pin(&*store, "bidan-0001").await.failures, 1);
    assert!(store.device_access(device).await.expect("access").is_none(), "no device bound by the refusal");
    store
        .pin_succeeded(user_id("bidan-0001"), PIN_HASH.into(), credential(device, 1), until + 2)
        .await
        .expect("success");
    assert_eq!(pin(&*store, "bidan-0001").await, PinRecord { failures: 0, locked_until: None, ..expected.clone() });

    // Setting a new PIN (from a signed-in device) clears a lock.
    for n in 1..=5 {
        attempt(&*store, "bidan-0001", until + 10 + n).await;
    }
    assert!(matches!(attempt(&*store, "bidan-0001", until + 20).await, PinAttempt::Locked { .. }));
    set_pin(&*store, "bidan-0001", "$argon2id$new", until + 30).await;
    let replaced = pin(&*store, "bidan-0001").await;
    assert_eq!((replaced.pin_hash.as_str(), replaced.failures, replaced.locked_until), ("$argon2id$new", 0, None));
    assert_eq!(replaced.set_at, until + 30);
    let actions: Vec<String> = store.audit_log(0, 1000).await.expect("audit").into_iter().map(|e| e.action).collect();
    assert_eq!(actions.iter().filter(|a| *a == "pin_set").count(), 3, "each PIN set is audited: {actions:?}");
    assert_eq!(actions.iter().filter(|a| *a == "signed_in").count(), 1);
}

async fn a_pin_sign_in_binds_a_device_like_an_enrolment(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    set_pin(&*store, "bidan-0001", PIN_HASH, NOW).await;
    let sign_in = |device: DeviceId, refresh: u8, at: i64| {
        let store = store.clone();
        async move {
            attempt(&*store, "bidan-0001", at).await;
            store.pin_succeeded(user_id("bidan-0001"), PIN_HASH.into(), credential(device, refresh), at).await
        }
    };
    let browser = DeviceId::new_random();
    let user = sign_in(browser, 1, NOW + 1).await.expect("signed in");
    assert_eq!(user.id, user_id("bidan-0001"));
    let access = store.device_access(browser).await.expect("access").expect("bound");
    assert_eq!((access.user.id.clone(), access.revoked), (user_id("bidan-0001"), false));
    assert_eq!(access.scope, posyandu_under(&fixture(), "pkm-banjar-1"));
    store.refresh_device(browser, [1; 32], NOW + 86_400, NOW + 2).await.expect("its refresh credential works");
    let entry = store.audit_log(0, 1000).await.expect("audit").into_iter().find(|e| e.action == "signed_in");
    let entry = entry.expect("the sign-in is audited");
    assert_eq!(entry.target, browser.to_string());
    assert_eq!(entry.actor, format!("user:bidan-0001@{browser}"));
    assert_eq!(entry.district.as_deref(), Some("kota-banjar"));
    assert!(!entry.detail.to_string().contains("argon2"), "no hash in the log: {}", entry.detail);

    // A device id of another user is refused, and so is a revoked one (as enrolment does);
    // nothing of the refused sign-in stays.
    let kaders = enrol(&*store, "kader-0001", 51, 52).await;
    assert_err!(sign_in(kaders, 3, NOW + 3).await, StoreError::DeviceTaken);
    assert_eq!(store.device_access(kaders).await.expect("access").expect("bound").user.id, user_id("kader-0001"));
    assert_eq!(pin(&*store, "bidan-0001").await.failures, 1, "the refused success did not reset the count");
    store.revoke_device(browser, audit(NOW + 4, AuditAction::DeviceRevoked, browser)).await.expect("sign out");
    assert_err!(sign_in(browser, 4, NOW + 5).await, StoreError::DeviceRevoked);
    // A new browser id after signing out works.
    sign_in(DeviceId::new_random(), 5, NOW + 6).await.expect("signed in again");
}

async fn parallel_pin_attempts_on_two_instances_never_pass_the_lockout(backend: Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    a.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    set_pin(&*a, "bidan-0001", PIN_HASH, NOW).await;
    let tries = (0..16).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { attempt(&*store, "bidan-0001", NOW + 1).await })
    });
    let mut counted = Vec::new();
    let mut locked = 0;
    for t in tries {
        match t.await.expect("task") {
            PinAttempt::Verify { failures, .. } => counted.push(failures),
            PinAttempt::Locked { until } => {
                assert_eq!(until, NOW + 1 + 900);
                locked += 1;
            }
            PinAttempt::NoPin => panic!("the PIN is set"),
        }
    }
    counted.sort_unstable();
    assert_eq!(counted, vec![1, 2, 3, 4, 5], "each attempt saw the one before it");
    assert_eq!(locked, 11);
}

// ------------------------------------------------------------------------------------------
// Read-only API keys (issue #18)
// ------------------------------------------------------------------------------------------

fn new_api_key(id: &str, hash: u8, unit_id: &str, at: i64) -> NewApiKey {
    NewApiKey {
        id: id.into(),
        key_hash: [hash; 32],
        label: " Dasbor BI ".into(),
        unit: unit(unit_id),
        role: Role::DistrictReporter,
        created_by: "console:conformance".into(),
        created_at: at,
    }
}

async fn an_api_key_is_stored_by_hash_listed_with_its_last_use_and_revoked(backend: Backend) {
    let store = backend.open().await;
    store.import_hierarchy(fixture(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    assert!(store.api_keys().await.expect("list").is_empty());
    assert_err!(
        store
            .create_api_key(new_api_key("ak1", 1, "no-such-unit", NOW), audit(NOW, AuditAction::ApiKeyCreated, "ak1"))
            .await,
        StoreError::NotFound(_)
    );
    store
        .create_api_key(new_api_key("ak1", 1, "pkm-banjar-1", NOW), audit(NOW, AuditAction::ApiKeyCreated, "ak1"))
        .await
        .expect("create");
    store
        .create_api_key(
            new_api_key("ak2", 2, "kota-banjar", NOW + 1),
            audit(NOW + 1, AuditAction::ApiKeyCreated, "ak2"),
        )
        .await
        .expect("create another");
    let listed = store.api_keys().await.expect("list");
    let first = ApiKeyRecord {
        id: "ak1".into(),
        label: "Dasbor BI".into(),
        unit: unit("pkm-banjar-1"),
        role: Role::DistrictReporter,
        created_by: "console:conformance".into(),
        created_at: NOW,
        revoked_at: None,
        last_used_at: None,
    };
    assert_eq!(listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["ak1", "ak2"]);
    assert_eq!(listed[0], first);

    // An unknown secret is nobody; a use is recorded and audited, on any instance.
    assert_eq!(store.use_api_key([9; 32], NOW + 2, "/v1/reports/monthly".into()).await.expect("use"), None);
    let other = backend.open().await;
    let used = other.use_api_key([1; 32], NOW + 3, "/v1/reports/monthly".into()).await.expect("use").expect("known");
    assert_eq!(used.key, ApiKeyRecord { last_used_at: Some(NOW + 3), ..first.clone() });
    assert_eq!(store.api_keys().await.expect("list")[0].last_used_at, Some(NOW + 3));
    assert_eq!(store.api_keys().await.expect("list")[1].last_used_at, None, "another key is untouched");
    let log = store.audit_log(0, 100).await.expect("audit");
    let use_entry = log.iter().find(|e| e.action == "api_key_used").expect("the use is audited");
    assert_eq!((use_entry.actor.as_str(), use_entry.target.as_str()), ("api_key:ak1", "ak1"));
    assert_eq!(use_entry.detail["route"], "/v1/reports/monthly");
    assert_eq!(use_entry.district.as_deref(), Some("kota-banjar"));

    // Revoked: it comes back revoked, with nothing in scope, and its last use stays.
    store.revoke_api_key("ak1".into(), audit(NOW + 4, AuditAction::ApiKeyRevoked, "ak1")).await.expect("revoke");
    let revoked =
        other.use_api_key([1; 32], NOW + 5, "/v1/export/visits.csv".into()).await.expect("use").expect("known");
    assert_eq!(revoked.key.revoked_at, Some(NOW + 4));
    assert_eq!(revoked.key.last_used_at, Some(NOW + 3));
    assert_eq!(revoked.scope.posyandu().count(), 0);
    let uses = store.audit_log(0, 100).await.expect("audit").iter().filter(|e| e.action == "api_key_used").count();
    assert_eq!(uses, 1, "a refused use is not a use");
    // Revoking again keeps the first time; an unknown key is not found.
    store.revoke_api_key("ak1".into(), audit(NOW + 6, AuditAction::ApiKeyRevoked, "ak1")).await.expect("again");
    assert_eq!(store.api_keys().await.expect("list")[0].revoked_at, Some(NOW + 4));
    assert_err!(
        store.revoke_api_key("nope".into(), audit(NOW + 7, AuditAction::ApiKeyRevoked, "nope")).await,
        StoreError::NotFound(_)
    );
    // Two keys never share a secret's hash.
    assert!(
        store
            .create_api_key(
                new_api_key("ak3", 2, "kota-banjar", NOW + 8),
                audit(NOW + 8, AuditAction::ApiKeyCreated, "ak3")
            )
            .await
            .is_err()
    );
}

async fn an_api_key_reads_the_posyandu_under_its_unit_as_of_each_use(backend: Backend) {
    let store = backend.open().await;
    let file = fixture();
    store.import_hierarchy(file.clone(), audit(NOW, AuditAction::HierarchyImported, "f")).await.expect("import");
    for (id, hash, unit_id) in
        [("k-pkm", 1, "pkm-banjar-1"), ("k-pos", 2, "pos-hegarsari-melati-1"), ("k-dist", 3, "kota-banjar")]
    {
        store
            .create_api_key(new_api_key(id, hash, unit_id, NOW), audit(NOW, AuditAction::ApiKeyCreated, id))
            .await
            .expect("create");
        let access = store.use_api_key([hash; 32], NOW + 1, "/v1/export/people.csv".into()).await.expect("use");
        let got: BTreeSet<_> = access.expect("known").scope.posyandu().cloned().collect();
        let want: BTreeSet<_> = posyandu_under(&file, unit_id).posyandu().cloned().collect();
        assert!(!want.is_empty());
        assert_eq!(got, want, "{unit_id}");
    }
    // A posyandu moved away from the puskesmas leaves the key's scope at the next use.
    let tree = store.unit_tree().await.expect("tree");
    let other_village = tree
        .units
        .iter()
        .find(|u| u.kind == UnitKind::Village && tree.ancestors(&u.id).iter().all(|a| a.id != unit("pkm-banjar-1")))
        .expect("a village under another puskesmas")
        .id
        .clone();
    let mut moved = tree.get(&unit("pos-hegarsari-melati-1")).expect("posyandu").clone();
    moved.parent = Some(other_village);
    store.save_unit(moved, audit(NOW + 2, AuditAction::UnitMoved, "pos")).await.expect("move");
    let access =
        store.use_api_key([1; 32], NOW + 3, "/v1/export/people.csv".into()).await.expect("use").expect("known");
    assert!(!access.scope.allows(&p("pos-hegarsari-melati-1")));
    assert_eq!(access.scope.posyandu().count(), posyandu_under(&file, "pkm-banjar-1").posyandu().count() - 1);
}

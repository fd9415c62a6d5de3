//! Crash tests with the real binary: `posync serve` is killed with SIGKILL at seeded random
//! moments while phones sync concurrently, and restarted on the same SQLite file; phones'
//! syncs are also cut off at random points (the phone "dies" mid-sync). Afterwards no
//! acknowledged visit is missing, every captured visit is at the server exactly once, and
//! the store passes SQLite's integrity check.

mod common;

use posync_model::{DeviceId, PosyanduId, Role};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, grant, posyandu, user_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, RwLock};
use std::time::Duration;

const PHONES: usize = 6;
const CRASHES: usize = 6;

fn start(db: &Path, keys: &Path) -> common::Instance {
    common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys.as_os_str()])
}

struct PhoneState {
    replica: Replica,
    token: String,
    posyandu: PosyanduId,
    captured: BTreeSet<String>,
    /// Visits this phone holds that the server acknowledged (outbox empty after a sync).
    acknowledged: BTreeSet<String>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Sync until the outbox is empty, retrying through crashes; some attempts are cut short on
/// purpose (the phone dying mid-sync: its SQLite transaction never commits).
async fn sync_through_crashes(phone: &mut PhoneState, url: &Arc<RwLock<String>>, rng: &mut StdRng) {
    for _ in 0..400 {
        let target = url.read().expect("url").clone();
        let cut = rng.random_bool(0.2).then(|| Duration::from_millis(rng.random_range(1..40)));
        let attempt = phone.replica.sync(&target, &phone.token);
        let outcome = match cut {
            Some(d) => tokio::time::timeout(d, attempt).await.ok(),
            None => Some(attempt.await),
        };
        if let Some(Ok(_)) = outcome
            && phone.replica.outbox().expect("outbox").is_empty()
        {
            let held: BTreeSet<String> = posync_testkit::visit_ids(&phone.replica).into_iter().collect();
            phone.acknowledged.extend(held.intersection(&phone.captured).cloned());
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("phone never completed a sync");
}

fn visit_ids_at_server(db: &Path) -> BTreeSet<String> {
    let conn = rusqlite::Connection::open(db).expect("open");
    let mut stmt = conn.prepare("SELECT visit_id FROM visits").expect("prepare");
    stmt.query_map([], |r| r.get::<_, String>(0)).expect("query").collect::<Result<_, _>>().expect("rows")
}

/// `n` kader phones, phone `i` of `posyandu_of(i)`, each granted its posyandu in the
/// server's file at `db` and holding an access token signed with `keys`.
fn kader_phones(
    dir: &Path,
    db: &Path,
    keys: &TokenKeys,
    n: usize,
    posyandu_of: impl Fn(usize) -> PosyanduId,
) -> Vec<PhoneState> {
    let setup = SqliteStore::open(db).expect("store");
    (0..n)
        .map(|i| {
            let p = posyandu_of(i);
            let replica = Replica::open(dir.join(format!("phone-{i}.sqlite"))).expect("replica");
            let device: DeviceId = replica.device();
            grant(&setup, device, Role::Kader, std::slice::from_ref(&p), now());
            let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
            PhoneState { replica, token, posyandu: p, captured: BTreeSet::new(), acknowledged: BTreeSet::new() }
        })
        .collect()
}

/// Every phone captures `visits` more visits offline in its posyandu's session.
fn capture(phones: &mut [PhoneState], g: &mut Generator, round: usize, visits: usize) {
    for phone in phones {
        let session = phone.replica.start_session(&phone.posyandu, DAY).expect("session");
        for k in 0..visits {
            let id = phone.replica.record_visit(session, g.child_visit(), (round * 10 + k) as i64).expect("record");
            phone.captured.insert(id.to_string());
        }
    }
}

/// Every phone syncs at once, through crashes ([`sync_through_crashes`]), phone `i` seeded
/// with `seed + i`.
fn sync_all_through_crashes(
    phones: Vec<PhoneState>,
    url: &Arc<RwLock<String>>,
    seed: u64,
) -> Vec<tokio::task::JoinHandle<PhoneState>> {
    phones
        .into_iter()
        .enumerate()
        .map(|(i, mut phone)| {
            let url = url.clone();
            let mut prng = StdRng::seed_from_u64(seed + i as u64);
            tokio::spawn(async move {
                sync_through_crashes(&mut phone, &url, &mut prng).await;
                phone
            })
        })
        .collect()
}

async fn join(tasks: Vec<tokio::task::JoinHandle<PhoneState>>) -> Vec<PhoneState> {
    let mut phones = Vec::with_capacity(tasks.len());
    for t in tasks {
        phones.push(t.await.expect("phone task"));
    }
    phones
}

/// The visit ids of `which` set over every phone.
fn all_of(phones: &[PhoneState], which: impl Fn(&PhoneState) -> &BTreeSet<String>) -> BTreeSet<String> {
    phones.iter().flat_map(|p| which(p).iter().cloned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_sync_storm_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().expect("dir");
    let db: PathBuf = dir.path().join("server.sqlite");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let mut g = Generator::new(99);
    let mut phones = kader_phones(dir.path(), &db, &keys, PHONES, |i| posyandu(&format!("crash-{}", i % 2)));

    let mut server = start(&db, &keys_path);
    let url = Arc::new(RwLock::new(server.url.clone()));
    let mut rng = StdRng::seed_from_u64(7);
    for round in 0..CRASHES {
        // Capture more offline, then everyone syncs at once while the server is killed.
        capture(&mut phones, &mut g, round, 6);
        let tasks = sync_all_through_crashes(std::mem::take(&mut phones), &url, 1000 + (round * PHONES) as u64);
        tokio::time::sleep(Duration::from_millis(rng.random_range(5..150))).await;
        drop(server); // SIGKILL, mid-storm
        // Whatever was acknowledged before the kill must be in the file now.
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..100))).await;
        server = start(&db, &keys_path);
        *url.write().expect("url") = server.url.clone();
        phones = join(tasks).await;
    }
    drop(server);

    let store = SqliteStore::open(&db).expect("reopen");
    store.integrity_check().await.expect("integrity_check ok after kill -9");
    let stats = store.stats().await.expect("stats");
    let at_server = visit_ids_at_server(&db);
    let captured = all_of(&phones, |p| &p.captured);
    let acknowledged = all_of(&phones, |p| &p.acknowledged);
    assert!(acknowledged.is_subset(&at_server), "no acknowledged visit lost");
    assert_eq!(acknowledged, captured, "every phone finished with its outbox acknowledged");
    assert_eq!(at_server, captured, "every captured visit at the server");
    assert_eq!(stats.visits as usize, captured.len(), "and exactly once");
    eprintln!("{CRASHES} kills, {} visits from {PHONES} phones, all present", captured.len());
}

/// Pushes that arrive while the writer is busy are committed together (group commit, issue
/// #14). Twenty-four phones of three posyandu push at once, again and again, while the
/// server is killed at random moments, so groups are cut mid-commit: no acknowledged push is
/// lost, nothing uncommitted was acknowledged (a phone that had been told so would never
/// send its visits again, and they would be missing), and groups did form.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_pushes_commit_in_groups_loses_no_acknowledged_push() {
    const GROUP_PHONES: usize = 24;
    let dir = tempfile::tempdir().expect("dir");
    let db: PathBuf = dir.path().join("server.sqlite");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let mut g = Generator::new(24);
    let mut phones = kader_phones(dir.path(), &db, &keys, GROUP_PHONES, |i| posyandu(&format!("group-{}", i % 3)));

    let mut server = start(&db, &keys_path);
    let url = Arc::new(RwLock::new(server.url.clone()));
    let mut rng = StdRng::seed_from_u64(2424);
    let (mut commits, mut pushes) = (0u64, 0u64);
    for round in 0..4 {
        capture(&mut phones, &mut g, round, 2);
        let tasks = sync_all_through_crashes(std::mem::take(&mut phones), &url, 5000 + (round * GROUP_PHONES) as u64);
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..200))).await;
        let (c, p) = push_commit_counts(&server.url).await;
        commits += c;
        pushes += p;
        drop(server); // SIGKILL, groups in flight
        tokio::time::sleep(Duration::from_millis(rng.random_range(10..60))).await;
        server = start(&db, &keys_path);
        *url.write().expect("url") = server.url.clone();
        phones = join(tasks).await;
    }
    let (c, p) = push_commit_counts(&server.url).await;
    commits += c;
    pushes += p;
    drop(server);

    let store = SqliteStore::open(&db).expect("reopen");
    store.integrity_check().await.expect("integrity_check ok after kill -9");
    let at_server = visit_ids_at_server(&db);
    let captured = all_of(&phones, |p| &p.captured);
    let acknowledged = all_of(&phones, |p| &p.acknowledged);
    assert!(acknowledged.is_subset(&at_server), "no acknowledged visit lost");
    assert_eq!(at_server, captured, "every captured visit at the server: nothing was acknowledged uncommitted");
    assert_eq!(store.stats().await.expect("stats").visits as usize, captured.len(), "and exactly once");
    assert!(pushes > commits, "pushes shared commits: {pushes} pushes in {commits} commits");
    eprintln!(
        "{pushes} pushes in {commits} commits; {} visits from {GROUP_PHONES} phones, all present",
        captured.len()
    );
}

/// The server's push commits and the pushes they held (`/metrics`), or zeros if it does not answer.
async fn push_commit_counts(url: &str) -> (u64, u64) {
    let Ok(resp) = reqwest::get(format!("{url}/metrics")).await else { return (0, 0) };
    let text = resp.text().await.unwrap_or_default();
    let read = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or(0);
    (read("posync_push_commits_total"), read("posync_pushes_committed_total"))
}

/// The server stores a document as a snapshot and appended chunks, rewriting the snapshot
/// every `CHUNKS_MAX` merges (issue #14). One phone syncs each capture on its own, so its
/// session document is merged one change at a time, well past two compactions, while the
/// server is killed at random moments, between appends and at compactions: nothing
/// acknowledged is lost, the stored form loads whole, and the file passes its check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_a_document_grows_past_its_chunk_limit_loses_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let db: PathBuf = dir.path().join("server.sqlite");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let mut phone = kader_phones(dir.path(), &db, &keys, 1, |_| posyandu("crash-chunks")).pop().expect("a phone");
    let session = phone.replica.start_session(&phone.posyandu, DAY).expect("session");
    let merges = 2 * posync_store::core::CHUNKS_MAX as usize + 20;
    let mut server = Some(start(&db, &keys_path));
    let url = Arc::new(RwLock::new(server.as_ref().map(|s| s.url.clone()).unwrap_or_default()));
    let mut rng = StdRng::seed_from_u64(64);
    let mut g = Generator::new(64);
    let mut kills = 0;
    for i in 0..merges {
        let id = phone.replica.record_visit(session, g.child_visit(), i as i64).expect("record");
        phone.captured.insert(id.to_string());
        if rng.random_bool(0.08) {
            // Kill it while this sync is in flight, then bring it back on the same file.
            let mut sync_rng = StdRng::seed_from_u64(rng.random());
            let sync = sync_through_crashes(&mut phone, &url, &mut sync_rng);
            let delay = Duration::from_millis(rng.random_range(0..15));
            let killer = async {
                tokio::time::sleep(delay).await;
                drop(server.take()); // SIGKILL
                let restarted = start(&db, &keys_path);
                *url.write().expect("url") = restarted.url.clone();
                server = Some(restarted);
            };
            tokio::join!(sync, killer);
            kills += 1;
        } else {
            sync_through_crashes(&mut phone, &url, &mut rng).await;
        }
    }
    drop(server);

    let store = SqliteStore::open(&db).expect("reopen");
    store.integrity_check().await.expect("integrity_check ok after kill -9");
    assert!(phone.acknowledged.is_subset(&visit_ids_at_server(&db)), "no acknowledged visit lost");
    assert_eq!(visit_ids_at_server(&db), phone.captured, "every captured visit at the server, once");
    let stored = store.get(session).await.expect("get").expect("stored");
    let loaded = automerge::Automerge::load(&stored.bytes).expect("the stored form loads");
    assert_eq!(posync_model::Heads::new(loaded.get_heads()), stored.meta.heads, "to the stored heads");
    assert_eq!(posync_model::doc::visits(&loaded).expect("visits").len(), merges);
    assert!(kills > 3, "the server was killed {kills} times");
    eprintln!("{merges} merges of one document, {kills} kills, all present");
}

/// A phone killed at random moments while capturing: every capture the app confirmed (the
/// process printed the visit id, after its transaction committed) is on the phone afterwards,
/// and the replica file passes SQLite's integrity check.
#[test]
fn kill_9_during_capture_loses_no_confirmed_visit() {
    let dir = tempfile::tempdir().expect("dir");
    let replica = dir.path().join("phone.sqlite");
    let mut rng = StdRng::seed_from_u64(11);
    let mut confirmed = BTreeSet::new();
    let mut killed = 0;
    // Past two whole saves: a capture is appended as a change chunk, and every 64th one
    // rewrites the document whole (replica::stored::CHUNKS_MAX); kills land on both.
    for i in 0..140 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_posync"))
            .args(["kader", "record", "--posyandu", "melati-01", "--date", "2026-11-23", "--sex", "F"])
            .args(["--birth-date", "2025-06-01", "--weight-g", "8500", "--length-mm", "720"])
            .arg("--name")
            .arg(format!("Anak {i}"))
            .arg("--replica")
            .arg(&replica)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start posync kader record");
        std::thread::sleep(Duration::from_millis(rng.random_range(0..40)));
        if child.try_wait().expect("wait").is_none() {
            let _ = child.kill();
            killed += 1;
        }
        let out = child.wait_with_output().expect("output");
        if out.status.success() {
            let line = String::from_utf8_lossy(&out.stdout);
            let visit = line.split("\"visit\":\"").nth(1).and_then(|s| s.split('"').next()).expect("visit id printed");
            confirmed.insert(visit.to_owned());
        }
    }
    let conn = rusqlite::Connection::open(&replica).expect("open");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(check, "ok");
    let phone = Replica::open(&replica).expect("replica opens after kills");
    let held: BTreeSet<String> = posync_testkit::visit_ids(&phone).into_iter().collect();
    assert!(confirmed.is_subset(&held), "every confirmed capture survived");
    // The stored document (last whole save plus appended chunks) holds exactly the visits
    // the phone lists.
    let session =
        posync_model::DocId::for_session(&"melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
    let in_doc: BTreeSet<String> = posync_model::doc::visits(&phone.doc(session).expect("the document loads"))
        .expect("visits")
        .iter()
        .map(|v| v.visit_id.to_string())
        .collect();
    assert_eq!(in_doc, held, "document and list agree");
    assert!(killed > 0 && !confirmed.is_empty(), "the test killed some captures ({killed}) and confirmed others");
    eprintln!("{killed} captures killed, {} confirmed, {} on the phone", confirmed.len(), held.len());
}

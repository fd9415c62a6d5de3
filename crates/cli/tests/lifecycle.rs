//! The server's lifecycle with the real binary: SIGTERM (what a service manager or
//! `docker stop` sends) and SIGINT stop it cleanly: it stops accepting, lets the syncs in
//! flight finish, closes the store and exits 0. Nothing acknowledged is lost, and phones
//! whose sync was refused or cut retry against the restarted server.

mod common;

use posync_model::{DeviceId, Role};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_testkit::{DAY, Generator, grant, posyandu, user_for, visit_ids};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Duration;

const PHONES: usize = 6;
const VISITS: usize = 20;

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn start(db: &Path, keys: &Path) -> common::Instance {
    common::serve([OsStr::new("--db"), db.as_os_str(), OsStr::new("--keys"), keys.as_os_str()])
}

struct Phone {
    replica: Replica,
    token: String,
    captured: BTreeSet<String>,
    acknowledged: BTreeSet<String>,
}

/// Sync until the outbox is empty, following the server to its new address.
async fn sync_until_done(phone: &mut Phone, url: &Arc<RwLock<String>>) {
    for _ in 0..300 {
        let target = url.read().expect("url").clone();
        if phone.replica.sync(&target, &phone.token).await.is_ok() && phone.replica.outbox().expect("outbox").is_empty()
        {
            let held: BTreeSet<String> = visit_ids(&phone.replica).into_iter().collect();
            phone.acknowledged.extend(held.intersection(&phone.captured).cloned());
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the phone never completed a sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_storm_exits_0_and_keeps_every_acknowledged_push() {
    let dir = tempfile::tempdir().expect("dir");
    let (db, keys_path) = (dir.path().join("server.sqlite"), dir.path().join("keys.json"));
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let setup = SqliteStore::open(&db).expect("store");
    let mut g = Generator::new(15);
    let mut phones = Vec::new();
    for i in 0..PHONES {
        let p = posyandu(&format!("term-{}", i % 2));
        let mut replica = Replica::open(dir.path().join(format!("phone-{i}.sqlite"))).expect("replica");
        let device: DeviceId = replica.device();
        grant(&setup, device, Role::Kader, std::slice::from_ref(&p), now());
        let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
        let session = replica.start_session(&p, DAY).expect("session");
        let mut captured = BTreeSet::new();
        for k in 0..VISITS {
            captured.insert(replica.record_visit(session, g.child_visit(), k as i64).expect("record").to_string());
        }
        phones.push(Phone { replica, token, captured, acknowledged: BTreeSet::new() });
    }
    drop(setup);

    let server = start(&db, &keys_path);
    let ready = reqwest::get(format!("{}/readyz", server.url)).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200, "ready once listening: the store answers");
    let metrics = reqwest::get(format!("{}/metrics", server.url)).await.expect("metrics").text().await.expect("text");
    for series in ["posync_build_info{version=", "process_start_time_seconds ", "process_cpu_seconds_total "] {
        assert!(metrics.contains(series), "metrics has {series}");
    }
    let rss: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
        .and_then(|v| v.parse().ok())
        .expect("process_resident_memory_bytes");
    assert!(rss > 1e6, "a live server's resident memory: {rss}");
    assert!(metrics.lines().any(|l| l.starts_with("process_open_fds ")), "open fds");
    let url = Arc::new(RwLock::new(server.url.clone()));
    let mut tasks = Vec::new();
    for mut phone in phones.drain(..) {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            sync_until_done(&mut phone, &url).await;
            phone
        }));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    let status = tokio::task::spawn_blocking(move || server.signal_and_wait("TERM", Duration::from_secs(30)))
        .await
        .expect("wait");
    assert!(status.success(), "SIGTERM is a clean stop: exit 0, got {status:?}");
    let restarted = start(&db, &keys_path);
    *url.write().expect("url") = restarted.url.clone();
    for t in tasks {
        phones.push(t.await.expect("phone"));
    }
    let status = tokio::task::spawn_blocking(move || restarted.signal_and_wait("INT", Duration::from_secs(30)))
        .await
        .expect("wait");
    assert!(status.success(), "SIGINT too: exit 0, got {status:?}");

    let conn = rusqlite::Connection::open(&db).expect("open");
    let at_server: Vec<String> = conn
        .prepare("SELECT visit_id FROM visits")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let at_server_set: BTreeSet<String> = at_server.iter().cloned().collect();
    let captured: BTreeSet<String> = phones.iter().flat_map(|p| p.captured.iter().cloned()).collect();
    let acknowledged: BTreeSet<String> = phones.iter().flat_map(|p| p.acknowledged.iter().cloned()).collect();
    assert_eq!(acknowledged, captured, "every phone finished with its outbox acknowledged");
    assert_eq!(at_server_set, captured, "every captured visit at the server");
    assert_eq!(at_server.len(), captured.len(), "each once");
    let check: String = conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("check");
    assert_eq!(check, "ok");
}

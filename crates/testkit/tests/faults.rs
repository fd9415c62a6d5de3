//! A seeded posyandu day synced through a fault-injecting proxy on 127.0.0.1 (dropped,
//! truncated, delayed and duplicated requests; dropped and cut responses) at several fault
//! rates. Phones retry until their sync completes; afterwards every captured visit is at the
//! server exactly once, on every phone of its posyandu, and on a fresh puskesmas tablet.

use posync_model::{DocId, PosyanduId, Role};
use posync_testkit::faults::FaultProxy;
use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu, visit_ids};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;

const POSYANDU: usize = 3;
const PHONES: usize = 3;
const VISITS: usize = 8;
/// Sync attempts per phone before the test gives up (each is bounded by the client timeout).
const ATTEMPTS_MAX: usize = 200;

async fn sync_until_done(phone: &mut Phone, url: &str) -> usize {
    for attempt in 1..=ATTEMPTS_MAX {
        match phone.replica.sync(url, &phone.token).await {
            Ok(_) if phone.replica.outbox().expect("outbox").is_empty() => return attempt,
            Ok(_) => {}
            Err(e) => assert!(
                e.is_transient() || matches!(e, posync_replica::ReplicaError::BadResponse(_)),
                "a fault must look like a network problem, never a refusal: {e}"
            ),
        }
    }
    panic!("no successful sync in {ATTEMPTS_MAX} attempts");
}

async fn day_through_faults(rate: f64, seed: u64) {
    let server = TestServer::start().await;
    let proxy = FaultProxy::start(server.addr(), rate, seed).await.expect("proxy");
    let sites: Vec<PosyanduId> = (0..POSYANDU).map(|i| posyandu(&format!("faulty-{i}"))).collect();
    let mut phones = Vec::new();
    let mut captured = BTreeSet::new();
    let mut g = Generator::new(seed);
    for p in &sites {
        for _ in 0..PHONES {
            let mut phone = Phone::kader(&server, p);
            let session: DocId = phone.replica.start_session(p, DAY).expect("session");
            for k in 0..VISITS {
                let id = phone.replica.record_visit(session, g.child_visit(), k as i64).expect("record");
                captured.insert(id.to_string());
            }
            phones.push(phone);
        }
    }
    // Two passes: the first pushes everything, the second brings each phone the others'.
    let mut attempts = 0;
    for _ in 0..2 {
        for phone in &mut phones {
            attempts += sync_until_done(phone, &proxy.url()).await;
        }
    }
    let at_server = posync_store::SyncStore::stats(&server.store).await.expect("stats");
    assert_eq!(at_server.visits as usize, captured.len(), "rate {rate}: every visit once at the server");
    for (i, phone) in phones.iter().enumerate() {
        let held: BTreeSet<String> = visit_ids(&phone.replica).into_iter().collect();
        assert_eq!(held.len(), PHONES * VISITS, "rate {rate}: phone {i} holds its posyandu's whole day");
        assert!(held.is_subset(&captured));
    }
    let mut tablet = Phone::new(&server, Role::PuskesmasOfficer, &sites);
    tablet.sync(&server).await;
    let pulled: BTreeSet<String> = visit_ids(&tablet.replica).into_iter().collect();
    assert_eq!(pulled, captured, "rate {rate}: a fresh tablet holds every captured visit");
    let (requests, faulted) =
        (proxy.counts.requests.load(Ordering::Relaxed), proxy.counts.faulted.load(Ordering::Relaxed));
    if rate > 0.0 {
        assert!(faulted > 0, "rate {rate}: the proxy did inject faults");
    }
    eprintln!("fault rate {rate}: {requests} requests through the proxy, {faulted} faulted, {attempts} sync attempts");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_synced_through_faults_arrives_whole_and_once() {
    for (rate, seed) in [(0.0, 1), (0.1, 2), (0.3, 3), (0.5, 4)] {
        day_through_faults(rate, seed).await;
    }
}

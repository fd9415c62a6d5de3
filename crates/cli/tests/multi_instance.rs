//! Two `posync serve` processes over one PostgreSQL, with phones alternating between them:
//! each round every phone captures offline, two phones edit the same visit concurrently,
//! and all of them sync at once, each to the instance the other used last time. In the end
//! every phone of a posyandu holds the same documents, the puskesmas tablet holds them all,
//! every captured visit is at the server exactly once, both edits of each contested field
//! are kept (as a conflict), and the feed is gap-free.

mod common;

use automerge::ReadDoc;
use posync_model::{DocId, Field, FieldValue, PosyanduId, Role, Scope};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::prelude::*;
use posync_store::{ConflictFilter, PgStore};
use posync_testkit::{DAY, Generator, grant_pg, posyandu, snapshot, user_for, visit_ids};
use std::collections::BTreeSet;

const PHONES_PER_POSYANDU: usize = 3;
const ROUNDS: usize = 4;
const VISITS_PER_ROUND: usize = 3;

/// One instance; `doc_cache_mib` bounds the documents it keeps loaded (0: none).
fn serve(database_url: &str, keys: &std::path::Path, doc_cache_mib: &str) -> common::Instance {
    let keys = keys.to_string_lossy();
    common::serve([
        "--pool-size",
        "4",
        "--database-url",
        database_url,
        "--keys",
        &keys,
        "--doc-cache-mib",
        doc_cache_mib,
    ])
}

struct Phone {
    replica: Replica,
    token: String,
    posyandu: PosyanduId,
    captured: BTreeSet<String>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_with_devices_alternating_converge_with_nothing_lost() {
    let Some(url) = posync_store::postgres::testing::fresh_schema("e2e_two_instances").await else { return };
    let dir = tempfile::tempdir().expect("dir");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let setup = PgStore::connect(&url).await.expect("connect");
    let places = [posyandu("mawar-01"), posyandu("mawar-02")];
    let mut phones = Vec::new();
    for (i, p) in places.iter().cycle().take(2 * PHONES_PER_POSYANDU).enumerate() {
        let replica = Replica::open(dir.path().join(format!("phone-{i}.sqlite"))).expect("replica");
        let device = replica.device();
        grant_pg(&setup, device, Role::Kader, std::slice::from_ref(p), now()).await;
        let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
        phones.push(Phone { replica, token, posyandu: p.clone(), captured: BTreeSet::new() });
    }
    let mut tablet = Replica::open(dir.path().join("tablet.sqlite")).expect("tablet");
    let tablet_device = tablet.device();
    grant_pg(&setup, tablet_device, Role::PuskesmasOfficer, &places, now()).await;
    let tablet_token = keys.issue(&user_for(tablet_device), tablet_device, Role::PuskesmasOfficer, now(), 3600).token;

    let instances = [serve(&url, &keys_path, "64"), serve(&url, &keys_path, "64")];
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();
    let mut g = Generator::new(77);
    let mut contested = 0;
    for round in 0..ROUNDS {
        for phone in &mut phones {
            let session = phone.replica.start_session(&phone.posyandu, DAY).expect("session");
            for k in 0..VISITS_PER_ROUND {
                let id = phone.replica.record_visit(session, g.child_visit(), (round * 10 + k) as i64).expect("record");
                phone.captured.insert(id.to_string());
            }
        }
        if round > 0 {
            // Phones 0 and 2 share mawar-01; once both hold one of its visits, each weighs
            // that child again, offline, differently.
            let session = DocId::for_session(&places[0], DAY);
            let held = |i: usize| -> BTreeSet<String> {
                phones[i].replica.visits(session).expect("visits").into_iter().map(|v| v.visit_id).collect()
            };
            let shared = held(0).intersection(&held(2)).next().cloned();
            if let Some(first) = shared {
                let first = first.parse().expect("visit id");
                for (i, grams) in [(0, 9_000 + round as i64), (2, 9_500 + round as i64)] {
                    phones[i]
                        .replica
                        .edit_visit(session, first, Field::WeightG, FieldValue::Int(grams), 100 + round as i64)
                        .expect("edit");
                }
                contested += 1;
            }
        }
        let mut tasks = Vec::new();
        for (i, mut phone) in phones.drain(..).enumerate() {
            let target = urls[(i + round) % 2].clone();
            tasks.push(tokio::spawn(async move {
                phone.replica.sync(&target, &phone.token).await.expect("sync");
                phone
            }));
        }
        for t in tasks {
            phones.push(t.await.expect("phone task"));
        }
    }
    // Settle: two more rounds, each phone to the other instance each time.
    for round in 0..2 {
        for (i, phone) in phones.iter_mut().enumerate() {
            phone.replica.sync(&urls[(i + round) % 2], &phone.token).await.expect("settle");
            assert!(phone.replica.outbox().expect("outbox").is_empty(), "everything acknowledged");
        }
    }
    tablet.sync(&urls[1], &tablet_token).await.expect("tablet pull");

    let captured: BTreeSet<String> = phones.iter().flat_map(|p| p.captured.iter().cloned()).collect();
    assert_eq!(captured.len(), 2 * PHONES_PER_POSYANDU * ROUNDS * VISITS_PER_ROUND);
    let on_tablet: BTreeSet<String> = visit_ids(&tablet).into_iter().collect();
    assert_eq!(on_tablet, captured, "the tablet holds every captured visit");
    for p in &places {
        let holders: Vec<&Phone> = phones.iter().filter(|ph| &ph.posyandu == p).collect();
        let first = snapshot(&holders[0].replica);
        for other in &holders[1..] {
            assert_eq!(snapshot(&other.replica), first, "phones of {p} converged");
        }
    }
    let stats = setup.stats().await.expect("stats");
    assert_eq!(stats.visits as usize, captured.len(), "every visit at the server exactly once");
    let scope = Scope::new(places.iter().cloned());
    let listed = setup.list(scope.clone()).await.expect("list");
    let max_seq = listed.iter().map(|m| m.seq).max().expect("documents");
    assert_eq!(max_seq, stats.feed_entries, "feed positions 1..=n with no gap");
    let conflicts = setup.conflicts(scope, ConflictFilter::default()).await.expect("conflicts");
    assert!(contested > 0, "the phones contested at least one weight");
    let weight = conflicts.iter().find(|c| c.field == "weight_g").expect("the contested weight is under review");
    let values: BTreeSet<String> = weight.values.iter().map(|v| format!("{:?}", v.value)).collect();
    assert!(values.len() >= 2, "both weights are kept: {values:?}");
    eprintln!(
        "2 instances, {} phones, {} visits, {contested} contested edits, {} feed entries",
        phones.len(),
        captured.len(),
        stats.feed_entries
    );
}

/// Sixteen phones push changes to ONE session document at the same moment, half through
/// each instance, ten times over. Every push is acknowledged, and the stored document
/// holds every change: no instance overwrote a merge the other made meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_merges_into_one_document_from_both_instances_lose_nothing() {
    const RACERS: usize = 16;
    const RACES: usize = 10;
    let Some(url) = posync_store::postgres::testing::fresh_schema("e2e_race_one_doc").await else { return };
    let dir = tempfile::tempdir().expect("dir");
    let keys_path = dir.path().join("keys.json");
    let keys = TokenKeys::generate(now());
    keys.save(&keys_path).expect("keys");
    let setup = PgStore::connect(&url).await.expect("connect");
    let place = posyandu("anggrek-01");
    let mut phones = Vec::new();
    for i in 0..RACERS {
        let replica = Replica::open(dir.path().join(format!("racer-{i}.sqlite"))).expect("replica");
        let device = replica.device();
        grant_pg(&setup, device, Role::Kader, std::slice::from_ref(&place), now()).await;
        let token = keys.issue(&user_for(device), device, Role::Kader, now(), 3600).token;
        phones.push(Phone { replica, token, posyandu: place.clone(), captured: BTreeSet::new() });
    }
    // One instance keeps documents loaded, the other none: every merge on the first must
    // notice what the second wrote.
    let instances = [serve(&url, &keys_path, "64"), serve(&url, &keys_path, "0")];
    let urls: Vec<String> = instances.iter().map(|i| i.url.clone()).collect();
    let session = DocId::for_session(&place, DAY);
    let mut g = Generator::new(5);
    for race in 0..RACES {
        for phone in &mut phones {
            let s = phone.replica.start_session(&phone.posyandu, DAY).expect("session");
            let id = phone.replica.record_visit(s, g.child_visit(), race as i64).expect("record");
            phone.captured.insert(id.to_string());
        }
        let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for (i, mut phone) in phones.drain(..).enumerate() {
            let target = urls[i % 2].clone();
            let barrier = barrier.clone();
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                phone.replica.sync(&target, &phone.token).await.expect("sync");
                phone
            }));
        }
        for t in tasks {
            let phone = t.await.expect("racer");
            assert!(phone.replica.outbox().expect("outbox").is_empty(), "race {race}: push acknowledged");
            phones.push(phone);
        }
    }
    let stored = setup.get(session).await.expect("get").expect("the session is stored");
    let am = automerge::Automerge::load(&stored.bytes).expect("stored bytes load");
    let at_server: BTreeSet<String> =
        posync_model::doc::visits(&am).expect("visits").into_iter().map(|v| v.visit_id.to_string()).collect();
    let captured: BTreeSet<String> = phones.iter().flat_map(|p| p.captured.iter().cloned()).collect();
    assert_eq!(captured.len(), RACERS * RACES);
    assert_eq!(at_server, captured, "every racer's every visit is in the one stored document");
    for phone in &phones {
        let local = phone.replica.doc(session).expect("local doc");
        for head in local.get_heads() {
            assert!(am.get_change_by_hash(&head).is_some(), "a racer's acknowledged head is in the stored document");
        }
    }
    let stats = setup.stats().await.expect("stats");
    assert_eq!(stored.meta.seq, stats.feed_entries, "the document's last change is the feed's last entry");
    eprintln!("{RACES} races of {RACERS} phones over 2 instances: {} visits in one document", at_server.len());
}

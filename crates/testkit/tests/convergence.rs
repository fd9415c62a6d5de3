//! Property: whatever the edits, on however many replicas, under whatever sync schedule —
//! including lost responses and duplicated requests — once everyone syncs, every replica and
//! the server hold the same documents, and every captured visit is there exactly once.

use posync_model::{Field, FieldValue, PosyanduId, Role};
use posync_proto::Limits;
use posync_replica::Replica;
use posync_server::SyncService;
use posync_store::SqliteStore;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, TestClock, principal, snapshot, sync_in_process, visit_ids};
use proptest::prelude::*;
use std::collections::BTreeSet;
use std::sync::Arc;

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    /// The server commits, the answer never arrives.
    DropResponse,
    /// The request arrives twice; the client applies both answers.
    Duplicate,
}

#[derive(Clone, Debug)]
enum Op {
    Record { replica: usize, day: u8 },
    Edit { replica: usize, pick: usize, weight_g: i64 },
    Sync { replica: usize, fault: Fault },
}

fn op(replicas: usize) -> impl Strategy<Value = Op> {
    let r = 0..replicas;
    prop_oneof![
        3 => (r.clone(), 0u8..2).prop_map(|(replica, day)| Op::Record { replica, day }),
        2 => (r.clone(), any::<usize>(), 2_000i64..20_000).prop_map(|(replica, pick, weight_g)| Op::Edit { replica, pick, weight_g }),
        3 => (r, prop_oneof![Just(Fault::None), Just(Fault::DropResponse), Just(Fault::Duplicate)])
            .prop_map(|(replica, fault)| Op::Sync { replica, fault }),
    ]
}

fn scenario() -> impl Strategy<Value = (usize, Vec<Op>, u64)> {
    (2usize..=4).prop_flat_map(|n| (Just(n), prop::collection::vec(op(n), 1..40), any::<u64>()))
}

async fn run(n: usize, ops: Vec<Op>, seed: u64) {
    let dir = tempfile::tempdir().expect("dir");
    let store = SqliteStore::open(dir.path().join("server.sqlite")).expect("store");
    let clock = TestClock::new(posync_testkit::DAY_START);
    // Small pages so paging is part of every schedule.
    let limits = Limits { page_bytes_max: 4 * 1024, push_docs_max: 1, ..Limits::default() };
    let service = SyncService::new(Arc::new(store.clone()), limits, clock.as_clock());
    let p: PosyanduId = "melati-01".parse().expect("id");
    let mut replicas: Vec<Replica> =
        (0..n).map(|i| Replica::open(dir.path().join(format!("r{i}.sqlite"))).expect("replica")).collect();
    let mut seeded = Generator::new(seed);
    let mut captured = BTreeSet::new();

    for op in ops {
        let now = clock.advance(7);
        match op {
            Op::Record { replica, day } => {
                let r = &mut replicas[replica];
                let date = DAY - time::Duration::days(i64::from(day) * 28);
                let session = r.start_session(&p, date).expect("session");
                captured.insert(r.record_visit(session, seeded.child_visit_on(date), now).expect("record").to_string());
            }
            Op::Edit { replica, pick, weight_g } => {
                let r = &mut replicas[replica];
                let visits = r.all_visits().expect("visits");
                if let Some(v) = visits.get(pick % visits.len().max(1)) {
                    let session = v.doc_id.parse().expect("doc id");
                    let visit = v.visit_id.parse().expect("visit id");
                    r.edit_visit(session, visit, Field::WeightG, FieldValue::Int(weight_g), now).expect("edit");
                }
            }
            Op::Sync { replica, fault } => {
                let r = &mut replicas[replica];
                let who = principal(r, Role::Kader, std::slice::from_ref(&p));
                match fault {
                    Fault::None => {
                        sync_in_process(&service, &who, r).await.expect("sync");
                    }
                    Fault::DropResponse => {
                        let req = r.prepare_sync(&limits).expect("prepare");
                        let _lost = service.handle(&who, req).await.expect("handled");
                    }
                    Fault::Duplicate => {
                        let req = r.prepare_sync(&limits).expect("prepare");
                        let first = service.handle(&who, req.clone()).await.expect("first");
                        let second = service.handle(&who, req).await.expect("second");
                        r.apply_response(&first).expect("apply first");
                        r.apply_response(&second).expect("apply second");
                    }
                }
            }
        }
    }

    // Everyone comes back in range: two full rounds so each replica sees the others' last pushes.
    for _ in 0..2 {
        for r in replicas.iter_mut() {
            let who = principal(r, Role::Kader, std::slice::from_ref(&p));
            sync_in_process(&service, &who, r).await.expect("final sync");
        }
    }
    let mut tablet = Replica::open(dir.path().join("tablet.sqlite")).expect("tablet");
    let who = principal(&tablet, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    sync_in_process(&service, &who, &mut tablet).await.expect("tablet pull");

    let expected = snapshot(&tablet);
    let ids: BTreeSet<String> = visit_ids(&tablet).into_iter().collect();
    assert_eq!(ids, captured, "every captured visit, exactly once, at the tablet");
    assert_eq!(store.stats().await.expect("stats").visits as usize, captured.len(), "server projection");
    for (i, r) in replicas.iter().enumerate() {
        assert_eq!(snapshot(r), expected, "replica {i} diverged");
        assert!(r.outbox().expect("outbox").is_empty(), "replica {i} has unacknowledged work");
    }
    for (doc, _, heads) in &expected {
        let stored = store.get(*doc).await.expect("get").expect("stored");
        assert_eq!(&stored.meta.heads.to_hex(), heads, "server heads for {doc}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_schedule_converges_and_loses_nothing((n, ops, seed) in scenario()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        rt.block_on(run(n, ops, seed));
    }
}

//! Deterministic simulation: replicas, the sync service and a lossy network in one process,
//! no sockets, with time and every random choice drawn from one seed. Each seed is a whole
//! schedule: phones capture, edit, re-scope-free sync through a network that drops requests,
//! drops answers, duplicates requests and reorders (delays) answers; then the network heals.
//! Requests are shaped as on a 2G link (random push and page budgets, documents sent as
//! their first changes, probes after a lost answer, pushes without a pull), and the link
//! loses every request larger than its byte budget.
//! Every schedule must end with all replicas identical to each other and to the server, and
//! every captured visit present exactly once.
//!
//! `POSYNC_SIM_SEEDS=N` runs N schedules (default 1000); a failure prints its seed, and
//! `POSYNC_SIM_SEED=S` replays just that one.

use posync_model::{DocId, Field, FieldValue, PosyanduId, Role};
use posync_proto::{Limits, SyncResponse};
use posync_replica::{Replica, RoundPlan};
use posync_server::SyncService;
use posync_store::SqliteStore;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, TestClock, principal, snapshot, sync_in_process, visit_ids};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeSet;
use std::sync::Arc;

/// One schedule. Returns a description of the first broken invariant, if any.
async fn schedule(seed: u64, dir: &std::path::Path) -> Result<(), String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let store = SqliteStore::open(dir.join(format!("server-{seed}.sqlite"))).map_err(|e| e.to_string())?;
    let clock = TestClock::new(posync_testkit::DAY_START);
    let limits = Limits { page_bytes_max: 4 * 1024, push_docs_max: rng.random_range(1..4), ..Limits::default() };
    let service = SyncService::new(Arc::new(store.clone()), limits, clock.as_clock());
    let p: PosyanduId = "sim".parse().map_err(|_| "id")?;
    let n = rng.random_range(2..=4);
    let mut replicas: Vec<Replica> =
        (0..n).map(|_| Replica::open(":memory:").map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    let mut g = Generator::new(seed);
    let mut captured = BTreeSet::new();
    // Answers the network holds back, delivered later (reordering), per replica.
    let mut delayed: Vec<Vec<SyncResponse>> = vec![Vec::new(); n];

    for _ in 0..rng.random_range(5..30) {
        clock.advance(rng.random_range(1..120));
        let r = rng.random_range(0..n);
        match rng.random_range(0..10) {
            0..=2 => {
                let date = DAY - time::Duration::days(rng.random_range(0..2) * 28);
                let session: DocId = replicas[r].start_session(&p, date).map_err(|e| e.to_string())?;
                let id = replicas[r]
                    .record_visit(session, g.child_visit_on(date), clock.now())
                    .map_err(|e| e.to_string())?;
                captured.insert(id.to_string());
            }
            3 | 4 => {
                let visits = replicas[r].all_visits().map_err(|e| e.to_string())?;
                if !visits.is_empty() {
                    let v = &visits[rng.random_range(0..visits.len())];
                    let (doc, id) = (v.doc_id.parse().map_err(|_| "doc")?, v.visit_id.parse().map_err(|_| "visit")?);
                    let w = FieldValue::Int(rng.random_range(3_000..20_000));
                    replicas[r].edit_visit(doc, id, Field::WeightG, w, clock.now()).map_err(|e| e.to_string())?;
                }
            }
            _ => {
                let who = principal(&replicas[r], Role::Kader, std::slice::from_ref(&p));
                let plan = if rng.random_bool(0.4) {
                    RoundPlan::whole(&limits)
                } else {
                    RoundPlan {
                        push_bytes_max: rng.random_range(1..8 * 1024),
                        page_bytes_max: Some(rng.random_range(1024..64 * 1024)),
                        pull: rng.random_bool(0.7),
                        pieces: rng.random_bool(0.7),
                    }
                };
                let req = replicas[r].prepare_round(&limits, &plan).map_err(|e| e.to_string())?;
                // Sometimes only ask what committed of it, as after a lost answer.
                let req = if rng.random_bool(0.2) { posync_replica::probe_of(&req) } else { req };
                let fate = rng.random_range(0..10);
                if fate == 0 {
                    continue; // request lost on the way
                }
                // The link drops any connection that carries more than its budget.
                let link_bytes = rng.random_range(1_000..40_000);
                if req.push.iter().map(|d| d.changes.len()).sum::<usize>() > link_bytes {
                    continue;
                }
                let resp = match service.handle(&who, req.clone()).await {
                    Ok(resp) => resp,
                    // Refusals (missing dependencies after a lost answer) are retried by the
                    // heal phase's client loop; the network phase just moves on.
                    Err(_) => continue,
                };
                if fate == 1 {
                    let _ = service.handle(&who, req).await; // duplicated by the network
                }
                match fate {
                    2 => {} // answer lost
                    3 => delayed[r].push(resp),
                    _ => {
                        replicas[r].apply_response(&resp).map_err(|e| e.to_string())?;
                    }
                }
                // Sometimes a held-back answer arrives now, after newer ones.
                if rng.random_bool(0.3)
                    && let Some(old) = delayed[r].pop()
                {
                    replicas[r].apply_response(&old).map_err(|e| e.to_string())?;
                }
            }
        }
    }

    // The network heals: everyone syncs until nothing moves.
    for _ in 0..3 {
        for r in &mut replicas {
            let who = principal(r, Role::Kader, std::slice::from_ref(&p));
            sync_in_process(&service, &who, r).await.map_err(|e| format!("heal: {e}"))?;
        }
    }
    let at_server = store.stats().await.map_err(|e| e.to_string())?;
    if at_server.visits as usize != captured.len() {
        return Err(format!("server holds {} visits, {} captured", at_server.visits, captured.len()));
    }
    let first = snapshot(&replicas[0]);
    for (i, r) in replicas.iter().enumerate() {
        let held: BTreeSet<String> = visit_ids(r).into_iter().collect();
        if held != captured {
            return Err(format!("replica {i} holds {} of {} visits", held.len(), captured.len()));
        }
        if snapshot(r) != first {
            return Err(format!("replica {i} differs from replica 0"));
        }
    }
    Ok(())
}

#[tokio::test(flavor = "current_thread")]
async fn every_seeded_schedule_converges_with_nothing_lost() {
    let seeds: Vec<u64> = match std::env::var("POSYNC_SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        Some(one) => vec![one],
        None => {
            let n = std::env::var("POSYNC_SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(1000u64);
            (0..n).collect()
        }
    };
    // Memory-backed when the machine has it: the simulation is about schedules, not fsyncs.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.expect("dir");
    let started = std::time::Instant::now();
    for seed in &seeds {
        if let Err(e) = schedule(*seed, dir.path()).await {
            panic!(
                "schedule {seed} failed: {e}\nreplay: POSYNC_SIM_SEED={seed} cargo test -p posync-testkit --test simulation"
            );
        }
        let _ = std::fs::remove_file(dir.path().join(format!("server-{seed}.sqlite")));
    }
    eprintln!("{} schedules converged in {:.1} s", seeds.len(), started.elapsed().as_secs_f64());
}

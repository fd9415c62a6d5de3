//! The device budget (issue #17): a phone keeps the sessions of the current month and the
//! months of its window, drops older ones once the server holds all of them, tells the
//! server, and takes one back on demand. Nothing unsynced is ever dropped.

use posync_model::{DocId, Field, FieldValue, PosyanduId, VisitId};
use posync_replica::{HttpSync, Replica};
use posync_testkit::{Generator, Phone, TestServer, posyandu};
use time::{Date, Month};

const WINDOW_MONTHS: u32 = 2;
const VISITS_PER_SESSION: usize = 60;

/// The posyandu's session day in month `m` (0 = January 2026).
fn session_day(m: u32) -> Date {
    let month = Month::try_from(1 + (m % 12) as u8).expect("month");
    Date::from_calendar_date(2026 + (m / 12) as i32, month, 10).expect("date")
}

fn capture_month(phone: &mut Phone, p: &PosyanduId, m: u32, g: &mut Generator) -> (DocId, Vec<VisitId>) {
    let day = session_day(m);
    let session = phone.replica.start_session(p, day).expect("session");
    let ids = (0..VISITS_PER_SESSION)
        .map(|i| phone.replica.record_visit(session, g.child_visit_on(day), i as i64).expect("capture"))
        .collect();
    (session, ids)
}

async fn sync_on(phone: &mut Phone, server: &TestServer, today: Date) -> posync_replica::SyncReport {
    HttpSync::new(&server.url(), &phone.token).with_today(today).sync(&mut phone.replica).await.expect("sync")
}

fn held_sessions(replica: &Replica) -> usize {
    replica.doc_ids().expect("docs").len()
}

/// A kader's year, one session a month, on a phone that keeps two months back. The phone is
/// offline through April: March's session stays on it, unsynced, until it has been pushed,
/// however old it gets. The storage the replica takes stops growing once the window is full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_year_of_sessions_stays_within_the_window_and_nothing_unsynced_is_dropped() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    phone.replica.set_window_months(Some(WINDOW_MONTHS)).expect("window");
    let mut g = Generator::new(17);
    let mut sessions = Vec::new();
    let mut storage = Vec::new();
    for m in 0..12 {
        let today = session_day(m);
        let (session, _) = capture_month(&mut phone, &p, m, &mut g);
        sessions.push(session);
        if (3..7).contains(&m) {
            // No signal from March to June: the app still trims, and must keep March.
            let trimmed = phone.replica.trim_window(today).expect("trim offline");
            assert!(phone.replica.visits(sessions[3]).expect("march").len() == VISITS_PER_SESSION);
            if m >= 6 {
                assert!(trimmed.kept_unsynced >= 1, "March is older than the window but unsynced");
            }
            phone.replica.checkpoint().expect("checkpoint");
            storage.push(phone.replica.storage_bytes());
            continue;
        }
        let report = sync_on(&mut phone, &server, today).await;
        assert!(report.rejected.is_empty(), "month {m}: {report:?}");
        phone.replica.checkpoint().expect("checkpoint");
        storage.push(phone.replica.storage_bytes());
        // In August, March and April were pushed by this sync (they were unsynced when it
        // began): they go at the next.
        let late = if m == 7 { 2 } else { 0 };
        assert!(
            held_sessions(&phone.replica) <= WINDOW_MONTHS as usize + 1 + late,
            "month {m}: {} sessions held",
            held_sessions(&phone.replica)
        );
    }
    // Every session reached the server, March's too.
    for (m, s) in sessions.iter().enumerate() {
        let stored = server.store_arc().get(*s).await.expect("get").expect("at the server");
        let am = automerge::Automerge::load(&stored.bytes).expect("load");
        assert_eq!(posync_model::doc::visits(&am).expect("visits").len(), VISITS_PER_SESSION, "month {m}");
    }
    // What is held now: the window (October to December), no older session.
    let held: Vec<DocId> = phone.replica.doc_ids().expect("docs");
    assert_eq!(held.len(), WINDOW_MONTHS as usize + 1);
    assert!(held.iter().all(|d| sessions[9..].contains(d)));
    // Once the window is full again (September on) the storage stops growing, and stays
    // well below that of a phone without a window, which holds all twelve sessions.
    let settled = storage[8];
    assert!(storage[8..].iter().all(|s| *s <= settled * 11 / 10), "storage grew past the window: {storage:?}");
    let q = posyandu("mawar-02");
    let mut keeps_all = Phone::kader(&server, &q);
    let mut g = Generator::new(17);
    for m in 0..12 {
        capture_month(&mut keeps_all, &q, m, &mut g);
        sync_on(&mut keeps_all, &server, session_day(m)).await;
    }
    keeps_all.replica.checkpoint().expect("checkpoint");
    let all = keeps_all.replica.storage_bytes();
    assert!(settled * 3 / 2 <= all, "window {settled} B against {all} B for the whole year: {storage:?}");
}

/// A colleague edits a session this phone dropped: it comes back whole in one pull, not as
/// changes the phone cannot apply (which would make it pull everything again). And a session
/// asked for by id comes back on demand, as the server holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_session_comes_back_whole_when_changed_and_on_demand() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut phone = Phone::kader(&server, &p);
    phone.replica.set_window_months(Some(WINDOW_MONTHS)).expect("window");
    let mut colleague = Phone::kader(&server, &p);
    let mut g = Generator::new(18);
    let mut sessions = Vec::new();
    for m in 0..6 {
        let (session, ids) = capture_month(&mut phone, &p, m, &mut g);
        sessions.push((session, ids));
        sync_on(&mut phone, &server, session_day(m)).await;
    }
    let (january, january_visits) = sessions[0].clone();
    assert!(!phone.replica.doc_ids().expect("docs").contains(&january), "January left the phone");
    // The colleague's phone keeps everything and corrects a weight in January.
    sync_on(&mut colleague, &server, session_day(5)).await;
    let visit = january_visits[7];
    colleague.replica.edit_visit(january, visit, Field::WeightG, FieldValue::Int(12_345), 1_000).expect("edit");
    sync_on(&mut colleague, &server, session_day(5)).await;

    let report = sync_on(&mut phone, &server, session_day(5)).await;
    assert_eq!(report.pulled_docs, 1, "only January, whole, not a pull of everything again: {report:?}");
    let row = phone.replica.visits(january).expect("visits").into_iter().find(|r| r.visit_id == visit.to_string());
    assert_eq!(row.and_then(|r| r.weight_g), Some(12_345), "the colleague's correction is on the phone");

    // February was dropped too; the kader opens it again.
    let february = sessions[1].0;
    assert!(!phone.replica.doc_ids().expect("docs").contains(&february));
    let client = HttpSync::new(&server.url(), &phone.token).with_today(session_day(5));
    client.fetch(&mut phone.replica, february).await.expect("fetch on demand");
    assert_eq!(phone.replica.visits(february).expect("visits").len(), VISITS_PER_SESSION);
    assert!(phone.replica.outbox().expect("outbox").is_empty(), "fetched as the server holds it");
    // A session of another posyandu is not the phone's to fetch.
    let elsewhere = DocId::for_session(&posyandu("mawar-02"), session_day(1));
    assert!(client.fetch(&mut phone.replica, elsewhere).await.is_err());
}

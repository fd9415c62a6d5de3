//! A kader on a rural 2G link (issue #13): answers lost or cut, connections that drop after a
//! few KB, requests never answered. Each test drives the real client and server through the
//! project's fault proxy on 127.0.0.1 and shows that an honest kader gets through.

use posync_proto::Limits;
use posync_replica::{Replica, ReplicaError, enrol};
use posync_testkit::faults::{Fault, FaultProxy};
use posync_testkit::{console, district_server};

#[tokio::test]
async fn an_enrolment_whose_answer_is_lost_succeeds_when_retried_with_the_same_code() {
    let (server, admin) = district_server(Limits::default()).await;
    // The server enrols the device and answers; the answer never reaches the phone.
    let proxy = FaultProxy::scripted(server.addr(), vec![Fault::DropResponse]).await.expect("proxy");
    let code =
        admin.issue_enrolment(&console(), "kader-0001".parse().expect("id"), server.clock.now()).await.expect("code");
    let dir = tempfile::tempdir().expect("dir");
    let mut phone = Replica::open(dir.path().join("phone.sqlite")).expect("open");
    let answer = enrol(&proxy.url(), &code.code, "HP Euis", &mut phone).await.expect("enrolled after a lost answer");
    assert_eq!(answer.user.as_str(), "kader-0001");
    assert!(proxy.counts.requests.load(std::sync::atomic::Ordering::Relaxed) >= 2, "it took a retry");
    phone.sync_enrolled(&proxy.url()).await.expect("the credential works");

    // The code still belongs to that one phone: another device is refused, and says so as an
    // enrolment failure, not a sync one.
    let mut other = Replica::open(dir.path().join("other.sqlite")).expect("open");
    let refused = enrol(&server.url(), &code.code, "", &mut other).await;
    match &refused {
        Err(ReplicaError::Enrolment(inner)) => assert!(
            matches!(**inner, ReplicaError::Server { code: posync_proto::ErrorCode::InvalidCredential, .. }),
            "{inner:?}"
        ),
        other => panic!("expected an enrolment failure, got {other:?}"),
    }
    let message = refused.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(message.starts_with("enrolment failed") && !message.contains("sync"), "{message}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_made_while_a_sync_runs_on_the_same_phone_are_all_saved() {
    use posync_testkit::faults::Link;
    use posync_testkit::{DAY, Generator, enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let path = dir.path().join("kader-0001.sqlite");
    let melati = posyandu("pos-hegarsari-melati-1");
    let session = kader.start_session(&melati, DAY).expect("session");
    // A slow link keeps every sync long.
    let link = Link { bytes_per_second: 40_000, latency_ms: 50, drop_after_bytes: 0, loss_rate: 0.0 };
    let proxy = FaultProxy::link(server.addr(), link, 1).await.expect("proxy");
    let url = proxy.url();
    let syncing = {
        let path = path.clone();
        tokio::spawn(async move {
            let mut phone = Replica::open(&path).expect("open");
            let mut runs = 0;
            for _ in 0..15 {
                match phone.sync_enrolled(&url).await {
                    Ok(_) => runs += 1,
                    Err(e) => panic!("sync: {e}"),
                }
            }
            runs
        })
    };
    let capturing = {
        let path = path.clone();
        std::thread::spawn(move || {
            let mut phone = Replica::open(&path).expect("open");
            let mut g = Generator::new(7);
            let mut failed = Vec::new();
            for i in 0..120 {
                if let Err(e) = phone.record_visit(session, g.child_visit(), i) {
                    failed.push(e.to_string());
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            failed
        })
    };
    let failed = capturing.join().expect("capture thread");
    assert!(failed.is_empty(), "{} of 120 captures failed during syncs: {:?}", failed.len(), failed.first());
    assert_eq!(syncing.await.expect("sync task"), 15);
    // Two syncs of one replica at once: the second says so instead of racing the first.
    let lock = kader.try_sync_lock().expect("lock").expect("free");
    let second = Replica::open(&path).expect("open").sync_enrolled(&server.url()).await;
    assert!(matches!(second, Err(ReplicaError::AlreadySyncing)), "{second:?}");
    drop(lock);
    kader.sync_enrolled(&server.url()).await.expect("final sync");
    assert_eq!(kader.visits(session).expect("visits").len(), 120);
    assert_eq!(
        posync_store::SyncStore::stats(&server.store).await.expect("stats").visits,
        120,
        "every capture reached the server"
    );
    server.stop().await;
}

/// Quick retries, so the tests spend their time on the link, not in backoff.
const FAST: posync_replica::RetryPolicy = posync_replica::RetryPolicy { retries: 4, base_ms: 1, max_ms: 5 };

#[tokio::test]
async fn a_sync_that_starts_with_a_token_refresh_survives_a_lost_refresh() {
    use posync_testkit::{DAY, Generator, enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let session = kader.start_session(&posyandu("pos-hegarsari-melati-1"), DAY).expect("session");
    kader.record_visit(session, Generator::new(1).child_visit(), 1).expect("record");
    // The access token has expired: the sync begins with a refresh, which the link loses.
    let mut cred = kader.credential().expect("read").expect("enrolled");
    cred.access = None;
    kader.save_credential(&cred).expect("save");
    let proxy =
        FaultProxy::scripted(server.addr(), vec![Fault::DropRequest, Fault::DropResponse]).await.expect("proxy");
    let report =
        posync_replica::HttpSync::enrolled(&proxy.url()).with_retry(FAST).sync(&mut kader).await.expect("sync");
    assert_eq!(report.pushed_docs, 1);
    assert!(kader.outbox().expect("outbox").is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_multi_page_pull_losing_a_request_every_round_completes() {
    use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu};
    let server = TestServer::start_with(Limits { page_bytes_max: 4 * 1024, ..Limits::default() }).await;
    let p = posyandu("melati-01");
    let mut kader = Phone::kader(&server, &p);
    let mut g = Generator::new(2);
    for d in 0..30 {
        let on = DAY - time::Duration::days(7 * d);
        let session = kader.replica.start_session(&p, on).expect("session");
        for i in 0..4 {
            kader.replica.record_visit(session, g.child_visit_on(on), i).expect("record");
        }
    }
    kader.sync(&server).await;
    // A tablet pulls page after page; the first attempt of every round is lost.
    let mut tablet = Phone::new(&server, posync_model::Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let script: Vec<Fault> = (0..40).flat_map(|_| [Fault::DropRequest, Fault::Pass]).collect();
    let proxy = FaultProxy::scripted(server.addr(), script).await.expect("proxy");
    let report = posync_replica::HttpSync::new(&proxy.url(), &tablet.token)
        .with_retry(FAST)
        .sync(&mut tablet.replica)
        .await
        .expect("the pull completes: each round has its own retries");
    assert!(report.retries > FAST.retries, "more losses in the run than one round's allowance: {report:?}");
    assert_eq!(tablet.replica.all_visits().expect("visits").len(), 120);
    server.stop().await;
}

#[tokio::test]
async fn a_request_never_answered_is_given_up_on_when_the_link_stalls_not_after_two_minutes() {
    use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu};
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut kader = Phone::kader(&server, &p);
    let session = kader.replica.start_session(&p, DAY).expect("session");
    kader.replica.record_visit(session, Generator::new(3).child_visit(), 1).expect("record");
    let proxy = FaultProxy::scripted(server.addr(), vec![Fault::Stall(120_000)]).await.expect("proxy");
    let client = posync_replica::HttpSync::new(&proxy.url(), &kader.token)
        .with_retry(FAST)
        .with_stall_timeout(std::time::Duration::from_secs(2));
    let done = tokio::time::timeout(std::time::Duration::from_secs(30), client.sync(&mut kader.replica)).await;
    let report = done.expect("gave up on the stalled request and retried, well within 30 s").expect("sync");
    assert_eq!((report.retries, report.pushed_docs), (1, 1));

    // And a whole run is bounded: a link that never answers ends the run at its deadline,
    // keeping what it did.
    kader.replica.record_visit(session, Generator::new(4).child_visit(), 2).expect("record");
    let dead = FaultProxy::scripted(server.addr(), vec![Fault::Stall(120_000); 20]).await.expect("proxy");
    let client = posync_replica::HttpSync::new(&dead.url(), &kader.token)
        .with_retry(posync_replica::RetryPolicy { retries: 50, base_ms: 1, max_ms: 5 })
        .with_stall_timeout(std::time::Duration::from_secs(5))
        .with_run_deadline(std::time::Duration::from_secs(2));
    let ended = tokio::time::timeout(std::time::Duration::from_secs(30), client.sync(&mut kader.replica)).await;
    assert!(matches!(ended, Ok(Err(ReplicaError::DeadlineExceeded(_)))), "{ended:?}");
    assert_eq!(kader.replica.outbox().expect("outbox").len(), 1, "the capture waits for the next run");
    server.stop().await;
}

/// An enrolled phone's client through `proxy`, its retries fast (the test's clock is real).
fn phone_through(proxy: &FaultProxy) -> posync_replica::HttpSync {
    posync_replica::HttpSync::enrolled(&proxy.url()).with_retry(posync_replica::RetryPolicy {
        retries: 8,
        base_ms: 1,
        max_ms: 5,
    })
}

/// A 2G link: slow, with a connection that drops after `drop_after` bytes either way.
fn two_g(drop_after: usize) -> posync_testkit::faults::Link {
    posync_testkit::faults::Link {
        bytes_per_second: 200_000,
        latency_ms: 5,
        drop_after_bytes: drop_after,
        loss_rate: 0.0,
    }
}

/// `n` sessions of `visits` visits each on the phone, none synced.
fn capture_sessions(phone: &mut Replica, p: &posync_model::PosyanduId, n: i64, visits: i64, seed: u64) -> usize {
    let mut g = posync_testkit::Generator::new(seed);
    for d in 0..n {
        let on = posync_testkit::DAY - time::Duration::days(7 * d);
        let session = phone.start_session(p, on).expect("session");
        for i in 0..visits {
            phone.record_visit(session, g.child_visit_on(on), i).expect("record");
        }
    }
    (n * visits) as usize
}

async fn stored_visits(server: &posync_testkit::TestServer) -> u64 {
    posync_store::SyncStore::stats(&server.store).await.expect("stats").visits
}

#[tokio::test]
async fn an_outbox_larger_than_the_link_takes_at_once_gets_through_in_pieces() {
    use posync_testkit::{enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let expected = capture_sessions(&mut kader, &posyandu("pos-hegarsari-melati-1"), 4, 12, 1);
    let sizes: Vec<usize> =
        kader.prepare_sync(&Limits::default()).expect("prepare").push.iter().map(|p| p.changes.len()).collect();
    assert!(sizes.iter().all(|s| *s > 1200), "documents of about 1.5 KB each: {sizes:?}");
    // Every connection drops after 2 KB, headers included.
    let proxy = FaultProxy::link(server.addr(), two_g(2048), 1).await.expect("proxy");
    let client = phone_through(&proxy);
    let report = client.sync(&mut kader).await.expect("the outbox gets through");
    assert!(kader.outbox().expect("outbox").is_empty(), "{report:?}");
    assert_eq!(stored_visits(&server).await, expected as u64, "every visit at the server");
    let learnt = kader.link_budgets(&Limits::default()).expect("budgets");
    let start = posync_replica::RoundPlan::start(&Limits::default());
    assert!(learnt.push_bytes_max < start.push_bytes_max / 8, "the phone remembers its link: {learnt:?}");
    server.stop().await;
}

#[tokio::test]
async fn answers_cut_short_do_not_make_the_phone_upload_its_outbox_again() {
    use posync_testkit::{enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let melati = posyandu("pos-hegarsari-melati-1");
    // A colleague's records make the first pull's answer long.
    let mut colleague = enrolled(&server, &admin, "kader-0002", &dir).await;
    capture_sessions(&mut colleague, &melati, 6, 8, 2);
    colleague.sync_enrolled(&server.url()).await.expect("sync");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let mine = capture_sessions(&mut kader, &melati, 1, 10, 3);
    let outbox_bytes: u64 =
        kader.prepare_sync(&Limits::default()).expect("prepare").push.iter().map(|p| p.changes.len() as u64).sum();
    // Every answer (and request) is cut after 4 KB.
    let proxy = FaultProxy::link(server.addr(), two_g(4096), 2).await.expect("proxy");
    let client = phone_through(&proxy);
    client.sync(&mut kader).await.expect("the sync completes");
    assert!(kader.outbox().expect("outbox").is_empty());
    assert_eq!(stored_visits(&server).await, (48 + mine) as u64);
    assert_eq!(kader.all_visits().expect("visits").len(), 48 + mine, "and it pulled everything");
    let up = proxy.counts.bytes_up.load(std::sync::atomic::Ordering::Relaxed);
    // Requests carry headers (the bearer token alone is ~500 bytes) on every round; the
    // changes themselves go up once, not on every attempt.
    assert!(up < outbox_bytes * 2 + 40_000, "{up} bytes up for {outbox_bytes} bytes of changes");
    server.stop().await;
}

#[tokio::test]
async fn a_new_tablet_whose_answers_are_cut_at_6_kb_completes_its_first_pull() {
    use posync_testkit::{enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let expected = capture_sessions(&mut kader, &posyandu("pos-hegarsari-melati-1"), 12, 8, 4);
    kader.sync_enrolled(&server.url()).await.expect("sync");
    let mut tablet = enrolled(&server, &admin, "bidan-0001", &dir).await;
    let proxy = FaultProxy::link(server.addr(), two_g(6 * 1024), 3).await.expect("proxy");
    let client = phone_through(&proxy);
    let report = client.sync(&mut tablet).await.expect("the first pull completes");
    assert_eq!(tablet.all_visits().expect("visits").len(), expected, "{report:?}");
    server.stop().await;
}

/// A busy posyandu day is one document of tens of KB; a link that cuts every answer after
/// 4 KB can never carry it whole. The server sends it in pieces, each reported by the tablet
/// before the next.
#[tokio::test]
async fn a_new_tablet_pulls_a_session_larger_than_any_answer_the_link_carries() {
    use posync_testkit::{enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let melati = posyandu("pos-hegarsari-melati-1");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let expected = capture_sessions(&mut kader, &melati, 1, 60, 5);
    kader.sync_enrolled(&server.url()).await.expect("sync");
    let mut tablet = enrolled(&server, &admin, "bidan-0001", &dir).await;
    let proxy = FaultProxy::link(server.addr(), two_g(4096), 6).await.expect("proxy");
    let client = phone_through(&proxy);
    let report = client.sync(&mut tablet).await.expect("the first pull completes");
    assert_eq!(tablet.all_visits().expect("visits").len(), expected, "{report:?}");
    let down = proxy.counts.bytes_down.load(std::sync::atomic::Ordering::Relaxed);
    assert!(report.rounds > 4, "the session came in pieces: {report:?}, {down} bytes down");
    assert!(tablet.outbox().expect("outbox").is_empty(), "reporting pieces leaves nothing to push");
    server.stop().await;
}

/// A puskesmas tablet on a link that dies a few requests in: today's session (the newest
/// entry of the feed, so the last of a pull in feed order) is what it must already hold.
#[tokio::test]
async fn a_link_that_dies_early_has_already_carried_todays_session() {
    use posync_testkit::{DAY, Generator, enrolled, posyandu};
    let (server, admin) = district_server(Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let melati = posyandu("pos-hegarsari-melati-1");
    // Twelve earlier weeks of a colleague's sessions, then today's session.
    let mut colleague = enrolled(&server, &admin, "kader-0002", &dir).await;
    let mut g = Generator::new(7);
    for week in 1..=12 {
        let on = DAY - time::Duration::days(7 * week);
        let session = colleague.start_session(&melati, on).expect("session");
        for i in 0..8 {
            colleague.record_visit(session, g.child_visit_on(on), i).expect("record");
        }
    }
    colleague.sync_enrolled(&server.url()).await.expect("sync the history");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let today = kader.start_session(&melati, DAY).expect("today's session");
    for i in 0..10 {
        kader.record_visit(today, g.child_visit_on(DAY), i).expect("record");
    }
    kader.sync_enrolled(&server.url()).await.expect("sync today");

    let mut tablet = enrolled(&server, &admin, "bidan-0001", &dir).await;
    // A tablet that has learnt its link takes small pages; this link carries three requests.
    let small = posync_replica::RoundPlan {
        page_bytes_max: Some(2048),
        ..posync_replica::RoundPlan::start(&Limits::default())
    };
    tablet.save_link_budgets(&small).expect("budgets");
    let mut script = vec![Fault::Pass; 3];
    script.extend(vec![Fault::DropRequest; 50]);
    let proxy = FaultProxy::scripted(server.addr(), script).await.expect("proxy");
    let client = posync_replica::HttpSync::enrolled(&proxy.url()).with_retry(posync_replica::RetryPolicy {
        retries: 1,
        base_ms: 1,
        max_ms: 2,
    });
    let outcome = client.sync(&mut tablet).await;
    assert!(outcome.is_err(), "the link died before the pull could end: {outcome:?}");
    let held = tablet.all_visits().expect("visits");
    let of_today = held.iter().filter(|v| v.session_date == DAY.to_string()).count();
    assert_eq!(of_today, 10, "today's session came first ({} visits held in all)", held.len());
    assert!(held.len() < 96 + 10, "the older records were still on their way: {}", held.len());
    server.stop().await;
}

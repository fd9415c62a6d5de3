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

//! HTTPS end to end with the real binary: `posync serve --tls-cert --tls-key` terminates TLS
//! itself (rustls), with a certificate from a puskesmas's own CA generated here; a phone
//! syncs over it when told to trust that CA (`--ca-file`), and without it, or with another
//! CA, it is refused with a clear TLS error, not a generic network one.

mod common;

use posync_model::Role;
use posync_replica::{HttpSync, Replica, ReplicaError};
use posync_testkit::{DAY, Generator, posyandu, visit_ids};
use std::ffi::OsStr;
use std::path::Path;
use std::process::Command;

/// A CA and a certificate it signed for 127.0.0.1 and localhost: (CA PEM, cert PEM, key PEM).
fn puskesmas_ca_and_server_cert() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().expect("CA key");
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name.push(rcgen::DnType::CommonName, "Puskesmas Hegarsari test CA");
    let ca_cert = ca.self_signed(&ca_key).expect("CA cert");
    let key = rcgen::KeyPair::generate().expect("server key");
    let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).expect("params");
    params.subject_alt_names.push(rcgen::SanType::IpAddress("127.0.0.1".parse().expect("ip")));
    let cert = params.signed_by(&key, &ca_cert, &ca_key).expect("server cert");
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write");
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_syncs_over_https_trusting_the_puskesmas_ca_and_no_other() {
    let dir = tempfile::tempdir().expect("dir");
    let (ca_pem, cert_pem, key_pem) = puskesmas_ca_and_server_cert();
    let (other_ca_pem, _, _) = puskesmas_ca_and_server_cert();
    let (cert, key) = (write(dir.path(), "server.pem", &cert_pem), write(dir.path(), "server.key", &key_pem));
    let ca_file = write(dir.path(), "ca.pem", &ca_pem);
    let site = common::Site::new(dir.path());
    let p = posyandu("tls-melati");
    let mut phone = Replica::open(dir.path().join("phone.sqlite")).expect("replica");
    let token = site.grant(phone.device(), Role::Kader, std::slice::from_ref(&p));
    let session = phone.start_session(&p, DAY).expect("session");
    let visit = phone.record_visit(session, Generator::new(443).child_visit(), 1).expect("record").to_string();

    let server = site.serve(&[OsStr::new("--tls-cert"), cert.as_os_str(), OsStr::new("--tls-key"), key.as_os_str()]);
    assert!(server.url.starts_with("https://127.0.0.1:"), "serves HTTPS: {}", server.url);

    // Not trusting the puskesmas CA, or trusting another one: a TLS error, nothing sent.
    for client in [
        HttpSync::new(&server.url, &token),
        HttpSync::new(&server.url, &token).with_ca_pem(other_ca_pem.as_bytes()).expect("other CA parses"),
    ] {
        match client.sync(&mut phone).await {
            Err(ReplicaError::Tls(reason)) => {
                assert!(reason.to_lowercase().contains("certificate"), "says why: {reason}")
            }
            other => panic!("an untrusted server certificate is a TLS error, got {other:?}"),
        }
        assert!(!phone.outbox().expect("outbox").is_empty(), "nothing was acknowledged");
    }
    assert!(matches!(
        HttpSync::new(&server.url, &token).with_ca_pem(b"not a certificate"),
        Err(ReplicaError::BadCaFile(_))
    ));

    // The kader's CLI with --ca-file: synced over HTTPS.
    let bin = env!("CARGO_BIN_EXE_posync");
    drop(phone);
    let replica = dir.path().join("phone.sqlite");
    let refused = Command::new(bin)
        .args(["kader", "sync", "--server", &server.url, "--token", &token, "--replica"])
        .arg(&replica)
        .output()
        .expect("run posync");
    assert!(!refused.status.success(), "without the CA the sync fails");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("TLS") && said.contains("certificate"), "and says it is the certificate: {said}");
    assert!(said.contains("--ca-file"), "and what to do: {said}");
    let synced = Command::new(bin)
        .args(["kader", "sync", "--server", &server.url, "--token", &token, "--ca-file"])
        .arg(&ca_file)
        .arg("--replica")
        .arg(&replica)
        .output()
        .expect("run posync");
    assert!(synced.status.success(), "synced: {}", String::from_utf8_lossy(&synced.stderr));
    let phone = Replica::open(&replica).expect("replica");
    assert!(phone.outbox().expect("outbox").is_empty(), "the visit was acknowledged");
    assert!(visit_ids(&phone).contains(&visit));
    drop(server);
    let conn = rusqlite::Connection::open(&site.db).expect("db");
    let at_server: i64 =
        conn.query_row("SELECT COUNT(*) FROM visits WHERE visit_id = ?1", [&visit], |r| r.get(0)).expect("count");
    assert_eq!(at_server, 1, "the visit is at the server, once");
}

//! A replica encrypted with SQLCipher: the file (and its write-ahead log) gives nothing away
//! without the key, the right key reads every visit back, and a wrong key is a clear error.

use posync_model::{PersonId, Sex};
use posync_replica::{NewVisit, Replica, ReplicaError};
use std::collections::BTreeMap;
use std::path::Path;

const KEY: [u8; 32] = [0x5a; 32];
const DAY: time::Date = time::macros::date!(2026 - 11 - 23);
const NAMES: [&str; 3] = ["Ayu Kinanti Rahmawati", "Bagus Prasetyo Wibowo", "Citra Lestari Handayani"];

fn visit(name: &str) -> NewVisit {
    NewVisit {
        person_id: PersonId::new_random(),
        name: name.to_owned(),
        sex: Sex::Female,
        birth_date: time::macros::date!(2025 - 11 - 20),
        weight_g: Some(8_900),
        length_mm: Some(740),
        lying: Some(true),
        head_circ_mm: Some(450),
        muac_mm: None,
        immunisations: BTreeMap::new(),
        vitamin_a: None,
        notes: String::new(),
        group: None,
        services: BTreeMap::new(),
    }
}

/// The main file and its write-ahead log, as a thief copying them off the phone gets them.
fn file_bytes(path: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(path).unwrap_or_default();
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

fn holds(bytes: &[u8], needle: &str) -> bool {
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// An encrypted replica with three captured visits, some still in the write-ahead log.
fn encrypted_replica(path: &Path) -> Replica {
    let mut r = Replica::open_encrypted(path, &KEY).expect("open encrypted");
    let session = r.start_session(&"melati-01".parse().expect("posyandu"), DAY).expect("session");
    r.record_visit(session, visit(NAMES[0]), 1).expect("record");
    r.checkpoint().expect("checkpoint");
    for (i, name) in NAMES.iter().enumerate().skip(1) {
        r.record_visit(session, visit(name), 1 + i as i64).expect("record");
    }
    r
}

#[test]
fn an_encrypted_replica_file_holds_no_header_and_no_name_and_plain_sqlite_cannot_read_it() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let replica = encrypted_replica(&path);
    let bytes = file_bytes(&path);
    assert!(bytes.len() > 4096, "the file and log were written");
    assert!(!holds(&bytes, "SQLite format 3"), "no SQLite header in clear");
    for name in NAMES {
        assert!(!holds(&bytes, name), "{name} is not readable in the file");
    }
    drop(replica);
    let bytes = file_bytes(&path);
    assert!(!holds(&bytes, "SQLite format 3") && NAMES.iter().all(|n| !holds(&bytes, n)), "nor after closing");

    let plain = rusqlite::Connection::open(&path).expect("sqlite opens lazily");
    let read = plain.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0));
    assert_eq!(
        read.expect_err("plain sqlite cannot read it").sqlite_error_code(),
        Some(rusqlite::ErrorCode::NotADatabase)
    );
}

#[test]
fn reopened_with_the_right_key_every_visit_reads_back() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let device = encrypted_replica(&path).device();
    let again = Replica::open_encrypted(&path, &KEY).expect("reopen with the key");
    assert_eq!(again.device(), device, "the same install");
    let mut names: Vec<String> = again.all_visits().expect("visits").into_iter().map(|v| v.name).collect();
    names.sort();
    assert_eq!(names, NAMES.to_vec());
    let mut more = again;
    let session = more.start_session(&"melati-01".parse().expect("posyandu"), DAY).expect("same session");
    more.record_visit(session, visit("Dewi Anggraini"), 9).expect("captures go on");
    drop(more);
    assert_eq!(Replica::open_encrypted(&path, &KEY).expect("reopen").all_visits().expect("visits").len(), 4);
}

#[test]
fn a_wrong_key_or_no_key_is_a_clear_error() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    drop(encrypted_replica(&path));
    let mut wrong = KEY;
    wrong[31] ^= 1;
    let e = Replica::open_encrypted(&path, &wrong).err().expect("a wrong key does not open it");
    assert!(matches!(e, ReplicaError::WrongKey), "{e:?}");
    assert!(e.to_string().contains("key it was created with"), "{e}");
    let e = Replica::open(&path).err().expect("no key does not open it");
    assert!(matches!(e, ReplicaError::WrongKey), "{e:?}");
    let e = Replica::open_read_only(&path).err().expect("nor read-only");
    assert!(matches!(e, ReplicaError::WrongKey), "{e:?}");
    let e = Replica::open_encrypted(&path, &KEY[..16]).err().expect("a short key");
    assert!(matches!(e, ReplicaError::BadKeyLength(16)), "{e:?}");
    // Nothing was damaged by the attempts.
    assert_eq!(Replica::open_encrypted(&path, &KEY).expect("right key").all_visits().expect("visits").len(), 3);
}

#[test]
fn a_plaintext_replica_still_opens_without_a_key_and_refuses_one() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("phone.sqlite");
    let mut r = Replica::open(&path).expect("open plain");
    let session = r.start_session(&"melati-01".parse().expect("posyandu"), DAY).expect("session");
    r.record_visit(session, visit(NAMES[0]), 1).expect("record");
    r.checkpoint().expect("checkpoint");
    drop(r);
    assert!(holds(&file_bytes(&path), "SQLite format 3"), "a plain SQLite file");
    assert_eq!(Replica::open(&path).expect("reopen plain").all_visits().expect("visits").len(), 1);
    assert_eq!(Replica::open_read_only(&path).expect("read-only").all_visits().expect("visits").len(), 1);
    let e = Replica::open_encrypted(&path, &KEY).err().expect("a key for a plain file");
    assert!(matches!(e, ReplicaError::NotEncrypted), "{e:?}");
    assert_eq!(Replica::open(&path).expect("still plain").all_visits().expect("visits").len(), 1);
}

//! The SQLite schema, step by step, and how a connection is opened.

use super::access;
use crate::StoreError;
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior};
use std::path::Path;

pub(super) const SCHEMA_VERSION: i64 = 9;

const SCHEMA: &str = r#"
CREATE TABLE docs (
    doc_id     TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    posyandu   TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    heads      BLOB NOT NULL,
    bytes      BLOB NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX docs_scope_seq ON docs(posyandu, seq);

-- The change feed: one row per committed change of a document, in commit order.
-- `heads` lets a pull compute what a device lacks from its cursor alone.
CREATE TABLE feed (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id    TEXT NOT NULL,
    posyandu  TEXT NOT NULL,
    heads     BLOB NOT NULL,
    device_id TEXT NOT NULL,
    at        INTEGER NOT NULL
);
CREATE INDEX feed_doc_seq ON feed(doc_id, seq);

-- Heads each device is known to have, acknowledged to it after a push.
CREATE TABLE device_docs (
    device_id TEXT NOT NULL,
    doc_id    TEXT NOT NULL,
    heads     BLOB NOT NULL,
    acked_at  INTEGER NOT NULL,
    PRIMARY KEY (device_id, doc_id)
) WITHOUT ROWID;

CREATE TABLE devices (
    device_id    TEXT PRIMARY KEY,
    last_push_at INTEGER,
    pushes       INTEGER NOT NULL DEFAULT 0
);

-- Relational projection for plain-SQL queries; rewritten per document on every merge.
CREATE TABLE visits (
    visit_id     TEXT PRIMARY KEY,
    doc_id       TEXT NOT NULL,
    posyandu     TEXT NOT NULL,
    session_date TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    sex          TEXT NOT NULL,
    birth_date   TEXT NOT NULL,
    weight_g     INTEGER,
    length_mm    INTEGER,
    lying        INTEGER,
    head_circ_mm INTEGER,
    muac_mm      INTEGER,
    vitamin_a    TEXT,
    notes        TEXT NOT NULL,
    recorded_by  TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL
);
CREATE INDEX visits_doc ON visits(doc_id);
CREATE INDEX visits_posyandu_date ON visits(posyandu, session_date);
CREATE INDEX visits_person ON visits(person_id);

CREATE TABLE visit_immunisations (
    visit_id TEXT NOT NULL,
    antigen  TEXT NOT NULL,
    given_on TEXT NOT NULL,
    PRIMARY KEY (visit_id, antigen)
) WITHOUT ROWID;

CREATE TABLE people (
    person_id     TEXT PRIMARY KEY,
    doc_id        TEXT NOT NULL,
    posyandu      TEXT NOT NULL,
    name          TEXT NOT NULL,
    sex           TEXT NOT NULL,
    birth_date    TEXT NOT NULL,
    mother_name   TEXT NOT NULL,
    nik           TEXT,
    registered_by TEXT NOT NULL,
    registered_at INTEGER NOT NULL
);
CREATE INDEX people_doc ON people(doc_id);
"#;

/// Schema v3: the life-cycle group of each visit and its services, one column per
/// [`Field::SERVICES`] key (the column name is the field's document key).
const SCHEMA_V3: &str = r#"
ALTER TABLE visits ADD COLUMN life_group TEXT NOT NULL DEFAULT 'balita';
ALTER TABLE visits ADD COLUMN growth_card INTEGER;
ALTER TABLE visits ADD COLUMN oedema INTEGER;
ALTER TABLE visits ADD COLUMN exclusive_bf INTEGER;
ALTER TABLE visits ADD COLUMN deworming INTEGER;
ALTER TABLE visits ADD COLUMN referred INTEGER;
ALTER TABLE visits ADD COLUMN gestational_weeks INTEGER;
ALTER TABLE visits ADD COLUMN bp_systolic INTEGER;
ALTER TABLE visits ADD COLUMN bp_diastolic INTEGER;
ALTER TABLE visits ADD COLUMN iron_tablets INTEGER;
ALTER TABLE visits ADD COLUMN danger_signs TEXT;
ALTER TABLE visits ADD COLUMN hb_g_l INTEGER;
ALTER TABLE visits ADD COLUMN blood_sugar_mg_dl INTEGER;
ALTER TABLE visits ADD COLUMN waist_mm INTEGER;
ALTER TABLE visits ADD COLUMN tb_symptoms INTEGER;
ALTER TABLE visits ADD COLUMN puma_score INTEGER;
ALTER TABLE visits ADD COLUMN srq20_score INTEGER;
ALTER TABLE visits ADD COLUMN adl_score INTEGER;
ALTER TABLE visits ADD COLUMN counselled INTEGER;
CREATE INDEX visits_group ON visits(posyandu, life_group, session_date);
ALTER TABLE people ADD COLUMN mother_nik TEXT;
ALTER TABLE people ADD COLUMN address TEXT NOT NULL DEFAULT '';
ALTER TABLE people ADD COLUMN rt INTEGER;
ALTER TABLE people ADD COLUMN rw INTEGER;
ALTER TABLE people ADD COLUMN pregnant INTEGER NOT NULL DEFAULT 0;
ALTER TABLE people ADD COLUMN kia_book INTEGER NOT NULL DEFAULT 0;
ALTER TABLE people ADD COLUMN merged_into TEXT;
CREATE INDEX people_nik ON people(nik) WHERE nik IS NOT NULL;
CREATE INDEX people_identity ON people(birth_date, name);
CREATE INDEX people_posyandu ON people(posyandu);

-- Fields holding concurrent values, kept current on every merge of a document.
CREATE TABLE conflicts (
    conflict_id TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    posyandu    TEXT NOT NULL,
    collection  TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    field       TEXT NOT NULL,
    policy      TEXT NOT NULL,
    vals        TEXT NOT NULL,
    opened_at   INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX conflicts_doc ON conflicts(doc_id);
CREATE INDEX conflicts_scope ON conflicts(posyandu, policy, opened_at);
"#;

/// Schema v4: pulls walk the feed of a scope in order.
const SCHEMA_V4: &str = "CREATE INDEX feed_scope_seq ON feed(posyandu, seq);";

/// Schema v5: records with impossible values are marked (not dropped); audit entries carry
/// the district they concern, and the log refuses a second row under an existing position
/// (`INSERT OR REPLACE` deletes without firing the delete trigger).
const SCHEMA_V5: &str = r#"
ALTER TABLE visits ADD COLUMN invalid TEXT;
ALTER TABLE people ADD COLUMN invalid TEXT;
ALTER TABLE audit ADD COLUMN district TEXT;
CREATE INDEX audit_district ON audit(district, seq);
CREATE TRIGGER audit_no_replace BEFORE INSERT ON audit
    WHEN NEW.seq IS NOT NULL AND EXISTS (SELECT 1 FROM audit WHERE seq = NEW.seq)
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"#;

/// Statements each connection keeps compiled.
const STATEMENTS_CACHED_MAX: usize = 256;

pub(super) fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // A sync runs more distinct statements (access check, push, projection, conflicts,
    // pull) than rusqlite's default cache of 16 holds: with the default, every request
    // compiled most of its SQL again.
    conn.set_prepared_statement_cache_capacity(STATEMENTS_CACHED_MAX);
    // One plan per statement, whatever its bound values. Without this, SQLite marks any
    // statement whose plan could depend on a value (a `LIMIT ?`, an `= ?` it estimates) to
    // be compiled again when that value changes, and rusqlite clears the values each time a
    // cached statement is reused: the feed scan, the access check's unit list and the
    // document read were compiled again on every run.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Schema steps in order: step `i` takes `user_version` from `i` to `i + 1`.
/// Schema v6: documents stored incrementally: a merge appends its changes as a chunk after
/// the document's snapshot (`docs.bytes`), which is rewritten only every
/// `core::CHUNKS_MAX` merges.
const SCHEMA_V6: &str = r#"
ALTER TABLE docs ADD COLUMN chunks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE docs ADD COLUMN stored_bytes INTEGER NOT NULL DEFAULT 0;
UPDATE docs SET stored_bytes = length(bytes);
CREATE TABLE doc_chunks (
    doc_id TEXT NOT NULL,
    n      INTEGER NOT NULL,
    heads  BLOB NOT NULL,
    bytes  BLOB NOT NULL,
    PRIMARY KEY (doc_id, n)
) WITHOUT ROWID;
"#;

/// Schema v7: the store's incarnation, a random number renewed at the first open of a copy
/// made by `posync admin backup` (`restore_pending`): phones that saw another one re-send
/// what they hold.
const SCHEMA_V7: &str = r#"
CREATE TABLE store_meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT INTO store_meta (key, value) VALUES ('incarnation', abs(random() % 4294967294) + 1);
"#;

const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [
    SCHEMA,
    access::SCHEMA_V2,
    SCHEMA_V3,
    SCHEMA_V4,
    SCHEMA_V5,
    SCHEMA_V6,
    SCHEMA_V7,
    access::SCHEMA_V8,
    access::SCHEMA_V9,
];

/// The store's incarnation, renewed first if this file is a restored backup.
pub(super) fn incarnation(conn: &mut Connection) -> Result<u32, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let pending: Option<i64> =
        tx.query_row("SELECT value FROM store_meta WHERE key = 'restore_pending'", [], |r| r.get(0)).optional()?;
    if pending.is_some() {
        tx.execute("UPDATE store_meta SET value = abs(random() % 4294967294) + 1 WHERE key = 'incarnation'", [])?;
        tx.execute("DELETE FROM store_meta WHERE key = 'restore_pending'", [])?;
    }
    let value: i64 = tx.query_row("SELECT value FROM store_meta WHERE key = 'incarnation'", [], |r| r.get(0))?;
    tx.commit()?;
    u32::try_from(value).map_err(|_| StoreError::Backend("bad store incarnation".into()))
}

pub(super) fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Backend(format!(
            "database schema {version} is newer than this build ({SCHEMA_VERSION})"
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        // Each step and its version bump commit together: a crash leaves a whole version.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(step)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

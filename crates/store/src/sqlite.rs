//! The embedded SQLite store: one file, WAL, `synchronous=FULL` (an acknowledged sync survives
//! power loss), one writer at a time, readers in parallel. Write transactions begin
//! IMMEDIATE: a second process on the same file waits its turn (busy timeout) instead of
//! failing when a read-then-write transaction cannot upgrade. Blocking SQLite calls run on
//! tokio's blocking pool, never on the async workers.

use crate::cache::DocCache;
use crate::core::{self, Existing, Projection, Records};
use crate::rows::{self, CONFLICT_COLUMNS, ConflictRow, parse_kind, row_meta, to_conflict_record};
use crate::sqlite_access;
use crate::{
    AuditAction, AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport, NewCredential, NewEnrolment,
    PageLimits, PullPage, Store, StoreError, StoreStats, StoredDoc, StoredMeta, UnitTree, UserRecord,
};
use async_trait::async_trait;
use posync_model::record::format_date;
use posync_model::{DeviceId, DocId, Field, FieldValue, Heads, HierarchyFile, PersonId, Scope, UserId, UserSpec};
use posync_proto::{DocAck, DocPush, Limits};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const SCHEMA_VERSION: i64 = 5;
const READERS_MAX: usize = 8;

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

/// A service value as a SQL value: booleans as 0/1.
fn service_sql(v: Option<&FieldValue>) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        None | Some(FieldValue::Null) => V::Null,
        Some(FieldValue::Bool(b)) => V::Integer(i64::from(*b)),
        Some(FieldValue::Int(i)) => V::Integer(*i),
        Some(FieldValue::Text(t)) => V::Text(t.clone()),
    }
}

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
}

/// SQLite-backed [`Store`]. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    limits: Limits,
    /// Documents kept loaded between requests.
    cache: Arc<DocCache>,
}

fn open_conn(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// Schema steps in order: step `i` takes `user_version` from `i` to `i + 1`.
const MIGRATIONS: [&str; SCHEMA_VERSION as usize] = [SCHEMA, sqlite_access::SCHEMA_V2, SCHEMA_V3, SCHEMA_V4, SCHEMA_V5];

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
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

impl SqliteStore {
    /// Open (creating and migrating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = open_conn(&path)?;
        migrate(&mut writer)?;
        Ok(Self {
            inner: Arc::new(Inner { path, writer: Mutex::new(writer), readers: Mutex::new(Vec::new()) }),
            limits: Limits::default(),
            cache: Arc::new(DocCache::default()),
        })
    }

    /// Keep at most about `bytes_max` of loaded documents between requests (0: none).
    pub fn with_doc_cache_bytes(mut self, bytes_max: usize) -> Self {
        self.cache = Arc::new(DocCache::new(bytes_max));
        self
    }

    /// Merge pushes within these bounds (the server's `Limits`) instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A panic while holding the lock rolled its transaction back (dropped uncommitted),
            // so the connection is fine: recover it rather than refuse every later write.
            let mut conn = inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Backend(format!("writer task: {e}")))?
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let pooled = inner.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => open_conn(&inner.path)?,
            };
            let out = f(&mut conn);
            if let Ok(mut pool) = inner.readers.lock()
                && pool.len() < READERS_MAX
            {
                pool.push(conn);
            }
            out
        })
        .await
        .map_err(|e| StoreError::Backend(format!("reader task: {e}")))?
    }

    /// Run `f` in one write transaction on the calling thread. For setup code outside an
    /// async context (the CLI's admin commands, test scenario builders).
    pub fn write_blocking<T>(
        &self,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut conn = self.inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Give `user` (created or updated) the units of `user.units` and bind `device` to them,
    /// directly, without the admin service's rules or an enrolment code. Test and benchmark
    /// setup only: real devices enrol through `/v1/auth/enrol`.
    pub fn grant_blocking(
        &self,
        units: &[posync_model::Unit],
        user: &UserSpec,
        credential: &NewCredential,
        now: i64,
    ) -> Result<(), StoreError> {
        self.write_blocking(|tx| {
            for unit in units {
                sqlite_access::put_unit(tx, unit)?;
            }
            sqlite_access::put_user(tx, user, now)?;
            sqlite_access::register_device(tx, &user.id, credential, now)
        })
    }

    async fn write_audited<T: Send + 'static>(
        &self,
        audit: AuditEntry,
        f: impl FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            sqlite_access::append_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Run `PRAGMA integrity_check`; `Ok` only if SQLite reports "ok".
    pub async fn integrity_check(&self) -> Result<(), StoreError> {
        self.read(|c| {
            let r: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
            if r == "ok" { Ok(()) } else { Err(StoreError::Backend(format!("integrity_check: {r}"))) }
        })
        .await
    }
}

/// Documents merged by a push, to keep loaded once it commits.
type Merged = Vec<(DocId, automerge::Automerge, usize)>;

fn push_tx(
    tx: &Transaction<'_>,
    device: DeviceId,
    scope: &Scope,
    pushes: &[DocPush],
    now: i64,
    limits: Limits,
    cache: &DocCache,
) -> Result<(Vec<DocAck>, Merged), StoreError> {
    let mut kept = Vec::new();
    let rules = core::Rules { device, limits, now };
    let mut used = posync_model::guard::Usage::default();
    let mut seen = HashSet::new();
    let mut acks = Vec::with_capacity(pushes.len());
    let device_s = device.to_string();
    for push in pushes {
        let doc_s = push.doc.to_string();
        if !seen.insert(push.doc) {
            return Err(StoreError::DuplicateDoc { doc: push.doc });
        }
        let stored: Option<(String, String, Vec<u8>, Vec<u8>)> = tx
            .query_row("SELECT kind, posyandu, bytes, heads FROM docs WHERE doc_id = ?1", [&doc_s], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let mut merged = match &stored {
            Some((kind, posyandu, bytes, heads)) => {
                let posyandu =
                    posyandu.parse().map_err(|_| StoreError::Backend(format!("doc {doc_s}: bad posyandu")))?;
                if !scope.allows(&posyandu) {
                    return Err(StoreError::Forbidden { doc: push.doc });
                }
                let kind = parse_kind(&doc_s, kind)?;
                let loaded = cache.get(push.doc, &rows::parse_stored_heads(Some(heads.clone()))?);
                core::merge_push(Some(Existing { kind, posyandu: &posyandu, bytes, loaded }), push, &rules, &mut used)?
            }
            None => {
                if !scope.allows(&push.posyandu) {
                    return Err(StoreError::Forbidden { doc: push.doc });
                }
                core::merge_push(None, push, &rules, &mut used)?
            }
        };
        if let Some(saved) = &merged.saved {
            if let Some(am) = merged.doc.take() {
                kept.push((push.doc, am, saved.len()));
            }
            let heads = merged.heads.to_bytes();
            tx.execute(
                "INSERT INTO feed (doc_id, posyandu, heads, device_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![doc_s, push.posyandu.as_str(), heads, device_s, now],
            )?;
            let seq = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO docs (doc_id, kind, posyandu, seq, heads, bytes, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT(doc_id) DO UPDATE SET seq = ?4, heads = ?5, bytes = ?6, updated_at = ?7",
                params![doc_s, push.kind.code(), push.posyandu.as_str(), seq, heads, saved, now],
            )?;
            if let Some(p) = &merged.projection {
                write_projection(tx, push.doc, push.posyandu.as_str(), p)?;
            }
            let only = merged.projection.as_ref().and_then(|p| p.only.as_deref());
            write_conflicts(tx, push.doc, push.posyandu.as_str(), &merged.conflicts, only, now)?;
        }
        if stored.is_none() && merged.saved.is_none() {
            // An empty push for a document nobody has: acknowledge it, record nothing.
            acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
            continue;
        }
        tx.execute(
            "INSERT INTO device_docs (device_id, doc_id, heads, acked_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(device_id, doc_id) DO UPDATE SET heads = ?3, acked_at = ?4",
            params![device_s, doc_s, merged.device_heads.to_bytes(), now],
        )?;
        acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
    }
    tx.execute(
        "INSERT INTO devices (device_id, last_push_at, pushes) VALUES (?1, ?2, 1)
         ON CONFLICT(device_id) DO UPDATE SET last_push_at = ?2, pushes = pushes + 1",
        params![device_s, now],
    )?;
    Ok((acks, kept))
}

/// Replace a document's rows in the conflict index with its current conflicts; a conflict
/// still open keeps its `opened_at`.
/// Replace a document's rows in the conflict index with `conflicts`: all of them, or (with
/// `only`) those of the records it names, the rest staying as they are.
fn write_conflicts(
    tx: &Transaction<'_>,
    doc: DocId,
    posyandu: &str,
    conflicts: &[posync_model::FieldConflict],
    only: Option<&[String]>,
    now: i64,
) -> Result<(), StoreError> {
    let doc_s = doc.to_string();
    let rows = rows::conflict_index_rows(doc, conflicts)?;
    let keep = serde_json_like_array(&rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>());
    let only = only.map(json_array);
    tx.execute(
        "DELETE FROM conflicts WHERE doc_id = ?1 AND conflict_id NOT IN (SELECT value FROM json_each(?2))
             AND (?3 IS NULL OR record_id IN (SELECT value FROM json_each(?3)))",
        params![doc_s, keep, only],
    )?;
    for r in &rows {
        let c = r.conflict;
        tx.execute(
            "INSERT INTO conflicts (conflict_id, doc_id, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?9)
             ON CONFLICT(conflict_id) DO UPDATE SET vals = ?8, updated_at = ?9",
            params![r.id, doc_s, posyandu, c.collection, c.record_id, c.field, r.policy, r.vals, now],
        )?;
    }
    Ok(())
}

fn conflict_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ConflictRow> {
    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?, r.get(9)?))
}

fn resolve_tx(
    tx: &Transaction<'_>,
    id: &str,
    value: &FieldValue,
    instance: &str,
    now: i64,
) -> Result<crate::ResolvedConflict, StoreError> {
    let row = tx
        .query_row(&format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE conflict_id = ?1"), [id], conflict_row)
        .optional()?;
    let c = to_conflict_record(row.ok_or_else(|| StoreError::NotFound(format!("open conflict {id}")))?)?;
    let doc_s = c.doc.to_string();
    let saved: Vec<u8> = tx.query_row("SELECT bytes FROM docs WHERE doc_id = ?1", [&doc_s], |r| r.get(0))?;
    let target = core::Target { collection: &c.collection, record_id: &c.record_id, field: &c.field };
    let resolved = core::resolve(c.doc, &saved, &target, value, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, c.doc, c.posyandu.as_str(), &resolved, instance, now)?;
    Ok(crate::ResolvedConflict { doc: c.doc, seq })
}

/// Store a change the server made to a document (a resolution, a merge of people): feed row,
/// document, projection and conflict index, in the caller's transaction.
fn commit_server_change(
    tx: &Transaction<'_>,
    doc: DocId,
    posyandu: &str,
    changed: &core::Resolved,
    instance: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let doc_s = doc.to_string();
    let heads = changed.heads.to_bytes();
    tx.execute(
        "INSERT INTO feed (doc_id, posyandu, heads, device_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![doc_s, posyandu, heads, format!("server:{instance}"), now],
    )?;
    let seq = tx.last_insert_rowid();
    tx.execute(
        "UPDATE docs SET seq = ?2, heads = ?3, bytes = ?4, updated_at = ?5 WHERE doc_id = ?1",
        params![doc_s, seq, heads, changed.saved, now],
    )?;
    write_projection(tx, doc, posyandu, &changed.projection)?;
    write_conflicts(tx, doc, posyandu, &changed.conflicts, None, now)?;
    Ok(seq as u64)
}

/// Pairs of people in scope who look like one person registered twice.
fn duplicate_people(conn: &Connection, scope: &Scope) -> Result<Vec<crate::DuplicatePair>, StoreError> {
    let in_scope = |t: &str| format!("{t}.posyandu IN (SELECT value FROM json_each(?1))");
    let mut stmt = conn.prepare_cached(&rows::duplicate_people_sql(&in_scope("a"), &in_scope("b")))?;
    let rows = stmt
        .query_map([scope_list(scope)], |r| {
            let side = |i: usize| -> rusqlite::Result<rows::PersonRow> {
                Ok((r.get(i)?, r.get(i + 1)?, r.get(i + 2)?, r.get(i + 3)?))
            };
            Ok((side(0)?, side(4)?, r.get::<_, String>(8)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter().map(|(a, b, reason)| rows::duplicate_pair(a, b, reason)).collect()
}

/// Mark `duplicate` as merged into `keep` in the duplicate's registry, as the server's change.
fn merge_tx(
    tx: &Transaction<'_>,
    scope: &Scope,
    duplicate: PersonId,
    keep: PersonId,
    instance: &str,
    now: i64,
) -> Result<crate::ResolvedConflict, StoreError> {
    let locate = |id: PersonId| -> Result<(String, String), StoreError> {
        tx.query_row(
            "SELECT doc_id, posyandu FROM people WHERE person_id = ?1 AND merged_into IS NULL",
            [id.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))
    };
    if duplicate == keep {
        return Err(StoreError::Invalid("a person cannot be merged into itself".into()));
    }
    let (doc_s, posyandu) = locate(duplicate)?;
    let (_, keep_posyandu) = locate(keep)?;
    for p in [&posyandu, &keep_posyandu] {
        let p: posync_model::PosyanduId = p.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?;
        if !scope.allows(&p) {
            return Err(StoreError::NotFound("unmerged person in your scope".into()));
        }
    }
    let doc: DocId = doc_s.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
    let saved: Vec<u8> = tx.query_row("SELECT bytes FROM docs WHERE doc_id = ?1", [&doc_s], |r| r.get(0))?;
    let changed = core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, doc, &posyandu, &changed, instance, now)?;
    Ok(crate::ResolvedConflict { doc, seq })
}

/// The first of `ids` that already names a row of `table` in another document: ids are
/// unique across documents, and a push that reuses one is refused (`id_collision`).
fn taken_elsewhere(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    ids: &[String],
    doc_s: &str,
) -> Result<bool, StoreError> {
    let list = serde_json_like_array(&ids.iter().map(String::as_str).collect::<Vec<_>>());
    let sql =
        format!("SELECT 1 FROM {table} WHERE {column} IN (SELECT value FROM json_each(?1)) AND doc_id != ?2 LIMIT 1");
    Ok(tx.query_row(&sql, params![list, doc_s], |_| Ok(())).optional()?.is_some())
}

fn write_projection(tx: &Transaction<'_>, doc: DocId, posyandu: &str, p: &Projection) -> Result<(), StoreError> {
    let doc_s = &doc.to_string();
    let invalid = |id: &str| p.invalid.get(id).cloned();
    match &p.records {
        Records::Visits { date, visits } => {
            let ids: Vec<String> = visits.iter().map(|v| v.visit_id.to_string()).collect();
            if taken_elsewhere(tx, "visits", "visit_id", &ids, doc_s)? {
                return Err(StoreError::IdCollision { doc, what: "a visit id".into() });
            }
            // The rows of the records projected again: all of the document's, or `only` those.
            let only = p.only.as_ref().map(json_array);
            tx.execute(
                "DELETE FROM visit_immunisations WHERE visit_id IN (SELECT visit_id FROM visits WHERE doc_id = ?1
                     AND (?2 IS NULL OR visit_id IN (SELECT value FROM json_each(?2))))",
                params![doc_s, only],
            )?;
            tx.execute(
                "DELETE FROM visits WHERE doc_id = ?1 AND (?2 IS NULL OR visit_id IN (SELECT value FROM json_each(?2)))",
                params![doc_s, only],
            )?;
            let date = format_date(*date);
            let mut ins = tx.prepare_cached(
                "INSERT INTO visits (visit_id, doc_id, posyandu, session_date, person_id, name, sex, birth_date,
                    weight_g, length_mm, lying, head_circ_mm, muac_mm, vitamin_a, notes, recorded_by, recorded_at,
                    life_group, invalid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19)",
            )?;
            let service_cols: Vec<&str> = Field::SERVICES.iter().map(|f| f.key()).collect();
            let set = service_cols.iter().enumerate().map(|(i, c)| format!("{c} = ?{}", i + 2)).collect::<Vec<_>>();
            let mut svc = tx.prepare_cached(&format!("UPDATE visits SET {} WHERE visit_id = ?1", set.join(", ")))?;
            let mut imm =
                tx.prepare_cached("INSERT INTO visit_immunisations (visit_id, antigen, given_on) VALUES (?1, ?2, ?3)")?;
            for v in visits {
                let vid = v.visit_id.to_string();
                ins.execute(params![
                    vid,
                    doc_s,
                    posyandu,
                    date,
                    v.person_id.to_string(),
                    v.name,
                    v.sex.code(),
                    format_date(v.birth_date),
                    v.weight_g,
                    v.length_mm,
                    v.lying,
                    v.head_circ_mm,
                    v.muac_mm,
                    v.vitamin_a.map(|a| a.code()),
                    v.notes,
                    v.recorded_by.to_string(),
                    v.recorded_at,
                    v.group.code(),
                    invalid(&vid),
                ])?;
                if !v.services.is_empty() {
                    let mut values = vec![rusqlite::types::Value::Text(vid.clone())];
                    values.extend(Field::SERVICES.iter().map(|f| service_sql(v.services.get(f))));
                    svc.execute(rusqlite::params_from_iter(values))?;
                }
                for (antigen, on) in &v.immunisations {
                    imm.execute(params![vid, antigen, format_date(*on)])?;
                }
            }
        }
        Records::People(people) => {
            let ids: Vec<String> = people.iter().map(|p| p.person_id.to_string()).collect();
            if taken_elsewhere(tx, "people", "person_id", &ids, doc_s)? {
                return Err(StoreError::IdCollision { doc, what: "a person id".into() });
            }
            let only = p.only.as_ref().map(json_array);
            tx.execute(
                "DELETE FROM people WHERE doc_id = ?1 AND (?2 IS NULL OR person_id IN (SELECT value FROM json_each(?2)))",
                params![doc_s, only],
            )?;
            let mut ins = tx.prepare_cached(
                "INSERT INTO people (person_id, doc_id, posyandu, name, sex, birth_date, mother_name, nik, registered_by,
                    registered_at, mother_nik, address, rt, rw, pregnant, kia_book, merged_into, invalid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
            )?;
            for p in people {
                ins.execute(params![
                    p.person_id.to_string(),
                    doc_s,
                    posyandu,
                    p.name,
                    p.sex.code(),
                    format_date(p.birth_date),
                    p.mother_name,
                    p.nik,
                    p.registered_by.to_string(),
                    p.registered_at,
                    p.mother_nik,
                    p.address,
                    p.rt,
                    p.rw,
                    p.pregnant,
                    p.kia_book,
                    p.merged_into.map(|m| m.to_string()),
                    invalid(&p.person_id.to_string()),
                ])?;
            }
        }
    }
    Ok(())
}

fn scope_list(scope: &Scope) -> String {
    // Posyandu ids are validated [a-z0-9_-], so quoting them is safe; a JSON array keeps the
    // statement text constant for any scope size.
    let ids: Vec<&str> = scope.posyandu().map(|p| p.as_str()).collect();
    serde_json_like_array(&ids)
}

/// Record ids as a JSON array for `json_each` (escaped: record keys come from devices).
fn json_array(ids: impl serde::Serialize) -> String {
    serde_json::to_string(&ids).unwrap_or_else(|_| "[]".into())
}

fn serde_json_like_array(ids: &[&str]) -> String {
    let mut s = String::from("[");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push('"');
        s.push_str(id);
        s.push('"');
    }
    s.push(']');
    s
}

fn pull_tx(
    conn: &mut Connection,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    limits: PageLimits,
    cache: &DocCache,
) -> Result<PullPage, StoreError> {
    let tx = conn.transaction()?;
    let feed_end: i64 = tx.query_row("SELECT COALESCE(MAX(seq), 0) FROM feed", [], |r| r.get(0))?;
    // A cursor from the future (a server restored from an older backup) cannot be trusted:
    // start the device over; re-sent changes are harmless duplicates.
    let cursor = if cursor > feed_end as u64 { 0 } else { cursor };
    let cursor_i = i64::try_from(cursor).map_err(|_| StoreError::Backend("cursor overflow".into()))?;
    let scopes = scope_list(scope);
    let mut scan = core::PageScan::new(limits.docs_max);
    let mut entries = tx.prepare_cached(
        "SELECT seq, doc_id FROM feed
         WHERE posyandu IN (SELECT value FROM json_each(?1)) AND seq > ?2 AND seq <= ?3
         ORDER BY seq LIMIT ?4",
    )?;
    let mut from = cursor_i;
    'scan: loop {
        let rows = entries
            .query_map(params![scopes, from, feed_end, core::FEED_SCAN_BATCH as i64], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        for (seq, doc) in &rows {
            from = *seq;
            let doc = doc.parse().map_err(|_| StoreError::Backend("bad feed doc id".into()))?;
            if !scan.offer(*seq as u64, doc) {
                break 'scan;
            }
        }
        if rows.len() < core::FEED_SCAN_BATCH {
            break;
        }
    }
    let device_s = device.to_string();
    let mut stored = std::collections::HashMap::new();
    let mut doc_row =
        tx.prepare_cached("SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs WHERE doc_id = ?1")?;
    for (doc, _) in &scan.docs {
        let doc_s = doc.to_string();
        let row = doc_row
            .query_row([&doc_s], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, Vec<u8>>(5)?))
            })
            .optional()?;
        let Some((d, k, p, seq, heads, bytes)) = row else { continue };
        let known = known_heads(&tx, &doc_s, &device_s, cursor_i)?;
        let meta = row_meta(d, k, p, seq, heads)?;
        let loaded = cache.get(*doc, &meta.heads);
        stored.insert(*doc, core::Candidate { meta, bytes, known, loaded });
    }
    core::assemble_page(cursor, scan, stored, feed_end as u64, limits)
}

/// The documents of `docs` in `scope` changed after `cursor`, with what the device holds.
fn pull_ahead_tx(
    tx: &Transaction<'_>,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    docs: &[DocId],
    limits: PageLimits,
    cache: &DocCache,
) -> Result<PullPage, StoreError> {
    let cursor_i = i64::try_from(cursor).unwrap_or(i64::MAX);
    let device_s = device.to_string();
    // One query for all asked: usually none changed since the cursor.
    let ids = json_array(docs.iter().map(DocId::to_string).collect::<Vec<_>>());
    let rows = tx
        .prepare_cached(
            "SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs
             WHERE doc_id IN (SELECT value FROM json_each(?1)) AND seq > ?2",
        )?
        .query_map(params![ids, cursor_i], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, Vec<u8>>(5)?))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut found = std::collections::HashMap::new();
    for (d, k, p, seq, heads, bytes) in rows {
        let meta = row_meta(d, k, p, seq, heads)?;
        // Scope from the server's own record of the document, never from the request.
        if !scope.allows(&meta.posyandu) {
            continue;
        }
        let known = known_heads(tx, &meta.doc.to_string(), &device_s, cursor_i)?;
        let loaded = cache.get(meta.doc, &meta.heads);
        found.insert(meta.doc, core::Candidate { meta, bytes, known, loaded });
    }
    // In the order the device asked for them.
    let candidates = docs.iter().filter_map(|d| found.remove(d).map(|c| (*d, c))).collect();
    core::assemble_ahead(cursor, candidates, limits)
}

/// Heads the device is known to have for a document: its state as of the device's cursor,
/// plus whatever the device itself pushed and we acknowledged.
fn known_heads(tx: &Transaction<'_>, doc_s: &str, device_s: &str, cursor: i64) -> Result<Heads, StoreError> {
    let at_cursor: Option<Vec<u8>> = tx
        .query_row(
            "SELECT heads FROM feed WHERE doc_id = ?1 AND seq <= ?2 ORDER BY seq DESC LIMIT 1",
            params![doc_s, cursor],
            |r| r.get(0),
        )
        .optional()?;
    let pushed: Option<Vec<u8>> = tx
        .query_row(
            "SELECT heads FROM device_docs WHERE device_id = ?1 AND doc_id = ?2",
            params![device_s, doc_s],
            |r| r.get(0),
        )
        .optional()?;
    Ok(rows::parse_stored_heads(at_cursor)?.union(&rows::parse_stored_heads(pushed)?))
}

#[async_trait]
impl Store for SqliteStore {
    async fn push(
        &self,
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> Result<Vec<DocAck>, StoreError> {
        let limits = self.limits;
        let cache = self.cache.clone();
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let (acks, merged) = push_tx(&tx, device, &scope, &pushes, now, limits, &cache)?;
            tx.commit()?;
            // Only what committed is kept.
            for (doc, am, saved) in merged {
                cache.put(doc, &am, saved);
            }
            Ok(acks)
        })
        .await
    }

    async fn forget_device_heads(&self, device: DeviceId, keep: Vec<DocId>) -> Result<(), StoreError> {
        let keep: Vec<String> = keep.iter().map(DocId::to_string).collect();
        let keep = serde_json_like_array(&keep.iter().map(String::as_str).collect::<Vec<_>>());
        let (device_s, probe) = (device.to_string(), keep.clone());
        // Most devices at cursor 0 are new and hold nothing to forget: do not take the single
        // writer (and an fsync) for them.
        let any = self
            .read(move |conn| {
                Ok(conn
                    .query_row(
                        "SELECT 1 FROM device_docs WHERE device_id = ?1
                         AND doc_id NOT IN (SELECT value FROM json_each(?2)) LIMIT 1",
                        params![device_s, probe],
                        |_| Ok(()),
                    )
                    .optional()?
                    .is_some())
            })
            .await?;
        if !any {
            return Ok(());
        }
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM device_docs WHERE device_id = ?1 AND doc_id NOT IN (SELECT value FROM json_each(?2))",
                params![device.to_string(), keep],
            )?;
            Ok(())
        })
        .await
    }

    async fn pull(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        let cache = self.cache.clone();
        self.read(move |conn| pull_tx(conn, device, &scope, cursor, limits, &cache)).await
    }

    async fn pull_ahead(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        docs: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        let cache = self.cache.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            pull_ahead_tx(&tx, device, &scope, cursor, &docs, limits, &cache)
        })
        .await
    }

    async fn get(&self, doc: DocId) -> Result<Option<StoredDoc>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    "SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs WHERE doc_id = ?1",
                    [doc.to_string()],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, Vec<u8>>(5)?)),
                )
                .optional()?;
            row.map(|(d, k, p, s, h, bytes)| Ok(StoredDoc { meta: row_meta(d, k, p, s, h)?, bytes })).transpose()
        })
        .await
    }

    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT doc_id, kind, posyandu, seq, heads FROM docs
                 WHERE posyandu IN (SELECT value FROM json_each(?1)) ORDER BY seq",
            )?;
            let rows = stmt
                .query_map([scope_list(&scope)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(|(d, k, p, s, h)| row_meta(d, k, p, s, h)).collect()
        })
        .await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|conn| {
            let count =
                |sql: &str| -> Result<u64, StoreError> { Ok(conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64) };
            Ok(StoreStats {
                docs: count("SELECT COUNT(*) FROM docs")?,
                visits: count("SELECT COUNT(*) FROM visits")?,
                people: count("SELECT COUNT(*) FROM people")?,
                feed_entries: count("SELECT COUNT(*) FROM feed")?,
                device_heads: count("SELECT COUNT(*) FROM device_docs")?,
            })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }

    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| sqlite_access::import(tx, &file, now)).await
    }

    async fn unit_tree(&self) -> Result<UnitTree, StoreError> {
        self.read(|conn| sqlite_access::unit_tree(conn)).await
    }

    async fn save_unit(&self, unit: posync_model::Unit, audit: AuditEntry) -> Result<(), StoreError> {
        self.write_audited(audit, move |tx| sqlite_access::put_unit(tx, &unit)).await
    }

    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| sqlite_access::put_user(tx, &user, now)).await
    }

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read(move |conn| sqlite_access::user(conn, &user)).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|conn| sqlite_access::users(conn)).await
    }

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| sqlite_access::issue_enrolment(tx, &enrolment, now)).await
    }

    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = sqlite_access::redeem_enrolment(&tx, &code_hash, &credential, now)?;
            let actor = crate::Actor::Device { device: credential.device };
            let detail = serde_json::json!({ "user": user.id, "label": credential.label });
            sqlite_access::append_audit(
                &tx,
                &AuditEntry::new(now, &actor, AuditAction::DeviceEnrolled, credential.device, detail)
                    .concerning(user.units.first()),
            )?;
            tx.commit()?;
            Ok(user)
        })
        .await
    }

    async fn refresh_device(
        &self,
        device: DeviceId,
        refresh_hash: [u8; 32],
        new_expires_at: i64,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = sqlite_access::refresh_device(&tx, device, &refresh_hash, new_expires_at, now);
            // A refused refresh changes nothing; commit only a successful one.
            if out.is_ok() {
                tx.commit()?;
            }
            out
        })
        .await
    }

    async fn revoke_device(&self, device: DeviceId, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| sqlite_access::revoke_device(tx, device, now)).await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|conn| sqlite_access::devices(conn)).await
    }

    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
        self.read(move |conn| {
            // One snapshot: the user, the device's state and the scope agree with each other.
            let tx = conn.transaction()?;
            sqlite_access::device_access(&tx, device)
        })
        .await
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.write(move |conn| sqlite_access::append_audit(conn, &entry)).await
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| sqlite_access::audit_log(conn, after, limit, None)).await
    }

    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| sqlite_access::audit_log(conn, after, limit, Some(&districts))).await
    }

    async fn conflicts(
        &self,
        scope: Scope,
        filter: crate::ConflictFilter,
    ) -> Result<Vec<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| {
            let policy = rows::policy_code(filter.policy.unwrap_or(posync_model::Policy::Review));
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {CONFLICT_COLUMNS} FROM conflicts
                 WHERE posyandu IN (SELECT value FROM json_each(?1)) AND policy = ?2
                   AND (?3 IS NULL OR posyandu = ?3) AND (?4 IS NULL OR field = ?4)
                 ORDER BY opened_at, conflict_id LIMIT 1000"
            ))?;
            let rows = stmt
                .query_map(
                    params![scope_list(&scope), policy, filter.posyandu.as_ref().map(|p| p.as_str()), filter.field],
                    conflict_row,
                )?
                .collect::<Result<Vec<_>, _>>()?;
            rows.into_iter().map(to_conflict_record).collect()
        })
        .await
    }

    async fn conflict(&self, id: String) -> Result<Option<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| {
            let row = conn
                .query_row(
                    &format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE conflict_id = ?1"),
                    [&id],
                    conflict_row,
                )
                .optional()?;
            row.map(to_conflict_record).transpose()
        })
        .await
    }

    async fn resolve_conflict(
        &self,
        id: String,
        value: FieldValue,
        instance: String,
        audit: AuditEntry,
    ) -> Result<crate::ResolvedConflict, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| resolve_tx(tx, &id, &value, &instance, now)).await
    }

    async fn duplicate_people(&self, scope: Scope) -> Result<Vec<crate::DuplicatePair>, StoreError> {
        self.read(move |conn| duplicate_people(conn, &scope)).await
    }

    async fn merge_people(
        &self,
        scope: Scope,
        duplicate: PersonId,
        keep: PersonId,
        instance: String,
        audit: AuditEntry,
    ) -> Result<crate::ResolvedConflict, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| merge_tx(tx, &scope, duplicate, keep, &instance, now)).await
    }

    async fn invalid_records(&self, scope: Scope) -> Result<Vec<crate::InvalidRecord>, StoreError> {
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&rows::invalid_records_sql("posyandu IN (SELECT value FROM json_each(?1))"))?;
            let found = stmt
                .query_map([scope_list(&scope)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            found.into_iter().map(rows::invalid_record).collect()
        })
        .await
    }

    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        self.read(move |conn| report_facts(conn, &scope, from, to)).await
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT posyandu, person_id, birth_date, kia_book FROM people
                 WHERE posyandu IN (SELECT value FROM json_each(?1)) AND merged_into IS NULL AND invalid IS NULL",
            )?;
            let rows = stmt
                .query_map([scope_list(&scope)], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, bool>(3)?))
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows
                .into_iter()
                .filter_map(|(p, id, b, kia_book)| rows::registered_person(&p, &id, &b, kia_book))
                .collect())
        })
        .await
    }
}

/// A row of `visits` (and its immunisations) as a report fact.
fn report_facts(
    conn: &Connection,
    scope: &Scope,
    from: time::Date,
    to: time::Date,
) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT v.posyandu, v.session_date,
                COALESCE((SELECT p.merged_into FROM people p WHERE p.person_id = v.person_id), v.person_id), v.name, v.sex, v.birth_date, v.life_group, v.weight_g,
                v.length_mm, v.lying, v.muac_mm, v.oedema, v.growth_card, v.bp_systolic, v.bp_diastolic,
                (SELECT group_concat(i.antigen) FROM visit_immunisations i WHERE i.visit_id = v.visit_id)
         FROM visits v
         WHERE v.posyandu IN (SELECT value FROM json_each(?1)) AND v.session_date BETWEEN ?2 AND ?3
           AND v.invalid IS NULL",
    )?;
    let rows = stmt.query_map(params![scope_list(scope), format_date(from), format_date(to)], |r| {
        Ok((
            (r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, String>(3)?),
            (r.get::<_, String>(4)?, r.get::<_, String>(5)?, r.get::<_, String>(6)?),
            (r.get::<_, Option<i64>>(7)?, r.get::<_, Option<i64>>(8)?, r.get::<_, Option<bool>>(9)?),
            (r.get::<_, Option<i64>>(10)?, r.get::<_, Option<bool>>(11)?, r.get::<_, Option<bool>>(12)?),
            (r.get::<_, Option<i64>>(13)?, r.get::<_, Option<i64>>(14)?, r.get::<_, Option<String>>(15)?),
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (
            (posyandu, session_date, person, name),
            (sex, birth_date, group),
            (weight_g, length_mm, lying),
            (muac_mm, oedema, growth_card),
            (bp_systolic, bp_diastolic, immunisations),
        ) = row?;
        out.push(
            rows::RawFact {
                posyandu,
                session_date,
                person,
                name,
                sex,
                birth_date,
                group,
                weight_g,
                length_mm,
                lying,
                muac_mm,
                oedema,
                growth_card,
                bp_systolic,
                bp_diastolic,
                immunisations,
            }
            .parse()?,
        );
    }
    Ok(out)
}

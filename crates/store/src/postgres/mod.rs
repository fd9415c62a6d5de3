//! The PostgreSQL store: several stateless server instances over one database.
//!
//! Correctness across instances rests on three locks, always taken in this order:
//! 1. per document, `pg_advisory_xact_lock` on the document id (sorted within a batch), so
//!    two instances merging into one document serialise instead of overwriting each other;
//! 2. the `feed` clock row, taken as the last step before commit, so feed positions are
//!    handed out in commit order: a reader's snapshot always holds a gap-free prefix of the
//!    feed, and no device can step its cursor past a change still committing;
//! 3. the `audit` clock row, for the same guarantee on the audit log.
//!
//! Every lock is transaction-scoped: a crashed instance's locks go with its connection.

mod access;
pub mod testing;

use crate::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use posync_model::guard::Usage;
use std::time::Duration;

/// Schema steps in order: step `i` takes the stored version from `i` to `i + 1`.
const MIGRATIONS: [&str; 2] = [include_str!("schema.sql"), include_str!("schema_v2.sql")];
const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;
/// Any constant: instances starting together take turns migrating.
const MIGRATION_LOCK: i64 = 0x706f_7379_6e63_0001;
/// Connections per instance. PostgreSQL's default allows 100 in all.
pub const POOL_SIZE_DEFAULT: usize = 16;

/// PostgreSQL-backed [`crate::Store`]. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) pool: Pool,
    limits: posync_proto::Limits,
    /// Documents kept loaded between requests; an entry is used only at the heads this
    /// instance reads from the database, so other instances' writes are never missed.
    cache: std::sync::Arc<crate::cache::DocCache>,
}

impl PgStore {
    /// Keep at most about `bytes_max` of loaded documents between requests (0: none).
    pub fn with_doc_cache_bytes(mut self, bytes_max: usize) -> Self {
        self.cache = std::sync::Arc::new(crate::cache::DocCache::new(bytes_max));
        self
    }

    /// Connect to `url` (`postgres://user@host:port/db`, with an optional
    /// `?options=-c%20search_path%3Dschema`), and apply any migrations this build carries.
    /// Merge pushes within these bounds (the server's `Limits`) instead of the defaults.
    pub fn with_limits(mut self, limits: posync_proto::Limits) -> Self {
        self.limits = limits;
        self
    }

    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(url, POOL_SIZE_DEFAULT).await
    }

    pub async fn connect_with(url: &str, pool_size: usize) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config =
            url.parse().map_err(|e| StoreError::Backend(format!("database url: {e}")))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_application_name().is_none() {
            config.application_name("posync");
        }
        let manager = Manager::from_config(
            config,
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(Duration::from_secs(10)))
            .create_timeout(Some(Duration::from_secs(5)))
            .build()
            .map_err(|e| StoreError::Backend(format!("postgres pool: {e}")))?;
        let store = Self { pool, limits: posync_proto::Limits::default(), cache: Default::default() };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS posync_schema (version BIGINT NOT NULL)").await?;
        let version: i64 = match tx.query_opt("SELECT version FROM posync_schema", &[]).await? {
            Some(row) => row.try_get(0)?,
            None => {
                tx.execute("INSERT INTO posync_schema (version) VALUES (0)", &[]).await?;
                0
            }
        };
        if version > SCHEMA_VERSION {
            return Err(StoreError::Backend(format!(
                "database schema {version} is newer than this build ({SCHEMA_VERSION})"
            )));
        }
        for step in MIGRATIONS.iter().skip(version as usize) {
            tx.batch_execute(step).await?;
        }
        tx.execute("UPDATE posync_schema SET version = $1", &[&SCHEMA_VERSION]).await?;
        tx.commit().await?;
        Ok(())
    }
}

use crate::core::{self, Existing, Projection, Records};
use crate::rows::{self, CONFLICT_COLUMNS, ConflictRow, row_meta, to_conflict_record};
use crate::{
    AuditAction, AuditEntry, AuditRecord, ConflictFilter, ConflictRecord, DeviceAccess, DeviceRecord, DuplicatePair,
    ImportReport, NewCredential, NewEnrolment, PageLimits, PullPage, ResolvedConflict, Store, StoreStats, StoredDoc,
    StoredMeta, UnitTree, UserRecord,
};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use posync_model::record::format_date;
use posync_model::{
    DeviceId, DocId, DocKind, Field, FieldValue, Heads, HierarchyFile, PersonId, PosyanduId, Scope, Unit, UserId,
    UserSpec,
};
use posync_proto::{DocAck, DocPush};
use std::collections::{HashMap, HashSet};
use tokio_postgres::types::ToSql;

/// The advisory lock key of a document: its first 8 id bytes. A collision only makes two
/// documents take turns.
fn doc_lock_key(doc: DocId) -> i64 {
    let b = doc.as_bytes();
    i64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

/// Lock documents for this transaction, in id order (two batches never wait on each other
/// in a cycle).
async fn lock_docs(tx: &Transaction<'_>, docs: impl IntoIterator<Item = DocId>) -> Result<(), StoreError> {
    let mut keys: Vec<i64> = docs.into_iter().map(doc_lock_key).collect();
    keys.sort_unstable();
    keys.dedup();
    let stmt = tx.prepare_cached("SELECT pg_advisory_xact_lock($1)").await?;
    for key in keys {
        tx.execute(&stmt, &[&key]).await?;
    }
    Ok(())
}

/// Take `n` consecutive feed positions. Holds the feed clock's row lock until commit: call
/// it last, just before committing.
async fn take_feed_seqs(tx: &Transaction<'_>, n: usize) -> Result<i64, StoreError> {
    let n = i64::try_from(n).map_err(|_| StoreError::Backend("batch too large".into()))?;
    let row = tx.query_one("UPDATE clocks SET seq = seq + $1 WHERE name = 'feed' RETURNING seq", &[&n]).await?;
    Ok(row.try_get::<_, i64>(0)? - n + 1)
}

fn scope_vec(scope: &Scope) -> Vec<String> {
    scope.posyandu().map(|p| p.as_str().to_owned()).collect()
}

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} out of range")))
}

/// A service value as its column's SQL value. Columns are typed: a value of another type
/// (possible only from a foreign writer) projects as NULL rather than failing the merge.
fn service_sql(field: Field, v: Option<&FieldValue>) -> Param {
    use posync_model::record::FieldKind;
    match (field.kind(), v) {
        (FieldKind::Bool, Some(FieldValue::Bool(b))) => Box::new(Some(*b)),
        (FieldKind::Bool, _) => Box::new(None::<bool>),
        (FieldKind::Int { .. }, Some(FieldValue::Int(i))) => Box::new(Some(*i)),
        (FieldKind::Int { .. }, _) => Box::new(None::<i64>),
        (_, Some(FieldValue::Text(t))) => Box::new(Some(t.clone())),
        (_, _) => Box::new(None::<String>),
    }
}

/// One owned statement parameter.
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Parameters per statement: PostgreSQL's limit is 65,535.
const STATEMENT_PARAMS_MAX: usize = 8_000;

/// Insert `rows` into `table` with as few multi-row statements as the parameter limit allows:
/// one round trip per few hundred rows instead of one per row.
pub(crate) async fn insert_rows(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Param>>,
) -> Result<u64, StoreError> {
    let width = columns.len().max(1);
    let per_statement = (STATEMENT_PARAMS_MAX / width).max(1);
    let mut inserted = 0u64;
    for chunk in rows.chunks(per_statement) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", (1..=width).map(|c| format!("${}", r * width + c)).collect::<Vec<_>>().join(", ")))
            .collect();
        let sql = format!("INSERT INTO {table} ({}) VALUES {}", columns.join(", "), tuples.join(", "));
        let params: Vec<&(dyn ToSql + Sync)> =
            chunk.iter().flatten().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let stmt = tx.prepare_cached(&sql).await?;
        inserted += tx.execute(&stmt, &params).await?;
    }
    Ok(inserted)
}

/// A document's new state, waiting for its feed position.
struct Pending {
    doc: String,
    kind: &'static str,
    posyandu: String,
    heads: Vec<u8>,
    bytes: Vec<u8>,
    /// `device:<id>` or `server:<instance>`, as the feed records who wrote it.
    writer: String,
}

/// Store the documents, then append their feed rows, as the last step of a transaction.
/// The documents (the large write) go first, before the feed clock is taken: while it is
/// held every other feed-adding commit waits, so only the feed rows and the documents' new
/// positions are written under it. Until the commit no other transaction sees either.
async fn commit_pending(tx: &Transaction<'_>, pending: &[Pending], now: i64) -> Result<Vec<i64>, StoreError> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let docs: Vec<&str> = pending.iter().map(|p| p.doc.as_str()).collect();
    let posyandu: Vec<&str> = pending.iter().map(|p| p.posyandu.as_str()).collect();
    let heads: Vec<&[u8]> = pending.iter().map(|p| p.heads.as_slice()).collect();
    let kinds: Vec<&str> = pending.iter().map(|p| p.kind).collect();
    let bytes: Vec<&[u8]> = pending.iter().map(|p| p.bytes.as_slice()).collect();
    // A new document's position is set below, under the clock; 0 meanwhile.
    tx.execute(
        "INSERT INTO docs (doc_id, kind, posyandu, seq, heads, bytes, updated_at)
         SELECT d, k, p, 0, h, b, $6
         FROM UNNEST($1::text[], $2::text[], $3::text[], $4::bytea[], $5::bytea[]) AS t(d, k, p, h, b)
         ON CONFLICT (doc_id) DO UPDATE
         SET heads = EXCLUDED.heads, bytes = EXCLUDED.bytes, updated_at = EXCLUDED.updated_at",
        &[&docs, &kinds, &posyandu, &heads, &bytes, &now],
    )
    .await?;
    let first = take_feed_seqs(tx, pending.len()).await?;
    let seqs: Vec<i64> = (0..pending.len() as i64).map(|i| first + i).collect();
    let writers: Vec<&str> = pending.iter().map(|p| p.writer.as_str()).collect();
    tx.execute(
        "INSERT INTO feed (seq, doc_id, posyandu, heads, device_id, at)
         SELECT s, d, p, h, w, $6 FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bytea[], $5::text[]) AS t(s, d, p, h, w)",
        &[&seqs, &docs, &posyandu, &heads, &writers, &now],
    )
    .await?;
    tx.execute(
        "UPDATE docs SET seq = t.s FROM UNNEST($1::text[], $2::bigint[]) AS t(d, s) WHERE docs.doc_id = t.d",
        &[&docs, &seqs],
    )
    .await?;
    Ok(seqs)
}

/// A stored document's identity, bytes and heads, read under its lock.
type StoredDocRow = (String, String, Vec<u8>, Vec<u8>);

async fn stored_doc(tx: &Transaction<'_>, doc_s: &str) -> Result<Option<StoredDocRow>, StoreError> {
    let stmt = tx.prepare_cached("SELECT kind, posyandu, bytes, heads FROM docs WHERE doc_id = $1").await?;
    match tx.query_opt(&stmt, &[&doc_s]).await? {
        Some(r) => Ok(Some((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?))),
        None => Ok(None),
    }
}

/// Merge one push on the blocking pool: Automerge work is CPU-bound.
async fn merge_blocking(
    stored: Option<StoredDocRow>,
    loaded: Option<automerge::Automerge>,
    push: DocPush,
    rules: core::Rules,
    mut used: Usage,
) -> Result<(DocPush, Result<core::Merged, StoreError>, Usage), StoreError> {
    tokio::task::spawn_blocking(move || {
        let merge = || match &stored {
            Some((kind, posyandu, bytes, _)) => {
                let doc_s = push.doc.to_string();
                let posyandu: PosyanduId =
                    posyandu.parse().map_err(|_| StoreError::Backend(format!("doc {doc_s}: bad posyandu")))?;
                let kind = rows::parse_kind(&doc_s, kind)?;
                core::merge_push(Some(Existing { kind, posyandu: &posyandu, bytes, loaded }), &push, &rules, &mut used)
            }
            None => core::merge_push(None, &push, &rules, &mut used),
        };
        let out = merge();
        (push, out, used)
    })
    .await
    .map_err(|e| StoreError::Backend(format!("merge task: {e}")))
}

/// Documents merged by a push, to keep loaded once it commits.
type MergedDocs = Vec<(DocId, automerge::Automerge, usize)>;

async fn push_tx(
    tx: &Transaction<'_>,
    device: DeviceId,
    scope: &Scope,
    pushes: Vec<DocPush>,
    now: i64,
    limits: posync_proto::Limits,
    cache: &crate::cache::DocCache,
) -> Result<(Vec<DocAck>, MergedDocs), StoreError> {
    let mut kept = Vec::new();
    let rules = core::Rules { device, limits, now };
    let mut used = Usage::default();
    let mut seen = HashSet::new();
    for push in &pushes {
        if !seen.insert(push.doc) {
            return Err(StoreError::DuplicateDoc { doc: push.doc });
        }
    }
    lock_docs(tx, pushes.iter().map(|p| p.doc)).await?;
    let device_s = device.to_string();
    let mut acks = Vec::with_capacity(pushes.len());
    let mut pending = Vec::new();
    let ack_stmt = tx
        .prepare_cached(
            "INSERT INTO device_docs (device_id, doc_id, heads, acked_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (device_id, doc_id) DO UPDATE SET heads = $3, acked_at = $4",
        )
        .await?;
    for push in pushes {
        let doc_s = push.doc.to_string();
        let stored = stored_doc(tx, &doc_s).await?;
        let owner: PosyanduId = match &stored {
            Some((_, p, _, _)) => p.parse().map_err(|_| StoreError::Backend(format!("doc {doc_s}: bad posyandu")))?,
            None => push.posyandu.clone(),
        };
        if !scope.allows(&owner) {
            return Err(StoreError::Forbidden { doc: push.doc });
        }
        let exists = stored.is_some();
        let loaded = match &stored {
            Some((_, _, _, heads)) => cache.get(push.doc, &rows::parse_stored_heads(Some(heads.clone()))?),
            None => None,
        };
        let (push, merged, now_used) = merge_blocking(stored, loaded, push, rules, used).await?;
        used = now_used;
        let mut merged = merged?;
        if let Some(saved) = merged.saved {
            if let Some(am) = merged.doc.take() {
                kept.push((push.doc, am, saved.len()));
            }
            if let Some(p) = &merged.projection {
                write_projection(tx, push.doc, push.posyandu.as_str(), p).await?;
            }
            let only = merged.projection.as_ref().and_then(|p| p.only.as_deref());
            write_conflicts(tx, push.doc, push.posyandu.as_str(), &merged.conflicts, only, now).await?;
            pending.push(Pending {
                doc: doc_s.clone(),
                kind: push.kind.code(),
                posyandu: push.posyandu.as_str().to_owned(),
                heads: merged.heads.to_bytes(),
                bytes: saved,
                writer: device_s.clone(),
            });
        } else if !exists {
            // An empty push for a document nobody has: acknowledge it, record nothing.
            acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
            continue;
        }
        let device_heads = merged.device_heads.to_bytes();
        tx.execute(&ack_stmt, &[&device_s, &doc_s, &device_heads, &now]).await?;
        acks.push(DocAck { doc: push.doc, heads: device_heads });
    }
    tx.execute(
        "INSERT INTO devices (device_id, last_push_at, pushes) VALUES ($1, $2, 1)
         ON CONFLICT (device_id) DO UPDATE SET last_push_at = $2, pushes = devices.pushes + 1",
        &[&device_s, &now],
    )
    .await?;
    // Last: the feed clock serialises commits, so hold it as briefly as possible.
    commit_pending(tx, &pending, now).await?;
    Ok((acks, kept))
}

/// Replace a document's rows in the conflict index with `conflicts`: all of them, or (with
/// `only`) those of the records it names, the rest staying as they are.
async fn write_conflicts(
    tx: &Transaction<'_>,
    doc: DocId,
    posyandu: &str,
    conflicts: &[posync_model::FieldConflict],
    only: Option<&[String]>,
    now: i64,
) -> Result<(), StoreError> {
    let doc_s = doc.to_string();
    let rows = rows::conflict_index_rows(doc, conflicts)?;
    let keep: Vec<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    let only: Option<Vec<&str>> = only.map(|ids| ids.iter().map(String::as_str).collect());
    tx.execute(
        "DELETE FROM conflicts WHERE doc_id = $1 AND NOT (conflict_id = ANY($2))
             AND ($3::text[] IS NULL OR record_id = ANY($3))",
        &[&doc_s, &keep, &only],
    )
    .await?;
    if rows.is_empty() {
        return Ok(());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO conflicts (conflict_id, doc_id, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
             ON CONFLICT (conflict_id) DO UPDATE SET vals = $8, updated_at = $9",
        )
        .await?;
    for r in &rows {
        let c = r.conflict;
        tx.execute(&stmt, &[&r.id, &doc_s, &posyandu, &c.collection, &c.record_id, &c.field, &r.policy, &r.vals, &now])
            .await?;
    }
    Ok(())
}

/// Whether any of `ids` already names a row of `table` in another document: ids are unique
/// across documents, and a push that reuses one is refused (`id_collision`).
async fn taken_elsewhere(
    tx: &Transaction<'_>,
    table: &str,
    column: &str,
    ids: &[String],
    doc_s: &str,
) -> Result<bool, StoreError> {
    let sql = format!("SELECT 1 FROM {table} WHERE {column} = ANY($1) AND doc_id <> $2 LIMIT 1");
    Ok(tx.query_opt(&sql, &[&ids, &doc_s]).await?.is_some())
}

async fn write_projection(tx: &Transaction<'_>, doc: DocId, posyandu: &str, p: &Projection) -> Result<(), StoreError> {
    let doc_s = &doc.to_string();
    let invalid = |id: &str| p.invalid.get(id).cloned();
    match &p.records {
        Records::Visits { date, visits } => {
            let ids: Vec<String> = visits.iter().map(|v| v.visit_id.to_string()).collect();
            if taken_elsewhere(tx, "visits", "visit_id", &ids, doc_s).await? {
                return Err(StoreError::IdCollision { doc, what: "a visit id".into() });
            }
            // The rows of the records projected again: all of the document's, or `only` those.
            let only: Option<Vec<&str>> = p.only.as_ref().map(|ids| ids.iter().map(String::as_str).collect());
            tx.execute(
                "DELETE FROM visit_immunisations WHERE visit_id IN (SELECT visit_id FROM visits WHERE doc_id = $1
                     AND ($2::text[] IS NULL OR visit_id = ANY($2)))",
                &[&doc_s, &only],
            )
            .await?;
            tx.execute(
                "DELETE FROM visits WHERE doc_id = $1 AND ($2::text[] IS NULL OR visit_id = ANY($2))",
                &[&doc_s, &only],
            )
            .await?;
            let date = format_date(*date);
            let mut columns = vec![
                "visit_id",
                "doc_id",
                "posyandu",
                "session_date",
                "person_id",
                "name",
                "sex",
                "birth_date",
                "weight_g",
                "length_mm",
                "lying",
                "head_circ_mm",
                "muac_mm",
                "vitamin_a",
                "notes",
                "recorded_by",
                "recorded_at",
                "life_group",
                "invalid",
            ];
            columns.extend(Field::SERVICES.iter().map(|f| f.key()));
            let mut rows: Vec<Vec<Param>> = Vec::with_capacity(visits.len());
            let mut immunisations: Vec<Vec<Param>> = Vec::new();
            for v in visits {
                let vid = v.visit_id.to_string();
                let mut row: Vec<Param> = vec![
                    Box::new(vid.clone()),
                    Box::new(doc_s.to_owned()),
                    Box::new(posyandu.to_owned()),
                    Box::new(date.clone()),
                    Box::new(v.person_id.to_string()),
                    Box::new(v.name.clone()),
                    Box::new(v.sex.code()),
                    Box::new(format_date(v.birth_date)),
                    Box::new(v.weight_g),
                    Box::new(v.length_mm),
                    Box::new(v.lying),
                    Box::new(v.head_circ_mm),
                    Box::new(v.muac_mm),
                    Box::new(v.vitamin_a.map(|a| a.code())),
                    Box::new(v.notes.clone()),
                    Box::new(v.recorded_by.to_string()),
                    Box::new(v.recorded_at),
                    Box::new(v.group.code()),
                    Box::new(invalid(&vid)),
                ];
                row.extend(Field::SERVICES.iter().map(|f| service_sql(*f, v.services.get(f))));
                rows.push(row);
                for (antigen, on) in &v.immunisations {
                    immunisations.push(vec![
                        Box::new(vid.clone()),
                        Box::new(antigen.clone()),
                        Box::new(format_date(*on)),
                    ]);
                }
            }
            insert_rows(tx, "visits", &columns, rows).await?;
            insert_rows(tx, "visit_immunisations", &["visit_id", "antigen", "given_on"], immunisations).await?;
        }
        Records::People(people) => {
            let ids: Vec<String> = people.iter().map(|p| p.person_id.to_string()).collect();
            if taken_elsewhere(tx, "people", "person_id", &ids, doc_s).await? {
                return Err(StoreError::IdCollision { doc, what: "a person id".into() });
            }
            let only: Option<Vec<&str>> = p.only.as_ref().map(|ids| ids.iter().map(String::as_str).collect());
            tx.execute(
                "DELETE FROM people WHERE doc_id = $1 AND ($2::text[] IS NULL OR person_id = ANY($2))",
                &[&doc_s, &only],
            )
            .await?;
            let columns = [
                "person_id",
                "doc_id",
                "posyandu",
                "name",
                "sex",
                "birth_date",
                "mother_name",
                "nik",
                "registered_by",
                "registered_at",
                "mother_nik",
                "address",
                "rt",
                "rw",
                "pregnant",
                "kia_book",
                "merged_into",
                "invalid",
            ];
            let rows: Vec<Vec<Param>> = people
                .iter()
                .map(|p| -> Vec<Param> {
                    vec![
                        Box::new(p.person_id.to_string()),
                        Box::new(doc_s.to_owned()),
                        Box::new(posyandu.to_owned()),
                        Box::new(p.name.clone()),
                        Box::new(p.sex.code()),
                        Box::new(format_date(p.birth_date)),
                        Box::new(p.mother_name.clone()),
                        Box::new(p.nik.clone()),
                        Box::new(p.registered_by.to_string()),
                        Box::new(p.registered_at),
                        Box::new(p.mother_nik.clone()),
                        Box::new(p.address.clone()),
                        Box::new(p.rt),
                        Box::new(p.rw),
                        Box::new(p.pregnant),
                        Box::new(p.kia_book),
                        Box::new(p.merged_into.map(|m| m.to_string())),
                        Box::new(invalid(&p.person_id.to_string())),
                    ]
                })
                .collect();
            insert_rows(tx, "people", &columns, rows).await?;
        }
    }
    Ok(())
}

/// One page of the feed for a scope, from one snapshot: the feed clock makes every snapshot
/// a gap-free prefix of the feed, so a cursor never steps past a change still committing.
async fn pull_tx(
    tx: &Transaction<'_>,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    limits: PageLimits,
    cache: &crate::cache::DocCache,
) -> Result<PullPage, StoreError> {
    let feed_end: i64 = tx.query_one("SELECT seq FROM clocks WHERE name = 'feed'", &[]).await?.try_get(0)?;
    // A cursor from the future (a server restored from an older backup) cannot be trusted:
    // start the device over; re-sent changes are harmless duplicates.
    let cursor = if cursor > feed_end as u64 { 0 } else { cursor };
    let cursor_i = to_i64(cursor, "cursor")?;
    let scopes = scope_vec(scope);
    let batch = core::FEED_SCAN_BATCH as i64;
    let entries = tx
        .prepare_cached(
            "SELECT seq, doc_id FROM feed WHERE posyandu = ANY($1) AND seq > $2 AND seq <= $3 ORDER BY seq LIMIT $4",
        )
        .await?;
    let mut scan = core::PageScan::new(limits.docs_max);
    let mut from = cursor_i;
    'scan: loop {
        let rows = tx.query(&entries, &[&scopes, &from, &feed_end, &batch]).await?;
        for row in &rows {
            let seq: i64 = row.try_get(0)?;
            from = seq;
            let doc =
                row.try_get::<_, String>(1)?.parse().map_err(|_| StoreError::Backend("bad feed doc id".into()))?;
            if !scan.offer(seq as u64, doc) {
                break 'scan;
            }
        }
        if rows.len() < core::FEED_SCAN_BATCH {
            break;
        }
    }
    let ids: Vec<String> = scan.docs.iter().map(|(d, _)| d.to_string()).collect();
    let rows =
        tx.query("SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs WHERE doc_id = ANY($1)", &[&ids]).await?;
    let mut known = known_heads(tx, &ids, &device.to_string(), cursor_i).await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for r in rows {
        let meta = row_meta(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?;
        let known = known.remove(&meta.doc).unwrap_or_default();
        let loaded = cache.get(meta.doc, &meta.heads);
        stored.insert(meta.doc, core::Candidate { meta, bytes: r.try_get(5)?, known, loaded });
    }
    core::assemble_page(cursor, scan, stored, feed_end as u64, limits)
}

/// The documents of `docs` in `scope` changed after `cursor`, with what the device holds.
async fn pull_ahead_tx(
    tx: &Transaction<'_>,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    docs: &[DocId],
    limits: PageLimits,
    cache: &crate::cache::DocCache,
) -> Result<PullPage, StoreError> {
    let cursor_i = i64::try_from(cursor).unwrap_or(i64::MAX);
    let ids: Vec<String> = docs.iter().map(DocId::to_string).collect();
    let rows = tx
        .query(
            "SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs WHERE doc_id = ANY($1) AND seq > $2",
            &[&ids, &cursor_i],
        )
        .await?;
    let mut known = known_heads(tx, &ids, &device.to_string(), cursor_i).await?;
    let mut found = HashMap::with_capacity(rows.len());
    for r in rows {
        let meta = row_meta(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?;
        // Scope from the server's own record of the document, never from the request.
        if scope.allows(&meta.posyandu) {
            let known = known.remove(&meta.doc).unwrap_or_default();
            let loaded = cache.get(meta.doc, &meta.heads);
            found.insert(meta.doc, core::Candidate { meta, bytes: r.try_get(5)?, known, loaded });
        }
    }
    // In the order the device asked for them.
    let candidates = docs.iter().filter_map(|d| found.remove(d).map(|c| (*d, c))).collect();
    core::assemble_ahead(cursor, candidates, limits)
}

/// Heads the device is known to have for each document: the document as of the device's
/// cursor, plus whatever the device itself pushed and we acknowledged.
async fn known_heads(
    tx: &Transaction<'_>,
    docs: &[String],
    device_s: &str,
    cursor: i64,
) -> Result<HashMap<DocId, Heads>, StoreError> {
    let mut known: HashMap<DocId, Heads> = HashMap::new();
    if docs.is_empty() {
        return Ok(known);
    }
    let at_cursor = tx
        .query(
            "SELECT DISTINCT ON (doc_id) doc_id, heads FROM feed
             WHERE doc_id = ANY($1) AND seq <= $2 ORDER BY doc_id, seq DESC",
            &[&docs, &cursor],
        )
        .await?;
    let pushed = tx
        .query("SELECT doc_id, heads FROM device_docs WHERE device_id = $1 AND doc_id = ANY($2)", &[&device_s, &docs])
        .await?;
    for row in at_cursor.iter().chain(&pushed) {
        let doc: DocId =
            row.try_get::<_, String>(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?;
        let heads = rows::parse_stored_heads(Some(row.try_get(1)?))?;
        let entry = known.entry(doc).or_default();
        *entry = entry.union(&heads);
    }
    Ok(known)
}

/// Store a change the server made to a document (a resolution, a merge of people):
/// projection, conflict index, then feed row and document, in the caller's transaction.
async fn commit_server_change(
    tx: &Transaction<'_>,
    doc: DocId,
    kind: DocKind,
    posyandu: &str,
    changed: core::Resolved,
    instance: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let doc_s = doc.to_string();
    write_projection(tx, doc, posyandu, &changed.projection).await?;
    write_conflicts(tx, doc, posyandu, &changed.conflicts, None, now).await?;
    let pending = Pending {
        doc: doc_s,
        kind: kind.code(),
        posyandu: posyandu.to_owned(),
        heads: changed.heads.to_bytes(),
        bytes: changed.saved,
        writer: format!("server:{instance}"),
    };
    let seqs = commit_pending(tx, std::slice::from_ref(&pending), now).await?;
    seqs.first().map(|s| *s as u64).ok_or_else(|| StoreError::Backend("no feed position".into()))
}

fn conflict_from_row(r: &tokio_postgres::Row) -> Result<ConflictRecord, StoreError> {
    let row: ConflictRow = (
        r.try_get(0)?,
        r.try_get(1)?,
        r.try_get(2)?,
        r.try_get(3)?,
        r.try_get(4)?,
        r.try_get(5)?,
        r.try_get(6)?,
        r.try_get(7)?,
        r.try_get(8)?,
        r.try_get(9)?,
    );
    to_conflict_record(row)
}

async fn conflict_by_id(tx: &Transaction<'_>, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
    let row = tx.query_opt(&format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE conflict_id = $1"), &[&id]).await?;
    row.as_ref().map(conflict_from_row).transpose()
}

async fn resolve_tx(
    tx: &Transaction<'_>,
    id: &str,
    value: &FieldValue,
    instance: &str,
    now: i64,
) -> Result<ResolvedConflict, StoreError> {
    let not_open = || StoreError::NotFound(format!("open conflict {id}"));
    let first = conflict_by_id(tx, id).await?.ok_or_else(not_open)?;
    lock_docs(tx, [first.doc]).await?;
    // Read again under the lock: another instance may have resolved it meanwhile.
    let c = conflict_by_id(tx, id).await?.ok_or_else(not_open)?;
    let doc_s = c.doc.to_string();
    let (kind, _, saved, _) =
        stored_doc(tx, &doc_s).await?.ok_or_else(|| StoreError::NotFound(format!("document {doc_s}")))?;
    let kind = rows::parse_kind(&doc_s, &kind)?;
    let (collection, record_id, field, value, instance_s) =
        (c.collection.clone(), c.record_id.clone(), c.field.clone(), value.clone(), instance.to_owned());
    let doc = c.doc;
    let resolved = tokio::task::spawn_blocking(move || {
        let target = core::Target { collection: &collection, record_id: &record_id, field: &field };
        core::resolve(doc, &saved, &target, &value, posync_model::doc::server_actor(&instance_s), now)
    })
    .await
    .map_err(|e| StoreError::Backend(format!("resolve task: {e}")))??;
    let seq = commit_server_change(tx, c.doc, kind, c.posyandu.as_str(), resolved, instance, now).await?;
    Ok(ResolvedConflict { doc: c.doc, seq })
}

async fn locate_person(tx: &Transaction<'_>, id: PersonId) -> Result<(String, String), StoreError> {
    let row = tx
        .query_opt(
            "SELECT doc_id, posyandu FROM people WHERE person_id = $1 AND merged_into IS NULL",
            &[&id.to_string()],
        )
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))?;
    Ok((row.try_get(0)?, row.try_get(1)?))
}

async fn merge_tx(
    tx: &Transaction<'_>,
    scope: &Scope,
    duplicate: PersonId,
    keep: PersonId,
    instance: &str,
    now: i64,
) -> Result<ResolvedConflict, StoreError> {
    if duplicate == keep {
        return Err(StoreError::Invalid("a person cannot be merged into itself".into()));
    }
    let (doc_s, _) = locate_person(tx, duplicate).await?;
    let doc: DocId = doc_s.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
    lock_docs(tx, [doc]).await?;
    let (doc_s, posyandu) = locate_person(tx, duplicate).await?;
    let (_, keep_posyandu) = locate_person(tx, keep).await?;
    for p in [&posyandu, &keep_posyandu] {
        let p: PosyanduId = p.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?;
        if !scope.allows(&p) {
            return Err(StoreError::NotFound("unmerged person in your scope".into()));
        }
    }
    let doc: DocId = doc_s.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
    let (kind, _, saved, _) =
        stored_doc(tx, &doc_s).await?.ok_or_else(|| StoreError::NotFound(format!("document {doc_s}")))?;
    let kind = rows::parse_kind(&doc_s, &kind)?;
    let instance_s = instance.to_owned();
    let changed = tokio::task::spawn_blocking(move || {
        core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(&instance_s), now)
    })
    .await
    .map_err(|e| StoreError::Backend(format!("merge task: {e}")))??;
    let seq = commit_server_change(tx, doc, kind, &posyandu, changed, instance, now).await?;
    Ok(ResolvedConflict { doc, seq })
}

impl PgStore {
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        Ok(self.pool.get().await?)
    }

    /// Give `user` (created or updated) the units of `user.units` and bind `device` to them,
    /// directly, without the admin service's rules or an enrolment code. Test and benchmark
    /// setup only: real devices enrol through `/v1/auth/enrol`.
    pub async fn grant(
        &self,
        units: &[Unit],
        user: &UserSpec,
        credential: &NewCredential,
        now: i64,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        for unit in units {
            access::put_unit(&tx, unit).await?;
        }
        access::put_user(&tx, user, now).await?;
        access::register_device(&tx, &user.id, credential, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Run `$body` in one transaction on a pooled connection, appending `$audit` last.
macro_rules! audited {
    ($self:ident, $audit:expr, |$tx:ident| $body:expr) => {{
        let audit = $audit;
        let mut client = $self.client().await?;
        let $tx = client.transaction().await?;
        let out = $body;
        access::append_audit(&$tx, &audit).await?;
        $tx.commit().await?;
        Ok(out)
    }};
}

/// Run `$body` in a read-only transaction (one snapshot for multi-statement reads).
macro_rules! reading {
    ($self:ident, |$tx:ident| $body:expr) => {{
        let mut client = $self.client().await?;
        let $tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let out = $body;
        $tx.commit().await?;
        Ok(out)
    }};
}

#[async_trait]
impl Store for PgStore {
    async fn push(
        &self,
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> Result<Vec<DocAck>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let (acks, merged) = push_tx(&tx, device, &scope, pushes, now, self.limits, &self.cache).await?;
        tx.commit().await?;
        // Only what committed is kept.
        for (doc, am, saved) in merged {
            self.cache.put(doc, &am, saved);
        }
        Ok(acks)
    }

    async fn forget_device_heads(&self, device: DeviceId, keep: Vec<DocId>) -> Result<(), StoreError> {
        let client = self.client().await?;
        let keep: Vec<String> = keep.iter().map(DocId::to_string).collect();
        client
            .execute(
                "DELETE FROM device_docs WHERE device_id = $1 AND NOT (doc_id = ANY($2))",
                &[&device.to_string(), &keep],
            )
            .await?;
        Ok(())
    }

    async fn pull(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        reading!(self, |tx| pull_tx(&tx, device, &scope, cursor, limits, &self.cache).await?)
    }

    async fn pull_ahead(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        docs: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        reading!(self, |tx| pull_ahead_tx(&tx, device, &scope, cursor, &docs, limits, &self.cache).await?)
    }

    async fn get(&self, doc: DocId) -> Result<Option<StoredDoc>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT doc_id, kind, posyandu, seq, heads, bytes FROM docs WHERE doc_id = $1",
                &[&doc.to_string()],
            )
            .await?;
        row.map(|r| {
            let meta = row_meta(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?)?;
            Ok(StoredDoc { meta, bytes: r.try_get(5)? })
        })
        .transpose()
    }

    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT doc_id, kind, posyandu, seq, heads FROM docs WHERE posyandu = ANY($1) ORDER BY seq",
                &[&scope_vec(&scope)],
            )
            .await?;
        rows.iter()
            .map(|r| row_meta(r.try_get(0)?, r.try_get(1)?, r.try_get(2)?, r.try_get(3)?, r.try_get(4)?))
            .collect()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let r = client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM docs), (SELECT COUNT(*) FROM visits), (SELECT COUNT(*) FROM people),
                        (SELECT COUNT(*) FROM feed), (SELECT COUNT(*) FROM device_docs)",
                &[],
            )
            .await?;
        let n = |i: usize| -> Result<u64, StoreError> { Ok(r.try_get::<_, i64>(i)? as u64) };
        Ok(StoreStats { docs: n(0)?, visits: n(1)?, people: n(2)?, feed_entries: n(3)?, device_heads: n(4)? })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }

    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::import(&tx, &file, now).await?)
    }

    async fn unit_tree(&self) -> Result<UnitTree, StoreError> {
        reading!(self, |tx| access::unit_tree(&tx).await?)
    }

    async fn save_unit(&self, unit: Unit, audit: AuditEntry) -> Result<(), StoreError> {
        audited!(self, audit, |tx| access::put_unit(&tx, &unit).await?)
    }

    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::put_user(&tx, &user, now).await?)
    }

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        reading!(self, |tx| access::user(&tx, &user).await?)
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        reading!(self, |tx| access::users(&tx).await?)
    }

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::issue_enrolment(&tx, &enrolment, now).await?)
    }

    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // `redeem_enrolment` locks the code's row: two instances redeeming one code at once
        // cannot both win.
        let user = access::redeem_enrolment(&tx, &code_hash, &credential, now).await?;
        let actor = crate::Actor::Device { device: credential.device };
        let detail = serde_json::json!({ "user": user.id, "label": credential.label });
        access::append_audit(
            &tx,
            &AuditEntry::new(now, &actor, AuditAction::DeviceEnrolled, credential.device, detail)
                .concerning(user.units.first()),
        )
        .await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn refresh_device(
        &self,
        device: DeviceId,
        refresh_hash: [u8; 32],
        new_expires_at: i64,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let slid = async {
            let mut client = self.client().await?;
            let tx = client.transaction().await?;
            // A refused refresh changes nothing; dropping the transaction rolls it back.
            let user = access::refresh_device(&tx, device, &refresh_hash, new_expires_at, now).await?;
            tx.commit().await?;
            Ok::<_, StoreError>(user)
        };
        match slid.await {
            // A full disk must not lock every device out: check the credential without
            // sliding its expiry.
            Err(StoreError::StorageFull(reason)) => {
                tracing::warn!(%reason, "refresh expiry not slid: storage full");
                reading!(self, |tx| access::verify_refresh(&tx, device, &refresh_hash, now, false).await?)
            }
            other => other,
        }
    }

    async fn revoke_device(&self, device: DeviceId, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::revoke_device(&tx, device, now).await?)
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        reading!(self, |tx| access::devices(&tx).await?)
    }

    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
        // One snapshot: the user, the device's state and the scope agree with each other.
        reading!(self, |tx| access::device_access(&tx, device).await?)
    }

    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        access::append_audit(&tx, &entry).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        reading!(self, |tx| access::audit_log(&tx, after, limit, None).await?)
    }

    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        reading!(self, |tx| access::audit_log(&tx, after, limit, Some(&districts)).await?)
    }

    async fn conflicts(&self, scope: Scope, filter: ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError> {
        let client = self.client().await?;
        let policy = rows::policy_code(filter.policy.unwrap_or(posync_model::Policy::Review));
        let posyandu = filter.posyandu.as_ref().map(|p| p.as_str().to_owned());
        let rows = client
            .query(
                &format!(
                    "SELECT {CONFLICT_COLUMNS} FROM conflicts
                     WHERE posyandu = ANY($1) AND policy = $2
                       AND ($3::text IS NULL OR posyandu = $3) AND ($4::text IS NULL OR field = $4)
                     ORDER BY opened_at, conflict_id LIMIT 1000"
                ),
                &[&scope_vec(&scope), &policy, &posyandu, &filter.field],
            )
            .await?;
        rows.iter().map(conflict_from_row).collect()
    }

    async fn conflict(&self, id: String) -> Result<Option<ConflictRecord>, StoreError> {
        reading!(self, |tx| conflict_by_id(&tx, &id).await?)
    }

    async fn resolve_conflict(
        &self,
        id: String,
        value: FieldValue,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| resolve_tx(&tx, &id, &value, &instance, now).await?)
    }

    async fn duplicate_people(&self, scope: Scope) -> Result<Vec<DuplicatePair>, StoreError> {
        let client = self.client().await?;
        let sql = rows::duplicate_people_sql("a.posyandu = ANY($1)", "b.posyandu = ANY($1)");
        let rows = client.query(&sql, &[&scope_vec(&scope)]).await?;
        rows.iter()
            .map(|r| {
                let side = |i: usize| -> Result<rows::PersonRow, StoreError> {
                    Ok((r.try_get(i)?, r.try_get(i + 1)?, r.try_get(i + 2)?, r.try_get(i + 3)?))
                };
                rows::duplicate_pair(side(0)?, side(4)?, r.try_get(8)?)
            })
            .collect()
    }

    async fn merge_people(
        &self,
        scope: Scope,
        duplicate: PersonId,
        keep: PersonId,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| merge_tx(&tx, &scope, duplicate, keep, &instance, now).await?)
    }

    async fn invalid_records(&self, scope: Scope) -> Result<Vec<crate::InvalidRecord>, StoreError> {
        let client = self.client().await?;
        let found = client.query(&rows::invalid_records_sql("posyandu = ANY($1)"), &[&scope_vec(&scope)]).await?;
        found
            .iter()
            .map(|r| {
                rows::invalid_record((
                    r.try_get(0)?,
                    r.try_get(1)?,
                    r.try_get(2)?,
                    r.try_get(3)?,
                    r.try_get(4)?,
                    r.try_get(5)?,
                    r.try_get(6)?,
                ))
            })
            .collect()
    }

    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT v.posyandu, v.session_date,
                        COALESCE((SELECT p.merged_into FROM people p WHERE p.person_id = v.person_id), v.person_id),
                        v.name, v.sex, v.birth_date, v.life_group, v.weight_g, v.length_mm, v.lying, v.muac_mm,
                        v.oedema, v.growth_card, v.bp_systolic, v.bp_diastolic,
                        (SELECT string_agg(i.antigen, ',') FROM visit_immunisations i WHERE i.visit_id = v.visit_id)
                 FROM visits v
                 WHERE v.posyandu = ANY($1) AND v.session_date BETWEEN $2 AND $3 AND v.invalid IS NULL",
                &[&scope_vec(&scope), &format_date(from), &format_date(to)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                rows::RawFact {
                    posyandu: r.try_get(0)?,
                    session_date: r.try_get(1)?,
                    person: r.try_get(2)?,
                    name: r.try_get(3)?,
                    sex: r.try_get(4)?,
                    birth_date: r.try_get(5)?,
                    group: r.try_get(6)?,
                    weight_g: r.try_get(7)?,
                    length_mm: r.try_get(8)?,
                    lying: r.try_get(9)?,
                    muac_mm: r.try_get(10)?,
                    oedema: r.try_get(11)?,
                    growth_card: r.try_get(12)?,
                    bp_systolic: r.try_get(13)?,
                    bp_diastolic: r.try_get(14)?,
                    immunisations: r.try_get(15)?,
                }
                .parse()
            })
            .collect()
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT posyandu, person_id, birth_date, kia_book FROM people
                 WHERE posyandu = ANY($1) AND merged_into IS NULL AND invalid IS NULL",
                &[&scope_vec(&scope)],
            )
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let (p, id, b): (String, String, String) = (r.try_get(0)?, r.try_get(1)?, r.try_get(2)?);
            out.extend(rows::registered_person(&p, &id, &b, r.try_get(3)?));
        }
        Ok(out)
    }
}

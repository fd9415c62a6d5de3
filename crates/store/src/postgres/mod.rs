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
//!
//! What is read and written is planned once in [`crate::plan`] for both backends; this
//! adapter runs it (`exec`) and decides only what is PostgreSQL's own: the locks above,
//! merges on the blocking pool, and feed positions from the clock.

mod access;
mod exec;
pub mod testing;

pub(crate) use exec::{Param, insert_rows};

use crate::StoreError;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use posync_model::guard::Usage;
use std::time::Duration;

/// Schema steps in order: step `i` takes the stored version from `i` to `i + 1`.
const MIGRATIONS: [&str; 6] = [
    include_str!("schema.sql"),
    include_str!("schema_v2.sql"),
    include_str!("schema_v3.sql"),
    include_str!("schema_v4.sql"),
    include_str!("schema_v5.sql"),
    include_str!("schema_v6.sql"),
];
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
    incarnation: u32,
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
        let mut store =
            Self { pool, limits: posync_proto::Limits::default(), cache: Default::default(), incarnation: 0 };
        store.migrate().await?;
        let row =
            store.pool.get().await?.query_one("SELECT value FROM store_meta WHERE key = 'incarnation'", &[]).await?;
        store.incarnation = u32::try_from(row.try_get::<_, i64>(0)?)
            .map_err(|_| StoreError::Backend("bad store incarnation".into()))?;
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

use crate::core::{self, Existing};
use crate::plan;
use crate::{
    AccessStore, ApiKeyAccess, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, AuditStore, ConflictFilter,
    ConflictRecord, DeviceAccess, DeviceRecord, DuplicatePair, ImportReport, NewApiKey, NewCredential, NewEnrolment,
    PageLimits, PinAttempt, PinLockout, PinRecord, PullPage, ReportStore, ResolvedConflict, ReviewStore, StoreStats,
    StoredDoc, StoredMeta, SyncStore, UnitTree, UserRecord,
};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use exec::{D, exec, query, query_opt, write_conflicts, write_projection};
use posync_model::{
    DeviceId, DocId, DocKind, FieldValue, HierarchyFile, PersonId, PosyanduId, Scope, Unit, UserId, UserSpec,
};
use posync_proto::{DocAck, DocPush};
use std::collections::{HashMap, HashSet};

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

fn to_i64(v: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid(format!("{what} out of range")))
}

/// Store the documents, then append their feed rows, as the last step of a transaction.
/// The documents (the large write) go first, before the feed clock is taken: while it is
/// held every other feed-adding commit waits, so only the feed rows and the documents' new
/// positions are written under it. Until the commit no other transaction sees either.
async fn commit_pending(tx: &Transaction<'_>, pending: &[plan::NewState], now: i64) -> Result<Vec<i64>, StoreError> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    // Each document's position is set below, under the clock; 0 meanwhile.
    for state in pending {
        for statement in plan::doc_write(D, state, 0, now) {
            exec(tx, &statement).await?;
        }
    }
    let docs: Vec<&str> = pending.iter().map(|p| p.doc.as_str()).collect();
    let posyandu: Vec<&str> = pending.iter().map(|p| p.posyandu.as_str()).collect();
    let heads: Vec<&[u8]> = pending.iter().map(|p| p.heads.as_slice()).collect();
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

async fn stored_doc(tx: &Transaction<'_>, doc: DocId) -> Result<Option<plan::StoredRow>, StoreError> {
    query_opt(tx, &plan::stored_doc(D, doc)).await?.map(|row| plan::stored_row(doc, &row)).transpose()
}

/// A stored document's bytes (snapshot, then chunks), for when no loaded copy is at hand.
async fn doc_bytes(tx: &Transaction<'_>, doc: DocId) -> Result<Vec<u8>, StoreError> {
    plan::concat_bytes(query(tx, &plan::doc_bytes(D, doc)).await?)?
        .ok_or_else(|| StoreError::NotFound(format!("document {doc}")))
}

/// Merge one push on the blocking pool: Automerge work is CPU-bound.
async fn merge_blocking(
    stored: Option<(plan::StoredRow, Vec<u8>)>,
    loaded: Option<automerge::Automerge>,
    push: DocPush,
    rules: core::Rules,
    mut used: Usage,
) -> Result<(DocPush, Result<core::Merged, StoreError>, Usage), StoreError> {
    tokio::task::spawn_blocking(move || {
        let out = match &stored {
            Some((row, bytes)) => {
                let existing = Existing { kind: row.kind, posyandu: &row.posyandu, bytes, form: row.form, loaded };
                core::merge_push(Some(existing), &push, &rules, &mut used)
            }
            None => core::merge_push(None, &push, &rules, &mut used),
        };
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
    let writer = device.to_string();
    let mut acks = Vec::with_capacity(pushes.len());
    let mut pending = Vec::new();
    for push in pushes {
        let stored = stored_doc(tx, push.doc).await?;
        let owner = stored.as_ref().map_or(&push.posyandu, |row| &row.posyandu);
        if !scope.allows(owner) {
            return Err(StoreError::Forbidden { doc: push.doc });
        }
        let exists = stored.is_some();
        let before = stored.as_ref().map(|row| row.form).unwrap_or_default();
        let loaded = stored.as_ref().and_then(|row| cache.get(push.doc, &row.heads));
        let stored = match stored {
            Some(row) if loaded.is_none() => Some((row, doc_bytes(tx, push.doc).await?)),
            Some(row) => Some((row, Vec::new())),
            None => None,
        };
        let (push, merged, now_used) = merge_blocking(stored, loaded, push, rules, used).await?;
        used = now_used;
        let mut merged = merged?;
        if let Some(write) = merged.write.take() {
            if let Some(am) = merged.doc.take() {
                kept.push((push.doc, am, before.after(&write).bytes));
            }
            let posyandu = push.posyandu.as_str();
            if let Some(p) = &merged.projection {
                write_projection(tx, push.doc, posyandu, p).await?;
            }
            let only = merged.projection.as_ref().and_then(|p| p.only.as_deref());
            write_conflicts(tx, push.doc, posyandu, &merged.conflicts, only, now).await?;
            let state = plan::NewState::new(push.doc, push.kind, posyandu, &merged.heads, write, writer.clone());
            pending.push(state.after(before));
        } else if !exists {
            // An empty push for a document nobody has: acknowledge it, record nothing.
            acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
            continue;
        }
        exec(tx, &plan::ack(D, device, push.doc, &merged.device_heads, now)).await?;
        acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
    }
    exec(tx, &plan::device_pushed(D, device, now)).await?;
    // Last: the feed clock serialises commits, so hold it as briefly as possible.
    commit_pending(tx, &pending, now).await?;
    Ok((acks, kept))
}

/// Candidates of a pull: each document's row with what the device is known to hold.
async fn candidates(
    tx: &Transaction<'_>,
    device: DeviceId,
    docs: &[DocId],
    after: Option<i64>,
    cursor: i64,
    cache: &crate::cache::DocCache,
) -> Result<Vec<core::Candidate>, StoreError> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let mut known = plan::parse_known(&query(tx, &plan::known_heads(D, docs, device, cursor)).await?)?;
    let rows = query(tx, &plan::docs_by_ids(D, docs, after)).await?;
    let chunks = query(tx, &plan::chunks_of(D, docs)).await?;
    let mut out = Vec::with_capacity(rows.len());
    for stream in plan::streams(rows, chunks)? {
        let held = known.remove(&stream.meta.doc).unwrap_or_default();
        out.push(core::candidate(stream, held, cache));
    }
    Ok(out)
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
    let mut scan = core::PageScan::new(limits.docs_max);
    let mut from = cursor_i;
    'scan: loop {
        let rows = query(tx, &plan::feed_scan(D, scope, from, feed_end, core::FEED_SCAN_BATCH)).await?;
        for row in &rows {
            from = row.int(0)?;
            let doc = row.text(1)?.parse().map_err(|_| StoreError::Backend("bad feed doc id".into()))?;
            if !scan.offer(from as u64, doc) {
                break 'scan;
            }
        }
        if rows.len() < core::FEED_SCAN_BATCH {
            break;
        }
    }
    let docs: Vec<DocId> = scan.docs.iter().map(|(d, _)| *d).collect();
    let stored: HashMap<_, _> =
        candidates(tx, device, &docs, None, cursor_i, cache).await?.into_iter().map(|c| (c.meta.doc, c)).collect();
    core::assemble_page(cursor, scan, stored, feed_end as u64, limits, cache)
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
    let mut found: HashMap<_, _> = candidates(tx, device, docs, Some(cursor_i), cursor_i, cache)
        .await?
        .into_iter()
        // Scope from the server's own record of the document, never from the request.
        .filter(|c| scope.allows(&c.meta.posyandu))
        .map(|c| (c.meta.doc, c))
        .collect();
    // In the order the device asked for them.
    let candidates = docs.iter().filter_map(|d| found.remove(d).map(|c| (*d, c))).collect();
    core::assemble_ahead(cursor, candidates, limits, cache)
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
    write_projection(tx, doc, posyandu, &changed.projection).await?;
    write_conflicts(tx, doc, posyandu, &changed.conflicts, None, now).await?;
    let write = core::DocWrite::Whole(changed.saved);
    let pending = plan::NewState::new(doc, kind, posyandu, &changed.heads, write, format!("server:{instance}"));
    let seqs = commit_pending(tx, std::slice::from_ref(&pending), now).await?;
    seqs.first().map(|s| *s as u64).ok_or_else(|| StoreError::Backend("no feed position".into()))
}

async fn conflict_by_id(tx: &Transaction<'_>, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
    query_opt(tx, &plan::conflict_by_id(D, id)).await?.as_ref().map(plan::conflict).transpose()
}

/// The stored document a server change applies to: its kind and bytes (read under its lock).
async fn doc_to_change(tx: &Transaction<'_>, doc: DocId) -> Result<(DocKind, Vec<u8>), StoreError> {
    let row = stored_doc(tx, doc).await?.ok_or_else(|| StoreError::NotFound(format!("document {doc}")))?;
    Ok((row.kind, doc_bytes(tx, doc).await?))
}

/// Run CPU-bound Automerge work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Backend(format!("merge task: {e}")))?
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
    let (kind, saved) = doc_to_change(tx, c.doc).await?;
    let (collection, record_id, field, value, instance_s) =
        (c.collection.clone(), c.record_id.clone(), c.field.clone(), value.clone(), instance.to_owned());
    let doc = c.doc;
    let resolved = blocking(move || {
        let target = core::Target { collection: &collection, record_id: &record_id, field: &field };
        core::resolve(doc, &saved, &target, &value, posync_model::doc::server_actor(&instance_s), now)
    })
    .await?;
    let seq = commit_server_change(tx, c.doc, kind, c.posyandu.as_str(), resolved, instance, now).await?;
    Ok(ResolvedConflict { doc: c.doc, seq })
}

async fn locate_person(tx: &Transaction<'_>, id: PersonId) -> Result<(DocId, PosyanduId), StoreError> {
    let row = query_opt(tx, &plan::locate_person(D, id))
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))?;
    let doc = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
    Ok((doc, row.text(1)?.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?))
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
    let (doc, _) = locate_person(tx, duplicate).await?;
    lock_docs(tx, [doc]).await?;
    // Again under the lock: it may have been merged meanwhile.
    let (doc, posyandu) = locate_person(tx, duplicate).await?;
    let (_, keep_posyandu) = locate_person(tx, keep).await?;
    if !scope.allows(&posyandu) || !scope.allows(&keep_posyandu) {
        return Err(StoreError::NotFound("unmerged person in your scope".into()));
    }
    let (kind, saved) = doc_to_change(tx, doc).await?;
    let instance_s = instance.to_owned();
    let changed = blocking(move || {
        core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(&instance_s), now)
    })
    .await?;
    let seq = commit_server_change(tx, doc, kind, posyandu.as_str(), changed, instance, now).await?;
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

impl PgStore {
    /// The rows of one read-only statement, from one snapshot.
    async fn read_rows(&self, s: crate::sql::Statement) -> Result<Vec<crate::sql::Row>, StoreError> {
        reading!(self, |tx| query(&tx, &s).await?)
    }

    /// The rows of two read-only statements, from one snapshot.
    async fn read_two(
        &self,
        a: crate::sql::Statement,
        b: crate::sql::Statement,
    ) -> Result<(Vec<crate::sql::Row>, Vec<crate::sql::Row>), StoreError> {
        reading!(self, |tx| (query(&tx, &a).await?, query(&tx, &b).await?))
    }
}

#[async_trait]
impl SyncStore for PgStore {
    fn incarnation(&self) -> u32 {
        self.incarnation
    }

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
            self.cache.put(doc, am, saved);
        }
        Ok(acks)
    }

    async fn forget_device_heads(&self, device: DeviceId, keep: Vec<DocId>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        exec(&tx, &plan::forget_heads(D, device, &keep)).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn forget_dropped(&self, device: DeviceId, docs: Vec<DocId>, now: i64) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        exec(&tx, &plan::forget_docs(D, device, &docs, now)).await?;
        tx.commit().await?;
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
        let (rows, chunks) = self.read_two(plan::doc_by_id(D, doc), plan::chunks_of(D, &[doc])).await?;
        Ok(plan::streams(rows, chunks)?.pop().map(|s| StoredDoc { meta: s.meta, bytes: s.bytes }))
    }

    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::scope_docs(D, &scope)).await?;
        rows.iter().map(plan::meta).collect()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let client = self.client().await?;
        let mut n = [0u64; 5];
        for (slot, sql) in n.iter_mut().zip(plan::STATS) {
            *slot = client.query_one(sql, &[]).await?.try_get::<_, i64>(0)? as u64;
        }
        let [docs, visits, people, feed_entries, device_heads] = n;
        Ok(StoreStats { docs, visits, people, feed_entries, device_heads })
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.client().await?.query_one("SELECT 1", &[]).await?;
        Ok(())
    }
}

#[async_trait]
impl AccessStore for PgStore {
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

    async fn set_pin(&self, user: UserId, pin_hash: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::set_pin(&tx, &user, &pin_hash, now).await?)
    }

    async fn pin_of(&self, user: UserId) -> Result<Option<PinRecord>, StoreError> {
        reading!(self, |tx| access::pin_of(&tx, &user).await?)
    }

    async fn pin_attempt(&self, user: UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let attempt = access::pin_attempt(&tx, &user, now, lockout).await?;
        tx.commit().await?;
        Ok(attempt)
    }

    async fn pin_succeeded(
        &self,
        user: UserId,
        pin_hash: String,
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let record = access::pin_succeeded(&tx, &user, &pin_hash, &credential, now).await?;
        access::append_audit(&tx, &crate::access::signed_in_audit(&record, &credential, now)).await?;
        tx.commit().await?;
        Ok(record)
    }

    async fn create_api_key(&self, key: NewApiKey, audit: AuditEntry) -> Result<(), StoreError> {
        audited!(self, audit, |tx| access::create_api_key(&tx, &key).await?)
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        reading!(self, |tx| access::api_keys(&tx).await?)
    }

    async fn revoke_api_key(&self, id: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| access::revoke_api_key(&tx, &id, now).await?)
    }

    async fn use_api_key(
        &self,
        key_hash: [u8; 32],
        now: i64,
        route: String,
    ) -> Result<Option<ApiKeyAccess>, StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let out = access::use_api_key(&tx, &key_hash, now, &route).await?;
        tx.commit().await?;
        Ok(out)
    }
}

#[async_trait]
impl AuditStore for PgStore {
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
}

#[async_trait]
impl ReviewStore for PgStore {
    async fn conflicts(&self, scope: Scope, filter: ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::conflicts_list(D, &scope, &filter)).await?;
        rows.iter().map(plan::conflict).collect()
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
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::duplicate_people(D, &scope)).await?;
        rows.iter().map(plan::duplicate_pair).collect()
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
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::invalid_records(D, &scope)).await?;
        rows.iter().map(plan::invalid_record).collect()
    }
}

#[async_trait]
impl ReportStore for PgStore {
    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::report_facts(D, &scope, from, to)).await?;
        rows.iter().map(plan::fact).collect()
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::registered_people(D, &scope)).await?;
        Ok(rows.iter().filter_map(plan::registered_person).collect())
    }

    async fn person_facts(
        &self,
        scope: Scope,
        person: posync_model::PersonId,
    ) -> Result<Vec<crate::PersonVisit>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::person_facts(D, &scope, person)).await?;
        rows.iter().map(plan::person_visit).collect()
    }

    async fn people_seen(
        &self,
        scope: Scope,
        name: Option<String>,
        limit: u32,
    ) -> Result<Vec<crate::PersonSeen>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_seen(D, &scope, name.as_deref(), limit)).await?;
        rows.iter().map(plan::person_seen).collect()
    }

    async fn people_contacts(&self, scope: Scope) -> Result<Vec<crate::PersonContact>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_contacts(D, &scope)).await?;
        rows.iter().map(plan::person_contact).collect()
    }
    async fn people_export(&self, scope: Scope) -> Result<Vec<crate::PersonExport>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_export(D, &scope)).await?;
        rows.iter().map(plan::person_export).collect()
    }
}

//! The embedded SQLite store: one file, WAL, `synchronous=FULL` (an acknowledged sync survives
//! power loss), one writer at a time, readers in parallel. Write transactions begin
//! IMMEDIATE: a second process on the same file waits its turn (busy timeout) instead of
//! failing when a read-then-write transaction cannot upgrade. Blocking SQLite calls run on
//! tokio's blocking pool, never on the async workers.
//!
//! What is read and written is planned once in [`crate::plan`] for both backends; this
//! adapter runs it (`exec`) and decides only what is SQLite's own: one writer, and feed
//! positions from the feed's own row ids.

pub(crate) mod access;
mod exec;
mod group;
mod schema;

use crate::cache::DocCache;
use crate::core::{self, Existing};
use crate::plan;
use crate::{
    AccessStore, ApiKeyAccess, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, AuditStore, DeviceAccess,
    DeviceRecord, ImportReport, NewApiKey, NewCredential, NewEnrolment, PageLimits, PinAttempt, PinLockout, PinRecord,
    PullPage, ReportStore, ReviewStore, StoreError, StoreStats, StoredDoc, StoredMeta, SyncStore, UnitTree, UserRecord,
};
use async_trait::async_trait;
use exec::{D, exec, query, query_opt, write_conflicts, write_projection};
use posync_model::{DeviceId, DocId, FieldValue, HierarchyFile, PersonId, Scope, UserId, UserSpec};
use posync_proto::{DocAck, DocPush, Limits};
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use schema::{incarnation, migrate, open_conn};
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const READERS_MAX: usize = 8;

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// Pushes waiting for the writer; whoever takes the writer commits them together.
    pushes: Mutex<Vec<group::PushJob>>,
    commits: group::Counts,
}

/// SQLite-backed [`crate::Store`]. Cheap to clone.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    limits: Limits,
    /// Documents kept loaded between requests.
    cache: Arc<DocCache>,
    incarnation: u32,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the store at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let mut writer = open_conn(&path)?;
        migrate(&mut writer)?;
        let incarnation = incarnation(&mut writer)?;
        Ok(Self {
            incarnation,
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(writer),
                readers: Mutex::new(Vec::new()),
                pushes: Mutex::new(Vec::new()),
                commits: group::Counts::default(),
            }),
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
                access::put_unit(tx, unit)?;
            }
            access::put_user(tx, user, now)?;
            access::register_device(tx, &user.id, credential, now)
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
            access::append_audit(&tx, &audit)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }

    /// Copy the whole store, consistent as of one moment, into a new file at `dest`, while
    /// the server keeps serving (`VACUUM INTO` reads one snapshot; writers are not held up).
    /// The copy is checked (`integrity_check`) before this returns.
    pub async fn backup_into(&self, dest: PathBuf) -> Result<u64, StoreError> {
        if dest.exists() {
            return Err(StoreError::Invalid(format!("{} exists already; back up into a new file", dest.display())));
        }
        let target = dest.to_str().ok_or_else(|| StoreError::Invalid("backup path is not UTF-8".into()))?.to_owned();
        self.read(move |conn| {
            conn.execute("VACUUM INTO ?1", [&target])?;
            Ok(())
        })
        .await?;
        let copy = Connection::open(&dest)?;
        // The copy's first open as a store renews its incarnation: phones will know it was
        // restored.
        copy.execute("INSERT OR REPLACE INTO store_meta (key, value) VALUES ('restore_pending', 1)", [])?;
        let check: String = copy.query_row("PRAGMA integrity_check", [], |r| r.get(0))?;
        if check != "ok" {
            return Err(StoreError::Backend(format!("backup integrity_check: {check}")));
        }
        Ok(copy.query_row("SELECT COUNT(*) FROM docs", [], |r| r.get::<_, i64>(0))? as u64)
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

/// Documents merged by a push, to keep loaded (see `group::run_one`).
type Merged = Vec<(DocId, automerge::Automerge, usize)>;

/// A stored document read for a merge: kind, posyandu, bytes, heads.
fn stored_doc(conn: &Connection, doc: DocId) -> Result<Option<plan::StoredRow>, StoreError> {
    query_opt(conn, &plan::stored_doc(D, doc))?.map(|row| plan::stored_row(doc, &row)).transpose()
}

/// A stored document's bytes (snapshot, then chunks), for when no loaded copy is at hand.
fn doc_bytes(conn: &Connection, doc: DocId) -> Result<Vec<u8>, StoreError> {
    plan::concat_bytes(query(conn, &plan::doc_bytes(D, doc))?)?
        .ok_or_else(|| StoreError::NotFound(format!("document {doc}")))
}

/// Append a feed row for the document's new state and store the state under that position.
fn commit_doc(tx: &Connection, state: &plan::NewState, now: i64) -> Result<u64, StoreError> {
    let s = state;
    tx.execute(
        "INSERT INTO feed (doc_id, posyandu, heads, device_id, at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![s.doc, s.posyandu, s.heads, s.writer, now],
    )?;
    let seq = tx.last_insert_rowid();
    for statement in plan::doc_write(D, s, seq, now) {
        exec(tx, &statement)?;
    }
    Ok(seq as u64)
}

fn push_tx(
    tx: &Connection,
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
    let writer = device.to_string();
    for push in pushes {
        if !seen.insert(push.doc) {
            return Err(StoreError::DuplicateDoc { doc: push.doc });
        }
        let stored = stored_doc(tx, push.doc)?;
        let mut merged = match &stored {
            Some(row) => {
                if !scope.allows(&row.posyandu) {
                    return Err(StoreError::Forbidden { doc: push.doc });
                }
                let loaded = cache.get(push.doc, &row.heads);
                let bytes = if loaded.is_some() { Vec::new() } else { doc_bytes(tx, push.doc)? };
                let existing =
                    Existing { kind: row.kind, posyandu: &row.posyandu, bytes: &bytes, form: row.form, loaded };
                core::merge_push(Some(existing), push, &rules, &mut used)?
            }
            None => {
                if !scope.allows(&push.posyandu) {
                    return Err(StoreError::Forbidden { doc: push.doc });
                }
                core::merge_push(None, push, &rules, &mut used)?
            }
        };
        if let Some(write) = merged.write.take() {
            let before = stored.as_ref().map(|r| r.form).unwrap_or_default();
            if let Some(am) = merged.doc.take() {
                kept.push((push.doc, am, before.after(&write).bytes));
            }
            let posyandu = push.posyandu.as_str();
            let state =
                plan::NewState::new(push.doc, push.kind, posyandu, &merged.heads, write, writer.clone()).after(before);
            commit_doc(tx, &state, now)?;
            if let Some(p) = &merged.projection {
                write_projection(tx, push.doc, posyandu, p)?;
            }
            let only = merged.projection.as_ref().and_then(|p| p.only.as_deref());
            write_conflicts(tx, push.doc, posyandu, &merged.conflicts, only, now)?;
        } else if stored.is_none() {
            // An empty push for a document nobody has: acknowledge it, record nothing.
            acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
            continue;
        }
        exec(tx, &plan::ack(D, device, push.doc, &merged.device_heads, now))?;
        acks.push(DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() });
    }
    exec(tx, &plan::device_pushed(D, device, now))?;
    Ok((acks, kept))
}

/// Store a change the server made to a document (a resolution, a merge of people): feed row,
/// document, projection and conflict index, in the caller's transaction.
fn commit_server_change(
    tx: &Transaction<'_>,
    doc: DocId,
    kind: posync_model::DocKind,
    posyandu: &str,
    changed: core::Resolved,
    instance: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let writer = format!("server:{instance}");
    let state = plan::NewState::new(doc, kind, posyandu, &changed.heads, core::DocWrite::Whole(changed.saved), writer);
    let seq = commit_doc(tx, &state, now)?;
    write_projection(tx, doc, posyandu, &changed.projection)?;
    write_conflicts(tx, doc, posyandu, &changed.conflicts, None, now)?;
    Ok(seq)
}

/// The stored document a server change applies to: its kind and bytes.
fn doc_to_change(tx: &Transaction<'_>, doc: DocId) -> Result<(posync_model::DocKind, Vec<u8>), StoreError> {
    let row = stored_doc(tx, doc)?.ok_or_else(|| StoreError::NotFound(format!("document {doc}")))?;
    Ok((row.kind, doc_bytes(tx, doc)?))
}

fn resolve_tx(
    tx: &Transaction<'_>,
    id: &str,
    value: &FieldValue,
    instance: &str,
    now: i64,
) -> Result<crate::ResolvedConflict, StoreError> {
    let row = query_opt(tx, &plan::conflict_by_id(D, id))?;
    let c = plan::conflict(&row.ok_or_else(|| StoreError::NotFound(format!("open conflict {id}")))?)?;
    let (kind, saved) = doc_to_change(tx, c.doc)?;
    let target = core::Target { collection: &c.collection, record_id: &c.record_id, field: &c.field };
    let resolved = core::resolve(c.doc, &saved, &target, value, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, c.doc, kind, c.posyandu.as_str(), resolved, instance, now)?;
    Ok(crate::ResolvedConflict { doc: c.doc, seq })
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
    let locate = |id: PersonId| -> Result<(DocId, posync_model::PosyanduId), StoreError> {
        let row = query_opt(tx, &plan::locate_person(D, id))?
            .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))?;
        let doc = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
        Ok((doc, row.text(1)?.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?))
    };
    if duplicate == keep {
        return Err(StoreError::Invalid("a person cannot be merged into itself".into()));
    }
    let (doc, posyandu) = locate(duplicate)?;
    let (_, keep_posyandu) = locate(keep)?;
    if !scope.allows(&posyandu) || !scope.allows(&keep_posyandu) {
        return Err(StoreError::NotFound("unmerged person in your scope".into()));
    }
    let (kind, saved) = doc_to_change(tx, doc)?;
    let changed = core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, doc, kind, posyandu.as_str(), changed, instance, now)?;
    Ok(crate::ResolvedConflict { doc, seq })
}

/// Candidates of a pull: each document's row with what the device is known to hold.
fn candidates(
    conn: &Connection,
    device: DeviceId,
    docs: &[DocId],
    after: Option<i64>,
    cursor: i64,
    cache: &DocCache,
) -> Result<Vec<core::Candidate>, StoreError> {
    if docs.is_empty() {
        return Ok(Vec::new());
    }
    let mut known = plan::parse_known(&query(conn, &plan::known_heads(D, docs, device, cursor))?)?;
    let rows = query(conn, &plan::docs_by_ids(D, docs, after))?;
    let chunks = query(conn, &plan::chunks_of(D, docs))?;
    let mut out = Vec::with_capacity(rows.len());
    for stream in plan::streams(rows, chunks)? {
        let held = known.remove(&stream.meta.doc).unwrap_or_default();
        out.push(core::candidate(stream, held, cache));
    }
    Ok(out)
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
    let feed_end: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM feed")?.query_row([], |r| r.get(0))?;
    // A cursor from the future (a server restored from an older backup) cannot be trusted:
    // start the device over; re-sent changes are harmless duplicates.
    let cursor = if cursor > feed_end as u64 { 0 } else { cursor };
    let cursor_i = i64::try_from(cursor).map_err(|_| StoreError::Backend("cursor overflow".into()))?;
    let mut scan = core::PageScan::new(limits.docs_max);
    let mut from = cursor_i;
    'scan: loop {
        let rows = query(&tx, &plan::feed_scan(D, scope, from, feed_end, core::FEED_SCAN_BATCH))?;
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
        candidates(&tx, device, &docs, None, cursor_i, cache)?.into_iter().map(|c| (c.meta.doc, c)).collect();
    core::assemble_page(cursor, scan, stored, feed_end as u64, limits, cache)
}

/// The documents of `docs` in `scope` changed after `cursor`, with what the device holds.
fn pull_ahead_tx(
    conn: &Connection,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    docs: &[DocId],
    limits: PageLimits,
    cache: &DocCache,
) -> Result<PullPage, StoreError> {
    let cursor_i = i64::try_from(cursor).unwrap_or(i64::MAX);
    let mut found: HashMap<_, _> = candidates(conn, device, docs, Some(cursor_i), cursor_i, cache)?
        .into_iter()
        // Scope from the server's own record of the document, never from the request.
        .filter(|c| scope.allows(&c.meta.posyandu))
        .map(|c| (c.meta.doc, c))
        .collect();
    // In the order the device asked for them.
    let candidates = docs.iter().filter_map(|d| found.remove(d).map(|c| (*d, c))).collect();
    core::assemble_ahead(cursor, candidates, limits, cache)
}

#[async_trait]
impl SyncStore for SqliteStore {
    fn incarnation(&self) -> u32 {
        self.incarnation
    }

    fn push_commits(&self) -> Option<crate::PushCommits> {
        Some(self.inner.commits.get())
    }

    async fn push(
        &self,
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> Result<Vec<DocAck>, StoreError> {
        let (job, answer) = group::PushJob::new(device, scope, pushes, now);
        self.inner.pushes.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(job);
        let (inner, limits, cache) = (self.inner.clone(), self.limits, self.cache.clone());
        // Whoever takes the writer next commits every push waiting then, this one included;
        // a task that finds the line empty had its push committed by an earlier one.
        let took = tokio::task::spawn_blocking(move || {
            let mut conn = inner.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let jobs = std::mem::take(&mut *inner.pushes.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
            if !jobs.is_empty() {
                group::commit_all(&mut conn, jobs, limits, &cache, &inner.commits);
            }
        })
        .await;
        // The answer decides, not the task: a task that failed in a later group may already
        // have answered this push after its commit.
        match answer.await {
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Backend(match took {
                Err(e) => format!("writer task: {e}"),
                Ok(()) => "the push's group ended before its commit".into(),
            })),
        }
    }

    async fn forget_device_heads(&self, device: DeviceId, keep: Vec<DocId>) -> Result<(), StoreError> {
        let probe = plan::holds_other_docs(D, device, &keep);
        // Most devices at cursor 0 are new and hold nothing to forget: do not take the single
        // writer (and an fsync) for them.
        if self.read(move |conn| query_opt(conn, &probe)).await?.is_none() {
            return Ok(());
        }
        let forget = plan::forget_heads(D, device, &keep);
        self.write(move |conn| exec(conn, &forget).map(drop)).await
    }

    async fn forget_dropped(&self, device: DeviceId, docs: Vec<DocId>, now: i64) -> Result<(), StoreError> {
        let forget = plan::forget_docs(D, device, &docs, now);
        self.write(move |conn| exec(conn, &forget).map(drop)).await
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
            let rows = query(conn, &plan::doc_by_id(D, doc))?;
            let chunks = query(conn, &plan::chunks_of(D, &[doc]))?;
            Ok(plan::streams(rows, chunks)?.pop().map(|s| StoredDoc { meta: s.meta, bytes: s.bytes }))
        })
        .await
    }

    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError> {
        self.read(move |conn| query(conn, &plan::scope_docs(D, &scope))?.iter().map(plan::meta).collect()).await
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.read(|conn| {
            let mut n = [0u64; 5];
            for (slot, sql) in n.iter_mut().zip(plan::STATS) {
                *slot = conn.query_row(sql, [], |r| r.get::<_, i64>(0))? as u64;
            }
            let [docs, visits, people, feed_entries, device_heads] = n;
            Ok(StoreStats { docs, visits, people, feed_entries, device_heads })
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.read(|conn| Ok(conn.query_row("SELECT 1", [], |_| Ok(()))?)).await
    }
}

#[async_trait]
impl AccessStore for SqliteStore {
    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::import(tx, &file, now)).await
    }

    async fn unit_tree(&self) -> Result<UnitTree, StoreError> {
        self.read(|conn| access::unit_tree(conn)).await
    }

    async fn save_unit(&self, unit: posync_model::Unit, audit: AuditEntry) -> Result<(), StoreError> {
        self.write_audited(audit, move |tx| access::put_unit(tx, &unit)).await
    }

    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::put_user(tx, &user, now)).await
    }

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError> {
        self.read(move |conn| access::user(conn, &user)).await
    }

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        self.read(|conn| access::users(conn)).await
    }

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::issue_enrolment(tx, &enrolment, now)).await
    }

    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let user = access::redeem_enrolment(&tx, &code_hash, &credential, now)?;
            let actor = crate::Actor::Device { device: credential.device };
            let detail = serde_json::json!({ "user": user.id, "label": credential.label });
            access::append_audit(
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
            let out = access::refresh_device(&tx, device, &refresh_hash, new_expires_at, now);
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
        self.write_audited(audit, move |tx| access::revoke_device(tx, device, now)).await
    }

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError> {
        self.read(|conn| access::devices(conn)).await
    }

    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
        self.read(move |conn| {
            // One snapshot: the user, the device's state and the scope agree with each other.
            let tx = conn.transaction()?;
            access::device_access(&tx, device)
        })
        .await
    }

    async fn set_pin(&self, user: UserId, pin_hash: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::set_pin(tx, &user, &pin_hash, now)).await
    }

    async fn pin_of(&self, user: UserId) -> Result<Option<PinRecord>, StoreError> {
        self.read(move |conn| access::pin_of(conn, &user)).await
    }

    async fn pin_attempt(&self, user: UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let attempt = access::pin_attempt(&tx, &user, now, lockout)?;
            tx.commit()?;
            Ok(attempt)
        })
        .await
    }

    async fn pin_succeeded(
        &self,
        user: UserId,
        pin_hash: String,
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let record = access::pin_succeeded(&tx, &user, &pin_hash, &credential, now)?;
            access::append_audit(&tx, &crate::access::signed_in_audit(&record, &credential, now))?;
            tx.commit()?;
            Ok(record)
        })
        .await
    }

    async fn create_api_key(&self, key: NewApiKey, audit: AuditEntry) -> Result<(), StoreError> {
        self.write_audited(audit, move |tx| access::create_api_key(tx, &key)).await
    }

    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError> {
        self.read(|conn| access::api_keys(conn)).await
    }

    async fn revoke_api_key(&self, id: String, audit: AuditEntry) -> Result<(), StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| access::revoke_api_key(tx, &id, now)).await
    }

    async fn use_api_key(
        &self,
        key_hash: [u8; 32],
        now: i64,
        route: String,
    ) -> Result<Option<ApiKeyAccess>, StoreError> {
        self.write(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = access::use_api_key(&tx, &key_hash, now, &route)?;
            tx.commit()?;
            Ok(out)
        })
        .await
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError> {
        self.write(move |conn| access::append_audit(conn, &entry)).await
    }

    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| access::audit_log(conn, after, limit, None)).await
    }

    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.read(move |conn| access::audit_log(conn, after, limit, Some(&districts))).await
    }
}

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn conflicts(
        &self,
        scope: Scope,
        filter: crate::ConflictFilter,
    ) -> Result<Vec<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::conflicts_list(D, &scope, &filter))?.iter().map(plan::conflict).collect()
        })
        .await
    }

    async fn conflict(&self, id: String) -> Result<Option<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| query_opt(conn, &plan::conflict_by_id(D, &id))?.as_ref().map(plan::conflict).transpose())
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
        self.read(move |conn| {
            query(conn, &plan::duplicate_people(D, &scope))?.iter().map(plan::duplicate_pair).collect()
        })
        .await
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
            query(conn, &plan::invalid_records(D, &scope))?.iter().map(plan::invalid_record).collect()
        })
        .await
    }
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        self.read(move |conn| query(conn, &plan::report_facts(D, &scope, from, to))?.iter().map(plan::fact).collect())
            .await
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        self.read(move |conn| {
            Ok(query(conn, &plan::registered_people(D, &scope))?.iter().filter_map(plan::registered_person).collect())
        })
        .await
    }

    async fn person_facts(
        &self,
        scope: Scope,
        person: posync_model::PersonId,
    ) -> Result<Vec<crate::PersonVisit>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::person_facts(D, &scope, person))?.iter().map(plan::person_visit).collect()
        })
        .await
    }

    async fn people_seen(
        &self,
        scope: Scope,
        name: Option<String>,
        limit: u32,
    ) -> Result<Vec<crate::PersonSeen>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::people_seen(D, &scope, name.as_deref(), limit))?.iter().map(plan::person_seen).collect()
        })
        .await
    }

    async fn people_contacts(&self, scope: Scope) -> Result<Vec<crate::PersonContact>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::people_contacts(D, &scope))?.iter().map(plan::person_contact).collect()
        })
        .await
    }
    async fn people_export(&self, scope: Scope) -> Result<Vec<crate::PersonExport>, StoreError> {
        self.read(move |conn| query(conn, &plan::people_export(D, &scope))?.iter().map(plan::person_export).collect())
            .await
    }
}

//! The embedded SQLite store: one file, WAL, `synchronous=FULL` (an acknowledged sync survives
//! power loss), one writer at a time, readers in parallel. Write transactions begin
//! IMMEDIATE: a second process on the same file waits its turn (busy timeout) instead of
//! failing when a read-then-write transaction cannot upgrade. Blocking SQLite calls run on
//! tokio's blocking pool, never on the async workers.
//!
//! What is read and written is planned once in [`crate::plan`] for both backends; this
//! adapter runs it (`exec`) and decides only what is SQLite's own: one writer, and feed
//! positions from the feed's own row ids.
//!
//! One file per concern, as the store's traits split them: `sync` ([`crate::SyncStore`]: pushes
//! through `group` commit, pulls), `review` ([`crate::ReviewStore`], [`crate::ReportStore`]),
//! `admin` ([`crate::AccessStore`], [`crate::AuditStore`], over `access`'s rows); `exec` runs
//! plans, `schema` opens and migrates. This file holds the store and its writer and readers.

pub(crate) mod access;
mod admin;
mod exec;
mod group;
mod review;
mod schema;
mod sync;

use crate::cache::DocCache;
use crate::plan;
use crate::{AuditEntry, NewCredential, StoreError};
use exec::{D, exec, query, query_opt};
use posync_model::{DocId, UserSpec};
use posync_proto::Limits;
use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use schema::{incarnation, migrate, open_conn};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Reader connections, and reads running at once. A read waits for a free connection rather
/// than opening one: under a reconnect storm (hundreds of syncs in flight) an unbounded pool
/// opened and closed connections per request, each starting with a cold page cache and no
/// compiled statements, on as many blocking threads as there were reads.
const READERS_MAX: usize = 8;

struct Inner {
    path: PathBuf,
    writer: Mutex<Connection>,
    readers: Mutex<Vec<Connection>>,
    /// One permit per reader connection: a read holds one while it runs.
    read_turns: Arc<tokio::sync::Semaphore>,
    /// Reader connections opened since the store opened (a pool that works opens
    /// [`READERS_MAX`] at most).
    readers_opened: std::sync::atomic::AtomicU64,
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
                read_turns: Arc::new(tokio::sync::Semaphore::new(READERS_MAX)),
                readers_opened: std::sync::atomic::AtomicU64::new(0),
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

    /// Reader connections kept, and reads running at once.
    pub const READERS_MAX: usize = READERS_MAX;

    /// Reader connections opened since the store opened.
    pub fn reader_connections_opened(&self) -> u64 {
        self.inner.readers_opened.load(std::sync::atomic::Ordering::Relaxed)
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
        // The permit moves into the blocking task: a caller that goes away (its phone hung
        // up) does not free the connection while the read still runs.
        let turn = inner
            .read_turns
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Backend("reader pool closed".into()))?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            let pooled = inner.readers.lock().unwrap_or_else(std::sync::PoisonError::into_inner).pop();
            let mut conn = match pooled {
                Some(c) => c,
                None => {
                    inner.readers_opened.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    open_conn(&inner.path)?
                }
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
    tx.prepare_cached("INSERT INTO feed (doc_id, posyandu, heads, device_id, at) VALUES (?1, ?2, ?3, ?4, ?5)")?
        .execute(params![s.doc, s.posyandu, s.heads, s.writer, now])?;
    let seq = tx.last_insert_rowid();
    for statement in plan::doc_write(D, s, seq, now) {
        exec(tx, &statement)?;
    }
    Ok(seq as u64)
}

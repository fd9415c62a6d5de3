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
//!
//! One file per concern, as the store's traits split them: `sync` ([`crate::SyncStore`]),
//! `review` ([`crate::ReviewStore`], [`crate::ReportStore`]), `admin` ([`crate::AccessStore`],
//! [`crate::AuditStore`], over `access`'s rows); `exec` runs plans. This file holds the pool,
//! the migrations, the locks and the feed clock that every write shares.

mod access;
mod exec;
pub mod testing;

pub(crate) use exec::{Param, insert_rows};

use crate::plan;
use crate::{NewCredential, StoreError};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Transaction};
use exec::{D, exec, query, query_opt};
use posync_model::{DocId, Unit, UserSpec};
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

/// Run CPU-bound Automerge work on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| StoreError::Backend(format!("merge task: {e}")))?
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

// Declared after the macros above, which they use.
mod admin;
mod review;
mod sync;

//! Server persistence behind one trait.
//!
//! [`core`] holds the merge and page decisions as plain functions over bytes (no I/O), so they
//! can be tested and simulated alone. [`sqlite`] is the embedded default adapter; a
//! PostgreSQL adapter implements the same [`Store`] trait.

pub mod core;
mod error;
pub mod sqlite;

pub use error::StoreError;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use posync_model::{DeviceId, DocId, DocKind, Heads, PosyanduId, Scope};
use posync_proto::{DocAck, DocPull, DocPush};

/// What the server records about a document, independent of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMeta {
    pub doc: DocId,
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    /// Feed position of the document's latest change.
    pub seq: u64,
    pub heads: Heads,
}

/// A stored document with its saved bytes.
#[derive(Clone, Debug)]
pub struct StoredDoc {
    pub meta: StoredMeta,
    pub bytes: Vec<u8>,
}

/// Bounds of one pulled page.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub bytes_max: usize,
    pub docs_max: usize,
}

/// One page of the change feed for a scope.
#[derive(Clone, Debug, Default)]
pub struct PullPage {
    pub docs: Vec<DocPull>,
    pub cursor: u64,
    pub more: bool,
}

/// Counts for health checks, tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub docs: u64,
    pub visits: u64,
    pub people: u64,
    pub feed_entries: u64,
}

/// Server-side persistence. Every method is one transaction.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Merge pushed documents. All or nothing: a batch with one bad or out-of-scope document
    /// stores nothing. Returns acknowledgements only after the commit is durable.
    async fn push(
        &self,
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> Result<Vec<DocAck>, StoreError>;

    /// Documents in `scope` changed after `cursor`, each with only the changes the device lacks.
    async fn pull(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError>;

    /// One document, if stored.
    async fn get(&self, doc: DocId) -> Result<Option<StoredDoc>, StoreError>;

    /// Metadata of every document of the given posyandu, by feed order.
    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError>;

    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<(), StoreError>;
}

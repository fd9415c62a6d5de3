//! Sync on PostgreSQL: pushes (documents locked, merged on the blocking pool, the feed clock
//! taken last), pulls from one snapshot, and the no-op probe.

use super::exec::{D, exec, query, run_writes};
use super::{PgStore, commit_pending, doc_bytes, lock_docs, stored_doc, to_i64};
use crate::core::{self, Existing};
use crate::plan;
use crate::{PageLimits, PullPage, StoreError, StoreStats, StoredDoc, StoredMeta, SyncStore};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use posync_model::guard::Usage;
use posync_model::{DeviceId, DocId, Scope};
use posync_proto::{DocAck, DocPush};
use std::collections::HashMap;

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
    core::distinct_docs(&pushes)?;
    lock_docs(tx, pushes.iter().map(|p| p.doc)).await?;
    let rules = core::Rules { device, limits, now };
    let mut used = Usage::default();
    let writer = device.to_string();
    let (mut acks, mut kept, mut pending) = (Vec::with_capacity(pushes.len()), Vec::new(), Vec::new());
    for push in pushes {
        let stored = stored_doc(tx, push.doc).await?;
        core::push_allowed(scope, stored.as_ref().map(|row| &row.posyandu), &push)?;
        let before = stored.as_ref().map(|row| row.form);
        let loaded = stored.as_ref().and_then(|row| cache.get(push.doc, &row.heads));
        let stored = match stored {
            Some(row) if loaded.is_none() => Some((row, doc_bytes(tx, push.doc).await?)),
            Some(row) => Some((row, Vec::new())),
            None => None,
        };
        let (push, merged, now_used) = merge_blocking(stored, loaded, push, rules, used).await?;
        used = now_used;
        let mut settled = plan::settle_push(&push, merged?, before, &writer);
        run_writes(tx, &plan::settled_writes(D, device, &push, &settled, now)?).await?;
        pending.extend(settled.state.take());
        acks.push(settled.ack);
        kept.extend(settled.kept);
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
    let mut walk = plan::FeedWalk::new(D, scope, cursor_i, feed_end, limits.docs_max);
    while let Some(batch) = walk.next_batch() {
        walk.take(&query(tx, &batch).await?)?;
    }
    let scan = walk.scan;
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
    let found = candidates(tx, device, docs, Some(cursor_i), cursor_i, cache).await?;
    core::assemble_ahead(cursor, scope, docs, found, limits, cache)
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

    async fn pull_first(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        first: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        reading!(self, |tx| {
            let ahead = pull_ahead_tx(&tx, device, &scope, cursor, &first, limits, &self.cache).await?;
            if ahead.docs.is_empty() { pull_tx(&tx, device, &scope, cursor, limits, &self.cache).await? } else { ahead }
        })
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

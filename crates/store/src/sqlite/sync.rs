//! Sync on SQLite: pushes (merged in the writer, see `group`), pulls and the no-op probe.
//! What is read and written is planned in [`crate::plan`] and decided in [`crate::core`].

use super::exec::{D, exec, query, query_opt, run_writes};
use super::{Merged, SqliteStore, commit_doc, doc_bytes, group, stored_doc};
use crate::cache::DocCache;
use crate::core::{self, Existing};
use crate::plan;
use crate::{PageLimits, PullPage, StoreError, StoreStats, StoredDoc, StoredMeta, SyncStore};
use async_trait::async_trait;
use posync_model::{DeviceId, DocId, Scope};
use posync_proto::{DocAck, DocPush, Limits};
use rusqlite::Connection;
use std::collections::HashMap;

pub(super) fn push_tx(
    tx: &Connection,
    device: DeviceId,
    scope: &Scope,
    pushes: &[DocPush],
    now: i64,
    limits: Limits,
    cache: &DocCache,
) -> Result<(Vec<DocAck>, Merged), StoreError> {
    core::distinct_docs(pushes)?;
    let rules = core::Rules { device, limits, now };
    let mut used = posync_model::guard::Usage::default();
    let writer = device.to_string();
    let (mut acks, mut kept) = (Vec::with_capacity(pushes.len()), Vec::new());
    for push in pushes {
        let stored = stored_doc(tx, push.doc)?;
        core::push_allowed(scope, stored.as_ref().map(|row| &row.posyandu), push)?;
        let loaded = stored.as_ref().and_then(|row| cache.get(push.doc, &row.heads));
        let bytes = match &stored {
            Some(_) if loaded.is_none() => doc_bytes(tx, push.doc)?,
            _ => Vec::new(),
        };
        let existing = stored.as_ref().map(|row| Existing {
            kind: row.kind,
            posyandu: &row.posyandu,
            bytes: &bytes,
            form: row.form,
            loaded,
        });
        let merged = core::merge_push(existing, push, &rules, &mut used)?;
        let settled = plan::settle_push(push, merged, stored.map(|row| row.form), &writer);
        if let Some(state) = &settled.state {
            commit_doc(tx, state, now)?;
        }
        run_writes(tx, &plan::settled_writes(D, device, push, &settled, now)?)?;
        acks.push(settled.ack);
        kept.extend(settled.kept);
    }
    exec(tx, &plan::device_pushed(D, device, now))?;
    Ok((acks, kept))
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
    tx: &Connection,
    device: DeviceId,
    scope: &Scope,
    cursor: u64,
    limits: PageLimits,
    cache: &DocCache,
) -> Result<PullPage, StoreError> {
    let feed_end: i64 = tx.prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM feed")?.query_row([], |r| r.get(0))?;
    // A cursor from the future (a server restored from an older backup) cannot be trusted:
    // start the device over; re-sent changes are harmless duplicates.
    let cursor = if cursor > feed_end as u64 { 0 } else { cursor };
    let cursor_i = i64::try_from(cursor).map_err(|_| StoreError::Backend("cursor overflow".into()))?;
    let mut walk = plan::FeedWalk::new(D, scope, cursor_i, feed_end, limits.docs_max);
    while let Some(batch) = walk.next_batch() {
        walk.take(&query(tx, &batch)?)?;
    }
    let scan = walk.scan;
    let docs: Vec<DocId> = scan.docs.iter().map(|(d, _)| *d).collect();
    let stored: HashMap<_, _> =
        candidates(tx, device, &docs, None, cursor_i, cache)?.into_iter().map(|c| (c.meta.doc, c)).collect();
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
    let found = candidates(conn, device, docs, Some(cursor_i), cursor_i, cache)?;
    core::assemble_ahead(cursor, scope, docs, found, limits, cache)
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
        self.read(move |conn| {
            let tx = conn.transaction()?;
            pull_tx(&tx, device, &scope, cursor, limits, &cache)
        })
        .await
    }

    async fn pull_first(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        first: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError> {
        let cache = self.cache.clone();
        self.read(move |conn| {
            let tx = conn.transaction()?;
            let ahead = pull_ahead_tx(&tx, device, &scope, cursor, &first, limits, &cache)?;
            if !ahead.docs.is_empty() {
                return Ok(ahead);
            }
            pull_tx(&tx, device, &scope, cursor, limits, &cache)
        })
        .await
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

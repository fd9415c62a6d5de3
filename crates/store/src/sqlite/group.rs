//! Group commit for pushes. SQLite has one writer and syncs the WAL to disk once per commit:
//! a commit costs its fsync, its WAL frames (the same feed, index and device pages written
//! again by every request) and a checkpoint now and then, whatever it holds. Pushes that
//! arrive while the writer is busy wait in a line; whoever takes the writer next merges them
//! all, each in its own savepoint, and commits them in one transaction.
//!
//! Invariants: a push is answered only after the commit that holds it returned (an
//! acknowledged push is on disk; a crash before that commit loses only unacknowledged
//! pushes, which their phones send again); a push that fails is rolled back to its savepoint
//! and answered alone, the others commit; if the transaction itself is lost (SQLite rolls it
//! back on I/O errors), no push of the group is acknowledged.

use super::sync::push_tx;
use crate::StoreError;
use crate::cache::DocCache;
use posync_model::{DeviceId, Scope};
use posync_proto::{DocAck, DocPush, Limits};
use rusqlite::{Connection, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::oneshot;

/// Pushes merged into one transaction at most; more waiting are committed in further ones.
pub const PUSHES_PER_COMMIT_MAX: usize = 64;

pub(super) type Answer = Result<Vec<DocAck>, StoreError>;

/// One push waiting for the writer, and where its answer goes.
pub(super) struct PushJob {
    device: DeviceId,
    scope: Scope,
    pushes: Vec<DocPush>,
    now: i64,
    answer: oneshot::Sender<Answer>,
}

impl PushJob {
    pub(super) fn new(
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> (Self, oneshot::Receiver<Answer>) {
        let (answer, receiver) = oneshot::channel();
        (Self { device, scope, pushes, now, answer }, receiver)
    }
}

/// Commits and the pushes they held, since the store opened.
#[derive(Default)]
pub(super) struct Counts {
    commits: AtomicU64,
    pushes: AtomicU64,
}

impl Counts {
    pub(super) fn get(&self) -> crate::PushCommits {
        crate::PushCommits {
            commits: self.commits.load(Ordering::Relaxed),
            pushes: self.pushes.load(Ordering::Relaxed),
        }
    }
}

/// Merge and commit `jobs` (every push waiting when the writer was taken), at most
/// [`PUSHES_PER_COMMIT_MAX`] to a transaction, answering each after its commit.
pub(super) fn commit_all(conn: &mut Connection, jobs: Vec<PushJob>, limits: Limits, cache: &DocCache, counts: &Counts) {
    let mut jobs = jobs.into_iter().peekable();
    while jobs.peek().is_some() {
        let group: Vec<PushJob> = jobs.by_ref().take(PUSHES_PER_COMMIT_MAX).collect();
        commit_group(conn, group, limits, cache, counts);
    }
}

fn commit_group(conn: &mut Connection, group: Vec<PushJob>, limits: Limits, cache: &DocCache, counts: &Counts) {
    let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return refuse_all(group.into_iter().map(|j| j.answer), &StoreError::from(e)),
    };
    let mut done = Vec::with_capacity(group.len());
    for job in group {
        // SQLite rolls a whole transaction back on some errors (I/O, disk full): then no
        // statement may run outside it, and nothing of this group commits.
        let outcome = if tx.is_autocommit() {
            Err(StoreError::Backend("the group's transaction was rolled back".into()))
        } else {
            run_one(&mut tx, &job, limits, cache)
        };
        done.push((job.answer, outcome));
    }
    let n = done.len() as u64;
    match tx.commit() {
        Ok(()) => {
            counts.commits.fetch_add(1, Ordering::Relaxed);
            counts.pushes.fetch_add(n, Ordering::Relaxed);
            for (answer, outcome) in done {
                // A caller that went away (its phone hung up) finds its push committed
                // when it asks again.
                let _ = answer.send(outcome);
            }
        }
        Err(e) => refuse_all(done.into_iter().map(|(a, _)| a), &StoreError::from(e)),
    }
}

/// One push in its own savepoint: kept if it merged, rolled back alone if it failed.
fn run_one(tx: &mut rusqlite::Transaction<'_>, job: &PushJob, limits: Limits, cache: &DocCache) -> Answer {
    let sp = tx.savepoint()?;
    let (acks, merged) = push_tx(&sp, job.device, &job.scope, &job.pushes, job.now, limits, cache)?;
    sp.commit()?;
    // Kept loaded before the group commits: a later push of the group merging the same
    // document finds it. Safe if the commit then fails: a copy is used only while its heads
    // are the stored heads, and those stay the old ones.
    for (doc, am, saved) in merged {
        cache.put(doc, am, saved);
    }
    Ok(acks)
}

fn refuse_all(answers: impl Iterator<Item = oneshot::Sender<Answer>>, e: &StoreError) {
    for answer in answers {
        let _ = answer.send(Err(e.same_kind()));
    }
}

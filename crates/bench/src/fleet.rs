//! The phones: one SQLite replica file per device, opened only while in use (so the number
//! of open files is bounded by the concurrency, not the fleet), and the blocking-pool runner
//! that drives them.

use anyhow::{Context, Result, anyhow};
use posync_model::{DocId, PosyanduId};
use posync_replica::{HttpSync, Replica, SyncReport};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// One kader phone.
pub struct Device {
    /// Index in the fleet: posyandu * devices_per_posyandu + slot.
    pub index: usize,
    /// Index of its posyandu.
    pub posyandu: usize,
    pub path: PathBuf,
    pub token: String,
}

/// Every posyandu in the run and its session document for the day.
pub struct Posyandu {
    pub id: PosyanduId,
    pub session: DocId,
}

/// Sums over the devices of one phase.
#[derive(Default)]
pub struct Totals {
    pub devices: usize,
    pub requests: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub pushed_docs: u64,
    pub pulled_docs: u64,
    pub max_rounds: usize,
    pub errors: Vec<String>,
}

impl Totals {
    pub fn add(&mut self, r: &SyncReport) {
        self.devices += 1;
        self.requests += r.rounds as u64;
        self.bytes_up += r.bytes.up;
        self.bytes_down += r.bytes.down;
        self.pushed_docs += r.pushed_docs as u64;
        self.pulled_docs += r.pulled_docs as u64;
        self.max_rounds = self.max_rounds.max(r.rounds);
    }
}

/// Run `f(i)` for `i in 0..n`, each call in its own tokio task and on the blocking pool (the
/// replica is synchronous SQLite), at most `limit` at a time. Results in index order.
pub async fn for_each_blocking<T, F>(n: usize, limit: usize, f: F) -> Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> T + Send + Sync + 'static,
{
    let sem = Arc::new(Semaphore::new(limit.max(1)));
    let f = Arc::new(f);
    let mut set = JoinSet::new();
    for i in 0..n {
        let sem = sem.clone();
        let f = f.clone();
        set.spawn(async move {
            let _permit = sem.acquire_owned().await.map_err(|e| anyhow!("semaphore: {e}"))?;
            let out = tokio::task::spawn_blocking(move || f(i)).await.context("device task")?;
            Ok::<_, anyhow::Error>((i, out))
        });
    }
    let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
    while let Some(joined) = set.join_next().await {
        let (i, v) = joined.context("device task")??;
        out[i] = Some(v);
    }
    out.into_iter().map(|v| v.context("a device task did not report")).collect()
}

/// One full sync of one replica (until its outbox is empty and the server has no more pages),
/// on the calling thread: a current-thread runtime drives the HTTP client, so a blocking-pool
/// thread carries the whole device.
pub fn sync_device(path: &Path, url: &str, token: &str) -> Result<SyncReport, String> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| format!("runtime: {e}"))?;
    let mut replica = Replica::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    rt.block_on(HttpSync::new(url, token).sync(&mut replica)).map_err(|e| e.to_string())
}

/// Sync every device in `devices`, at most `concurrency` at once, and sum their reports.
/// Device `i` syncs with server instance `urls[(i + shift) % urls.len()]`: a shift per phase
/// sends each device to another instance than last time.
pub async fn sync_all(devices: &Arc<Vec<Device>>, urls: &[String], shift: usize, concurrency: usize) -> Result<Totals> {
    let devs = devices.clone();
    anyhow::ensure!(!urls.is_empty(), "no server to sync with");
    let urls = urls.to_vec();
    let reports = for_each_blocking(devs.len(), concurrency, move |i| {
        let d = &devs[i];
        sync_device(&d.path, &urls[(i + shift) % urls.len()], &d.token)
            .map_err(|e| format!("device {} (posyandu #{}): {e}", d.index, d.posyandu))
    })
    .await?;
    let mut totals = Totals::default();
    for r in reports {
        match r {
            Ok(r) => totals.add(&r),
            Err(e) => totals.errors.push(e),
        }
    }
    Ok(totals)
}

/// Count of visits on a replica, and of those whose weight is "under review" (conflicted).
pub fn replica_counts(path: &Path) -> Result<(usize, usize), String> {
    let r = Replica::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
    let visits = r.all_visits().map_err(|e| e.to_string())?;
    let weight_conflicts = visits.iter().filter(|v| v.conflicts.split(',').any(|f| f == "weight_g")).count();
    Ok((visits.len(), weight_conflicts))
}

//! `posync-load`: N phones reconnecting at once against a real `posync serve` on 127.0.0.1
//! (every kader of a city back in range in the same minute), then syncing for a while with
//! random pauses. Bounded in devices and time; stops by itself. Prints one JSON object per
//! phase: latency percentiles per sync, throughput, errors by kind, server peak RSS.

use anyhow::{Context, Result, bail};
use clap::Parser;
use posync_bench::server;
use posync_model::{DocId, PosyanduId, Role};
use posync_replica::{HttpSync, Replica, RetryPolicy};
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, posyandu};
use rand::{Rng, SeedableRng};
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "posync-load", about = "N devices syncing at once against `posync serve` on 127.0.0.1")]
struct Args {
    /// Devices (phones), at most 5000.
    #[arg(long, default_value_t = 500)]
    devices: usize,
    /// Devices per posyandu.
    #[arg(long, default_value_t = 8)]
    per_posyandu: usize,
    /// Visits each phone captures offline before reconnecting.
    #[arg(long, default_value_t = 3)]
    visits: usize,
    /// Length of the steady phase after the reconnect storm.
    #[arg(long, default_value_t = 20)]
    steady_seconds: u64,
    /// Abort after this long, whatever happens.
    #[arg(long, default_value_t = 900)]
    deadline_seconds: u64,
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Before starting the server, fill its store with this many documents (one session
    /// document per posyandu-day, 100 days per posyandu, one visit each), to measure the
    /// server's memory over a large store. At most 1,000,000.
    #[arg(long, default_value_t = 0)]
    preload_docs: usize,
}

/// Fill the store with `n` session documents, 100 per push transaction.
async fn preload(store: &SqliteStore, n: usize, seed: u64) -> Result<()> {
    use posync_model::doc::{self, DocMeta};
    let mut g = Generator::new(seed ^ 0x5eed);
    let device = posync_model::DeviceId::new_random();
    let started = Instant::now();
    let mut batch = Vec::new();
    let mut scope = std::collections::BTreeSet::new();
    for i in 0..n {
        let p: PosyanduId = posyandu(&format!("mem-{:05}", i / 100));
        let date = DAY - time::Duration::days((i % 100) as i64);
        let meta = DocMeta::session(p.clone(), date);
        let mut am = doc::genesis(&meta, device.actor())?;
        let visit = g.child_visit_on(date).into_visit(device, date, 1);
        doc::record_visit(&mut am, &visit, 1)?;
        batch.push(posync_proto::DocPush {
            doc: meta.doc_id(),
            kind: meta.kind,
            posyandu: p.clone(),
            base: Vec::new(),
            heads: posync_model::Heads::new(am.get_heads()).to_bytes(),
            changes: am.save(),
        });
        scope.insert(p);
        if batch.len() == 100 || i + 1 == n {
            let s = posync_model::Scope::new(std::mem::take(&mut scope));
            store.push(device, s, std::mem::take(&mut batch), now()).await?;
        }
    }
    eprintln!("posync-load: preloaded {n} documents in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[i.min(sorted.len() - 1)] * 1000.0).round() / 1000.0
}

struct Outcome {
    latencies_ms: Vec<f64>,
    errors: BTreeMap<String, u64>,
    requests: u64,
    retries: u64,
}

fn summarise(phase: &str, devices: usize, wall: f64, mut o: Outcome, rss_kib: u64) -> serde_json::Value {
    o.latencies_ms.sort_by(f64::total_cmp);
    json!({
        "phase": phase,
        "devices": devices,
        "wall_seconds": (wall * 1000.0).round() / 1000.0,
        "syncs": o.latencies_ms.len(),
        "requests": o.requests,
        "retries_after_overload_or_network": o.retries,
        "syncs_per_second": ((o.latencies_ms.len() as f64 / wall) * 10.0).round() / 10.0,
        "latency_ms_p50": percentile(&o.latencies_ms, 0.50),
        "latency_ms_p95": percentile(&o.latencies_ms, 0.95),
        "latency_ms_p99": percentile(&o.latencies_ms, 0.99),
        "latency_ms_max": percentile(&o.latencies_ms, 1.0),
        "errors": o.errors,
        "server_peak_rss_kib": rss_kib,
    })
}

fn error_kind(e: &posync_replica::ReplicaError) -> String {
    match e {
        posync_replica::ReplicaError::Server { code, .. } => code.to_string(),
        posync_replica::ReplicaError::Network(_) => "network".into(),
        other => format!("{other}").chars().take(40).collect(),
    }
}

/// One device's syncs during a phase: until `until`, with pauses drawn from `pause_ms`.
async fn drive(
    mut replica: Replica,
    url: String,
    token: String,
    until: Option<Instant>,
    seed: u64,
) -> (Replica, Outcome) {
    // As a phone does: transient failures (overloaded, network) are retried with jittered
    // exponential backoff before the sync counts as failed.
    let client = HttpSync::new(&url, &token).with_retry(RetryPolicy::PHONE);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Outcome { latencies_ms: Vec::new(), errors: BTreeMap::new(), requests: 0, retries: 0 };
    loop {
        let started = Instant::now();
        match client.sync(&mut replica).await {
            Ok(r) => {
                out.requests += r.rounds as u64;
                out.retries += u64::from(r.retries);
                out.latencies_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Err(e) => {
                out.requests += 1;
                *out.errors.entry(error_kind(&e)).or_default() += 1;
            }
        }
        match until {
            Some(t) if Instant::now() < t => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(200..2_000))).await;
            }
            _ => return (replica, out),
        }
    }
}

async fn run(args: Args) -> Result<()> {
    if args.devices == 0 || args.devices > 5000 || args.per_posyandu == 0 {
        bail!("--devices must be 1..=5000 and --per-posyandu at least 1");
    }
    let bin = match args.server_bin {
        Some(b) => b,
        None => std::env::current_exe()?.parent().context("exe dir")?.join("posync"),
    };
    let dir = tempfile::Builder::new().prefix("posync-load-").tempdir()?;
    let keys = TokenKeys::generate(now());
    let keys_path = dir.path().join("keys.json");
    keys.save(&keys_path)?;
    let db = dir.path().join("server.sqlite");
    if args.preload_docs > 1_000_000 {
        bail!("--preload-docs is at most 1,000,000");
    }
    if args.preload_docs > 0 {
        preload(&SqliteStore::open(&db)?, args.preload_docs, args.seed).await?;
    }
    let mut srv =
        server::start(&bin, &server::Target::Sqlite(db.clone()), &dir.path().join("server.log"), &keys_path).await?;
    let store = SqliteStore::open(&db)?;
    if args.preload_docs > 0 {
        let db_bytes = std::fs::metadata(&db).map(|m| m.len()).unwrap_or(0);
        println!(
            "{}",
            json!({"phase": "preloaded", "docs_in_store": args.preload_docs, "db_bytes": db_bytes,
                   "server_rss_kib_at_start": srv.peak_rss_kib()?})
        );
    }
    eprintln!("posync-load: {} devices, server {} (pid {})", args.devices, srv.url(), srv.pid());

    // Offline capture (not timed).
    let mut g = Generator::new(args.seed);
    let mut fleet = Vec::with_capacity(args.devices);
    for i in 0..args.devices {
        let p: PosyanduId = posyandu(&format!("load-{:04}", i / args.per_posyandu));
        let mut r = Replica::open(dir.path().join(format!("d{i}.sqlite")))?;
        let session: DocId = r.start_session(&p, DAY)?;
        for k in 0..args.visits {
            r.record_visit(session, g.child_visit(), k as i64)?;
        }
        posync_testkit::grant(&store, r.device(), Role::Kader, &[p], now());
        let token = keys.issue(&posync_testkit::user_for(r.device()), r.device(), Role::Kader, now(), 3 * 3600).token;
        fleet.push((r, token));
    }
    eprintln!("posync-load: captured {} visits offline", args.devices * args.visits);

    for (phase, until) in [("reconnect", None), ("steady", Some(Duration::from_secs(args.steady_seconds)))] {
        let started = Instant::now();
        let cpu_at_start = srv.cpu_seconds()?;
        let phones_cpu_at_start = server::proc_cpu_seconds("/proc/self/stat")?;
        let deadline = until.map(|d| started + d);
        let mut tasks = Vec::with_capacity(fleet.len());
        for (i, (r, token)) in fleet.drain(..).enumerate() {
            let url = srv.url().to_owned();
            tasks.push(tokio::spawn(async move {
                let (r, o) = drive(r, url, token.clone(), deadline, i as u64).await;
                (r, token, o)
            }));
        }
        let mut total = Outcome { latencies_ms: Vec::new(), errors: BTreeMap::new(), requests: 0, retries: 0 };
        for t in tasks {
            let (r, token, o) = t.await?;
            total.latencies_ms.extend(o.latencies_ms);
            total.requests += o.requests;
            total.retries += o.retries;
            for (k, v) in o.errors {
                *total.errors.entry(k).or_default() += v;
            }
            fleet.push((r, token));
        }
        srv.ensure_alive()?;
        let mut line = summarise(phase, args.devices, started.elapsed().as_secs_f64(), total, srv.peak_rss_kib()?);
        let cpu = srv.cpu_seconds()? - cpu_at_start;
        line["server_cpu_seconds"] = json!((cpu * 1000.0).round() / 1000.0);
        // The phones run in this process, on the server's cores: their CPU bounds the latency too.
        let phones_cpu = server::proc_cpu_seconds("/proc/self/stat")? - phones_cpu_at_start;
        line["phones_cpu_seconds"] = json!((phones_cpu * 1000.0).round() / 1000.0);
        println!("{line}");
    }
    if args.preload_docs > 0 {
        // A puskesmas tablet's cold pull of 5 preloaded posyandu (500 documents).
        let tablet = Replica::open(dir.path().join("tablet.sqlite"))?;
        let scope: Vec<PosyanduId> = (0..5).map(|i| posyandu(&format!("mem-{i:05}"))).collect();
        posync_testkit::grant(&store, tablet.device(), Role::PuskesmasOfficer, &scope, now());
        let token = keys
            .issue(&posync_testkit::user_for(tablet.device()), tablet.device(), Role::PuskesmasOfficer, now(), 3600)
            .token;
        let started = Instant::now();
        let mut tablet = tablet;
        let report = HttpSync::new(srv.url(), &token).sync(&mut tablet).await?;
        println!(
            "{}",
            json!({"phase": "cold_pull_large_store", "docs_in_store": args.preload_docs, "docs_pulled": report.pulled_docs,
                   "requests": report.rounds, "bytes_down": report.bytes.down,
                   "wall_seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
                   "server_peak_rss_kib": srv.peak_rss_kib()?})
        );
    }
    let visits = srv.visits_at_server()?;
    let expected = (args.devices * args.visits + args.preload_docs) as u64;
    if visits != expected {
        bail!("server holds {visits} visits, expected {expected}");
    }
    eprintln!("posync-load: server holds all {visits} visits");
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let deadline = Duration::from_secs(args.deadline_seconds);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("posync-load: {e}");
            return ExitCode::from(2);
        }
    };
    let outcome = rt.block_on(async move {
        match tokio::time::timeout(deadline, run(args)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("deadline passed; aborted (server killed)")),
        }
    });
    rt.shutdown_timeout(Duration::from_secs(5));
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("posync-load: {e:#}");
            ExitCode::from(1)
        }
    }
}

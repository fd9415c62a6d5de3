//! `posync-2g`: a kader syncing a posyandu day, and a new puskesmas tablet pulling its
//! posyandu, through the project's fault proxy emulating a rural 2G link (slow, high
//! latency, connections that drop after a few KB, lost requests). The phone is the real
//! `posync` CLI (`--phone-bin`: this build, or an older one for a before/after), run again
//! after each failed run the way a kader would tap "sync" again, up to `--attempts`.
//!
//! Prints one JSON object per phase on stdout: attempts, whether it completed, wall time,
//! bytes each way on the link, requests. Everything on 127.0.0.1; bounded in attempts and
//! time; stops by itself.

use anyhow::{Context, Result, bail};
use clap::Parser;
use posync_bench::server::{self, Target};
use posync_model::PosyanduId;
use posync_replica::Replica;
use posync_testkit::faults::{FaultProxy, Link};
use posync_testkit::{DAY, Generator};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "A posyandu day and a cold pull over an emulated 2G link")]
struct Args {
    /// The server (`posync`) to run.
    #[arg(long, default_value = "target/release/posync")]
    server_bin: PathBuf,
    /// The phone's `posync` CLI (an older build for the "before" figures).
    #[arg(long, default_value = "target/release/posync")]
    phone_bin: PathBuf,
    /// Visits the kader captures in the day.
    #[arg(long, default_value_t = 60)]
    visits: usize,
    /// Earlier sessions already at the server (the tablet pulls them too).
    #[arg(long, default_value_t = 8)]
    history_sessions: usize,
    /// Link speed each way, bytes per second.
    #[arg(long, default_value_t = 20_000)]
    bytes_per_second: u64,
    #[arg(long, default_value_t = 300)]
    latency_ms: u64,
    /// A connection drops after this many bytes either way.
    #[arg(long, default_value_t = 4096)]
    drop_after_bytes: usize,
    /// Share of requests lost outright.
    #[arg(long, default_value_t = 0.1)]
    loss: f64,
    /// Runs of the phone's sync command before giving up.
    #[arg(long, default_value_t = 8)]
    attempts: usize,
    /// Bound on one run of the phone's command.
    #[arg(long, default_value_t = 180)]
    run_seconds: u64,
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

const FIXTURE: &str = "fixtures/district-kota-banjar.json";
const POSYANDU: &str = "pos-hegarsari-melati-1";

/// Run `bin args` with a time bound; whether it exited 0.
async fn run_bounded(bin: &Path, args: &[&str], limit: Duration) -> Result<bool> {
    let mut child = tokio::process::Command::new(bin)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let mut stderr = child.stderr.take().context("the phone's stderr")?;
    let output = async {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        (child.wait().await, text)
    };
    Ok(match tokio::time::timeout(limit, output).await {
        Ok((status, text)) => {
            let ok = status?.success();
            if !ok {
                // Why the run failed, for whoever reads the benchmark's log (the phone
                // never prints record contents).
                eprintln!(
                    "phone run failed: {}",
                    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("(no message)")
                );
            }
            ok
        }
        Err(_) => {
            eprintln!("phone run stopped after {} s", limit.as_secs());
            false
        }
    })
}

struct Outcome {
    attempts: usize,
    completed: bool,
    wall_seconds: f64,
}

/// Run the phone's command until `done` says so, up to the attempt bound.
async fn until_done(args: &Args, command: &[&str], mut done: impl FnMut() -> Result<bool>) -> Result<Outcome> {
    let started = Instant::now();
    for attempt in 1..=args.attempts {
        let ok = run_bounded(&args.phone_bin, command, Duration::from_secs(args.run_seconds)).await?;
        if ok && done()? {
            return Ok(Outcome { attempts: attempt, completed: true, wall_seconds: started.elapsed().as_secs_f64() });
        }
    }
    Ok(Outcome { attempts: args.attempts, completed: false, wall_seconds: started.elapsed().as_secs_f64() })
}

fn report(phase: &str, args: &Args, o: &Outcome, proxy: &FaultProxy, extra: serde_json::Value) {
    let mut line = serde_json::json!({
        "phase": phase,
        "phone_bin": args.phone_bin.display().to_string(),
        "attempts": o.attempts,
        "completed": o.completed,
        "wall_seconds": (o.wall_seconds * 1000.0).round() / 1000.0,
        "bytes_up": proxy.counts.bytes_up.load(Ordering::Relaxed),
        "bytes_down": proxy.counts.bytes_down.load(Ordering::Relaxed),
        "requests": proxy.counts.requests.load(Ordering::Relaxed),
        "link": {"bytes_per_second": args.bytes_per_second, "latency_ms": args.latency_ms,
                 "drop_after_bytes": args.drop_after_bytes, "loss": args.loss},
    });
    if let (Some(map), serde_json::Value::Object(more)) = (line.as_object_mut(), extra) {
        map.extend(more);
    }
    println!("{line}");
}

fn addr_of(srv: &server::ServerProcess) -> Result<std::net::SocketAddr> {
    srv.url().trim_start_matches("http://").parse().context("server address")
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.sqlite");
    let keys = dir.path().join("keys.json");
    let import = Command::new(&args.server_bin).args(["admin", "--db"]).arg(&db).args(["import", FIXTURE]).output()?;
    if !import.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&import.stderr));
    }
    let mut srv =
        server::start(&args.server_bin, &Target::Sqlite(db.clone()), &dir.path().join("server.log"), &keys).await?;
    let direct = srv.url().to_owned();
    let p: PosyanduId = POSYANDU.parse()?;

    // History at the server: another kader's earlier sessions, synced on a good link.
    let mut other = Replica::open(dir.path().join("other.sqlite"))?;
    posync_replica::enrol(&direct, &server::enrolment_code(&args.server_bin, &db, "kader-0002")?, "HP", &mut other)
        .await?;
    let mut g = Generator::new(args.seed);
    for s in 1..=args.history_sessions {
        let on = DAY - time::Duration::days(7 * s as i64);
        let session = other.start_session(&p, on)?;
        for i in 0..(args.visits / 4).max(1) {
            other.record_visit(session, g.child_visit_on(on), i as i64)?;
        }
    }
    other.sync_enrolled(&direct).await?;

    // The kader's day, captured offline.
    let kader_path = dir.path().join("kader.sqlite");
    let mut kader = Replica::open(&kader_path)?;
    posync_replica::enrol(&direct, &server::enrolment_code(&args.server_bin, &db, "kader-0001")?, "HP", &mut kader)
        .await?;
    let session = kader.start_session(&p, DAY)?;
    for i in 0..args.visits {
        kader.record_visit(session, g.child_visit(), i as i64)?;
    }
    kader.checkpoint()?;
    drop(kader);
    let before = srv.visits_at_server()?;
    let link = Link {
        bytes_per_second: args.bytes_per_second,
        latency_ms: args.latency_ms,
        drop_after_bytes: args.drop_after_bytes,
        loss_rate: args.loss,
    };

    let proxy = FaultProxy::link(addr_of(&srv)?, link, args.seed).await?;
    let kader_s = kader_path.to_string_lossy().to_string();
    let url = proxy.url();
    let sync = ["kader", "sync", "--replica", kader_s.as_str(), "--server", url.as_str()];
    let expected = before + args.visits as u64;
    let o = until_done(&args, &sync, || Ok(srv.visits_at_server()? >= expected)).await?;
    srv.ensure_alive()?;
    report(
        "kader_day",
        &args,
        &o,
        &proxy,
        serde_json::json!({"visits": args.visits, "visits_at_server": srv.visits_at_server()? - before}),
    );

    // A new tablet at the puskesmas pulls everything of its posyandu.
    let tablet_path = dir.path().join("tablet.sqlite");
    let mut tablet = Replica::open(&tablet_path)?;
    posync_replica::enrol(
        &direct,
        &server::enrolment_code(&args.server_bin, &db, "bidan-0001")?,
        "Tablet",
        &mut tablet,
    )
    .await?;
    drop(tablet);
    let proxy = FaultProxy::link(addr_of(&srv)?, link, args.seed + 1).await?;
    let tablet_s = tablet_path.to_string_lossy().to_string();
    let url = proxy.url();
    let pull = ["pull", "--replica", tablet_s.as_str(), "--server", url.as_str()];
    let at_server = srv.visits_at_server()?;
    let held = || -> Result<bool> { Ok(Replica::open(&tablet_path)?.all_visits()?.len() as u64 >= at_server) };
    let o = until_done(&args, &pull, held).await?;
    let pulled = Replica::open(&tablet_path)?.all_visits()?.len();
    report(
        "tablet_cold_pull",
        &args,
        &o,
        &proxy,
        serde_json::json!({"visits_at_server": at_server, "visits_pulled": pulled}),
    );
    Ok(())
}

//! `posync-bench`: the sync-core benchmark. A seeded posyandu day against the real server.
//!
//! The server is `posync serve` run as a child process on 127.0.0.1 over a SQLite file in a
//! temp dir; the phones are real replicas (one SQLite file each) syncing over HTTP. Capture
//! happens offline and is not timed; each timed phase prints one JSON object on stdout:
//!
//! 1. `storm`: every device pushes its day at once (at most `--concurrency` in flight);
//! 2. `catch_up`: each device syncs once more, one at a time, so all hold their posyandu's day;
//! 3. `edit_storm`: 10% of visits are re-weighed concurrently on two phones of their posyandu,
//!    then everyone syncs at once; the server must hold every such edit as a conflict;
//! 4. `converge`: everyone syncs again; every phone must hold every visit and every conflict;
//! 5. `noop`: everyone syncs with nothing new anywhere;
//! 6. `cold_pull`: a fresh puskesmas tablet pulls its (up to 5) posyandu.
//!
//! Exit status: 0 when every invariant held, 1 when one failed, 2 on an error (including the
//! `--deadline-seconds` bound). Progress goes to stderr.

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use posync_bench::fleet::{Device, Posyandu, Totals, for_each_blocking, replica_counts, sync_all, sync_device};
use posync_bench::server::{self, ServerProcess};
use posync_model::{DeviceId, DocId, Field, FieldValue, PosyanduId, Role, VisitId};
use posync_replica::Replica;
use posync_server::TokenKeys;
use posync_store::{PgStore, SqliteStore, Store};
use posync_testkit::{DAY, DAY_START, Generator, posyandu};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::{Map, Value, json};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(name = "posync-bench", version, about = "Sync-core benchmark: a seeded posyandu day against `posync serve`")]
struct Args {
    /// Number of posyandu.
    #[arg(short = 'p', long, default_value_t = 20)]
    posyandu: usize,
    /// Kader phones per posyandu (at least 2: the edit storm edits on two of them).
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Visits each phone records offline.
    #[arg(long, default_value_t = 60)]
    visits: usize,
    /// Seed of the simulated day (visits, which visits are edited, edited values).
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// The `posync` binary to run as the server. Default: `posync` next to this executable.
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Most devices syncing at once in the concurrent phases.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Abort (and kill the server) if the whole run takes longer than this.
    #[arg(long, default_value_t = 1200)]
    deadline_seconds: u64,
    /// Run against PostgreSQL at this URL instead of a temp SQLite file. The benchmark uses
    /// (drops and recreates) the schema `t_bench` there.
    #[arg(long)]
    database_url: Option<String>,
    /// `posync serve` instances over the one database (more than 1 needs --database-url);
    /// devices alternate between them from phase to phase.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// Keep the temp dir (server.sqlite, server.log, replicas) and print its path.
    #[arg(long)]
    keep: bool,
}

impl Args {
    fn validate(&self) -> Result<()> {
        if self.posyandu == 0 || self.posyandu > 9999 {
            bail!("--posyandu must be 1..=9999");
        }
        if self.devices < 2 {
            bail!("--devices must be at least 2 (the edit storm edits each visit on two phones)");
        }
        if self.visits == 0 {
            bail!("--visits must be at least 1");
        }
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        if self.instances == 0 || self.instances > 8 {
            bail!("--instances must be 1..=8");
        }
        if self.instances > 1 && self.database_url.is_none() {
            bail!("several --instances share one database: give --database-url");
        }
        if self.deadline_seconds == 0 {
            bail!("--deadline-seconds must be at least 1");
        }
        Ok(())
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(e) = args.validate() {
        eprintln!("posync-bench: {e}");
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("posync-bench: tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let deadline = Duration::from_secs(args.deadline_seconds);
    let started = Instant::now();
    // Whichever ends the run (done, error, deadline, Ctrl-C) drops `run`'s future, and with it
    // the server guard: the child is killed on every path.
    let outcome = rt.block_on(async move {
        tokio::select! {
            r = tokio::time::timeout(deadline, run(args)) => r.unwrap_or_else(|_| {
                Err(anyhow!("deadline of {}s passed; aborted (server killed)", deadline.as_secs()))
            }),
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted; aborted (server killed)")),
        }
    });
    // Replica work on the blocking pool cannot be cancelled; do not wait long for it.
    rt.shutdown_timeout(Duration::from_secs(5));
    let total = started.elapsed().as_secs_f64();
    match outcome {
        Ok(failures) if failures.is_empty() => {
            eprintln!("posync-bench: all invariants held ({total:.1} s in all)");
            ExitCode::SUCCESS
        }
        Ok(failures) => {
            for f in &failures {
                eprintln!("posync-bench: INVARIANT FAILED: {f}");
            }
            eprintln!("posync-bench: {} invariant(s) failed ({total:.1} s in all)", failures.len());
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("posync-bench: error after {total:.1} s: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// One stdout line per phase. Fields after `visits_at_server` are phase-specific (sorted).
#[derive(Serialize)]
struct PhaseLine {
    phase: &'static str,
    posyandu: usize,
    devices_per_posyandu: usize,
    visits_per_device: usize,
    wall_seconds: f64,
    requests: u64,
    bytes_up: u64,
    bytes_down: u64,
    server_peak_rss_kib: u64,
    visits_at_server: u64,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// What was measured at the end of a phase, before the phase-specific checks.
struct Measured {
    wall_seconds: f64,
    server_cpu_seconds: f64,
    bench_cpu_seconds: f64,
    db_cpu_seconds: f64,
    server_peak_rss_kib: u64,
    visits_at_server: u64,
}

struct PhaseStart {
    wall: Instant,
    server_cpu: f64,
    bench_cpu: f64,
    db_cpu: f64,
}

/// The store the servers run on, as the benchmark writes its users and devices into it.
enum BenchStore {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl BenchStore {
    fn as_store(&self) -> &dyn Store {
        match self {
            BenchStore::Sqlite(s) => s,
            BenchStore::Postgres(s) => s,
        }
    }

    fn backend(&self) -> &'static str {
        match self {
            BenchStore::Sqlite(_) => "sqlite",
            BenchStore::Postgres(_) => "postgres",
        }
    }
}

struct Bench {
    args: Args,
    servers: Vec<ServerProcess>,
    urls: Vec<String>,
    /// Bumped per sync phase: devices move to another instance each time.
    phase_no: usize,
    keys: TokenKeys,
    store: BenchStore,
    token_ttl: i64,
    dir: PathBuf,
    posyandu: Vec<Posyandu>,
    devices: Arc<Vec<Device>>,
    /// Visits each device recorded and their recorded weight, by device index.
    recorded: Vec<Vec<(VisitId, Option<i64>)>>,
    /// Offline capture time (not part of any phase): wall and this process's CPU seconds.
    capture_seconds: (f64, f64),
    failures: Vec<String>,
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn default_server_bin() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let bin = exe.parent().context("executable has no directory")?.join("posync");
    if !bin.is_file() {
        bail!(
            "no server binary at {} (build it with `cargo build --release -p posync-cli`, or pass --server-bin)",
            bin.display()
        );
    }
    Ok(bin)
}

fn parallelism() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

async fn run(args: Args) -> Result<Vec<String>> {
    let bin = match &args.server_bin {
        Some(b) => b.clone(),
        None => default_server_bin()?,
    };
    let mut dir = tempfile::Builder::new().prefix("posync-bench-").tempdir().context("temp dir")?;
    if args.keep {
        dir.disable_cleanup(true);
        eprintln!("posync-bench: keeping {}", dir.path().display());
    }
    let keys = TokenKeys::generate(now());
    let keys_path = dir.path().join("server.keys.json");
    keys.save(&keys_path)?;
    // Users and devices are written into the server's store directly (a second connection):
    // setup, not part of any timed phase.
    let (target, store) = match &args.database_url {
        None => {
            let db = dir.path().join("server.sqlite");
            let store = SqliteStore::open(&db)?;
            (server::Target::Sqlite(db), BenchStore::Sqlite(store))
        }
        Some(base) => {
            let url = posync_store::postgres::testing::schema_url(base, "t_bench").await.map_err(|e| anyhow!(e))?;
            let store = PgStore::connect(&url).await?;
            (server::Target::Postgres(url), BenchStore::Postgres(store))
        }
    };
    let mut servers = Vec::new();
    for i in 0..args.instances {
        let log = dir.path().join(format!("server-{i}.log"));
        servers.push(server::start(&bin, &target, &log, &keys_path).await?);
    }
    let urls: Vec<String> = servers.iter().map(|s| s.url().to_owned()).collect();
    eprintln!(
        "posync-bench: P={} D={} V={} seed={} concurrency={}; {} on {} instance(s) {:?} ({})",
        args.posyandu,
        args.devices,
        args.visits,
        args.seed,
        args.concurrency,
        store.backend(),
        servers.len(),
        urls,
        bin.display()
    );
    let posyandu = (0..args.posyandu)
        .map(|p| {
            let id = posyandu(&format!("bench-{p:04}"));
            Posyandu { session: DocId::for_session(&id, DAY), id }
        })
        .collect();
    let token_ttl = i64::try_from(args.deadline_seconds)?.saturating_add(3600);
    let mut bench = Bench {
        args,
        servers,
        urls,
        phase_no: 0,
        keys,
        store,
        token_ttl,
        dir: dir.path().to_path_buf(),
        posyandu,
        devices: Arc::new(Vec::new()),
        recorded: Vec::new(),
        capture_seconds: (0.0, 0.0),
        failures: Vec::new(),
    };
    bench.capture().await?;
    bench.storm().await?;
    bench.catch_up().await?;
    let expected_by_posyandu = bench.edit_storm().await?;
    bench.converge(&expected_by_posyandu).await?;
    bench.noop().await?;
    bench.cold_pull(&expected_by_posyandu).await?;
    // The server guard drops before the temp dir holding its file.
    let failures = std::mem::take(&mut bench.failures);
    drop(bench);
    drop(dir);
    Ok(failures)
}

impl Bench {
    fn devices_per_posyandu(&self) -> usize {
        self.args.devices
    }

    fn total_visits(&self) -> u64 {
        (self.args.posyandu * self.args.devices * self.args.visits) as u64
    }

    /// Write a user for `device` over `posyandu` into the server's store and sign its token.
    async fn grant(&self, device: DeviceId, role: Role, posyandu: &[PosyanduId], now: i64, ttl: i64) -> String {
        match &self.store {
            BenchStore::Sqlite(s) => posync_testkit::grant(s, device, role, posyandu, now),
            BenchStore::Postgres(s) => posync_testkit::grant_pg(s, device, role, posyandu, now).await,
        }
        self.keys.issue(&posync_testkit::user_for(device), device, role, now, ttl).token
    }

    fn server_cpu_seconds(&self) -> Result<f64> {
        self.servers.iter().map(ServerProcess::cpu_seconds).sum()
    }

    fn db_cpu_seconds(&self) -> f64 {
        match self.store {
            BenchStore::Sqlite(_) => 0.0,
            BenchStore::Postgres(_) => server::postgres_cpu_seconds(),
        }
    }

    fn check(&mut self, ok: bool, what: impl FnOnce() -> String) {
        if !ok {
            let what = what();
            eprintln!("posync-bench: invariant failed: {what}");
            self.failures.push(what);
        }
    }

    fn begin(&self) -> Result<PhaseStart> {
        Ok(PhaseStart {
            wall: Instant::now(),
            server_cpu: self.server_cpu_seconds()?,
            bench_cpu: server::proc_cpu_seconds("/proc/self/stat")?,
            db_cpu: self.db_cpu_seconds(),
        })
    }

    async fn measure(&mut self, start: &PhaseStart) -> Result<Measured> {
        let wall_seconds = start.wall.elapsed().as_secs_f64();
        for s in &mut self.servers {
            s.ensure_alive()?;
        }
        let mut peak = 0;
        for s in &self.servers {
            peak = peak.max(s.peak_rss_kib()?);
        }
        Ok(Measured {
            wall_seconds,
            server_cpu_seconds: self.server_cpu_seconds()? - start.server_cpu,
            bench_cpu_seconds: server::proc_cpu_seconds("/proc/self/stat")? - start.bench_cpu,
            db_cpu_seconds: self.db_cpu_seconds() - start.db_cpu,
            server_peak_rss_kib: peak,
            visits_at_server: self.store.as_store().stats().await?.visits,
        })
    }

    /// Print the phase's line; fail the run if any device's sync failed.
    fn emit(&self, phase: &'static str, m: &Measured, t: &Totals, extra: Value) -> Result<()> {
        let mut fields = Map::new();
        fields.insert("devices_synced".into(), json!(t.devices));
        fields.insert("pushed_docs".into(), json!(t.pushed_docs));
        fields.insert("pulled_docs".into(), json!(t.pulled_docs));
        fields.insert("max_rounds".into(), json!(t.max_rounds));
        fields.insert("sync_errors".into(), json!(t.errors.len()));
        fields.insert("server_cpu_seconds".into(), json!(round3(m.server_cpu_seconds)));
        fields.insert("bench_cpu_seconds".into(), json!(round3(m.bench_cpu_seconds)));
        fields.insert("backend".into(), json!(self.store.backend()));
        fields.insert("instances".into(), json!(self.servers.len()));
        if let BenchStore::Postgres(_) = self.store {
            fields.insert("postgres_cpu_seconds".into(), json!(round3(m.db_cpu_seconds)));
        }
        if let Value::Object(extra) = extra {
            fields.extend(extra);
        }
        let line = PhaseLine {
            phase,
            posyandu: self.args.posyandu,
            devices_per_posyandu: self.args.devices,
            visits_per_device: self.args.visits,
            wall_seconds: round3(m.wall_seconds),
            requests: t.requests,
            bytes_up: t.bytes_up,
            bytes_down: t.bytes_down,
            server_peak_rss_kib: m.server_peak_rss_kib,
            visits_at_server: m.visits_at_server,
            extra: fields,
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", serde_json::to_string(&line)?)?;
        out.flush()?;
        if !t.errors.is_empty() {
            for e in t.errors.iter().take(5) {
                eprintln!("posync-bench: {phase}: sync failed: {e}");
            }
            bail!(
                "{phase}: {} device sync(s) failed, first: {}; server log tail:\n{}",
                t.errors.len(),
                t.errors[0],
                self.servers.iter().map(|s| s.log_tail(20)).collect::<Vec<_>>().join("\n---\n")
            );
        }
        Ok(())
    }

    /// Offline capture (not timed): every phone opens its posyandu's session for [`DAY`] and
    /// records its visits, seeded by `seed + device index`.
    async fn capture(&mut self) -> Result<()> {
        let (p_n, d_n, v_n, seed) = (self.args.posyandu, self.args.devices, self.args.visits, self.args.seed);
        let dev_dir = self.dir.join("devices");
        std::fs::create_dir_all(&dev_dir)?;
        let ids: Arc<Vec<PosyanduId>> = Arc::new(self.posyandu.iter().map(|p| p.id.clone()).collect());
        let started = Instant::now();
        let cpu = server::proc_cpu_seconds("/proc/self/stat")?;
        let paths: Arc<Vec<PathBuf>> =
            Arc::new((0..p_n * d_n).map(|i| dev_dir.join(format!("p{:04}-d{}.sqlite", i / d_n, i % d_n))).collect());
        let task_paths = paths.clone();
        let captured = for_each_blocking(p_n * d_n, parallelism(), move |i| -> Result<_, String> {
            let p = i / d_n;
            let path = &task_paths[i];
            let mut r = Replica::open(path).map_err(|e| format!("open {}: {e}", path.display()))?;
            let session = r.start_session(&ids[p], DAY).map_err(|e| e.to_string())?;
            let mut seeded = Generator::new(seed.wrapping_add(i as u64));
            let mut visits = Vec::with_capacity(v_n);
            for k in 0..v_n {
                let at = DAY_START + 60 * k as i64 + (i % d_n) as i64;
                let visit = seeded.child_visit();
                let weight = visit.weight_g;
                visits.push((r.record_visit(session, visit, at).map_err(|e| e.to_string())?, weight));
            }
            Ok((r.device(), visits))
        })
        .await?;
        let issued = now();
        let mut devices = Vec::with_capacity(captured.len());
        for (i, c) in captured.into_iter().enumerate() {
            let (id, visits) = c.map_err(|e| anyhow!("capture on device {i}: {e}"))?;
            let p = i / d_n;
            let token = self.grant(id, Role::Kader, &[self.posyandu[p].id.clone()], issued, self.token_ttl).await;
            devices.push(Device { index: i, posyandu: p, path: paths[i].clone(), token });
            self.recorded.push(visits);
        }
        self.devices = Arc::new(devices);
        self.capture_seconds = (started.elapsed().as_secs_f64(), server::proc_cpu_seconds("/proc/self/stat")? - cpu);
        eprintln!(
            "posync-bench: captured {} visits offline on {} devices in {:.1} s, {:.1} CPU-s (not timed)",
            self.total_visits(),
            self.devices.len(),
            self.capture_seconds.0,
            self.capture_seconds.1,
        );
        Ok(())
    }

    async fn sync_phase(&mut self, concurrency: usize) -> Result<(Totals, Measured)> {
        let start = self.begin()?;
        self.phase_no += 1;
        let totals = sync_all(&self.devices, &self.urls, self.phase_no, concurrency).await?;
        let m = self.measure(&start).await?;
        Ok((totals, m))
    }

    async fn storm(&mut self) -> Result<()> {
        let (t, m) = self.sync_phase(self.args.concurrency).await?;
        let expected = self.total_visits();
        let extra = json!({
            "concurrency": self.args.concurrency,
            "bytes_per_visit_up": round3(t.bytes_up as f64 / expected as f64),
            "expected_visits_at_server": expected,
            "capture_seconds": round3(self.capture_seconds.0),
            "capture_cpu_seconds": round3(self.capture_seconds.1),
        });
        self.emit("storm", &m, &t, extra)?;
        self.check(m.visits_at_server == expected, || {
            format!("storm: server holds {} visits, expected {expected}", m.visits_at_server)
        });
        Ok(())
    }

    /// Sequential: with every push already in, one sync each brings every phone its whole
    /// posyandu day.
    async fn catch_up(&mut self) -> Result<()> {
        let (t, m) = self.sync_phase(1).await?;
        let complete = self.devices_matching(|visits, _, _| visits == self.args.devices * self.args.visits).await?;
        let n = self.devices.len();
        self.emit("catch_up", &m, &t, json!({ "devices_complete": complete }))?;
        self.check(complete == n, || format!("catch_up: {complete} of {n} devices hold their posyandu's whole day"));
        Ok(())
    }

    /// Devices whose replica satisfies `ok(visits, weight_conflicts, posyandu index)`.
    async fn devices_matching(&self, ok: impl Fn(usize, usize, usize) -> bool) -> Result<usize> {
        let devs = self.devices.clone();
        let counts = for_each_blocking(devs.len(), parallelism(), move |i| replica_counts(&devs[i].path)).await?;
        let mut n = 0;
        for (i, c) in counts.into_iter().enumerate() {
            let (visits, conflicts) = c.map_err(|e| anyhow!("reading device {i}: {e}"))?;
            if ok(visits, conflicts, self.devices[i].posyandu) {
                n += 1;
            }
        }
        Ok(n)
    }

    /// 10% of each posyandu's visits (seeded choice) re-weighed on two of its phones with two
    /// different values, offline; then everyone syncs at once. Returns the conflicts expected
    /// per posyandu.
    async fn edit_storm(&mut self) -> Result<Vec<usize>> {
        let plan = plan_edits(self.args.seed, self.args.posyandu, self.devices_per_posyandu(), &self.recorded);
        let EditPlan { edits, expected_by_posyandu, redrawn } = plan;
        let expected: usize = expected_by_posyandu.iter().sum();
        let edit_ops: usize = edits.iter().map(Vec::len).sum();
        let started = Instant::now();
        let cpu = server::proc_cpu_seconds("/proc/self/stat")?;
        let edits = Arc::new(edits);
        let devs = self.devices.clone();
        let sessions: Arc<Vec<DocId>> = Arc::new(self.posyandu.iter().map(|p| p.session).collect());
        let done = for_each_blocking(devs.len(), parallelism(), move |i| -> Result<(), String> {
            let d = &devs[i];
            let mut r = Replica::open(&d.path).map_err(|e| format!("open {}: {e}", d.path.display()))?;
            for (j, (visit, w)) in edits[i].iter().enumerate() {
                let at = DAY_START + 4 * 3600 + j as i64;
                r.edit_visit(sessions[d.posyandu], *visit, Field::WeightG, FieldValue::Int(*w), at)
                    .map_err(|e| format!("edit {visit}: {e}"))?;
            }
            Ok(())
        })
        .await?;
        for (i, r) in done.into_iter().enumerate() {
            r.map_err(|e| anyhow!("edit on device {i}: {e}"))?;
        }
        let edit_capture_seconds = started.elapsed().as_secs_f64();
        let edit_capture_cpu = server::proc_cpu_seconds("/proc/self/stat")? - cpu;
        eprintln!(
            "posync-bench: {edit_ops} offline edits ({expected} visits on two phones each) in {edit_capture_seconds:.1} s, \
             {edit_capture_cpu:.1} CPU-s (not timed)"
        );

        let (t, m) = self.sync_phase(self.args.concurrency).await?;
        let at_server = self.conflicts_at_server().await?;
        let extra = json!({
            "concurrency": self.args.concurrency,
            "edits": edit_ops,
            "edit_capture_seconds": round3(edit_capture_seconds),
            "edit_capture_cpu_seconds": round3(edit_capture_cpu),
            "edit_values_redrawn": redrawn,
            "conflicts_at_server": at_server,
            "expected_conflicts": expected,
        });
        self.emit("edit_storm", &m, &t, extra)?;
        let total = self.total_visits();
        self.check(m.visits_at_server == total, || {
            format!("edit_storm: server holds {} visits, expected {total}", m.visits_at_server)
        });
        self.check(at_server >= expected, || {
            format!("edit_storm: server shows {at_server} weight conflicts, expected {expected}")
        });
        Ok(expected_by_posyandu)
    }

    /// Weight conflicts over every session document, as `GET /v1/docs/{doc}` shows them to a
    /// token scoped to that document's posyandu.
    async fn conflicts_at_server(&self) -> Result<usize> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build()?;
        let mut n = 0;
        for p in &self.posyandu {
            let token = self
                .grant(DeviceId::new_random(), Role::PuskesmasOfficer, std::slice::from_ref(&p.id), now(), 600)
                .await;
            let resp = client
                .get(format!("{}/v1/docs/{}", self.urls[0], p.session))
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET doc of {}", p.id))?;
            let status = resp.status();
            let body = resp.bytes().await?;
            if !status.is_success() {
                bail!("GET /v1/docs/{} ({}): {status}: {}", p.session, p.id, String::from_utf8_lossy(&body));
            }
            let doc: Value = serde_json::from_slice(&body).context("doc JSON")?;
            let conflicts = doc["conflicts"].as_array().context("doc JSON has no conflicts array")?;
            n += conflicts.iter().filter(|c| c["collection"] == "visits" && c["field"] == "weight_g").count();
        }
        Ok(n)
    }

    /// Everyone syncs once more; then every phone must hold its posyandu's every visit and
    /// every weight conflict.
    async fn converge(&mut self, expected_by_posyandu: &[usize]) -> Result<()> {
        let (t, m) = self.sync_phase(self.args.concurrency).await?;
        let whole = self.args.devices * self.args.visits;
        let converged = self
            .devices_matching(|visits, conflicts, p| visits == whole && conflicts == expected_by_posyandu[p])
            .await?;
        let n = self.devices.len();
        self.emit("converge", &m, &t, json!({ "concurrency": self.args.concurrency, "devices_converged": converged }))?;
        self.check(converged == n, || {
            format!("converge: {converged} of {n} devices hold every visit and every weight conflict of their posyandu")
        });
        Ok(())
    }

    /// Nothing new anywhere: what does a sync cost when there is nothing to do?
    async fn noop(&mut self) -> Result<()> {
        let (t, m) = self.sync_phase(self.args.concurrency).await?;
        let n = t.devices.max(1) as f64;
        let extra = json!({
            "concurrency": self.args.concurrency,
            "bytes_per_device_up": round3(t.bytes_up as f64 / n),
            "bytes_per_device_down": round3(t.bytes_down as f64 / n),
        });
        self.emit("noop", &m, &t, extra)?;
        let total = self.total_visits();
        self.check(m.visits_at_server == total, || {
            format!("noop: server holds {} visits, expected {total}", m.visits_at_server)
        });
        Ok(())
    }

    /// A fresh puskesmas tablet scoped to the first min(5, P) posyandu pulls everything.
    async fn cold_pull(&mut self, expected_by_posyandu: &[usize]) -> Result<()> {
        let k = self.args.posyandu.min(5);
        let path = self.dir.join("puskesmas.sqlite");
        let device = Replica::open(&path)?.device();
        let scope: Vec<PosyanduId> = self.posyandu[..k].iter().map(|p| p.id.clone()).collect();
        let token = self.grant(device, Role::PuskesmasOfficer, &scope, now(), self.token_ttl).await;
        let start = self.begin()?;
        let url = self.urls[self.urls.len() - 1].clone();
        let task_path = path.clone();
        let report = tokio::task::spawn_blocking(move || sync_device(&task_path, &url, &token)).await?;
        let m = self.measure(&start).await?;
        let mut t = Totals::default();
        match &report {
            Ok(r) => t.add(r),
            Err(e) => t.errors.push(format!("puskesmas tablet: {e}")),
        }
        let (visits, conflicts) = if report.is_ok() { tablet_counts(&path).await? } else { (0, 0) };
        let expected = k * self.args.devices * self.args.visits;
        let expected_conflicts: usize = expected_by_posyandu[..k].iter().sum();
        let extra = json!({
            "posyandu_in_scope": k,
            "docs_pulled": t.pulled_docs,
            "visits_at_puskesmas": visits,
            "expected": expected,
            "conflicts_at_puskesmas": conflicts,
            "expected_conflicts": expected_conflicts,
        });
        self.emit("cold_pull", &m, &t, extra)?;
        self.check(visits == expected, || format!("cold_pull: tablet holds {visits} visits, expected {expected}"));
        self.check(conflicts >= expected_conflicts, || {
            format!("cold_pull: tablet shows {conflicts} weight conflicts, expected {expected_conflicts}")
        });
        Ok(())
    }
}

async fn tablet_counts(path: &Path) -> Result<(usize, usize)> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || replica_counts(&path)).await?.map_err(|e| anyhow!("reading the tablet: {e}"))
}

/// Which phone writes which weight to which visit in the edit storm.
struct EditPlan {
    /// By device index: (visit, new weight).
    edits: Vec<Vec<(VisitId, i64)>>,
    expected_by_posyandu: Vec<usize>,
    /// Draws that equalled the recorded weight and were drawn again.
    redrawn: usize,
}

/// 10% of each posyandu's visits (rounded up), chosen with an rng seeded from `seed`, each
/// re-weighed on two distinct phones of its posyandu with two different values.
///
/// Every value also differs from the weight recorded: Automerge drops a put of the value a key
/// already holds (no op, no change), so such an "edit" could not conflict.
fn plan_edits(seed: u64, p_n: usize, d_n: usize, recorded: &[Vec<(VisitId, Option<i64>)>]) -> EditPlan {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0ed1_7ed1_7ed1_7ed1);
    let mut plan = EditPlan { edits: vec![Vec::new(); p_n * d_n], expected_by_posyandu: vec![0; p_n], redrawn: 0 };
    for p in 0..p_n {
        let all: Vec<(VisitId, Option<i64>)> = (0..d_n).flat_map(|d| recorded[p * d_n + d].iter().copied()).collect();
        let per_posyandu = all.len().div_ceil(10);
        for k in rand::seq::index::sample(&mut rng, all.len(), per_posyandu) {
            let (visit, was) = all[k];
            let a = rng.random_range(0..d_n);
            let b = (a + 1 + rng.random_range(0..d_n - 1)) % d_n;
            let mut w1: i64 = rng.random_range(3_000..20_000);
            while Some(w1) == was {
                plan.redrawn += 1;
                w1 = rng.random_range(3_000..20_000);
            }
            let mut w2 = w1 + rng.random_range(1..500);
            while Some(w2) == was {
                plan.redrawn += 1;
                w2 = w1 + rng.random_range(1..500);
            }
            plan.edits[p * d_n + a].push((visit, w1));
            plan.edits[p * d_n + b].push((visit, w2));
            plan.expected_by_posyandu[p] += 1;
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_plan_is_seeded_and_every_value_is_new() {
        let recorded: Vec<Vec<(VisitId, Option<i64>)>> = (0..6)
            .map(|d| (0..20).map(|v| (VisitId::new_random(), Some(3_000 + 7 * (d * 20 + v)))).collect())
            .collect();
        let a = plan_edits(7, 2, 3, &recorded);
        let b = plan_edits(7, 2, 3, &recorded);
        assert_eq!(a.expected_by_posyandu, vec![6, 6]);
        assert_eq!(a.edits, b.edits);
        let weight: std::collections::HashMap<VisitId, Option<i64>> = recorded.iter().flatten().copied().collect();
        let mut by_visit: std::collections::HashMap<VisitId, Vec<(usize, i64)>> = Default::default();
        for (device, edits) in a.edits.iter().enumerate() {
            for (visit, w) in edits {
                assert_ne!(weight[visit], Some(*w));
                by_visit.entry(*visit).or_default().push((device, *w));
            }
        }
        assert_eq!(by_visit.len(), 12);
        for edits in by_visit.values() {
            assert_eq!(edits.len(), 2);
            assert_ne!(edits[0].0, edits[1].0, "two different phones");
            assert_eq!(edits[0].0 / 3, edits[1].0 / 3, "of the same posyandu");
            assert_ne!(edits[0].1, edits[1].1, "two different values");
        }
    }
}

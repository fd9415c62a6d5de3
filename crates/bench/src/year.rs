//! `posync-year`: does a capture and a sync still cost the same after a year?
//!
//! One posyandu with a registry of `--people` children and `--months` monthly sessions,
//! each with a visit for every child, captured on one kader phone (a real replica) and
//! synced to the real server (`posync serve`, a child process on 127.0.0.1). After the first
//! month and after the last, `--samples` more captures are each followed by a sync; the
//! medians are compared. Prints one JSON object per measured month and a summary; exit 1
//! when the last month's capture, sync or server CPU per sync is over 1.5× the first's.

use anyhow::{Context, Result, bail};
use clap::Parser;
use posync_bench::server::{self, ServerProcess, Target};
use posync_model::{PersonId, PosyanduId, Sex};
use posync_replica::{NewPerson, NewVisit, Replica};
use posync_testkit::{DAY, DAY_START, who_median};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::process::{Command, ExitCode};
use std::time::Instant;

#[derive(Parser, Debug)]
#[command(about = "A posyandu's year: the cost of one more capture and sync, first month against last")]
struct Args {
    /// The server (`posync`) to run.
    #[arg(long, default_value = "target/release/posync")]
    server_bin: std::path::PathBuf,
    /// Children in the registry (each visits every month).
    #[arg(long, default_value_t = 2000)]
    people: usize,
    /// Monthly sessions.
    #[arg(long, default_value_t = 12)]
    months: usize,
    /// Captures (each followed by a sync) measured after the first and the last month.
    #[arg(long, default_value_t = 20)]
    samples: usize,
    #[arg(long, default_value_t = 12)]
    seed: u64,
}

const FIXTURE: &str = "fixtures/district-kota-banjar.json";
const POSYANDU: &str = "pos-hegarsari-melati-1";
/// The bound the issue sets: after a year, at most this times the first month's cost.
const RATIO_MAX: f64 = 1.5;

/// A child of the registry, with fixed growth percentiles so months follow one curve.
struct Child {
    person_id: PersonId,
    name: String,
    sex: Sex,
    birth_date: time::Date,
    length_factor: f64,
    weight_factor: f64,
}

impl Child {
    fn visit_on(&self, on: time::Date) -> NewVisit {
        let age_days = (on - self.birth_date).whole_days();
        let length_mm = (who_median(posync_model::growth::Indicator::LengthHeightForAge, self.sex, age_days)
            * 10.0
            * self.length_factor) as i64;
        let lying = age_days < 731;
        let for_length = posync_model::growth::wflh_indicator(Some(age_days), Some(lying))
            .and_then(|i| posync_model::growth::lms(i, self.sex, length_mm as f64 / 10.0))
            .map_or_else(|| who_median(posync_model::growth::Indicator::WeightForAge, self.sex, age_days), |l| l.m);
        NewVisit {
            person_id: self.person_id,
            name: self.name.clone(),
            sex: self.sex,
            birth_date: self.birth_date,
            weight_g: Some(((for_length * 1000.0 * self.weight_factor) as i64).clamp(1000, 30_000)),
            length_mm: Some(length_mm.clamp(400, 1300)),
            lying: Some(lying),
            head_circ_mm: None,
            muac_mm: None,
            immunisations: Default::default(),
            vitamin_a: None,
            notes: String::new(),
            group: None,
            services: Default::default(),
        }
    }
}

/// One month's measurement: medians of the samples, server CPU and bytes per sync.
#[derive(serde::Serialize)]
struct Cost {
    month: usize,
    visits_on_phone: usize,
    capture_ms_p50: f64,
    sync_ms_p50: f64,
    server_cpu_ms_per_sync: f64,
    bytes_up_per_sync: f64,
    bytes_down_per_sync: f64,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(0.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// `samples` more captures in `session`, each synced at once.
async fn measure(
    phone: &mut Replica,
    srv: &ServerProcess,
    session: posync_model::DocId,
    on: time::Date,
    month: usize,
    args: &Args,
    rng: &mut StdRng,
) -> Result<Cost> {
    let (mut captures, mut syncs) = (Vec::new(), Vec::new());
    let (mut up, mut down) = (0u64, 0u64);
    let cpu_before = srv.cpu_seconds()?;
    for i in 0..args.samples {
        let child = new_child(rng, on, i + 1_000_000);
        let visit = child.visit_on(on);
        let t = Instant::now();
        phone.record_visit(session, visit, DAY_START + i as i64)?;
        captures.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        let report = phone.sync_enrolled(srv.url()).await?;
        syncs.push(t.elapsed().as_secs_f64() * 1000.0);
        up += report.bytes.up;
        down += report.bytes.down;
    }
    let cpu = srv.cpu_seconds()? - cpu_before;
    let n = args.samples.max(1) as f64;
    Ok(Cost {
        month,
        visits_on_phone: phone.all_visits()?.len(),
        capture_ms_p50: round3(median(captures)),
        sync_ms_p50: round3(median(syncs)),
        server_cpu_ms_per_sync: round3(cpu * 1000.0 / n),
        bytes_up_per_sync: round3(up as f64 / n),
        bytes_down_per_sync: round3(down as f64 / n),
    })
}

fn new_child(rng: &mut StdRng, first_session: time::Date, n: usize) -> Child {
    let sex = if rng.random_bool(0.5) { Sex::Female } else { Sex::Male };
    Child {
        person_id: PersonId::new_random(),
        name: format!("Anak {n}"),
        sex,
        birth_date: first_session - time::Duration::days(rng.random_range(30..1400)),
        length_factor: rng.random_range(0.97..1.03),
        weight_factor: rng.random_range(0.94..1.06),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("posync-year: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("server.sqlite");
    let import = Command::new(&args.server_bin).args(["admin", "--db"]).arg(&db).args(["import", FIXTURE]).output()?;
    if !import.status.success() {
        bail!("import: {}", String::from_utf8_lossy(&import.stderr));
    }
    let srv = server::start(
        &args.server_bin,
        &Target::Sqlite(db.clone()),
        &dir.path().join("server.log"),
        &dir.path().join("keys.json"),
    )
    .await?;
    let p: PosyanduId = POSYANDU.parse()?;
    let mut phone = Replica::open(dir.path().join("kader.sqlite"))?;
    let code = server::enrolment_code(&args.server_bin, &db, "kader-0001")?;
    posync_replica::enrol(srv.url(), &code, "HP", &mut phone).await?;

    let mut rng = StdRng::seed_from_u64(args.seed);
    let first = DAY - time::Duration::days(30 * (args.months.max(1) as i64 - 1));
    let children: Vec<Child> = (0..args.people).map(|n| new_child(&mut rng, first, n)).collect();
    let started = Instant::now();
    for (n, c) in children.iter().enumerate() {
        let person = NewPerson {
            name: c.name.clone(),
            sex: c.sex,
            birth_date: c.birth_date,
            mother_name: "Ibu".into(),
            nik: Some(format!("3279{n:012}")),
            mother_nik: None,
            address: String::new(),
            rt: None,
            rw: None,
            pregnant: false,
            kia_book: true,
        };
        phone.register_person(&p, person, DAY_START)?;
    }
    phone.sync_enrolled(srv.url()).await.context("syncing the registry")?;
    eprintln!("posync-year: registry of {} in {:.1} s", args.people, started.elapsed().as_secs_f64());

    let mut costs = Vec::new();
    for m in 0..args.months {
        let on = first + time::Duration::days(30 * m as i64);
        let session = phone.start_session(&p, on)?;
        let t = Instant::now();
        for (i, c) in children.iter().enumerate() {
            phone
                .record_visit(session, c.visit_on(on), DAY_START + i as i64)
                .with_context(|| format!("month {}", m + 1))?;
        }
        phone.sync_enrolled(srv.url()).await.with_context(|| format!("syncing month {}", m + 1))?;
        eprintln!("posync-year: month {} captured and synced in {:.1} s", m + 1, t.elapsed().as_secs_f64());
        if m == 0 || m + 1 == args.months {
            let cost = measure(&mut phone, &srv, session, on, m + 1, &args, &mut rng).await?;
            println!("{}", serde_json::json!({ "phase": "year_month", "people": args.people, "cost": cost }));
            costs.push(cost);
        }
    }
    let (Some(a), Some(b)) = (costs.first(), costs.last()) else { bail!("nothing measured") };
    let ratio = |x: f64, y: f64| if x > 0.0 { round3(y / x) } else { 0.0 };
    let ratios = [
        ("capture", ratio(a.capture_ms_p50, b.capture_ms_p50)),
        ("sync", ratio(a.sync_ms_p50, b.sync_ms_p50)),
        ("server_cpu", ratio(a.server_cpu_ms_per_sync, b.server_cpu_ms_per_sync)),
    ];
    let within = ratios.iter().all(|(_, r)| *r <= RATIO_MAX);
    let mut summary =
        serde_json::json!({ "phase": "year_ratio", "months": args.months, "ratio_max": RATIO_MAX, "within": within });
    for (name, r) in ratios {
        summary[name] = r.into();
    }
    println!("{summary}");
    Ok(within)
}

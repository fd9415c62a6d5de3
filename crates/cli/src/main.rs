//! `posync`: the sync server, device simulation and the demo.

/// `println!` for results: a closed pipe (`posync admin units | head`) ends the program
/// quietly with status 0, as a Unix tool does, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::print_line(format_args!($($arg)*))
    };
}

mod admin;
mod backend;
mod demo;

use anyhow::{Context, Result, bail};
use backend::StoreArgs;
use clap::{Parser, Subcommand};
use posync_model::record::parse_date;
use posync_model::{Field, FieldValue, LifeGroup, PersonId, PosyanduId, Sex};
use posync_proto::Limits;
use posync_replica::{NewVisit, Replica};
use posync_server::TokenKeys;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "posync", version, about = "Offline-first sync for posyandu records")]
struct Cli {
    /// Log lines as text (colour only on a terminal) or as JSON objects, one per line, for a
    /// log collector. Logs go to stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text, env = "POSYNC_LOG_FORMAT")]
    log_format: LogFormat,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sync server on an embedded SQLite file (or PostgreSQL, with --database-url).
    Serve {
        #[command(flatten)]
        store: StoreArgs,
        /// Address and port to listen on (use 0.0.0.0:PORT to serve the LAN).
        #[arg(long, default_value = "127.0.0.1:8080", env = "POSYNC_ADDR")]
        addr: SocketAddr,
        /// Signing keyset (Ed25519, by key id). Default: `<db>.keys.json`, created on first
        /// start. Give every instance over one database the same file.
        #[arg(long, env = "POSYNC_KEYS")]
        keys: Option<PathBuf>,
        /// Largest pulled page, bytes.
        #[arg(long, default_value_t = Limits::default().page_bytes_max)]
        page_bytes_max: usize,
        /// Largest request body on the wire, bytes.
        #[arg(long, default_value_t = Limits::default().body_bytes_max)]
        body_bytes_max: usize,
        /// Syncs worked on at once; more are answered 503 with Retry-After.
        #[arg(long, default_value_t = Limits::default().syncs_in_flight_max)]
        syncs_in_flight_max: usize,
        /// On SIGTERM or SIGINT: seconds to let in-flight requests finish before exiting.
        #[arg(long, default_value_t = 20, env = "POSYNC_DRAIN_SECONDS")]
        drain_seconds: u64,
        /// Serve HTTPS with this certificate chain (PEM); needs --tls-key. Without both,
        /// plain HTTP (behind a reverse proxy that terminates TLS, or on a LAN).
        #[arg(long, env = "POSYNC_TLS_CERT", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The certificate's private key (PEM).
        #[arg(long, env = "POSYNC_TLS_KEY", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
    },
    /// The server console: hierarchy, users, enrolment codes, devices, audit, keys.
    Admin {
        #[command(flatten)]
        store: StoreArgs,
        #[command(subcommand)]
        cmd: admin::AdminCmd,
    },
    /// Monthly reports from the server's database (console): SKDN, nutrition, immunisation.
    Report {
        #[command(flatten)]
        store: StoreArgs,
        /// `monthly` (SKDN and prevalence) or `overdue` (children with overdue doses).
        #[arg(value_parser = ["monthly", "overdue"])]
        kind: String,
        /// YYYY-MM (default: this month).
        #[arg(long)]
        month: Option<String>,
        /// posyandu, village, puskesmas or district.
        #[arg(long, default_value = "posyandu")]
        level: String,
        /// Print CSV instead of a table.
        #[arg(long)]
        csv: bool,
    },
    /// A kader's phone: capture offline, sync when in range.
    Kader {
        #[command(subcommand)]
        cmd: KaderCmd,
    },
    /// A puskesmas tablet: pull every document of its posyandu.
    Pull {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The sync server, http://HOST:PORT or https://HOST[:PORT]. Default: the one this phone
        /// enrolled with, else http://127.0.0.1:8080.
        #[arg(long, env = "POSYNC_SERVER")]
        server: Option<String>,
        /// A bearer token; default: the device credential stored by `kader enrol`.
        #[arg(long, env = "POSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of a CA to trust beside the bundled web roots (a puskesmas server with
        /// its own certificate authority).
        #[arg(long, env = "POSYNC_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Move a district's data from its SQLite file into PostgreSQL, in one transaction,
    /// then check every document's heads in the target.
    MigrateStore {
        /// sqlite:PATH
        #[arg(long)]
        from: String,
        /// postgres://user@host:5432/db
        #[arg(long)]
        to: String,
    },
    /// Three phones, one posyandu day, offline capture, a concurrent edit, a puskesmas pull.
    Demo {
        /// Seed for the simulated day.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
}

#[derive(Subcommand)]
enum KaderCmd {
    /// Create the replica if needed and print its device id.
    Init {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
    },
    /// Enrol this device with a one-time code from an admin (`posync admin enrol USER`).
    Enrol {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The sync server, http://HOST:PORT or https://HOST[:PORT].
        #[arg(long, default_value = "http://127.0.0.1:8080", env = "POSYNC_SERVER")]
        server: String,
        /// The one-time enrolment code the admin gave you.
        #[arg(long)]
        code: String,
        /// Shown to admins in the device list.
        #[arg(long, default_value = "")]
        label: String,
        /// PEM file of a CA to trust beside the bundled web roots (a puskesmas server with
        /// its own certificate authority).
        #[arg(long, env = "POSYNC_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Record a child's visit (offline).
    Record {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The posyandu of the session (its id, e.g. pos-hegarsari-melati-1).
        #[arg(long)]
        posyandu: PosyanduId,
        /// Session day, YYYY-MM-DD (default: today).
        #[arg(long)]
        date: Option<String>,
        /// The person's name.
        #[arg(long)]
        name: String,
        /// F or M (P or L).
        #[arg(long)]
        sex: String,
        /// Birth date, YYYY-MM-DD.
        #[arg(long)]
        birth_date: String,
        /// Weight in grams.
        #[arg(long)]
        weight_g: Option<i64>,
        /// Length (under 2 years, lying) or height, in millimetres.
        #[arg(long)]
        length_mm: Option<i64>,
        /// Head circumference in millimetres.
        #[arg(long)]
        head_circ_mm: Option<i64>,
        /// Mid-upper arm circumference (LILA) in millimetres.
        #[arg(long)]
        muac_mm: Option<i64>,
        /// Free-text notes for the visit.
        #[arg(long, default_value = "")]
        notes: String,
        /// Life-cycle group (balita, ibu_hamil, ibu_nifas, usia_sekolah, remaja,
        /// usia_produktif, lansia). Default: by age.
        #[arg(long)]
        group: Option<String>,
        /// A group service or measurement, KEY=VALUE (repeat): bp_systolic=120,
        /// iron_tablets=30, growth_card=true, ...
        #[arg(long)]
        service: Vec<String>,
    },
    /// Change one field of a visit (offline).
    Edit {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The session document id (as `kader record` printed it).
        #[arg(long)]
        session: posync_model::DocId,
        /// The visit id (as `kader record` printed it).
        #[arg(long)]
        visit: posync_model::VisitId,
        /// Field key, e.g. weight_g.
        #[arg(long)]
        field: String,
        /// New value (integers for measurements).
        #[arg(long)]
        value: String,
    },
    /// Sync with the server.
    Sync {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
        /// The sync server, http://HOST:PORT or https://HOST[:PORT]. Default: the one this phone
        /// enrolled with, else http://127.0.0.1:8080.
        #[arg(long, env = "POSYNC_SERVER")]
        server: Option<String>,
        /// A bearer token; default: the device credential stored by `kader enrol`.
        #[arg(long, env = "POSYNC_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// PEM file of a CA to trust beside the bundled web roots (a puskesmas server with
        /// its own certificate authority).
        #[arg(long, env = "POSYNC_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// List visits on this phone (optionally one day), as JSON lines.
    Visits {
        /// The phone's replica file (created if missing).
        #[arg(long)]
        replica: PathBuf,
    },
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

async fn report(store: &StoreArgs, kind: &str, month: Option<&str>, level: &str, csv: bool) -> Result<()> {
    use posync_server::reports;
    let store = store.open().await?;
    let store = store.as_ref();
    let month = reports::parse_month(month, time::OffsetDateTime::now_utc().date())?;
    let tree = store.unit_tree().await?;
    // The console sees every posyandu of the database.
    let scope = posync_model::Scope::new(
        tree.units.iter().filter(|u| u.kind == posync_model::UnitKind::Posyandu).map(|u| u.id.as_posyandu()),
    );
    if kind == "overdue" {
        let list = reports::overdue(store, &scope, month).await?;
        if csv {
            print!("{}", reports::overdue_csv(&list));
        } else {
            out!("{:<28} {:<28} {:>6}  overdue doses", "posyandu", "name", "months");
            for o in list {
                out!("{:<28} {:<28} {:>6}  {}", o.posyandu, o.name, o.age_months, o.doses.join(" "));
            }
        }
        return Ok(());
    }
    let level = reports::Level::parse(level).context("--level must be posyandu, village, puskesmas or district")?;
    let report = reports::monthly(store, &scope, month, level).await?;
    if csv {
        print!("{}", report.csv());
        return Ok(());
    }
    let pct = |r: posync_model::report::Ratio| r.percent().map_or("-".to_owned(), |p| format!("{p:.1}"));
    out!("Laporan bulanan {} ({:?})", report.month, report.level);
    out!(
        "{:<30} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>7} {:>8} {:>6} {:>7}",
        "unit",
        "S",
        "K",
        "D",
        "N",
        "D/S%",
        "N/D%",
        "stunt%",
        "waste%",
        "under%",
        "IDL%",
        "KEK%"
    );
    for r in &report.rows {
        let c = &r.counts;
        out!(
            "{:<30} {:>5} {:>5} {:>5} {:>5} {:>6} {:>6} {:>8} {:>7} {:>8} {:>6} {:>7}",
            r.name.chars().take(30).collect::<String>(),
            c.s,
            c.k,
            c.d,
            c.n,
            pct(c.d_over_s()),
            pct(c.n_over_d()),
            pct(c.stunting),
            pct(c.wasting),
            pct(c.underweight),
            pct(c.basic_immunisation_12_23m),
            pct(c.pregnant_kek)
        );
    }
    Ok(())
}

/// A transport or enrolment failure a person can act on: say what to do about it.
fn hint(e: posync_replica::ReplicaError) -> anyhow::Error {
    if let posync_replica::ReplicaError::Network(reason) = &e
        && reason.to_lowercase().contains("connection refused")
    {
        let hint = "nothing answers at that address: is the server running, and are the host and port right?";
        return anyhow::Error::new(e).context(hint);
    }
    if let posync_replica::ReplicaError::Enrolment(inner) = &e
        && let posync_replica::ReplicaError::Server { code: posync_proto::ErrorCode::InvalidCredential, .. } = &**inner
    {
        let hint = "the enrolment code is unknown, already used by another phone, or expired: \
                    ask your puskesmas or district admin for a new one (posync admin enrol USER)";
        return anyhow::Error::new(e).context(hint);
    }
    let tls = match &e {
        posync_replica::ReplicaError::Tls(_) => true,
        posync_replica::ReplicaError::Enrolment(inner) => matches!(**inner, posync_replica::ReplicaError::Tls(_)),
        _ => false,
    };
    let hint = "the server's certificate is not trusted here: if the server uses its own CA (a puskesmas \
                server), give that CA's certificate with --ca-file FILE";
    if tls { anyhow::Error::new(e).context(hint) } else { anyhow::Error::new(e) }
}

/// The server URL as given, if it is one a phone can reach: `http://` or `https://`, a host.
fn server_url(url: &str) -> Result<&str> {
    let rest = url.strip_prefix("https://").or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(host) if !host.is_empty() && !host.starts_with('/') => Ok(url),
        _ => bail!(
            "the server URL {url:?} must start with http:// or https:// and name a host, \
             e.g. --server http://192.168.1.10:8080 or --server https://puskesmas.example"
        ),
    }
}

/// `client`, also trusting the CA certificates of `ca_file` when given.
fn with_ca(client: posync_replica::HttpSync, ca_file: Option<&Path>) -> Result<posync_replica::HttpSync> {
    let Some(path) = ca_file else { return Ok(client) };
    let pem = std::fs::read(path).with_context(|| format!("cannot read the CA file {}", path.display()))?;
    Ok(client.with_ca_pem(&pem)?)
}

async fn sync_replica(
    replica: &Path,
    server: Option<String>,
    token: Option<String>,
    ca_file: Option<PathBuf>,
) -> Result<()> {
    let mut r = Replica::open(replica)?;
    // --server (or POSYNC_SERVER), else the server this phone enrolled with.
    let server = match server {
        Some(s) => s,
        None => r.server_url()?.unwrap_or_else(|| "http://127.0.0.1:8080".to_owned()),
    };
    let server = server_url(&server)?;
    let client = match token {
        Some(t) => posync_replica::HttpSync::new(server, &t),
        None => posync_replica::HttpSync::enrolled(server),
    };
    let report = with_ca(client, ca_file.as_deref())?.sync(&mut r).await.map_err(hint)?;
    out!("{}", serde_json::to_string(&report)?);
    if !report.rejected.is_empty() {
        let which: Vec<String> = report.rejected.iter().map(|(doc, code)| format!("{doc} ({code})")).collect();
        bail!(
            "the server refused {} document(s): {}. They stay on this phone and are not sent again; \
             show this to your puskesmas or district admin",
            which.len(),
            which.join(", ")
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // The demo narrates on stdout; server logs would only interleave with it.
    let default_filter = if matches!(cli.cmd, Cmd::Demo { .. }) { "warn" } else { "posync=info,warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match cli.log_format {
        // Colour codes only where a person reads them: a log file or journal gets plain text.
        LogFormat::Text => logs.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(true).with_span_list(false).init(),
    }
    match cli.cmd {
        Cmd::Serve {
            store,
            addr,
            keys,
            page_bytes_max,
            body_bytes_max,
            syncs_in_flight_max,
            drain_seconds,
            tls_cert,
            tls_key,
        } => {
            let keys = TokenKeys::load_or_create(&store.keys_path(keys)?, now())?;
            let limits = Limits { page_bytes_max, body_bytes_max, syncs_in_flight_max, ..Limits::default() };
            let opened = store.open_with(limits).await?;
            let tls = tls_cert.zip(tls_key).map(|(cert, key)| posync_server::TlsFiles { cert, key });
            let clock = posync_server::system_clock();
            let server = posync_server::spawn_with_tls(addr, opened, keys, limits, clock, tls).await?;
            // One line on stdout so scripts can find the port when --addr used port 0.
            out!("posync listening on {} (db {})", server.url(), store.describe());
            let signal = stop_signal().await?;
            // Stop accepting; requests in flight finish (their acknowledgements follow their
            // commits), up to the bound. The store closes when the server's state drops.
            tracing::info!(signal, drain_seconds, "stopping: finishing requests in flight");
            match tokio::time::timeout(std::time::Duration::from_secs(drain_seconds), server.stop()).await {
                Ok(stopped) => stopped?,
                Err(_) => tracing::warn!(drain_seconds, "requests still in flight after the drain bound; exiting"),
            }
            tracing::info!("stopped");
        }
        Cmd::Admin { store, cmd } => admin::run(store, cmd, now()).await?,
        Cmd::Report { store, kind, month, level, csv } => report(&store, &kind, month.as_deref(), &level, csv).await?,
        Cmd::Kader { cmd } => kader(cmd).await?,
        Cmd::Pull { replica, server, token, ca_file } => sync_replica(&replica, server, token, ca_file).await?,
        Cmd::MigrateStore { from, to } => backend::migrate_store(&from, &to).await?,
        Cmd::Demo { seed } => demo::run(seed).await?,
    }
    Ok(())
}

/// The first of SIGTERM (a service manager, `docker stop`, `kill`) and SIGINT (Ctrl-C).
async fn stop_signal() -> Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        interrupted = tokio::signal::ctrl_c() => {
            interrupted?;
            Ok("SIGINT")
        }
        _ = term.recv() => Ok("SIGTERM"),
    }
}

/// Write one line to stdout (see `out!`).
fn print_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = writeln!(stdout, "{args}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("posync: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}

/// `KEY=VALUE` pairs into typed service fields (integers, true/false, or text).
fn parse_services(pairs: &[String]) -> Result<std::collections::BTreeMap<Field, FieldValue>> {
    let mut out = std::collections::BTreeMap::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else { bail!("--service takes KEY=VALUE, got {pair:?}") };
        let Some(field) = Field::from_key(key).filter(|f| Field::SERVICES.contains(f)) else {
            bail!("unknown service {key:?}")
        };
        let value = match value {
            "true" => FieldValue::Bool(true),
            "false" => FieldValue::Bool(false),
            v => v.parse::<i64>().map(FieldValue::Int).unwrap_or_else(|_| FieldValue::Text(v.to_owned())),
        };
        out.insert(field, value);
    }
    Ok(out)
}

async fn kader(cmd: KaderCmd) -> Result<()> {
    match cmd {
        KaderCmd::Init { replica } => out!("{}", Replica::open(&replica)?.device()),
        KaderCmd::Record {
            replica,
            posyandu,
            date,
            name,
            sex,
            birth_date,
            weight_g,
            length_mm,
            head_circ_mm,
            muac_mm,
            notes,
            group,
            service,
        } => {
            let mut r = Replica::open(&replica)?;
            let date = match date {
                Some(d) => parse_date(&d).context("--date must be YYYY-MM-DD")?,
                None => time::OffsetDateTime::now_utc().date(),
            };
            let sex = Sex::parse(&sex).context("--sex must be F or M")?;
            let birth_date = parse_date(&birth_date).context("--birth-date must be YYYY-MM-DD")?;
            let session = r.start_session(&posyandu, date)?;
            let visit = NewVisit {
                person_id: PersonId::new_random(),
                name,
                sex,
                birth_date,
                weight_g,
                length_mm,
                lying: None,
                head_circ_mm,
                muac_mm,
                immunisations: Default::default(),
                vitamin_a: None,
                notes,
                group: group.as_deref().map(|g| LifeGroup::parse(g).context("unknown --group")).transpose()?,
                services: parse_services(&service)?,
            };
            let id = r.record_visit(session, visit, now())?;
            out!("{{\"session\":\"{session}\",\"visit\":\"{id}\"}}");
        }
        KaderCmd::Edit { replica, session, visit, field, value } => {
            let mut r = Replica::open(&replica)?;
            let Some(f) = Field::from_key(&field) else { bail!("unknown field {field:?}") };
            let v = match value.parse::<i64>() {
                Ok(i) => FieldValue::Int(i),
                Err(_) => FieldValue::Text(value),
            };
            r.edit_visit(session, visit, f, v, now())?;
        }
        KaderCmd::Sync { replica, server, token, ca_file } => sync_replica(&replica, server, token, ca_file).await?,
        KaderCmd::Enrol { replica, server, code, label, ca_file } => {
            let mut r = Replica::open(&replica)?;
            let client = with_ca(posync_replica::HttpSync::enrolled(server_url(&server)?), ca_file.as_deref())?;
            let resp = posync_replica::enrol_via(&client, &code, &label, &mut r).await.map_err(hint)?;
            r.set_server_url(&server)?;
            out!("{{\"device\":\"{}\",\"user\":\"{}\",\"role\":\"{}\"}}", r.device(), resp.user, resp.role);
        }
        KaderCmd::Visits { replica } => {
            let r = Replica::open(&replica)?;
            for v in r.all_visits()? {
                out!("{}", serde_json::to_string(&v)?);
            }
        }
    }
    Ok(())
}

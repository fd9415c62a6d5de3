//! `posync`: the sync server, device simulation and the demo.

mod demo;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use posync_model::record::parse_date;
use posync_model::{DeviceId, Field, FieldValue, PersonId, PosyanduId, Role, Sex};
use posync_proto::Limits;
use posync_replica::{NewVisit, Replica};
use posync_server::TokenKeys;
use posync_store::SqliteStore;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "posync", version, about = "Offline-first sync for posyandu records")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the sync server on an embedded SQLite file.
    Serve {
        #[arg(long, default_value = "posync.sqlite", env = "POSYNC_DB")]
        db: PathBuf,
        #[arg(long, default_value = "127.0.0.1:8080", env = "POSYNC_ADDR")]
        addr: SocketAddr,
        /// HS256 signing secret. Default: read from (or created in) `<db>.secret`.
        #[arg(long, env = "POSYNC_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        /// Largest pulled page, bytes.
        #[arg(long, default_value_t = Limits::default().page_bytes_max)]
        page_bytes_max: usize,
        /// Largest request body on the wire, bytes.
        #[arg(long, default_value_t = Limits::default().body_bytes_max)]
        body_bytes_max: usize,
    },
    /// Mint a bearer token for a device (development; issue #3 brings enrolment).
    Token {
        #[arg(long, env = "POSYNC_DB", default_value = "posync.sqlite")]
        db: PathBuf,
        #[arg(long, env = "POSYNC_JWT_SECRET", hide_env_values = true)]
        jwt_secret: Option<String>,
        #[arg(long)]
        device: DeviceId,
        #[arg(long, value_enum, default_value = "kader")]
        role: RoleArg,
        /// Posyandu the token covers (repeat for several).
        #[arg(long, required = true)]
        posyandu: Vec<PosyanduId>,
        #[arg(long, default_value_t = 24 * 3600)]
        ttl_seconds: i64,
    },
    /// A kader's phone: capture offline, sync when in range.
    Kader {
        #[command(subcommand)]
        cmd: KaderCmd,
    },
    /// A puskesmas tablet: pull every document of its posyandu.
    Pull {
        #[arg(long)]
        replica: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, env = "POSYNC_TOKEN", hide_env_values = true)]
        token: String,
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
        #[arg(long)]
        replica: PathBuf,
    },
    /// Record a child's visit (offline).
    Record {
        #[arg(long)]
        replica: PathBuf,
        #[arg(long)]
        posyandu: PosyanduId,
        /// Session day, YYYY-MM-DD (default: today).
        #[arg(long)]
        date: Option<String>,
        #[arg(long)]
        name: String,
        /// F or M (P or L).
        #[arg(long)]
        sex: String,
        #[arg(long)]
        birth_date: String,
        #[arg(long)]
        weight_g: Option<i64>,
        #[arg(long)]
        length_mm: Option<i64>,
        #[arg(long)]
        head_circ_mm: Option<i64>,
        #[arg(long)]
        muac_mm: Option<i64>,
        #[arg(long, default_value = "")]
        notes: String,
    },
    /// Change one field of a visit (offline).
    Edit {
        #[arg(long)]
        replica: PathBuf,
        #[arg(long)]
        session: posync_model::DocId,
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
        #[arg(long)]
        replica: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        server: String,
        #[arg(long, env = "POSYNC_TOKEN", hide_env_values = true)]
        token: String,
    },
    /// List visits on this phone (optionally one day), as JSON lines.
    Visits {
        #[arg(long)]
        replica: PathBuf,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    Kader,
    PuskesmasOfficer,
    DistrictAdmin,
    DistrictReporter,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Kader => Role::Kader,
            RoleArg::PuskesmasOfficer => Role::PuskesmasOfficer,
            RoleArg::DistrictAdmin => Role::DistrictAdmin,
            RoleArg::DistrictReporter => Role::DistrictReporter,
        }
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// The signing secret: given, or kept next to the database (created on first use, 0600).
fn secret(db: &Path, given: Option<String>) -> Result<Vec<u8>> {
    if let Some(s) = given {
        return Ok(s.into_bytes());
    }
    let path = db.with_extension("secret");
    if let Ok(s) = std::fs::read(&path) {
        return Ok(s);
    }
    let s: [u8; 32] = rand::random();
    let hex: String = s.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &hex).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(hex.into_bytes())
}

#[tokio::main]
async fn main() -> Result<()> {
    let cli = Cli::parse();
    // The demo narrates on stdout; server logs would only interleave with it.
    let default_filter = if matches!(cli.cmd, Cmd::Demo { .. }) { "warn" } else { "posync=info,warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| default_filter.into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.cmd {
        Cmd::Serve { db, addr, jwt_secret, page_bytes_max, body_bytes_max } => {
            let keys = TokenKeys::hs256(&secret(&db, jwt_secret)?);
            let store = SqliteStore::open(&db).with_context(|| format!("opening {}", db.display()))?;
            let limits = Limits { page_bytes_max, body_bytes_max, ..Limits::default() };
            let server =
                posync_server::spawn(addr, Arc::new(store), keys, limits, posync_server::system_clock()).await?;
            // One line on stdout so scripts can find the port when --addr used port 0.
            println!("posync listening on {} (db {})", server.url(), db.display());
            tokio::signal::ctrl_c().await?;
            server.stop().await?;
        }
        Cmd::Token { db, jwt_secret, device, role, posyandu, ttl_seconds } => {
            let keys = TokenKeys::hs256(&secret(&db, jwt_secret)?);
            println!("{}", keys.issue(device, role.into(), posyandu, now(), ttl_seconds));
        }
        Cmd::Kader { cmd } => kader(cmd).await?,
        Cmd::Pull { replica, server, token } => {
            let mut r = Replica::open(&replica)?;
            let report = r.sync(&server, &token).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        Cmd::Demo { seed } => demo::run(seed).await?,
    }
    Ok(())
}

async fn kader(cmd: KaderCmd) -> Result<()> {
    match cmd {
        KaderCmd::Init { replica } => println!("{}", Replica::open(&replica)?.device()),
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
            };
            let id = r.record_visit(session, visit, now())?;
            println!("{{\"session\":\"{session}\",\"visit\":\"{id}\"}}");
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
        KaderCmd::Sync { replica, server, token } => {
            let mut r = Replica::open(&replica)?;
            let report = r.sync(&server, &token).await?;
            println!("{}", serde_json::to_string(&report)?);
        }
        KaderCmd::Visits { replica } => {
            let r = Replica::open(&replica)?;
            for v in r.all_visits()? {
                println!("{}", serde_json::to_string(&v)?);
            }
        }
    }
    Ok(())
}

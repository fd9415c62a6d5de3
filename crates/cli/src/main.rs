//! `posync`: the sync server, device simulation and the demo.

/// `println!` for results: a closed pipe (`posync admin units | head`) ends the program
/// quietly with status 0, as a Unix tool does, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}

mod admin;
mod backend;
mod demo;
mod export;
mod export_csv;
mod kader;
mod link;
mod output;
mod progress;
mod report;

use anyhow::Result;
use backend::StoreArgs;
use clap::{Parser, Subcommand};
use posync_proto::Limits;
use posync_server::TokenKeys;
use std::net::SocketAddr;
use std::path::PathBuf;

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
        /// Syncs worked on at once; more wait their turn (--syncs-waiting-max).
        #[arg(long, default_value_t = Limits::default().syncs_in_flight_max)]
        syncs_in_flight_max: usize,
        /// Syncs that may wait for a turn, first come first served; one more is answered
        /// 503 with Retry-After at once.
        #[arg(long, default_value_t = Limits::default().syncs_waiting_max)]
        syncs_waiting_max: usize,
        /// Milliseconds a sync may wait for its turn before it is answered 503.
        #[arg(long, default_value_t = Limits::default().sync_wait_ms_max)]
        sync_wait_ms_max: u64,
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
    /// Exports from the server's database (console): `fhir` for SATUSEHAT, `csv` for analysts.
    Export {
        #[command(subcommand)]
        cmd: export::ExportCmd,
    },
    /// A kader's phone: capture offline, sync when in range.
    Kader {
        #[command(subcommand)]
        cmd: kader::KaderCmd,
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

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
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
            syncs_waiting_max,
            sync_wait_ms_max,
            drain_seconds,
            tls_cert,
            tls_key,
        } => {
            let keys = TokenKeys::load_or_create(&store.keys_path(keys)?, now())?;
            let limits = Limits {
                page_bytes_max,
                body_bytes_max,
                syncs_in_flight_max,
                syncs_waiting_max,
                sync_wait_ms_max,
                ..Limits::default()
            };
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
        Cmd::Report { store, kind, month, level, csv } => {
            report::run(&store, &kind, month.as_deref(), &level, csv).await?
        }
        Cmd::Export { cmd } => export::run(cmd, now()).await?,
        Cmd::Kader { cmd } => kader::run(cmd).await?,
        Cmd::Pull { replica, server, token, ca_file } => link::sync_replica(&replica, server, token, ca_file).await?,
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

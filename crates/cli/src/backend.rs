//! Which store a command works on: the embedded SQLite file (default) or PostgreSQL.

use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use posync_store::migrate::MoveProgress;
use posync_store::{PgStore, SqliteStore, Store};
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Clone, Debug)]
pub struct StoreArgs {
    /// The SQLite file (the default backend).
    #[arg(long, default_value = "posync.sqlite", env = "POSYNC_DB")]
    pub db: PathBuf,
    /// Use PostgreSQL instead: `postgres://user@host:5432/db`. Several `serve` instances may
    /// share one database (give them all the same --keys).
    #[arg(long, env = "POSYNC_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connections per process.
    #[arg(long, default_value_t = posync_store::postgres::POOL_SIZE_DEFAULT)]
    pub pool_size: usize,
    /// Memory for documents kept loaded between requests, MiB (estimated; 0: none).
    #[arg(long, default_value_t = 64, env = "POSYNC_DOC_CACHE_MIB")]
    pub doc_cache_mib: usize,
    /// Create the SQLite file if it does not exist (`serve` always does; other commands
    /// refuse a missing file, so a mistyped --db is not a new empty store).
    #[arg(long)]
    pub create: bool,
}

impl StoreArgs {
    /// Open an existing store (or create it with `--create`): for the console and reports.
    pub async fn open(&self) -> Result<Arc<dyn Store>> {
        if self.database_url.is_none() && !self.create && !self.db.exists() {
            bail!(
                "no store at {}: give the --db the server uses (the file `posync serve` created), \
                 or add --create to start a new one",
                self.db.display()
            );
        }
        self.open_with(posync_proto::Limits::default()).await
    }

    /// Open the store, merging pushes within `limits` (the server's).
    pub async fn open_with(&self, limits: posync_proto::Limits) -> Result<Arc<dyn Store>> {
        Ok(match &self.database_url {
            Some(url) => Arc::new(
                PgStore::connect_with(url, self.pool_size)
                    .await
                    .with_context(|| format!("connecting to {}", redact(url)))?
                    .with_limits(limits)
                    .with_doc_cache_bytes(self.doc_cache_mib.saturating_mul(1024 * 1024)),
            ),
            None => Arc::new(
                SqliteStore::open(&self.db)
                    .with_context(|| format!("opening {}", self.db.display()))?
                    .with_limits(limits)
                    .with_doc_cache_bytes(self.doc_cache_mib.saturating_mul(1024 * 1024)),
            ),
        })
    }

    /// The keyset file unless `--keys` says otherwise: beside the SQLite file. Instances over
    /// PostgreSQL share no disk, so they must be told.
    pub fn keys_path(&self, keys: Option<PathBuf>) -> Result<PathBuf> {
        match (keys, &self.database_url) {
            (Some(k), _) => Ok(k),
            (None, None) => Ok(default_keys_path(&self.db)),
            (None, Some(_)) => bail!("--keys is required with --database-url: every instance needs the same keyset"),
        }
    }

    /// What the store is, for log lines: never a password.
    pub fn describe(&self) -> String {
        match &self.database_url {
            Some(url) => redact(url),
            None => self.db.display().to_string(),
        }
    }
}

/// Where `serve` and `admin rotate-keys` keep the keyset beside a SQLite file.
pub fn default_keys_path(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".keys.json");
    db.with_file_name(name)
}

/// `postgres://user:secret@host/db` → `postgres://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_owned() };
    match rest.split_once('@') {
        Some((creds, host)) if creds.contains(':') => {
            let user = creds.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}")
        }
        _ => url.to_owned(),
    }
}

/// `migrate-store`: copy a SQLite store into PostgreSQL and check every document's heads.
pub async fn migrate_store(from: &str, to: &str) -> Result<()> {
    let Some(path) = from.strip_prefix("sqlite:") else { bail!("--from takes sqlite:PATH, got {from:?}") };
    if !(to.starts_with("postgres://") || to.starts_with("postgresql://")) {
        bail!("--to takes postgres://…, got {:?}", redact(to));
    }
    let path = Path::new(path);
    if !path.exists() {
        bail!("{} does not exist", path.display());
    }
    let target = PgStore::connect(to).await.with_context(|| format!("connecting to {}", redact(to)))?;
    let shown = Progress::bar(0, "Memindahkan / moving rows");
    let progress = |step: MoveProgress| match step {
        MoveProgress::Copying { rows_done, rows_total } => shown.set(rows_done, rows_total),
        MoveProgress::Verifying { docs_done, docs_total } => {
            shown.say("Memeriksa / verifying documents".into());
            shown.set(docs_done, docs_total);
        }
    };
    let report = posync_store::migrate::sqlite_to_postgres_with(path, &target, &progress)
        .await
        .with_context(|| format!("moving {} into {}", path.display(), redact(to)))?;
    shown.done(format!("Selesai / done: {} documents verified", report.docs_verified));
    out!("{}", serde_json::to_string(&report)?);
    Ok(())
}

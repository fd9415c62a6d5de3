//! `posync admin …`: the server console. Runs against the database file directly (on the
//! server's machine, by someone who could read that file anyway), through the same admin
//! service as the HTTP admin API, and audits every change as `console:<OS user>`.

use crate::output::{print_json, print_one};
use anyhow::{Context, Result, bail};
use clap::Subcommand;
use posync_model::{DeviceId, Role, Unit, UnitId, UserId, UserSpec};
use posync_server::{AdminCaller, AdminService, TokenKeys};
use posync_store::Store;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Subcommand)]
pub enum AdminCmd {
    /// Load a hierarchy file (units and users), e.g. fixtures/district-kota-banjar.json.
    Import {
        /// The hierarchy file (JSON).
        file: PathBuf,
    },
    /// List the hierarchy's units.
    Units,
    /// Create or update a user with a role and units (repeat --unit).
    User {
        /// The user's id, e.g. kader-0001.
        id: UserId,
        /// The person's name.
        #[arg(long)]
        name: String,
        /// kader, puskesmas_officer, district_admin or district_reporter.
        #[arg(long, value_parser = parse_role)]
        role: Role,
        /// A unit the user works in (repeat for several).
        #[arg(long = "unit", required = true)]
        units: Vec<UnitId>,
    },
    /// Re-assign a user to other units (a kader moving posyandu). Keeps name and role.
    Assign {
        /// The user's id.
        id: UserId,
        /// A unit the user works in (repeat for several).
        #[arg(long = "unit", required = true)]
        units: Vec<UnitId>,
    },
    /// Move a unit under another parent (a posyandu to another village or puskesmas).
    Move {
        /// The unit to move.
        unit: UnitId,
        /// The new parent unit.
        #[arg(long)]
        to: UnitId,
    },
    /// List users.
    Users,
    /// Issue a one-time enrolment code for a user's phone (printed once, stored hashed).
    Enrol {
        /// The user whose phone enrols.
        user: UserId,
    },
    /// List enrolled devices.
    Devices,
    /// Revoke a device (a lost phone).
    Revoke {
        /// The device id (`posync admin devices` lists them).
        device: DeviceId,
    },
    /// Print audit entries after a position, oldest first, as JSON lines.
    Audit {
        /// Audit position to list after (0: from the start).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Most entries to print.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Read-only API keys for BI tools and scripts (reports and exports of one unit).
    #[command(subcommand)]
    ApiKey(ApiKeyCmd),
    /// Copy the store and its signing keyset into DIR while the server runs (SQLite; on
    /// PostgreSQL use pg_dump and copy the keyset file). Restore: stop the server, copy both
    /// files back in place, start it (README, "Backup and restore").
    Backup {
        /// A directory to create (or an empty one).
        #[arg(long)]
        to: PathBuf,
        /// The keyset file (default: `<db>.keys.json`).
        #[arg(long)]
        keys: Option<PathBuf>,
    },
    /// Add a new signing key to the keyset and sign with it from now on; keep `--keep`
    /// newest keys (older tokens verify until their keys are dropped).
    RotateKeys {
        /// The signing keyset file (default: <db>.keys.json).
        #[arg(long)]
        keys: Option<PathBuf>,
        /// How many of the newest keys to keep.
        #[arg(long, default_value_t = 2)]
        keep: usize,
    },
}

#[derive(Subcommand)]
pub enum ApiKeyCmd {
    /// Create a key reading the reports and exports of every posyandu under a unit. The
    /// secret (`psk_…`) is printed once: only its hash is stored.
    Create {
        /// The unit the key reads (a district, puskesmas, village or posyandu).
        #[arg(long)]
        unit: UnitId,
        /// What the key is for, e.g. "Dasbor Dinkes".
        #[arg(long)]
        label: String,
    },
    /// List keys with their unit and last use (never a secret).
    List,
    /// Revoke a key: it is refused from the next request on.
    Revoke {
        /// The key's id (`posync admin api-key list` shows it).
        id: String,
    },
}

/// `posync admin backup`: the store (one consistent copy) and its keyset, with a manifest.
async fn backup(
    store_args: &crate::backend::StoreArgs,
    to: &std::path::Path,
    keys: Option<PathBuf>,
    now: i64,
) -> Result<()> {
    if store_args.database_url.is_some() {
        bail!(
            "on PostgreSQL, back up with pg_dump (pg_dump --format=custom DB > posync.dump) and copy the \
             keyset file given to --keys beside it"
        );
    }
    if !store_args.db.exists() {
        bail!("no store at {}: give the server's --db", store_args.db.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    if std::fs::read_dir(to)?.next().is_some() {
        bail!("{} is not empty: back up into a new directory", to.display());
    }
    let keys_from = store_args.keys_path(keys)?;
    let name = store_args.db.file_name().map_or("posync.sqlite".into(), |n| n.to_string_lossy().into_owned());
    let store = posync_store::SqliteStore::open(&store_args.db)?;
    let docs = store.backup_into(to.join(&name)).await?;
    let keys_to = to.join(format!("{name}.keys.json"));
    std::fs::copy(&keys_from, &keys_to).with_context(|| {
        format!("copying the keyset {} (without it, every phone must enrol again)", keys_from.display())
    })?;
    let manifest = serde_json::json!({ "taken_at": now, "store": name, "keys": keys_to.file_name().map(|n| n.to_string_lossy().into_owned()), "docs": docs });
    std::fs::write(to.join("backup.json"), serde_json::to_vec_pretty(&manifest)?)?;
    let detail = serde_json::json!({ "docs": docs });
    posync_store::AuditStore::append_audit(
        &store,
        posync_store::AuditEntry::new(now, &console_actor(), posync_store::AuditAction::BackupTaken, "store", detail),
    )
    .await?;
    print_one(&manifest)?;
    Ok(())
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| "kader, puskesmas_officer, district_admin or district_reporter".into())
}

pub(crate) fn console_name() -> String {
    std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into())
}

fn console() -> AdminCaller {
    AdminCaller::Console(console_name())
}

fn console_actor() -> posync_store::Actor {
    posync_store::Actor::Console { name: console_name() }
}

pub async fn run(store_args: crate::backend::StoreArgs, cmd: AdminCmd, now: i64) -> Result<()> {
    if let AdminCmd::RotateKeys { keys, keep } = cmd {
        let path = store_args.keys_path(keys)?;
        let mut set = TokenKeys::load_or_create(&path, now)?;
        let kid = set.rotate(now)?;
        set.retain_newest(keep);
        set.save(&path)?;
        out!("{{\"active\":\"{kid}\",\"keys\":{}}}", serde_json::to_string(&set.kids())?);
        return Ok(());
    }
    if let AdminCmd::Backup { to, keys } = cmd {
        return backup(&store_args, &to, keys, now).await;
    }
    let store: Arc<dyn Store> = store_args.open().await?;
    let admin = AdminService::new(store.clone());
    let caller = console();
    match cmd {
        AdminCmd::Import { file } => {
            let text = std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
            let parsed = posync_server::parse_hierarchy(&text)?;
            let report = admin.import(&caller, parsed, now).await?;
            out!("{}", serde_json::to_string(&report)?);
        }
        AdminCmd::Units => print_json(admin.units(&caller).await?)?,
        AdminCmd::User { id, name, role, units } => {
            admin.save_user(&caller, UserSpec { id, name, role, units }, now).await?;
        }
        AdminCmd::Assign { id, units } => {
            let Some(user) = store.user(id.clone()).await? else { bail!("no user {id}") };
            admin.save_user(&caller, UserSpec { id, name: user.name, role: user.role, units }, now).await?;
        }
        AdminCmd::Move { unit, to } => {
            let tree = store.unit_tree().await?;
            let Some(existing) = tree.get(&unit) else { bail!("no unit {unit}") };
            let moved = Unit { parent: Some(to), ..existing.clone() };
            admin.put_unit(&caller, moved, now).await?;
        }
        AdminCmd::Users => print_json(admin.users(&caller).await?)?,
        AdminCmd::Enrol { user } => print_one(&admin.issue_enrolment(&caller, user, now).await?)?,
        AdminCmd::Devices => print_json(admin.devices(&caller).await?)?,
        AdminCmd::Revoke { device } => admin.revoke_device(&caller, device, now).await?,
        AdminCmd::Audit { after, limit } => print_json(admin.audit_log(&caller, after, limit).await?)?,
        AdminCmd::ApiKey(ApiKeyCmd::Create { unit, label }) => {
            let issued = admin.create_api_key(&caller, unit, Role::DistrictReporter, label, now).await?;
            print_one(&issued)?;
            eprintln!(
                "Simpan kunci ini sekarang: tidak akan ditampilkan lagi. / Keep this key now: it is not shown again \
                 (give it to the BI tool as `Authorization: Bearer <key>`)."
            );
        }
        AdminCmd::ApiKey(ApiKeyCmd::List) => print_json(admin.api_keys(&caller).await?)?,
        AdminCmd::ApiKey(ApiKeyCmd::Revoke { id }) => {
            admin.revoke_api_key(&caller, &id, now).await.with_context(|| {
                format!("revoking API key {id}: `posync admin api-key list` shows the keys and their ids")
            })?
        }
        AdminCmd::RotateKeys { .. } | AdminCmd::Backup { .. } => unreachable_rotate()?,
    }
    Ok(())
}

fn unreachable_rotate() -> Result<()> {
    bail!("rotate-keys is handled before the store is opened")
}

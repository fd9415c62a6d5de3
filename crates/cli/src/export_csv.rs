//! `posync export csv`: the analysts' CSV exports from the server's database (console), the
//! same files as `GET /v1/export/{visits,people}.csv`. Columns: proto/export/DATA-DICTIONARY.md.

use crate::backend::StoreArgs;
use anyhow::{Context, Result};
use posync_server::export_csv::{self, Period};
use posync_store::{Actor, AuditAction, AuditEntry};
use std::io::Write;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CsvArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// `visits` (one row per visit, with z-scores) or `people` (one row per registered person).
    #[arg(value_parser = ["visits", "people"])]
    what: String,
    /// Only the posyandu under this unit (default: every posyandu of the database).
    #[arg(long)]
    unit: Option<posync_model::UnitId>,
    /// YYYY-MM (default: this month).
    #[arg(long, conflicts_with_all = ["from", "to"])]
    month: Option<String>,
    /// First day, YYYY-MM-DD (with --to).
    #[arg(long, requires = "to")]
    from: Option<String>,
    /// Last day, YYYY-MM-DD (with --from).
    #[arg(long, requires = "from")]
    to: Option<String>,
    /// Write the CSV to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
}

pub async fn run(args: CsvArgs, now: i64) -> Result<()> {
    let store = args.store.open().await?;
    let store = store.as_ref();
    let today = time::OffsetDateTime::from_unix_timestamp(now).map_or(time::Date::MIN, |t| t.date());
    let period = Period::parse(args.month.as_deref(), args.from.as_deref(), args.to.as_deref(), today)?;
    let tree = store.unit_tree().await?;
    // The console sees every posyandu of the database.
    let all = posync_model::Scope::new(
        tree.units.iter().filter(|u| u.kind == posync_model::UnitKind::Posyandu).map(|u| u.id.as_posyandu()),
    );
    let coverage = posync_server::reports::coverage(store, &all, args.unit.as_ref())
        .await
        .with_context(|| "no posyandu under --unit: `posync admin units` lists the units")?;
    let facts = store.report_facts(coverage.scope.clone(), period.from, period.to).await?;
    let (csv, rows) = if args.what == "people" {
        let people = store.people_export(coverage.scope.clone()).await?;
        (export_csv::people_csv(&people, &facts, period), people.len())
    } else {
        (export_csv::visits_csv(&facts), facts.len())
    };
    let name = std::env::var("USER").or_else(|_| std::env::var("LOGNAME")).unwrap_or_else(|_| "unknown".into());
    let detail = serde_json::json!({
        "export": format!("{}.csv", args.what), "unit": args.unit, "from": period.from.to_string(),
        "to": period.to.to_string(), "rows": rows,
    });
    let concerns = args
        .unit
        .as_ref()
        .map(ToString::to_string)
        .or_else(|| coverage.scope.posyandu().next().map(ToString::to_string));
    let entry =
        AuditEntry::new(now, &Actor::Console { name }, AuditAction::RecordRead, "export", detail).concerning(concerns);
    store.append_audit(entry).await?;
    match &args.out {
        Some(path) => std::fs::write(path, csv).with_context(|| format!("cannot write {}", path.display()))?,
        None => {
            let mut stdout = std::io::stdout().lock();
            // A closed pipe (`| head`) ends quietly, as a Unix tool does.
            if let Err(e) = stdout.write_all(csv.as_bytes()).and_then(|()| stdout.flush())
                && e.kind() != std::io::ErrorKind::BrokenPipe
            {
                return Err(e.into());
            }
        }
    }
    eprintln!("{rows} baris / rows ({} .. {})", period.from, period.to);
    Ok(())
}

//! `posync export …`: a unit's month for another system, from the server's database (the
//! console sees every posyandu). `fhir`: a FHIR R4 transaction Bundle for SATUSEHAT.
//! Exports name people: each is audited as the console's OS user, with counts only.

use crate::backend::StoreArgs;
use crate::progress::Progress;
use anyhow::{Context, Result, bail};
use std::path::PathBuf;

/// What to export. One variant per format; each takes the store and a unit's month.
#[derive(clap::Subcommand, Debug)]
pub enum ExportCmd {
    /// FHIR R4 Bundle (transaction, JSON) of a unit's month for SATUSEHAT: Patient,
    /// Encounter per visit, Observation (LOINC, UCUM, WHO z-scores), Immunization per dose.
    Fhir {
        #[command(flatten)]
        month: UnitMonth,
        /// Write the Bundle to this file instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Visits or people as CSV; every column is documented in proto/export/DATA-DICTIONARY.md.
    Csv(crate::export_csv::CsvArgs),
}

/// The unit and month an export covers, and the store it reads.
#[derive(clap::Args, Debug)]
pub struct UnitMonth {
    #[command(flatten)]
    pub store: StoreArgs,
    /// A posyandu, village, puskesmas or district id (`posync admin units` lists them).
    #[arg(long)]
    pub unit: String,
    /// YYYY-MM (default: this month).
    #[arg(long)]
    pub month: Option<String>,
}

pub async fn run(cmd: ExportCmd, now: i64) -> Result<()> {
    match cmd {
        ExportCmd::Fhir { month, out } => fhir(month, out, now).await,
        ExportCmd::Csv(args) => crate::export_csv::run(args, now).await,
    }
}

async fn fhir(args: UnitMonth, out: Option<PathBuf>, now: i64) -> Result<()> {
    use posync_server::{fhir, reports};
    let store = args.store.open().await?;
    let store = store.as_ref();
    let today = time::OffsetDateTime::from_unix_timestamp(now).map_or(time::Date::MIN, |t| t.date());
    let month = reports::parse_month(args.month.as_deref(), today)?;
    let unit: posync_model::UnitId = args
        .unit
        .parse()
        .ok()
        .with_context(|| format!("--unit {:?} is not a unit id: see `posync admin units`", args.unit))?;
    let tree = store.unit_tree().await?;
    let scope = posync_model::Scope::new(
        tree.units.iter().filter(|u| u.kind == posync_model::UnitKind::Posyandu).map(|u| u.id.as_posyandu()),
    );
    let coverage = match reports::coverage(store, &scope, Some(&unit)).await {
        Ok(c) => c,
        Err(_) => bail!(
            "unit {unit} has no posyandu in this database / unit tidak punya posyandu: \
             check the id with `posync admin units`, or the --db"
        ),
    };
    let shown = Progress::spinner("Menyusun bundle FHIR / building the FHIR bundle");
    let (bundle, counts) = fhir::export(store, &coverage, unit.as_str(), month, today).await?;
    let detail = serde_json::json!({ "export": "fhir", "month": month.to_string(), "unit": unit, "counts": counts });
    let actor = posync_store::Actor::Console { name: crate::admin::console_name() };
    store
        .append_audit(
            posync_store::AuditEntry::new(now, &actor, posync_store::AuditAction::RecordRead, "export/fhir", detail)
                .concerning(coverage.scope.posyandu().next()),
        )
        .await
        .context("the export names people and must be audited, but the audit entry was not written")?;
    shown.done(format!(
        "{} pasien / patients, {} kunjungan / encounters, {} observasi, {} imunisasi",
        counts.patients, counts.encounters, counts.observations, counts.immunizations
    ));
    let text = serde_json::to_string_pretty(&bundle)?;
    match out {
        Some(path) => {
            std::fs::write(&path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
            out!(
                "{}",
                serde_json::json!({ "file": path.display().to_string(), "month": month.to_string(),
                "unit": unit, "counts": counts })
            );
        }
        None => out!("{text}"),
    }
    Ok(())
}

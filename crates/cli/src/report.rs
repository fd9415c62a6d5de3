//! `posync report`: monthly figures and overdue doses from the server's database, on the console.

use crate::backend::StoreArgs;
use crate::progress::Progress;
use anyhow::{Context, Result};

pub async fn run(store: &StoreArgs, kind: &str, month: Option<&str>, level: &str, csv: bool) -> Result<()> {
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
        let shown = Progress::spinner("Mencari imunisasi terlambat / finding overdue doses");
        let list = reports::overdue(store, &scope, month).await?;
        shown.done(format!("{} anak / children", list.len()));
        if csv {
            print!("{}", reports::overdue_csv(&list));
        } else {
            out!("{:<28} {:<28} {:>6}  {:<32} overdue doses", "posyandu", "name", "months", "address");
            for h in list {
                let o = &h.overdue;
                let address = h.address.as_deref().unwrap_or("-").chars().take(32).collect::<String>();
                out!("{:<28} {:<28} {:>6}  {:<32} {}", o.posyandu, o.name, o.age_months, address, o.doses.join(" "));
            }
        }
        return Ok(());
    }
    let level = reports::Level::parse(level).context("--level must be posyandu, village, puskesmas or district")?;
    let shown = Progress::spinner(&format!(
        "Menghitung laporan / computing the report ({} posyandu)",
        scope.posyandu().count()
    ));
    let report = reports::monthly(store, &scope, month, level).await?;
    shown.done(format!("Laporan siap / report ready: {} rows", report.rows.len()));
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

//! Monthly reports over the central store, scoped to the caller: rows per posyandu rolled up
//! to village, puskesmas or district through the hierarchy. Shared by the HTTP routes and the
//! `posync report` console command.

use crate::error::ApiError;
use posync_model::report::{self, Month, MonthlyRow, Overdue, Registered};
use posync_model::{PosyanduId, Scope, Unit, UnitId, UnitKind};
use posync_proto::ErrorCode;
use posync_store::{Store, UnitTree};
use serde::Serialize;
use std::collections::BTreeMap;

/// The level rows are rolled up to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Posyandu,
    Village,
    Puskesmas,
    District,
}

impl Level {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "posyandu" => Some(Level::Posyandu),
            "village" | "desa" => Some(Level::Village),
            "puskesmas" => Some(Level::Puskesmas),
            "district" => Some(Level::District),
            _ => None,
        }
    }

    fn kind(self) -> UnitKind {
        match self {
            Level::Posyandu => UnitKind::Posyandu,
            Level::Village => UnitKind::Village,
            Level::Puskesmas => UnitKind::Puskesmas,
            Level::District => UnitKind::District,
        }
    }
}

/// One row: the unit it is for (with what a page needs to drill down) and its figures.
#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    pub unit: String,
    pub name: String,
    /// The unit's kind: the report's level.
    pub kind: UnitKind,
    /// The unit one drill-down step up (the nearest ancestor that is a report level:
    /// posyandu > village > puskesmas > district, the sub-district skipped); `None` for a
    /// district or a unit missing from the hierarchy.
    pub parent: Option<String>,
    #[serde(flatten)]
    pub counts: MonthlyRow,
    pub d_over_s_percent: Option<f64>,
    pub n_over_d_percent: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct MonthlyReport {
    pub month: String,
    pub level: Level,
    pub rows: Vec<ReportRow>,
}

impl MonthlyReport {
    pub fn csv(&self) -> String {
        let rows: Vec<(String, String, MonthlyRow)> =
            self.rows.iter().map(|r| (r.unit.clone(), r.name.clone(), r.counts.clone())).collect();
        report::monthly_csv(&rows)
    }
}

/// A unit as a report row or trend names it. Ordered by id first, so rows sort by unit id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RowUnit {
    id: String,
    name: String,
    kind: UnitKind,
    parent: Option<String>,
}

fn is_report_level(kind: UnitKind) -> bool {
    matches!(kind, UnitKind::Posyandu | UnitKind::Village | UnitKind::Puskesmas | UnitKind::District)
}

/// `chain[at]` as a row unit, its parent the nearest report level above it in `chain` (a
/// unit and its ancestors, nearest first).
fn row_unit(chain: &[&Unit], at: usize) -> Option<RowUnit> {
    let unit = chain.get(at)?;
    let parent = chain.iter().skip(at + 1).find(|u| is_report_level(u.kind)).map(|u| u.id.to_string());
    Some(RowUnit { id: unit.id.to_string(), name: unit.name.clone(), kind: unit.kind, parent })
}

/// The unit of `level` a posyandu rolls up to.
fn roll_up_unit(tree: &UnitTree, posyandu: &PosyanduId, level: Level) -> RowUnit {
    let chain = tree.ancestors(&UnitId::from(posyandu.clone()));
    chain.iter().position(|u| u.kind == level.kind()).and_then(|at| row_unit(&chain, at)).unwrap_or_else(|| RowUnit {
        id: format!("(no {})", level.kind()),
        name: String::new(),
        kind: level.kind(),
        parent: None,
    })
}

/// What a report covers: the caller's scope, or the part of it under one unit.
pub struct Coverage {
    pub tree: UnitTree,
    pub scope: Scope,
    unit: Option<RowUnit>,
}

/// The posyandu of `scope` under `unit` (given), with the hierarchy. A unit with none of the
/// caller's posyandu under it (outside the scope, or unknown) is `404 not_found`, the same
/// answer either way, so a caller learns nothing about units outside its scope.
pub async fn coverage(store: &dyn Store, scope: &Scope, unit: Option<&UnitId>) -> Result<Coverage, ApiError> {
    let tree = store.unit_tree().await?;
    let Some(unit) = unit else {
        return Ok(Coverage { tree, scope: scope.clone(), unit: None });
    };
    let under = |p: &&PosyanduId| tree.ancestors(&UnitId::from((*p).clone())).iter().any(|u| &u.id == unit);
    let narrowed = Scope::new(scope.posyandu().filter(under).cloned());
    let row = row_unit(&tree.ancestors(unit), 0);
    match row {
        Some(row) if !narrowed.is_empty() => Ok(Coverage { scope: narrowed, unit: Some(row), tree }),
        _ => Err(unit_not_found()),
    }
}

pub fn unit_not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such unit in your scope")
}

/// The monthly report of every posyandu in `scope` (zeros where nothing was recorded).
pub async fn monthly(store: &dyn Store, scope: &Scope, month: Month, level: Level) -> Result<MonthlyReport, ApiError> {
    monthly_in(store, &coverage(store, scope, None).await?, month, level).await
}

/// The monthly report over what `coverage` covers, rolled up to `level`.
pub async fn monthly_in(
    store: &dyn Store,
    coverage: &Coverage,
    month: Month,
    level: Level,
) -> Result<MonthlyReport, ApiError> {
    let scope = &coverage.scope;
    let from = month.first_day() - time::Duration::days(400);
    let facts = store.report_facts(scope.clone(), from, month.last_day()).await?;
    let registered = Registered { people: store.registered_people(scope.clone()).await? };
    let per_posyandu = report::monthly(month, &facts, &registered);
    let mut rolled: BTreeMap<RowUnit, MonthlyRow> = BTreeMap::new();
    for p in scope.posyandu() {
        let row = per_posyandu.get(p).cloned().unwrap_or_default();
        rolled.entry(roll_up_unit(&coverage.tree, p, level)).or_default().add(&row);
    }
    let rows = rolled
        .into_iter()
        .map(|(u, counts)| ReportRow {
            d_over_s_percent: counts.d_over_s().percent(),
            n_over_d_percent: counts.n_over_d().percent(),
            unit: u.id,
            name: u.name,
            kind: u.kind,
            parent: u.parent,
            counts,
        })
        .collect();
    Ok(MonthlyReport { month: month.to_string(), level, rows })
}

/// Longest trend a request may ask for, in months.
pub const TREND_MONTHS_MAX: u32 = 24;

/// One month of a trend: the figures of a monthly row.
#[derive(Clone, Debug, Serialize)]
pub struct TrendPoint {
    pub month: String,
    #[serde(flatten)]
    pub counts: MonthlyRow,
    pub d_over_s_percent: Option<f64>,
    pub n_over_d_percent: Option<f64>,
}

/// The figures of one unit (or the caller's whole scope) month by month, oldest first.
#[derive(Clone, Debug, Serialize)]
pub struct Trend {
    /// The last month of the series.
    pub month: String,
    pub months: u32,
    /// The unit, as in a report row; all `None` for the caller's whole scope.
    pub unit: Option<String>,
    pub name: Option<String>,
    pub kind: Option<UnitKind>,
    pub parent: Option<String>,
    pub series: Vec<TrendPoint>,
    /// Line charts (SVG) of the series, when asked for: `skdn`, `nutrition`, `care`.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub charts: BTreeMap<&'static str, String>,
}

/// The trend's three charts: SKDN ratios, nutrition prevalence, and care (immunisation
/// coverage, KEK, high blood pressure), in percent by month.
pub fn trend_charts(trend: &Trend, lang: crate::charts::Lang) -> BTreeMap<&'static str, String> {
    use crate::charts::trend::{Line, trend_svg};
    let months: Vec<String> = trend.series.iter().map(|p| p.month.clone()).collect();
    let id = lang == crate::charts::Lang::Id;
    let pick = |label_id: &str, label_en: &str, f: &dyn Fn(&TrendPoint) -> Option<f64>| Line {
        label: if id { label_id } else { label_en }.to_owned(),
        values: trend.series.iter().map(f).collect(),
    };
    let skdn = [pick("D/S", "D/S", &|p| p.d_over_s_percent), pick("N/D", "N/D", &|p| p.n_over_d_percent)];
    let nutrition = [
        pick("Stunting", "Stunting", &|p| p.counts.stunting.percent()),
        pick("Wasting", "Wasting", &|p| p.counts.wasting.percent()),
        pick("Underweight", "Underweight", &|p| p.counts.underweight.percent()),
        pick("Overweight", "Overweight", &|p| p.counts.overweight.percent()),
    ];
    let care = [
        pick("IDL 12–23 bln", "Basic immunisation 12–23 m", &|p| p.counts.basic_immunisation_12_23m.percent()),
        pick("Bumil KEK", "Pregnant KEK", &|p| p.counts.pregnant_kek.percent()),
        pick("Hipertensi", "High blood pressure", &|p| p.counts.adults_high_bp.percent()),
    ];
    let (t_skdn, t_nut, t_care) = if id {
        ("SKDN: partisipasi (D/S) dan naik berat badan (N/D)", "Status gizi balita", "Imunisasi, KEK dan hipertensi")
    } else {
        (
            "SKDN: participation (D/S) and weight gain (N/D)",
            "Nutrition of children under five",
            "Immunisation, KEK and hypertension",
        )
    };
    BTreeMap::from([
        ("skdn", trend_svg("trend-skdn", t_skdn, &months, &skdn, lang)),
        ("nutrition", trend_svg("trend-nutrition", t_nut, &months, &nutrition, lang)),
        ("care", trend_svg("trend-care", t_care, &months, &care, lang)),
    ])
}

/// The `months` months ending at `last`, oldest first.
pub fn months_ending(last: Month, months: u32) -> Vec<Month> {
    let mut out = vec![last];
    for _ in 1..months {
        let Some(earliest) = out.last() else { break };
        out.push(earliest.previous());
    }
    out.reverse();
    out
}

/// The trend over what `coverage` covers: the facts of the whole window are loaded once,
/// and each month is computed from them exactly as [`monthly_in`] computes it alone.
pub async fn trend(store: &dyn Store, coverage: &Coverage, last: Month, months: u32) -> Result<Trend, ApiError> {
    let window = months_ending(last, months);
    let first = window.first().copied().unwrap_or(last);
    let scope = &coverage.scope;
    let from = first.first_day() - time::Duration::days(400);
    let facts = store.report_facts(scope.clone(), from, last.last_day()).await?;
    let registered = Registered { people: store.registered_people(scope.clone()).await? };
    let series = report::MonthlySeries::new(&facts, &registered);
    let points = window
        .into_iter()
        .map(|m| {
            let per_posyandu = series.month(m);
            let mut counts = MonthlyRow::default();
            for row in scope.posyandu().filter_map(|p| per_posyandu.get(p)) {
                counts.add(row);
            }
            TrendPoint {
                month: m.to_string(),
                d_over_s_percent: counts.d_over_s().percent(),
                n_over_d_percent: counts.n_over_d().percent(),
                counts,
            }
        })
        .collect();
    let unit = coverage.unit.clone();
    Ok(Trend {
        month: last.to_string(),
        months,
        kind: unit.as_ref().map(|u| u.kind),
        name: unit.as_ref().map(|u| u.name.clone()),
        parent: unit.as_ref().and_then(|u| u.parent.clone()),
        unit: unit.map(|u| u.id),
        series: points,
        charts: BTreeMap::new(),
    })
}

/// Children with overdue doses in `scope`, for home follow-up.
/// A child to visit at home: the overdue doses, and where the family lives when the child
/// is registered.
#[derive(Clone, Debug, serde::Serialize)]
pub struct HomeVisit {
    #[serde(flatten)]
    pub overdue: Overdue,
    pub mother_name: Option<String>,
    pub address: Option<String>,
    pub rt: Option<i64>,
    pub rw: Option<i64>,
}

pub async fn overdue(store: &dyn Store, scope: &Scope, month: Month) -> Result<Vec<HomeVisit>, ApiError> {
    let from = month.last_day() - time::Duration::days(5 * 366);
    let facts = store.report_facts(scope.clone(), from, month.last_day()).await?;
    let list = report::overdue(month, &facts);
    let contacts: std::collections::BTreeMap<_, _> =
        store.people_contacts(scope.clone()).await?.into_iter().map(|c| (c.person_id, c)).collect();
    Ok(list
        .into_iter()
        .map(|o| {
            let c = contacts.get(&o.person_id);
            HomeVisit {
                mother_name: c.map(|c| c.mother_name.clone()).filter(|m| !m.is_empty()),
                address: c.map(|c| c.address.clone()).filter(|a| !a.is_empty()),
                rt: c.and_then(|c| c.rt),
                rw: c.and_then(|c| c.rw),
                overdue: o,
            }
        })
        .collect())
}

pub fn overdue_csv(list: &[HomeVisit]) -> String {
    let mut out =
        String::from("posyandu,person_id,name,birth_date,age_months,overdue_doses,mother_name,address,rt,rw\n");
    let opt = |v: Option<i64>| v.map(|v| v.to_string()).unwrap_or_default();
    for h in list {
        let o = &h.overdue;
        out.push_str(&format!(
            "{},{},{},{},{},{},{},{},{},{}\n",
            o.posyandu,
            o.person_id,
            report::csv_text(&o.name),
            o.birth_date,
            o.age_months,
            report::csv_text(&o.doses.join(" ")),
            report::csv_text(h.mother_name.as_deref().unwrap_or_default()),
            report::csv_text(h.address.as_deref().unwrap_or_default()),
            opt(h.rt),
            opt(h.rw)
        ));
    }
    out
}

pub fn parse_month(s: Option<&str>, today: time::Date) -> Result<Month, ApiError> {
    match s {
        None => Ok(Month::of(today)),
        Some(s) => Month::parse(s).ok_or_else(|| ApiError::new(ErrorCode::InvalidRequest, "month must be YYYY-MM")),
    }
}

//! Monthly reports over the central store, scoped to the caller: rows per posyandu rolled up
//! to village, puskesmas or district through the hierarchy. Shared by the HTTP routes and the
//! `posync report` console command.

use crate::error::ApiError;
use posync_model::report::{self, Month, MonthlyRow, Overdue, Registered};
use posync_model::{PosyanduId, Scope, UnitId, UnitKind};
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

#[derive(Clone, Debug, Serialize)]
pub struct ReportRow {
    pub unit: String,
    pub name: String,
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

/// The unit of `level` a posyandu rolls up to, with its name.
fn roll_up_unit(tree: &UnitTree, posyandu: &PosyanduId, level: Level) -> (String, String) {
    let id = UnitId::from(posyandu.clone());
    tree.ancestors(&id)
        .into_iter()
        .find(|u| u.kind == level.kind())
        .map(|u| (u.id.to_string(), u.name.clone()))
        .unwrap_or_else(|| (format!("(no {})", level.kind()), String::new()))
}

/// The monthly report of every posyandu in `scope` (zeros where nothing was recorded).
pub async fn monthly(store: &dyn Store, scope: &Scope, month: Month, level: Level) -> Result<MonthlyReport, ApiError> {
    let from = month.first_day() - time::Duration::days(400);
    let facts = store.report_facts(scope.clone(), from, month.last_day()).await?;
    let registered = Registered { people: store.registered_people(scope.clone()).await? };
    let per_posyandu = report::monthly(month, &facts, &registered);
    let tree = store.unit_tree().await?;
    let mut rolled: BTreeMap<(String, String), MonthlyRow> = BTreeMap::new();
    for p in scope.posyandu() {
        let row = per_posyandu.get(p).cloned().unwrap_or_default();
        rolled.entry(roll_up_unit(&tree, p, level)).or_default().add(&row);
    }
    let rows = rolled
        .into_iter()
        .map(|((unit, name), counts)| ReportRow {
            d_over_s_percent: counts.d_over_s().percent(),
            n_over_d_percent: counts.n_over_d().percent(),
            unit,
            name,
            counts,
        })
        .collect();
    Ok(MonthlyReport { month: month.to_string(), level, rows })
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

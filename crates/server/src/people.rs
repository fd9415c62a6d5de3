//! A child's page for the puskesmas: who they are, every visit with its z-scores and
//! Permenkes 2/2020 status, the WHO growth charts with their points, and immunisation
//! status (doses given, doses overdue). Read from the projection, in the caller's scope.

use crate::auth::Principal;
use crate::charts::{ChartPoint, Lang, growth_chart_svg};
use crate::error::ApiError;
use posync_model::growth::{self, Indicator};
use posync_model::record::{age_days, age_months, format_date};
use posync_model::report::{VisitFact, due_doses, overdue_doses};
use posync_model::{PersonId, Sex};
use posync_proto::ErrorCode;
use posync_store::{PersonSeen, Store};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The most people one search answers.
pub const SEARCH_RESULTS_MAX: u32 = 50;

/// One visit as the child's page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct VisitLine {
    pub session_date: String,
    pub posyandu: String,
    pub age_months: i64,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    /// z-scores rounded as WHO rounds them, by indicator (`wfa`, `lhfa`, `wflh`).
    pub z: BTreeMap<&'static str, f64>,
    /// Permenkes 2/2020 status by indicator, in words.
    pub status: BTreeMap<&'static str, growth::StatusLabel>,
    pub immunisations: Vec<String>,
    /// The server found an impossible value in it: listed, but left out of the charts, the
    /// status and the reports until someone corrects it.
    pub invalid: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ChildView {
    pub person_id: String,
    pub name: String,
    pub sex: &'static str,
    pub birth_date: String,
    pub age_months: i64,
    pub posyandu: String,
    pub posyandu_name: Option<String>,
    /// Oldest first.
    pub visits: Vec<VisitLine>,
    /// Antigen → the day it was given.
    pub immunisations_given: BTreeMap<String, String>,
    /// Doses past their age in the national schedule (with a month's grace), not given.
    pub immunisations_overdue: Vec<&'static str>,
    /// Doses due now (their month has come, not yet overdue).
    pub immunisations_due: Vec<&'static str>,
    /// The mother's name, when the child is registered.
    pub mother_name: Option<String>,
    /// WHO growth charts (SVG) by indicator: `wfa`, `lhfa`, `wflh`.
    pub charts: BTreeMap<&'static str, String>,
}

/// People seen in the caller's scope whose name contains `name`.
pub async fn search(store: &dyn Store, who: &Principal, name: Option<String>) -> Result<Vec<PersonSeen>, ApiError> {
    let name = name.map(|n| n.trim().chars().take(64).collect::<String>()).filter(|n| !n.is_empty());
    Ok(store.people_seen(who.scope.clone(), name, SEARCH_RESULTS_MAX).await?)
}

/// The child's page. A person outside the caller's scope answers like one that does not exist.
pub async fn child(
    store: &dyn Store,
    who: &Principal,
    person: PersonId,
    today: time::Date,
    lang: Lang,
) -> Result<ChildView, ApiError> {
    let visits = store.person_facts(who.scope.clone(), person).await?;
    let Some(latest) = visits.last().map(|v| &v.fact) else {
        return Err(ApiError::new(ErrorCode::NotFound, "no such person in your scope"));
    };
    let posyandu_name =
        store.unit_tree().await?.get(&posync_model::UnitId::from(latest.posyandu.clone())).map(|u| u.name.clone());
    let valid: Vec<VisitFact> = visits.iter().filter(|v| !v.invalid).map(|v| v.fact.clone()).collect();
    let mut given = BTreeMap::new();
    for f in &valid {
        for antigen in &f.immunisations {
            given.entry(antigen.clone()).or_insert_with(|| format_date(f.session_date));
        }
    }
    let given_codes: BTreeSet<&str> = given.keys().map(String::as_str).collect();
    let months_now = age_months(latest.birth_date, today);
    let under_five = months_now < 60;
    let home = posync_model::Scope::new([latest.posyandu.clone()]);
    let mother_name = store
        .people_contacts(home)
        .await?
        .into_iter()
        .find(|c| c.person_id == person)
        .map(|c| c.mother_name)
        .filter(|m| !m.is_empty());
    Ok(ChildView {
        person_id: person.to_string(),
        name: latest.name.clone(),
        sex: latest.sex.code(),
        birth_date: format_date(latest.birth_date),
        age_months: months_now,
        posyandu: latest.posyandu.to_string(),
        posyandu_name,
        visits: visits.iter().map(|v| visit_line(&v.fact, v.invalid)).collect(),
        immunisations_overdue: if under_five { overdue_doses(months_now, &given_codes).collect() } else { Vec::new() },
        immunisations_due: if under_five { due_doses(months_now, &given_codes).collect() } else { Vec::new() },
        mother_name,
        immunisations_given: given,
        charts: charts(&valid, latest.sex, lang),
    })
}

fn visit_line(f: &VisitFact, invalid: bool) -> VisitLine {
    let z = if invalid { growth::ZScores::default() } else { growth::zscores(&f.measurement()) };
    let class = growth::classify(&z);
    let mut zs = BTreeMap::new();
    for (key, v) in [("wfa", z.wfa), ("lhfa", z.lhfa), ("wflh", z.wflh)] {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            zs.insert(key, growth::who_rounded(v));
        }
    }
    let status: BTreeMap<&'static str, growth::StatusLabel> = [
        ("wfa", class.wfa.map(|s| s.label())),
        ("lhfa", class.lhfa.map(|s| s.label())),
        ("wflh", class.wflh.map(|s| s.label())),
    ]
    .into_iter()
    .filter_map(|(key, label)| Some((key, label?)))
    .collect();
    VisitLine {
        session_date: format_date(f.session_date),
        posyandu: f.posyandu.to_string(),
        age_months: age_months(f.birth_date, f.session_date),
        weight_g: f.weight_g,
        length_mm: f.length_mm,
        muac_mm: f.muac_mm,
        z: zs,
        status,
        immunisations: f.immunisations.clone(),
        invalid,
    }
}

/// The three charts a KMS shows, with the child's measurements as points. Weight-for-length
/// under two years (lying), weight-for-height after, by the latest visit's age.
fn charts(facts: &[VisitFact], sex: Sex, lang: Lang) -> BTreeMap<&'static str, String> {
    let mut wfa = Vec::new();
    let mut lhfa = Vec::new();
    let mut wflh = Vec::new();
    for f in facts {
        let days = age_days(f.birth_date, f.session_date) as f64;
        let kg = f.weight_g.map(|g| g as f64 / 1000.0);
        let cm = f.length_mm.map(|mm| mm as f64 / 10.0);
        if let Some(kg) = kg {
            wfa.push(ChartPoint { x: days, y: kg, date: f.session_date });
        }
        if let Some(cm) = cm {
            lhfa.push(ChartPoint { x: days, y: cm, date: f.session_date });
        }
        if let (Some(kg), Some(cm)) = (kg, cm) {
            let corrected = growth::corrected_length_cm(Some(days as i64), cm, f.lying);
            wflh.push(ChartPoint { x: corrected, y: kg, date: f.session_date });
        }
    }
    let last_days = facts.last().map_or(0, |f| age_days(f.birth_date, f.session_date));
    let wflh_indicator =
        if last_days < growth::STANDING_FROM_DAYS { Indicator::WeightForLength } else { Indicator::WeightForHeight };
    BTreeMap::from([
        ("wfa", growth_chart_svg(Indicator::WeightForAge, sex, &wfa, lang)),
        ("lhfa", growth_chart_svg(Indicator::LengthHeightForAge, sex, &lhfa, lang)),
        ("wflh", growth_chart_svg(wflh_indicator, sex, &wflh, lang)),
    ])
}

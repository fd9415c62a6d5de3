//! Analysts' CSV exports, as plain functions: one row per visit (`visits.csv`) or per
//! registered person (`people.csv`) of a period. Every column is documented, with its unit
//! and codes, in `proto/export/DATA-DICTIONARY.md` (a test keeps the two in step).
//!
//! Merged duplicates are resolved: a person merged into another is not listed, and their
//! visits carry the survivor's id (the store's facts already follow the survivor). Every
//! text cell goes through [`csv_text`], so a name like `=HYPERLINK(…)` stays text.

use crate::error::ApiError;
use posync_model::growth::{classify, who_rounded, zscores};
use posync_model::record::age_months;
use posync_model::report::{Month, VisitFact, csv_text};
use posync_proto::ErrorCode;
use posync_store::PersonExport;
use std::collections::BTreeMap;

/// The columns of `visits.csv`, in order.
pub const VISIT_COLUMNS: [&str; 26] = [
    "posyandu",
    "session_date",
    "person_id",
    "name",
    "sex",
    "birth_date",
    "age_months",
    "life_group",
    "weight_kg",
    "length_cm",
    "measured",
    "muac_cm",
    "oedema",
    "growth_card",
    "bp_systolic_mmhg",
    "bp_diastolic_mmhg",
    "immunisations",
    "wfa_z",
    "lhfa_z",
    "wflh_z",
    "bmifa_z",
    "muacfa_z",
    "wfa_status",
    "lhfa_status",
    "wflh_status",
    "z_flags",
];

/// The columns of `people.csv`, in order.
pub const PEOPLE_COLUMNS: [&str; 11] = [
    "posyandu",
    "person_id",
    "name",
    "sex",
    "birth_date",
    "age_months",
    "kia_book",
    "pregnant",
    "registered_on",
    "merged_registrations",
    "visits",
];

/// The longest period one export covers (days): five years.
pub const PERIOD_DAYS_MAX: i64 = 5 * 366;

/// The days an export covers, both included.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Period {
    pub from: time::Date,
    pub to: time::Date,
}

fn bad_period() -> ApiError {
    ApiError::new(
        ErrorCode::InvalidRequest,
        "periode: month=YYYY-MM, atau from=YYYY-MM-DD dan to=YYYY-MM-DD (paling lama lima tahun) / period: \
         month=YYYY-MM, or from=YYYY-MM-DD and to=YYYY-MM-DD (at most five years), or neither (this month)",
    )
}

fn parse_day(s: &str) -> Option<time::Date> {
    time::Date::parse(s, &time::format_description::well_known::Iso8601::DATE).ok()
}

impl Period {
    /// `month`, or `from` and `to` (both), or this month when none is given.
    pub fn parse(
        month: Option<&str>,
        from: Option<&str>,
        to: Option<&str>,
        today: time::Date,
    ) -> Result<Self, ApiError> {
        match (month, from, to) {
            (None, None, None) => Ok(Self::of_month(Month::of(today))),
            (Some(m), None, None) => Month::parse(m).map(Self::of_month).ok_or_else(bad_period),
            (None, Some(f), Some(t)) => {
                let (from, to) = (parse_day(f).ok_or_else(bad_period)?, parse_day(t).ok_or_else(bad_period)?);
                if to < from || (to - from).whole_days() > PERIOD_DAYS_MAX {
                    return Err(bad_period());
                }
                Ok(Self { from, to })
            }
            _ => Err(bad_period()),
        }
    }

    pub fn of_month(m: Month) -> Self {
        Self { from: m.first_day(), to: m.last_day() }
    }
}

fn header(columns: &[&str]) -> String {
    let mut out = columns.join(",");
    out.push('\n');
    out
}

fn flag(b: bool) -> &'static str {
    if b { "1" } else { "0" }
}

fn opt<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(String::new, |v| v.to_string())
}

/// A z-score as WHO Anthro shows it: rounded to two decimals.
fn z(v: Option<f64>) -> String {
    v.filter(|v| v.is_finite()).map_or_else(String::new, |v| format!("{:.2}", who_rounded(v)))
}

fn tenths(mm: Option<i64>) -> String {
    mm.map_or_else(String::new, |mm| format!("{:.1}", mm as f64 / 10.0))
}

/// `visits.csv`: one row per valid visit, by posyandu, session date and person.
pub fn visits_csv(facts: &[VisitFact]) -> String {
    let mut sorted: Vec<&VisitFact> = facts.iter().collect();
    sorted.sort_by(|a, b| {
        (a.posyandu.as_str(), a.session_date, a.person_id.to_string()).cmp(&(
            b.posyandu.as_str(),
            b.session_date,
            b.person_id.to_string(),
        ))
    });
    let mut out = header(&VISIT_COLUMNS);
    for f in sorted {
        let scores = zscores(&f.measurement());
        let class = classify(&scores);
        let cells: [String; VISIT_COLUMNS.len()] = [
            csv_text(f.posyandu.as_str()),
            f.session_date.to_string(),
            csv_text(&f.person_id.to_string()),
            csv_text(&f.name),
            f.sex.code().to_owned(),
            f.birth_date.to_string(),
            age_months(f.birth_date, f.session_date).to_string(),
            f.group.code().to_owned(),
            f.weight_g.map_or_else(String::new, |g| format!("{:.3}", g as f64 / 1000.0)),
            tenths(f.length_mm),
            match f.lying {
                Some(true) => "lying",
                Some(false) => "standing",
                None => "",
            }
            .to_owned(),
            tenths(f.muac_mm),
            flag(f.oedema).to_owned(),
            flag(f.growth_card).to_owned(),
            opt(f.bp_systolic),
            opt(f.bp_diastolic),
            csv_text(&f.immunisations.join(" ")),
            z(scores.wfa),
            z(scores.lhfa),
            z(scores.wflh),
            z(scores.bmifa),
            z(scores.muacfa),
            opt(class.wfa.map(|s| s.code())),
            opt(class.lhfa.map(|s| s.code())),
            opt(class.wflh.map(|s| s.code())),
            csv_text(&scores.flags.join(" ")),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

/// `people.csv`: one row per registered person (merged duplicates resolved), with their
/// age at the period's end and their visits in it (`facts`: the period's visits).
pub fn people_csv(people: &[PersonExport], facts: &[VisitFact], period: Period) -> String {
    let mut visits: BTreeMap<String, u64> = BTreeMap::new();
    for f in facts {
        *visits.entry(f.person_id.to_string()).or_default() += 1;
    }
    let mut out = header(&PEOPLE_COLUMNS);
    for p in people {
        let id = p.person_id.to_string();
        let born = parse_day(&p.birth_date);
        let registered = time::OffsetDateTime::from_unix_timestamp(p.registered_at).ok().map(|t| t.date());
        let cells: [String; PEOPLE_COLUMNS.len()] = [
            csv_text(p.posyandu.as_str()),
            csv_text(&id),
            csv_text(&p.name),
            csv_text(&p.sex),
            csv_text(&p.birth_date),
            opt(born.map(|b| age_months(b, period.to))),
            flag(p.kia_book).to_owned(),
            flag(p.pregnant).to_owned(),
            opt(registered),
            p.merged_from.to_string(),
            visits.get(&id).copied().unwrap_or(0).to_string(),
        ];
        out.push_str(&cells.join(","));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_period_is_a_month_a_range_or_this_month() {
        let today = time::macros::date!(2026 - 03 - 15);
        let march = Period { from: time::macros::date!(2026 - 03 - 01), to: time::macros::date!(2026 - 03 - 31) };
        assert_eq!(Period::parse(None, None, None, today).expect("default"), march);
        assert_eq!(Period::parse(Some("2026-03"), None, None, today).expect("month"), march);
        assert_eq!(Period::parse(None, Some("2026-03-01"), Some("2026-03-31"), today).expect("range"), march);
        for (m, f, t) in [
            (Some("2026-13"), None, None),
            (Some("2026-03"), Some("2026-03-01"), None),
            (None, Some("2026-03-01"), None),
            (None, Some("2026-03-31"), Some("2026-03-01")),
            (None, Some("2016-03-01"), Some("2026-03-01")),
            (None, Some("=1+1"), Some("2026-03-01")),
        ] {
            assert!(Period::parse(m, f, t, today).is_err(), "{m:?} {f:?} {t:?}");
        }
    }
}

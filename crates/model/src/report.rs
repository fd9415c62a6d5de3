//! The monthly reports a puskesmas and the district office ask for, as plain functions over
//! visit facts (the store fetches them; the server serves JSON and CSV; the CLI prints):
//!
//! - **SKDN** per posyandu: S balita known to the posyandu, K with a growth card, D weighed
//!   this month, N weighed last month too and gained at least the minimum (KBM); with T (did
//!   not), O (not weighed last month), and the ratios D/S and N/D.
//! - **Nutrition** among the children measured this month (WHO z-scores, Permenkes 2/2020):
//!   stunting, severe stunting, wasting, underweight, overweight.
//! - **Immunisation**: children 12-23 months with complete basic immunisation, and every child
//!   under five with a dose overdue (for home follow-up).
//! - **Mothers and adults**: pregnant women with chronic energy deficiency (MUAC < 23.5 cm),
//!   adults and elderly with high blood pressure (>= 140/90).
//!
//! Counts roll up posyandu > village > puskesmas > district by summing numerators and
//! denominators (never by averaging ratios).

use crate::growth::{self, Measurement};
use crate::ids::{PersonId, PosyanduId};
use crate::record::{LifeGroup, Sex, age_days, age_months, format_date};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// One visit as the reports need it: identity, age, group and the measurements used.
#[derive(Clone, Debug, PartialEq)]
pub struct VisitFact {
    pub posyandu: PosyanduId,
    pub session_date: time::Date,
    pub person_id: PersonId,
    pub name: String,
    pub sex: Sex,
    pub birth_date: time::Date,
    pub group: LifeGroup,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub lying: Option<bool>,
    pub muac_mm: Option<i64>,
    pub oedema: bool,
    pub growth_card: bool,
    pub bp_systolic: Option<i64>,
    pub bp_diastolic: Option<i64>,
    /// Antigen codes given at this visit.
    pub immunisations: Vec<String>,
}

impl VisitFact {
    /// What the visit measured, at the child's age on the session date (the facts hold no
    /// head circumference: no report counts it).
    pub fn measurement(&self) -> Measurement {
        Measurement {
            sex: self.sex,
            age_days: Some(age_days(self.birth_date, self.session_date)),
            weight_g: self.weight_g,
            length_mm: self.length_mm,
            lying: self.lying,
            head_circ_mm: None,
            muac_mm: self.muac_mm,
            oedema: self.oedema,
        }
    }
}

/// A calendar month.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    pub month: time::Month,
}

impl Month {
    pub fn of(d: time::Date) -> Self {
        Self { year: d.year(), month: d.month() }
    }

    /// `YYYY-MM`.
    pub fn parse(s: &str) -> Option<Self> {
        let (y, m) = s.split_once('-')?;
        let month = time::Month::try_from(m.parse::<u8>().ok()?).ok()?;
        Some(Self { year: y.parse().ok()?, month })
    }

    pub fn first_day(self) -> time::Date {
        time::Date::from_calendar_date(self.year, self.month, 1).unwrap_or(time::Date::MIN)
    }

    pub fn last_day(self) -> time::Date {
        self.next().first_day().previous_day().unwrap_or(time::Date::MIN)
    }

    pub fn previous(self) -> Self {
        Self::of(self.first_day().previous_day().unwrap_or(time::Date::MIN))
    }

    pub fn next(self) -> Self {
        let day = time::Date::from_calendar_date(self.year, self.month, 28).unwrap_or(time::Date::MIN);
        Self::of(day + time::Duration::days(7))
    }

    pub fn contains(self, d: time::Date) -> bool {
        Month::of(d) == self
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, u8::from(self.month))
    }
}

/// A weighing against the child's weighing of the previous calendar month (SKDN's N and T).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum WeightGain {
    /// Naik: gained at least the minimum for the child's age.
    N,
    /// Tidak naik: gained less, or lost weight.
    T,
}

/// N or T for a child born on `birth` weighing `weight_g` on `on`, given its weighing
/// `previous` (date, grams); `None` when that weighing is not from the previous calendar
/// month (the monthly report then counts neither).
pub fn weight_gain(
    birth: time::Date,
    on: time::Date,
    weight_g: i64,
    previous: (time::Date, i64),
) -> Option<WeightGain> {
    let (before, before_g) = previous;
    if !Month::of(on).previous().contains(before) {
        return None;
    }
    Some(if gained_enough(birth, on, weight_g - before_g) { WeightGain::N } else { WeightGain::T })
}

fn gained_enough(birth: time::Date, on: time::Date, gain_g: i64) -> bool {
    gain_g >= kbm_g(age_months(birth, on))
}

/// Minimum weight gain (Kenaikan Berat badan Minimal) in grams for a child of this many
/// completed months, from the KMS (Permenkes 155/2010): below it a child is "T".
pub fn kbm_g(age_months: i64) -> i64 {
    match age_months {
        ..=1 => 800,
        2 => 900,
        3 => 800,
        4 => 600,
        5 => 500,
        6 | 7 => 400,
        8..=10 => 300,
        _ => 200,
    }
}

/// The national immunisation schedule for children (Permenkes 12/2017 and its updates):
/// antigen code and the age in months from which it is due.
pub const SCHEDULE: [(&str, i64); 20] = [
    ("HB0", 0),
    ("BCG", 1),
    ("OPV-1", 1),
    ("DPT-HB-Hib-1", 2),
    ("OPV-2", 2),
    ("PCV-1", 2),
    ("RV-1", 2),
    ("DPT-HB-Hib-2", 3),
    ("OPV-3", 3),
    ("PCV-2", 3),
    ("RV-2", 3),
    ("DPT-HB-Hib-3", 4),
    ("OPV-4", 4),
    ("IPV-1", 4),
    ("RV-3", 4),
    ("MR-1", 9),
    ("IPV-2", 9),
    ("PCV-3", 12),
    ("DPT-HB-Hib-4", 18),
    ("MR-2", 18),
];

/// Complete basic immunisation (Imunisasi Dasar Lengkap) by the first birthday.
pub const BASIC: [&str; 11] =
    ["HB0", "BCG", "OPV-1", "OPV-2", "OPV-3", "OPV-4", "DPT-HB-Hib-1", "DPT-HB-Hib-2", "DPT-HB-Hib-3", "IPV-1", "MR-1"];

/// A dose counts as overdue one month after it fell due.
pub const OVERDUE_GRACE_MONTHS: i64 = 1;

/// A count with its denominator: rolls up by summing both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Ratio {
    pub n: u64,
    pub of: u64,
}

impl Ratio {
    pub fn add(&mut self, other: Ratio) {
        self.n += other.n;
        self.of += other.of;
    }

    /// Percent with one decimal; `None` when the denominator is 0.
    pub fn percent(self) -> Option<f64> {
        (self.of > 0).then(|| (self.n as f64 * 1000.0 / self.of as f64).round() / 10.0)
    }
}

/// One row of the monthly report: a posyandu or a roll-up.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MonthlyRow {
    pub s: u64,
    pub k: u64,
    pub d: u64,
    pub n: u64,
    pub t: u64,
    pub o: u64,
    pub stunting: Ratio,
    pub severe_stunting: Ratio,
    pub wasting: Ratio,
    pub underweight: Ratio,
    pub overweight: Ratio,
    pub basic_immunisation_12_23m: Ratio,
    pub children_with_overdue_doses: u64,
    pub pregnant_kek: Ratio,
    pub adults_high_bp: Ratio,
}

impl MonthlyRow {
    pub fn add(&mut self, o: &MonthlyRow) {
        self.s += o.s;
        self.k += o.k;
        self.d += o.d;
        self.n += o.n;
        self.t += o.t;
        self.o += o.o;
        self.stunting.add(o.stunting);
        self.severe_stunting.add(o.severe_stunting);
        self.wasting.add(o.wasting);
        self.underweight.add(o.underweight);
        self.overweight.add(o.overweight);
        self.basic_immunisation_12_23m.add(o.basic_immunisation_12_23m);
        self.children_with_overdue_doses += o.children_with_overdue_doses;
        self.pregnant_kek.add(o.pregnant_kek);
        self.adults_high_bp.add(o.adults_high_bp);
    }

    pub fn d_over_s(&self) -> Ratio {
        Ratio { n: self.d, of: self.s }
    }

    pub fn n_over_d(&self) -> Ratio {
        Ratio { n: self.n, of: self.d }
    }
}

/// A child with doses overdue at the end of the month, for home follow-up.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Overdue {
    pub posyandu: PosyanduId,
    pub person_id: PersonId,
    pub name: String,
    pub birth_date: String,
    pub age_months: i64,
    pub doses: Vec<&'static str>,
}

/// A person in a posyandu's registry, as the reports need them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisteredPerson {
    pub posyandu: PosyanduId,
    pub person_id: PersonId,
    pub birth_date: time::Date,
    pub kia_book: bool,
}

/// What the report functions need beyond the facts: who is registered.
#[derive(Clone, Debug, Default)]
pub struct Registered {
    pub people: Vec<RegisteredPerson>,
}

/// The monthly row of every posyandu that has facts or registered people, for `month`.
/// `facts` must cover at least the 12 months up to `month` (earlier visits are ignored).
pub fn monthly(month: Month, facts: &[VisitFact], registered: &Registered) -> BTreeMap<PosyanduId, MonthlyRow> {
    MonthlySeries::new(facts, registered).month(month)
}

/// Facts and registry grouped by posyandu once, for the monthly rows of several months (a
/// trend) without loading or regrouping them for each month. Each month's rows are exactly
/// what [`monthly`] gives for it over the same facts.
pub struct MonthlySeries<'a> {
    by_posyandu: BTreeMap<&'a PosyanduId, (Vec<&'a VisitFact>, Vec<&'a RegisteredPerson>)>,
}

impl<'a> MonthlySeries<'a> {
    pub fn new(facts: &'a [VisitFact], registered: &'a Registered) -> Self {
        let mut by_posyandu: BTreeMap<&PosyanduId, (Vec<&VisitFact>, Vec<&RegisteredPerson>)> = BTreeMap::new();
        for f in facts {
            by_posyandu.entry(&f.posyandu).or_default().0.push(f);
        }
        for r in &registered.people {
            by_posyandu.entry(&r.posyandu).or_default().1.push(r);
        }
        Self { by_posyandu }
    }

    /// The rows of `month`: every posyandu with registered people or facts in the 12 months
    /// up to it. The facts must cover those 12 months.
    pub fn month(&self, month: Month) -> BTreeMap<PosyanduId, MonthlyRow> {
        let end = month.last_day();
        let window_start = Month::of(end - time::Duration::days(365)).next().first_day();
        let mut out = BTreeMap::new();
        for (p, (facts, reg)) in &self.by_posyandu {
            let facts: Vec<&VisitFact> =
                facts.iter().copied().filter(|f| f.session_date <= end && f.session_date >= window_start).collect();
            if facts.is_empty() && reg.is_empty() {
                continue;
            }
            out.insert((*p).clone(), posyandu_row(month, &facts, reg));
        }
        out
    }
}

fn is_balita(birth: time::Date, on: time::Date) -> bool {
    birth <= on && age_months(birth, on) < 60
}

fn posyandu_row(month: Month, facts: &[&VisitFact], registered: &[&RegisteredPerson]) -> MonthlyRow {
    let end = month.last_day();
    let prev = month.previous();
    let mut row = MonthlyRow::default();
    // S: balita registered here or seen here in the last 12 months, under five at month end.
    let mut s: BTreeMap<PersonId, time::Date> =
        registered.iter().filter(|r| is_balita(r.birth_date, end)).map(|r| (r.person_id, r.birth_date)).collect();
    for f in facts.iter().filter(|f| f.group == LifeGroup::Balita && is_balita(f.birth_date, end)) {
        s.entry(f.person_id).or_insert(f.birth_date);
    }
    row.s = s.len() as u64;
    // One pass over the facts: who holds a growth card, and every dose each child was given.
    let mut carded: BTreeSet<PersonId> = registered.iter().filter(|r| r.kia_book).map(|r| r.person_id).collect();
    let mut doses_of: BTreeMap<PersonId, BTreeSet<&str>> = BTreeMap::new();
    for f in facts {
        if f.growth_card {
            carded.insert(f.person_id);
        }
        doses_of.entry(f.person_id).or_default().extend(f.immunisations.iter().map(String::as_str));
    }
    row.k = s.keys().filter(|id| carded.contains(id)).count() as u64;

    // The latest weighing of each child this month and last month.
    let weighed = |m: Month| -> BTreeMap<PersonId, &VisitFact> {
        let mut w: BTreeMap<PersonId, &VisitFact> = BTreeMap::new();
        for f in
            facts.iter().filter(|f| m.contains(f.session_date) && f.weight_g.is_some() && s.contains_key(&f.person_id))
        {
            let keep = w.get(&f.person_id).is_none_or(|g| g.session_date <= f.session_date);
            if keep {
                w.insert(f.person_id, f);
            }
        }
        w
    };
    let this = weighed(month);
    let last = weighed(prev);
    row.d = this.len() as u64;
    for (id, f) in &this {
        match last.get(id) {
            Some(before) => {
                let gain = f.weight_g.unwrap_or(0) - before.weight_g.unwrap_or(0);
                if gained_enough(f.birth_date, f.session_date, gain) {
                    row.n += 1;
                } else {
                    row.t += 1;
                }
            }
            None => row.o += 1,
        }
    }

    // Nutrition among the children measured this month (their latest measurement).
    for f in this.values() {
        let z = growth::zscores(&f.measurement());
        // The cut-offs apply to the z-score rounded as WHO rounds it, as in WHO Anthro's prevalences.
        let count = |r: &mut Ratio, code: &str, v: Option<f64>, hit: fn(f64) -> bool| {
            if let Some(v) = v
                && !z.is_flagged(code)
            {
                r.of += 1;
                r.n += u64::from(hit(growth::who_rounded(v)));
            }
        };
        count(&mut row.stunting, "lhfa", z.lhfa, |v| v < -2.0);
        count(&mut row.severe_stunting, "lhfa", z.lhfa, |v| v < -3.0);
        count(&mut row.wasting, "wflh", z.wflh, |v| v < -2.0);
        count(&mut row.underweight, "wfa", z.wfa, |v| v < -2.0);
        count(&mut row.overweight, "wflh", z.wflh, |v| v > 2.0);
    }

    // Immunisation, from every dose recorded in the window.
    let none = BTreeSet::new();
    for (id, birth) in &s {
        let months = age_months(*birth, end);
        let doses = doses_of.get(id).unwrap_or(&none);
        if (12..24).contains(&months) {
            row.basic_immunisation_12_23m.of += 1;
            row.basic_immunisation_12_23m.n += u64::from(BASIC.iter().all(|d| doses.contains(d)));
        }
        if overdue_doses(months, doses).next().is_some() {
            row.children_with_overdue_doses += 1;
        }
    }

    // Mothers and adults seen this month (each person once, latest visit).
    let mut latest: BTreeMap<PersonId, &VisitFact> = BTreeMap::new();
    for f in facts.iter().filter(|f| month.contains(f.session_date)) {
        let keep = latest.get(&f.person_id).is_none_or(|g| g.session_date <= f.session_date);
        if keep {
            latest.insert(f.person_id, f);
        }
    }
    for f in latest.values() {
        match f.group {
            LifeGroup::IbuHamil => {
                if let Some(muac) = f.muac_mm {
                    row.pregnant_kek.of += 1;
                    row.pregnant_kek.n += u64::from(muac < 235);
                }
            }
            LifeGroup::UsiaProduktif | LifeGroup::Lansia => {
                if let (Some(sys), Some(dia)) = (f.bp_systolic, f.bp_diastolic) {
                    row.adults_high_bp.of += 1;
                    row.adults_high_bp.n += u64::from(sys >= 140 || dia >= 90);
                }
            }
            _ => {}
        }
    }
    row
}

/// Doses past their month in the national schedule by more than the grace month, not given.
pub fn overdue_doses<'a>(age_months: i64, given: &'a BTreeSet<&str>) -> impl Iterator<Item = &'static str> + 'a {
    SCHEDULE
        .iter()
        .filter(move |(dose, due)| age_months >= due + OVERDUE_GRACE_MONTHS && !given.contains(dose))
        .map(|(dose, _)| *dose)
}

/// Doses due now: their month in the schedule has come, the grace month has not passed, and
/// they were not given (what to give at this posyandu day).
pub fn due_doses<'a>(age_months: i64, given: &'a BTreeSet<&str>) -> impl Iterator<Item = &'static str> + 'a {
    SCHEDULE
        .iter()
        .filter(move |(dose, due)| (*due..due + OVERDUE_GRACE_MONTHS).contains(&age_months) && !given.contains(dose))
        .map(|(dose, _)| *dose)
}

/// Children under five at month end with doses overdue, per posyandu, for home visits.
pub fn overdue(month: Month, facts: &[VisitFact]) -> Vec<Overdue> {
    let end = month.last_day();
    let mut children: BTreeMap<(PosyanduId, PersonId), (&VisitFact, BTreeSet<&str>)> = BTreeMap::new();
    for f in facts.iter().filter(|f| f.session_date <= end && is_balita(f.birth_date, end)) {
        let entry = children.entry((f.posyandu.clone(), f.person_id)).or_insert_with(|| (f, BTreeSet::new()));
        if entry.0.session_date < f.session_date {
            entry.0 = f;
        }
        entry.1.extend(f.immunisations.iter().map(String::as_str));
    }
    children
        .into_iter()
        .filter_map(|((posyandu, person_id), (f, given))| {
            let months = age_months(f.birth_date, end);
            let doses: Vec<&'static str> = overdue_doses(months, &given).collect();
            (!doses.is_empty()).then(|| Overdue {
                posyandu,
                person_id,
                name: f.name.clone(),
                birth_date: format_date(f.birth_date),
                age_months: months,
                doses,
            })
        })
        .collect()
}

/// A text cell of a CSV file: quoted, quotes doubled, and made inert for spreadsheets. A
/// cell starting with `=`, `+`, `-`, `@`, a tab or a carriage return is a formula to Excel,
/// LibreOffice and Google Sheets (a child registered as `=HYPERLINK(...)` would run on the
/// analyst's machine), so it gets a leading apostrophe, which they show as text.
pub fn csv_text(s: &str) -> String {
    let inert = match s.chars().next() {
        Some('=' | '+' | '-' | '@' | '\t' | '\r') => format!("'{s}"),
        _ => s.to_owned(),
    };
    format!("\"{}\"", inert.replace('"', "\"\""))
}

/// CSV of monthly rows (`unit` first), with the ratios as percentages.
pub fn monthly_csv(rows: &[(String, String, MonthlyRow)]) -> String {
    let mut out = String::from(
        "unit,name,S,K,D,N,T,O,D/S %,N/D %,stunting %,severe stunting %,wasting %,underweight %,overweight %,\
         basic immunisation 12-23m %,children with overdue doses,pregnant KEK %,adults high BP %\n",
    );
    let pct = |r: Ratio| r.percent().map(|p| format!("{p:.1}")).unwrap_or_default();
    for (unit, name, r) in rows {
        let (unit, name) = (csv_text(unit), csv_text(name));
        out.push_str(&format!(
            "{unit},{name},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}\n",
            r.s,
            r.k,
            r.d,
            r.n,
            r.t,
            r.o,
            pct(r.d_over_s()),
            pct(r.n_over_d()),
            pct(r.stunting),
            pct(r.severe_stunting),
            pct(r.wasting),
            pct(r.underweight),
            pct(r.overweight),
            pct(r.basic_immunisation_12_23m),
            r.children_with_overdue_doses,
            pct(r.pregnant_kek),
            pct(r.adults_high_bp),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn csv_cells_that_spreadsheets_would_run_are_made_text() {
        assert_eq!(csv_text("=HYPERLINK(\"http://x\",\"klik\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"klik\"\")\"");
        for bad in ["+62 812", "-1+1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(csv_text(bad).starts_with("\"'"), "{bad:?}");
        }
        assert_eq!(csv_text("Siti \"Ani\""), "\"Siti \"\"Ani\"\"\"");
        assert_eq!(csv_text("Nur Lestari"), "\"Nur Lestari\"");
    }

    #[test]
    fn months_know_their_neighbours() {
        let m = Month::parse("2026-01").expect("month");
        assert_eq!(m.previous().to_string(), "2025-12");
        assert_eq!(m.next().to_string(), "2026-02");
        assert_eq!(m.last_day(), date!(2026 - 01 - 31));
        assert_eq!(Month::parse("2024-02").expect("m").last_day(), date!(2024 - 02 - 29));
        assert!(Month::parse("2026-13").is_none());
    }

    #[test]
    fn ratios_roll_up_by_summing() {
        let mut a = Ratio { n: 1, of: 4 };
        a.add(Ratio { n: 3, of: 4 });
        assert_eq!(a.percent(), Some(50.0));
        assert_eq!(Ratio::default().percent(), None);
    }

    fn kid(p: &PosyanduId, id: PersonId, on: time::Date, weight_g: i64) -> VisitFact {
        VisitFact {
            posyandu: p.clone(),
            session_date: on,
            person_id: id,
            name: "Anak".into(),
            sex: Sex::Female,
            birth_date: date!(2025 - 11 - 02),
            group: LifeGroup::Balita,
            weight_g: Some(weight_g),
            length_mm: Some(745),
            lying: Some(true),
            muac_mm: None,
            oedema: false,
            growth_card: false,
            bp_systolic: None,
            bp_diastolic: None,
            immunisations: vec![],
        }
    }

    /// A small posyandu month worked by hand: the registry counts in S and K, KBM splits N/T.
    #[test]
    fn skdn_by_hand_and_its_csv() {
        let p: PosyanduId = "melati-01".parse().expect("id");
        let (a, b, c, d) =
            (PersonId::new_random(), PersonId::new_random(), PersonId::new_random(), PersonId::new_random());
        let (oct, nov) = (date!(2026 - 10 - 10), date!(2026 - 11 - 10));
        let facts = vec![
            kid(&p, a, oct, 9_000),
            kid(&p, a, nov, 9_250), // +250 g at 12 months: KBM 200 -> N
            kid(&p, b, oct, 9_000),
            kid(&p, b, nov, 9_100), // +100 g -> T
            kid(&p, c, nov, 8_800), // first weighing -> O
        ];
        // d is registered, has a KIA book, and did not come.
        let registered = Registered {
            people: vec![RegisteredPerson {
                posyandu: p.clone(),
                person_id: d,
                birth_date: date!(2024 - 05 - 01),
                kia_book: true,
            }],
        };
        let month = Month::parse("2026-11").expect("m");
        let rows = monthly(month, &facts, &registered);
        let r = &rows[&p];
        assert_eq!((r.s, r.k, r.d, r.n, r.t, r.o), (4, 1, 3, 1, 1, 1));
        assert_eq!(r.d_over_s().percent(), Some(75.0));
        assert_eq!(r.n_over_d().percent(), Some(33.3));
        let csv = monthly_csv(&[(p.to_string(), "Posyandu \"Melati\" 1".into(), r.clone())]);
        insta::assert_snapshot!(csv, @r#"
        unit,name,S,K,D,N,T,O,D/S %,N/D %,stunting %,severe stunting %,wasting %,underweight %,overweight %,basic immunisation 12-23m %,children with overdue doses,pregnant KEK %,adults high BP %
        "melati-01","Posyandu ""Melati"" 1",4,1,3,1,1,1,75.0,33.3,0.0,0.0,0.0,0.0,0.0,0.0,4,,
        "#);
    }

    /// A series over several months gives, for each, the rows `monthly` gives alone.
    #[test]
    fn a_series_month_equals_the_monthly_rows_of_that_month() {
        let (p, q): (PosyanduId, PosyanduId) = ("melati-01".parse().expect("id"), "mawar-02".parse().expect("id"));
        let (a, b) = (PersonId::new_random(), PersonId::new_random());
        let facts = vec![
            kid(&p, a, date!(2026 - 09 - 10), 8_700),
            kid(&p, a, date!(2026 - 10 - 10), 9_000),
            kid(&q, b, date!(2026 - 10 - 12), 9_000),
            kid(&q, b, date!(2026 - 11 - 12), 9_050),
        ];
        let registered = Registered::default();
        let series = MonthlySeries::new(&facts, &registered);
        let mut m = Month::parse("2026-08").expect("m");
        for _ in 0..5 {
            assert_eq!(series.month(m), monthly(m, &facts, &registered), "{m}");
            m = m.next();
        }
        assert!(series.month(Month::parse("2026-08").expect("m")).is_empty(), "before any visit");
    }

    #[test]
    fn doses_due_are_those_whose_month_has_come_within_the_grace_month() {
        let given: BTreeSet<&str> = ["HB0", "BCG", "OPV-1"].into_iter().collect();
        let at_2m: Vec<_> = due_doses(2, &given).collect();
        assert_eq!(at_2m, vec!["DPT-HB-Hib-1", "OPV-2", "PCV-1", "RV-1"]);
        assert!(
            due_doses(3, &given).all(|d| !overdue_doses(3, &given).any(|o| o == d)),
            "due and overdue never overlap"
        );
        let none: BTreeSet<&str> = BTreeSet::new();
        assert_eq!(due_doses(0, &none).collect::<Vec<_>>(), vec!["HB0"]);
    }

    #[test]
    fn overdue_doses_follow_the_schedule_with_grace() {
        let given: BTreeSet<&str> = ["HB0", "BCG", "OPV-1"].into_iter().collect();
        let at_3m: Vec<_> = overdue_doses(3, &given).collect();
        assert_eq!(at_3m, vec!["DPT-HB-Hib-1", "OPV-2", "PCV-1", "RV-1"]);
        assert!(overdue_doses(2, &given).next().is_none(), "due at 2 months, overdue only after 3");
    }
}

//! WHO Child Growth Standards (2006) z-scores by the LMS method, and nutritional status per
//! Permenkes RI No. 2 Tahun 2020 (Standar Antropometri Anak) for children 0–60 months.
//!
//! The LMS tables are WHO's daily tables (age in days 0–1856; length 45–110 cm and height
//! 65–120 cm by 0.1 cm), embedded from `fixtures/who/*.csv` (see `fixtures/who/README.md` for
//! their source) and parsed once on first use.
//!
//! The rules follow WHO Anthro / igrowup:
//! - age is whole days; a known age outside 0–1856 days yields no z-score at all;
//! - length/height correction: under 731 days measured standing +0.7 cm, from 731 days measured
//!   lying −0.7 cm, unknown position no correction; every length-based indicator and the BMI use
//!   the corrected value;
//! - weight-for-length (45–110 cm) under 731 days, weight-for-height (65–120 cm) from 731 days,
//!   by measuring position when the age is unknown; L, M, S are interpolated linearly between
//!   the neighbouring 0.1 cm rows;
//! - z = ((y/M)^L − 1)/(S·L); weight-based indicators (weight-for-age, weight-for-length/height,
//!   BMI-for-age, MUAC-for-age) beyond ±3 use WHO's restricted adjustment (distance in units of
//!   the 2–3 SD gap);
//! - with bilateral pitting oedema the weight-based wfa, wflh and bmifa are not computed;
//! - implausible values are flagged (lhfa < −6 or > 6; wfa < −6 or > 5; the others < −5 or > 5)
//!   but still returned;
//! - a z-score is rounded to 2 decimals ([`who_rounded`]) before it is flagged or classified, as
//!   WHO's `anthro` R package does (`round(zscore, digits = 2L)` in `R/z-score-helper.R`), so a
//!   class or flag is the one WHO Anthro gives. The z-scores themselves are returned unrounded.

use crate::record::Sex;
use serde::Serialize;
use std::sync::OnceLock;

/// Oldest age covered by the tables, days (60 months).
pub const MAX_AGE_DAYS: i64 = 1856;
/// From this age (days) children are measured standing and weight-for-height applies.
pub const STANDING_FROM_DAYS: i64 = 731;

/// A WHO growth indicator, i.e. one LMS table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Indicator {
    WeightForAge,
    LengthHeightForAge,
    WeightForLength,
    WeightForHeight,
    BmiForAge,
    HeadCircForAge,
    MuacForAge,
}

impl Indicator {
    pub const ALL: [Indicator; 7] = [
        Indicator::WeightForAge,
        Indicator::LengthHeightForAge,
        Indicator::WeightForLength,
        Indicator::WeightForHeight,
        Indicator::BmiForAge,
        Indicator::HeadCircForAge,
        Indicator::MuacForAge,
    ];

    /// The table's file stem in `fixtures/who/` (`wfa`, `lhfa`, `wfl`, `wfh`, `bmifa`, `hcfa`, `acfa`).
    pub fn table_name(self) -> &'static str {
        match self {
            Indicator::WeightForAge => "wfa",
            Indicator::LengthHeightForAge => "lhfa",
            Indicator::WeightForLength => "wfl",
            Indicator::WeightForHeight => "wfh",
            Indicator::BmiForAge => "bmifa",
            Indicator::HeadCircForAge => "hcfa",
            Indicator::MuacForAge => "acfa",
        }
    }

    /// The name used in [`ZScores::flags`] (`wfl` and `wfh` are both `wflh`).
    pub fn code(self) -> &'static str {
        match self {
            Indicator::WeightForAge => "wfa",
            Indicator::LengthHeightForAge => "lhfa",
            Indicator::WeightForLength | Indicator::WeightForHeight => "wflh",
            Indicator::BmiForAge => "bmifa",
            Indicator::HeadCircForAge => "hcfa",
            Indicator::MuacForAge => "muacfa",
        }
    }

    /// Whether WHO's restricted adjustment beyond ±3 SD applies.
    pub fn is_weight_based(self) -> bool {
        matches!(
            self,
            Indicator::WeightForAge
                | Indicator::WeightForLength
                | Indicator::WeightForHeight
                | Indicator::BmiForAge
                | Indicator::MuacForAge
        )
    }

    /// The table's x range, inclusive: age in days, or length/height in cm.
    pub fn x_range(self) -> (f64, f64) {
        let t = table(self);
        (t.x0, t.x0 + t.step * (t.female.len() - 1) as f64)
    }

    /// WHO 2006 implausible-value limits `(low, high)`: flagged when z < low or z > high.
    pub fn flag_limits(self) -> (f64, f64) {
        match self {
            Indicator::LengthHeightForAge => (-6.0, 6.0),
            Indicator::WeightForAge => (-6.0, 5.0),
            _ => (-5.0, 5.0),
        }
    }

    /// Whether `z` is beyond [`Self::flag_limits`] once rounded as WHO rounds it.
    fn is_flagged(self, z: f64) -> bool {
        let (lo, hi) = self.flag_limits();
        let z = who_rounded(z);
        z < lo || z > hi
    }
}

/// `z` rounded to 2 decimals exactly as R's `round(z, 2)` (R ≥ 4.0.0, `src/nmath/fround.c`),
/// which WHO's `anthro` package applies to every z-score before its flags and cut-offs: of the
/// two neighbouring hundredths the one nearer `z` in double arithmetic, on a tie the even one.
///
/// Not `(z * 100.0).round() / 100.0`: the product can round onto a half and then go away from
/// zero, e.g. the double nearest −2.005 (just above it) gives −2.01 that way but −2.00 in R, a
/// different class exactly at a cut-off. Same as R for |z| < 10^13 (R leaves larger values as
/// they are), which covers every z-score.
pub fn who_rounded(z: f64) -> f64 {
    if !z.is_finite() || z == 0.0 {
        return z;
    }
    let x = z.abs();
    let hundredths = x * 100.0;
    let below = hundredths.floor();
    let (down, up) = (below / 100.0, hundredths.ceil() / 100.0);
    let (to_up, to_down) = (up - x, x - down);
    let round_up = to_up < to_down || (to_up == to_down && below % 2.0 == 1.0);
    (if round_up { up } else { down }).copysign(z)
}

/// One row's Box-Cox power L, median M and coefficient of variation S.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lms {
    pub l: f64,
    pub m: f64,
    pub s: f64,
}

impl Lms {
    /// The plain LMS z-score of `y` (no restricted adjustment).
    pub fn z(&self, y: f64) -> f64 {
        if self.l == 0.0 { (y / self.m).ln() / self.s } else { ((y / self.m).powf(self.l) - 1.0) / (self.s * self.l) }
    }

    /// The measurement at `k` standard deviations: M(1 + L·S·k)^(1/L).
    pub fn sd(&self, k: f64) -> f64 {
        if self.l == 0.0 {
            self.m * (self.s * k).exp()
        } else {
            self.m * (1.0 + self.l * self.s * k).powf(1.0 / self.l)
        }
    }

    /// The z-score with WHO's restricted adjustment beyond ±3 SD.
    pub fn z_restricted(&self, y: f64) -> f64 {
        let z = self.z(y);
        if z > 3.0 {
            let sd3 = self.sd(3.0);
            3.0 + (y - sd3) / (sd3 - self.sd(2.0))
        } else if z < -3.0 {
            let sd3 = self.sd(-3.0);
            -3.0 + (y - sd3) / (self.sd(-2.0) - sd3)
        } else {
            z
        }
    }
}

struct Table {
    x0: f64,
    step: f64,
    female: Vec<Lms>,
    male: Vec<Lms>,
}

impl Table {
    fn rows(&self, sex: Sex) -> &[Lms] {
        match sex {
            Sex::Female => &self.female,
            Sex::Male => &self.male,
        }
    }

    /// L, M, S at `x`, interpolated linearly between neighbouring rows; None outside the table.
    fn lms(&self, sex: Sex, x: f64) -> Option<Lms> {
        let rows = self.rows(sex);
        if !x.is_finite() || rows.is_empty() {
            return None;
        }
        let mut p = (x - self.x0) / self.step;
        // Absorb float noise such as 84.1 + 0.7 = 84.79999999999998 onto the grid row.
        if (p - p.round()).abs() < 1e-6 {
            p = p.round();
        }
        let last = (rows.len() - 1) as f64;
        if !(0.0..=last).contains(&p) {
            return None;
        }
        let i = p.floor();
        let f = p - i;
        let i = i as usize;
        if f == 0.0 {
            return Some(rows[i]);
        }
        let (a, b) = (rows[i], rows[i + 1]);
        Some(Lms { l: a.l + f * (b.l - a.l), m: a.m + f * (b.m - a.m), s: a.s + f * (b.s - a.s) })
    }
}

/// Parses an embedded `sex,x,l,m,s` table. Panics on malformed data: the tables are compiled in,
/// and the unit tests parse every one of them.
fn parse_table(name: &str, csv: &str) -> Table {
    let mut lines = csv.lines();
    assert_eq!(lines.next().map(str::trim), Some("sex,x,l,m,s"), "fixtures/who/{name}.csv: bad header");
    let mut female: Vec<(f64, Lms)> = Vec::new();
    let mut male: Vec<(f64, Lms)> = Vec::new();
    for (n, line) in lines.enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split(',').collect();
        assert_eq!(cols.len(), 5, "fixtures/who/{name}.csv line {}: expected 5 columns", n + 2);
        let num = |s: &str| -> f64 {
            s.parse().unwrap_or_else(|e| panic!("fixtures/who/{name}.csv line {}: {s:?}: {e}", n + 2))
        };
        let row = (num(cols[1]), Lms { l: num(cols[2]), m: num(cols[3]), s: num(cols[4]) });
        match cols[0] {
            "F" => female.push(row),
            "M" => male.push(row),
            other => panic!("fixtures/who/{name}.csv line {}: sex {other:?}", n + 2),
        }
    }
    assert!(female.len() >= 2, "fixtures/who/{name}.csv: too few rows");
    assert_eq!(female.len(), male.len(), "fixtures/who/{name}.csv: sexes differ in length");
    let x0 = female[0].0;
    let step = female[1].0 - female[0].0;
    let step = if (step - 1.0).abs() < 1e-9 { 1.0 } else { 0.1 };
    for rows in [&female, &male] {
        for (i, (x, _)) in rows.iter().enumerate() {
            let want = x0 + step * i as f64;
            assert!((x - want).abs() < 1e-6, "fixtures/who/{name}.csv: row {i} has x {x}, expected {want}");
        }
    }
    let strip = |v: Vec<(f64, Lms)>| v.into_iter().map(|(_, lms)| lms).collect();
    Table { x0, step, female: strip(female), male: strip(male) }
}

fn table(indicator: Indicator) -> &'static Table {
    static WFA: OnceLock<Table> = OnceLock::new();
    static LHFA: OnceLock<Table> = OnceLock::new();
    static WFL: OnceLock<Table> = OnceLock::new();
    static WFH: OnceLock<Table> = OnceLock::new();
    static BMIFA: OnceLock<Table> = OnceLock::new();
    static HCFA: OnceLock<Table> = OnceLock::new();
    static ACFA: OnceLock<Table> = OnceLock::new();
    let (cell, csv) = match indicator {
        Indicator::WeightForAge => (&WFA, include_str!("../../../fixtures/who/wfa.csv")),
        Indicator::LengthHeightForAge => (&LHFA, include_str!("../../../fixtures/who/lhfa.csv")),
        Indicator::WeightForLength => (&WFL, include_str!("../../../fixtures/who/wfl.csv")),
        Indicator::WeightForHeight => (&WFH, include_str!("../../../fixtures/who/wfh.csv")),
        Indicator::BmiForAge => (&BMIFA, include_str!("../../../fixtures/who/bmifa.csv")),
        Indicator::HeadCircForAge => (&HCFA, include_str!("../../../fixtures/who/hcfa.csv")),
        Indicator::MuacForAge => (&ACFA, include_str!("../../../fixtures/who/acfa.csv")),
    };
    cell.get_or_init(|| parse_table(indicator.table_name(), csv))
}

/// L, M, S of `indicator` at `x` (age in days, or length/height in cm), interpolated linearly
/// between neighbouring table rows; None outside the table.
pub fn lms(indicator: Indicator, sex: Sex, x: f64) -> Option<Lms> {
    table(indicator).lms(sex, x)
}

/// The z-score of measurement `y` (kg, cm, or kg/m² for BMI) at `x` (age in days, or
/// length/height in cm for weight-for-length/height), with WHO's restricted adjustment for the
/// weight-based indicators. None outside the table or for a non-positive `y`.
pub fn z(indicator: Indicator, sex: Sex, x: f64, y: f64) -> Option<f64> {
    if !(y.is_finite() && y > 0.0) {
        return None;
    }
    let lms = lms(indicator, sex, x)?;
    let z = if indicator.is_weight_based() { lms.z_restricted(y) } else { lms.z(y) };
    z.is_finite().then_some(z)
}

/// Length/height after WHO's correction: +0.7 cm when a child under 731 days was measured
/// standing, −0.7 cm when a child of 731 days or more was measured lying; unchanged when the
/// position or the age is unknown.
pub fn corrected_length_cm(age_days: Option<i64>, length_cm: f64, lying: Option<bool>) -> f64 {
    match (age_days, lying) {
        (Some(a), Some(false)) if a < STANDING_FROM_DAYS => length_cm + 0.7,
        (Some(a), Some(true)) if a >= STANDING_FROM_DAYS => length_cm - 0.7,
        _ => length_cm,
    }
}

/// Which of weight-for-length or weight-for-height applies: by age when known, else by the
/// measuring position; None when neither is known.
pub fn wflh_indicator(age_days: Option<i64>, lying: Option<bool>) -> Option<Indicator> {
    match (age_days, lying) {
        (Some(a), _) if a < STANDING_FROM_DAYS => Some(Indicator::WeightForLength),
        (Some(_), _) => Some(Indicator::WeightForHeight),
        (None, Some(true)) => Some(Indicator::WeightForLength),
        (None, Some(false)) => Some(Indicator::WeightForHeight),
        (None, None) => None,
    }
}

/// One measurement as recorded (grams, millimetres).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Measurement {
    pub sex: Sex,
    pub age_days: Option<i64>,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    /// true = measured lying (length), false = standing (height), None = unknown
    pub lying: Option<bool>,
    pub head_circ_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    pub oedema: bool,
}

impl Measurement {
    /// What a visit measured, at the child's age on the session date; oedema from the
    /// visit's services (bilateral pitting oedema makes weight-based z-scores meaningless).
    pub fn of_visit(v: &crate::record::Visit, session_date: time::Date) -> Self {
        use crate::record::{Field, FieldValue};
        Measurement {
            sex: v.sex,
            age_days: Some(crate::record::age_days(v.birth_date, session_date)),
            weight_g: v.weight_g,
            length_mm: v.length_mm,
            lying: v.lying,
            head_circ_mm: v.head_circ_mm,
            muac_mm: v.muac_mm,
            oedema: matches!(v.services.get(&Field::Oedema), Some(FieldValue::Bool(true))),
        }
    }
}

/// One measurement in WHO's units (kg, cm), e.g. from an instrument or a survey file.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MeasurementMetric {
    pub sex: Sex,
    pub age_days: Option<i64>,
    pub weight_kg: Option<f64>,
    pub length_cm: Option<f64>,
    /// true = measured lying (length), false = standing (height), None = unknown
    pub lying: Option<bool>,
    pub head_circ_cm: Option<f64>,
    pub muac_cm: Option<f64>,
    pub oedema: bool,
}

impl From<&Measurement> for MeasurementMetric {
    fn from(m: &Measurement) -> Self {
        let cm = |mm: Option<i64>| mm.map(|v| v as f64 / 10.0);
        MeasurementMetric {
            sex: m.sex,
            age_days: m.age_days,
            weight_kg: m.weight_g.map(|g| g as f64 / 1000.0),
            length_cm: cm(m.length_mm),
            lying: m.lying,
            head_circ_cm: cm(m.head_circ_mm),
            muac_cm: cm(m.muac_mm),
            oedema: m.oedema,
        }
    }
}

/// The z-scores at full precision; compare one with a cut-off only through [`who_rounded`] (as
/// [`classify`] and the flags do), or a class may differ from WHO Anthro's.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ZScores {
    pub wfa: Option<f64>,
    pub lhfa: Option<f64>,
    pub wflh: Option<f64>,
    pub bmifa: Option<f64>,
    pub hcfa: Option<f64>,
    pub muacfa: Option<f64>,
    /// length/height after WHO's 0.7 cm correction, cm
    pub corrected_length_cm: Option<f64>,
    pub bmi: Option<f64>,
    /// WHO implausible-value flags by indicator name ("wfa", "lhfa", "wflh", "bmifa", "hcfa", "muacfa"),
    /// decided on the rounded z-score
    pub flags: Vec<&'static str>,
}

impl ZScores {
    /// Whether the named indicator ("wfa", "lhfa", "wflh", "bmifa", "hcfa", "muacfa") is flagged.
    pub fn is_flagged(&self, code: &str) -> bool {
        self.flags.contains(&code)
    }
}

/// All z-scores of one recorded measurement.
pub fn zscores(m: &Measurement) -> ZScores {
    zscores_metric(&MeasurementMetric::from(m))
}

/// All z-scores of one measurement in kg and cm.
pub fn zscores_metric(m: &MeasurementMetric) -> ZScores {
    let positive = |v: Option<f64>| v.filter(|v| v.is_finite() && *v > 0.0);
    let weight = positive(m.weight_kg);
    let length = positive(m.length_cm).map(|l| corrected_length_cm(m.age_days, l, m.lying));
    let bmi = match (weight, length) {
        (Some(w), Some(l)) => Some(w / (l / 100.0).powi(2)),
        _ => None,
    };
    // A known age outside the standard (negative, or past 60 months) gives no z-score at all.
    let age_ok = m.age_days.is_none_or(|a| (0..=MAX_AGE_DAYS).contains(&a));
    let age = m.age_days.filter(|_| age_ok).map(|a| a as f64);
    let weight_z = if m.oedema { None } else { weight };

    let mut flags = Vec::new();
    let mut score = |indicator: Indicator, x: Option<f64>, y: Option<f64>| -> Option<f64> {
        let v = z(indicator, m.sex, x?, y?)?;
        if indicator.is_flagged(v) {
            flags.push(indicator.code());
        }
        Some(v)
    };
    let wflh_x = wflh_indicator(m.age_days, m.lying).filter(|_| age_ok);
    ZScores {
        wfa: score(Indicator::WeightForAge, age, weight_z),
        lhfa: score(Indicator::LengthHeightForAge, age, length),
        wflh: wflh_x.and_then(|ind| score(ind, length, weight_z)),
        bmifa: score(Indicator::BmiForAge, age, if m.oedema { None } else { bmi }),
        hcfa: score(Indicator::HeadCircForAge, age, positive(m.head_circ_cm)),
        muacfa: score(Indicator::MuacForAge, age, positive(m.muac_cm)),
        corrected_length_cm: length,
        bmi,
        flags,
    }
}

/// Weight-for-age status (BB/U), Permenkes 2/2020.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightForAgeStatus {
    /// z < −3
    SeverelyUnderweight,
    /// −3 ≤ z < −2
    Underweight,
    /// −2 ≤ z ≤ +1
    Normal,
    /// z > +1
    RiskOfOverweight,
}

impl WeightForAgeStatus {
    /// The status of `z` rounded as WHO rounds it ([`who_rounded`]).
    pub fn from_z(z: f64) -> Self {
        let z = who_rounded(z);
        if z < -3.0 {
            Self::SeverelyUnderweight
        } else if z < -2.0 {
            Self::Underweight
        } else if z <= 1.0 {
            Self::Normal
        } else {
            Self::RiskOfOverweight
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::SeverelyUnderweight => "severely_underweight",
            Self::Underweight => "underweight",
            Self::Normal => "normal",
            Self::RiskOfOverweight => "risk_of_overweight",
        }
    }
    pub fn label_id(self) -> &'static str {
        match self {
            Self::SeverelyUnderweight => "Berat badan sangat kurang",
            Self::Underweight => "Berat badan kurang",
            Self::Normal => "Berat badan normal",
            Self::RiskOfOverweight => "Risiko berat badan lebih",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Self::SeverelyUnderweight => "Severely underweight",
            Self::Underweight => "Underweight",
            Self::Normal => "Normal weight",
            Self::RiskOfOverweight => "Risk of overweight",
        }
    }
}

/// Length/height-for-age status (PB/U, TB/U), Permenkes 2/2020.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HeightForAgeStatus {
    /// z < −3
    SeverelyStunted,
    /// −3 ≤ z < −2
    Stunted,
    /// −2 ≤ z ≤ +3
    Normal,
    /// z > +3
    Tall,
}

impl HeightForAgeStatus {
    /// The status of `z` rounded as WHO rounds it ([`who_rounded`]).
    pub fn from_z(z: f64) -> Self {
        let z = who_rounded(z);
        if z < -3.0 {
            Self::SeverelyStunted
        } else if z < -2.0 {
            Self::Stunted
        } else if z <= 3.0 {
            Self::Normal
        } else {
            Self::Tall
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::SeverelyStunted => "severely_stunted",
            Self::Stunted => "stunted",
            Self::Normal => "normal",
            Self::Tall => "tall",
        }
    }
    pub fn label_id(self) -> &'static str {
        match self {
            Self::SeverelyStunted => "Sangat pendek",
            Self::Stunted => "Pendek",
            Self::Normal => "Normal",
            Self::Tall => "Tinggi",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Self::SeverelyStunted => "Severely stunted",
            Self::Stunted => "Stunted",
            Self::Normal => "Normal height",
            Self::Tall => "Tall",
        }
    }
}

/// Weight-for-length/height status (BB/PB, BB/TB), Permenkes 2/2020; the same cut-offs serve
/// BMI-for-age (IMT/U) for 0–60 months.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightForHeightStatus {
    /// z < −3
    SeverelyWasted,
    /// −3 ≤ z < −2
    Wasted,
    /// −2 ≤ z ≤ +1
    Normal,
    /// +1 < z ≤ +2
    PossibleRiskOfOverweight,
    /// +2 < z ≤ +3
    Overweight,
    /// z > +3
    Obese,
}

impl WeightForHeightStatus {
    /// The status of `z` rounded as WHO rounds it ([`who_rounded`]).
    pub fn from_z(z: f64) -> Self {
        let z = who_rounded(z);
        if z < -3.0 {
            Self::SeverelyWasted
        } else if z < -2.0 {
            Self::Wasted
        } else if z <= 1.0 {
            Self::Normal
        } else if z <= 2.0 {
            Self::PossibleRiskOfOverweight
        } else if z <= 3.0 {
            Self::Overweight
        } else {
            Self::Obese
        }
    }
    pub fn code(self) -> &'static str {
        match self {
            Self::SeverelyWasted => "severely_wasted",
            Self::Wasted => "wasted",
            Self::Normal => "normal",
            Self::PossibleRiskOfOverweight => "possible_risk_of_overweight",
            Self::Overweight => "overweight",
            Self::Obese => "obese",
        }
    }
    pub fn label_id(self) -> &'static str {
        match self {
            Self::SeverelyWasted => "Gizi buruk",
            Self::Wasted => "Gizi kurang",
            Self::Normal => "Gizi baik",
            Self::PossibleRiskOfOverweight => "Berisiko gizi lebih",
            Self::Overweight => "Gizi lebih",
            Self::Obese => "Obesitas",
        }
    }
    pub fn label_en(self) -> &'static str {
        match self {
            Self::SeverelyWasted => "Severely wasted",
            Self::Wasted => "Wasted",
            Self::Normal => "Normal",
            Self::PossibleRiskOfOverweight => "Possible risk of overweight",
            Self::Overweight => "Overweight",
            Self::Obese => "Obese",
        }
    }
}

/// A status in words for people: its stable code and its label in Indonesian and English.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct StatusLabel {
    pub code: &'static str,
    pub id: &'static str,
    pub en: &'static str,
}

macro_rules! status_label {
    ($($status:ty),*) => {$(
        impl $status {
            /// The status in words (code, Indonesian, English).
            pub fn label(self) -> StatusLabel {
                StatusLabel { code: self.code(), id: self.label_id(), en: self.label_en() }
            }
        }
    )*};
}

status_label!(WeightForAgeStatus, HeightForAgeStatus, WeightForHeightStatus);

/// Nutritional status per Permenkes RI No. 2 Tahun 2020 (Standar Antropometri Anak), children 0-60 months
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Classification {
    pub wfa: Option<WeightForAgeStatus>,
    pub lhfa: Option<HeightForAgeStatus>,
    pub wflh: Option<WeightForHeightStatus>,
    pub bmifa: Option<WeightForHeightStatus>,
}

/// Classifies the z-scores as WHO Anthro does, on each z-score rounded to 2 decimals
/// ([`who_rounded`]); a flagged (implausible) indicator is left unclassified.
pub fn classify(z: &ZScores) -> Classification {
    let ok = |v: Option<f64>, code: &str| v.filter(|v| v.is_finite() && !z.is_flagged(code));
    Classification {
        wfa: ok(z.wfa, "wfa").map(WeightForAgeStatus::from_z),
        lhfa: ok(z.lhfa, "lhfa").map(HeightForAgeStatus::from_z),
        wflh: ok(z.wflh, "wflh").map(WeightForHeightStatus::from_z),
        bmifa: ok(z.bmifa, "bmifa").map(WeightForHeightStatus::from_z),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    fn m(sex: Sex, age: Option<i64>) -> Measurement {
        Measurement {
            sex,
            age_days: age,
            weight_g: None,
            length_mm: None,
            lying: None,
            head_circ_mm: None,
            muac_mm: None,
            oedema: false,
        }
    }

    #[test]
    fn every_table_parses_with_the_expected_range() {
        let want = [
            (Indicator::WeightForAge, 0.0, 1856.0, 1857),
            (Indicator::LengthHeightForAge, 0.0, 1856.0, 1857),
            (Indicator::WeightForLength, 45.0, 110.0, 651),
            (Indicator::WeightForHeight, 65.0, 120.0, 551),
            (Indicator::BmiForAge, 0.0, 1856.0, 1857),
            (Indicator::HeadCircForAge, 0.0, 1856.0, 1857),
            (Indicator::MuacForAge, 91.0, 1856.0, 1766),
        ];
        for (ind, lo, hi, rows) in want {
            let (a, b) = ind.x_range();
            assert!(close(a, lo, 1e-9) && close(b, hi, 1e-9), "{ind:?}: {a}..{b}");
            assert_eq!(table(ind).female.len(), rows, "{ind:?}");
            assert_eq!(table(ind).male.len(), rows, "{ind:?}");
        }
    }

    #[test]
    fn lms_formula_at_a_table_row() {
        // wfa, female, day 0: L 0.3809, M 3.2322, S 0.14171.
        let lms = lms(Indicator::WeightForAge, Sex::Female, 0.0).expect("day 0");
        assert_eq!(lms, Lms { l: 0.3809, m: 3.2322, s: 0.14171 });
        let y = 4.0;
        let want = ((y / 3.2322f64).powf(0.3809) - 1.0) / (0.14171 * 0.3809);
        assert!(close(z(Indicator::WeightForAge, Sex::Female, 0.0, y).expect("z"), want, 1e-12));
        // The median is z = 0 and the SD curves invert the formula.
        assert!(close(lms.z(lms.m), 0.0, 1e-12));
        for k in [-3.0, -2.0, -1.0, 1.0, 2.0, 3.0] {
            assert!(close(lms.z(lms.sd(k)), k, 1e-9), "k {k}");
        }
        // L = 0 is the log form.
        let log = Lms { l: 0.0, m: 10.0, s: 0.1 };
        assert!(close(log.z(10.0 * 0.1f64.exp()), 1.0, 1e-12));
        assert!(close(log.sd(2.0), 10.0 * 0.2f64.exp(), 1e-12));
        // Length-for-age has L = 1: z = (y/M - 1)/S.
        let l = lms_at_row(Indicator::LengthHeightForAge, Sex::Male, 365.0);
        assert_eq!(l.l, 1.0);
        let y = 80.0;
        let got = z(Indicator::LengthHeightForAge, Sex::Male, 365.0, y).expect("z");
        assert!(close(got, (y / l.m - 1.0) / l.s, 1e-12));
    }

    fn lms_at_row(ind: Indicator, sex: Sex, x: f64) -> Lms {
        lms(ind, sex, x).expect("inside the table")
    }

    #[test]
    fn restricted_adjustment_beyond_three_sd() {
        let ind = Indicator::WeightForAge;
        let lms = lms_at_row(ind, Sex::Male, 365.0);
        let (sd2, sd3) = (lms.sd(2.0), lms.sd(3.0));
        let heavy = sd3 + 2.0 * (sd3 - sd2) + 0.4; // far above +3 SD
        let raw = lms.z(heavy);
        let adjusted = z(ind, Sex::Male, 365.0, heavy).expect("z");
        let want = 3.0 + (heavy - sd3) / (sd3 - sd2);
        assert!(close(adjusted, want, 1e-12));
        assert!(adjusted > 5.0 && (adjusted - raw).abs() > 0.05, "raw {raw}, adjusted {adjusted}");

        let (sd2n, sd3n) = (lms.sd(-2.0), lms.sd(-3.0));
        let light = sd3n - 1.5 * (sd2n - sd3n);
        let adjusted = z(ind, Sex::Male, 365.0, light).expect("z");
        assert!(close(adjusted, -4.5, 1e-12), "{adjusted}");
        assert!((lms.z(light) - adjusted).abs() > 0.05);

        // Exactly at ±3 SD both forms agree; within ±3 nothing changes.
        assert!(close(z(ind, Sex::Male, 365.0, sd3).expect("z"), 3.0, 1e-9));
        assert!(close(z(ind, Sex::Male, 365.0, lms.sd(1.5)).expect("z"), 1.5, 1e-9));

        // Not for length or head circumference.
        let len = lms_at_row(Indicator::LengthHeightForAge, Sex::Male, 365.0);
        let tall = len.sd(4.0);
        assert!(close(z(Indicator::LengthHeightForAge, Sex::Male, 365.0, tall).expect("z"), 4.0, 1e-9));
    }

    #[test]
    fn length_correction_switches_at_731_days() {
        assert_eq!(corrected_length_cm(Some(730), 80.0, Some(false)), 80.7);
        assert_eq!(corrected_length_cm(Some(730), 80.0, Some(true)), 80.0);
        assert_eq!(corrected_length_cm(Some(731), 80.0, Some(true)), 79.3);
        assert_eq!(corrected_length_cm(Some(731), 80.0, Some(false)), 80.0);
        assert_eq!(corrected_length_cm(Some(730), 80.0, None), 80.0);
        assert_eq!(corrected_length_cm(None, 80.0, Some(false)), 80.0);

        let mut child = m(Sex::Female, Some(730));
        child.length_mm = Some(800);
        child.weight_g = Some(10_000);
        child.lying = Some(false);
        let zs = zscores(&child);
        let cl = zs.corrected_length_cm.expect("length");
        assert!(close(cl, 80.7, 1e-9));
        let lhfa = z(Indicator::LengthHeightForAge, Sex::Female, 730.0, 80.7).expect("z");
        assert!(close(zs.lhfa.expect("lhfa"), lhfa, 1e-9));
        let wfl = z(Indicator::WeightForLength, Sex::Female, 80.7, 10.0).expect("z");
        assert!(close(zs.wflh.expect("wflh"), wfl, 1e-9));
        assert!(close(zs.bmi.expect("bmi"), 10.0 / 0.807f64.powi(2), 1e-9));

        child.age_days = Some(731);
        child.lying = Some(true);
        let zs = zscores(&child);
        assert!(close(zs.corrected_length_cm.expect("length"), 79.3, 1e-9));
        let wfh = z(Indicator::WeightForHeight, Sex::Female, 79.3, 10.0).expect("z");
        assert!(close(zs.wflh.expect("wflh"), wfh, 1e-9));

        // Unknown age: the position picks the table and there is no correction.
        child.age_days = None;
        let zs = zscores(&child);
        assert_eq!(zs.corrected_length_cm, Some(80.0));
        let wfl = z(Indicator::WeightForLength, Sex::Female, 80.0, 10.0).expect("z");
        assert!(close(zs.wflh.expect("wflh"), wfl, 1e-12));
        assert_eq!((zs.wfa, zs.lhfa, zs.bmifa), (None, None, None));
        child.lying = Some(false);
        let wfh = z(Indicator::WeightForHeight, Sex::Female, 80.0, 10.0).expect("z");
        assert!(close(zscores(&child).wflh.expect("wflh"), wfh, 1e-12));
        child.lying = None;
        assert_eq!(zscores(&child).wflh, None);
    }

    #[test]
    fn interpolates_between_tenth_of_a_cm_rows() {
        let ind = Indicator::WeightForLength;
        let a = lms_at_row(ind, Sex::Male, 72.3);
        let b = lms_at_row(ind, Sex::Male, 72.4);
        let mid = lms(ind, Sex::Male, 72.34).expect("inside");
        let f = 0.4;
        let want = Lms { l: a.l + f * (b.l - a.l), m: a.m + f * (b.m - a.m), s: a.s + f * (b.s - a.s) };
        assert!(close(mid.l, want.l, 1e-9) && close(mid.m, want.m, 1e-9) && close(mid.s, want.s, 1e-9));
        let y = 9.1;
        let got = z(ind, Sex::Male, 72.34, y).expect("z");
        assert!(close(got, want.z(y), 1e-9));
        let (za, zb) = (a.z(y), b.z(y));
        assert!(got < za.max(zb) && got > za.min(zb));
        // Float noise lands on the row, not beside it.
        assert_eq!(lms(ind, Sex::Male, 71.6 + 0.7), lms(ind, Sex::Male, 72.3));
    }

    #[test]
    fn outside_the_tables_is_none() {
        let f = Sex::Female;
        assert!(z(Indicator::WeightForAge, f, -1.0, 3.0).is_none());
        assert!(z(Indicator::WeightForAge, f, 1857.0, 18.0).is_none());
        assert!(z(Indicator::WeightForAge, f, 1856.0, 18.0).is_some());
        assert!(z(Indicator::WeightForLength, f, 44.9, 2.0).is_none());
        assert!(z(Indicator::WeightForLength, f, 110.01, 18.0).is_none());
        assert!(z(Indicator::WeightForHeight, f, 64.9, 7.0).is_none());
        assert!(z(Indicator::WeightForHeight, f, 120.0, 22.0).is_some());
        assert!(z(Indicator::WeightForHeight, f, 120.1, 22.0).is_none());
        assert!(z(Indicator::MuacForAge, f, 90.0, 13.0).is_none());
        assert!(z(Indicator::MuacForAge, f, 91.0, 13.0).is_some());
        assert!(z(Indicator::WeightForAge, f, 100.0, 0.0).is_none());
        assert!(z(Indicator::WeightForAge, f, 100.0, f64::NAN).is_none());

        let mut child = m(f, Some(1857));
        child.weight_g = Some(18_000);
        child.length_mm = Some(1100);
        child.lying = Some(false);
        let zs = zscores(&child);
        assert_eq!((zs.wfa, zs.lhfa, zs.wflh, zs.bmifa), (None, None, None, None));
        child.age_days = Some(-1);
        assert_eq!(zscores(&child).wflh, None);
        // Under 731 days a corrected length above 110 cm has no weight-for-length.
        child.age_days = Some(700);
        child.length_mm = Some(1096);
        assert_eq!(zscores(&child).wflh, None);
        child.length_mm = Some(1093);
        assert!(zscores(&child).wflh.is_some());
        // MUAC starts at 91 days.
        let mut baby = m(Sex::Male, Some(90));
        baby.muac_mm = Some(130);
        assert_eq!(zscores(&baby).muacfa, None);
        baby.age_days = Some(91);
        assert!(zscores(&baby).muacfa.is_some());
    }

    #[test]
    fn oedema_drops_weight_based_scores_only() {
        let mut child = m(Sex::Male, Some(400));
        child.weight_g = Some(9_000);
        child.length_mm = Some(760);
        child.lying = Some(true);
        child.head_circ_mm = Some(460);
        child.muac_mm = Some(140);
        let dry = zscores(&child);
        assert!(dry.wfa.is_some() && dry.wflh.is_some() && dry.bmifa.is_some());
        child.oedema = true;
        let wet = zscores(&child);
        assert_eq!((wet.wfa, wet.wflh, wet.bmifa), (None, None, None));
        assert_eq!((wet.lhfa, wet.hcfa, wet.muacfa), (dry.lhfa, dry.hcfa, dry.muacfa));
        assert_eq!(classify(&wet).wfa, None);
    }

    #[test]
    fn implausible_values_are_flagged_but_kept() {
        let mut child = m(Sex::Female, Some(365));
        let wfa = lms_at_row(Indicator::WeightForAge, Sex::Female, 365.0);
        let (sd2, sd3) = (wfa.sd(2.0), wfa.sd(3.0));
        child.weight_g = Some(((sd3 + 2.5 * (sd3 - sd2)) * 1000.0).round() as i64); // z ≈ 5.5
        let len = lms_at_row(Indicator::LengthHeightForAge, Sex::Female, 365.0);
        child.length_mm = Some((len.sd(-6.5) * 10.0).round() as i64);
        child.lying = Some(true);
        let zs = zscores(&child);
        assert!(zs.wfa.expect("wfa") > 5.0 && zs.is_flagged("wfa"));
        assert!(zs.lhfa.expect("lhfa") < -6.0 && zs.is_flagged("lhfa"));
        let c = classify(&zs);
        assert_eq!((c.wfa, c.lhfa), (None, None));

        assert!(!Indicator::WeightForAge.is_flagged(5.0) && Indicator::WeightForAge.is_flagged(5.01));
        assert!(!Indicator::WeightForAge.is_flagged(-6.0) && Indicator::WeightForAge.is_flagged(-6.01));
        assert!(!Indicator::LengthHeightForAge.is_flagged(6.0) && Indicator::LengthHeightForAge.is_flagged(6.01));
        for ind in [Indicator::WeightForLength, Indicator::BmiForAge, Indicator::HeadCircForAge, Indicator::MuacForAge]
        {
            assert!(!ind.is_flagged(5.0) && ind.is_flagged(5.01) && ind.is_flagged(-5.01), "{ind:?}");
        }
    }

    #[test]
    fn classification_boundaries() {
        use HeightForAgeStatus as H;
        use WeightForAgeStatus as W;
        use WeightForHeightStatus as B;
        // WHO classifies on hundredths: the next hundredth beyond a cut-off changes the class.
        let eps = 0.01;
        let wfa = [(-3.0 - eps, W::SeverelyUnderweight), (-3.0, W::Underweight), (-2.0 - eps, W::Underweight)];
        let wfa2 = [(-2.0, W::Normal), (1.0, W::Normal), (1.0 + eps, W::RiskOfOverweight), (3.0, W::RiskOfOverweight)];
        for (z, want) in wfa.into_iter().chain(wfa2) {
            assert_eq!(W::from_z(z), want, "wfa {z}");
        }
        let lhfa = [
            (-3.0 - eps, H::SeverelyStunted),
            (-3.0, H::Stunted),
            (-2.0 - eps, H::Stunted),
            (-2.0, H::Normal),
            (1.0, H::Normal),
            (2.0, H::Normal),
            (3.0, H::Normal),
            (3.0 + eps, H::Tall),
        ];
        for (z, want) in lhfa {
            assert_eq!(H::from_z(z), want, "lhfa {z}");
        }
        let wflh = [
            (-3.0 - eps, B::SeverelyWasted),
            (-3.0, B::Wasted),
            (-2.0 - eps, B::Wasted),
            (-2.0, B::Normal),
            (1.0, B::Normal),
            (1.0 + eps, B::PossibleRiskOfOverweight),
            (2.0, B::PossibleRiskOfOverweight),
            (2.0 + eps, B::Overweight),
            (3.0, B::Overweight),
            (3.0 + eps, B::Obese),
        ];
        for (z, want) in wflh {
            assert_eq!(B::from_z(z), want, "wflh {z}");
        }

        // Less than half a hundredth beyond a cut-off rounds onto it.
        assert_eq!(W::from_z(-2.004), W::Normal);
        assert_eq!(H::from_z(3.004), H::Normal);
        assert_eq!(B::from_z(-3.0049), B::Wasted);

        let zs = ZScores { wfa: Some(-2.0), lhfa: Some(-3.0), wflh: Some(2.0), bmifa: Some(3.5), ..ZScores::default() };
        let c = classify(&zs);
        assert_eq!(c.wfa, Some(W::Normal));
        assert_eq!(c.lhfa, Some(H::Stunted));
        assert_eq!(c.wflh, Some(B::PossibleRiskOfOverweight));
        assert_eq!(c.bmifa, Some(B::Obese));
        assert_eq!(classify(&ZScores::default()), Classification::default());
    }

    #[test]
    fn who_rounded_is_r_round_to_2_decimals() {
        // The double nearest c ± 0.005 lies just inside c, and R rounds it to c. Multiplying by
        // 100 lands exactly on the half, so (z * 100).round() would go past the cut-off instead.
        let at_cut_offs = [(-6.005, -6.0), (-5.005, -5.0), (-3.005, -3.0), (-2.005, -2.0), (2.005, 2.0)];
        for (z, want) in at_cut_offs.into_iter().chain([(3.005, 3.0), (5.005, 5.0), (6.005, 6.0)]) {
            assert_eq!(who_rounded(z), want, "{z}");
            assert_ne!((z * 100.0).round() / 100.0, want, "{z}: the naive rounding agrees, drop it");
        }
        // Exact binary halves go to the even hundredth, as R's round() does.
        assert_eq!((who_rounded(0.125), who_rounded(0.375), who_rounded(-2.125)), (0.12, 0.38, -2.12));
        // Nearest hundredth otherwise; rounded values stay put; NaN and infinities pass through.
        assert_eq!((who_rounded(-2.0043), who_rounded(-2.0055), who_rounded(4.999)), (-2.0, -2.01, 5.0));
        for z in [-2.01, -2.0, 1.01, 2.99, 3.01, 5.01] {
            assert_eq!(who_rounded(z), z);
        }
        assert!(who_rounded(f64::NAN).is_nan());
        assert_eq!(who_rounded(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn codes_and_indonesian_labels() {
        assert_eq!(HeightForAgeStatus::SeverelyStunted.code(), "severely_stunted");
        assert_eq!(HeightForAgeStatus::Stunted.label_id(), "Pendek");
        assert_eq!(WeightForAgeStatus::RiskOfOverweight.label_id(), "Risiko berat badan lebih");
        assert_eq!(WeightForHeightStatus::SeverelyWasted.label_id(), "Gizi buruk");
        assert_eq!(WeightForHeightStatus::PossibleRiskOfOverweight.code(), "possible_risk_of_overweight");
        // serde names equal code().
        let json = serde_json::to_string(&WeightForHeightStatus::PossibleRiskOfOverweight).expect("json");
        assert_eq!(json, "\"possible_risk_of_overweight\"");
        let json = serde_json::to_string(&WeightForAgeStatus::SeverelyUnderweight).expect("json");
        assert_eq!(json, format!("\"{}\"", WeightForAgeStatus::SeverelyUnderweight.code()));
    }
}

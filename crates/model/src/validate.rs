//! Validation at capture: impossible values are errors (the capture is refused), plausible
//! but unusual ones are warnings (the kader confirms). Every issue names its field and
//! carries a message in Indonesian and in English. Rules are data below, per life-cycle group.

use crate::growth::{self, Measurement};
use crate::record::{Field, FieldValue, LifeGroup, Visit, age_months};
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Impossible: the visit is not recorded until fixed.
    Error,
    /// Unusual: recorded once the kader confirms.
    Warning,
}

/// One finding about one field. `code` is stable; the messages are for people.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Issue {
    pub field: &'static str,
    pub code: &'static str,
    pub severity: Severity,
    pub message_id: String,
    pub message_en: String,
}

impl Issue {
    fn new(severity: Severity, field: Field, code: &'static str, id: String, en: String) -> Self {
        Self { field: field.key(), code, severity, message_id: id, message_en: en }
    }
}

/// The same person's most recent earlier measurement, for changes between visits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Previous {
    pub date: time::Date,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
}

/// Fields a group's visit must have (error if missing) and should have (warning).
pub fn required(group: LifeGroup) -> (&'static [Field], &'static [Field]) {
    match group {
        LifeGroup::Balita => (&[Field::WeightG], &[Field::LengthMm]),
        LifeGroup::IbuHamil => {
            (&[Field::WeightG, Field::MuacMm, Field::BpSystolic, Field::BpDiastolic], &[Field::GestationalWeeks])
        }
        LifeGroup::IbuNifas => (&[Field::BpSystolic, Field::BpDiastolic], &[]),
        LifeGroup::UsiaSekolah | LifeGroup::Remaja => (&[Field::WeightG], &[Field::LengthMm]),
        LifeGroup::UsiaProduktif | LifeGroup::Lansia => {
            (&[Field::BpSystolic, Field::BpDiastolic], &[Field::WeightG, Field::WaistMm])
        }
    }
}

fn has(v: &Visit, f: Field) -> bool {
    match f {
        Field::WeightG => v.weight_g.is_some(),
        Field::LengthMm => v.length_mm.is_some(),
        Field::MuacMm => v.muac_mm.is_some(),
        Field::HeadCircMm => v.head_circ_mm.is_some(),
        other => v.services.get(&other).is_some_and(|x| *x != FieldValue::Null),
    }
}

fn int(v: &Visit, f: Field) -> Option<i64> {
    match v.services.get(&f) {
        Some(FieldValue::Int(i)) => Some(*i),
        _ => None,
    }
}

/// Everything wrong or unusual with `v`, recorded at a session on `session_date`.
pub fn check_visit(v: &Visit, session_date: time::Date, previous: Option<&Previous>) -> Vec<Issue> {
    let mut out = Vec::new();
    use Severity::{Error, Warning};
    if v.birth_date > session_date {
        out.push(Issue::new(
            Error,
            Field::BirthDate,
            "birth_date_in_future",
            "Tanggal lahir tidak boleh setelah tanggal kunjungan".into(),
            "Birth date cannot be after the visit date".into(),
        ));
        return out;
    }
    if !v.group.fits(v.sex, v.birth_date, session_date) {
        out.push(Issue::new(
            Error,
            Field::Group,
            "group_does_not_fit",
            format!("Kelompok sasaran {} tidak sesuai dengan umur atau jenis kelamin", v.group.code()),
            format!("Life-cycle group {} does not fit this age or sex", v.group.code()),
        ));
    }
    let (must, should) = required(v.group);
    for f in must {
        if !has(v, *f) {
            out.push(Issue::new(
                Error,
                *f,
                "required",
                format!("{} wajib diisi untuk kelompok {}", f.key(), v.group.code()),
                format!("{} is required for group {}", f.key(), v.group.code()),
            ));
        }
    }
    for f in should {
        if !has(v, *f) {
            out.push(Issue::new(
                Warning,
                *f,
                "recommended",
                format!("{} sebaiknya diisi untuk kelompok {}", f.key(), v.group.code()),
                format!("{} should be recorded for group {}", f.key(), v.group.code()),
            ));
        }
    }
    if let (Some(sys), Some(dia)) = (int(v, Field::BpSystolic), int(v, Field::BpDiastolic))
        && dia >= sys
    {
        out.push(Issue::new(
            Error,
            Field::BpDiastolic,
            "diastolic_not_below_systolic",
            format!("Tekanan darah diastolik ({dia}) harus lebih rendah dari sistolik ({sys})"),
            format!("Diastolic pressure ({dia}) must be below systolic ({sys})"),
        ));
    }
    if let Some(weeks) = int(v, Field::GestationalWeeks)
        && weeks > 42
    {
        out.push(Issue::new(
            Warning,
            Field::GestationalWeeks,
            "unusual",
            format!("Usia kehamilan {weeks} minggu tidak biasa"),
            format!("A gestational age of {weeks} weeks is unusual"),
        ));
    }
    if v.group == LifeGroup::Balita {
        check_growth(v, session_date, &mut out);
        check_vitamin_a(v, session_date, &mut out);
    }
    for antigen in v.immunisations.keys() {
        let known = crate::report::SCHEDULE.iter().any(|(d, _)| d == antigen)
            || KNOWN_EXTRA_ANTIGENS.contains(&antigen.as_str());
        if !known {
            out.push(Issue::new(
                Severity::Warning,
                Field::Notes,
                "unknown_antigen",
                format!("Kode imunisasi {antigen:?} tidak ada di jadwal nasional"),
                format!("Immunisation code {antigen:?} is not in the national schedule"),
            ));
        }
    }
    if let Some(prev) = previous {
        check_change(v, session_date, prev, &mut out);
    }
    out
}

/// Antigens given outside the routine schedule table: JE where endemic, and catch-up codes.
const KNOWN_EXTRA_ANTIGENS: [&str; 3] = ["JE", "HPV-1", "HPV-2"];

/// Vitamin A: from 6 months, blue capsule (100,000 IU) at 6-11 months, red (200,000 IU) at
/// 12-59 months, in the February and August rounds.
fn check_vitamin_a(v: &Visit, on: time::Date, out: &mut Vec<Issue>) {
    let Some(capsule) = v.vitamin_a else { return };
    let months = age_months(v.birth_date, on);
    if months < 6 {
        out.push(Issue::new(
            Severity::Error,
            Field::VitaminA,
            "vitamin_a_too_young",
            "Vitamin A tidak diberikan sebelum umur 6 bulan".into(),
            "Vitamin A is not given before 6 months of age".into(),
        ));
        return;
    }
    let right = if months < 12 { crate::record::VitaminA::Blue } else { crate::record::VitaminA::Red };
    if capsule != right {
        out.push(Issue::new(
            Severity::Warning,
            Field::VitaminA,
            "vitamin_a_wrong_capsule",
            format!("Umur {months} bulan mendapat kapsul {}, bukan {}", capsule.code(), right.code()),
            format!("At {months} months the capsule is {}, not {}", right.code(), capsule.code()),
        ));
    }
    if !matches!(on.month(), time::Month::February | time::Month::August) {
        out.push(Issue::new(
            Severity::Warning,
            Field::VitaminA,
            "vitamin_a_outside_round",
            "Vitamin A biasanya diberikan pada bulan Februari dan Agustus".into(),
            "Vitamin A is normally given in the February and August rounds".into(),
        ));
    }
}

/// A child's measurements against the WHO standards: beyond WHO's implausibility limits is an
/// error (a 40 kg infant), beyond +-3 SD a warning; both on the z-score rounded as WHO rounds it,
/// so a z of 3.004 is no more unusual here than in WHO Anthro.
fn check_growth(v: &Visit, session_date: time::Date, out: &mut Vec<Issue>) {
    let m = Measurement::of_visit(v, session_date);
    let z = growth::zscores(&m);
    let checks = [
        ("wfa", Field::WeightG, z.wfa, "berat badan menurut umur", "weight-for-age"),
        ("lhfa", Field::LengthMm, z.lhfa, "panjang/tinggi badan menurut umur", "length/height-for-age"),
        ("wflh", Field::WeightG, z.wflh, "berat badan menurut panjang/tinggi", "weight-for-length/height"),
        ("hcfa", Field::HeadCircMm, z.hcfa, "lingkar kepala menurut umur", "head circumference-for-age"),
        ("muacfa", Field::MuacMm, z.muacfa, "LiLA menurut umur", "MUAC-for-age"),
    ];
    for (code, field, value, id, en) in checks {
        let Some(zv) = value else { continue };
        if z.is_flagged(code) {
            out.push(Issue::new(
                Severity::Error,
                field,
                "implausible",
                format!("Nilai {id} tidak mungkin (z = {zv:.1}); periksa ulang pengukuran"),
                format!("Implausible {en} (z = {zv:.1}); check the measurement"),
            ));
        } else if growth::who_rounded(zv).abs() > 3.0 {
            out.push(Issue::new(
                Severity::Warning,
                field,
                "unusual",
                format!("Nilai {id} tidak biasa (z = {zv:.1}); pastikan benar"),
                format!("Unusual {en} (z = {zv:.1}); please confirm"),
            ));
        }
    }
}

/// Against the same person's previous measurement: a child does not shrink.
fn check_change(v: &Visit, session_date: time::Date, prev: &Previous, out: &mut Vec<Issue>) {
    let months = age_months(prev.date, session_date).max(1);
    if let (Some(now), Some(before)) = (v.length_mm, prev.length_mm)
        && v.group == LifeGroup::Balita
    {
        let shrink = before - now;
        // Lying vs standing differs by 7 mm and measuring is imprecise: allow some slack.
        if shrink > 30 {
            out.push(Issue::new(
                Severity::Error,
                Field::LengthMm,
                "length_decreased",
                format!("Panjang/tinggi turun {} cm sejak {}; anak tidak memendek", shrink as f64 / 10.0, prev.date),
                format!("Length/height fell {} cm since {}; children do not shrink", shrink as f64 / 10.0, prev.date),
            ));
        } else if shrink > 10 {
            out.push(Issue::new(
                Severity::Warning,
                Field::LengthMm,
                "length_decreased",
                format!("Panjang/tinggi turun {} cm sejak {}; ukur ulang", shrink as f64 / 10.0, prev.date),
                format!("Length/height fell {} cm since {}; measure again", shrink as f64 / 10.0, prev.date),
            ));
        }
    }
    if let (Some(now), Some(before)) = (v.weight_g, prev.weight_g)
        && before > 0
        && (before - now) * 100 > before * 20 * months.min(3)
    {
        out.push(Issue::new(
            Severity::Warning,
            Field::WeightG,
            "weight_dropped",
            format!("Berat badan turun lebih dari 20% sejak {}; pastikan benar dan pertimbangkan rujukan", prev.date),
            format!("Weight fell by more than 20% since {}; confirm and consider referral", prev.date),
        ));
    }
}

/// How far a session's date may lie after the server's today before it is impossible.
pub const SESSION_AHEAD_DAYS_MAX: i64 = 92;

/// What the server checks of a merged visit: the errors that depend on the visit alone (its
/// values' types and hard bounds, required fields, dates, WHO implausibility), never on other
/// records the device may not have seen (the previous measurement). A visit with any is kept
/// (nothing is lost) but marked invalid: left out of reports and listed for review.
pub fn intrinsic_visit(v: &Visit, session_date: time::Date, today: time::Date) -> Vec<Issue> {
    let mut out: Vec<Issue> = Vec::new();
    // A phone's clock may be off by days or weeks; a session a quarter ahead of the
    // server's clock is not a clock error but an impossible date.
    if session_date > today + time::Duration::days(SESSION_AHEAD_DAYS_MAX) {
        out.push(Issue {
            field: "date",
            code: "session_in_future",
            severity: Severity::Error,
            message_id: "Tanggal sesi posyandu di masa depan".into(),
            message_en: "The posyandu session's date is in the future".into(),
        });
    }
    for (field, value) in visit_values(v) {
        if let Err(en) = field.validate(&value) {
            out.push(Issue::new(
                Severity::Error,
                field,
                "out_of_range",
                format!("Nilai {} tidak mungkin atau salah jenis", field.key()),
                en,
            ));
        }
    }
    out.extend(check_visit(v, session_date, None).into_iter().filter(|i| i.severity == Severity::Error));
    out
}

/// What the server checks of a merged registration (see [`intrinsic_visit`]).
pub fn intrinsic_person(p: &crate::record::Person, today: time::Date) -> Vec<Issue> {
    match p.check_field(today) {
        Ok(()) => Vec::new(),
        Err((field, message)) => {
            let (en, id) = message.split_once(" / ").unwrap_or((message.as_str(), message.as_str()));
            vec![Issue {
                field,
                code: "invalid_registration",
                severity: Severity::Error,
                message_id: id.to_owned(),
                message_en: en.to_owned(),
            }]
        }
    }
}

/// Every field value a visit holds, typed.
fn visit_values(v: &Visit) -> Vec<(Field, FieldValue)> {
    let int = |f: Field, x: Option<i64>| x.map(|x| (f, FieldValue::Int(x)));
    let mut out: Vec<(Field, FieldValue)> = [
        int(Field::WeightG, v.weight_g),
        int(Field::LengthMm, v.length_mm),
        int(Field::HeadCircMm, v.head_circ_mm),
        int(Field::MuacMm, v.muac_mm),
        Some((Field::Name, FieldValue::Text(v.name.clone()))),
        Some((Field::Notes, FieldValue::Text(v.notes.clone()))),
    ]
    .into_iter()
    .flatten()
    .collect();
    out.extend(v.services.iter().map(|(f, x)| (*f, x.clone())));
    out
}

/// Whether any issue blocks the capture.
pub fn has_errors(issues: &[Issue]) -> bool {
    issues.iter().any(|i| i.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{DeviceId, PersonId, VisitId};
    use crate::record::Sex;
    use std::collections::BTreeMap;
    use time::macros::date;

    const ON: time::Date = date!(2026 - 11 - 23);

    fn child(months_old: i64, weight_g: Option<i64>, length_mm: Option<i64>) -> Visit {
        Visit {
            visit_id: VisitId::new_random(),
            person_id: PersonId::new_random(),
            name: "Anak".into(),
            sex: Sex::Female,
            birth_date: ON - time::Duration::days(months_old * 30 + 5),
            weight_g,
            length_mm,
            lying: Some(months_old < 24),
            head_circ_mm: None,
            muac_mm: None,
            immunisations: BTreeMap::new(),
            vitamin_a: None,
            notes: String::new(),
            group: LifeGroup::Balita,
            services: BTreeMap::new(),
            recorded_by: DeviceId::new_random(),
            recorded_at: 0,
        }
    }

    fn adult(group: LifeGroup, sex: Sex, years: i64, services: &[(Field, i64)]) -> Visit {
        let mut v = child(0, Some(55_000), Some(1_550));
        v.group = group;
        v.sex = sex;
        v.birth_date = ON - time::Duration::days(years * 365 + 30);
        v.services = services.iter().map(|(f, i)| (*f, FieldValue::Int(*i))).collect();
        v
    }

    fn codes(issues: &[Issue]) -> Vec<(&'static str, &'static str, Severity)> {
        issues.iter().map(|i| (i.field, i.code, i.severity)).collect()
    }

    /// (case, visit, previous measurement, expected (field, code, severity) issues).
    type Row = (&'static str, Visit, Option<Previous>, Vec<(&'static str, &'static str, Severity)>);

    /// The table of cases.
    #[test]
    fn validation_table_per_group() {
        use LifeGroup::*;
        use Severity::*;
        let prev = |days_ago: i64, w: i64, l: i64| Previous {
            date: ON - time::Duration::days(days_ago),
            weight_g: Some(w),
            length_mm: Some(l),
        };
        let bp = [(Field::BpSystolic, 118), (Field::BpDiastolic, 76)];
        let mut future = child(6, Some(7_500), Some(660));
        future.birth_date = ON + time::Duration::days(3);
        let cases: Vec<Row> = vec![
            ("a normal 12-month-old", child(12, Some(9_000), Some(740)), None, vec![]),
            (
                "a 40 kg infant",
                child(6, Some(40_000), Some(660)),
                None,
                vec![("weight_g", "implausible", Error), ("weight_g", "implausible", Error)],
            ),
            (
                "a heavy but possible toddler",
                child(24, Some(17_500), Some(860)),
                None,
                vec![("weight_g", "unusual", Warning), ("weight_g", "unusual", Warning)],
            ),
            ("birth date in the future", future, None, vec![("birth_date", "birth_date_in_future", Error)]),
            ("a child weighed without weight", child(10, None, Some(720)), None, vec![("weight_g", "required", Error)]),
            ("no length: recommended", child(10, Some(8_500), None), None, vec![("length_mm", "recommended", Warning)]),
            (
                "shrank 10 cm in a month",
                child(20, Some(10_500), Some(740)),
                Some(prev(30, 10_300, 840)),
                vec![("length_mm", "length_decreased", Error)],
            ),
            (
                "shrank 1.5 cm: measure again",
                child(20, Some(10_500), Some(825)),
                Some(prev(30, 10_300, 840)),
                vec![("length_mm", "length_decreased", Warning)],
            ),
            (
                "lost a quarter of its weight",
                child(20, Some(7_900), Some(840)),
                Some(prev(30, 10_500, 835)),
                vec![("weight_g", "unusual", Warning), ("weight_g", "weight_dropped", Warning)],
            ),
            (
                "pregnant woman, all measured",
                {
                    let mut v = adult(
                        IbuHamil,
                        Sex::Female,
                        27,
                        &[(Field::BpSystolic, 110), (Field::BpDiastolic, 70), (Field::GestationalWeeks, 24)],
                    );
                    v.muac_mm = Some(250);
                    v
                },
                None,
                vec![],
            ),
            (
                "pregnant woman without blood pressure",
                {
                    let mut v = adult(IbuHamil, Sex::Female, 27, &[(Field::GestationalWeeks, 24)]);
                    v.muac_mm = Some(250);
                    v
                },
                None,
                vec![("bp_systolic", "required", Error), ("bp_diastolic", "required", Error)],
            ),
            (
                "a pregnant man",
                {
                    let mut v = adult(
                        IbuHamil,
                        Sex::Male,
                        27,
                        &[(Field::BpSystolic, 110), (Field::BpDiastolic, 70), (Field::GestationalWeeks, 24)],
                    );
                    v.muac_mm = Some(250);
                    v
                },
                None,
                vec![("group", "group_does_not_fit", Error)],
            ),
            (
                "gestation of 44 weeks",
                {
                    let mut v = adult(
                        IbuHamil,
                        Sex::Female,
                        30,
                        &[(Field::BpSystolic, 110), (Field::BpDiastolic, 70), (Field::GestationalWeeks, 44)],
                    );
                    v.muac_mm = Some(250);
                    v
                },
                None,
                vec![("gestational_weeks", "unusual", Warning)],
            ),
            (
                "adult, diastolic above systolic",
                adult(
                    UsiaProduktif,
                    Sex::Male,
                    45,
                    &[(Field::BpSystolic, 80), (Field::BpDiastolic, 120), (Field::WaistMm, 900)],
                ),
                None,
                vec![("bp_diastolic", "diastolic_not_below_systolic", Error)],
            ),
            (
                "adult without waist",
                adult(UsiaProduktif, Sex::Male, 45, &bp),
                None,
                vec![("waist_mm", "recommended", Warning)],
            ),
            (
                "an elderly visit filed as adult",
                adult(UsiaProduktif, Sex::Female, 70, &bp),
                None,
                vec![("group", "group_does_not_fit", Error), ("waist_mm", "recommended", Warning)],
            ),
            (
                "elderly, complete",
                adult(
                    Lansia,
                    Sex::Female,
                    70,
                    &[(Field::BpSystolic, 150), (Field::BpDiastolic, 90), (Field::WaistMm, 850)],
                ),
                None,
                vec![],
            ),
        ];
        let mut failures = Vec::new();
        for (name, visit, previous, expected) in &cases {
            let got = codes(&check_visit(visit, ON, previous.as_ref()));
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let mut want = expected.clone();
            want.sort();
            if got_sorted != want {
                failures.push(format!("{name}: got {got:?}, want {want:?}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn every_issue_speaks_both_languages() {
        let issues = check_visit(&child(6, Some(40_000), None), ON, None);
        assert!(!issues.is_empty());
        for i in issues {
            assert!(!i.message_id.is_empty() && !i.message_en.is_empty());
            assert_ne!(i.message_id, i.message_en);
        }
    }
}

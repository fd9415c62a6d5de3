//! Typed records carried in documents.
//!
//! Measurements are stored as integers in their smallest clinical unit (grams, millimetres)
//! so that every replica compares and merges exact values; display converts.

use crate::ids::{DeviceId, PersonId, VisitId};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Sex {
    #[serde(rename = "F")]
    Female,
    #[serde(rename = "M")]
    Male,
}

impl Sex {
    pub fn code(self) -> &'static str {
        match self {
            Sex::Female => "F",
            Sex::Male => "M",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "F" | "P" => Some(Sex::Female),
            "M" | "L" => Some(Sex::Male),
            _ => None,
        }
    }
}

/// Vitamin A capsule given at this visit (February and August rounds).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VitaminA {
    /// 100,000 IU, infants 6-11 months.
    Blue,
    /// 200,000 IU, children 12-59 months.
    Red,
}

impl VitaminA {
    pub fn code(self) -> &'static str {
        match self {
            VitaminA::Blue => "blue",
            VitaminA::Red => "red",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "blue" => Some(VitaminA::Blue),
            "red" => Some(VitaminA::Red),
            _ => None,
        }
    }
}

/// The life-cycle group (siklus hidup) a visit is recorded under, per the ILP posyandu.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LifeGroup {
    /// Babies and toddlers, 0-59 months (bayi dan balita).
    Balita,
    /// Pregnant women (ibu hamil).
    IbuHamil,
    /// Mothers after birth, up to 42 days (ibu nifas).
    IbuNifas,
    /// School age, 5-9 years (anak usia sekolah).
    UsiaSekolah,
    /// Adolescents, 10-18 years (remaja).
    Remaja,
    /// Adults of working age, 19-59 years (usia produktif).
    UsiaProduktif,
    /// The elderly, 60 years and over (lansia).
    Lansia,
}

impl LifeGroup {
    pub const ALL: [LifeGroup; 7] = [
        LifeGroup::Balita,
        LifeGroup::IbuHamil,
        LifeGroup::IbuNifas,
        LifeGroup::UsiaSekolah,
        LifeGroup::Remaja,
        LifeGroup::UsiaProduktif,
        LifeGroup::Lansia,
    ];

    pub fn code(self) -> &'static str {
        match self {
            LifeGroup::Balita => "balita",
            LifeGroup::IbuHamil => "ibu_hamil",
            LifeGroup::IbuNifas => "ibu_nifas",
            LifeGroup::UsiaSekolah => "usia_sekolah",
            LifeGroup::Remaja => "remaja",
            LifeGroup::UsiaProduktif => "usia_produktif",
            LifeGroup::Lansia => "lansia",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        LifeGroup::ALL.into_iter().find(|g| g.code() == s)
    }

    /// The group by age alone (pregnancy and the weeks after birth are stated, not derived).
    pub fn by_age(birth: time::Date, on: time::Date) -> Self {
        match age_months(birth, on) {
            m if m < 60 => LifeGroup::Balita,
            m if m < 120 => LifeGroup::UsiaSekolah,
            m if m < 228 => LifeGroup::Remaja,
            m if m < 720 => LifeGroup::UsiaProduktif,
            _ => LifeGroup::Lansia,
        }
    }

    /// Whether a person of this age and sex can be in this group at all.
    pub fn fits(self, sex: Sex, birth: time::Date, on: time::Date) -> bool {
        let months = age_months(birth, on);
        match self {
            LifeGroup::IbuHamil | LifeGroup::IbuNifas => sex == Sex::Female && (120..=660).contains(&months),
            other => other == LifeGroup::by_age(birth, on),
        }
    }
}

/// Completed months between `birth` and `on` (negative if `on` is before `birth`).
pub fn age_months(birth: time::Date, on: time::Date) -> i64 {
    let months = (i64::from(on.year()) - i64::from(birth.year())) * 12 + i64::from(u8::from(on.month()))
        - i64::from(u8::from(birth.month()));
    if on.day() < birth.day() { months - 1 } else { months }
}

/// Whole days between `birth` and `on` (WHO's age for the growth standards).
pub fn age_days(birth: time::Date, on: time::Date) -> i64 {
    (on - birth).whole_days()
}

/// The largest value a Unix-seconds timestamp (`recorded_at`, `registered_at`) may hold:
/// 10^11 seconds is the year 5138. Anything above is a clock in milliseconds (Automerge's
/// change time and JavaScript's `Date` count milliseconds; 2026 is about 1.8 * 10^12 ms).
pub const UNIX_SECONDS_MAX: i64 = 100_000_000_000;

/// Check that `value` of the timestamp `key` reads as Unix seconds, not milliseconds.
pub fn check_unix_seconds(key: &str, value: i64) -> Result<(), String> {
    if value > UNIX_SECONDS_MAX {
        return Err(format!(
            "{key} must be Unix seconds; a value above {UNIX_SECONDS_MAX} (the year 5138) is milliseconds"
        ));
    }
    Ok(())
}

/// One visit at a posyandu session, for any life-cycle group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Visit {
    pub visit_id: VisitId,
    pub person_id: PersonId,
    pub name: String,
    pub sex: Sex,
    pub birth_date: time::Date,
    pub weight_g: Option<i64>,
    /// Length (lying, under 2 years) or height (standing), see `lying`.
    pub length_mm: Option<i64>,
    pub lying: Option<bool>,
    pub head_circ_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    /// Antigen code (e.g. `BCG`, `DPT-HB-Hib-1`) to the date it was given.
    pub immunisations: BTreeMap<String, time::Date>,
    pub vitamin_a: Option<VitaminA>,
    pub notes: String,
    /// Schema 2. A visit written before it has none and reads as its group by age.
    pub group: LifeGroup,
    /// Schema 2: the group's measurements and services beyond the child fields above, by
    /// [`Field`] (blood pressure, gestational age, iron tablets, screening answers, ...).
    pub services: BTreeMap<Field, FieldValue>,
    pub recorded_by: DeviceId,
    /// Unix seconds on the recording device's clock.
    pub recorded_at: i64,
}

/// One person (sasaran) in a posyandu's registry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Person {
    pub person_id: PersonId,
    pub name: String,
    pub sex: Sex,
    pub birth_date: time::Date,
    pub mother_name: String,
    /// National id (NIK), 16 digits, when known.
    pub nik: Option<String>,
    /// The mother's NIK: how a newborn without its own NIK is identified.
    pub mother_nik: Option<String>,
    /// Street, hamlet (dusun) or house description, down to the RT/RW below.
    pub address: String,
    /// Rukun Tetangga and Rukun Warga numbers.
    pub rt: Option<i64>,
    pub rw: Option<i64>,
    /// Pregnant now (makes the person an `IbuHamil` whatever the age group).
    pub pregnant: bool,
    /// Holds a KIA book / growth card (K of SKDN).
    pub kia_book: bool,
    /// Set when an admin found this person registered twice: the person kept. Nothing is
    /// deleted; this person's visits count as the kept person's.
    pub merged_into: Option<PersonId>,
    pub registered_by: DeviceId,
    pub registered_at: i64,
}

impl Person {
    /// The person's life-cycle group on `on`: pregnancy first, else by age.
    pub fn group(&self, on: time::Date) -> LifeGroup {
        if self.pregnant && self.sex == Sex::Female {
            LifeGroup::IbuHamil
        } else {
            LifeGroup::by_age(self.birth_date, on)
        }
    }

    /// What makes a registration impossible: malformed NIKs, RT/RW out of range, a child
    /// identified by neither its own NIK nor its mother's, a birth date after `today`.
    pub fn check(&self, today: time::Date) -> Result<(), String> {
        self.check_field(today).map_err(|(_, message)| message)
    }

    /// [`Person::check`], naming the field at fault.
    pub fn check_field(&self, today: time::Date) -> Result<(), (&'static str, String)> {
        let nik_ok = |n: &str| n.len() == 16 && n.bytes().all(|b| b.is_ascii_digit());
        if self.nik.as_deref().is_some_and(|n| !nik_ok(n)) {
            return Err(("nik", "nik must be 16 digits / NIK harus 16 angka".into()));
        }
        if self.mother_nik.as_deref().is_some_and(|n| !nik_ok(n)) {
            return Err(("mother_nik", "mother_nik must be 16 digits / NIK ibu harus 16 angka".into()));
        }
        if self.birth_date > today {
            return Err(("birth_date", "birth_date is in the future / tanggal lahir di masa depan".into()));
        }
        if self.nik.is_none() && self.mother_nik.is_none() && age_months(self.birth_date, today) < 17 * 12 {
            return Err((
                "nik",
                "a child needs its NIK or its mother's NIK / anak perlu NIK sendiri atau NIK ibu".into(),
            ));
        }
        for (what, v) in [("rt", self.rt), ("rw", self.rw)] {
            if v.is_some_and(|n| !(1..=999).contains(&n)) {
                return Err((what, format!("{what} must be 1-999 / {} harus 1-999", what.to_uppercase())));
            }
        }
        if self.address.chars().count() > 500 {
            return Err(("address", "address is longer than 500 characters / alamat lebih dari 500 huruf".into()));
        }
        Ok(())
    }
}

/// The editable fields of a visit: the unit of a field-level edit and of a conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Name,
    Sex,
    BirthDate,
    WeightG,
    LengthMm,
    Lying,
    HeadCircMm,
    MuacMm,
    VitaminA,
    Notes,
    // ---- schema 2: the life-cycle groups ----
    Group,
    /// Has a growth card / KIA book (K of SKDN).
    GrowthCard,
    Oedema,
    ExclusiveBf,
    Deworming,
    Referred,
    GestationalWeeks,
    BpSystolic,
    BpDiastolic,
    IronTablets,
    /// Danger signs seen (pregnancy, after birth), comma-separated codes.
    DangerSigns,
    /// Haemoglobin, g/L (anaemia screening).
    HbGL,
    BloodSugarMgDl,
    WaistMm,
    TbSymptoms,
    /// Chronic lung disease screening (PUMA questionnaire) score, 0-10.
    PumaScore,
    /// Mental health screening (SRQ-20) score, 0-20.
    Srq20Score,
    /// Elderly daily-living independence (Barthel ADL index), 0-20.
    AdlScore,
    /// Step 5 of the posyandu day: counselling given (nutrition, feeding, health).
    Counselled,
}

/// How a field's value is typed in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldKind {
    Int { min: i64, max: i64 },
    Text { len_max: usize },
    Bool,
    Date,
    Sex,
    VitaminA,
    Group,
}

impl Field {
    /// A value a person or an app gave as text, read as this field's kind: a whole number for
    /// measurements and counts, `true`/`false` for yes/no, text otherwise. `None`: the text is
    /// not of that kind (ranges are checked later, by [`Field::validate`]).
    pub fn parse_value(self, text: &str) -> Option<FieldValue> {
        match self.kind() {
            FieldKind::Int { .. } => text.trim().parse().ok().map(FieldValue::Int),
            FieldKind::Bool => match text.trim() {
                "true" => Some(FieldValue::Bool(true)),
                "false" => Some(FieldValue::Bool(false)),
                _ => None,
            },
            _ => Some(FieldValue::Text(text.to_owned())),
        }
    }

    /// Fields held in [`Visit::services`] (schema 2), not in named struct members.
    pub const SERVICES: [Field; 18] = [
        Field::GrowthCard,
        Field::Oedema,
        Field::ExclusiveBf,
        Field::Deworming,
        Field::Referred,
        Field::GestationalWeeks,
        Field::BpSystolic,
        Field::BpDiastolic,
        Field::IronTablets,
        Field::DangerSigns,
        Field::HbGL,
        Field::BloodSugarMgDl,
        Field::WaistMm,
        Field::TbSymptoms,
        Field::PumaScore,
        Field::Srq20Score,
        Field::AdlScore,
        Field::Counselled,
    ];

    /// The fields of schema 1 and the group: named members of [`Visit`].
    pub const BASE: [Field; 11] = [
        Field::Name,
        Field::Sex,
        Field::BirthDate,
        Field::WeightG,
        Field::LengthMm,
        Field::Lying,
        Field::HeadCircMm,
        Field::MuacMm,
        Field::VitaminA,
        Field::Notes,
        Field::Group,
    ];

    /// Every field: [`Field::BASE`] then [`Field::SERVICES`].
    pub const ALL: [Field; 29] = {
        let mut all = [Field::Name; 29];
        let mut i = 0;
        while i < Field::BASE.len() {
            all[i] = Field::BASE[i];
            i += 1;
        }
        while i < all.len() {
            all[i] = Field::SERVICES[i - Field::BASE.len()];
            i += 1;
        }
        all
    };

    /// The key of this field in the visit's Automerge map. Part of the document format.
    pub fn key(self) -> &'static str {
        match self {
            Field::Name => "name",
            Field::Sex => "sex",
            Field::BirthDate => "birth_date",
            Field::WeightG => "weight_g",
            Field::LengthMm => "length_mm",
            Field::Lying => "lying",
            Field::HeadCircMm => "head_circ_mm",
            Field::MuacMm => "muac_mm",
            Field::VitaminA => "vitamin_a",
            Field::Notes => "notes",
            Field::Group => "group",
            Field::GrowthCard => "growth_card",
            Field::Oedema => "oedema",
            Field::ExclusiveBf => "exclusive_bf",
            Field::Deworming => "deworming",
            Field::Referred => "referred",
            Field::GestationalWeeks => "gestational_weeks",
            Field::BpSystolic => "bp_systolic",
            Field::BpDiastolic => "bp_diastolic",
            Field::IronTablets => "iron_tablets",
            Field::DangerSigns => "danger_signs",
            Field::HbGL => "hb_g_l",
            Field::BloodSugarMgDl => "blood_sugar_mg_dl",
            Field::WaistMm => "waist_mm",
            Field::TbSymptoms => "tb_symptoms",
            Field::PumaScore => "puma_score",
            Field::Srq20Score => "srq20_score",
            Field::AdlScore => "adl_score",
            Field::Counselled => "counselled",
        }
    }

    pub fn from_key(key: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.key() == key)
    }

    /// Hard bounds: values outside are impossible, not merely unusual. Clinical plausibility
    /// (z-scores, growth between visits) is a separate, softer check.
    pub fn kind(self) -> FieldKind {
        match self {
            Field::Name => FieldKind::Text { len_max: 200 },
            Field::Notes => FieldKind::Text { len_max: 4000 },
            Field::Sex => FieldKind::Sex,
            Field::BirthDate => FieldKind::Date,
            Field::WeightG => FieldKind::Int { min: 300, max: 250_000 },
            Field::LengthMm => FieldKind::Int { min: 200, max: 2_500 },
            Field::Lying => FieldKind::Bool,
            Field::HeadCircMm => FieldKind::Int { min: 150, max: 700 },
            Field::MuacMm => FieldKind::Int { min: 50, max: 600 },
            Field::VitaminA => FieldKind::VitaminA,
            Field::Group => FieldKind::Group,
            Field::GrowthCard
            | Field::Oedema
            | Field::ExclusiveBf
            | Field::Deworming
            | Field::Referred
            | Field::TbSymptoms
            | Field::Counselled => FieldKind::Bool,
            Field::GestationalWeeks => FieldKind::Int { min: 1, max: 45 },
            Field::BpSystolic => FieldKind::Int { min: 50, max: 300 },
            Field::BpDiastolic => FieldKind::Int { min: 20, max: 200 },
            Field::IronTablets => FieldKind::Int { min: 0, max: 200 },
            Field::DangerSigns => FieldKind::Text { len_max: 500 },
            Field::HbGL => FieldKind::Int { min: 20, max: 250 },
            Field::BloodSugarMgDl => FieldKind::Int { min: 10, max: 1_000 },
            Field::WaistMm => FieldKind::Int { min: 300, max: 2_500 },
            Field::PumaScore => FieldKind::Int { min: 0, max: 10 },
            Field::Srq20Score => FieldKind::Int { min: 0, max: 20 },
            Field::AdlScore => FieldKind::Int { min: 0, max: 20 },
        }
    }

    /// Check a value against this field's type and hard bounds.
    pub fn validate(self, value: &FieldValue) -> Result<(), String> {
        match (self.kind(), value) {
            (_, FieldValue::Null) => Ok(()),
            (FieldKind::Int { min, max }, FieldValue::Int(v)) => {
                if (min..=max).contains(v) {
                    Ok(())
                } else {
                    Err(format!("{} must be between {min} and {max}, got {v}", self.key()))
                }
            }
            (FieldKind::Text { len_max }, FieldValue::Text(s)) => {
                if s.chars().count() <= len_max {
                    Ok(())
                } else {
                    Err(format!("{} is longer than {len_max} characters", self.key()))
                }
            }
            (FieldKind::Bool, FieldValue::Bool(_)) => Ok(()),
            (FieldKind::Date, FieldValue::Text(s)) => {
                parse_date(s).map(|_| ()).ok_or_else(|| format!("{} must be a YYYY-MM-DD date, got {s:?}", self.key()))
            }
            (FieldKind::Sex, FieldValue::Text(s)) => {
                Sex::parse(s).map(|_| ()).ok_or_else(|| format!("{} must be F or M, got {s:?}", self.key()))
            }
            (FieldKind::Group, FieldValue::Text(s)) => LifeGroup::parse(s)
                .map(|_| ())
                .ok_or_else(|| format!("{} must be a life-cycle group code, got {s:?}", self.key())),
            (FieldKind::VitaminA, FieldValue::Text(s)) => {
                VitaminA::parse(s).map(|_| ()).ok_or_else(|| format!("{} must be blue or red, got {s:?}", self.key()))
            }
            (kind, v) => Err(format!("{} expects {kind:?}, got {v:?}", self.key())),
        }
    }
}

/// A scalar as stored in a visit field.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldValue {
    Null,
    Bool(bool),
    Int(i64),
    Text(String),
}

impl std::fmt::Display for FieldValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FieldValue::Null => f.write_str("(empty)"),
            FieldValue::Bool(b) => write!(f, "{b}"),
            FieldValue::Int(i) => write!(f, "{i}"),
            FieldValue::Text(s) => write!(f, "{s:?}"),
        }
    }
}

const DATE_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

pub fn parse_date(s: &str) -> Option<time::Date> {
    time::Date::parse(s, DATE_FORMAT).ok()
}

pub fn format_date(d: time::Date) -> String {
    d.format(DATE_FORMAT).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_keys_round_trip() {
        for f in Field::ALL {
            assert_eq!(Field::from_key(f.key()), Some(f));
        }
    }

    #[test]
    fn impossible_values_are_rejected() {
        assert!(Field::WeightG.validate(&FieldValue::Int(40_000_000)).is_err());
        assert!(Field::WeightG.validate(&FieldValue::Int(9_800)).is_ok());
        assert!(Field::WeightG.validate(&FieldValue::Text("9.8".into())).is_err());
        assert!(Field::BirthDate.validate(&FieldValue::Text("2024-02-30".into())).is_err());
        assert!(Field::Sex.validate(&FieldValue::Text("X".into())).is_err());
    }
}

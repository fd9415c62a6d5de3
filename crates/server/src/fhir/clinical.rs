//! Clinical resources of one visit: Observations (measurements with LOINC codes and UCUM
//! units, the WHO z-scores with method and interpretation) and Immunizations (one per dose).

use super::*;

pub(super) fn group_label(g: LifeGroup) -> &'static str {
    match g {
        LifeGroup::Balita => "Bayi dan balita",
        LifeGroup::IbuHamil => "Ibu hamil",
        LifeGroup::IbuNifas => "Ibu nifas",
        LifeGroup::UsiaSekolah => "Anak usia sekolah",
        LifeGroup::Remaja => "Remaja",
        LifeGroup::UsiaProduktif => "Usia produktif",
        LifeGroup::Lansia => "Lansia",
    }
}

/// One measurement's LOINC code, its display and UCUM unit, and its category.
pub(super) struct Measure {
    key: &'static str,
    loinc: &'static str,
    display: &'static str,
    unit: &'static str,
    category: &'static str,
}

pub(super) const WEIGHT: Measure =
    Measure { key: "weight", loinc: "29463-7", display: "Body weight", unit: "kg", category: "vital-signs" };
pub(super) const HEIGHT: Measure =
    Measure { key: "height", loinc: "8302-2", display: "Body height", unit: "cm", category: "vital-signs" };
pub(super) const LENGTH: Measure =
    Measure { key: "height", loinc: "8306-3", display: "Body height --lying", unit: "cm", category: "vital-signs" };
pub(super) const HEAD: Measure = Measure {
    key: "head-circumference",
    loinc: "9843-4",
    display: "Head Occipital-frontal circumference",
    unit: "cm",
    category: "vital-signs",
};
pub(super) const MUAC: Measure =
    Measure { key: "muac", loinc: "56072-2", display: "Circumference Mid upper arm", unit: "cm", category: "exam" };
pub(super) const WAIST: Measure = Measure {
    key: "waist",
    loinc: "8280-0",
    display: "Waist Circumference at umbilicus by Tape measure",
    unit: "cm",
    category: "exam",
};
pub(super) const HB: Measure = Measure {
    key: "haemoglobin",
    loinc: "718-7",
    display: "Hemoglobin [Mass/volume] in Blood",
    unit: "g/L",
    category: "laboratory",
};
pub(super) const GLUCOSE: Measure = Measure {
    key: "glucose",
    loinc: "2339-0",
    display: "Glucose [Mass/volume] in Blood",
    unit: "mg/dL",
    category: "laboratory",
};
pub(super) const GESTATION: Measure =
    Measure { key: "gestational-age", loinc: "18185-9", display: "Gestational age", unit: "wk", category: "exam" };

pub const BP_PANEL: &str = "85354-9";
pub const BP_SYSTOLIC: &str = "8480-6";
pub const BP_DIASTOLIC: &str = "8462-4";

pub(super) fn category(code: &str) -> Value {
    json!([{ "coding": [{ "system": OBSERVATION_CATEGORY, "code": code }] }])
}

pub(super) fn quantity(value: f64, unit: &str) -> Value {
    json!({ "value": value, "unit": unit, "system": UCUM, "code": unit })
}

/// What every observation of a visit shares.
pub(super) struct VisitRefs<'a> {
    pub(super) visit: &'a str,
    pub(super) patient: Value,
    pub(super) encounter: Value,
    pub(super) date: String,
}

pub(super) fn observation(at: &VisitRefs<'_>, m: &Measure, value: f64) -> (String, Value) {
    let id = resource_id("Observation", &format!("{}/{}", at.visit, m.key));
    let obs = json!({
        "resourceType": "Observation",
        "id": id,
        "status": "final",
        "category": category(m.category),
        "code": { "coding": [{ "system": LOINC, "code": m.loinc, "display": m.display }] },
        "subject": at.patient,
        "encounter": at.encounter,
        "effectiveDateTime": at.date,
        "valueQuantity": quantity(value, m.unit),
    });
    (id, obs)
}

pub(super) fn int_service(v: &Visit, f: Field) -> Option<i64> {
    match v.services.get(&f) {
        Some(FieldValue::Int(i)) => Some(*i),
        _ => None,
    }
}

/// The WHO z-scores exported, with their Indonesian display.
pub(super) const Z_INDICATORS: [(&str, &str); 6] = [
    ("wfa", "Z-skor berat badan menurut umur (BB/U)"),
    ("lhfa", "Z-skor panjang/tinggi badan menurut umur (PB/U, TB/U)"),
    ("wflh", "Z-skor berat badan menurut panjang/tinggi badan (BB/PB, BB/TB)"),
    ("bmifa", "Z-skor indeks massa tubuh menurut umur (IMT/U)"),
    ("hcfa", "Z-skor lingkar kepala menurut umur (LK/U)"),
    ("muacfa", "Z-skor lingkar lengan atas menurut umur (LiLA/U)"),
];

/// HL7's interpretation of a rounded z-score: beyond ±3 critically, beyond ±2 low or high.
pub(super) fn z_band(z: f64) -> (&'static str, &'static str) {
    match z {
        z if z < -3.0 => ("LL", "Critical low"),
        z if z < -2.0 => ("L", "Low"),
        z if z > 3.0 => ("HH", "Critical high"),
        z if z > 2.0 => ("H", "High"),
        _ => ("N", "Normal"),
    }
}

/// The measurements (by [`Measure::key`]) each z-score is computed from.
pub(super) fn z_inputs(code: &str) -> &'static [&'static str] {
    match code {
        "wfa" => &["weight"],
        "lhfa" => &["height"],
        "wflh" | "bmifa" => &["weight", "height"],
        "hcfa" => &["head-circumference"],
        _ => &["muac"],
    }
}

pub(super) fn z_observations(
    at: &VisitRefs<'_>,
    v: &Visit,
    session_date: time::Date,
    from: &BTreeMap<&'static str, String>,
) -> Vec<Value> {
    let z = growth::zscores(&Measurement::of_visit(v, session_date));
    let class = growth::classify(&z);
    let mut out = Vec::new();
    for (code, display) in Z_INDICATORS {
        let value = match code {
            "wfa" => z.wfa,
            "lhfa" => z.lhfa,
            "wflh" => z.wflh,
            "bmifa" => z.bmifa,
            "hcfa" => z.hcfa,
            _ => z.muacfa,
        };
        let Some(value) = value.filter(|v| v.is_finite()) else { continue };
        let rounded = growth::who_rounded(value);
        let mut codings = Vec::new();
        let mut text = None;
        if z.is_flagged(code) {
            codings.push(json!({ "system": system("CodeSystem/growth-flag"), "code": "implausible",
                "display": "Nilai tidak masuk akal menurut WHO (flag)" }));
            text = Some("Tidak masuk akal (WHO flag)");
        } else {
            let (band, band_display) = z_band(rounded);
            codings.push(json!({ "system": INTERPRETATION, "code": band, "display": band_display }));
            let label = match code {
                "wfa" => class.wfa.map(|s| s.label()),
                "lhfa" => class.lhfa.map(|s| s.label()),
                "wflh" => class.wflh.map(|s| s.label()),
                "bmifa" => class.bmifa.map(|s| s.label()),
                _ => None,
            };
            if let Some(label) = label {
                codings.push(json!({ "system": system("CodeSystem/permenkes-2-2020"), "code": label.code,
                    "display": label.id }));
                text = Some(label.id);
            }
        }
        let mut interpretation = json!({ "coding": codings });
        if let Some(text) = text {
            interpretation["text"] = json!(text);
        }
        out.push(json!({
            "resourceType": "Observation",
            "id": resource_id("Observation", &format!("{}/z-{code}", at.visit)),
            "status": "final",
            "category": category("exam"),
            "code": { "coding": [{ "system": system("CodeSystem/who-growth-indicator"), "code": code,
                "display": display }], "text": display },
            "subject": at.patient,
            "encounter": at.encounter,
            "effectiveDateTime": at.date,
            "valueQuantity": { "value": rounded, "unit": "SD", "system": UCUM, "code": "1" },
            "interpretation": [interpretation],
            "method": { "coding": [{ "system": system("CodeSystem/growth-method"), "code": "who-2006-lms",
                "display": "WHO Child Growth Standards 2006, metode LMS" }],
                "text": "WHO Child Growth Standards 2006 (LMS), Permenkes 2/2020" },
            "derivedFrom": z_inputs(code)
                .iter()
                .filter_map(|k| from.get(k))
                .map(|id| reference("Observation", id))
                .collect::<Vec<_>>(),
        }));
    }
    out
}

/// The measurements of one visit as Observations (and its z-scores for a child under five).
pub(super) fn visit_observations(at: &VisitRefs<'_>, v: &Visit, session_date: time::Date) -> Vec<Value> {
    let mut out = Vec::new();
    let mut measured = BTreeMap::new();
    let mut push = |m: &Measure, value: Option<f64>, out: &mut Vec<Value>, keep: bool| {
        if let Some(value) = value {
            let (id, obs) = observation(at, m, value);
            if keep {
                measured.insert(m.key, id);
            }
            out.push(obs);
        }
    };
    let cm = |mm: Option<i64>| mm.map(|mm| mm as f64 / 10.0);
    push(&WEIGHT, v.weight_g.map(|g| g as f64 / 1000.0), &mut out, true);
    push(if v.lying == Some(true) { &LENGTH } else { &HEIGHT }, cm(v.length_mm), &mut out, true);
    push(&HEAD, cm(v.head_circ_mm), &mut out, true);
    push(&MUAC, cm(v.muac_mm), &mut out, true);
    push(&WAIST, cm(int_service(v, Field::WaistMm)), &mut out, false);
    push(&HB, int_service(v, Field::HbGL).map(|x| x as f64), &mut out, false);
    push(&GLUCOSE, int_service(v, Field::BloodSugarMgDl).map(|x| x as f64), &mut out, false);
    push(&GESTATION, int_service(v, Field::GestationalWeeks).map(|x| x as f64), &mut out, false);
    let (sys, dia) = (int_service(v, Field::BpSystolic), int_service(v, Field::BpDiastolic));
    if sys.is_some() || dia.is_some() {
        let component = |code: &str, display: &str, value: i64| {
            json!({ "code": { "coding": [{ "system": LOINC, "code": code, "display": display }] },
                "valueQuantity": quantity(value as f64, "mm[Hg]") })
        };
        let mut components = Vec::new();
        components.extend(sys.map(|s| component(BP_SYSTOLIC, "Systolic blood pressure", s)));
        components.extend(dia.map(|d| component(BP_DIASTOLIC, "Diastolic blood pressure", d)));
        out.push(json!({
            "resourceType": "Observation",
            "id": resource_id("Observation", &format!("{}/blood-pressure", at.visit)),
            "status": "final",
            "category": category("vital-signs"),
            "code": { "coding": [{ "system": LOINC, "code": BP_PANEL,
                "display": "Blood pressure panel with all children optional" }] },
            "subject": at.patient,
            "encounter": at.encounter,
            "effectiveDateTime": at.date,
            "component": components,
        }));
    }
    if v.group == LifeGroup::Balita {
        out.extend(z_observations(at, v, session_date, &measured));
    }
    out
}

pub(super) fn immunizations(at: &VisitRefs<'_>, v: &Visit, session_date: time::Date, location: &Value) -> Vec<Value> {
    v.immunisations
        .iter()
        .map(|(code, given)| {
            let mut coding = vec![json!({ "system": system("CodeSystem/antigen"), "code": code,
                "display": antigen(code).map_or(code.as_str(), |a| a.0) })];
            if let Some((_, atc)) = antigen(code) {
                coding.push(json!({ "system": ATC, "code": atc }));
            }
            let (series, dose) = dose_of(code);
            let mut protocol = json!({ "series": series });
            if dose == 0 {
                protocol["doseNumberString"] = json!("0");
            } else {
                protocol["doseNumberPositiveInt"] = json!(dose);
            }
            json!({
                "resourceType": "Immunization",
                "id": resource_id("Immunization", &format!("{}/{code}", at.visit)),
                "status": "completed",
                "vaccineCode": { "coding": coding, "text": code },
                "patient": at.patient,
                "encounter": at.encounter,
                "occurrenceDateTime": format_date(*given),
                "recorded": format_date(session_date),
                // Given at this posyandu day, or copied from the KIA book (reported).
                "primarySource": *given == session_date,
                "location": location,
                "protocolApplied": [protocol],
            })
        })
        .collect()
}

//! Classes and flags as WHO's software gives them.
//!
//! WHO's `anthro` R package rounds every z-score to 2 decimals (`round(zscore, digits = 2L)` in
//! `R/z-score-helper.R` and `R/z-score-weight-for-lenhei.R`) before it flags it and before its
//! prevalences compare it with a cut-off. So a z-score a hair beyond a cut-off, which rounds onto
//! it, still falls on the inner side. Every case below sits in that sliver: its unrounded z is
//! beyond the cut-off, but by less than 0.005; each checks that first, so the case really is at
//! the boundary, and next to it a value that rounds past the cut-off keeps the outer class.

use posync_model::growth::{HeightForAgeStatus, Measurement, WeightForAgeStatus, WeightForHeightStatus, ZScores};
use posync_model::growth::{classify, zscores};
use posync_model::report::{Month, Registered, VisitFact, monthly};
use posync_model::validate::check_visit;
use posync_model::{DeviceId, LifeGroup, PersonId, PosyanduId, Sex, Visit, VisitId};
use std::collections::BTreeMap;
use time::macros::date;

const ON: time::Date = date!(2026 - 11 - 23);

/// A boy of `age_days` measured lying, weight in grams, length in millimetres.
fn boy(age_days: i64, weight_g: Option<i64>, length_mm: Option<i64>) -> ZScores {
    zscores(&Measurement {
        sex: Sex::Male,
        age_days: Some(age_days),
        weight_g,
        length_mm,
        lying: Some(true),
        head_circ_mm: None,
        muac_mm: None,
        oedema: false,
    })
}

/// `z` is beyond `cut` by less than half a hundredth: it rounds to `cut` itself.
fn just_beyond(z: f64, cut: f64) -> bool {
    let beyond = if cut < 0.0 { z < cut } else { z > cut };
    beyond && (z - cut).abs() < 0.005
}

#[test]
fn boy_of_365_days_at_7737_to_7740_g_is_normal_weight_for_age() {
    for g in [7_737, 7_740] {
        let zs = boy(365, Some(g), None);
        let z = zs.wfa.expect("wfa");
        assert!(just_beyond(z, -2.0), "{g} g: z {z} is not just below -2");
        assert_eq!(classify(&zs).wfa, Some(WeightForAgeStatus::Normal), "{g} g: z {z}");
    }
    // One gram lighter the z-score rounds to -2.01: underweight in WHO Anthro too.
    let zs = boy(365, Some(7_736), None);
    assert!(zs.wfa.expect("wfa") < -2.005);
    assert_eq!(classify(&zs).wfa, Some(WeightForAgeStatus::Underweight));
}

#[test]
fn z_rounding_to_plus_3_is_not_tall_or_obese() {
    // Length-for-age, boy of 368 days, 83.0 cm: z 3.0002.
    let zs = boy(368, None, Some(830));
    assert!(just_beyond(zs.lhfa.expect("lhfa"), 3.0));
    assert_eq!(classify(&zs).lhfa, Some(HeightForAgeStatus::Normal));
    assert_eq!(classify(&boy(368, None, Some(831))).lhfa, Some(HeightForAgeStatus::Tall));

    // Weight-for-length, boy of 365 days, 75.0 cm: 12,331-12,335 g give z 3.0006-3.0044.
    for g in [12_331, 12_335] {
        let zs = boy(365, Some(g), Some(750));
        assert!(just_beyond(zs.wflh.expect("wflh"), 3.0), "{g} g: {:?}", zs.wflh);
        assert_eq!(classify(&zs).wflh, Some(WeightForHeightStatus::Overweight), "{g} g");
    }
    assert_eq!(classify(&boy(365, Some(12_336), Some(750))).wflh, Some(WeightForHeightStatus::Obese));
}

fn boy_visit(age_days: i64, weight_g: i64) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: "Anak".into(),
        sex: Sex::Male,
        birth_date: ON - time::Duration::days(age_days),
        weight_g: Some(weight_g),
        length_mm: None,
        lying: Some(true),
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

fn weight_issue(v: &Visit) -> Option<&'static str> {
    check_visit(v, ON, None).into_iter().find(|i| i.field == "weight_g").map(|i| i.code)
}

#[test]
fn weight_for_age_rounding_to_plus_3_is_not_unusual() {
    // Boy of 365 days: 13,342-13,348 g give z 3.0004-3.0048.
    for g in [13_342, 13_348] {
        assert!(just_beyond(boy(365, Some(g), None).wfa.expect("wfa"), 3.0), "{g} g");
        assert_eq!(weight_issue(&boy_visit(365, g)), None, "{g} g");
    }
    assert_eq!(weight_issue(&boy_visit(365, 13_349)), Some("unusual"), "z 3.0055 rounds to 3.01");
}

#[test]
fn z_rounding_onto_an_implausibility_limit_is_not_flagged() {
    // Weight-for-age is flagged below -6 and above +5. Boy of 365 days: 16,058-16,064 g give
    // z 5.0002-5.0046, 4,478-4,481 g give z -6.0048 to -6.0011.
    for (g, limit) in [(16_058, 5.0), (16_064, 5.0), (4_478, -6.0), (4_481, -6.0)] {
        let zs = boy(365, Some(g), None);
        assert!(just_beyond(zs.wfa.expect("wfa"), limit), "{g} g: {:?}", zs.wfa);
        assert!(!zs.is_flagged("wfa"), "{g} g: {:?}", zs.wfa);
        assert!(classify(&zs).wfa.is_some(), "{g} g: a plausible value is classified");
        assert_eq!(weight_issue(&boy_visit(365, g)), Some("unusual"), "{g} g: unusual, not implausible");
    }
    for g in [16_065, 4_477] {
        assert!(boy(365, Some(g), None).is_flagged("wfa"), "{g} g rounds past the limit");
        assert_eq!(weight_issue(&boy_visit(365, g)), Some("implausible"), "{g} g");
    }

    // Length-for-age is flagged beyond ±6. Boy of 366 days, 61.5 cm: z -6.0045.
    let zs = boy(366, None, Some(615));
    assert!(just_beyond(zs.lhfa.expect("lhfa"), -6.0));
    assert!(!zs.is_flagged("lhfa"));
    assert_eq!(classify(&zs).lhfa, Some(HeightForAgeStatus::SeverelyStunted));
    assert!(boy(366, None, Some(614)).is_flagged("lhfa"));
}

#[test]
fn monthly_report_counts_underweight_on_the_rounded_z() {
    let p: PosyanduId = "melati-01".parse().expect("id");
    let fact = |weight_g| VisitFact {
        posyandu: p.clone(),
        session_date: ON,
        person_id: PersonId::new_random(),
        name: "Anak".into(),
        sex: Sex::Male,
        birth_date: ON - time::Duration::days(365),
        group: LifeGroup::Balita,
        weight_g: Some(weight_g),
        length_mm: None,
        lying: Some(true),
        muac_mm: None,
        oedema: false,
        growth_card: false,
        bp_systolic: None,
        bp_diastolic: None,
        immunisations: vec![],
    };
    // 7,737 g is z -2.0043 (normal, as WHO Anthro gives it); 7,736 g is z -2.0055 (underweight).
    let facts = [fact(7_737), fact(7_736)];
    let rows = monthly(Month::of(ON), &facts, &Registered::default());
    let underweight = rows[&p].underweight;
    assert_eq!((underweight.n, underweight.of), (1, 2));
}

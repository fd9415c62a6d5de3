//! The monthly report over a seeded two months in the sample district, captured on real
//! phones and synced over HTTP. The expected figures are computed in this test directly from
//! the generated data, not through the report code or SQL.

use posync_model::growth::{self, Measurement};
use posync_model::record::{age_days, age_months};
use posync_model::report::{BASIC, SCHEDULE, kbm_g};
use posync_model::{Field, FieldValue, LifeGroup, PersonId, PosyanduId, Sex};
use posync_replica::NewVisit;
use posync_testkit::{Generator, TestServer, access_token, district_server, enrolled};
use rand::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use time::macros::date;

const OCT: time::Date = date!(2026 - 10 - 14);
const NOV: time::Date = date!(2026 - 11 - 18);

/// What the test knows about each visit it captured.
#[derive(Clone)]
struct Captured {
    posyandu: PosyanduId,
    date: time::Date,
    visit: NewVisit,
}

/// Two months at one posyandu: children weighed in October and/or November, some with
/// immunisations and growth cards, pregnant women and adults in November.
fn two_months(g: &mut Generator, posyandu: &PosyanduId) -> Vec<Captured> {
    let mut out = Vec::new();
    let at = |date, visit| Captured { posyandu: posyandu.clone(), date, visit };
    for k in 0..14 {
        let mut oct = g.child_visit_on(OCT);
        oct.immunisations.clear();
        let rng = g.rng();
        oct.services.insert(Field::GrowthCard, FieldValue::Bool(rng.random_bool(0.7)));
        // A random part of the schedule, given over time (recorded at the October visit).
        for (dose, due) in SCHEDULE {
            if age_months(oct.birth_date, OCT) >= due && rng.random_bool(0.8) {
                oct.immunisations.insert(dose.to_owned(), OCT);
            }
        }
        let pattern = k % 4; // 0, 1: both months; 2: October only; 3: November only
        let mut nov = oct.clone();
        nov.immunisations.clear();
        nov.services.remove(&Field::GrowthCard);
        let gain: i64 = rng.random_range(-300..900);
        nov.weight_g = oct.weight_g.map(|w| w + gain);
        nov.length_mm = oct.length_mm.map(|l| l + rng.random_range(0..15));
        if pattern != 3 {
            out.push(at(OCT, oct));
        }
        if pattern != 2 {
            out.push(at(NOV, nov));
        }
    }
    for k in 0..3 {
        let rng = g.rng();
        let mut services = BTreeMap::from([
            (Field::BpSystolic, FieldValue::Int(rng.random_range(100..130))),
            (Field::BpDiastolic, FieldValue::Int(rng.random_range(60..85))),
            (Field::GestationalWeeks, FieldValue::Int(rng.random_range(12..38))),
        ]);
        services.insert(Field::IronTablets, FieldValue::Int(30));
        out.push(at(
            NOV,
            adult(LifeGroup::IbuHamil, Sex::Female, 20 + k * 5, Some(rng.random_range(200..280)), services),
        ));
    }
    for k in 0..4 {
        let rng = g.rng();
        let services = BTreeMap::from([
            (Field::BpSystolic, FieldValue::Int(rng.random_range(110..170))),
            (Field::BpDiastolic, FieldValue::Int(rng.random_range(70..100))),
            (Field::WaistMm, FieldValue::Int(rng.random_range(700..1000))),
        ]);
        let group = if k % 2 == 0 { LifeGroup::UsiaProduktif } else { LifeGroup::Lansia };
        let years = if group == LifeGroup::Lansia { 66 } else { 40 };
        out.push(at(NOV, adult(group, if k < 2 { Sex::Male } else { Sex::Female }, years, None, services)));
    }
    out
}

fn adult(
    group: LifeGroup,
    sex: Sex,
    years: i64,
    muac_mm: Option<i64>,
    services: BTreeMap<Field, FieldValue>,
) -> NewVisit {
    posync_testkit::adult_visit(NOV, group, sex, years, muac_mm, services)
}

/// The November figures of one posyandu, from the captured data alone.
fn expected(captured: &[Captured]) -> BTreeMap<&'static str, (u64, u64)> {
    let end = date!(2026 - 11 - 30);
    let kids: Vec<&Captured> = captured.iter().filter(|c| c.visit.group.is_none()).collect();
    let persons: BTreeSet<PersonId> = kids.iter().map(|c| c.visit.person_id).collect();
    let s = persons.len() as u64;
    let card = |id: &PersonId| {
        kids.iter().any(|c| {
            c.visit.person_id == *id && c.visit.services.get(&Field::GrowthCard) == Some(&FieldValue::Bool(true))
        })
    };
    let k = persons.iter().filter(|id| card(id)).count() as u64;
    let at = |id: &PersonId, d: time::Date| kids.iter().find(|c| c.visit.person_id == *id && c.date == d);
    let (mut d, mut n, mut t, mut o) = (0, 0, 0, 0);
    let (mut stunt, mut measured) = (0, 0);
    for id in &persons {
        let Some(now) = at(id, NOV) else { continue };
        d += 1;
        match at(id, OCT) {
            Some(before) => {
                let gain = now.visit.weight_g.unwrap_or(0) - before.visit.weight_g.unwrap_or(0);
                if gain >= kbm_g(age_months(now.visit.birth_date, NOV)) { n += 1 } else { t += 1 }
            }
            None => o += 1,
        }
        let z = growth::zscores(&Measurement {
            sex: now.visit.sex,
            age_days: Some(age_days(now.visit.birth_date, NOV)),
            weight_g: now.visit.weight_g,
            length_mm: now.visit.length_mm,
            lying: now.visit.lying,
            head_circ_mm: None,
            muac_mm: None,
            oedema: false,
        });
        if let Some(l) = z.lhfa {
            measured += 1;
            stunt += u64::from(l < -2.0);
        }
    }
    let (mut idl, mut idl_of) = (0, 0);
    for id in &persons {
        let birth = kids.iter().find(|c| c.visit.person_id == *id).map(|c| c.visit.birth_date).expect("kid");
        if (12..24).contains(&age_months(birth, end)) {
            idl_of += 1;
            let given: BTreeSet<&str> = kids
                .iter()
                .filter(|c| c.visit.person_id == *id)
                .flat_map(|c| c.visit.immunisations.keys().map(String::as_str))
                .collect();
            idl += u64::from(BASIC.iter().all(|b| given.contains(b)));
        }
    }
    let pregnant: Vec<&Captured> = captured.iter().filter(|c| c.visit.group == Some(LifeGroup::IbuHamil)).collect();
    let kek = pregnant.iter().filter(|c| c.visit.muac_mm.is_some_and(|m| m < 235)).count() as u64;
    let adults: Vec<&Captured> = captured
        .iter()
        .filter(|c| matches!(c.visit.group, Some(LifeGroup::UsiaProduktif | LifeGroup::Lansia)))
        .collect();
    let int = |c: &Captured, f| match c.visit.services.get(&f) {
        Some(FieldValue::Int(i)) => *i,
        _ => 0,
    };
    let high =
        adults.iter().filter(|c| int(c, Field::BpSystolic) >= 140 || int(c, Field::BpDiastolic) >= 90).count() as u64;
    BTreeMap::from([
        ("s", (s, 0)),
        ("k", (k, 0)),
        ("d", (d, 0)),
        ("n", (n, 0)),
        ("t", (t, 0)),
        ("o", (o, 0)),
        ("stunting", (stunt, measured)),
        ("basic_immunisation_12_23m", (idl, idl_of)),
        ("pregnant_kek", (kek, pregnant.len() as u64)),
        ("adults_high_bp", (high, adults.len() as u64)),
    ])
}

fn actual(row: &Value) -> BTreeMap<&'static str, (u64, u64)> {
    let count = |k: &str| (row[k].as_u64().expect("count"), 0);
    let ratio = |k: &str| (row[k]["n"].as_u64().expect("n"), row[k]["of"].as_u64().expect("of"));
    BTreeMap::from([
        ("s", count("s")),
        ("k", count("k")),
        ("d", count("d")),
        ("n", count("n")),
        ("t", count("t")),
        ("o", count("o")),
        ("stunting", ratio("stunting")),
        ("basic_immunisation_12_23m", ratio("basic_immunisation_12_23m")),
        ("pregnant_kek", ratio("pregnant_kek")),
        ("adults_high_bp", ratio("adults_high_bp")),
    ])
}

fn add(a: &mut BTreeMap<&'static str, (u64, u64)>, b: &BTreeMap<&'static str, (u64, u64)>) {
    for (k, (n, of)) in b {
        let e = a.entry(k).or_default();
        e.0 += n;
        e.1 += of;
    }
}

async fn get(server: &TestServer, token: &str, path: &str) -> (u16, String) {
    let resp =
        reqwest::Client::new().get(format!("{}{path}", server.url())).bearer_auth(token).send().await.expect("send");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

#[tokio::test]
async fn monthly_report_matches_figures_computed_from_the_seeded_data() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let sites = [
        ("kader-0001", "pos-hegarsari-melati-1", 11u64),
        ("kader-0032", "pos-banjar-mawar-1", 12),
        ("kader-0204", "pos-purwaharja-sakura-4", 13),
    ];
    let mut by_posyandu = BTreeMap::new();
    for (user, posyandu, seed) in sites {
        let posyandu: PosyanduId = posyandu.parse().expect("id");
        let mut r = enrolled(&server, &admin, user, &dir).await;
        let captured = two_months(&mut Generator::new(seed), &posyandu);
        for c in &captured {
            let session = r.start_session(&posyandu, c.date).expect("session");
            r.record_visit(session, c.visit.clone(), server.clock.now()).expect("capture passes validation");
        }
        r.sync_enrolled(&server.url()).await.expect("sync");
        by_posyandu.insert(posyandu, captured);
    }

    // Per posyandu, for an officer of Puskesmas Banjar 1: its 2 posyandu with data, the rest 0.
    let mut officer = enrolled(&server, &admin, "bidan-0001", &dir).await;
    officer.sync_enrolled(&server.url()).await.expect("officer sync");
    let token = access_token(&officer);
    let (status, body) = get(&server, &token, "/v1/reports/monthly?month=2026-11").await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("json");
    let rows = report["rows"].as_array().expect("rows");
    assert!(rows.len() > 20, "every posyandu of the puskesmas has a row");
    assert!(
        rows.iter().all(|r| r["unit"] != "pos-purwaharja-sakura-4"),
        "another puskesmas's posyandu is not in scope"
    );
    let mut compared = 0;
    for (posyandu, captured) in &by_posyandu {
        let Some(row) = rows.iter().find(|r| r["unit"] == posyandu.as_str()) else { continue };
        assert!(captured.iter().all(|c| &c.posyandu == posyandu));
        assert_eq!(actual(row), expected(captured), "{posyandu}");
        assert!(row["s"].as_u64().expect("s") > 0);
        compared += 1;
    }
    assert_eq!(compared, 2, "both posyandu of Puskesmas Banjar 1 with data were compared");
    let empty = rows.iter().find(|r| r["unit"] == "pos-banjar-mawar-3").expect("row");
    assert_eq!(empty["s"], 0);

    // Rolled up to puskesmas for the district admin: sums of their posyandu.
    let district = enrolled(&server, &admin, "dinkes-admin-01", &dir).await;
    let token = access_token(&district);
    let (status, body) = get(&server, &token, "/v1/reports/monthly?month=2026-11&level=puskesmas").await;
    assert_eq!(status, 200, "{body}");
    let report: Value = serde_json::from_str(&body).expect("json");
    let rows = report["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 2);
    let mut banjar = BTreeMap::new();
    add(&mut banjar, &expected(&by_posyandu[&"pos-hegarsari-melati-1".parse::<PosyanduId>().expect("id")]));
    add(&mut banjar, &expected(&by_posyandu[&"pos-banjar-mawar-1".parse::<PosyanduId>().expect("id")]));
    let row = rows.iter().find(|r| r["unit"] == "pkm-banjar-1").expect("pkm row");
    assert_eq!(actual(row), banjar);
    let s = row["s"].as_u64().expect("s") as f64;
    let d = row["d"].as_u64().expect("d") as f64;
    assert_eq!(row["d_over_s_percent"].as_f64(), Some((d * 1000.0 / s).round() / 10.0));

    // CSV of the same, and the overdue list (audited: it names children).
    let (status, csv) = get(&server, &token, "/v1/reports/monthly?month=2026-11&level=district&format=csv").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("unit,name,S,K,D,N,T,O,D/S %,N/D %"));
    assert_eq!(lines.len(), 2);
    assert!(lines[1].starts_with("\"kota-banjar\",\"Kota Banjar\","), "{}", lines[1]);
    let (status, body) = get(&server, &token, "/v1/reports/overdue?month=2026-11").await;
    assert_eq!(status, 200);
    let overdue: Value = serde_json::from_str(&body).expect("json");
    let expected_overdue: usize = by_posyandu
        .values()
        .map(|captured| {
            let kids: BTreeMap<PersonId, (time::Date, BTreeSet<String>)> =
                captured.iter().filter(|c| c.visit.group.is_none()).fold(BTreeMap::new(), |mut m, c| {
                    let e = m.entry(c.visit.person_id).or_insert((c.visit.birth_date, BTreeSet::new()));
                    e.1.extend(c.visit.immunisations.keys().cloned());
                    m
                });
            kids.values()
                .filter(|(birth, given)| {
                    let months = age_months(*birth, date!(2026 - 11 - 30));
                    SCHEDULE.iter().any(|(dose, due)| months > *due && !given.contains(*dose))
                })
                .count()
        })
        .sum();
    assert_eq!(overdue.as_array().expect("list").len(), expected_overdue);
    assert!(expected_overdue > 0, "the seeded data has children to follow up");
    let audit = posync_store::AuditStore::audit_log(&server.store, 0, 10_000).await.expect("audit");
    assert!(audit.iter().any(|e| e.action == "report_read"));

    // A kader sees only their own posyandu; a bad month is a clear error.
    let kader = enrolled(&server, &admin, "kader-0204", &dir).await;
    let token = access_token(&kader);
    let (_, body) = get(&server, &token, "/v1/reports/monthly?month=2026-11").await;
    let rows: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(rows["rows"].as_array().expect("rows").len(), 1);
    let (status, body) = get(&server, &token, "/v1/reports/monthly?month=2026-13").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_request"));
    server.stop().await;
}

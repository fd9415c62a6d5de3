//! The month page's API: `GET /v1/reports/trend` and `unit=` drill-down on
//! `GET /v1/reports/monthly`, over visits phones captured in four different months at
//! posyandu of both puskesmas of the sample district and synced over HTTP.

use posync_model::record::age_months;
use posync_model::report::SCHEDULE;
use posync_model::{Field, FieldValue, LifeGroup, PosyanduId, Sex};
use posync_replica::NewVisit;
use posync_testkit::{DISTRICT_FIXTURE, Generator, TestServer, access_token, district_server, enrolled};
use rand::Rng;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use time::macros::date;

/// Session days, one in each of four months.
const SESSIONS: [time::Date; 4] =
    [date!(2026 - 08 - 12), date!(2026 - 09 - 16), date!(2026 - 10 - 14), date!(2026 - 11 - 18)];

/// Who captures where (kader, posyandu, seed): two villages of Puskesmas Banjar 1 (one kader
/// serving two posyandu of Kelurahan Banjar) and a posyandu of Puskesmas Purwaharja 1.
const SITES: [(&str, &str, u64); 4] = [
    ("kader-0001", "pos-hegarsari-melati-1", 21),
    ("kader-0032", "pos-banjar-mawar-1", 22),
    ("kader-0032", "pos-banjar-mawar-2", 23),
    ("kader-0204", "pos-purwaharja-sakura-4", 24),
];

/// A child seen in some of the four months: weight and length drifting, doses given at the
/// first visit, a growth card now and then.
fn child_visits(g: &mut Generator) -> Vec<(time::Date, NewVisit)> {
    let mut base = g.child_visit_on(SESSIONS[0]);
    if age_months(base.birth_date, SESSIONS[3]) >= 59 {
        return Vec::new(); // would leave the balita group during the window
    }
    base.immunisations.clear();
    let mut out = Vec::new();
    let mut first = true;
    for (i, day) in SESSIONS.into_iter().enumerate() {
        let rng = g.rng();
        let grown = i as i64;
        let mut v = base.clone();
        v.weight_g = base.weight_g.map(|w| w + grown * rng.random_range(-150..450));
        v.length_mm = base.length_mm.map(|l| l + grown * rng.random_range(0..12));
        v.services.insert(Field::GrowthCard, FieldValue::Bool(rng.random_bool(0.6)));
        if !rng.random_bool(0.7) {
            continue; // did not come this month
        }
        if first {
            for (dose, due) in SCHEDULE {
                if age_months(v.birth_date, day) >= due && rng.random_bool(0.8) {
                    v.immunisations.insert(dose.to_owned(), day);
                }
            }
            first = false;
        }
        out.push((day, v));
    }
    out
}

fn adult(g: &mut Generator, day: time::Date, group: LifeGroup) -> NewVisit {
    let rng = g.rng();
    let mut services = BTreeMap::from([
        (Field::BpSystolic, FieldValue::Int(rng.random_range(105..170))),
        (Field::BpDiastolic, FieldValue::Int(rng.random_range(60..100))),
    ]);
    let (sex, years, muac_mm) = match group {
        LifeGroup::IbuHamil => {
            services.insert(Field::GestationalWeeks, FieldValue::Int(rng.random_range(12..38)));
            services.insert(Field::IronTablets, FieldValue::Int(30));
            (Sex::Female, 27, Some(rng.random_range(200..280)))
        }
        LifeGroup::Lansia => {
            services.insert(Field::WaistMm, FieldValue::Int(rng.random_range(700..1000)));
            (Sex::Male, 66, None)
        }
        _ => {
            services.insert(Field::WaistMm, FieldValue::Int(rng.random_range(700..1000)));
            (Sex::Female, 40, None)
        }
    };
    posync_testkit::adult_visit(day, group, sex, years, muac_mm, services)
}

/// Four months at one posyandu: children, and mothers and adults in two of the months.
fn four_months(seed: u64) -> Vec<(time::Date, NewVisit)> {
    let mut g = Generator::new(seed);
    let mut out: Vec<(time::Date, NewVisit)> = (0..12).flat_map(|_| child_visits(&mut g)).collect();
    for day in [SESSIONS[1], SESSIONS[3]] {
        for group in [LifeGroup::IbuHamil, LifeGroup::IbuHamil, LifeGroup::UsiaProduktif, LifeGroup::Lansia] {
            out.push((day, adult(&mut g, day, group)));
        }
    }
    out
}

struct Seeded {
    server: TestServer,
    admin: posync_server::AdminService,
    dir: tempfile::TempDir,
    /// Every name a phone recorded, to check nothing leaks into the audit log.
    names: BTreeSet<String>,
}

impl Seeded {
    /// The sample district with four months of visits captured on the kaders' phones.
    async fn new() -> Self {
        let (server, admin) = district_server(posync_proto::Limits::default()).await;
        let dir = tempfile::tempdir().expect("dir");
        let mut names = BTreeSet::new();
        let mut phones = BTreeMap::new();
        for (user, posyandu, seed) in SITES {
            if !phones.contains_key(user) {
                phones.insert(user, enrolled(&server, &admin, user, &dir).await);
            }
            let phone = phones.get_mut(user).expect("enrolled above");
            let posyandu: PosyanduId = posyandu.parse().expect("id");
            for (day, visit) in four_months(seed) {
                names.insert(visit.name.clone());
                let session = phone.start_session(&posyandu, day).expect("session");
                phone.record_visit(session, visit, server.clock.now()).expect("capture passes validation");
            }
        }
        for phone in phones.values_mut() {
            phone.sync_enrolled(&server.url()).await.expect("sync");
        }
        Self { server, admin, dir, names }
    }

    /// An access token of `user`, enrolled on a phone of its own.
    async fn token(&self, user: &str) -> String {
        access_token(&enrolled(&self.server, &self.admin, user, &self.dir).await)
    }

    async fn get(&self, token: &str, path: &str) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .get(format!("{}{path}", self.server.url()))
            .bearer_auth(token)
            .send()
            .await
            .expect("send");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn ok(&self, token: &str, path: &str) -> Value {
        let (status, body) = self.get(token, path).await;
        assert_eq!(status, 200, "{path}: {body}");
        body
    }

    async fn rows(&self, token: &str, path: &str) -> Vec<Value> {
        self.ok(token, path).await["rows"].as_array().expect("rows").clone()
    }
}

/// The figures of a monthly row or a trend entry: everything but what names it.
fn figures(v: &Value) -> BTreeMap<String, Value> {
    let naming = ["unit", "name", "kind", "parent", "month"];
    v.as_object()
        .expect("object")
        .iter()
        .filter(|(k, _)| !naming.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Counts summed over rows, ratios by numerator and denominator (as the report rolls up).
fn summed(rows: &[Value]) -> BTreeMap<String, (u64, u64)> {
    let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for row in rows {
        for (k, v) in figures(row) {
            let e = out.entry(k).or_default();
            if let Some(n) = v.as_u64() {
                e.0 += n;
            } else if v.is_object() {
                e.0 += v["n"].as_u64().expect("n");
                e.1 += v["of"].as_u64().expect("of");
            }
        }
    }
    out.retain(|k, _| !k.ends_with("_percent"));
    out
}

/// The units of `kind` directly under `parent` in the sample district.
fn fixture_children(parent: &str, kind: &str) -> BTreeSet<String> {
    let text = std::fs::read_to_string(DISTRICT_FIXTURE).expect("fixture");
    let file: Value = serde_json::from_str(&text).expect("json");
    file["units"]
        .as_array()
        .expect("units")
        .iter()
        .filter(|u| u["parent"] == parent && u["kind"] == kind)
        .map(|u| u["id"].as_str().expect("id").to_owned())
        .collect()
}

fn error_code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("(no code)")
}

#[tokio::test]
async fn each_trend_month_equals_the_monthly_row_of_that_unit_and_month() {
    let s = Seeded::new().await;
    let officer = s.token("bidan-0001").await;
    let units = [("pkm-banjar-1", "puskesmas"), ("kel-banjar", "village"), ("pos-hegarsari-melati-1", "posyandu")];
    for (unit, level) in units {
        let trend = s.ok(&officer, &format!("/v1/reports/trend?unit={unit}&month=2026-11&months=6")).await;
        assert_eq!(
            (trend["unit"].as_str(), trend["kind"].as_str(), trend["months"].as_u64()),
            (Some(unit), Some(level), Some(6))
        );
        let series = trend["series"].as_array().expect("series");
        let months: Vec<&str> = series.iter().filter_map(|p| p["month"].as_str()).collect();
        assert_eq!(months, ["2026-06", "2026-07", "2026-08", "2026-09", "2026-10", "2026-11"]);
        for point in series {
            let month = point["month"].as_str().expect("month");
            let rows = s.rows(&officer, &format!("/v1/reports/monthly?month={month}&level={level}&unit={unit}")).await;
            assert_eq!(rows.len(), 1, "{unit} {month}: one row, the unit itself");
            assert_eq!(rows[0]["unit"], unit);
            assert_eq!(figures(point), figures(&rows[0]), "{unit} {month}");
        }
        let weighed: BTreeSet<u64> = series.iter().filter_map(|p| p["d"].as_u64()).filter(|d| *d > 0).collect();
        assert!(weighed.len() >= 2, "{unit}: months with data differ from each other: {weighed:?}");
        assert_eq!(series[0]["d"], 0, "{unit}: nothing was captured in June");
    }

    // Without a unit: the caller's whole scope, which is the sum of its monthly rows; 12 by default.
    let trend = s.ok(&officer, "/v1/reports/trend?month=2026-11").await;
    assert_eq!(trend["unit"], Value::Null);
    let series = trend["series"].as_array().expect("series");
    assert_eq!(series.len(), 12);
    assert_eq!(series[0]["month"], "2025-12");
    for point in &series[8..] {
        let month = point["month"].as_str().expect("month");
        let rows = s.rows(&officer, &format!("/v1/reports/monthly?month={month}")).await;
        assert_eq!(summed(std::slice::from_ref(point)), summed(&rows), "{month}");
        assert!(point["s"].as_u64().expect("s") > 0);
    }
    s.server.stop().await;
}

#[tokio::test]
async fn drill_down_rows_are_the_children_of_the_unit_and_name_their_kind_and_parent() {
    let s = Seeded::new().await;
    let district = s.token("dinkes-admin-01").await;
    let q = "/v1/reports/monthly?month=2026-11";

    let top = s.rows(&district, &format!("{q}&level=puskesmas")).await;
    assert_eq!(top.len(), 2);
    for row in &top {
        assert_eq!((row["kind"].as_str(), row["parent"].as_str()), (Some("puskesmas"), Some("kota-banjar")), "{row}");
    }
    let district_row = s.rows(&district, &format!("{q}&level=district")).await;
    assert_eq!(district_row[0]["parent"], Value::Null, "a district is the top of the drill-down");

    // District > puskesmas > village > posyandu, each step the children of the row above.
    let mut above = top.iter().find(|r| r["unit"] == "pkm-banjar-1").expect("row").clone();
    for (level, child_kind, next) in
        [("puskesmas", "village", "kel-banjar"), ("village", "posyandu", "pos-banjar-mawar-1")]
    {
        let unit = above["unit"].as_str().expect("unit").to_owned();
        let rows = s.rows(&district, &format!("{q}&level={child_kind}&unit={unit}")).await;
        let ids: BTreeSet<String> = rows.iter().map(|r| r["unit"].as_str().expect("id").to_owned()).collect();
        let expected: BTreeSet<String> = if child_kind == "village" {
            // Villages with at least one posyandu: a report row stands for posyandu.
            fixture_children(&unit, "village")
                .into_iter()
                .filter(|v| !fixture_children(v, "posyandu").is_empty())
                .collect()
        } else {
            fixture_children(&unit, "posyandu")
        };
        assert_eq!(ids, expected, "the {child_kind} rows under {level} {unit}");
        for row in &rows {
            assert_eq!((row["kind"].as_str(), row["parent"].as_str()), (Some(child_kind), Some(unit.as_str())));
        }
        assert_eq!(summed(&rows), summed(std::slice::from_ref(&above)), "{unit}'s children add up to it");
        above = rows.iter().find(|r| r["unit"] == next).expect("next row").clone();
    }
    assert!(above["d"].as_u64().expect("d") > 0, "the posyandu reached has data");

    // Without `unit`, as before: every posyandu of the scope; the CSV keeps its columns.
    let all = s.rows(&district, q).await;
    assert_eq!(all.len(), 40);
    let (status, csv) = s.get(&district, &format!("{q}&level=village&unit=pkm-banjar-1&format=csv")).await;
    assert_eq!(status, 200);
    let csv = csv.as_str().expect("csv text");
    assert!(csv.starts_with("unit,name,S,K,D,N,T,O,D/S %,N/D %,stunting %"), "{csv}");
    assert_eq!(csv.lines().count(), 1 + fixture_children("pkm-banjar-1", "village").len());
    s.server.stop().await;
}

#[tokio::test]
async fn a_unit_outside_the_callers_scope_answers_not_found_and_shows_no_figures() {
    let s = Seeded::new().await;
    let officer = s.token("bidan-0001").await;
    let kader = s.token("kader-0001").await;
    for path in [
        "/v1/reports/monthly?month=2026-11&unit=pkm-purwaharja-1",
        "/v1/reports/monthly?month=2026-11&unit=pos-purwaharja-sakura-4",
        "/v1/reports/trend?month=2026-11&unit=pos-purwaharja-sakura-4",
        "/v1/reports/monthly?month=2026-11&unit=no-such-unit",
        "/v1/reports/trend?month=2026-11&unit=no-such-unit",
        "/v1/reports/trend?month=2026-11&unit=..%2Fetc",
    ] {
        let (status, body) = s.get(&officer, path).await;
        assert_eq!((status, error_code(&body)), (404, "not_found"), "{path}: {body}");
        assert_eq!(body["error"]["message"], "no such unit in your scope", "unknown and outside look alike");
    }

    // A unit partly in scope covers only the caller's posyandu under it.
    let own = s.rows(&officer, "/v1/reports/monthly?month=2026-11&level=puskesmas").await;
    let whole = s.rows(&officer, "/v1/reports/monthly?month=2026-11&level=district&unit=kota-banjar").await;
    assert_eq!(summed(&own), summed(&whole), "the district seen by a puskesmas officer is its puskesmas");
    let rows = s.rows(&kader, "/v1/reports/monthly?month=2026-11&unit=kel-hegarsari").await;
    let ids: Vec<&str> = rows.iter().filter_map(|r| r["unit"].as_str()).collect();
    assert_eq!(ids, ["pos-hegarsari-melati-1"], "a kader's village is their posyandu");
    let trend = s.ok(&kader, "/v1/reports/trend?month=2026-11&months=3&unit=pkm-banjar-1").await;
    let alone = s.ok(&kader, "/v1/reports/trend?month=2026-11&months=3&unit=pos-hegarsari-melati-1").await;
    let points = |t: &Value| t["series"].as_array().expect("series").iter().map(figures).collect::<Vec<_>>();
    assert_eq!(points(&trend), points(&alone), "the puskesmas trend of a kader holds their posyandu only");
    s.server.stop().await;
}

#[tokio::test]
async fn trend_months_out_of_bounds_are_refused_with_invalid_request() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let s = Seeded { server, admin, dir, names: BTreeSet::new() };
    let officer = s.token("bidan-0001").await;
    for months in ["0", "25", "-1", "1.5", "twelve", ""] {
        let path = format!("/v1/reports/trend?unit=pkm-banjar-1&month=2026-11&months={months}");
        let (status, body) = s.get(&officer, &path).await;
        assert_eq!((status, error_code(&body)), (400, "invalid_request"), "months={months}: {body}");
    }
    let (status, body) = s.get(&officer, "/v1/reports/trend?month=2026-13").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"), "{body}");
    for (months, first) in [(1, "2026-11"), (24, "2024-12")] {
        let trend = s.ok(&officer, &format!("/v1/reports/trend?unit=pkm-banjar-1&month=2026-11&months={months}")).await;
        let series = trend["series"].as_array().expect("series");
        assert_eq!((series.len(), series[0]["month"].as_str()), (months, Some(first)));
    }
    s.server.stop().await;
}

#[tokio::test]
async fn a_trend_asked_with_charts_carries_three_svg_charts_in_that_language() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let s = Seeded { server, admin, dir, names: BTreeSet::new() };
    let officer = s.token("bidan-0001").await;
    let plain = s.ok(&officer, "/v1/reports/trend?unit=pkm-banjar-1&month=2026-11").await;
    assert!(plain.get("charts").is_none(), "no charts unless asked");
    let with = s.ok(&officer, "/v1/reports/trend?unit=pkm-banjar-1&month=2026-11&charts=en").await;
    for key in ["skdn", "nutrition", "care"] {
        let svg = with["charts"][key].as_str().unwrap_or_else(|| panic!("a {key} chart: {with}"));
        assert!(svg.starts_with("<svg") && svg.contains("lang=\"en\"") && svg.contains("Nov 26"), "{key}");
    }
    let (status, body) = s.get(&officer, "/v1/reports/trend?unit=pkm-banjar-1&charts=fr").await;
    assert_eq!((status, error_code(&body)), (400, "invalid_request"), "{body}");
    s.server.stop().await;
}

#[tokio::test]
async fn a_trend_read_is_audited_with_report_month_and_unit_and_no_names() {
    let s = Seeded::new().await;
    let officer = s.token("bidan-0001").await;
    s.ok(&officer, "/v1/reports/trend?unit=kel-banjar&month=2026-10&months=4").await;
    let audit = posync_store::AuditStore::audit_log(&s.server.store, 0, 10_000).await.expect("audit");
    let reads: Vec<_> = audit.iter().filter(|e| e.action == "report_read" && e.detail["report"] == "trend").collect();
    assert_eq!(reads.len(), 1);
    let entry = reads[0];
    assert_eq!(
        entry.detail,
        serde_json::json!({ "report": "trend", "month": "2026-10", "months": 4, "unit": "kel-banjar" })
    );
    assert!(entry.actor.contains("bidan-0001"), "{}", entry.actor);
    assert_eq!(entry.district.as_deref(), Some("kota-banjar"));
    let text = serde_json::to_string(entry).expect("json");
    assert!(!s.names.is_empty());
    assert!(s.names.iter().all(|n| !text.contains(n.as_str())), "no person's name in {text}");
    s.server.stop().await;
}

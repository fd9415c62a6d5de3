//! The FHIR R4 export for SATUSEHAT (`GET /v1/export/fhir`): a seeded posyandu month with
//! every life-cycle group, immunisations, a child registered twice and merged, and a
//! resolved conflict, exported over HTTP and
//!
//! - validated by an implementation posyandu did not write (`proto/fhir/validate.py`, the
//!   Python `fhir.resources` R4B models),
//! - checked against the SATUSEHAT profile table (`proto/fhir/profile.json`),
//! - compared with the monthly report of the same unit and month,
//! - exported again: the same resources under the same ids (a re-export updates).

use posync_model::{Field, FieldValue, LifeGroup, PersonId, PosyanduId, Role, Sex};
use posync_replica::{NewPerson, NewVisit};
use posync_testkit::{Generator, Phone, TestServer, adult_visit, posyandu};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use time::macros::date;

const NOV: time::Date = date!(2026 - 11 - 16);
const OCT: time::Date = date!(2026 - 10 - 12);
const SITI_NIK: &str = "3279015002250001";
const MOTHER_NIK: &str = "3279016502950003";

use posync_testkit::api as call;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the independent validator on `bundle`: (passed, its output).
fn validate(bundle: &Value, dir: &Path, name: &str) -> (bool, String) {
    let file = dir.join(name);
    std::fs::write(&file, serde_json::to_vec_pretty(bundle).expect("json")).expect("write bundle");
    let out = std::process::Command::new("python3")
        .arg(repo().join("proto/fhir/validate.py"))
        .arg(&file)
        .output()
        .expect("python3 runs");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_ne!(
        out.status.code(),
        Some(2),
        "the FHIR validator is not installed: python3 -m pip install 'fhir.resources==7.1.0'\n{text}"
    );
    (out.status.success(), text)
}

fn person(name: &str, sex: Sex, birth: time::Date, nik: Option<&str>, mother_nik: Option<&str>) -> NewPerson {
    NewPerson {
        name: name.into(),
        sex,
        birth_date: birth,
        mother_name: "Imas Masitoh".into(),
        nik: nik.map(str::to_owned),
        mother_nik: mother_nik.map(str::to_owned),
        address: "Dusun Sukamaju".into(),
        rt: Some(3),
        rw: Some(1),
        pregnant: false,
        kia_book: true,
    }
}

fn ints(pairs: &[(Field, i64)]) -> BTreeMap<Field, FieldValue> {
    pairs.iter().map(|(f, v)| (*f, FieldValue::Int(*v))).collect()
}

/// What the test seeded, to compare the export with.
struct Seeded {
    server: TestServer,
    p: PosyanduId,
    officer: Phone,
    /// The two registrations of Siti: (kept, duplicate).
    siti: (PersonId, PersonId),
    nur: PersonId,
    /// The visit whose weight was in conflict, and the weight the officer chose.
    conflicted: (posync_model::VisitId, i64),
    /// Doses given at November visits.
    doses: usize,
    /// November visits.
    visits: usize,
}

/// A November at Posyandu Melati 01 on two kader phones.
async fn seeded_month() -> Seeded {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let (mut a, mut b) = (Phone::kader(&server, &p), Phone::kader(&server, &p));
    let now = server.clock.now();
    let siti_birth = date!(2025 - 02 - 10);
    // Siti registered on both phones (same NIK): a duplicate to merge. Nur has only her
    // mother's NIK. A pregnant woman and an elderly man are registered with their NIK.
    let siti_a = a
        .replica
        .register_person(&p, person("Siti Aisyah", Sex::Female, siti_birth, Some(SITI_NIK), Some(MOTHER_NIK)), now)
        .expect("register");
    let siti_b = b
        .replica
        .register_person(&p, person("SITI AISYAH", Sex::Female, siti_birth, Some(SITI_NIK), Some(MOTHER_NIK)), now)
        .expect("register");
    let nur_birth = date!(2026 - 06 - 01);
    let nur = a
        .replica
        .register_person(&p, person("Nur Lestari", Sex::Female, nur_birth, None, Some(MOTHER_NIK)), now)
        .expect("register");
    let mut ibu = person("Imas Masitoh", Sex::Female, date!(1995 - 05 - 25), Some(MOTHER_NIK), None);
    ibu.pregnant = true;
    let imas = a.replica.register_person(&p, ibu, now).expect("register");
    let engkos = a
        .replica
        .register_person(&p, person("Engkos", Sex::Male, date!(1958 - 01 - 07), Some("3279010701580001"), None), now)
        .expect("register");

    let (mut doses, mut visits) = (0, 0);
    let nov_a = a.replica.start_session(&p, NOV).expect("session");
    let nov_b = b.replica.start_session(&p, NOV).expect("session");
    let record = |phone: &mut Phone, session, v: NewVisit, count: &mut (usize, usize)| {
        count.0 += v.immunisations.len();
        count.1 += 1;
        phone.replica.record_visit(session, v, now).expect("the capture passes validation")
    };
    let mut tally = (0, 0);
    // Children seen in November, some immunised; one of them also seen in October.
    let mut g = Generator::new(18);
    for k in 0..8 {
        let mut v = g.child_visit_on(NOV);
        v.immunisations = v.immunisations.into_keys().map(|d| (d, NOV)).collect();
        if k == 0 {
            let oct = a.replica.start_session(&p, OCT).expect("session");
            let mut before = v.clone();
            before.weight_g = before.weight_g.map(|w| w - 400);
            before.immunisations.clear();
            a.replica.record_visit(oct, before, now).expect("october");
        }
        record(&mut a, nov_a, v, &mut tally);
    }
    // Siti weighed once under each registration; Nur weighed, given two doses.
    for (phone, session, id) in [(&mut a, nov_a, siti_a), (&mut b, nov_b, siti_b)] {
        let mut v = g.child_visit_on(NOV);
        (v.person_id, v.name, v.sex, v.birth_date) = (id, "Siti Aisyah".into(), Sex::Female, siti_birth);
        (v.weight_g, v.length_mm, v.lying, v.head_circ_mm, v.muac_mm) =
            (Some(8_600), Some(760), Some(true), None, None);
        (v.vitamin_a, v.immunisations) = (None, BTreeMap::new());
        record(phone, session, v, &mut tally);
    }
    let mut v = g.child_visit_on(NOV);
    (v.person_id, v.name, v.sex, v.birth_date) = (nur, "Nur Lestari".into(), Sex::Female, nur_birth);
    (v.weight_g, v.length_mm, v.lying, v.head_circ_mm, v.muac_mm) =
        (Some(6_900), Some(650), Some(true), Some(420), None);
    v.vitamin_a = None;
    v.immunisations = BTreeMap::from([("DPT-HB-Hib-2".into(), NOV), ("OPV-3".into(), NOV), ("HB0".into(), nur_birth)]);
    let conflicted = record(&mut a, nov_a, v, &mut tally);
    // The pregnant woman (KEK screening, blood pressure, Hb), a man of working age, and the
    // elderly man (blood pressure, glucose, waist).
    let mut hamil = adult_visit(
        NOV,
        LifeGroup::IbuHamil,
        Sex::Female,
        31,
        Some(228),
        ints(&[(Field::BpSystolic, 118), (Field::BpDiastolic, 76), (Field::GestationalWeeks, 24), (Field::HbGL, 105)]),
    );
    (hamil.person_id, hamil.name, hamil.birth_date) = (imas, "Imas Masitoh".into(), date!(1995 - 05 - 25));
    record(&mut a, nov_a, hamil, &mut tally);
    let produktif = adult_visit(
        NOV,
        LifeGroup::UsiaProduktif,
        Sex::Male,
        42,
        None,
        ints(&[(Field::BpSystolic, 150), (Field::BpDiastolic, 95), (Field::WaistMm, 960)]),
    );
    record(&mut b, nov_b, produktif, &mut tally);
    let mut lansia = adult_visit(
        NOV,
        LifeGroup::Lansia,
        Sex::Male,
        68,
        None,
        ints(&[
            (Field::BpSystolic, 132),
            (Field::BpDiastolic, 84),
            (Field::BloodSugarMgDl, 180),
            (Field::WaistMm, 900),
        ]),
    );
    (lansia.person_id, lansia.name, lansia.birth_date) = (engkos, "Engkos".into(), date!(1958 - 01 - 07));
    record(&mut b, nov_b, lansia, &mut tally);
    (doses, visits) = (doses + tally.0, visits + tally.1);
    a.sync(&server).await;
    b.sync(&server).await;
    b.sync(&server).await;

    // Both kader re-weigh Nur offline, differently: a conflict the officer resolves.
    a.replica.edit_visit(nov_a, conflicted, Field::WeightG, FieldValue::Int(7_000), now + 10).expect("edit");
    b.replica.edit_visit(nov_a, conflicted, Field::WeightG, FieldValue::Int(6_800), now + 11).expect("edit");
    a.sync(&server).await;
    b.sync(&server).await;
    let officer = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let (_, list) = call(&server, "GET", &officer.token, "/v1/conflicts", None).await;
    let list = list.as_array().expect("conflicts");
    assert_eq!(list.len(), 1, "{list:?}");
    let id = list[0]["id"].as_str().expect("id");
    let (status, _) =
        call(&server, "POST", &officer.token, &format!("/v1/conflicts/{id}/resolve"), Some(json!({"value": 6_950})))
            .await;
    assert_eq!(status, 200);
    // The officer merges Siti's second registration into the first.
    let (status, done) = call(
        &server,
        "POST",
        &officer.token,
        "/v1/duplicates/merge",
        Some(json!({"duplicate": siti_b, "keep": siti_a})),
    )
    .await;
    assert_eq!(status, 200, "{done}");
    Seeded { server, p, officer, siti: (siti_a, siti_b), nur, conflicted: (conflicted, 6_950), doses, visits }
}

fn resources<'a>(bundle: &'a Value, kind: &str) -> Vec<&'a Value> {
    bundle["entry"]
        .as_array()
        .expect("entries")
        .iter()
        .map(|e| &e["resource"])
        .filter(|r| r["resourceType"] == kind)
        .collect()
}

/// Every value at a dotted path (arrays are walked through).
fn at<'a>(v: &'a Value, path: &str) -> Vec<&'a Value> {
    let mut cur = vec![v];
    for key in path.split('.') {
        let mut next = Vec::new();
        for c in cur {
            let c = &c[key];
            match c {
                Value::Array(items) => next.extend(items.iter()),
                Value::Null => {}
                other => next.push(other),
            }
        }
        cur = next;
    }
    cur
}

/// Everything wrong with `bundle` against the profile table, as readable lines.
fn profile_violations(bundle: &Value, profile: &Value) -> Vec<String> {
    let mut out = Vec::new();
    let b = &profile["bundle"];
    if bundle["resourceType"] != b["resourceType"] || bundle["type"] != b["type"] {
        out.push(format!("bundle is {} {}", bundle["resourceType"], bundle["type"]));
    }
    let ids: BTreeSet<String> = bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            format!(
                "{}/{}",
                e["resource"]["resourceType"].as_str().unwrap_or("?"),
                e["resource"]["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    let observations = profile["observations"].as_array().expect("observation table");
    for (i, e) in bundle["entry"].as_array().into_iter().flatten().enumerate() {
        let r = &e["resource"];
        let kind = r["resourceType"].as_str().unwrap_or("?");
        let key = format!("{kind}/{}", r["id"].as_str().unwrap_or("?"));
        if e["request"]["method"] != b["request_method"] || e["request"]["url"] != key.as_str() {
            out.push(format!("entry {i}: request {} is not PUT {key}", e["request"]));
        }
        let Some(rules) = profile["resources"].get(kind) else {
            out.push(format!("entry {i}: {kind} is not in the profile"));
            continue;
        };
        for path in rules["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if at(r, path).is_empty() {
                out.push(format!("{key}: {path} is required"));
            }
        }
        for (path, allowed) in rules["values"].as_object().into_iter().flatten() {
            for v in at(r, path) {
                if !allowed.as_array().is_some_and(|a| a.contains(v)) {
                    out.push(format!("{key}: {path} = {v} is not one of {allowed}"));
                }
            }
        }
        for group in rules["one_of"].as_array().into_iter().flatten() {
            let present =
                group.as_array().into_iter().flatten().filter(|p| !at(r, p.as_str().unwrap_or("")).is_empty()).count();
            if present != 1 {
                out.push(format!("{key}: exactly one of {group} must be present"));
            }
        }
        if let Some(systems) = rules["one_of_identifier_systems"].as_array() {
            let theirs: Vec<&Value> = at(r, "identifier.system");
            let tag = &rules["unless_tagged"];
            let tagged = r["meta"]["tag"]
                .as_array()
                .is_some_and(|t| t.iter().any(|t| t["system"] == tag["system"] && t["code"] == tag["code"]));
            if theirs.iter().any(|s| systems.contains(s)) == tagged {
                out.push(format!("{key}: needs an identifier of {systems:?} or else (only then) the tag {tag}"));
            }
        }
        for (system, pattern) in rules["identifier_formats"].as_object().into_iter().flatten() {
            for id in r["identifier"].as_array().into_iter().flatten().filter(|id| &id["system"] == system) {
                let value = id["value"].as_str().unwrap_or("");
                let ok = pattern == "^[0-9]{16}$" && value.len() == 16 && value.bytes().all(|b| b.is_ascii_digit());
                if !ok {
                    out.push(format!("{key}: identifier of {system} does not match {pattern}"));
                }
            }
        }
        // Every reference resolves inside the bundle.
        for path in [
            "subject",
            "patient",
            "encounter",
            "serviceProvider",
            "managingOrganization",
            "location.location",
            "location",
            "derivedFrom",
        ] {
            for reference in at(r, &format!("{path}.reference")) {
                if !reference.as_str().is_some_and(|s| ids.contains(s)) {
                    out.push(format!("{key}: {path} {reference} is not in the bundle"));
                }
            }
        }
        if kind == "Observation" {
            let coding = &r["code"]["coding"][0];
            let Some(row) =
                observations.iter().find(|o| o["system"] == coding["system"] && o["code"] == coding["code"])
            else {
                out.push(format!("{key}: code {coding} is not in the table"));
                continue;
            };
            if let Some(unit) = row["unit"].as_str() {
                let q = &r["valueQuantity"];
                if q["system"] != "http://unitsofmeasure.org" || q["code"] != unit {
                    out.push(format!("{key}: {} must be in UCUM {unit}, is {q}", row["key"]));
                }
            }
            for (code, unit) in row["components"].as_object().into_iter().flatten() {
                for c in
                    r["component"].as_array().into_iter().flatten().filter(|c| &c["code"]["coding"][0]["code"] == code)
                {
                    if &c["valueQuantity"]["code"] != unit {
                        out.push(format!("{key}: component {code} must be in {unit}"));
                    }
                }
            }
            if let Some(method) = row["method"].as_str()
                && (r["method"]["coding"][0]["code"] != method
                    || r["interpretation"][0]["coding"].as_array().is_none_or(Vec::is_empty))
            {
                out.push(format!("{key}: a z-score needs its method ({method}) and interpretation"));
            }
        }
        if kind == "Immunization" {
            let systems: Vec<&Value> = at(r, "vaccineCode.coding.system");
            let table = profile["vaccine_systems"].as_array().expect("vaccine systems");
            if systems.is_empty() || !systems.iter().all(|s| table.contains(s)) {
                out.push(format!("{key}: vaccine code systems {systems:?} are not {table:?}"));
            }
        }
    }
    out
}

fn obs_code(r: &Value) -> &str {
    r["code"]["coding"][0]["code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_seeded_month_exports_as_a_valid_satusehat_bundle_that_agrees_with_the_report() {
    let s = seeded_month().await;
    let dir = tempfile::tempdir().expect("dir");
    let path = "/v1/export/fhir?unit=melati-01&month=2026-11";
    let (status, bundle) = call(&s.server, "GET", &s.officer.token, path, None).await;
    assert_eq!(status, 200, "{bundle}");

    // 1. An implementation posync did not write accepts it.
    let (valid, out) = validate(&bundle, dir.path(), "november.json");
    assert!(valid, "fhir.resources rejects the export:\n{out}");
    // ... and it is a real check: the same bundle with a broken resource fails.
    let mut broken = bundle.clone();
    let enc = broken["entry"]
        .as_array_mut()
        .expect("entries")
        .iter_mut()
        .find(|e| e["resource"]["resourceType"] == "Encounter")
        .expect("an encounter");
    enc["resource"].as_object_mut().expect("object").remove("class");
    enc["resource"]["period"]["start"] = json!("16/11/2026");
    let (valid, out) = validate(&broken, dir.path(), "broken.json");
    assert!(!valid && out.contains("class") && out.contains("period"), "{out}");

    // 2. The SATUSEHAT shape, from the profile table.
    let profile: Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("proto/fhir/profile.json")).expect("read the profile table"),
    )
    .expect("profile json");
    let violations = profile_violations(&bundle, &profile);
    assert!(violations.is_empty(), "{}", violations.join("\n"));

    // 3. The month's records, each once.
    let encounters = resources(&bundle, "Encounter");
    assert_eq!(encounters.len(), s.visits, "one Encounter per November visit (October's is not in it)");
    assert!(encounters.iter().all(|e| e["period"]["start"].as_str().is_some_and(|d| d.starts_with("2026-11"))));
    let immunizations = resources(&bundle, "Immunization");
    assert_eq!(immunizations.len(), s.doses, "one Immunization per dose recorded in November");
    let groups: BTreeSet<&str> = encounters.iter().filter_map(|e| e["type"][0]["coding"][0]["code"].as_str()).collect();
    assert_eq!(groups, BTreeSet::from(["balita", "ibu_hamil", "lansia", "usia_produktif"]));
    assert_eq!(resources(&bundle, "Organization").len(), 1, "the puskesmas");
    assert_eq!(resources(&bundle, "Location").len(), 1, "the posyandu");

    // The merged duplicate is one Patient, holding both her visits; the other is not there.
    let patients = resources(&bundle, "Patient");
    let id_of = |p: PersonId| posync_server::fhir::resource_id("Patient", &p.to_string());
    let siti: Vec<&&Value> =
        patients.iter().filter(|p| at(p, "identifier.value").contains(&&json!(SITI_NIK))).collect();
    assert_eq!(siti.len(), 1, "Siti registered twice exports once");
    assert_eq!(siti[0]["id"], id_of(s.siti.0));
    assert!(patients.iter().all(|p| p["id"] != id_of(s.siti.1).as_str()));
    let siti_ref = format!("Patient/{}", id_of(s.siti.0));
    assert_eq!(encounters.iter().filter(|e| e["subject"]["reference"] == siti_ref.as_str()).count(), 2);
    let nik_system = posync_server::fhir::NIK_SYSTEM;
    assert_eq!(at(siti[0], "identifier.system")[0], nik_system);

    // People seen but never registered (the eight children, the man of working age) have
    // no NIK: tagged for the submitter, and only they.
    let untagged = patients.iter().filter(|p| p["meta"]["tag"][0]["code"] == posync_server::fhir::NO_NIK_TAG).count();
    assert_eq!((patients.len(), untagged), (8 + 1 + 4, 9));

    // Nur, without a NIK: her mother's, on the Patient and as a RelatedPerson.
    let nur = patients.iter().find(|p| p["id"] == id_of(s.nur).as_str()).expect("Nur");
    assert_eq!(nur["identifier"][0]["system"], posync_server::fhir::NIK_IBU_SYSTEM);
    assert_eq!(nur["identifier"][0]["value"], MOTHER_NIK);
    assert_eq!(
        nur["address"][0]["extension"][0]["extension"],
        json!([{"url": "rt", "valueCode": "003"}, {"url": "rw", "valueCode": "001"}])
    );
    let mother = resources(&bundle, "RelatedPerson");
    assert!(mother.iter().any(|m| m["patient"]["reference"] == format!("Patient/{}", id_of(s.nur)).as_str()
        && m["identifier"][0]["system"] == nik_system
        && m["identifier"][0]["value"] == MOTHER_NIK));

    // The resolved conflict exports the officer's value.
    let obs = resources(&bundle, "Observation");
    let conflicted_encounter =
        format!("Encounter/{}", posync_server::fhir::resource_id("Encounter", &s.conflicted.0.to_string()));
    let weight = obs
        .iter()
        .find(|o| o["encounter"]["reference"] == conflicted_encounter.as_str() && obs_code(o) == "29463-7")
        .expect("Nur's weight");
    assert_eq!(weight["valueQuantity"]["value"].as_f64(), Some(s.conflicted.1 as f64 / 1000.0));
    // Her z-scores are there with WHO's method and the Permenkes status.
    let wfa = obs
        .iter()
        .find(|o| o["encounter"]["reference"] == conflicted_encounter.as_str() && obs_code(o) == "wfa")
        .expect("Nur's weight-for-age");
    assert_eq!(wfa["derivedFrom"].as_array().map(Vec::len), Some(1), "weight-for-age is from the weight alone");
    assert!(wfa["derivedFrom"].as_array().is_some_and(|d| {
        d.iter().any(|r| r["reference"] == format!("Observation/{}", weight["id"].as_str().expect("id")).as_str())
    }));
    assert!(
        at(wfa, "interpretation.coding.system")
            .iter()
            .any(|s| s.as_str().is_some_and(|s| s.ends_with("permenkes-2-2020")))
    );
    let hb0 = immunizations
        .iter()
        .find(|i| {
            i["encounter"]["reference"] == conflicted_encounter.as_str()
                && i["vaccineCode"]["coding"][0]["code"] == "HB0"
        })
        .expect("HB0");
    assert_eq!((hb0["occurrenceDateTime"].as_str(), hb0["primarySource"].as_bool()), (Some("2026-06-01"), Some(false)));
    assert_eq!(hb0["protocolApplied"][0]["doseNumberString"], "0");
    assert!(
        immunizations.iter().all(|i| at(i, "vaccineCode.coding.system").contains(&&json!(posync_server::fhir::ATC))),
        "every dose carries its WHO ATC code"
    );

    // 4. The figures equal the monthly report's for the same unit and month.
    let (status, report) =
        call(&s.server, "GET", &s.officer.token, "/v1/reports/monthly?month=2026-11&unit=melati-01", None).await;
    assert_eq!(status, 200, "{report}");
    let row = &report["rows"][0];
    let group_of: BTreeMap<String, &str> = encounters
        .iter()
        .map(|e| {
            (
                format!("Encounter/{}", e["id"].as_str().expect("id")),
                e["type"][0]["coding"][0]["code"].as_str().expect("group"),
            )
        })
        .collect();
    let subjects = |code: &str, groups: &[&str], extra: &dyn Fn(&Value) -> bool| -> usize {
        obs.iter()
            .filter(|o| obs_code(o) == code && extra(o))
            .filter(|o| {
                o["encounter"]["reference"].as_str().and_then(|e| group_of.get(e)).is_some_and(|g| groups.contains(g))
            })
            .filter_map(|o| o["subject"]["reference"].as_str())
            .collect::<BTreeSet<_>>()
            .len()
    };
    let any = |_: &Value| true;
    let plausible = |o: &Value| !at(o, "interpretation.coding.code").contains(&&json!("implausible"));
    let both_bp = |o: &Value| o["component"].as_array().is_some_and(|c| c.len() == 2);
    assert_eq!(row["d"].as_u64(), Some(subjects("29463-7", &["balita"], &any) as u64), "D = children weighed");
    assert_eq!(row["d"].as_u64(), Some(8 + 2), "eight children, Nur and Siti (once)");
    assert_eq!(row["stunting"]["of"].as_u64(), Some(subjects("lhfa", &["balita"], &plausible) as u64));
    assert_eq!(row["wasting"]["of"].as_u64(), Some(subjects("wflh", &["balita"], &plausible) as u64));
    assert_eq!(row["pregnant_kek"]["of"].as_u64(), Some(subjects("56072-2", &["ibu_hamil"], &any) as u64));
    assert_eq!(row["pregnant_kek"]["n"], 1, "MUAC 22.8 cm is KEK");
    assert_eq!(
        row["adults_high_bp"]["of"].as_u64(),
        Some(subjects("85354-9", &["usia_produktif", "lansia"], &both_bp) as u64)
    );
    let facts = posync_store::ReportStore::report_facts(
        &s.server.store,
        posync_model::Scope::new([s.p.clone()]),
        date!(2026 - 11 - 01),
        date!(2026 - 11 - 30),
    )
    .await
    .expect("facts");
    let recorded: usize = facts.iter().map(|f| f.immunisations.len()).sum();
    assert_eq!(immunizations.len(), recorded, "Immunizations = doses the report counts from");

    // 5. Exporting again gives the same resources under the same ids: a re-export updates.
    let (_, again) = call(&s.server, "GET", &s.officer.token, path, None).await;
    assert_eq!(again, bundle);
    let ids: BTreeSet<&str> =
        bundle["entry"].as_array().expect("e").iter().filter_map(|e| e["request"]["url"].as_str()).collect();
    assert_eq!(ids.len(), bundle["entry"].as_array().expect("e").len(), "no resource twice");
    s.server.stop().await;
}

#[tokio::test]
async fn the_export_is_for_staff_in_scope_and_audited() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let mut a = Phone::kader(&server, &p);
    let session = a.replica.start_session(&p, NOV).expect("session");
    a.replica.record_visit(session, Generator::new(2).child_visit_on(NOV), server.clock.now()).expect("record");
    a.sync(&server).await;
    let path = "/v1/export/fhir?unit=melati-01&month=2026-11";

    let (status, body) = call(&server, "GET", &a.token, path, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (403, Some("forbidden")), "a kader exports nothing");
    let reporter = Phone::new(&server, Role::DistrictReporter, std::slice::from_ref(&p));
    assert_eq!(call(&server, "GET", &reporter.token, path, None).await.0, 403);
    let stranger = Phone::new(&server, Role::PuskesmasOfficer, &[posyandu("mawar-02")]);
    let (status, body) = call(&server, "GET", &stranger.token, path, None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("not_found")), "another unit is not found");
    let officer = Phone::new(&server, Role::PuskesmasOfficer, std::slice::from_ref(&p));
    let (status, body) =
        call(&server, "GET", &officer.token, "/v1/export/fhir?unit=melati-01&month=2026-13", None).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("invalid_request")));

    let (status, bundle) = call(&server, "GET", &officer.token, path, None).await;
    assert_eq!(status, 200, "{bundle}");
    assert_eq!(resources(&bundle, "Encounter").len(), 1);
    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    let entry = log.iter().find(|e| e.target == "export/fhir").expect("the export is audited");
    assert_eq!(entry.action, "record_read");
    assert_eq!(entry.detail["counts"]["encounters"], 1);
    let text = serde_json::to_string(&entry.detail).expect("json");
    let name = bundle_patient_name(&bundle);
    assert!(!text.contains(&name), "the audit entry holds counts, never names");
    // An empty month is an empty bundle, not an error.
    let (status, empty) =
        call(&server, "GET", &officer.token, "/v1/export/fhir?unit=melati-01&month=2026-09", None).await;
    assert_eq!(status, 200);
    assert_eq!(empty["entry"], json!([]));
    server.stop().await;
}

fn bundle_patient_name(bundle: &Value) -> String {
    resources(bundle, "Patient")[0]["name"][0]["text"].as_str().expect("name").to_owned()
}

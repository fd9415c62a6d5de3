//! A kader's capture with the shipped CLI: register a person, record their visits again and
//! again under one identity, immunisations and vitamin A, and see what the measurements say
//! (z-scores, nutrition status, weight gain, warnings) right after the capture. The server's
//! monthly report then counts the child in SKDN's K, D and N.

mod common;

use common::District;

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn is_rfc3339(v: &serde_json::Value) -> bool {
    v.as_str().is_some_and(|s| time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok())
}

#[test]
fn a_registered_child_keeps_one_identity_across_visits_and_counts_in_skdn() {
    let district = District::start();
    district.enrol("kader-0001", "phone.sqlite");
    let registered = json(&district.ok(&[
        "kader",
        "register",
        "--replica",
        "phone.sqlite",
        "--posyandu",
        "pos-hegarsari-melati-1",
        "--name",
        "Nur Lestari",
        "--sex",
        "F",
        "--birth-date",
        "2025-06-01",
        "--mother-name",
        "Euis Nurhayati",
        "--mother-nik",
        "3279014106900001",
        "--address",
        "Jl. Melati 3",
        "--rt",
        "2",
        "--rw",
        "5",
        "--kia-book",
    ]));
    let person = registered["person"].as_str().expect("person id").to_owned();
    let people = district.ok(&["kader", "people", "--replica", "phone.sqlite"]);
    assert_eq!(json(&people)["name"], "Nur Lestari", "{people}");

    let visit = |date: &str, weight: &str, extra: &[&str]| {
        let mut args = vec!["kader", "record", "--replica", "phone.sqlite", "--person", &person, "--date", date];
        args.extend(["--weight-g", weight, "--length-mm", "770"]);
        args.extend(extra);
        district.run(&args)
    };
    let october = visit("2026-10-10", "9000", &[]);
    assert!(october.status.success(), "{}", String::from_utf8_lossy(&october.stderr));
    let november = visit("2026-11-12", "9300", &["--immunisation", "MR-1", "--vitamin-a", "red"]);
    assert!(november.status.success(), "{}", String::from_utf8_lossy(&november.stderr));

    // What the kader sees: z-scores and status, the gain since last month, the warning.
    let said = json(&String::from_utf8_lossy(&november.stdout));
    assert_eq!(said["person"], person.as_str());
    assert_eq!(said["growth"]["age_months"], 17);
    assert_eq!(said["growth"]["gained_g"], 300);
    assert_eq!(said["growth"]["weight_gain"], "N", "300 g at 17 months is at least the KBM of 200 g");
    let wfa = said["growth"]["z"]["wfa"].as_f64().expect("weight-for-age z");
    assert!((-2.0..0.0).contains(&wfa), "9.3 kg at 17 months is a little under the median: {wfa}");
    assert_eq!(said["growth"]["status"]["wfa"], "normal");
    let warned: Vec<&str> =
        said["warnings"].as_array().expect("warnings").iter().filter_map(|w| w["code"].as_str()).collect();
    assert_eq!(warned, ["vitamin_a_outside_round"], "November is not a vitamin A month");
    let screen = String::from_utf8_lossy(&november.stderr);
    for shown in
        ["Nur Lestari", "umur 17 bulan", "12 November 2026", "BB/U", "Berat badan normal", "Naik (N)", "Februari"]
    {
        assert!(screen.contains(shown), "{shown:?} not shown after the capture:\n{screen}");
    }

    // Both visits are the same person's, with their times as dates.
    let visits: Vec<serde_json::Value> =
        district.ok(&["kader", "visits", "--replica", "phone.sqlite", "--person", &person]).lines().map(json).collect();
    assert_eq!(visits.len(), 2);
    assert_eq!(visits[0]["session_date"], "2026-10-10");
    assert_eq!(visits[1]["immunisations"], "MR-1");
    assert_eq!(visits[1]["vitamin_a"], "red");
    assert!(visits.iter().all(|v| v["person_id"] == person.as_str() && is_rfc3339(&v["recorded_at"])), "{visits:?}");

    // On the server: one registered child, weighed in October and November and gaining.
    district.ok(&["kader", "sync", "--replica", "phone.sqlite"]);
    let csv = district.ok(&["report", "--db", "posync.sqlite", "monthly", "--month", "2026-11", "--csv"]);
    let row: Vec<&str> = csv
        .lines()
        .find(|l| l.starts_with("\"pos-hegarsari-melati-1\","))
        .expect("the posyandu's row")
        .split(',')
        .collect();
    let (s, k, d, n) = (row[2], row[3], row[4], row[5]);
    assert_eq!((s, k, d, n), ("1", "1", "1", "1"), "S, K, D, N of Posyandu Melati 1:\n{csv}");
    let db = rusqlite::Connection::open(district.path().join("posync.sqlite")).expect("server db");
    let given: String = db
        .query_row("SELECT given_on FROM visit_immunisations WHERE antigen = 'MR-1'", [], |r| r.get(0))
        .expect("MR-1 in the server's projection");
    assert_eq!(given, "2026-11-12");

    // The admin's device list shows when, as a date.
    let device = json(&district.ok(&["admin", "--db", "posync.sqlite", "devices"]));
    assert!(is_rfc3339(&device["enrolled_at"]) && is_rfc3339(&device["last_push_at"]), "{device}");
}

#[test]
fn an_impossible_weight_is_refused_with_the_reason_in_indonesian_and_nothing_is_recorded() {
    let dir = tempfile::tempdir().expect("dir");
    let refused = common::posync_in(
        dir.path(),
        &[
            "kader",
            "record",
            "--replica",
            "phone.sqlite",
            "--posyandu",
            "pos-hegarsari-melati-1",
            "--name",
            "Budi",
            "--sex",
            "M",
            "--birth-date",
            "2025-06-01",
            "--date",
            "2026-11-12",
            "--weight-g",
            "90000",
        ],
    );
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("weight_g") && said.contains("tidak mungkin") && said.contains("nothing was recorded"),
        "{said}"
    );
    assert_eq!(common::posync_ok(dir.path(), &["kader", "visits", "--replica", "phone.sqlite"]), "");
}

#[test]
fn a_child_with_neither_its_own_nor_its_mothers_nik_is_not_registered() {
    let dir = tempfile::tempdir().expect("dir");
    let args = [
        "kader",
        "register",
        "--replica",
        "phone.sqlite",
        "--posyandu",
        "pos-hegarsari-melati-1",
        "--name",
        "Budi",
        "--sex",
        "L",
        "--birth-date",
        "2025-06-01",
    ];
    let refused = common::posync_in(dir.path(), &args);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("NIK") && said.contains("not recorded"), "{said}");
    assert_eq!(common::posync_ok(dir.path(), &["kader", "people", "--replica", "phone.sqlite"]), "");
    let mut with_mother = args.to_vec();
    with_mother.extend(["--mother-nik", "3279014106900001"]);
    assert!(json(&common::posync_ok(dir.path(), &with_mother))["person"].is_string());
}

#[test]
fn a_visit_says_whose_it_is_or_is_not_recorded() {
    let dir = tempfile::tempdir().expect("dir");
    let nobody = common::posync_in(
        dir.path(),
        &["kader", "record", "--replica", "phone.sqlite", "--posyandu", "pos-hegarsari-melati-1", "--weight-g", "9000"],
    );
    assert!(!nobody.status.success());
    let said = String::from_utf8_lossy(&nobody.stderr);
    assert!(said.contains("--person ID") && said.contains("--name, --sex and --birth-date"), "{said}");
    let unknown = common::posync_in(
        dir.path(),
        &["kader", "record", "--replica", "phone.sqlite", "--person", "838e5cec-5586-4abb-9774-8d06aef2c85f"],
    );
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("kader people"));
}

//! A child's page over the HTTP API: found by part of the name, every visit with its
//! z-scores and status in words, doses given and overdue, three WHO charts; a kader of
//! another posyandu gets nothing; every read is audited without the child's name.

use posync_model::PosyanduId;
use posync_testkit::{DAY, Generator, access_token, api, district_server, enrolled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bidan_reads_a_childs_visits_status_doses_and_charts_in_scope_only() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let p: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let october = DAY - time::Duration::days(31);
    let mut first = Generator::new(21).child_visit_on(october);
    first.birth_date = DAY - time::Duration::days(400);
    first.name = "Siti Aminah".into();
    let mut second = first.clone();
    second.weight_g = first.weight_g.map(|g| g + 300);
    second.immunisations = [("MR-1".to_owned(), DAY)].into();
    let s1 = kader.start_session(&p, october).expect("session");
    kader.record_visit(s1, first.clone(), 1).expect("record");
    let s2 = kader.start_session(&p, DAY).expect("session");
    kader.record_visit(s2, second, 2).expect("record");
    kader.sync_enrolled(&server.url()).await.expect("sync");
    let bidan = access_token(&enrolled(&server, &admin, "bidan-0001", &dir).await);

    let (status, found) = api(&server, "GET", &bidan, "/v1/people?q=amin", None).await;
    assert_eq!(status, 200, "{found}");
    let found = found.as_array().expect("list").clone();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["name"], "Siti Aminah");
    let id = found[0]["person_id"].as_str().expect("id").to_owned();
    assert_eq!(id, first.person_id.to_string());

    let (status, child) = api(&server, "GET", &bidan, &format!("/v1/people/{id}?lang=en"), None).await;
    assert_eq!(status, 200, "{child}");
    assert_eq!(child["posyandu_name"], "Posyandu Melati 1");
    assert_eq!(child["age_months"], 13);
    let visits = child["visits"].as_array().expect("visits");
    assert_eq!(visits.len(), 2);
    assert_eq!(visits[0]["session_date"], posync_model::record::format_date(october));
    for v in visits {
        let z = v["z"]["wfa"].as_f64().expect("weight-for-age z");
        assert_eq!(z, (z * 100.0).round() / 100.0, "z as WHO rounds it");
        assert!(v["status"]["wfa"]["en"].is_string(), "the status in words: {v}");
    }
    assert_eq!(child["immunisations_given"]["MR-1"], posync_model::record::format_date(DAY));
    let overdue: Vec<&str> =
        child["immunisations_overdue"].as_array().expect("overdue").iter().filter_map(|a| a.as_str()).collect();
    assert!(!overdue.contains(&"MR-1") && overdue.contains(&"BCG"), "{overdue:?}");
    let due: Vec<&str> =
        child["immunisations_due"].as_array().expect("due").iter().filter_map(|a| a.as_str()).collect();
    assert!(due.iter().all(|d| !overdue.contains(d)), "due now and overdue never overlap: {due:?}");
    assert!(child["mother_name"].is_null(), "a walk-in child has no registered mother");
    for key in ["wfa", "lhfa", "wflh"] {
        let svg = child["charts"][key].as_str().expect("a chart");
        assert!(svg.starts_with("<svg") && svg.contains("lang=\"en\""), "{key}: {}", &svg[..svg.len().min(120)]);
        assert_eq!(svg.matches("class=\"point\"").count(), 2, "both visits on the {key} chart");
    }

    // A kader of another posyandu: as if the child did not exist.
    let other = access_token(&enrolled(&server, &admin, "kader-0006", &dir).await);
    let (status, _) = api(&server, "GET", &other, &format!("/v1/people/{id}"), None).await;
    assert_eq!(status, 404);
    let (_, none) = api(&server, "GET", &other, "/v1/people?q=amin", None).await;
    assert_eq!(none.as_array().map(Vec::len), Some(0));

    let log = posync_store::AuditStore::audit_log(&server.store, 0, 1000).await.expect("audit");
    let read = log.iter().find(|e| e.action == "record_read" && e.target == id).expect("the page read is audited");
    assert!(read.actor.starts_with("user:bidan-0001@"), "{read:?}");
    let text = serde_json::to_string(&log).expect("json");
    assert!(!text.contains("Siti Aminah") && !text.contains("amin"), "no name or query in the audit log");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_child_whose_only_visit_is_invalid_still_has_a_page_with_the_visit_marked() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let p: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
    let mut kader = enrolled(&server, &admin, "kader-0001", &dir).await;
    let mut v = Generator::new(22).child_visit();
    v.birth_date = DAY - time::Duration::days(400);
    (v.weight_g, v.length_mm, v.head_circ_mm, v.muac_mm) = (Some(9_000), Some(760), None, None);
    let person = v.person_id;
    let session = kader.start_session(&p, DAY).expect("session");
    let visit = kader.record_visit(session, v, 1).expect("record");
    // Two phones disagreeing can leave an implausible value standing; here one edit does.
    kader
        .edit_visit(session, visit, posync_model::Field::WeightG, posync_model::FieldValue::Int(2_000), 2)
        .expect("edit");
    kader.sync_enrolled(&server.url()).await.expect("sync");
    let bidan = access_token(&enrolled(&server, &admin, "bidan-0001", &dir).await);
    let (status, child) = api(&server, "GET", &bidan, &format!("/v1/people/{person}"), None).await;
    assert_eq!(status, 200, "{child}");
    let visits = child["visits"].as_array().expect("visits");
    assert_eq!(visits.len(), 1);
    assert_eq!(visits[0]["invalid"], true, "{child}");
    assert!(visits[0]["status"].as_object().is_some_and(|s| s.is_empty()), "no status from an impossible value");
    assert_eq!(child["charts"]["wfa"].as_str().map(|s| s.matches("class=\"point\"").count()), Some(0));
    server.stop().await;
}

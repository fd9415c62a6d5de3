//! The conflict queue as the web app reads it: people named (posyandu, child, kader), pages
//! that together hold every conflict once in order, an age filter on the child, the caller's
//! units with names (`/v1/me`), and signing out that revokes the device at once.

use posync_model::{Field, FieldValue, PosyanduId};
use posync_testkit::{DAY, Generator, access_token, api, district_server, enrolled};
use serde_json::Value;

fn ids(list: &Value) -> Vec<String> {
    list.as_array().expect("a list").iter().map(|c| c["id"].as_str().expect("id").to_owned()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_names_people_pages_in_order_and_filters_by_age() {
    let (server, admin) = district_server(posync_proto::Limits::default()).await;
    let dir = tempfile::tempdir().expect("dir");
    let p: PosyanduId = "pos-hegarsari-melati-1".parse().expect("id");
    let mut a = enrolled(&server, &admin, "kader-0001", &dir).await;
    let mut b = enrolled(&server, &admin, "kader-0002", &dir).await;
    let session = a.start_session(&p, DAY).expect("session");
    // Three children of 6, 16 and 32 months on the session day (the server's today).
    let mut names = Vec::new();
    let mut visits = Vec::new();
    for (seed, days) in [(11, 200), (12, 500), (13, 1000)] {
        let mut v = Generator::new(seed).child_visit();
        v.birth_date = DAY - time::Duration::days(days);
        v.weight_g = Some(9_000);
        v.length_mm = None;
        names.push(v.name.clone());
        visits.push(a.record_visit(session, v, 1).expect("record"));
    }
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    for (i, visit) in visits.iter().enumerate() {
        let grams = 9_000 + 100 * i as i64;
        a.edit_visit(session, *visit, Field::WeightG, FieldValue::Int(grams + 10), 2).expect("edit");
        b.edit_visit(session, *visit, Field::WeightG, FieldValue::Int(grams + 20), 3).expect("edit");
    }
    a.sync_enrolled(&server.url()).await.expect("sync");
    b.sync_enrolled(&server.url()).await.expect("sync");
    let bidan = enrolled(&server, &admin, "bidan-0001", &dir).await;
    let token = access_token(&bidan);

    let (status, all) = api(&server, "GET", &token, "/v1/conflicts", None).await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(ids(&all).len(), 3, "{all}");
    for c in all.as_array().expect("list") {
        assert_eq!(c["posyandu_name"], "Posyandu Melati 1");
        assert!(names.iter().any(|n| c["subject_name"] == n.as_str()), "the child is named: {c}");
        let kader: Vec<&str> =
            c["values"].as_array().expect("values").iter().filter_map(|v| v["user_name"].as_str()).collect();
        assert_eq!(kader.len(), 2, "{c}");
        assert!(kader.contains(&"Euis Nurhayati") && kader.contains(&"Nining Supriatin"), "{kader:?}");
    }

    // Pages of two: every conflict once, in the list's order.
    let (_, first) = api(&server, "GET", &token, "/v1/conflicts?limit=2", None).await;
    let (_, second) = api(&server, "GET", &token, "/v1/conflicts?limit=2&offset=2", None).await;
    assert_eq!([ids(&first), ids(&second)].concat(), ids(&all));
    let (status, refused) = api(&server, "GET", &token, "/v1/conflicts?limit=0", None).await;
    assert_eq!((status, refused["error"]["code"].as_str()), (400, Some("invalid_request")));

    // Age filters: 12-23 months holds only the 16-month-old, 24+ only the 32-month-old.
    let (_, toddlers) = api(&server, "GET", &token, "/v1/conflicts?age_months_min=12&age_months_max=24", None).await;
    let toddlers = toddlers.as_array().expect("list").clone();
    assert_eq!(toddlers.len(), 1);
    assert_eq!(toddlers[0]["subject_name"], names[1].as_str());
    let (_, older) = api(&server, "GET", &token, "/v1/conflicts?age_months_min=24", None).await;
    assert_eq!(older.as_array().map(|l| l.len()), Some(1));
    assert_eq!(older[0]["subject_name"], names[2].as_str());

    // The caller's units, named, for the app's menus.
    let (status, me) = api(&server, "GET", &token, "/v1/me", None).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["user"], "bidan-0001");
    let units = me["units"].as_array().expect("units");
    assert!(units.iter().any(|u| u["id"] == "pos-hegarsari-melati-1" && u["name"] == "Posyandu Melati 1"), "{me}");
    assert!(units.iter().any(|u| u["kind"] == "puskesmas"), "the units above the posyandu too: {me}");

    // Signing out revokes this device: its token stops working at once.
    let (status, _) = api(&server, "POST", &token, "/v1/auth/logout", None).await;
    assert_eq!(status, 204);
    let (status, body) = api(&server, "GET", &token, "/v1/conflicts", None).await;
    assert_eq!(status, 401, "{body}");
    server.stop().await;
}

//! Access control over the sample district (`fixtures/district-kota-banjar.json`): real
//! enrolment of real replicas over HTTP, a table of allowed and forbidden requests per route
//! and role, revocation, re-scoping with purges on the device, and the audit trail.
//!
//! Every forbidden case is checked to store nothing: the store's document, visit and feed
//! counts and its user list are the same after it.

use posync_model::{DeviceId, DocId, PosyanduId, Scope};
use posync_proto::{DocPush, Limits, SyncRequest, encode};
use posync_replica::{Replica, enrol};
use posync_server::{AdminCaller, AdminService};
use posync_store::StoreStats;
use posync_store::prelude::*;
use posync_testkit::{DAY, Generator, TestServer, posyandu};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/district-kota-banjar.json");

fn console() -> AdminCaller {
    AdminCaller::Console("test".into())
}

async fn district() -> (TestServer, AdminService) {
    let server = TestServer::start().await;
    let admin = AdminService::new(server.store_arc());
    let file = posync_server::parse_hierarchy(&std::fs::read_to_string(FIXTURE).expect("fixture")).expect("parses");
    let report = admin.import(&console(), file, server.clock.now()).await.expect("import");
    assert_eq!((report.units, report.users), (58, 308));
    (server, admin)
}

/// A phone enrolled over HTTP with a code the console issued for `user`.
struct Device {
    _dir: tempfile::TempDir,
    replica: Replica,
}

impl Device {
    async fn enrol(server: &TestServer, admin: &AdminService, user: &str) -> Self {
        let dir = tempfile::tempdir().expect("dir");
        let mut replica = Replica::open(dir.path().join("replica.sqlite")).expect("replica");
        let code =
            admin.issue_enrolment(&console(), user.parse().expect("id"), server.clock.now()).await.expect("code");
        enrol(&server.url(), &code.code, &format!("HP {user}"), &mut replica).await.expect("enrol");
        Self { _dir: dir, replica }
    }

    fn token(&self) -> String {
        self.replica.credential().expect("read").and_then(|c| c.access).expect("enrolled").token
    }

    fn id(&self) -> DeviceId {
        self.replica.device()
    }

    async fn sync(&mut self, server: &TestServer) -> Result<posync_replica::SyncReport, posync_replica::ReplicaError> {
        self.replica.sync_enrolled(&server.url()).await
    }

    /// Capture `n` visits at `posyandu` today; returns the session id.
    fn capture(&mut self, p: &PosyanduId, n: usize, seed: u64) -> DocId {
        let session = self.replica.start_session(p, DAY).expect("session");
        let mut g = Generator::new(seed);
        for i in 0..n {
            self.replica.record_visit(session, g.child_visit(), i as i64).expect("record");
        }
        session
    }
}

struct Http {
    client: reqwest::Client,
    base: String,
}

impl Http {
    fn new(server: &TestServer) -> Self {
        Self { client: reqwest::Client::new(), base: server.url() }
    }

    async fn send(&self, method: &str, path: &str, token: Option<&str>, body: Body) -> (u16, Value) {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        rb = match body {
            Body::None => rb,
            Body::Json(v) => rb.json(&v),
            Body::Sync(req) => rb.header("content-type", "application/cbor").body(encode(&req)),
        };
        let resp = rb.send().await.expect("send");
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.expect("body");
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }
}

#[derive(Clone)]
enum Body {
    None,
    Json(Value),
    Sync(SyncRequest),
}

async fn footprint(server: &TestServer) -> (StoreStats, usize) {
    let stats = server.store.stats().await.expect("stats");
    let users = server.store.users().await.expect("users").len();
    (stats, users)
}

fn p(id: &str) -> PosyanduId {
    posyandu(id)
}

/// One row of the table: who sends what, and what must come back.
struct Case {
    name: &'static str,
    token: Option<String>,
    method: &'static str,
    path: String,
    body: Body,
    status: u16,
    /// Stable error code for a refusal; `None` for an allowed request.
    code: Option<&'static str>,
}

fn case(
    name: &'static str,
    token: &str,
    method: &'static str,
    path: impl Into<String>,
    body: Body,
    status: u16,
    code: Option<&'static str>,
) -> Case {
    Case { name, token: Some(token.to_owned()), method, path: path.into(), body, status, code }
}

#[tokio::test]
async fn every_route_and_role_allowed_and_forbidden() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    let melati = p("pos-hegarsari-melati-1"); // under pkm-banjar-1
    let sakura = p("pos-purwaharja-sakura-4"); // under pkm-purwaharja-1

    let mut kader_banjar = Device::enrol(&server, &admin, "kader-0001").await;
    let mut kader_purwaharja = Device::enrol(&server, &admin, "kader-0204").await;
    let officer_banjar = Device::enrol(&server, &admin, "bidan-0001").await;
    let officer_purwaharja = Device::enrol(&server, &admin, "bidan-0003").await;
    let district_admin = Device::enrol(&server, &admin, "dinkes-admin-01").await;
    let reporter = Device::enrol(&server, &admin, "dinkes-laporan-01").await;
    let revoked = Device::enrol(&server, &admin, "kader-0002").await;

    // Each kader syncs a day at their own posyandu.
    let melati_doc = kader_banjar.capture(&melati, 2, 1);
    kader_banjar.sync(&server).await.expect("kader syncs own posyandu");
    let sakura_doc = kader_purwaharja.capture(&sakura, 3, 2);
    kader_purwaharja.sync(&server).await.expect("kader syncs own posyandu");
    admin.revoke_device(&console(), revoked.id(), server.clock.now()).await.expect("revoke");

    // A kader of melati captures at sakura (not theirs): the request the server must refuse.
    let foreign = kader_banjar.capture(&sakura, 1, 3);
    let push_foreign = kader_banjar.replica.prepare_sync(&Limits::default()).expect("prepare");
    assert!(push_foreign.push.iter().any(|d: &DocPush| d.doc == foreign));
    let pull = |d: &Device| Body::Sync(SyncRequest::new(d.id(), 0));
    let reporter_push = {
        let mut req = push_foreign.clone();
        req.device = reporter.id();
        Body::Sync(req)
    };
    let new_user = json!({"name": "Imas Masitoh", "role": "kader", "units": ["pos-hegarsari-melati-1"]});
    let outside_unit = json!({"name": "Imas Masitoh", "role": "kader", "units": ["pkm-banjar-1"]});
    let kb = kader_banjar.token();
    let (ob, op) = (officer_banjar.token(), officer_purwaharja.token());
    let (ad, rp, rv) = (district_admin.token(), reporter.token(), revoked.token());
    let doc = |d: DocId| format!("/v1/docs/{d}");

    let cases = vec![
        // -- sync --
        case("kader pulls own posyandu", &kb, "POST", "/v1/sync", pull(&kader_banjar), 200, None),
        case(
            "kader pushes another posyandu's session",
            &kb,
            "POST",
            "/v1/sync",
            Body::Sync(push_foreign.clone()),
            403,
            Some("forbidden"),
        ),
        case("officer pulls under own puskesmas", &ob, "POST", "/v1/sync", pull(&officer_banjar), 200, None),
        case("admin pulls the district", &ad, "POST", "/v1/sync", pull(&district_admin), 200, None),
        case("reporter pulls the district", &rp, "POST", "/v1/sync", pull(&reporter), 200, None),
        case("reporter pushes", &rp, "POST", "/v1/sync", reporter_push, 403, Some("forbidden")),
        case("revoked device syncs", &rv, "POST", "/v1/sync", pull(&revoked), 401, Some("device_revoked")),
        case(
            "another device's request under a kader token",
            &kb,
            "POST",
            "/v1/sync",
            pull(&kader_purwaharja),
            403,
            Some("device_mismatch"),
        ),
        // -- reading one document --
        case("kader reads own posyandu's doc", &kb, "GET", doc(melati_doc), Body::None, 200, None),
        case("kader reads another posyandu's doc", &kb, "GET", doc(sakura_doc), Body::None, 404, Some("not_found")),
        case("officer reads a doc under own puskesmas", &ob, "GET", doc(melati_doc), Body::None, 200, None),
        case(
            "officer reads a doc of another puskesmas",
            &ob,
            "GET",
            doc(sakura_doc),
            Body::None,
            404,
            Some("not_found"),
        ),
        case("other officer reads it", &op, "GET", doc(sakura_doc), Body::None, 200, None),
        case("reporter reads any doc of the district", &rp, "GET", doc(sakura_doc), Body::None, 200, None),
        case("revoked device reads", &rv, "GET", doc(melati_doc), Body::None, 401, Some("device_revoked")),
        // -- admin API --
        case("admin lists users", &ad, "GET", "/v1/admin/users", Body::None, 200, None),
        case("kader lists users", &kb, "GET", "/v1/admin/users", Body::None, 403, Some("forbidden")),
        case("officer lists users", &ob, "GET", "/v1/admin/users", Body::None, 403, Some("forbidden")),
        case("reporter lists users", &rp, "GET", "/v1/admin/users", Body::None, 403, Some("forbidden")),
        case(
            "kader creates a user",
            &kb,
            "PUT",
            "/v1/admin/users/kader-0999",
            Body::Json(new_user.clone()),
            403,
            Some("forbidden"),
        ),
        case(
            "officer creates a user",
            &ob,
            "PUT",
            "/v1/admin/users/kader-0999",
            Body::Json(new_user.clone()),
            403,
            Some("forbidden"),
        ),
        case(
            "admin assigns a kader to a puskesmas",
            &ad,
            "PUT",
            "/v1/admin/users/kader-0999",
            Body::Json(outside_unit),
            400,
            Some("invalid_request"),
        ),
        case(
            "admin puts a user on an unknown unit",
            &ad,
            "PUT",
            "/v1/admin/users/kader-0999",
            Body::Json(json!({"name": "X", "role": "kader", "units": ["pos-nowhere"]})),
            400,
            Some("invalid_request"),
        ),
        case(
            "kader issues an enrolment code",
            &kb,
            "POST",
            "/v1/admin/users/kader-0003/enrolments",
            Body::None,
            403,
            Some("forbidden"),
        ),
        case(
            "officer revokes a device",
            &ob,
            "POST",
            format!("/v1/admin/devices/{}/revoke", kader_banjar.id()),
            Body::None,
            403,
            Some("forbidden"),
        ),
        case("reporter reads the audit log", &rp, "GET", "/v1/admin/audit", Body::None, 403, Some("forbidden")),
        case("admin reads the audit log", &ad, "GET", "/v1/admin/audit", Body::None, 200, None),
        case("admin lists devices", &ad, "GET", "/v1/admin/devices", Body::None, 200, None),
        case(
            "admin moves a posyandu under a puskesmas (wrong level)",
            &ad,
            "PUT",
            "/v1/admin/units/pos-purwaharja-sakura-4",
            Body::Json(json!({"kind": "posyandu", "parent": "pkm-banjar-1", "name": "Posyandu Sakura 4"})),
            400,
            Some("invalid_request"),
        ),
        case(
            "admin creates a district (console only)",
            &ad,
            "PUT",
            "/v1/admin/units/kota-tasik",
            Body::Json(json!({"kind": "district", "parent": "jawa-barat", "name": "Kota Tasikmalaya"})),
            403,
            Some("forbidden"),
        ),
        // -- credentials --
        Case {
            name: "refresh with a wrong token",
            token: None,
            method: "POST",
            path: "/v1/auth/token".into(),
            body: Body::Json(json!({"device": kader_banjar.id(), "refresh_token": "psr_00"})),
            status: 401,
            code: Some("invalid_credential"),
        },
        Case {
            name: "enrol with a made-up code",
            token: None,
            method: "POST",
            path: "/v1/auth/enrol".into(),
            body: Body::Json(json!({"code": "AAAA-BBBB-CCCC", "device": DeviceId::new_random()})),
            status: 401,
            code: Some("invalid_credential"),
        },
        Case {
            name: "admin route without a token",
            token: None,
            method: "GET",
            path: "/v1/admin/users".into(),
            body: Body::None,
            status: 401,
            code: Some("unauthenticated"),
        },
        Case {
            name: "document read without a token",
            token: None,
            method: "GET",
            path: doc(melati_doc),
            body: Body::None,
            status: 401,
            code: Some("unauthenticated"),
        },
    ];

    // Forged and stale tokens of the district admin, against every authenticated route.
    let admin_claims = |key: &str, value: Value| {
        let now = server.clock.now();
        let mut c = json!({
            "iss": "posync", "aud": "posync-sync", "sub": "dinkes-admin-01", "dev": district_admin.id().to_string(),
            "role": "district_admin", "iat": now, "nbf": now, "exp": now + 600,
        });
        c[key] = value;
        c
    };
    let header = |alg: &str| {
        let h = json!({"alg": alg, "typ": "JWT", "kid": server.keys.active_kid()});
        b64url(h.to_string().as_bytes())
    };
    let forged: Vec<(&'static str, String)> = vec![
        ("expired", server.keys.sign_value(&admin_claims("exp", json!(server.clock.now() - 3600)))),
        ("wrong audience", server.keys.sign_value(&admin_claims("aud", json!("posync-admin")))),
        ("wrong issuer", server.keys.sign_value(&admin_claims("iss", json!("elsewhere")))),
        ("alg none", format!("{}.{}.", header("none"), b64url(admin_claims("iat", json!(0)).to_string().as_bytes()))),
        ("another keyset", posync_server::TokenKeys::from_seed([3; 32]).sign_value(&admin_claims("iat", json!(0)))),
        ("signature cut off", {
            let t = server.keys.sign_value(&admin_claims("iat", json!(0)));
            t[..t.rfind('.').expect("jwt") + 1].to_owned()
        }),
    ];
    let routes: Vec<(&'static str, String, Body)> = vec![
        ("POST", "/v1/sync".into(), pull(&district_admin)),
        ("GET", doc(melati_doc), Body::None),
        ("GET", "/v1/admin/users".into(), Body::None),
        ("GET", "/v1/admin/units".into(), Body::None),
        ("GET", "/v1/admin/devices".into(), Body::None),
        ("GET", "/v1/admin/audit".into(), Body::None),
        ("PUT", "/v1/admin/users/kader-0999".into(), Body::Json(new_user.clone())),
        ("POST", "/v1/admin/users/kader-0003/enrolments".into(), Body::None),
        ("POST", format!("/v1/admin/devices/{}/revoke", kader_banjar.id()), Body::None),
    ];
    let mut cases = cases;
    // Control: the same hand-made claims, unmodified, are accepted, so each forgery above
    // fails for its forgery alone.
    let control = server.keys.sign_value(&admin_claims("iat", json!(server.clock.now())));
    cases.push(case("hand-made admin claims, unmodified", &control, "GET", "/v1/admin/users", Body::None, 200, None));
    for (what, token) in &forged {
        for (method, path, body) in &routes {
            cases.push(Case {
                name: what,
                token: Some(token.clone()),
                method,
                path: path.clone(),
                body: body.clone(),
                status: 401,
                code: Some("unauthenticated"),
            });
        }
    }

    let mut failures = Vec::new();
    for c in &cases {
        let before = footprint(&server).await;
        let (status, body) = http.send(c.method, &c.path, c.token.as_deref(), c.body.clone()).await;
        let code = body["error"]["code"].as_str().map(str::to_owned);
        if status != c.status || code.as_deref() != c.code {
            failures.push(format!(
                "{} ({} {}): got {status} {code:?}, want {} {:?}",
                c.name, c.method, c.path, c.status, c.code
            ));
        }
        if c.code.is_some() && footprint(&server).await != before {
            failures.push(format!("{}: a refused request changed the store", c.name));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n  {}", failures.len(), cases.len(), failures.join("\n  "));

    // What each tablet pulled follows its puskesmas; the revoked kader's records stay.
    let mut tablet = officer_banjar;
    tablet.sync(&server).await.expect("officer sync");
    let held: Vec<String> = tablet.replica.all_visits().expect("visits").into_iter().map(|v| v.posyandu).collect();
    assert_eq!(held, vec![melati.to_string(); 2], "officer of pkm-banjar-1 holds melati's visits and nothing else");
    let mut other = officer_purwaharja;
    other.sync(&server).await.expect("officer sync");
    assert_eq!(other.replica.all_visits().expect("visits").len(), 3, "officer of pkm-purwaharja-1 holds sakura's");
    // `foreign` names sakura's session of the day (ids derive from posyandu and date): the
    // visit the melati kader recorded in it never reached the server.
    assert_eq!(foreign, sakura_doc);
    assert_eq!(server.store.stats().await.expect("stats").visits, 5, "2 at melati, 3 at sakura, none foreign");
    server.stop().await;
}

#[tokio::test]
async fn enrolment_codes_are_one_time_and_a_revoked_phone_stops_but_its_records_stay() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    let code =
        admin.issue_enrolment(&console(), "kader-0001".parse().expect("id"), server.clock.now()).await.expect("code");
    let dir = tempfile::tempdir().expect("dir");
    let mut phone = Replica::open(dir.path().join("a.sqlite")).expect("replica");
    // Codes are forgiving to type: lower case and no dashes.
    let typed = code.code.to_lowercase().replace('-', "");
    enrol(&server.url(), &typed, "HP Euis", &mut phone).await.expect("enrol");
    let mut thief = Replica::open(dir.path().join("b.sqlite")).expect("replica");
    let again = enrol(&server.url(), &code.code, "", &mut thief).await;
    let refused = |r: &Result<_, posync_replica::ReplicaError>| match r {
        Err(posync_replica::ReplicaError::Enrolment(e)) => matches!(
            **e,
            posync_replica::ReplicaError::Server { status: 401, code: posync_proto::ErrorCode::InvalidCredential, .. }
        ),
        _ => false,
    };
    assert!(refused(&again), "another device cannot reuse a code: {again:?}");
    assert!(again.as_ref().err().is_some_and(|e| e.to_string().starts_with("enrolment failed")), "{again:?}");

    // An expired code.
    let late =
        admin.issue_enrolment(&console(), "kader-0002".parse().expect("id"), server.clock.now()).await.expect("code");
    server.clock.advance(8 * 24 * 3600);
    let expired = enrol(&server.url(), &late.code, "", &mut thief).await;
    assert!(refused(&expired), "{expired:?}");

    // Offline for weeks: the access token is long expired, the refresh token is not; the
    // captured records sync after an automatic refresh.
    let melati = p("pos-hegarsari-melati-1");
    let session = phone.start_session(&melati, DAY).expect("session");
    phone.record_visit(session, Generator::new(1).child_visit(), 1).expect("record");
    server.clock.advance(30 * 24 * 3600);
    let report = phone.sync_enrolled(&server.url()).await.expect("sync after weeks offline");
    assert_eq!(report.pushed_docs, 1);
    assert_eq!(server.store.stats().await.expect("stats").visits, 1);

    // Lost phone: revoked. Its refresh and its current access token fail at once; what it
    // synced stays on the server.
    admin.revoke_device(&console(), phone.device(), server.clock.now()).await.expect("revoke");
    let cred = phone.credential().expect("read").expect("credential");
    let (status, body) = http
        .send(
            "POST",
            "/v1/auth/token",
            None,
            Body::Json(json!({"device": phone.device(), "refresh_token": cred.refresh_token})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("device_revoked")));
    phone.record_visit(session, Generator::new(2).child_visit(), 2).expect("record");
    let refused = phone.sync_enrolled(&server.url()).await;
    assert!(
        matches!(
            refused,
            Err(posync_replica::ReplicaError::Server { code: posync_proto::ErrorCode::DeviceRevoked, .. })
        ),
        "{refused:?}"
    );
    assert_eq!(server.store.stats().await.expect("stats").visits, 1, "synced records stay; nothing new taken");
    assert_eq!(phone.all_visits().expect("visits").len(), 2, "the phone keeps what it captured");
    server.stop().await;
}

#[tokio::test]
async fn rescoping_purges_on_the_device_and_keeps_unsynced_captures() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    let (melati, sakura) = (p("pos-hegarsari-melati-1"), p("pos-purwaharja-sakura-4"));
    // Someone has recorded at sakura.
    let mut other = Device::enrol(&server, &admin, "kader-0204").await;
    other.capture(&sakura, 2, 7);
    other.sync(&server).await.expect("sync");

    let mut kader = Device::enrol(&server, &admin, "kader-0001").await;
    kader.capture(&melati, 3, 1);
    kader.sync(&server).await.expect("sync");
    assert_eq!(kader.replica.scope().expect("scope"), Some(Scope::new([melati.clone()])));

    // The kader moves from melati to sakura (admin API). One session at melati is unsynced.
    let unsynced = kader.replica.start_session(&melati, DAY - time::Duration::days(1)).expect("session");
    kader.replica.record_visit(unsynced, Generator::new(9).child_visit(), 9).expect("record");
    let district_admin = Device::enrol(&server, &admin, "dinkes-admin-01").await;
    let body = json!({"name": "Euis Nurhayati", "role": "kader", "units": ["pos-purwaharja-sakura-4"]});
    let (status, _) =
        http.send("PUT", "/v1/admin/users/kader-0001", Some(&district_admin.token()), Body::Json(body)).await;
    assert_eq!(status, 204);

    let report = kader.sync(&server).await.expect("sync after re-scope");
    assert_eq!(report.rejected.len(), 1, "the unsynced melati session is refused, not lost: {report:?}");
    let visits = kader.replica.all_visits().expect("visits");
    let at = |p: &PosyanduId| visits.iter().filter(|v| v.posyandu == p.as_str()).count();
    assert_eq!(at(&sakura), 2, "the new posyandu's records arrived (cursor restarted for it)");
    assert_eq!(at(&melati), 1, "synced melati records purged; the unsynced capture kept");
    assert_eq!(kader.replica.scope().expect("scope"), Some(Scope::new([sakura.clone()])));
    assert_eq!(kader.replica.rejected().expect("rejected"), vec![(unsynced, "forbidden".to_owned())]);

    // A posyandu moving puskesmas: sakura's village goes under pkm-banjar-1. Its officers
    // gain it, the old puskesmas's officers lose it.
    let mut banjar = Device::enrol(&server, &admin, "bidan-0001").await;
    let mut purwaharja = Device::enrol(&server, &admin, "bidan-0003").await;
    banjar.sync(&server).await.expect("sync");
    purwaharja.sync(&server).await.expect("sync");
    let count = |d: &Device, p: &PosyanduId| {
        d.replica.all_visits().expect("v").iter().filter(|v| v.posyandu == p.as_str()).count()
    };
    assert_eq!((count(&banjar, &sakura), count(&purwaharja, &sakura)), (0, 2));
    let village = json!({"kind": "village", "parent": "pkm-banjar-1", "name": "Kelurahan Purwaharja"});
    let (status, body) =
        http.send("PUT", "/v1/admin/units/kel-purwaharja", Some(&district_admin.token()), Body::Json(village)).await;
    assert_eq!(status, 204, "{body}");
    banjar.sync(&server).await.expect("sync");
    purwaharja.sync(&server).await.expect("sync");
    assert_eq!((count(&banjar, &sakura), count(&purwaharja, &sakura)), (2, 0));
    server.stop().await;
}

#[tokio::test]
async fn admin_actions_and_record_reads_are_audited_and_the_log_is_append_only() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    let mut kader = Device::enrol(&server, &admin, "kader-0001").await;
    let session = kader.capture(&p("pos-hegarsari-melati-1"), 1, 1);
    kader.sync(&server).await.expect("sync");
    let mut officer = Device::enrol(&server, &admin, "bidan-0001").await;
    officer.sync(&server).await.expect("officer pulls");
    let (status, _) = http.send("GET", &format!("/v1/docs/{session}"), Some(&officer.token()), Body::None).await;
    assert_eq!(status, 200);
    admin.revoke_device(&console(), kader.id(), server.clock.now()).await.expect("revoke");

    let log = server.store.audit_log(0, 1000).await.expect("audit");
    let actions: Vec<&str> = log.iter().map(|e| e.action.as_str()).collect();
    for expected in
        ["hierarchy_imported", "enrolment_issued", "device_enrolled", "records_pulled", "record_read", "device_revoked"]
    {
        assert!(actions.contains(&expected), "no {expected} in {actions:?}");
    }
    let read = log.iter().find(|e| e.action == "record_read").expect("read entry");
    assert_eq!(read.target, session.to_string());
    assert!(read.actor.starts_with("user:bidan-0001@"), "{}", read.actor);
    // No record contents anywhere in the log: the visits' names never appear.
    let names: Vec<String> = kader.replica.all_visits().expect("v").into_iter().map(|v| v.name).collect();
    let text = serde_json::to_string(&log).expect("json");
    assert!(names.iter().all(|n| !text.contains(n.as_str())));
    // Enrolment codes are not in the log either.
    let code = admin.issue_enrolment(&console(), "kader-0005".parse().expect("id"), 0).await.expect("code");
    let text = serde_json::to_string(&server.store.audit_log(0, 1000).await.expect("audit")).expect("json");
    assert!(!text.contains(&code.code) && !text.contains(&code.code.replace('-', "")));

    // Append-only: the database itself refuses to change or delete an entry.
    let edit = server.store.write_blocking(|tx| Ok(tx.execute("UPDATE audit SET actor = 'nobody'", [])));
    assert!(edit.expect("tx").is_err(), "UPDATE on the audit log must fail");
    let delete = server.store.write_blocking(|tx| Ok(tx.execute("DELETE FROM audit", [])));
    assert!(delete.expect("tx").is_err(), "DELETE on the audit log must fail");
    server.stop().await;
}

/// RFC 4648 base64url without padding, as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn a_kader_moved_away_and_back_gets_every_document_of_her_posyandu_again() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    let (melati, sakura) = (p("pos-hegarsari-melati-1"), p("pos-purwaharja-sakura-4"));
    let district_admin = Device::enrol(&server, &admin, "dinkes-admin-01").await;
    let assign = async |to: &PosyanduId| {
        let body = json!({"name": "Euis Nurhayati", "role": "kader", "units": [to.as_str()]});
        let (status, body) =
            http.send("PUT", "/v1/admin/users/kader-0001", Some(&district_admin.token()), Body::Json(body)).await;
        assert_eq!(status, 204, "{body}");
    };
    // The kader records two sessions at melati herself; a colleague records a third.
    let mut kader = Device::enrol(&server, &admin, "kader-0001").await;
    let mine = [kader.capture(&melati, 2, 1), {
        let s = kader.replica.start_session(&melati, DAY - time::Duration::days(7)).expect("session");
        kader.replica.record_visit(s, Generator::new(2).child_visit(), 2).expect("record");
        s
    }];
    kader.sync(&server).await.expect("sync");
    let mut colleague = Device::enrol(&server, &admin, "kader-0002").await;
    let theirs = colleague.replica.start_session(&melati, DAY - time::Duration::days(14)).expect("session");
    colleague.replica.record_visit(theirs, Generator::new(3).child_visit(), 3).expect("record");
    colleague.sync(&server).await.expect("sync");
    kader.sync(&server).await.expect("sync");
    let at_melati = server.store.list(Scope::new([melati.clone()])).await.expect("list");
    assert_eq!(at_melati.len(), 3);

    // Away to sakura: melati's documents leave the phone.
    assign(&sakura).await;
    kader.sync(&server).await.expect("sync at sakura");
    let held =
        |k: &Device| -> std::collections::BTreeSet<DocId> { k.replica.doc_ids().expect("ids").into_iter().collect() };
    assert!(mine.iter().chain([&theirs]).all(|d| !held(&kader).contains(d)), "melati purged");

    // And back: every melati document is on the phone again, whole, including the two she
    // pushed herself (which the server once counted as held by her device).
    assign(&melati).await;
    kader.sync(&server).await.expect("sync back at melati");
    for meta in &at_melati {
        let local = kader.replica.doc(meta.doc).unwrap_or_else(|e| panic!("{} missing on the phone: {e}", meta.doc));
        assert_eq!(posync_model::Heads::new(local.get_heads()), meta.heads, "{} whole", meta.doc);
    }
    assert_eq!(kader.replica.all_visits().expect("visits").len(), 4, "2 + 1 of hers, 1 of her colleague's");
    let again = kader.sync(&server).await.expect("no-op sync");
    assert_eq!((again.rounds, again.pulled_docs), (1, 0), "settled: the phone does not re-walk the feed");
    server.stop().await;
}

#[tokio::test]
async fn a_district_admin_reads_only_her_districts_audit_entries() {
    let (server, admin) = district().await;
    let http = Http::new(&server);
    // A second district with its own admin, imported at the console.
    let other = json!({
        "format": "posync-hierarchy/1",
        "units": [
            {"id": "jawa-barat", "kind": "province", "name": "Jawa Barat"},
            {"id": "kab-ciamis", "kind": "district", "parent": "jawa-barat", "name": "Kabupaten Ciamis"},
            {"id": "kec-ciamis", "kind": "subdistrict", "parent": "kab-ciamis", "name": "Kecamatan Ciamis"},
            {"id": "pkm-ciamis", "kind": "puskesmas", "parent": "kec-ciamis", "name": "Puskesmas Ciamis"},
            {"id": "desa-ciamis", "kind": "village", "parent": "pkm-ciamis", "name": "Desa Ciamis"},
            {"id": "pos-ciamis-dahlia-1", "kind": "posyandu", "parent": "desa-ciamis", "name": "Posyandu Dahlia 1"}
        ],
        "users": [
            {"id": "admin-ciamis", "name": "Admin Ciamis", "role": "district_admin", "units": ["kab-ciamis"]},
            {"id": "kader-ciamis", "name": "Kader Ciamis", "role": "kader", "units": ["pos-ciamis-dahlia-1"]}
        ]
    });
    let file = posync_server::parse_hierarchy(&other.to_string()).expect("parses");
    admin.import(&console(), file, server.clock.now()).await.expect("import");

    // Activity in Banjar: a kader syncs, an officer pulls and reads, a device is revoked.
    let mut kader = Device::enrol(&server, &admin, "kader-0001").await;
    let session = kader.capture(&p("pos-hegarsari-melati-1"), 1, 1);
    kader.sync(&server).await.expect("sync");
    let mut officer = Device::enrol(&server, &admin, "bidan-0001").await;
    officer.sync(&server).await.expect("pull");
    let (status, _) = http.send("GET", &format!("/v1/docs/{session}"), Some(&officer.token()), Body::None).await;
    assert_eq!(status, 200);
    admin.revoke_device(&console(), kader.id(), server.clock.now()).await.expect("revoke");
    // And in Ciamis: its kader enrols.
    let _ciamis_kader = Device::enrol(&server, &admin, "kader-ciamis").await;

    let banjar_admin = Device::enrol(&server, &admin, "dinkes-admin-01").await;
    let ciamis_admin = Device::enrol(&server, &admin, "admin-ciamis").await;
    let read = async |who: &Device| -> Vec<Value> {
        let (status, body) = http.send("GET", "/v1/admin/audit?limit=1000", Some(&who.token()), Body::None).await;
        assert_eq!(status, 200, "{body}");
        body.as_array().expect("entries").clone()
    };
    let banjar = read(&banjar_admin).await;
    let ciamis = read(&ciamis_admin).await;
    let actions =
        |log: &[Value]| -> Vec<String> { log.iter().filter_map(|e| e["action"].as_str().map(str::to_owned)).collect() };
    for expected in ["device_enrolled", "records_pulled", "record_read", "device_revoked", "enrolment_issued"] {
        assert!(
            actions(&banjar).iter().any(|a| a == expected),
            "Banjar's admin sees {expected}: {:?}",
            actions(&banjar)
        );
    }
    assert!(banjar.iter().all(|e| e["district"] == "kota-banjar"), "only Banjar's entries: {banjar:?}");
    assert!(ciamis.iter().all(|e| e["district"] == "kab-ciamis"), "only Ciamis's entries: {ciamis:?}");
    assert!(actions(&ciamis).iter().any(|a| a == "device_enrolled"), "Ciamis's own enrolment");
    assert!(!ciamis.iter().any(|e| e["action"] == "record_read"), "no Banjar reads leak to Ciamis");
    // The console still reads everything.
    let all = server.store.audit_log(0, 10_000).await.expect("audit");
    assert!(all.len() > banjar.len() + ciamis.len() - 1, "the console sees the whole log");
    server.stop().await;
}

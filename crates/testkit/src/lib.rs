//! Shared scenario builders: a real server on 127.0.0.1 over a real SQLite file, phones as
//! real replicas in temp dirs, and seeded generators for posyandu days.

pub mod faults;
pub mod fuzzing;
pub mod hostile;
pub mod small_disk;

use posync_model::growth::Indicator;
use posync_model::{
    DeviceId, DocId, LifeGroup, PersonId, PosyanduId, Role, Sex, Unit, UnitId, UnitKind, UserId, UserSpec, VitaminA,
};
use posync_proto::Limits;
use posync_replica::{NewVisit, Replica};
use posync_server::{RunningServer, TokenKeys};
use posync_store::{NewCredential, PgStore, SqliteStore, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

/// Seed of the test servers' signing key: tokens are reproducible across runs.
pub const KEY_SEED: [u8; 32] = [0x5e; 32];
/// The day every seeded scenario happens on.
pub const DAY: time::Date = time::macros::date!(2026 - 11 - 23);
/// 08:00 WIB on [`DAY`], in unix seconds.
pub const DAY_START: i64 = 1_795_395_600;

/// A clock tests move by hand.
#[derive(Clone)]
pub struct TestClock(Arc<AtomicI64>);

impl TestClock {
    pub fn new(start: i64) -> Self {
        Self(Arc::new(AtomicI64::new(start)))
    }
    pub fn now(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
    pub fn advance(&self, secs: i64) -> i64 {
        self.0.fetch_add(secs, Ordering::SeqCst) + secs
    }
    pub fn as_clock(&self) -> posync_server::Clock {
        let c = self.0.clone();
        Arc::new(move || c.load(Ordering::SeqCst))
    }
}

/// A sync server on an ephemeral loopback port over a SQLite file in a temp dir.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    pub keys: TokenKeys,
    pub clock: TestClock,
    running: Option<RunningServer>,
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(Limits::default()).await
    }

    pub async fn start_with(limits: Limits) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("server.sqlite");
        Self::start_at(dir, &db, limits).await
    }

    /// A server whose SQLite file is `db` (on a small disk, say); `dir` is kept with it.
    pub async fn start_at(dir: tempfile::TempDir, db: &std::path::Path, limits: Limits) -> Self {
        let store = SqliteStore::open(db).expect("open store");
        let keys = TokenKeys::from_seed(KEY_SEED);
        let clock = TestClock::new(DAY_START);
        let addr: SocketAddr = "127.0.0.1:0".parse().expect("addr");
        let running = posync_server::spawn(addr, Arc::new(store.clone()), keys.clone(), limits, clock.as_clock())
            .await
            .expect("bind 127.0.0.1");
        Self { dir, store, keys, clock, running: Some(running) }
    }

    pub fn url(&self) -> String {
        self.running.as_ref().map(RunningServer::url).unwrap_or_default()
    }

    pub fn addr(&self) -> SocketAddr {
        self.running.as_ref().map_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)), |r| r.addr)
    }

    pub fn store_arc(&self) -> Arc<dyn Store> {
        Arc::new(self.store.clone())
    }

    /// A token for `device` with `role` over exactly `posyandu`, valid for a day. The user
    /// (see [`user_for`]) and the device are written straight into the store by
    /// [`grant`], without the admin rules or an enrolment: scenario setup for tests about
    /// sync. Access-control tests enrol through the real admin API instead.
    pub fn token(&self, device: DeviceId, role: Role, posyandu: &[PosyanduId]) -> String {
        grant(&self.store, device, role, posyandu, self.clock.now());
        self.keys.issue(&user_for(device), device, role, self.clock.now(), 24 * 3600).token
    }

    pub async fn stop(mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.stop().await;
        }
    }
}

/// A phone (or tablet): a replica in its own temp dir with a token for its posyandu.
pub struct Phone {
    pub dir: tempfile::TempDir,
    pub replica: Replica,
    pub token: String,
    pub posyandu: Vec<PosyanduId>,
}

impl Phone {
    pub fn new(server: &TestServer, role: Role, posyandu: &[PosyanduId]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let replica = Replica::open(dir.path().join("replica.sqlite")).expect("open replica");
        let token = server.token(replica.device(), role, posyandu);
        Self { dir, replica, token, posyandu: posyandu.to_vec() }
    }

    pub fn kader(server: &TestServer, posyandu: &PosyanduId) -> Self {
        Self::new(server, Role::Kader, std::slice::from_ref(posyandu))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().join("replica.sqlite")
    }

    pub async fn sync(&mut self, server: &TestServer) -> posync_replica::SyncReport {
        self.replica.sync(&server.url(), &self.token).await.expect("sync")
    }
}

/// The sample district (`fixtures/district-kota-banjar.json`).
pub const DISTRICT_FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/district-kota-banjar.json");

/// The server console, as tests act through it.
pub fn console() -> posync_server::AdminCaller {
    posync_server::AdminCaller::Console("test".into())
}

/// A server with the sample district imported, and the admin service over its store.
pub async fn district_server(limits: Limits) -> (TestServer, posync_server::AdminService) {
    let server = TestServer::start_with(limits).await;
    let admin = posync_server::AdminService::new(server.store_arc());
    let text = std::fs::read_to_string(DISTRICT_FIXTURE).expect("read the district fixture");
    let file = posync_server::parse_hierarchy(&text).expect("the district fixture parses");
    admin.import(&console(), file, server.clock.now()).await.expect("import the district");
    (server, admin)
}

/// A replica in `dir`, enrolled over HTTP with a one-time code the console issued for `user`.
pub async fn enrolled(
    server: &TestServer,
    admin: &posync_server::AdminService,
    user: &str,
    dir: &tempfile::TempDir,
) -> Replica {
    let mut r = Replica::open(dir.path().join(format!("{user}.sqlite"))).expect("open replica");
    let code = admin
        .issue_enrolment(&console(), user.parse().expect("user id"), server.clock.now())
        .await
        .expect("enrolment code");
    posync_replica::enrol(&server.url(), &code.code, user, &mut r).await.expect("enrol");
    r
}

/// A girl born 2025-02-10 to Imas Masitoh (mother's NIK given), as a kader registers her;
/// `nik` is the child's own, if she has one.
pub fn registered_child(name: &str, nik: Option<&str>) -> posync_replica::NewPerson {
    posync_replica::NewPerson {
        name: name.into(),
        sex: posync_model::Sex::Female,
        birth_date: time::macros::date!(2025 - 02 - 10),
        mother_name: "Imas Masitoh".into(),
        nik: nik.map(str::to_owned),
        mother_nik: Some("3279016502950003".into()),
        address: "Dusun Sukamaju".into(),
        rt: Some(3),
        rw: Some(1),
        pregnant: false,
        kia_book: true,
    }
}

/// The access token an enrolled replica holds now.
pub fn access_token(replica: &Replica) -> String {
    replica.credential().expect("read credential").and_then(|c| c.access).expect("enrolled").token
}

/// One JSON call to the server's HTTP API with a bearer token: the status and the body
/// (null when it is not JSON).
pub async fn api(
    server: &TestServer,
    method: &str,
    token: &str,
    path: &str,
    body: Option<serde_json::Value>,
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::new();
    let url = format!("{}{path}", server.url());
    let mut rb = if method == "POST" { client.post(url) } else { client.get(url) };
    rb = rb.bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

/// An adult's visit (an ibu hamil, a lansia, ...) on a session on `on`, aged `years`, with
/// the group's `services`: the other fields fixed (55 kg, 156 cm standing).
pub fn adult_visit(
    on: time::Date,
    group: LifeGroup,
    sex: Sex,
    years: i64,
    muac_mm: Option<i64>,
    services: std::collections::BTreeMap<posync_model::Field, posync_model::FieldValue>,
) -> NewVisit {
    NewVisit {
        person_id: PersonId::new_random(),
        name: "Dewasa".into(),
        sex,
        birth_date: on - time::Duration::days(years * 366),
        weight_g: Some(55_000),
        length_mm: Some(1_560),
        lying: Some(false),
        head_circ_mm: None,
        muac_mm,
        immunisations: Default::default(),
        vitamin_a: None,
        notes: String::new(),
        group: Some(group),
        services,
    }
}

/// The user the test helpers create for a device.
pub fn user_for(device: DeviceId) -> UserId {
    format!("t-{device}").parse().expect("a uuid makes a valid user id")
}

/// The test hierarchy every granted posyandu hangs under.
const TEST_CHAIN: [(&str, UnitKind); 5] = [
    ("test-province", UnitKind::Province),
    ("test-district", UnitKind::District),
    ("test-subdistrict", UnitKind::Subdistrict),
    ("test-puskesmas", UnitKind::Puskesmas),
    ("test-village", UnitKind::Village),
];

/// Write a user for `device` with `role`, assigned directly to `posyandu` (created under a
/// test village if new), and enrol the device, straight into the store. Test setup only.
pub fn grant(store: &SqliteStore, device: DeviceId, role: Role, posyandu: &[PosyanduId], now: i64) {
    let existing = store.write_blocking(|tx| Ok(posyandu_units(tx))).expect("read units");
    let (units, user, credential) = grant_parts(&existing, device, role, posyandu, now);
    store.grant_blocking(&units, &user, &credential, now).expect("grant");
}

/// [`grant`] on PostgreSQL. Every posyandu hangs under the test village.
pub async fn grant_pg(store: &PgStore, device: DeviceId, role: Role, posyandu: &[PosyanduId], now: i64) {
    let (units, user, credential) = grant_parts(&[], device, role, posyandu, now);
    store.grant(&units, &user, &credential, now).await.expect("grant");
}

/// The units (the test chain, then posyandu not in `existing`), user and credential a grant
/// writes.
fn grant_parts(
    existing: &[UnitId],
    device: DeviceId,
    role: Role,
    posyandu: &[PosyanduId],
    now: i64,
) -> (Vec<Unit>, UserSpec, NewCredential) {
    let mut units: Vec<Unit> = Vec::new();
    let mut parent: Option<UnitId> = None;
    for (id, kind) in TEST_CHAIN {
        let id: UnitId = id.parse().expect("unit id");
        units.push(Unit { id: id.clone(), kind, parent: parent.clone(), name: id.to_string() });
        parent = Some(id);
    }
    for p in posyandu {
        let id = UnitId::from(p.clone());
        if !existing.contains(&id) {
            units.push(Unit { id, kind: UnitKind::Posyandu, parent: parent.clone(), name: p.to_string() });
        }
    }
    let user = UserSpec {
        id: user_for(device),
        name: format!("Test {role}"),
        role,
        units: posyandu.iter().cloned().map(UnitId::from).collect(),
    };
    let credential =
        NewCredential { device, label: "test".into(), refresh_hash: [0; 32], refresh_expires_at: now + 365 * 86_400 };
    (units, user, credential)
}

fn posyandu_units(tx: &rusqlite::Transaction<'_>) -> Vec<UnitId> {
    let Ok(mut stmt) = tx.prepare("SELECT unit_id FROM units WHERE kind = 'posyandu'") else { return Vec::new() };
    stmt.query_map([], |r| r.get::<_, String>(0))
        .map(|rows| rows.filter_map(|r| r.ok()?.parse().ok()).collect())
        .unwrap_or_default()
}

pub fn posyandu(name: &str) -> PosyanduId {
    name.parse().expect("valid posyandu id")
}

const GIRLS: [&str; 8] = ["Aisyah", "Citra", "Dewi", "Fitri", "Hana", "Kartika", "Nur", "Sri"];
const BOYS: [&str; 8] = ["Agus", "Budi", "Eko", "Gilang", "Indra", "Joko", "Rizki", "Yusuf"];
const FAMILY: [&str; 8] = ["Putri", "Saputra", "Wulandari", "Pratama", "Hidayat", "Lestari", "Nugroho", "Rahmawati"];
const ANTIGENS: [&str; 8] = ["HB0", "BCG", "OPV-1", "DPT-HB-Hib-1", "PCV-1", "RV-1", "IPV-1", "MR-1"];

/// Seeded generator of plausible child visits: the same seed gives the same day.
pub struct Generator {
    rng: StdRng,
}

impl Generator {
    pub fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed) }
    }

    pub fn rng(&mut self) -> &mut StdRng {
        &mut self.rng
    }

    /// A child's visit at a session on [`DAY`].
    pub fn child_visit(&mut self) -> NewVisit {
        self.child_visit_on(DAY)
    }

    /// A child's visit at a session on `on`: born 10 days to 5 years before it.
    pub fn child_visit_on(&mut self, on: time::Date) -> NewVisit {
        let r = &mut self.rng;
        let age_days: i64 = r.random_range(10..1800);
        let birth_date = on - time::Duration::days(age_days);
        let sex = if r.random_bool(0.5) { Sex::Female } else { Sex::Male };
        let given = if sex == Sex::Female { GIRLS } else { BOYS };
        let name = format!("{} {}", given[r.random_range(0..given.len())], FAMILY[r.random_range(0..FAMILY.len())]);
        // WHO medians for age and sex with noise: realistic sizes, and values that pass
        // validation at capture (a few children land beyond +-2 SD, as in a real posyandu).
        // Weight follows length (weight-for-length/height), so the two stay consistent.
        let length_mm = (who_median(Indicator::LengthHeightForAge, sex, age_days) * 10.0 * spread(r, 0.035)) as i64;
        let lying = age_days < 731;
        let for_length = posync_model::growth::wflh_indicator(Some(age_days), Some(lying))
            .and_then(|i| posync_model::growth::lms(i, sex, length_mm as f64 / 10.0))
            .map_or_else(|| who_median(Indicator::WeightForAge, sex, age_days), |l| l.m);
        let weight_g = (for_length * 1000.0 * spread(r, 0.07)) as i64;
        let head_circ_mm = (who_median(Indicator::HeadCircForAge, sex, age_days) * 10.0 * spread(r, 0.03)) as i64;
        let muac_mm = (who_median(Indicator::MuacForAge, sex, age_days.max(91)) * 10.0 * spread(r, 0.07)) as i64;
        let mut immunisations = BTreeMap::new();
        if r.random_bool(0.3) {
            immunisations.insert(ANTIGENS[r.random_range(0..ANTIGENS.len())].to_owned(), DAY);
        }
        NewVisit {
            person_id: PersonId::new_random(),
            name,
            sex,
            birth_date,
            weight_g: Some(weight_g.clamp(1000, 30_000)),
            length_mm: Some(length_mm.clamp(400, 1300)),
            lying: Some(lying),
            head_circ_mm: (age_days < 731).then_some(head_circ_mm),
            muac_mm: (age_days > 180).then_some(muac_mm),
            immunisations,
            vitamin_a: (age_days > 190).then_some(if age_days < 365 { VitaminA::Blue } else { VitaminA::Red }),
            notes: String::new(),
            group: None,
            services: Default::default(),
        }
    }

    pub fn weight_g(&mut self) -> i64 {
        self.rng.random_range(3000..20_000)
    }
}

/// WHO median (M of the LMS table) for an indicator, sex and age in days.
pub fn who_median(indicator: Indicator, sex: Sex, age_days: i64) -> f64 {
    posync_model::growth::lms(indicator, sex, age_days as f64).map_or(0.0, |l| l.m)
}

/// A factor around 1 with roughly normal noise of standard deviation `sd` (Irwin-Hall).
fn spread(r: &mut StdRng, sd: f64) -> f64 {
    let sum: f64 = (0..12).map(|_| r.random::<f64>()).sum();
    1.0 + (sum - 6.0) * sd
}

/// The session documents' visit ids as seen by a replica, sorted.
pub fn visit_ids(replica: &Replica) -> Vec<String> {
    let mut v: Vec<String> = replica.all_visits().expect("visits").into_iter().map(|r| r.visit_id).collect();
    v.sort();
    v
}

/// Every document on a replica as (id, JSON of winning values, sorted heads).
pub fn snapshot(replica: &Replica) -> Vec<(DocId, serde_json::Value, Vec<String>)> {
    replica
        .doc_ids()
        .expect("doc ids")
        .into_iter()
        .map(|id| {
            let am = replica.doc(id).expect("doc");
            let heads = posync_model::Heads::new(am.get_heads()).to_hex();
            (id, posync_model::doc::to_json(&am), heads)
        })
        .collect()
}

/// Sync a replica against a [`posync_server::SyncService`] in process (no sockets), with the
/// same loop as the HTTP client. Used by property tests and simulations.
pub async fn sync_in_process(
    service: &posync_server::SyncService,
    who: &posync_server::Principal,
    replica: &mut Replica,
) -> Result<usize, posync_server::ApiError> {
    let limits = *service.limits();
    for round in 1..=10_000 {
        let req = replica.prepare_sync(&limits).expect("prepare");
        let pushed = !req.push.is_empty();
        let resp = match service.handle(who, req).await {
            Ok(r) => r,
            Err(e) if e.code == posync_proto::ErrorCode::MissingDependencies => {
                let doc = e.doc.as_deref().and_then(|d| d.parse().ok()).expect("error names the doc");
                replica.reset_server_heads(doc).expect("reset");
                continue;
            }
            Err(e) if posync_replica::refuses_document(e.code) && e.doc.is_some() => {
                let doc = e.doc.as_deref().and_then(|d| d.parse().ok()).expect("error names the doc");
                replica.quarantine(doc, e.code.as_str()).expect("quarantine");
                continue;
            }
            Err(e) => return Err(e),
        };
        let applied = replica.apply_response(&resp).expect("apply");
        let outbox_left = pushed && !replica.outbox().expect("outbox").is_empty();
        if !applied.more && !outbox_left {
            return Ok(round);
        }
    }
    panic!("sync did not converge in 10,000 rounds");
}

/// The principal a phone's token would verify to.
pub fn principal(replica: &Replica, role: Role, posyandu: &[PosyanduId]) -> posync_server::Principal {
    posync_server::Principal {
        user: user_for(replica.device()),
        device: replica.device(),
        role,
        scope: posync_model::Scope::new(posyandu.iter().cloned()),
    }
}

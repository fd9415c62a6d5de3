use crate::error::ReplicaError;
use crate::link::{PAGE_BUDGET_MIN, RoundPlan};
use crate::stored::{self, Loaded, Touched, load_doc, save_doc};
use automerge::{ActorId, Automerge, ReadDoc};
use posync_model::doc::{self, DocMeta};
use posync_model::guard;
use posync_model::record::format_date;
use posync_model::validate::{Issue, Previous, check_visit, has_errors};
use posync_model::{
    DeviceId, DocId, DocKind, Field, FieldConflict, FieldValue, Heads, LifeGroup, Person, PersonId, PosyanduId, Scope,
    Sex, Visit, VisitId, VitaminA, conflicts,
};
use posync_proto::{DocPush, Limits, SyncRequest, SyncResponse};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::BTreeMap;
use std::path::Path;

mod window;
pub use window::{Trimmed, window_start};

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS docs (
    doc_id       TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    posyandu     TEXT NOT NULL,
    bytes        BLOB NOT NULL,
    heads        BLOB NOT NULL,
    -- Heads the server has acknowledged having; pushes send everything after them.
    server_heads BLOB NOT NULL,
    -- 1 while local heads differ from server_heads: the outbox.
    dirty        INTEGER NOT NULL,
    -- Error code with which the server refused this document. Its data stays here, it is not
    -- pushed again until released, and it no longer blocks the rest of the outbox.
    rejected     TEXT,
    -- 1 while only the first changes of a document larger than a page are here: the next
    -- request reports server_heads in an empty push, and the server sends the next piece.
    piece        INTEGER NOT NULL DEFAULT 0,
    -- Captures appended to `bytes` (as change chunks) since it was last saved whole.
    chunks       INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS docs_dirty ON docs(dirty) WHERE dirty = 1;
-- Captures appended to a document since it was last saved whole, in order (`n` from 0).
CREATE TABLE IF NOT EXISTS doc_chunks (
    doc_id TEXT NOT NULL,
    n      INTEGER NOT NULL,
    bytes  BLOB NOT NULL,
    PRIMARY KEY (doc_id, n)
);
CREATE TABLE IF NOT EXISTS visits (
    visit_id     TEXT PRIMARY KEY,
    doc_id       TEXT NOT NULL,
    posyandu     TEXT NOT NULL,
    session_date TEXT NOT NULL,
    person_id    TEXT NOT NULL,
    name         TEXT NOT NULL,
    sex          TEXT NOT NULL,
    birth_date   TEXT NOT NULL,
    weight_g     INTEGER,
    length_mm    INTEGER,
    head_circ_mm INTEGER,
    muac_mm      INTEGER,
    vitamin_a    TEXT,
    immunisations TEXT NOT NULL,
    notes        TEXT NOT NULL,
    recorded_by  TEXT NOT NULL,
    recorded_at  INTEGER NOT NULL,
    -- Fields with concurrent values, comma-separated: "under review" on screen.
    conflicts    TEXT NOT NULL,
    life_group   TEXT NOT NULL DEFAULT 'balita',
    -- The group's services as JSON ({"bp_systolic": 120, ...}).
    services     TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS visits_doc ON visits(doc_id);
CREATE INDEX IF NOT EXISTS visits_posyandu_date ON visits(posyandu, session_date);
-- A capture checks the child's previous measurement: without this, a scan of every visit.
CREATE INDEX IF NOT EXISTS visits_person_date ON visits(person_id, session_date);
-- Sessions dropped from the device (older than its window) that the server has not been
-- told of yet: the next request names them in `dropped`.
CREATE TABLE IF NOT EXISTS dropped_docs (doc_id TEXT PRIMARY KEY);
CREATE TABLE IF NOT EXISTS people (
    person_id   TEXT PRIMARY KEY,
    doc_id      TEXT NOT NULL,
    posyandu    TEXT NOT NULL,
    name        TEXT NOT NULL,
    sex         TEXT NOT NULL,
    birth_date  TEXT NOT NULL,
    mother_name TEXT NOT NULL,
    nik         TEXT
);
"#;

/// What a kader enters for a child's visit.
#[derive(Clone, Debug)]
pub struct NewVisit {
    pub person_id: PersonId,
    pub name: String,
    pub sex: Sex,
    pub birth_date: time::Date,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub lying: Option<bool>,
    pub head_circ_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    pub immunisations: BTreeMap<String, time::Date>,
    pub vitamin_a: Option<VitaminA>,
    pub notes: String,
    /// `None`: the group by age at the session date. Pregnancy and the weeks after birth
    /// are stated (`IbuHamil`, `IbuNifas`).
    pub group: Option<LifeGroup>,
    /// The group's other measurements and services.
    pub services: BTreeMap<Field, FieldValue>,
}

impl NewVisit {
    /// The visit as recorded by `device` at a session on `session_date`, with a fresh id;
    /// the group defaults to the group by age.
    pub fn into_visit(self, device: DeviceId, session_date: time::Date, recorded_at: i64) -> Visit {
        Visit {
            visit_id: VisitId::new_random(),
            group: self.group.unwrap_or_else(|| LifeGroup::by_age(self.birth_date, session_date)),
            person_id: self.person_id,
            name: self.name,
            sex: self.sex,
            birth_date: self.birth_date,
            weight_g: self.weight_g,
            length_mm: self.length_mm,
            lying: self.lying,
            head_circ_mm: self.head_circ_mm,
            muac_mm: self.muac_mm,
            immunisations: self.immunisations,
            vitamin_a: self.vitamin_a,
            notes: self.notes,
            services: self.services,
            recorded_by: device,
            recorded_at,
        }
    }
}

#[derive(Clone, Debug)]
pub struct NewPerson {
    pub name: String,
    pub sex: Sex,
    pub birth_date: time::Date,
    pub mother_name: String,
    pub nik: Option<String>,
    pub mother_nik: Option<String>,
    pub address: String,
    pub rt: Option<i64>,
    pub rw: Option<i64>,
    pub pregnant: bool,
    pub kia_book: bool,
}

/// A visit as the app's screens list it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct VisitRow {
    pub visit_id: String,
    pub doc_id: String,
    pub posyandu: String,
    pub session_date: String,
    pub person_id: String,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub head_circ_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    pub vitamin_a: Option<String>,
    pub immunisations: String,
    pub notes: String,
    pub recorded_by: String,
    pub recorded_at: i64,
    pub conflicts: String,
    pub life_group: String,
    /// JSON object of the group's services.
    pub services: String,
}

/// A visit just captured, with what the kader should see.
#[derive(Clone, Debug)]
pub struct Captured {
    pub visit: posync_model::Visit,
    pub session_date: time::Date,
    /// Unusual values to confirm (errors refuse the capture instead).
    pub warnings: Vec<Issue>,
    /// The same person's latest earlier measurement on this device.
    pub previous: Option<Previous>,
}

/// A registered person as the app's lists show them (the registry's projection).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct PersonRow {
    pub person_id: String,
    pub posyandu: String,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub mother_name: String,
    pub nik: Option<String>,
}

/// What one applied response did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    pub acked: usize,
    pub pulled: usize,
    pub purged: usize,
    pub cursor: u64,
    pub more: bool,
    /// The server said it was restored from a backup: every held document goes again.
    pub store_restored: bool,
    /// Pulled documents taken as the server's whole copy instead of merged into ours (it held
    /// every change of ours); counted within `pulled`.
    pub adopted: usize,
}

/// How long a write waits for another (a capture for a sync's short transaction, or the
/// reverse) before giving up. Syncs never hold the write lock across network I/O.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// One sync run's hold on a replica (see [`Replica::try_sync_lock`]); released on drop.
pub struct SyncLock {
    _file: Option<std::fs::File>,
}

/// Whether an error means the phone's storage is full (SQLite says so, or cannot create the
/// files it needs beside the database).
fn storage_full(e: &ReplicaError) -> bool {
    match e {
        ReplicaError::StorageFull => true,
        ReplicaError::Sqlite(rusqlite::Error::SqliteFailure(f, _)) => {
            matches!(f.code, rusqlite::ErrorCode::DiskFull | rusqlite::ErrorCode::SystemIoFailure)
        }
        _ => false,
    }
}

fn io_error(e: std::io::Error) -> ReplicaError {
    ReplicaError::Io(e.to_string())
}

/// A device's replica: one SQLite file.
pub struct Replica {
    conn: Connection,
    device: DeviceId,
    path: std::path::PathBuf,
    /// The documents being worked on, kept loaded between captures and syncs.
    loaded: std::cell::RefCell<Loaded>,
    /// Where the device credential lives when the app keeps secrets outside the file
    /// (Android Keystore, iOS Keychain); `None`: in the replica's `meta` table.
    secrets: Option<Box<dyn SecretStore>>,
}

/// The app's store for secrets (the device credential, with its refresh token), so that the
/// replica file holds none: a copied or backed-up file cannot sign in as the phone.
pub trait SecretStore: Send + Sync {
    fn get(&self, key: &str) -> Option<String>;
    fn put(&self, key: &str, value: &str) -> Result<(), String>;
}

/// The key under which the device credential is kept in a [`SecretStore`].
const CREDENTIAL_KEY: &str = "posync.credential";

/// The continuity marker of a replica file: a sidecar that holds the same random token as
/// the file. A backup or copy of the file alone arrives without it (an app keeps it where
/// backups do not reach, e.g. Android's no-backup directory), so the next open knows the file
/// is not the one it last wrote and starts a new incarnation (a new Automerge actor).
pub fn marker_path(replica: &Path) -> std::path::PathBuf {
    let mut p = replica.as_os_str().to_owned();
    p.push(".continuity");
    p.into()
}

fn meta_get(conn: &Connection, key: &str) -> Result<Option<String>, ReplicaError> {
    Ok(conn.prepare_cached("SELECT value FROM meta WHERE key = ?1")?.query_row([key], |r| r.get(0)).optional()?)
}

fn meta_set(conn: &Connection, key: &str, value: &str) -> Result<(), ReplicaError> {
    conn.prepare_cached("INSERT INTO meta (key, value) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET value = ?2")?
        .execute([key, value])?;
    Ok(())
}

fn incarnation_in(conn: &Connection) -> Result<u32, ReplicaError> {
    Ok(meta_get(conn, "incarnation")?.and_then(|s| s.parse().ok()).unwrap_or(0))
}

/// Start a new incarnation: a fresh actor for every later change, and a pull from the start
/// of the feed (a restored file may lack documents the server counts as delivered to it).
fn bump_incarnation(conn: &Connection) -> Result<u32, ReplicaError> {
    let next = incarnation_in(conn)?.checked_add(1).ok_or_else(|| ReplicaError::BadResponse("incarnation".into()))?;
    meta_set(conn, "incarnation", &next.to_string())?;
    meta_set(conn, "cursor", "0")?;
    tracing::warn!(incarnation = next, "replica starts a new incarnation (restored or copied file, or a reused actor)");
    Ok(next)
}

fn new_token() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn unix_now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn heads_from(bytes: &[u8]) -> Heads {
    // Stored heads were written by us; a bad value only makes the next push larger.
    Heads::from_bytes(bytes).unwrap_or_default()
}

/// `PRAGMA key` with a raw key (`x'..'`): used as is, no key derivation.
fn key_pragma(key: &[u8; 32]) -> String {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    format!("PRAGMA key = \"x'{hex}'\"")
}

/// How long the first keyed open of a process waits for SQLCipher to finish initialising.
const SQLCIPHER_READY_TRIES_MAX: u32 = 500;
const SQLCIPHER_READY_PAUSE: std::time::Duration = std::time::Duration::from_millis(1);

/// Wait, once per process, until SQLCipher accepts keys.
///
/// SQLite marks itself initialised and only then runs SQLCipher's own initialisation (its
/// random seed and crypto provider). A key set by another thread in that moment fails with
/// "sqlcipher not initialized" (a generic `PRAGMA key` error): the first opens of a process,
/// racing, could refuse a good key. So the first keyed open keys a throwaway in-memory
/// database until that works (bounded), and every later one skips this.
fn sqlcipher_ready() -> Result<(), ReplicaError> {
    static READY: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut ready = READY.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if *ready {
        return Ok(());
    }
    let probe_key = key_pragma(&[0; 32]);
    let mut tries = 0;
    loop {
        let keyed = Connection::open_in_memory().and_then(|c| c.execute_batch(&probe_key));
        match keyed {
            Ok(()) => {
                *ready = true;
                return Ok(());
            }
            Err(e) if tries + 1 >= SQLCIPHER_READY_TRIES_MAX => return Err(e.into()),
            Err(_) => {
                tries += 1;
                std::thread::sleep(SQLCIPHER_READY_PAUSE);
            }
        }
    }
}

/// Give SQLCipher the key (when there is one: it must be the first statement on the
/// connection), then read the schema: SQLCipher decrypts on the first read, so a wrong key,
/// or no key for an encrypted file, fails here as [`ReplicaError::WrongKey`].
fn unlock(conn: &Connection, key: Option<&[u8; 32]>) -> Result<(), ReplicaError> {
    if let Some(key) = key {
        sqlcipher_ready()?;
        conn.execute_batch(&key_pragma(key))?;
    }
    match conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |r| r.get::<_, i64>(0)) {
        Ok(_) => Ok(()),
        Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::NotADatabase) => Err(ReplicaError::WrongKey),
        Err(e) => Err(e.into()),
    }
}

/// A plain SQLite file (its header is in clear): not an encrypted replica.
fn is_plaintext_sqlite(path: &Path) -> bool {
    use std::io::Read;
    let mut header = [0u8; 16];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut header)).is_ok() && &header == b"SQLite format 3\0"
}

impl Replica {
    /// Open or create the replica at `path`. The device id (and so the Automerge actor) is
    /// created once, on first open, and kept for the life of the install.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, ReplicaError> {
        let marker = marker_path(path.as_ref());
        Self::open_with_marker(path, marker)
    }

    /// Open with the continuity marker at `marker` (see [`marker_path`]): an app keeps it out
    /// of backups, so a restored replica is recognised and writes under a new actor.
    pub fn open_with_marker(path: impl AsRef<Path>, marker: impl AsRef<Path>) -> Result<Self, ReplicaError> {
        Self::open_keyed(path.as_ref(), marker.as_ref(), None)
    }

    /// Open or create a replica encrypted with SQLCipher (every page of the file and its
    /// write-ahead log). `key` is a raw 32-byte key, not a passphrase: the app generates it
    /// once and keeps it in the Android Keystore or iOS Keychain; SQLCipher uses it as is
    /// (no key derivation, so opening costs nothing on a cheap phone). A key that does not
    /// open the file is [`ReplicaError::WrongKey`]; a key for a file that is not encrypted is
    /// [`ReplicaError::NotEncrypted`].
    pub fn open_encrypted(path: impl AsRef<Path>, key: &[u8]) -> Result<Self, ReplicaError> {
        let marker = marker_path(path.as_ref());
        Self::open_encrypted_with_marker(path, marker, key)
    }

    /// [`Replica::open_encrypted`] with the continuity marker at `marker`.
    pub fn open_encrypted_with_marker(
        path: impl AsRef<Path>,
        marker: impl AsRef<Path>,
        key: &[u8],
    ) -> Result<Self, ReplicaError> {
        let key: &[u8; 32] = key.try_into().map_err(|_| ReplicaError::BadKeyLength(key.len()))?;
        let path = path.as_ref();
        if is_plaintext_sqlite(path) {
            return Err(ReplicaError::NotEncrypted);
        }
        Self::open_keyed(path, marker.as_ref(), Some(key))
    }

    fn open_keyed(path: &Path, marker: &Path, key: Option<&[u8; 32]>) -> Result<Self, ReplicaError> {
        match Self::open_writable(path, marker, key) {
            Ok(r) => Ok(r),
            // A full disk: the kader must still see her visits. Open read-only (capturing and
            // syncing answer StorageFull until space is freed).
            Err(e) if storage_full(&e) && path.exists() => {
                tracing::warn!("phone storage is full: the replica is open read-only");
                Self::open_read_only_keyed(path, key).map_err(|_| ReplicaError::StorageFull)
            }
            Err(e) if storage_full(&e) => Err(ReplicaError::StorageFull),
            Err(e) => Err(e),
        }
    }

    /// The replica for reading only: listing visits works when nothing can be written.
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self, ReplicaError> {
        Self::open_read_only_keyed(path.as_ref(), None)
    }

    fn open_read_only_keyed(path: &Path, key: Option<&[u8; 32]>) -> Result<Self, ReplicaError> {
        let path = path.to_path_buf();
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let readable = |c: &Connection| {
            unlock(c, key)?;
            c.query_row("SELECT COUNT(*) FROM meta", [], |r| r.get::<_, i64>(0)).map_err(ReplicaError::from)
        };
        let conn = match Connection::open_with_flags(&path, flags).map_err(ReplicaError::from) {
            Ok(c) => match readable(&c) {
                Ok(_) => c,
                Err(ReplicaError::WrongKey) => return Err(ReplicaError::WrongKey),
                Err(_) => Self::open_immutable(&path, flags, key)?,
            },
            Err(_) => Self::open_immutable(&path, flags, key)?,
        };
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let device = meta_get(&conn, "device_id")?
            .ok_or(ReplicaError::NotEnrolled)?
            .parse()
            .map_err(|_| ReplicaError::BadResponse("stored device id".into()))?;
        Ok(Self { conn, device, path, loaded: Default::default(), secrets: None })
    }

    /// WAL mode needs its shared-memory file, which a full disk cannot create. Read the
    /// database file as it is: everything up to the last checkpoint (the replica checkpoints
    /// when it closes, so that is every visit but those of a crash).
    fn open_immutable(
        path: &Path,
        flags: rusqlite::OpenFlags,
        key: Option<&[u8; 32]>,
    ) -> Result<Connection, ReplicaError> {
        let mut uri = std::ffi::OsString::from("file:");
        uri.push(path.as_os_str());
        uri.push("?immutable=1");
        let conn = Connection::open_with_flags(uri, flags | rusqlite::OpenFlags::SQLITE_OPEN_URI)?;
        unlock(&conn, key)?;
        Ok(conn)
    }

    fn open_writable(path: &Path, marker: &Path, key: Option<&[u8; 32]>) -> Result<Self, ReplicaError> {
        let path = path.to_path_buf();
        let mut conn = Connection::open(&path)?;
        // The key is the first statement on the connection (SQLCipher's rule).
        unlock(&conn, key)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Cached statements are compiled once, whatever values they are run with (without
        // this, SQLite recompiles one with a `LIMIT ?` each time rusqlite reuses it).
        conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        conn.set_prepared_statement_cache_capacity(64);
        // Pages freed by dropping old sessions (the window) go back to the phone's storage.
        conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // A capture acknowledged to the kader must survive the phone dying a moment later.
        conn.pragma_update(None, "synchronous", "FULL")?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        tx.execute_batch(SCHEMA)?;
        add_columns_of_schema_2(&tx)?;
        add_docs_columns(&tx)?;
        let device = match tx
            .prepare_cached("SELECT value FROM meta WHERE key = 'device_id'")?
            .query_row([], |r| r.get::<_, String>(0))
            .optional()?
        {
            Some(s) => s.parse().map_err(|_| ReplicaError::BadResponse("stored device id".into()))?,
            None => {
                let d = DeviceId::new_random();
                tx.prepare_cached("INSERT INTO meta (key, value) VALUES ('device_id', ?1)")?
                    .execute([d.to_string()])?;
                d
            }
        };
        // An in-memory replica (tools, simulations) has no file to restore: no marker.
        let in_memory = path.as_os_str() == ":memory:";
        let held = std::fs::read_to_string(marker).ok().map(|t| t.trim().to_owned());
        let token = match meta_get(&tx, "continuity")? {
            _ if in_memory => None,
            Some(t) if held.as_deref() == Some(t.as_str()) => None,
            Some(_) => {
                bump_incarnation(&tx)?;
                Some(new_token())
            }
            // A replica from before incarnations (or a new one): this is its first known state.
            None => Some(new_token()),
        };
        if let Some(t) = &token {
            meta_set(&tx, "continuity", t)?;
        }
        tx.commit()?;
        if let Some(t) = token
            && let Err(e) = std::fs::write(marker, t)
        {
            // Without the marker the next open starts another incarnation: more actors, no loss.
            tracing::warn!(error = %e, "could not write the replica's continuity marker");
        }
        Ok(Self { conn, device, path, loaded: Default::default(), secrets: None })
    }

    /// Claim the replica for one sync run: `None` while another run (in this process or
    /// another) holds it. Two syncs at once would send the same outbox twice and race on
    /// the cursor. An advisory lock on `<replica>.sync-lock`: the operating system releases
    /// it when the run ends, its future is dropped, or its process dies.
    pub fn try_sync_lock(&self) -> Result<Option<SyncLock>, ReplicaError> {
        if self.path.as_os_str() == ":memory:" {
            // Private to this handle: nothing else can sync it.
            return Ok(Some(SyncLock { _file: None }));
        }
        let mut path = self.path.as_os_str().to_owned();
        path.push(".sync-lock");
        let file =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_error)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(SyncLock { _file: Some(file) })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io_error(e)),
        }
    }

    /// This replica's incarnation: bumped when the file was restored or copied, or when the
    /// server reported that its actor's sequence numbers were reused.
    pub fn incarnation(&self) -> Result<u32, ReplicaError> {
        incarnation_in(&self.conn)
    }

    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// The server feed position this replica has applied through.
    pub fn cursor(&self) -> Result<u64, ReplicaError> {
        Ok(self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'cursor'")?
            .query_row([], |r| r.get::<_, String>(0))
            .optional()?
            .and_then(|s| s.parse().ok())
            .unwrap_or(0))
    }

    // ---- capture ----

    /// Open the session of `posyandu` on `date`, creating it if this phone has not seen it.
    /// Every phone derives the same document id and genesis, so their visits merge.
    pub fn start_session(&mut self, posyandu: &PosyanduId, date: time::Date) -> Result<DocId, ReplicaError> {
        self.ensure_doc(DocMeta::session(posyandu.clone(), date))
    }

    fn ensure_doc(&mut self, meta: DocMeta) -> Result<DocId, ReplicaError> {
        let id = meta.doc_id();
        // IMMEDIATE: take the write lock up front, waiting (busy timeout) for a sync that
        // holds it, instead of failing when a read transaction cannot become a write one.
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let exists = tx
            .prepare_cached("SELECT 1 FROM docs WHERE doc_id = ?1")?
            .query_row([id.to_string()], |_| Ok(()))
            .optional()?
            .is_some();
        if !exists {
            let am = doc::genesis(&meta, self.device.actor())?;
            save_doc(&tx, id, &am, true)?;
        }
        tx.commit()?;
        Ok(id)
    }

    /// Record a visit in a session; returns its id. One transaction.
    pub fn record_visit(&mut self, session: DocId, v: NewVisit, now: i64) -> Result<VisitId, ReplicaError> {
        Ok(self.capture_visit(session, v, now)?.visit.visit_id)
    }

    /// [`Replica::record_visit`], with what a screen shows after it: the visit as recorded,
    /// the warnings to confirm, and the child's previous measurement it was checked against.
    /// Errors refuse the capture ([`ReplicaError::Rejected`]); nothing is written then.
    pub fn capture_visit(&mut self, session: DocId, v: NewVisit, now: i64) -> Result<Captured, ReplicaError> {
        let device = self.device;
        self.mutate(session, |tx, am| {
            let session_date = doc::read_meta(am)?.date.ok_or(ReplicaError::UnknownDoc(session))?;
            let visit = v.into_visit(device, session_date, now);
            let previous = previous_in(tx, visit.person_id, session_date)?;
            let issues = check_visit(&visit, session_date, previous.as_ref());
            if has_errors(&issues) {
                return Err(ReplicaError::Rejected(issues));
            }
            doc::record_visit(am, &visit, now)?;
            let touched = Touched::Visit(visit.visit_id);
            Ok((touched, Captured { visit, session_date, warnings: issues, previous }))
        })
    }

    /// What [`Replica::record_visit`] would say about `v`: errors refuse the capture,
    /// warnings are for the kader to confirm. Works offline, against this device's history.
    pub fn check_visit(&self, session: DocId, v: &NewVisit) -> Result<Vec<Issue>, ReplicaError> {
        let session_date = self.session_date(session)?;
        let visit = v.clone().into_visit(self.device, session_date, 0);
        Ok(check_visit(&visit, session_date, previous_in(&self.conn, v.person_id, session_date)?.as_ref()))
    }

    /// Change one field of a visit. One transaction, one Automerge change.
    pub fn edit_visit(
        &mut self,
        session: DocId,
        visit: VisitId,
        field: Field,
        value: FieldValue,
        now: i64,
    ) -> Result<(), ReplicaError> {
        self.mutate(session, |_, am| {
            doc::set_visit_field(am, visit, field, &value, now)?;
            Ok((Touched::Visit(visit), ()))
        })
    }

    pub fn give_immunisation(
        &mut self,
        session: DocId,
        visit: VisitId,
        antigen: &str,
        date: time::Date,
        now: i64,
    ) -> Result<(), ReplicaError> {
        self.mutate(session, |_, am| {
            doc::give_immunisation(am, visit, antigen, date, now)?;
            Ok((Touched::Visit(visit), ()))
        })
    }

    /// Change one field of a registered person (name, birth_date, nik, address, ...).
    pub fn edit_person(
        &mut self,
        posyandu: &PosyanduId,
        person: PersonId,
        key: &str,
        value: FieldValue,
        now: i64,
    ) -> Result<(), ReplicaError> {
        let registry = DocId::for_registry(posyandu);
        self.mutate(registry, |_, am| {
            doc::set_person_field(am, person, key, &value, now)?;
            Ok((Touched::Person(person), ()))
        })
    }

    /// Add a person to the posyandu's registry (created on first use). A registration the
    /// server would mark invalid (a malformed NIK, a child with neither its own NIK nor its
    /// mother's, a birth date ahead of `now`) is refused before it is captured (`doc`).
    pub fn register_person(&mut self, posyandu: &PosyanduId, p: NewPerson, now: i64) -> Result<PersonId, ReplicaError> {
        let person = Person {
            person_id: PersonId::new_random(),
            name: p.name,
            sex: p.sex,
            birth_date: p.birth_date,
            mother_name: p.mother_name,
            nik: p.nik,
            mother_nik: p.mother_nik,
            address: p.address,
            rt: p.rt,
            rw: p.rw,
            pregnant: p.pregnant,
            kia_book: p.kia_book,
            merged_into: None,
            registered_by: self.device,
            registered_at: now,
        };
        let registry = self.ensure_doc(DocMeta::registry(posyandu.clone()))?;
        let id = person.person_id;
        self.mutate(registry, |_, am| {
            doc::register_person(am, &person, now)?;
            Ok((Touched::Person(id), id))
        })
    }

    /// The date of a session document on this device.
    pub fn session_date(&self, session: DocId) -> Result<time::Date, ReplicaError> {
        doc::read_meta(&self.doc(session)?)?.date.ok_or(ReplicaError::UnknownDoc(session))
    }

    /// One capture: one IMMEDIATE transaction and one Automerge change to a document kept
    /// loaded, stored by appending the change, re-projecting the record `f` says it touched.
    fn mutate<T>(
        &mut self,
        id: DocId,
        f: impl FnOnce(&Transaction<'_>, &mut Automerge) -> Result<(Touched, T), ReplicaError>,
    ) -> Result<T, ReplicaError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let actor = self.device.actor_for(incarnation_in(&tx)?);
        let mut am = self.loaded.borrow_mut().take(&tx, id)?.ok_or(ReplicaError::UnknownDoc(id))?;
        am.set_actor(actor);
        let before = am.get_heads();
        let (touched, out) = f(&tx, &mut am)?;
        let budget = Limits::default();
        let stored = stored::save_capture(&tx, id, &am, &before, touched, budget.doc_bytes_max)?;
        if stored > budget.doc_bytes_max || am.stats().num_ops > budget.doc_ops_max as u64 {
            // Refused before it is captured: the server would refuse the document, and every
            // phone of the posyandu would have to download it.
            return Err(ReplicaError::DocumentFull { doc: id, bytes: stored, max: budget.doc_bytes_max });
        }
        tx.commit()?;
        self.loaded.borrow_mut().keep(id, am);
        Ok(out)
    }

    /// Record this replica's unacknowledged edits of `id` again, by value, as one change by a
    /// new incarnation's actor on top of what the server acknowledged; the changes that first
    /// carried them are dropped from this device. The answer to `actor_seq_clash`: this file
    /// was restored or copied and its actor's sequence numbers were reused, so those changes
    /// can never be accepted, but every value they carried reaches the server this way.
    pub fn record_again(&mut self, id: DocId, now: i64) -> Result<(), ReplicaError> {
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let incarnation = bump_incarnation(&tx)?;
        let am = load_doc(&tx, id)?.ok_or(ReplicaError::UnknownDoc(id))?;
        let acked = server_heads_of(&tx, id)?;
        let again = rebuilt_on(&am, &acked, self.device.actor_for(incarnation), now)?;
        save_doc(&tx, id, &again, true)?;
        tx.commit()?;
        Ok(())
    }

    // ---- queries ----

    /// The visits of a session, for the app's list screen, ordered by time recorded.
    pub fn visits(&self, session: DocId) -> Result<Vec<VisitRow>, ReplicaError> {
        self.query_visits("WHERE doc_id = ?1", [session.to_string()])
    }

    /// Today's visits at a posyandu.
    pub fn visits_on(&self, posyandu: &PosyanduId, date: time::Date) -> Result<Vec<VisitRow>, ReplicaError> {
        self.query_visits("WHERE posyandu = ?1 AND session_date = ?2", [posyandu.to_string(), format_date(date)])
    }

    pub fn all_visits(&self) -> Result<Vec<VisitRow>, ReplicaError> {
        self.query_visits("", [])
    }

    /// The visits of one person, oldest session first.
    pub fn visits_of(&self, person: PersonId) -> Result<Vec<VisitRow>, ReplicaError> {
        let mut rows = self.query_visits("WHERE person_id = ?1", [person.to_string()])?;
        rows.sort_by(|a, b| a.session_date.cmp(&b.session_date));
        Ok(rows)
    }

    /// Bytes the replica takes on the phone's storage: the file and its write-ahead log.
    pub fn storage_bytes(&self) -> u64 {
        let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
        let mut wal = self.path.clone().into_os_string();
        wal.push("-wal");
        size(&self.path) + size(Path::new(&wal))
    }

    /// A registered person on this device, if any.
    pub fn person(&self, id: PersonId) -> Result<Option<PersonRow>, ReplicaError> {
        Ok(self.query_people("WHERE person_id = ?1", [id.to_string()])?.into_iter().next())
    }

    /// The people registered at a posyandu (every posyandu on this device with `None`), by name.
    pub fn people(&self, posyandu: Option<&PosyanduId>) -> Result<Vec<PersonRow>, ReplicaError> {
        match posyandu {
            Some(p) => self.query_people("WHERE posyandu = ?1", [p.to_string()]),
            None => self.query_people("", []),
        }
    }

    fn query_people<P: rusqlite::Params>(&self, filter: &str, p: P) -> Result<Vec<PersonRow>, ReplicaError> {
        let sql = format!(
            "SELECT person_id, posyandu, name, sex, birth_date, mother_name, nik
             FROM people {filter} ORDER BY name, person_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(PersonRow {
                person_id: r.get(0)?,
                posyandu: r.get(1)?,
                name: r.get(2)?,
                sex: r.get(3)?,
                birth_date: r.get(4)?,
                mother_name: r.get(5)?,
                nik: r.get(6)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn query_visits<P: rusqlite::Params>(&self, filter: &str, p: P) -> Result<Vec<VisitRow>, ReplicaError> {
        let sql = format!(
            "SELECT visit_id, doc_id, posyandu, session_date, person_id, name, sex, birth_date, weight_g, length_mm,
                    head_circ_mm, muac_mm, vitamin_a, immunisations, notes, recorded_by, recorded_at, conflicts,
                    life_group, services
             FROM visits {filter} ORDER BY recorded_at, visit_id"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(VisitRow {
                visit_id: r.get(0)?,
                doc_id: r.get(1)?,
                posyandu: r.get(2)?,
                session_date: r.get(3)?,
                person_id: r.get(4)?,
                name: r.get(5)?,
                sex: r.get(6)?,
                birth_date: r.get(7)?,
                weight_g: r.get(8)?,
                length_mm: r.get(9)?,
                head_circ_mm: r.get(10)?,
                muac_mm: r.get(11)?,
                vitamin_a: r.get(12)?,
                immunisations: r.get(13)?,
                notes: r.get(14)?,
                recorded_by: r.get(15)?,
                recorded_at: r.get(16)?,
                conflicts: r.get(17)?,
                life_group: r.get(18)?,
                services: r.get(19)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// The document, loaded.
    pub fn doc(&self, id: DocId) -> Result<Automerge, ReplicaError> {
        let tx = self.conn.unchecked_transaction()?;
        load_doc(&tx, id)?.ok_or(ReplicaError::UnknownDoc(id))
    }

    /// Every document id on this device, sorted.
    pub fn doc_ids(&self) -> Result<Vec<DocId>, ReplicaError> {
        let mut stmt = self.conn.prepare_cached("SELECT doc_id FROM docs ORDER BY doc_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids.into_iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Fields of a document with concurrent values, whatever their policy.
    pub fn conflicts(&self, id: DocId) -> Result<Vec<FieldConflict>, ReplicaError> {
        Ok(conflicts(&self.doc(id)?)?)
    }

    /// Fields of a document "under review": concurrent values of a field whose policy sends
    /// it to a person (the app shows the record as such until someone decides).
    pub fn under_review(&self, id: DocId) -> Result<Vec<FieldConflict>, ReplicaError> {
        Ok(self.conflicts(id)?.into_iter().filter(|c| c.policy() == posync_model::Policy::Review).collect())
    }

    /// Documents with changes the server has not acknowledged and that the next sync will push.
    pub fn outbox(&self) -> Result<Vec<DocId>, ReplicaError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT doc_id FROM docs WHERE dirty = 1 AND rejected IS NULL ORDER BY doc_id")?;
        let ids = stmt.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        Ok(ids.into_iter().filter_map(|s| s.parse().ok()).collect())
    }

    /// Documents the server refused, with its error code. Their data is kept on the device.
    pub fn rejected(&self) -> Result<Vec<(DocId, String)>, ReplicaError> {
        let mut stmt =
            self.conn.prepare_cached("SELECT doc_id, rejected FROM docs WHERE rejected IS NOT NULL ORDER BY doc_id")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows.into_iter().filter_map(|(d, c)| Some((d.parse().ok()?, c))).collect())
    }

    /// Stop pushing `doc`: the server refused it with `code`. Nothing is deleted.
    pub fn quarantine(&mut self, id: DocId, code: &str) -> Result<(), ReplicaError> {
        self.conn
            .prepare_cached("UPDATE docs SET rejected = ?2 WHERE doc_id = ?1")?
            .execute(params![id.to_string(), code])?;
        Ok(())
    }

    /// Push `doc` again at the next sync (after its scope or the app was fixed).
    pub fn release(&mut self, id: DocId) -> Result<(), ReplicaError> {
        self.conn.prepare_cached("UPDATE docs SET rejected = NULL WHERE doc_id = ?1")?.execute([id.to_string()])?;
        Ok(())
    }

    // ---- sync, sans-I/O ----

    /// Build the next sync request: up to `limits.push_docs_max` outbox documents, each with
    /// only the changes after the heads the server acknowledged, within the body budget.
    pub fn prepare_sync(&self, limits: &Limits) -> Result<SyncRequest, ReplicaError> {
        self.prepare_round(limits, &RoundPlan::whole(limits))
    }

    /// Build the next request as `plan` shapes it for the link: the outbox in the order a
    /// kader needs it (the registry, then the newest sessions: a link that dies early has
    /// carried today's records), within `plan.push_bytes_max` of changes. A document whose
    /// changes do not fit goes as its first changes that do (at least one change), each
    /// such piece committed and acknowledged on its own.
    pub fn prepare_round(&self, limits: &Limits, plan: &RoundPlan) -> Result<SyncRequest, ReplicaError> {
        let mut req = SyncRequest::new(self.device, self.cursor()?);
        req.scope_digest = self.scope()?.map(|s| s.digest().to_vec());
        req.store = meta_get(&self.conn, "store")?.and_then(|s| s.parse().ok());
        req.page_bytes_max = plan.page_bytes_max;
        req.pieces = plan.pieces.then_some(true);
        if !plan.pull {
            req.pull = Some(false);
        }
        req.dropped = self.dropped_unreported(limits.push_docs_max)?;
        let mut stmt = self.conn.prepare_cached(
            "SELECT doc_id, kind, posyandu, server_heads FROM docs WHERE dirty = 1 AND rejected IS NULL
             ORDER BY kind = 'registry' DESC,
                      (SELECT MAX(session_date) FROM visits v WHERE v.doc_id = docs.doc_id) DESC, doc_id",
        )?;
        let mut rows = stmt.query([])?;
        let budget = plan.push_bytes_max;
        let mut used = 0usize;
        let mut refused = Vec::new();
        while let Some(r) = rows.next()? {
            if req.push.len() >= limits.push_docs_max {
                break;
            }
            let doc_s: String = r.get(0)?;
            let id: DocId = doc_s.parse().map_err(|_| ReplicaError::BadResponse("stored doc id".into()))?;
            let kind = DocKind::parse(&r.get::<_, String>(1)?).ok_or(ReplicaError::Corrupt(id))?;
            let posyandu: PosyanduId = r.get::<_, String>(2)?.parse().map_err(|_| ReplicaError::Corrupt(id))?;
            let base = heads_from(&r.get::<_, Vec<u8>>(3)?);
            // The kept copy when it is current: a sync costs what changed, not a parse of
            // the whole session.
            let am = self.loaded.borrow_mut().take(&self.conn, id)?.ok_or(ReplicaError::Corrupt(id))?;
            self.loaded.borrow_mut().keep(id, am.clone());
            let heads = Heads::new(am.get_heads());
            // A document the server never acknowledged goes whole, compacted (the stored form
            // may carry appended captures).
            let changes = if base.is_empty() { am.save() } else { am.save_after(base.as_slice()) };
            // The stored form bounds the saved size from above; save only when it is over.
            let saved_len = match stored::stored_len(&self.conn, id)? {
                _ if base.is_empty() => changes.len(),
                n if n > limits.doc_bytes_max => am.save().len(),
                n => n,
            };
            if let Some(code) = over_budget(&am, saved_len, &changes, limits) {
                // The server would refuse it: keep it here, quarantined, and send the rest.
                refused.push((id, code));
                continue;
            }
            if used + changes.len() <= budget {
                used += changes.len();
                req.push.push(DocPush {
                    doc: id,
                    kind,
                    posyandu,
                    base: base.to_bytes(),
                    heads: heads.to_bytes(),
                    changes,
                });
                continue;
            }
            if req.push.is_empty() {
                // Larger than the link takes at once: its first changes, up to the budget.
                let piece = posync_model::piece::first_changes(&am, &base, budget);
                req.push.push(DocPush {
                    doc: id,
                    kind,
                    posyandu,
                    base: base.to_bytes(),
                    heads: piece.heads.to_bytes(),
                    changes: piece.bytes,
                });
            }
            break;
        }
        drop(rows);
        drop(stmt);
        for (id, code) in refused {
            tracing::warn!(doc = %id, code, "document over the server's budget; kept on the device, not pushed");
            self.conn
                .prepare_cached("UPDATE docs SET rejected = ?2 WHERE doc_id = ?1")?
                .execute(params![id.to_string(), code])?;
        }
        // Pieces of documents larger than a page: tell the server what we hold of them (unless
        // this request pushes them anyway), so the next page carries on after it.
        for probe in self.held_pieces()? {
            if req.push.len() < limits.push_docs_max && req.push.iter().all(|p| p.doc != probe.doc) {
                req.push.push(probe);
            }
        }
        Ok(req)
    }

    /// Empty pushes reporting the heads held of documents that came in part so far.
    fn held_pieces(&self) -> Result<Vec<DocPush>, ReplicaError> {
        let mut stmt = self
            .conn
            .prepare("SELECT doc_id, kind, posyandu, server_heads FROM docs WHERE piece = 1 AND rejected IS NULL")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, Vec<u8>>(3)?))
        })?;
        let mut probes = Vec::new();
        for row in rows {
            let (doc_s, kind, posyandu, server_heads) = row?;
            let doc: DocId = doc_s.parse().map_err(|_| ReplicaError::BadResponse("stored doc id".into()))?;
            let kind = DocKind::parse(&kind).ok_or(ReplicaError::Corrupt(doc))?;
            let posyandu: PosyanduId = posyandu.parse().map_err(|_| ReplicaError::Corrupt(doc))?;
            probes.push(DocPush {
                doc,
                kind,
                posyandu,
                base: server_heads.clone(),
                heads: server_heads,
                changes: Vec::new(),
            });
        }
        Ok(probes)
    }

    /// The push and page budgets this replica learnt for its link (see [`RoundPlan`]).
    pub fn link_budgets(&self, limits: &Limits) -> Result<RoundPlan, ReplicaError> {
        let read = |key: &str| -> Result<Option<usize>, ReplicaError> {
            Ok(meta_get(&self.conn, key)?.and_then(|v| v.parse().ok()))
        };
        let start = RoundPlan::start(limits);
        Ok(RoundPlan {
            push_bytes_max: read("push_budget")?.unwrap_or(start.push_bytes_max),
            page_bytes_max: Some(
                read("page_budget")?.map_or(start.page_bytes_max.unwrap_or(PAGE_BUDGET_MIN as u32), |p| p as u32),
            ),
            pull: true,
            pieces: true,
        })
    }

    /// Remember the budgets for the next run.
    pub fn save_link_budgets(&self, plan: &RoundPlan) -> Result<(), ReplicaError> {
        meta_set(&self.conn, "push_budget", &plan.push_bytes_max.to_string())?;
        if let Some(p) = plan.page_bytes_max {
            meta_set(&self.conn, "page_budget", &p.to_string())?;
        }
        Ok(())
    }

    /// Apply a server answer in one transaction: acknowledgements, pulled documents, purges,
    /// and the new cursor together, or none of them.
    pub fn apply_response(&mut self, resp: &SyncResponse) -> Result<ApplyReport, ReplicaError> {
        let stored_cursor = self.cursor()?;
        let held_scope = self.scope()?;
        let tx = self.conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut actor = self.device.actor_for(incarnation_in(&tx)?);
        // What the whole answer may make Automerge decode on this phone.
        let mut used = guard::Usage::default();
        let mut report = ApplyReport { cursor: resp.cursor, more: resp.more, ..Default::default() };
        // A new scope: drop what left it, and if it grew, pull from the start (the cursor was
        // obtained without the new posyandu). A request at cursor 0 was already answered
        // under the new scope.
        let mut restart = false;
        if let Some(list) = &resp.scope {
            let scope = Scope::new(list.iter().cloned());
            report.purged = apply_scope(&tx, &scope)?;
            let grew = !held_scope.as_ref().is_some_and(|held| scope.is_subset(held));
            restart = grew && stored_cursor > 0;
            let json = serde_json::to_string(list).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
            tx.prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('scope', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            )?
            .execute([json])?;
        }
        if let Some(incarnation) = resp.store {
            let seen = meta_get(&tx, "store")?.and_then(|s| s.parse::<u32>().ok());
            if seen.is_some_and(|seen| seen != incarnation) {
                // The server was restored from a backup: it may lack changes it once
                // acknowledged, even whole documents. Everything held here goes again (the
                // server keeps what it has, once), and the pull starts over.
                tracing::warn!(device = %self.device, "server store restored: re-sending every held document");
                tx.prepare_cached("UPDATE docs SET server_heads = X'', dirty = 1")?.execute([])?;
                restart = true;
                report.store_restored = true;
            }
            meta_set(&tx, "store", &incarnation.to_string())?;
        }
        for ack in &resp.acks {
            let acked = Heads::from_bytes(&ack.heads).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
            // An acknowledgement records at the server what we hold: a piece is reported. At
            // cursor 0 the server forgets what a request does not report (the device may be
            // starting over), so a document held ahead of the cursor is reported until the
            // cursor has moved.
            let report_again = restart || (stored_cursor == 0 && resp.cursor == 0);
            let n = tx
                .prepare_cached(
                    "UPDATE docs SET server_heads = ?2, dirty = (heads != ?2), piece = (piece AND ?3)
                     WHERE doc_id = ?1",
                )?
                .execute(params![ack.doc.to_string(), acked.to_bytes(), report_again])?;
            report.acked += n;
        }
        let mut cursor_ok = true;
        // Documents to keep loaded once this answer is committed.
        let mut keep = Vec::new();
        for pull in &resp.docs {
            let server_heads = Heads::from_bytes(&pull.heads).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
            let held = self.loaded.borrow_mut().take(&tx, pull.doc)?;
            let before = held.as_ref().map(|h| Heads::new(h.get_heads()));
            let mut rebuilt = false;
            let bad = |e: &dyn std::fmt::Display| ReplicaError::BadResponse(format!("doc {}: {e}", pull.doc));
            // The server's whole copy, when it acknowledged everything we hold: loaded, not merged.
            let adopted = match &before {
                Some(b) if guard::starts_with_document(&pull.changes) && *b == server_heads_of(&tx, pull.doc)? => {
                    adopt(&pull.changes, b, &mut used).map_err(|e| bad(&e))?
                }
                _ => None,
            };
            let took_whole = adopted.is_some();
            let (mut am, claims) = if let Some(theirs) = adopted {
                report.adopted += 1;
                theirs
            } else {
                let mut am = held.clone().unwrap_or_else(Automerge::new);
                match guard::apply(&mut am, &pull.changes, &guard::Budget::PULL, &mut used) {
                    Ok(claims) => (am, claims),
                    Err(guard::ApplyError::SeqClash { .. }) if held.is_some() => {
                        // The server holds a change of ours with the same (actor, seq) as one this
                        // file wrote since: it was restored or copied. Record our unacknowledged
                        // edits again under a new actor, then take the server's changes.
                        actor = self.device.actor_for(bump_incarnation(&tx)?);
                        let mine = held.as_ref().ok_or_else(|| bad(&"no local copy"))?;
                        let acked = server_heads_of(&tx, pull.doc)?;
                        let mut am = rebuilt_on(mine, &acked, actor.clone(), unix_now())?;
                        rebuilt = true;
                        let claims = guard::apply(&mut am, &pull.changes, &guard::Budget::PULL, &mut used)
                            .map_err(|e| bad(&e))?;
                        (am, claims)
                    }
                    Err(e) => return Err(bad(&e)),
                }
            };
            am.set_actor(actor.clone());
            if !am.get_missing_deps(&[]).is_empty() {
                // The server assumed we had changes we do not (say, this file was restored from
                // a backup). Push our copy whole, which tells the server what we really have,
                // and pull from the start of the feed.
                tracing::warn!(doc = %pull.doc, "pulled changes miss dependencies; re-pushing and re-pulling");
                tx.prepare_cached("UPDATE docs SET server_heads = X'', dirty = 1 WHERE doc_id = ?1")?
                    .execute([pull.doc.to_string()])?;
                cursor_ok = false;
                continue;
            }
            // Everything sent must have loaded, and the server's heads must now be held.
            if !am.get_missing_deps(&claims).is_empty() || !am.get_missing_deps(server_heads.as_slice()).is_empty() {
                return Err(bad(&"pulled changes did not load whole"));
            }
            let meta = doc::read_meta(&am)?;
            if meta.kind != pull.kind || meta.posyandu != pull.posyandu {
                return Err(ReplicaError::BadResponse(format!("doc {} identity differs from its content", pull.doc)));
            }
            // A sync costs what it brought: the pulled changes are appended and only the
            // records they reach projected again, unless the document is new here (or was
            // rebuilt), which is saved and projected whole.
            // Automerge rebuilds changes from its columns when asked: ask once. Their
            // operations name every record they reach, a losing concurrent write included
            // (it opens a conflict without changing any value, so a diff of the two states
            // would not show it).
            let prior = before.filter(|b| !rebuilt && !b.is_empty());
            if took_whole && let Some(b) = &prior {
                // The server's whole copy, loaded: stored as it came (no save, no chunk). It is
                // sent whole when we lack at least half of it, and then most of its records are
                // new here: projecting them all costs less than rebuilding the new changes from
                // the copy's columns to list them. A copy sent whole for another reason (the
                // server did not know what we held) is narrowed to what its changes reach.
                let records =
                    if doc::lacks_most(&am, b.as_slice()) { None } else { doc::touched_records(&am, meta.kind, b) };
                stored::save_adopted(&tx, pull.doc, &am, &pull.changes, records.as_deref())?;
            } else {
                let new = prior.map(|b| doc::NewChanges::after(&am, b.as_slice()));
                match new.as_ref().and_then(|n| doc::touched_records_of(&am, meta.kind, n).map(|t| (n, t))) {
                    Some((n, touched)) => stored::save_pulled(&tx, pull.doc, &am, n, &touched)?,
                    None => {
                        save_doc(&tx, pull.doc, &am, false)?;
                    }
                }
            }
            tx.prepare_cached(
                "UPDATE docs SET server_heads = ?2, dirty = (heads != ?2), piece = ?3 WHERE doc_id = ?1",
            )?
            .execute(params![pull.doc.to_string(), server_heads.to_bytes(), pull.piece])?;
            report.pulled += 1;
            // Kept loaded only if it was here before: a first pull of many documents must not
            // push out the ones being worked on.
            if held.is_some() {
                keep.push((pull.doc, am));
            }
        }
        let cursor = if cursor_ok && !restart { resp.cursor } else { 0 };
        report.cursor = cursor;
        tx.prepare_cached(
            "INSERT INTO meta (key, value) VALUES ('cursor', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
        )?
        .execute([cursor.to_string()])?;
        tx.commit()?;
        for (id, am) in keep {
            self.loaded.borrow_mut().keep(id, am);
        }
        Ok(report)
    }

    /// The server this device enrolled with, if it remembers one.
    pub fn server_url(&self) -> Result<Option<String>, ReplicaError> {
        meta_get(&self.conn, "server")
    }

    /// Remember the server this device enrolled with (the next syncs go there).
    pub fn set_server_url(&self, url: &str) -> Result<(), ReplicaError> {
        meta_set(&self.conn, "server", url)
    }

    /// The scope (posyandu) the server last told this device it has; `None` before the
    /// first sync.
    pub fn scope(&self) -> Result<Option<Scope>, ReplicaError> {
        let json: Option<String> = self
            .conn
            .prepare_cached("SELECT value FROM meta WHERE key = 'scope'")?
            .query_row([], |r| r.get(0))
            .optional()?;
        json.map(|j| {
            serde_json::from_str::<Vec<PosyanduId>>(&j)
                .map(Scope::new)
                .map_err(|_| ReplicaError::BadResponse("stored scope".into()))
        })
        .transpose()
    }

    // ---- credential ----

    /// Store the device credential from an enrolment (replacing any earlier one).
    pub fn save_credential(&mut self, c: &Credential) -> Result<(), ReplicaError> {
        let json = serde_json::to_string(c).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
        if let Some(secrets) = &self.secrets {
            secrets.put(CREDENTIAL_KEY, &json).map_err(ReplicaError::Io)?;
            self.conn.prepare_cached("DELETE FROM meta WHERE key = 'credential'")?.execute([])?;
            return Ok(());
        }
        self.conn
            .prepare_cached(
                "INSERT INTO meta (key, value) VALUES ('credential', ?1) ON CONFLICT(key) DO UPDATE SET value = ?1",
            )?
            .execute([json])?;
        Ok(())
    }

    /// The stored device credential, if this device was enrolled.
    pub fn credential(&self) -> Result<Option<Credential>, ReplicaError> {
        let json: Option<String> = match &self.secrets {
            Some(secrets) => secrets.get(CREDENTIAL_KEY),
            None => self
                .conn
                .prepare_cached("SELECT value FROM meta WHERE key = 'credential'")?
                .query_row([], |r| r.get(0))
                .optional()?,
        };
        json.map(|j| serde_json::from_str(&j).map_err(|_| ReplicaError::BadResponse("stored credential".into())))
            .transpose()
    }

    /// Keep the device credential in the app's secret store from now on; a credential the
    /// file already holds (an app upgraded to a secret store) moves there and leaves the file.
    pub fn use_secret_store(&mut self, secrets: Box<dyn SecretStore>) -> Result<(), ReplicaError> {
        let in_file = self.credential()?;
        self.secrets = Some(secrets);
        if let Some(c) = in_file {
            self.save_credential(&c)?;
            // The deleted row's bytes may linger in free pages and the log: overwrite them.
            self.conn.execute_batch("PRAGMA secure_delete = ON; VACUUM; PRAGMA wal_checkpoint(TRUNCATE)")?;
        }
        Ok(())
    }

    /// Fold the write-ahead log into the main file (so a plain file copy is a complete backup).
    pub fn checkpoint(&self) -> Result<(), ReplicaError> {
        self.conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
        Ok(())
    }

    /// Forget what the server acknowledged for `doc`, so the next push sends it whole.
    /// The answer to `missing_dependencies`.
    pub fn reset_server_heads(&mut self, id: DocId) -> Result<(), ReplicaError> {
        self.conn
            .prepare_cached("UPDATE docs SET server_heads = X'', dirty = 1 WHERE doc_id = ?1")?
            .execute([id.to_string()])?;
        Ok(())
    }
}

/// The error code the server would refuse a push of `am` with (`changes` after what it
/// acknowledged), checked before sending: the reference client never sends what it knows
/// the server refuses.
fn over_budget(am: &Automerge, saved_len: usize, changes: &[u8], limits: &Limits) -> Option<&'static str> {
    if am.stats().num_ops > limits.doc_ops_max as u64 || saved_len > limits.doc_bytes_max {
        return Some("document_too_large");
    }
    match guard::inspect(changes, &limits.push_budget(), &mut guard::Usage::default()) {
        Err(guard::InputError::TooLarge { .. }) => Some("changes_too_large"),
        _ => None,
    }
}

/// The person's latest measurement before `date` on this device.
fn previous_in(conn: &Connection, person: PersonId, date: time::Date) -> Result<Option<Previous>, ReplicaError> {
    let row: Option<(String, Option<i64>, Option<i64>)> = conn
        .prepare_cached(
            "SELECT session_date, weight_g, length_mm FROM visits
             WHERE person_id = ?1 AND session_date < ?2 ORDER BY session_date DESC LIMIT 1",
        )?
        .query_row(params![person.to_string(), format_date(date)], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    Ok(row.and_then(|(d, weight_g, length_mm)| {
        posync_model::record::parse_date(&d).map(|date| Previous { date, weight_g, length_mm })
    }))
}

/// A replica created before documents came in pieces lacks `docs.piece`, and one created
/// before captures were appended lacks `docs.chunks`.
fn add_docs_columns(tx: &Transaction<'_>) -> Result<(), ReplicaError> {
    for column in ["piece", "chunks"] {
        let has: bool =
            tx.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('docs') WHERE name = ?1", [column], |r| r.get(0))?;
        if !has {
            tx.execute_batch(&format!("ALTER TABLE docs ADD COLUMN {column} INTEGER NOT NULL DEFAULT 0;"))?;
        }
    }
    Ok(())
}

/// A replica created by an app before schema 2 lacks the visit columns it added.
fn add_columns_of_schema_2(tx: &Transaction<'_>) -> Result<(), ReplicaError> {
    let has: bool =
        tx.query_row("SELECT COUNT(*) > 0 FROM pragma_table_info('visits') WHERE name = 'life_group'", [], |r| {
            r.get(0)
        })?;
    if !has {
        tx.execute_batch(
            "ALTER TABLE visits ADD COLUMN life_group TEXT NOT NULL DEFAULT 'balita';
             ALTER TABLE visits ADD COLUMN services TEXT NOT NULL DEFAULT '{}';",
        )?;
    }
    Ok(())
}

/// Drop every document outside `scope` with its projected rows, except those holding changes
/// the server has not acknowledged: those stay, quarantined as `out_of_scope`, so nothing
/// captured is ever lost on a re-scope. Returns how many were dropped.
fn apply_scope(tx: &Transaction<'_>, scope: &Scope) -> Result<usize, ReplicaError> {
    let held: Vec<(String, String, bool)> = tx
        .prepare("SELECT doc_id, posyandu, dirty FROM docs")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut purged = 0;
    for (doc, posyandu, dirty) in held {
        let inside = posyandu.parse::<PosyanduId>().is_ok_and(|p| scope.allows(&p));
        if inside {
            // Refused earlier for scope, in scope now (an assignment was fixed): push it again.
            tx.prepare_cached(
                "UPDATE docs SET rejected = NULL WHERE doc_id = ?1 AND rejected IN ('out_of_scope', 'forbidden')",
            )?
            .execute([&doc])?;
            continue;
        }
        if dirty {
            tx.prepare_cached("UPDATE docs SET rejected = COALESCE(rejected, 'out_of_scope') WHERE doc_id = ?1")?
                .execute([&doc])?;
            continue;
        }
        tx.prepare_cached("DELETE FROM visits WHERE doc_id = ?1")?.execute([&doc])?;
        tx.prepare_cached("DELETE FROM people WHERE doc_id = ?1")?.execute([&doc])?;
        purged += tx.prepare_cached("DELETE FROM docs WHERE doc_id = ?1")?.execute([&doc])?;
        stored::drop_chunks(tx, &doc)?;
    }
    Ok(purged)
}

/// What an enrolled device keeps to authenticate: its refresh token and the latest access
/// token. On a real phone this belongs in the platform keystore; here it is in the replica.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Credential {
    pub user: posync_model::UserId,
    pub role: posync_model::Role,
    pub refresh_token: String,
    pub access: Option<posync_proto::AccessToken>,
}

/// The heads the server acknowledged for a document.
fn server_heads_of(tx: &Transaction<'_>, id: DocId) -> Result<Heads, ReplicaError> {
    let bytes: Option<Vec<u8>> = tx
        .prepare_cached("SELECT server_heads FROM docs WHERE doc_id = ?1")?
        .query_row([id.to_string()], |r| r.get(0))
        .optional()?;
    Ok(bytes.map(|b| heads_from(&b)).unwrap_or_default())
}

/// The server's whole copy of a document, loaded instead of merged into ours, when it holds
/// every change of ours (`ours`: the server acknowledged all of them, so its copy is ours plus
/// what others wrote). Merging decodes the whole pulled document into changes and splices each
/// into ours, about twice the work of loading it; every phone's first pull after pushing is
/// such a pull. `None` when the loaded copy lacks a change of ours after all: merge it then
/// (its decoding counts twice against the answer's budget).
fn adopt(
    bytes: &[u8],
    ours: &Heads,
    used: &mut guard::Usage,
) -> Result<Option<(Automerge, Vec<automerge::ChangeHash>)>, guard::ApplyError> {
    let mut theirs = Automerge::new();
    let claims = guard::apply(&mut theirs, bytes, &guard::Budget::PULL, used)?;
    let whole = theirs.get_missing_deps(&[]).is_empty() && theirs.get_missing_deps(ours.as_slice()).is_empty();
    Ok(whole.then_some((theirs, claims)))
}

/// `am` as the server acknowledged it (`acked`; the genesis alone if nothing was), plus one
/// change by `actor` carrying every value `am` holds beyond that.
fn rebuilt_on(am: &Automerge, acked: &Heads, actor: ActorId, now: i64) -> Result<Automerge, ReplicaError> {
    let meta = doc::read_meta(am)?;
    let mut base = match am.fork_at(acked.as_slice()) {
        Ok(fork) if !acked.is_empty() => fork,
        _ => doc::genesis(&meta, actor.clone())?,
    };
    base.set_actor(actor);
    doc::copy_values(am, &mut base, now)?;
    Ok(base)
}

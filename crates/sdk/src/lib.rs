//! The device SDK: the replica's API for an app, through UniFFI. One definition here gives
//! Kotlin (Android), Swift (iOS) and Python bindings (`uniffi-bindgen generate --library`).
//!
//! Across the boundary: plain records and enums, errors as one typed enum ([`SdkError`]),
//! never a panic (every call catches its own failures and maps them). Capture works offline;
//! [`Device::sync_now`] is the one entry point a background job (WorkManager,
//! BGTaskScheduler) calls: bounded in time, resumable (whatever a cut run achieved is kept and
//! the next run carries on), reporting progress after every round.

use posync_model::validate::Severity;
use posync_model::{Field, FieldValue, LifeGroup, PersonId, PosyanduId, Sex};
use posync_replica::{HttpSync, NewPerson, NewVisit, Replica, ReplicaError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

uniffi::setup_scaffolding!();

/// Every failure an app can meet, by what it should do about it.
#[derive(Debug, thiserror::Error, uniffi::Error)]
pub enum SdkError {
    /// The values are not acceptable (an impossible measurement, a malformed NIK or date):
    /// show `message` to the kader; nothing was recorded.
    #[error("{message}")]
    Invalid { message: String },
    /// This phone is not enrolled (or its enrolment was refused): ask the admin for a code.
    #[error("{message}")]
    NotEnrolled { message: String },
    /// The server could not be reached, or the run hit its time bound: try again later;
    /// everything already done is kept.
    #[error("{message}")]
    Offline { message: String },
    /// The server refused the request (revoked device, out of scope, ...).
    #[error("{code}: {message}")]
    Refused { code: String, message: String },
    /// The phone's storage is full or the replica file cannot be used.
    #[error("{message}")]
    Storage { message: String },
    /// The app cancelled the sync ([`Device::cancel`]); what it achieved is kept.
    #[error("the sync was cancelled; what it achieved is kept")]
    Cancelled,
    /// The replica is encrypted and the key given (or no key) does not open it: open it with
    /// the key it was created with, from the Keystore/Keychain.
    #[error("{message}")]
    WrongKey { message: String },
}

impl From<ReplicaError> for SdkError {
    fn from(e: ReplicaError) -> Self {
        let message = e.to_string();
        match e {
            ReplicaError::Rejected(_) | ReplicaError::Doc(_) => SdkError::Invalid { message },
            ReplicaError::NotEnrolled | ReplicaError::Enrolment(_) => SdkError::NotEnrolled { message },
            ReplicaError::Network(_) | ReplicaError::DeadlineExceeded(_) | ReplicaError::Tls(_) => {
                SdkError::Offline { message }
            }
            ReplicaError::Server { code, .. } => SdkError::Refused { code: code.as_str().to_owned(), message },
            ReplicaError::WrongKey => SdkError::WrongKey { message },
            ReplicaError::NotEncrypted | ReplicaError::BadKeyLength(_) => SdkError::Invalid { message },
            _ => SdkError::Storage { message },
        }
    }
}

fn invalid(message: impl Into<String>) -> SdkError {
    SdkError::Invalid { message: message.into() }
}

/// A person (sasaran) as the app registers them.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PersonInput {
    pub posyandu: String,
    pub name: String,
    /// `F` or `M`.
    pub sex: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub nik: Option<String>,
    pub mother_nik: Option<String>,
    pub mother_name: String,
    pub address: String,
    pub kia_book: bool,
}

/// A visit as the kader enters it. Measurements in grams and millimetres.
#[derive(Debug, Clone, uniffi::Record)]
pub struct VisitInput {
    pub posyandu: String,
    /// The session day, `YYYY-MM-DD`.
    pub date: String,
    /// A registered person's id, or `None` for someone not registered.
    pub person_id: Option<String>,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub muac_mm: Option<i64>,
    /// Life-cycle group (`balita`, `ibu_hamil`, ...); `None`: by age.
    pub group: Option<String>,
    /// Antigens given at this visit (`BCG`, `MR-1`, ...).
    pub immunisations: Vec<String>,
    pub notes: String,
    /// The group's other measurements and services by key, as text: `bp_systolic` → `"110"`,
    /// `iron_tablets` → `"30"`, `growth_card` → `"true"` (SYNC-v1 §3.6 lists every key).
    pub services: HashMap<String, String>,
}

/// A field two phones wrote differently, waiting for the bidan.
#[derive(Debug, Clone, uniffi::Record)]
pub struct DeviceConflict {
    pub document_id: String,
    /// `visits` or `people`.
    pub collection: String,
    pub record_id: String,
    pub field: String,
    /// Each value as written, the one shown now first.
    pub values: Vec<String>,
}

/// One finding about a value, in Indonesian and English.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Finding {
    pub field: String,
    pub code: String,
    pub is_error: bool,
    pub message_id: String,
    pub message_en: String,
}

/// What a capture recorded, and what the kader should see.
#[derive(Debug, Clone, uniffi::Record)]
pub struct Recorded {
    pub session_id: String,
    pub visit_id: String,
    pub person_id: String,
    pub warnings: Vec<Finding>,
    /// Weight-for-age z-score (children under five), as WHO rounds it.
    pub weight_for_age_z: Option<f64>,
    /// Weight-for-age status in Indonesian (`Berat badan normal`, ...).
    pub weight_for_age_status: Option<String>,
}

/// A visit as the app's list shows it.
#[derive(Debug, Clone, uniffi::Record)]
pub struct VisitRow {
    pub session_id: String,
    pub visit_id: String,
    pub person_id: String,
    pub posyandu: String,
    pub session_date: String,
    pub name: String,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    /// Fields with values from two phones, waiting for the bidan (shown "under review").
    pub under_review: Vec<String>,
}

/// A registered person as the app's register screen lists them.
#[derive(Debug, Clone, uniffi::Record)]
pub struct PersonListing {
    pub person_id: String,
    pub posyandu: String,
    pub name: String,
    /// `F` or `M`.
    pub sex: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub mother_name: String,
    pub nik: Option<String>,
}

/// How far a sync has come: after every round.
#[derive(Debug, Clone, uniffi::Record)]
pub struct SyncProgress {
    pub rounds: u64,
    pub pushed_docs: u64,
    pub pulled_docs: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// The app's progress display (a notification, a bar).
#[uniffi::export(with_foreign)]
pub trait ProgressListener: Send + Sync {
    fn on_progress(&self, progress: SyncProgress);
}

/// Where the app keeps secrets: Android Keystore-backed storage, the iOS Keychain. The SDK
/// keeps the device credential (its refresh token) there instead of in the replica file.
#[uniffi::export(with_foreign)]
pub trait SecretStore: Send + Sync {
    /// The value under `key`, if any.
    fn get(&self, key: String) -> Option<String>;
    /// Keep `value` under `key`; `false` if it could not be kept.
    fn put(&self, key: String, value: String) -> bool;
}

/// The app's store as the replica's.
struct AppSecrets(Arc<dyn SecretStore>);

impl posync_replica::SecretStore for AppSecrets {
    fn get(&self, key: &str) -> Option<String> {
        self.0.get(key.to_owned())
    }

    fn put(&self, key: &str, value: &str) -> Result<(), String> {
        if self.0.put(key.to_owned(), value.to_owned()) { Ok(()) } else { Err("the app's secret store refused".into()) }
    }
}

/// The phone's replica: one per app, opened once.
#[derive(uniffi::Object)]
pub struct Device {
    replica: Mutex<Replica>,
    runtime: tokio::runtime::Runtime,
    /// Set by [`Device::cancel`] from any thread; the running sync stops at its next await.
    cancel: Arc<AtomicBool>,
}

/// How often a running sync looks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(50);

fn date(s: &str, what: &str) -> Result<time::Date, SdkError> {
    posync_model::record::parse_date(s).ok_or_else(|| invalid(format!("{what} must be YYYY-MM-DD")))
}

fn sex(s: &str) -> Result<Sex, SdkError> {
    Sex::parse(s).ok_or_else(|| invalid("sex must be F or M"))
}

fn posyandu(s: &str) -> Result<PosyanduId, SdkError> {
    s.parse().map_err(|_| invalid(format!("{s:?} is not a posyandu id")))
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

#[uniffi::export]
impl Device {
    /// Open (or create) the replica file at `path`.
    #[uniffi::constructor]
    pub fn open(path: String) -> Result<Arc<Self>, SdkError> {
        Device::with_replica(Replica::open(path)?)
    }

    /// Open (or create) the replica at `path` encrypted with SQLCipher. `key` is 32 random
    /// bytes the app generates once and keeps in the Android Keystore / iOS Keychain (a raw
    /// key, not a passphrase). A key that does not open the file is [`SdkError::WrongKey`];
    /// a key for a replica created unencrypted, or not of 32 bytes, is [`SdkError::Invalid`].
    #[uniffi::constructor]
    pub fn open_encrypted(path: String, key: Vec<u8>) -> Result<Arc<Self>, SdkError> {
        Device::with_replica(Replica::open_encrypted(path, &key)?)
    }

    /// Open (or create) the replica at `path`, keeping the device credential in the app's
    /// `secrets` rather than in the file (a credential already in the file moves there).
    #[uniffi::constructor]
    pub fn open_with_secret_store(path: String, secrets: Arc<dyn SecretStore>) -> Result<Arc<Self>, SdkError> {
        let device = Device::open(path)?;
        device.lock()?.use_secret_store(Box::new(AppSecrets(secrets)))?;
        Ok(device)
    }

    /// This phone's device id.
    pub fn device_id(&self) -> Result<String, SdkError> {
        Ok(self.lock()?.device().to_string())
    }

    /// Enrol with a one-time code from the admin; the phone remembers the server.
    pub fn enrol(&self, server_url: String, code: String, label: String) -> Result<String, SdkError> {
        let mut r = self.lock()?;
        let client = HttpSync::enrolled(&server_url);
        let resp = self.runtime.block_on(posync_replica::enrol_via(&client, &code, &label, &mut r))?;
        r.set_server_url(&server_url)?;
        Ok(resp.user.to_string())
    }

    /// Bytes this replica takes on the phone (the file and its write-ahead log), for the
    /// app's storage screen.
    pub fn storage_used(&self) -> Result<u64, SdkError> {
        Ok(self.lock()?.storage_bytes())
    }

    /// Keep only the sessions of the current month and the `months` before it (plus the
    /// registry); `None` keeps everything. Older sessions go at the next sync once the
    /// server holds all of them; nothing unsynced is ever dropped.
    pub fn set_window_months(&self, months: Option<u32>) -> Result<(), SdkError> {
        self.lock()?.set_window_months(months)?;
        Ok(())
    }

    /// Bring back the session of `posyandu` on `date` (YYYY-MM-DD) that the window dropped:
    /// fetched whole from the server. Its visits are then listed again.
    pub fn fetch_session(&self, posyandu_id: String, date_text: String) -> Result<(), SdkError> {
        let doc = posync_model::DocId::for_session(&posyandu(&posyandu_id)?, date(&date_text, "date")?);
        let mut r = self.lock()?;
        let server = r.server_url()?.ok_or(SdkError::NotEnrolled { message: "enrol this phone first".into() })?;
        let client = HttpSync::enrolled(&server);
        self.runtime.block_on(client.fetch(&mut r, doc))?;
        Ok(())
    }

    /// Sync with another server from now on (a puskesmas that moved, or moved to HTTPS).
    pub fn set_server(&self, server_url: String) -> Result<(), SdkError> {
        self.lock()?.set_server_url(&server_url)?;
        Ok(())
    }

    /// Stop the sync running now, from any thread (the user left the screen, the OS ends the
    /// background task). It stops at its next network wait; every round it completed is kept,
    /// and the next sync carries on from there. Does nothing when no sync runs.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::SeqCst);
    }

    /// Register a person in the posyandu's registry; their id.
    pub fn register_person(&self, person: PersonInput) -> Result<String, SdkError> {
        let p = NewPerson {
            name: person.name,
            sex: sex(&person.sex)?,
            birth_date: date(&person.birth_date, "birth_date")?,
            mother_name: person.mother_name,
            nik: person.nik,
            mother_nik: person.mother_nik,
            address: person.address,
            rt: None,
            rw: None,
            pregnant: false,
            kia_book: person.kia_book,
        };
        let at = posyandu(&person.posyandu)?;
        Ok(self.lock()?.register_person(&at, p, now())?.to_string())
    }

    /// Record a visit, offline. Errors refuse it (nothing recorded); warnings come back.
    pub fn record_visit(&self, visit: VisitInput) -> Result<Recorded, SdkError> {
        let on = date(&visit.date, "date")?;
        let person_id = match &visit.person_id {
            Some(id) => id.parse::<PersonId>().map_err(|_| invalid("person_id is not an id"))?,
            None => PersonId::new_random(),
        };
        let new = NewVisit {
            person_id,
            name: visit.name,
            sex: sex(&visit.sex)?,
            birth_date: date(&visit.birth_date, "birth_date")?,
            weight_g: visit.weight_g,
            length_mm: visit.length_mm,
            lying: None,
            head_circ_mm: None,
            muac_mm: visit.muac_mm,
            immunisations: visit.immunisations.into_iter().map(|a| (a, on)).collect(),
            vitamin_a: None,
            notes: visit.notes,
            group: visit
                .group
                .as_deref()
                .map(|g| LifeGroup::parse(g).ok_or_else(|| invalid("unknown group")))
                .transpose()?,
            services: services(visit.services)?,
        };
        let mut r = self.lock()?;
        let session = r.start_session(&posyandu(&visit.posyandu)?, on)?;
        let captured = r.capture_visit(session, new, now())?;
        let z = posync_model::growth::zscores(&posync_model::growth::Measurement::of_visit(&captured.visit, on));
        let class = posync_model::growth::classify(&z);
        Ok(Recorded {
            session_id: session.to_string(),
            visit_id: captured.visit.visit_id.to_string(),
            person_id: person_id.to_string(),
            warnings: captured.warnings.into_iter().map(finding).collect(),
            weight_for_age_z: z.wfa.map(posync_model::growth::who_rounded),
            weight_for_age_status: class.wfa.map(|s| s.label_id().to_owned()),
        })
    }

    /// Change one measurement of a visit (grams, millimetres), offline.
    pub fn edit_measurement(
        &self,
        session_id: String,
        visit_id: String,
        field: String,
        value: i64,
    ) -> Result<(), SdkError> {
        let f = Field::from_key(&field).ok_or_else(|| invalid(format!("unknown field {field:?}")))?;
        let session = session_id.parse().map_err(|_| invalid("session_id is not an id"))?;
        let visit = visit_id.parse().map_err(|_| invalid("visit_id is not an id"))?;
        self.lock()?.edit_visit(session, visit, f, FieldValue::Int(value), now())?;
        Ok(())
    }

    /// Change any field of a visit, offline, given as the app's form holds it (`"8450"` for
    /// `weight_g`, `"true"` for `kia_book`, a service's value as text); checked by the
    /// field's kind before anything is written.
    pub fn edit_field(
        &self,
        session_id: String,
        visit_id: String,
        field: String,
        value: String,
    ) -> Result<(), SdkError> {
        let f = Field::from_key(&field).ok_or_else(|| invalid(format!("unknown field {field:?}")))?;
        let v = f.parse_value(&value).ok_or_else(|| invalid(format!("{value:?} is not a {field} value")))?;
        let session = session_id.parse().map_err(|_| invalid("session_id is not an id"))?;
        let visit = visit_id.parse().map_err(|_| invalid("visit_id is not an id"))?;
        self.lock()?.edit_visit(session, visit, f, v, now())?;
        Ok(())
    }

    /// Every visit on this phone, with the fields under review.
    pub fn visits(&self) -> Result<Vec<VisitRow>, SdkError> {
        let r = self.lock()?;
        let rows = r.all_visits()?;
        Ok(rows
            .into_iter()
            .map(|v| VisitRow {
                session_id: v.doc_id,
                visit_id: v.visit_id,
                person_id: v.person_id,
                posyandu: v.posyandu,
                session_date: v.session_date,
                name: v.name,
                weight_g: v.weight_g,
                length_mm: v.length_mm,
                under_review: v.conflicts.split(',').filter(|c| !c.is_empty()).map(str::to_owned).collect(),
            })
            .collect())
    }

    /// The people registered on this phone (at `posyandu`, or everywhere with `None`), by name.
    pub fn people(&self, posyandu_id: Option<String>) -> Result<Vec<PersonListing>, SdkError> {
        let at = posyandu_id.as_deref().map(posyandu).transpose()?;
        let rows = self.lock()?.people(at.as_ref())?;
        Ok(rows
            .into_iter()
            .map(|p| PersonListing {
                person_id: p.person_id,
                posyandu: p.posyandu,
                name: p.name,
                sex: p.sex,
                birth_date: p.birth_date,
                mother_name: p.mother_name,
                nik: p.nik,
            })
            .collect())
    }

    /// The fields with values from two phones on this device, for an "under review" screen.
    pub fn conflicts(&self) -> Result<Vec<DeviceConflict>, SdkError> {
        let r = self.lock()?;
        let mut out = Vec::new();
        for id in r.doc_ids()? {
            for c in r.conflicts(id)? {
                let mut values = c.values;
                values.sort_by_key(|v| !v.winner);
                out.push(DeviceConflict {
                    document_id: id.to_string(),
                    collection: c.collection,
                    record_id: c.record_id,
                    field: c.field,
                    values: values.into_iter().map(|v| v.value.to_string()).collect(),
                });
            }
        }
        Ok(out)
    }

    /// Sync now, for at most `max_seconds`: push what was captured, pull what others did.
    /// Resumable: a cut or timed-out run keeps what it achieved. `progress` hears every round.
    pub fn sync_now(
        &self,
        max_seconds: u32,
        progress: Option<Arc<dyn ProgressListener>>,
    ) -> Result<SyncProgress, SdkError> {
        let mut r = self.lock()?;
        let server = r.server_url()?.ok_or(SdkError::NotEnrolled { message: "enrol this phone first".into() })?;
        let mut client =
            HttpSync::enrolled(&server).with_run_deadline(Duration::from_secs(u64::from(max_seconds.max(1))));
        if let Some(listener) = progress {
            client = client.with_progress(Arc::new(move |report: &posync_replica::SyncReport| {
                listener.on_progress(progress_of(report));
            }));
        }
        self.cancel.store(false, Ordering::SeqCst);
        let cancel = self.cancel.clone();
        // Dropping the sync between awaits is safe: a round's answer is applied to the replica
        // in one synchronous transaction, never across an await.
        let report = self.runtime.block_on(async {
            tokio::select! {
                done = client.sync(&mut r) => done.map_err(SdkError::from),
                () = cancelled(cancel) => Err(SdkError::Cancelled),
            }
        })?;
        Ok(progress_of(&report))
    }
}

impl Device {
    fn with_replica(replica: Replica) -> Result<Arc<Self>, SdkError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SdkError::Storage { message: e.to_string() })?;
        let cancel = Arc::new(AtomicBool::new(false));
        Ok(Arc::new(Device { replica: Mutex::new(replica), runtime, cancel }))
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Replica>, SdkError> {
        self.replica.lock().map_err(|_| SdkError::Storage { message: "an earlier call failed midway".into() })
    }
}

/// Resolves once `flag` is set.
async fn cancelled(flag: Arc<AtomicBool>) {
    while !flag.load(Ordering::SeqCst) {
        tokio::time::sleep(CANCEL_POLL).await;
    }
}

/// The app's `key → text` services, typed by each field's kind.
fn services(given: HashMap<String, String>) -> Result<BTreeMap<Field, FieldValue>, SdkError> {
    let mut out = BTreeMap::new();
    for (key, text) in given {
        let field = Field::from_key(&key)
            .filter(|f| Field::SERVICES.contains(f))
            .ok_or_else(|| invalid(format!("{key:?} is not a service of any group")))?;
        let value = field.parse_value(&text).ok_or_else(|| invalid(format!("{text:?} is not a {key} value")))?;
        out.insert(field, value);
    }
    Ok(out)
}

fn progress_of(r: &posync_replica::SyncReport) -> SyncProgress {
    SyncProgress {
        rounds: r.rounds as u64,
        pushed_docs: r.pushed_docs as u64,
        pulled_docs: r.pulled_docs as u64,
        bytes_up: r.bytes.up,
        bytes_down: r.bytes.down,
    }
}

fn finding(i: posync_model::validate::Issue) -> Finding {
    Finding {
        field: i.field.to_owned(),
        code: i.code.to_owned(),
        is_error: i.severity == Severity::Error,
        message_id: i.message_id,
        message_en: i.message_en,
    }
}

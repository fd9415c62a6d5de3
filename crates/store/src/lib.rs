//! Server persistence behind one trait, [`Store`], made of one trait per concern: sync,
//! access, audit, review (conflicts, duplicates, invalid records) and reports.
//!
//! [`core`] holds the merge and page decisions as plain functions over bytes (no I/O), so they
//! can be tested and simulated alone; [`plan`] holds every statement and row layout, written
//! once over a [`sql::Dialect`]. [`sqlite`] (the embedded default) and [`postgres`] are thin
//! adapters that run them.

pub mod access;
pub mod cache;
pub mod core;
mod error;
pub mod migrate;
pub mod plan;
pub mod postgres;
pub mod sql;
pub mod sqlite;

pub use access::{
    Actor, ApiKeyAccess, ApiKeyRecord, AuditAction, AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport,
    NewApiKey, NewCredential, NewEnrolment, PinAttempt, PinLockout, PinRecord, UnitTree, UserRecord,
};
pub use error::StoreError;
pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use async_trait::async_trait;
use posync_model::{DeviceId, DocId, DocKind, Heads, HierarchyFile, PosyanduId, Scope, Unit, UserId, UserSpec};
use posync_proto::{DocAck, DocPull, DocPush};

/// What the server records about a document, independent of its content.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredMeta {
    pub doc: DocId,
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    /// Feed position of the document's latest change.
    pub seq: u64,
    pub heads: Heads,
}

/// A stored document with its saved bytes.
#[derive(Clone, Debug)]
pub struct StoredDoc {
    pub meta: StoredMeta,
    pub bytes: Vec<u8>,
}

/// Push transactions committed and the pushes they held (SQLite's group commit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushCommits {
    pub commits: u64,
    pub pushes: u64,
}

/// Bounds of one pulled page.
#[derive(Clone, Copy, Debug)]
pub struct PageLimits {
    pub bytes_max: usize,
    pub docs_max: usize,
    /// The device takes a document larger than `bytes_max` in pieces
    /// ([`posync_proto::DocPull::piece`]); otherwise such a document comes whole.
    pub pieces: bool,
}

/// One page of the change feed for a scope.
#[derive(Clone, Debug, Default)]
pub struct PullPage {
    pub docs: Vec<DocPull>,
    pub cursor: u64,
    pub more: bool,
}

/// Which conflicts to list.
#[derive(Clone, Debug, Default)]
pub struct ConflictFilter {
    pub posyandu: Option<PosyanduId>,
    pub field: Option<String>,
    /// Default: review only.
    pub policy: Option<posync_model::Policy>,
    /// Only conflicts about a person (or their visit) born on or after this day.
    pub born_from: Option<time::Date>,
    /// Only conflicts about a person (or their visit) born before this day.
    pub born_before: Option<time::Date>,
    /// Only conflicts open since this time or earlier (Unix seconds): the oldest first.
    pub opened_before: Option<i64>,
    /// Conflicts to skip (paging), oldest first.
    pub offset: u64,
    /// At most this many (default and bound: [`CONFLICTS_PAGE_MAX`]).
    pub limit: Option<u32>,
}

/// The most conflicts one list answer holds.
pub const CONFLICTS_PAGE_MAX: u32 = 1000;

/// One value of a conflict and who wrote it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConflictValueRecord {
    pub value: posync_model::FieldValue,
    /// The device that wrote it (`None` for a server actor).
    pub device: Option<DeviceId>,
    pub winner: bool,
}

/// An open conflict as indexed.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ConflictRecord {
    pub id: String,
    pub doc: DocId,
    pub posyandu: PosyanduId,
    pub collection: String,
    pub record_id: String,
    pub field: String,
    pub policy: posync_model::Policy,
    pub values: Vec<ConflictValueRecord>,
    pub opened_at: i64,
    pub updated_at: i64,
    /// The name of the person the conflicting record is about (the visit's child or the
    /// registered person), when the projection holds it.
    pub subject_name: Option<String>,
    /// Their birth date, `YYYY-MM-DD`.
    pub subject_birth_date: Option<String>,
}

/// A person as the duplicate list shows them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PersonSummary {
    pub person_id: posync_model::PersonId,
    pub posyandu: PosyanduId,
    pub name: String,
    pub birth_date: String,
}

/// A person seen at a posyandu, as a search lists them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PersonSeen {
    pub person_id: posync_model::PersonId,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub posyandu: PosyanduId,
    /// The last session date they were seen, `YYYY-MM-DD`.
    pub last_visit: String,
}

/// One visit of a person, and whether the server found it invalid (kept, left out of reports).
#[derive(Clone, Debug, PartialEq)]
pub struct PersonVisit {
    pub fact: posync_model::report::VisitFact,
    pub invalid: bool,
}

/// A registered person as the analysts' export lists them.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PersonExport {
    pub person_id: posync_model::PersonId,
    pub posyandu: PosyanduId,
    pub name: String,
    /// `F` or `M`.
    pub sex: String,
    /// `YYYY-MM-DD`.
    pub birth_date: String,
    pub kia_book: bool,
    pub pregnant: bool,
    /// Unix seconds.
    pub registered_at: i64,
    /// Registrations of the same person merged into this one.
    pub merged_from: u64,
}

/// Where a registered person lives, for a home visit.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PersonContact {
    pub person_id: posync_model::PersonId,
    pub mother_name: String,
    pub address: String,
    pub rt: Option<i64>,
    pub rw: Option<i64>,
}

/// Two registrations that look like one person, and why.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct DuplicatePair {
    pub reason: String,
    pub a: PersonSummary,
    pub b: PersonSummary,
}

/// A record kept with an impossible value (a negative weight, a birth date in 2999), left out
/// of reports until someone corrects it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct InvalidRecord {
    pub doc: DocId,
    pub posyandu: PosyanduId,
    /// `visits` or `people`.
    pub collection: String,
    pub record_id: String,
    pub name: String,
    /// The session's date, for a visit.
    pub session_date: Option<String>,
    /// What is wrong, per field: `[{field, code, severity, message_id, message_en}]`.
    pub issues: serde_json::Value,
}

/// What a resolution committed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct ResolvedConflict {
    pub doc: DocId,
    pub seq: u64,
}

/// Counts for health checks, tests and benchmarks.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub docs: u64,
    pub visits: u64,
    pub people: u64,
    pub feed_entries: u64,
    /// Documents' heads acknowledged to devices (one row per device and document).
    pub device_heads: u64,
}

/// Server-side persistence: every concern below, on one backend. Every method is one
/// transaction.
pub trait Store: SyncStore + AccessStore + AuditStore + ReviewStore + ReportStore {}

impl<T: SyncStore + AccessStore + AuditStore + ReviewStore + ReportStore> Store for T {}

/// Documents, the change feed and what each device holds: the sync path.
#[async_trait]
pub trait SyncStore: Send + Sync + 'static {
    /// The store's incarnation: the same for the life of its data, new once it is restored
    /// from a backup (devices then re-send what they hold).
    fn incarnation(&self) -> u32;

    /// Push transactions committed and the pushes they held, where the backend commits
    /// pushes in groups (SQLite); `None` where each push commits alone.
    fn push_commits(&self) -> Option<PushCommits> {
        None
    }

    /// Merge pushed documents. All or nothing: a batch with one bad or out-of-scope document
    /// stores nothing. Returns acknowledgements only after the commit is durable.
    async fn push(
        &self,
        device: DeviceId,
        scope: Scope,
        pushes: Vec<DocPush>,
        now: i64,
    ) -> Result<Vec<DocAck>, StoreError>;

    /// The device starts over from cursor 0 (its first sync, a scope that grew, a restored
    /// replica, a document it could not apply): forget which heads it was acknowledged to
    /// hold. It may have dropped those documents since (a move away and back), so counting
    /// them as held would keep them from it forever; pulls now send them whole.
    /// `keep`: documents it pushed in the same request (it holds those as acknowledged).
    async fn forget_device_heads(&self, device: DeviceId, keep: Vec<DocId>) -> Result<(), StoreError>;

    /// The device dropped `docs` (fully acknowledged, outside the window it keeps): forget
    /// that it holds them, so that a later change to one is sent whole.
    async fn forget_dropped(&self, device: DeviceId, docs: Vec<DocId>, now: i64) -> Result<(), StoreError>;

    /// Documents in `scope` changed after `cursor`, each with only the changes the device lacks.
    async fn pull(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError>;

    /// Of `docs` (what the device wants first), those in `scope` changed after `cursor` that
    /// the device does not hold yet, ahead of the feed walk ([`core::assemble_ahead`]). An
    /// empty page when it holds them all.
    async fn pull_ahead(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        docs: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError>;

    /// [`SyncStore::pull_ahead`] of `first`, or, when that page is empty, the feed page of
    /// [`SyncStore::pull`]: what a device that takes pieces is answered, read from one
    /// snapshot in one trip to the database.
    async fn pull_first(
        &self,
        device: DeviceId,
        scope: Scope,
        cursor: u64,
        first: Vec<DocId>,
        limits: PageLimits,
    ) -> Result<PullPage, StoreError>;

    /// One document, if stored.
    async fn get(&self, doc: DocId) -> Result<Option<StoredDoc>, StoreError>;

    /// Metadata of every document of the given posyandu, by feed order.
    async fn list(&self, scope: Scope) -> Result<Vec<StoredMeta>, StoreError>;

    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Cheap liveness check of the backend.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Units, users, enrolments and devices. Every admin write commits together with its audit
/// entry.
#[async_trait]
pub trait AccessStore: Send + Sync + 'static {
    /// Insert or update the units and users of a validated hierarchy file.
    async fn import_hierarchy(&self, file: HierarchyFile, audit: AuditEntry) -> Result<ImportReport, StoreError>;

    /// The whole hierarchy (a district is a few hundred units).
    async fn unit_tree(&self) -> Result<UnitTree, StoreError>;

    /// Create, rename or re-parent a unit (a posyandu to another village, a village to
    /// another puskesmas). Its parent must exist and be of the level just above.
    async fn save_unit(&self, unit: Unit, audit: AuditEntry) -> Result<(), StoreError>;

    /// Create or update a user, replacing their units.
    async fn save_user(&self, user: UserSpec, audit: AuditEntry) -> Result<(), StoreError>;

    async fn user(&self, user: UserId) -> Result<Option<UserRecord>, StoreError>;

    async fn users(&self) -> Result<Vec<UserRecord>, StoreError>;

    async fn issue_enrolment(&self, enrolment: NewEnrolment, audit: AuditEntry) -> Result<(), StoreError>;

    /// Use a one-time code: bind the device to its user with a new refresh credential.
    /// Audited as `device_enrolled`.
    async fn redeem_enrolment(
        &self,
        code_hash: [u8; 32],
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError>;

    /// Check a refresh credential and slide its expiry to `new_expires_at`.
    async fn refresh_device(
        &self,
        device: DeviceId,
        refresh_hash: [u8; 32],
        new_expires_at: i64,
        now: i64,
    ) -> Result<UserRecord, StoreError>;

    async fn revoke_device(&self, device: DeviceId, audit: AuditEntry) -> Result<(), StoreError>;

    async fn devices(&self) -> Result<Vec<DeviceRecord>, StoreError>;

    /// The device's user, whether it is revoked, and the user's scope as of now. `None` for
    /// a device that was never enrolled.
    async fn device_access(&self, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError>;

    /// Set or replace `user`'s sign-in PIN (`pin_hash`: a PHC string, never the PIN) at
    /// `audit.at`, clearing any failures and lock, together with `audit`.
    async fn set_pin(&self, user: UserId, pin_hash: String, audit: AuditEntry) -> Result<(), StoreError>;

    /// `user`'s PIN as stored, if set.
    async fn pin_of(&self, user: UserId) -> Result<Option<PinRecord>, StoreError>;

    /// Start a PIN sign-in: unless locked, count the attempt *before* the PIN is checked (so
    /// attempts racing in parallel, on any instance, cannot get past the lockout) and hand
    /// back the hash to check. The attempt that reaches `lockout.failures_max` sets the lock
    /// (`now + lock_seconds`); the first attempt after a lock expired counts from 1 again.
    async fn pin_attempt(&self, user: UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError>;

    /// The PIN checked against `pin_hash` was right: reset the count and lock and bind
    /// `credential.device` to the user as [`AccessStore::redeem_enrolment`] does (a device of
    /// another user, or a revoked one, is refused). Audited as `signed_in`. Refused as
    /// `InvalidCredential` if the user is disabled or the PIN was replaced meanwhile.
    async fn pin_succeeded(
        &self,
        user: UserId,
        pin_hash: String,
        credential: NewCredential,
        now: i64,
    ) -> Result<UserRecord, StoreError>;

    /// Store a read-only API key (only the hash of its secret) together with `audit`. Its
    /// unit must exist (`NotFound`).
    async fn create_api_key(&self, key: NewApiKey, audit: AuditEntry) -> Result<(), StoreError>;

    /// Every API key, oldest first, with its last use.
    async fn api_keys(&self) -> Result<Vec<ApiKeyRecord>, StoreError>;

    /// Revoke key `id` at `audit.at`, together with `audit` (`NotFound`: no such key).
    async fn revoke_api_key(&self, id: String, audit: AuditEntry) -> Result<(), StoreError>;

    /// The key whose secret hashes to `key_hash`, if any. When it is not revoked, in one
    /// transaction: its last use becomes `now`, the use is audited (`api_key_used`, naming
    /// `route`) and its scope is resolved as of now. A revoked key comes back unchanged with
    /// an empty scope; the caller refuses it.
    async fn use_api_key(
        &self,
        key_hash: [u8; 32],
        now: i64,
        route: String,
    ) -> Result<Option<ApiKeyAccess>, StoreError>;
}

/// Conflicts (indexed after every merge of the documents a sync touched), duplicate people
/// and records kept with impossible values: what a bidan or admin reviews.
#[async_trait]
pub trait ReviewStore: Send + Sync + 'static {
    /// Conflicts of posyandu in `scope`, filtered, oldest first.
    async fn conflicts(&self, scope: Scope, filter: ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError>;

    async fn conflict(&self, id: String) -> Result<Option<ConflictRecord>, StoreError>;

    /// Write `value` over conflict `id` as a change by the server (`instance` names it), in
    /// one transaction with the feed, projection, conflict index and `audit`. `NotFound` if
    /// the conflict is no longer open (resolved meanwhile).
    async fn resolve_conflict(
        &self,
        id: String,
        value: posync_model::FieldValue,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError>;

    /// Pairs of people in `scope` that look like one person registered twice (same NIK; same
    /// mother's NIK, birth date and name; or same name, birth date and mother's name).
    async fn duplicate_people(&self, scope: Scope) -> Result<Vec<DuplicatePair>, StoreError>;

    /// Mark `duplicate` as the same person as `keep`, as the server's change to the
    /// duplicate's registry, in one transaction with `audit`. Both must be in `scope`.
    async fn merge_people(
        &self,
        scope: Scope,
        duplicate: posync_model::PersonId,
        keep: posync_model::PersonId,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError>;

    /// Records of posyandu in `scope` marked invalid when merged, oldest documents first, at
    /// most 1,000.
    async fn invalid_records(&self, scope: Scope) -> Result<Vec<InvalidRecord>, StoreError>;
}

/// Reports, from the relational projection.
#[async_trait]
pub trait ReportStore: Send + Sync + 'static {
    /// Visits of posyandu in `scope` with a session date in `from..=to`, as report facts.
    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError>;

    /// People in the registries of posyandu in `scope`.
    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError>;

    /// Every visit of `person` (and of people merged into them) in `scope`, oldest first.
    async fn person_facts(&self, scope: Scope, person: posync_model::PersonId) -> Result<Vec<PersonVisit>, StoreError>;

    /// People seen at the posyandu of `scope`, by name (containing `name`), at most `limit`.
    async fn people_seen(&self, scope: Scope, name: Option<String>, limit: u32) -> Result<Vec<PersonSeen>, StoreError>;

    /// Addresses and mothers of the people registered in `scope` (not merged).
    async fn people_contacts(&self, scope: Scope) -> Result<Vec<PersonContact>, StoreError>;

    /// People registered in `scope`, not merged into another and not invalid, by posyandu
    /// and id, each with how many registrations were merged into them.
    async fn people_export(&self, scope: Scope) -> Result<Vec<PersonExport>, StoreError>;
}

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, entry: AuditEntry) -> Result<(), StoreError>;

    /// Audit entries with `seq > after`, oldest first, at most `limit` (the console's view).
    async fn audit_log(&self, after: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

    /// [`AuditStore::audit_log`] restricted to entries concerning `districts` (a district admin's
    /// view: never another district's).
    async fn district_audit_log(
        &self,
        districts: Vec<posync_model::UnitId>,
        after: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The store's traits, to call any of them on an `Arc<dyn Store>`.
pub mod prelude {
    pub use crate::{AccessStore, AuditStore, ReportStore, ReviewStore, Store, SyncStore};
}

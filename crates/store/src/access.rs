//! Access data the server keeps beside the documents: the hierarchy, users and their units,
//! enrolled devices and their credentials, and the append-only audit log.
//!
//! The store only persists and resolves (scope = every posyandu under a user's units). The
//! rules of who may do what live in the server's admin service; the model validates shapes.

use posync_model::{DeviceId, Role, Scope, Unit, UnitId, UserId};
use serde::Serialize;

/// Who did something that the audit log records.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Actor {
    /// A signed-in user on one of their devices.
    User { user: UserId, device: DeviceId },
    /// Someone at the server's console (`posync admin …`), by OS account name.
    Console { name: String },
    /// The device itself (enrolment).
    Device { device: DeviceId },
    /// A read-only API key (a BI tool or a script), by its id (never the secret).
    ApiKey { key: String },
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Actor::User { user, device } => write!(f, "user:{user}@{device}"),
            Actor::Console { name } => write!(f, "console:{name}"),
            Actor::Device { device } => write!(f, "device:{device}"),
            Actor::ApiKey { key } => write!(f, "api_key:{key}"),
        }
    }
}

/// What an audit entry records. Stable strings: reports and SIEM rules match on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditAction {
    HierarchyImported,
    UnitMoved,
    UserSaved,
    ScopeChanged,
    EnrolmentIssued,
    DeviceEnrolled,
    DeviceRevoked,
    RecordRead,
    RecordsPulled,
    ConflictResolved,
    /// Two registrations of one person merged.
    PeopleMerged,
    /// A report naming people (the overdue-immunisation list) was read.
    ReportRead,
    /// A copy of the whole store was taken (`posync admin backup`).
    BackupTaken,
    /// A user set or replaced their sign-in PIN (never the PIN or its hash in the entry).
    PinSet,
    /// A user signed in with their PIN on a new device credential.
    SignedIn,
    /// Too many wrong PINs in a row: the user's PIN sign-in is locked for a while.
    PinLocked,
    /// A read-only API key was created (its id, unit and role; never the secret).
    ApiKeyCreated,
    /// An API key was revoked.
    ApiKeyRevoked,
    /// An API key was used on a report or export route.
    ApiKeyUsed,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::HierarchyImported => "hierarchy_imported",
            AuditAction::UnitMoved => "unit_moved",
            AuditAction::UserSaved => "user_saved",
            AuditAction::ScopeChanged => "scope_changed",
            AuditAction::EnrolmentIssued => "enrolment_issued",
            AuditAction::DeviceEnrolled => "device_enrolled",
            AuditAction::DeviceRevoked => "device_revoked",
            AuditAction::RecordRead => "record_read",
            AuditAction::RecordsPulled => "records_pulled",
            AuditAction::ConflictResolved => "conflict_resolved",
            AuditAction::PeopleMerged => "people_merged",
            AuditAction::BackupTaken => "backup_taken",
            AuditAction::ReportRead => "report_read",
            AuditAction::PinSet => "pin_set",
            AuditAction::SignedIn => "signed_in",
            AuditAction::PinLocked => "pin_locked",
            AuditAction::ApiKeyCreated => "api_key_created",
            AuditAction::ApiKeyRevoked => "api_key_revoked",
            AuditAction::ApiKeyUsed => "api_key_used",
        }
    }
}

/// One audit entry to append. `detail` is JSON of ids and counts, never record contents.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    pub at: i64,
    pub actor: String,
    pub action: AuditAction,
    pub target: String,
    pub detail: serde_json::Value,
    /// A unit (a posyandu, or any unit of the hierarchy) the entry concerns: the store
    /// records the district above it, and a district admin reads only their districts'
    /// entries. `None`: the console's own entries (imports), read at the console only.
    pub unit: Option<String>,
}

impl AuditEntry {
    pub fn new(at: i64, actor: &Actor, action: AuditAction, target: impl ToString, detail: serde_json::Value) -> Self {
        Self { at, actor: actor.to_string(), action, target: target.to_string(), detail, unit: None }
    }

    /// The entry concerns `unit` (and so the district it lies in).
    pub fn concerning(mut self, unit: Option<impl ToString>) -> Self {
        self.unit = unit.map(|u| u.to_string());
        self
    }
}

/// The district above a unit (`{param}` names it), as a scalar subquery both adapters use
/// when appending an audit entry.
pub(crate) fn district_of_sql(param: &str) -> String {
    format!(
        "(WITH RECURSIVE up(id, kind, parent, depth) AS (
             SELECT unit_id, kind, parent_id, 0 FROM units WHERE unit_id = {param}
             UNION ALL
             SELECT u.unit_id, u.kind, u.parent_id, up.depth + 1 FROM units u JOIN up ON u.unit_id = up.parent
             WHERE up.depth < 8)
         SELECT id FROM up WHERE kind = 'district' LIMIT 1)"
    )
}

/// An audit entry as stored, with its position in the log.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: serde_json::Value,
    /// The district the entry concerns, if any.
    pub district: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct UserRecord {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub units: Vec<UnitId>,
    pub disabled: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeviceRecord {
    pub device: DeviceId,
    pub user: Option<UserId>,
    pub label: String,
    pub enrolled_at: Option<i64>,
    pub revoked_at: Option<i64>,
    pub last_seen_at: Option<i64>,
    pub last_push_at: Option<i64>,
}

/// What authenticating a device resolves to, read in one transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceAccess {
    pub device: DeviceId,
    pub user: UserRecord,
    pub revoked: bool,
    /// Every posyandu under the user's units, as of now.
    pub scope: Scope,
}

/// A device credential to store: only hashes of secrets ever reach the database.
#[derive(Clone, Debug)]
pub struct NewCredential {
    pub device: DeviceId,
    pub label: String,
    pub refresh_hash: [u8; 32],
    pub refresh_expires_at: i64,
}

/// A user's sign-in PIN as stored: an Argon2id PHC string (salt and parameters inside),
/// never the PIN.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PinRecord {
    pub user: UserId,
    pub pin_hash: String,
    /// Attempts counted since the last success (a wrong PIN, or one still being checked).
    pub failures: u32,
    /// Sign-in with the PIN is refused until then (Unix seconds).
    pub locked_until: Option<i64>,
    pub set_at: i64,
}

/// How many PIN attempts in a row without a success lock a user out, and for how long.
/// The server's policy; the store applies it atomically, so it holds across instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PinLockout {
    pub failures_max: u32,
    pub lock_seconds: i64,
}

/// What a PIN sign-in attempt may go on with ([`crate::AccessStore::pin_attempt`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PinAttempt {
    /// The user has no PIN (or does not exist): nothing to check against.
    NoPin,
    /// Too many wrong PINs: refused until then, without looking at the PIN.
    Locked { until: i64 },
    /// The attempt is counted (as a failure until [`crate::AccessStore::pin_succeeded`]):
    /// check the PIN against `pin_hash`. `failures` includes this attempt; when it reached
    /// the lockout's maximum the lock is already set.
    Verify { pin_hash: String, failures: u32 },
}

/// The audit entry of a PIN sign-in: the user on the new device, its label; never the PIN.
pub(crate) fn signed_in_audit(user: &UserRecord, cred: &NewCredential, now: i64) -> AuditEntry {
    let actor = Actor::User { user: user.id.clone(), device: cred.device };
    let detail = serde_json::json!({ "user": user.id, "label": cred.label });
    AuditEntry::new(now, &actor, AuditAction::SignedIn, cred.device, detail).concerning(user.units.first())
}

/// A read-only API key to store: its id and the SHA-256 of its secret, never the secret.
#[derive(Clone, Debug)]
pub struct NewApiKey {
    pub id: String,
    pub key_hash: [u8; 32],
    pub label: String,
    /// The unit the key reads: every posyandu under it, as of each use.
    pub unit: UnitId,
    pub role: Role,
    /// Who created it (an audit actor string).
    pub created_by: String,
    pub created_at: i64,
}

/// An API key as listed: never its secret or hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ApiKeyRecord {
    pub id: String,
    pub label: String,
    pub unit: UnitId,
    pub role: Role,
    pub created_by: String,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
    /// The last successful use (Unix seconds).
    pub last_used_at: Option<i64>,
}

/// What using an API key resolves to ([`crate::AccessStore::use_api_key`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyAccess {
    pub key: ApiKeyRecord,
    /// Every posyandu under the key's unit, as of now (empty for a revoked key).
    pub scope: Scope,
}

/// The audit entry of one use of an API key on `route` (a route template, never a query).
pub(crate) fn api_key_used_audit(key: &ApiKeyRecord, route: &str, now: i64) -> AuditEntry {
    let actor = Actor::ApiKey { key: key.id.clone() };
    let detail = serde_json::json!({ "route": route, "unit": key.unit });
    AuditEntry::new(now, &actor, AuditAction::ApiKeyUsed, &key.id, detail).concerning(Some(&key.unit))
}

/// A one-time enrolment code to store, by hash.
#[derive(Clone, Debug)]
pub struct NewEnrolment {
    pub code_hash: [u8; 32],
    pub user: UserId,
    pub expires_at: i64,
}

/// The hierarchy and users after an import, for the caller's report.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportReport {
    pub units: usize,
    pub users: usize,
}

/// Units as a tree, for admin screens and checks.
#[derive(Clone, Debug, Default)]
pub struct UnitTree {
    pub units: Vec<Unit>,
}

impl UnitTree {
    pub fn get(&self, id: &UnitId) -> Option<&Unit> {
        self.units.iter().find(|u| &u.id == id)
    }

    /// The unit and its ancestors, nearest first.
    pub fn ancestors(&self, id: &UnitId) -> Vec<&Unit> {
        let mut out = Vec::new();
        let mut cur = self.get(id);
        while let Some(u) = cur {
            if out.len() > posync_model::UnitKind::ALL.len() {
                break; // a cycle cannot be stored, but never loop on bad data
            }
            out.push(u);
            cur = u.parent.as_ref().and_then(|p| self.get(p));
        }
        out
    }

    /// The district a unit belongs to (itself, if it is one).
    pub fn district_of(&self, id: &UnitId) -> Option<&UnitId> {
        self.ancestors(id).into_iter().find(|u| u.kind == posync_model::UnitKind::District).map(|u| &u.id)
    }
}

/// Whether an enrolment code may be redeemed by `device` at `now`: unused and unexpired, or
/// already redeemed by this same device (its answer was lost on a bad link and it retries:
/// it gets a fresh refresh credential under the same binding). Another device is refused.
pub fn code_redeemable(used_by: Option<&str>, used: bool, expires_at: i64, now: i64, device: DeviceId) -> bool {
    if now > expires_at {
        return false;
    }
    !used || used_by == Some(device.to_string().as_str())
}

/// Whether `user` may (re-)enrol a device whose row holds `holder` (its user and whether it is
/// revoked), if any. A device id belongs to the user who first enrolled it: device ids are
/// visible to colleagues (conflict lists), so enrolling under another user's id would lock
/// its owner out and re-attribute the owner's values. A revoked device stays revoked. The
/// same user re-enrolling their own unrevoked device (a reinstall keeping its data, a lost
/// enrolment answer) gets a new refresh credential.
pub fn may_enrol(holder: Option<(&str, bool)>, user: &UserId) -> Result<(), crate::StoreError> {
    match holder {
        Some((owner, _)) if owner != user.as_str() => Err(crate::StoreError::DeviceTaken),
        Some((_, true)) => Err(crate::StoreError::DeviceRevoked),
        _ => Ok(()),
    }
}

//! SQLite side of the access data: hierarchy, users, devices, enrolments, audit. The
//! statements and rows are [`plan::access`]'s; these functions run them on a connection or
//! transaction, in the order each rule needs.

use super::exec::{D, exec, query, query_opt};
use crate::StoreError;
use crate::access::{
    ApiKeyAccess, ApiKeyRecord, AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport, NewApiKey,
    NewCredential, NewEnrolment, PinAttempt, PinLockout, PinRecord, UnitTree, UserRecord,
};
use crate::plan::access as plan;
use posync_model::hierarchy::check_parent;
use posync_model::{DeviceId, HierarchyFile, Scope, Unit, UnitId, UnitKind, UserId, UserSpec};
use rusqlite::{Connection, Transaction};

/// Schema v2: everything access control needs. Applied on top of v1.
pub const SCHEMA_V2: &str = r#"
CREATE TABLE units (
    unit_id   TEXT PRIMARY KEY,
    kind      TEXT NOT NULL,
    parent_id TEXT REFERENCES units(unit_id),
    name      TEXT NOT NULL
);
CREATE INDEX units_parent ON units(parent_id);

CREATE TABLE users (
    user_id     TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    role        TEXT NOT NULL,
    disabled_at INTEGER,
    updated_at  INTEGER NOT NULL
);

-- A user's scope is every posyandu under these units.
CREATE TABLE user_units (
    user_id TEXT NOT NULL REFERENCES users(user_id),
    unit_id TEXT NOT NULL REFERENCES units(unit_id),
    PRIMARY KEY (user_id, unit_id)
) WITHOUT ROWID;
CREATE INDEX user_units_unit ON user_units(unit_id);

-- One-time enrolment codes, by SHA-256: a stolen database yields no usable code.
CREATE TABLE enrolments (
    code_hash  BLOB PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users(user_id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER,
    device_id  TEXT
);

ALTER TABLE devices ADD COLUMN user_id TEXT REFERENCES users(user_id);
ALTER TABLE devices ADD COLUMN label TEXT NOT NULL DEFAULT '';
ALTER TABLE devices ADD COLUMN enrolled_at INTEGER;
ALTER TABLE devices ADD COLUMN revoked_at INTEGER;
ALTER TABLE devices ADD COLUMN refresh_hash BLOB;
ALTER TABLE devices ADD COLUMN refresh_expires_at INTEGER;
ALTER TABLE devices ADD COLUMN last_seen_at INTEGER;
CREATE INDEX devices_user ON devices(user_id);

-- Append-only: who did what, when. Ids and counts only, never record contents.
CREATE TABLE audit (
    seq    INTEGER PRIMARY KEY AUTOINCREMENT,
    at     INTEGER NOT NULL,
    actor  TEXT NOT NULL,
    action TEXT NOT NULL,
    target TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
"#;

/// Schema v8: a user's sign-in PIN, so a browser that signed out signs in again without a
/// new enrolment code. Argon2id PHC strings only; `failures` counts attempts since the last
/// success and `locked_until` refuses sign-in until then.
pub const SCHEMA_V8: &str = r#"
CREATE TABLE user_pins (
    user_id      TEXT PRIMARY KEY REFERENCES users(user_id),
    pin_hash     TEXT NOT NULL,
    failures     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    set_at       INTEGER NOT NULL
);
"#;

/// Schema v9: read-only API keys for BI tools and scripts. Only the SHA-256 of each secret
/// is kept; `last_used_at` is the last successful use.
pub const SCHEMA_V9: &str = r#"
CREATE TABLE api_keys (
    key_id       TEXT PRIMARY KEY,
    key_hash     BLOB NOT NULL UNIQUE,
    label        TEXT NOT NULL,
    unit_id      TEXT NOT NULL REFERENCES units(unit_id),
    role         TEXT NOT NULL,
    created_by   TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    revoked_at   INTEGER,
    last_used_at INTEGER
);
"#;

pub fn append_audit(tx: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    if exec(tx, &plan::append_audit(D, e))? != 1 {
        return Err(StoreError::Backend("audit entry not written".into()));
    }
    Ok(())
}

/// Entries after `after`, oldest first; only those of `districts` when given.
pub fn audit_log(
    conn: &Connection,
    after: u64,
    limit: usize,
    districts: Option<&[UnitId]>,
) -> Result<Vec<AuditRecord>, StoreError> {
    query(conn, &plan::audit_log(D, after, limit, districts))?.iter().map(plan::audit_record).collect()
}

fn unit_kind(tx: &Connection, id: &UnitId) -> Result<Option<UnitKind>, StoreError> {
    query_opt(tx, &plan::unit_kind(D, id))?.as_ref().map(plan::parse_unit_kind).transpose()
}

/// Insert or update one unit after checking its parent's level.
pub fn put_unit(tx: &Connection, unit: &Unit) -> Result<(), StoreError> {
    let parent_kind = match &unit.parent {
        Some(p) => unit_kind(tx, p)?,
        None => None,
    };
    check_parent(unit, parent_kind)?;
    if let Some(existing) = unit_kind(tx, &unit.id)?
        && existing != unit.kind
    {
        return Err(plan::kind_change(unit, existing));
    }
    exec(tx, &plan::upsert_unit(D, unit))?;
    Ok(())
}

/// Insert or update a user and replace their units. Units must exist; which kinds a role
/// may hold is the admin service's rule, not the store's.
pub fn put_user(tx: &Connection, user: &UserSpec, now: i64) -> Result<(), StoreError> {
    exec(tx, &plan::upsert_user(D, user, now))?;
    exec(tx, &plan::clear_user_units(D, &user.id))?;
    for unit in &user.units {
        if unit_kind(tx, unit)?.is_none() {
            return Err(StoreError::NotFound(format!("unit {unit}")));
        }
        exec(tx, &plan::add_user_unit(D, &user.id, unit))?;
    }
    Ok(())
}

pub fn import(tx: &Transaction<'_>, file: &HierarchyFile, now: i64) -> Result<ImportReport, StoreError> {
    file.validate()?;
    for unit in &file.units {
        put_unit(tx, unit)?;
    }
    for user in &file.users {
        put_user(tx, user, now)?;
    }
    Ok(ImportReport { units: file.units.len(), users: file.users.len() })
}

pub fn unit_tree(conn: &Connection) -> Result<UnitTree, StoreError> {
    Ok(UnitTree { units: query(conn, &plan::unit_tree(D))?.iter().map(plan::unit).collect::<Result<_, _>>()? })
}

pub fn user(conn: &Connection, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let Some(row) = query_opt(conn, &plan::user(D, id))? else { return Ok(None) };
    let units = query(conn, &plan::user_units(D, id))?;
    plan::user_record(id, &row, &units).map(Some)
}

pub fn users(conn: &Connection) -> Result<Vec<UserRecord>, StoreError> {
    let mut out = Vec::new();
    for row in query(conn, &plan::user_ids(D))? {
        out.extend(user(conn, &plan::user_id(&row)?)?);
    }
    Ok(out)
}

/// Every posyandu under the user's units ([`plan::scope_of`]).
pub fn scope_of(conn: &Connection, user: &UserId) -> Result<Scope, StoreError> {
    plan::scope(&query(conn, &plan::scope_of(D, user))?)
}

pub fn issue_enrolment(tx: &Connection, e: &NewEnrolment, now: i64) -> Result<(), StoreError> {
    if user(tx, &e.user)?.is_none() {
        return Err(StoreError::NotFound(format!("user {}", e.user)));
    }
    exec(tx, &plan::insert_enrolment(D, e, now))?;
    Ok(())
}

/// The user a credential names, if it still exists and is not disabled.
fn active_user(tx: &Connection, user_s: &str) -> Result<UserRecord, StoreError> {
    let user_id: UserId = user_s.parse().map_err(|_| StoreError::Backend("bad stored user id".into()))?;
    match user(tx, &user_id)? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(StoreError::InvalidCredential),
    }
}

/// Use a code once: bind the device to the code's user with a fresh refresh credential.
pub fn redeem_enrolment(
    tx: &Connection,
    code_hash: &[u8; 32],
    cred: &NewCredential,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let Some(row) = query_opt(tx, &plan::enrolment(D, code_hash))? else {
        return Err(StoreError::InvalidCredential);
    };
    let code = plan::enrolment_row(&row)?;
    if !crate::access::code_redeemable(code.used_by.as_deref(), code.used, code.expires_at, now, cred.device) {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, &code.user)?;
    let holder = query_opt(tx, &plan::device_holder(D, cred.device, true))?.map(|r| plan::holder(&r)).transpose()?;
    let holder = holder.flatten();
    crate::access::may_enrol(holder.as_ref().map(|(u, revoked)| (u.as_str(), *revoked)), &user.id)?;
    exec(tx, &plan::use_enrolment(D, code_hash, now, cred.device))?;
    register_device(tx, &user.id, cred, now)?;
    Ok(user)
}

/// Bind `cred.device` to `user` (again), with a new refresh credential.
pub fn register_device(tx: &Connection, user: &UserId, cred: &NewCredential, now: i64) -> Result<(), StoreError> {
    exec(tx, &plan::register_device(D, user, cred, now))?;
    Ok(())
}

/// Check a refresh credential ([`plan::check_refresh`]) and slide its expiry.
pub fn refresh_device(
    tx: &Connection,
    device: DeviceId,
    refresh_hash: &[u8; 32],
    new_expires_at: i64,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let row = query_opt(tx, &plan::credential(D, device, true))?;
    let user_s = plan::check_refresh(row.as_ref(), refresh_hash, now)?;
    let user = active_user(tx, &user_s)?;
    match exec(tx, &plan::slide_refresh(D, device, new_expires_at, now)) {
        Ok(_) => Ok(user),
        // A full disk must not lock every device out: the credential is good, its expiry
        // just does not slide this time.
        Err(StoreError::StorageFull(reason)) => {
            tracing::warn!(%reason, "refresh expiry not slid: storage full");
            Ok(user)
        }
        Err(e) => Err(e),
    }
}

pub fn revoke_device(tx: &Connection, device: DeviceId, now: i64) -> Result<(), StoreError> {
    if exec(tx, &plan::revoke_device(D, device, now))? == 0 {
        return Err(StoreError::NotFound(format!("device {device}")));
    }
    Ok(())
}

pub fn devices(conn: &Connection) -> Result<Vec<DeviceRecord>, StoreError> {
    query(conn, &plan::devices(D))?.iter().map(plan::device_record).collect()
}

pub fn device_access(conn: &Connection, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
    let Some(row) = query_opt(conn, &plan::device_holder(D, device, false))? else { return Ok(None) };
    let Some((user_s, revoked)) = plan::holder(&row)? else { return Ok(None) };
    let user_id: UserId = user_s.parse().map_err(|_| StoreError::Backend("bad stored user id".into()))?;
    let Some(user) = user(conn, &user_id)? else { return Ok(None) };
    let scope = scope_of(conn, &user_id)?;
    Ok(Some(DeviceAccess { device, user, revoked, scope }))
}

/// Set or replace a user's PIN ([`plan::set_pin`]); the user must exist.
pub fn set_pin(tx: &Connection, user_id: &UserId, pin_hash: &str, now: i64) -> Result<(), StoreError> {
    if user(tx, user_id)?.is_none() {
        return Err(StoreError::NotFound(format!("user {user_id}")));
    }
    exec(tx, &plan::set_pin(D, user_id, pin_hash, now))?;
    Ok(())
}

pub fn pin_of(conn: &Connection, user: &UserId) -> Result<Option<PinRecord>, StoreError> {
    query_opt(conn, &plan::pin_of(D, user))?.map(|row| plan::pin_record(user, &row)).transpose()
}

/// Count an attempt unless locked ([`plan::count_pin_attempt`]); the single writer makes
/// it atomic.
pub fn pin_attempt(tx: &Connection, user: &UserId, now: i64, lockout: PinLockout) -> Result<PinAttempt, StoreError> {
    let counted = query_opt(tx, &plan::count_pin_attempt(D, user, now, lockout))?;
    let current = if counted.is_none() { query_opt(tx, &plan::pin_of(D, user))? } else { None };
    plan::pin_attempt(counted.as_ref(), current.as_ref(), now)
}

/// A right PIN: start the count over and bind the device to the user as an enrolment does.
pub fn pin_succeeded(
    tx: &Connection,
    user_id: &UserId,
    pin_hash: &str,
    cred: &NewCredential,
    now: i64,
) -> Result<UserRecord, StoreError> {
    if exec(tx, &plan::reset_pin_failures(D, user_id, pin_hash))? == 0 {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, user_id.as_str())?;
    let holder = query_opt(tx, &plan::device_holder(D, cred.device, true))?.map(|r| plan::holder(&r)).transpose()?;
    crate::access::may_enrol(holder.flatten().as_ref().map(|(u, revoked)| (u.as_str(), *revoked)), &user.id)?;
    register_device(tx, &user.id, cred, now)?;
    Ok(user)
}

/// Store a new API key; its unit must exist.
pub fn create_api_key(tx: &Connection, key: &NewApiKey) -> Result<(), StoreError> {
    if unit_kind(tx, &key.unit)?.is_none() {
        return Err(StoreError::NotFound(format!("unit {}", key.unit)));
    }
    exec(tx, &plan::insert_api_key(D, key))?;
    Ok(())
}

pub fn api_keys(conn: &Connection) -> Result<Vec<ApiKeyRecord>, StoreError> {
    query(conn, &plan::api_keys(D))?.iter().map(plan::api_key_record).collect()
}

pub fn revoke_api_key(tx: &Connection, id: &str, now: i64) -> Result<(), StoreError> {
    if exec(tx, &plan::revoke_api_key(D, id, now))? == 0 {
        return Err(StoreError::NotFound(format!("API key {id}")));
    }
    Ok(())
}

/// Look a key up by the hash of its secret; when it is not revoked, record the use and
/// resolve its scope ([`crate::AccessStore::use_api_key`]).
pub fn use_api_key(
    tx: &Connection,
    key_hash: &[u8; 32],
    now: i64,
    route: &str,
) -> Result<Option<ApiKeyAccess>, StoreError> {
    let Some(row) = query_opt(tx, &plan::api_key_by_hash(D, key_hash))? else { return Ok(None) };
    let mut key = plan::api_key_record(&row)?;
    if key.revoked_at.is_some() {
        return Ok(Some(ApiKeyAccess { key, scope: Scope::new(Vec::new()) }));
    }
    exec(tx, &plan::touch_api_key(D, &key.id, now))?;
    key.last_used_at = Some(now);
    append_audit(tx, &crate::access::api_key_used_audit(&key, route, now))?;
    let scope = plan::scope(&query(tx, &plan::unit_scope(D, &key.unit))?)?;
    Ok(Some(ApiKeyAccess { key, scope }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scope_query_is_prepared_once_for_every_user() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("posync.sqlite");
        drop(crate::SqliteStore::open(&path).expect("open"));
        let conn = Connection::open(&path).expect("connection");
        conn.execute_batch(
            "INSERT INTO units (unit_id, kind, parent_id, name) VALUES ('d1', 'district', NULL, 'D'),
                 ('pkm-1', 'puskesmas', 'd1', 'P'), ('v1', 'village', 'pkm-1', 'V'),
                 ('pos-a', 'posyandu', 'v1', 'A'), ('pos-b', 'posyandu', 'v1', 'B');
             INSERT INTO users (user_id, name, role, updated_at) VALUES ('u1', 'U', 'kader', 0), ('u2', 'U', 'bidan', 0);
             INSERT INTO user_units (user_id, unit_id) VALUES ('u1', 'pos-a'), ('u2', 'v1');",
        )
        .expect("units");
        let (u1, u2): (UserId, UserId) = ("u1".parse().expect("id"), "u2".parse().expect("id"));
        for _ in 0..3 {
            assert_eq!(scope_of(&conn, &u1).expect("scope").posyandu().count(), 1);
            assert_eq!(scope_of(&conn, &u2).expect("scope").posyandu().count(), 2);
        }
        let stmt = conn.prepare_cached(&plan::scope_of(D, &u1).sql).expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "compiled once, run six times");
    }
}

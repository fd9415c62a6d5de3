//! SQLite side of the access data: hierarchy, users, devices, enrolments, audit.
//! Plain functions over a connection or transaction; `sqlite.rs` runs them on its threads.

use crate::StoreError;
use crate::access::{
    AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport, NewCredential, NewEnrolment, UnitTree,
    UserRecord,
};
use posync_model::hierarchy::check_parent;
use posync_model::{DeviceId, HierarchyFile, Role, Scope, Unit, UnitId, UnitKind, UserId, UserSpec};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

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

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("bad stored {what}"))
}

pub fn append_audit(tx: &Connection, e: &AuditEntry) -> Result<(), StoreError> {
    tx.execute(
        &format!(
            "INSERT INTO audit (at, actor, action, target, detail, district) VALUES (?1, ?2, ?3, ?4, ?5, {})",
            crate::access::district_of_sql("?6")
        ),
        params![e.at, e.actor, e.action.as_str(), e.target, e.detail.to_string(), e.unit],
    )?;
    Ok(())
}

/// Entries after `after`, oldest first; only those of `districts` when given.
pub fn audit_log(
    conn: &Connection,
    after: u64,
    limit: usize,
    districts: Option<&[UnitId]>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let filter = districts.map(|d| serde_json::to_string(&d.iter().map(UnitId::as_str).collect::<Vec<_>>()));
    let filter = filter.transpose().map_err(|e| StoreError::Backend(e.to_string()))?;
    let mut stmt = conn.prepare_cached(
        "SELECT seq, at, actor, action, target, detail, district FROM audit
         WHERE seq > ?1 AND (?3 IS NULL OR district IN (SELECT value FROM json_each(?3)))
         ORDER BY seq LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![after as i64, limit as i64, filter], |r| {
        Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get::<_, String>(5)?, r.get(6)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (seq, at, actor, action, target, detail, district) = row?;
        out.push(AuditRecord {
            seq: seq as u64,
            at,
            actor,
            action,
            target,
            detail: serde_json::from_str(&detail).map_err(|_| bad("audit detail"))?,
            district,
        });
    }
    Ok(out)
}

fn unit_kind(tx: &Connection, id: &UnitId) -> Result<Option<UnitKind>, StoreError> {
    let kind: Option<String> =
        tx.query_row("SELECT kind FROM units WHERE unit_id = ?1", [id.as_str()], |r| r.get(0)).optional()?;
    kind.map(|k| UnitKind::parse(&k).ok_or_else(|| bad("unit kind"))).transpose()
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
        return Err(StoreError::Invalid(format!("unit {} is a {existing}, cannot become a {}", unit.id, unit.kind)));
    }
    tx.execute(
        "INSERT INTO units (unit_id, kind, parent_id, name) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(unit_id) DO UPDATE SET parent_id = ?3, name = ?4",
        params![unit.id.as_str(), unit.kind.as_str(), unit.parent.as_ref().map(|p| p.as_str()), unit.name.trim()],
    )?;
    Ok(())
}

/// Insert or update a user and replace their units. Units must exist; which kinds a role
/// may hold is the admin service's rule, not the store's.
pub fn put_user(tx: &Connection, user: &UserSpec, now: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO users (user_id, name, role, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(user_id) DO UPDATE SET name = ?2, role = ?3, updated_at = ?4",
        params![user.id.as_str(), user.name.trim(), user.role.as_str(), now],
    )?;
    tx.execute("DELETE FROM user_units WHERE user_id = ?1", [user.id.as_str()])?;
    for unit in &user.units {
        if unit_kind(tx, unit)?.is_none() {
            return Err(StoreError::NotFound(format!("unit {unit}")));
        }
        tx.execute(
            "INSERT OR IGNORE INTO user_units (user_id, unit_id) VALUES (?1, ?2)",
            params![user.id.as_str(), unit.as_str()],
        )?;
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
    let mut stmt = conn.prepare_cached("SELECT unit_id, kind, parent_id, name FROM units ORDER BY unit_id")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, Option<String>>(2)?, r.get::<_, String>(3)?))
    })?;
    let mut units = Vec::new();
    for row in rows {
        let (id, kind, parent, name) = row?;
        units.push(Unit {
            id: id.parse().map_err(|_| bad("unit id"))?,
            kind: UnitKind::parse(&kind).ok_or_else(|| bad("unit kind"))?,
            parent: parent.map(|p| p.parse().map_err(|_| bad("unit parent"))).transpose()?,
            name,
        });
    }
    Ok(UnitTree { units })
}

pub fn user(conn: &Connection, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let row: Option<(String, String, Option<i64>)> = conn
        .prepare_cached("SELECT name, role, disabled_at FROM users WHERE user_id = ?1")?
        .query_row([id.as_str()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((name, role, disabled_at)) = row else { return Ok(None) };
    let mut stmt = conn.prepare_cached("SELECT unit_id FROM user_units WHERE user_id = ?1 ORDER BY unit_id")?;
    let units = stmt
        .query_map([id.as_str()], |r| r.get::<_, String>(0))?
        .map(|u| u.map_err(StoreError::from).and_then(|u| u.parse().map_err(|_| bad("user unit"))))
        .collect::<Result<Vec<UnitId>, _>>()?;
    Ok(Some(UserRecord {
        id: id.clone(),
        name,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        units,
        disabled: disabled_at.is_some(),
    }))
}

pub fn users(conn: &Connection) -> Result<Vec<UserRecord>, StoreError> {
    let ids: Vec<String> = conn
        .prepare_cached("SELECT user_id FROM users ORDER BY user_id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id: UserId = id.parse().map_err(|_| bad("user id"))?;
        out.extend(user(conn, &id)?);
    }
    Ok(out)
}

/// Every posyandu under the user's units, by walking the tree down.
/// The posyandu under a user's units. The seed is an `IN` subquery, not a join on the
/// parameter: SQLite re-prepares a recursive query whose seed joins on a bound parameter at
/// every run (measured: it was most of the cost of each request's access check). `UNION`
/// (not `UNION ALL`) ends the walk even on a cycle in the tree.
const SCOPE_SQL: &str = "WITH RECURSIVE under(unit_id, kind) AS (
         SELECT u.unit_id, u.kind FROM units u
         WHERE u.unit_id IN (SELECT unit_id FROM user_units WHERE user_id = ?1)
         UNION
         SELECT c.unit_id, c.kind FROM units c JOIN under ON c.parent_id = under.unit_id
     )
     SELECT unit_id FROM under WHERE kind = 'posyandu'";

pub fn scope_of(conn: &Connection, user: &UserId) -> Result<Scope, StoreError> {
    let mut stmt = conn.prepare_cached(SCOPE_SQL)?;
    let ids = stmt
        .query_map([user.as_str()], |r| r.get::<_, String>(0))?
        .map(|p| p.map_err(StoreError::from).and_then(|p| p.parse().map_err(|_| bad("posyandu id"))))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scope::new(ids))
}

pub fn issue_enrolment(tx: &Connection, e: &NewEnrolment, now: i64) -> Result<(), StoreError> {
    if user(tx, &e.user)?.is_none() {
        return Err(StoreError::NotFound(format!("user {}", e.user)));
    }
    tx.execute(
        "INSERT INTO enrolments (code_hash, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![&e.code_hash[..], e.user.as_str(), now, e.expires_at],
    )?;
    Ok(())
}

/// The user a credential names, if it still exists and is not disabled.
fn active_user(tx: &Connection, user_s: &str) -> Result<UserRecord, StoreError> {
    let user_id: UserId = user_s.parse().map_err(|_| bad("user id"))?;
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
    let row: Option<(String, i64, Option<i64>, Option<String>)> = tx
        .query_row(
            "SELECT user_id, expires_at, used_at, device_id FROM enrolments WHERE code_hash = ?1",
            [&code_hash[..]],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((user_s, expires_at, used_at, used_by)) = row else { return Err(StoreError::InvalidCredential) };
    if !crate::access::code_redeemable(used_by.as_deref(), used_at.is_some(), expires_at, now, cred.device) {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, &user_s)?;
    let user_id = user.id.clone();
    let holder: Option<(Option<String>, Option<i64>)> = tx
        .query_row("SELECT user_id, revoked_at FROM devices WHERE device_id = ?1", [cred.device.to_string()], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()?;
    let holder = holder.as_ref().and_then(|(u, revoked)| u.as_deref().map(|u| (u, revoked.is_some())));
    crate::access::may_enrol(holder, &user_id)?;
    tx.execute(
        "UPDATE enrolments SET used_at = COALESCE(used_at, ?2), device_id = ?3 WHERE code_hash = ?1",
        params![&code_hash[..], now, cred.device.to_string()],
    )?;
    register_device(tx, &user_id, cred, now)?;
    Ok(user)
}

/// Bind `cred.device` to `user` (again): a re-enrolled device starts unrevoked with a new
/// refresh credential; its old one stops working.
pub fn register_device(tx: &Connection, user: &UserId, cred: &NewCredential, now: i64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO devices (device_id, user_id, label, enrolled_at, revoked_at, refresh_hash, refresh_expires_at, last_seen_at)
         VALUES (?1, ?2, ?3, ?4, NULL, ?5, ?6, ?4)
         ON CONFLICT(device_id) DO UPDATE SET user_id = ?2, label = ?3, enrolled_at = ?4, revoked_at = NULL,
             refresh_hash = ?5, refresh_expires_at = ?6, last_seen_at = ?4",
        params![cred.device.to_string(), user.as_str(), cred.label, now, &cred.refresh_hash[..], cred.refresh_expires_at],
    )?;
    Ok(())
}

/// A device row's credential columns: user, revoked_at, refresh hash, refresh expiry.
type CredentialRow = (Option<String>, Option<i64>, Option<Vec<u8>>, Option<i64>);

/// Check a refresh credential and slide its expiry. Unknown, wrong, expired: invalid;
/// revoked: revoked (so the phone can tell its kader why).
pub fn refresh_device(
    tx: &Connection,
    device: DeviceId,
    refresh_hash: &[u8; 32],
    new_expires_at: i64,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let row: Option<CredentialRow> = tx
        .query_row(
            "SELECT user_id, revoked_at, refresh_hash, refresh_expires_at FROM devices WHERE device_id = ?1",
            [device.to_string()],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((Some(user_s), revoked_at, Some(stored), Some(expires_at))) = row else {
        return Err(StoreError::InvalidCredential);
    };
    if stored.as_slice() != refresh_hash.as_slice() {
        return Err(StoreError::InvalidCredential);
    }
    if revoked_at.is_some() {
        return Err(StoreError::DeviceRevoked);
    }
    if now > expires_at {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, &user_s)?;
    let slid = tx.execute(
        "UPDATE devices SET refresh_expires_at = ?2, last_seen_at = ?3 WHERE device_id = ?1",
        params![device.to_string(), new_expires_at, now],
    );
    match slid.map_err(StoreError::from) {
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
    let n = tx.execute(
        "UPDATE devices SET revoked_at = COALESCE(revoked_at, ?2) WHERE device_id = ?1 AND user_id IS NOT NULL",
        params![device.to_string(), now],
    )?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("device {device}")));
    }
    Ok(())
}

pub fn devices(conn: &Connection) -> Result<Vec<DeviceRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT device_id, user_id, label, enrolled_at, revoked_at, last_seen_at, last_push_at
         FROM devices ORDER BY user_id, device_id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, Option<String>>(1)?,
            r.get::<_, String>(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (device, user, label, enrolled_at, revoked_at, last_seen_at, last_push_at) = row?;
        out.push(DeviceRecord {
            device: device.parse().map_err(|_| bad("device id"))?,
            user: user.map(|u| u.parse().map_err(|_| bad("user id"))).transpose()?,
            label,
            enrolled_at,
            revoked_at,
            last_seen_at,
            last_push_at,
        });
    }
    Ok(out)
}

pub fn device_access(conn: &Connection, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
    let row: Option<(Option<String>, Option<i64>)> = conn
        .prepare_cached("SELECT user_id, revoked_at FROM devices WHERE device_id = ?1")?
        .query_row([device.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((Some(user_s), revoked_at)) = row else { return Ok(None) };
    let user_id: UserId = user_s.parse().map_err(|_| bad("user id"))?;
    let Some(user) = user(conn, &user_id)? else { return Ok(None) };
    let scope = scope_of(conn, &user_id)?;
    Ok(Some(DeviceAccess { device, user, revoked: revoked_at.is_some(), scope }))
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
        let stmt = conn.prepare_cached(SCOPE_SQL).expect("cached");
        assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "compiled once, run six times");
    }
}

//! The access tables' statements and rows, written once: hierarchy, users, enrolments,
//! devices, audit. The adapters run them in their own transactions and keep only what is
//! theirs (row locks and the audit clock on PostgreSQL); the rules (`check_parent`,
//! `access::code_redeemable`, `access::may_enrol`, `check_refresh`) are shared functions.

use crate::StoreError;
use crate::access::{
    ApiKeyRecord, AuditEntry, AuditRecord, DeviceRecord, NewApiKey, NewCredential, NewEnrolment, PinAttempt,
    PinLockout, PinRecord, UserRecord,
};
use crate::sql::{Dialect, Row, Statement, Value};
use posync_model::{DeviceId, Role, Unit, UnitId, UnitKind, UserId, UserSpec};

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("bad stored {what}"))
}

fn params(d: Dialect, n: usize) -> String {
    (1..=n).map(|i| d.p(i)).collect::<Vec<_>>().join(", ")
}

/// Append one audit entry. SQLite numbers it from the table; PostgreSQL from the `audit`
/// clock row, locked until commit so positions are gap-free and in commit order across
/// instances (call it last). Exactly one row is written, or the entry was dropped.
pub fn append_audit(d: Dialect, e: &AuditEntry) -> Statement {
    let values = vec![
        e.at.into(),
        e.actor.clone().into(),
        e.action.as_str().into(),
        e.target.clone().into(),
        e.detail.to_string().into(),
        e.unit.clone().into(),
    ];
    let sql = match d {
        Dialect::Sqlite => format!(
            "INSERT INTO audit (at, actor, action, target, detail, district) VALUES (?1, ?2, ?3, ?4, ?5, {})",
            crate::access::district_of_sql("?6")
        ),
        Dialect::Postgres => format!(
            "WITH c AS (UPDATE clocks SET seq = seq + 1 WHERE name = 'audit' RETURNING seq)
             INSERT INTO audit (seq, at, actor, action, target, detail, district)
             SELECT c.seq, $1, $2, $3, $4, $5, {} FROM c",
            crate::access::district_of_sql("$6::text")
        ),
    };
    Statement::new(sql, values)
}

/// Up to `limit` entries after position `after`, oldest first; only those concerning
/// `districts` when given.
pub fn audit_log(d: Dialect, after: u64, limit: usize, districts: Option<&[UnitId]>) -> Statement {
    Statement::new(
        format!(
            "SELECT seq, at, actor, action, target, detail, district FROM audit
             WHERE seq > {} AND {} ORDER BY seq LIMIT {}",
            d.p(1),
            d.in_list_or_all("district", 3),
            d.p(2)
        ),
        vec![
            // Saturate rather than wrap: PostgreSQL refuses a negative LIMIT.
            i64::try_from(after).unwrap_or(i64::MAX).into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            districts.map(|d| Value::Texts(d.iter().map(|u| u.as_str().to_owned()).collect())).unwrap_or(Value::Null),
        ],
    )
}

pub fn audit_record(row: &Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: u64::try_from(row.int(0)?).map_err(|_| bad("audit seq"))?,
        at: row.int(1)?,
        actor: row.text(2)?,
        action: row.text(3)?,
        target: row.text(4)?,
        detail: serde_json::from_str(&row.text(5)?).map_err(|_| bad("audit detail"))?,
        district: row.opt_text(6)?,
    })
}

pub fn unit_kind(d: Dialect, id: &UnitId) -> Statement {
    Statement::new(format!("SELECT kind FROM units WHERE unit_id = {}", d.p(1)), vec![id.as_str().into()])
}

pub fn parse_unit_kind(row: &Row) -> Result<UnitKind, StoreError> {
    UnitKind::parse(&row.text(0)?).ok_or_else(|| bad("unit kind"))
}

/// Insert or update a unit. The `WHERE` only matters when another writer inserted the same
/// id with another kind after the caller's check: then nothing is written (0 rows).
pub fn upsert_unit(d: Dialect, unit: &Unit) -> Statement {
    let (p2, p3, p4) = (d.p(2), d.p(3), d.p(4));
    Statement::new(
        format!(
            "INSERT INTO units (unit_id, kind, parent_id, name) VALUES ({}, {p2}, {p3}, {p4})
             ON CONFLICT (unit_id) DO UPDATE SET parent_id = {p3}, name = {p4} WHERE units.kind = {p2}",
            d.p(1)
        ),
        vec![
            unit.id.as_str().into(),
            unit.kind.as_str().into(),
            unit.parent.as_ref().map(|p| p.as_str().to_owned()).into(),
            unit.name.trim().into(),
        ],
    )
}

pub fn kind_change(unit: &Unit, existing: UnitKind) -> StoreError {
    StoreError::Invalid(format!("unit {} is a {existing}, cannot become a {}", unit.id, unit.kind))
}

pub fn upsert_user(d: Dialect, user: &UserSpec, now: i64) -> Statement {
    let (p2, p3, p4) = (d.p(2), d.p(3), d.p(4));
    Statement::new(
        format!(
            "INSERT INTO users (user_id, name, role, updated_at) VALUES ({}, {p2}, {p3}, {p4})
             ON CONFLICT (user_id) DO UPDATE SET name = {p2}, role = {p3}, updated_at = {p4}",
            d.p(1)
        ),
        vec![user.id.as_str().into(), user.name.trim().into(), user.role.as_str().into(), now.into()],
    )
}

pub fn clear_user_units(d: Dialect, user: &UserId) -> Statement {
    Statement::new(format!("DELETE FROM user_units WHERE user_id = {}", d.p(1)), vec![user.as_str().into()])
}

pub fn add_user_unit(d: Dialect, user: &UserId, unit: &UnitId) -> Statement {
    Statement::new(
        format!("INSERT INTO user_units (user_id, unit_id) VALUES ({}) ON CONFLICT DO NOTHING", params(d, 2)),
        vec![user.as_str().into(), unit.as_str().into()],
    )
}

pub fn unit_tree(d: Dialect) -> Statement {
    Statement::new(
        format!("SELECT unit_id, kind, parent_id, name FROM units ORDER BY {}", d.by_bytes("unit_id")),
        vec![],
    )
}

pub fn unit(row: &Row) -> Result<Unit, StoreError> {
    Ok(Unit {
        id: row.text(0)?.parse().map_err(|_| bad("unit id"))?,
        kind: UnitKind::parse(&row.text(1)?).ok_or_else(|| bad("unit kind"))?,
        parent: row.opt_text(2)?.map(|p| p.parse().map_err(|_| bad("unit parent"))).transpose()?,
        name: row.text(3)?,
    })
}

/// A user's name, role and whether disabled.
pub fn user(d: Dialect, id: &UserId) -> Statement {
    Statement::new(
        format!("SELECT name, role, disabled_at FROM users WHERE user_id = {}", d.p(1)),
        vec![id.as_str().into()],
    )
}

/// A user's units, in byte order.
pub fn user_units(d: Dialect, id: &UserId) -> Statement {
    Statement::new(
        format!("SELECT unit_id FROM user_units WHERE user_id = {} ORDER BY {}", d.p(1), d.by_bytes("unit_id")),
        vec![id.as_str().into()],
    )
}

/// Rows of [`user`] and [`user_units`] as the user.
pub fn user_record(id: &UserId, row: &Row, units: &[Row]) -> Result<UserRecord, StoreError> {
    Ok(UserRecord {
        id: id.clone(),
        name: row.text(0)?,
        role: Role::parse(&row.text(1)?).ok_or_else(|| bad("role"))?,
        units: units.iter().map(|u| u.text(0)?.parse().map_err(|_| bad("user unit"))).collect::<Result<_, _>>()?,
        disabled: row.opt_int(2)?.is_some(),
    })
}

pub fn user_ids(d: Dialect) -> Statement {
    Statement::new(format!("SELECT user_id FROM users ORDER BY {}", d.by_bytes("user_id")), vec![])
}

pub fn user_id(row: &Row) -> Result<UserId, StoreError> {
    row.text(0)?.parse().map_err(|_| bad("user id"))
}

/// The posyandu under a user's units. The seed is an `IN` subquery, not a join on the
/// parameter: SQLite re-prepares a recursive query whose seed joins on a bound parameter at
/// every run (measured: it was most of the cost of each request's access check). `UNION`
/// (not `UNION ALL`) ends the walk even on a cycle in the tree.
pub fn scope_of(d: Dialect, user: &UserId) -> Statement {
    Statement::new(
        format!(
            "WITH RECURSIVE under(unit_id, kind) AS (
                 SELECT u.unit_id, u.kind FROM units u
                 WHERE u.unit_id IN (SELECT unit_id FROM user_units WHERE user_id = {})
                 UNION
                 SELECT c.unit_id, c.kind FROM units c JOIN under ON c.parent_id = under.unit_id
             )
             SELECT unit_id FROM under WHERE kind = 'posyandu'",
            d.p(1)
        ),
        vec![user.as_str().into()],
    )
}

pub fn scope(rows: &[Row]) -> Result<posync_model::Scope, StoreError> {
    let ids = rows.iter().map(|r| r.text(0)?.parse().map_err(|_| bad("posyandu id"))).collect::<Result<Vec<_>, _>>()?;
    Ok(posync_model::Scope::new(ids))
}

pub fn insert_enrolment(d: Dialect, e: &NewEnrolment, now: i64) -> Statement {
    Statement::new(
        format!("INSERT INTO enrolments (code_hash, user_id, created_at, expires_at) VALUES ({})", params(d, 4)),
        vec![e.code_hash.to_vec().into(), e.user.as_str().into(), now.into(), e.expires_at.into()],
    )
}

/// A code's user, expiry, use and using device (locked on PostgreSQL: two instances
/// redeeming one code at once cannot both succeed).
pub fn enrolment(d: Dialect, code_hash: &[u8; 32]) -> Statement {
    Statement::new(
        format!(
            "SELECT user_id, expires_at, used_at, device_id FROM enrolments WHERE code_hash = {}{}",
            d.p(1),
            d.for_update()
        ),
        vec![code_hash.to_vec().into()],
    )
}

/// A code as read for redeeming.
pub struct EnrolmentRow {
    pub user: String,
    pub expires_at: i64,
    pub used: bool,
    pub used_by: Option<String>,
}

pub fn enrolment_row(row: &Row) -> Result<EnrolmentRow, StoreError> {
    Ok(EnrolmentRow {
        user: row.text(0)?,
        expires_at: row.int(1)?,
        used: row.opt_int(2)?.is_some(),
        used_by: row.opt_text(3)?,
    })
}

/// The user a device is bound to and when it was revoked (locked on PostgreSQL when `lock`).
pub fn device_holder(d: Dialect, device: DeviceId, lock: bool) -> Statement {
    Statement::new(
        format!(
            "SELECT user_id, revoked_at FROM devices WHERE device_id = {}{}",
            d.p(1),
            if lock { d.for_update() } else { "" }
        ),
        vec![device.to_string().into()],
    )
}

/// A row of [`device_holder`]: the user, if bound, and whether revoked.
pub fn holder(row: &Row) -> Result<Option<(String, bool)>, StoreError> {
    let revoked = row.opt_int(1)?.is_some();
    Ok(row.opt_text(0)?.map(|u| (u, revoked)))
}

pub fn use_enrolment(d: Dialect, code_hash: &[u8; 32], now: i64, device: DeviceId) -> Statement {
    Statement::new(
        format!(
            "UPDATE enrolments SET used_at = COALESCE(used_at, {}), device_id = {} WHERE code_hash = {}",
            d.p(2),
            d.p(3),
            d.p(1)
        ),
        vec![code_hash.to_vec().into(), now.into(), device.to_string().into()],
    )
}

/// Bind `cred.device` to `user` (again): a re-enrolled device starts unrevoked with a new
/// refresh credential; its old one stops working.
pub fn register_device(d: Dialect, user: &UserId, cred: &NewCredential, now: i64) -> Statement {
    let (p1, p2, p3, p4, p5, p6) = (d.p(1), d.p(2), d.p(3), d.p(4), d.p(5), d.p(6));
    Statement::new(
        format!(
            "INSERT INTO devices (device_id, user_id, label, enrolled_at, revoked_at, refresh_hash, refresh_expires_at, last_seen_at)
             VALUES ({p1}, {p2}, {p3}, {p4}, NULL, {p5}, {p6}, {p4})
             ON CONFLICT (device_id) DO UPDATE SET user_id = {p2}, label = {p3}, enrolled_at = {p4}, revoked_at = NULL,
                 refresh_hash = {p5}, refresh_expires_at = {p6}, last_seen_at = {p4}"
        ),
        vec![
            cred.device.to_string().into(),
            user.as_str().into(),
            cred.label.clone().into(),
            now.into(),
            cred.refresh_hash.to_vec().into(),
            cred.refresh_expires_at.into(),
        ],
    )
}

/// A device's credential columns (locked on PostgreSQL when `lock`, from the check to the
/// slide: a revocation committing meanwhile is either seen or waits).
pub fn credential(d: Dialect, device: DeviceId, lock: bool) -> Statement {
    Statement::new(
        format!(
            "SELECT user_id, revoked_at, refresh_hash, refresh_expires_at FROM devices WHERE device_id = {}{}",
            d.p(1),
            if lock { d.for_update() } else { "" }
        ),
        vec![device.to_string().into()],
    )
}

/// Check a row of [`credential`] against a presented refresh hash: the user it names if the
/// credential is good. Unknown, wrong, expired: invalid; revoked: revoked (so the phone can
/// tell its kader why).
pub fn check_refresh(row: Option<&Row>, refresh_hash: &[u8; 32], now: i64) -> Result<String, StoreError> {
    let Some(row) = row else { return Err(StoreError::InvalidCredential) };
    let (Some(user), Some(stored), Some(expires_at)) = (row.opt_text(0)?, row.opt_bytes(2)?, row.opt_int(3)?) else {
        return Err(StoreError::InvalidCredential);
    };
    if stored.as_slice() != refresh_hash.as_slice() {
        return Err(StoreError::InvalidCredential);
    }
    if row.opt_int(1)?.is_some() {
        return Err(StoreError::DeviceRevoked);
    }
    if now > expires_at {
        return Err(StoreError::InvalidCredential);
    }
    Ok(user)
}

pub fn slide_refresh(d: Dialect, device: DeviceId, new_expires_at: i64, now: i64) -> Statement {
    Statement::new(
        format!(
            "UPDATE devices SET refresh_expires_at = {}, last_seen_at = {} WHERE device_id = {}",
            d.p(2),
            d.p(3),
            d.p(1)
        ),
        vec![device.to_string().into(), new_expires_at.into(), now.into()],
    )
}

/// Revoke an enrolled device (0 rows: no such enrolled device).
pub fn revoke_device(d: Dialect, device: DeviceId, now: i64) -> Statement {
    Statement::new(
        format!(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, {}) WHERE device_id = {} AND user_id IS NOT NULL",
            d.p(2),
            d.p(1)
        ),
        vec![device.to_string().into(), now.into()],
    )
}

pub fn devices(d: Dialect) -> Statement {
    Statement::new(
        format!(
            "SELECT device_id, user_id, label, enrolled_at, revoked_at, last_seen_at, last_push_at
             FROM devices ORDER BY {} NULLS FIRST, {}",
            d.by_bytes("user_id"),
            d.by_bytes("device_id")
        ),
        vec![],
    )
}

pub fn device_record(row: &Row) -> Result<DeviceRecord, StoreError> {
    Ok(DeviceRecord {
        device: row.text(0)?.parse().map_err(|_| bad("device id"))?,
        user: row.opt_text(1)?.map(|u| u.parse().map_err(|_| bad("user id"))).transpose()?,
        label: row.text(2)?,
        enrolled_at: row.opt_int(3)?,
        revoked_at: row.opt_int(4)?,
        last_seen_at: row.opt_int(5)?,
        last_push_at: row.opt_int(6)?,
    })
}

// ---- sign-in PINs ----

/// Set or replace a user's PIN: a new PIN starts with no failures and no lock.
pub fn set_pin(d: Dialect, user: &UserId, pin_hash: &str, now: i64) -> Statement {
    let (p2, p3) = (d.p(2), d.p(3));
    Statement::new(
        format!(
            "INSERT INTO user_pins (user_id, pin_hash, failures, locked_until, set_at) VALUES ({}, {p2}, 0, NULL, {p3})
             ON CONFLICT (user_id) DO UPDATE SET pin_hash = {p2}, failures = 0, locked_until = NULL, set_at = {p3}",
            d.p(1)
        ),
        vec![user.as_str().into(), pin_hash.into(), now.into()],
    )
}

pub fn pin_of(d: Dialect, user: &UserId) -> Statement {
    Statement::new(
        format!("SELECT pin_hash, failures, locked_until, set_at FROM user_pins WHERE user_id = {}", d.p(1)),
        vec![user.as_str().into()],
    )
}

/// A row of [`pin_of`].
pub fn pin_record(user: &UserId, row: &Row) -> Result<PinRecord, StoreError> {
    Ok(PinRecord {
        user: user.clone(),
        pin_hash: row.text(0)?,
        failures: u32::try_from(row.int(1)?).map_err(|_| bad("PIN failures"))?,
        locked_until: row.opt_int(2)?,
        set_at: row.int(3)?,
    })
}

/// Count one attempt of a user who is not locked, in one statement (atomic on both
/// backends: PostgreSQL holds the row from the check to commit, so parallel attempts each
/// see the previous one's count). A lock that has run out starts the count over; the attempt
/// that reaches the maximum sets the lock. No row: no PIN, or locked.
pub fn count_pin_attempt(d: Dialect, user: &UserId, now: i64, lockout: PinLockout) -> Statement {
    let (now_p, max_p, lock_p) = (d.int_p(2), d.int_p(3), d.int_p(4));
    let expired = format!("(locked_until IS NOT NULL AND locked_until <= {now_p})");
    // UPDATE's right-hand sides all read the row as it was: write the new count once here.
    let counted = format!("(CASE WHEN {expired} THEN 1 ELSE failures + 1 END)");
    Statement::new(
        format!(
            "UPDATE user_pins SET failures = {counted},
                 locked_until = CASE WHEN {counted} >= {max_p} THEN {now_p} + {lock_p} ELSE NULL END
             WHERE user_id = {} AND (locked_until IS NULL OR locked_until <= {now_p})
             RETURNING pin_hash, failures",
            d.p(1)
        ),
        vec![user.as_str().into(), now.into(), i64::from(lockout.failures_max).into(), lockout.lock_seconds.into()],
    )
}

/// What an attempt goes on with: the counted row of [`count_pin_attempt`] if there was one,
/// else the PIN as read after it ([`pin_of`]).
pub fn pin_attempt(counted: Option<&Row>, current: Option<&Row>, now: i64) -> Result<PinAttempt, StoreError> {
    if let Some(row) = counted {
        let failures = u32::try_from(row.int(1)?).map_err(|_| bad("PIN failures"))?;
        return Ok(PinAttempt::Verify { pin_hash: row.text(0)?, failures });
    }
    match current.map(|r| r.opt_int(2)).transpose()?.flatten() {
        Some(until) if until > now => Ok(PinAttempt::Locked { until }),
        // No PIN (a PIN set after the count looked is for the next attempt).
        _ => Ok(PinAttempt::NoPin),
    }
}

/// A verified PIN's success: the count and lock start over. Only if the PIN is still the
/// one checked (0 rows: replaced meanwhile).
pub fn reset_pin_failures(d: Dialect, user: &UserId, pin_hash: &str) -> Statement {
    Statement::new(
        format!(
            "UPDATE user_pins SET failures = 0, locked_until = NULL WHERE user_id = {} AND pin_hash = {}",
            d.p(1),
            d.p(2)
        ),
        vec![user.as_str().into(), pin_hash.into()],
    )
}

// ---- read-only API keys ----

pub fn insert_api_key(d: Dialect, k: &NewApiKey) -> Statement {
    Statement::new(
        format!(
            "INSERT INTO api_keys (key_id, key_hash, label, unit_id, role, created_by, created_at) VALUES ({})",
            params(d, 7)
        ),
        vec![
            k.id.clone().into(),
            k.key_hash.to_vec().into(),
            k.label.trim().into(),
            k.unit.as_str().into(),
            k.role.as_str().into(),
            k.created_by.clone().into(),
            k.created_at.into(),
        ],
    )
}

const API_KEY_COLUMNS: &str = "key_id, label, unit_id, role, created_by, created_at, revoked_at, last_used_at";

/// Every API key, oldest first.
pub fn api_keys(d: Dialect) -> Statement {
    Statement::new(
        format!("SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, {}", d.by_bytes("key_id")),
        vec![],
    )
}

/// The key whose secret hashes to `key_hash` (locked on PostgreSQL: a revocation committing
/// meanwhile is either seen or waits).
pub fn api_key_by_hash(d: Dialect, key_hash: &[u8; 32]) -> Statement {
    Statement::new(
        format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = {}{}", d.p(1), d.for_update()),
        vec![key_hash.to_vec().into()],
    )
}

/// A row of [`api_keys`] or [`api_key_by_hash`].
pub fn api_key_record(row: &Row) -> Result<ApiKeyRecord, StoreError> {
    Ok(ApiKeyRecord {
        id: row.text(0)?,
        label: row.text(1)?,
        unit: row.text(2)?.parse().map_err(|_| bad("API key unit"))?,
        role: Role::parse(&row.text(3)?).ok_or_else(|| bad("API key role"))?,
        created_by: row.text(4)?,
        created_at: row.int(5)?,
        revoked_at: row.opt_int(6)?,
        last_used_at: row.opt_int(7)?,
    })
}

/// Record a successful use (only of an unrevoked key: 0 rows if revoked meanwhile).
pub fn touch_api_key(d: Dialect, id: &str, now: i64) -> Statement {
    Statement::new(
        format!("UPDATE api_keys SET last_used_at = {} WHERE key_id = {} AND revoked_at IS NULL", d.p(2), d.p(1)),
        vec![id.into(), now.into()],
    )
}

/// Revoke a key (0 rows: no such key).
pub fn revoke_api_key(d: Dialect, id: &str, now: i64) -> Statement {
    Statement::new(
        format!("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, {}) WHERE key_id = {}", d.p(2), d.p(1)),
        vec![id.into(), now.into()],
    )
}

/// The posyandu under one unit (itself, if it is one), as [`scope_of`] walks a user's units.
pub fn unit_scope(d: Dialect, unit: &UnitId) -> Statement {
    Statement::new(
        format!(
            "WITH RECURSIVE under(unit_id, kind) AS (
                 SELECT u.unit_id, u.kind FROM units u WHERE u.unit_id IN (SELECT {})
                 UNION
                 SELECT c.unit_id, c.kind FROM units c JOIN under ON c.parent_id = under.unit_id
             )
             SELECT unit_id FROM under WHERE kind = 'posyandu'",
            d.text_p(1)
        ),
        vec![unit.as_str().into()],
    )
}

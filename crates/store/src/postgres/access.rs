//! PostgreSQL side of the access data: hierarchy, users, devices, enrolments, audit.
//! Plain async functions over a transaction (reads run in one too); `mod.rs` opens and
//! commits it. A translation of `sqlite/access.rs`, statement for statement, except where
//! several server instances writing at once need a row lock (see `redeem_enrolment`,
//! `refresh_device`, `put_unit`) or a clock (see `append_audit`).
//!
//! Text ordering: SQLite compares text bytewise; a PostgreSQL database may use a locale
//! collation that skips `-` and `_`. Every `ORDER BY` on an id says `COLLATE "C"`, and
//! `NULLS FIRST` where SQLite puts NULLs, so results come back in the SQLite order.

use crate::StoreError;
use crate::access::{
    AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport, NewCredential, NewEnrolment, UnitTree,
    UserRecord,
};
use deadpool_postgres::Transaction;
use posync_model::hierarchy::check_parent;
use posync_model::{DeviceId, HierarchyFile, Role, Scope, Unit, UnitId, UnitKind, UserId, UserSpec};
use tokio_postgres::types::ToSql;

/// One statement's parameters.
type Params<'a> = [&'a (dyn ToSql + Sync)];

fn bad(what: &str) -> StoreError {
    StoreError::Backend(format!("bad stored {what}"))
}

/// Append one entry with the next audit position. Call it as the last statement before
/// commit: the `audit` clock row stays locked until then, so the next writer (on any
/// instance) waits and takes the next number. Positions are gap-free and in commit order,
/// which `audit_log(after)` readers rely on; a rollback hands its number back.
pub async fn append_audit(tx: &Transaction<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(&format!(
            "WITH c AS (UPDATE clocks SET seq = seq + 1 WHERE name = 'audit' RETURNING seq)
                 INSERT INTO audit (seq, at, actor, action, target, detail, district)
                 SELECT c.seq, $1, $2, $3, $4, $5, {} FROM c",
            crate::access::district_of_sql("$6::text")
        ))
        .await?;
    let detail = e.detail.to_string();
    let params: &Params<'_> = &[&e.at, &e.actor, &e.action.as_str(), &e.target, &detail, &e.unit];
    let n = tx.execute(&stmt, params).await?;
    if n != 1 {
        // No clock row: never drop an audit entry silently.
        return Err(StoreError::Backend("audit clock missing".into()));
    }
    Ok(())
}

/// Up to `limit` entries after position `after`, oldest first.
pub async fn audit_log(
    tx: &Transaction<'_>,
    after: u64,
    limit: usize,
    districts: Option<&[UnitId]>,
) -> Result<Vec<AuditRecord>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT seq, at, actor, action, target, detail, district FROM audit
             WHERE seq > $1 AND ($3::text[] IS NULL OR district = ANY($3)) ORDER BY seq LIMIT $2",
        )
        .await?;
    // Saturate rather than wrap: PostgreSQL refuses a negative LIMIT.
    let after = i64::try_from(after).unwrap_or(i64::MAX);
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let districts: Option<Vec<String>> = districts.map(|d| d.iter().map(|u| u.as_str().to_owned()).collect());
    let rows = tx.query(&stmt, &[&after, &limit, &districts]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let seq = r.try_get::<_, i64>(0)?;
        let detail = r.try_get::<_, String>(5)?;
        out.push(AuditRecord {
            seq: u64::try_from(seq).map_err(|_| bad("audit seq"))?,
            at: r.try_get(1)?,
            actor: r.try_get(2)?,
            action: r.try_get(3)?,
            target: r.try_get(4)?,
            detail: serde_json::from_str(&detail).map_err(|_| bad("audit detail"))?,
            district: r.try_get(6)?,
        });
    }
    Ok(out)
}

async fn unit_kind(tx: &Transaction<'_>, id: &UnitId) -> Result<Option<UnitKind>, StoreError> {
    let stmt = tx.prepare_cached("SELECT kind FROM units WHERE unit_id = $1").await?;
    let row = tx.query_opt(&stmt, &[&id.as_str()]).await?;
    let kind = row.map(|r| r.try_get::<_, String>(0)).transpose()?;
    kind.map(|k| UnitKind::parse(&k).ok_or_else(|| bad("unit kind"))).transpose()
}

fn kind_change(unit: &Unit, existing: UnitKind) -> StoreError {
    StoreError::Invalid(format!("unit {} is a {existing}, cannot become a {}", unit.id, unit.kind))
}

/// Insert or update one unit after checking its parent's level.
pub async fn put_unit(tx: &Transaction<'_>, unit: &Unit) -> Result<(), StoreError> {
    let parent_kind = match &unit.parent {
        Some(p) => unit_kind(tx, p).await?,
        None => None,
    };
    check_parent(unit, parent_kind)?;
    if let Some(existing) = unit_kind(tx, &unit.id).await?
        && existing != unit.kind
    {
        return Err(kind_change(unit, existing));
    }
    // The `WHERE` only matters when another instance inserted the same id, with another
    // kind, after the check above: then nothing is written and the caller hears why.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO units (unit_id, kind, parent_id, name) VALUES ($1, $2, $3, $4)
             ON CONFLICT (unit_id) DO UPDATE SET parent_id = $3, name = $4 WHERE units.kind = $2",
        )
        .await?;
    let parent = unit.parent.as_ref().map(|p| p.as_str());
    let params: &Params<'_> = &[&unit.id.as_str(), &unit.kind.as_str(), &parent, &unit.name.trim()];
    if tx.execute(&stmt, params).await? == 0 {
        return Err(match unit_kind(tx, &unit.id).await? {
            Some(existing) => kind_change(unit, existing),
            None => StoreError::Backend(format!("unit {} was not written", unit.id)),
        });
    }
    Ok(())
}

/// Insert or update a user and replace their units. Units must exist; which kinds a role
/// may hold is the admin service's rule, not the store's.
pub async fn put_user(tx: &Transaction<'_>, user: &UserSpec, now: i64) -> Result<(), StoreError> {
    let upsert = tx
        .prepare_cached(
            "INSERT INTO users (user_id, name, role, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id) DO UPDATE SET name = $2, role = $3, updated_at = $4",
        )
        .await?;
    let params: &Params<'_> = &[&user.id.as_str(), &user.name.trim(), &user.role.as_str(), &now];
    tx.execute(&upsert, params).await?;
    let clear = tx.prepare_cached("DELETE FROM user_units WHERE user_id = $1").await?;
    tx.execute(&clear, &[&user.id.as_str()]).await?;
    let add =
        tx.prepare_cached("INSERT INTO user_units (user_id, unit_id) VALUES ($1, $2) ON CONFLICT DO NOTHING").await?;
    for unit in &user.units {
        if unit_kind(tx, unit).await?.is_none() {
            return Err(StoreError::NotFound(format!("unit {unit}")));
        }
        tx.execute(&add, &[&user.id.as_str(), &unit.as_str()]).await?;
    }
    Ok(())
}

pub async fn import(tx: &Transaction<'_>, file: &HierarchyFile, now: i64) -> Result<ImportReport, StoreError> {
    file.validate()?;
    for unit in &file.units {
        put_unit(tx, unit).await?;
    }
    for user in &file.users {
        put_user(tx, user, now).await?;
    }
    Ok(ImportReport { units: file.units.len(), users: file.users.len() })
}

pub async fn unit_tree(tx: &Transaction<'_>) -> Result<UnitTree, StoreError> {
    let stmt =
        tx.prepare_cached("SELECT unit_id, kind, parent_id, name FROM units ORDER BY unit_id COLLATE \"C\"").await?;
    let rows = tx.query(&stmt, &[]).await?;
    let mut units = Vec::with_capacity(rows.len());
    for r in rows {
        let id = r.try_get::<_, String>(0)?;
        let kind = r.try_get::<_, String>(1)?;
        let parent = r.try_get::<_, Option<String>>(2)?;
        units.push(Unit {
            id: id.parse().map_err(|_| bad("unit id"))?,
            kind: UnitKind::parse(&kind).ok_or_else(|| bad("unit kind"))?,
            parent: parent.map(|p| p.parse().map_err(|_| bad("unit parent"))).transpose()?,
            name: r.try_get(3)?,
        });
    }
    Ok(UnitTree { units })
}

pub async fn user(tx: &Transaction<'_>, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let stmt = tx.prepare_cached("SELECT name, role, disabled_at FROM users WHERE user_id = $1").await?;
    let Some(row) = tx.query_opt(&stmt, &[&id.as_str()]).await? else { return Ok(None) };
    let name = row.try_get::<_, String>(0)?;
    let role = row.try_get::<_, String>(1)?;
    let disabled_at = row.try_get::<_, Option<i64>>(2)?;
    let stmt =
        tx.prepare_cached("SELECT unit_id FROM user_units WHERE user_id = $1 ORDER BY unit_id COLLATE \"C\"").await?;
    let units = tx
        .query(&stmt, &[&id.as_str()])
        .await?
        .iter()
        .map(|r| {
            r.try_get::<_, String>(0).map_err(StoreError::from).and_then(|u| u.parse().map_err(|_| bad("user unit")))
        })
        .collect::<Result<Vec<UnitId>, _>>()?;
    Ok(Some(UserRecord {
        id: id.clone(),
        name,
        role: Role::parse(&role).ok_or_else(|| bad("role"))?,
        units,
        disabled: disabled_at.is_some(),
    }))
}

pub async fn users(tx: &Transaction<'_>) -> Result<Vec<UserRecord>, StoreError> {
    let stmt = tx.prepare_cached("SELECT user_id FROM users ORDER BY user_id COLLATE \"C\"").await?;
    let ids = tx.query(&stmt, &[]).await?.iter().map(|r| r.try_get::<_, String>(0)).collect::<Result<Vec<_>, _>>()?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let id: UserId = id.parse().map_err(|_| bad("user id"))?;
        out.extend(user(tx, &id).await?);
    }
    Ok(out)
}

/// Every posyandu under the user's units, by walking the tree down.
pub async fn scope_of(tx: &Transaction<'_>, user: &UserId) -> Result<Scope, StoreError> {
    let stmt = tx
        .prepare_cached(
            "WITH RECURSIVE under(unit_id, kind, depth) AS (
                 SELECT u.unit_id, u.kind, 0 FROM units u JOIN user_units uu ON uu.unit_id = u.unit_id
                 WHERE uu.user_id = $1
                 UNION
                 SELECT c.unit_id, c.kind, under.depth + 1 FROM units c JOIN under ON c.parent_id = under.unit_id
                 WHERE under.depth < 8
             )
             SELECT DISTINCT unit_id FROM under WHERE kind = 'posyandu'",
        )
        .await?;
    let ids = tx
        .query(&stmt, &[&user.as_str()])
        .await?
        .iter()
        .map(|r| {
            r.try_get::<_, String>(0).map_err(StoreError::from).and_then(|p| p.parse().map_err(|_| bad("posyandu id")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Scope::new(ids))
}

pub async fn issue_enrolment(tx: &Transaction<'_>, e: &NewEnrolment, now: i64) -> Result<(), StoreError> {
    if user(tx, &e.user).await?.is_none() {
        return Err(StoreError::NotFound(format!("user {}", e.user)));
    }
    let stmt = tx
        .prepare_cached("INSERT INTO enrolments (code_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .await?;
    let params: &Params<'_> = &[&&e.code_hash[..], &e.user.as_str(), &now, &e.expires_at];
    tx.execute(&stmt, params).await?;
    Ok(())
}

/// The user a credential names, if it still exists and is not disabled.
async fn active_user(tx: &Transaction<'_>, user_s: &str) -> Result<UserRecord, StoreError> {
    let user_id: UserId = user_s.parse().map_err(|_| bad("user id"))?;
    match user(tx, &user_id).await? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(StoreError::InvalidCredential),
    }
}

/// Use a code once: bind the device to the code's user with a fresh refresh credential.
/// The code's row is locked (`FOR UPDATE`) from the check to commit, so two instances
/// redeeming one code at once cannot both succeed: the second sees it used.
pub async fn redeem_enrolment(
    tx: &Transaction<'_>,
    code_hash: &[u8; 32],
    cred: &NewCredential,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT user_id, expires_at, used_at, device_id FROM enrolments WHERE code_hash = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&&code_hash[..]]).await? else {
        return Err(StoreError::InvalidCredential);
    };
    let user_s = row.try_get::<_, String>(0)?;
    let expires_at = row.try_get::<_, i64>(1)?;
    let used_at = row.try_get::<_, Option<i64>>(2)?;
    let used_by = row.try_get::<_, Option<String>>(3)?;
    if !crate::access::code_redeemable(used_by.as_deref(), used_at.is_some(), expires_at, now, cred.device) {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, &user_s).await?;
    let user_id = user.id.clone();
    let device = cred.device.to_string();
    let holder = tx
        .query_opt("SELECT user_id, revoked_at FROM devices WHERE device_id = $1 FOR UPDATE", &[&device])
        .await?
        .map(|r| -> Result<_, StoreError> { Ok((r.try_get::<_, Option<String>>(0)?, r.try_get::<_, Option<i64>>(1)?)) })
        .transpose()?;
    let holder = holder.as_ref().and_then(|(u, revoked)| u.as_deref().map(|u| (u, revoked.is_some())));
    crate::access::may_enrol(holder, &user_id)?;
    let stmt = tx
        .prepare_cached("UPDATE enrolments SET used_at = COALESCE(used_at, $2), device_id = $3 WHERE code_hash = $1")
        .await?;
    let params: &Params<'_> = &[&&code_hash[..], &now, &device];
    tx.execute(&stmt, params).await?;
    register_device(tx, &user_id, cred, now).await?;
    Ok(user)
}

/// Bind `cred.device` to `user` (again): a re-enrolled device starts unrevoked with a new
/// refresh credential; its old one stops working.
pub async fn register_device(
    tx: &Transaction<'_>,
    user: &UserId,
    cred: &NewCredential,
    now: i64,
) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "INSERT INTO devices (device_id, user_id, label, enrolled_at, revoked_at, refresh_hash, refresh_expires_at, last_seen_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $4)
             ON CONFLICT (device_id) DO UPDATE SET user_id = $2, label = $3, enrolled_at = $4, revoked_at = NULL,
                 refresh_hash = $5, refresh_expires_at = $6, last_seen_at = $4",
        )
        .await?;
    let device = cred.device.to_string();
    let params: &Params<'_> =
        &[&device, &user.as_str(), &cred.label, &now, &&cred.refresh_hash[..], &cred.refresh_expires_at];
    tx.execute(&stmt, params).await?;
    Ok(())
}

/// Check a refresh credential and slide its expiry. Unknown, wrong, expired: invalid;
/// revoked: revoked (so the phone can tell its kader why). The device row is locked
/// (`FOR UPDATE`) from the check to commit, so a revocation committing meanwhile on another
/// instance is either seen here or waits for this refresh: never lost in between.
pub async fn refresh_device(
    tx: &Transaction<'_>,
    device: DeviceId,
    refresh_hash: &[u8; 32],
    new_expires_at: i64,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let user = verify_refresh(tx, device, refresh_hash, now, true).await?;
    let stmt =
        tx.prepare_cached("UPDATE devices SET refresh_expires_at = $2, last_seen_at = $3 WHERE device_id = $1").await?;
    let device_s = device.to_string();
    let params: &Params<'_> = &[&device_s, &new_expires_at, &now];
    tx.execute(&stmt, params).await?;
    Ok(user)
}

/// Check a refresh credential without writing (`lock`: hold the device row for the slide).
pub async fn verify_refresh(
    tx: &Transaction<'_>,
    device: DeviceId,
    refresh_hash: &[u8; 32],
    now: i64,
    lock: bool,
) -> Result<UserRecord, StoreError> {
    let device_s = device.to_string();
    let sql = format!(
        "SELECT user_id, revoked_at, refresh_hash, refresh_expires_at FROM devices WHERE device_id = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    let stmt = tx.prepare_cached(&sql).await?;
    let Some(row) = tx.query_opt(&stmt, &[&device_s]).await? else {
        return Err(StoreError::InvalidCredential);
    };
    let user_s = row.try_get::<_, Option<String>>(0)?;
    let revoked_at = row.try_get::<_, Option<i64>>(1)?;
    let stored = row.try_get::<_, Option<Vec<u8>>>(2)?;
    let expires_at = row.try_get::<_, Option<i64>>(3)?;
    let (Some(user_s), Some(stored), Some(expires_at)) = (user_s, stored, expires_at) else {
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
    active_user(tx, &user_s).await
}

pub async fn revoke_device(tx: &Transaction<'_>, device: DeviceId, now: i64) -> Result<(), StoreError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE devices SET revoked_at = COALESCE(revoked_at, $2) WHERE device_id = $1 AND user_id IS NOT NULL",
        )
        .await?;
    let device_s = device.to_string();
    let params: &Params<'_> = &[&device_s, &now];
    let n = tx.execute(&stmt, params).await?;
    if n == 0 {
        return Err(StoreError::NotFound(format!("device {device}")));
    }
    Ok(())
}

pub async fn devices(tx: &Transaction<'_>) -> Result<Vec<DeviceRecord>, StoreError> {
    let stmt = tx
        .prepare_cached(
            "SELECT device_id, user_id, label, enrolled_at, revoked_at, last_seen_at, last_push_at
             FROM devices ORDER BY user_id COLLATE \"C\" NULLS FIRST, device_id COLLATE \"C\"",
        )
        .await?;
    let rows = tx.query(&stmt, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let device = r.try_get::<_, String>(0)?;
        let user = r.try_get::<_, Option<String>>(1)?;
        out.push(DeviceRecord {
            device: device.parse().map_err(|_| bad("device id"))?,
            user: user.map(|u| u.parse().map_err(|_| bad("user id"))).transpose()?,
            label: r.try_get(2)?,
            enrolled_at: r.try_get(3)?,
            revoked_at: r.try_get(4)?,
            last_seen_at: r.try_get(5)?,
            last_push_at: r.try_get(6)?,
        });
    }
    Ok(out)
}

pub async fn device_access(tx: &Transaction<'_>, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
    let stmt = tx.prepare_cached("SELECT user_id, revoked_at FROM devices WHERE device_id = $1").await?;
    let device_s = device.to_string();
    let Some(row) = tx.query_opt(&stmt, &[&device_s]).await? else { return Ok(None) };
    let Some(user_s) = row.try_get::<_, Option<String>>(0)? else { return Ok(None) };
    let revoked_at = row.try_get::<_, Option<i64>>(1)?;
    let user_id: UserId = user_s.parse().map_err(|_| bad("user id"))?;
    let Some(user) = user(tx, &user_id).await? else { return Ok(None) };
    let scope = scope_of(tx, &user_id).await?;
    Ok(Some(DeviceAccess { device, user, revoked: revoked_at.is_some(), scope }))
}

//! PostgreSQL side of the access data: hierarchy, users, devices, enrolments, audit. The
//! statements and rows are [`plan::access`]'s (which lock rows and take the audit clock
//! where several instances writing at once need it); these async functions run them in a
//! transaction `mod.rs` opens and commits (reads run in one too), in the order each rule
//! needs.

use super::exec::{D, exec, query, query_opt};
use crate::StoreError;
use crate::access::{
    ApiKeyAccess, ApiKeyRecord, AuditEntry, AuditRecord, DeviceAccess, DeviceRecord, ImportReport, NewApiKey,
    NewCredential, NewEnrolment, PinAttempt, PinLockout, PinRecord, UnitTree, UserRecord,
};
use crate::plan::access as plan;
use deadpool_postgres::Transaction;
use posync_model::hierarchy::check_parent;
use posync_model::{DeviceId, HierarchyFile, Scope, Unit, UnitId, UnitKind, UserId, UserSpec};

/// Append one entry with the next audit position. Call it as the last statement before
/// commit: the `audit` clock row stays locked until then, so the next writer (on any
/// instance) waits and takes the next number. A rollback hands its number back.
pub async fn append_audit(tx: &Transaction<'_>, e: &AuditEntry) -> Result<(), StoreError> {
    if exec(tx, &plan::append_audit(D, e)).await? != 1 {
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
    query(tx, &plan::audit_log(D, after, limit, districts)).await?.iter().map(plan::audit_record).collect()
}

async fn unit_kind(tx: &Transaction<'_>, id: &UnitId) -> Result<Option<UnitKind>, StoreError> {
    query_opt(tx, &plan::unit_kind(D, id)).await?.as_ref().map(plan::parse_unit_kind).transpose()
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
        return Err(plan::kind_change(unit, existing));
    }
    // Nothing written: another instance inserted the same id with another kind after the
    // check above.
    if exec(tx, &plan::upsert_unit(D, unit)).await? == 0 {
        return Err(match unit_kind(tx, &unit.id).await? {
            Some(existing) => plan::kind_change(unit, existing),
            None => StoreError::Backend(format!("unit {} was not written", unit.id)),
        });
    }
    Ok(())
}

/// Insert or update a user and replace their units. Units must exist; which kinds a role
/// may hold is the admin service's rule, not the store's.
pub async fn put_user(tx: &Transaction<'_>, user: &UserSpec, now: i64) -> Result<(), StoreError> {
    exec(tx, &plan::upsert_user(D, user, now)).await?;
    exec(tx, &plan::clear_user_units(D, &user.id)).await?;
    for unit in &user.units {
        if unit_kind(tx, unit).await?.is_none() {
            return Err(StoreError::NotFound(format!("unit {unit}")));
        }
        exec(tx, &plan::add_user_unit(D, &user.id, unit)).await?;
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
    Ok(UnitTree { units: query(tx, &plan::unit_tree(D)).await?.iter().map(plan::unit).collect::<Result<_, _>>()? })
}

pub async fn user(tx: &Transaction<'_>, id: &UserId) -> Result<Option<UserRecord>, StoreError> {
    let Some(row) = query_opt(tx, &plan::user(D, id)).await? else { return Ok(None) };
    let units = query(tx, &plan::user_units(D, id)).await?;
    plan::user_record(id, &row, &units).map(Some)
}

pub async fn users(tx: &Transaction<'_>) -> Result<Vec<UserRecord>, StoreError> {
    let mut out = Vec::new();
    for row in query(tx, &plan::user_ids(D)).await? {
        out.extend(user(tx, &plan::user_id(&row)?).await?);
    }
    Ok(out)
}

/// Every posyandu under the user's units ([`plan::scope_of`]).
pub async fn scope_of(tx: &Transaction<'_>, user: &UserId) -> Result<Scope, StoreError> {
    plan::scope(&query(tx, &plan::scope_of(D, user)).await?)
}

pub async fn issue_enrolment(tx: &Transaction<'_>, e: &NewEnrolment, now: i64) -> Result<(), StoreError> {
    if user(tx, &e.user).await?.is_none() {
        return Err(StoreError::NotFound(format!("user {}", e.user)));
    }
    exec(tx, &plan::insert_enrolment(D, e, now)).await?;
    Ok(())
}

/// The user a credential names, if it still exists and is not disabled.
async fn active_user(tx: &Transaction<'_>, user_s: &str) -> Result<UserRecord, StoreError> {
    let user_id: UserId = user_s.parse().map_err(|_| StoreError::Backend("bad stored user id".into()))?;
    match user(tx, &user_id).await? {
        Some(u) if !u.disabled => Ok(u),
        _ => Err(StoreError::InvalidCredential),
    }
}

/// Use a code once: bind the device to the code's user with a fresh refresh credential.
/// The code's row is locked from the check to commit, so two instances redeeming one code
/// at once cannot both succeed: the second sees it used.
pub async fn redeem_enrolment(
    tx: &Transaction<'_>,
    code_hash: &[u8; 32],
    cred: &NewCredential,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let Some(row) = query_opt(tx, &plan::enrolment(D, code_hash)).await? else {
        return Err(StoreError::InvalidCredential);
    };
    let code = plan::enrolment_row(&row)?;
    if !crate::access::code_redeemable(code.used_by.as_deref(), code.used, code.expires_at, now, cred.device) {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, &code.user).await?;
    let holder =
        query_opt(tx, &plan::device_holder(D, cred.device, true)).await?.map(|r| plan::holder(&r)).transpose()?;
    let holder = holder.flatten();
    crate::access::may_enrol(holder.as_ref().map(|(u, revoked)| (u.as_str(), *revoked)), &user.id)?;
    exec(tx, &plan::use_enrolment(D, code_hash, now, cred.device)).await?;
    register_device(tx, &user.id, cred, now).await?;
    Ok(user)
}

/// Bind `cred.device` to `user` (again), with a new refresh credential.
pub async fn register_device(
    tx: &Transaction<'_>,
    user: &UserId,
    cred: &NewCredential,
    now: i64,
) -> Result<(), StoreError> {
    exec(tx, &plan::register_device(D, user, cred, now)).await?;
    Ok(())
}

/// Check a refresh credential and slide its expiry. The device row is locked from the
/// check to commit, so a revocation committing meanwhile on another instance is either
/// seen here or waits for this refresh: never lost in between.
pub async fn refresh_device(
    tx: &Transaction<'_>,
    device: DeviceId,
    refresh_hash: &[u8; 32],
    new_expires_at: i64,
    now: i64,
) -> Result<UserRecord, StoreError> {
    let user = verify_refresh(tx, device, refresh_hash, now, true).await?;
    exec(tx, &plan::slide_refresh(D, device, new_expires_at, now)).await?;
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
    let row = query_opt(tx, &plan::credential(D, device, lock)).await?;
    let user_s = plan::check_refresh(row.as_ref(), refresh_hash, now)?;
    active_user(tx, &user_s).await
}

pub async fn revoke_device(tx: &Transaction<'_>, device: DeviceId, now: i64) -> Result<(), StoreError> {
    if exec(tx, &plan::revoke_device(D, device, now)).await? == 0 {
        return Err(StoreError::NotFound(format!("device {device}")));
    }
    Ok(())
}

pub async fn devices(tx: &Transaction<'_>) -> Result<Vec<DeviceRecord>, StoreError> {
    query(tx, &plan::devices(D)).await?.iter().map(plan::device_record).collect()
}

pub async fn device_access(tx: &Transaction<'_>, device: DeviceId) -> Result<Option<DeviceAccess>, StoreError> {
    let Some(row) = query_opt(tx, &plan::device_holder(D, device, false)).await? else { return Ok(None) };
    let Some((user_s, revoked)) = plan::holder(&row)? else { return Ok(None) };
    let user_id: UserId = user_s.parse().map_err(|_| StoreError::Backend("bad stored user id".into()))?;
    let Some(user) = user(tx, &user_id).await? else { return Ok(None) };
    let scope = scope_of(tx, &user_id).await?;
    Ok(Some(DeviceAccess { device, user, revoked, scope }))
}

/// Set or replace a user's PIN ([`plan::set_pin`]); the user must exist.
pub async fn set_pin(tx: &Transaction<'_>, user_id: &UserId, pin_hash: &str, now: i64) -> Result<(), StoreError> {
    if user(tx, user_id).await?.is_none() {
        return Err(StoreError::NotFound(format!("user {user_id}")));
    }
    exec(tx, &plan::set_pin(D, user_id, pin_hash, now)).await?;
    Ok(())
}

pub async fn pin_of(tx: &Transaction<'_>, user: &UserId) -> Result<Option<PinRecord>, StoreError> {
    query_opt(tx, &plan::pin_of(D, user)).await?.map(|row| plan::pin_record(user, &row)).transpose()
}

/// Count an attempt unless locked ([`plan::count_pin_attempt`]). The `UPDATE` locks the
/// row until commit: an attempt on another instance waits, then counts on top of this one.
pub async fn pin_attempt(
    tx: &Transaction<'_>,
    user: &UserId,
    now: i64,
    lockout: PinLockout,
) -> Result<PinAttempt, StoreError> {
    let counted = query_opt(tx, &plan::count_pin_attempt(D, user, now, lockout)).await?;
    let current = if counted.is_none() { query_opt(tx, &plan::pin_of(D, user)).await? } else { None };
    plan::pin_attempt(counted.as_ref(), current.as_ref(), now)
}

/// A right PIN: start the count over and bind the device to the user as an enrolment does
/// (the device row locked from the check to commit, as there).
pub async fn pin_succeeded(
    tx: &Transaction<'_>,
    user_id: &UserId,
    pin_hash: &str,
    cred: &NewCredential,
    now: i64,
) -> Result<UserRecord, StoreError> {
    if exec(tx, &plan::reset_pin_failures(D, user_id, pin_hash)).await? == 0 {
        return Err(StoreError::InvalidCredential);
    }
    let user = active_user(tx, user_id.as_str()).await?;
    let holder =
        query_opt(tx, &plan::device_holder(D, cred.device, true)).await?.map(|r| plan::holder(&r)).transpose()?;
    crate::access::may_enrol(holder.flatten().as_ref().map(|(u, revoked)| (u.as_str(), *revoked)), &user.id)?;
    register_device(tx, &user.id, cred, now).await?;
    Ok(user)
}

/// Store a new API key; its unit must exist.
pub async fn create_api_key(tx: &Transaction<'_>, key: &NewApiKey) -> Result<(), StoreError> {
    if unit_kind(tx, &key.unit).await?.is_none() {
        return Err(StoreError::NotFound(format!("unit {}", key.unit)));
    }
    exec(tx, &plan::insert_api_key(D, key)).await?;
    Ok(())
}

pub async fn api_keys(tx: &Transaction<'_>) -> Result<Vec<ApiKeyRecord>, StoreError> {
    query(tx, &plan::api_keys(D)).await?.iter().map(plan::api_key_record).collect()
}

pub async fn revoke_api_key(tx: &Transaction<'_>, id: &str, now: i64) -> Result<(), StoreError> {
    if exec(tx, &plan::revoke_api_key(D, id, now)).await? == 0 {
        return Err(StoreError::NotFound(format!("API key {id}")));
    }
    Ok(())
}

/// Look a key up by the hash of its secret (its row locked: a revocation committing
/// meanwhile is seen or waits); when it is not revoked, record the use, resolve its scope
/// and audit the use last (the audit clock is held until commit).
pub async fn use_api_key(
    tx: &Transaction<'_>,
    key_hash: &[u8; 32],
    now: i64,
    route: &str,
) -> Result<Option<ApiKeyAccess>, StoreError> {
    let Some(row) = query_opt(tx, &plan::api_key_by_hash(D, key_hash)).await? else { return Ok(None) };
    let mut key = plan::api_key_record(&row)?;
    if key.revoked_at.is_some() {
        return Ok(Some(ApiKeyAccess { key, scope: Scope::new(Vec::new()) }));
    }
    exec(tx, &plan::touch_api_key(D, &key.id, now)).await?;
    key.last_used_at = Some(now);
    let scope = plan::scope(&query(tx, &plan::unit_scope(D, &key.unit)).await?)?;
    append_audit(tx, &crate::access::api_key_used_audit(&key, route, now)).await?;
    Ok(Some(ApiKeyAccess { key, scope }))
}

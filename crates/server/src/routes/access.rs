//! Enrolment, PIN sign-in, token refresh and the admin console over HTTP (hierarchy, users, devices, audit).

use super::*;

/// Longest device label an admin sees.
pub(super) const LABEL_CHARS_MAX: usize = 64;

pub(super) async fn enrol(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let req: EnrolRequest = json_body(body)?;
    check_device_id(req.device)?;
    let now = state.now();
    let (refresh_token, credential) = new_credential(req.device, &req.label, now);
    let normalised = auth::normalise_code(&req.code);
    state.auth_limiter.code(&normalised)?;
    let code_hash = auth::secret_hash(&normalised);
    let user = state.store().redeem_enrolment(code_hash, credential, now).await?;
    tracing::info!(device = %req.device, user = %user.id, "device enrolled");
    Ok(Json(credential_answer(&state, &user, req.device, refresh_token, now)))
}

fn check_device_id(device: DeviceId) -> Result<(), ApiError> {
    if !device.is_assignable() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "this device id is reserved; generate a random one"));
    }
    Ok(())
}

/// A fresh refresh token for `device` and the credential to store (its hash only).
fn new_credential(device: DeviceId, label: &str, now: i64) -> (String, NewCredential) {
    let refresh_token = auth::new_refresh_token();
    let label: String = label.chars().filter(|c| !c.is_control()).take(LABEL_CHARS_MAX).collect();
    let credential = NewCredential {
        device,
        label,
        refresh_hash: auth::secret_hash(&refresh_token),
        refresh_expires_at: now + auth::REFRESH_IDLE_SECONDS,
    };
    (refresh_token, credential)
}

/// What an enrolment and a PIN sign-in both answer: the device's refresh token and a first
/// access token.
fn credential_answer(
    state: &AppState,
    user: &posync_store::UserRecord,
    device: DeviceId,
    refresh_token: String,
    now: i64,
) -> EnrolResponse {
    EnrolResponse {
        user: user.id.clone(),
        role: user.role,
        refresh_token,
        refresh_expires_at: now + auth::REFRESH_IDLE_SECONDS,
        access: state.keys.issue(&user.id, device, user.role, now, auth::ACCESS_TTL_SECONDS),
    }
}

/// `POST /v1/auth/pin`: the caller sets or replaces their own sign-in PIN. Audited as
/// `pin_set`, without the PIN.
pub(super) async fn set_pin(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let req: PinRequest = json_body(body)?;
    crate::pin::check_format(&req.pin)?;
    let pin_hash = crate::pin::hash(req.pin).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "user": who.user });
    let audit = AuditEntry::new(state.now(), &actor, AuditAction::PinSet, &who.user, detail)
        .concerning(who.scope.posyandu().next());
    state.store().set_pin(who.user.clone(), pin_hash, audit).await?;
    tracing::info!(device = %who.device, "sign-in PIN set");
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/auth/signin`: user and PIN for a new device credential, answered as an
/// enrolment. Every failure that could tell whether the user exists or has a PIN is the
/// same `401 invalid_credential`; a locked user is `429` until the lock ends.
pub(super) async fn signin(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let req: SigninRequest = json_body(body)?;
    check_device_id(req.device)?;
    crate::pin::check_format(&req.pin)?;
    let now = state.now();
    let pin_hash = checked_pin(&state, &req, now).await?;
    let (refresh_token, credential) = new_credential(req.device, &req.label, now);
    let user = match state.store().pin_succeeded(req.user.clone(), pin_hash, credential, now).await {
        Ok(user) => user,
        // A disabled user, or a PIN replaced meanwhile: the same answer as a wrong PIN.
        Err(posync_store::StoreError::InvalidCredential) => return Err(crate::pin::refused()),
        Err(e) => return Err(e.into()),
    };
    tracing::info!(device = %req.device, user = %user.id, "signed in with a PIN");
    Ok(Json(credential_answer(&state, &user, req.device, refresh_token, now)))
}

/// Count the attempt in the store, then check the PIN: the hash it matched, or the refusal.
async fn checked_pin(state: &AppState, req: &SigninRequest, now: i64) -> Result<String, ApiError> {
    let lockout = crate::pin::LOCKOUT;
    match state.store().pin_attempt(req.user.clone(), now, lockout).await? {
        PinAttempt::NoPin => {
            // As long as a wrong PIN takes: the timing does not tell who has a PIN.
            crate::pin::verify_against_nothing(req.pin.clone()).await?;
            Err(crate::pin::refused())
        }
        PinAttempt::Locked { until } => Err(crate::pin::locked(until - now)),
        PinAttempt::Verify { pin_hash, failures } => {
            if crate::pin::verify(req.pin.clone(), pin_hash.clone()).await? {
                return Ok(pin_hash);
            }
            if failures >= lockout.failures_max {
                audit_lockout(state, req, failures, now).await?;
            }
            Err(crate::pin::refused())
        }
    }
}

/// The attempt that locked a user out, in the audit log of their district.
async fn audit_lockout(state: &AppState, req: &SigninRequest, failures: u32, now: i64) -> Result<(), ApiError> {
    tracing::warn!(device = %req.device, "PIN sign-in locked after too many attempts");
    let unit = state.store().user(req.user.clone()).await?.and_then(|u| u.units.first().cloned());
    let actor = Actor::Device { device: req.device };
    let detail =
        serde_json::json!({ "user": req.user, "failures": failures, "locked_for": crate::pin::LOCKOUT.lock_seconds });
    let entry = AuditEntry::new(now, &actor, AuditAction::PinLocked, &req.user, detail).concerning(unit);
    state.store().append_audit(entry).await?;
    Ok(())
}

pub(super) async fn refresh(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<AccessToken>, ApiError> {
    let req: RefreshRequest = json_body(body)?;
    state.auth_limiter.device(req.device)?;
    let now = state.now();
    let hash = auth::secret_hash(&req.refresh_token);
    let user = state.store().refresh_device(req.device, hash, now + auth::REFRESH_IDLE_SECONDS, now).await?;
    Ok(Json(state.keys.issue(&user.id, req.device, user.role, now, auth::ACCESS_TTL_SECONDS)))
}

// ---- admin ----

/// `POST /v1/auth/logout`: the caller's own device is revoked (a browser signing out), so
/// its refresh token and every access token it holds stop working at once, and the device
/// list does not fill with forgotten browsers. Audited as a revocation by the user.
pub(super) async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "user": who.user, "reason": "signed_out" });
    let audit = AuditEntry::new(state.now(), &actor, AuditAction::DeviceRevoked, who.device, detail)
        .concerning(who.scope.posyandu().next());
    state.store().revoke_device(who.device, audit).await?;
    tracing::info!(device = %who.device, "device signed out and revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /v1/me`: who the caller is and the units they see (their posyandu and every unit
/// above them, with names), for the web app's navigation. From server data only.
pub(super) async fn me(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let name = state.store().user(who.user.clone()).await?.map(|u| u.name).unwrap_or_default();
    let tree = state.store().unit_tree().await?;
    let mut seen = std::collections::BTreeSet::new();
    let mut units: Vec<&Unit> = Vec::new();
    for p in who.scope.posyandu() {
        for u in tree.ancestors(&UnitId::from(p.clone())) {
            if seen.insert(u.id.clone()) {
                units.push(u);
            }
        }
    }
    units.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    let has_pin = state.store().pin_of(who.user.clone()).await?.is_some();
    Ok(Json(
        serde_json::json!({ "user": who.user, "name": name, "role": who.role, "has_pin": has_pin, "units": units }),
    ))
}

pub(super) async fn admin_caller(state: &AppState, headers: &HeaderMap) -> Result<AdminCaller, ApiError> {
    let who = authenticate(state, headers).await?;
    if !who.role.is_admin() {
        return Err(ApiError::new(ErrorCode::Forbidden, "only a district admin may use the admin API"));
    }
    Ok(AdminCaller::Admin(who))
}

pub(super) async fn admin_units(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<Unit>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.units(&caller).await?))
}

#[derive(serde::Deserialize)]
pub(super) struct PutUnit {
    kind: posync_model::UnitKind,
    parent: UnitId,
    name: String,
}

pub(super) async fn admin_put_unit(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let id: UnitId = parse_path(&id, "unit")?;
    let body: PutUnit = json_body(body)?;
    let unit = Unit { id, kind: body.kind, parent: Some(body.parent), name: body.name };
    state.admin.put_unit(&caller, unit, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn admin_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::UserRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.users(&caller).await?))
}

#[derive(serde::Deserialize)]
pub(super) struct PutUser {
    name: String,
    role: Role,
    units: Vec<UnitId>,
}

pub(super) async fn admin_put_user(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let id: UserId = parse_path(&id, "user")?;
    let body: PutUser = json_body(body)?;
    let user = UserSpec { id, name: body.name, role: body.role, units: body.units };
    state.admin.save_user(&caller, user, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

pub(super) async fn admin_enrol(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::admin::IssuedCode>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let id: UserId = parse_path(&id, "user")?;
    Ok(Json(state.admin.issue_enrolment(&caller, id, state.now()).await?))
}

pub(super) async fn admin_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::DeviceRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.devices(&caller).await?))
}

pub(super) async fn admin_revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let device: DeviceId = parse_path(&id, "device")?;
    state.admin.revoke_device(&caller, device, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(serde::Deserialize)]
pub(super) struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "audit_limit_default")]
    limit: usize,
}

pub(super) fn audit_limit_default() -> usize {
    100
}

pub(super) async fn admin_audit(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<posync_store::AuditRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let axum::extract::Query(q) =
        query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be after=<seq>&limit=<n>"))?;
    Ok(Json(state.admin.audit_log(&caller, q.after, q.limit).await?))
}

/// Parse a hierarchy file for the console import.
pub fn parse_hierarchy(json: &str) -> Result<HierarchyFile, ApiError> {
    HierarchyFile::parse(json).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e.to_string()))
}

// ---- reports ----

// ---- read-only API keys ----

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApiKeyRequest {
    /// The unit the key reads (every posyandu under it).
    unit: UnitId,
    /// What the key is for ("Dasbor Dinkes", "skrip bulanan").
    label: String,
    /// Only `district_reporter` (the default): reports and exports, nothing else.
    #[serde(default = "reporter")]
    role: Role,
}

fn reporter() -> Role {
    Role::DistrictReporter
}

/// Create a read-only API key; the answer holds its secret, the only time it is shown.
pub(super) async fn admin_create_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<crate::admin::IssuedApiKey>), ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let req: ApiKeyRequest = json_body(body)?;
    let issued = state.admin.create_api_key(&caller, req.unit, req.role, req.label, state.now()).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// The API keys of the admin's districts, with their last use (never a secret or hash).
pub(super) async fn admin_api_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::ApiKeyRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.api_keys(&caller).await?))
}

/// Revoke an API key: refused from the next request on.
pub(super) async fn admin_revoke_api_key(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    state.admin.revoke_api_key(&caller, &id, state.now()).await?;
    Ok(StatusCode::NO_CONTENT)
}

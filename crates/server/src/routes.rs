//! HTTP: decode at the boundary, call the service, encode.

use crate::Clock;
use crate::admin::{AdminCaller, AdminService};
use crate::auth::{self, Principal, TokenKeys};
use crate::error::ApiError;
use crate::sync::SyncService;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use posync_model::{DeviceId, DocId, HierarchyFile, Role, Unit, UnitId, UserId, UserSpec, conflicts, doc};
use posync_proto::{AccessToken, EnrolRequest, EnrolResponse, RefreshRequest};
use posync_proto::{CONTENT_TYPE, DecodeError, ErrorCode, Limits, decode_request, encode_body, gunzip_bounded};
use posync_store::Store;
use posync_store::{Actor, AuditAction, AuditEntry, NewCredential};
use serde::de::DeserializeOwned;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    /// Bounds syncs in flight: past it, answer 503 at once rather than queue.
    syncs_in_flight: Arc<tokio::sync::Semaphore>,
    telemetry: Arc<std::sync::Mutex<std::collections::HashMap<DeviceId, DeviceTelemetry>>>,
    sync: SyncService,
    admin: AdminService,
    keys: Arc<TokenKeys>,
    clock: Clock,
    /// Names this server in the actor of its own document changes (resolutions).
    instance: String,
    auth_limiter: Arc<crate::ratelimit::AuthLimiter>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, keys: TokenKeys, limits: Limits, clock: Clock) -> Self {
        Self {
            syncs_in_flight: Arc::new(tokio::sync::Semaphore::new(limits.syncs_in_flight_max)),
            auth_limiter: Arc::new(crate::ratelimit::AuthLimiter::new(&limits)),
            telemetry: Arc::default(),
            sync: SyncService::new(store.clone(), limits, clock.clone()),
            admin: AdminService::new(store),
            keys: Arc::new(keys),
            clock,
            instance: std::env::var("POSYNC_INSTANCE").unwrap_or_else(|_| "posync".into()),
        }
    }

    fn now(&self) -> i64 {
        (self.clock)()
    }

    fn store(&self) -> &Arc<dyn Store> {
        self.sync.store()
    }
}

/// Largest JSON body of the auth and admin routes: ids and names, never documents.
pub const JSON_BODY_BYTES_MAX: usize = 64 * 1024;

/// The last sync of a device as this server instance saw it (admins' "last seen" view).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct DeviceTelemetry {
    pub last_sync_at: i64,
    pub last_success_at: Option<i64>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub duration_ms: u64,
    pub last_error: Option<String>,
}

/// Devices tracked in memory at most (older entries are dropped first).
const TELEMETRY_DEVICES_MAX: usize = 200_000;

impl AppState {
    fn record_sync(&self, device: DeviceId, up: u64, down: u64, started: std::time::Instant, error: Option<ErrorCode>) {
        let Ok(mut t) = self.telemetry.lock() else { return };
        if t.len() >= TELEMETRY_DEVICES_MAX
            && !t.contains_key(&device)
            && let Some(oldest) = t.iter().min_by_key(|(_, v)| v.last_sync_at).map(|(k, _)| *k)
        {
            t.remove(&oldest);
        }
        let now = self.now();
        let e = t.entry(device).or_default();
        e.last_sync_at = now;
        e.bytes_up = up;
        e.bytes_down = down;
        e.duration_ms = started.elapsed().as_millis() as u64;
        e.last_error = error.map(|c| c.to_string());
        if error.is_none() {
            e.last_success_at = Some(now);
        }
    }
}

pub fn router(state: AppState) -> Router {
    let body_max = state.sync.limits().body_bytes_max;
    let auth_routes = Router::new()
        .route("/v1/auth/enrol", post(enrol))
        .route("/v1/auth/token", post(refresh))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_by_address))
        .layer(DefaultBodyLimit::max(JSON_BODY_BYTES_MAX));
    let json_routes = Router::new()
        .route("/v1/admin/units", get(admin_units))
        .route("/v1/admin/units/{id}", axum::routing::put(admin_put_unit))
        .route("/v1/admin/users", get(admin_users))
        .route("/v1/admin/users/{id}", axum::routing::put(admin_put_user))
        .route("/v1/admin/users/{id}/enrolments", post(admin_enrol))
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin_revoke))
        .route("/v1/admin/audit", get(admin_audit))
        .route("/v1/reports/monthly", get(report_monthly))
        .route("/v1/conflicts", get(conflicts_list))
        .route("/v1/duplicates", get(duplicates_list))
        .route("/v1/duplicates/merge", post(duplicates_merge))
        .route("/v1/conflicts/{id}", get(conflict_detail))
        .route("/v1/conflicts/{id}/resolve", post(conflict_resolve))
        .route("/v1/reports/overdue", get(report_overdue))
        .route("/v1/records/invalid", get(invalid_records))
        .layer(DefaultBodyLimit::max(JSON_BODY_BYTES_MAX))
        // JSON and CSV answers gzip'd when the client accepts it (a month's overdue list is
        // ~1 MB of CSV). The sync route compresses its CBOR itself, and request bodies are
        // inflated only by the bounded decoder (`decode_body`), never by a layer.
        .layer(tower_http::compression::CompressionLayer::new().gzip(true));
    Router::new()
        .route("/healthz", get(health))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/v1/admin/telemetry", get(admin_telemetry))
        .route("/admin", get(admin_page))
        .route("/admin/admin.js", get(admin_script))
        .route("/admin/admin.css", get(admin_style))
        .route("/v1/sync", post(sync))
        .route("/{version}/sync", post(other_version))
        .route("/v1/docs/{doc}", get(get_doc))
        .layer(DefaultBodyLimit::max(body_max))
        .merge(json_routes)
        .merge(auth_routes)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(axum::middleware::map_response(no_sniffing))
        .layer(request_log())
        .with_state(state)
}

/// The request log layer's type: its callbacks are plain functions.
type RequestLog = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> tracing::Span,
    (),
    fn(&Response, std::time::Duration, &tracing::Span),
    (),
    (),
    (),
>;

/// One log line per request: method, route template (never the path's ids), status,
/// duration, the device when authenticated, and the error code when refused. Never a
/// token, a query string, a body or a record's contents.
fn request_log() -> RequestLog {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&axum::http::Request<axum::body::Body>) -> tracing::Span)
        .on_request(())
        .on_response(request_done as fn(&Response, std::time::Duration, &tracing::Span))
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

fn request_span(req: &axum::http::Request<axum::body::Body>) -> tracing::Span {
    let route = req.extensions().get::<axum::extract::MatchedPath>().map_or("(no route)", |p| p.as_str());
    tracing::info_span!(
        target: "posync::request",
        "request",
        method = %req.method(),
        route = %route,
        device = tracing::field::Empty,
    )
}

fn request_done(resp: &Response, latency: std::time::Duration, _span: &tracing::Span) {
    let status = resp.status().as_u16();
    let ms = (latency.as_secs_f64() * 10_000.0).round() / 10.0;
    let code = resp.extensions().get::<crate::error::LoggedCode>().map(|c| c.0);
    match status {
        500.. => tracing::error!(target: "posync::request", status, ms, code, "request failed"),
        400.. => tracing::warn!(target: "posync::request", status, ms, code, "request refused"),
        _ => tracing::info!(target: "posync::request", status, ms, "request"),
    }
}

/// Every response: browsers must not guess a type other than the one sent.
async fn no_sniffing(mut resp: Response) -> Response {
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}

/// The credential routes, per client address (when the server knows it: it is served with
/// connection info).
async fn limit_by_address(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let address = req.extensions().get::<axum::extract::ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip());
    if let Some(ip) = address
        && let Err(e) = state.auth_limiter.address(ip)
    {
        tracing::warn!(code = %e.code, "credential route rate-limited for an address");
        return e.into_response();
    }
    next.run(req).await
}

/// Verify the bearer token, then resolve the caller from the server's own data: the device
/// must be enrolled to the token's user and not revoked, the user's role must still be the
/// token's, and the scope is the user's units as of now (so re-scoping and revocation take
/// effect on the next request, not when tokens expire).
async fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
    let subject = state.keys.verify(bearer(headers)?, state.now())?;
    let unauth = |why: &str| ApiError::new(ErrorCode::Unauthenticated, format!("token rejected: {why}"));
    let access = state.store().device_access(subject.device).await?.ok_or_else(|| unauth("device not enrolled"))?;
    if access.revoked {
        return Err(ApiError::new(
            ErrorCode::DeviceRevoked,
            "this device was revoked; ask your puskesmas or district admin",
        ));
    }
    if access.user.id != subject.user || access.user.disabled {
        return Err(unauth("device belongs to another user"));
    }
    if access.user.role != subject.role {
        return Err(unauth("role changed; refresh the token"));
    }
    // The request's log line names the device (never a token, a record or its contents).
    tracing::Span::current().record("device", tracing::field::display(subject.device));
    Ok(Principal { user: access.user.id, device: subject.device, role: access.user.role, scope: access.scope })
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "missing Authorization header"))?;
    // The scheme name is case-insensitive (RFC 9110 section 11.1).
    let token = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .ok_or_else(|| ApiError::new(ErrorCode::Unauthenticated, "Authorization must be a Bearer token"))?;
    Ok(token)
}

async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.store().ping().await?;
    Ok(Json(serde_json::json!({ "status": "ok", "protocol": posync_proto::PROTOCOL_VERSION })))
}

/// Ready to take syncs: the store answers (it is opened only after its migrations ran). A
/// load balancer or orchestrator routes phones here only while this says 200.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.store().ping().await?;
    Ok(Json(serde_json::json!({ "ready": true, "protocol": posync_proto::PROTOCOL_VERSION })))
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

async fn other_version(Path(version): Path<String>) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedProtocolVersion,
        format!("protocol {version:?} is not supported; use /v{}/sync", posync_proto::PROTOCOL_VERSION),
    )
}

fn decode_body(headers: &HeaderMap, body: Result<Bytes, BytesRejection>, limits: &Limits) -> Result<Vec<u8>, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, format!("body over {} bytes", limits.body_bytes_max))
        } else {
            ApiError::new(ErrorCode::MalformedBody, "body could not be read completely")
        }
    })?;
    let ctype = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ctype.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case(CONTENT_TYPE)) {
        return Err(ApiError::new(ErrorCode::UnsupportedMediaType, format!("Content-Type must be {CONTENT_TYPE}")));
    }
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).map(|e| e.trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("identity") => Ok(body.to_vec()),
        Some("gzip") => gunzip_bounded(&body, limits.body_decoded_bytes_max).map_err(|e| match e {
            DecodeError::TooLarge(n) => ApiError::new(ErrorCode::BodyTooLarge, format!("body inflates past {n} bytes")),
            other => ApiError::new(ErrorCode::UnsupportedEncoding, other.to_string()),
        }),
        Some(other) => {
            Err(ApiError::new(ErrorCode::UnsupportedEncoding, format!("Content-Encoding {other:?} not supported")))
        }
    }
}

async fn sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ok(_permit) = state.syncs_in_flight.clone().try_acquire_owned() else {
        crate::metrics::global().overloaded.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::new(ErrorCode::Overloaded, "server busy; retry after the Retry-After delay"));
    };
    let who = authenticate(&state, &headers).await?;
    let started = std::time::Instant::now();
    let up = body.as_ref().map_or(0, |b| b.len() as u64);
    let result = sync_inner(&state, &who, &headers, body).await;
    let m = crate::metrics::global();
    match &result {
        Ok((_, down, pushed, pulled)) => {
            use std::sync::atomic::Ordering::Relaxed;
            m.syncs.fetch_add(1, Relaxed);
            m.bytes_in.fetch_add(up, Relaxed);
            m.bytes_out.fetch_add(*down, Relaxed);
            m.docs_pushed.fetch_add(*pushed, Relaxed);
            m.docs_pulled.fetch_add(*pulled, Relaxed);
            m.store_latency(started.elapsed().as_secs_f64());
            state.record_sync(who.device, up, *down, started, None);
        }
        Err(e) => state.record_sync(who.device, up, 0, started, Some(e.code)),
    }
    result.map(|(resp, ..)| resp)
}

/// One authenticated sync: decode, handle, encode. Returns the response, its body size,
/// and the documents pushed and pulled.
async fn sync_inner(
    state: &AppState,
    who: &Principal,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Response, u64, u64, u64), ApiError> {
    let raw = decode_body(headers, body, state.sync.limits())?;
    let req = decode_request(&raw).map_err(|e| match e {
        DecodeError::UnsupportedVersion(_) => ApiError::new(ErrorCode::UnsupportedProtocolVersion, e.to_string()),
        _ => ApiError::new(ErrorCode::MalformedBody, e.to_string()),
    })?;
    let pushed = req.push.len() as u64;
    let resp = state.sync.handle(who, req).await?;
    let pulled = resp.docs.len() as u64;
    let accepts_gzip =
        headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(self::accepts_gzip);
    let enc = if accepts_gzip {
        encode_body(&resp)
    } else {
        posync_proto::Encoded { bytes: posync_proto::encode(&resp), gzip: false }
    };
    let down = enc.bytes.len() as u64;
    let mut out = (StatusCode::OK, enc.bytes).into_response();
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if enc.gzip {
        out.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok((out, down, pushed, pulled))
}

/// Whether an `Accept-Encoding` value admits gzip: named (any case) and not refused by `q=0`.
fn accepts_gzip(value: &str) -> bool {
    value.split(',').any(|entry| {
        let mut parts = entry.split(';').map(str::trim);
        let named = parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip") || c == "*");
        let refused = parts.any(|p| {
            p.split_once('=')
                .is_some_and(|(k, v)| k.trim().eq_ignore_ascii_case("q") && v.trim().parse::<f32>() == Ok(0.0))
        });
        named && !refused
    })
}

/// A document as JSON for people and tools: identity, heads, content (winning values), and
/// every conflicted field with all its values.
async fn get_doc(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(doc_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let doc_id: DocId = doc_id.parse().map_err(|_| ApiError::new(ErrorCode::NotFound, "not a document id"))?;
    // Out of scope answers exactly like absent: session ids derive from posyandu and date, so
    // "forbidden" would tell a stranger which posyandu held a session on which day.
    let stored = state
        .sync
        .store()
        .get(doc_id)
        .await?
        .filter(|d| who.scope.allows(&d.meta.posyandu))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such document in your scope").with_doc(doc_id))?;
    let am = automerge::Automerge::load(&stored.bytes)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "stored document does not load").with_doc(doc_id))?;
    let conflicts =
        conflicts(&am).map_err(|_| ApiError::new(ErrorCode::Internal, "document layout").with_doc(doc_id))?;
    if who.role != Role::Kader {
        let actor = Actor::User { user: who.user.clone(), device: who.device };
        let detail = serde_json::json!({ "role": who.role, "posyandu": stored.meta.posyandu });
        state
            .store()
            .append_audit(
                AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, doc_id, detail)
                    .concerning(Some(&stored.meta.posyandu)),
            )
            .await?;
    }
    Ok(Json(serde_json::json!({
        "doc": doc_id.to_string(),
        "kind": stored.meta.kind,
        "posyandu": stored.meta.posyandu,
        "seq": stored.meta.seq,
        "heads": stored.meta.heads.to_hex(),
        "content": doc::to_json(&am),
        "conflicts": conflicts,
    })))
}

// ---- auth: enrolment and refresh ----

/// Parse a JSON body at the boundary; shape errors are `malformed_body`.
fn json_body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(ErrorCode::BodyTooLarge, format!("body over {JSON_BODY_BYTES_MAX} bytes"))
        } else {
            ApiError::new(ErrorCode::MalformedBody, "body could not be read completely")
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| ApiError::new(ErrorCode::MalformedBody, format!("JSON body: {e}")))
}

/// Longest device label an admin sees.
const LABEL_CHARS_MAX: usize = 64;

async fn enrol(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EnrolResponse>, ApiError> {
    let req: EnrolRequest = json_body(body)?;
    if !req.device.is_assignable() {
        return Err(ApiError::new(ErrorCode::InvalidRequest, "this device id is reserved; generate a random one"));
    }
    let now = state.now();
    let refresh_token = auth::new_refresh_token();
    let label: String = req.label.chars().filter(|c| !c.is_control()).take(LABEL_CHARS_MAX).collect();
    let credential = NewCredential {
        device: req.device,
        label,
        refresh_hash: auth::secret_hash(&refresh_token),
        refresh_expires_at: now + auth::REFRESH_IDLE_SECONDS,
    };
    let normalised = auth::normalise_code(&req.code);
    state.auth_limiter.code(&normalised)?;
    let code_hash = auth::secret_hash(&normalised);
    let user = state.store().redeem_enrolment(code_hash, credential, now).await?;
    tracing::info!(device = %req.device, user = %user.id, "device enrolled");
    let access = state.keys.issue(&user.id, req.device, user.role, now, auth::ACCESS_TTL_SECONDS);
    Ok(Json(EnrolResponse {
        user: user.id,
        role: user.role,
        refresh_token,
        refresh_expires_at: now + auth::REFRESH_IDLE_SECONDS,
        access,
    }))
}

async fn refresh(
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

async fn admin_caller(state: &AppState, headers: &HeaderMap) -> Result<AdminCaller, ApiError> {
    let who = authenticate(state, headers).await?;
    if !who.role.is_admin() {
        return Err(ApiError::new(ErrorCode::Forbidden, "only a district admin may use the admin API"));
    }
    Ok(AdminCaller::Admin(who))
}

fn parse_path<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ApiError> {
    s.parse().map_err(|_| ApiError::new(ErrorCode::NotFound, format!("not a {what} id")))
}

async fn admin_units(State(state): State<AppState>, headers: HeaderMap) -> Result<Json<Vec<Unit>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.units(&caller).await?))
}

#[derive(serde::Deserialize)]
struct PutUnit {
    kind: posync_model::UnitKind,
    parent: UnitId,
    name: String,
}

async fn admin_put_unit(
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

async fn admin_users(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::UserRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.users(&caller).await?))
}

#[derive(serde::Deserialize)]
struct PutUser {
    name: String,
    role: Role,
    units: Vec<UnitId>,
}

async fn admin_put_user(
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

async fn admin_enrol(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::admin::IssuedCode>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let id: UserId = parse_path(&id, "user")?;
    Ok(Json(state.admin.issue_enrolment(&caller, id, state.now()).await?))
}

async fn admin_devices(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::DeviceRecord>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    Ok(Json(state.admin.devices(&caller).await?))
}

async fn admin_revoke(
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
struct AuditQuery {
    #[serde(default)]
    after: u64,
    #[serde(default = "audit_limit_default")]
    limit: usize,
}

fn audit_limit_default() -> usize {
    100
}

async fn admin_audit(
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

#[derive(serde::Deserialize)]
struct ReportQuery {
    month: Option<String>,
    level: Option<String>,
    format: Option<String>,
}

fn wants_csv(q: &ReportQuery, headers: &HeaderMap) -> bool {
    q.format.as_deref() == Some("csv")
        || headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"))
}

fn csv_response(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    r
}

fn today(state: &AppState) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(state.now()).map_or(time::Date::MIN, |t| t.date())
}

fn report_query(
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ReportQuery, ApiError> {
    query
        .map(|axum::extract::Query(q)| q)
        .map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be month=YYYY-MM&level=...&format=json|csv"))
}

/// SKDN, nutrition, immunisation and adult figures per posyandu or rolled up; every role,
/// over its own scope.
async fn report_monthly(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let q = report_query(query)?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let level = match q.level.as_deref() {
        None => crate::reports::Level::Posyandu,
        Some(l) => crate::reports::Level::parse(l).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidRequest, "level must be posyandu, village, puskesmas or district")
        })?,
    };
    let report = crate::reports::monthly(state.store().as_ref(), &who.scope, month, level).await?;
    Ok(if wants_csv(&q, &headers) { csv_response(report.csv()) } else { Json(report).into_response() })
}

/// Children with overdue doses, by name: for the kader's home visits. Audited (names).
async fn report_overdue(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let q = report_query(query)?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let list = crate::reports::overdue(state.store().as_ref(), &who.scope, month).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "report": "overdue", "month": month.to_string(), "children": list.len() });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::ReportRead, who.device, detail)
                .concerning(who.scope.posyandu().next()),
        )
        .await?;
    Ok(if wants_csv(&q, &headers) {
        csv_response(crate::reports::overdue_csv(&list))
    } else {
        Json(list).into_response()
    })
}

/// Records kept with an impossible value (left out of reports), for someone to correct.
/// Names people: audited.
async fn invalid_records(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::InvalidRecord>>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let list = state.store().invalid_records(who.scope.clone()).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "role": who.role, "invalid_records": list.len() });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, "records/invalid", detail)
                .concerning(who.scope.posyandu().next()),
        )
        .await?;
    Ok(Json(list))
}

// ---- conflicts ----

#[derive(serde::Deserialize)]
struct ConflictQuery {
    posyandu: Option<String>,
    puskesmas: Option<String>,
    field: Option<String>,
    policy: Option<String>,
    /// Only conflicts open for at least this many days (the oldest need attention first).
    older_than_days: Option<u32>,
}

async fn conflicts_list(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<crate::conflicts::ConflictView>>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let axum::extract::Query(q) =
        query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be posyandu=&field=&policy="))?;
    let invalid = |what: &str| ApiError::new(ErrorCode::InvalidRequest, format!("bad {what}"));
    let filter = posync_store::ConflictFilter {
        posyandu: q.posyandu.map(|p| p.parse()).transpose().map_err(|_| invalid("posyandu"))?,
        field: q.field,
        policy: match q.policy.as_deref() {
            None | Some("review") => Some(posync_model::Policy::Review),
            Some("auto") => Some(posync_model::Policy::Auto),
            Some(_) => return Err(invalid("policy (review or auto)")),
        },
    };
    let mut who = who;
    if let Some(pkm) = q.puskesmas {
        // Narrow the caller's scope to the posyandu under that puskesmas.
        let pkm: UnitId = pkm.parse().map_err(|_| invalid("puskesmas"))?;
        let tree = state.store().unit_tree().await?;
        let under: Vec<posync_model::PosyanduId> = who
            .scope
            .posyandu()
            .filter(|p| tree.ancestors(&UnitId::from((*p).clone())).iter().any(|u| u.id == pkm))
            .cloned()
            .collect();
        who.scope = posync_model::Scope::new(under);
    }
    let mut list = crate::conflicts::list(state.store().as_ref(), &who, filter).await?;
    if let Some(days) = q.older_than_days {
        let cutoff = state.now() - i64::from(days) * 86_400;
        list.retain(|c| c.opened_at <= cutoff);
    }
    Ok(Json(list))
}

async fn conflict_detail(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<crate::conflicts::ConflictView>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let view = crate::conflicts::detail(state.store().as_ref(), &who, &id).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "role": who.role, "conflict": view.id, "posyandu": view.posyandu });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, &view.doc, detail)
                .concerning(Some(&view.posyandu)),
        )
        .await?;
    Ok(Json(view))
}

#[derive(serde::Deserialize)]
struct ResolveBody {
    value: posync_model::FieldValue,
}

async fn conflict_resolve(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<posync_store::ResolvedConflict>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let body: ResolveBody = json_body(body)?;
    let done =
        crate::conflicts::resolve(state.store().as_ref(), &who, &state.instance, &id, body.value, state.now()).await?;
    tracing::info!(user = %who.user, conflict = %id, "conflict resolved");
    Ok(Json(done))
}

/// The conflict admin page: one self-contained file compiled into the binary (no build step,
/// no assets fetched at run time). It signs in with an enrolment code like a phone does.
const ADMIN_PAGE: &str = include_str!("../assets/admin.html");
const ADMIN_SCRIPT: &str = include_str!("../assets/admin.js");
const ADMIN_STYLE: &str = include_str!("../assets/admin.css");

/// Scripts and styles only from this server's own files: no inline code, so an injected
/// value can never run.
const ADMIN_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn admin_asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(ADMIN_CSP));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

async fn admin_page() -> Response {
    admin_asset(ADMIN_PAGE, "text/html; charset=utf-8")
}

async fn admin_script() -> Response {
    admin_asset(ADMIN_SCRIPT, "text/javascript; charset=utf-8")
}

async fn admin_style() -> Response {
    admin_asset(ADMIN_STYLE, "text/css; charset=utf-8")
}

// ---- semantic duplicates ----

async fn duplicates_list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Vec<posync_store::DuplicatePair>>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    if who.role == Role::Kader {
        return Err(ApiError::new(ErrorCode::Forbidden, "duplicates are reviewed by puskesmas and district staff"));
    }
    Ok(Json(state.store().duplicate_people(who.scope.clone()).await?))
}

#[derive(serde::Deserialize)]
struct MergeBody {
    duplicate: posync_model::PersonId,
    keep: posync_model::PersonId,
}

async fn duplicates_merge(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<posync_store::ResolvedConflict>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let body: MergeBody = json_body(body)?;
    let done = crate::conflicts::merge_people(
        state.store().as_ref(),
        &who,
        &state.instance,
        body.duplicate,
        body.keep,
        state.now(),
    )
    .await?;
    Ok(Json(done))
}

async fn metrics() -> Response {
    let mut r = (StatusCode::OK, crate::metrics::global().render()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// Last sync of every device this instance saw: when, bytes, duration, last error.
async fn admin_telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<std::collections::BTreeMap<String, DeviceTelemetry>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let visible: std::collections::BTreeSet<DeviceId> =
        state.admin.devices(&caller).await?.into_iter().map(|d| d.device).collect();
    let t = state.telemetry.lock().map_err(|_| ApiError::new(ErrorCode::Internal, "telemetry lock"))?;
    Ok(Json(t.iter().filter(|(d, _)| visible.contains(d)).map(|(d, v)| (d.to_string(), v.clone())).collect()))
}

//! HTTP: decode at the boundary, call the service, encode.

mod access;
mod export;
mod export_csv;
mod ops;
mod pages;
mod people;
mod reports;
mod review;
mod sync;

pub use access::parse_hierarchy;
use access::*;
use export::*;
use export_csv::*;
use ops::*;
use pages::*;
use people::*;
use reports::*;
use review::*;
use sync::*;

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
use posync_proto::{AccessToken, EnrolRequest, EnrolResponse, PinRequest, RefreshRequest, SigninRequest};
use posync_proto::{CONTENT_TYPE, DecodeError, ErrorCode, Limits, decode_request, encode_body, gunzip_bounded};
use posync_store::Store;
use posync_store::{Actor, AuditAction, AuditEntry, NewCredential, PinAttempt};
use serde::de::DeserializeOwned;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    /// Bounds syncs in flight and those waiting their turn: past both, answer 503.
    admission: crate::admission::Admission,
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
            admission: crate::admission::Admission::new(&limits),
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
        .route("/v1/auth/signin", post(signin))
        // Needs a token, but hashes a PIN (tens of ms, 19 MiB): limited like the others.
        .route("/v1/auth/pin", post(set_pin))
        .layer(axum::middleware::from_fn_with_state(state.clone(), limit_by_address))
        .layer(DefaultBodyLimit::max(JSON_BODY_BYTES_MAX));
    let json_routes = Router::new()
        .route("/v1/auth/logout", post(logout))
        .route("/v1/me", get(me))
        .route("/v1/people", get(people_search))
        .route("/v1/people/{id}", get(person_page))
        .route("/v1/admin/units", get(admin_units))
        .route("/v1/admin/units/{id}", axum::routing::put(admin_put_unit))
        .route("/v1/admin/users", get(admin_users))
        .route("/v1/admin/users/{id}", axum::routing::put(admin_put_user))
        .route("/v1/admin/users/{id}/enrolments", post(admin_enrol))
        .route("/v1/admin/devices", get(admin_devices))
        .route("/v1/admin/devices/{id}/revoke", post(admin_revoke))
        .route("/v1/admin/audit", get(admin_audit))
        .route("/v1/admin/api-keys", get(admin_api_keys).post(admin_create_api_key))
        .route("/v1/admin/api-keys/{id}", axum::routing::delete(admin_revoke_api_key))
        .route("/v1/export/visits.csv", get(export_visits_csv))
        .route("/v1/export/people.csv", get(export_people_csv))
        .route("/v1/reports/monthly", get(report_monthly))
        .route("/v1/reports/trend", get(report_trend))
        .route("/v1/conflicts", get(conflicts_list))
        .route("/v1/duplicates", get(duplicates_list))
        .route("/v1/duplicates/merge", post(duplicates_merge))
        .route("/v1/conflicts/{id}", get(conflict_detail))
        .route("/v1/conflicts/{id}/resolve", post(conflict_resolve))
        .route("/v1/reports/overdue", get(report_overdue))
        .route("/v1/export/fhir", get(export_fhir))
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
        .route("/admin/{file}", get(app_file))
        .route("/v1/sync", post(sync))
        .route("/{version}/sync", post(other_version))
        .route("/v1/docs/{doc}", get(get_doc))
        .route("/v1/docs/{doc}/automerge", get(get_doc_bytes))
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
        api_key = tracing::field::Empty,
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
    let token = bearer(headers)?;
    if auth::is_api_key(token) {
        // Keys read reports and exports only ([`authenticate_reader`]); never the secret in a log.
        return Err(ApiError::new(
            ErrorCode::ApiKeyNotAllowed,
            "kunci API hanya untuk laporan dan ekspor / an API key reads reports and exports only",
        ));
    }
    let subject = state.keys.verify(token, state.now())?;
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

/// Who reads a report or an export: a signed-in user's device, or a read-only API key.
#[derive(Clone, Debug)]
pub(crate) struct Reader {
    pub actor: Actor,
    /// What the audit entry of a read names: the device, or the key's id.
    pub target: String,
    pub scope: posync_model::Scope,
}

/// [`authenticate`] for the report and export routes, which alone also take a read-only API
/// key (`psk_…`): the key is looked up by the hash of its secret, refused once revoked, and
/// each use is recorded (last use, audited as `api_key_used` naming `route`, a template).
/// Its scope is every posyandu under its unit, as of now.
async fn authenticate_reader(state: &AppState, headers: &HeaderMap, route: &str) -> Result<Reader, ApiError> {
    let token = bearer(headers)?;
    if !auth::is_api_key(token) {
        let who = authenticate(state, headers).await?;
        return Ok(Reader {
            actor: Actor::User { user: who.user, device: who.device },
            target: who.device.to_string(),
            scope: who.scope,
        });
    }
    let refused = |why: &str| ApiError::new(ErrorCode::InvalidCredential, why.to_owned());
    let access = state
        .store()
        .use_api_key(auth::secret_hash(token), state.now(), route.to_owned())
        .await?
        .ok_or_else(|| refused("kunci API tidak dikenal / API key not recognised"))?;
    if access.key.revoked_at.is_some() {
        return Err(refused("kunci API ini sudah dicabut / this API key was revoked; ask your district admin"));
    }
    tracing::Span::current().record("api_key", tracing::field::display(&access.key.id));
    Ok(Reader { actor: Actor::ApiKey { key: access.key.id.clone() }, target: access.key.id, scope: access.scope })
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

fn parse_path<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ApiError> {
    s.parse().map_err(|_| ApiError::new(ErrorCode::NotFound, format!("not a {what} id")))
}

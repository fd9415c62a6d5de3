//! HTTP: decode at the boundary, call the service, encode.

use crate::Clock;
use crate::auth::{Principal, TokenKeys};
use crate::error::ApiError;
use crate::sync::SyncService;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use posync_model::{DocId, conflicts, doc};
use posync_proto::{CONTENT_TYPE, DecodeError, ErrorCode, Limits, decode_request, encode_body, gunzip_bounded};
use posync_store::Store;
use std::sync::Arc;

#[derive(Clone)]
pub struct AppState {
    sync: SyncService,
    keys: TokenKeys,
    clock: Clock,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, keys: TokenKeys, limits: Limits, clock: Clock) -> Self {
        Self { sync: SyncService::new(store, limits, clock.clone()), keys, clock }
    }
}

pub fn router(state: AppState) -> Router {
    let body_max = state.sync.limits().body_bytes_max;
    Router::new()
        .route("/healthz", get(health))
        .route("/v1/sync", post(sync))
        .route("/{version}/sync", post(other_version))
        .route("/v1/docs/{doc}", get(get_doc))
        .layer(DefaultBodyLimit::max(body_max))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state)
}

fn principal(state: &AppState, headers: &HeaderMap) -> Result<Principal, ApiError> {
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
    state.keys.verify(token, (state.clock)())
}

async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.store().ping().await?;
    Ok(Json(serde_json::json!({ "status": "ok", "protocol": posync_proto::PROTOCOL_VERSION })))
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
    let who = principal(&state, &headers)?;
    let raw = decode_body(&headers, body, state.sync.limits())?;
    let req = decode_request(&raw).map_err(|e| match e {
        DecodeError::UnsupportedVersion(_) => ApiError::new(ErrorCode::UnsupportedProtocolVersion, e.to_string()),
        _ => ApiError::new(ErrorCode::MalformedBody, e.to_string()),
    })?;
    let resp = state.sync.handle(&who, req).await?;
    let accepts_gzip = headers.get(header::ACCEPT_ENCODING).and_then(|v| v.to_str().ok()).is_some_and(accepts_gzip);
    let enc = if accepts_gzip {
        encode_body(&resp)
    } else {
        posync_proto::Encoded { bytes: posync_proto::encode(&resp), gzip: false }
    };
    let mut out = (StatusCode::OK, enc.bytes).into_response();
    out.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    if enc.gzip {
        out.headers_mut().insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
    }
    Ok(out)
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
    let who = principal(&state, &headers)?;
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

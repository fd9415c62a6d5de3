//! `POST /v1/sync` and `GET /v1/docs/{doc}`: bounded decode, the sync service, encode.

use super::*;

pub(super) fn decode_body(
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    limits: &Limits,
) -> Result<Vec<u8>, ApiError> {
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

pub(super) async fn sync(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Ok(_admitted) = state.admission.enter(body.as_ref().map_or(0, Bytes::len)).await else {
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
pub(super) async fn sync_inner(
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
pub(super) fn accepts_gzip(value: &str) -> bool {
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
/// One stored document for `who`: in scope (out of scope answers exactly like absent: session
/// ids derive from posyandu and date, so "forbidden" would tell a stranger which posyandu held
/// a session on which day), and audited when staff read it.
async fn read_doc(state: &AppState, headers: &HeaderMap, doc_id: &str) -> Result<posync_store::StoredDoc, ApiError> {
    let who = authenticate(state, headers).await?;
    let doc_id: DocId = doc_id.parse().map_err(|_| ApiError::new(ErrorCode::NotFound, "not a document id"))?;
    let stored = state
        .sync
        .store()
        .get(doc_id)
        .await?
        .filter(|d| who.scope.allows(&d.meta.posyandu))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such document in your scope").with_doc(doc_id))?;
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
    Ok(stored)
}

pub(super) async fn get_doc(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(doc_id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let stored = read_doc(&state, &headers, &doc_id).await?;
    let doc_id = stored.meta.doc;
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

/// `GET /v1/docs/{doc}/automerge`: the document's stored bytes, which load as one Automerge
/// document: how a phone takes back a session it dropped from its window.
pub(super) async fn get_doc_bytes(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(doc_id): Path<String>,
) -> Result<Response, ApiError> {
    let stored = read_doc(&state, &headers, &doc_id).await?;
    Ok(([(header::CONTENT_TYPE, DOC_BYTES_CONTENT_TYPE)], stored.bytes).into_response())
}

/// What `GET /v1/docs/{doc}/automerge` answers with.
pub const DOC_BYTES_CONTENT_TYPE: &str = "application/octet-stream";

// ---- auth: enrolment and refresh ----

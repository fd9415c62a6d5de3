//! Health, readiness, metrics and the fallbacks.

use super::*;

pub(super) async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.store().ping().await?;
    Ok(Json(serde_json::json!({ "status": "ok", "protocol": posync_proto::PROTOCOL_VERSION })))
}

/// Ready to take syncs: the store answers (it is opened only after its migrations ran). A
/// load balancer or orchestrator routes phones here only while this says 200.
pub(super) async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state.sync.store().ping().await?;
    Ok(Json(serde_json::json!({ "ready": true, "protocol": posync_proto::PROTOCOL_VERSION })))
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(ErrorCode::MethodNotAllowed, "this route does not take that method")
}

pub(super) async fn other_version(Path(version): Path<String>) -> ApiError {
    ApiError::new(
        ErrorCode::UnsupportedProtocolVersion,
        format!("protocol {version:?} is not supported; use /v{}/sync", posync_proto::PROTOCOL_VERSION),
    )
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let mut text = crate::metrics::global().render();
    if let Some(c) = state.sync.store().push_commits() {
        use std::fmt::Write;
        let _ = writeln!(
            text,
            "# HELP posync_push_commits_total Transactions that committed pushes (several share one under load).\n\
             # TYPE posync_push_commits_total counter\nposync_push_commits_total {}\n\
             # HELP posync_pushes_committed_total Pushes committed.\n\
             # TYPE posync_pushes_committed_total counter\nposync_pushes_committed_total {}",
            c.commits, c.pushes
        );
    }
    let mut r = (StatusCode::OK, text).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    r
}

/// Last sync of every device this instance saw: when, bytes, duration, last error.
pub(super) async fn admin_telemetry(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<std::collections::BTreeMap<String, DeviceTelemetry>>, ApiError> {
    let caller = admin_caller(&state, &headers).await?;
    let visible: std::collections::BTreeSet<DeviceId> =
        state.admin.devices(&caller).await?.into_iter().map(|d| d.device).collect();
    let t = state.telemetry.lock().map_err(|_| ApiError::new(ErrorCode::Internal, "telemetry lock"))?;
    Ok(Json(t.iter().filter(|(d, _)| visible.contains(d)).map(|(d, v)| (d.to_string(), v.clone())).collect()))
}

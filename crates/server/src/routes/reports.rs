//! Monthly reports, overdue doses and invalid records: read in the caller's scope, audited.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct ReportQuery {
    month: Option<String>,
    level: Option<String>,
    format: Option<String>,
}

pub(super) fn wants_csv(q: &ReportQuery, headers: &HeaderMap) -> bool {
    q.format.as_deref() == Some("csv")
        || headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/csv"))
}

pub(super) fn csv_response(body: String) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/csv; charset=utf-8"));
    r
}

pub(super) fn today(state: &AppState) -> time::Date {
    time::OffsetDateTime::from_unix_timestamp(state.now()).map_or(time::Date::MIN, |t| t.date())
}

pub(super) fn report_query(
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<ReportQuery, ApiError> {
    query
        .map(|axum::extract::Query(q)| q)
        .map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be month=YYYY-MM&level=...&format=json|csv"))
}

/// SKDN, nutrition, immunisation and adult figures per posyandu or rolled up; every role,
/// over its own scope.
pub(super) async fn report_monthly(
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
pub(super) async fn report_overdue(
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
pub(super) async fn invalid_records(
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

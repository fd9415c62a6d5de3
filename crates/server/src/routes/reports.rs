//! Monthly reports, overdue doses and invalid records: read in the caller's scope, audited.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct ReportQuery {
    month: Option<String>,
    level: Option<String>,
    format: Option<String>,
    unit: Option<String>,
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

/// The unit a report is narrowed to, if any: an id that does not parse is no unit in scope.
pub(super) fn report_unit(unit: Option<&str>) -> Result<Option<UnitId>, ApiError> {
    unit.map(|u| u.parse().map_err(|_| crate::reports::unit_not_found())).transpose()
}

/// SKDN, nutrition, immunisation and adult figures per posyandu or rolled up; every role,
/// over its own scope.
pub(super) async fn report_monthly(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authenticate_reader(&state, &headers, "/v1/reports/monthly").await?;
    let q = report_query(query)?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let level = match q.level.as_deref() {
        None => crate::reports::Level::Posyandu,
        Some(l) => crate::reports::Level::parse(l).ok_or_else(|| {
            ApiError::new(ErrorCode::InvalidRequest, "level must be posyandu, village, puskesmas or district")
        })?,
    };
    let unit = report_unit(q.unit.as_deref())?;
    let store = state.store().as_ref();
    let coverage = crate::reports::coverage(store, &who.scope, unit.as_ref()).await?;
    let report = crate::reports::monthly_in(store, &coverage, month, level).await?;
    Ok(if wants_csv(&q, &headers) { csv_response(report.csv()) } else { Json(report).into_response() })
}

#[derive(serde::Deserialize)]
pub(super) struct TrendQuery {
    month: Option<String>,
    unit: Option<String>,
    months: Option<String>,
    /// `id` or `en`: add the series' line charts (SVG) in that language.
    charts: Option<String>,
}

/// `months`: 1 to [`crate::reports::TREND_MONTHS_MAX`], 12 when absent.
fn trend_months(months: Option<&str>) -> Result<u32, ApiError> {
    let max = crate::reports::TREND_MONTHS_MAX;
    match months.map(str::parse::<u32>) {
        None => Ok(12),
        Some(Ok(n)) if (1..=max).contains(&n) => Ok(n),
        Some(_) => {
            Err(ApiError::new(ErrorCode::InvalidRequest, format!("months must be a whole number from 1 to {max}")))
        }
    }
}

/// The monthly figures of a unit (or the caller's whole scope) for the last `months` months:
/// for a page's trend. Counts only; audited as a report read.
pub(super) async fn report_trend(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<TrendQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::reports::Trend>, ApiError> {
    let who = authenticate_reader(&state, &headers, "/v1/reports/trend").await?;
    let axum::extract::Query(q) =
        query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be unit=...&month=YYYY-MM&months=N"))?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let months = trend_months(q.months.as_deref())?;
    let unit = report_unit(q.unit.as_deref())?;
    let store = state.store().as_ref();
    let coverage = crate::reports::coverage(store, &who.scope, unit.as_ref()).await?;
    let mut trend = crate::reports::trend(store, &coverage, month, months).await?;
    match q.charts.as_deref() {
        None => {}
        Some("id") => trend.charts = crate::reports::trend_charts(&trend, crate::charts::Lang::Id),
        Some("en") => trend.charts = crate::reports::trend_charts(&trend, crate::charts::Lang::En),
        Some(_) => return Err(ApiError::new(ErrorCode::InvalidRequest, "charts must be id or en")),
    }
    let detail = serde_json::json!({
        "report": "trend", "month": month.to_string(), "months": months, "unit": trend.unit,
    });
    let concerns = trend.unit.clone().or_else(|| who.scope.posyandu().next().map(ToString::to_string));
    store
        .append_audit(
            AuditEntry::new(state.now(), &who.actor, AuditAction::ReportRead, &who.target, detail).concerning(concerns),
        )
        .await?;
    Ok(Json(trend))
}

/// Children with overdue doses, by name: for the kader's home visits. Audited (names).
pub(super) async fn report_overdue(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ReportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authenticate_reader(&state, &headers, "/v1/reports/overdue").await?;
    let q = report_query(query)?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let list = crate::reports::overdue(state.store().as_ref(), &who.scope, month).await?;
    let detail = serde_json::json!({ "report": "overdue", "month": month.to_string(), "children": list.len() });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &who.actor, AuditAction::ReportRead, &who.target, detail)
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

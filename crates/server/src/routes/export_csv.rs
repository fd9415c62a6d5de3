//! Analysts' CSV exports over HTTP: `GET /v1/export/visits.csv` and `/v1/export/people.csv`
//! (`unit`, and `month` or `from` and `to`), read in the caller's scope from the server's
//! data, audited as staff reads. A read-only API key may call them.

use super::*;
use crate::export_csv::Period;

#[derive(serde::Deserialize)]
pub(super) struct ExportQuery {
    unit: Option<String>,
    month: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// What one export covers: the caller, the posyandu (narrowed to `unit`) and the period.
struct Export {
    who: Reader,
    scope: posync_model::Scope,
    unit: Option<UnitId>,
    period: Period,
}

async fn export_request(
    state: &AppState,
    headers: &HeaderMap,
    query: Result<axum::extract::Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
    route: &'static str,
) -> Result<Export, ApiError> {
    let who = authenticate_reader(state, headers, route).await?;
    let axum::extract::Query(q) = query.map_err(|_| {
        ApiError::new(ErrorCode::MalformedBody, "query must be unit=...&month=YYYY-MM or unit=...&from=...&to=...")
    })?;
    let period = Period::parse(q.month.as_deref(), q.from.as_deref(), q.to.as_deref(), today(state))?;
    let unit = report_unit(q.unit.as_deref())?;
    // The scope comes from the server's data (the caller's units, or the key's unit), never
    // from the request: a unit outside it is 404 like an unknown one.
    let coverage = crate::reports::coverage(state.store().as_ref(), &who.scope, unit.as_ref()).await?;
    Ok(Export { scope: coverage.scope, who, unit, period })
}

/// Audit the export as a staff read (it names people): the file, the period and the rows.
async fn audit_export(state: &AppState, e: &Export, file: &str, rows: usize) -> Result<(), ApiError> {
    let detail = serde_json::json!({
        "export": file,
        "unit": e.unit,
        "from": e.period.from.to_string(),
        "to": e.period.to.to_string(),
        "rows": rows,
    });
    let concerns =
        e.unit.as_ref().map(ToString::to_string).or_else(|| e.scope.posyandu().next().map(ToString::to_string));
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &e.who.actor, AuditAction::RecordRead, &e.who.target, detail)
                .concerning(concerns),
        )
        .await?;
    Ok(())
}

fn attachment(body: String, name: &str) -> Response {
    let mut r = csv_response(body);
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

/// One row per valid visit of the period, with z-scores and nutrition classes.
pub(super) async fn export_visits_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let e = export_request(&state, &headers, query, "/v1/export/visits.csv").await?;
    let facts = state.store().report_facts(e.scope.clone(), e.period.from, e.period.to).await?;
    audit_export(&state, &e, "visits.csv", facts.len()).await?;
    Ok(attachment(crate::export_csv::visits_csv(&facts), "visits.csv"))
}

/// One row per registered person (merged duplicates once), with their visits in the period.
pub(super) async fn export_people_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let e = export_request(&state, &headers, query, "/v1/export/people.csv").await?;
    let people = state.store().people_export(e.scope.clone()).await?;
    let facts = state.store().report_facts(e.scope.clone(), e.period.from, e.period.to).await?;
    audit_export(&state, &e, "people.csv", people.len()).await?;
    Ok(attachment(crate::export_csv::people_csv(&people, &facts, e.period), "people.csv"))
}

//! Exports of a unit's month for other systems: FHIR R4 for SATUSEHAT. They name people:
//! staff only, in the caller's scope (from server data), audited with counts only.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct ExportQuery {
    unit: Option<String>,
    month: Option<String>,
}

/// `GET /v1/export/fhir?unit=&month=`: a `transaction` Bundle of the month's visits in the
/// posyandu under `unit` (default: the whole scope). Puskesmas officers and district admins.
pub(super) async fn export_fhir(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<ExportQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let who = authenticate(&state, &headers).await?;
    if !matches!(who.role, Role::PuskesmasOfficer | Role::DistrictAdmin) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "exports name people: puskesmas officers and district admins only",
        ));
    }
    let axum::extract::Query(q) =
        query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be unit=...&month=YYYY-MM"))?;
    let month = crate::reports::parse_month(q.month.as_deref(), today(&state))?;
    let unit: Option<UnitId> =
        q.unit.as_deref().map(|u| u.parse().map_err(|_| crate::reports::unit_not_found())).transpose()?;
    let store = state.store().as_ref();
    let coverage = crate::reports::coverage(store, &who.scope, unit.as_ref()).await?;
    let name = unit.as_ref().map_or_else(|| "scope".to_owned(), ToString::to_string);
    let (bundle, counts) = crate::fhir::export(store, &coverage, &name, month, today(&state)).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({
        "export": "fhir", "role": who.role, "month": month.to_string(), "unit": unit, "counts": counts,
    });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, "export/fhir", detail)
                .concerning(coverage.scope.posyandu().next()),
        )
        .await?;
    let mut r = Json(bundle).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/fhir+json"));
    Ok(r)
}

//! A child's page and the search that finds it: read in the caller's scope, every read audited
//! (staff reads of health records), never the searched name in the log.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct PeopleQuery {
    /// Part of the name.
    q: Option<String>,
}

#[derive(serde::Deserialize)]
pub(super) struct ChildQuery {
    /// `id` (default) or `en`: the charts' language.
    lang: Option<String>,
}

pub(super) async fn people_search(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<axum::extract::Query<PeopleQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<posync_store::PersonSeen>>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let axum::extract::Query(q) = query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be q=NAME"))?;
    let found = crate::people::search(state.store().as_ref(), &who, q.q).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "role": who.role, "people_listed": found.len() });
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, "people", detail)
                .concerning(who.scope.posyandu().next()),
        )
        .await?;
    Ok(Json(found))
}

pub(super) async fn person_page(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<axum::extract::Query<ChildQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<crate::people::ChildView>, ApiError> {
    let who = authenticate(&state, &headers).await?;
    let person: posync_model::PersonId = parse_path(&id, "person")?;
    let axum::extract::Query(q) =
        query.map_err(|_| ApiError::new(ErrorCode::MalformedBody, "query must be lang=id|en"))?;
    let lang = match q.lang.as_deref() {
        None | Some("id") => crate::charts::Lang::Id,
        Some("en") => crate::charts::Lang::En,
        Some(_) => return Err(ApiError::new(ErrorCode::InvalidRequest, "lang must be id or en")),
    };
    let view = crate::people::child(state.store().as_ref(), &who, person, today(&state), lang).await?;
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "role": who.role, "person": view.person_id, "posyandu": view.posyandu });
    let posyandu: Option<posync_model::PosyanduId> = view.posyandu.parse().ok();
    state
        .store()
        .append_audit(
            AuditEntry::new(state.now(), &actor, AuditAction::RecordRead, person, detail).concerning(posyandu.as_ref()),
        )
        .await?;
    Ok(Json(view))
}

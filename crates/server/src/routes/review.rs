//! Conflicts and duplicate registrations: listed in scope, resolved and merged, audited.

use super::*;

#[derive(serde::Deserialize)]
pub(super) struct ConflictQuery {
    posyandu: Option<String>,
    puskesmas: Option<String>,
    field: Option<String>,
    policy: Option<String>,
    /// Only conflicts open for at least this many days (the oldest need attention first).
    older_than_days: Option<u32>,
}

pub(super) async fn conflicts_list(
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

pub(super) async fn conflict_detail(
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
pub(super) struct ResolveBody {
    value: posync_model::FieldValue,
}

pub(super) async fn conflict_resolve(
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

pub(super) async fn duplicates_list(
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
pub(super) struct MergeBody {
    duplicate: posync_model::PersonId,
    keep: posync_model::PersonId,
}

pub(super) async fn duplicates_merge(
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

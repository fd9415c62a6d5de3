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
    /// Only conflicts about a child at least this many months old today.
    age_months_min: Option<u32>,
    /// Only conflicts about a child younger than this many months today.
    age_months_max: Option<u32>,
    /// Conflicts to skip (paging).
    #[serde(default)]
    offset: u64,
    /// At most this many (1..=1000; default 1000).
    limit: Option<u32>,
}

/// The day `months` whole months before `day` (the last day of a shorter month).
fn months_before(day: time::Date, months: u32) -> time::Date {
    let total = day.year() * 12 + i32::from(u8::from(day.month())) - 1 - i32::try_from(months).unwrap_or(i32::MAX / 2);
    let (year, month0) = (total.div_euclid(12), total.rem_euclid(12));
    let month = time::Month::try_from(u8::try_from(month0 + 1).unwrap_or(1)).unwrap_or(time::Month::January);
    let last = time::util::days_in_month(month, year);
    time::Date::from_calendar_date(year, month, day.day().min(last)).unwrap_or(time::Date::MIN)
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
        // A child is at least N months old when born on or before the day N months ago.
        born_before: q.age_months_min.map(|m| months_before(today(&state), m) + time::Duration::days(1)),
        born_from: q.age_months_max.map(|m| months_before(today(&state), m) + time::Duration::days(1)),
        opened_before: q.older_than_days.map(|days| state.now() - i64::from(days) * 86_400),
        offset: q.offset,
        limit: match q.limit {
            Some(n @ 1..=posync_store::CONFLICTS_PAGE_MAX) => Some(n),
            Some(_) => return Err(invalid("limit (1 to 1000)")),
            None => None,
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
    Ok(Json(crate::conflicts::list(state.store().as_ref(), &who, filter).await?))
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

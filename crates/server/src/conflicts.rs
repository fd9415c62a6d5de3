//! The conflict API: list open conflicts in scope, show one with the context a person needs
//! to decide (the visit, the child's earlier measurements, the z-score each value would
//! give), and resolve one by writing the chosen value as the server's change.

use crate::auth::Principal;
use crate::error::ApiError;
use posync_model::growth::{self, Measurement};
use posync_model::{Field, FieldValue, PosyanduId, Role};
use posync_proto::ErrorCode;
use posync_store::{Actor, AuditAction, AuditEntry, ConflictFilter, ConflictRecord, ResolvedConflict, Store};
use serde::Serialize;
use std::collections::BTreeMap;

/// Who may decide a conflict.
pub fn may_resolve(role: Role) -> bool {
    matches!(role, Role::PuskesmasOfficer | Role::DistrictAdmin)
}

/// A conflict value with the user whose device wrote it.
#[derive(Clone, Debug, Serialize)]
pub struct ValueView {
    pub value: FieldValue,
    pub device: Option<String>,
    pub user: Option<String>,
    /// The user's name, for people reading the queue.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_name: Option<String>,
    pub winner: bool,
    /// The z-score this value would give, for a child's measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z: Option<f64>,
    /// Which indicator `z` is of (`wfa`, `lhfa`, `hcfa`, `muacfa`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z_indicator: Option<&'static str>,
    /// What `z` means, by Permenkes 2/2020 (weight- and length-for-age only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub z_status: Option<growth::StatusLabel>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ConflictView {
    pub id: String,
    pub doc: String,
    pub posyandu: PosyanduId,
    /// The posyandu's name (`Posyandu Melati 1`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub posyandu_name: Option<String>,
    /// Whom the record is about: the visit's child or the registered person.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_birth_date: Option<String>,
    pub collection: String,
    pub record_id: String,
    pub field: String,
    pub values: Vec<ValueView>,
    pub opened_at: i64,
    /// The visit as it stands (winning values), on the detail view.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<serde_json::Value>,
    /// The same person's other measurements, oldest first, on the detail view.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<serde_json::Value>,
}

/// Names for ids, so a person reads "Posyandu Melati 1" and "Euis Nurhayati", not ids.
struct Names {
    /// Device → (user id, user name).
    users: BTreeMap<String, (String, String)>,
    units: BTreeMap<String, String>,
}

impl Names {
    async fn load(store: &dyn Store) -> Result<Self, ApiError> {
        let user_names: BTreeMap<String, String> =
            store.users().await?.into_iter().map(|u| (u.id.to_string(), u.name)).collect();
        let users = store
            .devices()
            .await?
            .into_iter()
            .filter_map(|d| {
                let user = d.user?.to_string();
                let name = user_names.get(&user).cloned().unwrap_or_default();
                Some((d.device.to_string(), (user, name)))
            })
            .collect();
        let units = store.unit_tree().await?.units.into_iter().map(|u| (u.id.to_string(), u.name)).collect();
        Ok(Names { users, units })
    }
}

fn view(c: ConflictRecord, names: &Names) -> ConflictView {
    ConflictView {
        id: c.id,
        doc: c.doc.to_string(),
        posyandu_name: names.units.get(c.posyandu.as_str()).cloned(),
        posyandu: c.posyandu,
        subject_name: c.subject_name,
        subject_birth_date: c.subject_birth_date,
        collection: c.collection,
        record_id: c.record_id,
        field: c.field,
        values: c
            .values
            .into_iter()
            .map(|v| {
                let device = v.device.map(|d| d.to_string());
                let who = device.as_ref().and_then(|d| names.users.get(d));
                ValueView {
                    value: v.value,
                    user: who.map(|(id, _)| id.clone()),
                    user_name: who.map(|(_, name)| name.clone()).filter(|n| !n.is_empty()),
                    device,
                    winner: v.winner,
                    z: None,
                    z_indicator: None,
                    z_status: None,
                }
            })
            .collect(),
        opened_at: c.opened_at,
        record: None,
        history: Vec::new(),
    }
}

pub async fn list(store: &dyn Store, who: &Principal, filter: ConflictFilter) -> Result<Vec<ConflictView>, ApiError> {
    let names = Names::load(store).await?;
    Ok(store.conflicts(who.scope.clone(), filter).await?.into_iter().map(|c| view(c, &names)).collect())
}

async fn in_scope(store: &dyn Store, who: &Principal, id: &str) -> Result<ConflictRecord, ApiError> {
    // Out of scope answers like absent: conflict ids reveal nothing.
    store
        .conflict(id.to_owned())
        .await?
        .filter(|c| who.scope.allows(&c.posyandu))
        .ok_or_else(|| ApiError::new(ErrorCode::NotFound, "no such open conflict in your scope"))
}

/// One conflict with its context.
pub async fn detail(store: &dyn Store, who: &Principal, id: &str) -> Result<ConflictView, ApiError> {
    let c = in_scope(store, who, id).await?;
    let names = Names::load(store).await?;
    let stored = store.get(c.doc).await?.ok_or_else(|| ApiError::new(ErrorCode::NotFound, "document gone"))?;
    let am = automerge::Automerge::load(&stored.bytes)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "stored document does not load"))?;
    let visit = posync_model::doc::visits(&am)
        .map_err(|_| ApiError::new(ErrorCode::Internal, "document layout"))?
        .into_iter()
        .find(|v| v.visit_id.to_string() == c.record_id);
    let session_date = posync_model::doc::read_meta(&am).ok().and_then(|m| m.date);
    let mut out = view(c, &names);
    if let (Some(v), Some(date)) = (&visit, session_date) {
        let field = Field::from_key(&out.field);
        for value in &mut out.values {
            if let Some((indicator, z)) = candidate_z(v, date, field, &value.value) {
                // Shown as WHO rounds it: the value its class is decided on.
                value.z = Some(growth::who_rounded(z));
                value.z_indicator = Some(indicator);
                value.z_status = status_of(indicator, z);
            }
        }
        out.record = Some(serde_json::json!({
            "visit_id": v.visit_id.to_string(), "person_id": v.person_id.to_string(), "name": v.name,
            "sex": v.sex.code(), "birth_date": posync_model::record::format_date(v.birth_date),
            "session_date": posync_model::record::format_date(date), "group": v.group.code(),
            "weight_g": v.weight_g, "length_mm": v.length_mm, "muac_mm": v.muac_mm, "head_circ_mm": v.head_circ_mm,
        }));
        let from = date - time::Duration::days(3 * 366);
        let facts = store.report_facts(posync_model::Scope::new([out.posyandu.clone()]), from, date).await?;
        let mut history: Vec<_> =
            facts.into_iter().filter(|f| f.person_id == v.person_id && f.session_date < date).collect();
        history.sort_by_key(|f| f.session_date);
        out.history = history
            .into_iter()
            .map(|f| {
                serde_json::json!({
                    "date": posync_model::record::format_date(f.session_date),
                    "weight_g": f.weight_g, "length_mm": f.length_mm, "muac_mm": f.muac_mm,
                })
            })
            .collect();
    }
    Ok(out)
}

/// The indicator and z-score a candidate value gives the child, for the growth fields.
fn candidate_z(
    v: &posync_model::Visit,
    date: time::Date,
    field: Option<Field>,
    value: &FieldValue,
) -> Option<(&'static str, f64)> {
    let FieldValue::Int(x) = value else { return None };
    let mut m = Measurement::of_visit(v, date);
    let (indicator, z) = match field? {
        Field::WeightG => {
            m.weight_g = Some(*x);
            ("wfa", growth::zscores(&m).wfa)
        }
        Field::LengthMm => {
            m.length_mm = Some(*x);
            ("lhfa", growth::zscores(&m).lhfa)
        }
        Field::HeadCircMm => {
            m.head_circ_mm = Some(*x);
            ("hcfa", growth::zscores(&m).hcfa)
        }
        Field::MuacMm => {
            m.muac_mm = Some(*x);
            ("muacfa", growth::zscores(&m).muacfa)
        }
        _ => return None,
    };
    Some((indicator, z?))
}

/// The Permenkes 2/2020 status of a weight- or length-for-age z-score, in words.
fn status_of(indicator: &str, z: f64) -> Option<growth::StatusLabel> {
    match indicator {
        "wfa" => Some(growth::WeightForAgeStatus::from_z(z).label()),
        "lhfa" => Some(growth::HeightForAgeStatus::from_z(z).label()),
        _ => None,
    }
}

/// Decide conflict `id` with `value` (one of the values or a corrected one).
pub async fn resolve(
    store: &dyn Store,
    who: &Principal,
    instance: &str,
    id: &str,
    value: FieldValue,
    now: i64,
) -> Result<ResolvedConflict, ApiError> {
    if !may_resolve(who.role) {
        return Err(ApiError::new(
            ErrorCode::Forbidden,
            "only a puskesmas officer or district admin resolves conflicts",
        ));
    }
    let c = in_scope(store, who, id).await?;
    if let Some(field) = Field::from_key(&c.field).filter(|_| c.collection == "visits") {
        field.validate(&value).map_err(|e| ApiError::new(ErrorCode::InvalidRequest, e))?;
    }
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    // The audit keeps the values replaced: the trail of a clinical decision. Values that
    // identify a person (names, NIK, birth date, address) are kept as a hash: the trail shows
    // which value was chosen without copying personal identifiers into the log.
    let identifying = identifies_a_person(&c.field);
    let replaced: Vec<serde_json::Value> = c
        .values
        .iter()
        .map(|v| {
            serde_json::json!({
                "value": audit_value(identifying, &v.value),
                "device": v.device,
                "winner": v.winner,
            })
        })
        .collect();
    let detail = serde_json::json!({
        "doc": c.doc, "posyandu": c.posyandu, "record": c.record_id, "field": c.field,
        "replaced": replaced, "chosen": audit_value(identifying, &value),
    });
    let audit =
        AuditEntry::new(now, &actor, AuditAction::ConflictResolved, &c.id, detail).concerning(Some(&c.posyandu));
    Ok(store.resolve_conflict(c.id, value, instance.to_owned(), audit).await?)
}

/// Fields whose values identify a person: never copied into the audit log.
fn identifies_a_person(field: &str) -> bool {
    matches!(field, "name" | "nik" | "mother_nik" | "mother_name" | "birth_date" | "address" | "rt" | "rw")
}

/// A value as the audit log keeps it: measurements as they are, identifiers as the first 16
/// hex digits of their SHA-256 (enough to tell which value was chosen, not to read it).
fn audit_value(identifying: bool, value: &FieldValue) -> serde_json::Value {
    if !identifying {
        return serde_json::to_value(value).unwrap_or(serde_json::Value::Null);
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(value.to_string().as_bytes());
    serde_json::json!({ "sha256_16": hex::encode(&digest[..8]) })
}

/// Merge a semantic duplicate: `duplicate` becomes the same person as `keep`; every visit of
/// both stays and counts for the kept person.
pub async fn merge_people(
    store: &dyn Store,
    who: &Principal,
    instance: &str,
    duplicate: posync_model::PersonId,
    keep: posync_model::PersonId,
    now: i64,
) -> Result<ResolvedConflict, ApiError> {
    if !may_resolve(who.role) {
        return Err(ApiError::new(ErrorCode::Forbidden, "only a puskesmas officer or district admin merges people"));
    }
    let actor = Actor::User { user: who.user.clone(), device: who.device };
    let detail = serde_json::json!({ "duplicate": duplicate, "keep": keep });
    let audit = AuditEntry::new(now, &actor, AuditAction::PeopleMerged, duplicate, detail)
        .concerning(who.scope.posyandu().next());
    Ok(store.merge_people(who.scope.clone(), duplicate, keep, instance.to_owned(), audit).await?)
}

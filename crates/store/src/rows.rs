//! Stored rows to domain types and back, shared by the SQLite and PostgreSQL adapters: the
//! column layouts are the same on both, only the drivers differ.

use crate::{ConflictRecord, ConflictValueRecord, StoreError, StoredMeta};
use posync_model::record::parse_date;
use posync_model::{DeviceId, DocId, DocKind, FieldConflict, Heads, Policy};

pub(crate) fn parse_kind(doc: &str, s: &str) -> Result<DocKind, StoreError> {
    DocKind::parse(s).ok_or_else(|| StoreError::Backend(format!("doc {doc}: unknown kind {s:?}")))
}

pub(crate) fn row_meta(
    doc_id: String,
    kind: String,
    posyandu: String,
    seq: i64,
    heads: Vec<u8>,
) -> Result<StoredMeta, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("doc {doc_id}: bad stored {what}"));
    Ok(StoredMeta {
        kind: parse_kind(&doc_id, &kind)?,
        posyandu: posyandu.parse().map_err(|_| bad("posyandu"))?,
        seq: u64::try_from(seq).map_err(|_| bad("seq"))?,
        heads: Heads::from_bytes(&heads).map_err(|_| bad("heads"))?,
        doc: doc_id.parse().map_err(|_| bad("id"))?,
    })
}

pub(crate) fn parse_stored_heads(b: Option<Vec<u8>>) -> Result<Heads, StoreError> {
    b.map(|b| Heads::from_bytes(&b).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Device actors are the device id's 16 bytes, with an incarnation after them from a
/// replica's second incarnation on; anything else (genesis, server) is no device.
pub(crate) fn device_of_actor(hex_actor: &str) -> Option<DeviceId> {
    DeviceId::of_actor(&automerge::ActorId::from(hex::decode(hex_actor).ok()?))
}

pub(crate) fn policy_code(p: Policy) -> &'static str {
    match p {
        Policy::Review => "review",
        Policy::Auto => "auto",
    }
}

/// A conflict as the index stores it: id, policy code and values as JSON.
pub(crate) struct ConflictIndexRow<'a> {
    pub id: String,
    pub policy: &'static str,
    pub vals: String,
    pub conflict: &'a FieldConflict,
}

/// The index rows of a document's current conflicts.
pub(crate) fn conflict_index_rows(
    doc: DocId,
    conflicts: &[FieldConflict],
) -> Result<Vec<ConflictIndexRow<'_>>, StoreError> {
    conflicts
        .iter()
        .map(|c| {
            let values: Vec<ConflictValueRecord> = c
                .values
                .iter()
                .map(|v| ConflictValueRecord {
                    value: v.value.clone(),
                    device: device_of_actor(&v.actor),
                    winner: v.winner,
                })
                .collect();
            if c.policy() == Policy::Auto {
                // Logged without values: the winner stands.
                tracing::info!(doc = %doc, field = %c.field, "auto-resolved conflict");
            }
            Ok(ConflictIndexRow {
                id: c.id(doc).to_string(),
                policy: policy_code(c.policy()),
                vals: serde_json::to_string(&values).map_err(|e| StoreError::Backend(e.to_string()))?,
                conflict: c,
            })
        })
        .collect()
}

/// A `conflicts` row: id, doc, posyandu, collection, record, field, policy, values JSON,
/// opened_at, updated_at.
pub(crate) type ConflictRow = (String, String, String, String, String, String, String, String, i64, i64);

pub(crate) const CONFLICT_COLUMNS: &str =
    "conflict_id, doc_id, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at";

pub(crate) fn to_conflict_record(row: ConflictRow) -> Result<ConflictRecord, StoreError> {
    let (id, doc, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at) = row;
    let bad = |what: &str| StoreError::Backend(format!("bad conflict row: {what}"));
    Ok(ConflictRecord {
        id,
        doc: doc.parse().map_err(|_| bad("doc"))?,
        posyandu: posyandu.parse().map_err(|_| bad("posyandu"))?,
        collection,
        record_id,
        field,
        policy: if policy == "auto" { Policy::Auto } else { Policy::Review },
        values: serde_json::from_str(&vals).map_err(|_| bad("values"))?,
        opened_at,
        updated_at,
    })
}

/// A projected visit row as read back for reports, before parsing.
pub(crate) struct RawFact {
    pub posyandu: String,
    pub session_date: String,
    pub person: String,
    pub name: String,
    pub sex: String,
    pub birth_date: String,
    pub group: String,
    pub weight_g: Option<i64>,
    pub length_mm: Option<i64>,
    pub lying: Option<bool>,
    pub muac_mm: Option<i64>,
    pub oedema: Option<bool>,
    pub growth_card: Option<bool>,
    pub bp_systolic: Option<i64>,
    pub bp_diastolic: Option<i64>,
    /// Antigens, comma-separated.
    pub immunisations: Option<String>,
}

impl RawFact {
    pub(crate) fn parse(self) -> Result<posync_model::report::VisitFact, StoreError> {
        let bad = |what: &str| StoreError::Backend(format!("bad projected {what}"));
        Ok(posync_model::report::VisitFact {
            posyandu: self.posyandu.parse().map_err(|_| bad("posyandu"))?,
            session_date: parse_date(&self.session_date).ok_or_else(|| bad("session date"))?,
            person_id: self.person.parse().map_err(|_| bad("person id"))?,
            name: self.name,
            sex: posync_model::Sex::parse(&self.sex).ok_or_else(|| bad("sex"))?,
            birth_date: parse_date(&self.birth_date).ok_or_else(|| bad("birth date"))?,
            group: posync_model::LifeGroup::parse(&self.group).ok_or_else(|| bad("life group"))?,
            weight_g: self.weight_g,
            length_mm: self.length_mm,
            lying: self.lying,
            muac_mm: self.muac_mm,
            oedema: self.oedema.unwrap_or(false),
            growth_card: self.growth_card.unwrap_or(false),
            bp_systolic: self.bp_systolic,
            bp_diastolic: self.bp_diastolic,
            immunisations: self
                .immunisations
                .map(|s| s.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default(),
        })
    }
}

/// A registered person row as read back for reports; rows that do not parse are skipped
/// (reports count what they can read).
pub(crate) fn registered_person(
    posyandu: &str,
    person: &str,
    birth_date: &str,
    kia_book: bool,
) -> Option<posync_model::report::RegisteredPerson> {
    Some(posync_model::report::RegisteredPerson {
        posyandu: posyandu.parse().ok()?,
        person_id: person.parse().ok()?,
        birth_date: parse_date(birth_date)?,
        kia_book,
    })
}

/// The SQL of the duplicate-people check; `{scope}` is each backend's "posyandu in scope".
pub(crate) fn duplicate_people_sql(scope_a: &str, scope_b: &str) -> String {
    format!(
        "SELECT a.person_id, a.posyandu, a.name, a.birth_date, b.person_id, b.posyandu, b.name, b.birth_date,
                CASE WHEN a.nik IS NOT NULL AND a.nik = b.nik THEN 'nik'
                     WHEN a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                          THEN 'mother_nik_and_birth_date'
                     ELSE 'name_birth_date_and_mother' END
         FROM people a JOIN people b ON a.person_id < b.person_id
         WHERE a.merged_into IS NULL AND b.merged_into IS NULL AND {scope_a} AND {scope_b}
           AND ((a.nik IS NOT NULL AND a.nik = b.nik)
             OR (a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                 AND lower(trim(a.name)) = lower(trim(b.name)))
             OR (a.birth_date = b.birth_date AND lower(trim(a.name)) = lower(trim(b.name))
                 AND lower(trim(a.mother_name)) = lower(trim(b.mother_name)) AND a.mother_name != ''))
         ORDER BY a.birth_date, a.person_id LIMIT 1000"
    )
}

/// One side of a duplicate pair: id, posyandu, name, birth date.
pub(crate) type PersonRow = (String, String, String, String);

pub(crate) fn duplicate_pair(a: PersonRow, b: PersonRow, reason: String) -> Result<crate::DuplicatePair, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad people row: {what}"));
    let person = |(id, posyandu, name, birth): PersonRow| -> Result<crate::PersonSummary, StoreError> {
        Ok(crate::PersonSummary {
            person_id: id.parse().map_err(|_| bad("id"))?,
            posyandu: posyandu.parse().map_err(|_| bad("posyandu"))?,
            name,
            birth_date: birth,
        })
    };
    Ok(crate::DuplicatePair { reason, a: person(a)?, b: person(b)? })
}

/// Records marked invalid in a scope: `{scope}` is the adapter's scope test on `posyandu`.
pub(crate) fn invalid_records_sql(scope: &str) -> String {
    format!(
        "SELECT doc_id, posyandu, 'visits', visit_id, name, session_date, invalid FROM visits
         WHERE invalid IS NOT NULL AND {scope}
         UNION ALL
         SELECT doc_id, posyandu, 'people', person_id, name, NULL, invalid FROM people
         WHERE invalid IS NOT NULL AND {scope}
         ORDER BY 1, 4 LIMIT 1000"
    )
}

/// A row of [`invalid_records_sql`].
pub(crate) type InvalidRow = (String, String, String, String, String, Option<String>, String);

pub(crate) fn invalid_record(row: InvalidRow) -> Result<crate::InvalidRecord, StoreError> {
    let (doc, posyandu, collection, record_id, name, session_date, issues) = row;
    Ok(crate::InvalidRecord {
        doc: doc.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?,
        posyandu: posyandu.parse().map_err(|_| StoreError::Backend("bad stored posyandu".into()))?,
        collection,
        record_id,
        name,
        session_date,
        issues: serde_json::from_str(&issues).map_err(|_| StoreError::Backend("bad stored issues".into()))?,
    })
}

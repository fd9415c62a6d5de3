//! Fields that hold more than one concurrent value.
//!
//! Automerge keeps every value written concurrently to a key and shows one deterministic
//! winner. In a health record the losers matter (9.8 kg or 8.9 kg?), so we surface them.

use crate::doc::{DocError, DocKind, read_meta, scalar_to_field_value};
use crate::record::FieldValue;
use automerge::{Automerge, ObjId, ObjType, ROOT, ReadDoc, Value};
use serde::Serialize;

/// One value among a conflict's concurrent values.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ConflictValue {
    pub value: FieldValue,
    /// Hex actor id of the device that wrote it.
    pub actor: String,
    /// True for the value Automerge shows as current.
    pub winner: bool,
}

/// A field with concurrent values, e.g. `visits/<visit_id>/weight_g`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FieldConflict {
    /// `visits` or `people`.
    pub collection: String,
    /// The visit or person id.
    pub record_id: String,
    /// The field key, or `immunisations/<antigen>`.
    pub field: String,
    pub values: Vec<ConflictValue>,
}

impl FieldConflict {
    pub fn path(&self) -> String {
        format!("{}/{}/{}", self.collection, self.record_id, self.field)
    }

    pub fn policy(&self) -> Policy {
        policy_for(&self.field)
    }

    /// A stable id for this field's conflict: the same field conflicting again gets the same id.
    pub fn id(&self, doc: crate::DocId) -> uuid::Uuid {
        uuid::Uuid::new_v5(&CONFLICT_NAMESPACE, format!("{doc}/{}", self.path()).as_bytes())
    }
}

const CONFLICT_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x6c0f_11c7_5e2a_4d1b_9a77_3c0d_e5f1_a2b3);

/// What happens when a field holds concurrent values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Clinically significant: open for a person to decide; the record shows "under review".
    Review,
    /// Free text and bookkeeping: Automerge's deterministic winner stands; logged only.
    Auto,
}

/// The policy table: one line per field, read by the server's index and the device alike.
/// Immunisations (`immunisations/<antigen>`) are reviewed: a dose recorded twice with two
/// dates is a question about the child's schedule.
pub fn policy_for(field: &str) -> Policy {
    use crate::record::Field as F;
    if field.starts_with("immunisations/") {
        return Policy::Review;
    }
    match F::from_key(field) {
        Some(
            F::WeightG
            | F::LengthMm
            | F::Lying
            | F::HeadCircMm
            | F::MuacMm
            | F::BirthDate
            | F::Sex
            | F::Name
            | F::Group
            | F::VitaminA
            | F::Oedema
            | F::GestationalWeeks
            | F::BpSystolic
            | F::BpDiastolic
            | F::IronTablets
            | F::HbGL
            | F::BloodSugarMgDl
            | F::WaistMm
            | F::DangerSigns
            | F::Referred,
        ) => Policy::Review,
        Some(
            F::Notes
            | F::GrowthCard
            | F::ExclusiveBf
            | F::Deworming
            | F::TbSymptoms
            | F::PumaScore
            | F::Srq20Score
            | F::AdlScore
            | F::Counselled,
        ) => Policy::Auto,
        // Person fields and anything this build does not know: a person decides.
        None => match field {
            "mother_name" | "address" | "rt" | "rw" | "kia_book" | "registered_at" | "recorded_at" | "merged_into" => {
                Policy::Auto
            }
            _ => Policy::Review,
        },
    }
}

/// Every conflicted field of a document, in key order.
pub fn conflicts(doc: &Automerge) -> Result<Vec<FieldConflict>, DocError> {
    let kind = read_meta(doc)?.kind;
    let coll_key = match kind {
        DocKind::Session => "visits",
        DocKind::Registry => "people",
    };
    let Some((Value::Object(ObjType::Map), coll)) = doc.get(ROOT, coll_key)? else {
        return Err(DocError::Layout(format!("missing {coll_key} map")));
    };
    let mut out = Vec::new();
    // One pass over each object (a `get` per key costs a search each); `get_all` only for
    // the keys Automerge flags as conflicted.
    for item in doc.map_range(&coll, ..) {
        if matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
            collect(doc, &item.id(), coll_key, &item.key, "", &mut out)?;
        }
    }
    Ok(out)
}

/// The conflicted fields of one record (`record_id` in the document's collection): what a
/// capture re-indexes, instead of the whole document.
pub fn record_conflicts(doc: &Automerge, record_id: &str) -> Result<Vec<FieldConflict>, DocError> {
    crate::doc::RecordReader::of(doc)?.conflicts(record_id)
}

/// [`record_conflicts`] in the collection `coll` (keyed `coll_key`) already looked up.
pub(crate) fn conflicts_in(
    doc: &Automerge,
    coll: &ObjId,
    coll_key: &str,
    record_id: &str,
) -> Result<Vec<FieldConflict>, DocError> {
    let mut out = Vec::new();
    if let Some((Value::Object(ObjType::Map), rec)) = doc.get(coll, record_id)? {
        collect(doc, &rec, coll_key, record_id, "", &mut out)?;
    }
    Ok(out)
}

/// An entry of a record's map that conflict discovery looks at: conflicted (Automerge
/// flags it) or a nested map. Noted while the record's fields are read, in key order, so
/// projecting a record and indexing its conflicts walk its map once.
#[derive(Debug)]
pub(crate) struct Flagged {
    pub key: String,
    /// The op id of the value `map_range` shows (the winner).
    pub id: ObjId,
    pub conflict: bool,
    pub map: bool,
}

/// What [`collect`] finds in `obj`, from the entries of it already [`Flagged`] in one pass.
pub(crate) fn collect_flagged(
    doc: &Automerge,
    obj: &ObjId,
    coll: &str,
    record_id: &str,
    flagged: &[Flagged],
    out: &mut Vec<FieldConflict>,
) -> Result<(), DocError> {
    for f in flagged {
        if f.conflict {
            let all = doc.get_all(obj, f.key.as_str())?;
            if !all_equal_scalars(&all) {
                out.push(field_conflict(coll, record_id, &f.key, &all, &f.id));
                continue;
            }
        }
        if f.map {
            collect(doc, &f.id, coll, record_id, &format!("{}/", f.key), out)?;
        }
    }
    Ok(())
}

fn field_conflict(
    coll: &str,
    record_id: &str,
    field: &str,
    all: &[(Value<'_>, ObjId)],
    winner: &ObjId,
) -> FieldConflict {
    // get_all lists values in op order; the winner is the one map_range shows.
    let values = all
        .iter()
        .map(|(v, id)| ConflictValue {
            value: scalar_to_field_value(v).unwrap_or(FieldValue::Null),
            actor: actor_hex(id),
            winner: id == winner,
        })
        .collect();
    FieldConflict { collection: coll.to_owned(), record_id: record_id.to_owned(), field: field.to_owned(), values }
}

fn collect(
    doc: &Automerge,
    obj: &ObjId,
    coll: &str,
    record_id: &str,
    prefix: &str,
    out: &mut Vec<FieldConflict>,
) -> Result<(), DocError> {
    for item in doc.map_range(obj, ..) {
        let key = item.key.as_ref();
        if item.conflict {
            let all = doc.get_all(obj, key)?;
            if !all_equal_scalars(&all) {
                out.push(field_conflict(coll, record_id, &format!("{prefix}{key}"), &all, &item.id()));
                continue;
            }
        }
        if matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
            collect(doc, &item.id(), coll, record_id, &format!("{prefix}{key}/"), out)?;
        }
    }
    Ok(())
}

/// Concurrent writes of one and the same value (two kader typing 8.9 kg, two replicas
/// upgrading a schema) are agreement, not a conflict.
fn all_equal_scalars(all: &[(Value<'_>, ObjId)]) -> bool {
    let mut values = all.iter().map(|(v, _)| scalar_to_field_value(v));
    match values.next() {
        Some(Some(first)) => values.all(|v| v.as_ref() == Some(&first)),
        _ => false,
    }
}

fn actor_hex(id: &ObjId) -> String {
    match id {
        ObjId::Root => String::new(),
        ObjId::Id(_, actor, _) => actor.to_hex_string(),
    }
}

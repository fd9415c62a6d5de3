//! The Automerge layout of posync documents, and typed reads and writes on it.
//!
//! Layout (schema 2):
//! ```text
//! session:  { schema, kind: "session",  posyandu, date, visits: { <visit_id>: {field: value, immunisations: {antigen: date}} } }
//! registry: { schema, kind: "registry", posyandu,       people: { <person_id>: {field: value} } }
//! ```
//! Visit keys are [`Field::key`]s; schema 2 added `group` and the group services
//! ([`Field::SERVICES`]). Person keys: name, sex, birth_date, mother_name, nik, mother_nik,
//! address, rt, rw, pregnant, kia_book. `schema` is written 1 by the frozen genesis change and
//! raised by [`upgrade`], which every edit runs first.
//! Every document starts with a *genesis* change made by an actor derived from the document id
//! at time 0. It is byte-identical on every phone, so two kader who open the same posyandu day
//! offline create the same root objects and their visits merge instead of hiding each other.

use crate::ids::{DeviceId, DocId, PersonId, PosyanduId, VisitId};
use crate::record::{
    Field, FieldValue, LifeGroup, Person, Sex, Visit, VitaminA, check_unix_seconds, format_date, parse_date,
};
use automerge::transaction::{CommitOptions, Transactable};
use automerge::{ActorId, Automerge, ObjId, ObjType, ROOT, ReadDoc, ScalarValue, Value};
use std::collections::BTreeMap;

/// Current document schema version. Schema 2 adds the life-cycle group and its services to
/// visits; [`upgrade`] brings older documents up to it.
pub const SCHEMA_VERSION: i64 = 2;
/// The genesis change is frozen at schema 1 forever: it must be byte-identical on every
/// phone, whatever app version created the document, or phones' visits would not merge.
const GENESIS_SCHEMA: i64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum DocError {
    #[error("automerge: {0}")]
    Automerge(#[from] automerge::AutomergeError),
    #[error("document layout: {0}")]
    Layout(String),
    #[error("no visit {0} in this session")]
    UnknownVisit(VisitId),
    #[error("invalid value: {0}")]
    Invalid(String),
    #[error("document is a {actual}, expected a {expected}")]
    WrongKind { expected: DocKind, actual: DocKind },
}

/// What a document holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DocKind {
    /// One posyandu day: visits keyed by visit id.
    Session,
    /// The people a posyandu serves, keyed by person id.
    Registry,
}

impl DocKind {
    pub fn code(self) -> &'static str {
        match self {
            DocKind::Session => "session",
            DocKind::Registry => "registry",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "session" => Some(DocKind::Session),
            "registry" => Some(DocKind::Registry),
            _ => None,
        }
    }
    /// The root key of the map holding the records: `visits` or `people`.
    pub fn collection_key(self) -> &'static str {
        match self {
            DocKind::Session => "visits",
            DocKind::Registry => "people",
        }
    }
}

impl std::fmt::Display for DocKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The identity of a document: what the genesis change writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DocMeta {
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    /// The session day; `None` for registries.
    pub date: Option<time::Date>,
}

impl DocMeta {
    pub fn session(posyandu: PosyanduId, date: time::Date) -> Self {
        Self { kind: DocKind::Session, posyandu, date: Some(date) }
    }
    pub fn registry(posyandu: PosyanduId) -> Self {
        Self { kind: DocKind::Registry, posyandu, date: None }
    }
    /// The document id this identity names.
    pub fn doc_id(&self) -> DocId {
        match (self.kind, self.date) {
            (DocKind::Session, Some(d)) => DocId::for_session(&self.posyandu, d),
            _ => DocId::for_registry(&self.posyandu),
        }
    }
}

fn genesis_actor(doc_id: DocId) -> ActorId {
    // Prefix keeps genesis actors apart from device actors (which are 16 bytes).
    let mut bytes = b"posync-genesis:".to_vec();
    bytes.extend_from_slice(doc_id.as_bytes());
    ActorId::from(bytes)
}

/// The actor of edits the server makes itself (conflict resolutions, merges of duplicate
/// people). Distinct from every device actor: device actors are 16 bytes, this is longer and
/// carries the server instance's name, so history shows who decided.
pub fn server_actor(instance: &str) -> ActorId {
    let mut bytes = b"posync-server:".to_vec();
    bytes.extend_from_slice(instance.as_bytes());
    ActorId::from(bytes)
}

/// A fresh document holding only the deterministic genesis change, with `actor` set for the
/// edits that follow.
pub fn genesis(meta: &DocMeta, actor: ActorId) -> Result<Automerge, DocError> {
    let mut doc = Automerge::new().with_actor(genesis_actor(meta.doc_id()));
    let mut tx = doc.transaction();
    tx.put(ROOT, "schema", GENESIS_SCHEMA)?;
    tx.put(ROOT, "kind", meta.kind.code())?;
    tx.put(ROOT, "posyandu", meta.posyandu.as_str())?;
    if let Some(d) = meta.date {
        tx.put(ROOT, "date", format_date(d))?;
    }
    tx.put_object(ROOT, meta.kind.collection_key(), ObjType::Map)?;
    tx.commit_with(CommitOptions::default().with_time(0));
    doc.set_actor(actor);
    Ok(doc)
}

/// The genesis change of a document as raw Automerge bytes: what every replica writes first,
/// byte for byte (`proto/vectors/genesis-*.bin` freezes them).
pub fn genesis_change(meta: &DocMeta) -> Result<Vec<u8>, DocError> {
    let am = genesis(meta, genesis_actor(meta.doc_id()))?;
    am.get_changes(&[])
        .first()
        .map(|c| c.raw_bytes().to_vec())
        .ok_or_else(|| DocError::Layout("genesis wrote no change".into()))
}

/// The hash of a document's genesis change: the only change a device may push that it did not
/// author itself.
pub fn genesis_hash(meta: &DocMeta) -> Result<automerge::ChangeHash, DocError> {
    let am = genesis(meta, genesis_actor(meta.doc_id()))?;
    am.get_heads().first().copied().ok_or_else(|| DocError::Layout("genesis wrote no change".into()))
}

/// Whether `actor` is the genesis actor of the document `meta` names.
pub fn is_genesis_actor(meta: &DocMeta, actor: &ActorId) -> bool {
    *actor == genesis_actor(meta.doc_id())
}

/// Whether `actor` is a server's (resolutions, merges of duplicates).
pub fn is_server_actor(actor: &ActorId) -> bool {
    actor.to_bytes().starts_with(b"posync-server:")
}

/// The schema a document is at: the highest value of `schema` (replicas that upgraded
/// concurrently each wrote it; they agree or one is newer).
pub fn schema_of(doc: &Automerge) -> Result<i64, DocError> {
    let all = doc.get_all(ROOT, "schema")?;
    Ok(all
        .iter()
        .filter_map(|(v, _)| match scalar_to_field_value(v) {
            Some(FieldValue::Int(i)) => Some(i),
            _ => None,
        })
        .max()
        .unwrap_or(GENESIS_SCHEMA))
}

/// Bring a document up to [`SCHEMA_VERSION`], as one change; `false` if it already was.
///
/// Deterministic and idempotent: it only adds what the newer schema requires and the
/// document lacks (a visit's `group`, derived from birth date and session date), computed
/// from the document alone, so any replica that upgrades writes the same values, and a
/// second upgrade writes nothing. Replicas upgrading concurrently write equal values, which
/// [`crate::conflicts`] does not report as conflicts. Nothing is ever removed: keys this
/// build does not know (from a newer app) are left as they are.
pub fn upgrade(doc: &mut Automerge, now: i64) -> Result<bool, DocError> {
    let mut tx = doc.transaction();
    let upgraded = upgrade_in(&mut tx)?;
    if upgraded {
        tx.commit_with(commit_opts(now));
    } else {
        tx.rollback();
    }
    Ok(upgraded)
}

/// The writes of [`upgrade`], inside a caller's transaction: every edit starts with them, so
/// the first edit by a newer app carries the upgrade in the same change.
fn upgrade_in(tx: &mut automerge::transaction::Transaction<'_>) -> Result<bool, DocError> {
    let all = tx.get_all(ROOT, "schema")?;
    let schema = all
        .iter()
        .filter_map(|(v, _)| match scalar_to_field_value(v) {
            Some(FieldValue::Int(i)) => Some(i),
            _ => None,
        })
        .max()
        .unwrap_or(GENESIS_SCHEMA);
    if schema >= SCHEMA_VERSION {
        return Ok(false);
    }
    let kind = match tx.get(ROOT, "kind")?.and_then(|(v, _)| scalar_to_field_value(&v)) {
        Some(FieldValue::Text(k)) => DocKind::parse(&k),
        _ => None,
    };
    let date = match tx.get(ROOT, "date")?.and_then(|(v, _)| scalar_to_field_value(&v)) {
        Some(FieldValue::Text(d)) => parse_date(&d),
        _ => None,
    };
    if let (Some(DocKind::Session), Some(date)) = (kind, date)
        && let Some((Value::Object(ObjType::Map), visits)) = tx.get(ROOT, DocKind::Session.collection_key())?
    {
        let mut missing_group = Vec::new();
        for key in tx.keys(&visits) {
            let Some((Value::Object(ObjType::Map), v)) = tx.get(&visits, key.as_str())? else { continue };
            if tx.get(&v, Field::Group.key())?.is_some() {
                continue;
            }
            let birth = match tx.get(&v, Field::BirthDate.key())?.and_then(|(b, _)| scalar_to_field_value(&b)) {
                Some(FieldValue::Text(b)) => parse_date(&b),
                _ => None,
            };
            if let Some(birth) = birth {
                missing_group.push((v, LifeGroup::by_age(birth, date)));
            }
        }
        for (v, group) in missing_group {
            tx.put(&v, Field::Group.key(), group.code())?;
        }
    }
    tx.put(ROOT, "schema", SCHEMA_VERSION)?;
    Ok(true)
}

/// Read the identity a document claims. The server trusts its own metadata over this.
pub fn read_meta(doc: &Automerge) -> Result<DocMeta, DocError> {
    let kind = get_str(doc, &ROOT, "kind")?
        .and_then(|s| DocKind::parse(&s))
        .ok_or_else(|| DocError::Layout("missing or unknown kind".into()))?;
    let posyandu = get_str(doc, &ROOT, "posyandu")?
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| DocError::Layout("missing or invalid posyandu".into()))?;
    let date = match kind {
        DocKind::Session => Some(
            get_str(doc, &ROOT, "date")?
                .and_then(|s| parse_date(&s))
                .ok_or_else(|| DocError::Layout("missing or invalid date".into()))?,
        ),
        DocKind::Registry => None,
    };
    Ok(DocMeta { kind, posyandu, date })
}

fn collection(doc: &Automerge, kind: DocKind) -> Result<ObjId, DocError> {
    let actual = read_meta(doc)?.kind;
    if actual != kind {
        return Err(DocError::WrongKind { expected: kind, actual });
    }
    match doc.get(ROOT, kind.collection_key())? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(DocError::Layout(format!("missing {} map", kind.collection_key()))),
    }
}

fn commit_opts(now: i64) -> CommitOptions {
    CommitOptions::default().with_time(now.saturating_mul(1000))
}

/// Add a visit to a session document, as one change.
pub fn record_visit(doc: &mut Automerge, visit: &Visit, now: i64) -> Result<(), DocError> {
    let visits = collection(doc, DocKind::Session)?;
    validate_visit(visit)?;
    check_unix_seconds("recorded_at", visit.recorded_at).map_err(DocError::Invalid)?;
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    let v = tx.put_object(&visits, visit.visit_id.to_string(), ObjType::Map)?;
    tx.put(&v, "person_id", visit.person_id.to_string())?;
    tx.put(&v, "recorded_by", visit.recorded_by.to_string())?;
    tx.put(&v, "recorded_at", ScalarValue::Timestamp(visit.recorded_at))?;
    for field in Field::ALL {
        if let Some(value) = visit_field(visit, field) {
            put_field(&mut tx, &v, field, &value)?;
        }
    }
    let imm = tx.put_object(&v, "immunisations", ObjType::Map)?;
    for (antigen, date) in &visit.immunisations {
        tx.put(&imm, antigen.as_str(), format_date(*date))?;
    }
    tx.commit_with(commit_opts(now));
    Ok(())
}

/// Set one field of one visit, as one change. Only this key is written, so a concurrent edit
/// of another field merges cleanly and a concurrent edit of the same field is a conflict.
pub fn set_visit_field(
    doc: &mut Automerge,
    visit_id: VisitId,
    field: Field,
    value: &FieldValue,
    now: i64,
) -> Result<(), DocError> {
    field.validate(value).map_err(DocError::Invalid)?;
    let v = visit_obj(doc, visit_id)?;
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    put_field(&mut tx, &v, field, value)?;
    tx.commit_with(commit_opts(now));
    Ok(())
}

/// Record an immunisation given at a visit. Different antigens added concurrently all merge.
pub fn give_immunisation(
    doc: &mut Automerge,
    visit_id: VisitId,
    antigen: &str,
    date: time::Date,
    now: i64,
) -> Result<(), DocError> {
    if antigen.is_empty() || antigen.len() > 32 {
        return Err(DocError::Invalid(format!("antigen code {antigen:?} must be 1-32 chars")));
    }
    let v = visit_obj(doc, visit_id)?;
    let imm = match doc.get(&v, "immunisations")? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(DocError::Layout("visit without immunisations map".into())),
    };
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    tx.put(&imm, antigen, format_date(date))?;
    tx.commit_with(commit_opts(now));
    Ok(())
}

fn visit_obj(doc: &Automerge, visit_id: VisitId) -> Result<ObjId, DocError> {
    let visits = collection(doc, DocKind::Session)?;
    match doc.get(&visits, visit_id.to_string())? {
        Some((Value::Object(ObjType::Map), id)) => Ok(id),
        _ => Err(DocError::UnknownVisit(visit_id)),
    }
}

fn validate_visit(visit: &Visit) -> Result<(), DocError> {
    for field in Field::ALL {
        if let Some(value) = visit_field(visit, field) {
            field.validate(&value).map_err(DocError::Invalid)?;
        }
    }
    Ok(())
}

fn visit_field(visit: &Visit, field: Field) -> Option<FieldValue> {
    let int = |v: Option<i64>| v.map(FieldValue::Int);
    match field {
        Field::Name => Some(FieldValue::Text(visit.name.clone())),
        Field::Sex => Some(FieldValue::Text(visit.sex.code().into())),
        Field::BirthDate => Some(FieldValue::Text(format_date(visit.birth_date))),
        Field::WeightG => int(visit.weight_g),
        Field::LengthMm => int(visit.length_mm),
        Field::Lying => visit.lying.map(FieldValue::Bool),
        Field::HeadCircMm => int(visit.head_circ_mm),
        Field::MuacMm => int(visit.muac_mm),
        Field::VitaminA => visit.vitamin_a.map(|v| FieldValue::Text(v.code().into())),
        Field::Notes => (!visit.notes.is_empty()).then(|| FieldValue::Text(visit.notes.clone())),
        Field::Group => Some(FieldValue::Text(visit.group.code().into())),
        other => visit.services.get(&other).cloned(),
    }
}

fn put_field<T: Transactable>(tx: &mut T, obj: &ObjId, field: Field, value: &FieldValue) -> Result<(), DocError> {
    put_field_key(tx, obj, field.key(), value)
}

fn put_field_key<T: Transactable>(tx: &mut T, obj: &ObjId, key: &str, value: &FieldValue) -> Result<(), DocError> {
    let scalar = match value {
        FieldValue::Null => ScalarValue::Null,
        FieldValue::Bool(b) => ScalarValue::Boolean(*b),
        FieldValue::Int(i) => ScalarValue::Int(*i),
        FieldValue::Text(s) => ScalarValue::Str(s.as_str().into()),
    };
    tx.put(obj, key, scalar)?;
    Ok(())
}

/// Convert a stored scalar to a field value; `None` for object values.
pub fn scalar_to_field_value(value: &Value<'_>) -> Option<FieldValue> {
    match value {
        Value::Scalar(s) => Some(match s.as_ref() {
            ScalarValue::Null => FieldValue::Null,
            ScalarValue::Boolean(b) => FieldValue::Bool(*b),
            ScalarValue::Int(i) | ScalarValue::Timestamp(i) => FieldValue::Int(*i),
            ScalarValue::Uint(u) => FieldValue::Int(i64::try_from(*u).unwrap_or(i64::MAX)),
            ScalarValue::F64(f) => FieldValue::Int(f.round() as i64),
            ScalarValue::Str(s) => FieldValue::Text(s.to_string()),
            _ => FieldValue::Null,
        }),
        Value::Object(_) => None,
    }
}

fn get_scalar(doc: &Automerge, obj: &ObjId, key: &str) -> Result<Option<FieldValue>, DocError> {
    Ok(doc.get(obj, key)?.and_then(|(v, _)| scalar_to_field_value(&v)))
}

fn get_str(doc: &Automerge, obj: &ObjId, key: &str) -> Result<Option<String>, DocError> {
    Ok(match get_scalar(doc, obj, key)? {
        Some(FieldValue::Text(s)) => Some(s),
        _ => None,
    })
}

fn get_int(doc: &Automerge, obj: &ObjId, key: &str) -> Result<Option<i64>, DocError> {
    Ok(match get_scalar(doc, obj, key)? {
        Some(FieldValue::Int(i)) => Some(i),
        _ => None,
    })
}

/// The entries of one map object, read in one pass. A `get` per key searches the document
/// each time; a 240-visit session holds ~8,000 fields, read on every merge and capture.
struct Fields {
    values: std::collections::HashMap<String, Value<'static>>,
    /// Ids of the map-valued entries (the nested objects).
    maps: std::collections::HashMap<String, ObjId>,
    /// The entries conflict discovery looks at, in key order.
    flagged: Vec<crate::conflict::Flagged>,
}

impl Fields {
    fn read(doc: &Automerge, obj: &ObjId) -> Self {
        let mut values = std::collections::HashMap::new();
        let mut maps = std::collections::HashMap::new();
        let mut flagged = Vec::new();
        for item in doc.map_range(obj, ..) {
            let map = matches!(item.value, automerge::ValueRef::Object(ObjType::Map));
            if map {
                maps.insert(item.key.to_string(), item.id());
            }
            if map || item.conflict {
                flagged.push(crate::conflict::Flagged {
                    key: item.key.to_string(),
                    id: item.id(),
                    conflict: item.conflict,
                    map,
                });
            }
            values.insert(item.key.into_owned(), item.value.into_value());
        }
        Self { values, maps, flagged }
    }

    fn scalar(&self, key: &str) -> Option<FieldValue> {
        self.values.get(key).and_then(scalar_to_field_value)
    }

    fn str(&self, key: &str) -> Option<String> {
        match self.scalar(key) {
            Some(FieldValue::Text(s)) => Some(s),
            _ => None,
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        match self.scalar(key) {
            Some(FieldValue::Int(i)) => Some(i),
            _ => None,
        }
    }

    fn uuid<T: std::str::FromStr>(&self, key: &str) -> Result<T, DocError> {
        self.str(key).and_then(|s| s.parse().ok()).ok_or_else(|| DocError::Layout(format!("missing or invalid {key}")))
    }
}

/// The records of the document's collection that the changes after `before` reach (each
/// record is one map under `visits` or `people`), read from those changes' operations, so
/// the cost follows the change and a write to a losing conflict value (invisible in a diff of
/// winning values) still counts. `None` when that cannot be narrowed down (a new document,
/// a change outside the collection): project everything.
pub fn touched_records(am: &Automerge, kind: DocKind, before: &crate::Heads) -> Option<Vec<String>> {
    if before.is_empty() {
        return None;
    }
    touched_records_of(am, kind, &NewChanges::after(am, before.as_slice()))
}

/// The changes a merge added to a document, collected and decoded once. Automerge rebuilds a
/// change from its operation columns each time one is asked for (`get_changes`), which
/// costs as much as the change is large: a merge that checks, narrows and stores its new
/// changes asks once and shares them.
pub struct NewChanges {
    changes: Vec<automerge::Change>,
    decoded: Vec<automerge::legacy::Change>,
}

impl NewChanges {
    /// The changes of `am` after `before` (everything when `before` is empty).
    pub fn after(am: &Automerge, before: &[automerge::ChangeHash]) -> Self {
        let changes = am.get_changes(before);
        let decoded = changes.iter().map(automerge::Change::decode).collect();
        Self { changes, decoded }
    }

    /// `changes`, already at hand (parsed from what a device sent), decoded once.
    pub fn of(changes: Vec<automerge::Change>) -> Self {
        let decoded = changes.iter().map(automerge::Change::decode).collect();
        Self { changes, decoded }
    }

    /// The changes as Automerge's change chunks, one after another (what
    /// `Automerge::save_after(before)` returns), for storing or sending.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.changes.iter().map(|c| c.raw_bytes().len()).sum());
        for c in &self.changes {
            out.extend_from_slice(c.raw_bytes());
        }
        out
    }

    /// Each change's author and hash.
    pub fn authors(&self) -> impl Iterator<Item = (&ActorId, automerge::ChangeHash)> {
        self.changes.iter().map(|c| (c.actor_id(), c.hash()))
    }

    fn ops(&self) -> impl Iterator<Item = &automerge::legacy::Op> {
        self.decoded.iter().flat_map(|c| c.operations.iter())
    }
}

/// [`touched_records`] of changes already collected.
pub fn touched_records_of(am: &Automerge, kind: DocKind, new: &NewChanges) -> Option<Vec<String>> {
    use automerge::legacy::{Key, ObjectId};
    let coll = kind.collection_key();
    let coll_id = match am.get(automerge::ROOT, coll) {
        Ok(Some((automerge::Value::Object(_), id))) => id,
        _ => return None,
    };
    let mut ids = std::collections::BTreeSet::new();
    // Each object written is looked up once.
    let mut record_of: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    for op in new.ops() {
        let obj = match &op.obj {
            ObjectId::Id(obj) => obj,
            // Every phone's first capture raises the document's schema version at the root
            // (the genesis change is frozen at the first version): no record reads it, so it
            // must not turn the merge of a phone's first visits into projecting every record.
            ObjectId::Root if matches!(&op.key, Key::Map(k) if k == "schema") => continue,
            ObjectId::Root => return None,
        };
        let obj = obj.to_string();
        let record = match record_of.get(&obj) {
            Some(r) => r.clone(),
            None => {
                let exid = am.import_obj(&obj).ok()?;
                let record = if exid == coll_id {
                    // A record put into the collection itself.
                    match &op.key {
                        Key::Map(k) => k.to_string(),
                        Key::Seq(_) => return None,
                    }
                } else {
                    record_holding(am, &exid, &coll_id)?
                };
                if exid != coll_id {
                    record_of.insert(obj, record.clone());
                }
                record
            }
        };
        ids.insert(record);
    }
    Some(ids.into_iter().collect())
}

/// Whether a replica holding `known` (heads this document has) lacks at least half of the
/// document's operations, read from the change graph without rebuilding any change. Such a
/// replica is sent the document whole: a delta would be larger (changes travel one by one
/// with raw columns; the document saved whole compresses its columns across all of them).
pub fn lacks_most(am: &Automerge, known: &[automerge::ChangeHash]) -> bool {
    let total = am.stats().num_ops;
    let lacking: u64 = am.get_changes_meta(known).iter().map(|c| c.max_op.saturating_sub(c.start_op) + 1).sum();
    total > 0 && lacking.saturating_mul(2) >= total
}

/// The key, in the collection, of the record whose subtree holds `obj`.
fn record_holding(am: &Automerge, obj: &automerge::ObjId, coll: &automerge::ObjId) -> Option<String> {
    for parent in am.parents(obj).ok()? {
        if &parent.obj == coll {
            return match parent.prop {
                automerge::Prop::Map(k) => Some(k),
                automerge::Prop::Seq(_) => None,
            };
        }
    }
    // Walked up to the root without passing the collection: not in a record.
    None
}

/// Every visit in a session, with the winning value of each field, ordered by visit id.
pub fn visits(doc: &Automerge) -> Result<Vec<Visit>, DocError> {
    let visits = collection(doc, DocKind::Session)?;
    let mut out = Vec::new();
    let mut date = None;
    for item in doc.map_range(&visits, ..) {
        if !matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
            continue;
        }
        let v = item.id();
        out.push(read_visit(doc, &item.key, &Fields::read(doc, &v), &mut date)?);
    }
    Ok(out)
}

/// One visit of a session, if it holds it: what a capture re-projects, instead of every
/// visit of the session.
pub fn visit(doc: &Automerge, id: VisitId) -> Result<Option<Visit>, DocError> {
    RecordReader::of(doc)?.visit(id)
}

/// Reads single records of one document, its metadata and collection looked up once:
/// a merge that touched twenty visits reads the document's root once, not sixty times.
pub struct RecordReader<'a> {
    doc: &'a Automerge,
    kind: DocKind,
    coll: ObjId,
    date: Option<time::Date>,
}

impl<'a> RecordReader<'a> {
    pub fn of(doc: &'a Automerge) -> Result<Self, DocError> {
        let meta = read_meta(doc)?;
        let coll = match doc.get(ROOT, meta.kind.collection_key())? {
            Some((Value::Object(ObjType::Map), id)) => id,
            _ => return Err(DocError::Layout(format!("missing {} map", meta.kind.collection_key()))),
        };
        Ok(Self { doc, kind: meta.kind, coll, date: meta.date })
    }

    fn record(&self, key: &str, kind: DocKind) -> Result<Option<ObjId>, DocError> {
        if self.kind != kind {
            return Err(DocError::WrongKind { expected: kind, actual: self.kind });
        }
        Ok(match self.doc.get(&self.coll, key)? {
            Some((Value::Object(ObjType::Map), id)) => Some(id),
            _ => None,
        })
    }

    /// The visit `id`, if this session holds it.
    pub fn visit(&self, id: VisitId) -> Result<Option<Visit>, DocError> {
        let key = id.to_string();
        let Some(v) = self.record(&key, DocKind::Session)? else { return Ok(None) };
        let mut date = self.date;
        read_visit(self.doc, &key, &Fields::read(self.doc, &v), &mut date).map(Some)
    }

    /// The visit `id` and its conflicted fields (what [`Self::conflicts`] gives), reading its
    /// map once for both.
    pub fn visit_with_conflicts(&self, id: VisitId) -> Result<Option<(Visit, Vec<crate::FieldConflict>)>, DocError> {
        let key = id.to_string();
        let Some(v) = self.record(&key, DocKind::Session)? else { return Ok(None) };
        let fields = Fields::read(self.doc, &v);
        let mut date = self.date;
        let visit = read_visit(self.doc, &key, &fields, &mut date)?;
        let mut conflicts = Vec::new();
        crate::conflict::collect_flagged(
            self.doc,
            &v,
            self.kind.collection_key(),
            &key,
            &fields.flagged,
            &mut conflicts,
        )?;
        Ok(Some((visit, conflicts)))
    }

    /// The person `id`, if this registry holds them.
    pub fn person(&self, id: PersonId) -> Result<Option<Person>, DocError> {
        let key = id.to_string();
        let Some(p) = self.record(&key, DocKind::Registry)? else { return Ok(None) };
        read_person(self.doc, &key, &p).map(Some)
    }

    /// The conflicting fields of the record `record_id` (a visit or person id).
    pub fn conflicts(&self, record_id: &str) -> Result<Vec<crate::FieldConflict>, DocError> {
        crate::conflict::conflicts_in(self.doc, &self.coll, self.kind.collection_key(), record_id)
    }
}

/// The session's date; visits of a session take their age from it.
fn session_date(doc: &Automerge) -> Result<time::Date, DocError> {
    read_meta(doc)?.date.ok_or_else(|| DocError::Layout("session without date".into()))
}

fn read_services(f: &Fields) -> BTreeMap<Field, FieldValue> {
    let mut out = BTreeMap::new();
    for field in Field::SERVICES {
        if let Some(value) = f.scalar(field.key())
            && value != FieldValue::Null
        {
            out.insert(field, value);
        }
    }
    out
}

/// One visit from its fields; `date` caches the session's date, read only for schema 1
/// visits, which carry no group.
fn read_visit(doc: &Automerge, key: &str, f: &Fields, date: &mut Option<time::Date>) -> Result<Visit, DocError> {
    let visit_id: VisitId = key.parse().map_err(|_| DocError::Layout(format!("visit key {key:?}")))?;
    let birth_date = f
        .str(Field::BirthDate.key())
        .and_then(|s| parse_date(&s))
        .ok_or_else(|| DocError::Layout("visit without birth_date".into()))?;
    let mut immunisations = BTreeMap::new();
    if let Some(imm) = f.maps.get("immunisations") {
        let given = Fields::read(doc, imm);
        for (antigen, value) in &given.values {
            if let Some(d) = scalar_to_field_value(value).and_then(|v| match v {
                FieldValue::Text(s) => parse_date(&s),
                _ => None,
            }) {
                immunisations.insert(antigen.clone(), d);
            }
        }
    }
    let group = match f.str(Field::Group.key()).and_then(|s| LifeGroup::parse(&s)) {
        Some(g) => g,
        // Schema 1 visits carry no group: read them as their group by age.
        None => {
            let on = match *date {
                Some(d) => d,
                None => *date.insert(session_date(doc)?),
            };
            LifeGroup::by_age(birth_date, on)
        }
    };
    Ok(Visit {
        visit_id,
        person_id: f.uuid::<PersonId>("person_id")?,
        name: f.str(Field::Name.key()).unwrap_or_default(),
        sex: f
            .str(Field::Sex.key())
            .and_then(|s| Sex::parse(&s))
            .ok_or_else(|| DocError::Layout("visit without sex".into()))?,
        birth_date,
        weight_g: f.int(Field::WeightG.key()),
        length_mm: f.int(Field::LengthMm.key()),
        lying: match f.scalar(Field::Lying.key()) {
            Some(FieldValue::Bool(b)) => Some(b),
            _ => None,
        },
        head_circ_mm: f.int(Field::HeadCircMm.key()),
        muac_mm: f.int(Field::MuacMm.key()),
        immunisations,
        vitamin_a: f.str(Field::VitaminA.key()).and_then(|s| VitaminA::parse(&s)),
        notes: f.str(Field::Notes.key()).unwrap_or_default(),
        group,
        services: read_services(f),
        recorded_by: f.uuid::<DeviceId>("recorded_by")?,
        recorded_at: f.int("recorded_at").unwrap_or_default(),
    })
}

/// Add a person to a registry document, as one change.
pub fn register_person(doc: &mut Automerge, person: &Person, now: i64) -> Result<(), DocError> {
    let people = collection(doc, DocKind::Registry)?;
    Field::Name.validate(&FieldValue::Text(person.name.clone())).map_err(DocError::Invalid)?;
    let today = time::OffsetDateTime::from_unix_timestamp(now).map_or(time::Date::MAX, |t| t.date());
    person.check(today).map_err(DocError::Invalid)?;
    check_unix_seconds("registered_at", person.registered_at).map_err(DocError::Invalid)?;
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    let p = tx.put_object(&people, person.person_id.to_string(), ObjType::Map)?;
    tx.put(&p, "name", person.name.as_str())?;
    tx.put(&p, "sex", person.sex.code())?;
    tx.put(&p, "birth_date", format_date(person.birth_date))?;
    tx.put(&p, "mother_name", person.mother_name.as_str())?;
    for (key, value) in [("nik", &person.nik), ("mother_nik", &person.mother_nik)] {
        if let Some(v) = value {
            tx.put(&p, key, v.as_str())?;
        }
    }
    if !person.address.is_empty() {
        tx.put(&p, "address", person.address.as_str())?;
    }
    for (key, value) in [("rt", person.rt), ("rw", person.rw)] {
        if let Some(v) = value {
            tx.put(&p, key, v)?;
        }
    }
    tx.put(&p, "pregnant", person.pregnant)?;
    tx.put(&p, "kia_book", person.kia_book)?;
    tx.put(&p, "registered_by", person.registered_by.to_string())?;
    tx.put(&p, "registered_at", ScalarValue::Timestamp(person.registered_at))?;
    tx.commit_with(commit_opts(now));
    Ok(())
}

/// Person keys a decision may set, with how their values are checked.
const PERSON_KEYS: [&str; 11] =
    ["name", "sex", "birth_date", "mother_name", "nik", "mother_nik", "address", "rt", "rw", "pregnant", "kia_book"];

/// Set one field of a registered person, as one change (a conflict resolution).
pub fn set_person_field(
    doc: &mut Automerge,
    person: PersonId,
    key: &str,
    value: &FieldValue,
    now: i64,
) -> Result<(), DocError> {
    if !PERSON_KEYS.contains(&key) {
        return Err(DocError::Invalid(format!("{key:?} is not a person field")));
    }
    let people = collection(doc, DocKind::Registry)?;
    let p = match doc.get(&people, person.to_string())? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(DocError::Invalid(format!("person {person} is not in this registry"))),
    };
    // Check the value by the rules of a registration with it.
    let mut check = people_of(doc, &p, person)?;
    match (key, value) {
        ("name", FieldValue::Text(v)) => check.name = v.clone(),
        ("mother_name", FieldValue::Text(v)) => check.mother_name = v.clone(),
        ("address", FieldValue::Text(v)) => check.address = v.clone(),
        ("sex", FieldValue::Text(v)) => {
            check.sex = Sex::parse(v).ok_or_else(|| DocError::Invalid("sex must be F or M".into()))?
        }
        ("birth_date", FieldValue::Text(v)) => {
            check.birth_date = parse_date(v).ok_or_else(|| DocError::Invalid("birth_date must be YYYY-MM-DD".into()))?
        }
        ("nik", FieldValue::Text(v)) => check.nik = Some(v.clone()),
        ("mother_nik", FieldValue::Text(v)) => check.mother_nik = Some(v.clone()),
        ("rt", FieldValue::Int(v)) => check.rt = Some(*v),
        ("rw", FieldValue::Int(v)) => check.rw = Some(*v),
        ("pregnant" | "kia_book", FieldValue::Bool(_)) => {}
        (k, v) => return Err(DocError::Invalid(format!("{k} cannot be {v}"))),
    }
    check.check(time::Date::MAX).map_err(DocError::Invalid)?;
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    put_field_key(&mut tx, &p, key, value)?;
    tx.commit_with(commit_opts(now));
    Ok(())
}

fn people_of(doc: &Automerge, p: &ObjId, id: PersonId) -> Result<Person, DocError> {
    Ok(Person {
        person_id: id,
        name: get_str(doc, p, "name")?.unwrap_or_default(),
        sex: get_str(doc, p, "sex")?.and_then(|s| Sex::parse(&s)).unwrap_or(Sex::Female),
        birth_date: get_str(doc, p, "birth_date")?.and_then(|s| parse_date(&s)).unwrap_or(time::Date::MIN),
        mother_name: get_str(doc, p, "mother_name")?.unwrap_or_default(),
        nik: get_str(doc, p, "nik")?,
        mother_nik: get_str(doc, p, "mother_nik")?,
        address: get_str(doc, p, "address")?.unwrap_or_default(),
        rt: get_int(doc, p, "rt")?,
        rw: get_int(doc, p, "rw")?,
        pregnant: false,
        kia_book: false,
        merged_into: None,
        registered_by: DeviceId::from_bytes([0; 16]),
        registered_at: 0,
    })
}

/// Mark `duplicate` as the same person as `keep` (an admin's decision on a semantic
/// duplicate). Nothing is removed: the duplicate stays in the registry, pointing at the kept
/// person, and every visit of either still exists.
pub fn merge_person(doc: &mut Automerge, duplicate: PersonId, keep: PersonId, now: i64) -> Result<(), DocError> {
    let people = collection(doc, DocKind::Registry)?;
    let p = match doc.get(&people, duplicate.to_string())? {
        Some((Value::Object(ObjType::Map), id)) => id,
        _ => return Err(DocError::Invalid(format!("person {duplicate} is not in this registry"))),
    };
    let mut tx = doc.transaction();
    upgrade_in(&mut tx)?;
    tx.put(&p, "merged_into", keep.to_string())?;
    tx.commit_with(commit_opts(now));
    Ok(())
}

/// Whom a person was merged into: only a server's decision counts (an admin's merge of
/// duplicates). A device cannot merge people: its value, if any, is ignored, so no kader can
/// fold a child of another puskesmas into someone else and change that puskesmas's figures.
fn merged_into(doc: &Automerge, p: &ObjId) -> Result<Option<PersonId>, DocError> {
    Ok(match doc.get(p, "merged_into")? {
        Some((Value::Scalar(v), automerge::ObjId::Id(_, actor, _))) if is_server_actor(&actor) => match v.as_ref() {
            ScalarValue::Str(s) => s.parse().ok(),
            _ => None,
        },
        _ => None,
    })
}

/// How a key's value must be typed wherever it appears in a posyandu document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyType {
    Int,
    Text,
    Bool,
    /// Written only by the server.
    ServerOnly,
}

fn key_type(key: &str) -> Option<KeyType> {
    use crate::record::FieldKind as K;
    if let Some(field) = Field::from_key(key) {
        return Some(match field.kind() {
            K::Int { .. } => KeyType::Int,
            K::Bool => KeyType::Bool,
            K::Text { .. } | K::Date | K::Sex | K::VitaminA | K::Group => KeyType::Text,
        });
    }
    Some(match key {
        "schema" | "rt" | "rw" | "recorded_at" | "registered_at" => KeyType::Int,
        "kind" | "posyandu" | "date" | "person_id" | "recorded_by" | "registered_by" | "mother_name" | "nik"
        | "mother_nik" | "address" => KeyType::Text,
        "pregnant" | "kia_book" => KeyType::Bool,
        "merged_into" => KeyType::ServerOnly,
        _ => return None,
    })
}

/// A value a device's change writes that posync refuses: the key, and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {reason}")]
pub struct BadValue {
    pub key: String,
    pub reason: String,
}

/// Check every value the changes after `before` write: each key posync knows must hold its
/// type (integers in clinical units, never floats; text as a scalar string, never a text,
/// list or map object; booleans), no float anywhere, no key only the server writes, and
/// timestamps in Unix seconds (not milliseconds). Returns the offending key. Ranges and
/// dates are not checked here: a record with an impossible value is kept and marked invalid
/// instead.
pub fn check_new_values(doc: &Automerge, before: &[automerge::ChangeHash]) -> Result<(), String> {
    check_new_values_why(doc, before).map_err(|bad| bad.key)
}

/// [`check_new_values`], saying why the value is refused.
pub fn check_new_values_why(doc: &Automerge, before: &[automerge::ChangeHash]) -> Result<(), BadValue> {
    check_values_of(&NewChanges::after(doc, before))
}

/// [`check_new_values_why`] of changes already collected.
pub fn check_values_of(new: &NewChanges) -> Result<(), BadValue> {
    use automerge::legacy::{Key, OpType};
    let bad = |key: &str, reason: String| BadValue { key: key.to_owned(), reason };
    for op in new.ops() {
        let Key::Map(key) = &op.key else { continue };
        let value = match &op.action {
            OpType::Put(value) => value,
            // An object (a collaborative text, a list, a map) where posync keeps a scalar.
            OpType::Make(obj) if key_type(key).is_some() => {
                return Err(bad(key, format!("must be a scalar value, not a {obj:?} object")));
            }
            _ => continue,
        };
        if key_type(key) == Some(KeyType::ServerOnly) {
            return Err(bad(key, "is written only by the server".into()));
        }
        let ok = match (key_type(key), value) {
            (_, ScalarValue::F64(_)) | (Some(KeyType::ServerOnly), _) => false,
            (_, ScalarValue::Null) | (None, _) => true,
            (Some(KeyType::Int), v) => {
                matches!(v, ScalarValue::Int(_) | ScalarValue::Uint(_) | ScalarValue::Timestamp(_))
            }
            (Some(KeyType::Text), v) => matches!(v, ScalarValue::Str(_)),
            (Some(KeyType::Bool), v) => matches!(v, ScalarValue::Boolean(_)),
        };
        if !ok {
            return Err(bad(key, format!("wrong type for this key: {}", scalar_type_name(value))));
        }
        if TIMESTAMP_KEYS.contains(&key.as_str()) {
            let seconds = match value {
                ScalarValue::Int(i) | ScalarValue::Timestamp(i) => *i,
                ScalarValue::Uint(u) => i64::try_from(*u).unwrap_or(i64::MAX),
                _ => continue,
            };
            check_unix_seconds(key, seconds).map_err(|reason| bad(key, reason))?;
        }
    }
    Ok(())
}

/// Keys holding Unix seconds.
const TIMESTAMP_KEYS: [&str; 2] = ["recorded_at", "registered_at"];

fn scalar_type_name(value: &ScalarValue) -> &'static str {
    match value {
        ScalarValue::F64(_) => "a float",
        ScalarValue::Int(_) | ScalarValue::Uint(_) => "an integer",
        ScalarValue::Timestamp(_) => "a timestamp",
        ScalarValue::Str(_) => "a string",
        ScalarValue::Boolean(_) => "a boolean",
        ScalarValue::Null => "null",
        _ => "another scalar",
    }
}

/// Every person in a registry, ordered by person id.
pub fn people(doc: &Automerge) -> Result<Vec<Person>, DocError> {
    let people = collection(doc, DocKind::Registry)?;
    let mut out = Vec::new();
    for item in doc.map_range(&people, ..) {
        if matches!(item.value, automerge::ValueRef::Object(ObjType::Map)) {
            out.push(read_person(doc, &item.key, &item.id())?);
        }
    }
    Ok(out)
}

/// One person of a registry, if it holds them.
pub fn person(doc: &Automerge, id: PersonId) -> Result<Option<Person>, DocError> {
    RecordReader::of(doc)?.person(id)
}

fn read_person(doc: &Automerge, key: &str, p: &ObjId) -> Result<Person, DocError> {
    let f = Fields::read(doc, p);
    Ok(Person {
        person_id: key.parse().map_err(|_| DocError::Layout(format!("person key {key:?}")))?,
        name: f.str("name").unwrap_or_default(),
        sex: f.str("sex").and_then(|s| Sex::parse(&s)).ok_or_else(|| DocError::Layout("person without sex".into()))?,
        birth_date: f
            .str("birth_date")
            .and_then(|s| parse_date(&s))
            .ok_or_else(|| DocError::Layout("person without birth_date".into()))?,
        mother_name: f.str("mother_name").unwrap_or_default(),
        nik: f.str("nik"),
        mother_nik: f.str("mother_nik"),
        address: f.str("address").unwrap_or_default(),
        rt: f.int("rt"),
        rw: f.int("rw"),
        pregnant: matches!(f.scalar("pregnant"), Some(FieldValue::Bool(true))),
        kia_book: matches!(f.scalar("kia_book"), Some(FieldValue::Bool(true))),
        merged_into: if f.values.contains_key("merged_into") { merged_into(doc, p)? } else { None },
        registered_by: f.uuid::<DeviceId>("registered_by")?,
        registered_at: f.int("registered_at").unwrap_or_default(),
    })
}

/// The document as JSON (winning values only), for tests, tools and debugging.
pub fn to_json(doc: &Automerge) -> serde_json::Value {
    fn conv(v: automerge::hydrate::Value) -> serde_json::Value {
        use automerge::hydrate::Value as H;
        match v {
            H::Scalar(s) => match s {
                ScalarValue::Str(s) => serde_json::Value::String(s.to_string()),
                ScalarValue::Int(i) | ScalarValue::Timestamp(i) => i.into(),
                ScalarValue::Uint(u) => u.into(),
                ScalarValue::Boolean(b) => b.into(),
                ScalarValue::F64(f) => f.into(),
                _ => serde_json::Value::Null,
            },
            H::Map(m) => {
                serde_json::Value::Object(m.iter().map(|(k, v)| (k.to_string(), conv(v.value.clone()))).collect())
            }
            H::List(l) => serde_json::Value::Array(l.iter().map(|v| conv(v.value.clone())).collect()),
            H::Text(t) => serde_json::Value::String(t.to_string()),
        }
    }
    conv(doc.hydrate(None))
}

/// Write into `dst`, as one change by its actor, every value of `src` that `dst` lacks or
/// holds differently (winning values, maps recursively). Returns whether anything was written.
///
/// This is how a replica records its edits again "by value" under a new actor when the
/// changes that first carried them cannot be sent (their actor and sequence numbers were
/// reused after a restored backup): `dst` is the document as the server acknowledged it, and
/// `src` the replica's own copy. posync documents are maps of maps and scalars and never
/// delete keys, so copying values is enough to carry every capture.
pub fn copy_values(src: &Automerge, dst: &mut Automerge, now: i64) -> Result<bool, DocError> {
    let mut tx = dst.transaction();
    copy_map(src, &ROOT, &mut tx, &ROOT)?;
    if tx.pending_ops() == 0 {
        tx.rollback();
        return Ok(false);
    }
    tx.commit_with(commit_opts(now));
    Ok(true)
}

fn copy_map(
    src: &Automerge,
    from: &ObjId,
    tx: &mut automerge::transaction::Transaction<'_>,
    to: &ObjId,
) -> Result<(), DocError> {
    for key in src.keys(from) {
        match src.get(from, key.as_str())? {
            Some((Value::Object(ObjType::Map), child)) => {
                let target = match tx.get(to, key.as_str())? {
                    Some((Value::Object(ObjType::Map), existing)) => existing,
                    _ => tx.put_object(to, key.as_str(), ObjType::Map)?,
                };
                copy_map(src, &child, tx, &target)?;
            }
            Some((Value::Scalar(value), _)) => {
                let same = matches!(tx.get(to, key.as_str())?, Some((Value::Scalar(v), _)) if v == value);
                if !same {
                    tx.put(to, key.as_str(), value.into_owned())?;
                }
            }
            // Lists and text are not part of posync's layout.
            _ => {}
        }
    }
    Ok(())
}

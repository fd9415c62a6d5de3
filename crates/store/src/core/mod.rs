//! Merge and page decisions as plain functions over bytes: no SQL, no clock, no network.
//! The adapters call these inside their transactions. This file: merging pushes and
//! server changes, and how a merged document is stored; `pull`: what a pull sends.

mod pull;

pub use pull::{Candidate, FEED_SCAN_BATCH, PageScan, Stream, assemble_ahead, assemble_page, candidate, changes_for};

use crate::StoreError;
use automerge::{Automerge, ReadDoc};
use posync_model::doc::{self, DocMeta};
use posync_model::guard::{self, Usage};
use posync_model::{DeviceId, DocId, DocKind, FieldConflict, FieldValue, Heads, Person, PosyanduId, Scope, Visit};
use posync_proto::{DocPush, Limits};

/// The relational projection of a document: whole, or only the records a merge touched.
#[derive(Clone, Debug, PartialEq)]
pub struct Projection {
    pub records: Records,
    /// Records holding an impossible value (see `validate::intrinsic_visit`), by record id:
    /// their issues as JSON. Kept, but left out of reports and listed for review.
    pub invalid: std::collections::BTreeMap<String, String>,
    /// `Some(ids)`: only these records were re-projected (and their conflicts re-indexed);
    /// the rows of every other record of the document stay as they are. `None`: the whole
    /// document, replacing all its rows.
    pub only: Option<Vec<String>>,
}

/// The records of a document.
#[derive(Clone, Debug, PartialEq)]
pub enum Records {
    Visits { date: time::Date, visits: Vec<Visit> },
    People(Vec<Person>),
}

/// Merges appended to a document's stored snapshot before it is saved whole again: loading
/// a document from its snapshot and chunks stays a bounded amount of work.
pub const CHUNKS_MAX: u32 = 64;

/// How a merged document is stored: work proportional to the change, except every
/// [`CHUNKS_MAX`] merges (and for a new document or one near its budget), when it is saved
/// whole and its chunks dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DocWrite {
    /// The whole document (a snapshot); replaces the stored one and its chunks.
    Whole(Vec<u8>),
    /// The merge's new changes (change chunks), appended after what is stored.
    Append(Vec<u8>),
}

impl DocWrite {
    pub fn len(&self) -> usize {
        match self {
            DocWrite::Whole(b) | DocWrite::Append(b) => b.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The stored form of a document: how many chunks follow its snapshot, and the bytes of both.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoredForm {
    pub chunks: u32,
    pub bytes: usize,
}

impl StoredForm {
    /// The form after `write`.
    pub fn after(self, write: &DocWrite) -> StoredForm {
        match write {
            DocWrite::Whole(b) => StoredForm { chunks: 0, bytes: b.len() },
            DocWrite::Append(b) => StoredForm { chunks: self.chunks + 1, bytes: self.bytes + b.len() },
        }
    }
}

/// The result of merging one push into the stored document.
#[derive(Debug)]
pub struct Merged {
    /// How to store the merged document, or `None` if the push added nothing (a replay).
    pub write: Option<DocWrite>,
    pub heads: Heads,
    pub projection: Option<Projection>,
    /// The heads the device is known to have from now on.
    pub device_heads: Heads,
    /// Every field of the merged document holding concurrent values (when it changed).
    pub conflicts: Vec<FieldConflict>,
    /// The merged document, loaded (when it changed): the adapter keeps it in its cache once
    /// committed.
    pub doc: Option<Automerge>,
}

/// What the server already holds for a pushed document.
pub struct Existing<'a> {
    pub kind: DocKind,
    pub posyandu: &'a PosyanduId,
    /// The stored bytes (snapshot and chunks), read only when `loaded` is not at hand.
    pub bytes: &'a [u8],
    pub form: StoredForm,
    /// The same document already loaded (from the cache, at the stored heads), if at hand.
    pub loaded: Option<Automerge>,
}

/// `loaded` if at hand, else the stored bytes parsed.
pub(crate) fn load_or(doc: DocId, loaded: Option<Automerge>, bytes: &[u8]) -> Result<Automerge, StoreError> {
    match loaded {
        Some(am) => Ok(am),
        None => Automerge::load(bytes).map_err(|e| StoreError::Corrupt { doc, reason: e.to_string() }),
    }
}

pub fn parse_heads(doc: DocId, bytes: &[u8]) -> Result<Heads, StoreError> {
    Heads::from_bytes(bytes).map_err(|e| StoreError::MalformedChanges { doc, reason: e.to_string() })
}

/// What a merge checks beyond the bytes themselves: who pushes, the bounds, and when.
#[derive(Clone, Copy, Debug)]
pub struct Rules {
    /// The pushing device: new changes must be authored by one of its actors.
    pub device: DeviceId,
    pub limits: Limits,
    /// Unix seconds: dates after today are impossible.
    pub now: i64,
}

impl Rules {
    pub fn new(device: DeviceId, now: i64) -> Self {
        Self { device, limits: Limits::default(), now }
    }
}

/// A request names each document once: a second push of one document is refused whole.
pub fn distinct_docs(pushes: &[DocPush]) -> Result<(), StoreError> {
    let mut seen = std::collections::HashSet::with_capacity(pushes.len());
    match pushes.iter().find(|p| !seen.insert(p.doc)) {
        Some(p) => Err(StoreError::DuplicateDoc { doc: p.doc }),
        None => Ok(()),
    }
}

/// Scope of a push: the posyandu the server stored the document under (`stored_owner`), or
/// for a new document the one it is pushed under.
pub fn push_allowed(scope: &Scope, stored_owner: Option<&PosyanduId>, push: &DocPush) -> Result<(), StoreError> {
    if scope.allows(stored_owner.unwrap_or(&push.posyandu)) {
        Ok(())
    } else {
        Err(StoreError::Forbidden { doc: push.doc })
    }
}

/// Merge `push` into `existing` (or create the document). Checks, in order: the declared
/// identity matches the stored one; the changes are bounded Automerge bytes within what is
/// left of the push's budget (`used`) and all of them load; no dependency is missing; the
/// pushed heads are in the result; every new change is the device's own (or the expected
/// genesis); the result is within the document budget and has posync's layout and the
/// identity its id names.
pub fn merge_push(
    existing: Option<Existing<'_>>,
    push: &DocPush,
    rules: &Rules,
    used: &mut Usage,
) -> Result<Merged, StoreError> {
    let id = push.doc;
    let pushed_heads = parse_heads(id, &push.heads)?;
    let base = parse_heads(id, &push.base)?;
    if push.changes.is_empty() {
        return probe(existing, push, pushed_heads, base);
    }
    let form = existing.as_ref().map(|e| e.form);
    let mut am = match existing {
        Some(e) => {
            if e.kind != push.kind || e.posyandu != &push.posyandu {
                return Err(StoreError::DocMismatch {
                    doc: id,
                    reason: format!(
                        "stored as {} of {}, pushed as {} of {}",
                        e.kind, e.posyandu, push.kind, push.posyandu
                    ),
                });
            }
            load_or(id, e.loaded, e.bytes)?
        }
        None => Automerge::new(),
    };
    let before = Heads::new(am.get_heads());
    let budget = rules.limits.push_budget();
    // Into a document held, the pushed changes are parsed once and applied as parsed: the
    // merge's new changes are those, not rebuilt from the merged document's columns. A new
    // document is loaded whole (Automerge's fastest path) and its changes taken from it.
    let (claims, collected) = if before.is_empty() {
        (guard::apply(&mut am, &push.changes, &budget, used).map_err(|e| apply_error(id, e))?, None)
    } else {
        let (claims, fresh) =
            guard::apply_collecting(&mut am, &push.changes, &budget, used).map_err(|e| apply_error(id, e))?;
        (claims, Some(fresh))
    };
    guard::check_complete(&am, &claims).map_err(|e| apply_error(id, e))?;
    if !am.get_missing_deps(pushed_heads.as_slice()).is_empty() {
        return Err(StoreError::HeadsMismatch { doc: id });
    }
    let heads = Heads::new(am.get_heads());
    if heads == before {
        return Ok(Merged {
            write: None,
            heads,
            projection: None,
            device_heads: pushed_heads,
            conflicts: Vec::new(),
            doc: None,
        });
    }
    let meta = doc::read_meta(&am).map_err(|e| layout_error(id, e))?;
    check_identity(id, &meta, push)?;
    // Automerge rebuilds changes from its columns when asked: ask once for this merge.
    let new = match collected {
        Some(fresh) => doc::NewChanges::of(fresh),
        None => doc::NewChanges::after(&am, before.as_slice()),
    };
    check_authors(id, &new, &meta, &rules.device)?;
    doc::check_values_of(&new).map_err(|bad| StoreError::InvalidField {
        doc: id,
        field: bad.key,
        reason: bad.reason,
    })?;
    check_doc_budget(id, &am, &rules.limits)?;
    let write = doc_write(id, &am, form, &new, &push.changes, &rules.limits)?;
    // Work proportional to the change: only the records it reached are projected again.
    let only = if before.is_empty() { None } else { doc::touched_records_of(&am, meta.kind, &new) };
    let mut touched_conflicts = Vec::new();
    let projection = project_collecting(&am, &meta, rules.now, only.as_deref(), Some(&mut touched_conflicts))
        .map_err(|e| layout_error(id, e))?;
    let conflicts = match &only {
        None => posync_model::conflicts(&am).map_err(|e| layout_error(id, e))?,
        Some(_) => touched_conflicts,
    };
    Ok(Merged {
        write: Some(write),
        heads,
        projection: Some(projection),
        device_heads: pushed_heads,
        conflicts,
        doc: Some(am),
    })
}

/// How to store `am`, merged into a document stored as `form` (`None`: new):
/// its `new` changes appended while fewer than [`CHUNKS_MAX`] follow the snapshot and the
/// appended form stays within the document budget; else saved whole, within the budget. A
/// new document pushed saved whole (a phone's first push) is stored as it came: `am` was
/// loaded from exactly those bytes, so saving it again would only redo the phone's work.
fn doc_write(
    id: DocId,
    am: &Automerge,
    form: Option<StoredForm>,
    new: &doc::NewChanges,
    pushed: &[u8],
    limits: &Limits,
) -> Result<DocWrite, StoreError> {
    if let Some(form) = form
        && form.chunks + 1 < CHUNKS_MAX
    {
        let chunk = new.to_bytes();
        if form.bytes.saturating_add(chunk.len()) <= limits.doc_bytes_max {
            return Ok(DocWrite::Append(chunk));
        }
    }
    let saved = if form.is_none() && guard::is_one_document(pushed) { pushed.to_vec() } else { am.save() };
    if saved.len() > limits.doc_bytes_max {
        return Err(StoreError::DocumentTooLarge {
            doc: id,
            reason: format!("{} bytes saved; at most {}", saved.len(), limits.doc_bytes_max),
        });
    }
    Ok(DocWrite::Whole(saved))
}

/// A push with no changes asks what the server holds: after an answer was lost, the device
/// learns whether its last push committed without sending it again. Acknowledged: the
/// pushed heads if the document holds them all, else the part of `base` it holds (the device
/// then pushes what is missing). Nothing is written but the device's acknowledged heads.
fn probe(existing: Option<Existing<'_>>, push: &DocPush, pushed: Heads, base: Heads) -> Result<Merged, StoreError> {
    let id = push.doc;
    let Some(e) = existing else {
        // A document the server has never seen holds nothing.
        return Ok(Merged {
            write: None,
            heads: Heads::empty(),
            projection: None,
            device_heads: Heads::empty(),
            conflicts: Vec::new(),
            doc: None,
        });
    };
    if e.kind != push.kind || e.posyandu != &push.posyandu {
        return Err(StoreError::DocMismatch { doc: id, reason: "probed as another kind or posyandu".into() });
    }
    let am = load_or(id, e.loaded, e.bytes)?;
    let holds = |h: &Heads| h.as_slice().iter().all(|x| am.get_change_by_hash(x).is_some());
    let acked = if holds(&pushed) {
        pushed
    } else {
        Heads::new(base.as_slice().iter().copied().filter(|x| am.get_change_by_hash(x).is_some()).collect())
    };
    Ok(Merged {
        write: None,
        heads: Heads::new(am.get_heads()),
        projection: None,
        device_heads: acked,
        conflicts: Vec::new(),
        doc: None,
    })
}

fn apply_error(doc: DocId, e: guard::ApplyError) -> StoreError {
    match e {
        guard::ApplyError::Input(guard::InputError::Malformed(reason)) => StoreError::MalformedChanges { doc, reason },
        guard::ApplyError::Input(e @ guard::InputError::TooLarge { .. }) => {
            StoreError::ChangesTooLarge { doc, reason: e.to_string() }
        }
        guard::ApplyError::SeqClash { .. } => StoreError::SeqClash { doc },
        guard::ApplyError::MissingDependencies => StoreError::MissingDependencies { doc },
    }
}

/// Every change the server did not hold before this push must be the pushing device's own
/// (any incarnation of its replica), or the document's expected genesis change. Otherwise a
/// device could write values "by" a colleague's device or the server, forging what conflict
/// review shows, or burn another actor's next sequence numbers.
fn check_authors(doc: DocId, new: &doc::NewChanges, meta: &DocMeta, device: &DeviceId) -> Result<(), StoreError> {
    let mut genesis = None;
    for (actor, hash) in new.authors() {
        if device.owns_actor(actor) {
            continue;
        }
        if doc::is_genesis_actor(meta, actor) {
            let expected = match genesis {
                Some(h) => h,
                None => *genesis.insert(doc::genesis_hash(meta).map_err(|e| layout_error(doc, e))?),
            };
            if hash == expected {
                continue;
            }
        }
        return Err(StoreError::ForeignAuthor { doc });
    }
    Ok(())
}

fn check_doc_budget(doc: DocId, am: &Automerge, limits: &Limits) -> Result<(), StoreError> {
    let ops = am.stats().num_ops;
    if ops > limits.doc_ops_max as u64 {
        return Err(StoreError::DocumentTooLarge {
            doc,
            reason: format!("{ops} operations; at most {}", limits.doc_ops_max),
        });
    }
    Ok(())
}

fn layout_error(doc: DocId, e: posync_model::DocError) -> StoreError {
    StoreError::MalformedChanges { doc, reason: e.to_string() }
}

fn check_identity(id: DocId, meta: &DocMeta, push: &DocPush) -> Result<(), StoreError> {
    let mismatch = |reason: String| StoreError::DocMismatch { doc: id, reason };
    if meta.kind != push.kind || meta.posyandu != push.posyandu {
        return Err(mismatch(format!("content says {} of {}", meta.kind, meta.posyandu)));
    }
    if meta.doc_id() != id {
        return Err(mismatch("document id does not match its kind, posyandu and date".into()));
    }
    Ok(())
}

/// The whole projection of a document.
pub fn project(am: &Automerge, meta: &DocMeta, now: i64) -> Result<Projection, posync_model::DocError> {
    project_records(am, meta, now, None)
}

/// The projection of the records `only` names (all of them when `None`).
pub fn project_records(
    am: &Automerge,
    meta: &DocMeta,
    now: i64,
    only: Option<&[String]>,
) -> Result<Projection, posync_model::DocError> {
    project_collecting(am, meta, now, only, None)
}

/// [`project_records`], and, given `conflicts`, the conflicted fields of the records `only`
/// names added to it: a visit's map is read once for both.
fn project_collecting(
    am: &Automerge,
    meta: &DocMeta,
    now: i64,
    only: Option<&[String]>,
    mut conflicts: Option<&mut Vec<FieldConflict>>,
) -> Result<Projection, posync_model::DocError> {
    let today = time::OffsetDateTime::from_unix_timestamp(now).map_or(time::Date::MAX, |t| t.date());
    let mut invalid = std::collections::BTreeMap::new();
    let mut mark = |id: String, issues: Vec<posync_model::validate::Issue>| {
        if !issues.is_empty() {
            invalid.insert(id, serde_json::to_string(&issues).unwrap_or_else(|_| "[]".into()));
        }
    };
    let records = match (meta.kind, meta.date) {
        (DocKind::Session, Some(date)) => {
            let visits = match only {
                None => doc::visits(am)?,
                Some(ids) => {
                    let reader = doc::RecordReader::of(am)?;
                    let mut visits = Vec::with_capacity(ids.len());
                    for id in ids {
                        let id = id.parse().map_err(|_| posync_model::DocError::Layout(format!("visit key {id:?}")))?;
                        match conflicts.as_deref_mut() {
                            Some(out) => {
                                if let Some((visit, found)) = reader.visit_with_conflicts(id)? {
                                    visits.push(visit);
                                    out.extend(found);
                                }
                            }
                            None => visits.extend(reader.visit(id)?),
                        }
                    }
                    visits
                }
            };
            for v in &visits {
                mark(v.visit_id.to_string(), posync_model::validate::intrinsic_visit(v, date, today));
            }
            Records::Visits { date, visits }
        }
        _ => {
            let people = match only {
                None => doc::people(am)?,
                Some(ids) => {
                    let reader = doc::RecordReader::of(am)?;
                    let mut people = Vec::with_capacity(ids.len());
                    for key in ids {
                        let id =
                            key.parse().map_err(|_| posync_model::DocError::Layout(format!("person key {key:?}")))?;
                        people.extend(reader.person(id)?);
                        if let Some(out) = conflicts.as_deref_mut() {
                            out.extend(reader.conflicts(key)?);
                        }
                    }
                    people
                }
            };
            for p in &people {
                mark(p.person_id.to_string(), posync_model::validate::intrinsic_person(p, today));
            }
            Records::People(people)
        }
    };
    Ok(Projection { records, invalid, only: only.map(<[String]>::to_vec) })
}

/// The field a resolution writes.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    pub collection: &'a str,
    pub record_id: &'a str,
    pub field: &'a str,
}

/// A resolved document: the server's change setting one field, and what follows from it.
pub struct Resolved {
    pub saved: Vec<u8>,
    pub heads: Heads,
    pub projection: Projection,
    pub conflicts: Vec<FieldConflict>,
}

/// Write `value` to the conflicted field as a new change by `actor` (the server's). The change
/// depends on every concurrent value, so it replaces them all: the conflict clears, and every
/// replica that syncs gets the decision. A replica that meanwhile edited the same field
/// offline is concurrent with it again, and a new conflict opens: never a silent overwrite.
pub fn resolve(
    doc: DocId,
    saved: &[u8],
    target: &Target<'_>,
    value: &FieldValue,
    actor: automerge::ActorId,
    now: i64,
) -> Result<Resolved, StoreError> {
    let Target { collection, record_id, field } = *target;
    let mut am = Automerge::load(saved).map_err(|e| StoreError::Corrupt { doc, reason: e.to_string() })?;
    am.set_actor(actor);
    let invalid = |e: posync_model::DocError| StoreError::Invalid(e.to_string());
    if collection == "people" {
        let person: posync_model::PersonId =
            record_id.parse().map_err(|_| StoreError::Invalid(format!("person id {record_id:?}")))?;
        doc::set_person_field(&mut am, person, field, value, now).map_err(invalid)?;
        return finish(doc, am, now);
    }
    let visit: posync_model::VisitId =
        record_id.parse().map_err(|_| StoreError::Invalid(format!("visit id {record_id:?}")))?;
    if let Some(antigen) = field.strip_prefix("immunisations/") {
        let date = match value {
            FieldValue::Text(d) => posync_model::record::parse_date(d),
            _ => None,
        }
        .ok_or_else(|| StoreError::Invalid("an immunisation is resolved with its YYYY-MM-DD date".into()))?;
        doc::give_immunisation(&mut am, visit, antigen, date, now).map_err(invalid)?;
    } else {
        let f = posync_model::Field::from_key(field)
            .ok_or_else(|| StoreError::Invalid(format!("unknown field {field:?}")))?;
        doc::set_visit_field(&mut am, visit, f, value, now).map_err(invalid)?;
    }
    finish(doc, am, now)
}

/// The saved document and everything derived from it after a server change.
fn finish(doc: DocId, am: Automerge, now: i64) -> Result<Resolved, StoreError> {
    let meta = doc::read_meta(&am).map_err(|e| layout_error(doc, e))?;
    let projection = project(&am, &meta, now).map_err(|e| layout_error(doc, e))?;
    let conflicts = posync_model::conflicts(&am).map_err(|e| layout_error(doc, e))?;
    Ok(Resolved { saved: am.save(), heads: Heads::new(am.get_heads()), projection, conflicts })
}

/// Mark a person of a registry as merged into another, as the server's change.
pub fn merge_people(
    doc: DocId,
    saved: &[u8],
    duplicate: posync_model::PersonId,
    keep: posync_model::PersonId,
    actor: automerge::ActorId,
    now: i64,
) -> Result<Resolved, StoreError> {
    let mut am = Automerge::load(saved).map_err(|e| StoreError::Corrupt { doc, reason: e.to_string() })?;
    am.set_actor(actor);
    doc::merge_person(&mut am, duplicate, keep, now).map_err(|e| StoreError::Invalid(e.to_string()))?;
    finish(doc, am, now)
}

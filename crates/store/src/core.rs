//! Merge and page decisions as plain functions over bytes: no SQL, no clock, no network.
//! The adapters call these inside their transactions.

use crate::StoreError;
use automerge::{Automerge, ReadDoc};
use posync_model::doc::{self, DocMeta};
use posync_model::guard::{self, Usage};
use posync_model::{DeviceId, DocId, DocKind, FieldConflict, FieldValue, Heads, Person, PosyanduId, Visit};
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
fn load_or(doc: DocId, loaded: Option<Automerge>, bytes: &[u8]) -> Result<Automerge, StoreError> {
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
    let claims =
        guard::apply(&mut am, &push.changes, &rules.limits.push_budget(), used).map_err(|e| apply_error(id, e))?;
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
    check_authors(id, &am, &before, &meta, &rules.device)?;
    doc::check_new_values(&am, before.as_slice()).map_err(|field| StoreError::InvalidField { doc: id, field })?;
    check_doc_budget(id, &am, &rules.limits)?;
    let write = doc_write(id, &am, form, &before, &rules.limits)?;
    // Work proportional to the change: only the records it reached are projected again.
    let only = doc::touched_records(&am, meta.kind, &before);
    let projection = project_records(&am, &meta, rules.now, only.as_deref()).map_err(|e| layout_error(id, e))?;
    let conflicts = match &only {
        None => posync_model::conflicts(&am),
        Some(ids) => ids.iter().try_fold(Vec::new(), |mut all, r| {
            all.extend(posync_model::record_conflicts(&am, r)?);
            Ok(all)
        }),
    }
    .map_err(|e| layout_error(id, e))?;
    Ok(Merged {
        write: Some(write),
        heads,
        projection: Some(projection),
        device_heads: pushed_heads,
        conflicts,
        doc: Some(am),
    })
}

/// How to store `am`, merged into a document stored as `form` (`None`: new) at `before`:
/// its new changes appended while fewer than [`CHUNKS_MAX`] follow the snapshot and the
/// appended form stays within the document budget; else saved whole, within the budget.
fn doc_write(
    id: DocId,
    am: &Automerge,
    form: Option<StoredForm>,
    before: &Heads,
    limits: &Limits,
) -> Result<DocWrite, StoreError> {
    if let Some(form) = form
        && form.chunks + 1 < CHUNKS_MAX
    {
        let chunk = am.save_after(before.as_slice());
        if form.bytes.saturating_add(chunk.len()) <= limits.doc_bytes_max {
            return Ok(DocWrite::Append(chunk));
        }
    }
    let saved = am.save();
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
fn check_authors(
    doc: DocId,
    am: &Automerge,
    before: &Heads,
    meta: &DocMeta,
    device: &DeviceId,
) -> Result<(), StoreError> {
    let mut genesis = None;
    for change in am.get_changes_meta(before.as_slice()) {
        if device.owns_actor(&change.actor) {
            continue;
        }
        if doc::is_genesis_actor(meta, &change.actor) {
            let expected = match genesis {
                Some(h) => h,
                None => *genesis.insert(doc::genesis_hash(meta).map_err(|e| layout_error(doc, e))?),
            };
            if change.hash == expected {
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

/// The relational rows of a document.
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
                    let mut visits = Vec::with_capacity(ids.len());
                    for id in ids {
                        let id = id.parse().map_err(|_| posync_model::DocError::Layout(format!("visit key {id:?}")))?;
                        visits.extend(doc::visit(am, id)?);
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
                    let mut people = Vec::with_capacity(ids.len());
                    for id in ids {
                        let id =
                            id.parse().map_err(|_| posync_model::DocError::Layout(format!("person key {id:?}")))?;
                        people.extend(doc::person(am, id)?);
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

/// The changes a device lacks, given heads it is known to have (`c.known`). `None` when it
/// has them all. Heads the document does not know are ignored rather than trusted: asking
/// Automerge for changes after unknown heads would silently return the whole history anyway,
/// so we make that fallback explicit.
///
/// A device that holds exactly the state after a stored chunk lacks exactly the chunks after
/// it: those bytes are its delta, sent as stored, without loading the document (every phone
/// of a posyandu catching up on the same merges asks for such a suffix). `whole` gives the
/// document saved whole, for a device that holds none of it or when a delta would be larger.
pub fn changes_for(
    doc: DocId,
    c: &Candidate,
    whole: &mut dyn FnMut() -> Result<Vec<u8>, StoreError>,
) -> Result<Option<Vec<u8>>, StoreError> {
    let (saved, known) = (&c.bytes, &c.known);
    if known.is_empty() {
        return whole().map(Some);
    }
    if c.meta.heads.as_slice().iter().all(|h| known.as_slice().contains(h)) {
        return Ok(None);
    }
    if let Some((_, end)) = c.ends.iter().find(|(h, _)| h == known)
        && let Some(suffix) = saved.get(*end..)
    {
        return Ok(Some(suffix.to_vec()));
    }
    let parsed;
    let am = match c.loaded.as_deref() {
        Some(am) => am,
        None => {
            parsed = Automerge::load(saved).map_err(|e| StoreError::Corrupt { doc, reason: e.to_string() })?;
            &parsed
        }
    };
    let known: Vec<_> = known.as_slice().iter().copied().filter(|h| am.get_change_by_hash(h).is_some()).collect();
    if known.is_empty() {
        return whole().map(Some);
    }
    let delta = am.save_after(&known);
    // A delta larger than the compressed whole document is worth less than the document.
    // The whole document is at least its stored snapshot (an earlier state of it): a delta
    // within that needs no save to be weighed.
    if delta.len() <= c.snapshot_bytes {
        return Ok(Some(delta));
    }
    let whole = if c.ends.is_empty() { saved.clone() } else { whole()? };
    Ok(Some(if delta.len() > whole.len() { whole } else { delta }))
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

/// Feed entries read per query while choosing a page's documents.
pub const FEED_SCAN_BATCH: usize = 1_024;

/// Chooses the documents of one pulled page by walking the feed after the device's cursor
/// in feed order, each document at its first entry there.
///
/// Why feed order and not "documents by their latest change": the cursor promises that the
/// device holds every document at least as of its entries up to the cursor. A page in feed
/// order keeps that promise — when it ends before the next unsent document's first entry,
/// every entry up to the new cursor belongs to a document the device was just sent whole
/// (as of now). Ordering by latest change would let a cut page's cursor jump over an older
/// entry of a document edited since and not yet sent, and the next page would send that
/// document as a delta the device cannot apply.
#[derive(Debug)]
pub struct PageScan {
    docs_max: usize,
    seen: std::collections::HashSet<DocId>,
    /// Documents in order of their first entry after the cursor.
    pub docs: Vec<(DocId, u64)>,
    /// The first entry of the first document that did not fit, if any.
    pub next_first: Option<u64>,
}

impl PageScan {
    pub fn new(docs_max: usize) -> Self {
        Self { docs_max: docs_max.max(1), seen: Default::default(), docs: Vec::new(), next_first: None }
    }

    /// Offer the next feed entry; `false` once the page has all the documents it can take.
    pub fn offer(&mut self, seq: u64, doc: DocId) -> bool {
        if self.next_first.is_some() {
            return false;
        }
        if self.seen.contains(&doc) {
            return true;
        }
        if self.docs.len() == self.docs_max {
            self.next_first = Some(seq);
            return false;
        }
        self.seen.insert(doc);
        self.docs.push((doc, seq));
        true
    }
}

/// A chosen document as stored now, with the heads the device is known to have.
pub struct Candidate {
    pub meta: crate::StoredMeta,
    /// The stored bytes: snapshot, then chunks.
    pub bytes: Vec<u8>,
    /// Where each chunk ends in `bytes`, with the heads after it ([`changes_for`]).
    pub ends: Vec<(Heads, usize)>,
    /// How many of `bytes` are the snapshot.
    pub snapshot_bytes: usize,
    pub known: Heads,
    /// The document already loaded at the stored heads (from the cache), if at hand.
    pub loaded: Option<std::sync::Arc<Automerge>>,
}

/// A stored document as a pull offers it to a device that holds `known` of it, with the copy
/// kept loaded (shared, not cloned) when at the stored heads.
pub fn candidate(stream: crate::plan::Stream, known: Heads, cache: &crate::cache::DocCache) -> Candidate {
    let crate::plan::Stream { meta, bytes, ends, snapshot_bytes } = stream;
    let loaded = cache.get_shared(meta.doc, &meta.heads);
    Candidate { meta, bytes, ends, snapshot_bytes, known, loaded }
}

/// The document saved whole, as a device that holds none of it is sent it: the stored bytes
/// when they are a snapshot alone; else saved from the loaded copy once per heads and kept in
/// `cache` for every other device (snapshot and chunks would be larger on the wire).
fn whole_of(doc: DocId, c: &Candidate, cache: &crate::cache::DocCache) -> Result<Vec<u8>, StoreError> {
    if c.ends.is_empty() {
        return Ok(c.bytes.clone());
    }
    if let Some(whole) = cache.whole(doc, &c.meta.heads) {
        return Ok(whole.as_ref().clone());
    }
    let am = match &c.loaded {
        Some(am) => am.clone(),
        None => std::sync::Arc::new(load_or(doc, None, &c.bytes)?),
    };
    let whole = std::sync::Arc::new(am.save());
    if c.loaded.is_none() {
        cache.put(doc, am, c.bytes.len());
    }
    cache.keep_whole(doc, &c.meta.heads, whole.clone());
    Ok(whole.as_ref().clone())
}

/// [`changes_for`] of a candidate.
fn delta_of(doc: DocId, c: &Candidate, cache: &crate::cache::DocCache) -> Result<Option<Vec<u8>>, StoreError> {
    changes_for(doc, c, &mut || whole_of(doc, c, cache))
}

/// Fill a page with the scanned documents in order, within `limits.bytes_max` (always at
/// least one document, or, for a device that takes `pieces`, one piece of a document larger
/// than the page). The cursor only moves to just before the first entry of a document not
/// sent whole, or, when the scan reached the end, to `feed_end` (the last position of the
/// snapshot).
pub fn assemble_page(
    cursor: u64,
    scan: PageScan,
    mut stored: std::collections::HashMap<DocId, Candidate>,
    feed_end: u64,
    limits: crate::PageLimits,
    cache: &crate::cache::DocCache,
) -> Result<crate::PullPage, StoreError> {
    let mut page = crate::PullPage { docs: Vec::new(), cursor, more: false };
    let mut bytes_total = 0usize;
    for (doc, first) in scan.docs {
        let Some(c) = stored.remove(&doc) else { continue };
        let changes = delta_of(doc, &c, cache)?;
        let size = changes.as_ref().map_or(0, Vec::len);
        if !page.docs.is_empty() && bytes_total + size > limits.bytes_max {
            page.cursor = first - 1;
            page.more = true;
            return Ok(page);
        }
        if page.docs.is_empty() && size > limits.bytes_max && limits.pieces {
            // Larger than the link takes at once: its first changes after what the device
            // holds. The cursor stays before it until the last piece.
            let (pull, complete) = piece_of(doc, &c, limits.bytes_max)?;
            page.docs.push(pull);
            if !complete {
                page.cursor = first - 1;
                page.more = true;
                return Ok(page);
            }
            continue;
        }
        bytes_total += size;
        if let Some(changes) = changes {
            page.docs.push(posync_proto::DocPull {
                doc,
                kind: c.meta.kind,
                posyandu: c.meta.posyandu,
                heads: c.meta.heads.to_bytes(),
                changes,
                piece: false,
            });
        }
    }
    match scan.next_first {
        Some(first) => {
            page.cursor = first - 1;
            page.more = true;
        }
        None => page.cursor = feed_end.max(cursor),
    }
    Ok(page)
}

/// A page of documents the device asked for first (today's session, the registry), sent
/// ahead of the feed walk: each `piece: true` (the device reports what it then holds, so the
/// walk skips it later), within `limits.bytes_max` (at least one document or one piece of
/// it). Documents the device already holds are skipped. The cursor does not move; `more`
/// is true whenever something was sent. An empty page means: walk the feed.
pub fn assemble_ahead(
    cursor: u64,
    candidates: Vec<(DocId, Candidate)>,
    limits: crate::PageLimits,
    cache: &crate::cache::DocCache,
) -> Result<crate::PullPage, StoreError> {
    let mut page = crate::PullPage { docs: Vec::new(), cursor, more: false };
    let mut bytes_total = 0usize;
    for (doc, c) in candidates {
        let Some(changes) = delta_of(doc, &c, cache)? else {
            continue;
        };
        if page.docs.is_empty() && changes.len() > limits.bytes_max {
            let (mut pull, _) = piece_of(doc, &c, limits.bytes_max)?;
            pull.piece = true;
            page.docs.push(pull);
            break;
        }
        if bytes_total + changes.len() > limits.bytes_max {
            break;
        }
        bytes_total += changes.len();
        page.docs.push(posync_proto::DocPull {
            doc,
            kind: c.meta.kind,
            posyandu: c.meta.posyandu,
            heads: c.meta.heads.to_bytes(),
            changes,
            piece: true,
        });
    }
    page.more = !page.docs.is_empty();
    Ok(page)
}

/// The first changes of a stored document after what the device holds, within `bytes_max`;
/// whether they are all of them.
fn piece_of(doc: DocId, c: &Candidate, bytes_max: usize) -> Result<(posync_proto::DocPull, bool), StoreError> {
    let parsed;
    let am = match c.loaded.as_deref() {
        Some(am) => am,
        None => {
            parsed = load_or(doc, None, &c.bytes)?;
            &parsed
        }
    };
    let known = Heads::new(c.known.as_slice().iter().copied().filter(|h| am.get_change_by_hash(h).is_some()).collect());
    let piece = posync_model::piece::first_changes(am, &known, bytes_max);
    let pull = posync_proto::DocPull {
        doc,
        kind: c.meta.kind,
        posyandu: c.meta.posyandu.clone(),
        heads: if piece.complete { c.meta.heads.to_bytes() } else { piece.heads.to_bytes() },
        changes: piece.bytes,
        piece: !piece.complete,
    };
    Ok((pull, piece.complete))
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    /// A document with two appended merges, as a pull reads it for a device holding `known`.
    fn stored_in_chunks() -> (Automerge, Candidate) {
        let mut am = Automerge::new();
        let (mut stored, mut ends, mut snapshot_bytes) = (Vec::new(), Vec::new(), 0);
        for i in 0..3i64 {
            let before = am.get_heads();
            let mut tx = am.transaction();
            tx.put(automerge::ROOT, format!("k{i}"), i).expect("put");
            tx.commit();
            if i == 0 {
                stored = am.save();
                snapshot_bytes = stored.len();
            } else {
                stored.extend_from_slice(&am.save_after(&before));
                ends.push((Heads::new(am.get_heads()), stored.len()));
            }
        }
        let meta = crate::StoredMeta {
            doc: DocId::new_random(),
            kind: DocKind::Registry,
            posyandu: "melati".parse().expect("id"),
            seq: 3,
            heads: Heads::new(am.get_heads()),
        };
        let c = Candidate { meta, bytes: stored, ends, snapshot_bytes, known: Heads::empty(), loaded: None };
        (am, c)
    }

    #[test]
    fn a_device_at_a_chunk_boundary_is_sent_the_stored_suffix_without_a_load() {
        let (am, mut c) = stored_in_chunks();
        c.known = c.ends[0].0.clone();
        let expected = c.bytes[c.ends[0].1..].to_vec();
        // Spoil the snapshot: had the delta needed a load, it would fail as corrupt.
        c.bytes[0] ^= 0xff;
        let mut no_whole = || -> Result<Vec<u8>, StoreError> { panic!("no whole document needed") };
        let delta = changes_for(c.meta.doc, &c, &mut no_whole).expect("no load needed").expect("a delta");
        assert_eq!(delta, expected);
        let mut held = am.clone();
        held.load_incremental(&delta).expect("applies");
        assert_eq!(held.get_heads(), am.get_heads());
    }

    #[test]
    fn a_device_between_boundaries_falls_back_to_a_computed_delta() {
        let (am, mut c) = stored_in_chunks();
        c.known = Heads::new(am.get_changes(&[]).first().map(|ch| vec![ch.hash()]).unwrap_or_default());
        let whole = am.save();
        let mut whole_of = || Ok(whole.clone());
        let delta = changes_for(c.meta.doc, &c, &mut whole_of).expect("computed").expect("a delta");
        assert!(delta.len() < c.bytes.len(), "changes after the first, not the whole document");
    }
}

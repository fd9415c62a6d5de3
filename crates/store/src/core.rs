//! Merge and page decisions as plain functions over bytes: no SQL, no clock, no network.
//! The adapters call these inside their transactions.

use crate::StoreError;
use automerge::{Automerge, ReadDoc};
use posync_model::doc::{self, DocMeta};
use posync_model::{DocId, DocKind, Heads, Person, PosyanduId, Visit};
use posync_proto::DocPush;

/// The relational projection of a document, replaced whole on every merge.
#[derive(Clone, Debug, PartialEq)]
pub enum Projection {
    Visits { date: time::Date, visits: Vec<Visit> },
    People(Vec<Person>),
}

/// The result of merging one push into the stored document.
#[derive(Debug)]
pub struct Merged {
    /// The new saved document, or `None` if the push added nothing (a replay).
    pub saved: Option<Vec<u8>>,
    pub heads: Heads,
    pub projection: Option<Projection>,
    /// The heads the device is known to have from now on.
    pub device_heads: Heads,
}

/// What the server already holds for a pushed document.
pub struct Existing<'a> {
    pub kind: DocKind,
    pub posyandu: &'a PosyanduId,
    pub bytes: &'a [u8],
}

pub fn parse_heads(doc: DocId, bytes: &[u8]) -> Result<Heads, StoreError> {
    Heads::from_bytes(bytes).map_err(|e| StoreError::MalformedChanges { doc, reason: e.to_string() })
}

/// Merge `push` into `existing` (or create the document). Checks, in order: the declared
/// identity matches the stored one; the changes decode; no dependency is missing; the pushed
/// heads are in the result; the result has posync's layout and the identity its id names.
pub fn merge_push(existing: Option<Existing<'_>>, push: &DocPush) -> Result<Merged, StoreError> {
    let id = push.doc;
    let pushed_heads = parse_heads(id, &push.heads)?;
    parse_heads(id, &push.base)?;
    let mut am = match &existing {
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
            Automerge::load(e.bytes).map_err(|err| StoreError::Corrupt { doc: id, reason: err.to_string() })?
        }
        None => Automerge::new(),
    };
    let before = Heads::new(am.get_heads());
    am.load_incremental(&push.changes)
        .map_err(|err| StoreError::MalformedChanges { doc: id, reason: err.to_string() })?;
    if !am.get_missing_deps(&[]).is_empty() {
        return Err(StoreError::MissingDependencies { doc: id });
    }
    if pushed_heads.as_slice().iter().any(|h| am.get_change_by_hash(h).is_none()) {
        return Err(StoreError::HeadsMismatch { doc: id });
    }
    let heads = Heads::new(am.get_heads());
    if heads == before {
        return Ok(Merged { saved: None, heads, projection: None, device_heads: pushed_heads });
    }
    let meta = doc::read_meta(&am).map_err(|e| layout_error(id, e))?;
    check_identity(id, &meta, push)?;
    let projection = project(&am, &meta).map_err(|e| layout_error(id, e))?;
    Ok(Merged { saved: Some(am.save()), heads, projection: Some(projection), device_heads: pushed_heads })
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
pub fn project(am: &Automerge, meta: &DocMeta) -> Result<Projection, posync_model::DocError> {
    Ok(match (meta.kind, meta.date) {
        (DocKind::Session, Some(date)) => Projection::Visits { date, visits: doc::visits(am)? },
        _ => Projection::People(doc::people(am)?),
    })
}

/// The changes a device lacks, given heads it is known to have. `None` when it has them all.
/// Heads the document does not know are ignored rather than trusted: asking Automerge for
/// changes after unknown heads would silently return the whole history anyway, so we make
/// that fallback explicit.
pub fn changes_for(
    doc: DocId,
    saved: &[u8],
    stored_heads: &Heads,
    known: &Heads,
) -> Result<Option<Vec<u8>>, StoreError> {
    if known.is_empty() {
        return Ok(Some(saved.to_vec()));
    }
    if stored_heads.as_slice().iter().all(|h| known.as_slice().contains(h)) {
        return Ok(None);
    }
    let am = Automerge::load(saved).map_err(|e| StoreError::Corrupt { doc, reason: e.to_string() })?;
    let known: Vec<_> = known.as_slice().iter().copied().filter(|h| am.get_change_by_hash(h).is_some()).collect();
    if known.is_empty() {
        return Ok(Some(saved.to_vec()));
    }
    let delta = am.save_after(&known);
    // A delta larger than the compressed whole document is worth less than the document.
    Ok(Some(if delta.len() > saved.len() { saved.to_vec() } else { delta }))
}

//! What a pull sends: the page's documents in feed order, each as the changes the device
//! lacks (a stored chunk suffix, a computed delta, or the whole document), within the
//! page's bounds.

use super::load_or;
use crate::StoreError;
use automerge::{Automerge, ReadDoc};
use posync_model::{DocId, Heads, Scope};
use std::collections::HashMap;

/// A stored document as a pull reads it: metadata, its bytes (snapshot then chunks), and
/// where each chunk ends in them with the heads after it.
pub struct Stream {
    pub meta: crate::StoredMeta,
    pub bytes: Vec<u8>,
    pub ends: Vec<(Heads, usize)>,
    /// How many of `bytes` are the snapshot.
    pub snapshot_bytes: usize,
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
    // Rebuilding a delta only to weigh it against the whole document cost a tenth of a sync
    // storm's server CPU (every phone's first pull after its colleagues' pushes); the change
    // graph tells the share without rebuilding anything.
    if known.is_empty() || posync_model::doc::lacks_most(am, &known) {
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
pub fn candidate(stream: Stream, known: Heads, cache: &crate::cache::DocCache) -> Candidate {
    let Stream { meta, bytes, ends, snapshot_bytes } = stream;
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
///
/// `found` are the stored candidates of the `asked` documents; only those `scope` allows
/// (by the server's own record of the document, never the request) are sent, in the order
/// the device asked for them.
pub fn assemble_ahead(
    cursor: u64,
    scope: &Scope,
    asked: &[DocId],
    found: Vec<Candidate>,
    limits: crate::PageLimits,
    cache: &crate::cache::DocCache,
) -> Result<crate::PullPage, StoreError> {
    let mut found: HashMap<DocId, Candidate> =
        found.into_iter().filter(|c| scope.allows(&c.meta.posyandu)).map(|c| (c.meta.doc, c)).collect();
    let candidates = asked.iter().filter_map(|d| found.remove(d).map(|c| (*d, c)));
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
    use posync_model::DocKind;
    use posync_model::doc::lacks_most;

    /// A document of four changes stored as a snapshot of the first and two appended
    /// merges (the second, then the third and fourth together), as a pull reads it for a
    /// device holding `known`.
    fn stored_in_chunks() -> (Automerge, Candidate) {
        let mut am = Automerge::new();
        let (mut stored, mut ends, mut snapshot_bytes) = (Vec::new(), Vec::new(), 0);
        let mut chunk_from = Vec::new();
        for i in 0..4i64 {
            let mut tx = am.transaction();
            tx.put(automerge::ROOT, format!("k{i}"), i).expect("put");
            tx.commit();
            if i == 0 {
                stored = am.save();
                snapshot_bytes = stored.len();
            } else if i != 2 {
                stored.extend_from_slice(&am.save_after(&chunk_from));
                ends.push((Heads::new(am.get_heads()), stored.len()));
            } else {
                continue;
            }
            chunk_from = am.get_heads();
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

    /// The hash of the `n`th change (0-based) of `am`'s linear history.
    fn nth(am: &Automerge, n: usize) -> automerge::ChangeHash {
        am.get_changes(&[])[n].hash()
    }

    #[test]
    fn a_device_between_boundaries_falls_back_to_a_computed_delta() {
        let (am, mut c) = stored_in_chunks();
        // Holds three of four changes: inside the last chunk, which held two.
        c.known = Heads::new(vec![nth(&am, 2)]);
        let mut no_whole = || -> Result<Vec<u8>, StoreError> { panic!("a small delta needs no whole document") };
        let delta = changes_for(c.meta.doc, &c, &mut no_whole).expect("computed").expect("a delta");
        assert_eq!(delta, am.save_after(&[nth(&am, 2)]), "the last change only");
    }

    /// A device that lacks most of a document gets it whole, decided from the change graph:
    /// its delta (changes with raw columns) would be larger, and is not rebuilt to be weighed.
    #[test]
    fn a_device_lacking_most_of_a_document_is_sent_it_whole() {
        let (am, mut c) = stored_in_chunks();
        c.known = Heads::new(vec![nth(&am, 0)]);
        assert!(lacks_most(&am, c.known.as_slice()), "three of four changes missing");
        assert!(!lacks_most(&am, &[nth(&am, 2)]), "one of four missing");
        let whole = am.save();
        let mut whole_of = || Ok(whole.clone());
        let sent = changes_for(c.meta.doc, &c, &mut whole_of).expect("sent").expect("the document");
        assert_eq!(sent, whole);
    }
}

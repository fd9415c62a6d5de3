//! Loaded documents kept between requests, so a push or a pull does not parse the whole
//! document again (`Automerge::load` of a 240-visit session costs more than the merge).
//!
//! Safe with several instances over one database: an entry is used only when its heads are
//! the heads the caller just read from the database in its own transaction. Equal heads mean
//! the same set of changes, so the same document; anything else is a miss and the caller
//! loads the stored bytes. Entries are clones (cheap: Automerge shares its columns), so a
//! merge that fails after taking one leaves the cached copy untouched.
//!
//! Bounded by an estimate of memory (`bytes_max`, default [`DocCache::BYTES_MAX_DEFAULT`]):
//! the least recently used entries go first.

use automerge::Automerge;
use posync_model::{DocId, Heads};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

struct Entry {
    heads: Heads,
    /// Shared with readers (pulls read it without a copy); a merge works on its own clone.
    doc: Arc<Automerge>,
    /// The document saved whole at `heads`, once a pull needed it (every device that takes
    /// the whole document is then sent the same bytes without another save).
    whole: Option<std::sync::Arc<Vec<u8>>>,
    /// Estimated memory of the loaded document (and of `whole`).
    bytes: usize,
    used: u64,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<DocId, Entry>,
    bytes: usize,
    clock: u64,
}

pub struct DocCache {
    inner: Mutex<Inner>,
    bytes_max: usize,
}

impl Default for DocCache {
    fn default() -> Self {
        Self::new(Self::BYTES_MAX_DEFAULT)
    }
}

impl DocCache {
    pub const BYTES_MAX_DEFAULT: usize = 64 * 1024 * 1024;

    pub fn new(bytes_max: usize) -> Self {
        Self { inner: Mutex::new(Inner::default()), bytes_max }
    }

    /// The document as of `heads`, if kept.
    pub fn get(&self, doc: DocId, heads: &Heads) -> Option<Automerge> {
        self.get_shared(doc, heads).map(|am| am.as_ref().clone())
    }

    /// The kept copy of `doc` if it is at `heads`, shared: for reading only.
    pub fn get_shared(&self, doc: DocId, heads: &Heads) -> Option<Arc<Automerge>> {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(&doc)?;
        if &entry.heads != heads {
            return None;
        }
        entry.used = now;
        Some(entry.doc.clone())
    }

    pub fn put(&self, doc: DocId, am: impl Into<Arc<Automerge>>, saved_bytes: usize) {
        // A loaded document takes a few times its compressed saved size.
        let bytes = saved_bytes.saturating_mul(4).saturating_add(4096);
        if bytes > self.bytes_max / 4 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.clock += 1;
        let used = inner.clock;
        let am: Arc<Automerge> = am.into();
        if let Some(old) =
            inner.entries.insert(doc, Entry { heads: Heads::new(am.get_heads()), doc: am, whole: None, bytes, used })
        {
            inner.bytes -= old.bytes;
        }
        inner.bytes += bytes;
        while inner.bytes > self.bytes_max {
            let Some(oldest) = inner.entries.iter().min_by_key(|(_, e)| e.used).map(|(d, _)| *d) else { break };
            if let Some(gone) = inner.entries.remove(&oldest) {
                inner.bytes -= gone.bytes;
            }
        }
    }

    /// Entries and their estimated bytes (metrics, tests).
    /// The document saved whole at `heads`, if a pull kept it.
    pub fn whole(&self, doc: DocId, heads: &Heads) -> Option<std::sync::Arc<Vec<u8>>> {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.entries.get(&doc).filter(|e| &e.heads == heads).and_then(|e| e.whole.clone())
    }

    /// Keep `whole`, the document saved whole at `heads`, with its entry (if it is still
    /// there at those heads). Counted in the bound.
    pub fn keep_whole(&self, doc: DocId, heads: &Heads, whole: std::sync::Arc<Vec<u8>>) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(entry) = inner.entries.get_mut(&doc).filter(|e| &e.heads == heads && e.whole.is_none()) else {
            return;
        };
        let added = whole.len();
        entry.whole = Some(whole);
        entry.bytes += added;
        inner.bytes += added;
    }

    pub fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_with(value: &str) -> Automerge {
        let mut am = Automerge::new();
        let mut tx = am.transaction();
        tx.put(automerge::ROOT, "k", value).expect("put");
        tx.commit();
        am
    }

    #[test]
    fn an_entry_is_used_only_at_the_heads_it_was_kept_at() {
        let cache = DocCache::default();
        let id = DocId::for_registry(&"melati-01".parse().expect("id"));
        let mut am = doc_with("a");
        cache.put(id, am.clone(), 100);
        let kept = Heads::new(am.get_heads());
        assert!(cache.get(id, &kept).is_some());
        let mut tx = am.transaction();
        tx.put(automerge::ROOT, "k", "b").expect("put");
        tx.commit();
        assert!(cache.get(id, &Heads::new(am.get_heads())).is_none(), "another instance wrote it since");
    }

    #[test]
    fn the_least_recently_used_entries_go_past_the_bound() {
        let cache = DocCache::new(64 * 1024);
        let ids: Vec<DocId> = (0..20).map(|i| DocId::for_registry(&format!("pos-{i}").parse().expect("id"))).collect();
        let am = doc_with("a");
        let heads = Heads::new(am.get_heads());
        for id in &ids {
            cache.put(*id, am.clone(), 1024);
            assert!(cache.get(ids[0], &heads).is_some(), "the first entry is in use and stays");
        }
        let (entries, bytes) = cache.usage();
        assert!(bytes <= 64 * 1024, "{bytes} bytes kept");
        assert!(entries < 20, "{entries} entries kept");
        assert!(cache.get(ids[1], &heads).is_none(), "an entry unused since it was kept went first");
    }
}

//! A document sent in pieces: its first changes after what the other side holds, in causal
//! order, up to a byte budget. A phone pushes a document larger than its link takes at once
//! this way, and the server pages a pulled document the same way; each piece applies on its
//! own because every change comes after all of its dependencies.

use crate::Heads;
use automerge::{Automerge, Change, ChangeHash};
use std::collections::HashSet;

/// One piece of a document.
#[derive(Debug)]
pub struct Piece {
    /// Concatenated raw changes, each after its dependencies.
    pub bytes: Vec<u8>,
    /// The heads of `known` plus this piece: what the receiver holds once it is applied.
    pub heads: Heads,
    /// Whether the piece holds every change after `known`.
    pub complete: bool,
}

/// The first changes of `am` after `known` whose bytes fit in `bytes_max` (at least one).
/// `known` must hold only hashes `am` has.
pub fn first_changes(am: &Automerge, known: &Heads, bytes_max: usize) -> Piece {
    let changes = causal_order(am.get_changes(known.as_slice()));
    let total = changes.len();
    let mut bytes = Vec::new();
    let mut taken: Vec<ChangeHash> = Vec::new();
    let mut deps = HashSet::new();
    for c in &changes {
        let raw = c.raw_bytes();
        if !taken.is_empty() && bytes.len() + raw.len() > bytes_max {
            break;
        }
        bytes.extend_from_slice(raw);
        taken.push(c.hash());
        deps.extend(c.deps().iter().copied());
    }
    let complete = taken.len() == total;
    let heads = known.as_slice().iter().chain(&taken).copied().filter(|h| !deps.contains(h)).collect();
    Piece { bytes, heads: Heads::new(heads), complete }
}

/// Changes sorted so that each comes after its dependencies within the set.
fn causal_order(changes: Vec<Change>) -> Vec<Change> {
    let inside: HashSet<_> = changes.iter().map(|c| c.hash()).collect();
    let mut placed = HashSet::new();
    let mut left = changes;
    let mut out = Vec::with_capacity(left.len());
    while !left.is_empty() {
        let (ready, wait): (Vec<_>, Vec<_>) =
            left.into_iter().partition(|c| c.deps().iter().all(|d| !inside.contains(d) || placed.contains(d)));
        if ready.is_empty() {
            // A cycle cannot exist in a change graph; never loop on bad data.
            out.extend(wait);
            break;
        }
        for c in ready {
            placed.insert(c.hash());
            out.push(c);
        }
        left = wait;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::ReadDoc;
    use automerge::transaction::Transactable;

    fn doc_of(changes: usize) -> Automerge {
        let mut am = Automerge::new();
        for i in 0..changes {
            let mut tx = am.transaction();
            tx.put(automerge::ROOT, format!("k{i}"), "x".repeat(100)).expect("put");
            tx.commit();
        }
        am
    }

    #[test]
    fn pieces_in_turn_rebuild_the_whole_document() {
        let am = doc_of(30);
        let mut got = Automerge::new();
        let mut known = Heads::empty();
        let mut pieces = 0;
        loop {
            let piece = first_changes(&am, &known, 600);
            assert!(piece.bytes.len() <= 600 || pieces == 0, "a piece over its budget");
            got.load_incremental(&piece.bytes).expect("a piece applies on its own");
            assert!(got.get_missing_deps(&[]).is_empty(), "a piece missing dependencies");
            assert_eq!(Heads::new(got.get_heads()), piece.heads);
            known = piece.heads;
            pieces += 1;
            if piece.complete {
                break;
            }
        }
        assert!(pieces > 1, "30 changes of ~100 bytes should not fit in one 600-byte piece");
        assert_eq!(got.get_heads(), am.get_heads());
    }

    #[test]
    fn a_change_larger_than_the_budget_still_goes_alone() {
        let am = doc_of(2);
        let piece = first_changes(&am, &Heads::empty(), 10);
        assert!(!piece.complete);
        let mut got = Automerge::new();
        got.load_incremental(&piece.bytes).expect("applies");
        assert_eq!(got.get_changes(&[]).len(), 1);
    }
}

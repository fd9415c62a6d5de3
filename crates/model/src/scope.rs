//! What a principal may read and write: a set of posyandu.
//!
//! Roles resolve to a scope through the hierarchy on the server (every posyandu under the
//! user's units); every document check is then "is this document's posyandu in the scope".

use crate::ids::PosyanduId;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    posyandu: BTreeSet<PosyanduId>,
}

/// Bytes of [`Scope::digest`].
pub const SCOPE_DIGEST_BYTES: usize = 8;

impl Scope {
    pub fn new(posyandu: impl IntoIterator<Item = PosyanduId>) -> Self {
        Self { posyandu: posyandu.into_iter().collect() }
    }

    pub fn allows(&self, p: &PosyanduId) -> bool {
        self.posyandu.contains(p)
    }

    pub fn posyandu(&self) -> impl Iterator<Item = &PosyanduId> {
        self.posyandu.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.posyandu.is_empty()
    }

    /// Whether every posyandu of `self` is also in `other`.
    pub fn is_subset(&self, other: &Scope) -> bool {
        self.posyandu.is_subset(&other.posyandu)
    }

    /// A short fingerprint of the set: the first 8 bytes of SHA-256 over the sorted ids, one
    /// per line. A device sends it with every sync; the server answers with the whole scope
    /// only when it differs, so an unchanged scope costs 8 bytes, whatever its size.
    pub fn digest(&self) -> [u8; SCOPE_DIGEST_BYTES] {
        let mut h = Sha256::new();
        for p in &self.posyandu {
            h.update(p.as_str().as_bytes());
            h.update(b"\n");
        }
        let full = h.finalize();
        let mut out = [0u8; SCOPE_DIGEST_BYTES];
        out.copy_from_slice(&full[..SCOPE_DIGEST_BYTES]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(ids: &[&str]) -> Scope {
        Scope::new(ids.iter().map(|s| s.parse().expect("id")))
    }

    #[test]
    fn digest_depends_on_the_set_not_the_order() {
        assert_eq!(scope(&["a", "b"]).digest(), scope(&["b", "a"]).digest());
        assert_ne!(scope(&["a", "b"]).digest(), scope(&["a"]).digest());
        // "a\nb" must not collide with "ab" split differently.
        assert_ne!(scope(&["ab"]).digest(), scope(&["a", "b"]).digest());
        assert_ne!(scope(&[]).digest(), scope(&["a"]).digest());
    }
}

//! Document heads as a value: a sorted set of change hashes.

use automerge::ChangeHash;

/// The heads of an Automerge document, kept sorted and de-duplicated so equal sets compare
/// equal and encode to equal bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Heads(Vec<ChangeHash>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("heads must be a multiple of 32 bytes, got {0}")]
pub struct HeadsLenError(pub usize);

impl Heads {
    pub const HASH_BYTES: usize = 32;

    pub fn new(mut hashes: Vec<ChangeHash>) -> Self {
        hashes.sort();
        hashes.dedup();
        Self(hashes)
    }

    pub fn empty() -> Self {
        Self(Vec::new())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn as_slice(&self) -> &[ChangeHash] {
        &self.0
    }

    /// Union of two head sets (used as "the other side has at least all of these").
    pub fn union(&self, other: &Heads) -> Heads {
        Heads::new(self.0.iter().chain(other.0.iter()).copied().collect())
    }

    /// Concatenated 32-byte hashes: the wire and storage form.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.0.iter().flat_map(|h| h.0).collect()
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, HeadsLenError> {
        if !bytes.len().is_multiple_of(Self::HASH_BYTES) {
            return Err(HeadsLenError(bytes.len()));
        }
        let hashes = bytes
            .chunks_exact(Self::HASH_BYTES)
            .map(|c| {
                let mut a = [0u8; 32];
                a.copy_from_slice(c);
                ChangeHash(a)
            })
            .collect();
        Ok(Self::new(hashes))
    }

    pub fn to_hex(&self) -> Vec<String> {
        self.0.iter().map(|h| h.to_string()).collect()
    }
}

impl From<Vec<ChangeHash>> for Heads {
    fn from(v: Vec<ChangeHash>) -> Self {
        Heads::new(v)
    }
}

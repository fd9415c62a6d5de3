//! What a principal may read and write: a set of posyandu.
//!
//! Roles (kader, puskesmas officer, district admin) resolve to a scope through the hierarchy;
//! every document check is then "is this document's posyandu in the scope".

use crate::ids::PosyanduId;
use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    posyandu: BTreeSet<PosyanduId>,
}

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
}

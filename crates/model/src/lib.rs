//! The posyandu domain and its mapping to Automerge documents.
//!
//! This crate knows nothing of HTTP or SQL. It owns:
//! - identifiers ([`ids`]) parsed once at the boundary and trusted inside;
//! - typed records ([`record`]) for a posyandu session's visits and the posyandu's registry of people;
//! - the Automerge layout of each document kind ([`doc`]), including the deterministic genesis
//!   change that lets several phones create "the same" session document offline;
//! - conflict discovery ([`conflict`]): fields holding more than one concurrent value.

pub mod conflict;
pub mod doc;
pub mod growth;
pub mod guard;
pub mod heads;
pub mod hierarchy;
pub mod ids;
pub mod piece;
pub mod record;
pub mod report;

pub use conflict::{FieldConflict, Policy, conflicts, policy_for, record_conflicts};
pub use doc::{DocError, DocKind, DocMeta};
pub use heads::Heads;
pub use hierarchy::{HierarchyError, HierarchyFile, Unit, UnitKind, UserSpec};
pub use ids::{DeviceId, DocId, IdError, PersonId, PosyanduId, UnitId, UserId, VisitId};
pub use record::{Field, FieldValue, LifeGroup, Person, Sex, Visit, VitaminA};
pub mod scope;
pub mod validate;
pub use scope::Scope;
pub mod role;
pub use role::Role;

//! The device side of posync: a SQLite replica of Automerge documents on a kader's phone or a
//! puskesmas tablet.
//!
//! - Capture ([`Replica::start_session`], [`Replica::record_visit`], [`Replica::edit_visit`], …)
//!   works with no network; each capture is one SQLite transaction, durable when it returns.
//! - The outbox is every document whose local heads differ from the heads the server has
//!   acknowledged.
//! - Sync is split sans-I/O: [`Replica::prepare_sync`] builds a request, [`Replica::apply_response`]
//!   applies an answer in one transaction. [`Replica::sync`] drives them over HTTP. A crash
//!   anywhere in between loses nothing: un-acknowledged changes stay in the outbox and are
//!   re-sent, and a replayed push is a no-op at the server.

mod client;
mod error;
mod link;
mod replica;
mod stored;

pub use client::{
    HttpSync, Progress, RetryPolicy, SyncReport, WireBytes, enrol, enrol_via, probe_of, refuses_document,
};
pub use error::ReplicaError;
pub use link::{PAGE_BUDGET_MIN, RoundPlan};
pub use replica::{
    ApplyReport, Credential, NewPerson, NewVisit, PersonRow, Replica, SecretStore, SyncLock, Trimmed, VisitRow,
    marker_path, window_start,
};

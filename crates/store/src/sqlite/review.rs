//! Review and reports on SQLite: conflicts resolved and people merged (changes the server
//! makes to a document, committed like a push), and the reads behind reports and exports.

use super::exec::{D, query, query_opt, run_writes};
use super::{SqliteStore, commit_doc, doc_bytes, stored_doc};
use crate::core;
use crate::plan;
use crate::{AuditEntry, ReportStore, ReviewStore, StoreError};
use async_trait::async_trait;
use posync_model::{DocId, FieldValue, PersonId, Scope};
use rusqlite::Transaction;

/// Store a change the server made to a document (a resolution, a merge of people): feed row,
/// document, projection and conflict index, in the caller's transaction.
fn commit_server_change(
    tx: &Transaction<'_>,
    doc: DocId,
    kind: posync_model::DocKind,
    posyandu: &str,
    changed: core::Resolved,
    instance: &str,
    now: i64,
) -> Result<u64, StoreError> {
    let writer = format!("server:{instance}");
    let state = plan::NewState::new(doc, kind, posyandu, &changed.heads, core::DocWrite::Whole(changed.saved), writer);
    let seq = commit_doc(tx, &state, now)?;
    run_writes(tx, &plan::record_writes(D, doc, posyandu, Some(&changed.projection), &changed.conflicts, now)?)?;
    Ok(seq)
}

/// The stored document a server change applies to: its kind and bytes.
fn doc_to_change(tx: &Transaction<'_>, doc: DocId) -> Result<(posync_model::DocKind, Vec<u8>), StoreError> {
    let row = stored_doc(tx, doc)?.ok_or_else(|| StoreError::NotFound(format!("document {doc}")))?;
    Ok((row.kind, doc_bytes(tx, doc)?))
}

fn resolve_tx(
    tx: &Transaction<'_>,
    id: &str,
    value: &FieldValue,
    instance: &str,
    now: i64,
) -> Result<crate::ResolvedConflict, StoreError> {
    let row = query_opt(tx, &plan::conflict_by_id(D, id))?;
    let c = plan::conflict(&row.ok_or_else(|| StoreError::NotFound(format!("open conflict {id}")))?)?;
    let (kind, saved) = doc_to_change(tx, c.doc)?;
    let target = core::Target { collection: &c.collection, record_id: &c.record_id, field: &c.field };
    let resolved = core::resolve(c.doc, &saved, &target, value, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, c.doc, kind, c.posyandu.as_str(), resolved, instance, now)?;
    Ok(crate::ResolvedConflict { doc: c.doc, seq })
}

/// Mark `duplicate` as merged into `keep` in the duplicate's registry, as the server's change.
fn merge_tx(
    tx: &Transaction<'_>,
    scope: &Scope,
    duplicate: PersonId,
    keep: PersonId,
    instance: &str,
    now: i64,
) -> Result<crate::ResolvedConflict, StoreError> {
    let locate = |id: PersonId| -> Result<(DocId, posync_model::PosyanduId), StoreError> {
        let row = query_opt(tx, &plan::locate_person(D, id))?
            .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))?;
        let doc = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
        Ok((doc, row.text(1)?.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?))
    };
    if duplicate == keep {
        return Err(StoreError::Invalid("a person cannot be merged into itself".into()));
    }
    let (doc, posyandu) = locate(duplicate)?;
    let (_, keep_posyandu) = locate(keep)?;
    if !scope.allows(&posyandu) || !scope.allows(&keep_posyandu) {
        return Err(StoreError::NotFound("unmerged person in your scope".into()));
    }
    let (kind, saved) = doc_to_change(tx, doc)?;
    let changed = core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(instance), now)?;
    let seq = commit_server_change(tx, doc, kind, posyandu.as_str(), changed, instance, now)?;
    Ok(crate::ResolvedConflict { doc, seq })
}

#[async_trait]
impl ReviewStore for SqliteStore {
    async fn conflicts(
        &self,
        scope: Scope,
        filter: crate::ConflictFilter,
    ) -> Result<Vec<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::conflicts_list(D, &scope, &filter))?.iter().map(plan::conflict).collect()
        })
        .await
    }

    async fn conflict(&self, id: String) -> Result<Option<crate::ConflictRecord>, StoreError> {
        self.read(move |conn| query_opt(conn, &plan::conflict_by_id(D, &id))?.as_ref().map(plan::conflict).transpose())
            .await
    }

    async fn resolve_conflict(
        &self,
        id: String,
        value: FieldValue,
        instance: String,
        audit: AuditEntry,
    ) -> Result<crate::ResolvedConflict, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| resolve_tx(tx, &id, &value, &instance, now)).await
    }

    async fn duplicate_people(&self, scope: Scope) -> Result<Vec<crate::DuplicatePair>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::duplicate_people(D, &scope))?.iter().map(plan::duplicate_pair).collect()
        })
        .await
    }

    async fn merge_people(
        &self,
        scope: Scope,
        duplicate: PersonId,
        keep: PersonId,
        instance: String,
        audit: AuditEntry,
    ) -> Result<crate::ResolvedConflict, StoreError> {
        let now = audit.at;
        self.write_audited(audit, move |tx| merge_tx(tx, &scope, duplicate, keep, &instance, now)).await
    }

    async fn invalid_records(&self, scope: Scope) -> Result<Vec<crate::InvalidRecord>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::invalid_records(D, &scope))?.iter().map(plan::invalid_record).collect()
        })
        .await
    }
}

#[async_trait]
impl ReportStore for SqliteStore {
    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        self.read(move |conn| query(conn, &plan::report_facts(D, &scope, from, to))?.iter().map(plan::fact).collect())
            .await
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        self.read(move |conn| {
            Ok(query(conn, &plan::registered_people(D, &scope))?.iter().filter_map(plan::registered_person).collect())
        })
        .await
    }

    async fn person_facts(
        &self,
        scope: Scope,
        person: posync_model::PersonId,
    ) -> Result<Vec<crate::PersonVisit>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::person_facts(D, &scope, person))?.iter().map(plan::person_visit).collect()
        })
        .await
    }

    async fn people_seen(
        &self,
        scope: Scope,
        name: Option<String>,
        limit: u32,
    ) -> Result<Vec<crate::PersonSeen>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::people_seen(D, &scope, name.as_deref(), limit))?.iter().map(plan::person_seen).collect()
        })
        .await
    }

    async fn people_contacts(&self, scope: Scope) -> Result<Vec<crate::PersonContact>, StoreError> {
        self.read(move |conn| {
            query(conn, &plan::people_contacts(D, &scope))?.iter().map(plan::person_contact).collect()
        })
        .await
    }
    async fn people_export(&self, scope: Scope) -> Result<Vec<crate::PersonExport>, StoreError> {
        self.read(move |conn| query(conn, &plan::people_export(D, &scope))?.iter().map(plan::person_export).collect())
            .await
    }
}

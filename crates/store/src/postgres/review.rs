//! Review and reports on PostgreSQL: conflicts resolved and people merged (changes the
//! server makes to a document, committed like a push), and the reads behind reports.

use super::exec::{D, query_opt, run_writes};
use super::{PgStore, access, blocking, commit_pending, doc_bytes, lock_docs, stored_doc};
use crate::core;
use crate::plan;
use crate::{
    AuditEntry, ConflictFilter, ConflictRecord, DuplicatePair, ReportStore, ResolvedConflict, ReviewStore, StoreError,
};
use async_trait::async_trait;
use deadpool_postgres::Transaction;
use posync_model::{DocId, DocKind, FieldValue, PersonId, PosyanduId, Scope};

/// Store a change the server made to a document (a resolution, a merge of people):
/// projection, conflict index, then feed row and document, in the caller's transaction.
async fn commit_server_change(
    tx: &Transaction<'_>,
    doc: DocId,
    kind: DocKind,
    posyandu: &str,
    changed: core::Resolved,
    instance: &str,
    now: i64,
) -> Result<u64, StoreError> {
    run_writes(tx, &plan::record_writes(D, doc, posyandu, Some(&changed.projection), &changed.conflicts, now)?).await?;
    let write = core::DocWrite::Whole(changed.saved);
    let pending = plan::NewState::new(doc, kind, posyandu, &changed.heads, write, format!("server:{instance}"));
    let seqs = commit_pending(tx, std::slice::from_ref(&pending), now).await?;
    seqs.first().map(|s| *s as u64).ok_or_else(|| StoreError::Backend("no feed position".into()))
}

async fn conflict_by_id(tx: &Transaction<'_>, id: &str) -> Result<Option<ConflictRecord>, StoreError> {
    query_opt(tx, &plan::conflict_by_id(D, id)).await?.as_ref().map(plan::conflict).transpose()
}

/// The stored document a server change applies to: its kind and bytes (read under its lock).
async fn doc_to_change(tx: &Transaction<'_>, doc: DocId) -> Result<(DocKind, Vec<u8>), StoreError> {
    let row = stored_doc(tx, doc).await?.ok_or_else(|| StoreError::NotFound(format!("document {doc}")))?;
    Ok((row.kind, doc_bytes(tx, doc).await?))
}

async fn resolve_tx(
    tx: &Transaction<'_>,
    id: &str,
    value: &FieldValue,
    instance: &str,
    now: i64,
) -> Result<ResolvedConflict, StoreError> {
    let not_open = || StoreError::NotFound(format!("open conflict {id}"));
    let first = conflict_by_id(tx, id).await?.ok_or_else(not_open)?;
    lock_docs(tx, [first.doc]).await?;
    // Read again under the lock: another instance may have resolved it meanwhile.
    let c = conflict_by_id(tx, id).await?.ok_or_else(not_open)?;
    let (kind, saved) = doc_to_change(tx, c.doc).await?;
    let (collection, record_id, field, value, instance_s) =
        (c.collection.clone(), c.record_id.clone(), c.field.clone(), value.clone(), instance.to_owned());
    let doc = c.doc;
    let resolved = blocking(move || {
        let target = core::Target { collection: &collection, record_id: &record_id, field: &field };
        core::resolve(doc, &saved, &target, &value, posync_model::doc::server_actor(&instance_s), now)
    })
    .await?;
    let seq = commit_server_change(tx, c.doc, kind, c.posyandu.as_str(), resolved, instance, now).await?;
    Ok(ResolvedConflict { doc: c.doc, seq })
}

async fn locate_person(tx: &Transaction<'_>, id: PersonId) -> Result<(DocId, PosyanduId), StoreError> {
    let row = query_opt(tx, &plan::locate_person(D, id))
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("unmerged person {id}")))?;
    let doc = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad doc id".into()))?;
    Ok((doc, row.text(1)?.parse().map_err(|_| StoreError::Backend("bad posyandu".into()))?))
}

async fn merge_tx(
    tx: &Transaction<'_>,
    scope: &Scope,
    duplicate: PersonId,
    keep: PersonId,
    instance: &str,
    now: i64,
) -> Result<ResolvedConflict, StoreError> {
    if duplicate == keep {
        return Err(StoreError::Invalid("a person cannot be merged into itself".into()));
    }
    let (doc, _) = locate_person(tx, duplicate).await?;
    lock_docs(tx, [doc]).await?;
    // Again under the lock: it may have been merged meanwhile.
    let (doc, posyandu) = locate_person(tx, duplicate).await?;
    let (_, keep_posyandu) = locate_person(tx, keep).await?;
    if !scope.allows(&posyandu) || !scope.allows(&keep_posyandu) {
        return Err(StoreError::NotFound("unmerged person in your scope".into()));
    }
    let (kind, saved) = doc_to_change(tx, doc).await?;
    let instance_s = instance.to_owned();
    let changed = blocking(move || {
        core::merge_people(doc, &saved, duplicate, keep, posync_model::doc::server_actor(&instance_s), now)
    })
    .await?;
    let seq = commit_server_change(tx, doc, kind, posyandu.as_str(), changed, instance, now).await?;
    Ok(ResolvedConflict { doc, seq })
}

#[async_trait]
impl ReviewStore for PgStore {
    async fn conflicts(&self, scope: Scope, filter: ConflictFilter) -> Result<Vec<ConflictRecord>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::conflicts_list(D, &scope, &filter)).await?;
        rows.iter().map(plan::conflict).collect()
    }

    async fn conflict(&self, id: String) -> Result<Option<ConflictRecord>, StoreError> {
        reading!(self, |tx| conflict_by_id(&tx, &id).await?)
    }

    async fn resolve_conflict(
        &self,
        id: String,
        value: FieldValue,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| resolve_tx(&tx, &id, &value, &instance, now).await?)
    }

    async fn duplicate_people(&self, scope: Scope) -> Result<Vec<DuplicatePair>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::duplicate_people(D, &scope)).await?;
        rows.iter().map(plan::duplicate_pair).collect()
    }

    async fn merge_people(
        &self,
        scope: Scope,
        duplicate: PersonId,
        keep: PersonId,
        instance: String,
        audit: AuditEntry,
    ) -> Result<ResolvedConflict, StoreError> {
        let now = audit.at;
        audited!(self, audit, |tx| merge_tx(&tx, &scope, duplicate, keep, &instance, now).await?)
    }

    async fn invalid_records(&self, scope: Scope) -> Result<Vec<crate::InvalidRecord>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::invalid_records(D, &scope)).await?;
        rows.iter().map(plan::invalid_record).collect()
    }
}

#[async_trait]
impl ReportStore for PgStore {
    async fn report_facts(
        &self,
        scope: Scope,
        from: time::Date,
        to: time::Date,
    ) -> Result<Vec<posync_model::report::VisitFact>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::report_facts(D, &scope, from, to)).await?;
        rows.iter().map(plan::fact).collect()
    }

    async fn registered_people(&self, scope: Scope) -> Result<Vec<posync_model::report::RegisteredPerson>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::registered_people(D, &scope)).await?;
        Ok(rows.iter().filter_map(plan::registered_person).collect())
    }

    async fn person_facts(
        &self,
        scope: Scope,
        person: posync_model::PersonId,
    ) -> Result<Vec<crate::PersonVisit>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::person_facts(D, &scope, person)).await?;
        rows.iter().map(plan::person_visit).collect()
    }

    async fn people_seen(
        &self,
        scope: Scope,
        name: Option<String>,
        limit: u32,
    ) -> Result<Vec<crate::PersonSeen>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_seen(D, &scope, name.as_deref(), limit)).await?;
        rows.iter().map(plan::person_seen).collect()
    }

    async fn people_contacts(&self, scope: Scope) -> Result<Vec<crate::PersonContact>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_contacts(D, &scope)).await?;
        rows.iter().map(plan::person_contact).collect()
    }
    async fn people_export(&self, scope: Scope) -> Result<Vec<crate::PersonExport>, StoreError> {
        let rows: Vec<crate::sql::Row> = self.read_rows(plan::people_export(D, &scope)).await?;
        rows.iter().map(plan::person_export).collect()
    }
}

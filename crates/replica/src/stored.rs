//! Documents as the phone stores them: loading, saving, and the projection its screens read.
//!
//! A capture costs what it changes, not what the session holds:
//! - the documents being worked on stay loaded between captures ([`Loaded`]), used only while
//!   their heads are the stored heads (another process may have written the file);
//! - a capture appends its change as a row of `doc_chunks` (the saved document followed by
//!   its chunks loads as one document) and the document is saved whole only every
//!   [`CHUNKS_MAX`] captures, or when the appended form would pass the document budget;
//! - a capture re-projects the one record it touched, not every record of the document.
//!
//! Pulls and rebuilt documents still save and project whole ([`save_doc`]).

use crate::error::ReplicaError;
use automerge::{Automerge, ChangeHash};
use posync_model::doc::{self, DocMeta};
use posync_model::record::format_date;
use posync_model::{DocId, DocKind, Field, FieldValue, Heads, Person, PersonId, Visit, VisitId, conflicts};
use rusqlite::{Connection, OptionalExtension, Statement, Transaction, params};
use std::collections::{BTreeMap, HashMap};

/// Captures appended to a document's stored bytes before it is saved whole again.
pub const CHUNKS_MAX: i64 = 64;

/// Documents kept loaded between captures (a kader works in one session and one registry).
const LOADED_DOCS_MAX: usize = 4;

/// The record a capture touched.
#[derive(Clone, Copy, Debug)]
pub enum Touched {
    Visit(VisitId),
    Person(PersonId),
}

/// Loaded documents, used only at the heads the file holds; the least recently kept goes
/// first past [`LOADED_DOCS_MAX`].
#[derive(Default)]
pub struct Loaded {
    docs: HashMap<DocId, (Automerge, u64)>,
    clock: u64,
}

impl Loaded {
    /// The document as stored now: the kept copy if its heads are the stored heads, else
    /// loaded from the file. Taken out: a capture that fails leaves nothing half-applied here.
    pub fn take(&mut self, tx: &Connection, id: DocId) -> Result<Option<Automerge>, ReplicaError> {
        let stored: Option<Vec<u8>> = tx
            .prepare_cached("SELECT heads FROM docs WHERE doc_id = ?1")?
            .query_row([id.to_string()], |r| r.get(0))
            .optional()?;
        let Some(stored) = stored else {
            self.docs.remove(&id);
            return Ok(None);
        };
        if let Some((am, _)) = self.docs.remove(&id)
            && Heads::new(am.get_heads()).to_bytes() == stored
        {
            return Ok(Some(am));
        }
        load_doc(tx, id)
    }

    /// The document left the device: nothing of it stays loaded.
    pub fn forget(&mut self, id: DocId) {
        self.docs.remove(&id);
    }

    /// Keep `am` (just committed) for the next capture.
    pub fn keep(&mut self, id: DocId, am: Automerge) {
        if self.docs.len() >= LOADED_DOCS_MAX
            && !self.docs.contains_key(&id)
            && let Some(oldest) = self.docs.iter().min_by_key(|(_, (_, kept))| *kept).map(|(d, _)| *d)
        {
            self.docs.remove(&oldest);
        }
        self.clock += 1;
        self.docs.insert(id, (am, self.clock));
    }
}

pub fn load_doc(conn: &Connection, id: DocId) -> Result<Option<Automerge>, ReplicaError> {
    let bytes = stored_bytes(conn, id)?;
    bytes.map(|b| Automerge::load(&b).map_err(|_| ReplicaError::Corrupt(id))).transpose()
}

/// A document's stored bytes: its last whole save followed by the captures appended since
/// (change chunks), which Automerge loads, and the server takes, as one document.
pub fn stored_bytes(conn: &Connection, id: DocId) -> Result<Option<Vec<u8>>, ReplicaError> {
    let doc_s = id.to_string();
    let Some(mut bytes) = conn
        .prepare_cached("SELECT bytes FROM docs WHERE doc_id = ?1")?
        .query_row([&doc_s], |r| r.get::<_, Vec<u8>>(0))
        .optional()?
    else {
        return Ok(None);
    };
    let mut chunks = conn.prepare_cached("SELECT bytes FROM doc_chunks WHERE doc_id = ?1 ORDER BY n")?;
    let mut rows = chunks.query([&doc_s])?;
    while let Some(row) = rows.next()? {
        bytes.extend_from_slice(&row.get::<_, Vec<u8>>(0)?);
    }
    Ok(Some(bytes))
}

/// The length of a document's stored bytes (at least its saved size).
pub fn stored_len(conn: &Connection, id: DocId) -> Result<usize, ReplicaError> {
    let n: i64 = conn
        .prepare_cached(
            "SELECT length(bytes) + COALESCE((SELECT SUM(length(bytes)) FROM doc_chunks WHERE doc_id = ?1), 0)
             FROM docs WHERE doc_id = ?1",
        )?
        .query_row([id.to_string()], |r| r.get(0))?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// Forget a document's appended captures (it was just saved whole, or dropped).
pub fn drop_chunks(tx: &Transaction<'_>, doc_s: &str) -> Result<(), ReplicaError> {
    tx.prepare_cached("DELETE FROM doc_chunks WHERE doc_id = ?1")?.execute([doc_s])?;
    Ok(())
}

/// Store a capture: the changes of `am` after `before` appended to the stored bytes, or the
/// document saved whole every [`CHUNKS_MAX`] captures and whenever the appended form would
/// pass `whole_from_bytes`. Marks the document dirty; re-projects `touched`. Returns the
/// stored size.
pub fn save_capture(
    tx: &Transaction<'_>,
    id: DocId,
    am: &Automerge,
    before: &[ChangeHash],
    touched: Touched,
    whole_from_bytes: usize,
) -> Result<usize, ReplicaError> {
    let doc_s = id.to_string();
    let size = append(tx, id, am, before, whole_from_bytes)?;
    tx.prepare_cached("UPDATE docs SET dirty = 1 WHERE doc_id = ?1")?.execute([&doc_s])?;
    let meta = doc::read_meta(am)?;
    let reader = doc::RecordReader::of(am)?;
    match touched {
        Touched::Visit(v) => project_visit(tx, &doc_s, &meta, &reader, v)?,
        Touched::Person(p) => project_person(tx, &doc_s, &meta, &reader, p)?,
    }
    Ok(size)
}

/// Store the changes of `am` after `before`: appended to the stored bytes as one change
/// chunk, or the document saved whole every [`CHUNKS_MAX`] appends and whenever the
/// appended form would pass `whole_from_bytes`. Sets the stored heads; returns the stored size.
fn append(
    tx: &Transaction<'_>,
    id: DocId,
    am: &Automerge,
    before: &[ChangeHash],
    whole_from_bytes: usize,
) -> Result<usize, ReplicaError> {
    append_delta(tx, id, am, am.save_after(before), whole_from_bytes)
}

/// [`append`] of the changes after `before` already encoded (`delta`).
fn append_delta(
    tx: &Transaction<'_>,
    id: DocId,
    am: &Automerge,
    delta: Vec<u8>,
    whole_from_bytes: usize,
) -> Result<usize, ReplicaError> {
    let doc_s = id.to_string();
    let chunks: i64 =
        tx.prepare_cached("SELECT chunks FROM docs WHERE doc_id = ?1")?.query_row([&doc_s], |r| r.get(0))?;
    let heads = Heads::new(am.get_heads()).to_bytes();
    let appended = stored_len(tx, id)?.saturating_add(delta.len());
    if chunks + 1 >= CHUNKS_MAX || appended > whole_from_bytes {
        let saved = am.save();
        tx.prepare_cached("UPDATE docs SET bytes = ?2, heads = ?3, chunks = 0 WHERE doc_id = ?1")?
            .execute(params![doc_s, saved, heads])?;
        drop_chunks(tx, &doc_s)?;
        return Ok(saved.len());
    }
    tx.prepare_cached("INSERT OR REPLACE INTO doc_chunks (doc_id, n, bytes) VALUES (?1, ?2, ?3)")?
        .execute(params![doc_s, chunks, delta])?;
    tx.prepare_cached("UPDATE docs SET heads = ?2, chunks = chunks + 1 WHERE doc_id = ?1")?
        .execute(params![doc_s, heads])?;
    Ok(appended)
}

/// Store pulled changes to a document held here: appended like a capture (`new`, the
/// changes the pull added, collected once by the caller), and only the records they reach
/// (`records`, ids in the document's collection) projected again. `dirty` is left to the
/// caller, which knows the server's heads.
pub fn save_pulled(
    tx: &Transaction<'_>,
    id: DocId,
    am: &Automerge,
    new: &doc::NewChanges,
    records: &[String],
) -> Result<(), ReplicaError> {
    append_delta(tx, id, am, new.to_bytes(), usize::MAX)?;
    project_records(tx, id, am, records)
}

/// Store the server's whole copy of a document held here, loaded as `am`: `bytes`, as they
/// came, become the stored document (a saved document needs no save again, and the
/// appended chunks are gone with the state they led to). `records`: the records that differ
/// from the copy held before, projected again; `None`: the whole document. `dirty` is left
/// to the caller.
pub fn save_adopted(
    tx: &Transaction<'_>,
    id: DocId,
    am: &Automerge,
    bytes: &[u8],
    records: Option<&[String]>,
) -> Result<(), ReplicaError> {
    let doc_s = id.to_string();
    let heads = Heads::new(am.get_heads()).to_bytes();
    tx.prepare_cached("UPDATE docs SET bytes = ?2, heads = ?3, chunks = 0 WHERE doc_id = ?1")?
        .execute(params![doc_s, bytes, heads])?;
    drop_chunks(tx, &doc_s)?;
    match records {
        Some(records) => project_records(tx, id, am, records),
        None => project_whole(tx, &doc_s, &doc::read_meta(am)?, am),
    }
}

/// Project `records` (ids in the document's collection) of `am` again.
fn project_records(tx: &Transaction<'_>, id: DocId, am: &Automerge, records: &[String]) -> Result<(), ReplicaError> {
    let meta = doc::read_meta(am)?;
    let reader = doc::RecordReader::of(am)?;
    let doc_s = id.to_string();
    for record in records {
        match meta.kind {
            DocKind::Session => {
                let Ok(v) = record.parse() else { return Err(ReplicaError::Corrupt(id)) };
                project_visit(tx, &doc_s, &meta, &reader, v)?;
            }
            DocKind::Registry => {
                let Ok(p) = record.parse() else { return Err(ReplicaError::Corrupt(id)) };
                project_person(tx, &doc_s, &meta, &reader, p)?;
            }
        }
    }
    Ok(())
}

/// Write a document whole and its whole projection; returns its saved size. `local` marks a
/// capture (dirty); for a pull the caller sets `dirty` from the acknowledged heads.
pub fn save_doc(tx: &Transaction<'_>, id: DocId, am: &Automerge, local: bool) -> Result<usize, ReplicaError> {
    let meta = doc::read_meta(am)?;
    let heads = Heads::new(am.get_heads()).to_bytes();
    let doc_s = id.to_string();
    let saved = am.save();
    tx.prepare_cached(
        "INSERT INTO docs (doc_id, kind, posyandu, bytes, heads, server_heads, dirty)
         VALUES (?1, ?2, ?3, ?4, ?5, X'', ?6)
         ON CONFLICT(doc_id) DO UPDATE SET bytes = ?4, heads = ?5, dirty = CASE WHEN ?6 THEN 1 ELSE dirty END,
             chunks = 0",
    )?
    .execute(params![doc_s, meta.kind.code(), meta.posyandu.as_str(), saved, heads, local])?;
    drop_chunks(tx, &doc_s)?;
    project_whole(tx, &doc_s, &meta, am)?;
    Ok(saved.len())
}

/// Every record of the document projected again, its old rows replaced.
fn project_whole(tx: &Transaction<'_>, doc_s: &str, meta: &DocMeta, am: &Automerge) -> Result<(), ReplicaError> {
    match meta.kind {
        DocKind::Session => project_visits(tx, doc_s, meta, am),
        DocKind::Registry => project_people(tx, doc_s, meta, am),
    }
}

/// "Under review" on screen: for each record, its fields whose policy sends them to a person.
fn under_review(found: Vec<posync_model::FieldConflict>) -> BTreeMap<String, Vec<String>> {
    let mut conflicted: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for c in found.into_iter().filter(|c| c.policy() == posync_model::Policy::Review) {
        conflicted.entry(c.record_id).or_default().push(c.field);
    }
    conflicted
}

fn project_visits(tx: &Transaction<'_>, doc_s: &str, meta: &DocMeta, am: &Automerge) -> Result<(), ReplicaError> {
    let conflicted = under_review(conflicts(am)?);
    tx.prepare_cached("DELETE FROM visits WHERE doc_id = ?1")?.execute([doc_s])?;
    let mut ins = insert_visit_stmt(tx)?;
    for v in doc::visits(am)? {
        let conf = conflicted.get(&v.visit_id.to_string()).map(|f| f.join(",")).unwrap_or_default();
        insert_visit(&mut ins, doc_s, meta, &v, &conf)?;
    }
    Ok(())
}

/// Re-project the one visit a capture touched.
fn project_visit(
    tx: &Transaction<'_>,
    doc_s: &str,
    meta: &DocMeta,
    reader: &doc::RecordReader<'_>,
    id: VisitId,
) -> Result<(), ReplicaError> {
    let vid = id.to_string();
    tx.prepare_cached("DELETE FROM visits WHERE visit_id = ?1 AND doc_id = ?2")?.execute([&vid, doc_s])?;
    if let Some((v, conflicts)) = reader.visit_with_conflicts(id)? {
        let conflicted = under_review(conflicts);
        let conf = conflicted.get(&vid).map(|f| f.join(",")).unwrap_or_default();
        insert_visit(&mut *insert_visit_stmt(tx)?, doc_s, meta, &v, &conf)?;
    }
    Ok(())
}

fn insert_visit_stmt<'t>(tx: &'t Transaction<'_>) -> Result<rusqlite::CachedStatement<'t>, ReplicaError> {
    // OR REPLACE: the server refuses a visit id used in two documents, but a phone may hold
    // such a pair until then (its own refused capture and a pulled document); listing one of
    // them must not make every later sync fail.
    Ok(tx.prepare_cached(
        "INSERT OR REPLACE INTO visits (visit_id, doc_id, posyandu, session_date, person_id, name, sex, birth_date, weight_g,
            length_mm, head_circ_mm, muac_mm, vitamin_a, immunisations, notes, recorded_by, recorded_at, conflicts,
            life_group, services)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20)",
    )?)
}

fn insert_visit(
    ins: &mut Statement<'_>,
    doc_s: &str,
    meta: &DocMeta,
    v: &Visit,
    conf: &str,
) -> Result<(), ReplicaError> {
    let imm: Vec<&str> = v.immunisations.keys().map(String::as_str).collect();
    ins.execute(params![
        v.visit_id.to_string(),
        doc_s,
        meta.posyandu.as_str(),
        meta.date.map(format_date).unwrap_or_default(),
        v.person_id.to_string(),
        v.name,
        v.sex.code(),
        format_date(v.birth_date),
        v.weight_g,
        v.length_mm,
        v.head_circ_mm,
        v.muac_mm,
        v.vitamin_a.map(|a| a.code()),
        imm.join(","),
        v.notes,
        v.recorded_by.to_string(),
        v.recorded_at,
        conf,
        v.group.code(),
        services_json(&v.services),
    ])?;
    Ok(())
}

fn services_json(services: &BTreeMap<Field, FieldValue>) -> String {
    let map: serde_json::Map<String, serde_json::Value> = services
        .iter()
        .map(|(f, v)| (f.key().to_owned(), serde_json::to_value(v).unwrap_or(serde_json::Value::Null)))
        .collect();
    serde_json::Value::Object(map).to_string()
}

fn project_people(tx: &Transaction<'_>, doc_s: &str, meta: &DocMeta, am: &Automerge) -> Result<(), ReplicaError> {
    tx.prepare_cached("DELETE FROM people WHERE doc_id = ?1")?.execute([doc_s])?;
    let mut ins = insert_person_stmt(tx)?;
    for p in doc::people(am)? {
        insert_person(&mut ins, doc_s, meta, &p)?;
    }
    Ok(())
}

/// Re-project the one person a capture touched.
fn project_person(
    tx: &Transaction<'_>,
    doc_s: &str,
    meta: &DocMeta,
    reader: &doc::RecordReader<'_>,
    id: PersonId,
) -> Result<(), ReplicaError> {
    tx.prepare_cached("DELETE FROM people WHERE person_id = ?1 AND doc_id = ?2")?.execute([&id.to_string(), doc_s])?;
    if let Some(p) = reader.person(id)? {
        insert_person(&mut *insert_person_stmt(tx)?, doc_s, meta, &p)?;
    }
    Ok(())
}

fn insert_person_stmt<'t>(tx: &'t Transaction<'_>) -> Result<rusqlite::CachedStatement<'t>, ReplicaError> {
    Ok(tx.prepare_cached(
        "INSERT OR REPLACE INTO people (person_id, doc_id, posyandu, name, sex, birth_date, mother_name, nik)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?)
}

fn insert_person(ins: &mut Statement<'_>, doc_s: &str, meta: &DocMeta, p: &Person) -> Result<(), ReplicaError> {
    ins.execute(params![
        p.person_id.to_string(),
        doc_s,
        meta.posyandu.as_str(),
        p.name,
        p.sex.code(),
        format_date(p.birth_date),
        p.mother_name,
        p.nik,
    ])?;
    Ok(())
}

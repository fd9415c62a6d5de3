//! What the store reads and writes, written once for SQLite and PostgreSQL: every statement
//! of the sync, conflict, people and report paths, built for a [`Dialect`], and every row
//! parsed back into domain types. No I/O: the adapters run these statements and hand the
//! rows back (see `ARCHITECTURE.md`, "One home for the store's logic").
//!
//! Adding a visit field: its column in both schemas' migrations, and [`visit_row`] /
//! [`VISIT_COLUMNS`] here (a service field needs only its migration column).

pub mod access;

use crate::core::{DocWrite, Projection, Records, StoredForm};
use crate::sql::{Dialect, Insert, Row, Statement, Value};
use crate::{ConflictFilter, ConflictRecord, ConflictValueRecord, StoreError, StoredMeta};
use posync_model::record::{FieldKind, format_date, parse_date};
use posync_model::{
    DeviceId, DocId, DocKind, Field, FieldConflict, FieldValue, Heads, Person, Policy, PosyanduId, Scope, Visit,
};
use std::collections::HashMap;

fn scope_texts(scope: &Scope) -> Value {
    Value::Texts(scope.posyandu().map(|p| p.as_str().to_owned()).collect())
}

fn texts<T: ToString>(items: &[T]) -> Value {
    Value::Texts(items.iter().map(ToString::to_string).collect())
}

// ---- documents, feed and what devices hold ----

/// Columns of [`meta`], in order; a query may add `bytes` after them.
pub const META_COLUMNS: &str = "doc_id, kind, posyandu, seq, heads";

/// A stored document as a merge needs it first, without its bytes (read only when no loaded
/// copy is at hand): kind, posyandu, heads, chunks, stored bytes.
pub fn stored_doc(d: Dialect, doc: DocId) -> Statement {
    Statement::new(
        format!("SELECT kind, posyandu, heads, chunks, stored_bytes FROM docs WHERE doc_id = {}", d.p(1)),
        vec![doc.to_string().into()],
    )
}

/// A row of [`stored_doc`].
#[derive(Clone, Debug)]
pub struct StoredRow {
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    pub heads: Heads,
    pub form: StoredForm,
}

pub fn stored_row(doc: DocId, row: &Row) -> Result<StoredRow, StoreError> {
    let doc_s = doc.to_string();
    let bad = |what: &str| StoreError::Backend(format!("doc {doc_s}: bad stored {what}"));
    Ok(StoredRow {
        kind: parse_kind(&doc_s, &row.text(0)?)?,
        posyandu: row.text(1)?.parse().map_err(|_| bad("posyandu"))?,
        heads: Heads::from_bytes(&row.bytes(2)?).map_err(|_| bad("heads"))?,
        form: StoredForm {
            chunks: u32::try_from(row.int(3)?).map_err(|_| bad("chunks"))?,
            bytes: usize::try_from(row.int(4)?).map_err(|_| bad("size"))?,
        },
    })
}

/// A document's stored bytes, in order: its snapshot, then its chunks. Concatenated they
/// load as one document.
pub fn doc_bytes(d: Dialect, doc: DocId) -> Statement {
    let p1 = d.p(1);
    Statement::new(
        format!(
            "SELECT 0 AS n, bytes FROM docs WHERE doc_id = {p1}
             UNION ALL SELECT n, bytes FROM doc_chunks WHERE doc_id = {p1} ORDER BY n"
        ),
        vec![doc.to_string().into()],
    )
}

/// Rows of [`doc_bytes`] as one byte stream (`None`: no such document).
pub fn concat_bytes(rows: Vec<Row>) -> Result<Option<Vec<u8>>, StoreError> {
    let mut rows = rows.into_iter();
    let Some(mut first) = rows.next() else { return Ok(None) };
    let mut bytes = first.take_bytes(1)?;
    for mut row in rows {
        bytes.extend_from_slice(&row.take_bytes(1)?);
    }
    Ok(Some(bytes))
}

/// One document's metadata and snapshot bytes (its chunks: [`chunks_of`]).
pub fn doc_by_id(d: Dialect, doc: DocId) -> Statement {
    Statement::new(
        format!("SELECT {META_COLUMNS}, bytes FROM docs WHERE doc_id = {}", d.p(1)),
        vec![doc.to_string().into()],
    )
}

/// The chunks of `docs`, each document's in order: doc id, heads after the chunk, bytes.
pub fn chunks_of(d: Dialect, docs: &[DocId]) -> Statement {
    Statement::new(
        format!("SELECT doc_id, heads, bytes FROM doc_chunks WHERE {} ORDER BY doc_id, n", d.in_list("doc_id", 1)),
        vec![texts(docs)],
    )
}

/// A stored document as a pull reads it: metadata, its bytes (snapshot then chunks), and
/// where each chunk ends in them with the heads after it.
pub struct Stream {
    pub meta: StoredMeta,
    pub bytes: Vec<u8>,
    pub ends: Vec<(Heads, usize)>,
    /// How many of `bytes` are the snapshot.
    pub snapshot_bytes: usize,
}

/// Rows of [`docs_by_ids`] (or [`doc_by_id`]) and [`chunks_of`] as [`Stream`]s.
pub fn streams(doc_rows: Vec<Row>, chunk_rows: Vec<Row>) -> Result<Vec<Stream>, StoreError> {
    let mut out = Vec::with_capacity(doc_rows.len());
    let mut at: HashMap<DocId, usize> = HashMap::with_capacity(doc_rows.len());
    for mut row in doc_rows {
        let meta = meta(&row)?;
        let bytes = row.take_bytes(5)?;
        at.insert(meta.doc, out.len());
        out.push(Stream { meta, snapshot_bytes: bytes.len(), bytes, ends: Vec::new() });
    }
    for mut row in chunk_rows {
        let doc: DocId = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?;
        let Some(i) = at.get(&doc) else { continue };
        let heads = parse_stored_heads(row.opt_bytes(1)?)?;
        let s = &mut out[*i];
        s.bytes.extend_from_slice(&row.take_bytes(2)?);
        s.ends.push((heads, s.bytes.len()));
    }
    Ok(out)
}

/// Metadata and bytes of `docs` (changed after `after`, when given).
pub fn docs_by_ids(d: Dialect, docs: &[DocId], after: Option<i64>) -> Statement {
    let mut sql = format!("SELECT {META_COLUMNS}, bytes FROM docs WHERE {}", d.in_list("doc_id", 1));
    let mut params = vec![texts(docs)];
    if let Some(after) = after {
        sql.push_str(&format!(" AND seq > {}", d.p(2)));
        params.push(after.into());
    }
    Statement::new(sql, params)
}

/// Metadata of every document of the scope, in feed order.
pub fn scope_docs(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!("SELECT {META_COLUMNS} FROM docs WHERE {} ORDER BY seq", d.in_list("posyandu", 1)),
        vec![scope_texts(scope)],
    )
}

/// A row starting with [`META_COLUMNS`].
pub fn meta(row: &Row) -> Result<StoredMeta, StoreError> {
    let doc_id = row.text(0)?;
    let bad = |what: &str| StoreError::Backend(format!("doc {doc_id}: bad stored {what}"));
    Ok(StoredMeta {
        kind: parse_kind(&doc_id, &row.text(1)?)?,
        posyandu: row.text(2)?.parse().map_err(|_| bad("posyandu"))?,
        seq: u64::try_from(row.int(3)?).map_err(|_| bad("seq"))?,
        heads: Heads::from_bytes(&row.bytes(4)?).map_err(|_| bad("heads"))?,
        doc: doc_id.parse().map_err(|_| bad("id"))?,
    })
}

pub fn parse_kind(doc: &str, s: &str) -> Result<DocKind, StoreError> {
    DocKind::parse(s).ok_or_else(|| StoreError::Backend(format!("doc {doc}: unknown kind {s:?}")))
}

pub fn parse_stored_heads(b: Option<Vec<u8>>) -> Result<Heads, StoreError> {
    b.map(|b| Heads::from_bytes(&b).map_err(|e| StoreError::Backend(e.to_string())))
        .transpose()
        .map(Option::unwrap_or_default)
}

/// Up to `batch` feed entries of the scope in `(from, end]`, in order.
pub fn feed_scan(d: Dialect, scope: &Scope, from: i64, end: i64, batch: usize) -> Statement {
    Statement::new(
        format!(
            "SELECT seq, doc_id FROM feed WHERE {} AND seq > {} AND seq <= {} ORDER BY seq LIMIT {}",
            d.in_list("posyandu", 1),
            d.p(2),
            d.p(3),
            d.p(4)
        ),
        vec![scope_texts(scope), from.into(), end.into(), (batch as i64).into()],
    )
}

/// For each of `docs`: its heads as of feed position `cursor` (NULL if it had none yet), and
/// the heads last acknowledged to `device`. One query for any number of documents.
pub fn known_heads(d: Dialect, docs: &[DocId], device: DeviceId, cursor: i64) -> Statement {
    let list = match d {
        Dialect::Sqlite => "json_each(?1) AS t".to_owned(),
        Dialect::Postgres => "unnest($1::text[]) AS t(value)".to_owned(),
    };
    Statement::new(
        format!(
            "SELECT t.value,
                    (SELECT f.heads FROM feed f WHERE f.doc_id = t.value AND f.seq <= {p2} ORDER BY f.seq DESC LIMIT 1),
                    (SELECT h.heads FROM device_docs h WHERE h.device_id = {p3} AND h.doc_id = t.value)
             FROM {list}",
            p2 = d.p(2),
            p3 = d.p(3),
        ),
        vec![texts(docs), cursor.into(), device.to_string().into()],
    )
}

/// Rows of [`known_heads`]: what each document's device holds, the union of both.
pub fn parse_known(rows: &[Row]) -> Result<HashMap<DocId, Heads>, StoreError> {
    let mut known = HashMap::with_capacity(rows.len());
    for row in rows {
        let doc: DocId = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?;
        let heads = parse_stored_heads(row.opt_bytes(1)?)?.union(&parse_stored_heads(row.opt_bytes(2)?)?);
        known.insert(doc, heads);
    }
    Ok(known)
}

/// A document's new state, waiting for its feed position.
#[derive(Clone, Debug)]
pub struct NewState {
    pub doc: String,
    pub kind: &'static str,
    pub posyandu: String,
    pub heads: Vec<u8>,
    pub write: DocWrite,
    /// The stored form it replaces or appends to (default for a new document).
    pub before: StoredForm,
    /// `<device id>` or `server:<instance>`, as the feed records who wrote it.
    pub writer: String,
}

impl NewState {
    pub fn new(doc: DocId, kind: DocKind, posyandu: &str, heads: &Heads, write: DocWrite, writer: String) -> Self {
        Self {
            doc: doc.to_string(),
            kind: kind.code(),
            posyandu: posyandu.to_owned(),
            heads: heads.to_bytes(),
            write,
            before: StoredForm::default(),
            writer,
        }
    }

    /// The same state, written over a document stored as `before`.
    pub fn after(mut self, before: StoredForm) -> Self {
        self.before = before;
        self
    }
}

/// Store a document's new state at feed position `seq`: the snapshot replacing the document
/// and its chunks, or one chunk appended, the snapshot left as it is.
pub fn doc_write(d: Dialect, s: &NewState, seq: i64, now: i64) -> Vec<Statement> {
    let after = s.before.after(&s.write);
    let (chunks, stored) = (i64::from(after.chunks), i64::try_from(after.bytes).unwrap_or(i64::MAX));
    match &s.write {
        DocWrite::Whole(bytes) => vec![
            Statement::new(
                format!(
                    "INSERT INTO docs (doc_id, kind, posyandu, seq, heads, bytes, updated_at, chunks, stored_bytes)
                     VALUES ({})
                     ON CONFLICT (doc_id) DO UPDATE SET seq = excluded.seq, heads = excluded.heads,
                        bytes = excluded.bytes, updated_at = excluded.updated_at, chunks = excluded.chunks,
                        stored_bytes = excluded.stored_bytes",
                    (1..=9).map(|i| d.p(i)).collect::<Vec<_>>().join(", ")
                ),
                vec![
                    s.doc.clone().into(),
                    s.kind.into(),
                    s.posyandu.clone().into(),
                    seq.into(),
                    s.heads.clone().into(),
                    bytes.clone().into(),
                    now.into(),
                    chunks.into(),
                    stored.into(),
                ],
            ),
            Statement::new(format!("DELETE FROM doc_chunks WHERE doc_id = {}", d.p(1)), vec![s.doc.clone().into()]),
        ],
        DocWrite::Append(chunk) => vec![
            Statement::new(
                format!(
                    "INSERT INTO doc_chunks (doc_id, n, heads, bytes) VALUES ({}, {}, {}, {})",
                    d.p(1),
                    d.p(2),
                    d.p(3),
                    d.p(4)
                ),
                vec![s.doc.clone().into(), chunks.into(), s.heads.clone().into(), chunk.clone().into()],
            ),
            Statement::new(
                format!(
                    "UPDATE docs SET seq = {}, heads = {}, updated_at = {}, chunks = {}, stored_bytes = {}
                     WHERE doc_id = {}",
                    d.p(2),
                    d.p(3),
                    d.p(4),
                    d.p(5),
                    d.p(6),
                    d.p(1)
                ),
                vec![
                    s.doc.clone().into(),
                    seq.into(),
                    s.heads.clone().into(),
                    now.into(),
                    chunks.into(),
                    stored.into(),
                ],
            ),
        ],
    }
}

/// Record the heads acknowledged to `device` for `doc`.
pub fn ack(d: Dialect, device: DeviceId, doc: DocId, heads: &Heads, now: i64) -> Statement {
    let (p3, p4) = (d.p(3), d.p(4));
    Statement::new(
        format!(
            "INSERT INTO device_docs (device_id, doc_id, heads, acked_at) VALUES ({}, {}, {p3}, {p4})
             ON CONFLICT (device_id, doc_id) DO UPDATE SET heads = {p3}, acked_at = {p4}",
            d.p(1),
            d.p(2)
        ),
        vec![device.to_string().into(), doc.to_string().into(), heads.to_bytes().into(), now.into()],
    )
}

/// Count a push of `device`.
pub fn device_pushed(d: Dialect, device: DeviceId, now: i64) -> Statement {
    let p2 = d.p(2);
    Statement::new(
        format!(
            "INSERT INTO devices (device_id, last_push_at, pushes) VALUES ({}, {p2}, 1)
             ON CONFLICT (device_id) DO UPDATE SET last_push_at = {p2}, pushes = devices.pushes + 1",
            d.p(1)
        ),
        vec![device.to_string().into(), now.into()],
    )
}

/// Whether the device holds acknowledged heads of any document but `keep` (a row, or none).
pub fn holds_other_docs(d: Dialect, device: DeviceId, keep: &[DocId]) -> Statement {
    Statement::new(
        format!("SELECT 1 FROM device_docs WHERE device_id = {} AND {} LIMIT 1", d.p(1), d.not_in_list("doc_id", 2)),
        vec![device.to_string().into(), texts(keep)],
    )
}

/// Forget the heads acknowledged to the device, but those of `keep`.
pub fn forget_heads(d: Dialect, device: DeviceId, keep: &[DocId]) -> Statement {
    Statement::new(
        format!("DELETE FROM device_docs WHERE device_id = {} AND {}", d.p(1), d.not_in_list("doc_id", 2)),
        vec![device.to_string().into(), texts(keep)],
    )
}

// ---- the relational projection ----

/// Visit columns before the service columns (one per [`Field::SERVICES`] key).
pub const VISIT_COLUMNS: [&str; 19] = [
    "visit_id",
    "doc_id",
    "posyandu",
    "session_date",
    "person_id",
    "name",
    "sex",
    "birth_date",
    "weight_g",
    "length_mm",
    "lying",
    "head_circ_mm",
    "muac_mm",
    "vitamin_a",
    "notes",
    "recorded_by",
    "recorded_at",
    "life_group",
    "invalid",
];

pub const PEOPLE_COLUMNS: [&str; 18] = [
    "person_id",
    "doc_id",
    "posyandu",
    "name",
    "sex",
    "birth_date",
    "mother_name",
    "nik",
    "registered_by",
    "registered_at",
    "mother_nik",
    "address",
    "rt",
    "rw",
    "pregnant",
    "kia_book",
    "merged_into",
    "invalid",
];

/// A service value as its column's value. Columns are typed: a value of another type
/// (possible only from a foreign writer) projects as NULL rather than failing the merge.
fn service_value(field: Field, v: Option<&FieldValue>) -> Value {
    match (field.kind(), v) {
        (FieldKind::Bool, Some(FieldValue::Bool(b))) => Value::Bool(*b),
        (FieldKind::Int { .. }, Some(FieldValue::Int(i))) => Value::Int(*i),
        (FieldKind::Bool | FieldKind::Int { .. }, _) => Value::Null,
        (_, Some(FieldValue::Text(t))) => Value::Text(t.clone()),
        _ => Value::Null,
    }
}

fn visit_row(doc: &str, posyandu: &str, date: &str, v: &Visit, invalid: Option<String>) -> Vec<Value> {
    let mut row: Vec<Value> = vec![
        v.visit_id.to_string().into(),
        doc.into(),
        posyandu.into(),
        date.into(),
        v.person_id.to_string().into(),
        v.name.clone().into(),
        v.sex.code().into(),
        format_date(v.birth_date).into(),
        v.weight_g.into(),
        v.length_mm.into(),
        v.lying.into(),
        v.head_circ_mm.into(),
        v.muac_mm.into(),
        v.vitamin_a.map(|a| a.code()).into(),
        v.notes.clone().into(),
        v.recorded_by.to_string().into(),
        v.recorded_at.into(),
        v.group.code().into(),
        invalid.into(),
    ];
    row.extend(Field::SERVICES.iter().map(|f| service_value(*f, v.services.get(f))));
    row
}

fn person_row(doc: &str, posyandu: &str, p: &Person, invalid: Option<String>) -> Vec<Value> {
    vec![
        p.person_id.to_string().into(),
        doc.into(),
        posyandu.into(),
        p.name.clone().into(),
        p.sex.code().into(),
        format_date(p.birth_date).into(),
        p.mother_name.clone().into(),
        p.nik.clone().into(),
        p.registered_by.to_string().into(),
        p.registered_at.into(),
        p.mother_nik.clone().into(),
        p.address.clone().into(),
        p.rt.into(),
        p.rw.into(),
        p.pregnant.into(),
        p.kia_book.into(),
        p.merged_into.map(|m| m.to_string()).into(),
        invalid.into(),
    ]
}

/// How to write a document's projection: refuse if `collision` returns a row (an id already
/// in another document: `id_collision`), then run `deletes`, then `inserts`.
#[derive(Clone, Debug)]
pub struct ProjectionWrite {
    pub collision: Statement,
    /// What the collision names: "a visit id", "a person id".
    pub what: &'static str,
    pub deletes: Vec<Statement>,
    pub inserts: Vec<Insert>,
}

/// The rows of the records projected: all of the document's, or (`p.only`) those records',
/// replacing what was there.
pub fn projection(d: Dialect, doc: DocId, posyandu: &str, p: &Projection) -> ProjectionWrite {
    let doc_s = doc.to_string();
    let invalid = |id: &str| p.invalid.get(id).cloned();
    let only: Value = p.only.clone().map(Value::Texts).unwrap_or(Value::Null);
    let collision = |table: &str, column: &str, ids: Vec<String>| {
        Statement::new(
            format!("SELECT 1 FROM {table} WHERE {} AND doc_id <> {} LIMIT 1", d.in_list(column, 1), d.p(2)),
            vec![Value::Texts(ids), doc_s.clone().into()],
        )
    };
    match &p.records {
        Records::Visits { date, visits } => {
            let date = format_date(*date);
            let mut columns = VISIT_COLUMNS.to_vec();
            columns.extend(Field::SERVICES.iter().map(|f| f.key()));
            let mut rows = Vec::with_capacity(visits.len());
            let mut immunisations = Vec::new();
            for v in visits {
                let vid = v.visit_id.to_string();
                rows.push(visit_row(&doc_s, posyandu, &date, v, invalid(&vid)));
                for (antigen, on) in &v.immunisations {
                    immunisations.push(vec![vid.clone().into(), antigen.clone().into(), format_date(*on).into()]);
                }
            }
            let of_doc = format!("doc_id = {} AND {}", d.p(1), d.in_list_or_all("visit_id", 2));
            ProjectionWrite {
                collision: collision("visits", "visit_id", visits.iter().map(|v| v.visit_id.to_string()).collect()),
                what: "a visit id",
                deletes: vec![
                    Statement::new(
                        format!(
                            "DELETE FROM visit_immunisations WHERE visit_id IN (SELECT visit_id FROM visits WHERE {of_doc})"
                        ),
                        vec![doc_s.clone().into(), only.clone()],
                    ),
                    Statement::new(format!("DELETE FROM visits WHERE {of_doc}"), vec![doc_s.clone().into(), only]),
                ],
                inserts: vec![
                    Insert { table: "visits", columns, rows, on_conflict: "" },
                    Insert {
                        table: "visit_immunisations",
                        columns: vec!["visit_id", "antigen", "given_on"],
                        rows: immunisations,
                        on_conflict: "",
                    },
                ],
            }
        }
        Records::People(people) => ProjectionWrite {
            collision: collision("people", "person_id", people.iter().map(|p| p.person_id.to_string()).collect()),
            what: "a person id",
            deletes: vec![Statement::new(
                format!("DELETE FROM people WHERE doc_id = {} AND {}", d.p(1), d.in_list_or_all("person_id", 2)),
                vec![doc_s.clone().into(), only],
            )],
            inserts: vec![Insert {
                table: "people",
                columns: PEOPLE_COLUMNS.to_vec(),
                rows: people
                    .iter()
                    .map(|x| person_row(&doc_s, posyandu, x, invalid(&x.person_id.to_string())))
                    .collect(),
                on_conflict: "",
            }],
        },
    }
}

// ---- the conflict index ----

/// Device actors are the device id's 16 bytes, with an incarnation after them from a
/// replica's second incarnation on; anything else (genesis, server) is no device.
fn device_of_actor(hex_actor: &str) -> Option<DeviceId> {
    DeviceId::of_actor(&automerge::ActorId::from(hex::decode(hex_actor).ok()?))
}

pub fn policy_code(p: Policy) -> &'static str {
    match p {
        Policy::Review => "review",
        Policy::Auto => "auto",
    }
}

/// Replace a document's rows in the conflict index with `conflicts`: all of them, or (with
/// `only`) those of the records it names, the rest staying as they are. A conflict still
/// open keeps its `opened_at`. Run the delete, then the upsert.
pub fn conflicts_write(
    d: Dialect,
    doc: DocId,
    posyandu: &str,
    conflicts: &[FieldConflict],
    only: Option<&[String]>,
    now: i64,
) -> Result<(Statement, Insert), StoreError> {
    let doc_s = doc.to_string();
    let mut rows = Vec::with_capacity(conflicts.len());
    let mut ids = Vec::with_capacity(conflicts.len());
    for c in conflicts {
        let values: Vec<ConflictValueRecord> = c
            .values
            .iter()
            .map(|v| ConflictValueRecord {
                value: v.value.clone(),
                device: device_of_actor(&v.actor),
                winner: v.winner,
            })
            .collect();
        if c.policy() == Policy::Auto {
            // Logged without values: the winner stands.
            tracing::info!(doc = %doc, field = %c.field, "auto-resolved conflict");
        }
        let id = c.id(doc).to_string();
        ids.push(id.clone());
        rows.push(vec![
            id.into(),
            doc_s.clone().into(),
            posyandu.into(),
            c.collection.clone().into(),
            c.record_id.clone().into(),
            c.field.clone().into(),
            policy_code(c.policy()).into(),
            serde_json::to_string(&values).map_err(|e| StoreError::Backend(e.to_string()))?.into(),
            now.into(),
            now.into(),
        ]);
    }
    let delete = Statement::new(
        format!(
            "DELETE FROM conflicts WHERE doc_id = {} AND {} AND {}",
            d.p(1),
            d.not_in_list("conflict_id", 2),
            d.in_list_or_all("record_id", 3)
        ),
        vec![doc_s.into(), Value::Texts(ids), only.map(|o| Value::Texts(o.to_vec())).unwrap_or(Value::Null)],
    );
    let upsert = Insert {
        table: "conflicts",
        columns: CONFLICT_COLUMNS.split(", ").collect(),
        rows,
        on_conflict: "ON CONFLICT (conflict_id) DO UPDATE SET vals = excluded.vals, updated_at = excluded.updated_at",
    };
    Ok((delete, upsert))
}

const CONFLICT_COLUMNS: &str =
    "conflict_id, doc_id, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at";

/// Open conflicts of the scope, filtered, oldest first (at most 1,000).
pub fn conflicts_list(d: Dialect, scope: &Scope, filter: &ConflictFilter) -> Statement {
    let policy = policy_code(filter.policy.unwrap_or(Policy::Review));
    Statement::new(
        format!(
            "SELECT {CONFLICT_COLUMNS} FROM conflicts
             WHERE {} AND policy = {} AND {} AND {}
             ORDER BY opened_at, conflict_id LIMIT 1000",
            d.in_list("posyandu", 1),
            d.p(2),
            d.eq_or_all("posyandu", 3),
            d.eq_or_all("field", 4)
        ),
        vec![
            scope_texts(scope),
            policy.into(),
            filter.posyandu.as_ref().map(|p| p.as_str()).into(),
            filter.field.clone().into(),
        ],
    )
}

pub fn conflict_by_id(d: Dialect, id: &str) -> Statement {
    Statement::new(format!("SELECT {CONFLICT_COLUMNS} FROM conflicts WHERE conflict_id = {}", d.p(1)), vec![id.into()])
}

/// A row of [`conflicts_list`] or [`conflict_by_id`].
pub fn conflict(row: &Row) -> Result<ConflictRecord, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad conflict row: {what}"));
    Ok(ConflictRecord {
        id: row.text(0)?,
        doc: row.text(1)?.parse().map_err(|_| bad("doc"))?,
        posyandu: row.text(2)?.parse().map_err(|_| bad("posyandu"))?,
        collection: row.text(3)?,
        record_id: row.text(4)?,
        field: row.text(5)?,
        policy: if row.text(6)? == "auto" { Policy::Auto } else { Policy::Review },
        values: serde_json::from_str(&row.text(7)?).map_err(|_| bad("values"))?,
        opened_at: row.int(8)?,
        updated_at: row.int(9)?,
    })
}

// ---- people ----

/// The document and posyandu of a person not merged into another.
pub fn locate_person(d: Dialect, id: posync_model::PersonId) -> Statement {
    Statement::new(
        format!("SELECT doc_id, posyandu FROM people WHERE person_id = {} AND merged_into IS NULL", d.p(1)),
        vec![id.to_string().into()],
    )
}

/// Pairs of people in the scope who look like one person registered twice.
pub fn duplicate_people(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT a.person_id, a.posyandu, a.name, a.birth_date, b.person_id, b.posyandu, b.name, b.birth_date,
                    CASE WHEN a.nik IS NOT NULL AND a.nik = b.nik THEN 'nik'
                         WHEN a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                              THEN 'mother_nik_and_birth_date'
                         ELSE 'name_birth_date_and_mother' END
             FROM people a JOIN people b ON a.person_id < b.person_id
             WHERE a.merged_into IS NULL AND b.merged_into IS NULL AND {} AND {}
               AND ((a.nik IS NOT NULL AND a.nik = b.nik)
                 OR (a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                     AND lower(trim(a.name)) = lower(trim(b.name)))
                 OR (a.birth_date = b.birth_date AND lower(trim(a.name)) = lower(trim(b.name))
                     AND lower(trim(a.mother_name)) = lower(trim(b.mother_name)) AND a.mother_name <> ''))
             ORDER BY a.birth_date, a.person_id LIMIT 1000",
            d.in_list("a.posyandu", 1),
            d.in_list("b.posyandu", 1)
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`duplicate_people`].
pub fn duplicate_pair(row: &Row) -> Result<crate::DuplicatePair, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad people row: {what}"));
    let person = |at: usize| -> Result<crate::PersonSummary, StoreError> {
        Ok(crate::PersonSummary {
            person_id: row.text(at)?.parse().map_err(|_| bad("id"))?,
            posyandu: row.text(at + 1)?.parse().map_err(|_| bad("posyandu"))?,
            name: row.text(at + 2)?,
            birth_date: row.text(at + 3)?,
        })
    };
    Ok(crate::DuplicatePair { reason: row.text(8)?, a: person(0)?, b: person(4)? })
}

/// Records of the scope marked invalid (at most 1,000).
pub fn invalid_records(d: Dialect, scope: &Scope) -> Statement {
    let in_scope = d.in_list("posyandu", 1);
    Statement::new(
        format!(
            "SELECT doc_id, posyandu, 'visits', visit_id, name, session_date, invalid FROM visits
             WHERE invalid IS NOT NULL AND {in_scope}
             UNION ALL
             SELECT doc_id, posyandu, 'people', person_id, name, NULL, invalid FROM people
             WHERE invalid IS NOT NULL AND {in_scope}
             ORDER BY 1, 4 LIMIT 1000"
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`invalid_records`].
pub fn invalid_record(row: &Row) -> Result<crate::InvalidRecord, StoreError> {
    Ok(crate::InvalidRecord {
        doc: row.text(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?,
        posyandu: row.text(1)?.parse().map_err(|_| StoreError::Backend("bad stored posyandu".into()))?,
        collection: row.text(2)?,
        record_id: row.text(3)?,
        name: row.text(4)?,
        session_date: row.opt_text(5)?,
        issues: serde_json::from_str(&row.text(6)?).map_err(|_| StoreError::Backend("bad stored issues".into()))?,
    })
}

// ---- reports ----

/// Visits of the scope with a session date in `from..=to`, as report facts (merged people
/// count as the person kept; invalid records are left out).
pub fn report_facts(d: Dialect, scope: &Scope, from: time::Date, to: time::Date) -> Statement {
    Statement::new(
        format!(
            "SELECT v.posyandu, v.session_date,
                    COALESCE((SELECT p.merged_into FROM people p WHERE p.person_id = v.person_id), v.person_id),
                    v.name, v.sex, v.birth_date, v.life_group, v.weight_g, v.length_mm, v.lying, v.muac_mm,
                    v.oedema, v.growth_card, v.bp_systolic, v.bp_diastolic,
                    (SELECT {} FROM visit_immunisations i WHERE i.visit_id = v.visit_id)
             FROM visits v
             WHERE {} AND v.session_date BETWEEN {} AND {} AND v.invalid IS NULL",
            d.text_agg("i.antigen"),
            d.in_list("v.posyandu", 1),
            d.p(2),
            d.p(3)
        ),
        vec![scope_texts(scope), format_date(from).into(), format_date(to).into()],
    )
}

/// A row of [`report_facts`].
pub fn fact(row: &Row) -> Result<posync_model::report::VisitFact, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad projected {what}"));
    Ok(posync_model::report::VisitFact {
        posyandu: row.text(0)?.parse().map_err(|_| bad("posyandu"))?,
        session_date: parse_date(&row.text(1)?).ok_or_else(|| bad("session date"))?,
        person_id: row.text(2)?.parse().map_err(|_| bad("person id"))?,
        name: row.text(3)?,
        sex: posync_model::Sex::parse(&row.text(4)?).ok_or_else(|| bad("sex"))?,
        birth_date: parse_date(&row.text(5)?).ok_or_else(|| bad("birth date"))?,
        group: posync_model::LifeGroup::parse(&row.text(6)?).ok_or_else(|| bad("life group"))?,
        weight_g: row.opt_int(7)?,
        length_mm: row.opt_int(8)?,
        lying: row.opt_bool(9)?,
        muac_mm: row.opt_int(10)?,
        oedema: row.opt_bool(11)?.unwrap_or(false),
        growth_card: row.opt_bool(12)?.unwrap_or(false),
        bp_systolic: row.opt_int(13)?,
        bp_diastolic: row.opt_int(14)?,
        immunisations: row
            .opt_text(15)?
            .map(|s| s.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// People in the registries of the scope (not merged, not invalid).
pub fn registered_people(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT posyandu, person_id, birth_date, kia_book FROM people
             WHERE {} AND merged_into IS NULL AND invalid IS NULL",
            d.in_list("posyandu", 1)
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`registered_people`]; `None` for one that does not parse (reports count what
/// they can read).
pub fn registered_person(row: &Row) -> Option<posync_model::report::RegisteredPerson> {
    Some(posync_model::report::RegisteredPerson {
        posyandu: row.text(0).ok()?.parse().ok()?,
        person_id: row.text(1).ok()?.parse().ok()?,
        birth_date: parse_date(&row.text(2).ok()?)?,
        kia_book: row.bool(3).ok()?,
    })
}

/// Counts for [`crate::StoreStats`], in its field order.
pub const STATS: [&str; 5] = [
    "SELECT COUNT(*) FROM docs",
    "SELECT COUNT(*) FROM visits",
    "SELECT COUNT(*) FROM people",
    "SELECT COUNT(*) FROM feed",
    "SELECT COUNT(*) FROM device_docs",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_statement_differs_only_in_placeholders_and_lists() {
        let scope = Scope::new(["pos-a".parse().expect("posyandu id")]);
        let (from, to) = (time::macros::date!(2026 - 01 - 01), time::macros::date!(2026 - 01 - 31));
        let s = report_facts(Dialect::Sqlite, &scope, from, to);
        let p = report_facts(Dialect::Postgres, &scope, from, to);
        assert_eq!(s.params, p.params);
        assert!(s.sql.contains("json_each(?1)") && s.sql.contains("group_concat") && s.sql.contains("?3"));
        assert!(p.sql.contains("= ANY($1)") && p.sql.contains("string_agg") && p.sql.contains("$3"));
        assert!(!p.sql.contains('?'), "no SQLite placeholder left in PostgreSQL's statement");
    }
}

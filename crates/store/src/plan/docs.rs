//! Documents, the change feed and what each device holds: the sync path's statements.

use super::{scope_texts, texts};
use crate::StoreError;
use crate::StoredMeta;
use crate::core::{DocWrite, FEED_SCAN_BATCH, Merged, PageScan, Projection, StoredForm, Stream};
use crate::sql::{Dialect, Insert, Row, Statement};
use automerge::Automerge;
use posync_model::{DeviceId, DocId, DocKind, FieldConflict, Heads, PosyanduId, Scope};
use posync_proto::{DocAck, DocPush};
use std::collections::HashMap;

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

/// A page's walk over the feed, in batches of [`FEED_SCAN_BATCH`] entries after the cursor
/// up to `end`, each offered to a [`PageScan`] until the page is full. The adapter runs the
/// statements it asks for: `while let Some(s) = walk.next_batch() { walk.take(&rows(s)) }`.
pub struct FeedWalk<'a> {
    d: Dialect,
    scope: &'a Scope,
    end: i64,
    from: i64,
    done: bool,
    pub scan: PageScan,
}

impl<'a> FeedWalk<'a> {
    pub fn new(d: Dialect, scope: &'a Scope, cursor: i64, end: i64, docs_max: usize) -> Self {
        Self { d, scope, end, from: cursor, done: false, scan: PageScan::new(docs_max) }
    }

    /// The next batch to read, or `None` once the page is full or the feed read to `end`.
    pub fn next_batch(&self) -> Option<Statement> {
        (!self.done).then(|| feed_scan(self.d, self.scope, self.from, self.end, FEED_SCAN_BATCH))
    }

    /// Offer a batch's rows (`seq`, `doc_id`) to the page.
    pub fn take(&mut self, rows: &[Row]) -> Result<(), StoreError> {
        for row in rows {
            self.from = row.int(0)?;
            let doc = row.text(1)?.parse().map_err(|_| StoreError::Backend("bad feed doc id".into()))?;
            if !self.scan.offer(self.from as u64, doc) {
                self.done = true;
                return Ok(());
            }
        }
        self.done = rows.len() < FEED_SCAN_BATCH;
        Ok(())
    }
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

/// Rows of [`known_heads`]: what each document's device holds, the union of both; nothing
/// when the device said it holds nothing of it (empty acknowledged heads: it dropped the
/// document, or a probe found it held none of what the server has).
pub fn parse_known(rows: &[Row]) -> Result<HashMap<DocId, Heads>, StoreError> {
    let mut known = HashMap::with_capacity(rows.len());
    for row in rows {
        let doc: DocId = row.text(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?;
        let acked = row.opt_bytes(2)?;
        let holds_none = acked.is_some() && parse_stored_heads(acked.clone())?.is_empty();
        let heads = if holds_none {
            Heads::empty()
        } else {
            parse_stored_heads(row.opt_bytes(1)?)?.union(&parse_stored_heads(acked)?)
        };
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

/// What one merged push leaves to store and answer, the same on every backend.
pub struct SettledPush {
    /// The document's new state (`None`: the push added nothing new).
    pub state: Option<NewState>,
    /// Projection rows and the conflict index to write with the new state.
    pub projection: Option<Projection>,
    pub conflicts: Vec<FieldConflict>,
    /// The heads to record as the device's (`None`: an empty push for a document nobody
    /// has, acknowledged but not recorded).
    pub device_heads: Option<Heads>,
    pub ack: DocAck,
    /// The merged document and its stored size, to keep loaded once the push commits.
    pub kept: Option<(DocId, Automerge, usize)>,
}

/// Settle a merged push of `device` into the document stored as `before` (`None`: new).
pub fn settle_push(push: &DocPush, mut merged: Merged, before: Option<StoredForm>, writer: &str) -> SettledPush {
    let ack = DocAck { doc: push.doc, heads: merged.device_heads.to_bytes() };
    let Some(write) = merged.write.take() else {
        return SettledPush {
            state: None,
            projection: None,
            conflicts: Vec::new(),
            device_heads: before.is_some().then_some(merged.device_heads),
            ack,
            kept: None,
        };
    };
    let before = before.unwrap_or_default();
    let kept = merged.doc.take().map(|am| (push.doc, am, before.after(&write).bytes));
    let state = NewState::new(push.doc, push.kind, push.posyandu.as_str(), &merged.heads, write, writer.to_owned())
        .after(before);
    SettledPush {
        state: Some(state),
        projection: merged.projection,
        conflicts: merged.conflicts,
        device_heads: Some(merged.device_heads),
        ack,
        kept,
    }
}

/// One step of a planned write.
pub enum WriteStep {
    Exec(Statement),
    Insert(Insert),
}

/// Writes planned as one, run in order by each adapter's `run_writes`: first a probe whose
/// row refuses them all (a record id another document already holds), then the steps.
pub struct WritePlan {
    pub doc: DocId,
    /// The probe and what a row of it means ("a visit id").
    pub collision: Option<(Statement, &'static str)>,
    pub steps: Vec<WriteStep>,
}

impl WritePlan {
    fn new(doc: DocId) -> Self {
        Self { doc, collision: None, steps: Vec::new() }
    }
}

/// A changed document's rows: its projection (when there is one: probe, deletes, inserts),
/// then its conflict index, both over `only` the records touched or the whole document.
pub fn record_writes(
    d: Dialect,
    doc: DocId,
    posyandu: &str,
    projection: Option<&Projection>,
    conflicts: &[FieldConflict],
    now: i64,
) -> Result<WritePlan, StoreError> {
    let mut plan = WritePlan::new(doc);
    let only = projection.and_then(|p| p.only.as_deref());
    if let Some(p) = projection {
        let w = super::projection(d, doc, posyandu, p);
        plan.collision = Some((w.collision, w.what));
        plan.steps.extend(w.deletes.into_iter().map(WriteStep::Exec));
        plan.steps.extend(w.inserts.into_iter().map(WriteStep::Insert));
    }
    let (delete, upsert) = super::conflicts_write(d, doc, posyandu, conflicts, only, now)?;
    plan.steps.extend([WriteStep::Exec(delete), WriteStep::Insert(upsert)]);
    Ok(plan)
}

/// What a settled push writes besides its state: its document's rows (with a new state
/// only), then the heads now known to be the device's.
pub fn settled_writes(
    d: Dialect,
    device: DeviceId,
    push: &DocPush,
    settled: &SettledPush,
    now: i64,
) -> Result<WritePlan, StoreError> {
    let posyandu = push.posyandu.as_str();
    let mut plan = match &settled.state {
        Some(_) => record_writes(d, push.doc, posyandu, settled.projection.as_ref(), &settled.conflicts, now)?,
        None => WritePlan::new(push.doc),
    };
    if let Some(heads) = &settled.device_heads {
        plan.steps.push(WriteStep::Exec(ack(d, device, push.doc, heads, now)));
    }
    Ok(plan)
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

/// The device dropped `docs`: it holds none of them, whatever its cursor passed (a row with
/// empty heads, which [`parse_known`] reads as "holds nothing"). Documents not stored are
/// left out.
pub fn forget_docs(d: Dialect, device: DeviceId, docs: &[DocId], now: i64) -> Statement {
    let list = match d {
        Dialect::Sqlite => "json_each(?2) AS t".to_owned(),
        Dialect::Postgres => "unnest($2::text[]) AS t(value)".to_owned(),
    };
    Statement::new(
        format!(
            "INSERT INTO device_docs (device_id, doc_id, heads, acked_at)
             SELECT {p1}, t.value, {p3}, {p4} FROM {list} WHERE t.value IN (SELECT doc_id FROM docs)
             ON CONFLICT (device_id, doc_id) DO UPDATE SET heads = {p3}, acked_at = {p4}",
            p1 = d.p(1),
            p3 = d.p(3),
            p4 = d.p(4),
        ),
        vec![device.to_string().into(), texts(docs), Heads::empty().to_bytes().into(), now.into()],
    )
}

/// Forget the heads acknowledged to the device, but those of `keep`.
pub fn forget_heads(d: Dialect, device: DeviceId, keep: &[DocId]) -> Statement {
    Statement::new(
        format!("DELETE FROM device_docs WHERE device_id = {} AND {}", d.p(1), d.not_in_list("doc_id", 2)),
        vec![device.to_string().into(), texts(keep)],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Value;

    fn entries(from: i64, to: i64, doc: DocId) -> Vec<Row> {
        (from..=to).map(|seq| Row(vec![Value::Int(seq), Value::Text(doc.to_string())])).collect()
    }

    /// One busy document fills whole batches of the feed; the walk reads on past them and
    /// finds the next document, then stops where the feed ends.
    #[test]
    fn a_feed_walk_reads_past_batches_of_one_busy_document() {
        let scope = Scope::new(["melati".parse::<PosyanduId>().expect("posyandu")]);
        let (busy, quiet) = (DocId::new_random(), DocId::new_random());
        let mut walk = FeedWalk::new(Dialect::Sqlite, &scope, 0, 1_500, 2);
        let mut batches = Vec::new();
        let mut feed = entries(1, 1_499, busy);
        feed.extend(entries(1_500, 1_500, quiet));
        while let Some(statement) = walk.next_batch() {
            let from = match statement.params.get(1) {
                Some(Value::Int(n)) => *n,
                other => panic!("from: {other:?}"),
            };
            batches.push(from);
            let rows: Vec<Row> =
                feed.iter().filter(|r| r.int(0).expect("seq") > from).take(FEED_SCAN_BATCH).cloned().collect();
            walk.take(&rows).expect("rows");
        }
        assert_eq!(batches, vec![0, FEED_SCAN_BATCH as i64], "two batches");
        assert_eq!(walk.scan.docs, vec![(busy, 1), (quiet, 1_500)]);
        assert_eq!(walk.scan.next_first, None);
    }

    /// A full page stops the walk at the first document that does not fit.
    #[test]
    fn a_feed_walk_stops_at_the_first_document_the_page_cannot_take() {
        let scope = Scope::new(["melati".parse::<PosyanduId>().expect("posyandu")]);
        let (a, b) = (DocId::new_random(), DocId::new_random());
        let mut walk = FeedWalk::new(Dialect::Sqlite, &scope, 0, 10, 1);
        let mut rows = entries(1, 3, a);
        rows.extend(entries(4, 10, b));
        walk.take(&rows).expect("rows");
        assert!(walk.next_batch().is_none(), "the page is full");
        assert_eq!(walk.scan.docs, vec![(a, 1)]);
        assert_eq!(walk.scan.next_first, Some(4));
    }
}

//! Bounded intake of Automerge bytes from the network: every byte is accounted for before
//! Automerge decodes it, and nothing it claims to hold is silently skipped.
//!
//! Why this exists: Automerge's own loader trusts sizes it reads. A change chunk may be a
//! DEFLATE stream (chunk type 2) and a document chunk may hold DEFLATE-compressed columns;
//! both are inflated without a bound, so 1.5 KB can ask for gigabytes. Run-length encoded
//! columns can likewise declare billions of operations in a few bytes. And
//! `load_incremental` stops at the first chunk it cannot read, logs a warning and reports
//! success, so garbage after valid bytes (or instead of them) "loads" as nothing.
//!
//! [`inspect`] walks the chunk framing itself (magic, checksum, type, length), inflates
//! compressed parts under the remaining [`Budget`], counts the entries of every column
//! without materialising them, and returns what the bytes claim: the hash of every change
//! chunk and the heads of every document chunk. [`apply`] then lets Automerge load the bytes
//! and [`check_complete`] proves that every claim is in the document afterwards.
//!
//! The format is Automerge's binary format (<https://automerge.org/automerge-binary-format-spec/>),
//! as read by automerge 0.12 (`storage/chunk.rs`, `storage/change.rs`, `storage/document.rs`).
//! Bundle chunks (type 3) are not part of the posync protocol and are refused.

use automerge::{ActorId, Automerge, AutomergeError, ChangeHash, ReadDoc};
use sha2::{Digest, Sha256};
use std::io::Read;

const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];
const CHUNK_DOCUMENT: u8 = 0;
const CHUNK_CHANGE: u8 = 1;
const CHUNK_COMPRESSED: u8 = 2;
const CHUNK_BUNDLE: u8 = 3;
/// Column spec bit 3: the column's bytes are DEFLATE-compressed.
const DEFLATE_BIT: u32 = 0b1000;
/// The operations' `action` column (id 4, integer): one entry per op.
const ACTION_COLUMN: u32 = (4 << 4) | 2;
/// A document's change `actor` column (id 0, actor): one entry per change.
const CHANGE_ACTOR_COLUMN: u32 = 1;

/// What one push (or one pulled page, on a phone) may make Automerge decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget {
    /// Bytes after inflating compressed chunks and columns, over all inspected bytes.
    pub decoded_bytes_max: usize,
    /// Operations in one change.
    pub change_ops_max: usize,
    /// Operations over all inspected bytes.
    pub ops_max: usize,
    /// Changes over all inspected bytes (a document chunk counts each change it holds).
    pub changes_max: usize,
}

impl Budget {
    /// What a server accepts in one push (`posync_proto::Limits` carries the same figures).
    pub const PUSH: Budget =
        Budget { decoded_bytes_max: 32 * 1024 * 1024, change_ops_max: 10_000, ops_max: 500_000, changes_max: 50_000 };
    /// What a phone accepts in one pulled page: whole documents, each within the server's
    /// document budget, so more room than a push.
    pub const PULL: Budget = Budget {
        decoded_bytes_max: 128 * 1024 * 1024,
        change_ops_max: 1_000_000,
        ops_max: 4_000_000,
        changes_max: 1_000_000,
    };
}

/// What inspected bytes have used of a [`Budget`] so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub decoded_bytes: usize,
    pub ops: usize,
    pub changes: usize,
}

/// Why bytes were refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InputError {
    /// Not Automerge bytes of a kind posync accepts, or not whole.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but over a bound of the budget.
    #[error("{what} over the limit of {limit}")]
    TooLarge { what: &'static str, limit: usize },
}

/// Why applying bytes to a document failed. The document must be discarded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    #[error(transparent)]
    Input(#[from] InputError),
    /// A change reuses an (actor, seq) the document holds with other content: the writer's
    /// file was restored or copied and wrote again under the same actor.
    #[error("a change reuses sequence number {seq} of an actor with other content")]
    SeqClash { actor: ActorId, seq: u64 },
    /// Changes depend on changes the document does not hold.
    #[error("changes depend on changes the document does not hold")]
    MissingDependencies,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn malformed(what: impl Into<String>) -> InputError {
    InputError::Malformed(what.into())
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0 }
    }

    fn is_empty(&self) -> bool {
        self.pos >= self.bytes.len()
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], InputError> {
        if n > self.remaining() {
            return Err(malformed("truncated Automerge data"));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn uleb(&mut self) -> Result<u64, InputError> {
        let mut value = 0u64;
        for i in 0..10 {
            let b = self.take(1)?[0];
            let bits = u64::from(b & 0x7f);
            if i == 9 && bits > 1 {
                return Err(malformed("LEB128 overflow"));
            }
            value |= bits << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(malformed("LEB128 too long"))
    }

    fn sleb(&mut self) -> Result<i64, InputError> {
        let mut value = 0i64;
        let mut shift = 0u32;
        loop {
            let b = self.take(1)?[0];
            if shift >= 63 && b & 0x7f != 0 && b & 0x7f != 0x7f {
                return Err(malformed("LEB128 overflow"));
            }
            if shift < 64 {
                value |= i64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                if shift < 64 && b & 0x40 != 0 {
                    value |= -1i64 << shift;
                }
                return Ok(value);
            }
            if shift > 63 {
                return Err(malformed("LEB128 too long"));
            }
        }
    }

    fn skip_leb(&mut self) -> Result<(), InputError> {
        for _ in 0..10 {
            if self.take(1)?[0] & 0x80 == 0 {
                return Ok(());
            }
        }
        Err(malformed("LEB128 too long"))
    }

    fn len_prefixed(&mut self) -> Result<&'a [u8], InputError> {
        let n = self.uleb()?;
        self.take(usize::try_from(n).map_err(|_| malformed("length overflow"))?)
    }

    /// A count of items each at least `min_item_bytes` long: bounded by what is left.
    fn count(&mut self, min_item_bytes: usize) -> Result<usize, InputError> {
        let n = self.uleb()?;
        match usize::try_from(n) {
            Ok(n) if n.saturating_mul(min_item_bytes.max(1)) <= self.remaining() => Ok(n),
            _ => Err(malformed("a count exceeds the data")),
        }
    }
}

/// The change hash Automerge gives a chunk: SHA-256 of type, LEB128 length and data.
fn chunk_hash(chunk_type: u8, data: &[u8]) -> ChangeHash {
    let mut h = Sha256::new();
    h.update([chunk_type]);
    let mut len = data.len() as u64;
    loop {
        let b = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            h.update([b]);
            break;
        }
        h.update([b | 0x80]);
    }
    h.update(data);
    ChangeHash(h.finalize().into())
}

/// Inflate a raw DEFLATE stream, refusing to produce more than `max` bytes.
fn inflate_bounded(data: &[u8], max: usize) -> Result<Vec<u8>, InputError> {
    let mut out = Vec::new();
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    flate2::read::DeflateDecoder::new(data)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| malformed("a compressed part does not inflate"))?;
    if out.len() > max {
        return Err(InputError::TooLarge { what: "decoded change bytes", limit: max });
    }
    Ok(out)
}

struct Tally<'b> {
    budget: &'b Budget,
    used: &'b mut Usage,
}

impl Tally<'_> {
    fn decoded(&mut self, n: usize) -> Result<(), InputError> {
        self.used.decoded_bytes = self.used.decoded_bytes.saturating_add(n);
        if self.used.decoded_bytes > self.budget.decoded_bytes_max {
            return Err(InputError::TooLarge { what: "decoded change bytes", limit: self.budget.decoded_bytes_max });
        }
        Ok(())
    }

    fn decoded_left(&self) -> usize {
        self.budget.decoded_bytes_max.saturating_sub(self.used.decoded_bytes)
    }

    fn ops(&mut self, n: usize) -> Result<(), InputError> {
        self.used.ops = self.used.ops.saturating_add(n);
        if self.used.ops > self.budget.ops_max {
            return Err(InputError::TooLarge { what: "operations", limit: self.budget.ops_max });
        }
        Ok(())
    }

    fn changes(&mut self, n: usize) -> Result<(), InputError> {
        self.used.changes = self.used.changes.saturating_add(n);
        if self.used.changes > self.budget.changes_max {
            return Err(InputError::TooLarge { what: "changes", limit: self.budget.changes_max });
        }
        Ok(())
    }

    /// Entries a single column may declare: no more than the operations allowed in all.
    fn entries_max(&self) -> usize {
        self.budget.ops_max.max(self.budget.changes_max)
    }
}

/// Column metadata: (spec, length in bytes) in order.
type Columns = Vec<(u32, usize)>;

fn column_meta(r: &mut Reader<'_>) -> Result<Columns, InputError> {
    let n = r.count(2)?;
    let mut cols = Vec::with_capacity(n);
    for _ in 0..n {
        let spec = u32::try_from(r.uleb()?).map_err(|_| malformed("column spec overflow"))?;
        let len = usize::try_from(r.uleb()?).map_err(|_| malformed("column length overflow"))?;
        cols.push((spec, len));
    }
    Ok(cols)
}

/// What a column declares: how many entries, and for group columns the sum of their values
/// (how many entries the grouped columns hold); for value metadata, the bytes of values.
#[derive(Default)]
struct ColumnCount {
    entries: usize,
    sum: usize,
}

/// Count a column's entries without materialising them. Every count is bounded by
/// `entries_max`, so no column can make Automerge iterate or allocate beyond it.
fn count_column(spec: u32, data: &[u8], entries_max: usize) -> Result<ColumnCount, InputError> {
    let too_many = || InputError::TooLarge { what: "column entries", limit: entries_max };
    let mut r = Reader::new(data);
    let mut c = ColumnCount::default();
    let col_type = spec & 0b111;
    let add = |c: &mut ColumnCount, n: usize| -> Result<(), InputError> {
        c.entries = c.entries.checked_add(n).filter(|&e| e <= entries_max).ok_or_else(too_many)?;
        Ok(())
    };
    match col_type {
        // Boolean: alternating run lengths, starting with false.
        4 => {
            while !r.is_empty() {
                let n = usize::try_from(r.uleb()?).map_err(|_| too_many())?;
                add(&mut c, n)?;
            }
        }
        // Raw values: no entries of their own (their lengths are in the metadata column).
        7 => {}
        // Run-length encoded: group, actor, integer, delta, string, value metadata.
        _ => {
            while !r.is_empty() {
                let run = r.sleb()?;
                if run > 0 {
                    let n = usize::try_from(run).map_err(|_| too_many())?;
                    add(&mut c, n)?;
                    let value = rle_value(&mut r, col_type)?;
                    c.sum = c.sum.saturating_add(value.saturating_mul(n as u64) as usize);
                } else if run < 0 {
                    let n = usize::try_from(run.unsigned_abs()).map_err(|_| too_many())?;
                    add(&mut c, n)?;
                    for _ in 0..n {
                        let value = rle_value(&mut r, col_type)?;
                        c.sum = c.sum.saturating_add(value as usize);
                    }
                } else {
                    let n = usize::try_from(r.uleb()?).map_err(|_| too_many())?;
                    add(&mut c, n)?;
                }
            }
        }
    }
    Ok(c)
}

/// Skip one value of a run-length encoded column; returns the value where it is summed
/// (group counts; value lengths), else 0.
fn rle_value(r: &mut Reader<'_>, col_type: u32) -> Result<u64, InputError> {
    match col_type {
        0 => r.uleb(),
        6 => Ok(r.uleb()? >> 4),
        5 => r.len_prefixed().map(|_| 0),
        _ => r.skip_leb().map(|_| 0),
    }
}

/// Check a set of columns (already inflated): every count within bounds, group sums and
/// value lengths consistent with the bytes there are. Returns the entries of `key_column`.
fn check_columns(cols: &[(u32, usize)], data: &[u8], key_column: u32, entries_max: usize) -> Result<usize, InputError> {
    let mut key_entries = 0;
    let mut offset = 0usize;
    let mut value_bytes = std::collections::HashMap::new();
    let mut metadata_sums = Vec::new();
    for &(spec, len) in cols {
        let end = offset.checked_add(len).filter(|&e| e <= data.len()).ok_or_else(|| malformed("column overruns"))?;
        let bytes = &data[offset..end];
        offset = end;
        let count = count_column(spec, bytes, entries_max)?;
        match spec & 0b111 {
            0 if count.sum > entries_max => {
                return Err(InputError::TooLarge { what: "grouped column entries", limit: entries_max });
            }
            6 => metadata_sums.push((spec >> 4, count.sum)),
            7 => {
                value_bytes.insert(spec >> 4, len);
            }
            _ => {}
        }
        if spec == key_column {
            key_entries = count.entries;
        }
    }
    for (id, sum) in metadata_sums {
        if sum > value_bytes.get(&id).copied().unwrap_or(0) {
            return Err(malformed("value lengths exceed the value column"));
        }
    }
    Ok(key_entries)
}

/// Inflate the compressed columns of a set, returning the plain column data and plain specs.
fn inflate_columns(
    cols: &[(u32, usize)],
    data: &[u8],
    tally: &mut Tally<'_>,
) -> Result<(Columns, Vec<u8>), InputError> {
    let mut out = Vec::new();
    let mut plain = Vec::with_capacity(cols.len());
    let mut offset = 0usize;
    for &(spec, len) in cols {
        let end = offset.checked_add(len).filter(|&e| e <= data.len()).ok_or_else(|| malformed("column overruns"))?;
        let bytes = &data[offset..end];
        offset = end;
        if spec & DEFLATE_BIT != 0 {
            let inflated = inflate_bounded(bytes, tally.decoded_left())?;
            tally.decoded(inflated.len())?;
            plain.push((spec & !DEFLATE_BIT, inflated.len()));
            out.extend_from_slice(&inflated);
        } else {
            plain.push((spec, len));
            out.extend_from_slice(bytes);
        }
    }
    Ok((plain, out))
}

fn skip_actor(r: &mut Reader<'_>) -> Result<(), InputError> {
    r.len_prefixed().map(|_| ())
}

/// A change chunk's body: header fields, then its op columns (never compressed).
fn inspect_change(body: &[u8], tally: &mut Tally<'_>) -> Result<(), InputError> {
    let mut r = Reader::new(body);
    let deps = r.count(32)?;
    r.take(deps * 32)?;
    skip_actor(&mut r)?;
    r.uleb()?; // seq
    if r.uleb()? == 0 {
        return Err(malformed("a change starts at op 0"));
    }
    r.sleb()?; // timestamp
    std::str::from_utf8(r.len_prefixed()?).map_err(|_| malformed("a change message is not UTF-8"))?;
    let others = r.count(1)?;
    for _ in 0..others {
        skip_actor(&mut r)?;
    }
    let cols = column_meta(&mut r)?;
    if cols.iter().any(|(spec, _)| spec & DEFLATE_BIT != 0) {
        return Err(malformed("a change chunk with compressed columns"));
    }
    let total: usize =
        cols.iter().try_fold(0usize, |a, (_, l)| a.checked_add(*l)).ok_or_else(|| malformed("overflow"))?;
    let data = r.take(total)?;
    let ops = check_columns(&cols, data, ACTION_COLUMN, tally.entries_max())?;
    if ops > tally.budget.change_ops_max {
        return Err(InputError::TooLarge { what: "operations in one change", limit: tally.budget.change_ops_max });
    }
    tally.ops(ops)?;
    tally.changes(1)
}

/// A document chunk's body: actors, heads, change and op columns (possibly compressed),
/// head indices. Returns its heads.
fn inspect_document(body: &[u8], tally: &mut Tally<'_>) -> Result<Vec<ChangeHash>, InputError> {
    let mut r = Reader::new(body);
    let actors = r.count(1)?;
    for _ in 0..actors {
        skip_actor(&mut r)?;
    }
    let n_heads = r.count(32)?;
    let mut heads = Vec::with_capacity(n_heads);
    for _ in 0..n_heads {
        let h: [u8; 32] = r.take(32)?.try_into().map_err(|_| malformed("head"))?;
        heads.push(ChangeHash(h));
    }
    let change_cols = column_meta(&mut r)?;
    let op_cols = column_meta(&mut r)?;
    let sum = |cols: &[(u32, usize)]| {
        cols.iter().try_fold(0usize, |a, (_, l)| a.checked_add(*l)).ok_or_else(|| malformed("overflow"))
    };
    let change_data = r.take(sum(&change_cols)?)?;
    let op_data = r.take(sum(&op_cols)?)?;
    if !r.is_empty() {
        for _ in 0..n_heads {
            r.uleb()?;
        }
    }
    if !r.is_empty() {
        return Err(malformed("bytes after a document chunk's data"));
    }
    tally.decoded(body.len())?;
    let (change_cols, change_data) = inflate_columns(&change_cols, change_data, tally)?;
    let (op_cols, op_data) = inflate_columns(&op_cols, op_data, tally)?;
    let changes = check_columns(&change_cols, &change_data, CHANGE_ACTOR_COLUMN, tally.entries_max())?;
    let ops = check_columns(&op_cols, &op_data, ACTION_COLUMN, tally.entries_max())?;
    tally.changes(changes)?;
    tally.ops(ops)?;
    Ok(heads)
}

/// Walk `bytes` as a sequence of Automerge chunks within what `budget` leaves after `used`
/// (which is updated). Returns what the bytes claim: each change chunk's hash and each
/// document chunk's heads. Nothing is decoded by Automerge here.
pub fn inspect(bytes: &[u8], budget: &Budget, used: &mut Usage) -> Result<Vec<ChangeHash>, InputError> {
    let mut tally = Tally { budget, used };
    let mut r = Reader::new(bytes);
    let mut claims = Vec::new();
    if r.is_empty() {
        return Ok(claims);
    }
    while !r.is_empty() {
        if r.take(4)? != MAGIC {
            return Err(malformed("not Automerge data (bad magic bytes)"));
        }
        let checksum: [u8; 4] = r.take(4)?.try_into().map_err(|_| malformed("checksum"))?;
        let chunk_type = r.take(1)?[0];
        let len = usize::try_from(r.uleb()?).map_err(|_| malformed("chunk length overflow"))?;
        let data = r.take(len)?;
        match chunk_type {
            CHUNK_CHANGE | CHUNK_DOCUMENT => {
                let hash = chunk_hash(chunk_type, data);
                if hash.0[..4] != checksum {
                    return Err(malformed("a chunk's checksum does not match its content"));
                }
                if chunk_type == CHUNK_CHANGE {
                    tally.decoded(data.len())?;
                    inspect_change(data, &mut tally)?;
                    claims.push(hash);
                } else {
                    claims.extend(inspect_document(data, &mut tally)?);
                }
            }
            CHUNK_COMPRESSED => {
                let inflated = inflate_bounded(data, tally.decoded_left())?;
                tally.decoded(inflated.len())?;
                let hash = chunk_hash(CHUNK_CHANGE, &inflated);
                if hash.0[..4] != checksum {
                    return Err(malformed("a compressed change's checksum does not match its content"));
                }
                inspect_change(&inflated, &mut tally)?;
                claims.push(hash);
            }
            CHUNK_BUNDLE => return Err(malformed("bundle chunks are not accepted")),
            other => return Err(malformed(format!("unknown chunk type {other}"))),
        }
    }
    Ok(claims)
}

/// Whether `bytes` begin with a whole saved document (a document chunk), as the server sends
/// a document to a device that lacks most of it. Says nothing of the rest: [`apply`] checks it.
pub fn starts_with_document(bytes: &[u8]) -> bool {
    bytes.len() > 8 && bytes[..4] == MAGIC && bytes[8] == CHUNK_DOCUMENT
}

/// Whether `bytes` are exactly one document chunk (a document saved whole, nothing after
/// it): loaded into an empty document, they are that document as it would save itself.
pub fn is_one_document(bytes: &[u8]) -> bool {
    let mut r = Reader::new(bytes);
    let header =
        r.take(4).is_ok_and(|m| m == MAGIC) && r.take(4).is_ok() && r.take(1).is_ok_and(|t| t[0] == CHUNK_DOCUMENT);
    header && r.uleb().ok().and_then(|n| usize::try_from(n).ok()).is_some_and(|n| n == r.remaining())
}

/// Inspect `bytes` within the budget, then load them into `am`. Returns the claims for
/// [`check_complete`]. On any error `am` must be discarded.
///
/// A panic inside Automerge's decoder (found by fuzzing, kept in `fuzz/artifacts/merge_push/`)
/// is caught and reported as malformed input: on the server it would poison the store's
/// writer lock, on a phone it would take down the sync.
pub fn apply(
    am: &mut Automerge,
    bytes: &[u8],
    budget: &Budget,
    used: &mut Usage,
) -> Result<Vec<ChangeHash>, ApplyError> {
    let claims = inspect(bytes, budget, used)?;
    if bytes.is_empty() {
        return Ok(claims);
    }
    loaded(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| am.load_incremental(bytes))))?;
    Ok(claims)
}

/// What Automerge said of loading changes (run under `catch_unwind`), as our error.
fn loaded<T>(outcome: std::thread::Result<Result<T, AutomergeError>>) -> Result<T, ApplyError> {
    match outcome {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(AutomergeError::DuplicateSeqNumber(seq, actor))) => Err(ApplyError::SeqClash { actor, seq }),
        Ok(Err(e)) => Err(malformed(format!("changes do not load: {e}")).into()),
        Err(_) => Err(malformed("changes do not decode (the decoder gave up)").into()),
    }
}

/// Like [`apply`], and also returns the changes the bytes added to `am` (those it did not
/// hold), parsed from the bytes themselves: Automerge would otherwise rebuild them from
/// its columns when asked (`get_changes`), a pass over every operation in their counter
/// range, which for phones writing at once is most of the document. A document chunk's
/// changes are taken from it loaded on its own: the cost of what was pushed.
pub fn apply_collecting(
    am: &mut Automerge,
    bytes: &[u8],
    budget: &Budget,
    used: &mut Usage,
) -> Result<(Vec<ChangeHash>, Vec<automerge::Change>), ApplyError> {
    let claims = inspect(bytes, budget, used)?;
    let parsed = match std::panic::catch_unwind(|| changes_in(bytes)) {
        Ok(parsed) => parsed?,
        Err(_) => return Err(malformed("changes do not decode (the decoder gave up)").into()),
    };
    let mut seen = std::collections::HashSet::new();
    let fresh: Vec<automerge::Change> = parsed
        .into_iter()
        .filter(|c| seen.insert(c.hash()) && am.get_missing_deps(&[c.hash()]).contains(&c.hash()))
        .collect();
    loaded(std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| am.apply_changes(fresh.clone()))))?;
    Ok((claims, fresh))
}

/// The changes in `bytes` (already [`inspect`]ed), chunk by chunk, in their order.
fn changes_in(bytes: &[u8]) -> Result<Vec<automerge::Change>, InputError> {
    let mut r = Reader::new(bytes);
    let mut out = Vec::new();
    while !r.is_empty() {
        let start = r.pos;
        r.take(8)?;
        let chunk_type = r.take(1)?[0];
        let len = usize::try_from(r.uleb()?).map_err(|_| malformed("chunk length overflow"))?;
        r.take(len)?;
        let chunk = &bytes[start..r.pos];
        if chunk_type == CHUNK_DOCUMENT {
            let doc = Automerge::load(chunk).map_err(|e| malformed(format!("a document does not load: {e}")))?;
            out.extend(doc.get_changes(&[]));
        } else {
            out.push(
                automerge::Change::try_from(chunk).map_err(|e| malformed(format!("a change does not load: {e}")))?,
            );
        }
    }
    Ok(out)
}

/// After [`apply`]: no change waits for a missing dependency, and every claimed change is
/// in the document (Automerge skips chunks it cannot read without saying so).
pub fn check_complete(am: &Automerge, claims: &[ChangeHash]) -> Result<(), ApplyError> {
    if !am.get_missing_deps(&[]).is_empty() {
        return Err(ApplyError::MissingDependencies);
    }
    let missing = am.get_missing_deps(claims);
    if !missing.is_empty() {
        return Err(malformed(format!("{} of the changes sent did not load", missing.len())).into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use automerge::transaction::Transactable;

    fn doc_with(n: usize) -> Automerge {
        let mut am = Automerge::new();
        let mut tx = am.transaction();
        for i in 0..n {
            tx.put(automerge::ROOT, format!("k{i}"), i as i64).expect("put");
        }
        tx.commit();
        am
    }

    /// What `apply_collecting` returns as new is what Automerge, asked after the merge,
    /// lists as the changes after the document's old heads: pushed as a document (a phone's
    /// first push) or as change chunks (a delta), with changes the document already held.
    #[test]
    fn collected_changes_are_the_changes_the_merge_added() {
        let base = doc_with(20);
        let mut phone = base.fork();
        let mut tx = phone.transaction();
        tx.put(automerge::ROOT, "k3", "phone").expect("put");
        tx.commit();
        let mut tx = phone.transaction();
        tx.put(automerge::ROOT, "k4", "phone").expect("put");
        tx.commit();
        let mut server = base.fork();
        let mut tx = server.transaction();
        tx.put(automerge::ROOT, "k5", "server").expect("put");
        tx.commit();
        let hashes = |cs: &[automerge::Change]| cs.iter().map(automerge::Change::hash).collect::<Vec<_>>();
        for pushed in [phone.save(), phone.save_after(&base.get_heads()), [phone.save(), phone.save()].concat()] {
            let mut am = server.clone();
            let before = am.get_heads();
            let (claims, fresh) =
                apply_collecting(&mut am, &pushed, &Budget::PUSH, &mut Usage::default()).expect("applies");
            check_complete(&am, &claims).expect("complete");
            assert_eq!(hashes(&fresh), hashes(&am.get_changes(&before)));
            assert_eq!(fresh.len(), 2, "the base's change was held already");
            let mut merged = server.clone();
            merged.merge(&mut phone.clone()).expect("merge");
            assert_eq!(am.get_heads(), merged.get_heads());
        }
    }

    #[test]
    fn one_document_is_a_document_chunk_with_nothing_after_it() {
        let am = doc_with(50);
        let saved = am.save();
        assert!(is_one_document(&saved));
        let change = am.get_changes(&[])[0].raw_bytes().to_vec();
        assert!(!is_one_document(&change), "a change chunk");
        assert!(!is_one_document(&[saved.clone(), change].concat()), "a document, then a change");
        assert!(!is_one_document(&saved[..saved.len() - 1]), "truncated");
        assert!(!is_one_document(&[]));
    }

    #[test]
    fn saved_documents_and_changes_pass_with_their_claims() {
        let am = doc_with(500);
        let mut used = Usage::default();
        let claims = inspect(&am.save(), &Budget::PUSH, &mut used).expect("document");
        assert_eq!(claims, am.get_heads());
        assert_eq!(used.ops, 500);
        assert_eq!(used.changes, 1);
        let mut used = Usage::default();
        let change = am.get_changes(&[])[0].raw_bytes().to_vec();
        let claims = inspect(&change, &Budget::PUSH, &mut used).expect("change");
        assert_eq!(claims, am.get_heads());
        assert_eq!(used.ops, 500);
    }

    #[test]
    fn garbage_after_valid_bytes_is_malformed() {
        let mut bytes = doc_with(3).save();
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(b"garbage");
        assert!(matches!(inspect(&bytes, &Budget::PUSH, &mut Usage::default()), Err(InputError::Malformed(_))));
    }

    #[test]
    fn a_change_over_the_op_limit_is_too_large() {
        let am = doc_with(200);
        let budget = Budget { change_ops_max: 100, ..Budget::PUSH };
        let change = am.get_changes(&[])[0].raw_bytes().to_vec();
        assert!(matches!(inspect(&change, &budget, &mut Usage::default()), Err(InputError::TooLarge { .. })));
    }

    #[test]
    fn leb128_reads_signed_and_unsigned() {
        assert_eq!(Reader::new(&[0xe5, 0x8e, 0x26]).uleb(), Ok(624_485));
        assert_eq!(Reader::new(&[0xc0, 0xbb, 0x78]).sleb(), Ok(-123_456));
        assert_eq!(Reader::new(&[0x7f]).sleb(), Ok(-1));
        assert!(Reader::new(&[0xff; 11]).uleb().is_err());
    }
}

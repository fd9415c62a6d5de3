//! Moving a district's data from its SQLite file into PostgreSQL (`posync migrate-store`).
//!
//! Everything is copied in one PostgreSQL transaction, so a failed move leaves the target as
//! it was. The target may already serve other districts: feed and audit positions are
//! shifted past the target's clocks (an empty target keeps them as they were, so every
//! phone's cursor stays valid), and shared units above the district are kept. Afterwards
//! every document is read back and its bytes must load to exactly the heads SQLite held.

use crate::{PgStore, StoreError};
use automerge::Automerge;
use posync_model::Heads;
use rusqlite::OpenFlags;
use rusqlite::types::Value;
use serde::Serialize;
use std::path::Path;
use tokio_postgres::types::ToSql;

/// Every table a store holds, in an order that respects foreign keys.
pub const TABLES: [&str; 16] = [
    "units",
    "users",
    "user_units",
    "enrolments",
    "user_pins",
    "api_keys",
    "devices",
    "docs",
    "doc_chunks",
    "feed",
    "device_docs",
    "visits",
    "visit_immunisations",
    "people",
    "conflicts",
    "audit",
];

/// Rows read from SQLite before each insert.
const BATCH_ROWS_MAX: usize = 500;

/// What a move copied and checked.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MigrationReport {
    /// Rows copied per table.
    pub rows: Vec<(String, u64)>,
    /// Documents whose stored bytes load to the heads SQLite held.
    pub docs_verified: u64,
    /// How far feed positions moved (0 into an empty database).
    pub feed_offset: i64,
    pub audit_offset: i64,
}

/// A column's PostgreSQL type, as far as the copy cares.
#[derive(Clone, Copy, Debug)]
enum ColType {
    Int,
    Bool,
    Text,
    Bytes,
}

fn col_type(pg: &str) -> Result<ColType, StoreError> {
    Ok(match pg {
        "bigint" | "integer" => ColType::Int,
        "boolean" => ColType::Bool,
        "text" => ColType::Text,
        "bytea" => ColType::Bytes,
        other => return Err(StoreError::Backend(format!("migrate: unexpected column type {other}"))),
    })
}

use crate::postgres::Param;

/// A SQLite value as the PostgreSQL column wants it. A value of another type can only come
/// from a projection column a foreign writer filled oddly; PostgreSQL's projection writes
/// those as NULL too.
fn convert(v: Value, t: ColType) -> Param {
    match (t, v) {
        (ColType::Int, Value::Integer(i)) => Box::new(Some(i)),
        (ColType::Int, _) => Box::new(None::<i64>),
        (ColType::Bool, Value::Integer(i)) => Box::new(Some(i != 0)),
        (ColType::Bool, _) => Box::new(None::<bool>),
        (ColType::Text, Value::Text(s)) => Box::new(Some(s)),
        (ColType::Text, Value::Integer(i)) => Box::new(Some(i.to_string())),
        (ColType::Text, _) => Box::new(None::<String>),
        (ColType::Bytes, Value::Blob(b)) => Box::new(Some(b)),
        (ColType::Bytes, _) => Box::new(None::<Vec<u8>>),
    }
}

/// How far a move has come, for a progress display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MoveProgress {
    /// Rows read and sent so far, of every table's rows.
    Copying { rows_done: u64, rows_total: u64 },
    /// Documents checked in the target so far, of all of them.
    Verifying { docs_done: u64, docs_total: u64 },
}

/// Copy everything in the SQLite store at `from` into `to`, then verify every document.
pub async fn sqlite_to_postgres(from: &Path, to: &PgStore) -> Result<MigrationReport, StoreError> {
    sqlite_to_postgres_with(from, to, &|_| {}).await
}

/// [`sqlite_to_postgres`], telling `progress` after every batch of rows and every document.
pub async fn sqlite_to_postgres_with(
    from: &Path,
    to: &PgStore,
    progress: &(dyn Fn(MoveProgress) + Sync),
) -> Result<MigrationReport, StoreError> {
    // Opening through the store brings an older file up to the current schema first.
    drop(crate::SqliteStore::open(from)?);
    let src = rusqlite::Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut client = to.pool.get().await?;
    let tx = client.transaction().await?;
    // Hold both clocks for the whole copy: no instance commits feed or audit entries while
    // positions are being shifted, so none can interleave with the copied ones.
    let feed_offset = clock(&tx, "feed").await?;
    let audit_offset = clock(&tx, "audit").await?;
    let mut report = MigrationReport { feed_offset, audit_offset, ..Default::default() };
    let mut rows_total = 0u64;
    for table in TABLES {
        rows_total += src.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get::<_, i64>(0))? as u64;
    }
    let mut rows_done = 0u64;
    for table in TABLES {
        let mut copied = |n: u64| {
            rows_done += n;
            progress(MoveProgress::Copying { rows_done, rows_total });
        };
        let n = copy_table(&src, &tx, table, feed_offset, audit_offset, &mut copied).await?;
        report.rows.push((table.to_owned(), n));
    }
    tx.execute(
        "UPDATE clocks SET seq = GREATEST(seq, (SELECT COALESCE(MAX(seq), 0) FROM feed)) WHERE name = 'feed'",
        &[],
    )
    .await?;
    tx.execute(
        "UPDATE clocks SET seq = GREATEST(seq, (SELECT COALESCE(MAX(seq), 0) FROM audit)) WHERE name = 'audit'",
        &[],
    )
    .await?;
    tx.commit().await?;
    report.docs_verified = verify(&src, to, progress).await?;
    Ok(report)
}

async fn clock(tx: &deadpool_postgres::Transaction<'_>, name: &str) -> Result<i64, StoreError> {
    let row = tx.query_one("UPDATE clocks SET seq = seq WHERE name = $1 RETURNING seq", &[&name]).await?;
    Ok(row.try_get(0)?)
}

async fn columns(tx: &deadpool_postgres::Transaction<'_>, table: &str) -> Result<Vec<(String, ColType)>, StoreError> {
    let rows = tx
        .query(
            "SELECT column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = current_schema() AND table_name = $1 ORDER BY ordinal_position",
            &[&table],
        )
        .await?;
    rows.iter().map(|r| Ok((r.try_get::<_, String>(0)?, col_type(&r.try_get::<_, String>(1)?)?))).collect()
}

async fn copy_table(
    src: &rusqlite::Connection,
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    feed_offset: i64,
    audit_offset: i64,
    read_rows: &mut (dyn FnMut(u64) + Send),
) -> Result<u64, StoreError> {
    let cols = columns(tx, table).await?;
    let names: Vec<&str> = cols.iter().map(|(n, _)| n.as_str()).collect();
    // Positions move past what the target already holds; the unit tree is linked after
    // every unit is in (a parent may come after its child in the source).
    let shift = |name: &str| match (table, name) {
        ("feed" | "docs", "seq") => feed_offset,
        ("audit", "seq") => audit_offset,
        _ => 0,
    };
    let mut stmt = src.prepare(&format!("SELECT {} FROM {table}", names.join(", ")))?;
    let mut rows = stmt.query([])?;
    let mut batch: Vec<Vec<Param>> = Vec::new();
    let mut parents: Vec<(String, String)> = Vec::new();
    let mut copied = 0u64;
    while let Some(row) = rows.next()? {
        let mut values = Vec::with_capacity(cols.len());
        for (i, (name, t)) in cols.iter().enumerate() {
            let mut v: Value = row.get(i)?;
            if let Value::Integer(n) = &mut v {
                *n += shift(name);
            }
            if table == "units" && name == "parent_id" {
                if let Value::Text(p) = &v {
                    parents.push((row.get(0)?, p.clone()));
                }
                v = Value::Null;
            }
            values.push(convert(v, *t));
        }
        batch.push(values);
        if batch.len() == BATCH_ROWS_MAX {
            read_rows(BATCH_ROWS_MAX as u64);
            copied += insert_batch(tx, table, &names, std::mem::take(&mut batch)).await?;
        }
    }
    read_rows(batch.len() as u64);
    copied += insert_batch(tx, table, &names, batch).await?;
    for (unit, parent) in parents {
        tx.execute("UPDATE units SET parent_id = $2 WHERE unit_id = $1 AND parent_id IS NULL", &[&unit, &parent])
            .await?;
    }
    Ok(copied)
}

async fn insert_batch(
    tx: &deadpool_postgres::Transaction<'_>,
    table: &str,
    names: &[&str],
    batch: Vec<Vec<Param>>,
) -> Result<u64, StoreError> {
    if table != "units" {
        // Anything already present is a conflict the move must not paper over.
        return crate::postgres::insert_rows(tx, table, names, batch).await;
    }
    // Units above the district (the province) may be there already, shared with other
    // districts.
    let mut n = 0;
    for row in batch {
        let params: Vec<&(dyn ToSql + Sync)> = row.iter().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let holes: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO units ({}) VALUES ({}) ON CONFLICT (unit_id) DO NOTHING",
            names.join(", "),
            holes.join(", ")
        );
        n += tx.execute(&sql, &params).await?;
    }
    Ok(n)
}

/// Every SQLite document's heads, compared with what PostgreSQL's stored bytes (snapshot
/// and chunks, as the store reads them) load to.
async fn verify(
    src: &rusqlite::Connection,
    to: &PgStore,
    progress: &(dyn Fn(MoveProgress) + Sync),
) -> Result<u64, StoreError> {
    use crate::SyncStore;
    let mut stmt = src.prepare("SELECT doc_id, heads FROM docs ORDER BY doc_id")?;
    let expected: Vec<(String, Vec<u8>)> =
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<Result<_, _>>()?;
    let mut verified = 0u64;
    for (doc, heads) in &expected {
        let mismatch = |what: &str| StoreError::Backend(format!("migrate: document {doc}: {what}"));
        let id = doc.parse().map_err(|_| mismatch("bad id"))?;
        let got = to.get(id).await?.ok_or_else(|| mismatch("missing in the target"))?;
        if got.meta.heads.to_bytes() != *heads {
            return Err(mismatch("stored heads differ"));
        }
        let am = Automerge::load(&got.bytes).map_err(|e| mismatch(&format!("bytes do not load: {e}")))?;
        if Heads::new(am.get_heads()).to_bytes() != *heads {
            return Err(mismatch("bytes load to other heads"));
        }
        verified += 1;
        progress(MoveProgress::Verifying { docs_done: verified, docs_total: expected.len() as u64 });
    }
    Ok(verified)
}

//! Running [`crate::plan`]'s statements on PostgreSQL: binding [`Value`]s by the type the
//! server infers for each parameter, and reading rows back by column type. Nothing here
//! decides what is written.

use crate::StoreError;
use crate::plan;
use crate::sql::{Dialect, Insert, Row, Statement, Value};
use bytes::BytesMut;
use deadpool_postgres::Transaction;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

pub(super) const D: Dialect = Dialect::Postgres;

type BoxError = Box<dyn std::error::Error + Sync + Send>;

impl ToSql for Value {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, BoxError> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(i) => match *ty {
                Type::INT2 => i16::try_from(*i)?.to_sql(ty, out),
                Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
                _ => i.to_sql(ty, out),
            },
            Value::Bool(b) => b.to_sql(ty, out),
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Bytes(b) => b.as_slice().to_sql(ty, out),
            Value::Texts(t) => t.to_sql(ty, out),
        }
    }

    /// Every value names its own type; the server's inferred type decides the encoding.
    fn accepts(_: &Type) -> bool {
        true
    }

    to_sql_checked!();
}

fn value_of(row: &tokio_postgres::Row, i: usize) -> Result<Value, StoreError> {
    let ty = row.columns()[i].type_().clone();
    let v = match ty {
        Type::INT8 => row.try_get::<_, Option<i64>>(i)?.map(Value::Int),
        Type::INT4 => row.try_get::<_, Option<i32>>(i)?.map(|n| Value::Int(n.into())),
        Type::INT2 => row.try_get::<_, Option<i16>>(i)?.map(|n| Value::Int(n.into())),
        Type::BOOL => row.try_get::<_, Option<bool>>(i)?.map(Value::Bool),
        Type::BYTEA => row.try_get::<_, Option<Vec<u8>>>(i)?.map(Value::Bytes),
        Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => row.try_get::<_, Option<String>>(i)?.map(Value::Text),
        other => return Err(StoreError::Backend(format!("column {i}: unexpected type {other}"))),
    };
    Ok(v.unwrap_or(Value::Null))
}

fn params(s: &Statement) -> Vec<&(dyn ToSql + Sync)> {
    s.params.iter().map(|p| p as &(dyn ToSql + Sync)).collect()
}

pub(super) async fn exec(tx: &Transaction<'_>, s: &Statement) -> Result<u64, StoreError> {
    let stmt = tx.prepare_cached(&s.sql).await?;
    Ok(tx.execute(&stmt, &params(s)).await?)
}

pub(super) async fn query(tx: &Transaction<'_>, s: &Statement) -> Result<Vec<Row>, StoreError> {
    let stmt = tx.prepare_cached(&s.sql).await?;
    let rows = tx.query(&stmt, &params(s)).await?;
    rows.iter().map(|r| (0..r.len()).map(|i| value_of(r, i)).collect::<Result<Vec<_>, _>>().map(Row)).collect()
}

pub(super) async fn query_opt(tx: &Transaction<'_>, s: &Statement) -> Result<Option<Row>, StoreError> {
    Ok(query(tx, s).await?.into_iter().next())
}

/// As few multi-row statements as the parameter limit allows: one round trip per few hundred
/// rows instead of one per row.
pub(super) async fn insert(tx: &Transaction<'_>, ins: &Insert) -> Result<u64, StoreError> {
    let mut n = 0;
    for s in ins.statements(D) {
        n += exec(tx, &s).await?;
    }
    Ok(n)
}

/// Run a [`plan::WritePlan`]: refused whole (nothing written) if its collision probe finds a
/// row, else every step in order.
pub(super) async fn run_writes(tx: &Transaction<'_>, w: &plan::WritePlan) -> Result<(), StoreError> {
    if let Some((probe, what)) = &w.collision
        && query_opt(tx, probe).await?.is_some()
    {
        return Err(StoreError::IdCollision { doc: w.doc, what: (*what).into() });
    }
    for step in &w.steps {
        match step {
            plan::WriteStep::Exec(s) => exec(tx, s).await.map(drop)?,
            plan::WriteStep::Insert(i) => insert(tx, i).await.map(drop)?,
        }
    }
    Ok(())
}

/// One owned statement parameter (the SQLite-to-PostgreSQL copy, whose tables and columns
/// are read from the catalogue at run time).
pub(crate) type Param = Box<dyn ToSql + Sync + Send>;

/// Insert `rows` into `table` in multi-row statements within the parameter limit.
pub(crate) async fn insert_rows(
    tx: &Transaction<'_>,
    table: &str,
    columns: &[&str],
    rows: Vec<Vec<Param>>,
) -> Result<u64, StoreError> {
    let width = columns.len().max(1);
    let per_statement = (D.params_max() / width).max(1);
    let mut inserted = 0u64;
    for chunk in rows.chunks(per_statement) {
        let tuples: Vec<String> = (0..chunk.len())
            .map(|r| format!("({})", (1..=width).map(|c| D.p(r * width + c)).collect::<Vec<_>>().join(", ")))
            .collect();
        let sql = format!("INSERT INTO {table} ({}) VALUES {}", columns.join(", "), tuples.join(", "));
        let params: Vec<&(dyn ToSql + Sync)> =
            chunk.iter().flatten().map(|p| p.as_ref() as &(dyn ToSql + Sync)).collect();
        let stmt = tx.prepare_cached(&sql).await?;
        inserted += tx.execute(&stmt, &params).await?;
    }
    Ok(inserted)
}

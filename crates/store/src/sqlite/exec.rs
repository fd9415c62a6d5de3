//! Running [`crate::plan`]'s statements on a SQLite connection: binding [`Value`]s and
//! reading rows back. Nothing here decides what is written.

use crate::StoreError;
use crate::plan;
use crate::sql::{Dialect, Insert, Row, Statement, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, params_from_iter};

pub(super) const D: Dialect = Dialect::Sqlite;

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        use rusqlite::types::Value as V;
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(i) => ToSqlOutput::Owned(V::Integer(*i)),
            Value::Bool(b) => ToSqlOutput::Owned(V::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Bytes(b) => ToSqlOutput::Borrowed(ValueRef::Blob(b)),
            Value::Texts(t) => ToSqlOutput::Owned(V::Text(Value::json_texts(t))),
        })
    }
}

fn value_of(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        // No column of ours holds a real; read one as text rather than lose it.
        ValueRef::Real(f) => Value::Text(f.to_string()),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Bytes(b.to_vec()),
    }
}

pub(super) fn exec(conn: &Connection, s: &Statement) -> Result<usize, StoreError> {
    Ok(conn.prepare_cached(&s.sql)?.execute(params_from_iter(&s.params))?)
}

pub(super) fn query(conn: &Connection, s: &Statement) -> Result<Vec<Row>, StoreError> {
    let mut stmt = conn.prepare_cached(&s.sql)?;
    let width = stmt.column_count();
    let rows = stmt
        .query_map(params_from_iter(&s.params), |r| {
            (0..width).map(|i| r.get_ref(i).map(value_of)).collect::<rusqlite::Result<Vec<_>>>().map(Row)
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub(super) fn query_opt(conn: &Connection, s: &Statement) -> Result<Option<Row>, StoreError> {
    Ok(query(conn, s)?.into_iter().next())
}

/// One cached single-row statement executed per row: SQLite runs in-process, so a row costs
/// no round trip, and one statement text stays in the cache.
pub(super) fn insert(conn: &Connection, ins: &Insert) -> Result<(), StoreError> {
    if ins.rows.is_empty() {
        return Ok(());
    }
    let mut stmt = conn.prepare_cached(&ins.sql(D, 1))?;
    for row in &ins.rows {
        stmt.execute(params_from_iter(row))?;
    }
    Ok(())
}

/// Run a [`plan::WritePlan`]: refused whole (nothing written) if its collision probe finds a
/// row, else every step in order.
pub(super) fn run_writes(conn: &Connection, w: &plan::WritePlan) -> Result<(), StoreError> {
    if let Some((probe, what)) = &w.collision
        && query_opt(conn, probe)?.is_some()
    {
        return Err(StoreError::IdCollision { doc: w.doc, what: (*what).into() });
    }
    for step in &w.steps {
        match step {
            plan::WriteStep::Exec(s) => exec(conn, s).map(drop)?,
            plan::WriteStep::Insert(i) => insert(conn, i)?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use posync_model::{DocId, PosyanduId, Scope};

    /// The statements of every sync (the feed scan with its `LIMIT ?`, a document's bytes,
    /// a user's units) run many times with other values and are compiled once.
    #[test]
    fn a_syncs_statements_are_compiled_once_whatever_their_values() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("posync.sqlite");
        drop(crate::SqliteStore::open(&path).expect("open"));
        let conn = super::super::open_conn(&path).expect("connection");
        let scope = Scope::new(["pos-a".parse::<PosyanduId>().expect("posyandu")]);
        let user: posync_model::UserId = "u1".parse().expect("user");
        for i in 0..5_i64 {
            let doc = DocId::new_random();
            query(&conn, &plan::feed_scan(D, &scope, i, i + 10, 100 + i as usize)).expect("feed scan");
            query(&conn, &plan::doc_bytes(D, doc)).expect("doc bytes");
            query(&conn, &plan::access::user_units(D, &user)).expect("user units");
        }
        let doc = DocId::new_random();
        for s in [plan::feed_scan(D, &scope, 0, 1, 1), plan::doc_bytes(D, doc), plan::access::user_units(D, &user)] {
            let stmt = conn.prepare_cached(&s.sql).expect("cached");
            assert_eq!(stmt.get_status(rusqlite::StatementStatus::RePrepare), 0, "compiled again: {}", s.sql);
        }
    }
}

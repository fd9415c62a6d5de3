//! What the store reads and writes, written once for SQLite and PostgreSQL: every statement
//! of the sync, conflict, people and report paths, built for a [`crate::sql::Dialect`], and every row
//! parsed back into domain types. No I/O: the adapters run these statements and hand the
//! rows back (see `ARCHITECTURE.md`, "One home for the store's logic"). [`docs`]: documents,
//! the feed and device heads; [`mod@projection`]: the rows and conflict index a merge writes;
//! [`review`]: people, invalid records and reports; [`access`]: the access tables.
//!
//! Adding a visit field: its column in both schemas' migrations, and `visit_row` /
//! `VISIT_COLUMNS` in `projection.rs` (a service field needs only its migration column).

pub mod access;
pub mod docs;
pub mod projection;
pub mod review;

pub use docs::*;
pub use projection::*;
pub use review::*;

use crate::sql::Value;
use posync_model::Scope;

pub(crate) fn scope_texts(scope: &Scope) -> Value {
    Value::Texts(scope.posyandu().map(|p| p.as_str().to_owned()).collect())
}

pub(crate) fn texts<T: ToString>(items: &[T]) -> Value {
    Value::Texts(items.iter().map(ToString::to_string).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sql::Dialect;

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

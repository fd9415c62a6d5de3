//! SQL as data: statements, inserts and rows in one shape for both backends. [`crate::plan`]
//! writes every statement of the store once, in terms of a [`Dialect`]; each adapter only
//! binds [`Value`]s, runs the statement and reads rows back into [`Row`]s.

use crate::StoreError;

/// Where the two backends' SQL differs: placeholders, list parameters, string aggregation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    /// Parameter `n` (1-based).
    pub fn p(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    /// Parameter `n` where its type must be known without context (`IS NULL` of a text).
    pub fn text_p(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}::text"),
        }
    }

    /// Parameter `n` as an integer whose type must be known without context.
    pub fn int_p(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}::bigint"),
        }
    }

    /// `column` is one of the texts of parameter `n` (a [`Value::Texts`]).
    pub fn in_list(self, column: &str, n: usize) -> String {
        match self {
            // A JSON array keeps the statement text constant for any list length.
            Dialect::Sqlite => format!("{column} IN (SELECT value FROM json_each(?{n}))"),
            Dialect::Postgres => format!("{column} = ANY(${n})"),
        }
    }

    /// `column` is not one of the texts of parameter `n`.
    pub fn not_in_list(self, column: &str, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("{column} NOT IN (SELECT value FROM json_each(?{n}))"),
            Dialect::Postgres => format!("NOT ({column} = ANY(${n}))"),
        }
    }

    /// Parameter `n` is NULL (every row) or `column` is one of its texts.
    pub fn in_list_or_all(self, column: &str, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("(?{n} IS NULL OR {column} IN (SELECT value FROM json_each(?{n})))"),
            Dialect::Postgres => format!("(${n}::text[] IS NULL OR {column} = ANY(${n}))"),
        }
    }

    /// Parameter `n` is NULL or equals `column`.
    pub fn eq_or_all(self, column: &str, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("(?{n} IS NULL OR {column} = ?{n})"),
            Dialect::Postgres => format!("(${n}::text IS NULL OR {column} = ${n})"),
        }
    }

    /// The texts of `expr` over a group, comma-separated.
    pub fn text_agg(self, expr: &str) -> String {
        match self {
            Dialect::Sqlite => format!("group_concat({expr})"),
            Dialect::Postgres => format!("string_agg({expr}, ',')"),
        }
    }

    /// `column` in an `ORDER BY`, compared bytewise on both backends (a PostgreSQL database
    /// may use a locale collation that skips `-` and `_`).
    pub fn by_bytes(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => column.to_owned(),
            Dialect::Postgres => format!("{column} COLLATE \"C\""),
        }
    }

    /// Lock the rows read until commit (PostgreSQL); SQLite's single writer already holds
    /// the whole database.
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// Most parameters one statement may bind (SQLite 32,766; PostgreSQL 65,535), with room.
    pub fn params_max(self) -> usize {
        match self {
            Dialect::Sqlite => 30_000,
            Dialect::Postgres => 8_000,
        }
    }
}

/// A SQL value, as both backends bind and return it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Int(i64),
    /// SQLite stores it as 0/1.
    Bool(bool),
    Text(String),
    Bytes(Vec<u8>),
    /// A list of texts for [`Dialect::in_list`]: a JSON array on SQLite, `text[]` on
    /// PostgreSQL.
    Texts(Vec<String>),
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl From<Vec<String>> for Value {
    fn from(v: Vec<String>) -> Self {
        Value::Texts(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl Value {
    /// The JSON array SQLite's `json_each` reads (ids come from devices: escaped).
    pub fn json_texts(texts: &[String]) -> String {
        serde_json::to_string(texts).unwrap_or_else(|_| "[]".into())
    }
}

/// One statement and its parameters.
#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub sql: String,
    pub params: Vec<Value>,
}

impl Statement {
    pub fn new(sql: impl Into<String>, params: Vec<Value>) -> Self {
        Self { sql: sql.into(), params }
    }
}

/// Rows to insert into one table.
#[derive(Clone, Debug, PartialEq)]
pub struct Insert {
    pub table: &'static str,
    pub columns: Vec<&'static str>,
    pub rows: Vec<Vec<Value>>,
    /// What to do when a row's key exists, e.g. `ON CONFLICT (id) DO UPDATE SET …`.
    pub on_conflict: &'static str,
}

impl Insert {
    /// Rows per statement within the dialect's parameter limit.
    pub fn rows_per_statement(&self, d: Dialect) -> usize {
        (d.params_max() / self.columns.len().max(1)).max(1)
    }

    /// The statement inserting `rows` rows at once.
    pub fn sql(&self, d: Dialect, rows: usize) -> String {
        let width = self.columns.len();
        let tuples: Vec<String> = (0..rows)
            .map(|r| format!("({})", (1..=width).map(|c| d.p(r * width + c)).collect::<Vec<_>>().join(", ")))
            .collect();
        format!(
            "INSERT INTO {} ({}) VALUES {} {}",
            self.table,
            self.columns.join(", "),
            tuples.join(", "),
            self.on_conflict
        )
    }

    /// The insert as statements, each within the parameter limit.
    pub fn statements(&self, d: Dialect) -> Vec<Statement> {
        self.rows
            .chunks(self.rows_per_statement(d))
            .map(|chunk| Statement::new(self.sql(d, chunk.len()), chunk.iter().flatten().cloned().collect()))
            .collect()
    }
}

/// A row read back: values by column position.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Row(pub Vec<Value>);

impl Row {
    fn at(&self, i: usize) -> Result<&Value, StoreError> {
        self.0.get(i).ok_or_else(|| StoreError::Backend(format!("row has no column {i}")))
    }

    fn wrong(i: usize, want: &str, got: &Value) -> StoreError {
        StoreError::Backend(format!("column {i}: expected {want}, found {got:?}"))
    }

    pub fn opt_text(&self, i: usize) -> Result<Option<String>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Text(s) => Ok(Some(s.clone())),
            v => Err(Self::wrong(i, "text", v)),
        }
    }

    pub fn text(&self, i: usize) -> Result<String, StoreError> {
        self.opt_text(i)?.ok_or_else(|| Self::wrong(i, "text", &Value::Null))
    }

    pub fn opt_int(&self, i: usize) -> Result<Option<i64>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Int(n) => Ok(Some(*n)),
            v => Err(Self::wrong(i, "integer", v)),
        }
    }

    pub fn int(&self, i: usize) -> Result<i64, StoreError> {
        self.opt_int(i)?.ok_or_else(|| Self::wrong(i, "integer", &Value::Null))
    }

    pub fn opt_bool(&self, i: usize) -> Result<Option<bool>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Bool(b) => Ok(Some(*b)),
            Value::Int(n) => Ok(Some(*n != 0)),
            v => Err(Self::wrong(i, "boolean", v)),
        }
    }

    pub fn bool(&self, i: usize) -> Result<bool, StoreError> {
        self.opt_bool(i)?.ok_or_else(|| Self::wrong(i, "boolean", &Value::Null))
    }

    pub fn opt_bytes(&self, i: usize) -> Result<Option<Vec<u8>>, StoreError> {
        match self.at(i)? {
            Value::Null => Ok(None),
            Value::Bytes(b) => Ok(Some(b.clone())),
            v => Err(Self::wrong(i, "bytes", v)),
        }
    }

    pub fn bytes(&self, i: usize) -> Result<Vec<u8>, StoreError> {
        self.opt_bytes(i)?.ok_or_else(|| Self::wrong(i, "bytes", &Value::Null))
    }

    /// Take the bytes of column `i` out of the row (large document bytes: no copy).
    pub fn take_bytes(&mut self, i: usize) -> Result<Vec<u8>, StoreError> {
        let slot = self.0.get_mut(i).ok_or_else(|| StoreError::Backend(format!("row has no column {i}")))?;
        match std::mem::replace(slot, Value::Null) {
            Value::Bytes(b) => Ok(b),
            v => Err(Self::wrong(i, "bytes", &v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_insert_splits_into_statements_within_the_parameter_limit() {
        let ins = Insert {
            table: "t",
            columns: vec!["a", "b"],
            rows: (0..20_000).map(|i| vec![Value::Int(i), Value::Null]).collect(),
            on_conflict: "",
        };
        let stmts = ins.statements(Dialect::Postgres);
        assert_eq!(stmts.len(), 5, "8,000 parameters a statement: 4,000 rows of 2");
        assert!(stmts.iter().all(|s| s.params.len() <= 8_000));
        assert_eq!(stmts.iter().map(|s| s.params.len()).sum::<usize>(), 40_000);
        assert!(stmts[0].sql.starts_with("INSERT INTO t (a, b) VALUES ($1, $2), ($3, $4)"));
        let one = Insert { rows: vec![vec![Value::Int(1), Value::Int(2)]], ..ins };
        assert_eq!(one.statements(Dialect::Sqlite)[0].sql.trim_end(), "INSERT INTO t (a, b) VALUES (?1, ?2)");
    }

    #[test]
    fn rows_read_sqlite_integers_as_booleans_and_refuse_other_types() {
        let row = Row(vec![Value::Int(1), Value::Null, Value::Text("x".into())]);
        assert!(row.bool(0).expect("a boolean"));
        assert_eq!(row.opt_bool(1).expect("NULL"), None);
        assert!(row.int(2).is_err());
        assert!(row.text(1).is_err(), "NULL is not a text");
        assert!(row.text(9).is_err());
    }
}

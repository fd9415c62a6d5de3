//! Test databases on a real PostgreSQL: one schema per test, dropped and created afresh.
//!
//! `POSYNC_TEST_DATABASE_URL` names the server (default: this machine's PostgreSQL 15 on
//! 127.0.0.1:5432, trust auth, database `test`). When it cannot be reached, tests skip and
//! say so on stderr — unless `POSYNC_REQUIRE_POSTGRES=1` (CI sets it), when they fail.

use std::io::Write;
use std::time::Duration;

pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server tests run against.
pub fn base_url() -> String {
    std::env::var("POSYNC_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_URL.to_owned())
}

fn required() -> bool {
    std::env::var("POSYNC_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// A URL whose connections use a fresh, empty schema `t_<label>` (dropped first if a
/// previous run left it). `label` must be unique per test: `[a-z0-9_]`. `None` (with a
/// plain SKIPPED line on stderr) when PostgreSQL is not reachable and not required.
pub async fn fresh_schema(label: &str) -> Option<String> {
    assert!(
        !label.is_empty() && label.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'),
        "schema label {label:?} must be [a-z0-9_]+"
    );
    let base = base_url();
    let schema = format!("t_{label}");
    match reset_schema(&base, &schema).await {
        Ok(()) => Some(with_search_path(&base, &schema)),
        Err(e) if required() => panic!("PostgreSQL required (POSYNC_REQUIRE_POSTGRES=1) but {base} failed: {e}"),
        Err(e) => {
            // Straight to stderr, past the test harness's capture: a skip must be seen.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED {label}: PostgreSQL not reachable at {base} ({e}); set POSYNC_TEST_DATABASE_URL or start it"
            );
            None
        }
    }
}

/// Drop and create `schema` on the server at `base`; the URL whose connections use it.
pub async fn schema_url(base: &str, schema: &str) -> Result<String, String> {
    if schema.is_empty() || !schema.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(format!("schema name {schema:?} must be [a-z0-9_]+"));
    }
    reset_schema(base, schema).await?;
    Ok(with_search_path(base, schema))
}

/// `base` with `options=-c search_path=<schema>` added.
pub fn with_search_path(base: &str, schema: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

async fn reset_schema(base: &str, schema: &str) -> Result<(), String> {
    let mut config: tokio_postgres::Config = base.parse().map_err(|e| format!("{e}"))?;
    config.connect_timeout(Duration::from_secs(3));
    let (client, conn) = config.connect(tokio_postgres::NoTls).await.map_err(|e| e.to_string())?;
    let task = tokio::spawn(conn);
    let sql = format!("DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema};");
    let out = client.batch_execute(&sql).await.map_err(|e| e.to_string());
    drop(client);
    let _ = task.await;
    out
}

//! What only the PostgreSQL store has: a connection pool that outlives lost connections, and
//! migrations that several instances apply at once.

use posync_model::DeviceId;
use posync_model::Scope;
use posync_store::postgres::testing::fresh_schema;
use posync_store::prelude::*;
use posync_store::{PgStore, StoreError};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_connection_is_a_retryable_error_and_the_pool_recovers() {
    let Some(url) = fresh_schema("pg_lost_connection").await else { return };
    // Named, so that only this pool's connections are dropped (other tests run alongside).
    let url = format!("{url}&application_name=posync_lost_connection");
    let store = PgStore::connect_with(&url, 2).await.expect("connect");
    store.ping().await.expect("ping");
    // The database drops every connection of this schema's pool (a failover, a restart).
    let (admin, conn) = tokio_postgres::connect(&posync_store::postgres::testing::base_url(), tokio_postgres::NoTls)
        .await
        .expect("admin connection");
    let task = tokio::spawn(conn);
    let killed = admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE application_name = 'posync_lost_connection'",
            &[],
        )
        .await
        .expect("terminate");
    assert!(!killed.is_empty(), "the pool's connections were found and dropped");
    let mut unavailable = 0;
    for _ in 0..4 {
        match store.stats().await {
            Ok(_) => {}
            Err(StoreError::Unavailable(_)) => unavailable += 1,
            Err(other) => panic!("a lost connection must be retryable, got {other:?}"),
        }
    }
    assert!(unavailable <= 2, "at most the pool's two dead connections fail once each");
    // New connections replace the dead ones.
    store.ping().await.expect("ping after the drop");
    let page = store
        .pull(
            DeviceId::new_random(),
            Scope::default(),
            0,
            posync_store::PageLimits { bytes_max: 1 << 20, docs_max: 10, pieces: false },
        )
        .await
        .expect("pull after the drop");
    assert!(page.docs.is_empty());
    drop(admin);
    let _ = task.await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_starting_together_migrate_once() {
    let Some(url) = fresh_schema("pg_migrate_together").await else { return };
    let starts = (0..6).map(|_| {
        let url = url.clone();
        tokio::spawn(async move { PgStore::connect_with(&url, 1).await })
    });
    for s in starts {
        let store = s.await.expect("task").expect("every instance starts");
        store.ping().await.expect("ping");
    }
    let store = PgStore::connect(&url).await.expect("connect again");
    assert_eq!(store.stats().await.expect("stats"), posync_store::StoreStats::default());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_pins_move_from_sqlite_with_their_count_and_lock() {
    use posync_store::{Actor, AuditAction, AuditEntry, PinLockout, SqliteStore};
    let Some(url) = fresh_schema("pg_migrate_pins").await else { return };
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("posync.sqlite");
    let sqlite = SqliteStore::open(&path).expect("open SQLite");
    let audit =
        |action| AuditEntry::new(0, &Actor::Console { name: "test".into() }, action, "t", serde_json::json!({}));
    let file = posync_model::HierarchyFile::parse(include_str!("../../../fixtures/district-kota-banjar.json"))
        .expect("fixture");
    sqlite.import_hierarchy(file, audit(AuditAction::HierarchyImported)).await.expect("import");
    let bidan: posync_model::UserId = "bidan-0001".parse().expect("id");
    sqlite.set_pin(bidan.clone(), "$argon2id$v=19$x".into(), audit(AuditAction::PinSet)).await.expect("set PIN");
    let lockout = PinLockout { failures_max: 2, lock_seconds: 900 };
    for at in [10, 11] {
        sqlite.pin_attempt(bidan.clone(), at, lockout).await.expect("attempt");
    }
    let before = sqlite.pin_of(bidan.clone()).await.expect("read").expect("set");
    assert_eq!((before.failures, before.locked_until), (2, Some(911)));
    drop(sqlite);

    let pg = PgStore::connect(&url).await.expect("connect");
    let report = posync_store::migrate::sqlite_to_postgres(&path, &pg).await.expect("move");
    assert!(report.rows.contains(&("user_pins".to_owned(), 1)), "{:?}", report.rows);
    assert_eq!(pg.pin_of(bidan).await.expect("read").expect("moved"), before);
}

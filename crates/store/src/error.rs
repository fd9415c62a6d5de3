use posync_model::DocId;

/// What went wrong in the store. Every variant except `Backend` is the caller's to fix;
/// nothing was committed in any case.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("document {doc} is outside the caller's scope")]
    Forbidden { doc: DocId },
    #[error("document {doc}: {reason}")]
    DocMismatch { doc: DocId, reason: String },
    #[error("document {doc}: changes do not decode: {reason}")]
    MalformedChanges { doc: DocId, reason: String },
    #[error("document {doc}: changes depend on changes the server does not have")]
    MissingDependencies { doc: DocId },
    #[error("document {doc}: pushed heads are not produced by the pushed changes")]
    HeadsMismatch { doc: DocId },
    #[error("document {doc}: {reason}")]
    ChangesTooLarge { doc: DocId, reason: String },
    #[error("document {doc} would be over its budget: {reason}")]
    DocumentTooLarge { doc: DocId, reason: String },
    #[error("document {doc}: a new change is not authored by the pushing device")]
    ForeignAuthor { doc: DocId },
    #[error("document {doc}: a change reuses a sequence number of its actor with other content")]
    SeqClash { doc: DocId },
    #[error("document {doc}: {what} already exists in another document")]
    IdCollision { doc: DocId, what: String },
    #[error("document {doc}: field {field}: {reason}")]
    InvalidField { doc: DocId, field: String, reason: String },
    #[error("this device id belongs to another user")]
    DeviceTaken,
    #[error("document {doc} appears twice in one push")]
    DuplicateDoc { doc: DocId },
    #[error("stored document {doc} does not load: {reason}")]
    Corrupt { doc: DocId, reason: String },
    #[error("invalid: {0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error("unknown, used or expired credential")]
    InvalidCredential,
    #[error("device revoked")]
    DeviceRevoked,
    /// The database is out of reach for now (pool exhausted, connection lost, a transaction
    /// chosen as deadlock victim): nothing was committed, and the same request may be retried.
    #[error("storage backend unavailable: {0}")]
    Unavailable(String),
    /// The disk (or the database's quota) is full: nothing was committed. Reads that need no
    /// write still work.
    #[error("storage full: {0}")]
    StorageFull(String),
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<posync_model::HierarchyError> for StoreError {
    fn from(e: posync_model::HierarchyError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

impl StoreError {
    /// An error of the same kind (so the same HTTP answer) for another request that shared
    /// the failed operation (a group commit).
    pub fn same_kind(&self) -> StoreError {
        match self {
            StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
            StoreError::StorageFull(m) => StoreError::StorageFull(m.clone()),
            other => StoreError::Backend(other.to_string()),
        }
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        match e.sqlite_error_code() {
            // Another writer held the database past the busy timeout: nothing was committed,
            // and the same request succeeds later.
            Some(DatabaseBusy | DatabaseLocked) => StoreError::Unavailable(format!("sqlite: {e}")),
            Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull(format!("sqlite: {e}")),
            _ => StoreError::Backend(e.to_string()),
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message (constraint, trigger) is in the source; show it.
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
                // 53100 disk_full; 53400 configuration_limit_exceeded (quotas).
                if code == "53100" || code == "53400" {
                    return StoreError::StorageFull(format!("postgres: {}", db.message()));
                }
                // 40: transaction rollback (serialization, deadlock); 53: insufficient
                // resources; 57P: the server is shutting down or restarting; 08: connection.
                let transient = ["40", "53", "57P", "08"].iter().any(|class| code.starts_with(class));
                let message = format!("postgres: {}", db.message());
                if transient { StoreError::Unavailable(message) } else { StoreError::Backend(message) }
            }
            None if e.is_closed() => StoreError::Unavailable(format!("postgres: {e}")),
            None => StoreError::Backend(format!("postgres: {e}")),
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        StoreError::Unavailable(format!("postgres pool: {e}"))
    }
}

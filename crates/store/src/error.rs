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
    #[error("storage backend: {0}")]
    Backend(String),
}

impl From<posync_model::HierarchyError> for StoreError {
    fn from(e: posync_model::HierarchyError) -> Self {
        StoreError::Invalid(e.to_string())
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        // The server's message (constraint, trigger) is in the source; show it.
        match e.as_db_error() {
            Some(db) => {
                let code = db.code().code();
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

use posync_model::DocId;
use posync_proto::ErrorCode;

#[derive(Debug, thiserror::Error)]
pub enum ReplicaError {
    #[error("sqlite: {0}")]
    Sqlite(rusqlite::Error),
    /// Nothing can be written: the visits on the phone are safe and can be listed; free
    /// some space (photos, other apps), then capture and sync again.
    #[error(
        "phone storage is full: free some space to capture or sync again (the visits already on the phone are safe)"
    )]
    StorageFull,
    #[error("document: {0}")]
    Doc(#[from] posync_model::DocError),
    #[error("stored document {0} does not load")]
    Corrupt(DocId),
    #[error("no document {0} on this device")]
    UnknownDoc(DocId),
    #[error("server refused the request: {status} {code}: {message}")]
    Server { status: u16, code: ErrorCode, message: String, doc: Option<String> },
    /// Enrolment failed: the code was refused, or the server could not be reached.
    #[error("enrolment failed: {0}")]
    Enrolment(Box<ReplicaError>),
    #[error("server answer could not be read: {0}")]
    BadResponse(String),
    #[error("network: {0}")]
    Network(String),
    /// The server's certificate is not trusted (unknown issuer, wrong name, expired): not
    /// retried, since it will not change by waiting. Give the puskesmas CA (`--ca-file`).
    #[error("TLS: {0}")]
    Tls(String),
    /// A certificate file given to the client does not parse.
    #[error("CA file: {0}")]
    BadCaFile(String),
    #[error("visit refused: {}", .0.iter().filter(|i| i.severity == posync_model::validate::Severity::Error).map(|i| format!("{}: {}", i.field, i.message_en)).collect::<Vec<_>>().join("; "))]
    Rejected(Vec<posync_model::validate::Issue>),
    #[error("document {doc} is full ({bytes} bytes, at most {max}): start a new session document")]
    DocumentFull { doc: DocId, bytes: usize, max: usize },
    #[error("another sync of this replica is running; wait for it to finish")]
    AlreadySyncing,
    #[error("file: {0}")]
    Io(String),
    #[error("the sync did not finish within {0:?}; what it achieved is kept, sync again later")]
    DeadlineExceeded(std::time::Duration),
    #[error("this device is not enrolled: enrol it with a code from your admin first")]
    NotEnrolled,
    #[error("sync did not finish within {0} rounds")]
    TooManyRounds(usize),
    /// The replica file is encrypted and the key given (or no key) does not open it.
    #[error(
        "the replica is encrypted and this key does not open it: open it with the key it was created with (kept in the phone's keystore); without that key its visits cannot be read, so re-enrol and sync to get the server's copy"
    )]
    WrongKey,
    /// A key was given for a replica file that is not encrypted.
    #[error("the replica file is not encrypted: open it without a key, or move its visits to a new encrypted replica")]
    NotEncrypted,
    /// An encryption key must be 32 random bytes.
    #[error("an encryption key must be 32 bytes, not {0}")]
    BadKeyLength(usize),
}

impl From<rusqlite::Error> for ReplicaError {
    fn from(e: rusqlite::Error) -> Self {
        match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::DiskFull) => ReplicaError::StorageFull,
            // A read-only replica (opened on a full disk) refuses writes the same way.
            Some(rusqlite::ErrorCode::ReadOnly) => ReplicaError::StorageFull,
            _ => ReplicaError::Sqlite(e),
        }
    }
}

impl ReplicaError {
    /// Worth retrying later as is (the network, or a server that is busy or failing).
    pub fn is_transient(&self) -> bool {
        match self {
            ReplicaError::Network(_) => true,
            ReplicaError::Server { code, .. } => {
                matches!(
                    code,
                    ErrorCode::Overloaded | ErrorCode::Internal | ErrorCode::RateLimited | ErrorCode::StorageFull
                )
            }
            _ => false,
        }
    }
}

//! The one place where errors become HTTP responses.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use posync_proto::{ErrorBody, ErrorCode, ErrorDetail, PROTOCOL_VERSION};
use posync_store::StoreError;

/// An error on its way to the client: a stable code, a message for people (never record
/// contents), and the document it concerns.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub doc: Option<String>,
    /// Seconds for `Retry-After` (503 and 429 carry one; 5 unless set).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), doc: None, retry_after: None }
    }

    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    pub fn with_doc(mut self, doc: impl ToString) -> Self {
        self.doc = Some(doc.to_string());
        self
    }

    pub fn status(&self) -> StatusCode {
        match self.code {
            ErrorCode::MalformedBody | ErrorCode::MalformedChanges | ErrorCode::HeadsMismatch => {
                StatusCode::BAD_REQUEST
            }
            ErrorCode::UnsupportedProtocolVersion => StatusCode::BAD_REQUEST,
            ErrorCode::BodyTooLarge | ErrorCode::BatchTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::UnsupportedEncoding | ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::MissingDependencies | ErrorCode::DocMismatch => StatusCode::CONFLICT,
            ErrorCode::Unauthenticated | ErrorCode::InvalidCredential | ErrorCode::DeviceRevoked => {
                StatusCode::UNAUTHORIZED
            }
            ErrorCode::InvalidRequest => StatusCode::BAD_REQUEST,
            ErrorCode::Forbidden | ErrorCode::DeviceMismatch | ErrorCode::ApiKeyNotAllowed => StatusCode::FORBIDDEN,
            ErrorCode::NotFound => StatusCode::NOT_FOUND,
            ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorCode::Overloaded | ErrorCode::StorageFull => StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ChangesTooLarge | ErrorCode::DocumentTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::ForeignAuthor | ErrorCode::DeviceTaken => StatusCode::FORBIDDEN,
            ErrorCode::ActorSeqClash | ErrorCode::IdCollision => StatusCode::CONFLICT,
            ErrorCode::InvalidField => StatusCode::BAD_REQUEST,
            ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for ApiError {}

/// A full disk is not freed in seconds: phones come back in a minute.
const STORAGE_FULL_RETRY_SECONDS: u64 = 60;

/// A push in the same request may have committed before the failure; retrying is safe
/// because a replayed push changes nothing.
const INTERNAL_MESSAGE: &str = "internal error; retry later (a replayed push is harmless)";

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        let msg = e.to_string();
        match e {
            StoreError::Forbidden { doc } => ApiError::new(ErrorCode::Forbidden, msg).with_doc(doc),
            StoreError::DocMismatch { doc, .. } => ApiError::new(ErrorCode::DocMismatch, msg).with_doc(doc),
            StoreError::MalformedChanges { doc, .. } => ApiError::new(ErrorCode::MalformedChanges, msg).with_doc(doc),
            StoreError::MissingDependencies { doc } => ApiError::new(ErrorCode::MissingDependencies, msg).with_doc(doc),
            StoreError::HeadsMismatch { doc } => ApiError::new(ErrorCode::HeadsMismatch, msg).with_doc(doc),
            StoreError::ChangesTooLarge { doc, .. } => ApiError::new(ErrorCode::ChangesTooLarge, msg).with_doc(doc),
            StoreError::DocumentTooLarge { doc, .. } => ApiError::new(ErrorCode::DocumentTooLarge, msg).with_doc(doc),
            StoreError::ForeignAuthor { doc } => ApiError::new(ErrorCode::ForeignAuthor, msg).with_doc(doc),
            StoreError::SeqClash { doc } => ApiError::new(ErrorCode::ActorSeqClash, msg).with_doc(doc),
            StoreError::IdCollision { doc, .. } => ApiError::new(ErrorCode::IdCollision, msg).with_doc(doc),
            StoreError::InvalidField { doc, .. } => ApiError::new(ErrorCode::InvalidField, msg).with_doc(doc),
            StoreError::DeviceTaken => ApiError::new(
                ErrorCode::DeviceTaken,
                "this device id is enrolled to another user; enrol from a fresh install of the app",
            ),
            StoreError::DuplicateDoc { doc } => ApiError::new(ErrorCode::MalformedBody, msg).with_doc(doc),
            StoreError::Invalid(reason) => ApiError::new(ErrorCode::InvalidRequest, reason),
            StoreError::NotFound(what) => ApiError::new(ErrorCode::NotFound, format!("{what} not found")),
            StoreError::InvalidCredential => ApiError::new(ErrorCode::InvalidCredential, msg),
            StoreError::DeviceRevoked => {
                ApiError::new(ErrorCode::DeviceRevoked, "this device was revoked; ask your puskesmas or district admin")
            }
            StoreError::Corrupt { doc, .. } => {
                tracing::error!(%doc, "stored document does not load");
                ApiError::new(ErrorCode::Internal, INTERNAL_MESSAGE).with_doc(doc)
            }
            StoreError::StorageFull(reason) => {
                tracing::error!(%reason, "STORAGE FULL: writes refused until space is freed");
                ApiError::new(ErrorCode::StorageFull, "the server's storage is full; retry later")
                    .with_retry_after(STORAGE_FULL_RETRY_SECONDS)
            }
            StoreError::Unavailable(reason) => {
                tracing::warn!(%reason, "store unavailable");
                ApiError::new(ErrorCode::Overloaded, "the database is busy or unreachable; retry later")
            }
            StoreError::Backend(reason) => {
                tracing::error!(%reason, "store backend error");
                ApiError::new(ErrorCode::Internal, INTERNAL_MESSAGE)
            }
        }
    }
}

/// The error code a response carries, for the request log.
#[derive(Clone, Copy, Debug)]
pub struct LoggedCode(pub &'static str);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        crate::metrics::global().error(self.code);
        let status = self.status();
        let retry_after = self.retry_after.unwrap_or(5);
        let supported_version = (self.code == ErrorCode::UnsupportedProtocolVersion).then_some(PROTOCOL_VERSION);
        let body = ErrorBody {
            error: ErrorDetail { code: self.code, message: self.message, doc: self.doc, supported_version },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        // For the request log line (`routes::request_log`): the stable code, never the message.
        resp.extensions_mut().insert(LoggedCode(self.code.as_str()));
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
        }
        resp
    }
}

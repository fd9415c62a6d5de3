use serde::{Deserialize, Serialize};

/// Stable error codes. The string form is part of the protocol: never rename one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not a CBOR message of the expected shape.
    MalformedBody,
    /// The body declares a protocol version this server does not speak.
    UnsupportedProtocolVersion,
    /// The body (compressed or decompressed) exceeds the server's limit.
    BodyTooLarge,
    /// `Content-Encoding` other than identity or gzip, or gzip that does not inflate.
    UnsupportedEncoding,
    /// `Content-Type` is not `application/cbor`.
    UnsupportedMediaType,
    /// More documents in one push than the server accepts.
    BatchTooLarge,
    /// A pushed document's changes are not valid Automerge changes.
    MalformedChanges,
    /// A pushed document's changes depend on changes the server does not have.
    /// Resend the document with an empty `base`.
    MissingDependencies,
    /// A pushed head is not in the document after applying the pushed changes.
    HeadsMismatch,
    /// The pushed document's kind or posyandu differ from what the server has recorded,
    /// or from the document's own id.
    DocMismatch,
    /// No bearer token, or one that does not verify (bad signature, algorithm, key id,
    /// issuer, audience; expired; or stale because the user's role changed). Refresh the
    /// access token with the device credential and retry.
    Unauthenticated,
    /// An enrolment code or refresh token that is unknown, used, or expired. Do not retry
    /// with the same credential: ask an admin for a new enrolment code.
    InvalidCredential,
    /// This device was revoked (a lost phone). Records it already synced stay on the server.
    DeviceRevoked,
    /// A well-formed admin request the server refuses on its merits (an unknown unit, a user
    /// assigned to a unit of the wrong kind, a unit outside the admin's district).
    InvalidRequest,
    /// The token is valid but does not cover this document, posyandu or route.
    Forbidden,
    /// The request's device differs from the token's device.
    DeviceMismatch,
    /// No such resource.
    NotFound,
    /// The route exists but not with this HTTP method.
    MethodNotAllowed,
    /// Too many requests in flight; retry after `Retry-After`.
    Overloaded,
    /// A pushed document's changes decode past a bound: bytes after inflating compressed
    /// chunks or columns, operations in one change, or operations or changes in the push
    /// (`Limits`). Nothing was stored; the document is refused (a device quarantines it).
    ChangesTooLarge,
    /// Merging the push would make the stored document larger than the document budget
    /// (`doc_bytes_max`, `doc_ops_max`): every phone of the posyandu would download it.
    DocumentTooLarge,
    /// A new change in the push is not authored by the pushing device: another device's or
    /// the server's actor, or a genesis change that is not the expected one.
    ForeignAuthor,
    /// A pushed change reuses an (actor, sequence number) the server holds with other
    /// content: the device's replica was restored from a backup or copied. The device starts
    /// a new actor and records its unacknowledged edits again under it, then retries.
    ActorSeqClash,
    /// A visit or person id in the pushed document already exists in another document.
    IdCollision,
    /// A field of a pushed record holds a value of the wrong type (a float for grams, text
    /// for a flag). The message names the field, never its value.
    InvalidField,
    /// The device id belongs to another user (or was revoked): enrol with a fresh install.
    DeviceTaken,
    /// Too many requests from this address or for this code; retry after `Retry-After`.
    RateLimited,
    /// The server's storage is full: nothing was written. Retry after `Retry-After`; what the
    /// device holds is safe on the device.
    StorageFull,
    /// A read-only API key (`psk_…`) was sent to a route other than the reports
    /// (`/v1/reports/*`) and exports (`/v1/export/*`): sync, admin, people and the rest need
    /// a device's access token. Do not retry with the key.
    ApiKeyNotAllowed,
    /// Something failed on the server. A push in the same request may already be committed;
    /// retry later (a replayed push changes nothing).
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedBody => "malformed_body",
            ErrorCode::UnsupportedProtocolVersion => "unsupported_protocol_version",
            ErrorCode::BodyTooLarge => "body_too_large",
            ErrorCode::UnsupportedEncoding => "unsupported_encoding",
            ErrorCode::UnsupportedMediaType => "unsupported_media_type",
            ErrorCode::BatchTooLarge => "batch_too_large",
            ErrorCode::MalformedChanges => "malformed_changes",
            ErrorCode::MissingDependencies => "missing_dependencies",
            ErrorCode::HeadsMismatch => "heads_mismatch",
            ErrorCode::DocMismatch => "doc_mismatch",
            ErrorCode::Unauthenticated => "unauthenticated",
            ErrorCode::InvalidCredential => "invalid_credential",
            ErrorCode::DeviceRevoked => "device_revoked",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::DeviceMismatch => "device_mismatch",
            ErrorCode::NotFound => "not_found",
            ErrorCode::MethodNotAllowed => "method_not_allowed",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::ChangesTooLarge => "changes_too_large",
            ErrorCode::DocumentTooLarge => "document_too_large",
            ErrorCode::ForeignAuthor => "foreign_author",
            ErrorCode::ActorSeqClash => "actor_seq_clash",
            ErrorCode::IdCollision => "id_collision",
            ErrorCode::InvalidField => "invalid_field",
            ErrorCode::DeviceTaken => "device_taken",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::StorageFull => "storage_full",
            ErrorCode::ApiKeyNotAllowed => "api_key_not_allowed",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response: `{"error": {"code": …, "message": …, "doc": …}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: ErrorCode,
    /// For people; never contains record contents.
    pub message: String,
    /// The document the error is about, when it is about one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub doc: Option<String>,
    /// The server's protocol version, on version errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supported_version: Option<u32>,
}

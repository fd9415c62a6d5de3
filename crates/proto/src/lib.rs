//! posync sync protocol v1: the types on the wire, their CBOR framing, and error codes.
//!
//! The normative description is `proto/SYNC-v1.md` (readable) and `proto/sync-v1.cddl`
//! (machine-readable, RFC 8610). Golden byte vectors in `proto/vectors/` are checked by this
//! crate's tests, so the spec and the code cannot drift apart silently.
//!
//! One sync is one `POST /v1/sync` with a CBOR [`SyncRequest`]; the answer is a CBOR
//! [`SyncResponse`] or a JSON [`ErrorBody`]. Automerge changes travel as CBOR byte strings:
//! no base64. Bodies over [`COMPRESS_THRESHOLD_BYTES`] are gzip'd (`Content-Encoding: gzip`).

mod auth;
mod codec;
mod error;
mod limits;
mod types;

pub use auth::{AccessToken, EnrolRequest, EnrolResponse, PinRequest, RefreshRequest, SigninRequest};
pub use codec::{
    COMPRESS_THRESHOLD_BYTES, CONTENT_TYPE, DecodeError, Encoded, decode_request, decode_response, encode, encode_body,
    gunzip_bounded, gzip,
};
pub use error::{ErrorBody, ErrorCode, ErrorDetail};
pub use limits::Limits;
pub use types::{DocAck, DocPull, DocPush, PROTOCOL_VERSION, SyncRequest, SyncResponse};

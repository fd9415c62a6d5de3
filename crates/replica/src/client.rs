//! Sync over HTTP with reqwest. Bodies are framed and compressed by `posync-proto`, so the
//! byte counts reported here are exactly the bodies on the wire.

use crate::error::ReplicaError;
use crate::replica::Replica;
use posync_proto::{
    CONTENT_TYPE, ErrorBody, ErrorCode, Limits, SyncRequest, SyncResponse, decode_response, encode_body, gunzip_bounded,
};
use std::time::Duration;

/// Largest response body we inflate. Pages are bounded by the server; this guards the phone.
const RESPONSE_DECODED_BYTES_MAX: usize = 64 * 1024 * 1024;
/// A sync that needs more rounds than this is not converging: stop and report.
const ROUNDS_MAX: usize = 10_000;

/// Body bytes of one exchange as sent and received (after compression).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct WireBytes {
    pub up: u64,
    pub down: u64,
}

/// What a whole sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SyncReport {
    pub rounds: usize,
    /// Documents the server refused this time, with its error code; kept and not re-pushed.
    pub rejected: Vec<(String, String)>,
    pub pushed_docs: usize,
    pub pulled_docs: usize,
    pub bytes: WireBytes,
    pub cursor: u64,
}

/// An HTTP sync client for one server.
#[derive(Clone)]
pub struct HttpSync {
    client: reqwest::Client,
    url: String,
    token: String,
    limits: Limits,
}

impl HttpSync {
    pub fn new(server_url: &str, token: &str) -> Self {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .connect_timeout(Duration::from_secs(10))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            client,
            url: format!("{}/v1/sync", server_url.trim_end_matches('/')),
            token: token.to_owned(),
            limits: Limits::default(),
        }
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    pub fn set_token(&mut self, token: &str) {
        self.token = token.to_owned();
    }

    /// One request/response exchange. The caller decides what to do with the answer (the
    /// fault tests drop it on the floor).
    pub async fn exchange(&self, req: &SyncRequest) -> Result<(SyncResponse, WireBytes), ReplicaError> {
        let enc = encode_body(req);
        let up = enc.bytes.len() as u64;
        let mut rb = self
            .client
            .post(&self.url)
            .bearer_auth(&self.token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .header(reqwest::header::ACCEPT_ENCODING, "gzip");
        if enc.gzip {
            rb = rb.header(reqwest::header::CONTENT_ENCODING, "gzip");
        }
        let resp = rb.body(enc.bytes).send().await.map_err(|e| ReplicaError::Network(e.to_string()))?;
        let status = resp.status();
        let gzip = resp.headers().get(reqwest::header::CONTENT_ENCODING).is_some_and(|v| v.as_bytes() == b"gzip");
        let body = resp.bytes().await.map_err(|e| ReplicaError::Network(e.to_string()))?;
        let wire = WireBytes { up, down: body.len() as u64 };
        if !status.is_success() {
            return Err(match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => ReplicaError::Server {
                    status: status.as_u16(),
                    code: e.error.code,
                    message: e.error.message,
                    doc: e.error.doc,
                },
                Err(_) => ReplicaError::Server {
                    status: status.as_u16(),
                    code: ErrorCode::Internal,
                    message: format!("HTTP {status} without an error body"),
                    doc: None,
                },
            });
        }
        let raw = if gzip {
            gunzip_bounded(&body, RESPONSE_DECODED_BYTES_MAX).map_err(|e| ReplicaError::BadResponse(e.to_string()))?
        } else {
            body.to_vec()
        };
        let msg = decode_response(&raw).map_err(|e| ReplicaError::BadResponse(e.to_string()))?;
        Ok((msg, wire))
    }

    /// Sync until the outbox is empty and the server has no more pages.
    pub async fn sync(&self, replica: &mut Replica) -> Result<SyncReport, ReplicaError> {
        let mut report = SyncReport::default();
        let mut resent_whole = std::collections::HashSet::<posync_model::DocId>::new();
        while report.rounds < ROUNDS_MAX {
            let req = replica.prepare_sync(&self.limits)?;
            report.rounds += 1;
            let (resp, wire) = match self.exchange(&req).await {
                Ok(ok) => ok,
                Err(ReplicaError::Server { code: ErrorCode::MissingDependencies, doc: Some(doc), .. })
                    if doc.parse().is_ok_and(|d| resent_whole.insert(d)) =>
                {
                    // The server lacks what we thought it acknowledged: send that document whole.
                    replica.reset_server_heads(doc.parse().map_err(|_| ReplicaError::BadResponse("doc id".into()))?)?;
                    continue;
                }
                Err(ReplicaError::Server { code, doc: Some(doc), .. })
                    if refuses_document(code) && req.push.iter().any(|p| p.doc.to_string() == doc) =>
                {
                    // One refused document must not hold back every other record on the phone.
                    let id = doc.parse().map_err(|_| ReplicaError::BadResponse("doc id".into()))?;
                    replica.quarantine(id, code.as_str())?;
                    tracing::warn!(%doc, %code, "server refused a document; kept on the device, not re-pushed");
                    report.rejected.push((doc, code.as_str().to_owned()));
                    continue;
                }
                Err(e) => return Err(e),
            };
            report.bytes.up += wire.up;
            report.bytes.down += wire.down;
            report.pushed_docs += req.push.len();
            let applied = replica.apply_response(&resp)?;
            report.pulled_docs += applied.pulled;
            report.cursor = applied.cursor;
            let outbox_left = !req.push.is_empty() && !replica.outbox()?.is_empty();
            if !applied.more && !outbox_left {
                return Ok(report);
            }
        }
        Err(ReplicaError::TooManyRounds(ROUNDS_MAX))
    }
}

/// Errors about one pushed document that retrying will not fix.
pub fn refuses_document(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::Forbidden | ErrorCode::DocMismatch | ErrorCode::MalformedChanges | ErrorCode::HeadsMismatch
    )
}

impl Replica {
    /// Sync with `server_url` using bearer `token`. Safe to interrupt at any point.
    pub async fn sync(&mut self, server_url: &str, token: &str) -> Result<SyncReport, ReplicaError> {
        HttpSync::new(server_url, token).sync(self).await
    }
}

use crate::types::{PROTOCOL_VERSION, SyncRequest, SyncResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io::{Read, Write};

/// Media type of request and response bodies.
pub const CONTENT_TYPE: &str = "application/cbor";

/// Bodies at least this large are gzip'd. Below it, gzip's header costs more than it saves.
pub const COMPRESS_THRESHOLD_BYTES: usize = 1024;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("body is not a valid v{PROTOCOL_VERSION} message: {0}")]
    Malformed(String),
    #[error("protocol version {0} is not supported (this server speaks {PROTOCOL_VERSION})")]
    UnsupportedVersion(u64),
    #[error("body inflates to more than {0} bytes")]
    TooLarge(usize),
    #[error("gzip body does not inflate: {0}")]
    BadGzip(String),
}

/// Encode a message as CBOR. Infallible for our types: they contain no maps with
/// non-string keys and no floats.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail, and every protocol type is serialisable.
    if ciborium::into_writer(msg, &mut out).is_err() {
        out.clear();
    }
    out
}

/// An encoded body and whether it is gzip'd.
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub gzip: bool,
}

/// Encode and, above the threshold, gzip.
pub fn encode_body<T: Serialize>(msg: &T) -> Encoded {
    let raw = encode(msg);
    if raw.len() >= COMPRESS_THRESHOLD_BYTES {
        let z = gzip(&raw);
        if z.len() < raw.len() {
            return Encoded { bytes: z, gzip: true };
        }
    }
    Encoded { bytes: raw, gzip: false }
}

pub fn gzip(raw: &[u8]) -> Vec<u8> {
    deflate_reused(raw).unwrap_or_else(|| gzip_fresh(raw))
}

/// The gzip header flate2's `GzEncoder` writes at `Compression::fast()`: no name, mtime 0,
/// XFL 4 (fastest), OS unknown.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 4, 255];

thread_local! {
    /// One deflate state per thread, reset between bodies: setting one up (allocating and
    /// zeroing its windows and hash tables) cost as much as compressing a sync response.
    static DEFLATE: std::cell::RefCell<flate2::Compress> =
        std::cell::RefCell::new(flate2::Compress::new(flate2::Compression::fast(), false));
}

/// `raw` as one gzip member, deflated by this thread's reused state; `None` if deflate did
/// not finish (then [`gzip_fresh`] does it the plain way).
fn deflate_reused(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(GZIP_HEADER.len() + raw.len() / 2 + 64);
    out.extend_from_slice(&GZIP_HEADER);
    let finished = DEFLATE.with(|d| {
        let mut d = d.try_borrow_mut().ok()?;
        d.reset();
        // Each round either finishes or fills the spare capacity given; the bound only
        // guards against a deflate that makes no progress.
        for _ in 0..64 {
            out.reserve(raw.len() / 4 + 1024);
            let read = usize::try_from(d.total_in()).ok()?;
            match d.compress_vec(raw.get(read..)?, &mut out, flate2::FlushCompress::Finish) {
                Ok(flate2::Status::StreamEnd) => return Some(()),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
        None
    });
    finished?;
    let mut crc = flate2::Crc::new();
    crc.update(raw);
    out.extend_from_slice(&crc.sum().to_le_bytes());
    out.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    Some(out)
}

fn gzip_fresh(raw: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    // Writing to a Vec-backed encoder cannot fail.
    let _ = enc.write_all(raw);
    enc.finish().unwrap_or_default()
}

/// Inflate at most `limit` bytes; more is an error, not a truncation. Every byte must belong
/// to a gzip member (RFC 1952 allows several): trailing garbage is an error, not ignored.
pub fn gunzip_bounded(z: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    let mut dec = flate2::read::MultiGzDecoder::new(z).take(limit as u64 + 1);
    dec.read_to_end(&mut out).map_err(|e| DecodeError::BadGzip(e.to_string()))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge(limit));
    }
    Ok(out)
}

/// Only the version: read first, so that a message of another version is reported as such
/// rather than as "malformed".
#[derive(Deserialize)]
struct Envelope {
    v: u64,
}

fn decode_versioned<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let env: Envelope = ciborium::from_reader(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if env.v != u64::from(PROTOCOL_VERSION) {
        return Err(DecodeError::UnsupportedVersion(env.v));
    }
    let mut reader = bytes;
    let msg = ciborium::from_reader(&mut reader).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if !reader.is_empty() {
        return Err(DecodeError::Malformed(format!("{} trailing bytes", reader.len())));
    }
    Ok(msg)
}

pub fn decode_request(bytes: &[u8]) -> Result<SyncRequest, DecodeError> {
    decode_versioned(bytes)
}

pub fn decode_response(bytes: &[u8]) -> Result<SyncResponse, DecodeError> {
    decode_versioned(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_deflate_state_compresses_as_well_as_a_fresh_encoder() {
        let bodies: Vec<Vec<u8>> = vec![
            Vec::new(),
            b"{}".to_vec(),
            (0..100_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect(),
            (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect(),
        ];
        for _ in 0..2 {
            for body in &bodies {
                let (reused, fresh) = (gzip(body), gzip_fresh(body));
                assert_eq!(reused[..10], fresh[..10], "the same gzip header");
                assert!(
                    reused.len() <= fresh.len() + fresh.len() / 100 + 64,
                    "{} vs {} bytes",
                    reused.len(),
                    fresh.len()
                );
                assert!(
                    gunzip_bounded(&reused, body.len()).expect("inflates") == *body,
                    "round trip of {} bytes",
                    body.len()
                );
            }
        }
    }
}

//! Automerge bytes a hostile device could push, built by hand for the tests that prove the
//! server refuses them: inflation bombs, truncated or trailing garbage, oversized changes.
//! Shared by the bad-input catalogue, the store tests and the binary's memory test.

use automerge::transaction::Transactable;
use automerge::{ActorId, Automerge, ROOT};
use flate2::Compression;
use flate2::write::DeflateEncoder;
use sha2::{Digest, Sha256};
use std::io::Write;

/// Automerge's chunk magic bytes.
pub const MAGIC: [u8; 4] = [0x85, 0x6f, 0x4a, 0x83];

fn leb(mut n: u64, out: &mut Vec<u8>) {
    loop {
        let b = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(b);
            return;
        }
        out.push(b | 0x80);
    }
}

/// Raw DEFLATE of `n` zero bytes, streamed (never holds `n` bytes in memory).
pub fn deflated_zeros(n: u64) -> Vec<u8> {
    let mut enc = DeflateEncoder::new(Vec::new(), Compression::best());
    let block = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let take = left.min(block.len() as u64) as usize;
        enc.write_all(&block[..take]).expect("deflate in memory");
        left -= take as u64;
    }
    enc.finish().expect("deflate in memory")
}

/// A chunk with its header: magic, checksum (first 4 bytes of SHA-256 over type, length and
/// `checksum_of`), type, LEB128 length, data.
fn chunk(chunk_type: u8, data: &[u8], checksum_type: u8, checksum_of: &[u8]) -> Vec<u8> {
    let mut hashed = vec![checksum_type];
    leb(checksum_of.len() as u64, &mut hashed);
    hashed.extend_from_slice(checksum_of);
    let hash = Sha256::digest(&hashed);
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(&hash[..4]);
    out.push(chunk_type);
    leb(data.len() as u64, &mut out);
    out.extend_from_slice(data);
    out
}

/// A compressed change chunk (type 2) whose DEFLATE stream inflates to `inflated` zero bytes.
/// About a thousandth of `inflated` on the wire; Automerge inflates it whole before parsing.
pub fn compressed_change_bomb(inflated: u64) -> Vec<u8> {
    // The checksum cannot match zeros that are not a change; Automerge inflates before it
    // looks at the checksum, so the bomb goes off either way.
    chunk(2, &deflated_zeros(inflated), 1, b"")
}

/// A document chunk (type 0) with a valid checksum whose one op column is DEFLATE-compressed
/// and inflates to `inflated` zero bytes.
pub fn document_column_bomb(inflated: u64) -> Vec<u8> {
    let column = deflated_zeros(inflated);
    let mut body = Vec::new();
    leb(0, &mut body); // actors
    leb(0, &mut body); // heads
    leb(0, &mut body); // change columns
    leb(1, &mut body); // op columns: the action column, deflated
    leb((4 << 4) | 2 | 8, &mut body);
    leb(column.len() as u64, &mut body);
    body.extend_from_slice(&column);
    chunk(0, &body, 0, &body)
}

/// The Automerge magic bytes followed by garbage.
pub fn magic_then_garbage() -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    out.extend_from_slice(b"\x00\x00\x00\x00\x01\x10not a change at all");
    out
}

/// `valid` followed by a chunk header that promises more than follows.
pub fn valid_then_garbage(valid: &[u8]) -> Vec<u8> {
    let mut out = valid.to_vec();
    out.extend_from_slice(&magic_then_garbage());
    out
}

/// One change by `actor` on top of `base` that puts `ops` keys into the root map.
pub fn change_with_ops(base: &Automerge, actor: ActorId, ops: usize) -> Automerge {
    let mut am = base.fork().with_actor(actor);
    let mut tx = am.transaction();
    for i in 0..ops {
        tx.put(ROOT, format!("k{i}"), i as i64).expect("put in memory");
    }
    tx.commit();
    am
}

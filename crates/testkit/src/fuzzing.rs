//! The fuzz harnesses: every decoder that takes bytes from the network, as a function of
//! arbitrary bytes that must never panic. `fuzz/` (cargo fuzz) calls them with libFuzzer's
//! inputs; `tests/fuzz_regressions.rs` replays the kept corpus and crashers through them
//! under `cargo test`.

use posync_model::{DocId, DocKind, HierarchyFile, PosyanduId};
use posync_proto::DocPush;

/// A sync request body, as the server decodes it.
pub fn decode_request(data: &[u8]) {
    if let Ok(req) = posync_proto::decode_request(data) {
        // What decodes must encode back and decode to the same message.
        let again = posync_proto::decode_request(&posync_proto::encode(&req));
        assert_eq!(again.as_ref().ok(), Some(&req), "request round trip");
    }
}

/// A sync response body, as a phone decodes it.
pub fn decode_response(data: &[u8]) {
    if let Ok(resp) = posync_proto::decode_response(data) {
        let again = posync_proto::decode_response(&posync_proto::encode(&resp));
        assert_eq!(again.as_ref().ok(), Some(&resp), "response round trip");
    }
}

/// A gzip'd body, inflated with the server's bound.
pub fn gunzip(data: &[u8]) {
    if let Ok(out) = posync_proto::gunzip_bounded(data, 1 << 20) {
        assert!(out.len() <= 1 << 20, "the bound holds");
    }
}

/// Pushed Automerge changes for a new document, merged as the server does.
pub fn merge_push(data: &[u8]) {
    let Ok(posyandu) = "fuzz".parse::<PosyanduId>() else { return };
    let (heads, changes) = data.split_at(data.len().min(32) / 32 * 32);
    let push = DocPush {
        doc: DocId::for_registry(&posyandu),
        kind: DocKind::Registry,
        posyandu,
        base: Vec::new(),
        heads: heads.to_vec(),
        changes: changes.to_vec(),
    };
    let rules = posync_store::core::Rules::new(posync_model::DeviceId::from_bytes([7; 16]), 1_795_395_600);
    let _ = posync_store::core::merge_push(None, &push, &rules, &mut Default::default());
}

/// Automerge bytes walked by the intake guard under a small budget: it must never panic,
/// never let usage pass the budget, and never claim less than loading would need.
pub fn inspect_changes(data: &[u8]) {
    use posync_model::guard::{Budget, InputError, Usage, inspect};
    let budget = Budget { decoded_bytes_max: 1 << 20, change_ops_max: 1_000, ops_max: 10_000, changes_max: 1_000 };
    let mut used = Usage::default();
    match inspect(data, &budget, &mut used) {
        Ok(_) => {
            assert!(used.decoded_bytes <= budget.decoded_bytes_max, "decoded bytes within the budget");
            assert!(used.ops <= budget.ops_max && used.changes <= budget.changes_max, "counts within the budget");
        }
        Err(InputError::Malformed(_) | InputError::TooLarge { .. }) => {}
    }
}

/// A bearer token, verified by the server's keyset.
pub fn token(data: &[u8]) {
    static KEYS: std::sync::OnceLock<posync_server::TokenKeys> = std::sync::OnceLock::new();
    let keys = KEYS.get_or_init(|| posync_server::TokenKeys::from_seed([7; 32]));
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = keys.verify(s, 1_795_395_600);
    }
}

/// A hierarchy import file.
pub fn hierarchy(data: &[u8]) {
    if let Ok(s) = std::str::from_utf8(data) {
        let _ = HierarchyFile::parse(s);
    }
}

/// A harness: arbitrary bytes in, a panic out if a decoder misbehaves.
pub type Harness = fn(&[u8]);

/// Every harness by name, for the regression replay.
pub const HARNESSES: [(&str, Harness); 7] = [
    ("decode_request", decode_request),
    ("decode_response", decode_response),
    ("gunzip", gunzip),
    ("merge_push", merge_push),
    ("inspect_changes", inspect_changes),
    ("token", token),
    ("hierarchy", hierarchy),
];

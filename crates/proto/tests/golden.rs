//! Golden byte vectors for sync protocol v1, kept in `proto/vectors/` at the workspace root.
//!
//! Each vector is a fixed message (fixed UUIDs, fixed bytes). For every vector this test checks
//! that `posync_proto::encode` produces exactly the bytes of `<name>.cbor`, that `<name>.hex`
//! and `<name>.diag` describe those bytes, and that decoding the file gives the message back.
//!
//! To regenerate the files after an intended wire change:
//!
//! ```sh
//! POSYNC_BLESS=1 cargo test -p posync-proto --test golden
//! ```
//!
//! then review the diff of `proto/vectors/` and update `proto/SYNC-v1.md` (the test also
//! checks the worked example there).

use posync_model::{DeviceId, DocId, DocKind, Heads, PosyanduId};
use posync_proto::{
    COMPRESS_THRESHOLD_BYTES, CONTENT_TYPE, DecodeError, DocAck, DocPull, DocPush, ErrorBody, ErrorCode, ErrorDetail,
    Limits, PROTOCOL_VERSION, SyncRequest, SyncResponse, decode_request, decode_response, encode, encode_body,
    gunzip_bounded, gzip,
};
use std::fmt::Write as _;
use std::path::PathBuf;

// ---------------------------------------------------------------------------------------------
// Fixed inputs
// ---------------------------------------------------------------------------------------------

const DEVICE: &str = "0c2d7a4e-5b1f-4e8a-9d3c-6f1a2b3c4d5e";
const SESSION_DOC: &str = "8f3b6c2a-1d4e-5a7b-9c0d-2e4f6a8b0c1d";
const REGISTRY_DOC: &str = "3a9e1f7c-6b2d-5c4e-8f1a-0b3c5d7e9f2a";
const OTHER_POSYANDU: &str = "mawar-02";
/// A fixed scope digest (normally the first 8 bytes of SHA-256 of the scope).
const SCOPE_DIGEST: [u8; 8] = [0x5c; 8];
const POSYANDU: &str = "melati-01";

/// Fake change hashes: 32 repeated bytes each, easy to spot in a hex dump.
const HASH_A: [u8; 32] = [0x11; 32];
const HASH_B: [u8; 32] = [0x22; 32];
const HASH_C: [u8; 32] = [0x33; 32];
const HASH_D: [u8; 32] = [0x44; 32];

/// Opaque "changes" payloads. They start with Automerge's magic bytes but are NOT valid
/// Automerge data: the codec never looks inside `changes`.
const PUSHED_CHANGES: [u8; 8] = [0x85, 0x6f, 0x4a, 0x83, 0x00, 0x01, 0x02, 0x03];
const PULLED_CHANGES: [u8; 10] = [0x85, 0x6f, 0x4a, 0x83, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15];

const NOOP_CURSOR: u64 = 1234;

fn device() -> DeviceId {
    DEVICE.parse().expect("fixed device id")
}

fn doc(s: &str) -> DocId {
    s.parse().expect("fixed doc id")
}

fn posyandu() -> PosyanduId {
    POSYANDU.parse().expect("fixed posyandu id")
}

fn concat(parts: &[&[u8]]) -> Vec<u8> {
    parts.iter().flat_map(|p| p.iter().copied()).collect()
}

// ---------------------------------------------------------------------------------------------
// The vectors
// ---------------------------------------------------------------------------------------------

fn request_noop() -> SyncRequest {
    SyncRequest { scope_digest: Some(SCOPE_DIGEST.to_vec()), ..SyncRequest::new(device(), NOOP_CURSOR) }
}

fn request_push() -> SyncRequest {
    SyncRequest {
        store: None,
        v: PROTOCOL_VERSION,
        device: device(),
        cursor: NOOP_CURSOR,
        push: vec![DocPush {
            doc: doc(SESSION_DOC),
            kind: DocKind::Session,
            posyandu: posyandu(),
            base: HASH_A.to_vec(),
            heads: HASH_B.to_vec(),
            changes: PUSHED_CHANGES.to_vec(),
        }],
        page_bytes_max: Some(65_536),
        scope_digest: Some(SCOPE_DIGEST.to_vec()),
        pull: None,
        pieces: None,
        dropped: Vec::new(),
    }
}

/// After a push whose answer was lost: the same document with no changes (a probe), and
/// no pull, so the answer is just the acknowledgement.
fn request_probe() -> SyncRequest {
    let mut req = request_push();
    req.push[0].changes.clear();
    req.page_bytes_max = None;
    req.pull = Some(false);
    req
}

/// A device that takes documents in pieces, reporting the piece it holds (an empty push
/// whose heads are the piece's) and asking for the next one in a small page.
fn request_pieces() -> SyncRequest {
    let mut req = request_push();
    req.push[0].doc = doc(REGISTRY_DOC);
    req.push[0].kind = DocKind::Registry;
    req.push[0].base = concat(&[&HASH_C, &HASH_D]);
    req.push[0].heads = concat(&[&HASH_C, &HASH_D]);
    req.push[0].changes.clear();
    req.page_bytes_max = Some(4096);
    req.pieces = Some(true);
    req
}

/// A phone keeping a window of recent sessions names the two old ones it dropped.
fn request_dropped() -> SyncRequest {
    SyncRequest { dropped: vec![doc(SESSION_DOC), doc(REGISTRY_DOC)], ..request_noop() }
}

fn request_v2() -> SyncRequest {
    SyncRequest { v: 2, ..request_noop() }
}

fn response_empty() -> SyncResponse {
    SyncResponse {
        store: None,
        v: PROTOCOL_VERSION,
        acks: vec![],
        docs: vec![],
        scope: None,
        cursor: NOOP_CURSOR,
        more: false,
    }
}

fn response_ack_pull() -> SyncResponse {
    SyncResponse {
        store: None,
        v: PROTOCOL_VERSION,
        acks: vec![DocAck { doc: doc(SESSION_DOC), heads: HASH_B.to_vec() }],
        docs: vec![DocPull {
            doc: doc(REGISTRY_DOC),
            kind: DocKind::Registry,
            posyandu: posyandu(),
            heads: concat(&[&HASH_C, &HASH_D]),
            changes: PULLED_CHANGES.to_vec(),
            piece: false,
        }],
        scope: None,
        cursor: 1240,
        more: true,
    }
}

/// The first piece of a registry larger than the page: the cursor stays before it.
fn response_piece() -> SyncResponse {
    let mut resp = response_ack_pull();
    resp.acks.clear();
    resp.docs[0].piece = true;
    resp
}

fn response_rescope() -> SyncResponse {
    SyncResponse {
        store: None,
        v: PROTOCOL_VERSION,
        acks: vec![],
        docs: vec![],
        scope: Some(vec![OTHER_POSYANDU.parse().expect("fixed posyandu id"), posyandu()]),
        cursor: NOOP_CURSOR,
        more: true,
    }
}

enum Msg {
    Request(SyncRequest),
    Response(SyncResponse),
}

impl Msg {
    fn encode(&self) -> Vec<u8> {
        match self {
            Msg::Request(m) => encode(m),
            Msg::Response(m) => encode(m),
        }
    }

    /// Decode `bytes` as the same kind of message and compare with `self`.
    fn decode_matches(&self, bytes: &[u8]) -> Result<bool, DecodeError> {
        Ok(match self {
            Msg::Request(m) => &decode_request(bytes)? == m,
            Msg::Response(m) => &decode_response(bytes)? == m,
        })
    }

    fn decode_err(&self, bytes: &[u8]) -> Option<DecodeError> {
        match self {
            Msg::Request(_) => decode_request(bytes).err(),
            Msg::Response(_) => decode_response(bytes).err(),
        }
    }
}

/// Every vector: (file stem, message). `request-v2` is checked separately for its decode error.
fn vectors() -> Vec<(&'static str, Msg)> {
    vec![
        ("request-noop", Msg::Request(request_noop())),
        ("request-push", Msg::Request(request_push())),
        ("request-v2", Msg::Request(request_v2())),
        ("request-probe", Msg::Request(request_probe())),
        ("request-pieces", Msg::Request(request_pieces())),
        ("request-dropped", Msg::Request(request_dropped())),
        ("response-empty", Msg::Response(response_empty())),
        ("response-ack-pull", Msg::Response(response_ack_pull())),
        ("response-rescope", Msg::Response(response_rescope())),
        ("response-piece", Msg::Response(response_piece())),
    ]
}

// ---------------------------------------------------------------------------------------------
// Files and blessing
// ---------------------------------------------------------------------------------------------

fn vectors_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/vectors")
}

fn spec_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto/SYNC-v1.md")
}

fn blessing() -> bool {
    std::env::var("POSYNC_BLESS").is_ok_and(|v| v == "1")
}

/// With `POSYNC_BLESS=1`, write `expected` to the file; otherwise assert the file holds it.
fn check_or_bless(file: &str, expected: &[u8]) {
    let path = vectors_dir().join(file);
    if blessing() {
        std::fs::create_dir_all(vectors_dir()).expect("create proto/vectors");
        std::fs::write(&path, expected).expect("write vector");
        return;
    }
    let actual = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with POSYNC_BLESS=1 to create it)", path.display()));
    assert!(
        actual == expected,
        "{} differs from what the code produces.\n  file: {}\n  code: {}\nIf the wire change is intended, \
         rerun with POSYNC_BLESS=1 and update proto/SYNC-v1.md.",
        path.display(),
        hex::encode(&actual),
        hex::encode(expected),
    );
}

/// The bytes of `<name>.cbor`. While blessing, other tests may be rewriting the files, so use
/// the encoding (which `vectors_match_the_code` checks against the file otherwise).
fn vector_bytes(name: &str, msg: &Msg) -> Vec<u8> {
    if blessing() {
        return msg.encode();
    }
    std::fs::read(vectors_dir().join(format!("{name}.cbor"))).expect("read vector")
}

/// Plain hex, 32 bytes per line: `xxd -r -p <name>.hex` gives back the `.cbor` file.
fn hex_dump(bytes: &[u8]) -> String {
    let mut s = String::new();
    for line in bytes.chunks(32) {
        s.push_str(&hex::encode(line));
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// A tiny CBOR reader for dumps. It also asserts the encoder's habits that the spec states:
// definite lengths, shortest argument encoding, text map keys.
// ---------------------------------------------------------------------------------------------

struct Item {
    depth: usize,
    /// Hex of the head (initial byte and argument).
    head: String,
    /// Hex of the content of a byte or text string.
    content: String,
    what: String,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    items: Vec<Item>,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, pos: 0, items: Vec::new() }
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let s = self.bytes.get(self.pos..self.pos + n).expect("complete CBOR item");
        self.pos += n;
        s
    }

    /// Read one data item, returning its diagnostic notation (RFC 8949 section 8).
    fn item(&mut self, depth: usize, is_key: bool) -> String {
        let start = self.pos;
        let ib = self.take(1)[0];
        let (major, ai) = (ib >> 5, ib & 0x1f);
        let arg: u64 = match ai {
            0..=23 => u64::from(ai),
            24 => u64::from(self.take(1)[0]),
            25 => u64::from(u16::from_be_bytes(self.take(2).try_into().expect("2 bytes"))),
            26 => u64::from(u32::from_be_bytes(self.take(4).try_into().expect("4 bytes"))),
            27 => u64::from_be_bytes(self.take(8).try_into().expect("8 bytes")),
            _ => panic!("indefinite length or reserved value at byte {start}: encoder must not emit it"),
        };
        if major != 7 {
            let shortest = match arg {
                0..=23 => ai < 24,
                24..=0xff => ai == 24,
                0x100..=0xffff => ai == 25,
                0x1_0000..=0xffff_ffff => ai == 26,
                _ => ai == 27,
            };
            assert!(shortest, "argument {arg} at byte {start} is not in its shortest form");
        }
        assert!(!is_key || major == 3, "map key at byte {start} is not a text string");
        // Initial byte, then the argument bytes (if any) apart: "19 04d2" is unsigned(1234).
        let head = match hex::encode(&self.bytes[start + 1..self.pos]) {
            a if a.is_empty() => hex::encode([ib]),
            a => format!("{} {a}", hex::encode([ib])),
        };
        let idx = self.items.len();
        self.items.push(Item { depth, head, content: String::new(), what: String::new() });
        let len = usize::try_from(arg).expect("length fits usize");
        let (what, diag) = match major {
            0 => (format!("unsigned({arg})"), arg.to_string()),
            1 => (format!("negative(-1-{arg})"), format!("-{}", u128::from(arg) + 1)),
            2 => {
                let b = self.take(len);
                self.items[idx].content = hex::encode(b);
                (format!("bytes({len})"), format!("h'{}'", hex::encode(b)))
            }
            3 => {
                let b = self.take(len);
                let s = std::str::from_utf8(b).expect("text is UTF-8");
                self.items[idx].content = hex::encode(b);
                (format!("text({len}) {s:?}"), format!("{s:?}"))
            }
            4 => {
                let mut parts = Vec::with_capacity(len);
                for _ in 0..len {
                    parts.push(self.item(depth + 1, false));
                }
                (format!("array({len})"), bracket('[', ']', &parts, depth))
            }
            5 => {
                let mut parts = Vec::with_capacity(len);
                for _ in 0..len {
                    let k = self.item(depth + 1, true);
                    let v = self.item(depth + 1, false);
                    parts.push(format!("{k}: {v}"));
                }
                (format!("map({len})"), bracket('{', '}', &parts, depth))
            }
            6 => panic!("tag {arg} at byte {start}: protocol v1 uses no tags"),
            _ => match ai {
                20 => ("false".into(), "false".into()),
                21 => ("true".into(), "true".into()),
                22 => ("null".into(), "null".into()),
                _ => panic!("simple value or float {ai} at byte {start}: not used by protocol v1"),
            },
        };
        self.items[idx].what = what;
        diag
    }
}

fn bracket(open: char, close: char, parts: &[String], depth: usize) -> String {
    if parts.is_empty() {
        return format!("{open}{close}");
    }
    let pad = "  ".repeat(depth + 1);
    let mut s = format!("{open}\n");
    for (i, p) in parts.iter().enumerate() {
        let comma = if i + 1 < parts.len() { "," } else { "" };
        let _ = writeln!(s, "{pad}{p}{comma}");
    }
    let _ = write!(s, "{}{close}", "  ".repeat(depth));
    s
}

/// Diagnostic notation of one complete message, plus its items for the annotated dump.
fn read_all(bytes: &[u8]) -> (String, Vec<Item>) {
    let mut r = Reader::new(bytes);
    let diag = r.item(0, false);
    assert_eq!(r.pos, bytes.len(), "one data item, no trailing bytes");
    (diag, r.items)
}

/// A hex dump with one line per data item and a comment saying what it is.
fn annotated(bytes: &[u8]) -> String {
    let (_, items) = read_all(bytes);
    let lines: Vec<(String, String)> = items
        .iter()
        .map(|it| {
            let hex = if it.content.is_empty() { it.head.clone() } else { format!("{} {}", it.head, it.content) };
            (format!("{}{hex}", "  ".repeat(it.depth)), format!("{}{}", "  ".repeat(it.depth), it.what))
        })
        .collect();
    let width = lines.iter().map(|(h, _)| h.len()).max().unwrap_or(0);
    let mut s = String::new();
    for (h, w) in lines {
        let _ = writeln!(s, "{h:<width$}  # {w}");
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

/// Documented in proto/vectors/README.md.
const PROBE_LEN: usize = 230;

#[test]
fn vectors_match_the_code() {
    for (name, msg) in vectors() {
        let bytes = msg.encode();
        check_or_bless(&format!("{name}.cbor"), &bytes);
        check_or_bless(&format!("{name}.hex"), hex_dump(&bytes).as_bytes());
        let (diag, _) = read_all(&bytes);
        check_or_bless(&format!("{name}.diag"), format!("{diag}\n").as_bytes());

        let file = std::fs::read(vectors_dir().join(format!("{name}.cbor"))).expect("read vector");
        let hex_file = std::fs::read_to_string(vectors_dir().join(format!("{name}.hex"))).expect("read hex");
        let from_hex: String = hex_file.split_whitespace().collect();
        assert_eq!(hex::decode(from_hex).expect("hex file is hex"), file, "{name}.hex is the .cbor file");
        let documented_len = match name {
            "request-noop" | "request-v2" => 82,
            "request-push" => 236,
            "request-probe" => PROBE_LEN,
            "response-empty" => 32,
            "response-ack-pull" => 240,
            "response-rescope" => 58,
            "request-pieces" => 299,
            "request-dropped" => 125,
            "response-piece" => 185,
            other => panic!("vector {other} has no documented size"),
        };
        assert_eq!(file.len(), documented_len, "{name}: size in proto/vectors/README.md");
        if name != "request-v2" {
            assert!(msg.decode_matches(&file).expect("vector decodes"), "{name} decodes to the message it encodes");
        }
    }
}

#[test]
fn version_2_is_reported_as_such() {
    let file = vector_bytes("request-v2", &Msg::Request(request_v2()));
    assert_eq!(decode_request(&file), Err(DecodeError::UnsupportedVersion(2)));
    // The same bytes are a version-2 message whichever decoder reads them.
    assert_eq!(decode_response(&file), Err(DecodeError::UnsupportedVersion(2)));
    // A response of another version likewise.
    let r2 = SyncResponse { v: 2, ..response_empty() };
    assert_eq!(decode_response(&encode(&r2)), Err(DecodeError::UnsupportedVersion(2)));
}

#[test]
fn every_truncation_is_malformed() {
    for (name, msg) in vectors() {
        let file = vector_bytes(name, &msg);
        // One byte short …
        let short = &file[..file.len() - 1];
        assert!(matches!(msg.decode_err(short), Some(DecodeError::Malformed(_))), "{name} minus its last byte");
        // … and in fact every proper prefix, including the empty body.
        for cut in 0..file.len() {
            let err = msg.decode_err(&file[..cut]);
            assert!(matches!(err, Some(DecodeError::Malformed(_))), "{name} cut at {cut}: {err:?}");
        }
    }
}

#[test]
fn trailing_bytes_are_malformed() {
    let mut bytes = encode(&request_noop());
    bytes.push(0x00);
    assert_eq!(decode_request(&bytes), Err(DecodeError::Malformed("1 trailing bytes".into())));
}

#[test]
fn gunzip_is_bounded() {
    let raw = encode(&request_push());
    let z = gzip(&raw);
    assert_eq!(gunzip_bounded(&z, raw.len()).expect("inflates to exactly its limit"), raw);
    assert_eq!(gunzip_bounded(&z, raw.len() - 1), Err(DecodeError::TooLarge(raw.len() - 1)));

    // A gzip bomb: 16 MiB + 1 of zeros compresses to a few KiB and must stop at the server's limit.
    let limit = Limits::default().body_decoded_bytes_max;
    let bomb = gzip(&vec![0u8; limit + 1]);
    assert!(bomb.len() < Limits::default().body_bytes_max / 8, "the bomb passes the wire limit: {}", bomb.len());
    assert_eq!(gunzip_bounded(&bomb, limit), Err(DecodeError::TooLarge(limit)));

    assert!(matches!(gunzip_bounded(b"not gzip at all", 1024), Err(DecodeError::BadGzip(_))));

    // Several gzip members (RFC 1952) inflate to their concatenation; bytes after the last
    // member that are not a member are an error, not ignored.
    let two = [gzip(b"ab"), gzip(b"cd")].concat();
    assert_eq!(gunzip_bounded(&two, 1024).expect("two members"), b"abcd");
    let trailing = [z.clone(), b"junk".to_vec()].concat();
    assert!(matches!(gunzip_bounded(&trailing, 4096), Err(DecodeError::BadGzip(_))));
}

/// A request whose encoding is exactly `len` bytes, with compressible (zero) changes.
fn request_of_len(len: usize) -> SyncRequest {
    let mut req = request_push();
    req.push[0].changes = vec![0; 300];
    let base = encode(&req).len() - 300; // the 3-byte bstr head holds for 256..=65535
    req.push[0].changes = vec![0; len - base];
    assert_eq!(encode(&req).len(), len);
    req
}

#[test]
fn bodies_are_gzipped_from_the_threshold_up() {
    assert_eq!(COMPRESS_THRESHOLD_BYTES, 1024);
    let small = encode_body(&request_noop());
    assert!(!small.gzip);
    assert_eq!(small.bytes, encode(&request_noop()));

    let below = encode_body(&request_of_len(COMPRESS_THRESHOLD_BYTES - 1));
    assert!(!below.gzip, "1023 bytes go as they are");
    let at = request_of_len(COMPRESS_THRESHOLD_BYTES);
    let enc = encode_body(&at);
    assert!(enc.gzip, "1024 compressible bytes are gzip'd");
    assert!(enc.bytes.len() < COMPRESS_THRESHOLD_BYTES);
    assert_eq!(gunzip_bounded(&enc.bytes, 4096).expect("inflates"), encode(&at));

    // Incompressible bytes above the threshold go as they are: gzip only when it is smaller.
    let mut noisy = request_of_len(4096);
    let mut x: u32 = 0x1234_5678;
    for b in noisy.push[0].changes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x.to_le_bytes()[0];
    }
    assert!(!encode_body(&noisy).gzip, "incompressible body is not gzip'd");
}

/// The numbers in the worked example of `proto/SYNC-v1.md`.
#[test]
fn noop_sync_byte_counts() {
    let sizes = |cursor: u64| {
        let req = SyncRequest { scope_digest: Some(SCOPE_DIGEST.to_vec()), ..SyncRequest::new(device(), cursor) };
        let resp = SyncResponse { cursor, ..response_empty() };
        let (a, b) = (encode_body(&req), encode_body(&resp));
        assert!(!a.gzip && !b.gzip, "no-op bodies are below the gzip threshold");
        (a.bytes.len(), b.bytes.len())
    };
    assert_eq!(sizes(0), (80, 30), "nothing anywhere, scope unchanged");
    assert_eq!(sizes(23), (80, 30));
    assert_eq!(sizes(24), (81, 31));
    assert_eq!(sizes(255), (81, 31));
    assert_eq!(sizes(256), (82, 32));
    assert_eq!(sizes(NOOP_CURSOR), (82, 32));
    assert_eq!(sizes(65_535), (82, 32));
    assert_eq!(sizes(65_536), (84, 34));
    assert_eq!(sizes(u64::from(u32::MAX)), (84, 34));
    assert_eq!(sizes(u64::from(u32::MAX) + 1), (88, 38));
    // The scope digest costs 22 bytes (key and 8-byte string), whatever the scope's size.
    assert_eq!(encode(&SyncRequest::new(device(), NOOP_CURSOR)).len(), 60);
    // A client asking for a smaller page pays 4 or 5 bytes more (uint instead of null).
    let mut req = request_noop();
    req.page_bytes_max = Some(65_536);
    assert_eq!(encode(&req).len(), 86);
}

/// The spec's worked example quotes the annotated dumps of the no-op pair verbatim.
#[test]
fn spec_quotes_the_noop_dumps() {
    let spec = std::fs::read_to_string(spec_path()).expect("read proto/SYNC-v1.md");
    for (label, bytes) in [("request", encode(&request_noop())), ("response", encode(&response_empty()))] {
        let dump = annotated(&bytes);
        assert!(
            spec.contains(&dump),
            "proto/SYNC-v1.md does not quote the annotated no-op {label} ({} bytes); expected block:\n{dump}",
            bytes.len()
        );
    }
}

#[test]
fn decoding_is_by_key_and_ignores_unknown_keys() {
    use ciborium::Value;
    let text = |s: &str| Value::Text(s.into());
    let int = |n: u64| Value::Integer(n.into());
    let dev = Value::Bytes(device().as_bytes().to_vec());
    let enc = |v: &Value| {
        let mut out = Vec::new();
        ciborium::into_writer(v, &mut out).expect("encode value");
        out
    };

    // Keys in another order, an unknown key, and no `page_bytes_max`: still the no-op request.
    let reordered = Value::Map(vec![
        (text("scope_digest"), Value::Bytes(SCOPE_DIGEST.to_vec())),
        (text("push"), Value::Array(vec![])),
        (text("future_field"), text("ignored by v1")),
        (text("cursor"), int(NOOP_CURSOR)),
        (text("device"), dev.clone()),
        (text("v"), int(1)),
    ]);
    assert_eq!(decode_request(&enc(&reordered)), Ok(request_noop()));

    let base = |device: Value, kind: &str, posyandu: &str| {
        Value::Map(vec![
            (text("v"), int(1)),
            (text("device"), dev.clone()),
            (text("cursor"), int(0)),
            (
                text("push"),
                Value::Array(vec![Value::Map(vec![
                    (text("doc"), device),
                    (text("kind"), text(kind)),
                    (text("posyandu"), text(posyandu)),
                    (text("base"), Value::Bytes(vec![])),
                    (text("heads"), Value::Bytes(vec![])),
                    (text("changes"), Value::Bytes(vec![])),
                ])]),
            ),
            (text("page_bytes_max"), Value::Null),
        ])
    };
    let doc_bytes = Value::Bytes(doc(SESSION_DOC).as_bytes().to_vec());
    assert!(decode_request(&enc(&base(doc_bytes.clone(), "session", POSYANDU))).is_ok());
    let malformed = |v: Value| matches!(decode_request(&enc(&v)), Err(DecodeError::Malformed(_)));
    // A UUID as a text string is not the v1 encoding.
    assert!(malformed(base(text(SESSION_DOC), "session", POSYANDU)));
    // A UUID must be exactly 16 bytes.
    assert!(malformed(base(Value::Bytes(vec![0; 15]), "session", POSYANDU)));
    // Kinds are lowercase words; posyandu ids are validated.
    assert!(malformed(base(doc_bytes.clone(), "Session", POSYANDU)));
    assert!(malformed(base(doc_bytes.clone(), "visit", POSYANDU)));
    assert!(malformed(base(doc_bytes.clone(), "session", "Melati 01")));
    assert!(malformed(base(doc_bytes, "session", "")));

    // A key given twice is malformed.
    let twice = Value::Map(vec![
        (text("v"), int(1)),
        (text("device"), dev.clone()),
        (text("cursor"), int(0)),
        (text("cursor"), int(1)),
        (text("push"), Value::Array(vec![])),
        (text("page_bytes_max"), Value::Null),
    ]);
    assert!(malformed(twice));

    // No `v`, or a body that is not a map: malformed, not "unsupported version".
    assert!(malformed(Value::Map(vec![(text("device"), dev), (text("cursor"), int(0))])));
    assert!(malformed(Value::Array(vec![int(1)])));
    assert!(malformed(text("v")));
    // `v` is read first: a v3 body of any shape is reported as version 3.
    let v3 = Value::Map(vec![(text("v"), int(3)), (text("hello"), text("world"))]);
    assert_eq!(decode_request(&enc(&v3)), Err(DecodeError::UnsupportedVersion(3)));
}

#[test]
fn heads_are_sorted_concatenated_hashes() {
    let unsorted = concat(&[&HASH_D, &HASH_C, &HASH_D]);
    let heads = Heads::from_bytes(&unsorted).expect("multiple of 32");
    assert_eq!(heads.len(), 2, "duplicates are dropped");
    assert_eq!(heads.to_bytes(), concat(&[&HASH_C, &HASH_D]), "sorted bytewise");
    assert!(Heads::from_bytes(&[0; 31]).is_err());
    assert!(Heads::from_bytes(&[]).expect("empty heads").is_empty());
}

#[test]
fn error_codes_are_stable() {
    use ErrorCode as E;
    let all = [
        (E::MalformedBody, "malformed_body"),
        (E::UnsupportedProtocolVersion, "unsupported_protocol_version"),
        (E::BodyTooLarge, "body_too_large"),
        (E::UnsupportedEncoding, "unsupported_encoding"),
        (E::UnsupportedMediaType, "unsupported_media_type"),
        (E::BatchTooLarge, "batch_too_large"),
        (E::MalformedChanges, "malformed_changes"),
        (E::MissingDependencies, "missing_dependencies"),
        (E::HeadsMismatch, "heads_mismatch"),
        (E::DocMismatch, "doc_mismatch"),
        (E::Unauthenticated, "unauthenticated"),
        (E::InvalidCredential, "invalid_credential"),
        (E::DeviceRevoked, "device_revoked"),
        (E::InvalidRequest, "invalid_request"),
        (E::Forbidden, "forbidden"),
        (E::DeviceMismatch, "device_mismatch"),
        (E::NotFound, "not_found"),
        (E::MethodNotAllowed, "method_not_allowed"),
        (E::Overloaded, "overloaded"),
        (E::ChangesTooLarge, "changes_too_large"),
        (E::DocumentTooLarge, "document_too_large"),
        (E::ForeignAuthor, "foreign_author"),
        (E::ActorSeqClash, "actor_seq_clash"),
        (E::IdCollision, "id_collision"),
        (E::InvalidField, "invalid_field"),
        (E::DeviceTaken, "device_taken"),
        (E::RateLimited, "rate_limited"),
        (E::StorageFull, "storage_full"),
        (E::ApiKeyNotAllowed, "api_key_not_allowed"),
        (E::Internal, "internal"),
    ];
    for (code, s) in all {
        // A new variant fails to compile here until it is added to the list and the spec.
        match code {
            E::MalformedBody
            | E::UnsupportedProtocolVersion
            | E::BodyTooLarge
            | E::UnsupportedEncoding
            | E::UnsupportedMediaType
            | E::BatchTooLarge
            | E::MalformedChanges
            | E::MissingDependencies
            | E::HeadsMismatch
            | E::DocMismatch
            | E::Unauthenticated
            | E::InvalidCredential
            | E::DeviceRevoked
            | E::InvalidRequest
            | E::Forbidden
            | E::DeviceMismatch
            | E::NotFound
            | E::MethodNotAllowed
            | E::Overloaded
            | E::ChangesTooLarge
            | E::DocumentTooLarge
            | E::ForeignAuthor
            | E::ActorSeqClash
            | E::IdCollision
            | E::InvalidField
            | E::DeviceTaken
            | E::RateLimited
            | E::StorageFull
            | E::ApiKeyNotAllowed
            | E::Internal => {}
        }
        assert_eq!(code.as_str(), s);
        assert_eq!(code.to_string(), s);
        assert_eq!(serde_json::to_value(code).expect("json"), serde_json::Value::String(s.into()));
        assert_eq!(serde_json::from_value::<ErrorCode>(s.into()).expect("json"), code);
    }
}

#[test]
fn error_bodies_match_the_vectors() {
    let missing = ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::MissingDependencies,
            message: format!("document {SESSION_DOC}: changes depend on changes the server does not have"),
            doc: Some(SESSION_DOC.into()),
            supported_version: None,
        },
    };
    let version = ErrorBody {
        error: ErrorDetail {
            code: ErrorCode::UnsupportedProtocolVersion,
            message: "protocol version 2 is not supported (this server speaks 1)".into(),
            doc: None,
            supported_version: Some(PROTOCOL_VERSION),
        },
    };
    assert_eq!(
        version.error.message,
        DecodeError::UnsupportedVersion(2).to_string(),
        "the message the server sends for a v2 body"
    );
    for (name, body) in [("error-missing-dependencies", missing), ("error-unsupported-version", version)] {
        let json = serde_json::to_string(&body).expect("json");
        check_or_bless(&format!("{name}.json"), format!("{json}\n").as_bytes());
        let file = std::fs::read_to_string(vectors_dir().join(format!("{name}.json"))).expect("read vector");
        assert_eq!(serde_json::from_str::<ErrorBody>(&file).expect("parses"), body);
    }
}

#[test]
fn constants_and_limits_are_as_documented() {
    assert_eq!(PROTOCOL_VERSION, 1);
    assert_eq!(CONTENT_TYPE, "application/cbor");
    assert_eq!(
        Limits::default(),
        Limits {
            body_bytes_max: 8 * 1024 * 1024,
            body_decoded_bytes_max: 16 * 1024 * 1024,
            push_docs_max: 256,
            push_decoded_bytes_max: 32 * 1024 * 1024,
            change_ops_max: 10_000,
            push_ops_max: 500_000,
            push_changes_max: 50_000,
            doc_bytes_max: 2 * 1024 * 1024,
            doc_ops_max: 100_000,
            page_bytes_max: 1024 * 1024,
            page_docs_max: 500,
            syncs_in_flight_max: 256,
            syncs_waiting_max: 2_048,
            sync_wait_ms_max: 5_000,
            sync_waiting_bytes_max: 128 * 1024 * 1024,
            auth_per_address_per_minute: 120,
            enrol_per_code_prefix_per_hour: 20,
            refresh_per_device_per_minute: 20,
        }
    );
}

// ---------------------------------------------------------------------------------------------
// Genesis changes: frozen forever
// ---------------------------------------------------------------------------------------------

/// The genesis change of each document kind, byte for byte. Phones merge their visits only
/// because every phone writes this exact change first: if an Automerge upgrade (or a code
/// change) altered these bytes, new phones would create different root objects and their
/// visits would silently hide each other's. So these files are never re-blessed: this test
/// must fail, and the change must be undone.
#[test]
fn genesis_changes_are_byte_identical_to_the_frozen_vectors() {
    use posync_model::doc::{self, DocMeta};
    let p: PosyanduId = "melati-01".parse().expect("posyandu");
    let day = time::macros::date!(2026 - 11 - 23);
    for (name, meta) in
        [("genesis-session", DocMeta::session(p.clone(), day)), ("genesis-registry", DocMeta::registry(p))]
    {
        let bytes = doc::genesis_change(&meta).expect("genesis");
        let path = vectors_dir().join(format!("{name}.bin"));
        if std::env::var("POSYNC_WRITE_GENESIS").is_ok_and(|v| v == "1") && !path.exists() {
            std::fs::write(&path, &bytes).expect("write the genesis vector once");
        }
        let frozen = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            frozen == bytes,
            "{name}: this build writes a different genesis change than every earlier one.\n  frozen: {}\n  now:    {}\n\
             Phones on different builds would no longer merge visits. Do not re-bless: find what changed the \
             encoding (an Automerge upgrade?) and keep the old bytes.",
            hex::encode(&frozen),
            hex::encode(&bytes)
        );
        // The frozen bytes are one change chunk, and their hash is the document's first head.
        let mut am = automerge::Automerge::new();
        am.load_incremental(&frozen).expect("the frozen change loads");
        let hash = doc::genesis_hash(&meta).expect("hash");
        assert_eq!(am.get_heads(), vec![hash], "{name}: its hash is the genesis head");
        assert_eq!(doc::read_meta(&am).expect("meta"), meta, "{name}: it names its document");
    }
}

//! A catalogue of every way a sync request can be wrong. Each case is a raw HTTP request sent to
//! a real server on 127.0.0.1 over a real SQLite file, checked for (a) its HTTP status, (b) the
//! stable `error.code` of its JSON body, and (c) that nothing was stored. Afterwards the server
//! must still serve: `/healthz` answers and a normal phone sync stores its visit.
//!
//! Cases start from real replicas' well-formed requests and corrupt one thing each, so a case
//! fails for the reason it names and no other.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc, Value as AmValue};
use posync_model::doc::{self, DocMeta};
use posync_model::{DeviceId, DocId, DocKind, Heads, PosyanduId, Role, Scope, VisitId};
use posync_proto::{CONTENT_TYPE, DocPush, ErrorBody, Limits, PROTOCOL_VERSION, SyncRequest, encode, gzip};
use posync_server::TokenKeys;
use posync_server::auth::{AUDIENCE, ISSUER};
use posync_store::prelude::*;
use posync_store::{StoreStats, StoredMeta};
use posync_testkit::{DAY, Generator, Phone, TestServer, posyandu, user_for};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use time::Duration;

/// 28 bytes found by `scripts/fuzz` (fuzz/artifacts/merge_push/): a panic inside Automerge's
/// decoder. The server must answer it like any malformed input and keep serving.
const FUZZ_CRASHER: [u8; 28] = [
    0x85, 0x6f, 0x4a, 0x83, 0x04, 0x00, 0x00, 0x00, 0x03, 0x11, 0x00, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x23, 0x03, 0x04, 0x41, 0x00, 0x00, 0x00, 0x3d,
];

// ---- the table ----

/// One bad request and what the server must answer.
struct Case {
    name: &'static str,
    req: Raw,
    status: u16,
    code: &'static str,
    /// The document the error must name, when it is about one.
    doc: Option<DocId>,
}

impl Case {
    fn new(name: &'static str, req: Raw, status: u16, code: &'static str) -> Self {
        Self { name, req, status, code, doc: None }
    }

    fn naming(mut self, doc: DocId) -> Self {
        self.doc = Some(doc);
        self
    }
}

/// A raw HTTP POST: path, headers (lower-case names), body bytes exactly as sent.
#[derive(Clone)]
struct Raw {
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Raw {
    /// `body` to `/v1/sync` with the headers a phone sends.
    fn cbor(token: &str, body: Vec<u8>) -> Self {
        Self {
            path: "/v1/sync".into(),
            headers: vec![("content-type", CONTENT_TYPE.into()), ("authorization", format!("Bearer {token}"))],
            body,
        }
    }

    fn sync(token: &str, req: &SyncRequest) -> Self {
        Self::cbor(token, encode(req))
    }

    fn at(mut self, path: &str) -> Self {
        self.path = path.into();
        self
    }

    /// Set (or replace) a header.
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self.headers.push((name, value.into()));
        self
    }

    fn without(mut self, name: &'static str) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        self
    }

    fn gzipped(mut self) -> Self {
        self.body = gzip(&self.body);
        self.header("content-encoding", "gzip")
    }
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

async fn send(client: &reqwest::Client, url: &str, raw: &Raw) -> Result<Answer, String> {
    let mut rb = client.post(format!("{url}{}", raw.path));
    for (name, value) in &raw.headers {
        rb = rb.header(*name, value.as_str());
    }
    let resp = rb.body(raw.body.clone()).send().await.map_err(|e| format!("request failed: {e}"))?;
    let status = resp.status().as_u16();
    let content_type =
        resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let body = resp.bytes().await.map_err(|e| format!("reading the answer failed: {e}"))?.to_vec();
    Ok(Answer { status, content_type, body })
}

/// The answer is the case's status with a well-formed JSON error body carrying its code.
/// Returns the server's message, for the log.
fn check(case: &Case, answer: &Answer) -> Result<String, String> {
    let text = match std::str::from_utf8(&answer.body) {
        Ok(t) => t.chars().take(400).collect::<String>(),
        Err(_) => format!("<{} bytes, not text>", answer.body.len()),
    };
    if answer.status != case.status {
        return Err(format!("HTTP {} (expected {}), body {text}", answer.status, case.status));
    }
    if !answer.content_type.starts_with("application/json") {
        return Err(format!("Content-Type {:?}, expected JSON; body {text}", answer.content_type));
    }
    let body: Value = serde_json::from_slice(&answer.body).map_err(|e| format!("body is not JSON ({e}): {text}"))?;
    let code = body.pointer("/error/code").and_then(Value::as_str);
    if code != Some(case.code) {
        return Err(format!("error.code {code:?} (expected {:?}), body {text}", case.code));
    }
    let typed: ErrorBody =
        serde_json::from_value(body.clone()).map_err(|e| format!("not an ErrorBody ({e}): {text}"))?;
    if typed.error.message.is_empty() {
        return Err("error.message is empty".into());
    }
    if let Some(doc) = case.doc
        && typed.error.doc != Some(doc.to_string())
    {
        return Err(format!("error.doc {:?} (expected {doc})", typed.error.doc));
    }
    if case.code == "unsupported_protocol_version" && typed.error.supported_version != Some(PROTOCOL_VERSION) {
        return Err(format!("supported_version {:?} (expected {PROTOCOL_VERSION})", typed.error.supported_version));
    }
    Ok(typed.error.message)
}

/// Everything the server holds that a request could change: counts, and each document's
/// metadata (feed position and heads).
#[derive(Debug, PartialEq)]
struct Held {
    stats: StoreStats,
    docs: Vec<StoredMeta>,
}

async fn held(server: &TestServer, scope: &Scope) -> Held {
    Held {
        stats: SyncStore::stats(&server.store).await.expect("stats"),
        docs: SyncStore::list(&server.store, scope.clone()).await.expect("list"),
    }
}

/// Send every case, check each, and report all failures together.
async fn run(server: &TestServer, scope: &Scope, cases: &[Case]) {
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(60)).build().expect("client");
    let mut failures = Vec::new();
    for case in cases {
        let before = held(server, scope).await;
        let answer = send(&client, &server.url(), &case.req).await;
        let after = held(server, scope).await;
        let mut problems = Vec::new();
        let message = answer.and_then(|a| check(case, &a)).unwrap_or_else(|why| {
            problems.push(why);
            String::new()
        });
        if after != before {
            problems.push(format!("the store changed: {before:?} became {after:?}"));
        }
        let verdict = if problems.is_empty() { "ok" } else { "FAIL" };
        println!("{verdict:4} {} {:28} {:60} {message}", case.status, case.code, case.name);
        if !problems.is_empty() {
            failures.push(format!("{}: {}", case.name, problems.join("; ")));
        }
    }
    let mut names: Vec<_> = cases.iter().map(|c| c.name).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), cases.len(), "case names are unique");
    assert!(failures.is_empty(), "{} of {} cases failed:\n  {}", failures.len(), cases.len(), failures.join("\n  "));
}

// ---- tokens ----

fn token(server: &TestServer, device: DeviceId, role: Role, scope: &[PosyanduId]) -> String {
    server.token(device, role, scope)
}

/// A replica in a temp dir with a token issued at the server's clock.
fn phone(server: &TestServer, role: Role, scope: &[PosyanduId]) -> Phone {
    let mut phone = Phone::new(server, role, scope);
    phone.token = token(server, phone.replica.device(), role, scope);
    phone
}

/// Claims the server would accept for `device` (a kader), as JSON to tamper with.
fn claims(device: DeviceId, role: &str) -> Value {
    // The catalogue never advances the test servers' clocks: they stay at DAY_START.
    let now = posync_testkit::DAY_START;
    json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": user_for(device).to_string(), "dev": device.to_string(),
        "role": role, "iat": now, "nbf": now, "exp": now + 3600,
    })
}

/// RFC 4648 base64url without padding, as JWTs use.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | (u32::from(b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// A JWT with this header and these claims, signed with `secret` under an HMAC `alg`.
fn signed(header: &Value, claims: &Value, alg: jsonwebtoken::Algorithm, secret: &[u8]) -> String {
    let message = format!("{}.{}", b64url(header.to_string().as_bytes()), b64url(claims.to_string().as_bytes()));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &key, alg).expect("sign");
    format!("{message}.{signature}")
}

/// Claims signed with the server's own key: only the claims are wrong.
fn server_signed(server: &TestServer, claims: &Value) -> String {
    server.keys.sign_value(claims)
}

// ---- documents ----

/// A push of a document holding only its genesis change: valid on its own.
fn genesis_push(meta: &DocMeta) -> DocPush {
    let am = doc::genesis(meta, DeviceId::new_random().actor()).expect("genesis");
    DocPush {
        doc: meta.doc_id(),
        kind: meta.kind,
        posyandu: meta.posyandu.clone(),
        base: Vec::new(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: am.save(),
    }
}

/// A whole stored document as a push, declared as `kind` of `posyandu`.
fn whole_push(doc: DocId, am: &Automerge, kind: DocKind, posyandu: &PosyanduId) -> DocPush {
    DocPush {
        doc,
        kind,
        posyandu: posyandu.clone(),
        base: Vec::new(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: am.save(),
    }
}

/// A push of the changes `edit` makes on top of `base` (which the server holds), declared as
/// `kind` of `posyandu`.
fn edit_push(
    doc: DocId,
    base: &Automerge,
    kind: DocKind,
    posyandu: &PosyanduId,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
) -> DocPush {
    let mut am = base.fork();
    let mut tx = am.transaction();
    edit(&mut tx);
    tx.commit();
    let base_heads = base.get_heads();
    DocPush {
        doc,
        kind,
        posyandu: posyandu.clone(),
        base: Heads::new(base_heads.clone()).to_bytes(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: am.save_after(&base_heads),
    }
}

/// `bytes` with the first occurrence of `from` replaced by `to` (same length).
fn patched(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at = bytes.windows(from.len()).position(|w| w == from).expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + to.len()].copy_from_slice(to);
    out
}

/// A CBOR text string: major type 3 with the length inline (under 24 bytes).
fn cbor_text(s: &str) -> Vec<u8> {
    assert!(s.len() < 24);
    let mut out = vec![0x60 | s.len() as u8];
    out.extend_from_slice(s.as_bytes());
    out
}

/// Capture `n` visits in the session of `posyandu` on `date`; returns the session.
fn capture(phone: &mut Phone, posyandu: &PosyanduId, date: time::Date, n: usize, seed: u64) -> DocId {
    let mut seeded = Generator::new(seed);
    let session = phone.replica.start_session(posyandu, date).expect("session");
    for k in 0..n {
        phone.replica.record_visit(session, seeded.child_visit_on(date), 1000 + k as i64).expect("record");
    }
    session
}

/// The server still serves: health answers, and a phone's sync stores what it captured.
async fn still_serves(server: &TestServer, scope: &Scope, phone: &mut Phone, session: DocId, visits: u64) {
    let health = reqwest::get(format!("{}/healthz", server.url())).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200, "healthz answers after every bad request");
    let before = held(server, scope).await;
    phone.sync(server).await;
    let after = held(server, scope).await;
    assert_eq!(after.stats.visits, before.stats.visits + visits, "the phone's visits are stored");
    assert!(phone.replica.outbox().expect("outbox").is_empty(), "everything acknowledged");
    let stored = server.store.get(session).await.expect("get").expect("the session is stored");
    let local = Heads::new(phone.replica.doc(session).expect("doc").get_heads());
    assert_eq!(stored.meta.heads, local, "server heads equal the phone's");
}

// ---- the catalogue ----

#[tokio::test]
async fn every_bad_sync_request_is_refused_with_its_code_and_stores_nothing() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let q = posyandu("mawar-02");
    let both = [p.clone(), q.clone()];
    let scope = Scope::new(both.clone());

    // What the server already holds, so "nothing changed" is checked against real data:
    // a session of each posyandu.
    let mut seed_p = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let stored_p = capture(&mut seed_p, &p, DAY, 2, 1);
    seed_p.sync(&server).await;
    let mut seed_q = phone(&server, Role::Kader, std::slice::from_ref(&q));
    let stored_q = capture(&mut seed_q, &q, DAY, 1, 2);
    seed_q.sync(&server).await;
    let seeded = held(&server, &scope).await;
    assert_eq!((seeded.stats.docs, seeded.stats.visits), (2, 3));

    // The phone whose requests the cases corrupt: a new session (genesis and one visit) the
    // server has never seen.
    let mut kader = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let day = DAY - Duration::days(1);
    let session = capture(&mut kader, &p, day, 1, 3);
    let device = kader.replica.device();
    let tok = kader.token.clone();
    let valid = kader.replica.prepare_sync(&Limits::default()).expect("prepare");
    assert_eq!(valid.push.len(), 1);
    let push = valid.push[0].clone();
    let with = |pushes: Vec<DocPush>| SyncRequest { push: pushes, ..valid.clone() };
    let valid_bytes = encode(&valid);

    // Controls: the hand-made token machinery produces tokens the server accepts, so the
    // tampered ones below fail for their tampering alone.
    let client = reqwest::Client::new();
    let pull_only = Raw::sync(&server_signed(&server, &claims(device, "kader")), &SyncRequest::new(device, 0));
    let control = send(&client, &server.url(), &pull_only).await.expect("control");
    assert_eq!(
        control.status,
        200,
        "a hand-made token signed with the server key is accepted: {:?}",
        String::from_utf8_lossy(&control.body)
    );
    assert_eq!(held(&server, &scope).await, seeded);

    // Documents to corrupt the push with.
    let am = kader.replica.doc(session).expect("doc");
    assert_eq!(am.get_changes(&[]).len(), 2, "genesis and one visit");
    let genesis_heads =
        doc::genesis(&DocMeta::session(p.clone(), day), DeviceId::new_random().actor()).expect("genesis").get_heads();
    let not_posync = {
        let mut other = Automerge::new();
        let mut tx = other.transaction();
        tx.put(ROOT, "hello", "world").expect("put");
        tx.commit();
        other
    };
    let seed_p_doc = seed_p.replica.doc(stored_p).expect("doc");
    let seed_q_doc = seed_q.replica.doc(stored_q).expect("doc");
    let out_of_scope = genesis_push(&DocMeta::session(q.clone(), DAY - Duration::days(2)));
    let foreign_content =
        DocPush { posyandu: p.clone(), ..genesis_push(&DocMeta::session(q.clone(), DAY - Duration::days(4))) };
    let wrong_id = DocId::for_session(&p, DAY - Duration::days(30));
    // Edits of a stored document's identity fields, each a valid Automerge change on top of
    // what the server holds, declared as the stored kind and posyandu.
    let rehomed = edit_push(stored_p, &seed_p_doc, DocKind::Session, &p, |tx| {
        tx.put(ROOT, "posyandu", q.as_str()).expect("put");
    });
    let redated = edit_push(stored_p, &seed_p_doc, DocKind::Session, &p, |tx| {
        tx.put(ROOT, "date", "2026-01-01").expect("put");
    });
    let rekinded = edit_push(stored_p, &seed_p_doc, DocKind::Session, &p, |tx| {
        tx.put(ROOT, "kind", "registry").expect("put");
    });
    // A visit without the fields every visit has (sex, birth date, who recorded it).
    let half_visit = {
        let visits = match am.get(ROOT, "visits").expect("get") {
            Some((AmValue::Object(ObjType::Map), id)) => id,
            other => panic!("session without visits map: {other:?}"),
        };
        let mut bad = am.fork().with_actor(device.actor());
        let mut tx = bad.transaction();
        let v = tx.put_object(&visits, VisitId::new_random().to_string(), ObjType::Map).expect("put");
        tx.put(&v, "name", "Tanpa Data").expect("put");
        tx.commit();
        whole_push(session, &bad, DocKind::Session, &p)
    };
    let batch: Vec<DocPush> = (0..=Limits::default().push_docs_max as i64)
        .map(|d| genesis_push(&DocMeta::session(p.clone(), DAY - Duration::days(100 + d))))
        .collect();

    // Tokens.
    let reporter = phone(&server, Role::DistrictReporter, std::slice::from_ref(&p));
    // Scope comes from the server's data per user, so wider and empty scopes are other
    // devices (users); their requests carry their own device id.
    let wide_device = DeviceId::new_random();
    let wide = token(&server, wide_device, Role::Kader, &both);
    let no_scope_device = DeviceId::new_random();
    let no_scope = token(&server, no_scope_device, Role::Kader, &[]);
    let as_device = |d: DeviceId, req: SyncRequest| SyncRequest { device: d, ..req };
    let kader_claims = claims(device, "kader");
    let tampered = {
        // A real token whose claims are swapped for an admin's: the signature no longer fits.
        let real: Vec<&str> = tok.split('.').collect();
        format!("{}.{}.{}", real[0], b64url(claims(device, "district_admin").to_string().as_bytes()), real[2])
    };
    let kid = server.keys.active_kid().to_owned();
    let alg_none = format!(
        "{}.{}.",
        b64url(json!({"alg": "none", "typ": "JWT", "kid": kid}).to_string().as_bytes()),
        b64url(kader_claims.to_string().as_bytes())
    );
    let with_claim = |key: &str, value: Value| {
        let mut c = kader_claims.clone();
        c[key] = value;
        server_signed(&server, &c)
    };
    let without_exp = {
        let mut c = kader_claims.clone();
        c.as_object_mut().expect("object").remove("exp");
        server_signed(&server, &c)
    };

    // A gzip bomb: 40 MiB of zeros, small on the wire, far over body_decoded_bytes_max.
    let bomb = gzip(&vec![0u8; 40 * 1024 * 1024]);
    assert!(bomb.len() < Limits::default().body_bytes_max, "the bomb gets past the wire limit: {}", bomb.len());
    let mut random = vec![0u8; 4096];
    StdRng::seed_from_u64(7).fill(&mut random[..]);
    let gz = gzip(&valid_bytes);

    let sync = |req: &SyncRequest| Raw::sync(&tok, req);
    let cbor = |body: Vec<u8>| Raw::cbor(&tok, body);
    let bearer = |t: &str| Raw::sync(t, &valid);

    let cases = vec![
        // -- the body is not a v1 message --
        Case::new("random bytes", cbor(random.clone()), 400, "malformed_body"),
        Case::new("empty body", cbor(Vec::new()), 400, "malformed_body"),
        Case::new("JSON sent as CBOR", cbor(br#"{"v":1,"push":[]}"#.to_vec()), 400, "malformed_body"),
        Case::new("a CBOR integer, not a map", cbor(encode(&1u32)), 400, "malformed_body"),
        Case::new("v1 map of the wrong shape", cbor(encode(&json!({"v": 1, "hello": "world"}))), 400, "malformed_body"),
        Case::new(
            "v1 map whose device is text, not UUID bytes",
            cbor(encode(&json!({"v": 1, "device": "kader-7", "cursor": 0, "push": [], "page_bytes_max": null}))),
            400,
            "malformed_body",
        ),
        Case::new(
            "v1 request whose cursor is text",
            cbor(patched(
                &valid_bytes,
                &[cbor_text("cursor"), vec![0x00]].concat(),
                &[cbor_text("cursor"), vec![0x60]].concat(),
            )),
            400,
            "malformed_body",
        ),
        Case::new(
            "valid request truncated by 7 bytes",
            cbor(valid_bytes[..valid_bytes.len() - 7].to_vec()),
            400,
            "malformed_body",
        ),
        Case::new("valid request cut to 3 bytes", cbor(valid_bytes[..3].to_vec()), 400, "malformed_body"),
        Case::new(
            "valid request with trailing bytes",
            cbor([valid_bytes.as_slice(), &[0x00, 0x01, 0x02]].concat()),
            400,
            "malformed_body",
        ),
        Case::new(
            "posyandu id that fails validation",
            cbor(patched(&valid_bytes, &cbor_text("melati-01"), &cbor_text("Melati 01"))),
            400,
            "malformed_body",
        ),
        Case::new(
            "unknown document kind",
            cbor(patched(&valid_bytes, &cbor_text("session"), &cbor_text("meeting"))),
            400,
            "malformed_body",
        ),
        Case::new("gzip of random bytes", cbor(random.clone()).gzipped(), 400, "malformed_body"),
        // -- another protocol version --
        Case::new("body with v = 2", sync(&SyncRequest { v: 2, ..valid.clone() }), 400, "unsupported_protocol_version"),
        Case::new("body with v = 0", sync(&SyncRequest { v: 0, ..valid.clone() }), 400, "unsupported_protocol_version"),
        Case::new(
            "v = 2 in a body shaped nothing like v1",
            cbor(encode(&json!({"v": 2, "changes": [1, 2, 3]}))),
            400,
            "unsupported_protocol_version",
        ),
        Case::new("POST /v2/sync", sync(&valid).at("/v2/sync"), 400, "unsupported_protocol_version"),
        // -- framing: size, encoding, media type --
        Case::new("gzip bomb (40 MiB of zeros)", cbor(bomb).header("content-encoding", "gzip"), 413, "body_too_large"),
        Case::new(
            "Content-Encoding br",
            cbor(valid_bytes.clone()).header("content-encoding", "br"),
            415,
            "unsupported_encoding",
        ),
        Case::new(
            "Content-Encoding deflate",
            cbor(valid_bytes.clone()).header("content-encoding", "deflate"),
            415,
            "unsupported_encoding",
        ),
        Case::new(
            "Content-Encoding gzip on bytes that are not gzip",
            cbor(valid_bytes.clone()).header("content-encoding", "gzip"),
            415,
            "unsupported_encoding",
        ),
        Case::new(
            "truncated gzip",
            cbor(gz[..gz.len() / 2].to_vec()).header("content-encoding", "gzip"),
            415,
            "unsupported_encoding",
        ),
        Case::new(
            "Content-Type application/json",
            sync(&valid).header("content-type", "application/json"),
            415,
            "unsupported_media_type",
        ),
        Case::new(
            "Content-Type application/octet-stream",
            sync(&valid).header("content-type", "application/octet-stream"),
            415,
            "unsupported_media_type",
        ),
        Case::new("no Content-Type", sync(&valid).without("content-type"), 415, "unsupported_media_type"),
        // -- the batch --
        Case::new("more docs than push_docs_max", sync(&with(batch)), 413, "batch_too_large"),
        Case::new(
            "the same doc twice in one push",
            sync(&with(vec![push.clone(), push.clone()])),
            400,
            "malformed_body",
        )
        .naming(session),
        // -- a document's changes --
        Case::new(
            "changes are garbage bytes",
            sync(&with(vec![DocPush { changes: random.clone(), ..push.clone() }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        Case::new(
            "changes that once made Automerge's decoder panic (fuzz crasher)",
            sync(&with(vec![DocPush { changes: FUZZ_CRASHER.to_vec(), ..push.clone() }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        Case::new(
            "changes are Automerge but not a posync document",
            sync(&with(vec![DocPush {
                heads: Heads::new(not_posync.get_heads()).to_bytes(),
                changes: not_posync.save(),
                ..push.clone()
            }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        // The store parses heads before the changes and reports a bad length as malformed changes.
        Case::new(
            "heads are 31 bytes",
            sync(&with(vec![DocPush { heads: push.heads[..31].to_vec(), ..push.clone() }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        Case::new(
            "heads name a hash not in the changes",
            sync(&with(vec![DocPush { heads: vec![0xAB; 32], ..push.clone() }])),
            400,
            "heads_mismatch",
        )
        .naming(session),
        Case::new(
            "only the changes after genesis of a doc the server never saw",
            sync(&with(vec![DocPush {
                base: Heads::new(genesis_heads.clone()).to_bytes(),
                changes: am.save_after(&genesis_heads),
                ..push.clone()
            }])),
            409,
            "missing_dependencies",
        )
        .naming(session),
        Case::new(
            "declared posyandu (in scope) differs from the content's",
            Raw::sync(&wide, &as_device(wide_device, with(vec![DocPush { posyandu: q.clone(), ..push.clone() }]))),
            409,
            "doc_mismatch",
        )
        .naming(session),
        Case::new(
            "another posyandu's content declared as one's own",
            sync(&with(vec![foreign_content.clone()])),
            409,
            "doc_mismatch",
        )
        .naming(foreign_content.doc),
        Case::new(
            "doc id is not the id its content derives",
            sync(&with(vec![DocPush { doc: wrong_id, ..push.clone() }])),
            409,
            "doc_mismatch",
        )
        .naming(wrong_id),
        Case::new(
            "declared kind differs from the content's",
            sync(&with(vec![DocPush { kind: DocKind::Registry, ..push.clone() }])),
            409,
            "doc_mismatch",
        )
        .naming(session),
        Case::new(
            "a stored doc pushed as another kind",
            sync(&with(vec![whole_push(stored_p, &seed_p_doc, DocKind::Registry, &p)])),
            409,
            "doc_mismatch",
        )
        .naming(stored_p),
        Case::new(
            "a stored doc declared under another posyandu (both in scope)",
            Raw::sync(
                &wide,
                &as_device(wide_device, with(vec![whole_push(stored_p, &seed_p_doc, DocKind::Session, &q)])),
            ),
            409,
            "doc_mismatch",
        )
        .naming(stored_p),
        Case::new("an edit moving a stored doc to another posyandu", sync(&with(vec![rehomed])), 409, "doc_mismatch")
            .naming(stored_p),
        Case::new("an edit changing a stored session's date", sync(&with(vec![redated])), 409, "doc_mismatch")
            .naming(stored_p),
        Case::new("an edit changing a stored doc's kind", sync(&with(vec![rekinded])), 409, "doc_mismatch")
            .naming(stored_p),
        Case::new("a visit missing its required fields", sync(&with(vec![half_visit])), 400, "malformed_changes")
            .naming(session),
        // -- authorisation: the token is good, the request is not allowed --
        Case::new(
            "a valid push and one out-of-scope doc",
            sync(&with(vec![push.clone(), out_of_scope.clone()])),
            403,
            "forbidden",
        )
        .naming(out_of_scope.doc),
        Case::new(
            "another posyandu's stored doc declared as one's own",
            sync(&with(vec![push.clone(), whole_push(stored_q, &seed_q_doc, DocKind::Session, &p)])),
            403,
            "forbidden",
        )
        .naming(stored_q),
        Case::new(
            "a token with an empty scope pushes",
            Raw::sync(&no_scope, &as_device(no_scope_device, valid.clone())),
            403,
            "forbidden",
        )
        .naming(session),
        Case::new(
            "a district reporter pushes",
            Raw::sync(&reporter.token, &SyncRequest { device: reporter.replica.device(), ..valid.clone() }),
            403,
            "forbidden",
        ),
        Case::new(
            "request device differs from the token's",
            sync(&SyncRequest { device: DeviceId::new_random(), ..valid.clone() }),
            403,
            "device_mismatch",
        ),
        Case::new("another kader's token", Raw::sync(&seed_p.token, &valid), 403, "device_mismatch"),
        // -- authentication --
        Case::new("no Authorization header", sync(&valid).without("authorization"), 401, "unauthenticated"),
        Case::new(
            "Basic instead of Bearer",
            sync(&valid).header("authorization", "Basic a2FkZXI6cGFzc3dvcmQ="),
            401,
            "unauthenticated",
        ),
        Case::new(
            "the raw token without Bearer",
            sync(&valid).header("authorization", tok.clone()),
            401,
            "unauthenticated",
        ),
        Case::new("empty Bearer token", sync(&valid).header("authorization", "Bearer "), 401, "unauthenticated"),
        Case::new("Bearer garbage", bearer("not.a.jwt"), 401, "unauthenticated"),
        Case::new(
            "token signed with another key",
            bearer(
                &TokenKeys::from_seed([9; 32])
                    .issue(&user_for(device), device, Role::Kader, server.clock.now(), 3600)
                    .token,
            ),
            401,
            "unauthenticated",
        ),
        Case::new(
            "expired token",
            bearer(&server.keys.issue(&user_for(device), device, Role::Kader, server.clock.now() - 10_000, 60).token),
            401,
            "unauthenticated",
        ),
        Case::new(
            "token not valid yet",
            bearer(&server.keys.issue(&user_for(device), device, Role::Kader, server.clock.now() + 10_000, 3600).token),
            401,
            "unauthenticated",
        ),
        Case::new("alg none", bearer(&alg_none), 401, "unauthenticated"),
        Case::new(
            "HS256 keyed with the server's public key (algorithm switching)",
            bearer(&signed(
                &json!({"alg": "HS256", "typ": "JWT", "kid": kid}),
                &kader_claims,
                jsonwebtoken::Algorithm::HS256,
                &server.keys.public_key(),
            )),
            401,
            "unauthenticated",
        ),
        Case::new("claims widened after signing", bearer(&tampered), 401, "unauthenticated"),
        Case::new("wrong audience", bearer(&with_claim("aud", json!("posync-admin"))), 401, "unauthenticated"),
        Case::new("wrong issuer", bearer(&with_claim("iss", json!("someone-else"))), 401, "unauthenticated"),
        Case::new("dev is not a device id", bearer(&with_claim("dev", json!("kader-7"))), 401, "unauthenticated"),
        Case::new("subject is another user", bearer(&with_claim("sub", json!("kader-7"))), 401, "unauthenticated"),
        Case::new(
            "role claim differs from the user's role",
            bearer(&with_claim("role", json!("district_admin"))),
            401,
            "unauthenticated",
        ),
        Case::new("no exp claim", bearer(&without_exp), 401, "unauthenticated"),
    ];
    run(&server, &scope, &cases).await;

    // Nothing above stored the kader's session; its own sync does.
    assert!(server.store.get(session).await.expect("get").is_none());
    still_serves(&server, &scope, &mut kader, session, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn bodies_over_the_size_limits_are_refused_before_decoding() {
    let limits = Limits { body_bytes_max: 64 * 1024, body_decoded_bytes_max: 256 * 1024, ..Limits::default() };
    let server = TestServer::start_with(limits).await;
    let p = posyandu("melati-01");
    let scope = Scope::new([p.clone()]);
    let mut seed = phone(&server, Role::Kader, std::slice::from_ref(&p));
    capture(&mut seed, &p, DAY, 2, 1);
    seed.sync(&server).await;

    let mut kader = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let session = capture(&mut kader, &p, DAY - Duration::days(1), 1, 2);
    let valid = kader.replica.prepare_sync(&limits).expect("prepare");
    let push = valid.push[0].clone();
    // A well-formed v1 body whose one document carries `n` bytes of changes.
    let carrying = |n: usize, byte: u8| {
        encode(&SyncRequest { push: vec![DocPush { changes: vec![byte; n], ..push.clone() }], ..valid.clone() })
    };
    let framing = carrying(60_000, 0xA5).len() - 60_000;
    let at_limit = carrying(limits.body_bytes_max - framing, 0xA5);
    assert_eq!(at_limit.len(), limits.body_bytes_max);
    let over_by_one = carrying(limits.body_bytes_max + 1 - framing, 0xA5);
    assert_eq!(over_by_one.len(), limits.body_bytes_max + 1);
    let big = carrying(100 * 1024, 0xA5);
    let inflating = gzip(&carrying(300 * 1024, 0));
    assert!(inflating.len() < limits.body_bytes_max, "small on the wire: {}", inflating.len());
    // Byte strings of 64 KiB and more have a longer CBOR length prefix.
    let framing_long = carrying(200_000, 0).len() - 200_000;
    let inflating_to_limit = carrying(limits.body_decoded_bytes_max - framing_long, 0);
    assert_eq!(inflating_to_limit.len(), limits.body_decoded_bytes_max);

    let tok = kader.token.clone();
    let cases = vec![
        Case::new("100 KiB body over a 64 KiB limit", Raw::cbor(&tok, big), 413, "body_too_large"),
        Case::new("one byte over body_bytes_max", Raw::cbor(&tok, over_by_one), 413, "body_too_large"),
        // The control: a body of exactly the limit is read and decoded, and fails on its
        // garbage changes instead.
        Case::new("exactly body_bytes_max (garbage changes)", Raw::cbor(&tok, at_limit), 400, "malformed_changes")
            .naming(session),
        Case::new(
            "gzip'd well-formed body inflating past body_decoded_bytes_max",
            Raw::cbor(&tok, inflating).header("content-encoding", "gzip"),
            413,
            "body_too_large",
        ),
        Case::new(
            "gzip'd body inflating to exactly body_decoded_bytes_max (garbage changes)",
            Raw::cbor(&tok, gzip(&inflating_to_limit)).header("content-encoding", "gzip"),
            400,
            "malformed_changes",
        )
        .naming(session),
    ];
    run(&server, &scope, &cases).await;
    still_serves(&server, &scope, &mut kader, session, 1).await;
    server.stop().await;
}

// ---- regressions: bugs this catalogue found, fixed ----

#[tokio::test]
async fn bytes_after_the_gzip_stream_are_refused() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let scope = Scope::new([p.clone()]);
    let mut kader = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let session = capture(&mut kader, &p, DAY, 1, 3);
    let valid = kader.replica.prepare_sync(&Limits::default()).expect("prepare");
    // An identity body with trailing bytes is malformed; the same bytes after a gzip stream are
    // not part of any gzip member and must not be silently dropped either.
    let body = [gzip(&encode(&valid)), b"\0garbage".to_vec()].concat();
    let cases = vec![Case::new(
        "garbage after the gzip stream",
        Raw::cbor(&kader.token, body).header("content-encoding", "gzip"),
        415,
        "unsupported_encoding",
    )];
    run(&server, &scope, &cases).await;
    still_serves(&server, &scope, &mut kader, session, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_wrong_method_gets_a_json_error_body() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let kader = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let body = encode(&SyncRequest::new(kader.replica.device(), 0));
    let client = reqwest::Client::new();
    for method in [reqwest::Method::GET, reqwest::Method::PUT, reqwest::Method::DELETE] {
        let resp = client
            .request(method.clone(), format!("{}/v1/sync", server.url()))
            .bearer_auth(&kader.token)
            .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body.clone())
            .send()
            .await
            .expect("send");
        assert_eq!(resp.status().as_u16(), 405, "{method}");
        let ctype = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let bytes = resp.bytes().await.expect("body");
        assert!(
            ctype.as_deref().is_some_and(|c| c.starts_with("application/json")),
            "{method}: Content-Type {ctype:?}"
        );
        let parsed = serde_json::from_slice::<ErrorBody>(&bytes);
        assert!(
            parsed.is_ok(),
            "{method}: every error has a JSON ErrorBody, got {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn testkit_tokens_verify_whatever_the_test_clock_says() {
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let kader = Phone::kader(&server, &p);
    let device = kader.replica.device();
    let client = reqwest::Client::new();
    // A day and a half later by the server's clock, a freshly issued token is refused as "not
    // yet valid" because jsonwebtoken checks nbf/exp against SystemTime, not the server's Clock.
    server.clock.advance(36 * 3600);
    let token = server.token(device, Role::Kader, std::slice::from_ref(&p));
    let answer = send(&client, &server.url(), &Raw::sync(&token, &SyncRequest::new(device, 0))).await.expect("send");
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    server.stop().await;
}

// ---- hostile Automerge bytes (issue #12): bounded before Automerge decodes them ----

/// A push of changes by `actor` made by `edit` on top of `base` (which the server holds).
fn authored_push(
    doc: DocId,
    base: &Automerge,
    posyandu: &PosyanduId,
    actor: automerge::ActorId,
    edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>),
) -> DocPush {
    let mut am = base.fork().with_actor(actor);
    let mut tx = am.transaction();
    edit(&mut tx);
    tx.commit();
    let base_heads = base.get_heads();
    DocPush {
        doc,
        kind: DocKind::Session,
        posyandu: posyandu.clone(),
        base: Heads::new(base_heads.clone()).to_bytes(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: am.save_after(&base_heads),
    }
}

#[tokio::test]
async fn hostile_automerge_bytes_are_refused_whole_and_the_server_keeps_serving() {
    use posync_testkit::hostile;
    let server = TestServer::start().await;
    let p = posyandu("melati-01");
    let scope = Scope::new([p.clone()]);
    // A colleague's session the server holds, which the cases try to edit or extend.
    let mut colleague = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let stored = capture(&mut colleague, &p, DAY, 2, 1);
    colleague.sync(&server).await;
    let stored_doc = colleague.replica.doc(stored).expect("doc");
    let stored_heads = Heads::new(stored_doc.get_heads());

    let mut kader = phone(&server, Role::Kader, std::slice::from_ref(&p));
    let day = DAY - Duration::days(1);
    let session = capture(&mut kader, &p, day, 1, 3);
    let me = kader.replica.device().actor();
    let valid = kader.replica.prepare_sync(&Limits::default()).expect("prepare");
    let push = valid.push[0].clone();
    let with = |pushes: Vec<DocPush>| SyncRequest { push: pushes, ..valid.clone() };
    let sync = |req: &SyncRequest| Raw::sync(&kader.token, req);
    let onto_stored = |changes: Vec<u8>| DocPush {
        doc: stored,
        kind: DocKind::Session,
        posyandu: p.clone(),
        base: stored_heads.to_bytes(),
        heads: stored_heads.to_bytes(),
        changes,
    };

    // 256 MiB of zeros behind a few hundred KB; the body itself gzips to a few KB.
    let change_bomb = hostile::compressed_change_bomb(256 << 20);
    let column_bomb = hostile::document_column_bomb(256 << 20);
    let bomb_body =
        |changes: Vec<u8>| Raw::cbor(&kader.token, encode(&with(vec![DocPush { changes, ..push.clone() }]))).gzipped();
    let big_change = hostile::change_with_ops(&stored_doc, me.clone(), 150_000);
    let big_push = DocPush {
        heads: Heads::new(big_change.get_heads()).to_bytes(),
        changes: big_change.save_after(stored_heads.as_slice()),
        ..onto_stored(Vec::new())
    };
    // A document within the per-change limit but over the document budget: 110 changes of
    // 1,000 operations each on a new session.
    let grown = {
        let mut am = kader.replica.doc(session).expect("doc");
        am.set_actor(me.clone());
        for round in 0..110 {
            let mut tx = am.transaction();
            for i in 0..1_000 {
                tx.put(ROOT, format!("r{round}k{i}"), i as i64).expect("put");
            }
            tx.commit();
        }
        whole_push(session, &am, DocKind::Session, &p)
    };
    let colleague_actor = colleague.replica.device().actor();
    let by_colleague = authored_push(stored, &stored_doc, &p, colleague_actor, |tx| {
        tx.put(ROOT, "forged", "by a colleague's device").expect("put");
    });
    let by_server = authored_push(stored, &stored_doc, &p, doc::server_actor("posync"), |tx| {
        tx.put(ROOT, "forged", "by the server").expect("put");
    });
    let forged_genesis = {
        let meta = DocMeta::session(p.clone(), DAY - Duration::days(9));
        let mut actor = b"posync-genesis:".to_vec();
        actor.extend_from_slice(meta.doc_id().as_bytes());
        let mut am = Automerge::new().with_actor(automerge::ActorId::from(actor));
        let mut tx = am.transaction();
        tx.put(ROOT, "schema", 1).expect("put");
        tx.put(ROOT, "kind", "session").expect("put");
        tx.put(ROOT, "posyandu", p.as_str()).expect("put");
        tx.put(ROOT, "date", posync_model::record::format_date(DAY - Duration::days(9))).expect("put");
        tx.put_object(ROOT, "visits", ObjType::Map).expect("put");
        tx.put(ROOT, "extra", "not in the genesis").expect("put");
        tx.commit();
        whole_push(meta.doc_id(), &am, DocKind::Session, &p)
    };

    let cases = vec![
        Case::new("a compressed change inflating to 256 MiB", bomb_body(change_bomb), 413, "changes_too_large")
            .naming(session),
        Case::new(
            "a document chunk whose column inflates to 256 MiB",
            bomb_body(column_bomb),
            413,
            "changes_too_large",
        )
        .naming(session),
        Case::new(
            "Automerge magic followed by garbage",
            sync(&with(vec![DocPush { changes: hostile::magic_then_garbage(), ..push.clone() }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        Case::new(
            "valid changes followed by garbage",
            sync(&with(vec![DocPush { changes: hostile::valid_then_garbage(&push.changes), ..push.clone() }])),
            400,
            "malformed_changes",
        )
        .naming(session),
        Case::new(
            "garbage bytes on top of a stored document",
            sync(&with(vec![onto_stored(vec![0x5a; 300])])),
            400,
            "malformed_changes",
        )
        .naming(stored),
        Case::new(
            "magic and garbage on top of a stored document",
            sync(&with(vec![onto_stored(hostile::magic_then_garbage())])),
            400,
            "malformed_changes",
        )
        .naming(stored),
        Case::new("one change of 150,000 operations", sync(&with(vec![big_push])), 413, "changes_too_large")
            .naming(stored),
        Case::new(
            "a document of 110,000 operations in small changes",
            sync(&with(vec![grown])),
            413,
            "document_too_large",
        )
        .naming(session),
        Case::new("a new change by a colleague's device", sync(&with(vec![by_colleague])), 403, "foreign_author")
            .naming(stored),
        Case::new("a new change by the server's actor", sync(&with(vec![by_server])), 403, "foreign_author")
            .naming(stored),
        Case::new(
            "a genesis change that is not the expected one",
            sync(&with(vec![forged_genesis.clone()])),
            403,
            "foreign_author",
        )
        .naming(forged_genesis.doc),
    ];
    run(&server, &scope, &cases).await;
    still_serves(&server, &scope, &mut kader, session, 1).await;
    server.stop().await;
}

// ---- credential routes: rate limits; headers ----

async fn post_json(client: &reqwest::Client, url: &str, body: Value) -> (u16, Option<String>, Value) {
    let resp = client.post(url).json(&body).send().await.expect("send");
    let status = resp.status().as_u16();
    let retry = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
    (status, retry, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn credential_routes_are_rate_limited_per_address_per_code_and_per_device() {
    let client = reqwest::Client::new();
    let device = DeviceId::new_random();
    let enrol = |code: &str| json!({"code": code, "device": device, "label": "HP"});

    // Per address: the sixth request in a minute is refused, whatever it carries.
    let limits = Limits { auth_per_address_per_minute: 5, ..Limits::default() };
    let server = TestServer::start_with(limits).await;
    let url = format!("{}/v1/auth/enrol", server.url());
    for i in 0..5 {
        let (status, _, body) = post_json(&client, &url, enrol(&format!("AAAA-BBBB-CCC{i}"))).await;
        assert_eq!((status, body["error"]["code"].as_str()), (401, Some("invalid_credential")), "attempt {i}");
    }
    let (status, retry, body) = post_json(&client, &url, enrol("AAAA-BBBB-CCCZ")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(retry.as_deref().and_then(|r| r.parse::<u64>().ok()).is_some_and(|s| s >= 1), "Retry-After {retry:?}");
    let refresh = format!("{}/v1/auth/token", server.url());
    let (status, _, _) = post_json(&client, &refresh, json!({"device": device, "refresh_token": "psr_x"})).await;
    assert_eq!(status, 429, "the address limit covers every credential route");
    let health = reqwest::get(format!("{}/healthz", server.url())).await.expect("healthz");
    assert_eq!(health.status().as_u16(), 200, "other routes are not limited");
    server.stop().await;

    // Per code prefix: a fourth guess at codes starting alike is refused; other codes are not.
    let limits = Limits { enrol_per_code_prefix_per_hour: 3, ..Limits::default() };
    let server = TestServer::start_with(limits).await;
    let url = format!("{}/v1/auth/enrol", server.url());
    for suffix in ["1111-2222", "3333-4444", "5555-6666"] {
        let (status, _, _) = post_json(&client, &url, enrol(&format!("QRST-{suffix}"))).await;
        assert_eq!(status, 401);
    }
    let (status, _, body) = post_json(&client, &url, enrol("qrst-7777-8888")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (429, Some("rate_limited")), "case and dashes do not matter");
    let (status, _, _) = post_json(&client, &url, enrol("WXYZ-1111-2222")).await;
    assert_eq!(status, 401, "another prefix is still tried");

    // Per device: refreshes beyond the minute's allowance.
    let limit = Limits::default().refresh_per_device_per_minute;
    let refresh = format!("{}/v1/auth/token", server.url());
    for _ in 0..limit {
        let (status, _, _) = post_json(&client, &refresh, json!({"device": device, "refresh_token": "psr_x"})).await;
        assert_eq!(status, 401);
    }
    let (status, _, _) = post_json(&client, &refresh, json!({"device": device, "refresh_token": "psr_x"})).await;
    assert_eq!(status, 429);
    server.stop().await;
}

#[tokio::test]
async fn the_admin_page_runs_no_inline_code_and_nothing_is_sniffed() {
    let server = TestServer::start().await;
    let client = reqwest::Client::new();
    for (path, ctype) in [
        ("/admin", "text/html"),
        ("/admin/main.js", "text/javascript"),
        ("/admin/conflicts.js", "text/javascript"),
        ("/admin/child.js", "text/javascript"),
        ("/admin/app.css", "text/css"),
    ] {
        let resp = client.get(format!("{}{path}", server.url())).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers();
        let csp = h.get("content-security-policy").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(h.get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"), "{path}");
        assert!(h.get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|c| c.starts_with(ctype)));
        let body = resp.text().await.expect("body");
        if path == "/admin" {
            assert!(!body.contains("<script>") && !body.contains("<style>"), "no inline script or style");
            assert!(!has_inline_handler(&body), "no inline event handlers");
        }
    }
    let missing = client.get(format!("{}/admin/..%2Fsecret.js", server.url())).send().await.expect("send");
    assert_eq!(missing.status().as_u16(), 404, "only the app's own files are served");
    for path in ["/healthz", "/no/such/route"] {
        let resp = client.get(format!("{}{path}", server.url())).send().await.expect("send");
        assert_eq!(resp.headers().get("x-content-type-options").and_then(|v| v.to_str().ok()), Some("nosniff"));
    }
    server.stop().await;
}

/// Whether an HTML text has an inline event handler attribute (`onclick="…"` and the like).
fn has_inline_handler(html: &str) -> bool {
    html.split('<').any(|tag| {
        tag.split_whitespace().skip(1).any(|attr| {
            let name = attr.split('=').next().unwrap_or_default();
            attr.contains('=')
                && name.len() > 2
                && name.starts_with("on")
                && name.chars().all(|c| c.is_ascii_lowercase())
        })
    })
}

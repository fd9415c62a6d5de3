use posync_model::{DeviceId, DocId, DocKind, PosyanduId};
use serde::{Deserialize, Serialize};

/// The protocol version this build speaks. Carried in every body as `v`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Device to server: "here is what I changed; send me what changed since `cursor`".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncRequest {
    pub v: u32,
    pub device: DeviceId,
    /// Position in the server's change feed up to which this device has durably applied
    /// every document in its scope. 0 on first sync.
    pub cursor: u64,
    /// Documents with local changes the server has not acknowledged.
    pub push: Vec<DocPush>,
    /// Upper bound on the pulled page the device wants (the server caps it further).
    pub page_bytes_max: Option<u32>,
    /// [`Scope::digest`](posync_model::Scope::digest) of the scope the device's cursor was
    /// obtained under (the last `scope` the server sent it). Absent before the first answer.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "opt_bytes")]
    pub scope_digest: Option<Vec<u8>>,
    /// `false`: only push (or probe) in this request, pull nothing: the answer is just the
    /// acknowledgements, small enough to arrive over a link that cuts long answers. Absent:
    /// `true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<bool>,
    /// `true`: the device takes a document larger than its page in pieces (a `DocPull` with
    /// `piece: true`), and documents sent ahead of the feed walk (the day's sessions and
    /// the registries, by the server's date), and reports what it then holds with an empty
    /// push in its next request. Absent: `false`, every pulled document comes whole, in
    /// feed order.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pieces: Option<bool>,
    /// The server store's incarnation the device last saw ([`SyncResponse::store`]). Absent
    /// on a device's first sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<u32>,
    /// Documents the device no longer holds (it keeps a window of recent sessions and
    /// dropped these, each fully acknowledged): the server forgets that it holds them, so a
    /// later change to one comes whole instead of as changes after what it dropped. At most
    /// `push_docs_max`. Absent: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped: Vec<DocId>,
}

/// One document's new changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPush {
    pub doc: DocId,
    /// What the device believes the document is. Checked against the server's own metadata
    /// for known documents; recorded (after a scope check) for new ones.
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    /// Heads the server has acknowledged for this document (concatenated 32-byte hashes);
    /// `changes` holds everything after them. Empty for a document the server has never seen.
    #[serde(with = "serde_bytes")]
    pub base: Vec<u8>,
    /// The device's heads once `changes` are applied: what the server will acknowledge.
    #[serde(with = "serde_bytes")]
    pub heads: Vec<u8>,
    /// Concatenated raw Automerge changes (`Automerge::save_after(base)`).
    #[serde(with = "serde_bytes")]
    pub changes: Vec<u8>,
}

/// Server to device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncResponse {
    pub v: u32,
    /// Pushed documents the server has durably committed, with the heads it now knows the
    /// device has. Sent only after the commit.
    pub acks: Vec<DocAck>,
    /// Documents in scope changed after the request's cursor (this page of them).
    pub docs: Vec<DocPull>,
    /// The caller's whole scope (sorted posyandu ids), sent only when the request's
    /// `scope_digest` differs from it. The device then drops every document outside it
    /// (keeping any with unacknowledged changes), starts over from cursor 0 if the scope
    /// gained a posyandu, and remembers it. With a cursor above 0 and a changed scope the
    /// server sends no documents in the same answer (`more` is true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<PosyanduId>>,
    /// The cursor to store once this page is applied, and to send next time.
    pub cursor: u64,
    /// Another page is waiting: sync again right away.
    pub more: bool,
    /// The store's incarnation, sent only when the request's `store` differs from it. It
    /// changes when the server was restored from a backup: a device that saw another one
    /// re-sends every document it holds (the restored server may lack what it acknowledged)
    /// and starts over from cursor 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocAck {
    pub doc: DocId,
    #[serde(with = "serde_bytes")]
    pub heads: Vec<u8>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocPull {
    pub doc: DocId,
    pub kind: DocKind,
    pub posyandu: PosyanduId,
    /// The server's heads for this document after this page: once applied, the device has them.
    #[serde(with = "serde_bytes")]
    pub heads: Vec<u8>,
    /// Changes the device lacks: `save_after(known)` where `known` are heads the device has
    /// acknowledged (through its cursor or its pushes), or the whole saved document.
    #[serde(with = "serde_bytes")]
    pub changes: Vec<u8>,
    /// Only the first changes after `known`, in causal order, because the document is larger
    /// than the page (sent only to a device that asked for `pieces`). `heads` are then the
    /// heads the device holds once this piece is applied. The cursor does not pass the
    /// document until its last piece; the device reports `heads` in an empty push (a probe)
    /// in its next request, and the server sends the next piece after them. Absent: `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub piece: bool,
}

impl SyncRequest {
    pub fn new(device: DeviceId, cursor: u64) -> Self {
        Self {
            store: None,
            v: PROTOCOL_VERSION,
            device,
            cursor,
            push: Vec::new(),
            page_bytes_max: None,
            scope_digest: None,
            pull: None,
            pieces: None,
            dropped: Vec::new(),
        }
    }
}

/// `Option<Vec<u8>>` as an optional CBOR byte string (serde_bytes does the inner part).
mod opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(b) => serde_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<serde_bytes::ByteBuf>::deserialize(d).map(|o| o.map(serde_bytes::ByteBuf::into_vec))
    }
}

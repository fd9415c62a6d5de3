//! The phone treats pulled bytes like the server treats pushed ones (issue #12): bounded
//! before Automerge decodes them, and never "applied" when they did not load whole. And the
//! reference client never sends what it knows the server refuses.

use automerge::ReadDoc;
use posync_model::doc::{self, DocMeta};
use posync_model::{DocKind, Heads};
use posync_proto::{DocPull, Limits, PROTOCOL_VERSION, SyncResponse};
use posync_replica::{Replica, ReplicaError};
use posync_testkit::{DAY, Generator, hostile, posyandu};

fn answer(pull: DocPull) -> SyncResponse {
    SyncResponse {
        store: None,
        v: PROTOCOL_VERSION,
        acks: Vec::new(),
        docs: vec![pull],
        scope: None,
        cursor: 7,
        more: false,
    }
}

#[test]
fn pulled_inflation_bombs_and_partial_bytes_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let mut phone = Replica::open(dir.path().join("p.sqlite")).expect("open");
    let p = posyandu("melati-01");
    let meta = DocMeta::session(p.clone(), DAY);
    let genesis = doc::genesis(&meta, phone.device().actor()).expect("genesis");
    let pull = |changes: Vec<u8>, heads: &Heads| DocPull {
        doc: meta.doc_id(),
        kind: DocKind::Session,
        posyandu: p.clone(),
        heads: heads.to_bytes(),
        changes,
        piece: false,
    };
    let genesis_heads = Heads::new(genesis.get_heads());
    for (name, changes) in [
        ("a compressed change inflating to 256 MiB", hostile::compressed_change_bomb(256 << 20)),
        ("a document column inflating to 256 MiB", hostile::document_column_bomb(256 << 20)),
        ("valid bytes followed by garbage", hostile::valid_then_garbage(&genesis.save())),
        ("the magic followed by garbage", hostile::magic_then_garbage()),
    ] {
        let result = phone.apply_response(&answer(pull(changes, &genesis_heads)));
        assert!(matches!(result, Err(ReplicaError::BadResponse(_))), "{name}: {result:?}");
        assert!(phone.doc_ids().expect("ids").is_empty(), "{name}: nothing applied");
        assert_eq!(phone.cursor().expect("cursor"), 0, "{name}: the cursor did not move");
    }
    // Heads the pulled bytes do not produce: not applied either.
    let result = phone.apply_response(&answer(pull(genesis.save(), &Heads::new(vec![automerge::ChangeHash([7; 32])]))));
    assert!(matches!(result, Err(ReplicaError::BadResponse(_))), "{result:?}");
    // The real thing applies.
    phone.apply_response(&answer(pull(genesis.save(), &genesis_heads))).expect("a whole document applies");
    assert_eq!(phone.doc_ids().expect("ids"), vec![meta.doc_id()]);
    assert_eq!(phone.cursor().expect("cursor"), 7);
}

#[test]
fn a_document_over_the_servers_budget_is_kept_on_the_phone_and_not_sent() {
    let dir = tempfile::tempdir().expect("dir");
    let mut phone = Replica::open(dir.path().join("p.sqlite")).expect("open");
    let p = posyandu("melati-01");
    let big = phone.start_session(&p, DAY).expect("session");
    let small = phone.start_session(&p, DAY - time::Duration::days(7)).expect("session");
    let mut g = Generator::new(3);
    for i in 0..4 {
        phone.record_visit(big, g.child_visit(), i).expect("record");
    }
    phone.record_visit(small, g.child_visit(), 9).expect("record");
    // A server whose document budget the big session exceeds (the default is 100,000 ops).
    let ops = |id| phone.doc(id).expect("doc").stats().num_ops;
    let limits = Limits { doc_ops_max: ((ops(big) + ops(small)) / 2) as usize, ..Limits::default() };
    assert!(ops(big) > limits.doc_ops_max as u64 && ops(small) <= limits.doc_ops_max as u64);
    let req = phone.prepare_sync(&limits).expect("prepare");
    assert_eq!(req.push.iter().map(|d| d.doc).collect::<Vec<_>>(), vec![small], "only what the server accepts");
    assert_eq!(phone.rejected().expect("rejected"), vec![(big, "document_too_large".to_owned())]);
    assert_eq!(phone.visits(big).expect("visits").len(), 4, "kept on the phone");
}

//! A merge re-projects only the records it touched (`posync_model::doc::touched_records`). Property: after
//! any sequence of captures, concurrent edits and syncs on three phones, the projection and
//! conflict index built merge by merge from those partial projections equal a full rebuild
//! of the merged document.

use automerge::Automerge;
use posync_model::doc::{self, DocMeta};
use posync_model::{DeviceId, Field, FieldConflict, FieldValue, Heads, LifeGroup, PersonId, Sex, Visit, VisitId};
use posync_proto::{DocPush, Limits};
use posync_store::core::{self, DocWrite, Existing, Projection, Records, StoredForm};
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: i64 = 1_795_395_600;

#[derive(Clone, Debug)]
enum Step {
    Record { phone: usize },
    Weigh { phone: usize, pick: usize, grams: i64 },
    Immunise { phone: usize, pick: usize },
    Note { phone: usize, pick: usize },
    Sync { phone: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize).prop_map(|phone| Step::Record { phone }),
        (0..3usize, any::<usize>(), 3_000..20_000i64).prop_map(|(phone, pick, grams)| Step::Weigh {
            phone,
            pick,
            grams
        }),
        (0..3usize, any::<usize>()).prop_map(|(phone, pick)| Step::Immunise { phone, pick }),
        (0..3usize, any::<usize>()).prop_map(|(phone, pick)| Step::Note { phone, pick }),
        (0..3usize).prop_map(|phone| Step::Sync { phone }),
    ]
}

fn new_visit(device: DeviceId, n: usize) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: format!("Anak {n}"),
        sex: Sex::Female,
        birth_date: time::macros::date!(2024 - 06 - 15),
        weight_g: Some(9_000),
        length_mm: Some(800),
        lying: Some(true),
        head_circ_mm: None,
        muac_mm: None,
        immunisations: BTreeMap::new(),
        vitamin_a: None,
        notes: String::new(),
        group: LifeGroup::Balita,
        services: BTreeMap::new(),
        recorded_by: device,
        recorded_at: NOW,
    }
}

/// The rows a store holds for a document, kept up to date from each merge's projection.
#[derive(Default, Debug, PartialEq)]
struct Rows {
    visits: BTreeMap<String, (Visit, Option<String>)>,
    conflicts: BTreeMap<String, Vec<FieldConflict>>,
}

impl Rows {
    fn apply(&mut self, p: &Projection, conflicts: &[FieldConflict]) {
        match &p.only {
            None => *self = Rows::default(),
            Some(ids) => {
                for id in ids {
                    self.visits.remove(id);
                    self.conflicts.remove(id);
                }
            }
        }
        let Records::Visits { visits, .. } = &p.records else { panic!("a session projects visits") };
        for v in visits {
            let id = v.visit_id.to_string();
            self.visits.insert(id.clone(), (v.clone(), p.invalid.get(&id).cloned()));
        }
        for c in conflicts {
            self.conflicts.entry(c.record_id.clone()).or_default().push(c.clone());
        }
    }

    fn rebuilt(am: &Automerge) -> Rows {
        let meta = doc::read_meta(am).expect("meta");
        let mut rows = Rows::default();
        rows.apply(&core::project(am, &meta, NOW).expect("project"), &posync_model::conflicts(am).expect("conflicts"));
        rows
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn rows_kept_merge_by_merge_equal_a_full_rebuild(steps in proptest::collection::vec(step(), 1..40)) {
        let devices: Vec<DeviceId> = (0..3).map(|_| DeviceId::new_random()).collect();
        let meta = DocMeta::session("melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
        let genesis = doc::genesis(&meta, devices[0].actor()).expect("genesis");
        let mut phones: Vec<Automerge> = devices.iter().map(|d| genesis.fork().with_actor(d.actor())).collect();
        let mut acked: Vec<Heads> = vec![Heads::empty(); 3];
        let (mut server, mut stored): (Option<Automerge>, Vec<u8>) = (None, Vec::new());
        let mut form = StoredForm::default();
        let mut rows = Rows::default();
        let mut n = 0;
        for s in steps {
            match s {
                Step::Record { phone } => {
                    n += 1;
                    doc::record_visit(&mut phones[phone], &new_visit(devices[phone], n), NOW).expect("record");
                }
                // Nothing to edit yet on this phone.
                Step::Weigh { phone, .. } | Step::Immunise { phone, .. } | Step::Note { phone, .. }
                    if doc::visits(&phones[phone]).expect("visits").is_empty() => {}
                Step::Weigh { phone, pick, grams } => {
                    let v = pick_visit(&phones[phone], pick);
                    doc::set_visit_field(&mut phones[phone], v, Field::WeightG, &FieldValue::Int(grams), NOW).expect("weigh");
                }
                Step::Immunise { phone, pick } => {
                    let v = pick_visit(&phones[phone], pick);
                    doc::give_immunisation(&mut phones[phone], v, "BCG", time::macros::date!(2026 - 11 - 23), NOW).expect("immunise");
                }
                Step::Note { phone, pick } => {
                    let v = pick_visit(&phones[phone], pick);
                    let note = FieldValue::Text(format!("catatan {phone}"));
                    doc::set_visit_field(&mut phones[phone], v, Field::Notes, &note, NOW).expect("note");
                }
                Step::Sync { phone } => {
                    let push = push_of(&meta, &phones[phone], &acked[phone]);
                    let rules = core::Rules { device: devices[phone], limits: Limits::default(), now: NOW };
                    // Phone 0's pushes merge into the loaded copy, the others' into the stored
                    // bytes (snapshot and appended chunks), as after a cache miss.
                    let existing = server.as_ref().map(|_| Existing {
                        kind: meta.kind,
                        posyandu: &meta.posyandu,
                        bytes: &stored,
                        form,
                        loaded: if phone == 0 { server.clone() } else { None },
                    });
                    let merged = core::merge_push(existing, &push, &rules, &mut Default::default()).expect("merge");
                    if let (Some(write), Some(p), Some(doc)) = (merged.write, merged.projection.as_ref(), merged.doc) {
                        rows.apply(p, &merged.conflicts);
                        prop_assert_eq!(&rows, &Rows::rebuilt(&doc), "after a sync of phone {}", phone);
                        form = form.after(&write);
                        match write {
                            DocWrite::Whole(bytes) => stored = bytes,
                            DocWrite::Append(chunk) => stored.extend_from_slice(&chunk),
                        }
                        prop_assert_eq!(form.bytes, stored.len());
                        prop_assert!(form.chunks < core::CHUNKS_MAX);
                        let reloaded = Automerge::load(&stored).expect("the stored form loads");
                        prop_assert_eq!(reloaded.get_heads(), doc.get_heads(), "stored form = merged document");
                        server = Some(doc);
                    }
                    // The phone takes what the server has.
                    if let Some(server) = &server {
                        phones[phone].merge(&mut server.clone()).expect("pull");
                        acked[phone] = Heads::new(server.get_heads());
                    }
                }
            }
        }
    }
}

/// What a phone sends for `am` when the server has acknowledged `base`.
fn push_of(meta: &DocMeta, am: &Automerge, base: &Heads) -> DocPush {
    DocPush {
        doc: meta.doc_id(),
        kind: meta.kind,
        posyandu: meta.posyandu.clone(),
        base: base.to_bytes(),
        heads: Heads::new(am.get_heads()).to_bytes(),
        changes: if base.is_empty() { am.save() } else { am.save_after(base.as_slice()) },
    }
}

fn pick_visit(am: &Automerge, pick: usize) -> VisitId {
    let visits = doc::visits(am).expect("visits");
    visits[pick % visits.len()].visit_id
}

/// Every phone's first capture raises the document's schema at the root (the genesis change
/// is frozen at the first version). Merging a second phone's first visits must still
/// project only those visits, not every record of the session: in a reconnect storm every
/// push is such a first push.
#[test]
fn a_phones_first_visits_merge_into_a_session_projecting_only_those_visits() {
    let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
    let meta = DocMeta::session("melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
    let genesis = doc::genesis(&meta, a.actor()).expect("genesis");
    let (mut phone_a, mut phone_b) = (genesis.fork().with_actor(a.actor()), genesis.fork().with_actor(b.actor()));
    for n in 0..5 {
        doc::record_visit(&mut phone_a, &new_visit(a, n), NOW).expect("record");
    }
    let mine: Vec<Visit> = (10..13).map(|n| new_visit(b, n)).collect();
    for v in &mine {
        doc::record_visit(&mut phone_b, v, NOW).expect("record");
    }
    let push_whole = |am: &Automerge| push_of(&meta, am, &Heads::empty());
    let first = core::merge_push(
        None,
        &push_whole(&phone_a),
        &core::Rules { device: a, limits: Limits::default(), now: NOW },
        &mut Default::default(),
    )
    .expect("first push");
    let stored = phone_a.save();
    let existing = Existing {
        kind: meta.kind,
        posyandu: &meta.posyandu,
        bytes: &stored,
        form: StoredForm::default().after(first.write.as_ref().expect("written")),
        loaded: None,
    };
    let merged = core::merge_push(
        Some(existing),
        &push_whole(&phone_b),
        &core::Rules { device: b, limits: Limits::default(), now: NOW },
        &mut Default::default(),
    )
    .expect("second phone's first push");
    let only = merged.projection.as_ref().and_then(|p| p.only.clone()).expect("narrowed to the records it touched");
    let mut expected: Vec<String> = mine.iter().map(|v| v.visit_id.to_string()).collect();
    expected.sort();
    assert_eq!(only, expected);
}

//! `doc::touched_records`: the records a phone projects again after a pull (merged, or the
//! server's whole copy loaded), read from the new changes' operations. Property: after any
//! captures, concurrent edits and merges on three phones, every record whose row (its
//! winning values and its conflicts) differs between the phone's copy before and after a
//! merge is in the set. A diff of the two states fails it: a losing concurrent write opens a
//! conflict without changing any value, and the diff does not show it.

use automerge::Automerge;
use posync_model::doc::{self, DocMeta};
use posync_model::{
    DeviceId, DocKind, Field, FieldConflict, FieldValue, Heads, LifeGroup, PersonId, Sex, Visit, VisitId,
};
use proptest::prelude::*;
use std::collections::BTreeMap;

const NOW: i64 = 1_795_395_600;

#[derive(Clone, Debug)]
enum Step {
    Record { phone: usize },
    Weigh { phone: usize, pick: usize, grams: i64 },
    Note { phone: usize, pick: usize },
    Immunise { phone: usize, pick: usize },
    Merge { into: usize, from: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize).prop_map(|phone| Step::Record { phone }),
        (0..3usize, any::<usize>(), 3_000..20_000i64).prop_map(|(phone, pick, grams)| Step::Weigh {
            phone,
            pick,
            grams
        }),
        (0..3usize, any::<usize>()).prop_map(|(phone, pick)| Step::Note { phone, pick }),
        (0..3usize, any::<usize>()).prop_map(|(phone, pick)| Step::Immunise { phone, pick }),
        (0..3usize, 0..3usize).prop_map(|(into, from)| Step::Merge { into, from }),
    ]
}

fn new_visit(device: DeviceId, n: usize) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: format!("Anak {n}"),
        sex: Sex::Male,
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

/// Each record's row as a phone shows it: winning values, then its conflicts.
fn rows(am: &Automerge) -> BTreeMap<String, (String, Vec<FieldConflict>)> {
    let mut out: BTreeMap<String, (String, Vec<FieldConflict>)> = BTreeMap::new();
    for v in doc::visits(am).expect("visits") {
        out.entry(v.visit_id.to_string()).or_default().0 = format!("{v:?}");
    }
    for c in posync_model::conflicts(am).expect("conflicts") {
        out.entry(c.record_id.clone()).or_default().1.push(c);
    }
    out
}

fn pick_visit(am: &Automerge, pick: usize) -> VisitId {
    let visits = doc::visits(am).expect("visits");
    visits[pick % visits.len()].visit_id
}

/// Play `steps` on three phones sharing one session; after each merge, `check` sees the
/// merged copy, its heads before the merge and its rows before.
fn play(
    steps: Vec<Step>,
    mut check: impl FnMut(&Automerge, Heads, &BTreeMap<String, (String, Vec<FieldConflict>)>) -> Result<(), TestCaseError>,
) -> Result<(), TestCaseError> {
    let devices: Vec<DeviceId> = (0..3).map(|_| DeviceId::new_random()).collect();
    let meta = DocMeta::session("melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
    let genesis = doc::genesis(&meta, devices[0].actor()).expect("genesis");
    let mut phones: Vec<Automerge> = devices.iter().map(|d| genesis.fork().with_actor(d.actor())).collect();
    let mut n = 0;
    for s in steps {
        match s {
            Step::Record { phone } => {
                n += 1;
                doc::record_visit(&mut phones[phone], &new_visit(devices[phone], n), NOW).expect("record");
            }
            Step::Weigh { phone, .. } | Step::Note { phone, .. } | Step::Immunise { phone, .. }
                if doc::visits(&phones[phone]).expect("visits").is_empty() => {}
            Step::Weigh { phone, pick, grams } => {
                let v = pick_visit(&phones[phone], pick);
                doc::set_visit_field(&mut phones[phone], v, Field::WeightG, &FieldValue::Int(grams), NOW)
                    .expect("weigh");
            }
            Step::Note { phone, pick } => {
                let v = pick_visit(&phones[phone], pick);
                let note = FieldValue::Text(format!("catatan {phone}"));
                doc::set_visit_field(&mut phones[phone], v, Field::Notes, &note, NOW).expect("note");
            }
            Step::Immunise { phone, pick } => {
                let v = pick_visit(&phones[phone], pick);
                // Each phone writes its own date: concurrent doses are a conflict inside the
                // visit's nested immunisations map.
                let given = time::macros::date!(2026 - 11 - 20) + time::Duration::days(phone as i64);
                doc::give_immunisation(&mut phones[phone], v, "BCG", given, NOW).expect("immunise");
            }
            Step::Merge { into, from } => {
                if into == from {
                    continue;
                }
                let before_rows = rows(&phones[into]);
                let before = Heads::new(phones[into].get_heads());
                let mut theirs = phones[from].clone();
                phones[into].merge(&mut theirs).expect("merge");
                check(&phones[into], before, &before_rows)?;
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    #[test]
    fn every_record_whose_row_a_merge_changed_is_touched(steps in proptest::collection::vec(step(), 1..40)) {
        play(steps, |merged, before, before_rows| {
            let Some(touched) = doc::touched_records(merged, DocKind::Session, &before) else { return Ok(()) };
            let after_rows = rows(merged);
            let keys: std::collections::BTreeSet<&String> = before_rows.keys().chain(after_rows.keys()).collect();
            for k in keys {
                if before_rows.get(k) != after_rows.get(k) {
                    prop_assert!(touched.contains(k), "record {k} changed but was not touched: {touched:?}");
                }
            }
            Ok(())
        })?;
    }

    /// Projection reads a visit and its conflicts in one pass over its map (server merge,
    /// phone pull): the same as reading them apart, nested immunisations included.
    #[test]
    fn a_visit_read_with_its_conflicts_is_the_visit_and_conflicts_read_apart(steps in proptest::collection::vec(step(), 1..40)) {
        play(steps, |merged, _, _| {
            let reader = doc::RecordReader::of(merged).expect("reader");
            for v in doc::visits(merged).expect("visits") {
                let apart = (reader.visit(v.visit_id).expect("visit"), reader.conflicts(&v.visit_id.to_string()).expect("conflicts"));
                let at_once = reader.visit_with_conflicts(v.visit_id).expect("both");
                prop_assert_eq!(at_once.map(|(visit, c)| (Some(visit), c)), Some(apart));
            }
            Ok(())
        })?;
    }
}

/// The case that showed a diff of the two states is not enough: a phone's own weight wins
/// over a colleague's concurrent one, so no value changes, yet the visit now holds a conflict
/// and must be listed again.
#[test]
fn a_losing_concurrent_write_touches_its_record() {
    let (a, b) = (DeviceId::new_random(), DeviceId::new_random());
    let meta = DocMeta::session("melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
    let genesis = doc::genesis(&meta, a.actor()).expect("genesis");
    let (mut phone_a, mut phone_b) = (genesis.fork().with_actor(a.actor()), genesis.fork().with_actor(b.actor()));
    doc::record_visit(&mut phone_a, &new_visit(a, 1), NOW).expect("record");
    phone_b.merge(&mut phone_a.clone()).expect("b takes the visit");
    let v = pick_visit(&phone_a, 0);
    doc::set_visit_field(&mut phone_a, v, Field::WeightG, &FieldValue::Int(3_000), NOW).expect("weigh on a");
    doc::set_visit_field(&mut phone_b, v, Field::WeightG, &FieldValue::Int(19_800), NOW).expect("weigh on b");
    let before = Heads::new(phone_a.get_heads());
    let rows_before = rows(&phone_a);
    phone_a.merge(&mut phone_b.clone()).expect("a takes b's weight");
    assert_ne!(rows(&phone_a), rows_before, "the visit now holds a conflict");
    let touched = doc::touched_records(&phone_a, DocKind::Session, &before).expect("narrowed to records");
    assert_eq!(touched, vec![v.to_string()]);
}

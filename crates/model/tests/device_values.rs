//! What the server refuses in the values a device's changes write (`doc::check_new_values`,
//! `400 invalid_field`): timestamps in milliseconds, and objects where a scalar belongs.

use automerge::transaction::Transactable;
use automerge::{Automerge, ObjType, ROOT, ReadDoc, ScalarValue};
use posync_model::doc::{self, DocMeta};
use posync_model::record::UNIX_SECONDS_MAX;
use posync_model::{DeviceId, FieldValue, PersonId, Sex, Visit, VisitId};
use std::collections::BTreeMap;

const DAY: time::Date = time::macros::date!(2026 - 11 - 23);
/// 2026-11-23 10:00 UTC+7 in Unix seconds.
const NOW_S: i64 = 1_795_834_800;

fn visit(by: DeviceId, recorded_at: i64) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: "Nur Lestari".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(2025 - 06 - 01),
        weight_g: Some(8500),
        length_mm: Some(720),
        lying: Some(true),
        head_circ_mm: None,
        muac_mm: None,
        immunisations: BTreeMap::new(),
        vitamin_a: None,
        notes: String::new(),
        group: posync_model::LifeGroup::Balita,
        services: Default::default(),
        recorded_by: by,
        recorded_at,
    }
}

/// A session with one visit written by hand, as another client might write it: `edit`
/// fills the visit map.
fn hand_written(edit: impl FnOnce(&mut automerge::transaction::Transaction<'_>, &automerge::ObjId)) -> Automerge {
    let meta = DocMeta::session("melati-01".parse().expect("id"), DAY);
    let device = DeviceId::new_random();
    let mut am = doc::genesis(&meta, device.actor()).expect("genesis");
    let visits = match am.get(ROOT, "visits").expect("get") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        other => panic!("no visits map: {other:?}"),
    };
    let mut tx = am.transaction();
    let v = tx.put_object(&visits, VisitId::new_random().to_string(), ObjType::Map).expect("visit");
    tx.put(&v, "person_id", PersonId::new_random().to_string()).expect("person");
    tx.put(&v, "recorded_by", device.to_string()).expect("by");
    tx.put(&v, "sex", "F").expect("sex");
    tx.put(&v, "birth_date", "2025-06-01").expect("birth");
    edit(&mut tx, &v);
    tx.commit();
    am
}

#[test]
fn recorded_at_in_milliseconds_is_refused_and_seconds_pass() {
    let seconds = hand_written(|tx, v| {
        tx.put(v, "recorded_at", ScalarValue::Timestamp(NOW_S)).expect("at");
    });
    assert_eq!(doc::check_new_values_why(&seconds, &[]), Ok(()));
    let at_the_bound = hand_written(|tx, v| {
        tx.put(v, "recorded_at", UNIX_SECONDS_MAX).expect("at");
    });
    assert_eq!(doc::check_new_values(&at_the_bound, &[]), Ok(()));

    for value in [ScalarValue::Timestamp(NOW_S * 1000), ScalarValue::Int(NOW_S * 1000), ScalarValue::Uint(u64::MAX)] {
        let millis = hand_written(|tx, v| {
            tx.put(v, "recorded_at", value.clone()).expect("at");
        });
        let bad = doc::check_new_values_why(&millis, &[]).expect_err("milliseconds are refused");
        assert_eq!(bad.key, "recorded_at", "{value:?}");
        assert!(bad.reason.contains("Unix seconds") && bad.reason.contains("milliseconds"), "{}", bad.reason);
        assert_eq!(doc::check_new_values(&millis, &[]), Err("recorded_at".to_owned()));
    }
}

#[test]
fn registered_at_in_milliseconds_is_refused() {
    let meta = DocMeta::registry("melati-01".parse().expect("id"));
    let mut am = doc::genesis(&meta, DeviceId::new_random().actor()).expect("genesis");
    let people = match am.get(ROOT, "people").expect("get") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        other => panic!("no people map: {other:?}"),
    };
    let mut tx = am.transaction();
    let p = tx.put_object(&people, PersonId::new_random().to_string(), ObjType::Map).expect("person");
    tx.put(&p, "registered_at", ScalarValue::Timestamp(NOW_S * 1000)).expect("at");
    tx.commit();
    let bad = doc::check_new_values_why(&am, &[]).expect_err("refused");
    assert_eq!(bad.key, "registered_at");
}

#[test]
fn the_model_refuses_to_capture_milliseconds() {
    let meta = DocMeta::session("melati-01".parse().expect("id"), DAY);
    let device = DeviceId::new_random();
    let mut am = doc::genesis(&meta, device.actor()).expect("genesis");
    let err = doc::record_visit(&mut am, &visit(device, NOW_S * 1000), NOW_S).expect_err("refused");
    assert!(err.to_string().contains("recorded_at must be Unix seconds"), "{err}");
    doc::record_visit(&mut am, &visit(device, NOW_S), NOW_S).expect("seconds are fine");
    assert_eq!(doc::check_new_values(&am, &[]), Ok(()), "what the model writes passes the server's check");
}

#[test]
fn a_text_object_where_a_string_belongs_is_refused() {
    for key in ["name", "notes", "sex", "recorded_by"] {
        let am = hand_written(|tx, v| {
            let text = tx.put_object(v, key, ObjType::Text).expect("text");
            tx.splice_text(&text, 0, 0, "F").expect("splice");
        });
        let bad = doc::check_new_values_why(&am, &[]).expect_err("a text object is refused");
        assert_eq!(bad.key, key);
        assert!(bad.reason.contains("not a Text object"), "{}", bad.reason);
    }
    // Maps posync does not know the key of (a visit's `immunisations`) stay allowed.
    let am = hand_written(|tx, v| {
        tx.put_object(v, "immunisations", ObjType::Map).expect("map");
    });
    assert_eq!(doc::check_new_values(&am, &[]), Ok(()));
}

#[test]
fn a_value_given_as_text_is_read_by_its_fields_kind() {
    use posync_model::{Field, FieldValue};
    assert_eq!(Field::BpSystolic.parse_value(" 110 "), Some(FieldValue::Int(110)));
    assert_eq!(Field::BpSystolic.parse_value("high"), None, "a measurement is a whole number");
    assert_eq!(Field::GrowthCard.parse_value("true"), Some(FieldValue::Bool(true)));
    assert_eq!(Field::GrowthCard.parse_value("ya"), None, "yes/no is true or false");
    assert_eq!(Field::Notes.parse_value("110"), Some(FieldValue::Text("110".into())), "notes stay text");
}

/// A merge collects its new changes once (`doc::NewChanges`) and stores, checks and narrows
/// from that one collection: what it stores must be what `save_after` would have stored,
/// and its checks must refuse what the per-call checks refuse.
#[test]
fn new_changes_collected_once_store_as_save_after_and_check_as_before() {
    let meta = DocMeta::session("melati-01".parse().expect("id"), DAY);
    let device = DeviceId::new_random();
    let mut am = doc::genesis(&meta, device.actor()).expect("genesis");
    let before = am.get_heads();
    doc::record_visit(&mut am, &visit(device, NOW_S), NOW_S).expect("visit");
    doc::record_visit(&mut am, &visit(device, NOW_S + 60), NOW_S + 60).expect("visit");
    let new = doc::NewChanges::after(&am, &before);
    assert_eq!(new.to_bytes(), am.save_after(&before), "the stored chunk is save_after's");
    assert_eq!(new.authors().count(), 2, "two captures, two changes");
    assert!(new.authors().all(|(actor, _)| device.owns_actor(actor)));
    assert_eq!(doc::check_values_of(&new), Ok(()));
    // A later merge that edits one visit and records another reaches those two records.
    let first = visit(device, NOW_S + 120);
    doc::record_visit(&mut am, &first, NOW_S + 120).expect("visit");
    let mid = am.get_heads();
    doc::set_visit_field(&mut am, first.visit_id, posync_model::Field::WeightG, &FieldValue::Int(8600), NOW_S + 180)
        .expect("edit");
    let second = visit(device, NOW_S + 240);
    doc::record_visit(&mut am, &second, NOW_S + 240).expect("visit");
    let new = doc::NewChanges::after(&am, &mid);
    let touched = doc::touched_records_of(&am, meta.kind, &new).expect("narrowed to records");
    assert_eq!(Some(touched.clone()), doc::touched_records(&am, meta.kind, &posync_model::Heads::new(mid)));
    let mut expected = vec![first.visit_id.to_string(), second.visit_id.to_string()];
    expected.sort();
    assert_eq!(touched, expected);

    let millis = hand_written(|tx, v| tx.put(v, "recorded_at", NOW_S * 1000).map(drop).expect("put"));
    let all = doc::NewChanges::after(&millis, &[]);
    assert_eq!(doc::check_values_of(&all).map_err(|b| b.key), Err("recorded_at".to_owned()));
}

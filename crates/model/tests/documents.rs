//! The document layout as a spec: what merges, what conflicts, what two phones share.

use automerge::Automerge;
use posync_model::doc::{self, DocMeta};
use posync_model::{DeviceId, Field, FieldValue, PersonId, Sex, Visit, VisitId, conflicts};
use std::collections::BTreeMap;

const DAY: time::Date = time::macros::date!(2026 - 11 - 23);

fn meta() -> DocMeta {
    DocMeta::session("melati-01".parse().expect("id"), DAY)
}

fn visit(by: DeviceId) -> Visit {
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: "Nur Lestari".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(2025 - 06 - 01),
        weight_g: Some(8500),
        length_mm: Some(720),
        lying: Some(true),
        head_circ_mm: Some(440),
        muac_mm: Some(140),
        immunisations: BTreeMap::from([("MR-1".to_owned(), DAY)]),
        vitamin_a: None,
        notes: String::new(),
        group: posync_model::LifeGroup::Balita,
        services: Default::default(),
        recorded_by: by,
        recorded_at: 1,
    }
}

fn merged(a: &Automerge, b: &Automerge) -> Automerge {
    let mut m = a.clone();
    m.merge(&mut b.clone()).expect("merge");
    m
}

#[test]
fn two_phones_opening_the_same_day_share_one_root() {
    let (da, db) = (DeviceId::new_random(), DeviceId::new_random());
    let mut a = doc::genesis(&meta(), da.actor()).expect("genesis a");
    let mut b = doc::genesis(&meta(), db.actor()).expect("genesis b");
    assert_eq!(a.get_heads(), b.get_heads(), "genesis is byte-identical on every phone");
    let va = visit(da);
    let vb = visit(db);
    doc::record_visit(&mut a, &va, 10).expect("a");
    doc::record_visit(&mut b, &vb, 11).expect("b");
    let m = merged(&a, &b);
    let ids: Vec<VisitId> = doc::visits(&m).expect("visits").into_iter().map(|v| v.visit_id).collect();
    assert_eq!(ids.len(), 2, "both visits survive the merge");
    assert!(ids.contains(&va.visit_id) && ids.contains(&vb.visit_id));
    assert!(conflicts(&m).expect("conflicts").is_empty());
}

#[test]
fn different_fields_merge_and_the_same_field_conflicts() {
    let (da, db) = (DeviceId::new_random(), DeviceId::new_random());
    let mut a = doc::genesis(&meta(), da.actor()).expect("genesis");
    let v = visit(da);
    doc::record_visit(&mut a, &v, 10).expect("record");
    let mut b = a.fork().with_actor(db.actor());
    doc::set_visit_field(&mut a, v.visit_id, Field::WeightG, &FieldValue::Int(9800), 20).expect("a weight");
    doc::set_visit_field(&mut b, v.visit_id, Field::WeightG, &FieldValue::Int(8900), 21).expect("b weight");
    doc::set_visit_field(&mut b, v.visit_id, Field::MuacMm, &FieldValue::Int(150), 22).expect("b muac");
    doc::give_immunisation(&mut a, v.visit_id, "BCG", DAY, 23).expect("a bcg");
    doc::give_immunisation(&mut b, v.visit_id, "OPV-1", DAY, 24).expect("b opv");
    let m1 = merged(&a, &b);
    let m2 = merged(&b, &a);
    assert_eq!(doc::to_json(&m1), doc::to_json(&m2), "merge order does not matter");
    let c = conflicts(&m1).expect("conflicts");
    assert_eq!(c.len(), 1, "only the weight conflicts: {c:?}");
    assert_eq!(c[0].field, "weight_g");
    assert_eq!(c[0].values.iter().filter(|v| v.winner).count(), 1, "exactly one winner");
    let got = &doc::visits(&m1).expect("visits")[0];
    assert_eq!(got.muac_mm, Some(150));
    assert_eq!(got.immunisations.keys().cloned().collect::<Vec<_>>(), vec!["BCG", "MR-1", "OPV-1"]);
}

#[test]
fn impossible_values_are_refused_at_capture() {
    let d = DeviceId::new_random();
    let mut a = doc::genesis(&meta(), d.actor()).expect("genesis");
    let mut v = visit(d);
    v.weight_g = Some(40_000_000);
    assert!(doc::record_visit(&mut a, &v, 1).is_err());
    assert!(doc::visits(&a).expect("visits").is_empty(), "nothing written");
    let ok = visit(d);
    doc::record_visit(&mut a, &ok, 2).expect("record");
    let heads = a.get_heads();
    assert!(doc::set_visit_field(&mut a, ok.visit_id, Field::Sex, &FieldValue::Text("X".into()), 3).is_err());
    assert_eq!(a.get_heads(), heads, "a refused edit makes no change");
}

#[test]
fn a_session_document_knows_its_identity() {
    let a = doc::genesis(&meta(), DeviceId::new_random().actor()).expect("genesis");
    let m = doc::read_meta(&a).expect("meta");
    assert_eq!(m, meta());
    assert_eq!(m.doc_id(), posync_model::DocId::for_session(&m.posyandu, DAY));
}

#[test]
fn server_edits_have_their_own_actor() {
    let server = doc::server_actor("district-banjar");
    let device = DeviceId::new_random().actor();
    assert_ne!(server, device);
    assert_eq!(server, doc::server_actor("district-banjar"), "stable across restarts");
}

/// A session as an app of schema 1 wrote it: genesis and a visit without `group` or any
/// schema-2 key.
fn schema_1_session(by: DeviceId) -> (Automerge, VisitId) {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc};
    let mut am = doc::genesis(&meta(), by.actor()).expect("genesis");
    let visits = match am.get(ROOT, "visits").expect("get") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => panic!("no visits map"),
    };
    let id = VisitId::new_random();
    let mut tx = am.transaction();
    let v = tx.put_object(&visits, id.to_string(), ObjType::Map).expect("put");
    tx.put(&v, "person_id", PersonId::new_random().to_string()).expect("put");
    tx.put(&v, "recorded_by", by.to_string()).expect("put");
    tx.put(&v, "name", "Budi Saputra").expect("put");
    tx.put(&v, "sex", "M").expect("put");
    tx.put(&v, "birth_date", "2024-01-15").expect("put");
    tx.put(&v, "weight_g", 11_000i64).expect("put");
    tx.put_object(&v, "immunisations", ObjType::Map).expect("put");
    tx.commit();
    (am, id)
}

#[test]
fn an_older_document_is_upgraded_deterministically_and_idempotently() {
    let (old, id) = schema_1_session(DeviceId::new_random());
    assert_eq!(doc::schema_of(&old).expect("schema"), 1);
    // Read before any upgrade: the group comes from age at the session date.
    let read = doc::visits(&old).expect("visits");
    assert_eq!(read[0].group, posync_model::LifeGroup::Balita);

    // Two replicas upgrade the same document independently, then merge.
    let (mut a, mut b) = (old.fork().with_actor(DeviceId::new_random().actor()), old.fork());
    b.set_actor(DeviceId::new_random().actor());
    assert!(doc::upgrade(&mut a, 10).expect("upgrade a"));
    assert!(doc::upgrade(&mut b, 20).expect("upgrade b"));
    assert!(!doc::upgrade(&mut a, 30).expect("again"), "a second upgrade writes nothing");
    let m = merged(&a, &b);
    assert_eq!(doc::schema_of(&m).expect("schema"), doc::SCHEMA_VERSION);
    assert_eq!(doc::to_json(&a), doc::to_json(&b), "both replicas wrote the same upgrade");
    assert!(conflicts(&m).expect("conflicts").is_empty(), "equal concurrent upgrade writes are no conflict");
    let visit = doc::visits(&m).expect("visits").into_iter().find(|v| v.visit_id == id).expect("visit");
    assert_eq!(visit.group, posync_model::LifeGroup::Balita);
    assert_eq!(visit.weight_g, Some(11_000));
}

#[test]
fn this_build_never_deletes_fields_it_does_not_know() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc};
    let by = DeviceId::new_random();
    let mut am = doc::genesis(&meta(), by.actor()).expect("genesis");
    let v = visit(by);
    doc::record_visit(&mut am, &v, 1).expect("record");
    // A newer app adds a key this build has never heard of, at the root and in the visit.
    let mut newer = am.fork();
    newer.set_actor(DeviceId::new_random().actor());
    let visits = match newer.get(ROOT, "visits").expect("get") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => panic!("no visits"),
    };
    let obj = match newer.get(&visits, v.visit_id.to_string()).expect("get") {
        Some((automerge::Value::Object(ObjType::Map), id)) => id,
        _ => panic!("no visit"),
    };
    let mut tx = newer.transaction();
    tx.put(&obj, "stunting_followup_plan", "kunjungan rumah minggu depan").expect("put");
    tx.put(ROOT, "schema", 3i64).expect("put");
    tx.commit();
    // This build edits the same visit, upgrades nothing (schema 3 >= 2) and deletes nothing.
    am.merge(&mut newer.clone()).expect("merge");
    doc::set_visit_field(&mut am, v.visit_id, Field::WeightG, &FieldValue::Int(8600), 2).expect("edit");
    let json = doc::to_json(&am);
    let visit_json = &json["visits"][v.visit_id.to_string()];
    assert_eq!(visit_json["stunting_followup_plan"], "kunjungan rumah minggu depan");
    assert_eq!(visit_json["weight_g"], 8600);
    assert_eq!(doc::schema_of(&am).expect("schema"), 3, "a newer schema is never lowered");
}

#[test]
fn concurrent_equal_values_are_agreement_not_conflict() {
    let by = DeviceId::new_random();
    let mut a = doc::genesis(&meta(), by.actor()).expect("genesis");
    let v = visit(by);
    doc::record_visit(&mut a, &v, 1).expect("record");
    let mut b = a.fork();
    b.set_actor(DeviceId::new_random().actor());
    doc::set_visit_field(&mut a, v.visit_id, Field::WeightG, &FieldValue::Int(8900), 2).expect("a");
    doc::set_visit_field(&mut b, v.visit_id, Field::WeightG, &FieldValue::Int(8900), 3).expect("b");
    assert!(conflicts(&merged(&a, &b)).expect("c").is_empty());
    doc::set_visit_field(&mut b, v.visit_id, Field::WeightG, &FieldValue::Int(9800), 4).expect("b");
    let mut c = a.fork();
    c.set_actor(DeviceId::new_random().actor());
    doc::set_visit_field(&mut c, v.visit_id, Field::WeightG, &FieldValue::Int(8800), 5).expect("c");
    assert_eq!(conflicts(&merged(&b, &c)).expect("c").len(), 1, "different values still conflict");
}

#[test]
fn people_carry_nik_or_their_mothers_address_and_group() {
    let by = DeviceId::new_random();
    let mut reg = doc::genesis(&DocMeta::registry("melati-01".parse().expect("id")), by.actor()).expect("genesis");
    let now = 1_795_395_600; // 2026-11-23
    let baby = posync_model::Person {
        person_id: PersonId::new_random(),
        name: "Bayi Ny. Euis".into(),
        sex: Sex::Male,
        birth_date: time::macros::date!(2026 - 10 - 30),
        mother_name: "Euis Nurhayati".into(),
        nik: None,
        mother_nik: Some("3279014501900001".into()),
        address: "Dusun Sukamaju".into(),
        rt: Some(2),
        rw: Some(5),
        pregnant: false,
        kia_book: true,
        merged_into: None,
        registered_by: by,
        registered_at: now,
    };
    doc::register_person(&mut reg, &baby, now).expect("a newborn with the mother's NIK");
    let read = doc::people(&reg).expect("people");
    assert_eq!(read, vec![baby.clone()]);
    assert_eq!(baby.group(DAY), posync_model::LifeGroup::Balita);

    let refused = |p: posync_model::Person| doc::register_person(&mut reg.clone(), &p, now).is_err();
    assert!(refused(posync_model::Person { mother_nik: None, ..baby.clone() }), "a child needs a NIK or the mother's");
    assert!(refused(posync_model::Person { mother_nik: Some("32790145".into()), ..baby.clone() }), "16 digits");
    assert!(refused(posync_model::Person { rt: Some(0), ..baby.clone() }), "RT 1-999");
    assert!(refused(posync_model::Person { birth_date: time::macros::date!(2027 - 01 - 01), ..baby.clone() }));
    let mother = posync_model::Person {
        name: "Euis Nurhayati".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(1998 - 04 - 12),
        nik: Some("3279014501900001".into()),
        mother_nik: None,
        pregnant: true,
        ..baby
    };
    assert_eq!(mother.group(DAY), posync_model::LifeGroup::IbuHamil);
    assert_eq!(posync_model::Person { pregnant: false, ..mother }.group(DAY), posync_model::LifeGroup::UsiaProduktif);
}

#[test]
fn only_a_servers_merged_into_counts() {
    use automerge::transaction::Transactable;
    use automerge::{ObjType, ROOT, ReadDoc, Value};
    let by = DeviceId::new_random();
    let mut reg = doc::genesis(&DocMeta::registry("melati-01".parse().expect("id")), by.actor()).expect("genesis");
    let now = 1_795_395_600;
    let person = posync_model::Person {
        person_id: PersonId::new_random(),
        name: "Siti".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(1990 - 01 - 01),
        mother_name: String::new(),
        nik: Some("3279014501900001".into()),
        mother_nik: None,
        address: String::new(),
        rt: None,
        rw: None,
        pregnant: false,
        kia_book: false,
        merged_into: None,
        registered_by: by,
        registered_at: now,
    };
    doc::register_person(&mut reg, &person, now).expect("register");
    let keep = PersonId::new_random();
    // A device writing merged_into itself: ignored.
    let Some((Value::Object(ObjType::Map), people)) = reg.get(ROOT, "people").expect("get") else { panic!() };
    let Some((Value::Object(ObjType::Map), p)) = reg.get(&people, person.person_id.to_string()).expect("get") else {
        panic!()
    };
    let mut tx = reg.transaction();
    tx.put(&p, "merged_into", PersonId::new_random().to_string()).expect("put");
    tx.commit();
    assert_eq!(doc::people(&reg).expect("people")[0].merged_into, None, "a device cannot merge people");
    // The server's decision counts.
    reg.set_actor(doc::server_actor("posync"));
    doc::merge_person(&mut reg, person.person_id, keep, now).expect("merge");
    assert_eq!(doc::people(&reg).expect("people")[0].merged_into, Some(keep));
}

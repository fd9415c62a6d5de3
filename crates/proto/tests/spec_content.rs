//! `proto/SYNC-v1.md` section 3.6 (what a client writes inside a document) against the code:
//! document ids, genesis changes, visit and person keys, required fields, life-cycle groups
//! by age, timestamps. Each test reads the spec's text (or a vector in `proto/vectors/`) and
//! fails when the model says otherwise, or when the model gains a key the spec does not list.
//!
//! `POSYNC_BLESS=1 cargo test -p posync-proto --test spec_content` rewrites
//! `proto/vectors/doc-ids.txt` and the genesis `.hex` files from the code (never the frozen
//! genesis `.bin` files, nor the spec).

use automerge::{ObjType, ROOT, ReadDoc, Value};
use posync_model::doc::{self, DocMeta};
use posync_model::record::{FieldKind, UNIX_SECONDS_MAX};
use posync_model::validate::required;
use posync_model::{DeviceId, DocId, Field, FieldValue, LifeGroup, Person, PersonId, PosyanduId, Sex, Visit, VisitId};
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto")
}

fn spec() -> String {
    std::fs::read_to_string(root().join("SYNC-v1.md")).expect("read proto/SYNC-v1.md")
}

fn blessing() -> bool {
    std::env::var("POSYNC_BLESS").is_ok_and(|v| v == "1")
}

/// With `POSYNC_BLESS=1`, write `expected` to `proto/vectors/<file>`; otherwise compare.
fn check_or_bless(file: &str, expected: &str) {
    let path = root().join("vectors").join(file);
    if blessing() {
        std::fs::write(&path, expected).expect("write vector");
        return;
    }
    let actual = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (run with POSYNC_BLESS=1 to create it)", path.display()));
    assert_eq!(actual, expected, "{} differs from what the code produces", path.display());
}

/// The rows of the first markdown table after the line starting with `heading`: cells
/// trimmed, header and separator rows dropped.
fn table_after(spec: &str, heading: &str) -> Vec<Vec<String>> {
    let start = spec.find(heading).unwrap_or_else(|| panic!("the spec has no line {heading:?}"));
    let rows: Vec<Vec<String>> = spec[start..]
        .lines()
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .map(|l| l.trim().trim_matches('|').split('|').map(|c| c.trim().to_owned()).collect())
        .collect();
    assert!(rows.len() > 2, "no table after {heading:?}");
    rows.into_iter().skip(2).collect()
}

/// `` `key` `` → `key`.
fn unquote(cell: &str) -> String {
    cell.trim_matches('`').to_owned()
}

/// Backquoted words of a cell: `` `a`, `b` `` → [a, b].
fn quoted_words(cell: &str) -> Vec<String> {
    cell.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

// ---- 3.6.1 document ids ----

fn doc_id_of(name: &str) -> DocId {
    let parts: Vec<&str> = name.split('/').collect();
    match parts.as_slice() {
        ["session", p, d] => {
            let p: PosyanduId = p.parse().expect("posyandu");
            let d = posync_model::record::parse_date(d).expect("date");
            DocId::for_session(&p, d)
        }
        ["registry", p] => DocId::for_registry(&p.parse().expect("posyandu")),
        _ => panic!("not a document name: {name}"),
    }
}

#[test]
fn document_ids_are_uuidv5_of_the_names_the_spec_gives() {
    let spec = spec();
    let ns_line = spec.lines().find(|l| l.trim_start().starts_with("namespace: ")).expect("namespace line");
    let ns = uuid::Uuid::parse_str(ns_line.trim().trim_start_matches("namespace: ")).expect("namespace UUID");
    let rows = table_after(&spec, "The posyandu id is used as it is");
    assert!(rows.len() >= 4);
    let mut listing = String::new();
    for row in rows {
        let (name, id) = (unquote(&row[0]), unquote(&row[1]));
        let by_spec = uuid::Uuid::new_v5(&ns, name.as_bytes());
        let by_code = doc_id_of(&name);
        assert_eq!(by_spec.to_string(), id, "{name}: the UUIDv5 of the spec's namespace and name");
        assert_eq!(by_code.to_string(), id, "{name}: DocId::for_session / for_registry");
        listing.push_str(&format!("{name} {id}\n"));
    }
    check_or_bless("doc-ids.txt", &listing);
}

// ---- 3.6.2 genesis ----

fn hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| hex::encode(c) + "\n").collect()
}

#[test]
fn genesis_hex_vectors_and_the_spec_quote_the_frozen_bytes() {
    let spec = spec();
    let p: PosyanduId = "melati-01".parse().expect("posyandu");
    let day = time::macros::date!(2026 - 11 - 23);
    for (name, meta) in
        [("genesis-session", DocMeta::session(p.clone(), day)), ("genesis-registry", DocMeta::registry(p.clone()))]
    {
        let bytes = doc::genesis_change(&meta).expect("genesis");
        let frozen = std::fs::read(root().join("vectors").join(format!("{name}.bin"))).expect("frozen genesis");
        assert_eq!(bytes, frozen, "{name}: see golden.rs; never re-bless the .bin");
        let hex = hex_lines(&bytes);
        check_or_bless(&format!("{name}.hex"), &hex);
        let hash = doc::genesis_hash(&meta).expect("hash");
        let quoted = format!("{name:<16} (document {})\n{hex}change hash {hash}\n", meta.doc_id());
        assert!(spec.contains(&quoted), "SYNC-v1.md 3.6.2 does not quote {name}; expected:\n{quoted}");
        assert!(spec.contains(&format!("{} bytes", bytes.len())), "{name}: its length");
        // The actor the spec names: `posync-genesis:` and the document id's bytes.
        let mut am = automerge::Automerge::new();
        am.load_incremental(&bytes).expect("loads");
        let change = &am.get_changes(&[])[0];
        let mut actor = b"posync-genesis:".to_vec();
        actor.extend_from_slice(meta.doc_id().as_bytes());
        assert_eq!(change.actor_id().to_bytes(), actor.as_slice());
        assert_eq!((change.seq(), change.start_op().get(), change.timestamp()), (1, 1, 0));
        assert!(change.deps().is_empty() && change.message().is_none());
    }
}

// ---- 3.6.4 keys ----

fn full_visit() -> Visit {
    let services = Field::SERVICES
        .iter()
        .map(|f| {
            let v = match f.kind() {
                FieldKind::Int { min, .. } => FieldValue::Int(min),
                FieldKind::Bool => FieldValue::Bool(true),
                _ => FieldValue::Text("x".into()),
            };
            (*f, v)
        })
        .collect();
    Visit {
        visit_id: VisitId::new_random(),
        person_id: PersonId::new_random(),
        name: "Nur".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(2025 - 06 - 01),
        weight_g: Some(8500),
        length_mm: Some(720),
        lying: Some(true),
        head_circ_mm: Some(440),
        muac_mm: Some(140),
        immunisations: BTreeMap::new(),
        vitamin_a: Some(posync_model::VitaminA::Blue),
        notes: "n".into(),
        group: LifeGroup::Balita,
        services,
        recorded_by: DeviceId::new_random(),
        recorded_at: 1,
    }
}

fn full_person() -> Person {
    Person {
        person_id: PersonId::new_random(),
        name: "Nur".into(),
        sex: Sex::Female,
        birth_date: time::macros::date!(2025 - 06 - 01),
        mother_name: "Siti".into(),
        nik: Some("3201010101010001".into()),
        mother_nik: Some("3201010101010002".into()),
        address: "Jl. Melati".into(),
        rt: Some(1),
        rw: Some(2),
        pregnant: false,
        kia_book: true,
        merged_into: None,
        registered_by: DeviceId::new_random(),
        registered_at: 1,
    }
}

/// The keys of the only record of `collection` in `am`.
fn record_keys(am: &automerge::Automerge, collection: &str) -> BTreeSet<String> {
    let Ok(Some((Value::Object(ObjType::Map), coll))) = am.get(ROOT, collection) else { panic!("no {collection}") };
    let record = am.keys(&coll).next().expect("one record");
    let Ok(Some((Value::Object(ObjType::Map), r))) = am.get(&coll, record.as_str()) else { panic!("record") };
    am.keys(&r).collect()
}

fn type_of(kind: FieldKind) -> &'static str {
    match kind {
        FieldKind::Int { .. } => "int",
        FieldKind::Bool => "bool",
        FieldKind::Text { .. } | FieldKind::Date | FieldKind::Sex | FieldKind::VitaminA | FieldKind::Group => "text",
    }
}

#[test]
fn the_visit_key_table_lists_every_key_with_its_type_and_range() {
    let spec = spec();
    let rows = table_after(&spec, "Visit keys (");
    let table: BTreeMap<String, &Vec<String>> = rows.iter().map(|r| (unquote(&r[0]), r)).collect();
    assert_eq!(table.len(), rows.len(), "a key listed twice");

    // Every key a full visit writes, and every Field, is in the table, and nothing else.
    let meta = DocMeta::session("melati-01".parse().expect("id"), time::macros::date!(2026 - 11 - 23));
    let mut am = doc::genesis(&meta, DeviceId::new_random().actor()).expect("genesis");
    doc::record_visit(&mut am, &full_visit(), 1).expect("record");
    let mut expected = record_keys(&am, "visits");
    expected.extend(Field::ALL.iter().map(|f| f.key().to_owned()));
    let listed: BTreeSet<String> = table.keys().cloned().collect();
    assert_eq!(listed, expected, "SYNC-v1.md 3.6.4 visit keys vs the model");

    for field in Field::ALL {
        let row = table[field.key()];
        assert_eq!(row[1], type_of(field.kind()), "{}: type", field.key());
        let range = &row[2];
        let ok = match field.kind() {
            FieldKind::Int { min, max } => *range == format!("{min}–{max}"),
            FieldKind::Text { len_max } => range.starts_with(&format!("≤ {len_max} characters")),
            FieldKind::Bool => range.is_empty(),
            FieldKind::Date => range == "`YYYY-MM-DD`",
            FieldKind::Sex => range.starts_with("`F` or `M`"),
            FieldKind::VitaminA => range.starts_with("`blue` or `red`"),
            FieldKind::Group => range.contains("life-cycle group"),
        };
        assert!(ok, "{}: range cell {range:?} does not match {:?}", field.key(), field.kind());
    }
    for key in ["recorded_at", "registered_at"] {
        assert!(spec.contains(&format!("| `{key}` | int | ≤ {UNIX_SECONDS_MAX} |")), "{key}'s bound");
    }
}

#[test]
fn the_person_key_table_lists_every_key_a_registration_writes() {
    let rows = table_after(&spec(), "Person keys (");
    let listed: BTreeSet<String> = rows.iter().map(|r| unquote(&r[0])).collect();
    assert_eq!(listed.len(), rows.len(), "a key listed twice");
    let mut am = doc::genesis(&DocMeta::registry("melati-01".parse().expect("id")), DeviceId::new_random().actor())
        .expect("genesis");
    doc::register_person(&mut am, &full_person(), 1_795_834_800).expect("register");
    let mut expected = record_keys(&am, "people");
    expected.insert("merged_into".into()); // the server's, section 2.6
    assert_eq!(listed, expected, "SYNC-v1.md 3.6.4 person keys vs doc::register_person");
}

#[test]
fn the_required_table_is_validate_required() {
    let rows = table_after(&spec(), "Required per life-cycle group");
    let mut seen = BTreeSet::new();
    for row in rows {
        let group = LifeGroup::parse(&unquote(&row[0])).unwrap_or_else(|| panic!("group {:?}", row[0]));
        let (must, should) = required(group);
        let keys = |fs: &[Field]| fs.iter().map(|f| f.key().to_owned()).collect::<Vec<_>>();
        assert_eq!(quoted_words(&row[1]), keys(must), "{}: must", group.code());
        assert_eq!(quoted_words(&row[2]), keys(should), "{}: should", group.code());
        seen.insert(group);
    }
    assert_eq!(seen, LifeGroup::ALL.into_iter().collect(), "every group has a row");
}

// ---- 3.6.6 life-cycle groups ----

/// The day `months` completed months after 2000-01-15.
fn months_after_birth(months: i64) -> time::Date {
    let total = 2000 * 12 + months;
    let month = time::Month::try_from(u8::try_from(total % 12 + 1).expect("month")).expect("month");
    time::Date::from_calendar_date(i32::try_from(total / 12).expect("year"), month, 15).expect("date")
}

#[test]
fn the_age_table_is_lifegroup_by_age() {
    let birth = time::macros::date!(2000 - 01 - 15);
    let rows = table_after(&spec(), "`LifeGroup::by_age(birth, on)`");
    let mut next = 0;
    for row in &rows {
        let group = LifeGroup::parse(&unquote(&row[1])).expect("group");
        let (lo, hi) = match row[0].split_once('–') {
            Some((lo, hi)) => (lo.parse::<i64>().expect("lo"), Some(hi.parse::<i64>().expect("hi"))),
            None => (row[0].trim_end_matches(" and more").parse::<i64>().expect("lo"), None),
        };
        assert_eq!(lo, next, "rows follow each other");
        assert_eq!(LifeGroup::by_age(birth, months_after_birth(lo)), group, "{lo} months");
        // One day before the month completes, still the group before.
        if lo > 0 {
            let day_before = months_after_birth(lo) - time::Duration::days(1);
            assert_ne!(LifeGroup::by_age(birth, day_before), group, "{lo} months less a day");
        }
        if let Some(hi) = hi {
            assert_eq!(LifeGroup::by_age(birth, months_after_birth(hi)), group, "{hi} months");
            next = hi + 1;
        }
    }
    assert_eq!(rows.len(), 5);
}

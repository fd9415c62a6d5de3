//! The relational projection and the conflict index: the rows a merge writes.

use super::scope_texts;
use crate::core::{Projection, Records};
use crate::sql::{Dialect, Insert, Row, Statement, Value};
use crate::{CONFLICTS_PAGE_MAX, ConflictFilter, ConflictRecord, ConflictValueRecord, StoreError};
use posync_model::record::{FieldKind, format_date};
use posync_model::{DeviceId, DocId, Field, FieldConflict, FieldValue, Person, Policy, Scope, Visit};

/// Visit columns before the service columns (one per [`Field::SERVICES`] key).
pub const VISIT_COLUMNS: [&str; 19] = [
    "visit_id",
    "doc_id",
    "posyandu",
    "session_date",
    "person_id",
    "name",
    "sex",
    "birth_date",
    "weight_g",
    "length_mm",
    "lying",
    "head_circ_mm",
    "muac_mm",
    "vitamin_a",
    "notes",
    "recorded_by",
    "recorded_at",
    "life_group",
    "invalid",
];

pub const PEOPLE_COLUMNS: [&str; 18] = [
    "person_id",
    "doc_id",
    "posyandu",
    "name",
    "sex",
    "birth_date",
    "mother_name",
    "nik",
    "registered_by",
    "registered_at",
    "mother_nik",
    "address",
    "rt",
    "rw",
    "pregnant",
    "kia_book",
    "merged_into",
    "invalid",
];

/// A service value as its column's value. Columns are typed: a value of another type
/// (possible only from a foreign writer) projects as NULL rather than failing the merge.
fn service_value(field: Field, v: Option<&FieldValue>) -> Value {
    match (field.kind(), v) {
        (FieldKind::Bool, Some(FieldValue::Bool(b))) => Value::Bool(*b),
        (FieldKind::Int { .. }, Some(FieldValue::Int(i))) => Value::Int(*i),
        (FieldKind::Bool | FieldKind::Int { .. }, _) => Value::Null,
        (_, Some(FieldValue::Text(t))) => Value::Text(t.clone()),
        _ => Value::Null,
    }
}

fn visit_row(doc: &str, posyandu: &str, date: &str, v: &Visit, invalid: Option<String>) -> Vec<Value> {
    let mut row: Vec<Value> = vec![
        v.visit_id.to_string().into(),
        doc.into(),
        posyandu.into(),
        date.into(),
        v.person_id.to_string().into(),
        v.name.clone().into(),
        v.sex.code().into(),
        format_date(v.birth_date).into(),
        v.weight_g.into(),
        v.length_mm.into(),
        v.lying.into(),
        v.head_circ_mm.into(),
        v.muac_mm.into(),
        v.vitamin_a.map(|a| a.code()).into(),
        v.notes.clone().into(),
        v.recorded_by.to_string().into(),
        v.recorded_at.into(),
        v.group.code().into(),
        invalid.into(),
    ];
    row.extend(Field::SERVICES.iter().map(|f| service_value(*f, v.services.get(f))));
    row
}

fn person_row(doc: &str, posyandu: &str, p: &Person, invalid: Option<String>) -> Vec<Value> {
    vec![
        p.person_id.to_string().into(),
        doc.into(),
        posyandu.into(),
        p.name.clone().into(),
        p.sex.code().into(),
        format_date(p.birth_date).into(),
        p.mother_name.clone().into(),
        p.nik.clone().into(),
        p.registered_by.to_string().into(),
        p.registered_at.into(),
        p.mother_nik.clone().into(),
        p.address.clone().into(),
        p.rt.into(),
        p.rw.into(),
        p.pregnant.into(),
        p.kia_book.into(),
        p.merged_into.map(|m| m.to_string()).into(),
        invalid.into(),
    ]
}

/// How to write a document's projection: refuse if `collision` returns a row (an id already
/// in another document: `id_collision`), then run `deletes`, then `inserts`.
#[derive(Clone, Debug)]
pub struct ProjectionWrite {
    pub collision: Statement,
    /// What the collision names: "a visit id", "a person id".
    pub what: &'static str,
    pub deletes: Vec<Statement>,
    pub inserts: Vec<Insert>,
}

/// The rows of the records projected: all of the document's, or (`p.only`) those records',
/// replacing what was there.
pub fn projection(d: Dialect, doc: DocId, posyandu: &str, p: &Projection) -> ProjectionWrite {
    let doc_s = doc.to_string();
    let invalid = |id: &str| p.invalid.get(id).cloned();
    let only: Value = p.only.clone().map(Value::Texts).unwrap_or(Value::Null);
    let collision = |table: &str, column: &str, ids: Vec<String>| {
        Statement::new(
            format!("SELECT 1 FROM {table} WHERE {} AND doc_id <> {} LIMIT 1", d.in_list(column, 1), d.p(2)),
            vec![Value::Texts(ids), doc_s.clone().into()],
        )
    };
    match &p.records {
        Records::Visits { date, visits } => {
            let date = format_date(*date);
            let mut columns = VISIT_COLUMNS.to_vec();
            columns.extend(Field::SERVICES.iter().map(|f| f.key()));
            let mut rows = Vec::with_capacity(visits.len());
            let mut immunisations = Vec::new();
            for v in visits {
                let vid = v.visit_id.to_string();
                rows.push(visit_row(&doc_s, posyandu, &date, v, invalid(&vid)));
                for (antigen, on) in &v.immunisations {
                    immunisations.push(vec![vid.clone().into(), antigen.clone().into(), format_date(*on).into()]);
                }
            }
            let of_doc = format!("doc_id = {} AND {}", d.p(1), d.in_list_or_all("visit_id", 2));
            ProjectionWrite {
                collision: collision("visits", "visit_id", visits.iter().map(|v| v.visit_id.to_string()).collect()),
                what: "a visit id",
                deletes: vec![
                    Statement::new(
                        format!(
                            "DELETE FROM visit_immunisations WHERE visit_id IN (SELECT visit_id FROM visits WHERE {of_doc})"
                        ),
                        vec![doc_s.clone().into(), only.clone()],
                    ),
                    Statement::new(format!("DELETE FROM visits WHERE {of_doc}"), vec![doc_s.clone().into(), only]),
                ],
                inserts: vec![
                    Insert { table: "visits", columns, rows, on_conflict: "" },
                    Insert {
                        table: "visit_immunisations",
                        columns: vec!["visit_id", "antigen", "given_on"],
                        rows: immunisations,
                        on_conflict: "",
                    },
                ],
            }
        }
        Records::People(people) => ProjectionWrite {
            collision: collision("people", "person_id", people.iter().map(|p| p.person_id.to_string()).collect()),
            what: "a person id",
            deletes: vec![Statement::new(
                format!("DELETE FROM people WHERE doc_id = {} AND {}", d.p(1), d.in_list_or_all("person_id", 2)),
                vec![doc_s.clone().into(), only],
            )],
            inserts: vec![Insert {
                table: "people",
                columns: PEOPLE_COLUMNS.to_vec(),
                rows: people
                    .iter()
                    .map(|x| person_row(&doc_s, posyandu, x, invalid(&x.person_id.to_string())))
                    .collect(),
                on_conflict: "",
            }],
        },
    }
}

// ---- the conflict index ----

/// Device actors are the device id's 16 bytes, with an incarnation after them from a
/// replica's second incarnation on; anything else (genesis, server) is no device.
fn device_of_actor(hex_actor: &str) -> Option<DeviceId> {
    DeviceId::of_actor(&automerge::ActorId::from(hex::decode(hex_actor).ok()?))
}

pub fn policy_code(p: Policy) -> &'static str {
    match p {
        Policy::Review => "review",
        Policy::Auto => "auto",
    }
}

/// Replace a document's rows in the conflict index with `conflicts`: all of them, or (with
/// `only`) those of the records it names, the rest staying as they are. A conflict still
/// open keeps its `opened_at`. Run the delete, then the upsert.
pub fn conflicts_write(
    d: Dialect,
    doc: DocId,
    posyandu: &str,
    conflicts: &[FieldConflict],
    only: Option<&[String]>,
    now: i64,
) -> Result<(Statement, Insert), StoreError> {
    let doc_s = doc.to_string();
    let mut rows = Vec::with_capacity(conflicts.len());
    let mut ids = Vec::with_capacity(conflicts.len());
    for c in conflicts {
        let values: Vec<ConflictValueRecord> = c
            .values
            .iter()
            .map(|v| ConflictValueRecord {
                value: v.value.clone(),
                device: device_of_actor(&v.actor),
                winner: v.winner,
            })
            .collect();
        if c.policy() == Policy::Auto {
            // Logged without values: the winner stands.
            tracing::info!(doc = %doc, field = %c.field, "auto-resolved conflict");
        }
        let id = c.id(doc).to_string();
        ids.push(id.clone());
        rows.push(vec![
            id.into(),
            doc_s.clone().into(),
            posyandu.into(),
            c.collection.clone().into(),
            c.record_id.clone().into(),
            c.field.clone().into(),
            policy_code(c.policy()).into(),
            serde_json::to_string(&values).map_err(|e| StoreError::Backend(e.to_string()))?.into(),
            now.into(),
            now.into(),
        ]);
    }
    let delete = Statement::new(
        format!(
            "DELETE FROM conflicts WHERE doc_id = {} AND {} AND {}",
            d.p(1),
            d.not_in_list("conflict_id", 2),
            d.in_list_or_all("record_id", 3)
        ),
        vec![doc_s.into(), Value::Texts(ids), only.map(|o| Value::Texts(o.to_vec())).unwrap_or(Value::Null)],
    );
    let upsert = Insert {
        table: "conflicts",
        columns: CONFLICT_COLUMNS.split(", ").collect(),
        rows,
        on_conflict: "ON CONFLICT (conflict_id) DO UPDATE SET vals = excluded.vals, updated_at = excluded.updated_at",
    };
    Ok((delete, upsert))
}

/// The conflict index's columns, in the order a conflict row is written.
const CONFLICT_COLUMNS: &str =
    "conflict_id, doc_id, posyandu, collection, record_id, field, policy, vals, opened_at, updated_at";

/// A conflict with the name and birth date of whom it is about (its visit's child, or the
/// registered person), for a reviewer's list.
const CONFLICT_FROM: &str = "SELECT c.conflict_id, c.doc_id, c.posyandu, c.collection, c.record_id, c.field, c.policy,
        c.vals, c.opened_at, c.updated_at, COALESCE(v.name, p.name), COALESCE(v.birth_date, p.birth_date)
     FROM conflicts c
     LEFT JOIN visits v ON v.visit_id = c.record_id
     LEFT JOIN people p ON p.person_id = c.record_id";

/// Open conflicts of the scope, filtered, oldest first, one page (at most 1,000).
pub fn conflicts_list(d: Dialect, scope: &Scope, filter: &ConflictFilter) -> Statement {
    let policy = policy_code(filter.policy.unwrap_or(Policy::Review));
    let limit = filter.limit.unwrap_or(CONFLICTS_PAGE_MAX).clamp(1, CONFLICTS_PAGE_MAX);
    let born = "COALESCE(v.birth_date, p.birth_date)";
    Statement::new(
        format!(
            "{CONFLICT_FROM}
             WHERE {} AND c.policy = {} AND {} AND {}
               AND ({} IS NULL OR {born} >= {}) AND ({} IS NULL OR {born} < {})
               AND ({} IS NULL OR c.opened_at <= {})
             ORDER BY c.opened_at, c.conflict_id LIMIT {} OFFSET {}",
            d.in_list("c.posyandu", 1),
            d.p(2),
            d.eq_or_all("c.posyandu", 3),
            d.eq_or_all("c.field", 4),
            d.text_p(5),
            d.p(5),
            d.text_p(6),
            d.p(6),
            d.int_p(7),
            d.p(7),
            d.p(8),
            d.p(9),
        ),
        vec![
            scope_texts(scope),
            policy.into(),
            filter.posyandu.as_ref().map(|p| p.as_str()).into(),
            filter.field.clone().into(),
            filter.born_from.map(format_date).into(),
            filter.born_before.map(format_date).into(),
            filter.opened_before.into(),
            i64::from(limit).into(),
            i64::try_from(filter.offset).unwrap_or(i64::MAX).into(),
        ],
    )
}

pub fn conflict_by_id(d: Dialect, id: &str) -> Statement {
    Statement::new(format!("{CONFLICT_FROM} WHERE c.conflict_id = {}", d.p(1)), vec![id.into()])
}

/// A row of [`conflicts_list`] or [`conflict_by_id`].
pub fn conflict(row: &Row) -> Result<ConflictRecord, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad conflict row: {what}"));
    Ok(ConflictRecord {
        id: row.text(0)?,
        doc: row.text(1)?.parse().map_err(|_| bad("doc"))?,
        posyandu: row.text(2)?.parse().map_err(|_| bad("posyandu"))?,
        collection: row.text(3)?,
        record_id: row.text(4)?,
        field: row.text(5)?,
        policy: if row.text(6)? == "auto" { Policy::Auto } else { Policy::Review },
        values: serde_json::from_str(&row.text(7)?).map_err(|_| bad("values"))?,
        opened_at: row.int(8)?,
        updated_at: row.int(9)?,
        subject_name: row.opt_text(10)?,
        subject_birth_date: row.opt_text(11)?,
    })
}

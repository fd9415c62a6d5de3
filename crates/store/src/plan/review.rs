//! What a bidan or admin reviews (conflicts, duplicate people, invalid records) and the
//! report queries, read from the projection.

use super::scope_texts;
use crate::StoreError;
use crate::sql::{Dialect, Row, Statement};
use posync_model::Scope;
use posync_model::record::{format_date, parse_date};

/// The document and posyandu of a person not merged into another.
pub fn locate_person(d: Dialect, id: posync_model::PersonId) -> Statement {
    Statement::new(
        format!("SELECT doc_id, posyandu FROM people WHERE person_id = {} AND merged_into IS NULL", d.p(1)),
        vec![id.to_string().into()],
    )
}

/// Pairs of people in the scope who look like one person registered twice.
pub fn duplicate_people(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT a.person_id, a.posyandu, a.name, a.birth_date, b.person_id, b.posyandu, b.name, b.birth_date,
                    CASE WHEN a.nik IS NOT NULL AND a.nik = b.nik THEN 'nik'
                         WHEN a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                              THEN 'mother_nik_and_birth_date'
                         ELSE 'name_birth_date_and_mother' END
             FROM people a JOIN people b ON a.person_id < b.person_id
             WHERE a.merged_into IS NULL AND b.merged_into IS NULL AND {} AND {}
               AND ((a.nik IS NOT NULL AND a.nik = b.nik)
                 OR (a.mother_nik IS NOT NULL AND a.mother_nik = b.mother_nik AND a.birth_date = b.birth_date
                     AND lower(trim(a.name)) = lower(trim(b.name)))
                 OR (a.birth_date = b.birth_date AND lower(trim(a.name)) = lower(trim(b.name))
                     AND lower(trim(a.mother_name)) = lower(trim(b.mother_name)) AND a.mother_name <> ''))
             ORDER BY a.birth_date, a.person_id LIMIT 1000",
            d.in_list("a.posyandu", 1),
            d.in_list("b.posyandu", 1)
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`duplicate_people`].
pub fn duplicate_pair(row: &Row) -> Result<crate::DuplicatePair, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad people row: {what}"));
    let person = |at: usize| -> Result<crate::PersonSummary, StoreError> {
        Ok(crate::PersonSummary {
            person_id: row.text(at)?.parse().map_err(|_| bad("id"))?,
            posyandu: row.text(at + 1)?.parse().map_err(|_| bad("posyandu"))?,
            name: row.text(at + 2)?,
            birth_date: row.text(at + 3)?,
        })
    };
    Ok(crate::DuplicatePair { reason: row.text(8)?, a: person(0)?, b: person(4)? })
}

/// Records of the scope marked invalid (at most 1,000).
pub fn invalid_records(d: Dialect, scope: &Scope) -> Statement {
    let in_scope = d.in_list("posyandu", 1);
    Statement::new(
        format!(
            "SELECT doc_id, posyandu, 'visits', visit_id, name, session_date, invalid FROM visits
             WHERE invalid IS NOT NULL AND {in_scope}
             UNION ALL
             SELECT doc_id, posyandu, 'people', person_id, name, NULL, invalid FROM people
             WHERE invalid IS NOT NULL AND {in_scope}
             ORDER BY 1, 4 LIMIT 1000"
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`invalid_records`].
pub fn invalid_record(row: &Row) -> Result<crate::InvalidRecord, StoreError> {
    Ok(crate::InvalidRecord {
        doc: row.text(0)?.parse().map_err(|_| StoreError::Backend("bad stored doc id".into()))?,
        posyandu: row.text(1)?.parse().map_err(|_| StoreError::Backend("bad stored posyandu".into()))?,
        collection: row.text(2)?,
        record_id: row.text(3)?,
        name: row.text(4)?,
        session_date: row.opt_text(5)?,
        issues: serde_json::from_str(&row.text(6)?).map_err(|_| StoreError::Backend("bad stored issues".into()))?,
    })
}

// ---- reports ----

/// Visits of the scope with a session date in `from..=to`, as report facts (merged people
/// count as the person kept; invalid records are left out).
pub fn report_facts(d: Dialect, scope: &Scope, from: time::Date, to: time::Date) -> Statement {
    Statement::new(
        format!(
            "{} WHERE {} AND v.session_date BETWEEN {} AND {} AND v.invalid IS NULL",
            fact_select(d, ""),
            d.in_list("v.posyandu", 1),
            d.p(2),
            d.p(3)
        ),
        vec![scope_texts(scope), format_date(from).into(), format_date(to).into()],
    )
}

/// Every visit of one person in the scope (and of anyone merged into them) as report facts,
/// with whether the server found it invalid (column 16), oldest first.
pub fn person_facts(d: Dialect, scope: &Scope, person: posync_model::PersonId) -> Statement {
    let select = fact_select(d, ", v.invalid IS NOT NULL");
    Statement::new(
        format!(
            "{select} WHERE {}
               AND (v.person_id = {p} OR v.person_id IN (SELECT m.person_id FROM people m WHERE m.merged_into = {p}))
             ORDER BY v.session_date, v.visit_id",
            d.in_list("v.posyandu", 1),
            p = d.p(2),
        ),
        vec![scope_texts(scope), person.to_string().into()],
    )
}

/// A row of [`person_facts`].
pub fn person_visit(row: &Row) -> Result<crate::PersonVisit, StoreError> {
    Ok(crate::PersonVisit { fact: fact(row)?, invalid: row.opt_bool(16)?.unwrap_or(false) })
}

/// The columns of a report fact, by visit (`v`), then `extra` columns; the person a duplicate
/// was merged into.
fn fact_select(d: Dialect, extra: &str) -> String {
    format!(
        "SELECT v.posyandu, v.session_date,
                COALESCE((SELECT p.merged_into FROM people p WHERE p.person_id = v.person_id), v.person_id),
                v.name, v.sex, v.birth_date, v.life_group, v.weight_g, v.length_mm, v.lying, v.muac_mm,
                v.oedema, v.growth_card, v.bp_systolic, v.bp_diastolic,
                (SELECT {} FROM visit_immunisations i WHERE i.visit_id = v.visit_id){extra}
         FROM visits v",
        d.text_agg("i.antigen")
    )
}

/// People seen at the scope's posyandu (by their visits), whose name contains `name` if
/// given, by name; at most `limit`.
pub fn people_seen(d: Dialect, scope: &Scope, name: Option<&str>, limit: u32) -> Statement {
    let pattern = name.map(|n| format!("%{}%", n.to_lowercase().replace(['%', '_', '\\'], "")));
    Statement::new(
        format!(
            "SELECT v.person_id, MAX(v.name), MAX(v.sex), MAX(v.birth_date), MAX(v.posyandu), MAX(v.session_date)
             FROM visits v
             WHERE {} AND ({} IS NULL OR LOWER(v.name) LIKE {})
               AND v.person_id NOT IN (SELECT m.person_id FROM people m WHERE m.merged_into IS NOT NULL)
             GROUP BY v.person_id ORDER BY MAX(v.name), v.person_id LIMIT {}",
            d.in_list("v.posyandu", 1),
            d.text_p(2),
            d.p(2),
            d.p(3)
        ),
        vec![scope_texts(scope), pattern.into(), i64::from(limit).into()],
    )
}

/// Where the scope's registered people live and who their mother is (for home visits).
pub fn people_contacts(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT person_id, mother_name, address, rt, rw FROM people WHERE {} AND merged_into IS NULL",
            d.in_list("posyandu", 1)
        ),
        vec![scope_texts(scope)],
    )
}

/// People registered at the scope's posyandu (not merged into another, not invalid), each
/// with how many registrations were merged into them, by posyandu and id: the analysts'
/// people export.
pub fn people_export(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT p.person_id, p.posyandu, p.name, p.sex, p.birth_date, p.kia_book, p.pregnant, p.registered_at,
                    (SELECT COUNT(*) FROM people m WHERE m.merged_into = p.person_id)
             FROM people p WHERE {} AND p.merged_into IS NULL AND p.invalid IS NULL
             ORDER BY {}, {}",
            d.in_list("p.posyandu", 1),
            d.by_bytes("p.posyandu"),
            d.by_bytes("p.person_id")
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`people_export`].
pub fn person_export(row: &Row) -> Result<crate::PersonExport, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad projected {what}"));
    Ok(crate::PersonExport {
        person_id: row.text(0)?.parse().map_err(|_| bad("person id"))?,
        posyandu: row.text(1)?.parse().map_err(|_| bad("posyandu"))?,
        name: row.text(2)?,
        sex: row.text(3)?,
        birth_date: row.text(4)?,
        kia_book: row.bool(5)?,
        pregnant: row.bool(6)?,
        registered_at: row.int(7)?,
        merged_from: u64::try_from(row.int(8)?).map_err(|_| bad("merge count"))?,
    })
}

/// A row of [`people_contacts`].
pub fn person_contact(row: &Row) -> Result<crate::PersonContact, StoreError> {
    Ok(crate::PersonContact {
        person_id: row.text(0)?.parse().map_err(|_| StoreError::Backend("bad projected person id".into()))?,
        mother_name: row.text(1)?,
        address: row.text(2)?,
        rt: row.opt_int(3)?,
        rw: row.opt_int(4)?,
    })
}

/// A row of [`people_seen`].
pub fn person_seen(row: &Row) -> Result<crate::PersonSeen, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad projected {what}"));
    Ok(crate::PersonSeen {
        person_id: row.text(0)?.parse().map_err(|_| bad("person id"))?,
        name: row.text(1)?,
        sex: row.text(2)?,
        birth_date: row.text(3)?,
        posyandu: row.text(4)?.parse().map_err(|_| bad("posyandu"))?,
        last_visit: row.text(5)?,
    })
}

/// A row of [`report_facts`].
pub fn fact(row: &Row) -> Result<posync_model::report::VisitFact, StoreError> {
    let bad = |what: &str| StoreError::Backend(format!("bad projected {what}"));
    Ok(posync_model::report::VisitFact {
        posyandu: row.text(0)?.parse().map_err(|_| bad("posyandu"))?,
        session_date: parse_date(&row.text(1)?).ok_or_else(|| bad("session date"))?,
        person_id: row.text(2)?.parse().map_err(|_| bad("person id"))?,
        name: row.text(3)?,
        sex: posync_model::Sex::parse(&row.text(4)?).ok_or_else(|| bad("sex"))?,
        birth_date: parse_date(&row.text(5)?).ok_or_else(|| bad("birth date"))?,
        group: posync_model::LifeGroup::parse(&row.text(6)?).ok_or_else(|| bad("life group"))?,
        weight_g: row.opt_int(7)?,
        length_mm: row.opt_int(8)?,
        lying: row.opt_bool(9)?,
        muac_mm: row.opt_int(10)?,
        oedema: row.opt_bool(11)?.unwrap_or(false),
        growth_card: row.opt_bool(12)?.unwrap_or(false),
        bp_systolic: row.opt_int(13)?,
        bp_diastolic: row.opt_int(14)?,
        immunisations: row
            .opt_text(15)?
            .map(|s| s.split(',').filter(|a| !a.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

/// People in the registries of the scope (not merged, not invalid).
pub fn registered_people(d: Dialect, scope: &Scope) -> Statement {
    Statement::new(
        format!(
            "SELECT posyandu, person_id, birth_date, kia_book FROM people
             WHERE {} AND merged_into IS NULL AND invalid IS NULL",
            d.in_list("posyandu", 1)
        ),
        vec![scope_texts(scope)],
    )
}

/// A row of [`registered_people`]; `None` for one that does not parse (reports count what
/// they can read).
pub fn registered_person(row: &Row) -> Option<posync_model::report::RegisteredPerson> {
    Some(posync_model::report::RegisteredPerson {
        posyandu: row.text(0).ok()?.parse().ok()?,
        person_id: row.text(1).ok()?.parse().ok()?,
        birth_date: parse_date(&row.text(2).ok()?)?,
        kia_book: row.bool(3).ok()?,
    })
}

/// Counts for [`crate::StoreStats`], in its field order.
pub const STATS: [&str; 5] = [
    "SELECT COUNT(*) FROM docs",
    "SELECT COUNT(*) FROM visits",
    "SELECT COUNT(*) FROM people",
    "SELECT COUNT(*) FROM feed",
    "SELECT COUNT(*) FROM device_docs",
];

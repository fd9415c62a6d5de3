//! FHIR R4 export shaped for SATUSEHAT: one posyandu month (or every posyandu of a unit) as
//! a `transaction` Bundle of Patient, RelatedPerson, Organization (the puskesmas), Location
//! (the posyandu), Encounter (one per visit), Observation (measurements with LOINC codes and
//! UCUM units, WHO z-scores with their method and interpretation) and Immunization (one per
//! dose). `proto/fhir/PROFILE.md` is the written profile; `proto/fhir/profile.json` is the same
//! table for tests.
//!
//! Resource ids are UUIDv5 of posync ids, and every entry is a `PUT Resource/id`: exporting
//! the same month again updates the resources instead of creating new ones. Merged
//! duplicates export as the person kept. Records the server found invalid (left out of the
//! reports) are left out here too.
//!
//! The mapping ([`bundle`]) is a pure function; [`export`] reads the documents of the month
//! from the store.

use crate::error::ApiError;
use crate::reports::Coverage;
use posync_model::growth::{self, Measurement};
use posync_model::record::{Person, Visit, format_date};
use posync_model::report::Month;
use posync_model::validate::{has_errors, intrinsic_person, intrinsic_visit};
use posync_model::{DocId, DocKind, Field, FieldValue, LifeGroup, PersonId, PosyanduId, Sex, UnitId, UnitKind, doc};
use posync_proto::ErrorCode;
use posync_store::{Store, UnitTree};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// SATUSEHAT's identifier system for a person's NIK.
pub const NIK_SYSTEM: &str = "https://fhir.kemkes.go.id/id/nik";
/// SATUSEHAT's identifier system for a newborn identified by the mother's NIK.
pub const NIK_IBU_SYSTEM: &str = "https://fhir.kemkes.go.id/id/nik-ibu";
/// SATUSEHAT's address extension (administrative codes, RT and RW).
pub const ADMINISTRATIVE_CODE: &str = "https://fhir.kemkes.go.id/r4/StructureDefinition/administrativeCode";
/// The `meta.tag` code of a Patient without a NIK or the mother's NIK.
pub const NO_NIK_TAG: &str = "no-nik";
/// posync's own naming and code systems (units, visits, antigens, life-cycle groups, ...).
pub const POSYNC_BASE: &str = "https://fhir.posync.id";
pub const LOINC: &str = "http://loinc.org";
pub const UCUM: &str = "http://unitsofmeasure.org";
pub const ATC: &str = "http://www.whocc.no/atc";
const OBSERVATION_CATEGORY: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const INTERPRETATION: &str = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation";
const ACT_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-ActCode";
const ROLE_CODE: &str = "http://terminology.hl7.org/CodeSystem/v3-RoleCode";

/// The namespace of resource ids (UUIDv5 of `Resource/posync key`). Part of the export's
/// contract: changing it would make every re-export create resources anew.
const FHIR_NAMESPACE: uuid::Uuid = uuid::Uuid::from_u128(0x7c1e_52a4_0f6d_4e8b_a3c1_f41f_5a7e_0d18);

fn system(what: &str) -> String {
    format!("{POSYNC_BASE}/{what}")
}

/// The id of the resource of `kind` for the posync `key` (a visit id, a person id, a unit id,
/// ...): the same on every export.
pub fn resource_id(kind: &str, key: &str) -> String {
    uuid::Uuid::new_v5(&FHIR_NAMESPACE, format!("{kind}/{key}").as_bytes()).to_string()
}

fn reference(kind: &str, id: &str) -> Value {
    json!({ "reference": format!("{kind}/{id}") })
}

/// A transaction entry that creates or updates `resource` under its id.
fn entry(resource: Value) -> Value {
    let kind = resource["resourceType"].as_str().unwrap_or_default().to_owned();
    let id = resource["id"].as_str().unwrap_or_default().to_owned();
    json!({
        "fullUrl": format!("urn:uuid:{id}"),
        "resource": resource,
        "request": { "method": "PUT", "url": format!("{kind}/{id}") },
    })
}

/// The antigens of the national schedule: display name and WHO ATC code.
pub fn antigen(code: &str) -> Option<(&'static str, &'static str)> {
    Some(match (code, dose_of(code).0) {
        (_, "HB") => ("Hepatitis B (HB0, dosis lahir)", "J07BC01"),
        (_, "BCG") => ("BCG", "J07AN01"),
        (_, "OPV") => ("Polio tetes (OPV/bOPV)", "J07BF04"),
        (_, "IPV") => ("Polio suntik (IPV)", "J07BF03"),
        (_, "DPT-HB-Hib") => ("DPT-HB-Hib (pentavalen)", "J07CA11"),
        (_, "PCV") => ("Pneumokokus konjugasi (PCV)", "J07AL02"),
        (_, "RV") => ("Rotavirus (RV)", "J07BH01"),
        (_, "MR") => ("Campak-Rubela (MR)", "J07BD53"),
        _ => return None,
    })
}

/// The series and dose number of an antigen code (`DPT-HB-Hib-2` → `DPT-HB-Hib`, 2; `HB0` → `HB`, 0).
fn dose_of(code: &str) -> (&str, u32) {
    if code == "HB0" {
        return ("HB", 0);
    }
    match code.rsplit_once('-') {
        Some((series, n)) => n.parse().map_or((code, 1), |n| (series, n)),
        None => (code, 1),
    }
}

mod clinical;
mod patient;
use clinical::*;
use patient::*;

/// What one export holds, for the audit log and the caller (counts only, never contents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    pub patients: usize,
    pub encounters: usize,
    pub observations: usize,
    pub immunizations: usize,
}

/// The month's records as read from the documents: valid registrations and visits.
pub struct MonthRecords {
    pub month: Month,
    /// Registrations (not invalid) of the covered posyandu, merged ones included (with
    /// `merged_into` set).
    pub people: Vec<(PosyanduId, Person)>,
    /// Visits (not invalid) with their posyandu and session date.
    pub visits: Vec<(PosyanduId, time::Date, Visit)>,
}

/// The person a registration counts as: the one it was merged into, followed to the end.
fn kept_person(merged: &BTreeMap<PersonId, PersonId>, id: PersonId) -> PersonId {
    let mut cur = id;
    for _ in 0..8 {
        match merged.get(&cur) {
            Some(next) if *next != cur => cur = *next,
            _ => break,
        }
    }
    cur
}

/// The Bundle of `records`, named by `key` (the unit and month it covers).
pub fn bundle(tree: &UnitTree, records: &MonthRecords, key: &str) -> (Value, ExportCounts) {
    let merged: BTreeMap<PersonId, PersonId> =
        records.people.iter().filter_map(|(_, p)| p.merged_into.map(|k| (p.person_id, k))).collect();
    let registration: BTreeMap<PersonId, (&PosyanduId, &Person)> =
        records.people.iter().map(|(pos, p)| (p.person_id, (pos, p))).collect();
    let mut visits: Vec<&(PosyanduId, time::Date, Visit)> = records.visits.iter().collect();
    visits.sort_by(|a, b| (a.1, &a.0, a.2.visit_id).cmp(&(b.1, &b.0, b.2.visit_id)));

    // Each person once: the kept person's registration, else a duplicate's, else the visit.
    let mut subjects: BTreeMap<PersonId, Subject<'_>> = BTreeMap::new();
    for (posyandu, _, v) in &visits {
        let id = kept_person(&merged, v.person_id);
        let registered = registration
            .get(&id)
            .or_else(|| registration.get(&v.person_id))
            .filter(|(_, p)| p.merged_into.is_none() || p.person_id != id)
            .copied();
        let s = subjects.entry(id).or_insert(Subject { id, registered, posyandu, latest: v });
        s.latest = v; // visits are in date order: the last one is the latest
        if s.registered.is_none() {
            s.registered = registered;
        }
    }

    let mut organizations: BTreeMap<String, Value> = BTreeMap::new();
    let mut locations: BTreeMap<String, Value> = BTreeMap::new();
    let mut place = |posyandu: &PosyanduId| -> (Value, Option<Value>) {
        let chain = chain_of(tree, posyandu);
        let org = chain.get(&UnitKind::Puskesmas).map(|u| {
            let id = resource_id("Organization", u.id.as_str());
            organizations.entry(id.clone()).or_insert_with(|| {
                json!({
                    "resourceType": "Organization",
                    "id": id,
                    "identifier": [{ "use": "official", "system": system("sid/unit"), "value": u.id.as_str() }],
                    "active": true,
                    "type": [{ "coding": [{ "system": "http://terminology.hl7.org/CodeSystem/organization-type",
                        "code": "prov", "display": "Healthcare Provider" }] }],
                    "name": u.name,
                })
            });
            json!({ "reference": format!("Organization/{id}"), "display": u.name })
        });
        let id = resource_id("Location", posyandu.as_str());
        let name = chain.get(&UnitKind::Posyandu).map_or_else(|| posyandu.to_string(), |u| u.name.clone());
        locations.entry(id.clone()).or_insert_with(|| {
            let mut loc = json!({
                "resourceType": "Location",
                "id": id,
                "identifier": [{ "use": "official", "system": system("sid/unit"), "value": posyandu.as_str() }],
                "status": "active",
                "name": name,
                "description": "Posyandu",
                "mode": "instance",
                "type": [{ "coding": [{ "system": ROLE_CODE, "code": "COMM", "display": "Community Location" }] }],
                "address": address(tree, posyandu, None),
            });
            if let Some(org) = &org {
                loc["managingOrganization"] = org.clone();
            }
            loc
        });
        (json!({ "reference": format!("Location/{id}"), "display": name }), org)
    };

    let mut counts = ExportCounts::default();
    let mut care = Vec::new();
    for (posyandu, date, v) in &visits {
        let subject = kept_person(&merged, v.person_id);
        let patient_id = resource_id("Patient", &subject.to_string());
        let encounter_id = resource_id("Encounter", &v.visit_id.to_string());
        let visit = v.visit_id.to_string();
        let at = VisitRefs {
            visit: &visit,
            patient: reference("Patient", &patient_id),
            encounter: reference("Encounter", &encounter_id),
            date: format_date(*date),
        };
        let (location, provider) = place(posyandu);
        let period = json!({ "start": at.date, "end": at.date });
        let mut encounter = json!({
            "resourceType": "Encounter",
            "id": encounter_id,
            "identifier": [{ "use": "official", "system": system("sid/visit"), "value": visit }],
            "status": "finished",
            "statusHistory": [{ "status": "finished", "period": period }],
            "class": { "system": ACT_CODE, "code": "AMB", "display": "ambulatory" },
            "type": [{ "coding": [{ "system": system("CodeSystem/life-group"), "code": v.group.code(),
                "display": group_label(v.group) }], "text": format!("Posyandu: {}", group_label(v.group)) }],
            "subject": at.patient,
            "period": period,
            "location": [{ "location": location }],
        });
        if let Some(org) = provider {
            encounter["serviceProvider"] = org;
        }
        care.push(entry(encounter));
        counts.encounters += 1;
        for o in visit_observations(&at, v, *date) {
            counts.observations += 1;
            care.push(entry(o));
        }
        for i in immunizations(&at, v, *date, &location) {
            counts.immunizations += 1;
            care.push(entry(i));
        }
    }

    let mut entries: Vec<Value> = Vec::new();
    entries.extend(organizations.into_values().map(entry));
    entries.extend(locations.into_values().map(entry));
    let mut related = Vec::new();
    for s in subjects.values() {
        let (p, r) = patient(tree, s);
        entries.push(entry(p));
        related.extend(r.map(entry));
        counts.patients += 1;
    }
    entries.extend(related);
    entries.extend(care);
    let bundle = json!({
        "resourceType": "Bundle",
        "id": resource_id("Bundle", key),
        "type": "transaction",
        "entry": entries,
    });
    (bundle, counts)
}

/// The valid records of `month` in what `coverage` covers, read from the stored documents:
/// the month's session documents and the registries of the covered posyandu.
pub async fn month_records(
    store: &dyn Store,
    coverage: &Coverage,
    month: Month,
    today: time::Date,
) -> Result<MonthRecords, ApiError> {
    let listed: BTreeSet<DocId> = store.list(coverage.scope.clone()).await?.into_iter().map(|m| m.doc).collect();
    let load = |bytes: &[u8], id: DocId| {
        automerge::Automerge::load(bytes)
            .map_err(|_| ApiError::new(ErrorCode::Internal, "stored document does not load").with_doc(id))
    };
    let layout = |id: DocId| move |_| ApiError::new(ErrorCode::Internal, "document layout").with_doc(id);
    let mut records = MonthRecords { month, people: Vec::new(), visits: Vec::new() };
    for posyandu in coverage.scope.posyandu() {
        let registry = DocId::for_registry(posyandu);
        if listed.contains(&registry)
            && let Some(stored) = store.get(registry).await?
            && stored.meta.kind == DocKind::Registry
        {
            let am = load(&stored.bytes, registry)?;
            for p in doc::people(&am).map_err(layout(registry))? {
                if !has_errors(&intrinsic_person(&p, today)) {
                    records.people.push((posyandu.clone(), p));
                }
            }
        }
        let mut day = month.first_day();
        while month.contains(day) {
            let session = DocId::for_session(posyandu, day);
            if listed.contains(&session)
                && let Some(stored) = store.get(session).await?
                && stored.meta.kind == DocKind::Session
            {
                let am = load(&stored.bytes, session)?;
                for v in doc::visits(&am).map_err(layout(session))? {
                    if !has_errors(&intrinsic_visit(&v, day, today)) {
                        records.visits.push((posyandu.clone(), day, v));
                    }
                }
            }
            let Some(next) = day.next_day() else { break };
            day = next;
        }
    }
    Ok(records)
}

/// The FHIR export of `month` over what `coverage` covers; `unit` names it (the unit asked
/// for, or `scope` for the caller's whole scope).
pub async fn export(
    store: &dyn Store,
    coverage: &Coverage,
    unit: &str,
    month: Month,
    today: time::Date,
) -> Result<(Value, ExportCounts), ApiError> {
    let records = month_records(store, coverage, month, today).await?;
    Ok(bundle(&coverage.tree, &records, &format!("{unit}/{month}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_stable_and_differ_by_resource_type() {
        let a = resource_id("Patient", "3f1c");
        assert_eq!(a, resource_id("Patient", "3f1c"));
        assert_ne!(a, resource_id("Encounter", "3f1c"));
        assert_eq!(a.len(), 36);
    }

    #[test]
    fn antigen_codes_name_their_series_dose_and_atc() {
        assert_eq!(dose_of("DPT-HB-Hib-3"), ("DPT-HB-Hib", 3));
        assert_eq!(dose_of("HB0"), ("HB", 0));
        assert_eq!(dose_of("BCG"), ("BCG", 1));
        for (code, _) in posync_model::report::SCHEDULE {
            assert!(antigen(code).is_some(), "{code} has a display and an ATC code");
        }
        assert_eq!(antigen("DPT-HB-Hib-4").map(|a| a.1), Some("J07CA11"));
        assert_eq!(antigen("MR-2").map(|a| a.1), Some("J07BD53"));
        assert_eq!(antigen("YF-1"), None, "not in the national schedule");
    }

    #[test]
    fn z_bands_follow_the_cut_offs() {
        assert_eq!(z_band(-3.01).0, "LL");
        assert_eq!(z_band(-2.5).0, "L");
        assert_eq!(z_band(-2.0).0, "N");
        assert_eq!(z_band(2.0).0, "N");
        assert_eq!(z_band(2.01).0, "H");
    }
}

//! The person a visit is about: Patient (NIK, or the mother's NIK and a RelatedPerson), with
//! the address of the posyandu's village.

use super::*;

/// The units a posyandu hangs under, by kind.
pub(super) fn chain_of<'t>(tree: &'t UnitTree, posyandu: &PosyanduId) -> BTreeMap<UnitKind, &'t posync_model::Unit> {
    tree.ancestors(&UnitId::from(posyandu.clone())).into_iter().map(|u| (u.kind, u)).collect()
}

pub(super) fn address(tree: &UnitTree, posyandu: &PosyanduId, p: Option<&Person>) -> Value {
    let chain = chain_of(tree, posyandu);
    let name = |k: UnitKind| chain.get(&k).map(|u| u.name.clone());
    let mut a = json!({ "use": "home", "country": "ID" });
    let street = p.map(|p| p.address.trim()).filter(|s| !s.is_empty());
    let mut text = Vec::new();
    if let Some(street) = street {
        a["line"] = json!([street]);
        text.push(street.to_owned());
    }
    let (rt, rw) = (p.and_then(|p| p.rt), p.and_then(|p| p.rw));
    if rt.is_some() || rw.is_some() {
        let code = |what: &str, n: i64| json!({ "url": what, "valueCode": format!("{n:03}") });
        let mut parts = Vec::new();
        parts.extend(rt.map(|n| code("rt", n)));
        parts.extend(rw.map(|n| code("rw", n)));
        a["extension"] = json!([{ "url": ADMINISTRATIVE_CODE, "extension": parts }]);
        text.push(format!(
            "RT {}/RW {}",
            rt.map_or("-".into(), |n| format!("{n:03}")),
            rw.map_or("-".into(), |n| format!("{n:03}"))
        ));
    }
    if let Some(village) = name(UnitKind::Village) {
        text.push(village);
    }
    if let Some(d) = name(UnitKind::Subdistrict) {
        a["district"] = json!(d);
        text.push(d);
    }
    if let Some(c) = name(UnitKind::District) {
        a["city"] = json!(c);
        text.push(c);
    }
    if let Some(s) = name(UnitKind::Province) {
        a["state"] = json!(s);
        text.push(s);
    }
    a["text"] = json!(text.join(", "));
    a
}

/// Who a Patient is: the registration if there is one, else what the visit says.
pub(super) struct Subject<'a> {
    pub(super) id: PersonId,
    pub(super) registered: Option<(&'a PosyanduId, &'a Person)>,
    pub(super) posyandu: &'a PosyanduId,
    pub(super) latest: &'a Visit,
}

pub(super) fn patient(tree: &UnitTree, s: &Subject<'_>) -> (Value, Option<Value>) {
    let pid = resource_id("Patient", &s.id.to_string());
    let person = s.registered.map(|(_, p)| p);
    let (name, sex, birth) = match person {
        Some(p) => (p.name.trim(), p.sex, p.birth_date),
        None => (s.latest.name.trim(), s.latest.sex, s.latest.birth_date),
    };
    let mut identifier = vec![json!({ "use": "usual", "system": system("sid/person"), "value": s.id.to_string() })];
    let mut related = None;
    if let Some(p) = person {
        if let Some(nik) = &p.nik {
            identifier.insert(0, json!({ "use": "official", "system": NIK_SYSTEM, "value": nik }));
        } else if let Some(mother) = &p.mother_nik {
            identifier.insert(0, json!({ "use": "official", "system": NIK_IBU_SYSTEM, "value": mother }));
            let mut rp = json!({
                "resourceType": "RelatedPerson",
                "id": resource_id("RelatedPerson", &format!("{}/mother", s.id)),
                "active": true,
                "patient": reference("Patient", &pid),
                "identifier": [{ "use": "official", "system": NIK_SYSTEM, "value": mother }],
                "relationship": [{ "coding": [{ "system": ROLE_CODE, "code": "MTH", "display": "mother" }] }],
            });
            if !p.mother_name.trim().is_empty() {
                rp["name"] = json!([{ "use": "official", "text": p.mother_name.trim() }]);
            }
            related = Some(rp);
        }
    }
    let home = s.registered.map_or(s.posyandu, |(p, _)| p);
    let mut out = json!({
        "resourceType": "Patient",
        "id": pid,
        "identifier": identifier,
        "active": true,
        "name": [{ "use": "official", "text": name }],
        "gender": if sex == Sex::Female { "female" } else { "male" },
        "birthDate": format_date(birth),
        "address": [address(tree, home, person)],
    });
    if !identifier.iter().any(|i| i["system"] == NIK_SYSTEM || i["system"] == NIK_IBU_SYSTEM) {
        // Seen at a posyandu but never registered with a NIK: SATUSEHAT will not take the
        // Patient as it is, so the export says so where a submitter looks first.
        out["meta"] = json!({ "tag": [{ "system": system("CodeSystem/export-tag"), "code": NO_NIK_TAG,
            "display": "Belum ada NIK: lengkapi di register sebelum dikirim ke SATUSEHAT" }] });
    }
    if let Some(p) = person.filter(|p| !p.mother_name.trim().is_empty()) {
        out["contact"] = json!([{
            "relationship": [{ "coding": [{ "system": ROLE_CODE, "code": "MTH", "display": "mother" }] }],
            "name": { "use": "official", "text": p.mother_name.trim() },
        }]);
    }
    (out, related)
}

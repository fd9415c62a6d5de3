//! The health-administration hierarchy as data: province > district (kabupaten/kota) >
//! sub-district (kecamatan) > puskesmas > village (desa/kelurahan) > posyandu, and the users
//! assigned to its units. Scope is always "every posyandu under the user's units".

use crate::ids::{IdError, UnitId, UserId};
use crate::role::Role;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};

/// The levels of the tree, top down. Each unit's parent is of the level just above.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UnitKind {
    Province,
    District,
    Subdistrict,
    Puskesmas,
    Village,
    Posyandu,
}

impl UnitKind {
    pub const ALL: [UnitKind; 6] = [
        UnitKind::Province,
        UnitKind::District,
        UnitKind::Subdistrict,
        UnitKind::Puskesmas,
        UnitKind::Village,
        UnitKind::Posyandu,
    ];

    /// The kind a unit of this kind hangs under; `None` for the root level.
    pub fn parent_kind(self) -> Option<UnitKind> {
        let i = UnitKind::ALL.iter().position(|k| *k == self)?;
        i.checked_sub(1).map(|p| UnitKind::ALL[p])
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::Province => "province",
            UnitKind::District => "district",
            UnitKind::Subdistrict => "subdistrict",
            UnitKind::Puskesmas => "puskesmas",
            UnitKind::Village => "village",
            UnitKind::Posyandu => "posyandu",
        }
    }

    pub fn parse(s: &str) -> Option<UnitKind> {
        UnitKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for UnitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unit {
    pub id: UnitId,
    pub kind: UnitKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<UnitId>,
    pub name: String,
}

/// A user as an admin declares them: who, which role, assigned to which units.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub id: UserId,
    pub name: String,
    pub role: Role,
    pub units: Vec<UnitId>,
}

/// The fixture / import file: `{"format": "posync-hierarchy/1", "units": [...], "users": [...]}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HierarchyFile {
    pub format: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub units: Vec<Unit>,
    #[serde(default)]
    pub users: Vec<UserSpec>,
}

pub const HIERARCHY_FORMAT: &str = "posync-hierarchy/1";

/// Why a hierarchy, a unit or a user was refused. Messages name ids, never people's data.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HierarchyError {
    #[error("not a posync hierarchy file: {0}")]
    Format(String),
    #[error(transparent)]
    Id(#[from] IdError),
    #[error("unit {0} appears twice")]
    DuplicateUnit(UnitId),
    #[error("user {0} appears twice")]
    DuplicateUser(UserId),
    #[error("unit {unit}: parent {parent} is unknown")]
    UnknownParent { unit: UnitId, parent: UnitId },
    #[error("unit {unit} ({kind}) must hang under a {expected}, not {parent} ({parent_kind})")]
    WrongParentKind { unit: UnitId, kind: UnitKind, expected: String, parent: UnitId, parent_kind: UnitKind },
    #[error("unit {0}: a province has no parent; every other unit needs one")]
    MissingParent(UnitId),
    #[error("unit {0}: name must be 1-200 characters")]
    BadName(String),
    #[error("user {user}: unit {unit} is unknown")]
    UnknownUnit { user: UserId, unit: UnitId },
    #[error("user {user}: a {role} is assigned to {expected} units, not {unit} ({kind})")]
    WrongUnitKind { user: UserId, role: Role, expected: UnitKind, unit: UnitId, kind: UnitKind },
    #[error("user {0}: needs at least one unit")]
    NoUnits(UserId),
}

const NAME_CHARS_MAX: usize = 200;

fn check_name(what: &str, name: &str) -> Result<(), HierarchyError> {
    let n = name.trim().chars().count();
    if n == 0 || n > NAME_CHARS_MAX {
        return Err(HierarchyError::BadName(what.to_owned()));
    }
    Ok(())
}

/// A unit's parent must exist and be of the level just above; a province has no parent.
pub fn check_parent(unit: &Unit, parent_kind: Option<UnitKind>) -> Result<(), HierarchyError> {
    check_name(unit.id.as_str(), &unit.name)?;
    match (unit.kind.parent_kind(), &unit.parent, parent_kind) {
        (None, None, _) => Ok(()),
        (None, Some(_), _) | (Some(_), None, _) => Err(HierarchyError::MissingParent(unit.id.clone())),
        (Some(_), Some(parent), None) => {
            Err(HierarchyError::UnknownParent { unit: unit.id.clone(), parent: parent.clone() })
        }
        (Some(expected), Some(parent), Some(actual)) if expected != actual => Err(HierarchyError::WrongParentKind {
            unit: unit.id.clone(),
            kind: unit.kind,
            expected: expected.to_string(),
            parent: parent.clone(),
            parent_kind: actual,
        }),
        _ => Ok(()),
    }
}

/// A user's units must exist and be of the kind their role is assigned to.
pub fn check_user(user: &UserSpec, kind_of: impl Fn(&UnitId) -> Option<UnitKind>) -> Result<(), HierarchyError> {
    check_name(user.id.as_str(), &user.name)?;
    if user.units.is_empty() {
        return Err(HierarchyError::NoUnits(user.id.clone()));
    }
    let expected = user.role.assigned_kind();
    for unit in &user.units {
        let kind =
            kind_of(unit).ok_or_else(|| HierarchyError::UnknownUnit { user: user.id.clone(), unit: unit.clone() })?;
        if kind != expected {
            return Err(HierarchyError::WrongUnitKind {
                user: user.id.clone(),
                role: user.role,
                expected,
                unit: unit.clone(),
                kind,
            });
        }
    }
    Ok(())
}

impl HierarchyFile {
    /// Parse and validate: ids, one tree in level order, parents before children, users
    /// assigned to units of their role's kind.
    pub fn parse(json: &str) -> Result<Self, HierarchyError> {
        let file: HierarchyFile = serde_json::from_str(json).map_err(|e| HierarchyError::Format(e.to_string()))?;
        file.validate()?;
        Ok(file)
    }

    pub fn validate(&self) -> Result<(), HierarchyError> {
        if self.format != HIERARCHY_FORMAT {
            return Err(HierarchyError::Format(format!("format is {:?}, expected {HIERARCHY_FORMAT:?}", self.format)));
        }
        let mut kinds: HashMap<&UnitId, UnitKind> = HashMap::new();
        for unit in &self.units {
            let parent_kind = unit.parent.as_ref().and_then(|p| kinds.get(p).copied());
            check_parent(unit, parent_kind)?;
            if kinds.insert(&unit.id, unit.kind).is_some() {
                return Err(HierarchyError::DuplicateUnit(unit.id.clone()));
            }
        }
        let mut users = BTreeSet::new();
        for user in &self.users {
            if !users.insert(&user.id) {
                return Err(HierarchyError::DuplicateUser(user.id.clone()));
            }
            check_user(user, |u| kinds.get(u).copied())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(id: &str, kind: UnitKind, parent: Option<&str>) -> Unit {
        Unit {
            id: id.parse().expect("id"),
            kind,
            parent: parent.map(|p| p.parse().expect("id")),
            name: format!("Unit {id}"),
        }
    }

    fn file(units: Vec<Unit>, users: Vec<UserSpec>) -> HierarchyFile {
        HierarchyFile { format: HIERARCHY_FORMAT.into(), note: None, units, users }
    }

    fn chain() -> Vec<Unit> {
        vec![
            unit("prov", UnitKind::Province, None),
            unit("dist", UnitKind::District, Some("prov")),
            unit("kec", UnitKind::Subdistrict, Some("dist")),
            unit("pkm", UnitKind::Puskesmas, Some("kec")),
            unit("desa", UnitKind::Village, Some("pkm")),
            unit("pos", UnitKind::Posyandu, Some("desa")),
        ]
    }

    #[test]
    fn a_tree_in_level_order_validates() {
        assert_eq!(file(chain(), vec![]).validate(), Ok(()));
    }

    #[test]
    fn a_unit_under_the_wrong_level_is_refused() {
        let mut units = chain();
        units.push(unit("pos2", UnitKind::Posyandu, Some("pkm")));
        assert!(matches!(file(units, vec![]).validate(), Err(HierarchyError::WrongParentKind { .. })));
    }

    #[test]
    fn unknown_parents_duplicates_and_orphans_are_refused() {
        let mut units = chain();
        units.push(unit("pos2", UnitKind::Posyandu, Some("nowhere")));
        assert!(matches!(file(units, vec![]).validate(), Err(HierarchyError::UnknownParent { .. })));
        let mut units = chain();
        units.push(unit("pos", UnitKind::Posyandu, Some("desa")));
        assert!(matches!(file(units, vec![]).validate(), Err(HierarchyError::DuplicateUnit(_))));
        let units = vec![unit("dist", UnitKind::District, None)];
        assert!(matches!(file(units, vec![]).validate(), Err(HierarchyError::MissingParent(_))));
    }

    #[test]
    fn users_are_assigned_to_units_of_their_roles_kind() {
        let user = |role, unit: &str| UserSpec {
            id: "u1".parse().expect("id"),
            name: "Siti".into(),
            role,
            units: vec![unit.parse().expect("id")],
        };
        assert_eq!(file(chain(), vec![user(Role::Kader, "pos")]).validate(), Ok(()));
        assert_eq!(file(chain(), vec![user(Role::PuskesmasOfficer, "pkm")]).validate(), Ok(()));
        assert_eq!(file(chain(), vec![user(Role::DistrictAdmin, "dist")]).validate(), Ok(()));
        assert!(matches!(
            file(chain(), vec![user(Role::Kader, "pkm")]).validate(),
            Err(HierarchyError::WrongUnitKind { .. })
        ));
        assert!(matches!(
            file(chain(), vec![user(Role::PuskesmasOfficer, "elsewhere")]).validate(),
            Err(HierarchyError::UnknownUnit { .. })
        ));
    }
}

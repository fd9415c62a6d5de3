//! Who a principal is, in posyandu terms, and what each role may do.

use crate::hierarchy::UnitKind;
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A volunteer at one or more posyandu: reads and writes their documents.
    Kader,
    /// A midwife or nurse at a puskesmas: every posyandu under it.
    PuskesmasOfficer,
    /// The district health office: everything in the district, conflict resolution, users
    /// and devices.
    DistrictAdmin,
    /// Read-only reporting for the district office.
    DistrictReporter,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Kader, Role::PuskesmasOfficer, Role::DistrictAdmin, Role::DistrictReporter];

    pub fn can_write(self) -> bool {
        !matches!(self, Role::DistrictReporter)
    }

    /// May manage users, devices, the hierarchy and conflicts of their district.
    pub fn is_admin(self) -> bool {
        matches!(self, Role::DistrictAdmin)
    }

    /// The kind of unit a user of this role is assigned to; their scope is every posyandu
    /// under those units.
    pub fn assigned_kind(self) -> UnitKind {
        match self {
            Role::Kader => UnitKind::Posyandu,
            Role::PuskesmasOfficer => UnitKind::Puskesmas,
            Role::DistrictAdmin | Role::DistrictReporter => UnitKind::District,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Kader => "kader",
            Role::PuskesmasOfficer => "puskesmas_officer",
            Role::DistrictAdmin => "district_admin",
            Role::DistrictReporter => "district_reporter",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

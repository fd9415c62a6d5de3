//! Who a principal is, in posyandu terms.

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A volunteer at one or more posyandu: reads and writes their documents.
    Kader,
    /// A midwife or nurse at a puskesmas: every posyandu under it.
    PuskesmasOfficer,
    /// The district health office: everything in the district, conflict resolution.
    DistrictAdmin,
    /// Read-only reporting for the district office.
    DistrictReporter,
}

impl Role {
    pub fn can_write(self) -> bool {
        !matches!(self, Role::DistrictReporter)
    }
}

//! Device enrolment and token refresh: JSON bodies of `POST /v1/auth/enrol` and
//! `POST /v1/auth/token`. Small, rare requests, so JSON rather than CBOR.

use posync_model::{DeviceId, Role, UserId};
use serde::{Deserialize, Serialize};

/// A phone exchanging the one-time code an admin gave its kader for a device credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// As the admin gave it; case, spaces and dashes do not matter.
    pub code: String,
    pub device: DeviceId,
    /// Free text shown to admins in the device list ("HP Siti"); no health data.
    #[serde(default)]
    pub label: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub user: UserId,
    pub role: Role,
    /// Long-lived, bound to this device; keep it secret. Exchanged for access tokens.
    pub refresh_token: String,
    /// Unix seconds after which the refresh token no longer works unless used before.
    pub refresh_expires_at: i64,
    pub access: AccessToken,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshRequest {
    pub device: DeviceId,
    pub refresh_token: String,
}

/// A short-lived bearer token for `/v1/sync` and the read/admin routes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessToken {
    pub token: String,
    /// Unix seconds.
    pub expires_at: i64,
}

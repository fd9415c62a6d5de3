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

/// `POST /v1/auth/pin`: the signed-in caller sets or replaces their sign-in PIN.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinRequest {
    /// 6 to 12 digits.
    pub pin: String,
}

/// `POST /v1/auth/signin`: a browser that signed out signs in again with the user's PIN
/// instead of a new enrolment code. Answered like [`EnrolRequest`], with an
/// [`EnrolResponse`] for the new device.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigninRequest {
    pub user: UserId,
    pub pin: String,
    /// A new random id for this browser (a signed-out one was revoked).
    pub device: DeviceId,
    #[serde(default)]
    pub label: String,
}

// A PIN never reaches a log through `{:?}`.
impl std::fmt::Debug for PinRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PinRequest").field("pin", &"<redacted>").finish()
    }
}

impl std::fmt::Debug for SigninRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigninRequest")
            .field("user", &self.user)
            .field("pin", &"<redacted>")
            .field("device", &self.device)
            .field("label", &self.label)
            .finish()
    }
}

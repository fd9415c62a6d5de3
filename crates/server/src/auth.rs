//! Bearer tokens. v1 of auth: HS256 JWTs naming the device, its role and its posyandu.
//! Issue #3 replaces the key material (EdDSA, rotation) and resolves roles through the
//! hierarchy; handlers only ever see a [`Principal`].

use crate::error::ApiError;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use posync_model::{DeviceId, PosyanduId, Role, Scope};
use posync_proto::ErrorCode;
use serde::{Deserialize, Serialize};

pub const ISSUER: &str = "posync";
pub const AUDIENCE: &str = "posync-sync";
/// Clock skew tolerated on `exp` and `nbf`: phones' clocks drift.
pub const LEEWAY_SECONDS: u64 = 60;

/// Who is calling, after the token verified. Everything downstream trusts this.
#[derive(Clone, Debug)]
pub struct Principal {
    pub device: DeviceId,
    pub role: Role,
    pub scope: Scope,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub aud: String,
    /// The device id.
    pub sub: String,
    pub role: Role,
    pub posyandu: Vec<PosyanduId>,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
}

/// Keys to sign and verify tokens; the algorithm is pinned.
#[derive(Clone)]
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    pub fn hs256(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        // Time is checked below against the server's clock (injected, so simulations and
        // tests control it), not against jsonwebtoken's reading of the wall clock.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        Self { encoding: EncodingKey::from_secret(secret), decoding: DecodingKey::from_secret(secret), validation }
    }

    /// Sign a token for `device` valid from `now` for `ttl_seconds`.
    pub fn issue(&self, device: DeviceId, role: Role, posyandu: Vec<PosyanduId>, now: i64, ttl_seconds: i64) -> String {
        let claims = Claims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            sub: device.to_string(),
            role,
            posyandu,
            iat: now,
            nbf: now,
            exp: now + ttl_seconds,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).unwrap_or_default()
    }

    /// Verify signature, algorithm, issuer, audience, and validity at `now` (unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Result<Principal, ApiError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| ApiError::new(ErrorCode::Unauthenticated, format!("token rejected: {}", e.kind_name())))?;
        let leeway = LEEWAY_SECONDS as i64;
        if now > data.claims.exp.saturating_add(leeway) {
            return Err(ApiError::new(ErrorCode::Unauthenticated, "token rejected: expired"));
        }
        if now < data.claims.nbf.saturating_sub(leeway) {
            return Err(ApiError::new(ErrorCode::Unauthenticated, "token rejected: not yet valid"));
        }
        let device = data
            .claims
            .sub
            .parse()
            .map_err(|_| ApiError::new(ErrorCode::Unauthenticated, "token subject is not a device id"))?;
        Ok(Principal { device, role: data.claims.role, scope: Scope::new(data.claims.posyandu) })
    }
}

trait KindName {
    fn kind_name(&self) -> &'static str;
}

impl KindName for jsonwebtoken::errors::Error {
    fn kind_name(&self) -> &'static str {
        use jsonwebtoken::errors::ErrorKind as K;
        match self.kind() {
            K::ExpiredSignature => "expired",
            K::ImmatureSignature => "not yet valid",
            K::InvalidAudience => "wrong audience",
            K::InvalidIssuer => "wrong issuer",
            K::InvalidSignature => "bad signature",
            K::InvalidAlgorithm => "algorithm not allowed",
            K::MissingRequiredClaim(_) => "missing claim",
            _ => "malformed",
        }
    }
}

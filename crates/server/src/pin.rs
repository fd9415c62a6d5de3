//! Sign-in PINs (issue #16): a browser that signed out (its device revoked) signs in again
//! with the user's PIN instead of asking the dinkes for a new enrolment code.
//!
//! PINs are hashed with Argon2id (the `argon2` crate, RustCrypto) into PHC strings with a
//! random 16-byte salt. Parameters: 19 MiB of memory, 2 passes, 1 lane: OWASP's minimum
//! recommendation for Argon2id, modest enough for a 2-core district server (tens of ms per
//! hash). Verification reads the parameters from the stored string, so raising them later
//! keeps old PINs working. Hashing runs on the blocking pool, at most [`HASHES_AT_ONCE`] at
//! a time, so neither the async workers nor memory are at the mercy of a burst.
//!
//! A 6-digit PIN is weak on its own; what makes it fit for this is the store-side lockout
//! ([`LOCKOUT`]: 5 attempts without a success, then 15 minutes), counted before the PIN is
//! checked so parallel attempts cannot get past it, plus the per-address limit of the
//! credential routes.

use crate::error::ApiError;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use posync_proto::ErrorCode;
use posync_store::PinLockout;
use std::sync::OnceLock;

/// Fewest and most digits of a PIN.
pub const PIN_DIGITS_MIN: usize = 6;
pub const PIN_DIGITS_MAX: usize = 12;

/// 5 attempts in a row without a success lock the user's PIN sign-in for 15 minutes.
pub const LOCKOUT: PinLockout = PinLockout { failures_max: 5, lock_seconds: 15 * 60 };

/// Argon2id memory in KiB (19 MiB), passes and lanes: OWASP's minimum for Argon2id.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Argon2 computations running at once (each holds 19 MiB): two cores gain nothing from more.
const HASHES_AT_ONCE: usize = 4;
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(HASHES_AT_ONCE);

/// The one answer to every failed sign-in (unknown user, no PIN, wrong PIN, disabled user):
/// nothing tells which.
pub const REFUSED_MESSAGE: &str = "user or PIN not recognised";

pub fn refused() -> ApiError {
    ApiError::new(ErrorCode::InvalidCredential, REFUSED_MESSAGE)
}

/// The user's PIN sign-in is locked for `seconds` more.
pub fn locked(seconds: i64) -> ApiError {
    let seconds = u64::try_from(seconds).unwrap_or(0).max(1);
    ApiError::new(
        ErrorCode::RateLimited,
        format!("too many wrong PINs for this user; retry in {seconds} s or ask your admin for an enrolment code"),
    )
    .with_retry_after(seconds)
}

/// A PIN is 6 to 12 ASCII digits; anything else is refused before any hashing.
pub fn check_format(pin: &str) -> Result<(), ApiError> {
    let digits = (PIN_DIGITS_MIN..=PIN_DIGITS_MAX).contains(&pin.len()) && pin.bytes().all(|b| b.is_ascii_digit());
    if digits {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::InvalidRequest,
            format!("a PIN is {PIN_DIGITS_MIN} to {PIN_DIGITS_MAX} digits (0-9), nothing else"),
        ))
    }
}

fn hasher() -> Result<Argon2<'static>, ApiError> {
    let params = Params::new(M_COST_KIB, T_COST, P_COST, None).map_err(internal)?;
    Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %e, "PIN hashing failed");
    ApiError::new(ErrorCode::Internal, "internal error; retry later")
}

/// The PHC string of `pin` under a fresh random salt (blocking: tens of ms of CPU).
fn hash_blocking(pin: &str) -> Result<String, ApiError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(internal)?;
    Ok(hasher()?.hash_password(pin.as_bytes(), &salt).map_err(internal)?.to_string())
}

/// Whether `pin` matches the PHC string `stored` (blocking). A string that does not parse
/// matches nothing.
fn verify_blocking(pin: &str, stored: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(stored) else {
        tracing::error!("a stored PIN hash does not parse");
        return false;
    };
    // Algorithm, version and parameters are read from the stored string.
    Argon2::default().verify_password(pin.as_bytes(), &parsed).is_ok()
}

/// Run `f` on the blocking pool, within the bound on hashes at once.
async fn off_runtime<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    let _permit = HASHING.acquire().await.map_err(internal)?;
    tokio::task::spawn_blocking(f).await.map_err(internal)
}

/// Hash `pin` for storing, off the async runtime.
pub async fn hash(pin: String) -> Result<String, ApiError> {
    off_runtime(move || hash_blocking(&pin)).await?
}

/// Check `pin` against `stored`, off the async runtime.
pub async fn verify(pin: String, stored: String) -> Result<bool, ApiError> {
    off_runtime(move || verify_blocking(&pin, &stored)).await
}

/// A hash no PIN is known to match, with the same parameters as real ones: a sign-in for a
/// user without a PIN is checked against it, so it takes as long as a wrong PIN and its
/// timing does not tell who has a PIN.
pub async fn verify_against_nothing(pin: String) -> Result<(), ApiError> {
    static DECOY: OnceLock<String> = OnceLock::new();
    off_runtime(move || {
        let decoy = match DECOY.get() {
            Some(d) => d.clone(),
            None => {
                let fresh = hash_blocking(&hex::encode(rand::random::<[u8; 16]>())).unwrap_or_default();
                DECOY.get_or_init(|| fresh).clone()
            }
        };
        verify_blocking(&pin, &decoy);
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_six_to_twelve_ascii_digits_are_a_pin() {
        for good in ["123456", "000000", "123456789012"] {
            assert!(check_format(good).is_ok(), "{good}");
        }
        for bad in ["12345", "1234567890123", "abcdef", "12345a", "١٢٣٤٥٦", "123 456", ""] {
            assert!(check_format(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_hash_is_argon2id_with_owasp_parameters_and_a_fresh_salt() {
        let a = hash_blocking("482913").expect("hash");
        let b = hash_blocking("482913").expect("hash");
        assert!(a.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(!a.contains("482913"));
        assert!(verify_blocking("482913", &a) && verify_blocking("482913", &b));
        assert!(!verify_blocking("482914", &a));
        assert!(!verify_blocking("482913", "not a PHC string"));
    }
}

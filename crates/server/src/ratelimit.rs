//! Rate limits on the credential routes (`/v1/auth/*`): per client address, per enrolment
//! code prefix, per device refreshing. Enrolment codes are one-time and long enough that
//! guessing is impractical, but nothing should let one address try codes as fast as the
//! server answers, nor hammer one code; an honest phone never comes near the limits.
//! Answered `429 rate_limited` with `Retry-After`.

use crate::error::ApiError;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use posync_proto::{ErrorCode, Limits};
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;

/// Keys a limiter remembers before it forgets those whose allowance has refilled: a bound on
/// memory whatever the traffic.
const KEYS_MAX: usize = 100_000;

/// Characters of a normalised enrolment code that key its limit.
const CODE_PREFIX_CHARS: usize = 4;

pub struct AuthLimiter {
    by_address: DefaultKeyedRateLimiter<IpAddr>,
    by_code_prefix: DefaultKeyedRateLimiter<String>,
    by_device: DefaultKeyedRateLimiter<posync_model::DeviceId>,
    clock: DefaultClock,
}

fn at_least_one(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN)
}

impl AuthLimiter {
    pub fn new(limits: &Limits) -> Self {
        Self {
            by_address: DefaultKeyedRateLimiter::keyed(Quota::per_minute(at_least_one(
                limits.auth_per_address_per_minute,
            ))),
            by_code_prefix: DefaultKeyedRateLimiter::keyed(Quota::per_hour(at_least_one(
                limits.enrol_per_code_prefix_per_hour,
            ))),
            by_device: DefaultKeyedRateLimiter::keyed(Quota::per_minute(at_least_one(
                limits.refresh_per_device_per_minute,
            ))),
            clock: DefaultClock::default(),
        }
    }

    /// One more request from `address` to a credential route.
    pub fn address(&self, address: IpAddr) -> Result<(), ApiError> {
        self.check(&self.by_address, &address, "from this address")
    }

    /// One more enrolment attempt with a code starting like `code` (normalised).
    pub fn code(&self, normalised_code: &str) -> Result<(), ApiError> {
        let prefix: String = normalised_code.chars().take(CODE_PREFIX_CHARS).collect();
        self.check(&self.by_code_prefix, &prefix, "for this enrolment code")
    }

    /// One more token refresh by `device`.
    pub fn device(&self, device: posync_model::DeviceId) -> Result<(), ApiError> {
        self.check(&self.by_device, &device, "for this device")
    }

    fn check<K: Clone + Hash + Eq>(
        &self,
        limiter: &DefaultKeyedRateLimiter<K>,
        key: &K,
        what: &str,
    ) -> Result<(), ApiError> {
        if limiter.len() > KEYS_MAX {
            limiter.retain_recent();
        }
        limiter.check_key(key).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            ApiError::new(ErrorCode::RateLimited, format!("too many attempts {what}; retry in {seconds} s"))
                .with_retry_after(seconds.max(1))
        })
    }
}

//! Authentication: signing keys, JWTs, passwords, refresh tokens, the request extractor.

pub mod extract;
pub mod jwt;
pub mod keys;
pub mod password;
pub mod throttle;
pub mod tokens;

pub use extract::AuthUser;
pub use jwt::{Jwt, TokenError, TypedClaims};
pub use keys::KeySet;
pub use password::Passwords;
pub use throttle::LoginThrottle;

use crate::{config::Config, store::Ts};
use std::time::Duration;

/// Whether a sign-in last used at `last_used` has been idle past `ALCOVE_IDLE_SIGN_OUT`
/// (automatic logoff, enforced by the server and not only by the web client).
pub fn idle_expired(last_used: Ts, config: &Config) -> bool {
    let idle =
        jiff::SignedDuration::try_from(config.idle_sign_out).unwrap_or(jiff::SignedDuration::MAX);
    last_used.get() + idle < jiff::Timestamp::now()
}

/// The moment before which a sign-in counts as idle.
pub fn idle_cutoff(config: &Config) -> Ts {
    let idle =
        jiff::SignedDuration::try_from(config.idle_sign_out).unwrap_or(jiff::SignedDuration::MAX);
    Ts::from(
        jiff::Timestamp::now()
            .checked_sub(idle)
            .unwrap_or(jiff::Timestamp::MIN),
    )
}

/// How often a sign-in in use is noted as in use: often enough that an active sign-in never
/// looks idle, rarely enough to cost little (a quarter of the idle limit, at most a minute).
pub fn touch_interval(config: &Config) -> Duration {
    (config.idle_sign_out / 4).min(Duration::from_secs(60))
}

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
/// How often each node looks for sign-ins that another process ended.
pub const REVOCATION_SWEEP: Duration = Duration::from_secs(2);

/// Close this node's signalling connections of sign-ins that another process ended: the
/// admin command line (`alcove user disable`, `set-password`), or another node when there
/// is no Redis to tell this one at once. Every [`REVOCATION_SWEEP`], the sign-ins ended
/// since the last look (with a few seconds of overlap, for clocks that differ) are revoked
/// here; revoking one that has no connection costs nothing.
pub async fn revocation_sweep(
    db: crate::store::Db,
    hub: alcove_signaling::Hub,
    stop: tokio_util::sync::CancellationToken,
) {
    let overlap = jiff::SignedDuration::from_secs(10);
    let mut since = jiff::Timestamp::now() - overlap;
    let mut tick = tokio::time::interval(REVOCATION_SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let now = jiff::Timestamp::now();
        match db.sign_ins_revoked_since(Ts::from(since)).await {
            Ok(ended) => {
                for (user_id, sign_in) in ended {
                    hub.revoke_here(user_id, alcove_signaling::SignIns::One(sign_in));
                }
                since = now - overlap;
            }
            // The database is away: look again (from the same time) on the next tick.
            Err(e) => tracing::debug!(error = %e, "revocation sweep: database not reachable"),
        }
    }
}

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

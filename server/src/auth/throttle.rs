//! Limits on sign-in and registration attempts.
//!
//! Three counters, all in an [`Expiring`] store (memory on one node, Redis across several),
//! under keys that are keyed hashes (no email or IP address is held):
//!
//! - **per address**: every sign-in attempt, and separately every registration, from one
//!   client address (IPv4, or an IPv6 /64) within the window. This bounds what one machine
//!   can make the server hash, whatever emails it tries.
//! - **per account and address**: attempts at one email address from one client address;
//!   past `max_failures` that pair gets 429 until the window ends. A success clears it. The
//!   rightful owner at another address is not affected: a flood from one address cannot lock
//!   a therapist out.
//! - **per account**, from every address: failures within the window. Past the account
//!   ceiling, sign-ins to that account are *slowed, not locked*: one attempt per
//!   [`SLOW_INTERVAL`] for the whole account, others get 429 with a `Retry-After` of a few
//!   seconds, and addresses the account signed in from successfully before (remembered
//!   [`KNOWN_FOR`], as keyed hashes) are not slowed at all.
//!
//! Every counter is kept for unknown emails exactly as for accounts, so the limits tell
//! nothing about which accounts exist.

use crate::expiring::{Expiring, KeyedHash};
use std::{net::IpAddr, sync::Arc, time::Duration};

/// Under a distributed attack on one account: one attempt per this interval.
pub const SLOW_INTERVAL: Duration = Duration::from_secs(3);

/// How long an address an account signed in from is remembered as that account's.
pub const KNOWN_FOR: Duration = Duration::from_secs(30 * 24 * 3600);

/// The limits, from the configuration.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Attempts per account and address within the window.
    pub max_failures: u32,
    /// Failures per account from every address within the window before slowing.
    pub account_max_failures: u32,
    /// Sign-in attempts per address within the window.
    pub address_max_sign_ins: u32,
    /// Registrations per address within the window.
    pub address_max_registrations: u32,
    pub window: Duration,
    /// One attempt per this interval for an account past its ceiling ([`SLOW_INTERVAL`]).
    pub slow_interval: Duration,
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub Duration);

/// Join tokens one account may get in a minute.
pub const JOINS_PER_MINUTE: u64 = 30;

impl RetryAfter {
    /// Whole seconds, at least one, for `Retry-After`.
    pub fn secs(self) -> u64 {
        self.0.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// A sign-in attempt let through, to report its outcome with.
#[derive(Debug)]
pub struct Attempt {
    pair: String,
    account: String,
    known: String,
}

/// Sign-in and registration limits; see the module docs.
#[derive(Clone)]
pub struct LoginThrottle {
    store: Arc<dyn Expiring>,
    keys: KeyedHash,
    limits: Limits,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("limits", &self.limits)
            .finish()
    }
}

/// The part of an address that one party controls: an IPv4 address, or an IPv6 /64 (one
/// subscriber gets at least a /64, so counting single IPv6 addresses would count nothing).
fn address_bytes(addr: Option<IpAddr>) -> Vec<u8> {
    match addr {
        Some(IpAddr::V4(v4)) => v4.octets().to_vec(),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => v4.octets().to_vec(),
            None => v6.octets()[..8].to_vec(),
        },
        // No address known (a test harness without a socket): one shared bucket.
        None => Vec::new(),
    }
}

impl LoginThrottle {
    pub fn new(store: Arc<dyn Expiring>, keys: KeyedHash, limits: Limits) -> Self {
        Self {
            store,
            keys,
            limits,
        }
    }

    /// Before a password is checked. Counted first, so that parallel guesses cannot all
    /// pass before the first failure is counted.
    pub async fn before_sign_in(
        &self,
        email: &str,
        addr: Option<IpAddr>,
    ) -> anyhow::Result<Result<Attempt, RetryAfter>> {
        let l = &self.limits;
        let a = address_bytes(addr);
        let (n, left) = self
            .store
            .hit(&self.keys.key("login-addr", &[&a]), l.window)
            .await?;
        if n > u64::from(l.address_max_sign_ins) {
            return Ok(Err(RetryAfter(left)));
        }
        let attempt = Attempt {
            pair: self.keys.key("login-pair", &[email.as_bytes(), &a]),
            account: self.keys.key("login-acct", &[email.as_bytes()]),
            known: self.keys.key("login-known", &[email.as_bytes(), &a]),
        };
        // The slowing first: an attempt it refuses does not count against the pair, or an
        // owner losing the race for the slot to an attack would lock his own address out.
        if self.store.count(&attempt.account).await? >= u64::from(l.account_max_failures)
            && self.store.marked(&attempt.known).await?.is_none()
        {
            // Slowed: one attempt per interval for the whole account.
            let slot = self.keys.key("login-slow", &[email.as_bytes()]);
            if !self.store.mark_once(&slot, l.slow_interval).await? {
                let left = self.store.marked(&slot).await?.unwrap_or(l.slow_interval);
                return Ok(Err(RetryAfter(left)));
            }
        }
        let (n, left) = self.store.hit(&attempt.pair, l.window).await?;
        if n > u64::from(l.max_failures) {
            return Ok(Err(RetryAfter(left)));
        }
        Ok(Ok(attempt))
    }

    /// The password was never checked (every hashing thread was busy): the attempt does not
    /// count against the pair.
    pub async fn not_checked(&self, attempt: Attempt) -> anyhow::Result<()> {
        self.store.unhit(&attempt.pair).await
    }

    /// The password was wrong (or the account unknown).
    pub async fn failed(&self, attempt: Attempt) -> anyhow::Result<()> {
        self.store.hit(&attempt.account, self.limits.window).await?;
        Ok(())
    }

    /// The sign-in succeeded: the pair starts afresh, and the address is remembered as one
    /// this account uses (exempt from slowing).
    pub async fn succeeded(&self, attempt: Attempt) -> anyhow::Result<()> {
        self.store.clear(&attempt.pair).await?;
        self.store.mark(&attempt.known, KNOWN_FOR).await?;
        Ok(())
    }

    /// Before a join token is issued to `user_id`: at most [`JOINS_PER_MINUTE`] a minute.
    /// A person reconnecting after network trouble needs a few; a client cut off for
    /// flooding its room and rejoining at once to flood again (`alcove-bench flood`) is
    /// held to this pace, on every node.
    pub async fn before_join(&self, user_id: uuid::Uuid) -> anyhow::Result<Result<(), RetryAfter>> {
        let key = self.keys.key("join", &[user_id.as_bytes()]);
        let (n, left) = self.store.hit(&key, Duration::from_secs(60)).await?;
        Ok(if n > JOINS_PER_MINUTE {
            Err(RetryAfter(left))
        } else {
            Ok(())
        })
    }

    /// Before `user_id` starts a network test: at most `per_hour` in an hour.
    pub async fn before_network_test(
        &self,
        user_id: uuid::Uuid,
        per_hour: u32,
    ) -> anyhow::Result<Result<(), RetryAfter>> {
        let key = self.keys.key("nettest", &[user_id.as_bytes()]);
        let (n, left) = self.store.hit(&key, Duration::from_secs(3600)).await?;
        Ok(if n > u64::from(per_hour) {
            Err(RetryAfter(left))
        } else {
            Ok(())
        })
    }

    /// Before an account is registered from `addr`.
    pub async fn before_registration(
        &self,
        addr: Option<IpAddr>,
    ) -> anyhow::Result<Result<(), RetryAfter>> {
        let a = address_bytes(addr);
        let (n, left) = self
            .store
            .hit(&self.keys.key("register-addr", &[&a]), self.limits.window)
            .await?;
        Ok(if n > u64::from(self.limits.address_max_registrations) {
            Err(RetryAfter(left))
        } else {
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expiring::MemoryExpiring;

    fn throttle(limits: Limits) -> LoginThrottle {
        LoginThrottle::new(
            Arc::new(MemoryExpiring::default()),
            KeyedHash::random().unwrap(),
            limits,
        )
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().unwrap())
    }

    const LIMITS: Limits = Limits {
        max_failures: 3,
        account_max_failures: 10,
        address_max_sign_ins: 50,
        address_max_registrations: 2,
        window: Duration::from_secs(60),
        slow_interval: SLOW_INTERVAL,
    };

    #[tokio::test]
    async fn a_flood_from_one_address_does_not_lock_the_owner_out() {
        let t = throttle(LIMITS);
        for _ in 0..3 {
            let a = t
                .before_sign_in("a@example.com", ip("192.0.2.1"))
                .await
                .unwrap()
                .unwrap();
            t.failed(a).await.unwrap();
        }
        assert!(
            t.before_sign_in("a@example.com", ip("192.0.2.1"))
                .await
                .unwrap()
                .is_err()
        );
        assert!(
            t.before_sign_in("a@example.com", ip("198.51.100.7"))
                .await
                .unwrap()
                .is_ok(),
            "the owner elsewhere"
        );
        assert!(
            t.before_sign_in("b@example.com", ip("192.0.2.1"))
                .await
                .unwrap()
                .is_ok(),
            "other accounts from that address"
        );
    }

    #[tokio::test]
    async fn many_addresses_slow_an_account_down_but_known_addresses_pass() {
        let t = throttle(LIMITS);
        let owner = t
            .before_sign_in("a@example.com", ip("203.0.113.5"))
            .await
            .unwrap()
            .unwrap();
        t.succeeded(owner).await.unwrap();
        for i in 0..10 {
            let a = t
                .before_sign_in("a@example.com", ip(&format!("192.0.2.{i}")))
                .await
                .unwrap()
                .unwrap();
            t.failed(a).await.unwrap();
        }
        // Past the ceiling: one attempt per interval for new addresses.
        assert!(
            t.before_sign_in("a@example.com", ip("192.0.2.100"))
                .await
                .unwrap()
                .is_ok()
        );
        let refused = t
            .before_sign_in("a@example.com", ip("192.0.2.101"))
            .await
            .unwrap()
            .unwrap_err();
        assert!(refused.0 <= SLOW_INTERVAL && refused.secs() >= 1);
        // The owner's address is not slowed.
        assert!(
            t.before_sign_in("a@example.com", ip("203.0.113.5"))
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn attempts_refused_by_the_slowing_or_never_checked_do_not_count_for_the_owner() {
        let t = throttle(Limits {
            account_max_failures: 2,
            slow_interval: Duration::from_millis(100),
            ..LIMITS
        });
        for i in 0..2 {
            let a = t
                .before_sign_in("a@example.com", ip(&format!("192.0.2.{i}")))
                .await
                .unwrap()
                .unwrap();
            t.failed(a).await.unwrap();
        }
        // An attacker holds the slot; the owner, at a new address, is refused ten times.
        let _held = t
            .before_sign_in("a@example.com", ip("198.51.100.1"))
            .await
            .unwrap()
            .unwrap();
        for _ in 0..10 {
            assert!(
                t.before_sign_in("a@example.com", ip("203.0.113.5"))
                    .await
                    .unwrap()
                    .is_err()
            );
        }
        // The slot frees: the owner's address has used none of its three attempts.
        tokio::time::sleep(Duration::from_millis(150)).await;
        let owner = t
            .before_sign_in("a@example.com", ip("203.0.113.5"))
            .await
            .unwrap()
            .expect("the owner is slowed, not locked");
        t.succeeded(owner).await.unwrap();
        // Attempts whose password was never checked (hashing busy) do not count either.
        for _ in 0..10 {
            let a = t
                .before_sign_in("b@example.com", ip("203.0.113.6"))
                .await
                .unwrap()
                .unwrap();
            t.not_checked(a).await.unwrap();
        }
        assert!(
            t.before_sign_in("b@example.com", ip("203.0.113.6"))
                .await
                .unwrap()
                .is_ok()
        );
    }

    #[tokio::test]
    async fn addresses_are_counted_per_ipv4_and_per_ipv6_slash_64() {
        let t = throttle(Limits {
            address_max_sign_ins: 2,
            ..LIMITS
        });
        for a in ["2001:db8:1:2::1", "2001:db8:1:2::ffff"] {
            assert!(
                t.before_sign_in("x@example.com", ip(a))
                    .await
                    .unwrap()
                    .is_ok()
            );
        }
        assert!(
            t.before_sign_in("y@example.com", ip("2001:db8:1:2:abcd::9"))
                .await
                .unwrap()
                .is_err(),
            "the same /64, whatever the email"
        );
        assert!(
            t.before_sign_in("y@example.com", ip("2001:db8:1:3::1"))
                .await
                .unwrap()
                .is_ok()
        );
        // Registrations have their own count.
        for _ in 0..2 {
            assert!(
                t.before_registration(ip("192.0.2.9"))
                    .await
                    .unwrap()
                    .is_ok()
            );
        }
        assert!(
            t.before_registration(ip("192.0.2.9"))
                .await
                .unwrap()
                .is_err()
        );
        assert!(
            t.before_registration(ip("192.0.2.10"))
                .await
                .unwrap()
                .is_ok()
        );
    }
}

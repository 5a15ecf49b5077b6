//! Limits failed sign-ins per email address.
//!
//! Counted per address, whether or not an account has it, so the limit tells nothing
//! about which accounts exist. Kept in memory: on several nodes each node counts alone,
//! which still bounds guessing to (nodes × limit) per window.

use sha2::{Digest as _, Sha256};
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

struct Entry {
    failures: u32,
    since: Instant,
}

/// Failed sign-in counter; see the module docs.
pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    // A std mutex: held for a map lookup only, never across an await.
    entries: Mutex<HashMap<[u8; 32], Entry>>,
    /// The size at which expired entries are next swept (see [`SWEEP_AT`]).
    sweep_at: AtomicUsize,
}

impl std::fmt::Debug for LoginThrottle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginThrottle")
            .field("max_failures", &self.max_failures)
            .field("window", &self.window)
            .finish()
    }
}

/// Beyond this many tracked addresses, expired entries are swept on the next attempt; the
/// next sweep waits until the map has doubled again, so a flood of addresses costs each
/// attempt amortised constant time, not a full sweep.
const SWEEP_AT: usize = 10_000;

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            entries: Mutex::new(HashMap::new()),
            sweep_at: AtomicUsize::new(SWEEP_AT),
        }
    }

    fn key(email: &str) -> [u8; 32] {
        Sha256::digest(email.as_bytes()).into()
    }

    /// Count an attempt for the address, before its password is checked (so that parallel
    /// guesses cannot all pass before the first failure is counted); `Err(seconds to wait)`
    /// when the address has used up its attempts. A successful sign-in calls [`Self::reset`].
    pub fn attempt(&self, email: &str) -> Result<(), u64> {
        let mut map = self.entries.lock().expect("throttle lock");
        if map.len() >= self.sweep_at.load(Ordering::Relaxed) {
            let window = self.window;
            map.retain(|_, e| e.since.elapsed() < window);
            self.sweep_at
                .store((map.len() * 2).max(SWEEP_AT), Ordering::Relaxed);
        }
        let now = Instant::now();
        let e = map.entry(Self::key(email)).or_insert(Entry {
            failures: 0,
            since: now,
        });
        if now.duration_since(e.since) >= self.window {
            *e = Entry {
                failures: 0,
                since: now,
            };
        }
        if e.failures >= self.max_failures {
            return Err((self.window - now.duration_since(e.since)).as_secs().max(1));
        }
        e.failures += 1;
        Ok(())
    }

    pub fn reset(&self, email: &str) {
        self.entries
            .lock()
            .expect("throttle lock")
            .remove(&Self::key(email));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_after_the_limit_and_resets_on_success() {
        let t = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(t.attempt("a@example.com").is_ok());
        }
        assert!(t.attempt("a@example.com").is_err());
        assert!(
            t.attempt("b@example.com").is_ok(),
            "other addresses unaffected"
        );
        t.reset("a@example.com");
        assert!(t.attempt("a@example.com").is_ok());
    }

    #[test]
    fn the_window_expires() {
        let t = LoginThrottle::new(1, Duration::from_millis(20));
        assert!(t.attempt("a@example.com").is_ok());
        assert!(t.attempt("a@example.com").is_err());
        std::thread::sleep(Duration::from_millis(30));
        assert!(t.attempt("a@example.com").is_ok());
    }
}

//! Counters and marks that expire: the small state that every node must agree on once
//! several serve one deployment (sign-in and registration throttles, addresses an account
//! signed in from, used join tokens).
//!
//! [`Expiring`] is the one interface. [`MemoryExpiring`] keeps it in this process (one
//! node); several nodes back it with Redis (`INCR` + `PEXPIRE`, `SET NX PX`), so that no
//! counter can be split across nodes.
//!
//! Keys are opaque strings that callers build from keyed hashes ([`KeyedHash`]), never from
//! email addresses or IP addresses themselves: what is held (here or in Redis) names no one.

use hmac::{Hmac, KeyInit as _, Mac as _};
use sha2::Sha256;
use std::{
    collections::HashMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

/// Expiring counters and marks; see the module docs.
#[async_trait::async_trait]
pub trait Expiring: Send + Sync + std::fmt::Debug + 'static {
    /// Add one to the counter `key`. A counter lives `window` from its first hit, then
    /// starts again at zero. Returns the count after this hit and the time until it resets.
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)>;
    /// The counter `key` now (0 when absent or expired).
    async fn count(&self, key: &str) -> anyhow::Result<u64>;
    /// Take back one hit of the counter `key` (never below zero; its window stays).
    async fn unhit(&self, key: &str) -> anyhow::Result<()>;
    /// Remove `key` (a counter or a mark).
    async fn clear(&self, key: &str) -> anyhow::Result<()>;
    /// Set the mark `key` for `ttl` unless it is set; true when this call set it.
    async fn mark_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool>;
    /// Set (or renew) the mark `key` for `ttl`.
    async fn mark(&self, key: &str, ttl: Duration) -> anyhow::Result<()>;
    /// Whether the mark `key` is set; with the time it has left.
    async fn marked(&self, key: &str) -> anyhow::Result<Option<Duration>>;
}

struct Entry {
    count: u64,
    until: Instant,
}

/// [`Expiring`] in this process's memory, for a single node.
pub struct MemoryExpiring {
    // A std mutex: held for a map operation only, never across an await.
    entries: Mutex<HashMap<String, Entry>>,
    /// The size at which expired entries are next swept: twice what the last sweep kept,
    /// so a flood of keys costs each operation amortised constant time.
    sweep_at: AtomicUsize,
}

impl std::fmt::Debug for MemoryExpiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryExpiring")
    }
}

/// Fewer entries than this are never swept.
const SWEEP_FLOOR: usize = 10_000;

impl Default for MemoryExpiring {
    fn default() -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            sweep_at: AtomicUsize::new(SWEEP_FLOOR),
        }
    }
}

impl MemoryExpiring {
    fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, Entry>, Instant) -> T) -> T {
        let mut map = self.entries.lock().expect("expiring lock");
        let now = Instant::now();
        if map.len() >= self.sweep_at.load(Ordering::Relaxed) {
            map.retain(|_, e| e.until > now);
            self.sweep_at
                .store((map.len() * 2).max(SWEEP_FLOOR), Ordering::Relaxed);
        }
        f(&mut map, now)
    }

    /// How many keys are held (live or not yet swept); for tests.
    pub fn len(&self) -> usize {
        self.entries.lock().expect("expiring lock").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait::async_trait]
impl Expiring for MemoryExpiring {
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)> {
        Ok(self.with(|map, now| {
            let e = map.entry(key.to_owned()).or_insert(Entry {
                count: 0,
                until: now + window,
            });
            if e.until <= now {
                *e = Entry {
                    count: 0,
                    until: now + window,
                };
            }
            e.count += 1;
            (e.count, e.until - now)
        }))
    }

    async fn count(&self, key: &str) -> anyhow::Result<u64> {
        Ok(self.with(|map, now| {
            map.get(key)
                .filter(|e| e.until > now)
                .map_or(0, |e| e.count)
        }))
    }

    async fn unhit(&self, key: &str) -> anyhow::Result<()> {
        self.with(|map, now| {
            if let Some(e) = map.get_mut(key).filter(|e| e.until > now) {
                e.count = e.count.saturating_sub(1);
            }
        });
        Ok(())
    }

    async fn clear(&self, key: &str) -> anyhow::Result<()> {
        self.with(|map, _| map.remove(key));
        Ok(())
    }

    async fn mark_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        Ok(self.with(|map, now| match map.get_mut(key) {
            Some(e) if e.until > now => false,
            _ => {
                map.insert(
                    key.to_owned(),
                    Entry {
                        count: 1,
                        until: now + ttl,
                    },
                );
                true
            }
        }))
    }

    async fn mark(&self, key: &str, ttl: Duration) -> anyhow::Result<()> {
        self.with(|map, now| {
            map.insert(
                key.to_owned(),
                Entry {
                    count: 1,
                    until: now + ttl,
                },
            )
        });
        Ok(())
    }

    async fn marked(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        Ok(self.with(|map, now| {
            map.get(key)
                .filter(|e| e.until > now)
                .map(|e| e.until - now)
        }))
    }
}

/// Turns the names of things (an email address, an IP address) into opaque keys for
/// [`Expiring`]: HMAC-SHA256 under a secret, so that a key cannot be reversed by hashing
/// guesses. One node uses a random secret of its own; nodes that share their counters must
/// share the secret too.
#[derive(Clone)]
pub struct KeyedHash {
    secret: [u8; 32],
}

impl std::fmt::Debug for KeyedHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyedHash")
    }
}

impl KeyedHash {
    pub fn new(secret: [u8; 32]) -> Self {
        Self { secret }
    }

    /// A new random secret (a single node: nothing else needs to agree on it).
    pub fn random() -> anyhow::Result<Self> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret)?;
        Ok(Self { secret })
    }

    /// `<purpose>:<128-bit hex digest of the parts>`.
    pub fn key(&self, purpose: &str, parts: &[&[u8]]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(purpose.as_bytes());
        for p in parts {
            // Length-prefixed, so that ("ab", "c") and ("a", "bc") differ.
            mac.update(&(p.len() as u64).to_be_bytes());
            mac.update(p);
        }
        let digest = mac.finalize().into_bytes();
        format!("{purpose}:{}", hex::encode(&digest[..16]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn counters_and_marks_expire() {
        let m = MemoryExpiring::default();
        let w = Duration::from_millis(50);
        assert_eq!(m.hit("a", w).await.unwrap().0, 1);
        assert_eq!(m.hit("a", w).await.unwrap().0, 2);
        assert_eq!(m.count("a").await.unwrap(), 2);
        m.unhit("a").await.unwrap();
        assert_eq!(m.count("a").await.unwrap(), 1);
        m.unhit("b").await.unwrap();
        assert_eq!(m.count("b").await.unwrap(), 0);
        assert_eq!(m.hit("a", w).await.unwrap().0, 2);
        assert!(m.mark_once("m", w).await.unwrap());
        assert!(!m.mark_once("m", w).await.unwrap());
        assert!(m.marked("m").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(m.count("a").await.unwrap(), 0);
        assert_eq!(m.hit("a", w).await.unwrap().0, 1, "a new window");
        assert!(m.marked("m").await.unwrap().is_none());
        assert!(m.mark_once("m", w).await.unwrap());
        m.clear("a").await.unwrap();
        assert_eq!(m.count("a").await.unwrap(), 0);
    }

    #[test]
    fn keys_name_no_one_and_depend_on_the_secret() {
        let a = KeyedHash::new([1; 32]);
        let b = KeyedHash::new([2; 32]);
        let k = a.key("login", &[b"ada@example.com", b"192.0.2.1"]);
        assert!(k.starts_with("login:") && !k.contains('@') && !k.contains('.'));
        assert_eq!(k, a.key("login", &[b"ada@example.com", b"192.0.2.1"]));
        assert_ne!(k, b.key("login", &[b"ada@example.com", b"192.0.2.1"]));
        assert_ne!(k, a.key("login", &[b"ada@example.com1", b"92.0.2.1"]));
    }
}

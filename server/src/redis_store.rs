//! Redis for several nodes: the connection, and [`RedisExpiring`], the [`Expiring`] store
//! that every node shares (sign-in and registration limits, used join tokens).
//!
//! Every key starts with `ALCOVE_REDIS_PREFIX` (`alcove` by default) and expires by itself;
//! nothing here is needed after a Redis restart except what it bounds (a restart starts the
//! counters afresh and forgets used join tokens, which expire within minutes anyway).

use crate::{config::Config, expiring::Expiring};
use anyhow::Context as _;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::time::Duration;

/// Connect to `ALCOVE_REDIS_URL`: a connection manager that reconnects by itself, with short
/// timeouts so that a Redis outage answers errors quickly instead of hanging requests.
pub async fn connect(
    config: &Config,
) -> anyhow::Result<Option<(redis::Client, ConnectionManager)>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let client = redis::Client::open(url.expose())
        .with_context(|| format!("ALCOVE_REDIS_URL: {} is not a Redis URL", url.redacted()))?;
    let manager = client
        .get_connection_manager_with_config(manager_config())
        .await
        .with_context(|| format!("connecting to Redis at {}", url.redacted()))?;
    Ok(Some((client, manager)))
}

/// Never wait long: while Redis is away, a command fails after one quick retry (the next
/// command tries to reconnect again), so that nothing waiting on Redis hangs a request, a
/// signalling connection or a room; answers take at most 2 s.
pub fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(200))
        .set_number_of_retries(1)
}

/// Whether Redis answers a PING now (for `/readyz`).
pub async fn ping(conn: &ConnectionManager) -> Result<(), String> {
    let mut c = conn.clone();
    match tokio::time::timeout(
        Duration::from_secs(1),
        redis::cmd("PING").query_async::<String>(&mut c),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(format!("{:?}", e.kind())),
        Err(_) => Err("no answer within 1 s".into()),
    }
}

/// [`Expiring`] in Redis, shared by every node.
#[derive(Clone)]
pub struct RedisExpiring {
    conn: ConnectionManager,
    prefix: String,
}

impl std::fmt::Debug for RedisExpiring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisExpiring")
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// INCR, and start the window on the first hit; returns the count and the milliseconds
/// left. One script, so two nodes hitting at once cannot both see the key absent.
const HIT: &str = r"
local n = redis.call('INCR', KEYS[1])
local t = redis.call('PTTL', KEYS[1])
if t < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  t = tonumber(ARGV[1])
end
return {n, t}
";

/// DECR, but never below zero and never creating the key.
const UNHIT: &str = r"
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then return redis.call('DECR', KEYS[1]) end
return 0
";

fn millis(d: Duration) -> u64 {
    (d.as_millis() as u64).max(1)
}

impl RedisExpiring {
    pub fn new(conn: ConnectionManager, prefix: &str) -> Self {
        Self {
            conn,
            prefix: format!("{prefix}:x:"),
        }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait::async_trait]
impl Expiring for RedisExpiring {
    async fn hit(&self, key: &str, window: Duration) -> anyhow::Result<(u64, Duration)> {
        let mut c = self.conn.clone();
        let (n, left): (u64, i64) = redis::Script::new(HIT)
            .key(self.key(key))
            .arg(millis(window))
            .invoke_async(&mut c)
            .await?;
        Ok((n, Duration::from_millis(left.max(0) as u64)))
    }

    async fn count(&self, key: &str) -> anyhow::Result<u64> {
        let mut c = self.conn.clone();
        let n: Option<u64> = redis::cmd("GET")
            .arg(self.key(key))
            .query_async(&mut c)
            .await?;
        Ok(n.unwrap_or(0))
    }

    async fn unhit(&self, key: &str) -> anyhow::Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(UNHIT)
            .key(self.key(key))
            .invoke_async(&mut c)
            .await?;
        Ok(())
    }

    async fn clear(&self, key: &str) -> anyhow::Result<()> {
        let mut c = self.conn.clone();
        let _: i64 = redis::cmd("DEL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    async fn mark_once(&self, key: &str, ttl: Duration) -> anyhow::Result<bool> {
        let mut c = self.conn.clone();
        let set: Option<String> = redis::cmd("SET")
            .arg(self.key(key))
            .arg(1)
            .arg("NX")
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await?;
        Ok(set.is_some())
    }

    async fn mark(&self, key: &str, ttl: Duration) -> anyhow::Result<()> {
        let mut c = self.conn.clone();
        let _: String = redis::cmd("SET")
            .arg(self.key(key))
            .arg(1)
            .arg("PX")
            .arg(millis(ttl))
            .query_async(&mut c)
            .await?;
        Ok(())
    }

    async fn marked(&self, key: &str) -> anyhow::Result<Option<Duration>> {
        let mut c = self.conn.clone();
        let left: i64 = redis::cmd("PTTL")
            .arg(self.key(key))
            .query_async(&mut c)
            .await?;
        Ok((left > 0).then(|| Duration::from_millis(left as u64)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The machine's Redis (the test command checks it runs).
    async fn redis() -> ConnectionManager {
        let url = std::env::var("ALCOVE_TEST_REDIS_URL")
            .unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        redis::Client::open(url.as_str())
            .unwrap()
            .get_connection_manager_with_config(manager_config())
            .await
            .unwrap_or_else(|e| {
                panic!("Redis is required for the tests and is not reachable at {url}: {e}")
            })
    }

    #[tokio::test]
    async fn counters_and_marks_expire_in_redis_as_in_memory() {
        let prefix = format!("alcove-test-{}", uuid::Uuid::new_v4().simple());
        let r = RedisExpiring::new(redis().await, &prefix);
        let w = Duration::from_millis(300);
        assert_eq!(r.hit("a", w).await.unwrap().0, 1);
        let (n, left) = r.hit("a", w).await.unwrap();
        assert_eq!(n, 2);
        assert!(left <= w && left > Duration::ZERO);
        assert_eq!(r.count("a").await.unwrap(), 2);
        r.unhit("a").await.unwrap();
        assert_eq!(r.count("a").await.unwrap(), 1);
        r.unhit("b").await.unwrap();
        assert_eq!(r.count("b").await.unwrap(), 0);
        assert!(r.marked("b").await.unwrap().is_none(), "no key made");
        assert_eq!(r.hit("a", w).await.unwrap().0, 2);
        assert!(r.mark_once("m", w).await.unwrap());
        assert!(!r.mark_once("m", w).await.unwrap());
        assert!(r.marked("m").await.unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert_eq!(r.count("a").await.unwrap(), 0);
        assert_eq!(r.hit("a", w).await.unwrap().0, 1, "a new window");
        assert!(r.marked("m").await.unwrap().is_none());
        r.mark("k", Duration::from_secs(5)).await.unwrap();
        assert!(r.marked("k").await.unwrap().is_some());
        r.clear("k").await.unwrap();
        assert!(r.marked("k").await.unwrap().is_none());
        // Two stores on one prefix (two nodes) see one counter.
        let other = RedisExpiring::new(redis().await, &prefix);
        assert_eq!(other.hit("a", w).await.unwrap().0, 2);
        r.clear("a").await.unwrap();
    }
}

//! Network test results (order 10): a person's path to the service, as the server's test
//! peer measured it. Kinds and numbers only; never an address, a candidate or an SDP.

use super::{Db, StoreResult, Ts};
use uuid::Uuid;

/// One finished network test.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct NetworkTestRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub started_at: Ts,
    pub finished_at: Ts,
    /// `ready`, `relay_only` or `blocked`.
    pub verdict: String,
    /// Why `blocked`, or what to watch with another verdict (a code).
    pub reason: Option<String>,
    /// `direct`, `relay_udp`, `relay_tcp`, `relay_tls` or `relay` (none: no connection).
    pub path: Option<String>,
    pub relay_forced: bool,
    pub connect_ms: Option<i64>,
    pub rtt_ms: Option<f64>,
    pub packet_loss: Option<f64>,
    pub upload_kbps: Option<f64>,
}

impl Db {
    /// Keep a finished network test.
    pub async fn insert_network_test(&self, r: &NetworkTestRecord) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO network_tests (id, user_id, started_at, finished_at, verdict, reason,
                     path, relay_forced, connect_ms, rtt_ms, packet_loss, upload_kbps)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
            )
            .bind(r.id)
            .bind(r.user_id)
            .bind(r.started_at)
            .bind(r.finished_at)
            .bind(&r.verdict)
            .bind(r.reason.as_deref())
            .bind(r.path.as_deref())
            .bind(r.relay_forced)
            .bind(r.connect_ms)
            .bind(r.rtt_ms)
            .bind(r.packet_loss)
            .bind(r.upload_kbps)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The latest network test of `user_id` that finished at or after `since`.
    pub async fn latest_network_test(
        &self,
        user_id: Uuid,
        since: Ts,
    ) -> StoreResult<Option<NetworkTestRecord>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, user_id, started_at, finished_at, verdict, reason, path, relay_forced,
                        connect_ms, rtt_ms, packet_loss, upload_kbps
                 FROM network_tests WHERE user_id = $1 AND finished_at >= $2
                 ORDER BY finished_at DESC LIMIT 1",
            )
            .bind(user_id)
            .bind(since)
            .fetch_optional(pool)
            .await?
        }))
    }

    /// Forget network tests that finished before `before` (with the session records'
    /// retention); how many.
    pub async fn purge_network_tests(&self, before: Ts) -> StoreResult<u64> {
        Ok(on_pool!(self, pool => {
            sqlx::query("DELETE FROM network_tests WHERE finished_at < $1")
                .bind(before)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }
}

//! [`AppState`]: what every handler can reach.

use crate::{
    auth::{Jwt, LoginThrottle, Passwords},
    config::Config,
    store::Db,
};
use std::sync::Arc;

/// Shared state of the running server; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database (SQLite or PostgreSQL).
    pub db: Db,
    /// Configuration as loaded at start; never changes while running.
    pub config: Arc<Config>,
    /// The base URL people reach this server at, without a trailing slash.
    pub public_url: Arc<str>,
    /// Signs and verifies access and join tokens.
    pub jwt: Jwt,
    /// Argon2id hashing, on a bounded pool of threads of its own.
    pub passwords: Passwords,
    /// Limits on sign-in and registration attempts (per address, account and pair).
    pub login_throttle: LoginThrottle,
    /// Expiring counters and marks shared by the limits and the signalling verifier.
    pub expiring: Arc<dyn crate::expiring::Expiring>,
    /// Redis, when several nodes share it (`ALCOVE_REDIS_URL`).
    pub redis: Option<redis::aio::ConnectionManager>,
    /// Reverse proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[ipnet::IpNet]>,
    /// The signalling service (rooms of this node).
    pub hub: alcove_signaling::Hub,
    /// What `/metrics` reports.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Whether the database answers (watched all the time), and the disk under SQLite.
    pub db_health: Arc<crate::db_health::DbHealth>,
    /// Mints ICE servers and TURN credentials.
    pub ice: crate::signal::IceMinter,
    /// Places for network tests running on this node (`ALCOVE_NETWORK_TEST_MAX`).
    pub network_tests: Arc<tokio::sync::Semaphore>,
    /// Which messages appointment changes queue: present when mail is configured.
    pub mail_plan: Option<Arc<crate::store::MailPlan>>,
    /// Whether the mail server took this node's last message (`/readyz`).
    pub mail_health: Arc<crate::mail::MailHealth>,
}

impl AppState {
    /// The messages appointment changes queue (`None`: no mail is sent).
    pub fn mail_plan(&self) -> Option<&crate::store::MailPlan> {
        self.mail_plan.as_deref()
    }

    /// Append to the audit trail for an actor known by id and role (or none: the system).
    pub async fn audit_as(
        &self,
        actor: Option<(uuid::Uuid, crate::domain::Role)>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        self.db
            .audit(&crate::store::AuditEntry {
                actor_id: actor.map(|a| a.0),
                actor_role: actor.map(|a| a.1.as_str().to_owned()),
                action: action.to_owned(),
                target_type: target_type.to_owned(),
                target_id,
                details,
            })
            .await
    }

    /// Append to the audit trail on behalf of `actor`.
    pub async fn audit(
        &self,
        actor: Option<&crate::auth::AuthUser>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: serde_json::Value,
    ) -> Result<(), crate::store::StoreError> {
        self.db
            .audit(&crate::store::AuditEntry {
                actor_id: actor.map(|a| a.id),
                actor_role: actor.map(|a| a.role.as_str().to_owned()),
                action: action.to_owned(),
                target_type: target_type.to_owned(),
                target_id,
                details,
            })
            .await
    }
}

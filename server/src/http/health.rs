//! Health checks and the public signing keys.

use crate::{
    error::{ApiError, ApiResult, Problem},
    state::AppState,
    store::Readiness,
};
use axum::{extract::State, http::StatusCode};
use serde::Serialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(jwks))
        .routes(routes!(client_config))
}

/// Liveness.
#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    /// Always `ok`.
    pub status: &'static str,
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "Up", body = Health)))]
async fn healthz() -> axum::Json<Health> {
    axum::Json(Health { status: "ok" })
}

/// The database answers and every migration is applied, Redis answers when several nodes
/// share it, and the server is not draining (503 `not_ready` otherwise, saying which).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Readiness>> {
    let mut r = if state.db_health.is_down() {
        // Known down: say so at once, without waiting on the pool.
        Readiness {
            database: "down",
            applied_migration: None,
            expected_migration: 0,
            redis: None,
            disk_free_bytes: None,
            disk: None,
            mail: None,
        }
    } else {
        state.db.readiness().await
    };
    if let Some(free) = state.db_health.free_bytes() {
        r.disk_free_bytes = Some(free);
        r.disk = Some(if state.db_health.disk_low() {
            "low"
        } else {
            "ok"
        });
    }
    r.mail = state.mail_plan.as_ref().map(|_| state.mail_health.status());
    let mut redis_down = None;
    if let Some(conn) = &state.redis {
        match crate::redis_store::ping(conn).await {
            Ok(()) => r.redis = Some("up"),
            Err(why) => {
                r.redis = Some("down");
                redis_down = Some(why);
            }
        }
    }
    let draining = state.hub.draining();
    if r.ready() && redis_down.is_none() && !draining {
        return Ok(axum::Json(r));
    }
    let mut why = Vec::new();
    if draining {
        why.push("draining: this server is stopping".to_owned());
    }
    if r.database == "down" {
        why.push("database down".to_owned());
    } else if !r.ready() {
        why.push(format!(
            "database {}; migration {} applied of {} expected",
            r.database,
            r.applied_migration.map_or("none".into(), |v| v.to_string()),
            r.expected_migration
        ));
    }
    if let Some(e) = redis_down {
        why.push(format!("redis down ({e})"));
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        why.join("; "),
    ))
}

/// The public keys that verify this server's tokens (RFC 7517 JWK Set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JWK Set", body = Object)))]
async fn jwks(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.jwt.keys().jwks())
}

/// What the web client needs to know about this deployment.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ClientConfig {
    /// Sign out after this many seconds without activity, outside a call.
    pub idle_sign_out_seconds: u64,
    /// Joining opens this many seconds before an appointment's start.
    pub join_opens_before_seconds: u64,
    /// The session may go on this many seconds after the end.
    pub join_closes_after_seconds: u64,
    /// A client cancelling later than this many seconds before the start is late.
    pub late_cancel_window_seconds: u64,
    /// Clients may register themselves.
    pub registration_open: bool,
    /// A TURN relay is available (relay-only privacy mode can be chosen).
    pub relay_available: bool,
    /// Every call is relay-only.
    pub relay_enforced: bool,
}

/// Settings of this deployment for the web client (public).
#[utoipa::path(get, path = "/api/v1/client-config", tag = "operations",
    responses((status = 200, description = "Settings", body = ClientConfig)))]
async fn client_config(State(state): State<AppState>) -> axum::Json<ClientConfig> {
    let c = &state.config;
    axum::Json(ClientConfig {
        idle_sign_out_seconds: c.idle_sign_out.as_secs(),
        join_opens_before_seconds: c.join_opens_before.as_secs(),
        join_closes_after_seconds: c.join_closes_after.as_secs(),
        late_cancel_window_seconds: c.late_cancel_window.as_secs(),
        registration_open: c.allow_registration,
        relay_available: state.ice.has_turn(),
        relay_enforced: c.relay_only,
    })
}

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

/// The database answers and every migration is applied (503 `not_ready` otherwise).
#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready", body = Problem, content_type = "application/problem+json"),
    ))]
async fn readyz(State(state): State<AppState>) -> ApiResult<axum::Json<Readiness>> {
    let r = state.db.readiness().await;
    if r.ready() {
        return Ok(axum::Json(r));
    }
    Err(ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "not_ready",
        format!(
            "database {}; migration {} applied of {} expected",
            r.database,
            r.applied_migration.map_or("none".into(), |v| v.to_string()),
            r.expected_migration
        ),
    ))
}

/// The public keys that verify this server's tokens (RFC 7517 JWK Set).
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "JWK Set", body = Object)))]
async fn jwks(State(state): State<AppState>) -> axum::Json<serde_json::Value> {
    axum::Json(state.jwt.keys().jwks())
}

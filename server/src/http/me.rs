//! `/api/v1/me`: the signed-in account.

use super::{extract::Json, views::UserView};
use crate::{
    auth::AuthUser,
    domain::{Email, NewPassword, Password},
    error::{ApiError, ApiResult, Fields, Problem},
    state::AppState,
};
use axum::{extract::State, http::StatusCode};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(get_privacy, set_privacy))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(user: AuthUser) -> axum::Json<UserView> {
    axum::Json(UserView {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
        role: user.role,
    })
}

/// A password change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// Change the password; every other sign-in of the account ends.
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 204, description = "Password changed"),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Weak new password", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<ChangePasswordRequest>,
) -> ApiResult<StatusCode> {
    let email = Email::parse(&user.email).ok();
    let mut f = Fields::default();
    let current = f.check("current_password", Password::parse(body.current_password));
    let new = f.check(
        "new_password",
        NewPassword::parse(body.new_password, email.as_ref()),
    );
    f.finish()?;
    let (current, new) = (current.unwrap(), new.unwrap());
    let hash = state.db.password_hash(user.id).await?;
    if !state
        .passwords
        .verify(current.secret(), hash.as_deref())
        .await
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "the current password is incorrect",
        ));
    }
    let new_hash = state.passwords.hash(new.secret()).await?;
    state
        .db
        .set_password_hash(
            user.id,
            &new_hash,
            Some(user.session_id),
            Some(&user.actor()),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Privacy settings of the account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Connect calls through the TURN relay only, so that the other side never learns your
    /// IP address (slightly more delay). Needs a TURN server on this deployment.
    pub relay_only: bool,
}

/// The account's privacy settings.
#[utoipa::path(get, path = "/api/v1/me/privacy", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "Settings", body = Privacy),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_privacy(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<Privacy>> {
    Ok(axum::Json(Privacy {
        relay_only: state.config.relay_only || state.db.relay_only(user.id).await?,
    }))
}

/// Change the account's privacy settings.
#[utoipa::path(put, path = "/api/v1/me/privacy", tag = "account", security(("bearer" = [])),
    request_body = Privacy,
    responses(
        (status = 200, description = "Settings", body = Privacy),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No TURN server to relay through, or relay-only is enforced", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_privacy(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<Privacy>,
) -> ApiResult<axum::Json<Privacy>> {
    if body.relay_only && !state.ice.has_turn() {
        return Err(ApiError::conflict(
            "relay_unavailable",
            "this service has no TURN relay, so calls cannot be relay-only",
        ));
    }
    if !body.relay_only && state.config.relay_only {
        return Err(ApiError::conflict(
            "relay_enforced",
            "this service makes every call relay-only",
        ));
    }
    state
        .db
        .set_relay_only(user.id, body.relay_only, &user.actor())
        .await?;
    Ok(axum::Json(Privacy {
        relay_only: body.relay_only || state.config.relay_only,
    }))
}

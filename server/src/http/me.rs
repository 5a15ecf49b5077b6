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
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(change_password))
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
        .set_password_hash(user.id, &new_hash, Some(user.session_id))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

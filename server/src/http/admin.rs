//! `/api/v1/admin/*`: account management for admins.

use super::{
    auth::create_account,
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
    views::AdminUserView,
};
use crate::{
    auth::AuthUser,
    domain::{DisplayName, Email, NewPassword, Role},
    error::{ApiError, ApiResult, Fields, Problem},
    state::AppState,
    store::{Creator, StoreError},
};
use axum::{extract::State, http::StatusCode};
use secrecy::SecretString;
use serde::Deserialize;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_user, list_users))
        .routes(routes!(disable_user))
        .routes(routes!(enable_user))
}

/// An account created by an admin.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    pub email: String,
    pub display_name: String,
    pub role: Role,
    /// Initial password, given to the person out of band; they can change it at
    /// `/api/v1/me/password`. Same rule as registration.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// Create an account of any role (how therapists get their accounts).
#[utoipa::path(post, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    request_body = CreateUserRequest,
    responses(
        (status = 201, description = "Account created", body = AdminUserView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Email already registered", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_user(
    State(state): State<AppState>,
    admin: AuthUser,
    Json(body): Json<CreateUserRequest>,
) -> ApiResult<(StatusCode, axum::Json<AdminUserView>)> {
    admin.require(&[Role::Admin])?;
    let mut f = Fields::default();
    let email = f.check("email", Email::parse(&body.email));
    let name = f.check("display_name", DisplayName::parse(&body.display_name));
    let password = f.check(
        "password",
        NewPassword::parse(body.password, email.as_ref()),
    );
    f.finish()?;
    let user = create_account(
        &state,
        email.unwrap(),
        name.unwrap(),
        body.role,
        &password.unwrap(),
        Creator::Admin(admin.actor()),
    )
    .await?;
    tracing::info!(admin_id = %admin.id, user_id = %user.id, role = %user.role(), "account created by admin");
    Ok((StatusCode::CREATED, axum::Json(user.into())))
}

/// Filters of the account list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UserFilter {
    /// Only accounts of this role.
    pub role: Option<Role>,
}

/// List accounts, newest first.
#[utoipa::path(get, path = "/api/v1/admin/users", tag = "admin", security(("bearer" = [])),
    params(UserFilter, PageParams),
    responses(
        (status = 200, description = "One page of accounts", body = Page<AdminUserView>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_users(
    State(state): State<AppState>,
    admin: AuthUser,
    Query(filter): Query<UserFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<Page<AdminUserView>>> {
    admin.require(&[Role::Admin])?;
    let page = page.check()?;
    let (users, total) = state
        .db
        .list_users(filter.role, page.limit(), page.offset())
        .await?;
    state
        .audit(
            Some(&admin),
            "account.list",
            "account",
            None,
            serde_json::json!({"page": page.page}),
        )
        .await?;
    Ok(axum::Json(Page::new(
        users.into_iter().map(Into::into).collect(),
        page,
        total,
    )))
}

async fn set_disabled(
    state: &AppState,
    admin: &AuthUser,
    id: Uuid,
    disabled: bool,
) -> ApiResult<axum::Json<AdminUserView>> {
    admin.require(&[Role::Admin])?;
    if disabled && id == admin.id {
        return Err(ApiError::conflict(
            "cannot_disable_self",
            "an admin cannot disable their own account",
        ));
    }
    let user = state
        .db
        .set_user_disabled(id, disabled, Some(&admin.actor()))
        .await
        .map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found("account"),
            other => other.into(),
        })?;
    tracing::info!(admin_id = %admin.id, user_id = %id, disabled, "account status changed");
    if disabled {
        // Its live signalling connections close at once, on every node.
        state.hub.revoke(id, alcove_signaling::SignIns::All).await;
    }
    Ok(axum::Json(user.into()))
}

/// Disable an account: it can no longer sign in, and its current sign-ins end at once.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/disable", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "Account disabled", body = AdminUserView),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "An admin cannot disable themselves", body = Problem, content_type = "application/problem+json"),
    ))]
async fn disable_user(
    State(state): State<AppState>,
    admin: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AdminUserView>> {
    set_disabled(&state, &admin, id, true).await
}

/// Enable a disabled account.
#[utoipa::path(post, path = "/api/v1/admin/users/{id}/enable", tag = "admin", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Account id")),
    responses(
        (status = 200, description = "Account enabled", body = AdminUserView),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such account", body = Problem, content_type = "application/problem+json"),
    ))]
async fn enable_user(
    State(state): State<AppState>,
    admin: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AdminUserView>> {
    set_disabled(&state, &admin, id, false).await
}

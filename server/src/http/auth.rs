//! `/api/v1/auth/*`: registration, sign-in, refresh, sign-out.

use super::{
    extract::{ClientAddr, Json},
    views::UserView,
};
use crate::{
    auth::tokens::{hash_refresh_token, issue_access, new_refresh_token},
    domain::{DisplayName, Email, NewPassword, Password, Role},
    error::{ApiError, ApiResult, Fields, Problem},
    state::AppState,
    store::{Creator, NewUser, RefreshOutcome, StoreError, Ts, User},
};
use alcove_signaling::SignIns;
use axum::{extract::State, http::StatusCode};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// A new client account.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// See the password rule in the endpoint description.
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
    pub display_name: String,
}

/// The answer to a registration: the same whether the email was new or already had an
/// account, so that registering tells no one which addresses have accounts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RegistrationAccepted {
    /// Always `accepted`.
    pub status: &'static str,
    /// What to do next, for people.
    pub message: &'static str,
}

const REGISTRATION_ACCEPTED: RegistrationAccepted = RegistrationAccepted {
    status: "accepted",
    message: "Sign in with this email address and the password you chose. If the address already had an account, its own password still applies.",
};

/// Sign-in with email and password.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    #[schema(value_type = String, format = Password)]
    pub password: SecretString,
}

/// A refresh token, to rotate or to revoke.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RefreshRequest {
    #[schema(value_type = String)]
    pub refresh_token: SecretString,
}

/// Tokens for a signed-in account.
#[derive(Serialize, utoipa::ToSchema)]
pub struct TokenResponse {
    /// JWT for `Authorization: Bearer`; short-lived.
    pub access_token: String,
    /// Opaque; use once at `/api/v1/auth/refresh` to get new tokens.
    pub refresh_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// Seconds until the access token expires.
    pub expires_in: u64,
    pub user: UserView,
}

pub(crate) fn after(d: Duration) -> Ts {
    Ts::from(
        jiff::Timestamp::now()
            + jiff::SignedDuration::try_from(d).unwrap_or(jiff::SignedDuration::MAX),
    )
}

async fn issue_tokens(
    state: &AppState,
    user: User,
    session_id: Uuid,
    refresh_token: String,
) -> ApiResult<TokenResponse> {
    let ttl = state.config.access_token_ttl;
    let access_token = issue_access(&state.jwt, user.id, session_id, user.role(), ttl)?;
    Ok(TokenResponse {
        access_token,
        refresh_token,
        token_type: "Bearer",
        expires_in: ttl.as_secs(),
        user: user.into(),
    })
}

/// Create a client account.
///
/// The answer is the same, 202 with the same body and after the same work (the password is
/// hashed either way), whether the email was new or already had an account: registration
/// does not tell anyone which addresses have accounts. Then sign in
/// (`POST /api/v1/auth/login`) with the email and the password chosen. An existing account
/// is left as it was (its owner's password still applies). See `docs/security.md`.
///
/// Open unless the operator turned registration off (`ALCOVE_ALLOW_REGISTRATION=false`).
/// Therapists and admins are created by an admin. Password rule: a password must be 10 to
/// 128 characters long, must not be one of the most common passwords, and must not contain
/// the local part of your email address.
#[utoipa::path(post, path = "/api/v1/auth/register", tag = "auth",
    request_body = RegisterRequest,
    responses(
        (status = 202, description = "Registration accepted (the same answer whether or not the email already had an account)", body = RegistrationAccepted),
        (status = 403, description = "Registration is closed", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid email, name or weak password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many registrations from this address", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Busy hashing passwords; retry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn register(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<RegisterRequest>,
) -> ApiResult<(StatusCode, axum::Json<RegistrationAccepted>)> {
    if !state.config.allow_registration {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "registration_closed",
            "this service does not take new registrations; ask your practice for an account",
        ));
    }
    if let Err(wait) = state
        .login_throttle
        .before_registration(addr)
        .await
        .map_err(ApiError::unavailable)?
    {
        return Err(ApiError::too_many_requests(wait.secs()));
    }
    let mut f = Fields::default();
    let email = f.check("email", Email::parse(&body.email));
    let name = f.check("display_name", DisplayName::parse(&body.display_name));
    let password = f.check(
        "password",
        NewPassword::parse(body.password, email.as_ref()),
    );
    f.finish()?;
    let (email, name, password) = (email.unwrap(), name.unwrap(), password.unwrap());
    match create_account(
        &state,
        email.clone(),
        name,
        Role::Client,
        &password,
        Creator::SelfRegistered,
    )
    .await
    {
        Ok(_) => {}
        Err(e) if e.code == "email_taken" => {
            // The same answer as a new account. The attempt is noted on the account (no
            // address, no password); its owner is told by mail where mail is set up.
            if let Some(existing) = state.db.user_by_email(&email).await? {
                state
                    .audit_as(
                        None,
                        "account.registration_attempt",
                        "account",
                        Some(existing.user.id.to_string()),
                        serde_json::json!({}),
                    )
                    .await?;
            }
        }
        Err(e) => return Err(e),
    }
    Ok((StatusCode::ACCEPTED, axum::Json(REGISTRATION_ACCEPTED)))
}

/// Hash the password and create the account; a taken email is 409 `email_taken`.
pub(crate) async fn create_account(
    state: &AppState,
    email: Email,
    display_name: DisplayName,
    role: Role,
    password: &NewPassword,
    by: Creator,
) -> ApiResult<User> {
    let password_hash = state.passwords.hash(password.secret()).await?;
    state
        .db
        .create_user(
            NewUser {
                email,
                display_name,
                role,
                password_hash,
            },
            by,
        )
        .await
        .map_err(|e| match e {
            StoreError::Conflict(_) => ApiError::conflict(
                "email_taken",
                "an account with this email address already exists",
            ),
            other => other.into(),
        })
}

/// Sign in.
///
/// A wrong password and an unknown email get the same answer, in about the same time.
/// Attempts are limited per client address, per email address and client address, and
/// (slowing, not locking) per email address from everywhere: see `docs/security.md`. Past a
/// limit: 429 with `Retry-After`. When every password-hashing thread is busy: 503
/// `server_busy` with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses(
        (status = 200, description = "Signed in", body = TokenResponse),
        (status = 401, description = "Wrong email or password", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Account disabled", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Malformed email or password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many attempts", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "Busy hashing passwords; retry", body = Problem, content_type = "application/problem+json"),
    ))]
async fn login(
    State(state): State<AppState>,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<LoginRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let mut f = Fields::default();
    let email = f.check("email", Email::parse(&body.email));
    let password = f.check("password", Password::parse(body.password));
    f.finish()?;
    let (email, password) = (email.unwrap(), password.unwrap());

    let attempt = match state
        .login_throttle
        .before_sign_in(email.as_str(), addr)
        .await
        .map_err(ApiError::unavailable)?
    {
        Ok(a) => a,
        Err(wait) => return Err(ApiError::too_many_requests(wait.secs())),
    };
    let found = state.db.user_by_email(&email).await?;
    let ok = match state
        .passwords
        .verify(
            password.secret(),
            found.as_ref().map(|u| u.password_hash.as_str()),
        )
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            // Busy (or failed): nothing was checked, so nothing counts.
            state
                .login_throttle
                .not_checked(attempt)
                .await
                .map_err(ApiError::unavailable)?;
            return Err(e.into());
        }
    };
    // The account if there is one. For an unknown address nothing is kept that could name
    // it (an unsalted digest of the email could be reversed by hashing guesses).
    let known = found.as_ref().map(|u| (u.user.id, u.user.role()));
    let Some(found) = found.filter(|_| ok) else {
        tracing::info!("sign-in failed");
        state
            .login_throttle
            .failed(attempt)
            .await
            .map_err(ApiError::unavailable)?;
        state
            .audit_as(
                known,
                "auth.sign_in_failed",
                "account",
                known.map(|k| k.0.to_string()),
                serde_json::json!({"known_account": known.is_some()}),
            )
            .await?;
        return Err(ApiError::unauthorized(
            "invalid_credentials",
            "the email address or password is incorrect",
        ));
    };
    if found.user.disabled {
        state
            .audit_as(
                Some((found.user.id, found.user.role())),
                "auth.sign_in_refused",
                "account",
                Some(found.user.id.to_string()),
                serde_json::json!({"reason": "disabled"}),
            )
            .await?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "account_disabled",
            "this account is disabled",
        ));
    }
    state
        .login_throttle
        .succeeded(attempt)
        .await
        .map_err(ApiError::unavailable)?;
    let (refresh_token, hash) = new_refresh_token()?;
    let session_id = state
        .db
        .create_session(
            found.user.id,
            &hash,
            after(state.config.refresh_token_ttl),
            after(state.config.session_max_age),
        )
        .await?;
    tracing::info!(user_id = %found.user.id, "signed in");
    state
        .audit_as(
            Some((found.user.id, found.user.role())),
            "auth.sign_in",
            "account",
            Some(found.user.id.to_string()),
            serde_json::json!({"sign_in_id": session_id}),
        )
        .await?;
    Ok(axum::Json(
        issue_tokens(&state, found.user, session_id, refresh_token).await?,
    ))
}

/// Longest refresh token we would ever issue, with room; longer input is not ours.
const MAX_REFRESH_LEN: usize = 128;

fn refresh_hash(token: &SecretString) -> ApiResult<Vec<u8>> {
    use secrecy::ExposeSecret as _;
    let t = token.expose_secret();
    if t.is_empty() || t.len() > MAX_REFRESH_LEN {
        return Err(ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is not valid",
        ));
    }
    Ok(hash_refresh_token(t))
}

/// Exchange a refresh token for new tokens.
///
/// Each refresh token works once; the response carries its successor. Presenting a refresh
/// token that was already used revokes every token of that sign-in (someone else may hold
/// a copy), and the account must sign in again.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 200, description = "New access and refresh tokens", body = TokenResponse),
        (status = 401, description = "Invalid, expired or reused refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn refresh(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<axum::Json<TokenResponse>> {
    let hash = refresh_hash(&body.refresh_token)?;
    let (new_token, new_hash) = new_refresh_token()?;
    let outcome = state
        .db
        .rotate_refresh_token(
            &hash,
            &new_hash,
            after(state.config.refresh_token_ttl),
            crate::auth::idle_cutoff(&state.config),
        )
        .await?;
    match outcome {
        RefreshOutcome::Rotated { user, session_id } => Ok(axum::Json(
            issue_tokens(&state, user, session_id, new_token).await?,
        )),
        RefreshOutcome::Reused {
            user_id,
            session_id,
        } => {
            tracing::warn!(%session_id, "refresh token reused: sign-in revoked");
            state.hub.revoke(user_id, SignIns::One(session_id)).await;
            state
                .audit_as(
                    None,
                    "auth.refresh_reuse",
                    "sign_in",
                    Some(session_id.to_string()),
                    serde_json::json!({}),
                )
                .await?;
            Err(ApiError::unauthorized(
                "refresh_token_reused",
                "this refresh token was already used, so every token of this sign-in has been revoked; sign in again",
            ))
        }
        RefreshOutcome::Idle {
            user_id,
            session_id,
        } => {
            tracing::info!(%session_id, "sign-in idle too long: revoked at refresh");
            state.hub.revoke(user_id, SignIns::One(session_id)).await;
            state
                .audit_as(
                    None,
                    "auth.idle_sign_out",
                    "sign_in",
                    Some(session_id.to_string()),
                    serde_json::json!({}),
                )
                .await?;
            Err(ApiError::unauthorized(
                "sign_in_idle",
                "you were signed out after a while without activity; sign in again",
            ))
        }
        RefreshOutcome::Invalid => Err(ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is not valid, has expired, or its sign-in has ended",
        )),
    }
}

/// Sign out: revoke the sign-in the refresh token belongs to, with all its tokens.
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    request_body = RefreshRequest,
    responses(
        (status = 204, description = "Signed out (also when already signed out)"),
        (status = 401, description = "Unknown refresh token", body = Problem, content_type = "application/problem+json"),
    ))]
async fn logout(
    State(state): State<AppState>,
    Json(body): Json<RefreshRequest>,
) -> ApiResult<StatusCode> {
    let hash = refresh_hash(&body.refresh_token)?;
    if let Some((user_id, session_id)) = state.db.revoke_session_by_refresh(&hash, "logout").await?
    {
        // Its signalling connections close too (on every node).
        state.hub.revoke(user_id, SignIns::One(session_id)).await;
        state
            .audit_as(
                None,
                "auth.sign_out",
                "sign_in",
                None,
                serde_json::json!({}),
            )
            .await?;
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::unauthorized(
            "invalid_refresh_token",
            "the refresh token is not valid",
        ))
    }
}

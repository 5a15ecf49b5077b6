//! The signed-in account of a request, from its `Authorization: Bearer` access token.

use super::{jwt::API_AUDIENCE, tokens::AccessClaims};
use crate::{domain::Role, error::ApiError, state::AppState};
use axum::{extract::FromRequestParts, http::request::Parts};
use uuid::Uuid;

/// The account making the request.
///
/// Beyond checking the token, the account and the session are read from the database, so
/// that signing out, disabling an account or changing its role takes effect at once rather
/// than when the access token expires.
#[derive(Debug, Clone)]
pub struct AuthUser {
    pub id: Uuid,
    pub role: Role,
    pub email: String,
    pub display_name: String,
    pub session_id: Uuid,
}

impl AuthUser {
    /// This account as the audit trail names it.
    pub fn actor(&self) -> crate::store::Actor {
        crate::store::Actor {
            id: self.id,
            role: self.role,
        }
    }

    /// 403 unless the account has one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(ApiError::forbidden(format!(
                "this needs the role {}",
                roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(" or ")
            )))
        }
    }
}

/// The token in an `Authorization: Bearer <token>` header, if the header is present.
pub fn bearer(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let Some(value) = parts.headers.get(axum::http::header::AUTHORIZATION) else {
        return Ok(None);
    };
    let value = value.to_str().map_err(|_| {
        ApiError::unauthorized("invalid_token", "the Authorization header is not text")
    })?;
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::unauthorized(
            "invalid_token",
            "the Authorization header must be `Bearer <access token>`",
        ));
    }
    Ok(Some(token.trim()))
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?.ok_or_else(|| {
            ApiError::unauthorized(
                "unauthenticated",
                "sign in first: this needs an access token",
            )
        })?;
        let claims: AccessClaims = state
            .jwt
            .verify(token, API_AUDIENCE)
            .map_err(|e| ApiError::unauthorized("invalid_token", e.to_string()))?;
        let found = state.db.session_user(claims.sub, claims.sid).await?;
        let Some(su) = found else {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "the sign-in has ended",
            ));
        };
        if su.revoked_at.is_some() || su.expires_at <= crate::store::Ts::now() {
            return Err(ApiError::unauthorized(
                "invalid_token",
                "the sign-in has ended",
            ));
        }
        if su.user.disabled {
            return Err(ApiError::unauthorized(
                "account_disabled",
                "this account is disabled",
            ));
        }
        // Automatic logoff: an access token can outlive the idle limit (its lifetime is
        // configured separately), so the sign-in's last use is checked here too.
        if super::idle_expired(su.last_used_at, &state.config) {
            return Err(ApiError::unauthorized(
                "sign_in_idle",
                "you were signed out after a while without activity; sign in again",
            ));
        }
        let touch = super::touch_interval(&state.config);
        let unless_after = crate::store::Ts::from(
            jiff::Timestamp::now() - jiff::SignedDuration::try_from(touch).unwrap_or_default(),
        );
        if su.last_used_at < unless_after {
            match state.db.touch_session(claims.sid, unless_after).await {
                Ok(_) => {}
                // Noting the use is bookkeeping: a full disk must not stop reads.
                Err(crate::store::StoreError::Full(e)) => {
                    tracing::warn!(error = %e, "could not note a sign-in's use: the disk is full");
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(AuthUser {
            id: su.user.id,
            role: su.user.role(),
            email: su.user.email,
            display_name: su.user.display_name,
            session_id: claims.sid,
        })
    }
}

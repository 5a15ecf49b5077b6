//! Care relationships: a therapist's clients, and invitations that make someone one.
//!
//! A therapist books appointments only for their own clients (see `docs/scheduling.md`):
//! people who booked with them, or who accepted an invitation code the therapist gave them.

use super::extract::Json;
use crate::{
    auth::AuthUser,
    domain::Role,
    error::{ApiError, ApiResult, Problem},
    state::AppState,
    store::Ts,
};
use axum::{extract::State, http::StatusCode};
use jiff::{SignedDuration, Timestamp};
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(invite))
        .routes(routes!(accept))
        .routes(routes!(my_clients))
}

/// How long an invitation code stays usable.
const INVITATION_DAYS: i64 = 14;

/// Crockford's base32 alphabet: no I, L, O or U, so a code read aloud or typed is
/// unambiguous.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new code: 80 random bits as 16 base32 characters, in groups of four.
fn new_code() -> anyhow::Result<String> {
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes)?;
    let bits = bytes
        .iter()
        .fold(0u128, |acc, b| (acc << 8) | u128::from(*b));
    let chars: Vec<u8> = (0..16)
        .rev()
        .map(|i| ALPHABET[((bits >> (i * 5)) & 31) as usize])
        .collect();
    Ok(chars
        .chunks(4)
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .collect::<Vec<_>>()
        .join("-"))
}

/// The code as it was issued: lower case, without spaces or dashes, with the letters people
/// mistake for digits read as those digits.
fn normalise(code: &str) -> String {
    code.chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .map(|c| match c.to_ascii_lowercase() {
            'i' | 'l' => '1',
            'o' => '0',
            c => c,
        })
        .collect()
}

fn code_hash(code: &str) -> Vec<u8> {
    Sha256::digest(normalise(code).as_bytes()).to_vec()
}

/// An invitation for a client.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InvitationView {
    /// Give it to your client (in person or in your own message); it works once. Only its
    /// hash is kept, so it cannot be shown again.
    pub code: String,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// Invite a client (therapists).
///
/// Returns a single-use code that a client enters once signed in (`POST
/// /api/v1/invitations/accept`); from then on you can book appointments for them. Clients
/// who book with you from the directory are your clients without one.
#[utoipa::path(post, path = "/api/v1/invitations", tag = "appointments", security(("bearer" = [])),
    responses(
        (status = 201, description = "A new invitation code", body = InvitationView),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
    ))]
async fn invite(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, axum::Json<InvitationView>)> {
    user.require(&[Role::Therapist])?;
    let code = new_code()?;
    let expires_at = Timestamp::now() + SignedDuration::from_hours(24 * INVITATION_DAYS);
    state
        .db
        .create_invitation(&user.actor(), &code_hash(&code), Ts::from(expires_at))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(InvitationView { code, expires_at }),
    ))
}

/// An invitation code to accept.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AcceptRequest {
    #[schema(value_type = String)]
    pub code: SecretString,
}

/// The therapist whose invitation was accepted.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AcceptedView {
    pub therapist_id: Uuid,
    pub display_name: String,
}

/// Accept a therapist's invitation (clients): the therapist may then book appointments for
/// you.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "appointments", security(("bearer" = [])),
    request_body = AcceptRequest,
    responses(
        (status = 200, description = "Accepted", body = AcceptedView),
        (status = 403, description = "Not a client", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "Unknown, used or expired code", body = Problem, content_type = "application/problem+json"),
    ))]
async fn accept(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<AcceptRequest>,
) -> ApiResult<axum::Json<AcceptedView>> {
    user.require(&[Role::Client])?;
    let code = body.code.expose_secret();
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "invitation_not_found",
            "this invitation code is not valid, was already used or has expired; ask your therapist for a new one",
        )
    };
    if code.len() > 64 {
        return Err(not_found());
    }
    let therapist = state
        .db
        .accept_invitation(&code_hash(code), &user.actor())
        .await?
        .ok_or_else(not_found)?;
    let t = state
        .db
        .user_by_id(therapist)
        .await?
        .ok_or_else(not_found)?;
    Ok(axum::Json(AcceptedView {
        therapist_id: t.id,
        display_name: t.display_name,
    }))
}

/// A client of the signed-in therapist.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CareClientView {
    pub id: Uuid,
    pub display_name: String,
    #[schema(value_type = String, format = DateTime)]
    pub since: Timestamp,
    /// `booking` (they booked with you) or `invitation` (they accepted one).
    pub source: String,
}

/// Your clients (therapists): the people you may book appointments for.
#[utoipa::path(get, path = "/api/v1/therapists/me/clients", tag = "appointments", security(("bearer" = [])),
    responses(
        (status = 200, description = "Your clients", body = Vec<CareClientView>),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_clients(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<Vec<CareClientView>>> {
    user.require(&[Role::Therapist])?;
    let rows = state.db.care_clients(user.id).await?;
    Ok(axum::Json(
        rows.into_iter()
            .map(|c| CareClientView {
                id: c.id,
                display_name: c.display_name,
                since: c.since.get(),
                source: c.source,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_sixteen_unambiguous_characters_and_survive_retyping() {
        let code = new_code().unwrap();
        assert_eq!(code.len(), 19, "{code}");
        assert!(
            code.chars()
                .all(|c| c == '-' || ALPHABET.contains(&(c as u8)))
        );
        let retyped = code.to_uppercase().replace('-', " ").replace('1', "l");
        assert_eq!(code_hash(&retyped), code_hash(&code));
        assert_ne!(new_code().unwrap(), code);
    }
}

//! Access tokens (JWT) and refresh tokens (opaque).

use super::jwt::{API_AUDIENCE, Jwt, TypedClaims};
use crate::domain::Role;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::time::Duration;
use uuid::Uuid;

/// The claims of an access token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccessClaims {
    pub iss: String,
    pub aud: String,
    /// The account.
    pub sub: Uuid,
    /// The sign-in session; revoking it ends this token too.
    pub sid: Uuid,
    pub role: Role,
    /// Always `access`.
    pub typ: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    pub jti: Uuid,
}

impl TypedClaims for AccessClaims {
    const TYP: &'static str = "access";
    fn typ(&self) -> &str {
        &self.typ
    }
}

/// Sign an access token for `user_id` in session `sid`.
pub fn issue_access(
    jwt: &Jwt,
    user_id: Uuid,
    sid: Uuid,
    role: Role,
    ttl: Duration,
) -> anyhow::Result<String> {
    let now = Timestamp::now().as_second();
    let claims = AccessClaims {
        iss: jwt.issuer().to_owned(),
        aud: API_AUDIENCE.to_owned(),
        sub: user_id,
        sid,
        role,
        typ: AccessClaims::TYP.to_owned(),
        iat: now,
        nbf: now,
        exp: now + ttl.as_secs() as i64,
        jti: Uuid::new_v4(),
    };
    jwt.sign(&claims)
}

/// A new refresh token: 256 random bits, base64url, with a recognisable prefix (so that
/// secret scanners can spot a leaked one). Only its hash is stored.
pub fn new_refresh_token() -> anyhow::Result<(String, Vec<u8>)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    let token = format!("alcrt_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = hash_refresh_token(&token);
    Ok((token, hash))
}

/// SHA-256 of a refresh token. A fast hash is right here: the token has 256 bits of
/// entropy, so there is nothing to brute-force.
pub fn hash_refresh_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

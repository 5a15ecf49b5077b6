//! Issuing and verifying the JWTs this server signs (access tokens, and join tokens for
//! signalling).
//!
//! Verification is strict where the library's defaults are loose: the algorithm is pinned
//! to EdDSA whatever the header says, the key is chosen by `kid` from our own set, `exp`,
//! `nbf`, `iss`, `aud` and `sub` are required and checked, the leeway is [`LEEWAY_SECS`],
//! and each token names its type (`typ` claim) so an access token can never stand in for a
//! join token or the other way round.

use super::keys::KeySet;
use jsonwebtoken::{Algorithm, Header, Validation, decode, decode_header, encode};
use serde::{Serialize, de::DeserializeOwned};
use std::sync::Arc;

/// Clock skew tolerated between nodes, in seconds.
pub const LEEWAY_SECS: u64 = 10;

/// `aud` of access tokens: the HTTP API.
pub const API_AUDIENCE: &str = "alcove-api";

/// Claims that name their own token type.
pub trait TypedClaims {
    /// The value the `typ` claim must have.
    const TYP: &'static str;
    fn typ(&self) -> &str;
}

/// Why a token was refused. The message is safe to show: it never echoes the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed with an unsupported algorithm")]
    Algorithm,
    #[error("the token is signed by an unknown key")]
    UnknownKey,
    #[error("the token's signature is invalid")]
    Signature,
    #[error("the token has expired")]
    Expired,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token is for another audience")]
    Audience,
    #[error("the token is from another issuer")]
    Issuer,
    #[error("the token is of the wrong type")]
    Type,
    #[error("the token lacks the claim {0}")]
    MissingClaim(String),
}

/// A header the library cannot read is either of an algorithm it does not know (`none`)
/// or not a JWT at all; say which.
fn classify_bad_header(token: &str) -> TokenError {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let alg = token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("alg").cloned());
    match alg {
        Some(_) => TokenError::Algorithm,
        None => TokenError::Malformed,
    }
}

/// Signs and verifies tokens with the server's [`KeySet`].
#[derive(Clone, Debug)]
pub struct Jwt {
    keys: Arc<KeySet>,
    issuer: String,
}

impl Jwt {
    pub fn new(keys: Arc<KeySet>, issuer: impl Into<String>) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Sign `claims` with the current key.
    pub fn sign<C: Serialize>(&self, claims: &C) -> anyhow::Result<String> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.keys.current_kid().to_owned());
        header.typ = Some("JWT".into());
        Ok(encode(&header, claims, self.keys.signing_key())?)
    }

    /// Verify `token` for `audience` and return its claims.
    pub fn verify<C: DeserializeOwned + TypedClaims>(
        &self,
        token: &str,
        audience: &str,
    ) -> Result<C, TokenError> {
        let header = decode_header(token).map_err(|_| classify_bad_header(token))?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Algorithm);
        }
        let kid = header.kid.ok_or(TokenError::UnknownKey)?;
        let key = self.keys.decoding_key(&kid).ok_or(TokenError::UnknownKey)?;

        let mut v = Validation::new(Algorithm::EdDSA);
        v.leeway = LEEWAY_SECS;
        v.validate_exp = true;
        v.validate_nbf = true;
        v.reject_tokens_expiring_in_less_than = 0;
        v.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        v.set_audience(&[audience]);
        v.set_issuer(&[&self.issuer]);

        use jsonwebtoken::errors::ErrorKind as K;
        // Decode to a JSON value first: the library deserialises into the target type before
        // it validates, which would report an expired or claim-less token as "malformed".
        let data = decode::<serde_json::Value>(token, key, &v).map_err(|e| match e.kind() {
            K::ExpiredSignature => TokenError::Expired,
            K::ImmatureSignature => TokenError::NotYetValid,
            K::InvalidAudience => TokenError::Audience,
            K::InvalidIssuer => TokenError::Issuer,
            K::InvalidSignature => TokenError::Signature,
            K::InvalidAlgorithm | K::InvalidAlgorithmName | K::UnsupportedAlgorithm => {
                TokenError::Algorithm
            }
            K::MissingRequiredClaim(c) => TokenError::MissingClaim(c.clone()),
            _ => TokenError::Malformed,
        })?;
        let claims: C = serde_json::from_value(data.claims).map_err(|_| TokenError::Malformed)?;
        if claims.typ() != C::TYP {
            return Err(TokenError::Type);
        }
        Ok(claims)
    }
}

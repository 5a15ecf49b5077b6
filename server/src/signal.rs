//! The server's side of signalling: join tokens, TURN credentials, the WebSocket upgrade,
//! and the implementations of the signalling crate's interfaces.

use crate::expiring::Expiring;
use crate::{
    auth::{Jwt, TypedClaims},
    config::Config,
    domain::{AppointmentStatus, Role},
    store::Db,
};
use alcove_signaling::{
    IceConfig, IceServer, IceTransportPolicy, JoinGrant, JoinRefusal, JoinVerifier, PeerRole,
};
use base64::{Engine as _, engine::general_purpose::STANDARD};
use hmac::{Hmac, KeyInit as _, Mac as _};
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret as _;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use uuid::Uuid;

/// What a turned-away client is told when they try again.
pub const DENIED: &str =
    "the therapist has not let you into this session; you can join again if they allow it";

/// `aud` of join tokens: the signalling service only.
pub const SIGNAL_AUDIENCE: &str = "alcove-signal";

/// The claims of a join token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JoinClaims {
    pub iss: String,
    pub aud: String,
    /// The account.
    pub sub: Uuid,
    /// The sign-in that asked for it: signing out (or out everywhere, a password change,
    /// a disabled account) ends the join tokens it issued too.
    pub sid: Uuid,
    /// The appointment whose room it opens.
    pub apt: Uuid,
    pub role: Role,
    /// The appointment's start when the token was issued: a moved appointment refuses it.
    pub starts: i64,
    /// Always `join`.
    pub typ: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Single use: remembered until it expires.
    pub jti: Uuid,
}

impl TypedClaims for JoinClaims {
    const TYP: &'static str = "join";
    fn typ(&self) -> &str {
        &self.typ
    }
}

/// Join token ids already used, kept until their tokens can no longer verify. In the
/// shared [`Expiring`] store, so that on several nodes a token still works only once.
#[derive(Clone)]
pub struct UsedTokens {
    store: Arc<dyn Expiring>,
}

impl UsedTokens {
    pub fn new(store: Arc<dyn Expiring>) -> Self {
        Self { store }
    }

    /// Record `jti` (valid until `exp`); false if it was already used. An id is kept until
    /// its token can no longer verify: `exp` plus the verifier's leeway.
    pub async fn first_use(&self, jti: Uuid, exp: i64) -> anyhow::Result<bool> {
        let until = exp + crate::auth::jwt::LEEWAY_SECS as i64;
        let left = (until - Timestamp::now().as_second()).max(1) as u64;
        self.store
            .mark_once(
                &format!("jti:{}", jti.simple()),
                std::time::Duration::from_secs(left),
            )
            .await
    }
}

/// Mints ICE configurations: STUN URLs, and TURN credentials per the TURN REST API
/// convention coturn implements with `use-auth-secret`.
#[derive(Debug, Clone)]
pub struct IceMinter {
    stun: Vec<String>,
    turn: Vec<String>,
    secret: Option<secrecy::SecretString>,
    ttl: std::time::Duration,
    relay_only: bool,
}

impl IceMinter {
    pub fn new(config: &Config) -> Self {
        Self {
            stun: config.stun_urls.clone(),
            turn: config.turn_urls.clone(),
            secret: config.turn_secret.clone(),
            ttl: config.turn_ttl,
            relay_only: config.relay_only,
        }
    }

    pub fn has_turn(&self) -> bool {
        !self.turn.is_empty() && self.secret.is_some()
    }

    /// What a call of an account that chose relay-only (or not) gets on this deployment.
    pub fn effective(&self, account_relay_only: bool) -> CallPath {
        if self.relay_only {
            CallPath::Relayed
        } else if account_relay_only {
            if self.has_turn() {
                CallPath::Relayed
            } else {
                // Never fall back to direct: the person believes their address hidden.
                CallPath::Refused
            }
        } else {
            CallPath::Direct
        }
    }

    /// ICE servers for one participant: relay-only when the deployment or the account asks
    /// for it. An account that chose relay-only on a deployment without TURN gets
    /// `Err(RelayUnavailable)`, never a direct connection.
    pub fn mint(&self, account_relay_only: bool) -> Result<IceConfig, RelayUnavailable> {
        let path = self.effective(account_relay_only);
        if path == CallPath::Refused {
            return Err(RelayUnavailable);
        }
        Ok(self.mint_servers(path == CallPath::Relayed))
    }

    fn mint_servers(&self, relay: bool) -> IceConfig {
        let mut servers = Vec::new();
        if !self.stun.is_empty() {
            servers.push(IceServer {
                urls: self.stun.clone(),
                username: None,
                credential: None,
            });
        }
        let mut expires_at = None;
        if let (false, Some(secret)) = (self.turn.is_empty(), &self.secret) {
            let expiry = Timestamp::now().as_second() + self.ttl.as_secs() as i64;
            let mut id = [0u8; 8];
            getrandom::fill(&mut id).expect("the system random source works");
            let username = format!("{expiry}:{}", hex::encode(id));
            let credential = turn_credential(secret.expose_secret(), &username);
            servers.push(IceServer {
                urls: self.turn.clone(),
                username: Some(username),
                credential: Some(credential),
            });
            expires_at = Some(expiry);
        }
        IceConfig {
            ice_servers: servers,
            ice_transport_policy: if relay {
                IceTransportPolicy::Relay
            } else {
                IceTransportPolicy::All
            },
            expires_at,
        }
    }
}

/// How an account's calls connect on this deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CallPath {
    /// Through the TURN relay only: the other side never learns your IP address.
    Relayed,
    /// Peer to peer where the network allows: the other side may learn your IP address.
    Direct,
    /// You chose relay-only, and this deployment has no relay now: joining is refused
    /// (rather than connecting directly behind your back).
    Refused,
}

/// An account chose relay-only calls and this deployment has no TURN relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error(
    "you chose relay-only calls, and this service has no relay right now; turn relay-only off in Settings to join with a direct connection (the other side may then learn your IP address), or ask the practice to set up a relay"
)]
pub struct RelayUnavailable;

/// base64(HMAC-SHA1(secret, username)): the TURN REST API credential.
pub fn turn_credential(secret: &str, username: &str) -> String {
    let mut mac =
        Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Why an account may not join an appointment's session now.
pub fn joinable(
    config: &Config,
    a: &crate::store::Appointment,
    user_id: Uuid,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), &'static str> {
    if !a.is_participant(user_id) {
        return Err("you do not take part in this appointment");
    }
    if a.status != AppointmentStatus::Booked {
        return Err("the appointment is no longer booked");
    }
    let sd = |d: std::time::Duration| SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX);
    let opens = a.starts_at.get() - sd(config.join_opens_before);
    let closes = a.ends_at.get() + sd(config.join_closes_after);
    if now < opens {
        return Err("the session is not open yet");
    }
    if now >= closes {
        return Err("the session is over");
    }
    Ok((opens, closes))
}

/// The server's [`JoinVerifier`]: checks join tokens against keys and the database.
pub struct Verifier {
    pub db: Db,
    pub db_health: Arc<crate::db_health::DbHealth>,
    pub jwt: Jwt,
    pub config: Arc<Config>,
    pub used: UsedTokens,
    pub ice: IceMinter,
}

impl Verifier {
    /// Whether this account's media must go through TURN. When the setting cannot be read,
    /// relay: an account that chose privacy must never be offered host candidates by mistake.
    async fn relay_only(&self, user_id: Uuid) -> bool {
        self.db.relay_only(user_id).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the relay-only setting; relaying");
            true
        })
    }
}

/// What a join that could not be checked now is told (it is closed with 1013, and the
/// browser tries again).
const TRY_AGAIN: &str = "the service cannot check this join right now; try again in a moment";

/// Longest join token accepted.
const MAX_TOKEN_LEN: usize = 4096;

#[async_trait::async_trait]
impl JoinVerifier for Verifier {
    async fn verify(&self, token: &str) -> Result<JoinGrant, JoinRefusal> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(JoinRefusal::InvalidToken(
                "the join token is missing or too long".into(),
            ));
        }
        let claims: JoinClaims = self
            .jwt
            .verify(token, SIGNAL_AUDIENCE)
            .map_err(|e| JoinRefusal::InvalidToken(e.to_string()))?;
        // A database known to be down: a clear "try again" at once (before the token is
        // spent), never a wait.
        if self.db_health.is_down() {
            return Err(JoinRefusal::Unavailable(TRY_AGAIN.into()));
        }
        let first = self
            .used
            .first_use(claims.jti, claims.exp)
            .await
            .map_err(|_| JoinRefusal::Unavailable(TRY_AGAIN.into()))?;
        if !first {
            return Err(JoinRefusal::InvalidToken(
                "the join token was already used; get a new one".into(),
            ));
        }
        let signed_in = self
            .db
            .session_user(claims.sub, claims.sid)
            .await
            .map_err(|_| JoinRefusal::Unavailable(TRY_AGAIN.into()))?;
        let (user, relay_only) = match signed_in {
            Some(su) if su.user.disabled => {
                return Err(JoinRefusal::InvalidToken("the account is disabled".into()));
            }
            Some(su)
                if su.revoked_at.is_none()
                    && su.expires_at > crate::store::Ts::now()
                    && !crate::auth::idle_expired(su.last_used_at, &self.config) =>
            {
                (su.user, su.relay_only)
            }
            _ => {
                return Err(JoinRefusal::InvalidToken(
                    "the sign-in that asked for this join token has ended; sign in again".into(),
                ));
            }
        };
        let a = self
            .db
            .appointment(claims.apt)
            .await
            .map_err(|_| JoinRefusal::Unavailable(TRY_AGAIN.into()))?
            .ok_or_else(|| JoinRefusal::NotJoinable("no such appointment".into()))?;
        if a.denied(user.id) {
            return Err(JoinRefusal::Denied(DENIED.into()));
        }
        if a.starts_at.get().as_second() != claims.starts {
            return Err(JoinRefusal::NotJoinable(
                "the appointment was moved; get a new join token".into(),
            ));
        }
        let (_, closes) = joinable(&self.config, &a, user.id, Timestamp::now())
            .map_err(|why| JoinRefusal::NotJoinable(why.into()))?;
        let role = if a.therapist_id == user.id {
            PeerRole::Therapist
        } else {
            PeerRole::Client
        };
        let ice = self
            .ice
            .mint(relay_only)
            .map_err(|e| JoinRefusal::NotJoinable(e.to_string()))?;
        // A client's latest network test, for the therapist's lobby; a database hiccup here
        // only leaves it out.
        let network = if role == PeerRole::Client {
            let since =
                crate::store::Ts::from(Timestamp::now() - crate::http::nettest::LATEST_WITHIN);
            match self.db.latest_network_test(user.id, since).await {
                Ok(r) => r.map(|r| alcove_signaling::protocol::NetworkCheck {
                    verdict: r.verdict,
                    reason: r.reason,
                    path: r.path,
                    rtt_ms: r.rtt_ms,
                    packet_loss: r.packet_loss,
                    upload_kbps: r.upload_kbps,
                    at: r.finished_at.get().as_millisecond(),
                }),
                Err(e) => {
                    tracing::debug!(error = %e, "latest network test not read");
                    None
                }
            }
        } else {
            None
        };
        Ok(JoinGrant {
            network,
            appointment_id: a.id,
            user_id: user.id,
            role,
            display_name: user.display_name,
            closes_at: closes,
            auto_admit: a.auto_admit,
            ice,
            sign_in: Some(claims.sid),
        })
    }

    async fn refresh_ice(&self, user_id: Uuid) -> IceConfig {
        // The deployment's TURN setting does not change while it runs, so a refusal here
        // would have refused the join; fail closed all the same: relay policy, no servers.
        self.ice
            .mint(self.relay_only(user_id).await)
            .unwrap_or(IceConfig {
                ice_servers: Vec::new(),
                ice_transport_policy: IceTransportPolicy::Relay,
                expires_at: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_join_token_is_remembered_while_it_can_still_verify() {
        let used = UsedTokens::new(Arc::new(crate::expiring::MemoryExpiring::default()));
        let jti = Uuid::new_v4();
        // Expired 5 s ago: still accepted by the verifier's 10 s leeway, so still remembered.
        let exp = Timestamp::now().as_second() - 5;
        assert!(used.first_use(jti, exp).await.unwrap());
        assert!(
            !used.first_use(jti, exp).await.unwrap(),
            "a second use inside the leeway is refused"
        );
        assert!(used.first_use(Uuid::new_v4(), exp).await.unwrap());
    }

    #[test]
    fn turn_credentials_follow_the_rest_api_convention() {
        // Known answer, computed with: printf '%s' 1700000000:alice |
        //   openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(
            turn_credential("secret", "1700000000:alice"),
            "d8soP47RbdIKLDUOpnJPVQyq5Ts="
        );
    }
}

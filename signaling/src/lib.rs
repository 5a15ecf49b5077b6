//! Alcove's WebSocket signalling: who may meet, the waiting room, and the relay of what
//! WebRTC needs to connect. Media and chat never pass through here.
//!
//! - [`protocol`]: the JSON messages, error codes and close codes (the contract in
//!   `docs/signaling.md`).
//! - [`room`]: one room's state (waiting room, admission, relay, reconnection), a plain
//!   struct changed in one place, in order.
//! - [`hub`]: [`hub::Hub`], a node's signalling service, and [`hub::Hub::serve`], the
//!   per-connection loop.
//! - [`router`]: where rooms live, behind one interface; [`local`] keeps them in this
//!   process (one node), [`cluster`] spreads them over several nodes through Redis.
//! - [`validate`]: limits and checks on descriptions, candidates, stats and notices.
//! - [`client`]: a Rust client for the protocol (tests, benchmarks, tools).
//!
//! The crate knows nothing of SQL or HTTP. It takes what it needs from the server through
//! two small interfaces: a [`JoinVerifier`] (join token to [`JoinGrant`]) and an
//! [`EventSink`] (what happened in a room, for the session record).

pub mod client;
pub mod cluster;
pub mod hub;
pub mod local;
pub mod protocol;
pub mod room;
pub mod router;
pub mod stats;
pub mod validate;

pub use hub::{Frame, Hub};
pub use protocol::{
    ClientMessage, ErrorCode, IceConfig, IceServer, IceTransportPolicy, ParticipantId, PeerRole,
    ServerMessage, Stats, close,
};

use std::time::Duration;
use uuid::Uuid;

/// What a valid join token grants: one account, in one role, in one appointment's room.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct JoinGrant {
    pub appointment_id: Uuid,
    pub user_id: Uuid,
    pub role: PeerRole,
    pub display_name: String,
    /// When the appointment's join window closes: the room ends then.
    pub closes_at: jiff::Timestamp,
    /// Whether clients enter without being admitted.
    pub auto_admit: bool,
    /// ICE servers and policy for this participant.
    pub ice: IceConfig,
    /// The sign-in the join token was asked for: ending it closes this connection.
    #[serde(default)]
    pub sign_in: Option<Uuid>,
    /// A client's latest network test, shown to the therapist while they wait.
    #[serde(default)]
    pub network: Option<protocol::NetworkCheck>,
}

/// Which of an account's sign-ins a revocation ends (see [`Hub::revoke`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum SignIns {
    /// Every one: signed out everywhere, the account disabled.
    All,
    /// This one: signed out, a refresh token reused, idle too long.
    One(Uuid),
    /// Every one but this: a new password, set from this sign-in.
    AllBut(Uuid),
}

impl SignIns {
    /// Whether a connection joined from sign-in `s` is among these.
    pub fn include(self, s: Option<Uuid>) -> bool {
        match self {
            SignIns::All => true,
            SignIns::One(one) => s == Some(one),
            SignIns::AllBut(kept) => s != Some(kept),
        }
    }
}

/// Why a join token was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefusal {
    /// Malformed, forged, expired, of another audience or type, or already used.
    InvalidToken(String),
    /// The token is fine but the appointment cannot be joined now.
    NotJoinable(String),
    /// The therapist turned this client away from the session (until they lift it).
    Denied(String),
    /// The token could not be checked now (the database or, with several nodes, Redis does
    /// not answer): `error unavailable`, closed with 1013, and the browser tries again.
    Unavailable(String),
}

/// Checks join tokens; implemented by the server.
#[async_trait::async_trait]
pub trait JoinVerifier: Send + Sync + 'static {
    /// Verify a token (signature, audience, type, expiry, single use) and that its
    /// appointment is joinable now by that account.
    async fn verify(&self, token: &str) -> Result<JoinGrant, JoinRefusal>;

    /// Fresh ICE configuration for an account, before its TURN credentials expire.
    async fn refresh_ice(&self, user_id: Uuid) -> IceConfig;
}

/// A participant as the session record knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParticipantRef {
    pub participant_id: ParticipantId,
    pub user_id: Uuid,
    pub role: PeerRole,
}

/// What happened in a room. Ids, times, roles and reasons only: never content.
#[derive(Debug, Clone, PartialEq)]
pub enum EventKind {
    /// The room opened (the first hello of the session).
    Started,
    /// A client entered the waiting room.
    Knocked { participant: ParticipantRef },
    /// A waiting client was let in; `by` is the therapist's account (absent: auto-admit).
    Admitted {
        participant_id: ParticipantId,
        by: Option<Uuid>,
    },
    /// A waiting client was turned away.
    Denied {
        participant_id: ParticipantId,
        by: Uuid,
    },
    /// A participant's connection opened (first join, resume, or takeover).
    Connected {
        participant: ParticipantRef,
        resumed: bool,
    },
    /// A participant's connection dropped without `leave`; its place is held.
    Disconnected { participant_id: ParticipantId },
    /// A participant left for good (`left`, `timeout`, `denied`, `removed`).
    Left {
        participant_id: ParticipantId,
        reason: String,
    },
    /// Quality figures from a participant.
    Stats {
        participant_id: ParticipantId,
        stats: Stats,
    },
    /// The room closed.
    Ended { reason: String },
}

/// One room event with its session and time.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEvent {
    /// The room's lifetime: one session of the appointment.
    pub session_id: Uuid,
    pub appointment_id: Uuid,
    pub at: jiff::Timestamp,
    pub kind: EventKind,
}

/// Receives room events; implemented by the server (the session record). A room awaits
/// each record before it sends the messages of the step that caused it, so a durable sink
/// loses nothing that participants were told.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    async fn record(&self, event: SessionEvent);

    /// This node took a session's room over from another (that died or stopped), or from
    /// its own previous run: the record continues the same session from here.
    async fn adopted(&self, _session_id: Uuid, _appointment_id: Uuid) {}

    /// One node is stopping: keep these rooms until it starts again, when they are given
    /// back to [`crate::local::LocalRouter::restore`]. A sink that cannot keep them loses
    /// the sessions (the next start records them as lost).
    async fn hand_over(&self, _rooms: Vec<room::RoomSnapshot>) {}
}

/// A sink that drops everything (for tools and tests that do not keep records).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

#[async_trait::async_trait]
impl EventSink for NullSink {
    async fn record(&self, _event: SessionEvent) {}
}

/// Limits and timings of the signalling service.
#[derive(Debug, Clone)]
pub struct SignalingConfig {
    /// Longest wait for `hello` after the socket opens.
    pub hello_timeout: Duration,
    /// How often the server pings.
    pub ping_interval: Duration,
    /// A connection with no frame (pong included) for this long is dead.
    pub idle_timeout: Duration,
    /// How long a dropped participant's place is held.
    pub grace: Duration,
    /// Largest text frame.
    pub max_message_bytes: usize,
    /// Largest SDP in a description.
    pub max_sdp_bytes: usize,
    /// Largest candidate line.
    pub max_candidate_bytes: usize,
    /// Messages queued for one connection before it counts as a slow consumer.
    pub outbox: usize,
    /// Signals held for a participant while it reconnects (at most half the outbox, so
    /// that they and the welcome fit it when the participant comes back).
    pub held_signals: usize,
    /// Rate limit: burst size and sustained messages per second per connection (text,
    /// binary, ping and pong frames alike).
    pub rate_burst: u32,
    pub rate_per_sec: u32,
    /// Byte budget: burst and sustained bytes per second a connection may send. A flood of
    /// large valid signals is charged to its sender (closed with 4008), not to the peer it
    /// is aimed at.
    pub rate_burst_bytes: u32,
    pub rate_bytes_per_sec: u32,
    /// How long before TURN credentials expire fresh ones are sent.
    pub ice_refresh_margin: Duration,
    /// Longest a write to a socket may take.
    pub write_timeout: Duration,
}

impl Default for SignalingConfig {
    fn default() -> Self {
        Self {
            hello_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            grace: Duration::from_secs(30),
            max_message_bytes: 64 * 1024,
            max_sdp_bytes: 48 * 1024,
            max_candidate_bytes: 1024,
            outbox: 64,
            held_signals: 32,
            rate_burst: 200,
            rate_per_sec: 50,
            // A renegotiation is one SDP of 5 to 15 KiB and a few dozen candidates; the
            // largest allowed SDP is 48 KiB. These leave room for several at once.
            rate_burst_bytes: 256 * 1024,
            rate_bytes_per_sec: 64 * 1024,
            ice_refresh_margin: Duration::from_secs(5 * 60),
            write_timeout: Duration::from_secs(10),
        }
    }
}

/// A random secret, base64url, for resume tokens.
pub(crate) fn random_token() -> String {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    let mut b = [0u8; 24];
    getrandom::fill(&mut b).expect("the system random source works");
    URL_SAFE_NO_PAD.encode(b)
}

//! The signalling protocol: JSON text frames, each an object with a `type`.
//!
//! `docs/signaling.md` is the contract written against these types; a test checks that it
//! names every message, error code and close code defined here.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A participant's id in a room: random, stable across reconnection and takeover, and not
/// the account id.
pub type ParticipantId = Uuid;

/// What a participant is in the room.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerRole {
    Therapist,
    Client,
}

/// An ICE server as `RTCIceServer` takes it. `Debug` hides the TURN credential.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// `RTCConfiguration.iceTransportPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IceTransportPolicy {
    /// Any candidate (host, server-reflexive, relay).
    All,
    /// TURN relay only: neither side learns the other's IP address.
    Relay,
}

/// ICE configuration for one participant, with when its TURN credentials expire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceConfig {
    pub ice_servers: Vec<IceServer>,
    pub ice_transport_policy: IceTransportPolicy,
    /// Unix seconds when the TURN credentials expire (absent without TURN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
}

/// `RTCSessionDescriptionInit`. `Debug` shows the type and the SDP's length only: SDP
/// carries addresses and certificate fingerprints.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Description {
    /// `offer`, `answer`, `pranswer` or `rollback`.
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub sdp: String,
}

/// `RTCIceCandidateInit`; an empty `candidate` marks the end of candidates. `Debug` hides
/// the candidate line (it holds an address).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Candidate {
    pub candidate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_mid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sdp_m_line_index: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_fragment: Option<String>,
}

/// Connection quality figures a peer reports (aggregates only; never addresses).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    /// The peer these figures are about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<ParticipantId>,
    /// `direct` or `relay` (from the selected candidate pair's type).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter_ms: Option<f64>,
    /// Fraction of packets lost, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bitrate_kbps: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub frames_dropped: Option<u64>,
}

/// A peer in `welcome.peers`, `admitted.peers` and `peer_joined`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    pub participant_id: ParticipantId,
    pub role: PeerRole,
    pub display_name: String,
    /// Whether **you** (the receiver) play the polite side of the perfect-negotiation
    /// pattern with this peer; the peer is told the opposite.
    pub polite: bool,
}

/// A client's latest network test, for the therapist's lobby: the verdict and figures only.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetworkCheck {
    /// `ready`, `relay_only` or `blocked`.
    pub verdict: String,
    /// Why `blocked`, or a warning (`high_loss`, `high_latency`, `low_upload`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// `direct`, `relay_udp`, `relay_tcp`, `relay_tls` or `relay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Fraction lost, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upload_kbps: Option<f64>,
    /// Unix milliseconds when the test finished.
    pub at: i64,
}

/// A client in the therapist's lobby.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WaitingInfo {
    pub participant_id: ParticipantId,
    pub display_name: String,
    /// Unix milliseconds when they started waiting.
    pub since: i64,
    /// Their latest network test of the last 24 hours, if they ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkCheck>,
}

/// Messages a peer sends. `Debug` hides tokens, SDP, candidates and notice text.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientMessage {
    /// First message: a join token from `POST /api/v1/appointments/{id}/join`.
    Hello {
        token: String,
        /// From the last `welcome`, to take one's place back after a dropped connection.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume_token: Option<String>,
        /// The client lost its peer connections (a page reload): peers must set up new ones
        /// instead of restarting ICE on the old ones.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
    },
    /// Therapist: let a waiting client in.
    Admit { participant_id: ParticipantId },
    /// Therapist: turn a waiting client away.
    Deny { participant_id: ParticipantId },
    /// Therapist: a short text for a waiting client (or every waiting client); relayed,
    /// never stored or logged.
    Notice {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        participant_id: Option<ParticipantId>,
        text: String,
    },
    /// An SDP description or an ICE candidate for one admitted peer.
    Signal {
        to: ParticipantId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<Candidate>,
    },
    /// Quality figures for the session record.
    Stats(Stats),
    /// Leave the room for good.
    Leave,
    /// Therapist: end the session for everyone.
    End,
}

/// Messages the server sends. `Debug` hides resume tokens, TURN credentials, SDP,
/// candidates and notice text.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerMessage {
    Welcome {
        participant_id: ParticipantId,
        role: PeerRole,
        ice_servers: Vec<IceServer>,
        ice_transport_policy: IceTransportPolicy,
        /// Keep it; send it in the next `hello` after a dropped connection.
        resume_token: String,
        /// True when this continues a participant (resume or takeover).
        resumed: bool,
        /// Admitted participants already in the room (empty while waiting).
        peers: Vec<PeerInfo>,
    },
    /// A client is in the waiting room, at this place in the queue (1 = next).
    Waiting {
        position: usize,
    },
    /// To the therapist: who is waiting.
    Lobby {
        waiting: Vec<WaitingInfo>,
    },
    /// To a client: the therapist let you in.
    Admitted {
        peers: Vec<PeerInfo>,
    },
    /// To a client: the therapist turned you away.
    Denied,
    /// A short text from the therapist to the waiting room.
    Notice {
        text: String,
    },
    PeerJoined {
        participant_id: ParticipantId,
        role: PeerRole,
        display_name: String,
        polite: bool,
    },
    /// `reason`: `left`, `timeout`, `denied`, `removed`.
    PeerLeft {
        participant_id: ParticipantId,
        reason: String,
    },
    PeerReconnecting {
        participant_id: ParticipantId,
    },
    /// The peer is back. With `reset: false` restart ICE on the existing connection; with
    /// `reset: true` (it reloaded, or took over from another tab) close it and set up a new one.
    PeerResumed {
        participant_id: ParticipantId,
        reset: bool,
    },
    Signal {
        from: ParticipantId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        candidate: Option<Candidate>,
    },
    /// Fresh ICE servers (TURN credentials) before the old ones expire.
    IceServers {
        ice_servers: Vec<IceServer>,
        ice_transport_policy: IceTransportPolicy,
    },
    /// `reason`: `ended_by_therapist`, `window_closed`, `appointment_cancelled`,
    /// `appointment_changed`, `server_shutdown`.
    Ended {
        reason: String,
    },
    /// This server is restarting or being taken out of service (a deploy): the session goes
    /// on. The connection is closed next with 1012; open a new one (through the same
    /// address: the load balancer picks a server that is up) and send `hello` with a new
    /// join token and your resume token, keeping the peer connection, within the grace
    /// period. `reason`: `server_restart`.
    Reconnect {
        reason: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

// Debug output that never shows what must stay out of logs: tokens, credentials, SDP,
// candidates (addresses) and what people wrote. A `?message` in a log line is then safe.

impl ClientMessage {
    /// The message's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientMessage::Hello { .. } => "hello",
            ClientMessage::Admit { .. } => "admit",
            ClientMessage::Deny { .. } => "deny",
            ClientMessage::Notice { .. } => "notice",
            ClientMessage::Signal { .. } => "signal",
            ClientMessage::Stats(_) => "stats",
            ClientMessage::Leave => "leave",
            ClientMessage::End => "end",
        }
    }
}

/// Stands for a hidden value in `Debug` output.
struct Hidden(&'static str);

impl std::fmt::Debug for Hidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

const REDACTED: Hidden = Hidden("[redacted]");

impl std::fmt::Debug for IceServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceServer")
            .field("urls", &self.urls)
            .field("username", &self.username.as_ref().map(|_| REDACTED))
            .field("credential", &self.credential.as_ref().map(|_| REDACTED))
            .finish()
    }
}

impl std::fmt::Debug for Description {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Description")
            .field("kind", &self.kind)
            .field("sdp_bytes", &self.sdp.len())
            .finish()
    }
}

impl std::fmt::Debug for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Candidate")
            .field("candidate", &REDACTED)
            .field("sdp_mid", &self.sdp_mid)
            .field("sdp_m_line_index", &self.sdp_m_line_index)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientMessage::Hello {
                resume_token,
                reset,
                ..
            } => f
                .debug_struct("Hello")
                .field("token", &REDACTED)
                .field("resume_token", &resume_token.as_ref().map(|_| REDACTED))
                .field("reset", reset)
                .finish(),
            ClientMessage::Admit { participant_id } => f
                .debug_struct("Admit")
                .field("participant_id", participant_id)
                .finish(),
            ClientMessage::Deny { participant_id } => f
                .debug_struct("Deny")
                .field("participant_id", participant_id)
                .finish(),
            ClientMessage::Notice { participant_id, .. } => f
                .debug_struct("Notice")
                .field("participant_id", participant_id)
                .field("text", &REDACTED)
                .finish(),
            ClientMessage::Signal {
                to,
                description,
                candidate,
            } => f
                .debug_struct("Signal")
                .field("to", to)
                .field("description", description)
                .field("candidate", candidate)
                .finish(),
            ClientMessage::Stats(s) => f.debug_tuple("Stats").field(s).finish(),
            ClientMessage::Leave => f.write_str("Leave"),
            ClientMessage::End => f.write_str("End"),
        }
    }
}

impl std::fmt::Debug for ServerMessage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerMessage::Welcome {
                participant_id,
                role,
                ice_servers,
                ice_transport_policy,
                resumed,
                peers,
                ..
            } => f
                .debug_struct("Welcome")
                .field("participant_id", participant_id)
                .field("role", role)
                .field("ice_servers", ice_servers)
                .field("ice_transport_policy", ice_transport_policy)
                .field("resume_token", &REDACTED)
                .field("resumed", resumed)
                .field("peers", peers)
                .finish(),
            ServerMessage::Notice { .. } => {
                f.debug_struct("Notice").field("text", &REDACTED).finish()
            }
            ServerMessage::Signal {
                from,
                description,
                candidate,
            } => f
                .debug_struct("Signal")
                .field("from", from)
                .field("description", description)
                .field("candidate", candidate)
                .finish(),
            ServerMessage::IceServers {
                ice_servers,
                ice_transport_policy,
            } => f
                .debug_struct("IceServers")
                .field("ice_servers", ice_servers)
                .field("ice_transport_policy", ice_transport_policy)
                .finish(),
            // The rest carry ids, names, positions, reasons and codes only.
            other => {
                let v = serde_json::to_value(other).map_err(|_| std::fmt::Error)?;
                write!(f, "{v}")
            }
        }
    }
}

/// Codes of `error` messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Not JSON, or not an object with a known shape. The connection stays up.
    MalformedMessage,
    /// A `type` this server does not know. The connection stays up.
    UnknownType,
    /// A message other than `hello` before `hello`, or a second `hello`.
    HelloRequired,
    /// The join token is missing, malformed, forged, expired, for another audience, or
    /// already used. Closes with 4001.
    InvalidToken,
    /// The appointment is not open for joining now (outside its join window, cancelled,
    /// moved, or you no longer take part). Closes with 4003.
    NotJoinable,
    /// The therapist turned you away from this session; you cannot knock again until they
    /// let you. Closes with 4011.
    Denied,
    /// Only the therapist may do this (admit, deny, notice, end).
    Forbidden,
    /// You are in the waiting room: signals pass only between admitted participants.
    NotAdmitted,
    /// No admitted participant with that id in this room.
    UnknownPeer,
    /// The recipient's outbox is half full with what peers sent it: this signal was not
    /// delivered. Slow down. The connection stays up.
    PeerBusy,
    /// No waiting client with that id.
    UnknownParticipant,
    /// A description whose type is not offer/answer/pranswer/rollback, or whose SDP does
    /// not parse, or that is too large.
    InvalidSdp,
    /// A candidate that is too large or not a candidate line.
    InvalidCandidate,
    /// A `signal` with neither or both of `description` and `candidate`.
    InvalidSignal,
    /// Figures out of range in `stats`.
    InvalidStats,
    /// A notice that is empty or too long.
    InvalidNotice,
    /// Too many messages: the connection is closed with 4008.
    RateLimited,
    /// The same account joined from elsewhere; this connection closes with 4009.
    Replaced,
    /// The account's sign-in ended while connected (signed out, signed out everywhere, a
    /// new password, the account disabled): the connection closes with 4014; sign in again.
    SignedOut,
    /// The server holding the session cannot be reached right now (several servers, and
    /// the link between them is down): a join is closed with 1013 (try again later); a
    /// message in a session was not delivered, and the connection stays up.
    Unavailable,
    /// Something failed on the server.
    Internal,
}

impl ErrorCode {
    pub const ALL: &'static [ErrorCode] = &[
        ErrorCode::MalformedMessage,
        ErrorCode::UnknownType,
        ErrorCode::HelloRequired,
        ErrorCode::InvalidToken,
        ErrorCode::NotJoinable,
        ErrorCode::Denied,
        ErrorCode::Forbidden,
        ErrorCode::NotAdmitted,
        ErrorCode::UnknownPeer,
        ErrorCode::PeerBusy,
        ErrorCode::UnknownParticipant,
        ErrorCode::InvalidSdp,
        ErrorCode::InvalidCandidate,
        ErrorCode::InvalidSignal,
        ErrorCode::InvalidStats,
        ErrorCode::InvalidNotice,
        ErrorCode::RateLimited,
        ErrorCode::Replaced,
        ErrorCode::SignedOut,
        ErrorCode::Unavailable,
        ErrorCode::Internal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::HelloRequired => "hello_required",
            ErrorCode::InvalidToken => "invalid_token",
            ErrorCode::NotJoinable => "not_joinable",
            ErrorCode::Denied => "denied",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotAdmitted => "not_admitted",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::PeerBusy => "peer_busy",
            ErrorCode::UnknownParticipant => "unknown_participant",
            ErrorCode::InvalidSdp => "invalid_sdp",
            ErrorCode::InvalidCandidate => "invalid_candidate",
            ErrorCode::InvalidSignal => "invalid_signal",
            ErrorCode::InvalidStats => "invalid_stats",
            ErrorCode::InvalidNotice => "invalid_notice",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Replaced => "replaced",
            ErrorCode::SignedOut => "signed_out",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Internal => "internal",
        }
    }
}

/// WebSocket close codes the server uses.
pub mod close {
    /// After `leave`, or `ended`.
    pub const NORMAL: u16 = 1000;
    /// A frame over the size limit.
    pub const TOO_BIG: u16 = 1009;
    /// An unexpected failure on the server.
    pub const INTERNAL: u16 = 1011;
    /// The server is restarting or draining (`reconnect` first): the session goes on;
    /// reconnect and resume.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The session cannot be reached right now; try again shortly (`error unavailable`
    /// first).
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// No `hello` within the hello timeout.
    pub const HELLO_TIMEOUT: u16 = 4000;
    /// The join token was refused (`error invalid_token` first).
    pub const INVALID_TOKEN: u16 = 4001;
    /// The appointment is not joinable now (`error not_joinable` first).
    pub const NOT_JOINABLE: u16 = 4003;
    /// The connection sent too many messages (`error rate_limited` first).
    pub const RATE_LIMITED: u16 = 4008;
    /// The same account joined from elsewhere (`error replaced` first).
    pub const REPLACED: u16 = 4009;
    /// The session ended (`ended` first).
    pub const ENDED: u16 = 4010;
    /// The therapist turned the client away (`denied` first), now or earlier in the
    /// session (`error denied` first).
    pub const DENIED: u16 = 4011;
    /// The connection did not read its messages fast enough.
    pub const SLOW_CONSUMER: u16 = 4012;
    /// No message or pong for too long.
    pub const DEAD: u16 = 4013;
    /// The account's sign-in ended (`error signed_out` first): sign in again.
    pub const SIGNED_OUT: u16 = 4014;

    /// Every code, with its name, for the documentation test.
    pub const ALL: &[(u16, &str)] = &[
        (NORMAL, "NORMAL"),
        (TOO_BIG, "TOO_BIG"),
        (INTERNAL, "INTERNAL"),
        (SERVICE_RESTART, "SERVICE_RESTART"),
        (TRY_AGAIN_LATER, "TRY_AGAIN_LATER"),
        (HELLO_TIMEOUT, "HELLO_TIMEOUT"),
        (INVALID_TOKEN, "INVALID_TOKEN"),
        (NOT_JOINABLE, "NOT_JOINABLE"),
        (RATE_LIMITED, "RATE_LIMITED"),
        (REPLACED, "REPLACED"),
        (ENDED, "ENDED"),
        (DENIED, "DENIED"),
        (SLOW_CONSUMER, "SLOW_CONSUMER"),
        (DEAD, "DEAD"),
        (SIGNED_OUT, "SIGNED_OUT"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_documented_shape() {
        let m: ClientMessage = serde_json::from_str(
            r#"{"type":"signal","to":"6f1c3c0e-8f7e-4a55-9c3e-5a4b8f0c2d11","candidate":{"candidate":"candidate:1 1 udp 1 127.0.0.1 9 typ host","sdpMid":"0","sdpMLineIndex":0}}"#,
        )
        .unwrap();
        assert!(matches!(
            m,
            ClientMessage::Signal {
                candidate: Some(_),
                description: None,
                ..
            }
        ));
        let m: ClientMessage = serde_json::from_str(r#"{"type":"leave"}"#).unwrap();
        assert_eq!(m, ClientMessage::Leave);
        let m: ClientMessage =
            serde_json::from_str(r#"{"type":"stats","rtt_ms":12.5,"path":"relay"}"#).unwrap();
        assert!(matches!(
            m,
            ClientMessage::Stats(Stats {
                rtt_ms: Some(_),
                ..
            })
        ));
        let s = serde_json::to_value(ServerMessage::Waiting { position: 1 }).unwrap();
        assert_eq!(s, serde_json::json!({"type": "waiting", "position": 1}));
        let s = serde_json::to_value(ServerMessage::Error {
            code: ErrorCode::NotAdmitted,
            message: "x".into(),
        })
        .unwrap();
        assert_eq!(s["code"], "not_admitted");
    }

    #[test]
    fn debug_output_hides_tokens_credentials_sdp_candidates_and_notices() {
        let sdp =
            "v=0\r\no=- 1 2 IN IP4 192.0.2.77\r\ns=-\r\nt=0 0\r\na=fingerprint:sha-256 AB:CD\r\n";
        let candidate = Candidate {
            candidate: "candidate:1 1 udp 1 192.0.2.77 9 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("ufragsecret".into()),
        };
        let ice = IceServer {
            urls: vec!["turn:turn.example.org:3478".into()],
            username: Some("1700000000:secretuser".into()),
            credential: Some("secretcredential".into()),
        };
        let to = Uuid::new_v4();
        let messages: Vec<Box<dyn std::fmt::Debug>> = vec![
            Box::new(ClientMessage::Hello {
                token: "eyJsecretjointoken".into(),
                resume_token: Some("secretresume".into()),
                reset: false,
            }),
            Box::new(ClientMessage::Notice {
                participant_id: None,
                text: "secret words for the waiting room".into(),
            }),
            Box::new(ClientMessage::Signal {
                to,
                description: Some(Description {
                    kind: "offer".into(),
                    sdp: sdp.into(),
                }),
                candidate: None,
            }),
            Box::new(ClientMessage::Signal {
                to,
                description: None,
                candidate: Some(candidate.clone()),
            }),
            Box::new(ServerMessage::Welcome {
                participant_id: to,
                role: PeerRole::Client,
                ice_servers: vec![ice.clone()],
                ice_transport_policy: IceTransportPolicy::Relay,
                resume_token: "secretresume".into(),
                resumed: false,
                peers: vec![],
            }),
            Box::new(ServerMessage::IceServers {
                ice_servers: vec![ice],
                ice_transport_policy: IceTransportPolicy::All,
            }),
            Box::new(ServerMessage::Signal {
                from: to,
                description: None,
                candidate: Some(candidate),
            }),
            Box::new(ServerMessage::Notice {
                text: "secret words for the waiting room".into(),
            }),
        ];
        for m in messages {
            let shown = format!("{m:?} {m:#?}");
            for leak in ["secret", "192.0.2.77", "AB:CD", "eyJ"] {
                assert!(!shown.contains(leak), "{leak} in {shown}");
            }
        }
        let shown = format!("{:?}", ServerMessage::Waiting { position: 2 });
        assert!(shown.contains("waiting") && shown.contains('2'), "{shown}");
    }

    #[test]
    fn error_code_names_match_serde() {
        for c in ErrorCode::ALL {
            assert_eq!(serde_json::to_value(c).unwrap(), c.as_str());
        }
    }
}

//! One room: the appointment's participants, who is waiting, who is admitted, who is
//! reconnecting, and what to tell whom.
//!
//! [`Room`] is a plain struct changed only through its methods, one command at a time, by
//! the room's task ([`crate::hub`]). Methods never await: they record what to send
//! ([`Effect`]) and what happened ([`EventKind`]); the task records the events first, then
//! performs the sends. `check_invariants` is run after every step in tests.

use crate::{
    EventKind, JoinGrant, ParticipantRef, SignalingConfig,
    protocol::{
        Candidate, Description, ErrorCode, NetworkCheck, ParticipantId, PeerInfo, PeerRole,
        ServerMessage, Stats, WaitingInfo, close,
    },
    random_token,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::{
    collections::VecDeque,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::Notify;
use uuid::Uuid;

/// What the room sends a connection.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A serialised [`ServerMessage`].
    Text(Arc<str>),
    /// Close the socket (with the code and reason of this [`Closing`]), then stop.
    Close(Closing),
}

/// Why the room closes a connection. Small on purpose: every connection's outbox keeps the
/// [`Outbound`] slots it grew to for the connection's whole life (see the footprint
/// benchmark).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Closing {
    /// The same account joined from another connection.
    Replaced,
    /// The therapist turned the client away.
    Denied,
    /// The account was taken off the appointment.
    Removed,
    /// The participant left.
    Left,
    /// The session ended.
    Ended,
    /// This connection is no longer the member's (its node was taken for lost): reconnect
    /// and resume.
    Rejoin,
    /// The account's sign-in ended (live revocation): sign in again.
    SignedOut,
}

impl Closing {
    /// The WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Closing::Replaced => close::REPLACED,
            Closing::Denied => close::DENIED,
            Closing::Removed | Closing::Ended => close::ENDED,
            Closing::Left => close::NORMAL,
            Closing::Rejoin => close::SERVICE_RESTART,
            Closing::SignedOut => close::SIGNED_OUT,
        }
    }

    /// The close frame's reason text.
    pub fn reason(self) -> &'static str {
        match self {
            Closing::Replaced => "replaced",
            Closing::Denied => "denied",
            Closing::Removed => "removed",
            Closing::Left => "left",
            Closing::Ended => "ended",
            Closing::Rejoin => "reconnect",
            Closing::SignedOut => "signed_out",
        }
    }
}

/// The room's handle on one connection.
#[derive(Debug, Clone)]
pub struct Conn {
    /// Distinguishes a participant's successive connections (unique across nodes).
    pub id: u64,
    /// Where what the room sends it goes.
    pub sink: ConnSink,
}

/// Where a connection is.
#[derive(Debug, Clone)]
pub enum ConnSink {
    /// On this node: its bounded outbox, and the switch that stops it at once (its outbox
    /// is full).
    Local {
        tx: flume::Sender<Outbound>,
        kill: Arc<Notify>,
    },
    /// On another node of the cluster, named here: what the room sends it goes there.
    Remote { node: Arc<str> },
}

impl Conn {
    pub fn local(id: u64, tx: flume::Sender<Outbound>, kill: Arc<Notify>) -> Self {
        Self {
            id,
            sink: ConnSink::Local { tx, kill },
        }
    }

    pub fn remote(id: u64, node: Arc<str>) -> Self {
        Self {
            id,
            sink: ConnSink::Remote { node },
        }
    }

    /// Messages waiting in its outbox (a remote one's node keeps its own count: 0 here).
    pub fn queued(&self) -> usize {
        match &self.sink {
            ConnSink::Local { tx, .. } => tx.len(),
            ConnSink::Remote { .. } => 0,
        }
    }

    /// Where it is, for a snapshot of the room (`me`: this node's name).
    pub fn reference(&self, me: &str) -> ConnRef {
        ConnRef {
            node: match &self.sink {
                ConnSink::Local { .. } => me.to_owned(),
                ConnSink::Remote { node } => node.to_string(),
            },
            id: self.id,
        }
    }
}

/// A connection as a snapshot names it: its node and id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnRef {
    pub node: String,
    pub id: u64,
}

/// SHA-256 of a resume token: what a room keeps, and what a join carries (so that resume
/// tokens never travel between nodes or sit in a snapshot).
pub fn resume_hash(token: &str) -> [u8; 32] {
    hash(token)
}

/// A send the room decided on.
#[derive(Debug)]
pub enum Effect {
    Send(Conn, Outbound),
}

#[derive(Debug)]
enum Place {
    /// In the waiting room since (unix ms), in knock order.
    Waiting {
        since_ms: i64,
        seq: u64,
    },
    Admitted,
}

#[derive(Debug)]
struct Member {
    pid: ParticipantId,
    user_id: Uuid,
    role: PeerRole,
    display_name: String,
    place: Place,
    /// `None` while reconnecting.
    conn: Option<Conn>,
    /// While reconnecting: when the place is given up.
    away_until: Option<Instant>,
    resume_hash: [u8; 32],
    /// Signals for this member while it reconnects (bounded).
    held: VecDeque<Arc<str>>,
    /// Their latest network test (clients), for the lobby.
    network: Option<NetworkCheck>,
}

impl Member {
    fn admitted(&self) -> bool {
        matches!(self.place, Place::Admitted)
    }

    fn reference(&self) -> ParticipantRef {
        ParticipantRef {
            participant_id: self.pid,
            user_id: self.user_id,
            role: self.role,
        }
    }
}

/// Whether `me` plays the polite side with `peer`: clients are polite to the therapist,
/// and between clients the larger id is polite. Always the opposite for the other side.
fn polite(me: &Member, peer: &Member) -> bool {
    match (me.role, peer.role) {
        (PeerRole::Client, PeerRole::Therapist) => true,
        (PeerRole::Therapist, PeerRole::Client) => false,
        _ => me.pid > peer.pid,
    }
}

fn hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn text(msg: &ServerMessage) -> Arc<str> {
    serde_json::to_string(msg)
        .expect("server messages serialise")
        .into()
}

/// A room as a node hands it to another (JSON in Redis): its members with their places,
/// resume token hashes, held signals and where their connections are; times are unix
/// milliseconds, since instants mean nothing on another machine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RoomSnapshot {
    pub appointment_id: Uuid,
    pub session_id: Uuid,
    pub closes_at_ms: i64,
    pub auto_admit: bool,
    pub knock_seq: u64,
    pub empty_since_ms: Option<i64>,
    pub members: Vec<MemberSnapshot>,
}

/// One member in a [`RoomSnapshot`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberSnapshot {
    pub participant_id: ParticipantId,
    pub user_id: Uuid,
    pub role: PeerRole,
    pub display_name: String,
    /// In the waiting room: since when (unix ms) and the knock's place in the queue.
    pub waiting: Option<(i64, u64)>,
    pub conn: Option<ConnRef>,
    pub away_until_ms: Option<i64>,
    /// Base64 SHA-256 of the resume token.
    pub resume_hash: String,
    pub held: Vec<String>,
    #[serde(default)]
    pub network: Option<NetworkCheck>,
}

fn to_wall(t: Instant, now: Instant, now_ms: i64) -> i64 {
    if t >= now {
        now_ms.saturating_add((t - now).as_millis() as i64)
    } else {
        now_ms.saturating_sub((now - t).as_millis() as i64)
    }
}

fn from_wall(ms: i64, now: Instant, now_ms: i64) -> Instant {
    if ms >= now_ms {
        now + Duration::from_millis((ms - now_ms) as u64)
    } else {
        now.checked_sub(Duration::from_millis((now_ms - ms) as u64))
            .unwrap_or(now)
    }
}

/// Why a room finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finish {
    Ended(String),
}

/// The outcome of a join.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Joined {
    pub participant_id: ParticipantId,
    /// The account (the connection keeps it, for TURN refreshes).
    pub user_id: Uuid,
    /// When the member's TURN credentials expire (unix seconds).
    pub ice_expires: Option<i64>,
}

/// One room's state.
#[derive(Debug)]
pub struct Room {
    pub appointment_id: Uuid,
    pub session_id: Uuid,
    closes_at: Instant,
    auto_admit: bool,
    grace: Duration,
    held_max: usize,
    /// Queued messages in a recipient's outbox past which signals from peers are refused:
    /// half of it, so that a peer flooding another fills at most that half, and the room's
    /// own messages still fit. The flooder is told (`peer_busy`); the recipient is never
    /// closed for it.
    relay_max_queued: usize,
    members: Vec<Member>,
    knock_seq: u64,
    /// Since when nobody has been in the room.
    empty_since: Option<Instant>,
    finished: Option<Finish>,
    effects: Vec<Effect>,
    events: Vec<EventKind>,
    /// Something a snapshot holds has changed since the last [`Room::take_dirty`] (a relayed
    /// signal or a stats report changes nothing).
    dirty: bool,
}

impl Room {
    pub fn new(grant: &JoinGrant, cfg: &SignalingConfig, now: Instant) -> Self {
        let left = grant
            .closes_at
            .duration_since(jiff::Timestamp::now())
            .try_into()
            .unwrap_or(Duration::ZERO);
        Self {
            appointment_id: grant.appointment_id,
            session_id: Uuid::now_v7(),
            closes_at: now + left,
            auto_admit: grant.auto_admit,
            grace: cfg.grace,
            // Held signals and the welcome must fit the outbox on resume (a flood of signals
            // aimed at a reconnecting member must not get it closed as a slow consumer).
            held_max: cfg.held_signals.min((cfg.outbox / 2).max(1)),
            relay_max_queued: (cfg.outbox / 2).max(1),
            // A room holds a therapist and a client: room for both, no more, up front.
            members: Vec::with_capacity(2),
            knock_seq: 0,
            empty_since: Some(now),
            finished: None,
            effects: Vec::new(),
            events: vec![EventKind::Started],
            dirty: true,
        }
    }

    pub fn finished(&self) -> Option<&Finish> {
        self.finished.as_ref()
    }

    /// Queued messages in a recipient's outbox past which signals to it are refused.
    pub(crate) fn relay_max_queued(&self) -> usize {
        self.relay_max_queued
    }

    /// The admitted members connected to this process, when two or more are: those between
    /// whom signals can be relayed without the room's task (see [`crate::router::Relay`]).
    pub(crate) fn relay_peers(&self) -> Vec<crate::router::RelayPeer> {
        if self.finished.is_some() {
            return Vec::new();
        }
        let peers: Vec<_> = self
            .members
            .iter()
            .filter(|m| m.admitted())
            .filter_map(|m| match &m.conn {
                Some(Conn {
                    id,
                    sink: ConnSink::Local { tx, kill },
                }) => Some(crate::router::RelayPeer {
                    pid: m.pid,
                    conn_id: *id,
                    tx: tx.clone(),
                    kill: kill.clone(),
                }),
                _ => None,
            })
            .collect();
        if peers.len() < 2 { Vec::new() } else { peers }
    }

    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    pub fn take_events(&mut self) -> Vec<EventKind> {
        std::mem::take(&mut self.events)
    }

    /// Whether the room changed in a way a snapshot keeps since the last call.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Every member connected through `node` lost its connection (that node is gone):
    /// they are reconnecting from `now`, and the others are told. Should the node only have
    /// lost touch with Redis, its connections are told to reconnect when it reads again.
    pub fn node_lost(&mut self, node: &str, now: Instant) {
        let lost: Vec<(ParticipantId, Conn)> = self
            .members
            .iter()
            .filter_map(|m| match &m.conn {
                Some(
                    c @ Conn {
                        sink: ConnSink::Remote { node: n },
                        ..
                    },
                ) if &**n == node => Some((m.pid, c.clone())),
                _ => None,
            })
            .collect();
        for (pid, conn) in lost {
            self.tell_to_rejoin(&conn);
            self.disconnected(pid, conn.id, now);
        }
    }

    /// A connection the room sends to is gone from its node: its member is reconnecting.
    pub fn conn_gone(&mut self, conn_id: u64, now: Instant) {
        let pid = self
            .members
            .iter()
            .find(|m| m.conn.as_ref().is_some_and(|c| c.id == conn_id))
            .map(|m| m.pid);
        if let Some(pid) = pid {
            self.disconnected(pid, conn_id, now);
        }
    }

    /// The members' current connections.
    pub fn member_conns(&self) -> Vec<Conn> {
        self.members.iter().filter_map(|m| m.conn.clone()).collect()
    }

    /// Whether `conn_id` is `pid`'s current connection.
    pub fn is_current(&self, pid: ParticipantId, conn_id: u64) -> bool {
        self.caller(pid, conn_id).is_some()
    }

    /// Close a connection the room no longer counts as its member's, asking it to
    /// reconnect (and resume).
    pub fn tell_to_rejoin(&mut self, conn: &Conn) {
        self.effects
            .push(Effect::Send(conn.clone(), Outbound::Close(Closing::Rejoin)));
    }

    /// The nodes other than this one that members are connected through.
    pub fn remote_nodes(&self) -> Vec<Arc<str>> {
        let mut nodes: Vec<Arc<str>> = self
            .members
            .iter()
            .filter_map(|m| match &m.conn {
                Some(Conn {
                    sink: ConnSink::Remote { node },
                    ..
                }) => Some(node.clone()),
                _ => None,
            })
            .collect();
        nodes.sort();
        nodes.dedup();
        nodes
    }

    /// How many people are in the room (waiting, admitted or reconnecting).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The next moment something happens on its own: a held place expires, the window
    /// closes, or an empty room gives up.
    pub fn next_deadline(&self) -> Instant {
        let mut next = self.closes_at;
        for m in &self.members {
            if let Some(t) = m.away_until {
                next = next.min(t);
            }
        }
        if let Some(t) = self.empty_since {
            next = next.min(t + self.grace);
        }
        next
    }

    fn send(&mut self, conn: &Conn, msg: &ServerMessage) {
        self.effects
            .push(Effect::Send(conn.clone(), Outbound::Text(text(msg))));
    }

    fn send_to(&mut self, idx: usize, msg: &ServerMessage) {
        if let Some(c) = self.members[idx].conn.clone() {
            self.send(&c, msg);
        }
    }

    fn close(&mut self, conn: &Conn, why: Closing) {
        self.effects
            .push(Effect::Send(conn.clone(), Outbound::Close(why)));
    }

    fn error(&mut self, conn: &Conn, code: ErrorCode, message: impl Into<String>) {
        crate::stats::error(code);
        self.send(
            conn,
            &ServerMessage::Error {
                code,
                message: message.into(),
            },
        );
    }

    fn idx(&self, pid: ParticipantId) -> Option<usize> {
        self.members.iter().position(|m| m.pid == pid)
    }

    /// The member behind a connection, if that connection is still its current one.
    fn caller(&self, pid: ParticipantId, conn_id: u64) -> Option<usize> {
        self.idx(pid).filter(|&i| {
            self.members[i]
                .conn
                .as_ref()
                .is_some_and(|c| c.id == conn_id)
        })
    }

    fn peers_of(&self, idx: usize) -> Vec<PeerInfo> {
        let me = &self.members[idx];
        self.members
            .iter()
            .enumerate()
            .filter(|(i, m)| *i != idx && m.admitted())
            .map(|(_, m)| PeerInfo {
                participant_id: m.pid,
                role: m.role,
                display_name: m.display_name.clone(),
                polite: polite(me, m),
            })
            .collect()
    }

    fn waiting_order(&self) -> Vec<usize> {
        let mut w: Vec<(u64, usize)> = self
            .members
            .iter()
            .enumerate()
            .filter_map(|(i, m)| match m.place {
                Place::Waiting { seq, .. } => Some((seq, i)),
                Place::Admitted => None,
            })
            .collect();
        w.sort_unstable();
        w.into_iter().map(|(_, i)| i).collect()
    }

    /// Tell the therapist who is waiting, and each waiting client its place.
    fn announce_queue(&mut self) {
        let order = self.waiting_order();
        let lobby = ServerMessage::Lobby {
            waiting: order
                .iter()
                .map(|&i| {
                    let m = &self.members[i];
                    WaitingInfo {
                        participant_id: m.pid,
                        display_name: m.display_name.clone(),
                        since: match m.place {
                            Place::Waiting { since_ms, .. } => since_ms,
                            Place::Admitted => 0,
                        },
                        network: m.network.clone(),
                    }
                })
                .collect(),
        };
        for i in 0..self.members.len() {
            if self.members[i].role == PeerRole::Therapist {
                self.send_to(i, &lobby);
            }
        }
        for (pos, &i) in order.iter().enumerate() {
            self.send_to(i, &ServerMessage::Waiting { position: pos + 1 });
        }
    }

    /// Tell every other admitted member that `idx` is in.
    fn announce_joined(&mut self, idx: usize) {
        for i in 0..self.members.len() {
            if i == idx || !self.members[i].admitted() {
                continue;
            }
            let (me, peer) = (&self.members[i], &self.members[idx]);
            let msg = ServerMessage::PeerJoined {
                participant_id: peer.pid,
                role: peer.role,
                display_name: peer.display_name.clone(),
                polite: polite(me, peer),
            };
            self.send_to(i, &msg);
        }
    }

    fn announce_admitted_others(&mut self, idx: usize, msg: &ServerMessage) {
        for i in 0..self.members.len() {
            if i != idx && self.members[i].admitted() {
                self.send_to(i, msg);
            }
        }
    }

    /// A verified participant arrives: new, resuming, or taking over from another
    /// connection of the same account.
    pub fn join(
        &mut self,
        grant: &JoinGrant,
        conn: Conn,
        resume: Option<[u8; 32]>,
        reset: bool,
    ) -> Joined {
        self.dirty = true;
        self.empty_since = None;
        let token = random_token();
        let idx = match self.members.iter().position(|m| m.user_id == grant.user_id) {
            Some(i) => {
                // The same account again: it keeps its id and its place.
                let m = &mut self.members[i];
                let token_ok = resume.is_some_and(|h| h == m.resume_hash);
                let old = m.conn.take();
                let takeover = old.is_some();
                let reset = reset || takeover || !token_ok;
                m.away_until = None;
                m.conn = Some(conn.clone());
                m.resume_hash = hash(&token);
                m.display_name = grant.display_name.clone();
                m.network = grant.network.clone();
                let held: Vec<Arc<str>> = m.held.drain(..).collect();
                if let Some(old) = old {
                    self.error(
                        &old,
                        ErrorCode::Replaced,
                        "you joined from another connection",
                    );
                    self.close(&old, Closing::Replaced);
                }
                self.welcome(i, &grant.ice, &token, true);
                if self.members[i].admitted() {
                    if !reset {
                        for h in held {
                            self.effects
                                .push(Effect::Send(conn.clone(), Outbound::Text(h)));
                        }
                    }
                    let pid = self.members[i].pid;
                    self.announce_admitted_others(
                        i,
                        &ServerMessage::PeerResumed {
                            participant_id: pid,
                            reset,
                        },
                    );
                }
                let participant = self.members[i].reference();
                self.events.push(EventKind::Connected {
                    participant,
                    resumed: true,
                });
                i
            }
            None => {
                let place = if grant.role == PeerRole::Therapist || self.auto_admit {
                    Place::Admitted
                } else {
                    self.knock_seq += 1;
                    Place::Waiting {
                        since_ms: jiff::Timestamp::now().as_millisecond(),
                        seq: self.knock_seq,
                    }
                };
                let waiting = matches!(place, Place::Waiting { .. });
                self.members.push(Member {
                    pid: Uuid::new_v4(),
                    user_id: grant.user_id,
                    role: grant.role,
                    display_name: grant.display_name.clone(),
                    place,
                    conn: Some(conn.clone()),
                    away_until: None,
                    resume_hash: hash(&token),
                    held: VecDeque::new(),
                    network: grant.network.clone(),
                });
                let i = self.members.len() - 1;
                let reference = self.members[i].reference();
                // Connected first: the record creates the participant from it, and then
                // notes the knock or the automatic admission.
                self.events.push(EventKind::Connected {
                    participant: reference.clone(),
                    resumed: false,
                });
                if waiting {
                    self.events.push(EventKind::Knocked {
                        participant: reference.clone(),
                    });
                } else if grant.role == PeerRole::Client {
                    self.events.push(EventKind::Admitted {
                        participant_id: reference.participant_id,
                        by: None,
                    });
                }
                self.welcome(i, &grant.ice, &token, false);
                if !waiting {
                    self.announce_joined(i);
                }
                i
            }
        };
        self.announce_queue_if_relevant(idx);
        Joined {
            participant_id: self.members[idx].pid,
            user_id: grant.user_id,
            ice_expires: grant.ice.expires_at,
        }
    }

    fn announce_queue_if_relevant(&mut self, idx: usize) {
        let waiting_exists = !self.waiting_order().is_empty();
        let is_therapist = self.members[idx].role == PeerRole::Therapist;
        if waiting_exists || is_therapist {
            self.announce_queue();
        }
    }

    fn welcome(&mut self, idx: usize, ice: &crate::IceConfig, resume_token: &str, resumed: bool) {
        let m = &self.members[idx];
        let peers = if m.admitted() {
            self.peers_of(idx)
        } else {
            Vec::new()
        };
        let msg = ServerMessage::Welcome {
            participant_id: m.pid,
            role: m.role,
            ice_servers: ice.ice_servers.clone(),
            ice_transport_policy: ice.ice_transport_policy,
            resume_token: resume_token.to_owned(),
            resumed,
            peers,
        };
        self.send_to(idx, &msg);
    }

    fn therapist_caller(&mut self, pid: ParticipantId, conn: &Conn) -> Option<usize> {
        let i = self.caller(pid, conn.id)?;
        if self.members[i].role != PeerRole::Therapist {
            self.error(conn, ErrorCode::Forbidden, "only the therapist can do this");
            return None;
        }
        Some(i)
    }

    fn waiting_target(&mut self, conn: &Conn, target: ParticipantId) -> Option<usize> {
        match self.idx(target) {
            Some(t) if !self.members[t].admitted() => Some(t),
            _ => {
                self.error(
                    conn,
                    ErrorCode::UnknownParticipant,
                    "no waiting client with that id",
                );
                None
            }
        }
    }

    /// Let everyone in the waiting room in (auto-admit switched on).
    pub fn set_auto_admit(&mut self, on: bool) {
        self.dirty = true;
        self.auto_admit = on;
        if on {
            for t in self.waiting_order() {
                self.admit_idx(t, None);
            }
            self.announce_queue();
        }
    }

    fn admit_idx(&mut self, t: usize, by: Option<Uuid>) {
        self.dirty = true;
        self.members[t].place = Place::Admitted;
        let pid = self.members[t].pid;
        self.events.push(EventKind::Admitted {
            participant_id: pid,
            by,
        });
        let peers = self.peers_of(t);
        self.send_to(t, &ServerMessage::Admitted { peers });
        self.announce_joined(t);
        if self.members[t].conn.is_none() {
            self.announce_admitted_others(
                t,
                &ServerMessage::PeerReconnecting {
                    participant_id: pid,
                },
            );
        }
    }

    /// The therapist lets a waiting client in.
    pub fn admit(&mut self, pid: ParticipantId, conn: &Conn, target: ParticipantId) {
        let Some(th) = self.therapist_caller(pid, conn) else {
            return;
        };
        let Some(t) = self.waiting_target(conn, target) else {
            return;
        };
        let by = self.members[th].user_id;
        self.admit_idx(t, Some(by));
        self.announce_queue();
    }

    /// The therapist turns a waiting client away.
    pub fn deny(&mut self, pid: ParticipantId, conn: &Conn, target: ParticipantId) {
        let Some(th) = self.therapist_caller(pid, conn) else {
            return;
        };
        let Some(t) = self.waiting_target(conn, target) else {
            return;
        };
        let by = self.members[th].user_id;
        let m = self.members.remove(t);
        self.dirty = true;
        self.events.push(EventKind::Denied {
            participant_id: m.pid,
            by,
        });
        self.events.push(EventKind::Left {
            participant_id: m.pid,
            reason: "denied".into(),
        });
        if let Some(c) = &m.conn {
            self.send(c, &ServerMessage::Denied);
            self.close(c, Closing::Denied);
        }
        self.announce_queue();
        self.note_if_empty();
    }

    /// The therapist sends a short text to one waiting client, or to all of them.
    pub fn notice(
        &mut self,
        pid: ParticipantId,
        conn: &Conn,
        target: Option<ParticipantId>,
        text: String,
    ) {
        if self.therapist_caller(pid, conn).is_none() {
            return;
        }
        let targets: Vec<usize> = match target {
            Some(t) => match self.waiting_target(conn, t) {
                Some(i) => vec![i],
                None => return,
            },
            None => self.waiting_order(),
        };
        let msg = ServerMessage::Notice { text };
        for i in targets {
            self.send_to(i, &msg);
        }
    }

    /// Relay a description or candidate between two admitted members.
    pub fn signal(
        &mut self,
        pid: ParticipantId,
        conn: &Conn,
        to: ParticipantId,
        description: Option<Description>,
        candidate: Option<Candidate>,
    ) {
        let Some(from) = self.caller(pid, conn.id) else {
            return;
        };
        if !self.members[from].admitted() {
            self.error(conn, ErrorCode::NotAdmitted, "you are in the waiting room");
            return;
        }
        let target = self
            .idx(to)
            .filter(|&t| t != from && self.members[t].admitted());
        let Some(t) = target else {
            self.error(
                conn,
                ErrorCode::UnknownPeer,
                "no admitted participant with that id in this room",
            );
            return;
        };
        // Metadata only: which peers and what kind of signal, never its content.
        tracing::trace!(
            from = %pid,
            to = %to,
            kind = description.as_ref().map_or("candidate", |d| d.kind.as_str()),
            "signal relayed"
        );
        let msg = text(&ServerMessage::Signal {
            from: pid,
            description,
            candidate,
        });
        let held_max = self.held_max;
        let m = &mut self.members[t];
        match &m.conn {
            Some(c) if c.queued() >= self.relay_max_queued => {
                // The recipient is not keeping up: the sender pays (this signal is not
                // delivered and it is told), not the recipient.
                self.error(
                    conn,
                    ErrorCode::PeerBusy,
                    "the other side is not keeping up; this signal was not delivered",
                );
            }
            Some(c) => {
                let c = c.clone();
                self.effects.push(Effect::Send(c, Outbound::Text(msg)));
            }
            None => {
                if m.held.len() >= held_max {
                    m.held.pop_front();
                }
                m.held.push_back(msg);
                self.dirty = true;
            }
        }
    }

    /// Quality figures, for the record only.
    pub fn stats(&mut self, pid: ParticipantId, conn: &Conn, stats: Stats) {
        if self.caller(pid, conn.id).is_some() {
            self.events.push(EventKind::Stats {
                participant_id: pid,
                stats,
            });
        }
    }

    fn remove(&mut self, idx: usize, reason: &str) {
        self.dirty = true;
        let m = self.members.remove(idx);
        self.events.push(EventKind::Left {
            participant_id: m.pid,
            reason: reason.into(),
        });
        if m.admitted() {
            let msg = ServerMessage::PeerLeft {
                participant_id: m.pid,
                reason: reason.into(),
            };
            for i in 0..self.members.len() {
                if self.members[i].admitted() {
                    self.send_to(i, &msg);
                }
            }
        } else {
            self.announce_queue();
        }
        self.note_if_empty();
    }

    fn note_if_empty(&mut self) {
        if self.members.is_empty() && self.empty_since.is_none() {
            self.empty_since = Some(Instant::now());
        }
    }

    /// An account no longer takes part (removed from the appointment): out it goes.
    pub fn remove_account(&mut self, user_id: Uuid) {
        let Some(i) = self.members.iter().position(|m| m.user_id == user_id) else {
            return;
        };
        if let Some(c) = self.members[i].conn.clone() {
            self.send(
                &c,
                &ServerMessage::Ended {
                    reason: "removed".into(),
                },
            );
            self.close(&c, Closing::Removed);
        }
        self.remove(i, "removed");
    }

    /// A member leaves for good.
    pub fn leave(&mut self, pid: ParticipantId, conn: &Conn) {
        let Some(i) = self.caller(pid, conn.id) else {
            return;
        };
        self.close(conn, Closing::Left);
        self.remove(i, "left");
    }

    /// The therapist ends the session for everyone.
    pub fn end(&mut self, pid: ParticipantId, conn: &Conn) {
        if self.therapist_caller(pid, conn).is_some() {
            self.finish("ended_by_therapist");
        }
    }

    /// End the room: everyone is told why and disconnected.
    pub fn finish(&mut self, reason: &str) {
        if self.finished.is_some() {
            return;
        }
        self.dirty = true;
        let msg = ServerMessage::Ended {
            reason: reason.into(),
        };
        for i in 0..self.members.len() {
            if let Some(c) = self.members[i].conn.clone() {
                self.send(&c, &msg);
                self.close(&c, Closing::Ended);
            }
        }
        for m in std::mem::take(&mut self.members) {
            self.events.push(EventKind::Left {
                participant_id: m.pid,
                reason: "ended".into(),
            });
        }
        self.events.push(EventKind::Ended {
            reason: reason.into(),
        });
        self.finished = Some(Finish::Ended(reason.into()));
    }

    /// A connection dropped without `leave`: hold the place for the grace period.
    pub fn disconnected(&mut self, pid: ParticipantId, conn_id: u64, now: Instant) {
        let Some(i) = self.caller(pid, conn_id) else {
            return;
        };
        let m = &mut self.members[i];
        m.conn = None;
        m.away_until = Some(now + self.grace);
        self.dirty = true;
        self.events.push(EventKind::Disconnected {
            participant_id: pid,
        });
        if self.members[i].admitted() {
            self.announce_admitted_others(
                i,
                &ServerMessage::PeerReconnecting {
                    participant_id: pid,
                },
            );
        }
    }

    /// Time passes: held places expire, the window closes, an empty room gives up.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.closes_at {
            self.finish("window_closed");
            return;
        }
        while let Some(i) = self
            .members
            .iter()
            .position(|m| m.away_until.is_some_and(|t| t <= now))
        {
            self.remove(i, "timeout");
        }
        if let Some(t) = self.empty_since
            && self.members.is_empty()
            && now >= t + self.grace
        {
            self.finish("empty");
        }
    }

    /// The room as another node can take it over (see [`RoomSnapshot`]). `me` names this
    /// node, for the connections held here.
    pub fn snapshot(&self, me: &str, now: Instant) -> RoomSnapshot {
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let wall = |t: Instant| to_wall(t, now, now_ms);
        RoomSnapshot {
            appointment_id: self.appointment_id,
            session_id: self.session_id,
            closes_at_ms: wall(self.closes_at),
            auto_admit: self.auto_admit,
            knock_seq: self.knock_seq,
            empty_since_ms: self.empty_since.map(wall),
            members: self
                .members
                .iter()
                .map(|m| MemberSnapshot {
                    participant_id: m.pid,
                    user_id: m.user_id,
                    role: m.role,
                    display_name: m.display_name.clone(),
                    waiting: match m.place {
                        Place::Waiting { since_ms, seq } => Some((since_ms, seq)),
                        Place::Admitted => None,
                    },
                    conn: m.conn.as_ref().map(|c| c.reference(me)),
                    away_until_ms: m.away_until.map(wall),
                    resume_hash: {
                        use base64::{Engine as _, engine::general_purpose::STANDARD};
                        STANDARD.encode(m.resume_hash)
                    },
                    held: m.held.iter().map(|h| h.to_string()).collect(),
                    network: m.network.clone(),
                })
                .collect(),
        }
    }

    /// Take a room over from a snapshot another node wrote. `conn_of` finds each member's
    /// connection (here, or on a node that is alive); a member whose connection is gone is
    /// reconnecting from now, for the grace period, and the others are told.
    pub fn restore(
        snap: RoomSnapshot,
        cfg: &SignalingConfig,
        now: Instant,
        mut conn_of: impl FnMut(&ConnRef) -> Option<Conn>,
    ) -> Self {
        use base64::{Engine as _, engine::general_purpose::STANDARD};
        let now_ms = jiff::Timestamp::now().as_millisecond();
        let instant = |ms: i64| from_wall(ms, now, now_ms);
        let mut lost = Vec::new();
        let members = snap
            .members
            .into_iter()
            .map(|m| {
                let conn = m.conn.as_ref().and_then(&mut conn_of);
                let away_until = match (&conn, m.away_until_ms) {
                    (Some(_), _) => None,
                    (None, Some(ms)) => Some(instant(ms)),
                    (None, None) => {
                        lost.push(m.participant_id);
                        Some(now + cfg.grace)
                    }
                };
                let mut resume_hash = [0u8; 32];
                if let Ok(h) = STANDARD.decode(&m.resume_hash)
                    && h.len() == 32
                {
                    resume_hash.copy_from_slice(&h);
                }
                Member {
                    pid: m.participant_id,
                    user_id: m.user_id,
                    role: m.role,
                    display_name: m.display_name,
                    place: match m.waiting {
                        Some((since_ms, seq)) => Place::Waiting { since_ms, seq },
                        None => Place::Admitted,
                    },
                    conn,
                    away_until,
                    resume_hash,
                    held: m.held.into_iter().map(Arc::from).collect(),
                    network: m.network,
                }
            })
            .collect();
        let mut room = Self {
            appointment_id: snap.appointment_id,
            session_id: snap.session_id,
            closes_at: instant(snap.closes_at_ms),
            auto_admit: snap.auto_admit,
            grace: cfg.grace,
            // Held signals and the welcome must fit the outbox on resume (a flood of signals
            // aimed at a reconnecting member must not get it closed as a slow consumer).
            held_max: cfg.held_signals.min((cfg.outbox / 2).max(1)),
            relay_max_queued: (cfg.outbox / 2).max(1),
            members,
            knock_seq: snap.knock_seq,
            empty_since: snap.empty_since_ms.map(instant),
            finished: None,
            effects: Vec::new(),
            events: Vec::new(),
            dirty: true,
        };
        // The connections that were lost with the node that held them.
        for pid in lost {
            room.events.push(EventKind::Disconnected {
                participant_id: pid,
            });
            if let Some(i) = room.idx(pid)
                && room.members[i].admitted()
            {
                room.announce_admitted_others(
                    i,
                    &ServerMessage::PeerReconnecting {
                        participant_id: pid,
                    },
                );
            }
        }
        room
    }

    /// The connections of the room's members (for a node that gives the room up).
    pub fn connections(&self) -> impl Iterator<Item = &Conn> {
        self.members.iter().filter_map(|m| m.conn.as_ref())
    }

    /// Check the room's invariants (tests call this after every step).
    pub fn check_invariants(&self) {
        let mut users: Vec<Uuid> = self.members.iter().map(|m| m.user_id).collect();
        users.sort_unstable();
        users.dedup();
        assert_eq!(users.len(), self.members.len(), "one member per account");
        let therapists = self
            .members
            .iter()
            .filter(|m| m.role == PeerRole::Therapist);
        for t in therapists {
            assert!(t.admitted(), "a therapist is never waiting");
        }
        for m in &self.members {
            assert_eq!(
                m.conn.is_none(),
                m.away_until.is_some(),
                "reconnecting iff no connection"
            );
            assert!(m.held.len() <= self.held_max);
        }
        for a in &self.members {
            for b in &self.members {
                if a.pid != b.pid {
                    assert_ne!(polite(a, b), polite(b, a), "politeness is opposite");
                }
            }
        }
        if self.finished.is_some() {
            assert!(self.members.is_empty());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{IceConfig, IceTransportPolicy};

    struct Peer {
        conn: Conn,
        rx: flume::Receiver<Outbound>,
        pid: ParticipantId,
    }

    fn grant(user: Uuid, role: PeerRole, appointment: Uuid) -> JoinGrant {
        JoinGrant {
            appointment_id: appointment,
            user_id: user,
            role,
            display_name: format!("{role:?}"),
            closes_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            auto_admit: false,
            ice: IceConfig {
                ice_servers: vec![],
                ice_transport_policy: IceTransportPolicy::All,
                expires_at: None,
            },
            sign_in: None,
            network: None,
        }
    }

    struct World {
        room: Room,
        next: u64,
        appointment: Uuid,
    }

    impl World {
        fn new() -> Self {
            let appointment = Uuid::new_v4();
            let cfg = SignalingConfig {
                grace: Duration::from_millis(100),
                held_signals: 2,
                ..Default::default()
            };
            let room = Room::new(
                &grant(Uuid::new_v4(), PeerRole::Therapist, appointment),
                &cfg,
                Instant::now(),
            );
            Self {
                room,
                next: 1,
                appointment,
            }
        }

        fn flush(&mut self) {
            self.room.check_invariants();
            for Effect::Send(c, o) in self.room.take_effects() {
                if let ConnSink::Local { tx, .. } = &c.sink {
                    let _ = tx.try_send(o);
                }
            }
        }

        fn join_as(
            &mut self,
            user: Uuid,
            role: PeerRole,
            resume: Option<&str>,
            reset: bool,
        ) -> Peer {
            let (tx, rx) = flume::bounded(64);
            self.next += 1;
            let conn = Conn::local(self.next, tx, Arc::new(Notify::new()));
            let j = self.room.join(
                &grant(user, role, self.appointment),
                conn.clone(),
                resume.map(resume_hash),
                reset,
            );
            self.flush();
            Peer {
                conn,
                rx,
                pid: j.participant_id,
            }
        }
    }

    fn drain(p: &mut Peer) -> Vec<serde_json::Value> {
        let mut out = Vec::new();
        while let Ok(o) = p.rx.try_recv() {
            match o {
                Outbound::Text(t) => out.push(serde_json::from_str(&t).unwrap()),
                Outbound::Close(why) => {
                    out.push(serde_json::json!({"type": "close", "code": why.code()}))
                }
            }
        }
        out
    }

    fn types(v: &[serde_json::Value]) -> Vec<String> {
        v.iter()
            .map(|m| m["type"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn waiting_room_admission_and_relay() {
        let mut w = World::new();
        let (t_user, c_user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = w.join_as(t_user, PeerRole::Therapist, None, false);
        assert_eq!(types(&drain(&mut t)), ["welcome", "lobby"]);
        let mut c = w.join_as(c_user, PeerRole::Client, None, false);
        let got = drain(&mut c);
        assert_eq!(types(&got), ["welcome", "waiting"]);
        assert_eq!(
            got[0]["peers"],
            serde_json::json!([]),
            "a waiting client sees no one"
        );
        assert_eq!(got[1]["position"], 1);
        let lobby = drain(&mut t);
        assert_eq!(lobby[0]["waiting"][0]["participant_id"], c.pid.to_string());

        // A waiting client cannot signal.
        w.room.signal(c.pid, &c.conn, t.pid, None, None);
        w.flush();
        assert_eq!(drain(&mut c)[0]["code"], "not_admitted");
        // A client cannot admit.
        w.room.admit(c.pid, &c.conn, c.pid);
        w.flush();
        assert_eq!(drain(&mut c)[0]["code"], "forbidden");

        w.room.admit(t.pid, &t.conn, c.pid);
        w.flush();
        let admitted = drain(&mut c);
        assert_eq!(types(&admitted), ["admitted"]);
        assert_eq!(admitted[0]["peers"][0]["participant_id"], t.pid.to_string());
        assert_eq!(
            admitted[0]["peers"][0]["polite"], true,
            "clients are polite to the therapist"
        );
        let tmsgs = drain(&mut t);
        assert_eq!(types(&tmsgs), ["peer_joined", "lobby"]);
        assert_eq!(tmsgs[0]["polite"], false);

        w.room.signal(
            c.pid,
            &c.conn,
            t.pid,
            None,
            Some(crate::protocol::Candidate {
                candidate: String::new(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            }),
        );
        w.flush();
        let s = drain(&mut t);
        assert_eq!(s[0]["type"], "signal");
        assert_eq!(s[0]["from"], c.pid.to_string());
        // Unknown peers are refused.
        w.room.signal(c.pid, &c.conn, Uuid::new_v4(), None, None);
        w.flush();
        assert_eq!(drain(&mut c)[0]["code"], "unknown_peer");
    }

    #[test]
    fn reconnect_resume_hold_and_timeout() {
        let mut w = World::new();
        let (t_user, c_user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = w.join_as(t_user, PeerRole::Therapist, None, false);
        let mut c = w.join_as(c_user, PeerRole::Client, None, false);
        w.room.admit(t.pid, &t.conn, c.pid);
        w.flush();
        let welcome = drain(&mut c);
        let _ = drain(&mut t);
        let _ = welcome;
        // Client's resume token: from its welcome.
        let mut c2 = w.join_as(c_user, PeerRole::Client, None, false);
        // Without the resume token it is a takeover: the old connection is replaced.
        let old = drain(&mut c);
        assert_eq!(old[0]["code"], "replaced");
        assert_eq!(old[1]["code"], 4009);
        let first = drain(&mut c2);
        assert_eq!(first[0]["type"], "welcome");
        assert_eq!(first[0]["resumed"], true);
        assert_eq!(
            first[0]["participant_id"],
            c.pid.to_string(),
            "same participant id"
        );
        let token = first[0]["resume_token"].as_str().unwrap().to_owned();
        let t_msgs = drain(&mut t);
        assert_eq!(t_msgs[0]["type"], "peer_resumed");
        assert_eq!(t_msgs[0]["reset"], true);

        // The connection drops: the therapist is told, signals are held (bounded, 2).
        w.room.disconnected(c2.pid, c2.conn.id, Instant::now());
        w.flush();
        assert_eq!(types(&drain(&mut t)), ["peer_reconnecting"]);
        for n in 1..=3 {
            let candidate = Candidate {
                candidate: format!("candidate:{n}"),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            };
            w.room.signal(t.pid, &t.conn, c2.pid, None, Some(candidate));
        }
        w.flush();
        // Resume with the token inside the grace period.
        let mut c3 = w.join_as(c_user, PeerRole::Client, Some(&token), false);
        let back = drain(&mut c3);
        assert_eq!(
            types(&back),
            ["welcome", "signal", "signal"],
            "held signals, oldest dropped"
        );
        assert_eq!(back[1]["candidate"]["candidate"], "candidate:2");
        assert_eq!(back[2]["candidate"]["candidate"], "candidate:3");
        assert_eq!(back[0]["resumed"], true);
        assert_eq!(back[0]["peers"][0]["participant_id"], t.pid.to_string());
        let t_msgs = drain(&mut t);
        assert_eq!(t_msgs[0]["type"], "peer_resumed");
        assert_eq!(t_msgs[0]["reset"], false);

        // Drop again and let the grace period pass.
        w.room.disconnected(c3.pid, c3.conn.id, Instant::now());
        w.flush();
        let _ = drain(&mut t);
        w.room.tick(Instant::now() + Duration::from_millis(150));
        w.flush();
        let t_msgs = drain(&mut t);
        assert_eq!(t_msgs[0]["type"], "peer_left");
        assert_eq!(t_msgs[0]["reason"], "timeout");
        assert_eq!(w.room.len(), 1);
    }

    #[test]
    fn a_peer_filling_half_the_recipients_outbox_is_told_and_the_recipient_stays() {
        let mut w = World::new();
        let (t_user, c_user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = w.join_as(t_user, PeerRole::Therapist, None, false);
        let mut c = w.join_as(c_user, PeerRole::Client, None, false);
        w.room.admit(t.pid, &t.conn, c.pid);
        w.flush();
        let _ = (drain(&mut t), drain(&mut c));
        // The therapist does not read: the client's signals pile up in its outbox (64).
        let candidate = |n: usize| Candidate {
            candidate: format!("candidate:{n}"),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        };
        for n in 0..40 {
            w.room
                .signal(c.pid, &c.conn, t.pid, None, Some(candidate(n)));
            w.flush();
        }
        // Half of the outbox: far from full, so the room's task never closes the recipient
        // as a slow consumer for what a peer sent it.
        assert_eq!(t.conn.queued(), 32, "peers fill half of an outbox, no more");
        let told = drain(&mut c);
        assert_eq!(told.len(), 8);
        assert!(told.iter().all(|m| m["code"] == "peer_busy"), "{told:?}");
        // The room's own messages still fit.
        w.room.notice(t.pid, &t.conn, None, "x".into());
        w.room.set_auto_admit(true);
        w.flush();
        let got = drain(&mut t);
        assert_eq!(got.len(), 32 + 1, "the signals, then the lobby");
        assert_eq!(got[31]["candidate"]["candidate"], "candidate:31");
    }

    #[test]
    fn a_room_taken_over_from_its_snapshot_keeps_places_resume_tokens_and_held_signals() {
        let mut w = World::new();
        let (t_user, c_user, d_user) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let mut t = w.join_as(t_user, PeerRole::Therapist, None, false);
        let mut c = w.join_as(c_user, PeerRole::Client, None, false);
        let mut d = w.join_as(d_user, PeerRole::Client, None, false);
        w.room.admit(t.pid, &t.conn, c.pid);
        w.flush();
        let c_token = drain(&mut c)[0]["resume_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let _ = (drain(&mut t), drain(&mut d));
        // The client's connection drops; a signal for it is held.
        w.room.disconnected(c.pid, c.conn.id, Instant::now());
        w.room.signal(
            t.pid,
            &t.conn,
            c.pid,
            None,
            Some(Candidate {
                candidate: "candidate:held".into(),
                sdp_mid: None,
                sdp_m_line_index: None,
                username_fragment: None,
            }),
        );
        w.flush();
        let _ = drain(&mut t);
        let _ = w.room.take_events();

        // The snapshot crosses to another node as JSON; the therapist's connection is on a
        // live node, the waiting client's node died with the old owner.
        let taken = w.room.snapshot("old-owner", Instant::now());
        let json = serde_json::to_string(&taken).unwrap();
        assert!(!json.contains(&c_token), "no resume token, only its hash");
        let snap: RoomSnapshot = serde_json::from_str(&json).unwrap();
        assert_eq!(snap, taken);
        let t_id = t.conn.id;
        let cfg = SignalingConfig {
            grace: Duration::from_millis(100),
            held_signals: 2,
            ..Default::default()
        };
        let mut room = Room::restore(snap, &cfg, Instant::now(), |r| {
            (r.id == t_id).then(|| t.conn.clone())
        });
        room.check_invariants();
        let events = room.take_events();
        assert_eq!(
            events,
            vec![EventKind::Disconnected {
                participant_id: d.pid
            }],
            "the waiting client lost its connection with the old owner"
        );
        assert_eq!(room.session_id, w.room.session_id, "the same session");
        w.room = room;
        w.flush();
        assert!(
            drain(&mut t).is_empty(),
            "no news: the lost one was waiting"
        );

        // The client resumes on the new owner with its token: same id, held signal, admitted.
        let mut c2 = w.join_as(c_user, PeerRole::Client, Some(&c_token), false);
        let back = drain(&mut c2);
        assert_eq!(types(&back), ["welcome", "signal"]);
        assert_eq!(back[0]["participant_id"], c.pid.to_string());
        assert_eq!(back[0]["peers"][0]["participant_id"], t.pid.to_string());
        assert_eq!(back[1]["candidate"]["candidate"], "candidate:held");
        assert_eq!(drain(&mut t)[0]["type"], "peer_resumed");
        // The lost waiting client times out after the grace period.
        w.room.tick(Instant::now() + Duration::from_millis(150));
        w.flush();
        assert_eq!(w.room.len(), 2);
    }

    #[test]
    fn a_flood_held_for_a_reconnecting_member_fits_its_outbox_when_it_comes_back() {
        let cfg = SignalingConfig {
            grace: Duration::from_secs(30),
            ..Default::default()
        };
        let appointment = Uuid::new_v4();
        let room = Room::new(
            &grant(Uuid::new_v4(), PeerRole::Therapist, appointment),
            &cfg,
            Instant::now(),
        );
        let mut w = World {
            room,
            next: 1,
            appointment,
        };
        let (t_user, c_user) = (Uuid::new_v4(), Uuid::new_v4());
        let mut t = w.join_as(t_user, PeerRole::Therapist, None, false);
        let mut c = w.join_as(c_user, PeerRole::Client, None, false);
        w.room.admit(t.pid, &t.conn, c.pid);
        w.flush();
        let token = drain(&mut c)[0]["resume_token"]
            .as_str()
            .unwrap()
            .to_owned();
        let _ = drain(&mut t);
        w.room.disconnected(c.pid, c.conn.id, Instant::now());
        w.flush();
        for n in 0..200 {
            w.room.signal(
                t.pid,
                &t.conn,
                c.pid,
                None,
                Some(Candidate {
                    candidate: format!("candidate:{n}"),
                    sdp_mid: None,
                    sdp_m_line_index: None,
                    username_fragment: None,
                }),
            );
        }
        w.flush();
        // Back: the welcome and the newest half-outbox of signals, all in a 64-slot outbox.
        let mut back = w.join_as(c_user, PeerRole::Client, Some(&token), false);
        assert!(back.conn.queued() < 64, "the outbox did not fill");
        let got = drain(&mut back);
        assert_eq!(got.len(), 1 + 32);
        assert_eq!(got[32]["candidate"]["candidate"], "candidate:199");
        w.room.check_invariants();
    }

    #[test]
    fn a_member_whose_node_is_lost_or_whose_connection_is_gone_reconnects() {
        use crate::router::{RoomCmd, apply};
        let mut w = World::new();
        let mut t = w.join_as(Uuid::new_v4(), PeerRole::Therapist, None, false);
        // A client connected through node B, admitted.
        let on_b = Conn::remote(99, "node-b#1".into());
        let c_user = Uuid::new_v4();
        let c = w.room.join(
            &grant(c_user, PeerRole::Client, w.appointment),
            on_b.clone(),
            None,
            false,
        );
        let welcome_to = |effects: Vec<Effect>, id: u64| -> serde_json::Value {
            effects
                .into_iter()
                .find_map(|Effect::Send(to, o)| match o {
                    Outbound::Text(t) if to.id == id && t.contains("\"welcome\"") => {
                        Some(serde_json::from_str(&t).unwrap())
                    }
                    _ => None,
                })
                .expect("a welcome")
        };
        let resume_token = welcome_to(w.room.take_effects(), 99)["resume_token"]
            .as_str()
            .unwrap()
            .to_owned();
        w.room.admit(t.pid, &t.conn, c.participant_id);
        w.flush();
        drain(&mut t);

        // Node B is taken for lost: the client is reconnecting, and its connection (should
        // it still be there, cut off from Redis) is told to reconnect.
        w.room.node_lost("node-b#1", Instant::now());
        let effects = w.room.take_effects();
        assert!(
            effects
                .iter()
                .any(|Effect::Send(to, o)| to.id == 99
                    && matches!(o, Outbound::Close(Closing::Rejoin))),
            "told to reconnect"
        );
        for Effect::Send(to, o) in effects {
            if let ConnSink::Local { tx, .. } = &to.sink {
                let _ = tx.try_send(o);
            }
        }
        assert!(types(&drain(&mut t)).contains(&"peer_reconnecting".to_owned()));
        assert_eq!(Closing::Rejoin.code(), close::SERVICE_RESTART);

        // What the old connection still sends gets the same answer, and nothing else.
        let mut replies = Vec::new();
        apply(
            &mut w.room,
            RoomCmd::Msg {
                pid: c.participant_id,
                conn: on_b.clone(),
                msg: crate::protocol::ClientMessage::Leave,
            },
            &mut replies,
        );
        let effects = w.room.take_effects();
        assert_eq!(effects.len(), 1);
        assert!(matches!(
            &effects[0],
            Effect::Send(to, Outbound::Close(Closing::Rejoin)) if to.id == 99
        ));
        assert!(w.room.idx(c.participant_id).is_some(), "its place is kept");

        // Back through node C; then that connection turns out gone from its node.
        let on_c = Conn::remote(100, "node-c#1".into());
        let back = w.room.join(
            &grant(c_user, PeerRole::Client, w.appointment),
            on_c,
            Some(resume_hash(&resume_token)),
            false,
        );
        assert_eq!(back.participant_id, c.participant_id);
        assert_eq!(welcome_to(w.room.take_effects(), 100)["resumed"], true);
        w.flush();
        drain(&mut t);
        w.room.conn_gone(100, Instant::now());
        w.flush();
        assert!(types(&drain(&mut t)).contains(&"peer_reconnecting".to_owned()));
        assert!(!w.room.is_current(c.participant_id, 100));
    }

    #[test]
    fn deny_notice_end_and_window() {
        let mut w = World::new();
        let mut t = w.join_as(Uuid::new_v4(), PeerRole::Therapist, None, false);
        let mut a = w.join_as(Uuid::new_v4(), PeerRole::Client, None, false);
        let mut b = w.join_as(Uuid::new_v4(), PeerRole::Client, None, false);
        assert_eq!(drain(&mut b).last().unwrap()["position"], 2);
        let _ = (drain(&mut t), drain(&mut a));
        w.room
            .notice(t.pid, &t.conn, None, "Running five minutes late".into());
        w.flush();
        assert_eq!(drain(&mut a)[0]["text"], "Running five minutes late");
        assert_eq!(drain(&mut b)[0]["type"], "notice");
        w.room.deny(t.pid, &t.conn, a.pid);
        w.flush();
        let denied = drain(&mut a);
        assert_eq!(types(&denied), ["denied", "close"]);
        assert_eq!(denied[1]["code"], 4011);
        assert_eq!(drain(&mut b)[0]["position"], 1, "the queue moves up");
        // A client cannot end; the therapist can.
        w.room.end(b.pid, &b.conn);
        w.flush();
        assert_eq!(drain(&mut b)[0]["code"], "forbidden");
        w.room.end(t.pid, &t.conn);
        w.flush();
        let ended = drain(&mut b);
        assert_eq!(ended[0]["reason"], "ended_by_therapist");
        assert_eq!(ended[1]["code"], 4010);
        assert!(w.room.finished().is_some());
        let events = w.room.take_events();
        assert!(matches!(events.last(), Some(EventKind::Ended { .. })));
    }

    #[test]
    fn auto_admit_and_client_politeness_are_opposite() {
        let mut w = World::new();
        let mut t = w.join_as(Uuid::new_v4(), PeerRole::Therapist, None, false);
        let mut a = w.join_as(Uuid::new_v4(), PeerRole::Client, None, false);
        let mut b = w.join_as(Uuid::new_v4(), PeerRole::Client, None, false);
        let _ = (drain(&mut t), drain(&mut a), drain(&mut b));
        w.room.set_auto_admit(true);
        w.flush();
        let am = drain(&mut a);
        let bm = drain(&mut b);
        let a_about_b = am
            .iter()
            .find(|m| m["type"] == "peer_joined")
            .map(|m| m["polite"].clone())
            .or_else(|| {
                am.iter().find(|m| m["type"] == "admitted").and_then(|m| {
                    m["peers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["participant_id"] == b.pid.to_string())
                        .map(|p| p["polite"].clone())
                })
            })
            .unwrap();
        let b_about_a = bm
            .iter()
            .find(|m| m["type"] == "peer_joined")
            .map(|m| m["polite"].clone())
            .or_else(|| {
                bm.iter().find(|m| m["type"] == "admitted").and_then(|m| {
                    m["peers"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|p| p["participant_id"] == a.pid.to_string())
                        .map(|p| p["polite"].clone())
                })
            })
            .unwrap();
        assert_ne!(a_about_b, b_about_a);
        // New clients now walk straight in.
        let mut c = w.join_as(Uuid::new_v4(), PeerRole::Client, None, false);
        let cm = drain(&mut c);
        assert_eq!(cm[0]["type"], "welcome");
        assert_eq!(cm[0]["peers"].as_array().unwrap().len(), 3);
        // The window closes: everyone is told.
        w.room.tick(Instant::now() + Duration::from_secs(7200));
        w.flush();
        assert_eq!(drain(&mut c)[0]["reason"], "window_closed");
    }
}

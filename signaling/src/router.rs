//! Where rooms live, behind one interface: [`Router`].
//!
//! The per-connection loop ([`crate::hub::Hub::serve`]) verifies a hello, then asks the
//! router to deliver the join to the room's owner, and from then on sends the member's
//! messages through the [`RoomLink`] it got back. Two routers implement it:
//!
//! - [`crate::local::LocalRouter`]: the rooms of this process, one task each (one node).
//! - [`crate::cluster::RedisRouter`]: rooms spread over several nodes; each room has one
//!   owner node holding its state, reached through Redis by members on other nodes.
//!
//! Either way a room's state changes in one place, one command at a time, by
//! [`apply`] on a [`Room`].

use crate::{
    JoinGrant,
    protocol::{ClientMessage, ParticipantId, ServerMessage},
    room::{Conn, Joined, Outbound, Room},
};
use std::{
    sync::{
        Arc, RwLock,
        atomic::{AtomicU32, Ordering},
    },
    time::Instant,
};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// A command for a room's task. Commands travel boxed: a channel's buffer keeps the capacity
/// it grew to for the room's whole life, so its slots are kept pointer-sized (see the
/// footprint benchmark).
pub(crate) enum RoomCmd {
    Join(JoinCmd),
    Msg {
        pid: ParticipantId,
        conn: Conn,
        msg: ClientMessage,
    },
    Disconnected {
        pid: ParticipantId,
        conn_id: u64,
    },
    SetAutoAdmit(bool),
    Remove(Uuid),
    Finish(String),
    /// A connection the room sends to is gone from its node (several nodes).
    ConnGone(u64),
    /// This node is stopping: give the room's state (to be carried on after the restart)
    /// and stop without ending it. One node only.
    Handover(oneshot::Sender<crate::room::RoomSnapshot>),
    /// A command from a connection that relays its signals by [`Relay`]: once it is applied
    /// and what it caused is sent, the count is taken down (one node only).
    Acked(Box<RoomCmd>, Arc<AtomicU32>),
}

pub(crate) type RoomTx = flume::Sender<Box<RoomCmd>>;

pub(crate) struct JoinCmd {
    pub grant: JoinGrant,
    pub conn: Conn,
    pub resume: Option<[u8; 32]>,
    pub reset: bool,
    /// Where the outcome goes: a waiting join on this node, or (cluster) the joining
    /// connection's node.
    pub reply: Reply,
}

/// Where a join's outcome is told.
pub(crate) enum Reply {
    Local(oneshot::Sender<Joined>),
    /// The joining connection is on another node: it learns through its deliveries.
    Remote,
}

/// A verified join, for [`Router::join`].
pub struct JoinRequest {
    pub grant: JoinGrant,
    /// The connection, on this node.
    pub conn: Conn,
    /// SHA-256 of the resume token from the hello.
    pub resume: Option<[u8; 32]>,
    pub reset: bool,
    /// When the join token was verified (a room closed after that moment refuses it).
    pub verified: Instant,
    /// The same moment on the wall clock, for closures decided on other nodes.
    pub verified_ms: i64,
}

/// Why a join did not reach a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinFailure {
    /// The room was closed (the appointment cancelled or moved, the account taken off it)
    /// after the token was verified, or it ended while joining.
    Closed,
    /// The room's owner cannot be reached now (several nodes, Redis down); try again.
    Unavailable(String),
}

/// Why a member's message did not reach its room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkError {
    /// The room is gone (or its owner changed: ask the router for a new link).
    Gone,
    /// The owner cannot be reached now (Redis down); the message was not delivered.
    Unavailable,
}

/// A member's way to its room.
#[derive(Clone)]
pub enum RoomLink {
    /// The room's task in this process.
    Local(LocalLink),
    /// The room's owner on another node.
    Remote(Arc<dyn RemoteLink>),
}

/// The channel to a room's task in this process, and (one node) the short way for signals.
#[derive(Clone)]
pub struct LocalLink {
    pub(crate) tx: RoomTx,
    pub(crate) fast: Option<Fast>,
}

impl LocalLink {
    /// A link whose every message goes through the room's task (a cluster's owned rooms).
    pub(crate) fn new(tx: RoomTx) -> Self {
        Self { tx, fast: None }
    }

    /// A link that relays signals by `relay` when it can (one node).
    pub(crate) fn with_relay(tx: RoomTx, relay: Arc<Relay>) -> Self {
        Self {
            tx,
            fast: Some(Fast {
                relay,
                pending: Arc::default(),
            }),
        }
    }
}

/// One connection's short way: the room's relay table, and how many of this connection's
/// commands the room's task has not finished yet.
#[derive(Clone)]
pub(crate) struct Fast {
    relay: Arc<Relay>,
    pending: Arc<AtomicU32>,
}

/// Who of a room is admitted and connected to this process, published by the room's task,
/// so that a signal between two of them goes from the sender's connection task straight
/// to the recipient's outbox, without a hop through the room's task (the hop that cost
/// as much CPU as the rest of the relay; docs/BENCHMARKS.md).
///
/// The room still decides everything: its task publishes the table only after it has
/// sent what its last command caused (a welcome, an admission, a replay of held signals
/// comes first), a connection takes the short way only when the room has finished every
/// command it sent before (so its own messages never overtake each other), and anything
/// the table cannot settle (the sender in the waiting room, an unknown or reconnecting
/// recipient, a recipient not keeping up) goes to the room, which answers as before.
pub(crate) struct Relay {
    peers: RwLock<Vec<RelayPeer>>,
    max_queued: usize,
}

/// An admitted member with a connection on this node.
#[derive(Clone)]
pub(crate) struct RelayPeer {
    pub pid: ParticipantId,
    pub conn_id: u64,
    pub tx: flume::Sender<Outbound>,
    pub kill: Arc<Notify>,
}

impl Relay {
    pub(crate) fn new(max_queued: usize) -> Self {
        Self {
            peers: RwLock::new(Vec::new()),
            max_queued,
        }
    }

    /// Replace the table if who is in it changed.
    pub(crate) fn publish(&self, peers: Vec<RelayPeer>) {
        let same = |a: &[RelayPeer]| {
            a.len() == peers.len()
                && a.iter()
                    .zip(&peers)
                    .all(|(x, y)| x.pid == y.pid && x.conn_id == y.conn_id)
        };
        if same(&self.peers.read().expect("relay lock")) {
            return;
        }
        *self.peers.write().expect("relay lock") = peers;
    }

    /// Remove from the table everyone not in `keep` (same participant, same connection);
    /// add nobody. Forwarding holds the table's read lock while it sends, so once this
    /// returns no signal reaches a removed member the short way.
    pub(crate) fn withdraw(&self, keep: &[RelayPeer]) {
        let stale = |p: &RelayPeer| {
            !keep
                .iter()
                .any(|k| k.pid == p.pid && k.conn_id == p.conn_id)
        };
        if !self.peers.read().expect("relay lock").iter().any(stale) {
            return;
        }
        self.peers
            .write()
            .expect("relay lock")
            .retain(|p| !stale(p));
    }

    /// Relay a signal if the table settles it (`None`); otherwise give it back for the room.
    fn forward(
        &self,
        pid: ParticipantId,
        conn_id: u64,
        msg: ClientMessage,
    ) -> Option<ClientMessage> {
        let ClientMessage::Signal {
            to,
            description,
            candidate,
        } = msg
        else {
            return Some(msg);
        };
        let peers = self.peers.read().expect("relay lock");
        let target = peers
            .iter()
            .any(|p| p.pid == pid && p.conn_id == conn_id)
            .then(|| peers.iter().find(|p| p.pid == to && p.pid != pid))
            .flatten()
            .filter(|t| t.tx.len() < self.max_queued);
        let Some(t) = target else {
            return Some(ClientMessage::Signal {
                to,
                description,
                candidate,
            });
        };
        tracing::trace!(
            from = %pid,
            to = %to,
            kind = description.as_ref().map_or("candidate", |d| d.kind.as_str()),
            "signal relayed"
        );
        let text = serde_json::to_string(&ServerMessage::Signal {
            from: pid,
            description,
            candidate,
        })
        .expect("server messages serialise");
        match t.tx.try_send(Outbound::Text(text.into())) {
            Ok(()) => {}
            // As from the room: an outbox that is full stops its connection.
            Err(flume::TrySendError::Full(_)) => t.kill.notify_one(),
            // Gone since the table was published; the room learns it next.
            Err(flume::TrySendError::Disconnected(_)) => {}
        }
        None
    }
}

/// Sends a member's commands to a room owned elsewhere.
#[async_trait::async_trait]
pub trait RemoteLink: Send + Sync {
    async fn message(
        &self,
        pid: ParticipantId,
        conn: &Conn,
        msg: &ClientMessage,
    ) -> Result<(), LinkError>;
    async fn disconnected(&self, pid: ParticipantId, conn_id: u64) -> Result<(), LinkError>;
}

impl RoomLink {
    /// Send a member's message to its room; on failure the message comes back, to be sent
    /// again through another link.
    pub(crate) async fn message(
        &self,
        pid: ParticipantId,
        conn: &Conn,
        msg: ClientMessage,
    ) -> Result<(), (LinkError, ClientMessage)> {
        match self {
            RoomLink::Local(LocalLink { tx, fast }) => {
                let mut msg = msg;
                let mut ack = None;
                if let Some(f) = fast {
                    if f.pending.load(Ordering::Acquire) == 0 {
                        match f.relay.forward(pid, conn.id, msg) {
                            None => return Ok(()),
                            Some(m) => msg = m,
                        }
                    }
                    f.pending.fetch_add(1, Ordering::AcqRel);
                    ack = Some(f.pending.clone());
                }
                let cmd = RoomCmd::Msg {
                    pid,
                    conn: conn.clone(),
                    msg,
                };
                let cmd = match ack {
                    Some(pending) => RoomCmd::Acked(Box::new(cmd), pending),
                    None => cmd,
                };
                tx.send_async(Box::new(cmd)).await.map_err(|e| {
                    let cmd = match *e.into_inner() {
                        RoomCmd::Acked(cmd, pending) => {
                            pending.fetch_sub(1, Ordering::AcqRel);
                            *cmd
                        }
                        cmd => cmd,
                    };
                    match cmd {
                        RoomCmd::Msg { msg, .. } => (LinkError::Gone, msg),
                        _ => unreachable!("a message was sent"),
                    }
                })
            }
            RoomLink::Remote(r) => r.message(pid, conn, &msg).await.map_err(|e| (e, msg)),
        }
    }

    pub(crate) async fn disconnected(&self, pid: ParticipantId, conn_id: u64) {
        let _ = match self {
            RoomLink::Local(LocalLink { tx, .. }) => tx
                .send_async(Box::new(RoomCmd::Disconnected { pid, conn_id }))
                .await
                .map_err(|_| LinkError::Gone),
            RoomLink::Remote(r) => r.disconnected(pid, conn_id).await,
        };
    }
}

/// Closes this node's connections of an account joined from some of its sign-ins.
pub type RevokeFn = Arc<dyn Fn(Uuid, crate::SignIns) + Send + Sync>;

/// Where rooms live; see the module docs.
#[async_trait::async_trait]
pub trait Router: Send + Sync + 'static {
    /// Deliver a verified join to the appointment's room (opening it if none is open) and
    /// wait for the outcome.
    async fn join(&self, req: JoinRequest) -> Result<(RoomLink, Joined), JoinFailure>;

    /// A member's link failed with [`LinkError::Gone`]: the room's current link, if the
    /// room still lives (its owner may have changed), or `None`.
    async fn relink(&self, appointment_id: Uuid) -> Option<RoomLink>;

    /// A connection of this node has ended (after its `Disconnected` went out).
    fn forget(&self, _conn_id: u64) {}

    /// End an appointment's live room (cancelled or moved): everyone gets `ended`.
    async fn end_room(&self, appointment_id: Uuid, reason: &str);

    /// Apply a change of the appointment's auto-admit setting to its live room.
    async fn set_auto_admit(&self, appointment_id: Uuid, on: bool);

    /// Take an account out of an appointment's live room.
    async fn remove_account(&self, appointment_id: Uuid, user_id: Uuid);

    /// An account's sign-in (or every sign-in) ended: tell the other nodes, whose hubs close
    /// its connections there (the hub closes this node's). One node: nothing to do.
    async fn revoke(&self, _user_id: Uuid, _sign_ins: crate::SignIns) {}

    /// Where revocations from other nodes go: the hub's, called once as it starts.
    fn on_revoke(&self, _f: RevokeFn) {}

    /// The server is stopping, after its connections were told to reconnect: hand the
    /// rooms over (one node: to the next start of this node; a cluster: to the other
    /// nodes) rather than ending them.
    async fn shutdown(&self);

    /// Rooms whose state this node holds.
    fn room_count(&self) -> usize;

    /// Whether the router can reach what it needs (Redis, for a cluster).
    fn healthy(&self) -> bool {
        true
    }
}

/// Apply one command to a room; a join's outcome is put in `replies`.
pub(crate) fn apply(room: &mut Room, cmd: RoomCmd, replies: &mut Vec<(Reply, Conn, Joined)>) {
    match cmd {
        RoomCmd::Join(j) => {
            let JoinCmd {
                grant,
                conn,
                resume,
                reset,
                reply,
            } = j;
            let joined = room.join(&grant, conn.clone(), resume, reset);
            replies.push((reply, conn, joined));
        }
        RoomCmd::Msg { pid, conn, msg } => apply_msg(room, pid, &conn, msg),
        RoomCmd::Disconnected { pid, conn_id } => room.disconnected(pid, conn_id, Instant::now()),
        RoomCmd::SetAutoAdmit(on) => room.set_auto_admit(on),
        RoomCmd::Remove(user_id) => room.remove_account(user_id),
        RoomCmd::Finish(reason) => room.finish(&reason),
        RoomCmd::ConnGone(conn_id) => room.conn_gone(conn_id, Instant::now()),
        // Taken by the room's task before it gets here.
        RoomCmd::Handover(_) => {}
        // Taken apart by the room's task, which counts it down once its effects are sent;
        // anywhere else, once applied.
        RoomCmd::Acked(cmd, pending) => {
            apply(room, *cmd, replies);
            pending.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

fn apply_msg(room: &mut Room, pid: ParticipantId, conn: &Conn, msg: ClientMessage) {
    // A connection the room no longer counts as its member's (taken for lost with its
    // node, or replaced): told to reconnect, rather than ignored.
    if !room.is_current(pid, conn.id) {
        room.tell_to_rejoin(conn);
        return;
    }
    match msg {
        ClientMessage::Admit { participant_id } => room.admit(pid, conn, participant_id),
        ClientMessage::Deny { participant_id } => room.deny(pid, conn, participant_id),
        ClientMessage::Notice {
            participant_id,
            text,
        } => room.notice(pid, conn, participant_id, text),
        ClientMessage::Signal {
            to,
            description,
            candidate,
        } => room.signal(pid, conn, to, description, candidate),
        ClientMessage::Stats(s) => room.stats(pid, conn, s),
        ClientMessage::Leave => room.leave(pid, conn),
        ClientMessage::End => room.end(pid, conn),
        ClientMessage::Hello { .. } => {}
    }
}

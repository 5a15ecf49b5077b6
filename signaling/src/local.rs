//! [`LocalRouter`]: the rooms of one node, each owned by one task in this process.
//!
//! A room's task takes commands in order from a bounded channel, records what happened,
//! then puts what to send in each connection's bounded outbox; a connection that cannot
//! keep up is stopped rather than buffered forever.

use crate::{
    EventSink, JoinGrant, SessionEvent, SignalingConfig,
    room::{ConnSink, Effect, Joined, Room, RoomSnapshot},
    router::{
        JoinCmd, JoinFailure, JoinRequest, LocalLink, Relay, Reply, RoomCmd, RoomLink, RoomTx,
        Router, apply,
    },
};
use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::oneshot;
use uuid::Uuid;

struct RoomEntry {
    tx: RoomTx,
    relay: Arc<Relay>,
    generation: u64,
}

struct Inner {
    cfg: SignalingConfig,
    sink: Arc<dyn EventSink>,
    // A std mutex: held for a map lookup, never across an await.
    rooms: Mutex<HashMap<Uuid, RoomEntry>>,
    /// When an appointment's room was ended from outside (cancelled, moved), and when an
    /// account was taken off one: a join verified before that moment is refused, so that a
    /// hello racing the change cannot reopen the room or bring the account back.
    closed: Mutex<HashMap<(Uuid, Option<Uuid>), Instant>>,
    next_generation: AtomicU64,
}

/// How long closure marks are kept: longer than any join token lives.
const CLOSED_MARK_KEEP: Duration = Duration::from_secs(3600);

/// Commands a room can have queued before senders wait.
const ROOM_QUEUE: usize = 256;

/// The rooms of this process; see the module docs.
#[derive(Clone)]
pub struct LocalRouter {
    inner: Arc<Inner>,
}

impl LocalRouter {
    pub fn new(cfg: SignalingConfig, sink: Arc<dyn EventSink>) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                sink,
                rooms: Mutex::new(HashMap::new()),
                closed: Mutex::new(HashMap::new()),
                next_generation: AtomicU64::new(1),
            }),
        }
    }

    /// Carry on the rooms this node handed over when it last stopped (see
    /// [`EventSink::hand_over`]): their members are reconnecting until their grace periods
    /// end, and resume with their resume tokens as after any dropped connection.
    pub async fn restore(&self, saved: Vec<RoomSnapshot>) {
        let now = Instant::now();
        for snap in saved {
            let room = Room::restore(snap, &self.inner.cfg, now, |_| None);
            let (appointment_id, session_id) = (room.appointment_id, room.session_id);
            let (tx, rx) = flume::bounded(ROOM_QUEUE);
            let relay = Arc::new(Relay::new(room.relay_max_queued()));
            let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
            self.inner.rooms.lock().expect("rooms lock").insert(
                appointment_id,
                RoomEntry {
                    tx,
                    relay: relay.clone(),
                    generation,
                },
            );
            self.inner.sink.adopted(session_id, appointment_id).await;
            tracing::info!(%appointment_id, %session_id, "session room carried on after a restart");
            tokio::spawn(run_room(room, rx, relay, self.inner.clone(), generation));
        }
    }

    fn room_tx(&self, appointment_id: Uuid) -> Option<RoomTx> {
        self.inner
            .rooms
            .lock()
            .expect("rooms lock")
            .get(&appointment_id)
            .map(|e| e.tx.clone())
    }

    fn mark_closed(&self, appointment_id: Uuid, user: Option<Uuid>) {
        let mut closed = self.inner.closed.lock().expect("closed lock");
        closed.retain(|_, at| at.elapsed() < CLOSED_MARK_KEEP);
        closed.insert((appointment_id, user), Instant::now());
    }

    /// Whether a grant verified at `verified` predates a closure of its room or account.
    fn closed_since(&self, grant: &JoinGrant, verified: Instant) -> bool {
        let closed = self.inner.closed.lock().expect("closed lock");
        [None, Some(grant.user_id)].into_iter().any(|user| {
            closed
                .get(&(grant.appointment_id, user))
                .is_some_and(|at| *at >= verified)
        })
    }

    /// The appointment's room, started if none is open; `None` when the grant (verified at
    /// `verified`) predates the room's closure. The check is made under the rooms lock, and
    /// `end_room` marks the closure before it looks for the room, so a join racing a cancel
    /// either sees the mark or reaches a room that the cancel then ends.
    fn room_for(&self, grant: &JoinGrant, verified: Instant) -> Option<LocalLink> {
        let mut rooms = self.inner.rooms.lock().expect("rooms lock");
        if self.closed_since(grant, verified) {
            return None;
        }
        if let Some(e) = rooms.get(&grant.appointment_id)
            && !e.tx.is_disconnected()
        {
            return Some(LocalLink::with_relay(e.tx.clone(), e.relay.clone()));
        }
        let (tx, rx) = flume::bounded(ROOM_QUEUE);
        let generation = self.inner.next_generation.fetch_add(1, Ordering::Relaxed);
        let room = Room::new(grant, &self.inner.cfg, Instant::now());
        let relay = Arc::new(Relay::new(room.relay_max_queued()));
        rooms.insert(
            grant.appointment_id,
            RoomEntry {
                tx: tx.clone(),
                relay: relay.clone(),
                generation,
            },
        );
        tokio::spawn(run_room(
            room,
            rx,
            relay.clone(),
            self.inner.clone(),
            generation,
        ));
        Some(LocalLink::with_relay(tx, relay))
    }
}

#[async_trait::async_trait]
impl Router for LocalRouter {
    async fn join(&self, req: JoinRequest) -> Result<(RoomLink, Joined), JoinFailure> {
        // Twice: the room may finish between lookup and join; the second try opens anew.
        for _ in 0..2 {
            let link = self
                .room_for(&req.grant, req.verified)
                .ok_or(JoinFailure::Closed)?;
            let (reply, answer) = oneshot::channel();
            let cmd = Box::new(RoomCmd::Join(JoinCmd {
                grant: req.grant.clone(),
                conn: req.conn.clone(),
                resume: req.resume,
                reset: req.reset,
                reply: Reply::Local(reply),
            }));
            if link.tx.send_async(cmd).await.is_err() {
                continue;
            }
            if let Ok(joined) = answer.await {
                return Ok((RoomLink::Local(link), joined));
            }
        }
        Err(JoinFailure::Closed)
    }

    async fn relink(&self, _appointment_id: Uuid) -> Option<RoomLink> {
        // One node: a room whose task has gone is over.
        None
    }

    async fn end_room(&self, appointment_id: Uuid, reason: &str) {
        self.mark_closed(appointment_id, None);
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx
                .send_async(Box::new(RoomCmd::Finish(reason.to_owned())))
                .await;
        }
    }

    async fn set_auto_admit(&self, appointment_id: Uuid, on: bool) {
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx.send_async(Box::new(RoomCmd::SetAutoAdmit(on))).await;
        }
    }

    async fn remove_account(&self, appointment_id: Uuid, user_id: Uuid) {
        self.mark_closed(appointment_id, Some(user_id));
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx.send_async(Box::new(RoomCmd::Remove(user_id))).await;
        }
    }

    /// Hand every room over to the next start of this node (through the sink), without
    /// ending it: each room records what is pending, gives its state and stops.
    async fn shutdown(&self) {
        let txs: Vec<_> = self
            .inner
            .rooms
            .lock()
            .expect("rooms lock")
            .values()
            .map(|e| e.tx.clone())
            .collect();
        let mut saved = Vec::with_capacity(txs.len());
        for tx in txs {
            let (reply, answer) = oneshot::channel();
            if tx
                .send_async(Box::new(RoomCmd::Handover(reply)))
                .await
                .is_ok()
                && let Ok(Ok(snap)) = tokio::time::timeout(Duration::from_secs(5), answer).await
            {
                saved.push(snap);
            }
        }
        let n = saved.len();
        self.inner.sink.hand_over(saved).await;
        if n > 0 {
            tracing::info!(rooms = n, "session rooms handed over to the next start");
        }
    }

    fn room_count(&self) -> usize {
        self.inner.rooms.lock().expect("rooms lock").len()
    }
}

/// Record a room's pending events, in order, before anything they caused is sent: nothing
/// is announced that the record could lose.
pub(crate) async fn record_events(room: &mut Room, sink: &dyn EventSink) {
    let (appointment_id, session_id) = (room.appointment_id, room.session_id);
    for kind in room.take_events() {
        sink.record(SessionEvent {
            session_id,
            appointment_id,
            at: jiff::Timestamp::now(),
            kind,
        })
        .await;
    }
}

/// The room's task: apply commands in order, fire timers, record events, then send.
async fn run_room(
    mut room: Room,
    rx: flume::Receiver<Box<RoomCmd>>,
    relay: Arc<Relay>,
    inner: Arc<Inner>,
    generation: u64,
) {
    let appointment_id = room.appointment_id;
    let session_id = room.session_id;
    tracing::info!(%appointment_id, %session_id, "session room opened");
    // However this task ends (closed, handed over, or a panic), nobody relays signals
    // through the room's table any more.
    struct Withdraw(Arc<Relay>);
    impl Drop for Withdraw {
        fn drop(&mut self) {
            self.0.publish(Vec::new());
        }
    }
    let _withdraw = Withdraw(relay.clone());
    loop {
        let deadline = tokio::time::Instant::from_std(room.next_deadline());
        let mut replies = Vec::new();
        let mut handover = None;
        let mut ack = None;
        tokio::select! {
            cmd = rx.recv_async() => match cmd {
                Ok(cmd) => match *cmd {
                    RoomCmd::Handover(reply) => handover = Some(reply),
                    RoomCmd::Acked(cmd, pending) => {
                        ack = Some(pending);
                        apply(&mut room, *cmd, &mut replies);
                    }
                    cmd => apply(&mut room, cmd, &mut replies),
                },
                Err(flume::RecvError::Disconnected) => room.finish("server_shutdown"),
            },
            _ = tokio::time::sleep_until(deadline) => room.tick(Instant::now()),
        }
        if let Some(reply) = handover {
            relay.publish(Vec::new());
            record_events(&mut room, inner.sink.as_ref()).await;
            let _ = reply.send(room.snapshot("local", Instant::now()));
            tracing::info!(%appointment_id, %session_id, "session room handed over");
            break;
        }
        // Who left, was replaced or was removed stops being reachable the short way at
        // once, before anything the command caused is recorded or sent; who came in is
        // added only after (below).
        let peers = room.relay_peers();
        relay.withdraw(&peers);
        record_events(&mut room, inner.sink.as_ref()).await;
        for Effect::Send(conn, out) in room.take_effects() {
            // One node holds only local connections.
            if let ConnSink::Local { tx, kill } = &conn.sink {
                match tx.try_send(out) {
                    Ok(()) => {}
                    Err(flume::TrySendError::Full(_)) => kill.notify_one(),
                    Err(flume::TrySendError::Disconnected(_)) => {}
                }
            }
        }
        for (reply, _, joined) in replies {
            // One node: every join waits here.
            if let Reply::Local(reply) = reply {
                let _ = reply.send(joined);
            }
        }
        // Only now, with everything the command caused on its way: who can relay signals
        // without the room, and that this connection's command is done.
        relay.publish(peers);
        if let Some(pending) = ack {
            pending.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(f) = room.finished() {
            tracing::info!(%appointment_id, %session_id, reason = ?f, "session room closed");
            break;
        }
    }
    let mut rooms = inner.rooms.lock().expect("rooms lock");
    if rooms
        .get(&appointment_id)
        .is_some_and(|e| e.generation == generation)
    {
        rooms.remove(&appointment_id);
    }
}

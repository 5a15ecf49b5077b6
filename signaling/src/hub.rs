//! The rooms of this node and the per-connection loop.
//!
//! Each room is owned by one task that takes commands in order from a bounded channel,
//! so a room's state changes in one place. Each connection is one task that alone writes
//! to its socket: it reads and checks what the peer sends, forwards it to the room, and
//! writes what the room puts in its bounded outbox. A peer too slow to drain its outbox is
//! disconnected rather than buffered forever.

use crate::{
    EventSink, JoinGrant, JoinRefusal, JoinVerifier, SessionEvent, SignalingConfig,
    protocol::{ClientMessage, ErrorCode, ParticipantId, ServerMessage, close},
    room::{Conn, Effect, Joined, Outbound, Room},
    validate,
};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use std::{
    collections::HashMap,
    fmt::Display,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

/// A WebSocket frame as the connection loop sees it; the server maps its WebSocket type to
/// this (and tests use plain channels).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    Close(Option<(u16, String)>),
    /// A frame over the size limit arrived (the socket layer refused it).
    TooBig,
}

/// A command for a room's task. Commands travel boxed ([`RoomTx`]): a channel's buffer keeps
/// the capacity it grew to for the room's whole life, so its slots are kept pointer-sized
/// (see the footprint benchmark).
enum RoomCmd {
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
}

type RoomTx = flume::Sender<Box<RoomCmd>>;

struct JoinCmd {
    grant: JoinGrant,
    conn: Conn,
    resume_token: Option<String>,
    reset: bool,
    reply: oneshot::Sender<Joined>,
}

struct RoomEntry {
    tx: RoomTx,
    generation: u64,
}

struct Inner {
    cfg: SignalingConfig,
    verifier: Arc<dyn JoinVerifier>,
    sink: Arc<dyn EventSink>,
    // A std mutex: held for a map lookup, never across an await.
    rooms: Mutex<HashMap<Uuid, RoomEntry>>,
    /// When an appointment's room was ended from outside (cancelled, moved), and when an
    /// account was taken off one: a join verified before that moment is refused, so that a
    /// hello racing the change cannot reopen the room or bring the account back.
    closed: Mutex<HashMap<(Uuid, Option<Uuid>), Instant>>,
    next_id: AtomicU64,
}

/// How long closure marks are kept: longer than any join token lives.
const CLOSED_MARK_KEEP: Duration = Duration::from_secs(3600);

/// The signalling service of this node.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("rooms", &self.room_count())
            .finish()
    }
}

/// Commands a room can have queued before senders wait.
const ROOM_QUEUE: usize = 256;

impl Hub {
    pub fn new(
        cfg: SignalingConfig,
        verifier: Arc<dyn JoinVerifier>,
        sink: Arc<dyn EventSink>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                cfg,
                verifier,
                sink,
                rooms: Mutex::new(HashMap::new()),
                closed: Mutex::new(HashMap::new()),
                next_id: AtomicU64::new(1),
            }),
        }
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.inner.cfg
    }

    /// Rooms open on this node.
    pub fn room_count(&self) -> usize {
        self.inner.rooms.lock().expect("rooms lock").len()
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

    /// End an appointment's live room (it was cancelled or moved): everyone gets `ended`.
    pub async fn end_room(&self, appointment_id: Uuid, reason: &str) {
        self.mark_closed(appointment_id, None);
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx
                .send_async(Box::new(RoomCmd::Finish(reason.to_owned())))
                .await;
        }
    }

    /// Apply a change of the appointment's auto-admit setting to its live room.
    pub async fn set_auto_admit(&self, appointment_id: Uuid, on: bool) {
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx.send_async(Box::new(RoomCmd::SetAutoAdmit(on))).await;
        }
    }

    /// Take an account out of an appointment's live room (it no longer takes part).
    pub async fn remove_account(&self, appointment_id: Uuid, user_id: Uuid) {
        self.mark_closed(appointment_id, Some(user_id));
        if let Some(tx) = self.room_tx(appointment_id) {
            let _ = tx.send_async(Box::new(RoomCmd::Remove(user_id))).await;
        }
    }

    /// End every room (the server is stopping), and wait (up to 5 s) until each has
    /// recorded its end.
    pub async fn shutdown(&self) {
        let txs: Vec<_> = self
            .inner
            .rooms
            .lock()
            .expect("rooms lock")
            .values()
            .map(|e| e.tx.clone())
            .collect();
        for tx in txs {
            let _ = tx
                .send_async(Box::new(RoomCmd::Finish("server_shutdown".into())))
                .await;
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.room_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The appointment's room, started if none is open; `None` when the grant (verified at
    /// `verified`) predates the room's closure. The check is made under the rooms lock, and
    /// `end_room` marks the closure before it looks for the room, so a join racing a cancel
    /// either sees the mark or reaches a room that the cancel then ends.
    fn room_for(&self, grant: &JoinGrant, verified: Instant) -> Option<RoomTx> {
        let mut rooms = self.inner.rooms.lock().expect("rooms lock");
        if self.closed_since(grant, verified) {
            return None;
        }
        if let Some(e) = rooms.get(&grant.appointment_id)
            && !e.tx.is_disconnected()
        {
            return Some(e.tx.clone());
        }
        let (tx, rx) = flume::bounded(ROOM_QUEUE);
        let generation = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let room = Room::new(grant, &self.inner.cfg, Instant::now());
        rooms.insert(
            grant.appointment_id,
            RoomEntry {
                tx: tx.clone(),
                generation,
            },
        );
        tokio::spawn(run_room(room, rx, self.inner.clone(), generation));
        Some(tx)
    }

    async fn join(
        &self,
        grant: &JoinGrant,
        verified: Instant,
        conn: &Conn,
        resume_token: Option<String>,
        reset: bool,
    ) -> Option<(RoomTx, Joined)> {
        // Twice: the room may finish between lookup and join; the second try opens anew.
        for _ in 0..2 {
            let tx = self.room_for(grant, verified)?;
            let (reply, answer) = oneshot::channel();
            let cmd = Box::new(RoomCmd::Join(JoinCmd {
                grant: grant.clone(),
                conn: conn.clone(),
                resume_token: resume_token.clone(),
                reset,
                reply,
            }));
            if tx.send_async(cmd).await.is_err() {
                continue;
            }
            if let Ok(joined) = answer.await {
                return Some((tx, joined));
            }
        }
        None
    }

    /// Serve one WebSocket connection until it closes.
    pub async fn serve<S, E>(&self, mut ws: S)
    where
        S: Stream<Item = Frame> + Sink<Frame, Error = E> + Unpin + Send,
        E: Display,
    {
        let cfg = self.inner.cfg.clone();
        let mut limiter = Limiter::new(&cfg);
        let Some((token, resume_token, reset)) =
            Box::pin(self.await_hello(&mut ws, &mut limiter)).await
        else {
            linger(&mut ws).await;
            return;
        };
        let verified = Instant::now();
        let grant = match self.inner.verifier.verify(&token).await {
            Ok(g) => g,
            Err(JoinRefusal::InvalidToken(why)) => {
                refuse(
                    &mut ws,
                    &cfg,
                    ErrorCode::InvalidToken,
                    why,
                    close::INVALID_TOKEN,
                )
                .await;
                linger(&mut ws).await;
                return;
            }
            Err(JoinRefusal::NotJoinable(why)) => {
                refuse(
                    &mut ws,
                    &cfg,
                    ErrorCode::NotJoinable,
                    why,
                    close::NOT_JOINABLE,
                )
                .await;
                linger(&mut ws).await;
                return;
            }
            Err(JoinRefusal::Denied(why)) => {
                refuse(&mut ws, &cfg, ErrorCode::Denied, why, close::DENIED).await;
                linger(&mut ws).await;
                return;
            }
        };
        let (tx, rx) = flume::bounded(cfg.outbox);
        let kill = Arc::new(Notify::new());
        let conn = Conn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            tx,
            kill: kill.clone(),
        };
        // Boxed, like the other one-off steps here: the connection's future is held for as
        // long as the connection lives, so rarely-active parts stay off its inline size.
        let Some((room, joined)) =
            Box::pin(self.join(&grant, verified, &conn, resume_token, reset)).await
        else {
            refuse(
                &mut ws,
                &cfg,
                ErrorCode::NotJoinable,
                "the session has ended".into(),
                close::NOT_JOINABLE,
            )
            .await;
            linger(&mut ws).await;
            return;
        };
        let pid = joined.participant_id;
        tracing::debug!(appointment_id = %grant.appointment_id, participant_id = %pid, "signalling connection joined");
        // Only these outlive the join: the grant's strings are freed for the idle hours.
        let user_id = grant.user_id;
        let ice_expires = grant.ice.expires_at;
        drop(grant);

        let mut last_seen = Instant::now();
        // One timer for both periodic duties (a ping, and fresh TURN credentials before the
        // old ones expire): each armed timer costs the idle connection memory.
        let start = tokio::time::Instant::now();
        let mut next_ping = start + cfg.ping_interval;
        let mut next_refresh =
            ice_expires.map(|at| start + refresh_delay(at, cfg.ice_refresh_margin));
        let timer = tokio::time::sleep_until(earliest(next_ping, next_refresh));
        tokio::pin!(timer);

        loop {
            tokio::select! {
                biased;
                _ = kill.notified() => {
                    let _ = send(&mut ws, &cfg, Frame::Close(Some((close::SLOW_CONSUMER, "slow consumer".into())))).await;
                    break;
                }
                out = rx.recv_async() => match out {
                    Ok(Outbound::Text(t)) => {
                        if send(&mut ws, &cfg, Frame::Text(t.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Ok(Outbound::Close(why)) => {
                        let _ = send(&mut ws, &cfg, Frame::Close(Some((why.code(), why.reason().into())))).await;
                        break;
                    }
                    Err(_) => break,
                },
                frame = ws.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Frame::Text(t)) => {
                            match Box::pin(self.handle(&t, &mut limiter, pid, &conn, &room, &mut ws)).await {
                                Ok(()) => {}
                                Err(code) => {
                                    let _ = send(&mut ws, &cfg, Frame::Close(Some((code, "closed".into())))).await;
                                    break;
                                }
                            }
                        }
                        Some(Frame::Binary(b)) => {
                            // Counted like any message: a flood of them is closed the same way.
                            if !limiter.allow(b.len()) {
                                refuse(&mut ws, &cfg, ErrorCode::RateLimited, "too many messages".into(), close::RATE_LIMITED).await;
                                break;
                            }
                            let _ = send_error(&mut ws, &cfg, ErrorCode::MalformedMessage, "binary frames are not used").await;
                        }
                        Some(Frame::Ping(b) | Frame::Pong(b)) => {
                            // Control frames cost a pong (or a wake-up) each: they count too.
                            if !limiter.allow(b.len()) {
                                refuse(&mut ws, &cfg, ErrorCode::RateLimited, "too many messages".into(), close::RATE_LIMITED).await;
                                break;
                            }
                        }
                        Some(Frame::TooBig) => {
                            let _ = send(&mut ws, &cfg, Frame::Close(Some((close::TOO_BIG, "message too big".into())))).await;
                            break;
                        }
                        Some(Frame::Close(_)) | None => break,
                    }
                }
                () = &mut timer => {
                    let now = tokio::time::Instant::now();
                    if now >= next_ping {
                        next_ping = now + cfg.ping_interval;
                        if last_seen.elapsed() > cfg.idle_timeout {
                            let _ = send(&mut ws, &cfg, Frame::Close(Some((close::DEAD, "no answer".into())))).await;
                            break;
                        }
                        if send(&mut ws, &cfg, Frame::Ping(Vec::new())).await.is_err() {
                            break;
                        }
                    }
                    if next_refresh.is_some_and(|at| now >= at) {
                        let ice = self.inner.verifier.refresh_ice(user_id).await;
                        next_refresh = ice.expires_at.map(|at| {
                            tokio::time::Instant::now() + refresh_delay(at, cfg.ice_refresh_margin)
                        });
                        let msg = ServerMessage::IceServers {
                            ice_servers: ice.ice_servers,
                            ice_transport_policy: ice.ice_transport_policy,
                        };
                        if send_msg(&mut ws, &cfg, &msg).await.is_err() {
                            break;
                        }
                    }
                    timer.as_mut().reset(earliest(next_ping, next_refresh));
                }
            }
        }
        linger(&mut ws).await;
        // The room ignores this when the connection was replaced or has left.
        let _ = room
            .send_async(Box::new(RoomCmd::Disconnected {
                pid,
                conn_id: conn.id,
            }))
            .await;
    }

    /// Wait for `hello`, answering anything else with an error, until the hello timeout.
    async fn await_hello<S, E>(
        &self,
        ws: &mut S,
        limiter: &mut Limiter,
    ) -> Option<(String, Option<String>, bool)>
    where
        S: Stream<Item = Frame> + Sink<Frame, Error = E> + Unpin + Send,
        E: Display,
    {
        let cfg = &self.inner.cfg;
        let deadline = tokio::time::Instant::now() + cfg.hello_timeout;
        loop {
            let frame = match tokio::time::timeout_at(deadline, ws.next()).await {
                Err(_) => {
                    let _ = send(
                        ws,
                        cfg,
                        Frame::Close(Some((close::HELLO_TIMEOUT, "no hello".into()))),
                    )
                    .await;
                    return None;
                }
                Ok(None) | Ok(Some(Frame::Close(_))) => return None,
                Ok(Some(f)) => f,
            };
            let size = match &frame {
                Frame::Text(t) => Some(t.len()),
                Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => Some(b.len()),
                Frame::Close(_) | Frame::TooBig => None,
            };
            if size.is_some_and(|n| !limiter.allow(n)) {
                refuse(
                    ws,
                    cfg,
                    ErrorCode::RateLimited,
                    "too many messages".into(),
                    close::RATE_LIMITED,
                )
                .await;
                return None;
            }
            match frame {
                Frame::Text(t) => match parse(&t) {
                    Ok(ClientMessage::Hello {
                        token,
                        resume_token,
                        reset,
                    }) => return Some((token, resume_token, reset)),
                    Ok(_) => {
                        let _ = send_error(
                            ws,
                            cfg,
                            ErrorCode::HelloRequired,
                            "send hello with your join token first",
                        )
                        .await;
                    }
                    Err((code, msg)) => {
                        let _ = send_error(ws, cfg, code, msg).await;
                    }
                },
                Frame::TooBig => {
                    let _ = send(
                        ws,
                        cfg,
                        Frame::Close(Some((close::TOO_BIG, "message too big".into()))),
                    )
                    .await;
                    return None;
                }
                _ => {}
            }
        }
    }

    /// One text frame from an admitted connection: check it, then hand it to the room.
    /// `Err(close code)` ends the connection.
    async fn handle<S, E>(
        &self,
        text: &str,
        limiter: &mut Limiter,
        pid: ParticipantId,
        conn: &Conn,
        room: &RoomTx,
        ws: &mut S,
    ) -> Result<(), u16>
    where
        S: Stream<Item = Frame> + Sink<Frame, Error = E> + Unpin + Send,
        E: Display,
    {
        let cfg = &self.inner.cfg;
        if !limiter.allow(text.len()) {
            let _ = send_error(ws, cfg, ErrorCode::RateLimited, "too many messages").await;
            return Err(close::RATE_LIMITED);
        }
        let msg = match parse(text) {
            Ok(m) => m,
            Err((code, message)) => {
                let _ = send_error(ws, cfg, code, message).await;
                return Ok(());
            }
        };
        let checked = match &msg {
            ClientMessage::Hello { .. } => {
                Err((ErrorCode::HelloRequired, "hello was already sent".into()))
            }
            ClientMessage::Signal {
                description,
                candidate,
                ..
            } => match (description, candidate) {
                (Some(d), None) => validate::description(d, cfg),
                (None, Some(c)) => validate::candidate(c, cfg),
                _ => Err((
                    ErrorCode::InvalidSignal,
                    "a signal carries either a description or a candidate".into(),
                )),
            },
            ClientMessage::Stats(s) => validate::stats(s),
            ClientMessage::Notice { text, .. } => validate::notice(text),
            _ => Ok(()),
        };
        if let Err((code, message)) = checked {
            let _ = send_error(ws, cfg, code, message).await;
            return Ok(());
        }
        let cmd = Box::new(RoomCmd::Msg {
            pid,
            conn: conn.clone(),
            msg,
        });
        if room.send_async(cmd).await.is_err() {
            let _ = send_msg(
                ws,
                cfg,
                &ServerMessage::Ended {
                    reason: "ended".into(),
                },
            )
            .await;
            return Err(close::ENDED);
        }
        Ok(())
    }
}

/// After the server closes a socket, read and drop what the peer still sends, briefly, until
/// it answers the close. Dropping a socket with unread data makes the kernel send a reset,
/// and the peer would then see a broken connection instead of the close code and the
/// error before it (the case after a flood or an oversized frame).
async fn linger<S: Stream<Item = Frame> + Unpin>(ws: &mut S) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, ws.next()).await {
        if matches!(f, Frame::Close(_)) {
            break;
        }
    }
}

/// The sooner of a deadline and an optional one.
fn earliest(a: tokio::time::Instant, b: Option<tokio::time::Instant>) -> tokio::time::Instant {
    b.map_or(a, |b| a.min(b))
}

/// When to refresh ICE credentials that expire at `expires` (unix seconds).
fn refresh_delay(expires: i64, margin: Duration) -> Duration {
    let left = (expires - jiff::Timestamp::now().as_second()).max(0) as u64;
    let left = Duration::from_secs(left);
    // A margin larger than half the lifetime would refresh in a loop: take half then.
    left.saturating_sub(margin.min(left / 2))
        .max(Duration::from_secs(1))
}

/// Known message types, to tell an unknown `type` from a malformed known one.
const TYPES: &[&str] = &[
    "hello", "admit", "deny", "notice", "signal", "stats", "leave", "end",
];

/// Parse a text frame into a message, or say why not.
fn parse(text: &str) -> Result<ClientMessage, validate::Refusal> {
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| (ErrorCode::MalformedMessage, "not a JSON object".to_owned()))?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err((
            ErrorCode::MalformedMessage,
            "a message needs a string `type`".into(),
        ));
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err((
            ErrorCode::UnknownType,
            format!("unknown message type {kind:?}"),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        (
            ErrorCode::MalformedMessage,
            format!("bad {kind} message: {e}"),
        )
    })
}

async fn send<S, E>(ws: &mut S, cfg: &SignalingConfig, frame: Frame) -> Result<(), ()>
where
    S: Sink<Frame, Error = E> + Unpin,
    E: Display,
{
    match tokio::time::timeout(cfg.write_timeout, ws.send(frame)).await {
        Ok(Ok(())) => Ok(()),
        _ => Err(()),
    }
}

async fn send_msg<S, E>(ws: &mut S, cfg: &SignalingConfig, msg: &ServerMessage) -> Result<(), ()>
where
    S: Sink<Frame, Error = E> + Unpin,
    E: Display,
{
    let text = serde_json::to_string(msg).expect("server messages serialise");
    send(ws, cfg, Frame::Text(text)).await
}

async fn send_error<S, E>(
    ws: &mut S,
    cfg: &SignalingConfig,
    code: ErrorCode,
    message: impl Into<String>,
) -> Result<(), ()>
where
    S: Sink<Frame, Error = E> + Unpin,
    E: Display,
{
    send_msg(
        ws,
        cfg,
        &ServerMessage::Error {
            code,
            message: message.into(),
        },
    )
    .await
}

/// Send an error, then close with `code`.
async fn refuse<S, E>(ws: &mut S, cfg: &SignalingConfig, err: ErrorCode, message: String, code: u16)
where
    S: Sink<Frame, Error = E> + Unpin,
    E: Display,
{
    let _ = send_error(ws, cfg, err, message).await;
    let _ = send(ws, cfg, Frame::Close(Some((code, err.as_str().into())))).await;
}

/// The room's task: apply commands in order, fire timers, record events, then send.
async fn run_room(
    mut room: Room,
    rx: flume::Receiver<Box<RoomCmd>>,
    inner: Arc<Inner>,
    generation: u64,
) {
    let appointment_id = room.appointment_id;
    let session_id = room.session_id;
    tracing::info!(%appointment_id, %session_id, "session room opened");
    loop {
        let deadline = tokio::time::Instant::from_std(room.next_deadline());
        let mut replies = Vec::new();
        tokio::select! {
            cmd = rx.recv_async() => match cmd {
                Ok(cmd) => apply(&mut room, *cmd, &mut replies),
                Err(flume::RecvError::Disconnected) => room.finish("server_shutdown"),
            },
            _ = tokio::time::sleep_until(deadline) => room.tick(Instant::now()),
        }
        // Record first: nothing is announced that the record could lose.
        for kind in room.take_events() {
            inner
                .sink
                .record(SessionEvent {
                    session_id,
                    appointment_id,
                    at: jiff::Timestamp::now(),
                    kind,
                })
                .await;
        }
        for Effect::Send(conn, out) in room.take_effects() {
            match conn.tx.try_send(out) {
                Ok(()) => {}
                Err(flume::TrySendError::Full(_)) => conn.kill.notify_one(),
                Err(flume::TrySendError::Disconnected(_)) => {}
            }
        }
        for (reply, joined) in replies {
            let _ = reply.send(joined);
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

fn apply(room: &mut Room, cmd: RoomCmd, replies: &mut Vec<(oneshot::Sender<Joined>, Joined)>) {
    match cmd {
        RoomCmd::Join(j) => {
            let JoinCmd {
                grant,
                conn,
                resume_token,
                reset,
                reply,
            } = j;
            let joined = room.join(&grant, conn, resume_token.as_deref(), reset);
            replies.push((reply, joined));
        }
        RoomCmd::Msg { pid, conn, msg } => apply_msg(room, pid, &conn, msg),
        RoomCmd::Disconnected { pid, conn_id } => room.disconnected(pid, conn_id, Instant::now()),
        RoomCmd::SetAutoAdmit(on) => room.set_auto_admit(on),
        RoomCmd::Remove(user_id) => room.remove_account(user_id),
        RoomCmd::Finish(reason) => room.finish(&reason),
    }
}

fn apply_msg(room: &mut Room, pid: ParticipantId, conn: &Conn, msg: ClientMessage) {
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

/// What one connection may send: messages and bytes, each a token bucket. Charged before
/// anything is parsed or relayed.
struct Limiter {
    messages: RateLimiter,
    bytes: RateLimiter,
}

impl Limiter {
    fn new(cfg: &SignalingConfig) -> Self {
        Self {
            messages: RateLimiter::new(cfg.rate_burst, cfg.rate_per_sec),
            bytes: RateLimiter::new(cfg.rate_burst_bytes, cfg.rate_bytes_per_sec),
        }
    }

    /// Whether a frame of `len` bytes may pass (both budgets are charged).
    fn allow(&mut self, len: usize) -> bool {
        let message = self.messages.allow_n(1.0);
        let bytes = self.bytes.allow_n(len as f64);
        message && bytes
    }
}

/// A token bucket: `burst` at once, `per_sec` sustained.
struct RateLimiter {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    last: Instant,
}

impl RateLimiter {
    fn new(burst: u32, per_sec: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            burst: f64::from(burst),
            per_sec: f64::from(per_sec),
            last: Instant::now(),
        }
    }

    fn allow_n(&mut self, n: f64) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.last = now;
        if self.tokens >= n {
            self.tokens -= n;
            true
        } else {
            false
        }
    }
}

//! The per-connection loop, and [`Hub`], the signalling service of a node.
//!
//! Each connection is one task that alone writes to its socket: it reads and checks what the
//! peer sends, forwards it to the room through the [`Router`] (rooms of this process, or of a
//! cluster), and writes what the room puts in its bounded outbox. A peer too slow to drain
//! its outbox is disconnected rather than buffered forever.

use crate::{
    EventSink, JoinRefusal, JoinVerifier, SignIns, SignalingConfig,
    local::LocalRouter,
    protocol::{ClientMessage, ErrorCode, ParticipantId, ServerMessage, close},
    room::{Closing, Conn, Outbound, resume_hash},
    router::{JoinFailure, JoinRequest, LinkError, RoomLink, Router},
    validate,
};
use futures_util::{Sink, SinkExt as _, Stream, StreamExt as _};
use std::{
    collections::HashMap,
    fmt::Display,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;
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

struct Inner {
    cfg: SignalingConfig,
    verifier: Arc<dyn JoinVerifier>,
    router: Arc<dyn Router>,
    /// Set when the node starts draining: every connection is told to reconnect.
    draining: tokio::sync::watch::Sender<bool>,
    /// Connections being served now.
    live: AtomicUsize,
    /// Whose connections these are, for live revocation.
    accounts: Mutex<Accounts>,
}

/// How long a revocation is remembered for connections whose join was being verified when
/// it came (their check may have read the sign-in before it ended).
const RECENT_REVOCATION: Duration = Duration::from_secs(60);

/// A connection in a room, as revocation finds it.
struct Registered {
    user_id: Uuid,
    sign_in: Option<Uuid>,
    tx: flume::Sender<Outbound>,
    kill: Arc<Notify>,
}

/// The connections of this node by account, and the revocations of the last minute.
#[derive(Default)]
struct Accounts {
    /// By connection id: one entry each (a revocation, rare, looks through them all).
    conns: HashMap<u64, Registered>,
    /// (account, which sign-ins, when).
    recent: Vec<(Uuid, SignIns, Instant)>,
}

impl Inner {
    /// Close this node's connections of `user_id` from `sign_ins`.
    fn revoke_local(&self, user_id: Uuid, sign_ins: SignIns) -> usize {
        let now = Instant::now();
        let hit: Vec<Registered> = {
            let mut a = self.accounts.lock().expect("accounts lock");
            a.recent
                .retain(|(_, _, at)| now.duration_since(*at) < RECENT_REVOCATION);
            a.recent.push((user_id, sign_ins, now));
            let ids: Vec<u64> = a
                .conns
                .iter()
                .filter(|(_, r)| r.user_id == user_id && sign_ins.include(r.sign_in))
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| a.conns.remove(id)).collect()
        };
        let n = hit.len();
        for r in hit {
            close_signed_out(r.tx, r.kill);
        }
        n
    }

    /// Note a connection that has joined its room; it is closed at once if its account
    /// was revoked after its join token was checked.
    fn register(&self, conn_id: u64, r: Registered, verified: Instant) {
        let mut a = self.accounts.lock().expect("accounts lock");
        let revoked = a
            .recent
            .iter()
            .any(|(u, s, at)| *u == r.user_id && s.include(r.sign_in) && *at >= verified);
        if revoked {
            drop(a);
            close_signed_out(r.tx, r.kill);
        } else {
            a.conns.insert(conn_id, r);
        }
    }

    fn unregister(&self, conn_id: u64) {
        self.accounts
            .lock()
            .expect("accounts lock")
            .conns
            .remove(&conn_id);
    }
}

/// Tell a connection's loop that its sign-in ended; if its outbox stays full, stop it.
fn close_signed_out(tx: flume::Sender<Outbound>, kill: Arc<Notify>) {
    match tx.try_send(Outbound::Close(Closing::SignedOut)) {
        Ok(()) | Err(flume::TrySendError::Disconnected(_)) => {}
        Err(flume::TrySendError::Full(out)) => {
            tokio::spawn(async move {
                if tokio::time::timeout(Duration::from_secs(2), tx.send_async(out))
                    .await
                    .is_err()
                {
                    kill.notify_one();
                }
            });
        }
    }
}

/// Counts a connection as live while it is served.
struct Live<'a>(&'a AtomicUsize);

impl<'a> Live<'a> {
    fn new(n: &'a AtomicUsize) -> Self {
        n.fetch_add(1, Ordering::Relaxed);
        Self(n)
    }
}

impl Drop for Live<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

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

impl Hub {
    /// A node of its own: rooms live in this process.
    pub fn new(
        cfg: SignalingConfig,
        verifier: Arc<dyn JoinVerifier>,
        sink: Arc<dyn EventSink>,
    ) -> Self {
        let router = Arc::new(LocalRouter::new(cfg.clone(), sink));
        Self::with_router(cfg, verifier, router)
    }

    /// Rooms where `router` keeps them (one node, or a cluster).
    pub fn with_router(
        cfg: SignalingConfig,
        verifier: Arc<dyn JoinVerifier>,
        router: Arc<dyn Router>,
    ) -> Self {
        let hub = Self {
            inner: Arc::new(Inner {
                cfg,
                verifier,
                router,
                draining: tokio::sync::watch::Sender::new(false),
                live: AtomicUsize::new(0),
                accounts: Mutex::new(Accounts::default()),
            }),
        };
        // Revocations from the other nodes of a cluster close this node's connections too.
        let weak = Arc::downgrade(&hub.inner);
        hub.inner
            .router
            .on_revoke(Arc::new(move |user_id, sign_ins| {
                if let Some(inner) = weak.upgrade() {
                    inner.revoke_local(user_id, sign_ins);
                }
            }));
        hub
    }

    /// **Live revocation**: some or all of an account's sign-ins ended (signed out, signed
    /// out everywhere, a new password, the account disabled). Each signalling connection
    /// joined from one of them, on this node and on every other node of a cluster, is told
    /// `error signed_out`, leaves its room and is closed with 4014. Returns how many were
    /// on this node.
    pub async fn revoke(&self, user_id: Uuid, sign_ins: SignIns) -> usize {
        let n = self.inner.revoke_local(user_id, sign_ins);
        self.inner.router.revoke(user_id, sign_ins).await;
        n
    }

    /// [`Hub::revoke`] on this node only: for a sweep that every node runs over the sign-ins
    /// another process ended (the admin command line, a node without Redis).
    pub fn revoke_here(&self, user_id: Uuid, sign_ins: SignIns) -> usize {
        self.inner.revoke_local(user_id, sign_ins)
    }

    pub fn config(&self) -> &SignalingConfig {
        &self.inner.cfg
    }

    /// Rooms whose state this node holds.
    pub fn room_count(&self) -> usize {
        self.inner.router.room_count()
    }

    /// Whether the hub can reach what it needs (Redis, for a cluster).
    pub fn healthy(&self) -> bool {
        self.inner.router.healthy()
    }

    /// End an appointment's live room (it was cancelled or moved): everyone gets `ended`.
    pub async fn end_room(&self, appointment_id: Uuid, reason: &str) {
        self.inner.router.end_room(appointment_id, reason).await;
    }

    /// Apply a change of the appointment's auto-admit setting to its live room.
    pub async fn set_auto_admit(&self, appointment_id: Uuid, on: bool) {
        self.inner.router.set_auto_admit(appointment_id, on).await;
    }

    /// Take an account out of an appointment's live room (it no longer takes part).
    pub async fn remove_account(&self, appointment_id: Uuid, user_id: Uuid) {
        self.inner
            .router
            .remove_account(appointment_id, user_id)
            .await;
    }

    /// Whether the node is draining (it answers not ready, and new connections are told to
    /// reconnect elsewhere).
    pub fn draining(&self) -> bool {
        *self.inner.draining.borrow()
    }

    /// Signalling connections being served now.
    pub fn connection_count(&self) -> usize {
        self.inner.live.load(Ordering::Relaxed)
    }

    /// Connections noted for live revocation (those in a room): 0 once all have closed.
    pub fn revocable_count(&self) -> usize {
        self.inner
            .accounts
            .lock()
            .expect("accounts lock")
            .conns
            .len()
    }

    /// The server is stopping: **drain**. Every connection is told `reconnect` and closed
    /// with 1012; its participant is reconnecting in its room, for the grace period. Once
    /// they are closed (or after `wait`), the rooms are handed over, not ended: on one node
    /// to its next start, in a cluster to the other nodes. People reconnect by themselves
    /// and resume the same session.
    pub async fn shutdown(&self, wait: Duration) {
        self.inner.draining.send_replace(true);
        let deadline = Instant::now() + wait;
        while self.connection_count() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.inner.router.shutdown().await;
    }

    /// Serve one WebSocket connection until it closes.
    pub async fn serve<S, E>(&self, mut ws: S)
    where
        S: Stream<Item = Frame> + Sink<Frame, Error = E> + Unpin + Send,
        E: Display,
    {
        let _live = Live::new(&self.inner.live);
        let mut drain = self.inner.draining.subscribe();
        let cfg = self.inner.cfg.clone();
        let mut limiter = Limiter::new(&cfg);
        let Some((token, resume_token, reset)) =
            Box::pin(self.await_hello(&mut ws, &mut limiter)).await
        else {
            linger(&mut ws).await;
            return;
        };
        let verified = Instant::now();
        let verified_ms = jiff::Timestamp::now().as_millisecond();
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
            Err(JoinRefusal::Unavailable(why)) => {
                refuse(
                    &mut ws,
                    &cfg,
                    ErrorCode::Unavailable,
                    why,
                    close::TRY_AGAIN_LATER,
                )
                .await;
                linger(&mut ws).await;
                return;
            }
        };
        if *drain.borrow_and_update() {
            // This node is going away: join through another (or after the restart).
            restart(&mut ws, &cfg).await;
            return;
        }
        let (tx, rx) = flume::bounded(cfg.outbox);
        let kill = Arc::new(Notify::new());
        let registered = Registered {
            user_id: grant.user_id,
            sign_in: grant.sign_in,
            tx: tx.clone(),
            kill: kill.clone(),
        };
        let conn = Conn::local(connection_id(), tx, kill.clone());
        let appointment_id = grant.appointment_id;
        let req = JoinRequest {
            grant,
            conn: conn.clone(),
            resume: resume_token.as_deref().map(resume_hash),
            reset,
            verified,
            verified_ms,
        };
        // Boxed, like the other one-off steps here: the connection's future is held for as
        // long as the connection lives, so rarely-active parts stay off its inline size.
        let (mut room, joined) = match Box::pin(self.inner.router.join(req)).await {
            Ok(j) => j,
            Err(JoinFailure::Closed) => {
                refuse(
                    &mut ws,
                    &cfg,
                    ErrorCode::NotJoinable,
                    "the session has ended".into(),
                    close::NOT_JOINABLE,
                )
                .await;
                linger(&mut ws).await;
                self.inner.router.forget(conn.id);
                return;
            }
            Err(JoinFailure::Unavailable(why)) => {
                refuse(
                    &mut ws,
                    &cfg,
                    ErrorCode::Unavailable,
                    why,
                    close::TRY_AGAIN_LATER,
                )
                .await;
                linger(&mut ws).await;
                self.inner.router.forget(conn.id);
                return;
            }
        };
        let pid = joined.participant_id;
        tracing::debug!(%appointment_id, participant_id = %pid, "signalling connection joined");
        self.inner.register(conn.id, registered, verified);
        // Only these outlive the join: the grant's strings are freed for the idle hours.
        let user_id = joined.user_id;
        let ice_expires = joined.ice_expires;

        let mut last_seen = Instant::now();
        // One timer for both periodic duties (a ping, and fresh TURN credentials before the
        // old ones expire): each armed timer costs the idle connection memory.
        let start = tokio::time::Instant::now();
        let mut next_ping = start + cfg.ping_interval;
        let mut next_refresh =
            ice_expires.map(|at| start + refresh_delay(at, cfg.ice_refresh_margin));
        let timer = tokio::time::sleep_until(earliest(next_ping, next_refresh));
        tokio::pin!(timer);
        // Made once and polled on every turn of the loop (not made anew each turn: each
        // would register and unregister a waiter per message).
        let killed = kill.notified();
        tokio::pin!(killed);
        let draining = drain.changed();
        tokio::pin!(draining);
        let mut outbox = rx.stream();

        loop {
            tokio::select! {
                biased;
                _ = &mut killed => {
                    let _ = send(&mut ws, &cfg, Frame::Close(Some((close::SLOW_CONSUMER, "slow consumer".into())))).await;
                    break;
                }
                _ = &mut draining => {
                    restart(&mut ws, &cfg).await;
                    break;
                }
                out = outbox.next() => match out {
                    Some(Outbound::Text(t)) => {
                        if send(&mut ws, &cfg, Frame::Text(t.to_string())).await.is_err() {
                            break;
                        }
                    }
                    Some(Outbound::Close(why)) => {
                        if why == Closing::SignedOut {
                            // Revoked: the person leaves the room (their peers are told),
                            // and hears why before the close.
                            let _ = send_error(&mut ws, &cfg, ErrorCode::SignedOut, "your sign-in has ended (signed out, a new password, or the account was disabled); sign in again").await;
                            let _ = room.message(pid, &conn, ClientMessage::Leave).await;
                        }
                        let _ = send(&mut ws, &cfg, Frame::Close(Some((why.code(), why.reason().into())))).await;
                        break;
                    }
                    None => break,
                },
                frame = ws.next() => {
                    last_seen = Instant::now();
                    match frame {
                        Some(Frame::Text(t)) => {
                            match Box::pin(self.handle(&t, &mut limiter, pid, &conn, appointment_id, &mut room, &mut ws)).await {
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
        self.inner.unregister(conn.id);
        linger(&mut ws).await;
        // The room ignores this when the connection was replaced or has left.
        room.disconnected(pid, conn.id).await;
        self.inner.router.forget(conn.id);
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
                Frame::Text(t) => match validate::message(&t) {
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
    #[allow(clippy::too_many_arguments)]
    async fn handle<S, E>(
        &self,
        text: &str,
        limiter: &mut Limiter,
        pid: ParticipantId,
        conn: &Conn,
        appointment_id: Uuid,
        room: &mut RoomLink,
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
        let msg = match validate::message(text) {
            Ok(m) => m,
            Err((code, message)) => {
                let _ = send_error(ws, cfg, code, message).await;
                return Ok(());
            }
        };
        let checked = validate::content(&msg, cfg);
        if let Err((code, message)) = checked {
            let _ = send_error(ws, cfg, code, message).await;
            return Ok(());
        }
        match room.message(pid, conn, msg).await {
            Ok(()) => Ok(()),
            Err((LinkError::Unavailable, _)) => {
                let _ = send_error(
                    ws,
                    cfg,
                    ErrorCode::Unavailable,
                    "the session's server cannot be reached right now; this message was not delivered",
                )
                .await;
                Ok(())
            }
            Err((LinkError::Gone, msg)) => {
                // The room may have moved to another node: once more, through its new link.
                if let Some(next) = self.inner.router.relink(appointment_id).await {
                    *room = next;
                    if room.message(pid, conn, msg).await.is_ok() {
                        return Ok(());
                    }
                }
                let _ = send_msg(
                    ws,
                    cfg,
                    &ServerMessage::Ended {
                        reason: "ended".into(),
                    },
                )
                .await;
                Err(close::ENDED)
            }
        }
    }
}

/// After the server closes a socket, read and drop what the peer still sends, briefly, until
/// it answers the close. Dropping a socket with unread data makes the kernel send a reset,
/// and the peer would then see a broken connection instead of the close code and the
/// error before it (the case after a flood or an oversized frame).
/// Tell a connection that this server is going away (`reconnect`, then close 1012), and
/// wait a moment for its close.
async fn restart<S, E>(ws: &mut S, cfg: &SignalingConfig)
where
    S: Stream<Item = Frame> + Sink<Frame, Error = E> + Unpin + Send,
    E: Display,
{
    let msg = ServerMessage::Reconnect {
        reason: "server_restart".into(),
    };
    let _ = send_msg(ws, cfg, &msg).await;
    let _ = send(
        ws,
        cfg,
        Frame::Close(Some((close::SERVICE_RESTART, "server restart".into()))),
    )
    .await;
    linger(ws).await;
}

///
/// Bounded in bytes as well as time: a peer that keeps flooding after its close (it was cut
/// off for flooding) is not read for a whole second, only up to [`LINGER_BYTES`], then
/// dropped.
async fn linger<S: Stream<Item = Frame> + Unpin>(ws: &mut S) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
    let mut read = 0usize;
    while let Ok(Some(f)) = tokio::time::timeout_at(deadline, ws.next()).await {
        read += match &f {
            Frame::Close(_) => break,
            Frame::Text(t) => t.len(),
            Frame::Binary(b) | Frame::Ping(b) | Frame::Pong(b) => b.len(),
            Frame::TooBig => LINGER_BYTES,
        };
        if read >= LINGER_BYTES {
            break;
        }
    }
}

/// What a closing connection reads of its peer's frames at most, waiting for the close.
const LINGER_BYTES: usize = 64 * 1024;

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
    crate::stats::error(code);
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

/// A new connection id: random, so that ids from different nodes never meet in one room.
fn connection_id() -> u64 {
    let mut b = [0u8; 8];
    getrandom::fill(&mut b).expect("the system random source works");
    u64::from_le_bytes(b)
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

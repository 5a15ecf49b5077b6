//! The session record: the signalling crate's events written to the database (with their
//! audit entries and webhooks), quality figures aggregated per minute, a heartbeat for open
//! sessions, the webhook dispatcher and the retention purge.

use crate::{
    config::Config,
    db_health::DbHealth,
    store::{
        AuditEntry, Db, NewDelivery, QualityRecord, RecordEvent, SessionWrite, StoreError, Ts,
    },
};
use alcove_signaling::{EventKind, EventSink, PeerRole, SessionEvent, Stats};
use hmac::{Hmac, KeyInit as _, Mac as _};
use jiff::{SignedDuration, Timestamp};
use secrecy::ExposeSecret as _;
use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};
use tokio::sync::Notify;
use uuid::Uuid;

fn role_str(r: PeerRole) -> &'static str {
    match r {
        PeerRole::Therapist => "therapist",
        PeerRole::Client => "client",
    }
}

/// Running sums of one participant's figures within one minute.
#[derive(Debug, Default, Clone)]
struct Agg {
    samples: i32,
    rtt: (f64, u32, f64),
    jitter: (f64, u32),
    loss: (f64, u32, f64),
    bitrate: (f64, u32),
    frames_dropped: i64,
    relay: i32,
}

impl Agg {
    fn add(&mut self, s: &Stats) {
        self.samples += 1;
        if let Some(v) = s.rtt_ms {
            self.rtt.0 += v;
            self.rtt.1 += 1;
            self.rtt.2 = self.rtt.2.max(v);
        }
        if let Some(v) = s.jitter_ms {
            self.jitter.0 += v;
            self.jitter.1 += 1;
        }
        if let Some(v) = s.packet_loss {
            self.loss.0 += v;
            self.loss.1 += 1;
            self.loss.2 = self.loss.2.max(v);
        }
        if let Some(v) = s.bitrate_kbps {
            self.bitrate.0 += v;
            self.bitrate.1 += 1;
        }
        if let Some(v) = s.frames_dropped {
            self.frames_dropped = self.frames_dropped.max(v as i64);
        }
        if s.path.as_deref() == Some("relay") {
            self.relay += 1;
        }
    }

    fn record(&self, session_id: Uuid, participant_id: Uuid, minute: Ts) -> QualityRecord {
        let avg = |sum: f64, n: u32| (n > 0).then(|| sum / f64::from(n));
        QualityRecord {
            session_id,
            participant_id,
            minute,
            samples: self.samples,
            rtt_ms_avg: avg(self.rtt.0, self.rtt.1),
            rtt_ms_max: (self.rtt.1 > 0).then_some(self.rtt.2),
            jitter_ms_avg: avg(self.jitter.0, self.jitter.1),
            packet_loss_avg: avg(self.loss.0, self.loss.1),
            packet_loss_max: (self.loss.1 > 0).then_some(self.loss.2),
            bitrate_kbps_avg: avg(self.bitrate.0, self.bitrate.1),
            frames_dropped: self.frames_dropped,
            relay_samples: self.relay,
        }
    }
}

type QualityKey = (Uuid, Uuid, i64);

/// Writes room events to the session record; see the module docs.
pub struct RecordSink {
    db: Db,
    node_id: String,
    webhook_urls: Vec<String>,
    /// Open sessions of this node, for the heartbeat.
    open: Mutex<HashSet<Uuid>>,
    /// Quality sums per (session, participant, minute since the epoch).
    quality: Mutex<HashMap<QualityKey, Agg>>,
    /// Last path each participant reported, to write only changes.
    paths: Mutex<HashMap<(Uuid, Uuid), String>>,
    /// Wakes the webhook dispatcher.
    pub webhooks_due: Arc<Notify>,
    /// Whether the database answers.
    health: Arc<DbHealth>,
    /// Events that could not be written (the database away), oldest first, written when
    /// it is back; while any wait here, new ones queue behind them, in order.
    backlog: Mutex<VecDeque<Pending>>,
    /// The backlog is being written now (new events still queue).
    flushing: AtomicBool,
    /// Events lost: the backlog was full.
    lost: AtomicU64,
    /// Events on their way to the committer.
    commits: flume::Sender<Commit>,
}

/// Events waiting for the committer; a room that raises more waits its turn.
const COMMIT_QUEUE: usize = 4096;
/// Events written in one transaction at most.
const COMMIT_BATCH: usize = 256;

/// An event for the committer, and who waits for it.
struct Commit {
    p: Pending,
    done: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
}

/// Why an event was not written.
#[derive(Debug)]
enum WriteError {
    /// The database is away or full: keep the event for later.
    Fault,
    Other(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Fault => f.write_str("the database is unavailable or full"),
            WriteError::Other(e) => f.write_str(e),
        }
    }
}

fn write_error(e: StoreError) -> WriteError {
    match e {
        StoreError::Unavailable(_) | StoreError::Full(_) => WriteError::Fault,
        other => WriteError::Other(other.to_string()),
    }
}

/// Group commit: take every event waiting (up to [`COMMIT_BATCH`]) and write them in one
/// transaction, then tell each room its event is recorded. While one batch commits the next
/// gathers, so many rooms opening at once cost a few commits, not one each; a lone event
/// costs one commit, as before. Should a batch fail for a reason of its own (not the
/// database), its events are written one by one, so that one bad event fails alone.
async fn run_committer(db: Db, queue: flume::Receiver<Commit>, webhooks_due: Arc<Notify>) {
    while let Ok(first) = queue.recv_async().await {
        let mut batch = vec![first];
        while batch.len() < COMMIT_BATCH {
            match queue.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let writes: Vec<SessionWrite<'_>> = batch
            .iter()
            .map(|c| SessionWrite {
                session_id: c.p.session_id,
                at: c.p.at,
                event: &c.p.event,
                audit: Some(&c.p.audit),
                deliveries: &c.p.hooks,
            })
            .collect();
        let hooks = batch.iter().any(|c| !c.p.hooks.is_empty());
        match db.record_session_events(&writes).await {
            Ok(()) => {
                drop(writes);
                for c in batch {
                    let _ = c.done.send(Ok(()));
                }
                if hooks {
                    webhooks_due.notify_one();
                }
            }
            Err(e @ (StoreError::Unavailable(_) | StoreError::Full(_))) => {
                drop(writes);
                tracing::warn!(error = %e, events = batch.len(), "writing session records failed: the database is away");
                for c in batch {
                    let _ = c.done.send(Err(WriteError::Fault));
                }
                // What queued meanwhile would wait out the same timeout, batch after batch,
                // with its rooms stalled: answer it at once (the rooms keep their events and
                // write them when the database is back).
                while let Ok(c) = queue.try_recv() {
                    let _ = c.done.send(Err(WriteError::Fault));
                }
            }
            Err(e) if batch.len() == 1 => {
                drop(writes);
                for c in batch {
                    let _ = c.done.send(Err(WriteError::Other(e.to_string())));
                }
            }
            Err(e) => {
                drop(writes);
                tracing::warn!(error = %e, events = batch.len(), "a batch of session records failed; writing them one by one");
                let mut away = false;
                for c in batch {
                    if away {
                        let _ = c.done.send(Err(WriteError::Fault));
                        continue;
                    }
                    let p = &c.p;
                    let r = db
                        .record_session_event(
                            p.session_id,
                            p.at,
                            &p.event,
                            Some(&p.audit),
                            &p.hooks,
                        )
                        .await
                        .map_err(write_error);
                    if r.is_ok() && !p.hooks.is_empty() {
                        webhooks_due.notify_one();
                    }
                    away = matches!(r, Err(WriteError::Fault));
                    let _ = c.done.send(r);
                }
            }
        }
    }
}

/// A session-record event waiting to be written.
#[derive(Debug, Clone)]
struct Pending {
    session_id: Uuid,
    at: Ts,
    event: RecordEvent,
    audit: AuditEntry,
    hooks: Vec<NewDelivery>,
}

/// Events kept while the database is away: a few hours of a busy node's rooms opening,
/// admitting and ending. Past this, new events are lost (and counted, and logged).
const BACKLOG_MAX: usize = 10_000;

impl std::fmt::Debug for RecordSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordSink")
            .field("node_id", &self.node_id)
            .finish()
    }
}

impl RecordSink {
    pub fn new(db: Db, config: &Config, health: Arc<DbHealth>) -> Self {
        let (commits, queue) = flume::bounded(COMMIT_QUEUE);
        let webhooks_due = Arc::new(Notify::new());
        tokio::spawn(run_committer(db.clone(), queue, webhooks_due.clone()));
        Self {
            commits,
            health,
            backlog: Mutex::new(VecDeque::new()),
            flushing: AtomicBool::new(false),
            lost: AtomicU64::new(0),
            db,
            node_id: config.node_id.clone(),
            webhook_urls: config.webhook_urls.clone(),
            open: Mutex::new(HashSet::new()),
            quality: Mutex::new(HashMap::new()),
            paths: Mutex::new(HashMap::new()),
            webhooks_due,
        }
    }

    fn deliveries(&self, event_type: &str, body: serde_json::Value) -> Vec<NewDelivery> {
        if self.webhook_urls.is_empty() {
            return Vec::new();
        }
        let mut body = body;
        body["id"] = serde_json::json!(Uuid::now_v7());
        body["type"] = serde_json::json!(event_type);
        let payload = body.to_string();
        self.webhook_urls
            .iter()
            .map(|url| NewDelivery {
                url: url.clone(),
                event_type: event_type.to_owned(),
                payload: payload.clone(),
            })
            .collect()
    }

    /// Write finished minutes of quality figures (all of a session's when `all_of`).
    pub async fn flush_quality(&self, all_of: Option<Uuid>) {
        let this_minute = Timestamp::now().as_second().div_euclid(60);
        let rows: Vec<QualityRecord> = {
            let mut q = self.quality.lock().expect("quality lock");
            let keys: Vec<QualityKey> = q
                .keys()
                .filter(|(s, _, m)| *m < this_minute || Some(*s) == all_of)
                .copied()
                .collect();
            keys.into_iter()
                .filter_map(|k| {
                    let agg = q.remove(&k)?;
                    let minute = Ts::from(Timestamp::from_second(k.2 * 60).ok()?);
                    Some(agg.record(k.0, k.1, minute))
                })
                .collect()
        };
        if let Err(e) = self.db.insert_quality(&rows).await {
            tracing::error!(error = %e, "writing quality figures failed");
        }
    }

    /// Mark this node's open sessions alive (the "last time known" after a crash).
    pub async fn heartbeat(&self) {
        let ids: Vec<Uuid> = self
            .open
            .lock()
            .expect("open lock")
            .iter()
            .copied()
            .collect();
        if let Err(e) = self.db.touch_sessions(&ids, Ts::now()).await {
            tracing::error!(error = %e, "session heartbeat failed");
        }
    }
}

#[async_trait::async_trait]
impl EventSink for RecordSink {
    /// Keep the rooms for the next start, without the signals held for reconnecting
    /// members: those can carry SDP and candidates, which are never stored (the peers
    /// renegotiate when they are back).
    async fn hand_over(&self, rooms: Vec<alcove_signaling::room::RoomSnapshot>) {
        let rows: Vec<(Uuid, String)> = rooms
            .into_iter()
            .map(|mut r| {
                for m in &mut r.members {
                    m.held.clear();
                }
                let json = serde_json::to_string(&r).expect("snapshots serialise");
                (r.appointment_id, json)
            })
            .collect();
        if let Err(e) = self.db.save_handovers(&self.node_id, &rows).await {
            tracing::error!(error = %e, rooms = rows.len(), "could not keep the session rooms for the next start; they will be recorded as lost");
        }
        // The sessions stay open: this node carries them on when it starts again.
        self.heartbeat().await;
    }

    async fn adopted(&self, session_id: Uuid, appointment_id: Uuid) {
        // The record continues on this node: its heartbeat, and its end after a crash here.
        if let Err(e) = self.db.adopt_session(session_id, &self.node_id).await {
            tracing::error!(%session_id, %appointment_id, error = %e, "could not take the session record over");
        }
        self.open.lock().expect("open lock").insert(session_id);
    }

    async fn record(&self, e: SessionEvent) {
        let (session_id, appointment_id) = (e.session_id, e.appointment_id);
        let at = Ts::from(e.at);
        let occurred = at.get().to_string();
        let audit = |action: &str,
                     actor: Option<Uuid>,
                     role: Option<&str>,
                     details: serde_json::Value| AuditEntry {
            actor_id: actor,
            actor_role: role.map(str::to_owned),
            action: action.to_owned(),
            target_type: "appointment".into(),
            target_id: Some(appointment_id.to_string()),
            details,
        };
        let base = serde_json::json!({
            "occurred_at": occurred, "appointment_id": appointment_id, "session_id": session_id,
        });
        let (event, entry, hooks) = match e.kind {
            EventKind::Started => {
                self.open.lock().expect("open lock").insert(session_id);
                tracing::info!(%session_id, %appointment_id, "session started");
                (
                    RecordEvent::Started {
                        appointment_id,
                        node_id: self.node_id.clone(),
                    },
                    audit(
                        "session.start",
                        None,
                        None,
                        serde_json::json!({"session_id": session_id}),
                    ),
                    self.deliveries("session.started", base),
                )
            }
            EventKind::Knocked { participant } => {
                tracing::info!(%session_id, participant_id = %participant.participant_id, "client waiting");
                (
                    RecordEvent::Knocked {
                        participant_id: participant.participant_id,
                        user_id: participant.user_id,
                        role: role_str(participant.role),
                    },
                    audit(
                        "waiting_room.knock",
                        Some(participant.user_id),
                        Some(role_str(participant.role)),
                        serde_json::json!({"session_id": session_id, "participant_id": participant.participant_id}),
                    ),
                    Vec::new(),
                )
            }
            EventKind::Admitted { participant_id, by } => {
                tracing::info!(%session_id, %participant_id, auto = by.is_none(), "client admitted");
                (
                    RecordEvent::Admitted { participant_id, by },
                    audit(
                        "waiting_room.admit",
                        by,
                        by.map(|_| "therapist"),
                        serde_json::json!({"session_id": session_id, "participant_id": participant_id, "automatic": by.is_none()}),
                    ),
                    Vec::new(),
                )
            }
            EventKind::Denied { participant_id, by } => {
                tracing::info!(%session_id, %participant_id, "client denied");
                (
                    RecordEvent::Denied { participant_id, by },
                    audit(
                        "waiting_room.deny",
                        Some(by),
                        Some("therapist"),
                        serde_json::json!({"session_id": session_id, "participant_id": participant_id}),
                    ),
                    Vec::new(),
                )
            }
            EventKind::Connected {
                participant,
                resumed,
            } => {
                tracing::info!(%session_id, participant_id = %participant.participant_id, role = role_str(participant.role), resumed, "participant connected");
                let mut body = base;
                body["participant_id"] = serde_json::json!(participant.participant_id);
                body["role"] = serde_json::json!(role_str(participant.role));
                body["resumed"] = serde_json::json!(resumed);
                (
                    RecordEvent::Connected {
                        participant_id: participant.participant_id,
                        user_id: participant.user_id,
                        role: role_str(participant.role),
                        resumed,
                    },
                    audit(
                        "session.join",
                        Some(participant.user_id),
                        Some(role_str(participant.role)),
                        serde_json::json!({"session_id": session_id, "participant_id": participant.participant_id, "resumed": resumed}),
                    ),
                    self.deliveries("participant.joined", body),
                )
            }
            EventKind::Disconnected { participant_id } => {
                tracing::info!(%session_id, %participant_id, "participant disconnected");
                (
                    RecordEvent::Disconnected { participant_id },
                    audit(
                        "session.disconnect",
                        None,
                        None,
                        serde_json::json!({"session_id": session_id, "participant_id": participant_id}),
                    ),
                    Vec::new(),
                )
            }
            EventKind::Left {
                participant_id,
                reason,
            } => {
                tracing::info!(%session_id, %participant_id, reason, "participant left");
                let mut body = base;
                body["participant_id"] = serde_json::json!(participant_id);
                body["reason"] = serde_json::json!(reason);
                (
                    RecordEvent::Left {
                        participant_id,
                        reason: reason.clone(),
                    },
                    audit(
                        "session.leave",
                        None,
                        None,
                        serde_json::json!({"session_id": session_id, "participant_id": participant_id, "reason": reason}),
                    ),
                    self.deliveries("participant.left", body),
                )
            }
            EventKind::Stats {
                participant_id,
                stats,
            } => {
                let minute = e.at.as_second().div_euclid(60);
                self.quality
                    .lock()
                    .expect("quality lock")
                    .entry((session_id, participant_id, minute))
                    .or_default()
                    .add(&stats);
                if let Some(path) = stats.path {
                    let changed = self
                        .paths
                        .lock()
                        .expect("paths lock")
                        .insert((session_id, participant_id), path.clone())
                        .as_ref()
                        != Some(&path);
                    if changed
                        && let Err(err) = self
                            .db
                            .set_participant_path(session_id, participant_id, &path)
                            .await
                    {
                        tracing::error!(error = %err, "writing the connection path failed");
                    }
                }
                return;
            }
            EventKind::Ended { reason } => {
                tracing::info!(%session_id, %appointment_id, reason, "session ended");
                self.open.lock().expect("open lock").remove(&session_id);
                self.paths
                    .lock()
                    .expect("paths lock")
                    .retain(|(s, _), _| *s != session_id);
                self.flush_quality(Some(session_id)).await;
                let mut body = base;
                body["reason"] = serde_json::json!(reason);
                (
                    RecordEvent::Ended {
                        reason: reason.clone(),
                    },
                    audit(
                        "session.end",
                        None,
                        None,
                        serde_json::json!({"session_id": session_id, "reason": reason}),
                    ),
                    self.deliveries("session.ended", body),
                )
            }
        };
        self.write_or_keep(Pending {
            session_id,
            at,
            event,
            audit: entry,
            hooks,
        })
        .await;
    }
}

impl RecordSink {
    /// Write an event, or keep it for when the database is back. A write that fails for
    /// another reason is tried again a few times; the session goes on either way: people
    /// in a call come before the record.
    async fn write_or_keep(&self, p: Pending) {
        if self.health.is_down()
            || self.flushing.load(Ordering::Acquire)
            || !self.backlog.lock().expect("backlog lock").is_empty()
        {
            self.keep(p);
            return;
        }
        for attempt in 1..=3 {
            match self.write(&p).await {
                Ok(()) => return,
                Err(WriteError::Fault) => {
                    self.health.mark_down();
                    self.keep(p);
                    return;
                }
                Err(err) if attempt < 3 => {
                    tracing::warn!(error = %err, session_id = %p.session_id, attempt, "writing the session record failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                Err(err) => {
                    tracing::error!(error = %err, session_id = %p.session_id, "writing the session record failed; the event is lost");
                }
            }
        }
    }

    /// Write one event through the committer, which writes what many rooms raise at once
    /// in one transaction (group commit), and wait until it is committed.
    async fn write(&self, p: &Pending) -> Result<(), WriteError> {
        let (done, result) = tokio::sync::oneshot::channel();
        self.commits
            .send_async(Commit { p: p.clone(), done })
            .await
            .map_err(|_| WriteError::Other("the record writer stopped".into()))?;
        result
            .await
            .map_err(|_| WriteError::Other("the record writer stopped".into()))?
    }

    fn keep(&self, p: Pending) {
        let mut backlog = self.backlog.lock().expect("backlog lock");
        if backlog.len() >= BACKLOG_MAX {
            let n = self.lost.fetch_add(1, Ordering::Relaxed) + 1;
            if n == 1 || n.is_power_of_two() {
                tracing::error!(lost = n, session_id = %p.session_id, "the database has been away too long: session-record events are being lost");
            }
            return;
        }
        if backlog.is_empty() {
            tracing::warn!(session_id = %p.session_id, "the database is away: session-record events are kept in memory until it is back");
        }
        backlog.push_back(p);
    }

    /// Events waiting for the database.
    pub fn backlog_len(&self) -> usize {
        self.backlog.lock().expect("backlog lock").len()
    }

    /// Write what waits, in order, while the database answers.
    async fn flush_backlog(&self) {
        if self.health.is_down() || self.flushing.swap(true, Ordering::AcqRel) {
            return;
        }
        let mut written = 0;
        loop {
            let Some(p) = self.backlog.lock().expect("backlog lock").pop_front() else {
                break;
            };
            match self.write(&p).await {
                Ok(()) => written += 1,
                Err(WriteError::Fault) => {
                    self.backlog.lock().expect("backlog lock").push_front(p);
                    self.health.mark_down();
                    break;
                }
                Err(err) => {
                    tracing::error!(error = %err, session_id = %p.session_id, "writing a kept session-record event failed; it is lost");
                }
            }
        }
        self.flushing.store(false, Ordering::Release);
        if written > 0 {
            tracing::info!(
                events = written,
                waiting = self.backlog_len(),
                "session-record events kept during the database's absence are written"
            );
        }
    }
}

/// Write the events kept while the database was away, as soon as it is back.
pub async fn run_backlog(sink: Arc<RecordSink>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                // A last try (a drain with the database back).
                sink.flush_backlog().await;
                let left = sink.backlog_len();
                if left > 0 {
                    tracing::error!(events = left, "stopping with session-record events the database never took: they are lost");
                }
                return;
            }
            _ = tick.tick() => sink.flush_backlog().await,
        }
    }
}

/// `t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`: the `Alcove-Signature`
/// header of a webhook.
pub fn webhook_signature(secret: &str, timestamp: i64, body: &str) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{timestamp}.{body}").as_bytes());
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

/// Deliver due webhooks until `stop`; retries back off exponentially.
pub async fn run_webhooks(
    db: Db,
    config: Arc<Config>,
    due: Arc<Notify>,
    stop: tokio_util::sync::CancellationToken,
) {
    let Some(secret) = config.webhook_secret.clone() else {
        return;
    };
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhooks: no HTTP client");
            return;
        }
    };
    loop {
        let batch = match db.due_deliveries(Ts::now(), 50).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "webhooks: reading the outbox failed");
                Vec::new()
            }
        };
        for d in &batch {
            let ts = Timestamp::now().as_second();
            let sig = webhook_signature(secret.expose_secret(), ts, &d.payload);
            let send = client
                .post(&d.url)
                .header("content-type", "application/json")
                .header("alcove-event-type", &d.event_type)
                .header("alcove-delivery-id", d.id.to_string())
                .header("alcove-signature", sig)
                .body(d.payload.clone())
                .send();
            // Shutting down does not wait for slow receivers: an attempt cut short is not
            // recorded, so the delivery is made after the restart (at least once).
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = send => r,
            };
            let status = result.as_ref().ok().map(|r| i32::from(r.status().as_u16()));
            let ok = result.as_ref().is_ok_and(|r| r.status().is_success());
            let attempt = u32::try_from(d.attempts).unwrap_or(0) + 1;
            let next = (!ok && attempt < config.webhook_max_attempts).then(|| {
                let delay = config
                    .webhook_retry_base
                    .saturating_mul(1 << attempt.saturating_sub(1).min(20))
                    .min(Duration::from_secs(3600));
                Ts::from(Timestamp::now() + SignedDuration::try_from(delay).unwrap_or_default())
            });
            if !ok {
                tracing::warn!(delivery_id = %d.id, event_type = d.event_type, status, attempt, "webhook delivery failed");
            }
            if let Err(e) = db.delivery_attempted(d.id, status, ok, next).await {
                tracing::error!(error = %e, "webhooks: recording an attempt failed");
            }
        }
        if batch.len() == 50 {
            continue;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = due.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

/// Every 15 s: the heartbeat of open sessions and the finished minutes of quality figures.
pub async fn run_heartbeat(sink: Arc<RecordSink>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(15));
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                sink.flush_quality(None).await;
                return;
            }
            _ = tick.tick() => {
                sink.heartbeat().await;
                sink.flush_quality(None).await;
            }
        }
    }
}

/// Run the retention purge once.
pub async fn purge_once(db: &Db, config: &Config) -> anyhow::Result<crate::store::Purged> {
    let now = Timestamp::now();
    let ago = |d: Duration| {
        Ts::from(
            now - SignedDuration::try_from(d)
                .unwrap_or(SignedDuration::MAX)
                .min(SignedDuration::from_hours(24 * 365 * 200)),
        )
    };
    let mut purged = db
        .purge(
            ago(config.session_retention),
            ago(config.audit_retention),
            ago(Duration::from_secs(30 * 24 * 3600)),
        )
        .await?;
    purged.network_tests = db
        .purge_network_tests(ago(config.session_retention))
        .await?;
    purged.mail = db
        .purge_mail(ago(Duration::from_secs(30 * 24 * 3600)))
        .await?;
    if purged != crate::store::Purged::default() {
        tracing::info!(
            sessions = purged.sessions,
            audit_rows = purged.audit_rows,
            deliveries = purged.deliveries,
            sign_ins = purged.sign_ins,
            network_tests = purged.network_tests,
            mail = purged.mail,
            "retention purge"
        );
    }
    Ok(purged)
}

/// Purge on the configured interval until `stop`.
pub async fn run_purge(db: Db, config: Arc<Config>, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(config.purge_interval);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = purge_once(&db, &config).await {
                    tracing::error!(error = %format!("{e:#}"), "retention purge failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_signature_known_answer() {
        // printf '%s' '1700000000.{"a":1}' | openssl dgst -sha256 -hmac s3cret
        assert_eq!(
            webhook_signature("s3cret", 1_700_000_000, r#"{"a":1}"#),
            "t=1700000000,v1=1698a50bc74d1ff1db85c4e0a5297c2ad9fdba245d5737cdb789e4cc6e098940"
        );
    }
}

//! Prometheus metrics at `GET /metrics` (OpenMetrics text), for operators.
//!
//! **No personal data in labels**: labels are HTTP methods, route templates (never raw
//! paths, which can hold ids and calendar tokens), status codes, problem codes, message
//! types, error codes, room states and end reasons: small fixed sets. Counts and times
//! only; no user, appointment, session or participant id anywhere.

use crate::store::Db;
use alcove_signaling::{
    EventKind, EventSink, Hub, ParticipantId, PeerRole, SessionEvent,
    protocol::ErrorCode,
    room::RoomSnapshot,
    stats::{self, MESSAGE_TYPES, STATS},
};
use axum::{
    extract::{MatchedPath, Request, State},
    http::header,
    middleware::Next,
    response::{IntoResponse, Response},
};
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric as _},
    metrics::{
        MetricType,
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::ConstGauge,
        histogram::Histogram,
    },
    registry::Registry,
};
use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex, OnceLock},
    time::{Duration, Instant},
};
use uuid::Uuid;

/// The problem code of an error response (set by `problem_response`), for the error count.
#[derive(Clone, Debug)]
pub struct ProblemCode(pub String);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: &'static str,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VerdictLabels {
    verdict: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MailLabels {
    kind: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// What the metrics know of a live room, from its events (no ids leave this map).
struct Room {
    started: Instant,
    therapists: HashSet<ParticipantId>,
    waiting: HashMap<ParticipantId, Instant>,
    admitted: HashSet<ParticipantId>,
    connected: HashSet<ParticipantId>,
}

impl Room {
    fn new(started: Instant) -> Self {
        Self {
            started,
            therapists: HashSet::new(),
            waiting: HashMap::new(),
            admitted: HashSet::new(),
            connected: HashSet::new(),
        }
    }

    /// `in_call`: two people admitted and connected; `waiting`: someone in the waiting
    /// room; `open`: neither (one person, or everyone reconnecting).
    fn state(&self) -> &'static str {
        if self.admitted.intersection(&self.connected).count() >= 2 {
            "in_call"
        } else if !self.waiting.is_empty() {
            "waiting"
        } else {
            "open"
        }
    }
}

/// Every metric of this process.
pub struct Metrics {
    http_requests: Family<HttpLabels, Counter>,
    http_seconds: Family<RouteLabels, Histogram>,
    api_errors: Family<CodeLabels, Counter>,
    sessions_ended: Family<ReasonLabels, Counter>,
    session_seconds: Histogram,
    waiting_seconds: Histogram,
    reconnects: Counter,
    /// Connections closed at accept: over the limit per client address.
    connections_refused: Counter,
    /// Network tests finished, by verdict.
    network_tests: Family<VerdictLabels, Counter>,
    /// Outbox rows handled, by kind and outcome.
    mail: Family<MailLabels, Counter>,
    rooms: Mutex<HashMap<Uuid, Room>>,
    registry: OnceLock<Registry>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

/// Only what a problem code looks like is used as a label (a fixed set of constants).
fn code_label(code: &str) -> String {
    if !code.is_empty()
        && code.len() <= 40
        && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
    {
        code.to_owned()
    } else {
        "other".to_owned()
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            http_requests: Family::default(),
            http_seconds: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                ])
            }),
            api_errors: Family::default(),
            sessions_ended: Family::default(),
            session_seconds: Histogram::new([
                60.0, 300.0, 900.0, 1800.0, 2700.0, 3600.0, 5400.0, 7200.0, 10800.0,
            ]),
            waiting_seconds: Histogram::new([
                5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0,
            ]),
            reconnects: Counter::default(),
            connections_refused: Counter::default(),
            network_tests: Family::default(),
            mail: Family::default(),
            rooms: Mutex::new(HashMap::new()),
            registry: OnceLock::new(),
        })
    }

    /// Put everything in one registry, with what is read at each scrape from the hub and
    /// the database pool. Call once, when the hub exists.
    pub fn finish(self: &Arc<Self>, hub: Hub, db: Db, db_max: u32, cluster: bool) {
        let mut r = Registry::with_prefix("alcove");
        r.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            self.http_requests.clone(),
        );
        r.register(
            "http_request_duration_seconds",
            "HTTP request latency by method and route template",
            self.http_seconds.clone(),
        );
        r.register(
            "api_errors",
            "Problem responses by code",
            self.api_errors.clone(),
        );
        r.register(
            "sessions_ended",
            "Sessions ended, by reason",
            self.sessions_ended.clone(),
        );
        r.register(
            "session_duration_seconds",
            "How long sessions lasted, from the room's opening to its end",
            self.session_seconds.clone(),
        );
        r.register(
            "waiting_room_wait_seconds",
            "How long clients waited in the waiting room before being admitted",
            self.waiting_seconds.clone(),
        );
        r.register(
            "reconnects",
            "Participants who came back after a dropped connection (or a server restart)",
            self.reconnects.clone(),
        );
        r.register(
            "connections_refused",
            "Connections closed at once: one client address had too many open",
            self.connections_refused.clone(),
        );
        r.register(
            "network_tests",
            "Network tests finished, by verdict (ready, relay_only, blocked)",
            self.network_tests.clone(),
        );
        r.register(
            "mail_messages",
            "Appointment messages by kind (confirmation, reminder, rescheduled, cancelled) and outcome (sent, retried, dropped)",
            self.mail.clone(),
        );
        r.register_collector(Box::new(Scrape {
            metrics: self.clone(),
            hub,
            db,
            db_max,
            cluster,
        }));
        let _ = self.registry.set(r);
    }

    /// A connection was closed at accept (too many from one address).
    pub fn refused_connection(&self) {
        self.connections_refused.inc();
    }

    /// A network test finished with `verdict` (one of three constants).
    pub fn network_test(&self, verdict: &'static str) {
        self.network_tests
            .get_or_create(&VerdictLabels { verdict })
            .inc();
    }

    /// An outbox row of `kind` was `sent`, `retried` or `dropped`.
    pub fn mail(&self, kind: &'static str, outcome: &'static str) {
        self.mail.get_or_create(&MailLabels { kind, outcome }).inc();
    }

    /// The metrics, as OpenMetrics text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Some(r) = self.registry.get() {
            let _ = prometheus_client::encoding::text::encode(&mut out, r);
        }
        out
    }

    fn observe(&self, e: &SessionEvent) {
        let now = Instant::now();
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let room = rooms.entry(e.session_id).or_insert_with(|| Room::new(now));
        match &e.kind {
            EventKind::Started => {}
            EventKind::Knocked { participant } => {
                room.waiting.insert(participant.participant_id, now);
            }
            EventKind::Admitted { participant_id, .. } => {
                if let Some(since) = room.waiting.remove(participant_id) {
                    self.waiting_seconds
                        .observe(now.duration_since(since).as_secs_f64());
                }
                room.admitted.insert(*participant_id);
            }
            EventKind::Denied { participant_id, .. } => {
                room.waiting.remove(participant_id);
            }
            EventKind::Connected {
                participant,
                resumed,
            } => {
                if *resumed {
                    self.reconnects.inc();
                }
                if participant.role == PeerRole::Therapist {
                    room.therapists.insert(participant.participant_id);
                    room.admitted.insert(participant.participant_id);
                } else if *resumed && !room.waiting.contains_key(&participant.participant_id) {
                    // A room carried over from elsewhere: who was admitted is not known
                    // from its events here; a client coming back was in the call.
                    room.admitted.insert(participant.participant_id);
                }
                room.connected.insert(participant.participant_id);
            }
            EventKind::Disconnected { participant_id } => {
                room.connected.remove(participant_id);
            }
            EventKind::Left { participant_id, .. } => {
                room.connected.remove(participant_id);
                room.admitted.remove(participant_id);
                room.waiting.remove(participant_id);
            }
            EventKind::Stats { .. } => {}
            EventKind::Ended { reason } => {
                let started = room.started;
                rooms.remove(&e.session_id);
                self.sessions_ended
                    .get_or_create(&ReasonLabels {
                        reason: code_label(reason),
                    })
                    .inc();
                self.session_seconds
                    .observe(now.duration_since(started).as_secs_f64());
            }
        }
    }

    /// Count a served request.
    fn served(&self, method: &'static str, route: String, status: u16, took: Duration) {
        self.http_requests
            .get_or_create(&HttpLabels {
                method,
                route: route.clone(),
                status,
            })
            .inc();
        self.http_seconds
            .get_or_create(&RouteLabels { method, route })
            .observe(took.as_secs_f64());
    }
}

/// What is read at each scrape.
#[derive(Debug)]
struct Scrape {
    metrics: Arc<Metrics>,
    hub: Hub,
    db: Db,
    db_max: u32,
    cluster: bool,
}

fn gauge(e: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    g.encode(m)
}

fn counter(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    c.encode(m)
}

fn histogram(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &stats::Histogram,
) -> Result<(), std::fmt::Error> {
    let (sum, count, buckets) = h.snapshot();
    let mut m = e.encode_descriptor(name, help, None, MetricType::Histogram)?;
    m.encode_histogram::<prometheus_client::encoding::NoLabelSet>(sum, count, &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        gauge(
            &mut e,
            "signaling_connections",
            "Open signalling WebSocket connections",
            self.hub.connection_count() as i64,
        )?;
        gauge(
            &mut e,
            "draining",
            "1 while the server drains (SIGTERM)",
            i64::from(self.hub.draining()),
        )?;
        {
            let mut by_state: HashMap<&'static str, i64> =
                [("open", 0), ("waiting", 0), ("in_call", 0)].into();
            for room in self.metrics.rooms.lock().expect("rooms lock").values() {
                *by_state.entry(room.state()).or_default() += 1;
            }
            let mut m = e.encode_descriptor(
                "rooms",
                "Live session rooms this node holds, by state",
                None,
                MetricType::Gauge,
            )?;
            for state in ["open", "waiting", "in_call"] {
                let labels = [("state", state)];
                ConstGauge::new(by_state[state]).encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "signaling_messages",
                "Signalling messages from peers, by type",
                None,
                MetricType::Counter,
            )?;
            for (i, t) in MESSAGE_TYPES.iter().enumerate() {
                let labels = [("type", *t)];
                ConstCounter::new(stats::get(&STATS.messages[i]))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let mut m = e.encode_descriptor(
                "signaling_errors",
                "Signalling `error` messages sent to peers, by code",
                None,
                MetricType::Counter,
            )?;
            for (i, c) in ErrorCode::ALL.iter().enumerate() {
                let labels = [("code", c.as_str())];
                ConstCounter::new(stats::get(&STATS.errors[i]))
                    .encode(m.encode_family(&labels)?)?;
            }
        }
        {
            let (size, idle) = self.db.pool_stats();
            let mut m = e.encode_descriptor(
                "db_pool_connections",
                "Database pool connections, by state",
                None,
                MetricType::Gauge,
            )?;
            for (state, v) in [("idle", idle as i64), ("in_use", size as i64 - idle as i64)] {
                let labels = [("state", state)];
                ConstGauge::new(v).encode(m.encode_family(&labels)?)?;
            }
        }
        gauge(
            &mut e,
            "db_pool_max_connections",
            "Largest size of the database pool",
            i64::from(self.db_max),
        )?;
        if self.cluster {
            let b = &STATS.bus;
            let counters = [
                (
                    "bus_commands_sent",
                    "Commands appended to rooms owned by other nodes",
                    &b.commands_sent,
                ),
                (
                    "bus_commands_read",
                    "Command stream entries read for rooms this node owns",
                    &b.commands_read,
                ),
                (
                    "bus_deliveries_sent",
                    "Deliveries written to other nodes' delivery streams",
                    &b.deliveries_sent,
                ),
                (
                    "bus_deliveries_read",
                    "Deliveries read from this node's delivery stream",
                    &b.deliveries_read,
                ),
                ("bus_commits", "Owners' commits to Redis", &b.commits),
                (
                    "bus_takeovers",
                    "Rooms this node took over from a node that died or stopped",
                    &b.takeovers,
                ),
                ("bus_errors", "Redis calls that failed", &b.errors),
            ];
            for (name, help, c) in counters {
                counter(&mut e, name, help, stats::get(c))?;
            }
            histogram(
                &mut e,
                "bus_commit_seconds",
                "How long an owner's commit to Redis took",
                &b.commit_seconds,
            )?;
            histogram(
                &mut e,
                "bus_send_seconds",
                "How long appending a command for another node's room took",
                &b.send_seconds,
            )?;
            gauge(
                &mut e,
                "redis_up",
                "1 while Redis answers",
                i64::from(self.hub.healthy()),
            )?;
        }
        Ok(())
    }
}

/// Count every request: method, route template (never the raw path), status, latency, and
/// the problem code of an error.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let res = next.run(req).await;
    if let Some(ProblemCode(code)) = res.extensions().get::<ProblemCode>() {
        metrics
            .api_errors
            .get_or_create(&CodeLabels {
                code: code_label(code),
            })
            .inc();
    }
    metrics.served(method, route, res.status().as_u16(), started.elapsed());
    res
}

/// `GET /metrics`.
pub async fn serve(State(metrics): State<Arc<Metrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

/// The session record's sink, with the metrics watching what passes.
pub struct ObservedSink<S> {
    pub inner: Arc<S>,
    pub metrics: Arc<Metrics>,
}

#[async_trait::async_trait]
impl<S: EventSink> EventSink for ObservedSink<S> {
    async fn record(&self, event: SessionEvent) {
        self.metrics.observe(&event);
        self.inner.record(event).await;
    }

    async fn adopted(&self, session_id: Uuid, appointment_id: Uuid) {
        self.metrics
            .rooms
            .lock()
            .expect("rooms lock")
            .entry(session_id)
            .or_insert_with(|| Room::new(Instant::now()));
        self.inner.adopted(session_id, appointment_id).await;
    }

    async fn hand_over(&self, rooms: Vec<RoomSnapshot>) {
        {
            let mut live = self.metrics.rooms.lock().expect("rooms lock");
            for r in &rooms {
                live.remove(&r.session_id);
            }
        }
        self.inner.hand_over(rooms).await;
    }
}

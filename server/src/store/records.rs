//! Session records, the audit trail and the webhook outbox.
//!
//! Each session event is written in one transaction together with its audit entry and its
//! webhook deliveries, so a crash loses none of them and webhooks are at least once.

use super::{Db, StoreResult, Ts, WritePool};
use sha2::{Digest as _, Sha256};
use std::collections::HashMap;
use uuid::Uuid;

/// One event to write with [`Db::record_session_events`].
#[derive(Debug, Clone, Copy)]
pub struct SessionWrite<'a> {
    pub session_id: Uuid,
    pub at: Ts,
    pub event: &'a RecordEvent,
    pub audit: Option<&'a AuditEntry>,
    pub deliveries: &'a [NewDelivery],
}

/// What happened in a session, as the record keeps it.
#[derive(Debug, Clone)]
pub enum RecordEvent {
    Started {
        appointment_id: Uuid,
        node_id: String,
    },
    Knocked {
        participant_id: Uuid,
        user_id: Uuid,
        role: &'static str,
    },
    Admitted {
        participant_id: Uuid,
        by: Option<Uuid>,
    },
    Denied {
        participant_id: Uuid,
        by: Uuid,
    },
    Connected {
        participant_id: Uuid,
        user_id: Uuid,
        role: &'static str,
        resumed: bool,
    },
    Disconnected {
        participant_id: Uuid,
    },
    Left {
        participant_id: Uuid,
        reason: String,
    },
    Ended {
        reason: String,
    },
}

/// An audit entry to append.
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    /// A JSON object of ids, times and reasons only.
    pub details: serde_json::Value,
}

/// Who did something, for the audit trail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub id: Uuid,
    pub role: crate::domain::Role,
}

impl AuditEntry {
    pub fn new(
        actor: Option<&Actor>,
        action: &str,
        target_type: &str,
        target_id: Option<String>,
        details: serde_json::Value,
    ) -> Self {
        Self {
            actor_id: actor.map(|a| a.id),
            actor_role: actor.map(|a| a.role.as_str().to_owned()),
            action: action.to_owned(),
            target_type: target_type.to_owned(),
            target_id,
            details,
        }
    }
}

/// A webhook delivery to enqueue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub url: String,
    pub event_type: String,
    pub payload: String,
}

/// A row of the audit trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub seq: i64,
    pub at: Ts,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    pub details: String,
    pub prev_hash: Vec<u8>,
    pub hash: Vec<u8>,
}

/// The content of an audit row that its hash covers.
#[derive(Debug, Clone, Copy)]
pub struct AuditLink<'a> {
    pub seq: i64,
    pub at: Ts,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<&'a str>,
    pub action: &'a str,
    pub target_type: &'a str,
    pub target_id: Option<&'a str>,
    pub details: &'a str,
}

impl AuditLink<'_> {
    /// SHA-256 over the previous row's hash and this row's content.
    pub fn hash(&self, prev: &[u8]) -> Vec<u8> {
        let content = serde_json::json!([
            self.seq,
            self.at.get().to_string(),
            self.actor_id,
            self.actor_role,
            self.action,
            self.target_type,
            self.target_id,
            self.details
        ]);
        let mut h = Sha256::new();
        h.update(prev);
        h.update(content.to_string().as_bytes());
        h.finalize().to_vec()
    }
}

impl AuditRow {
    fn link(&self) -> AuditLink<'_> {
        AuditLink {
            seq: self.seq,
            at: self.at,
            actor_id: self.actor_id,
            actor_role: self.actor_role.as_deref(),
            action: &self.action,
            target_type: &self.target_type,
            target_id: self.target_id.as_deref(),
            details: &self.details,
        }
    }
}

/// Filters of the audit trail.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub from: Option<Ts>,
    pub to: Option<Ts>,
    pub actor_id: Option<Uuid>,
    pub action: Option<String>,
    pub target_id: Option<String>,
}

/// What `verify_audit` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every link holds: this many rows, up to this sequence number.
    Intact { rows: i64, head: i64 },
    /// The first broken link, at this sequence number, and why.
    Broken { seq: i64, why: String },
}

/// A participant of a recorded session.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ParticipantRecord {
    pub session_id: Uuid,
    pub participant_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub role: String,
    pub knocked_at: Option<Ts>,
    pub admitted_at: Option<Ts>,
    pub admitted_by: Option<Uuid>,
    pub denied_at: Option<Ts>,
    pub left_at: Option<Ts>,
    pub left_reason: Option<String>,
    pub reconnects: i32,
    pub path: Option<String>,
}

/// One connected interval.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntervalRecord {
    pub session_id: Uuid,
    pub participant_id: Uuid,
    pub connected_at: Ts,
    pub disconnected_at: Option<Ts>,
}

/// One minute of quality figures.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QualityRecord {
    pub session_id: Uuid,
    pub participant_id: Uuid,
    pub minute: Ts,
    pub samples: i32,
    pub rtt_ms_avg: Option<f64>,
    pub rtt_ms_max: Option<f64>,
    pub jitter_ms_avg: Option<f64>,
    pub packet_loss_avg: Option<f64>,
    pub packet_loss_max: Option<f64>,
    pub bitrate_kbps_avg: Option<f64>,
    pub frames_dropped: i64,
    pub relay_samples: i32,
}

/// A session with everything recorded about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionRow {
    pub id: Uuid,
    pub appointment_id: Uuid,
    pub started_at: Ts,
    pub last_seen_at: Ts,
    pub ended_at: Option<Ts>,
    pub end_reason: Option<String>,
}

/// Whose session records to read.
#[derive(Debug, Clone, Copy)]
enum RecordScope {
    Appointment(Uuid),
    Therapist {
        therapist_id: Uuid,
        from: Ts,
        to: Ts,
    },
}

/// A session and its participants, intervals and quality.
#[derive(Debug, Clone)]
pub struct SessionRecord {
    pub session: SessionRow,
    pub participants: Vec<ParticipantRecord>,
    pub intervals: Vec<IntervalRecord>,
    pub quality: Vec<QualityRecord>,
}

/// Rows the retention purge removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Purged {
    pub sessions: u64,
    pub audit_rows: u64,
    pub deliveries: u64,
    pub sign_ins: u64,
    /// Network tests kept as long as the session records.
    pub network_tests: u64,
    /// Outbox rows sent or dropped more than 30 days ago.
    pub mail: u64,
}

impl Db {
    /// Append one audit entry.
    pub async fn audit(&self, e: &AuditEntry) -> StoreResult<()> {
        let at = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            append_audit!(self, tx, at, e);
            tx.commit().await?;
        });
        Ok(())
    }

    /// Write one session event, its audit entry and its webhook deliveries, together.
    pub async fn record_session_event(
        &self,
        session_id: Uuid,
        at: Ts,
        event: &RecordEvent,
        audit: Option<&AuditEntry>,
        deliveries: &[NewDelivery],
    ) -> StoreResult<()> {
        self.record_session_events(&[SessionWrite {
            session_id,
            at,
            event,
            audit,
            deliveries,
        }])
        .await
    }

    /// Write several session events (of any sessions), each with its audit entry and
    /// webhook deliveries, in one transaction: one commit (one fsync) for many rooms'
    /// events at once, when many rooms open together. All or none.
    pub async fn record_session_events(&self, writes: &[SessionWrite<'_>]) -> StoreResult<()> {
        if writes.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for w in writes {
                let SessionWrite { session_id, at, event, audit: _, deliveries } = *w;
                match event {
                    RecordEvent::Started { appointment_id, node_id } => {
                        sqlx::query(
                            "INSERT INTO video_sessions (id, appointment_id, node_id, started_at, last_seen_at)
                             VALUES ($1, $2, $3, $4, $4)",
                        )
                        .bind(session_id)
                        .bind(appointment_id)
                        .bind(node_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Knocked { participant_id, user_id, role } => {
                        sqlx::query(
                            "INSERT INTO session_participants (session_id, participant_id, user_id, role, knocked_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (session_id, participant_id) DO UPDATE SET knocked_at = excluded.knocked_at",
                        )
                        .bind(session_id)
                        .bind(participant_id)
                        .bind(user_id)
                        .bind(*role)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Admitted { participant_id, by } => {
                        sqlx::query(
                            "UPDATE session_participants SET admitted_at = $1, admitted_by = $2
                             WHERE session_id = $3 AND participant_id = $4",
                        )
                        .bind(at)
                        .bind(by)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Denied { participant_id, by } => {
                        sqlx::query(
                            "UPDATE session_participants SET denied_at = $1 WHERE session_id = $2 AND participant_id = $3",
                        )
                        .bind(at)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                        // Remembered for the appointment, not only this session's record: the
                        // client cannot knock again (here or on another node) until the
                        // therapist lets them.
                        sqlx::query(
                            "UPDATE appointment_participants SET denied_at = $1, denied_by = $2
                             WHERE appointment_id = (SELECT appointment_id FROM video_sessions WHERE id = $3)
                               AND user_id = (SELECT user_id FROM session_participants
                                              WHERE session_id = $3 AND participant_id = $4)
                               AND role = 'client'",
                        )
                        .bind(at)
                        .bind(by)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Connected { participant_id, user_id, role, resumed } => {
                        // A therapist, or a client let in automatically, never knocked: the
                        // first connection creates the row (admitted at once for therapists).
                        let admitted = (*role == "therapist").then_some(at);
                        sqlx::query(
                            "INSERT INTO session_participants (session_id, participant_id, user_id, role, admitted_at)
                             VALUES ($1, $2, $3, $4, $5)
                             ON CONFLICT (session_id, participant_id) DO UPDATE
                             SET reconnects = session_participants.reconnects + $6, left_at = NULL, left_reason = NULL",
                        )
                        .bind(session_id)
                        .bind(participant_id)
                        .bind(user_id)
                        .bind(*role)
                        .bind(admitted)
                        .bind(if *resumed { 1_i32 } else { 0 })
                        .execute(&mut *tx)
                        .await?;
                        // A takeover opens a new interval without a disconnect first: close any.
                        sqlx::query(
                            "UPDATE session_intervals SET disconnected_at = $1
                             WHERE session_id = $2 AND participant_id = $3 AND disconnected_at IS NULL",
                        )
                        .bind(at)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "INSERT INTO session_intervals (session_id, participant_id, connected_at) VALUES ($1, $2, $3)
                             ON CONFLICT DO NOTHING",
                        )
                        .bind(session_id)
                        .bind(participant_id)
                        .bind(at)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Disconnected { participant_id } => {
                        sqlx::query(
                            "UPDATE session_intervals SET disconnected_at = $1
                             WHERE session_id = $2 AND participant_id = $3 AND disconnected_at IS NULL",
                        )
                        .bind(at)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Left { participant_id, reason } => {
                        sqlx::query(
                            "UPDATE session_intervals SET disconnected_at = $1
                             WHERE session_id = $2 AND participant_id = $3 AND disconnected_at IS NULL",
                        )
                        .bind(at)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query(
                            "UPDATE session_participants SET left_at = $1, left_reason = $2
                             WHERE session_id = $3 AND participant_id = $4",
                        )
                        .bind(at)
                        .bind(reason)
                        .bind(session_id)
                        .bind(participant_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    RecordEvent::Ended { reason } => {
                        sqlx::query(
                            "UPDATE session_intervals SET disconnected_at = $1 WHERE session_id = $2 AND disconnected_at IS NULL",
                        )
                        .bind(at)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                        // Those still in the room leave with it: `server_lost` when it was lost.
                        let left = if reason == "server_lost" { "server_lost" } else { "ended" };
                        sqlx::query(
                            "UPDATE session_participants SET left_at = $1, left_reason = $2
                             WHERE session_id = $3 AND left_at IS NULL AND denied_at IS NULL",
                        )
                        .bind(at)
                        .bind(left)
                        .bind(session_id)
                        .execute(&mut *tx)
                        .await?;
                        sqlx::query("UPDATE video_sessions SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL")
                            .bind(at)
                            .bind(reason)
                            .bind(session_id)
                            .execute(&mut *tx)
                            .await?;
                    }
                }
                sqlx::query("UPDATE video_sessions SET last_seen_at = $1 WHERE id = $2 AND last_seen_at < $1")
                    .bind(at)
                    .bind(session_id)
                    .execute(&mut *tx)
                    .await?;
                for d in deliveries {
                    sqlx::query(
                        "INSERT INTO webhook_deliveries (id, url, event_type, payload, created_at, next_attempt_at)
                         VALUES ($1, $2, $3, $4, $5, $5)",
                    )
                    .bind(Uuid::now_v7())
                    .bind(&d.url)
                    .bind(&d.event_type)
                    .bind(&d.payload)
                    .bind(at)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            // Last, all together: the audit head's lock (PostgreSQL) is held from the first
            // append until commit, so not across the batch's other statements.
            for w in writes {
                if let Some(a) = w.audit {
                    append_audit!(self, tx, w.at, a);
                }
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Keep the rooms a stopping node hands over to its next start: (appointment, snapshot
    /// as JSON) pairs. The caller leaves relayed signals out of the snapshots.
    pub async fn save_handovers(&self, node_id: &str, rooms: &[(Uuid, String)]) -> StoreResult<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for (appointment_id, snapshot) in rooms {
                sqlx::query("DELETE FROM room_handovers WHERE appointment_id = $1")
                    .bind(appointment_id)
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("INSERT INTO room_handovers (appointment_id, node_id, saved_at, snapshot) VALUES ($1, $2, $3, $4)")
                    .bind(appointment_id)
                    .bind(node_id)
                    .bind(now)
                    .bind(snapshot)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Take (and delete) the rooms this node handed over when it last stopped: their
    /// snapshots as JSON.
    pub async fn take_handovers(&self, node_id: &str) -> StoreResult<Vec<String>> {
        let rows: Vec<(String,)> = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let rows = sqlx::query_as("SELECT snapshot FROM room_handovers WHERE node_id = $1 ORDER BY saved_at")
                .bind(node_id)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM room_handovers WHERE node_id = $1")
                .bind(node_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            rows
        });
        Ok(rows.into_iter().map(|(s,)| s).collect())
    }

    /// The last time these open sessions were known alive is now (heartbeat).
    /// One transaction for all of them: one commit (and one fsync on SQLite) per beat.
    pub async fn touch_sessions(&self, ids: &[Uuid], at: Ts) -> StoreResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for id in ids {
                sqlx::query("UPDATE video_sessions SET last_seen_at = $1 WHERE id = $2 AND ended_at IS NULL")
                    .bind(at)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// Record the connection path a participant reported.
    pub async fn set_participant_path(
        &self,
        session_id: Uuid,
        participant_id: Uuid,
        path: &str,
    ) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query("UPDATE session_participants SET path = $1 WHERE session_id = $2 AND participant_id = $3")
                .bind(path)
                .bind(session_id)
                .bind(participant_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Store finished minutes of quality figures.
    pub async fn insert_quality(&self, rows: &[QualityRecord]) -> StoreResult<()> {
        if rows.is_empty() {
            return Ok(());
        }
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            for q in rows {
                sqlx::query(
                    "INSERT INTO session_quality (session_id, participant_id, minute, samples, rtt_ms_avg, rtt_ms_max,
                        jitter_ms_avg, packet_loss_avg, packet_loss_max, bitrate_kbps_avg, frames_dropped, relay_samples)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
                     ON CONFLICT (session_id, participant_id, minute) DO NOTHING",
                )
                .bind(q.session_id)
                .bind(q.participant_id)
                .bind(q.minute)
                .bind(q.samples)
                .bind(q.rtt_ms_avg)
                .bind(q.rtt_ms_max)
                .bind(q.jitter_ms_avg)
                .bind(q.packet_loss_avg)
                .bind(q.packet_loss_max)
                .bind(q.bitrate_kbps_avg)
                .bind(q.frames_dropped)
                .bind(q.relay_samples)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// After a crash: close this node's sessions left open, at the last time known, as
    /// `server_lost`. Returns how many.
    /// A session's record continues on `node_id` (its room was taken over there).
    pub async fn adopt_session(&self, session_id: Uuid, node_id: &str) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            sqlx::query("UPDATE video_sessions SET node_id = $1, last_seen_at = $2 WHERE id = $3 AND ended_at IS NULL")
                .bind(node_id)
                .bind(now)
                .bind(session_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// End as `server_lost` the sessions `node_id` left open (it crashed), except those of
    /// appointments in `carried_on` (several nodes: their rooms are saved in Redis, and
    /// another node carries them on).
    pub async fn close_lost_sessions(
        &self,
        node_id: &str,
        carried_on: &std::collections::HashSet<Uuid>,
    ) -> StoreResult<u64> {
        let open: Vec<(Uuid, Ts, Uuid)> = on_pool!(self, pool => {
            sqlx::query_as("SELECT id, last_seen_at, appointment_id FROM video_sessions WHERE node_id = $1 AND ended_at IS NULL")
                .bind(node_id)
                .fetch_all(pool)
                .await?
        });
        let open: Vec<(Uuid, Ts, Uuid)> = open
            .into_iter()
            .filter(|(_, _, apt)| !carried_on.contains(apt))
            .collect();
        for (id, last, appointment_id) in &open {
            let audit = AuditEntry::new(
                None,
                "session.end",
                "appointment",
                Some(appointment_id.to_string()),
                serde_json::json!({"session_id": id, "reason": "server_lost"}),
            );
            self.record_session_event(
                *id,
                *last,
                &RecordEvent::Ended {
                    reason: "server_lost".into(),
                },
                Some(&audit),
                &[],
            )
            .await?;
        }
        Ok(open.len() as u64)
    }

    /// Everything recorded about an appointment's sessions, oldest first.
    pub async fn session_records(&self, appointment_id: Uuid) -> StoreResult<Vec<SessionRecord>> {
        Ok(self
            .session_records_in(RecordScope::Appointment(appointment_id))
            .await?
            .remove(&appointment_id)
            .unwrap_or_default())
    }

    /// The session records of a therapist's appointments starting in `[from, to)`, by
    /// appointment (the same four queries, however many appointments).
    pub async fn therapist_session_records(
        &self,
        therapist_id: Uuid,
        from: Ts,
        to: Ts,
    ) -> StoreResult<HashMap<Uuid, Vec<SessionRecord>>> {
        self.session_records_in(RecordScope::Therapist {
            therapist_id,
            from,
            to,
        })
        .await
    }

    async fn session_records_in(
        &self,
        scope: RecordScope,
    ) -> StoreResult<HashMap<Uuid, Vec<SessionRecord>>> {
        let cond = match scope {
            RecordScope::Appointment(_) => "s.appointment_id = $1",
            RecordScope::Therapist { .. } => {
                "s.appointment_id IN (SELECT id FROM appointments
                                      WHERE therapist_id = $1 AND starts_at >= $2 AND starts_at < $3)"
            }
        };
        // One query of the four, its condition filled in and its parameters bound.
        macro_rules! scoped {
            ($pool:expr, $sql:literal) => {{
                let q = sqlx::query_as(sqlx::AssertSqlSafe(format!($sql, cond = cond)));
                let q = match scope {
                    RecordScope::Appointment(id) => q.bind(id),
                    RecordScope::Therapist {
                        therapist_id,
                        from,
                        to,
                    } => q.bind(therapist_id).bind(from).bind(to),
                };
                q.fetch_all($pool).await?
            }};
        }
        let (sessions, participants, intervals, quality): (
            Vec<SessionRow>,
            Vec<ParticipantRecord>,
            Vec<IntervalRecord>,
            Vec<QualityRecord>,
        ) = on_pool!(self, pool => {
            let sessions = scoped!(pool,
                "SELECT s.id, s.appointment_id, s.started_at, s.last_seen_at, s.ended_at, s.end_reason
                 FROM video_sessions s WHERE {cond} ORDER BY s.started_at, s.id");
            let participants = scoped!(pool,
                "SELECT p.session_id, p.participant_id, p.user_id, u.display_name, p.role, p.knocked_at,
                        p.admitted_at, p.admitted_by, p.denied_at, p.left_at, p.left_reason, p.reconnects, p.path
                 FROM session_participants p
                 JOIN video_sessions s ON s.id = p.session_id
                 JOIN users u ON u.id = p.user_id
                 WHERE {cond}
                 ORDER BY p.role DESC, u.display_name");
            let intervals = scoped!(pool,
                "SELECT i.session_id, i.participant_id, i.connected_at, i.disconnected_at
                 FROM session_intervals i JOIN video_sessions s ON s.id = i.session_id
                 WHERE {cond} ORDER BY i.connected_at");
            let quality = scoped!(pool,
                "SELECT q.session_id, q.participant_id, q.minute, q.samples, q.rtt_ms_avg, q.rtt_ms_max,
                        q.jitter_ms_avg, q.packet_loss_avg, q.packet_loss_max, q.bitrate_kbps_avg,
                        q.frames_dropped, q.relay_samples
                 FROM session_quality q JOIN video_sessions s ON s.id = q.session_id
                 WHERE {cond} ORDER BY q.minute");
            (sessions, participants, intervals, quality)
        });
        // Rows grouped by session (keeping their order), then sessions by appointment.
        fn by_session<T>(rows: Vec<T>, key: impl Fn(&T) -> Uuid) -> HashMap<Uuid, Vec<T>> {
            let mut out: HashMap<Uuid, Vec<T>> = HashMap::new();
            for r in rows {
                out.entry(key(&r)).or_default().push(r);
            }
            out
        }
        let mut participants = by_session(participants, |p| p.session_id);
        let mut intervals = by_session(intervals, |i| i.session_id);
        let mut quality = by_session(quality, |q| q.session_id);
        let mut out: HashMap<Uuid, Vec<SessionRecord>> = HashMap::new();
        for s in sessions {
            out.entry(s.appointment_id)
                .or_default()
                .push(SessionRecord {
                    participants: participants.remove(&s.id).unwrap_or_default(),
                    intervals: intervals.remove(&s.id).unwrap_or_default(),
                    quality: quality.remove(&s.id).unwrap_or_default(),
                    session: s,
                });
        }
        Ok(out)
    }

    /// One page of the audit trail, newest first, with optional filters.
    pub async fn audit_page(
        &self,
        f: &AuditFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<AuditRow>, i64)> {
        let (from, to, actor_id) = (f.from, f.to, f.actor_id);
        let (action, target_id) = (f.action.as_deref(), f.target_id.as_deref());
        const WHERE: &str =
            "($1 IS NULL OR at >= $1) AND ($2 IS NULL OR at < $2) AND ($3 IS NULL OR actor_id = $3)
             AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR target_id = $5)";
        let out = on_pool!(self, pool => {
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT seq, at, actor_id, actor_role, action, target_type, target_id, details, prev_hash, hash
                 FROM audit_log WHERE {WHERE} ORDER BY seq DESC LIMIT $6 OFFSET $7"
            )))
            .bind(from)
            .bind(to)
            .bind(actor_id)
            .bind(action)
            .bind(target_id)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM audit_log WHERE {WHERE}")))
                .bind(from)
                .bind(to)
                .bind(actor_id)
                .bind(action)
                .bind(target_id)
                .fetch_one(pool)
                .await?;
            (rows, total)
        });
        Ok(out)
    }

    /// Walk the audit chain from its anchor to its head and report the first broken link.
    /// Rows appended after the head was read (a live server) are left for the next run.
    pub async fn verify_audit(&self) -> StoreResult<AuditVerdict> {
        let (head_seq, head_hash, purged, anchor): (i64, Vec<u8>, i64, Vec<u8>) = on_pool!(self, pool => {
            sqlx::query_as("SELECT seq, hash, purged_through_seq, anchor_hash FROM audit_head WHERE id = 1")
                .fetch_one(pool)
                .await?
        });
        let mut expected_seq = purged + 1;
        let mut prev = anchor;
        let mut rows = 0_i64;
        const BATCH: i64 = 1000;
        loop {
            let batch: Vec<AuditRow> = on_pool!(self, pool => {
                sqlx::query_as(
                    "SELECT seq, at, actor_id, actor_role, action, target_type, target_id, details, prev_hash, hash
                     FROM audit_log WHERE seq >= $1 AND seq <= $2 ORDER BY seq LIMIT $3",
                )
                .bind(expected_seq)
                .bind(head_seq)
                .bind(BATCH)
                .fetch_all(pool)
                .await?
            });
            if batch.is_empty() {
                break;
            }
            for r in &batch {
                if r.seq != expected_seq {
                    return Ok(AuditVerdict::Broken {
                        seq: expected_seq,
                        why: format!("row {expected_seq} is missing"),
                    });
                }
                if r.prev_hash != prev {
                    return Ok(AuditVerdict::Broken {
                        seq: r.seq,
                        why: "its previous-hash does not match the row before it".into(),
                    });
                }
                if r.link().hash(&r.prev_hash) != r.hash {
                    return Ok(AuditVerdict::Broken {
                        seq: r.seq,
                        why: "its content does not match its hash (edited)".into(),
                    });
                }
                prev = r.hash.clone();
                expected_seq += 1;
                rows += 1;
            }
        }
        // Rows before the first remaining one must have been purged, not deleted.
        let below: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM audit_log WHERE seq <= $1")
                .bind(purged)
                .fetch_one(pool)
                .await?
        });
        if below > 0 {
            return Ok(AuditVerdict::Broken {
                seq: purged,
                why: "rows below the purge anchor remain".into(),
            });
        }
        if expected_seq - 1 != head_seq {
            return Ok(AuditVerdict::Broken {
                seq: expected_seq,
                why: format!(
                    "the chain ends at {} but the head says {head_seq} (rows removed at the end)",
                    expected_seq - 1
                ),
            });
        }
        if head_seq > purged && prev != head_hash {
            return Ok(AuditVerdict::Broken {
                seq: head_seq,
                why: "the newest row does not match the head".into(),
            });
        }
        Ok(AuditVerdict::Intact {
            rows,
            head: head_seq,
        })
    }

    /// Retention: delete session records ended before `sessions_before`, audit rows before
    /// `audit_before` (moving the chain's anchor), finished webhook deliveries and ended
    /// sign-ins older than `housekeeping_before`.
    pub async fn purge(
        &self,
        sessions_before: Ts,
        audit_before: Ts,
        housekeeping_before: Ts,
    ) -> StoreResult<Purged> {
        let mut out = Purged::default();
        let lock = self.backend().for_update();
        on_pool!(self, pool => {
            out.sessions = sqlx::query("DELETE FROM video_sessions WHERE ended_at IS NOT NULL AND ended_at < $1")
                .bind(sessions_before)
                .execute(pool)
                .await?
                .rows_affected();
            let mut tx = pool.begin_write().await?;
            // Taken only to hold the chain's head while its start moves.
            let _: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT seq FROM audit_head WHERE id = 1{lock}"
            )))
            .fetch_one(&mut *tx)
            .await?;
            // The chain's prefix of rows that are all older than the cutoff (an old time can
            // follow a newer one: a lost session is closed at its last known time).
            let last: Option<(i64, Vec<u8>)> = sqlx::query_as(
                "SELECT seq, hash FROM audit_log
                 WHERE seq < COALESCE((SELECT MIN(seq) FROM audit_log WHERE at >= $1),
                                      (SELECT MAX(seq) FROM audit_log) + 1)
                 ORDER BY seq DESC LIMIT 1",
            )
            .bind(audit_before)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some((seq, hash)) = last {
                out.audit_rows = sqlx::query("DELETE FROM audit_log WHERE seq <= $1")
                    .bind(seq)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                sqlx::query("UPDATE audit_head SET purged_through_seq = $1, anchor_hash = $2 WHERE id = 1")
                    .bind(seq)
                    .bind(&hash)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            out.deliveries = sqlx::query(
                "DELETE FROM webhook_deliveries WHERE (delivered_at IS NOT NULL OR failed_at IS NOT NULL) AND created_at < $1",
            )
            .bind(housekeeping_before)
            .execute(pool)
            .await?
            .rows_affected();
        });
        out.sign_ins = self.purge_sessions(housekeeping_before).await?;
        Ok(out)
    }
}

/// A webhook delivery due for an attempt.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueDelivery {
    pub id: Uuid,
    pub url: String,
    pub event_type: String,
    pub payload: String,
    pub attempts: i32,
}

impl Db {
    /// Deliveries due now, oldest first.
    pub async fn due_deliveries(&self, now: Ts, limit: i64) -> StoreResult<Vec<DueDelivery>> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, url, event_type, payload, attempts FROM webhook_deliveries
                 WHERE delivered_at IS NULL AND failed_at IS NULL AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $2",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Record the outcome of an attempt: delivered, or when to try again (or given up).
    pub async fn delivery_attempted(
        &self,
        id: Uuid,
        status: Option<i32>,
        delivered: bool,
        next: Option<Ts>,
    ) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE webhook_deliveries SET attempts = attempts + 1, last_status = $1,
                        delivered_at = CASE WHEN $2 THEN $3 ELSE delivered_at END,
                        failed_at = CASE WHEN NOT $2 AND $4 IS NULL THEN $3 ELSE failed_at END,
                        next_attempt_at = COALESCE($4, next_attempt_at)
                 WHERE id = $5",
            )
            .bind(status)
            .bind(delivered)
            .bind(now)
            .bind(next)
            .bind(id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }
}

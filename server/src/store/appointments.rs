//! Appointments, their participants, their history, and calendar feed tokens.
//!
//! The rule "no person is in two live appointments at once" is held by the database (see
//! migrations 0002): every write here may fail with `StoreError::Conflict`, which
//! [`BookingError`] names.

use super::mail::{MailPlan, OutboxKind, drop_queued_mail, queue_mail};
use super::{Actor, AuditEntry, Db, StoreError, StoreResult, Ts, User, WritePool};
use crate::domain::{AppointmentKind, AppointmentStatus, Role};
use uuid::Uuid;

/// Append to an appointment's history inside the transaction `$tx`. A macro rather than a
/// generic function: a function generic over the executor makes the calling futures lose
/// `Send` (a known limit of higher-ranked bounds in async code).
macro_rules! insert_event {
    ($tx:expr, $appointment:expr, $at:expr, $actor:expr, $action:expr, $details:expr) => {
        sqlx::query(
            "INSERT INTO appointment_events (id, appointment_id, at, actor_id, action, details)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(Uuid::now_v7())
        .bind($appointment)
        .bind($at)
        .bind($actor)
        .bind($action)
        .bind($details.to_string())
        .execute(&mut *$tx)
        .await
    };
}

/// An appointment with its participants.
#[derive(Debug, Clone)]
pub struct Appointment {
    pub id: Uuid,
    pub therapist_id: Uuid,
    pub kind: AppointmentKind,
    pub starts_at: Ts,
    pub ends_at: Ts,
    pub status: AppointmentStatus,
    pub series_id: Option<Uuid>,
    pub created_by: Uuid,
    pub created_at: Ts,
    pub cancelled_at: Option<Ts>,
    pub cancelled_by: Option<Uuid>,
    pub cancel_reason: Option<String>,
    pub late_cancellation: bool,
    pub auto_admit: bool,
    pub revision: i32,
    pub participants: Vec<Participant>,
}

impl Appointment {
    pub fn is_participant(&self, user_id: Uuid) -> bool {
        self.participants.iter().any(|p| p.user_id == user_id)
    }

    pub fn clients(&self) -> impl Iterator<Item = &Participant> {
        self.participants.iter().filter(|p| p.role == Role::Client)
    }

    pub fn therapist(&self) -> Option<&Participant> {
        self.participants.iter().find(|p| p.role == Role::Therapist)
    }

    /// Whether the therapist turned this account away from the session (and has not let it
    /// knock again).
    pub fn denied(&self, user_id: Uuid) -> bool {
        self.participants
            .iter()
            .any(|p| p.user_id == user_id && p.denied_at.is_some())
    }
}

/// A person taking part in an appointment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Participant {
    pub user_id: Uuid,
    pub role: Role,
    pub display_name: String,
    /// When the therapist turned this client away from the session, until they lift it.
    pub denied_at: Option<Ts>,
}

#[derive(sqlx::FromRow)]
struct AppointmentRow {
    id: Uuid,
    therapist_id: Uuid,
    kind: String,
    starts_at: Ts,
    ends_at: Ts,
    status: String,
    series_id: Option<Uuid>,
    created_by: Uuid,
    created_at: Ts,
    cancelled_at: Option<Ts>,
    cancelled_by: Option<Uuid>,
    cancel_reason: Option<String>,
    late_cancellation: bool,
    auto_admit: bool,
    revision: i32,
}

#[derive(sqlx::FromRow)]
struct ParticipantRow {
    appointment_id: Uuid,
    user_id: Uuid,
    role: String,
    display_name: String,
    denied_at: Option<Ts>,
}

const APPOINTMENT_COLUMNS: &str = "a.id, a.therapist_id, a.kind, a.starts_at, a.ends_at, a.status,
    a.series_id, a.created_by, a.created_at, a.cancelled_at, a.cancelled_by, a.cancel_reason,
    a.late_cancellation, a.auto_admit, a.revision";

fn decode_err(e: crate::domain::Invalid) -> StoreError {
    StoreError::Sqlx(sqlx::Error::Decode(e.0.into()))
}

fn assemble(
    rows: Vec<AppointmentRow>,
    parts: Vec<ParticipantRow>,
) -> StoreResult<Vec<Appointment>> {
    rows.into_iter()
        .map(|r| {
            let mut participants = parts
                .iter()
                .filter(|p| p.appointment_id == r.id)
                .map(|p| {
                    Ok(Participant {
                        user_id: p.user_id,
                        role: p.role.parse().map_err(decode_err)?,
                        display_name: p.display_name.clone(),
                        denied_at: p.denied_at,
                    })
                })
                .collect::<StoreResult<Vec<_>>>()?;
            // The therapist first, then clients by name.
            participants.sort_by(|a, b| {
                (a.role != Role::Therapist, &a.display_name)
                    .cmp(&(b.role != Role::Therapist, &b.display_name))
            });
            Ok(Appointment {
                id: r.id,
                therapist_id: r.therapist_id,
                kind: AppointmentKind::parse(&r.kind).map_err(decode_err)?,
                starts_at: r.starts_at,
                ends_at: r.ends_at,
                status: AppointmentStatus::parse(&r.status).map_err(decode_err)?,
                series_id: r.series_id,
                created_by: r.created_by,
                created_at: r.created_at,
                cancelled_at: r.cancelled_at,
                cancelled_by: r.cancelled_by,
                cancel_reason: r.cancel_reason,
                late_cancellation: r.late_cancellation,
                auto_admit: r.auto_admit,
                revision: r.revision,
                participants,
            })
        })
        .collect()
}

/// A new appointment, checked by the caller (slot, roles).
#[derive(Debug, Clone)]
pub struct NewAppointment {
    pub therapist_id: Uuid,
    pub client_ids: Vec<Uuid>,
    pub kind: AppointmentKind,
    pub starts_at: Ts,
    pub ends_at: Ts,
    /// The therapist's buffer at booking time: their time is held this much longer.
    pub buffer_minutes: i32,
    pub created_by: Uuid,
    pub series_id: Option<Uuid>,
}

/// Why a booking or a move was refused by the database.
#[derive(Debug, thiserror::Error)]
pub enum BookingError {
    /// Someone taking part already has a live appointment at that time.
    #[error("overlaps another appointment")]
    Overlap,
    /// The client already had their free consultation with this therapist.
    #[error("consultation already used")]
    ConsultationUsed,
    /// The appointment is no longer `booked`.
    #[error("appointment not booked")]
    NotBooked,
    #[error(transparent)]
    Store(StoreError),
}

impl From<sqlx::Error> for BookingError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::from(e).into()
    }
}

impl From<StoreError> for BookingError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(name) if name.contains("no_overlapping_appointments") => {
                BookingError::Overlap
            }
            StoreError::Conflict(name) if name.contains("consultations") => {
                BookingError::ConsultationUsed
            }
            other => BookingError::Store(other),
        }
    }
}

/// One entry of an appointment's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AppointmentEvent {
    pub at: Ts,
    pub actor_id: Option<Uuid>,
    pub action: String,
    /// JSON object.
    pub details: String,
}

fn plus_minutes(t: Ts, minutes: i32) -> Ts {
    Ts::from(t.get() + jiff::SignedDuration::from_mins(i64::from(minutes)))
}

/// Filters of an appointment list.
#[derive(Debug, Clone, Default)]
pub struct AppointmentFilter {
    /// Only appointments this account takes part in (`None`: all, for admins).
    pub participant: Option<Uuid>,
    pub from: Option<Ts>,
    pub to: Option<Ts>,
    pub status: Option<AppointmentStatus>,
}

const LIST_WHERE: &str = "($1 IS NULL OR EXISTS (SELECT 1 FROM appointment_participants q
                           WHERE q.appointment_id = a.id AND q.user_id = $1))
      AND ($2 IS NULL OR a.starts_at >= $2)
      AND ($3 IS NULL OR a.starts_at < $3)
      AND ($4 IS NULL OR a.status = $4)";

impl Db {
    /// Insert appointments in one transaction: all are written or none. On a conflict the
    /// error names the first refused one by index. With `mail`, each participant's
    /// confirmation and reminders are queued in the same transaction.
    pub async fn create_appointments(
        &self,
        new: &[NewAppointment],
        actor: Option<&Actor>,
        mail: Option<&MailPlan>,
    ) -> Result<Vec<Uuid>, (usize, BookingError)> {
        let now = Ts::now();
        let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
        let result: Result<(), (usize, BookingError)> = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(|e| (0, e.into()))?;
            for (i, (n, id)) in new.iter().zip(&ids).enumerate() {
                let at = |e: sqlx::Error| (i, BookingError::from(e));
                sqlx::query(
                    "INSERT INTO appointments (id, therapist_id, kind, starts_at, ends_at, status,
                        series_id, created_by, created_at, updated_at)
                     VALUES ($1, $2, $3, $4, $5, 'booked', $6, $7, $8, $8)",
                )
                .bind(id)
                .bind(n.therapist_id)
                .bind(n.kind.as_str())
                .bind(n.starts_at)
                .bind(n.ends_at)
                .bind(n.series_id)
                .bind(n.created_by)
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(at)?;
                let mut people = vec![(n.therapist_id, "therapist", plus_minutes(n.ends_at, n.buffer_minutes))];
                people.extend(n.client_ids.iter().map(|c| (*c, "client", n.ends_at)));
                for (user, role, until) in people {
                    sqlx::query(
                        "INSERT INTO appointment_participants (appointment_id, user_id, role, starts_at, blocks_until, live)
                         VALUES ($1, $2, $3, $4, $5, TRUE)",
                    )
                    .bind(id)
                    .bind(user)
                    .bind(role)
                    .bind(n.starts_at)
                    .bind(until)
                    .execute(&mut *tx)
                    .await
                    .map_err(at)?;
                }
                // A client's own booking starts (or continues) their relationship with the
                // therapist, who may then book further appointments for them.
                if n.created_by != n.therapist_id && n.client_ids.contains(&n.created_by) {
                    sqlx::query(
                        "INSERT INTO care_relationships (therapist_id, client_id, since, source)
                         VALUES ($1, $2, $3, 'booking') ON CONFLICT (therapist_id, client_id) DO NOTHING",
                    )
                    .bind(n.therapist_id)
                    .bind(n.created_by)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(at)?;
                }
                if n.kind == AppointmentKind::Consultation {
                    for c in &n.client_ids {
                        sqlx::query(
                            "INSERT INTO consultations (therapist_id, client_id, appointment_id) VALUES ($1, $2, $3)",
                        )
                        .bind(n.therapist_id)
                        .bind(c)
                        .bind(id)
                        .execute(&mut *tx)
                        .await
                        .map_err(at)?;
                    }
                }
                let details = serde_json::json!({
                    "kind": n.kind.as_str(),
                    "starts_at": n.starts_at.to_string(),
                    "ends_at": n.ends_at.to_string(),
                    "clients": n.client_ids,
                    "series_id": n.series_id,
                });
                insert_event!(tx, *id, now, Some(n.created_by), "created", &details)
                    .map_err(at)?;
                let mut people = vec![n.therapist_id];
                people.extend(&n.client_ids);
                let rows = MailPlan::rows(mail, OutboxKind::Confirmation, &people, n.starts_at, None, now);
                async {
                    queue_mail!(tx, *id, &rows, now);
                    Ok::<(), sqlx::Error>(())
                }
                .await
                .map_err(at)?;
            }
            // The audit trail's head is one row that every audited write locks (PostgreSQL):
            // append last, so that lock is held for the least time and is never held while
            // this transaction waits on another booking's rows.
            async {
                for (n, id) in new.iter().zip(&ids) {
                    let audit = AuditEntry::new(actor, "appointment.create", "appointment", Some(id.to_string()), serde_json::json!({"series_id": n.series_id}));
                    append_audit!(self, tx, now, &audit);
                }
                Ok::<(), sqlx::Error>(())
            }
            .await
            .map_err(|e| (0, e.into()))?;
            tx.commit().await.map_err(|e| (0, e.into()))?;
            Ok(())
        });
        result.map(|()| ids)
    }

    /// One appointment with its participants.
    pub async fn appointment(&self, id: Uuid) -> StoreResult<Option<Appointment>> {
        let (rows, parts): (Vec<AppointmentRow>, Vec<ParticipantRow>) = on_pool!(self, pool => {
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {APPOINTMENT_COLUMNS} FROM appointments a WHERE a.id = $1"
            )))
            .bind(id)
            .fetch_all(pool)
            .await?;
            let parts = sqlx::query_as(
                "SELECT p.appointment_id, p.user_id, p.role, u.display_name, p.denied_at
                 FROM appointment_participants p JOIN users u ON u.id = p.user_id
                 WHERE p.appointment_id = $1",
            )
            .bind(id)
            .fetch_all(pool)
            .await?;
            (rows, parts)
        });
        Ok(assemble(rows, parts)?.pop())
    }

    /// A page of appointments ordered by start, and the number matching in all.
    pub async fn list_appointments(
        &self,
        f: &AppointmentFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<Appointment>, i64)> {
        let status = f.status.map(AppointmentStatus::as_str);
        let (rows, parts, total): (Vec<AppointmentRow>, Vec<ParticipantRow>, i64) = on_pool!(self, pool => {
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {APPOINTMENT_COLUMNS} FROM appointments a WHERE {LIST_WHERE}
                 ORDER BY a.starts_at, a.id LIMIT $5 OFFSET $6"
            )))
            .bind(f.participant)
            .bind(f.from)
            .bind(f.to)
            .bind(status)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let parts = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT p.appointment_id, p.user_id, p.role, u.display_name, p.denied_at
                 FROM appointment_participants p JOIN users u ON u.id = p.user_id
                 WHERE p.appointment_id IN (
                     SELECT a.id FROM appointments a WHERE {LIST_WHERE}
                     ORDER BY a.starts_at, a.id LIMIT $5 OFFSET $6)"
            )))
            .bind(f.participant)
            .bind(f.from)
            .bind(f.to)
            .bind(status)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM appointments a WHERE {LIST_WHERE}"
            )))
            .bind(f.participant)
            .bind(f.from)
            .bind(f.to)
            .bind(status)
            .fetch_one(pool)
            .await?;
            (rows, parts, total)
        });
        Ok((assemble(rows, parts)?, total))
    }

    /// Whether the client already has (or had) their consultation with this therapist.
    pub async fn consultation_used(
        &self,
        therapist_id: Uuid,
        client_id: Uuid,
    ) -> StoreResult<bool> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT COUNT(*) FROM consultations WHERE therapist_id = $1 AND client_id = $2")
                .bind(therapist_id)
                .bind(client_id)
                .fetch_one(pool)
                .await?
        });
        Ok(n > 0)
    }

    /// Cancel a booked appointment: it stops holding its time, a consultation can be
    /// booked again, and the history records who and whether it was late.
    pub async fn cancel_appointment(
        &self,
        id: Uuid,
        actor: &Actor,
        reason: Option<&str>,
        late: bool,
        mail: Option<&MailPlan>,
    ) -> Result<(), BookingError> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let starts_at: Option<Ts> = sqlx::query_scalar(
                "UPDATE appointments SET status = 'cancelled', cancelled_at = $1, cancelled_by = $2,
                        cancel_reason = $3, late_cancellation = $4, updated_at = $1,
                        revision = revision + 1
                 WHERE id = $5 AND status = 'booked' RETURNING starts_at",
            )
            .bind(now)
            .bind(actor.id)
            .bind(reason)
            .bind(late)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(starts_at) = starts_at else {
                return Err(BookingError::NotBooked);
            };
            // Every participant hears of it; what was still to come about it is not sent.
            let people: Vec<Uuid> = sqlx::query_scalar(
                "SELECT user_id FROM appointment_participants WHERE appointment_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            drop_queued_mail!(tx, id, None::<Uuid>, "('confirmation', 'reminder', 'rescheduled')", "cancelled", now)?;
            let rows = MailPlan::rows(mail, OutboxKind::Cancelled, &people, starts_at, None, now);
            queue_mail!(tx, id, &rows, now);
            sqlx::query("UPDATE appointment_participants SET live = FALSE WHERE appointment_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM consultations WHERE appointment_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let details = serde_json::json!({ "late_cancellation": late, "reason_given": reason.is_some() });
            insert_event!(tx, id, now, Some(actor.id), "cancelled", &details)?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "appointment.cancel", "appointment", Some(id.to_string()), details.clone()));
            tx.commit().await?;
            Ok(())
        })
    }

    /// Move a booked appointment, keeping its length: the appointment and its participants
    /// move together, or nothing changes.
    pub async fn reschedule_appointment(
        &self,
        id: Uuid,
        actor: &Actor,
        starts_at: Ts,
        ends_at: Ts,
        buffer_minutes: i32,
        mail: Option<&MailPlan>,
    ) -> Result<(), BookingError> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // Claimed first (the row locked on PostgreSQL), so the time it moves from is the
            // time it had, whatever else is changing it.
            let (old_start, _) = Self::claim_booked(&mut tx, id, now).await?;
            sqlx::query("UPDATE appointments SET starts_at = $1, ends_at = $2 WHERE id = $3")
                .bind(starts_at)
                .bind(ends_at)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "UPDATE appointment_participants SET starts_at = $1,
                        blocks_until = CASE role WHEN 'therapist' THEN $2 ELSE $3 END
                 WHERE appointment_id = $4",
            )
            .bind(starts_at)
            .bind(plus_minutes(ends_at, buffer_minutes))
            .bind(ends_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            // Reminders move with it (the old ones are dropped, new ones queued); a
            // confirmation not yet sent confirms the new time; every participant is told.
            let people: Vec<Uuid> = sqlx::query_scalar(
                "SELECT user_id FROM appointment_participants WHERE appointment_id = $1",
            )
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
            drop_queued_mail!(tx, id, None::<Uuid>, "('reminder', 'rescheduled')", "moved", now)?;
            sqlx::query(
                "UPDATE mail_outbox SET starts_at = $1 WHERE appointment_id = $2
                   AND kind = 'confirmation' AND sent_at IS NULL AND dropped_at IS NULL",
            )
            .bind(starts_at)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            let rows = MailPlan::rows(mail, OutboxKind::Rescheduled, &people, starts_at, Some(old_start), now);
            queue_mail!(tx, id, &rows, now);
            let details = serde_json::json!({ "from": old_start.to_string(), "to": starts_at.to_string() });
            insert_event!(tx, id, now, Some(actor.id), "rescheduled", &details)?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "appointment.reschedule", "appointment", Some(id.to_string()), details.clone()));
            tx.commit().await?;
            Ok(())
        })
    }

    /// Mark a booked appointment that has started as `completed` or `no_show`.
    pub async fn set_appointment_outcome(
        &self,
        id: Uuid,
        actor: Option<&Actor>,
        status: AppointmentStatus,
    ) -> Result<(), BookingError> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE appointments SET status = $1, updated_at = $2, revision = revision + 1
                 WHERE id = $3 AND status = 'booked'",
            )
            .bind(status.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(BookingError::NotBooked);
            }
            let details = serde_json::json!({ "from": "booked", "to": status.as_str() });
            insert_event!(tx, id, now, actor.map(|a| a.id), "status_changed", &details)?;
            append_audit!(self, tx, now, &AuditEntry::new(actor, "appointment.status", "appointment", Some(id.to_string()), details.clone()));
            tx.commit().await?;
            Ok(())
        })
    }

    /// Claim a booked appointment for a change of its participants: bumps its revision and,
    /// on PostgreSQL, locks its row until the transaction ends, so that a concurrent cancel,
    /// move or other participant change waits and then sees this one. Returns its times.
    async fn claim_booked<DB>(
        tx: &mut super::WriteTx<DB>,
        id: Uuid,
        now: Ts,
    ) -> Result<(Ts, Ts), BookingError>
    where
        DB: sqlx::Database,
        for<'e> &'e mut DB::Connection: sqlx::Executor<'e, Database = DB>,
        for<'q> <DB as sqlx::Database>::Arguments: sqlx::IntoArguments<DB>,
        Ts: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB> + for<'r> sqlx::Decode<'r, DB>,
        Uuid: for<'q> sqlx::Encode<'q, DB> + sqlx::Type<DB>,
        String: for<'r> sqlx::Decode<'r, DB> + sqlx::Type<DB>,
        (Ts, Ts): for<'r> sqlx::FromRow<'r, DB::Row>,
        usize: sqlx::ColumnIndex<DB::Row>,
    {
        let row: Option<(Ts, Ts)> = sqlx::query_as(
            "UPDATE appointments SET revision = revision + 1, updated_at = $1
             WHERE id = $2 AND status = 'booked' RETURNING starts_at, ends_at",
        )
        .bind(now)
        .bind(id)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(times) = row {
            return Ok(times);
        }
        let exists: Option<String> =
            sqlx::query_scalar("SELECT status FROM appointments WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut **tx)
                .await?;
        Err(match exists {
            None => BookingError::Store(StoreError::NotFound),
            Some(_) => BookingError::NotBooked,
        })
    }

    /// Add a client to a booked appointment (group sessions hold up to `max_clients`).
    pub async fn add_participant(
        &self,
        id: Uuid,
        actor: &Actor,
        client_id: Uuid,
        max_clients: i64,
        mail: Option<&MailPlan>,
    ) -> Result<(), AddParticipantError> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(BookingError::from)?;
            let (starts_at, ends_at) = Self::claim_booked(&mut tx, id, now).await?;
            let (clients, already): (i64, i64) = sqlx::query_as(
                "SELECT COUNT(*) FILTER (WHERE role = 'client'), COUNT(*) FILTER (WHERE user_id = $2)
                 FROM appointment_participants WHERE appointment_id = $1",
            )
            .bind(id)
            .bind(client_id)
            .fetch_one(&mut *tx)
            .await
            .map_err(BookingError::from)?;
            if already > 0 {
                return Err(AddParticipantError::AlreadyIn);
            }
            if clients >= max_clients {
                return Err(AddParticipantError::Full);
            }
            sqlx::query(
                "INSERT INTO appointment_participants (appointment_id, user_id, role, starts_at, blocks_until, live)
                 VALUES ($1, $2, 'client', $3, $4, TRUE)",
            )
            .bind(id)
            .bind(client_id)
            .bind(starts_at)
            .bind(ends_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(name) if !name.contains("no_overlapping") => AddParticipantError::AlreadyIn,
                other => BookingError::from(other).into(),
            })?;
            let details = serde_json::json!({ "client": client_id });
            let rows = MailPlan::rows(mail, OutboxKind::Confirmation, &[client_id], starts_at, None, now);
            async {
                queue_mail!(tx, id, &rows, now);
                insert_event!(tx, id, now, Some(actor.id), "participant_added", &details)?;
                append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "appointment.participant_add", "appointment", Some(id.to_string()), details.clone()));
                tx.commit().await?;
                Ok::<(), sqlx::Error>(())
            }
            .await
            .map_err(BookingError::from)?;
            Ok(())
        })
    }

    /// Remove a client from a booked appointment; the last client cannot be removed (cancel
    /// the appointment instead).
    pub async fn remove_participant(
        &self,
        id: Uuid,
        actor: &Actor,
        client_id: Uuid,
    ) -> Result<(), AddParticipantError> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await.map_err(BookingError::from)?;
            Self::claim_booked(&mut tx, id, now).await?;
            let clients: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM appointment_participants WHERE appointment_id = $1 AND role = 'client'",
            )
            .bind(id)
            .fetch_one(&mut *tx)
            .await
            .map_err(BookingError::from)?;
            if clients <= 1 {
                return Err(AddParticipantError::LastClient);
            }
            let n = sqlx::query(
                "DELETE FROM appointment_participants WHERE appointment_id = $1 AND user_id = $2 AND role = 'client'",
            )
            .bind(id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(BookingError::from)?
            .rows_affected();
            if n == 0 {
                return Err(AddParticipantError::NotIn);
            }
            let details = serde_json::json!({ "client": client_id });
            async {
                drop_queued_mail!(tx, id, Some(client_id), "('confirmation', 'reminder', 'rescheduled')", "not_participant", now)?;
                insert_event!(tx, id, now, Some(actor.id), "participant_removed", &details)?;
                append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "appointment.participant_remove", "appointment", Some(id.to_string()), details.clone()));
                tx.commit().await?;
                Ok::<(), sqlx::Error>(())
            }
            .await
            .map_err(BookingError::from)?;
            Ok(())
        })
    }

    /// Let clients in without admission (or not).
    /// Let a turned-away client knock again; false when they were not turned away.
    pub async fn lift_denial(&self, id: Uuid, actor: &Actor, client_id: Uuid) -> StoreResult<bool> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE appointment_participants SET denied_at = NULL, denied_by = NULL
                 WHERE appointment_id = $1 AND user_id = $2 AND denied_at IS NOT NULL",
            )
            .bind(id)
            .bind(client_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Ok(false);
            }
            let details = serde_json::json!({ "client": client_id });
            insert_event!(tx, id, now, Some(actor.id), "denial_lifted", &details)?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "waiting_room.denial_lifted", "appointment", Some(id.to_string()), details.clone()));
            tx.commit().await?;
            Ok(true)
        })
    }

    pub async fn set_auto_admit(&self, id: Uuid, actor: &Actor, on: bool) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("UPDATE appointments SET auto_admit = $1, updated_at = $2 WHERE id = $3")
                .bind(on)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let details = serde_json::json!({ "auto_admit": on });
            insert_event!(tx, id, now, Some(actor.id), "auto_admit_changed", &details)?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(actor), "appointment.auto_admit", "appointment", Some(id.to_string()), details.clone()));
            tx.commit().await?;
            Ok(())
        })
    }

    /// The history of an appointment, oldest first.
    pub async fn appointment_history(&self, id: Uuid) -> StoreResult<Vec<AppointmentEvent>> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT at, actor_id, action, details FROM appointment_events
                 WHERE appointment_id = $1 ORDER BY at, id",
            )
            .bind(id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Set (or replace) an account's calendar feed token hash.
    pub async fn set_calendar_feed(&self, user_id: Uuid, token_hash: &[u8]) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            sqlx::query(
                "INSERT INTO calendar_feeds (user_id, token_hash, created_at) VALUES ($1, $2, $3)
                 ON CONFLICT (user_id) DO UPDATE SET token_hash = excluded.token_hash, created_at = excluded.created_at",
            )
            .bind(user_id)
            .bind(token_hash)
            .bind(now)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Revoke an account's calendar feed; returns whether there was one.
    pub async fn delete_calendar_feed(&self, user_id: Uuid) -> StoreResult<bool> {
        let n = on_pool!(self, pool => {
            sqlx::query("DELETE FROM calendar_feeds WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// The active account a calendar feed token belongs to.
    pub async fn calendar_feed_user(&self, token_hash: &[u8]) -> StoreResult<Option<User>> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, User>(
                "SELECT u.id, u.email, u.display_name, u.role, u.disabled, u.created_at
                 FROM calendar_feeds f JOIN users u ON u.id = f.user_id
                 WHERE f.token_hash = $1 AND u.disabled = FALSE",
            )
            .bind(token_hash)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }
}

/// Why a participant could not be added or removed.
#[derive(Debug, thiserror::Error)]
pub enum AddParticipantError {
    #[error("the appointment already has the most clients it can")]
    Full,
    #[error("already a participant")]
    AlreadyIn,
    #[error("not a participant")]
    NotIn,
    #[error("the last client cannot be removed")]
    LastClient,
    #[error(transparent)]
    Booking(#[from] BookingError),
}

//! The mail outbox (order 11) and each person's mail settings.
//!
//! Rows are queued by the booking, change and cancellation writes themselves, inside their
//! transactions (see [`queue_mail!`] and [`MailPlan`]), so the message and its cause are
//! committed together or not at all. A worker on every node claims due rows with a lease
//! (`claimed_until`, and `FOR UPDATE SKIP LOCKED` on PostgreSQL), sends them, and marks
//! them sent, retried later, or dropped with a reason. A row holds no content: the
//! message is built when it is sent, from the appointment as it is then.

use super::{Backend, Db, StoreResult, Ts, WritePool as _};
use std::time::Duration;
use uuid::Uuid;

/// What an outbox row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxKind {
    Confirmation,
    Reminder,
    Rescheduled,
    Cancelled,
}

impl OutboxKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxKind::Confirmation => "confirmation",
            OutboxKind::Reminder => "reminder",
            OutboxKind::Rescheduled => "rescheduled",
            OutboxKind::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "confirmation" => OutboxKind::Confirmation,
            "reminder" => OutboxKind::Reminder,
            "rescheduled" => OutboxKind::Rescheduled,
            "cancelled" => OutboxKind::Cancelled,
            _ => return None,
        })
    }
}

/// Which messages appointment writes queue: present when this deployment sends mail.
#[derive(Debug, Clone, Default)]
pub struct MailPlan {
    /// Lead times of the reminders (`ALCOVE_REMINDERS`).
    pub reminders: Vec<Duration>,
}

/// One row to queue.
#[derive(Debug, Clone)]
pub struct QueuedMail {
    pub id: Uuid,
    pub user_id: Uuid,
    pub kind: OutboxKind,
    pub starts_at: Ts,
    pub previous_starts_at: Option<Ts>,
    pub lead_seconds: Option<i64>,
    pub due_at: Ts,
}

impl MailPlan {
    /// The rows a change queues for `users`: the notice of `kind` now (none for a bare
    /// reminder plan) and, unless the appointment is cancelled, a reminder at each lead
    /// time still ahead.
    pub fn rows(
        plan: Option<&MailPlan>,
        kind: OutboxKind,
        users: &[Uuid],
        starts_at: Ts,
        previous_starts_at: Option<Ts>,
        now: Ts,
    ) -> Vec<QueuedMail> {
        let Some(plan) = plan else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for user in users {
            out.push(QueuedMail {
                id: Uuid::now_v7(),
                user_id: *user,
                kind,
                starts_at,
                previous_starts_at,
                lead_seconds: None,
                due_at: now,
            });
            if kind == OutboxKind::Cancelled {
                continue;
            }
            for lead in &plan.reminders {
                let Ok(lead_sd) = jiff::SignedDuration::try_from(*lead) else {
                    continue;
                };
                let due = starts_at.get() - lead_sd;
                if due <= now.get() {
                    // Booked (or moved) inside this lead time: the notice says it all.
                    continue;
                }
                out.push(QueuedMail {
                    id: Uuid::now_v7(),
                    user_id: *user,
                    kind: OutboxKind::Reminder,
                    starts_at,
                    previous_starts_at: None,
                    lead_seconds: Some(lead.as_secs() as i64),
                    due_at: due.into(),
                });
            }
        }
        out
    }
}

/// Queue `$rows` (a `&[QueuedMail]`) inside the transaction `$tx`. A macro for the same
/// reason as the appointments' `insert_event!`.
macro_rules! queue_mail {
    ($tx:expr, $appointment:expr, $rows:expr, $now:expr) => {{
        for r in $rows {
            let r: &$crate::store::mail::QueuedMail = r;
            sqlx::query(
                "INSERT INTO mail_outbox (id, appointment_id, user_id, kind, starts_at,
                    previous_starts_at, lead_seconds, due_at, created_at, next_attempt_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)",
            )
            .bind(r.id)
            .bind($appointment)
            .bind(r.user_id)
            .bind(r.kind.as_str())
            .bind(r.starts_at)
            .bind(r.previous_starts_at)
            .bind(r.lead_seconds)
            .bind(r.due_at)
            .bind($now)
            .execute(&mut *$tx)
            .await?;
        }
    }};
}

/// Drop the waiting rows of an appointment (of one user, or all) that a change made
/// pointless, inside `$tx`: `$kinds` is a SQL list such as `('reminder')`.
macro_rules! drop_queued_mail {
    ($tx:expr, $appointment:expr, $user:expr, $kinds:literal, $reason:expr, $now:expr) => {
        sqlx::query(concat!(
            "UPDATE mail_outbox SET dropped_at = $1, dropped_reason = $2
             WHERE appointment_id = $3 AND ($4 IS NULL OR user_id = $4)
               AND sent_at IS NULL AND dropped_at IS NULL AND kind IN ",
            $kinds
        ))
        .bind($now)
        .bind($reason)
        .bind($appointment)
        .bind($user)
        .execute(&mut *$tx)
        .await
    };
}

pub(crate) use {drop_queued_mail, queue_mail};

/// A row claimed for sending.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueMail {
    pub id: Uuid,
    pub appointment_id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub starts_at: Ts,
    pub previous_starts_at: Option<Ts>,
    pub lead_seconds: Option<i64>,
    pub attempts: i32,
    pub created_at: Ts,
    /// This node's claim, as the database holds it: every later write about the row is
    /// conditional on it, so a node whose lease ran out cannot touch another node's claim.
    pub claimed_until: Ts,
}

/// What a recipient's mail needs of their account.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    pub email: String,
    pub display_name: String,
    pub disabled: bool,
    pub email_reminders: bool,
    /// Their own time zone, else (a therapist) their profile's.
    pub time_zone: Option<String>,
    /// The language of their mail (`en`, `de`, `es`; none: English).
    pub language: Option<String>,
}

/// A person's mail settings.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct MailSettings {
    pub email_reminders: bool,
    pub time_zone: Option<String>,
    /// The language of the web client and of mail, kept with the account.
    pub language: Option<String>,
}

/// One outbox row as the tests and operators see it (no content: there is none).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OutboxRow {
    pub id: Uuid,
    pub appointment_id: Uuid,
    pub user_id: Uuid,
    pub kind: String,
    pub starts_at: Ts,
    pub due_at: Ts,
    pub attempts: i32,
    pub sent_at: Option<Ts>,
    pub dropped_at: Option<Ts>,
    pub dropped_reason: Option<String>,
}

impl Backend {
    /// The suffix of a claiming sub-`SELECT`: PostgreSQL skips rows another node is
    /// claiming; SQLite serves one node and serialises its writes.
    fn skip_locked(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        }
    }
}

impl Db {
    /// Claim up to `limit` due rows until `lease` from now: no other node takes them
    /// meanwhile. A node that dies holding a claim loses it when the lease ends.
    pub async fn claim_mail(
        &self,
        now: Ts,
        lease: Duration,
        limit: i64,
    ) -> StoreResult<Vec<DueMail>> {
        let until: Ts =
            (now.get() + jiff::SignedDuration::try_from(lease).unwrap_or_default()).into();
        let skip = self.backend().skip_locked();
        let rows = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "UPDATE mail_outbox SET claimed_until = $1
                 WHERE id IN (
                     SELECT id FROM mail_outbox
                     WHERE sent_at IS NULL AND dropped_at IS NULL AND next_attempt_at <= $2
                       AND (claimed_until IS NULL OR claimed_until <= $2)
                     ORDER BY next_attempt_at LIMIT $3{skip})
                   AND sent_at IS NULL AND dropped_at IS NULL
                   AND (claimed_until IS NULL OR claimed_until <= $2)
                 RETURNING id, appointment_id, user_id, kind, starts_at, previous_starts_at,
                           lead_seconds, attempts, created_at, claimed_until"
            )))
            .bind(until)
            .bind(now)
            .bind(limit)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// The row went out: mark it sent and, for a reminder, note in the appointment's
    /// history when and to whom (never what it said), together.
    pub async fn mail_sent(&self, row: &DueMail, now: Ts) -> StoreResult<bool> {
        let marked = on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE mail_outbox SET sent_at = $1, attempts = attempts + 1, claimed_until = NULL
                 WHERE id = $2 AND claimed_until = $3 AND sent_at IS NULL AND dropped_at IS NULL",
            )
            .bind(now)
            .bind(row.id)
            .bind(row.claimed_until)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n > 0 && row.kind == OutboxKind::Reminder.as_str() {
                let details = serde_json::json!({
                    "participant": row.user_id,
                    "lead_seconds": row.lead_seconds,
                    "channel": "email",
                });
                sqlx::query(
                    "INSERT INTO appointment_events (id, appointment_id, at, actor_id, action, details)
                     VALUES ($1, $2, $3, NULL, 'reminder_sent', $4)",
                )
                .bind(Uuid::now_v7())
                .bind(row.appointment_id)
                .bind(now)
                .bind(details.to_string())
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            n > 0
        });
        Ok(marked)
    }

    /// The mail server could not take the row now: try again at `next`.
    pub async fn mail_retry(&self, row: &DueMail, next: Ts) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE mail_outbox SET attempts = attempts + 1, next_attempt_at = $1, claimed_until = NULL
                 WHERE id = $2 AND claimed_until = $3 AND sent_at IS NULL AND dropped_at IS NULL",
            )
            .bind(next)
            .bind(row.id)
            .bind(row.claimed_until)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Give a claimed row back untried (the mail server is down; this node is stopping; too
    /// little of the claim is left to send it).
    pub async fn mail_release(&self, row: &DueMail) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE mail_outbox SET claimed_until = NULL
                 WHERE id = $1 AND claimed_until = $2 AND sent_at IS NULL AND dropped_at IS NULL",
            )
            .bind(row.id)
            .bind(row.claimed_until)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The row will not be sent (`reason`: see the migration).
    pub async fn mail_dropped(&self, row: &DueMail, now: Ts, reason: &str) -> StoreResult<()> {
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE mail_outbox SET dropped_at = $1, dropped_reason = $2, claimed_until = NULL
                 WHERE id = $3 AND claimed_until = $4 AND sent_at IS NULL AND dropped_at IS NULL",
            )
            .bind(now)
            .bind(reason)
            .bind(row.id)
            .bind(row.claimed_until)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// What a message to `user` needs of their account.
    pub async fn recipient(&self, user: Uuid) -> StoreResult<Option<Recipient>> {
        let r = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT u.email, u.display_name, u.disabled, u.email_reminders,
                        COALESCE(u.time_zone, p.time_zone) AS time_zone, u.language
                 FROM users u LEFT JOIN therapist_profiles p ON p.user_id = u.id
                 WHERE u.id = $1",
            )
            .bind(user)
            .fetch_optional(pool)
            .await?
        });
        Ok(r)
    }

    /// A person's mail settings.
    pub async fn mail_settings(&self, user: Uuid) -> StoreResult<MailSettings> {
        let r: Option<MailSettings> = on_pool!(self, pool => {
            sqlx::query_as("SELECT email_reminders, time_zone, language FROM users WHERE id = $1")
                .bind(user)
                .fetch_optional(pool)
                .await?
        });
        r.ok_or(super::StoreError::NotFound)
    }

    /// Change a person's mail settings. Switching reminders off drops their reminders
    /// still waiting, in the same transaction.
    pub async fn set_mail_settings(
        &self,
        user: Uuid,
        settings: &MailSettings,
        by: &super::Actor,
    ) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE users SET email_reminders = $1, time_zone = $2, language = $3, updated_at = $4
                 WHERE id = $5",
            )
            .bind(settings.email_reminders)
            .bind(settings.time_zone.as_deref())
            .bind(settings.language.as_deref())
            .bind(now)
            .bind(user)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(super::StoreError::NotFound);
            }
            if !settings.email_reminders {
                sqlx::query(
                    "UPDATE mail_outbox SET dropped_at = $1, dropped_reason = 'reminders_off'
                     WHERE user_id = $2 AND kind = 'reminder' AND sent_at IS NULL AND dropped_at IS NULL",
                )
                .bind(now)
                .bind(user)
                .execute(&mut *tx)
                .await?;
            }
            let details = serde_json::json!({"email_reminders": settings.email_reminders, "time_zone_set": settings.time_zone.is_some(), "language": settings.language});
            append_audit!(self, tx, now, &super::AuditEntry::new(Some(by), "account.settings_change", "account", Some(user.to_string()), details));
            tx.commit().await?;
        });
        Ok(())
    }

    /// The outbox rows of an appointment, oldest first (operators' and tests' view).
    pub async fn outbox_of(&self, appointment: Uuid) -> StoreResult<Vec<OutboxRow>> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT id, appointment_id, user_id, kind, starts_at, due_at, attempts, sent_at,
                        dropped_at, dropped_reason
                 FROM mail_outbox WHERE appointment_id = $1 ORDER BY created_at, id",
            )
            .bind(appointment)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Forget finished outbox rows created before `before` (with the session records).
    pub async fn purge_mail(&self, before: Ts) -> StoreResult<u64> {
        let n = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM mail_outbox WHERE (sent_at IS NOT NULL OR dropped_at IS NOT NULL)
                   AND created_at < $1",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}

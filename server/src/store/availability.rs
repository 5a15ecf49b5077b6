//! A therapist's scheduling settings, weekly hours and dated exceptions.

use super::{Db, StoreError, StoreResult, Ts, WritePool};
use crate::domain::schedule::Span;
use uuid::Uuid;

/// Scheduling settings kept with the profile.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SchedulingSettings {
    pub time_zone: String,
    pub session_minutes: i32,
    pub consultation_minutes: i32,
    pub buffer_minutes: i32,
    pub slot_step_minutes: i32,
    pub offers_free_consultation: bool,
}

/// One weekly window as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct WeeklyRow {
    pub weekday: i16,
    pub start_minute: i32,
    pub end_minute: i32,
}

/// One dated exception as stored.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ExceptionRow {
    pub day: String,
    pub kind: String,
    pub start_minute: Option<i32>,
    pub end_minute: Option<i32>,
}

/// Everything that decides a therapist's slots, except their bookings.
#[derive(Debug, Clone)]
pub struct AvailabilityRecord {
    pub settings: SchedulingSettings,
    pub weekly: Vec<WeeklyRow>,
    pub exceptions: Vec<ExceptionRow>,
}

impl Db {
    /// The availability of an active therapist; `None` for anyone else.
    pub async fn availability(
        &self,
        therapist_id: Uuid,
    ) -> StoreResult<Option<AvailabilityRecord>> {
        on_pool!(self, pool => {
            let settings: Option<SchedulingSettings> = sqlx::query_as(
                "SELECT p.time_zone, p.session_minutes, p.consultation_minutes, p.buffer_minutes,
                        p.slot_step_minutes, p.offers_free_consultation
                 FROM therapist_profiles p JOIN users u ON u.id = p.user_id
                 WHERE p.user_id = $1 AND u.role = 'therapist' AND u.disabled = FALSE",
            )
            .bind(therapist_id)
            .fetch_optional(pool)
            .await?;
            let Some(settings) = settings else { return Ok(None) };
            let weekly = sqlx::query_as(
                "SELECT weekday, start_minute, end_minute FROM availability_rules
                 WHERE therapist_id = $1 ORDER BY weekday, start_minute",
            )
            .bind(therapist_id)
            .fetch_all(pool)
            .await?;
            let exceptions = sqlx::query_as(
                "SELECT day, kind, start_minute, end_minute FROM availability_exceptions
                 WHERE therapist_id = $1 ORDER BY day, start_minute",
            )
            .bind(therapist_id)
            .fetch_all(pool)
            .await?;
            Ok(Some(AvailabilityRecord { settings, weekly, exceptions }))
        })
    }

    /// Replace a therapist's availability as a whole, in one transaction.
    pub async fn set_availability(
        &self,
        therapist_id: Uuid,
        a: &AvailabilityRecord,
    ) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let s = &a.settings;
            let n = sqlx::query(
                "UPDATE therapist_profiles SET time_zone = $1, session_minutes = $2,
                        consultation_minutes = $3, buffer_minutes = $4, slot_step_minutes = $5,
                        updated_at = $6
                 WHERE user_id = $7",
            )
            .bind(&s.time_zone)
            .bind(s.session_minutes)
            .bind(s.consultation_minutes)
            .bind(s.buffer_minutes)
            .bind(s.slot_step_minutes)
            .bind(now)
            .bind(therapist_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("DELETE FROM availability_rules WHERE therapist_id = $1")
                .bind(therapist_id)
                .execute(&mut *tx)
                .await?;
            for w in &a.weekly {
                sqlx::query(
                    "INSERT INTO availability_rules (therapist_id, weekday, start_minute, end_minute)
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(therapist_id)
                .bind(w.weekday)
                .bind(w.start_minute)
                .bind(w.end_minute)
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query("DELETE FROM availability_exceptions WHERE therapist_id = $1")
                .bind(therapist_id)
                .execute(&mut *tx)
                .await?;
            for e in &a.exceptions {
                sqlx::query(
                    "INSERT INTO availability_exceptions (id, therapist_id, day, kind, start_minute, end_minute)
                     VALUES ($1, $2, $3, $4, $5, $6)",
                )
                .bind(Uuid::now_v7())
                .bind(therapist_id)
                .bind(&e.day)
                .bind(&e.kind)
                .bind(e.start_minute)
                .bind(e.end_minute)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            Ok(())
        })
    }

    /// The live appointments of `user_id` (therapist or client) overlapping `[from, to)`,
    /// as plain time spans, leaving out `except`.
    pub async fn busy_spans(
        &self,
        user_id: Uuid,
        from: Ts,
        to: Ts,
        except: Option<Uuid>,
    ) -> StoreResult<Vec<Span>> {
        let rows: Vec<(Ts, Ts)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT a.starts_at, a.ends_at FROM appointments a
                 JOIN appointment_participants p ON p.appointment_id = a.id
                 WHERE p.user_id = $1 AND p.live AND a.starts_at < $3 AND a.ends_at > $2
                   AND ($4 IS NULL OR a.id <> $4)
                 ORDER BY a.starts_at",
            )
            .bind(user_id)
            .bind(from)
            .bind(to)
            .bind(except)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(s, e)| Span {
                start: s.get(),
                end: e.get(),
            })
            .collect())
    }
}

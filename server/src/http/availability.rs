//! A therapist's hours (`/api/v1/therapists/me/availability`) and free slots
//! (`/api/v1/therapists/{id}/slots`).

use super::extract::{Json, Path, Query};
use crate::{
    auth::AuthUser,
    domain::{
        AppointmentKind, Invalid, Role, TimeZoneName, clock_str, parse_clock, parse_weekday,
        schedule::{Availability, DayException, ExceptionKind, SlotQuery, WeeklyWindow},
        weekday_str,
    },
    error::{ApiError, ApiResult, Fields, Problem},
    state::AppState,
    store::{AvailabilityRecord, ExceptionRow, SchedulingSettings, Ts, WeeklyRow},
};
use axum::{extract::State, http::StatusCode};
use jiff::{SignedDuration, Timestamp, civil::Date, tz::TimeZone};
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_availability, put_availability))
        .routes(routes!(slots))
}

/// A weekly window in the therapist's time zone.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WeeklyRule {
    /// `mon` … `sun`.
    pub weekday: String,
    /// Local start, `HH:MM`.
    pub start: String,
    /// Local end, `HH:MM` (`24:00` for midnight).
    pub end: String,
}

/// A dated change to the weekly hours.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityException {
    /// Local date, `YYYY-MM-DD`.
    pub date: String,
    /// `unavailable` (time off) or `available` (extra hours).
    pub kind: String,
    /// Local start `HH:MM`; leave out with `end` for the whole day (time off only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
}

/// A therapist's hours and appointment lengths.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AvailabilityBody {
    /// IANA time zone the hours are in, e.g. `Europe/London`.
    pub time_zone: String,
    pub weekly: Vec<WeeklyRule>,
    #[serde(default)]
    pub exceptions: Vec<AvailabilityException>,
    /// Length of a session, 15 to 240 minutes [default: 50].
    #[serde(default = "default_session")]
    pub session_minutes: i32,
    /// Length of the free consultation, 10 to 120 minutes [default: 20].
    #[serde(default = "default_consultation")]
    pub consultation_minutes: i32,
    /// Minimum gap between two appointments, 0 to 120 minutes [default: 10].
    #[serde(default = "default_buffer")]
    pub buffer_minutes: i32,
    /// Slots start every this many minutes from each window's start, 5 to 240 [default: 30].
    #[serde(default = "default_step")]
    pub slot_step_minutes: i32,
}

fn default_session() -> i32 {
    50
}
fn default_consultation() -> i32 {
    20
}
fn default_buffer() -> i32 {
    10
}
fn default_step() -> i32 {
    30
}

const MAX_WEEKLY: usize = 50;
const MAX_EXCEPTIONS: usize = 366;

/// The domain view of stored availability.
pub(crate) fn to_domain(rec: &AvailabilityRecord) -> ApiResult<Availability> {
    let tz = TimeZone::get(&rec.settings.time_zone)
        .map_err(|e| ApiError::internal(anyhow::anyhow!("stored time zone: {e}")))?;
    let weekly = rec
        .weekly
        .iter()
        .filter_map(|w| {
            Some(WeeklyWindow {
                weekday: jiff::civil::Weekday::from_monday_one_offset(w.weekday as i8).ok()?,
                start: w.start_minute as u16,
                end: w.end_minute as u16,
            })
        })
        .collect();
    let exceptions = rec
        .exceptions
        .iter()
        .filter_map(|e| {
            Some(DayException {
                day: e.day.parse().ok()?,
                kind: if e.kind == "available" {
                    ExceptionKind::Available
                } else {
                    ExceptionKind::Unavailable
                },
                window: e
                    .start_minute
                    .zip(e.end_minute)
                    .map(|(a, b)| (a as u16, b as u16)),
            })
        })
        .collect();
    Ok(Availability {
        tz,
        weekly,
        exceptions,
        step: rec.settings.slot_step_minutes as u16,
    })
}

fn to_body(rec: &AvailabilityRecord) -> AvailabilityBody {
    let s = &rec.settings;
    AvailabilityBody {
        time_zone: s.time_zone.clone(),
        weekly: rec
            .weekly
            .iter()
            .map(|w| WeeklyRule {
                weekday: jiff::civil::Weekday::from_monday_one_offset(w.weekday as i8)
                    .map(weekday_str)
                    .unwrap_or("mon")
                    .into(),
                start: clock_str(w.start_minute as u16),
                end: clock_str(w.end_minute as u16),
            })
            .collect(),
        exceptions: rec
            .exceptions
            .iter()
            .map(|e| AvailabilityException {
                date: e.day.clone(),
                kind: e.kind.clone(),
                start: e.start_minute.map(|m| clock_str(m as u16)),
                end: e.end_minute.map(|m| clock_str(m as u16)),
            })
            .collect(),
        session_minutes: s.session_minutes,
        consultation_minutes: s.consultation_minutes,
        buffer_minutes: s.buffer_minutes,
        slot_step_minutes: s.slot_step_minutes,
    }
}

fn in_range(f: &mut Fields, field: &str, v: i32, lo: i32, hi: i32) {
    if !(lo..=hi).contains(&v) {
        f.push(field, format!("{field} must be between {lo} and {hi}"));
    }
}

/// Check a body into the stored form, naming every bad field.
fn parse_body(b: &AvailabilityBody, offers_consultation: bool) -> ApiResult<AvailabilityRecord> {
    let mut f = Fields::default();
    let tz = f.check("time_zone", TimeZoneName::parse(&b.time_zone));
    in_range(&mut f, "session_minutes", b.session_minutes, 15, 240);
    in_range(
        &mut f,
        "consultation_minutes",
        b.consultation_minutes,
        10,
        120,
    );
    in_range(&mut f, "buffer_minutes", b.buffer_minutes, 0, 120);
    in_range(&mut f, "slot_step_minutes", b.slot_step_minutes, 5, 240);
    if b.weekly.len() > MAX_WEEKLY {
        f.push("weekly", format!("at most {MAX_WEEKLY} weekly windows"));
    }
    if b.exceptions.len() > MAX_EXCEPTIONS {
        f.push("exceptions", format!("at most {MAX_EXCEPTIONS} exceptions"));
    }
    let window = |f: &mut Fields, field: &str, start: &str, end: &str| -> Option<(u16, u16)> {
        let a = f.check(&format!("{field}.start"), parse_clock(start));
        let b = f.check(&format!("{field}.end"), parse_clock(end));
        let (a, b) = (a?, b?);
        if a >= 1440 || b <= a {
            f.push(field, "a window must end after it starts, within one day");
            return None;
        }
        Some((a, b))
    };
    let mut weekly: Vec<WeeklyRow> = Vec::new();
    for (i, w) in b.weekly.iter().enumerate() {
        let field = format!("weekly[{i}]");
        let day = f.check(&format!("{field}.weekday"), parse_weekday(&w.weekday));
        let win = window(&mut f, &field, &w.start, &w.end);
        if let (Some(day), Some((a, b))) = (day, win) {
            let wd = i16::from(day.to_monday_one_offset());
            if weekly.iter().any(|o| {
                o.weekday == wd && i32::from(a) < o.end_minute && o.start_minute < i32::from(b)
            }) {
                f.push(&field, "overlaps another window on the same weekday");
                continue;
            }
            weekly.push(WeeklyRow {
                weekday: wd,
                start_minute: i32::from(a),
                end_minute: i32::from(b),
            });
        }
    }
    let today = Timestamp::now().to_zoned(TimeZone::UTC).date();
    let mut exceptions: Vec<ExceptionRow> = Vec::new();
    for (i, e) in b.exceptions.iter().enumerate() {
        let field = format!("exceptions[{i}]");
        let date = f.check(
            &format!("{field}.date"),
            e.date
                .parse::<Date>()
                .map_err(|_| Invalid::new(format!("{:?} is not a date like 2026-12-24", e.date)))
                .and_then(|d| {
                    let years = (d.year() - today.year()).abs();
                    if years > 3 {
                        Err(Invalid::new("the date must be within three years"))
                    } else {
                        Ok(d)
                    }
                }),
        );
        let kind = match e.kind.as_str() {
            "unavailable" | "available" => Some(e.kind.clone()),
            _ => {
                f.push(
                    &format!("{field}.kind"),
                    "kind must be unavailable or available",
                );
                None
            }
        };
        let win = match (&e.start, &e.end) {
            (None, None) => {
                if e.kind == "available" {
                    f.push(&field, "extra hours need a start and an end");
                }
                None
            }
            (Some(s), Some(t)) => window(&mut f, &field, s, t),
            _ => {
                f.push(
                    &field,
                    "give both start and end, or neither for the whole day",
                );
                None
            }
        };
        if let (Some(date), Some(kind)) = (date, kind) {
            let day = date.to_string();
            let (a, b) = win.map_or((0, 1440), |(a, b)| (i32::from(a), i32::from(b)));
            if exceptions.iter().any(|o| {
                o.day == day
                    && o.kind == kind
                    && a < o.end_minute.unwrap_or(1440)
                    && o.start_minute.unwrap_or(0) < b
            }) {
                f.push(
                    &field,
                    "overlaps another exception of the same kind on that date",
                );
                continue;
            }
            exceptions.push(ExceptionRow {
                day,
                kind,
                start_minute: win.map(|w| i32::from(w.0)),
                end_minute: win.map(|w| i32::from(w.1)),
            });
        }
    }
    f.finish()?;
    Ok(AvailabilityRecord {
        settings: SchedulingSettings {
            time_zone: tz.expect("checked").as_str().to_owned(),
            session_minutes: b.session_minutes,
            consultation_minutes: b.consultation_minutes,
            buffer_minutes: b.buffer_minutes,
            slot_step_minutes: b.slot_step_minutes,
            offers_free_consultation: offers_consultation,
        },
        weekly,
        exceptions,
    })
}

/// The signed-in therapist's hours.
#[utoipa::path(get, path = "/api/v1/therapists/me/availability", tag = "scheduling", security(("bearer" = [])),
    responses(
        (status = 200, description = "Hours, exceptions and lengths", body = AvailabilityBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_availability(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<AvailabilityBody>> {
    user.require(&[Role::Therapist])?;
    let rec = state
        .db
        .availability(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("availability"))?;
    Ok(axum::Json(to_body(&rec)))
}

/// Replace the signed-in therapist's hours (weekly windows, dated exceptions, appointment
/// lengths, buffer). Booked appointments are kept even if they now fall outside the hours.
#[utoipa::path(put, path = "/api/v1/therapists/me/availability", tag = "scheduling", security(("bearer" = [])),
    request_body = AvailabilityBody,
    responses(
        (status = 200, description = "The stored hours", body = AvailabilityBody),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Unknown time zone, overlapping windows, bad times", body = Problem, content_type = "application/problem+json"),
    ))]
async fn put_availability(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<AvailabilityBody>,
) -> ApiResult<axum::Json<AvailabilityBody>> {
    user.require(&[Role::Therapist])?;
    let current = state
        .db
        .availability(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist profile"))?;
    let rec = parse_body(&body, current.settings.offers_free_consultation)?;
    state.db.set_availability(user.id, &rec).await?;
    let stored = state
        .db
        .availability(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist profile"))?;
    Ok(axum::Json(to_body(&stored)))
}

/// Which slots to list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SlotParams {
    /// Start of the range, RFC 3339 [default: now].
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// End of the range, RFC 3339, at most 62 days after `from` [default: from + 14 days].
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    /// `session` or `consultation` [default: session].
    pub kind: Option<AppointmentKind>,
}

/// Free start times.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SlotList {
    pub therapist_id: Uuid,
    pub kind: AppointmentKind,
    /// Length of each appointment.
    pub minutes: i32,
    /// The therapist's time zone (slots themselves are UTC instants).
    pub time_zone: String,
    /// Start instants, RFC 3339 UTC, ascending.
    #[schema(value_type = Vec<String>)]
    pub slots: Vec<Timestamp>,
}

/// Longest range a slot search may cover.
pub const MAX_SLOT_RANGE_DAYS: i64 = 62;

/// Refuse instants outside 2000 to 2200: nothing is scheduled there, and time arithmetic
/// near the ends of the representable range would overflow.
pub(crate) fn sane(field: &str, t: Timestamp) -> ApiResult<Timestamp> {
    let year = t.to_zoned(TimeZone::UTC).year();
    if (2000..2200).contains(&year) {
        Ok(t)
    } else {
        Err(ApiError::field(
            field,
            "must be between the years 2000 and 2200",
        ))
    }
}

/// Check a `[from, to)` range.
pub(crate) fn check_range(from: Timestamp, to: Timestamp, max_days: i64) -> ApiResult<()> {
    if from >= to {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_range",
            "`from` must be before `to`",
        ));
    }
    if to.duration_since(from) > SignedDuration::from_hours(24 * max_days) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "range_too_long",
            format!("a range may cover at most {max_days} days"),
        ));
    }
    Ok(())
}

/// Minutes an appointment of `kind` lasts with this therapist, or why it cannot be booked.
pub(crate) fn minutes_for(settings: &SchedulingSettings, kind: AppointmentKind) -> ApiResult<i32> {
    match kind {
        AppointmentKind::Session => Ok(settings.session_minutes),
        AppointmentKind::Consultation if settings.offers_free_consultation => {
            Ok(settings.consultation_minutes)
        }
        AppointmentKind::Consultation => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "consultation_not_offered",
            "this therapist does not offer a free consultation",
        )),
    }
}

/// Free start times of a therapist, for a kind of appointment, in a range.
#[utoipa::path(get, path = "/api/v1/therapists/{id}/slots", tag = "scheduling",
    params(("id" = Uuid, Path, description = "The therapist's account id"), SlotParams),
    responses(
        (status = 200, description = "Free slots", body = SlotList),
        (status = 404, description = "No such therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad range or kind not offered", body = Problem, content_type = "application/problem+json"),
    ))]
async fn slots(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
    Query(p): Query<SlotParams>,
) -> ApiResult<axum::Json<SlotList>> {
    let now = Timestamp::now();
    let from = sane("from", p.from.unwrap_or(now))?;
    let to = sane(
        "to",
        p.to.unwrap_or(from + SignedDuration::from_hours(24 * 14)),
    )?;
    check_range(from, to, MAX_SLOT_RANGE_DAYS)?;
    let kind = p.kind.unwrap_or(AppointmentKind::Session);
    let rec = state
        .db
        .availability(id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist"))?;
    let minutes = minutes_for(&rec.settings, kind)?;
    let avail = to_domain(&rec)?;
    let margin = SignedDuration::from_hours(24);
    let busy = state
        .db
        .busy_spans(id, Ts::from(from - margin), Ts::from(to + margin), None)
        .await?;
    let q = SlotQuery {
        minutes: minutes as u16,
        buffer: rec.settings.buffer_minutes as u16,
        busy: &busy,
        now,
        earliest: now + SignedDuration::try_from(state.config.min_notice).unwrap_or_default(),
    };
    Ok(axum::Json(SlotList {
        therapist_id: id,
        kind,
        minutes,
        time_zone: rec.settings.time_zone,
        slots: avail.free_slots(from, to, &q),
    }))
}

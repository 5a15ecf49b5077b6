//! `/api/v1/appointments`: booking, listing, cancelling, rescheduling, outcomes, group
//! participants, history and calendar files.
//!
//! Appointments of other accounts answer 404, never 403, so that their existence does not
//! leak. The database holds the no-double-booking rule; the checks here only give better
//! error messages before it has to.

use super::{
    availability::{check_range, minutes_for, sane, to_domain},
    calendar,
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};
use crate::{
    auth::AuthUser,
    domain::{
        AppointmentKind, AppointmentStatus, BoundedText, Role,
        schedule::{SlotQuery, SlotRefusal, weekly_occurrence},
    },
    error::{ApiError, ApiResult, FieldError, Problem},
    state::AppState,
    store::{
        AddParticipantError, Appointment, AppointmentFilter, BookingError, NewAppointment,
        StoreError, Ts,
    },
};
use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(book, list))
        .routes(routes!(book_series))
        .routes(routes!(get_one))
        .routes(routes!(cancel))
        .routes(routes!(reschedule))
        .routes(routes!(mark_completed))
        .routes(routes!(mark_no_show))
        .routes(routes!(add_client))
        .routes(routes!(remove_client))
        .routes(routes!(set_auto_admit))
        .routes(routes!(lift_denial))
        .routes(routes!(history))
        .routes(routes!(ics))
}

/// Clients an appointment can hold (couples and family therapy).
pub const MAX_CLIENTS: i64 = 3;

/// Longest series a therapist can book at once.
pub const MAX_OCCURRENCES: u32 = 52;

/// Longest range an appointment list may cover.
const MAX_LIST_RANGE_DAYS: i64 = 400;

/// A person in an appointment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PersonView {
    pub id: Uuid,
    pub display_name: String,
    /// A client the therapist turned away from the session: they cannot knock again until
    /// the therapist lets them (`DELETE /api/v1/appointments/{id}/denials/{client_id}`).
    pub turned_away: bool,
}

/// An appointment as its participants see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AppointmentView {
    pub id: Uuid,
    pub kind: AppointmentKind,
    pub status: AppointmentStatus,
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    #[schema(value_type = String, format = DateTime)]
    pub ends_at: Timestamp,
    pub therapist: PersonView,
    /// One to three clients.
    pub clients: Vec<PersonView>,
    /// From when participants may join the video session.
    #[schema(value_type = String, format = DateTime)]
    pub join_opens_at: Timestamp,
    /// Until when the session may go on.
    #[schema(value_type = String, format = DateTime)]
    pub join_closes_at: Timestamp,
    /// Clients are let in without the therapist admitting them.
    pub auto_admit: bool,
    /// Set when a client cancelled within the late-cancellation window.
    pub late_cancellation: bool,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub cancelled_at: Option<Timestamp>,
    pub cancelled_by: Option<Uuid>,
    pub cancel_reason: Option<String>,
    /// Shared by the appointments of one weekly series.
    pub series_id: Option<Uuid>,
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
}

fn sd(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// The join window of an appointment.
pub fn join_window(state: &AppState, a: &Appointment) -> (Timestamp, Timestamp) {
    (
        a.starts_at.get() - sd(state.config.join_opens_before),
        a.ends_at.get() + sd(state.config.join_closes_after),
    )
}

/// The appointment as `viewer` sees it: whether a client was turned away is the
/// therapist's (and an admin's) to know, not the other clients' of a group session.
pub(crate) fn view(state: &AppState, a: Appointment, viewer: &AuthUser) -> AppointmentView {
    let sees_denials = viewer.role == Role::Admin || viewer.id == a.therapist_id;
    let (join_opens_at, join_closes_at) = join_window(state, &a);
    let therapist = a
        .therapist()
        .map(|p| PersonView {
            id: p.user_id,
            display_name: p.display_name.clone(),
            turned_away: false,
        })
        .unwrap_or(PersonView {
            id: a.therapist_id,
            display_name: String::new(),
            turned_away: false,
        });
    AppointmentView {
        id: a.id,
        kind: a.kind,
        status: a.status,
        starts_at: a.starts_at.get(),
        ends_at: a.ends_at.get(),
        clients: a
            .clients()
            .map(|p| PersonView {
                id: p.user_id,
                display_name: p.display_name.clone(),
                turned_away: sees_denials && p.denied_at.is_some(),
            })
            .collect(),
        therapist,
        join_opens_at,
        join_closes_at,
        auto_admit: a.auto_admit,
        late_cancellation: a.late_cancellation,
        cancelled_at: a.cancelled_at.map(Ts::get),
        cancelled_by: a.cancelled_by,
        cancel_reason: a.cancel_reason,
        series_id: a.series_id,
        created_at: a.created_at.get(),
    }
}

/// The appointment if the caller may see it (a participant, or an admin); 404 otherwise.
pub(crate) async fn visible(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<Appointment> {
    match state.db.appointment(id).await? {
        Some(a) if user.role == Role::Admin || a.is_participant(user.id) => Ok(a),
        _ => Err(ApiError::not_found("appointment")),
    }
}

/// As [`visible`], and the caller must be the appointment's therapist.
async fn as_its_therapist(state: &AppState, user: &AuthUser, id: Uuid) -> ApiResult<Appointment> {
    let a = visible(state, user, id).await?;
    if a.therapist_id != user.id {
        return Err(ApiError::forbidden(
            "only the appointment's therapist can do this",
        ));
    }
    Ok(a)
}

/// In a group appointment (couples, family) one client may not cancel or move it for the
/// others: that is the therapist's to do.
fn only_therapist_changes_groups(user: &AuthUser, a: &Appointment) -> ApiResult<()> {
    if user.role == Role::Client && a.clients().count() > 1 {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "group_appointment",
            "this appointment has other clients too; ask your therapist to cancel or move it",
        ));
    }
    Ok(())
}

fn unprocessable(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, detail)
}

fn refusal(r: SlotRefusal) -> ApiError {
    match r {
        SlotRefusal::InPast => unprocessable("starts_in_past", "the start time has passed"),
        SlotRefusal::TooShortNotice => unprocessable(
            "too_short_notice",
            "this start is too soon: appointments need more notice",
        ),
        SlotRefusal::OutsideAvailability => unprocessable(
            "outside_availability",
            "the therapist does not work at that time",
        ),
        SlotRefusal::Misaligned => unprocessable(
            "misaligned_start",
            "appointments start on the therapist's slot times; list them at /api/v1/therapists/{id}/slots",
        ),
        SlotRefusal::Taken => slot_taken(),
    }
}

fn slot_taken() -> ApiError {
    ApiError::conflict(
        "slot_taken",
        "that time has just been taken; choose another slot",
    )
}

fn not_active() -> ApiError {
    ApiError::conflict(
        "appointment_not_active",
        "the appointment is no longer booked (it was cancelled or has taken place)",
    )
}

pub(super) fn booking_error(e: BookingError) -> ApiError {
    match e {
        BookingError::Overlap => slot_taken(),
        BookingError::ConsultationUsed => consultation_used(),
        BookingError::NotBooked => not_active(),
        BookingError::Store(StoreError::NotFound) => ApiError::not_found("appointment"),
        BookingError::Store(e) => e.into(),
    }
}

fn consultation_used() -> ApiError {
    ApiError::conflict(
        "consultation_already_used",
        "the free consultation with this therapist has already been booked",
    )
}

/// Therapist-made appointments: any future time on a 5-minute mark.
fn check_free_form_start(start: Timestamp) -> ApiResult<()> {
    if start <= Timestamp::now() {
        return Err(refusal(SlotRefusal::InPast));
    }
    if start.as_second() % 300 != 0 || start.subsec_nanosecond() != 0 {
        return Err(unprocessable(
            "misaligned_start",
            "appointments start on a 5-minute mark (e.g. 09:05, not 09:07)",
        ));
    }
    Ok(())
}

/// A new appointment.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BookRequest {
    /// The therapist; a therapist booking for clients may leave it out (it is them).
    pub therapist_id: Option<Uuid>,
    /// A free slot from `/api/v1/therapists/{id}/slots` (clients), or any future time on a
    /// 5-minute mark (therapists), RFC 3339.
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    pub kind: AppointmentKind,
    /// Therapists only: the one to three clients.
    #[serde(default)]
    pub client_ids: Vec<Uuid>,
}

/// Check the list of clients a therapist books for: one to three, each named once. Whether
/// each may be booked is [`clients_bookable`]'s question.
fn check_client_list(ids: &[Uuid], kind: AppointmentKind) -> ApiResult<()> {
    if ids.is_empty() || ids.len() as i64 > MAX_CLIENTS {
        return Err(ApiError::field(
            "client_ids",
            format!("an appointment has 1 to {MAX_CLIENTS} clients"),
        ));
    }
    if kind == AppointmentKind::Consultation && ids.len() > 1 {
        return Err(ApiError::field(
            "client_ids",
            "a consultation has one client",
        ));
    }
    for (i, id) in ids.iter().enumerate() {
        if ids[..i].contains(id) {
            return Err(ApiError::field(&format!("client_ids[{i}]"), "listed twice"));
        }
    }
    Ok(())
}

/// The one answer a therapist gets for a client who cannot be booked, whatever the reason:
/// no such account, not a client, disabled, not one of the therapist's clients, or already
/// booked at that time (with anyone). One answer, so that the refusal cannot be used to
/// learn whether an account exists, or when someone sees another therapist.
fn client_unavailable(i: usize) -> ApiError {
    let mut e = ApiError::conflict(
        "client_unavailable",
        "a client cannot be booked for this time (only your own clients can be booked, when they are free)",
    );
    e.errors = vec![FieldError {
        field: format!("client_ids[{i}]"),
        message: "cannot be booked for this time".into(),
    }];
    e
}

/// For a therapist's booking, series occurrence, reschedule or added participant: each
/// client must be an active client account of `therapist`'s, free over `[start, end)`
/// (ignoring appointment `except`). Both questions are asked for every client, so that the
/// answer takes the same work whichever fails.
async fn clients_bookable(
    state: &AppState,
    therapist: Uuid,
    clients: &[Uuid],
    start: Ts,
    end: Ts,
    except: Option<Uuid>,
) -> ApiResult<()> {
    let mut first_refused = None;
    for (i, c) in clients.iter().enumerate() {
        let related = state.db.is_care_client(therapist, *c).await?;
        let free = state
            .db
            .busy_spans(*c, start, end, except)
            .await?
            .is_empty();
        if !(related && free) && first_refused.is_none() {
            first_refused = Some(i);
        }
    }
    match first_refused {
        Some(i) => Err(client_unavailable(i)),
        None => Ok(()),
    }
}

/// A client booking for themselves: refuse when they are already booked over `[start, end)`.
async fn caller_free(
    state: &AppState,
    caller: Uuid,
    start: Ts,
    end: Ts,
    except: Option<Uuid>,
) -> ApiResult<()> {
    if state
        .db
        .busy_spans(caller, start, end, except)
        .await?
        .is_empty()
    {
        Ok(())
    } else {
        Err(ApiError::conflict(
            "client_busy",
            "you already have an appointment at that time",
        ))
    }
}

/// What the therapist's current settings say about an appointment of `kind` at `start`.
struct Plan {
    minutes: i32,
    buffer: i32,
    end: Ts,
    /// The therapist's time zone.
    tz: jiff::tz::TimeZone,
}

async fn plan(
    state: &AppState,
    therapist_id: Uuid,
    kind: AppointmentKind,
    start: Timestamp,
    client_checks: bool,
    except: Option<Uuid>,
) -> ApiResult<Plan> {
    sane("starts_at", start)?;
    let rec = state
        .db
        .availability(therapist_id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist"))?;
    let minutes = if client_checks {
        minutes_for(&rec.settings, kind)?
    } else {
        match kind {
            AppointmentKind::Session => rec.settings.session_minutes,
            AppointmentKind::Consultation => rec.settings.consultation_minutes,
        }
    };
    if client_checks {
        let avail = to_domain(&rec)?;
        let day = SignedDuration::from_hours(24);
        let busy = state
            .db
            .busy_spans(
                therapist_id,
                Ts::from(start - day),
                Ts::from(start + day),
                except,
            )
            .await?;
        let now = Timestamp::now();
        let q = SlotQuery {
            minutes: minutes as u16,
            buffer: rec.settings.buffer_minutes as u16,
            busy: &busy,
            now,
            earliest: now + sd(state.config.min_notice),
        };
        avail.check(start, &q).map_err(refusal)?;
    } else {
        check_free_form_start(start)?;
    }
    Ok(Plan {
        minutes,
        buffer: rec.settings.buffer_minutes,
        end: Ts::from(start + SignedDuration::from_mins(i64::from(minutes))),
        tz: jiff::tz::TimeZone::get(&rec.settings.time_zone).unwrap_or(jiff::tz::TimeZone::UTC),
    })
}

/// Book an appointment.
///
/// A client books a free slot of a therapist for themselves (`client_ids` left out). A
/// therapist books for one to three of their clients at any future time on a 5-minute mark,
/// outside their published hours too. Two live appointments of one person never overlap:
/// a slot taken in the meantime answers 409 `slot_taken`.
#[utoipa::path(post, path = "/api/v1/appointments", tag = "appointments", security(("bearer" = [])),
    request_body = BookRequest,
    responses(
        (status = 201, description = "Booked", body = AppointmentView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Admins do not book; therapists book only for themselves", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such therapist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Slot taken, you are busy (`client_busy`), a client cannot be booked (`client_unavailable`), consultation already used", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Past, too soon, misaligned, outside hours, bad kind or client list", body = Problem, content_type = "application/problem+json"),
    ))]
async fn book(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<BookRequest>,
) -> ApiResult<(StatusCode, axum::Json<AppointmentView>)> {
    let (therapist_id, clients, client_checks) = match user.role {
        Role::Client => {
            let Some(t) = body.therapist_id else {
                return Err(ApiError::field("therapist_id", "choose a therapist"));
            };
            if !(body.client_ids.is_empty() || body.client_ids == [user.id]) {
                return Err(ApiError::field(
                    "client_ids",
                    "clients book for themselves only",
                ));
            }
            (t, vec![user.id], true)
        }
        Role::Therapist => {
            if body.therapist_id.is_some_and(|t| t != user.id) {
                return Err(ApiError::forbidden(
                    "therapists book their own appointments only",
                ));
            }
            check_client_list(&body.client_ids, body.kind)?;
            (user.id, body.client_ids.clone(), false)
        }
        Role::Admin => return Err(ApiError::forbidden("admins do not book appointments")),
    };
    let p = plan(
        &state,
        therapist_id,
        body.kind,
        body.starts_at,
        client_checks,
        None,
    )
    .await?;
    if body.kind == AppointmentKind::Consultation
        && state.db.consultation_used(therapist_id, clients[0]).await?
    {
        return Err(consultation_used());
    }
    let start = Ts::from(body.starts_at);
    if user.role == Role::Therapist {
        clients_bookable(&state, user.id, &clients, start, p.end, None).await?;
    } else {
        caller_free(&state, user.id, start, p.end, None).await?;
    }
    let new = NewAppointment {
        therapist_id,
        client_ids: clients,
        kind: body.kind,
        starts_at: start,
        ends_at: p.end,
        buffer_minutes: p.buffer,
        created_by: user.id,
        series_id: None,
    };
    let ids = state
        .db
        .create_appointments(&[new], Some(&user.actor()), state.mail_plan())
        .await
        .map_err(|(_, e)| booking_error(e))?;
    let a = state
        .db
        .appointment(ids[0])
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("booked appointment vanished")))?;
    tracing::info!(appointment_id = %a.id, kind = a.kind.as_str(), minutes = p.minutes, "appointment booked");
    Ok((StatusCode::CREATED, axum::Json(view(&state, a, &user))))
}

/// A weekly series booked by a therapist.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SeriesRequest {
    /// The first occurrence; later ones keep its local time in the therapist's time zone.
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    pub kind: AppointmentKind,
    pub client_ids: Vec<Uuid>,
    /// How many weekly occurrences, 2 to 52.
    pub occurrences: u32,
    /// `true` (default): book all or none. `false`: book those that are free and report
    /// the others.
    #[serde(default = "yes")]
    pub all_or_nothing: bool,
}

fn yes() -> bool {
    true
}

/// An occurrence that could not be booked.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FailedOccurrence {
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
    /// A problem code such as `slot_taken`.
    pub code: String,
    pub detail: String,
}

/// The outcome of a series.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SeriesResult {
    pub series_id: Uuid,
    pub created: Vec<AppointmentView>,
    pub failed: Vec<FailedOccurrence>,
}

/// Book a weekly series for clients (therapists only).
///
/// Each occurrence keeps the first one's local time in the therapist's time zone, across
/// daylight-saving changes. With `all_or_nothing` (the default), a single clash books
/// nothing and answers 409 `series_conflict` listing each clash; otherwise the free ones are
/// booked and the rest are listed in `failed`.
#[utoipa::path(post, path = "/api/v1/appointments/series", tag = "appointments", security(("bearer" = [])),
    request_body = SeriesRequest,
    responses(
        (status = 201, description = "Booked (see `failed` when not all-or-nothing)", body = SeriesResult),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Some occurrences clash (all-or-nothing), or none could be booked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad start, clients or count", body = Problem, content_type = "application/problem+json"),
    ))]
async fn book_series(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<SeriesRequest>,
) -> ApiResult<(StatusCode, axum::Json<SeriesResult>)> {
    user.require(&[Role::Therapist])?;
    if !(2..=MAX_OCCURRENCES).contains(&body.occurrences) {
        return Err(ApiError::field(
            "occurrences",
            format!("a series has 2 to {MAX_OCCURRENCES} occurrences"),
        ));
    }
    if body.kind == AppointmentKind::Consultation {
        return Err(ApiError::field("kind", "a series is of sessions"));
    }
    check_client_list(&body.client_ids, body.kind)?;
    let p = plan(&state, user.id, body.kind, body.starts_at, false, None).await?;
    let tz = &p.tz;
    let length = SignedDuration::from_mins(i64::from(p.minutes));
    let series_id = Uuid::now_v7();
    let mut planned = Vec::new();
    let mut failed = Vec::new();
    for k in 0..i64::from(body.occurrences) {
        let Some(start) = weekly_occurrence(tz, body.starts_at, k) else {
            // That wall-clock time is skipped that day (clocks go forward): reported, so a
            // series never comes out shorter than asked without saying so.
            failed.push(FailedOccurrence {
                starts_at: body.starts_at + SignedDuration::from_hours(24 * 7 * k),
                code: "no_such_time".into(),
                detail: "that time does not exist on that day (the clocks change)".into(),
            });
            continue;
        };
        let (s, e) = (Ts::from(start), Ts::from(start + length));
        let clash = async {
            if !state
                .db
                .busy_spans(
                    user.id,
                    Ts::from(start - SignedDuration::from_mins(i64::from(p.buffer))),
                    Ts::from(start + length + SignedDuration::from_mins(i64::from(p.buffer))),
                    None,
                )
                .await?
                .is_empty()
            {
                return Ok::<_, ApiError>(Some(slot_taken()));
            }
            // A client who cannot be booked fails this occurrence; a storage failure fails
            // the request.
            match clients_bookable(&state, user.id, &body.client_ids, s, e, None).await {
                Ok(()) => Ok(None),
                Err(err) if err.status == StatusCode::CONFLICT => Ok(Some(err)),
                Err(err) => Err(err),
            }
        }
        .await?;
        match clash {
            Some(err) => failed.push(FailedOccurrence {
                starts_at: start,
                code: err.code.into(),
                detail: err.detail,
            }),
            None => planned.push(NewAppointment {
                therapist_id: user.id,
                client_ids: body.client_ids.clone(),
                kind: body.kind,
                starts_at: s,
                ends_at: e,
                buffer_minutes: p.buffer,
                created_by: user.id,
                series_id: Some(series_id),
            }),
        }
    }
    let conflict = |failed: &[FailedOccurrence]| {
        let mut e = ApiError::conflict(
            "series_conflict",
            format!("{} of the occurrences cannot be booked", failed.len()),
        );
        e.errors = failed
            .iter()
            .map(|f| FieldError {
                field: f.starts_at.to_string(),
                message: f.detail.clone(),
            })
            .collect();
        e
    };
    if body.all_or_nothing && !failed.is_empty() {
        return Err(conflict(&failed));
    }
    let mut created_ids = Vec::new();
    if body.all_or_nothing {
        created_ids = state
            .db
            .create_appointments(&planned, Some(&user.actor()), state.mail_plan())
            .await
            .map_err(|(i, e)| {
                let err = booking_error(e);
                conflict(&[FailedOccurrence {
                    starts_at: planned[i].starts_at.get(),
                    code: err.code.into(),
                    detail: err.detail,
                }])
            })?;
    } else {
        for n in planned {
            match state
                .db
                .create_appointments(
                    std::slice::from_ref(&n),
                    Some(&user.actor()),
                    state.mail_plan(),
                )
                .await
            {
                Ok(ids) => created_ids.extend(ids),
                Err((_, e)) => {
                    let err = booking_error(e);
                    failed.push(FailedOccurrence {
                        starts_at: n.starts_at.get(),
                        code: err.code.into(),
                        detail: err.detail,
                    });
                }
            }
        }
        if created_ids.is_empty() {
            return Err(conflict(&failed));
        }
    }
    let mut created = Vec::new();
    for id in created_ids {
        if let Some(a) = state.db.appointment(id).await? {
            created.push(view(&state, a, &user));
        }
    }
    failed.sort_by_key(|f| f.starts_at);
    Ok((
        StatusCode::CREATED,
        axum::Json(SeriesResult {
            series_id,
            created,
            failed,
        }),
    ))
}

/// Filters of the appointment list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Appointments starting at or after this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    /// Appointments starting before this instant (RFC 3339).
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    pub status: Option<AppointmentStatus>,
}

/// The caller's appointments (an admin's: everyone's), ordered by start.
#[utoipa::path(get, path = "/api/v1/appointments", tag = "appointments", security(("bearer" = [])),
    params(ListParams, PageParams),
    responses(
        (status = 200, description = "One page of appointments", body = Page<AppointmentView>),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<ListParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<Page<AppointmentView>>> {
    let page = page.check()?;
    for (field, t) in [("from", p.from), ("to", p.to)] {
        if let Some(t) = t {
            sane(field, t)?;
        }
    }
    if let (Some(from), Some(to)) = (p.from, p.to) {
        check_range(from, to, MAX_LIST_RANGE_DAYS)?;
    }
    let filter = AppointmentFilter {
        participant: (user.role != Role::Admin).then_some(user.id),
        from: p.from.map(Ts::from),
        to: p.to.map(Ts::from),
        status: p.status,
    };
    let (items, total) = state
        .db
        .list_appointments(&filter, page.limit(), page.offset())
        .await?;
    state
        .audit(
            Some(&user),
            "appointment.list",
            "appointment",
            None,
            serde_json::json!({"ids": items.iter().map(|a| a.id).collect::<Vec<_>>()}),
        )
        .await?;
    Ok(axum::Json(Page::new(
        items.into_iter().map(|a| view(&state, a, &user)).collect(),
        page,
        total,
    )))
}

/// One appointment.
#[utoipa::path(get, path = "/api/v1/appointments/{id}", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "The appointment", body = AppointmentView),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AppointmentView>> {
    let a = visible(&state, &user, id).await?;
    state
        .audit(
            Some(&user),
            "appointment.read",
            "appointment",
            Some(id.to_string()),
            serde_json::json!({}),
        )
        .await?;
    Ok(axum::Json(view(&state, a, &user)))
}

/// A cancellation.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Optional, up to 500 characters, seen by the other participants.
    pub reason: Option<String>,
}

/// Cancel an appointment (a participant before it starts; its therapist or an admin until it
/// ends). A client cancelling within the late-cancellation window is recorded as late.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/cancel", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    request_body = CancelRequest,
    responses(
        (status = 200, description = "Cancelled", body = AppointmentView),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Already cancelled, or taken place", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Reason too long", body = Problem, content_type = "application/problem+json"),
    ))]
async fn cancel(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<CancelRequest>,
) -> ApiResult<axum::Json<AppointmentView>> {
    let reason = body
        .reason
        .as_deref()
        .map(|r| BoundedText::parse("reason", r, 500).map(BoundedText::into_inner))
        .transpose()
        .map_err(|e| ApiError::field("reason", e.0))?
        .filter(|r| !r.is_empty());
    let a = visible(&state, &user, id).await?;
    only_therapist_changes_groups(&user, &a)?;
    if a.status != AppointmentStatus::Booked {
        return Err(not_active());
    }
    let now = Timestamp::now();
    let deadline = if user.role == Role::Client {
        a.starts_at
    } else {
        a.ends_at
    };
    if now >= deadline.get() {
        return Err(ApiError::conflict(
            "appointment_started",
            "the appointment has already started",
        ));
    }
    let late = user.role == Role::Client
        && a.starts_at.get().duration_since(now) < sd(state.config.late_cancel_window);
    state
        .db
        .cancel_appointment(
            id,
            &user.actor(),
            reason.as_deref(),
            late,
            state.mail_plan(),
        )
        .await
        .map_err(booking_error)?;
    state.hub.end_room(id, "appointment_cancelled").await;
    let a = visible(&state, &user, id).await?;
    Ok(axum::Json(view(&state, a, &user)))
}

/// A new start time.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RescheduleRequest {
    #[schema(value_type = String, format = DateTime)]
    pub starts_at: Timestamp,
}

/// Move an appointment to a new start, keeping its length. A client must pick a free slot;
/// the therapist may pick any future time on a 5-minute mark. The move is atomic: the
/// appointment moves, or nothing changes.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/reschedule", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    request_body = RescheduleRequest,
    responses(
        (status = 200, description = "Moved", body = AppointmentView),
        (status = 403, description = "Admins do not reschedule", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not booked, started, or the new time is taken", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "The new time is not bookable", body = Problem, content_type = "application/problem+json"),
    ))]
async fn reschedule(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<RescheduleRequest>,
) -> ApiResult<axum::Json<AppointmentView>> {
    let a = visible(&state, &user, id).await?;
    if user.role == Role::Admin && !a.is_participant(user.id) {
        return Err(ApiError::forbidden("admins do not reschedule appointments"));
    }
    only_therapist_changes_groups(&user, &a)?;
    if a.status != AppointmentStatus::Booked {
        return Err(not_active());
    }
    if Timestamp::now() >= a.starts_at.get() {
        return Err(ApiError::conflict(
            "appointment_started",
            "the appointment has already started",
        ));
    }
    let by_client = user.role == Role::Client;
    let p = plan(
        &state,
        a.therapist_id,
        a.kind,
        body.starts_at,
        by_client,
        Some(id),
    )
    .await?;
    let start = Ts::from(body.starts_at);
    let clients: Vec<Uuid> = a.clients().map(|c| c.user_id).collect();
    if by_client {
        caller_free(&state, user.id, start, p.end, Some(id)).await?;
    } else {
        clients_bookable(&state, a.therapist_id, &clients, start, p.end, Some(id)).await?;
    }
    state
        .db
        .reschedule_appointment(id, &user.actor(), start, p.end, p.buffer, state.mail_plan())
        .await
        .map_err(booking_error)?;
    state.hub.end_room(id, "appointment_changed").await;
    let a = visible(&state, &user, id).await?;
    Ok(axum::Json(view(&state, a, &user)))
}

async fn set_outcome(
    state: &AppState,
    user: &AuthUser,
    id: Uuid,
    status: AppointmentStatus,
) -> ApiResult<axum::Json<AppointmentView>> {
    let a = as_its_therapist(state, user, id).await?;
    if a.status != AppointmentStatus::Booked {
        return Err(not_active());
    }
    if Timestamp::now() < a.starts_at.get() {
        return Err(ApiError::conflict(
            "appointment_not_started",
            "an outcome can be recorded once the appointment has started",
        ));
    }
    state
        .db
        .set_appointment_outcome(id, Some(&user.actor()), status)
        .await
        .map_err(booking_error)?;
    let a = visible(state, user, id).await?;
    Ok(axum::Json(view(state, a, user)))
}

/// Record that the appointment took place (its therapist, once it has started).
#[utoipa::path(post, path = "/api/v1/appointments/{id}/complete", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "Completed", body = AppointmentView),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not booked, or not started yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn mark_completed(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AppointmentView>> {
    set_outcome(&state, &user, id, AppointmentStatus::Completed).await
}

/// Record that the client did not come (its therapist, once it has started).
#[utoipa::path(post, path = "/api/v1/appointments/{id}/no-show", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "Marked as no-show", body = AppointmentView),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Not booked, or not started yet", body = Problem, content_type = "application/problem+json"),
    ))]
async fn mark_no_show(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AppointmentView>> {
    set_outcome(&state, &user, id, AppointmentStatus::NoShow).await
}

/// A client to add.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ParticipantRequest {
    pub client_id: Uuid,
}

fn participant_error(e: AddParticipantError) -> ApiError {
    match e {
        AddParticipantError::Full => ApiError::conflict(
            "appointment_full",
            format!("an appointment holds at most {MAX_CLIENTS} clients"),
        ),
        AddParticipantError::AlreadyIn => {
            ApiError::conflict("already_participant", "this client already takes part")
        }
        AddParticipantError::NotIn => ApiError::not_found("participant"),
        AddParticipantError::LastClient => ApiError::conflict(
            "last_client",
            "the last client cannot be removed; cancel the appointment instead",
        ),
        AddParticipantError::Booking(BookingError::Overlap) => {
            // The same answer as the check before the write (a race lands here).
            let mut e = client_unavailable(0);
            e.errors[0].field = "client_id".into();
            e
        }
        AddParticipantError::Booking(b) => booking_error(b),
    }
}

/// Add a client to a session (couples and family therapy; its therapist only).
#[utoipa::path(post, path = "/api/v1/appointments/{id}/participants", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    request_body = ParticipantRequest,
    responses(
        (status = 200, description = "Added", body = AppointmentView),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Full, already in, the client cannot be booked (`client_unavailable`), not booked", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "A consultation", body = Problem, content_type = "application/problem+json"),
    ))]
async fn add_client(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<ParticipantRequest>,
) -> ApiResult<axum::Json<AppointmentView>> {
    let a = as_its_therapist(&state, &user, id).await?;
    if a.kind == AppointmentKind::Consultation {
        return Err(unprocessable(
            "consultation_is_one_to_one",
            "a consultation has one client",
        ));
    }
    if a.status == AppointmentStatus::Booked && !a.is_participant(body.client_id) {
        let start = a.starts_at;
        let end = a.ends_at;
        clients_bookable(&state, user.id, &[body.client_id], start, end, None)
            .await
            .map_err(|e| {
                if e.code == "client_unavailable" {
                    let mut e = client_unavailable(0);
                    e.errors[0].field = "client_id".into();
                    e
                } else {
                    e
                }
            })?;
    }
    state
        .db
        .add_participant(
            id,
            &user.actor(),
            body.client_id,
            MAX_CLIENTS,
            state.mail_plan(),
        )
        .await
        .map_err(participant_error)?;
    let a = visible(&state, &user, id).await?;
    Ok(axum::Json(view(&state, a, &user)))
}

/// Remove a client from a group session (its therapist only).
#[utoipa::path(delete, path = "/api/v1/appointments/{id}/participants/{client_id}", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id"), ("client_id" = Uuid, Path, description = "The client to remove")),
    responses(
        (status = 200, description = "Removed", body = AppointmentView),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment or participant", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The last client, or not booked", body = Problem, content_type = "application/problem+json"),
    ))]
async fn remove_client(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, client_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<axum::Json<AppointmentView>> {
    as_its_therapist(&state, &user, id).await?;
    state
        .db
        .remove_participant(id, &user.actor(), client_id)
        .await
        .map_err(participant_error)?;
    state.hub.remove_account(id, client_id).await;
    let a = visible(&state, &user, id).await?;
    Ok(axum::Json(view(&state, a, &user)))
}

/// Let a client the therapist turned away knock again (its therapist only).
#[utoipa::path(delete, path = "/api/v1/appointments/{id}/denials/{client_id}", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id"), ("client_id" = Uuid, Path, description = "The client turned away")),
    responses(
        (status = 204, description = "They may knock again"),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours, or that client was not turned away", body = Problem, content_type = "application/problem+json"),
    ))]
async fn lift_denial(
    State(state): State<AppState>,
    user: AuthUser,
    Path((id, client_id)): Path<(Uuid, Uuid)>,
) -> ApiResult<StatusCode> {
    as_its_therapist(&state, &user, id).await?;
    if state.db.lift_denial(id, &user.actor(), client_id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("turned-away client"))
    }
}

/// Whether clients enter the session without being admitted.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AutoAdmitRequest {
    pub auto_admit: bool,
}

/// Let clients into the session without admitting them by hand, or not (its therapist).
#[utoipa::path(put, path = "/api/v1/appointments/{id}/auto-admit", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    request_body = AutoAdmitRequest,
    responses(
        (status = 200, description = "Changed", body = AppointmentView),
        (status = 403, description = "Not its therapist", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_auto_admit(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
    Json(body): Json<AutoAdmitRequest>,
) -> ApiResult<axum::Json<AppointmentView>> {
    as_its_therapist(&state, &user, id).await?;
    state
        .db
        .set_auto_admit(id, &user.actor(), body.auto_admit)
        .await?;
    state.hub.set_auto_admit(id, body.auto_admit).await;
    let a = visible(&state, &user, id).await?;
    Ok(axum::Json(view(&state, a, &user)))
}

/// One change to an appointment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HistoryEntry {
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// Who made the change (absent for the system).
    pub actor_id: Option<Uuid>,
    /// `created`, `cancelled`, `rescheduled`, `status_changed`, `participant_added`,
    /// `participant_removed`, `auto_admit_changed`.
    pub action: String,
    /// What changed.
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
}

/// The append-only history of an appointment.
#[utoipa::path(get, path = "/api/v1/appointments/{id}/history", tag = "appointments", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "Oldest first", body = Vec<HistoryEntry>),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn history(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Vec<HistoryEntry>>> {
    visible(&state, &user, id).await?;
    let events = state.db.appointment_history(id).await?;
    state
        .audit(
            Some(&user),
            "appointment.history_read",
            "appointment",
            Some(id.to_string()),
            serde_json::json!({}),
        )
        .await?;
    Ok(axum::Json(
        events
            .into_iter()
            .map(|e| HistoryEntry {
                at: e.at.get(),
                actor_id: e.actor_id,
                action: e.action,
                details: serde_json::from_str(&e.details).unwrap_or_default(),
            })
            .collect(),
    ))
}

/// An appointment as an iCalendar file (neutral title, the time, the link to join).
#[utoipa::path(get, path = "/api/v1/appointments/{id}/calendar.ics", tag = "calendar", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "text/calendar", content_type = "text/calendar", body = String),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn ics(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<impl IntoResponse> {
    let a = visible(&state, &user, id).await?;
    let body = calendar::render(&state, std::slice::from_ref(&a), false);
    state
        .audit(
            Some(&user),
            "appointment.calendar_read",
            "appointment",
            Some(id.to_string()),
            serde_json::json!({}),
        )
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/calendar; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"appointment.ics\"",
            ),
        ],
        body,
    ))
}

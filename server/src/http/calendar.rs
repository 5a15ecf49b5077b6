//! iCalendar output: one appointment's file, and each account's private feed that Google
//! Calendar, Outlook and Apple Calendar can subscribe to.
//!
//! Entries carry no health information: the title is "Appointment", with the time and the
//! link to join; no names, no kind of appointment, no reasons.

use super::appointments::join_window;
use crate::{
    auth::AuthUser,
    domain::AppointmentStatus,
    error::{ApiError, ApiResult, Problem},
    state::AppState,
    store::{Appointment, AppointmentFilter, Ts},
};
use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use icalendar::{Calendar, Component as _, Event, EventLike as _, EventStatus};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_feed, delete_feed))
        .routes(routes!(feed))
}

fn chrono(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
}

/// The link that opens an appointment (and its Join button) in the web client.
pub fn join_link(state: &AppState, a: &Appointment) -> String {
    format!("{}/#/appointments/{}", state.public_url, a.id)
}

/// Render appointments as an iCalendar document. A feed also names itself and asks
/// subscribers to refresh hourly.
pub fn render(state: &AppState, appointments: &[Appointment], feed: bool) -> String {
    let mut cal = Calendar::empty();
    cal.append_property(icalendar::Property::new("VERSION", "2.0"));
    cal.append_property(icalendar::Property::new(
        "PRODID",
        "-//Alcove//Appointments//EN",
    ));
    cal.append_property(icalendar::Property::new("CALSCALE", "GREGORIAN"));
    cal.append_property(icalendar::Property::new("METHOD", "PUBLISH"));
    if feed {
        cal.name("Appointments");
        cal.ttl(&chrono::Duration::hours(1));
    }
    let now = chrono(Timestamp::now());
    for a in appointments {
        let link = join_link(state, a);
        let (opens, _) = join_window(state, a);
        let mut e = Event::new();
        e.uid(&format!("{}@alcove", a.id))
            .timestamp(now)
            .summary("Appointment")
            .description(&format!(
                "Join from {} (the room opens at {} UTC): {link}",
                "the link",
                opens.strftime("%H:%M")
            ))
            .url(&link)
            .starts(chrono(a.starts_at.get()))
            .ends(chrono(a.ends_at.get()))
            .sequence(a.revision.max(0) as u32)
            .status(if a.status == AppointmentStatus::Cancelled {
                EventStatus::Cancelled
            } else {
                EventStatus::Confirmed
            });
        cal.push(e.done());
    }
    cal.done().to_string()
}

/// A calendar feed's address.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct FeedView {
    /// Private URL to subscribe to; anyone holding it can read the times of your
    /// appointments, so keep it to yourself. Creating a new one revokes the old one.
    pub url: String,
}

fn feed_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Create (or replace) your private calendar feed URL; the previous URL stops working.
#[utoipa::path(post, path = "/api/v1/me/calendar-feed", tag = "calendar", security(("bearer" = [])),
    responses(
        (status = 201, description = "The new feed URL", body = FeedView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn create_feed(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, axum::Json<FeedView>)> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(anyhow::anyhow!("random: {e}")))?;
    let token = format!("alccal_{}", URL_SAFE_NO_PAD.encode(bytes));
    state
        .db
        .set_calendar_feed(user.id, &feed_hash(&token))
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(FeedView {
            url: format!("{}/api/v1/calendar/{token}.ics", state.public_url),
        }),
    ))
}

/// Revoke your calendar feed URL.
#[utoipa::path(delete, path = "/api/v1/me/calendar-feed", tag = "calendar", security(("bearer" = [])),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "There was no feed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn delete_feed(State(state): State<AppState>, user: AuthUser) -> ApiResult<StatusCode> {
    if state.db.delete_calendar_feed(user.id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("calendar feed"))
    }
}

/// Appointments a feed shows: from 30 days ago to a year ahead, cancelled ones included
/// (marked cancelled, so that subscribed calendars remove them).
const FEED_PAST_DAYS: i64 = 30;
const FEED_FUTURE_DAYS: i64 = 366;
const FEED_MAX_EVENTS: i64 = 1000;

/// A private calendar feed (the token is the credential; no other sign-in needed).
#[utoipa::path(get, path = "/api/v1/calendar/{file}", tag = "calendar",
    params(("file" = String, Path, description = "`<feed token>.ics`, from POST /api/v1/me/calendar-feed")),
    responses(
        (status = 200, description = "text/calendar", content_type = "text/calendar", body = String),
        (status = 404, description = "Unknown or revoked feed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn feed(
    State(state): State<AppState>,
    axum::extract::Path(file): axum::extract::Path<String>,
) -> ApiResult<impl IntoResponse> {
    let token = file.strip_suffix(".ics").unwrap_or(&file);
    if token.is_empty() || token.len() > 100 {
        return Err(ApiError::not_found("calendar feed"));
    }
    let user = state
        .db
        .calendar_feed_user(&feed_hash(token))
        .await?
        .ok_or_else(|| ApiError::not_found("calendar feed"))?;
    let now = Timestamp::now();
    let filter = AppointmentFilter {
        participant: Some(user.id),
        from: Some(Ts::from(
            now - SignedDuration::from_hours(24 * FEED_PAST_DAYS),
        )),
        to: Some(Ts::from(
            now + SignedDuration::from_hours(24 * FEED_FUTURE_DAYS),
        )),
        status: None,
    };
    let (items, _) = state
        .db
        .list_appointments(&filter, FEED_MAX_EVENTS, 0)
        .await?;
    state
        .audit_as(
            Some((user.id, user.role())),
            "calendar.feed_read",
            "account",
            Some(user.id.to_string()),
            serde_json::json!({"appointments": items.len()}),
        )
        .await?;
    Ok((
        [(header::CONTENT_TYPE, "text/calendar; charset=utf-8")],
        render(&state, &items, true),
    ))
}

//! The synthetic call's appointment (`alcove probe`, order 10): the operator names two
//! test accounts in `ALCOVE_PROBE_ACCOUNTS` (a therapist's and a client's email, accounts
//! kept for the probe alone), and the probe's therapist asks here for an appointment that
//! starts now, outside the booking rules (notice, hours), so that the probe can join it at
//! any hour. Leftovers of an earlier probe that did not finish are cancelled first.

use crate::{
    auth::AuthUser,
    domain::{AppointmentKind, Email, Role},
    error::{ApiError, ApiResult, Problem},
    state::AppState,
    store::{AppointmentFilter, NewAppointment, Ts},
};
use axum::{extract::State, http::StatusCode};
use jiff::{SignedDuration, Timestamp};
use utoipa_axum::{router::OpenApiRouter, routes};

use super::appointments::{AppointmentView, view};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(probe_appointment))
}

/// How long a probe's appointment lasts (the probe takes seconds; it cancels it after).
const PROBE_MINUTES: i64 = 15;

/// An appointment starting now between the two probe accounts (the probe's therapist only).
#[utoipa::path(post, path = "/api/v1/probe/appointments", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 201, description = "An appointment, open to join now", body = AppointmentView),
        (status = 403, description = "Only the probe's therapist account (`ALCOVE_PROBE_ACCOUNTS`)", body = Problem, content_type = "application/problem+json"),
        (status = 404, description = "The probe is not set up on this service", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "The probe's client account does not exist or is not a client (`probe_misconfigured`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn probe_appointment(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<(StatusCode, axum::Json<AppointmentView>)> {
    let [therapist, client] = state.config.probe_accounts.as_slice() else {
        return Err(ApiError::not_found("probe"));
    };
    if user.role != Role::Therapist || !user.email.eq_ignore_ascii_case(therapist) {
        return Err(ApiError::forbidden(
            "only the probe's therapist account (ALCOVE_PROBE_ACCOUNTS) asks for probe appointments",
        ));
    }
    let misconfigured = || {
        ApiError::conflict(
            "probe_misconfigured",
            "the probe's client account (the second of ALCOVE_PROBE_ACCOUNTS) does not exist, is disabled or is not a client",
        )
    };
    let email = Email::parse(client).map_err(|_| misconfigured())?;
    let client = state
        .db
        .user_by_email(&email)
        .await?
        .map(|u| u.user)
        .filter(|u| u.role() == Role::Client && !u.disabled)
        .ok_or_else(misconfigured)?;
    // Leftovers of a probe that stopped half-way still hold the therapist's time.
    let now = Timestamp::now();
    let (left, _) = state
        .db
        .list_appointments(
            &AppointmentFilter {
                participant: Some(user.id),
                from: Some(Ts::from(now - SignedDuration::from_hours(24))),
                to: Some(Ts::from(now + SignedDuration::from_hours(1))),
                status: Some(crate::domain::AppointmentStatus::Booked),
            },
            100,
            0,
        )
        .await?;
    // Only the probe pair's own appointments (a probe still running holds one of them).
    for a in left.into_iter().filter(|a| a.is_participant(client.id)) {
        let _ = state
            .db
            .cancel_appointment(a.id, &user.actor(), Some("synthetic probe"), false, None)
            .await;
    }
    let start = Timestamp::from_second(now.as_second()).unwrap_or(now);
    let new = NewAppointment {
        therapist_id: user.id,
        client_ids: vec![client.id],
        kind: AppointmentKind::Session,
        starts_at: Ts::from(start),
        ends_at: Ts::from(start + SignedDuration::from_mins(PROBE_MINUTES)),
        buffer_minutes: 0,
        created_by: user.id,
        series_id: None,
    };
    let ids = state
        .db
        .create_appointments(&[new], Some(&user.actor()), None)
        .await
        .map_err(|(_, e)| super::appointments::booking_error(e))?;
    let a = state
        .db
        .appointment(ids[0])
        .await?
        .ok_or_else(|| ApiError::internal(anyhow::anyhow!("probe appointment vanished")))?;
    tracing::info!(appointment_id = %a.id, "probe appointment");
    Ok((StatusCode::CREATED, axum::Json(view(&state, a, &user))))
}

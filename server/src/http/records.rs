//! Session records, attendance for billing, the CSV export, and the audit trail.

use super::{
    appointments::visible,
    availability::{check_range, sane},
    extract::{Path, Query},
    pagination::{Page, PageParams},
};
use crate::{
    auth::AuthUser,
    domain::Role,
    error::{ApiError, ApiResult, Problem},
    state::AppState,
    store::{AppointmentFilter, AuditFilter, IntervalRecord, SessionRecord, Ts},
};
use axum::{extract::State, http::header, response::IntoResponse};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(sessions))
        .routes(routes!(attendance))
        .routes(routes!(attendance_csv))
        .routes(routes!(audit))
}

/// A connected interval.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IntervalView {
    #[schema(value_type = String, format = DateTime)]
    pub connected_at: Timestamp,
    /// Absent while still connected.
    #[schema(value_type = Option<String>, format = DateTime)]
    pub disconnected_at: Option<Timestamp>,
}

/// Quality figures over a session (averages of per-minute aggregates).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct QualityView {
    /// Start of the minute (absent in a summary).
    #[schema(value_type = Option<String>, format = DateTime)]
    pub minute: Option<Timestamp>,
    pub samples: i64,
    pub rtt_ms_avg: Option<f64>,
    pub rtt_ms_max: Option<f64>,
    pub jitter_ms_avg: Option<f64>,
    pub packet_loss_avg: Option<f64>,
    pub packet_loss_max: Option<f64>,
    pub bitrate_kbps_avg: Option<f64>,
    pub frames_dropped: i64,
    /// Share of samples reported through a TURN relay.
    pub relay_share: f64,
}

/// A participant's record in a session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ParticipantRecordView {
    pub participant_id: Uuid,
    pub user_id: Uuid,
    pub display_name: String,
    pub role: String,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub knocked_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub admitted_at: Option<Timestamp>,
    /// The therapist who admitted (absent: automatic, or the therapist themself).
    pub admitted_by: Option<Uuid>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub denied_at: Option<Timestamp>,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub left_at: Option<Timestamp>,
    pub left_reason: Option<String>,
    /// Seconds in the waiting room (knock to admission or denial).
    pub waiting_seconds: Option<i64>,
    /// Seconds connected over all intervals.
    pub connected_seconds: i64,
    pub reconnects: i32,
    /// `direct` or `relay`, as last reported.
    pub path: Option<String>,
    pub intervals: Vec<IntervalView>,
    pub quality: Option<QualityView>,
    pub quality_per_minute: Vec<QualityView>,
}

/// One session (a room's lifetime) of an appointment.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    pub id: Uuid,
    pub appointment_id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    #[schema(value_type = Option<String>, format = DateTime)]
    pub ended_at: Option<Timestamp>,
    /// `ended_by_therapist`, `window_closed`, `empty`, `appointment_cancelled`,
    /// `appointment_changed`, `server_shutdown`, `server_lost`.
    pub end_reason: Option<String>,
    pub participants: Vec<ParticipantRecordView>,
}

/// The end of an interval: its end, or the session's, or now.
fn interval_end(i: &IntervalRecord, s: &SessionRecord, now: Timestamp) -> Timestamp {
    i.disconnected_at
        .map(Ts::get)
        .or(s.session.ended_at.map(Ts::get))
        .unwrap_or(now)
}

fn seconds(a: Timestamp, b: Timestamp) -> i64 {
    b.duration_since(a).as_secs().max(0)
}

fn quality_view(
    rows: &[&crate::store::QualityRecord],
    minute: Option<Timestamp>,
) -> Option<QualityView> {
    let samples: i64 = rows.iter().map(|q| i64::from(q.samples)).sum();
    if samples == 0 {
        return None;
    }
    let wavg = |f: &dyn Fn(&crate::store::QualityRecord) -> Option<f64>| {
        let (sum, n) = rows.iter().fold((0.0, 0_i64), |(s, n), q| match f(q) {
            Some(v) => (s + v * f64::from(q.samples), n + i64::from(q.samples)),
            None => (s, n),
        });
        (n > 0).then(|| sum / n as f64)
    };
    let max = |f: &dyn Fn(&crate::store::QualityRecord) -> Option<f64>| {
        rows.iter().filter_map(|q| f(q)).reduce(f64::max)
    };
    Some(QualityView {
        minute,
        samples,
        rtt_ms_avg: wavg(&|q| q.rtt_ms_avg),
        rtt_ms_max: max(&|q| q.rtt_ms_max),
        jitter_ms_avg: wavg(&|q| q.jitter_ms_avg),
        packet_loss_avg: wavg(&|q| q.packet_loss_avg),
        packet_loss_max: max(&|q| q.packet_loss_max),
        bitrate_kbps_avg: wavg(&|q| q.bitrate_kbps_avg),
        frames_dropped: rows.iter().map(|q| q.frames_dropped).max().unwrap_or(0),
        relay_share: rows.iter().map(|q| f64::from(q.relay_samples)).sum::<f64>() / samples as f64,
    })
}

fn session_view(s: &SessionRecord, only_user: Option<Uuid>, now: Timestamp) -> SessionView {
    let participants = s
        .participants
        .iter()
        .filter(|p| only_user.is_none_or(|u| u == p.user_id))
        .map(|p| {
            let mine: Vec<&IntervalRecord> = s
                .intervals
                .iter()
                .filter(|i| i.participant_id == p.participant_id)
                .collect();
            let quality: Vec<&crate::store::QualityRecord> = s
                .quality
                .iter()
                .filter(|q| q.participant_id == p.participant_id)
                .collect();
            let waiting_end = p.admitted_at.or(p.denied_at).or(p.left_at);
            ParticipantRecordView {
                participant_id: p.participant_id,
                user_id: p.user_id,
                display_name: p.display_name.clone(),
                role: p.role.clone(),
                knocked_at: p.knocked_at.map(Ts::get),
                admitted_at: p.admitted_at.map(Ts::get),
                admitted_by: p.admitted_by,
                denied_at: p.denied_at.map(Ts::get),
                left_at: p.left_at.map(Ts::get),
                left_reason: p.left_reason.clone(),
                waiting_seconds: p
                    .knocked_at
                    .map(|k| seconds(k.get(), waiting_end.map(Ts::get).unwrap_or(now))),
                connected_seconds: mine
                    .iter()
                    .map(|i| seconds(i.connected_at.get(), interval_end(i, s, now)))
                    .sum(),
                reconnects: p.reconnects,
                path: p.path.clone(),
                intervals: mine
                    .iter()
                    .map(|i| IntervalView {
                        connected_at: i.connected_at.get(),
                        disconnected_at: i.disconnected_at.map(Ts::get),
                    })
                    .collect(),
                quality: quality_view(&quality, None),
                quality_per_minute: quality
                    .iter()
                    .filter_map(|q| quality_view(std::slice::from_ref(q), Some(q.minute.get())))
                    .collect(),
            }
        })
        .collect();
    SessionView {
        id: s.session.id,
        appointment_id: s.session.appointment_id,
        started_at: s.session.started_at.get(),
        ended_at: s.session.ended_at.map(Ts::get),
        end_reason: s.session.end_reason.clone(),
        participants,
    }
}

/// The sessions of an appointment: for its therapist and admins everything, for a client
/// their own attendance only.
#[utoipa::path(get, path = "/api/v1/appointments/{id}/sessions", tag = "records", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "Sessions, oldest first", body = Vec<SessionView>),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn sessions(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<Vec<SessionView>>> {
    let a = visible(&state, &user, id).await?;
    let only = (user.role != Role::Admin && a.therapist_id != user.id).then_some(user.id);
    let records = state.db.session_records(id).await?;
    state
        .audit(
            Some(&user),
            "session_record.read",
            "appointment",
            Some(id.to_string()),
            serde_json::json!({}),
        )
        .await?;
    let now = Timestamp::now();
    Ok(axum::Json(
        records.iter().map(|s| session_view(s, only, now)).collect(),
    ))
}

/// Connected spans of time.
type Spans = Vec<(Timestamp, Timestamp)>;

/// Measure of the union of spans.
fn union_seconds(mut spans: Vec<(Timestamp, Timestamp)>) -> i64 {
    spans.sort();
    let mut total = 0;
    let mut cur: Option<(Timestamp, Timestamp)> = None;
    for (a, b) in spans {
        match &mut cur {
            Some((_, e)) if a <= *e => *e = (*e).max(b),
            _ => {
                if let Some((s, e)) = cur {
                    total += seconds(s, e);
                }
                cur = Some((a, b));
            }
        }
    }
    if let Some((s, e)) = cur {
        total += seconds(s, e);
    }
    total
}

/// Seconds when both a span of `a` and a span of `b` are open.
fn overlap_seconds(a: &[(Timestamp, Timestamp)], b: &[(Timestamp, Timestamp)]) -> i64 {
    let mut spans = Vec::new();
    for (s1, e1) in a {
        for (s2, e2) in b {
            let (s, e) = ((*s1).max(*s2), (*e1).min(*e2));
            if s < e {
                spans.push((s, e));
            }
        }
    }
    union_seconds(spans)
}

/// A participant's attendance over an appointment's sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttendanceEntry {
    pub user_id: Uuid,
    pub display_name: String,
    pub role: String,
    pub connected_seconds: i64,
    /// Connected seconds / 60, rounded to the nearest minute.
    pub connected_minutes: i64,
    /// For clients: seconds connected while the therapist was connected too.
    pub with_therapist_seconds: Option<i64>,
}

/// Attendance fit for billing.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AttendanceView {
    pub appointment_id: Uuid,
    pub sessions: usize,
    pub participants: Vec<AttendanceEntry>,
    /// Seconds when the therapist and at least one client were connected together
    /// (absent for a client's own view).
    pub together_seconds: Option<i64>,
    pub together_minutes: Option<i64>,
}

fn minutes(s: i64) -> i64 {
    (s + 30) / 60
}

/// Attendance over all sessions of an appointment.
pub(crate) fn compute_attendance(
    id: Uuid,
    records: &[SessionRecord],
    only: Option<Uuid>,
    now: Timestamp,
) -> AttendanceView {
    // Spans per account (a participant id is per session; accounts span sessions).
    let mut spans: BTreeMap<Uuid, (String, String, Spans)> = BTreeMap::new();
    for s in records {
        for p in &s.participants {
            let e = spans
                .entry(p.user_id)
                .or_insert_with(|| (p.display_name.clone(), p.role.clone(), Vec::new()));
            for i in s
                .intervals
                .iter()
                .filter(|i| i.participant_id == p.participant_id)
            {
                e.2.push((i.connected_at.get(), interval_end(i, s, now)));
            }
        }
    }
    let therapist: Vec<(Timestamp, Timestamp)> = spans
        .values()
        .filter(|(_, r, _)| r == "therapist")
        .flat_map(|(_, _, v)| v.clone())
        .collect();
    let clients: Vec<(Timestamp, Timestamp)> = spans
        .values()
        .filter(|(_, r, _)| r == "client")
        .flat_map(|(_, _, v)| v.clone())
        .collect();
    let participants = spans
        .iter()
        .filter(|(u, _)| only.is_none_or(|o| o == **u))
        .map(|(u, (name, role, v))| {
            let connected = union_seconds(v.clone());
            AttendanceEntry {
                user_id: *u,
                display_name: name.clone(),
                role: role.clone(),
                connected_seconds: connected,
                connected_minutes: minutes(connected),
                with_therapist_seconds: (role == "client").then(|| overlap_seconds(v, &therapist)),
            }
        })
        .collect();
    let together = only
        .is_none()
        .then(|| overlap_seconds(&therapist, &clients));
    AttendanceView {
        appointment_id: id,
        sessions: records.len(),
        participants,
        together_seconds: together,
        together_minutes: together.map(minutes),
    }
}

/// Attendance fit for billing: each participant's connected minutes, and the minutes when
/// the therapist and a client were connected together. A client sees their own only.
#[utoipa::path(get, path = "/api/v1/appointments/{id}/attendance", tag = "records", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "Attendance", body = AttendanceView),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn attendance(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<AttendanceView>> {
    let a = visible(&state, &user, id).await?;
    let only = (user.role != Role::Admin && a.therapist_id != user.id).then_some(user.id);
    let records = state.db.session_records(id).await?;
    state
        .audit(
            Some(&user),
            "attendance.read",
            "appointment",
            Some(id.to_string()),
            serde_json::json!({}),
        )
        .await?;
    Ok(axum::Json(compute_attendance(
        id,
        &records,
        only,
        Timestamp::now(),
    )))
}

/// A date range for the export.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RangeParams {
    /// Appointments starting at or after this instant (RFC 3339).
    #[param(value_type = String, format = DateTime)]
    pub from: Timestamp,
    /// Appointments starting before this instant (RFC 3339), at most 400 days after `from`.
    #[param(value_type = String, format = DateTime)]
    pub to: Timestamp,
}

/// The signed-in therapist's attendance as CSV, one row per appointment and client.
#[utoipa::path(get, path = "/api/v1/therapists/me/attendance.csv", tag = "records", security(("bearer" = [])),
    params(RangeParams),
    responses(
        (status = 200, description = "text/csv", content_type = "text/csv", body = String),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Bad range", body = Problem, content_type = "application/problem+json"),
    ))]
async fn attendance_csv(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<RangeParams>,
) -> ApiResult<impl IntoResponse> {
    user.require(&[Role::Therapist])?;
    sane("from", p.from)?;
    sane("to", p.to)?;
    check_range(p.from, p.to, 400)?;
    let filter = AppointmentFilter {
        participant: Some(user.id),
        from: Some(Ts::from(p.from)),
        to: Some(Ts::from(p.to)),
        status: None,
    };
    let (appointments, _) = state.db.list_appointments(&filter, 10_000, 0).await?;
    let mut records = state
        .db
        .therapist_session_records(user.id, Ts::from(p.from), Ts::from(p.to))
        .await?;
    let now = Timestamp::now();
    let mut w = csv::Writer::from_writer(Vec::new());
    let head = [
        "appointment_id",
        "starts_at",
        "ends_at",
        "kind",
        "status",
        "late_cancellation",
        "client_id",
        "client_name",
        "sessions",
        "client_connected_minutes",
        "client_with_therapist_minutes",
        "therapist_connected_minutes",
        "together_minutes",
    ];
    w.write_record(head).map_err(anyhow::Error::from)?;
    for a in appointments.iter().filter(|a| a.therapist_id == user.id) {
        let records = records.remove(&a.id).unwrap_or_default();
        let att = compute_attendance(a.id, &records, None, now);
        let therapist_minutes = att
            .participants
            .iter()
            .find(|p| p.role == "therapist")
            .map_or(0, |p| p.connected_minutes);
        for c in a.clients() {
            let mine = att.participants.iter().find(|p| p.user_id == c.user_id);
            w.write_record([
                a.id.to_string(),
                a.starts_at.to_string(),
                a.ends_at.to_string(),
                a.kind.as_str().to_owned(),
                a.status.as_str().to_owned(),
                a.late_cancellation.to_string(),
                c.user_id.to_string(),
                csv_text(&c.display_name),
                att.sessions.to_string(),
                mine.map_or(0, |m| m.connected_minutes).to_string(),
                mine.and_then(|m| m.with_therapist_seconds)
                    .map_or(0, minutes)
                    .to_string(),
                therapist_minutes.to_string(),
                att.together_minutes.unwrap_or(0).to_string(),
            ])
            .map_err(anyhow::Error::from)?;
        }
    }
    let body = w.into_inner().map_err(|e| anyhow::anyhow!("csv: {e}"))?;
    state
        .audit(
            Some(&user),
            "attendance.export",
            "therapist",
            Some(user.id.to_string()),
            serde_json::json!({"from": p.from.to_string(), "to": p.to.to_string(), "appointments": appointments.len()}),
        )
        .await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"attendance.csv\"",
            ),
        ],
        body,
    ))
}

/// A cell a spreadsheet will not run as a formula: text starting with `=`, `+`, `-`, `@`,
/// a tab or a carriage return gets a leading apostrophe (OWASP's advice for CSV injection).
fn csv_text(s: &str) -> String {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_owned()
    }
}

/// Audit trail filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    #[param(value_type = Option<String>, format = DateTime)]
    pub from: Option<Timestamp>,
    #[param(value_type = Option<String>, format = DateTime)]
    pub to: Option<Timestamp>,
    /// Only entries by this account.
    pub actor_id: Option<Uuid>,
    /// Only this action, e.g. `auth.sign_in_failed`, `appointment.read`, `waiting_room.admit`.
    pub action: Option<String>,
    /// Only entries about this id (an appointment, an account).
    pub target_id: Option<String>,
}

/// One audit trail entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditView {
    pub seq: i64,
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    pub actor_id: Option<Uuid>,
    pub actor_role: Option<String>,
    pub action: String,
    pub target_type: String,
    pub target_id: Option<String>,
    #[schema(value_type = Object)]
    pub details: serde_json::Value,
    /// This entry's link in the hash chain (hex).
    pub hash: String,
}

/// The audit trail, newest first (admins).
#[utoipa::path(get, path = "/api/v1/admin/audit", tag = "admin", security(("bearer" = [])),
    params(AuditParams, PageParams),
    responses(
        (status = 200, description = "One page of entries", body = Page<AuditView>),
        (status = 403, description = "Not an admin", body = Problem, content_type = "application/problem+json"),
    ))]
async fn audit(
    State(state): State<AppState>,
    user: AuthUser,
    Query(p): Query<AuditParams>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<Page<AuditView>>> {
    user.require(&[Role::Admin])?;
    let page = page.check()?;
    for (field, t) in [("from", p.from), ("to", p.to)] {
        if let Some(t) = t {
            sane(field, t)?;
        }
    }
    if let (Some(f), Some(t)) = (p.from, p.to)
        && f >= t
    {
        return Err(ApiError::field("from", "`from` must be before `to`"));
    }
    let (rows, total) = state
        .db
        .audit_page(
            &AuditFilter {
                from: p.from.map(Ts::from),
                to: p.to.map(Ts::from),
                actor_id: p.actor_id,
                action: p.action.clone(),
                target_id: p.target_id.clone(),
            },
            page.limit(),
            page.offset(),
        )
        .await?;
    state
        .audit(Some(&user), "audit.read", "audit", None, serde_json::json!({"action": p.action, "actor_id": p.actor_id, "target_id": p.target_id}))
        .await?;
    Ok(axum::Json(Page::new(
        rows.into_iter()
            .map(|r| AuditView {
                seq: r.seq,
                at: r.at.get(),
                actor_id: r.actor_id,
                actor_role: r.actor_role,
                action: r.action,
                target_type: r.target_type,
                target_id: r.target_id,
                details: serde_json::from_str(&r.details).unwrap_or_default(),
                hash: hex::encode(r.hash),
            })
            .collect(),
        page,
        total,
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Timestamp {
        format!("2026-12-01T{s}Z").parse().unwrap()
    }

    #[test]
    fn csv_cells_cannot_be_formulas() {
        assert_eq!(
            csv_text("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        assert_eq!(csv_text("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_text("Casey"), "Casey");
    }

    #[test]
    fn union_and_overlap() {
        let therapist = vec![(t("10:00:00"), t("10:50:00"))];
        let client = vec![
            (t("10:05:00"), t("10:20:00")),
            (t("10:19:00"), t("10:30:00")),
            (t("10:40:00"), t("11:00:00")),
        ];
        assert_eq!(union_seconds(client.clone()), (25 + 20) * 60);
        assert_eq!(overlap_seconds(&therapist, &client), (25 + 10) * 60);
        assert_eq!(minutes(89), 1);
        assert_eq!(minutes(90), 2);
    }
}

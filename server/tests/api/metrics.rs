//! `/metrics`: the series operators need, after a real session, and no personal data.

use crate::{
    helpers::{Api, Backend, PASSWORD},
    peers::{hello, join_token},
    process::ServerProcess,
    signaling::{live_appointment, signalling_app},
};
use alcove::domain::Role;
use alcove_signaling::{ClientMessage, ErrorCode, ServerMessage, protocol::Candidate};
use std::time::Duration;

crate::on_both_backends!(metrics_carry_the_series_after_a_session_and_no_personal_data);

/// The value of the series `line_start` (its name and labels, exactly), if present.
fn value(text: &str, line_start: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_start) && l[line_start.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn welcome_pid(m: &ServerMessage) -> uuid::Uuid {
    match m {
        ServerMessage::Welcome { participant_id, .. } => *participant_id,
        other => panic!("not a welcome: {other:?}"),
    }
}

async fn metrics_carry_the_series_after_a_session_and_no_personal_data(backend: Backend) {
    let app = signalling_app(backend, |_| {}).await;
    let t = app.user_with_role("Dr Metrics", Role::Therapist).await;
    let c = app.client("Client Metrics").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    // A wrong password: a problem response.
    app.post(
        "/api/v1/auth/login",
        None,
        serde_json::json!({"email": c.email, "password": "not the password at all"}),
    )
    .await
    .expect_problem(401, "invalid_credentials");

    // The therapist and the client meet; the client waits a moment, is admitted, signals.
    let url = |j: &serde_json::Value| j["signaling_url"].as_str().unwrap().to_owned();
    let tj = join_token(&app, &t, id).await;
    let (mut th, tw) = hello(&url(&tj), tj["token"].as_str().unwrap(), None, false).await;
    let cj = join_token(&app, &c, id).await;
    let (mut cl, cw) = hello(&url(&cj), cj["token"].as_str().unwrap(), None, false).await;
    let (t_pid, c_pid) = (welcome_pid(&tw), welcome_pid(&cw));
    let ServerMessage::Welcome { resume_token, .. } = cw else {
        unreachable!()
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    th.send(&ClientMessage::Admit {
        participant_id: c_pid,
    })
    .await
    .unwrap();
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await
    .unwrap();
    let candidate = |to| ClientMessage::Signal {
        to,
        description: None,
        candidate: Some(Candidate {
            candidate: "candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }),
    };
    cl.send(&candidate(t_pid)).await.unwrap();
    th.send(&candidate(c_pid)).await.unwrap();
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Signal { .. }).then_some(())
    })
    .await
    .unwrap();
    // Something malformed: an `error`.
    cl.send_text("{\"type\":").await.unwrap();
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::MalformedMessage,
                ..
            }
        )
        .then_some(())
    })
    .await
    .unwrap();
    // While both are in the call.
    let during = app.get("/metrics", None).await;
    assert_eq!(during.status.as_u16(), 200);
    let ctype = during.headers[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");
    let m = during.text;
    assert_eq!(value(&m, "alcove_signaling_connections"), Some(2.0), "{m}");
    assert_eq!(
        value(&m, "alcove_rooms{state=\"in_call\"}"),
        Some(1.0),
        "{m}"
    );

    // The client drops and comes back; the therapist ends the session.
    cl.drop_connection().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let cj = join_token(&app, &c, id).await;
    let (_cl, _) = hello(
        &url(&cj),
        cj["token"].as_str().unwrap(),
        Some(resume_token),
        false,
    )
    .await;
    th.send(&ClientMessage::End).await.unwrap();
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Ended { .. }).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let m = app.get("/metrics", None).await.text;
    for (series, at_least) in [
        (
            "alcove_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"200\"}",
            1.0,
        ),
        (
            "alcove_http_requests_total{method=\"POST\",route=\"/api/v1/auth/login\",status=\"401\"}",
            1.0,
        ),
        (
            "alcove_http_requests_total{method=\"POST\",route=\"/api/v1/appointments/{id}/join\",status=\"200\"}",
            3.0,
        ),
        (
            "alcove_http_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/auth/login\"}",
            1.0,
        ),
        ("alcove_api_errors_total{code=\"invalid_credentials\"}", 1.0),
        ("alcove_signaling_messages_total{type=\"hello\"}", 3.0),
        ("alcove_signaling_messages_total{type=\"signal\"}", 2.0),
        ("alcove_signaling_messages_total{type=\"admit\"}", 1.0),
        ("alcove_signaling_messages_total{type=\"end\"}", 1.0),
        (
            "alcove_signaling_errors_total{code=\"malformed_message\"}",
            1.0,
        ),
        ("alcove_waiting_room_wait_seconds_count", 1.0),
        ("alcove_reconnects_total", 1.0),
        (
            "alcove_sessions_ended_total{reason=\"ended_by_therapist\"}",
            1.0,
        ),
        ("alcove_session_duration_seconds_count", 1.0),
        ("alcove_db_pool_max_connections", 1.0),
    ] {
        let v = value(&m, series).unwrap_or_else(|| panic!("{series} missing:\n{m}"));
        assert!(
            v >= at_least,
            "{series} = {v}, expected at least {at_least}"
        );
    }
    for series in [
        "alcove_signaling_connections",
        "alcove_draining",
        "alcove_rooms{state=\"open\"}",
        "alcove_rooms{state=\"waiting\"}",
        "alcove_db_pool_connections{state=\"idle\"}",
        "alcove_db_pool_connections{state=\"in_use\"}",
        "alcove_waiting_room_wait_seconds_sum",
        "alcove_session_duration_seconds_bucket{le=\"300.0\"}",
    ] {
        assert!(value(&m, series).is_some(), "{series} missing:\n{m}");
    }
    assert_eq!(value(&m, "alcove_rooms{state=\"in_call\"}"), Some(0.0));
    assert!(m.trim_end().ends_with("# EOF"), "OpenMetrics text");

    // No personal data: no id, email, name or token of anyone or anything.
    let sessions = app
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    let mut secrets = vec![
        id.to_string(),
        t.id.to_string(),
        c.id.to_string(),
        t_pid.to_string(),
        c_pid.to_string(),
        t.email.clone(),
        c.email.clone(),
        "Dr Metrics".into(),
        "Client Metrics".into(),
        "192.0.2.10".into(),
        PASSWORD.into(),
        t.token().unwrap().to_owned(),
    ];
    secrets.push(sessions[0]["id"].as_str().unwrap().to_owned());
    for s in &secrets {
        assert!(!m.contains(s.as_str()), "{s} is in /metrics");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_have_a_listener_of_their_own() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let srv = ServerProcess::start(Backend::Sqlite, &[("ALCOVE_METRICS_LISTEN", &addr)]).await;
    srv.get("/healthz", None).await.expect(200);
    // Not on the public listener...
    srv.get("/metrics", None)
        .await
        .expect_problem(404, "not_found");
    // ... on its own.
    let r = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains(
            "alcove_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"
        ),
        "{text}"
    );
}

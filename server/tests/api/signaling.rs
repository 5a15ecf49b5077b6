//! Signalling through the real server: webrtc-rs peers, coturn relay, resume, bad input.

use crate::helpers::Api;
use crate::helpers::{Backend, Session, TestApp, spawn_app_with};
use crate::on_both_backends;
use crate::peers::{Obs, RtcPeer, join_token, send_hello};
use crate::turn::Coturn;
use alcove::domain::Role;
use alcove_signaling::{
    ClientMessage, ErrorCode, ServerMessage,
    client::{Incoming, SignalClient},
    close,
};
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use std::time::Duration;
use uuid::Uuid;
use webrtc::peer_connection::{RTCIceCandidateType, RTCPeerConnectionState};

on_both_backends!(
    two_webrtc_peers_meet_through_the_waiting_room,
    a_relay_only_account_is_refused_rather_than_connected_directly_when_there_is_no_relay,
    a_turned_away_client_cannot_knock_again_until_the_therapist_lets_them,
);

/// A server with short signalling timings, so that tests of timeouts are quick.
pub async fn signalling_app(
    backend: Backend,
    tweak: impl FnOnce(&mut alcove::config::Config),
) -> TestApp {
    spawn_app_with(backend, |c| {
        c.signal_grace = Duration::from_secs(2);
        c.signal_hello_timeout = Duration::from_millis(800);
        c.signal_ping_interval = Duration::from_millis(500);
        tweak(c);
    })
    .await
}

/// An appointment starting at the next 5-minute mark at least a minute from now: its join
/// window is open.
pub async fn live_appointment(app: &impl Api, therapist: &Session, clients: &[&Session]) -> Uuid {
    for c in clients {
        app.relate(therapist, c).await;
    }
    let start = crate::helpers::five_minute_mark_after(SignedDuration::from_secs(60));
    let r = app
        .post(
            "/api/v1/appointments",
            therapist.token(),
            json!({"starts_at": start.to_string(), "kind": "session",
                   "client_ids": clients.iter().map(|c| c.id).collect::<Vec<_>>()}),
        )
        .await
        .expect(201);
    r["id"].as_str().unwrap().parse().unwrap()
}

/// A therapist, a client and their live appointment.
pub async fn pair(app: &TestApp) -> (Session, Session, Uuid) {
    let t = app.user_with_role("Dr Signal", Role::Therapist).await;
    let c = app.client("Casey").await;
    let id = live_appointment(app, &t, &[&c]).await;
    (t, c, id)
}

fn is_connected(o: &Obs) -> bool {
    *o == Obs::State(RTCPeerConnectionState::Connected)
}

/// Therapist in, client waits, therapist admits, the client calls, both chat.
async fn admitted_call(app: &TestApp, t: &Session, c: &Session, id: Uuid) -> (RtcPeer, RtcPeer) {
    let mut th = RtcPeer::join(app, t, id).await;
    assert_eq!(th.welcome["role"], "therapist");
    assert_eq!(th.welcome["peers"], json!([]));
    let mut cl = RtcPeer::join(app, c, id).await;
    assert_eq!(cl.welcome["role"], "client");
    assert_eq!(
        cl.welcome["peers"],
        json!([]),
        "a waiting client sees no one"
    );
    cl.expect("waiting", |m| {
        matches!(m, ServerMessage::Waiting { position: 1 }).then_some(())
    })
    .await;
    // The therapist's arrival never admits by itself; the lobby shows the client.
    let waiting = th
        .expect("lobby with the client", |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(waiting.clone()),
            _ => None,
        })
        .await;
    assert_eq!(waiting[0].participant_id, cl.pid);
    assert_eq!(waiting[0].display_name, "Casey");
    th.send(&ClientMessage::Admit {
        participant_id: cl.pid,
    })
    .await;
    let peers = cl
        .expect("admitted", |m| match m {
            ServerMessage::Admitted { peers } => Some(peers.clone()),
            _ => None,
        })
        .await;
    assert_eq!(peers.len(), 1);
    assert_eq!(peers[0].participant_id, th.pid);
    assert!(peers[0].polite, "the client is the polite side");
    let joined_polite = th
        .expect("peer_joined", |m| match m {
            ServerMessage::PeerJoined {
                participant_id,
                polite,
                ..
            } if *participant_id == cl.pid => Some(*polite),
            _ => None,
        })
        .await;
    assert!(!joined_polite, "the therapist is told the opposite");

    cl.call(th.pid);
    cl.observe("client connected", is_connected).await;
    th.observe("therapist connected", is_connected).await;
    cl.observe("client data channel open", |o| *o == Obs::DcOpen)
        .await;
    th.observe("therapist data channel open", |o| *o == Obs::DcOpen)
        .await;
    cl.chat("hello from the client");
    th.observe("message at the therapist", |o| {
        *o == Obs::DcMessage("hello from the client".into())
    })
    .await;
    th.chat("hello from the therapist");
    cl.observe("message at the client", |o| {
        *o == Obs::DcMessage("hello from the therapist".into())
    })
    .await;
    (th, cl)
}

async fn two_webrtc_peers_meet_through_the_waiting_room(backend: Backend) {
    let app = signalling_app(backend, |_| {}).await;
    let (t, c, id) = pair(&app).await;
    let (th, cl) = admitted_call(&app, &t, &c, id).await;
    // Descriptions and candidates went through the server.
    let seen = th.signals_seen.lock().await.join("\n");
    assert!(
        seen.contains("\"type\":\"offer\"") && seen.contains("candidate"),
        "{seen}"
    );
    assert!(
        cl.signals_seen
            .lock()
            .await
            .iter()
            .any(|s| s.contains("\"type\":\"answer\""))
    );
}

/// The deployed coturn configuration denies relaying to internal addresses (the class of
/// CVE-2020-26262): two relay-only peers whose relayed addresses are on loopback cannot be
/// connected through it, and coturn says why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployed_turn_relay_refuses_to_reach_loopback_peers() {
    let turn = Coturn::start_as_deployed();
    let app = signalling_app(Backend::Sqlite, |c| {
        c.turn_urls = vec![turn.url()];
        c.turn_secret = Some(turn.secret.clone().into());
        c.relay_only = true;
    })
    .await;
    let (t, c, id) = pair(&app).await;
    let mut th = RtcPeer::join(&app, &t, id).await;
    let mut cl = RtcPeer::join(&app, &c, id).await;
    th.expect("the client in the lobby", |m| match m {
        ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(()),
        _ => None,
    })
    .await;
    th.send(&ClientMessage::Admit {
        participant_id: cl.pid,
    })
    .await;
    cl.expect("admitted", |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await;
    cl.call(th.pid);
    // Relay candidates are gathered (allocation works) but never connect.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        match tokio::time::timeout_at(deadline, cl.obs.recv()).await {
            Ok(Some(Obs::State(RTCPeerConnectionState::Connected))) => {
                panic!("connected through a relay to a loopback peer")
            }
            Ok(Some(Obs::State(RTCPeerConnectionState::Failed))) | Err(_) | Ok(None) => break,
            Ok(Some(_)) => {}
        }
    }
    let log = turn.log();
    assert!(
        log.contains("ALLOCATE processed, success"),
        "relays were allocated: {log}"
    );
    let types = cl.candidate_types.lock().unwrap().clone();
    assert!(
        !types.is_empty() && types.iter().all(|t| *t == RTCIceCandidateType::Relay),
        "{types:?}"
    );
    let refused = log
        .lines()
        .filter(|l| l.contains("CREATE_PERMISSION") || l.contains("CHANNEL_BIND"))
        .collect::<Vec<_>>();
    assert!(
        !refused.is_empty() && refused.iter().all(|l| !l.contains("success")),
        "permissions to the loopback peer refused: {refused:#?}\n{log}"
    );
    assert!(
        refused
            .iter()
            .any(|l| l.contains("403") || l.contains("Forbidden")),
        "refused as forbidden: {refused:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_only_call_through_a_real_coturn() {
    let turn = Coturn::start();
    let app = signalling_app(Backend::Sqlite, |c| {
        c.turn_urls = vec![turn.url()];
        c.turn_secret = Some(turn.secret.clone().into());
        c.relay_only = true;
    })
    .await;
    let (t, c, id) = pair(&app).await;
    // The join response carries TURN REST credentials and the relay policy.
    let j = join_token(&app, &c, id).await;
    assert_eq!(j["ice_transport_policy"], "relay");
    let turn_server = &j["ice_servers"][0];
    assert_eq!(turn_server["urls"][0], turn.url());
    let username = turn_server["username"].as_str().unwrap();
    let (expiry, _) = username.split_once(':').expect("<expiry>:<id>");
    assert!(expiry.parse::<i64>().unwrap() > Timestamp::now().as_second());
    assert_eq!(
        turn_server["credential"],
        alcove::signal::turn_credential(&turn.secret, username)
    );

    let (th, cl) = admitted_call(&app, &t, &c, id).await;
    // Every candidate either side gathered is a relay candidate: no host address was
    // offered, and the call connected through coturn.
    for p in [&th, &cl] {
        let types = p.candidate_types.lock().unwrap().clone();
        assert!(!types.is_empty(), "candidates were gathered");
        assert!(
            types.iter().all(|t| *t == RTCIceCandidateType::Relay),
            "{types:?}"
        );
    }
    let mut crossed = 0;
    for s in th
        .signals_seen
        .lock()
        .await
        .iter()
        .chain(cl.signals_seen.lock().await.iter())
    {
        if s.contains("\"candidate\":\"candidate:") {
            crossed += 1;
            assert!(s.contains("typ relay"), "only relay candidates cross: {s}");
        }
    }
    assert!(crossed > 0, "candidates crossed the signalling channel");
    let log = turn.log();
    assert!(
        log.contains("ALLOCATE processed, success"),
        "coturn allocated a relay: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_client_resumes_within_grace_and_times_out_after() {
    let app = signalling_app(Backend::Sqlite, |_| {}).await;
    let (t, c, id) = pair(&app).await;
    let (mut th, mut cl) = admitted_call(&app, &t, &c, id).await;
    let pid = cl.pid;

    // The client's socket is cut mid-session: the therapist is told it is reconnecting.
    cl.cut_signalling().await;
    th.expect("peer_reconnecting", |m| {
        matches!(m, ServerMessage::PeerReconnecting { participant_id } if *participant_id == pid)
            .then_some(())
    })
    .await;
    // Back inside the grace period, with the resume token and a fresh join token.
    let welcome = cl.resume(&app, &c, id).await;
    assert_eq!(welcome["resumed"], true);
    assert_eq!(welcome["participant_id"], pid.to_string());
    assert_eq!(welcome["peers"][0]["participant_id"], th.pid.to_string());
    let reset = th
        .expect("peer_resumed", |m| match m {
            ServerMessage::PeerResumed {
                participant_id,
                reset,
            } if *participant_id == pid => Some(*reset),
            ServerMessage::PeerLeft { .. } => panic!("no peer_left inside the grace period"),
            _ => None,
        })
        .await;
    assert!(!reset, "the client kept its peer connection");
    // The peers renegotiate with an ICE restart, and the data channel works again.
    th.restart_ice();
    tokio::time::sleep(Duration::from_millis(500)).await;
    th.chat("still there?");
    cl.observe("message after resume", |o| {
        *o == Obs::DcMessage("still there?".into())
    })
    .await;
    cl.chat("yes");
    th.observe("reply after resume", |o| *o == Obs::DcMessage("yes".into()))
        .await;
    assert!(
        th.signals_seen
            .lock()
            .await
            .iter()
            .filter(|s| s.contains("\"type\":\"answer\""))
            .count()
            >= 1,
        "the restart was answered"
    );

    // Cut again and stay away past the grace period (2 s): now the therapist gets peer_left.
    cl.cut_signalling().await;
    th.expect("peer_reconnecting", |m| {
        matches!(m, ServerMessage::PeerReconnecting { .. }).then_some(())
    })
    .await;
    let reason = th
        .expect("peer_left", |m| match m {
            ServerMessage::PeerLeft {
                participant_id,
                reason,
            } if *participant_id == pid => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert_eq!(reason, "timeout");
}

/// Connect and say hello with a join token for `who`.
async fn hello_as(app: &TestApp, who: &Session, id: Uuid) -> (SignalClient, ServerMessage) {
    let j = join_token(app, who, id).await;
    crate::peers::hello(
        j["signaling_url"].as_str().unwrap(),
        j["token"].as_str().unwrap(),
        None,
        false,
    )
    .await
}

fn ws_url(app: &TestApp) -> String {
    format!("{}/api/v1/signal", app.base.replace("http://", "ws://"))
}

/// Expect an `error` with `code`, then (optionally) a close with `close_code`.
async fn expect_error(c: &mut SignalClient, code: ErrorCode, close_code: Option<u16>) {
    let got = c
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .unwrap_or_else(|e| panic!("expected error {code:?}: {e}"));
    assert_eq!(got, code);
    if let Some(cc) = close_code {
        expect_close(c, cc).await;
    }
}

async fn expect_close(c: &mut SignalClient, code: u16) {
    assert_eq!(closed_with(c).await, Some(code));
}

/// The connection is still up: a harmless message gets its ordinary answer.
pub async fn still_up(c: &mut SignalClient) {
    c.send_text(r#"{"type":"no_such_thing"}"#).await.unwrap();
    expect_error(c, ErrorCode::UnknownType, None).await;
}

fn pid_of(welcome: &ServerMessage) -> Uuid {
    match welcome {
        ServerMessage::Welcome { participant_id, .. } => *participant_id,
        other => panic!("not a welcome: {other:?}"),
    }
}

fn end_of_candidates() -> alcove_signaling::protocol::Candidate {
    alcove_signaling::protocol::Candidate {
        candidate: String::new(),
        sdp_mid: None,
        sdp_m_line_index: None,
        username_fragment: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_documented_error_while_other_rooms_keep_working() {
    // Pings every 5 s: the idle connections of the other room are not read by this test
    // (a WebSocket client answers pings only while reading), and must outlive it.
    let app = signalling_app(Backend::Sqlite, |c| {
        c.signal_ping_interval = Duration::from_secs(5);
    })
    .await;
    // A healthy room alongside, checked at the end.
    let (t2, c2, id2) = pair(&app).await;
    let (mut other_t, _) = hello_as(&app, &t2, id2).await;
    let (mut other_c, other_welcome) = hello_as(&app, &c2, id2).await;
    let other_pid = pid_of(&other_welcome);

    let (t, c, id) = pair(&app).await;
    let url = ws_url(&app);

    // No hello: closed with 4000 after the hello timeout.
    let mut s = SignalClient::connect(&url, None).await.unwrap();
    expect_close(&mut s, close::HELLO_TIMEOUT).await;
    // Something else first: error hello_required, then the timeout all the same.
    let mut s = SignalClient::connect(&url, None).await.unwrap();
    s.send(&ClientMessage::Leave).await.unwrap();
    expect_error(&mut s, ErrorCode::HelloRequired, None).await;
    expect_close(&mut s, close::HELLO_TIMEOUT).await;

    // Bad tokens: garbage, forged (another key), expired, an access token, a reused one.
    let hello_with = |token: String| {
        let url = url.clone();
        async move { send_hello(&url, &token, None, false).await }
    };
    let mut s = hello_with("not-a-token".into()).await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(close::INVALID_TOKEN)).await;
    let good: alcove::signal::JoinClaims = {
        let j = join_token(&app, &c, id).await;
        app.state
            .jwt
            .verify(j["token"].as_str().unwrap(), "alcove-signal")
            .unwrap()
    };
    let other_dir = tempfile::tempdir().unwrap();
    let forger = alcove::auth::Jwt::new(
        std::sync::Arc::new(alcove::auth::KeySet::load_or_create(other_dir.path()).unwrap()),
        app.state.jwt.issuer(),
    );
    let mut fresh = good.clone();
    fresh.jti = Uuid::new_v4();
    let mut s = hello_with(forger.sign(&fresh).unwrap()).await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(close::INVALID_TOKEN)).await;
    let mut expired = good.clone();
    expired.jti = Uuid::new_v4();
    expired.exp = Timestamp::now().as_second() - 120;
    let mut s = hello_with(app.state.jwt.sign(&expired).unwrap()).await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(close::INVALID_TOKEN)).await;
    let mut s = hello_with(c.access.clone()).await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(close::INVALID_TOKEN)).await;
    let j = join_token(&app, &c, id).await;
    let token = j["token"].as_str().unwrap().to_owned();
    let mut client = hello_with(token.clone()).await;
    client
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Welcome { .. }).then_some(())
        })
        .await
        .unwrap();
    let mut s = hello_with(token).await;
    expect_error(&mut s, ErrorCode::InvalidToken, Some(close::INVALID_TOKEN)).await;

    // Outside the join window: no token from the API, and a hand-made one is refused.
    let far: Uuid = {
        let start = (Timestamp::now() + SignedDuration::from_hours(48))
            .round(jiff::Unit::Hour)
            .unwrap();
        let r = app
            .post(
                "/api/v1/appointments",
                t.token(),
                json!({"starts_at": start.to_string(), "kind": "session", "client_ids": [c.id]}),
            )
            .await
            .expect(201);
        r["id"].as_str().unwrap().parse().unwrap()
    };
    app.post(
        format!("/api/v1/appointments/{far}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "not_joinable");
    let far_appt = app.state.db.appointment(far).await.unwrap().unwrap();
    let mut outside = good.clone();
    outside.jti = Uuid::new_v4();
    outside.apt = far;
    outside.starts = far_appt.starts_at.get().as_second();
    let mut s = hello_with(app.state.jwt.sign(&outside).unwrap()).await;
    expect_error(&mut s, ErrorCode::NotJoinable, Some(close::NOT_JOINABLE)).await;
    // Another pair's appointment: no token at all (404, existence does not leak).
    app.post(
        format!("/api/v1/appointments/{id2}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");

    // A waiting client sending a signal: error not_admitted, connection stays up.
    client
        .send(&ClientMessage::Signal {
            to: Uuid::new_v4(),
            description: None,
            candidate: Some(end_of_candidates()),
        })
        .await
        .unwrap();
    expect_error(&mut client, ErrorCode::NotAdmitted, None).await;
    still_up(&mut client).await;

    // Admitted, a signal to someone in another room: unknown_peer.
    let (mut th, _) = hello_as(&app, &t, id).await;
    let waiting = th
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => {
                Some(waiting[0].participant_id)
            }
            _ => None,
        })
        .await
        .unwrap();
    th.send(&ClientMessage::Admit {
        participant_id: waiting,
    })
    .await
    .unwrap();
    client
        .wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Admitted { .. }).then_some(())
        })
        .await
        .unwrap();
    client
        .send(&ClientMessage::Signal {
            to: other_pid,
            description: None,
            candidate: Some(end_of_candidates()),
        })
        .await
        .unwrap();
    expect_error(&mut client, ErrorCode::UnknownPeer, None).await;

    // Malformed JSON, a bad shape, invalid SDP, a bad description type, a bad candidate,
    // a signal with neither part, bad stats, a client doing the therapist's job, a second
    // hello: each its error, and the connection stays up.
    for (text, code) in [
        ("{not json", ErrorCode::MalformedMessage),
        (
            r#"{"type":"signal","to":"nope"}"#,
            ErrorCode::MalformedMessage,
        ),
        (
            r#"{"type":"signal","to":"00000000-0000-0000-0000-000000000000","description":{"type":"offer","sdp":"hello"}}"#,
            ErrorCode::InvalidSdp,
        ),
        (
            r#"{"type":"signal","to":"00000000-0000-0000-0000-000000000000","description":{"type":"surprise","sdp":"v=0"}}"#,
            ErrorCode::InvalidSdp,
        ),
        (
            r#"{"type":"signal","to":"00000000-0000-0000-0000-000000000000","candidate":{"candidate":"rm -rf"}}"#,
            ErrorCode::InvalidCandidate,
        ),
        (
            r#"{"type":"signal","to":"00000000-0000-0000-0000-000000000000"}"#,
            ErrorCode::InvalidSignal,
        ),
        (
            r#"{"type":"stats","packet_loss":7}"#,
            ErrorCode::InvalidStats,
        ),
        (
            r#"{"type":"admit","participant_id":"00000000-0000-0000-0000-000000000000"}"#,
            ErrorCode::Forbidden,
        ),
        (r#"{"type":"end"}"#, ErrorCode::Forbidden),
        (
            r#"{"type":"hello","token":"again"}"#,
            ErrorCode::HelloRequired,
        ),
    ] {
        client.send_text(text).await.unwrap();
        expect_error(&mut client, code, None).await;
    }
    still_up(&mut client).await;

    // An oversized frame: closed with 1009.
    let (t3, c3, id3) = pair(&app).await;
    let (mut big, _) = hello_as(&app, &c3, id3).await;
    big.send_text(format!(
        r#"{{"type":"stats","path":"{}"}}"#,
        "x".repeat(200 * 1024)
    ))
    .await
    .unwrap();
    expect_close(&mut big, close::TOO_BIG).await;

    // A flood: error rate_limited, then closed with 4008.
    let (mut flood, _) = hello_as(&app, &t3, id3).await;
    for _ in 0..400 {
        if flood
            .send_text(r#"{"type":"stats","rtt_ms":1}"#)
            .await
            .is_err()
        {
            break;
        }
    }
    expect_error(
        &mut flood,
        ErrorCode::RateLimited,
        Some(close::RATE_LIMITED),
    )
    .await;

    // The other room kept working throughout: admission and a relayed signal.
    let waiting = other_t
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => {
                Some(waiting[0].participant_id)
            }
            _ => None,
        })
        .await
        .unwrap();
    other_t
        .send(&ClientMessage::Admit {
            participant_id: waiting,
        })
        .await
        .unwrap();
    let therapist_pid = other_c
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Admitted { peers } => Some(peers[0].participant_id),
            _ => None,
        })
        .await
        .unwrap();
    other_c
        .send(&ClientMessage::Signal {
            to: therapist_pid,
            description: None,
            candidate: Some(end_of_candidates()),
        })
        .await
        .unwrap();
    let from = other_t
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Signal { from, .. } => Some(*from),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(from, other_pid);
}

/// Wait for a close, skipping messages, and return its code.
async fn closed_with(c: &mut SignalClient) -> Option<u16> {
    loop {
        let next = c
            .recv_timeout(Duration::from_secs(5))
            .await
            .expect("a close");
        if let Incoming::Closed(code, _) = next {
            return code;
        }
    }
}

async fn lobby_first(c: &mut SignalClient) -> Uuid {
    c.wait_for(Duration::from_secs(5), |m| match m {
        ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(waiting[0].participant_id),
        _ => None,
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_or_moving_ends_the_room_and_refuses_outstanding_tokens() {
    // A 20-minute join window, so that the appointment moved 5 minutes later is still open.
    let app = signalling_app(Backend::Sqlite, |c| {
        c.join_opens_before = Duration::from_secs(20 * 60)
    })
    .await;
    let (t, c, id) = pair(&app).await;
    let (mut th, _) = hello_as(&app, &t, id).await;
    let (mut cl, _) = hello_as(&app, &c, id).await;
    let spare = join_token(&app, &c, id).await;
    // Moving it ends the room; a token issued before the move is refused.
    let start = app
        .state
        .db
        .appointment(id)
        .await
        .unwrap()
        .unwrap()
        .starts_at
        .get();
    let later = start + SignedDuration::from_mins(5);
    app.post(
        format!("/api/v1/appointments/{id}/reschedule"),
        t.token(),
        json!({"starts_at": later.to_string()}),
    )
    .await
    .expect(200);
    for s in [&mut th, &mut cl] {
        let reason = s
            .wait_for(Duration::from_secs(5), |m| match m {
                ServerMessage::Ended { reason } => Some(reason.clone()),
                _ => None,
            })
            .await
            .unwrap();
        assert_eq!(reason, "appointment_changed");
        assert_eq!(closed_with(s).await, Some(close::ENDED));
    }
    let mut s = send_hello(
        spare["signaling_url"].as_str().unwrap(),
        spare["token"].as_str().unwrap(),
        None,
        false,
    )
    .await;
    expect_error(&mut s, ErrorCode::NotJoinable, Some(close::NOT_JOINABLE)).await;

    // Cancelling ends the new room too, and its outstanding tokens stop working.
    let (mut th, _) = hello_as(&app, &t, id).await;
    let spare = join_token(&app, &c, id).await;
    app.post(
        format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        json!({}),
    )
    .await
    .expect(200);
    let reason = th
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "appointment_cancelled");
    let mut s = send_hello(
        spare["signaling_url"].as_str().unwrap(),
        spare["token"].as_str().unwrap(),
        None,
        false,
    )
    .await;
    expect_error(&mut s, ErrorCode::NotJoinable, Some(close::NOT_JOINABLE)).await;
    app.post(
        format!("/api/v1/appointments/{id}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "not_joinable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn takeover_deny_notice_auto_admit_and_end() {
    let app = signalling_app(Backend::Sqlite, |c| {
        c.signal_ping_interval = Duration::from_secs(5)
    })
    .await;
    let t = app.user_with_role("Dr Room", Role::Therapist).await;
    let a = app.client("Ari").await;
    let b = app.client("Bea").await;
    let id = live_appointment(&app, &t, &[&a, &b]).await;
    let (mut th, tw) = hello_as(&app, &t, id).await;
    let (mut ca, _) = hello_as(&app, &a, id).await;
    let a_pid = lobby_first(&mut th).await;
    // A waiting-room notice reaches the waiting client (and is stored nowhere).
    th.send(&ClientMessage::Notice {
        participant_id: None,
        text: "Running five minutes late".into(),
    })
    .await
    .unwrap();
    let text = ca
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Notice { text } => Some(text.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(text, "Running five minutes late");
    // The same client opens a second tab: it takes over, the first is told and closed.
    let (mut ca2, w2) = hello_as(&app, &a, id).await;
    assert_eq!(pid_of(&w2), a_pid, "same participant id");
    expect_error(&mut ca, ErrorCode::Replaced, Some(close::REPLACED)).await;
    // Deny: the client is told and closed.
    th.send(&ClientMessage::Deny {
        participant_id: a_pid,
    })
    .await
    .unwrap();
    ca2.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Denied).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(closed_with(&mut ca2).await, Some(close::DENIED));
    // Auto-admit switched on from the API: a waiting client is let in at once.
    let (mut cb, _) = hello_as(&app, &b, id).await;
    cb.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Waiting { .. }).then_some(())
    })
    .await
    .unwrap();
    app.put(
        format!("/api/v1/appointments/{id}/auto-admit"),
        t.token(),
        json!({"auto_admit": true}),
    )
    .await
    .expect(200);
    let peers = cb
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Admitted { peers } => Some(peers.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(peers[0].participant_id, pid_of(&tw));
    // A client cannot end the session.
    cb.send(&ClientMessage::End).await.unwrap();
    expect_error(&mut cb, ErrorCode::Forbidden, None).await;
    // Taken off the appointment, a client is taken out of its live room.
    let b_pid = th
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::PeerJoined { participant_id, .. } => Some(*participant_id),
            _ => None,
        })
        .await
        .unwrap();
    app.send(
        reqwest::Method::DELETE,
        format!("/api/v1/appointments/{id}/participants/{}", b.id),
        t.token(),
        None,
    )
    .await
    .expect(200);
    let reason = cb
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "removed");
    assert_eq!(closed_with(&mut cb).await, Some(close::ENDED));
    let left = th
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::PeerLeft {
                participant_id,
                reason,
            } if *participant_id == b_pid => Some(reason.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(left, "removed");
    // The therapist ends the session for everyone (here, for themself too).
    th.send(&ClientMessage::End).await.unwrap();
    let reason = th
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Ended { reason } => Some(reason.clone()),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(reason, "ended_by_therapist");
    assert_eq!(closed_with(&mut th).await, Some(close::ENDED));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_connection_is_found_dead_and_its_peer_told() {
    let app = signalling_app(Backend::Sqlite, |_| {}).await;
    let (t, c, id) = pair(&app).await;
    let mut th = RtcPeer::join(&app, &t, id).await;
    let (mut cl, w) = hello_as(&app, &c, id).await;
    let pid = pid_of(&w);
    th.send(&ClientMessage::Admit {
        participant_id: pid,
    })
    .await;
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await
    .unwrap();
    // The client stops reading (so it never answers pings): within three ping intervals
    // (1.5 s here, 30 s by default) the server gives up on it and tells the therapist.
    let started = std::time::Instant::now();
    th.expect("peer_reconnecting", |m| {
        matches!(m, ServerMessage::PeerReconnecting { participant_id } if *participant_id == pid)
            .then_some(())
    })
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(cl);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_credentials_are_refreshed_before_they_expire() {
    let app = signalling_app(Backend::Sqlite, |c| {
        c.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn_secret = Some("not-a-real-secret".to_owned().into());
        c.turn_ttl = Duration::from_secs(10);
        c.signal_ping_interval = Duration::from_secs(5);
    })
    .await;
    let (t, _c, id) = pair(&app).await;
    let (mut th, w) = hello_as(&app, &t, id).await;
    let ServerMessage::Welcome { ice_servers, .. } = w else {
        unreachable!()
    };
    let first = ice_servers[0].username.clone().unwrap();
    // Credentials valid for 10 s are replaced about 5 s before they expire.
    let fresh = th
        .wait_for(Duration::from_secs(9), |m| match m {
            ServerMessage::IceServers { ice_servers, .. } => Some(ice_servers.clone()),
            _ => None,
        })
        .await
        .expect("fresh ICE servers before expiry");
    let second = fresh[0].username.clone().unwrap();
    assert_ne!(first, second);
    let expiry: i64 = second.split(':').next().unwrap().parse().unwrap();
    assert!(expiry > Timestamp::now().as_second() + 5);
    assert_eq!(
        fresh[0].credential.clone().unwrap(),
        alcove::signal::turn_credential("not-a-real-secret", &second)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_origins_may_open_the_socket_and_relay_only_is_per_account() {
    let app = signalling_app(Backend::Sqlite, |_| {}).await;
    let url = ws_url(&app);
    let err = SignalClient::connect(&url, Some("https://evil.example"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("403"), "{err}");
    SignalClient::connect(&url, Some(&app.base))
        .await
        .expect("own origin is allowed");
    // Plain HTTP to the socket: a problem body.
    app.get("/api/v1/signal", None).await.assert_problem();

    // Relay-only for one account needs a TURN server.
    let c = app.client("Pri").await;
    app.put("/api/v1/me/privacy", c.token(), json!({"relay_only": true}))
        .await
        .expect_problem(409, "relay_unavailable");
    let app = signalling_app(Backend::Sqlite, |c| {
        c.turn_urls = vec!["turn:127.0.0.1:3478?transport=udp".into()];
        c.turn_secret = Some("s3cret-for-tests".to_owned().into());
    })
    .await;
    let (t, c, id) = pair(&app).await;
    app.put("/api/v1/me/privacy", c.token(), json!({"relay_only": true}))
        .await
        .expect(200);
    assert_eq!(
        join_token(&app, &c, id).await["ice_transport_policy"],
        "relay"
    );
    assert_eq!(
        join_token(&app, &t, id).await["ice_transport_policy"],
        "all"
    );
}

#[test]
fn the_protocol_document_names_every_message_error_and_close_code() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/signaling.md"))
        .expect("docs/signaling.md exists");
    let client_types = [
        "hello", "admit", "deny", "notice", "signal", "stats", "leave", "end",
    ];
    let server_types = [
        "welcome",
        "waiting",
        "lobby",
        "admitted",
        "denied",
        "notice",
        "peer_joined",
        "peer_left",
        "peer_reconnecting",
        "peer_resumed",
        "signal",
        "ice_servers",
        "ended",
        "reconnect",
        "error",
    ];
    for t in client_types.iter().chain(server_types.iter()) {
        assert!(
            doc.contains(&format!("`{t}`")),
            "docs/signaling.md does not describe `{t}`"
        );
    }
    for code in ErrorCode::ALL {
        assert!(
            doc.contains(&format!("`{}`", code.as_str())),
            "error code {} undocumented",
            code.as_str()
        );
    }
    for (code, _) in close::ALL {
        assert!(
            doc.contains(&format!("| {code} |")),
            "close code {code} undocumented"
        );
    }
    // Every server message type the code can produce is in the list above.
    let sample = serde_json::to_value(ServerMessage::Denied).unwrap();
    assert_eq!(sample["type"], "denied");
}

async fn a_relay_only_account_is_refused_rather_than_connected_directly_when_there_is_no_relay(
    backend: Backend,
) {
    // No TURN on this deployment (say the operator removed it after the client chose
    // relay-only while it existed).
    let app = signalling_app(backend, |_| {}).await;
    let (t, c, id) = pair(&app).await;
    let earlier = join_token(&app, &c, id).await;
    assert_eq!(earlier["ice_transport_policy"], "all");
    app.store()
        .set_relay_only(
            c.id,
            true,
            &alcove::store::Actor {
                id: c.id,
                role: Role::Client,
            },
        )
        .await
        .unwrap();

    // The settings say what will happen: no direct call behind the person's back.
    let p = app.get("/api/v1/me/privacy", c.token()).await.expect(200);
    assert_eq!(
        p,
        json!({"relay_only": true, "enforced": false, "relay_available": false, "effective": "refused"})
    );
    let tp = app.get("/api/v1/me/privacy", t.token()).await.expect(200);
    assert_eq!(tp["effective"], "direct");

    // No join token, and a token got before the change is refused at hello.
    let r = app
        .post(
            format!("/api/v1/appointments/{id}/join"),
            c.token(),
            json!({}),
        )
        .await
        .expect_problem(409, "relay_unavailable");
    assert!(r["detail"].as_str().unwrap().contains("relay-only"), "{r}");
    let mut s = send_hello(
        &ws_url(&app),
        earlier["token"].as_str().unwrap(),
        None,
        false,
    )
    .await;
    let why = s
        .wait_for(Duration::from_secs(5), |m| match m {
            ServerMessage::Error { code, message } => Some((*code, message.clone())),
            ServerMessage::Welcome { .. } => Some((ErrorCode::Internal, "welcomed".into())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(why.0, ErrorCode::NotJoinable, "{}", why.1);
    assert!(why.1.contains("relay-only"), "{}", why.1);
    expect_close(&mut s, close::NOT_JOINABLE).await;

    // Switching relay-only on is refused here; switching it off is the person's choice, and
    // then they join directly, knowing it.
    app.put(
        "/api/v1/me/privacy",
        c.token(),
        json!({"relay_only": false}),
    )
    .await
    .expect(200);
    let p = app.get("/api/v1/me/privacy", c.token()).await.expect(200);
    assert_eq!(p["effective"], "direct");
    app.put("/api/v1/me/privacy", c.token(), json!({"relay_only": true}))
        .await
        .expect_problem(409, "relay_unavailable");
    let j = join_token(&app, &c, id).await;
    assert_eq!(j["ice_transport_policy"], "all");
}

async fn a_turned_away_client_cannot_knock_again_until_the_therapist_lets_them(backend: Backend) {
    let app = signalling_app(backend, |c| c.signal_ping_interval = Duration::from_secs(5)).await;
    let (t, c, id) = pair(&app).await;
    // A second join token, asked for before the denial.
    let spare = join_token(&app, &c, id).await;
    let (mut th, _) = hello_as(&app, &t, id).await;
    let (mut cl, _) = hello_as(&app, &c, id).await;
    let pid = lobby_first(&mut th).await;
    th.send(&ClientMessage::Deny {
        participant_id: pid,
    })
    .await
    .unwrap();
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Denied).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(closed_with(&mut cl).await, Some(close::DENIED));

    // Knocking again at once: no join token, and the one got earlier is refused at hello.
    app.post(
        format!("/api/v1/appointments/{id}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "denied");
    let mut again = send_hello(&ws_url(&app), spare["token"].as_str().unwrap(), None, false).await;
    expect_error(&mut again, ErrorCode::Denied, Some(close::DENIED)).await;
    // The therapist's lobby stayed quiet, and the appointment says who was turned away.
    let a = app
        .get(format!("/api/v1/appointments/{id}"), t.token())
        .await
        .expect(200);
    assert_eq!(a["clients"][0]["turned_away"], true);
    // That is the therapist's to know, not the clients'.
    let seen_by_client = app
        .get(format!("/api/v1/appointments/{id}"), c.token())
        .await
        .expect(200);
    assert_eq!(seen_by_client["clients"][0]["turned_away"], false);

    // Only the therapist lifts it.
    let lift = format!("/api/v1/appointments/{id}/denials/{}", c.id);
    app.send(reqwest::Method::DELETE, &lift, c.token(), None)
        .await
        .expect_problem(403, "forbidden");
    app.send(reqwest::Method::DELETE, &lift, t.token(), None)
        .await
        .expect(204);
    app.send(reqwest::Method::DELETE, &lift, t.token(), None)
        .await
        .expect_problem(404, "not_found");
    let a = app
        .get(format!("/api/v1/appointments/{id}"), t.token())
        .await
        .expect(200);
    assert_eq!(a["clients"][0]["turned_away"], false);
    let h = app
        .get(format!("/api/v1/appointments/{id}/history"), t.token())
        .await
        .expect(200);
    assert!(
        h.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "denial_lifted"),
        "{h}"
    );

    // Now they knock again, and wait as before.
    let (mut cl, _) = hello_as(&app, &c, id).await;
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Waiting { position: 1 }).then_some(())
    })
    .await
    .unwrap();
    // The therapist sees them waiting again (a new participant: the denial ended the old one).
    assert_ne!(lobby_first(&mut th).await, pid);
}

/// A valid SDP of about `kib` KiB (padded with attributes a browser would ignore).
fn big_sdp(kib: usize) -> String {
    let mut sdp =
        String::from("v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n");
    for _ in 0..kib {
        sdp.push_str("a=x-pad:");
        sdp.push_str(&"x".repeat(1014));
        sdp.push_str("\r\n");
    }
    sdp
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_is_charged_to_its_sender_not_to_the_peer_it_is_aimed_at() {
    let app = signalling_app(Backend::Sqlite, |c| {
        c.signal_ping_interval = Duration::from_secs(5)
    })
    .await;
    let t = app.user_with_role("Dr Flood", Role::Therapist).await;
    let a = app.client("Flooder").await;
    let b = app.client("Bystander").await;
    let id = live_appointment(&app, &t, &[&a, &b]).await;
    app.put(
        format!("/api/v1/appointments/{id}/auto-admit"),
        t.token(),
        json!({"auto_admit": true}),
    )
    .await
    .expect(200);
    // The therapist is on a small socket buffer and reads at an ordinary pace.
    let tj = join_token(&app, &t, id).await;
    let mut th = SignalClient::connect_with_receive_buffer(&ws_url(&app), 16 * 1024)
        .await
        .unwrap();
    th.send(&ClientMessage::Hello {
        token: tj["token"].as_str().unwrap().to_owned(),
        resume_token: None,
        reset: false,
    })
    .await
    .unwrap();
    let t_pid = pid_of(
        &th.wait_for(Duration::from_secs(5), |m| {
            matches!(m, ServerMessage::Welcome { .. }).then(|| m.clone())
        })
        .await
        .unwrap(),
    );
    let (mut flooder, _) = hello_as(&app, &a, id).await;
    let (mut bystander, bw) = hello_as(&app, &b, id).await;
    let b_pid = pid_of(&bw);
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        loop {
            match th.recv_timeout(Duration::from_secs(8)).await {
                Ok(Incoming::Message(m)) => {
                    let done = matches!(&m, ServerMessage::Signal { from, candidate: Some(_), .. } if *from == b_pid);
                    seen.push(m);
                    if done {
                        return (seen, None);
                    }
                }
                Ok(Incoming::Closed(code, _)) => return (seen, Some(code)),
                Ok(Incoming::Other(_)) => {}
                Err(e) => panic!("the therapist's connection: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });

    // 200 valid 45 KiB descriptions (9 MB), as fast as the socket takes them.
    let offer = ClientMessage::Signal {
        to: t_pid,
        description: Some(alcove_signaling::protocol::Description {
            kind: "offer".into(),
            sdp: big_sdp(45),
        }),
        candidate: None,
    };
    for _ in 0..200 {
        if flooder.send(&offer).await.is_err() {
            break;
        }
    }
    // The bystander and the therapist carry on.
    bystander
        .send(&ClientMessage::Signal {
            to: t_pid,
            description: None,
            candidate: Some(end_of_candidates()),
        })
        .await
        .unwrap();
    let (seen, closed) = reader.await.unwrap();
    assert_eq!(closed, None, "the therapist was not closed");
    let floods = seen
        .iter()
        .filter(|m| {
            matches!(
                m,
                ServerMessage::Signal {
                    description: Some(_),
                    ..
                }
            )
        })
        .count();
    assert!(floods < 20, "{floods} of the flood reached the therapist");
    still_up(&mut bystander).await;
    // The sender pays: told, and closed.
    expect_error(
        &mut flooder,
        ErrorCode::RateLimited,
        Some(close::RATE_LIMITED),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_pings_is_closed_like_any_other_flood() {
    let app = signalling_app(Backend::Sqlite, |c| {
        c.signal_ping_interval = Duration::from_secs(5)
    })
    .await;
    let (t, _c, id) = pair(&app).await;
    let (mut th, _) = hello_as(&app, &t, id).await;
    for _ in 0..400 {
        if th
            .send_raw(tokio_tungstenite::tungstenite::Message::Ping(
                vec![1; 16].into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    expect_error(&mut th, ErrorCode::RateLimited, Some(close::RATE_LIMITED)).await;
}

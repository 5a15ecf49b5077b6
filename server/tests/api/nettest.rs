//! The network test (order 10) driven by a webrtc-rs peer that behaves as the web client
//! does (docs/network-test.md): ready directly, relay_only through a real coturn, blocked
//! with the relay gone; the cap on tests at once and the hourly limit per account.

use crate::helpers::{Api, Backend, Session, TestApp, spawn_app_with};
use crate::signaling::pair;
use crate::turn::Coturn;
use alcove::{config::Config, domain::Role};
use bytes::BytesMut;
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use tokio_tungstenite::tungstenite::Message;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit},
    peer_connection::{
        PeerConnection, RTCIceCandidateInit, RTCIceCandidateType, RTCPeerConnectionState,
        RTCSessionDescription, RTCStatsReportEntry, StatsSelector,
    },
};

/// Test settings: the test peer on loopback.
pub fn on_loopback(c: &mut Config) {
    c.network_test_udp = "127.0.0.1:0".parse().unwrap();
}

/// What a network test showed the browser side.
pub struct Ran {
    pub result: Value,
    /// Every candidate line exchanged, both ways (for the privacy checks).
    pub candidates: Vec<String>,
    /// The test token.
    pub token: String,
}

/// `echo`: send back what arrives. `bulk`: upload what the server asks, then `done`.
fn serve_channels(echo: Arc<dyn DataChannel>, bulk: Arc<dyn DataChannel>) {
    tokio::spawn(async move {
        while let Some(ev) = echo.poll().await {
            match ev {
                DataChannelEvent::OnMessage(m) => {
                    let _ = echo.send(BytesMut::from(&m.data[..])).await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
    tokio::spawn(async move {
        while let Some(ev) = bulk.poll().await {
            match ev {
                DataChannelEvent::OnMessage(m) if m.is_string => {
                    let ask: Value = serde_json::from_slice(&m.data).unwrap();
                    let bytes = ask["send"].as_u64().unwrap() as usize;
                    let until = std::time::Instant::now()
                        + Duration::from_millis(ask["ms"].as_u64().unwrap());
                    let chunk = vec![7u8; 16 * 1024];
                    let mut sent = 0;
                    while sent < bytes && std::time::Instant::now() < until {
                        if bulk.send(BytesMut::from(&chunk[..])).await.is_err() {
                            return;
                        }
                        sent += chunk.len();
                    }
                    let _ = bulk.send_text("done").await;
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

/// Ask for a test (`relay_only` when asked); the API's answer.
pub async fn start(app: &impl Api, who: &Session, relay_only: bool) -> Value {
    app.post(
        "/api/v1/network-tests",
        who.token(),
        json!({"relay_only": relay_only}),
    )
    .await
    .expect(201)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open the test socket and say hello; the socket and the first answer.
pub async fn hello(started: &Value) -> (Ws, Value) {
    let url = started["socket_url"].as_str().unwrap();
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(
        json!({"type": "hello", "token": started["token"]}).to_string(),
    ))
    .await
    .unwrap();
    let first = next(&mut ws).await.expect("an answer to hello");
    (ws, first)
}

async fn next(ws: &mut Ws) -> Option<Value> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(Message::Close(_)))) | Ok(None) | Ok(Some(Err(_))) => return None,
            Ok(Some(Ok(_))) => {}
            Err(_) => panic!("the network test said nothing for 30 s"),
        }
    }
}

/// Run a whole network test as the web client does; the server's `result`.
pub async fn run(app: &impl Api, who: &Session, relay_only: bool) -> Ran {
    let started = start(app, who, relay_only).await;
    let (mut ws, ready) = hello(&started).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let servers: Vec<alcove_signaling::IceServer> =
        serde_json::from_value(started["ice_servers"].clone()).unwrap();
    let relay = started["ice_transport_policy"] == "relay";
    let (pc, events) =
        alcove::nettest::peer_connection(&servers, relay, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
    let (mut cand_rx, mut state_rx) = (events.candidates, events.states);
    let echo = pc
        .create_data_channel(
            "echo",
            Some(RTCDataChannelInit {
                ordered: false,
                max_retransmits: Some(0),
                ..Default::default()
            }),
        )
        .await
        .unwrap();
    let bulk = pc.create_data_channel("bulk", None).await.unwrap();
    serve_channels(echo, bulk);
    let offer = pc.create_offer(None).await.unwrap();
    pc.set_local_description(offer.clone()).await.unwrap();
    ws.send(Message::text(
        json!({"type": "signal", "description": {"type": "offer", "sdp": offer.sdp}}).to_string(),
    ))
    .await
    .unwrap();
    let mut candidates = Vec::new();
    let mut reported = false;
    let result = loop {
        tokio::select! {
            m = next(&mut ws) => {
                let Some(m) = m else { panic!("the test socket closed before a result") };
                match m["type"].as_str().unwrap() {
                    "signal" => {
                        if let Some(d) = m["description"].as_object() {
                            pc.set_remote_description(
                                RTCSessionDescription::answer(d["sdp"].as_str().unwrap().to_owned()).unwrap(),
                            )
                            .await
                            .unwrap();
                        }
                        if let Some(c) = m["candidate"]["candidate"].as_str().filter(|c| !c.is_empty()) {
                            candidates.push(c.to_owned());
                            let _ = pc
                                .add_ice_candidate(RTCIceCandidateInit {
                                    candidate: c.to_owned(),
                                    sdp_mid: m["candidate"]["sdpMid"].as_str().map(str::to_owned),
                                    sdp_mline_index: m["candidate"]["sdpMLineIndex"].as_u64().map(|i| i as u16),
                                    ..Default::default()
                                })
                                .await;
                        }
                    }
                    "result" => break m,
                    "step" | "ready" => {}
                    other => panic!("unexpected {other}: {m}"),
                }
            },
            c = cand_rx.recv() => if let Some(c) = c {
                candidates.push(c.candidate.clone());
                ws.send(Message::text(json!({"type": "signal", "candidate": {
                    "candidate": c.candidate, "sdpMid": c.sdp_mid, "sdpMLineIndex": c.sdp_mline_index,
                }}).to_string())).await.unwrap();
            },
            s = state_rx.recv() => if s == Some(RTCPeerConnectionState::Connected) && !reported {
                reported = true;
                // As the web client does: the TURN transport of a relayed local candidate.
                if let Some(p) = local_relay_protocol(&pc).await {
                    ws.send(Message::text(json!({"type": "report", "relay_protocol": p}).to_string()))
                        .await
                        .unwrap();
                }
            },
        }
    };
    let _ = pc.close().await;
    Ran {
        result,
        candidates,
        token: started["token"].as_str().unwrap().to_owned(),
    }
}

/// The TURN transport of the relayed local candidate of the selected pair, as a browser
/// reads `relayProtocol` from its stats; webrtc-rs relays over UDP (`turn:` URLs).
async fn local_relay_protocol(pc: &Arc<dyn PeerConnection>) -> Option<&'static str> {
    let report = pc
        .get_stats(std::time::Instant::now(), StatsSelector::None)
        .await;
    let relayed = report.iter().any(|e| {
        matches!(e, RTCStatsReportEntry::LocalCandidate(c) if c.candidate_type == RTCIceCandidateType::Relay)
    }) && !report.iter().any(|e| {
        matches!(e, RTCStatsReportEntry::LocalCandidate(c) if c.candidate_type != RTCIceCandidateType::Relay)
    });
    relayed.then_some("udp")
}

/// Network tests kept in the app's database.
async fn kept_tests(app: &TestApp) -> i64 {
    match &app.state.db {
        alcove::store::Db::Sqlite(p) => sqlx::query_scalar("SELECT COUNT(*) FROM network_tests")
            .fetch_one(p)
            .await
            .unwrap(),
        alcove::store::Db::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM network_tests")
            .fetch_one(p)
            .await
            .unwrap(),
    }
}

async fn app_with_turn(turn: &Coturn, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let (url, secret) = (turn.url(), turn.secret.clone());
    spawn_app_with(Backend::Sqlite, move |c| {
        on_loopback(c);
        c.turn_urls = vec![url];
        c.turn_secret = Some(secret.into());
        tweak(c);
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webrtc_peer_is_ready_directly_relay_only_through_turn_and_blocked_without_it() {
    let turn = Coturn::start();
    let app = app_with_turn(&turn, |_| {}).await;
    let (_t, c, _) = pair(&app).await;

    let direct = run(&app, &c, false).await.result;
    eprintln!("direct: {direct}");
    assert_eq!(direct["verdict"], "ready", "{direct}");
    assert_eq!(direct["path"], "direct", "{direct}");
    assert!(direct.get("reason").is_none(), "{direct}");
    assert!(direct["connect_ms"].as_i64().unwrap() >= 0, "{direct}");
    assert!(direct["rtt_ms"].as_f64().unwrap() < 200.0, "{direct}");
    assert_eq!(direct["packet_loss"], 0.0, "{direct}");
    assert!(direct["upload_kbps"].as_f64().unwrap() > 0.0, "{direct}");
    assert!(
        direct["advice"].as_str().unwrap().contains("ready"),
        "{direct}"
    );

    let relayed = run(&app, &c, true).await.result;
    eprintln!("relayed: {relayed}");
    assert_eq!(relayed["verdict"], "relay_only", "{relayed}");
    assert_eq!(relayed["path"], "relay_udp", "{relayed}");
    assert_eq!(relayed["relay_forced"], true, "{relayed}");
    assert!(relayed["rtt_ms"].as_f64().is_some(), "{relayed}");

    // The relay stops: forced through it, nothing works, and the reason says why.
    drop(turn);
    let blocked = run(&app, &c, true).await.result;
    assert_eq!(blocked["verdict"], "blocked", "{blocked}");
    assert_eq!(blocked["reason"], "no_relay", "{blocked}");
    assert!(blocked.get("path").is_none(), "{blocked}");
    let advice = blocked["advice"].as_str().unwrap();
    assert!(
        advice.contains("could not reach our relay server"),
        "{advice}"
    );

    // The latest result is the person's to read, and kept as a record of three tests.
    let latest = app
        .get("/api/v1/network-tests/latest", c.token())
        .await
        .expect(200);
    assert_eq!(latest["verdict"], "blocked", "{latest}");
    assert_eq!(latest["advice"], blocked["advice"], "{latest}");
    let kept = kept_tests(&app).await;
    assert_eq!(kept, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tests_at_once_are_capped_and_each_account_is_limited_per_hour() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        on_loopback(c);
        c.network_test_max = 1;
        c.network_test_per_hour = 3;
    })
    .await;
    let (t, c, _) = pair(&app).await;

    // One test holds the only place (it said hello and is connecting).
    let first = start(&app, &c, false).await;
    let spare = start(&app, &t, false).await;
    let (_held, ready) = hello(&first).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    let r = app
        .post("/api/v1/network-tests", t.token(), json!({}))
        .await;
    let busy = r.expect_problem(503, "network_tests_busy");
    assert!(
        busy["detail"].as_str().unwrap().contains("try again"),
        "{busy}"
    );
    assert_eq!(r.headers["retry-after"], "30");
    // A token got before the place was taken: the socket says so, then closes.
    let (mut ws, refused) = hello(&spare).await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "busy", "{refused}");
    assert!(next(&mut ws).await.is_none(), "closed after the error");
    drop(_held);

    // The hourly limit: the client has used one; two more, then a clear refusal.
    let mut freed = false;
    for _ in 0..50 {
        if app.state.network_tests.available_permits() == 1 {
            freed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(freed, "the place is given back when the browser leaves");
    start(&app, &c, false).await;
    start(&app, &c, false).await;
    let r = app
        .post("/api/v1/network-tests", c.token(), json!({}))
        .await;
    let limited = r.expect_problem(429, "network_test_limit");
    assert!(
        limited["detail"]
            .as_str()
            .unwrap()
            .contains("3 network tests an hour"),
        "{limited}"
    );
    assert!(r.headers.contains_key("retry-after"));
    // Someone else is not limited by it.
    start(&app, &t, false).await;

    // Bad input: a second use of a token, and a message that is not one of the test's.
    let again = start(&app, &t, false).await;
    let (mut ws, ready) = hello(&again).await;
    assert_eq!(ready["type"], "ready");
    ws.send(Message::text(r#"{"type":"dance"}"#)).await.unwrap();
    // The test goes on (its `step` messages come meanwhile); the error answers the message.
    let bad = loop {
        let m = next(&mut ws).await.unwrap();
        if m["type"] != "step" {
            break m;
        }
    };
    assert_eq!(bad["type"], "error", "{bad}");
    assert_eq!(bad["code"], "bad_message", "{bad}");
    // An offer that cannot be used: said, the socket closed, nothing kept as a verdict.
    ws.send(Message::text(
        json!({"type": "signal", "description": {"type": "offer", "sdp": "not an offer"}})
            .to_string(),
    ))
    .await
    .unwrap();
    let refused = loop {
        let m = next(&mut ws).await.expect("an answer before the close");
        if m["type"] != "step" {
            break m;
        }
    };
    assert_eq!(refused["code"], "bad_message", "{refused}");
    assert!(
        refused["message"].as_str().unwrap().contains("offer"),
        "{refused}"
    );
    assert!(next(&mut ws).await.is_none(), "closed after the refusal");
    let kept = kept_tests(&app).await;
    assert_eq!(kept, 0, "abandoned and refused tests leave no verdict");
    drop(ws);
    let (_, reused) = hello(&again).await;
    assert_eq!(reused["code"], "invalid_token", "{reused}");
    assert!(
        reused["message"].as_str().unwrap().contains("already used"),
        "{reused}"
    );
}

crate::on_both_backends!(the_therapist_sees_a_waiting_clients_latest_verdict_in_the_lobby);

async fn the_therapist_sees_a_waiting_clients_latest_verdict_in_the_lobby(backend: Backend) {
    use crate::peers::RtcPeer;
    use alcove_signaling::ServerMessage;
    let app = spawn_app_with(backend, on_loopback).await;
    let (t, c, id) = pair(&app).await;
    let ran = run(&app, &c, false).await.result;
    assert_eq!(ran["verdict"], "ready", "{ran}");
    // Kept and read back on this database, every figure as measured.
    let latest = app
        .get("/api/v1/network-tests/latest", c.token())
        .await
        .expect(200);
    for k in [
        "verdict",
        "path",
        "connect_ms",
        "rtt_ms",
        "packet_loss",
        "upload_kbps",
        "advice",
    ] {
        assert_eq!(latest[k], ran[k], "{k}: {latest} vs {ran}");
    }
    app.get("/api/v1/network-tests/latest", t.token())
        .await
        .expect_problem(404, "not_found");
    let mut th = RtcPeer::join(&app, &t, id).await;
    let _cl = RtcPeer::join(&app, &c, id).await;
    let waiting = th
        .expect("lobby", |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(waiting.clone()),
            _ => None,
        })
        .await;
    let shown = serde_json::to_value(&waiting[0]).unwrap();
    let network = &shown["network"];
    assert_eq!(network["verdict"], "ready", "{shown}");
    assert_eq!(network["path"], "direct", "{shown}");
    assert_eq!(network["rtt_ms"], ran["rtt_ms"], "{shown}");
    assert_eq!(network["upload_kbps"], ran["upload_kbps"], "{shown}");
    assert!(network["at"].as_i64().unwrap() > 0, "{shown}");
    // Figures only: nothing else of the test.
    let keys: Vec<&String> = network.as_object().unwrap().keys().collect();
    assert!(
        keys.iter().all(|k| [
            "verdict",
            "reason",
            "path",
            "rtt_ms",
            "packet_loss",
            "upload_kbps",
            "at"
        ]
        .contains(&k.as_str())),
        "{keys:?}"
    );
}

/// Run `alcove probe` against `app` as the probe accounts `t` and `c`: its status and
/// output (standard output and error together).
async fn probe(app: &TestApp, t: &Session, c: &Session, extra: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_alcove"))
        .arg("probe")
        .arg(&app.base)
        .args(["--bind", "127.0.0.1:0", "--step-timeout", "15s"])
        .args(extra)
        .env_clear()
        .env("ALCOVE_PROBE_THERAPIST_EMAIL", &t.email)
        .env("ALCOVE_PROBE_THERAPIST_PASSWORD", crate::helpers::PASSWORD)
        .env("ALCOVE_PROBE_CLIENT_EMAIL", &c.email)
        .env("ALCOVE_PROBE_CLIENT_PASSWORD", crate::helpers::PASSWORD)
        .output()
        .await
        .expect("alcove probe runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alcove_probe_passes_through_a_running_server_and_names_a_wrong_turn_secret() {
    let turn = Coturn::start();
    // The accounts are made after the server starts: the server is told their emails.
    let (te, ce) = ("probe-therapist@example.org", "probe-client@example.org");
    let app = app_with_turn(&turn, move |c| {
        c.probe_accounts = vec![te.to_owned(), ce.to_owned()];
    })
    .await;
    let t = app
        .user_with_email("Probe Therapist", te, Role::Therapist)
        .await;
    let c = app.user_with_email("Probe Client", ce, Role::Client).await;

    let (ok, out) = probe(&app, &t, &c, &[]).await;
    assert!(ok, "{out}");
    for step in [
        "ready",
        "sign in (therapist)",
        "probe appointment",
        "turn allocation",
        "admit",
        "peer connection and data",
        "cancel the appointment",
    ] {
        assert!(
            out.lines().any(|l| l.starts_with("ok") && l.contains(step)),
            "{step}: {out}"
        );
    }
    assert!(out.contains("probe passed in"), "{out}");
    // Again, through the relay only; the last run's appointment was cancelled.
    let (ok, out) = probe(&app, &t, &c, &["--relay-only"]).await;
    assert!(ok, "{out}");
    assert!(out.contains("(relay only)"), "{out}");

    // Only the probe's therapist may open probe appointments.
    let other = app.user_with_role("Dr Other", Role::Therapist).await;
    app.post("/api/v1/probe/appointments", other.token(), json!({}))
        .await
        .expect_problem(403, "forbidden");

    // The same deployment with a TURN secret that is not coturn's.
    let (url, wrong) = (turn.url(), "not-the-turn-secret".to_owned());
    let broken = spawn_app_with(Backend::Sqlite, move |cfg| {
        on_loopback(cfg);
        cfg.turn_urls = vec![url];
        cfg.turn_secret = Some(wrong.into());
        cfg.probe_accounts = vec![te.to_owned(), ce.to_owned()];
    })
    .await;
    let t = broken
        .user_with_email("Probe Therapist", te, Role::Therapist)
        .await;
    let c = broken
        .user_with_email("Probe Client", ce, Role::Client)
        .await;
    let (ok, out) = probe(&broken, &t, &c, &["--relay-only"]).await;
    assert!(!ok, "the probe fails: {out}");
    assert!(
        out.contains("FAILED turn allocation")
            && out.contains("refused the credentials")
            && out.contains("ALCOVE_TURN_SECRET"),
        "{out}"
    );
}

//! The drain: SIGTERM during a live session tells everyone to reconnect, hands the room
//! over instead of ending it, and a restart on the same data resumes the same session.

use crate::{
    helpers::{Api, Backend},
    peers::{Obs, RtcPeer},
    process::ServerProcess,
    signaling::live_appointment,
};
use alcove::domain::Role;
use alcove_signaling::{ServerMessage, client::Incoming, close};
use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

crate::on_both_backends!(sigterm_drains_a_live_session_and_a_restart_resumes_it);

fn connected(o: &Obs) -> bool {
    *o == Obs::State(webrtc::peer_connection::RTCPeerConnectionState::Connected)
}

/// Wait for `reconnect`, then the close with 1012.
async fn told_to_reconnect(who: &str, p: &mut RtcPeer) {
    let mut told = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), p.inbox.recv()).await {
            Ok(Some(Incoming::Message(ServerMessage::Reconnect { reason }))) => {
                assert_eq!(reason, "server_restart");
                told = true;
            }
            Ok(Some(Incoming::Closed(code, _))) => {
                assert!(told, "{who}: closed before `reconnect`");
                assert_eq!(code, Some(close::SERVICE_RESTART), "{who}");
                return;
            }
            Ok(Some(Incoming::Message(ServerMessage::Ended { reason }))) => {
                panic!("{who}: the session was ended ({reason}) instead of drained")
            }
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("{who}: no reconnect and close in time"),
        }
    }
}

async fn sigterm_drains_a_live_session_and_a_restart_resumes_it(backend: Backend) {
    let mut srv = ServerProcess::start(backend, &[]).await;
    let t = srv.user_with_role("Dr Drain", Role::Therapist).await;
    let c = srv.client("Client Drain").await;
    let id = live_appointment(&srv, &t, &[&c]).await;
    let mut th = RtcPeer::join(&srv, &t, id).await;
    let mut cl = RtcPeer::join(&srv, &c, id).await;
    th.expect("the client in the lobby", |m| match m {
        ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(()),
        _ => None,
    })
    .await;
    th.send(&alcove_signaling::ClientMessage::Admit {
        participant_id: cl.pid,
    })
    .await;
    cl.expect("admitted", |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await;
    cl.call(th.pid);
    cl.observe("client connected", connected).await;
    th.observe("therapist connected", connected).await;
    cl.observe("data channel", |o| *o == Obs::DcOpen).await;
    let (t_pid, c_pid) = (th.pid, cl.pid);

    // /readyz, polled throughout the stop.
    let seen = Arc::new(Mutex::new(Vec::<(u16, String)>::new()));
    let poll = {
        let (base, seen) = (srv.base.clone(), seen.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            loop {
                match http.get(format!("{base}/readyz")).send().await {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.text().await.unwrap_or_default();
                        seen.lock().unwrap().push((status, body));
                    }
                    Err(_) => return,
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;

    // SIGTERM: everyone is told to reconnect, and the process exits 0 in time.
    srv.sigterm();
    told_to_reconnect("therapist", &mut th).await;
    told_to_reconnect("client", &mut cl).await;
    let status = srv.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "exit status {status}");
    poll.await.unwrap();
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().any(|(s, _)| *s == 200),
        "ready before the stop: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(s, b)| *s == 503 && b.contains("draining")),
        "/readyz said 503 draining during the drain: {seen:?}"
    );
    let logs = srv.log_text();
    assert!(logs.contains("session rooms handed over"), "{logs}");

    // The room was kept for the next start, without anything relayed in it.
    let kept = srv.kept_rooms().await;
    assert_eq!(kept.len(), 1, "{kept:?}");
    for secret in th.secrets.iter().chain(cl.secrets.iter()) {
        assert!(!kept[0].contains(secret.as_str()), "a token was kept");
    }
    for content in ["v=0", "candidate", "a=fingerprint", "127.0.0.1"] {
        assert!(!kept[0].contains(content), "{content} kept: {}", kept[0]);
    }
    // The session is still open: not ended, not lost.
    let open: Vec<(uuid::Uuid,)> = match &srv.db {
        alcove::store::Db::Sqlite(p) => {
            sqlx::query_as("SELECT id FROM video_sessions WHERE ended_at IS NULL")
                .fetch_all(p)
                .await
                .unwrap()
        }
        alcove::store::Db::Postgres(p) => {
            sqlx::query_as("SELECT id FROM video_sessions WHERE ended_at IS NULL")
                .fetch_all(p)
                .await
                .unwrap()
        }
    };
    assert_eq!(open.len(), 1, "the session is still open after the stop");

    // Started again on the same data: both resume the same session, and the call goes on.
    srv.restart();
    let tw = th.resume(&srv, &t, id).await;
    let cw = cl.resume(&srv, &c, id).await;
    assert_eq!(tw["resumed"], true, "{tw}");
    assert_eq!(tw["participant_id"], t_pid.to_string());
    assert_eq!(cw["resumed"], true, "{cw}");
    assert_eq!(cw["participant_id"], c_pid.to_string());
    assert_eq!(
        cw["peers"][0]["participant_id"],
        t_pid.to_string(),
        "still admitted"
    );
    th.expect("peer_resumed", |m| match m {
        ServerMessage::PeerResumed { participant_id, .. } if *participant_id == c_pid => Some(()),
        _ => None,
    })
    .await;
    crate::peers::renegotiate(&th, &cl, || srv.log_text()).await;
    th.chat("still here after the restart");
    cl.observe("chat after the restart", |o| {
        *o == Obs::DcMessage("still here after the restart".into())
    })
    .await;
    assert!(srv.kept_rooms().await.is_empty(), "taken at the start");

    // One session record, open, with a reconnect for each participant.
    let sessions = srv
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    let sessions = sessions.as_array().unwrap();
    assert_eq!(sessions.len(), 1, "one session, not two: {sessions:?}");
    let s = &sessions[0];
    assert!(s["ended_at"].is_null(), "still open: {s}");
    for p in s["participants"].as_array().unwrap() {
        assert!(p["reconnects"].as_i64().unwrap() >= 1, "{p}");
        assert!(p["left_reason"].is_null(), "{p}");
    }
    let logs = srv.log_text();
    assert!(
        !logs.contains("closed sessions left open by a crash"),
        "nothing recorded as lost"
    );
    assert!(logs.contains("carried on after a restart"), "{logs}");
}

//! Session records: the real timeline, no content anywhere, crash safety, the audit trail,
//! retention, webhooks, and who may read what.

use crate::helpers::{Api, Backend, PASSWORD, Session, TestApp, spawn_app_with};
use crate::on_both_backends;
use crate::peers::{Obs, RtcPeer};
use crate::process::ServerProcess;
use crate::signaling::live_appointment;
use alcove::{domain::Role, store::Db};
use alcove_signaling::{ClientMessage, ServerMessage, Stats, client::SignalClient};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;
use webrtc::peer_connection::RTCPeerConnectionState;

on_both_backends!(
    an_automatically_admitted_client_is_recorded_as_admitted,
    a_full_session_is_recorded_truly_and_keeps_no_content,
    a_crash_mid_session_loses_no_join_or_admission,
    an_edited_audit_row_is_found_by_audit_verify,
    retention_purges_old_records_and_the_chain_still_verifies,
    records_and_the_audit_trail_are_shown_only_to_whom_they_concern,
    webhooks_are_signed_and_retried_until_delivered,
);

const CHAT: &str = "what I only ever told my therapist, 4417";

fn ts(v: &Value) -> Timestamp {
    v.as_str()
        .unwrap_or_else(|| panic!("not a time: {v}"))
        .parse()
        .unwrap()
}

#[track_caller]
fn near(v: &Value, t: Timestamp, what: &str) {
    let got = ts(v);
    let off = got.duration_since(t).abs();
    assert!(
        off <= SignedDuration::from_secs(1),
        "{what}: recorded {got}, happened {t} ({off:?} apart)"
    );
}

/// Every row of every table, as text.
pub(crate) async fn dump_all(db: &Db) -> String {
    let mut out = String::new();
    match db {
        Db::Sqlite(pool) => {
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                    .fetch_all(pool)
                    .await
                    .unwrap();
            for t in tables {
                let cols: Vec<(i64, String, String, i64, Option<String>, i64)> =
                    sqlx::query_as(sqlx::AssertSqlSafe(format!("PRAGMA table_info(\"{t}\")")))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                let expr = cols
                    .iter()
                    .map(|c| format!("quote(\"{}\")", c.1))
                    .collect::<Vec<_>>()
                    .join(" || '|' || ");
                let rows: Vec<String> =
                    sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT {expr} FROM \"{t}\"")))
                        .fetch_all(pool)
                        .await
                        .unwrap();
                out.push_str(&format!(
                    "== {t} ({} rows)\n{}\n",
                    rows.len(),
                    rows.join("\n")
                ));
            }
        }
        Db::Postgres(pool) => {
            let tables: Vec<String> = sqlx::query_scalar(
                "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            )
            .fetch_all(pool)
            .await
            .unwrap();
            for t in tables {
                let rows: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                    "SELECT row_to_json(x)::text FROM \"{t}\" x"
                )))
                .fetch_all(pool)
                .await
                .unwrap();
                out.push_str(&format!(
                    "== {t} ({} rows)\n{}\n",
                    rows.len(),
                    rows.join("\n")
                ));
            }
        }
    }
    out
}

/// Candidate lines and their "address port" pairs, from relayed signals.
fn candidates(signals: &[String]) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for s in signals {
        let v: Value = serde_json::from_str(s).unwrap();
        if let Some(c) = v["candidate"]["candidate"]
            .as_str()
            .filter(|c| !c.is_empty())
        {
            let f: Vec<&str> = c.split_whitespace().collect();
            out.push((c.to_owned(), f[4].to_owned(), f[5].to_owned()));
        }
    }
    out
}

async fn a_full_session_is_recorded_truly_and_keeps_no_content(backend: Backend) {
    let srv = ServerProcess::start(
        backend,
        &[
            ("ALCOVE_SIGNAL_GRACE", "20s"),
            ("ALCOVE_SIGNAL_PING_INTERVAL", "2s"),
            ("ALCOVE_NETWORK_TEST_UDP", "127.0.0.1:0"),
        ],
    )
    .await;
    let t = srv.user_with_role("Dr Rowan Vale", Role::Therapist).await;
    let c = srv.client("Casey Marsh").await;
    let id = live_appointment(&srv, &t, &[&c]).await;
    // The client checks their network first (order 10): its figures are kept, its
    // candidates and SDP are not.
    let nettest = crate::nettest::run(&srv, &c, false).await;
    assert_eq!(nettest.result["verdict"], "ready", "{}", nettest.result);

    // The session, with the time of each step as the test saw it.
    let t_joined = Timestamp::now();
    let mut th = RtcPeer::join(&srv, &t, id).await;
    let c_knocked = Timestamp::now();
    let mut cl = RtcPeer::join(&srv, &c, id).await;
    th.expect("lobby", |m| {
        matches!(m, ServerMessage::Lobby { waiting } if !waiting.is_empty()).then_some(())
    })
    .await;
    let c_admitted = Timestamp::now();
    th.send(&ClientMessage::Admit {
        participant_id: cl.pid,
    })
    .await;
    cl.expect("admitted", |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await;
    cl.call(th.pid);
    for p in [&mut cl, &mut th] {
        p.observe("connected", |o| {
            *o == Obs::State(RTCPeerConnectionState::Connected)
        })
        .await;
        p.observe("chat open", |o| *o == Obs::DcOpen).await;
    }
    cl.chat(CHAT);
    th.observe("chat", |o| *o == Obs::DcMessage(CHAT.into()))
        .await;
    th.chat(CHAT);
    cl.observe("chat back", |o| *o == Obs::DcMessage(CHAT.into()))
        .await;
    cl.send(&ClientMessage::Stats(Stats {
        peer: Some(th.pid),
        path: Some("direct".into()),
        rtt_ms: Some(12.5),
        jitter_ms: Some(1.5),
        packet_loss: Some(0.01),
        bitrate_kbps: Some(900.0),
        frames_dropped: Some(2),
    }))
    .await;
    // A reconnect.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c_dropped = Timestamp::now();
    cl.cut_signalling().await;
    th.expect("reconnecting", |m| {
        matches!(m, ServerMessage::PeerReconnecting { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c_resumed = Timestamp::now();
    cl.resume(&srv, &c, id).await;
    th.expect("resumed", |m| {
        matches!(m, ServerMessage::PeerResumed { .. }).then_some(())
    })
    .await;
    th.restart_ice();
    tokio::time::sleep(Duration::from_millis(500)).await;
    cl.chat(CHAT);
    th.observe("chat after resume", |o| *o == Obs::DcMessage(CHAT.into()))
        .await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let ended = Timestamp::now();
    th.send(&ClientMessage::End).await;
    th.expect("ended", |m| {
        matches!(m, ServerMessage::Ended { .. }).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The record holds the real timeline, within a second.
    let sessions = srv
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    let s = &sessions[0];
    assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
    near(&s["started_at"], t_joined, "session start");
    near(&s["ended_at"], ended, "session end");
    assert_eq!(s["end_reason"], "ended_by_therapist");
    let part = |role: &str| {
        s["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["role"] == role)
            .unwrap()
            .clone()
    };
    let (pt, pc) = (part("therapist"), part("client"));
    assert_eq!(pt["display_name"], "Dr Rowan Vale");
    assert_eq!(pt["intervals"].as_array().unwrap().len(), 1);
    near(
        &pt["intervals"][0]["connected_at"],
        t_joined,
        "therapist connected",
    );
    near(
        &pt["intervals"][0]["disconnected_at"],
        ended,
        "therapist disconnected",
    );
    near(&pc["knocked_at"], c_knocked, "client knocked");
    near(&pc["admitted_at"], c_admitted, "client admitted");
    assert_eq!(pc["admitted_by"], t.id.to_string());
    assert_eq!(pc["reconnects"], 1);
    assert_eq!(pc["path"], "direct");
    let iv = pc["intervals"].as_array().unwrap();
    assert_eq!(iv.len(), 2, "{pc}");
    near(&iv[0]["connected_at"], c_knocked, "client first connected");
    near(&iv[0]["disconnected_at"], c_dropped, "client dropped");
    near(&iv[1]["connected_at"], c_resumed, "client back");
    near(&iv[1]["disconnected_at"], ended, "client out at the end");
    let expect_connected = c_dropped.duration_since(c_knocked) + ended.duration_since(c_resumed);
    let got = pc["connected_seconds"].as_i64().unwrap();
    assert!(
        (got - expect_connected.as_secs()).abs() <= 1,
        "{got} vs {expect_connected:?}"
    );
    assert_eq!(pc["quality"]["samples"], 1);
    assert_eq!(pc["quality"]["rtt_ms_avg"], 12.5);
    let att = srv
        .get(format!("/api/v1/appointments/{id}/attendance"), t.token())
        .await
        .expect(200);
    assert!(
        att["together_seconds"].as_i64().unwrap() >= got - 2,
        "{att}"
    );

    // Nothing of the session's content anywhere: every table, every log line (trace level).
    let mut signals: Vec<String> = th.signals_seen.lock().await.clone();
    signals.extend(cl.signals_seen.lock().await.iter().cloned());
    let mut cands = candidates(&signals);
    let relayed = cands.len();
    for line in &nettest.candidates {
        let f: Vec<&str> = line.split_whitespace().collect();
        cands.push((line.clone(), f[4].to_owned(), f[5].to_owned()));
    }
    assert!(
        cands.len() > relayed,
        "the network test exchanged candidates"
    );
    assert!(!cands.is_empty(), "candidates were relayed");
    let mut forbidden: Vec<(String, String)> = vec![
        ("v=0".into(), "SDP".into()),
        ("a=fingerprint".into(), "SDP fingerprint".into()),
        ("a=candidate".into(), "SDP candidate".into()),
        ("a=ice-pwd".into(), "ICE password".into()),
        ("a=ice-ufrag".into(), "ICE username".into()),
        (PASSWORD.into(), "a password".into()),
        (CHAT.into(), "chat text".into()),
    ];
    for (line, addr, port) in &cands {
        forbidden.push((line.clone(), "a candidate".into()));
        forbidden.push((
            format!("{addr} {port}"),
            "a candidate address and port".into(),
        ));
        forbidden.push((
            format!("{addr}:{port}"),
            "a candidate address and port".into(),
        ));
    }
    for s in [&t, &c] {
        forbidden.push((s.access.clone(), "an access token".into()));
        forbidden.push((s.refresh.clone(), "a refresh token".into()));
    }
    for secret in th.secrets.iter().chain(cl.secrets.iter()) {
        forbidden.push((secret.clone(), "a join or resume token".into()));
    }
    forbidden.push((nettest.token.clone(), "a network test token".into()));
    let dump = dump_all(&srv.db).await;
    assert!(
        dump.contains("video_sessions (1 rows)"),
        "the dump covers the records"
    );
    assert!(
        dump.contains("network_tests (1 rows)"),
        "the dump covers the network test"
    );
    assert!(
        logs_have(&srv.log_text(), "network test finished"),
        "the network test was logged (its metadata)"
    );
    let logs = srv.log_text();
    assert!(
        logs.lines().count() > 50 && logs.contains("TRACE"),
        "trace-level logs were captured"
    );
    for (needle, what) in &forbidden {
        assert!(
            !dump.contains(needle.as_str()),
            "{what} ({needle:?}) is in the database"
        );
        let line = logs.lines().find(|l| l.contains(needle.as_str()));
        assert!(
            line.is_none(),
            "{what} ({needle:?}) is in the logs: {line:?}"
        );
    }
    for (_, _, port) in &cands {
        let word = regex_free_word(&dump, port);
        assert!(!word, "a candidate port ({port}) is in the database");
    }
}

fn logs_have(logs: &str, what: &str) -> bool {
    logs.lines().any(|l| l.contains(what))
}

/// Whether `needle` occurs in `hay` as a whole number (not inside a longer one).
fn regex_free_word(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before = hay[..i].chars().next_back();
        let after = hay[i + needle.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_alphanumeric())
            && !after.is_some_and(|c| c.is_ascii_alphanumeric())
    })
}

/// Join `id`'s room as `who`: the connection and its participant id.
pub async fn hello(app: &impl Api, who: &Session, id: Uuid) -> (SignalClient, Uuid) {
    let j = crate::peers::join_token(app, who, id).await;
    let (c, welcome) = crate::peers::hello(
        j["signaling_url"].as_str().unwrap(),
        j["token"].as_str().unwrap(),
        None,
        false,
    )
    .await;
    let ServerMessage::Welcome { participant_id, .. } = welcome else {
        unreachable!("hello returns the welcome")
    };
    (c, participant_id)
}

/// Therapist in, client knocks and is admitted; returns both connections.
pub async fn admitted(
    app: &impl Api,
    t: &Session,
    c: &Session,
    id: Uuid,
) -> (SignalClient, SignalClient, Uuid) {
    let (mut th, _) = hello(app, t, id).await;
    let (mut cl, cpid) = hello(app, c, id).await;
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Lobby { waiting } if !waiting.is_empty()).then_some(())
    })
    .await
    .unwrap();
    th.send(&ClientMessage::Admit {
        participant_id: cpid,
    })
    .await
    .unwrap();
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await
    .unwrap();
    (th, cl, cpid)
}

async fn a_crash_mid_session_loses_no_join_or_admission(backend: Backend) {
    let mut srv = ServerProcess::start(backend, &[]).await;
    let t = srv.user_with_role("Dr Crash", Role::Therapist).await;
    let c = srv.client("Client Crash").await;
    let id = live_appointment(&srv, &t, &[&c]).await;
    let before = Timestamp::now();
    let (_th, _cl, cpid) = admitted(&srv, &t, &c, id).await;
    // `admitted` reached the client: the admission was committed before it was sent.
    let killed = Timestamp::now();
    srv.kill9();
    srv.restart();
    let sessions = srv
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    let s = &sessions[0];
    assert_eq!(s["end_reason"], "server_lost", "{s}");
    let end = ts(&s["ended_at"]);
    assert!(
        end >= before && end <= killed,
        "closed at the last time known: {end}"
    );
    let pc = s["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "client")
        .unwrap();
    assert_eq!(pc["participant_id"], cpid.to_string());
    assert!(
        pc["knocked_at"].is_string() && pc["admitted_at"].is_string(),
        "{pc}"
    );
    assert_eq!(pc["left_reason"], "server_lost");
    for p in s["participants"].as_array().unwrap() {
        assert_eq!(
            p["intervals"][0]["disconnected_at"], s["ended_at"],
            "intervals closed: {p}"
        );
    }
    // The next session of the appointment starts cleanly.
    let (_th2, _) = hello(&srv, &t, id).await;
    let sessions = srv
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    assert_eq!(sessions.as_array().unwrap().len(), 2);
    assert!(sessions[1]["ended_at"].is_null());
}

fn verify(app: &TestApp) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alcove"))
        .args(["audit", "verify"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", app.db_url())
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

async fn exec(db: &Db, sql: &str) -> Result<(), sqlx::Error> {
    match db {
        Db::Sqlite(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
        Db::Postgres(p) => sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(p)
            .await
            .map(|_| ()),
    }
}

async fn an_edited_audit_row_is_found_by_audit_verify(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = app.user_with_role("Dr Audit", Role::Therapist).await;
    let c = app.client("Audited").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    app.get(format!("/api/v1/appointments/{id}"), c.token())
        .await
        .expect(200);
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": c.email, "password": "not the password"}),
    )
    .await
    .expect(401);
    let (ok, out) = verify(&app);
    assert!(ok && out.contains("intact"), "{out}");

    // The trail is append-only: an UPDATE is refused by the database.
    let db = app.store();
    assert!(
        exec(db, "UPDATE audit_log SET details = '{}' WHERE seq = 2")
            .await
            .is_err()
    );
    // Someone with the database in hand gets past the trigger and edits a row...
    match backend {
        Backend::Sqlite => exec(db, "DROP TRIGGER audit_log_append_only")
            .await
            .unwrap(),
        Backend::Postgres => exec(
            db,
            "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        )
        .await
        .unwrap(),
    }
    exec(
        db,
        "UPDATE audit_log SET details = '{\"forged\":true}' WHERE seq = 3",
    )
    .await
    .unwrap();
    let (ok, out) = verify(&app);
    assert!(!ok, "{out}");
    assert!(out.contains("broken at entry 3"), "{out}");
}

async fn retention_purges_old_records_and_the_chain_still_verifies(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.session_retention = Duration::from_secs(2);
        c.audit_retention = Duration::from_secs(2);
        c.signal_ping_interval = Duration::from_secs(5);
    })
    .await;
    let t = app.user_with_role("Dr Retain", Role::Therapist).await;
    let c = app.client("Retained").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    let (mut th, _cl, _) = admitted(&app, &t, &c, id).await;
    th.send(&ClientMessage::End).await.unwrap();
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Ended { .. }).then_some(())
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = app
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    assert_eq!(before.as_array().unwrap().len(), 1);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // Something recent, which must survive.
    app.get(format!("/api/v1/appointments/{id}"), c.token())
        .await
        .expect(200);
    let purged = alcove::records::purge_once(app.store(), &app.state.config)
        .await
        .unwrap();
    assert_eq!(purged.sessions, 1, "{purged:?}");
    assert!(purged.audit_rows > 5, "{purged:?}");
    let after = app
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    assert_eq!(after, json!([]));
    // The remaining trail still verifies from the purge anchor, and holds the recent reads.
    assert!(matches!(
        app.store().verify_audit().await.unwrap(),
        alcove::store::AuditVerdict::Intact { .. }
    ));
    let (ok, out) = verify(&app);
    assert!(ok, "{out}");
    let (rows, _) = app
        .store()
        .audit_page(
            &alcove::store::AuditFilter {
                actor_id: Some(c.id),
                action: Some("appointment.read".into()),
                ..Default::default()
            },
            10,
            0,
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "the recent read survives");
}

async fn records_and_the_audit_trail_are_shown_only_to_whom_they_concern(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.signal_ping_interval = Duration::from_secs(5)).await;
    let t = app.user_with_role("Dr Owner", Role::Therapist).await;
    let other_t = app.user_with_role("Dr Other", Role::Therapist).await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    let c = app.client("Owner Client").await;
    let other_c = app.client("Other Client").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    let (mut th, _cl, _) = admitted(&app, &t, &c, id).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    th.send(&ClientMessage::End).await.unwrap();
    // The room records the end before it announces it.
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Ended { .. }).then_some(())
    })
    .await
    .expect("ended");
    let sessions = format!("/api/v1/appointments/{id}/sessions");
    let attendance = format!("/api/v1/appointments/{id}/attendance");

    let full = app.get(&sessions, t.token()).await.expect(200);
    assert_eq!(full[0]["participants"].as_array().unwrap().len(), 2);
    let own = app.get(&sessions, c.token()).await.expect(200);
    let parts = own[0]["participants"].as_array().unwrap();
    assert_eq!(parts.len(), 1, "a client sees their own attendance only");
    assert_eq!(parts[0]["user_id"], c.id.to_string());
    assert_eq!(
        app.get(&sessions, admin.token()).await.expect(200)[0]["participants"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    for who in [&other_c, &other_t] {
        app.get(&sessions, who.token())
            .await
            .expect_problem(404, "not_found");
        app.get(&attendance, who.token())
            .await
            .expect_problem(404, "not_found");
    }
    app.get(&sessions, None)
        .await
        .expect_problem(401, "unauthenticated");
    let att = app.get(&attendance, t.token()).await.expect(200);
    assert!(att["together_seconds"].as_i64().unwrap() >= 1, "{att}");
    let mine = app.get(&attendance, c.token()).await.expect(200);
    assert!(mine["together_seconds"].is_null());
    assert_eq!(mine["participants"].as_array().unwrap().len(), 1);

    // The CSV export: the therapist's own, in a range.
    let from = (Timestamp::now() - SignedDuration::from_hours(1)).to_string();
    let to = (Timestamp::now() + SignedDuration::from_hours(2)).to_string();
    let csv_path = format!("/api/v1/therapists/me/attendance.csv?from={from}&to={to}");
    let r = app.get(&csv_path, t.token()).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut rd = csv::Reader::from_reader(r.text.as_bytes());
    let rows: Vec<csv::StringRecord> = rd.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1);
    assert_eq!(&rows[0][0], id.to_string());
    assert_eq!(&rows[0][7], "Owner Client");
    assert_eq!(&rows[0][8], "1", "its session is counted");
    let other = app.get(&csv_path, other_t.token()).await;
    assert_eq!(
        csv::Reader::from_reader(other.text.as_bytes())
            .records()
            .count(),
        0
    );
    for who in [&c, &admin] {
        app.get(&csv_path, who.token())
            .await
            .expect_problem(403, "forbidden");
    }
    app.get(
        format!("/api/v1/therapists/me/attendance.csv?from={to}&to={from}"),
        t.token(),
    )
    .await
    .expect_problem(422, "invalid_range");

    // The audit trail: admins only, filterable; it recorded the admission and the reads.
    for who in [&t, &c] {
        app.get("/api/v1/admin/audit", who.token())
            .await
            .expect_problem(403, "forbidden");
    }
    let admits = app
        .get(
            "/api/v1/admin/audit?action=waiting_room.admit",
            admin.token(),
        )
        .await
        .expect(200);
    assert_eq!(admits["total"], 1);
    assert_eq!(admits["items"][0]["actor_id"], t.id.to_string());
    assert_eq!(admits["items"][0]["target_id"], id.to_string());
    let reads = app
        .get(
            format!(
                "/api/v1/admin/audit?action=session_record.read&actor_id={}",
                c.id
            ),
            admin.token(),
        )
        .await
        .expect(200);
    assert_eq!(reads["total"], 1);
    let by_target = app
        .get(
            format!("/api/v1/admin/audit?target_id={id}&per_page=100"),
            admin.token(),
        )
        .await
        .expect(200);
    let actions: Vec<&str> = by_target["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in [
        "appointment.create",
        "session.join_token",
        "session.start",
        "waiting_room.knock",
        "waiting_room.admit",
        "session.join",
        "session.end",
    ] {
        assert!(actions.contains(&a), "{a} missing from {actions:?}");
    }
    let failed_signins = app
        .get("/api/v1/admin/audit?action=auth.sign_in", admin.token())
        .await
        .expect(200);
    assert!(failed_signins["total"].as_i64().unwrap() >= 5);
}

async fn webhooks_are_signed_and_retried_until_delivered(backend: Backend) {
    use axum::{Router, body::Bytes, http::HeaderMap, http::StatusCode, routing::post};
    use std::sync::{Arc, Mutex};
    type Seen = Arc<Mutex<Vec<(u16, HeaderMap, String)>>>;
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let recv = {
        let seen = seen.clone();
        Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: Bytes| {
                let seen = seen.clone();
                async move {
                    let mut s = seen.lock().unwrap();
                    // The first two attempts fail: the sender must retry.
                    let status = if s.len() < 2 { 500 } else { 200 };
                    s.push((status, headers, String::from_utf8_lossy(&body).into_owned()));
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, recv).await.unwrap() });
    let secret = "webhook-test-secret";
    let app = spawn_app_with(backend, |c| {
        c.webhook_urls = vec![hook.clone()];
        c.webhook_secret = Some(secret.to_owned().into());
        c.webhook_retry_base = Duration::from_millis(200);
        c.signal_ping_interval = Duration::from_secs(5);
    })
    .await;
    let t = app.user_with_role("Dr Hook", Role::Therapist).await;
    let c = app.client("Hooked").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    let (mut th, mut cl, _) = admitted(&app, &t, &c, id).await;
    cl.send(&ClientMessage::Leave).await.unwrap();
    th.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::PeerLeft { .. }).then_some(())
    })
    .await
    .unwrap();
    th.send(&ClientMessage::End).await.unwrap();

    // Wait until every event was delivered (2xx).
    let want = [
        "session.started",
        "participant.joined",
        "participant.joined",
        "participant.left",
        "participant.left",
        "session.ended",
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let delivered = loop {
        let d: Vec<(HeaderMap, String)> = seen
            .lock()
            .unwrap()
            .iter()
            .filter(|(s, _, _)| *s == 200)
            .map(|(_, h, b)| (h.clone(), b.clone()))
            .collect();
        let mut types: Vec<String> = d
            .iter()
            .map(|(h, _)| h["alcove-event-type"].to_str().unwrap().to_owned())
            .collect();
        types.sort();
        let mut w: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        w.sort();
        if types == w {
            break d;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivered so far: {types:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let all = seen.lock().unwrap().clone();
    assert!(
        all.len() >= want.len() + 2,
        "two failed attempts were retried"
    );
    let failed_ids: Vec<String> = all[..2]
        .iter()
        .map(|(_, h, _)| h["alcove-delivery-id"].to_str().unwrap().to_owned())
        .collect();
    for id in &failed_ids {
        assert!(
            delivered
                .iter()
                .any(|(h, _)| h["alcove-delivery-id"] == id.as_str()),
            "failed delivery {id} retried to success"
        );
    }
    for (h, body) in &delivered {
        // Alcove-Signature: t=<unix>,v1=<hex hmac-sha256(secret, "<t>.<body>")>
        let sig = h["alcove-signature"].to_str().unwrap();
        let t: i64 = sig
            .strip_prefix("t=")
            .unwrap()
            .split(',')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(sig, alcove::records::webhook_signature(secret, t, body));
        assert_ne!(
            sig,
            alcove::records::webhook_signature("another secret", t, body)
        );
        // Ids and times only.
        let v: Value = serde_json::from_str(body).unwrap();
        for k in v.as_object().unwrap().keys() {
            assert!(
                [
                    "id",
                    "type",
                    "occurred_at",
                    "appointment_id",
                    "session_id",
                    "participant_id",
                    "role",
                    "resumed",
                    "reason"
                ]
                .contains(&k.as_str()),
                "unexpected webhook field {k}: {body}"
            );
        }
        assert_eq!(v["appointment_id"], id.to_string());
        assert!(!body.contains("Hooked") && !body.contains("example.com"));
    }
}

async fn an_automatically_admitted_client_is_recorded_as_admitted(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.signal_ping_interval = Duration::from_secs(5)).await;
    let t = app.user_with_role("Dr Auto", Role::Therapist).await;
    let c = app.client("Auto Client").await;
    let id = live_appointment(&app, &t, &[&c]).await;
    app.put(
        format!("/api/v1/appointments/{id}/auto-admit"),
        t.token(),
        json!({"auto_admit": true}),
    )
    .await
    .expect(200);
    let (_th, _) = hello(&app, &t, id).await;
    let (mut cl, _) = hello(&app, &c, id).await;
    let _ = cl.recv_timeout(Duration::from_millis(300)).await;
    let sessions = app
        .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
        .await
        .expect(200);
    let pc = sessions[0]["participants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["role"] == "client")
        .unwrap()
        .clone();
    assert!(pc["admitted_at"].is_string(), "{pc}");
    assert!(pc["admitted_by"].is_null(), "automatic: {pc}");
    assert!(pc["knocked_at"].is_null(), "never waited: {pc}");
}

//! What a client may hold open: connections per address and slowly sent headers
//! (slowloris), and what the signalling socket refuses to negotiate.

use crate::helpers::{Api as _, Backend, spawn_app_with};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Whether the server closed `s` within `d` (end of stream or a reset).
async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + d;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_per_address_are_capped_and_slow_headers_are_cut_off() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.max_connections_per_address = 4;
        c.header_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();

    // Four connections that say nothing take the address's four places ...
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ... so a fifth is closed at once, and counted.
    let mut fifth = TcpStream::connect(&addr).await.unwrap();
    assert!(
        closed_within(&mut fifth, Duration::from_secs(2)).await,
        "a connection over the limit is closed"
    );
    // The silent ones are closed after the header timeout, which frees the places.
    let t = Instant::now();
    for s in &mut idle {
        assert!(
            closed_within(s, Duration::from_secs(5)).await,
            "a silent connection is closed"
        );
    }
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    app.get("/healthz", None).await.expect(200);

    // A kept-alive connection that goes quiet after a request is closed the same way.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = [0u8; 1024];
    let n = kept.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert!(
        closed_within(&mut kept, Duration::from_secs(5)).await,
        "an idle kept-alive connection is closed"
    );

    // Slowloris: a request line and headers a byte at a time, never finished, is cut off
    // after the header timeout even though bytes keep coming.
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    let started = Instant::now();
    let trickle = b"GET /healthz HTTP/1.1\r\nHost: alcove\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut cut = false;
    for b in trickle {
        if slow.write_all(&[*b]).await.is_err() {
            cut = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > Duration::from_secs(6) {
            break;
        }
    }
    assert!(
        cut || closed_within(&mut slow, Duration::from_secs(2)).await,
        "a trickled request is cut off"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "cut off after about the header timeout, not {:?}",
        started.elapsed()
    );
    // Everyone else was served all along; the refused connection was counted.
    app.get("/healthz", None).await.expect(200);
    let m = app.get("/metrics", None).await;
    assert!(
        m.text.contains("alcove_connections_refused_total 1"),
        "{}",
        m.text
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signalling_socket_negotiates_no_compression() {
    // permessage-deflate would let a small frame inflate into a large one (a zip bomb) and
    // mixes secrets with attacker data under one compression context: not offered back.
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(
        format!(
            "GET /api/v1/signal HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(
        !head.contains("sec-websocket-extensions"),
        "no extension is accepted: {head}"
    );
}

/// The process's resident memory, in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_signalling_connections_opened_and_closed_leave_nothing_behind() {
    use alcove::signal::JoinClaims;
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::{connect_async, tungstenite::Message};

    let app = crate::signaling::signalling_app(Backend::Sqlite, |_| {}).await;
    let (_t, c, id) = crate::signaling::pair(&app).await;
    let ws = format!("{}/api/v1/signal", app.base.replace("http://", "ws://"));
    // Fresh single-use join tokens for the client: the claims of a real one, new ids.
    let real = crate::peers::join_token(&app, &c, id).await;
    let claims: JoinClaims = app
        .state
        .jwt
        .verify(real["token"].as_str().unwrap(), "alcove-signal")
        .unwrap();
    let token = || {
        let mut cl = claims.clone();
        cl.jti = uuid::Uuid::new_v4();
        app.state.jwt.sign(&cl).unwrap()
    };
    let hello =
        |t: String| Message::text(serde_json::json!({"type": "hello", "token": t}).to_string());
    // Reads until `pick` accepts a text frame, or the socket ends.
    async fn until<S>(s: &mut S, what: &str)
    where
        S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>>
            + Unpin,
    {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), s.next()).await {
                Ok(Some(Ok(Message::Text(t)))) if t.contains(what) => return,
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(_)) | None) => return,
                Err(_) => panic!("no {what} in 5 s"),
            }
        }
    }

    let cycle = |i: usize| {
        let ws = ws.clone();
        let t = token();
        async move {
            let (mut s, _) = connect_async(&ws).await.expect("connects");
            match i % 10 {
                // Open and close at once, with and without a close frame.
                0..=2 => {
                    let _ = s.close(None).await;
                }
                3..=5 => drop(s),
                // Garbage, answered with an error; then gone.
                6 => {
                    s.send(Message::text("{not json")).await.unwrap();
                    until(&mut s, "malformed_message").await;
                    drop(s);
                }
                // A hello with a bad token: error and close 4001.
                7 => {
                    s.send(hello("not-a-token".into())).await.unwrap();
                    until(&mut s, "invalid_token").await;
                }
                // A real join into the room, then a dropped connection (its place is
                // held for the grace period, then it times out) ...
                8 => {
                    s.send(hello(t)).await.unwrap();
                    until(&mut s, "welcome").await;
                    drop(s);
                }
                // ... or a proper leave.
                _ => {
                    s.send(hello(t)).await.unwrap();
                    until(&mut s, "welcome").await;
                    s.send(Message::text(r#"{"type":"leave"}"#)).await.unwrap();
                    until(&mut s, "\u{0}never").await;
                }
            }
        }
    };

    let hub = app.state.hub.clone();
    let tasks = || {
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks()
    };
    let settle = || {
        let hub = hub.clone();
        async move {
            // Held places time out after the grace (2 s) and the empty room then ends.
            let deadline = Instant::now() + Duration::from_secs(30);
            while (hub.connection_count() > 0 || hub.room_count() > 0 || hub.revocable_count() > 0)
                && Instant::now() < deadline
            {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };

    // Warm up (pools, buffers, the allocator), then measure.
    for i in 0..500 {
        cycle(i).await;
    }
    settle().await;
    let (tasks_before, rss_before) = (tasks(), rss_kib());
    for i in 0..10_000 {
        cycle(i).await;
    }
    settle().await;
    assert_eq!(hub.connection_count(), 0, "connections left");
    assert_eq!(hub.room_count(), 0, "rooms left");
    assert_eq!(hub.revocable_count(), 0, "revocation entries left");
    let (tasks_after, rss_after) = (tasks(), rss_kib());
    assert!(
        tasks_after <= tasks_before + 2,
        "tasks: {tasks_before} before, {tasks_after} after"
    );
    // A connection's state is about 9 KiB (docs/BENCHMARKS.md): keeping even a fifth of
    // it per cycle would grow this process by 18 MiB.
    let grew = rss_after.saturating_sub(rss_before);
    assert!(
        grew < 16 * 1024,
        "resident memory grew {grew} KiB over 10,000 cycles ({rss_before} -> {rss_after} KiB)"
    );
    println!(
        "10,000 cycles: tasks {tasks_before} -> {tasks_after}, RSS {rss_before} -> {rss_after} KiB"
    );
    // And the server still serves.
    app.get("/healthz", None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_tokens_are_limited_per_account() {
    // A client cut off for flooding cannot rejoin at once, again and again: 30 join tokens
    // a minute per account, then 429 with Retry-After; other accounts are not affected.
    let app = crate::signaling::signalling_app(Backend::Sqlite, |_| {}).await;
    let (t, c, id) = crate::signaling::pair(&app).await;
    let path = format!("/api/v1/appointments/{id}/join");
    for _ in 0..30 {
        app.post(&path, c.token(), serde_json::json!({}))
            .await
            .expect(200);
    }
    let r = app.post(&path, c.token(), serde_json::json!({})).await;
    r.expect_problem(429, "too_many_requests");
    let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    app.post(&path, t.token(), serde_json::json!({}))
        .await
        .expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_proxy_is_neither_capped_nor_cut_off_while_idle() {
    // Behind a reverse proxy every connection comes from the proxy, which keeps idle ones
    // for reuse: it is not limited per address, and its idle connections are kept longer
    // than its own idle timeout (so that it never races a request into a closing one).
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.max_connections_per_address = 2;
        c.header_timeout = Duration::from_millis(500);
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(&addr).await.unwrap());
    }
    for s in &mut held {
        assert!(
            !closed_within(s, Duration::from_millis(1500)).await,
            "a trusted proxy's connection is kept"
        );
    }
    app.get("/healthz", None).await.expect(200);
}

//! `alcove-bench`: Alcove's performance, beside a floor measured in the same run.
//!
//! Every mode starts the servers it measures itself, each in a child process of its own
//! (this binary run again): the real Alcove server (SQLite in a fresh data folder, or
//! PostgreSQL with `--postgres`) and, where it makes sense, a bare tokio-tungstenite relay
//! (no authentication, no validation, no rooms, no records): the floor. Figures are read
//! from `/proc` (CPU time, resident memory) and from the clients (latencies), and printed
//! with their ratio to the floor. See docs/BENCHMARKS.md.
//!
//! ```text
//! alcove-bench relay       [--rooms 2000] [--seconds 20]   CPU per relayed candidate, relay latency, memory per connection
//! alcove-bench flood       [--rooms 1000] [--seconds 20]   relay latency of the others, quiet and while one client floods
//! alcove-bench joins       [--n 4000]                      a join storm: hello to welcome
//! alcove-bench connections [--n 18000]                     idle connections in rooms: memory each
//! alcove-bench signins     [--n 100]                       resident memory after sign-ins
//! alcove-bench start                                       start to ready, SQLite and PostgreSQL
//! alcove-bench api         [--levels 1,10,50,200]          booking and listing latency, SQLite and PostgreSQL
//! alcove-bench calls       [--pairs 100]                   webrtc-rs call set-up, hello to an open data channel
//! alcove-bench all --smoke                                 every mode, small, a few seconds (the test suite runs it)
//! ```

use alcove::domain::Role;
use alcove::store::Db;
use alcove_bench::{
    Identity, Pair, PgDb, ServerChild, call, candidate, connect, hello, join_token, next_json,
    pairs, people, percentile, raise_nofile, wait_type,
};
use clap::{Parser, Subcommand};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use tokio_tungstenite::tungstenite::Message;

#[derive(Parser)]
#[command(
    name = "alcove-bench",
    about = "Alcove's performance, beside a floor measured in the same run"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Clone)]
enum Mode {
    /// Paced candidates between pairs: server CPU per relayed message, relay latency,
    /// memory per connection; Alcove beside the bare relay
    Relay {
        #[arg(long, default_value_t = 2000)]
        rooms: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// Relay latency of paced rooms, quiet and while one client floods its own room
    /// (as fast as it can send, rejoining each time it is cut off): the flood's cost to
    /// everyone else
    Flood {
        #[arg(long, default_value_t = 1000)]
        rooms: usize,
        #[arg(long, default_value_t = 20)]
        seconds: u64,
    },
    /// A storm of joins: every participant says hello at once; hello to welcome
    Joins {
        #[arg(long, default_value_t = 4000)]
        n: usize,
    },
    /// Idle connections in rooms (therapist and client each): server memory per connection
    Connections {
        #[arg(long, default_value_t = 18000)]
        n: usize,
    },
    /// Resident memory of a server after sign-ins (Argon2id, 19 MiB each)
    Signins {
        #[arg(long, default_value_t = 100)]
        n: usize,
    },
    /// Start to ready (first /readyz 200), on SQLite and PostgreSQL
    Start {
        #[arg(long, default_value_t = 5)]
        runs: usize,
    },
    /// Booking and listing latency at several concurrency levels, SQLite and PostgreSQL
    Api {
        #[arg(long, value_delimiter = ',', default_value = "1,10,50,200")]
        levels: Vec<usize>,
        #[arg(long, default_value_t = 400)]
        requests: usize,
    },
    /// webrtc-rs call set-up on loopback, one call at a time: the therapist's hello to a
    /// data channel open at both ends; Alcove beside the bare relay
    Calls {
        #[arg(long, default_value_t = 100)]
        pairs: usize,
        /// Send every candidate in the offer and answer (gathering first) instead of trickling
        #[arg(long)]
        gathered: bool,
    },
    /// Every mode, small: a smoke run
    All {
        #[arg(long)]
        smoke: bool,
    },
}

/// An Alcove server with the bench's identity, and a connection to its database.
async fn alcove(who: &Identity, extra: &[(&str, &str)]) -> (ServerChild, Db) {
    let mut env: Vec<(&str, String)> = who.env();
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let srv = ServerChild::alcove(&env);
    let url = extra
        .iter()
        .find(|(k, _)| *k == "DATABASE_URL")
        .map(|(_, v)| v.to_string())
        .or_else(|| srv.sqlite_url())
        .unwrap();
    let db = Db::connect(&url, 4).await.unwrap();
    (srv, db)
}

fn ratio(x: f64, floor: f64) -> String {
    if floor > 0.0 && x.is_finite() {
        format!("{:.2}×", x / floor)
    } else {
        "–".into()
    }
}

// ---- relay ---------------------------------------------------------------------------------

/// What a relay run measured.
struct RelayRun {
    kib_per_conn: f64,
    cpu_us_per_msg: f64,
    latencies_ms: Vec<f64>,
    sent: u64,
    received: u64,
}

/// The measured window, shared by every client task: set once the rooms are ready.
struct Window {
    epoch: Instant,
    span: std::sync::OnceLock<(Instant, Instant)>,
    latencies: Mutex<Vec<f64>>,
    sent: std::sync::atomic::AtomicU64,
    received: std::sync::atomic::AtomicU64,
}

impl Window {
    fn new() -> Arc<Window> {
        Arc::new(Window {
            epoch: Instant::now(),
            span: std::sync::OnceLock::new(),
            latencies: Mutex::new(Vec::new()),
            sent: Default::default(),
            received: Default::default(),
        })
    }

    fn inside(&self, at: Instant) -> bool {
        self.span
            .get()
            .is_some_and(|(from, until)| at >= *from && at < *until)
    }
}

type Sender = futures_util::stream::SplitSink<alcove_bench::Ws, Message>;

/// Read a connection from now on (answering pings, so that it stays alive while the other
/// rooms are set up), recording the latency of the candidates sent inside the window.
fn reader(ws: alcove_bench::Ws, w: Arc<Window>) -> Sender {
    let (tx, mut rx) = ws.split();
    tokio::spawn(async move {
        while let Some(m) = rx.next().await {
            let m = match m {
                Ok(m) => m,
                Err(_) => break,
            };
            if let Message::Close(f) = &m {
                if w.span
                    .get()
                    .is_some_and(|(_, until)| Instant::now() < *until)
                {
                    eprintln!(
                        "closed during the run: {:?}",
                        f.as_ref().map(|f| u16::from(f.code))
                    );
                }
                break;
            }
            let Message::Text(t) = m else { continue };
            let now = w.epoch.elapsed().as_micros() as u64;
            let Ok(v) = serde_json::from_str::<Value>(&t) else {
                continue;
            };
            if v["type"] == "error" {
                eprintln!("error: {}", v["code"]);
                continue;
            }
            let Some(sent_us) = v["candidate"]["sdpMid"]
                .as_str()
                .and_then(|s| s.parse::<u64>().ok())
            else {
                continue;
            };
            if w.inside(w.epoch + Duration::from_micros(sent_us)) {
                w.received
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                w.latencies
                    .lock()
                    .unwrap()
                    .push((now - sent_us) as f64 / 1000.0);
            }
        }
    });
    tx
}

/// Both sending halves of a room, and each one's peer id (Alcove) or a placeholder.
struct Room {
    a: Sender,
    b: Sender,
    a_id: String,
    b_id: String,
}

async fn bare_rooms(srv: &ServerChild, n: usize, w: &Arc<Window>) -> Vec<Room> {
    let url = format!("ws://{}/", srv.addr);
    let mut rooms = Vec::with_capacity(n);
    for i in 0..n {
        let mut a = connect(&url, "http://bench").await;
        let mut b = connect(&url, "http://bench").await;
        hello(&mut a, &format!("{i}:0")).await;
        hello(&mut b, &format!("{i}:1")).await;
        rooms.push(Room {
            a: reader(a, w.clone()),
            b: reader(b, w.clone()),
            a_id: "peer".into(),
            b_id: "peer".into(),
        });
    }
    rooms
}

/// Join tokens for both people of every pair (asked for through the API).
async fn tokens(srv: &ServerChild, ps: &[Pair]) -> Vec<(String, String)> {
    let http = reqwest::Client::new();
    let base = srv.base();
    futures_util::stream::iter(ps.iter())
        .map(|p| {
            let (http, base) = (http.clone(), base.clone());
            async move {
                (
                    join_token(&http, &base, &p.therapist, p.appointment).await,
                    join_token(&http, &base, &p.client, p.appointment).await,
                )
            }
        })
        .buffered(16)
        .collect()
        .await
}

async fn alcove_rooms(
    srv: &ServerChild,
    who: &Identity,
    ps: &[Pair],
    w: &Arc<Window>,
) -> Vec<Room> {
    let toks = tokens(srv, ps).await;
    let url = srv.ws();
    let mut rooms = Vec::with_capacity(ps.len());
    for (tt, ct) in toks {
        let mut a = connect(&url, &who.issuer).await;
        let mut b = connect(&url, &who.issuer).await;
        let aw = hello(&mut a, &tt).await;
        let bw = hello(&mut b, &ct).await;
        let b_id = bw["participant_id"].as_str().unwrap().to_owned();
        wait_type(&mut a, "lobby").await;
        a.send(Message::Text(
            json!({"type": "admit", "participant_id": b_id})
                .to_string()
                .into(),
        ))
        .await
        .unwrap();
        wait_type(&mut b, "admitted").await;
        rooms.push(Room {
            a: reader(a, w.clone()),
            b: reader(b, w.clone()),
            a_id: aw["participant_id"].as_str().unwrap().to_owned(),
            b_id,
        });
    }
    rooms
}

/// Paced candidates, 2 a second each way per room, for `seconds` after a warm-up.
async fn relay_load(
    srv: &ServerChild,
    rooms: Vec<Room>,
    w: Arc<Window>,
    seconds: u64,
    rss_before: u64,
) -> RelayRun {
    let conns = rooms.len() * 2;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_after = srv.rss_kib();
    let start = Instant::now();
    let from = start + Duration::from_secs(2);
    let until = from + Duration::from_secs(seconds);
    let _ = w.span.set((from, until));
    let mut tasks = Vec::new();
    for (i, r) in rooms.into_iter().enumerate() {
        for (j, (mut tx, to)) in [(r.a, r.b_id.clone()), (r.b, r.a_id.clone())]
            .into_iter()
            .enumerate()
        {
            let phase = Duration::from_micros(((i * 2 + j) as u64 * 7919) % 500_000);
            let w = w.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(phase).await;
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0;
                while Instant::now() < until {
                    tick.tick().await;
                    let now = w.epoch.elapsed().as_micros() as u64;
                    if tx
                        .send(Message::Text(candidate(&to, now, seq).into()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                    if w.inside(w.epoch + Duration::from_micros(now)) {
                        w.sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    seq += 1;
                }
                tx
            }));
        }
    }
    tokio::time::sleep_until(from.into()).await;
    let cpu0 = srv.cpu_seconds();
    tokio::time::sleep_until(until.into()).await;
    let cpu1 = srv.cpu_seconds();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut senders = Vec::new();
    for t in tasks {
        if let Ok(tx) = t.await {
            senders.push(tx);
        }
    }
    let mut latencies = std::mem::take(&mut *w.latencies.lock().unwrap());
    latencies.sort_by(f64::total_cmp);
    let received = w.received.load(std::sync::atomic::Ordering::Relaxed);
    drop(senders);
    RelayRun {
        kib_per_conn: rss_after.saturating_sub(rss_before) as f64 / conns as f64,
        cpu_us_per_msg: (cpu1 - cpu0) * 1e6 / received.max(1) as f64,
        latencies_ms: latencies,
        sent: w.sent.load(std::sync::atomic::Ordering::Relaxed),
        received,
    }
}

async fn relay(n_rooms: usize, seconds: u64) {
    raise_nofile();
    println!(
        "\n## relay: {n_rooms} rooms, 4 candidates a second per pair (2 each way), {seconds} s measured\n"
    );
    // The floor first.
    let bare = ServerChild::bare();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = bare.rss_kib();
    let w = Window::new();
    let rooms = bare_rooms(&bare, n_rooms, &w).await;
    let floor = relay_load(&bare, rooms, w, seconds, before).await;
    drop(bare);
    // Alcove.
    let who = Identity::new();
    let (srv, db) = alcove(&who, &[]).await;
    let ps = pairs(&srv.base(), &db, &who, n_rooms, 16).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = srv.rss_kib();
    let w = Window::new();
    let rooms = alcove_rooms(&srv, &who, &ps, &w).await;
    eprintln!("Alcove server pid {}: measuring", srv.pid());
    let ours = relay_load(&srv, rooms, w, seconds, before).await;
    println!(
        "| server | KiB per connection | CPU µs per relayed message | p50 ms | p95 ms | p99 ms | max ms | received of sent |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for (name, r) in [("bare relay (floor)", &floor), ("Alcove", &ours)] {
        let l = &r.latencies_ms;
        println!(
            "| {name} | {:.1} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} of {} |",
            r.kib_per_conn,
            r.cpu_us_per_msg,
            percentile(l, 0.5),
            percentile(l, 0.95),
            percentile(l, 0.99),
            percentile(l, 1.0),
            r.received,
            r.sent
        );
    }
    println!(
        "| Alcove ÷ floor | {} | **{}** | {} | {} | **{}** | {} | |",
        ratio(ours.kib_per_conn, floor.kib_per_conn),
        ratio(ours.cpu_us_per_msg, floor.cpu_us_per_msg),
        ratio(
            percentile(&ours.latencies_ms, 0.5),
            percentile(&floor.latencies_ms, 0.5)
        ),
        ratio(
            percentile(&ours.latencies_ms, 0.95),
            percentile(&floor.latencies_ms, 0.95)
        ),
        ratio(
            percentile(&ours.latencies_ms, 0.99),
            percentile(&floor.latencies_ms, 0.99)
        ),
        ratio(
            percentile(&ours.latencies_ms, 1.0),
            percentile(&floor.latencies_ms, 1.0)
        ),
    );
    assert!(
        ours.received > 0 && floor.received > 0,
        "messages were relayed"
    );
}

// ---- flood -----------------------------------------------------------------------------------

/// What the flooding client did.
#[derive(Default)]
struct FloodStats {
    connections: u64,
    frames: u64,
    bytes: u64,
    rate_limited: u64,
    refused_joins: u64,
}

/// One client of `pair` floods its room until `stop`: join (a new token each time), then
/// send the largest candidates allowed to its therapist as fast as the socket takes them,
/// until the server cuts it off (4008), and again every 2 s (the most the server's join
/// limit allows, kept up). Its therapist reads everything.
async fn flood_loop(
    srv_base: String,
    ws_url: String,
    origin: String,
    pair: Pair,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> FloodStats {
    use std::sync::atomic::Ordering::Relaxed;
    let http = reqwest::Client::new();
    // Clients enter without waiting: each rejoin is in the call at once.
    call(
        &http,
        reqwest::Method::PUT,
        format!(
            "{srv_base}/api/v1/appointments/{}/auto-admit",
            pair.appointment
        ),
        Some(&pair.therapist.token),
        Some(json!({"auto_admit": true})),
    )
    .await;
    let mut th = connect(&ws_url, &origin).await;
    let tw = hello(
        &mut th,
        &join_token(&http, &srv_base, &pair.therapist, pair.appointment).await,
    )
    .await;
    let to = tw["participant_id"].as_str().unwrap().to_owned();
    let drain = tokio::spawn(async move { while next_json(&mut th).await.is_some() {} });
    let big = |seq: u64| {
        // A candidate line near the 1 KiB limit: the most a valid signal carries.
        json!({"type": "signal", "to": to, "candidate": {
            "candidate": format!("candidate:{seq} 1 udp 1677729535 203.0.113.7 40000 typ srflx raddr 0.0.0.0 rport 0 generation 0 {}", "x".repeat(880)),
            "sdpMid": "0", "sdpMLineIndex": 0}})
        .to_string()
    };
    let mut st = FloodStats::default();
    // From the start of the measured window (relay_load: half a second, then a 2 s
    // warm-up), a rejoin every 2 s: the server's pace of 30 joins a minute, spread over the
    // window, the worst a single account can keep up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let mut next_join = tokio::time::Instant::now();
    while !stop.load(Relaxed) {
        tokio::time::sleep_until(next_join).await;
        next_join += Duration::from_secs(2);
        // A new join token for each rejoin: held to the server's pace (429 past it).
        let r = http
            .post(format!(
                "{srv_base}/api/v1/appointments/{}/join",
                pair.appointment
            ))
            .bearer_auth(&pair.client.token)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
            st.refused_joins += 1;
            continue;
        }
        let token = r.json::<Value>().await.unwrap()["token"]
            .as_str()
            .unwrap()
            .to_owned();
        let mut ws = connect(&ws_url, &origin).await;
        ws.send(Message::Text(
            json!({"type": "hello", "token": token}).to_string().into(),
        ))
        .await
        .unwrap();
        st.connections += 1;
        let (mut tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut cut = false;
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Close(Some(f)) = &m {
                    cut = u16::from(f.code) == 4008;
                    break;
                }
            }
            cut
        });
        let mut seq = 0;
        while !stop.load(Relaxed) {
            let m = big(seq);
            st.bytes += m.len() as u64;
            if tx.send(Message::Text(m.into())).await.is_err() {
                break;
            }
            st.frames += 1;
            seq += 1;
        }
        drop(tx);
        if let Ok(Ok(true)) = tokio::time::timeout(Duration::from_secs(2), reader).await {
            st.rate_limited += 1;
        }
    }
    drain.abort();
    st
}

async fn flood(n_rooms: usize, seconds: u64) {
    use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
    raise_nofile();
    println!(
        "\n## flood: {n_rooms} rooms at 4 candidates a second per pair, {seconds} s measured; quiet, then while one client in a room of its own floods\n"
    );
    let mut runs = Vec::new();
    for flooding in [false, true] {
        let who = Identity::new();
        let (srv, db) = alcove(&who, &[]).await;
        let mut ps = pairs(&srv.base(), &db, &who, n_rooms + 1, 16).await;
        let flood_pair = ps.pop().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let before = srv.rss_kib();
        let w = Window::new();
        let rooms = alcove_rooms(&srv, &who, &ps, &w).await;
        let stop = Arc::new(AtomicBool::new(false));
        let flooder = flooding.then(|| {
            tokio::spawn(flood_loop(
                srv.base(),
                srv.ws(),
                who.issuer.clone(),
                flood_pair,
                stop.clone(),
            ))
        });
        let run = relay_load(&srv, rooms, w, seconds, before).await;
        stop.store(true, Relaxed);
        let st = match flooder {
            Some(f) => f.await.unwrap(),
            None => FloodStats::default(),
        };
        runs.push((flooding, run, st));
        drop(srv);
        db.close().await;
    }
    println!(
        "| run | others' p50 ms | p95 ms | p99 ms | max ms | received of sent | flood frames | flood MiB | flood connections (cut off with 4008) | joins refused (429) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (flooding, r, st) in &runs {
        let l = &r.latencies_ms;
        println!(
            "| {} | {:.2} | {:.2} | {:.2} | {:.2} | {} of {} | {} | {:.1} | {} ({}) | {} |",
            if *flooding {
                "one client flooding"
            } else {
                "quiet"
            },
            percentile(l, 0.5),
            percentile(l, 0.95),
            percentile(l, 0.99),
            percentile(l, 1.0),
            r.received,
            r.sent,
            st.frames,
            st.bytes as f64 / (1024.0 * 1024.0),
            st.connections,
            st.rate_limited,
            st.refused_joins,
        );
    }
    let (q, f) = (&runs[0].1.latencies_ms, &runs[1].1.latencies_ms);
    println!(
        "| flooding ÷ quiet | {} | {} | **{}** | {} | | | | | |",
        ratio(percentile(f, 0.5), percentile(q, 0.5)),
        ratio(percentile(f, 0.95), percentile(q, 0.95)),
        ratio(percentile(f, 0.99), percentile(q, 0.99)),
        ratio(percentile(f, 1.0), percentile(q, 1.0)),
    );
    assert!(
        runs[1].2.frames > 0 && runs[1].1.received > 0,
        "the flood ran and the others were relayed"
    );
}

// ---- joins -----------------------------------------------------------------------------------

/// Everyone connects, then everyone says hello at once: per-connection hello-to-welcome
/// latency, and the rate over the whole storm.
async fn storm(sockets: Vec<(alcove_bench::Ws, String)>) -> (Duration, Vec<f64>) {
    let gate = Arc::new(tokio::sync::Barrier::new(sockets.len() + 1));
    let mut tasks = Vec::new();
    for (mut ws, token) in sockets {
        let gate = gate.clone();
        tasks.push(tokio::spawn(async move {
            gate.wait().await;
            let t = Instant::now();
            hello(&mut ws, &token).await;
            let took = t.elapsed();
            (ws, took)
        }));
    }
    gate.wait().await;
    let started = Instant::now();
    let mut held = Vec::new();
    let mut lat = Vec::new();
    for t in tasks {
        let (ws, took) = t.await.unwrap();
        lat.push(took.as_secs_f64() * 1000.0);
        held.push(ws);
    }
    let all = started.elapsed();
    lat.sort_by(f64::total_cmp);
    drop(held);
    (all, lat)
}

async fn joins(n: usize) {
    raise_nofile();
    let rooms = n.div_ceil(2);
    println!("\n## joins: {n} connections ({rooms} rooms) say hello at once\n");
    let bare = ServerChild::bare();
    let url = format!("ws://{}/", bare.addr);
    let mut socks = Vec::new();
    for i in 0..n {
        socks.push((
            connect(&url, "http://bench").await,
            format!("{}:{}", i / 2, i % 2),
        ));
    }
    let (bare_all, bare_lat) = storm(socks).await;
    drop(bare);
    let who = Identity::new();
    // Every socket is opened before the storm: give them time to say hello.
    let (srv, db) = alcove(&who, &[("ALCOVE_SIGNAL_HELLO_TIMEOUT", "60s")]).await;
    let ps = pairs(&srv.base(), &db, &who, rooms, 16).await;
    let toks = tokens(&srv, &ps).await;
    let mut socks = Vec::new();
    for (t, c) in toks.into_iter().take(n.div_ceil(2)) {
        socks.push((connect(&srv.ws(), &who.issuer).await, t));
        socks.push((connect(&srv.ws(), &who.issuer).await, c));
    }
    socks.truncate(n);
    eprintln!("Alcove server pid {}: storm", srv.pid());
    if let Ok(wait) = std::env::var("ALCOVE_BENCH_PAUSE") {
        tokio::time::sleep(Duration::from_secs(wait.parse().unwrap_or(0))).await;
    }
    let (ours_all, ours_lat) = storm(socks).await;
    println!("| server | all {n} welcomed in | joins per second | p50 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, all, lat) in [
        ("bare relay (floor)", bare_all, &bare_lat),
        ("Alcove", ours_all, &ours_lat),
    ] {
        println!(
            "| {name} | {:.2} s | {:.0} | {:.1} | {:.1} | {:.1} |",
            all.as_secs_f64(),
            n as f64 / all.as_secs_f64(),
            percentile(lat, 0.5),
            percentile(lat, 0.99),
            percentile(lat, 1.0)
        );
    }
    println!(
        "| Alcove ÷ floor | {} | | | | |",
        ratio(ours_all.as_secs_f64(), bare_all.as_secs_f64())
    );
}

// ---- connections ----------------------------------------------------------------------------

async fn connections(n: usize) {
    let limit = raise_nofile();
    let rooms = n.div_ceil(2);
    println!(
        "\n## connections: {n} idle connections in {rooms} rooms (open-files limit {limit})\n"
    );
    let who = Identity::new();
    let (srv, db) = alcove(&who, &[]).await;
    let ps = pairs(&srv.base(), &db, &who, rooms, 16).await;
    let toks = tokens(&srv, &ps).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = srv.rss_kib();
    let mut held = Vec::with_capacity(n);
    let started = Instant::now();
    for (t, c) in toks {
        for tok in [t, c] {
            if held.len() == n {
                break;
            }
            let mut ws = connect(&srv.ws(), &who.issuer).await;
            hello(&mut ws, &tok).await;
            // Answer the server's pings from now on.
            held.push(tokio::spawn(async move {
                while next_json(&mut ws).await.is_some() {}
            }));
        }
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = srv.rss_kib();
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!(
        "| connections | server RSS before | after | KiB per connection (room state included) | opened in |"
    );
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.1} MiB | {:.1} MiB | **{per:.2}** | {:.1} s |",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        took.as_secs_f64()
    );
    for h in held {
        h.abort();
    }
}

// ---- sign-ins -----------------------------------------------------------------------------------

async fn signins(n: usize) {
    println!("\n## signins: resident memory after {n} sign-ins (Argon2id m=19 MiB, t=2)\n");
    let who = Identity::new();
    let (srv, db) = alcove(&who, &[]).await;
    let ps = people(&db, &who, Role::Client, n.min(20), "signin").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle = srv.rss_kib();
    let http = reqwest::Client::new();
    let base = srv.base();
    let started = Instant::now();
    let mut peak = idle;
    // Four at a time, as a morning's sign-ins come: each the real password check.
    let mut done = 0;
    while done < n {
        let batch: Vec<_> = (0..4.min(n - done))
            .map(|k| {
                let p = ps[(done + k) % ps.len()].clone();
                let (http, base) = (http.clone(), base.clone());
                async move {
                    let r = http
                        .post(format!("{base}/api/v1/auth/login"))
                        .json(&json!({"email": p.email, "password": alcove_bench::PASSWORD}))
                        .send()
                        .await
                        .unwrap();
                    r.status().as_u16()
                }
            })
            .collect();
        for s in futures_util::future::join_all(batch).await {
            assert!(s == 200 || s == 503, "sign-in answered {s}");
        }
        done += 4;
        peak = peak.max(srv.rss_kib());
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = srv.rss_kib();
    println!("| sign-ins | idle RSS | peak during | RSS after | per sign-in |");
    println!("|---:|---:|---:|---:|---:|");
    println!(
        "| {n} | {:.1} MiB | {:.1} MiB | **{:.1} MiB** | {:.0} ms |",
        idle as f64 / 1024.0,
        peak as f64 / 1024.0,
        after as f64 / 1024.0,
        took.as_secs_f64() * 1000.0 / n as f64
    );
}

// ---- start ----------------------------------------------------------------------------------

async fn start(runs: usize) {
    println!("\n## start: process start to the first /readyz 200\n");
    println!("| database | first start (creates and migrates) | later starts p50 | max |");
    println!("|---|---:|---:|---:|");
    // PostgreSQL as it comes (`sslmode=prefer`: TLS when the server offers it, as Debian's
    // does), and without TLS (a database on the same host).
    for (pg, query) in [(false, ""), (true, ""), (true, "?sslmode=disable")] {
        let pgdb = if pg { Some(PgDb::new().await) } else { None };
        let dir = tempfile::tempdir().unwrap();
        let mut times = Vec::new();
        for _ in 0..runs.max(2) {
            let mut env: Vec<(&str, String)> = vec![
                (
                    "ALCOVE_DATA_DIR",
                    dir.path().join("data").display().to_string(),
                ),
                ("RUST_LOG", "warn".into()),
            ];
            if let Some(p) = &pgdb {
                env.push(("DATABASE_URL", format!("{}{query}", p.url)));
            }
            let port = alcove_bench::free_port();
            env.push(("ALCOVE_LISTEN", format!("127.0.0.1:{port}")));
            let t = Instant::now();
            let mut child = match alcove_bench::alcove_binary() {
                Some(bin) => std::process::Command::new(bin),
                None => {
                    let mut c = std::process::Command::new(std::env::current_exe().unwrap());
                    c.arg("__serve");
                    c
                }
            }
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
            let http = reqwest::Client::new();
            loop {
                if let Ok(r) = http
                    .get(format!("http://127.0.0.1:{port}/readyz"))
                    .send()
                    .await
                    && r.status() == 200
                {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            let _ = child.kill();
            let _ = child.wait();
        }
        let first = times.remove(0);
        times.sort_by(f64::total_cmp);
        println!(
            "| {} | {first:.0} ms | **{:.0} ms** | {:.0} ms |",
            match (pg, query) {
                (false, _) => "SQLite",
                (true, "") => "PostgreSQL",
                (true, _) => "PostgreSQL, sslmode=disable",
            },
            percentile(&times, 0.5),
            percentile(&times, 1.0)
        );
        if let Some(p) = pgdb {
            p.drop_db().await;
        }
    }
}

// ---- api ------------------------------------------------------------------------------------

async fn api(levels: &[usize], requests: usize) {
    println!(
        "\n## api: booking and listing, {requests} requests per level, each client its own therapist\n"
    );
    println!(
        "| database | concurrent clients | booking p50 ms | booking p99 ms | listing p50 ms | listing p99 ms | requests per second | server CPU ms per request |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for pg in [false, true] {
        let pgdb = if pg { Some(PgDb::new().await) } else { None };
        let who = Identity::new();
        let extra: Vec<(&str, &str)> = pgdb
            .as_ref()
            .map(|p| vec![("DATABASE_URL", p.url.as_str())])
            .unwrap_or_default();
        let (srv, db) = alcove(&who, &extra).await;
        let base = srv.base();
        let http = reqwest::Client::new();
        for &level in levels {
            // Each client books with a therapist of their own (no two clients compete for
            // a slot), at slots a day or more ahead.
            let ts = people(&db, &who, Role::Therapist, level, "t").await;
            let cs = people(&db, &who, Role::Client, level, "c").await;
            for t in &ts {
                call(&http, reqwest::Method::PUT, format!("{base}/api/v1/therapists/me"), Some(&t.token),
                    Some(json!({"display_name": "Bench Therapist", "bio": "", "qualifications": [], "specialisations": ["anxiety"],
                        "modalities": ["integrative"], "languages": ["en"], "time_zone": "UTC", "offers_free_consultation": false}))).await;
                let weekly: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                    .iter()
                    .map(|d| json!({"weekday": d, "start": "00:00", "end": "24:00"}))
                    .collect();
                call(&http, reqwest::Method::PUT, format!("{base}/api/v1/therapists/me/availability"), Some(&t.token),
                    Some(json!({"time_zone": "UTC", "weekly": weekly, "slot_step_minutes": 5, "buffer_minutes": 0}))).await;
            }
            let per_client = requests.div_ceil(level);
            // Slots from the day after tomorrow 08:00 UTC (past the notice a client must give), twelve a day on the hour (never across
            // midnight, where one day's hours end).
            let tomorrow = jiff::Timestamp::now()
                .to_zoned(jiff::tz::TimeZone::UTC)
                .date()
                .tomorrow()
                .and_then(|d| d.tomorrow())
                .unwrap();
            let first = tomorrow
                .at(8, 0, 0, 0)
                .to_zoned(jiff::tz::TimeZone::UTC)
                .unwrap()
                .timestamp();
            let (cpu0, wall0) = (srv.cpu_seconds(), Instant::now());
            let tasks: Vec<_> = ts
                .iter()
                .zip(&cs)
                .enumerate()
                .map(|(k, (t, c))| {
                    let (http, base, t, c) = (http.clone(), base.clone(), t.clone(), c.clone());
                    tokio::spawn(async move {
                        let mut book = Vec::new();
                        let mut list = Vec::new();
                        for i in 0..per_client {
                            let _ = k;
                            let start = first
                                + jiff::SignedDuration::from_hours(24 * (i as i64 / 12) + (i as i64 % 12));
                            let t0 = Instant::now();
                            let r = http
                                .post(format!("{base}/api/v1/appointments"))
                                .bearer_auth(&c.token)
                                .json(&json!({"therapist_id": t.id, "starts_at": start.to_string(), "kind": "session"}))
                                .send()
                                .await
                                .unwrap();
                            let s = r.status();
                            let text = r.text().await.unwrap();
                            assert!(s.as_u16() == 201, "booking: {s} {text}");
                            book.push(t0.elapsed().as_secs_f64() * 1000.0);
                            let t0 = Instant::now();
                            let r = http
                                .get(format!("{base}/api/v1/appointments"))
                                .bearer_auth(&c.token)
                                .send()
                                .await
                                .unwrap();
                            assert!(r.status().is_success());
                            let _ = r.bytes().await;
                            list.push(t0.elapsed().as_secs_f64() * 1000.0);
                        }
                        (book, list)
                    })
                })
                .collect();
            let mut book = Vec::new();
            let mut list = Vec::new();
            for t in tasks {
                let (b, l) = t.await.unwrap();
                book.extend(b);
                list.extend(l);
            }
            let (cpu, wall) = (srv.cpu_seconds() - cpu0, wall0.elapsed().as_secs_f64());
            let done = (book.len() + list.len()) as f64;
            book.sort_by(f64::total_cmp);
            list.sort_by(f64::total_cmp);
            println!(
                "| {} | {level} | {:.1} | **{:.1}** | {:.1} | {:.1} | {:.0} | {:.2} |",
                if pg { "PostgreSQL" } else { "SQLite" },
                percentile(&book, 0.5),
                percentile(&book, 0.99),
                percentile(&list, 0.5),
                percentile(&list, 0.99),
                done / wall,
                cpu * 1000.0 / done
            );
        }
        drop(srv);
        db.close().await;
        if let Some(p) = pgdb {
            p.drop_db().await;
        }
    }
}

// ---- calls ------------------------------------------------------------------------------------

async fn calls(n: usize, ice: alcove_bench::calls::Ice) {
    println!(
        "\n## calls: {n} webrtc-rs calls on loopback, one at a time: hello to a data channel open at both ends\n"
    );
    let bare = ServerChild::bare();
    let url = format!("ws://{}/", bare.addr);
    let mut floor = Vec::new();
    for i in 0..n {
        let t = alcove_bench::calls::one_call(
            &url,
            "http://bench",
            (format!("{i}:0"), format!("{i}:1")),
            false,
            ice,
        )
        .await
        .unwrap_or_else(|e| panic!("a call through the bare relay: {e}"));
        floor.push(t);
    }
    drop(bare);
    let who = Identity::new();
    let (srv, db) = alcove(&who, &[]).await;
    let ps = pairs(&srv.base(), &db, &who, n, 16).await;
    let toks = tokens(&srv, &ps).await;
    let mut ours = Vec::new();
    for t in toks {
        let timing = alcove_bench::calls::one_call(&srv.ws(), &who.issuer, t, true, ice)
            .await
            .unwrap_or_else(|e| panic!("a call through Alcove: {e}"));
        ours.push(timing);
    }
    let ms = |v: &[alcove_bench::calls::CallTiming],
              f: fn(&alcove_bench::calls::CallTiming) -> Duration| {
        let mut x: Vec<f64> = v.iter().map(|t| f(t).as_secs_f64() * 1000.0).collect();
        x.sort_by(f64::total_cmp);
        x
    };
    let cols: [fn(&alcove_bench::calls::CallTiming) -> Duration; 3] =
        [|t| t.signalled, |t| t.connected, |t| t.open];
    let f: Vec<Vec<f64>> = cols.iter().map(|c| ms(&floor, *c)).collect();
    let o: Vec<Vec<f64>> = cols.iter().map(|c| ms(&ours, *c)).collect();
    println!(
        "| server | calls | both in p50 ms | connected (ICE + DTLS) p50 ms | data channel open p50 ms | p95 ms | max ms |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (name, v) in [("bare relay (floor)", &f), ("Alcove", &o)] {
        println!(
            "| {name} | {} | {:.1} | {:.1} | **{:.1}** | {:.1} | {:.1} |",
            v[2].len(),
            percentile(&v[0], 0.5),
            percentile(&v[1], 0.5),
            percentile(&v[2], 0.5),
            percentile(&v[2], 0.95),
            percentile(&v[2], 1.0)
        );
    }
    println!(
        "| Alcove ÷ floor | | {} | {} | {} | {} | |",
        ratio(percentile(&o[0], 0.5), percentile(&f[0], 0.5)),
        ratio(percentile(&o[1], 0.5), percentile(&f[1], 0.5)),
        ratio(percentile(&o[2], 0.5), percentile(&f[2], 0.5)),
        ratio(percentile(&o[2], 0.95), percentile(&f[2], 0.95)),
    );
    drop(srv);
    db.close().await;
}

#[tokio::main]
async fn main() {
    if alcove_bench::child_main().await {
        return;
    }
    let cli = Cli::parse();
    println!(
        "alcove-bench on {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    match cli.mode {
        Mode::Relay { rooms, seconds } => relay(rooms, seconds).await,
        Mode::Flood { rooms, seconds } => flood(rooms, seconds).await,
        Mode::Joins { n } => joins(n).await,
        Mode::Connections { n } => connections(n).await,
        Mode::Signins { n } => signins(n).await,
        Mode::Start { runs } => start(runs).await,
        Mode::Api { levels, requests } => api(&levels, requests).await,
        Mode::Calls { pairs, gathered } => {
            calls(
                pairs,
                if gathered {
                    alcove_bench::calls::Ice::Gathered
                } else {
                    alcove_bench::calls::Ice::Trickle
                },
            )
            .await
        }
        Mode::All { smoke } => {
            if smoke {
                relay(10, 2).await;
                flood(10, 2).await;
                joins(20).await;
                connections(20).await;
                signins(4).await;
                start(2).await;
                api(&[1, 4], 8).await;
                calls(3, alcove_bench::calls::Ice::Trickle).await;
            } else {
                relay(2000, 20).await;
                flood(1000, 20).await;
                joins(4000).await;
                connections(18000).await;
                signins(100).await;
                start(5).await;
                api(&[1, 10, 50, 200], 400).await;
                calls(100, alcove_bench::calls::Ice::Trickle).await;
            }
        }
    }
}

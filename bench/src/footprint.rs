//! `footprint`: server memory per idle signalling connection.
//!
//! Runs two servers, each as a child process so that its memory is its own, and holds N
//! idle WebSocket connections to each from this process:
//!
//! - `alcove`: Alcove's real path (`alcove::http::signal::upgrade` into the signalling hub),
//!   each connection a participant that said hello and sits in a room of its own: room state
//!   included;
//! - `default`: a bare axum WebSocket with tungstenite's default buffers, echoing;
//! - `small`: the same bare WebSocket with Alcove's buffer sizes: the floor that the HTTP and
//!   WebSocket stack costs before any signalling state.
//!
//! It reports each server's resident memory growth per connection, and their ratio (the
//! machine is shared and noisy; the ratio, taken in one run, is the figure to compare).
//!
//! Usage: `cargo run --release -p alcove-bench --bin footprint -- [connections]`

use alcove_signaling::{
    ClientMessage, IceConfig, IceServer, IceTransportPolicy, JoinGrant, JoinRefusal, JoinVerifier,
    NullSink, PeerRole, SignalingConfig, hub::Hub,
};
use axum::{
    Router,
    extract::ws::{Message, WebSocketUpgrade},
    routing::any,
};
use futures_util::{SinkExt as _, StreamExt as _};
use std::{
    io::{BufRead as _, Write as _},
    process::{Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tokio_tungstenite::tungstenite;
use uuid::Uuid;

/// Accepts `bench:<room>:<seat>`: seat 0 is the room's therapist, seat 1 a client (who
/// waits in the waiting room).
struct BenchVerifier;

/// What a production grant carries: a STUN server and TURN credentials for two
/// transports, expiring after the default hour (so each connection arms its refresh timer).
fn ice() -> IceConfig {
    let expiry = jiff::Timestamp::now().as_second() + 3600;
    IceConfig {
        ice_servers: vec![
            IceServer {
                urls: vec!["stun:turn.example.org:3478".into()],
                username: None,
                credential: None,
            },
            IceServer {
                urls: vec![
                    "turn:turn.example.org:3478?transport=udp".into(),
                    "turns:turn.example.org:5349?transport=tcp".into(),
                ],
                username: Some(format!("{expiry}:0123456789abcdef")),
                credential: Some("c2VjcmV0LWNyZWRlbnRpYWwtMjhj".into()),
            },
        ],
        ice_transport_policy: IceTransportPolicy::All,
        expires_at: Some(expiry),
    }
}

#[async_trait::async_trait]
impl JoinVerifier for BenchVerifier {
    async fn verify(&self, token: &str) -> Result<JoinGrant, JoinRefusal> {
        let bad = || JoinRefusal::InvalidToken("not a bench token".into());
        let (room, seat) = token
            .strip_prefix("bench:")
            .and_then(|r| r.split_once(':'))
            .ok_or_else(bad)?;
        let room: u128 = room.parse().map_err(|_| bad())?;
        let seat: u128 = seat.parse().map_err(|_| bad())?;
        Ok(JoinGrant {
            appointment_id: Uuid::from_u128(room + 1),
            user_id: Uuid::from_u128((room + 1) << 8 | seat),
            role: if seat == 0 {
                PeerRole::Therapist
            } else {
                PeerRole::Client
            },
            display_name: format!("Participant {room}.{seat}"),
            closes_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(2),
            auto_admit: false,
            ice: ice(),
            sign_in: None,
            network: None,
        })
    }

    async fn refresh_ice(&self, _user_id: Uuid) -> IceConfig {
        ice()
    }
}

/// A server child: prints `ready <addr>`, then answers `rss` lines on stdin.
async fn serve(kind: &str) {
    let small = kind == "small";
    let app = match kind {
        "alcove" => {
            let hub = Hub::new(
                SignalingConfig::default(),
                Arc::new(BenchVerifier),
                Arc::new(NullSink),
            );
            Router::new().route(
                "/ws",
                any(move |ws: WebSocketUpgrade| {
                    let hub = hub.clone();
                    async move { alcove::http::signal::upgrade(hub, ws) }
                }),
            )
        }
        _ => Router::new().route(
            "/ws",
            any(move |ws: WebSocketUpgrade| async move {
                let ws = if small {
                    ws.read_buffer_size(1024)
                        .write_buffer_size(0)
                        .max_write_buffer_size(256 * 1024)
                        .max_message_size(64 * 1024)
                        .max_frame_size(64 * 1024)
                } else {
                    ws
                };
                ws.on_upgrade(|mut s| async move {
                    while let Some(Ok(m)) = s.recv().await {
                        if let Message::Text(t) = m
                            && s.send(Message::Text(t)).await.is_err()
                        {
                            break;
                        }
                    }
                })
            }),
        ),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    println!("ready {addr}");
    let stdin = std::io::stdin();
    let mut line = String::new();
    loop {
        line.clear();
        if stdin.lock().read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        // Let the runtime settle before reading.
        tokio::time::sleep(Duration::from_millis(300)).await;
        println!("rss {}", alcove_bench::rss_kib(std::process::id()));
        std::io::stdout().flush().unwrap();
    }
}

/// Open `n` connections to a server of `kind`, `per_room` to a room (Alcove), and return its
/// growth per connection (KiB).
async fn measure(kind: &str, n: usize, per_room: usize) -> f64 {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["serve", kind])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    let addr = line.trim().strip_prefix("ready ").unwrap().to_owned();
    let mut ask = |stdin: &mut std::process::ChildStdin| {
        writeln!(stdin, "rss").unwrap();
        let mut l = String::new();
        out.read_line(&mut l).unwrap();
        l.trim()
            .strip_prefix("rss ")
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    // Warm up with a few connections so one-time costs are not counted per connection.
    let mut held = Vec::new();
    for i in 0..20 {
        held.push(connect(&addr, kind, 1_000_000 + i / per_room, i % per_room).await);
    }
    let before = ask(&mut stdin);
    for i in 0..n {
        held.push(connect(&addr, kind, i / per_room, i % per_room).await);
    }
    let after = ask(&mut stdin);
    drop(held);
    drop(stdin);
    let _ = child.wait();
    (after.saturating_sub(before)) as f64 / n as f64
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One idle connection: for Alcove a participant that said hello and was welcomed.
async fn connect(addr: &str, kind: &str, room: usize, seat: usize) -> tokio::task::JoinHandle<()> {
    let (mut ws, _): (Ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("connects");
    if kind == "alcove" {
        let hello = ClientMessage::Hello {
            token: format!("bench:{room}:{seat}"),
            resume_token: None,
            reset: false,
        };
        ws.send(tungstenite::Message::text(
            serde_json::to_string(&hello).unwrap(),
        ))
        .await
        .unwrap();
        // welcome, then lobby (therapist) or waiting (client)
        for _ in 0..2 {
            ws.next().await.unwrap().unwrap();
        }
    } else {
        ws.send(tungstenite::Message::text("hello")).await.unwrap();
        ws.next().await.unwrap().unwrap();
    }
    // Keep reading (answers the server's pings) until dropped.
    tokio::spawn(async move { while let Some(Ok(_)) = ws.next().await {} })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve") {
        serve(args.get(2).map(String::as_str).unwrap_or("alcove")).await;
        return;
    }
    let n: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(2000);
    let default = measure("default", n, 1).await;
    let small = measure("small", n, 1).await;
    let alone = measure("alcove", n, 1).await;
    let pairs = measure("alcove", n, 2).await;
    println!("idle connections: {n}");
    println!("axum WebSocket, tungstenite defaults:        {default:6.1} KiB per connection");
    println!(
        "axum WebSocket, Alcove's buffer sizes:       {small:6.1} KiB per connection (the stack's floor)"
    );
    println!(
        "Alcove, one participant per room:            {alone:6.1} KiB per connection (ratio {:.3})",
        alone / default
    );
    println!(
        "Alcove, therapist + waiting client per room: {pairs:6.1} KiB per connection (ratio {:.3})",
        pairs / default
    );
}

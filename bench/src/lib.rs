//! What the benchmarks share: servers run as child processes (the real Alcove server, and a
//! bare WebSocket relay as the floor), accounts and join tokens made for real, WebSocket
//! load clients, and readings of a process's CPU time and memory from `/proc`.

pub mod calls;

use alcove::{
    auth::{Jwt, KeySet, Passwords, tokens::issue_access},
    domain::{DisplayName, Email, Role},
    store::{Creator, Db, NewUser, Ts},
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::{Value, json};
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};
use tokio_tungstenite::tungstenite::{self, Message};
use uuid::Uuid;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

// ---- /proc ------------------------------------------------------------------------------

/// A process's resident memory (KiB), from `/proc/<pid>/status`.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// A process's CPU time so far (user + system, seconds), from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// Raise this process's open-files limit to its hard limit (many connections).
pub fn raise_nofile() -> u64 {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(max) = lim.maximum {
        lim.current = Some(max);
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(0)
}

/// The value at quantile `q` (0–1) of sorted samples.
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q).round() as usize]
}

// ---- servers -------------------------------------------------------------------------------

/// A server under test, in a child process: this binary run again with `__serve` (the real
/// Alcove server, configured by the environment) or `__bare` (the floor).
pub struct ServerChild {
    pub child: Child,
    pub addr: String,
    _dir: Option<tempfile::TempDir>,
}

impl ServerChild {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn ws(&self) -> String {
        format!("ws://{}/api/v1/signal", self.addr)
    }

    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.pid())
    }

    fn spawn(mode: &str, env: &[(String, String)], dir: Option<tempfile::TempDir>) -> ServerChild {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg(mode)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .expect("the server child starts");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // Keep reading what it writes, so that a full pipe never stalls it; show the
        // first warnings and errors.
        std::thread::spawn(move || {
            let mut shown = 0;
            for l in out.lines().map_while(Result::ok) {
                if shown < 20 && (l.contains("WARN") || l.contains("ERROR")) {
                    eprintln!("server: {l}");
                    shown += 1;
                }
            }
        });
        let addr = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{mode} did not start: {line:?}"))
            .trim()
            .to_owned();
        ServerChild {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The floor: a bare tokio-tungstenite relay (see [`serve_bare`]).
    pub fn bare() -> ServerChild {
        Self::spawn("__bare", &[], None)
    }

    /// Alcove itself, with `env` on top of a data folder of its own, listening on a free
    /// loopback port: the `alcove` binary beside this one (`cargo build --release --bin
    /// alcove`), as operators run it, or, without it, this binary running the same server
    /// code.
    pub fn alcove(env: &[(&str, &str)]) -> ServerChild {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut all: Vec<(String, String)> = vec![
            ("ALCOVE_LISTEN".into(), format!("127.0.0.1:{port}")),
            (
                "ALCOVE_DATA_DIR".into(),
                dir.path().join("data").display().to_string(),
            ),
            ("RUST_LOG".into(), "warn".into()),
        ];
        all.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        match alcove_binary() {
            Some(bin) => {
                let child = Command::new(bin)
                    .envs(all.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .expect("alcove starts");
                let addr = format!("127.0.0.1:{port}");
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while std::net::TcpStream::connect(&addr).is_err() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "alcove did not listen"
                    );
                    std::thread::sleep(Duration::from_millis(2));
                }
                ServerChild {
                    child,
                    addr,
                    _dir: Some(dir),
                }
            }
            None => Self::spawn("__serve", &all, Some(dir)),
        }
    }

    /// The SQLite database of an Alcove child started without `DATABASE_URL`.
    pub fn sqlite_url(&self) -> Option<String> {
        self._dir.as_ref().map(|d| {
            format!(
                "sqlite://{}",
                d.path().join("data").join("alcove.db").display()
            )
        })
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `alcove` binary beside this one, if it was built.
pub fn alcove_binary() -> Option<std::path::PathBuf> {
    let bin = std::env::current_exe().ok()?.parent()?.join("alcove");
    bin.is_file().then_some(bin)
}

/// A free loopback port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The child's side of `__serve`: the Alcove server, as `alcove serve` runs it; prints
/// `ready <addr>` once it listens.
pub async fn serve_alcove() {
    use clap::Parser as _;
    let cli = alcove::cli::Cli::parse_from(["alcove"]);
    let config = alcove::config::Config::load(&cli.serve.common, Some(&cli.serve.serve))
        .expect("the server's configuration");
    let app = alcove::startup::Application::build(config)
        .await
        .expect("the server starts");
    println!("ready {}", app.local_addr());
    app.run_until(alcove::startup::shutdown_signal())
        .await
        .expect("the server runs");
}

/// The child's side of `__bare`: the floor a signalling server cannot go under on this
/// machine. A tokio-tungstenite server with a 1 KiB read buffer; a connection's first text
/// message names its room (`{"type":"hello","token":"<room>:<seat>"}`) and is answered
/// `{"type":"welcome"}`; every later text frame is forwarded as it is to the other
/// connection of the room. No authentication, no validation, no records.
pub async fn serve_bare() {
    type Peers =
        Arc<std::sync::Mutex<std::collections::HashMap<String, Vec<flume::Sender<String>>>>>;
    let rooms: Peers = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("ready {}", listener.local_addr().unwrap());
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .max_message_size(Some(64 * 1024));
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let rooms = rooms.clone();
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await
            else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let Some(Ok(Message::Text(hello))) = rx.next().await else {
                return;
            };
            let room = serde_json::from_str::<Value>(&hello)
                .ok()
                .and_then(|v| {
                    v["token"]
                        .as_str()
                        .map(|t| t.split(':').next().unwrap_or("").to_owned())
                })
                .unwrap_or_default();
            let (out_tx, out_rx) = flume::bounded::<String>(64);
            rooms
                .lock()
                .unwrap()
                .entry(room.clone())
                .or_default()
                .push(out_tx.clone());
            if tx
                .send(Message::Text(r#"{"type":"welcome"}"#.into()))
                .await
                .is_err()
            {
                return;
            }
            let writer = tokio::spawn(async move {
                while let Ok(t) = out_rx.recv_async().await {
                    if tx.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(m)) = rx.next().await {
                if let Message::Text(t) = m {
                    let peers: Vec<flume::Sender<String>> = rooms
                        .lock()
                        .unwrap()
                        .get(&room)
                        .map(|p| {
                            p.iter()
                                .filter(|s| !s.same_channel(&out_tx))
                                .cloned()
                                .collect()
                        })
                        .unwrap_or_default();
                    for p in peers {
                        let _ = p.try_send(t.to_string());
                    }
                }
            }
            writer.abort();
        });
    }
}

/// Run the child side when this process was started as a server child; true if it was.
pub async fn child_main() -> bool {
    match std::env::args().nth(1).as_deref() {
        Some("__serve") => {
            serve_alcove().await;
            true
        }
        Some("__bare") => {
            serve_bare().await;
            true
        }
        _ => false,
    }
}

// ---- PostgreSQL ------------------------------------------------------------------------------

/// The PostgreSQL server the benches make their databases on (`ALCOVE_BENCH_PG_URL`).
pub fn pg_admin() -> String {
    std::env::var("ALCOVE_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A PostgreSQL database of the bench's own, dropped at the end.
pub struct PgDb {
    pub url: String,
    name: String,
}

impl PgDb {
    pub async fn new() -> PgDb {
        let admin = pg_admin();
        let name = format!("alcove_bench_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is needed at {admin} (ALCOVE_BENCH_PG_URL): {e}")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
        PgDb {
            url: format!("{}/{name}", admin.rsplit_once('/').unwrap().0),
            name,
        }
    }

    pub async fn drop_db(self) {
        if let Ok(pool) = sqlx::PgPool::connect(&pg_admin()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            )))
            .execute(&pool)
            .await;
        }
    }
}

// ---- accounts, bookings, join tokens ---------------------------------------------------------

/// Signing keys and issuer shared with the server child, so that the bench can sign people
/// in without running Argon2 thousands of times (the password check is measured apart).
pub struct Identity {
    pub pem: String,
    pub issuer: String,
    jwt: Jwt,
}

impl Default for Identity {
    fn default() -> Self {
        Self::new()
    }
}

impl Identity {
    pub fn new() -> Identity {
        let pem = KeySet::generate_pem().unwrap();
        let issuer = "http://alcove.bench".to_owned();
        let jwt = Jwt::new(Arc::new(KeySet::from_pems(&pem).unwrap()), issuer.clone());
        Identity { pem, issuer, jwt }
    }

    /// What the server child needs to verify the bench's tokens.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ALCOVE_SIGNING_KEYS", self.pem.clone()),
            ("ALCOVE_PUBLIC_URL", self.issuer.clone()),
            ("ALCOVE_ALLOWED_ORIGINS", self.issuer.clone()),
            ("ALCOVE_LOGIN_ADDRESS_MAX", "10000000".into()),
            ("ALCOVE_REGISTER_ADDRESS_MAX", "10000000".into()),
            // Every connection of the load comes from 127.0.0.1.
            ("ALCOVE_MAX_CONNECTIONS_PER_ADDRESS", "0".into()),
        ]
    }
}

/// One person of the fixture, signed in.
#[derive(Clone)]
pub struct Person {
    pub id: Uuid,
    pub email: String,
    pub token: String,
}

/// Accounts made straight in the database (with one real Argon2 hash for all), each with a
/// real sign-in session and access token.
pub async fn people(db: &Db, who: &Identity, role: Role, n: usize, tag: &str) -> Vec<Person> {
    static HASH: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    let hash = HASH
        .get_or_init(|| async {
            Passwords::with_workers(1)
                .await
                .unwrap()
                .hash(&secrecy::SecretString::from(PASSWORD))
                .await
                .unwrap()
        })
        .await
        .clone();
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let email = format!("{tag}-{i}-{}@bench.example", Uuid::new_v4().simple());
        let user = db
            .create_user(
                NewUser {
                    email: Email::parse(&email).unwrap(),
                    display_name: DisplayName::parse(&format!("{tag} {i}")).unwrap(),
                    role,
                    password_hash: hash.clone(),
                },
                Creator::Cli,
            )
            .await
            .unwrap();
        let far = Ts::from(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24));
        let mut refresh = [0u8; 32];
        getrandom::fill(&mut refresh).unwrap();
        let sid = db
            .create_session(user.id, &refresh, far, far)
            .await
            .unwrap();
        let token =
            issue_access(&who.jwt, user.id, sid, role, Duration::from_secs(4 * 3600)).unwrap();
        out.push(Person {
            id: user.id,
            email,
            token,
        });
    }
    out
}

/// The password of every fixture account.
pub const PASSWORD: &str = "bench password that is long enough";

/// An HTTP call that must succeed; its JSON answer.
pub async fn call(
    http: &reqwest::Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> Value {
    let mut req = http.request(method, &url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.expect("the server answers");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{url}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// The next five-minute mark at least a minute away: an appointment there is joinable now.
pub fn live_start() -> jiff::Timestamp {
    (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60))
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Minute)
                .increment(5)
                .mode(jiff::RoundMode::Ceil),
        )
        .unwrap()
}

/// A therapist and a client who work together, with an appointment open for joining.
pub struct Pair {
    pub therapist: Person,
    pub client: Person,
    pub appointment: Uuid,
}

/// `n` pairs: accounts, an invitation accepted, an appointment booked by the therapist
/// (through the API, `parallel` at a time).
pub async fn pairs(base: &str, db: &Db, who: &Identity, n: usize, parallel: usize) -> Vec<Pair> {
    let therapists = people(db, who, Role::Therapist, n, "therapist").await;
    let clients = people(db, who, Role::Client, n, "client").await;
    let http = reqwest::Client::new();
    let start = live_start().to_string();
    futures_util::stream::iter(therapists.into_iter().zip(clients))
        .map(|(t, c)| {
            let (http, start) = (http.clone(), start.clone());
            async move {
                let post = reqwest::Method::POST;
                let code = call(
                    &http,
                    post.clone(),
                    format!("{base}/api/v1/invitations"),
                    Some(&t.token),
                    Some(json!({})),
                )
                .await;
                call(
                    &http,
                    post.clone(),
                    format!("{base}/api/v1/invitations/accept"),
                    Some(&c.token),
                    Some(json!({"code": code["code"]})),
                )
                .await;
                let a = call(
                    &http,
                    post,
                    format!("{base}/api/v1/appointments"),
                    Some(&t.token),
                    Some(json!({"starts_at": start, "kind": "session", "client_ids": [c.id]})),
                )
                .await;
                Pair {
                    therapist: t,
                    client: c,
                    appointment: a["id"].as_str().unwrap().parse().unwrap(),
                }
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await
}

/// A join token for `who` in `appointment`.
pub async fn join_token(
    http: &reqwest::Client,
    base: &str,
    who: &Person,
    appointment: Uuid,
) -> String {
    let j = call(
        http,
        reqwest::Method::POST,
        format!("{base}/api/v1/appointments/{appointment}/join"),
        Some(&who.token),
        Some(json!({})),
    )
    .await;
    j["token"].as_str().unwrap().to_owned()
}

// ---- WebSocket clients -------------------------------------------------------------------------

/// Open a WebSocket (1 KiB read buffer, as the server's; no Nagle delay, as browsers).
pub async fn connect(url: &str, origin: &str) -> Ws {
    use tungstenite::client::IntoClientRequest as _;
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("origin", origin.parse().unwrap());
    let config = tungstenite::protocol::WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(0);
    for attempt in 0.. {
        match tokio_tungstenite::connect_async_with_config(req.clone(), Some(config), true).await {
            Ok((ws, _)) => return ws,
            Err(e) if attempt < 50 => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connecting to {url}: {e}"),
        }
    }
    unreachable!()
}

/// The next text message (JSON), answering pings meanwhile.
pub async fn next_json(ws: &mut Ws) -> Option<Value> {
    loop {
        match ws.next().await? {
            Ok(Message::Text(t)) => return serde_json::from_str(&t).ok(),
            Ok(Message::Ping(p)) => {
                let _ = ws.send(Message::Pong(p)).await;
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Wait for a message whose `type` is `kind`.
pub async fn wait_type(ws: &mut Ws, kind: &str) -> Value {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(60), next_json(ws))
            .await
            .unwrap_or_else(|_| panic!("no {kind} within a minute"))
            .unwrap_or_else(|| panic!("closed while waiting for {kind}"));
        if m["type"] == kind {
            return m;
        }
        if m["type"] == "error" {
            panic!("error while waiting for {kind}: {m}");
        }
    }
}

/// `hello` with a join token; the `welcome`.
pub async fn hello(ws: &mut Ws, token: &str) -> Value {
    ws.send(Message::Text(
        json!({"type": "hello", "token": token}).to_string().into(),
    ))
    .await
    .unwrap();
    wait_type(ws, "welcome").await
}

/// An ICE candidate of about 200 bytes on the wire for `to`, carrying its send time
/// (microseconds) in `sdpMid`.
pub fn candidate(to: &str, sent_us: u64, seq: u64) -> String {
    json!({
        "type": "signal",
        "to": to,
        "candidate": {
            "candidate": format!("candidate:{seq} 1 udp 1677729535 203.0.113.7 {} typ srflx raddr 0.0.0.0 rport 0 generation 0", 40_000 + seq % 20_000),
            "sdpMid": sent_us.to_string(),
            "sdpMLineIndex": 0,
            "usernameFragment": "bEnc"
        }
    })
    .to_string()
}

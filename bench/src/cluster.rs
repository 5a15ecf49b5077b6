//! `cluster`: signalling relay latency across two nodes, beside one node, in one run.
//!
//! Starts two real Alcove nodes (this binary re-run as `node`: the `alcove` server itself,
//! each in a child process with a data folder of its own) on one PostgreSQL database and one
//! Redis, as several machines run them. Through their HTTP API it creates real accounts,
//! relationships, appointments and join tokens for `2 × rooms` therapist and client pairs,
//! then connects each pair's signalling:
//!
//! - **same node**: therapist and client both on node A (which owns the room): the room's
//!   messages never leave the process;
//! - **across nodes**: therapist on node A (the owner), client on node B: the client's
//!   messages go through the room's command stream in Redis, the therapist's through node
//!   B's delivery stream.
//!
//! Both kinds run at once, interleaved, so that the noise of this shared machine falls on
//! both alike. Each pair sends ICE candidates of about 200 bytes, two a second each way (4
//! frames a second per pair), each stamped with its send time; the receiver records the
//! latency. After a warm-up, the figures of the measured window are reported per kind
//! (p50, p90, p99, max) with the ratio of across to same.
//!
//! Needs PostgreSQL (`ALCOVE_BENCH_PG_URL`, default the test database URL) and Redis
//! (`ALCOVE_BENCH_REDIS_URL`, default `redis://127.0.0.1:6379`); it creates and drops a
//! database of its own and uses a Redis key prefix of its own.
//!
//! Usage: `cargo run --release -p alcove-bench --bin cluster -- [rooms per kind] [seconds]`

use alcove::{
    auth::{KeySet, Passwords},
    domain::{DisplayName, Email, Role},
    store::{Creator, Db, NewUser},
};
use alcove_bench::cpu_seconds;
use alcove_signaling::{
    ClientMessage, ParticipantId, ServerMessage,
    client::{Incoming, SignalClient},
    protocol::Candidate,
};
use serde_json::{Value, json};
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use uuid::Uuid;

const PASSWORD: &str = "bench password that is long enough";

struct Node {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &str, env: &[(String, String)]) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .arg("node")
            .env("ALCOVE_NODE_ID", name)
            .env("ALCOVE_LISTEN", "127.0.0.1:0")
            .env("ALCOVE_DATA_DIR", dir.path())
            .env("RUST_LOG", "warn")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .spawn()
            .expect("the node starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .strip_prefix("ready ")
            .unwrap_or_else(|| panic!("{name} did not start: {line:?}"))
            .trim()
            .to_owned();
        Node {
            child,
            base: format!("http://{addr}"),
            _dir: dir,
        }
    }

    fn ws(&self) -> String {
        format!("{}/api/v1/signal", self.base.replace("http://", "ws://"))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn call(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: Option<&str>,
    body: Value,
) -> Value {
    let mut req = http.post(format!("{base}{path}")).json(&body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await.expect("the node answers");
    let status = r.status();
    let text = r.text().await.unwrap();
    assert!(status.is_success(), "{path}: {status} {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// A pair with a live appointment: the therapist's and the client's access tokens.
struct Pair {
    appointment: Uuid,
    therapist: String,
    client: String,
}

/// Create a therapist and a client in the database, sign both in, relate them through an
/// invitation and book an appointment that is open for joining.
async fn pair(db: &Db, hash: &str, http: &reqwest::Client, base: &str, i: usize) -> Pair {
    let run = Uuid::new_v4().simple().to_string();
    let mut tokens = Vec::new();
    for (role, name) in [(Role::Therapist, "Therapist"), (Role::Client, "Client")] {
        let email = format!("{}-{i}-{run}@bench.example", name.to_lowercase());
        db.create_user(
            NewUser {
                email: Email::parse(&email).unwrap(),
                display_name: DisplayName::parse(&format!("{name} {i}")).unwrap(),
                role,
                password_hash: hash.to_owned(),
            },
            Creator::Cli,
        )
        .await
        .unwrap();
        let r = call(
            http,
            base,
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": PASSWORD}),
        )
        .await;
        tokens.push(r["access_token"].as_str().unwrap().to_owned());
    }
    let client = tokens.pop().unwrap();
    let therapist = tokens.pop().unwrap();
    let code = call(
        http,
        base,
        "/api/v1/invitations",
        Some(&therapist),
        json!({}),
    )
    .await;
    call(
        http,
        base,
        "/api/v1/invitations/accept",
        Some(&client),
        json!({"code": code["code"]}),
    )
    .await;
    let me = reqwest::Client::get(http, format!("{base}/api/v1/me"))
        .bearer_auth(&client)
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    let start = (jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60))
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Minute)
                .increment(5)
                .mode(jiff::RoundMode::Ceil),
        )
        .unwrap();
    let a = call(
        http,
        base,
        "/api/v1/appointments",
        Some(&therapist),
        json!({"starts_at": start.to_string(), "kind": "session", "client_ids": [me["id"]]}),
    )
    .await;
    Pair {
        appointment: a["id"].as_str().unwrap().parse().unwrap(),
        therapist,
        client,
    }
}

async fn hello(
    http: &reqwest::Client,
    api: &str,
    ws: &str,
    token: &str,
    appointment: Uuid,
) -> (SignalClient, ParticipantId) {
    let j = call(
        http,
        api,
        &format!("/api/v1/appointments/{appointment}/join"),
        Some(token),
        json!({}),
    )
    .await;
    let mut c = SignalClient::connect(ws, None).await.expect("signalling");
    c.send(&ClientMessage::Hello {
        token: j["token"].as_str().unwrap().to_owned(),
        resume_token: None,
        reset: false,
    })
    .await
    .unwrap();
    let pid = c
        .wait_for(Duration::from_secs(30), |m| match m {
            ServerMessage::Welcome { participant_id, .. } => Some(*participant_id),
            _ => None,
        })
        .await
        .expect("welcome");
    (c, pid)
}

/// A candidate of about 200 bytes on the wire, carrying its send time (microseconds since
/// `epoch`) in `sdpMid`.
fn candidate(to: ParticipantId, sent_us: u64, seq: u64) -> ClientMessage {
    ClientMessage::Signal {
        to,
        description: None,
        candidate: Some(Candidate {
            candidate: format!(
                "candidate:{seq} 1 udp 1677729535 203.0.113.7 {} typ srflx raddr 0.0.0.0 rport 0 generation 0",
                40_000 + seq % 20_000
            ),
            sdp_mid: Some(sent_us.to_string()),
            sdp_m_line_index: Some(0),
            username_fragment: Some("bEnc".into()),
        }),
    }
}

#[derive(Default)]
struct Samples {
    same: Vec<u64>,
    across: Vec<u64>,
}

/// Redis's per-command counters: calls and microseconds (`INFO commandstats`).
async fn command_stats(
    c: &mut redis::aio::MultiplexedConnection,
) -> std::collections::HashMap<String, (u64, f64)> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(c)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(':')?;
            let field = |k: &str| {
                rest.split(',')
                    .find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
                    .and_then(|v| v.parse::<f64>().ok())
            };
            Some((name.to_owned(), (field("calls")? as u64, field("usec")?)))
        })
        .collect()
}

/// Redis's CPU time so far (`INFO cpu`).
async fn redis_cpu_seconds(c: &mut redis::aio::MultiplexedConnection) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(c)
        .await
        .unwrap_or_default();
    info.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(':')?;
            matches!(k, "used_cpu_sys" | "used_cpu_user")
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

async fn run(rooms: usize, seconds: u64) {
    let admin = std::env::var("ALCOVE_BENCH_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let redis =
        std::env::var("ALCOVE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let name = format!("alcove_bench_{}", Uuid::new_v4().simple());
    let pool = sqlx::PgPool::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL is needed at {admin}: {e}"));
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .execute(&pool)
        .await
        .unwrap();
    let url = format!("{}/{name}", admin.rsplit_once('/').unwrap().0);
    let prefix = format!("alcove-bench-{}", Uuid::new_v4().simple());
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", url.as_str()),
        ("ALCOVE_REDIS_URL", redis.as_str()),
        ("ALCOVE_REDIS_PREFIX", prefix.as_str()),
        ("ALCOVE_SIGNING_KEYS", &KeySet::generate_pem().unwrap()),
        ("ALCOVE_PUBLIC_URL", "http://alcove.bench"),
        ("ALCOVE_LOGIN_ADDRESS_MAX", "1000000"),
        ("ALCOVE_REGISTER_ADDRESS_MAX", "1000000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let a = Node::start("node-a", &env);
    let b = Node::start("node-b", &env);
    let db = Db::connect(&url, 4).await.unwrap();
    let hash = Passwords::with_workers(1)
        .await
        .unwrap()
        .hash(&secrecy::SecretString::from(PASSWORD))
        .await
        .unwrap();
    let http = reqwest::Client::new();

    eprintln!(
        "setting up {} rooms: accounts, invitations, bookings …",
        2 * rooms
    );
    let pairs: Vec<Pair> = {
        use futures_util::StreamExt as _;
        futures_util::stream::iter(0..2 * rooms)
            .map(|i| pair(&db, &hash, &http, &a.base, i))
            .buffered(8)
            .collect()
            .await
    };
    eprintln!("joining …");
    // Even rooms: both on node A; odd rooms: the client on node B.
    let mut sides = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let across = i % 2 == 1;
        let (mut th, t_pid) = hello(&http, &a.base, &a.ws(), &p.therapist, p.appointment).await;
        let cn = if across { &b } else { &a };
        let (mut cl, c_pid) = hello(&http, &cn.base, &cn.ws(), &p.client, p.appointment).await;
        th.wait_for(Duration::from_secs(30), |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(()),
            _ => None,
        })
        .await
        .expect("lobby");
        th.send(&ClientMessage::Admit {
            participant_id: c_pid,
        })
        .await
        .unwrap();
        cl.wait_for(Duration::from_secs(30), |m| {
            matches!(m, ServerMessage::Admitted { .. }).then_some(())
        })
        .await
        .expect("admitted");
        sides.push((across, th, t_pid, cl, c_pid));
    }

    let epoch = Instant::now();
    let warmup = Duration::from_secs(3);
    let measure_from = epoch + warmup;
    let stop_at = measure_from + Duration::from_secs(seconds);
    let samples = Arc::new(Mutex::new(Samples::default()));
    let mut tasks = Vec::new();
    for (i, (across, th, t_pid, cl, c_pid)) in sides.into_iter().enumerate() {
        for (j, (conn, to)) in [(th, c_pid), (cl, t_pid)].into_iter().enumerate() {
            let (mut tx, mut rx) = conn.split();
            // Spread the pairs over the half-second period.
            let phase = Duration::from_micros(((i * 2 + j) as u64 * 7919) % 500_000);
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(phase).await;
                let mut tick = tokio::time::interval(Duration::from_millis(500));
                let mut seq = 0;
                while Instant::now() < stop_at + Duration::from_millis(500) {
                    tick.tick().await;
                    let sent = epoch.elapsed().as_micros() as u64;
                    if tx.send(&candidate(to, sent, seq)).await.is_err() {
                        break;
                    }
                    seq += 1;
                }
                tx
            }));
            let samples = samples.clone();
            tokio::spawn(async move {
                while let Ok(m) = rx.recv().await {
                    let Incoming::Message(ServerMessage::Signal {
                        candidate: Some(c), ..
                    }) = m
                    else {
                        if let Incoming::Message(ServerMessage::Error { code, message }) = m {
                            eprintln!("error {code:?}: {message}");
                        }
                        continue;
                    };
                    let now = Instant::now();
                    let sent: u64 = c.sdp_mid.unwrap().parse().unwrap();
                    if epoch + Duration::from_micros(sent) < measure_from
                        || now > stop_at + Duration::from_secs(1)
                    {
                        continue;
                    }
                    if epoch + Duration::from_micros(sent) >= stop_at {
                        continue;
                    }
                    let lat = (now - epoch).as_micros() as u64 - sent;
                    let mut s = samples.lock().unwrap();
                    if across {
                        s.across.push(lat);
                    } else {
                        s.same.push(lat);
                    }
                }
            });
        }
    }
    eprintln!("measuring for {seconds} s after a {warmup:?} warm-up …");
    let pids = [a.child.id(), b.child.id()];
    let mut redis_conn = redis::Client::open(redis.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    tokio::time::sleep_until(measure_from.into()).await;
    let stats0 = command_stats(&mut redis_conn).await;
    let (cpu0, rcpu0) = (
        pids.map(cpu_seconds),
        redis_cpu_seconds(&mut redis_conn).await,
    );
    tokio::time::sleep_until(stop_at.into()).await;
    let (cpu1, rcpu1) = (
        pids.map(cpu_seconds),
        redis_cpu_seconds(&mut redis_conn).await,
    );
    let stats1 = command_stats(&mut redis_conn).await;
    let mut senders = Vec::new();
    for t in tasks {
        senders.push(t.await.unwrap());
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = std::mem::take(&mut *samples.lock().unwrap());
    let expected = rooms as u64 * 2 * 2 * seconds;
    println!(
        "\n{rooms} rooms of each kind, 4 candidates a second per pair, {seconds} s measured\n"
    );
    println!("| path | messages | p50 ms | p90 ms | p99 ms | max ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut p = Vec::new();
    for (label, mut v) in [
        ("same node (both on the owner)", s.same),
        ("across nodes (client on another node)", s.across),
    ] {
        v.sort_unstable();
        let row = [0.5, 0.9, 0.99, 1.0].map(|q| percentile(&v, q));
        println!(
            "| {label} | {} of {expected} | {:.2} | {:.2} | {:.2} | {:.2} |",
            v.len(),
            row[0],
            row[1],
            row[2],
            row[3]
        );
        p.push(row);
    }
    println!(
        "\nratio across / same: p50 {:.2}, p99 {:.2}",
        p[1][0] / p[0][0],
        p[1][2] / p[0][2]
    );
    let relayed = (expected * 2) as f64;
    println!(
        "CPU over the measured window: node A {:.2} s, node B {:.2} s, Redis {:.2} s; \
         {:.1} µs of node CPU per relayed message (both kinds), {:.1} µs of Redis CPU per \
         message across nodes",
        cpu1[0] - cpu0[0],
        cpu1[1] - cpu0[1],
        rcpu1 - rcpu0,
        (cpu1[0] - cpu0[0] + cpu1[1] - cpu0[1]) * 1e6 / relayed,
        (rcpu1 - rcpu0) * 1e6 / (relayed / 2.0),
    );
    // Where Redis spent its time (its own accounting, `INFO commandstats`).
    let mut by_cmd: Vec<(String, u64, f64)> = stats1
        .iter()
        .map(|(cmd, (calls, usec))| {
            let (c0, u0) = stats0.get(cmd).copied().unwrap_or((0, 0.0));
            (cmd.clone(), calls - c0, usec - u0)
        })
        .filter(|(_, calls, _)| *calls > 0)
        .collect();
    by_cmd.sort_by(|x, y| y.2.total_cmp(&x.2));
    println!("\nRedis commands over the window (calls, total ms, µs per call):");
    for (cmd, calls, usec) in by_cmd.iter().take(10) {
        println!(
            "  {cmd:<12} {calls:>7} {:>9.1} {:>7.1}",
            usec / 1000.0,
            usec / *calls as f64
        );
    }
    drop(senders);
    drop((a, b));
    db.close().await;
    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
    )))
    .execute(&pool)
    .await;
    if let Ok(client) = redis::Client::open(redis.as_str())
        && let Ok(mut c) = client.get_multiplexed_async_connection().await
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query_async(&mut c)
            .await
            .unwrap_or_default();
        for k in keys {
            let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(k).query_async(&mut c).await;
        }
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("node") {
        alcove_bench::serve_alcove().await;
        return;
    }
    let rooms = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    run(rooms, seconds).await;
}

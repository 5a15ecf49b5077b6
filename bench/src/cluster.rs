//! `cluster`: signalling relay latency across two nodes, beside one node, in one run.
//!
//! Starts two real Alcove nodes (the `alcove` server, each in a child process with a data
//! folder and port of its own: `alcove_bench::ServerChild`) on one PostgreSQL database and one
//! Redis, as several machines run them. It makes accounts with real sign-in sessions, and
//! through the HTTP API relationships, appointments and join tokens, for `2 × rooms` therapist and client pairs,
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

use alcove_bench::{Identity, Person, PgDb, ServerChild, cpu_seconds, join_token, pairs};
use alcove_signaling::{
    ClientMessage, ParticipantId, ServerMessage,
    client::{Incoming, SignalClient},
    protocol::Candidate,
};
use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};
use uuid::Uuid;

/// Say `hello` on `node`'s signalling with a join token asked for through `api` (either
/// node: they share their signing keys); the participant id.
async fn hello(
    http: &reqwest::Client,
    api: &ServerChild,
    node: &ServerChild,
    who: &Person,
    appointment: Uuid,
) -> (SignalClient, ParticipantId) {
    let token = join_token(http, &api.base(), who, appointment).await;
    let mut c = SignalClient::connect(&node.ws(), None)
        .await
        .expect("signalling");
    c.send(&ClientMessage::Hello {
        token,
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

async fn run(rooms: usize, seconds: u64) {
    let redis =
        std::env::var("ALCOVE_BENCH_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let pg = PgDb::new().await;
    let prefix = format!("alcove-bench-{}", Uuid::new_v4().simple());
    let who = Identity::new();
    let mut env: Vec<(&str, String)> = who.env();
    env.extend([
        ("DATABASE_URL", pg.url.clone()),
        ("ALCOVE_REDIS_URL", redis.clone()),
        ("ALCOVE_REDIS_PREFIX", prefix.clone()),
    ]);
    let node = |name: &'static str| {
        let mut env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        env.push(("ALCOVE_NODE_ID", name));
        ServerChild::alcove(&env)
    };
    let (a, b) = (node("node-a"), node("node-b"));
    let db = alcove::store::Db::connect(&pg.url, 4).await.unwrap();
    let http = reqwest::Client::new();

    eprintln!(
        "setting up {} rooms: accounts, invitations, bookings …",
        2 * rooms
    );
    // Node A is up once it listens; its migrations are done by then.
    let pairs = pairs(&a.base(), &db, &who, 2 * rooms, 8).await;
    eprintln!("joining …");
    // Even rooms: both on node A; odd rooms: the client on node B.
    let mut sides = Vec::new();
    for (i, p) in pairs.iter().enumerate() {
        let across = i % 2 == 1;
        let (mut th, t_pid) = hello(&http, &a, &a, &p.therapist, p.appointment).await;
        let cn = if across { &b } else { &a };
        let (mut cl, c_pid) = hello(&http, cn, cn, &p.client, p.appointment).await;
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
    let pids = [a.pid(), b.pid()];
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
    for (label, v) in [
        ("same node (both on the owner)", s.same),
        ("across nodes (client on another node)", s.across),
    ] {
        let mut v: Vec<f64> = v.iter().map(|us| *us as f64 / 1000.0).collect();
        v.sort_by(f64::total_cmp);
        let row = [0.5, 0.9, 0.99, 1.0].map(|q| alcove_bench::percentile(&v, q));
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
    pg.drop_db().await;
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
    if alcove_bench::child_main().await {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    let rooms = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(100);
    let seconds = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(20);
    run(rooms, seconds).await;
}

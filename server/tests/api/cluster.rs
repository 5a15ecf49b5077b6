//! Several `alcove` processes as separate machines run them: each its own data folder and
//! port, sharing only PostgreSQL, Redis (under a key prefix of the test's own) and
//! configuration, signing keys included.

use crate::helpers::{Api, Backend, PASSWORD, Session, TestDb};
use alcove::{
    auth::{KeySet, Passwords},
    domain::{DisplayName, Email, Role},
    store::{Db, NewUser},
};
use std::{
    io::{BufRead as _, BufReader},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};
use uuid::Uuid;

/// Where the test Redis is: `ALCOVE_TEST_REDIS_URL`, by default the machine's own.
pub fn redis_url() -> String {
    std::env::var("ALCOVE_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// One node: a child process with a data folder of its own.
pub struct Node {
    pub name: String,
    child: Option<Child>,
    pub base: String,
    http: reqwest::Client,
    pub logs: Arc<Mutex<Vec<String>>>,
    dir: tempfile::TempDir,
    env: Vec<(String, String)>,
}

impl Api for Node {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

// kill9, restart and log_text serve the failover tests of the Redis hub.
#[allow(dead_code)]
impl Node {
    /// The signalling WebSocket of this node.
    pub fn ws_url(&self) -> String {
        format!("{}/api/v1/signal", self.base.replace("http://", "ws://"))
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().unwrap();
        }
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }

    /// SIGTERM (a deploy stops it), and wait for the exit.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        crate::process::sigterm(c.id());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} did not exit",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn spawn(&mut self, port: Option<&str>) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_alcove"));
        cmd.current_dir(self.dir.path())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env(
                "RUST_LOG",
                std::env::var("ALCOVE_TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .env("ALCOVE_DATA_DIR", self.dir.path().join("data"))
            .env(
                "ALCOVE_LISTEN",
                format!("127.0.0.1:{}", port.unwrap_or("0")),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("alcove starts");
        let (tx, rx) = std::sync::mpsc::channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let logs = self.logs.clone();
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if let Some(rest) = line.split("address=").nth(1) {
                        let _ = tx.send(
                            rest.split_whitespace()
                                .next()
                                .unwrap_or_default()
                                .to_owned(),
                        );
                    }
                    logs.lock().unwrap().push(line);
                }
            });
        }
        let addr = rx
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| {
                panic!(
                    "{} did not start: {}",
                    self.name,
                    self.logs.lock().unwrap().join("\n")
                )
            });
        self.child = Some(child);
        self.base = format!("http://{addr}");
    }

    /// Start again after a kill, on the same port and data folder.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let port = self.base.rsplit(':').next().unwrap().to_owned();
        self.spawn(Some(&port));
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Nodes of one deployment, and the database they share.
pub struct Cluster {
    pub nodes: Vec<Node>,
    pub db: Db,
    /// This test's Redis key prefix.
    pub prefix: String,
    /// The Redis the nodes share.
    pub redis: String,
    _test_db: TestDb,
}

/// A Redis server of the test's own (Debian's `redis-server`, which the test command
/// installs), on a port of its own, to kill and start again mid-session: the machine's
/// Redis is shared by every test running at the same time.
pub struct OwnRedis {
    port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl OwnRedis {
    pub fn start() -> OwnRedis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = OwnRedis {
            port,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        r.spawn();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn answers(&self) -> bool {
        redis::Client::open(self.url().as_str())
            .and_then(|c| c.get_connection_with_timeout(Duration::from_millis(200)))
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_ok()
    }

    fn spawn(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server runs (scripts/test installs Debian's redis-server)");
        self.child = Some(child);
        for _ in 0..100 {
            if self.answers() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("redis-server on port {} did not answer", self.port);
    }

    /// SIGKILL: Redis is gone, and with it everything it held.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Start again on the same port, empty (it keeps nothing on disk).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        self.spawn();
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill9();
    }
}

impl Cluster {
    /// Start `n` nodes (`node-a`, `node-b`, …) with the shared settings plus `env`, on the
    /// machine's Redis.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        Self::start_on(n, env, &redis_url()).await
    }

    /// [`Self::start`] on the Redis at `redis`.
    pub async fn start_on(n: usize, env: &[(&str, &str)], redis: &str) -> Cluster {
        let test_db = TestDb::new(Backend::Postgres).await;
        let prefix = format!("alcove-t-{}", Uuid::new_v4().simple());
        let keys = KeySet::generate_pem().unwrap();
        let shared: Vec<(String, String)> = [
            ("DATABASE_URL", test_db.url.as_str()),
            ("ALCOVE_REDIS_URL", redis),
            ("ALCOVE_REDIS_PREFIX", prefix.as_str()),
            ("ALCOVE_SIGNING_KEYS", keys.as_str()),
            // The address people reach the deployment at: the same on every node (it is the
            // tokens' issuer); tests call each node directly.
            ("ALCOVE_PUBLIC_URL", "http://alcove.test"),
            ("ALCOVE_LOGIN_ADDRESS_MAX", "100000"),
            ("ALCOVE_REGISTER_ADDRESS_MAX", "100000"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .chain(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("node-{}", (b'a' + i as u8) as char);
            let mut env = shared.clone();
            env.push(("ALCOVE_NODE_ID".into(), name.clone()));
            let mut node = Node {
                name,
                child: None,
                base: String::new(),
                http: reqwest::Client::new(),
                logs: Arc::new(Mutex::new(Vec::new())),
                dir: tempfile::tempdir().unwrap(),
                env,
            };
            node.spawn(None);
            nodes.push(node);
        }
        let db = Db::connect(&test_db.url, 2).await.unwrap();
        Cluster {
            nodes,
            db,
            prefix,
            redis: redis.to_owned(),
            _test_db: test_db,
        }
    }

    /// An account of any role, written to the shared database; signed in on node 0.
    pub async fn user_with_role(&self, name: &str, role: Role) -> Session {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase().replace(' ', "."),
            Uuid::new_v4().simple()
        );
        let hash = Passwords::with_workers(1)
            .await
            .unwrap()
            .hash(&secrecy::SecretString::from(PASSWORD))
            .await
            .unwrap();
        self.db
            .create_user(
                NewUser {
                    email: Email::parse(&email).unwrap(),
                    display_name: DisplayName::parse(name).unwrap(),
                    role,
                    password_hash: hash,
                },
                alcove::store::Creator::Cli,
            )
            .await
            .unwrap();
        self.nodes[0].login(&email).await
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Leave nothing of this test in the shared Redis.
        let prefix = self.prefix.clone();
        let url = self.redis.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(url.as_str())
                && let Ok(mut c) = client.get_connection_with_timeout(Duration::from_secs(1))
            {
                let keys: Vec<String> = redis::cmd("KEYS")
                    .arg(format!("{prefix}:*"))
                    .query(&mut c)
                    .unwrap_or_default();
                for k in keys {
                    let _: Result<i64, _> = redis::cmd("DEL").arg(k).query(&mut c);
                }
            }
        })
        .join();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_token_works_once_across_nodes_and_sign_in_limits_are_shared() {
    use crate::peers::{join_token, send_hello};
    use alcove_signaling::{ErrorCode, ServerMessage, close};
    let cluster = Cluster::start(2, &[("ALCOVE_LOGIN_MAX_FAILURES", "3")]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    for n in [a, b] {
        let r = n.get("/readyz", None).await.expect(200);
        assert_eq!(r["redis"], "up", "{}: {r}", n.name);
    }

    // A therapist and a client, their appointment booked through node A.
    let t = cluster.user_with_role("Dr Nodes", Role::Therapist).await;
    let c = a.client("Casey").await;
    let id = crate::signaling::live_appointment(a, &t, &[&c]).await;

    // A token asked for on B (any node signs what every node verifies), used on A ...
    let j = join_token(b, &c, id).await;
    let token = j["token"].as_str().unwrap().to_owned();
    let mut first = send_hello(&a.ws_url(), &token, None, false).await;
    first
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, ServerMessage::Welcome { .. }).then_some(())
        })
        .await
        .unwrap();
    // ... is refused on B.
    let mut again = send_hello(&b.ws_url(), &token, None, false).await;
    let (code, message) = again
        .wait_for(Duration::from_secs(10), |m| match m {
            ServerMessage::Error { code, message } => Some((*code, message.clone())),
            _ => None,
        })
        .await
        .unwrap();
    assert_eq!(code, ErrorCode::InvalidToken);
    assert!(message.contains("already used"), "{message}");
    assert!(matches!(
        again.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        alcove_signaling::client::Incoming::Closed(Some(close::INVALID_TOKEN), _)
    ));

    // Wrong passwords spread over the two nodes count as on one: the limit is 3.
    let wrong = |n: &Node| {
        let email = c.email.clone();
        let n_base = n.base.clone();
        async move {
            reqwest::Client::new()
                .post(format!("{n_base}/api/v1/auth/login"))
                .json(&serde_json::json!({"email": email, "password": "not the password"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(wrong(a).await, 401);
    assert_eq!(wrong(b).await, 401);
    assert_eq!(wrong(a).await, 401);
    assert_eq!(wrong(b).await, 429, "the fourth attempt, on another node");
    let r = a
        .post(
            "/api/v1/auth/login",
            None,
            serde_json::json!({"email": c.email, "password": PASSWORD}),
        )
        .await;
    r.expect_problem(429, "too_many_requests");
}

fn connected(o: &crate::peers::Obs) -> bool {
    *o == crate::peers::Obs::State(webrtc::peer_connection::RTCPeerConnectionState::Connected)
}

/// Therapist through `tn`, client through `cn`: the client waits, the therapist admits,
/// two webrtc-rs peers connect and chat. Returns both peers.
async fn admitted_across(
    api: &Node,
    tn: &Node,
    cn: &Node,
    t: &Session,
    c: &Session,
    id: Uuid,
) -> (crate::peers::RtcPeer, crate::peers::RtcPeer) {
    use crate::peers::{Obs, RtcPeer};
    use alcove_signaling::{ClientMessage, ServerMessage};
    let mut th = RtcPeer::join_at(api, t, id, Some(&tn.ws_url())).await;
    let mut cl = RtcPeer::join_at(api, c, id, Some(&cn.ws_url())).await;
    cl.expect("waiting", |m| {
        matches!(m, ServerMessage::Waiting { position: 1 }).then_some(())
    })
    .await;
    let waiting = th
        .expect("the client in the lobby", |m| match m {
            ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(waiting.clone()),
            _ => None,
        })
        .await;
    assert_eq!(waiting[0].participant_id, cl.pid);
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
    assert_eq!(peers[0].participant_id, th.pid);
    assert!(
        peers[0].polite,
        "the client is the polite side, across nodes too"
    );
    cl.call(th.pid);
    cl.observe("client connected", connected).await;
    th.observe("therapist connected", connected).await;
    cl.observe("client data channel", |o| *o == Obs::DcOpen)
        .await;
    th.observe("therapist data channel", |o| *o == Obs::DcOpen)
        .await;
    cl.chat("hello across two nodes");
    th.observe("the message at the therapist", |o| {
        *o == Obs::DcMessage("hello across two nodes".into())
    })
    .await;
    th.chat("and back");
    cl.observe("the message at the client", |o| {
        *o == Obs::DcMessage("and back".into())
    })
    .await;
    (th, cl)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_therapist_on_one_node_and_a_client_on_another_meet_and_call() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let t = cluster
        .user_with_role("Dr Two Nodes", Role::Therapist)
        .await;
    let c = a.client("Casey").await;
    let id = crate::signaling::live_appointment(a, &t, &[&c]).await;
    let (th, cl) = admitted_across(a, a, b, &t, &c, id).await;
    // Offers, answers and candidates crossed between the nodes.
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
    // One session, recorded once, on the node that holds the room.
    let sessions: Vec<(Uuid, String)> = match &cluster.db {
        Db::Postgres(p) => sqlx::query_as("SELECT id, node_id FROM video_sessions")
            .fetch_all(p)
            .await
            .unwrap(),
        Db::Sqlite(_) => unreachable!(),
    };
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].1, "node-a");
    // The bus between the nodes is in each node's metrics, without any id.
    let value = |text: &str, name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing:\n{text}"))
    };
    let ma = a.get("/metrics", None).await.text;
    let mb = b.get("/metrics", None).await.text;
    assert!(value(&ma, "alcove_bus_commits_total") >= 1.0);
    assert!(value(&ma, "alcove_bus_commands_read_total") >= 1.0);
    assert!(value(&ma, "alcove_bus_deliveries_sent_total") >= 1.0);
    assert!(value(&ma, "alcove_bus_commit_seconds_count") >= 1.0);
    assert!(value(&mb, "alcove_bus_commands_sent_total") >= 1.0);
    assert!(value(&mb, "alcove_bus_deliveries_read_total") >= 1.0);
    assert!(value(&mb, "alcove_bus_send_seconds_count") >= 1.0);
    assert_eq!(value(&ma, "alcove_redis_up"), 1.0);
    assert_eq!(value(&ma, "alcove_rooms{state=\"in_call\"}"), 1.0);
    for m in [&ma, &mb] {
        for secret in [
            id.to_string(),
            t.id.to_string(),
            c.id.to_string(),
            c.email.clone(),
        ] {
            assert!(!m.contains(secret.as_str()), "{secret} in /metrics");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_node_is_killed_mid_session_and_both_resume_on_a_survivor() {
    use alcove_signaling::ServerMessage;
    let mut cluster = Cluster::start(2, &[]).await;
    let t = cluster.user_with_role("Dr Failover", Role::Therapist).await;
    let c = cluster.nodes[1].client("Casey").await;
    let id = crate::signaling::live_appointment(&cluster.nodes[1], &t, &[&c]).await;
    // Both on node A, which owns the room.
    let (mut th, mut cl) = {
        let a = &cluster.nodes[0];
        admitted_across(a, a, a, &t, &c, id).await
    };
    let (t_pid, c_pid) = (th.pid, cl.pid);

    // Node A dies: no shutdown code runs, both signalling sockets drop.
    cluster.nodes[0].kill9();
    for (who, p) in [("therapist", &mut th), ("client", &mut cl)] {
        loop {
            match tokio::time::timeout(Duration::from_secs(10), p.inbox.recv()).await {
                Ok(Some(alcove_signaling::client::Incoming::Closed(..))) | Ok(None) => break,
                Ok(Some(_)) => {}
                Err(_) => panic!("{who}: the dead node's socket did not close"),
            }
        }
    }
    // Both come back through node B inside the grace period, with their resume tokens.
    let b = &cluster.nodes[1];
    let started = std::time::Instant::now();
    let tw = th.resume_at(b, &t, id, Some(&b.ws_url())).await;
    let cw = cl.resume_at(b, &c, id, Some(&b.ws_url())).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "within the grace period: {took:?}"
    );
    eprintln!("both resumed on node B {took:?} after node A died");
    assert_eq!(tw["resumed"], true);
    assert_eq!(
        tw["participant_id"],
        t_pid.to_string(),
        "the same participant"
    );
    assert_eq!(cw["participant_id"], c_pid.to_string());
    assert_eq!(
        cw["peers"][0]["participant_id"],
        t_pid.to_string(),
        "still admitted"
    );
    // The peers renegotiate with an ICE restart, and talk again.
    th.expect("peer_resumed", |m| match m {
        ServerMessage::PeerResumed { participant_id, .. } if *participant_id == c_pid => Some(()),
        _ => None,
    })
    .await;
    renegotiate(&cluster, &th, &cl).await;
    th.chat("still there after the failover?");
    cl.observe("a message after the failover", |o| {
        *o == crate::peers::Obs::DcMessage("still there after the failover?".into())
    })
    .await;
    cl.chat("yes");
    th.observe("the reply", |o| {
        *o == crate::peers::Obs::DcMessage("yes".into())
    })
    .await;

    // One session, carried on by node B, with a reconnect for each participant.
    let Db::Postgres(pool) = &cluster.db else {
        unreachable!()
    };
    let sessions: Vec<(Uuid, String, Option<jiff::Timestamp>)> =
        sqlx::query_as("SELECT id, node_id, ended_at FROM video_sessions")
            .fetch_all(pool)
            .await
            .unwrap()
            .into_iter()
            .map(
                |(id, node, ended): (Uuid, String, Option<alcove::store::Ts>)| {
                    (id, node, ended.map(|t| t.0))
                },
            )
            .collect();
    assert_eq!(sessions.len(), 1, "one session, not two: {sessions:?}");
    assert_eq!(sessions[0].1, "node-b", "carried on by the survivor");
    assert!(sessions[0].2.is_none(), "still open");
    let reconnects: Vec<(i32,)> =
        sqlx::query_as("SELECT reconnects FROM session_participants WHERE session_id = $1")
            .bind(sessions[0].0)
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(reconnects.len(), 2);
    assert!(reconnects.iter().all(|r| r.0 >= 1), "{reconnects:?}");
}

/// The owner named by the room's lease in Redis (`None`: no node holds it).
async fn owner_of(cluster: &Cluster, id: Uuid) -> Option<String> {
    let client = redis::Client::open(cluster.redis.as_str()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    let v: Option<String> =
        redis::AsyncCommands::get(&mut c, format!("{}:room:{id}:owner", cluster.prefix))
            .await
            .unwrap();
    // `<node>#<process>:<fence>`
    v.map(|v| v.split(['#', ':']).next().unwrap().to_owned())
}

/// The last lines each node logged, for a failure's message.
fn logs_tail(cluster: &Cluster) -> String {
    cluster
        .nodes
        .iter()
        .map(|n| {
            let logs = n.logs.lock().unwrap();
            let from = logs.len().saturating_sub(30);
            format!("--- {} ---\n{}", n.name, logs[from..].join("\n"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The therapist restarts ICE and the offer and answer cross the nodes they are on now.
async fn renegotiate(cluster: &Cluster, th: &crate::peers::RtcPeer, cl: &crate::peers::RtcPeer) {
    crate::peers::renegotiate(th, cl, || logs_tail(cluster)).await;
}

/// Poll `/readyz` of `n` until `ok` accepts its answer (status, body).
async fn readyz_until(n: &Node, what: &str, ok: impl Fn(u16, &serde_json::Value) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let r = n.get("/readyz", None).await;
        let body: serde_json::Value = serde_json::from_str(&r.text).unwrap_or_default();
        if ok(r.status.as_u16(), &body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{}: /readyz never showed {what}: {} {}",
            n.name,
            r.status,
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_session_is_reported_and_signalling_recovers_by_itself() {
    use crate::peers::{Obs, join_token, send_hello};
    use alcove_signaling::{ClientMessage, ErrorCode, ServerMessage, client::Incoming, close};
    let mut redis = OwnRedis::start();
    let cluster = Cluster::start_on(2, &[], &redis.url()).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let t = cluster.user_with_role("Dr Outage", Role::Therapist).await;
    let c = b.client("Casey").await;
    let id = crate::signaling::live_appointment(a, &t, &[&c]).await;
    // The therapist on node A (which owns the room), the client on node B.
    let (mut th, mut cl) = admitted_across(a, a, b, &t, &c, id).await;

    // Redis dies (and comes back empty: it keeps nothing on disk).
    redis.kill9();
    let died = std::time::Instant::now();
    for n in [a, b] {
        readyz_until(n, "Redis down", |status, body| {
            status == 503
                && body["code"] == "not_ready"
                && body["detail"].as_str().unwrap_or("").contains("redis down")
        })
        .await;
    }
    let noticed = died.elapsed();
    // Media and chat go on peer to peer.
    th.chat("can you still hear me?");
    cl.observe("chat during the outage", |o| {
        *o == Obs::DcMessage("can you still hear me?".into())
    })
    .await;
    // A signal that needs the other node gets a clear error, and the connection stays.
    cl.send(&ClientMessage::Signal {
        to: th.pid,
        description: None,
        candidate: Some(alcove_signaling::protocol::Candidate {
            candidate: String::new(),
            sdp_mid: None,
            sdp_m_line_index: None,
            username_fragment: None,
        }),
    })
    .await;
    cl.expect("error unavailable", |m| {
        matches!(
            m,
            ServerMessage::Error {
                code: ErrorCode::Unavailable,
                ..
            }
        )
        .then_some(())
    })
    .await;
    // A new join gets a clear answer in time (try again later), not a hang.
    let j = join_token(b, &c, id).await;
    let mut late = send_hello(&b.ws_url(), j["token"].as_str().unwrap(), None, false).await;
    let (code, _) = late
        .wait_for(Duration::from_secs(10), |m| match m {
            ServerMessage::Error { code, message } => Some((*code, message.clone())),
            _ => None,
        })
        .await
        .expect("an error, in time");
    assert_eq!(code, ErrorCode::Unavailable);
    assert!(matches!(
        late.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Incoming::Closed(Some(close::TRY_AGAIN_LATER), _)
    ));

    // Redis is back: ready again, and signalling across the nodes works by itself.
    redis.restart();
    let back = std::time::Instant::now();
    for n in [a, b] {
        readyz_until(n, "ready", |status, body| {
            status == 200 && body["redis"] == "up"
        })
        .await;
    }
    let ready = back.elapsed();
    renegotiate(&cluster, &th, &cl).await;
    eprintln!(
        "Redis lost: both nodes' /readyz said so within {noticed:?}; ready {ready:?} after it was back, an ICE restart across the nodes done {:?} after",
        back.elapsed()
    );
    // Neither was taken for gone meanwhile.
    while let Ok(m) = th.inbox.try_recv() {
        assert!(
            !matches!(m, Incoming::Message(ServerMessage::PeerReconnecting { .. })),
            "the client was taken for gone: {m:?}"
        );
    }
    // A new connection of the client, through node B, resumes its place.
    cl.cut_signalling().await;
    let w = cl.resume_at(b, &c, id, Some(&b.ws_url())).await;
    assert_eq!(w["resumed"], true, "{w}");
    renegotiate(&cluster, &th, &cl).await;
    th.chat("all good again");
    cl.observe("chat after the outage", |o| {
        *o == Obs::DcMessage("all good again".into())
    })
    .await;
    assert_eq!(owner_of(&cluster, id).await.as_deref(), Some("node-a"));
}

/// What one side of the numbered-signal test received: the numbers, in arrival order, and
/// any error the server sent.
async fn receive_numbers(
    mut rx: alcove_signaling::client::SignalReceiver,
    from: alcove_signaling::ParticipantId,
    n: usize,
) -> (Vec<usize>, Vec<String>) {
    use alcove_signaling::{ServerMessage, client::Incoming};
    let mut got = Vec::with_capacity(n);
    let mut errors = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while got.len() < n {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(Incoming::Message(ServerMessage::Signal {
                from: f,
                candidate: Some(c),
                ..
            }))) if f == from => got.push(c.sdp_mid.unwrap().parse().unwrap()),
            Ok(Ok(Incoming::Message(ServerMessage::Error { code, message }))) => {
                errors.push(format!("{code:?}: {message}"))
            }
            Ok(Ok(Incoming::Closed(code, why))) => {
                errors.push(format!("closed {code:?} {why}"));
                break;
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                errors.push(format!("socket: {e}"));
                break;
            }
            Err(_) => {
                errors.push(format!("timed out with {} received", got.len()));
                break;
            }
        }
    }
    (got, errors)
}

/// Send candidates numbered 0..n at 45 a second (under the per-connection limit of 50),
/// telling `halfway` after n / 2.
async fn send_numbers(
    mut tx: alcove_signaling::client::SignalSender,
    to: alcove_signaling::ParticipantId,
    n: usize,
    halfway: Option<tokio::sync::oneshot::Sender<()>>,
) -> alcove_signaling::client::SignalSender {
    use alcove_signaling::{ClientMessage, protocol::Candidate};
    let mut halfway = halfway;
    let mut tick = tokio::time::interval(Duration::from_millis(22));
    for i in 0..n {
        tick.tick().await;
        tx.send(&ClientMessage::Signal {
            to,
            description: None,
            candidate: Some(Candidate {
                candidate: format!(
                    "candidate:{i} 1 udp 2122260223 127.0.0.1 {} typ host",
                    10_000 + i
                ),
                sdp_mid: Some(i.to_string()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            }),
        })
        .await
        .unwrap();
        if i + 1 == n / 2
            && let Some(h) = halfway.take()
        {
            let _ = h.send(());
        }
    }
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_numbered_signals_each_way_cross_nodes_in_order_while_the_owner_dies() {
    use crate::peers::{hello, join_token};
    use alcove_signaling::{ClientMessage, ServerMessage, client::Incoming, close};
    const N: usize = 1000;
    let mut cluster = Cluster::start(3, &[]).await;
    let t = cluster.user_with_role("Dr Numbers", Role::Therapist).await;
    let c = cluster.nodes[1].client("Casey").await;
    let id = crate::signaling::live_appointment(&cluster.nodes[1], &t, &[&c]).await;
    let (a, b, cn) = (&cluster.nodes[0], &cluster.nodes[1], &cluster.nodes[2]);

    // The therapist's first connection, on node A, opens the room there ...
    let j = join_token(a, &t, id).await;
    let (mut first, _) = hello(&a.ws_url(), j["token"].as_str().unwrap(), None, false).await;
    assert_eq!(owner_of(&cluster, id).await.as_deref(), Some("node-a"));
    // ... then the therapist moves to node B (a new tab replaces the old one), and the
    // client comes in through node C: neither is on the owner's node.
    let j = join_token(b, &t, id).await;
    let (mut th, tw) = hello(&b.ws_url(), j["token"].as_str().unwrap(), None, false).await;
    let ServerMessage::Welcome {
        participant_id: t_pid,
        ..
    } = tw
    else {
        unreachable!()
    };
    first
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, ServerMessage::Error { .. }).then_some(())
        })
        .await
        .unwrap();
    assert!(matches!(
        first.recv_timeout(Duration::from_secs(5)).await.unwrap(),
        Incoming::Closed(Some(close::REPLACED), _)
    ));
    let j = join_token(cn, &c, id).await;
    let (mut cl, cw) = hello(&cn.ws_url(), j["token"].as_str().unwrap(), None, false).await;
    let ServerMessage::Welcome {
        participant_id: c_pid,
        ..
    } = cw
    else {
        unreachable!()
    };
    th.wait_for(Duration::from_secs(10), |m| match m {
        ServerMessage::Lobby { waiting } if !waiting.is_empty() => Some(()),
        _ => None,
    })
    .await
    .unwrap();
    th.send(&ClientMessage::Admit {
        participant_id: c_pid,
    })
    .await
    .unwrap();
    cl.wait_for(Duration::from_secs(10), |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await
    .unwrap();
    assert_eq!(owner_of(&cluster, id).await.as_deref(), Some("node-a"));

    // A thousand numbered candidates each way; the owner is killed halfway.
    let (ttx, trx) = th.split();
    let (ctx, crx) = cl.split();
    let at_client = tokio::spawn(receive_numbers(crx, t_pid, N));
    let at_therapist = tokio::spawn(receive_numbers(trx, c_pid, N));
    let (half_tx, half) = tokio::sync::oneshot::channel();
    let from_therapist = tokio::spawn(send_numbers(ttx, c_pid, N, Some(half_tx)));
    let from_client = tokio::spawn(send_numbers(ctx, t_pid, N, None));
    half.await.unwrap();
    cluster.nodes[0].kill9();
    let started = std::time::Instant::now();
    let (_ttx, _ctx) = (from_therapist.await.unwrap(), from_client.await.unwrap());
    let (got_c, errors_c) = at_client.await.unwrap();
    let (got_t, errors_t) = at_therapist.await.unwrap();
    eprintln!("all received {:?} after the owner died", started.elapsed());
    let expected: Vec<usize> = (0..N).collect();
    assert!(errors_c.is_empty(), "the client was told: {errors_c:?}");
    assert!(errors_t.is_empty(), "the therapist was told: {errors_t:?}");
    assert_eq!(got_c, expected, "at the client: complete, in order, once");
    assert_eq!(
        got_t, expected,
        "at the therapist: complete, in order, once"
    );
    let owner = owner_of(&cluster, id).await;
    assert!(
        matches!(owner.as_deref(), Some("node-b" | "node-c")),
        "a survivor owns the room now: {owner:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_node_drained_by_sigterm_hands_the_session_to_a_survivor() {
    use alcove_signaling::{ServerMessage, client::Incoming, close};
    let mut cluster = Cluster::start(2, &[]).await;
    let t = cluster.user_with_role("Dr Deploy", Role::Therapist).await;
    let c = cluster.nodes[1].client("Casey").await;
    let id = crate::signaling::live_appointment(&cluster.nodes[1], &t, &[&c]).await;
    // Both on node A, which owns the room.
    let (mut th, mut cl) = {
        let a = &cluster.nodes[0];
        admitted_across(a, a, a, &t, &c, id).await
    };
    let (t_pid, c_pid) = (th.pid, cl.pid);
    assert_eq!(owner_of(&cluster, id).await.as_deref(), Some("node-a"));

    // A deploy stops node A: both are told to reconnect, and it exits 0.
    let status = {
        let a = &mut cluster.nodes[0];
        let stopping = a.terminate();
        let (status, ()) = tokio::join!(stopping, async {
            for (who, p) in [("therapist", &mut th), ("client", &mut cl)] {
                let mut told = false;
                loop {
                    match tokio::time::timeout(Duration::from_secs(10), p.inbox.recv()).await {
                        Ok(Some(Incoming::Message(ServerMessage::Reconnect { .. }))) => told = true,
                        Ok(Some(Incoming::Closed(code, _))) => {
                            assert!(told, "{who}: `reconnect` first");
                            assert_eq!(code, Some(close::SERVICE_RESTART), "{who}");
                            break;
                        }
                        Ok(Some(Incoming::Message(ServerMessage::Ended { reason }))) => {
                            panic!("{who}: ended ({reason}) instead of handed over")
                        }
                        Ok(Some(_)) => {}
                        _ => panic!("{who}: not told to reconnect"),
                    }
                }
            }
        });
        status
    };
    assert!(status.success(), "node A exits 0: {status}");
    // Node B carries the room on at once (its lease was released, not left to lapse).
    let b = &cluster.nodes[1];
    let started = std::time::Instant::now();
    let tw = th.resume_at(b, &t, id, Some(&b.ws_url())).await;
    let cw = cl.resume_at(b, &c, id, Some(&b.ws_url())).await;
    eprintln!(
        "both resumed on node B {:?} after node A stopped",
        started.elapsed()
    );
    assert_eq!(tw["resumed"], true, "{tw}");
    assert_eq!(tw["participant_id"], t_pid.to_string());
    assert_eq!(cw["participant_id"], c_pid.to_string());
    assert_eq!(
        cw["peers"][0]["participant_id"],
        t_pid.to_string(),
        "still admitted"
    );
    assert_eq!(owner_of(&cluster, id).await.as_deref(), Some("node-b"));
    renegotiate(&cluster, &th, &cl).await;
    th.chat("after the deploy");
    cl.observe("chat after the deploy", |o| {
        *o == crate::peers::Obs::DcMessage("after the deploy".into())
    })
    .await;
    // One session, open, carried on by node B, with a reconnect each.
    let Db::Postgres(pool) = &cluster.db else {
        unreachable!()
    };
    let sessions: Vec<(Uuid, String, Option<alcove::store::Ts>)> =
        sqlx::query_as("SELECT id, node_id, ended_at FROM video_sessions")
            .fetch_all(pool)
            .await
            .unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    assert_eq!(sessions[0].1, "node-b");
    assert!(sessions[0].2.is_none(), "still open");
    let reconnects: Vec<(i32,)> =
        sqlx::query_as("SELECT reconnects FROM session_participants WHERE session_id = $1")
            .bind(sessions[0].0)
            .fetch_all(pool)
            .await
            .unwrap();
    assert!(
        reconnects.len() == 2 && reconnects.iter().all(|r| r.0 >= 1),
        "{reconnects:?}"
    );
}

/// Join `id`'s room on node `n` as `who`.
async fn enter_on(n: &Node, who: &Session, id: Uuid) -> alcove_signaling::client::SignalClient {
    let j = crate::peers::join_token(n, who, id).await;
    let (s, welcome) =
        crate::peers::hello(&n.ws_url(), j["token"].as_str().unwrap(), None, false).await;
    assert!(
        matches!(welcome, alcove_signaling::ServerMessage::Welcome { .. }),
        "{welcome:?}"
    );
    s
}

/// Live revocation reaches every node: the client's connection on node B is closed when
/// the client signs out everywhere through node A, and the therapist's on A when an admin
/// disables the account through B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sign_in_ended_on_one_node_closes_its_connections_on_the_others() {
    let cluster = Cluster::start(2, &[]).await;
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    let admin = cluster.user_with_role("Root", Role::Admin).await;
    let t = cluster.user_with_role("Dr Nodes", Role::Therapist).await;
    let c = a.client("Casey").await;
    let id = crate::signaling::live_appointment(a, &t, &[&c]).await;

    let mut th = enter_on(a, &t, id).await;
    let mut cl = enter_on(b, &c, id).await;

    let at = std::time::Instant::now();
    a.post(
        "/api/v1/me/sign-out-everywhere",
        c.token(),
        serde_json::json!({}),
    )
    .await
    .expect(200);
    crate::revocation::expect_signed_out(&mut cl, at).await;

    let at = std::time::Instant::now();
    b.post(
        format!("/api/v1/admin/users/{}/disable", t.id),
        admin.token(),
        serde_json::json!({}),
    )
    .await
    .expect(200);
    crate::revocation::expect_signed_out(&mut th, at).await;
}

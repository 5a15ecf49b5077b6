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
    _test_db: TestDb,
}

impl Cluster {
    /// Start `n` nodes (`node-a`, `node-b`, …) with the shared settings plus `env`.
    pub async fn start(n: usize, env: &[(&str, &str)]) -> Cluster {
        let test_db = TestDb::new(Backend::Postgres).await;
        let prefix = format!("alcove-t-{}", Uuid::new_v4().simple());
        let keys = KeySet::generate_pem().unwrap();
        let shared: Vec<(String, String)> = [
            ("DATABASE_URL", test_db.url.as_str()),
            ("ALCOVE_REDIS_URL", redis_url().as_str()),
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
        let _ = std::thread::spawn(move || {
            if let Ok(client) = redis::Client::open(redis_url().as_str())
                && let Ok(mut c) = client.get_connection()
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
}

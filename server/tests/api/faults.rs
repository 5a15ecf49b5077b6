//! Faults, against real parts: a PostgreSQL of the test's own stopped and restarted, a
//! TCP proxy that slows the database down, a small filesystem that fills up. Each checks
//! the answer, how fast it comes, what is kept, and that everything recovers by itself;
//! the times are printed (docs/reliability.md records them).

use crate::{
    helpers::{Api, Backend, TestDb},
    peers::{hello, join_token},
    process::ServerProcess,
    signaling::live_appointment,
};
use alcove::domain::Role;
use alcove_signaling::{
    ClientMessage, ServerMessage, client::Incoming, close, protocol::Candidate,
};
use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

fn run_ok(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A PostgreSQL server of the test's own (Debian's binaries, run as the `postgres` user),
/// on a port of its own, to stop and start: the machine's is shared by every test.
pub struct OwnPostgres {
    bin: PathBuf,
    dir: tempfile::TempDir,
    pub port: u16,
    running: bool,
}

impl OwnPostgres {
    pub fn start() -> OwnPostgres {
        assert!(
            is_root(),
            "the PostgreSQL fault tests need root (to run postgres as its user)"
        );
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL's binaries in /usr/lib/postgresql (Debian's postgresql package)")
            .filter_map(Result::ok)
            .map(|e| e.path().join("bin"))
            .find(|p| p.join("initdb").is_file())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path()),
            "chown",
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        run_ok(
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
                .arg(dir.path().join("data"))
                .stdout(Stdio::null()),
            "initdb",
        );
        let mut pg = OwnPostgres {
            bin,
            dir,
            port,
            running: false,
        };
        pg.up();
        pg
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn pg_ctl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(self.dir.path().join("data"))
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    /// Start it (again) and wait until it accepts connections.
    pub fn up(&mut self) {
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("pg.log");
        run_ok(
            &mut self.pg_ctl(&[
                "-w",
                "-t",
                "30",
                "-o",
                &opts,
                "-l",
                log.to_str().unwrap(),
                "start",
            ]),
            "pg_ctl start",
        );
        self.running = true;
    }

    /// Stop it: `fast` ends sessions and shuts down cleanly (as a service restart does).
    pub fn down(&mut self) {
        run_ok(
            &mut self.pg_ctl(&["-w", "-m", "fast", "stop"]),
            "pg_ctl stop",
        );
        self.running = false;
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        if self.running {
            let _ = self.pg_ctl(&["-m", "immediate", "stop"]).status();
        }
    }
}

/// A TCP proxy in front of the database that can slow every chunk down.
pub struct SlowProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl SlowProxy {
    pub async fn start(upstream: std::net::SocketAddr) -> SlowProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, st) = (delay_ms.clone(), stop.clone());
        tokio::spawn(async move {
            while !st.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept().await else {
                    continue;
                };
                let d = d.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pump(cr, sw, d.clone()));
                    tokio::spawn(pump(sr, cw, d));
                });
            }
        });
        SlowProxy {
            port,
            delay_ms,
            stop,
        }
    }

    pub fn set_delay(&self, d: Duration) {
        self.delay_ms.store(d.as_millis() as u64, Ordering::Relaxed);
    }
}

impl Drop for SlowProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let d = delay_ms.load(Ordering::Relaxed);
        if d > 0 {
            tokio::time::sleep(Duration::from_millis(d)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// A small tmpfs of the test's own (as root), unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        assert!(
            is_root(),
            "the full-disk test needs root (to mount a small tmpfs)"
        );
        let dir = tempfile::tempdir().unwrap();
        run_ok(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(dir.path()),
            "mount tmpfs",
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill every byte left with a file of its own.
    fn fill(&self) -> PathBuf {
        use std::io::Write as _;
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        for chunk in [1 << 20, 64 << 10, 4 << 10, 512, 1] {
            let block = vec![0u8; chunk];
            while f.write_all(&block).is_ok() {}
        }
        let _ = f.sync_all();
        filler
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Time `f`, returning its value and how long it took.
async fn timed<T>(f: impl std::future::Future<Output = T>) -> (T, Duration) {
    let t = Instant::now();
    let v = f.await;
    (v, t.elapsed())
}

fn candidate(to: uuid::Uuid) -> ClientMessage {
    ClientMessage::Signal {
        to,
        description: None,
        candidate: Some(Candidate {
            candidate: "candidate:1 1 udp 2122260223 192.0.2.10 50000 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_going_away_gets_a_clear_answer_at_once_keeps_the_record_and_recovers() {
    let mut pg = OwnPostgres::start();
    let srv =
        ServerProcess::start_on(TestDb::at(&pg.url()), &[("ALCOVE_SIGNAL_GRACE", "60s")]).await;
    let t = srv.user_with_role("Dr Outage", Role::Therapist).await;
    let c = srv.client("Client Outage").await;
    let id = live_appointment(&srv, &t, &[&c]).await;
    let url = |j: &serde_json::Value| j["signaling_url"].as_str().unwrap().to_owned();
    let tj = join_token(&srv, &t, id).await;
    let (mut th, tw) = hello(&url(&tj), tj["token"].as_str().unwrap(), None, false).await;
    let cj = join_token(&srv, &c, id).await;
    let (mut cl, cw) = hello(&url(&cj), cj["token"].as_str().unwrap(), None, false).await;
    let ServerMessage::Welcome {
        participant_id: c_pid,
        resume_token,
        ..
    } = cw
    else {
        unreachable!()
    };
    let ServerMessage::Welcome {
        participant_id: t_pid,
        ..
    } = tw
    else {
        unreachable!()
    };
    th.send(&ClientMessage::Admit {
        participant_id: c_pid,
    })
    .await
    .unwrap();
    cl.wait_for(Duration::from_secs(5), |m| {
        matches!(m, ServerMessage::Admitted { .. }).then_some(())
    })
    .await
    .unwrap();
    // A join token asked for before the outage, to try during it.
    let spare = join_token(&srv, &c, id).await;

    // PostgreSQL goes away.
    pg.down();
    let went = Instant::now();
    let (first, took_first) = timed(srv.get("/api/v1/me", c.token())).await;
    first.expect_problem(503, "database_unavailable");
    assert!(first.headers.contains_key("retry-after"));
    assert!(
        took_first < Duration::from_millis(2500),
        "the first request: {took_first:?}"
    );
    let (next, took_next) = timed(srv.get("/api/v1/appointments", t.token())).await;
    next.expect_problem(503, "database_unavailable");
    assert!(
        took_next < Duration::from_millis(500),
        "the next ones at once: {took_next:?}"
    );
    let (ready, took_ready) = timed(srv.get("/readyz", None)).await;
    let body = ready.expect_problem(503, "not_ready");
    assert!(
        body["detail"].as_str().unwrap().contains("database down"),
        "{body}"
    );
    assert!(took_ready < Duration::from_secs(1), "{took_ready:?}");
    srv.get("/healthz", None).await.expect(200);
    // The live room carries on.
    th.send(&candidate(c_pid)).await.unwrap();
    cl.wait_for(Duration::from_secs(3), |m| {
        matches!(m, ServerMessage::Signal { .. }).then_some(())
    })
    .await
    .expect("signals still relayed");
    // A new join gets a clear answer, not a hang.
    let (mut late, _) = timed(crate::peers::send_hello(
        &url(&spare),
        spare["token"].as_str().unwrap(),
        None,
        false,
    ))
    .await;
    let (code, took_join) = timed(late.wait_for(Duration::from_secs(5), |m| match m {
        ServerMessage::Error { code, .. } => Some(*code),
        _ => None,
    }))
    .await;
    assert_eq!(code.unwrap(), alcove_signaling::ErrorCode::Unavailable);
    assert!(took_join < Duration::from_secs(2), "{took_join:?}");
    assert!(matches!(
        late.recv_timeout(Duration::from_secs(3)).await.unwrap(),
        Incoming::Closed(Some(close::TRY_AGAIN_LATER), _)
    ));
    // The client's connection drops during the outage: an event the record must not lose.
    cl.drop_connection().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped_at = jiff::Timestamp::now();

    // PostgreSQL is back: everything recovers by itself.
    pg.up();
    let back = Instant::now();
    let recovered = loop {
        let r = srv.get("/api/v1/me", c.token()).await;
        if r.status.as_u16() == 200 {
            break back.elapsed();
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no recovery: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    srv.get("/readyz", None).await.expect(200);
    eprintln!(
        "database away {:?}: first answer in {took_first:?}, the next in {took_next:?}, readyz in {took_ready:?}, a join in {took_join:?}; recovered {recovered:?} after it was back",
        back - went
    );
    // The client comes back and the session goes on; the record has the drop made during
    // the outage, at its time, and the return.
    let cj = join_token(&srv, &c, id).await;
    let (_cl, cw) = hello(
        &url(&cj),
        cj["token"].as_str().unwrap(),
        Some(resume_token),
        false,
    )
    .await;
    assert!(matches!(cw, ServerMessage::Welcome { resumed: true, .. }));
    let deadline = Instant::now() + Duration::from_secs(10);
    let participant = loop {
        let sessions = srv
            .get(format!("/api/v1/appointments/{id}/sessions"), t.token())
            .await
            .expect(200);
        assert_eq!(sessions.as_array().unwrap().len(), 1, "{sessions}");
        let p = sessions[0]["participants"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["participant_id"] == c_pid.to_string())
            .cloned()
            .unwrap();
        if p["reconnects"].as_i64() == Some(1) && p["intervals"].as_array().unwrap().len() == 2 {
            break p;
        }
        assert!(
            Instant::now() < deadline,
            "the kept events were not written: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cut: jiff::Timestamp = participant["intervals"][0]["disconnected_at"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        cut <= dropped_at,
        "the drop is recorded at its own time: {cut} {dropped_at}"
    );
    assert!(
        srv.log_text()
            .contains("kept during the database's absence are written")
    );
    let _ = t_pid;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgresql_restart_is_ridden_out_by_itself() {
    let mut pg = OwnPostgres::start();
    let srv = ServerProcess::start_on(TestDb::at(&pg.url()), &[]).await;
    let c = srv.client("Client Restart").await;
    srv.get("/api/v1/me", c.token()).await.expect(200);
    let started = Instant::now();
    pg.down();
    pg.up();
    let restarted = started.elapsed();
    // The pool's connections died with the server; new ones are made by themselves.
    let back = Instant::now();
    let mut answers = Vec::new();
    loop {
        let r = srv.get("/api/v1/me", c.token()).await;
        answers.push(r.status.as_u16());
        if r.status.as_u16() == 200 {
            break;
        }
        assert_eq!(
            r.status.as_u16(),
            503,
            "only a clear 503 meanwhile: {}",
            r.text
        );
        assert!(back.elapsed() < Duration::from_secs(5), "{answers:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "PostgreSQL restarted in {restarted:?}; answers after: {answers:?}, back in {:?}",
        back.elapsed()
    );
    srv.get("/readyz", None).await.expect(200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_database_costs_a_request_its_deadline_and_nothing_else() {
    let db = TestDb::new(Backend::Postgres).await;
    let pg: std::net::SocketAddr = "127.0.0.1:5432".parse().unwrap();
    let proxy = SlowProxy::start(pg).await;
    let proxied = db
        .url
        .replacen("127.0.0.1:5432", &format!("127.0.0.1:{}", proxy.port), 1);
    assert_ne!(proxied, db.url, "the test database is on 127.0.0.1:5432");
    let url = db.url.clone();
    let srv = ServerProcess::start_on(
        TestDb::at(&proxied),
        &[
            ("DATABASE_URL", proxied.as_str()),
            ("ALCOVE_REQUEST_TIMEOUT", "3s"),
        ],
    )
    .await;
    let _keep = db;
    let _ = url;
    let c = srv.client("Client Slow").await;
    srv.get("/api/v1/me", c.token()).await.expect(200);

    // Every round trip to the database now takes 2 s more.
    proxy.set_delay(Duration::from_secs(2));
    let (r, took) = timed(srv.get("/api/v1/me", c.token())).await;
    assert_eq!(r.status.as_u16(), 503, "{}", r.text);
    let code = serde_json::from_str::<serde_json::Value>(&r.text).unwrap()["code"].clone();
    assert!(
        code == "timeout" || code == "database_unavailable",
        "{code}"
    );
    assert!(r.headers.contains_key("retry-after"));
    assert!(
        took < Duration::from_millis(3800),
        "within the deadline: {took:?}"
    );
    // What does not need the database is not held up.
    for path in ["/healthz", "/api/v1/client-config", "/metrics"] {
        let (r, took) = timed(srv.get(path, None)).await;
        assert_eq!(r.status.as_u16(), 200, "{path}");
        assert!(took < Duration::from_millis(500), "{path}: {took:?}");
    }
    // The database is fast again: requests work again by themselves.
    proxy.set_delay(Duration::ZERO);
    let back = Instant::now();
    loop {
        let r = srv.get("/api/v1/me", c.token()).await;
        if r.status.as_u16() == 200 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "no recovery: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "slow database: answered 503 {code} in {took:?}; recovered {:?} after",
        back.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_keeps_reads_loses_nothing_and_recovers() {
    let disk = SmallDisk::mount("16m");
    let db_url = format!("sqlite://{}/alcove.db", disk.path().display());
    let srv = ServerProcess::start_on(
        TestDb::at(&db_url),
        &[(
            "ALCOVE_DATA_DIR",
            disk.path().join("data").to_str().unwrap(),
        )],
    )
    .await;
    let t = srv.user_with_role("Dr Disk", Role::Therapist).await;
    let c = srv.client("Client Disk").await;
    let id = live_appointment(&srv, &t, &[&c]).await;
    // A small disk is already low: /readyz says so, and stays ready.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = srv.get("/readyz", None).await.expect(200);
        if r["disk"] == "low" {
            break;
        }
        assert!(Instant::now() < deadline, "disk low not reported: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        srv.log_text()
            .contains("free space under the database is low")
    );

    let filler = disk.fill();
    // Writes: a clear 503, at once.
    let (r, took) = timed(srv.post(
        "/api/v1/auth/register",
        None,
        serde_json::json!({"email": "new@example.com", "password": crate::helpers::PASSWORD, "display_name": "New"}),
    ))
    .await;
    r.expect_problem(503, "storage_full");
    assert!(took < Duration::from_secs(2), "{took:?}");
    let (r, _) = timed(srv.post(
        format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        serde_json::json!({"reason": "testing"}),
    ))
    .await;
    r.expect_problem(503, "storage_full");
    // Reads keep working: the account, the directory, free slots.
    srv.get("/api/v1/me", c.token()).await.expect(200);
    srv.get("/api/v1/therapists", None).await.expect(200);
    srv.get(
        format!("/api/v1/therapists/{}/slots?kind=session", t.id),
        None,
    )
    .await
    .expect(200);
    // But a read of health information is audited, and an access that cannot be recorded
    // is not served (fail closed, as HIPAA's audit controls ask).
    srv.get(format!("/api/v1/appointments/{id}"), c.token())
        .await
        .expect_problem(503, "storage_full");

    // Space again: writes work again by themselves.
    std::fs::remove_file(&filler).unwrap();
    let back = Instant::now();
    loop {
        let r = srv
            .post(
                "/api/v1/auth/register",
                None,
                serde_json::json!({"email": "new@example.com", "password": crate::helpers::PASSWORD, "display_name": "New"}),
            )
            .await;
        if r.status.as_u16() == 202 {
            break;
        }
        assert!(
            back.elapsed() < Duration::from_secs(10),
            "writes did not come back: {}",
            r.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "full disk: writes refused in {took:?}; back {:?} after space was freed",
        back.elapsed()
    );
    // Nothing corrupted: the database checks, and the audit trail's chain verifies.
    let alcove::store::Db::Sqlite(pool) = &srv.db else {
        unreachable!()
    };
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let out = Command::new(env!("CARGO_BIN_EXE_alcove"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &db_url)
        .env("ALCOVE_DATA_DIR", disk.path().join("data"))
        .args(["audit", "verify"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(srv);
}

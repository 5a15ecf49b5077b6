//! The `alcove` binary as a child process: for tests that read every log line it writes,
//! or kill it with SIGKILL.

use crate::helpers::{Api, Backend, PASSWORD, Session, TestDb};
use alcove::{
    auth::Passwords,
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

pub struct ServerProcess {
    child: Option<Child>,
    pub base: String,
    http: reqwest::Client,
    /// Every line the server wrote to stdout and stderr.
    pub logs: Arc<Mutex<Vec<String>>>,
    pub db: Db,
    env: Vec<(String, String)>,
    pub test_db: TestDb,
}

impl Api for ServerProcess {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl ServerProcess {
    /// Start `alcove` on a fresh database of `backend` at the most verbose log level.
    pub async fn start(backend: Backend, env: &[(&str, &str)]) -> ServerProcess {
        Self::start_on(TestDb::new(backend).await, env).await
    }

    /// Start `alcove` on the given database.
    pub async fn start_on(test_db: TestDb, env: &[(&str, &str)]) -> ServerProcess {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (child, base) = spawn(&test_db, &env, &logs, None);
        let db = Db::connect(&test_db.url, 2)
            .await
            .expect("test connects too");
        ServerProcess {
            child: Some(child),
            base,
            http: reqwest::Client::new(),
            logs,
            db,
            env,
            test_db,
        }
    }

    /// SIGKILL: no shutdown code runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().expect("SIGKILL");
            c.wait().unwrap();
        }
    }

    /// SIGTERM, as a service manager stops it.
    pub fn sigterm(&self) {
        sigterm(self.child.as_ref().expect("running").id());
    }

    /// Wait (up to `within`) for the process to exit, and return its exit status.
    pub async fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut c = self.child.take().expect("running");
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = c.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                panic!("the server did not exit within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The rooms the server handed over to its next start, as kept in the database.
    pub async fn kept_rooms(&self) -> Vec<String> {
        let rows: Vec<(String,)> = match &self.db {
            Db::Sqlite(p) => sqlx::query_as("SELECT snapshot FROM room_handovers")
                .fetch_all(p)
                .await
                .unwrap(),
            Db::Postgres(p) => sqlx::query_as("SELECT snapshot FROM room_handovers")
                .fetch_all(p)
                .await
                .unwrap(),
        };
        rows.into_iter().map(|(s,)| s).collect()
    }

    /// Start again on the same database and data folder (and port).
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "kill it first");
        let port = self.base.rsplit(':').next().unwrap().to_owned();
        let (child, base) = spawn(&self.test_db, &self.env, &self.logs, Some(&port));
        self.child = Some(child);
        self.base = base;
    }

    /// An account of any role, written to the database the server uses.
    pub async fn user_with_role(&self, name: &str, role: Role) -> Session {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase().replace(' ', "."),
            Uuid::new_v4().simple()
        );
        let hash = Passwords::new()
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
        self.login(&email).await
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().unwrap().join("\n")
    }
}

/// Send SIGTERM to `pid` (with the system's `kill`).
pub fn sigterm(pid: u32) {
    let ok = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill runs")
        .success();
    assert!(ok, "SIGTERM to {pid}");
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(
    db: &TestDb,
    env: &[(String, String)],
    logs: &Arc<Mutex<Vec<String>>>,
    port: Option<&str>,
) -> (Child, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_alcove"));
    cmd.current_dir(db.dir())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "trace")
        .env("DATABASE_URL", &db.url)
        .env("ALCOVE_DATA_DIR", db.dir().join("data"))
        .env(
            "ALCOVE_LISTEN",
            format!("127.0.0.1:{}", port.unwrap_or("0")),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("alcove starts");
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let logs = logs.clone();
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
        .unwrap_or_else(|_| panic!("alcove did not start: {}", logs.lock().unwrap().join("\n")));
    (child, format!("http://{addr}"))
}

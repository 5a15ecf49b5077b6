//! The `alcove` binary as an operator runs it: no setup, bad configuration, subcommands.

use crate::helpers::Api as _;
use crate::helpers::{Backend, PASSWORD, TestDb, spawn_app_on};
use crate::on_both_backends;
use std::{
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

const BIN: &str = env!("CARGO_BIN_EXE_alcove");

/// A command with a clean environment: none of the caller's ALCOVE_* or DATABASE_URL.
fn alcove(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("RUST_LOG", "info");
    c
}

on_both_backends!(user_create_makes_a_therapist_who_can_sign_in);

#[tokio::test]
async fn starts_with_no_setup_and_creates_its_database() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port differs from the README's command, so that tests never collide on 8080.
    let mut child = alcove(dir.path())
        .env("ALCOVE_LISTEN", "127.0.0.1:0")
        .env("ALCOVE_SURPRISE", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no listening line; got {lines:#?}"));
        lines.push(line.clone());
        if let Some(rest) = line.split("address=").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ALCOVE_SURPRISE") && l.contains("WARN")),
        "unknown variable warned about: {lines:#?}"
    );
    let r = reqwest::get(format!("http://{addr}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        dir.path().join("data/alcove.db").exists(),
        "SQLite database created"
    );
    assert!(
        dir.path().join("data/keys/current").exists(),
        "signing key generated"
    );
    let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(r.status(), 200);

    // SIGTERM: a clean exit.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = child.wait().unwrap();
    assert!(exit.success(), "graceful shutdown exits 0, got {exit:?}");
}

fn run(mut c: Command, stdin: Option<&str>) -> (bool, String) {
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut pipe = child.stdin.take().unwrap();
    if let Some(s) = stdin {
        pipe.write_all(s.as_bytes()).unwrap();
    }
    drop(pipe);
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn bad_configuration_fails_at_start_naming_the_option() {
    let dir = tempfile::tempdir().unwrap();
    for (var, value, expect) in [
        ("ALCOVE_LISTEN", "not-an-address", "--listen"),
        ("ALCOVE_ACCESS_TOKEN_TTL", "forever", "--access-token-ttl"),
        ("ALCOVE_ACCESS_TOKEN_TTL", "3d", "ALCOVE_ACCESS_TOKEN_TTL"),
        (
            "ALCOVE_ALLOW_REGISTRATION",
            "perhaps",
            "--allow-registration",
        ),
        ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
        ("ALCOVE_PUBLIC_URL", "ftp://x", "ALCOVE_PUBLIC_URL"),
    ] {
        let mut c = alcove(dir.path());
        c.env(var, value);
        let (ok, out) = run(c, None);
        assert!(!ok, "{var}={value} must fail");
        assert!(
            out.contains(expect),
            "{var}={value}: message should name {expect}: {out}"
        );
    }
    // A TOML file with a bad value or an unknown key.
    let file = dir.path().join("alcove.toml");
    std::fs::write(&file, "db_max_connections = \"many\"\n").unwrap();
    let mut c = alcove(dir.path());
    c.env("ALCOVE_CONFIG", &file);
    let (ok, out) = run(c, None);
    assert!(!ok && out.contains("db_max_connections"), "{out}");
    std::fs::write(&file, "listen_port = 80\n").unwrap();
    let mut c = alcove(dir.path());
    c.env("ALCOVE_CONFIG", &file);
    let (ok, out) = run(c, None);
    assert!(!ok && out.contains("listen_port"), "{out}");
    assert!(
        !dir.path().join("data").exists(),
        "nothing created on a failed start"
    );
}

#[test]
fn help_documents_every_option() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = alcove(dir.path());
    c.arg("--help");
    let (ok, top) = run(c, None);
    assert!(ok);
    let mut c = alcove(dir.path());
    c.args(["serve", "--help"]);
    let (ok, serve) = run(c, None);
    assert!(ok);
    for var in alcove::cli::known_env_vars() {
        assert!(
            serve.contains(&var) || top.contains(&var),
            "{var} is not in --help"
        );
    }
    for cmd in ["serve", "migrate", "user", "keys"] {
        assert!(top.contains(cmd), "{cmd} in alcove --help");
    }
}

async fn user_create_makes_a_therapist_who_can_sign_in(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cwd = db.dir().to_owned();
    let create = |email: &str, role: &str, password: &str| {
        let mut c = alcove(&cwd);
        c.env("DATABASE_URL", &db.url).args([
            "user",
            "create",
            "--email",
            email,
            "--name",
            "Dr Rivers",
            "--role",
            role,
        ]);
        run(c, Some(&format!("{password}\n")))
    };
    let (ok, out) = create("rivers@example.com", "therapist", PASSWORD);
    assert!(ok, "{out}");
    assert!(out.contains("created therapist account"), "{out}");
    assert!(!out.contains(PASSWORD), "the password is never echoed");
    let (ok, out) = create("RIVERS@example.com", "therapist", PASSWORD);
    assert!(!ok && out.contains("already exists"), "{out}");
    let (ok, out) = create("weak@example.com", "therapist", "12345");
    assert!(!ok && out.contains("weak password"), "{out}");
    let (ok, out) = create("x@example.com", "overlord", PASSWORD);
    assert!(!ok && out.contains("client, therapist, admin"), "{out}");
    let (ok, out) = create("empty@example.com", "client", "");
    assert!(!ok && out.contains("standard input"), "{out}");

    let app = spawn_app_on(db, |_| {}).await;
    let s = app.login("rivers@example.com").await;
    let me = app.get("/api/v1/me", s.token()).await.expect(200);
    assert_eq!(me["role"], "therapist");
    assert_eq!(me["display_name"], "Dr Rivers");
    app.get(&format!("/api/v1/therapists/{}", s.id), None)
        .await
        .expect(200);
}

#[test]
fn keys_rotate_and_list() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = alcove(dir.path());
    c.args(["keys", "rotate"]);
    let (ok, out) = run(c, None);
    assert!(ok, "{out}");
    let mut c = alcove(dir.path());
    c.args(["keys", "rotate"]);
    assert!(run(c, None).0);
    let mut c = alcove(dir.path());
    c.args(["keys", "list"]);
    let (ok, out) = run(c, None);
    assert!(ok);
    assert_eq!(
        out.lines().filter(|l| !l.contains("INFO")).count(),
        2,
        "{out}"
    );
    assert_eq!(out.matches("(current)").count(), 1);
}

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

on_both_backends!(
    user_create_makes_a_therapist_who_can_sign_in,
    user_list_shows_roles_and_states_and_never_a_hash
);

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
    let mut c = alcove(dir.path());
    c.args(["probe", "--help"]);
    let (ok, probe) = run(c, None);
    assert!(ok);
    for var in alcove::cli::known_env_vars() {
        assert!(
            serve.contains(&var) || top.contains(&var) || probe.contains(&var),
            "{var} is not in --help"
        );
    }
    for cmd in [
        "serve", "migrate", "user", "keys", "config", "backup", "audit",
    ] {
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

async fn user_list_shows_roles_and_states_and_never_a_hash(backend: Backend) {
    let db = TestDb::new(backend).await;
    let cwd = db.dir().to_owned();
    let cli = |args: &[&str], stdin: Option<&str>| {
        let mut c = alcove(&cwd);
        c.env("DATABASE_URL", &db.url).args(args);
        run(c, stdin)
    };
    for (email, role) in [
        ("ada@example.com", "admin"),
        ("rivers@example.com", "therapist"),
        ("casey@example.com", "client"),
    ] {
        let (ok, out) = cli(
            &[
                "user", "create", "--email", email, "--name", "Some One", "--role", role,
            ],
            Some(&format!("{PASSWORD}\n")),
        );
        assert!(ok, "{out}");
    }
    let (ok, out) = cli(&["user", "disable", "--email", "casey@example.com"], None);
    assert!(ok, "{out}");

    let (ok, out) = cli(&["user", "list"], None);
    assert!(ok, "{out}");
    let line = |email: &str| {
        out.lines()
            .find(|l| l.contains(email))
            .unwrap_or_else(|| panic!("{email} not listed: {out}"))
            .to_owned()
    };
    assert!(
        line("ada@example.com").contains("admin") && line("ada@example.com").contains("active")
    );
    assert!(line("rivers@example.com").contains("therapist"));
    assert!(
        line("casey@example.com").contains("client")
            && line("casey@example.com").contains("disabled")
    );
    assert!(out.contains("3 account(s)"), "{out}");
    assert!(!out.contains("$argon2"), "no password hash: {out}");
    assert!(!out.contains(PASSWORD));

    let (ok, out) = cli(&["user", "list", "--role", "therapist", "--json"], None);
    assert!(ok, "{out}");
    let rows: Vec<serde_json::Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 1, "{out}");
    assert_eq!(rows[0]["email"], "rivers@example.com");
    assert_eq!(rows[0]["state"], "active");
    assert!(rows[0].get("password_hash").is_none());
}

#[test]
fn config_check_prints_the_effective_values_with_secrets_hidden() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = alcove(dir.path());
    c.args(["config", "check"])
        .env(
            "DATABASE_URL",
            "postgres://alcove:s3cret-db-pw@db.internal:5432/alcove",
        )
        .env(
            "ALCOVE_REDIS_URL",
            "redis://:s3cret-redis-pw@redis.internal:6379",
        )
        .env("ALCOVE_TURN_URLS", "turn:turn.example.org:3478")
        .env("ALCOVE_TURN_SECRET", "s3cret-turn")
        .env("ALCOVE_WEBHOOK_URLS", "https://hooks.example.org/alcove")
        .env("ALCOVE_WEBHOOK_SECRET", "s3cret-hook")
        .env("ALCOVE_SIGNAL_GRACE", "45s")
        .args(["--listen", "0.0.0.0:9000"]);
    let (ok, out) = run(c, None);
    assert!(ok, "{out}");
    for expect in [
        "listen = 0.0.0.0:9000",
        "signal_grace = 45s",
        "database_url = postgres://alcove:***@db.internal:5432/alcove",
        "redis_url = redis://:***@redis.internal:6379",
        "turn_secret = (set, hidden)",
        "webhook_secret = (set, hidden)",
        "signing_keys = (none)",
        "relay_only = false",
    ] {
        assert!(out.contains(expect), "{expect} in: {out}");
    }
    assert!(!out.contains("s3cret"), "a secret shown: {out}");
    assert!(
        !dir.path().join("data").exists(),
        "checking creates nothing"
    );

    // Invalid: exit status 1, naming the option.
    let mut c = alcove(dir.path());
    c.args(["config", "check"]).env("ALCOVE_RELAY_ONLY", "true");
    let (ok, out) = run(c, None);
    assert!(!ok, "{out}");
    assert!(out.contains("ALCOVE_RELAY_ONLY"), "{out}");
    let mut c = alcove(dir.path());
    c.args(["config", "check"])
        .env("ALCOVE_SIGNAL_GRACE", "soon");
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_makes_a_consistent_copy_while_the_server_runs() {
    let db = TestDb::new(Backend::Sqlite).await;
    let cwd = db.dir().to_owned();
    let url = db.url.clone();
    let app = spawn_app_on(db, |_| {}).await;
    app.client("Casey Backup").await;
    let copy = cwd.join("alcove-backup.db");
    let mut c = alcove(&cwd);
    c.env("DATABASE_URL", &url)
        .args(["backup", "--to", copy.to_str().unwrap()]);
    let (ok, out) = run(c, None);
    assert!(ok, "{out}");
    assert!(out.contains("integrity ok"), "{out}");
    // The server kept running; the copy holds the account and opens as a database of its own.
    app.get("/healthz", None).await.expect(200);
    let restored = alcove::store::Db::connect(&format!("sqlite://{}", copy.display()), 1)
        .await
        .unwrap();
    let alcove::store::Db::Sqlite(pool) = &restored else {
        unreachable!()
    };
    let n: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE display_name = 'Casey Backup'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(n, 1);
    // Never over an existing file.
    let mut c = alcove(&cwd);
    c.env("DATABASE_URL", &url)
        .args(["backup", "--to", copy.to_str().unwrap()]);
    let (ok, out) = run(c, None);
    assert!(!ok && out.contains("exists already"), "{out}");
    // PostgreSQL: its own tools.
    let pg = TestDb::new(Backend::Postgres).await;
    let mut c = alcove(&cwd);
    c.env("DATABASE_URL", &pg.url)
        .args(["backup", "--to", cwd.join("pg.db").to_str().unwrap()]);
    let (ok, out) = run(c, None);
    assert!(!ok && out.contains("pg_dump"), "{out}");
}

/// Every option in the code (each environment variable of the command line, each key of
/// the configuration) is in docs/configuration.md.
#[test]
fn the_configuration_reference_lists_every_option() {
    let doc = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/configuration.md"
    ))
    .unwrap();
    for var in alcove::cli::known_env_vars() {
        assert!(
            doc.contains(&format!("`{var}`")),
            "{var} is not in docs/configuration.md"
        );
    }
    let config = serde_json::to_value(alcove::config::Config::default()).unwrap();
    let mut keys: Vec<String> = config.as_object().unwrap().keys().cloned().collect();
    // Secrets are not serialised; they are options all the same.
    keys.extend(["turn_secret", "webhook_secret", "signing_keys", "smtp_url"].map(String::from));
    for key in keys {
        assert!(
            doc.contains(&format!("| `{key}` |")),
            "configuration key {key} is not in docs/configuration.md"
        );
    }
}

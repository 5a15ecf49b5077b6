//! The files of `deploy/`, checked by what runs here: the YAML parses, every command and
//! environment variable they give the server is one the binary knows and accepts (through
//! `alcove config check`), probes and timeouts fit the drain, `systemd-analyze` verifies
//! the unit, Caddy validates its configuration, and the image is built and run by a Docker
//! daemon of the test's own. (The coturn file is the one the TURN tests run: see turn.rs.)

use clap::Parser as _;
use serde::Deserialize as _;
use serde_json::Value;
use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("deploy/{file}: {e}"))
}

/// Every YAML document of a file, as JSON values.
fn yaml(file: &str) -> Vec<Value> {
    let text = read(file);
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            let mut v = serde_norway::Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("deploy/{file} does not parse: {e}"));
            // Compose's `<<: *anchor` merge keys, as Docker Compose applies them.
            v.apply_merge()
                .unwrap_or_else(|e| panic!("deploy/{file}: merge keys: {e}"));
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// Variables the server reads besides its own options.
const OTHER_VARS: &[&str] = &["RUST_LOG"];

fn assert_known_vars<'a>(what: &str, vars: impl IntoIterator<Item = &'a String>) {
    let known = alcove::cli::known_env_vars();
    for v in vars {
        assert!(
            known.contains(v) || OTHER_VARS.contains(&v.as_str()),
            "{what}: {v} is not an option of the binary"
        );
    }
}

/// `alcove <args>` parses as the binary's command line would.
fn assert_command(what: &str, args: &[&str]) {
    let mut argv = vec!["alcove"];
    argv.extend(args);
    if let Err(e) = alcove::cli::Cli::try_parse_from(&argv) {
        panic!(
            "{what}: `{}` is not a command of the binary: {e}",
            argv.join(" ")
        );
    }
}

/// `alcove config check` with exactly `env`: the configuration is valid.
fn assert_config_checks(what: &str, env: &BTreeMap<String, String>) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_alcove"));
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(tempfile::tempdir().unwrap().keep())
        .args(["config", "check"]);
    for (k, v) in env {
        // Placeholders stand for secrets of the operator's own; a real key for the keys.
        let v = if k == "ALCOVE_SIGNING_KEYS" {
            alcove::auth::KeySet::generate_pem().unwrap()
        } else {
            v.clone()
        };
        c.env(k, v);
    }
    let out = c.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{what}: alcove config check says: {text}"
    );
    text
}

fn seconds(v: &str) -> u64 {
    humantime_secs(v).unwrap_or_else(|| panic!("not a duration: {v}"))
}

fn humantime_secs(v: &str) -> Option<u64> {
    let v = v.trim();
    let (n, unit) = v.split_at(v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len()));
    let n: u64 = n.parse().ok()?;
    Some(match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return None,
    })
}

/// A `.env` file as Docker Compose reads it (double quotes may span lines).
fn dotenv(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (k, v) = line.split_once('=').expect("KEY=value");
        let mut v = v.to_owned();
        if let Some(rest) = v.strip_prefix('"') {
            let mut value = rest.to_owned();
            while !value.ends_with('"') {
                value.push('\n');
                value.push_str(lines.next().expect("a closing quote"));
            }
            value.pop();
            v = value;
        }
        out.insert(k.to_owned(), v);
    }
    out
}

#[test]
fn the_compose_stack_runs_the_binary_as_it_is() {
    let compose = &yaml("docker-compose.yml")[0];
    let services = compose["services"].as_object().unwrap();
    for name in [
        "alcove-a", "alcove-b", "caddy", "postgres", "redis", "coturn",
    ] {
        assert!(services.contains_key(name), "service {name}");
    }
    let env_file = dotenv(&read("alcove.env.example"));
    assert_known_vars("alcove.env.example", env_file.keys());
    let drain = seconds(&env_file["ALCOVE_DRAIN_TIMEOUT"]);
    for node in ["alcove-a", "alcove-b"] {
        let s = &services[node];
        let args: Vec<&str> = s["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_command(node, &args);
        let health: Vec<&str> = s["healthcheck"]["test"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap())
            .collect();
        assert_eq!(health[..2], ["CMD", "alcove"], "{node}");
        assert_command(&format!("{node} healthcheck"), &health[2..]);
        assert_eq!(s["env_file"], "alcove.env");
        let own: BTreeMap<String, String> = s["environment"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        assert_known_vars(node, own.keys());
        assert!(
            seconds(s["stop_grace_period"].as_str().unwrap()) > drain,
            "{node}: stop_grace_period longer than the drain"
        );
        // The whole configuration of the node is valid.
        let mut env = env_file.clone();
        env.extend(own);
        let shown = assert_config_checks(node, &env);
        assert!(shown.contains("redis_url = redis://redis:6379"), "{shown}");
    }
    // The files it mounts are here.
    for file in ["Caddyfile", "coturn/turnserver.conf", "Dockerfile"] {
        assert!(deploy(file).is_file(), "deploy/{file}");
    }
    let coturn: Vec<&str> = services["coturn"]["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(coturn[..2], ["-c", "/etc/coturn/turnserver.conf"]);
    assert!(
        services["redis"]["command"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "--appendonly"),
        "Redis keeps an append-only file"
    );
}

#[test]
fn the_kubernetes_manifests_fit_the_binary_and_the_drain() {
    let mut docs = BTreeMap::new();
    for file in yaml("k8s/kustomization.yaml")[0]["resources"]
        .as_array()
        .unwrap()
    {
        let file = format!("k8s/{}", file.as_str().unwrap());
        for d in yaml(&file) {
            docs.insert(d["kind"].as_str().unwrap().to_owned(), d);
        }
    }
    for kind in [
        "ConfigMap",
        "Secret",
        "Deployment",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
    ] {
        assert!(docs.contains_key(kind), "{kind} in the kustomization");
    }
    let config: BTreeMap<String, String> = docs["ConfigMap"]["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let secret: BTreeMap<String, String> = docs["Secret"]["stringData"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_known_vars("configmap.yaml", config.keys());
    assert_known_vars("secret.yaml", secret.keys());
    let mut env = config.clone();
    env.extend(secret);
    env.insert("ALCOVE_NODE_ID".into(), "alcove-7d9f-abcde".into());
    assert_config_checks("configmap + secret", &env);

    let d = &docs["Deployment"];
    let labels = &d["spec"]["template"]["metadata"]["labels"];
    assert_eq!(&d["spec"]["selector"]["matchLabels"], labels);
    let pod = &d["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args: Vec<&str> = c["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_command("deployment", &args);
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    let port = |name: &str| {
        c["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("port {name}"))["containerPort"]
            .as_u64()
            .unwrap()
    };
    let listen_port =
        |var: &str| -> u64 { config[var].rsplit(':').next().unwrap().parse().unwrap() };
    assert_eq!(port("http"), listen_port("ALCOVE_LISTEN"));
    assert_eq!(port("metrics"), listen_port("ALCOVE_METRICS_LISTEN"));
    for from in c["envFrom"].as_array().unwrap() {
        let (kind, r) = if from.get("configMapRef").is_some() {
            ("ConfigMap", &from["configMapRef"])
        } else {
            ("Secret", &from["secretRef"])
        };
        assert_eq!(r["name"], docs[kind]["metadata"]["name"], "{kind}");
    }
    // preStop pause + drain < grace period.
    let pause = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        .as_u64()
        .unwrap();
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain = seconds(&config["ALCOVE_DRAIN_TIMEOUT"]);
    assert!(pause + drain < grace, "{pause} + {drain} < {grace}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);

    let pdb = &docs["PodDisruptionBudget"];
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], labels);
    let svc = &docs["Service"];
    for (k, v) in svc["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&labels[k], v, "the Service selects the pods");
    }
    for p in svc["spec"]["ports"].as_array().unwrap() {
        port(p["targetPort"].as_str().unwrap());
    }
    let ing = &docs["Ingress"];
    let backend = &ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"];
    assert_eq!(backend["name"], svc["metadata"]["name"]);
    let annotations = ing["metadata"]["annotations"].as_object().unwrap();
    for t in ["proxy-read-timeout", "proxy-send-timeout"] {
        let v: u64 = annotations[&format!("nginx.ingress.kubernetes.io/{t}")]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(v >= 3600, "WebSockets stay open for a session: {t} = {v}");
    }
}

#[test]
fn the_systemd_unit_verifies_and_is_sandboxed() {
    let unit = read("systemd/alcove.service");
    // systemd-analyze checks that ExecStart exists: point it at the binary just built.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("alcove.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/alcove", env!("CARGO_BIN_EXE_alcove")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("systemd-analyze runs (Debian's systemd; scripts/test installs it)");
    let text =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.trim().is_empty(), "{text}");
    // Exposure 2.0 or less on systemd's 0–10 scale.
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=20"])
        .arg(&copy)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exposure over 2.0: {}",
        text.lines().last().unwrap_or_default()
    );
    for directive in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "StateDirectory=alcove",
        "KillSignal=SIGTERM",
    ] {
        assert!(unit.contains(directive), "{directive}");
    }
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .unwrap()
        .parse()
        .unwrap();
    let drain = alcove::config::Config::default().drain_timeout;
    assert!(
        Duration::from_secs(stop) > drain,
        "the stop timeout fits the drain"
    );
    let exec: Vec<&str> = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap()
        .split_whitespace()
        .skip(1)
        .collect();
    assert_command("ExecStart", &exec);
}

#[test]
fn caddy_validates_its_configuration() {
    let out = Command::new("caddy")
        .args(["adapt", "--adapter", "caddyfile", "--validate", "--config"])
        .arg(deploy("Caddyfile"))
        .env("ALCOVE_DOMAIN", "alcove.example.org")
        .output()
        .expect("caddy runs (Debian's caddy; scripts/test installs it)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let adapted: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = adapted.to_string();
    for upstream in ["alcove-a:8080", "alcove-b:8080"] {
        assert!(text.contains(upstream), "{upstream} is proxied");
    }
    assert!(text.contains("/readyz"), "health checks on /readyz");
}

#[test]
fn the_dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let file = read("Dockerfile");
    let froms = file.lines().filter(|l| l.starts_with("FROM ")).count();
    assert_eq!(froms, 2, "a build stage and a small run stage");
    assert!(file.contains("cargo build --release --locked -p alcove"));
    assert!(file.contains("USER 10001:10001"), "not root");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for line in file
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for src in &parts[1..parts.len() - 1] {
            assert!(
                root.join(src).exists(),
                "COPY {src}: no such path in the repository"
            );
        }
    }
    let health = file
        .lines()
        .find(|l| l.contains("CMD [\"alcove\""))
        .expect("a HEALTHCHECK through the binary");
    assert!(health.contains("\"healthcheck\""), "{health}");
    assert_command("HEALTHCHECK", &["healthcheck"]);
    assert!(file.contains("CMD [\"serve\"]"));
    assert_command("CMD", &["serve"]);
    // The ENV instruction, with its continuation lines.
    let mut env_text = String::new();
    let mut in_env = false;
    for line in file.lines() {
        if line.starts_with("ENV ") {
            in_env = true;
        }
        if in_env {
            env_text.push_str(line.trim_end_matches('\\'));
            env_text.push(' ');
            if !line.ends_with('\\') {
                break;
            }
        }
    }
    let env: BTreeMap<String, String> = env_text
        .trim_start_matches("ENV ")
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    assert!(env.contains_key("ALCOVE_DATA_DIR"), "{env:?}");
    assert_known_vars("Dockerfile ENV", env.keys());
    let exposed = file
        .lines()
        .find_map(|l| l.strip_prefix("EXPOSE "))
        .unwrap()
        .trim();
    assert!(env["ALCOVE_LISTEN"].ends_with(&format!(":{exposed}")));
}

/// A Docker daemon of the test's own (Debian's docker.io): its own data folder and socket,
/// no bridge and no iptables rules (it touches nothing of the host's networking), stopped
/// by its pid.
struct Dockerd {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dockerd {
    fn start() -> Dockerd {
        let uid = Command::new("id").arg("-u").output().unwrap();
        assert_eq!(
            String::from_utf8_lossy(&uid.stdout).trim(),
            "0",
            "the image test runs a Docker daemon: it needs root"
        );
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("docker.sock");
        let child = Command::new("dockerd")
            .args(["--iptables=false", "--ip-forward=false", "--bridge=none"])
            .args(["--storage-driver=vfs", "--data-root"])
            .arg(dir.path().join("root"))
            .arg("--exec-root")
            .arg(dir.path().join("exec"))
            .arg("--pidfile")
            .arg(dir.path().join("docker.pid"))
            .arg("--host")
            .arg(format!("unix://{}", socket.display()))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("dockerd runs (Debian's docker.io; scripts/test installs it)");
        let d = Dockerd {
            child,
            socket,
            _dir: dir,
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while !d.docker(&["info"]).status.success() {
            assert!(
                std::time::Instant::now() < deadline,
                "dockerd did not start"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        d
    }

    fn docker(&self, args: &[&str]) -> std::process::Output {
        Command::new("docker")
            .arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .args(args)
            .env("DOCKER_BUILDKIT", "0")
            .output()
            .expect("the docker client runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on 127.0.0.1:`port`: the status, if it answers.
fn http_status(port: u16, path: &str) -> Option<u16> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    s.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Debian bookworm (minbase) as a tarball, made with debootstrap from Debian's mirror
/// once per machine (registries of images are not reachable here; Debian's is).
fn debian_base() -> PathBuf {
    let cache = Path::new("/var/cache/alcove-tests");
    let tar = cache.join("debian-bookworm-minbase.tar");
    if tar.is_file() {
        return tar;
    }
    std::fs::create_dir_all(cache).unwrap();
    let root = tempfile::tempdir().unwrap();
    let out = Command::new("debootstrap")
        .args(["--variant=minbase", "bookworm"])
        .arg(root.path())
        .arg("http://deb.debian.org/debian")
        .output()
        .expect("debootstrap runs (scripts/test installs it)");
    assert!(
        out.status.success(),
        "debootstrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let part = cache.join(format!(
        "debian-bookworm-minbase.tar.{}",
        std::process::id()
    ));
    let ok = Command::new("tar")
        .arg("-C")
        .arg(root.path())
        .arg("-cf")
        .arg(&part)
        .arg(".")
        .status()
        .unwrap()
        .success();
    assert!(ok, "tar of the Debian base");
    std::fs::rename(&part, &tar).unwrap();
    tar
}

/// The image, built and run for real: the Dockerfile's run stage, verbatim, on a Debian
/// base made here (its `FROM debian:bookworm-slim` resolves to it), with the binary just
/// built standing in for its build stage (which needs the Rust image from Docker Hub, not
/// reachable here). It runs as uid 10001, serves, turns healthy through its HEALTHCHECK,
/// and `docker stop` drains it to exit status 0.
#[test]
fn the_image_builds_and_runs_unprivileged_healthy_and_drains_on_stop() {
    let docker = Dockerd::start();
    let base = debian_base();
    docker.ok(&["import", base.to_str().unwrap(), "debian:bookworm-slim"]);
    let ctx = tempfile::tempdir().unwrap();
    let ok = Command::new("strip")
        .arg("-o")
        .arg(ctx.path().join("alcove"))
        .arg(env!("CARGO_BIN_EXE_alcove"))
        .status()
        .expect("strip (binutils) runs")
        .success();
    assert!(ok, "strip");
    let dockerfile = read("Dockerfile");
    let lines: Vec<&str> = dockerfile.lines().collect();
    let run_stage = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.starts_with("FROM "))
        .nth(1)
        .expect("a run stage")
        .0;
    std::fs::write(
        ctx.path().join("Dockerfile"),
        format!(
            "FROM scratch AS build\nCOPY alcove /alcove\n\n{}\n",
            lines[run_stage..].join("\n")
        ),
    )
    .unwrap();
    docker.ok(&[
        "build",
        "--network",
        "host",
        "-t",
        "alcove-image-test",
        ctx.path().to_str().unwrap(),
    ]);
    assert_eq!(
        docker.ok(&[
            "inspect",
            "--format",
            "{{.Config.User}}",
            "alcove-image-test"
        ]),
        "10001:10001"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let name = format!("alcove-image-test-{}", std::process::id());
    docker.ok(&[
        "run",
        "-d",
        "--network",
        "host",
        "--name",
        &name,
        "-e",
        &format!("ALCOVE_LISTEN=127.0.0.1:{port}"),
        "alcove-image-test",
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = http_status(port, "/healthz") {
            assert_eq!(status, 200);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the container does not answer: {}",
            docker.ok(&["logs", &name])
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        docker.ok(&["exec", &name, "id", "-u"]) == "10001",
        "not root inside"
    );
    // Its HEALTHCHECK (`alcove healthcheck`) turns it healthy.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = docker.ok(&["inspect", "--format", "{{.State.Health.Status}}", &name]);
        if status == "healthy" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "health: {status}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // `docker stop` (SIGTERM) drains it: exit status 0.
    docker.ok(&["stop", "-t", "30", &name]);
    assert_eq!(
        docker.ok(&["inspect", "--format", "{{.State.ExitCode}}", &name]),
        "0"
    );
    let logs = docker.docker(&["logs", &name]);
    let logs =
        String::from_utf8_lossy(&logs.stdout).to_string() + &String::from_utf8_lossy(&logs.stderr);
    assert!(logs.contains("draining"), "{logs}");
    docker.ok(&["rm", &name]);
}

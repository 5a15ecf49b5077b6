//! A real coturn (Debian's `turnserver`) on loopback for one test, run with the deployment's
//! configuration file (deploy/coturn/turnserver.conf). `allow-loopback-peers` and
//! `allowed-peer-ip=127.0.0.1` are for tests only: deployments must not set them.

use std::{
    net::{TcpListener, TcpStream, UdpSocket},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct Coturn {
    child: Child,
    pub port: u16,
    pub secret: String,
    dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

impl Coturn {
    /// coturn as deployed, but letting tests relay between peers on loopback.
    pub fn start() -> Coturn {
        Self::start_with(true)
    }

    /// coturn exactly as deployed: no relaying to loopback or private addresses.
    pub fn start_as_deployed() -> Coturn {
        Self::start_with(false)
    }

    /// As deployed, listening and relaying on IPv4 and IPv6 loopback.
    pub fn start_as_deployed_dual_stack() -> Coturn {
        Self::start_full(false, true)
    }

    fn start_with(allow_loopback_peers: bool) -> Coturn {
        Self::start_full(allow_loopback_peers, false)
    }

    fn start_full(allow_loopback_peers: bool, ipv6: bool) -> Coturn {
        let bin = which("turnserver").expect(
            "coturn is required for the TURN tests and is not installed: apt-get install coturn (scripts/test installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
        let base = 20000 + (u32::from(port) * 7 % 40000) as u16;
        // The deployment's own configuration (deploy/coturn/turnserver.conf), with only what
        // a test on loopback needs changed on the command line (which coturn lets override
        // the file): addresses and ports, the secret, no TLS, files in the test's folder,
        // and loopback peers allowed (the deployment denies them: tests relay between two
        // peers on 127.0.0.1).
        let conf_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/coturn/turnserver.conf"
        );
        let d = dir.path().display();
        let child = Command::new(bin)
            .arg("-c")
            .arg(conf_path)
            .args([
                "--listening-ip=127.0.0.1".to_owned(),
                "--relay-ip=127.0.0.1".to_owned(),
                format!("--listening-port={port}"),
                format!("--min-port={base}"),
                format!("--max-port={}", base + 200),
                "--realm=alcove-test".to_owned(),
                format!("--static-auth-secret={secret}"),
                "--no-tls".to_owned(),
                "--no-dtls".to_owned(),
                format!("--userdb={d}/turndb"),
                format!("--pidfile={d}/turnserver.pid"),
                format!("--log-file={d}/turn.log"),
                "--verbose".to_owned(),
            ])
            .args(if ipv6 {
                &["--listening-ip=::1", "--relay-ip=::1"][..]
            } else {
                &[][..]
            })
            .args(if allow_loopback_peers {
                &["--allow-loopback-peers", "--allowed-peer-ip=127.0.0.1"][..]
            } else {
                &[][..]
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("turnserver starts");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "coturn did not start listening on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Coturn {
            child,
            port,
            secret,
            dir,
        }
    }

    pub fn url(&self) -> String {
        format!("turn:127.0.0.1:{}?transport=udp", self.port)
    }

    /// coturn's log, for assertions and for failures.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("turn.log")).unwrap_or_default()
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        // Only the process this test started, by its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.is_file())
}

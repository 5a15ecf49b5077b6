//! A real coturn (Debian's `turnserver`) on loopback for one test, with a static auth
//! secret. `allow-loopback-peers` is for tests only: deployments must not set it.

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
    pub fn start() -> Coturn {
        let bin = which("turnserver").expect(
            "coturn is required for the TURN tests and is not installed: apt-get install coturn (scripts/test installs it)",
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let secret = format!("test-secret-{}", uuid::Uuid::new_v4().simple());
        let base = 20000 + (u32::from(port) * 7 % 40000) as u16;
        let conf = format!(
            "listening-ip=127.0.0.1\nrelay-ip=127.0.0.1\nlistening-port={port}\nmin-port={base}\nmax-port={}\n\
             realm=alcove-test\nuse-auth-secret\nstatic-auth-secret={secret}\nfingerprint\n\
             allow-loopback-peers\nno-multicast-peers\nno-tls\nno-dtls\nno-cli\n\
             userdb={d}/turndb\npidfile={d}/turnserver.pid\nlog-file={d}/turn.log\nsimple-log\nverbose\n",
            base + 200,
            d = dir.path().display()
        );
        let conf_path = dir.path().join("turnserver.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = Command::new(bin)
            .arg("-c")
            .arg(&conf_path)
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

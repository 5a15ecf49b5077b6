//! TLS terminated by Alcove itself (`ALCOVE_TLS_CERT`, `ALCOVE_TLS_KEY`): HTTPS and the
//! signalling WebSocket over real TLS (rustls on both sides, a certificate made for the
//! test), HSTS, no cookies, no plain HTTP on the TLS port, and clear errors for a bad
//! configuration.

use crate::helpers::{Backend, spawn_app_with};
use alcove::config::Config;
use alcove_signaling::{ClientMessage, ErrorCode, ServerMessage};
use futures_util::{SinkExt as _, StreamExt as _};
use rustls::pki_types::pem::PemObject as _;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::Message;

struct Cert {
    dir: tempfile::TempDir,
    pem: String,
}

impl Cert {
    fn new() -> Cert {
        let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem = ck.cert.pem();
        std::fs::write(dir.path().join("cert.pem"), &pem).unwrap();
        std::fs::write(dir.path().join("key.pem"), ck.signing_key.serialize_pem()).unwrap();
        Cert { dir, pem }
    }
    fn cert(&self) -> std::path::PathBuf {
        self.dir.path().join("cert.pem")
    }
    fn key(&self) -> std::path::PathBuf {
        self.dir.path().join("key.pem")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alcove_serves_https_and_secure_websockets_itself() {
    let cert = Cert::new();
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.tls_cert = Some(cert.cert());
        c.tls_key = Some(cert.key());
    })
    .await;
    let port = app.base.rsplit(':').next().unwrap().to_owned();
    let base = format!("https://localhost:{port}");
    let https = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem.as_bytes()).unwrap())
        .https_only(true)
        .build()
        .unwrap();

    // HTTPS, with HSTS on every response.
    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
    // The token issuer and links follow the scheme.
    let me = https
        .post(format!("{base}/api/v1/auth/register"))
        .json(&serde_json::json!({"email": "tls@example.com", "password": crate::helpers::PASSWORD, "display_name": "Tess"}))
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 202);
    let login = https
        .post(format!("{base}/api/v1/auth/login"))
        .json(
            &serde_json::json!({"email": "tls@example.com", "password": crate::helpers::PASSWORD}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    // Tokens travel in bodies and headers, never in cookies.
    assert!(me.headers().get("set-cookie").is_none());
    assert!(login.headers().get("set-cookie").is_none());
    let body: serde_json::Value = login.json().await.unwrap();
    let access = body["access_token"].as_str().unwrap().to_owned();
    let r = https
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(&access)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("strict-transport-security"));
    assert_eq!(
        app.state.jwt.issuer(),
        format!("https://{}", app.base.trim_start_matches("http://"))
    );

    // The signalling WebSocket over TLS: a hello with a bad token is answered in protocol.
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(cert.pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let stream = tokio_rustls::TlsConnector::from(Arc::new(tls))
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut ws, _) =
        tokio_tungstenite::client_async(format!("wss://localhost:{port}/api/v1/signal"), stream)
            .await
            .expect("WebSocket over TLS");
    let hello = ClientMessage::Hello {
        token: "not-a-token".into(),
        resume_token: None,
        reset: false,
    };
    ws.send(Message::text(serde_json::to_string(&hello).unwrap()))
        .await
        .unwrap();
    let answer = loop {
        match ws.next().await.expect("an answer").unwrap() {
            Message::Text(t) => break serde_json::from_str::<ServerMessage>(&t).unwrap(),
            _ => continue,
        }
    };
    assert!(
        matches!(
            answer,
            ServerMessage::Error {
                code: ErrorCode::InvalidToken,
                ..
            }
        ),
        "{answer:?}"
    );

    // Plain HTTP to the TLS port gets no answer (no downgrade), and the server is still
    // up for everyone else.
    let plain = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap();
    let r = plain
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(
        r.is_err() || r.as_ref().unwrap().status() != 200,
        "plain HTTP is not served on the TLS port"
    );
    // A client that opens a socket and never says anything holds up no one.
    let _silent = tokio::net::TcpStream::connect(format!("127.0.0.1:{port}"))
        .await
        .unwrap();
    let r = https.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_http_behind_a_proxy_sends_hsts_only_for_an_https_public_url() {
    let app = spawn_app_with(Backend::Sqlite, |_| {}).await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert!(!r.headers().contains_key("strict-transport-security"));
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.public_url = Some("https://therapy.example.org".into());
    })
    .await;
    let r = app
        .http
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );
}

#[tokio::test]
async fn a_bad_tls_configuration_fails_at_start_naming_the_option() {
    let cert = Cert::new();
    let base = || {
        let db = tempfile::tempdir().unwrap();
        let c = Config {
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: db.path().join("data"),
            ..Config::default()
        };
        (c, db)
    };
    // One without the other.
    let (mut c, _d) = base();
    c.tls_cert = Some(cert.cert());
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("ALCOVE_TLS_KEY")
    );
    let (mut c, _d) = base();
    c.tls_key = Some(cert.key());
    assert!(
        c.check()
            .unwrap_err()
            .to_string()
            .contains("ALCOVE_TLS_CERT")
    );
    // A missing file, a key given as the certificate, a certificate given as the key.
    for (cert_file, key_file, names) in [
        (
            cert.dir.path().join("nope.pem"),
            cert.key(),
            "ALCOVE_TLS_CERT",
        ),
        (cert.key(), cert.key(), "ALCOVE_TLS_CERT"),
        (cert.cert(), cert.cert(), "ALCOVE_TLS_KEY"),
    ] {
        let (mut c, _d) = base();
        c.tls_cert = Some(cert_file);
        c.tls_key = Some(key_file);
        c.check().unwrap();
        let err = match alcove::startup::Application::build(c).await {
            Ok(_) => panic!("a bad TLS configuration must not start"),
            Err(e) => format!("{e:#}"),
        };
        assert!(err.contains(names), "{err}");
    }
}

//! TLS terminated by Alcove itself, for a single-server install without a reverse proxy
//! (`ALCOVE_TLS_CERT` and `ALCOVE_TLS_KEY`). The usual deployment keeps Alcove on plain
//! HTTP behind a proxy that terminates TLS (`deploy/Caddyfile`): see `docs/security.md`.
//!
//! rustls with its ring provider, TLS 1.2 and 1.3, HTTP/1.1 (WebSockets included). Each
//! handshake runs in a task of its own with a deadline, so a client that opens a socket and
//! says nothing holds up no one else.

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use std::{io, net::SocketAddr, path::Path, sync::Arc, time::Duration};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, server::TlsStream};

/// Longest a TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The server's TLS settings from a PEM certificate chain and a PEM private key.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("ALCOVE_TLS_CERT: cannot read {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| {
            format!(
                "ALCOVE_TLS_CERT: {} is not a PEM certificate chain",
                cert.display()
            )
        })?;
    if chain.is_empty() {
        anyhow::bail!(
            "ALCOVE_TLS_CERT: {} holds no certificate (-----BEGIN CERTIFICATE-----)",
            cert.display()
        );
    }
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "ALCOVE_TLS_KEY: cannot read a PEM private key from {}",
            key.display()
        )
    })?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .context("ALCOVE_TLS_CERT and ALCOVE_TLS_KEY do not make a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A listener that hands the HTTP server only connections whose TLS handshake completed.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, config: Arc<rustls::ServerConfig>) -> io::Result<Self> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        tokio::spawn(async move {
            loop {
                let (sock, addr) = match tcp.accept().await {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: wait rather than spin.
                        tracing::debug!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                if tx.is_closed() {
                    break;
                }
                let _ = sock.set_nodelay(true);
                let (acceptor, tx) = (acceptor.clone(), tx.clone());
                tokio::spawn(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(sock)).await {
                        Ok(Ok(tls)) => {
                            let _ = tx.send((tls, addr)).await;
                        }
                        // Plain HTTP on the TLS port, a scanner, a timeout: nothing to
                        // serve (and the peer's address is not logged).
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                });
            }
        });
        Ok(Self { ready, local })
    }
}

/// The peer address of a TLS connection, for `into_make_service_with_connect_info`; the
/// router turns it into the `ConnectInfo<SocketAddr>` the rest of the server reads
/// ([`with_peer_addresses`]).
#[derive(Clone, Copy, Debug)]
pub struct TlsPeer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, TlsListener>>
    for TlsPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, TlsListener>) -> Self {
        TlsPeer(*stream.remote_addr())
    }
}

/// `router`, with each request's `ConnectInfo<TlsPeer>` also given as
/// `ConnectInfo<SocketAddr>`, as on plain HTTP.
pub fn with_peer_addresses(router: axum::Router) -> axum::Router {
    use axum::extract::{ConnectInfo, Request};
    router.layer(axum::middleware::map_request(
        |mut req: Request| async move {
            if let Some(ConnectInfo(TlsPeer(addr))) =
                req.extensions().get::<ConnectInfo<TlsPeer>>().copied()
            {
                req.extensions_mut().insert(ConnectInfo(addr));
            }
            req
        },
    ))
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(c) => c,
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

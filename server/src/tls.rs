//! TLS terminated by Alcove itself, for a single-server install without a reverse proxy
//! (`ALCOVE_TLS_CERT` and `ALCOVE_TLS_KEY`). The usual deployment keeps Alcove on plain
//! HTTP behind a proxy that terminates TLS (`deploy/Caddyfile`): see `docs/security.md`.
//!
//! rustls with its ring provider, TLS 1.2 and 1.3, HTTP/1.1 (WebSockets included). Each
//! handshake runs in its connection's own task with a deadline ([`crate::serve`]), so a
//! client that opens a socket and says nothing holds up no one else.

use anyhow::Context as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject as _};
use std::{path::Path, sync::Arc, time::Duration};

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

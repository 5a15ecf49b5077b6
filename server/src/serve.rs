//! The HTTP server's accept loop: what `axum::serve` does, plus the protections a public
//! server needs against clients that hold connections rather than use them.
//!
//! - **Slow headers (slowloris)**: a request's headers must arrive within
//!   `ALCOVE_HEADER_TIMEOUT` (10 s); a connection that trickles them is closed. (hyper
//!   enforces this only with a timer, which `axum::serve` does not give it.)
//! - **Connections per client address**: at most `ALCOVE_MAX_CONNECTIONS_PER_ADDRESS`
//!   (256) open at once from one address (IPv6: one /64), WebSockets included for as long as
//!   they live; past it a new connection is closed at once. Trusted proxies
//!   (`ALCOVE_TRUSTED_PROXIES`) are not limited, and their idle connections are kept for
//!   5 minutes (longer than their own idle timeouts): the proxy limits its own clients.
//! - **TLS** (`ALCOVE_TLS_CERT`): each handshake in the connection's own task, with a
//!   deadline.
//!
//! Requests get the peer's address as `ConnectInfo<SocketAddr>`, as with `axum::serve`.
//! Stopping: no new connections; open ones finish their requests (graceful shutdown).

use axum::{Router, extract::ConnectInfo};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::{conn::auto::Builder, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use std::{
    collections::HashMap,
    future::Future,
    io,
    net::IpAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll},
    time::Duration,
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tower::ServiceExt as _;

/// How long a trusted proxy's connection may sit idle or send headers: longer than the
/// proxies' own idle timeouts (Caddy 2 min, nginx 60 s), so that they close first.
const PROXY_IDLE: Duration = Duration::from_secs(300);

/// How the server accepts connections.
#[derive(Clone)]
pub struct ServeOptions {
    /// Longest a request's headers may take to arrive.
    pub header_timeout: Duration,
    /// Connections open at once per client address (0: no limit).
    pub per_address: usize,
    /// Peers that are not limited (trusted reverse proxies).
    pub exempt: Arc<[ipnet::IpNet]>,
    /// TLS terminated here.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// Where refused connections are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// The key a client address is counted under: the address, or its /64 for IPv6.
fn address_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
        v4 => v4,
    }
}

/// Open connections per client address.
#[derive(Default)]
struct Counts(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; the count goes down when it is dropped (with the socket).
struct Slot {
    counts: Arc<Counts>,
    key: Option<IpAddr>,
}

impl Counts {
    fn take(self: &Arc<Self>, key: Option<IpAddr>, limit: usize) -> Option<Slot> {
        if let Some(k) = key {
            let mut m = self.0.lock().expect("counts lock");
            let n = m.entry(k).or_insert(0);
            if *n >= limit {
                return None;
            }
            *n += 1;
        }
        Some(Slot {
            counts: self.clone(),
            key,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(k) = self.key {
            let mut m = self.counts.0.lock().expect("counts lock");
            if let Some(n) = m.get_mut(&k) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&k);
                }
            }
        }
    }
}

/// A socket that holds its slot for as long as it lives, also after an upgrade to a
/// WebSocket.
struct Counted {
    io: TcpStream,
    _slot: Slot,
}

impl AsyncRead for Counted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// Serve `router` on `listener` until `shutdown` completes, then let open connections
/// finish.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> io::Result<()> {
    let counts = Arc::new(Counts::default());
    let graceful = GracefulShutdown::new();
    let make = |header_timeout: Duration| {
        let mut b = Builder::new(TokioExecutor::new());
        b.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(header_timeout);
        b.http2().timer(TokioTimer::new());
        Arc::new(b)
    };
    let builder = make(opts.header_timeout);
    // A trusted reverse proxy keeps idle connections for reuse (Caddy: 2 min); closing
    // them first would race its next request into a 502. Its own clients' slowness is the
    // proxy's to cut off.
    let proxy_builder = make(PROXY_IDLE);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let from_proxy = opts.exempt.iter().any(|n| n.contains(&peer.ip()));
        let key = (opts.per_address > 0 && !from_proxy).then(|| address_key(peer.ip()));
        let Some(slot) = counts.take(key, opts.per_address) else {
            // Over the limit: closed at once (the address is not logged).
            opts.metrics.refused_connection();
            continue;
        };
        // Small messages go out at once: without TCP_NODELAY a `welcome` followed by a
        // `lobby`, or an offer followed by its first candidates, waits for the peer's
        // delayed ACK (40 ms on Linux) behind Nagle's algorithm (docs/BENCHMARKS.md).
        let _ = tcp.set_nodelay(true);
        let io = Counted {
            io: tcp,
            _slot: slot,
        };
        let service = {
            let router = router.clone();
            tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            })
        };
        let service = TowerToHyperService::new(service);
        let (builder, first_bytes) = if from_proxy {
            (proxy_builder.clone(), PROXY_IDLE)
        } else {
            (builder.clone(), opts.header_timeout)
        };
        let (watcher, tls) = (graceful.watcher(), opts.tls.clone());
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte: a connection that sends
            // nothing at all is closed here after the same time.
            let mut first = [0u8; 1];
            match tokio::time::timeout(first_bytes, io.io.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            match tls {
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
                Some(tls) => {
                    let accept = tokio_rustls::TlsAcceptor::from(tls).accept(io);
                    let io = match tokio::time::timeout(crate::tls::HANDSHAKE_TIMEOUT, accept).await
                    {
                        Ok(Ok(io)) => io,
                        // Plain HTTP on the TLS port, a scanner, a timeout: nothing to serve.
                        Ok(Err(e)) => {
                            tracing::debug!(error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("TLS handshake timed out");
                            return;
                        }
                    };
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    let _ = watcher.watch(conn.into_owned()).await;
                }
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_counted_per_ipv4_address_and_ipv6_slash_64() {
        let k = |s: &str| address_key(s.parse().unwrap());
        assert_eq!(k("192.0.2.1"), k("192.0.2.1"));
        assert_ne!(k("192.0.2.1"), k("192.0.2.2"));
        assert_eq!(k("2001:db8:1:2:aaaa::1"), k("2001:db8:1:2:bbbb::2"));
        assert_ne!(k("2001:db8:1:2::1"), k("2001:db8:1:3::1"));
        assert_eq!(k("::ffff:192.0.2.1"), k("192.0.2.1"));
    }

    #[test]
    fn a_slot_is_given_back_when_its_connection_ends() {
        let counts = Arc::new(Counts::default());
        let key = Some(address_key("192.0.2.1".parse().unwrap()));
        let a = counts.take(key, 2).unwrap();
        let _b = counts.take(key, 2).unwrap();
        assert!(counts.take(key, 2).is_none(), "the third is refused");
        assert!(
            counts.take(Some("192.0.2.9".parse().unwrap()), 2).is_some(),
            "another address is not"
        );
        drop(a);
        assert!(counts.take(key, 2).is_some(), "a slot came back");
        assert!(
            counts.take(None, 2).is_some(),
            "exempt peers are not counted"
        );
    }
}

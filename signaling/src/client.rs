//! A Rust client for the signalling protocol, over `ws://` (tests, benchmarks, tools).

use crate::protocol::{ClientMessage, ServerMessage};
use futures_util::{SinkExt as _, StreamExt as _, stream::SplitSink, stream::SplitStream};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{self, Message, client::IntoClientRequest as _, http::HeaderValue},
};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What the server sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Message(ServerMessage),
    /// A text frame that is not a known server message.
    Other(String),
    /// The server closed the connection, with its code and reason.
    Closed(Option<u16>, String),
}

/// A client error.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("websocket: {0}")]
    Ws(#[from] tungstenite::Error),
    #[error("timed out waiting for the server")]
    Timeout,
    #[error("{0}")]
    Unexpected(String),
}

/// A signalling connection.
pub struct SignalClient {
    ws: Ws,
}

impl std::fmt::Debug for SignalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SignalClient")
    }
}

fn incoming(m: Message) -> Option<Incoming> {
    match m {
        Message::Text(t) => Some(match serde_json::from_str::<ServerMessage>(&t) {
            Ok(m) => Incoming::Message(m),
            Err(_) => Incoming::Other(t.to_string()),
        }),
        Message::Close(c) => Some(match c {
            Some(f) => Incoming::Closed(Some(f.code.into()), f.reason.to_string()),
            None => Incoming::Closed(None, String::new()),
        }),
        _ => None,
    }
}

/// The next message or close from a WebSocket stream, skipping pings and pongs.
async fn next_incoming<S>(ws: &mut S) -> Result<Incoming, ClientError>
where
    S: futures_util::Stream<Item = Result<Message, tungstenite::Error>> + Unpin,
{
    loop {
        match ws.next().await {
            Some(Ok(m)) => {
                if let Some(i) = incoming(m) {
                    return Ok(i);
                }
            }
            Some(Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed))
            | None => return Ok(Incoming::Closed(None, String::new())),
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

impl SignalClient {
    /// Connect to `url` (`ws://host:port/api/v1/signal`), optionally with an `Origin`.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<Self, ClientError> {
        let mut req = url.into_client_request()?;
        if let Some(o) = origin {
            req.headers_mut().insert(
                "origin",
                HeaderValue::from_str(o).map_err(|e| ClientError::Unexpected(e.to_string()))?,
            );
        }
        let (ws, _) = tokio_tungstenite::connect_async(req).await?;
        Ok(Self { ws })
    }

    /// Connect over a socket whose receive buffer is `bytes` (the kernel may round it):
    /// a reader on a small buffer makes the server's writes to it back up sooner, as a
    /// phone on a poor network would (tests of flow control use it).
    pub async fn connect_with_receive_buffer(url: &str, bytes: u32) -> Result<Self, ClientError> {
        let req = url.into_client_request()?;
        let host = req.uri().host().unwrap_or("127.0.0.1").to_owned();
        let port = req.uri().port_u16().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))?
            .next()
            .ok_or_else(|| ClientError::Unexpected(format!("{host} does not resolve")))?;
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()
        } else {
            tokio::net::TcpSocket::new_v6()
        }
        .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        socket
            .set_recv_buffer_size(bytes)
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| ClientError::Unexpected(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream)).await?;
        Ok(Self { ws })
    }

    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).expect("client messages serialise");
        self.send_text(text).await
    }

    /// Send any text frame (tests send malformed ones on purpose).
    pub async fn send_text(&mut self, text: impl Into<String>) -> Result<(), ClientError> {
        self.ws.send(Message::text(text.into())).await?;
        Ok(())
    }

    /// Send a raw WebSocket message.
    pub async fn send_raw(&mut self, m: Message) -> Result<(), ClientError> {
        self.ws.send(m).await?;
        Ok(())
    }

    /// The next message or close, skipping pings and pongs (answered automatically).
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        next_incoming(&mut self.ws).await
    }

    pub async fn recv_timeout(&mut self, d: Duration) -> Result<Incoming, ClientError> {
        tokio::time::timeout(d, self.recv())
            .await
            .map_err(|_| ClientError::Timeout)?
    }

    /// Receive until `pick` accepts a message (within `d`), returning what it returns.
    /// Messages it declines are skipped; a close is an error.
    pub async fn wait_for<T>(
        &mut self,
        d: Duration,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> Result<T, ClientError> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.recv_timeout(left).await? {
                Incoming::Message(m) => {
                    if let Some(t) = pick(&m) {
                        return Ok(t);
                    }
                }
                Incoming::Other(_) => {}
                Incoming::Closed(code, reason) => {
                    return Err(ClientError::Unexpected(format!(
                        "closed ({code:?} {reason}) while waiting"
                    )));
                }
            }
        }
    }

    /// Close the connection without `leave` (as a dropped network would).
    pub async fn drop_connection(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Split into a sender and a receiver for concurrent use.
    pub fn split(self) -> (SignalSender, SignalReceiver) {
        let (tx, rx) = self.ws.split();
        (SignalSender { tx }, SignalReceiver { rx })
    }
}

/// The sending half of a [`SignalClient`].
pub struct SignalSender {
    tx: SplitSink<Ws, Message>,
}

impl SignalSender {
    pub async fn send(&mut self, msg: &ClientMessage) -> Result<(), ClientError> {
        let text = serde_json::to_string(msg).expect("client messages serialise");
        self.tx.send(Message::text(text)).await?;
        Ok(())
    }

    pub async fn close(mut self) {
        let _ = self.tx.close().await;
    }
}

/// The receiving half of a [`SignalClient`].
pub struct SignalReceiver {
    rx: SplitStream<Ws>,
}

impl SignalReceiver {
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        next_incoming(&mut self.rx).await
    }
}

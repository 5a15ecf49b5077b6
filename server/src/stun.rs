//! Just enough STUN and TURN (RFC 8489, RFC 8656) for `alcove probe` to ask a TURN server
//! for an allocation with the credentials this service issues, and to say plainly when the
//! server refuses them (a wrong `ALCOVE_TURN_SECRET`) or does not answer.

use anyhow::{anyhow, bail};
use std::{net::SocketAddr, time::Duration};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpStream, UdpSocket},
};

pub const COOKIE: u32 = 0x2112_A442;
// Methods and classes.
pub const ALLOCATE: u16 = 0x0003;
pub const REFRESH: u16 = 0x0004;
pub const CREATE_PERMISSION: u16 = 0x0008;
pub const SUCCESS: u16 = 0x0100;
pub const ERROR: u16 = 0x0110;
// Attributes.
pub const USERNAME: u16 = 0x0006;
pub const MESSAGE_INTEGRITY: u16 = 0x0008;
pub const ERROR_CODE: u16 = 0x0009;
pub const LIFETIME: u16 = 0x000D;
pub const XOR_PEER_ADDRESS: u16 = 0x0012;
pub const REALM: u16 = 0x0014;
pub const NONCE: u16 = 0x0015;
pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
pub const REQUESTED_TRANSPORT: u16 = 0x0019;

/// A STUN message: its type, transaction id and attributes.
pub struct Msg {
    pub kind: u16,
    pub tid: [u8; 12],
    pub attrs: Vec<(u16, Vec<u8>)>,
}

impl Msg {
    pub fn request(method: u16) -> Msg {
        let mut tid = [0u8; 12];
        getrandom::fill(&mut tid).expect("the system random source works");
        Msg {
            kind: method,
            tid,
            attrs: Vec::new(),
        }
    }

    pub fn attr(mut self, t: u16, v: impl Into<Vec<u8>>) -> Msg {
        self.attrs.push((t, v.into()));
        self
    }

    pub fn get(&self, t: u16) -> Option<&[u8]> {
        self.attrs
            .iter()
            .find(|(k, _)| *k == t)
            .map(|(_, v)| v.as_slice())
    }

    fn header(&self, len: usize) -> Vec<u8> {
        let mut h = Vec::with_capacity(20 + len);
        h.extend_from_slice(&self.kind.to_be_bytes());
        h.extend_from_slice(&(len as u16).to_be_bytes());
        h.extend_from_slice(&COOKIE.to_be_bytes());
        h.extend_from_slice(&self.tid);
        h
    }

    /// The message, with MESSAGE-INTEGRITY under `key` when given.
    pub fn encode(&self, key: Option<&[u8]>) -> Vec<u8> {
        let mut attrs = Vec::new();
        for (t, v) in &self.attrs {
            attrs.extend_from_slice(&t.to_be_bytes());
            attrs.extend_from_slice(&(v.len() as u16).to_be_bytes());
            attrs.extend_from_slice(v);
            attrs.resize(attrs.len().div_ceil(4) * 4, 0);
        }
        let Some(key) = key else {
            let mut m = self.header(attrs.len());
            m.extend(attrs);
            return m;
        };
        use hmac::{Hmac, KeyInit as _, Mac as _};
        // The length counts the integrity attribute (4 + 20) that follows.
        let mut m = self.header(attrs.len() + 24);
        m.extend(attrs);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(key).expect("HMAC takes any key");
        mac.update(&m);
        m.extend_from_slice(&MESSAGE_INTEGRITY.to_be_bytes());
        m.extend_from_slice(&20u16.to_be_bytes());
        m.extend_from_slice(&mac.finalize().into_bytes());
        m
    }

    /// A message from bytes (`None` if it is not one).
    pub fn decode(b: &[u8]) -> Option<Msg> {
        if b.len() < 20 {
            return None;
        }
        let kind = u16::from_be_bytes([b[0], b[1]]);
        let len = u16::from_be_bytes([b[2], b[3]]) as usize;
        let mut tid = [0u8; 12];
        tid.copy_from_slice(&b[8..20]);
        let mut attrs = Vec::new();
        let mut i = 20;
        while i + 4 <= 20 + len && i + 4 <= b.len() {
            let t = u16::from_be_bytes([b[i], b[i + 1]]);
            let l = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
            let v = b.get(i + 4..i + 4 + l)?;
            attrs.push((t, v.to_vec()));
            i += 4 + l.div_ceil(4) * 4;
        }
        Some(Msg { kind, tid, attrs })
    }

    /// The error code of an error response.
    pub fn error(&self) -> Option<u16> {
        self.get(ERROR_CODE)
            .filter(|v| v.len() >= 4)
            .map(|v| u16::from(v[2] & 0x07) * 100 + u16::from(v[3]))
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password).
pub fn long_term_key(username: &str, realm: &[u8], password: &str) -> Vec<u8> {
    use md5::Digest as _;
    md5::Md5::digest([username.as_bytes(), b":", realm, b":", password.as_bytes()].concat())
        .to_vec()
}

/// Where a `turn:` URL points, and over which transport.
fn target(url: &str) -> anyhow::Result<(String, bool)> {
    let rest = url
        .strip_prefix("turn:")
        .ok_or_else(|| anyhow!("{url} is not a turn: URL"))?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let tcp = query.split('&').any(|kv| kv == "transport=tcp");
    let hostport = if hostport.starts_with('[') {
        if hostport.contains("]:") {
            hostport.to_owned()
        } else {
            format!("{hostport}:3478")
        }
    } else if hostport.contains(':') {
        hostport.to_owned()
    } else {
        format!("{hostport}:3478")
    };
    Ok((hostport, tcp))
}

/// One STUN transaction over UDP (retransmitted) or TCP.
struct Link {
    udp: Option<(UdpSocket, SocketAddr)>,
    tcp: Option<TcpStream>,
}

impl Link {
    async fn open(url: &str) -> anyhow::Result<Link> {
        let (hostport, tcp) = target(url)?;
        let addr = tokio::net::lookup_host(&hostport)
            .await
            .map_err(|e| anyhow!("{hostport} does not resolve: {e}"))?
            .next()
            .ok_or_else(|| anyhow!("{hostport} does not resolve"))?;
        if tcp {
            let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
                .await
                .map_err(|_| anyhow!("no TCP connection to the TURN server at {addr} within 5 s"))?
                .map_err(|e| anyhow!("no TCP connection to the TURN server at {addr}: {e}"))?;
            Ok(Link {
                udp: None,
                tcp: Some(s),
            })
        } else {
            let bind: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse()?
            } else {
                "[::]:0".parse()?
            };
            let s = UdpSocket::bind(bind).await?;
            Ok(Link {
                udp: Some((s, addr)),
                tcp: None,
            })
        }
    }

    async fn exchange(&mut self, m: &Msg, key: Option<&[u8]>) -> anyhow::Result<Msg> {
        let bytes = m.encode(key);
        if let Some(s) = &mut self.tcp {
            s.write_all(&bytes).await?;
            let mut head = [0u8; 20];
            tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut head))
                .await
                .map_err(|_| anyhow!("no answer from the TURN server over TCP within 5 s"))??;
            let len = u16::from_be_bytes([head[2], head[3]]) as usize;
            let mut body = vec![0u8; len];
            s.read_exact(&mut body).await?;
            let all = [head.as_slice(), &body].concat();
            return Msg::decode(&all)
                .ok_or_else(|| anyhow!("the TURN server's answer is not STUN"));
        }
        let (s, addr) = self.udp.as_ref().expect("one link");
        for wait in [500u64, 1000, 2000] {
            s.send_to(&bytes, addr).await?;
            let mut buf = [0u8; 1500];
            let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
            while let Ok(Ok((n, _))) =
                tokio::time::timeout_at(deadline, s.recv_from(&mut buf)).await
            {
                if let Some(r) = Msg::decode(&buf[..n]).filter(|r| r.tid == m.tid) {
                    return Ok(r);
                }
            }
        }
        bail!(
            "no answer from the TURN server at {addr} over UDP (is it running, and is UDP to it allowed?)"
        )
    }
}

/// Ask the TURN server at `url` for a UDP relay with these credentials, and give it back.
pub async fn allocate(url: &str, username: &str, password: &str) -> anyhow::Result<()> {
    let mut link = Link::open(url).await?;
    let transport = vec![17u8, 0, 0, 0];
    let first = link
        .exchange(
            &Msg::request(ALLOCATE).attr(REQUESTED_TRANSPORT, transport.clone()),
            None,
        )
        .await?;
    if first.kind == ALLOCATE | SUCCESS {
        bail!(
            "the TURN server at {url} relays for anyone, without credentials: set use-auth-secret"
        );
    }
    if first.error() != Some(401) {
        bail!(
            "the TURN server at {url} answered error {:?} to an allocation",
            first.error()
        );
    }
    let realm = first
        .get(REALM)
        .ok_or_else(|| anyhow!("the TURN server at {url} named no realm"))?
        .to_vec();
    let mut nonce = first
        .get(NONCE)
        .ok_or_else(|| anyhow!("the TURN server at {url} gave no nonce"))?
        .to_vec();
    let key = long_term_key(username, &realm, password);
    for _ in 0..2 {
        let m = Msg::request(ALLOCATE)
            .attr(REQUESTED_TRANSPORT, transport.clone())
            .attr(USERNAME, username.as_bytes())
            .attr(REALM, realm.clone())
            .attr(NONCE, nonce.clone());
        let r = link.exchange(&m, Some(&key)).await?;
        if r.kind == ALLOCATE | SUCCESS {
            // Give the relay back at once.
            let free = Msg::request(REFRESH)
                .attr(LIFETIME, 0u32.to_be_bytes().to_vec())
                .attr(USERNAME, username.as_bytes())
                .attr(REALM, realm.clone())
                .attr(NONCE, nonce.clone());
            let _ = link.exchange(&free, Some(&key)).await;
            return Ok(());
        }
        match r.error() {
            // A stale nonce: once more with the new one.
            Some(438) => {
                nonce = r.get(NONCE).unwrap_or_default().to_vec();
            }
            Some(401) => bail!(
                "the TURN server at {url} refused the credentials this service issued (401 Unauthorized): \
                 the service's ALCOVE_TURN_SECRET is not the TURN server's static-auth-secret \
                 (or the clocks of the two machines differ by more than the credentials' lifetime)"
            ),
            Some(486) => {
                bail!("the TURN server at {url} has too many allocations for this user (486)")
            }
            Some(508) => bail!("the TURN server at {url} has no relay ports left (508)"),
            other => bail!("the TURN server at {url} answered error {other:?} to an allocation"),
        }
    }
    bail!("the TURN server at {url} kept answering that the nonce is stale (438)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turn_urls() {
        assert_eq!(
            target("turn:127.0.0.1:3478?transport=udp").unwrap(),
            ("127.0.0.1:3478".into(), false)
        );
        assert_eq!(
            target("turn:turn.example.org?transport=tcp").unwrap(),
            ("turn.example.org:3478".into(), true)
        );
        assert_eq!(target("turn:[::1]").unwrap(), ("[::1]:3478".into(), false));
        assert!(target("stun:x").is_err());
    }

    #[test]
    fn messages_round_trip_and_carry_integrity() {
        let m = Msg::request(ALLOCATE).attr(USERNAME, b"abc".to_vec());
        let bytes = m.encode(Some(b"key"));
        let back = Msg::decode(&bytes).unwrap();
        assert_eq!(back.kind, ALLOCATE);
        assert_eq!(back.get(USERNAME), Some(&b"abc"[..]));
        assert_eq!(back.get(MESSAGE_INTEGRITY).map(<[u8]>::len), Some(20));
        assert_eq!(bytes.len(), 20 + 8 + 24);
    }
}

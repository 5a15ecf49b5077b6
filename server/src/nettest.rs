//! The network test (order 10): a WebRTC peer of the server's own that a person's browser
//! connects to before a session, through the same STUN/TURN servers as a real session, to
//! learn whether a session can work from where they are.
//!
//! The browser offers, with two data channels: `echo` (unordered, no retransmits: what it
//! receives it sends back) and `bulk` (reliable: on `{"send":N,"ms":T}` it uploads up to N
//! bytes for at most T ms, then says `done`). The server answers and measures:
//! 1. whether a connection forms, in how long, and by which path (the type of the remote
//!    candidate of the selected pair: a relayed browser needs TURN);
//! 2. the round-trip time and packet loss of [`PINGS`] small packets over `echo`;
//! 3. the upload rate of a bounded transfer over `bulk`.
//!
//! Then a [`Verdict`] with advice in plain words. The whole test is bounded in time
//! ([`TEST_LIMIT`]) and bytes ([`UPLOAD_BYTES`]). What is kept is the verdict, the path's
//! kind and the numbers: never an address, a candidate or an SDP (protocol:
//! `docs/network-test.md`).

use alcove_signaling::protocol::{Candidate, Description, IceServer};
use bytes::BytesMut;
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{
        PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
        RTCIceCandidateInit, RTCIceCandidateType, RTCIceServer, RTCIceTransportPolicy,
        RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
        RTCStatsReportEntry, StatsSelector,
    },
};

/// The longest a test runs, from the browser's offer to the verdict.
pub const TEST_LIMIT: Duration = Duration::from_secs(20);
/// How long a connection may take to form before the path counts as blocked.
pub const CONNECT_LIMIT: Duration = Duration::from_secs(12);
/// Echo packets sent to measure round-trip time and loss.
pub const PINGS: u32 = 40;
/// Between two echo packets.
const PING_GAP: Duration = Duration::from_millis(25);
/// How long a late echo still counts.
const ECHO_GRACE: Duration = Duration::from_millis(1500);
/// The upload transfer's bounds: this many bytes, for at most this long.
pub const UPLOAD_BYTES: usize = 2 * 1024 * 1024;
pub const UPLOAD_MS: u64 = 3000;

/// Candidates taken from one browser (a browser gathers a handful).
const MAX_CANDIDATES: u32 = 64;

/// A round-trip time above this makes a session feel laggy.
const SLOW_RTT_MS: f64 = 300.0;
/// Packet loss above this degrades video visibly.
const LOSSY: f64 = 0.05;
/// Below this upload, video must drop to a low resolution.
const THIN_UPLOAD_KBPS: f64 = 600.0;

/// What the test concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// A direct path works: a session can start.
    Ready,
    /// Only the TURN relay works: a session can start, through the relay.
    RelayOnly,
    /// No path works: a session cannot start from this network.
    Blocked,
}

impl Verdict {
    /// From its stored name (anything unknown is `blocked`).
    pub fn parse(s: &str) -> Verdict {
        match s {
            "ready" => Verdict::Ready,
            "relay_only" => Verdict::RelayOnly,
            _ => Verdict::Blocked,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ready => "ready",
            Verdict::RelayOnly => "relay_only",
            Verdict::Blocked => "blocked",
        }
    }
}

/// The figures and verdict of one test: what the browser is told and what is kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Outcome {
    pub verdict: Verdict,
    /// Why `blocked`, or what to watch otherwise: `no_candidates`, `no_relay`,
    /// `no_path`, `channel_failed`, `high_latency`, `high_loss`, `low_upload` (absent:
    /// nothing to say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Advice in plain words, for the person.
    pub advice: String,
    /// `direct`, `relay_udp`, `relay_tcp`, `relay_tls` or `relay` (absent: no connection).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// Whether the person asked for the relay path only.
    pub relay_forced: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rtt_ms: Option<f64>,
    /// Fraction of echo packets lost, 0 to 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packet_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upload_kbps: Option<f64>,
}

/// The ICE candidates the browser sent, counted by type. The relayed ones' addresses are
/// held in memory for the test's few seconds, to tell whether the selected pair goes
/// through the relay; nothing of them is kept or logged.
#[derive(Default, Clone)]
pub struct Gathered {
    pub host: u32,
    pub srflx: u32,
    pub relay: u32,
    relayed: Vec<(String, u16)>,
    lines: u32,
}

impl std::fmt::Debug for Gathered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gathered")
            .field("host", &self.host)
            .field("srflx", &self.srflx)
            .field("relay", &self.relay)
            .finish_non_exhaustive()
    }
}

impl Gathered {
    pub fn counts(host: u32, srflx: u32, relay: u32) -> Gathered {
        Gathered {
            host,
            srflx,
            relay,
            relayed: Vec::new(),
            lines: 0,
        }
    }

    /// Count one candidate line (`candidate:f 1 udp prio ADDR PORT typ relay …`).
    pub fn count(&mut self, line: &str) {
        self.lines += 1;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        let Some(i) = words.iter().position(|w| *w == "typ") else {
            return;
        };
        match words.get(i + 1) {
            Some(&"host") => self.host += 1,
            Some(&"srflx") | Some(&"prflx") => self.srflx += 1,
            Some(&"relay") => {
                self.relay += 1;
                if let (Some(addr), Some(port)) =
                    (words.get(4), words.get(5).and_then(|p| p.parse().ok()))
                {
                    self.relayed.push(((*addr).to_owned(), port));
                }
            }
            _ => {}
        }
    }

    /// Whether the browser offered relayed candidates only (so any path is relayed).
    fn relay_only(&self) -> bool {
        self.relay > 0 && self.host == 0 && self.srflx == 0
    }

    fn is_relayed(&self, addr: Option<&str>, port: u16) -> bool {
        addr.is_some_and(|a| self.relayed.iter().any(|(ra, rp)| ra == a && *rp == port))
    }

    fn total(&self) -> u32 {
        self.host + self.srflx + self.relay
    }

    /// Candidates counted so far, of any type or none.
    fn seen(&self) -> u32 {
        self.lines
    }
}

/// What the browser tells the test peer (a subset of the WebSocket protocol).
#[derive(Debug)]
pub enum FromBrowser {
    Description(Description),
    Candidate(Candidate),
    /// The TURN transport of its relayed candidate (`udp`, `tcp`, `tls`), when relayed.
    RelayProtocol(String),
}

/// What the test peer tells the browser.
#[derive(Debug)]
pub enum ToBrowser {
    Description(Description),
    Candidate(Candidate),
    /// A step began: `connecting`, `echo`, `upload`.
    Step(&'static str),
}

/// The verdict of a test that measured these figures.
pub fn judge(
    relay_forced: bool,
    gathered: Gathered,
    path: Option<String>,
    connect_ms: Option<i64>,
    echo: Option<(f64, f64)>,
    upload_kbps: Option<f64>,
) -> Outcome {
    let (rtt_ms, packet_loss) = match echo {
        Some((r, l)) => (Some(r), Some(l)),
        None => (None, None),
    };
    let (verdict, reason) = match &path {
        None if gathered.total() == 0 && !relay_forced => (Verdict::Blocked, "no_candidates"),
        // Relay forced, the browser gathers relay candidates only: none means the relay
        // could not be reached (or refused the credentials).
        None if gathered.relay == 0 => (Verdict::Blocked, "no_relay"),
        None => (Verdict::Blocked, "no_path"),
        Some(_) if echo.is_none() => (Verdict::Blocked, "channel_failed"),
        Some(p) => {
            let v = if p == "direct" {
                Verdict::Ready
            } else {
                Verdict::RelayOnly
            };
            let warning = if packet_loss.unwrap_or(0.0) > LOSSY {
                "high_loss"
            } else if rtt_ms.unwrap_or(0.0) > SLOW_RTT_MS {
                "high_latency"
            } else if upload_kbps.is_some_and(|k| k < THIN_UPLOAD_KBPS) {
                "low_upload"
            } else {
                ""
            };
            (v, warning)
        }
    };
    let reason = (!reason.is_empty()).then(|| reason.to_owned());
    Outcome {
        verdict,
        advice: advice(verdict, reason.as_deref(), relay_forced),
        reason,
        path,
        relay_forced,
        connect_ms,
        rtt_ms,
        packet_loss,
        upload_kbps,
    }
}

/// Advice in plain words for a verdict and its reason.
pub fn advice(verdict: Verdict, reason: Option<&str>, relay_forced: bool) -> String {
    let base = match (verdict, reason) {
        (Verdict::Blocked, Some("no_candidates")) => {
            return "Your browser found no way to reach the service: it may be blocking \
                    WebRTC (an extension, or a privacy setting), or the network blocks it. \
                    Try another browser, or another network such as your phone's hotspot."
                .into();
        }
        (Verdict::Blocked, Some("no_path")) => {
            return "Your device reached the relay server, but no connection could be made \
                    through it. Try another network, or try again in a few minutes."
                .into();
        }
        (Verdict::Blocked, Some("channel_failed")) => {
            return "A connection formed but carried no data: the network is unstable. Try \
                    again, or try another network."
                .into();
        }
        (Verdict::Blocked, _) => {
            return "Your device could not reach our relay server, and no direct path \
                    worked either. A firewall is probably blocking it: try another network \
                    (such as your phone's hotspot), or ask your network's administrator to \
                    allow connections to the relay server."
                .into();
        }
        (Verdict::RelayOnly, _) if relay_forced => {
            "Your connection works through our relay server, as asked. You are ready for \
             your session."
        }
        (Verdict::RelayOnly, _) => {
            "Your connection works, through our relay server: your network blocks direct \
             connections. You are ready for your session; if the picture stutters, another \
             network may do better."
        }
        (Verdict::Ready, _) => "Your connection works directly. You are ready for your session.",
    };
    let warning = match reason {
        Some("high_loss") => {
            " Many packets were lost: video may freeze. A wired connection, or sitting closer \
             to the Wi-Fi router, usually helps."
        }
        Some("high_latency") => {
            " The connection is slow to answer: you may notice a delay in conversation. \
             Closing other programs that use the network may help."
        }
        Some("low_upload") => {
            " Your upload is thin: the other side may see you in low quality. Pausing uploads \
             and streaming on your network helps."
        }
        _ => "",
    };
    format!("{base}{warning}")
}

/// ICE servers as webrtc-rs takes them.
pub fn rtc_servers(servers: &[IceServer]) -> Vec<RTCIceServer> {
    servers
        .iter()
        .map(|s| RTCIceServer {
            urls: s.urls.clone(),
            username: s.username.clone().unwrap_or_default(),
            credential: s.credential.clone().unwrap_or_default(),
        })
        .collect()
}

/// A signalled candidate as webrtc-rs takes it.
pub fn rtc_candidate(c: Candidate) -> RTCIceCandidateInit {
    RTCIceCandidateInit {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_mline_index: c.sdp_m_line_index,
        username_fragment: c.username_fragment,
        ..Default::default()
    }
}

/// A webrtc-rs candidate as the signalling protocols carry it.
pub fn signal_candidate(c: RTCIceCandidateInit) -> Candidate {
    Candidate {
        candidate: c.candidate,
        sdp_mid: c.sdp_mid,
        sdp_m_line_index: c.sdp_mline_index,
        username_fragment: c.username_fragment,
    }
}

/// What a peer connection does, as channels.
pub struct PeerEvents {
    /// Its local ICE candidates, to send to the other side.
    pub candidates: mpsc::UnboundedReceiver<RTCIceCandidateInit>,
    pub states: mpsc::UnboundedReceiver<RTCPeerConnectionState>,
    /// Data channels the other side opened.
    pub channels: mpsc::UnboundedReceiver<Arc<dyn DataChannel>>,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    states: mpsc::UnboundedSender<RTCPeerConnectionState>,
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, e: RTCPeerConnectionIceEvent) {
        if let Ok(init) = e.candidate.to_json() {
            let _ = self.candidates.send(init);
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.states.send(s);
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }
}

/// A WebRTC peer of the service's own (the network test's, the probe's): these ICE
/// servers, the relay only when asked, bound to `udp`, mDNS off; and its events.
pub async fn peer_connection(
    servers: &[IceServer],
    relay: bool,
    udp: SocketAddr,
) -> webrtc::error::Result<(Arc<dyn PeerConnection>, PeerEvents)> {
    let (candidates, cand_rx) = mpsc::unbounded_channel();
    let (states, state_rx) = mpsc::unbounded_channel();
    let (channels, chan_rx) = mpsc::unbounded_channel();
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(rtc_servers(servers))
        .with_ice_transport_policy(if relay {
            RTCIceTransportPolicy::Relay
        } else {
            RTCIceTransportPolicy::All
        })
        .build();
    let pc = PeerConnectionBuilder::new()
        .with_setting_engine(no_mdns())
        .with_configuration(config)
        .with_handler(Arc::new(Handler {
            candidates,
            states,
            channels,
        }))
        .with_udp_addrs(vec![udp.to_string()])
        .build()
        .await?;
    Ok((
        Arc::new(pc),
        PeerEvents {
            candidates: cand_rx,
            states: state_rx,
            channels: chan_rx,
        },
    ))
}

/// Settings of the service's own WebRTC peers: no mDNS. A server cannot resolve the
/// `.local` names of a browser on another network, and mDNS needs a multicast route that
/// servers (and network namespaces) often lack.
pub fn no_mdns() -> webrtc::peer_connection::SettingEngine {
    webrtc::peer_connection::SettingEngineBuilder::new()
        .with_multicast_dns_mode(rtc::ice::mdns::MulticastDnsMode::Disabled)
        .build()
}

/// The test peer's setup.
#[derive(Debug, Clone)]
pub struct PeerSetup {
    /// The UDP address to bind (`0.0.0.0:0` in production, `127.0.0.1:0` in tests).
    pub udp: SocketAddr,
    /// The ICE servers the test peer uses itself (STUN and TURN, as a browser would).
    pub ice_servers: Vec<IceServer>,
}

/// Why a test stopped without a verdict: the browser is told, nothing is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aborted {
    /// The browser's offer could not be used (`bad_message`).
    BadOffer(&'static str),
    /// The test peer could not be set up: the service's fault (`unavailable`).
    Internal(&'static str),
    /// The browser went away.
    Gone,
}

/// Run one test: answer the browser's offer, measure, judge. `from` carries what the
/// browser says; `to` what the test peer says back. Never longer than [`TEST_LIMIT`]; what
/// was measured by then counts.
pub async fn run(
    setup: PeerSetup,
    relay_forced: bool,
    mut from: mpsc::Receiver<FromBrowser>,
    to: mpsc::Sender<ToBrowser>,
) -> Result<Outcome, Aborted> {
    let mut gathered = Gathered::default();
    let mut m = Measured::default();
    measure(setup, &mut from, &to, &mut gathered, &mut m).await?;
    Ok(judge(
        relay_forced,
        gathered,
        m.path,
        m.connect_ms,
        m.echo,
        m.upload_kbps,
    ))
}

#[derive(Default)]
struct Measured {
    path: Option<String>,
    connect_ms: Option<i64>,
    echo: Option<(f64, f64)>,
    upload_kbps: Option<f64>,
}

/// Closes a peer connection however its test ends (a dropped future included): webrtc-rs
/// keeps a connection's sockets and TURN allocations until it is closed.
struct CloseOnDrop(Arc<dyn PeerConnection>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        let pc = self.0.clone();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = pc.close().await;
            });
        }
    }
}

async fn measure(
    setup: PeerSetup,
    from: &mut mpsc::Receiver<FromBrowser>,
    to: &mpsc::Sender<ToBrowser>,
    gathered: &mut Gathered,
    m: &mut Measured,
) -> Result<(), Aborted> {
    let (pc, mut events) = peer_connection(&setup.ice_servers, false, setup.udp)
        .await
        .map_err(|_| Aborted::Internal("the test peer could not be set up"))?;
    let _close = CloseOnDrop(pc.clone());
    match tokio::time::timeout(TEST_LIMIT, drive(&pc, from, to, gathered, m, &mut events)).await {
        Ok(r) => r,
        // Out of time: what was measured counts.
        Err(_) => Ok(()),
    }
}

/// Handle one message of the browser's.
async fn on_browser(
    pc: &Arc<dyn PeerConnection>,
    msg: FromBrowser,
    to: &mpsc::Sender<ToBrowser>,
    gathered: &mut Gathered,
    relay_protocol: &mut Option<String>,
) -> Result<(), Aborted> {
    match msg {
        FromBrowser::Description(d) => {
            if d.kind != "offer" {
                return Err(Aborted::BadOffer("the browser must send an offer"));
            }
            // The WebRTC stack's errors are not passed on: they can quote the SDP.
            let offer = RTCSessionDescription::offer(d.sdp)
                .map_err(|_| Aborted::BadOffer("the offer does not parse"))?;
            pc.set_remote_description(offer)
                .await
                .map_err(|_| Aborted::BadOffer("the offer cannot be used"))?;
            let answer = pc
                .create_answer(None)
                .await
                .map_err(|_| Aborted::BadOffer("no answer can be made to the offer"))?;
            pc.set_local_description(answer.clone())
                .await
                .map_err(|_| Aborted::Internal("the answer could not be applied"))?;
            let _ = to
                .send(ToBrowser::Description(Description {
                    kind: "answer".into(),
                    sdp: answer.sdp,
                }))
                .await;
        }
        FromBrowser::Candidate(c) => {
            // At most MAX_CANDIDATES: a browser gathers a handful.
            if !c.candidate.is_empty() && gathered.seen() < MAX_CANDIDATES {
                gathered.count(&c.candidate);
                // A candidate the peer cannot use is no reason to stop the test.
                let _ = pc.add_ice_candidate(rtc_candidate(c)).await;
            }
        }
        FromBrowser::RelayProtocol(p) => {
            if matches!(p.as_str(), "udp" | "tcp" | "tls") {
                *relay_protocol = Some(p);
            }
        }
    }
    Ok(())
}

async fn drive(
    pc: &Arc<dyn PeerConnection>,
    from: &mut mpsc::Receiver<FromBrowser>,
    to: &mpsc::Sender<ToBrowser>,
    gathered: &mut Gathered,
    m: &mut Measured,
    events: &mut PeerEvents,
) -> Result<(), Aborted> {
    let mut relay_protocol = None;
    let _ = to.send(ToBrowser::Step("connecting")).await;
    // Until connected: negotiate, trickle both ways.
    // From the browser's offer (the time it takes to make one is the browser's own).
    let mut offered: Option<Instant> = None;
    let deadline = tokio::time::Instant::now() + CONNECT_LIMIT;
    let mut echo: Option<Arc<dyn DataChannel>> = None;
    let mut bulk: Option<Arc<dyn DataChannel>> = None;
    let mut connected = false;
    while !(connected && echo.is_some() && bulk.is_some()) {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break,
            msg = from.recv() => match msg {
                Some(msg) => {
                    if matches!(msg, FromBrowser::Description(_)) {
                        offered.get_or_insert_with(Instant::now);
                    }
                    on_browser(pc, msg, to, gathered, &mut relay_protocol).await?
                }
                None => return Err(Aborted::Gone),
            },
            c = events.candidates.recv() => if let Some(c) = c {
                let _ = to.send(ToBrowser::Candidate(signal_candidate(c))).await;
            },
            s = events.states.recv() => {
                match s {
                    Some(RTCPeerConnectionState::Connected) if !connected => {
                        connected = true;
                        m.connect_ms = offered.map(|t| t.elapsed().as_millis() as i64);
                    }
                    Some(RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed) | None => break,
                    _ => {}
                }
            },
            dc = events.channels.recv() => if let Some(dc) = dc {
                match dc.label().await.unwrap_or_default().as_str() {
                    "echo" => echo = Some(dc),
                    "bulk" => bulk = Some(dc),
                    // Channels of other names are ignored (and not waited for).
                    _ => {}
                }
            },
        }
    }
    if !connected {
        return Ok(());
    }
    m.path = Some(path_of(pc, gathered, relay_protocol.as_deref()).await);
    let (Some(echo), Some(bulk)) = (echo, bulk) else {
        return Ok(());
    };
    // Keep reading what the browser says (a late relay protocol, candidates) meanwhile.
    let _ = to.send(ToBrowser::Step("echo")).await;
    m.echo = ping(&echo, from, gathered, &mut relay_protocol, pc, to).await;
    let _ = to.send(ToBrowser::Step("upload")).await;
    m.upload_kbps = upload(&bulk).await;
    if relay_protocol.is_some() {
        m.path = Some(path_of(pc, gathered, relay_protocol.as_deref()).await);
    }
    Ok(())
}

/// The path of the selected candidate pair: `direct` unless the browser's side is relayed
/// (its remote candidate is of type relay, or is one of the relayed candidates the browser
/// sent: a relayed browser's packets can be learnt first as peer-reflexive).
async fn path_of(
    pc: &Arc<dyn PeerConnection>,
    gathered: &Gathered,
    relay_protocol: Option<&str>,
) -> String {
    let report = pc.get_stats(Instant::now(), StatsSelector::None).await;
    let remote = report
        .transport()
        .and_then(|t| match report.get(&t.selected_candidate_pair_id) {
            Some(RTCStatsReportEntry::IceCandidatePair(p)) => Some(p.remote_candidate_id.clone()),
            _ => None,
        })
        .or_else(|| {
            report
                .candidate_pairs()
                .find(|p| p.nominated)
                .map(|p| p.remote_candidate_id.clone())
        })
        .and_then(|id| match report.get(&id) {
            Some(RTCStatsReportEntry::RemoteCandidate(c)) => Some(c),
            _ => None,
        });
    let relayed = gathered.relay_only()
        || remote.is_some_and(|c| {
            c.candidate_type == RTCIceCandidateType::Relay
                || gathered.is_relayed(c.address.as_deref(), c.port)
        });
    match (relayed, relay_protocol) {
        (true, Some(p)) => format!("relay_{p}"),
        (true, None) => "relay".into(),
        (false, _) => "direct".into(),
    }
}

/// Send [`PINGS`] numbered packets over `echo` and time their return: the median round
/// trip in ms and the fraction lost.
async fn ping(
    echo: &Arc<dyn DataChannel>,
    from: &mut mpsc::Receiver<FromBrowser>,
    gathered: &mut Gathered,
    relay_protocol: &mut Option<String>,
    pc: &Arc<dyn PeerConnection>,
    to: &mpsc::Sender<ToBrowser>,
) -> Option<(f64, f64)> {
    let mut sent_at = vec![None::<Instant>; PINGS as usize];
    let mut rtts = Vec::new();
    let mut next = 0u32;
    let mut tick = tokio::time::interval(PING_GAP);
    let mut grace_end = None;
    loop {
        let grace = async {
            match grace_end {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tick.tick(), if next < PINGS => {
                let mut b = BytesMut::with_capacity(16);
                b.extend_from_slice(&next.to_be_bytes());
                b.extend_from_slice(&[0u8; 12]);
                sent_at[next as usize] = Some(Instant::now());
                if echo.send(b).await.is_err() {
                    return None;
                }
                next += 1;
                if next == PINGS {
                    grace_end = Some(tokio::time::Instant::now() + ECHO_GRACE);
                }
            }
            ev = echo.poll() => match ev {
                Some(DataChannelEvent::OnMessage(msg)) if msg.data.len() >= 4 => {
                    let seq = u32::from_be_bytes([msg.data[0], msg.data[1], msg.data[2], msg.data[3]]);
                    if let Some(t) = sent_at.get_mut(seq as usize).and_then(Option::take) {
                        rtts.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                    if rtts.len() == PINGS as usize {
                        break;
                    }
                }
                Some(DataChannelEvent::OnClose) | None => return None,
                Some(_) => {}
            },
            msg = from.recv() => match msg {
                Some(msg) => { let _ = on_browser(pc, msg, to, gathered, relay_protocol).await; }
                None => return None,
            },
            _ = grace => break,
        }
    }
    if rtts.is_empty() {
        return None;
    }
    rtts.sort_by(f64::total_cmp);
    let median = rtts[rtts.len() / 2];
    let loss = 1.0 - rtts.len() as f64 / f64::from(PINGS);
    Some((
        (median * 10.0).round() / 10.0,
        (loss * 1000.0).round() / 1000.0,
    ))
}

/// Ask the browser to upload over `bulk` and time what arrives: kbit/s.
async fn upload(bulk: &Arc<dyn DataChannel>) -> Option<f64> {
    let ask = serde_json::json!({"send": UPLOAD_BYTES, "ms": UPLOAD_MS}).to_string();
    bulk.send_text(&ask).await.ok()?;
    let limit = tokio::time::Instant::now() + Duration::from_millis(UPLOAD_MS + 2000);
    let mut first: Option<Instant> = None;
    let mut last = Instant::now();
    let mut bytes = 0usize;
    loop {
        match tokio::time::timeout_at(limit, bulk.poll()).await {
            Ok(Some(DataChannelEvent::OnMessage(msg))) => {
                if msg.is_string {
                    // `done`: everything the browser sent has arrived (the channel is ordered).
                    break;
                }
                last = Instant::now();
                // The first chunk starts the clock: its bytes arrived before it.
                if first.is_some() {
                    bytes += msg.data.len();
                }
                first.get_or_insert(last);
                if bytes >= UPLOAD_BYTES {
                    break;
                }
            }
            Ok(Some(DataChannelEvent::OnClose)) | Ok(None) => break,
            Ok(Some(_)) => {}
            Err(_) => break,
        }
    }
    let first = first?;
    // The first chunk's own time is not measured; one chunk is too few to time.
    let secs = last.duration_since(first).as_secs_f64();
    (secs > 0.0 && bytes > 0).then(|| ((bytes as f64 * 8.0 / secs / 1000.0) * 10.0).round() / 10.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_are_counted_by_type_and_nothing_else_is_read() {
        let mut g = Gathered::default();
        g.count("candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host");
        g.count("candidate:2 1 udp 16777215 127.0.0.1 50001 typ relay raddr 0.0.0.0 rport 0");
        g.count("candidate:3 1 udp 1694498815 203.0.113.4 50002 typ srflx raddr 10.0.0.2");
        g.count("garbage");
        assert_eq!((g.host, g.srflx, g.relay), (1, 1, 1));
    }

    #[test]
    fn verdicts() {
        let g = Gathered::counts(1, 0, 1);
        let ok = Some((20.0, 0.0));
        let direct = judge(
            false,
            g.clone(),
            Some("direct".into()),
            Some(80),
            ok,
            Some(5000.0),
        );
        assert_eq!((direct.verdict, direct.reason), (Verdict::Ready, None));
        let relayed = judge(
            true,
            g.clone(),
            Some("relay_udp".into()),
            Some(80),
            ok,
            Some(5000.0),
        );
        assert_eq!(relayed.verdict, Verdict::RelayOnly);
        let lossy = judge(
            false,
            g.clone(),
            Some("direct".into()),
            Some(80),
            Some((20.0, 0.2)),
            None,
        );
        assert_eq!(
            (lossy.verdict, lossy.reason.as_deref()),
            (Verdict::Ready, Some("high_loss"))
        );
        let none = Gathered::default();
        assert_eq!(
            judge(false, none.clone(), None, None, None, None)
                .reason
                .as_deref(),
            Some("no_candidates")
        );
        // Relay forced and no relay: the browser gathers nothing else, and the relay is
        // what failed.
        assert_eq!(
            judge(true, none, None, None, None, None).reason.as_deref(),
            Some("no_relay")
        );
        let no_relay = Gathered::counts(2, 0, 0);
        let b = judge(true, no_relay, None, None, None, None);
        assert_eq!(
            (b.verdict, b.reason.as_deref()),
            (Verdict::Blocked, Some("no_relay"))
        );
        assert!(b.advice.contains("relay server"), "{}", b.advice);
        assert_eq!(
            judge(false, g, None, None, None, None).reason.as_deref(),
            Some("no_path")
        );
    }
}

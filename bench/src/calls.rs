//! Call set-up with webrtc-rs peers on loopback: from the therapist's `hello` to a data
//! channel open at both ends, through a signalling server (Alcove, or the bare relay).
//!
//! Each side does what the web client does: say `hello`, (Alcove) the therapist admits the
//! waiting client, the client opens a data channel and sends an offer, the therapist
//! answers, both trickle their ICE candidates. Peers bind to 127.0.0.1 only and use host
//! candidates (no STUN or TURN: nothing leaves the machine). Messages are built with the
//! protocol's own types from `alcove-signaling`.

use crate::Ws;
use alcove_signaling::{
    ClientMessage, ParticipantId,
    protocol::{Candidate, Description},
};
use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_tungstenite::tungstenite::Message;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{
        PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
        RTCIceCandidateInit, RTCIceConnectionState, RTCIceGatheringState,
        RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType, RTCSessionDescription,
        SettingEngineBuilder,
    },
};

/// Which side of the call.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Side {
    /// Joins first; admits the client (Alcove) and answers the offer.
    Therapist,
    /// Offers once admitted (Alcove) or at once (the bare relay).
    Client,
}

/// ICE connectivity checks every 48 ms, as Chrome paces them on a connection not yet known
/// to work (webrtc-rs's default is 200 ms; 28 attempts keep its 1.4 s per candidate).
const CHECK_INTERVAL: Duration = Duration::from_millis(48);

/// How ICE candidates reach the other side.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ice {
    /// Each in a `signal` of its own, as it is found (what browsers do).
    Trickle,
    /// All in the offer or answer, once gathering is complete.
    Gathered,
}

/// How long one call took to set up.
#[derive(Debug, Clone, Copy)]
pub struct CallTiming {
    /// From the therapist's `hello` to the client's `welcome` (Alcove: `admitted`); the
    /// client says `hello` once the therapist has its `welcome`.
    pub signalled: Duration,
    /// From the therapist's `hello` to both peer connections connected (ICE and DTLS up).
    pub connected: Duration,
    /// From the therapist's `hello` to a data channel open at both ends.
    pub open: Duration,
}

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
    gathered: watch::Sender<bool>,
    connected: std::sync::Mutex<Option<oneshot::Sender<Instant>>>,
    trace: Option<(Side, Instant)>,
}

impl Handler {
    fn trace(&self, what: std::fmt::Arguments<'_>) {
        if let Some((side, t0)) = self.trace {
            eprintln!(
                "{:>8.1} ms {side:?}: {what}",
                t0.elapsed().as_secs_f64() * 1000.0
            );
        }
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, e: RTCPeerConnectionIceEvent) {
        if let Ok(init) = e.candidate.to_json() {
            let _ = self.candidates.send(init);
        }
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }
    async fn on_ice_gathering_state_change(&self, s: RTCIceGatheringState) {
        self.trace(format_args!("gathering {s}"));
        if s == RTCIceGatheringState::Complete {
            let _ = self.gathered.send(true);
        }
    }
    async fn on_ice_connection_state_change(&self, s: RTCIceConnectionState) {
        self.trace(format_args!("ICE {s}"));
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        self.trace(format_args!("connection {s}"));
        if s == RTCPeerConnectionState::Connected
            && let Some(c) = self.connected.lock().expect("connected").take()
        {
            let _ = c.send(Instant::now());
        }
    }
}

/// Report the moment `dc` opens.
fn watch_open(dc: Arc<dyn DataChannel>, open: mpsc::UnboundedSender<Instant>) {
    tokio::spawn(async move {
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let _ = open.send(Instant::now());
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

fn text(msg: &ClientMessage) -> Message {
    Message::Text(
        serde_json::to_string(msg)
            .expect("client messages serialise")
            .into(),
    )
}

/// When a side got somewhere.
struct Reports {
    /// In: the therapist's `welcome`; the client's `admitted` (Alcove) or `welcome`.
    signalled: Option<oneshot::Sender<Instant>>,
    /// The peer connection is connected.
    connected: oneshot::Sender<Instant>,
    /// The data channel is open.
    opened: oneshot::Sender<Instant>,
}

/// One side: says hello on `ws` with `token`, negotiates, reports when its data channel
/// opened (and, for the client, when it was let in), and keeps answering until `stop`.
async fn side(
    ws: Ws,
    token: String,
    (side, alcove, ice): (Side, bool, Ice),
    Reports {
        signalled,
        connected,
        opened,
    }: Reports,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (mut sink, mut stream) = ws.split();
    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let send = |m: &ClientMessage| {
        let _ = out_tx.send(text(m));
    };
    send(&ClientMessage::Hello {
        token,
        resume_token: None,
        reset: false,
    });
    let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
    let (chan_tx, mut chan_rx) = mpsc::unbounded_channel();
    let (open_tx, mut open_rx) = mpsc::unbounded_channel();
    let (gathered_tx, gathered) = watch::channel(false);
    let trace = std::env::var_os("ALCOVE_BENCH_TRACE").map(|_| (side, Instant::now()));
    // The SDP to send for the local description just set: at once (trickle ICE), or once
    // every candidate is in it.
    let local_sdp = |pc: Arc<dyn PeerConnection>, sdp: String| {
        let mut gathered = gathered.clone();
        async move {
            if ice == Ice::Trickle {
                return Ok(sdp);
            }
            gathered.wait_for(|g| *g).await.map_err(|e| e.to_string())?;
            Ok::<_, String>(pc.local_description().await.map_or(sdp, |d| d.sdp))
        }
    };
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_ice_connection_attempts(Some(CHECK_INTERVAL), Some(28))
                    .build(),
            )
            .with_handler(Arc::new(Handler {
                candidates: cand_tx,
                channels: chan_tx,
                gathered: gathered_tx,
                connected: std::sync::Mutex::new(Some(connected)),
                trace,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .map_err(|e| format!("peer connection: {e}"))?,
    );
    // The bare relay has no participant ids: it forwards to the other seat of the room.
    let placeholder = ParticipantId::nil();
    let mut remote: Option<ParticipantId> = None;
    let mut early: Vec<RTCIceCandidateInit> = Vec::new();
    let mut signalled = signalled;
    let mut opened = Some(opened);
    let mut admitted = false;
    let mut channels = Vec::new();
    let result = loop {
        tokio::select! {
            m = stream.next() => {
                let t = match m {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(c))) => break Err(format!("closed: {c:?}")),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break Err(e.to_string()),
                    None => break Err("closed".into()),
                };
                let v: Value = serde_json::from_str(&t).map_err(|e| e.to_string())?;
                match v["type"].as_str().unwrap_or_default() {
                    "welcome" => {
                        // The therapist is in; so is the client, on the bare relay (Alcove
                        // lets it in with `admitted`).
                        if (side == Side::Therapist || !alcove)
                            && let Some(s) = signalled.take()
                        {
                            let _ = s.send(Instant::now());
                        }
                        if side == Side::Client && !alcove {
                            remote = Some(placeholder);
                        }
                    }
                    "lobby" if side == Side::Therapist && !admitted => {
                        if let Some(w) = v["waiting"].as_array().and_then(|w| w.first()) {
                            let participant_id = serde_json::from_value(w["participant_id"].clone())
                                .map_err(|e| e.to_string())?;
                            send(&ClientMessage::Admit { participant_id });
                            admitted = true;
                        }
                    }
                    "admitted" if side == Side::Client => {
                        if let Some(s) = signalled.take() {
                            let _ = s.send(Instant::now());
                        }
                        let peer = v["peers"]
                            .as_array()
                            .and_then(|p| p.first())
                            .ok_or("admitted with nobody in the room")?;
                        remote = Some(
                            serde_json::from_value(peer["participant_id"].clone())
                                .map_err(|e| e.to_string())?,
                        );
                    }
                    "signal" => {
                        let from = match v.get("from") {
                            Some(f) => serde_json::from_value(f.clone()).map_err(|e| e.to_string())?,
                            None => placeholder,
                        };
                        remote = Some(from);
                        if let Some(d) = v.get("description") {
                            let d: Description =
                                serde_json::from_value(d.clone()).map_err(|e| e.to_string())?;
                            let desc = if d.kind == "offer" {
                                RTCSessionDescription::offer(d.sdp)
                            } else {
                                RTCSessionDescription::answer(d.sdp)
                            }
                            .map_err(|e| e.to_string())?;
                            let is_offer = desc.sdp_type == RTCSdpType::Offer;
                            pc.set_remote_description(desc).await.map_err(|e| e.to_string())?;
                            if is_offer {
                                let a = pc.create_answer(None).await.map_err(|e| e.to_string())?;
                                pc.set_local_description(a.clone()).await.map_err(|e| e.to_string())?;
                                let sdp = local_sdp(pc.clone(), a.sdp).await?;
                                send(&ClientMessage::Signal {
                                    to: from,
                                    description: Some(Description { kind: "answer".into(), sdp }),
                                    candidate: None,
                                });
                            }
                        }
                        if let Some(c) = v.get("candidate") {
                            let c: Candidate =
                                serde_json::from_value(c.clone()).map_err(|e| e.to_string())?;
                            if !c.candidate.is_empty() {
                                let _ = pc
                                    .add_ice_candidate(RTCIceCandidateInit {
                                        candidate: c.candidate,
                                        sdp_mid: c.sdp_mid,
                                        sdp_mline_index: c.sdp_m_line_index,
                                        username_fragment: c.username_fragment,
                                        ..Default::default()
                                    })
                                    .await;
                            }
                        }
                    }
                    "error" => break Err(format!("server error: {v}")),
                    _ => {}
                }
                // The client calls as soon as it knows whom to call.
                if side == Side::Client && channels.is_empty() && let Some(to) = remote {
                    let dc = pc.create_data_channel("chat", None).await.map_err(|e| e.to_string())?;
                    watch_open(dc.clone(), open_tx.clone());
                    channels.push(dc);
                    let o = pc.create_offer(None).await.map_err(|e| e.to_string())?;
                    pc.set_local_description(o.clone()).await.map_err(|e| e.to_string())?;
                    let sdp = local_sdp(pc.clone(), o.sdp).await?;
                    send(&ClientMessage::Signal {
                        to,
                        description: Some(Description { kind: "offer".into(), sdp }),
                        candidate: None,
                    });
                }
                if let Some(to) = remote {
                    for c in early.drain(..) {
                        send(&candidate(to, c));
                    }
                }
            }
            c = cand_rx.recv() => {
                let Some(c) = c else { continue };
                if ice == Ice::Gathered {
                    continue;
                }
                match remote {
                    Some(to) => send(&candidate(to, c)),
                    None => early.push(c),
                }
            }
            dc = chan_rx.recv() => {
                if let Some(dc) = dc {
                    watch_open(dc.clone(), open_tx.clone());
                    channels.push(dc);
                }
            }
            at = open_rx.recv() => {
                if let (Some(at), Some(o)) = (at, opened.take()) {
                    let _ = o.send(at);
                }
            }
            _ = stop.changed() => break Ok(()),
        }
    };
    if alcove && result.is_ok() {
        let _ = out_tx.send(text(&ClientMessage::Leave));
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(2), writer).await;
    let _ = pc.close().await;
    result
}

fn candidate(to: ParticipantId, c: RTCIceCandidateInit) -> ClientMessage {
    ClientMessage::Signal {
        to,
        description: None,
        candidate: Some(Candidate {
            candidate: c.candidate,
            sdp_mid: c.sdp_mid,
            sdp_m_line_index: c.sdp_mline_index,
            username_fragment: c.username_fragment,
        }),
    }
}

/// Set up one call between a therapist and a client through the signalling server at
/// `url`: `alcove` says whether it is Alcove (join tokens, a waiting room) or the bare
/// relay (`tokens` name a room and seat). The sockets are opened before the clock starts.
pub async fn one_call(
    url: &str,
    origin: &str,
    tokens: (String, String),
    alcove: bool,
    ice: Ice,
) -> Result<CallTiming, String> {
    let t_ws = crate::connect(url, origin).await;
    let c_ws = crate::connect(url, origin).await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let (t_open_tx, t_open) = oneshot::channel();
    let (c_open_tx, c_open) = oneshot::channel();
    let (t_conn_tx, t_conn) = oneshot::channel();
    let (c_conn_tx, c_conn) = oneshot::channel();
    let (t_in_tx, t_in) = oneshot::channel();
    let (sig_tx, sig) = oneshot::channel();
    let started = Instant::now();
    let therapist = tokio::spawn(side(
        t_ws,
        tokens.0,
        (Side::Therapist, alcove, ice),
        Reports {
            signalled: Some(t_in_tx),
            connected: t_conn_tx,
            opened: t_open_tx,
        },
        stop_rx.clone(),
    ));
    // The client arrives once the therapist is in, as at an appointment's start (and the
    // bare relay forwards only to who is there already).
    if tokio::time::timeout(Duration::from_secs(20), t_in)
        .await
        .is_err()
    {
        let _ = stop_tx.send(true);
        return Err(format!(
            "the therapist got no welcome: {:?}",
            therapist.await
        ));
    }
    let client = tokio::spawn(side(
        c_ws,
        tokens.1,
        (Side::Client, alcove, ice),
        Reports {
            signalled: Some(sig_tx),
            connected: c_conn_tx,
            opened: c_open_tx,
        },
        stop_rx,
    ));
    let outcome = tokio::time::timeout(Duration::from_secs(20), async {
        let t = t_open
            .await
            .map_err(|_| "the therapist's side ended".to_owned())?;
        let c = c_open
            .await
            .map_err(|_| "the client's side ended".to_owned())?;
        let s = sig
            .await
            .map_err(|_| "the client was never let in".to_owned())?;
        let tc = t_conn
            .await
            .map_err(|_| "the therapist never connected".to_owned())?;
        let cc = c_conn
            .await
            .map_err(|_| "the client never connected".to_owned())?;
        Ok::<_, String>(CallTiming {
            signalled: s - started,
            connected: tc.max(cc) - started,
            open: t.max(c) - started,
        })
    })
    .await
    .unwrap_or_else(|_| Err("no open data channel within 20 s".into()));
    let _ = stop_tx.send(true);
    let (t, c) = (therapist.await, client.await);
    match outcome {
        Ok(timing) => {
            t.map_err(|e| e.to_string())??;
            c.map_err(|e| e.to_string())??;
            Ok(timing)
        }
        Err(e) => {
            let sides = format!("{:?} / {:?}", t.map(|r| r.err()), c.map(|r| r.err()));
            Err(format!("{e} ({sides})"))
        }
    }
}

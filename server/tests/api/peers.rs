//! WebRTC test peers (webrtc-rs, bound to 127.0.0.1) that meet through the real signalling
//! server: the same flow a browser follows, driven from tests.

use crate::helpers::Api;
use crate::helpers::Session;
use alcove_signaling::{
    ClientMessage, ParticipantId, ServerMessage,
    client::{Incoming, SignalClient, SignalSender},
    protocol::{Description, IceTransportPolicy},
};
use serde_json::{Value, json};
use std::{sync::Arc, time::Duration};
use tokio::sync::{Mutex, mpsc};
use uuid::Uuid;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{
        PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCConfigurationBuilder,
        RTCIceCandidateInit, RTCIceCandidateType, RTCIceServer, RTCIceTransportPolicy,
        RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSdpType, RTCSessionDescription,
    },
};

/// Something the peer connection did.
#[derive(Debug, Clone, PartialEq)]
pub enum Obs {
    State(RTCPeerConnectionState),
    DcOpen,
    DcMessage(String),
}

enum Ctl {
    /// Create the connection to `remote` with a data channel and send an offer.
    Call(ParticipantId),
    /// Restart ICE and send a new offer.
    Restart,
    Chat(String),
}

pub type CandidateTypes = Arc<std::sync::Mutex<Vec<RTCIceCandidateType>>>;

struct Handler {
    candidates: mpsc::UnboundedSender<RTCIceCandidateInit>,
    candidate_types: CandidateTypes,
    obs: mpsc::UnboundedSender<Obs>,
    channels: mpsc::UnboundedSender<Arc<dyn DataChannel>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, e: RTCPeerConnectionIceEvent) {
        self.candidate_types
            .lock()
            .expect("candidate types")
            .push(e.candidate.typ);
        if let Ok(init) = e.candidate.to_json() {
            let _ = self.candidates.send(init);
        }
    }
    async fn on_connection_state_change(&self, s: RTCPeerConnectionState) {
        let _ = self.obs.send(Obs::State(s));
    }
    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self.channels.send(dc);
    }
}

fn watch_channel(dc: Arc<dyn DataChannel>, obs: mpsc::UnboundedSender<Obs>) {
    tokio::spawn(async move {
        while let Some(ev) = dc.poll().await {
            match ev {
                DataChannelEvent::OnOpen => {
                    let _ = obs.send(Obs::DcOpen);
                }
                DataChannelEvent::OnMessage(m) => {
                    let _ = obs.send(Obs::DcMessage(
                        String::from_utf8_lossy(&m.data).into_owned(),
                    ));
                }
                DataChannelEvent::OnClose => break,
                _ => {}
            }
        }
    });
}

/// A participant with a WebRTC peer connection and a signalling connection.
pub struct RtcPeer {
    pub pid: ParticipantId,
    pub resume_token: String,
    pub welcome: Value,
    /// Server messages other than `signal`, and closes.
    pub inbox: mpsc::UnboundedReceiver<Incoming>,
    pub obs: mpsc::UnboundedReceiver<Obs>,
    /// Signals received, as raw JSON (for content checks).
    pub signals_seen: Arc<Mutex<Vec<String>>>,
    /// The type of every local ICE candidate this peer gathered.
    pub candidate_types: CandidateTypes,
    /// Every join token and resume token this peer used (for checks that none is kept).
    pub secrets: Vec<String>,
    sender: Arc<Mutex<Option<SignalSender>>>,
    signals_tx: mpsc::UnboundedSender<ServerMessage>,
    inbox_tx: mpsc::UnboundedSender<Incoming>,
    ctl: mpsc::UnboundedSender<Ctl>,
}

/// Ask the API for a join token.
pub async fn join_token(app: &impl Api, who: &Session, appointment: Uuid) -> Value {
    app.post(
        format!("/api/v1/appointments/{appointment}/join"),
        who.token(),
        json!({}),
    )
    .await
    .expect(200)
}

/// Open a signalling connection and say `hello` with `token`; whatever the server answers is
/// left for the caller to read.
pub async fn send_hello(
    url: &str,
    token: &str,
    resume: Option<String>,
    reset: bool,
) -> SignalClient {
    let mut c = SignalClient::connect(url, None)
        .await
        .expect("signalling connects");
    c.send(&ClientMessage::Hello {
        token: token.to_owned(),
        resume_token: resume,
        reset,
    })
    .await
    .unwrap();
    c
}

/// [`send_hello`], then wait for the `welcome`.
pub async fn hello(
    url: &str,
    token: &str,
    resume: Option<String>,
    reset: bool,
) -> (SignalClient, ServerMessage) {
    let mut c = send_hello(url, token, resume, reset).await;
    let welcome = c
        .wait_for(Duration::from_secs(10), |m| {
            matches!(m, ServerMessage::Welcome { .. }).then(|| m.clone())
        })
        .await
        .expect("welcome");
    (c, welcome)
}

fn spawn_reader(
    mut rx: alcove_signaling::client::SignalReceiver,
    signals: mpsc::UnboundedSender<ServerMessage>,
    inbox: mpsc::UnboundedSender<Incoming>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    tokio::spawn(async move {
        loop {
            match rx.recv().await {
                Ok(Incoming::Message(m @ ServerMessage::Signal { .. })) => {
                    seen.lock().await.push(serde_json::to_string(&m).unwrap());
                    let _ = signals.send(m);
                }
                Ok(closed @ Incoming::Closed(..)) => {
                    let _ = inbox.send(closed);
                    break;
                }
                Ok(other) => {
                    let _ = inbox.send(other);
                }
                // A broken socket (the server died) is a close too.
                Err(e) => {
                    let _ = inbox.send(Incoming::Closed(None, e.to_string()));
                    break;
                }
            }
        }
    });
}

impl RtcPeer {
    /// Join the appointment's session through the API and the signalling socket.
    pub async fn join(app: &impl Api, who: &Session, appointment: Uuid) -> RtcPeer {
        Self::join_at(app, who, appointment, None).await
    }

    /// [`Self::join`], through the signalling socket at `url` when given (a node of a
    /// cluster) instead of the one the join response names.
    pub async fn join_at(
        app: &impl Api,
        who: &Session,
        appointment: Uuid,
        url: Option<&str>,
    ) -> RtcPeer {
        let j = join_token(app, who, appointment).await;
        let url = url
            .map(str::to_owned)
            .unwrap_or_else(|| j["signaling_url"].as_str().unwrap().to_owned());
        let token = j["token"].as_str().unwrap().to_owned();
        let ice_servers: Vec<alcove_signaling::IceServer> =
            serde_json::from_value(j["ice_servers"].clone()).unwrap();
        let policy: IceTransportPolicy =
            serde_json::from_value(j["ice_transport_policy"].clone()).unwrap();
        let (client, welcome) = hello(&url, &token, None, false).await;
        let ServerMessage::Welcome {
            participant_id,
            resume_token,
            ..
        } = welcome.clone()
        else {
            unreachable!()
        };
        let secrets = vec![token.clone(), resume_token.clone()];
        let (tx, rx) = client.split();
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        let (inbox_tx, inbox) = mpsc::unbounded_channel();
        let (obs_tx, obs) = mpsc::unbounded_channel();
        let (ctl, ctl_rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let candidate_types = CandidateTypes::default();
        spawn_reader(rx, signals_tx.clone(), inbox_tx.clone(), seen.clone());
        let sender = Arc::new(Mutex::new(Some(tx)));
        let config = RTCConfigurationBuilder::new()
            .with_ice_servers(
                ice_servers
                    .iter()
                    .map(|s| RTCIceServer {
                        urls: s.urls.clone(),
                        username: s.username.clone().unwrap_or_default(),
                        credential: s.credential.clone().unwrap_or_default(),
                    })
                    .collect(),
            )
            .with_ice_transport_policy(match policy {
                IceTransportPolicy::Relay => RTCIceTransportPolicy::Relay,
                IceTransportPolicy::All => RTCIceTransportPolicy::All,
            })
            .build();
        tokio::spawn(negotiate(
            config,
            sender.clone(),
            signals_rx,
            ctl_rx,
            obs_tx,
            candidate_types.clone(),
        ));
        RtcPeer {
            pid: participant_id,
            resume_token,
            welcome: serde_json::to_value(&welcome).unwrap(),
            inbox,
            obs,
            signals_seen: seen,
            candidate_types,
            secrets,
            sender,
            signals_tx,
            inbox_tx,
            ctl,
        }
    }

    /// Wait for a server message `pick` accepts (others are skipped).
    pub async fn expect<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&ServerMessage) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            match tokio::time::timeout_at(deadline, self.inbox.recv()).await {
                Ok(Some(Incoming::Message(m))) => {
                    if let Some(t) = pick(&m) {
                        return t;
                    }
                }
                Ok(Some(other)) => {
                    if let Incoming::Closed(..) = other {
                        panic!("closed while waiting for {what}: {other:?}");
                    }
                }
                Ok(None) | Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    /// Wait for the peer connection to do something `pick` accepts.
    pub async fn observe(&mut self, what: &str, mut pick: impl FnMut(&Obs) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tokio::time::timeout_at(deadline, self.obs.recv()).await {
                Ok(Some(o)) if pick(&o) => return,
                Ok(Some(_)) => {}
                _ => panic!("timed out waiting for {what}"),
            }
        }
    }

    pub async fn send(&self, msg: &ClientMessage) {
        self.sender
            .lock()
            .await
            .as_mut()
            .expect("connected")
            .send(msg)
            .await
            .unwrap();
    }

    pub fn call(&self, remote: ParticipantId) {
        self.ctl.send(Ctl::Call(remote)).unwrap();
    }

    pub fn restart_ice(&self) {
        self.ctl.send(Ctl::Restart).unwrap();
    }

    pub fn chat(&self, text: &str) {
        self.ctl.send(Ctl::Chat(text.to_owned())).unwrap();
    }

    /// Cut the signalling socket (no `leave`), as a network change would.
    pub async fn cut_signalling(&self) {
        if let Some(s) = self.sender.lock().await.take() {
            s.close().await;
        }
    }

    /// Reconnect signalling with a fresh join token and the resume token; the peer
    /// connection is kept.
    pub async fn resume(&mut self, app: &impl Api, who: &Session, appointment: Uuid) -> Value {
        self.resume_at(app, who, appointment, None).await
    }

    /// [`Self::resume`], through the signalling socket at `url` when given.
    pub async fn resume_at(
        &mut self,
        app: &impl Api,
        who: &Session,
        appointment: Uuid,
        url: Option<&str>,
    ) -> Value {
        let j = join_token(app, who, appointment).await;
        let (client, welcome) = hello(
            url.unwrap_or_else(|| j["signaling_url"].as_str().unwrap()),
            j["token"].as_str().unwrap(),
            Some(self.resume_token.clone()),
            false,
        )
        .await;
        let ServerMessage::Welcome { resume_token, .. } = welcome.clone() else {
            unreachable!()
        };
        self.secrets.push(j["token"].as_str().unwrap().to_owned());
        self.secrets.push(resume_token.clone());
        self.resume_token = resume_token;
        let (tx, rx) = client.split();
        spawn_reader(
            rx,
            self.signals_tx.clone(),
            self.inbox_tx.clone(),
            self.signals_seen.clone(),
        );
        *self.sender.lock().await = Some(tx);
        serde_json::to_value(&welcome).unwrap()
    }
}

/// The peer connection's task: creates the connection, answers offers, trickles
/// candidates both ways, runs the data channel.
async fn negotiate(
    config: webrtc::peer_connection::RTCConfiguration,
    sender: Arc<Mutex<Option<SignalSender>>>,
    mut signals: mpsc::UnboundedReceiver<ServerMessage>,
    mut ctl: mpsc::UnboundedReceiver<Ctl>,
    obs: mpsc::UnboundedSender<Obs>,
    candidate_types: CandidateTypes,
) {
    let (cand_tx, mut cand_rx) = mpsc::unbounded_channel();
    let (chan_tx, mut chan_rx) = mpsc::unbounded_channel::<Arc<dyn DataChannel>>();
    let pc: Arc<dyn PeerConnection> = Arc::new(
        PeerConnectionBuilder::new()
            .with_configuration(config)
            .with_handler(Arc::new(Handler {
                candidates: cand_tx,
                candidate_types,
                obs: obs.clone(),
                channels: chan_tx,
            }))
            .with_udp_addrs(vec!["127.0.0.1:0".to_string()])
            .build()
            .await
            .expect("peer connection"),
    );
    let mut remote: Option<ParticipantId> = None;
    let mut channel: Option<Arc<dyn DataChannel>> = None;
    let send = |msg: ClientMessage| {
        let sender = sender.clone();
        async move {
            if let Some(s) = sender.lock().await.as_mut() {
                let _ = s.send(&msg).await;
            }
        }
    };
    let offer = |pc: Arc<dyn PeerConnection>, to: ParticipantId| async move {
        let o = pc.create_offer(None).await.expect("offer");
        pc.set_local_description(o.clone())
            .await
            .expect("set offer");
        send(ClientMessage::Signal {
            to,
            description: Some(Description {
                kind: "offer".into(),
                sdp: o.sdp,
            }),
            candidate: None,
        })
        .await;
    };
    loop {
        tokio::select! {
            c = ctl.recv() => match c {
                Some(Ctl::Call(to)) => {
                    remote = Some(to);
                    let dc = pc.create_data_channel("chat", None).await.expect("data channel");
                    watch_channel(dc.clone(), obs.clone());
                    channel = Some(dc);
                    offer(pc.clone(), to).await;
                }
                Some(Ctl::Restart) => {
                    pc.restart_ice().await.expect("restart ice");
                    if let Some(to) = remote {
                        offer(pc.clone(), to).await;
                    }
                }
                Some(Ctl::Chat(t)) => {
                    if let Some(dc) = &channel {
                        dc.send_text(&t).await.expect("chat sent");
                    }
                }
                None => break,
            },
            s = signals.recv() => match s {
                Some(ServerMessage::Signal { from, description, candidate }) => {
                    remote = Some(from);
                    if let Some(d) = description {
                        let desc = match d.kind.as_str() {
                            "offer" => RTCSessionDescription::offer(d.sdp).expect("offer parses"),
                            _ => RTCSessionDescription::answer(d.sdp).expect("answer parses"),
                        };
                        let is_offer = desc.sdp_type == RTCSdpType::Offer;
                        pc.set_remote_description(desc).await.expect("set remote");
                        if is_offer {
                            let a = pc.create_answer(None).await.expect("answer");
                            pc.set_local_description(a.clone()).await.expect("set answer");
                            send(ClientMessage::Signal {
                                to: from,
                                description: Some(Description { kind: "answer".into(), sdp: a.sdp }),
                                candidate: None,
                            })
                            .await;
                        }
                    }
                    if let Some(c) = candidate
                        && !c.candidate.is_empty()
                    {
                        let _ = pc
                            .add_ice_candidate(alcove::nettest::rtc_candidate(c))
                            .await;
                    }
                }
                Some(_) => {}
                None => break,
            },
            c = cand_rx.recv() => {
                if let (Some(c), Some(to)) = (c, remote) {
                    send(ClientMessage::Signal {
                        to,
                        description: None,
                        candidate: Some(alcove::nettest::signal_candidate(c)),
                    })
                    .await;
                }
            },
            dc = chan_rx.recv() => {
                if let Some(dc) = dc {
                    watch_channel(dc.clone(), obs.clone());
                    channel = Some(dc);
                }
            },
        }
    }
    let _ = pc.close().await;
}

fn count_seen(seen: &[String], kind: &str) -> usize {
    let needle = format!("\"type\":\"{kind}\"");
    seen.iter().filter(|s| s.contains(&needle)).count()
}

/// `th` restarts ICE: a new offer must reach `cl` and its answer `th`, through the
/// signalling they are connected to now. `context` adds to the failure's message.
pub async fn renegotiate(th: &RtcPeer, cl: &RtcPeer, context: impl Fn() -> String) {
    let offers = count_seen(&cl.signals_seen.lock().await, "offer");
    let answers = count_seen(&th.signals_seen.lock().await, "answer");
    th.restart_ice();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let o = count_seen(&cl.signals_seen.lock().await, "offer");
        let a = count_seen(&th.signals_seen.lock().await, "answer");
        if o > offers && a > answers {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the ICE restart did not cross: offers {offers} -> {o}, answers {answers} -> {a}\n{}",
            context()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

//! `alcove probe <base-url>`: a synthetic call through a deployment, step by step, for
//! uptime monitoring and after every deploy (docs/network-test.md).
//!
//! Steps: the service is ready (`/readyz`); the two probe accounts sign in; the probe's
//! therapist opens a probe appointment (`POST /api/v1/probe/appointments`); both get join
//! tokens; each TURN server the join response names grants an allocation with the
//! credentials the service issued (a wrong `ALCOVE_TURN_SECRET` fails here, by name);
//! both say hello; the therapist admits the client; two webrtc-rs peers connect (through
//! the relay only with `--relay-only`) and a message crosses their data channel both
//! ways; the therapist ends the session; the appointment is cancelled. Each step's time
//! is printed; the first failure ends the probe with exit status 1.

use crate::cli::ProbeCmd;
use alcove_signaling::{
    ClientMessage, IceServer, ServerMessage,
    client::{Incoming, SignalClient},
    protocol::Description,
};
use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use std::{
    sync::Arc,
    time::{Duration, Instant},
};
use tokio::sync::mpsc;
use webrtc::{
    data_channel::{DataChannel, DataChannelEvent},
    peer_connection::{PeerConnection, RTCPeerConnectionState, RTCSessionDescription},
};

/// Run the probe; `Err` names the step that failed and why.
pub async fn run(cmd: &ProbeCmd) -> anyhow::Result<()> {
    let mut p = Probe {
        base: cmd.base_url.trim_end_matches('/').to_owned(),
        http: reqwest::Client::builder()
            .timeout(cmd.step_timeout)
            .user_agent(concat!("alcove-probe/", env!("CARGO_PKG_VERSION")))
            .build()?,
        limit: cmd.step_timeout,
        started: Instant::now(),
    };
    println!(
        "probe of {}{}",
        p.base,
        if cmd.relay_only { " (relay only)" } else { "" }
    );
    p.step("ready", async |p: &Probe| {
        let r = p.http.get(format!("{}/readyz", p.base)).send().await?;
        if !r.status().is_success() {
            bail!("/readyz answered {}", r.status());
        }
        Ok(())
    })
    .await?;
    let therapist = p
        .step("sign in (therapist)", async |p: &Probe| {
            p.sign_in(&cmd.therapist_email, cmd.therapist_password.expose())
                .await
        })
        .await?;
    let client = p
        .step("sign in (client)", async |p: &Probe| {
            p.sign_in(&cmd.client_email, cmd.client_password.expose())
                .await
        })
        .await?;
    let appointment = p
        .step("probe appointment", async |p: &Probe| {
            let a = p
                .post("/api/v1/probe/appointments", &therapist, json!({}))
                .await?;
            a["id"]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("no appointment id in {a}"))
        })
        .await?;
    let outcome = call(&mut p, cmd, &therapist, &client, &appointment).await;
    // The appointment is cancelled whatever happened (the next probe would otherwise).
    let cancelled = p
        .step("cancel the appointment", async |p: &Probe| {
            p.post(
                &format!("/api/v1/appointments/{appointment}/cancel"),
                &therapist,
                json!({"reason": "synthetic probe"}),
            )
            .await
            .map(|_| ())
        })
        .await;
    outcome?;
    cancelled?;
    println!("probe passed in {} ms", p.started.elapsed().as_millis());
    Ok(())
}

async fn call(
    p: &mut Probe,
    cmd: &ProbeCmd,
    therapist: &str,
    client: &str,
    appointment: &str,
) -> anyhow::Result<()> {
    let join_path = format!("/api/v1/appointments/{appointment}/join");
    let (tj, cj) = p
        .step("join tokens", async |p: &Probe| {
            let tj = p.post(&join_path, therapist, json!({})).await?;
            let cj = p.post(&join_path, client, json!({})).await?;
            Ok((tj, cj))
        })
        .await?;
    let servers: Vec<IceServer> = serde_json::from_value(cj["ice_servers"].clone())?;
    let turn: Vec<(String, String, String)> = servers
        .iter()
        .filter_map(|s| Some((s.username.clone()?, s.credential.clone()?, s)))
        .flat_map(|(u, c, s)| {
            s.urls
                .iter()
                .filter(|url| url.starts_with("turn:"))
                .map(move |url| (url.clone(), u.clone(), c.clone()))
        })
        .collect();
    let any_turn = servers.iter().any(|s| {
        s.urls
            .iter()
            .any(|u| u.starts_with("turn:") || u.starts_with("turns:"))
    });
    if cmd.relay_only && !any_turn {
        bail!(
            "step `turn` failed: --relay-only, and this service hands out no TURN server (ALCOVE_TURN_URLS, ALCOVE_TURN_SECRET)"
        );
    }
    for (url, user, pass) in &turn {
        p.step(&format!("turn allocation ({url})"), async |_: &Probe| {
            crate::stun::allocate(url, user, pass).await
        })
        .await?;
    }
    let url = tj["signaling_url"]
        .as_str()
        .ok_or_else(|| anyhow!("no signaling_url in the join response"))?
        .to_owned();
    let (mut th, mut cl) = p
        .step("hello (both)", async |_: &Probe| {
            let th = hello(&url, &tj).await.context("therapist")?;
            let cl = hello(&url, &cj).await.context("client")?;
            Ok((th, cl))
        })
        .await?;
    let client_pid = p
        .step("waiting room", async |_: &Probe| {
            wait(&mut th.0, |m| match m {
                ServerMessage::Lobby { waiting } => waiting.first().map(|w| w.participant_id),
                _ => None,
            })
            .await
        })
        .await?;
    let therapist_pid = p
        .step("admit", async |_: &Probe| {
            th.0.send(&ClientMessage::Admit {
                participant_id: client_pid,
            })
            .await?;
            wait(&mut cl.0, |m| match m {
                ServerMessage::Admitted { peers } => peers.first().map(|p| p.participant_id),
                _ => None,
            })
            .await
        })
        .await?;
    let relay = cmd.relay_only;
    let bind = cmd.bind;
    p.step("peer connection and data", async |p: &Probe| {
        let limit = p.limit;
        let (th_sock, th_ice) = th;
        let (cl_sock, cl_ice) = cl;
        let callee = tokio::spawn(peer(th_sock, th_ice, None, relay, bind, limit));
        let caller = peer(cl_sock, cl_ice, Some(therapist_pid), relay, bind, limit).await;
        let callee = callee
            .await
            .map_err(|_| anyhow!("the therapist's peer stopped"))?;
        let (mut th_sock, th_pc) = callee.context("therapist")?;
        let (_cl_sock, cl_pc) = caller.context("client")?;
        let _ = cl_pc.close().await;
        let _ = th_pc.close().await;
        th_sock.send(&ClientMessage::End).await?;
        Ok(())
    })
    .await
}

/// A signed-in connection and the ICE servers of its join response.
type Joined = (SignalClient, Vec<IceServer>);

async fn hello(url: &str, join: &Value) -> anyhow::Result<Joined> {
    let mut c = SignalClient::connect(url, None)
        .await
        .map_err(|e| anyhow!("the signalling socket did not open: {e}"))?;
    c.send(&ClientMessage::Hello {
        token: join["token"].as_str().unwrap_or_default().to_owned(),
        resume_token: None,
        reset: false,
    })
    .await?;
    wait(&mut c, |m| {
        matches!(m, ServerMessage::Welcome { .. }).then_some(())
    })
    .await?;
    Ok((c, serde_json::from_value(join["ice_servers"].clone())?))
}

/// The first server message `pick` accepts; an `error` or a close fails.
async fn wait<T>(
    c: &mut SignalClient,
    mut pick: impl FnMut(&ServerMessage) -> Option<T>,
) -> anyhow::Result<T> {
    loop {
        match c.recv().await.map_err(|e| anyhow!("signalling: {e}"))? {
            Incoming::Message(ServerMessage::Error { code, message }) => {
                bail!("the service answered {code:?}: {message}")
            }
            Incoming::Message(m) => {
                if let Some(t) = pick(&m) {
                    return Ok(t);
                }
            }
            Incoming::Closed(code, reason) => {
                bail!("the signalling socket closed ({code:?} {reason})")
            }
            Incoming::Other(_) => {}
        }
    }
}

const PING: &str = "alcove-probe ping";
const PONG: &str = "alcove-probe pong";

/// One side's peer: the caller (`to: Some`) offers and sends a ping, the callee answers and
/// sends back a pong. Done when the ping and pong have crossed.
async fn peer(
    mut sock: SignalClient,
    ice: Vec<IceServer>,
    to: Option<uuid::Uuid>,
    relay: bool,
    bind: std::net::SocketAddr,
    limit: Duration,
) -> anyhow::Result<(SignalClient, Arc<dyn PeerConnection>)> {
    let (pc, mut events) = crate::nettest::peer_connection(&ice, relay, bind)
        .await
        .map_err(|e| anyhow!("no peer connection: {e}"))?;
    let mut remote = to;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<()>();
    if let Some(to) = to {
        // The WebRTC stack's errors are replaced: they can quote SDP or addresses.
        let dc = pc
            .create_data_channel("probe", None)
            .await
            .map_err(|_| anyhow!("no data channel"))?;
        tokio::spawn(talk(dc, true, done_tx.clone()));
        let offer = pc
            .create_offer(None)
            .await
            .map_err(|_| anyhow!("no offer could be made"))?;
        pc.set_local_description(offer.clone())
            .await
            .map_err(|_| anyhow!("the offer could not be applied"))?;
        sock.send(&ClientMessage::Signal {
            to,
            description: Some(Description {
                kind: "offer".into(),
                sdp: offer.sdp,
            }),
            candidate: None,
        })
        .await?;
    }
    let deadline = tokio::time::Instant::now() + limit;
    let mut connected = false;
    let result = loop {
        tokio::select! {
            _ = tokio::time::sleep_until(deadline) => break Err(anyhow!(
                "{} within {} s{}",
                if connected { "no data crossed" } else { "the peers did not connect" },
                limit.as_secs(),
                if relay { " (through the relay only: is the TURN server reachable from here and from the service's users?)" } else { "" }
            )),
            m = sock.recv() => match m.map_err(|e| anyhow!("signalling: {e}"))? {
                Incoming::Message(ServerMessage::Signal { from, description, candidate }) => {
                    remote = Some(from);
                    if let Some(d) = description {
                        if d.kind == "offer" {
                            let offer = RTCSessionDescription::offer(d.sdp).map_err(|_| anyhow!("the other side's offer does not parse"))?;
                            pc.set_remote_description(offer).await.map_err(|_| anyhow!("the other side's offer was refused"))?;
                            let a = pc.create_answer(None).await.map_err(|_| anyhow!("no answer could be made"))?;
                            pc.set_local_description(a.clone()).await.map_err(|_| anyhow!("the answer could not be applied"))?;
                            sock.send(&ClientMessage::Signal {
                                to: from,
                                description: Some(Description { kind: "answer".into(), sdp: a.sdp }),
                                candidate: None,
                            }).await?;
                        } else {
                            let answer = RTCSessionDescription::answer(d.sdp).map_err(|_| anyhow!("the other side's answer does not parse"))?;
                            pc.set_remote_description(answer).await.map_err(|_| anyhow!("the other side's answer was refused"))?;
                        }
                    }
                    if let Some(c) = candidate.filter(|c| !c.candidate.is_empty()) {
                        let _ = pc.add_ice_candidate(crate::nettest::rtc_candidate(c)).await;
                    }
                }
                Incoming::Message(ServerMessage::Error { code, message }) => {
                    break Err(anyhow!("the service answered {code:?}: {message}"));
                }
                Incoming::Message(_) | Incoming::Other(_) => {}
                Incoming::Closed(code, reason) => break Err(anyhow!("the signalling socket closed ({code:?} {reason})")),
            },
            c = events.candidates.recv() => if let (Some(c), Some(to)) = (c, remote) {
                sock.send(&ClientMessage::Signal {
                    to,
                    description: None,
                    candidate: Some(crate::nettest::signal_candidate(c)),
                }).await?;
            },
            s = events.states.recv() => match s {
                Some(RTCPeerConnectionState::Connected) => connected = true,
                Some(RTCPeerConnectionState::Failed) => break Err(anyhow!("the peer connection failed")),
                _ => {}
            },
            dc = events.channels.recv() => if let Some(dc) = dc {
                tokio::spawn(talk(dc, false, done_tx.clone()));
            },
            _ = done_rx.recv() => break Ok(()),
        }
    };
    match result {
        // Kept open for the other side to finish (the caller closes both).
        Ok(()) => Ok((sock, pc)),
        Err(e) => {
            let _ = pc.close().await;
            Err(e)
        }
    }
}

/// The data channel's exchange: the caller sends a ping when it opens and is done at the
/// pong; the callee answers the ping with a pong and is done.
async fn talk(dc: Arc<dyn DataChannel>, caller: bool, done: mpsc::UnboundedSender<()>) {
    while let Some(ev) = dc.poll().await {
        match ev {
            DataChannelEvent::OnOpen if caller && dc.send_text(PING).await.is_err() => return,
            DataChannelEvent::OnMessage(m) => {
                let text = String::from_utf8_lossy(&m.data);
                if !caller && text == PING {
                    if dc.send_text(PONG).await.is_ok() {
                        let _ = done.send(());
                    }
                } else if caller && text == PONG {
                    let _ = done.send(());
                }
            }
            DataChannelEvent::OnClose => return,
            _ => {}
        }
    }
}

struct Probe {
    base: String,
    http: reqwest::Client,
    limit: Duration,
    started: Instant,
}

impl Probe {
    /// Run one step within the step limit, printing its time; an error names the step.
    async fn step<T>(
        &self,
        name: &str,
        f: impl AsyncFnOnce(&Probe) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let t = Instant::now();
        let r = match tokio::time::timeout(self.limit + Duration::from_secs(1), f(self)).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer within {} s", self.limit.as_secs())),
        };
        let ms = t.elapsed().as_millis();
        match r {
            Ok(v) => {
                println!("ok     {name:<40} {ms:>6} ms");
                Ok(v)
            }
            Err(e) => {
                println!("FAILED {name:<40} {ms:>6} ms");
                Err(e.context(format!("step `{name}` failed")))
            }
        }
    }

    async fn sign_in(&self, email: &str, password: &str) -> anyhow::Result<String> {
        let v = self
            .send(
                reqwest::Method::POST,
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": password}),
            )
            .await?;
        v["access_token"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("no access token in the answer"))
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> anyhow::Result<Value> {
        self.send(reqwest::Method::POST, path, Some(token), body)
            .await
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Value,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await.map_err(|e| anyhow!("{path}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "{path} answered {status}: {}",
                v["detail"].as_str().unwrap_or("(no detail)")
            );
        }
        Ok(v)
    }
}

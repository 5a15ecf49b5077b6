//! Property-based fuzzing of what the signalling server parses and checks: the message
//! parser, the per-type checks (SDP, candidates, stats, notices), and a whole connection
//! loop fed random frames.
//!
//! Inputs come from the corpus in `tests/corpus/` (real messages: Chromium's and
//! webrtc-rs's SDP, every kind of candidate, each message type, and malformed ones),
//! mutated byte by byte and line by line, and from arbitrary text and JSON. A bounded run
//! (2,048 cases per property, 256 connection runs) is part of the README's test command; for
//! a longer run set `PROPTEST_CASES`, e.g. `PROPTEST_CASES=20000 cargo test -p
//! alcove-signaling --test fuzz --release`. Failures are kept in
//! `tests/fuzz.proptest-regressions` and replayed first on every later run.

use alcove_signaling::{
    ErrorCode, Frame, Hub, IceConfig, IceTransportPolicy, JoinGrant, JoinRefusal, JoinVerifier,
    NullSink, PeerRole, ServerMessage, SignalingConfig, close,
    protocol::ClientMessage,
    validate::{self, Refusal},
};
use futures_util::{Sink, Stream};
use proptest::prelude::*;
use std::{
    pin::Pin,
    sync::{Arc, OnceLock},
    task::{Context, Poll},
    time::Duration,
};
use uuid::Uuid;

/// The participant id the corpus's messages are addressed to.
const CORPUS_PID: &str = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";

fn corpus() -> &'static [(String, String)] {
    static CORPUS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    CORPUS.get_or_init(|| {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/corpus");
        let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
            .expect("the corpus folder")
            .map(|e| {
                let p = e.unwrap().path();
                (
                    p.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&p).unwrap().trim_end().to_owned(),
                )
            })
            .collect();
        v.sort();
        assert!(v.len() >= 20, "the corpus is in the repository");
        v
    })
}

fn cfg() -> SignalingConfig {
    SignalingConfig::default()
}

/// Everything the server does with a text frame before it is relayed (a `hello` is
/// checked at the start of a connection, where only its parse applies).
fn check(text: &str) -> Result<ClientMessage, Refusal> {
    let m = validate::message(text)?;
    if !matches!(m, ClientMessage::Hello { .. }) {
        validate::content(&m, &cfg())?;
    }
    Ok(m)
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Delete(usize, usize),
    Insert(usize, Vec<u8>),
    Duplicate(usize, usize),
    Truncate(usize),
    /// Splice in bytes that JSON and SDP parsers find interesting.
    Token(usize, usize),
}

const TOKENS: &[&str] = &[
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    "null",
    "true",
    "-1",
    "1e309",
    "18446744073709551616",
    "\r\n",
    "\n",
    "\0",
    "=",
    "a=",
    "m=",
    "c=IN IP6 ::",
    "candidate:",
    "\u{202e}",
    "\u{feff}",
    "é",
    "\"type\":\"signal\"",
    "\"type\":\"hello\"",
];

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<usize>(), 1usize..64).prop_map(|(i, n)| Mutation::Delete(i, n)),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..16))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        (any::<usize>(), 1usize..256).prop_map(|(i, n)| Mutation::Duplicate(i, n)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), 0..TOKENS.len()).prop_map(|(i, t)| Mutation::Token(i, t)),
    ]
}

fn mutate(input: &str, muts: &[Mutation]) -> String {
    let mut b = input.as_bytes().to_vec();
    for m in muts {
        let len = b.len().max(1);
        match m {
            Mutation::Flip(i, x) => {
                if !b.is_empty() {
                    let i = i % b.len();
                    b[i] ^= x;
                }
            }
            Mutation::Delete(i, n) => {
                let i = i % len;
                let end = (i + n).min(b.len());
                if i < end {
                    b.drain(i..end);
                }
            }
            Mutation::Insert(i, bytes) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, bytes.iter().copied());
            }
            Mutation::Duplicate(i, n) => {
                let i = i % len;
                let end = (i + n).min(b.len());
                if i < end {
                    let part = b[i..end].to_vec();
                    b.splice(end..end, part);
                }
            }
            Mutation::Truncate(i) => b.truncate(i % (b.len() + 1)),
            Mutation::Token(i, t) => {
                let i = i % (b.len() + 1);
                b.splice(i..i, TOKENS[*t].bytes());
            }
        }
    }
    String::from_utf8_lossy(&b).into_owned()
}

/// A corpus entry, mutated.
fn mutated_corpus() -> impl Strategy<Value = String> {
    (0..corpus().len(), prop::collection::vec(mutation(), 0..6))
        .prop_map(|(i, muts)| mutate(&corpus()[i].1, &muts))
}

/// Arbitrary JSON, shaped a little like messages (a `type` of a known kind half the time).
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map_or(serde_json::Value::Null, serde_json::Value::Number)),
        ".{0,40}".prop_map(serde_json::Value::from),
    ];
    let value = leaf.prop_recursive(4, 48, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("type".to_owned()),
                    Just("to".to_owned()),
                    Just("description".to_owned()),
                    Just("candidate".to_owned()),
                    Just("sdp".to_owned()),
                    Just("participant_id".to_owned()),
                    Just("token".to_owned()),
                    "[a-z_]{1,12}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    });
    (
        value,
        prop_oneof![
            Just(None),
            prop::sample::select(vec![
                "hello", "admit", "deny", "notice", "signal", "stats", "leave", "end",
            ])
            .prop_map(Some),
        ],
    )
        .prop_map(|(mut v, kind)| {
            if let (Some(k), Some(o)) = (kind, v.as_object_mut()) {
                o.insert("type".into(), k.into());
            }
            v
        })
}

fn any_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => mutated_corpus(),
        2 => json_value().prop_map(|v| v.to_string()),
        1 => any::<String>(),
        1 => prop::collection::vec(any::<u8>(), 0..512)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

fn cases(n: u32) -> ProptestConfig {
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(n);
    ProptestConfig {
        cases: n,
        // Shrinking a failure is worth its time; a bounded run must still end.
        max_shrink_iters: 2_000,
        ..ProptestConfig::default()
    }
}

#[test]
fn the_corpus_is_accepted_or_refused_as_its_names_say() {
    for (name, text) in corpus() {
        let got = check(text);
        if name.starts_with("bad-") {
            assert!(got.is_err(), "{name} must be refused");
        } else {
            let m = got.unwrap_or_else(|e| panic!("{name} must be accepted: {e:?}"));
            // And what is accepted survives a round trip unchanged.
            let again = check(&serde_json::to_string(&m).unwrap()).unwrap();
            assert!(again == m, "{name} changed in a round trip");
        }
    }
}

proptest! {
    #![proptest_config(cases(2048))]

    /// Whatever arrives, the parser answers a message or one of its two documented
    /// refusals, and the checks answer Ok or their own documented codes: never a panic.
    #[test]
    fn any_text_gets_a_message_or_a_documented_refusal(text in any_text()) {
        match validate::message(&text) {
            Ok(m) => {
                if let Err((code, why)) = validate::content(&m, &cfg()) {
                    prop_assert!(matches!(
                        code,
                        ErrorCode::HelloRequired
                            | ErrorCode::InvalidSdp
                            | ErrorCode::InvalidCandidate
                            | ErrorCode::InvalidSignal
                            | ErrorCode::InvalidStats
                            | ErrorCode::InvalidNotice
                    ), "{code:?}: {why}");
                    prop_assert!(!why.is_empty());
                }
            }
            Err((code, why)) => {
                prop_assert!(
                    matches!(code, ErrorCode::MalformedMessage | ErrorCode::UnknownType),
                    "{code:?}: {why}"
                );
                prop_assert!(!why.is_empty());
            }
        }
    }

    /// A message that passes every check means the same after the server re-serialises
    /// it (what peers receive is what was checked).
    #[test]
    fn accepted_messages_round_trip(text in mutated_corpus()) {
        if let Ok(m) = check(&text) {
            let again = check(&serde_json::to_string(&m).unwrap());
            prop_assert!(again.as_ref().is_ok_and(|a| *a == m), "{text:?}");
        }
    }

    /// SDP validation is total over mangled real SDP (lines dropped, repeated, reordered
    /// or replaced, bytes changed), and nothing over the size limit is ever accepted.
    #[test]
    fn sdp_validation_is_total_and_keeps_its_limit(
        base in prop::sample::select(vec!["offer-chrome.json", "answer-webrtc-rs.json"]),
        drop in prop::collection::vec(any::<prop::sample::Index>(), 0..4),
        repeat in prop::collection::vec((any::<prop::sample::Index>(), 1usize..3000), 0..2),
        swap in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 0..3),
        replace in prop::collection::vec((any::<prop::sample::Index>(), "[ -~]{0,80}"), 0..3),
        bytes in prop::collection::vec(mutation(), 0..4),
        kind in prop::sample::select(vec!["offer", "answer", "pranswer", "rollback", "Offer", ""]),
    ) {
        let entry = &corpus().iter().find(|(n, _)| n == base).unwrap().1;
        let v: serde_json::Value = serde_json::from_str(entry).unwrap();
        let sdp = v["description"]["sdp"].as_str().unwrap();
        let mut lines: Vec<String> = sdp.split("\r\n").map(str::to_owned).collect();
        for i in drop {
            if lines.len() > 1 {
                let i = i.index(lines.len());
                lines.remove(i);
            }
        }
        for (i, n) in repeat {
            let l = lines[i.index(lines.len())].clone();
            for _ in 0..n {
                lines.push(l.clone());
            }
        }
        for (a, b) in swap {
            let (a, b) = (a.index(lines.len()), b.index(lines.len()));
            lines.swap(a, b);
        }
        for (i, text) in replace {
            let i = i.index(lines.len());
            lines[i] = text;
        }
        let sdp = mutate(&lines.join("\r\n"), &bytes);
        let d = alcove_signaling::protocol::Description { kind: kind.to_owned(), sdp: sdp.clone() };
        let got = validate::description(&d, &cfg());
        if sdp.len() > cfg().max_sdp_bytes || !["offer", "answer", "pranswer", "rollback"].contains(&kind) {
            prop_assert!(got.is_err());
        }
        if let Err((code, _)) = got {
            prop_assert_eq!(code, ErrorCode::InvalidSdp);
        }
    }
}

// ---- a whole connection loop ---------------------------------------------------------------

/// One end of an in-memory socket: frames to the hub, frames from it.
struct Socket {
    rx: flume::r#async::RecvStream<'static, Frame>,
    tx: flume::r#async::SendSink<'static, Frame>,
}

impl Stream for Socket {
    type Item = Frame;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}

impl Sink<Frame> for Socket {
    type Error = flume::SendError<Frame>;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_ready(cx)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Frame) -> Result<(), Self::Error> {
        Pin::new(&mut self.tx).start_send(item)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.tx).poll_close(cx)
    }
}

/// A connection served by `hub`: what the test sends, and what the hub answers.
struct Peer {
    to_hub: flume::Sender<Frame>,
    from_hub: flume::Receiver<Frame>,
    task: tokio::task::JoinHandle<()>,
}

fn connect(hub: &Hub) -> Peer {
    let (to_hub, hub_in) = flume::unbounded();
    let (hub_out, from_hub) = flume::unbounded();
    let socket = Socket {
        rx: hub_in.into_stream(),
        tx: hub_out.into_sink(),
    };
    let hub = hub.clone();
    let task = tokio::spawn(async move { hub.serve(socket).await });
    Peer {
        to_hub,
        from_hub,
        task,
    }
}

impl Peer {
    fn text(&self, t: impl Into<String>) {
        let _ = self.to_hub.send(Frame::Text(t.into()));
    }

    /// The next server message (pings skipped), or a close.
    async fn next(&self) -> Result<ServerMessage, Option<(u16, String)>> {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), self.from_hub.recv_async()).await {
                Ok(Ok(Frame::Text(t))) => {
                    return Ok(serde_json::from_str(&t).unwrap_or_else(|e| {
                        panic!("the server sent what is not a message: {e}: {t}")
                    }));
                }
                Ok(Ok(Frame::Ping(_) | Frame::Pong(_))) => {}
                Ok(Ok(Frame::Close(c))) => return Err(c),
                Ok(Ok(other)) => panic!("the server sent {other:?}"),
                Ok(Err(_)) => return Err(None),
                Err(_) => panic!("no answer from the server in 5 s"),
            }
        }
    }
}

/// Grants for tokens `therapist` and `client`, in one room that lets clients in directly.
struct Verifier {
    appointment: Uuid,
}

#[async_trait::async_trait]
impl JoinVerifier for Verifier {
    async fn verify(&self, token: &str) -> Result<JoinGrant, JoinRefusal> {
        let role = match token {
            "therapist" => PeerRole::Therapist,
            "client" => PeerRole::Client,
            _ => return Err(JoinRefusal::InvalidToken("unknown test token".into())),
        };
        Ok(JoinGrant {
            appointment_id: self.appointment,
            user_id: Uuid::from_u128(if role == PeerRole::Therapist { 1 } else { 2 }),
            role,
            display_name: token.into(),
            closes_at: jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1),
            auto_admit: true,
            ice: IceConfig {
                ice_servers: vec![],
                ice_transport_policy: IceTransportPolicy::All,
                expires_at: None,
            },
            sign_in: None,
            network: None,
        })
    }

    async fn refresh_ice(&self, _user_id: Uuid) -> IceConfig {
        IceConfig {
            ice_servers: vec![],
            ice_transport_policy: IceTransportPolicy::All,
            expires_at: None,
        }
    }
}

/// What a random frame may be (none that ends the connection on purpose: `leave`, `end`,
/// an oversized frame, a close).
#[derive(Debug, Clone)]
enum Input {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
}

fn input() -> impl Strategy<Value = Input> {
    prop_oneof![
        8 => any_text()
            .prop_filter("leave and end close the connection on purpose", |t| {
                !matches!(validate::message(t), Ok(ClientMessage::Leave | ClientMessage::End))
            })
            .prop_map(Input::Text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Input::Binary),
        1 => prop::collection::vec(any::<u8>(), 0..16).prop_map(Input::Ping),
    ]
}

proptest! {
    #![proptest_config(cases(256))]

    /// A client in a call sends a random stream of frames (mangled real messages, random
    /// JSON and bytes, binary frames, pings). Every text frame is answered with a message
    /// that parses or nothing, the connection stays up (the last frame still gets its
    /// ordinary answer), the therapist's connection is never disturbed beyond what was
    /// relayed to it, and no task panics.
    #[test]
    fn a_connection_fed_random_frames_stays_up_and_answers_in_protocol(
        frames in prop::collection::vec(input(), 1..40),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async move {
            let cfg = SignalingConfig {
                // A random burst must not trip the limiter: that close is tested elsewhere.
                rate_burst: 10_000,
                rate_per_sec: 10_000,
                rate_burst_bytes: 64 << 20,
                rate_bytes_per_sec: 64 << 20,
                ..SignalingConfig::default()
            };
            let hub = Hub::new(cfg, Arc::new(Verifier { appointment: Uuid::new_v4() }), Arc::new(NullSink));
            let th = connect(&hub);
            th.text(r#"{"type":"hello","token":"therapist"}"#);
            let th_pid = match th.next().await {
                Ok(ServerMessage::Welcome { participant_id, .. }) => participant_id,
                other => panic!("{other:?}"),
            };
            let cl = connect(&hub);
            cl.text(r#"{"type":"hello","token":"client"}"#);
            match cl.next().await {
                Ok(ServerMessage::Welcome { .. }) => {}
                other => panic!("{other:?}"),
            }
            for f in frames {
                match f {
                    // Half of what is addressed goes to the real therapist.
                    Input::Text(t) => cl.text(t.replace(CORPUS_PID, &th_pid.to_string())),
                    Input::Binary(b) => { let _ = cl.to_hub.send(Frame::Binary(b)); }
                    Input::Ping(b) => { let _ = cl.to_hub.send(Frame::Ping(b)); }
                }
            }
            cl.text(r#"{"type":"no_such_thing"}"#);
            // Everything the client gets parses; the last answer is the marker's.
            loop {
                match cl.next().await {
                    Ok(ServerMessage::Error { code: ErrorCode::UnknownType, message })
                        if message.contains("no_such_thing") => break,
                    Ok(_) => {}
                    Err(c) => panic!("the connection closed: {c:?}"),
                }
            }
            // The therapist is still in the room: its own marker gets its answer, after
            // whatever was relayed to it (each of which parses).
            th.text(r#"{"type":"no_such_thing"}"#);
            loop {
                match th.next().await {
                    Ok(ServerMessage::Error { code: ErrorCode::UnknownType, .. }) => break,
                    Ok(_) => {}
                    Err(c) => panic!("the therapist's connection closed: {c:?}"),
                }
            }
            // Both leave in order; neither task panicked.
            for p in [cl, th] {
                p.text(r#"{"type":"leave"}"#);
                loop {
                    match p.next().await {
                        Err(Some((code, _))) => { assert_eq!(code, close::NORMAL); break; }
                        Err(None) => break,
                        Ok(_) => {}
                    }
                }
                drop(p.to_hub);
                p.task.await.expect("the connection task ends without a panic");
            }
        });
    }
}

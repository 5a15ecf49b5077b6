//! The network test over HTTP: `POST /api/v1/network-tests` hands out a test token and ICE
//! servers, `GET /api/v1/network-tests/socket` is the WebSocket over which the browser and
//! the server's test peer negotiate (protocol in `docs/network-test.md`), and
//! `GET /api/v1/network-tests/latest` gives the caller's latest result.

use super::extract::Json;
use crate::{
    auth::{AuthUser, TypedClaims},
    error::{ApiError, ApiResult, Problem},
    nettest::{self, FromBrowser, Outcome, PeerSetup, ToBrowser},
    state::AppState,
    store::{NetworkTestRecord, Ts},
};
use alcove_signaling::{
    IceServer, IceTransportPolicy,
    protocol::{Candidate, Description},
};
use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use jiff::{SignedDuration, Timestamp};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::mpsc;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(start))
        .routes(routes!(socket))
        .routes(routes!(latest))
}

/// `aud` of test tokens: the network test's socket only.
pub const NETTEST_AUDIENCE: &str = "alcove-nettest";
/// How long a test token is good for.
const TOKEN_TTL: i64 = 60;
/// How long the socket waits for `hello`.
const HELLO_LIMIT: Duration = Duration::from_secs(10);
/// Largest message on the socket (an SDP offer is a few KiB).
const MAX_MESSAGE: usize = 64 * 1024;
/// How far back a result counts as someone's "latest" for their therapist.
pub const LATEST_WITHIN: SignedDuration = SignedDuration::from_hours(24);

/// The claims of a test token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestClaims {
    pub iss: String,
    pub aud: String,
    pub sub: Uuid,
    /// The sign-in that asked for it (it must still be signed in).
    pub sid: Uuid,
    /// The browser was told to use the relay only.
    pub relay: bool,
    /// Always `nettest`.
    pub typ: String,
    pub iat: i64,
    pub nbf: i64,
    pub exp: i64,
    /// Single use.
    pub jti: Uuid,
}

impl TypedClaims for TestClaims {
    const TYP: &'static str = "nettest";
    fn typ(&self) -> &str {
        &self.typ
    }
}

/// Options of a test.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRequest {
    /// Test the TURN relay path only (as a session in relay-only mode would go). An
    /// account that chose relay-only calls is always tested so.
    #[serde(default)]
    pub relay_only: bool,
}

/// What a browser needs to run a test. `Debug` hides the token.
#[derive(Serialize, utoipa::ToSchema)]
pub struct StartResponse {
    /// Send it in the socket's first message, `hello`; usable once, for a minute.
    pub token: String,
    /// The WebSocket to open.
    pub socket_url: String,
    /// For `RTCPeerConnection`'s `iceServers`.
    #[schema(value_type = Vec<Object>)]
    pub ice_servers: Vec<IceServer>,
    /// `all`, or `relay` when the relay path alone is tested.
    #[schema(value_type = String)]
    pub ice_transport_policy: IceTransportPolicy,
    /// The longest the test runs, in seconds.
    pub seconds: u64,
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for StartResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartResponse")
            .field("token", &"[redacted]")
            .field("socket_url", &self.socket_url)
            .field("ice_servers", &self.ice_servers)
            .finish_non_exhaustive()
    }
}

/// Start a network test: a token for the test socket and the ICE servers to use.
#[utoipa::path(post, path = "/api/v1/network-tests", tag = "sessions", security(("bearer" = [])),
    request_body = StartRequest,
    responses(
        (status = 201, description = "A test token and ICE servers", body = StartResponse),
        (status = 409, description = "The relay path was asked for and this service has no relay (`relay_unavailable`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "This account ran its tests for the hour (`network_test_limit`)", body = Problem, content_type = "application/problem+json"),
        (status = 503, description = "As many tests run as the service allows (`network_tests_busy`)", body = Problem, content_type = "application/problem+json"),
    ))]
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<StartRequest>,
) -> ApiResult<(StatusCode, axum::Json<StartResponse>)> {
    // Busy first: a refused start does not count against the hour.
    if state.network_tests.available_permits() == 0 {
        return Err(busy());
    }
    let per_hour = state.config.network_test_per_hour;
    match state
        .login_throttle
        .before_network_test(user.id, per_hour)
        .await
    {
        Ok(Err(wait)) => {
            let mins = wait.secs().div_ceil(60);
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "network_test_limit",
                format!(
                    "you can run {per_hour} network tests an hour; try again in {mins} minute{}",
                    if mins == 1 { "" } else { "s" }
                ),
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from(wait.secs())));
        }
        Ok(Ok(())) => {}
        Err(e) => return Err(ApiError::unavailable(e)),
    }
    let relay = body.relay_only || state.db.relay_only(user.id).await?;
    let ice = state
        .ice
        .mint(relay)
        .map_err(|e| ApiError::conflict("relay_unavailable", e.to_string()))?;
    let now = Timestamp::now();
    let claims = TestClaims {
        iss: state.jwt.issuer().to_owned(),
        aud: NETTEST_AUDIENCE.to_owned(),
        sub: user.id,
        sid: user.session_id,
        relay: ice.ice_transport_policy == IceTransportPolicy::Relay,
        typ: "nettest".into(),
        iat: now.as_second(),
        nbf: now.as_second(),
        exp: now.as_second() + TOKEN_TTL,
        jti: Uuid::new_v4(),
    };
    let token = state.jwt.sign(&claims)?;
    Ok((
        StatusCode::CREATED,
        axum::Json(StartResponse {
            token,
            socket_url: socket_url(&state.public_url),
            ice_servers: ice.ice_servers,
            ice_transport_policy: ice.ice_transport_policy,
            seconds: nettest::TEST_LIMIT.as_secs(),
            expires_at: Timestamp::from_second(claims.exp).unwrap_or(now),
        }),
    ))
}

fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "network_tests_busy",
        "the service is running as many network tests as it can; try again in a minute",
    )
    .with_header(header::RETRY_AFTER, HeaderValue::from_static("30"))
}

/// `ws(s)://host/api/v1/network-tests/socket` for a public URL `http(s)://host`.
fn socket_url(public_url: &str) -> String {
    super::signal::signaling_url(public_url)
        .replace("/api/v1/signal", "/api/v1/network-tests/socket")
}

/// A finished test, as its owner reads it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct LatestView {
    pub id: Uuid,
    #[schema(value_type = String, format = DateTime)]
    pub finished_at: Timestamp,
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The caller's latest network test of the last 24 hours.
#[utoipa::path(get, path = "/api/v1/network-tests/latest", tag = "sessions", security(("bearer" = [])),
    responses(
        (status = 200, description = "The latest result", body = LatestView),
        (status = 404, description = "No test in the last 24 hours", body = Problem, content_type = "application/problem+json"),
    ))]
async fn latest(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<LatestView>> {
    let since = Ts::from(Timestamp::now() - LATEST_WITHIN);
    let r = state
        .db
        .latest_network_test(user.id, since)
        .await?
        .ok_or_else(|| ApiError::not_found("network test"))?;
    Ok(axum::Json(view(r)))
}

/// A kept record as the API shows it (the advice is written anew from the verdict).
pub fn view(r: NetworkTestRecord) -> LatestView {
    let verdict = nettest::Verdict::parse(&r.verdict);
    LatestView {
        id: r.id,
        finished_at: r.finished_at.get(),
        outcome: Outcome {
            verdict,
            advice: nettest::advice(verdict, r.reason.as_deref(), r.relay_forced),
            reason: r.reason,
            path: r.path,
            relay_forced: r.relay_forced,
            connect_ms: r.connect_ms,
            rtt_ms: r.rtt_ms,
            packet_loss: r.packet_loss,
            upload_kbps: r.upload_kbps,
        },
    }
}

/// Messages the browser sends on the test socket. `Debug` hides the token.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum ClientMsg {
    Hello {
        token: String,
    },
    Signal {
        #[serde(default)]
        description: Option<Description>,
        #[serde(default)]
        candidate: Option<Candidate>,
    },
    /// After connecting: the TURN transport of the browser's selected local candidate
    /// (`udp`, `tcp`, `tls`), when it is relayed.
    Report {
        relay_protocol: String,
    },
}

/// Messages the server sends on the test socket.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ServerMsg {
    /// The token is good: send the offer.
    Ready {
        test_id: Uuid,
        seconds: u64,
    },
    Signal {
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<Description>,
        #[serde(skip_serializing_if = "Option::is_none")]
        candidate: Option<Candidate>,
    },
    /// A step began: `connecting`, `echo`, `upload`.
    Step {
        step: &'static str,
    },
    Result {
        test_id: Uuid,
        #[serde(flatten)]
        outcome: Outcome,
    },
    Error {
        code: &'static str,
        message: String,
    },
}

/// The test socket. Browsers must come from an allowed origin, as for signalling.
#[utoipa::path(get, path = "/api/v1/network-tests/socket", tag = "sessions",
    responses(
        (status = 101, description = "Switching to the network test protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Origin not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn socket(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = super::signal::origin_refused(&state, &headers, "the network test") {
        return refused.into_response();
    }
    ws.max_message_size(MAX_MESSAGE)
        .max_frame_size(MAX_MESSAGE)
        .on_upgrade(move |socket| serve(state, socket))
}

async fn send(ws: &mut WebSocket, msg: &ServerMsg) -> bool {
    let text = serde_json::to_string(msg).expect("messages serialise");
    ws.send(Message::Text(text.into())).await.is_ok()
}

async fn fail(ws: &mut WebSocket, close: u16, code: &'static str, message: impl Into<String>) {
    let message = message.into();
    let _ = send(
        ws,
        &ServerMsg::Error {
            code,
            message: message.clone(),
        },
    )
    .await;
    let _ = ws
        .send(Message::Close(Some(CloseFrame {
            code: close,
            reason: code.into(),
        })))
        .await;
}

/// The next text message, or `None` when the socket closed.
async fn next_text(ws: &mut WebSocket) -> Option<Result<String, ()>> {
    loop {
        match ws.recv().await? {
            Ok(Message::Text(t)) => return Some(Ok(t.to_string())),
            Ok(Message::Binary(_)) => return Some(Err(())),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Check a test token: the claims, once, of a sign-in that still holds.
async fn admit(state: &AppState, token: &str) -> Result<TestClaims, (u16, &'static str, String)> {
    let refuse = |m: String| (4001, "invalid_token", m);
    let again = || {
        (
            1013,
            "unavailable",
            "the service cannot check this test right now; try again in a moment".to_owned(),
        )
    };
    if token.is_empty() || token.len() > 4096 {
        return Err(refuse("the test token is missing or too long".into()));
    }
    let claims: TestClaims = state
        .jwt
        .verify(token, NETTEST_AUDIENCE)
        .map_err(|e| refuse(e.to_string()))?;
    let used = crate::signal::UsedTokens::new(state.expiring.clone());
    match used.first_use(claims.jti, claims.exp).await {
        Ok(true) => {}
        Ok(false) => {
            return Err(refuse(
                "the test token was already used; start a new test".into(),
            ));
        }
        Err(_) => return Err(again()),
    }
    let su = state
        .db
        .session_user(claims.sub, claims.sid)
        .await
        .map_err(|_| again())?;
    match su {
        Some(su)
            if !su.user.disabled
                && su.revoked_at.is_none()
                && su.expires_at > Ts::now()
                && !crate::auth::idle_expired(su.last_used_at, &state.config) =>
        {
            Ok(claims)
        }
        _ => Err(refuse(
            "the sign-in that asked for this test has ended; sign in again".into(),
        )),
    }
}

/// One test, from `hello` to `result`.
async fn serve(state: AppState, mut ws: WebSocket) {
    let token = match tokio::time::timeout(HELLO_LIMIT, next_text(&mut ws)).await {
        Err(_) => {
            return fail(
                &mut ws,
                4008,
                "timeout",
                "send hello first, within 10 seconds",
            )
            .await;
        }
        Ok(None) => return,
        Ok(Some(Err(()))) => {
            return fail(&mut ws, 4002, "bad_message", "messages are JSON text").await;
        }
        Ok(Some(Ok(text))) => match serde_json::from_str::<ClientMsg>(&text) {
            Ok(ClientMsg::Hello { token }) => token,
            _ => {
                return fail(
                    &mut ws,
                    4002,
                    "bad_message",
                    "the first message must be hello with a test token",
                )
                .await;
            }
        },
    };
    let claims = match admit(&state, &token).await {
        Ok(c) => c,
        Err((close, code, message)) => return fail(&mut ws, close, code, message).await,
    };
    let Ok(permit) = state.network_tests.clone().try_acquire_owned() else {
        return fail(
            &mut ws,
            1013,
            "busy",
            "the service is running as many network tests as it can; try again in a minute",
        )
        .await;
    };
    let test_id = Uuid::new_v4();
    let started_at = Ts::now();
    if !send(
        &mut ws,
        &ServerMsg::Ready {
            test_id,
            seconds: nettest::TEST_LIMIT.as_secs(),
        },
    )
    .await
    {
        return;
    }
    // The test peer's own ICE servers: the same STUN and TURN as a browser's, so that a
    // relayed browser always has a way to it.
    let peer_ice = state
        .ice
        .mint(false)
        .map(|c| c.ice_servers)
        .unwrap_or_default();
    let setup = PeerSetup {
        udp: state.config.network_test_udp,
        ice_servers: peer_ice,
    };
    let (from_tx, from_rx) = mpsc::channel(64);
    let (to_tx, mut to_rx) = mpsc::channel(64);
    let mut run = Box::pin(nettest::run(setup, claims.relay, from_rx, to_tx));
    // A bound of its own for the whole exchange, whatever the browser does.
    let limit = tokio::time::sleep(nettest::TEST_LIMIT + Duration::from_secs(10));
    tokio::pin!(limit);
    let outcome = loop {
        tokio::select! {
            outcome = &mut run => break outcome,
            () = &mut limit => {
                return fail(&mut ws, 4008, "timeout", "the test took too long and was stopped").await;
            },
            out = to_rx.recv() => if let Some(out) = out {
                let msg = match out {
                    ToBrowser::Description(d) => ServerMsg::Signal { description: Some(d), candidate: None },
                    ToBrowser::Candidate(c) => ServerMsg::Signal { description: None, candidate: Some(c) },
                    ToBrowser::Step(step) => ServerMsg::Step { step },
                };
                if !send(&mut ws, &msg).await {
                    return;
                }
            },
            text = next_text(&mut ws) => match text {
                // The browser left: the test is abandoned, nothing kept.
                None => return,
                Some(Err(())) => {
                    let _ = send(&mut ws, &ServerMsg::Error { code: "bad_message", message: "messages are JSON text".into() }).await;
                }
                Some(Ok(text)) => {
                    let msg = match serde_json::from_str::<ClientMsg>(&text) {
                        Ok(ClientMsg::Signal { description: Some(d), .. }) => Some(FromBrowser::Description(d)),
                        Ok(ClientMsg::Signal { candidate: Some(c), .. }) => Some(FromBrowser::Candidate(c)),
                        Ok(ClientMsg::Report { relay_protocol }) => Some(FromBrowser::RelayProtocol(relay_protocol)),
                        Ok(ClientMsg::Signal { .. }) => None,
                        Ok(ClientMsg::Hello { .. }) => {
                            let _ = send(&mut ws, &ServerMsg::Error { code: "bad_message", message: "hello was already said".into() }).await;
                            None
                        }
                        // The parser's message may quote the input (an SDP, a candidate).
                        Err(_) => {
                            let _ = send(&mut ws, &ServerMsg::Error { code: "bad_message", message: "not a message of the network test (signal or report)".into() }).await;
                            None
                        }
                    };
                    // Never wait on the test here (it would stop reading its own answers):
                    // a browser that floods it is told so, and the flood dropped.
                    if let Some(m) = msg
                        && from_tx.try_send(m).is_err()
                    {
                        let _ = send(&mut ws, &ServerMsg::Error { code: "bad_message", message: "too many messages at once".into() }).await;
                    }
                }
            },
        }
    };
    drop(permit);
    let outcome = match outcome {
        Ok(o) => o,
        // Nothing is kept of a test that could not run.
        Err(nettest::Aborted::Gone) => return,
        Err(nettest::Aborted::BadOffer(why)) => {
            return fail(
                &mut ws,
                4002,
                "bad_message",
                format!("{why}; nothing was measured"),
            )
            .await;
        }
        Err(nettest::Aborted::Internal(why)) => {
            tracing::warn!("network test could not run: {why} (ALCOVE_NETWORK_TEST_UDP?)");
            return fail(
                &mut ws,
                1011,
                "unavailable",
                "the service cannot run a network test right now; try again later",
            )
            .await;
        }
    };
    let record = NetworkTestRecord {
        id: test_id,
        user_id: claims.sub,
        started_at,
        finished_at: Ts::now(),
        verdict: outcome.verdict.as_str().to_owned(),
        reason: outcome.reason.clone(),
        path: outcome.path.clone(),
        relay_forced: outcome.relay_forced,
        connect_ms: outcome.connect_ms,
        rtt_ms: outcome.rtt_ms,
        packet_loss: outcome.packet_loss,
        upload_kbps: outcome.upload_kbps,
    };
    if let Err(e) = state.db.insert_network_test(&record).await {
        tracing::warn!(error = %e, "could not keep a network test's result");
    }
    state.metrics.network_test(outcome.verdict.as_str());
    tracing::info!(
        test_id = %test_id,
        verdict = outcome.verdict.as_str(),
        reason = outcome.reason.as_deref().unwrap_or(""),
        path = outcome.path.as_deref().unwrap_or(""),
        rtt_ms = outcome.rtt_ms,
        packet_loss = outcome.packet_loss,
        upload_kbps = outcome.upload_kbps,
        "network test finished"
    );
    if send(&mut ws, &ServerMsg::Result { test_id, outcome }).await {
        let _ = ws
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "done".into(),
            })))
            .await;
    }
}

//! Joining a session: `POST /api/v1/appointments/{id}/join` hands out a join token, and
//! `GET /api/v1/signal` is the signalling WebSocket (protocol in `docs/signaling.md`).

use super::{appointments::visible, extract::Path};
use crate::{
    auth::AuthUser,
    domain::Role,
    error::{ApiError, ApiResult, Problem},
    signal::{JoinClaims, SIGNAL_AUDIENCE, joinable},
    state::AppState,
};
use alcove_signaling::{Frame, IceServer, IceTransportPolicy};
use axum::{
    extract::{
        State,
        ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade},
    },
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures_util::{Sink, Stream};
use jiff::{SignedDuration, Timestamp};
use serde::Serialize;
use std::{
    pin::Pin,
    task::{Context, Poll, ready},
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(join))
        .routes(routes!(signal))
}

/// What a browser needs to enter a session. `Debug` hides the token (the ICE servers hide
/// their own credentials).
#[derive(Serialize, utoipa::ToSchema)]
pub struct JoinResponse {
    /// Send it in the first `hello` message; usable once, for minutes.
    pub token: String,
    /// The WebSocket to open (`ws://…/api/v1/signal` or `wss://…`).
    pub signaling_url: String,
    /// For `RTCPeerConnection`'s `iceServers` (TURN credentials are fresh each time).
    #[schema(value_type = Vec<Object>)]
    pub ice_servers: Vec<IceServer>,
    /// `all`, or `relay` in relay-only privacy mode.
    #[schema(value_type = String)]
    pub ice_transport_policy: IceTransportPolicy,
    /// When the token expires.
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

impl std::fmt::Debug for JoinResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JoinResponse")
            .field("token", &"[redacted]")
            .field("signaling_url", &self.signaling_url)
            .field("ice_servers", &self.ice_servers)
            .field("ice_transport_policy", &self.ice_transport_policy)
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// Get a join token for an appointment's video session (participants, inside the join
/// window). The token is never put in a URL: send it in the WebSocket's `hello` message.
#[utoipa::path(post, path = "/api/v1/appointments/{id}/join", tag = "sessions", security(("bearer" = [])),
    params(("id" = Uuid, Path, description = "Appointment id")),
    responses(
        (status = 200, description = "A join token and ICE servers", body = JoinResponse),
        (status = 404, description = "No such appointment of yours", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "Outside the join window, or not booked (`not_joinable`); turned away by the therapist (`denied`); relay-only chosen but no relay (`relay_unavailable`)", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "More than 30 join tokens for this account in a minute", body = Problem, content_type = "application/problem+json"),
    ))]
async fn join(
    State(state): State<AppState>,
    user: AuthUser,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<JoinResponse>> {
    let a = visible(&state, &user, id).await?;
    if !a.is_participant(user.id) {
        // Admins read appointments but do not join sessions.
        return Err(ApiError::not_found("appointment"));
    }
    // The pace of join tokens per account (a flood's rejoins). When its counter cannot be
    // reached (Redis away) the token is issued all the same: the `hello` then answers
    // `unavailable` by itself, as it needs Redis to spend the token (docs/reliability.md).
    match state.login_throttle.before_join(user.id).await {
        Ok(Err(wait)) => return Err(ApiError::too_many_requests(wait.secs())),
        Ok(Ok(())) => {}
        Err(e) => tracing::debug!(error = %e, "join pace not checked"),
    }
    let now = Timestamp::now();
    joinable(&state.config, &a, user.id, now)
        .map_err(|why| ApiError::conflict("not_joinable", why))?;
    if a.denied(user.id) {
        return Err(ApiError::conflict("denied", crate::signal::DENIED));
    }
    // Before the token: a relay-only account on a deployment without TURN is refused, not
    // connected directly.
    let ice = state
        .ice
        .mint(state.db.relay_only(user.id).await?)
        .map_err(|e| ApiError::conflict("relay_unavailable", e.to_string()))?;
    let exp = now + SignedDuration::try_from(state.config.join_token_ttl).unwrap_or_default();
    let claims = JoinClaims {
        iss: state.jwt.issuer().to_owned(),
        aud: SIGNAL_AUDIENCE.to_owned(),
        sub: user.id,
        sid: user.session_id,
        apt: a.id,
        role: if a.therapist_id == user.id {
            Role::Therapist
        } else {
            Role::Client
        },
        starts: a.starts_at.get().as_second(),
        typ: "join".into(),
        iat: now.as_second(),
        nbf: now.as_second(),
        exp: exp.as_second(),
        jti: Uuid::new_v4(),
    };
    let token = state.jwt.sign(&claims)?;
    state
        .audit(
            Some(&user),
            "session.join_token",
            "appointment",
            Some(a.id.to_string()),
            serde_json::json!({"token_id": claims.jti}),
        )
        .await?;
    Ok(axum::Json(JoinResponse {
        token,
        signaling_url: signaling_url(&state.public_url),
        ice_servers: ice.ice_servers,
        ice_transport_policy: ice.ice_transport_policy,
        expires_at: Timestamp::from_second(exp.as_second()).unwrap_or(exp),
    }))
}

/// `ws(s)://host/api/v1/signal` for a public URL `http(s)://host`.
pub fn signaling_url(public_url: &str) -> String {
    let ws = if let Some(rest) = public_url.strip_prefix("https://") {
        format!("wss://{rest}")
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        format!("ws://{rest}")
    } else {
        public_url.to_owned()
    };
    format!("{ws}/api/v1/signal")
}

/// The origin (`scheme://host[:port]`) of a URL.
fn origin_of(url: &str) -> &str {
    let after_scheme = url.find("://").map_or(0, |i| i + 3);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Whether a browser at `origin` may open the signalling socket.
fn origin_allowed(state: &AppState, origin: &str) -> bool {
    let allowed = &state.config.allowed_origins;
    if allowed.is_empty() {
        return origin == origin_of(&state.public_url);
    }
    allowed
        .iter()
        .any(|o| o == "*" || o.trim_end_matches('/') == origin)
}

/// A 403 when a browser's page of a disallowed origin asks to open `what` (a WebSocket);
/// `None` when it may (a missing `Origin`, as from non-browser clients, is accepted: only
/// browsers can be made to connect by a page of another site).
pub(super) fn origin_refused(
    state: &AppState,
    headers: &HeaderMap,
    what: &str,
) -> Option<ApiError> {
    let origin = headers.get(header::ORIGIN)?;
    if origin.to_str().is_ok_and(|o| origin_allowed(state, o)) {
        return None;
    }
    Some(ApiError::new(
        StatusCode::FORBIDDEN,
        "origin_not_allowed",
        format!("this page's origin may not open {what}"),
    ))
}

/// The signalling WebSocket. Browsers must come from an allowed origin (a missing `Origin`,
/// as from non-browser clients, is accepted: only browsers can be made to connect by a
/// page of another site). Protocol: `docs/signaling.md`.
#[utoipa::path(get, path = "/api/v1/signal", tag = "sessions",
    responses(
        (status = 101, description = "Switching to the signalling protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Origin not allowed", body = Problem, content_type = "application/problem+json"),
    ))]
async fn signal(
    State(state): State<AppState>,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(refused) = origin_refused(&state, &headers, "the signalling connection") {
        return refused.into_response();
    }
    upgrade(state.hub.clone(), ws)
}

/// Hand an upgrading WebSocket to the signalling hub.
///
/// Small buffers: a node holds many idle connections, and tungstenite's defaults allocate
/// about 128 KiB each. Writes go out eagerly; reads grow their buffer only as needed.
/// (Public for the footprint benchmark in `bench/`, which measures exactly this path.)
pub fn upgrade(hub: alcove_signaling::Hub, ws: WebSocketUpgrade) -> Response {
    let limit = hub.config().max_message_bytes;
    ws.read_buffer_size(1024)
        .write_buffer_size(0)
        .max_write_buffer_size(limit * 4)
        .max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| async move { hub.serve(WsFrames(socket)).await })
}

/// An axum WebSocket seen as a stream and sink of signalling [`Frame`]s.
struct WsFrames(WebSocket);

fn too_big(e: &axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::{Error, error::CapacityError};
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<Error>())
        .is_some_and(|e| matches!(e, Error::Capacity(CapacityError::MessageTooLong { .. })))
}

impl Stream for WsFrames {
    type Item = Frame;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Frame>> {
        let item = ready!(Pin::new(&mut self.0).poll_next(cx));
        Poll::Ready(item.map(|r| match r {
            Ok(Message::Text(t)) => Frame::Text(t.to_string()),
            Ok(Message::Binary(b)) => Frame::Binary(b.to_vec()),
            Ok(Message::Ping(b)) => Frame::Ping(b.to_vec()),
            Ok(Message::Pong(b)) => Frame::Pong(b.to_vec()),
            Ok(Message::Close(c)) => Frame::Close(c.map(|c| (c.code, c.reason.to_string()))),
            Err(e) if too_big(&e) => Frame::TooBig,
            Err(_) => Frame::Close(None),
        }))
    }
}

impl Sink<Frame> for WsFrames {
    type Error = axum::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, frame: Frame) -> Result<(), Self::Error> {
        let msg = match frame {
            Frame::Text(t) => Message::Text(t.into()),
            Frame::Binary(b) => Message::Binary(b.into()),
            Frame::Ping(b) => Message::Ping(b.into()),
            Frame::Pong(b) => Message::Pong(b.into()),
            Frame::Close(c) => Message::Close(c.map(|(code, reason)| CloseFrame {
                code,
                reason: reason.into(),
            })),
            Frame::TooBig => Message::Close(None),
        };
        Pin::new(&mut self.0).start_send(msg)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.0).poll_close(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_response_never_shows_its_token_or_turn_credential_in_debug_output() {
        let r = JoinResponse {
            token: "eyJhbGciOiJFZERTQSJ9.secret-claims.secret-signature".into(),
            signaling_url: "wss://t.example.org/api/v1/signal".into(),
            ice_servers: vec![IceServer {
                urls: vec!["turn:t.example.org:3478".into()],
                username: Some("1700000000:ab12".into()),
                credential: Some("secret-turn-credential".into()),
            }],
            ice_transport_policy: IceTransportPolicy::All,
            expires_at: Timestamp::now(),
        };
        let shown = format!("{r:?} {r:#?}");
        assert!(
            !shown.contains("secret") && !shown.contains("eyJ"),
            "{shown}"
        );
        assert!(shown.contains("wss://t.example.org"), "{shown}");
    }

    #[test]
    fn urls_and_origins() {
        assert_eq!(
            signaling_url("https://t.example.org"),
            "wss://t.example.org/api/v1/signal"
        );
        assert_eq!(
            signaling_url("http://127.0.0.1:8080"),
            "ws://127.0.0.1:8080/api/v1/signal"
        );
        assert_eq!(
            origin_of("https://t.example.org/app"),
            "https://t.example.org"
        );
        assert_eq!(origin_of("http://127.0.0.1:8080"), "http://127.0.0.1:8080");
    }
}

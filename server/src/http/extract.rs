//! Extractors whose rejections are problem bodies like every other error.

use crate::error::ApiError;
use axum::{
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{JsonRejection, PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
};
use serde::de::DeserializeOwned;

/// `axum::Json`, with malformed bodies answered as problems: 400 for broken JSON, 422 for
/// wrong types, missing or unknown fields, or a body that is not a JSON object (serde would
/// otherwise take `[1, 2]` for a struct's fields in order), 413 for bodies over the limit,
/// 415 for a missing `Content-Type: application/json`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as JSON with Content-Type: application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|r| {
                if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    ApiError::bad_request("bad_request", r.body_text())
                }
            })?;
        let v = axum::Json::<T>::from_bytes(&bytes).map_err(json_rejection)?;
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                "the body must be a JSON object",
            ));
        }
        Ok(Json(v.0))
    }
}

/// `application/json` or `application/…+json`, as axum's own `Json` checks.
fn json_content_type(headers: &axum::http::HeaderMap) -> bool {
    let Some(ct) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

fn json_rejection(r: JsonRejection) -> ApiError {
    match r {
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            e.body_text(),
        ),
        JsonRejection::JsonSyntaxError(e) => ApiError::bad_request("malformed_json", e.body_text()),
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as JSON with Content-Type: application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is too large",
        ),
        other => ApiError::bad_request("bad_request", other.body_text()),
    }
}

/// `axum::extract::Query` with problem rejections.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| Query(v))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// `axum::extract::Path` with problem rejections.
pub struct Path<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| Path(v))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// The client's IP address, for rate limits only: it is turned into a keyed hash at once
/// and never logged, stored or put in a response.
///
/// It is the connection's peer address, or, when that peer is one of the configured trusted
/// proxies (`ALCOVE_TRUSTED_PROXIES`), the rightmost address in `X-Forwarded-For` that is
/// not itself a trusted proxy. From anyone else the header is ignored, so a client cannot
/// pick its own address to dodge a limit.
#[derive(Clone, Copy)]
pub struct ClientAddr(pub Option<std::net::IpAddr>);

impl ClientAddr {
    /// Work out the client address from the peer and the forwarded header.
    pub fn resolve(
        peer: Option<std::net::IpAddr>,
        forwarded_for: Option<&str>,
        trusted: &[ipnet::IpNet],
    ) -> Self {
        // A dual-stack listener sees IPv4 peers as `::ffff:a.b.c.d`: compare as IPv4.
        let is_trusted = |ip: &std::net::IpAddr| {
            let ip = ip.to_canonical();
            trusted.iter().any(|n| n.contains(&ip))
        };
        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            return Self(None);
        };
        if !is_trusted(&peer) {
            return Self(Some(peer));
        }
        let forwarded = forwarded_for
            .into_iter()
            .flat_map(|h| h.split(','))
            .rev()
            .map(|s| {
                s.trim()
                    .parse::<std::net::IpAddr>()
                    .map(|ip| ip.to_canonical())
            });
        for hop in forwarded {
            match hop {
                Ok(ip) if is_trusted(&ip) => continue,
                Ok(ip) => return Self(Some(ip)),
                // A hop we cannot read: stop believing the header there.
                Err(_) => break,
            }
        }
        Self(Some(peer))
    }
}

impl FromRequestParts<crate::state::AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        // Several X-Forwarded-For headers are one list, in order.
        let joined: Vec<&str> = parts
            .headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        let joined = (!joined.is_empty()).then(|| joined.join(","));
        Ok(Self::resolve(
            peer,
            joined.as_deref(),
            &state.trusted_proxies,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_are_believed_only_from_trusted_proxies() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse::<std::net::IpAddr>().unwrap());
        // A client that writes the header itself gains nothing.
        assert_eq!(
            ClientAddr::resolve(ip("192.0.2.5"), Some("203.0.113.9"), &trusted).0,
            ip("192.0.2.5")
        );
        // Through the proxy: the rightmost hop that is not a proxy; what the client
        // prepended on the left is not believed.
        assert_eq!(
            ClientAddr::resolve(
                ip("10.1.2.3"),
                Some("198.51.100.1, 192.0.2.5, 10.9.9.9"),
                &trusted
            )
            .0,
            ip("192.0.2.5")
        );
        assert_eq!(
            ClientAddr::resolve(ip("10.1.2.3"), None, &trusted).0,
            ip("10.1.2.3")
        );
        assert_eq!(
            ClientAddr::resolve(ip("10.1.2.3"), Some("garbage"), &trusted).0,
            ip("10.1.2.3")
        );
        // The same proxy as a dual-stack listener sees it.
        assert_eq!(
            ClientAddr::resolve(ip("::ffff:10.1.2.3"), Some("192.0.2.5"), &trusted).0,
            ip("192.0.2.5")
        );
    }
}

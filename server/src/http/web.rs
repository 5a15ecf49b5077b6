//! The browser client in `web/`, embedded in the binary (or read from `ALCOVE_WEB_DIR`).

use crate::{error::ApiError, state::AppState};
use axum::{
    extract::State,
    http::{HeaderValue, Method, Uri, header},
    response::{IntoResponse, Response},
};

#[derive(rust_embed::Embed)]
#[folder = "../web/"]
#[exclude = "README.md"]
#[exclude = "package.json"]
#[exclude = "tests/*"]
#[exclude = "node_modules/*"]
struct Assets;

/// Content Security Policy for the pages: everything from this origin only (no CDN), no
/// framing, no inline script.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
media-src 'self' blob: mediastream:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; \
form-action 'self'; object-src 'none'";

/// Serve a file of the web client; `/` is `index.html`. Anything else under `/api/` is
/// an API route that does not exist.
pub async fn serve(State(state): State<AppState>, method: Method, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") || (method != Method::GET && method != Method::HEAD) {
        return ApiError::not_found("route").into_response();
    }
    let rel = match path.trim_start_matches('/') {
        "" => "index.html",
        p => p,
    };
    // Refuse anything that could step outside the folder.
    if rel
        .split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == ".." || seg.contains('\\'))
    {
        return ApiError::not_found("page").into_response();
    }
    let bytes = match &state.config.web_dir {
        Some(dir) => tokio::fs::read(dir.join(rel)).await.ok(),
        None => Assets::get(rel).map(|f| f.data.into_owned()),
    };
    let Some(bytes) = bytes else {
        return ApiError::not_found("page").into_response();
    };
    let mime = mime_guess::from_path(rel).first_or_octet_stream();
    let mut res = bytes.into_response();
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_str(mime.as_ref()).expect("mime is ascii"),
    );
    // Revalidate every time: small files, and a deploy must never mix old and new scripts.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    res
}

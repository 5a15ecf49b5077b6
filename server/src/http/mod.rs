//! The HTTP API: one module per feature, each exposing `router()`, merged here with the
//! OpenAPI document, the web client and the middleware every request passes through.

mod admin;
mod appointments;
mod auth;
mod availability;
pub(crate) mod calendar;
mod care;
pub mod extract;
mod health;
mod me;
pub mod nettest;
pub mod pagination;
mod probe;
mod records;
pub mod signal;
mod therapists;
pub mod views;
mod web;

use crate::{
    error::{PROBLEM_JSON, REQUEST_ID, problem_response},
    state::AppState,
};
use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderName, HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
    routing::get,
};
use std::{sync::Arc, time::Duration};
use tower_http::{
    catch_panic::CatchPanicLayer, sensitive_headers::SetSensitiveRequestHeadersLayer,
    timeout::TimeoutLayer, trace::TraceLayer,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{Http, HttpAuthScheme, SecurityScheme},
};
use utoipa_axum::router::OpenApiRouter;

/// Largest JSON body the API reads.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Alcove API",
        description = "Accounts, the therapist directory, appointments and session records of Alcove. \
Errors are RFC 9457 problem documents (application/problem+json) with a stable `code`.",
        license(name = "AGPL-3.0-only")
    ),
    modifiers(&BearerAuth),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    tags(
        (name = "auth", description = "Registration, sign-in and tokens"),
        (name = "account", description = "The signed-in account"),
        (name = "directory", description = "Therapist directory and profiles"),
        (name = "scheduling", description = "Availability and free slots"),
        (name = "appointments", description = "Booking, changes and history"),
        (name = "calendar", description = "iCalendar files and feeds"),
        (name = "sessions", description = "Joining video sessions (signalling)"),
        (name = "records", description = "Session records and attendance (metadata only)"),
        (name = "admin", description = "Administration"),
        (name = "operations", description = "Health and keys"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.bearer_format = Some("JWT".into());
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The API routes and their OpenAPI document.
pub fn api() -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(health::router())
        .merge(auth::router())
        .merge(me::router())
        .merge(therapists::router())
        .merge(availability::router())
        .merge(appointments::router())
        .merge(care::router())
        .merge(calendar::router())
        .merge(signal::router())
        .merge(nettest::router())
        .merge(probe::router())
        .merge(records::router())
        .merge(admin::router())
        .split_for_parts();
    common_responses(&mut doc);
    (router, doc)
}

/// Document, on every operation, the answers that come from the layers around the
/// handlers rather than the handlers themselves, so that the document names every status
/// a client can get (schemathesis checks it): 400 (a path or query parameter of the wrong
/// form, a body that is not JSON), 401 (operations that need a token), 413 and 415 (bodies
/// over 64 KiB or not JSON), 422 (bodies and queries that fail validation), and 503 (the
/// database is unreachable, the request timed out, or the server is busy).
fn common_responses(doc: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};
    let problem = |what: &str| {
        RefOr::T(
            ResponseBuilder::new()
                .description(what)
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        )
    };
    for item in doc.paths.paths.values_mut() {
        let path_params = item.parameters.as_ref().is_some_and(|p| !p.is_empty());
        for op in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let params = path_params || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
            let body = op.request_body.is_some();
            let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
            let r = &mut op.responses.responses;
            let mut add = |code: &str, what: &str| {
                r.entry(code.to_owned()).or_insert_with(|| problem(what));
            };
            if params || body {
                add(
                    "400",
                    "Malformed request: a parameter of the wrong form, or a body that is not JSON",
                );
                add(
                    "422",
                    "The request failed validation (`errors` names each field)",
                );
            }
            if secured {
                add("401", "Not signed in, or the token is not valid");
            }
            if body {
                add("413", "The body is over 64 KiB");
                add("415", "The body is not `application/json`");
            }
            add(
                "503",
                "The database cannot be reached, the request took too long, or the server is busy: try again",
            );
        }
    }
}

/// The whole application: API, OpenAPI document, web client, middleware.
pub fn router(state: AppState) -> Router {
    let (api, openapi) = api();
    let openapi_json: Arc<str> = openapi
        .to_pretty_json()
        .expect("the OpenAPI document serialises")
        .into();
    api.route(
        "/api/v1/openapi.json",
        get(move || {
            let body = openapi_json.clone();
            async move {
                (
                    [(header::CONTENT_TYPE, "application/json")],
                    body.to_string(),
                )
            }
        }),
    )
    .merge(metrics_route(&state))
    .fallback(web::serve)
    .layer(middleware::from_fn_with_state(
        state.db_health.clone(),
        crate::db_health::gate,
    ))
    .layer(middleware::from_fn_with_state(
        state.metrics.clone(),
        crate::metrics::track,
    ))
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
    .layer(middleware::from_fn(errors_as_problems))
    .layer(middleware::from_fn_with_state(
        state.config.https(),
        security_headers,
    ))
    .layer(CatchPanicLayer::custom(|_| {
        tracing::error!("a request handler panicked");
        problem_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side".into(),
            Vec::new(),
        )
    }))
    .layer(TimeoutLayer::with_status_code(
        StatusCode::SERVICE_UNAVAILABLE,
        state.config.request_timeout,
    ))
    .layer(
        TraceLayer::new_for_http()
            .make_span_with(|req: &Request| {
                // The route template only: raw paths and query strings can carry tokens
                // (calendar feeds) and are never logged.
                let route = req
                    .extensions()
                    .get::<MatchedPath>()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "<unmatched>".into());
                let request_id = req
                    .extensions()
                    .get::<RequestId>()
                    .map(|r| r.0.clone())
                    .unwrap_or_default();
                tracing::info_span!("http", method = %req.method(), route, request_id)
            })
            .on_request(())
            .on_response(|res: &Response, latency: Duration, _span: &tracing::Span| {
                tracing::info!(
                    status = res.status().as_u16(),
                    latency_ms = latency.as_millis() as u64,
                    "served"
                );
            })
            .on_failure(()),
    )
    .layer(SetSensitiveRequestHeadersLayer::new([
        header::AUTHORIZATION,
        header::COOKIE,
    ]))
    .layer(middleware::from_fn(request_id))
    .with_state(state)
}

/// `GET /metrics` on the public listener, unless it has a listener of its own.
fn metrics_route(state: &AppState) -> Router<AppState> {
    if state.config.metrics_listen.is_some() {
        return Router::new();
    }
    Router::new().route(
        "/metrics",
        get(crate::metrics::serve).with_state(state.metrics.clone()),
    )
}

/// The id of a request, in its extensions.
#[derive(Clone, Debug)]
pub struct RequestId(pub String);

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Give every request an id: the caller's `x-request-id` when it is a short token of safe
/// characters (so it cannot forge log lines), otherwise a new UUID. It is echoed in the
/// response header, recorded on the request's log span, and put in problem bodies.
async fn request_id(mut req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        })
        .map(str::to_owned);
    let id = given.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestId(id.clone()));
    let mut res = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(X_REQUEST_ID.clone(), v);
    }
    res
}

/// Headers on every response: no sniffing, no referrer, no framing; API responses are not
/// cached (they carry personal data); over HTTPS, HSTS (two years, subdomains too).
async fn security_headers(State(https): State<bool>, req: Request, next: Next) -> Response {
    let is_api = req.uri().path().starts_with("/api/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        HeaderName::from_static("permissions-policy"),
        HeaderValue::from_static("camera=(self), microphone=(self), display-capture=(self)"),
    );
    if is_api && !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=63072000; includeSubDomains"),
        );
    }
    res
}

/// Turn any error response that is not already a problem document (a 405 from routing, a
/// 503 from the timeout) into one, so that clients can rely on the format.
async fn errors_as_problems(req: Request, next: Next) -> Response {
    let res = next.run(req).await;
    let status = res.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return res;
    }
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if is_problem {
        return res;
    }
    let (code, detail) = match status {
        StatusCode::NOT_FOUND => ("not_found", "no such route"),
        StatusCode::METHOD_NOT_ALLOWED => {
            ("method_not_allowed", "this route does not take that method")
        }
        StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "the request body is too large"),
        StatusCode::SERVICE_UNAVAILABLE => ("timeout", "the request took too long"),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ("unsupported_media_type", "unsupported content type")
        }
        s if s.is_server_error() => ("internal_error", "something went wrong on our side"),
        _ => ("bad_request", "the request could not be processed"),
    };
    let mut out = problem_response(status, code, detail.into(), Vec::new());
    if status == StatusCode::SERVICE_UNAVAILABLE {
        out.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("2"));
    }
    for (name, value) in res.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            out.headers_mut().insert(name.clone(), value.clone());
        }
    }
    out
}

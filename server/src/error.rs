//! The API's error type and its RFC 9457 `application/problem+json` body.
//!
//! Every 4xx and 5xx the API sends is a [`Problem`] with a stable `code` (also in `type` as
//! `urn:alcove:problem:<code>`); `docs/errors.md` lists them. Internal details of a 500 go
//! to the log, inside the request's span, never to the client.

use axum::{
    Json,
    http::{HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{domain::Invalid, store::StoreError};

tokio::task_local! {
    /// The id of the request being served, set by the request-id middleware.
    pub static REQUEST_ID: String;
}

/// The media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// An RFC 9457 problem details body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// `urn:alcove:problem:<code>`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary of the kind of problem.
    pub title: String,
    /// HTTP status code.
    pub status: u16,
    /// What went wrong this time, for people.
    pub detail: String,
    /// Stable machine-readable code (see docs/errors.md).
    pub code: String,
    /// The request id, also in the `x-request-id` header and the server's log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// Per-field validation errors, for `validation_failed`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One invalid field of a request.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    /// The field's name in the request.
    pub field: String,
    pub message: String,
}

/// An error answered to an API client.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub detail: String,
    pub errors: Vec<FieldError>,
    headers: Vec<(HeaderName, HeaderValue)>,
    /// For 5xx: the cause, logged and never sent.
    source: Option<anyhow::Error>,
}

pub type ApiResult<T> = Result<T, ApiError>;

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            errors: Vec::new(),
            headers: Vec::new(),
            source: None,
        }
    }

    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }

    /// 422 with one or more invalid fields.
    pub fn validation(errors: Vec<FieldError>) -> Self {
        let detail = errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; ");
        let mut e = Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "validation_failed",
            detail,
        );
        e.errors = errors;
        e
    }

    pub fn field(field: &str, message: impl Into<String>) -> Self {
        Self::validation(vec![FieldError {
            field: field.into(),
            message: message.into(),
        }])
    }

    /// 401, with the `WWW-Authenticate` challenge RFC 6750 asks for.
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        let challenge = if code == "unauthenticated" {
            r#"Bearer realm="alcove""#.to_owned()
        } else {
            format!(r#"Bearer realm="alcove", error="invalid_token", error_description="{code}""#)
        };
        Self::new(StatusCode::UNAUTHORIZED, code, detail).with_header(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_str(&challenge).expect("ascii challenge"),
        )
    }

    pub fn forbidden(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", detail)
    }

    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }

    pub fn too_many_requests(retry_after_secs: u64) -> Self {
        Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_requests",
            format!("too many attempts; try again in {retry_after_secs} seconds"),
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from(retry_after_secs))
    }

    /// 503 with `Retry-After`: a part the request needs (Redis, when several nodes share
    /// it) does not answer now; `source` is logged.
    pub fn unavailable(source: impl Into<anyhow::Error>) -> Self {
        let mut e = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "temporarily_unavailable",
            "the service cannot do this right now; try again in a moment",
        )
        .with_header(header::RETRY_AFTER, HeaderValue::from_static("2"));
        e.source = Some(source.into());
        e
    }

    /// 500; `source` is logged, the client sees a generic message and the request id.
    pub fn internal(source: impl Into<anyhow::Error>) -> Self {
        let source = source.into();
        // The database failing is not a bug: a clear "unavailable, retry" (503).
        if let Some(fault) = crate::store::fault_in(source.as_ref()) {
            tracing::warn!(error = %source, "the database failed");
            return Self::database(fault);
        }
        let mut e = Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "something went wrong on our side; the request id identifies it in our logs",
        );
        e.source = Some(source);
        e
    }

    /// 503 for the database failing: `database_unavailable` (retry in 2 s) or
    /// `storage_full` (nothing was written; reads still work).
    pub fn database(fault: crate::store::Fault) -> Self {
        match fault {
            crate::store::Fault::Unavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the service cannot reach its database right now; nothing was changed; try again in a moment",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("2")),
            crate::store::Fault::Full => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "the service has run out of storage space; nothing was changed; reading still works, and the operators have been warned",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("60")),
        }
    }

    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }
}

/// The `title` for a status.
fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_owned()
}

/// Build a problem response; used by [`ApiError`] and by the middleware that turns any
/// other error response (405, timeouts) into one.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: String,
    errors: Vec<FieldError>,
) -> Response {
    let body = Problem {
        type_: format!("urn:alcove:problem:{code}"),
        title: title(status),
        status: status.as_u16(),
        detail,
        code: code.to_owned(),
        request_id: REQUEST_ID.try_with(Clone::clone).ok(),
        errors,
    };
    let mut res = (status, Json(body)).into_response();
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    res.extensions_mut()
        .insert(crate::metrics::ProblemCode(code.to_owned()));
    res
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            match &self.source {
                Some(src) => tracing::error!(code = self.code, error = ?src, "request failed"),
                None => tracing::error!(code = self.code, "request failed"),
            }
        } else {
            tracing::debug!(
                code = self.code,
                status = self.status.as_u16(),
                "request refused"
            );
        }
        let mut res = problem_response(self.status, self.code, self.detail, self.errors);
        for (k, v) in self.headers {
            res.headers_mut().insert(k, v);
        }
        res
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiError::not_found("resource"),
            // The constraint's name (and SQLite's raw message) stay in the log: they tell
            // an attacker about the schema and are no use to a client.
            StoreError::Conflict(what) => {
                tracing::debug!(constraint = %what, "write refused by a constraint");
                ApiError::conflict("conflict", "the change conflicts with existing data")
            }
            StoreError::Unavailable(e) => {
                tracing::warn!(error = %e, "the database is unavailable");
                ApiError::database(crate::store::Fault::Unavailable)
            }
            StoreError::Full(e) => {
                tracing::error!(error = %e, "the database's disk is full");
                ApiError::database(crate::store::Fault::Full)
            }
            StoreError::Sqlx(e) => ApiError::internal(e),
        }
    }
}

impl From<crate::auth::password::PasswordError> for ApiError {
    fn from(e: crate::auth::password::PasswordError) -> Self {
        use crate::auth::password::PasswordError;
        match e {
            // Every hashing thread busy and the queue full: a clear "try again", at once.
            PasswordError::Busy => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_busy",
                "the server is busy checking passwords; try again in a moment",
            )
            .with_header(header::RETRY_AFTER, HeaderValue::from_static("1")),
            PasswordError::Failed(_) => ApiError::internal(anyhow::anyhow!("{e}")),
        }
    }
}

impl From<anyhow::Error> for ApiError {
    fn from(e: anyhow::Error) -> Self {
        ApiError::internal(e)
    }
}

/// Collects field errors while parsing a request body, so that one response lists them all.
#[derive(Default)]
pub struct Fields {
    errors: Vec<FieldError>,
}

impl Fields {
    /// Record the error of `result` under `field`, if any, and pass the value on.
    pub fn check<T>(&mut self, field: &str, result: Result<T, Invalid>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.errors.push(FieldError {
                    field: field.to_owned(),
                    message: e.0,
                });
                None
            }
        }
    }

    pub fn push(&mut self, field: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            field: field.to_owned(),
            message: message.into(),
        });
    }

    /// `Ok` when no field failed.
    pub fn finish(self) -> Result<(), ApiError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ApiError::validation(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real constraint failure from SQLite, as the store sees it.
    async fn sqlite_unique_violation() -> StoreError {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        sqlx::query("CREATE TABLE secret_table (secret_column TEXT UNIQUE)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO secret_table VALUES ('x')")
            .execute(&pool)
            .await
            .unwrap();
        let e = sqlx::query("INSERT INTO secret_table VALUES ('x')")
            .execute(&pool)
            .await
            .unwrap_err();
        StoreError::from(e)
    }

    #[tokio::test]
    async fn conflicts_answer_a_stable_code_without_constraint_names_or_database_messages() {
        let real = sqlite_unique_violation().await;
        assert!(
            matches!(&real, StoreError::Conflict(m) if m.contains("secret_table")),
            "the store keeps the detail for the log: {real:?}"
        );
        for e in [real, StoreError::Conflict("users_email_key".into())] {
            let api = ApiError::from(e);
            assert_eq!(api.status, StatusCode::CONFLICT);
            assert_eq!(api.code, "conflict");
            for leak in ["secret", "UNIQUE", "constraint", "users_email_key", "_key"] {
                assert!(
                    !api.detail.contains(leak),
                    "the detail names {leak:?}: {}",
                    api.detail
                );
            }
        }
    }
}

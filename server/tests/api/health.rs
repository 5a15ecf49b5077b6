//! Health, readiness, request ids, problem bodies for every error, OpenAPI, JWKS, web.

use crate::helpers::Api as _;
use crate::helpers::{Backend, spawn_app};
use crate::on_both_backends;
use reqwest::Method;
use serde_json::Value;

on_both_backends!(
    health_and_readiness,
    a_binary_one_version_behind_runs_on_a_database_a_newer_one_migrated
);

/// A rolling upgrade: a newer node migrated the database while this (older) one runs or
/// restarts. It stays ready, and starts.
async fn a_binary_one_version_behind_runs_on_a_database_a_newer_one_migrated(backend: Backend) {
    let db = crate::helpers::TestDb::new(backend).await;
    let url = db.url.clone();
    let dir = db.dir().to_owned();
    let app = crate::helpers::spawn_app_on(db, |_| {}).await;
    let newer: i64 = 209_912_310_001;
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, 'from a newer version', TRUE, $2, 0)";
    match app.store() {
        alcove::store::Db::Sqlite(p) => {
            sqlx::query(sql)
                .bind(newer)
                .bind(vec![0u8; 48])
                .execute(p)
                .await
                .unwrap();
        }
        alcove::store::Db::Postgres(p) => {
            sqlx::query(sql)
                .bind(newer)
                .bind(vec![0u8; 48])
                .execute(p)
                .await
                .unwrap();
        }
    }
    let r = app.get("/readyz", None).await.expect(200);
    assert_eq!(r["applied_migration"], newer);
    // The older binary starts on it (its migrations are there; the newer one is not its).
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alcove"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("DATABASE_URL", &url)
        .env("ALCOVE_DATA_DIR", dir.join("data"))
        .arg("migrate")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn health_and_readiness(backend: Backend) {
    let app = spawn_app(backend).await;
    let h = app.get("/healthz", None).await.expect(200);
    assert_eq!(h["status"], "ok");
    let r = app.get("/readyz", None).await.expect(200);
    assert_eq!(r["database"], "up");
    assert_eq!(r["applied_migration"], r["expected_migration"]);
    // With the database gone, readiness says so (and health does not care).
    app.store().close().await;
    let b = app
        .get("/readyz", None)
        .await
        .expect_problem(503, "not_ready");
    assert!(b["detail"].as_str().unwrap().contains("database down"));
    app.get("/healthz", None).await.expect(200);
}

#[tokio::test]
async fn every_response_has_a_request_id_and_errors_are_problems() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.get("/healthz", None).await;
    let id = r.headers.get("x-request-id").expect("request id header");
    assert_eq!(id.len(), 36, "a UUID");

    // A caller's safe id is kept; an unsafe one is replaced.
    let r = app
        .http
        .get(app.url("/api/v1/me"))
        .header("x-request-id", "trace-abc_123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-request-id"], "trace-abc_123");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["request_id"], "trace-abc_123");
    let r = app
        .http
        .get(app.url("/healthz"))
        .header("x-request-id", "evil\" injected=1")
        .send()
        .await
        .unwrap();
    assert_ne!(r.headers()["x-request-id"], "evil\" injected=1");

    // Unknown API route, wrong method: problem bodies too.
    app.get("/api/v1/nothing-here", None)
        .await
        .expect_problem(404, "not_found");
    let r = app
        .send(Method::DELETE, "/api/v1/auth/login", None, None)
        .await;
    r.expect_problem(405, "method_not_allowed");

    // API responses are not cached and carry the security headers.
    let r = app.get("/api/v1/therapists", None).await;
    assert_eq!(r.headers["cache-control"], "no-store");
    assert_eq!(r.headers["x-content-type-options"], "nosniff");
    assert_eq!(r.headers["referrer-policy"], "no-referrer");
}

#[tokio::test]
async fn openapi_document_covers_every_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let spec = app.get("/api/v1/openapi.json", None).await.expect(200);
    assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
    let paths = spec["paths"].as_object().unwrap();
    for p in [
        "/healthz",
        "/readyz",
        "/.well-known/jwks.json",
        "/api/v1/auth/register",
        "/api/v1/auth/login",
        "/api/v1/auth/refresh",
        "/api/v1/auth/logout",
        "/api/v1/me",
        "/api/v1/me/password",
        "/api/v1/therapists",
        "/api/v1/therapists/{id}",
        "/api/v1/therapists/me",
        "/api/v1/therapists/vocabulary",
        "/api/v1/admin/users",
        "/api/v1/admin/users/{id}/disable",
        "/api/v1/admin/users/{id}/enable",
    ] {
        assert!(
            paths.contains_key(p),
            "{p} is missing from the OpenAPI document"
        );
    }
    assert!(spec["components"]["securitySchemes"]["bearer"].is_object());
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    // Every documented operation exists in the router: none answers "route not found" or
    // 405, and each documents at least one response.
    for (path, item) in paths {
        for (method, op) in item.as_object().unwrap() {
            let m: Method = method.to_uppercase().parse().unwrap();
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path}"
            );
            assert!(op["tags"].is_array(), "{method} {path} has a tag");
            let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
            let body = (m == Method::POST || m == Method::PUT).then(|| serde_json::json!({}));
            let r = app.send(m, &concrete, None, body).await;
            assert_ne!(r.status, 405, "{method} {path}");
            if r.status == 404 {
                assert_ne!(r.json()["detail"], "route not found", "{method} {path}");
            }
        }
    }
}

#[tokio::test]
async fn jwks_publishes_the_signing_key() {
    let app = spawn_app(Backend::Sqlite).await;
    let jwks = app.get("/.well-known/jwks.json", None).await.expect(200);
    let keys = jwks["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["kty"], "OKP");
    assert_eq!(keys[0]["crv"], "Ed25519");
    assert_eq!(keys[0]["alg"], "EdDSA");
    assert_eq!(keys[0]["kid"], app.state.jwt.keys().current_kid());
    assert!(keys[0].get("d").is_none(), "never the private part");
}

#[tokio::test]
async fn the_web_client_is_served_with_a_strict_policy() {
    let app = spawn_app(Backend::Sqlite).await;
    let r = app.get("/", None).await;
    assert_eq!(r.status, 200);
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(r.text.contains("Alcove"));
    let csp = r.headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"));
    app.get("/no-such-file.js", None)
        .await
        .expect_problem(404, "not_found");
    app.get("/../Cargo.toml", None)
        .await
        .expect_problem(404, "not_found");
}

//! Access tokens that must be refused, and who may reach which endpoints.

use crate::helpers::Api as _;
use crate::helpers::{Backend, TestApp, spawn_app};
use crate::on_both_backends;
use alcove::auth::{Jwt, KeySet, tokens::AccessClaims};
use alcove::domain::Role;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

on_both_backends!(
    tokens_that_must_be_refused,
    clients_cannot_reach_therapist_or_admin_endpoints,
);

fn claims(app: &TestApp, sub: Uuid, sid: Uuid, role: Role) -> AccessClaims {
    let now = jiff::Timestamp::now().as_second();
    AccessClaims {
        iss: app.state.jwt.issuer().to_owned(),
        aud: "alcove-api".into(),
        sub,
        sid,
        role,
        typ: "access".into(),
        iat: now,
        nbf: now,
        exp: now + 600,
        jti: Uuid::new_v4(),
    }
}

async fn tokens_that_must_be_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.client("Ann").await;
    // The sign-in's session id, read back from a real token.
    let real: AccessClaims = app
        .state
        .jwt
        .verify(&s.access, "alcove-api")
        .expect("a real token verifies");
    let base = claims(&app, s.id, real.sid, Role::Client);
    let sign = |c: &AccessClaims| app.state.jwt.sign(c).unwrap();

    // A freshly signed control token works, so what follows fails for its stated reason.
    app.get("/api/v1/me", Some(&sign(&base))).await.expect(200);

    let refused = |token: String, why: &'static str| {
        let app = &app;
        async move {
            let b = app
                .get("/api/v1/me", Some(&token))
                .await
                .expect_problem(401, "invalid_token");
            assert!(
                b["detail"].as_str().unwrap().contains(why),
                "expected {why:?} in {}",
                b["detail"]
            );
        }
    };

    // Expired beyond the leeway.
    let mut c = base.clone();
    c.exp = jiff::Timestamp::now().as_second() - 60;
    refused(sign(&c), "expired").await;
    // Not valid yet.
    let mut c = base.clone();
    c.nbf = jiff::Timestamp::now().as_second() + 120;
    refused(sign(&c), "not valid yet").await;
    // Wrong audience (a join token's audience).
    let mut c = base.clone();
    c.aud = "alcove-signal".into();
    refused(sign(&c), "audience").await;
    // Wrong issuer.
    let mut c = base.clone();
    c.iss = "https://evil.example".into();
    refused(sign(&c), "issuer").await;
    // Wrong token type.
    let mut c = base.clone();
    c.typ = "join".into();
    refused(sign(&c), "wrong type").await;

    // Signed by another key with its own kid: unknown key.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Jwt::new(
        Arc::new(KeySet::load_or_create(other_dir.path()).unwrap()),
        app.state.jwt.issuer(),
    );
    refused(other.sign(&base).unwrap(), "unknown key").await;
    // Signed by another key but claiming our kid: bad signature.
    let forged = other.sign(&base).unwrap();
    let mut parts: Vec<String> = forged.split('.').map(str::to_owned).collect();
    let mut header: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[0]).unwrap()).unwrap();
    header["kid"] = json!(app.state.jwt.keys().current_kid());
    parts[0] = URL_SAFE_NO_PAD.encode(header.to_string());
    refused(parts.join("."), "signature").await;
    // Claims changed after signing: bad signature.
    let good = sign(&base);
    let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
    let mut payload: serde_json::Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&parts[1]).unwrap()).unwrap();
    payload["role"] = json!("admin");
    parts[1] = URL_SAFE_NO_PAD.encode(payload.to_string());
    refused(parts.join("."), "signature").await;
    // alg: none, unsigned.
    let none_header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_string(&base).unwrap());
    refused(format!("{none_header}.{payload}."), "algorithm").await;
    // HS256 "signed" with the public key (algorithm confusion).
    let hs_header = URL_SAFE_NO_PAD.encode(format!(
        r#"{{"alg":"HS256","typ":"JWT","kid":"{}"}}"#,
        app.state.jwt.keys().current_kid()
    ));
    refused(format!("{hs_header}.{payload}.c2lnbmF0dXJl"), "algorithm").await;
    // Missing required claims.
    let mut v = serde_json::to_value(&base).unwrap();
    v.as_object_mut().unwrap().remove("nbf");
    refused(app.state.jwt.sign(&v).unwrap(), "nbf").await;
    // Garbage.
    refused("not.a.jwt".into(), "malformed").await;

    // No header, and a header of the wrong scheme.
    app.get("/api/v1/me", None)
        .await
        .expect_problem(401, "unauthenticated");
    let r = app
        .http
        .get(app.url("/api/v1/me"))
        .header("authorization", format!("Basic {}", s.access))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
}

async fn clients_cannot_reach_therapist_or_admin_endpoints(backend: Backend) {
    let app = spawn_app(backend).await;
    let client = app.client("Ben").await;
    let therapist = app.user_with_role("Dr Cole", Role::Therapist).await;
    let admin = app.user_with_role("Root", Role::Admin).await;

    let profile = json!({"display_name": "Dr Cole", "time_zone": "Europe/London"});
    let new_user = json!({"email": "t@example.com", "display_name": "T", "role": "therapist", "password": "a calm and quiet room"});

    // A client: 403 on therapist and admin endpoints.
    app.put("/api/v1/therapists/me", client.token(), profile.clone())
        .await
        .expect_problem(403, "forbidden");
    app.get("/api/v1/therapists/me", client.token())
        .await
        .expect_problem(403, "forbidden");
    app.post("/api/v1/admin/users", client.token(), new_user.clone())
        .await
        .expect_problem(403, "forbidden");
    app.get("/api/v1/admin/users", client.token())
        .await
        .expect_problem(403, "forbidden");
    app.post(
        &format!("/api/v1/admin/users/{}/disable", therapist.id),
        client.token(),
        json!({}),
    )
    .await
    .expect_problem(403, "forbidden");

    // A therapist: their own profile yes, admin no.
    app.put("/api/v1/therapists/me", therapist.token(), profile.clone())
        .await
        .expect(200);
    app.get("/api/v1/admin/users", therapist.token())
        .await
        .expect_problem(403, "forbidden");
    app.post("/api/v1/admin/users", therapist.token(), new_user.clone())
        .await
        .expect_problem(403, "forbidden");

    // Anonymous: 401.
    app.get("/api/v1/admin/users", None)
        .await
        .expect_problem(401, "unauthenticated");
    app.put("/api/v1/therapists/me", None, profile)
        .await
        .expect_problem(401, "unauthenticated");

    // An admin: yes.
    app.get("/api/v1/admin/users", admin.token())
        .await
        .expect(200);
    app.post("/api/v1/admin/users", admin.token(), new_user)
        .await
        .expect(201);
    // And the role in a token is not trusted over the database: a client's token re-signed
    // with role admin still gets 403.
    let mut c: AccessClaims = app.state.jwt.verify(&client.access, "alcove-api").unwrap();
    c.role = Role::Admin;
    let elevated = app.state.jwt.sign(&c).unwrap();
    app.get("/api/v1/admin/users", Some(&elevated))
        .await
        .expect_problem(403, "forbidden");
}

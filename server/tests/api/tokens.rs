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
    tokens_of_one_kind_never_stand_in_for_another,
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
    // HS256/384/512 really signed with our public key as the HMAC secret (algorithm
    // confusion), in each form a confused verifier might use: the raw 32 bytes, the `x` of
    // the JWKS, the JWKS entry as JSON, and the public key as PEM.
    let kid = app.state.jwt.keys().current_kid().to_owned();
    let jwk = app.state.jwt.keys().jwks()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap()
        .clone();
    let x = jwk["x"].as_str().unwrap().to_owned();
    let raw: [u8; 32] = URL_SAFE_NO_PAD.decode(&x).unwrap().try_into().unwrap();
    let pem = {
        use ed25519_dalek::pkcs8::{EncodePublicKey as _, spki::der::pem::LineEnding};
        ed25519_dalek::VerifyingKey::from_bytes(&raw)
            .unwrap()
            .to_public_key_pem(LineEnding::LF)
            .unwrap()
    };
    let jwk_text = jwk.to_string();
    let secrets: [&[u8]; 4] = [&raw, x.as_bytes(), jwk_text.as_bytes(), pem.as_bytes()];
    for alg in ["HS256", "HS384", "HS512"] {
        for secret in secrets {
            refused(hmac_token(alg, &kid, &base, secret), "algorithm").await;
        }
    }
    // Other algorithms under our kid: RS256, ES256, PS256 with junk signatures.
    for alg in ["RS256", "ES256", "PS256", "EdDSA256", "NONE", "None"] {
        let h = URL_SAFE_NO_PAD.encode(json!({"alg": alg, "kid": kid}).to_string());
        refused(format!("{h}.{payload}.c2lnbmF0dXJl"), "algorithm").await;
    }

    // A kid that is not one of ours, whatever it tries to make a key loader do: a path, SQL,
    // a URL, an empty string, a very long one. Each is signed by an attacker's key.
    let attacker_pem = KeySet::generate_pem().unwrap();
    let attacker = KeySet::from_pems(&attacker_pem).unwrap();
    let attacker_jwk = attacker.jwks()["keys"][0].clone();
    let long = "k".repeat(10_000);
    for bad_kid in [
        "../../dev/null",
        "/dev/null",
        "../../../../../../etc/passwd",
        "' OR 1=1--",
        "\" OR \"\"=\"",
        "http://127.0.0.1:9/key.pem",
        "",
        long.as_str(),
    ] {
        let mut h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
        h.kid = Some(bad_kid.to_owned());
        refused(signed_by(&attacker_pem, h, &base), "unknown key").await;
    }
    // The attacker's key offered in the header (`jwk`), by URL (`jku`, `x5u`) or as a
    // certificate chain (`x5c`): never fetched or trusted. With the attacker's own kid it is
    // an unknown key; claiming our kid, the signature does not verify with our key.
    let offered: serde_json::Value = serde_json::from_value(attacker_jwk.clone()).unwrap();
    for (our_kid, why) in [(false, "unknown key"), (true, "signature")] {
        let kid_used = if our_kid {
            kid.clone()
        } else {
            attacker.current_kid().to_owned()
        };
        for header in [
            json!({"alg": "EdDSA", "kid": kid_used, "jwk": offered}),
            json!({"alg": "EdDSA", "kid": kid_used, "jku": "http://127.0.0.1:9/jwks.json"}),
            json!({"alg": "EdDSA", "kid": kid_used, "x5u": "http://127.0.0.1:9/cert.pem"}),
            json!({"alg": "EdDSA", "kid": kid_used, "x5c": ["MIIB"]}),
        ] {
            let h: jsonwebtoken::Header = serde_json::from_value(header).unwrap();
            refused(signed_by(&attacker_pem, h, &base), why).await;
        }
    }
    // No kid at all.
    let h = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA);
    refused(signed_by(&attacker_pem, h, &base), "unknown key").await;
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

/// `claims` under `header`, HMAC-signed with `secret` (`alg` HS256, HS384 or HS512).
fn hmac_token(alg: &str, kid: &str, claims: &AccessClaims, secret: &[u8]) -> String {
    use hmac::{Hmac, KeyInit as _, Mac as _};
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(json!({"alg": alg, "typ": "JWT", "kid": kid}).to_string()),
        URL_SAFE_NO_PAD.encode(serde_json::to_string(claims).unwrap())
    );
    macro_rules! sign {
        ($h:ty) => {{
            let mut m = Hmac::<$h>::new_from_slice(secret).unwrap();
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }};
    }
    let sig = match alg {
        "HS256" => sign!(sha2::Sha256),
        "HS384" => sign!(sha2::Sha384),
        _ => sign!(sha2::Sha512),
    };
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// `claims` under `header` exactly as given, signed with an attacker's Ed25519 key (`pem`).
fn signed_by(pem: &str, header: jsonwebtoken::Header, claims: &AccessClaims) -> String {
    let key = jsonwebtoken::EncodingKey::from_ed_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// Access, refresh and join tokens each work only where they belong: each kind is tried
/// in the place of every other, over HTTP and at the signalling `hello`.
async fn tokens_of_one_kind_never_stand_in_for_another(backend: Backend) {
    let app = crate::signaling::signalling_app(backend, |_| {}).await;
    let (t, c, id) = crate::signaling::pair(&app).await;
    let join = crate::peers::join_token(&app, &c, id).await;
    let join_tok = join["token"].as_str().unwrap().to_owned();
    let ws = join["signaling_url"].as_str().unwrap().to_owned();

    // As an access token: a refresh token, a join token.
    for (token, why) in [(&c.refresh, "malformed"), (&join_tok, "audience")] {
        let b = app
            .get("/api/v1/me", Some(token))
            .await
            .expect_problem(401, "invalid_token");
        assert!(b["detail"].as_str().unwrap().contains(why), "{b}");
    }
    // As a refresh token: an access token, a join token.
    for token in [&c.access, &join_tok] {
        app.post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": token}),
        )
        .await
        .expect_problem(401, "invalid_refresh_token");
    }
    // As a join token at `hello`: an access token and a refresh token, the therapist's too.
    for token in [&c.access, &c.refresh, &t.access] {
        let mut s = crate::peers::send_hello(&ws, token, None, false).await;
        let code = s
            .wait_for(std::time::Duration::from_secs(5), |m| match m {
                alcove_signaling::ServerMessage::Error { code, .. } => Some(*code),
                _ => None,
            })
            .await
            .expect("an error answers the hello");
        assert_eq!(code, alcove_signaling::ErrorCode::InvalidToken);
    }
    // And every token still works where it belongs.
    app.get("/api/v1/me", c.token()).await.expect(200);
    let (_s, welcome) = crate::peers::hello(&ws, &join_tok, None, false).await;
    assert!(
        matches!(welcome, alcove_signaling::ServerMessage::Welcome { .. }),
        "{welcome:?}"
    );
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": c.refresh}),
    )
    .await
    .expect(200);
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

//! Registration, sign-in, refresh rotation and sign-out.

use crate::helpers::Api as _;
use crate::helpers::{Backend, PASSWORD, spawn_app, spawn_app_with};
use crate::on_both_backends;
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

on_both_backends!(
    register_login_me_refresh_logout_journey,
    a_refresh_token_used_twice_revokes_its_family,
    concurrent_uses_of_one_refresh_token_leave_one_winner,
    email_is_unique_whatever_its_case,
    bad_registration_input_is_refused_and_nothing_is_written,
    wrong_password_and_unknown_email_get_the_same_answer,
    repeated_failures_are_throttled,
    parallel_guesses_cannot_slip_past_the_throttle,
    changing_the_password_ends_other_sign_ins,
    disabled_accounts_cannot_sign_in_and_their_tokens_stop,
    an_idle_sign_in_is_ended_by_the_server_at_refresh_and_for_access_tokens,
    signing_out_everywhere_or_a_new_password_revokes_the_feed_and_join_tokens,
    two_hundred_parallel_sign_ins_with_random_emails_leave_the_server_responsive_and_its_memory_bounded,
    sign_ins_and_registrations_are_limited_per_address_which_a_forged_header_cannot_change,
    a_flood_at_one_account_does_not_stop_its_owner_signing_in_from_elsewhere,
    a_failed_sign_in_keeps_no_trace_of_an_unknown_email,
    registering_a_taken_email_answers_like_a_new_one,
);

/// Registration does not tell anyone which addresses have accounts: a taken email gets the
/// same status, headers and body as a new one, after the same work (the password is hashed
/// either way: medians compared as a ratio in one run), and the existing account is left
/// as it was; the attempt is audited on it, with no address or password.
async fn registering_a_taken_email_answers_like_a_new_one(backend: Backend) {
    let app = spawn_app(backend).await;
    let owner = app.client("Olive").await;
    let attempt = |email: String| {
        let app = &app;
        async move {
            let t = Instant::now();
            let r = app
                .post(
                    "/api/v1/auth/register",
                    None,
                    json!({"email": email, "password": "an attacker's passphrase", "display_name": "Probe"}),
                )
                .await;
            (r, t.elapsed())
        }
    };
    let (taken, _) = attempt(owner.email.clone()).await;
    let (new, _) = attempt(format!("new-{}@example.com", Uuid::new_v4().simple())).await;
    assert_eq!(taken.status, new.status);
    assert_eq!(taken.status, 202);
    assert_eq!(taken.text, new.text, "the same body");
    let names = |r: &crate::helpers::Resp| {
        let mut v: Vec<String> = r
            .headers
            .keys()
            .map(|k| k.as_str().to_owned())
            .filter(|k| k != "x-request-id" && k != "date")
            .collect();
        v.sort();
        v
    };
    assert_eq!(names(&taken), names(&new), "the same headers");
    assert_eq!(
        taken.headers.get("content-length"),
        new.headers.get("content-length")
    );

    // Timing: both hash the password and write once. Medians of interleaved attempts.
    let mut taken_t = Vec::new();
    let mut new_t = Vec::new();
    for _ in 0..7 {
        taken_t.push(attempt(owner.email.clone()).await.1);
        new_t.push(
            attempt(format!("new-{}@example.com", Uuid::new_v4().simple()))
                .await
                .1,
        );
    }
    taken_t.sort();
    new_t.sort();
    let ratio = taken_t[3].as_secs_f64() / new_t[3].as_secs_f64();
    assert!(
        (0.5..2.0).contains(&ratio),
        "taken/new median time ratio {ratio:.2} ({:?} vs {:?})",
        taken_t[3],
        new_t[3]
    );

    // The owner's account is unchanged: their password works, the attacker's does not.
    app.login(&owner.email).await;
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": owner.email, "password": "an attacker's passphrase"}),
    )
    .await
    .expect_problem(401, "invalid_credentials");
    // The attempts are on the account's audit trail, without the address or password.
    let dump = crate::records::dump_all(app.store()).await;
    assert!(dump.contains("account.registration_attempt"));
    assert!(!dump.contains("attacker"));
    assert!(!dump.contains("127.0.0.1"));
}

async fn register_login_me_refresh_logout_journey(backend: Backend) {
    let app = spawn_app(backend).await;
    let reg = app
        .post(
            "/api/v1/auth/register",
            None,
            json!({"email": "Ada@Example.com", "password": PASSWORD, "display_name": "Ada"}),
        )
        .await
        .expect(202);
    assert_eq!(reg["status"], "accepted");
    assert!(reg.get("id").is_none() && reg.get("email").is_none());

    let login = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ada@example.com", "password": PASSWORD}),
        )
        .await
        .expect(200);
    assert_eq!(login["token_type"], "Bearer");
    assert_eq!(login["expires_in"], 900, "15 minutes by default");
    assert_eq!(login["user"]["email"], "ada@example.com");
    assert_eq!(login["user"]["role"], "client");
    assert!(login["user"].get("password_hash").is_none());
    let id = login["user"]["id"].clone();
    let access = login["access_token"].as_str().unwrap();
    let refresh = login["refresh_token"].as_str().unwrap();

    let me = app.get("/api/v1/me", Some(access)).await.expect(200);
    assert_eq!(
        me,
        json!({"id": id, "email": "ada@example.com", "display_name": "Ada", "role": "client"})
    );

    let rotated = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": refresh}),
        )
        .await
        .expect(200);
    let access2 = rotated["access_token"].as_str().unwrap();
    let refresh2 = rotated["refresh_token"].as_str().unwrap();
    assert_ne!(refresh2, refresh, "refresh tokens rotate");
    app.get("/api/v1/me", Some(access2)).await.expect(200);

    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .expect(204);
    // Signing out ends the access tokens of that sign-in too, and its refresh token.
    app.get("/api/v1/me", Some(access2))
        .await
        .expect_problem(401, "invalid_token");
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
    // Signing out twice is fine.
    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": refresh2}),
    )
    .await
    .expect(204);
    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": "alcrt_unknown"}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
}

async fn a_refresh_token_used_twice_revokes_its_family(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.client("Bea").await;
    // A second, independent sign-in of the same account must survive.
    let other = app.login(&s.email).await;

    let r1 = app
        .post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": s.refresh}),
        )
        .await
        .expect(200);
    let new_access = r1["access_token"].as_str().unwrap().to_owned();
    let new_refresh = r1["refresh_token"].as_str().unwrap().to_owned();

    // The first token again: theft is assumed, the whole family is revoked.
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": s.refresh}),
    )
    .await
    .expect_problem(401, "refresh_token_reused");
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": new_refresh}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
    app.get("/api/v1/me", Some(&new_access))
        .await
        .expect_problem(401, "invalid_token");
    app.get("/api/v1/me", Some(&s.access))
        .await
        .expect_problem(401, "invalid_token");

    // The other sign-in is untouched.
    app.get("/api/v1/me", Some(&other.access)).await.expect(200);
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": other.refresh}),
    )
    .await
    .expect(200);
}

async fn concurrent_uses_of_one_refresh_token_leave_one_winner(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.client("Cy").await;
    let attempts = (0..8).map(|_| {
        app.post(
            "/api/v1/auth/refresh",
            None,
            json!({"refresh_token": s.refresh}),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 1, "exactly one concurrent use wins, got {ok}");
    for r in results.iter().filter(|r| r.status != 200) {
        r.expect(401);
    }
    // The winner's family is now revoked, because the token was used more than once.
    for r in results.iter().filter(|r| r.status == 200) {
        let t = r.json()["refresh_token"].as_str().unwrap().to_owned();
        app.post("/api/v1/auth/refresh", None, json!({"refresh_token": t}))
            .await
            .expect(401);
    }
}

async fn email_is_unique_whatever_its_case(backend: Backend) {
    let app = spawn_app(backend).await;
    let body = |email: &str| json!({"email": email, "password": PASSWORD, "display_name": "Dee"});
    app.post("/api/v1/auth/register", None, body("dee@example.com"))
        .await
        .expect(202);
    // The same answer for the taken address (registration tells no one who has an
    // account), and no second account: one sign-in works, with the first password.
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"email": "DEE@Example.COM", "password": "another long passphrase", "display_name": "Mallory"}),
    )
    .await
    .expect(202);
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": "dee@example.com", "password": "another long passphrase"}),
    )
    .await
    .expect_problem(401, "invalid_credentials");
    // Sign-in is case-insensitive too.
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": "Dee@EXAMPLE.com", "password": PASSWORD}),
    )
    .await
    .expect(200);
}

async fn bad_registration_input_is_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let reg = "/api/v1/auth/register";

    // Malformed JSON: 400.
    app.post_raw(reg, "application/json", "{\"email\": ")
        .await
        .expect_problem(400, "malformed_json");
    // Not JSON at all: 415.
    app.post_raw(reg, "text/plain", "email=a")
        .await
        .expect_problem(415, "unsupported_media_type");
    // Wrong types: 422.
    app.post(
        reg,
        None,
        json!({"email": 5, "password": PASSWORD, "display_name": "E"}),
    )
    .await
    .expect_problem(422, "invalid_body");
    // Missing field: 422.
    app.post(
        reg,
        None,
        json!({"email": "e@example.com", "password": PASSWORD}),
    )
    .await
    .expect_problem(422, "invalid_body");
    // Unknown field (a client trying to choose its role): 422.
    app.post(
        reg,
        None,
        json!({"email": "e@example.com", "password": PASSWORD, "display_name": "E", "role": "admin"}),
    )
    .await
    .expect_problem(422, "invalid_body");
    // Invalid email, over-long name, weak password: one 422 naming each field.
    let b = app
        .post(
            reg,
            None,
            json!({"email": "not-an-email", "password": "short", "display_name": "x".repeat(101)}),
        )
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["email", "display_name", "password"]);
    // The weak-password message states the rule.
    let b = app
        .post(
            reg,
            None,
            json!({"email": "e@example.com", "password": "password123", "display_name": "E"}),
        )
        .await
        .expect_problem(422, "validation_failed");
    assert!(
        b["detail"]
            .as_str()
            .unwrap()
            .contains("10 to 128 characters")
    );
    // Over-long email.
    app.post(
        reg,
        None,
        json!({"email": format!("{}@example.com", "e".repeat(300)), "password": PASSWORD, "display_name": "E"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    // Over-large body: 413.
    let huge = format!(
        r#"{{"email":"e@example.com","password":"{}","display_name":"E"}}"#,
        "p".repeat(100 * 1024)
    );
    app.post_raw(reg, "application/json", huge)
        .await
        .expect_problem(413, "payload_too_large");

    // None of it created an account.
    let (_, total) = app.store().list_users(None, 10, 0).await.unwrap();
    assert_eq!(total, 0);
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": "e@example.com", "password": PASSWORD}),
    )
    .await
    .expect_problem(401, "invalid_credentials");
}

async fn wrong_password_and_unknown_email_get_the_same_answer(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.client("Eve").await;
    let attempt = |email: String| {
        let app = &app;
        async move {
            let t = Instant::now();
            let r = app
                .post(
                    "/api/v1/auth/login",
                    None,
                    json!({"email": email, "password": "not the password at all"}),
                )
                .await;
            (r, t.elapsed())
        }
    };
    let (wrong, _) = attempt(s.email.clone()).await;
    let (unknown, _) = attempt("nobody@example.com".into()).await;
    let a = wrong.expect_problem(401, "invalid_credentials");
    let b = unknown.expect_problem(401, "invalid_credentials");
    assert_eq!(a["detail"], b["detail"]);
    assert_eq!(
        wrong.headers.get("www-authenticate"),
        unknown.headers.get("www-authenticate")
    );

    // Timing: both run one Argon2 verification. Compare medians as a ratio in one run
    // (a missing dummy hash would make the unknown case ~30x faster).
    let mut wrong_t = Vec::new();
    let mut unknown_t = Vec::new();
    for i in 0..5 {
        wrong_t.push(attempt(s.email.clone()).await.1);
        unknown_t.push(attempt(format!("nobody{i}@example.com")).await.1);
    }
    wrong_t.sort();
    unknown_t.sort();
    let ratio = unknown_t[2].as_secs_f64() / wrong_t[2].as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "unknown/wrong median time ratio {ratio:.2} ({:?} vs {:?})",
        unknown_t[2],
        wrong_t[2]
    );
}

async fn repeated_failures_are_throttled(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.login_max_failures = 3;
        c.login_window = Duration::from_secs(600);
    })
    .await;
    let s = app.client("Fay").await;
    for _ in 0..3 {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": s.email, "password": "wrong wrong wrong"}),
        )
        .await
        .expect_problem(401, "invalid_credentials");
    }
    // Now even the right password waits: the limit is per address.
    let r = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": s.email, "password": PASSWORD}),
        )
        .await;
    r.expect_problem(429, "too_many_requests");
    assert!(r.headers.get("retry-after").is_some());
    // Unknown addresses are limited the same way (no hint that they do not exist).
    for _ in 0..3 {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": "ghost@example.com", "password": "wrong wrong wrong"}),
        )
        .await
        .expect(401);
    }
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": "ghost@example.com", "password": "wrong wrong wrong"}),
    )
    .await
    .expect_problem(429, "too_many_requests");
}

async fn changing_the_password_ends_other_sign_ins(backend: Backend) {
    let app = spawn_app(backend).await;
    let s = app.client("Gus").await;
    let other = app.login(&s.email).await;
    app.post(
        "/api/v1/me/password",
        s.token(),
        json!({"current_password": "not it at all", "new_password": "a brand new phrase"}),
    )
    .await
    .expect_problem(403, "wrong_password");
    app.post(
        "/api/v1/me/password",
        s.token(),
        json!({"current_password": PASSWORD, "new_password": "short"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        "/api/v1/me/password",
        s.token(),
        json!({"current_password": PASSWORD, "new_password": "a brand new phrase"}),
    )
    .await
    .expect(200);
    app.get("/api/v1/me", s.token()).await.expect(200);
    app.get("/api/v1/me", other.token())
        .await
        .expect_problem(401, "invalid_token");
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": s.email, "password": "a brand new phrase"}),
    )
    .await
    .expect(200);
}

async fn disabled_accounts_cannot_sign_in_and_their_tokens_stop(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app
        .user_with_role("Root", alcove::domain::Role::Admin)
        .await;
    let s = app.client("Hal").await;
    app.post(
        &format!("/api/v1/admin/users/{}/disable", s.id),
        admin.token(),
        json!({}),
    )
    .await
    .expect(200);
    app.get("/api/v1/me", s.token())
        .await
        .expect_problem(401, "invalid_token");
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": s.refresh}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
    app.post(
        "/api/v1/auth/login",
        None,
        json!({"email": s.email, "password": PASSWORD}),
    )
    .await
    .expect_problem(403, "account_disabled");
    app.post(
        &format!("/api/v1/admin/users/{}/enable", s.id),
        admin.token(),
        json!({}),
    )
    .await
    .expect(200);
    app.login(&s.email).await;
}

#[tokio::test]
async fn registration_can_be_switched_off() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.allow_registration = false).await;
    app.post(
        "/api/v1/auth/register",
        None,
        json!({"email": "i@example.com", "password": PASSWORD, "display_name": "Ivy"}),
    )
    .await
    .expect_problem(403, "registration_closed");
}

async fn parallel_guesses_cannot_slip_past_the_throttle(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.login_max_failures = 3;
        c.login_window = Duration::from_secs(600);
    })
    .await;
    let s = app.client("Pat").await;
    let guesses = (0..20).map(|i| {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": s.email, "password": format!("guess number {i}")}),
        )
    });
    let results = futures_util::future::join_all(guesses).await;
    let checked = results.iter().filter(|r| r.status == 401).count();
    let refused = results.iter().filter(|r| r.status == 429).count();
    assert_eq!(checked + refused, 20);
    assert!(
        (1..=3).contains(&checked),
        "{checked} guesses were checked; the limit is 3"
    );
}

/// A calendar feed for `who`, as a path; it answers 200.
async fn feed_path(app: &crate::helpers::TestApp, who: &crate::helpers::Session) -> String {
    let url = app
        .post("/api/v1/me/calendar-feed", who.token(), json!({}))
        .await
        .expect(201)["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = url.trim_start_matches(&app.base).to_owned();
    let r = app.get(&path, None).await;
    assert_eq!(r.status, 200, "the feed answers: {}", r.text);
    path
}

async fn an_idle_sign_in_is_ended_by_the_server_at_refresh_and_for_access_tokens(backend: Backend) {
    // Access tokens live a minute, far longer than the 5 s idle limit.
    let app = spawn_app_with(backend, |c| {
        c.idle_sign_out = Duration::from_secs(5);
        c.access_token_ttl = Duration::from_secs(60);
    })
    .await;
    let who = app.client("Idle").await;
    let active = app.login(&who.email).await;
    let idle = app.login(&who.email).await;
    // One sign-in is used every second for 7 s; the other sits unused.
    for _ in 0..7 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        app.get("/api/v1/me", active.token()).await.expect(200);
    }
    // The unused one is over, though its access token has not expired: for requests ...
    app.get("/api/v1/me", idle.token())
        .await
        .expect_problem(401, "sign_in_idle");
    // ... and at refresh, which ends the sign-in for good.
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": idle.refresh}),
    )
    .await
    .expect_problem(401, "sign_in_idle");
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": idle.refresh}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
    // The busy one lives on, and refreshes.
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": active.refresh}),
    )
    .await
    .expect(200);
    let reason: String = match app.store() {
        alcove::store::Db::Sqlite(p) => sqlx::query_scalar(
            "SELECT revoked_reason FROM auth_sessions WHERE revoked_at IS NOT NULL",
        )
        .fetch_one(p)
        .await
        .unwrap(),
        alcove::store::Db::Postgres(p) => sqlx::query_scalar(
            "SELECT revoked_reason FROM auth_sessions WHERE revoked_at IS NOT NULL",
        )
        .fetch_one(p)
        .await
        .unwrap(),
    };
    assert_eq!(reason, "idle");
}

async fn signing_out_everywhere_or_a_new_password_revokes_the_feed_and_join_tokens(
    backend: Backend,
) {
    use crate::peers::{join_token, send_hello};
    use alcove_signaling::{ErrorCode, ServerMessage};
    let app = spawn_app(backend).await;
    let t = app
        .user_with_role("Dr Revoke", alcove::domain::Role::Therapist)
        .await;
    let c = app.client("Rene").await;
    let id = crate::signaling::live_appointment(&app, &t, &[&c]).await;
    let ws_url = format!("{}/api/v1/signal", app.base.replace("http://", "ws://"));
    let refused = |token: String| {
        let j_url = ws_url.clone();
        async move {
            let mut s = send_hello(&j_url, &token, None, false).await;
            let got = s
                .wait_for(Duration::from_secs(5), |m| match m {
                    ServerMessage::Error { code, message } => Some((*code, message.clone())),
                    ServerMessage::Welcome { .. } => Some((ErrorCode::Internal, "welcomed".into())),
                    _ => None,
                })
                .await
                .unwrap();
            assert_eq!(got.0, ErrorCode::InvalidToken, "{}", got.1);
            assert!(got.1.contains("sign-in"), "{}", got.1);
        }
    };

    // A join token dies with the sign-in that asked for it.
    let j = join_token(&app, &c, id).await;
    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": c.refresh}),
    )
    .await
    .expect(204);
    refused(j["token"].as_str().unwrap().to_owned()).await;

    // A new password revokes the feed URL, and says so.
    let a = app.login(&c.email).await;
    let b = app.login(&c.email).await;
    let feed = feed_path(&app, &a).await;
    let jb = join_token(&app, &b, id).await;
    let r = app
        .post(
            "/api/v1/me/password",
            a.token(),
            json!({"current_password": PASSWORD, "new_password": "a brand new phrase"}),
        )
        .await
        .expect(200);
    assert_eq!(r["calendar_feed_revoked"], true);
    assert_eq!(r["sign_ins_ended"], 1);
    app.get(&feed, None).await.expect_problem(404, "not_found");
    refused(jb["token"].as_str().unwrap().to_owned()).await;

    // Sign out everywhere: every sign-in, their join tokens, and the feed.
    let d = app
        .post(
            "/api/v1/auth/login",
            None,
            json!({"email": c.email, "password": "a brand new phrase"}),
        )
        .await
        .expect(200);
    let d_access = d["access_token"].as_str().unwrap().to_owned();
    let d_refresh = d["refresh_token"].as_str().unwrap().to_owned();
    let feed = {
        let url = app
            .post("/api/v1/me/calendar-feed", Some(&d_access), json!({}))
            .await
            .expect(201)["url"]
            .as_str()
            .unwrap()
            .to_owned();
        url.trim_start_matches(&app.base).to_owned()
    };
    assert_eq!(app.get(&feed, None).await.status, 200);
    let ja = join_token(&app, &a, id).await;
    let r = app
        .post("/api/v1/me/sign-out-everywhere", a.token(), json!({}))
        .await
        .expect(200);
    assert_eq!(r["sign_ins_ended"], 2, "{r}");
    assert_eq!(r["calendar_feed_revoked"], true);
    app.get(&feed, None).await.expect_problem(404, "not_found");
    for access in [a.access.as_str(), d_access.as_str()] {
        app.get("/api/v1/me", Some(access))
            .await
            .expect_problem(401, "invalid_token");
    }
    app.post(
        "/api/v1/auth/refresh",
        None,
        json!({"refresh_token": d_refresh}),
    )
    .await
    .expect_problem(401, "invalid_refresh_token");
    refused(ja["token"].as_str().unwrap().to_owned()).await;
}

/// POST a JSON body as if from `ip` (by way of a trusted proxy at 127.0.0.1).
async fn post_from(
    app: &crate::helpers::TestApp,
    path: &str,
    ip: &str,
    body: serde_json::Value,
) -> crate::helpers::Resp {
    let res = app
        .http
        .post(app.url(path))
        .header("x-forwarded-for", ip)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    crate::helpers::Resp {
        status: res.status(),
        headers: res.headers().clone(),
        text: res.text().await.expect("body read"),
    }
}

/// A field of /proc/self/status, in KiB.
fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"))
}

/// The bound the sign-in flood must stay under: the growth of resident memory, peak included.
/// Two hashing threads need 2 x 19 MiB, reserved before the flood; the rest is 200
/// requests' buffers on both sides (the test's client runs in this process too).
const FLOOD_MEMORY_BOUND_MIB: u64 = 64;

async fn two_hundred_parallel_sign_ins_with_random_emails_leave_the_server_responsive_and_its_memory_bounded(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |c| c.hash_workers = 2).await;
    let attempt = |i: usize| {
        let app = &app;
        async move {
            app.post(
                "/api/v1/auth/login",
                None,
                json!({"email": format!("random{i}-{}@example.com", uuid::Uuid::new_v4().simple()), "password": "guess guess guess"}),
            )
            .await
        }
    };
    // Both hashing threads have done their first hash (and hold their memory).
    let warm: Vec<_> = (0..4).map(attempt).collect();
    futures_util::future::join_all(warm).await;
    // Peak resident memory from here (writing 5 resets VmHWM to the current size).
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    let before = proc_status_kib("VmRSS:");

    let done = std::sync::atomic::AtomicBool::new(false);
    let health = async {
        let mut worst = Duration::ZERO;
        let mut n = 0;
        while !done.load(std::sync::atomic::Ordering::Relaxed) {
            let t = Instant::now();
            app.get("/healthz", None).await.expect(200);
            worst = worst.max(t.elapsed());
            n += 1;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        (worst, n)
    };
    let flood = async {
        let started = Instant::now();
        let all: Vec<_> = (0..200).map(attempt).collect();
        let results = futures_util::future::join_all(all).await;
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (results, started.elapsed())
    };
    let ((results, took), (worst_health, polls)) = tokio::join!(flood, health);

    let peak = proc_status_kib("VmHWM:");
    let grew_mib = peak.saturating_sub(before) / 1024;
    let (mut refused, mut busy) = (0, 0);
    for r in &results {
        match r.status.as_u16() {
            401 => {
                r.expect_problem(401, "invalid_credentials");
                refused += 1;
            }
            // Hashing saturated; or, on a machine loaded by other tests, the database pool's
            // wait ran out first: both a clear answer to come back, at once.
            503 if r.json()["code"] == "database_unavailable" => {
                r.expect_problem(503, "database_unavailable");
                assert_eq!(r.headers["retry-after"], "2");
                busy += 1;
            }
            503 => {
                r.expect_problem(503, "server_busy");
                assert_eq!(r.headers["retry-after"], "1");
                busy += 1;
            }
            other => panic!("unexpected {other}: {}", r.text),
        }
    }
    eprintln!(
        "200 sign-ins in {took:?}: {refused} checked and refused, {busy} answered busy; \
         /healthz worst {worst_health:?} over {polls} polls; resident memory +{grew_mib} MiB at peak"
    );
    assert_eq!(refused + busy, 200);
    assert!(refused >= 2, "the hashing threads worked");
    assert!(
        busy > 0,
        "a full queue answers at once instead of piling up"
    );
    assert!(
        grew_mib < FLOOD_MEMORY_BOUND_MIB,
        "resident memory grew {grew_mib} MiB (bound {FLOOD_MEMORY_BOUND_MIB} MiB)"
    );
    assert!(
        worst_health < Duration::from_secs(1),
        "/healthz took {worst_health:?} during the flood"
    );
}

async fn sign_ins_and_registrations_are_limited_per_address_which_a_forged_header_cannot_change(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.login_address_max = 5;
        c.register_address_max = 2;
    })
    .await;
    let register = |ip: &'static str| {
        let app = &app;
        async move {
            post_from(
                app,
                "/api/v1/auth/register",
                ip,
                json!({"email": format!("r-{}@example.com", uuid::Uuid::new_v4().simple()), "password": PASSWORD, "display_name": "Reg"}),
            )
            .await
        }
    };
    register("192.0.2.1").await.expect(202);
    register("192.0.2.1").await.expect(202);
    let r = register("192.0.2.1").await;
    r.expect_problem(429, "too_many_requests");
    assert!(r.headers.get("retry-after").is_some());
    register("192.0.2.2").await.expect(202);
    // Sign-ins: five attempts from one address, whatever the emails; then 429.
    for i in 0..5 {
        post_from(
            &app,
            "/api/v1/auth/login",
            "198.51.100.3",
            json!({"email": format!("x{i}@example.com"), "password": "wrong wrong wrong"}),
        )
        .await
        .expect_problem(401, "invalid_credentials");
    }
    post_from(
        &app,
        "/api/v1/auth/login",
        "198.51.100.3",
        json!({"email": "x9@example.com", "password": "wrong wrong wrong"}),
    )
    .await
    .expect_problem(429, "too_many_requests");

    // Without a trusted proxy the header is the client's own invention: ignored.
    let direct = spawn_app_with(backend, |c| c.register_address_max = 2).await;
    for (i, ip) in ["192.0.2.7", "192.0.2.8", "192.0.2.9"]
        .into_iter()
        .enumerate()
    {
        let r = post_from(
            &direct,
            "/api/v1/auth/register",
            ip,
            json!({"email": format!("d-{}@example.com", uuid::Uuid::new_v4().simple()), "password": PASSWORD, "display_name": "Reg"}),
        )
        .await;
        assert_eq!(r.status, if i < 2 { 202 } else { 429 }, "{}", r.text);
    }
    // The addresses were counted, never kept.
    for db in [app.store(), direct.store()] {
        let dump = crate::records::dump_all(db).await;
        for ip in ["192.0.2.", "198.51.100.", "127.0.0.1"] {
            assert!(!dump.contains(ip), "{ip} stored");
        }
    }
}

async fn a_flood_at_one_account_does_not_stop_its_owner_signing_in_from_elsewhere(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |c| {
        c.trusted_proxies = vec!["127.0.0.1".into()];
        c.login_max_failures = 10;
        c.login_account_max_failures = 20;
    })
    .await;
    let owner = app
        .user_with_role("Dr Owner", alcove::domain::Role::Therapist)
        .await;
    let sign_in = |ip: String, password: &'static str| {
        let app = &app;
        let email = owner.email.clone();
        async move {
            post_from(
                app,
                "/api/v1/auth/login",
                &ip,
                json!({"email": email, "password": password}),
            )
            .await
        }
    };
    // The owner's usual address.
    sign_in("192.0.2.50".into(), PASSWORD).await.expect(200);
    // A flood of guesses from one address: that address is stopped ...
    let mut stopped = 0;
    for _ in 0..15 {
        let r = sign_in("198.51.100.1".into(), "wrong wrong wrong").await;
        match r.status.as_u16() {
            401 => {}
            429 => stopped += 1,
            s => panic!("{s}: {}", r.text),
        }
    }
    assert_eq!(stopped, 5, "after ten attempts");
    // ... and the owner, elsewhere, signs in with the right password.
    sign_in("203.0.113.7".into(), PASSWORD).await.expect(200);

    // Guesses from many addresses push the account to its ceiling of 20 failures (ten came
    // from the flood above): it is slowed, not locked.
    for i in 10..20 {
        sign_in(format!("198.51.100.{i}"), "wrong wrong wrong")
            .await
            .expect_problem(401, "invalid_credentials");
    }
    let mut slowed = 0;
    for i in 20..26 {
        let r = sign_in(format!("198.51.100.{i}"), "wrong wrong wrong").await;
        match r.status.as_u16() {
            401 => {}
            429 => {
                let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
                assert!(
                    wait <= 3,
                    "slowed by seconds, not locked for the window: {wait}"
                );
                slowed += 1;
            }
            s => panic!("{s}: {}", r.text),
        }
    }
    assert!(
        slowed >= 4,
        "one attempt per interval gets through: {slowed} slowed"
    );
    // The owner's known addresses are not slowed.
    sign_in("192.0.2.50".into(), PASSWORD).await.expect(200);
    sign_in("203.0.113.7".into(), PASSWORD).await.expect(200);
    // From a new address the owner waits a few seconds at most, then gets in.
    let mut waited = Duration::ZERO;
    loop {
        let r = sign_in("203.0.113.99".into(), PASSWORD).await;
        if r.status == 200 {
            break;
        }
        r.expect_problem(429, "too_many_requests");
        let wait: u64 = r.headers["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(wait <= 3);
        waited += Duration::from_secs(wait);
        assert!(waited <= Duration::from_secs(9), "the owner is locked out");
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

async fn a_failed_sign_in_keeps_no_trace_of_an_unknown_email(backend: Backend) {
    let app = spawn_app(backend).await;
    let known = app.client("Known").await;
    let unknown = format!("nobody-{}@example.com", uuid::Uuid::new_v4().simple());
    for email in [unknown.as_str(), known.email.as_str()] {
        app.post(
            "/api/v1/auth/login",
            None,
            json!({"email": email, "password": "wrong wrong wrong"}),
        )
        .await
        .expect_problem(401, "invalid_credentials");
    }
    let dump = crate::records::dump_all(app.store()).await;
    // No digest of the unknown address, in any form an unsalted hash could take.
    use sha2::Digest as _;
    let digest = hex::encode(sha2::Sha256::digest(unknown.as_bytes()));
    for prefix in [&digest[..16], &digest[..12], &digest[..8]] {
        assert!(!dump.contains(prefix), "a digest of the email is stored");
    }
    assert!(!dump.contains(&unknown));
    assert!(!dump.contains("email_sha256"));
    let admin = app
        .user_with_role("Admin", alcove::domain::Role::Admin)
        .await;
    let audit = app
        .get(
            "/api/v1/admin/audit?action=auth.sign_in_failed",
            admin.token(),
        )
        .await
        .expect(200);
    let items = audit["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{audit}");
    let details: Vec<&serde_json::Value> = items.iter().map(|i| &i["details"]).collect();
    assert!(
        details.contains(&&json!({"known_account": false})),
        "{audit}"
    );
    assert!(
        details.contains(&&json!({"known_account": true})),
        "{audit}"
    );
}

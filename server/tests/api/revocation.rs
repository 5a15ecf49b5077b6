//! Live revocation: when a sign-in ends (signed out, signed out everywhere, a new password,
//! the account disabled), its signalling connections are closed within seconds, with
//! `error signed_out` and close code 4014, and the person leaves the room.

use crate::helpers::{Api as _, Backend, PASSWORD};
use crate::on_both_backends;
use crate::records::{admitted, hello};
use crate::signaling::{pair, signalling_app, still_up};
use alcove::domain::Role;
use alcove_signaling::{
    ErrorCode, ServerMessage,
    client::{Incoming, SignalClient},
    close,
};
use serde_json::json;
use std::time::{Duration, Instant};
use uuid::Uuid;

on_both_backends!(
    ending_a_sign_in_closes_its_signalling_connections_at_once,
    a_sign_in_ended_by_the_command_line_closes_its_connections_too,
);

/// How soon a revoked connection must be closed (the figure `docs/security.md` promises).
pub const WITHIN: Duration = Duration::from_secs(3);

/// `c` is told `error signed_out` and closed with 4014, within [`WITHIN`] of `since`.
pub async fn expect_signed_out(c: &mut SignalClient, since: Instant) {
    expect_signed_out_within(c, since, WITHIN).await
}

/// [`expect_signed_out`] within `within`.
pub async fn expect_signed_out_within(c: &mut SignalClient, since: Instant, within: Duration) {
    let code = c
        .wait_for(within, |m| match m {
            ServerMessage::Error { code, .. } => Some(*code),
            _ => None,
        })
        .await
        .expect("error signed_out before the close");
    assert_eq!(code, ErrorCode::SignedOut);
    loop {
        match c.recv_timeout(within).await.expect("closed in time") {
            Incoming::Closed(code, _) => {
                assert_eq!(code, Some(close::SIGNED_OUT));
                break;
            }
            Incoming::Message(_) | Incoming::Other(_) => {}
        }
    }
    assert!(
        since.elapsed() < within,
        "closed {:?} after the revocation",
        since.elapsed()
    );
}

/// The therapist hears that `pid` left.
async fn peer_left(th: &mut SignalClient, pid: Uuid) {
    th.wait_for(Duration::from_secs(5), |m| match m {
        ServerMessage::PeerLeft { participant_id, .. } if *participant_id == pid => Some(()),
        ServerMessage::Lobby { waiting } if waiting.iter().all(|w| w.participant_id != pid) => {
            Some(())
        }
        _ => None,
    })
    .await
    .expect("the therapist is told the client left");
}

async fn ending_a_sign_in_closes_its_signalling_connections_at_once(backend: Backend) {
    let app = signalling_app(backend, |_| {}).await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    let (t, c, id) = pair(&app).await;
    // The therapist and the client in the call, the client from its first sign-in.
    let (mut th, mut cl, pid) = admitted(&app, &t, &c, id).await;

    // 1. Signing out another sign-in of the same account leaves this connection alone;
    //    signing out this one closes it, and the therapist hears the client left.
    let other = app.login(&c.email).await;
    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": other.refresh}),
    )
    .await
    .expect(204);
    still_up(&mut cl).await;
    let at = Instant::now();
    app.post(
        "/api/v1/auth/logout",
        None,
        json!({"refresh_token": c.refresh}),
    )
    .await
    .expect(204);
    expect_signed_out(&mut cl, at).await;
    peer_left(&mut th, pid).await;
    // Its sign-in is over: no new join token from it.
    app.post(
        format!("/api/v1/appointments/{id}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(401, "invalid_token");

    // 2. Sign out everywhere, from another device: the connection in the room closes.
    let phone = app.login(&c.email).await;
    let laptop = app.login(&c.email).await;
    let (mut cl, pid) = hello(&app, &phone, id).await;
    let at = Instant::now();
    app.post("/api/v1/me/sign-out-everywhere", laptop.token(), json!({}))
        .await
        .expect(200);
    expect_signed_out(&mut cl, at).await;
    peer_left(&mut th, pid).await;

    // 3. A new password, set from one sign-in, closes the connections of the others and
    //    keeps its own.
    let phone = app.login(&c.email).await;
    let laptop = app.login(&c.email).await;
    let (mut on_phone, _) = hello(&app, &phone, id).await;
    let at = Instant::now();
    app.post(
        "/api/v1/me/password",
        laptop.token(),
        json!({"current_password": PASSWORD, "new_password": "a new and longer passphrase"}),
    )
    .await
    .expect(200);
    expect_signed_out(&mut on_phone, at).await;
    let (mut on_laptop, _) = hello(&app, &laptop, id).await;
    app.post(
        "/api/v1/me/password",
        laptop.token(),
        json!({"current_password": "a new and longer passphrase", "new_password": PASSWORD}),
    )
    .await
    .expect(200);
    still_up(&mut on_laptop).await;

    // 4. An administrator disables the therapist's account: the therapist's connection
    //    closes; the client, still in the room, is unaffected.
    let at = Instant::now();
    app.post(
        format!("/api/v1/admin/users/{}/disable", t.id),
        admin.token(),
        json!({}),
    )
    .await
    .expect(200);
    expect_signed_out(&mut th, at).await;
    still_up(&mut on_laptop).await;
}

/// What another process ends is found by each node's sweep (every 2 s): the admin command
/// line (`alcove user disable`, `alcove user set-password`) writes only to the database,
/// and a node without Redis has no stream to hear another node on.
async fn a_sign_in_ended_by_the_command_line_closes_its_connections_too(backend: Backend) {
    let app = signalling_app(backend, |_| {}).await;
    let (_t, c, id) = pair(&app).await;
    // The client in the waiting room (a socket left unread would be found dead by the
    // test's short ping timeout, so the therapist is left out here).
    let (mut cl, _) = hello(&app, &c, id).await;
    let cwd = tempfile::tempdir().unwrap();
    let at = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_alcove"))
        .current_dir(cwd.path())
        .env("DATABASE_URL", app.db_url())
        .args(["user", "disable", "--email", &c.email])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    expect_signed_out_within(&mut cl, at, alcove::auth::REVOCATION_SWEEP + WITHIN).await;
    // And the account cannot come back.
    app.post(
        format!("/api/v1/appointments/{id}/join"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(401, "invalid_token");
}

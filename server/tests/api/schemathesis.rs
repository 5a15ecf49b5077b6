//! The API fuzzed against its own OpenAPI document with schemathesis (from PyPI; the
//! README's test command installs it and names it in `ALCOVE_SCHEMATHESIS`): signed in as
//! a client, a therapist and an administrator in turn, with real ids to reach past the
//! 404s, every operation is tried with schema-valid and schema-violating requests
//! (examples, coverage, fuzzing and stateful phases). No answer may be a 5xx, every
//! status and body must be the documented ones, schema-violating requests must be
//! refused, and authentication must be enforced.
//!
//! Not checked: that every schema-valid request is accepted (`positive_data_acceptance`):
//! business rules (a start in the future, a strong password, a real time zone, a free
//! slot) are not expressible in JSON Schema, and their refusals are documented 4xx.
//! `POST /me/sign-out-everywhere` is left out (it would end the run's own sign-in; its own
//! tests are in auth and revocation), and so is the signalling WebSocket (not HTTP: the
//! property tests of `signaling/tests/fuzz.rs` cover it).

use crate::helpers::{Api as _, Backend, spawn_app_with};
use crate::on_both_backends;
use alcove::domain::Role;
use std::process::Command;

on_both_backends!(the_api_passes_schemathesis_for_every_role);

fn schemathesis() -> String {
    let bin = std::env::var("ALCOVE_SCHEMATHESIS").unwrap_or_else(|_| "schemathesis".into());
    let ok = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        ok,
        "schemathesis is required and was not found ({bin}): the README's test command \
         (scripts/test) installs it; or pip install schemathesis and set ALCOVE_SCHEMATHESIS"
    );
    bin
}

async fn the_api_passes_schemathesis_for_every_role(backend: Backend) {
    let bin = schemathesis();
    let app = spawn_app_with(backend, |_| {}).await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    let therapist = app.user_with_role("Dr Fuzz", Role::Therapist).await;
    let client = app.client("Casey").await;
    let spare = app.client("Spare").await;
    let appointment = crate::signaling::live_appointment(&app, &therapist, &[&client]).await;

    // Real ids for the path parameters, so that requests get past "not found".
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[operations]]
include-path-regex = "^/api/v1/appointments/\\{{id\\}}"
parameters = {{ "path.id" = "{appointment}", "path.client_id" = "{client}" }}

[[operations]]
include-path-regex = "^/api/v1/therapists/\\{{id\\}}"
parameters = {{ "path.id" = "{therapist}" }}

[[operations]]
include-path-regex = "^/api/v1/admin/users/\\{{id\\}}"
parameters = {{ "path.id" = "{spare}" }}
"#,
            client = client.id,
            therapist = therapist.id,
            spare = spare.id,
        ),
    )
    .unwrap();

    for (role, who) in [
        ("client", &client),
        ("therapist", &therapist),
        ("admin", &admin),
    ] {
        let args: Vec<String> = vec![
            "--no-color".into(),
            "--config-file".into(),
            config.display().to_string(),
            "run".into(),
            format!("{}/api/v1/openapi.json", app.base),
            "-H".into(),
            format!("Authorization: Bearer {}", who.access),
            "--checks".into(),
            "all".into(),
            "--exclude-checks".into(),
            "positive_data_acceptance".into(),
            "--exclude-path".into(),
            "/api/v1/me/sign-out-everywhere".into(),
            "--exclude-path".into(),
            "/api/v1/signal".into(),
            "--max-examples".into(),
            "15".into(),
            "--seed".into(),
            "20261205".into(),
            "--workers".into(),
            "2".into(),
            "--generation-database".into(),
            "none".into(),
        ];
        let out = tokio::task::spawn_blocking({
            let bin = bin.clone();
            let dir = dir.path().to_owned();
            move || {
                Command::new(bin)
                    .args(args)
                    .current_dir(dir)
                    .env("NO_COLOR", "1")
                    .output()
                    .expect("schemathesis runs")
            }
        })
        .await
        .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if std::env::var_os("ALCOVE_SCHEMATHESIS_SHOW").is_some() {
            eprintln!("---- schemathesis as {role} ({backend:?}) ----\n{text}");
        }
        assert!(
            out.status.success(),
            "schemathesis as {role} ({backend:?}) found failures:\n{text}"
        );
        assert!(
            text.contains("Fuzzing") && text.contains("passed"),
            "schemathesis as {role} ran its phases:\n{text}"
        );
        // The token must have worked: not every operation refused as unauthenticated.
        assert!(
            !text.contains("401 Unauthorized ("),
            "schemathesis as {role} was not signed in:\n{text}"
        );
    }
}

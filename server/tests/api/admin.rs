//! Accounts created and managed by an admin.

use crate::helpers::Api as _;
use crate::helpers::{Backend, PASSWORD, spawn_app};
use crate::on_both_backends;
use alcove::domain::Role;
use serde_json::json;

on_both_backends!(
    admin_creates_a_therapist_who_can_sign_in,
    admin_lists_and_cannot_disable_self
);

async fn admin_creates_a_therapist_who_can_sign_in(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    let created = app
        .post(
            "/api/v1/admin/users",
            admin.token(),
            json!({"email": "dr.lee@example.com", "display_name": "Dr Lee", "role": "therapist", "password": PASSWORD}),
        )
        .await
        .expect(201);
    assert_eq!(created["role"], "therapist");
    assert_eq!(created["disabled"], false);
    // Their (empty) profile is in the directory at once.
    let id = created["id"].as_str().unwrap();
    let p = app
        .get(&format!("/api/v1/therapists/{id}"), None)
        .await
        .expect(200);
    assert_eq!(p["display_name"], "Dr Lee");
    let t = app.login("dr.lee@example.com").await;
    let me = app.get("/api/v1/me", t.token()).await.expect(200);
    assert_eq!(me["role"], "therapist");

    // Bad input: unknown role, weak password, duplicate.
    app.post(
        "/api/v1/admin/users",
        admin.token(),
        json!({"email": "x@example.com", "display_name": "X", "role": "superuser", "password": PASSWORD}),
    )
    .await
    .expect_problem(422, "invalid_body");
    app.post(
        "/api/v1/admin/users",
        admin.token(),
        json!({"email": "x@example.com", "display_name": "X", "role": "client", "password": "1234567890"}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        "/api/v1/admin/users",
        admin.token(),
        json!({"email": "DR.LEE@example.com", "display_name": "X", "role": "client", "password": PASSWORD}),
    )
    .await
    .expect_problem(409, "email_taken");
}

async fn admin_lists_and_cannot_disable_self(backend: Backend) {
    let app = spawn_app(backend).await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    for n in ["A", "B", "C"] {
        app.client(n).await;
    }
    let page = app
        .get("/api/v1/admin/users?role=client&per_page=2", admin.token())
        .await
        .expect(200);
    assert_eq!(page["total"], 3);
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert!(
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|u| u["role"] == "client")
    );
    let page2 = app
        .get(
            "/api/v1/admin/users?role=client&per_page=2&page=2",
            admin.token(),
        )
        .await
        .expect(200);
    assert_eq!(page2["items"].as_array().unwrap().len(), 1);
    app.get("/api/v1/admin/users?per_page=1000", admin.token())
        .await
        .expect_problem(422, "validation_failed");
    app.get("/api/v1/admin/users?page=zero", admin.token())
        .await
        .expect_problem(400, "invalid_query");

    app.post(
        &format!("/api/v1/admin/users/{}/disable", admin.id),
        admin.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "cannot_disable_self");
    app.post(
        &format!("/api/v1/admin/users/{}/disable", uuid::Uuid::new_v4()),
        admin.token(),
        json!({}),
    )
    .await
    .expect_problem(404, "not_found");
    app.post(
        "/api/v1/admin/users/not-a-uuid/disable",
        admin.token(),
        json!({}),
    )
    .await
    .expect_problem(400, "invalid_path");
}

//! Therapist profiles and the public directory.

use crate::helpers::Api as _;
use crate::helpers::{Backend, Session, TestApp, spawn_app};
use crate::on_both_backends;
use alcove::domain::Role;
use serde_json::{Value, json};

on_both_backends!(
    therapists_edit_their_profile_and_the_directory_filters,
    bad_profile_input_is_refused_and_nothing_changes,
);

async fn therapist(app: &TestApp, name: &str, profile: Value) -> Session {
    let t = app.user_with_role(name, Role::Therapist).await;
    let mut body = profile;
    body["display_name"] = json!(name);
    app.put("/api/v1/therapists/me", t.token(), body)
        .await
        .expect(200);
    t
}

fn names(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["display_name"].as_str().unwrap())
        .collect()
}

async fn therapists_edit_their_profile_and_the_directory_filters(backend: Backend) {
    let app = spawn_app(backend).await;
    let a = therapist(
        &app,
        "Dr Adams",
        json!({"bio": "Integrative psychotherapist.\nTwenty years of practice.",
               "qualifications": ["MSc Integrative Psychotherapy", "UKCP registered"],
               "specialisations": ["anxiety", "trauma"], "modalities": ["integrative", "emdr"],
               "languages": ["en", "FR"], "time_zone": "Europe/London",
               "offers_free_consultation": true}),
    )
    .await;
    therapist(
        &app,
        "Dr Baker",
        json!({"specialisations": ["depression", "anxiety"], "modalities": ["cbt"],
               "languages": ["en"], "time_zone": "America/New_York"}),
    )
    .await;
    therapist(
        &app,
        "Dr Costa",
        json!({"specialisations": ["grief"], "modalities": ["psychodynamic"],
               "languages": ["pt-br"], "time_zone": "America/Sao_Paulo",
               "offers_free_consultation": true}),
    )
    .await;

    let mine = app
        .get("/api/v1/therapists/me", a.token())
        .await
        .expect(200);
    assert_eq!(mine["languages"], json!(["en", "fr"]), "tags are canonical");
    assert_eq!(mine["qualifications"][1], "UKCP registered");

    let all = app.get("/api/v1/therapists", None).await.expect(200);
    assert_eq!(names(&all), ["Dr Adams", "Dr Baker", "Dr Costa"]);
    assert_eq!(all["total"], 3);

    let q = |query: &str| {
        let path = format!("/api/v1/therapists?{query}");
        let app = &app;
        async move { app.get(&path, None).await }
    };
    assert_eq!(
        names(&q("specialisation=anxiety").await.expect(200)),
        ["Dr Adams", "Dr Baker"]
    );
    assert_eq!(names(&q("modality=cbt").await.expect(200)), ["Dr Baker"]);
    assert_eq!(names(&q("language=pt-BR").await.expect(200)), ["Dr Costa"]);
    assert_eq!(names(&q("language=fr").await.expect(200)), ["Dr Adams"]);
    assert_eq!(
        names(
            &q("specialisation=anxiety&free_consultation=true")
                .await
                .expect(200)
        ),
        ["Dr Adams"]
    );
    assert_eq!(
        names(
            &q("specialisation=anxiety&modality=emdr&language=en")
                .await
                .expect(200)
        ),
        ["Dr Adams"]
    );
    assert!(names(&q("specialisation=grief&modality=cbt").await.expect(200)).is_empty());
    let p2 = q("per_page=2&page=2").await.expect(200);
    assert_eq!(names(&p2), ["Dr Costa"]);
    assert_eq!(p2["total"], 3);

    // Unknown filter values are errors, not silently empty pages.
    q("specialisation=astrology")
        .await
        .expect_problem(422, "validation_failed");
    q("free_consultation=maybe")
        .await
        .expect_problem(400, "invalid_query");

    // One profile; unknown ids and non-therapists are 404.
    let one = app
        .get(&format!("/api/v1/therapists/{}", a.id), None)
        .await
        .expect(200);
    assert_eq!(one["specialisations"], json!(["anxiety", "trauma"]));
    assert_eq!(one["offers_free_consultation"], true);
    let client = app.client("Cli").await;
    app.get(&format!("/api/v1/therapists/{}", client.id), None)
        .await
        .expect_problem(404, "not_found");

    // A disabled therapist leaves the directory.
    let admin = app.user_with_role("Root", Role::Admin).await;
    app.post(
        &format!("/api/v1/admin/users/{}/disable", a.id),
        admin.token(),
        json!({}),
    )
    .await
    .expect(200);
    assert_eq!(
        names(&q("specialisation=anxiety").await.expect(200)),
        ["Dr Baker"]
    );

    let vocab = app
        .get("/api/v1/therapists/vocabulary", None)
        .await
        .expect(200);
    assert!(
        vocab["modalities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["slug"] == "emdr")
    );
}

async fn bad_profile_input_is_refused_and_nothing_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist(
        &app,
        "Dr Dunn",
        json!({"specialisations": ["grief"], "time_zone": "Europe/Paris"}),
    )
    .await;
    let put = |body: Value| app.put("/api/v1/therapists/me", t.token(), body);
    let b = put(json!({"display_name": "", "time_zone": "Mars/Base", "specialisations": ["grief", "astrology"],
                       "bio": "x".repeat(5001), "languages": ["english"]}))
        .await
        .expect_problem(422, "validation_failed");
    let fields: Vec<&str> = b["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "display_name",
            "bio",
            "specialisations[1]",
            "languages[0]",
            "time_zone"
        ]
    );
    put(json!({"display_name": "Dr Dunn", "time_zone": "Europe/Paris", "qualifications": vec!["q"; 21]}))
        .await
        .expect_problem(422, "validation_failed");
    put(json!({"display_name": "Dr Dunn", "time_zone": "Europe/Paris", "hourly_rate": 100}))
        .await
        .expect_problem(422, "invalid_body");
    put(json!({"display_name": "Dr Dunn", "time_zone": "+01:00"}))
        .await
        .expect_problem(422, "validation_failed");

    let p = app
        .get("/api/v1/therapists/me", t.token())
        .await
        .expect(200);
    assert_eq!(p["time_zone"], "Europe/Paris");
    assert_eq!(p["specialisations"], json!(["grief"]));
    assert_eq!(p["display_name"], "Dr Dunn");
}

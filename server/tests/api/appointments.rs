//! Scheduling: availability, slots, booking, changes, history, under concurrency and across
//! daylight-saving changes, on both databases.

use crate::helpers::Api as _;
use crate::helpers::{Backend, Session, TestApp, spawn_app, spawn_app_with};
use crate::on_both_backends;
use alcove::domain::Role;
use jiff::{SignedDuration, Timestamp, ToSpan as _, civil::Date, tz::TimeZone};
use serde_json::{Value, json};
use std::time::Duration;

on_both_backends!(
    journey_from_availability_to_cancellation,
    fifty_simultaneous_bookings_of_one_slot_give_one_appointment,
    slots_follow_wall_clock_hours_across_daylight_saving_changes,
    authorization_matrix_for_appointments,
    bad_scheduling_input_is_refused_and_nothing_is_written,
    consultations_are_free_once_and_only_where_offered,
    group_sessions_hold_up_to_three_clients,
    concurrent_participant_changes_keep_the_limits,
    weekly_series_all_or_nothing_and_best_effort,
    calendar_files_and_feeds_are_valid_icalendar,
    outcomes_and_late_cancellations_are_recorded,
    a_therapist_books_only_their_own_clients_and_never_learns_why_one_is_refused,
);

/// A therapist working every day 09:00-17:00 in `tz`, with the given settings merged in.
pub async fn therapist_with_hours(app: &TestApp, tz: &str, extra: Value) -> Session {
    let t = app.user_with_role("Dr Hours", Role::Therapist).await;
    let weekly: Vec<Value> = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
        .iter()
        .map(|d| json!({"weekday": d, "start": "09:00", "end": "17:00"}))
        .collect();
    let mut body = json!({"time_zone": tz, "weekly": weekly});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        body[k] = v;
    }
    app.put("/api/v1/therapists/me/availability", t.token(), body)
        .await
        .expect(200);
    t
}

/// A local date `days` ahead in `tz`.
fn day_ahead(tz: &str, days: i64) -> Date {
    Timestamp::now()
        .to_zoned(TimeZone::get(tz).unwrap())
        .date()
        .checked_add(days.days())
        .unwrap()
}

/// `hh:mm` local time on `day` in `tz`, as an RFC 3339 UTC instant.
fn at(tz: &str, day: Date, hh: i8, mm: i8) -> String {
    day.at(hh, mm, 0, 0)
        .to_zoned(TimeZone::get(tz).unwrap())
        .unwrap()
        .timestamp()
        .to_string()
}

fn slots_of(v: &Value) -> Vec<String> {
    v["slots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect()
}

async fn slots(app: &TestApp, therapist: &Session, day: Date, kind: &str) -> Vec<String> {
    let from = at("UTC", day, 0, 0);
    let to = at("UTC", day.tomorrow().unwrap(), 0, 0);
    let r = app
        .get(
            &format!(
                "/api/v1/therapists/{}/slots?from={from}&to={to}&kind={kind}",
                therapist.id
            ),
            None,
        )
        .await
        .expect(200);
    slots_of(&r)
}

async fn journey_from_availability_to_cancellation(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    let c = app.client("Cleo").await;
    let day = day_ahead("UTC", 3);

    let free = slots(&app, &t, day, "session").await;
    assert_eq!(free.len(), 8, "09:00 to 16:00 on the hour: {free:?}");
    let nine = at("UTC", day, 9, 0);
    let eleven = at("UTC", day, 11, 0);
    assert_eq!(free[0], nine);

    let booked = app
        .post(
            "/api/v1/appointments",
            c.token(),
            json!({"therapist_id": t.id, "starts_at": nine, "kind": "session"}),
        )
        .await
        .expect(201);
    assert_eq!(booked["status"], "booked");
    assert_eq!(booked["starts_at"], nine);
    assert_eq!(booked["ends_at"], at("UTC", day, 9, 50));
    assert_eq!(booked["therapist"]["id"], t.id.to_string());
    assert_eq!(booked["clients"][0]["id"], c.id.to_string());
    assert_eq!(booked["join_opens_at"], at("UTC", day, 8, 50));
    assert_eq!(booked["join_closes_at"], at("UTC", day, 10, 20));
    let id = booked["id"].as_str().unwrap().to_owned();

    // The slot is gone; both sides list the appointment.
    assert!(!slots(&app, &t, day, "session").await.contains(&nine));
    for who in [&c, &t] {
        let list = app
            .get("/api/v1/appointments", who.token())
            .await
            .expect(200);
        assert_eq!(list["total"], 1);
        assert_eq!(list["items"][0]["id"], id);
    }

    // Reschedule to 11:00: 09:00 is free again, 11:00 is not.
    let moved = app
        .post(
            &format!("/api/v1/appointments/{id}/reschedule"),
            c.token(),
            json!({"starts_at": eleven}),
        )
        .await
        .expect(200);
    assert_eq!(moved["starts_at"], eleven);
    let free = slots(&app, &t, day, "session").await;
    assert!(free.contains(&nine) && !free.contains(&eleven));

    // Cancel: 11:00 is free again and the appointment says so.
    let cancelled = app
        .post(
            &format!("/api/v1/appointments/{id}/cancel"),
            c.token(),
            json!({"reason": "a clash at work"}),
        )
        .await
        .expect(200);
    assert_eq!(cancelled["status"], "cancelled");
    assert_eq!(cancelled["cancelled_by"], c.id.to_string());
    assert_eq!(cancelled["cancel_reason"], "a clash at work");
    assert_eq!(slots(&app, &t, day, "session").await.len(), 8);
    let listed = app
        .get("/api/v1/appointments?status=cancelled", t.token())
        .await
        .expect(200);
    assert_eq!(listed["items"][0]["id"], id);
    let booked_only = app
        .get("/api/v1/appointments?status=booked", t.token())
        .await
        .expect(200);
    assert_eq!(booked_only["total"], 0);

    // The history tells the story, append-only.
    let h = app
        .get(&format!("/api/v1/appointments/{id}/history"), t.token())
        .await
        .expect(200);
    let actions: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["created", "rescheduled", "cancelled"]);
    assert_eq!(h[1]["details"]["from"], nine);
    assert_eq!(h[1]["details"]["to"], eleven);
    assert_eq!(h[2]["actor_id"], c.id.to_string());
}

async fn fifty_simultaneous_bookings_of_one_slot_give_one_appointment(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.db_max_connections = 10).await;
    let t = therapist_with_hours(&app, "UTC", json!({})).await;
    let clients = app.fast_clients(50).await;
    let day = day_ahead("UTC", 2);
    let start = at("UTC", day, 10, 0);
    let attempts = clients.iter().map(|c| {
        app.post(
            "/api/v1/appointments",
            c.token(),
            json!({"therapist_id": t.id, "starts_at": start, "kind": "session"}),
        )
    });
    let results = futures_util::future::join_all(attempts).await;
    let created = results.iter().filter(|r| r.status == 201).count();
    let conflicts: Vec<_> = results.iter().filter(|r| r.status == 409).collect();
    assert_eq!(created, 1, "exactly one booking wins");
    assert_eq!(conflicts.len(), 49);
    for r in conflicts {
        r.expect_problem(409, "slot_taken");
    }
    let admin = app.user_with_role("Root", Role::Admin).await;
    let all = app
        .get("/api/v1/appointments", admin.token())
        .await
        .expect(200);
    assert_eq!(all["total"], 1, "the database holds one appointment");
}

/// The next daylight-saving transitions of `tz` after now: (spring forward, fall back).
fn next_transitions(tz: &str) -> (Timestamp, Timestamp) {
    let zone = TimeZone::get(tz).unwrap();
    let mut spring = None;
    let mut autumn = None;
    for t in zone.following(Timestamp::now()).take(4) {
        let before = zone.to_offset(t.timestamp() - SignedDuration::from_secs(1));
        let after = t.offset();
        if after > before {
            spring.get_or_insert(t.timestamp());
        } else {
            autumn.get_or_insert(t.timestamp());
        }
    }
    (spring.unwrap(), autumn.unwrap())
}

async fn slots_follow_wall_clock_hours_across_daylight_saving_changes(backend: Backend) {
    let app = spawn_app(backend).await;
    for tz in ["Europe/London", "America/New_York"] {
        let t = therapist_with_hours(&app, tz, json!({"slot_step_minutes": 60})).await;
        let (spring, autumn) = next_transitions(tz);
        for change in [spring, autumn] {
            let zone = TimeZone::get(tz).unwrap();
            let change_day = change.to_zoned(zone.clone()).date();
            // Three days before to three days after the change.
            let from = at(tz, change_day.checked_sub(3.days()).unwrap(), 0, 0);
            let to = at(tz, change_day.checked_add(4.days()).unwrap(), 0, 0);
            let r = app
                .get(
                    &format!("/api/v1/therapists/{}/slots?from={from}&to={to}", t.id),
                    None,
                )
                .await
                .expect(200);
            let got = slots_of(&r);
            assert_eq!(got.len(), 7 * 8, "{tz}: 8 slots a day for 7 days");
            // Every slot is on the therapist's wall-clock hour, 09:00 to 16:00 local.
            for s in &got {
                let local = s.parse::<Timestamp>().unwrap().to_zoned(zone.clone());
                assert_eq!(local.minute(), 0, "{tz} {s}");
                assert!((9..=16).contains(&local.hour()), "{tz} {s} is {local}");
            }
            // And the UTC hour of 09:00 local moved by one hour across the change.
            let first_utc_hour = |day: Date| {
                got.iter()
                    .map(|s| s.parse::<Timestamp>().unwrap())
                    .find(|s| s.to_zoned(zone.clone()).date() == day)
                    .unwrap()
                    .to_zoned(TimeZone::UTC)
                    .hour()
            };
            let before = first_utc_hour(change_day.checked_sub(2.days()).unwrap());
            let after = first_utc_hour(change_day.checked_add(2.days()).unwrap());
            let expected_shift = if change == spring { -1 } else { 1 };
            assert_eq!(after - before, expected_shift, "{tz} around {change}");
        }
    }
}

async fn authorization_matrix_for_appointments(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    let other_t = therapist_with_hours(&app, "UTC", json!({})).await;
    let c = app.client("Cal").await;
    let other_c = app.client("Oz").await;
    let admin = app.user_with_role("Root", Role::Admin).await;
    let day = day_ahead("UTC", 4);
    let book = |start: String| {
        app.post(
            "/api/v1/appointments",
            c.token(),
            json!({"therapist_id": t.id, "starts_at": start, "kind": "session"}),
        )
    };
    let id = book(at("UTC", day, 9, 0)).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = |p: &str| format!("/api/v1/appointments/{id}{p}");

    // list: each sees only their own; admin sees all.
    for (who, total) in [(&c, 1), (&other_c, 0), (&t, 1), (&other_t, 0), (&admin, 1)] {
        let r = app
            .get("/api/v1/appointments", who.token())
            .await
            .expect(200);
        assert_eq!(r["total"], total, "{}", who.email);
    }
    // read: outsiders get 404 (existence does not leak), participants and admin 200.
    for (who, status) in [
        (&c, 200),
        (&other_c, 404),
        (&t, 200),
        (&other_t, 404),
        (&admin, 200),
    ] {
        let r = app.get(&path(""), who.token()).await;
        assert_eq!(r.status, status, "read by {}: {}", who.email, r.text);
        if status == 404 {
            r.expect_problem(404, "not_found");
        }
        let h = app.get(&path("/history"), who.token()).await;
        assert_eq!(h.status, status, "history by {}", who.email);
        let ics = app.get(&path("/calendar.ics"), who.token()).await;
        assert_eq!(ics.status, status, "calendar by {}", who.email);
    }
    // reschedule: outsiders 404, admin 403, client and therapist 200.
    let ten = at("UTC", day, 10, 0);
    for who in [&other_c, &other_t] {
        app.post(&path("/reschedule"), who.token(), json!({"starts_at": ten}))
            .await
            .expect_problem(404, "not_found");
    }
    app.post(
        &path("/reschedule"),
        admin.token(),
        json!({"starts_at": ten}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.post(&path("/reschedule"), c.token(), json!({"starts_at": ten}))
        .await
        .expect(200);
    app.post(
        &path("/reschedule"),
        t.token(),
        json!({"starts_at": at("UTC", day, 11, 0)}),
    )
    .await
    .expect(200);
    // Outcomes and participants: only its therapist.
    for who in [&c, &admin] {
        app.post(&path("/no-show"), who.token(), json!({}))
            .await
            .expect_problem(403, "forbidden");
    }
    app.post(&path("/no-show"), other_t.token(), json!({}))
        .await
        .expect_problem(404, "not_found");
    // cancel: outsiders 404; each of client, therapist, admin can cancel their own booking.
    for who in [&other_c, &other_t] {
        app.post(&path("/cancel"), who.token(), json!({}))
            .await
            .expect_problem(404, "not_found");
    }
    let a2 = book(at("UTC", day, 14, 0)).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let a3 = book(at("UTC", day, 15, 0)).await.expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (who, appt) in [(&c, &id), (&t, &a2), (&admin, &a3)] {
        let r = app
            .post(
                &format!("/api/v1/appointments/{appt}/cancel"),
                who.token(),
                json!({}),
            )
            .await
            .expect(200);
        assert_eq!(r["cancelled_by"], who.id.to_string());
    }
    // Anonymous: 401 everywhere.
    app.get("/api/v1/appointments", None)
        .await
        .expect_problem(401, "unauthenticated");
    app.get(&path(""), None)
        .await
        .expect_problem(401, "unauthenticated");
}

async fn bad_scheduling_input_is_refused_and_nothing_is_written(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    let c = app.client("Bo").await;
    let day = day_ahead("UTC", 3);
    let book = |start: Value, kind: Value| {
        app.post(
            "/api/v1/appointments",
            c.token(),
            json!({"therapist_id": t.id, "starts_at": start, "kind": kind}),
        )
    };

    // Availability: unknown time zone, overlapping rules, bad times, bad lengths.
    let put = |body: Value| app.put("/api/v1/therapists/me/availability", t.token(), body);
    let b = put(json!({"time_zone": "Atlantis/Capital", "weekly": []}))
        .await
        .expect_problem(422, "validation_failed");
    assert_eq!(b["errors"][0]["field"], "time_zone");
    let b = put(json!({"time_zone": "UTC", "weekly": [
            {"weekday": "mon", "start": "09:00", "end": "12:00"},
            {"weekday": "mon", "start": "11:00", "end": "14:00"}]}))
    .await
    .expect_problem(422, "validation_failed");
    assert!(b["detail"].as_str().unwrap().contains("overlaps"));
    put(json!({"time_zone": "UTC", "weekly": [{"weekday": "mon", "start": "12:00", "end": "09:00"}]}))
        .await
        .expect_problem(422, "validation_failed");
    put(json!({"time_zone": "UTC", "weekly": [{"weekday": "funday", "start": "25:00", "end": "09:00"}]}))
        .await
        .expect_problem(422, "validation_failed");
    put(json!({"time_zone": "UTC", "weekly": [], "session_minutes": 5}))
        .await
        .expect_problem(422, "validation_failed");
    put(json!({"time_zone": "UTC", "weekly": [], "exceptions": [{"date": "someday", "kind": "unavailable"}]}))
        .await
        .expect_problem(422, "validation_failed");
    put(json!({"time_zone": "UTC", "weekly": [], "exceptions": [{"date": "2027-01-04", "kind": "available"}]}))
        .await
        .expect_problem(422, "validation_failed");
    // Nothing changed: still every day 09:00-17:00, in UTC.
    let a = app
        .get("/api/v1/therapists/me/availability", t.token())
        .await
        .expect(200);
    assert_eq!(a["time_zone"], "UTC");
    assert_eq!(a["weekly"].as_array().unwrap().len(), 7);

    // Booking: past, too soon, misaligned, outside hours, unknown kind, unknown therapist.
    book(
        json!(at("UTC", day_ahead("UTC", -1), 10, 0)),
        json!("session"),
    )
    .await
    .expect_problem(422, "starts_in_past");
    let soon = (Timestamp::now() + SignedDuration::from_hours(2))
        .round(jiff::Unit::Hour)
        .unwrap();
    book(json!(soon.to_string()), json!("session"))
        .await
        .expect_problem(422, "too_short_notice");
    book(json!(at("UTC", day, 9, 20)), json!("session"))
        .await
        .expect_problem(422, "misaligned_start");
    book(json!(at("UTC", day, 20, 0)), json!("session"))
        .await
        .expect_problem(422, "outside_availability");
    book(json!(at("UTC", day, 9, 0)), json!("massage"))
        .await
        .expect_problem(422, "invalid_body");
    book(json!("tomorrow at nine"), json!("session"))
        .await
        .expect_problem(422, "invalid_body");
    app.post(
        "/api/v1/appointments",
        c.token(),
        json!({"therapist_id": uuid::Uuid::new_v4(), "starts_at": at("UTC", day, 9, 0), "kind": "session"}),
    )
    .await
    .expect_problem(404, "not_found");
    // The therapist does not offer a consultation.
    book(json!(at("UTC", day, 9, 0)), json!("consultation"))
        .await
        .expect_problem(422, "consultation_not_offered");

    // Slot ranges.
    let q = |qs: String| app.get(format!("/api/v1/therapists/{}/slots?{qs}", t.id), None);
    q(format!(
        "from={}&to={}",
        at("UTC", day, 12, 0),
        at("UTC", day, 9, 0)
    ))
    .await
    .expect_problem(422, "invalid_range");
    q(format!(
        "from={}&to={}",
        at("UTC", day, 0, 0),
        at("UTC", day.checked_add(90.days()).unwrap(), 0, 0)
    ))
    .await
    .expect_problem(422, "range_too_long");
    q("from=yesterday".into())
        .await
        .expect_problem(400, "invalid_query");
    // Instants at the edge of the representable range are refused, not a crash.
    q("from=9999-12-30T00:00:00Z".into())
        .await
        .expect_problem(422, "validation_failed");
    book(json!("9999-12-30T00:00:00Z"), json!("session"))
        .await
        .expect_problem(422, "validation_failed");
    app.get(
        &format!(
            "/api/v1/appointments?from={}&to={}",
            at("UTC", day, 12, 0),
            at("UTC", day, 9, 0)
        ),
        c.token(),
    )
    .await
    .expect_problem(422, "invalid_range");

    // Nothing was written by any of that.
    let list = app.get("/api/v1/appointments", c.token()).await.expect(200);
    assert_eq!(list["total"], 0);

    // A real booking; then a taken slot, a client double-booking, and lifecycle errors.
    let id = book(json!(at("UTC", day, 9, 0)), json!("session"))
        .await
        .expect(201)["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let other = app.client("Di").await;
    app.post(
        "/api/v1/appointments",
        other.token(),
        json!({"therapist_id": t.id, "starts_at": at("UTC", day, 9, 0), "kind": "session"}),
    )
    .await
    .expect_problem(409, "slot_taken");
    let t2 = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    app.post(
        "/api/v1/appointments",
        c.token(),
        json!({"therapist_id": t2.id, "starts_at": at("UTC", day, 9, 0), "kind": "session"}),
    )
    .await
    .expect_problem(409, "client_busy");
    app.post(
        &format!("/api/v1/appointments/{id}/reschedule"),
        c.token(),
        json!({"starts_at": at("UTC", day, 9, 30)}),
    )
    .await
    .expect_problem(422, "misaligned_start");
    app.post(
        &format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        json!({"reason": "x".repeat(501)}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        &format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        json!({}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "appointment_not_active");
    app.post(
        &format!("/api/v1/appointments/{id}/reschedule"),
        c.token(),
        json!({"starts_at": at("UTC", day, 10, 0)}),
    )
    .await
    .expect_problem(409, "appointment_not_active");
    let h = app
        .get(&format!("/api/v1/appointments/{id}/history"), c.token())
        .await
        .expect(200);
    assert_eq!(
        h.as_array().unwrap().len(),
        2,
        "created and cancelled, nothing else"
    );
    app.get(
        &format!("/api/v1/appointments/{}", uuid::Uuid::new_v4()),
        c.token(),
    )
    .await
    .expect_problem(404, "not_found");
}

async fn consultations_are_free_once_and_only_where_offered(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    app.put(
        "/api/v1/therapists/me",
        t.token(),
        json!({"display_name": "Dr Hours", "time_zone": "UTC", "offers_free_consultation": true}),
    )
    .await
    .expect(200);
    let c = app.client("Ed").await;
    let day = day_ahead("UTC", 3);
    let free = slots(&app, &t, day, "consultation").await;
    assert_eq!(free.len(), 8);
    let first = app
        .post(
            "/api/v1/appointments",
            c.token(),
            json!({"therapist_id": t.id, "starts_at": free[0], "kind": "consultation"}),
        )
        .await
        .expect(201);
    assert_eq!(first["kind"], "consultation");
    assert_eq!(
        first["ends_at"],
        at("UTC", day, 9, 20),
        "20 minutes by default"
    );
    app.post(
        "/api/v1/appointments",
        c.token(),
        json!({"therapist_id": t.id, "starts_at": free[3], "kind": "consultation"}),
    )
    .await
    .expect_problem(409, "consultation_already_used");
    // Cancelling it gives the consultation back.
    let id = first["id"].as_str().unwrap();
    app.post(
        &format!("/api/v1/appointments/{id}/cancel"),
        c.token(),
        json!({}),
    )
    .await
    .expect(200);
    app.post(
        "/api/v1/appointments",
        c.token(),
        json!({"therapist_id": t.id, "starts_at": free[3], "kind": "consultation"}),
    )
    .await
    .expect(201);
}

async fn group_sessions_hold_up_to_three_clients(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({})).await;
    let [a, b, c, d] = [
        app.client("Ann").await,
        app.client("Ben").await,
        app.client("Cat").await,
        app.client("Dan").await,
    ];
    for c in [&a, &b, &c, &d] {
        app.relate(&t, c).await;
    }
    let day = day_ahead("UTC", 5);
    let appt = app
        .post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": at("UTC", day, 18, 0), "kind": "session", "client_ids": [a.id, b.id]}),
        )
        .await
        .expect(201);
    assert_eq!(
        appt["clients"].as_array().unwrap().len(),
        2,
        "a couple, outside published hours"
    );
    let id = appt["id"].as_str().unwrap();
    let add = |who: uuid::Uuid| {
        app.post(
            format!("/api/v1/appointments/{id}/participants"),
            t.token(),
            json!({"client_id": who}),
        )
    };
    add(c.id).await.expect(200);
    add(d.id).await.expect_problem(409, "appointment_full");
    add(a.id).await.expect_problem(409, "already_participant");
    // One client of a group cannot cancel or move it for the others.
    app.post(
        format!("/api/v1/appointments/{id}/cancel"),
        a.token(),
        json!({}),
    )
    .await
    .expect_problem(403, "group_appointment");
    app.post(
        format!("/api/v1/appointments/{id}/reschedule"),
        b.token(),
        json!({"starts_at": at("UTC", day, 19, 0)}),
    )
    .await
    .expect_problem(403, "group_appointment");
    // Each client sees it; a client cannot add people.
    for s in [&a, &b, &c] {
        app.get(&format!("/api/v1/appointments/{id}"), s.token())
            .await
            .expect(200);
    }
    app.post(
        &format!("/api/v1/appointments/{id}/participants"),
        a.token(),
        json!({"client_id": d.id}),
    )
    .await
    .expect_problem(403, "forbidden");
    // A client in it cannot be booked elsewhere at the same time, even by another of their
    // therapists (who is not told why).
    let t2 = therapist_with_hours(&app, "UTC", json!({})).await;
    app.relate(&t2, &c).await;
    app.post(
        "/api/v1/appointments",
        t2.token(),
        json!({"starts_at": at("UTC", day, 18, 15), "kind": "session", "client_ids": [c.id]}),
    )
    .await
    .expect_problem(409, "client_unavailable");
    // Remove one; the last one cannot be removed.
    let r = app
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/appointments/{id}/participants/{}", c.id),
            t.token(),
            None,
        )
        .await
        .expect(200);
    assert_eq!(r["clients"].as_array().unwrap().len(), 2);
    app.get(&format!("/api/v1/appointments/{id}"), c.token())
        .await
        .expect_problem(404, "not_found");
    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/appointments/{id}/participants/{}", b.id),
        t.token(),
        None,
    )
    .await
    .expect(200);
    app.send(
        reqwest::Method::DELETE,
        &format!("/api/v1/appointments/{id}/participants/{}", a.id),
        t.token(),
        None,
    )
    .await
    .expect_problem(409, "last_client");
    // Bad client lists.
    app.post(
        "/api/v1/appointments",
        t.token(),
        json!({"starts_at": at("UTC", day, 20, 0), "kind": "session", "client_ids": [a.id, b.id, c.id, d.id]}),
    )
    .await
    .expect_problem(422, "validation_failed");
    app.post(
        "/api/v1/appointments",
        t.token(),
        json!({"starts_at": at("UTC", day, 20, 0), "kind": "session", "client_ids": [t2.id]}),
    )
    .await
    .expect_problem(409, "client_unavailable");
    app.post(
        "/api/v1/appointments",
        t.token(),
        json!({"starts_at": at("UTC", day, 20, 7), "kind": "session", "client_ids": [a.id]}),
    )
    .await
    .expect_problem(422, "misaligned_start");
}

async fn weekly_series_all_or_nothing_and_best_effort(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "Europe/London", json!({})).await;
    let c = app.client("Fi").await;
    let other = app.client("Gil").await;
    app.relate(&t, &c).await;
    app.relate(&t, &other).await;
    let day = day_ahead("Europe/London", 3);
    // Occurrence 3 (two weeks on) is already taken by another client.
    let clash_day = day.checked_add(14.days()).unwrap();
    app.post(
        "/api/v1/appointments",
        t.token(),
        json!({"starts_at": at("Europe/London", clash_day, 10, 0), "kind": "session", "client_ids": [other.id]}),
    )
    .await
    .expect(201);
    let series = |all: bool| {
        app.post(
            "/api/v1/appointments/series",
            t.token(),
            json!({"starts_at": at("Europe/London", day, 10, 0), "kind": "session",
                   "client_ids": [c.id], "occurrences": 4, "all_or_nothing": all}),
        )
    };
    let b = series(true).await.expect_problem(409, "series_conflict");
    assert_eq!(b["errors"].as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/api/v1/appointments", c.token()).await.expect(200)["total"],
        0,
        "all or nothing: nothing"
    );
    let r = series(false).await.expect(201);
    assert_eq!(r["created"].as_array().unwrap().len(), 3);
    assert_eq!(r["failed"].as_array().unwrap().len(), 1);
    assert_eq!(r["failed"][0]["code"], "slot_taken");
    assert_eq!(
        r["failed"][0]["starts_at"],
        at("Europe/London", clash_day, 10, 0)
    );
    // Every occurrence is at 10:00 London time, whatever the UTC offset.
    for a in r["created"].as_array().unwrap() {
        let local = a["starts_at"]
            .as_str()
            .unwrap()
            .parse::<Timestamp>()
            .unwrap()
            .to_zoned(TimeZone::get("Europe/London").unwrap());
        assert_eq!((local.hour(), local.minute()), (10, 0));
        assert_eq!(a["series_id"], r["series_id"]);
    }
    app.post(
        "/api/v1/appointments/series",
        c.token(),
        json!({"starts_at": at("UTC", day, 10, 0), "kind": "session", "client_ids": [c.id], "occurrences": 2}),
    )
    .await
    .expect_problem(403, "forbidden");
    app.post(
        "/api/v1/appointments/series",
        t.token(),
        json!({"starts_at": at("UTC", day, 10, 0), "kind": "session", "client_ids": [c.id], "occurrences": 99}),
    )
    .await
    .expect_problem(422, "validation_failed");
}

async fn calendar_files_and_feeds_are_valid_icalendar(backend: Backend) {
    use icalendar::{Calendar, CalendarComponent, Component as _};
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    let c = app.client("Hana").await;
    let day = day_ahead("UTC", 3);
    let mut ids = Vec::new();
    for h in [9, 11] {
        let r = app
            .post(
                "/api/v1/appointments",
                c.token(),
                json!({"therapist_id": t.id, "starts_at": at("UTC", day, h, 0), "kind": "session"}),
            )
            .await
            .expect(201);
        ids.push(r["id"].as_str().unwrap().to_owned());
    }
    app.post(
        &format!("/api/v1/appointments/{}/cancel", ids[1]),
        c.token(),
        json!({}),
    )
    .await
    .expect(200);

    let parse = |text: &str| -> Calendar {
        text.parse()
            .unwrap_or_else(|e| panic!("invalid iCalendar ({e}): {text}"))
    };
    let one = app
        .get(
            &format!("/api/v1/appointments/{}/calendar.ics", ids[0]),
            c.token(),
        )
        .await;
    assert_eq!(one.status, 200);
    assert!(
        one.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/calendar")
    );
    let cal = parse(&one.text);
    let events: Vec<_> = cal
        .components
        .iter()
        .filter_map(|c| match c {
            CalendarComponent::Event(e) => Some(e),
            _ => None,
        })
        .collect();
    assert_eq!(events.len(), 1);
    let e = events[0];
    assert_eq!(e.get_summary(), Some("Appointment"), "a neutral title");
    assert_eq!(e.get_uid(), Some(format!("{}@alcove", ids[0]).as_str()));
    let utc = |d: Option<icalendar::DatePerhapsTime>| match d {
        Some(icalendar::DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(dt))) => {
            dt.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        }
        other => panic!("not a UTC date-time: {other:?}"),
    };
    assert_eq!(utc(e.get_start()), at("UTC", day, 9, 0));
    assert_eq!(utc(e.get_end()), at("UTC", day, 9, 50));
    assert!(
        e.get_url()
            .unwrap()
            .ends_with(&format!("/#/appointments/{}", ids[0]))
    );
    // No health information, no names.
    for forbidden in ["Dr Hours", "Hana", "session", "therapy", "Therapy"] {
        assert!(!one.text.contains(forbidden), "{forbidden} in {}", one.text);
    }

    // The feed: created, listed with both events (one cancelled), revocable.
    let feed = app
        .post("/api/v1/me/calendar-feed", c.token(), json!({}))
        .await
        .expect(201);
    let url = feed["url"].as_str().unwrap().to_owned();
    let path = url.trim_start_matches(&app.base).to_owned();
    assert!(path.starts_with("/api/v1/calendar/") && path.ends_with(".ics"));
    let r = app.get(&path, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let cal = parse(&r.text);
    let statuses: Vec<String> = cal
        .components
        .iter()
        .filter_map(|c| match c {
            CalendarComponent::Event(e) => e.property_value("STATUS").map(str::to_owned),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, ["CONFIRMED", "CANCELLED"]);
    assert!(r.text.contains("REFRESH-INTERVAL"));
    // A new feed URL revokes the old one; deleting revokes it too.
    let feed2 = app
        .post("/api/v1/me/calendar-feed", c.token(), json!({}))
        .await
        .expect(201);
    app.get(&path, None).await.expect_problem(404, "not_found");
    let path2 = feed2["url"]
        .as_str()
        .unwrap()
        .trim_start_matches(&app.base)
        .to_owned();
    let r2 = app.get(&path2, None).await;
    assert_eq!(r2.status, 200, "the new feed URL works: {}", r2.text);
    app.send(
        reqwest::Method::DELETE,
        "/api/v1/me/calendar-feed",
        c.token(),
        None,
    )
    .await
    .expect(204);
    app.get(&path2, None).await.expect_problem(404, "not_found");
    app.get("/api/v1/calendar/alccal_guess.ics", None)
        .await
        .expect_problem(404, "not_found");
}

async fn outcomes_and_late_cancellations_are_recorded(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.min_notice = Duration::ZERO).await;
    let t = therapist_with_hours(&app, "UTC", json!({})).await;
    let c = app.client("Ida").await;
    app.relate(&t, &c).await;
    // An appointment starting in a few seconds (made by the therapist: no notice needed).
    let soon = crate::helpers::five_minute_mark_after(SignedDuration::from_secs(300));
    let r = app
        .post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": soon.to_string(), "kind": "session", "client_ids": [c.id]}),
        )
        .await
        .expect(201);
    let id = r["id"].as_str().unwrap().to_owned();
    // Not started yet: no outcome.
    app.post(
        &format!("/api/v1/appointments/{id}/no-show"),
        t.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "appointment_not_started");
    // A client cancelling within 24 hours is late.
    let r = app
        .post(
            &format!("/api/v1/appointments/{id}/cancel"),
            c.token(),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(r["late_cancellation"], true);
    // A therapist cancelling is never a late cancellation.
    let later = at("UTC", day_ahead("UTC", 1), 10, 0);
    let r = app
        .post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": later, "kind": "session", "client_ids": [c.id]}),
        )
        .await
        .expect(201);
    let id2 = r["id"].as_str().unwrap();
    let r = app
        .post(
            &format!("/api/v1/appointments/{id2}/cancel"),
            t.token(),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(r["late_cancellation"], false);
    // A past appointment (written directly, as time passing would) can be marked.
    let past = app.past_appointment(t.id, c.id).await;
    let r = app
        .post(
            &format!("/api/v1/appointments/{past}/no-show"),
            t.token(),
            json!({}),
        )
        .await
        .expect(200);
    assert_eq!(r["status"], "no_show");
    app.post(
        &format!("/api/v1/appointments/{past}/complete"),
        t.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "appointment_not_active");
    app.post(
        &format!("/api/v1/appointments/{past}/cancel"),
        t.token(),
        json!({}),
    )
    .await
    .expect_problem(409, "appointment_not_active");
    let h = app
        .get(&format!("/api/v1/appointments/{past}/history"), t.token())
        .await
        .expect(200);
    assert_eq!(h[1]["action"], "status_changed");
    assert_eq!(h[1]["details"]["to"], "no_show");
}

async fn concurrent_participant_changes_keep_the_limits(backend: Backend) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({})).await;
    let clients = app.fast_clients(8).await;
    for c in &clients {
        app.relate(&t, c).await;
    }
    let day = day_ahead("UTC", 6);
    let appt = app
        .post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": at("UTC", day, 18, 0), "kind": "session", "client_ids": [clients[0].id]}),
        )
        .await
        .expect(201);
    let id = appt["id"].as_str().unwrap().to_owned();
    // Seven adds at once to an appointment that has room for two more.
    let adds = clients[1..].iter().map(|c| {
        app.post(
            format!("/api/v1/appointments/{id}/participants"),
            t.token(),
            json!({"client_id": c.id}),
        )
    });
    let results = futures_util::future::join_all(adds).await;
    let ok = results.iter().filter(|r| r.status == 200).count();
    assert_eq!(ok, 2, "exactly two adds fit");
    for r in results.iter().filter(|r| r.status != 200) {
        r.expect_problem(409, "appointment_full");
    }
    let a = app
        .get(format!("/api/v1/appointments/{id}"), t.token())
        .await
        .expect(200);
    assert_eq!(a["clients"].as_array().unwrap().len(), 3);
    // Removing all three at once leaves at least one.
    let ids: Vec<String> = a["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect();
    let removes = ids.iter().map(|c| {
        app.send(
            reqwest::Method::DELETE,
            format!("/api/v1/appointments/{id}/participants/{c}"),
            t.token(),
            None,
        )
    });
    let results = futures_util::future::join_all(removes).await;
    assert_eq!(results.iter().filter(|r| r.status == 200).count(), 2);
    let a = app
        .get(format!("/api/v1/appointments/{id}"), t.token())
        .await
        .expect(200);
    assert_eq!(a["clients"].as_array().unwrap().len(), 1);
    // An add racing a cancel: either the add fails, or the added client is freed too.
    let extra = &clients[7];
    let (add, cancel) = tokio::join!(
        app.post(
            format!("/api/v1/appointments/{id}/participants"),
            t.token(),
            json!({"client_id": extra.id})
        ),
        app.post(
            format!("/api/v1/appointments/{id}/cancel"),
            t.token(),
            json!({})
        ),
    );
    cancel.expect(200);
    assert!(add.status == 200 || add.status == 409, "{}", add.text);
    // Whatever happened, nobody's time is still held by the cancelled appointment.
    let rebook = app
        .post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": at("UTC", day, 18, 0), "kind": "session", "client_ids": [extra.id]}),
        )
        .await;
    rebook.expect(201);
}

/// The parts of a refusal a therapist could compare (not the request id).
fn refusal(body: &Value) -> Value {
    json!({"status": body["status"], "code": body["code"], "detail": body["detail"], "errors": body["errors"]})
}

async fn a_therapist_books_only_their_own_clients_and_never_learns_why_one_is_refused(
    backend: Backend,
) {
    let app = spawn_app(backend).await;
    let t = therapist_with_hours(&app, "UTC", json!({"slot_step_minutes": 60})).await;
    let stranger = app.client("Stranger").await;
    let invited = app.client("Invited").await;
    let booker = app.client("Booker").await;
    let day = day_ahead("UTC", 10);
    let book = |clients: Vec<uuid::Uuid>, hh: i8| {
        app.post(
            "/api/v1/appointments",
            t.token(),
            json!({"starts_at": at("UTC", day, hh, 0), "kind": "session", "client_ids": clients}),
        )
    };

    // Someone who never booked with the therapist, nor accepted an invitation, cannot be
    // booked; neither can an account that does not exist: the same answer.
    let unrelated = refusal(
        &book(vec![stranger.id], 18)
            .await
            .expect_problem(409, "client_unavailable"),
    );
    let unknown = refusal(
        &book(vec![uuid::Uuid::new_v4()], 18)
            .await
            .expect_problem(409, "client_unavailable"),
    );
    assert_eq!(unrelated, unknown);

    // An accepted invitation makes a client; the code works once, for clients only.
    let code = app
        .post("/api/v1/invitations", t.token(), json!({}))
        .await
        .expect(201)["code"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post("/api/v1/invitations", invited.token(), json!({}))
        .await
        .expect_problem(403, "forbidden");
    app.post(
        "/api/v1/invitations/accept",
        t.token(),
        json!({"code": code}),
    )
    .await
    .expect_problem(403, "forbidden");
    let accepted = app
        .post(
            "/api/v1/invitations/accept",
            invited.token(),
            json!({"code": code.to_uppercase().replace('-', " ")}),
        )
        .await
        .expect(200);
    assert_eq!(accepted["therapist_id"], t.id.to_string());
    app.post(
        "/api/v1/invitations/accept",
        stranger.token(),
        json!({"code": code}),
    )
    .await
    .expect_problem(404, "invitation_not_found");
    book(vec![invited.id], 18).await.expect(201);

    // A client's own booking makes them a client too.
    let slot = slots(&app, &t, day, "session").await[0].clone();
    app.post(
        "/api/v1/appointments",
        booker.token(),
        json!({"therapist_id": t.id, "starts_at": slot, "kind": "session"}),
    )
    .await
    .expect(201);
    book(vec![booker.id], 13).await.expect(201);
    let mine = app
        .get("/api/v1/therapists/me/clients", t.token())
        .await
        .expect(200);
    let ids: Vec<&str> = mine
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&invited.id.to_string().as_str()));
    assert!(ids.contains(&booker.id.to_string().as_str()));
    assert!(!ids.contains(&stranger.id.to_string().as_str()));
    app.get("/api/v1/therapists/me/clients", invited.token())
        .await
        .expect_problem(403, "forbidden");

    // The invited client also sees another therapist, at 21:00. Booking them then gets the
    // very answer a stranger gets: the therapist cannot tell "busy with someone else".
    let t2 = therapist_with_hours(&app, "UTC", json!({})).await;
    app.relate(&t2, &invited).await;
    app.post(
        "/api/v1/appointments",
        t2.token(),
        json!({"starts_at": at("UTC", day, 21, 0), "kind": "session", "client_ids": [invited.id]}),
    )
    .await
    .expect(201);
    let busy = refusal(
        &book(vec![invited.id], 21)
            .await
            .expect_problem(409, "client_unavailable"),
    );
    assert_eq!(
        busy, unrelated,
        "busy elsewhere looks like any other refusal"
    );

    // The same holds week by week in a series, and for a stranger every week is refused in
    // the same words.
    let series = |who: uuid::Uuid, all: bool| {
        app.post(
            "/api/v1/appointments/series",
            t.token(),
            json!({"starts_at": at("UTC", day.checked_sub(7.days()).unwrap(), 21, 0), "kind": "session",
                   "client_ids": [who], "occurrences": 3, "all_or_nothing": all}),
        )
    };
    let s = series(invited.id, true)
        .await
        .expect_problem(409, "series_conflict");
    assert_eq!(s["errors"].as_array().unwrap().len(), 1);
    let busy_detail = s["errors"][0]["message"].clone();
    assert_eq!(busy_detail, unrelated["detail"]);
    let s = series(stranger.id, true)
        .await
        .expect_problem(409, "series_conflict");
    let failures = s["errors"].as_array().unwrap();
    assert_eq!(
        failures.len(),
        3,
        "every week, not a refusal of the whole request"
    );
    for f in failures {
        assert_eq!(f["message"], busy_detail);
    }
    let r = series(invited.id, false).await.expect(201);
    assert_eq!(r["created"].as_array().unwrap().len(), 2);
    assert_eq!(r["failed"].as_array().unwrap().len(), 1);
    assert_eq!(r["failed"][0]["code"], "client_unavailable");
    assert_eq!(r["failed"][0]["detail"], busy_detail);

    // Adding someone to a group session follows the same rule.
    let group = book(vec![booker.id], 15).await.expect(201);
    let gid = group["id"].as_str().unwrap();
    let add = |who: uuid::Uuid| {
        app.post(
            format!("/api/v1/appointments/{gid}/participants"),
            t.token(),
            json!({"client_id": who}),
        )
    };
    let a = refusal(
        &add(stranger.id)
            .await
            .expect_problem(409, "client_unavailable"),
    );
    let b = refusal(
        &add(uuid::Uuid::new_v4())
            .await
            .expect_problem(409, "client_unavailable"),
    );
    assert_eq!(a, b);
    add(invited.id).await.expect(200);
}

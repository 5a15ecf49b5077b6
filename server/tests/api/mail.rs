//! Outgoing mail (order 11) against a real SMTP server on loopback: a small sink of the
//! test's own that speaks the protocol over TCP, and can refuse, hang or go away.
//!
//! - The transport: messages are neutral, carry their calendar file, refusals are told
//!   apart, and a bad SMTP configuration stops the start naming the option.
//! - The outbox: a booking confirms to every participant; a reminder goes once at its lead
//!   time (also with two nodes on one PostgreSQL); cancelling drops it, rescheduling moves
//!   it and tells everyone; an outage (with a SIGKILL in one variant) delays messages but
//!   loses and duplicates none; and no message holds a token or a word of health.

use crate::smtp_sink::{Mail, Mode, SmtpSink};
use crate::{
    cluster::Cluster,
    helpers::{Api, Backend, Session, TestApp, five_minute_mark_after, spawn_app_with},
    on_both_backends,
    process::ServerProcess,
};
use alcove::{
    domain::Role,
    mail::{AppointmentMail, MailError, MailKind, Mailer},
};
use jiff::{SignedDuration, Timestamp};
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

on_both_backends!(
    a_booking_confirms_to_everyone_and_each_reminder_goes_once_at_its_time,
    cancelling_drops_the_reminders_and_rescheduling_moves_them_telling_everyone,
    an_outage_of_the_mail_server_delays_messages_but_loses_and_repeats_none,
    reminders_can_be_switched_off_and_settings_are_checked,
);

fn confirmation() -> AppointmentMail {
    AppointmentMail {
        kind: MailKind::Confirmation,
        to_name: "Casey Marsh".into(),
        to_email: "casey@example.org".into(),
        with: vec!["Dr Tess Ward".into()],
        starts_at: "2026-12-08T09:00:00Z".parse().unwrap(),
        ends_at: "2026-12-08T09:50:00Z".parse().unwrap(),
        tz: jiff::tz::TimeZone::get("Europe/Berlin").unwrap(),
        link: "http://127.0.0.1:8080/#/appointments".into(),
        ics: Some(
            "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//Alcove//EN\r\nEND:VCALENDAR\r\n".into(),
        ),
        lang: alcove::mail::Lang::En,
    }
}

#[tokio::test]
async fn a_confirmation_crosses_a_real_smtp_conversation_with_its_calendar_file() {
    let sink = SmtpSink::start(None).await;
    let mailer = Mailer::new(
        &sink.url(),
        "Alcove <no-reply@example.org>",
        Duration::from_secs(5),
    )
    .unwrap();
    let m = confirmation();
    mailer
        .send(m.message(mailer.from(), None).unwrap())
        .await
        .unwrap();
    let got = sink.received.lock().await.clone();
    assert_eq!(got.len(), 1);
    let r = &got[0];
    assert_eq!(r.from, "<no-reply@example.org>");
    assert_eq!(r.to, vec!["<casey@example.org>".to_owned()]);
    assert!(
        r.data
            .contains("Subject: Your appointment on Tue 8 Dec at 10:00"),
        "{}",
        r.data
    );
    assert!(
        r.data.contains("multipart/mixed") && r.data.contains("multipart/alternative"),
        "{}",
        r.data
    );
    assert!(
        r.data.contains("text/plain") && r.data.contains("text/html"),
        "{}",
        r.data
    );
    assert!(
        r.data.contains("text/calendar") && r.data.contains("appointment.ics"),
        "{}",
        r.data
    );
    let lower = r.data.to_lowercase();
    assert!(!lower.contains("therap"), "{}", r.data);
}

#[tokio::test]
async fn refusals_for_now_for_good_and_no_server_are_told_apart() {
    let later = SmtpSink::start(Some("451 4.3.0 try again later")).await;
    let never = SmtpSink::start(Some("550 5.7.1 refused")).await;
    // A 5xx about the server rather than the message (here, its credentials): not for
    // good, since dropping every message for a misconfiguration would lose them all.
    let misconfigured = SmtpSink::start(Some("535 5.7.8 authentication failed")).await;
    for (url, transient) in [
        (later.url(), true),
        (never.url(), false),
        (misconfigured.url(), true),
    ] {
        let mailer = Mailer::new(&url, "no-reply@example.org", Duration::from_secs(5)).unwrap();
        let e = mailer
            .send(confirmation().message(mailer.from(), None).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            matches!(e, MailError::Transient(_)),
            transient,
            "{url}: {e}"
        );
        assert!(!e.to_string().contains("casey"), "{e}");
    }
    // A server that greets and then says nothing: for now, after the timeout.
    let hangs = SmtpSink::start_with(Mode::Hang).await;
    let mailer = Mailer::new(&hangs.url(), "no-reply@example.org", Duration::from_secs(1)).unwrap();
    let e = mailer
        .send(confirmation().message(mailer.from(), None).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, MailError::Transient(_)), "{e}");
    // Nobody listening: for now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "no-reply@example.org",
        Duration::from_secs(2),
    )
    .unwrap();
    let e = mailer
        .send(confirmation().message(mailer.from(), None).unwrap())
        .await
        .unwrap_err();
    assert!(matches!(e, MailError::Transient(_)), "{e}");
}

#[test]
fn a_bad_smtp_configuration_stops_the_start_naming_the_option() {
    let bin = env!("CARGO_BIN_EXE_alcove");
    let dir = tempfile::tempdir().unwrap();
    let check = |env: &[(&str, &str)]| {
        let out = std::process::Command::new(bin)
            .args(["config", "check"])
            .current_dir(dir.path())
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, out) = check(&[("ALCOVE_SMTP_URL", "http://user:s3cret@mail.example.org")]);
    assert!(
        !ok && out.contains("ALCOVE_SMTP_URL") && !out.contains("s3cret"),
        "{out}"
    );
    let (ok, out) = check(&[("ALCOVE_SMTP_URL", "smtp://127.0.0.1:2525")]);
    assert!(!ok && out.contains("ALCOVE_MAIL_FROM"), "{out}");
    let (ok, out) = check(&[("ALCOVE_REMINDERS", "24h,soon")]);
    assert!(!ok && out.contains("ALCOVE_REMINDERS"), "{out}");
    let (ok, out) = check(&[
        (
            "ALCOVE_SMTP_URL",
            "smtps://user:s3cret@mail.example.org:465",
        ),
        ("ALCOVE_MAIL_FROM", "Alcove <no-reply@example.org>"),
        ("ALCOVE_REMINDERS", "48h,2h"),
    ]);
    assert!(ok, "{out}");
    assert!(
        out.contains("smtps://***@mail.example.org:465") && !out.contains("s3cret"),
        "{out}"
    );
    assert!(out.contains("reminders = 2days,2h"), "{out}");
}

// ---------------------------------------------------------------------------------------
// The outbox.

/// An appointment start (on a 5-minute mark, over a minute ahead) and the reminder lead
/// time that makes its reminder due `ahead` from now.
fn start_and_lead(ahead: Duration) -> (Timestamp, Duration) {
    // At least a minute beyond `ahead`, so the lead time is never under the 1m minimum.
    let start = five_minute_mark_after(
        SignedDuration::try_from(ahead).unwrap() + SignedDuration::from_secs(65),
    );
    let until = start.duration_since(Timestamp::now());
    let lead = until - SignedDuration::try_from(ahead).unwrap();
    (start, Duration::from_secs(lead.as_secs() as u64))
}

/// The settings of a deployment that sends mail through `sink`.
fn mail_env(sink: &SmtpSink, lead: Duration) -> Vec<(&'static str, String)> {
    vec![
        ("ALCOVE_SMTP_URL", sink.url()),
        ("ALCOVE_MAIL_FROM", "Alcove <no-reply@alcove.test>".into()),
        ("ALCOVE_REMINDERS", format!("{}s", lead.as_secs())),
        ("ALCOVE_SMTP_TIMEOUT", "2s".into()),
    ]
}

async fn mail_app(backend: Backend, sink: &SmtpSink, lead: Duration) -> TestApp {
    spawn_app_with(backend, |c| {
        c.smtp_url = Some(sink.url().into());
        c.mail_from = Some("Alcove <no-reply@alcove.test>".into());
        c.reminders = vec![lead];
        c.smtp_timeout = Duration::from_secs(2);
    })
    .await
}

/// A therapist with a profile full of what mail must never say, in New York.
async fn therapist(app: &impl Api, t: &Session) {
    app.put(
        "/api/v1/therapists/me",
        t.token(),
        json!({"display_name": "Dr Tess Ward",
               "bio": "Integrative psychotherapist for grief and trauma.",
               "specialisations": ["grief", "trauma"], "modalities": ["emdr"],
               "languages": ["en"], "time_zone": "America/New_York"}),
    )
    .await
    .expect(200);
}

async fn patch(app: &impl Api, who: &Session, body: Value) -> crate::helpers::Resp {
    app.send(
        Method::PATCH,
        "/api/v1/me/settings",
        who.token(),
        Some(body),
    )
    .await
}

/// The therapist books the client at `start`.
async fn book(app: &impl Api, t: &Session, c: &Session, start: Timestamp) -> Uuid {
    app.relate(t, c).await;
    app.post(
        "/api/v1/appointments",
        t.token(),
        json!({"starts_at": start.to_string(), "kind": "session", "client_ids": [c.id]}),
    )
    .await
    .expect(201)["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Order 11's sentinel: no message says a word of health or carries a token, and its only
/// link is the appointment's page.
fn assert_neutral(mails: &[Mail], secrets: &[&str], base: &str) {
    for m in mails {
        let all = format!("{}\n{}\n{}", m.subject, m.text, m.html);
        let lower = all.to_lowercase();
        for word in [
            "therap",
            "terap",
            "psychotherap",
            "grief",
            "trauma",
            "emdr",
            "token",
        ] {
            assert!(!lower.contains(word), "{word:?} in a message: {all}");
        }
        for s in secrets {
            assert!(!all.contains(s), "a secret in a message: {all}");
        }
        let links: Vec<&str> = m
            .text
            .split_whitespace()
            .filter(|w| w.starts_with("http"))
            .collect();
        assert_eq!(links.len(), 1, "{}", m.text);
        let rest = links[0]
            .strip_prefix(&format!("{base}/#/appointments/"))
            .unwrap_or_else(|| panic!("not the appointment page: {}", links[0]));
        assert!(rest.parse::<Uuid>().is_ok(), "{}", links[0]);
        assert!(!links[0].contains('?'), "{}", links[0]);
    }
}

fn count(mails: &[Mail], to: &Session, subject_starts: &str) -> usize {
    mails
        .iter()
        .filter(|m| m.is(&to.email, subject_starts))
        .count()
}

/// "Di., 8. Dez. um 10:00" of `t` in `tz`.
fn when_de(t: Timestamp, tz: &str) -> String {
    alcove::mail::when_in(
        alcove::mail::Lang::De,
        t,
        &jiff::tz::TimeZone::get(tz).unwrap(),
    )
}

/// "Tue 8 Dec at 10:00" of `t` in `tz`.
fn when(t: Timestamp, tz: &str) -> String {
    alcove::mail::when(t, &jiff::tz::TimeZone::get(tz).unwrap())
}

async fn history(app: &impl Api, who: &Session, id: Uuid) -> Vec<Value> {
    app.get(&format!("/api/v1/appointments/{id}/history"), who.token())
        .await
        .expect(200)
        .as_array()
        .unwrap()
        .clone()
}

async fn a_booking_confirms_to_everyone_and_each_reminder_goes_once_at_its_time(backend: Backend) {
    let sink = SmtpSink::start(None).await;
    let (start, lead) = start_and_lead(Duration::from_secs(15));
    let app = mail_app(backend, &sink, lead).await;
    let t = app.user_with_role("Dr Tess Ward", Role::Therapist).await;
    therapist(&app, &t).await;
    let c = app.client("Casey Marsh").await;
    // The client reads German, in Berlin; the therapist English, in New York.
    let set = patch(
        &app,
        &c,
        json!({"time_zone": "Europe/Berlin", "language": "de"}),
    )
    .await
    .expect(200);
    assert_eq!(set["time_zone"], "Europe/Berlin");
    assert_eq!(set["language"], "de");
    assert_eq!(set["mail_enabled"], true);
    let id = book(&app, &t, &c, start).await;

    // One confirmation each, at once, in each one's time zone, with the calendar file.
    let mails = sink.wait_for(2, Duration::from_secs(15)).await;
    let to_client = mails
        .iter()
        .find(|m| m.to == c.email)
        .expect("the client's");
    let to_therapist = mails
        .iter()
        .find(|m| m.to == t.email)
        .expect("the therapist's");
    assert_eq!(
        to_client.subject,
        format!("Ihr Termin am {}", when_de(start, "Europe/Berlin"))
    );
    assert_eq!(
        to_therapist.subject,
        format!("Your appointment on {}", when(start, "America/New_York"))
    );
    assert!(
        to_client.text.contains("Hallo Casey Marsh"),
        "{}",
        to_client.text
    );
    assert!(
        to_client.text.contains("mit Dr Tess Ward"),
        "{}",
        to_client.text
    );
    assert!(
        to_therapist.text.contains("with Casey Marsh"),
        "{}",
        to_therapist.text
    );
    for m in [to_client, to_therapist] {
        let ics = m.ics.as_deref().expect("a calendar file");
        let cal: icalendar::Calendar = ics.parse().expect("a valid iCalendar file");
        let events: Vec<_> = cal.components.iter().filter_map(|c| c.as_event()).collect();
        assert_eq!(events.len(), 1, "{ics}");
        use icalendar::Component as _;
        assert_eq!(events[0].get_uid(), Some(format!("{id}@alcove").as_str()));
        let dtstart = events[0].get_start().expect("DTSTART");
        let expected = icalendar::DatePerhapsTime::DateTime(icalendar::CalendarDateTime::Utc(
            chrono::DateTime::from_timestamp(start.as_second(), 0).unwrap(),
        ));
        assert_eq!(dtstart, expected, "{ics}");
        assert!(m.message_id.ends_with("@alcove.test"), "{}", m.message_id);
    }

    // The reminder, at its lead time, once each (several polls of the outbox later too).
    let mails = sink.wait_for(4, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = {
        let all = sink.mails().await;
        assert_eq!(all.len(), 4, "{mails:#?}");
        all
    };
    assert_eq!(count(&mails, &t, "Your appointment on"), 1);
    assert_eq!(count(&mails, &t, "Reminder: your appointment on"), 1);
    assert_eq!(count(&mails, &c, "Ihr Termin am"), 1);
    assert_eq!(count(&mails, &c, "Erinnerung: Ihr Termin am"), 1);
    let reminder = mails.iter().find(|m| m.is(&c.email, "Erinnerung")).unwrap();
    assert_eq!(
        reminder.subject,
        format!(
            "Erinnerung: Ihr Termin am {}",
            when_de(start, "Europe/Berlin")
        )
    );
    assert!(reminder.ics.is_none());
    let ids: std::collections::HashSet<_> = mails.iter().map(|m| &m.message_id).collect();
    assert_eq!(ids.len(), 4, "one Message-ID per message");

    // The record notes each reminder: when and to whom, nothing of what it said.
    let h = history(&app, &t, id).await;
    let sent: Vec<&Value> = h
        .iter()
        .filter(|e| e["action"] == "reminder_sent")
        .collect();
    assert_eq!(sent.len(), 2, "{h:#?}");
    let mut to: Vec<String> = sent
        .iter()
        .map(|e| e["details"]["participant"].as_str().unwrap().to_owned())
        .collect();
    to.sort();
    let mut both = vec![t.id.to_string(), c.id.to_string()];
    both.sort();
    assert_eq!(to, both);
    for e in sent {
        assert_eq!(e["details"]["lead_seconds"], lead.as_secs());
        assert!(e["at"].is_string());
    }
    let rows = app.store().outbox_of(id).await.unwrap();
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter().all(|r| r.sent_at.is_some() && r.attempts == 1),
        "{rows:#?}"
    );

    assert_neutral(
        &mails,
        &[&t.access, &t.refresh, &c.access, &c.refresh],
        &app.base,
    );
    let ready = app.get("/readyz", None).await.expect(200);
    assert_eq!(ready["mail"], "ok");
}

async fn cancelling_drops_the_reminders_and_rescheduling_moves_them_telling_everyone(
    backend: Backend,
) {
    let sink = SmtpSink::start(None).await;
    let (start, lead) = start_and_lead(Duration::from_secs(20));
    let app = mail_app(backend, &sink, lead).await;
    let t = app.user_with_role("Dr Tess Ward", Role::Therapist).await;
    therapist(&app, &t).await;
    let c = app.client("Casey Marsh").await;
    let t2 = app.user_with_role("Dr Ana Ruiz", Role::Therapist).await;
    let c2 = app.client("Robin Vale").await;

    // Booked five minutes later than `start` (its reminder far off), then moved to `start`.
    let later = start + SignedDuration::from_mins(5);
    let moved = book(&app, &t, &c, later).await;
    // Booked at `start`, then cancelled by the client: its reminder must never go.
    let cancelled = book(&app, &t2, &c2, start).await;
    sink.wait_for(4, Duration::from_secs(15)).await;
    app.post(
        &format!("/api/v1/appointments/{moved}/reschedule"),
        t.token(),
        json!({"starts_at": start.to_string()}),
    )
    .await
    .expect(200);
    app.post(
        &format!("/api/v1/appointments/{cancelled}/cancel"),
        c2.token(),
        json!({"reason": "something came up"}),
    )
    .await
    .expect(200);

    // Notices at once, to every participant (the one who acted too).
    let mails = sink.wait_for(8, Duration::from_secs(15)).await;
    for who in [&t, &c] {
        let notice = mails
            .iter()
            .find(|m| m.is(&who.email, "Your appointment has moved to"))
            .unwrap_or_else(|| panic!("a notice of the move: {mails:#?}"));
        let tz = if who.id == t.id {
            "America/New_York"
        } else {
            "UTC"
        };
        assert!(
            notice.subject.ends_with(&when(start, tz)),
            "{}",
            notice.subject
        );
        assert!(
            notice
                .text
                .contains(&format!("that was on {}", when(later, tz))),
            "{}",
            notice.text
        );
    }
    for who in [&t2, &c2] {
        assert_eq!(count(&mails, who, "Your appointment on"), 2, "{mails:#?}");
    }
    assert!(
        mails
            .iter()
            .any(|m| m.is(&c2.email, "Your appointment on") && m.subject.ends_with("is cancelled"))
    );

    // The moved appointment's reminders go at the new time, once each; the cancelled
    // one's never do (nor the moved one's old ones).
    sink.wait_for(10, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = sink.mails().await;
    assert_eq!(mails.len(), 10, "{mails:#?}");
    for who in [&t, &c] {
        assert_eq!(count(&mails, who, "Reminder: your appointment on"), 1);
    }
    for who in [&t2, &c2] {
        assert_eq!(count(&mails, who, "Reminder"), 0);
    }
    let rows = app.store().outbox_of(cancelled).await.unwrap();
    let dropped: Vec<_> = rows
        .iter()
        .filter(|r| r.kind == "reminder")
        .map(|r| r.dropped_reason.as_deref())
        .collect();
    assert_eq!(dropped, [Some("cancelled"), Some("cancelled")]);
    let rows = app.store().outbox_of(moved).await.unwrap();
    let reminders: Vec<_> = rows.iter().filter(|r| r.kind == "reminder").collect();
    // The old reminders were for a start more than a lead time ahead: queued, then moved.
    assert_eq!(reminders.len(), 4, "{rows:#?}");
    assert_eq!(
        reminders
            .iter()
            .filter(|r| r.dropped_reason.as_deref() == Some("moved"))
            .count(),
        2
    );
    assert_eq!(reminders.iter().filter(|r| r.sent_at.is_some()).count(), 2);
    assert_neutral(
        &mails,
        &[&t.access, &c.access, &t2.access, &c2.access],
        &app.base,
    );
}

async fn an_outage_of_the_mail_server_delays_messages_but_loses_and_repeats_none(backend: Backend) {
    let sink = SmtpSink::start(None).await;
    sink.down();
    let (start, lead) = start_and_lead(Duration::from_secs(20));
    let app = mail_app(backend, &sink, lead).await;
    let t = app.user_with_role("Dr Tess Ward", Role::Therapist).await;
    let c = app.client("Casey Marsh").await;
    let id = book(&app, &t, &c, start).await;

    // Nothing listens: the confirmations are tried, wait, and the server says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = app.store().outbox_of(id).await.unwrap();
        let tried = rows
            .iter()
            .filter(|r| r.kind == "confirmation" && r.attempts >= 2)
            .count();
        if tried == 2 {
            assert!(
                rows.iter()
                    .all(|r| r.sent_at.is_none() && r.dropped_at.is_none())
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = app.get("/readyz", None).await.expect(200);
    assert_eq!(ready["mail"], "degraded", "{ready}");

    // Back: everything arrives, once.
    sink.up().await;
    let mails = sink.wait_for(4, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails_now = sink.mails().await;
    assert_eq!(mails_now.len(), 4, "{mails:#?}");
    for who in [&t, &c] {
        assert_eq!(count(&mails_now, who, "Your appointment on"), 1);
        assert_eq!(count(&mails_now, who, "Reminder"), 1);
    }
    let ready = app.get("/readyz", None).await.expect(200);
    assert_eq!(ready["mail"], "ok", "{ready}");
    assert_neutral(&mails_now, &[&t.access, &c.access], &app.base);
}

async fn reminders_can_be_switched_off_and_settings_are_checked(backend: Backend) {
    let sink = SmtpSink::start(None).await;
    let (start, lead) = start_and_lead(Duration::from_secs(15));
    let app = mail_app(backend, &sink, lead).await;
    let t = app.user_with_role("Dr Tess Ward", Role::Therapist).await;
    let c = app.client("Casey Marsh").await;
    let before = app.get("/api/v1/me/settings", c.token()).await.expect(200);
    assert_eq!(before["email_reminders"], true);
    assert_eq!(before["time_zone"], Value::Null);
    assert_eq!(before["reminder_lead_seconds"], json!([lead.as_secs()]));
    // Bad input: a clear error, nothing changed.
    let bad = patch(&app, &c, json!({"time_zone": "Mars/Olympus"}))
        .await
        .expect(422);
    assert!(bad.to_string().contains("time_zone"), "{bad}");
    patch(&app, &c, json!({"email_reminders": "no"}))
        .await
        .expect(422);
    patch(&app, &c, json!({"colour": "blue"})).await.expect(422);
    let bad = patch(&app, &c, json!({"language": "fr"})).await.expect(422);
    assert!(bad.to_string().contains("language"), "{bad}");
    patch(&app, &c, json!([true])).await.expect(422);
    assert_eq!(
        app.get("/api/v1/me/settings", c.token()).await.expect(200),
        before
    );
    app.get("/api/v1/me/settings", None).await.expect(401);

    let id = book(&app, &t, &c, start).await;
    sink.wait_for(2, Duration::from_secs(15)).await;
    // Off after booking: the reminder already queued is dropped, not sent.
    let off = patch(&app, &c, json!({"email_reminders": false}))
        .await
        .expect(200);
    assert_eq!(off["email_reminders"], false);
    let mails = sink.wait_for(3, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mails = {
        let now = sink.mails().await;
        assert_eq!(now.len(), 3, "{mails:#?}");
        now
    };
    assert_eq!(count(&mails, &t, "Reminder"), 1);
    assert_eq!(count(&mails, &c, "Reminder"), 0);
    let rows = app.store().outbox_of(id).await.unwrap();
    assert!(
        rows.iter().any(|r| r.user_id == c.id
            && r.kind == "reminder"
            && r.dropped_reason.as_deref() == Some("reminders_off")),
        "{rows:#?}"
    );
    let es = patch(&app, &c, json!({"language": "es"})).await.expect(200);
    assert_eq!(es["language"], "es");
    assert_eq!(
        es["email_reminders"], false,
        "a field left out stays as it was"
    );
    // The time zone can be cleared again.
    let cleared = patch(&app, &c, json!({"time_zone": null}))
        .await
        .expect(200);
    assert_eq!(cleared["time_zone"], Value::Null);
}

/// Two nodes on one PostgreSQL claim from one outbox: every message goes exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_send_each_confirmation_and_reminder_exactly_once() {
    let sink = SmtpSink::start(None).await;
    let (start, lead) = start_and_lead(Duration::from_secs(30));
    let env = mail_env(&sink, lead);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let cluster = Cluster::start(2, &env).await;
    let pairs = 4;
    let mut people = Vec::new();
    for i in 0..pairs {
        let node = &cluster.nodes[i % 2];
        let t = cluster
            .user_with_role(&format!("Dr Node {i}"), Role::Therapist)
            .await;
        let t = node.login(&t.email).await;
        let c = node.client(&format!("Client {i}")).await;
        book(node, &t, &c, start).await;
        people.push(t);
        people.push(c);
    }
    let expected = pairs * 2 * 2;
    sink.wait_for(expected, Duration::from_secs(40)).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mails = sink.mails().await;
    assert_eq!(mails.len(), expected, "{mails:#?}");
    for who in &people {
        assert_eq!(
            count(&mails, who, "Your appointment on"),
            1,
            "{}",
            who.email
        );
        assert_eq!(count(&mails, who, "Reminder"), 1, "{}", who.email);
    }
    let ids: std::collections::HashSet<_> = mails.iter().map(|m| &m.message_id).collect();
    assert_eq!(ids.len(), expected);
    let secrets: Vec<&str> = people.iter().map(|p| p.access.as_str()).collect();
    assert_neutral(&mails, &secrets, "http://alcove.test");
    for node in &cluster.nodes {
        let sent = node.log_text().matches("mail: sent").count();
        eprintln!("{} sent {sent} of {expected}", node.name);
    }
}

/// An outage, and the node killed with SIGKILL in it: a fresh start sends what waited,
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_during_an_outage_leaves_its_messages_to_the_next_start() {
    let sink = SmtpSink::start(None).await;
    sink.down();
    let (start, lead) = start_and_lead(Duration::from_secs(30));
    let env = mail_env(&sink, lead);
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let mut server = ServerProcess::start(Backend::Postgres, &env).await;
    let t = server.user_with_role("Dr Tess Ward", Role::Therapist).await;
    let c = server.client("Casey Marsh").await;
    let id = book(&server, &t, &c, start).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let rows = server.db.outbox_of(id).await.unwrap();
        if rows.iter().filter(|r| r.attempts >= 1).count() == 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{rows:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let ready = server.get("/readyz", None).await.expect(200);
    assert_eq!(ready["mail"], "degraded", "{ready}");
    server.kill9();
    sink.up().await;
    assert!(sink.mails().await.is_empty());
    server.restart();
    let mails = sink.wait_for(4, Duration::from_secs(60)).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let now = sink.mails().await;
    assert_eq!(now.len(), 4, "{mails:#?}");
    for who in [&t, &c] {
        assert_eq!(count(&now, who, "Your appointment on"), 1);
        assert_eq!(count(&now, who, "Reminder"), 1);
    }
    assert_neutral(&now, &[&t.access, &c.access], &server.base);
    // The log: failures and sends by id and kind, never an address.
    let log = server.log_text();
    assert!(log.contains("mail: not sent; retrying later"), "{log}");
    for who in [&t, &c] {
        assert!(!log.contains(&who.email), "an address in the log");
    }
}

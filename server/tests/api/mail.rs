//! Outgoing mail (order 11, first step): the SMTP transport speaks to a real SMTP server on
//! loopback (a small sink of the test's own that speaks the protocol over TCP), the
//! messages are neutral and carry their calendar file, refusals are told apart, and a bad
//! SMTP configuration stops the start naming the option.

use alcove::mail::{AppointmentMail, MailError, MailKind, Mailer};
use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    sync::Mutex,
};

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// An SMTP server on 127.0.0.1 that keeps what it is sent, or answers every message with
/// `refuse` (e.g. `451 try later`).
pub struct SmtpSink {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
}

impl SmtpSink {
    pub async fn start(refuse: Option<&'static str>) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let received = Arc::new(Mutex::new(Vec::new()));
        let kept = received.clone();
        tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let kept = kept.clone();
                tokio::spawn(async move {
                    let (r, mut w) = sock.into_split();
                    let mut lines = BufReader::new(r);
                    w.write_all(b"220 sink ESMTP\r\n").await.unwrap();
                    let (mut from, mut to) = (String::new(), Vec::new());
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let upper = line.to_ascii_uppercase();
                        let answer: String = if upper.starts_with("EHLO") {
                            "250-sink\r\n250 8BITMIME\r\n".into()
                        } else if upper.starts_with("HELO")
                            || upper.starts_with("RSET")
                            || upper.starts_with("NOOP")
                        {
                            "250 OK\r\n".into()
                        } else if upper.starts_with("MAIL FROM:") {
                            from = line[10..].trim().to_owned();
                            to.clear();
                            "250 OK\r\n".into()
                        } else if upper.starts_with("RCPT TO:") {
                            to.push(line[8..].trim().to_owned());
                            "250 OK\r\n".into()
                        } else if upper.starts_with("DATA") {
                            w.write_all(b"354 go on\r\n").await.unwrap();
                            let mut data = String::new();
                            loop {
                                line.clear();
                                if lines.read_line(&mut line).await.unwrap_or(0) == 0 {
                                    return;
                                }
                                if line == ".\r\n" {
                                    break;
                                }
                                data.push_str(&line);
                            }
                            match refuse {
                                Some(code) => format!("{code}\r\n"),
                                None => {
                                    kept.lock().await.push(Received {
                                        from: from.clone(),
                                        to: to.clone(),
                                        data,
                                    });
                                    "250 kept\r\n".into()
                                }
                            }
                        } else if upper.starts_with("QUIT") {
                            let _ = w.write_all(b"221 bye\r\n").await;
                            return;
                        } else {
                            "502 not implemented\r\n".into()
                        };
                        if w.write_all(answer.as_bytes()).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        SmtpSink { port, received }
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }
}

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
        .send(m.message(mailer.from()).unwrap())
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
    for (url, transient) in [(later.url(), true), (never.url(), false)] {
        let mailer = Mailer::new(&url, "no-reply@example.org", Duration::from_secs(5)).unwrap();
        let e = mailer
            .send(confirmation().message(mailer.from()).unwrap())
            .await
            .unwrap_err();
        assert_eq!(
            matches!(e, MailError::Transient(_)),
            transient,
            "{url}: {e}"
        );
        assert!(!e.to_string().contains("casey"), "{e}");
    }
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
        .send(confirmation().message(mailer.from()).unwrap())
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

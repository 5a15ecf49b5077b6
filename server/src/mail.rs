//! Outgoing mail (order 11): the SMTP transport (lettre, rustls) and the appointment
//! messages. Messages carry no health information and no token: a neutral subject, the
//! time in the recipient's time zone, the other person's display name in the body only,
//! and a link to the appointments page of the web client, which asks the person to sign in.
//!
//! This is the first step of order 11: the transport and the messages, checked at start
//! and tested against a real SMTP conversation. The outbox that sends them (with the
//! booking's transaction, retries, reminders) is the next.

use jiff::{Timestamp, tz::TimeZone};
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Attachment, Mailbox, MultiPart, header::ContentType},
};
use std::time::Duration;

/// Whether `url` is an SMTP URL the transport understands. Its error never repeats the
/// URL (it can hold a password).
pub fn check_url(url: &str) -> Result<(), String> {
    let scheme_ok = url.starts_with("smtp://") || url.starts_with("smtps://");
    if !scheme_ok {
        return Err(
            "must start with smtp:// (STARTTLS with ?tls=required, or plain on a local relay) or smtps:// (TLS from the start)"
                .into(),
        );
    }
    AsyncSmtpTransport::<Tokio1Executor>::from_url(url).map(|_| ()).map_err(|_| {
        "not an SMTP URL that can be used: write smtps://user:password@host:465, smtp://host:587?tls=required or smtp://127.0.0.1:2525 (percent-encode special characters of the user and password)"
            .to_owned()
    })
}

/// Whether `from` is a mailbox (`Alcove <no-reply@example.org>` or `no-reply@example.org`).
pub fn check_from(from: &str) -> Result<(), String> {
    from.parse::<Mailbox>().map(|_| ()).map_err(|_| {
        format!("{from:?} is not a mail address (write \"Alcove <no-reply@example.org>\")")
    })
}

/// The URL with its user and password hidden, for logs and `alcove config check`.
pub fn redacted(url: &str) -> String {
    let Some(start) = url.find("://").map(|i| i + 3) else {
        return "***".into();
    };
    let rest = &url[start..];
    // Up to the last `@` before the query: a password may hold a `/` a parser would misread.
    let query = rest.find('?').unwrap_or(rest.len());
    match rest[..query].rfind('@') {
        Some(at) => format!("{}***@{}", &url[..start], &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// Sends mail through the configured SMTP server.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer").finish_non_exhaustive()
    }
}

/// Why a message was not sent. Never holds an address or a body.
#[derive(Debug, thiserror::Error)]
pub enum MailError {
    /// The server refused for now (4xx), or could not be reached: try again later.
    #[error("the mail server is unavailable ({0})")]
    Transient(&'static str),
    /// The server refused for good (5xx): trying again will not help.
    #[error("the mail server refused the message ({0})")]
    Permanent(&'static str),
}

impl Mailer {
    /// The mailer of this configuration (`None`: no SMTP configured).
    pub fn new(url: &str, from: &str, timeout: Duration) -> anyhow::Result<Mailer> {
        check_url(url).map_err(|e| anyhow::anyhow!("ALCOVE_SMTP_URL: {e}"))?;
        let from = from
            .parse::<Mailbox>()
            .map_err(|_| anyhow::anyhow!("ALCOVE_MAIL_FROM: not a mail address"))?;
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)?
            .timeout(Some(timeout))
            .build();
        Ok(Mailer { transport, from })
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Send one message.
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(MailError::Permanent("5xx")),
            Err(e) if e.is_transient() => Err(MailError::Transient("4xx")),
            Err(e) if e.is_timeout() => Err(MailError::Transient("timed out")),
            Err(_) => Err(MailError::Transient("no connection")),
        }
    }
}

/// What an appointment message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// Booked (with the `.ics`).
    Confirmation,
    /// Before the start, at a lead time.
    Reminder,
    /// Moved; the previous start is given.
    Rescheduled {
        previous: Timestamp,
    },
    Cancelled,
}

/// One appointment message to one participant.
#[derive(Debug, Clone)]
pub struct AppointmentMail {
    pub kind: MailKind,
    pub to_name: String,
    pub to_email: String,
    /// The other side's display names (the therapist's, for a client).
    pub with: Vec<String>,
    pub starts_at: Timestamp,
    pub ends_at: Timestamp,
    /// The recipient's time zone.
    pub tz: TimeZone,
    /// The web client's appointments page (`https://…/#/appointments`): no token.
    pub link: String,
    /// The calendar file to attach (confirmations).
    pub ics: Option<String>,
}

/// "Tue 8 Dec at 10:00" in `tz`.
pub fn when(t: Timestamp, tz: &TimeZone) -> String {
    t.to_zoned(tz.clone())
        .strftime("%a %-d %b at %H:%M")
        .to_string()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl AppointmentMail {
    pub fn subject(&self) -> String {
        let at = when(self.starts_at, &self.tz);
        match self.kind {
            MailKind::Confirmation => format!("Your appointment on {at}"),
            MailKind::Reminder => format!("Reminder: your appointment on {at}"),
            MailKind::Rescheduled { .. } => format!("Your appointment has moved to {at}"),
            MailKind::Cancelled => format!("Your appointment on {at} is cancelled"),
        }
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let at = when(self.starts_at, &self.tz);
        let until = self
            .ends_at
            .to_zoned(self.tz.clone())
            .strftime("%H:%M")
            .to_string();
        let with = if self.with.is_empty() {
            String::new()
        } else {
            format!(" with {}", self.with.join(", "))
        };
        let tz = self.tz.iana_name().unwrap_or("UTC");
        let what = match self.kind {
            MailKind::Confirmation => format!(
                "Your appointment{with} is booked for {at} to {until} ({tz}). A calendar file is attached."
            ),
            MailKind::Reminder => {
                format!("A reminder: your appointment{with} is on {at} to {until} ({tz}).")
            }
            MailKind::Rescheduled { previous } => format!(
                "Your appointment{with} that was on {} has moved to {at} to {until} ({tz}).",
                when(previous, &self.tz)
            ),
            MailKind::Cancelled => {
                format!("Your appointment{with} on {at} to {until} ({tz}) is cancelled.")
            }
        };
        let act = match self.kind {
            MailKind::Cancelled => "You can see your appointments, and book another, here",
            _ => "To see it, or to join when it is time, sign in here",
        };
        format!(
            "Hello {},\n\n{what}\n\n{act}:\n{}\n\nThis message was sent by the booking service; please do not reply to it.\n",
            self.to_name, self.link
        )
    }

    /// The HTML body: the same words.
    pub fn html(&self) -> String {
        let paragraphs: Vec<String> = self
            .text()
            .split("\n\n")
            .map(|p| {
                let p = p.trim();
                if p == self.link {
                    format!("<p><a href=\"{0}\">{0}</a></p>", escape(p))
                } else if let Some((head, link)) = p.split_once(":\n") {
                    format!(
                        "<p>{}: <a href=\"{1}\">{1}</a></p>",
                        escape(head),
                        escape(link)
                    )
                } else {
                    format!("<p>{}</p>", escape(p).replace('\n', "<br>"))
                }
            })
            .collect();
        format!(
            "<!doctype html><html><body style=\"font-family: sans-serif; line-height: 1.5\">{}</body></html>",
            paragraphs.join("")
        )
    }

    /// The whole message, from `from`.
    pub fn message(&self, from: &Mailbox) -> anyhow::Result<Message> {
        let to = Mailbox::new(Some(self.to_name.clone()), self.to_email.parse()?);
        let body = MultiPart::alternative_plain_html(self.text(), self.html());
        let builder = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(self.subject());
        Ok(match &self.ics {
            Some(ics) => builder.multipart(MultiPart::mixed().multipart(body).singlepart(
                Attachment::new("appointment.ics".to_owned()).body(
                    ics.clone(),
                    ContentType::parse("text/calendar; charset=utf-8")?,
                ),
            ))?,
            None => builder.multipart(body)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(kind: MailKind) -> AppointmentMail {
        AppointmentMail {
            kind,
            to_name: "Casey <Marsh>".into(),
            to_email: "casey@example.org".into(),
            with: vec!["Dr Tess Ward".into()],
            starts_at: "2026-12-08T09:00:00Z".parse().unwrap(),
            ends_at: "2026-12-08T09:50:00Z".parse().unwrap(),
            tz: TimeZone::get("Europe/Berlin").unwrap(),
            link: "https://alcove.example.org/#/appointments".into(),
            ics: Some("BEGIN:VCALENDAR\r\nEND:VCALENDAR\r\n".into()),
        }
    }

    #[test]
    fn subjects_are_neutral_and_in_the_recipients_time_zone() {
        assert_eq!(
            mail(MailKind::Confirmation).subject(),
            "Your appointment on Tue 8 Dec at 10:00"
        );
        assert_eq!(
            mail(MailKind::Cancelled).subject(),
            "Your appointment on Tue 8 Dec at 10:00 is cancelled"
        );
        let moved = mail(MailKind::Rescheduled {
            previous: "2026-12-07T09:00:00Z".parse().unwrap(),
        });
        assert!(
            moved.text().contains("that was on Mon 7 Dec at 10:00"),
            "{}",
            moved.text()
        );
    }

    #[test]
    fn bodies_name_the_time_and_link_and_nothing_of_health() {
        let m = mail(MailKind::Reminder);
        let text = m.text();
        assert!(
            text.contains("Tue 8 Dec at 10:00 to 10:50 (Europe/Berlin)"),
            "{text}"
        );
        assert!(
            text.contains("https://alcove.example.org/#/appointments"),
            "{text}"
        );
        assert!(m.html().contains("Casey &lt;Marsh&gt;"), "{}", m.html());
        for m in [
            mail(MailKind::Confirmation),
            mail(MailKind::Reminder),
            mail(MailKind::Cancelled),
        ] {
            let all = format!("{} {} {}", m.subject(), m.text(), m.html()).to_lowercase();
            for word in ["therapy", "therapist", "token"] {
                assert!(!all.contains(word), "{word} in {all}");
            }
        }
    }

    #[test]
    fn urls_are_checked_without_being_repeated_and_shown_without_credentials() {
        assert!(check_url("smtp://127.0.0.1:2525").is_ok());
        assert!(check_url("smtps://user:pa%40ss@mail.example.org:465").is_ok());
        assert!(check_url("smtp://mail.example.org:587?tls=required").is_ok());
        let e = check_url("http://user:secret@x").unwrap_err();
        assert!(!e.contains("secret"), "{e}");
        assert_eq!(
            redacted("smtps://user:secret@mail.example.org:465"),
            "smtps://***@mail.example.org:465"
        );
        assert_eq!(redacted("smtp://127.0.0.1:2525"), "smtp://127.0.0.1:2525");
        assert!(check_from("Alcove <no-reply@example.org>").is_ok());
        assert!(check_from("not an address").is_err());
    }
}

//! Outgoing mail (order 11): the SMTP transport (lettre, rustls) and the appointment
//! messages. Messages carry no health information and no token: a neutral subject, the
//! time in the recipient's time zone, the other person's display name in the body only,
//! and a link to the appointments page of the web client, which asks the person to sign in.
//!
//! Delivery goes through the outbox in the database ([`crate::store::mail`]): the booking,
//! change or cancellation queues its messages in its own transaction, and [`run_outbox`],
//! on every node, claims due rows, builds each message from the appointment as it is
//! then, sends it, and marks it sent, retried later, or dropped with a reason.

use crate::{
    domain::{AppointmentStatus, Role},
    state::AppState,
    store::{Appointment, DueMail, OutboxKind, Ts},
};
use jiff::{Timestamp, tz::TimeZone};
use lettre::{
    AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor,
    message::{Attachment, Mailbox, MultiPart, header::ContentType},
};
use secrecy::ExposeSecret as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

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
    timeout: Duration,
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
        Ok(Mailer {
            transport,
            from,
            timeout,
        })
    }

    /// The sender.
    pub fn from(&self) -> &Mailbox {
        &self.from
    }

    /// Send one message, within the timeout as a whole (the transport's own timeout bounds
    /// connecting, not a server that greets and then stalls).
    pub async fn send(&self, message: Message) -> Result<(), MailError> {
        let sent = tokio::time::timeout(self.timeout, self.transport.send(message)).await;
        let Ok(sent) = sent else {
            return Err(MailError::Transient("timed out"));
        };
        match sent {
            Ok(_) => Ok(()),
            // Refused for this message (the mailbox or the message itself): for good. Any
            // other 5xx (authentication, TLS required, a server misconfigured) is about the
            // server, not the message: retried, and the server reported degraded.
            Err(e) if e.is_permanent() && permanent_for_message(&e) => {
                Err(MailError::Permanent("5xx"))
            }
            Err(e) if e.is_permanent() => Err(MailError::Transient("5xx from the server")),
            Err(e) if e.is_transient() => Err(MailError::Transient("4xx")),
            Err(e) if e.is_timeout() => Err(MailError::Transient("timed out")),
            Err(_) => Err(MailError::Transient("no connection")),
        }
    }
}

/// Whether a 5xx answers this message (its recipient or content: 550 to 554) rather than
/// the conversation (530 and 535 authentication, 500 to 504 syntax).
fn permanent_for_message(e: &lettre::transport::smtp::Error) -> bool {
    e.status()
        .map(|code| {
            let c = code.to_string();
            matches!(c.as_str(), "550" | "551" | "552" | "553" | "554")
        })
        .unwrap_or(false)
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
    /// The recipient's language.
    pub lang: Lang,
}

/// The language of a message: the recipient's (`users.language`), else English.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    #[default]
    En,
    De,
    Es,
}

impl Lang {
    /// The language of a code (`de`, `es-MX`); English for anything else.
    pub fn of(code: Option<&str>) -> Lang {
        match code.map(|c| c.to_ascii_lowercase()) {
            Some(c) if c == "de" || c.starts_with("de-") => Lang::De,
            Some(c) if c == "es" || c.starts_with("es-") => Lang::Es,
            _ => Lang::En,
        }
    }
}

/// "Tue 8 Dec at 10:00" in `tz`, in English.
pub fn when(t: Timestamp, tz: &TimeZone) -> String {
    when_in(Lang::En, t, tz)
}

/// The start as people of `lang` write it: "Tue 8 Dec at 10:00", "Di., 8. Dez. um 10:00",
/// "mar. 8 dic. a las 10:00".
pub fn when_in(lang: Lang, t: Timestamp, tz: &TimeZone) -> String {
    let z = t.to_zoned(tz.clone());
    let wd = z.weekday().to_monday_zero_offset() as usize;
    let mo = z.month() as usize - 1;
    let hm = z.strftime("%H:%M").to_string();
    match lang {
        Lang::En => z.strftime("%a %-d %b at %H:%M").to_string(),
        Lang::De => {
            const WD: [&str; 7] = ["Mo.", "Di.", "Mi.", "Do.", "Fr.", "Sa.", "So."];
            const MO: [&str; 12] = [
                "Jan.", "Feb.", "März", "Apr.", "Mai", "Juni", "Juli", "Aug.", "Sept.", "Okt.",
                "Nov.", "Dez.",
            ];
            format!("{}, {}. {} um {hm}", WD[wd], z.day(), MO[mo])
        }
        Lang::Es => {
            const WD: [&str; 7] = ["lun.", "mar.", "mié.", "jue.", "vie.", "sáb.", "dom."];
            const MO: [&str; 12] = [
                "ene.", "feb.", "mar.", "abr.", "may.", "jun.", "jul.", "ago.", "sept.", "oct.",
                "nov.", "dic.",
            ];
            format!("{} {} {} a las {hm}", WD[wd], z.day(), MO[mo])
        }
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl AppointmentMail {
    pub fn subject(&self) -> String {
        let at = when_in(self.lang, self.starts_at, &self.tz);
        match (self.lang, self.kind) {
            (Lang::En, MailKind::Confirmation) => format!("Your appointment on {at}"),
            (Lang::En, MailKind::Reminder) => format!("Reminder: your appointment on {at}"),
            (Lang::En, MailKind::Rescheduled { .. }) => {
                format!("Your appointment has moved to {at}")
            }
            (Lang::En, MailKind::Cancelled) => format!("Your appointment on {at} is cancelled"),
            (Lang::De, MailKind::Confirmation) => format!("Ihr Termin am {at}"),
            (Lang::De, MailKind::Reminder) => format!("Erinnerung: Ihr Termin am {at}"),
            (Lang::De, MailKind::Rescheduled { .. }) => {
                format!("Ihr Termin wurde verschoben auf {at}")
            }
            (Lang::De, MailKind::Cancelled) => format!("Ihr Termin am {at} ist abgesagt"),
            (Lang::Es, MailKind::Confirmation) => format!("Su cita del {at}"),
            (Lang::Es, MailKind::Reminder) => format!("Recordatorio: su cita del {at}"),
            (Lang::Es, MailKind::Rescheduled { .. }) => format!("Su cita se ha movido al {at}"),
            (Lang::Es, MailKind::Cancelled) => format!("Su cita del {at} está cancelada"),
        }
    }

    /// The plain-text body.
    pub fn text(&self) -> String {
        let at = when_in(self.lang, self.starts_at, &self.tz);
        let until = self
            .ends_at
            .to_zoned(self.tz.clone())
            .strftime("%H:%M")
            .to_string();
        let names = self.with.join(", ");
        let tz = self.tz.iana_name().unwrap_or("UTC");
        let was = |previous: Timestamp| when_in(self.lang, previous, &self.tz);
        let (hello, what, act, footer) = match self.lang {
            Lang::En => {
                let with = if names.is_empty() {
                    String::new()
                } else {
                    format!(" with {names}")
                };
                let what = match self.kind {
                    MailKind::Confirmation => format!(
                        "Your appointment{with} is booked for {at} to {until} ({tz}). A calendar file is attached."
                    ),
                    MailKind::Reminder => {
                        format!("A reminder: your appointment{with} is on {at} to {until} ({tz}).")
                    }
                    MailKind::Rescheduled { previous } => format!(
                        "Your appointment{with} that was on {} has moved to {at} to {until} ({tz}).",
                        was(previous)
                    ),
                    MailKind::Cancelled => {
                        format!("Your appointment{with} on {at} to {until} ({tz}) is cancelled.")
                    }
                };
                let act = match self.kind {
                    MailKind::Cancelled => "You can see your appointments, and book another, here",
                    _ => "To see it, or to join when it is time, sign in here",
                };
                (
                    format!("Hello {},", self.to_name),
                    what,
                    act,
                    "This message was sent by the booking service; please do not reply to it.",
                )
            }
            Lang::De => {
                let with = if names.is_empty() {
                    String::new()
                } else {
                    format!(" mit {names}")
                };
                let what = match self.kind {
                    MailKind::Confirmation => format!(
                        "Ihr Termin{with} ist gebucht: {at} bis {until} ({tz}). Eine Kalenderdatei ist angehängt."
                    ),
                    MailKind::Reminder => {
                        format!("Zur Erinnerung: Ihr Termin{with} ist am {at} bis {until} ({tz}).")
                    }
                    MailKind::Rescheduled { previous } => format!(
                        "Ihr Termin{with} am {} wurde verschoben auf {at} bis {until} ({tz}).",
                        was(previous)
                    ),
                    MailKind::Cancelled => {
                        format!("Ihr Termin{with} am {at} bis {until} ({tz}) ist abgesagt.")
                    }
                };
                let act = match self.kind {
                    MailKind::Cancelled => {
                        "Ihre Termine sehen und einen neuen buchen können Sie hier"
                    }
                    _ => {
                        "Um ihn anzusehen oder zur Zeit des Termins teilzunehmen, melden Sie sich hier an"
                    }
                };
                (
                    format!("Hallo {},", self.to_name),
                    what,
                    act,
                    "Diese Nachricht kommt vom Buchungsdienst; bitte antworten Sie nicht darauf.",
                )
            }
            Lang::Es => {
                let with = if names.is_empty() {
                    String::new()
                } else {
                    format!(" con {names}")
                };
                let what = match self.kind {
                    MailKind::Confirmation => format!(
                        "Su cita{with} está reservada para el {at} hasta las {until} ({tz}). Se adjunta un archivo de calendario."
                    ),
                    MailKind::Reminder => format!(
                        "Un recordatorio: su cita{with} es el {at} hasta las {until} ({tz})."
                    ),
                    MailKind::Rescheduled { previous } => format!(
                        "Su cita{with} del {} se ha movido al {at} hasta las {until} ({tz}).",
                        was(previous)
                    ),
                    MailKind::Cancelled => {
                        format!("Su cita{with} del {at} hasta las {until} ({tz}) está cancelada.")
                    }
                };
                let act = match self.kind {
                    MailKind::Cancelled => "Puede ver sus citas, y reservar otra, aquí",
                    _ => "Para verla, o para entrar cuando sea la hora, inicie sesión aquí",
                };
                (
                    format!("Hola, {}:", self.to_name),
                    what,
                    act,
                    "Este mensaje lo envía el servicio de reservas; no responda a él.",
                )
            }
        };
        format!("{hello}\n\n{what}\n\n{act}:\n{}\n\n{footer}\n", self.link)
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
            "<!doctype html><html lang=\"{}\"><body style=\"font-family: sans-serif; line-height: 1.5\">{}</body></html>",
            match self.lang {
                Lang::En => "en",
                Lang::De => "de",
                Lang::Es => "es",
            },
            paragraphs.join("")
        )
    }

    /// The whole message, from `from`, with the Message-ID `message_id` (stable per
    /// outbox row, so that a message sent twice, say after a crash between the server's
    /// answer and the row being marked, is recognisably one).
    pub fn message(&self, from: &Mailbox, message_id: Option<String>) -> anyhow::Result<Message> {
        let to = Mailbox::new(Some(self.to_name.clone()), self.to_email.parse()?);
        let body = MultiPart::alternative_plain_html(self.text(), self.html());
        let builder = Message::builder()
            .from(from.clone())
            .to(to)
            .message_id(message_id)
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

/// Whether the mail server took this node's last message, for `/readyz`.
#[derive(Debug, Default)]
pub struct MailHealth {
    degraded: AtomicBool,
}

impl MailHealth {
    /// `degraded` while the last attempt failed for want of a server.
    pub fn status(&self) -> &'static str {
        if self.degraded.load(Ordering::Relaxed) {
            "degraded"
        } else {
            "ok"
        }
    }

    fn set(&self, degraded: bool) {
        let was = self.degraded.swap(degraded, Ordering::Relaxed);
        if was != degraded {
            if degraded {
                tracing::warn!(
                    "mail: degraded, the mail server is not taking messages; they wait in the outbox"
                );
            } else {
                tracing::info!("mail: the mail server takes messages again");
            }
        }
    }
}

/// How often each node looks for due messages.
const POLL: Duration = Duration::from_secs(1);
/// Rows claimed at a time.
const BATCH: i64 = 10;
/// A reschedule or cancellation notice (or a confirmation) the mail server has not taken
/// in this long is given up.
const GIVE_UP_AFTER: jiff::SignedDuration = jiff::SignedDuration::from_hours(48);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Send what the outbox holds, until `stop`. Does nothing when no mail is configured.
pub async fn run_outbox(state: AppState, stop: CancellationToken) {
    let (Some(url), Some(from)) = (&state.config.smtp_url, &state.config.mail_from) else {
        return;
    };
    let timeout = state.config.smtp_timeout;
    let mailer = match Mailer::new(url.expose_secret(), from, timeout) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!(error = %e, "mail: cannot start the outbox; no mail is sent");
            return;
        }
    };
    // Long enough for a batch to finish; a node that dies holding rows frees them then.
    let lease = timeout * 3 + Duration::from_secs(10);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        if state.db_health.is_down() {
            continue;
        }
        let rows = match state.db.claim_mail(Ts::now(), lease, BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "mail: cannot read the outbox");
                continue;
            }
        };
        let mut rows = rows.into_iter();
        while let Some(row) = rows.next() {
            if deliver(&state, &mailer, &row, timeout).await {
                // The server is down (or this claim ran short): the rest waits for later.
                for rest in rows.by_ref() {
                    let _ = state.db.mail_release(&rest).await;
                }
                break;
            }
            if stop.is_cancelled() {
                for rest in rows.by_ref() {
                    let _ = state.db.mail_release(&rest).await;
                }
                return;
            }
        }
    }
}

/// Why a row is not sent, if it is not to be.
fn obsolete(
    row: &DueMail,
    kind: OutboxKind,
    a: Option<&Appointment>,
    now: Ts,
) -> Option<&'static str> {
    let Some(a) = a else {
        return Some("cancelled");
    };
    if kind != OutboxKind::Cancelled {
        match a.status {
            AppointmentStatus::Booked => {}
            AppointmentStatus::Cancelled => return Some("cancelled"),
            _ => return Some("too_late"),
        }
        // A confirmation not yet sent confirms the time the appointment has now (a move
        // updates it); a reminder or a move notice is about one start only.
        if kind != OutboxKind::Confirmation && a.starts_at != row.starts_at {
            return Some("moved");
        }
        if now >= a.ends_at {
            return Some("too_late");
        }
    }
    if !a.is_participant(row.user_id) {
        return Some("not_participant");
    }
    if kind == OutboxKind::Reminder && now >= a.starts_at {
        return Some("too_late");
    }
    None
}

/// Handle one claimed row; true when the mail server could not be reached, or the claim
/// ran short (stop the batch).
async fn deliver(state: &AppState, mailer: &Mailer, row: &DueMail, timeout: Duration) -> bool {
    let now = Ts::now();
    let Some(kind) = OutboxKind::parse(&row.kind) else {
        drop_row(state, row, "unknown_kind", "other").await;
        return false;
    };
    let built = match build(state, row, kind, now).await {
        Ok(Ok(mail)) => mail,
        Ok(Err(reason)) => {
            drop_row(state, row, reason, kind.as_str()).await;
            return false;
        }
        Err(e) => {
            tracing::warn!(mail_id = %row.id, error = %e, "mail: cannot build a message now; retrying");
            retry(state, row, kind).await;
            return false;
        }
    };
    let message_id = format!("<{}@{}>", row.id, mailer.from().email.domain());
    let message = match built.message(mailer.from(), Some(message_id)) {
        Ok(m) => m,
        Err(_) => {
            // The stored address cannot be written as a recipient.
            drop_row(state, row, "bad_address", kind.as_str()).await;
            return false;
        }
    };
    // Never begin a send that could outlast the claim (as the database holds it): another
    // node would take the row when it ends and the message would go twice.
    let margin =
        jiff::SignedDuration::try_from(timeout + Duration::from_secs(5)).unwrap_or_default();
    if row.claimed_until.get().duration_since(Timestamp::now()) < margin {
        let _ = state.db.mail_release(row).await;
        return true;
    }
    match mailer.send(message).await {
        Ok(()) => {
            state.mail_health.set(false);
            state.metrics.mail(kind.as_str(), "sent");
            match state.db.mail_sent(row, Ts::now()).await {
                Ok(true) => {}
                // The claim was lost meanwhile (a stalled node): another node may send it
                // too, with the same Message-ID.
                Ok(false) => {
                    tracing::warn!(mail_id = %row.id, "mail: sent after this node's claim had ended")
                }
                // Sent but not marked: it may go again when the claim ends (the same
                // Message-ID). Nothing better can be done without the database.
                Err(e) => {
                    tracing::error!(mail_id = %row.id, error = %e, "mail: sent but could not mark it sent")
                }
            }
            tracing::info!(mail_id = %row.id, appointment_id = %row.appointment_id, kind = kind.as_str(), "mail: sent");
            false
        }
        Err(MailError::Permanent(why)) => {
            state.mail_health.set(false);
            tracing::warn!(mail_id = %row.id, kind = kind.as_str(), why, "mail: the mail server refused the message for good; dropped");
            drop_row(state, row, "refused", kind.as_str()).await;
            false
        }
        Err(MailError::Transient(why)) => {
            state.mail_health.set(true);
            tracing::warn!(mail_id = %row.id, kind = kind.as_str(), why, attempts = row.attempts + 1, "mail: not sent; retrying later");
            retry(state, row, kind).await;
            true
        }
    }
}

/// The message of `row`, or why it is not to be sent.
async fn build(
    state: &AppState,
    row: &DueMail,
    kind: OutboxKind,
    now: Ts,
) -> anyhow::Result<Result<AppointmentMail, &'static str>> {
    let a = state.db.appointment(row.appointment_id).await?;
    if let Some(reason) = obsolete(row, kind, a.as_ref(), now) {
        return Ok(Err(reason));
    }
    let Some(a) = a else {
        return Ok(Err("cancelled"));
    };
    let Some(to) = state.db.recipient(row.user_id).await? else {
        return Ok(Err("no_account"));
    };
    if to.disabled {
        return Ok(Err("account_disabled"));
    }
    if kind == OutboxKind::Reminder && !to.email_reminders {
        return Ok(Err("reminders_off"));
    }
    if state
        .config
        .probe_accounts
        .iter()
        .any(|p| p.eq_ignore_ascii_case(&to.email))
    {
        return Ok(Err("probe"));
    }
    // A client hears the therapist's name; the therapist the clients' (clients of a group
    // never learn each other's names from mail).
    let me = a.participants.iter().find(|p| p.user_id == row.user_id);
    let with = match me.map(|p| p.role) {
        Some(Role::Client) => a
            .therapist()
            .map(|t| vec![t.display_name.clone()])
            .unwrap_or_default(),
        _ => a.clients().map(|c| c.display_name.clone()).collect(),
    };
    let tz = to
        .time_zone
        .as_deref()
        .and_then(|name| TimeZone::get(name).ok())
        .unwrap_or(TimeZone::UTC);
    Ok(Ok(AppointmentMail {
        kind: match kind {
            OutboxKind::Confirmation => MailKind::Confirmation,
            OutboxKind::Reminder => MailKind::Reminder,
            OutboxKind::Rescheduled => MailKind::Rescheduled {
                previous: row.previous_starts_at.unwrap_or(row.starts_at).get(),
            },
            OutboxKind::Cancelled => MailKind::Cancelled,
        },
        to_name: to.display_name,
        to_email: to.email,
        with,
        starts_at: a.starts_at.get(),
        ends_at: a.ends_at.get(),
        tz,
        link: crate::http::calendar::join_link(state, &a),
        ics: (kind == OutboxKind::Confirmation)
            .then(|| crate::http::calendar::render(state, std::slice::from_ref(&a), false)),
        lang: Lang::of(to.language.as_deref()),
    }))
}

async fn drop_row(state: &AppState, row: &DueMail, reason: &'static str, kind: &'static str) {
    state.metrics.mail(kind, "dropped");
    tracing::info!(mail_id = %row.id, appointment_id = %row.appointment_id, kind, reason, "mail: not sent");
    if let Err(e) = state.db.mail_dropped(row, Ts::now(), reason).await {
        tracing::warn!(mail_id = %row.id, error = %e, "mail: could not mark a message dropped");
    }
}

/// Try `row` again later (doubling waits), or give it up when it is no use any more.
async fn retry(state: &AppState, row: &DueMail, kind: OutboxKind) {
    let now = Timestamp::now();
    let pointless = match kind {
        OutboxKind::Reminder => now >= row.starts_at.get(),
        _ => now.duration_since(row.created_at.get()) > GIVE_UP_AFTER,
    };
    if pointless {
        drop_row(
            state,
            row,
            if kind == OutboxKind::Reminder {
                "too_late"
            } else {
                "expired"
            },
            kind.as_str(),
        )
        .await;
        return;
    }
    state.metrics.mail(kind.as_str(), "retried");
    let wait = backoff(row.attempts);
    let next = now + jiff::SignedDuration::try_from(wait).unwrap_or_default();
    if let Err(e) = state.db.mail_retry(row, next.into()).await {
        tracing::warn!(mail_id = %row.id, error = %e, "mail: could not schedule a retry");
    }
}

/// The wait before the attempt after `attempts` failed ones: 1 s, 2 s, 4 s, … up to 10 min.
pub fn backoff(attempts: i32) -> Duration {
    let exp = attempts.clamp(0, 20) as u32;
    Duration::from_secs(1u64 << exp).min(MAX_BACKOFF)
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
            lang: Lang::En,
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
    fn messages_go_out_in_the_recipients_language_and_still_say_nothing_of_health() {
        let de = AppointmentMail {
            lang: Lang::De,
            ..mail(MailKind::Confirmation)
        };
        assert_eq!(de.subject(), "Ihr Termin am Di., 8. Dez. um 10:00");
        assert!(
            de.text().starts_with("Hallo Casey <Marsh>,"),
            "{}",
            de.text()
        );
        assert!(de.html().contains("<html lang=\"de\">"));
        let es = AppointmentMail {
            lang: Lang::Es,
            ..mail(MailKind::Rescheduled {
                previous: "2026-12-07T09:00:00Z".parse().unwrap(),
            })
        };
        assert_eq!(
            es.subject(),
            "Su cita se ha movido al mar. 8 dic. a las 10:00"
        );
        assert!(
            es.text().contains("del lun. 7 dic. a las 10:00"),
            "{}",
            es.text()
        );
        assert_eq!(Lang::of(Some("es-MX")), Lang::Es);
        assert_eq!(Lang::of(Some("fr")), Lang::En);
        for lang in [Lang::En, Lang::De, Lang::Es] {
            for kind in [
                MailKind::Confirmation,
                MailKind::Reminder,
                MailKind::Cancelled,
                MailKind::Rescheduled {
                    previous: "2026-12-07T09:00:00Z".parse().unwrap(),
                },
            ] {
                let m = AppointmentMail { lang, ..mail(kind) };
                let all = format!("{} {} {}", m.subject(), m.text(), m.html()).to_lowercase();
                for word in ["therap", "terap", "token"] {
                    assert!(!all.contains(word), "{word} in {all}");
                }
                assert!(all.contains("https://alcove.example.org/#/appointments"));
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

//! An SMTP server on loopback for the tests (order 11): it speaks the real protocol over
//! TCP, keeps what it is sent (parsed as a mail program reads it), and can refuse, hang,
//! stop listening and come back on the same port. Shared by the API tests and the browser
//! test.

use std::{sync::Arc, time::Duration};
use tokio::{
    io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader},
    net::TcpListener,
    sync::Mutex,
    task::JoinHandle,
};

/// One message as the sink received it.
#[derive(Debug, Clone)]
pub struct Received {
    pub from: String,
    pub to: Vec<String>,
    pub data: String,
}

/// How the sink answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Keep every message.
    Keep,
    /// Answer every message with this reply (e.g. `451 try later`).
    Refuse(&'static str),
    /// Greet, then never answer again.
    Hang,
}

/// An SMTP server on 127.0.0.1 that keeps what it is sent; it can be stopped (nothing
/// listens on its port) and started again on the same port.
pub struct SmtpSink {
    pub port: u16,
    pub received: Arc<Mutex<Vec<Received>>>,
    mode: Mode,
    task: std::sync::Mutex<Option<JoinHandle<()>>>,
}

impl SmtpSink {
    pub async fn start(refuse: Option<&'static str>) -> SmtpSink {
        Self::start_with(refuse.map_or(Mode::Keep, Mode::Refuse)).await
    }

    pub async fn start_with(mode: Mode) -> SmtpSink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = SmtpSink {
            port,
            received: Arc::new(Mutex::new(Vec::new())),
            mode,
            task: std::sync::Mutex::new(None),
        };
        sink.serve(listener);
        sink
    }

    /// Stop listening: connections are refused until [`Self::up`].
    pub fn down(&self) {
        if let Some(t) = self.task.lock().unwrap().take() {
            t.abort();
        }
    }

    /// Listen again on the same port.
    pub async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        self.serve(listener);
    }

    fn serve(&self, listener: TcpListener) {
        let kept = self.received.clone();
        let mode = self.mode;
        let task = tokio::spawn(async move {
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
                        if mode == Mode::Hang {
                            tokio::time::sleep(Duration::from_secs(3600)).await;
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
                            match mode {
                                Mode::Refuse(code) => format!("{code}\r\n"),
                                _ => {
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
        *self.task.lock().unwrap() = Some(task);
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message kept so far, parsed.
    pub async fn mails(&self) -> Vec<Mail> {
        self.received.lock().await.iter().map(Mail::parse).collect()
    }

    /// Wait until at least `n` messages are kept (at most `within`); return them all.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Mail> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.mails().await;
            if got.len() >= n {
                return got;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {n} messages within {within:?}: {got:#?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// A kept message, as its recipient's mail program reads it.
#[derive(Debug, Clone)]
pub struct Mail {
    pub to: String,
    pub subject: String,
    pub text: String,
    pub html: String,
    pub message_id: String,
    /// The attached calendar file.
    pub ics: Option<String>,
}

impl Mail {
    fn parse(r: &Received) -> Mail {
        use mail_parser::MimeHeaders as _;
        let m = mail_parser::MessageParser::default()
            .parse(r.data.as_bytes())
            .expect("a MIME message");
        let ics = m.attachments().find_map(|a| {
            (a.attachment_name() == Some("appointment.ics"))
                .then(|| String::from_utf8(a.contents().to_vec()).unwrap())
        });
        assert_eq!(r.to.len(), 1, "one recipient per message");
        Mail {
            to: r.to[0].trim_matches(['<', '>']).to_owned(),
            subject: m.subject().unwrap_or_default().to_owned(),
            text: m.body_text(0).unwrap_or_default().into_owned(),
            html: m.body_html(0).unwrap_or_default().into_owned(),
            message_id: m.message_id().unwrap_or_default().to_owned(),
            ics,
        }
    }

    pub fn is(&self, to_email: &str, subject_starts: &str) -> bool {
        self.to == to_email && self.subject.starts_with(subject_starts)
    }
}

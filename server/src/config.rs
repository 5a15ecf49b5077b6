//! Configuration: defaults, then an optional TOML file, then environment variables and
//! command-line flags (clap reads both; a flag beats its variable).
//!
//! Every option has a default, so `alcove` starts with no setup at all. A bad value stops
//! the start with a message naming the option. `docs/configuration.md` lists every option.

use crate::cli::{CommonArgs, ServeArgs};
use anyhow::{Context as _, bail};
use figment::{
    Figment,
    providers::{Format as _, Serialized, Toml},
};
use serde::{Deserialize, Serialize};
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Durations written like `90s`, `10m`, `12h`, `30d` in files, variables and flags.
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn parse(s: &str) -> Result<Duration, String> {
        humantime::parse_duration(s.trim())
            .map_err(|e| format!("{e} (write a duration like 90s, 10m, 12h or 30d)"))
    }

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A value given on the command line, in the environment or in the file that must never
/// show in logs or `Debug` output: a shared secret. It serialises as itself, because the
/// configuration layers are merged through serde; only `Debug` hides it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretArg(String);

impl SecretArg {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("[redacted]")
    }
}

impl std::str::FromStr for SecretArg {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// A database URL. `Debug` (and [`DatabaseUrl::redacted`]) show it with any password
/// replaced by `***`, so that a stray `?config` in a log line cannot leak it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(String);

impl DatabaseUrl {
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL itself, to connect with.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with its password (the part between `user:` and `@`) replaced by `***`,
    /// and a `password=` query parameter dropped.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
            return "[redacted]".into();
        };
        let rest = &url[scheme_end..];
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let authority = match authority.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{user}:***@{host}"),
                None => format!("{userinfo}@{host}"),
            },
            None => authority.to_owned(),
        };
        let tail = match tail.split_once('?') {
            Some((path, query)) => {
                let kept: Vec<&str> = query
                    .split('&')
                    .filter(|kv| !kv.to_ascii_lowercase().starts_with("password="))
                    .collect();
                if kept.is_empty() {
                    path.to_owned()
                } else {
                    format!("{path}?{}", kept.join("&"))
                }
            }
            None => tail.to_owned(),
        };
        format!("{}{authority}{tail}", &url[..scheme_end])
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

/// The whole configuration of a running server.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address and port the HTTP server listens on.
    pub listen: SocketAddr,
    /// Folder for state: the SQLite database and the token signing keys.
    pub data_dir: PathBuf,
    /// `sqlite://…` or `postgres://…`; default: `<data_dir>/alcove.db`.
    pub database_url: Option<DatabaseUrl>,
    /// Largest number of pooled database connections.
    pub db_max_connections: u32,
    /// The URL people reach this server at (links, allowed origin, signalling URL).
    pub public_url: Option<String>,
    /// Terminate TLS here with this PEM certificate chain (and `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Log format.
    pub log_format: LogFormat,
    /// Whether clients may create their own accounts.
    pub allow_registration: bool,
    /// Lifetime of access tokens.
    #[serde(with = "duration")]
    pub access_token_ttl: Duration,
    /// Lifetime of each refresh token (rotation issues a new one).
    #[serde(with = "duration")]
    pub refresh_token_ttl: Duration,
    /// Longest a sign-in lasts however often it is refreshed.
    #[serde(with = "duration")]
    pub session_max_age: Duration,
    /// Sign-in attempts per email address and client address within `login_window`
    /// before 429.
    pub login_max_failures: u32,
    /// Failures per email address from all client addresses within `login_window` after
    /// which sign-ins to it are slowed (not locked).
    pub login_account_max_failures: u32,
    /// Sign-in attempts per client address within `login_window`.
    pub login_address_max: u32,
    /// Registrations per client address within `login_window`.
    pub register_address_max: u32,
    /// Reverse proxies whose `X-Forwarded-For` is believed (IPs or CIDR ranges).
    pub trusted_proxies: Vec<String>,
    /// Password hashing threads; 0: one per core.
    pub hash_workers: usize,
    /// Window over which failed sign-ins are counted.
    #[serde(with = "duration")]
    pub login_window: Duration,
    /// Serve `web/` from this folder instead of the copy embedded in the binary
    /// (for working on the web client).
    pub web_dir: Option<PathBuf>,
    /// Shortest notice a client may book with.
    #[serde(with = "duration")]
    pub min_notice: Duration,
    /// How long before an appointment's start its participants may join.
    #[serde(with = "duration")]
    pub join_opens_before: Duration,
    /// How long after an appointment's end its room stays open.
    #[serde(with = "duration")]
    pub join_closes_after: Duration,
    /// A client cancelling later than this before the start is a late cancellation.
    #[serde(with = "duration")]
    pub late_cancel_window: Duration,
    /// Browser origins allowed to open the signalling WebSocket (default: the public URL's).
    pub allowed_origins: Vec<String>,
    /// STUN server URLs given to browsers (`stun:stun.example.org:3478`).
    pub stun_urls: Vec<String>,
    /// TURN server URLs (`turn:turn.example.org:3478?transport=udp`, `turns:…`).
    pub turn_urls: Vec<String>,
    /// coturn's `static-auth-secret`, to mint TURN REST API credentials.
    #[serde(skip_serializing)]
    pub turn_secret: Option<secrecy::SecretString>,
    /// Lifetime of minted TURN credentials.
    #[serde(with = "duration")]
    pub turn_ttl: Duration,
    /// Every browser uses TURN only (neither side learns the other's IP address).
    pub relay_only: bool,
    /// Lifetime of join tokens.
    #[serde(with = "duration")]
    pub join_token_ttl: Duration,
    /// How long a dropped participant's place in a session is held.
    #[serde(with = "duration")]
    pub signal_grace: Duration,
    /// How long a new signalling connection has to send `hello`.
    #[serde(with = "duration")]
    pub signal_hello_timeout: Duration,
    /// Longest a request may take before it is answered 503 `timeout`.
    #[serde(with = "duration")]
    pub request_timeout: Duration,
    /// Longest a request's headers may take to arrive.
    #[serde(with = "duration")]
    pub header_timeout: Duration,
    /// Connections open at once per client address (0: no limit).
    pub max_connections_per_address: usize,
    /// Serve `/metrics` on this address only (not on the public listener).
    pub metrics_listen: Option<SocketAddr>,
    /// On SIGTERM, the longest the drain takes before the process exits: connections are
    /// told to reconnect, rooms handed over, requests in flight finished.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// How often the server pings signalling connections; three missed intervals mean dead.
    #[serde(with = "duration")]
    pub signal_ping_interval: Duration,
    /// Automatic logoff: the web client signs out after this long without activity
    /// (outside a call), and the server ends a sign-in unused (no request, no refresh) for
    /// this long.
    #[serde(with = "duration")]
    pub idle_sign_out: Duration,
    /// This server's name in session records and among several nodes; after a crash it
    /// closes its own open sessions.
    pub node_id: String,
    /// Redis, for several nodes.
    pub redis_url: Option<DatabaseUrl>,
    /// Prefix of this deployment's Redis keys.
    pub redis_prefix: String,
    /// Several nodes: how long a node's claim on a room lasts without renewal.
    #[serde(with = "duration")]
    pub room_lease: Duration,
    /// Signing keys given as configuration (PEM blocks), instead of the data folder's.
    #[serde(skip_serializing)]
    pub signing_keys: Option<secrecy::SecretString>,

    /// How long session records are kept after a session ends.
    #[serde(with = "duration")]
    pub session_retention: Duration,
    /// How long audit trail entries are kept.
    #[serde(with = "duration")]
    pub audit_retention: Duration,
    /// How often the retention purge runs.
    #[serde(with = "duration")]
    pub purge_interval: Duration,
    /// URLs that receive signed session webhooks.
    pub webhook_urls: Vec<String>,
    /// Secret for the webhooks' HMAC-SHA256 signature.
    #[serde(skip_serializing)]
    pub webhook_secret: Option<secrecy::SecretString>,
    /// First retry delay of a failed webhook (doubling each time, up to 1 h).
    #[serde(with = "duration")]
    pub webhook_retry_base: Duration,
    /// Attempts before a webhook delivery is given up.
    pub webhook_max_attempts: u32,
    /// The SMTP server outgoing mail goes through (`smtps://user:pass@host:465`,
    /// `smtp://host:587?tls=required`, `smtp://127.0.0.1:2525`); none: no mail is sent.
    #[serde(skip_serializing)]
    pub smtp_url: Option<secrecy::SecretString>,
    /// The sender of outgoing mail (`Alcove <no-reply@example.org>`).
    pub mail_from: Option<String>,
    /// How long one conversation with the SMTP server may take before it counts as failed
    /// (and is retried later).
    #[serde(with = "duration")]
    pub smtp_timeout: Duration,
    /// How long before an appointment each reminder goes out (`24h,1h`; empty: none).
    #[serde(with = "durations")]
    pub reminders: Vec<Duration>,
    /// Network tests this node runs at once (each holds a WebRTC peer for up to 20 s).
    pub network_test_max: usize,
    /// Network tests one account may start in an hour.
    pub network_test_per_hour: u32,
    /// Where the network test's WebRTC peer binds its UDP socket (`0.0.0.0:0`: every
    /// interface but loopback, an ephemeral port).
    pub network_test_udp: SocketAddr,
    /// The synthetic call's two accounts (`alcove probe`): a therapist's email, then a
    /// client's (empty: no probe).
    pub probe_accounts: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("data"),
            database_url: None,
            db_max_connections: 10,
            public_url: None,
            tls_cert: None,
            tls_key: None,
            log_format: LogFormat::Text,
            allow_registration: true,
            access_token_ttl: Duration::from_secs(15 * 60),
            refresh_token_ttl: Duration::from_secs(30 * 24 * 3600),
            session_max_age: Duration::from_secs(90 * 24 * 3600),
            login_max_failures: 10,
            login_account_max_failures: 100,
            login_address_max: 100,
            register_address_max: 20,
            trusted_proxies: Vec::new(),
            hash_workers: 0,
            login_window: Duration::from_secs(15 * 60),
            web_dir: None,
            min_notice: Duration::from_secs(12 * 3600),
            join_opens_before: Duration::from_secs(10 * 60),
            join_closes_after: Duration::from_secs(30 * 60),
            late_cancel_window: Duration::from_secs(24 * 3600),
            allowed_origins: Vec::new(),
            stun_urls: Vec::new(),
            turn_urls: Vec::new(),
            turn_secret: None,
            turn_ttl: Duration::from_secs(3600),
            relay_only: false,
            join_token_ttl: Duration::from_secs(120),
            signal_grace: Duration::from_secs(30),
            signal_hello_timeout: Duration::from_secs(5),
            drain_timeout: Duration::from_secs(10),
            metrics_listen: None,
            request_timeout: Duration::from_secs(30),
            header_timeout: Duration::from_secs(10),
            max_connections_per_address: 256,
            signal_ping_interval: Duration::from_secs(10),
            idle_sign_out: Duration::from_secs(15 * 60),
            node_id: "local".into(),
            redis_url: None,
            redis_prefix: "alcove".into(),
            room_lease: Duration::from_secs(3),
            signing_keys: None,

            session_retention: Duration::from_secs(2192 * 24 * 3600),
            audit_retention: Duration::from_secs(2192 * 24 * 3600),
            purge_interval: Duration::from_secs(3600),
            webhook_urls: Vec::new(),
            webhook_secret: None,
            webhook_retry_base: Duration::from_secs(2),
            webhook_max_attempts: 12,
            smtp_url: None,
            mail_from: None,
            smtp_timeout: Duration::from_secs(30),
            reminders: vec![Duration::from_secs(24 * 3600), Duration::from_secs(3600)],
            network_test_max: 8,
            network_test_per_hour: 12,
            network_test_udp: SocketAddr::from(([0, 0, 0, 0], 0)),
            probe_accounts: Vec::new(),
        }
    }
}

/// A list of durations: `24h,1h` (or a list of such strings in the file); empty: none.
pub mod durations {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn parse(s: &str) -> Result<Vec<Duration>, String> {
        s.split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(super::duration::parse)
            .collect()
    }

    pub fn serialize<S: Serializer>(d: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        let text: Vec<String> = d
            .iter()
            .map(|d| humantime::format_duration(*d).to_string())
            .collect();
        s.serialize_str(&text.join(","))
    }

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Given {
        One(String),
        Many(Vec<String>),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        let text = match Given::deserialize(d)? {
            Given::One(s) => s,
            Given::Many(v) => v.join(","),
        };
        parse(&text).map_err(serde::de::Error::custom)
    }
}

/// Serialises an optional duration given on the command line.
pub mod opt_duration {
    use serde::Serializer;
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration::serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

impl Config {
    /// Build the configuration from the file named by `--config`, then the command line and
    /// the environment (already merged by clap), then check it.
    pub fn load(common: &CommonArgs, serve: Option<&ServeArgs>) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = &common.config {
            if !path.exists() {
                bail!(
                    "--config / ALCOVE_CONFIG: {} does not exist",
                    path.display()
                );
            }
            fig = fig.merge(Toml::file(path));
        }
        // The command line and the environment (merged by clap) beat the file.
        fig = fig.merge(Serialized::defaults(common));
        if let Some(serve) = serve {
            fig = fig.merge(Serialized::defaults(serve));
        }
        let config: Config = fig
            .extract()
            .map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
        config.check()?;
        Ok(config)
    }

    /// Cross-field and range checks; each message names the option.
    pub fn check(&self) -> anyhow::Result<()> {
        let mins = |d: Duration| d.as_secs() / 60;
        if !(1..=24 * 60).contains(&mins(self.access_token_ttl)) {
            bail!("ALCOVE_ACCESS_TOKEN_TTL must be between 1m and 24h");
        }
        if self.refresh_token_ttl < self.access_token_ttl {
            bail!("ALCOVE_REFRESH_TOKEN_TTL must be at least ALCOVE_ACCESS_TOKEN_TTL");
        }
        if self.session_max_age < self.refresh_token_ttl {
            bail!("ALCOVE_SESSION_MAX_AGE must be at least ALCOVE_REFRESH_TOKEN_TTL");
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => bail!("ALCOVE_TLS_KEY is needed with ALCOVE_TLS_CERT"),
            (None, Some(_)) => bail!("ALCOVE_TLS_CERT is needed with ALCOVE_TLS_KEY"),
            _ => {}
        }
        if self.header_timeout < Duration::from_millis(100)
            || self.header_timeout > Duration::from_secs(300)
        {
            bail!("ALCOVE_HEADER_TIMEOUT must be between 100ms and 5m");
        }
        if self.db_max_connections == 0 {
            bail!("ALCOVE_DB_MAX_CONNECTIONS must be at least 1");
        }
        if self.min_notice > Duration::from_secs(90 * 24 * 3600) {
            bail!("ALCOVE_MIN_NOTICE must be at most 90d");
        }
        if self.join_opens_before > Duration::from_secs(24 * 3600) {
            bail!("ALCOVE_JOIN_OPENS_BEFORE must be at most 24h");
        }
        if self.join_closes_after > Duration::from_secs(24 * 3600) {
            bail!("ALCOVE_JOIN_CLOSES_AFTER must be at most 24h");
        }
        for u in &self.stun_urls {
            if !u.starts_with("stun:") && !u.starts_with("stuns:") {
                bail!("ALCOVE_STUN_URLS: {u:?} must start with stun: or stuns:");
            }
        }
        for u in &self.turn_urls {
            if !u.starts_with("turn:") && !u.starts_with("turns:") {
                bail!("ALCOVE_TURN_URLS: {u:?} must start with turn: or turns:");
            }
        }
        if !self.turn_urls.is_empty() && self.turn_secret.is_none() {
            bail!(
                "ALCOVE_TURN_SECRET is needed with ALCOVE_TURN_URLS (coturn's static-auth-secret)"
            );
        }
        if self.relay_only && self.turn_urls.is_empty() {
            bail!("ALCOVE_RELAY_ONLY needs a TURN server (ALCOVE_TURN_URLS)");
        }
        if self.turn_ttl < Duration::from_secs(10)
            || self.turn_ttl > Duration::from_secs(7 * 24 * 3600)
        {
            bail!("ALCOVE_TURN_TTL must be between 10s and 7d");
        }
        if let Some(url) = &self.smtp_url {
            use secrecy::ExposeSecret as _;
            crate::mail::check_url(url.expose_secret())
                .map_err(|e| anyhow::anyhow!("ALCOVE_SMTP_URL: {e}"))?;
            let Some(from) = &self.mail_from else {
                bail!(
                    "ALCOVE_MAIL_FROM is needed with ALCOVE_SMTP_URL (the sender of outgoing mail, e.g. \"Alcove <no-reply@example.org>\")"
                );
            };
            crate::mail::check_from(from).map_err(|e| anyhow::anyhow!("ALCOVE_MAIL_FROM: {e}"))?;
        }
        if self.smtp_timeout < Duration::from_secs(1)
            || self.smtp_timeout > Duration::from_secs(300)
        {
            bail!("ALCOVE_SMTP_TIMEOUT must be between 1s and 5m");
        }
        if self.reminders.len() > 5 {
            bail!("ALCOVE_REMINDERS: at most 5 reminders");
        }
        if self
            .reminders
            .iter()
            .any(|d| *d < Duration::from_secs(60) || *d > Duration::from_secs(30 * 24 * 3600))
        {
            bail!("ALCOVE_REMINDERS: each lead time must be between 1m and 30d");
        }
        if !(self.probe_accounts.is_empty() || self.probe_accounts.len() == 2) {
            bail!(
                "ALCOVE_PROBE_ACCOUNTS must name two accounts: the probe's therapist's email, then its client's"
            );
        }
        if self.network_test_max == 0 || self.network_test_max > 1000 {
            bail!("ALCOVE_NETWORK_TEST_MAX must be between 1 and 1000");
        }
        if self.network_test_per_hour == 0 || self.network_test_per_hour > 1000 {
            bail!("ALCOVE_NETWORK_TEST_PER_HOUR must be between 1 and 1000");
        }
        if self.join_token_ttl < Duration::from_secs(10)
            || self.join_token_ttl > Duration::from_secs(3600)
        {
            bail!("ALCOVE_JOIN_TOKEN_TTL must be between 10s and 1h");
        }
        if self.signal_grace > Duration::from_secs(600) {
            bail!("ALCOVE_SIGNAL_GRACE must be at most 10m");
        }
        if self.drain_timeout < Duration::from_secs(1)
            || self.drain_timeout > Duration::from_secs(600)
        {
            bail!("ALCOVE_DRAIN_TIMEOUT must be between 1s and 10m");
        }
        if self.signal_hello_timeout < Duration::from_millis(100)
            || self.signal_hello_timeout > Duration::from_secs(60)
        {
            bail!("ALCOVE_SIGNAL_HELLO_TIMEOUT must be between 100ms and 60s");
        }
        if self.signal_ping_interval < Duration::from_millis(100)
            || self.signal_ping_interval > Duration::from_secs(60)
        {
            bail!("ALCOVE_SIGNAL_PING_INTERVAL must be between 100ms and 60s");
        }
        if self.idle_sign_out < Duration::from_secs(5)
            || self.idle_sign_out > Duration::from_secs(24 * 3600)
        {
            bail!("ALCOVE_IDLE_SIGN_OUT must be between 5s and 24h");
        }
        if self.node_id.is_empty()
            || self.node_id.len() > 64
            || !self
                .node_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            bail!("ALCOVE_NODE_ID must be 1 to 64 letters, digits, '-', '_' or '.'");
        }
        if let Some(url) = &self.redis_url {
            let u = url.expose();
            if !(u.starts_with("redis://") || u.starts_with("rediss://")) {
                bail!("ALCOVE_REDIS_URL must start with redis:// or rediss://");
            }
            let postgres = self
                .database_url
                .as_ref()
                .is_some_and(|d| d.expose().starts_with("postgres"));
            if !postgres {
                bail!(
                    "ALCOVE_REDIS_URL (several nodes) needs PostgreSQL as the database: set DATABASE_URL=postgres://…"
                );
            }
        }
        if self.room_lease < Duration::from_secs(1) || self.room_lease > Duration::from_secs(60) {
            bail!("ALCOVE_ROOM_LEASE must be between 1s and 60s");
        }
        if self.redis_prefix.is_empty()
            || self.redis_prefix.len() > 64
            || self.redis_prefix.contains([' ', '{', '}'])
        {
            bail!("ALCOVE_REDIS_PREFIX must be 1 to 64 characters, without spaces or braces");
        }

        if self.purge_interval < Duration::from_secs(1) {
            bail!("ALCOVE_PURGE_INTERVAL must be at least 1s");
        }
        for u in &self.webhook_urls {
            parse_public_url(u).with_context(|| format!("ALCOVE_WEBHOOK_URLS: {u:?}"))?;
        }
        if !self.webhook_urls.is_empty() && self.webhook_secret.is_none() {
            bail!(
                "ALCOVE_WEBHOOK_SECRET is needed with ALCOVE_WEBHOOK_URLS (receivers check the signature)"
            );
        }
        if self.webhook_max_attempts == 0 {
            bail!("ALCOVE_WEBHOOK_MAX_ATTEMPTS must be at least 1");
        }
        for o in &self.allowed_origins {
            if o != "*"
                && (parse_public_url(o).is_err()
                    || o.trim_end_matches('/').matches('/').count() != 2)
            {
                bail!(
                    "ALCOVE_ALLOWED_ORIGINS: {o:?} is not an origin like https://therapy.example.org"
                );
            }
        }
        if self.login_max_failures == 0 {
            bail!("ALCOVE_LOGIN_MAX_FAILURES must be at least 1");
        }
        if self.login_account_max_failures == 0 {
            bail!("ALCOVE_LOGIN_ACCOUNT_MAX_FAILURES must be at least 1");
        }
        if self.login_address_max == 0 {
            bail!("ALCOVE_LOGIN_ADDRESS_MAX must be at least 1");
        }
        if self.register_address_max == 0 {
            bail!("ALCOVE_REGISTER_ADDRESS_MAX must be at least 1");
        }
        self.trusted_proxy_nets()?;
        if self.hash_workers > 256 {
            bail!("ALCOVE_HASH_WORKERS must be at most 256");
        }
        if let Some(url) = &self.public_url {
            parse_public_url(url).context("ALCOVE_PUBLIC_URL")?;
        }
        if let Some(url) = self.database_url.as_ref().map(DatabaseUrl::expose)
            && !(url.starts_with("sqlite:")
                || url.starts_with("postgres:")
                || url.starts_with("postgresql:"))
        {
            bail!("DATABASE_URL must start with sqlite:// or postgres://");
        }
        Ok(())
    }

    /// `trusted_proxies` parsed: single addresses become /32 or /128 ranges.
    pub fn trusted_proxy_nets(&self) -> anyhow::Result<Vec<ipnet::IpNet>> {
        self.trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<ipnet::IpNet>()
                    .or_else(|_| p.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "ALCOVE_TRUSTED_PROXIES: {p:?} is not an IP address or CIDR range like 10.0.0.0/8"
                        )
                    })
            })
            .collect()
    }

    /// The SQLite file used when no `DATABASE_URL` is given.
    pub fn default_sqlite_path(&self) -> PathBuf {
        self.data_dir.join("alcove.db")
    }

    /// The folder holding the SQLite database (its disk is watched for free space).
    pub fn default_sqlite_dir(&self) -> PathBuf {
        let file = match &self.database_url {
            Some(url) => {
                let u = url.expose();
                let path = u
                    .strip_prefix("sqlite://")
                    .or_else(|| u.strip_prefix("sqlite:"))
                    .unwrap_or(u);
                PathBuf::from(path.split('?').next().unwrap_or(path))
            }
            None => self.default_sqlite_path(),
        };
        match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        }
    }

    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir.join("keys")
    }

    /// Whether this server terminates TLS itself.
    pub fn serves_tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// Whether people reach this server over HTTPS (here or through a proxy): then every
    /// response carries `Strict-Transport-Security`.
    pub fn https(&self) -> bool {
        self.serves_tls()
            || self
                .public_url
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
    }

    /// The public base URL, given or derived from the bound address.
    pub fn public_base(&self, bound: SocketAddr) -> String {
        let scheme = if self.serves_tls() { "https" } else { "http" };
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_owned(),
            None if bound.ip().is_unspecified() => format!("{scheme}://localhost:{}", bound.port()),
            None => format!("{scheme}://{bound}"),
        }
    }
}

/// A public URL must be absolute http(s) with a host and no query or fragment.
fn parse_public_url(raw: &str) -> anyhow::Result<()> {
    let rest = raw
        .strip_prefix("https://")
        .or_else(|| raw.strip_prefix("http://"))
        .context("must start with http:// or https://")?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || raw.contains(['?', '#', ' ']) {
        bail!("must be an absolute URL such as https://therapy.example.org");
    }
    Ok(())
}

/// Every `ALCOVE_*` variable that is set but unknown, for a warning at start.
pub fn unknown_env_vars(known: &[String]) -> Vec<String> {
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("ALCOVE_") && !known.iter().any(|n| n == k))
        .collect()
}

/// Resolve a path given relative to the working directory, for messages.
pub fn display_path(p: &Path) -> String {
    std::path::absolute(p)
        .unwrap_or_else(|_| p.to_owned())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_the_docs_say() {
        assert_eq!(duration::parse("90s").unwrap(), Duration::from_secs(90));
        assert_eq!(duration::parse("10m").unwrap(), Duration::from_secs(600));
        assert_eq!(duration::parse("12h").unwrap(), Duration::from_secs(43200));
        assert!(duration::parse("soon").is_err());
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let c = Config {
            database_url: Some(DatabaseUrl::new(
                "postgres://alcove:hunter2-db@db.internal:5432/alcove?sslmode=require&password=hunter2-q",
            )),
            turn_secret: Some("hunter2-turn".to_owned().into()),
            webhook_secret: Some("hunter2-hook".to_owned().into()),
            ..Config::default()
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://alcove:***@db.internal:5432/alcove?sslmode=require"),
            "the host stays visible: {shown}"
        );

        use clap::Parser as _;
        let cli = crate::cli::Cli::try_parse_from([
            "alcove",
            "--database-url",
            "postgres://alcove:hunter2-db@db/alcove",
            "--turn-secret",
            "hunter2-turn",
            "--webhook-secret",
            "hunter2-hook",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        // The values themselves still reach the configuration.
        let loaded = Config::load(&cli.serve.common, Some(&cli.serve.serve));
        let loaded = loaded.expect("valid");
        assert_eq!(
            loaded.database_url.unwrap().expose(),
            "postgres://alcove:hunter2-db@db/alcove"
        );
        use secrecy::ExposeSecret as _;
        assert_eq!(loaded.turn_secret.unwrap().expose_secret(), "hunter2-turn");
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().check().unwrap();
    }

    #[test]
    fn bad_values_name_the_option() {
        let c = Config {
            public_url: Some("ftp://x".into()),
            ..Config::default()
        };
        assert!(format!("{:#}", c.check().unwrap_err()).contains("ALCOVE_PUBLIC_URL"));
        let c = Config {
            access_token_ttl: Duration::from_secs(3 * 24 * 3600),
            ..Config::default()
        };
        assert!(
            c.check()
                .unwrap_err()
                .to_string()
                .contains("ALCOVE_ACCESS_TOKEN_TTL")
        );
    }
}

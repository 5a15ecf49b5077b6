//! The command line: `alcove [serve]`, `alcove migrate`, `alcove user …`, `alcove keys …`.
//!
//! Every option can also be given as an environment variable (shown in `--help`) or as a
//! key of the TOML file named by `--config`; see `docs/configuration.md`.

use crate::config::{DatabaseUrl, LogFormat, SecretArg, duration, opt_duration};
use crate::domain::Role;
use clap::{Args, Parser, Subcommand, builder::BoolishValueParser};
use serde::Serialize;
use std::{net::SocketAddr, path::PathBuf, time::Duration};

/// Alcove: video sessions between therapists and their clients, in the browser.
///
/// With no command, runs the server (`alcove serve`) on 127.0.0.1:8080 with a SQLite
/// database in ./data: no setup needed.
#[derive(Debug, Parser)]
#[command(name = "alcove", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub serve: ServeCmd,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (the default command).
    Serve(Box<ServeCmd>),
    /// Apply database migrations and exit (the server also applies them at start).
    Migrate(CommonArgs),
    /// Manage accounts.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage the keys that sign access and join tokens.
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Check the audit trail.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Check a configuration.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Ask the server on this machine whether it is up (GET /healthz on its listen
    /// address): exit status 0 if it answers 200 within 3 s, 1 otherwise. For container
    /// HEALTHCHECKs and service managers; the image needs no curl.
    Healthcheck(Box<HealthcheckCmd>),
    /// Make a consistent copy of the SQLite database while the server runs (PostgreSQL:
    /// use pg_dump). Copy the signing keys (<data dir>/keys) beside it: tokens need them.
    Backup {
        #[command(flatten)]
        common: CommonArgs,
        /// Where to write the copy (a new file)
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
    },
    /// Run a synthetic call through a deployment (sign in the two probe accounts, open a
    /// probe appointment, join, admit, connect two WebRTC peers, exchange data, end):
    /// each step's time on standard output, exit status 1 at the first step that fails.
    /// For uptime monitoring and after every deploy. See docs/network-test.md.
    Probe(Box<ProbeCmd>),
}

/// `alcove probe`.
#[derive(Debug, Clone, Args)]
pub struct ProbeCmd {
    /// The deployment's public URL (e.g. https://therapy.example.org)
    #[arg(value_name = "BASE_URL")]
    pub base_url: String,
    /// The probe's therapist account (the first of the server's ALCOVE_PROBE_ACCOUNTS)
    #[arg(long, env = "ALCOVE_PROBE_THERAPIST_EMAIL", value_name = "EMAIL")]
    pub therapist_email: String,
    /// Its password: give it in the environment, not on a command line (which other users
    /// of the machine can read)
    #[arg(
        long,
        env = "ALCOVE_PROBE_THERAPIST_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub therapist_password: SecretArg,
    /// The probe's client account (the second of ALCOVE_PROBE_ACCOUNTS)
    #[arg(long, env = "ALCOVE_PROBE_CLIENT_EMAIL", value_name = "EMAIL")]
    pub client_email: String,
    /// Its password, in the environment
    #[arg(
        long,
        env = "ALCOVE_PROBE_CLIENT_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    pub client_password: SecretArg,
    /// Connect through the TURN relay only (checks the relay path)
    #[arg(long)]
    pub relay_only: bool,
    /// The local UDP address the probe's WebRTC peers bind [default: 0.0.0.0:0]
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:0")]
    pub bind: std::net::SocketAddr,
    /// Give up on a step after this long
    #[arg(long, value_name = "DURATION", value_parser = duration::parse, default_value = "20s")]
    pub step_timeout: Duration,
}

/// `alcove healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckCmd {
    #[command(flatten)]
    pub serve: ServeCmd,
    /// What to ask instead of this configuration's /healthz (e.g. http://127.0.0.1:8080/readyz)
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCmd {
    /// Load the configuration as the server would (file, flags, environment), check it,
    /// and print the effective value of every option, secrets masked. Exit status 1, with
    /// the reason, when it is invalid.
    Check(Box<ServeCmd>),
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Walk the audit trail's hash chain and report the first broken link (exit status 1
    /// when broken).
    Verify(CommonArgs),
}

/// Options every command takes.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct CommonArgs {
    /// TOML file with options as snake_case keys (`listen = "0.0.0.0:8080"`); flags and
    /// environment variables override it.
    #[arg(long, env = "ALCOVE_CONFIG", value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Folder for state: the SQLite database and the token signing keys, created when
    /// missing [default: data]
    #[arg(long, env = "ALCOVE_DATA_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,

    /// Database: sqlite://PATH or postgres://USER@HOST:PORT/DB
    /// [default: the SQLite file alcove.db in the data folder]
    #[arg(long, env = "DATABASE_URL", value_name = "URL", hide_env_values = true)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<DatabaseUrl>,

    /// Log format; the level follows RUST_LOG (e.g. RUST_LOG=debug) [default: text]
    #[arg(long, env = "ALCOVE_LOG_FORMAT", value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_format: Option<LogFormat>,
}

/// `alcove serve`.
#[derive(Debug, Clone, Default, Args)]
pub struct ServeCmd {
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Options of the server.
#[derive(Debug, Clone, Default, Args, Serialize)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:8080]
    #[arg(long, env = "ALCOVE_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,

    /// The URL people reach this server at, used for links in calendar entries, the
    /// allowed browser origin and the signalling URL [default: http://<listen address>]
    #[arg(long, env = "ALCOVE_PUBLIC_URL", value_name = "URL")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,

    /// Serve HTTPS with this PEM certificate chain (and ALCOVE_TLS_KEY) instead of plain
    /// HTTP, for a single server without a TLS-terminating proxy [default: none]
    #[arg(long, env = "ALCOVE_TLS_CERT", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of ALCOVE_TLS_CERT [default: none]
    #[arg(long, env = "ALCOVE_TLS_KEY", value_name = "FILE")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_key: Option<PathBuf>,

    /// Largest number of pooled database connections [default: 10]
    #[arg(long, env = "ALCOVE_DB_MAX_CONNECTIONS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub db_max_connections: Option<u32>,

    /// Whether clients may create their own accounts [default: true]
    #[arg(long, env = "ALCOVE_ALLOW_REGISTRATION", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_registration: Option<bool>,

    /// Lifetime of access tokens [default: 15m]
    #[arg(long, env = "ALCOVE_ACCESS_TOKEN_TTL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub access_token_ttl: Option<Duration>,

    /// Lifetime of each refresh token; every refresh issues a new one [default: 30d]
    #[arg(long, env = "ALCOVE_REFRESH_TOKEN_TTL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub refresh_token_ttl: Option<Duration>,

    /// Longest a sign-in lasts, however often it is refreshed [default: 90d]
    #[arg(long, env = "ALCOVE_SESSION_MAX_AGE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub session_max_age: Option<Duration>,

    /// Sign-in attempts at one email address from one client address within the login
    /// window before that address gets 429 (a success starts afresh) [default: 10]
    #[arg(long, env = "ALCOVE_LOGIN_MAX_FAILURES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_max_failures: Option<u32>,

    /// Failed sign-ins at one email address from all addresses within the login window
    /// after which sign-ins to it are slowed to one per 3 seconds (addresses it signed in
    /// from before are not slowed) [default: 100]
    #[arg(long, env = "ALCOVE_LOGIN_ACCOUNT_MAX_FAILURES", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_account_max_failures: Option<u32>,

    /// Sign-in attempts from one client address (IPv4, or IPv6 /64) within the login
    /// window, whatever the email [default: 100]
    #[arg(long, env = "ALCOVE_LOGIN_ADDRESS_MAX", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub login_address_max: Option<u32>,

    /// Registrations from one client address within the login window [default: 20]
    #[arg(long, env = "ALCOVE_REGISTER_ADDRESS_MAX", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub register_address_max: Option<u32>,

    /// Window over which sign-in and registration attempts are counted [default: 15m]
    #[arg(long, env = "ALCOVE_LOGIN_WINDOW", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub login_window: Option<Duration>,

    /// Reverse proxies (IP addresses or CIDR ranges, comma-separated) whose
    /// X-Forwarded-For names the client; from anyone else the header is ignored
    /// [default: none]
    #[arg(
        long,
        env = "ALCOVE_TRUSTED_PROXIES",
        value_name = "ADDRS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trusted_proxies: Option<Vec<String>>,

    /// Threads that hash passwords (Argon2id, 19 MiB each) [default: one per core]
    #[arg(long, env = "ALCOVE_HASH_WORKERS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hash_workers: Option<usize>,

    /// Serve the web client from this folder instead of the copy built into the binary
    /// (for working on web/)
    #[arg(long, env = "ALCOVE_WEB_DIR", value_name = "DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_dir: Option<PathBuf>,

    /// Shortest notice a client may book an appointment with [default: 12h]
    #[arg(long, env = "ALCOVE_MIN_NOTICE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub min_notice: Option<Duration>,

    /// How long before an appointment's start its participants may join [default: 10m]
    #[arg(long, env = "ALCOVE_JOIN_OPENS_BEFORE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub join_opens_before: Option<Duration>,

    /// How long after an appointment's end its session may go on [default: 30m]
    #[arg(long, env = "ALCOVE_JOIN_CLOSES_AFTER", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub join_closes_after: Option<Duration>,

    /// A client cancelling later than this before the start is recorded as a late
    /// cancellation [default: 24h]
    #[arg(long, env = "ALCOVE_LATE_CANCEL_WINDOW", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub late_cancel_window: Option<Duration>,

    /// Browser origins allowed to open the signalling WebSocket, comma-separated
    /// [default: the origin of the public URL]
    #[arg(
        long,
        env = "ALCOVE_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_origins: Option<Vec<String>>,

    /// STUN server URLs for browsers, comma-separated (stun:host:port) [default: none]
    #[arg(
        long,
        env = "ALCOVE_STUN_URLS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stun_urls: Option<Vec<String>>,

    /// TURN server URLs, comma-separated (turn:host:3478?transport=udp,turns:host:5349)
    /// [default: none]
    #[arg(
        long,
        env = "ALCOVE_TURN_URLS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_urls: Option<Vec<String>>,

    /// The TURN server's shared secret (coturn static-auth-secret) for minting credentials
    #[arg(
        long,
        env = "ALCOVE_TURN_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub turn_secret: Option<SecretArg>,

    /// Lifetime of minted TURN credentials; fresh ones are sent before they expire [default: 1h]
    #[arg(long, env = "ALCOVE_TURN_TTL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub turn_ttl: Option<Duration>,

    /// Make every browser use TURN only, so that no one learns another's IP address
    /// (needs TURN) [default: false]
    #[arg(long, env = "ALCOVE_RELAY_ONLY", value_name = "BOOL", value_parser = BoolishValueParser::new())]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_only: Option<bool>,

    /// The SMTP server for outgoing mail: smtps://user:pass@host:465,
    /// smtp://host:587?tls=required, smtp://127.0.0.1:2525 [default: none, no mail]
    #[arg(
        long,
        env = "ALCOVE_SMTP_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub smtp_url: Option<SecretArg>,

    /// The sender of outgoing mail, e.g. "Alcove <no-reply@example.org>" [default: none]
    #[arg(long, env = "ALCOVE_MAIL_FROM", value_name = "MAILBOX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail_from: Option<String>,

    /// How long one conversation with the SMTP server may take before it is retried
    /// later [default: 30s]
    #[arg(long, env = "ALCOVE_SMTP_TIMEOUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub smtp_timeout: Option<Duration>,

    /// Reminder lead times before each appointment, comma-separated (empty: none)
    /// [default: 24h,1h]
    #[arg(long, env = "ALCOVE_REMINDERS", value_name = "DURATIONS", value_parser = reminders)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reminders: Option<String>,

    /// The synthetic call's accounts for `alcove probe`: the therapist's email, then the
    /// client's, kept for the probe alone [default: none]
    #[arg(
        long,
        env = "ALCOVE_PROBE_ACCOUNTS",
        value_name = "EMAILS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub probe_accounts: Option<Vec<String>>,

    /// Network tests this node runs at once [default: 8]
    #[arg(long, env = "ALCOVE_NETWORK_TEST_MAX", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_test_max: Option<usize>,

    /// Network tests one account may start in an hour [default: 12]
    #[arg(long, env = "ALCOVE_NETWORK_TEST_PER_HOUR", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_test_per_hour: Option<u32>,

    /// UDP address of the network test's WebRTC peer [default: 0.0.0.0:0]
    #[arg(long, env = "ALCOVE_NETWORK_TEST_UDP", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_test_udp: Option<SocketAddr>,

    /// Lifetime of join tokens for the signalling service [default: 2m]
    #[arg(long, env = "ALCOVE_JOIN_TOKEN_TTL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub join_token_ttl: Option<Duration>,

    /// How long a dropped participant's place in a session is held [default: 30s]
    #[arg(long, env = "ALCOVE_SIGNAL_GRACE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub signal_grace: Option<Duration>,

    /// Longest a request may take before it is answered 503 (a slow database) [default: 30s]
    #[arg(long, env = "ALCOVE_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub request_timeout: Option<Duration>,

    /// Longest a request's headers may take to arrive; a connection that trickles them is
    /// closed (slowloris) [default: 10s]
    #[arg(long, env = "ALCOVE_HEADER_TIMEOUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub header_timeout: Option<Duration>,

    /// Connections open at once from one client address (an IPv6 /64), WebSockets
    /// included; trusted proxies are not limited; 0: no limit [default: 256]
    #[arg(long, env = "ALCOVE_MAX_CONNECTIONS_PER_ADDRESS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_connections_per_address: Option<usize>,

    /// Serve /metrics on this address only, not on the public listener (e.g. 127.0.0.1:9090)
    #[arg(long, env = "ALCOVE_METRICS_LISTEN", value_name = "ADDR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// On SIGTERM, the longest the drain takes before exiting: connections are told to
    /// reconnect, rooms handed over, requests finished [default: 10s]
    #[arg(long, env = "ALCOVE_DRAIN_TIMEOUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub drain_timeout: Option<Duration>,

    /// How long a new signalling connection has to send hello [default: 5s]
    #[arg(long, env = "ALCOVE_SIGNAL_HELLO_TIMEOUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub signal_hello_timeout: Option<Duration>,

    /// How often signalling connections are pinged; silent for three intervals means dead
    /// [default: 10s]
    #[arg(long, env = "ALCOVE_SIGNAL_PING_INTERVAL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub signal_ping_interval: Option<Duration>,

    /// The web client signs out after this long without activity, outside a call
    /// [default: 15m]
    #[arg(long, env = "ALCOVE_IDLE_SIGN_OUT", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub idle_sign_out: Option<Duration>,

    /// This server's name in session records and among several nodes (set a distinct one
    /// per node) [default: local]
    #[arg(long, env = "ALCOVE_NODE_ID", value_name = "NAME")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,

    /// Redis, for several nodes (redis://[user:password@]host:port[/db]); needs PostgreSQL
    /// as the database. Without it, one node keeps everything in its own memory
    /// [default: none]
    #[arg(
        long,
        env = "ALCOVE_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<DatabaseUrl>,

    /// Prefix of every Redis key this deployment uses (several deployments can share one
    /// Redis) [default: alcove]
    #[arg(long, env = "ALCOVE_REDIS_PREFIX", value_name = "PREFIX")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_prefix: Option<String>,

    /// Several nodes: how long a node's claim on a room lasts without renewal; when a node
    /// dies, another takes its rooms over once this has passed [default: 3s]
    #[arg(long, env = "ALCOVE_ROOM_LEASE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub room_lease: Option<Duration>,

    /// Token signing keys as configuration: Ed25519 PKCS#8 PEM blocks, the first one signing
    /// (`alcove keys generate` makes one). Give every node the same value. Without it the
    /// keys live in the data folder [default: none]
    #[arg(
        long,
        env = "ALCOVE_SIGNING_KEYS",
        value_name = "PEM",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_keys: Option<SecretArg>,

    /// How long session records are kept after a session ends [default: 2192d, six years]
    #[arg(long, env = "ALCOVE_SESSION_RETENTION", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub session_retention: Option<Duration>,

    /// How long audit trail entries are kept [default: 2192d, six years]
    #[arg(long, env = "ALCOVE_AUDIT_RETENTION", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub audit_retention: Option<Duration>,

    /// How often the retention purge runs [default: 1h]
    #[arg(long, env = "ALCOVE_PURGE_INTERVAL", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub purge_interval: Option<Duration>,

    /// URLs that receive signed session webhooks, comma-separated [default: none]
    #[arg(
        long,
        env = "ALCOVE_WEBHOOK_URLS",
        value_name = "URLS",
        value_delimiter = ','
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_urls: Option<Vec<String>>,

    /// Secret for the webhooks' HMAC-SHA256 signature
    #[arg(
        long,
        env = "ALCOVE_WEBHOOK_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretArg>,

    /// First retry delay of a failed webhook, doubling each time up to 1h [default: 2s]
    #[arg(long, env = "ALCOVE_WEBHOOK_RETRY_BASE", value_name = "DURATION", value_parser = duration::parse)]
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_duration")]
    pub webhook_retry_base: Option<Duration>,

    /// Attempts before a webhook delivery is given up [default: 12]
    #[arg(long, env = "ALCOVE_WEBHOOK_MAX_ATTEMPTS", value_name = "N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_max_attempts: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create an account. The password is read from standard input (one line).
    ///
    /// The first administrator of a fresh install is made this way:
    ///   alcove user create --email you@example.org --name "Your Name" --role admin
    Create {
        #[command(flatten)]
        common: CommonArgs,
        /// Email address (the sign-in name)
        #[arg(long)]
        email: String,
        /// Name shown to others
        #[arg(long)]
        name: String,
        /// client, therapist or admin
        #[arg(long, value_parser = parse_role)]
        role: Role,
    },
    /// Set an account's password (read from standard input) and sign it out everywhere.
    SetPassword {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        email: String,
    },
    /// Disable an account: it can no longer sign in, and its sign-ins end at once.
    Disable {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled account again.
    Enable {
        #[command(flatten)]
        common: CommonArgs,
        #[arg(long)]
        email: String,
    },
    /// List accounts, newest first: id, role, state (active or disabled), created, email,
    /// name. Never a password hash.
    List {
        #[command(flatten)]
        common: CommonArgs,
        /// Only this role: client, therapist or admin
        #[arg(long, value_parser = parse_role)]
        role: Option<Role>,
        /// One JSON object per line instead of columns
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Add a new signing key and make it current; older keys keep verifying until deleted.
    Rotate(CommonArgs),
    /// Print a new signing key as PEM, for ALCOVE_SIGNING_KEYS (several nodes share it).
    Generate,
    /// List the key ids, marking the current one.
    List(CommonArgs),
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: crate::domain::Invalid| e.0)
}

/// The environment variables the command line knows, for warning about unknown ones.
/// `--reminders`: checked here so that a bad list names the option.
fn reminders(s: &str) -> Result<String, String> {
    crate::config::durations::parse(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("ALCOVE_REMINDERS / --reminders: {e}"))
}

pub fn known_env_vars() -> Vec<String> {
    fn walk(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.push(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = Vec::new();
    walk(&<Cli as clap::CommandFactory>::command(), &mut out);
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn known_env_vars_include_the_documented_ones() {
        let known = known_env_vars();
        for v in [
            "ALCOVE_LISTEN",
            "ALCOVE_DATA_DIR",
            "DATABASE_URL",
            "ALCOVE_CONFIG",
        ] {
            assert!(known.iter().any(|k| k == v), "{v}");
        }
    }
}

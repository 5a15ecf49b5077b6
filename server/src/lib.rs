//! Alcove's server: the `alcove` binary's library.
//!
//! - [`cli`] and [`config`] read the command line and configuration (defaults, TOML file,
//!   environment).
//! - [`startup`] builds the [`state::AppState`], binds the listener and serves.
//! - [`http`] is the axum API, one module per feature, plus the embedded web client.
//! - [`auth`] holds signing keys, JWTs, password hashing, refresh tokens, the extractor.
//! - [`domain`] has the checked values (`Email`, `DisplayName`, `TimeZoneName`, …).
//! - [`store`] is the database, SQLite or PostgreSQL behind one interface.
//! - [`error`] is the API error and its RFC 9457 problem body.
//! - [`expiring`] holds counters and marks that expire (throttles, used join tokens): the
//!   state several nodes must share, behind one interface.
//! - [`signal`] joins the signalling crate to the server: join tokens, TURN credentials,
//!   the event sink.
//! - [`redis_store`] connects to Redis (several nodes) and keeps the shared counters there.
//! - [`records`] writes the session record and audit trail from room events, and runs the
//!   webhook, heartbeat and retention tasks.
//! - [`commands`] runs the admin subcommands (`migrate`, `user`, `keys`).
//! - [`telemetry`] sets up logging.

pub mod auth;
pub mod cli;
pub mod commands;
pub mod config;
pub mod db_health;
pub mod domain;
pub mod error;
pub mod expiring;
pub mod http;
pub mod mail;
pub mod metrics;
pub mod nettest;
pub mod probe;
pub mod records;
pub mod redis_store;
pub mod serve;
pub mod signal;
pub mod startup;
pub mod state;
pub mod store;
pub mod stun;
pub mod telemetry;
pub mod tls;

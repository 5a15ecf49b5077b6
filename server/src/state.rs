//! [`AppState`]: what every handler can reach.

use crate::{
    auth::{Jwt, LoginThrottle, Passwords},
    config::Config,
    store::Db,
};
use std::sync::Arc;

/// Shared state of the running server; cheap to clone.
#[derive(Clone, Debug)]
pub struct AppState {
    /// The database (SQLite or PostgreSQL).
    pub db: Db,
    /// Configuration as loaded at start; never changes while running.
    pub config: Arc<Config>,
    /// The base URL people reach this server at, without a trailing slash.
    pub public_url: Arc<str>,
    /// Signs and verifies access and join tokens.
    pub jwt: Jwt,
    /// Argon2id hashing, off the async runtime.
    pub passwords: Passwords,
    /// Failed sign-in counter per email address.
    pub login_throttle: Arc<LoginThrottle>,
    /// The signalling service (rooms of this node).
    pub hub: alcove_signaling::Hub,
    /// Mints ICE servers and TURN credentials.
    pub ice: crate::signal::IceMinter,
}

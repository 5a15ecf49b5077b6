//! Integration tests: each starts the real server on port 0 with a database of its own.
//! Tests that touch storage run twice, on SQLite and on PostgreSQL (`on_both_backends!`).

mod helpers;

mod admin;
mod appointments;
mod auth;
mod binary;
mod cluster;
mod deploy;
mod directory;
mod drain;
mod faults;
mod health;
mod limits;
mod mail;
mod metrics;
mod nettest;
mod peers;
mod process;
mod records;
mod revocation;
mod schemathesis;
mod signaling;
mod smtp_sink;
mod tls;
mod tokens;
mod turn;
mod turn_deny;

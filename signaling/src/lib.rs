//! Alcove's WebSocket signalling: protocol types, rooms with a waiting room, the
//! per-connection loop, and a Rust client for the protocol.
//!
//! Built by the signalling issue; the server crate depends on it from the start so that the
//! workspace layout is final.

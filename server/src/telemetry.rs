//! Logging with `tracing`: the level follows `RUST_LOG` (default `info`), the format is
//! text or JSON.
//!
//! What is never logged, by construction: request bodies, query strings and raw paths (the
//! request span records the route template, such as `/api/v1/calendar/{file}`), headers,
//! addresses of peers, tokens, passwords, SDP and ICE candidates.
//!
//! Other crates' `trace` output is dropped whatever `RUST_LOG` says: at that level some of
//! them print what passes through them (tungstenite prints every WebSocket message, so SDP
//! and candidates; axum prints rejected bodies). Their `debug` output and Alcove's own
//! `trace` output carry no content.

use crate::config::LogFormat;
use std::io::IsTerminal as _;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Install the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let content_guard = tracing_subscriber::filter::filter_fn(|meta| {
        meta.target().starts_with("alcove") || *meta.level() <= tracing::Level::DEBUG
    });
    let registry = tracing_subscriber::registry()
        .with(filter)
        .with(content_guard);
    // Colours only for a person at a terminal, and never when NO_COLOR is set.
    let ansi = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
    match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_target(true).with_ansi(ansi))
            .try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
    }
    Ok(())
}

//! Logging with `tracing`: the level follows `RUST_LOG` (default `info`), the format is
//! text or JSON.
//!
//! What is never logged, by construction: request bodies, query strings and raw paths (the
//! request span records the route template, such as `/api/v1/calendar/{token}`), headers,
//! addresses of peers, tokens, passwords, SDP and ICE candidates.

use crate::config::LogFormat;
use std::io::IsTerminal as _;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Install the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
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

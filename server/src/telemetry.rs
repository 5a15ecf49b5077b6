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
//! `trace` output carry no content. The WebRTC stack of the network test (`webrtc`, `rtc`,
//! `rtc_*`) is dropped at every level: even its warnings name peers' addresses.

use crate::config::LogFormat;
use std::io::IsTerminal as _;
use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

/// Whether a log target belongs to the WebRTC stack (webrtc-rs and its `rtc` crates).
pub fn is_webrtc_stack(target: &str) -> bool {
    let root = target.split("::").next().unwrap_or(target);
    root == "webrtc" || root == "rtc" || root.starts_with("rtc_")
}

/// Install the global subscriber. Returns an error if one is already installed.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let content_guard = tracing_subscriber::filter::filter_fn(|meta| {
        let t = meta.target();
        if is_webrtc_stack(t) {
            return false;
        }
        t.starts_with("alcove") || *meta.level() <= tracing::Level::DEBUG
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_webrtc_stack_is_recognised_by_its_targets() {
        for t in [
            "webrtc::peer_connection::driver",
            "rtc::peer_connection::handler::ice",
            "rtc_ice::agent",
            "rtc_sctp",
        ] {
            assert!(super::is_webrtc_stack(t), "{t}");
        }
        for t in ["alcove::nettest", "rtcp_like_other", "tower_http::trace"] {
            assert!(!super::is_webrtc_stack(t), "{t}");
        }
    }
}

//! Checks on what peers send, before anything is relayed.

use crate::{
    SignalingConfig,
    protocol::{Candidate, ClientMessage, Description, ErrorCode, Stats},
};
use std::io::Cursor;

/// A refused message: the code and a message for the sender.
pub type Refusal = (ErrorCode, String);

/// Known message types, to tell an unknown `type` from a malformed known one.
const TYPES: &[&str] = &[
    "hello", "admit", "deny", "notice", "signal", "stats", "leave", "end",
];

/// Parse a text frame into a message, or say why not (`malformed_message` or
/// `unknown_type`).
pub fn message(text: &str) -> Result<ClientMessage, Refusal> {
    // The usual case in one pass; what does not parse is looked at again, to say why.
    if let Ok(msg) = serde_json::from_str::<ClientMessage>(text) {
        crate::stats::message(msg.kind());
        return Ok(msg);
    }
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|_| (ErrorCode::MalformedMessage, "not a JSON object".to_owned()))?;
    let Some(kind) = value
        .get("type")
        .and_then(|t| t.as_str())
        .map(str::to_owned)
    else {
        return Err((
            ErrorCode::MalformedMessage,
            "a message needs a string `type`".into(),
        ));
    };
    if !TYPES.contains(&kind.as_str()) {
        return Err((
            ErrorCode::UnknownType,
            format!("unknown message type {kind:?}"),
        ));
    }
    let msg = serde_json::from_value(value).map_err(|e| {
        (
            ErrorCode::MalformedMessage,
            format!("bad {kind} message: {e}"),
        )
    })?;
    crate::stats::message(&kind);
    Ok(msg)
}

/// What a parsed message carries, checked by its type: a `signal`'s description or
/// candidate (exactly one), `stats` figures, a notice's text. A second `hello` is refused.
pub fn content(msg: &ClientMessage, cfg: &SignalingConfig) -> Result<(), Refusal> {
    match msg {
        ClientMessage::Hello { .. } => {
            Err((ErrorCode::HelloRequired, "hello was already sent".into()))
        }
        ClientMessage::Signal {
            description,
            candidate: cand,
            ..
        } => match (description, cand) {
            (Some(d), None) => self::description(d, cfg),
            (None, Some(c)) => candidate(c, cfg),
            _ => Err((
                ErrorCode::InvalidSignal,
                "a signal carries either a description or a candidate".into(),
            )),
        },
        ClientMessage::Stats(s) => stats(s),
        ClientMessage::Notice { text, .. } => notice(text),
        _ => Ok(()),
    }
}

/// A description: a known type, and SDP that parses (rollback excepted), within the limit.
pub fn description(d: &Description, cfg: &SignalingConfig) -> Result<(), Refusal> {
    if !matches!(
        d.kind.as_str(),
        "offer" | "answer" | "pranswer" | "rollback"
    ) {
        return Err((
            ErrorCode::InvalidSdp,
            "description type must be offer, answer, pranswer or rollback".into(),
        ));
    }
    if d.sdp.len() > cfg.max_sdp_bytes {
        return Err((
            ErrorCode::InvalidSdp,
            format!("SDP over {} bytes", cfg.max_sdp_bytes),
        ));
    }
    if d.kind == "rollback" {
        return Ok(());
    }
    if d.sdp.trim().is_empty() {
        return Err((ErrorCode::InvalidSdp, "SDP is empty".into()));
    }
    rtc_sdp::SessionDescription::unmarshal(&mut Cursor::new(d.sdp.as_bytes()))
        .map(|_| ())
        .map_err(|e| (ErrorCode::InvalidSdp, format!("SDP does not parse: {e}")))
}

/// A candidate: within the limit, a `candidate:` line or empty (end of candidates).
pub fn candidate(c: &Candidate, cfg: &SignalingConfig) -> Result<(), Refusal> {
    let bad = |m: &str| Err((ErrorCode::InvalidCandidate, m.to_owned()));
    if c.candidate.len() > cfg.max_candidate_bytes {
        return bad("candidate too long");
    }
    let is_line = c.candidate.starts_with("candidate:") || c.candidate.starts_with("a=candidate:");
    if !(c.candidate.is_empty() || is_line) {
        return bad("not a candidate line");
    }
    if c.sdp_mid.as_ref().is_some_and(|m| m.len() > 64)
        || c.username_fragment.as_ref().is_some_and(|u| u.len() > 256)
    {
        return bad("sdpMid or usernameFragment too long");
    }
    Ok(())
}

/// Stats: finite figures in plausible ranges.
pub fn stats(s: &Stats) -> Result<(), Refusal> {
    let in_range =
        |v: Option<f64>, max: f64| v.is_none_or(|v| v.is_finite() && (0.0..=max).contains(&v));
    let ok = in_range(s.rtt_ms, 600_000.0)
        && in_range(s.jitter_ms, 600_000.0)
        && in_range(s.packet_loss, 1.0)
        && in_range(s.bitrate_kbps, 10_000_000.0)
        && s.path
            .as_deref()
            .is_none_or(|p| p == "direct" || p == "relay");
    if ok {
        Ok(())
    } else {
        Err((ErrorCode::InvalidStats, "stats figures out of range".into()))
    }
}

/// Longest waiting-room notice, in characters.
pub const MAX_NOTICE_CHARS: usize = 280;

/// A notice: 1 to 280 characters, no control characters but line breaks.
pub fn notice(text: &str) -> Result<(), Refusal> {
    let n = text.chars().count();
    if n == 0 || n > MAX_NOTICE_CHARS || text.chars().any(|c| c.is_control() && c != '\n') {
        return Err((
            ErrorCode::InvalidNotice,
            format!("a notice is 1 to {MAX_NOTICE_CHARS} characters of text"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SDP: &str = "v=0\r\no=- 4215775240449105457 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\na=setup:actpass\r\na=mid:0\r\na=sctp-port:5000\r\n";

    fn d(kind: &str, sdp: &str) -> Description {
        Description {
            kind: kind.into(),
            sdp: sdp.into(),
        }
    }

    #[test]
    fn descriptions() {
        let cfg = SignalingConfig::default();
        assert!(description(&d("offer", SDP), &cfg).is_ok());
        assert!(description(&d("rollback", ""), &cfg).is_ok());
        assert_eq!(
            description(&d("bogus", SDP), &cfg).unwrap_err().0,
            ErrorCode::InvalidSdp
        );
        assert!(description(&d("offer", "hello there"), &cfg).is_err());
        assert!(description(&d("answer", ""), &cfg).is_err());
        let huge = format!("{SDP}{}", "a=x\r\n".repeat(20_000));
        assert!(description(&d("offer", &huge), &cfg).is_err());
    }

    #[test]
    fn candidates_stats_notices() {
        let cfg = SignalingConfig::default();
        let c = |s: &str| Candidate {
            candidate: s.into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
            username_fragment: None,
        };
        assert!(
            candidate(
                &c("candidate:1 1 udp 2130706431 127.0.0.1 50000 typ host"),
                &cfg
            )
            .is_ok()
        );
        assert!(candidate(&c(""), &cfg).is_ok());
        assert!(candidate(&c("rm -rf /"), &cfg).is_err());
        assert!(candidate(&c(&format!("candidate:{}", "1".repeat(2000))), &cfg).is_err());
        assert!(
            stats(&Stats {
                rtt_ms: Some(20.0),
                packet_loss: Some(0.01),
                ..Default::default()
            })
            .is_ok()
        );
        assert!(
            stats(&Stats {
                packet_loss: Some(3.0),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            stats(&Stats {
                rtt_ms: Some(f64::NAN),
                ..Default::default()
            })
            .is_err()
        );
        assert!(
            stats(&Stats {
                path: Some("10.0.0.1".into()),
                ..Default::default()
            })
            .is_err()
        );
        assert!(notice("Running five minutes late, sorry").is_ok());
        assert!(notice("").is_err());
        assert!(notice(&"x".repeat(281)).is_err());
    }
}

//! Counters of the signalling service for the server's `/metrics`: messages by type,
//! errors by code, and the traffic and latency of the Redis bus between nodes.
//!
//! They are process-wide (one process serves one node) and made of relaxed atomics: a
//! message costs one increment. Nothing here is personal: types, codes, counts and times.

use crate::protocol::ErrorCode;
use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// The message types a peer may send, in the order of [`Stats::messages`].
pub const MESSAGE_TYPES: [&str; 8] = [
    "hello", "admit", "deny", "notice", "signal", "stats", "leave", "end",
];

/// Upper bounds (seconds) of the latency histograms' buckets.
pub const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// A latency histogram: counts per bucket (not cumulative; the last counts what is over
/// every bound), and the sum.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

impl Histogram {
    const fn new() -> Self {
        Self {
            counts: [const { AtomicU64::new(0) }; BUCKETS.len() + 1],
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = BUCKETS
            .iter()
            .position(|b| s <= *b)
            .unwrap_or(BUCKETS.len());
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// (sum in seconds, count, count per bucket bound): not cumulative, the last bound
    /// `f64::MAX` (`+Inf`), as Prometheus encoders take them.
    pub fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut total = 0;
        let mut buckets = Vec::with_capacity(BUCKETS.len() + 1);
        for (i, c) in self.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            total += n;
            buckets.push((BUCKETS.get(i).copied().unwrap_or(f64::MAX), n));
        }
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, total, buckets)
    }
}

/// The Redis bus of several nodes.
#[derive(Debug)]
pub struct Bus {
    /// Commands appended to rooms' command streams by members on other nodes.
    pub commands_sent: AtomicU64,
    /// Command stream entries an owner read and handed to its rooms.
    pub commands_read: AtomicU64,
    /// Deliveries owners wrote to other nodes' delivery streams.
    pub deliveries_sent: AtomicU64,
    /// Deliveries this node read from its delivery stream.
    pub deliveries_read: AtomicU64,
    /// Owners' commits (each atomic: deliveries, position, snapshot, lease).
    pub commits: AtomicU64,
    /// Rooms this node took over from a node that died or stopped.
    pub takeovers: AtomicU64,
    /// Redis calls that failed (Redis away or too slow).
    pub errors: AtomicU64,
    /// How long an owner's commit took.
    pub commit_seconds: Histogram,
    /// How long a member's append to a command stream took.
    pub send_seconds: Histogram,
}

/// Every counter of the signalling service in this process.
#[derive(Debug)]
pub struct Stats {
    /// Messages from peers, by type (see [`MESSAGE_TYPES`]).
    pub messages: [AtomicU64; MESSAGE_TYPES.len()],
    /// `error` messages sent to peers, by code (in the order of [`ErrorCode::ALL`]).
    pub errors: [AtomicU64; ErrorCode::ALL.len()],
    pub bus: Bus,
}

/// This process's counters.
pub static STATS: Stats = Stats {
    messages: [const { AtomicU64::new(0) }; MESSAGE_TYPES.len()],
    errors: [const { AtomicU64::new(0) }; ErrorCode::ALL.len()],
    bus: Bus {
        commands_sent: AtomicU64::new(0),
        commands_read: AtomicU64::new(0),
        deliveries_sent: AtomicU64::new(0),
        deliveries_read: AtomicU64::new(0),
        commits: AtomicU64::new(0),
        takeovers: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        commit_seconds: Histogram::new(),
        send_seconds: Histogram::new(),
    },
};

/// Count a message of type `kind` (one of [`MESSAGE_TYPES`]).
pub(crate) fn message(kind: &str) {
    if let Some(i) = MESSAGE_TYPES.iter().position(|t| *t == kind) {
        STATS.messages[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// Count an `error` sent to a peer.
pub(crate) fn error(code: ErrorCode) {
    if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
        STATS.errors[i].fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) fn add(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

/// Read a counter.
pub fn get(counter: &AtomicU64) -> u64 {
    counter.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_its_buckets() {
        let h = Histogram::new();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(9));
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 3);
        assert!((sum - 9.0033).abs() < 1e-9, "{sum}");
        assert_eq!(buckets[0], (0.0005, 1));
        assert_eq!(buckets[3], (0.005, 1));
        assert_eq!(
            buckets.last().unwrap(),
            &(f64::MAX, 1),
            "9 s is over every bound"
        );
        assert_eq!(buckets.iter().map(|b| b.1).sum::<u64>(), 3);
    }
}

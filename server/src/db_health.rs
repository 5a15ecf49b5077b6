//! Whether the database answers, watched all the time, so that a database that went away
//! costs each request a clear 503 at once rather than a wait: requests that need it are
//! answered `database_unavailable` while it is down, and a probe notices within a quarter
//! of a second when it is back. Also the free space under the SQLite database.

use crate::{
    error::ApiError,
    metrics::ProblemCode,
    store::{Db, Fault},
};
use axum::{
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse as _, Response},
};
use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// How often the database is asked while it answers, and while it does not.
const PROBE_UP: Duration = Duration::from_secs(1);
const PROBE_DOWN: Duration = Duration::from_millis(250);
/// How long a probe waits for an answer.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Free space under which the server warns (log, `/readyz`).
pub const LOW_DISK_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct DbHealth {
    down: AtomicBool,
    since: Mutex<Option<Instant>>,
    wake: Notify,
    /// Free bytes under the SQLite database (`u64::MAX`: not measured, PostgreSQL).
    free_bytes: AtomicU64,
}

impl DbHealth {
    pub fn new() -> Arc<Self> {
        let h = Self::default();
        h.free_bytes.store(u64::MAX, Ordering::Relaxed);
        Arc::new(h)
    }

    /// The database is known not to answer now.
    pub fn is_down(&self) -> bool {
        self.down.load(Ordering::Relaxed)
    }

    /// A request found the database failing: stop sending it requests until a probe
    /// says it answers again.
    pub fn mark_down(&self) {
        if !self.down.swap(true, Ordering::Relaxed) {
            *self.since.lock().expect("since lock") = Some(Instant::now());
            tracing::warn!(
                "the database does not answer; requests that need it get 503 until it does"
            );
        }
        self.wake.notify_one();
    }

    fn mark_up(&self) {
        if self.down.swap(false, Ordering::Relaxed) {
            let since = self.since.lock().expect("since lock").take();
            tracing::info!(
                down_ms = since.map(|s| s.elapsed().as_millis() as u64),
                "the database answers again"
            );
        }
    }

    /// Free bytes under the SQLite database, when measured.
    pub fn free_bytes(&self) -> Option<u64> {
        match self.free_bytes.load(Ordering::Relaxed) {
            u64::MAX => None,
            n => Some(n),
        }
    }

    /// Whether free space under the database is low.
    pub fn disk_low(&self) -> bool {
        self.free_bytes().is_some_and(|n| n < LOW_DISK_BYTES)
    }

    /// Probe the database (and the disk under SQLite) until `stop`.
    pub async fn run(
        self: Arc<Self>,
        db: Db,
        sqlite_dir: Option<PathBuf>,
        stop: CancellationToken,
    ) {
        let mut last_disk = Instant::now() - Duration::from_secs(3600);
        loop {
            let wait = if self.is_down() { PROBE_DOWN } else { PROBE_UP };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.wake.notified() => {}
                () = stop.cancelled() => return,
            }
            match tokio::time::timeout(PROBE_TIMEOUT, db.ping()).await {
                Ok(Ok(())) => self.mark_up(),
                Ok(Err(e)) if crate::store::fault_of(&e) == Some(Fault::Unavailable) => {
                    self.mark_down()
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "database probe failed"),
                Err(_) => self.mark_down(),
            }
            if let Some(dir) = &sqlite_dir
                && (last_disk.elapsed() >= Duration::from_secs(5) || self.disk_low())
            {
                last_disk = Instant::now();
                self.measure_disk(dir);
            }
        }
    }

    fn measure_disk(&self, dir: &std::path::Path) {
        let Ok(st) = rustix::fs::statvfs(dir) else {
            return;
        };
        let free = st.f_bavail.saturating_mul(st.f_frsize);
        let was_low = self.disk_low();
        self.free_bytes.store(free, Ordering::Relaxed);
        if self.disk_low() && !was_low {
            tracing::warn!(
                free_bytes = free,
                "free space under the database is low: writes will fail when it runs out"
            );
        } else if was_low && !self.disk_low() {
            tracing::info!(free_bytes = free, "free space under the database is back");
        }
    }
}

/// Paths that never touch the database: they are answered whatever its state.
fn needs_database(path: &str) -> bool {
    path.starts_with("/api/")
        && !matches!(
            path,
            "/api/v1/client-config" | "/api/v1/openapi.json" | "/api/v1/signal"
        )
}

/// While the database is down, answer what needs it with 503 at once; and note when a
/// request found it failing.
pub async fn gate(State(health): State<Arc<DbHealth>>, req: Request, next: Next) -> Response {
    if health.is_down() && needs_database(req.uri().path()) {
        return ApiError::database(Fault::Unavailable).into_response();
    }
    let res = next.run(req).await;
    if res
        .extensions()
        .get::<ProblemCode>()
        .is_some_and(|c| c.0 == "database_unavailable")
    {
        health.mark_down();
    }
    res
}

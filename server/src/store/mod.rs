//! Storage: one interface over two backends.
//!
//! [`Db`] is either a SQLite pool (the embedded default) or a PostgreSQL pool. Queries are
//! written once, with `$1`-style placeholders that both drivers accept, and run through
//! [`on_pool!`], which type-checks the same body once per backend. Where the backends truly
//! differ (constraint errors, transaction start) the difference is named here, not scattered.
//!
//! Every time is bound by the application as a [`Ts`]; SQL never calls `now()`.

pub use appointments::{
    AddParticipantError, Appointment, AppointmentEvent, AppointmentFilter, BookingError,
    NewAppointment, Participant,
};
pub use availability::{AvailabilityRecord, ExceptionRow, SchedulingSettings, WeeklyRow};
pub use care::CareClient;
pub use mail::{DueMail, MailPlan, MailSettings, OutboxKind, OutboxRow, Recipient};
pub use network_tests::NetworkTestRecord;
pub use records::{
    Actor, AuditEntry, AuditFilter, AuditLink, AuditRow, AuditVerdict, DueDelivery, IntervalRecord,
    NewDelivery, ParticipantRecord, Purged, QualityRecord, RecordEvent, SessionRecord, SessionRow,
    SessionWrite,
};
pub use sessions::{RefreshOutcome, SessionUser};
pub use therapists::{DirectoryFilter, ProfileUpdate, TherapistProfile};
pub use ts::Ts;
pub use users::{Creator, NewUser, Revoked, User, UserWithHash};

use anyhow::Context as _;
use sqlx::{
    PgPool, Postgres, Sqlite, SqlitePool, Transaction,
    postgres::{PgConnectOptions, PgPoolOptions},
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};
use std::{str::FromStr, time::Duration};

/// Run `$body` with `$pool` bound to the concrete pool of `$db` (a `&Db`).
///
/// The body is compiled twice, once for each backend, so it must only use SQL and types
/// that both understand.
macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            $crate::store::Db::Sqlite($pool) => $body,
            $crate::store::Db::Postgres($pool) => $body,
        }
    };
}

/// Append an audit entry inside the transaction `$tx` of the database `$db` (so that a
/// change and its audit entry are committed together, or neither).
macro_rules! append_audit {
    ($db:expr, $tx:expr, $at:expr, $e:expr) => {{
        let lock = $db.backend().for_update();
        let (last_seq, last_hash): (i64, Vec<u8>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT seq, hash FROM audit_head WHERE id = 1{lock}"
        )))
        .fetch_one(&mut *$tx)
        .await?;
        let e: &$crate::store::AuditEntry = $e;
        let seq = last_seq + 1;
        let details = e.details.to_string();
        let hash = $crate::store::AuditLink {
            seq,
            at: $at,
            actor_id: e.actor_id,
            actor_role: e.actor_role.as_deref(),
            action: &e.action,
            target_type: &e.target_type,
            target_id: e.target_id.as_deref(),
            details: &details,
        }
        .hash(&last_hash);
        sqlx::query(
            "INSERT INTO audit_log (seq, at, actor_id, actor_role, action, target_type, target_id, details, prev_hash, hash)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(seq)
        .bind($at)
        .bind(e.actor_id)
        .bind(e.actor_role.as_deref())
        .bind(&e.action)
        .bind(&e.target_type)
        .bind(e.target_id.as_deref())
        .bind(&details)
        .bind(&last_hash)
        .bind(&hash)
        .execute(&mut *$tx)
        .await?;
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(seq)
            .bind(&hash)
            .execute(&mut *$tx)
            .await?;
    }};
}

mod appointments;
mod availability;
mod care;
pub mod mail;
mod network_tests;
mod records;
mod sessions;
mod therapists;
mod ts;
mod users;

/// The embedded migrations. Every migration only adds to the schema, so a binary one
/// version behind runs on a database another node already migrated (a rolling upgrade):
/// migrations applied but unknown to this binary are not an error.
static SQLITE_MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        let mut m = sqlx::migrate!("../migrations/sqlite");
        m.set_ignore_missing(true);
        m
    });
static POSTGRES_MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        let mut m = sqlx::migrate!("../migrations/postgres");
        m.set_ignore_missing(true);
        m
    });

/// A connection pool to one of the two supported databases.
#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Db`] talks to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The row-lock suffix of a `SELECT` inside a write transaction: PostgreSQL locks the
    /// row; SQLite's write transaction (`BEGIN IMMEDIATE`) already holds the database.
    pub fn for_update(self) -> &'static str {
        match self {
            Backend::Postgres => " FOR UPDATE",
            Backend::Sqlite => "",
        }
    }
}

/// A storage failure, classified so that callers can answer 404 or 409 where that is right.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness or exclusion constraint refused the write (the name says which).
    #[error("conflict on {0}")]
    Conflict(String),
    #[error("not found")]
    NotFound,
    /// The database cannot be reached or answer now (down, restarting, too slow, busy).
    #[error("the database is unavailable: {0}")]
    Unavailable(sqlx::Error),
    /// The disk under the database is full: writes fail, reads work.
    #[error("the database's disk is full: {0}")]
    Full(sqlx::Error),
    #[error(transparent)]
    Sqlx(sqlx::Error),
}

/// A failure of the database itself rather than of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Down, restarting, unreachable, too slow or too busy: try again shortly.
    Unavailable,
    /// No space left for writes.
    Full,
}

/// Whether `e` is the database failing (rather than the query): which way.
pub fn fault_of(e: &sqlx::Error) -> Option<Fault> {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => Some(Fault::Unavailable),
        sqlx::Error::Database(db) => {
            let code = db.code()?;
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                // SQLite's extended result code; the primary code is its low byte.
                let n: i32 = code.parse().ok()?;
                return match n & 0xff {
                    13 => Some(Fault::Full),                // SQLITE_FULL
                    5 | 6 | 10 => Some(Fault::Unavailable), // BUSY, LOCKED, IOERR
                    _ => None,
                };
            }
            // PostgreSQL SQLSTATE: connection exceptions, the server shutting down or
            // refusing connections, out of resources.
            match &*code {
                "53100" => Some(Fault::Full), // disk_full
                "53000" | "53200" | "53300" | "57P01" | "57P02" | "57P03" | "57014" => {
                    Some(Fault::Unavailable)
                }
                c if c.starts_with("08") => Some(Fault::Unavailable),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The fault, if any error in `e`'s chain is the database failing.
pub fn fault_in(e: &(dyn std::error::Error + 'static)) -> Option<Fault> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(s) = err.downcast_ref::<StoreError>() {
            match s {
                StoreError::Unavailable(_) => return Some(Fault::Unavailable),
                StoreError::Full(_) => return Some(Fault::Full),
                StoreError::Sqlx(e) => return fault_of(e),
                _ => {}
            }
        }
        if let Some(e) = err.downcast_ref::<sqlx::Error>()
            && let Some(f) = fault_of(e)
        {
            return Some(f);
        }
        cur = err.source();
    }
    None
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match fault_of(&e) {
            Some(Fault::Unavailable) => return StoreError::Unavailable(e),
            Some(Fault::Full) => return StoreError::Full(e),
            None => {}
        }
        if let Some(db) = e.as_database_error() {
            use sqlx::error::ErrorKind::*;
            if matches!(db.kind(), UniqueViolation | ExclusionViolation) {
                // PostgreSQL names the constraint; SQLite only says it in the message.
                let name = db
                    .constraint()
                    .map(str::to_owned)
                    .unwrap_or_else(|| db.message().to_owned());
                return StoreError::Conflict(name);
            }
            // SQLite overlap triggers raise ABORT with a message starting "conflict:".
            if let Some(rest) = db.message().strip_prefix("conflict:") {
                return StoreError::Conflict(rest.trim().to_owned());
            }
        }
        if matches!(e, sqlx::Error::RowNotFound) {
            return StoreError::NotFound;
        }
        StoreError::Sqlx(e)
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Starting a transaction that will write.
///
/// SQLite: `BEGIN IMMEDIATE` takes the write lock up front. A plain (deferred) transaction
/// that reads and then writes can fail at once with SQLITE_BUSY when another writer got
/// there first, without waiting for the busy timeout; immediate transactions queue instead,
/// and they serialise every check-then-write, which is what makes them safe. They queue in
/// this process, on the database's write turn ([`sqlite_write_turn`]), before they take a
/// connection: SQLite's own busy handler waits by sleeping (1, 2, 5, 10 … 100 ms at a
/// time, however soon the lock is free), which gave bookings at 10 concurrent clients a p99
/// of 750 ms and left the readers without connections (docs/BENCHMARKS.md, api).
/// PostgreSQL: an ordinary transaction; its invariants are held by constraints.
pub(crate) trait WritePool {
    type Db: sqlx::Database;
    async fn begin_write(&self) -> Result<WriteTx<Self::Db>, sqlx::Error>;
}

/// A write transaction, holding the database's write turn (SQLite) until it ends.
/// Dereferences to the connection, as [`Transaction`] does.
pub(crate) struct WriteTx<DB: sqlx::Database> {
    // Declared first, so dropped first: a transaction dropped without a commit queues its
    // rollback before the turn passes on (the next writer may still reach the database
    // before that rollback runs, and then waits in SQLite's busy handler: time, not harm).
    tx: Transaction<'static, DB>,
    _turn: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl<DB: sqlx::Database> WriteTx<DB> {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: sqlx::Database> std::ops::Deref for WriteTx<DB> {
    type Target = DB::Connection;
    fn deref(&self) -> &DB::Connection {
        &self.tx
    }
}

impl<DB: sqlx::Database> std::ops::DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.tx
    }
}

/// The write turn of the SQLite database at `file`: one writer at a time per database in
/// this process, served in arrival order.
fn sqlite_write_turn(file: &std::path::Path) -> std::sync::Arc<tokio::sync::Mutex<()>> {
    static TURNS: std::sync::LazyLock<
        std::sync::Mutex<
            std::collections::HashMap<std::path::PathBuf, std::sync::Arc<tokio::sync::Mutex<()>>>,
        >,
    > = std::sync::LazyLock::new(Default::default);
    TURNS
        .lock()
        .expect("write turns")
        .entry(file.to_path_buf())
        .or_default()
        .clone()
}

impl WritePool for SqlitePool {
    type Db = Sqlite;
    async fn begin_write(&self) -> Result<WriteTx<Sqlite>, sqlx::Error> {
        // As long as SQLite's own busy timeout would have waited, then the same error.
        let turn = tokio::time::timeout(
            Duration::from_secs(15),
            sqlite_write_turn(self.connect_options().get_filename()).lock_owned(),
        )
        .await
        .map_err(|_| sqlx::Error::PoolTimedOut)?;
        Ok(WriteTx {
            tx: self.begin_with("BEGIN IMMEDIATE").await?,
            _turn: Some(turn),
        })
    }
}

impl WritePool for PgPool {
    type Db = Postgres;
    async fn begin_write(&self) -> Result<WriteTx<Postgres>, sqlx::Error> {
        Ok(WriteTx {
            tx: self.begin().await?,
            _turn: None,
        })
    }
}

/// What `/readyz` reports.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Readiness {
    pub database: &'static str,
    /// Newest migration applied in the database.
    pub applied_migration: Option<i64>,
    /// Newest migration this binary carries.
    pub expected_migration: i64,
    /// `up` or `down` when several nodes share Redis; absent on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    /// SQLite: free bytes on the disk under the database.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk_free_bytes: Option<u64>,
    /// SQLite: `ok`, or `low` under 64 MiB free (writes will fail when it runs out; the
    /// server stays ready: reads work).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub disk: Option<&'static str>,
    /// `ok`, or `degraded` while the mail server refuses or cannot be reached (messages
    /// wait in the outbox; the server stays ready); absent when no mail is sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mail: Option<&'static str>,
}

impl Readiness {
    /// The database answers and carries at least every migration this binary expects (a
    /// newer node may have applied more during a rolling upgrade).
    pub fn ready(&self) -> bool {
        self.database == "up"
            && self
                .applied_migration
                .is_some_and(|v| v >= self.expected_migration)
    }
}

impl Db {
    /// Connect to `url` (`sqlite://…` or `postgres://…`). For SQLite the file and its folder
    /// are created when missing, WAL and foreign keys are turned on.
    pub async fn connect(url: &str, max_connections: u32) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)
                .context("DATABASE_URL: not a valid sqlite:// URL")?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // FULL: a committed join or admission survives power loss, not just a crash.
                .synchronous(SqliteSynchronous::Full)
                .foreign_keys(true)
                // Writers queue behind BEGIN IMMEDIATE; give them time under bursts.
                .busy_timeout(Duration::from_secs(15));
            let file = opts.get_filename();
            if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating the database folder {}", dir.display()))?;
            }
            let pool = SqlitePoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(20))
                // A COMMIT that failed (a full disk) can leave a connection that believes
                // it is still in a transaction (SQLite rolled it back by itself): such a
                // connection is closed rather than handed out again.
                .before_acquire(|conn, _| {
                    Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
                })
                .connect_with(opts)
                .await
                .context("opening the SQLite database")?;
            Ok(Db::Sqlite(pool))
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            let opts = PgConnectOptions::from_str(url)
                .context("DATABASE_URL: not a valid postgres:// URL")?
                .application_name("alcove");
            // A database that went away costs a request one second at most (then 503
            // database_unavailable; see db_health), never the pool's default half minute.
            let pool = PgPoolOptions::new()
                .max_connections(max_connections)
                .acquire_timeout(Duration::from_secs(1))
                .before_acquire(|conn, _| {
                    Box::pin(async move { Ok(!sqlx::Connection::is_in_transaction(conn)) })
                })
                .connect_with(opts)
                .await
                .context("connecting to PostgreSQL")?;
            Ok(Db::Postgres(pool))
        } else {
            anyhow::bail!("DATABASE_URL must start with sqlite:// or postgres://")
        }
    }

    /// One trivial query: the database answers.
    pub async fn ping(&self) -> Result<(), sqlx::Error> {
        on_pool!(self, pool => sqlx::query("SELECT 1").execute(pool).await.map(|_| ()))
    }

    /// The connection pool: (connections open, of which idle).
    pub fn pool_stats(&self) -> (u32, usize) {
        on_pool!(self, pool => (pool.size(), pool.num_idle()))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self {
            Db::Sqlite(_) => &SQLITE_MIGRATOR,
            Db::Postgres(_) => &POSTGRES_MIGRATOR,
        }
    }

    /// Apply every embedded migration not yet applied.
    pub async fn migrate(&self) -> anyhow::Result<()> {
        on_pool!(self, pool => self.migrator().run(pool).await)
            .context("applying database migrations")
    }

    /// Whether the database answers and carries every migration this binary expects.
    pub async fn readiness(&self) -> Readiness {
        let expected = self
            .migrator()
            .iter()
            .map(|m| m.version)
            .max()
            .unwrap_or_default();
        let applied: Result<Option<i64>, sqlx::Error> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations WHERE success")
                .fetch_one(pool)
                .await
        });
        let (database, applied_migration) = match applied {
            Ok(v) => ("up", v),
            Err(e) => {
                tracing::warn!(error = %e, "readiness: database check failed");
                ("down", None)
            }
        };
        Readiness {
            database,
            applied_migration,
            expected_migration: expected,
            redis: None,
            disk_free_bytes: None,
            disk: None,
            mail: None,
        }
    }

    pub async fn close(&self) {
        on_pool!(self, pool => pool.close().await)
    }
}

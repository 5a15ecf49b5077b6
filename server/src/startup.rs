//! Building and running the server: connect the database, apply migrations, load keys,
//! bind the listener, serve until told to stop.

use crate::{
    auth::{Jwt, KeySet, LoginThrottle, Passwords, throttle::Limits},
    config::{Config, display_path},
    db_health::DbHealth,
    expiring::{Expiring, KeyedHash, MemoryExpiring},
    http,
    metrics::{Metrics, ObservedSink},
    records::{self, RecordSink},
    signal::{IceMinter, UsedTokens, Verifier},
    state::AppState,
    store::Db,
};
use alcove_signaling::{
    Hub, SignalingConfig,
    cluster::{ClusterConfig, RedisRouter},
    local::LocalRouter,
    room::RoomSnapshot,
};
use anyhow::Context as _;
use std::{collections::HashSet, future::Future, net::SocketAddr, sync::Arc};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Open the configured database (the default SQLite file when none is configured).
pub async fn open_db(config: &Config) -> anyhow::Result<Db> {
    let url = match &config.database_url {
        Some(url) => url.expose().to_owned(),
        None => {
            let path = config.default_sqlite_path();
            format!("sqlite://{}", display_path(&path))
        }
    };
    Db::connect(&url, config.db_max_connections).await
}

/// A server that is built and bound, not yet serving.
pub struct Application {
    listener: TcpListener,
    /// TLS terminated here (`ALCOVE_TLS_CERT`), or plain HTTP.
    tls: Option<Arc<rustls::ServerConfig>>,
    metrics_listener: Option<TcpListener>,
    router: axum::Router,
    state: AppState,
    sink: Arc<RecordSink>,
}

impl Application {
    /// Prepare everything and bind `config.listen` (port 0 picks a free port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let db = open_db(&config).await?;
        db.migrate().await?;
        let keys = match &config.signing_keys {
            Some(pems) => {
                use secrecy::ExposeSecret as _;
                KeySet::from_pems(pems.expose_secret())?
            }
            None => KeySet::load_or_create(&config.keys_dir())?,
        };
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(crate::tls::server_config(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("ALCOVE_LISTEN: cannot listen on {}", config.listen))?;
        let bound = listener.local_addr()?;
        let public_url: Arc<str> = config.public_base(bound).into();
        let jwt = Jwt::new(Arc::new(keys), public_url.to_string());
        let config = Arc::new(config);
        let ice = IceMinter::new(&config);
        // One node: the shared counters and marks live in this process. Several: in Redis,
        // under keyed hashes whose secret every node derives from the shared signing key.
        let redis = crate::redis_store::connect(&config).await?;
        let (expiring, keys): (Arc<dyn Expiring>, KeyedHash) = match &redis {
            Some((_, conn)) => (
                Arc::new(crate::redis_store::RedisExpiring::new(
                    conn.clone(),
                    &config.redis_prefix,
                )),
                KeyedHash::new(jwt.keys().derived_secret("alcove-limits-v1")),
            ),
            None => (Arc::new(MemoryExpiring::default()), KeyedHash::random()?),
        };
        let db_health = DbHealth::new();
        let verifier = Verifier {
            db_health: db_health.clone(),
            db: db.clone(),
            jwt: jwt.clone(),
            config: config.clone(),
            used: UsedTokens::new(expiring.clone()),
            ice: ice.clone(),
        };
        let sink = Arc::new(RecordSink::new(db.clone(), &config, db_health.clone()));
        let metrics = Metrics::new();
        // Room events go to the session record, with the metrics watching.
        let observed: Arc<ObservedSink<RecordSink>> = Arc::new(ObservedSink {
            inner: sink.clone(),
            metrics: metrics.clone(),
        });
        let ping = config.signal_ping_interval;
        let signaling = SignalingConfig {
            hello_timeout: config.signal_hello_timeout,
            ping_interval: ping,
            idle_timeout: ping * 3,
            grace: config.signal_grace,
            ..SignalingConfig::default()
        };
        // One node keeps its rooms in this process; several share them through Redis.
        let (hub, carried_on) = match &redis {
            Some((client, conn)) => {
                let router = RedisRouter::start(
                    signaling.clone(),
                    observed.clone(),
                    ClusterConfig {
                        node: config.node_id.clone(),
                        prefix: config.redis_prefix.clone(),
                        lease: config.room_lease,
                        secrets: jwt.keys().derived_secrets("alcove-relay-v1"),
                    },
                    client.clone(),
                    conn.clone(),
                )
                .await
                .context("joining the cluster through Redis")?;
                let saved = router.saved_rooms().await?;
                (
                    Hub::with_router(signaling, Arc::new(verifier), Arc::new(router)),
                    saved,
                )
            }
            None => {
                // The rooms this node handed over when it last stopped (a restart): carried
                // on, so that the people in them resume the same sessions.
                let router = LocalRouter::new(signaling.clone(), observed.clone());
                let saved: Vec<RoomSnapshot> = db
                    .take_handovers(&config.node_id)
                    .await?
                    .iter()
                    .filter_map(|s| serde_json::from_str(s).ok())
                    .collect();
                let carried_on: HashSet<Uuid> = saved.iter().map(|r| r.appointment_id).collect();
                router.restore(saved).await;
                (
                    Hub::with_router(signaling, Arc::new(verifier), Arc::new(router)),
                    carried_on,
                )
            }
        };
        // Sessions this node had open when it last stopped without closing them (a crash),
        // unless another node carries their rooms on.
        let lost = db.close_lost_sessions(&config.node_id, &carried_on).await?;
        if lost > 0 {
            tracing::warn!(
                sessions = lost,
                "closed sessions left open by a crash as server_lost"
            );
        }
        // Mail (order 11): said once at start whether it goes out, and through where.
        match &config.smtp_url {
            None => {
                tracing::info!("mail: ALCOVE_SMTP_URL is not set; no appointment emails are sent")
            }
            Some(url) => {
                use secrecy::ExposeSecret as _;
                tracing::info!(
                    server = %crate::mail::redacted(url.expose_secret()),
                    "mail: outgoing mail is configured"
                );
            }
        }
        metrics.finish(
            hub.clone(),
            db.clone(),
            config.db_max_connections,
            redis.is_some(),
        );
        // `/metrics` on a listener of its own when one is configured.
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("ALCOVE_METRICS_LISTEN: cannot listen on {addr}"))?,
            ),
            None => None,
        };
        let state = AppState {
            metrics,
            db_health,
            db,
            jwt,
            hub,
            ice,
            network_tests: Arc::new(tokio::sync::Semaphore::new(config.network_test_max)),
            mail_plan: config.smtp_url.as_ref().map(|_| {
                Arc::new(crate::store::MailPlan {
                    reminders: config.reminders.clone(),
                })
            }),
            mail_health: Arc::default(),
            passwords: Passwords::with_workers(match config.hash_workers {
                0 => crate::auth::password::default_workers(),
                n => n,
            })
            .await?,
            login_throttle: LoginThrottle::new(
                expiring.clone(),
                keys,
                Limits {
                    max_failures: config.login_max_failures,
                    account_max_failures: config.login_account_max_failures,
                    address_max_sign_ins: config.login_address_max,
                    address_max_registrations: config.register_address_max,
                    window: config.login_window,
                    slow_interval: crate::auth::throttle::SLOW_INTERVAL,
                },
            ),
            expiring,
            redis: redis.map(|(_, conn)| conn),
            trusted_proxies: config.trusted_proxy_nets()?.into(),
            public_url,
            config,
        };
        let router = http::router(state.clone());
        Ok(Self {
            listener,
            tls,
            metrics_listener,
            router,
            state,
            sink,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until `shutdown` completes, then finish in-flight requests and close the pool.
    pub async fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let db = self.state.db.clone();
        let hub = self.state.hub.clone();
        let config = self.state.config.clone();
        let stop = CancellationToken::new();
        let sqlite_dir = match &db {
            crate::store::Db::Sqlite(_) => Some(self.state.config.default_sqlite_dir()),
            crate::store::Db::Postgres(_) => None,
        };
        let tasks = [
            tokio::spawn(
                self.state
                    .db_health
                    .clone()
                    .run(db.clone(), sqlite_dir, stop.clone()),
            ),
            tokio::spawn(records::run_backlog(self.sink.clone(), stop.clone())),
            tokio::spawn(records::run_heartbeat(self.sink.clone(), stop.clone())),
            tokio::spawn(records::run_purge(db.clone(), config.clone(), stop.clone())),
            tokio::spawn(crate::auth::revocation_sweep(
                db.clone(),
                self.state.hub.clone(),
                stop.clone(),
            )),
            tokio::spawn(records::run_webhooks(
                db.clone(),
                config,
                self.sink.webhooks_due.clone(),
                stop.clone(),
            )),
            tokio::spawn(crate::mail::run_outbox(self.state.clone(), stop.clone())),
        ];
        let stop_tasks = stop.clone();
        let drain = self.state.config.drain_timeout;
        let draining = Arc::new(tokio::sync::Notify::new());
        let started = draining.clone();
        let shutdown = async move {
            shutdown.await;
            started.notify_one();
            tracing::info!(
                "draining: telling signalling connections to reconnect, handing rooms over"
            );
            // Upgraded WebSockets are not waited for by the HTTP server: tell them to
            // reconnect (they resume elsewhere or after the restart) and hand the rooms
            // over, then stop the background tasks.
            hub.shutdown(drain / 2).await;
            stop_tasks.cancel();
        };
        // Peer addresses reach requests only for the sign-in and registration limits, which
        // turn them into keyed hashes at once (http::extract::ClientAddr); nothing logs or
        // stores them.
        if let Some(listener) = self.metrics_listener {
            let app = axum::Router::new()
                .route("/metrics", axum::routing::get(crate::metrics::serve))
                .with_state(self.state.metrics.clone());
            let stop = stop.clone();
            tokio::spawn(async move {
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
            });
        }
        let opts = crate::serve::ServeOptions {
            header_timeout: self.state.config.header_timeout,
            per_address: self.state.config.max_connections_per_address,
            exempt: self.state.trusted_proxies.clone(),
            tls: self.tls,
            metrics: self.state.metrics.clone(),
        };
        let serve = crate::serve::serve(self.listener, self.router, opts, shutdown);
        // Requests in flight finish, but the drain ends at its deadline whatever is left.
        let deadline = async move {
            draining.notified().await;
            tokio::time::sleep(drain).await;
        };
        tokio::select! {
            r = serve => r.context("serving HTTP")?,
            () = deadline => tracing::warn!(?drain, "the drain reached ALCOVE_DRAIN_TIMEOUT; stopping with requests still open"),
        }
        stop.cancel();
        for t in tasks {
            let _ = t.await;
        }
        db.close().await;
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}

//! Test harness: a real server on port 0 per test, with its own database on the chosen
//! backend, and a small typed client.

use alcove::{config::Config, startup::Application, state::AppState, store::Db};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use uuid::Uuid;

/// The two databases every storage test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Run each named `async fn(Backend)` as two tests, `<name>::sqlite` and `<name>::postgres`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            }
        )+
    };
}

/// Where the test PostgreSQL server is: `ALCOVE_TEST_PG_URL`, by default the machine's own.
pub fn pg_admin_url() -> String {
    std::env::var("ALCOVE_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A fresh, empty database of its own for one test.
pub struct TestDb {
    pub url: String,
    pg_name: Option<String>,
    _dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        match backend {
            Backend::Sqlite => Self {
                url: format!("sqlite://{}", dir.path().join("alcove.db").display()),
                pg_name: None,
                _dir: dir,
            },
            Backend::Postgres => {
                let admin = pg_admin_url();
                let name = format!("alcove_t_{}", Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&admin).await.unwrap_or_else(|e| {
                    panic!(
                        "PostgreSQL is required for the tests and is not reachable at {admin}: {e}"
                    )
                });
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&pool)
                    .await
                    .expect("create test database");
                pool.close().await;
                let (base, _) = admin.rsplit_once('/').expect("URL with a database");
                Self {
                    url: format!("{base}/{name}"),
                    pg_name: Some(name),
                    _dir: dir,
                }
            }
        }
    }

    /// A database somewhere else (a test's own server): used as it is, never dropped.
    pub fn at(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            pg_name: None,
            _dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        self._dir.path()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        // Drop runs inside the test's runtime: do the async cleanup on a thread of its own.
        let admin = pg_admin_url();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok(pool) = sqlx::PgPool::connect(&admin).await {
                    let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                        "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                    )))
                    .execute(&pool)
                    .await;
                    pool.close().await;
                }
            });
        })
        .join();
    }
}

/// A running server and a client for it.
pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub state: AppState,
    /// Kept alive (and dropped, with its database) with the app.
    _db: TestDb,
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

/// Start a server with the test defaults, changed by `tweak`.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let db = TestDb::new(backend).await;
    spawn_app_on(db, tweak).await
}

/// Start a server on an existing test database.
pub async fn spawn_app_on(db: TestDb, tweak: impl FnOnce(&mut Config)) -> TestApp {
    // Server logs go to the test's captured output (shown when a test fails).
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .try_init();
    let mut config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: db.dir().join("data"),
        database_url: Some(alcove::config::DatabaseUrl::new(db.url.clone())),
        db_max_connections: 5,
        // Every test client comes from 127.0.0.1: the per-address limits are tried by the
        // tests about them, which lower these.
        login_address_max: 100_000,
        register_address_max: 100_000,
        ..Config::default()
    };
    tweak(&mut config);
    config.check().expect("test config is valid");
    let app = Application::build(config).await.expect("server builds");
    let addr = app.local_addr();
    let state = app.state().clone();
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        state,
        _db: db,
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Resp {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub text: String,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {}", self.text))
    }

    /// Assert the status, and that an error is a problem document; return the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> Value {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected status; body: {}",
            self.text
        );
        if status >= 400 {
            self.assert_problem();
        }
        if self.text.is_empty() {
            Value::Null
        } else {
            self.json()
        }
    }

    /// Assert an error with this status and problem `code`.
    #[track_caller]
    pub fn expect_problem(&self, status: u16, code: &str) -> Value {
        let body = self.expect(status);
        assert_eq!(body["code"], code, "problem code; body: {}", self.text);
        body
    }

    #[track_caller]
    pub fn assert_problem(&self) {
        let ct = self
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert_eq!(ct, "application/problem+json", "body: {}", self.text);
        let b = self.json();
        assert_eq!(b["status"], self.status.as_u16(), "{}", self.text);
        let code = b["code"].as_str().expect("problem has a code");
        assert_eq!(b["type"], format!("urn:alcove:problem:{code}"));
        assert!(b["title"].is_string() && b["detail"].is_string());
        assert!(
            b["request_id"].is_string(),
            "problem carries the request id"
        );
    }
}

/// The HTTP API of a running server (in-process or a child process), with helpers.
#[allow(async_fn_in_trait)]
pub trait Api: Sync {
    fn base(&self) -> &str;
    fn http(&self) -> &reqwest::Client;

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    /// Send a request with an optional bearer token and JSON body.
    async fn send(
        &self,
        method: Method,
        path: impl AsRef<str>,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Resp {
        let mut req = self.http().request(method, self.url(path.as_ref()));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("request sent");
        Resp {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.expect("body read"),
        }
    }

    async fn get(&self, path: impl AsRef<str>, token: Option<&str>) -> Resp {
        self.send(Method::GET, path, token, None).await
    }

    async fn post(&self, path: impl AsRef<str>, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::POST, path, token, Some(body)).await
    }

    async fn put(&self, path: impl AsRef<str>, token: Option<&str>, body: Value) -> Resp {
        self.send(Method::PUT, path, token, Some(body)).await
    }

    /// Send raw bytes as the body with the given content type.
    async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: impl Into<reqwest::Body>,
    ) -> Resp {
        let res = self
            .http()
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent");
        Resp {
            status: res.status(),
            headers: res.headers().clone(),
            text: res.text().await.expect("body read"),
        }
    }

    /// Register a client and sign in.
    async fn client(&self, name: &str) -> Session {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase().replace(' ', "."),
            Uuid::new_v4().simple()
        );
        self.post(
            "/api/v1/auth/register",
            None,
            json!({"email": email, "password": PASSWORD, "display_name": name}),
        )
        .await
        .expect(202);
        self.login(&email).await
    }

    /// Make `client` one of `therapist`'s clients, as a real pair does: the therapist
    /// issues an invitation code and the client accepts it. (Therapists book only for their
    /// own clients.)
    async fn relate(&self, therapist: &Session, client: &Session) {
        let code = self
            .post("/api/v1/invitations", therapist.token(), json!({}))
            .await
            .expect(201)["code"]
            .as_str()
            .expect("a code")
            .to_owned();
        self.post(
            "/api/v1/invitations/accept",
            client.token(),
            json!({"code": code}),
        )
        .await
        .expect(200);
    }

    async fn login(&self, email: &str) -> Session {
        let body = self
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await
            .expect(200);
        Session {
            access: body["access_token"].as_str().unwrap().to_owned(),
            refresh: body["refresh_token"].as_str().unwrap().to_owned(),
            id: body["user"]["id"].as_str().unwrap().parse().unwrap(),
            email: email.to_owned(),
        }
    }
}

impl Api for TestApp {
    fn base(&self) -> &str {
        &self.base
    }
    fn http(&self) -> &reqwest::Client {
        &self.http
    }
}

impl TestApp {
    /// Create an account of any role directly in the store, and sign in.
    pub async fn user_with_role(&self, name: &str, role: alcove::domain::Role) -> Session {
        let email = format!(
            "{}-{}@example.com",
            name.to_lowercase().replace(' ', "."),
            Uuid::new_v4().simple()
        );
        self.user_with_email(name, &email, role).await
    }

    /// An account with this email and role, signed in.
    pub async fn user_with_email(
        &self,
        name: &str,
        email: &str,
        role: alcove::domain::Role,
    ) -> Session {
        let hash = self
            .state
            .passwords
            .hash(&secrecy::SecretString::from(PASSWORD))
            .await
            .unwrap();
        self.state
            .db
            .create_user(
                alcove::store::NewUser {
                    email: alcove::domain::Email::parse(email).unwrap(),
                    display_name: alcove::domain::DisplayName::parse(name).unwrap(),
                    role,
                    password_hash: hash,
                },
                alcove::store::Creator::Cli,
            )
            .await
            .unwrap();
        self.login(email).await
    }

    /// `n` client accounts signed in without Argon2 work per account (one shared hash),
    /// for tests that need many.
    pub async fn fast_clients(&self, n: usize) -> Vec<Session> {
        let hash = self
            .state
            .passwords
            .hash(&secrecy::SecretString::from(PASSWORD))
            .await
            .unwrap();
        let far =
            alcove::store::Ts::from(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24));
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            let email = format!("many{i}-{}@example.com", Uuid::new_v4().simple());
            let user = self
                .state
                .db
                .create_user(
                    alcove::store::NewUser {
                        email: alcove::domain::Email::parse(&email).unwrap(),
                        display_name: alcove::domain::DisplayName::parse(&format!("Client {i}"))
                            .unwrap(),
                        role: alcove::domain::Role::Client,
                        password_hash: hash.clone(),
                    },
                    alcove::store::Creator::Cli,
                )
                .await
                .unwrap();
            let (refresh, refresh_hash) = alcove::auth::tokens::new_refresh_token().unwrap();
            let sid = self
                .state
                .db
                .create_session(user.id, &refresh_hash, far, far)
                .await
                .unwrap();
            let access = alcove::auth::tokens::issue_access(
                &self.state.jwt,
                user.id,
                sid,
                alcove::domain::Role::Client,
                std::time::Duration::from_secs(900),
            )
            .unwrap();
            out.push(Session {
                access,
                refresh,
                id: user.id,
                email,
            });
        }
        out
    }

    /// A booked session that started an hour ago, written straight to the store (the API
    /// rightly refuses to book in the past); returns its id.
    pub async fn past_appointment(&self, therapist: Uuid, client: Uuid) -> Uuid {
        let start = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1);
        let new = alcove::store::NewAppointment {
            therapist_id: therapist,
            client_ids: vec![client],
            kind: alcove::domain::AppointmentKind::Session,
            starts_at: start.into(),
            ends_at: (start + jiff::SignedDuration::from_mins(50)).into(),
            buffer_minutes: 10,
            created_by: therapist,
            series_id: None,
        };
        self.state
            .db
            .create_appointments(&[new], None, None)
            .await
            .unwrap()[0]
    }

    /// The database URL this server uses.
    pub fn db_url(&self) -> &str {
        &self._db.url
    }

    pub fn store(&self) -> &Db {
        &self.state.db
    }
}

/// The password every test account uses.
pub const PASSWORD: &str = "a calm and quiet room";

/// A signed-in account.
#[derive(Debug, Clone)]
pub struct Session {
    pub access: String,
    pub refresh: String,
    pub id: Uuid,
    pub email: String,
}

impl Session {
    pub fn token(&self) -> Option<&str> {
        Some(&self.access)
    }
}

/// The first 5-minute mark at least `after` from now (appointments start on such marks).
pub fn five_minute_mark_after(after: jiff::SignedDuration) -> jiff::Timestamp {
    (jiff::Timestamp::now() + after)
        .round(
            jiff::TimestampRound::new()
                .smallest(jiff::Unit::Minute)
                .increment(5)
                .mode(jiff::RoundMode::Ceil),
        )
        .expect("in range")
}

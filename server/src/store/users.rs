//! Accounts.

use super::{Actor, AuditEntry, Db, StoreError, StoreResult, Ts, WritePool};
use crate::domain::{DisplayName, Email, Role};
use uuid::Uuid;

/// An account, without its password hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct User {
    pub id: Uuid,
    pub email: String,
    pub display_name: String,
    #[sqlx(try_from = "String")]
    pub role: RoleCol,
    pub disabled: bool,
    pub created_at: Ts,
}

/// An account with its Argon2id hash, for sign-in only.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserWithHash {
    #[sqlx(flatten)]
    pub user: User,
    pub password_hash: String,
}

/// `role` as read from the database (sqlx's `try_from` needs a local type).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoleCol(pub Role);

impl TryFrom<String> for RoleCol {
    type Error = crate::domain::Invalid;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse().map(RoleCol)
    }
}

impl User {
    pub fn role(&self) -> Role {
        self.role.0
    }
}

/// Who creates an account, for the audit trail.
#[derive(Debug, Clone, Copy)]
pub enum Creator {
    /// The person registered themself.
    SelfRegistered,
    /// An admin, through the API.
    Admin(Actor),
    /// An operator, with `alcove user create`.
    Cli,
}

/// What it takes to create an account.
pub struct NewUser {
    pub email: Email,
    pub display_name: DisplayName,
    pub role: Role,
    pub password_hash: String,
}

/// What a password change or "sign out everywhere" revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revoked {
    /// Sign-ins ended.
    pub sign_ins: u64,
    /// Whether a calendar feed URL stopped working.
    pub calendar_feed: bool,
}

const USER_COLUMNS: &str = "id, email, display_name, role, disabled, created_at";

impl Db {
    /// Create an account; a therapist also gets an empty directory profile in the same
    /// transaction. A taken email is `Conflict("users_email_key")`.
    pub async fn create_user(&self, new: NewUser, by: Creator) -> StoreResult<User> {
        let id = Uuid::now_v7();
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO users (id, email, display_name, role, password_hash, disabled, created_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, FALSE, $6, $6)",
            )
            .bind(id)
            .bind(new.email.as_str())
            .bind(new.display_name.as_str())
            .bind(new.role.as_str())
            .bind(&new.password_hash)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                // SQLite says "UNIQUE constraint failed: users.email"; name it as PostgreSQL does.
                StoreError::Conflict(_) => StoreError::Conflict("users_email_key".into()),
                other => other,
            })?;
            if new.role == Role::Therapist {
                sqlx::query("INSERT INTO therapist_profiles (user_id, updated_at) VALUES ($1, $2)")
                    .bind(id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
            }
            let me = Actor { id, role: new.role };
            let (actor, action, how) = match by {
                Creator::SelfRegistered => (Some(&me), "account.register", "registration"),
                Creator::Admin(ref a) => (Some(a), "account.create", "admin"),
                Creator::Cli => (None, "account.create", "command line"),
            };
            let audit = AuditEntry::new(actor, action, "account", Some(id.to_string()), serde_json::json!({"role": new.role, "by": how}));
            append_audit!(self, tx, now, &audit);
            tx.commit().await?;
        });
        Ok(User {
            id,
            email: new.email.as_str().to_owned(),
            display_name: new.display_name.into_inner(),
            role: RoleCol(new.role),
            disabled: false,
            created_at: now,
        })
    }

    pub async fn user_by_email(&self, email: &Email) -> StoreResult<Option<UserWithHash>> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, UserWithHash>(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
            )))
            .bind(email.as_str())
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn user_by_id(&self, id: Uuid) -> StoreResult<Option<User>> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE id = $1"
            )))
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    pub async fn password_hash(&self, id: Uuid) -> StoreResult<Option<String>> {
        let row = on_pool!(self, pool => {
            sqlx::query_scalar::<_, String>("SELECT password_hash FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(row)
    }

    /// Accounts for the admin list, newest first, optionally of one role.
    pub async fn list_users(
        &self,
        role: Option<Role>,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<User>, i64)> {
        let role = role.map(Role::as_str);
        let out = on_pool!(self, pool => {
            let items = sqlx::query_as::<_, User>(sqlx::AssertSqlSafe(format!(
                "SELECT {USER_COLUMNS} FROM users WHERE ($1 IS NULL OR role = $1)
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
            )))
            .bind(role)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users WHERE ($1 IS NULL OR role = $1)")
                .bind(role)
                .fetch_one(pool)
                .await?;
            (items, total)
        });
        Ok(out)
    }

    /// Disable or re-enable an account. Disabling also revokes every sign-in, so that the
    /// account's access tokens stop working at once.
    pub async fn set_user_disabled(
        &self,
        id: Uuid,
        disabled: bool,
        by: Option<&Actor>,
    ) -> StoreResult<User> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
                .bind(disabled)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            if disabled {
                sqlx::query(
                    "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = 'disabled'
                     WHERE user_id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                // The feed URL would work again if the account were enabled later.
                sqlx::query("DELETE FROM calendar_feeds WHERE user_id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            let action = if disabled { "account.disable" } else { "account.enable" };
            append_audit!(self, tx, now, &AuditEntry::new(by, action, "account", Some(id.to_string()), serde_json::json!({})));
            tx.commit().await?;
        });
        self.user_by_id(id).await?.ok_or(StoreError::NotFound)
    }

    /// Replace the password hash, revoke every sign-in except `keep_session`, and revoke
    /// the calendar feed (its URL is a credential that whoever knew the old password may
    /// have copied). Returns what was revoked.
    pub async fn set_password_hash(
        &self,
        id: Uuid,
        hash: &str,
        keep_session: Option<Uuid>,
        by: Option<&Actor>,
    ) -> StoreResult<Revoked> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE id = $3")
                .bind(hash)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            let sign_ins = sqlx::query(
                "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = 'password_change'
                 WHERE user_id = $2 AND revoked_at IS NULL AND ($3 IS NULL OR id <> $3)",
            )
            .bind(now)
            .bind(id)
            .bind(keep_session)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let feed = sqlx::query("DELETE FROM calendar_feeds WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            append_audit!(self, tx, now, &AuditEntry::new(by, "account.password_change", "account", Some(id.to_string()), serde_json::json!({"sign_ins_ended": sign_ins, "calendar_feed_revoked": feed})));
            tx.commit().await?;
            Ok(Revoked { sign_ins, calendar_feed: feed })
        })
    }

    /// Sign out everywhere: revoke every sign-in of the account and its calendar feed.
    pub async fn revoke_everything(&self, id: Uuid, by: &Actor) -> StoreResult<Revoked> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let sign_ins = sqlx::query(
                "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = 'sign_out_everywhere'
                 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            let feed = sqlx::query("DELETE FROM calendar_feeds WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                > 0;
            append_audit!(self, tx, now, &AuditEntry::new(Some(by), "auth.sign_out_everywhere", "account", Some(id.to_string()), serde_json::json!({"sign_ins_ended": sign_ins, "calendar_feed_revoked": feed})));
            tx.commit().await?;
            Ok(Revoked { sign_ins, calendar_feed: feed })
        })
    }
}

impl Db {
    /// Whether the account asked for relay-only (TURN) connections.
    pub async fn relay_only(&self, id: Uuid) -> StoreResult<bool> {
        let v: Option<bool> = on_pool!(self, pool => {
            sqlx::query_scalar("SELECT relay_only FROM users WHERE id = $1")
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        Ok(v.unwrap_or(false))
    }

    pub async fn set_relay_only(&self, id: Uuid, on: bool, by: &Actor) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE users SET relay_only = $1, updated_at = $2 WHERE id = $3")
                .bind(on)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(by), "account.privacy_change", "account", Some(id.to_string()), serde_json::json!({"relay_only": on})));
            tx.commit().await?;
        });
        Ok(())
    }
}

//! Sign-in sessions and their refresh tokens.
//!
//! A session is one sign-in; its refresh tokens form a chain in which each token is used
//! once. Using a token marks it used and adds its successor in the same transaction.
//! Presenting a used token again means that two parties hold it (one of them a thief), so
//! the whole session is revoked: the legitimate user signs in again, the thief is out.

use super::{Db, StoreResult, Ts, User, WritePool};
use uuid::Uuid;

/// The account behind a valid access token.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SessionUser {
    #[sqlx(flatten)]
    pub user: User,
    pub revoked_at: Option<Ts>,
    pub expires_at: Ts,
    /// Last sign-in, refresh, or request (see [`Db::touch_session`]).
    pub last_used_at: Ts,
    /// The account's calls go through TURN only (read here so that a join needs no query
    /// of its own for it).
    pub relay_only: bool,
}

/// What presenting a refresh token led to.
#[derive(Debug)]
pub enum RefreshOutcome {
    /// The token was valid; it is now used and `new_hash` is its successor.
    Rotated { user: User, session_id: Uuid },
    /// The token had already been used: the session is now revoked.
    Reused { user_id: Uuid, session_id: Uuid },
    /// The sign-in went unused for longer than the idle limit: it is now revoked.
    Idle { user_id: Uuid, session_id: Uuid },
    /// Unknown, expired, or its session revoked or its account disabled.
    Invalid,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    session_id: Uuid,
    used_at: Option<Ts>,
    expires_at: Ts,
    session_expires_at: Ts,
    revoked_at: Option<Ts>,
    last_used_at: Ts,
    user_id: Uuid,
}

impl Db {
    /// Start a session for `user_id` with its first refresh token.
    pub async fn create_session(
        &self,
        user_id: Uuid,
        refresh_hash: &[u8],
        refresh_expires: Ts,
        session_expires: Ts,
    ) -> StoreResult<Uuid> {
        let id = Uuid::now_v7();
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO auth_sessions (id, user_id, created_at, last_used_at, expires_at)
                 VALUES ($1, $2, $3, $3, $4)",
            )
            .bind(id)
            .bind(user_id)
            .bind(now)
            .bind(session_expires)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(refresh_hash)
            .bind(id)
            .bind(now)
            .bind(refresh_expires.min(session_expires))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(id)
    }

    /// Use the refresh token whose hash is `hash`, replacing it with `new_hash`. A sign-in
    /// last used before `idle_cutoff` is revoked instead (automatic logoff).
    pub async fn rotate_refresh_token(
        &self,
        hash: &[u8],
        new_hash: &[u8],
        new_expires: Ts,
        idle_cutoff: Ts,
    ) -> StoreResult<RefreshOutcome> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let row: Option<TokenRow> = sqlx::query_as(
                "SELECT r.session_id, r.used_at, r.expires_at, s.expires_at AS session_expires_at,
                        s.revoked_at, s.last_used_at, s.user_id
                 FROM refresh_tokens r JOIN auth_sessions s ON s.id = r.session_id
                 WHERE r.token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(RefreshOutcome::Invalid) };
            if row.revoked_at.is_some() {
                return Ok(RefreshOutcome::Invalid);
            }
            // The conditional UPDATE is the arbiter: of two concurrent uses of one token,
            // only one can flip used_at from NULL (PostgreSQL re-checks the WHERE after the
            // row lock; SQLite runs the transactions one at a time).
            let claimed = row.used_at.is_none()
                && sqlx::query(
                    "UPDATE refresh_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL",
                )
                .bind(now)
                .bind(hash)
                .execute(&mut *tx)
                .await?
                .rows_affected()
                    == 1;
            if !claimed {
                sqlx::query(
                    "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = 'refresh_reuse'
                     WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(row.session_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Reused { user_id: row.user_id, session_id: row.session_id });
            }
            if row.expires_at <= now || row.session_expires_at <= now {
                return Ok(RefreshOutcome::Invalid);
            }
            if row.last_used_at < idle_cutoff {
                sqlx::query(
                    "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = 'idle'
                     WHERE id = $2 AND revoked_at IS NULL",
                )
                .bind(now)
                .bind(row.session_id)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                return Ok(RefreshOutcome::Idle { user_id: row.user_id, session_id: row.session_id });
            }
            let user: Option<User> = sqlx::query_as(
                "SELECT id, email, display_name, role, disabled, created_at FROM users WHERE id = $1",
            )
            .bind(row.user_id)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(user) = user.filter(|u| !u.disabled) else {
                return Ok(RefreshOutcome::Invalid);
            };
            sqlx::query(
                "INSERT INTO refresh_tokens (token_hash, session_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(new_hash)
            .bind(row.session_id)
            .bind(now)
            .bind(new_expires.min(row.session_expires_at))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE auth_sessions SET last_used_at = $1 WHERE id = $2")
                .bind(now)
                .bind(row.session_id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            Ok(RefreshOutcome::Rotated { user, session_id: row.session_id })
        })
    }

    /// Revoke the session that the refresh token (used or not) belongs to. Returns its
    /// account and session when the token was known (whether or not it had ended already).
    pub async fn revoke_session_by_refresh(
        &self,
        hash: &[u8],
        reason: &str,
    ) -> StoreResult<Option<(Uuid, Uuid)>> {
        let now = Ts::now();
        let found: Option<(Uuid, Uuid)> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT s.user_id, s.id FROM refresh_tokens r
                 JOIN auth_sessions s ON s.id = r.session_id
                 WHERE r.token_hash = $1",
            )
            .bind(hash)
            .fetch_optional(pool)
            .await?
        });
        let Some((user_id, session_id)) = found else {
            return Ok(None);
        };
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = $2
                 WHERE id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(reason)
            .bind(session_id)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(Some((user_id, session_id)))
    }

    /// Sign-ins ended at or after `since` (account, sign-in), for the revocation sweep.
    pub async fn sign_ins_revoked_since(&self, since: Ts) -> StoreResult<Vec<(Uuid, Uuid)>> {
        Ok(on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT user_id, id FROM auth_sessions
                 WHERE revoked_at IS NOT NULL AND revoked_at >= $1",
            )
            .bind(since)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Revoke one session by id (sign out from an access token).
    pub async fn revoke_session(&self, session_id: Uuid, reason: &str) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE auth_sessions SET revoked_at = $1, revoked_reason = $2
                 WHERE id = $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(reason)
            .bind(session_id)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// The account and session state behind an access token's `sub` and `sid`.
    pub async fn session_user(
        &self,
        user_id: Uuid,
        session_id: Uuid,
    ) -> StoreResult<Option<SessionUser>> {
        let row = on_pool!(self, pool => {
            sqlx::query_as::<_, SessionUser>(
                "SELECT u.id, u.email, u.display_name, u.role, u.disabled, u.created_at,
                        s.revoked_at, s.expires_at, s.last_used_at, u.relay_only
                 FROM users u JOIN auth_sessions s ON s.user_id = u.id
                 WHERE u.id = $1 AND s.id = $2",
            )
            .bind(user_id)
            .bind(session_id)
            .fetch_optional(pool)
            .await?
        });
        Ok(row)
    }

    /// Note that a sign-in is in use now, unless that was noted after `unless_after` (so a
    /// busy sign-in costs one write per interval, not one per request).
    pub async fn touch_session(&self, session_id: Uuid, unless_after: Ts) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            sqlx::query(
                "UPDATE auth_sessions SET last_used_at = $1
                 WHERE id = $2 AND last_used_at < $3 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(session_id)
            .bind(unless_after)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Delete sessions that ended (expired or revoked) before `before`, with their tokens.
    pub async fn purge_sessions(&self, before: Ts) -> StoreResult<u64> {
        let n = on_pool!(self, pool => {
            sqlx::query(
                "DELETE FROM auth_sessions WHERE expires_at < $1 OR (revoked_at IS NOT NULL AND revoked_at < $1)",
            )
            .bind(before)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(n)
    }
}

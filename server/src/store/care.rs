//! Care relationships: which clients a therapist works with, and so may book for.
//!
//! A relationship starts when a client books with a therapist (the same transaction as the
//! booking, see `create_appointments`), or when a client accepts a therapist's invitation.
//! A therapist books, adds to group sessions and plans series only for these clients.

use super::{Actor, AuditEntry, Db, StoreResult, Ts, WritePool};
use uuid::Uuid;

/// A client of a therapist, for the therapist's list.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CareClient {
    pub id: Uuid,
    pub display_name: String,
    pub since: Ts,
    /// `booking` or `invitation`.
    pub source: String,
}

impl Db {
    /// Store a new invitation code (its hash) of a therapist.
    pub async fn create_invitation(
        &self,
        therapist: &Actor,
        code_hash: &[u8],
        expires_at: Ts,
    ) -> StoreResult<()> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO care_invitations (code_hash, therapist_id, created_at, expires_at)
                 VALUES ($1, $2, $3, $4)",
            )
            .bind(code_hash)
            .bind(therapist.id)
            .bind(now)
            .bind(expires_at)
            .execute(&mut *tx)
            .await?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(therapist), "care.invite", "account", Some(therapist.id.to_string()), serde_json::json!({})));
            tx.commit().await?;
        });
        Ok(())
    }

    /// Accept an invitation as `client`: the code is used up and the relationship begins.
    /// `None` when the code is unknown, used or expired (or is the client's own).
    pub async fn accept_invitation(
        &self,
        code_hash: &[u8],
        client: &Actor,
    ) -> StoreResult<Option<Uuid>> {
        let now = Ts::now();
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            // The conditional UPDATE is the arbiter between two accepting at once.
            let therapist: Option<Uuid> = sqlx::query_scalar(
                "UPDATE care_invitations SET accepted_by = $1, accepted_at = $2
                 WHERE code_hash = $3 AND accepted_by IS NULL AND accepted_at IS NULL
                   AND expires_at > $2 AND therapist_id <> $1
                 RETURNING therapist_id",
            )
            .bind(client.id)
            .bind(now)
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(therapist) = therapist else {
                return Ok(None);
            };
            sqlx::query(
                "INSERT INTO care_relationships (therapist_id, client_id, since, source)
                 VALUES ($1, $2, $3, 'invitation') ON CONFLICT (therapist_id, client_id) DO NOTHING",
            )
            .bind(therapist)
            .bind(client.id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            append_audit!(self, tx, now, &AuditEntry::new(Some(client), "care.accept", "account", Some(therapist.to_string()), serde_json::json!({})));
            tx.commit().await?;
            Ok(Some(therapist))
        })
    }

    /// The clients a therapist works with, most recent first.
    pub async fn care_clients(&self, therapist_id: Uuid) -> StoreResult<Vec<CareClient>> {
        let rows = on_pool!(self, pool => {
            sqlx::query_as::<_, CareClient>(
                "SELECT u.id, u.display_name, r.since, r.source
                 FROM care_relationships r JOIN users u ON u.id = r.client_id
                 WHERE r.therapist_id = $1 AND u.disabled = FALSE
                 ORDER BY r.since DESC, u.id",
            )
            .bind(therapist_id)
            .fetch_all(pool)
            .await?
        });
        Ok(rows)
    }

    /// Whether `client_id` is an active client account that works with `therapist_id`.
    pub async fn is_care_client(&self, therapist_id: Uuid, client_id: Uuid) -> StoreResult<bool> {
        let n: i64 = on_pool!(self, pool => {
            sqlx::query_scalar(
                "SELECT COUNT(*) FROM care_relationships r JOIN users u ON u.id = r.client_id
                 WHERE r.therapist_id = $1 AND r.client_id = $2
                   AND u.role = 'client' AND u.disabled = FALSE",
            )
            .bind(therapist_id)
            .bind(client_id)
            .fetch_one(pool)
            .await?
        });
        Ok(n > 0)
    }
}

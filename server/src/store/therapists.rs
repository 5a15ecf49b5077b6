//! Therapist profiles and the directory.

use super::{Db, StoreError, StoreResult, Ts, WritePool};
use uuid::Uuid;

/// A therapist as the directory shows them.
#[derive(Debug, Clone)]
pub struct TherapistProfile {
    pub user_id: Uuid,
    pub display_name: String,
    pub bio: String,
    pub qualifications: Vec<String>,
    pub specialisations: Vec<String>,
    pub modalities: Vec<String>,
    pub languages: Vec<String>,
    pub time_zone: String,
    pub offers_free_consultation: bool,
    pub updated_at: Ts,
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    user_id: Uuid,
    display_name: String,
    bio: String,
    qualifications: String,
    specialisations: String,
    modalities: String,
    languages: String,
    time_zone: String,
    offers_free_consultation: bool,
    updated_at: Ts,
}

impl TryFrom<ProfileRow> for TherapistProfile {
    type Error = StoreError;
    fn try_from(r: ProfileRow) -> Result<Self, StoreError> {
        let list = |s: &str| -> Result<Vec<String>, StoreError> {
            serde_json::from_str(s).map_err(|e| StoreError::Sqlx(sqlx::Error::Decode(e.into())))
        };
        Ok(Self {
            user_id: r.user_id,
            display_name: r.display_name,
            bio: r.bio,
            qualifications: list(&r.qualifications)?,
            specialisations: list(&r.specialisations)?,
            modalities: list(&r.modalities)?,
            languages: list(&r.languages)?,
            time_zone: r.time_zone,
            offers_free_consultation: r.offers_free_consultation,
            updated_at: r.updated_at,
        })
    }
}

/// A full replacement of a therapist's profile (values already validated).
#[derive(Debug, Clone)]
pub struct ProfileUpdate {
    pub display_name: String,
    pub bio: String,
    pub qualifications: Vec<String>,
    pub specialisations: Vec<String>,
    pub modalities: Vec<String>,
    pub languages: Vec<String>,
    pub time_zone: String,
    pub offers_free_consultation: bool,
}

/// Directory filters; each is optional and they combine with AND.
#[derive(Debug, Clone, Default)]
pub struct DirectoryFilter {
    pub specialisation: Option<String>,
    pub modality: Option<String>,
    pub language: Option<String>,
    pub free_consultation: Option<bool>,
}

const PROFILE_SELECT: &str =
    "SELECT p.user_id, u.display_name, p.bio, p.qualifications, p.specialisations,
        p.modalities, p.languages, p.time_zone, p.offers_free_consultation, p.updated_at
     FROM therapist_profiles p JOIN users u ON u.id = p.user_id
     WHERE u.role = 'therapist' AND u.disabled = FALSE";

// One tag filter; `$n IS NULL` makes an absent filter match everything.
const DIRECTORY_WHERE: &str = "
       AND ($1 IS NULL OR EXISTS (SELECT 1 FROM therapist_tags t WHERE t.user_id = p.user_id AND t.kind = 'specialisation' AND t.value = $1))
       AND ($2 IS NULL OR EXISTS (SELECT 1 FROM therapist_tags t WHERE t.user_id = p.user_id AND t.kind = 'modality' AND t.value = $2))
       AND ($3 IS NULL OR EXISTS (SELECT 1 FROM therapist_tags t WHERE t.user_id = p.user_id AND t.kind = 'language' AND t.value = $3))
       AND ($4 IS NULL OR p.offers_free_consultation = $4)";

impl Db {
    /// A listed therapist's profile (not disabled accounts).
    pub async fn therapist_profile(&self, id: Uuid) -> StoreResult<Option<TherapistProfile>> {
        let row: Option<ProfileRow> = on_pool!(self, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(format!("{PROFILE_SELECT} AND p.user_id = $1")))
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(TryInto::try_into).transpose()
    }

    /// One page of the directory, ordered by name, and the number of matches in all.
    pub async fn list_therapists(
        &self,
        f: &DirectoryFilter,
        limit: i64,
        offset: i64,
    ) -> StoreResult<(Vec<TherapistProfile>, i64)> {
        let (rows, total): (Vec<ProfileRow>, i64) = on_pool!(self, pool => {
            let rows = sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "{PROFILE_SELECT} {DIRECTORY_WHERE} ORDER BY u.display_name, p.user_id LIMIT $5 OFFSET $6"
            )))
            .bind(f.specialisation.as_deref())
            .bind(f.modality.as_deref())
            .bind(f.language.as_deref())
            .bind(f.free_consultation)
            .bind(limit)
            .bind(offset)
            .fetch_all(pool)
            .await?;
            let total = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM ({PROFILE_SELECT} {DIRECTORY_WHERE}) AS matches"
            )))
            .bind(f.specialisation.as_deref())
            .bind(f.modality.as_deref())
            .bind(f.language.as_deref())
            .bind(f.free_consultation)
            .fetch_one(pool)
            .await?;
            (rows, total)
        });
        let items = rows
            .into_iter()
            .map(TryInto::try_into)
            .collect::<Result<_, _>>()?;
        Ok((items, total))
    }

    /// Replace a therapist's profile and its filter tags in one transaction.
    pub async fn update_therapist_profile(
        &self,
        id: Uuid,
        p: &ProfileUpdate,
    ) -> StoreResult<TherapistProfile> {
        let now = Ts::now();
        let json = |v: &Vec<String>| serde_json::to_string(v).expect("strings serialise");
        on_pool!(self, pool => {
            let mut tx = pool.begin_write().await?;
            let n = sqlx::query(
                "UPDATE therapist_profiles SET bio = $1, qualifications = $2, specialisations = $3,
                        modalities = $4, languages = $5, time_zone = $6, offers_free_consultation = $7,
                        updated_at = $8
                 WHERE user_id = $9",
            )
            .bind(&p.bio)
            .bind(json(&p.qualifications))
            .bind(json(&p.specialisations))
            .bind(json(&p.modalities))
            .bind(json(&p.languages))
            .bind(&p.time_zone)
            .bind(p.offers_free_consultation)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(StoreError::NotFound);
            }
            sqlx::query("UPDATE users SET display_name = $1, updated_at = $2 WHERE id = $3")
                .bind(&p.display_name)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM therapist_tags WHERE user_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            let tags = [
                ("specialisation", &p.specialisations),
                ("modality", &p.modalities),
                ("language", &p.languages),
            ];
            for (kind, values) in tags {
                for v in values {
                    sqlx::query("INSERT INTO therapist_tags (user_id, kind, value) VALUES ($1, $2, $3)")
                        .bind(id)
                        .bind(kind)
                        .bind(v)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            tx.commit().await?;
        });
        self.therapist_profile(id)
            .await?
            .ok_or(StoreError::NotFound)
    }
}

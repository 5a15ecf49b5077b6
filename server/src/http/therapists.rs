//! The therapist directory (public) and a therapist's own profile.

use super::{
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
};
use crate::{
    auth::AuthUser,
    domain::{
        BoundedText, DisplayName, Invalid, Language, Modality, Role, Specialisation, TimeZoneName,
    },
    error::{ApiError, ApiResult, Fields, Problem},
    state::AppState,
    store::{DirectoryFilter, ProfileUpdate, TherapistProfile},
};
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_therapists))
        .routes(routes!(vocabulary))
        .routes(routes!(my_profile, update_my_profile))
        .routes(routes!(get_therapist))
}

/// A therapist in the directory.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TherapistView {
    /// The therapist's account id.
    pub id: Uuid,
    pub display_name: String,
    pub bio: String,
    pub qualifications: Vec<String>,
    pub specialisations: Vec<Specialisation>,
    pub modalities: Vec<Modality>,
    /// BCP 47 language tags.
    pub languages: Vec<String>,
    /// IANA time zone the therapist works in.
    pub time_zone: String,
    /// Whether a free initial consultation can be booked.
    pub offers_free_consultation: bool,
}

impl From<TherapistProfile> for TherapistView {
    fn from(p: TherapistProfile) -> Self {
        Self {
            id: p.user_id,
            display_name: p.display_name,
            bio: p.bio,
            qualifications: p.qualifications,
            // Stored values were checked on the way in; an unknown one (from a newer
            // version's vocabulary) is left out rather than failing the page.
            specialisations: p
                .specialisations
                .iter()
                .filter_map(|s| Specialisation::parse(s).ok())
                .collect(),
            modalities: p
                .modalities
                .iter()
                .filter_map(|s| Modality::parse(s).ok())
                .collect(),
            languages: p.languages,
            time_zone: p.time_zone,
            offers_free_consultation: p.offers_free_consultation,
        }
    }
}

/// Directory filters.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TherapistFilter {
    /// Only therapists who work with this (e.g. `anxiety`).
    pub specialisation: Option<String>,
    /// Only therapists who work this way (e.g. `cbt`).
    pub modality: Option<String>,
    /// Only therapists who work in this language (BCP 47, e.g. `en`, `pt-BR`).
    pub language: Option<String>,
    /// Only therapists who offer (true) or do not offer (false) a free consultation.
    pub free_consultation: Option<bool>,
}

/// Find a therapist: the public directory, ordered by name.
#[utoipa::path(get, path = "/api/v1/therapists", tag = "directory",
    params(TherapistFilter, PageParams),
    responses(
        (status = 200, description = "One page of therapists", body = Page<TherapistView>),
        (status = 422, description = "Unknown filter value", body = Problem, content_type = "application/problem+json"),
    ))]
async fn list_therapists(
    State(state): State<AppState>,
    Query(filter): Query<TherapistFilter>,
    Query(page): Query<PageParams>,
) -> ApiResult<axum::Json<Page<TherapistView>>> {
    let page = page.check()?;
    let mut f = Fields::default();
    let specialisation = filter
        .specialisation
        .as_deref()
        .and_then(|s| f.check("specialisation", Specialisation::parse(s)));
    let modality = filter
        .modality
        .as_deref()
        .and_then(|s| f.check("modality", Modality::parse(s)));
    let language = filter
        .language
        .as_deref()
        .and_then(|s| f.check("language", Language::parse(s)));
    f.finish()?;
    let db_filter = DirectoryFilter {
        specialisation: specialisation.map(|s| s.slug().to_owned()),
        modality: modality.map(|m| m.slug().to_owned()),
        language: language.map(|l| l.as_str().to_owned()),
        free_consultation: filter.free_consultation,
    };
    let (items, total) = state
        .db
        .list_therapists(&db_filter, page.limit(), page.offset())
        .await?;
    Ok(axum::Json(Page::new(
        items.into_iter().map(Into::into).collect(),
        page,
        total,
    )))
}

/// One entry of a vocabulary.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Term {
    /// Identifier used in filters and profiles.
    pub slug: &'static str,
    /// Label for people.
    pub label: &'static str,
}

/// The values the directory filters and profiles accept.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Vocabulary {
    pub specialisations: Vec<Term>,
    pub modalities: Vec<Term>,
}

/// The specialisations and modalities a profile can list, with labels.
#[utoipa::path(get, path = "/api/v1/therapists/vocabulary", tag = "directory",
    responses((status = 200, description = "Vocabularies", body = Vocabulary)))]
async fn vocabulary() -> axum::Json<Vocabulary> {
    axum::Json(Vocabulary {
        specialisations: Specialisation::ALL
            .iter()
            .map(|s| Term {
                slug: s.slug(),
                label: s.label(),
            })
            .collect(),
        modalities: Modality::ALL
            .iter()
            .map(|m| Term {
                slug: m.slug(),
                label: m.label(),
            })
            .collect(),
    })
}

/// A therapist's public profile.
#[utoipa::path(get, path = "/api/v1/therapists/{id}", tag = "directory",
    params(("id" = Uuid, Path, description = "The therapist's account id")),
    responses(
        (status = 200, description = "The profile", body = TherapistView),
        (status = 404, description = "No such therapist", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_therapist(
    State(state): State<AppState>,
    Path(id): Path<Uuid>,
) -> ApiResult<axum::Json<TherapistView>> {
    let profile = state
        .db
        .therapist_profile(id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist"))?;
    Ok(axum::Json(profile.into()))
}

/// The signed-in therapist's own profile.
#[utoipa::path(get, path = "/api/v1/therapists/me", tag = "directory", security(("bearer" = [])),
    responses(
        (status = 200, description = "The profile", body = TherapistView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
    ))]
async fn my_profile(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<TherapistView>> {
    user.require(&[Role::Therapist])?;
    let profile = state
        .db
        .therapist_profile(user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("therapist profile"))?;
    Ok(axum::Json(profile.into()))
}

/// A therapist's profile, replaced as a whole.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRequest {
    pub display_name: String,
    /// Up to 5000 characters.
    #[serde(default)]
    pub bio: String,
    /// Up to 20 entries of up to 200 characters each.
    #[serde(default)]
    pub qualifications: Vec<String>,
    #[serde(default)]
    pub specialisations: Vec<String>,
    #[serde(default)]
    pub modalities: Vec<String>,
    /// BCP 47 language tags, up to 20.
    #[serde(default)]
    pub languages: Vec<String>,
    /// IANA time zone, e.g. `Europe/London`.
    pub time_zone: String,
    #[serde(default)]
    pub offers_free_consultation: bool,
}

const MAX_BIO: usize = 5000;
const MAX_LIST: usize = 20;
const MAX_QUALIFICATION: usize = 200;

/// Check a list: at most [`MAX_LIST`] entries, each parsed by `parse`, duplicates dropped,
/// order kept.
fn parse_list<T: PartialEq>(
    f: &mut Fields,
    field: &str,
    raw: &[String],
    parse: impl Fn(&str) -> Result<T, Invalid>,
) -> Vec<T> {
    if raw.len() > MAX_LIST {
        f.push(
            field,
            format!("{field} may list at most {MAX_LIST} entries"),
        );
        return Vec::new();
    }
    let mut out = Vec::new();
    for (i, s) in raw.iter().enumerate() {
        if let Some(v) = f.check(&format!("{field}[{i}]"), parse(s))
            && !out.contains(&v)
        {
            out.push(v);
        }
    }
    out
}

/// Replace the signed-in therapist's profile.
#[utoipa::path(put, path = "/api/v1/therapists/me", tag = "directory", security(("bearer" = [])),
    request_body = ProfileRequest,
    responses(
        (status = 200, description = "The updated profile", body = TherapistView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Not a therapist", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Invalid field", body = Problem, content_type = "application/problem+json"),
    ))]
async fn update_my_profile(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<ProfileRequest>,
) -> ApiResult<axum::Json<TherapistView>> {
    user.require(&[Role::Therapist])?;
    let mut f = Fields::default();
    let name = f.check("display_name", DisplayName::parse(&body.display_name));
    let bio = f.check("bio", BoundedText::parse("bio", &body.bio, MAX_BIO));
    let qualifications = parse_list(&mut f, "qualifications", &body.qualifications, |s| {
        let t = BoundedText::parse("qualification", s, MAX_QUALIFICATION)?.into_inner();
        if t.is_empty() || t.contains('\n') {
            return Err(Invalid::new("a qualification is one non-empty line"));
        }
        Ok(t)
    });
    let specialisations = parse_list(
        &mut f,
        "specialisations",
        &body.specialisations,
        Specialisation::parse,
    );
    let modalities = parse_list(&mut f, "modalities", &body.modalities, Modality::parse);
    let languages = parse_list(&mut f, "languages", &body.languages, Language::parse);
    let tz = f.check("time_zone", TimeZoneName::parse(&body.time_zone));
    f.finish()?;

    let update = ProfileUpdate {
        display_name: name.unwrap().into_inner(),
        bio: bio.unwrap().into_inner(),
        qualifications,
        specialisations: specialisations
            .iter()
            .map(|s| s.slug().to_owned())
            .collect(),
        modalities: modalities.iter().map(|m| m.slug().to_owned()).collect(),
        languages: languages.iter().map(|l| l.as_str().to_owned()).collect(),
        time_zone: tz.unwrap().as_str().to_owned(),
        offers_free_consultation: body.offers_free_consultation,
    };
    let profile = state.db.update_therapist_profile(user.id, &update).await?;
    Ok(axum::Json(profile.into()))
}

//! `/api/v1/me`: the signed-in account.

use super::{
    extract::{ClientAddr, Json},
    views::UserView,
};
use crate::{
    auth::AuthUser,
    domain::{Email, NewPassword, Password},
    error::{ApiError, ApiResult, Fields, Problem},
    signal::CallPath,
    state::AppState,
};
use alcove_signaling::SignIns;
use axum::{extract::State, http::StatusCode};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use utoipa_axum::{router::OpenApiRouter, routes};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(change_password))
        .routes(routes!(sign_out_everywhere))
        .routes(routes!(get_privacy, set_privacy))
        .routes(routes!(get_settings, patch_settings))
}

/// The signed-in account.
#[utoipa::path(get, path = "/api/v1/me", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "The account", body = UserView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn me(user: AuthUser) -> axum::Json<UserView> {
    axum::Json(UserView {
        id: user.id,
        email: user.email,
        display_name: user.display_name,
        role: user.role,
    })
}

/// A password change.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    #[schema(value_type = String, format = Password)]
    pub current_password: SecretString,
    #[schema(value_type = String, format = Password)]
    pub new_password: SecretString,
}

/// What a password change or "sign out everywhere" ended.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RevokedView {
    /// How many sign-ins (browsers, devices) were signed out.
    pub sign_ins_ended: u64,
    /// Whether your private calendar feed URL stopped working (make a new one from
    /// `POST /api/v1/me/calendar-feed` and give it to your calendar app again).
    pub calendar_feed_revoked: bool,
}

impl From<crate::store::Revoked> for RevokedView {
    fn from(r: crate::store::Revoked) -> Self {
        Self {
            sign_ins_ended: r.sign_ins,
            calendar_feed_revoked: r.calendar_feed,
        }
    }
}

/// Change the password. Every other sign-in of the account ends, and the calendar feed
/// URL is revoked (whoever knew the old password may have copied it).
#[utoipa::path(post, path = "/api/v1/me/password", tag = "account", security(("bearer" = [])),
    request_body = ChangePasswordRequest,
    responses(
        (status = 200, description = "Password changed; what was revoked", body = RevokedView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 403, description = "Current password is wrong", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "Weak new password", body = Problem, content_type = "application/problem+json"),
        (status = 429, description = "Too many wrong current passwords", body = Problem, content_type = "application/problem+json"),
    ))]
async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    ClientAddr(addr): ClientAddr,
    Json(body): Json<ChangePasswordRequest>,
) -> ApiResult<axum::Json<RevokedView>> {
    let email = Email::parse(&user.email).ok();
    let mut f = Fields::default();
    let current = f.check("current_password", Password::parse(body.current_password));
    let new = f.check(
        "new_password",
        NewPassword::parse(body.new_password, email.as_ref()),
    );
    f.finish()?;
    let (current, new) = (current.unwrap(), new.unwrap());
    // Guessing the current password here (with a stolen access token) counts like
    // guessing it at sign-in.
    let attempt = match state
        .login_throttle
        .before_sign_in(&user.email, addr)
        .await
        .map_err(ApiError::unavailable)?
    {
        Ok(a) => a,
        Err(wait) => return Err(ApiError::too_many_requests(wait.secs())),
    };
    let hash = state.db.password_hash(user.id).await?;
    let ok = match state
        .passwords
        .verify(current.secret(), hash.as_deref())
        .await
    {
        Ok(ok) => ok,
        Err(e) => {
            state
                .login_throttle
                .not_checked(attempt)
                .await
                .map_err(ApiError::unavailable)?;
            return Err(e.into());
        }
    };
    if !ok {
        state
            .login_throttle
            .failed(attempt)
            .await
            .map_err(ApiError::unavailable)?;
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "wrong_password",
            "the current password is incorrect",
        ));
    }
    state
        .login_throttle
        .succeeded(attempt)
        .await
        .map_err(ApiError::unavailable)?;
    let new_hash = state.passwords.hash(new.secret()).await?;
    let revoked = state
        .db
        .set_password_hash(
            user.id,
            &new_hash,
            Some(user.session_id),
            Some(&user.actor()),
        )
        .await?;
    // Every other sign-in ended: their signalling connections close (on every node). This
    // sign-in's stay.
    state
        .hub
        .revoke(user.id, SignIns::AllBut(user.session_id))
        .await;
    Ok(axum::Json(revoked.into()))
}

/// Sign out everywhere: every sign-in of the account ends (this one too), join tokens they
/// issued stop working, and the calendar feed URL is revoked.
#[utoipa::path(post, path = "/api/v1/me/sign-out-everywhere", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "Signed out everywhere; what was revoked", body = RevokedView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn sign_out_everywhere(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<RevokedView>> {
    let revoked = state.db.revoke_everything(user.id, &user.actor()).await?;
    state.hub.revoke(user.id, SignIns::All).await;
    tracing::info!(user_id = %user.id, sign_ins = revoked.sign_ins, "signed out everywhere");
    Ok(axum::Json(revoked.into()))
}

/// Privacy settings of the account.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Privacy {
    /// Connect calls through the TURN relay only, so that the other side never learns your
    /// IP address (slightly more delay). Needs a TURN server on this deployment.
    pub relay_only: bool,
}

/// The account's privacy settings, and what they mean on this deployment now.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PrivacyView {
    /// Whether calls are to be relay-only: your choice, or the service's rule.
    pub relay_only: bool,
    /// The service makes every call relay-only (it cannot be switched off).
    pub enforced: bool,
    /// The service has a TURN relay now.
    pub relay_available: bool,
    /// What your next call does: `relayed` (your IP address stays hidden from the other
    /// side), `direct` (peer to peer where the network allows; the other side may learn
    /// your IP address) or `refused` (you chose relay-only and there is no relay now, so
    /// joining is refused rather than connecting directly).
    pub effective: CallPath,
}

fn privacy_view(state: &AppState, chosen: bool) -> PrivacyView {
    PrivacyView {
        relay_only: chosen || state.config.relay_only,
        enforced: state.config.relay_only,
        relay_available: state.ice.has_turn(),
        effective: state.ice.effective(chosen),
    }
}

/// The account's privacy settings and their effect on this deployment.
#[utoipa::path(get, path = "/api/v1/me/privacy", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "Settings and their effect", body = PrivacyView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_privacy(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<PrivacyView>> {
    let chosen = state.db.relay_only(user.id).await?;
    Ok(axum::Json(privacy_view(&state, chosen)))
}

/// Change the account's privacy settings.
#[utoipa::path(put, path = "/api/v1/me/privacy", tag = "account", security(("bearer" = [])),
    request_body = Privacy,
    responses(
        (status = 200, description = "Settings and their effect", body = PrivacyView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 409, description = "No TURN server to relay through, or relay-only is enforced", body = Problem, content_type = "application/problem+json"),
    ))]
async fn set_privacy(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<Privacy>,
) -> ApiResult<axum::Json<PrivacyView>> {
    if body.relay_only && !state.ice.has_turn() {
        return Err(ApiError::conflict(
            "relay_unavailable",
            "this service has no TURN relay, so calls cannot be relay-only",
        ));
    }
    if !body.relay_only && state.config.relay_only {
        return Err(ApiError::conflict(
            "relay_enforced",
            "this service makes every call relay-only",
        ));
    }
    state
        .db
        .set_relay_only(user.id, body.relay_only, &user.actor())
        .await?;
    Ok(axum::Json(privacy_view(&state, body.relay_only)))
}

/// The account's mail settings, and what this deployment sends.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingsView {
    /// Reminders before each appointment, by email. Confirmations and notices of changes
    /// and cancellations are always sent.
    pub email_reminders: bool,
    /// The IANA time zone the times in your mail are given in (none: your therapist
    /// profile's, else UTC). The web client sets it from the browser when it is unset.
    pub time_zone: Option<String>,
    /// The language of the web client and of your mail: `en`, `de` or `es` (none: not
    /// chosen yet; mail is then in English).
    pub language: Option<String>,
    /// Whether this service sends mail at all.
    pub mail_enabled: bool,
    /// How long before an appointment each reminder goes out, in seconds.
    pub reminder_lead_seconds: Vec<u64>,
}

/// A change of the account's settings: fields left out stay as they are.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    pub email_reminders: Option<bool>,
    /// An IANA time zone (`Europe/Berlin`), or null to clear it.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub time_zone: Option<Option<String>>,
    /// `en`, `de` or `es`.
    pub language: Option<String>,
}

/// The languages the web client and the mail are written in.
pub const LANGUAGES: [&str; 3] = ["en", "de", "es"];

/// A field that is present (even as null) is `Some`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

fn settings_view(state: &AppState, s: crate::store::MailSettings) -> SettingsView {
    SettingsView {
        email_reminders: s.email_reminders,
        time_zone: s.time_zone,
        language: s.language,
        mail_enabled: state.mail_plan.is_some(),
        reminder_lead_seconds: state
            .mail_plan()
            .map(|p| p.reminders.iter().map(|d| d.as_secs()).collect())
            .unwrap_or_default(),
    }
}

/// The account's settings: reminders by email, the time zone and language of its mail (the
/// language is also the web client's).
#[utoipa::path(get, path = "/api/v1/me/settings", tag = "account", security(("bearer" = [])),
    responses(
        (status = 200, description = "Settings", body = SettingsView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
    ))]
async fn get_settings(
    State(state): State<AppState>,
    user: AuthUser,
) -> ApiResult<axum::Json<SettingsView>> {
    let s = state.db.mail_settings(user.id).await?;
    Ok(axum::Json(settings_view(&state, s)))
}

/// Change the account's settings. Switching reminders off also drops reminders already
/// waiting to be sent.
#[utoipa::path(patch, path = "/api/v1/me/settings", tag = "account", security(("bearer" = [])),
    request_body = SettingsPatch,
    responses(
        (status = 200, description = "Settings", body = SettingsView),
        (status = 401, description = "Not signed in", body = Problem, content_type = "application/problem+json"),
        (status = 422, description = "An unknown time zone or language", body = Problem, content_type = "application/problem+json"),
    ))]
async fn patch_settings(
    State(state): State<AppState>,
    user: AuthUser,
    Json(body): Json<SettingsPatch>,
) -> ApiResult<axum::Json<SettingsView>> {
    let mut fields = Fields::default();
    let time_zone = match body.time_zone {
        Some(Some(raw)) => fields
            .check("time_zone", crate::domain::TimeZoneName::parse(&raw))
            .map(|tz| Some(tz.as_str().to_owned())),
        other => other,
    };
    if let Some(lang) = &body.language
        && !LANGUAGES.contains(&lang.as_str())
    {
        fields.push("language", format!("one of {}", LANGUAGES.join(", ")));
    }
    fields.finish()?;
    let mut s = state.db.mail_settings(user.id).await?;
    if let Some(on) = body.email_reminders {
        s.email_reminders = on;
    }
    if let Some(tz) = time_zone {
        s.time_zone = tz;
    }
    if let Some(lang) = body.language {
        s.language = Some(lang);
    }
    state
        .db
        .set_mail_settings(user.id, &s, &user.actor())
        .await?;
    Ok(axum::Json(settings_view(&state, s)))
}

//! `/api/v1/users/me` and `/api/v1/users/me/preferences`: the signed-in end
//! user or admin, from their JWT, and their own notification preferences.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use serde_json::Value;
use shared::{
    db::{preferences, subscribers},
    preferences::Preferences,
};

use crate::{AppState, auth::UserJwt, error::ApiError, routes::ApiTags};

/// The user endpoints.
#[derive(Debug)]
pub struct UsersApi;

/// Who the token speaks for.
#[derive(Debug, Object)]
pub struct Me {
    /// The user's id at the identity provider.
    pub subject: String,
    /// The organisation (tenant) the user belongs to.
    pub tenant_id: String,
    /// The user's roles.
    pub roles: Vec<String>,
}

/// Answers to `GET /me`.
#[derive(Debug, ApiResponse)]
pub enum MeResponse {
    /// The signed-in user.
    #[oai(status = 200)]
    Ok(Json<Me>),
}

/// Answers with preferences.
#[derive(Debug, ApiResponse)]
pub enum PreferencesResponse {
    /// The preferences: `channels` (`{"email": false}`), `categories`
    /// (`{"marketing": {"enabled": false}}` or per channel) and `quiet_hours`
    /// (`{"start": "22:00", "end": "07:00", "timezone": "America/Chicago"}`).
    #[oai(status = 200)]
    Ok(Json<Value>),
}

#[OpenApi(prefix_path = "/api/v1/users", tag = "ApiTags::Users")]
impl UsersApi {
    /// The signed-in user: subject, organisation and roles.
    #[oai(path = "/me", method = "get", operation_id = "users.me")]
    async fn me(&self, auth: UserJwt) -> Result<MeResponse, ApiError> {
        let id = auth.0;
        Ok(MeResponse::Ok(Json(Me {
            subject: id.subject,
            tenant_id: id.tenant_id.to_string(),
            roles: id.roles,
        })))
    }

    /// The signed-in user's notification preferences (defaults when never set).
    #[oai(
        path = "/me/preferences",
        method = "get",
        operation_id = "users.preferences.get"
    )]
    async fn get_preferences(
        &self,
        auth: UserJwt,
        state: Data<&AppState>,
    ) -> Result<PreferencesResponse, ApiError> {
        let prefs = match subscribers::find(&state.pool, auth.0.tenant_id, &auth.0.subject).await? {
            Some(s) => preferences::get(&state.pool, auth.0.tenant_id, s).await?,
            None => Preferences::default(),
        };
        Ok(PreferencesResponse::Ok(Json(
            serde_json::to_value(prefs).map_err(anyhow::Error::from)?,
        )))
    }

    /// Replace the signed-in user's notification preferences. Critical
    /// notifications are sent regardless.
    #[oai(
        path = "/me/preferences",
        method = "put",
        operation_id = "users.preferences.put"
    )]
    async fn put_preferences(
        &self,
        auth: UserJwt,
        state: Data<&AppState>,
        body: Json<Value>,
    ) -> Result<PreferencesResponse, ApiError> {
        let prefs = Preferences::parse(body.0)
            .map_err(|reason| ApiError::invalid("preferences", reason))?;
        let subscriber = subscribers::upsert(
            &mut *state.pool.acquire().await?,
            auth.0.tenant_id,
            &auth.0.subject,
        )
        .await?;
        preferences::put(&state.pool, auth.0.tenant_id, subscriber, &prefs).await?;
        Ok(PreferencesResponse::Ok(Json(
            serde_json::to_value(prefs).map_err(anyhow::Error::from)?,
        )))
    }
}

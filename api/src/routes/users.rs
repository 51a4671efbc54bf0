//! `/api/v1/users/me`, `/api/v1/users/me/preferences` and
//! `/api/v1/users/me/sessions`: the signed-in end user or admin, from their
//! JWT, their own notification preferences and their sign-in sessions.

use chrono::{DateTime, Utc};
use poem::Request;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::Value;
use shared::{
    db::{preferences, sessions, subscribers},
    domain::UserId,
    preferences::Preferences,
};
use uuid::Uuid;

use crate::{
    auth::UserJwt, error::ApiError, extract::UserCtx, routes::ApiTags,
    services::sessions::revoke_own, signin::Client,
};

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

/// A live sign-in session.
#[derive(Debug, Object)]
pub struct SessionView {
    /// Its id (its access tokens' `sid`).
    pub id: String,
    /// Signed in.
    pub created_at: DateTime<Utc>,
    /// Last signed in or refreshed.
    pub last_used_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
    /// The client address at the last sign-in or refresh (truncated).
    pub ip: Option<String>,
    /// The client's user agent then (truncated).
    pub user_agent: Option<String>,
    /// Whether the token of this request belongs to it.
    pub current: bool,
}

/// Live sessions.
#[derive(Debug, Object)]
pub struct SessionList {
    /// Newest first.
    pub items: Vec<SessionView>,
}

/// How many sessions were revoked.
#[derive(Debug, Object)]
pub struct Revoked {
    /// How many.
    pub revoked: u64,
}

/// Answers with sessions.
#[derive(Debug, ApiResponse)]
pub enum SessionsResponse {
    /// The live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionList>),
}

/// Answers to revoking sessions.
#[derive(Debug, ApiResponse)]
pub enum RevokedResponse {
    /// Revoked; their tokens stop working and their WebSockets are closed.
    #[oai(status = 200)]
    Ok(Json<Revoked>),
}

/// Answers to revoking one session.
#[derive(Debug, ApiResponse)]
pub enum RevokedOneResponse {
    /// Revoked; its tokens stop working and its WebSockets are closed.
    #[oai(status = 204)]
    NoContent,
}

/// The platform user the token speaks for (`None` for an external one).
fn platform_user(id: &crate::identity::Identity) -> Option<UserId> {
    id.subject.parse().ok()
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
    async fn get_preferences(&self, cx: UserCtx<'_>) -> Result<PreferencesResponse, ApiError> {
        let prefs = match subscribers::find(&cx.state.pool, cx.auth.0.tenant_id, &cx.auth.0.subject)
            .await?
        {
            Some(s) => preferences::get(&cx.state.pool, cx.auth.0.tenant_id, s).await?,
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
        cx: UserCtx<'_>,
        body: Json<Value>,
    ) -> Result<PreferencesResponse, ApiError> {
        let prefs = Preferences::parse(body.0)
            .map_err(|reason| ApiError::invalid("preferences", reason))?;
        let subscriber = subscribers::upsert(
            &mut *cx.state.pool.acquire().await?,
            cx.auth.0.tenant_id,
            &cx.auth.0.subject,
        )
        .await?;
        preferences::put(&cx.state.pool, cx.auth.0.tenant_id, subscriber, &prefs).await?;
        Ok(PreferencesResponse::Ok(Json(
            serde_json::to_value(prefs).map_err(anyhow::Error::from)?,
        )))
    }

    /// The signed-in user's live sign-in sessions, newest first; `current`
    /// marks the one of this request's token. Empty for tokens from an
    /// external identity provider.
    #[oai(
        path = "/me/sessions",
        method = "get",
        operation_id = "users.sessions.list"
    )]
    async fn list_sessions(&self, cx: UserCtx<'_>) -> Result<SessionsResponse, ApiError> {
        let who = cx.auth.0;
        let items = match platform_user(&who) {
            Some(user) => sessions::live(&cx.state.pool, who.tenant_id, user)
                .await?
                .into_iter()
                .map(|s| SessionView {
                    id: s.id.to_string(),
                    created_at: s.created_at,
                    last_used_at: s.last_used_at,
                    expires_at: s.expires_at,
                    ip: s.ip,
                    user_agent: s.user_agent,
                    current: who.session_id == Some(s.id),
                })
                .collect(),
            None => Vec::new(),
        };
        Ok(SessionsResponse::Ok(Json(SessionList { items })))
    }

    /// Revoke one of the signed-in user's sessions (404 when it is not a
    /// live session of theirs).
    #[oai(
        path = "/me/sessions/:id",
        method = "delete",
        operation_id = "users.sessions.revoke"
    )]
    async fn revoke_session(
        &self,
        req: &Request,
        cx: UserCtx<'_>,
        id: Path<String>,
    ) -> Result<RevokedOneResponse, ApiError> {
        let who = cx.auth.0;
        let sid = crate::extract::id::<Uuid>(&id.0, "session")?;
        let user = platform_user(&who).ok_or(ApiError::NotFound("session"))?;
        let revoked = revoke_own(
            cx.state,
            &Client::of(req),
            who.tenant_id,
            user,
            sessions::Which::One(sid),
            "revoked_by_user",
        )
        .await?;
        if revoked.is_empty() {
            return Err(ApiError::NotFound("session"));
        }
        Ok(RevokedOneResponse::NoContent)
    }

    /// Sign out everywhere else: revoke every session of the signed-in user
    /// except the one of this request's token (every one, for a token
    /// without a session).
    #[oai(
        path = "/me/sessions",
        method = "delete",
        operation_id = "users.sessions.revoke_others"
    )]
    async fn revoke_other_sessions(
        &self,
        req: &Request,
        cx: UserCtx<'_>,
    ) -> Result<RevokedResponse, ApiError> {
        let who = cx.auth.0;
        let Some(user) = platform_user(&who) else {
            return Ok(RevokedResponse::Ok(Json(Revoked { revoked: 0 })));
        };
        let which = match who.session_id {
            Some(sid) => sessions::Which::AllBut(sid),
            None => sessions::Which::All,
        };
        let revoked = revoke_own(
            cx.state,
            &Client::of(req),
            who.tenant_id,
            user,
            which,
            "revoked_by_user",
        )
        .await?;
        Ok(RevokedResponse::Ok(Json(Revoked {
            revoked: revoked.len() as u64,
        })))
    }
}

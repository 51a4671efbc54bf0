//! `POST /api/v1/auth/login`, `/refresh` and `/logout`: platform users sign
//! in with their email address and password and get a short-lived JWT that
//! the API's own verifier accepts (HS256 with their organisation's secret,
//! created on first use; `sub` the user's id, `tenant_id`, `roles` and `sid`,
//! the session) plus a refresh token for that session.
//!
//! A wrong address, a wrong password, a user without a password and a
//! deactivated user or organisation all answer the same 401 after the same
//! work: one throttle read, one lookup, one argon2id check with the same
//! parameters (see [`access::authenticate`]) and the same failure writes
//! (the counters are kept per address whether a user has it or not); no
//! token is made before the password matched. Too many failures make the
//! address (or client) wait, then lock it: 429 with `Retry-After`, without
//! checking the password ([`crate::signin`]). A user with a temporary
//! password gets a token that may only change it. `cargo bench -p api
//! --bench login` compares the refusals' times.
//!
//! Refresh tokens are opaque (`rt_` and 43 base64url characters, 256 random
//! bits), stored as their SHA-256, and used once: refreshing answers a new
//! pair. A used refresh token presented again revokes its whole session
//! (every token of the family, the newest too) and is recorded as a security
//! event.

use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use shared::{db::sessions, domain::UserId};

use crate::body::StrictJson;
use crate::{
    AppState,
    error::ApiError,
    extract::UserCtx,
    middleware::RequestId,
    routes::ApiTags,
    services::sessions::{self as service, Issued, TOKEN_TTL_SECS},
    signin::Client,
};

/// The sign-in endpoints.
#[derive(Debug)]
pub struct SessionsApi;

/// Credentials.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct Login {
    /// The user's email address.
    pub email: String,
    /// The password.
    pub password: String,
}

/// A refresh token to exchange.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct Refresh {
    /// The refresh token the last sign-in or refresh returned: `rt_` and
    /// 43 base64url characters.
    #[oai(validator(pattern = "^rt_[A-Za-z0-9_-]{43}$"))]
    pub refresh_token: String,
}

/// An issued token pair.
#[derive(Debug, Object)]
pub struct Session {
    /// The bearer JWT.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
    /// The user's id (the token's `sub`).
    pub user_id: String,
    /// The user's organisation.
    pub organization_id: String,
    /// The user's role.
    pub role: String,
    /// Whether the password is temporary: the token may only change it.
    pub must_change_password: bool,
    /// Exchange it at `POST /api/v1/auth/refresh` for a new pair; it works
    /// once.
    pub refresh_token: String,
    /// Seconds until the refresh token expires.
    pub refresh_expires_in: i64,
    /// The session (the access token's `sid`).
    pub session_id: String,
}

/// Answers to a sign-in or refresh.
#[derive(Debug, ApiResponse)]
pub enum LoginResponse {
    /// Signed in.
    #[oai(status = 200)]
    Ok(Json<Session>),
}

/// Answers to a sign-out.
#[derive(Debug, ApiResponse)]
pub enum LogoutResponse {
    /// The session is revoked: its tokens stop working and its WebSockets
    /// are closed.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Users")]
impl SessionsApi {
    /// Sign in with email and password: an access token and a refresh
    /// token. After repeated failures the address (or client) must wait,
    /// then is locked for a while: 429 with `Retry-After`, whether or not
    /// a user has the address.
    #[oai(path = "/login", method = "post", operation_id = "auth.login")]
    async fn login(
        &self,
        req: &Request,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<Login>,
    ) -> Result<LoginResponse, ApiError> {
        let Login { email, password } = body.0;
        let client = Client::of(req);
        let issued = service::login(&state, &client, &request_id.0.0, &email, password).await?;
        Ok(answer(issued))
    }

    /// Exchange a refresh token for a new access token and refresh token.
    /// Each refresh token works once: presenting a used one again revokes
    /// its whole session (401).
    #[oai(path = "/refresh", method = "post", operation_id = "auth.refresh")]
    async fn refresh(
        &self,
        req: &Request,
        state: Data<&AppState>,
        body: StrictJson<Refresh>,
    ) -> Result<LoginResponse, ApiError> {
        let issued = service::refresh(&state, &Client::of(req), &body.0.refresh_token).await?;
        Ok(answer(issued))
    }

    /// Sign out: revoke the session of the bearer token. Its access tokens
    /// stop working at once, its refresh token too, and its open
    /// WebSockets are closed. 409 for a token without a session (one from
    /// an external identity provider).
    #[oai(path = "/logout", method = "post", operation_id = "auth.logout")]
    async fn logout(&self, req: &Request, cx: UserCtx<'_>) -> Result<LogoutResponse, ApiError> {
        let who = cx.auth.0;
        let (Some(sid), Ok(user)) = (who.session_id, who.subject.parse::<UserId>()) else {
            return Err(ApiError::Conflict(
                "this token has no sign-in session; sign out at its identity provider".into(),
            ));
        };
        let client = Client::of(req);
        service::revoke_own(
            cx.state,
            &client,
            who.tenant_id,
            user,
            sessions::Which::One(sid),
            "logout",
        )
        .await?;
        Ok(LogoutResponse::NoContent)
    }
}

/// The answer for a new pair.
fn answer(issued: Issued) -> LoginResponse {
    LoginResponse::Ok(Json(Session {
        access_token: issued.access_token,
        token_type: "Bearer".into(),
        expires_in: TOKEN_TTL_SECS,
        user_id: issued.user.to_string(),
        organization_id: issued.tenant.to_string(),
        role: issued.role,
        must_change_password: issued.must_change_password,
        refresh_token: issued.refresh_token,
        refresh_expires_in: issued.refresh_expires_in.num_seconds().max(0),
        session_id: issued.session_id.to_string(),
    }))
}

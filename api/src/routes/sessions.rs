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

use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{EncodingKey, Header};
use poem::{Request, web::Data};
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};
use rand::RngCore;
use serde_json::json;
use shared::{
    db::{
        audit, jwt_secrets, login_throttle, scope,
        security_events::{self as events, Event},
        sessions, users,
    },
    domain::TenantId,
};
use uuid::Uuid;

use crate::body::StrictJson;
use crate::{
    AppState, access,
    error::ApiError,
    extract::UserCtx,
    middleware::RequestId,
    routes::ApiTags,
    signin::{self, Client},
};

/// How long an issued access token lives.
pub const TOKEN_TTL_SECS: i64 = signin::ACCESS_TTL_SECS;

/// What a refresh token starts with.
pub const REFRESH_PREFIX: &str = "rt_";

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

/// Why sign-in reads before its caller is known run in platform scope.
const SIGN_IN: &str = "sign_in";

/// The organisation's HS256 secret, created (sealed) on first use.
async fn tenant_secret(state: &AppState, tenant: TenantId) -> Result<Vec<u8>, ApiError> {
    let keyring = state.keyring.as_ref().ok_or_else(|| {
        ApiError::Unavailable("sign-in needs ENCRYPTION_KEYS to keep token secrets".into())
    })?;
    let aad = jwt_secrets::aad(tenant);
    if jwt_secrets::get(&state.pool, tenant).await?.is_none() {
        let mut raw = [0u8; 32];
        rand::rng().fill_bytes(&mut raw);
        let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let sealed = keyring.seal(secret.as_bytes(), &aad);
        jwt_secrets::put_if_absent(&state.pool, tenant, &sealed).await?;
    }
    let sealed = jwt_secrets::get(&state.pool, tenant)
        .await?
        .ok_or(ApiError::Unauthorized)?;
    keyring
        .open(&sealed, &aad)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("while opening a JWT secret: {e}")))
}

/// Who a token pair is issued to.
struct Holder {
    user: Uuid,
    tenant: TenantId,
    role: String,
    must_change_password: bool,
}

/// A signed access token for `who` in session `sid`.
async fn access_token(state: &AppState, who: &Holder, sid: Uuid) -> Result<String, ApiError> {
    let secret = tenant_secret(state, who.tenant).await?;
    let settings = state.verifier.settings();
    let now = Utc::now().timestamp();
    let mut claims = serde_json::Map::new();
    claims.insert(settings.subject_claim.clone(), json!(who.user.to_string()));
    claims.insert(settings.tenant_claim.clone(), json!(who.tenant.to_string()));
    claims.insert(settings.roles_claim.clone(), json!([who.role]));
    claims.insert("sid".into(), json!(sid.to_string()));
    claims.insert("iat".into(), json!(now));
    claims.insert("exp".into(), json!(now + TOKEN_TTL_SECS));
    if let Some(iss) = &settings.issuer {
        claims.insert("iss".into(), json!(iss));
    }
    if let Some(aud) = &settings.audience {
        claims.insert("aud".into(), json!(aud));
    }
    jsonwebtoken::encode(
        &Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::Value::Object(claims),
        &EncodingKey::from_secret(&secret),
    )
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("while signing a token: {e}")))
}

/// A new refresh token: `rt_` and 256 random bits in base64url.
fn new_refresh_token() -> String {
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    format!(
        "{REFRESH_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    )
}

/// Whether `token` has the shape of a refresh token this API issues.
pub fn well_formed(token: &str) -> bool {
    token.len() == REFRESH_PREFIX.len() + 43
        && token.starts_with(REFRESH_PREFIX)
        && token[REFRESH_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The answer for a new pair.
fn answer(
    who: Holder,
    access_token: String,
    refresh_token: String,
    refresh_expires_in: chrono::Duration,
    sid: Uuid,
) -> LoginResponse {
    LoginResponse::Ok(Json(Session {
        access_token,
        token_type: "Bearer".into(),
        expires_in: TOKEN_TTL_SECS,
        user_id: who.user.to_string(),
        organization_id: who.tenant.to_string(),
        role: who.role,
        must_change_password: who.must_change_password,
        refresh_token,
        refresh_expires_in: refresh_expires_in.num_seconds().max(0),
        session_id: sid.to_string(),
    }))
}

/// Records a failed sign-in for the account key and the client's key, and
/// the locks it set; then prunes keys nobody failed on for a day.
async fn record_failure(
    state: &AppState,
    client: &Client,
    account_key: &str,
    known: Option<(TenantId, Uuid)>,
) -> Result<(), ApiError> {
    let now = state.signin.clock.now();
    let mut tx = state.pool.begin().await?;
    let mut account = login_throttle::lock(&mut tx, account_key).await?;
    if let Some((tenant, user)) = known {
        account.tenant_id = Some(tenant);
        account.user_id = Some(user);
    }
    let account_locked = signin::fail(&mut account, &signin::ACCOUNT, now);
    login_throttle::save(&mut *tx, &account).await?;
    let (tenant, user) = (account.tenant_id, account.user_id);
    let ip = client.ip.as_deref();
    let ua = client.user_agent.as_deref();
    let mut recorded = vec![
        Event::new(tenant, events::LOGIN_FAILED, user, ip, ua)
            .details(json!({"failures": account.failures})),
    ];
    if account_locked {
        recorded.push(
            Event::new(tenant, events::ACCOUNT_LOCKED, user, ip, ua).details(json!({
                "scope": "account",
                "locked_until": account.locked_until,
                "locks": account.locks,
            })),
        );
    }
    if let Some(ip) = ip {
        let mut address = login_throttle::lock(&mut tx, &login_throttle::ip_key(ip)).await?;
        if signin::fail(&mut address, &signin::ADDRESS, now) {
            recorded.push(
                Event::new(None, events::ACCOUNT_LOCKED, None, Some(ip), ua).details(json!({
                    "scope": "address",
                    "locked_until": address.locked_until,
                    "locks": address.locks,
                })),
            );
        }
        login_throttle::save(&mut *tx, &address).await?;
    }
    events::record(&mut *tx, &recorded).await?;
    tx.commit().await?;
    if let Err(error) =
        login_throttle::prune(&state.pool, now - signin::FORGET_AFTER, now, 100).await
    {
        tracing::warn!(%error, "cannot prune old sign-in failures");
    }
    Ok(())
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
        if email.len() > 254 || password.len() > access::MAX_PASSWORD * 4 {
            return Err(ApiError::Unauthorized);
        }
        let client = Client::of(req);
        let account_key = login_throttle::account_key(&email);
        let mut keys = vec![account_key.clone()];
        if let Some(ip) = &client.ip {
            keys.push(login_throttle::ip_key(ip));
        }
        // Until the password is checked the caller has no organisation:
        // the throttle (by address and email), the account lookup (by
        // email) and the failure records run in platform scope.
        // Waiting or locked: refused before any password check.
        let now = state.signin.clock.now();
        let throttled =
            scope::platform(SIGN_IN, login_throttle::states(&state.pool, &keys)).await?;
        if let Some(until) = throttled.iter().filter_map(|s| s.blocked_until(now)).max() {
            let account = throttled.iter().find(|s| s.key == account_key);
            let secs = signin::retry_after(now, until);
            let event = Event::new(
                account.and_then(|s| s.tenant_id),
                events::LOGIN_THROTTLED,
                account.and_then(|s| s.user_id),
                client.ip.as_deref(),
                client.user_agent.as_deref(),
            )
            .details(json!({"retry_after": secs}));
            scope::platform(SIGN_IN, events::record(&state.pool, &[event])).await?;
            return Err(ApiError::TooManyRequests(secs));
        }
        // Every refusal past this point costs the same: one lookup, one
        // password check, the same failure writes.
        let creds = scope::platform(SIGN_IN, users::credentials(&state.pool, &email)).await?;
        let known = creds.as_ref().map(|c| (c.tenant_id, c.id));
        let Some(c) = access::authenticate(creds, password).await else {
            scope::platform(
                SIGN_IN,
                record_failure(&state, &client, &account_key, known),
            )
            .await?;
            return Err(ApiError::Unauthorized);
        };
        scope::platform(SIGN_IN, login_throttle::clear(&state.pool, &account_key)).await?;
        // The caller is known: the rest is walled to its organisation.
        crate::auth::wall_to(&state, c.tenant_id, false).await?;
        let who = Holder {
            user: c.id,
            tenant: c.tenant_id,
            role: c.role,
            must_change_password: c.must_change_password,
        };
        let sid = Uuid::now_v7();
        let token = access_token(&state, &who, sid).await?;
        let refresh = new_refresh_token();
        let created = Utc::now();
        let session_expires = created + signin::SESSION_TTL;
        let refresh_expires = (created + signin::REFRESH_TTL).min(session_expires);
        let mut tx = state.pool.begin().await?;
        sessions::create(
            &mut *tx,
            sessions::NewSession {
                id: sid,
                tenant_id: who.tenant,
                user_id: who.user,
                expires_at: session_expires,
                ip: client.ip.as_deref(),
                user_agent: client.user_agent.as_deref(),
            },
        )
        .await?;
        sessions::add_refresh_token(&mut *tx, sid, &sessions::hash(&refresh), refresh_expires)
            .await?;
        users::touch_login(&mut *tx, who.user).await?;
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant_id: Some(who.tenant),
                actor: &format!("user:{}", who.user),
                action: "user.login",
                resource_type: "user",
                resource_id: Some(who.user.to_string()),
                result: "success",
                request_id: Some(&request_id.0.0),
                details: json!({}),
            },
        )
        .await?;
        events::record(
            &mut *tx,
            &[Event::new(
                Some(who.tenant),
                events::LOGIN_SUCCEEDED,
                Some(who.user),
                client.ip.as_deref(),
                client.user_agent.as_deref(),
            )
            .session(sid)],
        )
        .await?;
        tx.commit().await?;
        Ok(answer(who, token, refresh, refresh_expires - created, sid))
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
        let presented = body.0.refresh_token;
        if !well_formed(&presented) {
            return Err(ApiError::invalid(
                "refresh_token",
                "is not a refresh token this API issues",
            ));
        }
        let client = Client::of(req);
        let hash = sessions::hash(&presented);
        // The token names no organisation until it is found; the exchange
        // then runs walled to the session's.
        let found =
            scope::platform("token_refresh", sessions::presented(&state.pool, &hash)).await?;
        let Some(found) = found else {
            return Err(ApiError::Unauthorized);
        };
        crate::auth::wall_to(&state, found.tenant_id, false).await?;
        let mut tx = state.pool.begin().await?;
        let Some(p) = sessions::presented(&mut *tx, &hash).await? else {
            return Err(ApiError::Unauthorized);
        };
        if p.used_at.is_some() {
            // A used token again: whoever holds the family, it leaked.
            let revoked =
                sessions::revoke_family(&mut *tx, p.session_id, "refresh_token_reused").await?;
            events::record(
                &mut *tx,
                &[Event::new(
                    Some(p.tenant_id),
                    events::REFRESH_REUSED,
                    Some(p.user_id),
                    client.ip.as_deref(),
                    client.user_agent.as_deref(),
                )
                .session(p.session_id)
                .details(json!({"session_revoked": revoked}))],
            )
            .await?;
            tx.commit().await?;
            tracing::warn!(session = %p.session_id, "a used refresh token was presented again; its session is revoked");
            signin::announce_revoked(&state, &[p.session_id]).await;
            return Err(ApiError::Unauthorized);
        }
        if p.token_expired || p.session_over || !p.user_ok {
            return Err(ApiError::Unauthorized);
        }
        if !sessions::mark_used(&mut *tx, &hash).await? {
            return Err(ApiError::Unauthorized);
        }
        let next = new_refresh_token();
        let now = Utc::now();
        let refresh_expires = (now + signin::REFRESH_TTL).min(p.session_expires_at);
        sessions::add_refresh_token(
            &mut *tx,
            p.session_id,
            &sessions::hash(&next),
            refresh_expires,
        )
        .await?;
        sessions::touch(
            &mut *tx,
            p.session_id,
            client.ip.as_deref(),
            client.user_agent.as_deref(),
        )
        .await?;
        let who = Holder {
            user: p.user_id,
            tenant: p.tenant_id,
            role: p.role,
            must_change_password: p.must_change_password,
        };
        let token = access_token(&state, &who, p.session_id).await?;
        tx.commit().await?;
        Ok(answer(
            who,
            token,
            next,
            refresh_expires - now,
            p.session_id,
        ))
    }

    /// Sign out: revoke the session of the bearer token. Its access tokens
    /// stop working at once, its refresh token too, and its open
    /// WebSockets are closed. 409 for a token without a session (one from
    /// an external identity provider).
    #[oai(path = "/logout", method = "post", operation_id = "auth.logout")]
    async fn logout(&self, req: &Request, cx: UserCtx<'_>) -> Result<LogoutResponse, ApiError> {
        let who = cx.auth.0;
        let (Some(sid), Ok(user)) = (who.session_id, Uuid::parse_str(&who.subject)) else {
            return Err(ApiError::Conflict(
                "this token has no sign-in session; sign out at its identity provider".into(),
            ));
        };
        let client = Client::of(req);
        revoke_own(
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

/// Revokes `which` of `user`'s sessions, records a security event for each
/// and closes their WebSockets; their ids.
pub async fn revoke_own(
    state: &AppState,
    client: &Client,
    tenant: TenantId,
    user: Uuid,
    which: sessions::Which,
    reason: &str,
) -> Result<Vec<Uuid>, ApiError> {
    let mut tx = state.pool.begin().await?;
    let revoked = sessions::revoke(&mut *tx, tenant, user, which, reason).await?;
    let recorded: Vec<Event> = revoked
        .iter()
        .map(|sid| {
            Event::new(
                Some(tenant),
                events::SESSION_REVOKED,
                Some(user),
                client.ip.as_deref(),
                client.user_agent.as_deref(),
            )
            .session(*sid)
            .details(json!({"reason": reason}))
        })
        .collect();
    events::record(&mut *tx, &recorded).await?;
    tx.commit().await?;
    signin::announce_revoked(state, &revoked).await;
    Ok(revoked)
}

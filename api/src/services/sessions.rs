//! Sessions of platform users: signing in with a password (throttled by
//! [`crate::signin`]), exchanging a refresh token for a new pair, and
//! revoking sessions. The routes in [`crate::routes::sessions`] and
//! [`crate::routes::users`] parse requests and shape answers; the rules are
//! here.
//!
//! A wrong address, a wrong password, a user without a password and a
//! deactivated user or organisation all end in the same 401 after the same
//! work: one throttle read, one lookup, one argon2id check with the same
//! parameters (see [`access::authenticate`]) and the same failure writes; no
//! token is made before the password matched. Refresh tokens are opaque
//! (`rt_` and 43 base64url characters, 256 random bits), stored as their
//! SHA-256, and used once: a used one presented again revokes its whole
//! session.

use base64::Engine as _;
use chrono::Utc;
use jsonwebtoken::{EncodingKey, Header};
use rand::RngCore;
use serde_json::json;
use shared::{
    db::{
        audit, jwt_secrets, login_throttle, scope,
        security_events::{self as events, Event},
        sessions, users,
    },
    domain::{TenantId, UserId},
};
use uuid::Uuid;

use crate::{
    AppState, access,
    error::ApiError,
    signin::{self, Client},
};

/// How long an issued access token lives.
pub const TOKEN_TTL_SECS: i64 = signin::ACCESS_TTL_SECS;

/// What a refresh token starts with.
pub const REFRESH_PREFIX: &str = "rt_";

/// A token pair issued to a user for one session.
#[derive(Debug)]
pub struct Issued {
    /// The user.
    pub user: UserId,
    /// The user's organisation.
    pub tenant: TenantId,
    /// The user's role.
    pub role: String,
    /// Whether the password is temporary: the token may only change it.
    pub must_change_password: bool,
    /// The signed access token.
    pub access_token: String,
    /// The refresh token, usable once.
    pub refresh_token: String,
    /// How long the refresh token lives.
    pub refresh_expires_in: chrono::Duration,
    /// The session.
    pub session_id: Uuid,
}

impl Issued {
    fn new(
        who: Holder,
        access_token: String,
        refresh_token: String,
        refresh_expires_in: chrono::Duration,
        session_id: Uuid,
    ) -> Self {
        Self {
            user: who.user,
            tenant: who.tenant,
            role: who.role,
            must_change_password: who.must_change_password,
            access_token,
            refresh_token,
            refresh_expires_in,
            session_id,
        }
    }
}

/// Signs `email` in with `password` from `client`: a new session and its
/// token pair. Throttled callers get 429 before any password check; every
/// other refusal is the same 401. `request_id` is what the audit row names.
pub async fn login(
    state: &AppState,
    client: &Client,
    request_id: &str,
    email: &str,
    password: String,
) -> Result<Issued, ApiError> {
    if email.len() > 254 || password.len() > access::MAX_PASSWORD * 4 {
        return Err(ApiError::Unauthorized);
    }
    let account_key = login_throttle::account_key(email);
    let mut keys = vec![account_key.clone()];
    if let Some(ip) = &client.ip {
        keys.push(login_throttle::ip_key(ip));
    }
    // Until the password is checked the caller has no organisation:
    // the throttle (by address and email), the account lookup (by
    // email) and the failure records run in platform scope.
    // Waiting or locked: refused before any password check.
    let now = state.signin.clock.now();
    let throttled = scope::platform(SIGN_IN, login_throttle::states(&state.pool, &keys)).await?;
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
    let creds = scope::platform(SIGN_IN, users::credentials(&state.pool, email)).await?;
    let known = creds.as_ref().map(|c| (c.tenant_id, c.id));
    let Some(c) = access::authenticate(creds, password).await else {
        scope::platform(SIGN_IN, record_failure(state, client, &account_key, known)).await?;
        return Err(ApiError::Unauthorized);
    };
    scope::platform(SIGN_IN, login_throttle::clear(&state.pool, &account_key)).await?;
    // The caller is known: the rest is walled to its organisation.
    crate::auth::wall_to(state, c.tenant_id, false).await?;
    let who = Holder {
        user: c.id,
        tenant: c.tenant_id,
        role: c.role,
        must_change_password: c.must_change_password,
    };
    let sid = Uuid::now_v7();
    let token = access_token(state, &who, sid).await?;
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
    sessions::add_refresh_token(&mut *tx, sid, &sessions::hash(&refresh), refresh_expires).await?;
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
            request_id: Some(request_id),
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
    Ok(Issued::new(
        who,
        token,
        refresh,
        refresh_expires - created,
        sid,
    ))
}

/// Exchanges `presented`, a refresh token, for a new pair of the same
/// session. Each refresh token works once: presenting a used one again
/// revokes its whole session (401).
pub async fn refresh(
    state: &AppState,
    client: &Client,
    presented: &str,
) -> Result<Issued, ApiError> {
    if !well_formed(presented) {
        return Err(ApiError::invalid(
            "refresh_token",
            "is not a refresh token this API issues",
        ));
    }
    let hash = sessions::hash(presented);
    // The token names no organisation until it is found; the exchange
    // then runs walled to the session's.
    let found = scope::platform("token_refresh", sessions::presented(&state.pool, &hash)).await?;
    let Some(found) = found else {
        return Err(ApiError::Unauthorized);
    };
    crate::auth::wall_to(state, found.tenant_id, false).await?;
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
        signin::announce_revoked(state, &[p.session_id]).await;
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
    let token = access_token(state, &who, p.session_id).await?;
    tx.commit().await?;
    Ok(Issued::new(
        who,
        token,
        next,
        refresh_expires - now,
        p.session_id,
    ))
}

/// Revokes `which` of `user`'s sessions, records a security event for each
/// and closes their WebSockets; their ids.
pub async fn revoke_own(
    state: &AppState,
    client: &Client,
    tenant: TenantId,
    user: UserId,
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

/// Revokes every live session of `user` in `tx` (a password change, a
/// deactivation, an admin's revocation `by` an actor from a client),
/// recording a security event for each; their ids, to announce
/// ([`signin::announce_revoked`]) after the commit.
pub async fn end_sessions(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    user: &users::User,
    reason: &str,
    by: Option<(&Client, &str)>,
) -> Result<Vec<Uuid>, ApiError> {
    let ended = sessions::revoke(
        &mut **tx,
        user.tenant_id,
        user.id,
        sessions::Which::All,
        reason,
    )
    .await?;
    let recorded: Vec<Event> = ended
        .iter()
        .map(|sid| {
            let (ip, user_agent, details) = match by {
                Some((client, actor)) => (
                    client.ip.as_deref(),
                    client.user_agent.as_deref(),
                    json!({"reason": reason, "by": actor}),
                ),
                None => (None, None, json!({"reason": reason})),
            };
            Event::new(
                Some(user.tenant_id),
                events::SESSION_REVOKED,
                Some(user.id),
                ip,
                user_agent,
            )
            .session(*sid)
            .details(details)
        })
        .collect();
    events::record(&mut **tx, &recorded).await?;
    Ok(ended)
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
    user: UserId,
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

/// Records a failed sign-in for the account key and the client's key, and
/// the locks it set; then prunes keys nobody failed on for a day.
async fn record_failure(
    state: &AppState,
    client: &Client,
    account_key: &str,
    known: Option<(TenantId, UserId)>,
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

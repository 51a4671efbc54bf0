//! Sign-in sessions and their refresh tokens.
//!
//! A session is one sign-in: a family of refresh tokens, each used once.
//! Refreshing marks the presented token used and stores the next one; a used
//! token presented again means the family leaked, and the whole session is
//! revoked. Tokens are stored as their SHA-256, never as themselves.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{TenantId, UserId};

/// The SHA-256 a refresh token is stored and looked up by.
pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// A new session's fields.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// Its id (the access tokens' `sid`).
    pub id: Uuid,
    /// The user's organisation.
    pub tenant_id: TenantId,
    /// The user.
    pub user_id: UserId,
    /// When it ends whatever happens.
    pub expires_at: DateTime<Utc>,
    /// The client address, truncated.
    pub ip: Option<&'a str>,
    /// The client's user agent, truncated.
    pub user_agent: Option<&'a str>,
}

/// Creates a session.
#[tracing::instrument(skip_all)]
pub async fn create(db: impl PgExecutor<'_>, s: NewSession<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into auth_sessions (id, tenant_id, user_id, expires_at, ip, user_agent)
         values ($1, $2, $3, $4, $5, $6)",
        s.id,
        s.tenant_id.0,
        s.user_id.0,
        s.expires_at,
        s.ip,
        s.user_agent,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Stores a refresh token (by its hash) of `session`.
#[tracing::instrument(skip_all)]
pub async fn add_refresh_token(
    db: impl PgExecutor<'_>,
    session: Uuid,
    token_hash: &[u8],
    expires_at: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into refresh_tokens (token_hash, session_id, expires_at) values ($1, $2, $3)",
        token_hash,
        session,
        expires_at,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A presented refresh token with its session and user.
#[derive(Debug, Clone)]
pub struct Presented {
    /// The session.
    pub session_id: Uuid,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Its user.
    pub user_id: UserId,
    /// When the token was used, if it was.
    pub used_at: Option<DateTime<Utc>>,
    /// Whether the token has expired.
    pub token_expired: bool,
    /// Whether the session is revoked or past its end.
    pub session_over: bool,
    /// When the session ends.
    pub session_expires_at: DateTime<Utc>,
    /// Whether the user and its organisation are active, and the session
    /// newer than the user's last password change or deactivation.
    pub user_ok: bool,
    /// The user's role.
    pub role: String,
    /// Whether the user's password is temporary.
    pub must_change_password: bool,
}

/// The refresh token whose hash is `token_hash`, locking its row.
#[tracing::instrument(skip_all)]
pub async fn presented(
    db: impl PgExecutor<'_>,
    token_hash: &[u8],
) -> Result<Option<Presented>, sqlx::Error> {
    sqlx::query_as!(
        Presented,
        r#"select s.id as session_id, s.tenant_id as "tenant_id: TenantId", s.user_id as "user_id: UserId", r.used_at,
            r.expires_at <= now() as "token_expired!",
            (s.revoked_at is not null or s.expires_at <= now()) as "session_over!",
            s.expires_at as session_expires_at,
            (u.status = 'active' and t.status = 'active'
              and s.created_at >= u.tokens_valid_after) as "user_ok!",
            u.role, u.must_change_password
         from refresh_tokens r
         join auth_sessions s on s.id = r.session_id
         join users u on u.id = s.user_id
         join tenants t on t.id = u.tenant_id
         where r.token_hash = $1
         for update of r"#,
        token_hash,
    )
    .fetch_optional(db)
    .await
}

/// Marks the token used; false when it already was.
#[tracing::instrument(skip_all)]
pub async fn mark_used(db: impl PgExecutor<'_>, token_hash: &[u8]) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update refresh_tokens set used_at = now() where token_hash = $1 and used_at is null",
        token_hash,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Records that the session was used now, from this client.
#[tracing::instrument(skip_all)]
pub async fn touch(
    db: impl PgExecutor<'_>,
    id: Uuid,
    ip: Option<&str>,
    user_agent: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update auth_sessions set last_used_at = now(), ip = coalesce($2, ip),
            user_agent = coalesce($3, user_agent)
         where id = $1",
        id,
        ip,
        user_agent,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Its user.
    pub user_id: UserId,
    /// Signed in.
    pub created_at: DateTime<Utc>,
    /// Last signed in or refreshed.
    pub last_used_at: DateTime<Utc>,
    /// When it ends at the latest.
    pub expires_at: DateTime<Utc>,
    /// The client address then.
    pub ip: Option<String>,
    /// The client's user agent then.
    pub user_agent: Option<String>,
}

/// The user's live sessions (not revoked, not expired), newest first.
#[tracing::instrument(skip_all)]
pub async fn live(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
) -> Result<Vec<Session>, sqlx::Error> {
    sqlx::query_as!(
        Session,
        r#"select id, tenant_id as "tenant_id: TenantId", user_id as "user_id: UserId", created_at, last_used_at,
             expires_at, ip, user_agent
         from auth_sessions
         where user_id = $1 and tenant_id = $2 and revoked_at is null and expires_at > now()
         order by created_at desc, id desc limit 1000"#,
        user.0,
        tenant.0,
    )
    .fetch_all(db)
    .await
}

/// Which of a user's live sessions [`revoke`] ends.
#[derive(Debug, Clone, Copy)]
pub enum Which {
    /// This one.
    One(Uuid),
    /// Every one.
    All,
    /// Every one but this.
    AllBut(Uuid),
}

/// Revokes live sessions of `user` in `tenant`; returns their ids.
#[tracing::instrument(skip_all)]
pub async fn revoke(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    user: UserId,
    which: Which,
    reason: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    let (only, except) = match which {
        Which::One(id) => (Some(id), None),
        Which::All => (None, None),
        Which::AllBut(id) => (None, Some(id)),
    };
    sqlx::query_scalar!(
        "update auth_sessions set revoked_at = now(), revoked_reason = $5
         where user_id = $1 and tenant_id = $2
           and ($3::uuid is null or id = $3) and ($4::uuid is null or id <> $4)
           and revoked_at is null and expires_at > now()
         returning id",
        user.0,
        tenant.0,
        only,
        except,
        reason,
    )
    .fetch_all(db)
    .await
}

/// Revokes session `id` whoever holds it (a reused refresh token's
/// family); whether it was live.
#[tracing::instrument(skip_all)]
pub async fn revoke_family(
    db: impl PgExecutor<'_>,
    id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update auth_sessions set revoked_at = now(), revoked_reason = $2
         where id = $1 and revoked_at is null",
        id,
        reason,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Whether session `id` of `user` is live.
#[tracing::instrument(skip_all)]
pub async fn is_live(db: impl PgExecutor<'_>, id: Uuid, user: UserId) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from auth_sessions where id = $1 and user_id = $2
            and revoked_at is null and expires_at > now()) as "live!""#,
        id,
        user.0,
    )
    .fetch_one(db)
    .await
}

//! Users who sign in with a password: platform and organisation staff. A
//! user's id is the `sub` of the tokens it is issued, and the external id of
//! its subscriber (so in-app notices reach it). Its sign-in address is where
//! its notices are emailed unless its subscriber stores another (see
//! [`subscribers::contacts`](crate::db::subscribers::contacts)).
//!
//! `tokens_valid_after` (whole seconds) moves forward on deactivation and on
//! every password change; tokens issued before it are refused.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::scope::Reach;
use crate::domain::{TenantId, UserId};

/// The unique index on `email_key` (the address lower-cased).
pub const EMAIL_CONSTRAINT: &str = "users_email_key";

/// A user, without its password hash.
#[derive(Debug, Clone)]
pub struct User {
    /// Its id.
    pub id: UserId,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// Sign-in address.
    pub email: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Role name.
    pub role: String,
    /// `active` or `inactive`.
    pub status: String,
    /// Whether the password is temporary.
    pub must_change_password: bool,
    /// Last sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A new user's fields.
#[derive(Debug, Clone)]
pub struct NewUser<'a> {
    /// Organisation.
    pub tenant_id: TenantId,
    /// Address.
    pub email: &'a str,
    /// Given name.
    pub first_name: Option<&'a str>,
    /// Family name.
    pub last_name: Option<&'a str>,
    /// Role.
    pub role: &'a str,
    /// argon2id PHC string.
    pub password_hash: Option<&'a str>,
    /// Temporary password.
    pub must_change_password: bool,
    /// Audit actor.
    pub created_by: &'a str,
}

/// Creates an active user.
#[tracing::instrument(skip_all)]
pub async fn insert(db: impl PgExecutor<'_>, u: NewUser<'_>) -> Result<User, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"insert into users (id, tenant_id, email, first_name, last_name, role, password_hash,
            must_change_password, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at"#,
        UserId::new().0,
        u.tenant_id.0,
        u.email,
        u.first_name,
        u.last_name,
        u.role,
        u.password_hash,
        u.must_change_password,
        u.created_by,
    )
    .fetch_one(db)
    .await
}

/// Reads a user within `reach` (any organisation's for platform admins).
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: UserId,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at
         from users where id = $1 and ($2::uuid is null or tenant_id = $2)"#,
        id.0,
        reach.param(),
    )
    .fetch_optional(db)
    .await
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Exact role.
    pub role: Option<&'a str>,
    /// Exact status.
    pub status: Option<&'a str>,
    /// After this id.
    pub after: Option<UserId>,
}

/// Users within `reach` in id (creation) order.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: Reach,
    f: Filter<'_>,
    limit: i64,
) -> Result<Vec<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"select id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at
         from users
         where ($1::uuid is null or tenant_id = $1) and ($2::text is null or role = $2)
           and ($3::text is null or status = $3) and ($4::uuid is null or id > $4)
         order by id limit $5"#,
        reach.param(),
        f.role,
        f.status,
        f.after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Changes names and role; `None` keeps a field.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: UserId,
    first_name: Option<&str>,
    last_name: Option<&str>,
    role: Option<&str>,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"update users set first_name = coalesce($3, first_name), last_name = coalesce($4, last_name),
            role = coalesce($5, role)
         where id = $1 and ($2::uuid is null or tenant_id = $2)
         returning id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at"#,
        id.0,
        reach.param(),
        first_name,
        last_name,
        role,
    )
    .fetch_optional(db)
    .await
}

/// Activates or deactivates a user. Either way its earlier tokens stop
/// working.
#[tracing::instrument(skip_all)]
pub async fn set_status(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: UserId,
    status: &str,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"update users set status = $3, tokens_valid_after = date_trunc('second', now())
         where id = $1 and ($2::uuid is null or tenant_id = $2)
         returning id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at"#,
        id.0,
        reach.param(),
        status,
    )
    .fetch_optional(db)
    .await
}

/// Stores a new password hash; earlier tokens stop working.
#[tracing::instrument(skip_all)]
pub async fn set_password(
    db: impl PgExecutor<'_>,
    reach: Reach,
    id: UserId,
    hash: &str,
    must_change: bool,
) -> Result<Option<User>, sqlx::Error> {
    sqlx::query_as!(
        User,
        r#"update users set password_hash = $3, must_change_password = $4,
            tokens_valid_after = date_trunc('second', now())
         where id = $1 and ($2::uuid is null or tenant_id = $2)
         returning id as "id: UserId", tenant_id as "tenant_id: TenantId", email, first_name, last_name, role, status,
             must_change_password, last_login_at, created_by, created_at, updated_at"#,
        id.0,
        reach.param(),
        hash,
        must_change,
    )
    .fetch_optional(db)
    .await
}

/// What sign-in needs.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// User id.
    pub id: UserId,
    /// Organisation.
    pub tenant_id: TenantId,
    /// Role.
    pub role: String,
    /// Status.
    pub status: String,
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    /// Temporary password.
    pub must_change_password: bool,
    /// The organisation's status.
    pub tenant_status: String,
}

/// The credentials of the user with `email` (case-insensitive).
#[tracing::instrument(skip_all)]
pub async fn credentials(
    db: impl PgExecutor<'_>,
    email: &str,
) -> Result<Option<Credentials>, sqlx::Error> {
    sqlx::query_as!(
        Credentials,
        r#"select u.id as "id: UserId", u.tenant_id as "tenant_id: TenantId", u.role, u.status, u.password_hash,
            u.must_change_password, t.status as tenant_status
         from users u join tenants t on t.id = u.tenant_id where u.email_key = lower($1)"#,
        email,
    )
    .fetch_optional(db)
    .await
}

/// Records a sign-in.
#[tracing::instrument(skip_all)]
pub async fn touch_login(db: impl PgExecutor<'_>, id: UserId) -> Result<(), sqlx::Error> {
    sqlx::query!("update users set last_login_at = now() where id = $1", id.0)
        .execute(db)
        .await?;
    Ok(())
}

/// What each request checks about a token's user.
#[derive(Debug, Clone)]
pub struct TokenState {
    /// Status.
    pub status: String,
    /// Temporary password.
    pub must_change_password: bool,
    /// Tokens issued before this are refused.
    pub tokens_valid_after: DateTime<Utc>,
    /// Whether the token's session (its `sid`) is live: not revoked, not
    /// expired, the user's own; `None` for a token without one.
    pub session_live: Option<bool>,
}

/// The token state of user `id` of `tenant`, if it is one of ours, with
/// whether its session `sid` is live (in the same query).
#[tracing::instrument(skip_all)]
pub async fn token_state(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
    id: UserId,
    sid: Option<Uuid>,
) -> Result<Option<TokenState>, sqlx::Error> {
    sqlx::query_as!(
        TokenState,
        "select u.status, u.must_change_password, u.tokens_valid_after,
            case when $3::uuid is null then null else exists(
                select 1 from auth_sessions s where s.id = $3 and s.user_id = u.id
                  and s.revoked_at is null and s.expires_at > now()) end as session_live
         from users u where u.id = $1 and u.tenant_id = $2",
        id.0,
        tenant.0,
        sid,
    )
    .fetch_optional(db)
    .await
}

/// The ids of the active admins of an organisation.
#[tracing::instrument(skip_all)]
pub async fn admins(db: impl PgExecutor<'_>, tenant: TenantId) -> Result<Vec<UserId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select id as "id: UserId" from users where tenant_id = $1 and role = 'ADMIN' and status = 'active'
         order by id"#,
        tenant.0,
    )
    .fetch_all(db)
    .await
}

/// Counts per role and status within `reach`: `(role, status, count)`.
#[tracing::instrument(skip_all)]
pub async fn stats(
    db: impl PgExecutor<'_>,
    reach: Reach,
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select role, status, count(*) as "count!" from users
         where ($1::uuid is null or tenant_id = $1)
         group by role, status order by role, status"#,
        reach.param(),
    )
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.role, r.status, r.count))
        .collect())
}

//! Authentication, both as `Authorization: Bearer …`:
//!
//! * [`ServiceKey`]: machine callers with a tenant API key
//!   (`/api/v1/services/*`).
//! * [`UserJwt`]: end users and admins with a JWT (`/api/v1/users/me/*`), see
//!   [`crate::identity`].
//!
//! * [`Admin`]: tenant administration (`/api/v1/admin/*`), with the tenant's
//!   API key or a JWT carrying the `ADMIN` role.
//!
//! Any failure gets 401 (403 for a valid JWT without the role); neither keys
//! nor tokens are ever logged. A key that worked is trusted for
//! `API_KEY_CACHE_SECS` (default 5) without asking Postgres again
//! ([`ApiKeyCache`]); wrong keys are never cached.

use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use shared::db::api_keys::{self, KeyOwner};

use crate::{AppState, error::ApiError, identity::Identity};

/// A caller authenticated by a tenant API key.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", checker = "check_api_key")]
pub struct ServiceKey(pub KeyOwner);

/// Longest token worth looking up; real keys are 44 characters.
const MAX_TOKEN_LEN: usize = 128;

async fn check_api_key(req: &Request, bearer: Bearer) -> poem::Result<KeyOwner> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
    let token = bearer.token;
    if token.len() > MAX_TOKEN_LEN || !token.starts_with(api_keys::KEY_PREFIX) {
        return Err(ApiError::Unauthorized.into());
    }
    match owner_of(&state.pool, &state.api_keys, &token).await {
        Ok(Some(owner)) => {
            tracing::Span::current().record("tenant_id", tracing::field::display(owner.tenant_id));
            Ok(owner)
        }
        Ok(None) => Err(ApiError::Unauthorized.into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

/// The owner of API key `token`: from `cache` while fresh, else from
/// Postgres. Only keys that work are cached, so wrong keys cannot fill the
/// cache, and they are looked up every time.
pub async fn owner_of(
    pool: &sqlx::PgPool,
    cache: &ApiKeyCache,
    token: &str,
) -> Result<Option<KeyOwner>, sqlx::Error> {
    let key_hash = api_keys::hash(token);
    if let Some(owner) = cache.get(&key_hash) {
        return Ok(Some(owner));
    }
    let owner = api_keys::authenticate_hash(pool, &key_hash).await?;
    if let Some(owner) = owner {
        cache.insert(key_hash, owner);
    }
    Ok(owner)
}

/// Most API keys kept by [`ApiKeyCache`]; past it the oldest are dropped.
pub const API_KEY_CACHE_CAPACITY: usize = 10_000;

/// Keys that authenticated recently, by their SHA-256 hash (never the key
/// itself), each trusted for `API_KEY_CACHE_SECS` after it was read from
/// Postgres: a key revoked or a tenant suspended stops working within that
/// bound on every instance.
pub type ApiKeyCache = shared::cache::TtlCache<Vec<u8>, KeyOwner>;

/// A caller authenticated by a bearer JWT.
#[derive(Debug, SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "JWT", checker = "check_jwt")]
pub struct UserJwt(pub Identity);

/// Longest token worth parsing.
const MAX_JWT_LEN: usize = 8 * 1024;

async fn check_jwt(req: &Request, bearer: Bearer) -> poem::Result<Identity> {
    let state = req
        .data::<AppState>()
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("state missing")))?;
    if bearer.token.len() > MAX_JWT_LEN {
        tracing::info!(reason = "oversized token", "token refused");
        return Err(ApiError::Unauthorized.into());
    }
    match state.verifier.verify(&bearer.token).await {
        Ok(identity) => {
            tracing::Span::current()
                .record("tenant_id", tracing::field::display(identity.tenant_id));
            let changing_password = req.method() == poem::http::Method::PATCH
                && req.uri().path() == format!("/api/v1/admin/users/{}/password", identity.subject);
            let signing_out = req.method() == poem::http::Method::POST
                && req.uri().path() == "/api/v1/auth/logout";
            if identity.password_change_only && !changing_password && !signing_out {
                return Err(ApiError::Forbidden(
                    "this token comes from a temporary password: change the password first",
                )
                .into());
            }
            Ok(identity)
        }
        Err(reason) => {
            tracing::info!(%reason, "token refused");
            Err(ApiError::Unauthorized.into())
        }
    }
}

/// A tenant administrator: the tenant's API key, or an end-user JWT whose
/// roles include `ADMIN`. Call [`Admin::caller`] to get the tenant and the
/// audit actor; it refuses a JWT without the role.
#[derive(Debug, SecurityScheme)]
pub enum Admin {
    /// A tenant API key.
    Key(ServiceKey),
    /// A user's JWT.
    User(UserJwt),
}

/// Who is administering which tenant.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    /// The tenant administered.
    pub tenant_id: shared::domain::TenantId,
    /// The audit actor: `api_key:<id>` or `user:<subject>`.
    pub actor: String,
}

impl AdminCaller {
    /// Records an administrative change to `resource_type` `id` in the audit
    /// log, through `db` (the change's own transaction where there is one).
    /// `details` must hold no secrets or message content.
    pub async fn audit(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        request_id: &crate::middleware::RequestId,
        action: &str,
        resource_type: &str,
        id: impl std::fmt::Display,
        details: serde_json::Value,
    ) -> Result<(), ApiError> {
        shared::db::audit::record(
            db,
            shared::db::audit::Entry {
                tenant_id: Some(self.tenant_id),
                actor: &self.actor,
                action,
                resource_type,
                resource_id: Some(id.to_string()),
                result: "success",
                request_id: Some(&request_id.0),
                details,
            },
        )
        .await?;
        Ok(())
    }
}

impl Admin {
    /// The caller, or 403 for a user without the `ADMIN` role.
    pub fn caller(&self) -> Result<AdminCaller, ApiError> {
        match self {
            Admin::Key(ServiceKey(owner)) => Ok(AdminCaller {
                tenant_id: owner.tenant_id,
                actor: format!("api_key:{}", owner.key_id),
            }),
            Admin::User(UserJwt(identity)) => {
                if identity
                    .roles
                    .iter()
                    .any(|r| r.eq_ignore_ascii_case("admin"))
                {
                    Ok(AdminCaller {
                        tenant_id: identity.tenant_id,
                        actor: format!("user:{}", identity.subject),
                    })
                } else {
                    Err(ApiError::Forbidden("the ADMIN role is required"))
                }
            }
        }
    }
}

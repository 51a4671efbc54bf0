//! Authentication, both as `Authorization: Bearer …`:
//!
//! * [`ServiceKey`]: machine callers with a tenant API key
//!   (`/api/v1/services/*`).
//! * [`UserJwt`]: end users and admins with a JWT (`/api/v1/users/me/*`), see
//!   [`crate::identity`].
//!
//! * [`Admin`]: tenant administration (`/api/v1/admin/*`), with the tenant's
//!   API key or a user's JWT.
//!
//! Once the caller is known, the permission its operation declares is
//! checked here, before any handler runs: an API key's scopes, a user's
//! effective permissions ([`crate::permissions`]). Any failure gets 401
//! (403 for a caller without the permission); neither keys nor tokens are
//! ever logged. A key that worked is trusted for
//! `API_KEY_CACHE_SECS` (default 5) without asking Postgres again
//! ([`ApiKeyCache`]); wrong keys are never cached.
//!
//! A key with a network allowlist works only from client addresses
//! ([`crate::client::address`]) inside it; from elsewhere it gets 403 and
//! counts as no key at all. The cache carries the allowlist, so the check
//! costs no query (and a changed allowlist applies within the same bound).
//!
//! A request starts seeing no organisation's rows
//! ([`shared::db::scope::request`]). Once a caller is known, the rest of its
//! request runs walled to its organisation's rows ([`wall_to`], row-level
//! security). The lookups that find the caller run before: the API-key
//! lookup in platform scope (`api_key_lookup`: the key names no
//! organisation until it is found), the token checks in the organisation
//! the token names. Administrators of the platform organisation (its API
//! keys, its users with `ADMIN`) administer every organisation: their
//! requests are opened to platform scope (`platform_admin`).

use std::{
    net::IpAddr,
    sync::{Arc, OnceLock},
    time::Duration,
};

use ipnet::IpNet;
use poem::Request;
use poem_openapi::{SecurityScheme, auth::Bearer};
use shared::{
    db::{
        api_keys::{self, KeyOwner},
        security_events,
    },
    domain::{ApiKeyId, TenantId},
    permissions::Permission,
};

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
    key_owner(req, state, &token).await
}

/// The owner of API key `token` presented with `req`, or why not.
async fn key_owner(req: &Request, state: &AppState, token: &str) -> poem::Result<KeyOwner> {
    let client = crate::client::address(req);
    match check_key(&state.pool, &state.api_keys, token, client).await {
        Ok(KeyCheck::Allowed(owner)) => {
            tracing::Span::current().record("tenant_id", tracing::field::display(owner.tenant_id));
            let scopes = match entry_of(&state.pool, &state.api_keys, token).await {
                Ok(entry) => entry.and_then(|e| e.scopes),
                Err(e) => return Err(ApiError::from(e).into()),
            };
            let path = req.uri().path();
            match crate::permissions::key_may(scopes.as_deref(), req.method().as_str(), path) {
                Ok(()) => {
                    wall_to(state, owner.tenant_id, true).await?;
                    Ok(owner)
                }
                Err(detail) => Err(ApiError::Forbidden(detail).into()),
            }
        }
        Ok(KeyCheck::Refused(owner)) => {
            tracing::info!(tenant_id = %owner.tenant_id, key_id = %owner.key_id, "API key refused outside its allowlist");
            if refusal_gate().get(&owner.key_id).is_none() {
                refusal_gate().insert(owner.key_id, ());
                let user_agent = req
                    .headers()
                    .get(poem::http::header::USER_AGENT)
                    .and_then(|v| v.to_str().ok());
                let event = security_events::Event::new(
                    Some(owner.tenant_id),
                    security_events::API_KEY_ADDRESS_REFUSED,
                    None,
                    client.map(|c| c.to_string()).as_deref(),
                    user_agent,
                )
                .details(serde_json::json!({ "api_key_id": owner.key_id.to_string() }));
                let recorded = shared::db::scope::tenant(
                    owner.tenant_id,
                    security_events::record(&state.pool, &[event]),
                )
                .await;
                if let Err(e) = recorded {
                    tracing::warn!(error = %e, "security event not recorded");
                }
            }
            Err(ApiError::Forbidden("this API key may not be used from this address").into())
        }
        Ok(KeyCheck::Unknown) => Err(ApiError::Unauthorized.into()),
        Err(e) => Err(ApiError::from(e).into()),
    }
}

/// Walls the rest of the request to `tenant`'s rows
/// ([`shared::db::scope::narrow`]), unless the caller is an administrator
/// (`admin`) of the platform organisation, which administers every
/// organisation: its request is opened to platform scope
/// ([`shared::db::scope::elevate`], reason `platform_admin`). Whether an
/// organisation is the platform is kept for [`PLATFORM_KIND_SECS`].
pub async fn wall_to(state: &AppState, tenant: TenantId, admin: bool) -> Result<(), ApiError> {
    if admin && is_platform(state, tenant).await? {
        if shared::db::scope::elevate("platform_admin") {
            return Ok(());
        }
        // Outside a request's scope, or a request already walled to one
        // organisation: refuse rather than widen.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "the request could not be opened to the platform"
        )));
    }
    if !shared::db::scope::narrow(tenant) {
        // Only reachable outside a request's scope (no database work of
        // the request can then be walled) or with a second caller of
        // another organisation in one request: refuse rather than guess.
        if shared::db::scope::current() != Some(shared::db::scope::Scope::Tenant(tenant)) {
            return Err(ApiError::Internal(anyhow::anyhow!(
                "the request could not be walled to its organisation"
            )));
        }
    }
    Ok(())
}

/// How long whether an organisation is the platform is trusted without
/// asking Postgres again.
pub const PLATFORM_KIND_SECS: u64 = 5;

async fn is_platform(state: &AppState, tenant: TenantId) -> Result<bool, sqlx::Error> {
    static KINDS: OnceLock<shared::cache::TtlCache<TenantId, bool>> = OnceLock::new();
    let kinds = KINDS.get_or_init(|| {
        shared::cache::TtlCache::new(Duration::from_secs(PLATFORM_KIND_SECS), 10_000)
    });
    if let Some(platform) = kinds.get(&tenant) {
        return Ok(platform);
    }
    let read = shared::db::organizations::get(&state.pool, tenant);
    let platform = shared::db::scope::tenant(tenant, read)
        .await?
        .is_some_and(|o| o.kind == "platform");
    kinds.insert(tenant, platform);
    Ok(platform)
}

/// Keys whose refusal was recorded as a security event in the last minute:
/// at most one `api_key.address_refused` event per key per minute on each
/// instance, however many requests are refused.
fn refusal_gate() -> &'static shared::cache::TtlCache<ApiKeyId, ()> {
    static GATE: OnceLock<shared::cache::TtlCache<ApiKeyId, ()>> = OnceLock::new();
    GATE.get_or_init(|| shared::cache::TtlCache::new(Duration::from_secs(60), 10_000))
}

/// What an API key is worth from a client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyCheck {
    /// No such active key.
    Unknown,
    /// A working key, presented from an address its allowlist admits.
    Allowed(KeyOwner),
    /// A working key presented from outside its allowlist: not to be
    /// trusted for anything.
    Refused(KeyOwner),
}

/// [`KeyCheck`] of API key `token` presented from `client`, through the
/// same cache as [`owner_of`].
pub async fn check_key(
    pool: &sqlx::PgPool,
    cache: &ApiKeyCache,
    token: &str,
    client: Option<IpAddr>,
) -> Result<KeyCheck, sqlx::Error> {
    Ok(match entry_of(pool, cache, token).await? {
        None => KeyCheck::Unknown,
        Some(entry) if api_keys::admits(&entry.networks, client) => KeyCheck::Allowed(entry.owner),
        Some(entry) => KeyCheck::Refused(entry.owner),
    })
}

/// The owner of API key `token`, whatever its allowlist (use
/// [`check_key`] to authenticate a request): from `cache` while fresh, else
/// from Postgres. Only keys that work are cached, so wrong keys cannot fill
/// the cache, and they are looked up every time.
pub async fn owner_of(
    pool: &sqlx::PgPool,
    cache: &ApiKeyCache,
    token: &str,
) -> Result<Option<KeyOwner>, sqlx::Error> {
    Ok(entry_of(pool, cache, token).await?.map(|e| e.owner))
}

async fn entry_of(
    pool: &sqlx::PgPool,
    cache: &ApiKeyCache,
    token: &str,
) -> Result<Option<CachedKey>, sqlx::Error> {
    let key_hash = api_keys::hash(token);
    if let Some(entry) = cache.get(&key_hash) {
        return Ok(Some(entry));
    }
    // The key names no organisation until it is found.
    let entry =
        shared::db::scope::platform("api_key_lookup", api_keys::lookup_hash(pool, &key_hash))
            .await?
            .map(|(owner, networks, scopes)| CachedKey {
                owner,
                networks: networks.into(),
                scopes: scopes.map(Into::into),
            });
    if let Some(entry) = &entry {
        cache.insert(key_hash, entry.clone());
    }
    Ok(entry)
}

/// A working key as [`ApiKeyCache`] holds it.
#[derive(Debug, Clone)]
pub struct CachedKey {
    /// Whose key.
    pub owner: KeyOwner,
    /// The networks it may be used from (empty: any).
    pub networks: Arc<[IpNet]>,
    /// What it may do (`None`: every permission).
    pub scopes: Option<Arc<[Permission]>>,
}

/// Most API keys kept by [`ApiKeyCache`]; past it the oldest are dropped.
pub const API_KEY_CACHE_CAPACITY: usize = 10_000;

/// Keys that authenticated recently, by their SHA-256 hash (never the key
/// itself), with their allowlists, each trusted for `API_KEY_CACHE_SECS`
/// after it was read from Postgres: a key revoked, a tenant suspended or an
/// allowlist changed takes effect within that bound on every instance.
pub type ApiKeyCache = shared::cache::TtlCache<Vec<u8>, CachedKey>;

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
    if bearer.token.starts_with(api_keys::KEY_PREFIX) && bearer.token.len() <= MAX_TOKEN_LEN {
        // An API key is never a JWT; but where either is accepted
        // ([`Admin`]) the answer is the key's: 403 from outside its
        // allowlist, else 401.
        key_owner(req, state, &bearer.token).await?;
        return Err(ApiError::Unauthorized.into());
    }
    if bearer.token.len() > MAX_JWT_LEN {
        tracing::info!(reason = "oversized token", "token refused");
        return Err(ApiError::Unauthorized.into());
    }
    match state.verifier.verify(&bearer.token).await {
        Ok(mut identity) => {
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
            let admin = identity
                .roles
                .iter()
                .any(|r| r.eq_ignore_ascii_case("admin"));
            wall_to(state, identity.tenant_id, admin).await?;
            crate::permissions::authorize_user(state, req, &mut identity).await?;
            Ok(identity)
        }
        Err(reason) => {
            tracing::info!(%reason, "token refused");
            Err(ApiError::Unauthorized.into())
        }
    }
}

/// A tenant administrator: the tenant's API key, or a user's JWT, either
/// holding the permission the operation declares (checked when it was
/// authenticated). Call [`Admin::caller`] to get the tenant and the audit
/// actor.
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
    /// The caller. Whatever permission the operation declares was checked
    /// when the caller was authenticated ([`crate::permissions`]): a
    /// user's effective permissions, an API key's scopes.
    pub fn caller(&self) -> AdminCaller {
        match self {
            Admin::Key(ServiceKey(owner)) => AdminCaller {
                tenant_id: owner.tenant_id,
                actor: format!("api_key:{}", owner.key_id),
            },
            Admin::User(UserJwt(identity)) => AdminCaller {
                tenant_id: identity.tenant_id,
                actor: format!("user:{}", identity.subject),
            },
        }
    }
}

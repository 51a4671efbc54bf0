//! Who may administer what, for the organisation, user, invitation and audit
//! routes.
//!
//! A caller is an [`Admin`] (a tenant API key or a JWT). The platform
//! organisation (`tenants.type = 'platform'`) is special: its admins (and its
//! API keys) administer every organisation. Anyone else acts inside their own
//! organisation only; another organisation's resources answer 404, as if
//! they did not exist. A tenant API key acts as that organisation's admin.
//!
//! Refusals (403, 404, 409, 410) of audited actions are written to the audit
//! log as `failure` rows by [`Principal::refused`].

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use serde_json::{Value, json};
use shared::{
    db::{audit, organizations},
    domain::TenantId,
    roles::Role,
};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Admin, AdminCaller, ServiceKey, UserJwt},
    error::ApiError,
    middleware::RequestId,
};

/// An authenticated caller of the administration routes.
#[derive(Debug, Clone)]
pub struct Principal {
    /// Tenant and audit actor.
    pub caller: AdminCaller,
    /// Whether it administers every organisation.
    pub platform: bool,
    /// Its role (an API key acts as `ADMIN`).
    pub role: Option<Role>,
    /// The platform user, when it is one.
    pub user_id: Option<Uuid>,
}

impl Principal {
    /// Resolves the caller.
    pub async fn resolve(state: &AppState, auth: &Admin) -> Result<Self, ApiError> {
        let (caller, role, user_id) = match auth {
            Admin::Key(ServiceKey(owner)) => (
                AdminCaller {
                    tenant_id: owner.tenant_id,
                    actor: format!("api_key:{}", owner.key_id),
                },
                Some(Role::Admin),
                None,
            ),
            Admin::User(UserJwt(identity)) => {
                let roles: Vec<Role> = identity
                    .roles
                    .iter()
                    .filter_map(|r| Role::parse(r))
                    .collect();
                let role = if roles.contains(&Role::Admin) {
                    Some(Role::Admin)
                } else {
                    roles.first().copied()
                };
                (
                    AdminCaller {
                        tenant_id: identity.tenant_id,
                        actor: format!("user:{}", identity.subject),
                    },
                    role,
                    Uuid::parse_str(&identity.subject).ok(),
                )
            }
        };
        let platform = role == Some(Role::Admin)
            && organizations::get(&state.pool, caller.tenant_id)
                .await?
                .is_some_and(|o| o.kind == "platform");
        Ok(Self {
            caller,
            platform,
            role,
            user_id,
        })
    }

    /// Whether it is an admin (of its organisation, or of the platform).
    pub fn is_admin(&self) -> bool {
        self.role == Some(Role::Admin)
    }

    /// 403 unless it is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::Forbidden("the ADMIN role is required"))
        }
    }

    /// 403 unless it is a platform admin.
    pub fn require_platform(&self) -> Result<(), ApiError> {
        if self.platform {
            Ok(())
        } else {
            Err(ApiError::Forbidden("a platform administrator is required"))
        }
    }

    /// The organisation it is confined to (`None`: every organisation).
    pub fn scope(&self) -> Option<TenantId> {
        (!self.platform).then_some(self.caller.tenant_id)
    }

    /// The organisation a create acts in: `requested` for a platform admin,
    /// its own otherwise (naming another one answers 404).
    pub fn target_tenant(&self, requested: Option<&str>) -> Result<TenantId, ApiError> {
        match requested {
            None => Ok(self.caller.tenant_id),
            Some(raw) => {
                let id: TenantId = raw
                    .parse()
                    .map_err(|_| ApiError::NotFound("organization"))?;
                if self.platform || id == self.caller.tenant_id {
                    Ok(id)
                } else {
                    Err(ApiError::NotFound("organization"))
                }
            }
        }
    }

    /// Records a successful action in `tenant` (the caller's own when `None`).
    #[expect(clippy::too_many_arguments)]
    pub async fn audit(
        &self,
        db: impl sqlx::PgExecutor<'_>,
        request_id: &RequestId,
        tenant: Option<TenantId>,
        action: &str,
        resource_type: &str,
        id: impl std::fmt::Display,
        details: Value,
    ) -> Result<(), ApiError> {
        audit::record(
            db,
            audit::Entry {
                tenant_id: Some(tenant.unwrap_or(self.caller.tenant_id)),
                actor: &self.caller.actor,
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

    /// Passes `result` through, recording a refusal (403, 404, 409, 410) of
    /// `action` as a `failure` row first. Invalid input (400) is not an
    /// action and is not recorded.
    pub async fn refused<T>(
        &self,
        state: &AppState,
        request_id: &RequestId,
        action: &str,
        resource_type: &str,
        id: Option<&str>,
        result: Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        if let Err(e) = &result {
            let status = match e {
                ApiError::Forbidden(_) => 403,
                ApiError::NotFound(_) => 404,
                ApiError::Conflict(_) => 409,
                ApiError::Gone(_) => 410,
                _ => return result,
            };
            let recorded = audit::record(
                &state.pool,
                audit::Entry {
                    tenant_id: Some(self.caller.tenant_id),
                    actor: &self.caller.actor,
                    action,
                    resource_type,
                    resource_id: id.map(|s| s.chars().take(64).collect()),
                    result: "failure",
                    request_id: Some(&request_id.0),
                    details: json!({"status": status, "reason": e.to_string()}),
                },
            )
            .await;
            if let Err(error) = recorded {
                tracing::error!(%error, "cannot record a refused action");
            }
        }
        result
    }
}

/// Shortest password accepted.
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (argon2 input stays bounded).
pub const MAX_PASSWORD: usize = 128;

/// The password policy: 12 to 128 characters with a lower-case letter, an
/// upper-case letter and a digit, not all the same character.
pub fn check_password(field: &str, password: &str) -> Result<(), ApiError> {
    let len = password.chars().count();
    let reason = if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&len) {
        Some(format!(
            "must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"
        ))
    } else if !password.chars().any(|c| c.is_lowercase())
        || !password.chars().any(|c| c.is_uppercase())
        || !password.chars().any(|c| c.is_ascii_digit())
    {
        Some("must contain a lower-case letter, an upper-case letter and a digit".to_owned())
    } else {
        None
    };
    match reason {
        Some(r) => Err(ApiError::invalid(field, r)),
        None => Ok(()),
    }
}

/// Hashes a password with argon2id (the crate's default parameters), on a
/// blocking thread.
pub async fn hash_password(password: String) -> Result<String, ApiError> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("while hashing a password: {e}"))
    })
    .await
    .map_err(|e| anyhow::anyhow!("the hashing thread failed: {e}"))?
    .map_err(ApiError::Internal)
}

/// A hash of a password nobody has, so an unknown address costs the same
/// time as a wrong password.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    Argon2::default()
        .hash_password(b"no such user", &SaltString::generate(&mut OsRng))
        .map(|h| h.to_string())
        .unwrap_or_default()
});

/// Whether `password` matches `hash` (the dummy hash when `None`).
pub async fn verify_password(password: String, hash: Option<String>) -> bool {
    tokio::task::spawn_blocking(move || {
        let stored = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        PasswordHash::new(&stored).ok().is_some_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await
    .unwrap_or(false)
}

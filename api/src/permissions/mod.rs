//! Permission checks at the edge: what each operation requires
//! ([`routes::ROUTES`]) and the one place that enforces it, when the
//! caller is authenticated and before any handler runs:
//!
//! * an API key against its scopes ([`key_may`]);
//! * a user against its effective permissions (its set, grants and
//!   delegations in force, [`authorize_user`]), read at most
//!   [`cache::PERMISSIONS_CACHE_SECS`] ago ([`effective`]).
//!
//! An operation declared [`Access::Require`] is refused with 403 naming
//! the permission, and the refusal of a user is written to the audit log
//! ([`DENIED_ACTION`]). [`Access::Own`] operations are left to their
//! handlers, which know whose resource it is
//! ([`crate::access::Principal::require`]); tenant, platform and role
//! hierarchy checks stay in the handlers too.

pub mod cache;
pub mod routes;

use std::sync::Arc;

use poem::Request;
use serde_json::json;
use shared::{
    db::{audit, permissions as perms},
    permissions::Permission,
};

use crate::{AppState, error::ApiError, identity::Identity, middleware::RequestId};

/// The audit action of a user refused an operation for lack of its
/// permission (`resource_type` `operation`, the operation as its id).
pub const DENIED_ACTION: &str = "permission.denied";

/// What an operation requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No credentials (health, provider callbacks, sign-in, invitation
    /// tokens).
    Public,
    /// The signed-in user acting on itself (`/users/me`, sign-out,
    /// delegating its own permissions); an API key never may.
    Me,
    /// A user acting on its own resource, or anyone holding the permission
    /// (an API key needs it in its scopes).
    Own(Permission),
    /// The permission.
    Require(Permission),
}

impl Access {
    /// The permission it names, if any.
    pub fn permission(self) -> Option<Permission> {
        match self {
            Access::Own(p) | Access::Require(p) => Some(p),
            Access::Public | Access::Me => None,
        }
    }
}

/// The declared access of the operation `method` `path` answers (a
/// concrete path: `{x}` segments match any one segment, literal segments
/// win over parameters), or `None` when no operation is declared for it.
pub fn access_of(method: &str, path: &str) -> Option<Access> {
    declared(method, path).map(|(_, a)| a)
}

/// [`access_of`] with the path template it matched.
pub fn declared(method: &str, path: &str) -> Option<(&'static str, Access)> {
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut best: Option<(usize, &'static str, Access)> = None;
    for (m, template, access) in routes::ROUTES {
        if !m.eq_ignore_ascii_case(method) {
            continue;
        }
        let parts: Vec<&str> = template.trim_end_matches('/').split('/').collect();
        if parts.len() != segments.len() {
            continue;
        }
        let mut literal = 0;
        let matches = parts.iter().zip(&segments).all(|(t, s)| {
            if t.starts_with('{') && t.ends_with('}') {
                !s.is_empty()
            } else if t == s {
                literal += 1;
                true
            } else {
                false
            }
        });
        if matches && best.is_none_or(|(l, _, _)| literal > l) {
            best = Some((literal, template, *access));
        }
    }
    best.map(|(_, t, a)| (t, a))
}

/// The effective permissions of `user` of `tenant` with `roles` at
/// [`AppState::permissions_clock`]'s now: from this replica's cache
/// ([`cache::PermissionCache`]) when read less than
/// [`cache::PERMISSIONS_CACHE_SECS`] ago and not changed through this
/// replica since, else from Postgres.
pub async fn effective(
    state: &AppState,
    tenant: shared::domain::TenantId,
    user: Option<shared::domain::UserId>,
    roles: &[String],
) -> Result<Arc<perms::Effective>, sqlx::Error> {
    let now = state.permissions_clock.now();
    match state.permission_cache.get(tenant, user, roles, now) {
        Ok(held) => Ok(held),
        Err(pending) => {
            let held = Arc::new(perms::effective(&state.pool, tenant, user, roles, now).await?);
            state.permission_cache.store(pending, held.clone());
            Ok(held)
        }
    }
}

/// The user check: when the operation `req` names is declared
/// [`Access::Require`], reads `identity`'s effective permissions
/// ([`effective`]) and refuses with 403 naming the
/// permission unless they hold it, recording the refusal as a
/// [`DENIED_ACTION`] `failure` row. The permissions it computed are kept
/// on the identity for the handler. Other operations pass untouched.
pub async fn authorize_user(
    state: &AppState,
    req: &Request,
    identity: &mut Identity,
) -> Result<(), ApiError> {
    let Some((template, Access::Require(permission))) =
        declared(req.method().as_str(), req.uri().path())
    else {
        return Ok(());
    };
    let user = identity.subject.parse().ok();
    let held = effective(state, identity.tenant_id, user, &identity.roles).await?;
    if held.contains_key(&permission) {
        identity.permissions = Some(held);
        return Ok(());
    }
    let actor = format!("user:{}", identity.subject);
    let operation = format!("{} {template}", req.method());
    let recorded = audit::record(
        &state.pool,
        audit::Entry {
            tenant_id: Some(identity.tenant_id),
            actor: &actor,
            action: DENIED_ACTION,
            resource_type: "operation",
            resource_id: Some(operation.chars().take(64).collect()),
            result: "failure",
            request_id: req.data::<RequestId>().map(|r| r.0.as_str()),
            details: json!({"status": 403, "permission": permission.as_str(),
                "operation": operation}),
        },
    )
    .await;
    if let Err(error) = recorded {
        tracing::error!(%error, "cannot record a refused operation");
    }
    Err(ApiError::Forbidden(permission.required()))
}

/// Whether an API key with `scopes` (`None`: every permission) may call
/// `method` `path`. Undeclared operations and user-only ones are refused
/// to scoped keys; an unscoped key may do what keys always could. The
/// error is the 403 detail.
pub fn key_may(
    scopes: Option<&[Permission]>,
    method: &str,
    path: &str,
) -> Result<(), &'static str> {
    let Some(scopes) = scopes else {
        return Ok(());
    };
    match access_of(method, path).and_then(Access::permission) {
        Some(p) if scopes.contains(&p) => Ok(()),
        Some(p) => Err(p.required()),
        None => Err("this API key's scopes do not reach this operation"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_segments_win_over_parameters() {
        assert_eq!(
            access_of("GET", "/api/v1/admin/users/stats"),
            Some(Access::Require(Permission::UsersRead))
        );
        assert_eq!(
            access_of("PATCH", "/api/v1/admin/users/0190/password"),
            Some(Access::Own(Permission::UsersManage))
        );
        assert_eq!(
            access_of("post", "/api/v1/services/notifications/send"),
            Some(Access::Require(Permission::NotificationsSend))
        );
        assert_eq!(access_of("GET", "/api/v1/nothing"), None);
        assert_eq!(
            declared("DELETE", "/api/v1/users/0190/permissions/audit:read"),
            Some((
                "/api/v1/users/{id}/permissions/{permission}",
                Access::Require(Permission::PermissionsManage)
            ))
        );
        assert_eq!(
            declared("GET", "/api/v1/permissions/delegations/"),
            Some((
                "/api/v1/permissions/delegations",
                Access::Own(Permission::PermissionsRead)
            ))
        );
    }

    #[test]
    fn a_scoped_key_reaches_only_its_scopes() {
        let send = [Permission::NotificationsSend];
        assert!(key_may(Some(&send), "POST", "/api/v1/services/notifications/send").is_ok());
        assert_eq!(
            key_may(Some(&send), "GET", "/api/v1/admin/templates"),
            Err(Permission::TemplatesRead.required())
        );
        assert!(key_may(None, "GET", "/api/v1/admin/templates").is_ok());
    }
}

//! Permission sets, users' sets and single grants, effective permissions,
//! the check endpoint and statistics (`/api/v1/permissions/*`,
//! `/api/v1/users/{id}/permission…`). Delegations are in [`delegations`].
//!
//! Reading needs `permissions:read` (a user may read its own permissions
//! and check itself); every change needs `permissions:manage`, both
//! checked when the caller is authenticated ([`crate::permissions`]).
//! Every change is written to the audit log and recorded as a
//! `permission.changed` security event; refusals (403, 404, 409) of
//! changes are audited as `failure` rows. Another organisation's user or
//! set answers 404.

pub mod delegations;
mod input;
mod views;

use crate::access::Act;
use crate::extract::{Cursor, PageSize, PathId, page};
use std::collections::BTreeMap;

use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::json;
use shared::{
    db::{permissions as db, users},
    domain::{PermissionSetId, TenantId, UserId},
    permissions::Permission,
};

use crate::{AppState, body::StrictJson, error::ApiError, extract::AdminCtx, routes::ApiTags};

pub use crate::services::permissions::{MAX_PERMISSIONS, parse_permissions};
use crate::services::permissions::{changed, member};
use input::set_fields;
pub use input::{MAX_INCLUDES, find_cycle};
pub use views::*;

/// The permission endpoints.
#[derive(Debug)]
pub struct PermissionsApi;

#[OpenApi(prefix_path = "/api/v1", tag = "ApiTags::Admin")]
impl PermissionsApi {
    /// List the permission sets the organisation sees: the built-in ones
    /// (Member, Viewer, Developer, Admin, Owner) and its own, in id order.
    #[oai(
        path = "/permissions/sets",
        method = "get",
        operation_id = "permissions.sets.list"
    )]
    async fn list_sets(
        &self,
        cx: AdminCtx<'_>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<PermissionSetId>>>,
        /// Sets per page.
        limit: Query<PageSize>,
    ) -> Result<SetPageResponse, ApiError> {
        let p = cx.principal().await?;
        let after = cursor.0.map(Cursor::get).transpose()?;
        let rows =
            db::list_sets(&cx.state.pool, p.caller.tenant_id, after, limit.0.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit.0, |r| r.id);
        let keys = keys_of(cx.state, p.caller.tenant_id).await?;
        Ok(SetPageResponse::Ok(Json(SetPage {
            items: rows.into_iter().map(|s| set_view(s, &keys, None)).collect(),
            next_cursor,
        })))
    }

    /// Create a custom permission set: `key`, `name`, `permissions`
    /// (`resource:action` names) and `includes` (keys of sets whose
    /// permissions it also holds).
    #[oai(
        path = "/permissions/sets",
        method = "post",
        operation_id = "permissions.sets.create"
    )]
    async fn create_set(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<SetBody>,
    ) -> Result<SetResponse, ApiError> {
        let p = cx.principal().await?;
        let tenant = p.caller.tenant_id;
        let fields = set_fields(cx.state, tenant, None, &body.0).await?;
        let mut tx = cx.state.pool.begin().await?;
        let id = db::create_set(&mut tx, tenant, &fields, &p.caller.actor).await?;
        changed(&mut tx, &p, cx.request_id, Act { action: "permission_set.create", resource_type: "permission_set" }, id, None, json!({"key": fields.key, "permissions": fields.permissions, "includes": body.0.includes})).await?;
        tx.commit().await?;
        let set = read_set(cx.state, tenant, id).await?;
        Ok(SetResponse::Created(
            Json(set),
            format!("/api/v1/permissions/sets/{id}"),
        ))
    }

    /// A permission set, with every permission it holds through what it
    /// includes.
    #[oai(
        path = "/permissions/sets/:id",
        method = "get",
        operation_id = "permissions.sets.get"
    )]
    async fn get_set(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<PermissionSetId>>,
    ) -> Result<SetResponse, ApiError> {
        let p = cx.principal().await?;
        let id = id.0.get("permission set")?;
        Ok(SetResponse::Ok(Json(
            read_set(cx.state, p.caller.tenant_id, id).await?,
        )))
    }

    /// Replace a custom permission set (built-in sets cannot change: 404).
    /// An `includes` that would make a cycle is refused, naming it.
    #[oai(
        path = "/permissions/sets/:id",
        method = "put",
        operation_id = "permissions.sets.update"
    )]
    async fn update_set(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<PermissionSetId>>,
        body: StrictJson<SetBody>,
    ) -> Result<SetResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission_set.update", "permission_set");
        let tenant = p.caller.tenant_id;
        let found = match id.0.get("permission set") {
            Ok(sid) => match db::get_set(&cx.state.pool, tenant, sid).await? {
                Some(s) if s.tenant_id == Some(tenant) => Ok(sid),
                _ => Err(ApiError::NotFound("permission set")),
            },
            Err(e) => Err(e),
        };
        let sid = act.refused(Some(id.0.raw()), found).await?;
        let fields = set_fields(cx.state, tenant, Some(sid), &body.0).await?;
        let mut tx = cx.state.pool.begin().await?;
        if !db::update_set(&mut tx, tenant, sid, &fields).await? {
            return Err(ApiError::NotFound("permission set"));
        }
        changed(&mut tx, &p, cx.request_id, Act { action: "permission_set.update", resource_type: "permission_set" }, sid, None, json!({"key": fields.key, "permissions": fields.permissions, "includes": body.0.includes})).await?;
        tx.commit().await?;
        Ok(SetResponse::Ok(Json(
            read_set(cx.state, tenant, sid).await?,
        )))
    }

    /// Delete a custom permission set. Built-in sets and other
    /// organisations' sets answer 404; a set assigned to a user or
    /// included by another set is kept and answers 409 naming why
    /// (reassign the users or change the including sets first).
    #[oai(
        path = "/permissions/sets/:id",
        method = "delete",
        operation_id = "permissions.sets.delete"
    )]
    async fn delete_set(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<PermissionSetId>>,
    ) -> Result<RemovedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission_set.delete", "permission_set");
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let outcome = match id.0.get("permission set") {
            Ok(sid) => match db::delete_set(&mut tx, tenant, sid).await? {
                db::SetDeletion::Deleted => Ok(sid),
                db::SetDeletion::NotFound => Err(ApiError::NotFound("permission set")),
                db::SetDeletion::Assigned(n) => Err(ApiError::Conflict(format!(
                    "the permission set is assigned to {n} user(s); assign them another set first"
                ))),
                db::SetDeletion::Included(by) => Err(ApiError::Conflict(format!(
                    "the permission set is included by {}; remove it from them first",
                    by.join(", ")
                ))),
            },
            Err(e) => Err(e),
        };
        let sid = match outcome {
            Ok(sid) => sid,
            Err(e) => {
                drop(tx);
                return act.refused(Some(id.0.raw()), Err(e)).await;
            }
        };
        changed(
            &mut tx,
            &p,
            cx.request_id,
            Act {
                action: "permission_set.delete",
                resource_type: "permission_set",
            },
            sid,
            None,
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(RemovedResponse::NoContent)
    }

    /// How many users hold each set (assigned, or through their role), and
    /// the organisation's custom sets, grants and delegations.
    #[oai(
        path = "/permissions/statistics",
        method = "get",
        operation_id = "permissions.statistics"
    )]
    async fn statistics(&self, cx: AdminCtx<'_>) -> Result<StatsResponse, ApiError> {
        let p = cx.principal().await?;
        let s = db::statistics(
            &cx.state.pool,
            p.caller.tenant_id,
            cx.state.permissions_clock.now(),
        )
        .await?;
        Ok(StatsResponse::Ok(Json(PermissionStatistics {
            sets: s
                .sets
                .into_iter()
                .map(|c| SetUsage {
                    set_id: c.set_id.to_string(),
                    key: c.key,
                    assigned: c.assigned,
                    by_role: c.by_role,
                })
                .collect(),
            custom_sets: s.custom_sets,
            grants: s.grants,
            active_delegations: s.active_delegations,
            revoked_delegations: s.revoked_delegations,
        })))
    }

    /// Whether a user (the caller when `user_id` is absent) holds a
    /// permission now, and why. Checking another user needs
    /// `permissions:read`.
    #[oai(
        path = "/permissions/check",
        method = "post",
        operation_id = "permissions.check"
    )]
    async fn check(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CheckBody>,
    ) -> Result<CheckResponse, ApiError> {
        let p = cx.principal().await?;
        let permission = parse_permissions("permission", std::slice::from_ref(&body.0.permission))
            .map_err(|_| {
                ApiError::invalid(
                    "permission",
                    format!(
                        "unknown permission {:?}",
                        body.0.permission.chars().take(64).collect::<String>()
                    ),
                )
            })?[0];
        let held = match body.0.user_id.as_deref() {
            None => {
                let Some(held) = p.permissions.clone() else {
                    return Err(ApiError::invalid("user_id", "is required with an API key"));
                };
                held
            }
            Some(raw) => {
                if p.user_id.map(|u| u.to_string()).as_deref() != Some(raw) {
                    p.require(Permission::PermissionsRead)?;
                }
                let u = member(cx.state, p.caller.tenant_id, raw).await?;
                db::effective(
                    &cx.state.pool,
                    p.caller.tenant_id,
                    Some(u.id),
                    &[u.role],
                    cx.state.permissions_clock.now(),
                )
                .await?
            }
        };
        let sources = held
            .get(&permission)
            .map(|s| s.iter().map(source_view).collect())
            .unwrap_or_default();
        Ok(CheckResponse::Ok(Json(CheckResult {
            permission: permission.as_str().to_owned(),
            allowed: held.contains_key(&permission),
            sources,
        })))
    }

    /// A user's effective permissions, each with where it comes from (its
    /// base set, a grant, a delegation in force). Anyone may read their
    /// own; others' need `permissions:read`.
    #[oai(
        path = "/users/:id/permissions",
        method = "get",
        operation_id = "permissions.users.get"
    )]
    async fn user_permissions(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
    ) -> Result<EffectiveResponse, ApiError> {
        let p = cx.principal().await?;
        if p.user_id.map(|u| u.to_string()) != Some(id.0.raw().to_lowercase()) {
            p.require(Permission::PermissionsRead)?;
        }
        let u = member(cx.state, p.caller.tenant_id, id.0.raw()).await?;
        effective_of(cx.state, p.caller.tenant_id, &u).await
    }

    /// Assign a permission set to a user: it replaces the set the user's
    /// role gave it.
    #[oai(
        path = "/users/:id/permission-set",
        method = "put",
        operation_id = "permissions.users.assign"
    )]
    async fn assign(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
        body: StrictJson<AssignBody>,
    ) -> Result<EffectiveResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission_set.assign", "user");
        let tenant = p.caller.tenant_id;
        let found = match member(cx.state, tenant, id.0.raw()).await {
            Ok(u) => match crate::extract::id(&body.0.set_id, "permission set") {
                Ok(sid) => match db::get_set(&cx.state.pool, tenant, sid).await? {
                    Some(set) => Ok((u, set)),
                    None => Err(ApiError::NotFound("permission set")),
                },
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (u, set) = act.refused(Some(id.0.raw()), found).await?;
        let mut tx = cx.state.pool.begin().await?;
        db::assign_set(&mut *tx, tenant, u.id, set.id, &p.caller.actor).await?;
        changed(
            &mut tx,
            &p,
            cx.request_id,
            Act {
                action: "permission_set.assign",
                resource_type: "user",
            },
            u.id,
            Some(u.id),
            json!({"set_id": set.id, "set": set.key}),
        )
        .await?;
        tx.commit().await?;
        let held = db::effective(
            &cx.state.pool,
            tenant,
            Some(u.id),
            std::slice::from_ref(&u.role),
            cx.state.permissions_clock.now(),
        )
        .await?;
        Ok(EffectiveResponse::Ok(Json(effective_view(&u, &held, true))))
    }

    /// Grant one permission to a user, on top of its set.
    #[oai(
        path = "/users/:id/permissions",
        method = "post",
        operation_id = "permissions.users.grant"
    )]
    async fn grant(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
        body: StrictJson<GrantBody>,
    ) -> Result<EffectiveResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission.grant", "user");
        let tenant = p.caller.tenant_id;
        let found = member(cx.state, tenant, id.0.raw()).await;
        let u = act.refused(Some(id.0.raw()), found).await?;
        let permission = Permission::parse(&body.0.permission).ok_or_else(|| {
            ApiError::invalid(
                "permission",
                format!(
                    "unknown permission {:?}",
                    body.0.permission.chars().take(64).collect::<String>()
                ),
            )
        })?;
        let mut tx = cx.state.pool.begin().await?;
        if db::grant(&mut *tx, tenant, u.id, permission, &p.caller.actor).await? {
            changed(
                &mut tx,
                &p,
                cx.request_id,
                Act {
                    action: "permission.grant",
                    resource_type: "user",
                },
                u.id,
                Some(u.id),
                json!({"permission": permission.as_str()}),
            )
            .await?;
        }
        tx.commit().await?;
        effective_of(cx.state, tenant, &u).await
    }

    /// Remove a permission granted to a user (404 when it had no such
    /// grant; what its set holds is not touched).
    #[oai(
        path = "/users/:id/permissions/:permission",
        method = "delete",
        operation_id = "permissions.users.revoke"
    )]
    async fn remove_grant(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<UserId>>,
        permission: Path<String>,
    ) -> Result<RemovedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission.revoke", "user");
        let tenant = p.caller.tenant_id;
        let found = member(cx.state, tenant, id.0.raw()).await;
        let u = act.refused(Some(id.0.raw()), found).await?;
        let permission = Permission::parse(&permission.0).ok_or_else(|| {
            ApiError::invalid(
                "permission",
                format!(
                    "unknown permission {:?}",
                    permission.0.chars().take(64).collect::<String>()
                ),
            )
        })?;
        let mut tx = cx.state.pool.begin().await?;
        if !db::remove_grant(&mut *tx, tenant, u.id, permission).await? {
            return Err(ApiError::NotFound("permission grant"));
        }
        changed(
            &mut tx,
            &p,
            cx.request_id,
            Act {
                action: "permission.revoke",
                resource_type: "user",
            },
            u.id,
            Some(u.id),
            json!({"permission": permission.as_str()}),
        )
        .await?;
        tx.commit().await?;
        Ok(RemovedResponse::NoContent)
    }
}

/// Keys of the sets `tenant` sees, by id.
async fn keys_of(
    state: &AppState,
    tenant: TenantId,
) -> Result<BTreeMap<PermissionSetId, String>, ApiError> {
    Ok(db::list_sets(&state.pool, tenant, None, 10_000)
        .await?
        .into_iter()
        .map(|s| (s.id, s.key))
        .collect())
}

/// Set `id` with its closure, or 404.
async fn read_set(
    state: &AppState,
    tenant: TenantId,
    id: PermissionSetId,
) -> Result<SetView, ApiError> {
    let set = db::get_set(&state.pool, tenant, id)
        .await?
        .ok_or(ApiError::NotFound("permission set"))?;
    let all = db::set_closure(&state.pool, id).await?;
    let keys = keys_of(state, tenant).await?;
    Ok(set_view(set, &keys, Some(all)))
}

/// A user's effective permissions as the API answers them, with whether a
/// set was assigned to the user directly.
async fn effective_of(
    state: &AppState,
    tenant: TenantId,
    u: &users::User,
) -> Result<EffectiveResponse, ApiError> {
    let assigned = db::assigned_set(&state.pool, tenant, u.id).await?;
    let held = db::effective(
        &state.pool,
        tenant,
        Some(u.id),
        std::slice::from_ref(&u.role),
        state.permissions_clock.now(),
    )
    .await?;
    Ok(EffectiveResponse::Ok(Json(effective_view(
        u,
        &held,
        assigned.is_some(),
    ))))
}

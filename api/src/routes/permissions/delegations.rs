//! Delegations: a user lends some of the permissions it holds (through its
//! set or grants, never through another delegation) to another user of its
//! organisation for a window of at most a year. Revocable by the
//! delegator or by anyone with `permissions:manage`. A delegation counts
//! only while its delegator still holds each permission: that is checked
//! whenever the delegate's permissions are computed. Windows are judged by
//! [`AppState::permissions_clock`].
//!
//! Anyone may list the delegations it gave and received; another user's
//! need `permissions:read` (an API key holding it lists the whole
//! organisation's).

use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};
use serde_json::json;
use shared::{db::permissions as db, domain::UserId, permissions::Permission};
use uuid::Uuid;

use crate::access::Act;
use crate::services::permissions::{self as service, changed, member};
use crate::{
    body::StrictJson,
    error::ApiError,
    extract::AdminCtx,
    extract::{Cursor, PageSize, Params, page},
    routes::ApiTags,
};

/// The delegation endpoints.
#[derive(Debug)]
pub struct DelegationsApi;

/// A new delegation.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct DelegateBody {
    /// The user who receives (same organisation, not the caller).
    pub delegate_id: String,
    /// What to lend (`resource:action`); each must be held by the caller.
    pub permissions: Vec<String>,
    /// From (default: now; not in the past).
    pub starts_at: Option<DateTime<Utc>>,
    /// Until: after `starts_at`, at most 365 days after it.
    pub ends_at: DateTime<Utc>,
    /// Why (up to 500 characters).
    pub reason: Option<String>,
}

/// A delegation.
#[derive(Debug, Object)]
pub struct DelegationView {
    /// Its id.
    pub id: String,
    /// Who lends.
    pub delegator_id: String,
    /// Who receives.
    pub delegate_id: String,
    /// What is lent.
    pub permissions: Vec<String>,
    /// From.
    pub starts_at: DateTime<Utc>,
    /// Until.
    pub ends_at: DateTime<Utc>,
    /// Why.
    pub reason: Option<String>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether it is in its window and not revoked now (it lends only
    /// what its delegator still holds).
    pub active: bool,
    /// Created.
    pub created_at: DateTime<Utc>,
}

impl DelegationView {
    /// `d` as the API shows it at `now`.
    pub fn at(d: db::Delegation, now: DateTime<Utc>) -> Self {
        Self {
            active: d.revoked_at.is_none() && d.starts_at <= now && d.ends_at > now,
            id: d.id.to_string(),
            delegator_id: d.delegator_id.to_string(),
            delegate_id: d.delegate_id.to_string(),
            permissions: d.permissions,
            starts_at: d.starts_at,
            ends_at: d.ends_at,
            reason: d.reason,
            revoked_at: d.revoked_at,
            created_at: d.created_at,
        }
    }
}

/// Which of a user's delegations a list holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "lowercase")]
pub enum Direction {
    /// Those it lent.
    Given,
    /// Those lent to it.
    Received,
    /// Both.
    All,
}

/// A page of delegations, newest first.
#[derive(Debug, Object)]
pub struct DelegationPage {
    /// The delegations.
    pub items: Vec<DelegationView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Answers with a page of delegations.
#[derive(Debug, ApiResponse)]
pub enum DelegationPageResponse {
    /// The page.
    #[oai(status = 200)]
    Ok(Json<DelegationPage>),
}

/// Answers with a delegation.
#[derive(Debug, ApiResponse)]
pub enum DelegationResponse {
    /// The delegation.
    #[oai(status = 200)]
    Ok(Json<DelegationView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<DelegationView>),
}

crate::query_params! {
    /// The filters and page of the delegation list.
    pub struct ListQuery {
        /// Whose delegations (default: the signed-in user; with an API key,
        /// everyone's).
        user_id: Option<String>,
        /// Given, received, or all (default).
        direction: Option<Direction>,
        /// Only those in force now (`true`), or only those not (`false`).
        active: Option<bool>,
        /// From `next_cursor` of the previous page.
        cursor: Option<Cursor<Uuid>>,
        /// Delegations per page.
        limit: PageSize,
    }
}

#[OpenApi(
    prefix_path = "/api/v1/permissions/delegations",
    tag = "ApiTags::Admin"
)]
impl DelegationsApi {
    /// Delegate some of your own permissions to another user of your
    /// organisation for a window (a user token only). Lending one you do
    /// not hold (through your set or grants) is refused with 403 naming it.
    #[oai(
        path = "/",
        method = "post",
        operation_id = "permissions.delegations.create"
    )]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<DelegateBody>,
    ) -> Result<DelegationResponse, ApiError> {
        let p = cx.principal().await?;
        let DelegateBody {
            delegate_id,
            permissions,
            starts_at,
            ends_at,
            reason,
        } = body.0;
        let lending = service::Lending {
            delegate_id,
            permissions,
            starts_at,
            ends_at,
            reason,
        };
        let (d, now) = service::delegate(cx.state, &p, cx.request_id, lending).await?;
        Ok(DelegationResponse::Created(Json(DelegationView::at(
            d, now,
        ))))
    }

    /// List delegations, newest first: those `user_id` (default: you) gave
    /// and received, or only one `direction`; `active` keeps only those in
    /// force now (`true`) or only those that are not (`false`: ended,
    /// revoked, not started). Another user's need `permissions:read`; an
    /// API key without `user_id` lists the whole organisation's.
    #[oai(
        path = "/",
        method = "get",
        operation_id = "permissions.delegations.list"
    )]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<DelegationPageResponse, ApiError> {
        let ListQuery {
            user_id,
            direction,
            active,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let tenant = p.caller.tenant_id;
        let before = cursor.map(Cursor::get).transpose()?;
        let whose = match user_id.as_deref() {
            None => p.user_id,
            Some(raw) => {
                let own = p.user_id.is_some() && raw.parse::<UserId>().ok() == p.user_id;
                if !own {
                    p.require(Permission::PermissionsRead)?;
                }
                Some(member(cx.state, tenant, raw).await?.id)
            }
        };
        let direction = match direction.unwrap_or(Direction::All) {
            Direction::Given => db::Direction::Given,
            Direction::Received => db::Direction::Received,
            Direction::All => db::Direction::Both,
        };
        let now = cx.state.permissions_clock.now();
        let filter = db::DelegationFilter {
            user: whose,
            direction,
            active,
            now,
        };
        let rows =
            db::list_delegations(&cx.state.pool, tenant, &filter, before, limit.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit, |d| d.id);
        Ok(DelegationPageResponse::Ok(Json(DelegationPage {
            items: rows
                .into_iter()
                .map(|d| DelegationView::at(d, now))
                .collect(),
            next_cursor,
        })))
    }

    /// Revoke a delegation (its delegator, or `permissions:manage`); it
    /// stops counting at once. Revoking it again changes nothing.
    #[oai(
        path = "/:id/revoke",
        method = "post",
        operation_id = "permissions.delegations.revoke"
    )]
    async fn revoke(
        &self,
        cx: AdminCtx<'_>,
        id: Path<String>,
    ) -> Result<DelegationResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "permission.delegation_revoke", "permission_delegation");
        let tenant = p.caller.tenant_id;
        let found = match crate::extract::id::<Uuid>(&id.0, "delegation") {
            Ok(did) => match db::get_delegation(&cx.state.pool, tenant, did).await? {
                Some(d) if Some(d.delegator_id) == p.user_id => Ok(d),
                Some(d) => p.require(Permission::PermissionsManage).map(|()| d),
                None => Err(ApiError::NotFound("delegation")),
            },
            Err(_) => Err(ApiError::NotFound("delegation")),
        };
        let d = act.refused(Some(&id.0), found).await?;
        let mut tx = cx.state.pool.begin().await?;
        let revoked = db::revoke_delegation(&mut *tx, tenant, d.id, &p.caller.actor)
            .await?
            .ok_or(ApiError::NotFound("delegation"))?;
        if d.revoked_at.is_none() {
            changed(
                &mut tx,
                &p,
                cx.request_id,
                Act {
                    action: "permission.delegation_revoke",
                    resource_type: "permission_delegation",
                },
                d.id,
                Some(d.delegate_id),
                json!({"delegate_id": d.delegate_id}),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(DelegationResponse::Ok(Json(DelegationView::at(
            revoked,
            cx.state.permissions_clock.now(),
        ))))
    }
}

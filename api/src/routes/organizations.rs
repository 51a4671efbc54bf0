//! `/api/v1/admin/organizations`: platform administrators manage the
//! organisations (tenants) on the platform, their business associate
//! agreements and their admins.
//!
//! Every route but `GET /{id}` needs a platform admin (403 otherwise); an
//! organisation admin may read its own organisation, and any other id answers
//! 404. Every change, and every refusal, is written to the audit log.
//!
//! An organisation whose current BAA has expired (or that never signed one)
//! is `compliant: false`. With the setting `block_phi_when_non_compliant`,
//! its sends marked `phi: true` are refused with 403.

use crate::extract::{Cursor, PageSize, Params, PathId};
use chrono::{DateTime, NaiveDate, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::organizations::{self, NewOrganization, Organization, Patch},
    db::users,
    domain::TenantId,
    roles::Role,
};

use crate::body::StrictJson;
use crate::{
    error::ApiError,
    extract::AdminCtx,
    routes::ApiTags,
    services::organizations::{
        self as service, check_name, check_object, check_type, not_platform, platform_target, today,
    },
};

mod views;

pub use views::*;

/// The organisation endpoints.
#[derive(Debug)]
pub struct OrganizationsApi;

crate::query_params! {
    /// The filters and page of the organisation list.
    pub struct ListQuery {
        status: Option<String>,
        kind as "type": Option<String>,
        name: Option<String>,
        compliant: Option<bool>,
        cursor: Option<Cursor<TenantId>>,
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1/admin/organizations", tag = "ApiTags::Admin")]
impl OrganizationsApi {
    /// Create an organisation (platform admins).
    #[oai(path = "/", method = "post", operation_id = "organizations.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateOrganization>,
    ) -> Result<OrgResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.create", "organization");
        act.refused(None, p.require_platform()).await?;
        let b = body.0;
        let name = check_name(&b.name)?;
        check_type(&b.kind)?;
        let contact = check_object("contact", b.contact)?.unwrap_or_else(|| json!({}));
        let address = check_object("address", b.address)?.unwrap_or_else(|| json!({}));
        let settings = check_object("settings", b.settings)?.unwrap_or_else(|| json!({}));
        let mut tx = cx.state.pool.begin().await?;
        let org = organizations::create(
            &mut tx,
            NewOrganization {
                name,
                kind: &b.kind,
                contact,
                address,
                settings,
            },
        )
        .await?;
        act.audit(&mut *tx, Some(org.id), org.id, json!({"type": b.kind}))
            .await?;
        tx.commit().await?;
        let location = format!("/api/v1/admin/organizations/{}", org.id);
        Ok(OrgResponse::Created(Json(view(org)), location))
    }

    /// List organisations (platform admins), filtered by `status`, `type`,
    /// part of the `name` and `compliant`.
    #[oai(path = "/", method = "get", operation_id = "organizations.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<PageResponse, ApiError> {
        let ListQuery {
            status,
            kind,
            name,
            compliant,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let filter = service::ListFilter {
            status,
            kind,
            name,
            compliant,
        };
        let (rows, next_cursor) =
            service::list(cx.state, &p, cx.request_id, filter, cursor, limit).await?;
        Ok(PageResponse::Ok(Json(OrganizationPage {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        })))
    }

    /// Organisation counts (platform admins).
    #[oai(path = "/stats", method = "get", operation_id = "organizations.stats")]
    async fn stats(&self, cx: AdminCtx<'_>) -> Result<StatsResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.stats", "organization");
        act.refused(None, p.require_platform()).await?;
        let s = organizations::stats(&cx.state.pool, today()).await?;
        Ok(StatsResponse::Ok(Json(OrganizationStats {
            total: s.total,
            active: s.active,
            inactive: s.inactive,
            compliant: s.compliant,
            non_compliant: s.non_compliant,
            expiring_30_days: s.expiring_30_days,
        })))
    }

    /// Active organisations whose BAA expires within `days` (default 30,
    /// at most 3,650) or has already expired, soonest first (platform admins).
    #[oai(
        path = "/baa-reminders",
        method = "get",
        operation_id = "organizations.baa_reminders"
    )]
    async fn baa_reminders(
        &self,
        cx: AdminCtx<'_>,
        #[oai(validator(maximum(value = "3650")))] days: Query<Option<u32>>,
    ) -> Result<ListResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.baa_reminders", "organization");
        act.refused(None, p.require_platform()).await?;
        let days = days.0.unwrap_or(30);
        if days > 3650 {
            return Err(ApiError::invalid("days", "must be 0 to 3650"));
        }
        let until = today() + chrono::Days::new(u64::from(days));
        let rows = organizations::expiring_by(&cx.state.pool, until).await?;
        Ok(ListResponse::Ok(Json(rows.into_iter().map(view).collect())))
    }

    /// Read an organisation (platform admins; an organisation's own admins
    /// may read their own).
    #[oai(path = "/:id", method = "get", operation_id = "organizations.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
    ) -> Result<OrgResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.read", "organization");
        let result = async {
            let id = id.0.get("organization")?;
            if !p.reach().covers(id) {
                return Err(ApiError::NotFound("organization"));
            }
            organizations::get(&cx.state.pool, id)
                .await?
                .ok_or(ApiError::NotFound("organization"))
        }
        .await;
        let org = act.refused(Some(id.0.raw()), result).await?;
        Ok(OrgResponse::Ok(Json(view(org))))
    }

    /// Change an organisation (platform admins).
    #[oai(path = "/:id", method = "patch", operation_id = "organizations.update")]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
        body: StrictJson<UpdateOrganization>,
    ) -> Result<OrgResponse, ApiError> {
        let p = cx.principal().await?;
        let b = body.0;
        let changes = service::Changes {
            name: b.name,
            kind: b.kind,
            status: b.status,
            contact: b.contact,
            address: b.address,
            settings: b.settings,
        };
        let org = service::update(cx.state, &p, cx.request_id, id.0.raw(), changes).await?;
        Ok(OrgResponse::Ok(Json(view(org))))
    }

    /// Deactivate an organisation (platform admins): its API keys and its
    /// users' tokens stop working.
    #[oai(
        path = "/:id/deactivate",
        method = "patch",
        operation_id = "organizations.deactivate"
    )]
    async fn deactivate(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
    ) -> Result<OrgResponse, ApiError> {
        set_status(&cx, id.0.raw(), "inactive", "organization.deactivate").await
    }

    /// Activate an organisation again (platform admins).
    #[oai(
        path = "/:id/activate",
        method = "patch",
        operation_id = "organizations.activate"
    )]
    async fn activate(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
    ) -> Result<OrgResponse, ApiError> {
        set_status(&cx, id.0.raw(), "active", "organization.activate").await
    }

    /// Record a newly signed BAA (platform admins). It becomes the current
    /// agreement, the earlier ones stay in the history, and expiry reminders
    /// start again for it.
    #[oai(
        path = "/:id/sign-baa",
        method = "patch",
        operation_id = "organizations.sign_baa"
    )]
    async fn sign_baa(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
        body: StrictJson<SignBaa>,
    ) -> Result<OrgResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.sign_baa", "organization");
        let oid = act
            .refused(Some(id.0.raw()), platform_target(&p, id.0.raw()))
            .await?;
        let b = body.0;
        let mut problems = Vec::new();
        if b.signed_on > today() {
            problems.push(("signed_on", "must not be in the future"));
        }
        if b.expires_on <= b.signed_on {
            problems.push(("expires_on", "must be after signed_on"));
        }
        let url_ok = b.document_url.len() <= 2048
            && url::Url::parse(&b.document_url)
                .is_ok_and(|u| u.scheme() == "https" && u.host().is_some());
        if !url_ok {
            problems.push((
                "document_url",
                "must be an https URL of at most 2,048 characters",
            ));
        }
        if !problems.is_empty() {
            return Err(ApiError::Invalid(
                problems
                    .into_iter()
                    .map(|(n, r)| crate::error::InvalidParam {
                        name: n.into(),
                        reason: r.into(),
                    })
                    .collect(),
            ));
        }
        let mut tx = cx.state.pool.begin().await?;
        let result = not_platform(&mut tx, oid).await;
        act.refused(Some(id.0.raw()), result).await?;
        let agreement = organizations::sign_baa(
            &mut tx,
            oid,
            b.signed_on,
            b.expires_on,
            &b.document_url,
            &p.caller.actor,
        )
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
        act.audit(&mut *tx, Some(oid), oid, json!({"agreement_id": agreement, "signed_on": b.signed_on, "expires_on": b.expires_on}))
        .await?;
        answer(tx, oid).await
    }

    /// Every BAA the organisation signed, newest first (platform admins).
    #[oai(
        path = "/:id/baa-history",
        method = "get",
        operation_id = "organizations.baa_history"
    )]
    async fn baa_history(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
    ) -> Result<HistoryResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "organization.baa_history", "organization");
        let oid = act
            .refused(Some(id.0.raw()), platform_target(&p, id.0.raw()))
            .await?;
        organizations::get(&cx.state.pool, oid)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        let rows = organizations::baa_history(&cx.state.pool, oid).await?;
        Ok(HistoryResponse::Ok(Json(
            rows.into_iter()
                .map(|a| AgreementView {
                    id: a.id.to_string(),
                    signed_on: a.signed_on,
                    expires_on: a.expires_on,
                    document_url: a.document_url,
                    signed_by: a.signed_by,
                    created_at: a.created_at,
                })
                .collect(),
        )))
    }

    /// Make one of the organisation's users an admin (platform admins).
    #[oai(
        path = "/:id/assign-admin",
        method = "patch",
        operation_id = "organizations.assign_admin"
    )]
    async fn assign_admin(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<TenantId>>,
        body: StrictJson<AssignAdmin>,
    ) -> Result<OrgResponse, ApiError> {
        let p = cx.principal().await?;
        let oid = cx
            .acting(&p, "organization.assign_admin", "organization")
            .refused(Some(id.0.raw()), platform_target(&p, id.0.raw()))
            .await?;
        let user_id = body
            .0
            .user_id
            .parse::<shared::domain::UserId>()
            .map_err(|_| ApiError::invalid("user_id", "must be a user id"))?;
        let mut tx = cx.state.pool.begin().await?;
        let result = async {
            organizations::get(&mut *tx, oid)
                .await?
                .ok_or(ApiError::NotFound("organization"))?;
            users::update(
                &mut *tx,
                shared::db::scope::Reach::Tenant(oid),
                user_id,
                None,
                None,
                Some(Role::Admin.as_str()),
            )
            .await?
            .ok_or(ApiError::NotFound("user"))
        }
        .await;
        let user = cx
            .acting(&p, "organization.assign_admin", "organization")
            .refused(Some(id.0.raw()), result)
            .await?;
        cx.acting(&p, "organization.assign_admin", "user")
            .audit(
                &mut *tx,
                Some(oid),
                user.id,
                json!({"organization_id": oid}),
            )
            .await?;
        answer(tx, oid).await
    }
}

/// Commits `tx` and answers with organisation `oid` as it now is.
async fn answer(
    tx: sqlx::Transaction<'_, sqlx::Postgres>,
    oid: TenantId,
) -> Result<OrgResponse, ApiError> {
    let org = service::committed(tx, oid).await?;
    Ok(OrgResponse::Ok(Json(view(org))))
}

async fn set_status(
    cx: &AdminCtx<'_>,
    raw: &str,
    status: &str,
    action: &str,
) -> Result<OrgResponse, ApiError> {
    let p = cx.principal().await?;
    let act = cx.acting(&p, action, "organization");
    let oid = act.refused(Some(raw), platform_target(&p, raw)).await?;
    let mut tx = cx.state.pool.begin().await?;
    let result = not_platform(&mut tx, oid).await;
    act.refused(Some(raw), result).await?;
    organizations::update(
        &mut *tx,
        oid,
        Patch {
            status: Some(status),
            ..Patch::default()
        },
    )
    .await?;
    act.audit(&mut *tx, Some(oid), oid, json!({"status": status}))
        .await?;
    answer(tx, oid).await
}

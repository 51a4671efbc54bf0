//! `/api/v1/invitations`: people join an organisation by invitation.
//!
//! Who may invite whom follows [`shared::roles`] (403 otherwise); an
//! organisation's API key and its admins invite as `ADMIN`, and platform
//! admins may invite into any organisation (`organization_id`). A new
//! invitation is `pending`; the `invitation` job gives it a fresh 256-bit
//! token (only the SHA-256 is stored), queues the email and makes it `sent`.
//! Resending does the same with a new token, so the old one stops working.
//!
//! The public `validate` and `accept` routes take the token. `validate` says
//! only whether it is valid. `accept` is single use however many requests
//! race (one conditional update in the transaction that creates the user);
//! an expired or cancelled token answers 410, a used one 409, an unknown one
//! 404. Neither says which organisation a token belongs to.
//!
//! Bulk routes answer 207 with one result per item, so one bad item does not
//! fail the others. Every action, and every refusal, is audited without the
//! token.

use crate::extract::{Cursor, PageSize, Params, PathId};
use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::json;
use shared::{db::invitations, domain::InvitationId, roles::InvitationType};

use crate::body::StrictJson;
use crate::{
    AppState,
    access::Principal,
    error::ApiError,
    extract::AdminCtx,
    middleware::RequestId,
    routes::{ApiTags, views::UserView},
    services::{
        invitations::{self as service, INVITATION_TOKEN, check_message, expiry, token_hash},
        users::check_name,
    },
};

mod actions;
use actions::*;

mod views;
pub use views::*;

/// Most items in one bulk request.
pub const MAX_BULK: usize = 100;

/// The invitation endpoints.
#[derive(Debug)]
pub struct InvitationsApi;

crate::query_params! {
    /// The filters and page of the invitation list.
    pub struct ListQuery {
        status: Option<String>,
        invitation_type: Option<String>,
        email: Option<String>,
        cursor: Option<Cursor<InvitationId>>,
        limit: PageSize,
    }
}

#[OpenApi(prefix_path = "/api/v1/invitations", tag = "ApiTags::Admin")]
impl InvitationsApi {
    /// Invite someone (any type the caller's role may invite).
    #[oai(path = "/", method = "post", operation_id = "invitations.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(&cx, body.0, None, None).await
    }

    /// Invite a doctor.
    #[oai(
        path = "/doctors",
        method = "post",
        operation_id = "invitations.create_doctor"
    )]
    async fn create_doctor(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(&cx, body.0, Some(InvitationType::Doctor), None).await
    }

    /// Invite a sales representative.
    #[oai(
        path = "/sales",
        method = "post",
        operation_id = "invitations.create_sales"
    )]
    async fn create_sales(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(&cx, body.0, Some(InvitationType::Sales), None).await
    }

    /// Invite practice staff (office_admin or medical_staff).
    #[oai(
        path = "/practice-staff",
        method = "post",
        operation_id = "invitations.create_practice_staff"
    )]
    async fn create_practice_staff(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(
            &cx,
            body.0,
            None,
            Some(&[InvitationType::OfficeAdmin, InvitationType::MedicalStaff]),
        )
        .await
    }

    /// Invite up to 100 people; one result per item (207).
    #[oai(
        path = "/bulk",
        method = "post",
        operation_id = "invitations.bulk_create"
    )]
    async fn bulk_create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<BulkCreate>,
    ) -> Result<BulkResponse, ApiError> {
        let p = cx.principal().await?;
        let items = body.0.invitations;
        if items.is_empty() || items.len() > MAX_BULK {
            return Err(ApiError::invalid(
                "invitations",
                format!("must hold 1 to {MAX_BULK} invitations"),
            ));
        }
        let mut results = Vec::with_capacity(items.len());
        for (i, body) in items.into_iter().enumerate() {
            let r = service::create(cx.state, &p, cx.request_id, invite(body), None, None).await;
            results.push(item(i, r.map(|inv| (201, inv.id))));
        }
        Ok(summarise(results))
    }

    /// Resend up to 100 invitations, each with a new token (207).
    #[oai(
        path = "/bulk/resend",
        method = "post",
        operation_id = "invitations.bulk_resend"
    )]
    async fn bulk_resend(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<BulkIds>,
    ) -> Result<BulkResponse, ApiError> {
        let p = cx.principal().await?;
        bulk_each(&body.0.ids, |raw| {
            resend_one(cx.state, &p, cx.request_id, raw, None)
        })
        .await
    }

    /// Cancel up to 100 invitations (207).
    #[oai(
        path = "/bulk/cancel",
        method = "delete",
        operation_id = "invitations.bulk_cancel"
    )]
    async fn bulk_cancel(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<BulkIds>,
    ) -> Result<BulkResponse, ApiError> {
        let p = cx.principal().await?;
        bulk_each(&body.0.ids, |raw| {
            cancel_one(cx.state, &p, cx.request_id, raw)
        })
        .await
    }

    /// List invitations (admins: every one in scope; others: those they
    /// sent), filtered by `status`, `invitation_type` and `email`.
    #[oai(path = "/", method = "get", operation_id = "invitations.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        query: Params<ListQuery>,
    ) -> Result<PageResponse, ApiError> {
        let ListQuery {
            status,
            invitation_type,
            email,
            cursor,
            limit,
        } = query.0;
        let p = cx.principal().await?;
        let filter = service::ListFilter {
            status,
            invitation_type,
            email,
        };
        let (rows, next_cursor) = service::list(cx.state, &p, filter, cursor, limit).await?;
        Ok(PageResponse::Ok(Json(InvitationPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Counts per status and type (admins).
    #[oai(
        path = "/statistics/summary",
        method = "get",
        operation_id = "invitations.summary"
    )]
    async fn summary(&self, cx: AdminCtx<'_>) -> Result<SummaryResponse, ApiError> {
        let p = cx.principal().await?;
        let rows = invitations::stats(&cx.state.pool, p.reach()).await?;
        let mut by_status = std::collections::BTreeMap::new();
        for (s, _, n) in &rows {
            *by_status.entry(s.clone()).or_insert(0) += n;
        }
        Ok(SummaryResponse::Ok(Json(Summary {
            total: rows.iter().map(|r| r.2).sum(),
            by_status,
            counts: rows
                .into_iter()
                .map(|(status, invitation_type, count)| StatCount {
                    status,
                    invitation_type,
                    count,
                })
                .collect(),
        })))
    }

    /// Whether a token can be accepted now; nothing else is revealed.
    #[oai(
        path = "/validate/:token",
        method = "get",
        operation_id = "invitations.validate"
    )]
    async fn validate(
        &self,
        state: Data<&AppState>,
        token: Path<String>,
    ) -> Result<ValidityResponse, ApiError> {
        let valid = match token_hash(&token.0) {
            None => false,
            // The token names no organisation until it is found.
            Some(hash) => shared::db::scope::platform(
                INVITATION_TOKEN,
                invitations::by_token(&state.pool, &hash),
            )
            .await?
            .is_some_and(|i| i.status == "sent" && i.expires_at > Utc::now() && i.tenant_active),
        };
        Ok(ValidityResponse::Ok(Json(Validity { valid })))
    }

    /// Accept an invitation: creates the user, in the inviting organisation
    /// with the invitation's role, with this password.
    #[oai(
        path = "/accept/:token",
        method = "post",
        operation_id = "invitations.accept"
    )]
    async fn accept(
        &self,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        token: Path<String>,
        body: StrictJson<Accept>,
    ) -> Result<AcceptResponse, ApiError> {
        let Accept {
            password,
            first_name,
            last_name,
        } = body.0;
        let acceptance = service::Acceptance {
            password,
            first_name,
            last_name,
        };
        let user = service::accept(&state, &request_id.0.0, &token.0, acceptance).await?;
        Ok(AcceptResponse::Created(Json(user.into())))
    }

    /// Read an invitation.
    #[oai(path = "/:id", method = "get", operation_id = "invitations.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<InvitationId>>,
    ) -> Result<InvitationResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "invitation.read", "invitation");
        let inv = managed(cx.state, &p, &act, id.0.raw()).await?;
        Ok(InvitationResponse::Ok(Json(inv.into())))
    }

    /// Change an open invitation's names, note or expiry.
    #[oai(path = "/:id", method = "put", operation_id = "invitations.update")]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<InvitationId>>,
        body: StrictJson<UpdateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "invitation.update", "invitation");
        let inv = managed(cx.state, &p, &act, id.0.raw()).await?;
        let b = body.0;
        let first = check_name("first_name", b.first_name.as_deref())?;
        let last = check_name("last_name", b.last_name.as_deref())?;
        let message = check_message(b.message.as_deref())?;
        let expires_at = b
            .expires_in_days
            .map(|d| expiry(cx.state, Some(d)))
            .transpose()?;
        let mut tx = cx.state.pool.begin().await?;
        let updated = invitations::update(
            &mut tx,
            inv.tenant_id,
            inv.id,
            first.as_deref(),
            last.as_deref(),
            message.as_deref(),
            expires_at,
        )
        .await?
        .ok_or_else(|| {
            ApiError::Conflict(format!(
                "an invitation that is {} cannot be changed",
                inv.status
            ))
        });
        let updated = act.refused(Some(id.0.raw()), updated).await?;
        act.audit(&mut *tx, Some(inv.tenant_id), inv.id, json!({}))
            .await?;
        tx.commit().await?;
        Ok(InvitationResponse::Ok(Json(updated.into())))
    }

    /// Cancel an open invitation; its token stops working (410).
    #[oai(path = "/:id", method = "delete", operation_id = "invitations.cancel")]
    async fn cancel(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<InvitationId>>,
    ) -> Result<CancelResponse, ApiError> {
        let p = cx.principal().await?;
        cancel_one(cx.state, &p, cx.request_id, id.0.raw()).await?;
        Ok(CancelResponse::NoContent)
    }

    /// Send an invitation again with a new token (the old one stops
    /// working) and a new expiry (`expires_in_days`, default 7).
    #[oai(
        path = "/:id/resend",
        method = "post",
        operation_id = "invitations.resend"
    )]
    async fn resend(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<InvitationId>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "30")))] expires_in_days: Query<
            Option<u32>,
        >,
    ) -> Result<InvitationResponse, ApiError> {
        let p = cx.principal().await?;
        let id = resend_one(cx.state, &p, cx.request_id, id.0.raw(), expires_in_days.0).await?;
        let inv = invitations::get(&cx.state.pool, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        Ok(InvitationResponse::Ok(Json(inv.into())))
    }
}

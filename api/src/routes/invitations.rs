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

use chrono::{DateTime, Duration, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use shared::{
    db::{audit, invitations, subscribers, users},
    domain::TenantId,
    jobs::SendInvitation,
    permissions::Permission,
    roles::{InvitationType, Role},
};
use uuid::Uuid;

use crate::body::StrictJson;
use crate::{
    AppState,
    access::{self, Principal},
    auth::Admin,
    error::ApiError,
    middleware::RequestId,
    routes::{
        ApiTags,
        admin_users::{UserView, check_email, check_name},
    },
};

/// Most items in one bulk request.
pub const MAX_BULK: usize = 100;

/// The invitation endpoints.
#[derive(Debug)]
pub struct InvitationsApi;

/// An invitation.
#[derive(Debug, Object)]
pub struct InvitationView {
    /// Its id.
    pub id: String,
    /// The organisation invited into.
    pub organization_id: String,
    /// The invited address.
    pub email: String,
    /// The invitation type.
    pub invitation_type: String,
    /// The role accepting gives.
    pub role: String,
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// A note from the inviter.
    pub message: Option<String>,
    /// `pending`, `sent`, `accepted`, `failed` (the email could not be
    /// delivered), `cancelled` or `expired`.
    pub status: String,
    /// The email's delivery status (`queued`, `sent`, `delivered`,
    /// `bounced`, `failed`, …) once it is queued.
    pub email_status: Option<String>,
    /// When the token stops working.
    pub expires_at: DateTime<Utc>,
    /// Who invited.
    pub invited_by: String,
    /// The user accepting created.
    pub user_id: Option<String>,
    /// Emails sent so far.
    pub send_count: i32,
    /// Last sent.
    pub sent_at: Option<DateTime<Utc>>,
    /// Accepted.
    pub accepted_at: Option<DateTime<Utc>>,
    /// Cancelled.
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<invitations::Invitation> for InvitationView {
    fn from(i: invitations::Invitation) -> Self {
        Self {
            id: i.id.to_string(),
            organization_id: i.tenant_id.to_string(),
            role: InvitationType::parse(&i.invitation_type)
                .map(|t| t.role().as_str().to_owned())
                .unwrap_or_default(),
            email: i.email,
            invitation_type: i.invitation_type,
            first_name: i.first_name,
            last_name: i.last_name,
            message: i.message,
            status: i.status,
            email_status: i.email_status,
            expires_at: i.expires_at,
            invited_by: i.invited_by,
            user_id: i.user_id.map(|u| u.to_string()),
            send_count: i.send_count,
            sent_at: i.sent_at,
            accepted_at: i.accepted_at,
            cancelled_at: i.cancelled_at,
            created_at: i.created_at,
            updated_at: i.updated_at,
        }
    }
}

/// A new invitation.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateInvitation {
    /// The address to invite.
    pub email: String,
    /// doctor, sales, distributor, master_distributor, office_admin,
    /// medical_staff, ivr_company, shipping_logistics, admin or chp_admin.
    /// Fixed by `/doctors` and `/sales`; `/practice-staff` takes
    /// office_admin or medical_staff (the default).
    pub invitation_type: Option<String>,
    /// Given name (up to 100 characters).
    pub first_name: Option<String>,
    /// Family name (up to 100 characters).
    pub last_name: Option<String>,
    /// A note for the email (up to 2,000 characters).
    pub message: Option<String>,
    /// Days the token is valid, 1 to 30 (default from `jobs.toml`, 7).
    pub expires_in_days: Option<u32>,
    /// The organisation (platform admins; the caller's own otherwise).
    pub organization_id: Option<String>,
}

/// Changes to an open invitation.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateInvitation {
    /// Given name.
    pub first_name: Option<String>,
    /// Family name.
    pub last_name: Option<String>,
    /// Note.
    pub message: Option<String>,
    /// Days from now the token stays valid, 1 to 30.
    pub expires_in_days: Option<u32>,
}

/// Several invitations.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BulkCreate {
    /// 1 to 100 invitations, each as for `POST /`.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub invitations: Vec<CreateInvitation>,
}

/// Several invitation ids.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct BulkIds {
    /// 1 to 100 ids.
    #[oai(validator(min_items = 1, max_items = 100))]
    pub ids: Vec<String>,
}

/// One item's outcome.
#[derive(Debug, Object)]
pub struct InvitationBulkItem {
    /// The item's position in the request.
    pub index: u32,
    /// Its HTTP status: 201/200 done, else the status it would have had.
    pub status: u16,
    /// The invitation, when there is one.
    pub id: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
}

/// Per-item outcomes.
#[derive(Debug, Object)]
pub struct InvitationBulkResult {
    /// One per item, in request order.
    pub results: Vec<InvitationBulkItem>,
    /// Items done.
    pub succeeded: u32,
    /// Items refused.
    pub failed: u32,
}

/// A page of invitations.
#[derive(Debug, Object)]
pub struct InvitationPage {
    /// Invitations in creation order.
    pub items: Vec<InvitationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Whether a token is valid.
#[derive(Debug, Object)]
pub struct Validity {
    /// Whether it can be accepted now.
    pub valid: bool,
}

/// Accepting an invitation.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct Accept {
    /// The new user's password (12 to 128 characters with a lower-case
    /// letter, an upper-case letter and a digit).
    pub password: String,
    /// Given name (else the invitation's).
    pub first_name: Option<String>,
    /// Family name (else the invitation's).
    pub last_name: Option<String>,
}

/// A count.
#[derive(Debug, Object)]
pub struct StatCount {
    /// Status.
    pub status: String,
    /// Type.
    pub invitation_type: String,
    /// How many.
    pub count: i64,
}

/// Counts of invitations.
#[derive(Debug, Object)]
pub struct Summary {
    /// Every invitation.
    pub total: i64,
    /// Per status.
    pub by_status: std::collections::BTreeMap<String, i64>,
    /// Per status and type.
    pub counts: Vec<StatCount>,
}

/// Answers with an invitation.
#[derive(Debug, ApiResponse)]
pub enum InvitationResponse {
    /// The invitation.
    #[oai(status = 200)]
    Ok(Json<InvitationView>),
    /// Created; the email goes out shortly.
    #[oai(status = 201)]
    Created(Json<InvitationView>, #[oai(header = "Location")] String),
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<InvitationPage>),
}

/// Answers to a bulk request.
#[derive(Debug, ApiResponse)]
pub enum BulkResponse {
    /// One result per item.
    #[oai(status = 207)]
    MultiStatus(Json<InvitationBulkResult>),
}

/// Answers to a cancel.
#[derive(Debug, ApiResponse)]
pub enum CancelResponse {
    /// Cancelled.
    #[oai(status = 204)]
    NoContent,
}

/// Answers to validate.
#[derive(Debug, ApiResponse)]
pub enum ValidityResponse {
    /// Whether the token is valid.
    #[oai(status = 200)]
    Ok(Json<Validity>),
}

/// Answers to accept.
#[derive(Debug, ApiResponse)]
pub enum AcceptResponse {
    /// The new user; sign in with `POST /api/v1/auth/login`.
    #[oai(status = 201)]
    Created(Json<UserView>),
}

/// Answers with the summary.
#[derive(Debug, ApiResponse)]
pub enum SummaryResponse {
    /// Counts.
    #[oai(status = 200)]
    Ok(Json<Summary>),
}

/// Pushes the invitation's job; a failure is left to the
/// `expire-invitations` cron entry, which pushes stale pending ones again.
pub async fn push(state: &AppState, tenant_id: TenantId, invitation_id: Uuid) {
    if let Err(error) = state
        .queues
        .push(SendInvitation {
            tenant_id,
            invitation_id,
        })
        .await
    {
        tracing::warn!(%error, %invitation_id, "invitation saved; its job will be pushed again later");
    }
}

fn invitation_id(raw: &str) -> Result<Uuid, ApiError> {
    Uuid::parse_str(raw).map_err(|_| ApiError::NotFound("invitation"))
}

fn expiry(state: &AppState, days: Option<u32>) -> Result<DateTime<Utc>, ApiError> {
    let days = days.unwrap_or(state.jobs.invitations.expiry_days);
    if !(1..=30).contains(&days) {
        return Err(ApiError::invalid("expires_in_days", "must be 1 to 30"));
    }
    Ok(Utc::now() + Duration::days(i64::from(days)))
}

fn check_message(v: Option<&str>) -> Result<Option<String>, ApiError> {
    match v {
        Some(m) if m.chars().count() > 2000 => Err(ApiError::invalid(
            "message",
            "must be at most 2,000 characters",
        )),
        Some(m) => Ok(Some(m.to_owned())),
        None => Ok(None),
    }
}

/// A token as issued: 43 URL-safe base64 characters (256 bits). Anything
/// else is not looked up.
fn token_hash(token: &str) -> Option<Vec<u8>> {
    let well_formed = token.len() == 43
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    well_formed.then(|| Sha256::digest(token.as_bytes()).to_vec())
}

/// What [`create_one`] refuses with, before anything is written.
async fn create_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    body: CreateInvitation,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<invitations::Invitation, ApiError> {
    let ty = match (fixed, body.invitation_type.as_deref()) {
        (Some(t), None) => t,
        (Some(t), Some(raw)) if raw == t.as_str() => t,
        (Some(t), Some(_)) => {
            return Err(ApiError::invalid(
                "invitation_type",
                format!("this route invites {} only", t.as_str()),
            ));
        }
        (None, None) if allowed.is_some() => InvitationType::MedicalStaff,
        (None, None) => return Err(ApiError::invalid("invitation_type", "is required")),
        (None, Some(raw)) => InvitationType::parse(raw).ok_or_else(|| {
            ApiError::invalid(
                "invitation_type",
                format!(
                    "must be one of {}",
                    InvitationType::ALL
                        .iter()
                        .map(|t| t.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })?,
    };
    if let Some(allowed) = allowed
        && !allowed.contains(&ty)
    {
        return Err(ApiError::invalid(
            "invitation_type",
            "must be office_admin or medical_staff",
        ));
    }
    let email = check_email("email", &body.email)?;
    let first = check_name("first_name", body.first_name.as_deref())?;
    let last = check_name("last_name", body.last_name.as_deref())?;
    let message = check_message(body.message.as_deref())?;
    let expires_at = expiry(state, body.expires_in_days)?;
    let checks = (|| {
        p.require(Permission::UsersInvite)?;
        let tenant = p.target_tenant(body.organization_id.as_deref())?;
        let role = p.role.unwrap_or(Role::Support);
        if !role.may_invite().contains(&ty) {
            return Err(ApiError::Forbidden(
                "your role may not send this type of invitation",
            ));
        }
        Ok(tenant)
    })();
    let tenant = p
        .refused(
            state,
            request_id,
            "invitation.create",
            "invitation",
            None,
            checks,
        )
        .await?;
    let org = shared::db::organizations::get(&state.pool, tenant)
        .await?
        .filter(|o| o.status == "active" && o.kind != "platform");
    p.refused(
        state,
        request_id,
        "invitation.create",
        "invitation",
        None,
        org.map(|_| ()).ok_or(ApiError::NotFound("organization")),
    )
    .await?;
    let mut tx = state.pool.begin().await?;
    let inv = invitations::insert(
        &mut tx,
        invitations::NewInvitation {
            tenant_id: tenant,
            email: email.as_str(),
            invitation_type: ty.as_str(),
            first_name: first.as_deref(),
            last_name: last.as_deref(),
            message: message.as_deref(),
            expires_at,
            invited_by: &p.caller.actor,
        },
    )
    .await
    .map_err(ApiError::from);
    let inv = p
        .refused(
            state,
            request_id,
            "invitation.create",
            "invitation",
            None,
            inv,
        )
        .await?;
    p.audit(
        &mut *tx,
        request_id,
        Some(tenant),
        "invitation.create",
        "invitation",
        inv.id,
        json!({"invitation_type": ty.as_str()}),
    )
    .await?;
    tx.commit().await?;
    push(state, tenant, inv.id).await;
    Ok(inv)
}

async fn created(
    state: &AppState,
    auth: &Admin,
    request_id: &RequestId,
    body: CreateInvitation,
    fixed: Option<InvitationType>,
    allowed: Option<&[InvitationType]>,
) -> Result<InvitationResponse, ApiError> {
    let p = Principal::resolve(state, auth).await?;
    let inv = create_one(state, &p, request_id, body, fixed, allowed).await?;
    let location = format!("/api/v1/invitations/{}", inv.id);
    Ok(InvitationResponse::Created(Json(inv.into()), location))
}

fn bulk_ids(ids: &[String]) -> Result<(), ApiError> {
    if ids.is_empty() || ids.len() > MAX_BULK {
        return Err(ApiError::invalid(
            "ids",
            format!("must hold 1 to {MAX_BULK} ids"),
        ));
    }
    Ok(())
}

fn item(index: usize, result: Result<(u16, Uuid), ApiError>) -> InvitationBulkItem {
    use poem::error::ResponseError;
    match result {
        Ok((status, id)) => InvitationBulkItem {
            index: index as u32,
            status,
            id: Some(id.to_string()),
            error: None,
        },
        Err(e) => {
            let error = match &e {
                ApiError::Invalid(params) => params
                    .iter()
                    .map(|p| format!("{}: {}", p.name, p.reason))
                    .collect::<Vec<_>>()
                    .join("; "),
                ApiError::Internal(_) => "an internal error occurred".to_owned(),
                other => other.to_string(),
            };
            InvitationBulkItem {
                index: index as u32,
                status: e.status().as_u16(),
                id: None,
                error: Some(error),
            }
        }
    }
}

fn summarise(results: Vec<InvitationBulkItem>) -> BulkResponse {
    let succeeded = results.iter().filter(|r| r.status < 300).count() as u32;
    let failed = results.len() as u32 - succeeded;
    BulkResponse::MultiStatus(Json(InvitationBulkResult {
        results,
        succeeded,
        failed,
    }))
}

async fn resend_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    raw: &str,
    days: Option<u32>,
) -> Result<Uuid, ApiError> {
    let result = async {
        let id = invitation_id(raw)?;
        let inv = invitations::get(&state.pool, p.scope(), id)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        check_can_manage(p, &inv)?;
        Ok(inv)
    }
    .await;
    let inv = p
        .refused(
            state,
            request_id,
            "invitation.resend",
            "invitation",
            Some(raw),
            result,
        )
        .await?;
    let expires_at = expiry(state, days)?;
    let mut tx = state.pool.begin().await?;
    let reopened = invitations::reopen(&mut *tx, Some(inv.tenant_id), inv.id, expires_at).await?;
    let reopened = if reopened {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "an invitation that is {} cannot be resent",
            inv.status
        )))
    };
    p.refused(
        state,
        request_id,
        "invitation.resend",
        "invitation",
        Some(raw),
        reopened,
    )
    .await?;
    p.audit(
        &mut *tx,
        request_id,
        Some(inv.tenant_id),
        "invitation.resend",
        "invitation",
        inv.id,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    push(state, inv.tenant_id, inv.id).await;
    Ok(inv.id)
}

async fn cancel_one(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    raw: &str,
) -> Result<Uuid, ApiError> {
    let result = async {
        let id = invitation_id(raw)?;
        let inv = invitations::get(&state.pool, p.scope(), id)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        check_can_manage(p, &inv)?;
        Ok(inv)
    }
    .await;
    let inv = p
        .refused(
            state,
            request_id,
            "invitation.cancel",
            "invitation",
            Some(raw),
            result,
        )
        .await?;
    let mut tx = state.pool.begin().await?;
    let done = if invitations::cancel(&mut *tx, Some(inv.tenant_id), inv.id).await? {
        Ok(())
    } else {
        Err(ApiError::Conflict(format!(
            "an invitation that is {} cannot be cancelled",
            inv.status
        )))
    };
    p.refused(
        state,
        request_id,
        "invitation.cancel",
        "invitation",
        Some(raw),
        done,
    )
    .await?;
    p.audit(
        &mut *tx,
        request_id,
        Some(inv.tenant_id),
        "invitation.cancel",
        "invitation",
        inv.id,
        json!({}),
    )
    .await?;
    tx.commit().await?;
    Ok(inv.id)
}

/// Admins manage every invitation in scope; others only those they sent.
fn check_can_manage(p: &Principal, inv: &invitations::Invitation) -> Result<(), ApiError> {
    if p.holds(Permission::UsersManage) || inv.invited_by == p.caller.actor {
        Ok(())
    } else {
        Err(ApiError::NotFound("invitation"))
    }
}

#[OpenApi(prefix_path = "/api/v1/invitations", tag = "ApiTags::Admin")]
impl InvitationsApi {
    /// Invite someone (any type the caller's role may invite).
    #[oai(path = "/", method = "post", operation_id = "invitations.create")]
    async fn create(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(&state, &auth, &request_id, body.0, None, None).await
    }

    /// Invite a doctor.
    #[oai(
        path = "/doctors",
        method = "post",
        operation_id = "invitations.create_doctor"
    )]
    async fn create_doctor(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(
            &state,
            &auth,
            &request_id,
            body.0,
            Some(InvitationType::Doctor),
            None,
        )
        .await
    }

    /// Invite a sales representative.
    #[oai(
        path = "/sales",
        method = "post",
        operation_id = "invitations.create_sales"
    )]
    async fn create_sales(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(
            &state,
            &auth,
            &request_id,
            body.0,
            Some(InvitationType::Sales),
            None,
        )
        .await
    }

    /// Invite practice staff (office_admin or medical_staff).
    #[oai(
        path = "/practice-staff",
        method = "post",
        operation_id = "invitations.create_practice_staff"
    )]
    async fn create_practice_staff(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<CreateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        created(
            &state,
            &auth,
            &request_id,
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<BulkCreate>,
    ) -> Result<BulkResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let items = body.0.invitations;
        if items.is_empty() || items.len() > MAX_BULK {
            return Err(ApiError::invalid(
                "invitations",
                format!("must hold 1 to {MAX_BULK} invitations"),
            ));
        }
        let mut results = Vec::with_capacity(items.len());
        for (i, body) in items.into_iter().enumerate() {
            let r = create_one(&state, &p, &request_id, body, None, None).await;
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<BulkIds>,
    ) -> Result<BulkResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        bulk_ids(&body.0.ids)?;
        let mut results = Vec::new();
        for (i, raw) in body.0.ids.iter().enumerate() {
            let r = resend_one(&state, &p, &request_id, raw, None).await;
            results.push(item(i, r.map(|id| (200, id))));
        }
        Ok(summarise(results))
    }

    /// Cancel up to 100 invitations (207).
    #[oai(
        path = "/bulk/cancel",
        method = "delete",
        operation_id = "invitations.bulk_cancel"
    )]
    async fn bulk_cancel(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<BulkIds>,
    ) -> Result<BulkResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        bulk_ids(&body.0.ids)?;
        let mut results = Vec::new();
        for (i, raw) in body.0.ids.iter().enumerate() {
            let r = cancel_one(&state, &p, &request_id, raw).await;
            results.push(item(i, r.map(|id| (200, id))));
        }
        Ok(summarise(results))
    }

    /// List invitations (admins: every one in scope; others: those they
    /// sent), filtered by `status`, `invitation_type` and `email`.
    #[oai(path = "/", method = "get", operation_id = "invitations.list")]
    #[expect(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        status: Query<Option<String>>,
        invitation_type: Query<Option<String>>,
        email: Query<Option<String>>,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> Result<PageResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        const STATUSES: &[&str] = &[
            "pending",
            "sent",
            "accepted",
            "failed",
            "cancelled",
            "expired",
        ];
        if status.0.as_deref().is_some_and(|s| !STATUSES.contains(&s)) {
            return Err(ApiError::invalid(
                "status",
                format!("must be one of {}", STATUSES.join(", ")),
            ));
        }
        if invitation_type
            .0
            .as_deref()
            .is_some_and(|t| InvitationType::parse(t).is_none())
        {
            return Err(ApiError::invalid(
                "invitation_type",
                "is not an invitation type",
            ));
        }
        if email.0.as_ref().is_some_and(|e| e.len() > 254) {
            return Err(ApiError::invalid("email", "must be at most 254 characters"));
        }
        let limit = limit.0.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::invalid("limit", "must be 1 to 200"));
        }
        let after = cursor
            .0
            .as_deref()
            .map(|c| {
                Uuid::parse_str(c)
                    .map_err(|_| ApiError::invalid("cursor", "is not a cursor this API returned"))
            })
            .transpose()?;
        let mut rows = Vec::new();
        let mut after = after;
        // Non-admins see only what they sent: filter while paging.
        loop {
            let batch = invitations::list(
                &state.pool,
                invitations::Filter {
                    tenant: p.scope(),
                    status: status.0.as_deref(),
                    invitation_type: invitation_type.0.as_deref(),
                    email: email.0.as_deref(),
                    after,
                },
                i64::from(limit) + 1,
            )
            .await?;
            let exhausted = batch.len() <= limit as usize;
            after = batch.last().map(|i| i.id);
            rows.extend(
                batch
                    .into_iter()
                    .filter(|i| check_can_manage(&p, i).is_ok()),
            );
            if exhausted || rows.len() > limit as usize {
                break;
            }
        }
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|i| i.id.to_string()))
            .flatten();
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
    async fn summary(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
    ) -> Result<SummaryResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        p.refused(
            &state,
            &request_id,
            "invitation.summary",
            "invitation",
            None,
            p.require(Permission::UsersRead),
        )
        .await?;
        let rows = invitations::stats(&state.pool, p.scope()).await?;
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
            Some(hash) => invitations::by_token(&state.pool, &hash)
                .await?
                .is_some_and(|i| {
                    i.status == "sent" && i.expires_at > Utc::now() && i.tenant_active
                }),
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
        let hash = token_hash(&token.0).ok_or(ApiError::NotFound("invitation"))?;
        let b = body.0;
        access::check_password("password", &b.password)?;
        let first = check_name("first_name", b.first_name.as_deref())?;
        let last = check_name("last_name", b.last_name.as_deref())?;
        let password_hash = access::hash_password(b.password).await?;
        let mut tx = state.pool.begin().await?;
        let Some(inv) = invitations::accept(&mut *tx, &hash).await? else {
            drop(tx);
            let Some(found) = invitations::by_token(&state.pool, &hash).await? else {
                // Unknown tokens are not recorded: anyone can send them.
                return Err(ApiError::NotFound("invitation"));
            };
            let (why, status) = if found.status == "accepted" {
                (
                    ApiError::Conflict("this invitation was already accepted".into()),
                    409,
                )
            } else {
                (
                    ApiError::Gone("this invitation has expired or was cancelled"),
                    410,
                )
            };
            audit::record(
                &state.pool,
                audit::Entry {
                    tenant_id: Some(found.tenant_id),
                    actor: "anonymous",
                    action: "invitation.accept",
                    resource_type: "invitation",
                    resource_id: Some(found.id.to_string()),
                    result: "failure",
                    request_id: Some(&request_id.0.0),
                    details: json!({"status": status}),
                },
            )
            .await?;
            return Err(why);
        };
        let ty = InvitationType::parse(&inv.invitation_type)
            .ok_or_else(|| anyhow::anyhow!("stored invitation type {}", inv.invitation_type))?;
        let actor = format!("invitation:{}", inv.id);
        let user = users::insert(
            &mut *tx,
            users::NewUser {
                tenant_id: inv.tenant_id,
                email: &inv.email,
                first_name: first.as_deref().or(inv.first_name.as_deref()),
                last_name: last.as_deref().or(inv.last_name.as_deref()),
                role: ty.role().as_str(),
                password_hash: Some(&password_hash),
                must_change_password: false,
                created_by: &actor,
            },
        )
        .await?;
        invitations::set_user(&mut *tx, inv.id, user.id).await?;
        subscribers::link_user(&mut *tx, &user).await?;
        audit::record(
            &mut *tx,
            audit::Entry {
                tenant_id: Some(inv.tenant_id),
                actor: &format!("user:{}", user.id),
                action: "invitation.accept",
                resource_type: "invitation",
                resource_id: Some(inv.id.to_string()),
                result: "success",
                request_id: Some(&request_id.0.0),
                details: json!({"user_id": user.id, "role": ty.role().as_str()}),
            },
        )
        .await?;
        tx.commit().await?;
        Ok(AcceptResponse::Created(Json(user.into())))
    }

    /// Read an invitation.
    #[oai(path = "/:id", method = "get", operation_id = "invitations.get")]
    async fn get(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<InvitationResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let result = async {
            let inv = invitations::get(&state.pool, p.scope(), invitation_id(&id.0)?)
                .await?
                .ok_or(ApiError::NotFound("invitation"))?;
            check_can_manage(&p, &inv)?;
            Ok(inv)
        }
        .await;
        let inv = p
            .refused(
                &state,
                &request_id,
                "invitation.read",
                "invitation",
                Some(&id.0),
                result,
            )
            .await?;
        Ok(InvitationResponse::Ok(Json(inv.into())))
    }

    /// Change an open invitation's names, note or expiry.
    #[oai(path = "/:id", method = "put", operation_id = "invitations.update")]
    async fn update(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
        body: StrictJson<UpdateInvitation>,
    ) -> Result<InvitationResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let result = async {
            let inv = invitations::get(&state.pool, p.scope(), invitation_id(&id.0)?)
                .await?
                .ok_or(ApiError::NotFound("invitation"))?;
            check_can_manage(&p, &inv)?;
            Ok(inv)
        }
        .await;
        let inv = p
            .refused(
                &state,
                &request_id,
                "invitation.update",
                "invitation",
                Some(&id.0),
                result,
            )
            .await?;
        let b = body.0;
        let first = check_name("first_name", b.first_name.as_deref())?;
        let last = check_name("last_name", b.last_name.as_deref())?;
        let message = check_message(b.message.as_deref())?;
        let expires_at = b
            .expires_in_days
            .map(|d| expiry(&state, Some(d)))
            .transpose()?;
        let mut tx = state.pool.begin().await?;
        let updated = invitations::update(
            &mut tx,
            Some(inv.tenant_id),
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
        let updated = p
            .refused(
                &state,
                &request_id,
                "invitation.update",
                "invitation",
                Some(&id.0),
                updated,
            )
            .await?;
        p.audit(
            &mut *tx,
            &request_id,
            Some(inv.tenant_id),
            "invitation.update",
            "invitation",
            inv.id,
            json!({}),
        )
        .await?;
        tx.commit().await?;
        Ok(InvitationResponse::Ok(Json(updated.into())))
    }

    /// Cancel an open invitation; its token stops working (410).
    #[oai(path = "/:id", method = "delete", operation_id = "invitations.cancel")]
    async fn cancel(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<CancelResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        cancel_one(&state, &p, &request_id, &id.0).await?;
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
        #[oai(validator(minimum(value = "1"), maximum(value = "30")))] expires_in_days: Query<
            Option<u32>,
        >,
    ) -> Result<InvitationResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let id = resend_one(&state, &p, &request_id, &id.0, expires_in_days.0).await?;
        let inv = invitations::get(&state.pool, p.scope(), id)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        Ok(InvitationResponse::Ok(Json(inv.into())))
    }
}

//! What the invitation endpoints take and answer: invitations, bulk requests
//! and their per-item results, validity, acceptance and the summary.

use super::*;

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

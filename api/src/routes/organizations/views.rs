//! What the organisation endpoints take and answer: organisations, their
//! Business Associate Agreements and statistics, and the bodies that
//! create, update, sign and assign, with the checks on each field.

use super::*;

/// An organisation's current BAA.
#[derive(Debug, Object)]
pub struct BaaView {
    /// The agreement's id.
    pub id: String,
    /// Signed on.
    pub signed_on: NaiveDate,
    /// Expires on.
    pub expires_on: NaiveDate,
    /// The signed document.
    pub document_url: String,
}

/// An organisation.
#[derive(Debug, Object)]
pub struct OrganizationView {
    /// Its id (the tenant id).
    pub id: String,
    /// Name.
    pub name: String,
    /// Type.
    #[oai(rename = "type")]
    pub kind: String,
    /// `active`, `suspended` or `inactive`.
    pub status: String,
    /// Contact details.
    pub contact: Value,
    /// Postal address.
    pub address: Value,
    /// Settings.
    pub settings: Value,
    /// The current BAA, if one was signed.
    pub baa: Option<BaaView>,
    /// Whether the current BAA is valid today.
    pub compliant: bool,
    /// Days until the BAA expires (negative once expired).
    pub baa_days_left: Option<i64>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

pub(super) fn view(o: Organization) -> OrganizationView {
    let today = today();
    let compliant = o.compliant(today);
    let baa = match (
        o.baa_id,
        o.baa_signed_on,
        o.baa_expires_on,
        o.baa_document_url,
    ) {
        (Some(id), Some(signed_on), Some(expires_on), Some(document_url)) => Some(BaaView {
            id: id.to_string(),
            signed_on,
            expires_on,
            document_url,
        }),
        _ => None,
    };
    OrganizationView {
        id: o.id.to_string(),
        name: o.name,
        kind: o.kind,
        status: o.status,
        contact: o.contact,
        address: o.address,
        settings: o.settings,
        baa_days_left: baa.as_ref().map(|b| (b.expires_on - today).num_days()),
        baa,
        compliant,
        created_at: o.created_at,
        updated_at: o.updated_at,
    }
}

/// A new organisation.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateOrganization {
    /// Name, 1 to 200 characters.
    pub name: String,
    /// Type: clinic, hospital, pharmacy, laboratory, telehealth, distributor
    /// or other.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: String,
    /// Contact details (an object, up to 8 KiB), e.g. `{"name", "email", "phone"}`.
    pub contact: Option<Value>,
    /// Postal address (an object, up to 8 KiB).
    pub address: Option<Value>,
    /// Settings (an object, up to 8 KiB): `block_phi_when_non_compliant`
    /// (boolean); `timezone` (an IANA name: the zone of recipients whose
    /// profile names none); `send_windows` (per channel `email`, `sms`,
    /// `push` or `whatsapp`, a daily window in the recipient's local time,
    /// `{"start": "HH:MM", "end": "HH:MM"}`, start ≠ end, crossing midnight
    /// allowed: outside it a message waits for the opening, unless critical).
    pub settings: Option<Value>,
}

/// Changes to an organisation; absent fields stay.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateOrganization {
    /// Name.
    pub name: Option<String>,
    /// Type.
    #[oai(rename = "type")]
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `active`, `suspended` or `inactive`.
    pub status: Option<String>,
    /// Contact details.
    pub contact: Option<Value>,
    /// Postal address.
    pub address: Option<Value>,
    /// Settings (replaced whole; the keys as when creating).
    pub settings: Option<Value>,
}

/// A signed BAA.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SignBaa {
    /// The day it was signed (not in the future).
    pub signed_on: NaiveDate,
    /// The day it expires (after `signed_on`).
    pub expires_on: NaiveDate,
    /// The signed document (https URL, up to 2,048 characters).
    pub document_url: String,
}

/// Who becomes an admin.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct AssignAdmin {
    /// A user of this organisation.
    #[oai(validator(
        pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    ))]
    pub user_id: String,
}

/// A page of organisations.
#[derive(Debug, Object)]
pub struct OrganizationPage {
    /// Organisations in creation order.
    pub items: Vec<OrganizationView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// One signed agreement.
#[derive(Debug, Object)]
pub struct AgreementView {
    /// Its id.
    pub id: String,
    /// Signed on.
    pub signed_on: NaiveDate,
    /// Expires on.
    pub expires_on: NaiveDate,
    /// The document.
    pub document_url: String,
    /// Who recorded it.
    pub signed_by: String,
    /// Recorded at.
    pub created_at: DateTime<Utc>,
}

/// Organisation counts.
#[derive(Debug, Object)]
pub struct OrganizationStats {
    /// Every organisation (the platform's aside).
    pub total: i64,
    /// Active.
    pub active: i64,
    /// Suspended or inactive.
    pub inactive: i64,
    /// Active with a valid BAA.
    pub compliant: i64,
    /// Active without a valid BAA.
    pub non_compliant: i64,
    /// With a BAA expiring within 30 days.
    pub expiring_30_days: i64,
}

/// Answers with one organisation.
#[derive(Debug, ApiResponse)]
pub enum OrgResponse {
    /// The organisation.
    #[oai(status = 200)]
    Ok(Json<OrganizationView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<OrganizationView>, #[oai(header = "Location")] String),
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<OrganizationPage>),
}

/// Answers with a list.
#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// Organisations, soonest expiry first.
    #[oai(status = 200)]
    Ok(Json<Vec<OrganizationView>>),
}

/// Answers with agreements.
#[derive(Debug, ApiResponse)]
pub enum HistoryResponse {
    /// Every agreement, newest first.
    #[oai(status = 200)]
    Ok(Json<Vec<AgreementView>>),
}

/// Answers with stats.
#[derive(Debug, ApiResponse)]
pub enum StatsResponse {
    /// Counts.
    #[oai(status = 200)]
    Ok(Json<OrganizationStats>),
}

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

use chrono::{DateTime, NaiveDate, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::organizations::{self, Filter, NewOrganization, Organization, Patch},
    db::users,
    domain::TenantId,
    roles::Role,
};

use crate::body::StrictJson;
use crate::{
    AppState, access::Principal, auth::Admin, error::ApiError, middleware::RequestId,
    routes::ApiTags,
};

/// Organisation types.
pub const TYPES: &[&str] = &[
    "clinic",
    "hospital",
    "pharmacy",
    "laboratory",
    "telehealth",
    "distributor",
    "other",
];
const STATUSES: &[&str] = &["active", "suspended", "inactive"];
/// Largest JSON object accepted for contact, address or settings.
const MAX_OBJECT_BYTES: usize = 8 * 1024;

/// The organisation endpoints.
#[derive(Debug)]
pub struct OrganizationsApi;

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

fn today() -> NaiveDate {
    Utc::now().date_naive()
}

fn view(o: Organization) -> OrganizationView {
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

fn org_id(raw: &str) -> Result<TenantId, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("organization"))
}

fn check_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(name)
}

fn check_type(kind: &str) -> Result<(), ApiError> {
    if TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "type",
            format!("must be one of {}", TYPES.join(", ")),
        ))
    }
}

fn check_object(field: &str, v: Option<Value>) -> Result<Option<Value>, ApiError> {
    let Some(v) = v else { return Ok(None) };
    if !v.is_object() {
        return Err(ApiError::invalid(field, "must be an object"));
    }
    if v.to_string().len() > MAX_OBJECT_BYTES {
        return Err(ApiError::invalid(field, "must be at most 8 KiB of JSON"));
    }
    if field == "settings"
        && v.get("block_phi_when_non_compliant")
            .is_some_and(|b| !b.is_boolean())
    {
        return Err(ApiError::invalid(
            "settings.block_phi_when_non_compliant",
            "must be a boolean",
        ));
    }
    if field == "settings" {
        shared::send_windows::SendRules::parse(&v)
            .map_err(|(name, reason)| ApiError::invalid(name, reason))?;
    }
    Ok(Some(v))
}

fn decode_cursor(raw: Option<&str>) -> Result<Option<TenantId>, ApiError> {
    raw.map(|c| {
        c.parse()
            .map_err(|_| ApiError::invalid("cursor", "is not a cursor this API returned"))
    })
    .transpose()
}

fn check_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    let limit = limit.unwrap_or(50);
    if (1..=200).contains(&limit) {
        Ok(limit)
    } else {
        Err(ApiError::invalid("limit", "must be 1 to 200"))
    }
}

#[OpenApi(prefix_path = "/api/v1/admin/organizations", tag = "ApiTags::Admin")]
impl OrganizationsApi {
    /// Create an organisation (platform admins).
    #[oai(path = "/", method = "post", operation_id = "organizations.create")]
    async fn create(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        body: StrictJson<CreateOrganization>,
    ) -> Result<OrgResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        p.refused(
            &state,
            &request_id,
            "organization.create",
            "organization",
            None,
            p.require_platform(),
        )
        .await?;
        let b = body.0;
        let name = check_name(&b.name)?;
        check_type(&b.kind)?;
        let contact = check_object("contact", b.contact)?.unwrap_or_else(|| json!({}));
        let address = check_object("address", b.address)?.unwrap_or_else(|| json!({}));
        let settings = check_object("settings", b.settings)?.unwrap_or_else(|| json!({}));
        let mut tx = state.pool.begin().await?;
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
        p.audit(
            &mut *tx,
            &request_id,
            Some(org.id),
            "organization.create",
            "organization",
            org.id,
            json!({"type": b.kind}),
        )
        .await?;
        tx.commit().await?;
        let location = format!("/api/v1/admin/organizations/{}", org.id);
        Ok(OrgResponse::Created(Json(view(org)), location))
    }

    /// List organisations (platform admins), filtered by `status`, `type`,
    /// part of the `name` and `compliant`.
    #[oai(path = "/", method = "get", operation_id = "organizations.list")]
    #[expect(clippy::too_many_arguments)]
    async fn list(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        status: Query<Option<String>>,
        #[oai(name = "type")] kind: Query<Option<String>>,
        name: Query<Option<String>>,
        compliant: Query<Option<bool>>,
        cursor: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "200")))] limit: Query<Option<u32>>,
    ) -> Result<PageResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        p.refused(
            &state,
            &request_id,
            "organization.list",
            "organization",
            None,
            p.require_platform(),
        )
        .await?;
        if let Some(s) = status.0.as_deref()
            && !STATUSES.contains(&s)
        {
            return Err(ApiError::invalid(
                "status",
                "must be active, suspended or inactive",
            ));
        }
        if let Some(k) = kind.0.as_deref() {
            check_type(k)?;
        }
        if name.0.as_ref().is_some_and(|n| n.chars().count() > 200) {
            return Err(ApiError::invalid("name", "must be at most 200 characters"));
        }
        let limit = check_limit(limit.0)?;
        let mut rows = organizations::list(
            &state.pool,
            Filter {
                status: status.0.as_deref(),
                kind: kind.0.as_deref(),
                name: name.0.as_deref(),
                compliant: compliant.0,
                today: today(),
                after: decode_cursor(cursor.0.as_deref())?,
            },
            i64::from(limit) + 1,
        )
        .await?;
        let more = rows.len() > limit as usize;
        rows.truncate(limit as usize);
        let next_cursor = more
            .then(|| rows.last().map(|o| o.id.to_string()))
            .flatten();
        Ok(PageResponse::Ok(Json(OrganizationPage {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        })))
    }

    /// Organisation counts (platform admins).
    #[oai(path = "/stats", method = "get", operation_id = "organizations.stats")]
    async fn stats(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
    ) -> Result<StatsResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        p.refused(
            &state,
            &request_id,
            "organization.stats",
            "organization",
            None,
            p.require_platform(),
        )
        .await?;
        let s = organizations::stats(&state.pool, today()).await?;
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        #[oai(validator(maximum(value = "3650")))] days: Query<Option<u32>>,
    ) -> Result<ListResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        p.refused(
            &state,
            &request_id,
            "organization.baa_reminders",
            "organization",
            None,
            p.require_platform(),
        )
        .await?;
        let days = days.0.unwrap_or(30);
        if days > 3650 {
            return Err(ApiError::invalid("days", "must be 0 to 3650"));
        }
        let until = today() + chrono::Days::new(u64::from(days));
        let rows = organizations::expiring_by(&state.pool, until).await?;
        Ok(ListResponse::Ok(Json(rows.into_iter().map(view).collect())))
    }

    /// Read an organisation (platform admins; an organisation's own admins
    /// may read their own).
    #[oai(path = "/:id", method = "get", operation_id = "organizations.get")]
    async fn get(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<OrgResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let result = async {
            p.require_admin()?;
            let id = org_id(&id.0)?;
            if p.scope().is_some_and(|own| own != id) {
                return Err(ApiError::NotFound("organization"));
            }
            organizations::get(&state.pool, id)
                .await?
                .ok_or(ApiError::NotFound("organization"))
        }
        .await;
        let org = p
            .refused(
                &state,
                &request_id,
                "organization.read",
                "organization",
                Some(&id.0),
                result,
            )
            .await?;
        Ok(OrgResponse::Ok(Json(view(org))))
    }

    /// Change an organisation (platform admins).
    #[oai(path = "/:id", method = "patch", operation_id = "organizations.update")]
    async fn update(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
        body: StrictJson<UpdateOrganization>,
    ) -> Result<OrgResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let oid = p
            .refused(
                &state,
                &request_id,
                "organization.update",
                "organization",
                Some(&id.0),
                platform_target(&p, &id.0),
            )
            .await?;
        let b = body.0;
        let name = b.name.as_deref().map(check_name).transpose()?;
        if let Some(k) = b.kind.as_deref() {
            check_type(k)?;
        }
        if let Some(s) = b.status.as_deref()
            && !STATUSES.contains(&s)
        {
            return Err(ApiError::invalid(
                "status",
                "must be active, suspended or inactive",
            ));
        }
        let patch = Patch {
            name,
            kind: b.kind.as_deref(),
            status: b.status.as_deref(),
            contact: check_object("contact", b.contact)?,
            address: check_object("address", b.address)?,
            settings: check_object("settings", b.settings)?,
        };
        let changed: Vec<&str> = [
            ("name", patch.name.is_some()),
            ("type", patch.kind.is_some()),
            ("status", patch.status.is_some()),
            ("contact", patch.contact.is_some()),
            ("address", patch.address.is_some()),
            ("settings", patch.settings.is_some()),
        ]
        .into_iter()
        .filter_map(|(f, set)| set.then_some(f))
        .collect();
        let mut tx = state.pool.begin().await?;
        let result = not_platform(&mut tx, oid).await;
        p.refused(
            &state,
            &request_id,
            "organization.update",
            "organization",
            Some(&id.0),
            result,
        )
        .await?;
        organizations::update(&mut *tx, oid, patch).await?;
        p.audit(
            &mut *tx,
            &request_id,
            Some(oid),
            "organization.update",
            "organization",
            oid,
            json!({"fields": changed}),
        )
        .await?;
        let org = organizations::get(&mut *tx, oid)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        tx.commit().await?;
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<OrgResponse, ApiError> {
        set_status(
            &auth,
            &state,
            &request_id,
            &id.0,
            "inactive",
            "organization.deactivate",
        )
        .await
    }

    /// Activate an organisation again (platform admins).
    #[oai(
        path = "/:id/activate",
        method = "patch",
        operation_id = "organizations.activate"
    )]
    async fn activate(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<OrgResponse, ApiError> {
        set_status(
            &auth,
            &state,
            &request_id,
            &id.0,
            "active",
            "organization.activate",
        )
        .await
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
        body: StrictJson<SignBaa>,
    ) -> Result<OrgResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let oid = p
            .refused(
                &state,
                &request_id,
                "organization.sign_baa",
                "organization",
                Some(&id.0),
                platform_target(&p, &id.0),
            )
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
        let mut tx = state.pool.begin().await?;
        let result = not_platform(&mut tx, oid).await;
        p.refused(
            &state,
            &request_id,
            "organization.sign_baa",
            "organization",
            Some(&id.0),
            result,
        )
        .await?;
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
        p.audit(
            &mut *tx,
            &request_id,
            Some(oid),
            "organization.sign_baa",
            "organization",
            oid,
            json!({"agreement_id": agreement, "signed_on": b.signed_on, "expires_on": b.expires_on}),
        )
        .await?;
        let org = organizations::get(&mut *tx, oid)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        tx.commit().await?;
        Ok(OrgResponse::Ok(Json(view(org))))
    }

    /// Every BAA the organisation signed, newest first (platform admins).
    #[oai(
        path = "/:id/baa-history",
        method = "get",
        operation_id = "organizations.baa_history"
    )]
    async fn baa_history(
        &self,
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
    ) -> Result<HistoryResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let oid = p
            .refused(
                &state,
                &request_id,
                "organization.baa_history",
                "organization",
                Some(&id.0),
                platform_target(&p, &id.0),
            )
            .await?;
        organizations::get(&state.pool, oid)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        let rows = organizations::baa_history(&state.pool, oid).await?;
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
        auth: Admin,
        state: Data<&AppState>,
        request_id: Data<&RequestId>,
        id: Path<String>,
        body: StrictJson<AssignAdmin>,
    ) -> Result<OrgResponse, ApiError> {
        let p = Principal::resolve(&state, &auth).await?;
        let oid = p
            .refused(
                &state,
                &request_id,
                "organization.assign_admin",
                "organization",
                Some(&id.0),
                platform_target(&p, &id.0),
            )
            .await?;
        let user_id = uuid::Uuid::parse_str(&body.0.user_id)
            .map_err(|_| ApiError::invalid("user_id", "must be a user id"))?;
        let mut tx = state.pool.begin().await?;
        let result = async {
            organizations::get(&mut *tx, oid)
                .await?
                .ok_or(ApiError::NotFound("organization"))?;
            users::update(
                &mut *tx,
                Some(oid),
                user_id,
                None,
                None,
                Some(Role::Admin.as_str()),
            )
            .await?
            .ok_or(ApiError::NotFound("user"))
        }
        .await;
        let user = p
            .refused(
                &state,
                &request_id,
                "organization.assign_admin",
                "organization",
                Some(&id.0),
                result,
            )
            .await?;
        p.audit(
            &mut *tx,
            &request_id,
            Some(oid),
            "organization.assign_admin",
            "user",
            user.id,
            json!({"organization_id": oid}),
        )
        .await?;
        let org = organizations::get(&mut *tx, oid)
            .await?
            .ok_or(ApiError::NotFound("organization"))?;
        tx.commit().await?;
        Ok(OrgResponse::Ok(Json(view(org))))
    }
}

/// The organisation a platform-admin route acts on: 403 for anyone else,
/// 404 for a malformed id.
fn platform_target(p: &Principal, raw: &str) -> Result<TenantId, ApiError> {
    if p.scope().is_some() {
        // An organisation admin learns nothing about other organisations.
        let id: Option<TenantId> = raw.parse().ok();
        if id != Some(p.caller.tenant_id) {
            return Err(ApiError::NotFound("organization"));
        }
    }
    p.require_platform()?;
    org_id(raw)
}

/// The platform organisation is not changed through this API.
async fn not_platform(tx: &mut sqlx::PgConnection, id: TenantId) -> Result<(), ApiError> {
    match organizations::get(&mut *tx, id).await? {
        None => Err(ApiError::NotFound("organization")),
        Some(o) if o.kind == "platform" => Err(ApiError::Forbidden(
            "the platform organisation cannot be changed through this API",
        )),
        Some(_) => Ok(()),
    }
}

async fn set_status(
    auth: &Admin,
    state: &AppState,
    request_id: &RequestId,
    raw: &str,
    status: &str,
    action: &str,
) -> Result<OrgResponse, ApiError> {
    let p = Principal::resolve(state, auth).await?;
    let oid = p
        .refused(
            state,
            request_id,
            action,
            "organization",
            Some(raw),
            platform_target(&p, raw),
        )
        .await?;
    let mut tx = state.pool.begin().await?;
    let result = not_platform(&mut tx, oid).await;
    p.refused(state, request_id, action, "organization", Some(raw), result)
        .await?;
    organizations::update(
        &mut *tx,
        oid,
        Patch {
            status: Some(status),
            ..Patch::default()
        },
    )
    .await?;
    p.audit(
        &mut *tx,
        request_id,
        Some(oid),
        action,
        "organization",
        oid,
        json!({"status": status}),
    )
    .await?;
    let org = organizations::get(&mut *tx, oid)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    tx.commit().await?;
    Ok(OrgResponse::Ok(Json(view(org))))
}

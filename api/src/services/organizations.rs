//! Organisations (tenants): the rules their fields follow, which
//! organisation a platform admin's request acts on, listing them and
//! changing one. The routes in [`crate::routes::organizations`] parse
//! requests and shape answers.
//!
//! The platform organisation is not changed through the API. Refusals of a
//! platform-admin action are audited.

use chrono::{NaiveDate, Utc};
use serde_json::{Value, json};
use shared::{
    db::organizations::{self, Filter, Organization, Patch},
    domain::TenantId,
};

use crate::{
    AppState,
    access::Principal,
    error::ApiError,
    extract::{Cursor, PageSize, page},
    middleware::RequestId,
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

/// The filters of the organisation list, as sent.
#[derive(Debug)]
pub struct ListFilter {
    /// Status.
    pub status: Option<String>,
    /// Type.
    pub kind: Option<String>,
    /// Part of the name.
    pub name: Option<String>,
    /// Whether its BAA is current.
    pub compliant: Option<bool>,
}

/// An organisation's changes as sent; `None` leaves a field as it is.
#[derive(Debug)]
pub struct Changes {
    /// Its name.
    pub name: Option<String>,
    /// Its type.
    pub kind: Option<String>,
    /// Its status.
    pub status: Option<String>,
    /// Contact details (an object).
    pub contact: Option<Value>,
    /// Postal address (an object).
    pub address: Option<Value>,
    /// Settings (an object).
    pub settings: Option<Value>,
}

/// Today's date (UTC), against which BAAs are current or expired.
pub fn today() -> NaiveDate {
    Utc::now().date_naive()
}

/// One page (`limit`, after `cursor`) of the organisations matching `f`,
/// with the cursor of the next: platform admins only (refusals audited as
/// `organization.list`). The filters are checked before the cursor.
pub async fn list(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    f: ListFilter,
    cursor: Option<Cursor<TenantId>>,
    limit: PageSize,
) -> Result<(Vec<Organization>, Option<String>), ApiError> {
    let act = p
        .at(state, request_id)
        .acting("organization.list", "organization");
    act.refused(None, p.require_platform()).await?;
    if let Some(s) = f.status.as_deref()
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::invalid(
            "status",
            "must be active, suspended or inactive",
        ));
    }
    if let Some(k) = f.kind.as_deref() {
        check_type(k)?;
    }
    if f.name.as_ref().is_some_and(|n| n.chars().count() > 200) {
        return Err(ApiError::invalid("name", "must be at most 200 characters"));
    }
    let rows = organizations::list(
        &state.pool,
        Filter {
            status: f.status.as_deref(),
            kind: f.kind.as_deref(),
            name: f.name.as_deref(),
            compliant: f.compliant,
            today: today(),
            after: cursor.map(Cursor::get).transpose()?,
        },
        limit.fetch(),
    )
    .await?;
    Ok(page(rows, limit, |o| o.id))
}

/// Applies `c` to organisation `raw` (platform admins; see
/// [`platform_target`]) and audits the fields changed as
/// `organization.update`: the organisation as it now is. The target is
/// checked first (refusals audited), then the fields, then that it is not
/// the platform organisation (refusal audited).
pub async fn update(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    raw: &str,
    c: Changes,
) -> Result<Organization, ApiError> {
    let act = p
        .at(state, request_id)
        .acting("organization.update", "organization");
    let oid = act.refused(Some(raw), platform_target(p, raw)).await?;
    let name = c.name.as_deref().map(check_name).transpose()?;
    if let Some(k) = c.kind.as_deref() {
        check_type(k)?;
    }
    if let Some(s) = c.status.as_deref()
        && !STATUSES.contains(&s)
    {
        return Err(ApiError::invalid(
            "status",
            "must be active, suspended or inactive",
        ));
    }
    let patch = Patch {
        name,
        kind: c.kind.as_deref(),
        status: c.status.as_deref(),
        contact: check_object("contact", c.contact)?,
        address: check_object("address", c.address)?,
        settings: check_object("settings", c.settings)?,
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
    act.refused(Some(raw), result).await?;
    organizations::update(&mut *tx, oid, patch).await?;
    act.audit(&mut *tx, Some(oid), oid, json!({"fields": changed}))
        .await?;
    committed(tx, oid).await
}

/// Commits `tx`: organisation `oid` as it now is.
pub async fn committed(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    oid: TenantId,
) -> Result<Organization, ApiError> {
    let org = organizations::get(&mut *tx, oid)
        .await?
        .ok_or(ApiError::NotFound("organization"))?;
    tx.commit().await?;
    Ok(org)
}

/// The organisation a platform-admin route acts on: 403 for anyone else,
/// 404 for a malformed id.
pub fn platform_target(p: &Principal, raw: &str) -> Result<TenantId, ApiError> {
    if !p.platform {
        // An organisation admin learns nothing about other organisations.
        let id: Option<TenantId> = raw.parse().ok();
        if id != Some(p.caller.tenant_id) {
            return Err(ApiError::NotFound("organization"));
        }
    }
    p.require_platform()?;
    crate::extract::id(raw, "organization")
}

/// The platform organisation is not changed through this API.
pub async fn not_platform(tx: &mut sqlx::PgConnection, id: TenantId) -> Result<(), ApiError> {
    match organizations::get(&mut *tx, id).await? {
        None => Err(ApiError::NotFound("organization")),
        Some(o) if o.kind == "platform" => Err(ApiError::Forbidden(
            "the platform organisation cannot be changed through this API",
        )),
        Some(_) => Ok(()),
    }
}

/// A name: 1 to 200 characters without control characters, trimmed.
pub fn check_name(name: &str) -> Result<&str, ApiError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 200 characters without control characters",
        ));
    }
    Ok(name)
}

/// One of [`TYPES`].
pub fn check_type(kind: &str) -> Result<(), ApiError> {
    if TYPES.contains(&kind) {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "type",
            format!("must be one of {}", TYPES.join(", ")),
        ))
    }
}

/// Contact, address or settings: a JSON object of at most 8 KiB;
/// settings' `block_phi_when_non_compliant` a boolean, and its send
/// rules well formed.
pub fn check_object(field: &str, v: Option<Value>) -> Result<Option<Value>, ApiError> {
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

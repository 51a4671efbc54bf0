//! Organisations: tenants seen from the admin API, with their type, contact,
//! address, settings and business associate agreements (BAA).
//!
//! An organisation's current BAA is `tenants.current_baa_id`; every agreement
//! ever signed stays in `baa_agreements`. An organisation is compliant while
//! its current agreement has not expired.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::Value;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::TenantId;

/// An organisation with its current BAA.
#[derive(Debug, Clone)]
pub struct Organization {
    /// Its id (the tenant id).
    pub id: TenantId,
    /// Its name.
    pub name: String,
    /// `platform`, `clinic`, `hospital`, …
    pub kind: String,
    /// `active`, `suspended` or `inactive`.
    pub status: String,
    /// Contact details (object).
    pub contact: Value,
    /// Postal address (object).
    pub address: Value,
    /// Settings (object), e.g. `block_phi_when_non_compliant`.
    pub settings: Value,
    /// The current agreement.
    pub baa_id: Option<Uuid>,
    /// When it was signed.
    pub baa_signed_on: Option<NaiveDate>,
    /// When it expires.
    pub baa_expires_on: Option<NaiveDate>,
    /// The signed document.
    pub baa_document_url: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl Organization {
    /// Whether its BAA is valid on `today` (signed on or before, and
    /// `today` before the expiry day).
    pub fn compliant(&self, today: NaiveDate) -> bool {
        self.baa_expires_on.is_some_and(|e| e > today)
            && self.baa_signed_on.is_some_and(|s| s <= today)
    }

    /// Whether sends that carry PHI are refused while it is not compliant.
    pub fn blocks_phi_when_non_compliant(&self) -> bool {
        self.settings
            .get("block_phi_when_non_compliant")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
}

/// A new organisation's fields.
#[derive(Debug, Clone)]
pub struct NewOrganization<'a> {
    /// Name.
    pub name: &'a str,
    /// Type.
    pub kind: &'a str,
    /// Contact.
    pub contact: Value,
    /// Address.
    pub address: Value,
    /// Settings.
    pub settings: Value,
}

/// Creates an active organisation.
#[tracing::instrument(skip_all)]
pub async fn create(
    db: &mut sqlx::PgConnection,
    new: NewOrganization<'_>,
) -> Result<Organization, sqlx::Error> {
    let id = TenantId::new();
    sqlx::query!(
        "insert into tenants (id, name, type, contact, address, settings) values ($1, $2, $3, $4, $5, $6)",
        id.0,
        new.name,
        new.kind,
        new.contact,
        new.address,
        new.settings,
    )
    .execute(&mut *db)
    .await?;
    get(&mut *db, id).await?.ok_or(sqlx::Error::RowNotFound)
}

/// Reads an organisation.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    id: TenantId,
) -> Result<Option<Organization>, sqlx::Error> {
    sqlx::query_as!(
        Organization,
        r#"select t.id as "id: TenantId", t.name, t.type as kind, t.status, t.contact, t.address,
             t.settings, t.created_at, t.updated_at, b.id as "baa_id?",
             b.signed_on as "baa_signed_on?", b.expires_on as "baa_expires_on?",
             b.document_url as "baa_document_url?"
         from tenants t left join baa_agreements b on b.id = t.current_baa_id
         where t.id = $1"#,
        id.0,
    )
    .fetch_optional(db)
    .await
}

/// The platform organisation, if there is one.
#[tracing::instrument(skip_all)]
pub async fn platform(db: impl PgExecutor<'_>) -> Result<Option<Organization>, sqlx::Error> {
    sqlx::query_as!(
        Organization,
        r#"select t.id as "id: TenantId", t.name, t.type as kind, t.status, t.contact, t.address,
             t.settings, t.created_at, t.updated_at, b.id as "baa_id?",
             b.signed_on as "baa_signed_on?", b.expires_on as "baa_expires_on?",
             b.document_url as "baa_document_url?"
         from tenants t left join baa_agreements b on b.id = t.current_baa_id
         where t.type = 'platform'"#
    )
    .fetch_optional(db)
    .await
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Exact status.
    pub status: Option<&'a str>,
    /// Exact type.
    pub kind: Option<&'a str>,
    /// A case-insensitive part of the name.
    pub name: Option<&'a str>,
    /// Only those whose compliance on `today` is this.
    pub compliant: Option<bool>,
    /// The day compliance is judged on.
    pub today: NaiveDate,
    /// After this id (ids are time-ordered).
    pub after: Option<TenantId>,
}

/// Organisations in id (creation) order.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    f: Filter<'_>,
    limit: i64,
) -> Result<Vec<Organization>, sqlx::Error> {
    sqlx::query_as!(
        Organization,
        r#"select t.id as "id: TenantId", t.name, t.type as kind, t.status, t.contact, t.address,
             t.settings, t.created_at, t.updated_at, b.id as "baa_id?",
             b.signed_on as "baa_signed_on?", b.expires_on as "baa_expires_on?",
             b.document_url as "baa_document_url?"
         from tenants t left join baa_agreements b on b.id = t.current_baa_id
         where ($1::text is null or t.status = $1)
           and ($2::text is null or t.type = $2)
           and ($3::text is null or t.name ilike '%' || replace(replace(replace($3, '\', '\\'), '%', '\%'), '_', '\_') || '%')
           and ($4::boolean is null or (coalesce(b.expires_on > $5 and b.signed_on <= $5, false)) = $4)
           and ($6::uuid is null or t.id > $6)
         order by t.id limit $7"#,
        f.status,
        f.kind,
        f.name,
        f.compliant,
        f.today,
        f.after.map(|t| t.0),
        limit,
    )
    .fetch_all(db)
    .await
}

/// Changes to an organisation; `None` keeps a field.
#[derive(Debug, Clone, Default)]
pub struct Patch<'a> {
    /// Name.
    pub name: Option<&'a str>,
    /// Type.
    pub kind: Option<&'a str>,
    /// Status.
    pub status: Option<&'a str>,
    /// Contact.
    pub contact: Option<Value>,
    /// Address.
    pub address: Option<Value>,
    /// Settings (replaced whole).
    pub settings: Option<Value>,
}

/// Updates an organisation; false when there is none.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    id: TenantId,
    p: Patch<'_>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update tenants set name = coalesce($2, name), type = coalesce($3, type),
            status = coalesce($4, status), contact = coalesce($5, contact),
            address = coalesce($6, address), settings = coalesce($7, settings)
         where id = $1",
        id.0,
        p.name,
        p.kind,
        p.status,
        p.contact,
        p.address,
        p.settings,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// One signed agreement.
#[derive(Debug, Clone)]
pub struct Agreement {
    /// Its id.
    pub id: Uuid,
    /// Signed.
    pub signed_on: NaiveDate,
    /// Expires.
    pub expires_on: NaiveDate,
    /// The document.
    pub document_url: String,
    /// Who recorded it.
    pub signed_by: String,
    /// Recorded.
    pub created_at: DateTime<Utc>,
}

/// Records a newly signed BAA and makes it the current one (reminders start
/// again for it). `None` when the organisation does not exist.
#[tracing::instrument(skip_all)]
pub async fn sign_baa(
    db: &mut sqlx::PgConnection,
    id: TenantId,
    signed_on: NaiveDate,
    expires_on: NaiveDate,
    document_url: &str,
    signed_by: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let exists = sqlx::query_scalar!("select id from tenants where id = $1 for update", id.0)
        .fetch_optional(&mut *db)
        .await?;
    if exists.is_none() {
        return Ok(None);
    }
    let agreement = Uuid::now_v7();
    sqlx::query!(
        "insert into baa_agreements (id, tenant_id, signed_on, expires_on, document_url, signed_by)
         values ($1, $2, $3, $4, $5, $6)",
        agreement,
        id.0,
        signed_on,
        expires_on,
        document_url,
        signed_by,
    )
    .execute(&mut *db)
    .await?;
    sqlx::query!(
        "update tenants set current_baa_id = $2 where id = $1",
        id.0,
        agreement,
    )
    .execute(&mut *db)
    .await?;
    Ok(Some(agreement))
}

/// Every agreement of an organisation, newest first.
#[tracing::instrument(skip_all)]
pub async fn baa_history(
    db: impl PgExecutor<'_>,
    id: TenantId,
) -> Result<Vec<Agreement>, sqlx::Error> {
    sqlx::query_as!(
        Agreement,
        "select id, signed_on, expires_on, document_url, signed_by, created_at
         from baa_agreements where tenant_id = $1 order by created_at desc, id desc",
        id.0,
    )
    .fetch_all(db)
    .await
}

/// Active organisations (not the platform) whose current BAA expires on or
/// before `until`, soonest first.
#[tracing::instrument(skip_all)]
pub async fn expiring_by(
    db: impl PgExecutor<'_>,
    until: NaiveDate,
) -> Result<Vec<Organization>, sqlx::Error> {
    sqlx::query_as!(
        Organization,
        r#"select t.id as "id: TenantId", t.name, t.type as kind, t.status, t.contact, t.address,
             t.settings, t.created_at, t.updated_at, b.id as "baa_id?",
             b.signed_on as "baa_signed_on?", b.expires_on as "baa_expires_on?",
             b.document_url as "baa_document_url?"
         from tenants t left join baa_agreements b on b.id = t.current_baa_id
         where t.status = 'active' and t.type <> 'platform' and b.expires_on <= $1
         order by b.expires_on, t.id"#,
        until,
    )
    .fetch_all(db)
    .await
}

/// Counts for the dashboard.
#[derive(Debug, Clone)]
pub struct Stats {
    /// Every organisation.
    pub total: i64,
    /// Active ones.
    pub active: i64,
    /// Inactive or suspended ones.
    pub inactive: i64,
    /// Active with a valid BAA.
    pub compliant: i64,
    /// Active without a valid BAA.
    pub non_compliant: i64,
    /// Valid BAA expiring within 30 days.
    pub expiring_30_days: i64,
}

/// Counts organisations (the platform one aside) as of `today`.
#[tracing::instrument(skip_all)]
pub async fn stats(db: impl PgExecutor<'_>, today: NaiveDate) -> Result<Stats, sqlx::Error> {
    sqlx::query_as!(
        Stats,
        r#"select count(*) as "total!",
            count(*) filter (where t.status = 'active') as "active!",
            count(*) filter (where t.status <> 'active') as "inactive!",
            count(*) filter (where t.status = 'active' and b.expires_on > $1 and b.signed_on <= $1) as "compliant!",
            count(*) filter (where t.status = 'active' and not coalesce(b.expires_on > $1 and b.signed_on <= $1, false)) as "non_compliant!",
            count(*) filter (where b.expires_on > $1 and b.expires_on <= $1 + 30) as "expiring_30_days!"
         from tenants t left join baa_agreements b on b.id = t.current_baa_id
         where t.type <> 'platform'"#,
        today,
    )
    .fetch_one(db)
    .await
}

/// Records that the reminder `threshold` of `agreement` goes out; false when
/// it already did (or is going out in a transaction not yet committed, which
/// this waits for).
#[tracing::instrument(skip_all)]
pub async fn claim_reminder(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    agreement: Uuid,
    threshold: &str,
    scheduled_for: DateTime<Utc>,
    recipients: i32,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "insert into baa_reminders_sent (agreement_id, threshold, tenant_id, scheduled_for, recipients)
         values ($1, $2, $3, $4, $5) on conflict do nothing",
        agreement,
        threshold,
        tenant_id.0,
        scheduled_for,
        recipients,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

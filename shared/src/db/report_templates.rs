//! Report templates of an organisation's own ([`crate::reports::own`]).
//! Every function takes the organisation first; another organisation's
//! template is not found.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    domain::{ReportTemplateId, TenantId},
    reports::own::{OwnPeriod, Section, TemplateSpec},
};

/// The unique key of a template per organisation.
pub const KEY_CONSTRAINT: &str = "report_templates_tenant_key_key";
/// A schedule's reference to a template (a used template cannot go).
pub const SCHEDULE_CONSTRAINT: &str = "report_schedules_report_template_fkey";

/// A stored template.
#[derive(Debug, Clone)]
pub struct ReportTemplate {
    /// Its id.
    pub id: ReportTemplateId,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// The template.
    pub spec: TemplateSpec,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

type Row = (
    ReportTemplateId,
    TenantId,
    String,
    String,
    String,
    Option<i32>,
    Vec<String>,
    Option<String>,
    String,
    DateTime<Utc>,
    DateTime<Utc>,
);

/// The [`Row`] of a record of `report_templates` read as `COLUMNS`
/// (`id, tenant_id, key, name, period, period_days, sections, channel,
/// created_by, created_at, updated_at`).
macro_rules! row {
    ($r:ident) => {
        (
            $r.id,
            $r.tenant_id,
            $r.key,
            $r.name,
            $r.period,
            $r.period_days,
            $r.sections,
            $r.channel,
            $r.created_by,
            $r.created_at,
            $r.updated_at,
        )
    };
}

fn of(r: Row) -> ReportTemplate {
    let (
        id,
        tenant_id,
        key,
        name,
        period,
        days,
        sections,
        channel,
        created_by,
        created_at,
        updated_at,
    ) = r;
    ReportTemplate {
        id,
        tenant_id,
        spec: TemplateSpec {
            key,
            name,
            period: OwnPeriod::from_columns(&period, days),
            sections: sections.iter().filter_map(|s| Section::parse(s)).collect(),
            channel,
        },
        created_by,
        created_at,
        updated_at,
    }
}

/// `spec`'s sections as stored.
fn sections(spec: &TemplateSpec) -> Vec<&'static str> {
    spec.sections.iter().map(|s| s.as_str()).collect()
}

super::owned_rows! {
    "report_templates", id: ReportTemplateId;
    /// How many report templates the organisation has.
    count;
    /// Deletes a template; false when the organisation has none with `id`. A
    /// template a schedule uses violates [`SCHEDULE_CONSTRAINT`].
    delete;
}

/// Creates a template.
#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    spec: &TemplateSpec,
    created_by: &str,
) -> Result<ReportTemplate, sqlx::Error> {
    let (period, days) = spec.period.columns();
    let sections = sections(spec);
    let r = sqlx::query!(
        r#"insert into report_templates
             (id, tenant_id, key, name, period, period_days, sections, channel, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning id as "id: ReportTemplateId", tenant_id as "tenant_id: TenantId", key, name, period, period_days, sections, channel,
             created_by, created_at, updated_at"#,
        ReportTemplateId::new().0,
        tenant_id.0,
        &spec.key,
        &spec.name,
        period,
        days,
        sections.as_slice() as &[&str],
        spec.channel.as_deref(),
        created_by,
    )
    .fetch_one(db)
    .await?;
    Ok(of(row!(r)))
}

/// A page of the organisation's templates in id (creation) order, after
/// `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    after: Option<ReportTemplateId>,
    limit: i64,
) -> Result<Vec<ReportTemplate>, sqlx::Error> {
    let rows = sqlx::query!(
        r#"select id as "id: ReportTemplateId", tenant_id as "tenant_id: TenantId", key, name, period, period_days, sections, channel,
             created_by, created_at, updated_at
         from report_templates
         where tenant_id = $1 and ($2::uuid is null or id > $2)
         order by id limit $3"#,
        tenant_id.0,
        after.map(|id| id.0),
        limit,
    )
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| of(row!(r))).collect())
}

/// One template of the organisation, by id.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ReportTemplateId,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select id as "id: ReportTemplateId", tenant_id as "tenant_id: TenantId", key, name, period, period_days, sections, channel,
             created_by, created_at, updated_at
         from report_templates where tenant_id = $1 and id = $2"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| of(row!(r))))
}

/// One template of the organisation, by id or key.
#[tracing::instrument(skip_all)]
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id_or_key: &str,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let id = Uuid::parse_str(id_or_key).ok();
    let row = sqlx::query!(
        r#"select id as "id: ReportTemplateId", tenant_id as "tenant_id: TenantId", key, name, period, period_days, sections, channel,
             created_by, created_at, updated_at
         from report_templates
         where tenant_id = $1 and (id = $2 or ($2 is null and key = $3))"#,
        tenant_id.0,
        id,
        id_or_key,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| of(row!(r))))
}

/// Replaces a template.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ReportTemplateId,
    spec: &TemplateSpec,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let (period, days) = spec.period.columns();
    let sections = sections(spec);
    let row = sqlx::query!(
        r#"update report_templates
         set key = $3, name = $4, period = $5, period_days = $6, sections = $7, channel = $8
         where tenant_id = $1 and id = $2
         returning id as "id: ReportTemplateId", tenant_id as "tenant_id: TenantId", key, name, period, period_days, sections, channel,
             created_by, created_at, updated_at"#,
        tenant_id.0,
        id.0,
        &spec.key,
        &spec.name,
        period,
        days,
        sections.as_slice() as &[&str],
        spec.channel.as_deref(),
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| of(row!(r))))
}

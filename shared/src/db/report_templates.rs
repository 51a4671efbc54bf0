//! Report templates of an organisation's own ([`crate::reports::own`]).
//! Every function takes the organisation first; another organisation's
//! template is not found.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    domain::TenantId,
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
    pub id: Uuid,
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
    Uuid,
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

const COLUMNS: &str = "id, tenant_id, key, name, period, period_days, sections, channel, \
                       created_by, created_at, updated_at";

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

fn sections(spec: &TemplateSpec) -> Vec<&'static str> {
    spec.sections.iter().map(|s| s.as_str()).collect()
}

/// How many report templates the organisation has.
#[tracing::instrument(skip_all)]
pub async fn count(db: impl PgExecutor<'_>, tenant_id: TenantId) -> Result<i64, sqlx::Error> {
    super::count_owned(db, "report_templates", tenant_id).await
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
    let row: Row = sqlx::query_as(&format!(
        "insert into report_templates
             (id, tenant_id, key, name, period, period_days, sections, channel, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning {COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(tenant_id)
    .bind(&spec.key)
    .bind(&spec.name)
    .bind(period)
    .bind(days)
    .bind(sections(spec))
    .bind(&spec.channel)
    .bind(created_by)
    .fetch_one(db)
    .await?;
    Ok(of(row))
}

/// A page of the organisation's templates in id (creation) order, after
/// `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<ReportTemplate>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from report_templates
         where tenant_id = $1 and ($2::uuid is null or id > $2)
         order by id limit $3"
    ))
    .bind(tenant_id)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(of).collect())
}

/// One template of the organisation, by id.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let row: Option<Row> = super::get_owned(db, COLUMNS, "report_templates", tenant_id, id).await?;
    Ok(row.map(of))
}

/// One template of the organisation, by id or key.
#[tracing::instrument(skip_all)]
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id_or_key: &str,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let id = Uuid::parse_str(id_or_key).ok();
    let row: Option<Row> = sqlx::query_as(&format!(
        "select {COLUMNS} from report_templates
         where tenant_id = $1 and (id = $2 or ($2 is null and key = $3))"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(id_or_key)
    .fetch_optional(db)
    .await?;
    Ok(row.map(of))
}

/// Replaces a template.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
    spec: &TemplateSpec,
) -> Result<Option<ReportTemplate>, sqlx::Error> {
    let (period, days) = spec.period.columns();
    let row: Option<Row> = sqlx::query_as(&format!(
        "update report_templates
         set key = $3, name = $4, period = $5, period_days = $6, sections = $7, channel = $8
         where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(&spec.key)
    .bind(&spec.name)
    .bind(period)
    .bind(days)
    .bind(sections(spec))
    .bind(&spec.channel)
    .fetch_optional(db)
    .await?;
    Ok(row.map(of))
}

/// Deletes a template; false when the organisation has none with `id`. A
/// template a schedule uses violates [`SCHEDULE_CONSTRAINT`].
#[tracing::instrument(skip_all)]
pub async fn delete(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    super::delete_owned(db, "report_templates", tenant_id, id).await
}

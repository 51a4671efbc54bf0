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

/// Binds `spec`'s fields, from its key to its channel, in the order
/// [`insert`] and [`update`] number them.
fn bind_spec<'q, Q: super::Bind<'q>>(query: Q, spec: &'q TemplateSpec) -> Q {
    let (period, days) = spec.period.columns();
    let sections: Vec<&'static str> = spec.sections.iter().map(|s| s.as_str()).collect();
    query
        .bind_next(&spec.key)
        .bind_next(&spec.name)
        .bind_next(period)
        .bind_next(days)
        .bind_next(sections)
        .bind_next(&spec.channel)
}

super::owned_rows! {
    "report_templates", id: Uuid;
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
    let sql = format!(
        "insert into report_templates
             (id, tenant_id, key, name, period, period_days, sections, channel, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         returning {COLUMNS}"
    );
    let query = sqlx::query_as(&sql).bind(Uuid::now_v7()).bind(tenant_id);
    let row: Row = bind_spec(query, spec)
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
    let sql = format!(
        "update report_templates
         set key = $3, name = $4, period = $5, period_days = $6, sections = $7, channel = $8
         where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    );
    let query = sqlx::query_as(&sql).bind(tenant_id).bind(id);
    let row: Option<Row> = bind_spec(query, spec).fetch_optional(db).await?;
    Ok(row.map(of))
}

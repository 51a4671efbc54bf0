//! Report schedules: an organisation's reports sent by email on a cron
//! schedule ([`crate::reports::schedule`]).
//!
//! `next_run_at` is the next firing. The scheduler locks due rows with
//! `for update skip locked`, sends each and moves `next_run_at` on in the
//! same transaction ([`take_due`], [`mark_run`]), so a firing sends once
//! however many schedulers run.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::domain::{ReportScheduleId, ReportTemplateId, TenantId};

/// A schedule.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReportSchedule {
    /// Its id.
    pub id: ReportScheduleId,
    /// Its organisation.
    pub tenant_id: TenantId,
    /// A name for people.
    pub name: String,
    /// `daily_summary`, `weekly_performance`, `monthly_comprehensive`, or
    /// `own` with [`ReportSchedule::report_template_id`].
    pub template: String,
    /// The organisation's own report template, for `own`.
    pub report_template_id: Option<ReportTemplateId>,
    /// `csv` or `json`: how the report is laid out in the email.
    pub format: String,
    /// Five-field cron expression.
    pub cron: String,
    /// IANA time zone the cron expression is read in.
    pub timezone: String,
    /// Users of the organisation who receive it.
    pub recipients: Vec<Uuid>,
    /// Whether it fires.
    pub enabled: bool,
    /// Its next firing.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The firing it last sent.
    pub last_run_for: Option<DateTime<Utc>>,
    /// The email notifications of the last firing.
    pub last_notification_ids: Vec<Uuid>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A schedule's settings.
#[derive(Debug, Clone)]
pub struct ScheduleSpec {
    /// A name for people.
    pub name: String,
    /// The report template: a built-in one's name, or `own`.
    pub template: String,
    /// The organisation's own template, for `own`.
    pub report_template_id: Option<ReportTemplateId>,
    /// `csv` or `json`.
    pub format: String,
    /// Checked cron expression.
    pub cron: String,
    /// Checked time zone.
    pub timezone: String,
    /// Checked recipients (users of the organisation).
    pub recipients: Vec<Uuid>,
    /// Whether it fires.
    pub enabled: bool,
    /// Its next firing.
    pub next_run_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, tenant_id, name, template, report_template_id, format, cron, timezone, recipients, enabled,
     next_run_at, last_run_for, last_notification_ids, created_by, created_at, updated_at";

/// Creates a schedule.
#[tracing::instrument(skip_all)]
pub async fn insert(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    spec: &ScheduleSpec,
    created_by: &str,
) -> Result<ReportSchedule, sqlx::Error> {
    sqlx::query_as!(
        ReportSchedule,
        r#"insert into report_schedules
             (id, tenant_id, name, template, format, cron, timezone, recipients, enabled, next_run_at,
              report_template_id, created_by)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         returning id as "id: ReportScheduleId", tenant_id as "tenant_id: TenantId", name, template,
             report_template_id as "report_template_id: ReportTemplateId", format, cron,
             timezone, recipients, enabled, next_run_at, last_run_for, last_notification_ids,
             created_by, created_at, updated_at"#,
        ReportScheduleId::new().0,
        tenant_id.0,
        &spec.name,
        &spec.template,
        &spec.format,
        &spec.cron,
        &spec.timezone,
        &spec.recipients,
        spec.enabled,
        spec.next_run_at,
        spec.report_template_id.map(|id| id.0),
        created_by,
    )
    .fetch_one(db)
    .await
}

/// The organisation's schedules, oldest first (at most 1,000).
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<ReportSchedule>, sqlx::Error> {
    sqlx::query_as!(
        ReportSchedule,
        r#"select id as "id: ReportScheduleId", tenant_id as "tenant_id: TenantId", name, template,
             report_template_id as "report_template_id: ReportTemplateId", format, cron,
             timezone, recipients, enabled, next_run_at, last_run_for, last_notification_ids,
             created_by, created_at, updated_at
         from report_schedules where tenant_id = $1
         order by created_at, id limit 1000"#,
        tenant_id.0,
    )
    .fetch_all(db)
    .await
}

super::owned_rows! {
    "report_schedules", id: ReportScheduleId;
    /// How many schedules the organisation has.
    count;
    /// One schedule of the organisation.
    get -> ReportSchedule, COLUMNS;
    /// Deletes a schedule; false when the organisation has none with `id`.
    delete;
}

/// Replaces a schedule's settings.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ReportScheduleId,
    spec: &ScheduleSpec,
) -> Result<Option<ReportSchedule>, sqlx::Error> {
    sqlx::query_as!(
        ReportSchedule,
        r#"update report_schedules
         set name = $3, template = $4, format = $5, cron = $6, timezone = $7, recipients = $8,
             enabled = $9, next_run_at = $10, report_template_id = $11
         where tenant_id = $1 and id = $2
         returning id as "id: ReportScheduleId", tenant_id as "tenant_id: TenantId", name, template,
             report_template_id as "report_template_id: ReportTemplateId", format, cron,
             timezone, recipients, enabled, next_run_at, last_run_for, last_notification_ids,
             created_by, created_at, updated_at"#,
        tenant_id.0,
        id.0,
        &spec.name,
        &spec.template,
        &spec.format,
        &spec.cron,
        &spec.timezone,
        &spec.recipients,
        spec.enabled,
        spec.next_run_at,
        spec.report_template_id.map(|id| id.0),
    )
    .fetch_optional(db)
    .await
}

/// Locks and returns schedules of every organisation due at `now`;
/// schedules another scheduler holds are skipped. Call within a
/// transaction and [`mark_run`] each before committing.
#[tracing::instrument(skip_all)]
pub async fn take_due(
    db: impl PgExecutor<'_>,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<ReportSchedule>, sqlx::Error> {
    sqlx::query_as!(
        ReportSchedule,
        r#"select id as "id: ReportScheduleId", tenant_id as "tenant_id: TenantId", name, template,
             report_template_id as "report_template_id: ReportTemplateId", format, cron,
             timezone, recipients, enabled, next_run_at, last_run_for, last_notification_ids,
             created_by, created_at, updated_at
         from report_schedules
         where enabled and next_run_at <= $1
         order by next_run_at limit $2
         for update skip locked"#,
        now,
        limit,
    )
    .fetch_all(db)
    .await
}

/// Records that the firing `ran_for` was sent as `notifications`, and the
/// next firing.
#[tracing::instrument(skip_all)]
pub async fn mark_run(
    db: impl PgExecutor<'_>,
    id: ReportScheduleId,
    ran_for: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
    notifications: &[Uuid],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update report_schedules
         set last_run_for = $2, next_run_at = $3, last_notification_ids = $4
         where id = $1",
        id.0,
        ran_for,
        next,
        notifications as &[Uuid],
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Of `ids`, the active users of the organisation.
#[tracing::instrument(skip_all)]
pub async fn active_users(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "select id from users where tenant_id = $1 and id = any($2) and status = 'active' order by id",
        tenant_id.0,
        ids as &[Uuid],
    )
    .fetch_all(db)
    .await
}

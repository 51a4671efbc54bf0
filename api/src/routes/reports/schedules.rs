//! `/api/v1/reports/schedules`: reports an organisation's admins have
//! emailed on a cron schedule to users of the organisation
//! ([`shared::reports::deliver`]).
//!
//! A schedule belongs to the caller's organisation (a platform admin's:
//! the platform organisation); another organisation's id answers 404.
//! Every change is audited.

use crate::extract::PathId;
use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::json;
use shared::{
    db::report_schedules::{self as store, ReportSchedule, ScheduleSpec},
    domain::ReportScheduleId,
};
use uuid::Uuid;

use crate::{
    AppState, access::Principal, body::StrictJson, error::ApiError, extract::AdminCtx,
    routes::ApiTags, services::reports,
};

/// Schedules an organisation may have.
const MAX_SCHEDULES: i64 = 100;

/// The report schedule endpoints.
#[derive(Debug)]
pub struct ReportSchedulesApi;

/// A schedule to create, or a schedule's replacement.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ReportScheduleBody {
    /// A name for people (1 to 200 characters).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// `daily_summary` (the 24 hours before each firing),
    /// `weekly_performance` (7 days), `monthly_comprehensive` (one
    /// calendar month), or the id or key of one of the organisation's own
    /// report templates (its period before each firing, its sections and
    /// channel; another organisation's: 422).
    #[oai(validator(pattern = "^([a-z][a-z0-9_]{0,63}|[0-9a-fA-F-]{36})$"))]
    pub template: String,
    /// How the report is laid out in the email body: `csv` (default) or
    /// `json`.
    #[oai(validator(pattern = "^(csv|json)$"))]
    pub format: Option<String>,
    /// Five fields: minute hour day-of-month month day-of-week, e.g.
    /// `0 7 * * MON`. Firing more than once in an hour is refused (422).
    #[oai(validator(min_length = 9, max_length = 200))]
    pub cron: String,
    /// The IANA time zone the cron expression is read in (default `UTC`).
    #[oai(validator(min_length = 1, max_length = 64))]
    pub timezone: Option<String>,
    /// Ids of active users of the organisation (1 to 50) who receive it
    /// by email.
    #[oai(validator(min_items = 1, max_items = 50))]
    pub recipients: Vec<Uuid>,
    /// Whether it fires (default true).
    pub enabled: Option<bool>,
}

/// A schedule.
#[derive(Debug, Object)]
pub struct ReportScheduleView {
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub organization_id: String,
    /// Its name.
    pub name: String,
    /// The report template: a built-in one's name, or the id of the
    /// organisation's own template.
    pub template: String,
    /// `csv` or `json`.
    pub format: String,
    /// The cron expression.
    pub cron: String,
    /// Its time zone.
    pub timezone: String,
    /// The users who receive it.
    pub recipients: Vec<Uuid>,
    /// Whether it fires.
    pub enabled: bool,
    /// The next firing (absent when disabled).
    pub next_run_at: Option<DateTime<Utc>>,
    /// The firing last sent.
    pub last_run_for: Option<DateTime<Utc>>,
    /// The email notifications of the last firing (their status is at
    /// `/api/v1/notifications/{id}`).
    pub last_notification_ids: Vec<Uuid>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<ReportSchedule> for ReportScheduleView {
    fn from(s: ReportSchedule) -> Self {
        Self {
            id: s.id.0,
            organization_id: s.tenant_id.to_string(),
            name: s.name,
            template: s.report_template_id.map_or(s.template, |id| id.to_string()),
            format: s.format,
            cron: s.cron,
            timezone: s.timezone,
            recipients: s.recipients,
            enabled: s.enabled,
            next_run_at: s.next_run_at,
            last_run_for: s.last_run_for,
            last_notification_ids: s.last_notification_ids,
            created_by: s.created_by,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

/// Schedules.
#[derive(Debug, Object)]
pub struct ReportScheduleList {
    /// Oldest first (an organisation has at most 100).
    pub items: Vec<ReportScheduleView>,
}

/// Answers with a schedule.
#[derive(Debug, ApiResponse)]
pub enum ScheduleResponse {
    /// The schedule.
    #[oai(status = 200)]
    Ok(Json<ReportScheduleView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<ReportScheduleView>),
}

/// Answers with schedules.
#[derive(Debug, ApiResponse)]
pub enum ScheduleListResponse {
    /// The schedules.
    #[oai(status = 200)]
    Ok(Json<ReportScheduleList>),
}

/// Answers a deletion.
#[derive(Debug, ApiResponse)]
pub enum ScheduleDeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

/// The schedule `body` asks for, checked for `p`'s organisation
/// ([`reports::check_schedule`]).
async fn check(
    state: &AppState,
    p: &Principal,
    body: ReportScheduleBody,
    now: DateTime<Utc>,
) -> Result<ScheduleSpec, ApiError> {
    let input = reports::ScheduleInput {
        name: body.name,
        template: body.template,
        format: body.format,
        cron: body.cron,
        timezone: body.timezone,
        recipients: body.recipients,
        enabled: body.enabled,
    };
    reports::check_schedule(state, p.caller.tenant_id, input, now).await
}

fn details(spec: &ScheduleSpec) -> serde_json::Value {
    json!({"template": spec.template, "report_template_id": spec.report_template_id, "format": spec.format, "cron": spec.cron,
           "timezone": spec.timezone, "recipients": spec.recipients.len(), "enabled": spec.enabled})
}

#[OpenApi(prefix_path = "/api/v1/reports/schedules", tag = "ApiTags::Reports")]
impl ReportSchedulesApi {
    /// The organisation's report schedules (admins).
    #[oai(path = "/", method = "get", operation_id = "reports.schedules.list")]
    async fn list(&self, cx: AdminCtx<'_>) -> Result<ScheduleListResponse, ApiError> {
        let p = cx.principal().await?;
        let items = store::list(&cx.state.pool, p.caller.tenant_id).await?;
        Ok(ScheduleListResponse::Ok(Json(ReportScheduleList {
            items: items.into_iter().map(Into::into).collect(),
        })))
    }

    /// Create a schedule (admins). 400 names each malformed field (an
    /// unknown template or format, a cron expression that is not five valid
    /// fields, an unknown time zone); 422 for a schedule firing more than
    /// once an hour, or recipients who are not active users of the
    /// organisation; 409 past 100 schedules.
    #[oai(path = "/", method = "post", operation_id = "reports.schedules.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<ReportScheduleBody>,
    ) -> Result<ScheduleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_schedule.create", "report_schedule");
        let spec = check(cx.state, &p, body.0, Utc::now()).await?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        if store::count(&mut *tx, tenant).await? >= MAX_SCHEDULES {
            return Err(ApiError::Conflict(format!(
                "an organisation has at most {MAX_SCHEDULES} report schedules"
            )));
        }
        let s = store::insert(&mut *tx, tenant, &spec, &p.caller.actor).await?;
        act.audit(&mut *tx, Some(tenant), s.id, details(&spec))
            .await?;
        tx.commit().await?;
        Ok(ScheduleResponse::Created(Json(s.into())))
    }

    /// One schedule (admins).
    #[oai(path = "/:id", method = "get", operation_id = "reports.schedules.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportScheduleId>>,
    ) -> Result<ScheduleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_schedule.get", "report_schedule");
        let sid = act.id(&id.0, "report schedule").await?;
        let found = store::get(&cx.state.pool, p.caller.tenant_id, sid).await?;
        let s = act.found(&id.0, "report schedule", found).await?;
        Ok(ScheduleResponse::Ok(Json(s.into())))
    }

    /// Replace a schedule (admins): every field as on creation; the next
    /// firing is computed again from now.
    #[oai(
        path = "/:id",
        method = "put",
        operation_id = "reports.schedules.update"
    )]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportScheduleId>>,
        body: StrictJson<ReportScheduleBody>,
    ) -> Result<ScheduleResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_schedule.update", "report_schedule");
        let sid = act.id(&id.0, "report schedule").await?;
        let spec = check(cx.state, &p, body.0, Utc::now()).await?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let found = store::update(&mut *tx, tenant, sid, &spec).await?;
        let s = act.found(&id.0, "report schedule", found).await?;
        act.audit(&mut *tx, Some(tenant), s.id, details(&spec))
            .await?;
        tx.commit().await?;
        Ok(ScheduleResponse::Ok(Json(s.into())))
    }

    /// Delete a schedule (admins).
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "reports.schedules.delete"
    )]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportScheduleId>>,
    ) -> Result<ScheduleDeletedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_schedule.delete", "report_schedule");
        let sid = act.id(&id.0, "report schedule").await?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let deleted = store::delete(&mut *tx, tenant, sid).await?;
        act.found(&id.0, "report schedule", deleted.then_some(()))
            .await?;
        act.audit(&mut *tx, Some(tenant), sid, json!({})).await?;
        tx.commit().await?;
        Ok(ScheduleDeletedResponse::Deleted)
    }
}

//! `/api/v1/reports/templates`: report templates of an organisation's own
//! ([`shared::reports::own`]): a period, the sections to keep and an
//! optional channel, used by `GET /api/v1/reports?template=` (its id or
//! key) and by report schedules.
//!
//! A template belongs to the caller's organisation (a platform admin's:
//! the platform organisation); another organisation's id answers 404.
//! Every change is audited; refusals too.

use crate::extract::{Cursor, PageSize, PathId, page};
use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::json;
use shared::{
    db::report_templates::{self as store, ReportTemplate},
    domain::ReportTemplateId,
    reports::own::{TemplateInput, TemplateSpec},
};
use uuid::Uuid;

use crate::{
    body::StrictJson,
    error::{ApiError, InvalidParam},
    extract::AdminCtx,
    routes::ApiTags,
};

/// Templates an organisation may have.
const MAX_TEMPLATES: i64 = 100;

/// The report template endpoints.
#[derive(Debug)]
pub struct ReportTemplatesApi;

/// A template to create, or a template's replacement.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct ReportTemplateBody {
    /// Its key, used as `?template=` (1 to 64 lower-case letters, digits
    /// and underscores, starting with a letter; not a built-in template's
    /// name). Unique in the organisation (409).
    #[oai(validator(pattern = "^[a-z][a-z0-9_]{0,63}$"))]
    pub key: String,
    /// A name for people (1 to 200 characters).
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// `day` (24 hours), `week` (7 days) or `month` (one calendar month)
    /// before the report's end; or give `period_days` instead.
    #[oai(validator(pattern = "^(day|week|month)$"))]
    pub period: Option<String>,
    /// Instead of `period`: this many days (1 to 366) before the report's
    /// end.
    #[oai(validator(minimum(value = "1"), maximum(value = "366")))]
    pub period_days: Option<i64>,
    /// The sections to keep beside the totals (default: every one), each
    /// once: `channels`, `providers`, `templates`, `categories`,
    /// `busiest_hours`, `days`, `comparison`, `trend`.
    #[oai(validator(
        min_items = 1,
        max_items = 8,
        unique_items = true,
        pattern = "^(channels|providers|templates|categories|busiest_hours|days|comparison|trend)$"
    ))]
    pub sections: Option<Vec<String>>,
    /// Narrows the report to one channel (`email`, `sms`, `push`,
    /// `whatsapp`, `inapp`).
    #[oai(validator(pattern = "^(email|sms|push|whatsapp|inapp)$"))]
    pub channel: Option<String>,
}

/// A template.
#[derive(Debug, Object)]
pub struct ReportTemplateView {
    /// Its id.
    pub id: Uuid,
    /// Its organisation.
    pub organization_id: String,
    /// Its key.
    pub key: String,
    /// Its name.
    pub name: String,
    /// `day`, `week`, `month` or `days`.
    pub period: String,
    /// The days of `days`.
    pub period_days: Option<i32>,
    /// The sections it keeps, in a report's order.
    pub sections: Vec<String>,
    /// The channel it narrows to.
    pub channel: Option<String>,
    /// Who created it.
    pub created_by: String,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<ReportTemplate> for ReportTemplateView {
    fn from(t: ReportTemplate) -> Self {
        let (period, period_days) = t.spec.period.columns();
        Self {
            id: t.id.0,
            organization_id: t.tenant_id.to_string(),
            key: t.spec.key,
            name: t.spec.name,
            period: period.to_owned(),
            period_days,
            sections: t
                .spec
                .sections
                .iter()
                .map(|s| s.as_str().to_owned())
                .collect(),
            channel: t.spec.channel,
            created_by: t.created_by,
            created_at: t.created_at,
            updated_at: t.updated_at,
        }
    }
}

/// A page of templates.
#[derive(Debug, Object)]
pub struct ReportTemplatePage {
    /// Oldest first.
    pub items: Vec<ReportTemplateView>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Answers with a template.
#[derive(Debug, ApiResponse)]
pub enum TemplateResponse {
    /// The template.
    #[oai(status = 200)]
    Ok(Json<ReportTemplateView>),
    /// Created.
    #[oai(status = 201)]
    Created(Json<ReportTemplateView>),
}

/// Answers with templates.
#[derive(Debug, ApiResponse)]
pub enum TemplatePageResponse {
    /// The templates.
    #[oai(status = 200)]
    Ok(Json<ReportTemplatePage>),
}

/// Answers a deletion.
#[derive(Debug, ApiResponse)]
pub enum TemplateDeletedResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

fn check(body: ReportTemplateBody) -> Result<TemplateSpec, ApiError> {
    TemplateInput {
        key: Some(body.key),
        name: Some(body.name),
        period: body.period,
        period_days: body.period_days,
        sections: body.sections,
        channel: body.channel,
    }
    .check()
    .map_err(|problems| {
        ApiError::Invalid(
            problems
                .into_iter()
                .map(|(name, reason)| InvalidParam {
                    name: name.into(),
                    reason,
                })
                .collect(),
        )
    })
}

fn details(spec: &TemplateSpec) -> serde_json::Value {
    let (period, days) = spec.period.columns();
    json!({"key": spec.key, "period": period, "period_days": days,
           "sections": spec.sections.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
           "channel": spec.channel})
}

#[OpenApi(prefix_path = "/api/v1/reports/templates", tag = "ApiTags::Reports")]
impl ReportTemplatesApi {
    /// The organisation's own report templates (admins), oldest first.
    #[oai(path = "/", method = "get", operation_id = "reports.templates.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        /// From `next_cursor` of the previous page.
        cursor: Query<Option<Cursor<ReportTemplateId>>>,
        /// Templates per page.
        limit: Query<PageSize>,
    ) -> Result<TemplatePageResponse, ApiError> {
        let p = cx.principal().await?;
        let after = cursor.0.map(Cursor::get).transpose()?;
        let rows = store::list(&cx.state.pool, p.caller.tenant_id, after, limit.0.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit.0, |r| r.id);
        Ok(TemplatePageResponse::Ok(Json(ReportTemplatePage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Create a template (admins). 400 names each malformed field (a key
    /// that is a built-in template's name, both or neither of `period` and
    /// `period_days`, an unknown or repeated section, an unknown channel);
    /// 409 for a key the organisation already has, or past 100 templates.
    #[oai(path = "/", method = "post", operation_id = "reports.templates.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<ReportTemplateBody>,
    ) -> Result<TemplateResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_template.create", "report_template");
        let spec = check(body.0)?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let count = store::count(&mut *tx, tenant).await?;
        if count >= MAX_TEMPLATES {
            return Err(ApiError::Conflict(format!(
                "an organisation has at most {MAX_TEMPLATES} report templates"
            )));
        }
        let t = store::insert(&mut *tx, tenant, &spec, &p.caller.actor).await?;
        act.audit(&mut *tx, Some(tenant), t.id, details(&spec))
            .await?;
        tx.commit().await?;
        Ok(TemplateResponse::Created(Json(t.into())))
    }

    /// One template (admins).
    #[oai(path = "/:id", method = "get", operation_id = "reports.templates.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportTemplateId>>,
    ) -> Result<TemplateResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_template.get", "report_template");
        let tid = act.id(&id.0, "report template").await?;
        let found = store::get(&cx.state.pool, p.caller.tenant_id, tid).await?;
        let t = act.found(&id.0, "report template", found).await?;
        Ok(TemplateResponse::Ok(Json(t.into())))
    }

    /// Replace a template (admins): every field as on creation. Schedules
    /// using it send the new shape from their next firing.
    #[oai(
        path = "/:id",
        method = "put",
        operation_id = "reports.templates.update"
    )]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportTemplateId>>,
        body: StrictJson<ReportTemplateBody>,
    ) -> Result<TemplateResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_template.update", "report_template");
        let tid = act.id(&id.0, "report template").await?;
        let spec = check(body.0)?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let found = store::update(&mut *tx, tenant, tid, &spec).await?;
        let t = act.found(&id.0, "report template", found).await?;
        act.audit(&mut *tx, Some(tenant), t.id, details(&spec))
            .await?;
        tx.commit().await?;
        Ok(TemplateResponse::Ok(Json(t.into())))
    }

    /// Delete a template (admins); 409 while a schedule uses it.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "reports.templates.delete"
    )]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ReportTemplateId>>,
    ) -> Result<TemplateDeletedResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "report_template.delete", "report_template");
        let tid = act.id(&id.0, "report template").await?;
        let tenant = p.caller.tenant_id;
        let mut tx = cx.state.pool.begin().await?;
        let deleted = store::delete(&mut *tx, tenant, tid).await?;
        act.found(&id.0, "report template", deleted.then_some(()))
            .await?;
        act.audit(&mut *tx, Some(tenant), tid, json!({})).await?;
        tx.commit().await?;
        Ok(TemplateDeletedResponse::Deleted)
    }
}

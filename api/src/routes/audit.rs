//! `/api/v1/admin/audit`: the audit log, newest first, for admins.
//!
//! An organisation admin sees its organisation's rows; a platform admin sees
//! every row, or one organisation's with `organization_id`. `GET /export`
//! gives the same rows as CSV, with cells that a spreadsheet would run as a
//! formula (`=`, `+`, `-`, `@`, tab, carriage return) prefixed with `'`.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Query,
    payload::{Json, PlainText},
    validation::{MaxLength, MinLength, Pattern},
};
use serde_json::Value;
use shared::db::audit;

use crate::{
    error::ApiError,
    extract::AdminCtx,
    extract::{Cursor, PageSize, Params},
    routes::ApiTags,
    services::audit as service,
};

/// The audit endpoints.
#[derive(Debug)]
pub struct AuditApi;

/// One audit row.
#[derive(Debug, Object)]
pub struct AuditView {
    /// Its id.
    pub id: i64,
    /// The organisation concerned.
    pub organization_id: Option<String>,
    /// Who acted: `api_key:<id>`, `user:<id>`, `cli`, `invitation:<id>`.
    pub actor: String,
    /// What they did, e.g. `invitation.create`.
    pub action: String,
    /// The kind of resource.
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    /// The request that did it.
    pub request_id: Option<String>,
    /// Extra facts (never secrets or tokens).
    pub details: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

impl From<audit::Row> for AuditView {
    fn from(r: audit::Row) -> Self {
        Self {
            id: r.id,
            organization_id: r.tenant_id.map(|t| t.to_string()),
            actor: r.actor,
            action: r.action,
            resource_type: r.resource_type,
            resource_id: r.resource_id,
            result: r.result,
            request_id: r.request_id,
            details: r.details,
            created_at: r.created_at,
        }
    }
}

/// A page of rows.
#[derive(Debug, Object)]
pub struct AuditPage {
    /// Rows, newest first.
    pub items: Vec<AuditView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Answers with a page.
#[derive(Debug, ApiResponse)]
pub enum PageResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<AuditPage>),
}

/// Answers with CSV.
#[derive(Debug, ApiResponse)]
pub enum CsvResponse {
    /// `text/csv`, a header row then one row per record.
    #[oai(status = 200, content_type = "text/csv; charset=utf-8")]
    Ok(
        PlainText<String>,
        #[oai(header = "Content-Disposition")] String,
    ),
}

crate::query_params! {
    /// The query filters.
    pub struct Filters {
        organization_id: Option<String>,
        actor: Option<String> where [MinLength::new(1), MaxLength::new(200)],
        action: Option<String> where [MinLength::new(1), MaxLength::new(200)],
        resource_type: Option<String> where [MinLength::new(1), MaxLength::new(200)],
        resource_id: Option<String> where [MinLength::new(1), MaxLength::new(200)],
        result: Option<String> where [Pattern::new("^(success|failure)$")],
        since: Option<DateTime<Utc>>,
        until: Option<DateTime<Utc>>,
    }
}

impl From<Filters> for service::Filters {
    fn from(f: Filters) -> Self {
        Self {
            organization_id: f.organization_id,
            actor: f.actor,
            action: f.action,
            resource_type: f.resource_type,
            resource_id: f.resource_id,
            result: f.result,
            since: f.since,
            until: f.until,
        }
    }
}

#[OpenApi(prefix_path = "/api/v1/admin/audit", tag = "ApiTags::Admin")]
impl AuditApi {
    /// Audit rows, newest first, filtered by `organization_id` (platform
    /// admins), `actor`, `action` (exact, or a prefix ending in `.`),
    /// `resource_type`, `resource_id`, `result`, `since` and `until`.
    #[oai(path = "/", method = "get", operation_id = "audit.list")]
    async fn list(
        &self,
        cx: AdminCtx<'_>,
        filters: Params<Filters>,
        cursor: Query<Option<Cursor<i64>>>,
        limit: Query<PageSize>,
    ) -> Result<PageResponse, ApiError> {
        let p = cx.principal().await?;
        let (rows, next_cursor) =
            service::list(cx.state, &p, filters.0.into(), cursor.0, limit.0).await?;
        Ok(PageResponse::Ok(Json(AuditPage {
            items: rows.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// The same rows as CSV (at most 10,000, newest first). The export is
    /// itself audited.
    #[oai(path = "/export", method = "get", operation_id = "audit.export")]
    async fn export(
        &self,
        cx: AdminCtx<'_>,
        filters: Params<Filters>,
    ) -> Result<CsvResponse, ApiError> {
        let p = cx.principal().await?;
        let out = service::export(cx.state, &p, cx.request_id, filters.0.into()).await?;
        Ok(CsvResponse::Ok(
            PlainText(out),
            "attachment; filename=\"audit.csv\"".to_owned(),
        ))
    }
}

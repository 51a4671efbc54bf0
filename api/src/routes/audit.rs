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
use shared::{
    db::{audit, scope::Reach},
    domain::{CsvQuoting, csv_cell},
};

use crate::{
    access::Principal,
    error::ApiError,
    extract::AdminCtx,
    extract::{Cursor, PageSize, Params, page},
    routes::ApiTags,
};

/// Most rows in one export.
pub const MAX_EXPORT: i64 = 10_000;

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

fn filter<'a>(
    p: &Principal,
    f: &'a Filters,
    before_id: Option<i64>,
) -> Result<(Reach, audit::Filter<'a>), ApiError> {
    for (name, v) in [
        ("actor", &f.actor),
        ("action", &f.action),
        ("resource_type", &f.resource_type),
        ("resource_id", &f.resource_id),
    ] {
        if v.as_ref()
            .is_some_and(|s| s.is_empty() || s.chars().count() > 200)
        {
            return Err(ApiError::invalid(name, "must be 1 to 200 characters"));
        }
    }
    if f.result
        .as_deref()
        .is_some_and(|r| r != "success" && r != "failure")
    {
        return Err(ApiError::invalid("result", "must be success or failure"));
    }
    let reach = p.reach_of(f.organization_id.as_deref())?;
    Ok((
        reach,
        audit::Filter {
            actor: f.actor.as_deref(),
            action: f.action.as_deref(),
            resource_type: f.resource_type.as_deref(),
            resource_id: f.resource_id.as_deref(),
            result: f.result.as_deref(),
            since: f.since,
            until: f.until,
            before_id,
        },
    ))
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
        let before = cursor.0.map(Cursor::get).transpose()?;
        let (reach, filter) = filter(&p, &filters.0, before)?;
        let rows = audit::list(&cx.state.pool, reach, filter, limit.0.fetch()).await?;
        let (rows, next_cursor) = page(rows, limit.0, |r| r.id);
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
        let act = cx.acting(&p, "audit.export", "audit_log");
        let (reach, filter) = filter(&p, &filters.0, None)?;
        let rows = audit::list(&cx.state.pool, reach, filter, MAX_EXPORT).await?;
        let mut out = String::from(
            "id,created_at,organization_id,actor,action,resource_type,resource_id,result,request_id,details\r\n",
        );
        for r in &rows {
            let cells = [
                r.id.to_string(),
                r.created_at.to_rfc3339(),
                r.tenant_id.map(|t| t.to_string()).unwrap_or_default(),
                r.actor.clone(),
                r.action.clone(),
                r.resource_type.clone(),
                r.resource_id.clone().unwrap_or_default(),
                r.result.clone(),
                r.request_id.clone().unwrap_or_default(),
                r.details.to_string(),
            ];
            let line: Vec<String> = cells
                .iter()
                .map(|c| csv_cell(c, CsvQuoting::Always))
                .collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
        }
        act.audit(
            &cx.state.pool,
            None,
            "export",
            serde_json::json!({"rows": rows.len()}),
        )
        .await?;
        Ok(CsvResponse::Ok(
            PlainText(out),
            "attachment; filename=\"audit.csv\"".to_owned(),
        ))
    }
}

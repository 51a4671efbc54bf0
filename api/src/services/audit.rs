//! The audit log: which rows a filter names, for whom, and exporting them
//! as CSV (the export itself audited). The routes in
//! [`crate::routes::audit`] parse requests and shape answers.

use chrono::{DateTime, Utc};
use shared::{
    db::{audit, scope::Reach},
    domain::{CsvQuoting, csv_cell},
};

use crate::{
    AppState,
    access::Principal,
    error::ApiError,
    extract::{Cursor, PageSize, page},
    middleware::RequestId,
};

/// Most rows in one export.
pub const MAX_EXPORT: i64 = 10_000;

/// The filters of the audit log, as sent.
#[derive(Debug)]
pub struct Filters {
    /// The organisation (platform admins).
    pub organization_id: Option<String>,
    /// Who acted.
    pub actor: Option<String>,
    /// The action, exact or a prefix ending in `.`.
    pub action: Option<String>,
    /// The resource type.
    pub resource_type: Option<String>,
    /// The resource's id.
    pub resource_id: Option<String>,
    /// `success` or `failure`.
    pub result: Option<String>,
    /// From.
    pub since: Option<DateTime<Utc>>,
    /// Until.
    pub until: Option<DateTime<Utc>>,
}

/// Whose rows `f` names for `p`, and the db filter of `f` (rows before
/// `before_id`).
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

/// One page (`limit`, before `cursor`) of the rows `f` names for `p`,
/// newest first, with the cursor of the next. The cursor is checked before
/// the filters.
pub async fn list(
    state: &AppState,
    p: &Principal,
    f: Filters,
    cursor: Option<Cursor<i64>>,
    limit: PageSize,
) -> Result<(Vec<audit::Row>, Option<String>), ApiError> {
    let before = cursor.map(Cursor::get).transpose()?;
    let (reach, filter) = filter(p, &f, before)?;
    let rows = audit::list(&state.pool, reach, filter, limit.fetch()).await?;
    Ok(page(rows, limit, |r| r.id))
}

/// The rows `f` names for `p` (at most [`MAX_EXPORT`], newest first) as
/// CSV, a header row first, cells quoted and any a spreadsheet would run
/// as a formula prefixed; the export audited as `audit.export`.
pub async fn export(
    state: &AppState,
    p: &Principal,
    request_id: &RequestId,
    f: Filters,
) -> Result<String, ApiError> {
    let act = p.at(state, request_id).acting("audit.export", "audit_log");
    let (reach, filter) = filter(p, &f, None)?;
    let rows = audit::list(&state.pool, reach, filter, MAX_EXPORT).await?;
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
        &state.pool,
        None,
        "export",
        serde_json::json!({"rows": rows.len()}),
    )
    .await?;
    Ok(out)
}

//! The append-only audit log. The table refuses updates and deletes (a
//! trigger), so this module only inserts and reads.

use serde_json::Value;
use sqlx::PgExecutor;

use crate::domain::TenantId;

/// One audit record. Hold no secrets, tokens or message content in `details`.
#[derive(Debug, Clone)]
pub struct Entry<'a> {
    /// The tenant concerned, if any.
    pub tenant_id: Option<TenantId>,
    /// Who acted: `api_key:<id>`, `cli`, `user:<id>`.
    pub actor: &'a str,
    /// What they did, e.g. `tenant.create`.
    pub action: &'a str,
    /// The kind of thing acted on.
    pub resource_type: &'a str,
    /// Its id.
    pub resource_id: Option<String>,
    /// `success` or `failure`.
    pub result: &'a str,
    /// The request that did it.
    pub request_id: Option<&'a str>,
    /// Extra, non-sensitive facts.
    pub details: Value,
}

/// Appends a record.
#[tracing::instrument(skip_all)]
pub async fn record(db: impl PgExecutor<'_>, entry: Entry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "insert into audit_log (tenant_id, actor, action, resource_type, resource_id, result, request_id, details)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
        entry.tenant_id as _,
        entry.actor,
        entry.action,
        entry.resource_type,
        entry.resource_id,
        entry.result,
        entry.request_id,
        entry.details,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A stored audit record.
#[derive(Debug, Clone)]
pub struct Row {
    /// Its id (ascending in time).
    pub id: i64,
    /// The tenant concerned.
    pub tenant_id: Option<TenantId>,
    /// Who acted.
    pub actor: String,
    /// What they did.
    pub action: String,
    /// The kind of thing acted on.
    pub resource_type: String,
    /// Its id.
    pub resource_id: Option<String>,
    /// `success` or `failure`.
    pub result: String,
    /// The request that did it.
    pub request_id: Option<String>,
    /// Extra facts.
    pub details: Value,
    /// When.
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Filters for [`list`]; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct Filter<'a> {
    /// Exact actor.
    pub actor: Option<&'a str>,
    /// Exact action, or a prefix ending in `.` (`invitation.`).
    pub action: Option<&'a str>,
    /// Exact resource type.
    pub resource_type: Option<&'a str>,
    /// Exact resource id.
    pub resource_id: Option<&'a str>,
    /// `success` or `failure`.
    pub result: Option<&'a str>,
    /// At or after.
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Before.
    pub until: Option<chrono::DateTime<chrono::Utc>>,
    /// Older than this id (newest first paging).
    pub before_id: Option<i64>,
}

/// Records within `reach` newest first (an operator's platform-wide reach
/// includes the platform's own, which name no organisation).
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    reach: super::scope::Reach,
    f: Filter<'_>,
    limit: i64,
) -> Result<Vec<Row>, sqlx::Error> {
    sqlx::query_as!(
        Row,
        r#"select id, tenant_id as "tenant_id: TenantId", actor, action, resource_type,
            resource_id, result, request_id, details, created_at
         from audit_log
         where ($1::uuid is null or tenant_id = $1) and ($2::text is null or actor = $2)
           and ($3::text is null or action = $3 or (right($3, 1) = '.' and starts_with(action, $3)))
           and ($4::text is null or resource_type = $4) and ($5::text is null or resource_id = $5)
           and ($6::text is null or result = $6) and ($7::timestamptz is null or created_at >= $7)
           and ($8::timestamptz is null or created_at < $8) and ($9::bigint is null or id < $9)
         order by id desc limit $10"#,
        reach.param(),
        f.actor,
        f.action,
        f.resource_type,
        f.resource_id,
        f.result,
        f.since,
        f.until,
        f.before_id,
        limit,
    )
    .fetch_all(db)
    .await
}

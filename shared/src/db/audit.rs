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
    sqlx::query(
        "insert into audit_log (tenant_id, actor, action, resource_type, resource_id, result, request_id, details)
         values ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(entry.tenant_id)
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.resource_type)
    .bind(entry.resource_id)
    .bind(entry.result)
    .bind(entry.request_id)
    .bind(entry.details)
    .execute(db)
    .await?;
    Ok(())
}

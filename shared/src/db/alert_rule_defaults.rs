//! Which organisations got the default alert rules
//! (`alert_rule_defaults`, [`crate::alerts::rules::defaults`]): each gets
//! them once, so a rule an administrator deleted stays deleted.

use sqlx::PgExecutor;

use crate::domain::TenantId;

/// Records that `tenant` (when it exists) gets its default rules now;
/// returns it if it never had them, else nothing.
pub async fn claim(
    db: impl PgExecutor<'_>,
    tenant: TenantId,
) -> Result<Vec<TenantId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"insert into alert_rule_defaults (tenant_id)
         select id from tenants where id = $1
         on conflict do nothing returning tenant_id as "tenant_id: TenantId""#,
        tenant.0,
    )
    .fetch_all(db)
    .await
}

/// Records that every organisation that never had its default rules gets
/// them now; returns those organisations. Works across tenants.
pub async fn claim_across_tenants(db: impl PgExecutor<'_>) -> Result<Vec<TenantId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"insert into alert_rule_defaults (tenant_id)
         select id from tenants
         on conflict do nothing returning tenant_id as "tenant_id: TenantId""#,
    )
    .fetch_all(db)
    .await
}

//! Tenants: the organisations on the platform.

use sqlx::PgExecutor;

use crate::domain::TenantId;

/// A tenant row.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Its id.
    pub id: TenantId,
    /// Display name.
    pub name: String,
    /// `active` or `suspended`.
    pub status: String,
}

/// Creates an active tenant.
#[tracing::instrument(skip_all)]
pub async fn create(db: impl PgExecutor<'_>, name: &str) -> Result<Tenant, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        r#"insert into tenants (id, name) values ($1, $2)
         returning id as "id: TenantId", name, status"#,
        TenantId::new().0,
        name,
    )
    .fetch_one(db)
    .await
}

/// Reads a tenant.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        r#"select id as "id: TenantId", name, status from tenants where id = $1"#,
        tenant_id.0,
    )
    .fetch_optional(db)
    .await
}

/// Finds a tenant by exact name (the first created, if several share it).
#[tracing::instrument(skip_all)]
pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as!(
        Tenant,
        r#"select id as "id: TenantId", name, status from tenants
         where name = $1 order by created_at limit 1"#,
        name,
    )
    .fetch_optional(db)
    .await
}

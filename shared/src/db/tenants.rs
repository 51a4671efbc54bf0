//! Tenants: the organisations on the platform.

use sqlx::PgExecutor;

use crate::domain::TenantId;

/// A tenant row.
#[derive(Debug, Clone, sqlx::FromRow)]
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
    sqlx::query_as("insert into tenants (id, name) values ($1, $2) returning id, name, status")
        .bind(TenantId::new())
        .bind(name)
        .fetch_one(db)
        .await
}

/// Reads a tenant.
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as("select id, name, status from tenants where id = $1")
        .bind(tenant_id)
        .fetch_optional(db)
        .await
}

/// Finds a tenant by exact name (the first created, if several share it).
#[tracing::instrument(skip_all)]
pub async fn find_by_name(
    db: impl PgExecutor<'_>,
    name: &str,
) -> Result<Option<Tenant>, sqlx::Error> {
    sqlx::query_as(
        "select id, name, status from tenants where name = $1 order by created_at limit 1",
    )
    .bind(name)
    .fetch_optional(db)
    .await
}

//! Subscribers: a tenant's end users, known by the id their identity provider
//! gives them (the JWT subject), who have an in-app inbox.

use sqlx::PgExecutor;

use crate::domain::{SubscriberId, TenantId};

/// The subscriber of `tenant_id` known as `external_id`, created on first use.
#[tracing::instrument(skip_all)]
pub async fn upsert(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<SubscriberId, sqlx::Error> {
    sqlx::query_scalar(
        "insert into subscribers (id, tenant_id, external_id) values ($1, $2, $3)
         on conflict (tenant_id, external_id) do update set external_id = excluded.external_id
         returning id",
    )
    .bind(SubscriberId::new())
    .bind(tenant_id)
    .bind(external_id)
    .fetch_one(db)
    .await
}

/// The subscriber of `tenant_id` known as `external_id`, if there is one.
#[tracing::instrument(skip_all)]
pub async fn find(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    external_id: &str,
) -> Result<Option<SubscriberId>, sqlx::Error> {
    sqlx::query_scalar("select id from subscribers where tenant_id = $1 and external_id = $2")
        .bind(tenant_id)
        .bind(external_id)
        .fetch_optional(db)
        .await
}

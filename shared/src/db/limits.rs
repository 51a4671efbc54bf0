//! An organisation's request rate-limit overrides and send quotas. Each set
//! is replaced whole by its admin route, in one transaction.

use sqlx::{PgConnection, PgExecutor};

use crate::domain::TenantId;

/// One class's overridden limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// `send`, `read`, `write` or `upload`.
    pub class: String,
    /// Sustained requests per second.
    pub per_sec: f64,
    /// Requests at once.
    pub burst: i32,
}

/// The organisation's overrides, by class name.
pub async fn overrides(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<Override>, sqlx::Error> {
    sqlx::query_as!(
        Override,
        "select class, per_sec, burst from rate_limit_overrides
         where tenant_id = $1 order by class",
        tenant_id as _,
    )
    .fetch_all(db)
    .await
}

/// Replaces the organisation's overrides with `set`.
pub async fn replace_overrides(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    set: &[Override],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from rate_limit_overrides where tenant_id = $1",
        tenant_id as _,
    )
    .execute(&mut *tx)
    .await?;
    for o in set {
        sqlx::query!(
            "insert into rate_limit_overrides (tenant_id, class, per_sec, burst)
             values ($1, $2, $3, $4)",
            tenant_id as _,
            o.class,
            o.per_sec,
            o.burst,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// One send quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Quota {
    /// The channel counted.
    pub channel: String,
    /// `day` (UTC) or `month`.
    pub period: String,
    /// Notifications allowed per period.
    pub quota: i64,
}

/// The organisation's send quotas.
pub async fn quotas(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<Quota>, sqlx::Error> {
    sqlx::query_as!(
        Quota,
        "select channel, period, quota from send_quotas
         where tenant_id = $1 order by channel, period",
        tenant_id as _,
    )
    .fetch_all(db)
    .await
}

/// Replaces the organisation's quotas with `set`.
pub async fn replace_quotas(
    tx: &mut PgConnection,
    tenant_id: TenantId,
    set: &[Quota],
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "delete from send_quotas where tenant_id = $1",
        tenant_id as _,
    )
    .execute(&mut *tx)
    .await?;
    for q in set {
        sqlx::query!(
            "insert into send_quotas (tenant_id, channel, period, quota) values ($1, $2, $3, $4)",
            tenant_id as _,
            q.channel,
            q.period,
            q.quota,
        )
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Whether the organisation already accepted a send under idempotency key
/// `key`: its replay answers as the first time and takes no quota.
pub async fn send_accepted(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from notifications where tenant_id = $1 and idempotency_key = $2)
             as "exists!""#,
        tenant_id as _,
        key,
    )
    .fetch_one(db)
    .await
}

/// Whether the organisation already created a batch under idempotency key
/// `key`.
pub async fn batch_accepted(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from batches where tenant_id = $1 and idempotency_key = $2)
             as "exists!""#,
        tenant_id as _,
        key,
    )
    .fetch_one(db)
    .await
}

/// Whether the batch already holds chunk `seq`.
pub async fn chunk_accepted(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    batch_id: crate::domain::BatchId,
    seq: i32,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from batch_chunks where tenant_id = $1 and batch_id = $2 and seq = $3)
             as "exists!""#,
        tenant_id as _,
        batch_id as _,
        seq,
    )
    .fetch_one(db)
    .await
}

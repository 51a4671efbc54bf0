//! What operators read and change about the fleet in Postgres: provider
//! configs across organisations with their operator pause, and which
//! scheduler replica won each cron tick.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::{
    db::{
        providers::{COLUMNS, ProviderConfig},
        scope::Reach,
    },
    domain::TenantId,
};

/// A provider config and its organisation.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TenantProvider {
    /// The organisation.
    pub tenant_id: TenantId,
    /// The config.
    #[sqlx(flatten)]
    pub config: ProviderConfig,
}

/// Provider configs within `reach` (every organisation's, platform-wide), by
/// organisation, channel and failover order; at most `limit`.
#[tracing::instrument(skip_all)]
pub async fn providers(
    db: impl PgExecutor<'_>,
    reach: Reach,
    limit: i64,
) -> Result<Vec<TenantProvider>, sqlx::Error> {
    sqlx::query_as(&format!(
        "select tenant_id, {COLUMNS} from provider_configs
         where $1::uuid is null or tenant_id = $1
         order by tenant_id, channel, priority, name
         limit $2"
    ))
    .bind(reach.param())
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Pauses config `id` of `tenant_id` on behalf of `by` (kept as it was
/// when already paused), or resumes it when `by` is `None`. `None` when
/// the organisation has no such config.
#[tracing::instrument(skip_all)]
pub async fn set_paused(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: crate::domain::ProviderId,
    by: Option<&str>,
) -> Result<Option<ProviderConfig>, sqlx::Error> {
    sqlx::query_as(&format!(
        "update provider_configs
         set paused_at = case when $3::text is null then null else coalesce(paused_at, now()) end,
             paused_by = case when $3::text is null then null else coalesce(paused_by, $3) end
         where tenant_id = $1 and id = $2
         returning {COLUMNS}"
    ))
    .bind(tenant_id)
    .bind(id)
    .bind(by)
    .fetch_optional(db)
    .await
}

/// Every provider config's id and channel, across organisations (for the
/// open-circuit gauge).
#[tracing::instrument(skip_all)]
pub async fn provider_channels(
    db: impl PgExecutor<'_>,
) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    let rows = sqlx::query!("select id, channel from provider_configs order by id")
        .fetch_all(db)
        .await?;
    Ok(rows.into_iter().map(|r| (r.id, r.channel)).collect())
}

/// Notes that scheduler replica `by` won the tick `name@scheduled_for`.
#[tracing::instrument(skip_all)]
pub async fn note_tick_winner(
    db: impl PgExecutor<'_>,
    name: &str,
    scheduled_for: DateTime<Utc>,
    by: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update cron_ticks set claimed_by = $3 where name = $1 and scheduled_for = $2",
        name,
        scheduled_for,
        by,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// A cron entry's latest tick.
#[derive(Debug, Clone)]
pub struct LastTick {
    /// The entry.
    pub name: String,
    /// The tick's time.
    pub scheduled_for: DateTime<Utc>,
    /// When its job reached Redis.
    pub enqueued_at: Option<DateTime<Utc>>,
    /// The scheduler replica that won it.
    pub claimed_by: Option<String>,
}

/// The latest tick of each entry in `names` that has one.
#[tracing::instrument(skip_all)]
pub async fn last_ticks(
    db: impl PgExecutor<'_>,
    names: &[String],
) -> Result<Vec<LastTick>, sqlx::Error> {
    sqlx::query_as!(
        LastTick,
        r#"select t.name as "name!", t.scheduled_for as "scheduled_for!",
                t.enqueued_at as "enqueued_at?", t.claimed_by as "claimed_by?"
         from unnest($1::text[]) as n (name)
         cross join lateral (
             select name, scheduled_for, enqueued_at, claimed_by from cron_ticks
             where cron_ticks.name = n.name
             order by scheduled_for desc limit 1
         ) t"#,
        names,
    )
    .fetch_all(db)
    .await
}

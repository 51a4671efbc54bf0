//! Operations: the fleet — worker processes, the scheduler, providers,
//! real-time connections and the in-process caches.
//!
//! Workers, the scheduler, real-time statistics and caches are the
//! platform's: platform admins only (403 for anyone else). Provider configs
//! belong to organisations: an organisation's admin sees and pauses its own
//! (another organisation's config answers 404), a platform admin every
//! organisation's. Every action is audited, refusals included.
//!
//! What the processes report lives in Redis ([`shared::fleet`]): workers'
//! heartbeats, each API instance's WebSocket and cache counters, the
//! dispatcher's last sweep and the providers' shared state. Cache commands
//! reach every API instance through Redis pub/sub ([`crate::fleet`]).

mod providers;
mod views;

use chrono::Utc;
use poem_openapi::{
    OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::json;
use shared::{config::CronJob, db, fleet, jobs::QueueName};

pub use self::{
    providers::{ProviderItem, ProvidersView},
    views::*,
};
use crate::{AppState, body::StrictJson, error::ApiError, extract::AdminCtx};

/// The fleet endpoints.
#[derive(Debug)]
pub struct OpsFleetApi;

fn unavailable(e: redis::RedisError) -> ApiError {
    ApiError::Unavailable(format!("Redis cannot be read: {e}"))
}

/// The queue a cron job's ticks go to.
fn cron_queue(job: CronJob) -> QueueName {
    match job {
        CronJob::RemindBaaExpiry => QueueName::BaaReminder,
        CronJob::PollUpsShipments => QueueName::UpsPoll,
        CronJob::VacuumQueues
        | CronJob::RedactExpiredContent
        | CronJob::PruneEvents
        | CronJob::ExpireInvitations => QueueName::Maintenance,
    }
}

#[OpenApi(prefix_path = "/api/v1", tag = "crate::routes::ApiTags::Operations")]
impl OpsFleetApi {
    /// The worker processes alive now (their heartbeat has not expired):
    /// queues served with their concurrency, jobs in flight, when each
    /// started and last reported (platform admins).
    #[oai(
        path = "/ops/workers",
        method = "get",
        operation_id = "ops.workers.list"
    )]
    async fn workers(&self, cx: AdminCtx<'_>) -> Result<Json<WorkersView>, ApiError> {
        cx.principal().await?.require_platform()?;
        let mut conn = cx.state.queues.connection();
        let workers = fleet::live_workers(&mut conn, cx.state.queues.prefix())
            .await
            .map_err(unavailable)?;
        Ok(Json(WorkersView {
            items: workers.into_iter().map(Into::into).collect(),
        }))
    }

    /// The scheduler: every cron entry of `jobs.toml` with its last and next
    /// tick and the scheduler replica that enqueued the last one, and the
    /// dispatcher's last sweep (platform admins).
    #[oai(
        path = "/ops/scheduler",
        method = "get",
        operation_id = "ops.scheduler.get"
    )]
    async fn scheduler(&self, cx: AdminCtx<'_>) -> Result<Json<SchedulerView>, ApiError> {
        cx.principal().await?.require_platform()?;
        let names: Vec<String> = cx.state.jobs.cron.iter().map(|e| e.name.clone()).collect();
        let ticks = db::fleet::last_ticks(&cx.state.pool, &names).await?;
        let now = Utc::now();
        let entries = cx
            .state
            .jobs
            .cron
            .iter()
            .map(|e| {
                let last = ticks.iter().find(|t| t.name == e.name);
                SchedulerEntry {
                    name: e.name.clone(),
                    // The schedule's Debug form is its source expression.
                    schedule: format!("{:?}", e.schedule),
                    job: e.job.as_str().to_owned(),
                    queue: cron_queue(e.job).as_str().to_owned(),
                    last_tick: last.map(|t| t.scheduled_for),
                    last_enqueued_at: last.and_then(|t| t.enqueued_at),
                    next_tick: e.schedule.schedule().after(&now).next(),
                    last_enqueued_by: last.and_then(|t| t.claimed_by.clone()),
                }
            })
            .collect();
        let mut conn = cx.state.queues.connection();
        let sweep = fleet::last_sweep(&mut conn, cx.state.queues.prefix())
            .await
            .map_err(unavailable)?;
        Ok(Json(SchedulerView {
            entries,
            dispatcher: DispatcherView {
                last_sweep: sweep.as_ref().map(|s| s.at),
                by: sweep.map(|s| s.by),
            },
        }))
    }

    /// Provider configs with their operator pause and live state: circuit
    /// breaker, rate tokens left, a provider's 429 pause and the last error.
    /// An organisation's admin sees its own; a platform admin every
    /// organisation's, or one with `organization_id`.
    #[oai(
        path = "/ops/providers",
        method = "get",
        operation_id = "ops.providers.list"
    )]
    async fn providers(
        &self,
        cx: AdminCtx<'_>,
        /// Only this organisation's configs (platform admins; an
        /// organisation's admin may name only its own).
        organization_id: Query<Option<String>>,
    ) -> Result<Json<ProvidersView>, ApiError> {
        let p = cx.principal().await?;
        let scope = providers::listing_scope(&p, organization_id.0.as_deref())?;
        let items = providers::list(cx.state, scope).await?;
        Ok(Json(ProvidersView { items }))
    }

    /// Pause a provider config: sends skip it, failing over to the next
    /// config of the channel, or waiting (never failing) when none is left,
    /// until it is resumed. Every worker sees it at its next send. Pausing
    /// a paused config keeps its first pause.
    #[oai(
        path = "/ops/providers/:id/pause",
        method = "post",
        operation_id = "ops.providers.pause"
    )]
    async fn pause_provider(
        &self,
        cx: AdminCtx<'_>,
        /// The provider config's id.
        id: Path<String>,
    ) -> Result<Json<ProviderItem>, ApiError> {
        set_paused(&cx, &id.0, true).await
    }

    /// Resume a paused provider config: sends use it again.
    #[oai(
        path = "/ops/providers/:id/resume",
        method = "post",
        operation_id = "ops.providers.resume"
    )]
    async fn resume_provider(
        &self,
        cx: AdminCtx<'_>,
        /// The provider config's id.
        id: Path<String>,
    ) -> Result<Json<ProviderItem>, ApiError> {
        set_paused(&cx, &id.0, false).await
    }

    /// WebSocket statistics of every live API instance: connections,
    /// subscriptions by topic kind and messages per second (platform admins).
    #[oai(
        path = "/ops/realtime",
        method = "get",
        operation_id = "ops.realtime.get"
    )]
    async fn realtime(&self, cx: AdminCtx<'_>) -> Result<Json<RealtimeView>, ApiError> {
        cx.principal().await?.require_platform()?;
        Ok(Json(realtime_view(cx.state).await?))
    }

    /// WebSocket statistics (platform admins): the same as
    /// `GET /api/v1/ops/realtime`.
    #[oai(
        path = "/admin/websocket/statistics",
        method = "get",
        operation_id = "admin.websocket.statistics"
    )]
    async fn websocket_statistics(&self, cx: AdminCtx<'_>) -> Result<Json<RealtimeView>, ApiError> {
        cx.principal().await?.require_platform()?;
        Ok(Json(realtime_view(cx.state).await?))
    }

    /// The API's in-process caches, added up over every live instance:
    /// entries, hits, misses and how stale an entry may be (platform admins).
    #[oai(path = "/ops/caches", method = "get", operation_id = "ops.caches.list")]
    async fn caches(&self, cx: AdminCtx<'_>) -> Result<Json<CachesView>, ApiError> {
        cx.principal().await?.require_platform()?;
        Ok(Json(CachesView {
            caches: caches_view(cx.state).await?,
        }))
    }

    /// Clear a cache on every API instance (`api_keys` or `templates`): the
    /// next lookups read Postgres (platform admins).
    #[oai(
        path = "/ops/caches/:name/clear",
        method = "post",
        operation_id = "ops.caches.clear"
    )]
    async fn clear_cache(
        &self,
        cx: AdminCtx<'_>,
        /// `api_keys` or `templates`.
        name: Path<String>,
    ) -> Result<Json<CacheView>, ApiError> {
        cache_action(&cx, &name.0, None).await
    }

    /// Drop one organisation's entries from a cache on every API instance
    /// (platform admins); the tag is the organisation's id.
    #[oai(
        path = "/ops/caches/:name/invalidate",
        method = "post",
        operation_id = "ops.caches.invalidate"
    )]
    async fn invalidate_cache(
        &self,
        cx: AdminCtx<'_>,
        /// `api_keys` or `templates`.
        name: Path<String>,
        body: StrictJson<InvalidateInput>,
    ) -> Result<Json<CacheView>, ApiError> {
        let tag = body.0.tag;
        cache_action(&cx, &name.0, Some(&tag)).await
    }
}

/// Pauses or resumes config `raw` for its organisation, audited.
async fn set_paused(
    cx: &AdminCtx<'_>,
    raw: &str,
    pause: bool,
) -> Result<Json<ProviderItem>, ApiError> {
    let action = if pause {
        "provider.pause"
    } else {
        "provider.resume"
    };
    let p = cx.principal().await?;
    let act = cx.acting(&p, action, "provider_config");
    let result = providers::target(cx.state, &p, raw).await;
    let (tenant, config) = act.refused(Some(raw), result).await?;
    let mut tx = cx.state.pool.begin().await?;
    let by = pause.then_some(p.caller.actor.as_str());
    let updated = db::fleet::set_paused(&mut *tx, tenant, config.id, by)
        .await?
        .ok_or(ApiError::NotFound("provider config"))?;
    act.audit(&mut *tx, Some(tenant), config.id, json!({"name": updated.name, "channel": updated.channel, "was_paused": config.paused_at.is_some()}))
    .await?;
    tx.commit().await?;
    let mut items = providers::items(cx.state, vec![(tenant, updated)]).await?;
    Ok(Json(items.remove(0)))
}

/// Every live instance's report, this one's fresh.
async fn instances(state: &AppState) -> Result<Vec<fleet::ApiInstance>, ApiError> {
    let mut conn = state.queues.connection();
    let mut all = fleet::live_instances(&mut conn, state.queues.prefix())
        .await
        .map_err(unavailable)?;
    let own = state.instance.report(state, false);
    all.retain(|i| i.instance != own.instance);
    all.push(own);
    all.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(all)
}

async fn realtime_view(state: &AppState) -> Result<RealtimeView, ApiError> {
    let all = instances(state).await?;
    let connections = all.iter().map(|i| i.connections).sum();
    Ok(RealtimeView {
        connections,
        instances: all.into_iter().map(Into::into).collect(),
    })
}

async fn caches_view(state: &AppState) -> Result<Vec<CacheView>, ApiError> {
    let all = instances(state).await?;
    Ok(crate::fleet::CACHES
        .iter()
        .map(|name| {
            let mut view = CacheView {
                name: (*name).to_owned(),
                entries: 0,
                hits: 0,
                misses: 0,
                staleness_secs: 0,
                instances: 0,
            };
            for c in all
                .iter()
                .flat_map(|i| &i.caches)
                .filter(|c| c.name == *name)
            {
                view.entries += c.entries;
                view.hits += c.hits;
                view.misses += c.misses;
                view.staleness_secs = view.staleness_secs.max(c.staleness_secs);
                view.instances += 1;
            }
            view
        })
        .collect())
}

/// Clears cache `name` (or organisation `tag`'s entries) here and on every
/// other instance, audited.
async fn cache_action(
    cx: &AdminCtx<'_>,
    name: &str,
    tag: Option<&str>,
) -> Result<Json<CacheView>, ApiError> {
    let action = if tag.is_some() {
        "cache.invalidate"
    } else {
        "cache.clear"
    };
    let p = cx.principal().await?;
    let act = cx.acting(&p, action, "cache");
    let allowed = p.require_platform().and_then(|()| {
        if crate::fleet::CACHES.contains(&name) {
            Ok(())
        } else {
            Err(ApiError::NotFound("cache"))
        }
    });
    act.refused(Some(name), allowed).await?;
    let tenant = tag
        .map(|t| {
            t.parse::<shared::domain::TenantId>()
                .map_err(|_| ApiError::invalid("tag", "is not an organisation id"))
        })
        .transpose()?;
    crate::fleet::apply(cx.state, name, tenant);
    let command = fleet::CacheCommand {
        cache: name.to_owned(),
        tag: tenant.map(|t| t.0),
        from: cx.state.instance.name().to_owned(),
    };
    let told = crate::fleet::broadcast(cx.state, &command).await;
    if let Err(error) = &told {
        tracing::warn!(%error, "cannot tell the other instances to clear the cache");
    }
    act.audit(
        &cx.state.pool,
        None,
        name,
        json!({"tag": tenant.map(|t| t.to_string()), "other_instances_told": told.is_ok()}),
    )
    .await?;
    let view = caches_view(cx.state)
        .await?
        .into_iter()
        .find(|c| c.name == name)
        .ok_or(ApiError::NotFound("cache"))?;
    Ok(Json(view))
}

//! `PollUpsShipments`: keeping shipments' tracking current.
//!
//! A cron tick's job is a **sweep**: it claims every shipment due at the tick
//! (in Postgres, `FOR UPDATE SKIP LOCKED`, see `shared::db::shipments`) and
//! pushes them in groups of one tenant. A **group** takes the claims of its
//! tick, so a repeated or overlapping job polls nothing twice, then polls
//! each shipment:
//!
//! * the tenant's circuit breaker is asked first (its UPS config's id in the
//!   shared [`Guard`](crate::providers::guard::Guard)); an open circuit
//!   reschedules without calling UPS;
//! * a token from the platform-wide UPS bucket keeps the request rate under
//!   `queues.ups_poll.rate_limit` across all workers;
//! * the answer's events are appended once each, the status and ETA
//!   updated, and the next poll scheduled by
//!   [`shared::shipments::poll_interval`] from the tick's time;
//! * on a status change, in the same transaction: notices to the assigned
//!   user and the creator ("out for delivery", "delivered", "exception"),
//!   the `shipment.updated` webhook deliveries; after the commit the
//!   `shipment.updated` event on the organisation's `org` topic.
//!
//! Failures are recorded on the shipment and rescheduled in Postgres; the
//! job itself always succeeds.

use std::{
    collections::BTreeMap,
    sync::{Arc, LazyLock},
    time::{Duration, Instant},
};

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use shared::{
    config::RateLimit,
    db::{providers as provider_db, shipments as db},
    domain::{Channel, ProviderId, ShipmentId, TenantId},
    events::{self, Event},
    jobs::{Job, PollUpsShipments, QueueName},
    notices::{self, Notice},
    providers::{ProviderKind, ProviderSpec, UpsCredentials},
    shipments::{ShipmentStatus, failure_backoff, poll_interval},
    templates::Template,
};
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    WorkerState,
    providers::{chain, guard::Admission},
    tracking::ups::TrackError,
};

/// The Redis bucket every worker takes a token from before calling UPS.
pub const UPS_BUCKET: Uuid = Uuid::from_u128(0x7570_7300_0000_4000_8000_0000_0000_0001);

/// Shipments one group job carries at most.
pub const GROUP_SIZE: usize = 50;

/// Shipments one sweep query claims at a time.
const CLAIM_BATCH: usize = 1_000;

/// The longest a poll waits for a rate-limit token before rescheduling.
const MAX_TOKEN_WAIT: Duration = Duration::from_secs(30);

/// Runs one `PollUpsShipments` job.
pub async fn handle(
    job: PollUpsShipments,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("job", queue = %job.queue(), job = PollUpsShipments::NAME, job_id = %task_id, tenant_id = ?job.tenant_id, shipments = job.shipments.len());
    async move {
        let queue = job.queue().as_str();
        metrics::counter!("jobs_started_total", "queue" => queue).increment(1);
        let started = Instant::now();
        let result = match job.tenant_id {
            Some(tenant_id) if !job.shipments.is_empty() => {
                poll_group(&state, tenant_id, &job.shipments, job.scheduled_for).await
            }
            _ => sweep(&state, job.scheduled_for).await,
        };
        metrics::histogram!("job_duration_seconds", "queue" => queue)
            .record(started.elapsed().as_secs_f64());
        crate::jobs::count_job(&state, job.queue(), job.tenant_id, result.is_ok(), started);
        match result {
            Ok(n) => {
                metrics::counter!("jobs_succeeded_total", "queue" => queue).increment(1);
                tracing::debug!(n, "ups poll done");
            }
            Err(error) => {
                // Claimed shipments are claimed again once their lease ends.
                metrics::counter!("jobs_failed_total", "queue" => queue).increment(1);
                tracing::error!(error = format!("{error:#}"), "ups poll failed");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Claims the shipments due at `tick` and pushes them in groups. One sweep
/// pushes at most `dispatcher.high_water_mark` groups, so the Redis backlog
/// stays bounded (and clear of the backend's crash above about 8,000 due
/// jobs); what is left stays due for the next tick.
pub async fn sweep(state: &WorkerState, tick: DateTime<Utc>) -> anyhow::Result<usize> {
    let budget = state.jobs.dispatcher.high_water_mark * GROUP_SIZE;
    let mut total = 0;
    while total < budget {
        let claimed = db::claim_due(&state.pool, tick, CLAIM_BATCH.min(budget - total)).await?;
        let n = claimed.len();
        total += n;
        let mut by_tenant: BTreeMap<TenantId, Vec<ShipmentId>> = BTreeMap::new();
        for (tenant, id) in claimed {
            by_tenant.entry(tenant).or_default().push(id);
        }
        let jobs: Vec<PollUpsShipments> = by_tenant
            .into_iter()
            .flat_map(|(tenant_id, ids)| {
                ids.chunks(GROUP_SIZE)
                    .map(|group| PollUpsShipments {
                        scheduled_for: tick,
                        tenant_id: Some(tenant_id),
                        shipments: group.to_vec(),
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        state
            .queues
            .push_all(QueueName::UpsPoll, jobs)
            .await
            .map_err(|e| anyhow::anyhow!("while pushing UPS poll groups: {e}"))?;
        if n < CLAIM_BATCH {
            break;
        }
    }
    Ok(total)
}

/// The tenant's UPS config: its id and opened credentials.
async fn ups_config(
    state: &WorkerState,
    tenant_id: TenantId,
) -> anyhow::Result<Option<(ProviderId, UpsCredentials)>> {
    let Some(config) =
        provider_db::first_of_kind(&state.pool, tenant_id, ProviderKind::Ups).await?
    else {
        return Ok(None);
    };
    match chain::open(state.keyring.as_ref(), tenant_id, &config) {
        Ok(ProviderSpec::Ups(_, credentials)) => Ok(Some((config.id, credentials))),
        Ok(_) => Ok(None),
        Err(why) => {
            tracing::warn!(provider_id = %config.id, %why, "the UPS config cannot be used");
            Ok(None)
        }
    }
}

/// Polls the shipments of `ids` whose claim for `tick` is still there.
pub async fn poll_group(
    state: &WorkerState,
    tenant_id: TenantId,
    ids: &[ShipmentId],
    tick: DateTime<Utc>,
) -> anyhow::Result<usize> {
    let taken = db::take(&state.pool, tenant_id, ids, tick).await?;
    if taken.is_empty() {
        return Ok(0);
    }
    let config = ups_config(state, tenant_id).await?;
    let n = taken.len();
    for shipment in taken {
        if let Err(error) = poll_one(state, tenant_id, config.as_ref(), &shipment, tick).await {
            tracing::error!(shipment_id = %shipment.id, error = format!("{error:#}"), "cannot record a UPS poll");
            // Try again later rather than never.
            let _ = db::record_failure(
                &state.pool,
                tenant_id,
                shipment.id,
                "the poll could not be recorded",
                tick + failure_backoff(shipment.poll_failures as u32 + 1),
                true,
            )
            .await;
        }
    }
    Ok(n)
}

fn chrono_of(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

fn rate_limit(state: &WorkerState) -> RateLimit {
    state
        .jobs
        .queue(QueueName::UpsPoll)
        .rate_limit
        .unwrap_or(RateLimit {
            per_sec: 10,
            burst: 10,
        })
}

async fn poll_one(
    state: &WorkerState,
    tenant_id: TenantId,
    config: Option<&(ProviderId, UpsCredentials)>,
    shipment: &db::Shipment,
    tick: DateTime<Utc>,
) -> anyhow::Result<()> {
    let failures = shipment.poll_failures.max(0) as u32;
    let Some((config_id, credentials)) = config else {
        db::record_failure(
            &state.pool,
            tenant_id,
            shipment.id,
            "the organisation has no UPS credentials (a `ups` provider config)",
            tick + chrono::Duration::hours(1),
            false,
        )
        .await?;
        return Ok(());
    };
    if state
        .guard
        .admit(config_id.0, Duration::from_secs(60))
        .await
        == Admission::Open
    {
        db::record_failure(
            &state.pool,
            tenant_id,
            shipment.id,
            "UPS polls of this organisation are paused after repeated failures",
            tick + chrono_of(state.jobs.circuit_breaker.cooldown()),
            false,
        )
        .await?;
        return Ok(());
    }
    let limit = rate_limit(state);
    loop {
        match state.guard.acquire(UPS_BUCKET, limit).await {
            Ok(()) => break,
            Err(wait) if wait <= MAX_TOKEN_WAIT => tokio::time::sleep(wait).await,
            Err(wait) => {
                db::record_failure(
                    &state.pool,
                    tenant_id,
                    shipment.id,
                    "waiting for the UPS rate limit",
                    tick + chrono_of(wait),
                    false,
                )
                .await?;
                return Ok(());
            }
        }
    }
    let started = Instant::now();
    let answer = state
        .ups
        .track(
            tenant_id,
            *config_id,
            credentials,
            &shipment.tracking_number,
        )
        .await;
    metrics::histogram!("ups_track_seconds").record(started.elapsed().as_secs_f64());
    match answer {
        Ok(tracking) => {
            state.guard.succeeded(config_id.0).await;
            let status = tracking.status.unwrap_or(shipment.status);
            let result = db::PollResult {
                status,
                changed: status != shipment.status,
                eta: tracking.eta,
                last_event: tracking.last_event(),
                next_poll_at: None,
                note: None,
                at: tick,
            };
            record(state, tenant_id, shipment, &tracking.events, result).await
        }
        Err(TrackError::NotFound) => {
            state.guard.succeeded(config_id.0).await;
            let result = db::PollResult {
                status: shipment.status,
                changed: false,
                eta: None,
                last_event: None,
                next_poll_at: None,
                note: Some("UPS has no tracking information for this number yet".into()),
                at: tick,
            };
            record(state, tenant_id, shipment, &[], result).await
        }
        Err(TrackError::RateLimited(wait)) => {
            state.guard.pause(UPS_BUCKET, wait).await;
            let after = wait.max(failure_backoff(failures + 1));
            db::record_failure(
                &state.pool,
                tenant_id,
                shipment.id,
                "UPS asked to slow down (429)",
                tick + chrono_of(after),
                true,
            )
            .await?;
            Ok(())
        }
        Err(TrackError::Transient(why)) => {
            let opened = state.guard.failed(config_id.0).await;
            if opened {
                tracing::warn!(provider_id = %config_id, "UPS circuit opened for the organisation");
            }
            db::record_failure(
                &state.pool,
                tenant_id,
                shipment.id,
                &why,
                tick + failure_backoff(failures + 1),
                true,
            )
            .await?;
            Ok(())
        }
    }
}

/// Writes a poll's answer, and on a status change its notices, webhook
/// deliveries and real-time event.
async fn record(
    state: &WorkerState,
    tenant_id: TenantId,
    shipment: &db::Shipment,
    events: &[db::ShipmentEvent],
    mut result: db::PollResult,
) -> anyhow::Result<()> {
    let tick = result.at;
    let since_change = if result.changed {
        chrono::Duration::zero()
    } else {
        tick - shipment.status_changed_at.unwrap_or(shipment.created_at)
    };
    result.next_poll_at = poll_interval(result.status, since_change.to_std().unwrap_or_default())
        .map(|d| tick + chrono_of(d));
    let mut tx = state.pool.begin().await?;
    db::append_events(&mut tx, tenant_id, shipment.id, events).await?;
    let Some(updated) = db::record_poll(&mut tx, tenant_id, shipment.id, &result).await? else {
        // Deleted meanwhile.
        return Ok(());
    };
    let mut published = Vec::new();
    if result.changed {
        let data = json!({
            "shipment_id": updated.id,
            "carrier": updated.carrier,
            "status": updated.status,
            "previous_status": shipment.status,
            "eta": updated.eta,
            "last_event": updated.last_event.as_ref().map(|j| &j.0),
            "changed_at": tick,
        });
        notify(state, &mut tx, &updated, tick).await?;
        db::enqueue_webhook(
            &mut tx,
            tenant_id,
            &data,
            state.jobs.queue(QueueName::Webhook).max_attempts,
        )
        .await?;
        published.push(Event {
            tenant_id,
            topic: "org".into(),
            kind: "shipment.updated".into(),
            id: None,
            data,
            at: Utc::now(),
        });
    }
    tx.commit().await?;
    if let Err(error) = events::publish(&state.queues, &published).await {
        tracing::warn!(%error, "cannot publish the shipment event");
    }
    Ok(())
}

fn template(key: &str, subject: &str, text: &str) -> Template {
    notices::builtin(json!({
        "key": key,
        "name": subject,
        "default_locale": "en",
        "default_channels": ["inapp", "email"],
        "locales": {"en": {
            "email": {"subject": subject, "text": text},
            "inapp": {"title": subject, "body": text, "action_url": "/shipments/{{shipment_id}}"}
        }}
    }))
}

static OUT_FOR_DELIVERY: LazyLock<Template> = LazyLock::new(|| {
    template(
        "platform.shipment.out_for_delivery",
        "Shipment out for delivery",
        "Shipment {{reference}} ({{tracking_number}}) is out for delivery.",
    )
});
static DELIVERED: LazyLock<Template> = LazyLock::new(|| {
    template(
        "platform.shipment.delivered",
        "Shipment delivered",
        "Shipment {{reference}} ({{tracking_number}}) was delivered.",
    )
});
static EXCEPTION: LazyLock<Template> = LazyLock::new(|| {
    template(
        "platform.shipment.exception",
        "Shipment delayed",
        "Shipment {{reference}} ({{tracking_number}}) has a delivery exception: {{description}}",
    )
});

/// The people a shipment's notices go to: the assignee and the creator
/// (when a person created it), each once.
pub fn recipients(shipment: &db::Shipment) -> Vec<String> {
    let creator = shipment
        .created_by
        .strip_prefix("user:")
        .filter(|_| !shipment.created_by.starts_with("api_key:"))
        .map(str::to_owned);
    let mut out: Vec<String> = Vec::new();
    for who in [shipment.assigned_to.clone(), creator]
        .into_iter()
        .flatten()
    {
        if !out.contains(&who) {
            out.push(who);
        }
    }
    out
}

async fn notify(
    state: &WorkerState,
    tx: &mut sqlx::PgConnection,
    shipment: &db::Shipment,
    tick: DateTime<Utc>,
) -> anyhow::Result<()> {
    let (key, default): (&str, &Template) = match shipment.status {
        ShipmentStatus::OutForDelivery => ("platform.shipment.out_for_delivery", &OUT_FOR_DELIVERY),
        ShipmentStatus::Delivered => ("platform.shipment.delivered", &DELIVERED),
        ShipmentStatus::Exception => ("platform.shipment.exception", &EXCEPTION),
        _ => return Ok(()),
    };
    let last = shipment.last_event.as_ref().map(|j| &j.0);
    let data = json!({
        "shipment_id": shipment.id,
        "reference": shipment.reference.clone().unwrap_or_default(),
        "tracking_number": shipment.tracking_number,
        "status": shipment.status,
        "eta": shipment.eta,
        "description": last.and_then(|e| e.get("description")).cloned().unwrap_or(Value::Null),
    });
    for who in recipients(shipment) {
        let idempotency = format!(
            "shipment:{}:{}:{}:{who}",
            shipment.id,
            shipment.status,
            tick.timestamp_millis()
        );
        notices::queue(
            tx,
            &state.jobs,
            shipment.tenant_id,
            Notice {
                key,
                default,
                data: &data,
                channels: &[Channel::InApp, Channel::Email],
                subscriber: Some(&who),
                email: None,
                phone: None,
                locale: None,
                metadata: json!({"shipment_id": shipment.id, "status": shipment.status}),
                idempotency_key: Some(&idempotency),
            },
        )
        .await?;
    }
    Ok(())
}

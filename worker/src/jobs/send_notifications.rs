//! `SendNotifications`: deliver a group of notifications of one tenant on one
//! channel.
//!
//! The group is claimed in one statement (a duplicate job claims nothing),
//! sent with bounded parallelism, and each outcome is recorded with its attempt
//! in one statement. Transient failures are queued again with exponential
//! backoff and jitter until `max_attempts`; permanent ones fail at once.

use std::{sync::Arc, time::Instant};

use apalis_core::{error::BoxDynError, task::data::Data, task::task_id::TaskId};
use futures::StreamExt;
use shared::{
    config::QueueConfig,
    db::notifications::{self, AttemptRecord, Claimed, EmailContent, Outcome},
    db::{events, inbox, preferences},
    domain::{Channel, TenantId},
    events::entry_view,
    jobs::{Job, SendNotifications},
};
use tracing::Instrument;

use crate::{
    WorkerState,
    providers::email::{Receipt, SendError, build_message},
};

/// Sends within one job run at most this many at once.
const PARALLEL_SENDS: usize = 8;

/// Runs one `SendNotifications` job.
pub async fn handle(
    job: SendNotifications,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
) -> Result<(), BoxDynError> {
    let queue = job.queue();
    let span = tracing::info_span!(
        "job",
        queue = %queue,
        job = SendNotifications::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        size = job.notification_ids.len(),
    );
    async move {
        let config = state.jobs.queue(queue);
        let rounds = job.notification_ids.len().div_ceil(PARALLEL_SENDS) as u32 + 1;
        let lease = config.timeout() * rounds;
        let claimed =
            match notifications::claim(&state.pool, job.tenant_id, &job.notification_ids, lease)
                .await
            {
                Ok(c) => c,
                Err(error) => {
                    // The rows stay queued; the dispatcher pushes them again.
                    tracing::error!(
                        error = &error as &dyn std::error::Error,
                        "cannot claim notifications"
                    );
                    metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
                    return Ok(());
                }
            };
        if claimed.len() < job.notification_ids.len() {
            tracing::debug!(
                skipped = job.notification_ids.len() - claimed.len(),
                "already claimed or finished"
            );
        }
        futures::stream::iter(claimed)
            .for_each_concurrent(PARALLEL_SENDS, |row| {
                let state = state.clone();
                let task_id = task_id.clone();
                async move { deliver(&state, job.tenant_id, job.channel, row, &task_id).await }
            })
            .await;
        Ok(())
    }
    .instrument(span)
    .await
}

/// What the subscriber's preferences say about a notification now.
enum Verdict {
    Send,
    Suppress(String),
    Defer(chrono::DateTime<chrono::Utc>),
}

async fn consult_preferences(
    state: &WorkerState,
    tenant_id: TenantId,
    subscriber_id: shared::domain::SubscriberId,
    channel: Channel,
    row: &Claimed,
) -> Verdict {
    let prefs = match preferences::get(&state.pool, tenant_id, subscriber_id).await {
        Ok(p) => p,
        Err(error) => {
            // Without them an opt-out cannot be honoured: look again shortly.
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "cannot read preferences; deferring"
            );
            return Verdict::Defer(chrono::Utc::now() + chrono::Duration::seconds(30));
        }
    };
    if !prefs.allows(channel, row.category.as_deref()) {
        let what = match &row.category {
            Some(c) => format!("the subscriber turned off {} for `{c}`", channel.as_str()),
            None => format!("the subscriber turned off {}", channel.as_str()),
        };
        return Verdict::Suppress(what);
    }
    match prefs.quiet_until(channel, chrono::Utc::now()) {
        Some(until) => Verdict::Defer(until),
        None => Verdict::Send,
    }
}

/// Sends one claimed email notification through the configured transport,
/// bounded by the queue's timeout.
async fn send_email(
    state: &WorkerState,
    row: &Claimed,
    config: &QueueConfig,
) -> Result<Receipt, SendError> {
    let content = serde_json::from_value::<EmailContent>(row.content.0.clone())
        .map_err(|e| SendError::Permanent(format!("unreadable content: {e}")))?;
    let (message, message_id) = build_message(&state.email_from, row.id, &row.recipient, &content)?;
    match tokio::time::timeout(config.timeout(), state.email.send(message, message_id)).await {
        Ok(r) => r,
        Err(_) => Err(SendError::Transient(format!(
            "no answer from the provider within {}s",
            config.timeout_secs
        ))),
    }
}

/// Records an attempt. An in-app notification that reached the inbox is
/// recorded together with its `notification.created` and
/// `unread_count.changed` events, which are then published.
async fn record_outcome(
    state: &WorkerState,
    tenant_id: TenantId,
    row: &Claimed,
    record: AttemptRecord<'_>,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let (Some(subscriber_id), Outcome::Sent { .. }) = (row.subscriber_id, outcome) else {
        return notifications::record_attempt(&state.pool, tenant_id, row.id, record, outcome)
            .await;
    };
    let mut tx = state.pool.begin().await?;
    events::lock_subscriber(&mut tx, tenant_id, subscriber_id).await?;
    if !notifications::record_attempt(&mut *tx, tenant_id, row.id, record, outcome).await? {
        return Ok(false);
    }
    let created = inbox::get(&mut *tx, tenant_id, subscriber_id, row.id)
        .await?
        .map(|item| entry_view(&item));
    let published = shared::events::record_inbox_events(
        &mut tx,
        tenant_id,
        subscriber_id,
        &row.recipient,
        created
            .map(|c| ("notification.created", c))
            .into_iter()
            .collect(),
    )
    .await?;
    tx.commit().await?;
    if let Err(error) = shared::events::publish(&state.queues, &published).await {
        // Connected clients catch up from Postgres when they reconnect.
        tracing::warn!(%error, "cannot publish inbox events");
    }
    Ok(true)
}

/// Delivers one claimed notification on its channel and records the attempt.
async fn deliver(
    state: &WorkerState,
    tenant_id: TenantId,
    channel: Channel,
    row: Claimed,
    task_id: &TaskId,
) {
    let queue = shared::jobs::QueueName::for_channel(channel);
    let span = tracing::info_span!(
        "delivery",
        queue = %queue,
        job_id = %task_id,
        tenant_id = %tenant_id,
        notification_id = %row.id,
        attempt = row.attempts,
    );
    async move {
        metrics::counter!("jobs_started_total", "queue" => queue.as_str()).increment(1);
        let started = Instant::now();
        let config = state.jobs.queue(queue);
        let verdict = match (row.subscriber_id, row.critical) {
            (Some(subscriber_id), false) => consult_preferences(state, tenant_id, subscriber_id, channel, &row).await,
            _ => Verdict::Send,
        };
        let (provider, result) = match verdict {
            Verdict::Defer(until) => {
                match notifications::defer(&state.pool, tenant_id, row.id, row.attempts, until).await {
                    Ok(_) => tracing::info!(until = %until, "quiet hours; deferred"),
                    Err(error) => tracing::error!(error = &error as &dyn std::error::Error, "cannot defer"),
                }
                metrics::counter!("notifications_deferred_total", "channel" => channel.as_str()).increment(1);
                return;
            }
            Verdict::Suppress(reason) => ("preferences", Err(SendError::Suppressed(reason))),
            Verdict::Send => match channel {
                Channel::Email => (state.email.provider(), send_email(state, &row, config).await),
                Channel::Sms | Channel::Push | Channel::WhatsApp => (
                    "none",
                    Err(SendError::Permanent(format!("no {} provider is configured", channel.as_str()))),
                ),
                // The row is the inbox entry: marking it sent puts it there.
                Channel::InApp => (
                    "inapp",
                    Ok(Receipt { message_id: format!("inapp:{}", row.id), response: "placed in the inbox".into() }),
                ),
            },
        };
        let latency = started.elapsed();
        let outcome = match result {
            Ok(receipt) => Outcome::Sent { provider_message_id: receipt.message_id, response: receipt.response },
            Err(SendError::Transient(error)) if row.attempts < row.max_attempts => {
                Outcome::Retry { error, after: config.backoff.delay(row.attempts as u32) }
            }
            Err(SendError::Transient(error)) => Outcome::Failed { error },
            Err(SendError::Permanent(error)) => Outcome::Failed { error },
            Err(SendError::Suppressed(reason)) => Outcome::Suppressed { reason },
        };
        let label = match &outcome {
            Outcome::Sent { .. } => "sent",
            Outcome::Retry { .. } => "retry",
            Outcome::Failed { .. } => "failed",
            Outcome::Suppressed { .. } => "suppressed",
        };
        let record = AttemptRecord {
            attempt: row.attempts,
            provider,
            latency,
            worker: &state.name,
        };
        match record_outcome(state, tenant_id, &row, record, &outcome).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the claim expired before the outcome was recorded"),
            Err(error) => {
                // The lease runs out and the dispatcher puts the row back: at
                // least once, never lost.
                tracing::error!(error = &error as &dyn std::error::Error, "cannot record the attempt");
            }
        }
        let metric = match label {
            "sent" | "suppressed" => "jobs_succeeded_total",
            "retry" => "jobs_retried_total",
            _ => "jobs_failed_total",
        };
        metrics::counter!(metric, "queue" => queue.as_str()).increment(1);
        metrics::counter!("notifications_sent_total", "channel" => channel.as_str(), "outcome" => label).increment(1);
        metrics::histogram!("job_duration_seconds", "queue" => queue.as_str()).record(latency.as_secs_f64());
        match &outcome {
            Outcome::Sent { .. } => tracing::info!(latency_ms = latency.as_millis() as u64, "sent"),
            Outcome::Retry { after, .. } => {
                tracing::info!(retry_in_ms = after.as_millis() as u64, "transient failure; will retry")
            }
            Outcome::Failed { .. } => tracing::warn!("failed permanently"),
            Outcome::Suppressed { .. } => tracing::info!("suppressed by the subscriber's preferences"),
        }
    }
    .instrument(span)
    .await
}

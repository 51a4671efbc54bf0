//! `SendNotifications`: deliver a group of notifications of one tenant on one
//! channel.
//!
//! The group is claimed in one statement (a duplicate job claims nothing),
//! sent with bounded parallelism, and each outcome is recorded with its attempt
//! in one statement. Transient failures are queued again with exponential
//! backoff and jitter until `max_attempts`; permanent ones fail at once.
//!
//! Once a provider has answered, the answer is recorded even if Postgres is
//! unreachable or the pool is exhausted for a while: the write is retried
//! (never the send) until the claim's lease ends (see [`super::persist`]).
//! Rows put back without an attempt (quiet hours, send windows, busy
//! providers) are retried the same way, so they are not left to the lease
//! either.
//!
//! Right after the claim the group is decided at one moment (see
//! [`screen`]): the subscribers' preferences and time zones are read in one
//! statement, and the rows their quiet hours or the organisation's send
//! window hold back are deferred in one statement. A group of rows without
//! subscribers on a channel without a window reads and writes nothing more.

use std::{sync::Arc, time::Instant};

use apalis_core::{
    error::BoxDynError, task::data::Data, task::task_id::TaskId, worker::context::WorkerContext,
};
use futures::StreamExt;
use shared::{
    db::notifications::{self, AttemptRecord, Claimed, Outcome},
    db::{events, inbox, webhooks},
    domain::{Channel, Content, NotificationId, TenantId, WhatsAppContent},
    events::entry_view,
    jobs::{Job, QueueName, SendNotifications},
    send_windows::SendRules,
    webhooks::WebhookEvent,
};
use tracing::Instrument;

mod record;
mod screen;
use record::*;
use screen::screen;

use crate::{
    WorkerState,
    jobs::{deliver_webhooks, persist, together},
    providers::{
        Receipt, SendError,
        chain::{self, ChainOutcome, Provider},
        email::{self, build_message},
        fcm::{self, PushError},
        sendgrid, twilio, whatsapp,
    },
};
use shared::providers::{FailureReason, ProviderSpec};

/// Sends within one job run at most this many at once.
const PARALLEL_SENDS: usize = 8;

/// How often a job with rows still waiting for their turn looks whether its
/// worker is stopping (apalis gives a handler no waker for that).
const STOP_CHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// Runs one `SendNotifications` job, as a task of its own that finishes
/// what it claimed even if the queue worker drops this handler (see
/// [`crate::jobs::detached`]).
pub async fn handle(
    job: SendNotifications,
    state: Data<Arc<WorkerState>>,
    task_id: TaskId,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let state: Arc<WorkerState> = (*state).clone();
    let queue = job.queue();
    let span = tracing::info_span!(
        "job",
        queue = %queue,
        job = SendNotifications::NAME,
        job_id = %task_id,
        tenant_id = %job.tenant_id,
        size = job.notification_ids.len(),
    );
    let delivery = run(job, state.clone(), task_id, worker).instrument(span);
    state.slots.run(queue, delivery).await?
}

/// The job itself (see [`handle`]).
async fn run(
    job: SendNotifications,
    state: Arc<WorkerState>,
    task_id: TaskId,
    worker: WorkerContext,
) -> Result<(), BoxDynError> {
    let queue = job.queue();
    if state.queues.is_paused(queue).await {
        // Back to Postgres: the dispatcher feeds it once resumed.
        shared::outbox::hand_back(&state.pool, &job).await;
        return Ok(());
    }
    let config = state.jobs.queue(queue);
    // Read with those of the jobs running beside this one (see
    // [`together`]); in-app sends need no providers.
    let setup = if job.channel == Channel::InApp {
        webhooks::subscribed_events(&state.pool, job.tenant_id)
            .await
            .map(|hooked| (Vec::new(), hooked))
            .map_err(Arc::new)
    } else {
        state.together.setup(job.tenant_id, job.channel).await
    };
    let (providers, hooked) = match setup {
        Ok(s) => s,
        Err(error) => {
            // Nothing is claimed yet; the dispatcher pushes the rows again.
            tracing::error!(
                error = &*error as &dyn std::error::Error,
                "cannot load providers or webhook subscriptions"
            );
            metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
            return Ok(());
        }
    };
    // In-app is never held back, so it needs no send rules.
    let rules = match job.channel {
        Channel::InApp => Ok(Arc::new(SendRules::default())),
        _ => state.together.rules(job.tenant_id).await,
    };
    let rules = match rules {
        Ok(r) => r,
        Err(error) => {
            // Nothing is claimed yet; the dispatcher pushes the rows again.
            tracing::error!(
                error = &*error as &dyn std::error::Error,
                "cannot load the organisation's send rules"
            );
            metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
            return Ok(());
        }
    };
    let providers = &providers;
    let hooked = &hooked;
    // In-app rows that nobody hears about one by one and that need no
    // look at preferences go into the inboxes as a group, claimed and
    // delivered in one statement; the rest go one by one below.
    let mut ids = job.notification_ids.clone();
    if job.channel == Channel::InApp && !hooked.iter().any(|h| h == WebhookEvent::Sent.as_str()) {
        let Some(placed) = place_in_inboxes(&state, job.tenant_id, &ids).await else {
            // Nothing was written; the dispatcher pushes the rows again.
            metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
            return Ok(());
        };
        if !placed.is_empty() {
            let placed: std::collections::HashSet<_> = placed.into_iter().collect();
            ids.retain(|id| !placed.contains(id));
        }
        if ids.is_empty() {
            return Ok(());
        }
    }
    let rounds = ids.len().div_ceil(PARALLEL_SENDS) as u32 + 1;
    let lease = config.timeout() * rounds;
    // Taken before the claim, so never later than the lease's end in
    // Postgres.
    let lease_ends = tokio::time::Instant::now() + lease;
    let claimed = match state
        .together
        .claim(job.tenant_id, ids.clone(), lease)
        .await
    {
        Ok(c) => c,
        Err(error) => {
            // The rows stay queued; the dispatcher pushes them again. (Only
            // if Postgres ran the claim and its answer alone was lost, the
            // connection breaking on the way back, do they wait for their
            // lease.)
            tracing::error!(
                error = &*error as &dyn std::error::Error,
                "cannot claim notifications"
            );
            metrics::counter!("jobs_failed_total", "queue" => queue.as_str()).increment(1);
            return Ok(());
        }
    };
    if claimed.len() < ids.len() {
        tracing::debug!(
            skipped = ids.len() - claimed.len(),
            "already claimed or finished"
        );
    }
    let (claimed, suppressed) = screen(
        &state,
        job.tenant_id,
        job.channel,
        &rules,
        claimed,
        lease_ends,
    )
    .await;
    let suppressed = &suppressed;
    // Rows wait here for their turn. When the worker starts to stop, the
    // ones still waiting are given back at once (sends in flight finish
    // and are recorded), rather than held until the lease runs out.
    let some_wait = claimed.len() > PARALLEL_SENDS;
    let waiting = Arc::new(std::sync::Mutex::new(std::collections::VecDeque::from(
        claimed,
    )));
    if some_wait {
        // Ends by itself once no row is left waiting.
        tokio::spawn(
            give_back_on_stop(
                state.clone(),
                job.tenant_id,
                waiting.clone(),
                lease_ends,
                worker,
            )
            .instrument(tracing::Span::current()),
        );
    }
    let turns = waiting.clone();
    // The claim checks of the sends and their outcomes are written for
    // the group, a few at a time, beside the sends (see
    // [`check_claims`] and [`record_group`]).
    let (checks, asked) = tokio::sync::mpsc::unbounded_channel();
    let (answers, answered) = tokio::sync::mpsc::unbounded_channel();
    let checks = ClaimChecks(checks);
    let check_until = lease_ends
        .checked_sub(config.timeout())
        .unwrap_or(lease_ends);
    let sends = async {
        futures::stream::iter(std::iter::from_fn(move || {
            turns.lock().expect("not poisoned").pop_front()
        }))
        .for_each_concurrent(PARALLEL_SENDS, |row| {
            let state = state.clone();
            let task_id = task_id.clone();
            let (checks, answers) = (&checks, &answers);
            async move {
                let suppress = suppressed.get(&row.id).cloned();
                let group = Group {
                    tenant_id: job.tenant_id,
                    channel: job.channel,
                    providers,
                    lease_ends,
                    task_id: &task_id,
                    checks,
                };
                let answered = deliver(&state, &group, suppress, row).await;
                let Some(answered) = answered else { return };
                if job.channel == Channel::InApp {
                    // Placed in the inbox row by row, with its events.
                    record_alone(&state, job.tenant_id, hooked, answered).await;
                } else if let Err(unsent) = answers.send(answered) {
                    // Only if the recorder is gone: written alone instead.
                    record_alone(&state, job.tenant_id, hooked, unsent.0).await;
                }
            }
        })
        .await;
        // The recorder and the checker end once they have seen the last.
        drop(answers);
        drop(checks);
    };
    tokio::join!(
        sends,
        check_claims(&state, job.tenant_id, asked, check_until),
        record_group(&state, job.tenant_id, hooked, answered),
    );
    Ok(())
}

/// Gives back, at once, the rows of a group still `waiting` for their turn
/// when the worker starts to stop (apalis gives a handler no waker for
/// that, so it looks every [`STOP_CHECK`]); ends when none is left waiting.
/// A task of its own, so it also runs if the job is dropped when the
/// drain's bound runs out.
async fn give_back_on_stop(
    state: Arc<WorkerState>,
    tenant_id: TenantId,
    waiting: Arc<std::sync::Mutex<std::collections::VecDeque<Claimed>>>,
    lease_ends: tokio::time::Instant,
    worker: WorkerContext,
) {
    while !worker.is_shutting_down() {
        if waiting.lock().expect("not poisoned").is_empty() {
            return;
        }
        tokio::time::sleep(STOP_CHECK).await;
    }
    let left: Vec<Claimed> = waiting.lock().expect("not poisoned").drain(..).collect();
    release(&state, tenant_id, &left, lease_ends).await;
}

/// Puts what it can of a group into the inboxes in one transaction (see
/// [`shared::events::deliver_inbox_group`]) and publishes the events;
/// returns the rows delivered, or `None` on a database error, when nothing
/// was written.
async fn place_in_inboxes(
    state: &WorkerState,
    tenant_id: TenantId,
    ids: &[NotificationId],
) -> Option<Vec<NotificationId>> {
    let result = async {
        let mut tx = state.pool.begin().await?;
        let done = shared::events::deliver_inbox_group(&mut tx, tenant_id, ids).await?;
        tx.commit().await?;
        Ok::<_, sqlx::Error>(done)
    }
    .await;
    match result {
        Ok((placed, events)) => {
            let sent = placed.len() as u64;
            if sent == 0 {
                return Some(placed);
            }
            metrics::counter!("jobs_succeeded_total", "queue" => "inapp").increment(sent);
            metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
                .increment(sent);
            state.throughput.record(
                shared::jobs::QueueName::InApp,
                Some(tenant_id),
                shared::throughput::Outcome::Sent,
                sent,
                None,
                None,
            );
            tracing::info!(sent, "placed in the inboxes");
            if let Err(error) = shared::events::publish(&state.queues, &events).await {
                // Connected clients catch up from Postgres when they reconnect.
                tracing::warn!(%error, "cannot publish inbox events");
            }
            Some(placed)
        }
        Err(error) => {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "cannot place the group in the inboxes; it is retried"
            );
            None
        }
    }
}

/// Reads a claimed row's content on its channel, once for every provider
/// the chain tries.
fn content(channel: Channel, row: &Claimed) -> Result<Content, SendError> {
    Content::from_stored(channel, &row.content.0)
        // The content itself is never quoted in the error.
        .map_err(|_| SendError::permanent(FailureReason::ContentUnreadable))
}

/// Sends one claimed notification with its `content` through one provider
/// (SMTP over the connection `reserved` for it, if any).
async fn send_with(
    state: &WorkerState,
    tenant_id: TenantId,
    row: &Claimed,
    content: &Result<Content, SendError>,
    provider: &Provider,
    reserved: &std::sync::Mutex<Option<email::Connection>>,
) -> Result<Receipt, SendError> {
    let http = &state.http;
    if let ProviderSpec::Ups(..) = &provider.spec {
        // Never listed for a channel; here only if a row says otherwise.
        return Err(SendError::permanent(FailureReason::NotAMessagingProvider));
    }
    let content = content.as_ref().map_err(Clone::clone)?;
    match (&provider.spec, content) {
        (ProviderSpec::Smtp(_), Content::Email(email)) => {
            let (message, message_id) =
                build_message(&state.email_from, row.id, &row.recipient, email)?;
            let reserved = reserved.lock().expect("not poisoned").take();
            state.email.send(reserved, message, message_id).await
        }
        (ProviderSpec::SendGrid(settings, credentials), Content::Email(email)) => {
            sendgrid::send(
                http,
                settings,
                credentials,
                (tenant_id, row.id),
                &row.recipient,
                email,
            )
            .await
        }
        (ProviderSpec::Twilio(settings, credentials), Content::Sms(sms)) => {
            let callback = http
                .public_base_url
                .as_ref()
                .zip(provider.id)
                .map(|(base, id)| format!("{base}/webhooks/twilio/{id}"));
            twilio::send(
                http,
                settings,
                credentials,
                &row.recipient,
                sms,
                callback.as_deref(),
            )
            .await
        }
        (ProviderSpec::Fcm(settings, credentials), Content::Push(push)) => {
            let id = provider.id.unwrap_or_default();
            match fcm::send(http, id, settings, credentials, &row.recipient, push).await {
                Ok(receipt) => Ok(receipt),
                Err(PushError::Other(e)) => Err(e),
                Err(PushError::TokenGone(e)) => {
                    forget_device(state, tenant_id, row).await;
                    Err(e)
                }
            }
        }
        (ProviderSpec::WhatsApp(settings, credentials), Content::WhatsApp(message)) => {
            if matches!(message, WhatsAppContent::Text { .. }) {
                outside_whatsapp_window(state, tenant_id, &row.recipient).await?;
            }
            whatsapp::send(http, settings, credentials, &row.recipient, message).await
        }
        // A provider of another channel than the row's content.
        _ => Err(SendError::permanent(FailureReason::ContentUnreadable)),
    }
}

/// Refuses free-form WhatsApp text when the organisation's callbacks show the
/// person last wrote more than 24 hours ago (Meta would refuse it with error
/// 131047). Unknown times are left to Meta.
async fn outside_whatsapp_window(
    state: &WorkerState,
    tenant_id: TenantId,
    number: &str,
) -> Result<(), SendError> {
    let last = shared::db::provider_events::last_whatsapp_inbound(&state.pool, tenant_id, number)
        .await
        .map_err(|error| {
            tracing::error!(
                error = &error as &dyn std::error::Error,
                "cannot read the WhatsApp window"
            );
            SendError::transient(FailureReason::WindowUnknown)
        })?;
    match last {
        Some(at) if at < chrono::Utc::now() - chrono::Duration::hours(24) => {
            Err(SendError::permanent(FailureReason::WhatsAppWindowClosed))
        }
        _ => Ok(()),
    }
}

/// Removes a device token FCM no longer knows from the subscriber it belongs to.
async fn forget_device(state: &WorkerState, tenant_id: TenantId, row: &Claimed) {
    let Some(subscriber_id) = row.subscriber_id else {
        return;
    };
    match shared::db::subscribers::remove_push_token(
        &state.pool,
        tenant_id,
        subscriber_id,
        &row.recipient,
    )
    .await
    {
        Ok(true) => tracing::info!("removed a device token FCM no longer knows"),
        Ok(false) => {}
        Err(error) => tracing::error!(
            error = &error as &dyn std::error::Error,
            "cannot remove the device token"
        ),
    }
}

/// What the rows of one job share as they are delivered.
#[derive(Clone, Copy)]
struct Group<'a> {
    tenant_id: TenantId,
    channel: Channel,
    /// The organisation's providers of the channel, in order.
    providers: &'a [Provider],
    /// When the rows' claim lease ends.
    lease_ends: tokio::time::Instant,
    task_id: &'a TaskId,
    /// Where the sends ask whether their rows are still claimed.
    checks: &'a ClaimChecks,
}

/// Delivers one claimed notification on its channel and returns the answer
/// to record, or `None` when there is nothing to record (deferred, or no
/// longer this worker's). Failovers on the way are recorded here (waiting
/// for Postgres, if need be, until the lease ends).
async fn deliver(
    state: &WorkerState,
    group: &Group<'_>,
    suppress: Option<String>,
    row: Claimed,
) -> Option<Answered> {
    let Group {
        tenant_id,
        channel,
        providers,
        lease_ends,
        task_id,
        checks,
    } = *group;
    let queue = shared::jobs::QueueName::for_channel(channel);
    let span = tracing::info_span!(
        "delivery",
        queue = %queue,
        job_id = %task_id,
        tenant_id = %tenant_id,
        notification_id = %row.id,
        attempt = row.attempts,
    );
    let kept = span.clone();
    async move {
        metrics::counter!("jobs_started_total", "queue" => queue.as_str()).increment(1);
        let started = Instant::now();
        let config = state.jobs.queue(queue);
        let mut hops = Vec::new();
        // Decided for the group right after the claim (see [`screen`]).
        let (provider, result): (String, Result<Receipt, SendError>) = match suppress {
            Some(reason) => ("preferences".into(), Err(SendError::Suppressed(reason))),
            // The row is the inbox entry: marking it sent puts it there.
            None if channel == Channel::InApp => (
                "inapp".into(),
                Ok(Receipt { message_id: format!("inapp:{}", row.id), response: "placed in the inbox".into(), code: None }),
            ),
            None if providers.is_empty() => ("none".into(), Err(chain::none_configured(channel))),
            None => {
                let row = &row;
                // The platform's relay, unlimited, goes first: wait for a
                // pooled connection before the claim is checked, so the
                // message goes right after the check.
                let relay_first = providers
                    .first()
                    .is_some_and(|p| matches!(p.spec, ProviderSpec::Smtp(_)) && p.id.is_none() && p.rate.is_none());
                let reserved = std::sync::Mutex::new(match relay_first {
                    true => state.email.reserve().await,
                    false => None,
                });
                let reserved = &reserved;
                let content = &content(channel, row);
                let (outcome, skipped) = chain::run(
                    &state.guard,
                    providers,
                    config.timeout(),
                    || still_claimed(state, tenant_id, row, checks, lease_ends),
                    |i| send_with(state, tenant_id, row, content, &providers[i], reserved),
                )
                .await;
                hops = skipped;
                match outcome {
                    ChainOutcome::Sent { provider, receipt } => (provider, Ok(receipt)),
                    ChainOutcome::Failed { provider, error } => (provider, Err(error)),
                    ChainOutcome::Busy(wait) => {
                        let until = chrono::Utc::now() + chrono::Duration::from_std(wait).unwrap_or_default();
                        defer(state, tenant_id, row, until, lease_ends, "every provider is paused or rate limited").await;
                        return None;
                    }
                    ChainOutcome::Withdrawn => {
                        tracing::info!("no longer this worker's before a provider had it (cancelled, or put back); not sent");
                        metrics::counter!("notifications_withdrawn_total", "channel" => channel.as_str()).increment(1);
                        return None;
                    }
                }
            }
        };
        let latency = started.elapsed();
        let code = match &result {
            Ok(receipt) => receipt.code,
            Err(e) => e.code(),
        };
        let outcome = match result {
            Ok(receipt) => Outcome::Sent { provider_message_id: receipt.message_id, response: receipt.response },
            Err(SendError::Transient { error, .. }) if row.attempts < row.max_attempts => {
                Outcome::Retry { error, after: config.backoff.delay(row.attempts as u32) }
            }
            Err(SendError::RateLimited { error, retry_after, .. }) if row.attempts < row.max_attempts => {
                Outcome::Retry { error, after: config.backoff.delay(row.attempts as u32).max(retry_after) }
            }
            Err(SendError::Transient { error, .. } | SendError::RateLimited { error, .. }) => Outcome::Failed { error },
            Err(SendError::Permanent { error, .. }) => Outcome::Failed { error },
            Err(SendError::Suppressed(reason)) => Outcome::Suppressed { reason },
        };
        // The provider has answered: its answer is recorded, waiting out a
        // Postgres outage or an exhausted pool for as long as the lease
        // lasts (and at least one queue timeout: a write after the lease
        // still lands unless the row was taken back meanwhile); the send
        // itself is never repeated here.
        let record_until = lease_ends.max(tokio::time::Instant::now() + config.timeout());
        if !hops.is_empty() {
            let rows: Vec<_> = hops.iter().map(|h| (h.provider.clone(), h.error.clone(), h.code, h.latency)).collect();
            let recorded = persist::patiently("failovers", record_until, || {
                notifications::record_failovers(&state.pool, tenant_id, row.id, row.attempts, &state.name, &rows)
            })
            .await;
            if let Err(error) = recorded {
                tracing::error!(error = &error as &dyn std::error::Error, "cannot record the failovers");
            }
            metrics::counter!("provider_failovers_total", "channel" => channel.as_str()).increment(hops.len() as u64);
            for hop in &hops {
                state.throughput.record_provider(channel.as_str(), tenant_id, &hop.provider, false);
            }
        }
        Some(Answered { row, channel, provider, latency, code, outcome, record_until, span: kept })
    }
    .instrument(span)
    .await
}

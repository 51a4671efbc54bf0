//! Recording what happened to each send of a group: claim checks asked
//! together, outcomes written together in one statement, webhooks for
//! every status.

use super::*;

/// Records an attempt. An in-app notification that reached the inbox is
/// recorded together with its `notification.created` and
/// `unread_count.changed` events, which are then published. A final status
/// (`sent`, `failed`, `suppressed`) queues the webhook deliveries of its
/// event in the same transaction when an endpoint of the tenant listens for
/// it (`hooked`, read when the job started); their job is pushed after the
/// commit. Anything else is recorded in one statement.
pub(super) async fn record_outcome(
    state: &WorkerState,
    tenant_id: TenantId,
    row: &Claimed,
    record: AttemptRecord<'_>,
    outcome: &Outcome,
    hooked: &[String],
) -> Result<bool, sqlx::Error> {
    let event = event_of(outcome).filter(|e| hooked.iter().any(|h| h == e.as_str()));
    let inbox_entry = match (row.subscriber_id, outcome) {
        (Some(subscriber_id), Outcome::Sent { .. }) => Some(subscriber_id),
        _ => None,
    };
    if event.is_none() && inbox_entry.is_none() {
        return notifications::record_attempt(&state.pool, tenant_id, row.id, record, outcome)
            .await;
    }
    let mut tx = state.pool.begin().await?;
    if let Some(subscriber_id) = inbox_entry {
        events::lock_subscriber(&mut tx, tenant_id, subscriber_id).await?;
    }
    if !notifications::record_attempt(&mut *tx, tenant_id, row.id, record, outcome).await? {
        return Ok(false);
    }
    let mut published = Vec::new();
    if let Some(subscriber_id) = inbox_entry {
        let created = inbox::get(&mut *tx, tenant_id, subscriber_id, row.id)
            .await?
            .map(|item| entry_view(&item));
        published = shared::events::record_inbox_events(
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
    }
    let deliveries = match event {
        Some(event) => {
            let max_attempts = state.jobs.queue(QueueName::Webhook).max_attempts;
            webhooks::enqueue_for_notification(&mut tx, tenant_id, row.id, event, max_attempts)
                .await?
        }
        None => Vec::new(),
    };
    tx.commit().await?;
    if let Err(error) = shared::events::publish(&state.queues, &published).await {
        // Connected clients catch up from Postgres when they reconnect.
        tracing::warn!(%error, "cannot publish inbox events");
    }
    deliver_webhooks::push(state, tenant_id, deliveries).await;
    Ok(true)
}

/// Gives claimed rows that were never tried back at once, in one
/// statement, waiting for Postgres until the lease ends.
pub(super) async fn release(
    state: &WorkerState,
    tenant_id: TenantId,
    rows: &[Claimed],
    lease_ends: tokio::time::Instant,
) {
    if rows.is_empty() {
        return;
    }
    let ids: Vec<NotificationId> = rows.iter().map(|r| r.id).collect();
    let attempts: Vec<i32> = rows.iter().map(|r| r.attempts).collect();
    let released = persist::patiently("release", lease_ends, || {
        notifications::release(&state.pool, tenant_id, &ids, &attempts)
    })
    .await;
    match released {
        Ok(n) => tracing::info!(released = n, "stopping: gave back the rows not yet sent"),
        Err(error) => tracing::error!(
            error = &error as &dyn std::error::Error,
            "stopping: cannot give back the rows not yet sent; they wait for their lease"
        ),
    }
}

/// Puts a claimed row back until `until` without spending its attempt,
/// unless the claim was lost meanwhile (the row was cancelled): then it
/// stays as it is. Waits for Postgres until the lease ends.
pub(super) async fn defer(
    state: &WorkerState,
    tenant_id: TenantId,
    row: &Claimed,
    until: chrono::DateTime<chrono::Utc>,
    lease_ends: tokio::time::Instant,
    why: &str,
) {
    let put_back = persist::patiently("defer", lease_ends, || {
        notifications::defer(&state.pool, tenant_id, row.id, row.attempts, until)
    })
    .await;
    match put_back {
        Ok(true) => {
            tracing::info!(until = %until, why, "deferred");
            metrics::counter!("notifications_deferred_total").increment(1);
        }
        Ok(false) => tracing::info!("cancelled while held; not deferred"),
        Err(error) => tracing::error!(error = &error as &dyn std::error::Error, "cannot defer"),
    }
}

/// Outcomes of a group written together: at most this many in one
/// statement.
pub(super) const RECORD_AT_MOST: usize = 64;

/// How long the first outcome of a write waits for others to join it.
pub(super) const RECORD_LINGER: std::time::Duration = std::time::Duration::from_millis(3);

/// Claim checks of a group asked at once: at most this many in one query.
pub(super) const CHECK_AT_MOST: usize = 256;

/// One send's question to [`check_claims`]: is the row still this worker's?
/// Answered with `None` when Postgres could not say in time.
pub(super) type ClaimQuestion = (
    NotificationId,
    i32,
    tokio::sync::oneshot::Sender<Option<bool>>,
);

/// Where the sends of a group ask [`check_claims`] whether their rows are
/// still theirs to send.
pub(super) struct ClaimChecks(pub(super) tokio::sync::mpsc::UnboundedSender<ClaimQuestion>);

/// Answers the claim checks of a group's sends. The questions that arrive
/// while a query runs are answered together by the next one, so a group
/// pays one round trip for many sends, and each answer is still read after
/// its question was asked (right before its provider is called). Waits
/// for Postgres until `until` (early enough in the lease for a send);
/// without an answer by then the sends asking are told `None`. Ends when
/// every sender is gone.
pub(super) async fn check_claims(
    state: &WorkerState,
    tenant_id: TenantId,
    mut asked: tokio::sync::mpsc::UnboundedReceiver<ClaimQuestion>,
    until: tokio::time::Instant,
) {
    let mut batch = Vec::new();
    while asked.recv_many(&mut batch, CHECK_AT_MOST).await > 0 {
        let asked: Vec<(NotificationId, i32)> = batch.iter().map(|q| (q.0, q.1)).collect();
        let checked = state.together.still_claimed(tenant_id, asked, until).await;
        let held: Option<std::collections::HashSet<NotificationId>> = match checked {
            Ok(held) => Some(held),
            Err(error) => {
                tracing::error!(
                    error = &*error as &dyn std::error::Error,
                    "cannot check the claims before sending; not sent"
                );
                None
            }
        };
        for (id, _, answer) in batch.drain(..) {
            // A send that is gone (its job dropped) needs no answer.
            let _ = answer.send(held.as_ref().map(|h| h.contains(&id)));
        }
    }
}

/// Whether the row is still this worker's to send: asked right before each
/// call to a provider, since a cancel may have come while the row waited
/// for its turn or for a rate limit (the group's checks are answered
/// together by [`check_claims`]). Without an answer in time it is not
/// sent, and is put back (if Postgres answers before the lease ends;
/// otherwise the dispatcher puts it back when the lease has run out).
pub(super) async fn still_claimed(
    state: &WorkerState,
    tenant_id: TenantId,
    row: &Claimed,
    checks: &ClaimChecks,
    lease_ends: tokio::time::Instant,
) -> bool {
    let (answer, answered) = tokio::sync::oneshot::channel();
    let checked = match checks.0.send((row.id, row.attempts, answer)) {
        Ok(()) => answered.await.ok().flatten(),
        Err(_) => None,
    };
    match checked {
        Some(claimed) => claimed,
        None => {
            let now = chrono::Utc::now();
            defer(
                state,
                tenant_id,
                row,
                now,
                lease_ends,
                "the claim could not be checked",
            )
            .await;
            false
        }
    }
}

/// A provider's answer (or the preferences' verdict) for one row, to be
/// recorded.
pub(super) struct Answered {
    /// The row.
    pub(super) row: Claimed,
    /// Its channel.
    pub(super) channel: Channel,
    /// The provider that answered last.
    pub(super) provider: String,
    /// How long the delivery took.
    pub(super) latency: std::time::Duration,
    /// The provider's status code.
    pub(super) code: Option<u16>,
    /// How the attempt ended.
    pub(super) outcome: Outcome,
    /// Until when the write waits for Postgres.
    pub(super) record_until: tokio::time::Instant,
    /// The row's delivery span, for what is logged once it is recorded.
    pub(super) span: tracing::Span,
}

impl Answered {
    fn record<'a>(&'a self, worker: &'a str) -> AttemptRecord<'a> {
        AttemptRecord {
            attempt: self.row.attempts,
            provider: &self.provider,
            latency: self.latency,
            worker,
            code: self.code,
        }
    }
}

/// The webhook event an outcome raises.
pub(super) fn event_of(outcome: &Outcome) -> Option<WebhookEvent> {
    match outcome {
        Outcome::Sent { .. } => Some(WebhookEvent::Sent),
        Outcome::Failed { .. } => Some(WebhookEvent::Failed),
        Outcome::Suppressed { .. } => Some(WebhookEvent::Suppressed),
        Outcome::Retry { .. } => None,
    }
}

/// Records one answer alone (see [`record_outcome`]), waiting for Postgres
/// until its `record_until`, and reports it.
pub(super) async fn record_alone(
    state: &WorkerState,
    tenant_id: TenantId,
    hooked: &[String],
    a: Answered,
) {
    let recorded = persist::patiently("outcome", a.record_until, || {
        record_outcome(
            state,
            tenant_id,
            &a.row,
            a.record(&state.name),
            &a.outcome,
            hooked,
        )
    })
    .await;
    report(state, tenant_id, &a, recorded.as_ref().map(|r| *r));
}

/// Records the answers of a group's sends as they come, a few in one
/// statement (see [`record_answers`]): a write takes what is waiting, up to
/// [`RECORD_AT_MOST`], after letting the first wait [`RECORD_LINGER`] for
/// company. An answer not yet written when the process dies is only ever
/// sent again (its row stays `sending` until the lease sweep queues it),
/// never lost. Ends when every sender is gone and all is written.
pub(super) async fn record_group(
    state: &WorkerState,
    tenant_id: TenantId,
    hooked: &[String],
    mut answered: tokio::sync::mpsc::UnboundedReceiver<Answered>,
) {
    let mut batch = Vec::with_capacity(RECORD_AT_MOST);
    loop {
        if answered.recv_many(&mut batch, RECORD_AT_MOST).await == 0 {
            return;
        }
        let linger = tokio::time::sleep(RECORD_LINGER);
        tokio::pin!(linger);
        while batch.len() < RECORD_AT_MOST {
            let room = RECORD_AT_MOST - batch.len();
            tokio::select! {
                more = answered.recv_many(&mut batch, room) => {
                    if more == 0 {
                        break;
                    }
                }
                () = &mut linger => break,
            }
        }
        record_answers(state, tenant_id, hooked, &batch).await;
        batch.clear();
    }
}

/// Writes answers of a group in one statement
/// ([`notifications::record_attempts`]), waiting for Postgres until the
/// latest of their `record_until`s, and reports each. When an endpoint of
/// the tenant listens for a final status among them, the webhook deliveries
/// are queued in the same transaction and their job pushed after the
/// commit.
pub(super) async fn record_answers(
    state: &WorkerState,
    tenant_id: TenantId,
    hooked: &[String],
    answers: &[Answered],
) {
    let Some(until) = answers.iter().map(|a| a.record_until).max() else {
        return;
    };
    let hooks: Vec<(NotificationId, WebhookEvent)> = answers
        .iter()
        .filter_map(|a| Some((a.row.id, event_of(&a.outcome)?)))
        .filter(|(_, e)| hooked.iter().any(|h| h == e.as_str()))
        .collect();
    if hooks.is_empty() {
        // Written with the outcomes of the jobs running beside this one.
        let owned = answers
            .iter()
            .map(|a| together::Attempt {
                id: a.row.id,
                attempt: a.row.attempts,
                provider: a.provider.clone(),
                latency: a.latency,
                worker: state.name.clone(),
                code: a.code,
                outcome: a.outcome.clone(),
            })
            .collect();
        match state.together.record(tenant_id, owned, until).await {
            Ok(written) => {
                for a in answers {
                    report(state, tenant_id, a, Ok(written.contains(&a.row.id)));
                }
            }
            Err(error) => {
                for a in answers {
                    report(state, tenant_id, a, Err(&*error));
                }
            }
        }
        return;
    }
    let attempts: Vec<_> = answers
        .iter()
        .map(|a| notifications::GroupAttempt {
            id: a.row.id,
            record: a.record(&state.name),
            outcome: &a.outcome,
        })
        .collect();
    let written = persist::patiently("outcome", until, || async {
        let mut tx = state.pool.begin().await?;
        let written = notifications::record_attempts(&mut *tx, tenant_id, &attempts).await?;
        let max_attempts = state.jobs.queue(QueueName::Webhook).max_attempts;
        let mut deliveries = Vec::new();
        for (id, event) in &hooks {
            if written.contains(id) {
                deliveries.extend(
                    webhooks::enqueue_for_notification(
                        &mut tx,
                        tenant_id,
                        *id,
                        *event,
                        max_attempts,
                    )
                    .await?,
                );
            }
        }
        tx.commit().await?;
        Ok((written, deliveries))
    })
    .await;
    match written {
        Ok((written, deliveries)) => {
            deliver_webhooks::push(state, tenant_id, deliveries).await;
            let written: std::collections::HashSet<_> = written.into_iter().collect();
            for a in answers {
                report(state, tenant_id, a, Ok(written.contains(&a.row.id)));
            }
        }
        Err(error) => {
            for a in answers {
                report(state, tenant_id, a, Err(&error));
            }
        }
    }
}

/// Logs and counts a recorded answer (in its row's span).
pub(super) fn report(
    state: &WorkerState,
    tenant_id: TenantId,
    a: &Answered,
    recorded: Result<bool, &sqlx::Error>,
) {
    let _entered = a.span.enter();
    let channel = a.channel;
    let queue = shared::jobs::QueueName::for_channel(channel);
    match recorded {
        Ok(true) => {
            use shared::throughput::Outcome as Done;
            let (done, latency) = match &a.outcome {
                Outcome::Sent { .. } => {
                    let latency = (chrono::Utc::now() - a.row.created_at).to_std().ok();
                    if let Some(l) = latency {
                        metrics::histogram!("notification_latency_seconds", "channel" => channel.as_str())
                            .record(l.as_secs_f64());
                    }
                    (Done::Sent, latency)
                }
                Outcome::Suppressed { .. } => (Done::Sent, None),
                Outcome::Retry { .. } => (Done::Retried, None),
                Outcome::Failed { .. } => (Done::Failed, None),
            };
            state
                .throughput
                .record(queue, Some(tenant_id), done, 1, Some(a.latency), latency);
            // What the provider itself answered, for alert rules on one
            // provider (not a suppression, an inbox or a missing provider).
            let answered = match &a.outcome {
                Outcome::Sent { .. } => Some(true),
                Outcome::Retry { .. } | Outcome::Failed { .. } => Some(false),
                Outcome::Suppressed { .. } => None,
            };
            if let Some(sent) = answered
                && !matches!(a.provider.as_str(), "none" | "preferences" | "inapp")
            {
                state
                    .throughput
                    .record_provider(channel.as_str(), tenant_id, &a.provider, sent);
            }
        }
        Ok(false) => tracing::warn!(
            "the claim was lost (cancelled, or its lease ran out) before the outcome was recorded"
        ),
        Err(error) => {
            // Only when Postgres stayed away for the whole lease (or
            // refused the write): the dispatcher puts the row back, at
            // least once, never lost.
            tracing::error!(
                error = error as &dyn std::error::Error,
                "cannot record the attempt"
            );
        }
    }
    let (label, metric) = match &a.outcome {
        Outcome::Sent { .. } => ("sent", "jobs_succeeded_total"),
        Outcome::Retry { .. } => ("retry", "jobs_retried_total"),
        Outcome::Failed { .. } => ("failed", "jobs_failed_total"),
        Outcome::Suppressed { .. } => ("suppressed", "jobs_succeeded_total"),
    };
    metrics::counter!(metric, "queue" => queue.as_str()).increment(1);
    metrics::counter!("notifications_sent_total", "channel" => channel.as_str(), "outcome" => label).increment(1);
    metrics::histogram!("job_duration_seconds", "queue" => queue.as_str())
        .record(a.latency.as_secs_f64());
    match &a.outcome {
        Outcome::Sent { .. } => tracing::info!(latency_ms = a.latency.as_millis() as u64, "sent"),
        Outcome::Retry { after, .. } => {
            tracing::info!(
                retry_in_ms = after.as_millis() as u64,
                "transient failure; will retry"
            )
        }
        Outcome::Failed { .. } => tracing::warn!("failed permanently"),
        Outcome::Suppressed { .. } => tracing::info!("suppressed by the subscriber's preferences"),
    }
}

//! Recording what a delivery attempt did: one attempt, a group's attempts in
//! one statement, failovers, deferrals and releases.

use super::*;

/// How one attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// The provider accepted the message.
    Sent {
        /// The provider's id for it.
        provider_message_id: String,
        /// The provider's answer.
        response: String,
    },
    /// A transient failure; try again after `after`.
    Retry {
        /// The error, in the platform's words (never a provider's text).
        error: ProviderError,
        /// The backoff.
        after: Duration,
    },
    /// Give up.
    Failed {
        /// The error, in the platform's words (never a provider's text).
        error: ProviderError,
    },
    /// Not sent: the subscriber's preferences rule it out.
    Suppressed {
        /// Which preference.
        reason: String,
    },
}

/// Facts about an attempt, beside its outcome.
#[derive(Debug, Clone)]
pub struct AttemptRecord<'a> {
    /// The attempt number the claim returned.
    pub attempt: i32,
    /// Which provider was used.
    pub provider: &'a str,
    /// How long it took.
    pub latency: Duration,
    /// Which worker ran it.
    pub worker: &'a str,
    /// The provider's status code (HTTP status or SMTP reply code).
    pub code: Option<u16>,
}

/// Records an attempt of a row this worker claimed and moves the row on, in
/// one statement. Returns false if the claim was lost meanwhile (its lease ran
/// out and another worker took the row, or it was cancelled), in which case
/// nothing is written. The one exception is a provider accepting the
/// message after the row was cancelled (the cancel came while the provider
/// already had it): the row is recorded `sent`, because it was. An in-app
/// row is placed by this statement itself, so a cancel always wins there.
#[tracing::instrument(skip_all)]
pub async fn record_attempt(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
    record: AttemptRecord<'_>,
    outcome: &Outcome,
) -> Result<bool, sqlx::Error> {
    let (status, attempt_outcome, delay, provider_message_id, response, error) = columns(outcome);
    let written = sqlx::query!(
        "with moved as (
             update notifications
             set status = $4,
                 run_at = now() + make_interval(secs => $5),
                 dispatched_at = null,
                 provider_message_id = coalesce($6, provider_message_id),
                 last_error = $8,
                 sent_at = case when $4 = 'sent' then now() else sent_at end
             where tenant_id = $1 and id = $2 and attempts = $3
               and (status = 'sending' or (status = 'cancelled' and $4 = 'sent' and channel <> 'inapp'))
             returning id
         )
         insert into delivery_attempts
             (tenant_id, notification_id, attempt, outcome, provider, provider_response, error, latency_ms, worker,
              response_code)
         select $1, id, $3, $9, $10, $7, $8, $11, $12, $13 from moved",
        tenant_id as _,
        id as _,
        record.attempt,
        status,
        delay,
        provider_message_id,
        response,
        error,
        attempt_outcome as _,
        record.provider,
        record.latency.as_millis().min(i32::MAX as u128) as i32,
        record.worker,
        record.code.map(i32::from),
    )
    .execute(db)
    .await?;
    Ok(written.rows_affected() == 1)
}

/// The columns an outcome writes: the row's new status, the attempt's
/// outcome, the delay before the row is due again (seconds), the provider's
/// message id, its answer, and the error.
pub(super) fn columns(
    outcome: &Outcome,
) -> (
    &'static str,
    AttemptOutcome,
    f64,
    Option<&str>,
    Option<&str>,
    Option<String>,
) {
    match outcome {
        Outcome::Sent {
            provider_message_id,
            response,
        } => (
            "sent",
            AttemptOutcome::Sent,
            0.0,
            Some(provider_message_id.as_str()),
            Some(response.as_str()),
            None,
        ),
        Outcome::Retry { error, after } => (
            "queued",
            AttemptOutcome::Retry,
            after.as_secs_f64(),
            None,
            None,
            Some(error.to_string()),
        ),
        Outcome::Failed { error } => (
            "failed",
            AttemptOutcome::Failed,
            0.0,
            None,
            None,
            Some(error.to_string()),
        ),
        Outcome::Suppressed { reason } => (
            "suppressed",
            AttemptOutcome::Suppressed,
            0.0,
            None,
            None,
            Some(reason.clone()),
        ),
    }
}

/// One attempt of a group, for [`record_attempts`].
#[derive(Debug, Clone)]
pub struct GroupAttempt<'a> {
    /// The notification.
    pub id: NotificationId,
    /// Facts about the attempt.
    pub record: AttemptRecord<'a>,
    /// How it ended.
    pub outcome: &'a Outcome,
}

/// Records the attempts of a group of rows this worker claimed, and moves
/// each row on, in one statement: [`record_attempt`] for many rows at once,
/// with the same rules for each (nothing is written for a row whose claim
/// was lost, except a `sent` after a cancel). Returns the rows written.
#[tracing::instrument(skip_all, fields(rows = attempts.len()))]
pub async fn record_attempts(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    attempts: &[GroupAttempt<'_>],
) -> Result<Vec<NotificationId>, sqlx::Error> {
    if attempts.is_empty() {
        return Ok(Vec::new());
    }
    let n = attempts.len();
    let mut ids = Vec::with_capacity(n);
    let mut numbers = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    let mut delays = Vec::with_capacity(n);
    let mut message_ids = Vec::with_capacity(n);
    let mut responses = Vec::with_capacity(n);
    let mut errors = Vec::with_capacity(n);
    let mut outcomes = Vec::with_capacity(n);
    let mut providers = Vec::with_capacity(n);
    let mut latencies = Vec::with_capacity(n);
    let mut workers = Vec::with_capacity(n);
    let mut codes = Vec::with_capacity(n);
    for a in attempts {
        let (status, outcome, delay, message_id, response, error) = columns(a.outcome);
        ids.push(a.id);
        numbers.push(a.record.attempt);
        statuses.push(status);
        delays.push(delay);
        message_ids.push(message_id);
        responses.push(response);
        errors.push(error);
        outcomes.push(outcome.as_str());
        providers.push(a.record.provider);
        latencies.push(a.record.latency.as_millis().min(i32::MAX as u128) as i32);
        workers.push(a.record.worker);
        codes.push(a.record.code.map(i32::from));
    }
    sqlx::query_scalar!(
        r#"with o as (
             select * from unnest($2::uuid[], $3::int4[], $4::text[], $5::float8[], $6::text[],
                                  $7::text[], $8::text[], $9::text[], $10::text[], $11::int4[],
                                  $12::text[], $13::int4[])
                 as o(id, attempt, status, delay, provider_message_id, response, error, outcome,
                      provider, latency_ms, worker, code)
         ),
         moved as (
             update notifications n
             set status = o.status,
                 run_at = now() + make_interval(secs => o.delay),
                 dispatched_at = null,
                 provider_message_id = coalesce(o.provider_message_id, n.provider_message_id),
                 last_error = o.error,
                 sent_at = case when o.status = 'sent' then now() else n.sent_at end
             from o
             where n.tenant_id = $1 and n.id = o.id and n.attempts = o.attempt
               and (n.status = 'sending' or (n.status = 'cancelled' and o.status = 'sent' and n.channel <> 'inapp'))
             returning n.id
         )
         insert into delivery_attempts
             (tenant_id, notification_id, attempt, outcome, provider, provider_response, error, latency_ms, worker,
              response_code)
         select $1, o.id, o.attempt, o.outcome, o.provider, o.response, o.error, o.latency_ms, o.worker, o.code
         from o join moved on moved.id = o.id
         returning notification_id as "notification_id: NotificationId""#,
        tenant_id as _,
        &ids as _,
        &numbers,
        &statuses as _,
        &delays,
        &message_ids as _,
        &responses as _,
        &errors as _,
        &outcomes as _,
        &providers as _,
        &latencies,
        &workers as _,
        &codes as _,
    )
    .fetch_all(db)
    .await
}

/// Of the rows `ids` claimed for attempts `attempts` (one per id), those
/// this worker still holds ([`still_claimed`] for many rows at once).
#[tracing::instrument(skip_all, fields(rows = ids.len()))]
pub async fn still_claimed_of(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[NotificationId],
    attempts: &[i32],
) -> Result<Vec<NotificationId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select n.id as "id: NotificationId" from notifications n
         join unnest($2::uuid[], $3::int4[]) as c(id, attempt) on n.id = c.id
         where n.tenant_id = $1 and n.status = 'sending' and n.attempts = c.attempt"#,
        tenant_id as _,
        ids as _,
        attempts,
    )
    .fetch_all(db)
    .await
}

/// Records the providers an attempt moved past (failed or skipped) before
/// its outcome, as `failover` rows of the same attempt: `(provider name,
/// error, status code, latency)`. Only while the claim holds.
#[tracing::instrument(skip_all)]
pub async fn record_failovers(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
    attempt: i32,
    worker: &str,
    hops: &[(String, ProviderError, Option<u16>, Duration)],
) -> Result<(), sqlx::Error> {
    if hops.is_empty() {
        return Ok(());
    }
    let providers: Vec<&str> = hops.iter().map(|h| h.0.as_str()).collect();
    let errors: Vec<String> = hops.iter().map(|h| h.1.to_string()).collect();
    let codes: Vec<Option<i32>> = hops.iter().map(|h| h.2.map(i32::from)).collect();
    let latencies: Vec<i32> = hops
        .iter()
        .map(|h| h.3.as_millis().min(i32::MAX as u128) as i32)
        .collect();
    sqlx::query!(
        "insert into delivery_attempts
             (tenant_id, notification_id, attempt, outcome, provider, error, response_code, latency_ms, worker)
         select $1, n.id, $3, 'failover', h.provider, h.error, h.code, h.latency, $4
         from notifications n,
              unnest($5::text[], $6::text[], $7::int4[], $8::int4[]) as h(provider, error, code, latency)
         where n.tenant_id = $1 and n.id = $2 and n.status in ('sending', 'cancelled') and n.attempts = $3",
        tenant_id as _,
        id as _,
        attempt,
        worker,
        providers.as_slice() as &[&str],
        &errors,
        &codes as _,
        &latencies,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Puts a claimed row back, unattempted, until `until` (the subscriber's quiet
/// hours, or every provider paused): the claim's attempt is given back.
/// False if the claim was lost (the row was cancelled meanwhile, or its
/// lease ran out): then nothing changes.
#[tracing::instrument(skip_all)]
pub async fn defer(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: NotificationId,
    attempt: i32,
    until: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications set status = 'deferred', attempts = attempts - 1, run_at = $4, dispatched_at = null
         where tenant_id = $1 and id = $2 and status = 'sending' and attempts = $3",
        tenant_id as _,
        id as _,
        attempt,
        until,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Gives claimed rows back at once, unattempted (their worker is stopping
/// before it got to them): each goes back to `queued`, due now, with its
/// attempt returned, unless the claim was lost meanwhile (cancelled, or its
/// lease ran out and another worker took it). `attempts` are the claimed
/// attempt numbers, one per id. Returns how many went back.
#[tracing::instrument(skip_all)]
pub async fn release(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[NotificationId],
    attempts: &[i32],
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update notifications n
         set status = 'queued', attempts = n.attempts - 1, run_at = now(), dispatched_at = null
         from unnest($2::uuid[], $3::int4[]) as r(id, attempt)
         where n.tenant_id = $1 and n.id = r.id and n.status = 'sending' and n.attempts = r.attempt",
        tenant_id as _,
        ids as _,
        attempts,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

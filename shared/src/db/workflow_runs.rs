//! The runner's side of workflow runs: waking the runs a notification's
//! status change woke, claiming a due run (`for update skip locked`: the row
//! stays locked until the transaction that executes its step commits),
//! recording each executed step once, and moving the run on. Works across tenants; every statement
//! that touches one run names its tenant.
//!
//! Times are the runner's `now`, passed in, so tests move time instead of
//! waiting.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};
use uuid::Uuid;

use crate::{
    domain::{SubscriberId, TenantId},
    workflows::Step,
};

/// Makes the runs a notification's status change woke (queued in
/// `workflow_wakes` by the trigger on `notifications`, see the migration
/// `workflow_status_wakes`) due at `now`, and empties that queue. Only runs
/// with a queued wake are touched, so the cost follows the wakes, not the
/// runs waiting. Returns how many runs were made due.
#[tracing::instrument(skip_all)]
pub async fn wake_queued(db: impl PgExecutor<'_>, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "with woken as (delete from workflow_wakes returning run_id, tenant_id)
         update workflow_runs r set run_at = $1
         from (select distinct run_id, tenant_id from woken) w
         where r.id = w.run_id and r.tenant_id = w.tenant_id
           and r.status = 'waiting' and r.run_at > $1",
        now,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Starts watching notifications `ids` for run `run`: from now on a change
/// of their status or read time that reaches `status` queues a wake for
/// the run. Returns whether one of them has reached `status` already (the
/// wait is then met at once). Watching first and looking second means a
/// change committed in between is seen by one or the other.
#[tracing::instrument(skip_all)]
pub async fn watch(
    db: &mut PgConnection,
    run: &Claimed,
    ids: &[Uuid],
    status: &str,
) -> Result<bool, sqlx::Error> {
    if ids.is_empty() {
        return Ok(false);
    }
    sqlx::query!(
        "update notifications set waited_by_run = $2
         where tenant_id = $1 and id = any($3) and waited_by_run is distinct from $2",
        run.tenant_id.0,
        run.id,
        ids as &[Uuid],
    )
    .execute(&mut *db)
    .await?;
    reached(db, run.tenant_id, ids, status).await
}

/// A run claimed for execution, with its version's steps.
#[derive(Debug, Clone)]
pub struct Claimed {
    /// Its id.
    pub id: Uuid,
    /// Its tenant.
    pub tenant_id: TenantId,
    /// The workflow.
    pub workflow_id: Uuid,
    /// The workflow's key.
    pub workflow_key: String,
    /// The subscriber.
    pub subscriber_id: SubscriberId,
    /// Their external id.
    pub external_id: String,
    /// The trigger's payload.
    pub payload: Json<Value>,
    /// `running` or `waiting`.
    pub status: String,
    /// The current step.
    pub step: i32,
    /// When it became current.
    pub step_started_at: DateTime<Utc>,
    /// A wait's (or delay's) end, once the step started one.
    pub wait_until: Option<DateTime<Utc>>,
    /// The notifications a status wait watches.
    pub wait_notifications: Option<Vec<Uuid>>,
    /// The status it waits for.
    pub wait_status: Option<String>,
    /// The event that ended a wait.
    pub event_payload: Option<Json<Value>>,
    /// A digest being collected (its key).
    pub digest_key: Option<String>,
    /// Triggers collected.
    pub digest_items: Option<Json<Value>>,
    /// Steps executed so far.
    pub executed: i64,
    /// The version's steps.
    pub steps: Json<Vec<Step>>,
}

/// Locks one run due at `now` that no other runner holds, or `None`.
#[tracing::instrument(skip_all)]
pub async fn claim_due(
    db: &mut PgConnection,
    now: DateTime<Utc>,
) -> Result<Option<Claimed>, sqlx::Error> {
    sqlx::query_as!(
        Claimed,
        r#"select r.id, r.tenant_id as "tenant_id: TenantId", r.workflow_id, w.key as workflow_key,
                r.subscriber_id as "subscriber_id: SubscriberId", s.external_id,
                r.payload as "payload: Json<Value>", r.status, r.step, r.step_started_at,
                r.wait_until, r.wait_notifications, r.wait_status,
                r.event_payload as "event_payload: Json<Value>", r.digest_key,
                r.digest_items as "digest_items: Json<Value>",
                (select count(*) from workflow_run_steps x where x.run_id = r.id) as "executed!",
                v.steps as "steps: Json<Vec<Step>>"
         from workflow_runs r
         join workflows w on w.id = r.workflow_id
         join workflow_versions v on v.workflow_id = r.workflow_id and v.version = r.version
         join subscribers s on s.id = r.subscriber_id
         where r.status in ('running', 'waiting') and r.run_at <= $1
         order by r.run_at
         limit 1
         for update of r skip locked"#,
        now,
    )
    .fetch_optional(db)
    .await
}

/// One executed step to record.
#[derive(Debug, Clone)]
pub struct Executed<'a> {
    /// The step's key.
    pub key: &'a str,
    /// Its type.
    pub kind: &'a str,
    /// Its outcome.
    pub outcome: &'a str,
    /// More about it.
    pub detail: Option<String>,
    /// Notifications it created.
    pub notifications: Vec<Uuid>,
}

/// Records step `e` of run `run`; false when it was already recorded (the
/// step then must not act again).
#[tracing::instrument(skip_all)]
pub async fn record(
    db: &mut PgConnection,
    run: &Claimed,
    seq: i64,
    e: &Executed<'_>,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query!(
        "insert into workflow_run_steps
             (run_id, tenant_id, step_key, seq, kind, outcome, detail, notification_ids,
              workflow_id, subscriber_id, started_at, finished_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
         on conflict (run_id, step_key) do nothing",
        run.id,
        run.tenant_id.0,
        e.key,
        seq as i32,
        e.kind,
        e.outcome,
        e.detail.as_deref(),
        &e.notifications,
        run.workflow_id,
        run.subscriber_id.0,
        run.step_started_at.min(now),
        now,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fills in the notifications of a recorded send step.
#[tracing::instrument(skip_all)]
pub async fn set_notifications(
    db: impl PgExecutor<'_>,
    run: &Claimed,
    key: &str,
    ids: &[Uuid],
    outcome: &str,
    detail: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "update workflow_run_steps set notification_ids = $4, outcome = $5, detail = $6
         where tenant_id = $1 and run_id = $2 and step_key = $3",
        run.tenant_id.0,
        run.id,
        key,
        ids as &[Uuid],
        outcome,
        detail,
    )
    .execute(db)
    .await?;
    Ok(())
}

/// The outcome and notifications of step `key` of run `run`, if it ran.
#[tracing::instrument(skip_all)]
pub async fn step_of(
    db: impl PgExecutor<'_>,
    run: &Claimed,
    key: &str,
) -> Result<Option<(String, Vec<Uuid>)>, sqlx::Error> {
    let step = sqlx::query!(
        "select outcome, notification_ids from workflow_run_steps
         where tenant_id = $1 and run_id = $2 and step_key = $3",
        run.tenant_id.0,
        run.id,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(step.map(|s| (s.outcome, s.notification_ids)))
}

/// Whether one of notifications `ids` of `tenant_id` reached `status`
/// (`read` is the read mark; `delivered` also counts `read`; `sent` counts
/// anything from handed over on).
#[tracing::instrument(skip_all)]
pub async fn reached(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    ids: &[Uuid],
    status: &str,
) -> Result<bool, sqlx::Error> {
    if ids.is_empty() {
        return Ok(false);
    }
    sqlx::query_scalar!(
        r#"select exists (select 1 from notifications
                        where tenant_id = $1 and id = any($2)
                          and workflow_status_reached($3, status, read_at)) as "reached!""#,
        tenant_id.0,
        ids as &[Uuid],
        status,
    )
    .fetch_one(db)
    .await
}

/// How a run moves on.
#[derive(Debug, Clone)]
pub enum Next {
    /// To step `step`, due at `now`.
    Step(i32),
    /// Park the current step until `until` (a delay, or a digest window
    /// when `digest_key` is set).
    Sleep {
        /// When to look again.
        until: DateTime<Utc>,
        /// A digest's key, while collecting.
        digest_key: Option<String>,
        /// Its first item.
        digest_items: Option<Value>,
    },
    /// Wait for notifications to reach a status, or for an event, until
    /// `until`.
    Wait {
        /// The deadline.
        until: DateTime<Utc>,
        /// Watched notifications.
        notifications: Option<Vec<Uuid>>,
        /// Their status.
        status: Option<&'static str>,
        /// Or the event's name.
        event: Option<String>,
    },
    /// Keep waiting as before; look again at `until`.
    Park(DateTime<Utc>),
    /// End the run with this status (`completed`, `failed`, `merged`,
    /// `dropped`) and error.
    Finish(&'static str, Option<String>),
}

/// Moves run `run` on.
#[tracing::instrument(skip_all)]
pub async fn advance(
    db: &mut PgConnection,
    run: &Claimed,
    next: Next,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    let q = match next {
        Next::Step(step) => sqlx::query!(
            "update workflow_runs set status = 'running', step = $3, step_started_at = $4,
                 run_at = $4, wait_until = null, wait_notifications = null, wait_status = null,
                 wait_event = null, digest_key = null
             where tenant_id = $1 and id = $2",
            run.tenant_id.0,
            run.id,
            step,
            now,
        ),
        Next::Sleep {
            until,
            digest_key,
            digest_items,
        } => sqlx::query!(
            "update workflow_runs set status = case when $4::text is null then 'running'
                                                     else 'waiting' end,
                 run_at = $3, wait_until = $3, digest_key = $4,
                 digest_items = coalesce($5, digest_items)
             where tenant_id = $1 and id = $2",
            run.tenant_id.0,
            run.id,
            until,
            digest_key,
            digest_items,
        ),
        Next::Wait {
            until,
            notifications,
            status,
            event,
        } => sqlx::query!(
            "update workflow_runs set status = 'waiting', run_at = $3, wait_until = $3,
                 wait_notifications = $4, wait_status = $5, wait_event = $6, event_payload = null
             where tenant_id = $1 and id = $2",
            run.tenant_id.0,
            run.id,
            until,
            notifications.as_deref(),
            status,
            event,
        ),
        Next::Park(until) => sqlx::query!(
            "update workflow_runs set run_at = $3 where tenant_id = $1 and id = $2",
            run.tenant_id.0,
            run.id,
            until,
        ),
        Next::Finish(status, error) => sqlx::query!(
            "update workflow_runs set status = $3, error = $4, run_at = null, finished_at = $5,
                 wait_notifications = null, wait_event = null, digest_key = null
             where tenant_id = $1 and id = $2",
            run.tenant_id.0,
            run.id,
            status,
            error,
            now,
        ),
    };
    q.execute(db).await?;
    Ok(())
}

/// Takes a transaction-scoped lock on `parts` (a digest's or a throttle's
/// subscriber and key), so runs of one subscriber decide one at a time.
#[tracing::instrument(skip_all)]
pub async fn lock(db: &mut PgConnection, parts: &str) -> Result<(), sqlx::Error> {
    sqlx::query!(
        "select pg_advisory_xact_lock(hashtextextended($1, 7))",
        parts
    )
    .execute(db)
    .await?;
    Ok(())
}

/// Adds run `run`'s payload to the digest run `run` would join: another run
/// of the same workflow and subscriber collecting at the same step with the
/// same key and still open at `now`. Returns that run's id, or `None` when
/// there is none (this run then collects).
#[tracing::instrument(skip_all)]
pub async fn join_digest(
    db: &mut PgConnection,
    run: &Claimed,
    key: &str,
    now: DateTime<Utc>,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update workflow_runs set digest_items = digest_items || jsonb_build_array($6::jsonb)
         where id = (select id from workflow_runs
                     where tenant_id = $1 and workflow_id = $2 and subscriber_id = $3
                       and step = $4 and status = 'waiting' and digest_key = $5
                       and wait_until > $7 and id <> $8
                     order by created_at limit 1)
           and status = 'waiting' and digest_key = $5 and wait_until > $7
         returning id",
        run.tenant_id.0,
        run.workflow_id,
        run.subscriber_id.0,
        run.step,
        key,
        &run.payload.0,
        now,
        run.id,
    )
    .fetch_optional(db)
    .await
}

/// Runs of `run`'s workflow and subscriber that passed throttle `key` in
/// the window ending at `now`.
#[tracing::instrument(skip_all)]
pub async fn passed(
    db: impl PgExecutor<'_>,
    run: &Claimed,
    key: &str,
    since: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select count(*) as "count!" from workflow_run_steps
         where workflow_id = $1 and subscriber_id = $2 and step_key = $3 and outcome = 'passed'
           and finished_at > $4"#,
        run.workflow_id,
        run.subscriber_id.0,
        key,
        since,
    )
    .fetch_one(db)
    .await
}

/// Adds run `run`'s payload to the `digest_items` of the latest run of the
/// same workflow and subscriber that passed throttle `key` and is still
/// going. Returns that run, or `None` when there is none.
#[tracing::instrument(skip_all)]
pub async fn merge_into_latest(
    db: &mut PgConnection,
    run: &Claimed,
    key: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update workflow_runs r
         set digest_items = coalesce(r.digest_items, jsonb_build_array(r.payload))
                            || jsonb_build_array($5::jsonb)
         where r.id = (select x.run_id from workflow_run_steps x
                       join workflow_runs o on o.id = x.run_id
                       where x.workflow_id = $2 and x.subscriber_id = $3 and x.step_key = $4
                         and x.outcome = 'passed' and o.tenant_id = $1
                         and o.status in ('running', 'waiting') and o.id <> $6
                       order by x.finished_at desc limit 1)
         returning r.id",
        run.tenant_id.0,
        run.workflow_id,
        run.subscriber_id.0,
        key,
        &run.payload.0,
        run.id,
    )
    .fetch_optional(db)
    .await
}

/// Erases the payloads (trigger, digest, event: PHI) of up to `limit` runs
/// that ended more than `days` ago, like [`super::notifications::redact_expired_content`]
/// does for message bodies. Status, steps and times stay. Works across
/// tenants.
#[tracing::instrument(skip_all)]
pub async fn redact_finished(
    db: impl PgExecutor<'_>,
    days: u32,
    limit: i64,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query!(
        "update workflow_runs
         set payload = '{}'::jsonb, digest_items = null, event_payload = null
         where id in (
             select id from workflow_runs
             where status not in ('running', 'waiting')
               and finished_at < now() - make_interval(days => $1)
               and (payload <> '{}'::jsonb or digest_items is not null
                    or event_payload is not null)
             limit $2
             for update skip locked)",
        days as i32,
        limit,
    )
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

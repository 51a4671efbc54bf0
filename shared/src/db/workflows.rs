//! Workflows as the API sees them: versioned definitions, triggers that
//! start runs (one per subscriber), a run and its steps, cancellation and
//! caller events. The runner's side (claiming due runs and advancing them)
//! is [`super::workflow_runs`].
//!
//! Saving a workflow under a key that exists makes a new version; runs keep
//! the version they started with.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgExecutor, types::Json};
use uuid::Uuid;

use crate::{
    domain::{SubscriberId, TenantId, WorkflowRunId},
    workflows::Step,
};

/// A workflow at one version.
#[derive(Debug, Clone)]
pub struct Workflow {
    /// Its id.
    pub id: Uuid,
    /// The caller's key.
    pub key: String,
    /// This version.
    pub version: i32,
    /// The newest version.
    pub latest: i32,
    /// Its display name (of this version).
    pub name: String,
    /// The steps (of this version).
    pub steps: Json<Vec<Step>>,
    /// When the workflow was first saved.
    pub created_at: DateTime<Utc>,
    /// When this version was saved.
    pub saved_at: DateTime<Utc>,
}

/// Saves `steps` as the next version of workflow `key` (the first when it
/// is new), and returns it.
#[tracing::instrument(skip_all)]
pub async fn save(
    db: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
    name: &str,
    steps: &[Step],
) -> Result<Workflow, sqlx::Error> {
    let saved = sqlx::query!(
        "insert into workflows (id, tenant_id, key, version) values ($1, $2, $3, 1)
         on conflict (tenant_id, key) where deleted_at is null
         do update set version = workflows.version + 1
         returning id, version",
        Uuid::now_v7(),
        tenant_id.0,
        key,
    )
    .fetch_one(&mut *db)
    .await?;
    let (id, version) = (saved.id, saved.version);
    sqlx::query!(
        "insert into workflow_versions (workflow_id, tenant_id, version, name, steps)
         values ($1, $2, $3, $4, $5)",
        id,
        tenant_id.0,
        version,
        name,
        Json(steps) as _,
    )
    .execute(&mut *db)
    .await?;
    get(&mut *db, tenant_id, key, Some(version))
        .await?
        .ok_or(sqlx::Error::RowNotFound)
}

/// Workflow `key` at `version` (the newest when `None`).
#[tracing::instrument(skip_all)]
pub async fn get(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
    version: Option<i32>,
) -> Result<Option<Workflow>, sqlx::Error> {
    sqlx::query_as!(
        Workflow,
        r#"select w.id, w.key, v.version, w.version as latest, v.name,
             v.steps as "steps: Json<Vec<Step>>", w.created_at, v.created_at as saved_at
         from workflows w
         join workflow_versions v on v.workflow_id = w.id
         where w.tenant_id = $1 and w.key = $2 and w.deleted_at is null
           and v.version = coalesce($3, w.version)"#,
        tenant_id.0,
        key,
        version,
    )
    .fetch_optional(db)
    .await
}

/// Up to `limit` workflows (newest versions) by key, after `after`.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<Workflow>, sqlx::Error> {
    sqlx::query_as!(
        Workflow,
        r#"select w.id, w.key, v.version, w.version as latest, v.name,
             v.steps as "steps: Json<Vec<Step>>", w.created_at, v.created_at as saved_at
         from workflows w
         join workflow_versions v on v.workflow_id = w.id and v.version = w.version
         where w.tenant_id = $1 and w.deleted_at is null and ($2::text is null or w.key > $2)
         order by w.key limit $3"#,
        tenant_id.0,
        after,
        limit,
    )
    .fetch_all(db)
    .await
}

/// A trigger as recorded: its request hash and the runs it started.
pub type Trigger = (Option<Vec<u8>>, Vec<WorkflowRunId>);

/// An earlier trigger with the same `Idempotency-Key`: its request hash and
/// the runs it started.
#[tracing::instrument(skip_all)]
pub async fn earlier_trigger(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<Trigger>, sqlx::Error> {
    let found = sqlx::query!(
        "select request_hash, run_ids from workflow_triggers
         where tenant_id = $1 and idempotency_key = $2",
        tenant_id.0,
        key,
    )
    .fetch_optional(db)
    .await?;
    Ok(found.map(|t| {
        let runs = t.run_ids.into_iter().map(WorkflowRunId).collect();
        (t.request_hash, runs)
    }))
}

/// What a trigger starts.
#[derive(Debug, Clone)]
pub struct NewRuns<'a> {
    /// The workflow.
    pub workflow_id: Uuid,
    /// Its version the runs keep.
    pub version: i32,
    /// One run per subscriber.
    pub subscribers: &'a [SubscriberId],
    /// The trigger's payload.
    pub payload: &'a Value,
    /// Cancels them all when named to the cancel endpoint.
    pub cancellation_key: Option<&'a str>,
    /// The caller's `Idempotency-Key` and a hash of the request.
    pub idempotency: Option<(&'a str, Vec<u8>)>,
}

/// Whether workflow `id` is still there (not deleted), holding it so until
/// the transaction ends: a delete waits for the trigger that started runs
/// to commit (and then cancels those runs too), and a trigger that comes
/// second sees the workflow gone.
#[tracing::instrument(skip_all)]
pub async fn hold(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    let held: Option<i32> = sqlx::query_scalar!(
        r#"select 1 as "held!" from workflows where tenant_id = $1 and id = $2 and deleted_at is null
         for share"#,
        tenant_id.0,
        id,
    )
    .fetch_optional(db)
    .await?;
    Ok(held.is_some())
}

/// Deletes workflow `key`: it no longer answers, lists or triggers, and its
/// key is free; its versions and its runs' history stay. Runs still going
/// are cancelled as [`cancel`] does. `None` when there is no such workflow.
#[tracing::instrument(skip_all)]
pub async fn delete(
    db: &mut PgConnection,
    tenant_id: TenantId,
    key: &str,
) -> Result<Option<(Uuid, Cancelled)>, sqlx::Error> {
    let id: Option<Uuid> = sqlx::query_scalar!(
        "update workflows set deleted_at = now()
         where tenant_id = $1 and key = $2 and deleted_at is null
         returning id",
        tenant_id.0,
        key,
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(id) = id else { return Ok(None) };
    let cancelled = cancel(db, tenant_id, Which::Workflow(id)).await?;
    Ok(Some((id, cancelled)))
}

/// Starts one run per subscriber, due now, and records the trigger. `None`
/// when a concurrent request with the same idempotency key won: the caller
/// reads [`earlier_trigger`] again.
#[tracing::instrument(skip_all, fields(runs = new.subscribers.len()))]
pub async fn start(
    db: &mut PgConnection,
    tenant_id: TenantId,
    new: NewRuns<'_>,
) -> Result<Option<Vec<WorkflowRunId>>, sqlx::Error> {
    let ids: Vec<Uuid> = new.subscribers.iter().map(|_| Uuid::now_v7()).collect();
    let (key, hash) = match &new.idempotency {
        Some((k, h)) => (Some(*k), Some(h.as_slice())),
        None => (None, None),
    };
    let recorded = sqlx::query!(
        "insert into workflow_triggers (id, tenant_id, idempotency_key, request_hash, run_ids)
         values ($1, $2, $3, $4, $5)
         on conflict (tenant_id, idempotency_key) where idempotency_key is not null do nothing",
        Uuid::now_v7(),
        tenant_id.0,
        key,
        hash,
        &ids,
    )
    .execute(&mut *db)
    .await?;
    if recorded.rows_affected() == 0 {
        return Ok(None);
    }
    sqlx::query!(
        "insert into workflow_runs
             (id, tenant_id, workflow_id, version, subscriber_id, payload, cancellation_key,
              status, step, run_at)
         select r.id, $1, $2, $3, r.subscriber_id, $4, $5, 'running', 0, now()
         from unnest($6::uuid[], $7::uuid[]) as r(id, subscriber_id)",
        tenant_id.0,
        new.workflow_id,
        new.version,
        new.payload,
        new.cancellation_key,
        &ids,
        new.subscribers as _,
    )
    .execute(&mut *db)
    .await?;
    Ok(Some(ids.into_iter().map(WorkflowRunId).collect()))
}

/// The subscribers of topic `topic_id`, at most `limit` (the caller refuses
/// larger topics).
#[tracing::instrument(skip_all)]
pub async fn topic_subscribers(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    topic_id: Uuid,
    limit: i64,
) -> Result<Vec<SubscriberId>, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select subscriber_id as "subscriber_id: SubscriberId" from topic_members
         where tenant_id = $1 and topic_id = $2
         order by subscriber_id limit $3"#,
        tenant_id.0,
        topic_id,
        limit,
    )
    .fetch_all(db)
    .await
}

/// A run as its organisation sees it.
#[derive(Debug, Clone)]
pub struct Run {
    /// Its id.
    pub id: WorkflowRunId,
    /// The workflow's key.
    pub workflow: String,
    /// The version it runs.
    pub version: i32,
    /// The subscriber's external id.
    pub subscriber_id: String,
    /// `running`, `waiting`, `completed`, `cancelled`, `failed`, `merged`,
    /// `dropped`.
    pub status: String,
    /// The current step's place.
    pub step: i32,
    /// When the current step became current.
    pub step_started_at: DateTime<Utc>,
    /// When the runner looks at it next.
    pub run_at: Option<DateTime<Utc>>,
    /// While waiting: the deadline.
    pub wait_until: Option<DateTime<Utc>>,
    /// The caller's cancellation key.
    pub cancellation_key: Option<String>,
    /// Triggers collected by a digest (this run's own first).
    pub digest_items: Option<Json<Value>>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The steps of its version.
    pub steps: Json<Vec<Step>>,
}

/// One executed step of a run.
#[derive(Debug, Clone)]
pub struct RunStep {
    /// The step's key.
    pub step_key: String,
    /// Its type.
    pub kind: String,
    /// Its outcome.
    pub outcome: String,
    /// More about it (why skipped, which run collected it, …).
    pub detail: Option<String>,
    /// Notifications it created.
    pub notification_ids: Vec<Uuid>,
    /// When it became current.
    pub started_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: DateTime<Utc>,
}

/// Run `id` of `tenant_id` with its executed steps in order.
#[tracing::instrument(skip_all)]
pub async fn run(
    db: &mut PgConnection,
    tenant_id: TenantId,
    id: WorkflowRunId,
) -> Result<Option<(Run, Vec<RunStep>)>, sqlx::Error> {
    let run: Option<Run> = sqlx::query_as!(
        Run,
        r#"select r.id as "id: WorkflowRunId", w.key as workflow, r.version,
                s.external_id as subscriber_id, r.status, r.step, r.step_started_at, r.run_at, r.wait_until, r.cancellation_key,
                r.digest_items as "digest_items: Json<Value>", r.error, r.created_at, r.finished_at,
                v.steps as "steps: Json<Vec<Step>>"
         from workflow_runs r
         join workflows w on w.id = r.workflow_id
         join workflow_versions v on v.workflow_id = r.workflow_id and v.version = r.version
         join subscribers s on s.id = r.subscriber_id
         where r.tenant_id = $1 and r.id = $2"#,
        tenant_id.0,
        id.0,
    )
    .fetch_optional(&mut *db)
    .await?;
    let Some(run) = run else { return Ok(None) };
    let steps = sqlx::query_as!(
        RunStep,
        "select step_key, kind, outcome, detail, notification_ids, started_at, finished_at
         from workflow_run_steps where tenant_id = $1 and run_id = $2 order by seq",
        tenant_id.0,
        id.0,
    )
    .fetch_all(&mut *db)
    .await?;
    Ok(Some((run, steps)))
}

/// Which runs to cancel.
#[derive(Debug, Clone, Copy)]
pub enum Which<'a> {
    /// One run.
    Run(WorkflowRunId),
    /// Every run triggered with this cancellation key.
    Key(&'a str),
    /// Every run of this workflow (it is being deleted).
    Workflow(Uuid),
}

/// What [`cancel`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// Runs that were going and are now cancelled.
    pub runs: u64,
    /// Notifications of those runs that were not yet with a provider and
    /// now never will be.
    pub notifications: u64,
}

/// Cancels the runs that are still going: no step of theirs runs again, and
/// their notifications not yet handed to a provider (`queued`, `deferred`,
/// or claimed by a worker that has not sent yet) are cancelled as a single
/// notification's cancel does. A step being executed finishes first (its
/// row is locked) and its notifications are cancelled here too.
#[tracing::instrument(skip_all)]
pub async fn cancel(
    db: &mut PgConnection,
    tenant_id: TenantId,
    which: Which<'_>,
) -> Result<Cancelled, sqlx::Error> {
    let (id, key, workflow) = match which {
        Which::Run(id) => (Some(id.0), None, None),
        Which::Key(k) => (None, Some(k), None),
        Which::Workflow(w) => (None, None, Some(w)),
    };
    let runs: Vec<Uuid> = sqlx::query_scalar!(
        "update workflow_runs set status = 'cancelled', run_at = null, finished_at = now(),
             wait_notifications = null, wait_event = null
         where tenant_id = $1 and status in ('running', 'waiting')
           and (($2::uuid is not null and id = $2)
                or ($3::text is not null and cancellation_key = $3)
                or ($4::uuid is not null and workflow_id = $4))
         returning id",
        tenant_id.0,
        id,
        key,
        workflow,
    )
    .fetch_all(&mut *db)
    .await?;
    if runs.is_empty() {
        return Ok(Cancelled::default());
    }
    let notifications = sqlx::query!(
        "update notifications set status = 'cancelled', dispatched_at = null,
             last_error = 'cancelled with its workflow run'
         where tenant_id = $1 and status in ('queued', 'deferred', 'sending')
           and id in (select unnest(notification_ids) from workflow_run_steps
                      where tenant_id = $1 and run_id = any($2))",
        tenant_id.0,
        &runs,
    )
    .execute(&mut *db)
    .await?
    .rows_affected();
    Ok(Cancelled {
        runs: runs.len() as u64,
        notifications,
    })
}

/// Whether run `id` exists for `tenant_id`.
#[tracing::instrument(skip_all)]
pub async fn run_exists(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: WorkflowRunId,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar!(
        r#"select exists (select 1 from workflow_runs where tenant_id = $1 and id = $2) as "exists!""#,
        tenant_id.0,
        id.0,
    )
    .fetch_one(db)
    .await
}

/// Ends the waits of `subscriber_id`'s runs waiting for event `name`: they
/// are due now and take `payload` as the event. Returns the runs resumed.
#[tracing::instrument(skip_all)]
pub async fn post_event(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    subscriber_id: SubscriberId,
    name: &str,
    payload: &Value,
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar!(
        "update workflow_runs set event_payload = $4, run_at = least(run_at, now())
         where tenant_id = $1 and subscriber_id = $2 and status = 'waiting' and wait_event = $3
           and event_payload is null
         returning id",
        tenant_id.0,
        subscriber_id.0,
        name,
        payload,
    )
    .fetch_all(db)
    .await
}

/// A run in a list.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// Its id.
    pub id: WorkflowRunId,
    /// The workflow's key.
    pub workflow: String,
    /// The version it runs.
    pub version: i32,
    /// The subscriber's external id.
    pub subscriber_id: String,
    /// Its status.
    pub status: String,
    /// The current step's key, while it goes on.
    pub current_step: Option<String>,
    /// The trigger's cancellation key.
    pub cancellation_key: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Which runs to list; every filter given must hold.
#[derive(Debug, Clone, Default)]
pub struct RunFilter<'a> {
    /// The workflow's key (runs of a deleted workflow of that key too).
    pub workflow: Option<&'a str>,
    /// The run's status.
    pub status: Option<&'a str>,
    /// The subscriber.
    pub subscriber_id: Option<SubscriberId>,
    /// The trigger's cancellation key.
    pub cancellation_key: Option<&'a str>,
}

/// Up to `limit` runs of `tenant_id` matching `filter`, newest first, after
/// `after` (the creation time and id of the last run of the page before).
#[tracing::instrument(skip_all)]
pub async fn list_runs(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    filter: &RunFilter<'_>,
    after: Option<(DateTime<Utc>, WorkflowRunId)>,
    limit: i64,
) -> Result<Vec<RunSummary>, sqlx::Error> {
    sqlx::query_as!(
        RunSummary,
        r#"select r.id as "id: WorkflowRunId", w.key as workflow, r.version, s.external_id as subscriber_id, r.status,
                case when r.status in ('running', 'waiting')
                     then v.steps -> r.step ->> 'key' end as current_step,
                r.cancellation_key, r.error, r.created_at, r.finished_at
         from workflow_runs r
         join workflows w on w.id = r.workflow_id
         join workflow_versions v on v.workflow_id = r.workflow_id and v.version = r.version
         join subscribers s on s.id = r.subscriber_id
         where r.tenant_id = $1
           and ($2::text is null or w.key = $2)
           and ($3::text is null or r.status = $3)
           and ($4::uuid is null or r.subscriber_id = $4)
           and ($5::text is null or r.cancellation_key = $5)
           and ($6::timestamptz is null or (r.created_at, r.id) < ($6, $7))
         order by r.created_at desc, r.id desc
         limit $8"#,
        tenant_id.0,
        filter.workflow,
        filter.status,
        filter.subscriber_id.map(|s| s.0),
        filter.cancellation_key,
        after.map(|a| a.0),
        after.map(|a| a.1.0),
        limit,
    )
    .fetch_all(db)
    .await
}

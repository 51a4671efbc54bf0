//! Workflow runs under `/api/v1/services/workflows`: reading a run with
//! each step's state and times, cancelling one run or every run of a
//! cancellation key, and events that resume runs waiting for them.
//!
//! Cancelling stops every pending step, and cancels the run's notifications
//! that no provider has been handed yet (as a single notification's cancel
//! does), so nothing of a cancelled run is sent afterwards.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::Path,
    payload::Json,
    validation::{MaxLength, MinLength},
};
use serde_json::Value;
use shared::{
    db::workflows::{self as store, Cancelled, RunSummary, Which},
    domain::{ExternalId, TenantId, WorkflowRunId},
    workflows::StepKind,
};

use crate::{
    AppState,
    auth::ServiceKey,
    body::StrictJson,
    error::ApiError,
    extract::ServiceCtx,
    extract::{Cursor, PageSize, Params, PathId},
    middleware::RequestId,
    routes::ApiTags,
    services::workflows as service,
};

/// Runs, cancellation and events.
#[derive(Debug)]
pub struct WorkflowRunsApi;

/// One step of a run.
#[derive(Debug, Clone, Object)]
pub struct RunStepBody {
    /// The step's key.
    pub key: String,
    /// Its type.
    #[oai(rename = "type")]
    pub kind: String,
    /// `done` (executed), `current` (due or waiting), `pending` (not yet
    /// reached) or `not_run` (jumped over, or the run ended before it).
    pub state: String,
    /// When done: `sent`, `skipped`, `met`, `timed_out`, `done`, `taken`,
    /// `not_taken`, `collected`, `passed`, `merged`, `dropped`, `failed`.
    pub outcome: Option<String>,
    /// More about the outcome (channels skipped, the run a trigger was
    /// collected by, …).
    pub detail: Option<String>,
    /// Notifications a send step created.
    pub notification_ids: Vec<String>,
    /// When it became current.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// While current: when the runner looks at it next (a delay's end, a
    /// wait's deadline).
    pub due_at: Option<DateTime<Utc>>,
}

/// A run.
#[derive(Debug, Clone, Object)]
pub struct RunBody {
    /// Its id.
    pub id: String,
    /// The workflow's key.
    pub workflow: String,
    /// The version it runs.
    pub version: i32,
    /// The subscriber's external id.
    pub subscriber_id: String,
    /// `running`, `waiting`, `completed`, `cancelled`, `failed`, `merged`
    /// (collected by another run's digest or throttle) or `dropped`
    /// (throttled).
    pub status: String,
    /// The current step's key, while the run goes on.
    pub current_step: Option<String>,
    /// The trigger's cancellation key.
    pub cancellation_key: Option<String>,
    /// Triggers a digest (or a throttle's merge) collected into this run.
    pub collected: Option<i64>,
    /// Why it failed.
    pub error: Option<String>,
    /// When it was triggered.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Every step of its version, in order.
    pub steps: Vec<RunStepBody>,
}

/// A run.
#[derive(Debug, ApiResponse)]
pub enum RunResponse {
    /// The run.
    #[oai(status = 200)]
    Ok(Json<RunBody>),
}

/// A run in a list (read the run for its steps).
#[derive(Debug, Clone, Object)]
pub struct RunListItem {
    /// Its id.
    pub id: String,
    /// The workflow's key.
    pub workflow: String,
    /// The version it runs.
    pub version: i32,
    /// The subscriber's external id.
    pub subscriber_id: String,
    /// `running`, `waiting`, `completed`, `cancelled`, `failed`, `merged`
    /// or `dropped`.
    pub status: String,
    /// The current step's key, while the run goes on.
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

impl From<RunSummary> for RunListItem {
    fn from(r: RunSummary) -> Self {
        Self {
            id: r.id.to_string(),
            workflow: r.workflow,
            version: r.version,
            subscriber_id: r.subscriber_id,
            status: r.status,
            current_step: r.current_step,
            cancellation_key: r.cancellation_key,
            error: r.error,
            created_at: r.created_at,
            finished_at: r.finished_at,
        }
    }
}

/// A page of runs.
#[derive(Debug, Clone, Object)]
pub struct RunPage {
    /// The runs, newest first.
    pub items: Vec<RunListItem>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Runs.
#[derive(Debug, ApiResponse)]
pub enum RunListResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<RunPage>),
}

/// What a cancel did.
#[derive(Debug, Clone, Object)]
pub struct CancelledBody {
    /// Runs that were going and are now cancelled.
    pub runs_cancelled: u64,
    /// Their notifications cancelled before any provider had them.
    pub notifications_cancelled: u64,
}

impl From<Cancelled> for CancelledBody {
    fn from(c: Cancelled) -> Self {
        Self {
            runs_cancelled: c.runs,
            notifications_cancelled: c.notifications,
        }
    }
}

/// Answers to a cancel.
#[derive(Debug, ApiResponse)]
pub enum CancelResponse {
    /// Done (also when nothing was left to cancel).
    #[oai(status = 200)]
    Ok(Json<CancelledBody>),
}

/// Cancel every run triggered with a key.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CancelByKey {
    /// The `cancellation_key` of the triggers.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub cancellation_key: String,
}

/// An event for a subscriber.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    /// The subscriber's external id.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub subscriber_id: String,
    /// The event's name, as `wait_for` steps name it (lower-case letters,
    /// digits, `.`, `_`, `-`).
    #[oai(validator(min_length = 1, max_length = 100))]
    pub name: String,
    /// Data the following steps get as `event` (a JSON object, at most
    /// 16 KiB).
    pub payload: Option<Value>,
}

/// Runs an event resumed.
#[derive(Debug, Clone, Object)]
pub struct EventAccepted {
    /// The runs that were waiting for it and now go on.
    pub resumed_run_ids: Vec<String>,
}

/// Answers to an event.
#[derive(Debug, ApiResponse)]
pub enum EventResponse {
    /// Accepted (also when no run was waiting for it).
    #[oai(status = 202)]
    Accepted(Json<EventAccepted>),
}

/// Records a cancellation in the audit log, in its transaction (counts
/// only: a cancellation key is the caller's and may say more than needed).
async fn audit_cancel(
    tx: &mut sqlx::PgConnection,
    auth: &ServiceKey,
    request_id: &RequestId,
    run: Option<WorkflowRunId>,
    done: Cancelled,
) -> Result<(), ApiError> {
    shared::db::audit::record(
        tx,
        shared::db::audit::Entry {
            tenant_id: Some(auth.0.tenant_id),
            actor: &format!("api_key:{}", auth.0.key_id),
            action: "workflow_run.cancel",
            resource_type: "workflow_run",
            resource_id: run.map(|r| r.to_string()),
            result: "success",
            request_id: Some(&request_id.0),
            details: serde_json::json!({
                "by": if run.is_some() { "run" } else { "cancellation_key" },
                "runs": done.runs,
                "notifications": done.notifications,
            }),
        },
    )
    .await?;
    Ok(())
}

fn kind_name(kind: &StepKind) -> &'static str {
    match kind {
        StepKind::Send { .. } => "send",
        StepKind::Delay(_) => "delay",
        StepKind::WaitFor { .. } => "wait_for",
        StepKind::Branch { .. } => "branch",
        StepKind::Digest { .. } => "digest",
        StepKind::Throttle { .. } => "throttle",
    }
}

async fn read(
    state: &AppState,
    tenant_id: TenantId,
    id: WorkflowRunId,
) -> Result<RunBody, ApiError> {
    let mut conn = state.pool.acquire().await?;
    let (run, done) = store::run(&mut conn, tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("workflow run"))?;
    let going = matches!(run.status.as_str(), "running" | "waiting");
    let steps = run
        .steps
        .0
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let executed = done.iter().find(|d| d.step_key == s.key);
            let current = going && i as i32 == run.step && executed.is_none();
            let state = match (executed, current) {
                (Some(_), _) => "done",
                (None, true) => "current",
                (None, false) if going && i as i32 > run.step => "pending",
                _ => "not_run",
            };
            RunStepBody {
                key: s.key.clone(),
                kind: kind_name(&s.kind).into(),
                state: state.into(),
                outcome: executed.map(|d| d.outcome.clone()),
                detail: executed.and_then(|d| d.detail.clone()),
                notification_ids: executed
                    .map(|d| d.notification_ids.iter().map(ToString::to_string).collect())
                    .unwrap_or_default(),
                started_at: executed
                    .map(|d| d.started_at)
                    .or(current.then_some(run.step_started_at)),
                finished_at: executed.map(|d| d.finished_at),
                due_at: if current { run.run_at } else { None },
            }
        })
        .collect();
    Ok(RunBody {
        id: run.id.to_string(),
        current_step: going
            .then(|| run.steps.0.get(run.step as usize).map(|s| s.key.clone()))
            .flatten(),
        workflow: run.workflow,
        version: run.version,
        subscriber_id: run.subscriber_id,
        status: run.status,
        cancellation_key: run.cancellation_key,
        collected: run
            .digest_items
            .and_then(|d| d.0.as_array().map(|a| a.len() as i64)),
        error: run.error,
        created_at: run.created_at,
        finished_at: run.finished_at,
        steps,
    })
}

crate::query_params! {
    /// The filters and page of the run list.
    pub struct RunQuery {
        /// Runs per page.
        limit: PageSize,
        /// The `next_cursor` of the page before.
        cursor: Option<Cursor<(DateTime<Utc>, WorkflowRunId)>>,
        /// Only runs of the workflow with this key.
        workflow: Option<String> where [MinLength::new(1), MaxLength::new(100)],
        /// Only runs with this status: `running`, `waiting`, `completed`,
        /// `cancelled`, `failed`, `merged` or `dropped`.
        status: Option<String>,
        /// Only runs of the subscriber with this external id.
        subscriber_id: Option<String> where [MinLength::new(1), MaxLength::new(255)],
        /// Only runs triggered with this cancellation key.
        cancellation_key: Option<String> where [MinLength::new(1), MaxLength::new(255)],
    }
}

#[OpenApi(
    prefix_path = "/api/v1/services/workflows",
    tag = "ApiTags::Notifications"
)]
impl WorkflowRunsApi {
    /// List the organisation's runs, newest first, optionally only those of
    /// a workflow key, a status, a subscriber or a cancellation key (every
    /// filter given must hold). Runs of a deleted workflow are listed under
    /// its key.
    #[oai(path = "/runs", method = "get", operation_id = "workflows.list_runs")]
    async fn list_runs(
        &self,
        cx: ServiceCtx<'_>,
        query: Params<RunQuery>,
    ) -> Result<RunListResponse, ApiError> {
        let RunQuery {
            limit,
            cursor,
            workflow,
            status,
            subscriber_id,
            cancellation_key,
        } = query.0;
        let filter = service::RunListFilter {
            workflow,
            status,
            subscriber_id,
            cancellation_key,
        };
        let (items, next_cursor) =
            service::list_runs(cx.state, cx.auth.0.tenant_id, filter, cursor, limit).await?;
        Ok(RunListResponse::Ok(Json(RunPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Read a run: its status and every step's state, outcome and times.
    #[oai(path = "/runs/:id", method = "get", operation_id = "workflows.get_run")]
    async fn get_run(
        &self,
        cx: ServiceCtx<'_>,
        /// The run's id.
        #[oai(validator(max_length = 36))]
        id: Path<PathId<WorkflowRunId>>,
    ) -> Result<RunResponse, ApiError> {
        let id = id.0.get("workflow run")?;
        Ok(RunResponse::Ok(Json(
            read(cx.state, cx.auth.0.tenant_id, id).await?,
        )))
    }

    /// Cancel a run: no pending step of it runs, and its notifications no
    /// provider has yet are cancelled. A run that has ended answers 409.
    #[oai(
        path = "/runs/:id/cancel",
        method = "post",
        operation_id = "workflows.cancel_run"
    )]
    async fn cancel_run(
        &self,
        cx: ServiceCtx<'_>,
        /// The run's id.
        #[oai(validator(max_length = 36))]
        id: Path<PathId<WorkflowRunId>>,
    ) -> Result<CancelResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("workflow run")?;
        let mut tx = cx.state.pool.begin().await?;
        let done = store::cancel(&mut tx, tenant_id, Which::Run(id)).await?;
        if done.runs == 0 {
            drop(tx);
            if !store::run_exists(&cx.state.pool, tenant_id, id).await? {
                return Err(ApiError::NotFound("workflow run"));
            }
            return Err(ApiError::Conflict("the run has already ended".into()));
        }
        audit_cancel(&mut tx, &cx.auth, cx.request_id, Some(id), done).await?;
        tx.commit().await?;
        tracing::info!(run_id = %id, notifications = done.notifications, "workflow run cancelled");
        Ok(CancelResponse::Ok(Json(done.into())))
    }

    /// Cancel every run triggered with a `cancellation_key`, as a run's
    /// cancel does. Runs that already ended are left as they are.
    #[oai(path = "/cancel", method = "post", operation_id = "workflows.cancel")]
    async fn cancel(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<CancelByKey>,
    ) -> Result<CancelResponse, ApiError> {
        let key = &body.0.cancellation_key;
        shared::domain::cancellation_key(key)
            .map_err(|e| ApiError::invalid("cancellation_key", e.0))?;
        let mut tx = cx.state.pool.begin().await?;
        let done = store::cancel(&mut tx, cx.auth.0.tenant_id, Which::Key(key)).await?;
        if done.runs > 0 {
            audit_cancel(&mut tx, &cx.auth, cx.request_id, None, done).await?;
        }
        tx.commit().await?;
        tracing::info!(
            runs = done.runs,
            notifications = done.notifications,
            "workflow runs cancelled by key"
        );
        Ok(CancelResponse::Ok(Json(done.into())))
    }

    /// Post an event for a subscriber: their runs waiting for it (a
    /// `wait_for` step with this `event`) go on at once, with `payload` as
    /// `event` in the following steps' template data.
    #[oai(
        path = "/events",
        method = "post",
        operation_id = "workflows.post_event"
    )]
    async fn post_event(
        &self,
        cx: ServiceCtx<'_>,
        body: StrictJson<EventRequest>,
    ) -> Result<EventResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let req = body.0;
        let external = ExternalId::parse(&req.subscriber_id)
            .map_err(|e| ApiError::invalid("subscriber_id", e.0))?;
        let b = req.name.as_bytes();
        let name_ok = (1..=100).contains(&b.len())
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c));
        if !name_ok {
            return Err(ApiError::invalid(
                "name",
                "must be 1 to 100 lower-case letters, digits, `.`, `_` or `-`",
            ));
        }
        let payload = crate::services::workflows::payload(req.payload.as_ref())?;
        let subscriber =
            shared::db::subscribers::find_id(&cx.state.pool, tenant_id, external.as_str()).await?;
        let resumed = match subscriber {
            Some(id) => {
                store::post_event(&cx.state.pool, tenant_id, id, &req.name, &payload).await?
            }
            None => Vec::new(),
        };
        Ok(EventResponse::Accepted(Json(EventAccepted {
            resumed_run_ids: resumed.iter().map(ToString::to_string).collect(),
        })))
    }
}

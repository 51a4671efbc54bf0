//! Workflows under `/api/v1/services/workflows`: an organisation's
//! multi-step notification journeys (send, delay, wait for a status or an
//! event, branch, digest, throttle), saved by key as JSON and versioned.
//!
//! Saving checks the whole definition and answers 400 with an `errors` list
//! naming each problem's step, field and reason (unknown step types, jumps
//! to missing steps or back to earlier ones, more than 50 steps, durations
//! over a year, templates that do not exist or lack a channel's content).
//! Each save is a new version; runs keep the version they started with.
//!
//! A trigger starts one run per subscriber (the one named, or every member
//! of a topic), due at once; the scheduler's runner executes the steps (see
//! `scheduler::workflows`). Runs, cancellation and caller events are in
//! [`runs`]. Another organisation's workflows and runs answer 404.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::Json,
};
use serde_json::Value;
use shared::{
    db::workflows::{self as store, Workflow},
    domain::key_ok,
};

use crate::{
    body::StrictJson,
    error::ApiError,
    extract::ServiceCtx,
    extract::{Cursor, PageSize, page},
    extract::{idempotency_key, request_hash},
    routes::ApiTags,
    services::workflows as service,
};

mod runs;

pub use runs::WorkflowRunsApi;

pub use crate::services::workflows::MAX_TOPIC_RUNS;

/// The workflow endpoints.
#[derive(Debug)]
pub struct WorkflowsApi;

/// A workflow definition to save.
#[derive(Debug, Clone, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SaveWorkflow {
    /// Its display name.
    #[oai(validator(min_length = 1, max_length = 200))]
    pub name: String,
    /// The steps, run in order (branches jump forward). Each is an object
    /// with a `key` (unique; lower-case letters, digits, `.`, `_`, `-`), a
    /// `type` and that type's fields:
    /// `send` (`template`, `channels`, optional fixed `to`),
    /// `delay` (one of `duration_secs`, `until_field`, `until_local_time`),
    /// `wait_for` (`step` + `status` (`read`, `delivered`, `sent`), or
    /// `event`; `timeout_secs`),
    /// `branch` (`if`: `{step, outcome}` or `{field, op, value}`; `then`: a
    /// later step's key or `end`),
    /// `digest` (`window_secs`, optional `group_by`),
    /// `throttle` (`limit`, `window_secs`, `on_limit`: `drop` or `merge`).
    /// Durations are 1 second to a year.
    #[oai(validator(min_items = 1, max_items = 50))]
    pub steps: Vec<Value>,
}

/// A workflow at one version.
#[derive(Debug, Clone, Object)]
pub struct WorkflowBody {
    /// Its key.
    pub key: String,
    /// Its display name.
    pub name: String,
    /// This version.
    pub version: i32,
    /// The newest version.
    pub latest_version: i32,
    /// The steps as stored.
    pub steps: Vec<Value>,
    /// When the workflow was first saved.
    pub created_at: DateTime<Utc>,
    /// When this version was saved.
    pub saved_at: DateTime<Utc>,
}

impl From<Workflow> for WorkflowBody {
    fn from(w: Workflow) -> Self {
        Self {
            key: w.key,
            name: w.name,
            version: w.version,
            latest_version: w.latest,
            steps: w
                .steps
                .0
                .iter()
                .map(|s| serde_json::to_value(s).unwrap_or_default())
                .collect(),
            created_at: w.created_at,
            saved_at: w.saved_at,
        }
    }
}

/// Answers to a save.
#[derive(Debug, ApiResponse)]
pub enum SaveResponse {
    /// The workflow's first version.
    #[oai(status = 201)]
    Created(Json<WorkflowBody>),
    /// A new version of an existing workflow.
    #[oai(status = 200)]
    Saved(Json<WorkflowBody>),
}

/// A workflow.
#[derive(Debug, ApiResponse)]
pub enum WorkflowResponse {
    /// The workflow.
    #[oai(status = 200)]
    Ok(Json<WorkflowBody>),
}

/// What deleting a workflow did.
#[derive(Debug, Clone, Object)]
pub struct WorkflowDeleted {
    /// The deleted workflow's key (free to save again as a new workflow).
    pub key: String,
    /// Its runs that were still going and are now cancelled.
    pub runs_cancelled: u64,
    /// Their notifications cancelled before any provider had them.
    pub notifications_cancelled: u64,
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Deleted.
    #[oai(status = 200)]
    Ok(Json<WorkflowDeleted>),
}

/// A page of workflows.
#[derive(Debug, Clone, Object)]
pub struct WorkflowPage {
    /// The workflows (newest versions), by key.
    pub items: Vec<WorkflowBody>,
    /// Pass as `cursor` for the next page; absent on the last.
    pub next_cursor: Option<String>,
}

/// Workflows.
#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// A page.
    #[oai(status = 200)]
    Ok(Json<WorkflowPage>),
}

/// A trigger: one subscriber or every member of a topic.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct TriggerRequest {
    /// The subscriber's external id (as sends name them); created on first
    /// use. Give this or `topic`.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub subscriber_id: Option<String>,
    /// A topic's key: one run per member (at most 10,000).
    #[oai(validator(min_length = 1, max_length = 100))]
    pub topic: Option<String>,
    /// Data for the steps: template data, branch fields, delay timestamps
    /// (a JSON object, at most 16 KiB).
    pub payload: Option<Value>,
    /// Name it to `POST /workflows/cancel` to cancel every run it started.
    #[oai(validator(min_length = 1, max_length = 255))]
    pub cancellation_key: Option<String>,
}

/// Runs started.
#[derive(Debug, Clone, Object)]
pub struct TriggerAccepted {
    /// The workflow.
    pub workflow: String,
    /// The version the runs keep.
    pub version: i32,
    /// The runs, one per subscriber.
    pub run_ids: Vec<String>,
    /// Where to read the first run (`GET`).
    pub status_url: Option<String>,
}

/// Answers to a trigger.
#[derive(Debug, ApiResponse)]
pub enum TriggerResponse {
    /// Accepted: the runs are committed and due now. With the same
    /// `Idempotency-Key` and body the same runs are returned again with
    /// `Idempotent-Replayed: true`; nothing more starts.
    #[oai(status = 202)]
    Accepted(
        Json<TriggerAccepted>,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

#[OpenApi(
    prefix_path = "/api/v1/services/workflows",
    tag = "ApiTags::Notifications"
)]
impl WorkflowsApi {
    /// Save a workflow: the first version (201) or the next one (200).
    /// Runs already started keep their version. A definition with problems
    /// answers 400 with `errors`, each naming the step, field and reason.
    #[oai(path = "/:key", method = "put", operation_id = "workflows.save")]
    async fn save(
        &self,
        cx: ServiceCtx<'_>,
        /// The workflow's key: 1 to 100 lower-case letters, digits, `.`,
        /// `_` or `-`, starting with a letter or digit (not `runs`,
        /// `cancel` or `events`).
        #[oai(validator(min_length = 1, max_length = 100))]
        key: Path<String>,
        body: StrictJson<SaveWorkflow>,
    ) -> Result<SaveResponse, ApiError> {
        let saved = service::save(
            cx.state,
            &cx.auth.0,
            &cx.request_id.0,
            &key.0,
            &body.0.name,
            body.0.steps,
        )
        .await?;
        Ok(if saved.version == 1 {
            SaveResponse::Created(Json(saved.into()))
        } else {
            SaveResponse::Saved(Json(saved.into()))
        })
    }

    /// Read a workflow: its newest version, or `version`.
    #[oai(path = "/:key", method = "get", operation_id = "workflows.get")]
    async fn get(
        &self,
        cx: ServiceCtx<'_>,
        /// The workflow's key.
        #[oai(validator(min_length = 1, max_length = 100))]
        key: Path<String>,
        /// A version (default: the newest).
        #[oai(validator(minimum(value = "1"), maximum(value = "2147483647")))]
        version: Query<Option<i32>>,
    ) -> Result<WorkflowResponse, ApiError> {
        let w = service::find(cx.state, cx.auth.0.tenant_id, &key.0, version.0).await?;
        Ok(WorkflowResponse::Ok(Json(w.into())))
    }

    /// Delete a workflow: it no longer answers, lists or triggers, and its
    /// key is free for a new workflow. Its runs still going are cancelled
    /// (no further step runs; their notifications no provider has yet are
    /// cancelled), so nothing of a withdrawn journey reaches a patient
    /// afterwards; the answer counts them. Runs keep their history and stay
    /// readable and listed under the key.
    #[oai(path = "/:key", method = "delete", operation_id = "workflows.delete")]
    async fn delete(
        &self,
        cx: ServiceCtx<'_>,
        /// The workflow's key.
        #[oai(validator(min_length = 1, max_length = 100))]
        key: Path<String>,
    ) -> Result<DeleteResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        if !key_ok(&key.0) {
            return Err(ApiError::NotFound("workflow"));
        }
        let mut tx = cx.state.pool.begin().await?;
        let (id, done) = store::delete(&mut tx, tenant_id, &key.0)
            .await?
            .ok_or(ApiError::NotFound("workflow"))?;
        shared::db::audit::record(
            &mut *tx,
            shared::db::audit::Entry {
                tenant_id: Some(tenant_id),
                actor: &format!("api_key:{}", cx.auth.0.key_id),
                action: "workflow.delete",
                resource_type: "workflow",
                resource_id: Some(id.to_string()),
                result: "success",
                request_id: Some(&cx.request_id.0),
                details: serde_json::json!({
                    "key": key.0,
                    "runs_cancelled": done.runs,
                    "notifications_cancelled": done.notifications,
                }),
            },
        )
        .await?;
        tx.commit().await?;
        tracing::info!(workflow = %key.0, runs_cancelled = done.runs, "workflow deleted");
        Ok(DeleteResponse::Ok(Json(WorkflowDeleted {
            key: key.0,
            runs_cancelled: done.runs,
            notifications_cancelled: done.notifications,
        })))
    }

    /// List the organisation's workflows by key (newest versions).
    #[oai(path = "/", method = "get", operation_id = "workflows.list")]
    async fn list(
        &self,
        cx: ServiceCtx<'_>,
        /// Workflows per page.
        limit: Query<PageSize>,
        /// The `next_cursor` of the page before.
        cursor: Query<Option<Cursor<String>>>,
    ) -> Result<ListResponse, ApiError> {
        let after = cursor.0.map(Cursor::get).transpose()?;
        let items = store::list(
            &cx.state.pool,
            cx.auth.0.tenant_id,
            after.as_deref(),
            limit.0.fetch(),
        )
        .await?;
        let (items, next_cursor) = page(items, limit.0, |w| w.key.clone());
        Ok(ListResponse::Ok(Json(WorkflowPage {
            items: items.into_iter().map(Into::into).collect(),
            next_cursor,
        })))
    }

    /// Trigger a workflow for one subscriber or every member of a topic:
    /// one run each, keeping the workflow's newest version, due now.
    /// `Idempotency-Key` makes retries safe.
    #[oai(
        path = "/:key/trigger",
        method = "post",
        operation_id = "workflows.trigger"
    )]
    async fn trigger(
        &self,
        cx: ServiceCtx<'_>,
        /// The workflow's key.
        #[oai(validator(min_length = 1, max_length = 100))]
        key: Path<String>,
        #[oai(name = "Idempotency-Key")] idem: Header<Option<String>>,
        body: StrictJson<TriggerRequest>,
    ) -> Result<TriggerResponse, ApiError> {
        let req = body.0;
        let hash = request_hash(&(&key.0, &req));
        let trigger = service::Trigger {
            subscriber_id: req.subscriber_id,
            topic: req.topic,
            payload: req.payload,
            cancellation_key: req.cancellation_key,
        };
        let idem = idempotency_key(idem.0)?;
        let t =
            service::trigger(cx.state, cx.auth.0.tenant_id, &key.0, trigger, idem, hash).await?;
        Ok(accepted(&t.workflow, &t.runs, t.replayed))
    }
}

fn accepted(
    workflow: &Workflow,
    ids: &[shared::domain::WorkflowRunId],
    replayed: bool,
) -> TriggerResponse {
    TriggerResponse::Accepted(
        Json(TriggerAccepted {
            workflow: workflow.key.clone(),
            version: workflow.version,
            run_ids: ids.iter().map(ToString::to_string).collect(),
            status_url: ids
                .first()
                .map(|id| format!("/api/v1/services/workflows/runs/{id}")),
        }),
        replayed.then(|| "true".to_owned()),
    )
}

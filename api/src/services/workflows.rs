//! Workflows: saving a definition (each save a new version) and starting
//! runs of one, for one subscriber or every member of a topic, and listing
//! runs. The routes in [`crate::routes::workflows`] parse requests and
//! shape answers.

use chrono::{DateTime, Utc};
use serde_json::Value;
use shared::{
    db::{
        api_keys::KeyOwner,
        workflows::{self as store, NewRuns, RunFilter, RunSummary, Workflow},
    },
    domain::{ExternalId, TenantId, WorkflowRunId, key_ok},
    workflows::{MAX_PAYLOAD_BYTES, StepKind, parse_steps},
};

use crate::{
    AppState,
    error::{ApiError, StepProblem},
    extract::{Cursor, PageSize, page},
};

/// Most members a trigger to a topic starts runs for.
pub const MAX_TOPIC_RUNS: i64 = 10_000;
/// Keys that name routes, not workflows.
const RESERVED: &[&str] = &["runs", "cancel", "events"];

/// What a trigger asks for, as sent.
#[derive(Debug)]
pub struct Trigger {
    /// One subscriber's external id (created on first use)...
    pub subscriber_id: Option<String>,
    /// ... or a topic's key: one run per member.
    pub topic: Option<String>,
    /// Data for the steps: a JSON object.
    pub payload: Option<Value>,
    /// A key that cancels every run it started.
    pub cancellation_key: Option<String>,
}

/// Runs a trigger started, or the ones an earlier trigger with the same
/// idempotency key started.
#[derive(Debug)]
pub struct Triggered {
    /// The workflow, at the version the runs keep.
    pub workflow: Workflow,
    /// The runs, one per subscriber.
    pub runs: Vec<WorkflowRunId>,
    /// Whether these are an earlier trigger's runs.
    pub replayed: bool,
}

/// Workflow `key` (at `version`), or 404.
pub async fn find(
    state: &AppState,
    tenant_id: TenantId,
    key: &str,
    version: Option<i32>,
) -> Result<Workflow, ApiError> {
    if !key_ok(key) {
        return Err(ApiError::NotFound("workflow"));
    }
    store::get(&state.pool, tenant_id, key, version)
        .await?
        .ok_or(ApiError::NotFound("workflow"))
}

/// Checks a payload: a JSON object of at most [`MAX_PAYLOAD_BYTES`].
pub fn payload(raw: Option<&Value>) -> Result<Value, ApiError> {
    match raw {
        None | Some(Value::Null) => Ok(Value::Object(Default::default())),
        Some(v @ Value::Object(_)) => {
            let size = serde_json::to_vec(v).map(|b| b.len()).unwrap_or(usize::MAX);
            if size > MAX_PAYLOAD_BYTES {
                return Err(ApiError::TooLarge(format!(
                    "`payload` is {size} bytes as JSON; at most {MAX_PAYLOAD_BYTES} are allowed"
                )));
            }
            Ok(v.clone())
        }
        Some(_) => Err(ApiError::invalid("payload", "must be a JSON object")),
    }
}

/// The definition's problems that need Postgres: templates that do not
/// exist or have no content for a channel a step sends on.
async fn check_templates(
    state: &AppState,
    tenant_id: TenantId,
    steps: &[shared::workflows::Step],
) -> Result<Vec<StepProblem>, ApiError> {
    let mut problems = Vec::new();
    for step in steps {
        let StepKind::Send {
            template, channels, ..
        } = &step.kind
        else {
            continue;
        };
        let Some(t) = shared::db::templates::get_by_key(&state.pool, tenant_id, template).await?
        else {
            problems.push(StepProblem {
                step: step.key.clone(),
                field: "template".into(),
                reason: format!("no template has the key `{template}`"),
            });
            continue;
        };
        let has = t.template.channels();
        for (i, c) in channels.iter().enumerate() {
            if !has.contains(c) {
                problems.push(StepProblem {
                    step: step.key.clone(),
                    field: format!("channels[{i}]"),
                    reason: format!("the template `{template}` has no {} content", c.as_str()),
                });
            }
        }
    }
    Ok(problems)
}

/// Saves workflow `key` of the caller's organisation as its next version
/// (the first when new), after checking the whole definition; audited as
/// the caller's. `request_id` is what the audit row names.
pub async fn save(
    state: &AppState,
    caller: &KeyOwner,
    request_id: &str,
    key: &str,
    name: &str,
    steps: Vec<Value>,
) -> Result<Workflow, ApiError> {
    let tenant_id = caller.tenant_id;
    if !key_ok(key) || RESERVED.contains(&key) {
        return Err(ApiError::invalid(
            "key",
            "must be 1 to 100 lower-case letters, digits, `.`, `_` or `-`, starting with a letter or digit, and not `runs`, `cancel` or `events`",
        ));
    }
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 200 characters on one line",
        ));
    }
    let steps = parse_steps(&Value::Array(steps)).map_err(|errors| {
        ApiError::InvalidSteps(
            errors
                .into_iter()
                .map(|e| StepProblem {
                    step: e.step,
                    field: e.field,
                    reason: e.reason,
                })
                .collect(),
        )
    })?;
    let problems = check_templates(state, tenant_id, &steps).await?;
    if !problems.is_empty() {
        return Err(ApiError::InvalidSteps(problems));
    }
    let mut tx = state.pool.begin().await?;
    let saved = store::save(&mut tx, tenant_id, key, name, &steps).await?;
    shared::db::audit::record(
        &mut *tx,
        shared::db::audit::Entry {
            tenant_id: Some(tenant_id),
            actor: &format!("api_key:{}", caller.key_id),
            action: "workflow.save",
            resource_type: "workflow",
            resource_id: Some(saved.id.to_string()),
            result: "success",
            request_id: Some(request_id),
            details: serde_json::json!({"key": saved.key, "version": saved.version}),
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(workflow = %saved.key, version = saved.version, "workflow saved");
    Ok(saved)
}

/// Starts one run of workflow `key`'s newest version per subscriber the
/// trigger names, due now. With idempotency key `idem`, a request already
/// accepted under it answers its runs again (422 when its body, hashed as
/// `hash`, differed).
pub async fn trigger(
    state: &AppState,
    tenant_id: TenantId,
    key: &str,
    req: Trigger,
    idem: Option<String>,
    hash: Vec<u8>,
) -> Result<Triggered, ApiError> {
    let workflow = find(state, tenant_id, key, None).await?;
    let payload = payload(req.payload.as_ref())?;
    if let Some(k) = &req.cancellation_key {
        shared::domain::cancellation_key(k)
            .map_err(|e| ApiError::invalid("cancellation_key", e.0))?;
    }
    if let Some(k) = &idem
        && let Some(answer) = replay(state, tenant_id, &workflow, k, &hash).await?
    {
        return Ok(answer);
    }
    let mut tx = state.pool.begin().await?;
    if !store::hold(&mut tx, tenant_id, workflow.id).await? {
        // Deleted since it was read.
        return Err(ApiError::NotFound("workflow"));
    }
    let subscribers = match (&req.subscriber_id, &req.topic) {
        (Some(s), None) => {
            ExternalId::parse(s).map_err(|e| ApiError::invalid("subscriber_id", e.0))?;
            shared::db::batches::subscriber_ids(
                &mut tx,
                tenant_id,
                std::slice::from_ref(s),
                &Default::default(),
            )
            .await?
            .ids
            .into_values()
            .collect()
        }
        (None, Some(t)) => {
            let topic = super::topics::find(state, tenant_id, t).await?;
            let ids =
                store::topic_subscribers(&mut *tx, tenant_id, topic.id, MAX_TOPIC_RUNS + 1).await?;
            if ids.len() as i64 > MAX_TOPIC_RUNS {
                return Err(ApiError::Unprocessable(vec![crate::error::InvalidParam {
                    name: "topic".into(),
                    reason: format!(
                        "has more than {MAX_TOPIC_RUNS} members; split it into smaller topics"
                    ),
                }]));
            }
            ids
        }
        _ => {
            return Err(ApiError::invalid(
                "subscriber_id",
                "give either `subscriber_id` or `topic`",
            ));
        }
    };
    let started = store::start(
        &mut tx,
        tenant_id,
        NewRuns {
            workflow_id: workflow.id,
            version: workflow.version,
            subscribers: &subscribers,
            payload: &payload,
            cancellation_key: req.cancellation_key.as_deref(),
            idempotency: idem.as_deref().map(|k| (k, hash.clone())),
        },
    )
    .await?;
    let Some(ids) = started else {
        // A concurrent request with the same key won.
        drop(tx);
        let k = idem.as_deref().unwrap_or_default();
        return replay(state, tenant_id, &workflow, k, &hash)
            .await?
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("trigger vanished")));
    };
    tx.commit().await?;
    tracing::info!(workflow = %workflow.key, runs = ids.len(), "workflow triggered");
    metrics::counter!("workflow_runs_started_total").increment(ids.len() as u64);
    Ok(Triggered {
        workflow,
        runs: ids,
        replayed: false,
    })
}

/// The first answer to a trigger with Idempotency-Key `key`, if there was
/// one; 422 when that request had another body.
async fn replay(
    state: &AppState,
    tenant_id: TenantId,
    workflow: &Workflow,
    key: &str,
    hash: &[u8],
) -> Result<Option<Triggered>, ApiError> {
    match store::earlier_trigger(&state.pool, tenant_id, key).await? {
        None => Ok(None),
        Some((stored, _)) if stored.as_deref() != Some(hash) => Err(ApiError::IdempotencyKeyReused),
        Some((_, ids)) => {
            let mut w = workflow.clone();
            if let Some(first) = ids.first()
                && let Some((run, _)) =
                    store::run(&mut *state.pool.acquire().await?, tenant_id, *first).await?
            {
                w.version = run.version;
            }
            Ok(Some(Triggered {
                workflow: w,
                runs: ids,
                replayed: true,
            }))
        }
    }
}

/// A run's statuses, as the `status` filter names them.
const STATUSES: &[&str] = &[
    "running",
    "waiting",
    "completed",
    "cancelled",
    "failed",
    "merged",
    "dropped",
];

/// The filters of the run list, as sent (every filter given must hold).
#[derive(Debug)]
pub struct RunListFilter {
    /// The workflow's key.
    pub workflow: Option<String>,
    /// The run's status.
    pub status: Option<String>,
    /// The subscriber's external id.
    pub subscriber_id: Option<String>,
    /// The trigger's cancellation key.
    pub cancellation_key: Option<String>,
}

/// One page (`limit`, after `cursor`) of `tenant_id`'s runs matching `f`,
/// newest first, with the cursor of the next. The cursor is checked
/// before the filters; an unknown subscriber has no runs.
pub async fn list_runs(
    state: &AppState,
    tenant_id: TenantId,
    f: RunListFilter,
    cursor: Option<Cursor<(DateTime<Utc>, WorkflowRunId)>>,
    limit: PageSize,
) -> Result<(Vec<RunSummary>, Option<String>), ApiError> {
    let after = cursor.map(Cursor::get).transpose()?;
    if let Some(w) = &f.workflow
        && !key_ok(w)
    {
        return Err(ApiError::invalid(
            "workflow",
            "must be a workflow key: 1 to 100 lower-case letters, digits, `.`, `_` or `-`",
        ));
    }
    if let Some(s) = &f.status
        && !STATUSES.contains(&s.as_str())
    {
        return Err(ApiError::invalid(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    if let Some(k) = &f.cancellation_key {
        shared::domain::cancellation_key(k)
            .map_err(|e| ApiError::invalid("cancellation_key", e.0))?;
    }
    let subscriber = match &f.subscriber_id {
        None => None,
        Some(raw) => {
            let external =
                ExternalId::parse(raw).map_err(|e| ApiError::invalid("subscriber_id", e.0))?;
            match shared::db::subscribers::find_id(&state.pool, tenant_id, external.as_str())
                .await?
            {
                Some(id) => Some(id),
                // No such subscriber: no runs.
                None => return Ok((Vec::new(), None)),
            }
        }
    };
    let filter = RunFilter {
        workflow: f.workflow.as_deref(),
        status: f.status.as_deref(),
        subscriber_id: subscriber,
        cancellation_key: f.cancellation_key.as_deref(),
    };
    let items = store::list_runs(&state.pool, tenant_id, &filter, after, limit.fetch()).await?;
    Ok(page(items, limit, |r: &RunSummary| (r.created_at, r.id)))
}

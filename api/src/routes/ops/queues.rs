//! `/api/v1/ops/queues`: every queue's backlog, waiting work, throughput and
//! latency; its history for charts; pausing and resuming it; and a live
//! stream of the overview for the operators' console.
//!
//! Counts come from the Redis backlog, the rows still waiting in Postgres
//! (partial indexes) and the per-minute rollup (`queue_minutes`), never from
//! a scan of `notifications`. One instance computes the overview at most
//! once a second per scope and shares it between callers and streams.

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures::{Stream, StreamExt};
use poem::web::sse::Event;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::{EventStream, Json},
};
use shared::{
    db::{
        queue_ops::{self, Counts, Pause, Recent, Waiting},
        scope::Reach,
    },
    jobs::QueueName,
    throughput::quantile,
};

use crate::extract::AdminCtx;
use crate::{AppState, error::ApiError};

/// How stale a served overview may be.
const OVERVIEW_FRESH: Duration = Duration::from_secs(1);

/// How often the stream sends the overview.
const STREAM_EVERY: Duration = Duration::from_secs(2);

/// How long one stream lasts; the console opens a new one (with a fresh
/// token) when it ends, so a revoked session stops seeing data.
const STREAM_FOR: Duration = Duration::from_secs(600);

/// The queue endpoints.
#[derive(Debug)]
pub struct OpsQueuesApi;

/// The overviews a stream sends.
type Lists = std::pin::Pin<Box<dyn Stream<Item = QueueList> + Send>>;

/// Finished work over a window.
#[derive(Debug, Clone, Copy, Object)]
pub struct QueueCounts {
    /// Done: sent to the provider or placed in the inbox (delivery queues),
    /// or the job finished (other queues).
    pub sent: i64,
    /// Failed for good.
    pub failed: i64,
    /// Failed this time, with another attempt scheduled.
    pub retried: i64,
}

impl From<Counts> for QueueCounts {
    fn from(c: Counts) -> Self {
        Self {
            sent: c.sent,
            failed: c.failed,
            retried: c.retried,
        }
    }
}

/// Two percentiles, in milliseconds; absent without data.
#[derive(Debug, Clone, Copy, Object)]
pub struct Percentiles {
    /// The median.
    pub p50: Option<f64>,
    /// The 99th percentile.
    pub p99: Option<f64>,
}

/// What a queue carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
#[oai(rename_all = "snake_case")]
pub enum QueueKind {
    /// Deliveries: notifications on a channel, or webhook events.
    Delivery,
    /// Other jobs: expanding batches and CSV files, invitations,
    /// reminders, UPS polls, housekeeping.
    Job,
}

/// One queue, now.
#[derive(Debug, Clone, Object)]
pub struct QueueView {
    /// Its name, as in `jobs.toml`.
    pub name: String,
    /// What it carries.
    pub kind: QueueKind,
    /// Whether an operator may pause it (queues fed from Postgres rows).
    pub pausable: bool,
    /// Whether it is paused.
    pub paused: bool,
    /// Since when.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it.
    pub paused_by: Option<String>,
    /// Why, in the operator's words.
    pub pause_reason: Option<String>,
    /// Jobs waiting in Redis (a job may carry a group of notifications);
    /// absent for an organisation's admin, and when Redis cannot be read.
    pub backlog: Option<i64>,
    /// Work due now in Postgres and not yet handed to Redis.
    pub due: i64,
    /// Work held back for a while: quiet hours, a provider's pause, a
    /// retry's backoff.
    pub deferred: i64,
    /// Work its sender scheduled for later (`send_at`).
    pub scheduled: i64,
    /// Work a worker holds right now.
    pub in_flight: i64,
    /// Seconds the oldest due item has waited (0 when none).
    pub oldest_due_secs: f64,
    /// Since the start of the previous minute.
    pub last_1m: QueueCounts,
    /// The last 15 minutes.
    pub last_15m: QueueCounts,
    /// The last hour.
    pub last_1h: QueueCounts,
    /// How long one job or delivery attempt took, over the last hour.
    pub duration_ms: Percentiles,
    /// From accepted to sent, over the last hour (delivery queues).
    pub latency_ms: Percentiles,
}

/// Every queue.
#[derive(Debug, Clone, Object)]
pub struct QueueList {
    /// In `jobs.toml` order.
    pub items: Vec<QueueView>,
    /// When the figures were read.
    pub at: DateTime<Utc>,
}

/// A chart's span.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum HistoryRange {
    /// The last hour, per minute.
    #[oai(rename = "1h")]
    Hour,
    /// The last day, per 15 minutes.
    #[oai(rename = "24h")]
    Day,
    /// The last 7 days, per hour.
    #[oai(rename = "7d")]
    Week,
}

impl HistoryRange {
    fn span_and_step(self) -> (i64, i64) {
        match self {
            HistoryRange::Hour => (3_600, 60),
            HistoryRange::Day => (86_400, 900),
            HistoryRange::Week => (604_800, 3_600),
        }
    }
}

/// One step of a chart.
#[derive(Debug, Clone, Object)]
pub struct HistoryPoint {
    /// The step's start.
    pub at: DateTime<Utc>,
    /// Done.
    pub sent: i64,
    /// Failed for good.
    pub failed: i64,
    /// Failed and scheduled again.
    pub retried: i64,
}

/// A queue's throughput over time.
#[derive(Debug, Clone, Object)]
pub struct QueueHistory {
    /// The queue.
    pub queue: String,
    /// `1h`, `24h` or `7d`.
    pub range: HistoryRange,
    /// Seconds per point.
    pub step_secs: i64,
    /// Every step, oldest first, zeros included.
    pub points: Vec<HistoryPoint>,
}

/// Why a queue is paused.
#[derive(Debug, Clone, Object)]
pub struct PauseRequest {
    /// Shown to other operators (at most 500 characters).
    #[oai(validator(max_length = 500))]
    pub reason: Option<String>,
}

/// Answers with the queues.
#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// Every queue.
    #[oai(status = 200)]
    Ok(Json<QueueList>),
}

/// Answers with one queue.
#[derive(Debug, ApiResponse)]
pub enum QueueResponse {
    /// The queue.
    #[oai(status = 200)]
    Ok(Json<QueueView>),
}

/// Answers with a history.
#[derive(Debug, ApiResponse)]
pub enum HistoryResponse {
    /// The history.
    #[oai(status = 200)]
    Ok(Json<QueueHistory>),
}

/// Overviews by scope, with when each was computed.
type Held = HashMap<Reach, (Instant, Arc<QueueList>)>;

/// The overview, shared between callers for [`OVERVIEW_FRESH`].
#[derive(Debug, Clone, Default)]
pub struct OverviewCache {
    held: Arc<Mutex<Held>>,
}

impl OverviewCache {
    fn get(&self, scope: Reach) -> Option<Arc<QueueList>> {
        let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.get(&scope)
            .filter(|(at, _)| at.elapsed() < OVERVIEW_FRESH)
            .map(|(_, list)| list.clone())
    }

    fn put(&self, scope: Reach, list: Arc<QueueList>) {
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        held.retain(|_, (at, _)| at.elapsed() < OVERVIEW_FRESH);
        held.insert(scope, (Instant::now(), list));
    }

    /// Forgets every overview (after a pause or resume).
    pub fn clear(&self) {
        self.held.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

fn kind(q: QueueName) -> QueueKind {
    match q {
        QueueName::Email
        | QueueName::Sms
        | QueueName::Push
        | QueueName::WhatsApp
        | QueueName::InApp
        | QueueName::Webhook => QueueKind::Delivery,
        _ => QueueKind::Job,
    }
}

fn view(
    q: QueueName,
    pause: Option<&Pause>,
    backlog: Option<i64>,
    waiting: Waiting,
    recent: Recent,
    now: DateTime<Utc>,
) -> QueueView {
    QueueView {
        name: q.as_str().to_owned(),
        kind: kind(q),
        pausable: shared::pauses::pausable(q),
        paused: pause.is_some(),
        paused_at: pause.map(|p| p.paused_at),
        paused_by: pause.map(|p| p.paused_by.clone()),
        pause_reason: pause.and_then(|p| p.reason.clone()),
        backlog,
        due: waiting.due,
        deferred: waiting.deferred,
        scheduled: waiting.scheduled,
        in_flight: waiting.in_flight,
        oldest_due_secs: waiting
            .oldest_due
            .map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0)
            .unwrap_or(0.0),
        last_1m: recent.last_1m.into(),
        last_15m: recent.last_15m.into(),
        last_1h: recent.last_1h.into(),
        duration_ms: Percentiles {
            p50: quantile(&recent.duration_ms, 0.5),
            p99: quantile(&recent.duration_ms, 0.99),
        },
        latency_ms: Percentiles {
            p50: quantile(&recent.latency_ms, 0.5),
            p99: quantile(&recent.latency_ms, 0.99),
        },
    }
}

/// Every queue as `scope` sees it (an operator's: the platform).
pub async fn overview(state: &AppState, scope: Reach) -> Result<Arc<QueueList>, ApiError> {
    if let Some(list) = state.queue_overview.get(scope) {
        return Ok(list);
    }
    let pauses = queue_ops::pauses(&state.pool).await?;
    let mut waiting = queue_ops::waiting(&state.pool, scope).await?;
    let mut recent = queue_ops::recent(&state.pool, scope).await?;
    let backlogs: Vec<Option<i64>> = if let Reach::Platform(_) = scope {
        futures::future::join_all(
            QueueName::ALL
                .iter()
                .map(|q| async { state.queues.backlog(*q).await.ok().map(|n| n as i64) }),
        )
        .await
    } else {
        vec![None; QueueName::ALL.len()]
    };
    let now = Utc::now();
    let items = QueueName::ALL
        .iter()
        .zip(backlogs)
        .map(|(q, backlog)| {
            view(
                *q,
                pauses.iter().find(|p| p.queue == q.as_str()),
                backlog,
                waiting.remove(q.as_str()).unwrap_or_default(),
                recent.remove(q.as_str()).unwrap_or_default(),
                now,
            )
        })
        .collect();
    let list = Arc::new(QueueList { items, at: now });
    state.queue_overview.put(scope, list.clone());
    Ok(list)
}

/// The queue a path names; an unknown one is 404.
fn queue_of(raw: &str) -> Result<QueueName, ApiError> {
    raw.parse().map_err(|_| ApiError::NotFound("queue"))
}

/// One queue as `scope` sees it.
async fn one(state: &AppState, scope: Reach, q: QueueName) -> Result<QueueView, ApiError> {
    let list = overview(state, scope).await?;
    list.items
        .iter()
        .find(|v| v.name == q.as_str())
        .cloned()
        .ok_or(ApiError::NotFound("queue"))
}

/// Makes every process see the paused queues in Postgres at once (the
/// scheduler's dispatcher also does on each sweep).
async fn publish_pauses(state: &AppState) -> Result<(), ApiError> {
    let paused: BTreeSet<QueueName> = queue_ops::pauses(&state.pool)
        .await?
        .iter()
        .filter_map(|p| p.queue.parse().ok())
        .collect();
    if let Err(error) = state.queues.publish_paused(&paused).await {
        // The dispatcher's next sweep publishes it.
        tracing::warn!(%error, "cannot publish the paused queues; the dispatcher will");
    }
    // A resumed queue's waiting work goes out at the dispatcher's next
    // sweep; this brings an idle dispatcher's sweep forward.
    state.queues.wake_dispatcher().await;
    state.queue_overview.clear();
    Ok(())
}

/// The points of a chart: every step from `since`, zeros where nothing
/// was recorded.
fn fill(
    since: DateTime<Utc>,
    step: i64,
    count: i64,
    points: &[queue_ops::Point],
) -> Vec<HistoryPoint> {
    (0..count)
        .map(|i| {
            let at = since + TimeDelta::seconds(i * step);
            let c = points
                .iter()
                .find(|p| p.at == at)
                .map(|p| p.counts)
                .unwrap_or_default();
            HistoryPoint {
                at,
                sent: c.sent,
                failed: c.failed,
                retried: c.retried,
            }
        })
        .collect()
}

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsQueuesApi {
    /// Every queue now: Redis backlog (platform admins), work waiting in
    /// Postgres (due, deferred, scheduled, in flight), finished work over
    /// the last minute, 15 minutes and hour, job duration and
    /// accepted-to-sent latency percentiles, and whether it is paused. An
    /// organisation admin sees its own organisation's work only.
    #[oai(path = "/queues", method = "get", operation_id = "ops.queues.list")]
    async fn list(&self, cx: AdminCtx<'_>) -> Result<ListResponse, ApiError> {
        let p = cx.principal().await?;
        let list = overview(cx.state, p.reach()).await?;
        Ok(ListResponse::Ok(Json((*list).clone())))
    }

    /// One queue now (see the list); an unknown queue is 404.
    #[oai(
        path = "/queues/:queue",
        method = "get",
        operation_id = "ops.queues.get"
    )]
    async fn get(&self, cx: AdminCtx<'_>, queue: Path<String>) -> Result<QueueResponse, ApiError> {
        let p = cx.principal().await?;
        let q = cx
            .acting(&p, "queue.get", "queue")
            .refused(Some(&queue.0), queue_of(&queue.0))
            .await?;
        Ok(QueueResponse::Ok(Json(one(cx.state, p.reach(), q).await?)))
    }

    /// A queue's finished work over time, for charts: the last hour per
    /// minute (`range=1h`, the default), the last day per 15 minutes
    /// (`24h`) or the last 7 days per hour (`7d`). Every step is present,
    /// oldest first, zeros included.
    #[oai(
        path = "/queues/:queue/history",
        method = "get",
        operation_id = "ops.queues.history"
    )]
    async fn history(
        &self,
        cx: AdminCtx<'_>,
        queue: Path<String>,
        range: Query<Option<HistoryRange>>,
    ) -> Result<HistoryResponse, ApiError> {
        let p = cx.principal().await?;
        let q = cx
            .acting(&p, "queue.history", "queue")
            .refused(Some(&queue.0), queue_of(&queue.0))
            .await?;
        let range = range.0.unwrap_or(HistoryRange::Hour);
        let (span, step) = range.span_and_step();
        let now = Utc::now();
        let current = now.duration_trunc(TimeDelta::seconds(step)).unwrap_or(now);
        let count = span / step;
        let since = current - TimeDelta::seconds(step * (count - 1));
        let points = queue_ops::history(&cx.state.pool, p.reach(), q, since, step).await?;
        Ok(HistoryResponse::Ok(Json(QueueHistory {
            queue: q.as_str().to_owned(),
            range,
            step_secs: step,
            points: fill(since, step, count, &points),
        })))
    }

    /// Pauses a queue for every replica within about a second (platform
    /// admins): the dispatcher stops feeding it, the API still accepts
    /// (202) and the work waits in Postgres, and workers finish what they
    /// hold and hand back what they fetch. Pausing a paused queue keeps the
    /// first pause. Only queues fed from Postgres can pause (`pausable`);
    /// the others answer 409. Audited.
    #[oai(
        path = "/queues/:queue/pause",
        method = "post",
        operation_id = "ops.queues.pause"
    )]
    async fn pause(
        &self,
        cx: AdminCtx<'_>,
        queue: Path<String>,
        body: Json<PauseRequest>,
    ) -> Result<QueueResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "queue.pause", "queue");
        let q = act
            .refused(
                Some(&queue.0),
                p.require_platform()
                    .and_then(|()| queue_of(&queue.0))
                    .and_then(|q| {
                        if shared::pauses::pausable(q) {
                            Ok(q)
                        } else {
                            Err(ApiError::Conflict(format!(
                                "the {q} queue cannot be paused: its work is not fed from Postgres"
                            )))
                        }
                    }),
            )
            .await?;
        let reason = body
            .0
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty());
        let mut tx = cx.state.pool.begin().await?;
        let pause = queue_ops::pause(&mut tx, q, &p.caller.actor, reason).await?;
        act.audit(
            &mut *tx,
            None,
            q,
            serde_json::json!({"reason": pause.reason}),
        )
        .await?;
        tx.commit().await?;
        publish_pauses(cx.state).await?;
        tracing::info!(queue = %q, by = %p.caller.actor, "queue paused");
        Ok(QueueResponse::Ok(Json(one(cx.state, p.reach(), q).await?)))
    }

    /// Resumes a paused queue (platform admins): the dispatcher feeds it
    /// again on its next sweep. Resuming a queue that is not paused changes
    /// nothing. Audited.
    #[oai(
        path = "/queues/:queue/resume",
        method = "post",
        operation_id = "ops.queues.resume"
    )]
    async fn resume(
        &self,
        cx: AdminCtx<'_>,
        queue: Path<String>,
    ) -> Result<QueueResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "queue.resume", "queue");
        let q = act
            .refused(
                Some(&queue.0),
                p.require_platform().and_then(|()| queue_of(&queue.0)),
            )
            .await?;
        let mut tx = cx.state.pool.begin().await?;
        let was_paused = queue_ops::resume(&mut *tx, q).await?;
        act.audit(
            &mut *tx,
            None,
            q,
            serde_json::json!({"was_paused": was_paused}),
        )
        .await?;
        tx.commit().await?;
        publish_pauses(cx.state).await?;
        if was_paused {
            tracing::info!(queue = %q, by = %p.caller.actor, "queue resumed");
        }
        Ok(QueueResponse::Ok(Json(one(cx.state, p.reach(), q).await?)))
    }

    /// The queue overview as server-sent events: an event `queues` with the
    /// same body as `GET /api/v1/ops/queues`, now and every 2 seconds. A
    /// stream ends after 10 minutes; open a new one (with a fresh token).
    /// `EventSource` cannot send an `Authorization` header: read it with
    /// `fetch()`.
    #[oai(path = "/stream", method = "get", operation_id = "ops.stream")]
    async fn stream(&self, cx: AdminCtx<'_>) -> Result<EventStream<Lists>, ApiError> {
        let p = cx.principal().await?;
        let scope = p.reach();
        let state = cx.state.clone();
        // The stream is read after the handler returned, outside the
        // request's scope: each read carries the request's scope.
        let db_scope = shared::db::scope::current();
        let started = Instant::now();
        let ticks = futures::stream::unfold(true, move |first| async move {
            if !first {
                tokio::time::sleep(STREAM_EVERY).await;
            }
            (started.elapsed() < STREAM_FOR).then_some(((), false))
        });
        let lists = ticks
            .then(move |()| {
                let state = state.clone();
                async move { shared::db::scope::carry(db_scope, overview(&state, scope)).await }
            })
            .filter_map(|r| async move {
                match r {
                    Ok(list) => Some((*list).clone()),
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the queue overview for a stream");
                        None
                    }
                }
            });
        Ok(EventStream::new(
            Box::pin(lists) as std::pin::Pin<Box<dyn Stream<Item = QueueList> + Send>>
        )
        .keep_alive(Duration::from_secs(15))
        .to_event(|list| {
            Event::message(
                serde_json::to_string(&poem_openapi::types::ToJSON::to_json(&list))
                    .unwrap_or_default(),
            )
            .event_type("queues")
        }))
    }
}

//! Operations: search, and a notification's timeline.
//!
//! `GET /search?q=` finds notifications, batches, bulk jobs and subscribers
//! by id, idempotency key or subscriber external id. `GET
//! /notifications/{id}/timeline` tells one notification's story oldest
//! first: accepted, pushed to its queue, each delivery attempt (provider,
//! outcome, latency), provider callbacks, webhook deliveries about it, and
//! its status now. Neither shows a recipient or content. Scoped like the
//! failed-work endpoints: an organisation admin sees its own organisation
//! only, and other organisations' ids are not found.

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::ops_search::{self, Timeline},
    domain::NotificationId,
};

use crate::{error::ApiError, extract::AdminCtx, extract::PathId};

/// The search and timeline endpoints.
#[derive(Debug)]
pub struct OpsSearchApi;

/// One match.
#[derive(Debug, Object)]
pub struct SearchMatch {
    /// `notification`, `batch`, `bulk_job` or `subscriber`.
    pub kind: String,
    /// Its id.
    pub id: String,
    /// Its organisation.
    pub organization_id: String,
    /// Its status, where it has one.
    pub status: Option<String>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// What it is and how it matched, without PHI.
    pub summary: String,
}

/// What a search found.
#[derive(Debug, Object)]
pub struct SearchResult {
    /// At most 50 matches, newest first.
    pub matches: Vec<SearchMatch>,
}

/// A notification as the timeline shows it (no recipient, no content).
#[derive(Debug, Object)]
pub struct TimelineNotification {
    /// Its id.
    pub id: String,
    /// Its organisation.
    pub organization_id: String,
    /// Its channel.
    pub channel: String,
    /// Its status now.
    pub status: String,
    /// Attempts made (an operator's retry starts them again).
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The provider's id of the message.
    pub provider_message_id: Option<String>,
    /// The last error, in the platform's words, recipient blanked out.
    pub last_error: Option<String>,
    /// Its category.
    pub category: Option<String>,
    /// Its batch.
    pub batch_id: Option<String>,
    /// Its bulk job.
    pub bulk_job_id: Option<String>,
}

/// One event of a timeline.
#[derive(Debug, Object)]
pub struct TimelineEvent {
    /// When.
    pub at: DateTime<Utc>,
    /// `accepted`, `dispatched`, `attempt`, `provider_event`, `webhook` or
    /// `status`.
    pub kind: String,
    /// A line for a person.
    pub title: String,
    /// The facts (ids, provider, outcome, latency, codes; never a recipient
    /// or content).
    pub detail: Value,
}

/// A notification's timeline.
#[derive(Debug, Object)]
pub struct TimelineView {
    /// The notification.
    pub notification: TimelineNotification,
    /// What happened to it, oldest first.
    pub events: Vec<TimelineEvent>,
}

/// Answers a search.
#[derive(Debug, ApiResponse)]
pub enum SearchResponse {
    /// The matches.
    #[oai(status = 200)]
    Ok(Json<SearchResult>),
}

/// Answers with a timeline.
#[derive(Debug, ApiResponse)]
pub enum TimelineResponse {
    /// The timeline.
    #[oai(status = 200)]
    Ok(Json<TimelineView>),
}

fn event(at: DateTime<Utc>, kind: &str, title: String, detail: Value) -> TimelineEvent {
    TimelineEvent {
        at,
        kind: kind.to_owned(),
        title,
        detail,
    }
}

/// The events of a timeline, oldest first.
fn events(t: &Timeline) -> Vec<TimelineEvent> {
    let h = &t.header;
    let mut out = vec![event(
        h.created_at,
        "accepted",
        format!("accepted for {}", h.channel),
        json!({"channel": h.channel, "max_attempts": h.max_attempts, "category": h.category,
               "batch_id": h.batch_id, "bulk_job_id": h.bulk_job_id}),
    )];
    if let Some(at) = h.dispatched_at
        && matches!(h.status.as_str(), "queued" | "deferred")
    {
        out.push(event(
            at,
            "dispatched",
            format!("pushed to the {} queue", h.channel),
            json!({"queue": h.channel}),
        ));
    }
    for a in &t.attempts {
        out.push(event(
            a.created_at,
            "attempt",
            format!("attempt {}: {} via {}", a.attempt, a.outcome, a.provider),
            json!({"attempt": a.attempt, "outcome": a.outcome, "provider": a.provider,
                   "latency_ms": a.latency_ms, "response_code": a.response_code,
                   "error": a.error, "worker": a.worker}),
        ));
    }
    for e in &t.provider_events {
        out.push(event(
            e.occurred_at.unwrap_or(e.received_at),
            "provider_event",
            format!("{} reported {}", e.provider, e.event),
            json!({"provider": e.provider, "event": e.event, "status": e.status,
                   "error_code": e.error_code, "occurred_at": e.occurred_at,
                   "received_at": e.received_at}),
        ));
    }
    for w in &t.webhooks {
        out.push(event(
            w.created_at,
            "webhook",
            format!("webhook {}: {}", w.event, w.status),
            json!({"id": w.id, "endpoint_id": w.endpoint_id, "event": w.event,
                   "status": w.status, "attempts": w.attempts,
                   "last_status_code": w.last_status_code, "delivered_at": w.delivered_at}),
        ));
    }
    let status_at = h
        .failed_at
        .filter(|_| matches!(h.status.as_str(), "failed" | "bounced"))
        .unwrap_or(h.updated_at);
    out.push(event(
        status_at.max(out.iter().map(|e| e.at).max().unwrap_or(status_at)),
        "status",
        format!("now {}", h.status),
        json!({"status": h.status, "attempts": h.attempts, "error_class": h.error_class,
               "last_error": h.last_error, "discarded_at": h.discarded_at,
               "content_redacted_at": h.content_redacted_at, "run_at": h.run_at}),
    ));
    out.sort_by_key(|e| e.at);
    out
}

#[OpenApi(
    prefix_path = "/api/v1/ops",
    tag = "crate::routes::ApiTags::Operations"
)]
impl OpsSearchApi {
    /// Finds notifications, batches, bulk jobs and subscribers whose id,
    /// idempotency key or (subscribers) external id is `q` (1 to 255
    /// characters), within what the caller may see.
    #[oai(path = "/search", method = "get", operation_id = "ops.search")]
    async fn search(
        &self,
        cx: AdminCtx<'_>,
        #[oai(validator(min_length = 1, max_length = 255))] q: Query<Option<String>>,
    ) -> Result<SearchResponse, ApiError> {
        let p = cx.principal().await?;
        let q = q.0.unwrap_or_default();
        let q = q.trim();
        if q.is_empty() || q.chars().count() > 255 || q.chars().any(char::is_control) {
            return Err(ApiError::invalid(
                "q",
                "must be 1 to 255 printable characters: an id, an idempotency key or an external id",
            ));
        }
        let rows = ops_search::search(&cx.state.pool, p.reach(), q).await?;
        let matches = rows
            .into_iter()
            .map(|m| SearchMatch {
                kind: m.kind,
                id: m.id.to_string(),
                organization_id: m.tenant_id.to_string(),
                status: m.status,
                created_at: m.created_at,
                summary: m.summary,
            })
            .collect();
        Ok(SearchResponse::Ok(Json(SearchResult { matches })))
    }

    /// A notification's history, oldest first, without its recipient or
    /// content.
    #[oai(
        path = "/notifications/:id/timeline",
        method = "get",
        operation_id = "ops.notifications.timeline"
    )]
    async fn timeline(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<TimelineResponse, ApiError> {
        let p = cx.principal().await?;
        let act = cx.acting(&p, "ops.notifications.timeline", "notification");
        let id = id.0.get("notification")?;
        let mut conn = cx.state.pool.acquire().await?;
        let found = ops_search::timeline(&mut conn, p.reach(), id)
            .await?
            .ok_or(ApiError::NotFound("notification"));
        let t = act.refused(Some(&id.to_string()), found).await?;
        let events = events(&t);
        let h = t.header;
        Ok(TimelineResponse::Ok(Json(TimelineView {
            notification: TimelineNotification {
                id: h.id.to_string(),
                organization_id: h.tenant_id.to_string(),
                channel: h.channel,
                status: h.status,
                attempts: h.attempts,
                max_attempts: h.max_attempts,
                created_at: h.created_at,
                sent_at: h.sent_at,
                delivered_at: h.delivered_at,
                provider_message_id: h.provider_message_id,
                last_error: h.last_error,
                category: h.category,
                batch_id: h.batch_id.map(|b| b.to_string()),
                bulk_job_id: h.bulk_job_id.map(|b| b.to_string()),
            },
            events,
        })))
    }
}

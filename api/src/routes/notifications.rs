//! `/api/v1/services/notifications`: send a notification on any channel,
//! raw or from a template, and read its status.
//!
//! A send is validated, committed to Postgres, and only then answered 202:
//! the 202 is a promise that the message goes out even if Redis is away.
//! Right after the commit the API pushes the job to Redis; if that fails, the
//! scheduler's dispatcher pushes it later. The rules of a send are in
//! [`crate::services::notifications`].

use crate::extract::PathId;
use crate::extract::ServiceCtx;
use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, param::Path, payload::Json};
use serde_json::Value;
use shared::{
    db::notifications,
    domain::{NotificationId, NotificationStatus},
};

use crate::body::StrictJson;
use crate::{
    error::ApiError,
    extract::{idempotency_key, request_hash},
    routes::ApiTags,
    services::notifications::{self as service, Sent},
};

/// The notification endpoints.
#[derive(Debug)]
pub struct NotificationsApi;

pub use crate::services::notifications::SendRequest;

/// One notification a send created.
#[derive(Debug, Clone, Object)]
pub struct AcceptedNotification {
    /// Its id.
    pub id: String,
    /// Its channel.
    pub channel: String,
    /// Its status.
    pub status: String,
    /// Where to poll for its status.
    pub status_url: String,
}

/// A channel a template send could not use.
#[derive(Debug, Clone, Object)]
pub struct SkippedChannel {
    /// The channel.
    pub channel: String,
    /// Why, e.g. the subscriber has no phone number.
    pub reason: String,
}

/// A send was accepted.
#[derive(Debug, Clone, Object)]
pub struct Accepted {
    /// The (first) notification's id.
    pub id: String,
    /// `queued`.
    pub status: String,
    /// Where to poll for its status.
    pub status_url: String,
    /// Every notification the send created (one per channel, one per device
    /// for push).
    pub notifications: Vec<AcceptedNotification>,
    /// Channels a template send could not use, and why.
    pub skipped: Vec<SkippedChannel>,
}

/// Answers to a send.
#[derive(Debug, ApiResponse)]
pub enum SendResponse {
    /// Accepted: committed and queued. With the same `Idempotency-Key` and body
    /// the first answer is returned again, with `Idempotent-Replayed: true`
    /// (the same notifications, each with its status now).
    #[oai(status = 202)]
    Accepted(
        Json<Accepted>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

/// One delivery attempt.
#[derive(Debug, Object)]
pub struct AttemptView {
    /// 1-based.
    pub attempt: i32,
    /// `sent`, `retry`, `failed`, `suppressed`, or `failover` (this
    /// provider failed or was skipped and the same attempt went on to the
    /// next one).
    pub outcome: String,
    /// The provider used.
    pub provider: String,
    /// The provider's answer, e.g. the SMTP reply.
    pub provider_response: Option<String>,
    /// The provider's status code (HTTP status or SMTP reply code).
    pub response_code: Option<i32>,
    /// The error, when it failed.
    pub error: Option<String>,
    /// How long the provider took.
    pub latency_ms: i32,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// A notification's status.
#[derive(Debug, Object)]
pub struct NotificationView {
    /// Its id.
    pub id: String,
    /// `email`.
    pub channel: String,
    /// The recipient.
    pub to: String,
    /// `queued`, `sending`, `sent`, `failed` or `suppressed`; after the
    /// provider reports on a sent message, `delivered`, `read` or `bounced`
    /// (or `failed`). Reports only move it forward.
    pub status: String,
    /// Attempts made.
    pub attempt_count: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// When the next attempt is due: while a retry waits, or while deferred
    /// (quiet hours, or every provider paused).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The provider's id of the message (the `Message-ID` for email).
    pub provider_message_id: Option<String>,
    /// The last error.
    pub last_error: Option<String>,
    /// Every attempt, oldest first.
    pub attempts: Vec<AttemptView>,
    /// Your metadata.
    pub metadata: Value,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When the provider accepted it.
    pub sent_at: Option<DateTime<Utc>>,
    /// When the provider reported it delivered.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When it was read (reported by the provider, or read in the inbox).
    pub read_at: Option<DateTime<Utc>>,
}

/// A cancelled notification.
#[derive(Debug, Object)]
pub struct Cancelled {
    /// Its id.
    pub id: String,
    /// `cancelled`.
    pub status: String,
}

/// Answers to a cancel.
#[derive(Debug, ApiResponse)]
pub enum CancelResponse {
    /// Cancelled: it will not be sent.
    #[oai(status = 200)]
    Ok(Json<Cancelled>),
}

/// Answers to a status read.
#[derive(Debug, ApiResponse)]
pub enum GetResponse {
    /// The notification.
    #[oai(status = 200)]
    Ok(Json<NotificationView>),
}

#[OpenApi(
    prefix_path = "/api/v1/services/notifications",
    tag = "ApiTags::Notifications"
)]
impl NotificationsApi {
    /// Send a notification: raw content on one channel (`channel` plus its
    /// fields), or a template rendered for a subscriber on several channels
    /// (`template`, `template_data`, `subscriber_id`, optional `channels`).
    /// Each channel becomes its own notification, listed in `notifications`;
    /// `send_at` schedules it.
    ///
    /// Answers 202 once the send is committed; poll `status_url` for the
    /// outcome. Send an `Idempotency-Key` to make retries of this request safe:
    /// the same key with the same body returns the first answer (the same
    /// notifications, each with its status now) and sends nothing again;
    /// with a different body it is refused with 422.
    #[oai(path = "/send", method = "post", operation_id = "notifications.send")]
    async fn send(
        &self,
        cx: ServiceCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        body: StrictJson<SendRequest>,
    ) -> Result<SendResponse, ApiError> {
        let key = idempotency_key(key.0)?;
        let idempotency = key.map(|k| (k, request_hash(&body.0)));
        let req = body.0;
        let sent = service::send(
            cx.state,
            cx.auth.0.tenant_id,
            &cx.request_id.0,
            &req,
            idempotency,
        )
        .await?;
        Ok(accepted(sent))
    }

    /// Cancel a notification that has not gone out: queued, scheduled
    /// (`send_at`), deferred (quiet hours, paused providers) or held by a
    /// worker (`sending`, e.g. waiting out a rate limit), which stops before
    /// calling a provider. Only a provider that already has the message can
    /// still accept it; it then shows `sent`. One that has finished answers
    /// 409 with its status.
    #[oai(
        path = "/:id/cancel",
        method = "post",
        operation_id = "notifications.cancel"
    )]
    async fn cancel(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<CancelResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("notification")?;
        let mut conn = cx.state.pool.acquire().await?;
        match notifications::cancel(&mut conn, tenant_id, id).await? {
            notifications::Cancelled::Done => {
                tracing::info!(notification_id = %id, "cancelled");
                Ok(CancelResponse::Ok(Json(Cancelled {
                    id: id.to_string(),
                    status: NotificationStatus::Cancelled.as_str().into(),
                })))
            }
            notifications::Cancelled::TooLate(status) => Err(ApiError::Conflict(format!(
                "the notification is {} and can no longer be cancelled",
                status.as_str()
            ))),
            notifications::Cancelled::NotFound => Err(ApiError::NotFound("notification")),
        }
    }

    /// Read a notification's status and attempts.
    #[oai(path = "/:id", method = "get", operation_id = "notifications.get")]
    async fn get(
        &self,
        cx: ServiceCtx<'_>,
        id: Path<PathId<NotificationId>>,
    ) -> Result<GetResponse, ApiError> {
        let id = id.0.get("notification")?;
        let status = service::status(cx.state, cx.auth.0.tenant_id, id).await?;
        Ok(GetResponse::Ok(Json(view(status))))
    }
}

/// The 202 for a send: its first notification, and every one with where to
/// poll it.
fn accepted(sent: Sent) -> SendResponse {
    let url = |id: &NotificationId| format!("/api/v1/services/notifications/{id}");
    let notifications: Vec<AcceptedNotification> = sent
        .notifications
        .iter()
        .map(|(id, channel, status)| AcceptedNotification {
            id: id.to_string(),
            channel: channel.as_str().into(),
            status: status.as_str().into(),
            status_url: url(id),
        })
        .collect();
    let skipped = sent
        .skipped
        .into_iter()
        .map(|s| SkippedChannel {
            channel: s.channel.as_str().into(),
            reason: s.reason.into(),
        })
        .collect();
    let first = notifications.first().cloned();
    let (id, status, status_url) = first
        .map(|n| (n.id, n.status, n.status_url))
        .unwrap_or_default();
    SendResponse::Accepted(
        Json(Accepted {
            id,
            status,
            status_url: status_url.clone(),
            notifications,
            skipped,
        }),
        status_url,
        sent.replayed.then(|| "true".to_owned()),
    )
}

/// A notification's status as shown, its attempts oldest first.
fn view(status: service::Status) -> NotificationView {
    let service::Status {
        notification: n,
        attempts,
        next_attempt_at,
    } = status;
    NotificationView {
        id: n.id.to_string(),
        channel: n.channel.as_str().into(),
        to: n.recipient,
        status: n.status.as_str().into(),
        attempt_count: n.attempts,
        max_attempts: n.max_attempts,
        next_attempt_at,
        provider_message_id: n.provider_message_id,
        last_error: n.last_error,
        attempts: attempts
            .into_iter()
            .map(|a| AttemptView {
                attempt: a.attempt,
                outcome: a.outcome.as_str().into(),
                provider: a.provider,
                provider_response: a.provider_response,
                response_code: a.response_code,
                error: a.error,
                latency_ms: a.latency_ms,
                at: a.created_at,
            })
            .collect(),
        metadata: n.metadata.0,
        created_at: n.created_at,
        updated_at: n.updated_at,
        sent_at: n.sent_at,
        delivered_at: n.delivered_at,
        read_at: n.read_at,
    }
}

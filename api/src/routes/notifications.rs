//! `/api/v1/services/notifications`: send a notification on any channel,
//! raw or from a template, and read its status.
//!
//! A send is validated, committed to Postgres, and only then answered 202:
//! the 202 is a promise that the message goes out even if Redis is away.
//! Right after the commit the API pushes the job to Redis; if that fails, the
//! scheduler's dispatcher pushes it later.

use crate::extract::PathId;
use crate::extract::ServiceCtx;
use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, param::Path, payload::Json};
use serde_json::Value;
use shared::{
    db::{
        notifications::{self, Inserted, NewNotification, NewRow},
        subscribers,
    },
    domain::{Channel, NotificationId, NotificationStatus, Subject},
    jobs::{QueueName, SendNotifications},
    outbox::Enqueued,
};

use crate::accept::Shared;
use crate::body::StrictJson;
use crate::{
    AppState,
    error::{ApiError, InvalidParam},
    routes::ApiTags,
};

mod plan;
mod validate;

use crate::extract::{accepted_before, idempotency_key, request_hash};
use plan::*;
use validate::*;

/// Most keys in `metadata`.
const MAX_METADATA_KEYS: usize = 50;

/// The notification endpoints.
#[derive(Debug)]
pub struct NotificationsApi;

/// A notification to send: an email (`channel` omitted or `email`) or an
/// in-app message (`channel: "inapp"`).
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct SendRequest {
    /// `email` (the default), `sms`, `push`, `whatsapp` or `inapp`.
    pub channel: Option<String>,
    /// Required for email (an address, e.g. `pat@example.org`), sms and
    /// whatsapp (an E.164 number, e.g. `+15005550006`) and push (the device's
    /// FCM registration token).
    pub to: Option<String>,
    /// Email, required. The subject: one line, at most 998 characters.
    pub subject: Option<String>,
    /// Email: the plain-text body (at least one of `text` and `html` is
    /// required). SMS: the message, required, at most 1,600 characters.
    /// WhatsApp: free-form text (only within 24 hours of the person's last
    /// message; otherwise use `whatsapp_template`).
    pub text: Option<String>,
    /// Email. The HTML body.
    pub html: Option<String>,
    /// The user's id at your identity provider (the JWT subject they sign in
    /// with). Required for in-app; for email it makes the user's preferences
    /// apply.
    pub subscriber_id: Option<String>,
    /// In-app and push, required. One line, at most 200 characters.
    pub title: Option<String>,
    /// In-app and push. The message, at most 5,000 characters.
    pub body: Option<String>,
    /// WhatsApp. A template approved by Meta: `{"name": "appointment_reminder",
    /// "language": "en_US", "parameters": ["Pat", "3 PM"]}`.
    pub whatsapp_template: Option<Value>,
    /// In-app. Where a click leads: an `https://` or `http://` URL, or a path
    /// starting with `/`.
    pub action_url: Option<String>,
    /// In-app and push. Data for your app (a JSON object; push needs string
    /// values).
    pub data: Option<Value>,
    /// A category (letters, digits, `.`, `_`, `-`; at most 100), for inbox
    /// filters.
    pub category: Option<String>,
    /// Critical (a result, a safety alert): sent even against the user's
    /// opt-outs and quiet hours.
    pub critical: Option<bool>,
    /// Your own key/value data, returned as given (a JSON object).
    pub metadata: Option<Value>,
    /// The key of one of your templates (`/api/v1/admin/templates`) to render
    /// instead of giving the content. Its category and critical flag apply.
    pub template: Option<String>,
    /// The template's variables (a JSON object). Every variable the template
    /// uses must be present.
    pub template_data: Option<Value>,
    /// With a template: the channels to send on (default: the template's
    /// default channels). Each becomes its own notification.
    pub channels: Option<Vec<String>>,
    /// With a template: the locale to render (default: the subscriber's, then
    /// the template's default).
    pub locale: Option<String>,
    /// When to send (RFC 3339, at most 365 days ahead); now when omitted.
    pub send_at: Option<DateTime<Utc>>,
    /// Whether the message carries protected health information. While the
    /// organisation has no valid BAA and its setting
    /// `block_phi_when_non_compliant` is on, such sends get 403.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phi: Option<bool>,
}

/// 403 when `tenant_id` blocks PHI sends and has no valid BAA.
async fn phi_allowed(
    state: &AppState,
    tenant_id: shared::domain::TenantId,
) -> Result<(), ApiError> {
    let org = shared::db::organizations::get(&state.pool, tenant_id).await?;
    let blocked = org.is_some_and(|o| {
        o.blocks_phi_when_non_compliant() && !o.compliant(Utc::now().date_naive())
    });
    if blocked {
        return Err(ApiError::Forbidden(
            "this organisation has no valid BAA: sends that carry PHI are blocked",
        ));
    }
    Ok(())
}

impl SendRequest {
    /// The raw-content fields, each with whether it is present.
    fn content_fields(&self) -> [(&'static str, bool); 9] {
        [
            ("to", self.to.is_some()),
            ("subject", self.subject.is_some()),
            ("text", self.text.is_some()),
            ("html", self.html.is_some()),
            ("title", self.title.is_some()),
            ("body", self.body.is_some()),
            ("action_url", self.action_url.is_some()),
            ("data", self.data.is_some()),
            ("whatsapp_template", self.whatsapp_template.is_some()),
        ]
    }
}

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
        let tenant_id = cx.auth.0.tenant_id;
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        if req.phi == Some(true) {
            phi_allowed(cx.state, tenant_id).await?;
        }
        let run_at = match req.send_at {
            Some(at) if at > Utc::now() + chrono::Duration::days(365) => {
                return Err(ApiError::invalid(
                    "send_at",
                    "must be at most 365 days ahead",
                ));
            }
            Some(at) if at > Utc::now() => Some(at),
            _ => None,
        };
        let (plans, skipped, critical, known) = match &req.template {
            Some(template) => plan_template(cx.state, tenant_id, req, template).await?,
            None => {
                for (name, present) in [
                    ("template_data", req.template_data.is_some()),
                    ("channels", req.channels.is_some()),
                    ("locale", req.locale.is_some()),
                ] {
                    if present {
                        return Err(ApiError::invalid(name, "is only used with `template`"));
                    }
                }
                (
                    vec![validate(req)?],
                    Vec::new(),
                    req.critical.unwrap_or(false),
                    None,
                )
            }
        };
        // Counted against the organisation's send quotas before anything is
        // written: a send that would pass one is refused whole.
        let counts = crate::limits::per_channel(plans.iter().map(|p| p.channel()));
        let replayed = accepted_before(key.as_deref(), |k| {
            shared::db::limits::send_accepted(&cx.state.pool, tenant_id, k)
        });
        let quota = cx.take_quota(tenant_id, &counts, replayed).await?;
        let hash = key.as_ref().map(|_| request_hash(req));
        // A send with nothing to decide in its transaction shares a commit
        // with the sends accepted beside it. In-app rows name their
        // subscriber by external id, and the shared commit finds (or
        // creates) every subscriber of its sends at once. A subscriber a
        // send on another channel names is created first when it is new (as
        // any send would create it; a subscriber erased before the shared
        // commit makes that commit fail, and the send then goes on alone,
        // creating it again).
        let mut known = known;
        let inapp_only = plans.iter().all(|p| p.channel() == Channel::InApp);
        if key.is_none()
            && run_at.is_none()
            && known.is_none()
            && !inapp_only
            && let Some(external_id) = plans.iter().find_map(|p| p.subscriber.as_ref())
        {
            let id = match subscribers::find_id(&cx.state.pool, tenant_id, external_id).await? {
                Some(id) => id,
                None => {
                    let mut conn = cx.state.pool.acquire().await?;
                    subscribers::upsert(&mut conn, tenant_id, external_id).await?
                }
            };
            known = Some((external_id.clone(), id));
        }
        let shareable = key.is_none()
            && run_at.is_none()
            && plans.iter().all(|p| {
                p.channel() == Channel::InApp
                    || p.subscriber.as_ref().is_none_or(|s| {
                        known
                            .as_ref()
                            .is_some_and(|(external_id, _)| external_id == s)
                    })
            });
        if shareable {
            let first = NotificationId::new();
            let rows: Vec<NewRow> = plans
                .iter()
                .enumerate()
                .map(|(i, plan)| NewRow {
                    id: if i == 0 { first } else { NotificationId::new() },
                    tenant_id,
                    channel: plan.channel(),
                    recipient: plan.recipient.clone(),
                    content: plan.content.to_stored(),
                    metadata: plan.metadata.clone(),
                    max_attempts: cx
                        .state
                        .jobs
                        .queue(QueueName::for_channel(plan.channel()))
                        .max_attempts,
                    subscriber_id: plan.subscriber.as_ref().and(known.as_ref().map(|k| k.1)),
                    category: plan.category.clone(),
                    template_key: req.template.clone(),
                    critical,
                    dispatched: false,
                    send_id: first,
                })
                .collect();
            let mut created: Vec<(NotificationId, Channel, NotificationStatus)> = rows
                .iter()
                .map(|r| (r.id, r.channel, NotificationStatus::Queued))
                .collect();
            if let Shared::Committed { placed } = cx.state.acceptor.accept(rows).await? {
                for (id, _, status) in &mut created {
                    if placed.contains(id) {
                        *status = NotificationStatus::Sent;
                    }
                }
                for (_, channel, _) in &created {
                    metrics::counter!("notifications_accepted_total", "channel" => channel.as_str())
                        .increment(1);
                }
                tracing::info!(notification_id = %created[0].0, count = created.len(), "send accepted");
                return Ok(accepted(&created, skipped, false));
            }
        }
        // Scheduled sends wait in Postgres; the dispatcher pushes them when due.
        let mut push = std::collections::BTreeMap::new();
        for plan in &plans {
            let queue = QueueName::for_channel(plan.channel());
            if run_at.is_none() && !push.contains_key(&queue) {
                let room = cx.state.window.reserve(queue).await;
                push.insert(queue, room);
            }
        }
        let mut tx = cx.state.pool.begin().await?;
        let mut created: Vec<(NotificationId, Channel, NotificationStatus)> = Vec::new();
        // A subscriber is looked up (or created) once per send, not per channel.
        for (i, plan) in plans.iter().enumerate() {
            let queue = QueueName::for_channel(plan.channel());
            let subscriber_id = match &plan.subscriber {
                Some(external_id) => match &known {
                    Some((known_id, id)) if known_id == external_id => Some(*id),
                    _ => {
                        let id = subscribers::upsert(&mut tx, tenant_id, external_id).await?;
                        known = Some((external_id.clone(), id));
                        Some(id)
                    }
                },
                None => None,
            };
            let new = NewNotification {
                channel: plan.channel(),
                recipient: &plan.recipient,
                content: plan.content.to_stored(),
                metadata: plan.metadata.clone(),
                max_attempts: cx.state.jobs.queue(queue).max_attempts,
                // The first notification carries the request's key; the
                // others are found through it.
                idempotency: if i == 0 {
                    key.as_deref().zip(hash.clone())
                } else {
                    None
                },
                subscriber_id,
                category: plan.category.as_deref(),
                template_key: req.template.as_deref(),
                critical,
                dispatched: push.get(&queue).copied().unwrap_or(false),
                send_id: created.first().map(|c| c.0),
                run_at,
                waited_by_run: None,
            };
            match notifications::insert(&mut tx, tenant_id, new).await? {
                Inserted::Created(id) => {
                    created.push((id, plan.channel(), NotificationStatus::Queued))
                }
                Inserted::Existing {
                    id,
                    same_request: true,
                } => {
                    drop(tx);
                    // A replay sends nothing again.
                    quota.give_back().await;
                    let earlier = notifications::of_send(&cx.state.pool, tenant_id, id).await?;
                    return Ok(accepted(&earlier, skipped, true));
                }
                Inserted::Existing {
                    same_request: false,
                    ..
                } => {
                    quota.give_back().await;
                    return Err(ApiError::IdempotencyKeyReused);
                }
            }
        }
        // An in-app message that leaves nothing to decide goes into the
        // inbox in this transaction: no job and no claim.
        let inapp: Vec<NotificationId> = created
            .iter()
            .filter(|(_, c, _)| *c == Channel::InApp)
            .map(|(id, _, _)| *id)
            .collect();
        let mut inbox_events = Vec::new();
        if run_at.is_none()
            && !inapp.is_empty()
            && crate::accept::places_inapp_now(&mut tx, tenant_id).await?
        {
            let (placed, events) =
                shared::events::deliver_inbox_group(&mut tx, tenant_id, &inapp).await?;
            for (id, _, status) in &mut created {
                if placed.contains(id) {
                    *status = NotificationStatus::Sent;
                }
            }
            inbox_events = events;
        }
        tx.commit().await?;
        for (_, channel, _) in &created {
            metrics::counter!("notifications_accepted_total", "channel" => channel.as_str())
                .increment(1);
        }
        if !inbox_events.is_empty() {
            metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
                .increment(1);
            cx.state.throughput.record(
                QueueName::InApp,
                Some(tenant_id),
                shared::throughput::Outcome::Sent,
                1,
                None,
                Some(std::time::Duration::ZERO),
            );
            if let Err(error) = shared::events::publish(&cx.state.queues, &inbox_events).await {
                // Connected clients catch up from Postgres when they reconnect.
                tracing::warn!(%error, "cannot publish inbox events");
            }
        }
        for (queue, room) in push {
            if !room {
                continue;
            }
            let ids: Vec<NotificationId> = created
                .iter()
                .filter(|(_, c, s)| {
                    QueueName::for_channel(*c) == queue && *s == NotificationStatus::Queued
                })
                .map(|(id, _, _)| *id)
                .collect();
            if ids.is_empty() {
                continue;
            }
            let channel = created
                .iter()
                .find(|(_, c, _)| QueueName::for_channel(*c) == queue)
                .map(|(_, c, _)| *c);
            let Some(channel) = channel else { continue };
            Enqueued::one(SendNotifications {
                tenant_id,
                channel,
                notification_ids: ids,
            })
            .push(&cx.state.queues, &cx.state.pool)
            .await?;
        }
        tracing::info!(notification_id = %created[0].0, count = created.len(), "send accepted");
        Ok(accepted(&created, skipped, false))
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
        let tenant_id = cx.auth.0.tenant_id;
        let id = id.0.get("notification")?;
        // One snapshot for the row and its attempts, so a worker recording an
        // attempt in between cannot make them disagree.
        let mut tx = cx.state.pool.begin().await?;
        shared::db::read_snapshot(&mut tx).await?;
        let n = notifications::get(&mut *tx, tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("notification"))?;
        let attempts = notifications::attempts(&mut *tx, tenant_id, id).await?;
        tx.commit().await?;
        let next_attempt_at = match n.status {
            NotificationStatus::Queued if n.attempts > 0 => Some(n.run_at),
            NotificationStatus::Deferred => Some(n.run_at),
            _ => None,
        };
        Ok(GetResponse::Ok(Json(NotificationView {
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
        })))
    }
}

//! Sending a notification: raw content on one channel, or a template
//! rendered for a subscriber on several channels, each channel its own
//! notification. The route in [`crate::routes::notifications`] parses the
//! request and shapes the 202; the rules are here.
//!
//! A send is validated (`validate` for raw content, `plan` for a
//! template), counted against the organisation's send quotas, committed to
//! Postgres, and only then answered: the 202 is a promise that the message
//! goes out even if Redis is away. Right after the commit the job is pushed
//! to Redis; if that fails, the scheduler's dispatcher pushes it later. A
//! send with nothing to decide in its transaction shares a commit with the
//! sends accepted beside it ([`crate::accept`]).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use serde_json::Value;
use shared::{
    db::{
        notifications::{self, Inserted, NewNotification, NewRow},
        subscribers,
    },
    domain::{Channel, NotificationId, NotificationStatus, SubscriberId, TenantId},
    events::Event,
    jobs::{QueueName, SendNotifications},
    outbox::Enqueued,
};

use crate::{AppState, accept::Shared, error::ApiError, extract::accepted_before};

mod plan;
mod validate;

use plan::{KnownSubscriber, plan_template};
use validate::{ValidSend, validate};

/// Most keys in `metadata`.
const MAX_METADATA_KEYS: usize = 50;

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

/// A notification as it stands: the row, its attempts oldest first, and
/// when it is tried next.
#[derive(Debug)]
pub struct Status {
    /// The notification.
    pub notification: notifications::Notification,
    /// Its attempts, oldest first.
    pub attempts: Vec<notifications::Attempt>,
    /// When it is tried next: a queued notification tried before, or a
    /// deferred one.
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A notification a send created: its id, channel and status.
pub type Created = (NotificationId, Channel, NotificationStatus);

/// A channel a template send could not use.
#[derive(Debug, Clone)]
pub struct Skipped {
    /// The channel.
    pub channel: Channel,
    /// Why, e.g. the subscriber has no phone number.
    pub reason: &'static str,
}

/// A send accepted, or the one an earlier request with the same idempotency
/// key accepted.
#[derive(Debug)]
pub struct Sent {
    /// Every notification of the send, the first one first (one per
    /// channel, one per device for push); a replay's with their status now.
    pub notifications: Vec<Created>,
    /// Channels a template send could not use, and why.
    pub skipped: Vec<Skipped>,
    /// Whether these are an earlier request's notifications.
    pub replayed: bool,
}

/// A send checked: its notifications-to-be and what they share.
struct Planned {
    plans: Vec<ValidSend>,
    skipped: Vec<Skipped>,
    critical: bool,
    known: KnownSubscriber,
}

/// Notification `id` of `tenant_id` and its attempts (404 when it has
/// none), read in one snapshot so a worker recording an attempt in between
/// cannot make them disagree.
pub async fn status(
    state: &AppState,
    tenant_id: TenantId,
    id: NotificationId,
) -> Result<Status, ApiError> {
    let mut tx = state.pool.begin().await?;
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
    Ok(Status {
        notification: n,
        attempts,
        next_attempt_at,
    })
}

/// Sends `req` for `tenant_id`. `idempotency` is the request's key and the
/// hash of its body: a key already used with the same body answers the
/// first send again (sending nothing), with another body 422. In order: the
/// PHI block (403), `send_at`, the fields (400), the quotas (429), then the
/// idempotency key.
pub async fn send(
    state: &AppState,
    tenant_id: TenantId,
    request_id: &str,
    req: &SendRequest,
    idempotency: Option<(String, Vec<u8>)>,
) -> Result<Sent, ApiError> {
    if req.phi == Some(true) {
        phi_allowed(state, tenant_id).await?;
    }
    let run_at = run_at(req.send_at)?;
    let Planned {
        plans,
        skipped,
        critical,
        mut known,
    } = plan(state, tenant_id, req).await?;
    // Counted against the organisation's send quotas before anything is
    // written: a send that would pass one is refused whole.
    let key = idempotency.as_ref().map(|(k, _)| k.as_str());
    let counts = crate::limits::per_channel(plans.iter().map(ValidSend::channel));
    let replayed = accepted_before(key, |k| {
        shared::db::limits::send_accepted(&state.pool, tenant_id, k)
    });
    let quota = state
        .limits
        .take_quota_unless_replayed(tenant_id, request_id, &counts, replayed)
        .await?;
    if key.is_none() && run_at.is_none() {
        known = subscriber_for_shared(state, tenant_id, &plans, known).await?;
        if shareable(&plans, &known) {
            let rows = shared_rows(state, tenant_id, req, &plans, critical, &known);
            if let Some(created) = accept_shared(state, rows).await? {
                return Ok(Sent {
                    notifications: created,
                    skipped,
                    replayed: false,
                });
            }
        }
    }
    // Scheduled sends wait in Postgres; the dispatcher pushes them when due.
    let push = reserve_room(state, &plans, run_at).await;
    let mut tx = state.pool.begin().await?;
    let insert = Insert {
        req,
        critical,
        run_at,
        idempotency: idempotency.as_ref(),
        push: &push,
    };
    let mut created = match insert_all(state, &mut tx, tenant_id, &plans, known, insert).await? {
        Insertion::Created(created) => created,
        Insertion::Replay(first) => {
            drop(tx);
            // A replay sends nothing again.
            quota.give_back().await;
            let earlier = notifications::of_send(&state.pool, tenant_id, first).await?;
            return Ok(Sent {
                notifications: earlier,
                skipped,
                replayed: true,
            });
        }
        Insertion::Reused => {
            quota.give_back().await;
            return Err(ApiError::IdempotencyKeyReused);
        }
    };
    let inbox_events = place_inapp(&mut tx, tenant_id, run_at, &mut created).await?;
    tx.commit().await?;
    count_accepted(&created);
    publish_inbox(state, tenant_id, &inbox_events).await;
    push_jobs(state, tenant_id, push, &created).await?;
    tracing::info!(notification_id = %created[0].0, count = created.len(), "send accepted");
    Ok(Sent {
        notifications: created,
        skipped,
        replayed: false,
    })
}

/// 403 when `tenant_id` blocks PHI sends and has no valid BAA.
async fn phi_allowed(state: &AppState, tenant_id: TenantId) -> Result<(), ApiError> {
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

/// When a send asked for `send_at` is due: `None` for now (or a time
/// passed), at most 365 days ahead.
fn run_at(send_at: Option<DateTime<Utc>>) -> Result<Option<DateTime<Utc>>, ApiError> {
    match send_at {
        Some(at) if at > Utc::now() + chrono::Duration::days(365) => Err(ApiError::invalid(
            "send_at",
            "must be at most 365 days ahead",
        )),
        Some(at) if at > Utc::now() => Ok(Some(at)),
        _ => Ok(None),
    }
}

/// Checks a send: a template rendered per channel, or raw content (which
/// takes none of the template's fields).
async fn plan(
    state: &AppState,
    tenant_id: TenantId,
    req: &SendRequest,
) -> Result<Planned, ApiError> {
    if let Some(template) = &req.template {
        return plan_template(state, tenant_id, req, template).await;
    }
    for (name, present) in [
        ("template_data", req.template_data.is_some()),
        ("channels", req.channels.is_some()),
        ("locale", req.locale.is_some()),
    ] {
        if present {
            return Err(ApiError::invalid(name, "is only used with `template`"));
        }
    }
    Ok(Planned {
        plans: vec![validate(req)?],
        skipped: Vec::new(),
        critical: req.critical.unwrap_or(false),
        known: None,
    })
}

/// The subscriber a send that may share a commit names, when it is not yet
/// `known`.
///
/// In-app rows name their subscriber by external id, and the shared commit
/// finds (or creates) every subscriber of its sends at once. A subscriber a
/// send on another channel names is created first when it is new (as any
/// send would create it; a subscriber erased before the shared commit makes
/// that commit fail, and the send then goes on alone, creating it again).
async fn subscriber_for_shared(
    state: &AppState,
    tenant_id: TenantId,
    plans: &[ValidSend],
    known: KnownSubscriber,
) -> Result<KnownSubscriber, ApiError> {
    let inapp_only = plans.iter().all(|p| p.channel() == Channel::InApp);
    if known.is_some() || inapp_only {
        return Ok(known);
    }
    let Some(external_id) = plans.iter().find_map(|p| p.subscriber.as_ref()) else {
        return Ok(known);
    };
    let id = match subscribers::find_id(&state.pool, tenant_id, external_id).await? {
        Some(id) => id,
        None => {
            let mut conn = state.pool.acquire().await?;
            subscribers::upsert(&mut conn, tenant_id, external_id).await?
        }
    };
    Ok(Some((external_id.clone(), id)))
}

/// Whether a send without a key or a `send_at` has nothing to decide in its
/// transaction: every subscriber it names on a channel other than in-app is
/// `known`.
fn shareable(plans: &[ValidSend], known: &KnownSubscriber) -> bool {
    plans.iter().all(|p| {
        p.channel() == Channel::InApp
            || p.subscriber.as_ref().is_none_or(|s| {
                known
                    .as_ref()
                    .is_some_and(|(external_id, _)| external_id == s)
            })
    })
}

/// The rows of a send that shares a commit; the first one's id is the send's.
fn shared_rows(
    state: &AppState,
    tenant_id: TenantId,
    req: &SendRequest,
    plans: &[ValidSend],
    critical: bool,
    known: &KnownSubscriber,
) -> Vec<NewRow> {
    let first = NotificationId::new();
    plans
        .iter()
        .enumerate()
        .map(|(i, plan)| NewRow {
            id: if i == 0 { first } else { NotificationId::new() },
            tenant_id,
            channel: plan.channel(),
            recipient: plan.recipient.clone(),
            content: plan.content.to_stored(),
            metadata: plan.metadata.clone(),
            max_attempts: state
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
        .collect()
}

/// Hands `rows` to the shared commit; their notifications once it
/// committed them, `None` when the send must go on alone.
async fn accept_shared(
    state: &AppState,
    rows: Vec<NewRow>,
) -> Result<Option<Vec<Created>>, ApiError> {
    let mut created: Vec<Created> = rows
        .iter()
        .map(|r| (r.id, r.channel, NotificationStatus::Queued))
        .collect();
    let Shared::Committed { placed } = state.acceptor.accept(rows).await? else {
        return Ok(None);
    };
    for (id, _, status) in &mut created {
        if placed.contains(id) {
            *status = NotificationStatus::Sent;
        }
    }
    count_accepted(&created);
    tracing::info!(notification_id = %created[0].0, count = created.len(), "send accepted");
    Ok(Some(created))
}

/// Whether each queue of a send due now has room in the dispatcher's
/// window for its job; nothing for a scheduled send.
async fn reserve_room(
    state: &AppState,
    plans: &[ValidSend],
    run_at: Option<DateTime<Utc>>,
) -> BTreeMap<QueueName, bool> {
    let mut push = BTreeMap::new();
    for plan in plans {
        let queue = QueueName::for_channel(plan.channel());
        if run_at.is_none() && !push.contains_key(&queue) {
            let room = state.window.reserve(queue).await;
            push.insert(queue, room);
        }
    }
    push
}

/// What every notification of a send going alone shares.
struct Insert<'a> {
    req: &'a SendRequest,
    critical: bool,
    run_at: Option<DateTime<Utc>>,
    idempotency: Option<&'a (String, Vec<u8>)>,
    push: &'a BTreeMap<QueueName, bool>,
}

/// What inserting a send's notifications found.
enum Insertion {
    /// They are new.
    Created(Vec<Created>),
    /// The key names an earlier send of the same body, whose first
    /// notification this is.
    Replay(NotificationId),
    /// The key names an earlier send of another body.
    Reused,
}

/// Inserts a send's notifications in `tx`; the first carries the request's
/// key and the others are found through it. A subscriber is looked up (or
/// created) once per send, not per channel.
async fn insert_all(
    state: &AppState,
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    plans: &[ValidSend],
    mut known: KnownSubscriber,
    insert: Insert<'_>,
) -> Result<Insertion, ApiError> {
    let mut created: Vec<Created> = Vec::new();
    for (i, plan) in plans.iter().enumerate() {
        let queue = QueueName::for_channel(plan.channel());
        let subscriber_id = match &plan.subscriber {
            Some(external_id) => Some(subscriber(tx, tenant_id, external_id, &mut known).await?),
            None => None,
        };
        let new = NewNotification {
            channel: plan.channel(),
            recipient: &plan.recipient,
            content: plan.content.to_stored(),
            metadata: plan.metadata.clone(),
            max_attempts: state.jobs.queue(queue).max_attempts,
            idempotency: match insert.idempotency {
                Some((key, hash)) if i == 0 => Some((key.as_str(), hash.clone())),
                _ => None,
            },
            subscriber_id,
            category: plan.category.as_deref(),
            template_key: insert.req.template.as_deref(),
            critical: insert.critical,
            dispatched: insert.push.get(&queue).copied().unwrap_or(false),
            send_id: created.first().map(|c| c.0),
            run_at: insert.run_at,
            waited_by_run: None,
        };
        match notifications::insert(&mut *tx, tenant_id, new).await? {
            Inserted::Created(id) => created.push((id, plan.channel(), NotificationStatus::Queued)),
            Inserted::Existing {
                id,
                same_request: true,
            } => return Ok(Insertion::Replay(id)),
            Inserted::Existing {
                same_request: false,
                ..
            } => return Ok(Insertion::Reused),
        }
    }
    Ok(Insertion::Created(created))
}

/// The id of the subscriber `external_id`: `known`'s, or found (or created)
/// in `tx` and then known.
async fn subscriber(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    external_id: &str,
    known: &mut KnownSubscriber,
) -> Result<SubscriberId, ApiError> {
    if let Some((known_id, id)) = known
        && known_id == external_id
    {
        return Ok(*id);
    }
    let id = subscribers::upsert(tx, tenant_id, external_id).await?;
    *known = Some((external_id.to_owned(), id));
    Ok(id)
}

/// Places a send's in-app messages due now in the inbox in `tx` when they
/// leave nothing to decide (no job and no claim), marking them sent; the
/// events to announce after the commit.
async fn place_inapp(
    tx: &mut sqlx::PgConnection,
    tenant_id: TenantId,
    run_at: Option<DateTime<Utc>>,
    created: &mut [Created],
) -> Result<Vec<Event>, ApiError> {
    let inapp: Vec<NotificationId> = created
        .iter()
        .filter(|(_, c, _)| *c == Channel::InApp)
        .map(|(id, _, _)| *id)
        .collect();
    if run_at.is_some()
        || inapp.is_empty()
        || !crate::accept::places_inapp_now(&mut *tx, tenant_id).await?
    {
        return Ok(Vec::new());
    }
    let (placed, events) = shared::events::deliver_inbox_group(tx, tenant_id, &inapp).await?;
    for (id, _, status) in created.iter_mut() {
        if placed.contains(id) {
            *status = NotificationStatus::Sent;
        }
    }
    Ok(events)
}

/// Counts a send's notifications as accepted, per channel.
fn count_accepted(created: &[Created]) {
    for (_, channel, _) in created {
        metrics::counter!("notifications_accepted_total", "channel" => channel.as_str())
            .increment(1);
    }
}

/// Records in-app messages placed in the inbox as sent and announces them
/// to connected clients.
async fn publish_inbox(state: &AppState, tenant_id: TenantId, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    metrics::counter!("notifications_sent_total", "channel" => "inapp", "outcome" => "sent")
        .increment(1);
    state.throughput.record(
        QueueName::InApp,
        Some(tenant_id),
        shared::throughput::Outcome::Sent,
        1,
        None,
        Some(std::time::Duration::ZERO),
    );
    if let Err(error) = shared::events::publish(&state.queues, events).await {
        // Connected clients catch up from Postgres when they reconnect.
        tracing::warn!(%error, "cannot publish inbox events");
    }
}

/// Pushes one job per queue that had room for the send's notifications
/// still queued.
async fn push_jobs(
    state: &AppState,
    tenant_id: TenantId,
    push: BTreeMap<QueueName, bool>,
    created: &[Created],
) -> Result<(), ApiError> {
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
        .push(&state.queues, &state.pool)
        .await?;
    }
    Ok(())
}

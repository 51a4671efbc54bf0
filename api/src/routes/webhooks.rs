//! `/api/v1/admin/webhooks`: an organisation's own HTTPS endpoints that hear
//! about its notifications' delivery (see `shared::webhooks`).
//!
//! An endpoint's URL must be `https`, without credentials, and its host must
//! not be or resolve to an internal address (loopback, private, link-local,
//! CGNAT, metadata and the like); the worker checks the address again when it
//! connects. The signing secret is generated here, shown once (on creation and
//! on rotation), and stored sealed. Every change is audited, without secrets.

use crate::extract::{PageSize, PathId};
use std::time::Duration;

use chrono::{DateTime, Utc};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::{Value, json};
use shared::{
    db::webhooks::{self as db, Delivery, Endpoint, EndpointWrite},
    domain::WebhookEndpointId,
    webhooks::{WebhookEvent, aad, check_endpoint, generate_secret},
};

use crate::body::StrictJson;
use crate::{
    AppState,
    auth::AdminCaller,
    error::{ApiError, InvalidParam},
    extract::AdminCtx,
    routes::ApiTags,
};

/// Most endpoints one organisation may register.
pub const MAX_ENDPOINTS: i64 = 20;

/// Longest description.
const MAX_DESCRIPTION: usize = 500;

/// How long a registration waits for the endpoint's host to resolve.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// The webhook endpoints.
#[derive(Debug)]
pub struct WebhooksApi;

/// An endpoint to register.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateWebhook {
    /// Where deliveries are POSTed: an `https` URL of at most 2048
    /// characters, without a user name or password, whose host is not (and
    /// does not resolve to) a loopback, private, link-local, CGNAT,
    /// multicast, documentation or cloud metadata address.
    pub url: String,
    /// A note for the organisation (at most 500 characters).
    pub description: Option<String>,
    /// The events it hears about, one or more of `notification.sent`,
    /// `notification.delivered`, `notification.failed`,
    /// `notification.bounced`, `notification.read`,
    /// `notification.suppressed`, `shipment.updated`, `quota.warning`,
    /// `quota.exceeded`.
    pub events: Vec<String>,
    /// Whether deliveries go to it (default true).
    pub enabled: Option<bool>,
}

/// An endpoint's replacement. Setting `enabled` to true re-enables an
/// endpoint that was disabled after failed deliveries, and clears its
/// failure count.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateWebhook {
    /// Where deliveries go (checked as on creation).
    pub url: String,
    /// A note.
    pub description: Option<String>,
    /// The events it hears about.
    pub events: Vec<String>,
    /// Whether deliveries go to it; omit to keep the current state.
    pub enabled: Option<bool>,
}

/// An endpoint as shown: never its secret.
#[derive(Debug, Object)]
pub struct WebhookView {
    /// Its id.
    pub id: String,
    /// Where deliveries go.
    pub url: String,
    /// The organisation's note.
    pub description: String,
    /// The events it hears about.
    pub events: Vec<String>,
    /// Whether deliveries go to it.
    pub enabled: bool,
    /// Why it was disabled: by an administrator, or after
    /// `consecutive_failures` deliveries in a row failed their last attempt.
    pub disabled_reason: Option<String>,
    /// Deliveries in a row that failed their last attempt (reset by a
    /// delivered one).
    pub consecutive_failures: i32,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Endpoint> for WebhookView {
    fn from(e: Endpoint) -> Self {
        Self {
            id: e.id.to_string(),
            url: e.url,
            description: e.description,
            events: e.events,
            enabled: e.enabled,
            disabled_reason: e.disabled_reason,
            consecutive_failures: e.consecutive_failures,
            created_at: e.created_at,
            updated_at: e.updated_at,
        }
    }
}

/// A new endpoint, with its signing secret: shown this once.
#[derive(Debug, Object)]
pub struct CreatedWebhook {
    /// The endpoint.
    #[oai(flatten)]
    pub endpoint: WebhookView,
    /// The signing secret (`whsec_…`). It is never shown again; rotate it
    /// if it is lost.
    pub secret: String,
}

/// A new signing secret, shown this once.
#[derive(Debug, Object)]
pub struct RotatedSecret {
    /// The endpoint's id.
    pub id: String,
    /// The new signing secret (`whsec_…`); the old one stops signing at once.
    pub secret: String,
}

/// The organisation's endpoints.
#[derive(Debug, Object)]
pub struct WebhookList {
    /// Oldest first.
    pub items: Vec<WebhookView>,
}

/// One delivery of an event to an endpoint.
#[derive(Debug, Object)]
pub struct DeliveryView {
    /// Its id: the event's `id` and `Webhook-Id`.
    pub id: String,
    /// The event.
    pub event: String,
    /// The notification it is about.
    pub notification_id: Option<String>,
    /// `queued`, `sending`, `delivered` or `failed`.
    pub status: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// The endpoint's last HTTP status code.
    pub last_status_code: Option<i32>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// When the next attempt is due (while queued).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the endpoint accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<Delivery> for DeliveryView {
    fn from(d: Delivery) -> Self {
        Self {
            id: d.id.to_string(),
            next_attempt_at: (d.status == "queued").then_some(d.run_at),
            event: d.event,
            notification_id: d.notification_id.map(|n| n.to_string()),
            status: d.status,
            attempts: d.attempts,
            max_attempts: d.max_attempts,
            last_status_code: d.last_status_code,
            last_error: d.last_error,
            delivered_at: d.delivered_at,
            created_at: d.created_at,
            updated_at: d.updated_at,
        }
    }
}

/// An endpoint's recent deliveries.
#[derive(Debug, Object)]
pub struct DeliveryList {
    /// Newest first.
    pub items: Vec<DeliveryView>,
}

/// Answers to a creation.
#[derive(Debug, ApiResponse)]
pub enum CreateResponse {
    /// Created; the body holds the secret, shown this once.
    #[oai(status = 201)]
    Created(Json<CreatedWebhook>, #[oai(header = "Location")] String),
}

/// Answers with one endpoint.
#[derive(Debug, ApiResponse)]
pub enum WebhookResponse {
    /// The endpoint.
    #[oai(status = 200)]
    Ok(Json<WebhookView>),
}

/// Answers with the list.
#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// Every endpoint.
    #[oai(status = 200)]
    Ok(Json<WebhookList>),
}

/// Answers with a new secret.
#[derive(Debug, ApiResponse)]
pub enum RotateResponse {
    /// The new secret, shown this once.
    #[oai(status = 200)]
    Ok(Json<RotatedSecret>),
}

/// Answers with deliveries.
#[derive(Debug, ApiResponse)]
pub enum DeliveriesResponse {
    /// The most recent deliveries.
    #[oai(status = 200)]
    Ok(Json<DeliveryList>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Deleted, with its deliveries.
    #[oai(status = 204)]
    Deleted,
}

/// The checked fields of a create or update.
struct Checked {
    url: String,
    description: String,
    events: Vec<String>,
}

/// Checks every field, naming each one that is wrong.
async fn check(
    state: &AppState,
    url: &str,
    description: Option<&str>,
    events: &[String],
) -> Result<Checked, ApiError> {
    let mut problems = Vec::new();
    let mut problem = |name: &str, reason: String| {
        problems.push(InvalidParam {
            name: name.to_owned(),
            reason,
        })
    };
    let url = url.trim();
    let checked_url = match tokio::time::timeout(
        RESOLVE_TIMEOUT,
        check_endpoint(url, state.webhooks_allow_loopback),
    )
    .await
    {
        Ok(Ok(u)) => Some(u.to_string()),
        Ok(Err(why)) => {
            problem("url", why);
            None
        }
        Err(_) => {
            problem("url", "the host name does not resolve in time".into());
            None
        }
    };
    let description = description.unwrap_or("").trim();
    if description.chars().count() > MAX_DESCRIPTION
        || description.chars().any(|c| c.is_control() && c != '\n')
    {
        problem(
            "description",
            format!("must be at most {MAX_DESCRIPTION} characters without control characters"),
        );
    }
    let mut chosen: Vec<String> = Vec::new();
    if events.is_empty() || events.len() > 20 {
        problem(
            "events",
            format!("must list 1 to {} events", WebhookEvent::ALL.len()),
        );
    } else {
        for (i, e) in events.iter().enumerate() {
            match WebhookEvent::parse(e) {
                Some(event) => {
                    if !chosen.iter().any(|c| c == event.as_str()) {
                        chosen.push(event.as_str().to_owned());
                    }
                }
                None => {
                    let known: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
                    problem(
                        &format!("events[{i}]"),
                        format!("must be one of {}", known.join(", ")),
                    );
                }
            }
        }
    }
    match (problems.is_empty(), checked_url) {
        (true, Some(url)) => Ok(Checked {
            url,
            description: description.to_owned(),
            events: chosen,
        }),
        _ => Err(ApiError::Invalid(problems)),
    }
}

/// A fresh secret, and its sealed form for endpoint `id` of the caller.
fn new_secret(
    state: &AppState,
    caller: &AdminCaller,
    id: WebhookEndpointId,
) -> Result<(String, shared::crypto::Sealed), ApiError> {
    let keyring = state.keyring.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "signing secrets cannot be stored: no encryption key is configured (ENCRYPTION_KEYS)"
                .into(),
        )
    })?;
    let secret = generate_secret();
    let sealed = keyring.seal(secret.as_bytes(), &aad(caller.tenant_id, id));
    Ok((secret, sealed))
}

/// The host of a URL, for the audit log (paths and queries can hold tokens).
fn host_of(url: &str) -> Value {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .map(Value::String)
        .unwrap_or(Value::Null)
}

#[OpenApi(prefix_path = "/api/v1/admin/webhooks", tag = "ApiTags::Admin")]
impl WebhooksApi {
    /// Register an endpoint. The answer holds its signing secret, shown this
    /// once.
    ///
    /// Each delivery is a POST with a JSON body `{"id", "type",
    /// "created_at", "data": {"notification_id", "channel", "status",
    /// "provider", "provider_message_id", "error", "metadata"}}` and the
    /// headers `Webhook-Id`, `Webhook-Timestamp` (unix seconds) and
    /// `Webhook-Signature: v1,<base64 HMAC-SHA256>` of
    /// `{id}.{timestamp}.{body}`, keyed with the base64-decoded part of the
    /// secret after `whsec_`. A receiver must recompute the signature over
    /// the raw body, compare it in constant time, reject timestamps more
    /// than five minutes from its clock, and remember the ids it accepted to
    /// drop replays. Any 2xx answer accepts a delivery; anything else
    /// (redirects included, which are not followed) is retried with backoff
    /// for hours. After 10 deliveries in a row (by default) fail their last
    /// attempt the endpoint is disabled; re-enable it with PUT.
    #[oai(path = "/", method = "post", operation_id = "admin.webhooks.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateWebhook>,
    ) -> Result<CreateResponse, ApiError> {
        let caller = cx.auth.caller();
        let req = body.0;
        let checked = check(cx.state, &req.url, req.description.as_deref(), &req.events).await?;
        if db::count(&cx.state.pool, caller.tenant_id).await? >= MAX_ENDPOINTS {
            return Err(ApiError::Conflict(format!(
                "an organisation can register at most {MAX_ENDPOINTS} webhook endpoints"
            )));
        }
        let id = WebhookEndpointId::new();
        let (secret, sealed) = new_secret(cx.state, &caller, id)?;
        let enabled = req.enabled.unwrap_or(true);
        let write = EndpointWrite {
            url: &checked.url,
            description: &checked.description,
            events: checked.events.clone(),
            enabled,
        };
        let created = db::create(&cx.state.pool, caller.tenant_id, id, write, &sealed).await?;
        cx.audit(
            &cx.state.pool,
            "webhook.create",
            "webhook_endpoint",
            id,
            json!({"host": host_of(&checked.url), "events": checked.events, "enabled": enabled}),
        )
        .await?;
        Ok(CreateResponse::Created(
            Json(CreatedWebhook {
                endpoint: created.into(),
                secret,
            }),
            format!("/api/v1/admin/webhooks/{id}"),
        ))
    }

    /// The organisation's endpoints.
    #[oai(path = "/", method = "get", operation_id = "admin.webhooks.list")]
    async fn list(&self, cx: AdminCtx<'_>) -> Result<ListResponse, ApiError> {
        let caller = cx.auth.caller();
        let items = db::list(&cx.state.pool, caller.tenant_id).await?;
        Ok(ListResponse::Ok(Json(WebhookList {
            items: items.into_iter().map(Into::into).collect(),
        })))
    }

    /// One endpoint.
    #[oai(path = "/:id", method = "get", operation_id = "admin.webhooks.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<WebhookEndpointId>>,
    ) -> Result<WebhookResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("webhook endpoint")?;
        let endpoint = db::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("webhook endpoint"))?;
        Ok(WebhookResponse::Ok(Json(endpoint.into())))
    }

    /// Replace an endpoint's URL, description, events and state. Enabling a
    /// disabled endpoint clears its failure count; disabling one fails its
    /// queued deliveries.
    #[oai(path = "/:id", method = "put", operation_id = "admin.webhooks.update")]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<WebhookEndpointId>>,
        body: StrictJson<UpdateWebhook>,
    ) -> Result<WebhookResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("webhook endpoint")?;
        let current = db::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("webhook endpoint"))?;
        let req = body.0;
        let checked = check(cx.state, &req.url, req.description.as_deref(), &req.events).await?;
        let enabled = req.enabled.unwrap_or(current.enabled);
        let write = EndpointWrite {
            url: &checked.url,
            description: &checked.description,
            events: checked.events.clone(),
            enabled,
        };
        let updated = db::update(&cx.state.pool, caller.tenant_id, id, write)
            .await?
            .ok_or(ApiError::NotFound("webhook endpoint"))?;
        cx.audit(
            &cx.state.pool,
            "webhook.update",
            "webhook_endpoint",
            id,
            json!({
                "host": host_of(&checked.url),
                "events": checked.events,
                "enabled": enabled,
                "re_enabled": enabled && !current.enabled,
            }),
        )
        .await?;
        Ok(WebhookResponse::Ok(Json(updated.into())))
    }

    /// Remove an endpoint and its deliveries.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "admin.webhooks.delete"
    )]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<WebhookEndpointId>>,
    ) -> Result<DeleteResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("webhook endpoint")?;
        if !db::delete(&cx.state.pool, caller.tenant_id, id).await? {
            return Err(ApiError::NotFound("webhook endpoint"));
        }
        cx.audit(
            &cx.state.pool,
            "webhook.delete",
            "webhook_endpoint",
            id,
            json!({}),
        )
        .await?;
        Ok(DeleteResponse::Deleted)
    }

    /// Replace an endpoint's signing secret. The answer holds the new
    /// secret, shown this once; the old one stops signing at once.
    #[oai(
        path = "/:id/rotate-secret",
        method = "post",
        operation_id = "admin.webhooks.rotate_secret"
    )]
    async fn rotate_secret(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<WebhookEndpointId>>,
    ) -> Result<RotateResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("webhook endpoint")?;
        let (secret, sealed) = new_secret(cx.state, &caller, id)?;
        if !db::set_secret(&cx.state.pool, caller.tenant_id, id, &sealed).await? {
            return Err(ApiError::NotFound("webhook endpoint"));
        }
        cx.audit(
            &cx.state.pool,
            "webhook.rotate_secret",
            "webhook_endpoint",
            id,
            json!({}),
        )
        .await?;
        Ok(RotateResponse::Ok(Json(RotatedSecret {
            id: id.to_string(),
            secret,
        })))
    }

    /// An endpoint's most recent deliveries, newest first: status,
    /// attempts and the endpoint's last status code.
    #[oai(
        path = "/:id/deliveries",
        method = "get",
        operation_id = "admin.webhooks.deliveries"
    )]
    async fn deliveries(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<WebhookEndpointId>>,
        /// How many, newest first.
        limit: Query<PageSize>,
    ) -> Result<DeliveriesResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("webhook endpoint")?;
        if db::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .is_none()
        {
            return Err(ApiError::NotFound("webhook endpoint"));
        }
        let items =
            db::recent_deliveries(&cx.state.pool, caller.tenant_id, id, limit.0.as_i64()).await?;
        Ok(DeliveriesResponse::Ok(Json(DeliveryList {
            items: items.into_iter().map(Into::into).collect(),
        })))
    }
}

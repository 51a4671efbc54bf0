//! `/webhooks/*`: providers' delivery callbacks.
//!
//! Each organisation configures its own providers, with its own signing
//! secrets, so each callback URL names the provider config it is for:
//! `/webhooks/sendgrid/{provider_id}`, `/webhooks/twilio/{provider_id}` and
//! `/webhooks/whatsapp/{provider_id}` (plus Meta's `GET` verification
//! handshake there). The signature is checked with that config's secret
//! before the body is read ([`shared::callbacks`]); then every event is looked
//! up within the config's tenant only and recorded once
//! ([`shared::db::provider_events`]), moving its notification forward
//! (`sent → delivered → read`, or `bounced` / `failed`), never back.
//!
//! Answers: 200 with counts; 401 for a missing, wrong or stale signature;
//! 404 for an unknown config or one of another provider; 400 for a malformed
//! body that was correctly signed; 413 for a body over the limit. A refused
//! callback changes nothing. Nothing about recipients or content is logged.

use poem::{Request, web::Data};
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Header, Path, Query},
    payload::{Binary, Json, PlainText},
};
use serde_json::Value;
use shared::{
    callbacks::{self, ReportedEvent, SignatureError},
    db::{
        provider_events::{self, Recorded},
        providers, webhooks,
    },
    domain::{ProviderId, TenantId},
    jobs::{DeliverWebhooks, QueueName},
    outbox::Enqueued,
    providers::{ProviderKind, ProviderSpec, aad},
    webhooks::WebhookEvent,
};

use crate::{AppState, error::ApiError, routes::ApiTags};

/// The provider callback endpoints.
#[derive(Debug)]
pub struct CallbacksApi;

/// What a callback did.
#[derive(Debug, Default, Object)]
pub struct CallbackSummary {
    /// Events that report a delivery outcome (others, such as SendGrid's
    /// `processed`, are ignored).
    pub received: u32,
    /// Events that moved a notification forward.
    pub applied: u32,
    /// Events recorded that changed no status (a late report).
    pub unchanged: u32,
    /// Events recorded before: a repeated callback changes nothing.
    pub repeated: u32,
    /// Events about no notification of this organisation on this channel.
    pub unmatched: u32,
    /// Inbound WhatsApp messages matched to a subscriber.
    pub inbound: u32,
}

/// Answers to a callback.
#[derive(Debug, ApiResponse)]
pub enum CallbackResponse {
    /// Accepted.
    #[oai(status = 200)]
    Ok(Json<CallbackSummary>),
}

/// Answers to Meta's verification handshake.
#[derive(Debug, ApiResponse)]
pub enum VerifyResponse {
    /// The challenge, echoed.
    #[oai(status = 200)]
    Ok(PlainText<String>),
}

/// A provider config found by a callback, with its checked credentials.
struct Found {
    tenant_id: TenantId,
    id: ProviderId,
    spec: ProviderSpec,
}

/// Finds config `raw_id` of `kind` and opens its credentials. An unknown id,
/// a malformed one and another kind's config all answer 404. The config id
/// names no organisation until it is found (platform scope,
/// `provider_callback`); the rest of the request is walled to the config's.
async fn find(state: &AppState, raw_id: &str, kind: ProviderKind) -> Result<Found, ApiError> {
    let id = crate::extract::id(raw_id, "provider")?;
    let lookup = providers::find_for_callback(&state.pool, id);
    let (tenant_id, config) = shared::db::scope::platform("provider_callback", lookup)
        .await?
        .filter(|(_, c)| c.provider == kind)
        .ok_or(ApiError::NotFound("provider"))?;
    crate::auth::wall_to(state, tenant_id, false).await?;
    let credentials = match config.sealed() {
        None => Value::Null,
        Some(sealed) => {
            let keyring = state.keyring.as_ref().ok_or_else(|| {
                ApiError::Unavailable("no encryption key is configured (ENCRYPTION_KEYS)".into())
            })?;
            let plain = keyring
                .open(&sealed, &aad(tenant_id, id))
                .map_err(|_| anyhow::anyhow!("provider {id}'s credentials do not open"))?;
            serde_json::from_slice(&plain)
                .map_err(|_| anyhow::anyhow!("provider {id}'s credentials are not JSON"))?
        }
    };
    let spec = ProviderSpec::parse(kind, &config.settings.0, &credentials)
        .map_err(|_| anyhow::anyhow!("provider {id}'s stored config no longer parses"))?;
    Ok(Found {
        tenant_id,
        id,
        spec,
    })
}

fn refused(found: &Found, e: SignatureError) -> ApiError {
    tracing::warn!(
        provider_id = %found.id,
        provider = found.spec.kind().as_str(),
        reason = %e,
        "provider callback refused"
    );
    ApiError::BadSignature(e.to_string())
}

fn malformed(reason: impl Into<String>) -> ApiError {
    ApiError::invalid("body", reason)
}

/// Records `events` (and WhatsApp's inbound messages) in one transaction.
async fn record(
    state: &AppState,
    found: &Found,
    events: &[ReportedEvent],
    inbound: &[(String, chrono::DateTime<chrono::Utc>)],
) -> Result<CallbackResponse, ApiError> {
    let kind = found.spec.kind();
    let mut summary = CallbackSummary {
        received: events.len() as u32,
        ..Default::default()
    };
    let mut tx = state.pool.begin().await?;
    let mut deliveries = Vec::new();
    let webhook_attempts = state.jobs.queue(QueueName::Webhook).max_attempts;
    for event in events {
        match provider_events::record(&mut tx, found.tenant_id, found.id, kind, event).await? {
            Recorded::Unmatched => summary.unmatched += 1,
            Recorded::Repeated => summary.repeated += 1,
            Recorded::Unchanged => summary.unchanged += 1,
            Recorded::Moved(notification_id, status) => {
                summary.applied += 1;
                // The organisation's webhook endpoints hear of it, in the
                // same transaction as the change.
                if let Some(webhook_event) = WebhookEvent::for_report(status) {
                    deliveries.extend(
                        webhooks::enqueue_for_notification(
                            &mut tx,
                            found.tenant_id,
                            notification_id,
                            webhook_event,
                            webhook_attempts,
                        )
                        .await?,
                    );
                }
            }
        }
    }
    for (number, at) in inbound {
        let matched =
            provider_events::record_whatsapp_inbound(&mut tx, found.tenant_id, number, *at).await?;
        summary.inbound += matched.min(u32::MAX as u64) as u32;
    }
    tx.commit().await?;
    if !deliveries.is_empty() {
        Enqueued::one(DeliverWebhooks {
            tenant_id: found.tenant_id,
            delivery_ids: deliveries,
        })
        .push(&state.queues, &state.pool)
        .await?;
    }
    tracing::info!(
        provider_id = %found.id,
        provider = kind.as_str(),
        received = summary.received,
        applied = summary.applied,
        unchanged = summary.unchanged,
        repeated = summary.repeated,
        unmatched = summary.unmatched,
        inbound = summary.inbound,
        "provider callback accepted"
    );
    Ok(CallbackResponse::Ok(Json(summary)))
}

#[OpenApi(prefix_path = "/webhooks", tag = "ApiTags::Webhooks")]
impl CallbacksApi {
    /// SendGrid's signed event webhook for one SendGrid provider config.
    ///
    /// `delivered`, `open` (read), `bounce` and `dropped` (bounced) move the
    /// notification; other events are ignored. Events are matched by the
    /// `notification_id` custom argument or by `sg_message_id`.
    #[oai(
        path = "/sendgrid/:provider_id",
        method = "post",
        operation_id = "webhooks.sendgrid"
    )]
    async fn sendgrid(
        &self,
        state: Data<&AppState>,
        provider_id: Path<String>,
        /// The ECDSA signature (base64 DER).
        #[oai(name = "X-Twilio-Email-Event-Webhook-Signature")]
        signature: Header<Option<String>>,
        /// The signing time (Unix seconds).
        #[oai(name = "X-Twilio-Email-Event-Webhook-Timestamp")]
        timestamp: Header<Option<String>>,
        body: Binary<Vec<u8>>,
    ) -> Result<CallbackResponse, ApiError> {
        let found = find(&state, &provider_id.0, ProviderKind::SendGrid).await?;
        let ProviderSpec::SendGrid(settings, _) = &found.spec else {
            return Err(ApiError::NotFound("provider"));
        };
        let key = match settings.webhook_public_key.as_deref() {
            None => return Err(refused(&found, SignatureError::NotConfigured)),
            Some(k) => callbacks::sendgrid_public_key(k)
                .map_err(|_| refused(&found, SignatureError::NotConfigured))?,
        };
        callbacks::verify_sendgrid(
            &key,
            signature.0.as_deref(),
            timestamp.0.as_deref(),
            &body.0,
            chrono::Utc::now(),
        )
        .map_err(|e| refused(&found, e))?;
        let events = callbacks::sendgrid_events(&body.0, found.tenant_id.0).map_err(malformed)?;
        record(&state, &found, &events, &[]).await
    }

    /// Twilio's message status callback for one Twilio provider config.
    ///
    /// Signed with the config's auth token over `PUBLIC_BASE_URL` plus this
    /// path. `MessageStatus` `delivered`, `read`, and `undelivered` or
    /// `failed` (with `ErrorCode`) move the notification whose message SID
    /// is `MessageSid`.
    #[oai(
        path = "/twilio/:provider_id",
        method = "post",
        operation_id = "webhooks.twilio"
    )]
    async fn twilio(
        &self,
        state: Data<&AppState>,
        req: &Request,
        provider_id: Path<String>,
        /// Base64 HMAC-SHA1 of the URL and the sorted form parameters.
        #[oai(name = "X-Twilio-Signature")]
        signature: Header<Option<String>>,
        body: Binary<Vec<u8>>,
    ) -> Result<CallbackResponse, ApiError> {
        let found = find(&state, &provider_id.0, ProviderKind::Twilio).await?;
        let ProviderSpec::Twilio(_, credentials) = &found.spec else {
            return Err(ApiError::NotFound("provider"));
        };
        let path = req
            .original_uri()
            .path_and_query()
            .map_or("/", |p| p.as_str());
        let url = format!("{}{path}", state.public_base_url);
        let params: Vec<(String, String)> =
            url::form_urlencoded::parse(&body.0).into_owned().collect();
        callbacks::verify_twilio(
            &credentials.auth_token,
            &url,
            &params,
            signature.0.as_deref(),
        )
        .map_err(|e| refused(&found, e))?;
        if std::str::from_utf8(&body.0).is_err() {
            return Err(malformed("is not UTF-8 form data"));
        }
        let events: Vec<ReportedEvent> = callbacks::twilio_event(&params)
            .map_err(malformed)?
            .into_iter()
            .collect();
        record(&state, &found, &events, &[]).await
    }

    /// The WhatsApp Cloud API webhook for one WhatsApp provider config.
    ///
    /// Message statuses `delivered`, `read` and `failed` move the
    /// notification whose wamid they name; inbound messages record when the
    /// subscriber with that WhatsApp number last wrote.
    #[oai(
        path = "/whatsapp/:provider_id",
        method = "post",
        operation_id = "webhooks.whatsapp"
    )]
    async fn whatsapp(
        &self,
        state: Data<&AppState>,
        provider_id: Path<String>,
        /// `sha256=` and the hex HMAC-SHA256 of the body with the app secret.
        #[oai(name = "X-Hub-Signature-256")]
        signature: Header<Option<String>>,
        body: Binary<Vec<u8>>,
    ) -> Result<CallbackResponse, ApiError> {
        let found = find(&state, &provider_id.0, ProviderKind::WhatsApp).await?;
        let ProviderSpec::WhatsApp(settings, credentials) = &found.spec else {
            return Err(ApiError::NotFound("provider"));
        };
        let secret = credentials
            .app_secret
            .as_deref()
            .ok_or_else(|| refused(&found, SignatureError::NotConfigured))?;
        callbacks::verify_meta(secret, &body.0, signature.0.as_deref())
            .map_err(|e| refused(&found, e))?;
        let callback =
            callbacks::whatsapp_callback(&body.0, &settings.phone_number_id).map_err(malformed)?;
        record(&state, &found, &callback.statuses, &callback.inbound).await
    }

    /// Meta's verification of the WhatsApp callback URL: answers the
    /// challenge when `hub.mode` is `subscribe` and `hub.verify_token` is the
    /// config's verify token, else 403.
    #[oai(
        path = "/whatsapp/:provider_id",
        method = "get",
        operation_id = "webhooks.whatsapp.verify"
    )]
    async fn whatsapp_verify(
        &self,
        state: Data<&AppState>,
        provider_id: Path<String>,
        /// `subscribe`.
        #[oai(name = "hub.mode")]
        mode: Query<Option<String>>,
        /// The verify token set on the provider config.
        #[oai(name = "hub.verify_token")]
        verify_token: Query<Option<String>>,
        /// What to echo.
        #[oai(name = "hub.challenge")]
        challenge: Query<Option<String>>,
    ) -> Result<VerifyResponse, ApiError> {
        let found = find(&state, &provider_id.0, ProviderKind::WhatsApp).await?;
        let ProviderSpec::WhatsApp(_, credentials) = &found.spec else {
            return Err(ApiError::NotFound("provider"));
        };
        let ok = mode.0.as_deref() == Some("subscribe")
            && match (
                credentials.verify_token.as_deref(),
                verify_token.0.as_deref(),
            ) {
                (Some(expected), Some(given)) => callbacks::secrets_match(expected, given),
                _ => false,
            };
        if !ok {
            tracing::warn!(provider_id = %found.id, "WhatsApp verification refused");
            return Err(ApiError::Forbidden(
                "hub.mode must be `subscribe` and hub.verify_token the provider's verify token",
            ));
        }
        let challenge = challenge
            .0
            .filter(|c| (1..=256).contains(&c.len()) && c.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::invalid(
                    "hub.challenge",
                    "is required: 1 to 256 printable characters",
                )
            })?;
        Ok(VerifyResponse::Ok(PlainText(challenge)))
    }
}

//! `send-topic` and `send-organization` under
//! `/api/v1/services/notifications`: a batch whose recipients the platform
//! reads itself, created closed with its chunks cut from the audience in
//! one statement in the request's transaction (see
//! [`shared::db::topics::cut_chunks`]).

use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json};
use serde_json::Value;
use sha2::{Digest, Sha256};
use shared::{
    db::{
        batches::{self, Created, NewBatch},
        topics::{self, Audience},
    },
    domain::{Channel, Problems, TenantId, key_ok},
    templates::requested_locale,
};

use super::MAX_KEYS;
use crate::services::topics::find;
use crate::{
    AppState, body::StrictJson, error::ApiError, extract::ServiceCtx, extract::idempotency_key,
    middleware::RequestId, routes::ApiTags,
};

/// The sends to a topic or to the organisation.
#[derive(Debug)]
pub struct TopicSendsApi;

/// A send to every member of a topic.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct TopicSendRequest {
    /// The topic's key.
    pub topic: String,
    /// The key of one of your templates; every notification is rendered
    /// from it.
    pub template: String,
    /// The channels each member gets a notification on (`email`, `sms`,
    /// `whatsapp`, `inapp`); default: the template's default channels.
    pub channels: Option<Vec<String>>,
    /// The locale to render (default: the template's).
    pub locale: Option<String>,
    /// Template data every member gets (a JSON object, at most 50 keys).
    pub defaults: Option<Value>,
    /// Your key/value data, copied to every notification (a JSON object).
    pub metadata: Option<Value>,
}

/// A send to every subscriber of the organisation.
#[derive(Debug, Clone, Object, serde::Serialize, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct OrganizationSendRequest {
    /// The key of one of your templates.
    pub template: String,
    /// The channels (`email`, `sms`, `whatsapp`, `inapp`); default: the
    /// template's default channels.
    pub channels: Option<Vec<String>>,
    /// The locale to render (default: the template's).
    pub locale: Option<String>,
    /// Template data every subscriber gets (a JSON object).
    pub defaults: Option<Value>,
    /// Your key/value data, copied to every notification (a JSON object).
    pub metadata: Option<Value>,
}

/// A send to an audience was accepted.
#[derive(Debug, Clone, Object)]
pub struct AudienceAccepted {
    /// The batch that carries it.
    pub batch_id: String,
    /// The batch's status: `closed` (then `completed` once every
    /// notification is final).
    pub status: String,
    /// `topic:<key>` or `organization`.
    pub audience: String,
    /// Recipients read from the audience when it was accepted.
    pub recipients: i64,
    /// Where to poll the batch (`GET`, and `…/notifications` for each one).
    pub status_url: String,
}

/// Answers to a send to an audience.
#[derive(Debug, ApiResponse)]
pub enum AudienceResponse {
    /// Accepted: the batch and its chunks are committed. With the same
    /// `Idempotency-Key` and body the first answer is returned again, with
    /// `Idempotent-Replayed: true`, and nothing more is sent.
    #[oai(status = 202)]
    Accepted(
        Json<AudienceAccepted>,
        #[oai(header = "Location")] String,
        #[oai(header = "Idempotent-Replayed")] Option<String>,
    ),
}

/// The checked parts of a send to an audience.
struct AudienceSend<'a> {
    template: &'a str,
    channels: Option<&'a [String]>,
    locale: Option<&'a str>,
    defaults: Option<&'a Value>,
    metadata: Option<&'a Value>,
}

/// Validates, creates the batch closed with its chunks cut from `audience`,
/// takes the quota for what it holds, and commits.
async fn send_to(
    state: &AppState,
    tenant_id: TenantId,
    request_id: &RequestId,
    key: Option<String>,
    hash_of: Vec<u8>,
    audience: (Audience, String),
    send: AudienceSend<'_>,
) -> Result<AudienceResponse, ApiError> {
    let mut p = Problems::default();
    if !key_ok(send.template) {
        p.add("template", "must be a template key");
    }
    p.opt("locale", send.locale, requested_locale);
    let defaults = p.object("defaults", send.defaults, MAX_KEYS);
    let metadata = p.object("metadata", send.metadata, MAX_KEYS);
    let mut channels = Vec::new();
    if send.channels.is_some_and(<[String]>::is_empty) {
        p.add("channels", "must not be empty");
    }
    for (i, c) in send.channels.unwrap_or_default().iter().enumerate() {
        let name = format!("channels[{i}]");
        let reason = match Channel::parse(c) {
            Some(Channel::Push) => "push is not offered for audiences: send per subscriber".into(),
            Some(c) if !channels.contains(&c) => {
                channels.push(c);
                continue;
            }
            Some(_) => "is listed twice".into(),
            None => format!("`{c}` is not a channel"),
        };
        p.add(name, reason);
    }
    p.into_result(()).map_err(ApiError::fields)?;
    let template = shared::db::templates::get_by_key(&state.pool, tenant_id, send.template)
        .await?
        .ok_or_else(|| ApiError::invalid("template", "no template with this key"))?
        .template;
    if channels.is_empty() {
        channels = (template.default_channels().iter().copied())
            .filter(|c| *c != Channel::Push)
            .collect();
        if channels.is_empty() {
            return Err(ApiError::invalid(
                "channels",
                "the template's default channels are push only; name the channels",
            ));
        }
    }
    let hash = key.as_ref().map(|_| Sha256::digest(&hash_of).to_vec());
    let mut tx = state.pool.begin().await?;
    let created = batches::create(
        &mut tx,
        tenant_id,
        NewBatch {
            template_key: send.template,
            channels: &channels,
            locale: send.locale,
            defaults,
            metadata,
            idempotency: key.as_deref().zip(hash),
        },
    )
    .await?;
    let (label, audience_label) = (audience.0, audience.1);
    let (id, recipients, replayed) = match created {
        Created::New(id) => {
            let recipients = topics::cut_chunks(&mut tx, tenant_id, id, label, &channels).await?;
            topics::close_cut_batch(&mut *tx, tenant_id, id).await?;
            let counts: Vec<(Channel, u64)> =
                channels.iter().map(|c| (*c, recipients as u64)).collect();
            let quota = state
                .limits
                .take_quota(tenant_id, Some(&request_id.0), &counts)
                .await?;
            if let Err(e) = tx.commit().await {
                quota.give_back().await;
                return Err(e.into());
            }
            tracing::info!(batch_id = %id, recipients, "audience send accepted");
            metrics::counter!("audience_sends_accepted_total").increment(1);
            (id, recipients, false)
        }
        Created::Existing {
            id,
            same_request: true,
        } => {
            drop(tx);
            let counts = {
                let mut conn = state.pool.acquire().await?;
                batches::counts(&mut conn, tenant_id, id).await?.0
            };
            (id, counts.recipients, true)
        }
        Created::Existing { .. } => return Err(ApiError::IdempotencyKeyReused),
    };
    let status = batches::get(&state.pool, tenant_id, id)
        .await?
        .map(|b| b.status)
        .unwrap_or_default();
    let url = format!("/api/v1/services/notifications/batches/{id}");
    Ok(AudienceResponse::Accepted(
        Json(AudienceAccepted {
            batch_id: id.to_string(),
            status,
            audience: audience_label,
            recipients,
            status_url: url.clone(),
        }),
        url,
        replayed.then(|| "true".to_owned()),
    ))
}

#[OpenApi(
    prefix_path = "/api/v1/services/notifications",
    tag = "ApiTags::Notifications"
)]
impl TopicSendsApi {
    /// Send a template to every member of a topic. The members are read
    /// when the send is accepted and carried by a closed batch (poll its
    /// `status_url`); each gets one notification per channel, with their
    /// preferences applied. `Idempotency-Key` makes retries safe.
    #[oai(
        path = "/send-topic",
        method = "post",
        operation_id = "notifications.send_topic"
    )]
    async fn send_topic(
        &self,
        cx: ServiceCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        body: StrictJson<TopicSendRequest>,
    ) -> Result<AudienceResponse, ApiError> {
        let tenant_id = cx.auth.0.tenant_id;
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        if !key_ok(&req.topic) {
            return Err(ApiError::invalid(
                "topic",
                "must be a topic key (lower-case letters, digits, `.`, `_`, `-`)",
            ));
        }
        let topic = find(cx.state, tenant_id, &req.topic).await?;
        let hash_of = serde_json::to_vec(&(req, "topic")).unwrap_or_default();
        send_to(
            cx.state,
            tenant_id,
            cx.request_id,
            key,
            hash_of,
            (Audience::Topic(topic.id), format!("topic:{}", topic.key)),
            AudienceSend {
                template: &req.template,
                channels: req.channels.as_deref(),
                locale: req.locale.as_deref(),
                defaults: req.defaults.as_ref(),
                metadata: req.metadata.as_ref(),
            },
        )
        .await
    }

    /// Send a template to every subscriber of the organisation, as a closed
    /// batch like `send-topic`.
    #[oai(
        path = "/send-organization",
        method = "post",
        operation_id = "notifications.send_organization"
    )]
    async fn send_organization(
        &self,
        cx: ServiceCtx<'_>,
        #[oai(name = "Idempotency-Key")] key: Header<Option<String>>,
        body: StrictJson<OrganizationSendRequest>,
    ) -> Result<AudienceResponse, ApiError> {
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        let hash_of = serde_json::to_vec(&(req, "organization")).unwrap_or_default();
        send_to(
            cx.state,
            cx.auth.0.tenant_id,
            cx.request_id,
            key,
            hash_of,
            (Audience::Organization, "organization".to_owned()),
            AudienceSend {
                template: &req.template,
                channels: req.channels.as_deref(),
                locale: req.locale.as_deref(),
                defaults: req.defaults.as_ref(),
                metadata: req.metadata.as_ref(),
            },
        )
        .await
    }
}

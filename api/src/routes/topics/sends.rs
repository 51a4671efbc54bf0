//! `send-topic` and `send-organization` under
//! `/api/v1/services/notifications`: a batch whose recipients the platform
//! reads itself, created closed with its chunks cut from the audience in
//! one statement in the request's transaction (see
//! [`shared::db::topics::cut_chunks`]); the rules are in
//! [`crate::services::topics`].

use poem_openapi::{ApiResponse, Object, OpenApi, param::Header, payload::Json};
use serde_json::Value;

use crate::{
    body::StrictJson,
    error::ApiError,
    extract::{ServiceCtx, idempotency_key, request_hash},
    routes::ApiTags,
    services::topics::{self as service, AudienceSend, AudienceSent, Target},
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

/// The 202 for a send to an audience.
fn accepted(sent: AudienceSent) -> AudienceResponse {
    let url = format!("/api/v1/services/notifications/batches/{}", sent.batch_id);
    AudienceResponse::Accepted(
        Json(AudienceAccepted {
            batch_id: sent.batch_id.to_string(),
            status: sent.status,
            audience: sent.audience,
            recipients: sent.recipients,
            status_url: url.clone(),
        }),
        url,
        sent.replayed.then(|| "true".to_owned()),
    )
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
        let key = idempotency_key(key.0)?;
        let req = &body.0;
        let idempotency = key.map(|k| (k, request_hash(&(req, "topic"))));
        let send = AudienceSend {
            template: &req.template,
            channels: req.channels.as_deref(),
            locale: req.locale.as_deref(),
            defaults: req.defaults.as_ref(),
            metadata: req.metadata.as_ref(),
        };
        let target = Target::Topic(&req.topic);
        let tenant_id = cx.auth.0.tenant_id;
        let sent = service::send(
            cx.state,
            tenant_id,
            &cx.request_id.0,
            target,
            send,
            idempotency,
        )
        .await?;
        Ok(accepted(sent))
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
        let idempotency = key.map(|k| (k, request_hash(&(req, "organization"))));
        let send = AudienceSend {
            template: &req.template,
            channels: req.channels.as_deref(),
            locale: req.locale.as_deref(),
            defaults: req.defaults.as_ref(),
            metadata: req.metadata.as_ref(),
        };
        let target = Target::Organization;
        let tenant_id = cx.auth.0.tenant_id;
        let sent = service::send(
            cx.state,
            tenant_id,
            &cx.request_id.0,
            target,
            send,
            idempotency,
        )
        .await?;
        Ok(accepted(sent))
    }
}

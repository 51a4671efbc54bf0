//! `/api/v1/admin/providers`: an organisation's delivery providers per
//! channel, in failover order.
//!
//! Credentials are sealed with AES-256-GCM before they are stored (the tenant
//! and provider ids bound in as associated data) and are never returned: the
//! API answers their masked form. Every change is audited, without secrets.

use crate::extract::PathId;
use chrono::{DateTime, Utc};
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, payload::Json};
use serde_json::Value;
use shared::{
    db::providers::{self as db, ProviderConfig},
    domain::ProviderId,
};

use crate::body::StrictJson;
use crate::{error::ApiError, extract::AdminCtx, routes::ApiTags, services::providers as service};

/// The provider endpoints.
#[derive(Debug)]
pub struct ProvidersApi;

/// A provider config to create.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct CreateProvider {
    /// `smtp` (the platform's relay), `sendgrid`, `twilio`, `fcm`,
    /// `whatsapp`, or `ups` (shipment tracking: `credentials.client_id` and
    /// `client_secret`). The channel follows from it (`tracking` for UPS).
    pub provider: String,
    /// A name unique within the organisation (1 to 100 characters).
    pub name: String,
    /// Failover order within the channel, 0 to 1000: lower goes first.
    pub priority: Option<i32>,
    /// Whether sends use it (default true).
    pub enabled: Option<bool>,
    /// Plain settings. sendgrid: `from_email`, `from_name`,
    /// `webhook_public_key` (for signed delivery callbacks); twilio:
    /// `account_sid` and `from` or `messaging_service_sid`; fcm:
    /// `project_id`; whatsapp: `phone_number_id`. Any: `rate_per_sec`.
    pub settings: Option<Value>,
    /// Secrets, never shown again. sendgrid: `api_key`; twilio:
    /// `auth_token`; fcm: the service account's key file (`client_email`,
    /// `private_key`, `private_key_id`); whatsapp: `access_token`,
    /// `app_secret` and `verify_token` (for delivery callbacks).
    pub credentials: Option<Value>,
}

/// A provider config's replacement. The provider kind cannot change.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct UpdateProvider {
    /// Its name.
    pub name: String,
    /// Failover order.
    pub priority: Option<i32>,
    /// Whether sends use it.
    pub enabled: Option<bool>,
    /// Plain settings.
    pub settings: Option<Value>,
    /// New secrets; omit to keep the stored ones.
    pub credentials: Option<Value>,
}

/// A provider config as shown: credentials masked.
#[derive(Debug, Object)]
pub struct ProviderView {
    /// Its id.
    pub id: String,
    /// The channel it delivers.
    pub channel: String,
    /// The provider.
    pub provider: String,
    /// Its name.
    pub name: String,
    /// Failover order.
    pub priority: i32,
    /// Whether sends use it.
    pub enabled: bool,
    /// Plain settings.
    pub settings: Value,
    /// The credentials' masked form (at most their last four characters).
    pub credentials: Value,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
}

impl From<ProviderConfig> for ProviderView {
    fn from(c: ProviderConfig) -> Self {
        Self {
            id: c.id.to_string(),
            channel: c.channel.as_str().into(),
            provider: c.provider.as_str().into(),
            name: c.name,
            priority: c.priority,
            enabled: c.enabled,
            settings: c.settings.0,
            credentials: c.masked.0,
            created_at: c.created_at,
            updated_at: c.updated_at,
        }
    }
}

/// The organisation's providers.
#[derive(Debug, Object)]
pub struct ProviderList {
    /// By channel, then failover order.
    pub items: Vec<ProviderView>,
}

/// Answers with one config.
#[derive(Debug, ApiResponse)]
pub enum ProviderResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<ProviderView>, #[oai(header = "Location")] String),
    /// The config.
    #[oai(status = 200)]
    Ok(Json<ProviderView>),
}

/// Answers with the list.
#[derive(Debug, ApiResponse)]
pub enum ListResponse {
    /// Every config.
    #[oai(status = 200)]
    Ok(Json<ProviderList>),
}

/// Answers to a delete.
#[derive(Debug, ApiResponse)]
pub enum DeleteResponse {
    /// Deleted.
    #[oai(status = 204)]
    Deleted,
}

#[OpenApi(prefix_path = "/api/v1/admin/providers", tag = "ApiTags::Admin")]
impl ProvidersApi {
    /// Add a provider to a channel.
    #[oai(path = "/", method = "post", operation_id = "admin.providers.create")]
    async fn create(
        &self,
        cx: AdminCtx<'_>,
        body: StrictJson<CreateProvider>,
    ) -> Result<ProviderResponse, ApiError> {
        let caller = cx.auth.caller();
        let req = body.0;
        let config = service::NewConfig {
            provider: req.provider,
            name: req.name,
            priority: req.priority,
            enabled: req.enabled,
            settings: req.settings,
            credentials: req.credentials,
        };
        let created = service::create(cx.state, &caller, cx.request_id, config).await?;
        let location = format!("/api/v1/admin/providers/{}", created.id);
        Ok(ProviderResponse::Created(Json(created.into()), location))
    }

    /// The organisation's providers, by channel and failover order.
    #[oai(path = "/", method = "get", operation_id = "admin.providers.list")]
    async fn list(&self, cx: AdminCtx<'_>) -> Result<ListResponse, ApiError> {
        let caller = cx.auth.caller();
        let items = db::list(&cx.state.pool, caller.tenant_id).await?;
        Ok(ListResponse::Ok(Json(ProviderList {
            items: items.into_iter().map(Into::into).collect(),
        })))
    }

    /// One provider.
    #[oai(path = "/:id", method = "get", operation_id = "admin.providers.get")]
    async fn get(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ProviderId>>,
    ) -> Result<ProviderResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("provider")?;
        let config = db::get(&cx.state.pool, caller.tenant_id, id)
            .await?
            .ok_or(ApiError::NotFound("provider"))?;
        Ok(ProviderResponse::Ok(Json(config.into())))
    }

    /// Replace a provider's name, order, settings and (optionally)
    /// credentials.
    #[oai(path = "/:id", method = "put", operation_id = "admin.providers.update")]
    async fn update(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ProviderId>>,
        body: StrictJson<UpdateProvider>,
    ) -> Result<ProviderResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("provider")?;
        let req = body.0;
        let replacement = service::Replacement {
            name: req.name,
            priority: req.priority,
            enabled: req.enabled,
            settings: req.settings,
            credentials: req.credentials,
        };
        let updated = service::update(cx.state, &caller, cx.request_id, id, replacement).await?;
        Ok(ProviderResponse::Ok(Json(updated.into())))
    }

    /// Remove a provider.
    #[oai(
        path = "/:id",
        method = "delete",
        operation_id = "admin.providers.delete"
    )]
    async fn delete(
        &self,
        cx: AdminCtx<'_>,
        id: Path<PathId<ProviderId>>,
    ) -> Result<DeleteResponse, ApiError> {
        let caller = cx.auth.caller();
        let id = id.0.get("provider")?;
        if !db::delete(&cx.state.pool, caller.tenant_id, id).await? {
            return Err(ApiError::NotFound("provider"));
        }
        cx.audit(
            &cx.state.pool,
            "provider.delete",
            "provider",
            id,
            Value::Object(Default::default()),
        )
        .await?;
        Ok(DeleteResponse::Deleted)
    }
}

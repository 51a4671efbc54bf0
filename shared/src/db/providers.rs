//! Organisations' provider configs (see [`crate::providers`]). Credentials are
//! stored sealed; this module never sees them in the clear.

use crate::{
    crypto::Sealed,
    domain::{Channel, ProviderId, TenantId},
    providers::ProviderKind,
};
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgExecutor, types::Json};

/// A provider config as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ProviderConfig {
    /// Its id.
    pub id: ProviderId,
    /// The channel it delivers (`tracking` for UPS).
    pub channel: String,
    /// The provider.
    pub provider: ProviderKind,
    /// A name unique within the organisation.
    pub name: String,
    /// Failover order within the channel: lower goes first.
    pub priority: i32,
    /// Whether sends use it.
    pub enabled: bool,
    /// Plain settings.
    pub settings: Json<Value>,
    /// Which key sealed the credentials.
    pub key_id: Option<String>,
    /// The sealed credentials.
    pub ciphertext: Option<Vec<u8>>,
    /// What may be shown of the credentials.
    pub masked: Json<Value>,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When it last changed.
    pub updated_at: DateTime<Utc>,
    /// When an operator paused it (sends skip it until it is resumed).
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (the audit actor).
    pub paused_by: Option<String>,
}

impl ProviderConfig {
    /// The sealed credentials, if it has any.
    pub fn sealed(&self) -> Option<Sealed> {
        self.key_id
            .clone()
            .zip(self.ciphertext.clone())
            .map(|(key_id, bytes)| Sealed { key_id, bytes })
    }
}

/// A config to write.
#[derive(Debug, Clone)]
pub struct ProviderWrite<'a> {
    /// The provider.
    pub provider: ProviderKind,
    /// Its name.
    pub name: &'a str,
    /// Failover order.
    pub priority: i32,
    /// Whether sends use it.
    pub enabled: bool,
    /// Plain settings.
    pub settings: Value,
    /// Sealed credentials.
    pub sealed: Option<Sealed>,
    /// Their masked form.
    pub masked: Value,
}

/// Every column of [`ProviderConfig`], in order.
pub const COLUMNS: &str = "id, channel, provider, name, priority, enabled, settings, key_id, ciphertext, masked, created_at, updated_at, paused_at, paused_by";

/// Whether a write clashed with another config's name.
pub fn is_name_taken(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .and_then(|d| d.constraint())
        .is_some_and(|c| c == "provider_configs_tenant_name_key")
}

/// Creates a config with the given id (the id is part of the credentials'
/// associated data, so the caller picks it before sealing).
#[tracing::instrument(skip_all)]
pub async fn create(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ProviderId,
    new: ProviderWrite<'_>,
) -> Result<ProviderConfig, sqlx::Error> {
    sqlx::query_as!(
        ProviderConfig,
        r#"insert into provider_configs
             (id, tenant_id, channel, provider, name, priority, enabled, settings, key_id, ciphertext, masked)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         returning id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by"#,
        id.0,
        tenant_id.0,
        new.provider.channel_name(),
        new.provider as _,
        new.name,
        new.priority,
        new.enabled,
        &new.settings,
        new.sealed.as_ref().map(|s| s.key_id.as_str()),
        new.sealed.as_ref().map(|s| s.bytes.as_slice()),
        &new.masked,
    )
    .fetch_one(db)
    .await
}

/// Replaces a config. The provider kind cannot change. `None` credentials
/// keep the stored ones.
#[tracing::instrument(skip_all)]
pub async fn update(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    id: ProviderId,
    new: ProviderWrite<'_>,
) -> Result<Option<ProviderConfig>, sqlx::Error> {
    sqlx::query_as!(
        ProviderConfig,
        r#"update provider_configs
         set name = $4, priority = $5, enabled = $6, settings = $7,
             key_id = case when $8::text is null then key_id else $8 end,
             ciphertext = case when $8::text is null then ciphertext else $9 end,
             masked = case when $8::text is null then masked else $10 end
         where tenant_id = $1 and id = $2 and provider = $3
         returning id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by"#,
        tenant_id.0,
        id.0,
        new.provider as _,
        new.name,
        new.priority,
        new.enabled,
        &new.settings,
        new.sealed.as_ref().map(|s| s.key_id.as_str()),
        new.sealed.as_ref().map(|s| s.bytes.as_slice()),
        &new.masked,
    )
    .fetch_optional(db)
    .await
}

super::owned_rows! {
    "provider_configs", id: ProviderId;
    /// One config of `tenant_id`.
    get -> ProviderConfig, COLUMNS;
    /// Deletes a config; false if there was none.
    delete;
}

/// A config and its tenant, found by id alone: a provider's callback names
/// the config in its URL, and the config's secret then proves the caller.
/// Works across tenants; everything the callback touches afterwards is
/// scoped to the tenant returned.
#[tracing::instrument(skip_all)]
pub async fn find_for_callback(
    db: impl PgExecutor<'_>,
    id: ProviderId,
) -> Result<Option<(TenantId, ProviderConfig)>, sqlx::Error> {
    let row = sqlx::query!(
        r#"select tenant_id as "tenant_id: TenantId", id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by
         from provider_configs where id = $1"#,
        id.0,
    )
    .fetch_optional(db)
    .await?;
    Ok(row.map(|r| {
        (
            r.tenant_id,
            ProviderConfig {
                id: r.id,
                channel: r.channel,
                provider: r.provider,
                name: r.name,
                priority: r.priority,
                enabled: r.enabled,
                settings: r.settings,
                key_id: r.key_id,
                ciphertext: r.ciphertext,
                masked: r.masked,
                created_at: r.created_at,
                updated_at: r.updated_at,
                paused_at: r.paused_at,
                paused_by: r.paused_by,
            },
        )
    }))
}

/// Every config of `tenant_id`, by channel then failover order.
#[tracing::instrument(skip_all)]
pub async fn list(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
) -> Result<Vec<ProviderConfig>, sqlx::Error> {
    sqlx::query_as!(
        ProviderConfig,
        r#"select id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by
         from provider_configs where tenant_id = $1
         order by channel, priority, name"#,
        tenant_id.0,
    )
    .fetch_all(db)
    .await
}

/// The enabled configs of one channel, in failover order; paused ones
/// are included (the chain skips them, and waits when nothing else is left).
#[tracing::instrument(skip_all)]
pub async fn for_channel(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    channel: Channel,
) -> Result<Vec<ProviderConfig>, sqlx::Error> {
    sqlx::query_as!(
        ProviderConfig,
        r#"select id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by
         from provider_configs
         where tenant_id = $1 and channel = $2 and enabled
         order by priority, name"#,
        tenant_id.0,
        channel as _,
    )
    .fetch_all(db)
    .await
}

/// The enabled config of `kind` that goes first (lowest priority), if any:
/// for kinds an organisation has one of in use, such as UPS.
#[tracing::instrument(skip_all)]
pub async fn first_of_kind(
    db: impl PgExecutor<'_>,
    tenant_id: TenantId,
    kind: ProviderKind,
) -> Result<Option<ProviderConfig>, sqlx::Error> {
    sqlx::query_as!(
        ProviderConfig,
        r#"select id as "id: ProviderId", channel, provider as "provider: ProviderKind", name, priority, enabled,
             settings as "settings: Json<Value>", key_id, ciphertext, masked as "masked: Json<Value>",
             created_at, updated_at, paused_at, paused_by
         from provider_configs
         where tenant_id = $1 and provider = $2 and enabled
         order by priority, name limit 1"#,
        tenant_id.0,
        kind as _,
    )
    .fetch_optional(db)
    .await
}

//! Provider configs as operators see them: each with its operator pause
//! (Postgres) and the live state the workers share in Redis (circuit
//! breaker, rate bucket, a provider's 429 pause, the last error), read
//! without changing it.

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::{
    db::{fleet as db, providers::ProviderConfig, scope::Reach},
    domain::{Channel, TenantId},
    fleet::{self, ProviderLive, ProviderProbe},
    jobs::QueueName,
};

use crate::{AppState, access::Principal, error::ApiError};

/// Most provider configs one listing returns.
pub const MAX_ITEMS: i64 = 1_000;

/// A provider config and its live state.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FleetProviderItem")]
pub struct ProviderItem {
    /// The config's id.
    pub id: String,
    /// Its organisation.
    pub organization_id: String,
    /// Its name, unique within the organisation.
    pub name: String,
    /// The provider (`smtp`, `sendgrid`, `twilio`, `fcm`, `whatsapp`, `ups`).
    pub provider: String,
    /// The channel it delivers (`tracking` for UPS).
    pub channel: String,
    /// Failover order within the channel: lower goes first.
    pub priority: i32,
    /// Whether the organisation has it switched on.
    pub enabled: bool,
    /// Whether an operator paused it: sends skip it (failing over to the
    /// next config, or waiting when none is left) until it is resumed.
    pub paused: bool,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (`user:<id>` or `api_key:<id>`).
    pub paused_by: Option<String>,
    /// Its circuit breaker: `closed` (sends go through), `open` (skipped
    /// until the cool-down ends) or `half_open` (the next send probes it).
    pub circuit: String,
    /// Tokens left now in its rate bucket shared by every worker; absent
    /// when no rate applies to it.
    pub rate_tokens: Option<f64>,
    /// Until when the provider's own 429 (`Retry-After`) holds its sends.
    pub paused_until: Option<DateTime<Utc>>,
    /// The last error it answered with, in the platform's words (no
    /// recipient, no content); kept a week.
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// Provider configs.
#[derive(Debug, Object)]
#[oai(rename = "FleetProvidersView")]
pub struct ProvidersView {
    /// By organisation, channel and failover order; at most 1,000.
    pub items: Vec<ProviderItem>,
}

/// The rate (per second, burst) that applies to a config, as the worker
/// works it out: the config's own `rate_per_sec`, else its channel queue's.
fn rate_of(state: &AppState, c: &ProviderConfig) -> Option<(u32, u32)> {
    let own = c
        .settings
        .0
        .get("rate_per_sec")
        .and_then(serde_json::Value::as_u64)
        .and_then(|r| u32::try_from(r).ok());
    match own {
        Some(per_sec) => Some((per_sec, per_sec.saturating_mul(2).max(1))),
        None => Channel::parse(&c.channel)
            .and_then(|ch| state.jobs.queue(QueueName::for_channel(ch)).rate_limit)
            .map(|r| (r.per_sec, r.burst)),
    }
}

/// The items of `configs`, with their live state.
pub async fn items(
    state: &AppState,
    configs: Vec<(TenantId, ProviderConfig)>,
) -> Result<Vec<ProviderItem>, ApiError> {
    let probes: Vec<ProviderProbe> = configs
        .iter()
        .map(|(_, c)| ProviderProbe {
            id: c.id.0,
            rate: rate_of(state, c),
        })
        .collect();
    let mut conn = state.queues.connection();
    let live = fleet::provider_live(
        &mut conn,
        state.queues.prefix(),
        &probes,
        state.jobs.circuit_breaker.failures,
    )
    .await
    .map_err(|e| ApiError::Unavailable(format!("Redis cannot be read: {e}")))?;
    Ok(configs
        .into_iter()
        .zip(live)
        .map(|((tenant, c), l)| item(tenant, c, l))
        .collect())
}

fn item(tenant: TenantId, c: ProviderConfig, live: ProviderLive) -> ProviderItem {
    ProviderItem {
        id: c.id.to_string(),
        organization_id: tenant.to_string(),
        name: c.name,
        provider: c.provider.as_str().to_owned(),
        channel: c.channel,
        priority: c.priority,
        enabled: c.enabled,
        paused: c.paused_at.is_some(),
        paused_at: c.paused_at,
        paused_by: c.paused_by,
        circuit: live.circuit.as_str().to_owned(),
        rate_tokens: live.rate_tokens.map(|t| (t * 100.0).round() / 100.0),
        paused_until: live.paused_until,
        last_error: live.last_error,
        last_error_at: live.last_error_at,
    }
}

/// The organisation whose configs a listing shows: `requested` for a
/// platform admin (every one when absent), the caller's own otherwise (a
/// malformed id is 400, another organisation 404).
pub fn listing_scope(p: &Principal, requested: Option<&str>) -> Result<Reach, ApiError> {
    let requested = requested
        .map(|r| {
            r.parse::<TenantId>()
                .map_err(|_| ApiError::invalid("organization_id", "is not an organisation id"))
        })
        .transpose()?;
    match requested {
        None => Ok(p.reach()),
        Some(r) if p.reach().covers(r) => Ok(Reach::Tenant(r)),
        Some(_) => Err(ApiError::NotFound("organization")),
    }
}

/// Provider configs `p` may see.
pub async fn list(state: &AppState, scope: Reach) -> Result<Vec<ProviderItem>, ApiError> {
    let rows = db::providers(&state.pool, scope, MAX_ITEMS).await?;
    items(
        state,
        rows.into_iter().map(|r| (r.tenant_id, r.config)).collect(),
    )
    .await
}

/// The config `raw` names, if `p` may act on it: an admin of its
/// organisation, or a platform admin. A malformed id, an unknown one and
/// another organisation's all answer 404.
pub async fn target(
    state: &AppState,
    p: &Principal,
    raw: &str,
) -> Result<(TenantId, ProviderConfig), ApiError> {
    let id: shared::domain::ProviderId = crate::extract::id(raw, "provider config")?;
    let found = shared::db::providers::find_for_callback(&state.pool, id).await?;
    match found {
        Some((tenant, c)) if p.reach().covers(tenant) => Ok((tenant, c)),
        _ => Err(ApiError::NotFound("provider config")),
    }
}

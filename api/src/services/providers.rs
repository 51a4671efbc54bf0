//! Provider configs: the rules a config's fields and its kind's settings and
//! credentials follow, sealing credentials, and adding or replacing a
//! config. The routes in [`crate::routes::providers`] parse requests and
//! shape answers.
//!
//! Credentials are sealed with AES-256-GCM (the tenant and provider ids bound
//! in as associated data) and only their masked form is kept readable.

use serde_json::Value;
use shared::{
    db::providers::{self as db, ProviderConfig, ProviderWrite},
    domain::{ProviderId, TenantId},
    providers::{ProviderKind, ProviderSpec, aad, mask},
};

use crate::{
    AppState,
    auth::AdminCaller,
    error::{ApiError, InvalidParam},
    middleware::RequestId,
};

/// A new config as sent.
#[derive(Debug)]
pub struct NewConfig {
    /// The provider kind's name.
    pub provider: String,
    /// Its name.
    pub name: String,
    /// Failover order (default 100).
    pub priority: Option<i32>,
    /// Whether sends use it (default true).
    pub enabled: Option<bool>,
    /// Plain settings.
    pub settings: Option<Value>,
    /// Secrets (required).
    pub credentials: Option<Value>,
}

/// A config's replacement as sent. The provider kind cannot change.
#[derive(Debug)]
pub struct Replacement {
    /// Its name.
    pub name: String,
    /// Failover order (default: the stored one).
    pub priority: Option<i32>,
    /// Whether sends use it (default: as stored).
    pub enabled: Option<bool>,
    /// Plain settings.
    pub settings: Option<Value>,
    /// New secrets; `None` keeps the stored ones.
    pub credentials: Option<Value>,
}

/// 400 naming each `(field, reason)`.
pub fn problems_of(list: Vec<(String, String)>) -> ApiError {
    ApiError::Invalid(
        list.into_iter()
            .map(|(name, reason)| InvalidParam { name, reason })
            .collect(),
    )
}

/// Checks the common fields and the kind's settings and credentials: the
/// spec to store, or `None` when no credentials were sent and none are
/// required (settings alone are then checked by [`update`] against the
/// stored credentials).
pub fn check(
    kind: ProviderKind,
    name: &str,
    priority: Option<i32>,
    settings: &Option<Value>,
    credentials: &Option<Value>,
    credentials_required: bool,
) -> Result<Option<ProviderSpec>, ApiError> {
    let mut problems = Vec::new();
    if name.trim().is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        problems.push((
            "name".to_owned(),
            "must be 1 to 100 characters on one line".to_owned(),
        ));
    }
    if let Some(p) = priority
        && !(0..=1000).contains(&p)
    {
        problems.push(("priority".into(), "must be between 0 and 1000".into()));
    }
    let settings = settings
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let spec = match (credentials, credentials_required) {
        (None, false) => {
            // Settings alone are checked with the kind's rules on update;
            // the stored credentials are kept.
            None
        }
        _ => {
            let creds = credentials.clone().unwrap_or(Value::Null);
            match ProviderSpec::parse(kind, &settings, &creds) {
                Ok(spec) => Some(spec),
                Err(p) => {
                    problems.extend(p);
                    None
                }
            }
        }
    };
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(problems_of(problems))
    }
}

/// Seals `spec`'s credentials for config `id` of the caller's tenant: the
/// sealed credentials (none when the kind has none) and their masked form.
pub fn seal(
    state: &AppState,
    caller: &AdminCaller,
    id: ProviderId,
    spec: &ProviderSpec,
) -> Result<(Option<shared::crypto::Sealed>, Value), ApiError> {
    let Some(credentials) = spec.credentials() else {
        return Ok((None, Value::Object(Default::default())));
    };
    let keyring = state.keyring.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "credentials cannot be stored: no encryption key is configured (ENCRYPTION_KEYS)"
                .into(),
        )
    })?;
    let plain = serde_json::to_vec(&credentials).map_err(anyhow::Error::from)?;
    Ok((
        Some(keyring.seal(&plain, &aad(caller.tenant_id, id))),
        mask(&credentials),
    ))
}

/// Adds config `c` to the caller's organisation, audited as the caller's
/// (without secrets): 409 when another config has the name.
pub async fn create(
    state: &AppState,
    caller: &AdminCaller,
    request_id: &RequestId,
    c: NewConfig,
) -> Result<ProviderConfig, ApiError> {
    let kind = ProviderKind::parse(&c.provider).ok_or_else(|| {
        ApiError::invalid(
            "provider",
            "must be one of `smtp`, `sendgrid`, `twilio`, `fcm`, `whatsapp`",
        )
    })?;
    let spec = check(kind, &c.name, c.priority, &c.settings, &c.credentials, true)?
        .ok_or_else(|| ApiError::invalid("credentials", "are required"))?;
    let id = ProviderId::new();
    let (sealed, masked) = seal(state, caller, id, &spec)?;
    let write = ProviderWrite {
        provider: kind,
        name: c.name.trim(),
        priority: c.priority.unwrap_or(100),
        enabled: c.enabled.unwrap_or(true),
        settings: spec.settings(),
        sealed,
        masked,
    };
    let created = match db::create(&state.pool, caller.tenant_id, id, write).await {
        Ok(c) => c,
        Err(e) if db::is_name_taken(&e) => {
            return Err(ApiError::Conflict(
                "a provider with that name already exists".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    caller
        .audit(
            &state.pool,
            request_id,
            "provider.create",
            "provider",
            id,
            serde_json::json!({"provider": kind.as_str(), "channel": kind.channel_name()}),
        )
        .await?;
    Ok(created)
}

/// Replaces config `id` of the caller's organisation with `r`, audited as
/// the caller's (without secrets): 404 when it has none, 409 when another
/// config has the name.
pub async fn update(
    state: &AppState,
    caller: &AdminCaller,
    request_id: &RequestId,
    id: ProviderId,
    r: Replacement,
) -> Result<ProviderConfig, ApiError> {
    let current = db::get(&state.pool, caller.tenant_id, id)
        .await?
        .ok_or(ApiError::NotFound("provider"))?;
    let kind = current.provider;
    let spec = check(
        kind,
        &r.name,
        r.priority,
        &r.settings,
        &r.credentials,
        false,
    )?;
    let (settings, sealed, masked) = match spec {
        Some(spec) => {
            let (sealed, masked) = seal(state, caller, id, &spec)?;
            (spec.settings(), sealed, masked)
        }
        None => {
            let settings = settings_alone(state, caller.tenant_id, id, &current, &r.settings)?;
            (settings, None, Value::Null)
        }
    };
    let write = ProviderWrite {
        provider: kind,
        name: r.name.trim(),
        priority: r.priority.unwrap_or(current.priority),
        enabled: r.enabled.unwrap_or(current.enabled),
        settings,
        sealed: sealed.clone(),
        masked,
    };
    let updated = match db::update(&state.pool, caller.tenant_id, id, write).await {
        Ok(Some(c)) => c,
        Ok(None) => return Err(ApiError::NotFound("provider")),
        Err(e) if db::is_name_taken(&e) => {
            return Err(ApiError::Conflict(
                "a provider with that name already exists".into(),
            ));
        }
        Err(e) => return Err(e.into()),
    };
    caller
        .audit(
            &state.pool,
            request_id,
            "provider.update",
            "provider",
            id,
            serde_json::json!({"credentials_replaced": sealed.is_some()}),
        )
        .await?;
    Ok(updated)
}

/// A settings change alone: `settings` checked with the kind's rules
/// against config `id`'s stored credentials, which must still open.
fn settings_alone(
    state: &AppState,
    tenant: TenantId,
    id: ProviderId,
    current: &ProviderConfig,
    settings: &Option<Value>,
) -> Result<Value, ApiError> {
    let stored = match (current.sealed(), state.keyring.as_ref()) {
        (None, _) => Value::Null,
        (Some(sealed), Some(ring)) => {
            let plain = ring.open(&sealed, &aad(tenant, id)).map_err(|_| {
                ApiError::invalid(
                    "credentials",
                    "the stored credentials no longer open; send them again",
                )
            })?;
            serde_json::from_slice(&plain).unwrap_or(Value::Null)
        }
        (Some(_), None) => {
            return Err(ApiError::Unavailable(
                "no encryption key is configured (ENCRYPTION_KEYS)".into(),
            ));
        }
    };
    let settings = settings
        .clone()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let spec = ProviderSpec::parse(current.provider, &settings, &stored).map_err(problems_of)?;
    Ok(spec.settings())
}

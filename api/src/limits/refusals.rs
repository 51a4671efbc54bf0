//! Rate-limit refusals as security events, sampled: at most one
//! `rate_limit.refused` event per caller (credential or client address)
//! and class per minute on each API instance, however many requests are
//! refused. The event names the class, the route template and the method,
//! and the caller by its API key id or user id (or only its address): never
//! the credential. It belongs to the caller's organisation only when the
//! credential proves it (a working API key, a verified token); otherwise it
//! has no organisation and only platform admins see it.

use std::{net::IpAddr, sync::Arc, time::Duration};

use poem::Request;
use shared::{
    cache::TtlCache,
    db::security_events::{self, Event},
    domain::TenantId,
};
use sqlx::PgPool;

use super::{Caller, Class, bearer};
use crate::{
    auth::{self, ApiKeyCache, KeyCheck},
    identity::Verifier,
};

/// How long one caller and class are not recorded again.
pub const SAMPLE_WINDOW: Duration = Duration::from_secs(60);
/// Most callers remembered by the sampling gate.
const GATE_CAPACITY: usize = 10_000;

/// Records sampled refusals.
pub struct RefusalEvents {
    pool: PgPool,
    verifier: Verifier,
    api_keys: Arc<ApiKeyCache>,
    gate: TtlCache<(String, Class), ()>,
}

impl std::fmt::Debug for RefusalEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RefusalEvents").finish_non_exhaustive()
    }
}

/// What one refusal event is made of, taken from the request.
struct Refusal {
    class: Class,
    route: String,
    method: String,
    token: Option<String>,
    credential: bool,
    ip: Option<IpAddr>,
    user_agent: Option<String>,
}

impl RefusalEvents {
    /// Events recorded in `pool`, with API keys looked up through the
    /// handlers' cache and tokens checked by `verifier`.
    pub fn new(pool: PgPool, verifier: Verifier, api_keys: Arc<ApiKeyCache>) -> Self {
        Self {
            pool,
            verifier,
            api_keys,
            gate: TtlCache::new(SAMPLE_WINDOW, GATE_CAPACITY),
        }
    }

    /// Notes that `req` (of `caller`, in `class`, served by route template
    /// `route`) was refused by its rate limit. The first refusal of the
    /// caller and class in a minute is recorded, in the background, so the
    /// refusal's answer never waits for Postgres.
    pub fn refused(self: &Arc<Self>, req: &Request, class: Class, caller: &Caller, route: &str) {
        let gate_key = (caller.key_part(), class);
        if self.gate.get(&gate_key).is_some() {
            return;
        }
        self.gate.insert(gate_key, ());
        let credential = matches!(caller, Caller::Credential { .. });
        let refusal = Refusal {
            class,
            route: route.to_owned(),
            method: req.method().as_str().to_owned(),
            token: credential.then(|| bearer(req).map(str::to_owned)).flatten(),
            credential,
            ip: crate::client::address(req),
            user_agent: req
                .headers()
                .get(poem::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        };
        let this = self.clone();
        tokio::spawn(async move {
            let event = this.event(refusal).await;
            // Spawned: no request scope. An event of a proven organisation
            // is written in its scope; one of an unknown caller has no
            // organisation, which only platform scope may write.
            let record = security_events::record(&this.pool, std::slice::from_ref(&event));
            let recorded = match event.tenant_id {
                Some(tenant) => shared::db::scope::tenant(tenant, record).await,
                None => shared::db::scope::platform("anonymous_security_event", record).await,
            };
            if let Err(error) = recorded {
                tracing::warn!(%error, "rate-limit refusal not recorded as a security event");
            }
        });
    }

    /// The event of `r`: its organisation, user and API key only as far as
    /// the credential proves them.
    async fn event(&self, r: Refusal) -> Event {
        let mut tenant: Option<TenantId> = None;
        let mut user_id: Option<shared::domain::UserId> = None;
        let mut details = serde_json::json!({
            "class": r.class.as_str(),
            "route": r.route,
            "method": r.method,
            "caller": if r.credential { "credential" } else { "address" },
        });
        if let Some(token) = r.token.as_deref() {
            if token.starts_with(shared::db::api_keys::KEY_PREFIX) {
                if token.len() <= 128 {
                    match auth::check_key(&self.pool, &self.api_keys, token, r.ip).await {
                        Ok(KeyCheck::Allowed(owner) | KeyCheck::Refused(owner)) => {
                            tenant = Some(owner.tenant_id);
                            details["api_key_id"] = owner.key_id.to_string().into();
                        }
                        Ok(KeyCheck::Unknown) => details["credential"] = "unknown".into(),
                        Err(error) => {
                            tracing::warn!(%error, "cannot look up the refused API key");
                            details["credential"] = "unchecked".into();
                        }
                    }
                } else {
                    details["credential"] = "unknown".into();
                }
            } else if token.len() <= 8 * 1024 {
                match self.verifier.verify(token).await {
                    Ok(identity) => {
                        tenant = Some(identity.tenant_id);
                        // Only a platform user's id; an identity
                        // provider's subject may be personal data.
                        user_id = identity.subject.parse().ok();
                    }
                    Err(_) => details["credential"] = "unverified".into(),
                }
            } else {
                details["credential"] = "unverified".into();
            }
        }
        let ip = r.ip.map(|ip| ip.to_string());
        Event::new(
            tenant,
            security_events::RATE_LIMIT_REFUSED,
            user_id,
            ip.as_deref(),
            r.user_agent.as_deref(),
        )
        .details(details)
    }
}

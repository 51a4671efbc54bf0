//! Request rate limits and send quotas, shared by every API replica through
//! Redis.
//!
//! **Rate limits.** Every request to a documented route falls in one class
//! ([`Class::of`]): `send`, `read`, `write`, `upload`, `auth` or `callback`.
//! Authenticated classes are limited per credential: the key is a hash of
//! the bearer token the caller presented (an API key or a sign-in token),
//! so the edge needs no Postgres round trip and a forged token can only
//! spend its own allowance. Anonymous routes (sign-in, invitation tokens,
//! providers' callbacks, and any request without a bearer token) are
//! limited per client address. The limit values are the platform's
//! (`jobs.toml` `[rate_limits]`) unless the caller's organisation has an
//! override; the organisation is known from the API-key cache the handlers
//! share, or for a sign-in token from its (not yet verified) tenant claim,
//! which only ever picks the values applied to that token's own bucket.
//!
//! The algorithm is GCRA in one Lua script (one `EVALSHA` round trip): a
//! key holds the theoretical arrival time of the next request, so state is
//! one number per caller and class, expiring when the caller is idle.
//!
//! When Redis cannot be reached within `redis_timeout_ms`, `read`, `write`,
//! `send`, `upload` and `callback` requests go through unlimited (a logged
//! warning and `rate_limit_unavailable_total`): refusing them would turn a
//! Redis outage into an outage of the whole API. `auth` requests are refused
//! with 503: sign-in and invitation tokens are what a password-guessing
//! attacker wants unlimited, and nobody's work is lost by a short retry.
//! After a failure Redis is not asked again for a second, so an outage does
//! not add its timeout to every request.
//!
//! **Send quotas.** An organisation may have quotas per channel and UTC day
//! or calendar month. Each accepted send counts its notifications into
//! Redis counters that expire at the period's end, checked and incremented
//! for every channel and period of the request at once in one Lua script,
//! so two replicas cannot both take the last units. A request that would
//! pass a quota is refused whole (429 naming channel and period); crossing
//! 80%, and the first refusal, raise a notice once per period
//! (`notices`: a webhook event and an audit row; the counting is in
//! `quotas`).
//!
//! **Refusals** are recorded as sampled security events ([`refusals`]).

use std::{
    net::IpAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use poem::{
    Request, Response,
    http::{HeaderValue, Method},
};
use redis::{Script, aio::ConnectionManager};
use sha2::{Digest, Sha256};
use shared::{
    cache::TtlCache,
    config::{ClassLimit, RateLimitsConfig},
    db::limits::{Override, Quota},
    domain::TenantId,
};
use sqlx::PgPool;

use crate::auth::ApiKeyCache;

mod notices;
mod quotas;
pub mod refusals;

pub use quotas::{Period, QuotaTicket, per_channel};

/// A route class: what a request costs the platform, and so its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Sends and batches.
    Send,
    /// `GET` requests.
    Read,
    /// Other writes.
    Write,
    /// CSV bulk uploads.
    Upload,
    /// Sign-in and invitation tokens (per client address).
    Auth,
    /// Providers' delivery callbacks (per client address).
    Callback,
}

/// The classes an organisation may override.
pub const OVERRIDABLE: [Class; 4] = [Class::Send, Class::Read, Class::Write, Class::Upload];

impl Class {
    /// Every class, in the order the limits are listed.
    pub const ALL: [Class; 6] = [
        Class::Send,
        Class::Read,
        Class::Write,
        Class::Upload,
        Class::Auth,
        Class::Callback,
    ];

    /// The class's name, as in `jobs.toml` and the problem details.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Send => "send",
            Class::Read => "read",
            Class::Write => "write",
            Class::Upload => "upload",
            Class::Auth => "auth",
            Class::Callback => "callback",
        }
    }

    /// The class named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Class::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The class of a request by its method and route template (as
    /// [`crate::middleware::RouteTemplates::name`] gives it); `None` for
    /// routes that are not limited (health, metrics, the document, the
    /// WebSocket, unknown paths).
    pub fn of(method: &Method, template: &str) -> Option<Self> {
        const SERVICES: &str = "/api/v1/services/notifications";
        if template == "unmatched"
            || template.starts_with("/health/")
            || matches!(
                template,
                "/metrics" | "/openapi.json" | "/docs" | "/api/v1/ws"
            )
        {
            return None;
        }
        if template.starts_with("/webhooks/") {
            return Some(Class::Callback);
        }
        if template == "/api/v1/auth/login"
            || template.starts_with("/api/v1/invitations/validate/")
            || template.starts_with("/api/v1/invitations/accept/")
        {
            return Some(Class::Auth);
        }
        if *method == Method::GET || *method == Method::HEAD {
            return Some(Class::Read);
        }
        if *method == Method::POST {
            match template.strip_prefix(SERVICES) {
                Some(
                    "/send" | "/send-batch" | "/send-chunk" | "/send-topic" | "/send-organization",
                ) => {
                    return Some(Class::Send);
                }
                Some("/bulk/csv") => return Some(Class::Upload),
                _ => {}
            }
            // A workflow trigger starts sends.
            if template == "/api/v1/services/workflows/{key}/trigger" {
                return Some(Class::Send);
            }
        }
        Some(Class::Write)
    }

    /// Whether a request of this class is refused while Redis is away.
    pub fn fails_closed(self) -> bool {
        self == Class::Auth
    }

    /// Whether the class is limited per client address.
    fn anonymous(self) -> bool {
        matches!(self, Class::Auth | Class::Callback)
    }
}

/// One limit check's outcome, for the `RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the request may go on.
    pub allowed: bool,
    /// The burst: requests allowed at once.
    pub limit: u32,
    /// Requests that could go at once right now.
    pub remaining: u64,
    /// Seconds until the allowance is whole again.
    pub reset_secs: u64,
    /// Seconds until one more request would be allowed (0 when allowed).
    pub retry_after_secs: u64,
}

impl Verdict {
    /// Adds `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` and
    /// `RateLimit-Policy` (and `Retry-After` on a refusal) to `resp`.
    pub fn headers(&self, resp: &mut Response, class: Class, rate: f64) {
        let h = resp.headers_mut();
        h.insert("ratelimit-limit", HeaderValue::from(self.limit));
        h.insert("ratelimit-remaining", HeaderValue::from(self.remaining));
        h.insert("ratelimit-reset", HeaderValue::from(self.reset_secs));
        let window = (f64::from(self.limit) / rate).ceil().max(1.0) as u64;
        if let Ok(v) = HeaderValue::from_str(&format!(
            "{};w={window};name=\"{}\"",
            self.limit,
            class.as_str()
        )) {
            h.insert("ratelimit-policy", v);
        }
        if !self.allowed {
            h.insert(
                poem::http::header::RETRY_AFTER,
                HeaderValue::from(self.retry_after_secs.max(1)),
            );
        }
    }
}

/// GCRA. KEYS: the caller's key. ARGV: emission interval (µs), burst.
/// Returns {allowed, remaining, retry after µs, reset µs}.
const GCRA: &str = r"
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - burst * interval
if now < allow_at then
  return {0, 0, math.ceil(allow_at - now), math.ceil(tat - now)}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {1, math.floor((now - allow_at) / interval), 0, math.ceil(new_tat - now)}
";

/// Who a request is counted against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A bearer credential, by the hash of the token, and its organisation
    /// when known.
    Credential {
        /// Hex SHA-256 of the token, shortened.
        hash: String,
        /// The organisation whose overrides apply.
        tenant: Option<TenantId>,
    },
    /// A client address.
    Address(IpAddr),
}

impl Caller {
    fn key_part(&self) -> String {
        match self {
            Caller::Credential { hash, .. } => format!("k:{hash}"),
            Caller::Address(ip) => format!("ip:{ip}"),
        }
    }
}

/// What the edge does with a request after its limit check.
#[derive(Debug)]
pub enum Checked {
    /// Not limited: no class, or Redis is away and the class fails open.
    Unlimited,
    /// Counted: answer with these headers; refused when `!verdict.allowed`.
    Counted {
        /// The class counted.
        class: Class,
        /// The limit applied.
        limit: ClassLimit,
        /// The outcome.
        verdict: Verdict,
        /// Who was counted.
        caller: Caller,
    },
    /// Redis is away and the class fails closed.
    Unavailable(Class),
}

/// The rate limiter and send quotas of one API process.
pub struct Limiter {
    conn: ConnectionManager,
    prefix: String,
    config: RateLimitsConfig,
    pool: PgPool,
    api_keys: Arc<ApiKeyCache>,
    tenant_claim: String,
    overrides: TtlCache<TenantId, Arc<Vec<Override>>>,
    quotas: TtlCache<TenantId, Arc<Vec<Quota>>>,
    down_until: Mutex<Option<Instant>>,
    gcra: Script,
    take_quota: Script,
    give_back: Script,
    webhook_attempts: u32,
}

impl std::fmt::Debug for Limiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

/// Most organisations whose overrides or quotas are kept in memory.
const SETTINGS_CACHE_CAPACITY: usize = 10_000;
/// How long Redis is left alone after a failed check.
const REDIS_BACKOFF: Duration = Duration::from_secs(1);
/// The share of a quota at which its organisation is warned.
pub const WARNING_SHARE: f64 = 0.8;

/// Why Redis gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum LimiterError {
    /// It answered with an error or not at all within the timeout.
    #[error("redis: {0}")]
    Redis(String),
    /// It failed recently and is not asked again yet.
    #[error("redis failed less than a second ago")]
    BackingOff,
}

impl Limiter {
    /// A limiter on `conn`, under `prefix`.
    pub fn new(
        conn: ConnectionManager,
        prefix: &str,
        config: RateLimitsConfig,
        pool: PgPool,
        api_keys: Arc<ApiKeyCache>,
        tenant_claim: &str,
    ) -> Self {
        let ttl = config.settings_cache();
        Self {
            conn,
            prefix: prefix.to_owned(),
            pool,
            api_keys,
            tenant_claim: tenant_claim.to_owned(),
            overrides: TtlCache::new(ttl, SETTINGS_CACHE_CAPACITY),
            quotas: TtlCache::new(ttl, SETTINGS_CACHE_CAPACITY),
            config,
            down_until: Mutex::new(None),
            gcra: Script::new(GCRA),
            take_quota: Script::new(quotas::TAKE_QUOTA),
            give_back: Script::new(quotas::GIVE_BACK),
            webhook_attempts: 1,
        }
    }

    /// With `attempts` for each quota notice's webhook delivery (the
    /// `webhook` queue's `max_attempts`).
    pub fn with_webhook_attempts(mut self, attempts: u32) -> Self {
        self.webhook_attempts = attempts.max(1);
        self
    }

    /// The platform's limits.
    pub fn config(&self) -> &RateLimitsConfig {
        &self.config
    }

    /// The platform's limit for `class`.
    pub fn default_limit(&self, class: Class) -> ClassLimit {
        let c = &self.config;
        match class {
            Class::Send => c.send,
            Class::Read => c.read,
            Class::Write => c.write,
            Class::Upload => c.upload,
            Class::Auth => c.auth,
            Class::Callback => c.callback,
        }
    }

    /// Drops what this process remembers of `tenant`'s overrides and quotas,
    /// after they changed.
    pub fn forget(&self, tenant: TenantId) {
        self.overrides.remove(&tenant);
        self.quotas.remove(&tenant);
    }

    fn backing_off(&self) -> bool {
        let mut down = self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match *down {
            Some(until) if until > Instant::now() => true,
            Some(_) => {
                *down = None;
                false
            }
            None => false,
        }
    }

    fn failed(&self) {
        *self
            .down_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(Instant::now() + REDIS_BACKOFF);
    }

    async fn run<T: redis::FromRedisValue>(
        &self,
        invocation: redis::ScriptInvocation<'_>,
    ) -> Result<T, LimiterError> {
        if self.backing_off() {
            return Err(LimiterError::BackingOff);
        }
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(
            self.config.redis_timeout(),
            invocation.invoke_async::<T>(&mut conn),
        )
        .await;
        match result {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                self.failed();
                Err(LimiterError::Redis(e.to_string()))
            }
            Err(_) => {
                self.failed();
                Err(LimiterError::Redis("no answer within the timeout".into()))
            }
        }
    }

    /// Counts one request of `caller` in `class` against `limit`.
    pub async fn check(
        &self,
        class: Class,
        caller: &Caller,
        limit: ClassLimit,
    ) -> Result<Verdict, LimiterError> {
        let interval_us = (1_000_000.0 / limit.per_sec).ceil().max(1.0) as u64;
        // The limit is part of the key: a changed limit starts with a whole
        // allowance rather than one measured in the old limit's units.
        let key = format!(
            "{}:rl:{}:{}:{interval_us}:{}",
            self.prefix,
            class.as_str(),
            caller.key_part(),
            limit.burst
        );
        let mut invocation = self.gcra.key(key);
        invocation.arg(interval_us).arg(limit.burst);
        let (allowed, remaining, retry_us, reset_us): (i64, i64, i64, i64) =
            self.run(invocation).await?;
        Ok(Verdict {
            allowed: allowed == 1,
            limit: limit.burst,
            remaining: remaining.max(0) as u64,
            reset_secs: secs_up(reset_us),
            retry_after_secs: secs_up(retry_us),
        })
    }

    /// The limit `caller` gets in `class`: its organisation's override, else
    /// the platform's.
    pub async fn limit_for(&self, class: Class, caller: &Caller) -> ClassLimit {
        let default = self.default_limit(class);
        let Caller::Credential {
            tenant: Some(tenant),
            ..
        } = caller
        else {
            return default;
        };
        if !OVERRIDABLE.contains(&class) {
            return default;
        }
        match self.overrides_of(*tenant).await {
            Ok(set) => set
                .iter()
                .find(|o| o.class == class.as_str())
                .map_or(default, |o| ClassLimit {
                    per_sec: o.per_sec,
                    burst: u32::try_from(o.burst).unwrap_or(1),
                }),
            Err(error) => {
                tracing::warn!(%error, "cannot read rate-limit overrides; using the defaults");
                default
            }
        }
    }

    /// The organisation's overrides, from memory while fresh.
    pub async fn overrides_of(&self, tenant: TenantId) -> Result<Arc<Vec<Override>>, sqlx::Error> {
        if let Some(set) = self.overrides.get(&tenant) {
            return Ok(set);
        }
        let read = shared::db::limits::overrides(&self.pool, tenant);
        let set = Arc::new(shared::db::scope::tenant(tenant, read).await?);
        self.overrides.insert(tenant, set.clone());
        Ok(set)
    }

    /// The organisation's quotas, from memory while fresh.
    pub async fn quotas_of(&self, tenant: TenantId) -> Result<Arc<Vec<Quota>>, sqlx::Error> {
        if let Some(set) = self.quotas.get(&tenant) {
            return Ok(set);
        }
        let read = shared::db::limits::quotas(&self.pool, tenant);
        let set = Arc::new(shared::db::scope::tenant(tenant, read).await?);
        self.quotas.insert(tenant, set.clone());
        Ok(set)
    }

    /// Who `req` is counted against in `class`.
    pub async fn caller(&self, req: &Request, class: Class) -> Caller {
        let address =
            || Caller::Address(crate::client::address(req).unwrap_or(IpAddr::from([0, 0, 0, 0])));
        if class.anonymous() {
            return address();
        }
        let Some(token) = bearer(req) else {
            return address();
        };
        let hash: String = Sha256::digest(token.as_bytes())[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let tenant = if token.starts_with(shared::db::api_keys::KEY_PREFIX) {
            // The same lookup (and cache) the handler's authentication uses,
            // so a working key costs no extra Postgres round trip.
            if token.len() <= 128 {
                // A key refused from this address counts as no key.
                match crate::auth::check_key(
                    &self.pool,
                    &self.api_keys,
                    token,
                    crate::client::address(req),
                )
                .await
                {
                    Ok(crate::auth::KeyCheck::Allowed(o)) => Some(o.tenant_id),
                    _ => None,
                }
            } else {
                None
            }
        } else if token.len() <= 8 * 1024 {
            jsonwebtoken::dangerous::insecure_decode_claims::<serde_json::Value>(token)
                .ok()
                .and_then(|claims| {
                    claims
                        .get(&self.tenant_claim)
                        .and_then(serde_json::Value::as_str)
                        .and_then(|s| s.parse().ok())
                })
        } else {
            None
        };
        Caller::Credential { hash, tenant }
    }

    /// The edge's check of `req`, served by route `template`.
    pub async fn admit(&self, req: &Request, template: &str) -> Checked {
        let Some(class) = Class::of(req.method(), template) else {
            return Checked::Unlimited;
        };
        let caller = self.caller(req, class).await;
        let limit = self.limit_for(class, &caller).await;
        match self.check(class, &caller, limit).await {
            Ok(verdict) => {
                if !verdict.allowed {
                    metrics::counter!("rate_limit_refusals_total", "class" => class.as_str())
                        .increment(1);
                }
                Checked::Counted {
                    class,
                    limit,
                    verdict,
                    caller,
                }
            }
            Err(error) => {
                metrics::counter!("rate_limit_unavailable_total", "class" => class.as_str())
                    .increment(1);
                if !matches!(error, LimiterError::BackingOff) {
                    tracing::warn!(%error, class = class.as_str(), "rate limiter unavailable");
                }
                if class.fails_closed() {
                    Checked::Unavailable(class)
                } else {
                    Checked::Unlimited
                }
            }
        }
    }
}

fn secs_up(us: i64) -> u64 {
    (us.max(0) as u64).div_ceil(1_000_000)
}

/// The bearer token of `req`, if it carries one.
fn bearer(req: &Request) -> Option<&str> {
    let value = req
        .headers()
        .get(poem::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_method_and_route() {
        let of = |m: Method, t: &str| Class::of(&m, t);
        let n = "/api/v1/services/notifications";
        assert_eq!(of(Method::POST, &format!("{n}/send")), Some(Class::Send));
        assert_eq!(
            of(Method::POST, &format!("{n}/send-batch")),
            Some(Class::Send)
        );
        assert_eq!(
            of(Method::POST, &format!("{n}/send-topic")),
            Some(Class::Send)
        );
        assert_eq!(
            of(Method::POST, &format!("{n}/send-organization")),
            Some(Class::Send)
        );
        assert_eq!(
            of(Method::POST, &format!("{n}/send-chunk")),
            Some(Class::Send)
        );
        assert_eq!(
            of(Method::POST, &format!("{n}/bulk/csv")),
            Some(Class::Upload)
        );
        assert_eq!(
            of(Method::POST, "/api/v1/services/workflows/{key}/trigger"),
            Some(Class::Send)
        );
        assert_eq!(of(Method::GET, &format!("{n}/{{id}}")), Some(Class::Read));
        assert_eq!(
            of(Method::POST, &format!("{n}/batches/{{id}}/close")),
            Some(Class::Write)
        );
        assert_eq!(of(Method::POST, "/api/v1/auth/login"), Some(Class::Auth));
        assert_eq!(
            of(Method::GET, "/api/v1/invitations/validate/{token}"),
            Some(Class::Auth)
        );
        assert_eq!(
            of(Method::POST, "/api/v1/invitations/accept/{token}"),
            Some(Class::Auth)
        );
        assert_eq!(
            of(Method::POST, "/webhooks/twilio/{provider_id}"),
            Some(Class::Callback)
        );
        assert_eq!(of(Method::GET, "/health/ready"), None);
        assert_eq!(of(Method::GET, "/metrics"), None);
        assert_eq!(of(Method::POST, "unmatched"), None);
        assert_eq!(
            of(Method::DELETE, "/api/v1/admin/templates/{id}"),
            Some(Class::Write)
        );
    }

    #[test]
    fn retry_seconds_round_up() {
        assert_eq!(secs_up(0), 0);
        assert_eq!(secs_up(1), 1);
        assert_eq!(secs_up(1_000_000), 1);
        assert_eq!(secs_up(1_000_001), 2);
        assert_eq!(secs_up(-5), 0);
    }
}

//! What every provider config shares across all worker replicas, in Redis:
//!
//! * a token bucket ([`Guard::acquire`]), so the organisation's rate with the
//!   provider holds however many workers send; a provider's 429 pauses the
//!   bucket for its `Retry-After` ([`Guard::pause`]);
//! * a circuit breaker ([`Guard::admit`]): after N consecutive failures the
//!   provider is skipped for a cool-down; then one send probes it
//!   (half-open), and its success closes the circuit.
//!
//! Both are single Lua scripts, so concurrent workers cannot interleave
//! between reading and writing the state. Keys expire on their own.

use std::time::Duration;

use redis::{Script, aio::ConnectionManager};
use shared::config::{CircuitBreakerConfig, RateLimit};
use uuid::Uuid;

/// Takes one token, or says how long until one is free. Also honours a
/// pause set after a provider's 429.
///
/// KEYS: bucket, pause. ARGV: per_sec, burst. Returns milliseconds to wait
/// (0: the token was taken).
const TAKE_TOKEN: &str = r"
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then return paused end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate / 1000)
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
else
  wait = math.ceil((1 - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', now)
redis.call('PEXPIRE', KEYS[1], math.ceil(burst * 1000 / rate) + 1000)
return wait
";

/// Whether a send may try the provider.
///
/// KEYS: failures, open, probe. ARGV: threshold, probe lease ms. Returns 1
/// (closed), 2 (half-open: this caller probes) or 0 (open: skip).
const ADMIT: &str = r"
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local failures = tonumber(redis.call('GET', KEYS[1]) or '0')
if failures < tonumber(ARGV[1]) then return 1 end
if redis.call('SET', KEYS[3], '1', 'NX', 'PX', ARGV[2]) then return 2 end
return 0
";

/// Records a failure; opens the circuit at the threshold.
///
/// KEYS: failures, open, probe. ARGV: threshold, cooldown ms. Returns 1 if
/// the circuit is (now) open.
const FAIL: &str = r"
local failures = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], 24 * 3600 * 1000)
redis.call('DEL', KEYS[3])
if failures >= tonumber(ARGV[1]) then
  redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
  return 1
end
return 0
";

/// The breaker's verdict for one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Closed: go ahead.
    Closed,
    /// Half-open: this send is the probe.
    Probe,
    /// Open: skip the provider.
    Open,
}

/// Rate limits and circuit breakers of provider configs.
#[derive(Clone)]
pub struct Guard {
    conn: ConnectionManager,
    prefix: String,
    breaker: CircuitBreakerConfig,
    take_token: Script,
    admit: Script,
    fail: Script,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("prefix", &self.prefix)
            .field("breaker", &self.breaker)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Guards under the Redis `prefix`.
    pub fn new(conn: ConnectionManager, prefix: &str, breaker: CircuitBreakerConfig) -> Self {
        Self {
            conn,
            prefix: prefix.to_owned(),
            breaker,
            take_token: Script::new(TAKE_TOKEN),
            admit: Script::new(ADMIT),
            fail: Script::new(FAIL),
        }
    }

    fn key(&self, provider: Uuid, part: &str) -> String {
        format!("{}:provider:{provider}:{part}", self.prefix)
    }

    /// Takes a token from the provider's bucket: `Ok(())`, or how long until
    /// one is free (or the provider's 429 pause ends).
    pub async fn acquire(&self, provider: Uuid, limit: RateLimit) -> Result<(), Duration> {
        let mut conn = self.conn.clone();
        let wait: Result<u64, _> = self
            .take_token
            .key(self.key(provider, "bucket"))
            .key(self.key(provider, "paused"))
            .arg(limit.per_sec)
            .arg(limit.burst)
            .invoke_async(&mut conn)
            .await;
        match wait {
            Ok(0) => Ok(()),
            Ok(ms) => Err(Duration::from_millis(ms)),
            Err(error) => {
                // Without Redis the limit cannot be shared; sending anyway
                // would risk the provider's own limit, so wait a little.
                tracing::warn!(%error, "cannot reach the rate limiter");
                Err(Duration::from_secs(1))
            }
        }
    }

    /// Pauses the provider for every worker (its 429 `Retry-After`).
    pub async fn pause(&self, provider: Uuid, for_: Duration) {
        let mut conn = self.conn.clone();
        let ms = for_.as_millis().clamp(1, u64::MAX as u128) as u64;
        let set: Result<(), _> = redis::cmd("SET")
            .arg(self.key(provider, "paused"))
            .arg(1)
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await;
        if let Err(error) = set {
            tracing::warn!(%error, "cannot record the provider's pause");
        }
    }

    /// Whether a send may try the provider now. The probe's lease is
    /// `probe_lease` (the send's timeout), so a probe that dies lets another
    /// probe follow.
    pub async fn admit(&self, provider: Uuid, probe_lease: Duration) -> Admission {
        let mut conn = self.conn.clone();
        let verdict: Result<i64, _> = self
            .admit
            .key(self.key(provider, "failures"))
            .key(self.key(provider, "open"))
            .key(self.key(provider, "probe"))
            .arg(self.breaker.failures)
            .arg(probe_lease.as_millis().max(1) as u64)
            .invoke_async(&mut conn)
            .await;
        match verdict {
            Ok(1) => Admission::Closed,
            Ok(2) => Admission::Probe,
            Ok(_) => Admission::Open,
            Err(error) => {
                tracing::warn!(%error, "cannot read the circuit breaker; trying the provider");
                Admission::Closed
            }
        }
    }

    /// Records a success: the circuit closes.
    pub async fn succeeded(&self, provider: Uuid) {
        let mut conn = self.conn.clone();
        let done: Result<(), _> = redis::cmd("DEL")
            .arg(self.key(provider, "failures"))
            .arg(self.key(provider, "probe"))
            .query_async(&mut conn)
            .await;
        if let Err(error) = done {
            tracing::warn!(%error, "cannot reset the circuit breaker");
        }
    }

    /// Records the provider's last error (in the platform's words), for
    /// operators ([`shared::fleet::provider_live`]).
    pub async fn note_error(&self, provider: Uuid, error: &str) {
        let mut conn = self.conn.clone();
        let noted =
            shared::fleet::note_provider_error(&mut conn, &self.prefix, provider, error).await;
        if let Err(error) = noted {
            tracing::debug!(%error, "cannot record the provider's last error");
        }
    }

    /// Records a failure; true if the circuit is now open.
    pub async fn failed(&self, provider: Uuid) -> bool {
        let mut conn = self.conn.clone();
        let opened: Result<i64, _> = self
            .fail
            .key(self.key(provider, "failures"))
            .key(self.key(provider, "open"))
            .key(self.key(provider, "probe"))
            .arg(self.breaker.failures)
            .arg(self.breaker.cooldown().as_millis() as u64)
            .invoke_async(&mut conn)
            .await;
        match opened {
            Ok(o) => o == 1,
            Err(error) => {
                tracing::warn!(%error, "cannot record the failure with the circuit breaker");
                false
            }
        }
    }
}

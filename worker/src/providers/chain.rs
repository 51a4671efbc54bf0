//! Failover: an organisation's providers of a channel, tried in priority
//! order for each send.
//!
//! * A provider whose circuit is open is skipped; so is one whose shared rate
//!   is spent for longer than [`MAX_RATE_WAIT`] (shorter waits are slept).
//! * A transient failure or a 429 moves the send to the next provider. A 429
//!   also pauses the provider for every worker for its `Retry-After`, and
//!   counts like a provider found paused: when no other provider takes the
//!   send, it waits out the soonest pause without spending an attempt.
//! * A permanent failure (an invalid number, a recipient who opted out at
//!   the carrier) stops at once: no other provider would do better.
//! * Right before each provider is called, the caller is asked whether the
//!   send is still wanted (its row may have been cancelled while the send
//!   waited for its turn or for a rate limit); if not, nothing is sent.
//! * Email falls back to the platform's SMTP relay when the organisation has
//!   configured no email provider.

use std::time::{Duration, Instant};

use shared::{
    crypto::Keyring,
    db::providers::{self as provider_db, ProviderConfig},
    domain::{Channel, TenantId},
    providers::{FailureReason, ProviderError, ProviderSpec, aad},
};
use sqlx::PgPool;
use uuid::Uuid;

use super::{
    SendError,
    guard::{Admission, Guard},
};
use shared::config::RateLimit;

/// Longest wait for a rate-limit token before trying the next provider.
pub const MAX_RATE_WAIT: Duration = Duration::from_secs(2);

/// How long a send that found only paused providers waits before it looks
/// again (its providers are read afresh then).
pub const PAUSED_RECHECK: Duration = Duration::from_secs(5);

/// One provider ready to send: its config with credentials opened.
#[derive(Debug, Clone)]
pub struct Provider {
    /// The config's id; `None` for the platform's SMTP relay used by default.
    pub id: Option<Uuid>,
    /// Its name, as recorded with each attempt.
    pub name: String,
    /// Settings and credentials.
    pub spec: ProviderSpec,
    /// Its shared rate.
    pub rate: Option<RateLimit>,
    /// Whether an operator paused it: sends skip it.
    pub paused: bool,
}

/// Why the providers could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Postgres failed.
    #[error(transparent)]
    Db(#[from] sqlx::Error),
}

/// The providers to try for `channel`, in order. Configs whose credentials
/// do not open (a key missing from `ENCRYPTION_KEYS`, or an altered
/// ciphertext) are left out with an error in the log.
pub async fn load(
    pool: &PgPool,
    keyring: Option<&Keyring>,
    tenant_id: TenantId,
    channel: Channel,
    default_rate: Option<RateLimit>,
) -> Result<Vec<Provider>, LoadError> {
    let configs = provider_db::for_channel(pool, tenant_id, channel).await?;
    if configs.is_empty() && channel == Channel::Email {
        return Ok(vec![Provider {
            id: None,
            name: "smtp".into(),
            spec: ProviderSpec::Smtp(Default::default()),
            rate: None,
            paused: false,
        }]);
    }
    Ok(configs
        .into_iter()
        .filter_map(|c| match open(keyring, tenant_id, &c) {
            Ok(spec) => {
                let rate = spec
                    .rate_per_sec()
                    .map(|per_sec| RateLimit {
                        per_sec,
                        burst: per_sec.saturating_mul(2).max(1),
                    })
                    .or(default_rate);
                Some(Provider {
                    id: Some(c.id.0),
                    paused: c.paused_at.is_some(),
                    name: c.name,
                    spec,
                    rate,
                })
            }
            Err(error) => {
                tracing::error!(provider_id = %c.id, %error, "cannot use provider config");
                None
            }
        })
        .collect())
}

/// Opens a stored config's sealed credentials and checks it for its kind.
pub fn open(
    keyring: Option<&Keyring>,
    tenant_id: TenantId,
    c: &ProviderConfig,
) -> Result<ProviderSpec, String> {
    let credentials = match c.sealed() {
        None => serde_json::Value::Null,
        Some(sealed) => {
            let ring = keyring.ok_or("ENCRYPTION_KEYS is not configured")?;
            let plain = ring
                .open(&sealed, &aad(tenant_id, c.id))
                .map_err(|e| e.to_string())?;
            serde_json::from_slice(&plain)
                .map_err(|_| "sealed credentials are unreadable".to_owned())?
        }
    };
    ProviderSpec::parse(c.provider, &c.settings.0, &credentials).map_err(|problems| {
        let names: Vec<String> = problems.into_iter().map(|(n, _)| n).collect();
        format!("the stored config is invalid: {}", names.join(", "))
    })
}

/// One provider tried without success on the way to the outcome.
#[derive(Debug, Clone)]
pub struct Hop {
    /// The provider's name.
    pub provider: String,
    /// Its error (or why it was skipped).
    pub error: ProviderError,
    /// Its status code.
    pub code: Option<u16>,
    /// How long it took.
    pub latency: Duration,
}

/// How a send through the chain ended.
#[derive(Debug)]
pub enum ChainOutcome<R> {
    /// A provider accepted it.
    Sent {
        /// Which.
        provider: String,
        /// Its answer.
        receipt: R,
    },
    /// The last provider tried failed (or a permanent error stopped the
    /// chain).
    Failed {
        /// Which provider answered last.
        provider: String,
        /// Its error.
        error: SendError,
    },
    /// No provider could be tried now (open circuits, spent rates, a 429):
    /// try again after this long, without counting an attempt.
    Busy(Duration),
    /// The send was no longer wanted when a provider was about to be called
    /// (cancelled meanwhile): nothing was sent.
    Withdrawn,
}

/// Sends through `providers` in order with `send` (given each provider's
/// index), behind each one's rate limit and circuit breaker. `wanted` is
/// asked right before each call to a provider, after any wait; when it
/// answers false the chain stops with [`ChainOutcome::Withdrawn`]. Returns
/// the outcome and the providers that failed on the way.
pub async fn run<R, F, Fut, W, WFut>(
    guard: &Guard,
    providers: &[Provider],
    timeout: Duration,
    mut wanted: W,
    mut send: F,
) -> (ChainOutcome<R>, Vec<Hop>)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<R, SendError>>,
    W: FnMut() -> WFut,
    WFut: std::future::Future<Output = bool>,
{
    let mut hops = Vec::new();
    let mut soonest: Option<Duration> = None;
    let mut last_failure: Option<(usize, String, SendError)> = None;
    let note_wait = |soonest: &mut Option<Duration>, d: Duration| {
        *soonest = Some(soonest.map_or(d, |s| s.min(d)));
    };
    for (index, p) in providers.iter().enumerate() {
        if p.paused {
            tracing::debug!(provider = %p.name, "paused by an operator; skipped");
            note_wait(&mut soonest, PAUSED_RECHECK);
            continue;
        }
        if let Some(id) = p.id {
            if guard.admit(id, timeout).await == Admission::Open {
                tracing::debug!(provider = %p.name, "circuit open; skipped");
                hops.push(Hop {
                    provider: p.name.clone(),
                    error: FailureReason::CircuitOpen.into(),
                    code: None,
                    latency: Duration::ZERO,
                });
                note_wait(&mut soonest, Duration::from_secs(5));
                continue;
            }
            if let Some(rate) = p.rate {
                let mut ready = guard.acquire(id, rate).await;
                if let Err(wait) = ready
                    && wait <= MAX_RATE_WAIT
                {
                    tokio::time::sleep(wait).await;
                    ready = guard.acquire(id, rate).await;
                }
                if let Err(wait) = ready {
                    hops.push(Hop {
                        provider: p.name.clone(),
                        error: FailureReason::RateSpent(
                            wait.as_millis().min(u64::MAX as u128) as u64
                        )
                        .into(),
                        code: None,
                        latency: Duration::ZERO,
                    });
                    note_wait(&mut soonest, wait);
                    continue;
                }
            }
        }
        if !wanted().await {
            return (ChainOutcome::Withdrawn, hops);
        }
        let started = Instant::now();
        let result = match tokio::time::timeout(timeout, send(index)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(FailureReason::NoAnswerWithin(
                timeout.as_secs(),
            ))),
        };
        let latency = started.elapsed();
        match result {
            Ok(receipt) => {
                if let Some(id) = p.id {
                    guard.succeeded(id).await;
                }
                return (
                    ChainOutcome::Sent {
                        provider: p.name.clone(),
                        receipt,
                    },
                    hops,
                );
            }
            Err(error @ (SendError::Permanent { .. } | SendError::Suppressed(_))) => {
                // The provider worked; the message cannot go anywhere.
                if let Some(id) = p.id {
                    guard.succeeded(id).await;
                }
                return (
                    ChainOutcome::Failed {
                        provider: p.name.clone(),
                        error,
                    },
                    hops,
                );
            }
            Err(error) => {
                if let SendError::RateLimited { retry_after, .. } = &error {
                    // Not a failure of the send: the provider is paused, as
                    // if it had been found paused.
                    if let Some(id) = p.id {
                        guard.pause(id, *retry_after).await;
                    }
                    note_wait(&mut soonest, *retry_after);
                } else {
                    if let Some(id) = p.id {
                        guard.note_error(id, &error.to_string()).await;
                    }
                    if let Some(id) = p.id
                        && guard.failed(id).await
                    {
                        tracing::warn!(provider = %p.name, "circuit opened");
                        metrics::counter!("provider_circuit_opened_total").increment(1);
                    }
                    last_failure = Some((hops.len(), p.name.clone(), error.clone()));
                }
                hops.push(Hop {
                    provider: p.name.clone(),
                    error: match &error {
                        SendError::Transient { error }
                        | SendError::RateLimited { error, .. }
                        | SendError::Permanent { error } => error.clone(),
                        // Never here: suppression ends the chain above.
                        SendError::Suppressed(_) => FailureReason::Rejected.into(),
                    },
                    code: error.code(),
                    latency,
                });
            }
        }
    }
    match last_failure {
        // The last failure is the outcome; the hops before it stay hops.
        Some((at, provider, error)) => {
            hops.remove(at);
            (ChainOutcome::Failed { provider, error }, hops)
        }
        None => (
            ChainOutcome::Busy(soonest.unwrap_or(Duration::from_secs(1))),
            hops,
        ),
    }
}

/// The error of a send on a channel the organisation has no provider for.
pub fn none_configured(channel: Channel) -> SendError {
    SendError::permanent(FailureReason::NoProvider(channel))
}

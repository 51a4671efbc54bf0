//! What this API instance tells the others, through Redis
//! ([`shared::fleet`]).
//!
//! * Every [`REPORT_INTERVAL`] it writes its WebSocket statistics
//!   (connections, subscriptions by topic kind, messages per second) and its
//!   caches' counters, live for three intervals, so `GET
//!   /api/v1/ops/realtime` and `/caches` add up every live instance; it
//!   removes the record when it stops.
//! * It follows the cache command channel: a cache cleared or invalidated
//!   through any instance is cleared or invalidated on every instance.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures::StreamExt;
use shared::{
    domain::TenantId,
    fleet::{self, ApiInstance, CacheCommand, CacheStats},
};
use tokio::sync::Notify;

use crate::AppState;

/// How often an instance writes its report.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);

/// The caches operators can see and clear.
pub const CACHES: &[&str] = &[API_KEYS, TEMPLATES];
/// Authenticated API keys ([`crate::auth::ApiKeyCache`]).
pub const API_KEYS: &str = "api_keys";
/// Compiled templates ([`shared::db::templates::TemplateCache`]).
pub const TEMPLATES: &str = "templates";

/// This instance's identity and message rate.
#[derive(Debug)]
pub struct Instance {
    name: String,
    /// When the rate was last measured, the count then, and the rate.
    rate: Mutex<(Instant, u64, f64)>,
}

impl Default for Instance {
    fn default() -> Self {
        Self::new()
    }
}

impl Instance {
    /// An instance with a fresh unique name.
    pub fn new() -> Self {
        let (name, _, _) = fleet::process_name("api");
        Self {
            name,
            rate: Mutex::new((Instant::now(), 0, 0.0)),
        }
    }

    /// Its unique name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its report now. `measure` starts a new rate interval (the periodic
    /// report); otherwise the last measured rate is given.
    pub fn report(&self, state: &AppState, measure: bool) -> ApiInstance {
        let hub = state.hub.stats();
        let messages_per_sec = {
            let mut rate = self
                .rate
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if measure {
                let elapsed = rate.0.elapsed().as_secs_f64();
                if elapsed > 0.0 {
                    rate.2 = hub.sent.saturating_sub(rate.1) as f64 / elapsed;
                }
                *rate = (Instant::now(), hub.sent, rate.2);
            }
            rate.2
        };
        ApiInstance {
            instance: self.name.clone(),
            connections: hub.connections,
            subscriptions: hub.subscriptions,
            messages_per_sec,
            caches: caches(state),
            at: chrono::Utc::now(),
        }
    }
}

/// This instance's caches' counters.
pub fn caches(state: &AppState) -> Vec<CacheStats> {
    let stat = |name: &str, s: shared::cache::Stats, ttl: Duration| CacheStats {
        name: name.to_owned(),
        entries: s.entries as u64,
        hits: s.hits,
        misses: s.misses,
        staleness_secs: ttl.as_secs(),
    };
    vec![
        stat(API_KEYS, state.api_keys.stats(), state.api_keys.ttl()),
        stat(TEMPLATES, state.templates.stats(), state.templates.ttl()),
    ]
}

/// Clears `cache` on this instance, or only organisation `tag`'s entries.
/// False for an unknown cache.
pub fn apply(state: &AppState, cache: &str, tag: Option<TenantId>) -> bool {
    match (cache, tag) {
        (API_KEYS, None) => state.api_keys.clear(),
        (API_KEYS, Some(t)) => state.api_keys.remove_where(|_, k| k.owner.tenant_id == t),
        (TEMPLATES, None) => state.templates.clear(),
        (TEMPLATES, Some(t)) => state.templates.forget_tenant(t),
        _ => return false,
    }
    true
}

/// Tells every other instance to apply `command` (this one has).
pub async fn broadcast(state: &AppState, command: &CacheCommand) -> redis::RedisResult<()> {
    let mut conn = state.queues.connection();
    let payload = serde_json::to_string(command).expect("a cache command serialises");
    redis::cmd("PUBLISH")
        .arg(fleet::cache_channel(state.queues.prefix()))
        .arg(payload)
        .query_async(&mut conn)
        .await
}

/// Writes this instance's report every [`REPORT_INTERVAL`] and applies the
/// cache commands other instances send. The first report is written once
/// the command channel is followed (or could not be, within a second), so
/// an instance that is listed also hears cache commands. Runs until
/// aborted.
pub async fn run(state: AppState, redis_url: String) {
    let following = Arc::new(Notify::new());
    let reports = {
        let state = state.clone();
        let following = following.clone();
        async move {
            let _ = tokio::time::timeout(Duration::from_secs(1), following.notified()).await;
            let mut tick = tokio::time::interval(REPORT_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let report = state.instance.report(&state, true);
                let mut conn = state.queues.connection();
                let ttl = REPORT_INTERVAL * fleet::TTL_INTERVALS;
                if let Err(error) =
                    fleet::report_instance(&mut conn, state.queues.prefix(), &report, ttl).await
                {
                    tracing::debug!(%error, "cannot write the instance's report");
                }
            }
        }
    };
    tokio::join!(reports, follow_commands(state, redis_url, following));
}

async fn follow_commands(state: AppState, redis_url: String, following: Arc<Notify>) {
    let channel = fleet::cache_channel(state.queues.prefix());
    loop {
        let subscribed = async {
            let client = redis::Client::open(redis_url.as_str())?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, redis::RedisError>(pubsub)
        }
        .await;
        match subscribed {
            Ok(mut pubsub) => {
                following.notify_one();
                let mut messages = pubsub.on_message();
                while let Some(msg) = messages.next().await {
                    let Ok(payload) = msg.get_payload::<String>() else {
                        continue;
                    };
                    match serde_json::from_str::<CacheCommand>(&payload) {
                        Ok(c) if c.from == state.instance.name() => {}
                        Ok(c) => {
                            if apply(&state, &c.cache, c.tag.map(TenantId)) {
                                tracing::info!(cache = %c.cache, from = %c.from, "cache cleared on request");
                            }
                        }
                        Err(error) => tracing::warn!(%error, "an unreadable cache command"),
                    }
                }
                tracing::warn!("lost the cache command subscription; reconnecting");
            }
            Err(error) => tracing::warn!(%error, "cannot subscribe to cache commands; retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Removes this instance's report (it is stopping).
pub async fn leave(state: &AppState) {
    let mut conn = state.queues.connection();
    let _ = fleet::leave_instance(&mut conn, state.queues.prefix(), state.instance.name()).await;
}

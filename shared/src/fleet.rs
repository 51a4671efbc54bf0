//! The fleet as operators see it, through Redis: what each running process
//! reports about itself, and the live state of providers.
//!
//! * Every worker process writes a heartbeat ([`WorkerBeat`]) under
//!   `{prefix}:fleet:worker:{name}` with a time-to-live of three heartbeat
//!   intervals, and removes it when it stops gracefully; a process that dies
//!   drops off when the time-to-live runs out.
//! * Every API instance writes its WebSocket and cache statistics
//!   ([`ApiInstance`]) the same way, and follows [`cache_channel`] for cache
//!   commands (clear, invalidate by tag) that must reach every instance.
//! * The scheduler records the dispatcher's last sweep ([`Sweep`]).
//! * Providers' circuit breakers, rate buckets and 429 pauses are written by
//!   the workers under `{prefix}:provider:{id}:{part}`; [`provider_live`]
//!   reads them without changing them.
//!
//! Each kind of record is listed through a sorted set of its members scored
//! by their expiry, so readers never scan the keyspace; the member's own key
//! is the truth (an expired key means a dead member, whatever the index says).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use uuid::Uuid;

/// A live record lasts this many of its writer's intervals: two missed
/// writes are tolerated, the third drops it.
pub const TTL_INTERVALS: u32 = 3;

/// What a worker process reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerBeat {
    /// The process's unique name (host, pid and a random suffix).
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id.
    pub pid: u32,
    /// The queues it serves (`WORKER_QUEUES`).
    pub queues: Vec<String>,
    /// Jobs each queue runs at once in this process.
    pub concurrency: BTreeMap<String, u32>,
    /// Jobs running now.
    pub in_flight: u64,
    /// When the process started.
    pub started_at: DateTime<Utc>,
    /// When this report was written.
    pub last_heartbeat: DateTime<Utc>,
    /// The build's version.
    pub version: String,
}

/// What an API instance reports about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiInstance {
    /// The instance's unique name.
    pub instance: String,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Topics followed, by kind (`user`, `org`, `batch`, `bulk`).
    pub subscriptions: BTreeMap<String, u64>,
    /// Messages written to WebSocket clients per second, over the last
    /// reporting interval.
    pub messages_per_sec: f64,
    /// Its in-process caches.
    pub caches: Vec<CacheStats>,
    /// When this report was written.
    pub at: DateTime<Utc>,
}

/// One in-process cache's counters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheStats {
    /// The cache's name (`api_keys`, `templates`).
    pub name: String,
    /// Entries held.
    pub entries: u64,
    /// Lookups answered from the cache since the process started.
    pub hits: u64,
    /// Lookups that had to read Postgres.
    pub misses: u64,
    /// The longest an entry is served after it was read (seconds).
    pub staleness_secs: u64,
}

/// A cache command every API instance applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheCommand {
    /// The cache.
    pub cache: String,
    /// What to drop: every entry (`None`) or one organisation's.
    pub tag: Option<Uuid>,
    /// The instance that asked (it applied the command already).
    pub from: String,
}

/// The dispatcher's last sweep.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sweep {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The scheduler replica that made it.
    pub by: String,
}

/// A provider's circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Circuit {
    /// Sends go through.
    Closed,
    /// Sends skip the provider until the cool-down ends.
    Open,
    /// The cool-down ended; the next send probes the provider.
    HalfOpen,
}

impl Circuit {
    /// Its name in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Circuit::Closed => "closed",
            Circuit::Open => "open",
            Circuit::HalfOpen => "half_open",
        }
    }
}

/// A provider config's live state, as the workers share it.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderLive {
    /// Its circuit breaker.
    pub circuit: Circuit,
    /// Tokens left in its shared rate bucket now (`None`: no rate applies).
    pub rate_tokens: Option<f64>,
    /// Until when a provider's 429 holds its sends.
    pub paused_until: Option<DateTime<Utc>>,
    /// The last error it answered with (in the platform's words).
    pub last_error: Option<String>,
    /// When.
    pub last_error_at: Option<DateTime<Utc>>,
}

/// A provider config whose live state to read, and its rate.
#[derive(Debug, Clone, Copy)]
pub struct ProviderProbe {
    /// The config.
    pub id: Uuid,
    /// Its rate (per second, burst), if one applies.
    pub rate: Option<(u32, u32)>,
}

/// The last error recorded for a provider.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LastError {
    error: String,
    at: DateTime<Utc>,
}

/// How long a provider's last error is kept.
const LAST_ERROR_TTL_SECS: u64 = 7 * 24 * 3600;

/// The key of part `part` of provider `id`'s shared state (the workers'
/// guard writes `bucket`, `paused`, `failures`, `open`, `probe`).
pub fn provider_key(prefix: &str, id: Uuid, part: &str) -> String {
    format!("{prefix}:provider:{id}:{part}")
}

/// The Redis channel cache commands go out on.
pub fn cache_channel(prefix: &str) -> String {
    format!("{prefix}:fleet:caches")
}

fn index(prefix: &str, kind: &str) -> String {
    format!("{prefix}:fleet:{kind}s")
}

fn member_key(prefix: &str, kind: &str, name: &str) -> String {
    format!("{prefix}:fleet:{kind}:{name}")
}

const WORKER: &str = "worker";
const API: &str = "api";

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

async fn put<T: Serialize>(
    conn: &mut ConnectionManager,
    prefix: &str,
    kind: &str,
    name: &str,
    value: &T,
    ttl: std::time::Duration,
) -> redis::RedisResult<()> {
    let json = serde_json::to_string(value).expect("a fleet record serialises");
    let ttl_ms = ttl.as_millis().clamp(1, i64::MAX as u128) as i64;
    redis::pipe()
        .cmd("SET")
        .arg(member_key(prefix, kind, name))
        .arg(json)
        .arg("PX")
        .arg(ttl_ms)
        .ignore()
        .cmd("ZADD")
        .arg(index(prefix, kind))
        .arg(now_ms() + ttl_ms)
        .arg(name)
        .ignore()
        .query_async(conn)
        .await
}

async fn remove(
    conn: &mut ConnectionManager,
    prefix: &str,
    kind: &str,
    name: &str,
) -> redis::RedisResult<()> {
    redis::pipe()
        .cmd("DEL")
        .arg(member_key(prefix, kind, name))
        .ignore()
        .cmd("ZREM")
        .arg(index(prefix, kind))
        .arg(name)
        .ignore()
        .query_async(conn)
        .await
}

async fn live<T: DeserializeOwned>(
    conn: &mut ConnectionManager,
    prefix: &str,
    kind: &str,
) -> redis::RedisResult<Vec<T>> {
    let idx = index(prefix, kind);
    let (names,): (Vec<String>,) = redis::pipe()
        .cmd("ZREMRANGEBYSCORE")
        .arg(&idx)
        .arg("-inf")
        .arg(now_ms())
        .ignore()
        .cmd("ZRANGE")
        .arg(&idx)
        .arg(0)
        .arg(-1)
        .query_async(conn)
        .await?;
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = names.iter().map(|n| member_key(prefix, kind, n)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query_async(conn).await?;
    // A record can run out between the index's pruning and this read (the
    // index is pruned by this process's clock, the record by Redis's): its
    // name leaves the index now, so a process that is gone leaves both.
    let gone: Vec<&String> = names
        .iter()
        .zip(&values)
        .filter(|(_, v)| v.is_none())
        .map(|(n, _)| n)
        .collect();
    if !gone.is_empty() {
        redis::cmd("ZREM")
            .arg(&idx)
            .arg(&gone)
            .query_async::<()>(conn)
            .await?;
    }
    Ok(values
        .into_iter()
        .flatten()
        .filter_map(|v| serde_json::from_str(&v).ok())
        .collect())
}

/// Writes a worker's heartbeat, live for `ttl`.
pub async fn beat(
    conn: &mut ConnectionManager,
    prefix: &str,
    beat: &WorkerBeat,
    ttl: std::time::Duration,
) -> redis::RedisResult<()> {
    put(conn, prefix, WORKER, &beat.name, beat, ttl).await
}

/// Removes a stopping worker's heartbeat.
pub async fn leave(
    conn: &mut ConnectionManager,
    prefix: &str,
    name: &str,
) -> redis::RedisResult<()> {
    remove(conn, prefix, WORKER, name).await
}

/// The worker processes alive now, by name.
pub async fn live_workers(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<WorkerBeat>> {
    let mut workers: Vec<WorkerBeat> = live(conn, prefix, WORKER).await?;
    workers.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(workers)
}

/// Writes an API instance's report, live for `ttl`.
pub async fn report_instance(
    conn: &mut ConnectionManager,
    prefix: &str,
    report: &ApiInstance,
    ttl: std::time::Duration,
) -> redis::RedisResult<()> {
    put(conn, prefix, API, &report.instance, report, ttl).await
}

/// Removes a stopping API instance's report.
pub async fn leave_instance(
    conn: &mut ConnectionManager,
    prefix: &str,
    instance: &str,
) -> redis::RedisResult<()> {
    remove(conn, prefix, API, instance).await
}

/// The API instances alive now, by name.
pub async fn live_instances(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Vec<ApiInstance>> {
    let mut instances: Vec<ApiInstance> = live(conn, prefix, API).await?;
    instances.sort_by(|a, b| a.instance.cmp(&b.instance));
    Ok(instances)
}

fn sweep_key(prefix: &str) -> String {
    format!("{prefix}:fleet:dispatcher")
}

/// Records the dispatcher's sweep.
pub async fn record_sweep(
    conn: &mut ConnectionManager,
    prefix: &str,
    sweep: &Sweep,
) -> redis::RedisResult<()> {
    let json = serde_json::to_string(sweep).expect("a sweep serialises");
    redis::cmd("SET")
        .arg(sweep_key(prefix))
        .arg(json)
        .query_async(conn)
        .await
}

/// The dispatcher's last recorded sweep.
pub async fn last_sweep(
    conn: &mut ConnectionManager,
    prefix: &str,
) -> redis::RedisResult<Option<Sweep>> {
    let raw: Option<String> = redis::cmd("GET")
        .arg(sweep_key(prefix))
        .query_async(conn)
        .await?;
    Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
}

/// Records `error` as provider `id`'s last one (kept a week). `error` must
/// be in the platform's words: no recipient, no content.
pub async fn note_provider_error(
    conn: &mut ConnectionManager,
    prefix: &str,
    id: Uuid,
    error: &str,
) -> redis::RedisResult<()> {
    let json = serde_json::to_string(&LastError {
        error: error.chars().take(500).collect(),
        at: Utc::now(),
    })
    .expect("an error serialises");
    redis::cmd("SET")
        .arg(provider_key(prefix, id, "last_error"))
        .arg(json)
        .arg("EX")
        .arg(LAST_ERROR_TTL_SECS)
        .query_async(conn)
        .await
}

/// Which of `ids` have an open circuit now.
pub async fn open_circuits(
    conn: &mut ConnectionManager,
    prefix: &str,
    ids: &[Uuid],
) -> redis::RedisResult<Vec<bool>> {
    let mut open = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let mut pipe = redis::pipe();
        for id in chunk {
            pipe.cmd("EXISTS").arg(provider_key(prefix, *id, "open"));
        }
        let got: Vec<i64> = pipe.query_async(conn).await?;
        open.extend(got.into_iter().map(|e| e == 1));
    }
    Ok(open)
}

/// The live state of each provider config in `probes`, in order, read
/// without changing it. `threshold` is the breaker's failure count.
pub async fn provider_live(
    conn: &mut ConnectionManager,
    prefix: &str,
    probes: &[ProviderProbe],
    threshold: u32,
) -> redis::RedisResult<Vec<ProviderLive>> {
    type Row = (
        i64,
        Option<i64>,
        i64,
        (Option<f64>, Option<i64>),
        i64,
        Option<String>,
    );
    let mut out = Vec::with_capacity(probes.len());
    for chunk in probes.chunks(200) {
        let mut pipe = redis::pipe();
        pipe.cmd("TIME");
        for p in chunk {
            let key = |part| provider_key(prefix, p.id, part);
            pipe.cmd("EXISTS")
                .arg(key("open"))
                .cmd("GET")
                .arg(key("failures"))
                .cmd("EXISTS")
                .arg(key("probe"))
                .cmd("HMGET")
                .arg(key("bucket"))
                .arg("tokens")
                .arg("at")
                .cmd("PTTL")
                .arg(key("paused"))
                .cmd("GET")
                .arg(key("last_error"));
        }
        let values: Vec<redis::Value> = pipe.query_async(conn).await?;
        let mut values = values.into_iter();
        let (secs, micros): (i64, i64) = match values.next() {
            Some(v) => redis::from_redis_value(v)?,
            None => (Utc::now().timestamp(), 0),
        };
        let now_ms = secs * 1000 + micros / 1000;
        for p in chunk {
            let row: Vec<redis::Value> = values.by_ref().take(6).collect();
            let row: Row = redis::from_redis_value(redis::Value::Array(row))?;
            let (open, failures, probing, (tokens, at), paused_ms, last) = row;
            let circuit = if open == 1 {
                Circuit::Open
            } else if probing == 1 || failures.unwrap_or(0) >= i64::from(threshold) {
                Circuit::HalfOpen
            } else {
                Circuit::Closed
            };
            let rate_tokens = p.rate.map(|(per_sec, burst)| {
                let burst = f64::from(burst);
                match (tokens, at) {
                    (Some(tokens), Some(at)) => {
                        let refill = (now_ms - at).max(0) as f64 * f64::from(per_sec) / 1000.0;
                        (tokens + refill).min(burst)
                    }
                    _ => burst,
                }
            });
            let paused_until = (paused_ms > 0).then(|| {
                DateTime::<Utc>::from_timestamp_millis(now_ms + paused_ms).unwrap_or_else(Utc::now)
            });
            let last: Option<LastError> = last.and_then(|l| serde_json::from_str(&l).ok());
            out.push(ProviderLive {
                circuit,
                rate_tokens,
                paused_until,
                last_error: last.as_ref().map(|l| l.error.clone()),
                last_error_at: last.map(|l| l.at),
            });
        }
    }
    Ok(out)
}

/// A name for a process no other has, now or after a restart: host, pid
/// and a random suffix.
pub fn process_name(fallback_host: &str) -> (String, String, u32) {
    let host = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| fallback_host.to_owned());
    let pid = std::process::id();
    let suffix = &Uuid::new_v4().simple().to_string()[..8];
    (format!("{host}-{pid}-{suffix}"), host, pid)
}

//! What the fleet endpoints answer and take.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use poem_openapi::Object;
use shared::fleet::{ApiInstance, WorkerBeat};

/// A live worker process.
#[derive(Debug, Clone, Object)]
#[oai(rename = "FleetWorkerItem")]
pub struct WorkerItem {
    /// Its unique name (host, pid and a random suffix).
    pub name: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: u32,
    /// The queues it serves (`WORKER_QUEUES`).
    pub queues: Vec<String>,
    /// Jobs each of its queues runs at once, by queue.
    pub concurrency: BTreeMap<String, u32>,
    /// Jobs it was running at its last heartbeat.
    pub in_flight: u64,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// When it last reported; it drops off three heartbeat intervals
    /// (15 s by default) after its last report.
    pub last_heartbeat: DateTime<Utc>,
    /// Its build's version.
    pub version: String,
}

impl From<WorkerBeat> for WorkerItem {
    fn from(b: WorkerBeat) -> Self {
        Self {
            name: b.name,
            host: b.host,
            pid: b.pid,
            queues: b.queues,
            concurrency: b.concurrency,
            in_flight: b.in_flight,
            started_at: b.started_at,
            last_heartbeat: b.last_heartbeat,
            version: b.version,
        }
    }
}

/// The live worker processes.
#[derive(Debug, Object)]
#[oai(rename = "FleetWorkersView")]
pub struct WorkersView {
    /// By name.
    pub items: Vec<WorkerItem>,
}

/// A cron entry of `jobs.toml`.
#[derive(Debug, Object)]
#[oai(rename = "FleetSchedulerEntry")]
pub struct SchedulerEntry {
    /// Its name.
    pub name: String,
    /// Its cron expression (six fields, seconds first, UTC).
    pub schedule: String,
    /// The job each tick enqueues.
    pub job: String,
    /// The queue that job goes to.
    pub queue: String,
    /// The time of its latest tick, if it ever fired.
    pub last_tick: Option<DateTime<Utc>>,
    /// When that tick's job reached Redis (absent while it has not: the
    /// dispatcher pushes it when Redis answers).
    pub last_enqueued_at: Option<DateTime<Utc>>,
    /// When it fires next.
    pub next_tick: Option<DateTime<Utc>>,
    /// The scheduler replica that won (and enqueued) its latest tick.
    pub last_enqueued_by: Option<String>,
}

/// The dispatcher's last sweep.
#[derive(Debug, Object)]
#[oai(rename = "FleetDispatcherView")]
pub struct DispatcherView {
    /// When the last sweep ended; absent when none was recorded.
    pub last_sweep: Option<DateTime<Utc>>,
    /// The scheduler replica that made it.
    pub by: Option<String>,
}

/// The scheduler.
#[derive(Debug, Object)]
#[oai(rename = "FleetSchedulerView")]
pub struct SchedulerView {
    /// Every cron entry, in `jobs.toml` order.
    pub entries: Vec<SchedulerEntry>,
    /// The dispatcher.
    pub dispatcher: DispatcherView,
}

/// One API instance's WebSocket statistics.
#[derive(Debug, Object)]
#[oai(rename = "FleetRealtimeInstance")]
pub struct RealtimeInstance {
    /// The instance's unique name.
    pub instance: String,
    /// Open WebSocket connections.
    pub connections: u64,
    /// Topics followed by its connections, by kind: `user` (each
    /// connection's own), `org`, `batch`, `bulk`.
    pub subscriptions: BTreeMap<String, u64>,
    /// Messages written to its clients per second, over its last
    /// two-second reporting interval.
    pub messages_per_sec: f64,
    /// When these figures were taken.
    pub reported_at: DateTime<Utc>,
}

impl From<ApiInstance> for RealtimeInstance {
    fn from(i: ApiInstance) -> Self {
        Self {
            instance: i.instance,
            connections: i.connections,
            subscriptions: i.subscriptions,
            messages_per_sec: (i.messages_per_sec * 100.0).round() / 100.0,
            reported_at: i.at,
        }
    }
}

/// WebSocket statistics of every live API instance.
#[derive(Debug, Object)]
#[oai(rename = "FleetRealtimeView")]
pub struct RealtimeView {
    /// Each instance, by name.
    pub instances: Vec<RealtimeInstance>,
    /// Open connections over all instances.
    pub connections: u64,
}

/// An in-process cache, added up over the live API instances.
#[derive(Debug, Object)]
#[oai(rename = "FleetCacheView")]
pub struct CacheView {
    /// `api_keys` (authenticated API keys) or `templates` (compiled
    /// templates).
    pub name: String,
    /// Entries held.
    pub entries: u64,
    /// Lookups answered from the cache since each instance started.
    pub hits: u64,
    /// Lookups that read Postgres.
    pub misses: u64,
    /// The longest an entry is used after it was read: a change made
    /// elsewhere shows within this many seconds (0: the cache is off).
    pub staleness_secs: u64,
    /// Instances counted.
    pub instances: u64,
}

/// The caches.
#[derive(Debug, Object)]
#[oai(rename = "FleetCachesView")]
pub struct CachesView {
    /// Every cache.
    pub caches: Vec<CacheView>,
}

/// Which entries to drop.
#[derive(Debug, Object, serde::Deserialize)]
#[oai(rename = "FleetInvalidateInput", deny_unknown_fields)]
#[serde(deny_unknown_fields)]
pub struct InvalidateInput {
    /// The tag: an organisation's id; its entries are dropped.
    #[oai(validator(max_length = 64))]
    pub tag: String,
}

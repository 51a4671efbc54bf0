//! Job payloads and the queues that carry them.
//!
//! Each job is declared once here, next to the queue it travels on. The API and
//! the scheduler push it through [`Queues`]; a handler in `worker/src/jobs/`
//! runs it. Queue names come from [`QueueName`], never from the Rust type
//! path, so moving a type cannot orphan the jobs already in Redis.
//!
//! A job is only a wake-up call: the unit of work it names is a Postgres row,
//! claimed before any side effect. Losing or repeating a job therefore loses or
//! repeats nothing (see `ARCHITECTURE.md`, reliability model).

use std::{fmt, str::FromStr, time::Duration};

use apalis_core::backend::TaskSink;
use apalis_redis::{ConnectionManager, RedisStorage};
use chrono::{DateTime, Utc};
use redis::aio::ConnectionManagerConfig;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use crate::{
    config::CronJob,
    domain::{BatchId, BulkJobId, Channel, InvitationId, NotificationId, ShipmentId, TenantId},
};

/// Every queue the workers serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueName {
    /// Email deliveries.
    Email,
    /// SMS deliveries.
    Sms,
    /// Push deliveries.
    Push,
    /// WhatsApp deliveries.
    #[serde(rename = "whatsapp")]
    WhatsApp,
    /// In-app deliveries (into subscribers' inboxes).
    #[serde(rename = "inapp")]
    InApp,
    /// Signed deliveries to organisations' webhook endpoints.
    Webhook,
    /// Housekeeping started by cron entries.
    Maintenance,
    /// Batch chunks expanded into notifications.
    BatchChunk,
    /// Uploaded CSV files parsed into chunks of held notifications.
    BulkCsv,
    /// Chunks of a CSV file's notifications expanded into notifications.
    BulkChunk,
    /// Invitation emails: issue the token, render and queue the email.
    Invitation,
    /// BAA-expiry reminders to organisations' admins.
    BaaReminder,
    /// Polling UPS for shipments' tracking.
    UpsPoll,
}

impl QueueName {
    /// All queues, in a stable order.
    pub const ALL: &'static [QueueName] = &[
        QueueName::Email,
        QueueName::Sms,
        QueueName::Push,
        QueueName::WhatsApp,
        QueueName::InApp,
        QueueName::Webhook,
        QueueName::Maintenance,
        QueueName::BatchChunk,
        QueueName::BulkCsv,
        QueueName::BulkChunk,
        QueueName::Invitation,
        QueueName::BaaReminder,
        QueueName::UpsPoll,
    ];

    /// The queue's name.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Email => "email",
            QueueName::Sms => "sms",
            QueueName::Push => "push",
            QueueName::WhatsApp => "whatsapp",
            QueueName::InApp => "inapp",
            QueueName::Webhook => "webhook",
            QueueName::Maintenance => "maintenance",
            QueueName::BatchChunk => "batch_chunk",
            QueueName::BulkCsv => "bulk_csv",
            QueueName::BulkChunk => "bulk_chunk",
            QueueName::Invitation => "invitation",
            QueueName::BaaReminder => "baa_reminder",
            QueueName::UpsPoll => "ups_poll",
        }
    }

    /// The queue that delivers a channel's notifications.
    pub fn for_channel(channel: Channel) -> Self {
        match channel {
            Channel::Email => QueueName::Email,
            Channel::Sms => QueueName::Sms,
            Channel::Push => QueueName::Push,
            Channel::WhatsApp => QueueName::WhatsApp,
            Channel::InApp => QueueName::InApp,
        }
    }
}

impl fmt::Display for QueueName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for QueueName {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        QueueName::ALL
            .iter()
            .copied()
            .find(|q| q.as_str() == s)
            .ok_or_else(|| format!("unknown queue `{s}`"))
    }
}

/// A job payload.
pub trait Job: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {
    /// A verb phrase naming the job, for logs and metrics.
    const NAME: &'static str;

    /// The queue this job travels on.
    fn queue(&self) -> QueueName;
}

/// Deliver a group of notifications of one tenant on one channel (a single
/// send is a group of one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendNotifications {
    /// Whose notifications they are.
    pub tenant_id: TenantId,
    /// The channel they go out on.
    pub channel: Channel,
    /// The rows to deliver.
    pub notification_ids: Vec<NotificationId>,
}

impl Job for SendNotifications {
    const NAME: &'static str = "SendNotifications";

    fn queue(&self) -> QueueName {
        QueueName::for_channel(self.channel)
    }
}

/// Deliver a group of webhook deliveries (rows of `webhook_deliveries`) of
/// one tenant to their endpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverWebhooks {
    /// Whose deliveries they are.
    pub tenant_id: TenantId,
    /// The rows to deliver.
    pub delivery_ids: Vec<uuid::Uuid>,
}

impl Job for DeliverWebhooks {
    const NAME: &'static str = "DeliverWebhooks";

    fn queue(&self) -> QueueName {
        QueueName::Webhook
    }
}

/// Expand one chunk of a batch (up to 1,000 recipients) into notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandBatchChunk {
    /// Whose batch it is.
    pub tenant_id: TenantId,
    /// The batch.
    pub batch_id: BatchId,
    /// The chunk's sequence number.
    pub seq: i32,
}

impl Job for ExpandBatchChunk {
    const NAME: &'static str = "ExpandBatchChunk";

    fn queue(&self) -> QueueName {
        QueueName::BatchChunk
    }
}

/// Parse one uploaded CSV file into notifications, from its resume cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParseBulkCsv {
    /// Whose job it is.
    pub tenant_id: TenantId,
    /// The job.
    pub job_id: BulkJobId,
}

impl Job for ParseBulkCsv {
    const NAME: &'static str = "ParseBulkCsv";

    fn queue(&self) -> QueueName {
        QueueName::BulkCsv
    }
}

/// Expand one chunk of a CSV bulk job (up to 1,000 valid rows) into
/// notifications.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpandBulkChunk {
    /// Whose job it is.
    pub tenant_id: TenantId,
    /// The job.
    pub job_id: BulkJobId,
    /// The chunk's key: the file row of its first notification.
    pub seq: i64,
}

impl Job for ExpandBulkChunk {
    const NAME: &'static str = "ExpandBulkChunk";

    fn queue(&self) -> QueueName {
        QueueName::BulkChunk
    }
}

/// Run one housekeeping task, started by a cron tick.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunMaintenance {
    /// Which task.
    pub task: CronJob,
    /// The tick that started it.
    pub scheduled_for: DateTime<Utc>,
}

impl Job for RunMaintenance {
    const NAME: &'static str = "RunMaintenance";

    fn queue(&self) -> QueueName {
        QueueName::Maintenance
    }
}

/// Issue an invitation's token and queue its email (the invitation row,
/// claimed while `pending`, is the unit of work).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendInvitation {
    /// The organisation invited into.
    pub tenant_id: TenantId,
    /// The invitation.
    pub invitation_id: InvitationId,
}

impl Job for SendInvitation {
    const NAME: &'static str = "SendInvitation";

    fn queue(&self) -> QueueName {
        QueueName::Invitation
    }
}

/// Notify organisations' admins of BAAs at a reminder threshold, as of the
/// day of `scheduled_for` (the tick's time: the job's clock).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemindBaaExpiry {
    /// The tick that started it.
    pub scheduled_for: DateTime<Utc>,
}

impl Job for RemindBaaExpiry {
    const NAME: &'static str = "RemindBaaExpiry";

    fn queue(&self) -> QueueName {
        QueueName::BaaReminder
    }
}

/// Poll UPS for shipments. A cron tick pushes a sweep (`shipments` empty):
/// it claims the due shipments for the tick and pushes them in groups of one
/// tenant; a group polls each shipment it still holds the claim of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PollUpsShipments {
    /// The tick (or refresh) time: the poll's clock, so the result depends on
    /// when it was due, not on when a worker got to it.
    pub scheduled_for: DateTime<Utc>,
    /// Whose shipments (for a group).
    pub tenant_id: Option<TenantId>,
    /// The shipments of a group; empty for a sweep.
    pub shipments: Vec<ShipmentId>,
}

impl Job for PollUpsShipments {
    const NAME: &'static str = "PollUpsShipments";

    fn queue(&self) -> QueueName {
        QueueName::UpsPoll
    }
}

/// Errors talking to the queues.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis answered with an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The backend refused the push.
    #[error("queue backend: {0}")]
    Backend(String),
    /// Redis did not answer in time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// An operator paused the queue; the work stays in Postgres until it is
    /// resumed (see [`crate::pauses`]).
    #[error("the {0} queue is paused")]
    Paused(QueueName),
}

impl QueueError {
    /// Whether the push was refused because the queue is paused (not a
    /// fault worth a warning).
    pub fn is_paused(&self) -> bool {
        matches!(self, QueueError::Paused(_))
    }
}

/// A handle on the Redis queues of one deployment (one key prefix).
#[derive(Clone)]
pub struct Queues {
    client: redis::Client,
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    paused: crate::pauses::PausedQueues,
}

impl fmt::Debug for Queues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queues")
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

impl Queues {
    /// A handle that connects lazily and reconnects by itself, so a process
    /// can start, and keep answering, while Redis is away.
    pub fn new(url: &SecretString, prefix: &str) -> Result<Self, QueueError> {
        let client = redis::Client::open(url.expose_secret())?;
        let timeout = Duration::from_secs(2);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config)?;
        Ok(Self {
            client,
            conn,
            prefix: prefix.to_owned(),
            timeout,
            paused: crate::pauses::PausedQueues::default(),
        })
    }

    /// The Redis key prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The name apalis-redis knows `queue` by; every key of the queue starts
    /// with it.
    pub fn namespace(&self, queue: QueueName) -> String {
        format!("{}:{}", self.prefix, queue)
    }

    /// The connection, for callers that issue their own commands.
    pub fn connection(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// The backend config of `queue`. Heartbeats are frequent so a dead
    /// worker's jobs come back within seconds. Acks must stay on
    /// (`persist_results`): without them the backend never releases a finished
    /// job and re-enqueues it when its worker goes away. No pub/sub events.
    pub fn backend_config(&self, queue: QueueName, fetch_batch: usize) -> apalis_redis::Config {
        apalis_redis::Config::default()
            .queue(self.namespace(queue))
            .batch_size(fetch_batch.max(1))
            .heartbeat_interval(Duration::from_secs(5))
            .missed_heartbeats(3)
            .lock_tasks(false)
            .persist_results(true)
            .emit_events(false)
    }

    /// A storage handle for `J` on `queue`.
    pub fn storage<J: Job>(&self, queue: QueueName, fetch_batch: usize) -> RedisStorage<J> {
        RedisStorage::new(self.conn.clone()).with_config(self.backend_config(queue, fetch_batch))
    }

    /// Pushes jobs that all travel on `queue`.
    pub async fn push_all<J: Job>(&self, queue: QueueName, jobs: Vec<J>) -> Result<(), QueueError> {
        if jobs.is_empty() {
            return Ok(());
        }
        debug_assert!(jobs.iter().all(|j| j.queue() == queue));
        if self.is_paused(queue).await {
            return Err(QueueError::Paused(queue));
        }
        let count = jobs.len() as u64;
        let mut storage = self.storage::<J>(queue, 1);
        tokio::time::timeout(self.timeout, storage.push_bulk(jobs))
            .await
            .map_err(|_| QueueError::Timeout(self.timeout))?
            .map_err(|e| QueueError::Backend(e.to_string()))?;
        metrics::counter!("queue_jobs_pushed_total", "queue" => queue.as_str()).increment(count);
        self.wake(queue).await;
        Ok(())
    }

    /// Tells the workers serving `queue` that it has new jobs (see
    /// [`crate::wake`]). Only a hint: when it is lost, the workers' next poll
    /// fetches the jobs.
    pub async fn wake(&self, queue: QueueName) {
        let mut conn = self.conn.clone();
        let published = redis::cmd("PUBLISH")
            .arg(crate::wake::channel(&self.namespace(queue)))
            .arg(1)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, queue = %queue, "cannot wake the queue's workers");
        }
    }

    /// Tells the scheduler's dispatchers that work only they feed was
    /// committed (see [`crate::wake::DispatcherWakes`]), so an idle one
    /// sweeps now instead of at its next idle sweep. Only a hint.
    pub async fn wake_dispatcher(&self) {
        let mut conn = self.conn.clone();
        let published = redis::cmd("PUBLISH")
            .arg(crate::wake::dispatcher_channel(&self.prefix))
            .arg(1)
            .query_async::<i64>(&mut conn)
            .await;
        if let Err(error) = published {
            tracing::debug!(%error, "cannot wake the dispatcher");
        }
    }

    /// Subscribes this process to the dispatcher's wake-ups (the scheduler
    /// does).
    pub fn subscribe_dispatcher_wakes(&self) -> crate::wake::DispatcherWakes {
        crate::wake::DispatcherWakes::subscribe(self.client.clone(), &self.prefix)
    }

    /// Subscribes this process to the wake-ups of `queues` (a worker does,
    /// for the queues it serves).
    pub fn subscribe_wakes(&self, queues: &[QueueName]) -> crate::wake::Wakes {
        crate::wake::Wakes::subscribe(self.client.clone(), &self.prefix, queues)
    }

    /// Pushes one job.
    pub async fn push<J: Job>(&self, job: J) -> Result<(), QueueError> {
        let queue = job.queue();
        self.push_all(queue, vec![job]).await
    }

    /// Jobs waiting in `queue` (ready plus delayed), not yet fetched by a worker.
    pub async fn backlog(&self, queue: QueueName) -> Result<usize, QueueError> {
        let ns = self.namespace(queue);
        let mut conn = self.conn.clone();
        let (active, scheduled): (usize, usize) = redis::pipe()
            .llen(format!("{ns}:active"))
            .zcard(format!("{ns}:scheduled"))
            .query_async(&mut conn)
            .await?;
        Ok(active + scheduled)
    }

    /// Whether an operator paused `queue` (as this process saw it within
    /// the last second; see [`crate::pauses`]).
    pub async fn is_paused(&self, queue: QueueName) -> bool {
        crate::pauses::pausable(queue) && self.paused_queues().await.contains(&queue)
    }

    /// The paused queues (as this process saw them within the last second).
    pub async fn paused_queues(&self) -> std::collections::BTreeSet<QueueName> {
        self.paused
            .current(&self.conn, &self.prefix, self.timeout)
            .await
    }

    /// Makes every process see exactly `queues` paused (the scheduler
    /// mirrors `queue_pauses` with it; the API after a pause or resume).
    pub async fn publish_paused(
        &self,
        queues: &std::collections::BTreeSet<QueueName>,
    ) -> Result<(), QueueError> {
        tokio::time::timeout(
            self.timeout,
            self.paused.publish(&self.conn, &self.prefix, queues),
        )
        .await
        .map_err(|_| QueueError::Timeout(self.timeout))??;
        Ok(())
    }

    /// Answers when Redis does.
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        redis::cmd("PING").query_async::<String>(&mut conn).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_round_trip() {
        for q in QueueName::ALL {
            assert_eq!(q.as_str().parse::<QueueName>().unwrap(), *q);
        }
        assert!("fax".parse::<QueueName>().is_err());
    }

    #[test]
    fn payloads_keep_their_wire_shape() {
        let id = NotificationId(uuid::Uuid::nil());
        let job = SendNotifications {
            tenant_id: TenantId(uuid::Uuid::nil()),
            channel: Channel::Email,
            notification_ids: vec![id],
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "tenant_id": "00000000-0000-0000-0000-000000000000",
                "channel": "email",
                "notification_ids": ["00000000-0000-0000-0000-000000000000"],
            })
        );
        assert_eq!(job.queue(), QueueName::Email);
    }
}

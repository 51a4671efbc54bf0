//! Paused queues, as every process sees them.
//!
//! An operator pauses a queue through the API; the row in `queue_pauses`
//! (Postgres) is the truth, and the scheduler mirrors it into the Redis set
//! `{prefix}:paused` on every sweep (the API writes it at once too). Each
//! process reads that set at most once a second ([`REFRESH`]) and keeps the
//! last answer when Redis is away, so a pause shows everywhere within about
//! a second and checking it costs nothing on the send path.
//!
//! While a queue is paused the dispatcher does not feed it,
//! [`crate::jobs::Queues::push_all`] refuses with
//! [`crate::jobs::QueueError::Paused`] (its callers leave the work in
//! Postgres for the dispatcher, as when Redis is away), and workers hand
//! back the jobs they fetch. Only queues whose work is a Postgres row the
//! dispatcher feeds can be paused ([`PAUSABLE`]).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use apalis_redis::ConnectionManager;

use crate::jobs::QueueName;

/// How stale a process's view of the paused queues may be.
pub const REFRESH: Duration = Duration::from_secs(1);

/// The queues an operator may pause: those whose work waits in Postgres
/// while they are paused. Cron-driven housekeeping, invitations, BAA
/// reminders and UPS polls are not among them.
pub const PAUSABLE: &[QueueName] = &[
    QueueName::Email,
    QueueName::Sms,
    QueueName::Push,
    QueueName::WhatsApp,
    QueueName::InApp,
    QueueName::Webhook,
    QueueName::BatchChunk,
    QueueName::BulkCsv,
    QueueName::BulkChunk,
];

/// Whether `queue` may be paused.
pub fn pausable(queue: QueueName) -> bool {
    PAUSABLE.contains(&queue)
}

#[derive(Debug, Default)]
struct Seen {
    at: Option<Instant>,
    queues: BTreeSet<QueueName>,
}

/// One process's view of the paused queues.
#[derive(Debug, Clone, Default)]
pub struct PausedQueues {
    seen: Arc<Mutex<Seen>>,
}

impl PausedQueues {
    /// The Redis set every process reads.
    pub fn key(prefix: &str) -> String {
        format!("{prefix}:paused")
    }

    fn fresh(&self) -> Option<BTreeSet<QueueName>> {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.at
            .filter(|at| at.elapsed() < REFRESH)
            .map(|_| seen.queues.clone())
    }

    fn remember(&self, queues: Option<BTreeSet<QueueName>>) -> BTreeSet<QueueName> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.at = Some(Instant::now());
        if let Some(q) = queues {
            seen.queues = q;
        }
        seen.queues.clone()
    }

    /// The paused queues, read from Redis when the last read is older than
    /// [`REFRESH`].
    pub async fn current(
        &self,
        conn: &ConnectionManager,
        prefix: &str,
        timeout: Duration,
    ) -> BTreeSet<QueueName> {
        if let Some(q) = self.fresh() {
            return q;
        }
        let mut conn = conn.clone();
        let read = tokio::time::timeout(
            timeout,
            redis::cmd("SMEMBERS")
                .arg(Self::key(prefix))
                .query_async::<Vec<String>>(&mut conn),
        )
        .await;
        match read {
            Ok(Ok(names)) => {
                self.remember(Some(names.iter().filter_map(|n| n.parse().ok()).collect()))
            }
            _ => {
                // Redis is away: keep the last answer (pushes fail anyway).
                self.remember(None)
            }
        }
    }

    /// Makes the Redis set hold exactly `queues`, and this process see them
    /// at once.
    pub async fn publish(
        &self,
        conn: &ConnectionManager,
        prefix: &str,
        queues: &BTreeSet<QueueName>,
    ) -> Result<(), redis::RedisError> {
        let mut conn = conn.clone();
        let key = Self::key(prefix);
        let mut pipe = redis::pipe();
        pipe.atomic().del(&key);
        if !queues.is_empty() {
            pipe.sadd(&key, queues.iter().map(|q| q.as_str()).collect::<Vec<_>>());
        }
        pipe.query_async::<()>(&mut conn).await?;
        self.remember(Some(queues.clone()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_queues_fed_from_postgres_pause() {
        assert!(pausable(QueueName::Email));
        assert!(pausable(QueueName::Webhook));
        assert!(!pausable(QueueName::Maintenance));
        assert!(!pausable(QueueName::UpsPoll));
    }

    #[test]
    fn a_fresh_view_is_used_until_it_is_a_second_old() {
        let p = PausedQueues::default();
        assert!(p.fresh().is_none());
        p.remember(Some([QueueName::Sms].into_iter().collect()));
        assert_eq!(p.fresh().unwrap().len(), 1);
        p.seen.lock().unwrap().at = Some(Instant::now() - REFRESH * 2);
        assert!(p.fresh().is_none());
        // Redis away: the last answer stays.
        assert!(p.remember(None).contains(&QueueName::Sms));
    }
}

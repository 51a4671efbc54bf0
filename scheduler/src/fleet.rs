//! What the scheduler tells operators about the fleet ([`shared::fleet`]).
//!
//! * After each dispatcher sweep it records when the sweep ended and which
//!   scheduler replica made it.
//! * For each cron tick it won, it notes its own name on the tick's row, so
//!   operators see which replica enqueued each entry's last tick.
//! * At most every [`GAUGE_INTERVAL`] (on a sweep) it sets the gauges
//!   `workers_alive{queue}` (live worker processes serving each queue of
//!   `jobs.toml`, 0 included) and `provider_circuits_open{channel}`
//!   (provider configs whose circuit breaker is open now).

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use shared::{
    config::JobsConfig,
    db,
    fleet::{self, Sweep},
    jobs::Queues,
};
use sqlx::PgPool;
use tokio::time::Instant;

/// How often the fleet gauges are computed (they read every worker's
/// heartbeat and every provider config's circuit).
pub const GAUGE_INTERVAL: Duration = Duration::from_secs(2);

/// The channels provider configs deliver; each gets a circuit gauge.
const PROVIDER_CHANNELS: &[&str] = &["email", "sms", "push", "whatsapp", "tracking"];

/// The scheduler's reports on the fleet.
#[derive(Debug)]
pub struct FleetReports {
    pool: PgPool,
    queues: Queues,
    jobs: JobsConfig,
    name: String,
    gauges_at: Option<Instant>,
}

impl FleetReports {
    /// Reports of a scheduler replica with a fresh unique name.
    pub fn new(pool: PgPool, queues: Queues, jobs: JobsConfig) -> Self {
        let (name, _, _) = fleet::process_name("scheduler");
        Self {
            pool,
            queues,
            jobs,
            name,
            gauges_at: None,
        }
    }

    /// This replica's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Records a finished sweep, and sets the gauges when they are due.
    pub async fn swept(&mut self) -> anyhow::Result<()> {
        let mut conn = self.queues.connection();
        let sweep = Sweep {
            at: Utc::now(),
            by: self.name.clone(),
        };
        fleet::record_sweep(&mut conn, self.queues.prefix(), &sweep).await?;
        if self
            .gauges_at
            .is_none_or(|at| at.elapsed() >= GAUGE_INTERVAL)
        {
            self.gauges_at = Some(Instant::now());
            self.set_gauges().await?;
        }
        Ok(())
    }

    /// Notes this replica as the winner of `won` ticks.
    pub async fn ticked(&self, won: &[(String, DateTime<Utc>)]) -> anyhow::Result<()> {
        for (name, at) in won {
            db::fleet::note_tick_winner(&self.pool, name, *at, &self.name).await?;
        }
        Ok(())
    }

    async fn set_gauges(&self) -> anyhow::Result<()> {
        let mut conn = self.queues.connection();
        let prefix = self.queues.prefix();
        let workers = fleet::live_workers(&mut conn, prefix).await?;
        let mut alive: BTreeMap<&str, u64> =
            self.jobs.queues.keys().map(|q| (q.as_str(), 0)).collect();
        for w in &workers {
            for q in &w.queues {
                if let Some(n) = alive.get_mut(q.as_str()) {
                    *n += 1;
                }
            }
        }
        for (queue, n) in alive {
            metrics::gauge!("workers_alive", "queue" => queue.to_owned()).set(n as f64);
        }
        let configs = db::fleet::provider_channels(&self.pool).await?;
        let ids: Vec<uuid::Uuid> = configs.iter().map(|(id, _)| *id).collect();
        let open = fleet::open_circuits(&mut conn, prefix, &ids).await?;
        let mut by_channel: BTreeMap<String, u64> = PROVIDER_CHANNELS
            .iter()
            .map(|c| ((*c).to_owned(), 0))
            .collect();
        for ((_, channel), open) in configs.into_iter().zip(open) {
            let n = by_channel.entry(channel).or_default();
            if open {
                *n += 1;
            }
        }
        for (channel, n) in by_channel {
            metrics::gauge!("provider_circuits_open", "channel" => channel).set(n as f64);
        }
        Ok(())
    }
}

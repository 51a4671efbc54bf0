//! Error tracking: failures counted per cause ("group") and organisation.
//!
//! A group is the same cause: kind (a delivery attempt, a webhook delivery,
//! a bulk job, a shipment poll, a job, an API request), the platform's own
//! reason code (the `error_class` of the operators' failed-work view, never
//! a provider's text), its [`ErrorClass`], and the provider, channel and
//! source (queue or API operation) where they apply. Its id is the same in
//! every process (`error_group_id` in the migration).
//!
//! Delivery attempts, webhook deliveries, bulk jobs and shipment polls are
//! counted by triggers in the statements that record them (see
//! `migrations/20261207000300_error_tracking.sql`). Failed jobs and API
//! 5xx have no such statement: each process holds an [`ErrorTracker`] that
//! adds them up in memory and writes them once a second in one statement,
//! like [`crate::throughput`]. A process killed with `kill -9` loses at most
//! its last second of these counts.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;

use crate::domain::TenantId;

/// How often counts are written.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Why [`spawn_flusher`](ErrorTracker::spawn_flusher) writes in platform scope (`db_platform_scope_total{reason}`).
pub const SCOPE_REASON: &str = "error_counts";

/// How long counts are kept after a group was last seen in an
/// organisation (hourly counts and recoveries: after their hour).
pub const KEEP: chrono::TimeDelta = chrono::TimeDelta::days(90);

/// Sample ids kept per group and organisation.
pub const SAMPLES: usize = 5;

/// Declares a closed set of names with `ALL`, `as_str` and `parse`.
macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $v:ident => $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $v),+ }

        impl $name {
            /// Every value, in a stable order.
            pub const ALL: &'static [$name] = &[$($name::$v),+];

            /// Its name as stored and shown.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$v => $s),+ }
            }

            /// The value named `raw`.
            pub fn parse(raw: &str) -> Option<Self> {
                Self::ALL.iter().copied().find(|v| v.as_str() == raw)
            }
        }
    };
}

names! {
    /// What kind of error a reason code is (`error_class_of` in the
    /// migration assigns them).
    ErrorClass {
        /// Likely to pass on a later try (rate limits, a provider's outage,
        /// an open circuit, a lost worker).
        Transient => "transient",
        /// Will not pass however often it is tried (an unreachable
        /// recipient, no provider configured, an internal error).
        Permanent => "permanent",
        /// The input was refused (a malformed recipient, rejected content,
        /// an unreadable file).
        Validation => "validation",
        /// Credentials or a sender were refused.
        Authorization => "authorization",
        /// The network failed: timeouts, connections, TLS.
        Network => "network",
        /// Postgres failed or could not be reached.
        Database => "database",
        /// A provider or endpoint answered with an error.
        ExternalProvider => "external_provider",
    }
}

names! {
    /// Where an error happened.
    ErrorKind {
        /// A notification's delivery attempt (also a failover hop).
        Delivery => "delivery",
        /// A webhook delivery that gave up.
        Webhook => "webhook",
        /// A bulk CSV job that failed.
        BulkJob => "bulk_job",
        /// A UPS poll of a shipment.
        Shipment => "shipment",
        /// A background job that failed (it runs again).
        Job => "job",
        /// An API request answered 5xx.
        Api => "api",
    }
}

/// Reason codes of the errors counted in memory; classes come from
/// `error_class_of`.
pub mod reasons {
    /// A background job returned an error.
    pub const JOB_FAILED: &str = "job_failed";
    /// Postgres could not be reached.
    pub const POSTGRES_UNREACHABLE: &str = "postgres_unreachable";
    /// A statement failed.
    pub const DATABASE_ERROR: &str = "database_error";
    /// A dependency (Redis, a limiter) is down: 503.
    pub const DEPENDENCY_UNAVAILABLE: &str = "dependency_unavailable";
    /// Any other 500.
    pub const INTERNAL_ERROR: &str = "internal_error";
    /// Any other 5xx.
    pub const SERVER_ERROR: &str = "server_error";
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    kind: ErrorKind,
    reason: &'static str,
    source: String,
    tenant: Option<TenantId>,
}

#[derive(Debug, Clone)]
struct Cell {
    n: i64,
    last: DateTime<Utc>,
    samples: Vec<String>,
}

/// Counts failures in memory and writes them once a second.
#[derive(Debug, Clone, Default)]
pub struct ErrorTracker {
    pending: Arc<Mutex<HashMap<Key, Cell>>>,
}

impl ErrorTracker {
    /// A tracker that holds its counts until [`ErrorTracker::flush`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one failure of `kind` for `reason` (one of [`reasons`]) in
    /// `source` (a queue or an API route template) of `tenant` (`None`: the
    /// platform's own), with `sample` (a job or request id; never anything
    /// a caller wrote).
    pub fn record(
        &self,
        kind: ErrorKind,
        reason: &'static str,
        source: &str,
        tenant: Option<TenantId>,
        sample: Option<String>,
    ) {
        let key = Key {
            kind,
            reason,
            source: source.chars().take(100).collect(),
            tenant,
        };
        let now = Utc::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let cell = pending.entry(key).or_insert_with(|| Cell {
            n: 0,
            last: now,
            samples: Vec::new(),
        });
        cell.n += 1;
        cell.last = now;
        if let Some(s) = sample {
            cell.samples.insert(0, s);
            cell.samples.truncate(SAMPLES);
        }
    }

    /// Writes the counts held so far in one statement; on failure they are
    /// kept for the next flush.
    pub async fn flush(&self, pool: &PgPool) -> Result<(), sqlx::Error> {
        let taken: Vec<(Key, Cell)> = {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            if pending.is_empty() {
                return Ok(());
            }
            pending.drain().collect()
        };
        // One element per sample (the last one carries the rest of the
        // count), so a group keeps its newest ids.
        let mut rows = crate::db::errors::Occurrences::default();
        for (k, c) in &taken {
            let mut left = c.n;
            let samples: Vec<Option<&String>> = if c.samples.is_empty() {
                vec![None]
            } else {
                c.samples.iter().rev().map(Some).collect()
            };
            let last = samples.len() - 1;
            for (i, s) in samples.into_iter().enumerate() {
                let n = if i == last { left } else { 1 };
                left -= n;
                let cause = crate::db::errors::Cause {
                    kind: k.kind,
                    reason: k.reason,
                    source: &k.source,
                    tenant: k.tenant,
                };
                rows.push(&cause, s.cloned(), n, c.last);
            }
        }
        if let Err(error) = crate::db::errors::record(pool, &rows).await {
            let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
            for (key, cell) in taken {
                let held = pending.entry(key).or_insert_with(|| Cell {
                    n: 0,
                    last: cell.last,
                    samples: Vec::new(),
                });
                held.n += cell.n;
                held.last = held.last.max(cell.last);
                for s in cell.samples {
                    if held.samples.len() < SAMPLES {
                        held.samples.push(s);
                    }
                }
            }
            return Err(error);
        }
        Ok(())
    }

    /// Writes the counts every second until the handle is aborted, and
    /// once an hour drops counts older than [`KEEP`].
    pub fn spawn_flusher(&self, pool: PgPool) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        // Every organisation's counts: platform scope, whatever the pool's
        // fallback.
        tokio::spawn(crate::db::scope::platform(SCOPE_REASON, async move {
            let mut tick = tokio::time::interval(FLUSH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut last_prune: Option<tokio::time::Instant> = None;
            loop {
                tick.tick().await;
                if let Err(error) = this.flush(&pool).await {
                    tracing::warn!(%error, "cannot record error counts; keeping them for the next try");
                }
                if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(3600)) {
                    last_prune = Some(tokio::time::Instant::now());
                    if let Err(error) = crate::db::errors::prune(&pool, Utc::now() - KEEP).await {
                        tracing::warn!(%error, "cannot prune old error counts");
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ErrorClass::ALL {
            assert_eq!(ErrorClass::parse(c.as_str()), Some(*c));
        }
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::parse(k.as_str()), Some(*k));
        }
        assert_eq!(ErrorClass::parse("user"), None);
    }

    #[test]
    fn failures_add_up_per_cause_and_keep_the_newest_samples() {
        let t = ErrorTracker::new();
        for i in 0..7 {
            t.record(
                ErrorKind::Api,
                reasons::INTERNAL_ERROR,
                "op",
                None,
                Some(format!("r{i}")),
            );
        }
        t.record(ErrorKind::Job, reasons::JOB_FAILED, "email", None, None);
        let pending = t.pending.lock().unwrap();
        assert_eq!(pending.len(), 2);
        let api = pending
            .iter()
            .find(|(k, _)| k.kind == ErrorKind::Api)
            .unwrap()
            .1;
        assert_eq!(api.n, 7);
        assert_eq!(api.samples, ["r6", "r5", "r4", "r3", "r2"]);
    }
}

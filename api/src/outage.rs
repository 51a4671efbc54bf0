//! Postgres outages answered at once.
//!
//! Every route but the probes, metrics and documentation needs Postgres.
//! When it is gone, a request would wait for the pool's acquire timeout and
//! then fail; instead a [`PostgresWatch`] probes Postgres on a connection of
//! its own (so a busy pool is never mistaken for an outage) and, while the
//! probe fails, the edge answers those routes `503` with `Retry-After` at
//! once. Requests already waiting when the outage is seen are answered the
//! same way instead of waiting out the pool. A request cut off this way was
//! not accepted; if its transaction had committed just before, the
//! dispatcher's sweep still delivers the work, so nothing accepted is lost.
//! The watch recovers by itself with the first probe that succeeds.

use std::{sync::Arc, time::Duration};

use secrecy::{ExposeSecret, SecretString};
use sqlx::{ConnectOptions, Connection, PgConnection, postgres::PgConnectOptions};
use tokio::sync::{Notify, watch};

/// How often Postgres is probed.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// How long one probe may take before it counts as a failure.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Probes that time out in a row before Postgres counts as down; a refused
/// or broken connection counts at once.
const SLOW_PROBES_FOR_DOWN: u32 = 2;

/// Whether Postgres answers, as last seen.
#[derive(Debug, Clone)]
pub struct PostgresWatch {
    down: watch::Receiver<bool>,
    wake: Arc<Notify>,
}

impl PostgresWatch {
    /// Starts probing `url`; the task ends with the returned handle.
    pub fn spawn(url: &SecretString) -> anyhow::Result<(Self, tokio::task::JoinHandle<()>)> {
        let options = shared::db::connect_options(url.expose_secret())?;
        let options = options.disable_statement_logging();
        let (tx, down) = watch::channel(false);
        let wake = Arc::new(Notify::new());
        let task = tokio::spawn(probe(options, tx, wake.clone()));
        Ok((Self { down, wake }, task))
    }

    /// Whether Postgres is down now.
    pub fn is_down(&self) -> bool {
        *self.down.borrow()
    }

    /// Resolves once Postgres is seen down (at once if it is).
    pub async fn went_down(&self) {
        let mut down = self.down.clone();
        // An error means the prober is gone: then never resolve.
        if down.wait_for(|d| *d).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Asks for a probe now: a request just failed to reach Postgres.
    pub fn suspect(&self) {
        self.wake.notify_one();
    }
}

async fn probe(options: PgConnectOptions, down: watch::Sender<bool>, wake: Arc<Notify>) {
    let mut conn: Option<PgConnection> = None;
    let mut slow = 0u32;
    loop {
        let attempt = tokio::time::timeout(PROBE_TIMEOUT, async {
            if conn.is_none() {
                conn = Some(options.connect().await?);
            }
            match conn.as_mut() {
                Some(c) => c.ping().await,
                None => Ok(()),
            }
        })
        .await;
        let is_down = match attempt {
            Ok(Ok(())) => {
                slow = 0;
                false
            }
            Ok(Err(_)) => {
                conn = None;
                slow = 0;
                true
            }
            Err(_) => {
                conn = None;
                slow += 1;
                slow >= SLOW_PROBES_FOR_DOWN || *down.borrow()
            }
        };
        down.send_if_modified(|d| {
            let changed = *d != is_down;
            *d = is_down;
            changed
        });
        if is_down {
            metrics::counter!("api_postgres_probe_failures_total").increment(1);
        }
        if down.is_closed() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(PROBE_EVERY) => {}
            _ = wake.notified() => {}
        }
    }
}

/// Whether `e` means Postgres could not be reached (rather than a query
/// being wrong): such errors answer 503, not 500.
pub fn is_unreachable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        // A connection cut while it was being opened or used.
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|c| {
            // Class 08: connection exceptions; 57P01-57P03: the server is
            // shutting down or starting.
            c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

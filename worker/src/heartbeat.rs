//! The worker process's heartbeat, for operators ([`shared::fleet`]).
//!
//! Every `WORKER_HEARTBEAT_SECS` (5 s by default) the process writes what it
//! is: its name, host and pid, the queues it serves with their concurrency,
//! the jobs it runs now, when it started and its version. The record lives
//! three intervals, so a process that dies drops off within them; a process
//! that stops gracefully removes it at once.
//!
//! Jobs in flight are counted by [`InFlight`], a layer around every queue's
//! handler: one atomic add when a job starts and one when it ends, however
//! it ends.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::layers::{Layer, Service};
use chrono::{DateTime, Utc};
use shared::{
    config::JobsConfig,
    fleet::{self, WorkerBeat},
    jobs::{QueueName, Queues},
};
use tokio::task::JoinHandle;

/// Jobs running now in this process, across its queues.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<AtomicU64>);

impl InFlight {
    /// How many jobs run now.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Holds one count while a job runs.
struct Running(Arc<AtomicU64>);

impl Running {
    fn start(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(counter.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<S> Layer<S> for InFlight {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            counter: self.0.clone(),
        }
    }
}

/// A handler whose running jobs are counted.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    counter: Arc<AtomicU64>,
}

impl<S, Req> Service<Req> for Counted<S>
where
    S: Service<Req>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let running = Running::start(&self.counter);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let out = fut.await;
            drop(running);
            out
        })
    }
}

/// What the heartbeat reports, apart from the live count.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The process's unique name.
    pub name: String,
    /// Its queues.
    pub queues: Vec<QueueName>,
    /// Their settings.
    pub jobs: JobsConfig,
    /// When it started.
    pub started_at: DateTime<Utc>,
}

impl Identity {
    fn beat(&self, in_flight: u64) -> WorkerBeat {
        let host = hostname::get()
            .map(|h| h.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "worker".into());
        WorkerBeat {
            name: self.name.clone(),
            host,
            pid: std::process::id(),
            queues: self.queues.iter().map(|q| q.as_str().to_owned()).collect(),
            concurrency: self
                .queues
                .iter()
                .map(|q| {
                    let c = self.jobs.queue(*q).concurrency;
                    (q.as_str().to_owned(), u32::try_from(c).unwrap_or(u32::MAX))
                })
                .collect::<BTreeMap<_, _>>(),
            in_flight,
            started_at: self.started_at,
            last_heartbeat: Utc::now(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
        }
    }
}

/// The running heartbeat; [`Heartbeat::stop`] removes the record.
#[derive(Debug)]
pub struct Heartbeat {
    task: JoinHandle<()>,
    queues: Queues,
    name: String,
}

/// Starts writing the heartbeat of `identity` every `every` (the first one
/// now), live for [`fleet::TTL_INTERVALS`] intervals.
pub fn start(
    queues: &Queues,
    identity: Identity,
    in_flight: InFlight,
    every: Duration,
) -> Heartbeat {
    let name = identity.name.clone();
    let conn_queues = queues.clone();
    let ttl = every * fleet::TTL_INTERVALS;
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tick.tick().await;
            let beat = identity.beat(in_flight.get());
            let mut conn = conn_queues.connection();
            match fleet::beat(&mut conn, conn_queues.prefix(), &beat, ttl).await {
                Ok(()) => failing = false,
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "cannot write the worker's heartbeat; retrying");
                }
                Err(_) => {}
            }
        }
    });
    Heartbeat {
        task,
        queues: queues.clone(),
        name,
    }
}

impl Heartbeat {
    /// Stops the heartbeat and removes the record, so the process is no
    /// longer listed.
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
        let mut conn = self.queues.connection();
        if let Err(error) = fleet::leave(&mut conn, self.queues.prefix(), &self.name).await {
            tracing::warn!(%error, "cannot remove the worker's heartbeat; it expires on its own");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    /// A handler that waits for a permit of its gate.
    #[derive(Clone)]
    struct Gated(Arc<tokio::sync::Semaphore>);

    impl Service<()> for Gated {
        type Response = ();
        type Error = Infallible;
        type Future = Pin<Box<dyn Future<Output = Result<(), Infallible>> + Send>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, (): ()) -> Self::Future {
            let gate = self.0.clone();
            Box::pin(async move {
                gate.acquire().await.expect("the gate stays open").forget();
                Ok(())
            })
        }
    }

    #[tokio::test]
    async fn jobs_are_counted_while_they_run_and_not_after() {
        let counter = InFlight::default();
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let mut svc = counter.layer(Gated(gate.clone()));
        let first = tokio::spawn(svc.call(()));
        let second = tokio::spawn(svc.call(()));
        assert_eq!(counter.get(), 2);
        gate.add_permits(2);
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(counter.get(), 0);
        // A job whose future is dropped unfinished is no longer counted.
        drop(svc.call(()));
        assert_eq!(counter.get(), 0);
    }
}

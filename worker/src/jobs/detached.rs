//! Delivery jobs that finish what they started, even when their queue
//! worker does not.
//!
//! apalis runs a queue worker's jobs inside the worker's own future. When
//! that future ends with an error (a Redis fetch or heartbeat that fails or
//! times out, say), the monitor drops it, with every job still in it, and
//! starts the worker again. A delivery job dropped that way stops at
//! whatever it was waiting on: rows it had claimed (or whose claim it was
//! waiting for) were never sent, answers providers had given were never
//! written, and all of them stayed `sending` until their claim's lease ran
//! out, to be sent then (the answered ones a second time).
//!
//! So a delivery job runs as a task of its own ([`Slots::run`]): the
//! handler only waits for it, and if the handler is dropped the task goes
//! on, sends what it claimed and records every answer. The queue's
//! concurrency still bounds them: a task holds one of its queue's slots
//! until it ends, so a restarted worker's new jobs wait for the old ones to
//! finish rather than pile up beside them.

use std::{collections::HashMap, future::Future, sync::Arc};

use shared::{config::JobsConfig, jobs::QueueName};
use tokio::sync::Semaphore;

/// One semaphore per queue, as many permits as its concurrency.
#[derive(Debug)]
pub struct Slots(HashMap<QueueName, Arc<Semaphore>>);

impl Slots {
    /// A slot per job each queue of `jobs` runs at once.
    pub fn new(jobs: &JobsConfig) -> Self {
        Self(
            QueueName::ALL
                .iter()
                .map(|&q| (q, Arc::new(Semaphore::new(jobs.queue(q).concurrency))))
                .collect(),
        )
    }

    /// Runs `job` as a task of its own once a slot of `queue` is free, and
    /// waits for it. Dropping this future leaves the task running (see the
    /// module's documentation); a task that panics is reported as an error.
    pub async fn run<F>(
        &self,
        queue: QueueName,
        job: F,
    ) -> Result<F::Output, tokio::task::JoinError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let slot = match self.0.get(&queue) {
            Some(slots) => Some(
                slots
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the slots are never closed"),
            ),
            None => None,
        };
        let task = tokio::spawn(async move {
            let output = job.await;
            drop(slot);
            output
        });
        let abandoned = Abandoned(queue, true);
        let output = task.await;
        abandoned.disarm();
        output
    }
}

/// Counts a handler dropped while its job's task runs on.
struct Abandoned(QueueName, bool);

impl Abandoned {
    fn disarm(mut self) {
        self.1 = false;
    }
}

impl Drop for Abandoned {
    fn drop(&mut self) {
        if self.1 {
            tracing::warn!(
                queue = %self.0,
                "the queue worker dropped a delivery job; it runs on to the end"
            );
            metrics::counter!("delivery_jobs_detached_total", "queue" => self.0.as_str())
                .increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_job_whose_handler_is_dropped_runs_to_the_end() {
        let jobs = JobsConfig::parse(include_str!("../../../jobs.toml"), Vec::new()).unwrap();
        let slots = Slots::new(&jobs);
        let (started, has_started) = tokio::sync::oneshot::channel();
        let (go, gone) = tokio::sync::oneshot::channel::<()>();
        let (done, is_done) = tokio::sync::oneshot::channel();
        let handler = slots.run(QueueName::Sms, async move {
            started.send(()).unwrap();
            gone.await.unwrap();
            done.send(()).unwrap();
        });
        // The handler runs until its job has started, then is dropped.
        tokio::select! {
            _ = handler => unreachable!("the job waits for `go`"),
            _ = has_started => {}
        }
        go.send(()).unwrap();
        is_done.await.expect("the job ran on and finished");
    }
}

//! The outbox: how work committed to Postgres reaches its Redis queue.
//!
//! Every unit of queued work is a row before it is a Redis job, and each row
//! carries a dispatch mark (`dispatched_at`): set while its job is believed
//! to be in Redis, null while it waits in Postgres. Two paths push the jobs,
//! and both end the same way:
//!
//! * **The fast path.** A writer marks its rows dispatched in its own
//!   transaction and, right after the commit, pushes their jobs through
//!   [`Enqueued::push`]. A push that fails (Redis away, the queue paused)
//!   releases the rows at once: their mark is cleared.
//! * **The safety net.** The scheduler's dispatcher sweeps every [`Outbox`]
//!   kind with one loop: under the queue's window it takes due rows that are
//!   not in Redis ([`Outbox::take`]: never pushed, released, or pushed longer
//!   than `redispatch_after` ago and still unclaimed), groups them into jobs
//!   ([`Outbox::group`]), pushes them, and releases what it took but did not
//!   push ([`OutboxJob::release`]).
//!
//! Two more steps exist once for every kind: when Redis lost its data the
//! dispatcher forgets every dispatch mark ([`Outbox::forget`]) so every
//! queued row goes out again, and each sweep puts back rows whose worker's
//! claim lease ran out ([`Outbox::recover`]).
//!
//! A job only names rows, which its worker claims before any side effect, so
//! a job pushed twice does nothing the second time (see `ARCHITECTURE.md`,
//! reliability model). The kinds are in [`kinds`]; the SQL each one runs
//! lives next to its table in [`crate::db`].

use std::{collections::BTreeMap, future::Future, time::Duration};

use sqlx::PgPool;

use crate::{
    config::JobsConfig,
    domain::TenantId,
    jobs::{Job, QueueName, Queues},
};

pub mod kinds;

/// A job whose rows are kept in an outbox: it can give them back to
/// Postgres.
pub trait OutboxJob: Job + Clone + std::fmt::Debug {
    /// Marks the rows `jobs` name as not in Redis, so the dispatcher's next
    /// sweep pushes them: their push failed, the window was full, or a
    /// worker handed the job back (its queue was paused). Rows that moved on
    /// (claimed, expanded, finished) are left alone.
    fn release(db: &PgPool, jobs: &[Self]) -> impl Future<Output = Result<(), sqlx::Error>> + Send;

    /// How many rows the job names.
    fn rows(&self) -> usize {
        1
    }
}

/// One kind of queued work as the dispatcher sees it: a table (or part of
/// one) of rows, and the queue their jobs travel on.
pub trait Outbox: Send + Sync {
    /// What [`Outbox::take`] returns for one row.
    type Row: Send;
    /// The job the rows travel in.
    type Job: OutboxJob;

    /// Whether one job carries a group of rows of one tenant (up to the
    /// dispatcher's `group_size`) rather than one row. Grouped kinds are
    /// deliveries: their rows count in `dispatched_notifications_total`.
    const GROUPED: bool;

    /// The queue the jobs travel on.
    fn queue(&self) -> QueueName;

    /// After how long a pushed row still waiting is taken as lost and pushed
    /// again.
    fn redispatch_after(&self, config: &JobsConfig) -> Duration {
        Duration::from_secs(config.dispatcher.redispatch_after_secs)
    }

    /// Takes up to `limit` due rows that are not in Redis and marks them
    /// pushed. Concurrent dispatchers take disjoint rows; a grouped kind
    /// returns them ordered by tenant.
    fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> impl Future<Output = Result<Vec<Self::Row>, sqlx::Error>> + Send;

    /// Turns taken rows into jobs, in order: one per row, or groups of up to
    /// `group_size` rows of one tenant for a grouped kind.
    fn group(&self, rows: Vec<Self::Row>, group_size: usize) -> Vec<Self::Job>;

    /// Forgets every dispatch mark of the kind's waiting rows, after Redis
    /// lost its data; returns how many.
    fn forget(&self, db: &PgPool) -> impl Future<Output = Result<u64, sqlx::Error>> + Send;

    /// Puts back rows whose worker's claim lease ran out (it died or hung);
    /// returns how many. Kinds without leases recover nothing here.
    fn recover(&self, db: &PgPool) -> impl Future<Output = Result<u64, sqlx::Error>> + Send {
        let _ = db;
        async { Ok(0) }
    }
}

/// Groups rows (ordered by tenant) into runs of up to `group_size` of one
/// tenant, in order; `make` builds a job from a run.
pub fn group_by_tenant<I, J>(
    rows: Vec<(TenantId, I)>,
    group_size: usize,
    make: impl Fn(TenantId, Vec<I>) -> J,
) -> Vec<J> {
    let mut runs: Vec<(TenantId, Vec<I>)> = Vec::new();
    for (tenant_id, id) in rows {
        match runs.last_mut() {
            Some((t, ids)) if *t == tenant_id && ids.len() < group_size.max(1) => ids.push(id),
            _ => runs.push((tenant_id, vec![id])),
        }
    }
    runs.into_iter().map(|(t, ids)| make(t, ids)).collect()
}

/// Jobs whose rows were just committed and marked pushed: push them right
/// after the commit with [`Enqueued::push`], which releases the rows if the
/// push fails, or give the rows back with [`Enqueued::release`]. Dropped
/// unpushed, the rows wait for `redispatch_after` before the dispatcher
/// pushes them.
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use = "push the jobs after the commit, or release their rows"]
pub struct Enqueued<J: OutboxJob> {
    jobs: Vec<J>,
}

impl<J: OutboxJob> Enqueued<J> {
    /// Jobs (of any queues) whose rows are marked pushed.
    pub fn new(jobs: Vec<J>) -> Self {
        Self { jobs }
    }

    /// One job whose rows are marked pushed.
    pub fn one(job: J) -> Self {
        Self::new(vec![job])
    }

    /// Nothing to push.
    pub fn none() -> Self {
        Self::new(Vec::new())
    }

    /// Whether there is nothing to push.
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// The jobs.
    pub fn jobs(&self) -> &[J] {
        &self.jobs
    }

    /// Adds `other`'s jobs.
    pub fn extend(&mut self, other: Enqueued<J>) {
        self.jobs.extend(other.jobs);
    }

    /// Pushes the jobs, one round trip per queue. The rows of a queue whose
    /// push fails are released at once, so the dispatcher's next sweep
    /// pushes them; the error is only an error when that release failed too
    /// (the rows then wait out `redispatch_after`). True when every job
    /// reached Redis.
    pub async fn push(self, queues: &Queues, db: &PgPool) -> Result<bool, sqlx::Error> {
        let mut by_queue: BTreeMap<QueueName, Vec<J>> = BTreeMap::new();
        for job in self.jobs {
            by_queue.entry(job.queue()).or_default().push(job);
        }
        let mut all = true;
        for (queue, jobs) in by_queue {
            let kept = jobs.clone();
            if let Err(error) = queues.push_all(queue, jobs).await {
                if error.is_paused() {
                    tracing::debug!(queue = %queue, job = J::NAME, "the queue is paused; the work waits in Postgres");
                } else {
                    tracing::warn!(%error, queue = %queue, job = J::NAME, "queued in Postgres only; the dispatcher will push it");
                }
                J::release(db, &kept).await?;
                all = false;
            }
        }
        Ok(all)
    }

    /// Gives the rows back without pushing (the window was full): the
    /// dispatcher pushes them when there is room.
    pub async fn release(self, db: &PgPool) -> Result<(), sqlx::Error> {
        if self.jobs.is_empty() {
            return Ok(());
        }
        J::release(db, &self.jobs).await
    }
}

/// Hands a job a worker received back to Postgres (its queue was paused, or
/// the worker is stopping): its rows are released, and the dispatcher feeds
/// them again. A failure is logged; the rows' mark then runs out and they
/// are pushed after `redispatch_after`.
pub async fn hand_back<J: OutboxJob>(db: &PgPool, job: &J) {
    match J::release(db, std::slice::from_ref(job)).await {
        Ok(()) => tracing::debug!(job = J::NAME, "handed the job back to Postgres"),
        Err(error) => tracing::warn!(%error, job = J::NAME, "cannot hand the job back"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(tenant: TenantId, n: usize) -> Vec<(TenantId, usize)> {
        (0..n).map(|i| (tenant, i)).collect()
    }

    #[test]
    fn rows_are_grouped_by_tenant_and_size() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut all = rows(a, 5);
        all.extend(rows(b, 2));
        let jobs = group_by_tenant(all, 2, |t, ids| (t, ids.len()));
        assert_eq!(jobs, vec![(a, 2), (a, 2), (a, 1), (b, 2)]);
    }

    #[test]
    fn a_group_never_mixes_tenants() {
        let (a, b) = (TenantId::new(), TenantId::new());
        let mut all = rows(a, 1);
        all.extend(rows(b, 1));
        all.extend(rows(a, 1));
        let jobs = group_by_tenant(all, 10, |t, ids| (t, ids.len()));
        assert_eq!(jobs, vec![(a, 1), (b, 1), (a, 1)]);
    }

    #[test]
    fn a_group_size_of_zero_is_taken_as_one() {
        let a = TenantId::new();
        let jobs = group_by_tenant(rows(a, 3), 0, |t, ids| (t, ids.len()));
        assert_eq!(jobs, vec![(a, 1), (a, 1), (a, 1)]);
    }
}

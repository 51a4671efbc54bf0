//! The outbox side of the two tables of chunks waiting to be expanded into
//! notifications, `batch_chunks` ([`super::batches`]) and `bulk_chunks`
//! ([`super::bulk`]): a chunk is keyed by its parent and sequence number,
//! marked pushed (`dispatched_at`) while its job is in Redis, and done once
//! `expanded_at` is set.

use std::time::Duration;

use sqlx::{Encode, FromRow, PgExecutor, Postgres, Type, postgres::PgRow};

use crate::domain::TenantId;

/// One table of chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunks {
    /// The table.
    pub table: &'static str,
    /// Its column naming the parent (batch or bulk job).
    pub parent: &'static str,
    /// The Postgres type of its `seq`.
    pub seq_type: &'static str,
}

/// A batch's chunks.
pub(crate) const BATCH: Chunks = Chunks {
    table: "batch_chunks",
    parent: "batch_id",
    seq_type: "int4",
};

/// A CSV bulk job's chunks.
pub(crate) const BULK: Chunks = Chunks {
    table: "bulk_chunks",
    parent: "job_id",
    seq_type: "int8",
};

impl Chunks {
    /// Marks chunks (`(tenant, parent, seq)`) as not in Redis, so the sweep
    /// pushes them.
    pub(crate) async fn release<P, S>(
        self,
        db: impl PgExecutor<'_>,
        chunks: &[(TenantId, P, S)],
    ) -> Result<(), sqlx::Error>
    where
        P: Copy,
        S: Copy,
        Vec<P>: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,
        Vec<S>: for<'q> Encode<'q, Postgres> + Type<Postgres> + Send,
    {
        let Self {
            table,
            parent,
            seq_type,
        } = self;
        let (tenants, (parents, seqs)): (Vec<TenantId>, (Vec<P>, Vec<S>)) =
            chunks.iter().map(|&(t, p, s)| (t, (p, s))).unzip();
        sqlx::query(&format!(
            "update {table} c set dispatched_at = null
         from unnest($2::uuid[], $3::{seq_type}[]) as r({parent}, seq)
         where c.{parent} = r.{parent} and c.seq = r.seq and c.tenant_id = any($1)
           and c.expanded_at is null"
        ))
        .bind(tenants)
        .bind(parents)
        .bind(seqs)
        .execute(db)
        .await?;
        Ok(())
    }

    /// Picks up to `limit` unexpanded chunks that are not in Redis (never
    /// pushed, or pushed longer than `redispatch_after` ago) and marks them
    /// pushed. Works across tenants.
    pub(crate) async fn take_pending<R>(
        self,
        db: impl PgExecutor<'_>,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<R>, sqlx::Error>
    where
        R: for<'r> FromRow<'r, PgRow> + Send + Unpin,
    {
        let Self { table, parent, .. } = self;
        sqlx::query_as(&format!(
            "with due as (
             select {parent}, seq from {table}
             where expanded_at is null
               and (dispatched_at is null or dispatched_at < now() - make_interval(secs => $1))
             order by dispatched_at nulls first
             limit $2
             for update skip locked
         )
         update {table} c set dispatched_at = now()
         from due where c.{parent} = due.{parent} and c.seq = due.seq
         returning c.tenant_id, c.{parent}, c.seq"
        ))
        .bind(redispatch_after.as_secs_f64())
        .bind(limit as i64)
        .fetch_all(db)
        .await
    }

    /// Forgets which unexpanded chunks were pushed, after Redis lost its
    /// data. Works across tenants.
    pub(crate) async fn forget_dispatched(
        self,
        db: impl PgExecutor<'_>,
    ) -> Result<u64, sqlx::Error> {
        super::forget_dispatched(db, self.table, "expanded_at is null").await
    }
}

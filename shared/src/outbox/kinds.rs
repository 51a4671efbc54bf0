//! Every kind of queued work, as an [`Outbox`] over its table, and the jobs
//! that give their rows back ([`OutboxJob`]).
//!
//! | kind | rows | job | lease recovery |
//! |---|---|---|---|
//! | [`Notifications`] (one per channel) | `notifications`, stage 1, `queued`/`deferred`, due | [`SendNotifications`], grouped | claims whose lease ran out |
//! | [`WebhookDeliveries`] | `webhook_deliveries` to enabled endpoints, `queued`, due | [`DeliverWebhooks`], grouped | claims whose lease ran out |
//! | [`BatchChunks`] | unexpanded `batch_chunks` | [`ExpandBatchChunk`] | none: expansion is one transaction |
//! | [`BulkJobs`] | `bulk_jobs` waiting for a parser | [`ParseBulkCsv`] | in [`Outbox::take`]: a job whose parser's lease ran out is due |
//! | [`BulkChunks`] | unexpanded `bulk_chunks` | [`ExpandBulkChunk`] | none: expansion is one transaction |
//! | [`Invitations`] | `pending` invitations | [`SendInvitation`] | none: the claim and the email are one transaction |

use std::{collections::BTreeSet, time::Duration};

use sqlx::PgPool;
use uuid::Uuid;

use super::{Outbox, OutboxJob, group_by_tenant};
use crate::{
    config::JobsConfig,
    db::{batches, bulk, invitations, notifications, webhooks},
    domain::{BatchId, BulkJobId, Channel, NotificationId, TenantId},
    jobs::{
        DeliverWebhooks, ExpandBatchChunk, ExpandBulkChunk, ParseBulkCsv, QueueName,
        SendInvitation, SendNotifications,
    },
};

/// The distinct tenants of `jobs`.
fn tenants<J>(jobs: &[J], tenant: impl Fn(&J) -> TenantId) -> Vec<TenantId> {
    let set: BTreeSet<TenantId> = jobs.iter().map(tenant).collect();
    set.into_iter().collect()
}

impl OutboxJob for SendNotifications {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let ids: Vec<NotificationId> = jobs
            .iter()
            .flat_map(|j| j.notification_ids.iter().copied())
            .collect();
        notifications::release_dispatch(db, &tenants(jobs, |j| j.tenant_id), &ids).await
    }

    fn rows(&self) -> usize {
        self.notification_ids.len()
    }
}

impl OutboxJob for DeliverWebhooks {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let ids: Vec<Uuid> = jobs
            .iter()
            .flat_map(|j| j.delivery_ids.iter().copied())
            .collect();
        webhooks::release_dispatch(db, &tenants(jobs, |j| j.tenant_id), &ids).await
    }

    fn rows(&self) -> usize {
        self.delivery_ids.len()
    }
}

impl OutboxJob for ExpandBatchChunk {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let chunks: Vec<_> = jobs
            .iter()
            .map(|j| (j.tenant_id, j.batch_id, j.seq))
            .collect();
        batches::release_chunks(db, &chunks).await
    }
}

impl OutboxJob for ParseBulkCsv {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let ids: Vec<_> = jobs.iter().map(|j| (j.tenant_id, j.job_id)).collect();
        bulk::release_dispatch(db, &ids).await
    }
}

impl OutboxJob for ExpandBulkChunk {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let chunks: Vec<_> = jobs
            .iter()
            .map(|j| (j.tenant_id, j.job_id, j.seq))
            .collect();
        bulk::release_chunks(db, &chunks).await
    }
}

impl OutboxJob for SendInvitation {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let ids: Vec<_> = jobs
            .iter()
            .map(|j| (j.tenant_id, j.invitation_id))
            .collect();
        invitations::release_dispatch(db, &ids).await
    }
}

/// The notifications of one channel, fed to its queue in groups of one
/// tenant. A row whose worker died mid-send is queued again (or `failed`
/// on its last attempt) with the lost attempt recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notifications(pub Channel);

impl Outbox for Notifications {
    type Row = (TenantId, NotificationId);
    type Job = SendNotifications;
    const GROUPED: bool = true;

    fn queue(&self) -> QueueName {
        QueueName::for_channel(self.0)
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        notifications::take_due(db, self.0, limit, redispatch_after).await
    }

    fn group(&self, rows: Vec<Self::Row>, group_size: usize) -> Vec<Self::Job> {
        let channel = self.0;
        group_by_tenant(rows, group_size, |tenant_id, notification_ids| {
            SendNotifications {
                tenant_id,
                channel,
                notification_ids,
            }
        })
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        notifications::forget_dispatched(db, self.0).await
    }

    async fn recover(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        notifications::recover_expired_leases(db, self.0).await
    }
}

/// Deliveries to organisations' webhook endpoints (enabled ones only), fed
/// in groups of one tenant. A delivery whose worker died is queued again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebhookDeliveries;

impl Outbox for WebhookDeliveries {
    type Row = (TenantId, Uuid);
    type Job = DeliverWebhooks;
    const GROUPED: bool = true;

    fn queue(&self) -> QueueName {
        QueueName::Webhook
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        webhooks::take_due(db, limit, redispatch_after).await
    }

    fn group(&self, rows: Vec<Self::Row>, group_size: usize) -> Vec<Self::Job> {
        group_by_tenant(rows, group_size, |tenant_id, delivery_ids| {
            DeliverWebhooks {
                tenant_id,
                delivery_ids,
            }
        })
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        webhooks::forget_dispatched(db).await
    }

    async fn recover(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        webhooks::recover_expired_leases(db).await
    }
}

/// Batch chunks not yet expanded into notifications, one job each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchChunks;

impl Outbox for BatchChunks {
    type Row = (TenantId, BatchId, i32);
    type Job = ExpandBatchChunk;
    const GROUPED: bool = false;

    fn queue(&self) -> QueueName {
        QueueName::BatchChunk
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        batches::take_pending_chunks(db, limit, redispatch_after).await
    }

    fn group(&self, rows: Vec<Self::Row>, _group_size: usize) -> Vec<Self::Job> {
        rows.into_iter()
            .map(|(tenant_id, batch_id, seq)| ExpandBatchChunk {
                tenant_id,
                batch_id,
                seq,
            })
            .collect()
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        batches::forget_dispatched(db).await
    }
}

/// Uploaded CSV files waiting for a parser, one job each: never pushed, or
/// whose parser stopped renewing its lease (it died), in which case the
/// next parser resumes from the last commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkJobs;

impl Outbox for BulkJobs {
    type Row = (TenantId, BulkJobId);
    type Job = ParseBulkCsv;
    const GROUPED: bool = false;

    fn queue(&self) -> QueueName {
        QueueName::BulkCsv
    }

    /// A parser holds its job for up to the queue's timeout (its lease), so
    /// a pushed job is taken as lost only after that.
    fn redispatch_after(&self, config: &JobsConfig) -> Duration {
        config.queue(QueueName::BulkCsv).timeout()
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        bulk::take_pending(db, redispatch_after, limit).await
    }

    fn group(&self, rows: Vec<Self::Row>, _group_size: usize) -> Vec<Self::Job> {
        rows.into_iter()
            .map(|(tenant_id, job_id)| ParseBulkCsv { tenant_id, job_id })
            .collect()
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        bulk::forget_dispatched(db).await
    }
}

/// Chunks of CSV files' notifications not yet expanded, one job each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BulkChunks;

impl Outbox for BulkChunks {
    type Row = (TenantId, BulkJobId, i64);
    type Job = ExpandBulkChunk;
    const GROUPED: bool = false;

    fn queue(&self) -> QueueName {
        QueueName::BulkChunk
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        bulk::take_pending_chunks(db, limit, redispatch_after).await
    }

    fn group(&self, rows: Vec<Self::Row>, _group_size: usize) -> Vec<Self::Job> {
        rows.into_iter()
            .map(|(tenant_id, job_id, seq)| ExpandBulkChunk {
                tenant_id,
                job_id,
                seq,
            })
            .collect()
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        bulk::forget_dispatched_chunks(db).await
    }
}

/// `pending` invitations whose job (issue the token, queue the email) is
/// not in Redis, one job each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Invitations;

impl Outbox for Invitations {
    type Row = (TenantId, Uuid);
    type Job = SendInvitation;
    const GROUPED: bool = false;

    fn queue(&self) -> QueueName {
        QueueName::Invitation
    }

    async fn take(
        &self,
        db: &PgPool,
        limit: usize,
        redispatch_after: Duration,
    ) -> Result<Vec<Self::Row>, sqlx::Error> {
        invitations::take_pending(db, limit, redispatch_after).await
    }

    fn group(&self, rows: Vec<Self::Row>, _group_size: usize) -> Vec<Self::Job> {
        rows.into_iter()
            .map(|(tenant_id, invitation_id)| SendInvitation {
                tenant_id,
                invitation_id,
            })
            .collect()
    }

    async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
        invitations::forget_dispatched(db).await
    }
}

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
    domain::{BatchId, BulkJobId, Channel, InvitationId, NotificationId, TenantId},
    jobs::{
        DeliverWebhooks, ExpandBatchChunk, ExpandBulkChunk, ParseBulkCsv, QueueName,
        SendInvitation, SendNotifications,
    },
};

/// The distinct tenants of grouped `jobs` and every row id they carry
/// (`of` gives a job's tenant and ids).
fn tenants_and_ids<J, I: Copy>(
    jobs: &[J],
    of: impl Fn(&J) -> (TenantId, &[I]),
) -> (Vec<TenantId>, Vec<I>) {
    let mut tenants = BTreeSet::new();
    let mut ids = Vec::new();
    for job in jobs {
        let (tenant, carried) = of(job);
        tenants.insert(tenant);
        ids.extend_from_slice(carried);
    }
    (tenants.into_iter().collect(), ids)
}

impl OutboxJob for SendNotifications {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let (tenants, ids) = tenants_and_ids(jobs, |j| (j.tenant_id, &j.notification_ids));
        notifications::release_dispatch(db, &tenants, &ids).await
    }

    fn rows(&self) -> usize {
        self.notification_ids.len()
    }
}

impl OutboxJob for DeliverWebhooks {
    async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
        let (tenants, ids) = tenants_and_ids(jobs, |j| (j.tenant_id, &j.delivery_ids));
        webhooks::release_dispatch(db, &tenants, &ids).await
    }

    fn rows(&self) -> usize {
        self.delivery_ids.len()
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

/// Declares kinds whose rows each travel in a job of their own (never
/// grouped, no leases to recover), implementing [`Outbox`] for each and
/// [`OutboxJob`] for its job from its queue, how its rows are taken,
/// forgotten and released, and the job's fields, which are the row's
/// columns in order. Items in braces after `release` go into the `Outbox`
/// impl as they are.
macro_rules! one_job_per_row {
    ($(
        $(#[$doc:meta])*
        $kind:ident: $row:ty => $job:ident { $($field:ident),+ },
        queue: $queue:expr,
        take: |$db:ident, $limit:ident, $after:ident| $take:expr,
        forget: $forget:path, release: $release:path $({ $($extra:tt)* })?;
    )*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $kind;

        impl Outbox for $kind {
            type Row = $row;
            type Job = $job;
            const GROUPED: bool = false;

            fn queue(&self) -> QueueName {
                $queue
            }

            $($($extra)*)?

            async fn take(
                &self,
                $db: &PgPool,
                $limit: usize,
                $after: Duration,
            ) -> Result<Vec<Self::Row>, sqlx::Error> {
                $take.await
            }

            fn group(&self, rows: Vec<Self::Row>, _group_size: usize) -> Vec<Self::Job> {
                rows.into_iter()
                    .map(|($($field),+)| $job { $($field),+ })
                    .collect()
            }

            async fn forget(&self, db: &PgPool) -> Result<u64, sqlx::Error> {
                $forget(db).await
            }
        }

        impl OutboxJob for $job {
            async fn release(db: &PgPool, jobs: &[Self]) -> Result<(), sqlx::Error> {
                let rows: Vec<$row> = jobs.iter().map(|j| ($(j.$field),+)).collect();
                $release(db, &rows).await
            }
        }
    )*};
}

one_job_per_row! {
    /// Batch chunks not yet expanded into notifications, one job each.
    BatchChunks: (TenantId, BatchId, i32) => ExpandBatchChunk { tenant_id, batch_id, seq },
    queue: QueueName::BatchChunk,
    take: |db, limit, after| batches::take_pending_chunks(db, limit, after),
    forget: batches::forget_dispatched, release: batches::release_chunks;

    /// Chunks of CSV files' notifications not yet expanded, one job each.
    BulkChunks: (TenantId, BulkJobId, i64) => ExpandBulkChunk { tenant_id, job_id, seq },
    queue: QueueName::BulkChunk,
    take: |db, limit, after| bulk::take_pending_chunks(db, limit, after),
    forget: bulk::forget_dispatched_chunks, release: bulk::release_chunks;

    /// Uploaded CSV files waiting for a parser, one job each: never pushed, or
    /// whose parser stopped renewing its lease (it died), in which case the
    /// next parser resumes from the last commit.
    BulkJobs: (TenantId, BulkJobId) => ParseBulkCsv { tenant_id, job_id },
    queue: QueueName::BulkCsv,
    take: |db, limit, after| bulk::take_pending(db, after, limit),
    forget: bulk::forget_dispatched, release: bulk::release_dispatch {
        /// A parser holds its job for up to the queue's timeout (its
        /// lease), so a pushed job is taken as lost only after that.
        fn redispatch_after(&self, config: &JobsConfig) -> Duration {
            config.queue(QueueName::BulkCsv).timeout()
        }
    };

    /// `pending` invitations whose job (issue the token, queue the email) is
    /// not in Redis, one job each.
    Invitations: (TenantId, InvitationId) => SendInvitation { tenant_id, invitation_id },
    queue: QueueName::Invitation,
    take: |db, limit, after| invitations::take_pending(db, limit, after),
    forget: invitations::forget_dispatched, release: invitations::release_dispatch;
}
